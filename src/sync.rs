//! One sync pass, used by the CLI (`sync`, `diff`, `demo`) and the daemon alike:
//! list every provider → match and plan → check guard rails → apply (or just report).
//!
//! Persistence order makes a crash at any point safe: agreed values are saved before any write;
//! each write is journaled as intended before it is sent and confirmed (with the record's new
//! baseline) in one transaction after; the other baselines are saved at the end. Writes left
//! intended by a crashed process are checked against what the provider now holds at the start
//! of the next run.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cadence::{self, CostModel, Deferral, Pacing, Quota};
use crate::config::Config;
use crate::executor::{self, baseline_of, Journal, Lane, Outcome};
use crate::identity::review::Review;
use crate::import;
use crate::model::{Contact, FieldValue, ProviderKind, RecordId};
use crate::planfile::{PlanFile, PlanFileError};
use crate::provider::{self, AnyProvider, ProviderError};
use crate::reconcile::{self, Memory, Plan, RuleBook, Update};
use crate::report::{GuardTrip, ProviderProblem, RunReport};
use crate::state::{RunCounts, RunOutcome, StateError, StateStore};

pub use crate::state::Mode;

/// How a run is done.
#[derive(Debug, Default)]
pub struct RunOptions {
    pub diff: bool,
    /// Apply even when a guard rail trips.
    pub force: bool,
    /// Only retry records in the dead-letter view.
    pub retry_failed: bool,
    /// Apply exactly this plan instead of planning.
    pub plan: Option<PlanFile>,
    /// Which providers to list (SPEC section 14): a one-shot run lists every provider today's
    /// quota can pay for; the daemon also spreads scans over the day.
    pub pacing: Pacing,
}

impl RunOptions {
    fn mode(&self) -> Mode {
        if self.diff {
            Mode::Diff
        } else {
            Mode::Sync
        }
    }
}

/// Errors that stop a whole run (a provider failing does not: it is reported).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    PlanFile(#[from] PlanFileError),
    #[error("{0}")]
    Provider(#[from] ProviderError),
}

/// Progress callbacks (a progress bar on a terminal, nothing otherwise).
pub trait Progress: Sync {
    fn planned(&self, _writes: usize) {}
    fn wrote(&self, _update: &Update, _outcome: &Outcome) {}
}

/// No progress display.
pub struct Quiet;
impl Progress for Quiet {}

/// The providers of a config, built once and kept (a daemon keeps them across runs, so their
/// rate budgets are shared by every run of the process).
pub struct Engine {
    pub config: Config,
    providers: BTreeMap<ProviderKind, Arc<AnyProvider>>,
    rules: RuleBook,
}

impl Engine {
    /// Builds the adapters of a config whose secrets are resolved.
    pub fn new(config: Config) -> Result<Engine, ProviderError> {
        Self::reusing(config, None)
    }

    /// Builds the adapters of a reloaded config, keeping the rate budget of every provider whose
    /// quota settings did not change, so a reload never resets the pacing of a credential.
    pub fn reusing(config: Config, previous: Option<&Engine>) -> Result<Engine, ProviderError> {
        let mut providers = BTreeMap::new();
        for p in &config.providers {
            let kept = previous.and_then(|old| {
                let same = old.config.provider(p.kind).is_some_and(|o| {
                    o.rate == p.rate
                        && o.share == p.share
                        && o.base_url == p.base_url
                        && daily_limit(o) == daily_limit(p)
                });
                same.then(|| old.providers.get(&p.kind).map(|a| a.budget().clone()))
                    .flatten()
            });
            let adapter = match kept {
                Some(budget) => AnyProvider::build_with_budget(p, config.normalizer, budget)?,
                None => AnyProvider::build(p, config.normalizer)?,
            }
            .with_mapping(&config.mapping);
            providers.insert(p.kind, Arc::new(adapter));
        }
        let rules = RuleBook::new(providers.values().map(|p| p.rules().clone()));
        Ok(Engine {
            config,
            providers,
            rules,
        })
    }

    /// The adapters.
    pub fn providers(&self) -> &BTreeMap<ProviderKind, Arc<AnyProvider>> {
        &self.providers
    }

    /// One run. Every log line it writes carries the run id.
    pub async fn run(
        &self,
        opts: RunOptions,
        cancel: &CancellationToken,
        progress: &dyn Progress,
    ) -> Result<RunReport, SyncError> {
        let span = tracing::info_span!("run", id = %RUN_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed), mode = if opts.diff { "diff" } else { "sync" }, state_run = tracing::field::Empty);
        self.run_inner(opts, cancel, progress)
            .instrument(span)
            .await
    }

    /// The pass, one phase after another (ARCHITECTURE.md names them).
    async fn run_inner(
        &self,
        opts: RunOptions,
        cancel: &CancellationToken,
        progress: &dyn Progress,
    ) -> Result<RunReport, SyncError> {
        let started = Instant::now();
        let mode = opts.mode();
        let (store, mut memory) = self.open_state(mode)?;
        let run_id = match (&store, mode) {
            (Some(s), Mode::Sync) => Some(s.begin_run(Mode::Sync)?),
            _ => None,
        };
        if let Some(id) = run_id {
            tracing::Span::current().record("state_run", id);
        }

        // 1. List every provider at once; one its quota cannot pay for now is deferred and
        //    takes part through its snapshot (SPEC section 14).
        let list_started = Instant::now();
        let mut store = store;
        let mut listed = self.list(store.as_mut(), mode, opts.pacing).await?;
        let list_ms = list_started.elapsed().as_millis();
        let records = std::mem::take(&mut listed.records);
        let by_id: HashMap<&RecordId, &Contact> = records.iter().map(|r| (&r.id, r)).collect();

        // 2. Settle writes whose outcome is unknown (a crash after sending, a timeout); those
        //    of a deferred provider wait for its next listing (its snapshot predates them).
        let listed_now: HashMap<&RecordId, &Contact> = by_id
            .iter()
            .filter(|(id, _)| !listed.deferred.contains_key(&id.provider))
            .map(|(id, r)| (*id, *r))
            .collect();
        let pending_checked =
            settle_unknown_writes(store.as_ref(), mode, &listed_now, &mut memory)?;
        let listed_kinds: BTreeSet<ProviderKind> = listed
            .counts
            .keys()
            .filter(|k| !listed.deferred.contains_key(k))
            .copied()
            .collect();
        let mut store = store;
        let creates_settled = match store.as_mut() {
            Some(s) => {
                import::settle_pending_creates(
                    s,
                    mode == Mode::Sync,
                    &self.providers,
                    &records,
                    &listed_kinds,
                    &mut memory,
                )
                .await?
            }
            None => import::SettledCreates::default(),
        };

        // 3. Plan (or take the plan file's writes, minus stale and now-forbidden ones).
        // Nothing is created in a provider whose listing failed.
        let rules = self.rules.creating_only_in(&listed_kinds);
        let mut plan = reconcile::plan(&records, &memory, &self.config.policy, &rules);
        let stale = match &opts.plan {
            Some(file) => self.take_plan_file(file, &mut plan, &records, &by_id, &memory)?,
            None => Vec::new(),
        };
        if opts.retry_failed {
            let failed = failed_records(store.as_ref(), &self.config.state_path)?;
            plan.updates.retain(|u| failed.contains(&u.patch.record));
            plan.creates.clear();
        }
        withhold_deferred(&mut plan, &mut listed);

        // 4. Guard rails.
        let guard = if opts.force {
            Vec::new()
        } else {
            self.guard_rails(&plan, &listed.counts, &stale)
        };
        for g in &guard {
            tracing::error!(provider = %g.provider, threshold = %g.threshold, "{}", g.message);
        }

        let mut report = RunReport {
            mode,
            run_id,
            plan,
            outcomes: None,
            stale,
            listed: listed.counts,
            scanned: listed.moved.clone(),
            problems: listed.problems,
            guard,
            warnings: listed.warnings,
            pending_checked,
            creates_settled,
            create_outcomes: None,
            duration_ms: 0,
            list_ms,
            apply_ms: 0,
            lanes: BTreeMap::new(),
            mapping: self.config.mapping.clone(),
        };
        // A diff stops here: it has no writable store and no run in the history.
        let (Some(mut store), Some(run)) = (store, run_id) else {
            report.duration_ms = started.elapsed().as_millis();
            return Ok(report);
        };
        store.save_findings(
            run,
            &Review::of_plan(&report.plan, "last-run", Some(run)).to_json(),
        )?;
        if !report.guard.is_empty() {
            let msg = report
                .guard
                .iter()
                .map(|g| g.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            self.record_spending(&mut store, &listed.scanned, &report)?;
            store.finish_run(run, RunOutcome::Guard, counts(&report), Some(&msg))?;
            report.duration_ms = started.elapsed().as_millis();
            return Ok(report);
        }

        // 5. Persist the decision, then apply.
        let mut store = self
            .apply(store, run, &memory, &by_id, &mut report, cancel, progress)
            .await?;

        // 6. Baselines of everything not written (written ones were saved with their
        //    confirmation). A record the plan file found stale keeps its old baseline, so its
        //    edit is still a change next run.
        save_baselines(&mut store, &report, &records, &by_id, &memory)?;
        self.record_spending(&mut store, &listed.scanned, &report)?;
        let failed = report.failure_count();
        let outcome = if cancel.is_cancelled() {
            RunOutcome::Interrupted
        } else if failed > 0 {
            RunOutcome::Failed
        } else {
            RunOutcome::Ok
        };
        store.finish_run(run, outcome, counts(&report), None)?;
        report.duration_ms = started.elapsed().as_millis();
        tracing::info!(
            planned = report.plan.updates.len(),
            applied = report.applied(),
            failed,
            duration_ms = report.duration_ms as u64,
            "Run finished."
        );
        Ok(report)
    }

    /// Opens the state: read-only and unlocked for a diff, locked for a sync.
    fn open_state(&self, mode: Mode) -> Result<(Option<StateStore>, Memory), SyncError> {
        let path = self.config.state_path.as_path();
        Ok(match mode {
            Mode::Diff => match StateStore::open_read_only(path)? {
                Some(s) => {
                    let m = s.load_memory()?;
                    // Kept open (read-only) so unknown writes can be settled in memory.
                    (Some(s), m)
                }
                None => (None, Memory::default()),
            },
            Mode::Sync => {
                let s = StateStore::open(path)?;
                let m = s.load_memory()?;
                (Some(s), m)
            }
        })
    }

    /// Lists every provider at once; a provider whose listing fails is left out of the run.
    ///
    /// Before listing, the cadence ([`cadence::decide`]) defers each provider whose scan
    /// today's quota cannot pay for (or, under [`Pacing::Spread`], whose next scan is not due):
    /// it is not listed, and its snapshot (its records as last listed) takes part instead, so
    /// the others still sync against it. A complete listing replaces the snapshot and updates
    /// the provider's cost model (a sync only: a diff opens the state read-only).
    async fn list(
        &self,
        mut store: Option<&mut StateStore>,
        mode: Mode,
        pacing: Pacing,
    ) -> Result<Listed, SyncError> {
        let now = chrono::Utc::now();
        let mut out = Listed::default();
        let mut models: BTreeMap<ProviderKind, CostModel> = BTreeMap::new();
        let mut quotas: BTreeMap<ProviderKind, Quota> = BTreeMap::new();
        for kind in self.providers.keys() {
            let model = match store.as_deref() {
                Some(s) => s.cost_model(*kind)?,
                None => CostModel::default(),
            };
            let quota = self.config.provider(*kind).map(Quota::of).unwrap_or(Quota {
                daily_limit: None,
                share: 1.0,
                min_scan_interval: None,
            });
            models.insert(*kind, model);
            quotas.insert(*kind, quota);
        }
        let tick = cadence::plan_tick(now, quotas.iter().map(|(k, q)| (*k, q, &models[k])), pacing);
        let deferrable: BTreeSet<ProviderKind> = quotas
            .iter()
            .filter(|(_, q)| q.can_defer())
            .map(|(k, _)| *k)
            .collect();
        out.deferred.extend(tick.defer);
        let to_list: Vec<_> = tick
            .scan
            .iter()
            .filter_map(|k| self.providers.get(k))
            .collect();
        let listings = futures::future::join_all(to_list.into_iter().map(|p| async move {
            let before = p.budget().usage().requests;
            (p.kind(), provider::list_all(p).await, before)
        }))
        .await;
        let writable = mode == Mode::Sync;
        for (kind, result, before) in listings {
            let usage = self
                .providers
                .get(&kind)
                .map(|p| p.budget().usage())
                .unwrap_or_default();
            let mut model = models.remove(&kind).unwrap_or_default();
            model.spend(
                chrono::Utc::now(),
                usage.requests.saturating_sub(before),
                usage.day_remaining_reported,
                usage.day_resets_in,
            );
            match result {
                Ok(l) => {
                    tracing::info!(provider = %kind, records = l.contacts.len(), pages = l.pages, "Listed contacts.");
                    model.scanned(chrono::Utc::now(), l.pages as u64, l.contacts.len() as u64);
                    // Only a provider that can be deferred is ever planned from its snapshot;
                    // another's is cleared rather than rewritten every run.
                    if let (Some(s), true) = (store.as_deref_mut(), writable) {
                        let keep = if deferrable.contains(&kind) {
                            l.contacts.as_slice()
                        } else {
                            &[]
                        };
                        s.save_snapshot(kind, keep)?;
                    }
                    out.scanned.insert(kind, usage.requests);
                    out.counts.insert(kind, l.contacts.len());
                    out.moved.insert(kind, (l.moved, l.scans.max(1)));
                    out.records.extend(l.contacts);
                }
                Err(e) => {
                    tracing::error!(provider = %kind, error = %e, "Listing failed; this provider is left out of this run.");
                    out.problems.push(ProviderProblem {
                        provider: kind.to_string(),
                        stage: "list".into(),
                        error: e.to_string(),
                    });
                }
            }
            if let (Some(s), true) = (store.as_deref(), writable) {
                s.save_cost_model(kind, &model)?;
            }
        }
        for (kind, d) in out.deferred.clone() {
            let snapshot = match store.as_deref() {
                Some(s) => s.snapshot(kind)?,
                None => Vec::new(),
            };
            let said = if snapshot.is_empty() {
                format!("{d}; no snapshot of it is stored yet, so it is left out of this run")
            } else {
                format!(
                    "{d}; its {} records take part as last listed, and its own writes wait for its next scan",
                    snapshot.len()
                )
            };
            if pacing == Pacing::WhenAffordable {
                tracing::error!(provider = %kind, until = %d.until, "Deferred before listing: {said}.");
                out.problems.push(ProviderProblem {
                    provider: kind.to_string(),
                    stage: "quota".into(),
                    error: format!("deferred before listing: {said}"),
                });
            } else {
                tracing::info!(provider = %kind, until = %d.until, "Deferred: {said}.");
                out.warnings.push(format!("{kind}: {said}"));
            }
            if !snapshot.is_empty() {
                out.counts.insert(kind, snapshot.len());
                out.records.extend(snapshot);
            }
        }
        let listing_warnings: Vec<String> = out
            .records
            .iter()
            .flat_map(|r| r.warnings.iter().map(move |w| format!("{}: {w}", r.id)))
            .collect();
        for w in &listing_warnings {
            tracing::warn!(warning = %w, "Provider data kept as-is.");
        }
        out.warnings.extend(listing_warnings);
        Ok(out)
    }

    /// Adds what the run spent after listing (its writes) to the cost model of every provider
    /// it listed, and refreshes the snapshot rows of the records it wrote.
    fn record_spending(
        &self,
        store: &mut StateStore,
        scanned: &BTreeMap<ProviderKind, u64>,
        report: &RunReport,
    ) -> Result<(), SyncError> {
        let outcomes = report.outcomes.as_deref().unwrap_or_default();
        let now = chrono::Utc::now();
        for (kind, listed_at) in scanned {
            let Some(adapter) = self.providers.get(kind) else {
                continue;
            };
            let usage = adapter.budget().usage();
            let mut model = store.cost_model(*kind)?;
            model.spend(
                now,
                usage.requests.saturating_sub(*listed_at),
                usage.day_remaining_reported,
                usage.day_resets_in,
            );
            model.writes = report
                .plan
                .updates
                .iter()
                .zip(outcomes)
                .filter(|(u, o)| u.provider() == *kind && !matches!(o, Outcome::NotAttempted(_)))
                .count() as u64;
            store.save_cost_model(*kind, &model)?;
        }
        let written = outcomes.iter().filter_map(|o| match o {
            Outcome::Applied(c) => Some(c.as_ref()),
            _ => None,
        });
        store.refresh_snapshot(written)?;
        Ok(())
    }

    /// Replaces the plan's updates by the plan file's. A record changed since the plan was
    /// made is stale: its write is not sent (and its edit stays an edit). The others are checked
    /// again against the rules on the fresh listing. Returns the stale updates' indexes.
    fn take_plan_file(
        &self,
        file: &PlanFile,
        plan: &mut Plan,
        records: &[Contact],
        by_id: &HashMap<&RecordId, &Contact>,
        memory: &Memory,
    ) -> Result<Vec<(usize, String)>, SyncError> {
        let updates = file.updates().map_err(|message| PlanFileError::Invalid {
            path: "plan".into(),
            message,
        })?;
        let mut fresh = Vec::new();
        let mut stale_updates = Vec::new();
        for mut u in updates {
            match by_id.get(&u.patch.record) {
                None => stale_updates.push((u, "the record no longer exists".to_string())),
                Some(r) => {
                    let changed: Vec<String> = u
                        .patch
                        .changes
                        .iter()
                        .filter(|c| !r.get(c.field).same_as(&c.old))
                        .map(|c| c.field.to_string())
                        .collect();
                    if changed.is_empty() {
                        u.patch.update_ref = r.update_ref.clone().unwrap_or_default();
                        fresh.push(u);
                    } else {
                        stale_updates.push((
                            u,
                            format!(
                                "changed since the plan was made ({}); not overwritten",
                                changed.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        let skipped = reconcile::recheck(records, memory, &self.rules, &mut fresh);
        // A planned create is sent only if planning now would create it too (the person still
        // lacks a record there, its key is still free, it still passes the filter); with the
        // plan's values.
        let planned = file.creates().map_err(|message| PlanFileError::Invalid {
            path: "plan".into(),
            message,
        })?;
        let fresh_creates = std::mem::take(&mut plan.creates);
        for (person, new) in planned {
            match fresh_creates
                .iter()
                .find(|c| c.person == person && c.provider() == new.provider)
            {
                Some(now) => plan.creates.push(reconcile::Create { new, ..now.clone() }),
                None => {
                    let reported = plan
                        .create_skips
                        .iter()
                        .any(|s| s.person == person && s.provider == new.provider);
                    if !reported {
                        plan.create_skips.push(reconcile::CreateSkip {
                            person: person.into(),
                            provider: new.provider,
                            rule: crate::provider::rules::RuleId::KeyExists,
                            detail: "no longer needed: the person has a record there now, or no longer passes the create filter".into(),
                        });
                    }
                }
            }
        }
        let agreed = file.agreed();
        for p in &mut plan.people {
            if let Some(a) = agreed.get(p.person.as_str()) {
                p.agreed = a.clone();
            }
        }
        plan.skipped.extend(skipped);
        plan.updates = fresh;
        let mut stale = Vec::new();
        for (u, why) in stale_updates {
            stale.push((plan.updates.len(), why));
            plan.updates.push(u);
        }
        Ok(stale)
    }

    /// Saves the agreed values, then applies every update that is not stale, journaling each.
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        mut store: StateStore,
        run: i64,
        memory: &Memory,
        by_id: &HashMap<&RecordId, &Contact>,
        report: &mut RunReport,
        cancel: &CancellationToken,
        progress: &dyn Progress,
    ) -> Result<StateStore, SyncError> {
        store.save_people(&report.plan.people, memory)?;
        let stale_idx: HashSet<usize> = report.stale.iter().map(|(i, _)| *i).collect();
        let to_send: Vec<Update> = report
            .plan
            .updates
            .iter()
            .enumerate()
            .filter(|(i, _)| !stale_idx.contains(i))
            .map(|(_, u)| u.clone())
            .collect();
        progress.planned(to_send.len());
        let lanes: BTreeMap<ProviderKind, Lane> = self
            .config
            .providers
            .iter()
            .map(|p| {
                (
                    p.kind,
                    Lane {
                        max_concurrency: p.max_concurrency,
                    },
                )
            })
            .collect();
        let journal = Journal {
            store: Arc::new(Mutex::new(store)),
            run,
        };
        let listed_baseline = |u: &Update| by_id.get(&u.patch.record).map(|r| baseline_of(r));
        let apply_started = Instant::now();
        let executed = executor::execute(
            &to_send,
            &self.providers,
            &lanes,
            &listed_baseline,
            Some(&journal),
            cancel,
            &|u, o| progress.wrote(u, o),
        )
        .await;
        report.apply_ms = apply_started.elapsed().as_millis();
        report.lanes = executed.lanes;
        // Creates run after the updates of every provider, on the same budgets.
        if !cancel.is_cancelled() {
            report.create_outcomes = Some(
                import::execute_creates(
                    &report.plan.creates,
                    &self.providers,
                    &lanes,
                    Some(&journal),
                    cancel,
                )
                .await,
            );
        }
        let mut sent = executed.outcomes.into_iter();
        report.outcomes = Some(
            (0..report.plan.updates.len())
                .map(|i| {
                    if stale_idx.contains(&i) {
                        Outcome::NotAttempted("stale".into())
                    } else {
                        sent.next()
                            .unwrap_or(Outcome::NotAttempted("not sent".into()))
                    }
                })
                .collect(),
        );
        let store = Arc::try_unwrap(journal.store)
            .map_err(|_| StateError::Io {
                path: self.config.state_path.clone(),
                message: "state store still in use".into(),
            })?
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        Ok(store)
    }

    fn guard_rails(
        &self,
        plan: &Plan,
        listed: &BTreeMap<ProviderKind, usize>,
        stale: &[(usize, String)],
    ) -> Vec<GuardTrip> {
        let stale: HashSet<usize> = stale.iter().map(|(i, _)| *i).collect();
        let mut trips = Vec::new();
        for p in &self.config.providers {
            let creates = plan
                .creates
                .iter()
                .filter(|c| c.provider() == p.kind)
                .count() as u64;
            if creates > p.max_creates {
                trips.push(GuardTrip {
                    provider: p.kind.to_string(),
                    threshold: "max_creates".into(),
                    limit: p.max_creates.to_string(),
                    actual: creates.to_string(),
                    message: format!(
                        "{}: this run would create {creates} contacts, over `max_creates` = {} by {}; nothing was written (`--force` applies it)",
                        p.kind,
                        p.max_creates,
                        creates - p.max_creates
                    ),
                });
            }
            let updates: Vec<&Update> = plan
                .updates
                .iter()
                .enumerate()
                .filter(|(i, u)| u.provider() == p.kind && !stale.contains(i))
                .map(|(_, u)| u)
                .collect();
            if updates.is_empty() {
                continue;
            }
            let total = listed.get(&p.kind).copied().unwrap_or(0).max(1);
            let share = updates.len() as f64 / total as f64;
            if updates.len() as u64 >= p.guard.min_records && share > p.guard.max_change_share {
                trips.push(GuardTrip {
                    provider: p.kind.to_string(),
                    threshold: "max_change_share".into(),
                    limit: format!("{:.0}%", p.guard.max_change_share * 100.0),
                    actual: format!("{:.0}%", share * 100.0),
                    message: format!(
                        "{}: this run would change {} of {} contacts ({:.0}%), over `max_change_share` = {:.0}% by {:.0} points",
                        p.kind,
                        updates.len(),
                        total,
                        share * 100.0,
                        p.guard.max_change_share * 100.0,
                        (share - p.guard.max_change_share) * 100.0
                    ),
                });
            }
            let clears: u64 = updates
                .iter()
                .flat_map(|u| &u.patch.changes)
                .map(|c| clears_in(&c.old, &c.new))
                .sum();
            if clears > p.guard.max_clears {
                trips.push(GuardTrip {
                    provider: p.kind.to_string(),
                    threshold: "max_clears".into(),
                    limit: p.guard.max_clears.to_string(),
                    actual: clears.to_string(),
                    message: format!(
                        "{}: this run would clear {clears} values, over `max_clears` = {} by {}",
                        p.kind,
                        p.guard.max_clears,
                        clears - p.guard.max_clears
                    ),
                });
            }
        }
        trips
    }
}

/// What listing every provider gave.
#[derive(Default)]
struct Listed {
    /// The records listed, and the snapshots of deferred providers.
    records: Vec<Contact>,
    /// Records listed per provider (providers whose listing failed are absent).
    counts: BTreeMap<ProviderKind, usize>,
    /// Per provider: records that moved during the scan, and scans made.
    moved: BTreeMap<ProviderKind, (usize, usize)>,
    problems: Vec<ProviderProblem>,
    warnings: Vec<String>,
    /// Providers not listed this run (SPEC section 14), and why.
    deferred: BTreeMap<ProviderKind, Deferral>,
    /// Providers listed completely, with their budget's request count when the listing ended.
    scanned: BTreeMap<ProviderKind, u64>,
}

/// Takes the updates of deferred providers out of the plan: their records take part through
/// their snapshot, and their own writes wait for their next scan (they are planned again from a
/// fresh listing then). Says so in the warnings.
fn withhold_deferred(plan: &mut Plan, listed: &mut Listed) {
    for kind in listed.deferred.keys() {
        let waiting = plan.updates_for(*kind).count();
        if waiting > 0 {
            tracing::info!(provider = %kind, writes = waiting, "Deferred provider's writes wait for its next scan.");
            listed.warnings.push(format!(
                "{kind}: {waiting} writes wait for its next scan (deferred to fit its daily quota)"
            ));
        }
    }
    plan.updates
        .retain(|u| !listed.deferred.contains_key(&u.provider()));
}

/// Settles writes left `intended` (a crash after sending, or a timeout or dropped connection
/// that left the outcome unknown) against what the provider holds now (SPEC section 10): each
/// field the record holds exactly as we tried to write it becomes its baseline, in `memory` and
/// (for a sync) in the state, so it is never mistaken for a new edit by that record. Returns
/// (writes verified as applied, writes not or not wholly applied).
fn settle_unknown_writes(
    store: Option<&StateStore>,
    mode: Mode,
    by_id: &HashMap<&RecordId, &Contact>,
    memory: &mut Memory,
) -> Result<(usize, usize), SyncError> {
    let mut checked = (0, 0);
    let Some(s) = store else {
        return Ok(checked);
    };
    for p in s.pending_writes()? {
        let Some(r) = by_id.get(&p.record) else {
            continue;
        };
        let held: Vec<_> = p
            .after
            .iter()
            .filter(|(f, v)| r.get(**f).same_as(v))
            .collect();
        let applied = held.len() == p.after.len();
        let baseline = (!held.is_empty()).then(|| {
            let mut b = memory.baselines.get(&p.record).cloned().unwrap_or_default();
            for (f, v) in &held {
                b.insert(**f, (*v).clone());
            }
            b
        });
        if let Some(b) = &baseline {
            memory.baselines.insert(p.record.clone(), b.clone());
        }
        if mode == Mode::Sync {
            s.settle_pending(p.id, applied, baseline.as_ref().map(|b| (&p.record, b)))?;
        }
        if applied {
            checked.0 += 1;
        } else {
            checked.1 += 1;
        }
        tracing::info!(record = %p.record, applied, "Checked a write whose outcome was unknown.");
    }
    Ok(checked)
}

/// The records in the dead-letter view, for `--retry-failed`.
fn failed_records(
    store: Option<&StateStore>,
    path: &std::path::Path,
) -> Result<HashSet<RecordId>, SyncError> {
    let rows = match store {
        Some(s) => s.failures()?,
        None => StateStore::open_read_only(path)?
            .map(|s| s.failures())
            .transpose()?
            .unwrap_or_default(),
    };
    Ok(rows.into_iter().map(|f| f.record).collect())
}

/// Saves the link and baseline of every record the run placed and did not write (written ones
/// were saved with their confirmation); records a plan file found stale keep their old
/// baseline, so their edit is still a change next run.
fn save_baselines(
    store: &mut StateStore,
    report: &RunReport,
    records: &[Contact],
    by_id: &HashMap<&RecordId, &Contact>,
    memory: &Memory,
) -> Result<(), SyncError> {
    // Each record's place in this listing (from 1), which the state keeps from its first save
    // so it loads in listing order next time.
    let place: HashMap<&RecordId, i64> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (&r.id, i as i64 + 1))
        .collect();
    let outcomes = report.outcomes.as_deref().unwrap_or_default();
    let written: HashSet<&RecordId> = report
        .plan
        .updates
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| o.is_applied())
        .map(|(u, _)| &u.patch.record)
        .collect();
    // A stale record's baseline: what it held when the plan was made (the plan's `old`
    // values), over its remembered baseline, so what it holds now counts as its edit.
    let stale: HashMap<&RecordId, &Update> = report
        .stale
        .iter()
        .filter_map(|(i, _)| report.plan.updates.get(*i))
        .map(|u| (&u.patch.record, u))
        .collect();
    let mut rows: Vec<(RecordId, reconcile::PersonId, reconcile::Baseline, i64)> = Vec::new();
    for p in &report.plan.people {
        for id in &p.records {
            if written.contains(id) {
                continue;
            }
            let Some(r) = by_id.get(id) else { continue };
            let baseline = match stale.get(id) {
                Some(u) => {
                    let mut b = memory
                        .baselines
                        .get(id)
                        .cloned()
                        .unwrap_or_else(|| baseline_of(r));
                    for c in &u.patch.changes {
                        b.insert(c.field, c.old.clone());
                    }
                    b
                }
                None => baseline_of(r),
            };
            let seq = place.get(id).copied().unwrap_or(0);
            rows.push((id.clone(), p.person.clone(), baseline, seq));
        }
    }
    store.save_records(rows.iter().map(|(a, b, c, d)| (a, b, c, *d)), memory)?;
    // Records written this run were saved with the write's confirmation, without a place.
    let new_written = written
        .iter()
        .filter(|id| !memory.links.contains_key(**id))
        .filter_map(|id| Some((*id, *place.get(id)?)));
    store.place_records(new_written)?;
    Ok(())
}

fn daily_limit(p: &crate::config::ProviderConfig) -> Option<u64> {
    match &p.specific {
        crate::config::ProviderSpecific::Privy { daily_limit, .. } => *daily_limit,
        _ => None,
    }
}

/// How many values a change removes: a cleared scalar, each dropped tag or custom-field key.
pub fn clears_in(old: &FieldValue, new: &FieldValue) -> u64 {
    match (old, new) {
        (FieldValue::Scalar(Some(_)), FieldValue::Scalar(None)) => 1,
        (FieldValue::Set(a), FieldValue::Set(b)) => a.difference(b).count() as u64,
        (FieldValue::Map(a), FieldValue::Map(b)) => {
            a.keys().filter(|k| !b.contains_key(k)).count() as u64
        }
        _ => 0,
    }
}

fn counts(r: &RunReport) -> RunCounts {
    RunCounts {
        planned: r.plan.updates.len(),
        applied: r.applied(),
        failed: r.failure_count(),
        skipped: r.plan.skipped.len(),
        conflicts: r.plan.conflicts.len(),
    }
}

/// Process-wide run counter for log spans (the state store's run id is logged too).
static RUN_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Config {
        Config::parse(crate::config::EXAMPLE, "config/contact-sync.example.toml")
            .and_then(Config::resolve_secrets)
            .expect("the example config is valid")
    }

    #[test]
    fn a_reload_keeps_budgets_whose_quota_did_not_change() {
        let old = Engine::new(example()).expect("engine");
        let mut changed = example();
        for p in &mut changed.providers {
            if p.kind == ProviderKind::Protocol {
                p.share = 0.5;
            }
        }
        let new = Engine::reusing(changed, Some(&old)).expect("engine");
        for (kind, adapter) in &new.providers {
            let same = Arc::ptr_eq(adapter.budget(), old.providers[kind].budget());
            assert_eq!(same, *kind != ProviderKind::Protocol, "{kind}");
        }
    }
}
