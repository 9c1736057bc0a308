//! Import crash safety with the real binary (SPEC section 11, issue 10): `contact-sync sync` is
//! killed with SIGKILL right after its creates reached Privy and Callbell (each simulator applied
//! the create, then held the answer back), restarted, and synced again. Each provider ends with
//! exactly one contact for the person, linked to that person in the state, and the creates are
//! settled by looking their key up, never by sending them again.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::Method;
use common::*;
use contact_sync::model::{ProviderKind, RecordId};
use contact_sync::sim::{Fault, FaultRule};
use contact_sync::state::StateStore;
use serde_json::Value;

/// Adds `line` to the `[providers.<kind>]` section of the config text at `path`.
fn add_to_section(path: &str, kind: ProviderKind, line: &str) {
    let text = std::fs::read_to_string(path).expect("config file");
    let header = format!("[providers.{kind}]\n");
    assert!(text.contains(&header), "no {header} in {text}");
    let edited = text.replacen(&header, &format!("{header}{line}\n"), 1);
    std::fs::write(path, edited).expect("config file written");
}

/// The contacts of `kind` whose email or phone carries Ada's key.
fn adas(w: &World, kind: ProviderKind) -> Vec<Value> {
    w.fleet
        .sim(kind)
        .contacts()
        .into_iter()
        .filter(|c| {
            let email = c["email"]
                .as_str()
                .is_some_and(|e| e.eq_ignore_ascii_case("ada@example.com"));
            let phone = ["phone_number", "phoneNumber", "phone"].iter().any(|k| {
                c[*k]
                    .as_str()
                    .is_some_and(|p| p.trim_start_matches('+') == "14155550101")
            });
            email || phone
        })
        .collect()
}

fn posts(w: &World, kind: ProviderKind) -> usize {
    w.fleet
        .sim(kind)
        .requests()
        .iter()
        .filter(|r| r.method == Method::POST)
        .count()
}

fn run_sync(config: &str) -> Option<i32> {
    Command::new(env!("CARGO_BIN_EXE_contact-sync"))
        .env_remove("CONTACT_SYNC_CONFIG")
        .args(["sync", "--config", config])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("sync runs")
        .code()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_right_after_a_create_was_applied_leaves_one_linked_contact() {
    let w = World::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let chatwoot_id = w.seed(
        1,
        &person("Ada Lovelace", "+14155550101", "ada@example.com"),
        &[Chatwoot],
    )[0]
    .clone();
    let config = config_toml(&w, dir.path(), "", "");
    let creating = [Privy, Callbell];
    for k in creating {
        add_to_section(&config, k, "create = true");
        // Applied, then the answer held back far longer than the test lasts.
        w.fleet.sim(k).inject(
            FaultRule::always(Fault::ApplyThenStall(Duration::from_secs(600))).on(Method::POST),
        );
    }

    let mut child = Command::new(env!("CARGO_BIN_EXE_contact-sync"))
        .env_remove("CONTACT_SYNC_CONFIG")
        .args(["sync", "--config", &config])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sync starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while creating.iter().any(|k| posts(&w, *k) == 0) {
        assert!(Instant::now() < deadline, "the creates were never sent");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "sync ended before it was killed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    for k in creating {
        assert_eq!(
            adas(&w, k).len(),
            1,
            "{k}: the simulator applied the create"
        );
    }
    {
        let store = StateStore::open_read_only(&w.state_path())
            .expect("state opens after SIGKILL")
            .expect("state exists");
        let counts = store.create_counts().expect("counts");
        assert_eq!(
            counts.get("intended"),
            Some(&2),
            "both creates journaled as intended before they were sent: {counts:?}"
        );
    }

    // Restart without the fault.
    for sim in &w.fleet.sims {
        sim.clear_faults();
        sim.clear_requests();
    }
    assert_eq!(run_sync(&config), Some(0), "the restarted sync succeeds");
    for k in creating {
        assert_eq!(posts(&w, k), 0, "{k}: the create was never sent again");
        assert_eq!(adas(&w, k).len(), 1, "{k}: exactly one contact for Ada");
    }
    assert!(
        w.fleet.sim(Protocol).contacts().is_empty(),
        "create is off for Protocol"
    );

    let store = StateStore::open_read_only(&w.state_path())
        .expect("state")
        .expect("exists");
    let counts = store.create_counts().expect("counts");
    assert_eq!(
        counts.get("intended"),
        None,
        "nothing left pending: {counts:?}"
    );
    assert_eq!(
        counts.get("linked"),
        Some(&2),
        "both settled by looking the key up: {counts:?}"
    );
    let memory = store.load_memory().expect("memory");
    let ada = memory
        .links
        .get(&RecordId::new(Chatwoot, chatwoot_id.clone()))
        .expect("the Chatwoot record is linked")
        .clone();
    for k in creating {
        let stored = &adas(&w, k)[0];
        let id = if k == Callbell { "uuid" } else { "id" };
        let native = match &stored[id] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(
            memory.links.get(&RecordId::new(k, native.clone())),
            Some(&ada),
            "{k} record {native} is linked to Ada's person"
        );
        assert!(
            memory
                .baselines
                .contains_key(&RecordId::new(k, native.clone())),
            "{k} record {native} has a baseline"
        );
    }
    drop(store);

    // Converged: the next sync sends only listings.
    for sim in &w.fleet.sims {
        sim.clear_requests();
    }
    assert_eq!(run_sync(&config), Some(0));
    assert_eq!(w.writes(), 0, "a converged system sends no write or create");
    for k in creating {
        assert_eq!(adas(&w, k).len(), 1);
    }
}
