//! Provider errors, classified so the executor can decide what to do without parsing strings.

use std::time::Duration;

use crate::model::ProviderKind;

/// Everything that can go wrong talking to a provider. Messages never contain a secret: URLs
/// are stripped from transport errors (Chatwoot's public API carries a secret in its path), and
/// response bodies appear only as the provider's own error message.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{provider}: authentication failed (HTTP {status}): {message}; check the token configured for [providers.{provider}]")]
    Auth {
        provider: ProviderKind,
        status: u16,
        message: String,
    },

    #[error("{provider}: {operation} was rejected (HTTP {status}): {message}")]
    Rejected {
        provider: ProviderKind,
        operation: &'static str,
        status: u16,
        message: String,
    },

    #[error("{provider}: still rate limited after retrying {operation}")]
    RateLimited {
        provider: ProviderKind,
        operation: &'static str,
        retry_after: Option<Duration>,
    },

    #[error("{provider}: daily request quota exhausted (resets in {resets_in:?}); the rest is retried next run")]
    QuotaExhausted {
        provider: ProviderKind,
        resets_in: Duration,
    },

    #[error("{provider}: server error on {operation} (HTTP {status}) after retries: {message}")]
    Server {
        provider: ProviderKind,
        operation: &'static str,
        status: u16,
        message: String,
    },

    #[error("{provider}: {operation} timed out after {after:?}")]
    Timeout {
        provider: ProviderKind,
        operation: &'static str,
        after: Duration,
    },

    #[error("{provider}: connection failed during {operation}: {source}")]
    Transport {
        provider: ProviderKind,
        operation: &'static str,
        #[source]
        source: reqwest::Error,
    },

    #[error("{provider}: could not understand the response to {operation}: {message}")]
    Decode {
        provider: ProviderKind,
        operation: &'static str,
        message: String,
    },

    #[error("{provider}: response to {operation} is larger than the {limit}-byte limit")]
    BodyTooLarge {
        provider: ProviderKind,
        operation: &'static str,
        limit: usize,
    },

    #[error("{provider}: {message}")]
    Protocol {
        provider: ProviderKind,
        message: String,
    },

    #[error("{provider}: stopped: shutting down")]
    Cancelled { provider: ProviderKind },
}

impl ProviderError {
    /// The provider the error came from.
    pub fn provider(&self) -> ProviderKind {
        match self {
            ProviderError::Auth { provider, .. }
            | ProviderError::Rejected { provider, .. }
            | ProviderError::RateLimited { provider, .. }
            | ProviderError::QuotaExhausted { provider, .. }
            | ProviderError::Server { provider, .. }
            | ProviderError::Timeout { provider, .. }
            | ProviderError::Transport { provider, .. }
            | ProviderError::Decode { provider, .. }
            | ProviderError::BodyTooLarge { provider, .. }
            | ProviderError::Protocol { provider, .. }
            | ProviderError::Cancelled { provider } => *provider,
        }
    }

    /// Whether the same request may succeed if sent again later (this run or the next).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::Server { .. }
                | ProviderError::Timeout { .. }
                | ProviderError::Transport { .. }
                | ProviderError::Decode { .. }
                | ProviderError::BodyTooLarge { .. }
        )
    }

    /// Whether a request that failed this way may still have been applied by the provider (it
    /// was sent and no answer said otherwise): a timeout, a connection lost mid-request, a 5xx,
    /// or a 2xx body that could not be read. A create that fails so is settled by a lookup,
    /// never sent again blind.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ProviderError::Server { .. }
                | ProviderError::Timeout { .. }
                | ProviderError::Transport { .. }
                | ProviderError::Decode { .. }
                | ProviderError::BodyTooLarge { .. }
        )
    }

    /// Whether the whole provider is unusable for this run (not just one record).
    pub fn is_fatal_for_provider(&self) -> bool {
        matches!(
            self,
            ProviderError::Auth { .. }
                | ProviderError::QuotaExhausted { .. }
                | ProviderError::Cancelled { .. }
        )
    }

    /// A short stable label for metrics and reports.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ProviderError::Auth { .. } => "auth",
            ProviderError::Rejected { .. } => "rejected",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::QuotaExhausted { .. } => "quota_exhausted",
            ProviderError::Server { .. } => "server",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::Transport { .. } => "transport",
            ProviderError::Decode { .. } => "decode",
            ProviderError::BodyTooLarge { .. } => "body_too_large",
            ProviderError::Protocol { .. } => "protocol",
            ProviderError::Cancelled { .. } => "cancelled",
        }
    }
}
