//! The systemd watchdog is fed from the daemon loop, and withheld once a sync runs past
//! `daemon.max_run_time`, so systemd's `WatchdogSec=` restarts a wedged daemon. Checked with a
//! fake notify socket: the test binds the Unix datagram socket `NOTIFY_SOCKET` names and reads
//! what the daemon binary sends.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::Method;
use common::*;
use contact_sync::sim::{Fault, FaultRule};

/// What the daemon sent, with when it arrived (since the daemon was started).
struct Heard {
    at: Duration,
    text: String,
}

/// Starts the daemon with a 200 ms watchdog, its first sync listing Privy for 6 s, and reads
/// the notify socket for `listen`.
async fn daemon_notifications(daemon_section: &str, listen: Duration) -> Vec<Heard> {
    let w = World::start().await;
    w.seed(
        1,
        &person("Ada Lovelace", "+14155550101", "ada@example.com"),
        &[Protocol, Privy],
    );
    w.fleet
        .sim(Privy)
        .inject(FaultRule::always(Fault::Delay(Duration::from_secs(6))).on(Method::GET));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_toml(
        &w,
        dir.path(),
        &format!("[schedule]\ncron = \"0 0 0 1 1 *\"\n[daemon]\nlisten = \"\"\n{daemon_section}"),
        "",
    );
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut child = Command::new(env!("CARGO_BIN_EXE_contact-sync"))
        .env_remove("CONTACT_SYNC_CONFIG")
        .env_remove("WATCHDOG_PID")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .args(["daemon", "--run-now", "--config", &config])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn daemon");
    let heard = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut heard = Vec::new();
        let mut buf = [0u8; 4096];
        while start.elapsed() < listen {
            if let Ok(n) = socket.recv(&mut buf) {
                heard.push(Heard {
                    at: start.elapsed(),
                    text: String::from_utf8_lossy(&buf[..n]).into_owned(),
                });
            }
        }
        heard
    })
    .await
    .expect("join");
    let _ = child.kill();
    let _ = child.wait();
    heard
}

fn pings_between(heard: &[Heard], from: Duration, to: Duration) -> usize {
    heard
        .iter()
        .filter(|h| h.at >= from && h.at < to && h.text.contains("WATCHDOG=1"))
        .count()
}

fn sync_started(heard: &[Heard]) -> Duration {
    heard
        .iter()
        .find(|h| h.text.contains("STATUS=syncing"))
        .map(|h| h.at)
        .unwrap_or_else(|| {
            let all: Vec<_> = heard.iter().map(|h| h.text.as_str()).collect();
            panic!("the sync started: {all:?}")
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_running_past_max_run_time_stops_the_watchdog_pings() {
    let heard = daemon_notifications("max_run_time = \"1s\"", Duration::from_millis(4000)).await;
    assert!(heard.iter().any(|h| h.text.contains("READY=1")));
    let t = sync_started(&heard);
    assert!(
        pings_between(&heard, t, t + Duration::from_millis(900)) >= 3,
        "pings while the sync is young"
    );
    // The sync lists Privy for 6 s: from 1 s on it is past the limit and is still running.
    assert_eq!(
        pings_between(
            &heard,
            t + Duration::from_millis(1200),
            t + Duration::from_millis(3400)
        ),
        0,
        "no ping once the sync is past daemon.max_run_time"
    );
    assert!(
        heard
            .iter()
            .any(|h| h.text.contains("watchdog pings withheld")),
        "the status says why"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_max_run_time_the_loop_keeps_pinging_through_a_long_sync() {
    let heard = daemon_notifications("", Duration::from_millis(4000)).await;
    let t = sync_started(&heard);
    let late = pings_between(
        &heard,
        t + Duration::from_millis(1200),
        t + Duration::from_millis(3400),
    );
    assert!(late >= 8, "pings every 100 ms while the sync runs: {late}");
}
