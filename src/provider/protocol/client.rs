use std::sync::Arc;

use crate::budget::RateBudget;
use crate::config::ProviderConfig;
use crate::model::{Contact, Normalizer, Patch, ProviderKind};
use crate::provider::http::{HttpSettings, ProviderHttp};
use crate::provider::{FieldRules, Page, Provider, ProviderError};

/// Protocol client (skeleton).
#[derive(Debug)]
pub struct ProtocolClient {
    http: ProviderHttp,
    rules: FieldRules,
}

impl ProtocolClient {
    pub fn new(
        config: &ProviderConfig,
        _normalizer: Normalizer,
        budget: Arc<RateBudget>,
    ) -> Result<Self, ProviderError> {
        let http = ProviderHttp::new(
            ProviderKind::Protocol,
            config.base_url.clone(),
            budget,
            HttpSettings::default(),
            |_, _| String::new(),
        )?;
        Ok(ProtocolClient {
            http,
            rules: FieldRules::new(ProviderKind::Protocol, []),
        })
    }
}

impl Provider for ProtocolClient {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Protocol
    }
    fn rules(&self) -> &FieldRules {
        &self.rules
    }
    fn http(&self) -> &ProviderHttp {
        &self.http
    }
    async fn healthcheck(&self) -> Result<(), ProviderError> {
        Err(ProviderError::Protocol {
            provider: ProviderKind::Protocol,
            message: "adapter not built yet".into(),
        })
    }
    async fn list_page(&self, _cursor: Option<&str>) -> Result<Page, ProviderError> {
        Err(ProviderError::Protocol {
            provider: ProviderKind::Protocol,
            message: "adapter not built yet".into(),
        })
    }
    async fn apply(&self, _patch: &Patch) -> Result<Contact, ProviderError> {
        Err(ProviderError::Protocol {
            provider: ProviderKind::Protocol,
            message: "adapter not built yet".into(),
        })
    }
}
