//! The daemon binary against the simulators: scheduled runs, propagation between runs, metrics,
//! graceful SIGTERM; and runs that never overlap when a run is slower than the schedule.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use contact_sync::daemon::{self, Control, DaemonOptions};
use contact_sync::sim::{Fault, FaultRule};
use contact_sync::state::StateStore;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

async fn get(url: &str) -> Option<String> {
    reqwest::get(url).await.ok()?.text().await.ok()
}

fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_runs_propagate_and_sigterm_exits_cleanly() {
    let w = World::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    w.seed(
        1,
        &person("Ada Lovelace", "+14155550101", "ada@example.com"),
        &[Protocol, Callbell, Chatwoot, Privy],
    );
    let port = free_port();
    let config = config_toml(&w, dir.path(), &format!("[schedule]\ncron = \"* * * * * *\"\n[daemon]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace = \"5s\""), "");
    let child = Command::new(env!("CARGO_BIN_EXE_contact-sync"))
        .args(["daemon", "--config", &config, "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("daemon starts");
    let mut daemon = Daemon(child);
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");

    // At least two completed runs, seen through /metrics.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut runs = 0.0;
    while Instant::now() < deadline {
        if let Some(m) = get(&metrics_url).await {
            runs = metric(&m, "contact_sync_runs_total", "outcome=\"ok\"");
            if runs >= 2.0 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(runs >= 2.0, "two runs completed (saw {runs})");
    assert!(
        w.fleet
            .sim(Privy)
            .requests()
            .iter()
            .filter(|r| r.method == "GET")
            .count()
            >= 2,
        "each run listed Privy"
    );
    let health = get(&format!("http://127.0.0.1:{port}/healthz"))
        .await
        .expect("healthz answers");
    assert!(health.contains("\"ok\""), "{health}");

    // A change made between runs is propagated by the next run.
    let id = w.edit(
        Chatwoot,
        1,
        &person("Ada King", "+14155550101", "ada@example.com"),
    );
    let _ = id;
    let deadline = Instant::now() + Duration::from_secs(20);
    let privy_id = w.fleet.sim(Privy).contacts()[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    loop {
        let c = w.contact(Privy, &privy_id);
        if s(&c, "last_name") == Some("King") {
            break;
        }
        assert!(Instant::now() < deadline, "change not propagated: {c}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = get(&metrics_url).await.expect("metrics");
    assert!(
        metric(&m, "contact_sync_writes_total", "result=\"applied\"") >= 3.0,
        "{m}"
    );
    assert!(
        m.contains("contact_sync_request_duration_seconds_bucket"),
        "latency histogram exported"
    );
    assert!(
        m.contains("contact_sync_last_success_timestamp_seconds"),
        "last success exported"
    );

    // SIGTERM: exit 0, state consistent.
    let pid = daemon.0.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = daemon.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "daemon did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut logs = String::new();
    daemon
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut logs)
        .expect("logs");
    assert_eq!(status.code(), Some(0), "{logs}");
    for sim in &w.fleet.sims {
        assert!(!logs.contains(&sim.token()), "a token reached the logs");
    }
    assert!(
        logs.contains("\"run\"") || logs.contains("span"),
        "log lines carry the run span: {}",
        &logs[..logs.len().min(2000)]
    );
    let store = StateStore::open(&dir.path().join("state.db"))
        .expect("state opens after exit (lock released)");
    assert_eq!(store.integrity_check().expect("check"), "ok");
    assert!(
        store
            .recent_runs(100)
            .expect("runs")
            .iter()
            .all(|r| r.finished_at.is_some()),
        "no run left unfinished"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_runs_never_overlap() {
    let w = World::start().await;
    w.seed(
        1,
        &person("Ada Lovelace", "+14155550101", "ada@example.com"),
        &[Protocol, Chatwoot, Privy],
    );
    // Every listing of Privy takes 1.5 s; the schedule ticks every second.
    w.fleet.sim(Privy).inject(
        FaultRule::always(Fault::Delay(Duration::from_millis(1500))).on(axum::http::Method::GET),
    );
    let mut config = w.config.clone();
    config.schedule =
        contact_sync::config::Schedule::new("* * * * * *", chrono_tz::UTC).expect("cron parses");
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let stopper = tx.clone();
    let handle = tokio::spawn(daemon::run(
        config,
        DaemonOptions {
            config_path: None,
            run_now: true,
        },
        tx,
        rx,
    ));
    tokio::time::sleep(Duration::from_millis(5500)).await;
    stopper.send(Control::Shutdown).await.expect("send");
    handle.await.expect("join").expect("daemon ok");

    let store = StateStore::open(&w.state_path()).expect("state");
    let mut runs = store.recent_runs(100).expect("runs");
    runs.reverse();
    assert!(runs.len() >= 2, "several runs happened: {}", runs.len());
    assert!(
        runs.len() <= 4,
        "ticks during a run were skipped, not queued: {}",
        runs.len()
    );
    for pair in runs.windows(2) {
        let end = pair[0]
            .finished_at
            .as_deref()
            .and_then(contact_sync::state::parse_ts)
            .expect("finished");
        let next = contact_sync::state::parse_ts(&pair[1].started_at).expect("started");
        assert!(
            next >= end,
            "run {} started before run {} finished",
            pair[1].id,
            pair[0].id
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reload_keeps_the_old_config_when_the_new_one_is_bad() {
    let w = World::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    w.seed(
        1,
        &person("Ada Lovelace", "+14155550101", "ada@example.com"),
        &[Protocol, Chatwoot, Privy],
    );
    let path = config_toml(&w, dir.path(), "[schedule]\ncron = \"* * * * * *\"", "");
    let good = std::fs::read_to_string(&path).expect("config");
    let config = contact_sync::config::Config::load(Path::new(&path)).expect("valid config");
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let control = tx.clone();
    let handle = tokio::spawn(daemon::run(
        config,
        DaemonOptions {
            config_path: Some(path.clone().into()),
            run_now: true,
        },
        tx,
        rx,
    ));
    let runs = || {
        StateStore::open_read_only(&w.state_path())
            .ok()
            .flatten()
            .map_or(0, |s| s.recent_runs(1000).map_or(0, |r| r.len()))
    };
    let protocol_lists = || {
        w.fleet
            .sim(Protocol)
            .requests()
            .iter()
            .filter(|r| r.method == "GET")
            .count()
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(runs() >= 1);

    // A broken config: rejected, the daemon keeps running on the old one.
    std::fs::write(&path, "[providers.privy]\nbase_url = \"not a url\"\n").expect("write");
    control.send(Control::Reload).await.expect("send");
    let before = runs();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(runs() > before, "runs continue after a rejected reload");
    assert!(!handle.is_finished());

    // A good config without Protocol: after the reload Protocol is no longer listed.
    let without_protocol: String = good
        .split("[providers.")
        .filter(|s| !s.starts_with("protocol]"))
        .collect::<Vec<_>>()
        .join("[providers.");
    std::fs::write(&path, without_protocol).expect("write");
    control.send(Control::Reload).await.expect("send");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lists = protocol_lists();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        protocol_lists(),
        lists,
        "the reloaded config no longer syncs Protocol"
    );
    assert!(
        w.fleet
            .sim(Privy)
            .requests()
            .iter()
            .filter(|r| r.method == "GET")
            .count()
            > lists
    );

    control.send(Control::Shutdown).await.expect("send");
    handle.await.expect("join").expect("daemon ok");
}
