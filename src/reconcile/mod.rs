//! Reconciliation: matcher, three-way merge and planning. Pure: no I/O, no clock.

pub mod policy;
