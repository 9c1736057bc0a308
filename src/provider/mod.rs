//! Provider adapters: one module per provider behind one small trait, statically dispatched
//! through [`AnyProvider`].
//!
//! Lifecycle: build with [`AnyProvider::build`] from a validated config (secrets resolved), call
//! [`AnyProvider::healthcheck`] once, list every record with [`list_all`], then send one
//! [`Patch`] per record with [`AnyProvider::apply`] (only the executor does that).
//! **Invariant:** only `provider/<name>/api.rs` knows a provider's JSON.

pub mod base;
pub mod callbell;
pub mod chatwoot;
pub mod error;
pub mod http;
pub mod mapping;
pub mod privy;
pub mod protocol;
pub mod rules;

use std::collections::HashSet;
use std::sync::Arc;

pub use error::ProviderError;
pub use rules::FieldRules;

use crate::budget::RateBudget;
use crate::config::ProviderConfig;
use crate::model::{Contact, NewContact, Normalizer, Patch, ProviderKind};

/// One page of a listing.
#[derive(Debug, Default)]
pub struct Page {
    pub contacts: Vec<Contact>,
    /// Opaque cursor for the next page; `None` when this was the last.
    pub next: Option<String>,
    /// How many records the provider says it holds in all, when it says.
    pub total: Option<u64>,
}

/// What a create request ended in.
#[derive(Debug, Clone)]
pub enum Created {
    /// The provider made a new contact; this is the record as it holds it.
    New(Contact),
    /// The provider already held a contact with the create's key (Privy's 409), and this is it:
    /// it is linked, not created again.
    Existing(Contact),
}

impl Created {
    /// The record, whichever way it came.
    pub fn contact(&self) -> &Contact {
        match self {
            Created::New(c) | Created::Existing(c) => c,
        }
    }
}

/// A key a create carries, looked up before a create whose outcome was unknown is tried again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LookupKey {
    /// E.164, as [`crate::model::Value::key`] holds phones.
    Phone(String),
    /// Case-folded, as [`crate::model::Value::key`] holds e-mails.
    Email(String),
}

/// What every adapter does.
#[allow(async_fn_in_trait)] // Dispatch is static, through `AnyProvider`.
pub trait Provider {
    /// The parts every adapter shares (HTTP client, rules, normaliser, credential).
    fn base(&self) -> &base::ClientBase;
    /// The shared parts, to adapt after building (the mapping, see
    /// [`AnyProvider::with_mapping`]).
    fn base_mut(&mut self) -> &mut base::ClientBase;
    /// Which provider this is.
    fn kind(&self) -> ProviderKind {
        self.base().kind()
    }
    /// What its update endpoint may write.
    fn rules(&self) -> &FieldRules {
        &self.base().rules
    }
    /// The shared HTTP client (and through it the rate budget).
    fn http(&self) -> &http::ProviderHttp {
        &self.base().http
    }
    /// Authenticates and makes one cheap request.
    async fn healthcheck(&self) -> Result<(), ProviderError>;
    /// One page of contacts, starting at `cursor` (`None` = first page).
    async fn list_page(&self, cursor: Option<&str>) -> Result<Page, ProviderError>;
    /// Sends one update; returns the record as the provider holds it afterwards.
    async fn apply(&self, patch: &Patch) -> Result<Contact, ProviderError>;
    /// Sends one create request, at most once (see [`http::ProviderHttp::send_json_once`]);
    /// returns the record as the provider holds it afterwards.
    async fn create(&self, new: &NewContact) -> Result<Created, ProviderError>;
    /// The records holding `key`, looked up directly (Privy's list filter, Callbell's
    /// `GET /contacts/phone/{phone}`); `Ok(None)` where the provider has no such lookup and the
    /// run's fresh listing is the answer (Protocol, Chatwoot).
    async fn find_by_key(&self, key: &LookupKey) -> Result<Option<Vec<Contact>>, ProviderError>;
}

/// Any of the four adapters.
#[derive(Debug)]
pub enum AnyProvider {
    Protocol(protocol::ProtocolClient),
    Callbell(callbell::CallbellClient),
    Chatwoot(chatwoot::ChatwootClient),
    Privy(privy::PrivyClient),
}

macro_rules! dispatch {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            AnyProvider::Protocol($p) => $e,
            AnyProvider::Callbell($p) => $e,
            AnyProvider::Chatwoot($p) => $e,
            AnyProvider::Privy($p) => $e,
        }
    };
}

impl AnyProvider {
    /// Builds the adapter for a validated provider config whose secrets are resolved.
    pub fn build(config: &ProviderConfig, normalizer: Normalizer) -> Result<Self, ProviderError> {
        let daily = match &config.specific {
            crate::config::ProviderSpecific::Privy { daily_limit, .. } => *daily_limit,
            _ => None,
        };
        let budget = RateBudget::new(config.rate, config.share, daily);
        Self::build_with_budget(config, normalizer, budget)
    }

    /// Builds the adapter drawing on an existing budget (shared by every activity of the
    /// process that uses the same credential).
    pub fn build_with_budget(
        config: &ProviderConfig,
        normalizer: Normalizer,
        budget: Arc<RateBudget>,
    ) -> Result<Self, ProviderError> {
        Ok(match config.kind {
            ProviderKind::Protocol => {
                AnyProvider::Protocol(protocol::ProtocolClient::new(config, normalizer, budget)?)
            }
            ProviderKind::Callbell => {
                AnyProvider::Callbell(callbell::CallbellClient::new(config, normalizer, budget)?)
            }
            ProviderKind::Chatwoot => {
                AnyProvider::Chatwoot(chatwoot::ChatwootClient::new(config, normalizer, budget)?)
            }
            ProviderKind::Privy => {
                AnyProvider::Privy(privy::PrivyClient::new(config, normalizer, budget)?)
            }
        })
    }

    /// The adapter translating custom-field keys and tags through `mapping` (SPEC section 12):
    /// everything it returns is in common names, and what it is given is translated back.
    pub fn with_mapping(mut self, mapping: &mapping::Mapping) -> Self {
        let kind = self.kind();
        let this = &mut self;
        dispatch!(this, p => p.base_mut().set_mapping(mapping.for_provider(kind)));
        self
    }

    fn boundary(&self) -> &mapping::Boundary {
        dispatch!(self, p => &p.base().mapping)
    }

    /// Records in common names.
    fn inbound(&self, mut contacts: Vec<Contact>) -> Vec<Contact> {
        let b = self.boundary();
        contacts.iter_mut().for_each(|c| b.inbound(c));
        contacts
    }

    pub fn kind(&self) -> ProviderKind {
        dispatch!(self, p => p.kind())
    }

    pub fn rules(&self) -> &FieldRules {
        dispatch!(self, p => p.rules())
    }

    pub fn budget(&self) -> &Arc<RateBudget> {
        dispatch!(self, p => p.http().budget())
    }

    pub async fn healthcheck(&self) -> Result<(), ProviderError> {
        dispatch!(self, p => p.healthcheck().await)
    }

    pub async fn list_page(&self, cursor: Option<&str>) -> Result<Page, ProviderError> {
        let mut page = dispatch!(self, p => p.list_page(cursor).await)?;
        page.contacts = self.inbound(page.contacts);
        Ok(page)
    }

    pub async fn apply(&self, patch: &Patch) -> Result<Contact, ProviderError> {
        let patch = self.boundary().outbound_patch(patch);
        let mut c = dispatch!(self, p => p.apply(&patch).await)?;
        self.boundary().inbound(&mut c);
        Ok(c)
    }

    pub async fn create(&self, new: &NewContact) -> Result<Created, ProviderError> {
        let new = self.boundary().outbound_new(new);
        let created = dispatch!(self, p => p.create(&new).await)?;
        Ok(match created {
            Created::New(mut c) => {
                self.boundary().inbound(&mut c);
                Created::New(c)
            }
            Created::Existing(mut c) => {
                self.boundary().inbound(&mut c);
                Created::Existing(c)
            }
        })
    }

    pub async fn find_by_key(
        &self,
        key: &LookupKey,
    ) -> Result<Option<Vec<Contact>>, ProviderError> {
        let found = dispatch!(self, p => p.find_by_key(key).await)?;
        Ok(found.map(|cs| self.inbound(cs)))
    }
}

/// A complete listing, with what was odd about it.
#[derive(Debug, Default)]
pub struct Listing {
    pub contacts: Vec<Contact>,
    /// Records returned more than once (kept once).
    pub duplicates: usize,
    pub pages: usize,
}

/// Most pages a listing may take before it is considered runaway.
const MAX_PAGES: usize = 1_000_000;

/// Lists every record of a provider, page by page.
///
/// Guards against providers that misbehave between calls: a record returned twice is kept
/// once; a cursor that repeats stops the listing with an error (it would loop forever); and when
/// the provider states its total, a listing that ends short of it is an error, because planning
/// on a partial listing could write a value another (unseen) record holds.
pub async fn list_all(provider: &AnyProvider) -> Result<Listing, ProviderError> {
    let kind = provider.kind();
    let mut listing = Listing::default();
    let mut seen = HashSet::new();
    let mut cursors = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut total = None;
    loop {
        let page = provider.list_page(cursor.as_deref()).await?;
        listing.pages += 1;
        total = page.total.or(total);
        for c in page.contacts {
            if seen.insert(c.id.native.clone()) {
                listing.contacts.push(c);
            } else {
                listing.duplicates += 1;
            }
        }
        match page.next {
            None => break,
            Some(next) => {
                if !cursors.insert(next.clone()) || listing.pages >= MAX_PAGES {
                    return Err(ProviderError::Protocol {
                        provider: kind,
                        message: format!("listing does not advance (cursor {next:?} repeats); stopped after {} pages", listing.pages),
                    });
                }
                cursor = Some(next);
            }
        }
    }
    if let Some(total) = total {
        if (listing.contacts.len() as u64) < total {
            return Err(ProviderError::Protocol {
                provider: kind,
                message: format!(
                    "listing is incomplete: the provider reports {total} contacts but {} were returned; nothing is planned for it this run",
                    listing.contacts.len()
                ),
            });
        }
    }
    if listing.duplicates > 0 {
        tracing::warn!(provider = %kind, duplicates = listing.duplicates, "Listing returned some records more than once; kept each once.");
    }
    Ok(listing)
}
