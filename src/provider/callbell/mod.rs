//! The Callbell adapter (`https://api.callbell.eu/v1`).
//!
//! - `api`: wire DTOs and paths (the only code that knows Callbell's JSON);
//! - `map`: DTO → [`Contact`](crate::model::Contact), [`Patch`](crate::model::Patch) → update
//!   body, and the field rules;
//! - `client`: [`CallbellClient`], the [`Provider`](crate::provider::Provider) implementation.
//!
//! Callbell identifies a contact by `uuid` (a WhatsApp contact's phone is fixed), lists 20-ish
//! contacts per page with no total, accepts only tags and custom fields that already exist in
//! the account, and answers 429 without `Retry-After`. Contacts are created with
//! `POST /contacts` (identifier = the phone as international digits, the configured
//! `create_source`, name; [`CREATE_FIELDS`], [`CREATE_REQUIRES`]) and looked up by phone with
//! `GET /contacts/phone/{digits}`.

mod api;
mod client;
mod map;

pub use client::CallbellClient;
pub use map::rules as field_rules;
pub use map::{CREATE_FIELDS, CREATE_REQUIRES};
