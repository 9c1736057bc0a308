//! contact-sync keeps the contact lists of Protocol, Callbell, Chatwoot and Privy in agreement.
//!
//! # Layout
//!
//! - [`config`]: TOML config, validated in a pure pass; secrets by reference only.
//! - [`model`]: the provider-neutral contact record and field vocabulary; normalisation.
//! - [`provider`]: one adapter per provider behind one trait; field rules as data; the shared
//!   HTTP layer (timeouts, retries, size limits).
//! - [`budget`]: one shared, adaptive rate budget per provider credential.
//! - [`cadence`]: which providers a run lists and which it defers, to fit daily quotas.
//! - [`sim`]: faithful provider simulators (tests, benches, `demo`).
//!
//! See `ARCHITECTURE.md` for how a sync flows through them.

pub mod budget;
pub mod cadence;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod executor;
pub mod identity;
pub mod model;
pub mod planfile;
pub mod provider;
pub mod reconcile;
pub mod report;
pub mod sim;
pub mod state;
pub mod sync;
pub mod telemetry;
