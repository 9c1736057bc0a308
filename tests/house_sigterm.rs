//! A one-shot `sync` stopped by SIGTERM (`systemctl stop` of the timer's unit) behaves as the
//! daemon does: it sends nothing new, lets the writes in flight finish within
//! `daemon.shutdown_grace`, persists what they did, and exits 1 (the run did not finish).

mod common;

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use axum::http::Method;
use common::*;
use contact_sync::sim::{Fault, FaultRule};

const PEOPLE: u64 = 6;
/// How long each simulator takes to answer a write.
const SLOW: Duration = Duration::from_millis(1500);

fn name(seq: u64, edited: bool) -> String {
    format!("Person{seq} {}", if edited { "Edited" } else { "Original" })
}

fn phone(seq: u64) -> String {
    format!("+1415555{:04}", 100 + seq)
}

/// `(provider, native id, state)` of every journaled write.
fn journal(path: &std::path::Path) -> Vec<(String, String, String)> {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare("SELECT provider, native, state FROM writes ORDER BY id")
    else {
        return Vec::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

fn wait(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_write_finishes_in_flight_writes_persists_them_and_sends_nothing_new() {
    let w = World::start().await;
    let all = [Protocol, Callbell, Chatwoot, Privy];
    for seq in 1..=PEOPLE {
        let email = format!("p{seq}@example.com");
        w.seed(seq, &person(&name(seq, false), &phone(seq), &email), &all);
    }
    // A first run agrees on the baselines; then every name changes in Chatwoot, so the run
    // under test has three writes per person (Protocol, Callbell, Privy) to send.
    let first = w.sync().await;
    assert_eq!(first.failure_count(), 0);
    for seq in 1..=PEOPLE {
        let email = format!("p{seq}@example.com");
        w.edit(
            Chatwoot,
            seq,
            &person(&name(seq, true), &phone(seq), &email),
        );
    }
    for kind in [Protocol, Callbell, Privy] {
        w.fleet
            .sim(kind)
            .inject(FaultRule::always(Fault::Delay(SLOW)).on(Method::PATCH));
    }
    w.clear_requests();

    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_toml(
        &w,
        dir.path(),
        "[daemon]\nlisten = \"\"\nshutdown_grace = \"20s\"",
        "max_concurrency = 1",
    );
    let state = w.state_path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_contact-sync"))
        .env_remove("CONTACT_SYNC_CONFIG")
        .args(["sync", "--config", &config])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");

    // SIGTERM as soon as a write is journaled as intended: it is on the wire (the journal
    // records a write just before sending it) and its answer takes SLOW.
    let t0 = Instant::now();
    let in_flight = loop {
        let j = journal(&state);
        let intended: Vec<_> = j
            .iter()
            .filter(|(_, _, s)| s == "intended")
            .cloned()
            .collect();
        if !intended.is_empty() {
            break intended;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no write started");
        assert!(
            child.try_wait().expect("poll").is_none(),
            "sync ended early"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(term.success());
    let signalled = Instant::now();

    let status = wait(&mut child, Duration::from_secs(20)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("sync did not exit within the grace after SIGTERM");
    });
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        status.code(),
        Some(1),
        "exits 1, not killed by the signal: {status:?} {text}"
    );
    assert!(text.contains("SIGTERM"), "says what stopped it: {text}");
    assert!(
        signalled.elapsed() < SLOW * 3,
        "stopped promptly: {:?}",
        signalled.elapsed()
    );

    // The journal: nothing left in doubt, every write the providers received is confirmed, the
    // writes in flight at SIGTERM among them, and most writes were never sent.
    let j = journal(&state);
    assert!(
        j.iter().all(|(_, _, s)| s == "confirmed"),
        "every journaled write finished and was confirmed: {j:?}"
    );
    for (p, n, _) in &in_flight {
        assert!(
            j.iter()
                .any(|(jp, jn, s)| jp == p && jn == n && s == "confirmed"),
            "the write in flight at SIGTERM ({p} {n}) finished and was persisted: {j:?}"
        );
    }
    let total = 3 * PEOPLE as usize;
    assert!(
        j.len() < total,
        "writes after SIGTERM were not sent: {} of {total}",
        j.len()
    );

    // The simulators hold exactly what the journal says was written, and nothing else.
    let mut received = 0;
    for kind in [Protocol, Callbell, Privy] {
        let sim = w.fleet.sim(kind);
        let writes = sim.writes();
        received += writes.len();
        assert!(
            writes.iter().all(|r| (200..300).contains(&r.status)),
            "{kind}: every write that was sent was answered: {writes:?}"
        );
        let edited = sim
            .contacts()
            .iter()
            .filter(|c| c.to_string().contains("Edited"))
            .count();
        let journaled = j.iter().filter(|(p, _, _)| p == kind.as_str()).count();
        assert_eq!(
            edited, journaled,
            "{kind}: records holding the new name = confirmed writes"
        );
    }
    assert_eq!(received, j.len(), "every request sent was journaled first");

    // The run is recorded as interrupted, finished, in a state file that opens cleanly.
    let store = contact_sync::state::StateStore::open(&state).expect("state opens");
    let run = store.recent_runs(1).expect("runs").remove(0);
    assert_eq!(run.outcome.as_deref(), Some("interrupted"), "{run:?}");
    assert!(run.finished_at.is_some(), "{run:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_writes_outlasting_the_grace_exits_1_at_the_grace_leaving_them_in_the_journal()
{
    let w = World::start().await;
    let all = [Protocol, Callbell, Chatwoot, Privy];
    for seq in 1..=2 {
        let email = format!("p{seq}@example.com");
        w.seed(seq, &person(&name(seq, false), &phone(seq), &email), &all);
    }
    w.sync().await;
    for seq in 1..=2 {
        let email = format!("p{seq}@example.com");
        w.edit(
            Chatwoot,
            seq,
            &person(&name(seq, true), &phone(seq), &email),
        );
    }
    // Writes take far longer than the grace.
    for kind in [Protocol, Callbell, Privy] {
        w.fleet
            .sim(kind)
            .inject(FaultRule::always(Fault::Delay(Duration::from_secs(30))).on(Method::PATCH));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_toml(
        &w,
        dir.path(),
        "[daemon]\nlisten = \"\"\nshutdown_grace = \"1s\"",
        "max_concurrency = 1\ntimeout = \"60s\"",
    );
    let state = w.state_path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_contact-sync"))
        .env_remove("CONTACT_SYNC_CONFIG")
        .args(["sync", "--config", &config])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let t0 = Instant::now();
    while !journal(&state).iter().any(|(_, _, s)| s == "intended") {
        assert!(t0.elapsed() < Duration::from_secs(20), "no write started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(term.success());
    let signalled = Instant::now();
    let status = wait(&mut child, Duration::from_secs(15)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("sync did not exit at the grace");
    });
    let took = signalled.elapsed();
    let out = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(status.code(), Some(1), "{status:?} {text}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "waited for the grace, then stopped: {took:?}"
    );
    assert!(
        text.contains("did not finish within daemon.shutdown_grace"),
        "{text}"
    );
    // What was on the wire stays journaled as intended, for the next run to settle.
    let j = journal(&state);
    assert!(j.iter().any(|(_, _, s)| s == "intended"), "{j:?}");
    assert!(j.iter().all(|(_, _, s)| s != "confirmed"), "{j:?}");
}
