//! contact-sync keeps the contact lists of Protocol, Callbell, Chatwoot and Privy in agreement.
//!
//! # Layout
//!
//! Every module, one line each, in the order a sync meets them:
//!
//! - [`cli`]: the command line (clap), the exit-code contract, signals for a one-shot sync.
//! - [`config`]: TOML read with every problem collected, validated in a pure pass; secrets by
//!   reference only.
//! - [`telemetry`]: logging to stderr, human on a terminal and JSON lines otherwise.
//! - [`sync`]: one pass (list, settle, plan, guard, persist, execute, save), for every command.
//! - [`state`]: the SQLite state (links, baselines, agreed values, decisions, journals) and its lock.
//! - [`provider`]: one adapter per provider behind one trait, field rules as data, the one HTTP path.
//! - [`budget`]: one shared, adaptive rate budget per provider credential, daily quota included.
//! - [`model`]: the provider-neutral contact record and field vocabulary; normalisation.
//! - [`reconcile`]: the pure matcher and planner (three-way merge, rules), producing a `Plan`.
//! - [`planfile`]: applyable plan files (`diff --plan-out`, `sync --plan`).
//! - [`executor`]: applies a plan's updates, providers in parallel, each write journaled first.
//! - [`import`]: sends a plan's creates once each, journaled with their key; settles lost answers.
//! - [`identity`]: a human's `link`/`unlink`/`ignore`/`resolve` decisions, and `review`.
//! - [`report`]: text, markdown and JSON reports of a run.
//! - [`daemon`]: the service loop (cron ticks, SIGHUP, SIGTERM), `/healthz`, `/metrics`, watchdog.
//! - [`cadence`]: which providers a run lists and which it defers, to fit daily quotas.
//! - [`sim`]: faithful provider simulators (tests, benches, `demo`).
//! - [`demo`]: `contact-sync demo`, the whole job on the simulators.
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
pub mod import;
pub mod model;
pub mod planfile;
pub mod provider;
pub mod reconcile;
pub mod report;
pub mod sim;
pub mod state;
pub mod sync;
pub mod telemetry;
