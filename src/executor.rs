//! The executor: applies a plan's updates through the adapters.
//!
//! All providers in parallel; within a provider at most `max_concurrency` requests at once, each
//! paced by the provider's shared rate budget (the HTTP layer waits on it, honours
//! `Retry-After`, and retries 5xx, timeouts and dropped connections with backoff). Every write
//! is journaled as intended before it is sent and as confirmed or failed after. A record that
//! still fails is recorded and the rest carry on; an error that makes a whole provider unusable
//! (authentication, daily quota) stops further sends to that provider only.
//!
//! **Architecture Invariant:** this is the only code that calls `AnyProvider::apply`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::model::{Contact, Field, ProviderKind};
use crate::provider::{AnyProvider, ProviderError};
use crate::reconcile::{Baseline, Update};
use crate::state::StateStore;

/// What happened to one planned update.
#[derive(Debug)]
pub enum Outcome {
    /// Sent and accepted; the record as the provider now holds it.
    Applied(Box<Contact>),
    /// Sent (possibly several times) and failed.
    Failed(ProviderError),
    /// Not sent: shutting down, or the provider became unusable earlier in the run.
    NotAttempted(String),
}

impl Outcome {
    pub fn is_applied(&self) -> bool {
        matches!(self, Outcome::Applied(_))
    }
}

/// Where the executor journals writes. `None` runs without a journal (benches).
pub struct Journal {
    pub store: Arc<Mutex<StateStore>>,
    pub run: i64,
}

impl Journal {
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut StateStore) -> T) -> T {
        // The store is only touched between awaits, so the lock is never held across one; a
        // panic while holding it would abort the run anyway.
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut store)
    }
}

/// Settings for one provider's lane.
#[derive(Debug, Clone, Copy)]
pub struct Lane {
    pub max_concurrency: usize,
}

/// The result of applying a batch.
#[derive(Debug, Default)]
pub struct Executed {
    /// One per update, in the same order.
    pub outcomes: Vec<Outcome>,
    /// How long each provider's lane took, from the start of the apply phase.
    pub lanes: BTreeMap<ProviderKind, std::time::Duration>,
}

/// Applies `updates`; returns one outcome per update, in the same order.
///
/// `listed` gives the values each record held when listed, so a confirmed write's baseline is
/// complete (the response's values for the written fields, the listed values for the rest).
pub async fn execute(
    updates: &[Update],
    providers: &BTreeMap<ProviderKind, Arc<AnyProvider>>,
    lanes: &BTreeMap<ProviderKind, Lane>,
    listed: &(dyn Fn(&Update) -> Option<Baseline> + Sync),
    journal: Option<&Journal>,
    cancel: &CancellationToken,
    on_done: &(dyn Fn(&Update, &Outcome) + Sync),
) -> Executed {
    let started = std::time::Instant::now();
    let mut by_provider: BTreeMap<ProviderKind, Vec<usize>> = BTreeMap::new();
    for (i, u) in updates.iter().enumerate() {
        by_provider.entry(u.provider()).or_default().push(i);
    }
    let lanes_futs = by_provider.into_iter().map(|(kind, idxs)| {
        let provider = providers.get(&kind).cloned();
        let concurrency = lanes.get(&kind).map_or(4, |l| l.max_concurrency.max(1));
        let stopped = AtomicBool::new(false);
        let fatal: Mutex<Option<String>> = Mutex::new(None);
        async move {
            let stopped = &stopped;
            let fatal = &fatal;
            let provider = provider.as_deref();
            let done = futures::stream::iter(idxs)
                .map(|i| async move {
                    let u = &updates[i];
                    let outcome =
                        apply_one(u, provider, listed, journal, cancel, stopped, fatal).await;
                    on_done(u, &outcome);
                    (i, outcome)
                })
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>()
                .await;
            (kind, started.elapsed(), done)
        }
    });
    let mut lanes = BTreeMap::new();
    let mut results: Vec<(usize, Outcome)> = Vec::new();
    for (kind, took, done) in futures::future::join_all(lanes_futs).await {
        lanes.insert(kind, took);
        results.extend(done);
    }
    results.sort_by_key(|(i, _)| *i);
    Executed {
        outcomes: results.into_iter().map(|(_, o)| o).collect(),
        lanes,
    }
}

async fn apply_one(
    u: &Update,
    provider: Option<&AnyProvider>,
    listed: &(dyn Fn(&Update) -> Option<Baseline> + Sync),
    journal: Option<&Journal>,
    cancel: &CancellationToken,
    stopped: &AtomicBool,
    fatal: &Mutex<Option<String>>,
) -> Outcome {
    let Some(provider) = provider else {
        return Outcome::NotAttempted(format!("{} is not configured", u.provider()));
    };
    if cancel.is_cancelled() {
        return Outcome::NotAttempted("shutting down".into());
    }
    if stopped.load(Ordering::Acquire) {
        let why = fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        return Outcome::NotAttempted(format!("not sent: {why}"));
    }
    let write_id = match journal
        .map(|j| j.with(|s| s.write_intended(j.run, u)))
        .transpose()
    {
        Ok(id) => id,
        Err(e) => {
            return Outcome::NotAttempted(format!(
                "could not journal the write, so it was not sent: {e}"
            ))
        }
    };
    let span = tracing::debug_span!("write", provider = %u.provider(), record = %u.patch.record.native, fields = u.patch.changes.len());
    let result = provider.apply(&u.patch).instrument(span).await;
    match result {
        Ok(after) => {
            metrics::counter!("contact_sync_writes_total", "provider" => u.provider().as_str(), "result" => "applied").increment(1);
            if let (Some(j), Some(id)) = (journal, write_id) {
                let mut baseline = listed(u).unwrap_or_default();
                for c in &u.patch.changes {
                    let got = after.get(c.field);
                    // The provider's answer is the truth; an answer that lacks the field
                    // (empty) while we wrote a value means the response omitted it.
                    let value = if got.is_empty() && !c.new.is_empty() {
                        c.new.clone()
                    } else {
                        got
                    };
                    baseline.insert(c.field, value);
                }
                if let Err(e) =
                    j.with(|s| s.write_confirmed(id, &u.patch.record, &u.person, &baseline))
                {
                    tracing::error!(error = %e, record = %u.patch.record, "Could not record a confirmed write; the next run re-checks it.");
                }
            }
            Outcome::Applied(Box::new(after))
        }
        Err(e) => {
            metrics::counter!("contact_sync_writes_total", "provider" => u.provider().as_str(), "result" => "failed").increment(1);
            let status = match &e {
                ProviderError::Auth { status, .. }
                | ProviderError::Rejected { status, .. }
                | ProviderError::Server { status, .. } => Some(*status),
                ProviderError::RateLimited { .. } => Some(429),
                _ => None,
            };
            if matches!(e, ProviderError::Rejected { .. }) {
                // SPEC section 8: a 4xx is a bug report against our rule table.
                let fields: Vec<&str> = u.patch.changes.iter().map(|c| c.field.as_str()).collect();
                tracing::warn!(provider = %u.provider(), record = %u.patch.record, fields = ?fields, error = %e, "Provider rejected a write our field rules allowed; please report this rule gap.");
            } else {
                tracing::warn!(provider = %u.provider(), record = %u.patch.record, error = %e, "Write failed; it will be retried next run.");
            }
            if let (Some(j), Some(id)) = (journal, write_id.filter(|_| e.outcome_unknown())) {
                // It may have been applied: left intended, settled next run against what the
                // provider then holds (SPEC section 10).
                if let Err(se) = j.with(|s| {
                    s.write_unknown(j.run, id, &u.patch.record, e.metric_label(), &e.to_string())
                }) {
                    tracing::error!(error = %se, "Could not record a write whose outcome is unknown.");
                }
            } else if let (Some(j), Some(id)) = (journal, write_id) {
                if let Err(se) = j.with(|s| {
                    s.write_failed(
                        j.run,
                        id,
                        &u.patch.record,
                        status,
                        e.metric_label(),
                        &e.to_string(),
                    )
                }) {
                    tracing::error!(error = %se, "Could not record a failed write.");
                }
            }
            if e.is_fatal_for_provider() {
                *fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                stopped.store(true, Ordering::Release);
            }
            Outcome::Failed(e)
        }
    }
}

/// The values of every field of a contact, as a baseline.
pub fn baseline_of(c: &Contact) -> Baseline {
    Field::ALL.iter().map(|f| (*f, c.get(*f))).collect()
}
