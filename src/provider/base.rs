//! What every adapter holds and builds the same way: the shared HTTP client, the field rules,
//! the normaliser and the credential header, so the four clients differ only where their APIs do.

use std::sync::Arc;

use reqwest::header::HeaderValue;

use super::http::{self, ErrorParser, ProviderHttp};
use super::mapping::{Boundary, ProviderMapping};
use super::{FieldRules, ProviderError};
use crate::budget::RateBudget;
use crate::config::ProviderConfig;
use crate::model::{Normalizer, ProviderKind};

/// How an adapter sends its API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <token>` (Protocol, Callbell, Privy).
    Bearer,
    /// The token alone, for a provider-specific header (Chatwoot's `api_access_token`).
    Raw,
}

/// The parts every adapter shares, built once by [`ClientBase::new`].
#[derive(Debug)]
pub struct ClientBase {
    /// The shared HTTP client (and through it the rate budget).
    pub http: ProviderHttp,
    /// What the provider's update endpoint may write.
    pub rules: FieldRules,
    /// Turns phones, e-mails and names into the common model's form.
    pub normalizer: Normalizer,
    /// The credential header value, marked sensitive so it is never logged (its `Debug`
    /// prints `Sensitive`).
    pub auth: HeaderValue,
    /// Custom-field and tag names between the provider's and the common ones (SPEC section
    /// 12); the identity until [`ClientBase::set_mapping`].
    pub mapping: Boundary,
}

impl ClientBase {
    /// Resolves the configured token into a header value and builds the HTTP client for
    /// `config.kind`.
    ///
    /// # Errors
    /// `ProviderError::Protocol` naming the provider when the token cannot be read or holds
    /// characters that cannot be sent in a header, or when the HTTP client cannot be built.
    /// Messages never hold the token.
    pub fn new(
        config: &ProviderConfig,
        normalizer: Normalizer,
        budget: Arc<RateBudget>,
        rules: FieldRules,
        parse_error: ErrorParser,
        credential: Credential,
    ) -> Result<Self, ProviderError> {
        let kind = config.kind;
        let token = config
            .token
            .resolve()
            .map_err(|m| protocol_error(kind, format!("cannot read the API token: {m}")))?;
        let value = match credential {
            Credential::Bearer => format!("Bearer {}", token.expose()),
            Credential::Raw => token.expose().to_owned(),
        };
        let auth = http::sensitive(kind, &value).map_err(|_| {
            protocol_error(
                kind,
                "the configured token holds characters that cannot be sent in an HTTP header"
                    .into(),
            )
        })?;
        let http = ProviderHttp::new(
            kind,
            config.base_url.clone(),
            budget,
            config.http.clone(),
            parse_error,
        )?;
        Ok(ClientBase {
            http,
            rules,
            normalizer,
            auth,
            mapping: Boundary::default(),
        })
    }

    /// Applies `mapping` at this adapter's boundary, and rewrites its rules in common names.
    pub fn set_mapping(&mut self, mapping: ProviderMapping) {
        let mut boundary = Boundary::new(mapping);
        boundary.adapt_rules(&mut self.rules);
        self.mapping = boundary;
    }

    /// Which provider this is.
    pub fn kind(&self) -> ProviderKind {
        self.http.provider()
    }
}

/// A `ProviderError::Protocol` for `kind` carrying `message`.
pub fn protocol_error(kind: ProviderKind, message: String) -> ProviderError {
    ProviderError::Protocol {
        provider: kind,
        message,
    }
}

/// The error an adapter returns when it is given another provider's settings (a bug in the
/// caller, since [`super::AnyProvider::build`] dispatches on the config's kind).
pub fn wrong_settings(kind: ProviderKind) -> ProviderError {
    protocol_error(
        kind,
        format!("internal error: the {kind} adapter was given another provider's settings"),
    )
}
