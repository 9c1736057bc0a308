//! Crash safety: `sync` killed with SIGKILL at several points during apply, then restarted,
//! converges with no lost update, no conflicting duplicate write, a state file that opens
//! cleanly, and the interrupted writes re-checked against the provider.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::Method;
use common::*;
use contact_sync::model::ProviderKind;
use contact_sync::sim::{Fault, FaultRule};
use contact_sync::state::StateStore;

const ALL: [ProviderKind; 4] = [Protocol, Callbell, Chatwoot, Privy];

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_apply_converges_after_restart() {
    for kill_after in [1usize, 7, 20] {
        let w = World::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let n = 12;
        for i in 0..n {
            w.seed(
                i as u64 + 1,
                &person(
                    &format!("Person {i}"),
                    &format!("+1415555{:04}", 4000 + i),
                    &format!("c{i}@example.com"),
                ),
                &ALL,
            );
        }
        let config = config_toml(
            &w,
            dir.path(),
            "",
            "max_concurrency = 1\nrate_limit = { requests = 1000, per = \"1s\" }",
        );
        let status = Command::new(env!("CARGO_BIN_EXE_contact-sync"))
            .args(["sync", "--config", &config])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("first sync");
        assert_eq!(status.code(), Some(0));
        for i in 0..n {
            w.edit(
                Chatwoot,
                i as u64 + 1,
                &person(
                    &format!("Renamed {i}"),
                    &format!("+1415555{:04}", 4000 + i),
                    &format!("c{i}@example.com"),
                ),
            );
        }
        w.clear_requests();
        for sim in &w.fleet.sims {
            sim.inject(
                FaultRule::always(Fault::Delay(Duration::from_millis(60))).on(Method::PATCH),
            );
        }

        let mut child = Command::new(env!("CARGO_BIN_EXE_contact-sync"))
            .args(["sync", "--config", &config])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sync starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while w.writes() < kill_after {
            assert!(
                Instant::now() < deadline,
                "writes never reached {kill_after}"
            );
            assert!(
                child.try_wait().expect("wait").is_none(),
                "sync ended before it was killed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let writes_before = w.writes();
        assert!(
            writes_before < 3 * n,
            "killed mid-apply ({writes_before} of {})",
            3 * n
        );

        {
            let store = StateStore::open(&w.state_path()).expect("state opens after SIGKILL");
            assert_eq!(store.integrity_check().expect("check"), "ok");
        }
        for sim in &w.fleet.sims {
            sim.clear_faults();
        }
        let report = w.sync().await;
        assert_eq!(report.failure_count(), 0, "{}", report.to_text(false));
        let (verified, not_applied) = report.pending_checked;
        assert!(
            verified + not_applied >= 1,
            "the interrupted writes were re-checked (killed after {kill_after})"
        );

        // No lost update: every record holds the new name.
        for c in w.fleet.sim(Privy).contacts() {
            assert_eq!(c["first_name"], "Renamed", "{c}");
        }
        for c in w.fleet.sim(Protocol).contacts() {
            assert!(
                c["display_name"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Renamed")),
                "{c}"
            );
        }
        for c in w.fleet.sim(Callbell).contacts() {
            assert!(
                c["name"].as_str().is_some_and(|s| s.starts_with("Renamed")),
                "{c}"
            );
        }
        // No conflicting duplicates: a record written twice was written the same both times.
        for sim in &w.fleet.sims {
            let mut bodies: HashMap<String, String> = HashMap::new();
            for r in sim.writes() {
                let body = r.body.map(|b| b.to_string()).unwrap_or_default();
                if let Some(prev) = bodies.insert(r.path.clone(), body.clone()) {
                    assert_eq!(
                        prev, body,
                        "{} {} written twice with different values",
                        sim.kind, r.path
                    );
                }
            }
        }
        w.clear_requests();
        let again = w.sync().await;
        assert!(again.plan.updates.is_empty(), "converged");
        assert_eq!(w.writes(), 0);
        let store = StateStore::open(&w.state_path()).expect("state");
        assert_eq!(store.integrity_check().expect("check"), "ok");
        assert_eq!(
            store.pending_writes().expect("pending").len(),
            0,
            "no write left unsettled"
        );
    }
}
