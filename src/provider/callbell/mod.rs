//! The Callbell adapter (`https://api.callbell.eu/v1`).
//!
//! - `api`: wire DTOs and paths (the only code that knows Callbell's JSON);
//! - `map`: DTO → [`Contact`](crate::model::Contact), [`Patch`](crate::model::Patch) → update
//!   body, and the field rules;
//! - `client`: [`CallbellClient`], the [`Provider`](crate::provider::Provider) implementation.
//!
//! Callbell identifies a contact by `uuid` (a WhatsApp contact's phone is fixed), lists 20-ish
//! contacts per page with no total, accepts only tags and custom fields that already exist in
//! the account, and answers 429 without `Retry-After`.

mod api;
mod client;
mod map;

pub use client::CallbellClient;
pub use map::rules as field_rules;
