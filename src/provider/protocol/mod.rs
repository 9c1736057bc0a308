//! The Protocol adapter (`https://api.protocol.chat`, `Authorization: Bearer`).
//!
//! - [`api`]: wire DTOs, endpoint paths and the `{"error":{"code","message"}}` envelope.
//! - [`map`]: contact object → common model; patch → update body (pure).
//! - `client`: [`ProtocolClient`]: cursor listing (`limit` up to 100, `starting_after=<last
//!   id>`, no total), one `PATCH /v1/contacts/{id}` per record, or the older display-name-only
//!   `PUT` when `legacy_put = true`, and the field rules of whichever endpoint is configured;
//!   `POST /v1/contacts` creates a contact ([`CREATE_FIELDS`], [`CREATE_REQUIRES`]: username
//!   and phone). There is no lookup by key: the fresh listing is the answer.
//!
//! Two documentation pages describe Protocol; the newer `PATCH` page wins where they disagree,
//! and the older overview still defines the list endpoint and the contact model.

pub mod api;
mod client;
pub mod map;

pub use client::{field_rules, ProtocolClient};
pub use map::UpdateMode;
pub use map::{CREATE_FIELDS, CREATE_REQUIRES};
