//! The Privy adapter.
//!
//! Privy lists contacts with offset pagination (`GET /v1/contacts?page=N&per_page=100`) and
//! updates one with `PATCH /v1/contacts/{id}`, which writes six fields: `first_name`,
//! `last_name`, `email` and `phone_number` (both only while null), `tags` and `custom_fields`
//! (both replaced whole). Every response carries the per-minute and per-day quota in
//! `X-RateLimit-*` headers, which feed the shared rate budget. `POST /v1/contacts` creates a
//! contact from an e-mail or a phone ([`CREATE_FIELDS`], [`CREATE_REQUIRES`]) and never sends
//! consent; its 409 Conflict names a contact that already holds the key, which is linked. The
//! list filters `?email=` and `?phone_number=` look a key up.
//!
//! - `api`: wire format (the only code that knows Privy's JSON), error envelope, quota headers.
//! - `map`: pure conversion between wire records and the common model.
//! - `client`: [`PrivyClient`] and the field rules.

mod api;
mod client;
mod map;

pub use client::{privy_rules as field_rules, privy_rules, PrivyClient};
pub use map::{CREATE_FIELDS, CREATE_REQUIRES};
