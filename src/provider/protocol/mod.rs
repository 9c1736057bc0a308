//! The Protocol adapter. (Skeleton: replaced by the full adapter.)

mod client;

pub use client::ProtocolClient;
