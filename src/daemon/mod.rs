//! The background service (arrives with the daemon change).

use std::path::PathBuf;

use crate::cli::Exit;
use crate::config::Config;

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run_with_signals(
    _config: Config,
    _path: PathBuf,
    _run_now: bool,
) -> anyhow::Result<Exit> {
    eprintln!("error: `contact-sync daemon` arrives with the background-service change; use `contact-sync sync` from a systemd timer meanwhile");
    Ok(Exit::Usage)
}
