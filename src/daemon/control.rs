//! What can happen to the daemon, as a closed set of events fed by cron ticks and signals.

use tokio::sync::mpsc;

/// An event the daemon loop reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// A scheduled tick (or `--run-now`): start a sync unless one is running.
    SyncNow,
    /// SIGHUP: re-read the config; keep the old one if the new one is invalid.
    Reload,
    /// SIGTERM/SIGINT: stop scheduling, let in-flight requests finish, exit 0.
    Shutdown,
}

/// Feeds SIGHUP, SIGTERM and SIGINT into `tx` until the receiver is gone.
pub fn forward_signals(tx: mpsc::Sender<Control>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            let control = tokio::select! {
                _ = hup.recv() => Control::Reload,
                _ = term.recv() => Control::Shutdown,
                _ = int.recv() => Control::Shutdown,
            };
            if tx.send(control).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}
