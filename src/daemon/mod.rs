//! The background service: syncs on a cron schedule until told to stop.
//!
//! One loop reacts to [`Control`] events: cron ticks (tokio-cron-scheduler), SIGHUP (reload)
//! and SIGTERM/SIGINT (stop). **Invariant:** one sync runs at a time; a tick that arrives while a
//! run is going is skipped and logged. On stop, scheduling ends, the running sync sends nothing
//! new and its in-flight requests finish within `daemon.shutdown_grace`; state is persisted by
//! the run itself, so the process then exits 0.

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
use crate::config::Config;
use crate::provider::ProviderError;
use crate::report::RunReport;
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
        cron: config.schedule.cron.clone(),
        timezone: config.schedule.timezone,
    })
}

async fn add_job(
    scheduler: &JobScheduler,
    config: &Config,
    tx: &mpsc::Sender<Control>,
) -> Result<Uuid, DaemonError> {
    let tx = tx.clone();
    let job = Job::new_async_tz(
        config.schedule.cron.as_str(),
        config.schedule.timezone,
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
    let mut grace = config.daemon.shutdown_grace;
    let mut scheduled = schedule(&config, &tx).await?;
    let next = config
        .schedule
        .next_after(chrono::Utc::now())
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    tracing::info!(cron = %config.schedule.cron, timezone = %config.schedule.timezone, next_run = %next, "Daemon started.");
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("waiting for the next scheduled sync"),
    ]);
    refresh_cadence(&health, &config);
    let watchdog = start_watchdog();
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
                                apply_reload(new, &mut engine, &mut grace, &mut scheduled, &tx).await;
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
                    apply_reload(new, &mut engine, &mut grace, &mut scheduled, &tx).await;
                }
            }
        }
    }

    tracing::info!("Stopping: no new runs; letting in-flight requests finish.");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = scheduled.scheduler.shutdown().await;
    if let Some((handle, cancel, started)) = running.take() {
        cancel.cancel();
        match tokio::time::timeout(grace, handle).await {
            Ok(result) => record_run(&health, result, started.elapsed()),
            Err(_) => tracing::error!(grace_secs = grace.as_secs(), "The running sync did not finish within the shutdown grace; exiting anyway (its journal lets the next run check what was sent)."),
        }
    }
    stop_listener.cancel();
    if let Some(w) = watchdog {
        w.abort();
    }
    tracing::info!("Stopped.");
    Ok(())
}

async fn apply_reload(
    new: Config,
    engine: &mut Arc<Engine>,
    grace: &mut Duration,
    scheduled: &mut Scheduled,
    tx: &mpsc::Sender<Control>,
) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
    match Engine::reusing(new.clone(), Some(engine)) {
        Err(e) => {
            tracing::error!(error = %e, "New config cannot build its providers; keeping the running one.")
        }
        Ok(e) => {
            if new.schedule.cron != scheduled.cron || new.schedule.timezone != scheduled.timezone {
                let _ = scheduled.scheduler.remove(&scheduled.job).await;
                match add_job(&scheduled.scheduler, &new, tx).await {
                    Ok(job) => {
                        scheduled.job = job;
                        scheduled.cron = new.schedule.cron.clone();
                        scheduled.timezone = new.schedule.timezone;
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "Could not reschedule; keeping the old schedule.")
                    }
                }
            }
            *grace = new.daemon.shutdown_grace;
            *engine = Arc::new(e);
            tracing::info!(cron = %new.schedule.cron, "Config reloaded.");
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
                "failed"
            } else if !report.guard.is_empty() {
                h.reasons
                    .push("last run was stopped by a guard rail".into());
                "guard"
            } else {
                let now = chrono::Utc::now();
                h.last_success = Some(now.to_rfc3339());
                metrics::gauge!("contact_sync_last_success_timestamp_seconds")
                    .set(now.timestamp() as f64);
                "ok"
            };
            metrics::counter!("contact_sync_runs_total", "outcome" => outcome).increment(1);
            h.last_outcome = Some(outcome.into());
            tracing::info!(
                outcome,
                applied = report.applied(),
                failed,
                took_ms = took.as_millis() as u64,
                "Scheduled sync finished."
            );
        }
        Ok(Err(e)) => {
            metrics::counter!("contact_sync_runs_total", "outcome" => "error").increment(1);
            h.last_outcome = Some("error".into());
            h.reasons.push(format!("last run could not run: {e}"));
            tracing::error!(error = %e, "Scheduled sync could not run.");
        }
        Err(e) => {
            metrics::counter!("contact_sync_runs_total", "outcome" => "error").increment(1);
            h.last_outcome = Some("error".into());
            h.reasons.push(format!("last run crashed: {e}"));
            tracing::error!(error = %e, "Scheduled sync task failed.");
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
    match crate::cadence::outlooks(config, store.as_ref(), chrono::Utc::now()) {
        Ok(o) => {
            for p in &o {
                tracing::debug!(provider = %p.provider, next_scan = ?p.next_scan, requests_today = p.requests_today, projected = p.projected_today, "Scan cadence.");
            }
            health::export_cadence(health, o);
        }
        Err(e) => tracing::warn!(error = %e, "Cannot read the scan cadence."),
    }
}

/// Pings the systemd watchdog at half its interval, when the unit sets `WatchdogSec=`.
fn start_watchdog() -> Option<JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()?;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tick.tick().await;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
    }))
}
