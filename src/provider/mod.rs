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
use crate::model::{CompactString, Contact, NewContact, Normalizer, Patch, ProviderKind};

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
    /// Completes a full listing with what the pages do not carry (Chatwoot's labels); the
    /// default does nothing.
    async fn finish_listing(&self, _listing: &mut Listing) -> Result<(), ProviderError> {
        Ok(())
    }
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
        let (daily, day_timezone) = match &config.specific {
            crate::config::ProviderSpecific::Privy {
                daily_limit,
                day_timezone,
                ..
            } => (*daily_limit, *day_timezone),
            _ => (None, chrono_tz::UTC),
        };
        let budget = RateBudget::with_day_boundary(config.rate, config.share, daily, day_timezone);
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

    /// One page of records, in the provider's own names: [`Self::finish_listing`] completes
    /// them (Chatwoot's labels) and maps them to common names, as [`list_all`] does. A page
    /// holding a contact without an id is refused as a whole:
    /// such a record can be neither linked nor written, and leaving it out would hide its phone
    /// and e-mail from the planner, which could then create a duplicate of it.
    pub async fn list_page(&self, cursor: Option<&str>) -> Result<Page, ProviderError> {
        let page = dispatch!(self, p => p.list_page(cursor).await)?;
        if let Some(at) = page
            .contacts
            .iter()
            .position(|c| c.id.native.trim().is_empty())
        {
            return Err(ProviderError::Decode {
                provider: self.kind(),
                operation: "list contacts",
                message: format!(
                    "contact {} of the page has an empty id; the listing cannot be trusted",
                    at + 1
                ),
            });
        }
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

    /// The healthcheck plus notes an operator should read (`check-config --online`): Chatwoot
    /// reports contacts without a source id for its inbox; the others only pass or fail.
    pub async fn health_report(&self) -> Result<Vec<String>, ProviderError> {
        match self {
            AnyProvider::Chatwoot(p) => p.health_report().await,
            other => other.healthcheck().await.map(|()| Vec::new()),
        }
    }

    /// Completes a listing (Chatwoot reads each contact's labels), then maps every record to
    /// common names (SPEC section 12), once, now that each holds all its data.
    pub async fn finish_listing(&self, listing: &mut Listing) -> Result<(), ProviderError> {
        dispatch!(self, p => p.finish_listing(listing).await)?;
        let b = self.boundary();
        listing.contacts.iter_mut().for_each(|c| b.inbound(c));
        Ok(())
    }

    pub async fn find_by_key(
        &self,
        key: &LookupKey,
    ) -> Result<Option<Vec<Contact>>, ProviderError> {
        let found = dispatch!(self, p => p.find_by_key(key).await)?;
        Ok(found.map(|cs| self.inbound(cs)))
    }
}

/// What [`health_reports`] found for one configured provider.
#[derive(Debug)]
pub struct HealthReport {
    pub provider: ProviderKind,
    /// Notes an operator should read (Chatwoot: contacts without a source id, labels), or why
    /// the adapter could not be built or failed its check.
    pub result: Result<Vec<String>, ProviderError>,
}

/// Builds every configured provider and runs [`AnyProvider::health_report`] on each, all at
/// once, for `check-config --online` and daemon start. Each provider draws on a budget of
/// its own here, at its configured rate.
pub async fn health_reports(config: &crate::config::Config) -> Vec<HealthReport> {
    let checks = config.providers.iter().map(|p| async move {
        let result = match AnyProvider::build(p, config.normalizer) {
            Ok(provider) => provider.health_report().await,
            Err(e) => Err(e),
        };
        HealthReport {
            provider: p.kind,
            result,
        }
    });
    futures::future::join_all(checks).await
}

/// A complete listing, with what was odd about it.
#[derive(Debug, Default)]
pub struct Listing {
    pub contacts: Vec<Contact>,
    /// Records returned more than once (kept once).
    pub duplicates: usize,
    pub pages: usize,
    /// Records that moved between pages while they were read: those seen twice, and those a
    /// re-scan found that the first scan missed.
    pub moved: usize,
    /// Full scans made (more than one when a scan ended short of the provider's total).
    pub scans: usize,
}

/// Most pages a listing may take before it is considered runaway.
const MAX_PAGES: usize = 1_000_000;

/// Most full scans of one listing: a scan that ends short of the stated total (offset paging
/// shifted records during it) is repeated at most this many times in all.
pub const MAX_SCANS: usize = 3;

/// Lists every record of a provider, page by page.
///
/// Guards against providers that misbehave between calls: a record returned twice is kept
/// once; a cursor that repeats stops the listing with an error (it would loop forever); and when
/// the provider states its total, a listing that ends short of it is scanned again (up to
/// [`MAX_SCANS`] scans in all, merging what each finds by id) and then is an error, because
/// planning on a partial listing could write a value another (unseen) record holds.
pub async fn list_all(provider: &AnyProvider) -> Result<Listing, ProviderError> {
    let kind = provider.kind();
    let mut listing = Listing::default();
    let mut seen = HashSet::new();
    let mut total;
    loop {
        listing.scans += 1;
        let before = listing.contacts.len();
        let duplicates_before = listing.duplicates;
        total = scan(provider, &mut listing, &mut seen).await?;
        if listing.scans > 1 {
            listing.moved += listing.contacts.len() - before;
        }
        if listing.scans == 1 {
            listing.moved += listing.duplicates - duplicates_before;
        }
        let short = total.is_some_and(|t| (listing.contacts.len() as u64) < t);
        if !short || listing.scans >= MAX_SCANS {
            break;
        }
        tracing::info!(provider = %kind, listed = listing.contacts.len(), total = total.unwrap_or_default(), "Listing ended short of the provider's total; scanning again.");
    }
    if let Some(total) = total {
        if (listing.contacts.len() as u64) < total {
            return Err(ProviderError::Protocol {
                provider: kind,
                message: format!(
                    "listing is incomplete: the provider reports {total} contacts but {} were returned after {} scans; nothing is planned for it this run",
                    listing.contacts.len(),
                    listing.scans
                ),
            });
        }
    }
    if listing.moved > 0 {
        tracing::warn!(provider = %kind, moved = listing.moved, scans = listing.scans, "Records moved between pages during the listing; kept each once.");
    }
    provider.finish_listing(&mut listing).await?;
    Ok(listing)
}

/// One full scan, adding records not seen yet; returns the total the provider last stated.
async fn scan(
    provider: &AnyProvider,
    listing: &mut Listing,
    seen: &mut HashSet<CompactString>,
) -> Result<Option<u64>, ProviderError> {
    let kind = provider.kind();
    let mut cursors = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut total = None;
    let mut this_scan = HashSet::new();
    loop {
        let page = provider.list_page(cursor.as_deref()).await?;
        listing.pages += 1;
        total = page.total.or(total);
        for c in page.contacts {
            if !this_scan.insert(c.id.native.clone()) {
                listing.duplicates += 1;
            }
            if seen.insert(c.id.native.clone()) {
                listing.contacts.push(c);
            }
        }
        match page.next {
            None => return Ok(total),
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
}
