//! Import: sending the plan's creates, and settling creates whose outcome is unknown (SPEC
//! section 11).
//!
//! A create is journaled as intended, with its key, before it is sent, and sent at most once
//! (the HTTP layer retries only a 429, which the provider answers before doing anything). When
//! the answer is lost (a timeout, a dropped connection, a crash), the create stays intended and
//! the next run looks its key up (Privy's list filter, Callbell's phone lookup, the fresh
//! listing for Protocol and Chatwoot) and links what it finds, instead of sending it again.
//!
//! **Architecture Invariant:** this is the only code that calls `AnyProvider::create`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::executor::{baseline_of, Journal, Lane};
use crate::model::{Contact, ProviderKind};
use crate::provider::{AnyProvider, Created, LookupKey, ProviderError};
use crate::reconcile::{Create, Memory};
use crate::state::{StateError, StateStore};

/// What happened to one planned create.
#[derive(Debug)]
pub enum CreateOutcome {
    /// The provider made the contact; the record as it holds it.
    Created(Box<Contact>),
    /// The provider already held a contact with the key (Privy's 409): linked, not created.
    Linked(Box<Contact>),
    /// The provider refused it.
    Failed(ProviderError),
    /// The answer was lost: it may have been applied. Looked up next run, never re-sent blind.
    Unknown(ProviderError),
    /// Not sent (shutting down, the provider unusable, or the journal failed).
    NotAttempted(String),
}

impl CreateOutcome {
    /// The record the create ended in, if it is known.
    pub fn record(&self) -> Option<&Contact> {
        match self {
            CreateOutcome::Created(c) | CreateOutcome::Linked(c) => Some(c),
            _ => None,
        }
    }

    /// A short stable label for reports.
    pub fn label(&self) -> &'static str {
        match self {
            CreateOutcome::Created(_) => "created",
            CreateOutcome::Linked(_) => "linked-existing",
            CreateOutcome::Failed(_) => "failed",
            CreateOutcome::Unknown(_) => "unknown",
            CreateOutcome::NotAttempted(_) => "not-attempted",
        }
    }
}

/// Sends `creates`, providers in parallel, each lane at most `max_concurrency` at once;
/// returns one outcome per create, in order.
pub async fn execute_creates(
    creates: &[Create],
    providers: &BTreeMap<ProviderKind, Arc<AnyProvider>>,
    lanes: &BTreeMap<ProviderKind, Lane>,
    journal: Option<&Journal>,
    cancel: &CancellationToken,
) -> Vec<CreateOutcome> {
    let mut by_provider: BTreeMap<ProviderKind, Vec<usize>> = BTreeMap::new();
    for (i, c) in creates.iter().enumerate() {
        by_provider.entry(c.provider()).or_default().push(i);
    }
    let lane_futs = by_provider.into_iter().map(|(kind, idxs)| {
        let provider = providers.get(&kind).cloned();
        let concurrency = lanes.get(&kind).map_or(4, |l| l.max_concurrency.max(1));
        async move {
            let provider = provider.as_deref();
            let stopped = std::sync::atomic::AtomicBool::new(false);
            let stopped = &stopped;
            futures::stream::iter(idxs)
                .map(|i| async move {
                    (
                        i,
                        create_one(&creates[i], provider, journal, cancel, stopped).await,
                    )
                })
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>()
                .await
        }
    });
    let mut results: Vec<(usize, CreateOutcome)> = futures::future::join_all(lane_futs)
        .await
        .into_iter()
        .flatten()
        .collect();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, o)| o).collect()
}

async fn create_one(
    c: &Create,
    provider: Option<&AnyProvider>,
    journal: Option<&Journal>,
    cancel: &CancellationToken,
    stopped: &std::sync::atomic::AtomicBool,
) -> CreateOutcome {
    use std::sync::atomic::Ordering;
    let Some(provider) = provider else {
        return CreateOutcome::NotAttempted(format!("{} is not configured", c.provider()));
    };
    if cancel.is_cancelled() {
        return CreateOutcome::NotAttempted("shutting down".into());
    }
    if stopped.load(Ordering::Acquire) {
        return CreateOutcome::NotAttempted("the provider failed earlier in this run".into());
    }
    let id = match journal
        .map(|j| j.with(|s| s.create_intended(j.run, c)))
        .transpose()
    {
        Ok(id) => id,
        Err(e) => {
            return CreateOutcome::NotAttempted(format!(
                "could not journal the create, so it was not sent: {e}"
            ))
        }
    };
    let result = provider.create(&c.new).await;
    let outcome = match result {
        Ok(Created::New(contact)) => CreateOutcome::Created(Box::new(contact)),
        Ok(Created::Existing(contact)) => CreateOutcome::Linked(Box::new(contact)),
        Err(e) if e.outcome_unknown() => {
            tracing::warn!(provider = %c.provider(), person = %c.person, error = %e, "Create answer lost; its key is looked up next run, it is never sent again blind.");
            CreateOutcome::Unknown(e)
        }
        Err(e) => {
            if e.is_fatal_for_provider() {
                stopped.store(true, Ordering::Release);
            }
            tracing::warn!(provider = %c.provider(), person = %c.person, error = %e, "Create failed.");
            CreateOutcome::Failed(e)
        }
    };
    metrics::counter!("contact_sync_creates_total", "provider" => c.provider().as_str(), "result" => outcome.label()).increment(1);
    if let (Some(j), Some(id)) = (journal, id) {
        let saved = match &outcome {
            CreateOutcome::Created(r) | CreateOutcome::Linked(r) => j.with(|s| {
                s.create_done(
                    id,
                    &r.id,
                    &c.person,
                    &baseline_of(r),
                    matches!(outcome, CreateOutcome::Linked(_)),
                )
            }),
            CreateOutcome::Failed(e) => j.with(|s| s.create_failed(id, &e.to_string(), false)),
            CreateOutcome::Unknown(e) => j.with(|s| s.create_failed(id, &e.to_string(), true)),
            CreateOutcome::NotAttempted(_) => Ok(()),
        };
        if let Err(e) = saved {
            tracing::error!(error = %e, person = %c.person, "Could not record a create's outcome; the next run looks its key up.");
        }
    }
    outcome
}

/// How the creates left pending by earlier runs were settled.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SettledCreates {
    /// Found in the provider and linked to their person.
    pub linked: usize,
    /// Not found: never applied (the planner may plan them again).
    pub not_applied: usize,
    /// Not settled this run (lookup failed, listing missing, or several records hold the key).
    pub open: usize,
}

/// Settles creates whose outcome is unknown: looks each key up and links the record found to
/// the person (in `memory`, and in the state when `persist`). `listed` says which providers
/// were listed this run (whose fresh listing answers for providers without a lookup).
pub async fn settle_pending_creates(
    store: &mut StateStore,
    persist: bool,
    providers: &BTreeMap<ProviderKind, Arc<AnyProvider>>,
    records: &[Contact],
    listed: &BTreeSet<ProviderKind>,
    memory: &mut Memory,
) -> Result<SettledCreates, StateError> {
    let mut settled = SettledCreates::default();
    let pending = store.pending_creates()?;
    if pending.is_empty() {
        return Ok(settled);
    }
    let by_key: HashMap<(ProviderKind, &str), Vec<&Contact>> = {
        let mut m: HashMap<(ProviderKind, &str), Vec<&Contact>> = HashMap::new();
        for r in records {
            for v in [&r.phone, &r.email].into_iter().flatten() {
                if v.valid() {
                    m.entry((r.provider(), v.key())).or_default().push(r);
                }
            }
        }
        m
    };
    for p in pending {
        let Some(provider) = providers.get(&p.provider) else {
            settled.open += 1;
            continue;
        };
        let Some(key) = &p.key else {
            settled.open += 1;
            continue;
        };
        let text = match key {
            LookupKey::Phone(k) | LookupKey::Email(k) => k.as_str(),
        };
        let found: Vec<Contact> = match provider.find_by_key(key).await {
            Ok(Some(found)) => found,
            Ok(None) if listed.contains(&p.provider) => by_key
                .get(&(p.provider, text))
                .map(|v| v.iter().map(|c| (*c).clone()).collect())
                .unwrap_or_default(),
            Ok(None) => {
                settled.open += 1;
                continue;
            }
            Err(e) => {
                tracing::warn!(provider = %p.provider, error = %e, "Could not look up a create's key; it stays pending.");
                settled.open += 1;
                continue;
            }
        };
        match found.as_slice() {
            [one] => {
                let baseline = baseline_of(one);
                tracing::info!(provider = %p.provider, record = %one.id, person = %p.person, "A create whose answer was lost was applied: linked.");
                if persist {
                    store.settle_create(p.id, Some((&one.id, &p.person, &baseline)))?;
                }
                memory.links.insert(one.id.clone(), p.person.clone());
                memory.baselines.insert(one.id.clone(), baseline);
                settled.linked += 1;
            }
            [] => {
                if persist {
                    store.settle_create(p.id, None)?;
                }
                settled.not_applied += 1;
            }
            _ => {
                tracing::warn!(provider = %p.provider, holders = found.len(), "Several records hold a pending create's key; it stays pending for a human (see review).");
                settled.open += 1;
            }
        }
    }
    Ok(settled)
}
