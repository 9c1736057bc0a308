//! The background service: syncs on a cron schedule until told to stop.
//!
//! One loop reacts to [`Control`] events: cron ticks (tokio-cron-scheduler), SIGHUP (reload)
//! and SIGTERM/SIGINT (stop). **Invariant:** one sync runs at a time; a tick that arrives while a
//! run is going is skipped and logged. On stop, scheduling ends, the running sync sends nothing
//! new and its in-flight requests finish within `daemon.shutdown_grace`; state is persisted by
//! the run itself, so the process then exits 0. The loop also feeds the systemd watchdog (see
//! `Watchdog`): a loop that stops turning, or a sync past `daemon.max_run_time`, stops the
//! pings.

pub mod control;
pub mod health;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use control::Control;
use health::{Health, SharedHealth};

use crate::cadence::Pacing;
use crate::config::{Config, DaemonSettings};
use crate::provider::ProviderError;
use crate::report::RunReport;
use crate::state::RunOutcome;
use crate::sync::{Engine, Quiet, RunOptions, SyncError};

/// Why the daemon could not start or keep running. Each is a runtime failure (the config was
/// valid), and each message says what to look at.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// SIGTERM, SIGINT or SIGHUP handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The `/healthz` and `/metrics` listener could not bind.
    #[error("cannot listen on {addr} for /healthz and /metrics (is another process using it? change `daemon.listen`): {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The cron scheduler could not start or take the job.
    #[error("cannot start the scheduler: {0}")]
    Scheduler(#[source] tokio_cron_scheduler::JobSchedulerError),
    /// The providers could not be set up from the config.
    #[error("cannot set up the providers: {0}")]
    Providers(#[source] ProviderError),
}

/// A sync in progress: its task, the token that stops it sending, and when it started.
type Running = (
    JoinHandle<Result<RunReport, SyncError>>,
    CancellationToken,
    Instant,
);

/// Options the command line sets.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Where the config came from, for SIGHUP reloads (`None`: reload keeps the config).
    pub config_path: Option<PathBuf>,
    /// Run a sync at start.
    pub run_now: bool,
}

/// Runs the daemon with OS signals wired in, until SIGTERM/SIGINT.
pub async fn run_with_signals(
    config: Config,
    path: PathBuf,
    run_now: bool,
) -> Result<(), DaemonError> {
    let (tx, rx) = mpsc::channel(16);
    control::forward_signals(tx.clone()).map_err(DaemonError::Signals)?;
    run(
        config,
        DaemonOptions {
            config_path: Some(path),
            run_now,
        },
        tx,
        rx,
    )
    .await
}

struct Scheduled {
    scheduler: JobScheduler,
    job: Uuid,
    /// The schedule the job was made from, to tell whether a reload changes it.
    cron: String,
    timezone: chrono_tz::Tz,
}

async fn schedule(config: &Config, tx: &mpsc::Sender<Control>) -> Result<Scheduled, DaemonError> {
    let scheduler = JobScheduler::new().await.map_err(DaemonError::Scheduler)?;
    let job = add_job(&scheduler, config, tx).await?;
    scheduler.start().await.map_err(DaemonError::Scheduler)?;
    Ok(Scheduled {
        scheduler,
        job,
        cron: config.schedule.cron().to_owned(),
        timezone: config.schedule.timezone(),
    })
}

async fn add_job(
    scheduler: &JobScheduler,
    config: &Config,
    tx: &mpsc::Sender<Control>,
) -> Result<Uuid, DaemonError> {
    let tx = tx.clone();
    let job = Job::new_async_tz(
        config.schedule.cron(),
        config.schedule.timezone(),
        move |_, _| {
            let tx = tx.clone();
            Box::pin(async move {
                // A full channel means ticks are piling up behind a run: dropping one is the
                // documented "skip" behaviour.
                let _ = tx.try_send(Control::SyncNow);
            })
        },
    )
    .map_err(DaemonError::Scheduler)?;
    scheduler.add(job).await.map_err(DaemonError::Scheduler)
}

/// Longest the start-up health check may delay readiness (systemd's start timeout is 90 s by
/// default); what it has not finished by then is logged as unknown.
const START_HEALTH_LIMIT: Duration = Duration::from_secs(60);

/// Runs every provider's health report once, at start, and logs its lines. A failure is
/// logged, not fatal: the runs report it again, and the provider may recover. It runs beside
/// the loop (on the same rate budgets), so a slow provider delays neither readiness nor the
/// watchdog.
async fn log_health(config: Config) {
    let config = &config;
    match tokio::time::timeout(START_HEALTH_LIMIT, crate::provider::health_reports(config)).await {
        Ok(reports) => {
            for r in reports {
                match r.result {
                    Ok(notes) => {
                        tracing::info!(provider = %r.provider, "Provider health check passed.");
                        for note in notes {
                            tracing::info!(provider = %r.provider, note = %note, "Provider health note.");
                        }
                    }
                    Err(e) => {
                        tracing::error!(provider = %r.provider, error = %e, "Provider health check failed; runs will report it too.");
                    }
                }
            }
        }
        Err(_) => tracing::warn!(
            limit_secs = START_HEALTH_LIMIT.as_secs(),
            "Provider health checks did not finish in time; starting without them."
        ),
    }
}

/// The daemon loop. Tests drive it through `tx`/`rx` instead of signals.
pub async fn run(
    config: Config,
    opts: DaemonOptions,
    tx: mpsc::Sender<Control>,
    mut rx: mpsc::Receiver<Control>,
) -> Result<(), DaemonError> {
    crate::daemon::health::prometheus();
    let health: SharedHealth = Arc::new(Mutex::new(Health::default()));
    let stop_listener = CancellationToken::new();
    if let Some(addr) = config.daemon.listen {
        let bound = health::serve(addr, health.clone(), stop_listener.clone())
            .await
            .map_err(|source| DaemonError::Listen { addr, source })?;
        tracing::info!(address = %bound, "Serving /healthz and /metrics.");
    }
    let mut engine = Arc::new(Engine::new(config.clone()).map_err(DaemonError::Providers)?);
    tokio::spawn(log_health(config.clone()));
    let mut settings = config.daemon.clone();
    let mut scheduled = schedule(&config, &tx).await?;
    let next = config
        .schedule
        .next_after(chrono::Utc::now())
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    tracing::info!(cron = %config.schedule.cron(), timezone = %config.schedule.timezone(), next_run = %next, "Daemon started.");
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("waiting for the next scheduled sync"),
    ]);
    refresh_cadence(&health, &config);
    let mut watchdog = Watchdog::from_env();
    if opts.run_now {
        let _ = tx.try_send(Control::SyncNow);
    }

    let mut running: Option<Running> = None;
    let mut pending_reload: Option<Config> = None;
    loop {
        let finished = async {
            match running.as_mut() {
                Some((handle, _, _)) => handle.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = watchdog.tick() => {
                let started = running.as_ref().map(|(_, _, t)| *t);
                watchdog.ping_unless_overdue(started, settings.max_run_time);
            }
            control = rx.recv() => match control.unwrap_or(Control::Shutdown) {
                Control::SyncNow => {
                    if running.is_some() {
                        metrics::counter!("contact_sync_ticks_skipped_total").increment(1);
                        tracing::warn!("A sync is still running; skipping this scheduled run.");
                        continue;
                    }
                    let cancel = CancellationToken::new();
                    let e = engine.clone();
                    let c = cancel.clone();
                    health.lock().unwrap_or_else(|p| p.into_inner()).running = true;
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status("syncing")]);
                    // The daemon spreads each provider's scans over the day (SPEC section 14).
                    let opts = RunOptions { pacing: Pacing::Spread, ..RunOptions::default() };
                    let handle = tokio::spawn(async move { e.run(opts, &c, &Quiet).await });
                    running = Some((handle, cancel, Instant::now()));
                }
                Control::Reload => {
                    let Some(path) = &opts.config_path else { continue };
                    match Config::load(path) {
                        Err(errors) => tracing::error!(error = %errors.to_string().trim_end(), "New config rejected; keeping the running one."),
                        Ok(new) => {
                            if running.is_some() {
                                tracing::info!("Config reloaded; it takes effect after the running sync.");
                                pending_reload = Some(new);
                            } else {
                                apply_reload(new, &mut engine, &mut settings, &mut scheduled, &tx).await;
                            }
                        }
                    }
                }
                Control::Shutdown => break,
            },
            result = finished => {
                let started = running.take().map(|(_, _, t)| t).unwrap_or_else(Instant::now);
                record_run(&health, result, started.elapsed());
                refresh_cadence(&health, &engine.config);
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Status("waiting for the next scheduled sync")]);
                if let Some(new) = pending_reload.take() {
                    apply_reload(new, &mut engine, &mut settings, &mut scheduled, &tx).await;
                }
            }
        }
    }

    tracing::info!("Stopping: no new runs; letting in-flight requests finish.");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = scheduled.scheduler.shutdown().await;
    if let Some((mut handle, cancel, started)) = running.take() {
        cancel.cancel();
        let grace = settings.shutdown_grace;
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                result = &mut handle => {
                    record_run(&health, result, started.elapsed());
                    break;
                }
                () = &mut deadline => {
                    tracing::error!(grace_secs = grace.as_secs(), "The running sync did not finish within the shutdown grace; exiting anyway (its journal lets the next run check what was sent).");
                    break;
                }
                // Still alive while draining: keep systemd's watchdog fed.
                () = watchdog.tick() => watchdog.ping_unless_overdue(None, None),
            }
        }
    }
    stop_listener.cancel();
    tracing::info!("Stopped.");
    Ok(())
}

async fn apply_reload(
    new: Config,
    engine: &mut Arc<Engine>,
    settings: &mut DaemonSettings,
    scheduled: &mut Scheduled,
    tx: &mpsc::Sender<Control>,
) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
    match Engine::reusing(new.clone(), Some(engine)) {
        Err(e) => {
            tracing::error!(error = %e, "New config cannot build its providers; keeping the running one.")
        }
        Ok(e) => {
            if new.schedule.cron() != scheduled.cron
                || new.schedule.timezone() != scheduled.timezone
            {
                let _ = scheduled.scheduler.remove(&scheduled.job).await;
                match add_job(&scheduled.scheduler, &new, tx).await {
                    Ok(job) => {
                        scheduled.job = job;
                        scheduled.cron = new.schedule.cron().to_owned();
                        scheduled.timezone = new.schedule.timezone();
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "Could not reschedule; keeping the old schedule.")
                    }
                }
            }
            *settings = new.daemon.clone();
            *engine = Arc::new(e);
            tracing::info!(cron = %new.schedule.cron(), "Config reloaded.");
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

fn record_run(
    health: &SharedHealth,
    result: Result<Result<RunReport, SyncError>, tokio::task::JoinError>,
    took: Duration,
) {
    metrics::histogram!("contact_sync_run_duration_seconds").record(took.as_secs_f64());
    let mut h = health.lock().unwrap_or_else(|p| p.into_inner());
    h.running = false;
    h.runs += 1;
    h.reasons.clear();
    match result {
        Ok(Ok(report)) => {
            for u in &report.plan.skipped {
                metrics::counter!("contact_sync_writes_total", "provider" => u.record.provider.as_str(), "result" => "skipped").increment(1);
            }
            for p in &report.problems {
                h.reasons.push(format!(
                    "{} unreachable or failing: {}",
                    p.provider, p.error
                ));
            }
            let failed = report.failure_count();
            let outcome = if failed > 0 {
                h.reasons.push(format!("last run had {failed} failures"));
                RunOutcome::Failed
            } else if !report.guard.is_empty() {
                h.reasons
                    .push("last run was stopped by a guard rail".into());
                RunOutcome::Guard
            } else {
                let now = chrono::Utc::now();
                h.last_success = Some(now.to_rfc3339());
                metrics::gauge!("contact_sync_last_success_timestamp_seconds")
                    .set(now.timestamp() as f64);
                RunOutcome::Ok
            };
            metrics::counter!("contact_sync_runs_total", "outcome" => outcome.as_str())
                .increment(1);
            h.last_outcome = Some(outcome);
            tracing::info!(
                outcome = %outcome,
                applied = report.applied(),
                failed,
                took_ms = took.as_millis() as u64,
                "Scheduled sync finished."
            );
        }
        Ok(Err(e)) => {
            metrics::counter!("contact_sync_runs_total", "outcome" => RunOutcome::Error.as_str())
                .increment(1);
            h.last_outcome = Some(RunOutcome::Error);
            h.reasons.push(format!("last run could not run: {e}"));
            tracing::error!(error = %e, "Scheduled sync could not run.");
        }
        Err(e) => {
            metrics::counter!("contact_sync_runs_total", "outcome" => RunOutcome::Error.as_str())
                .increment(1);
            h.last_outcome = Some(RunOutcome::Error);
            h.reasons.push(format!("last run crashed: {e}"));
            tracing::error!(error = %e, "Scheduled sync task failed.");
        }
    }
}

/// The systemd watchdog, fed from the daemon loop itself (never from a task of its own), so a
/// loop that stops turning stops the pings, and systemd's `WatchdogSec=` restarts the daemon.
struct Watchdog {
    /// Ticks at half the watchdog interval; `None` when the unit sets no `WatchdogSec=`.
    interval: Option<tokio::time::Interval>,
    /// Whether the pings stopped because a sync ran past `daemon.max_run_time` (logged once).
    withheld: bool,
}

impl Watchdog {
    /// The watchdog systemd asked for (`WATCHDOG_USEC`, and `WATCHDOG_PID` if set), if any.
    fn from_env() -> Self {
        let interval = sd_notify::watchdog_enabled().map(|every| {
            let mut i = tokio::time::interval((every / 2).max(Duration::from_millis(1)));
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            i
        });
        Watchdog {
            interval,
            withheld: false,
        }
    }

    /// The next time to ping; never, without a watchdog.
    async fn tick(&mut self) {
        match self.interval.as_mut() {
            Some(i) => {
                i.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Sends `WATCHDOG=1`, unless the sync started at `running_since` has run longer than
    /// `max_run_time`: then the pings stop, and systemd restarts the wedged daemon.
    fn ping_unless_overdue(
        &mut self,
        running_since: Option<Instant>,
        max_run_time: Option<Duration>,
    ) {
        let overdue = running_since
            .zip(max_run_time)
            .filter(|(since, limit)| since.elapsed() > *limit);
        match overdue {
            Some((since, limit)) => {
                if !self.withheld {
                    self.withheld = true;
                    tracing::error!(
                        running_secs = since.elapsed().as_secs(),
                        max_run_time_secs = limit.as_secs(),
                        "A sync has run past daemon.max_run_time; no longer pinging the systemd watchdog, so systemd restarts the daemon."
                    );
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(
                        "sync running past daemon.max_run_time; watchdog pings withheld",
                    )]);
                }
            }
            None => {
                self.withheld = false;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        }
    }
}

/// Reads each provider's cost model from the state and publishes its cadence (health and
/// metrics). Best effort: a state that cannot be read leaves the last figures and is logged.
fn refresh_cadence(health: &SharedHealth, config: &Config) {
    let store = match crate::state::StateStore::open_read_only(&config.state_path) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot read the state for the scan cadence.");
            return;
        }
    };
    let model_of = |k| {
        store
            .as_ref()
            .map_or(Ok(crate::cadence::CostModel::default()), |s| {
                s.cost_model(k)
            })
    };
    match crate::cadence::outlooks(config, model_of, chrono::Utc::now()) {
        Ok(o) => {
            for p in &o {
                tracing::debug!(provider = %p.provider, next_scan = ?p.next_scan, requests_today = p.requests_today, projected = p.projected_today, "Scan cadence.");
            }
            health::export_cadence(health, o);
        }
        Err(e) => tracing::warn!(error = %e, "Cannot read the scan cadence."),
    }
}
