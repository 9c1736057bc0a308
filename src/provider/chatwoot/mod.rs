//! The Chatwoot adapter.
//!
//! Chatwoot has two APIs and this adapter needs both: the application API (header
//! `api_access_token`) lists an account's contacts with their `contact_inboxes`, and the public
//! client API of one configured inbox updates a contact, addressed by the `source_id` of its
//! session in that inbox. The public API has no auth header: the inbox identifier in its URL
//! path is the secret, so URLs are never logged or put in errors.
//!
//! Hazards (SPEC section 9), all covered by the field rules in [`client::field_rules`] and
//! checked again on every answer: writing an e-mail or phone another contact holds merges the
//! two contacts (the one updated is deleted); blank values are dropped (nothing can be
//! cleared); `identifier` is ignored; invalid values are silently discarded.

mod api;
mod client;
mod map;

pub use client::{field_rules, field_rules_for, ChatwootClient};
