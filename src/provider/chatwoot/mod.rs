//! The Chatwoot adapter. (Skeleton: replaced by the full adapter.)

mod client;

pub use client::ChatwootClient;
