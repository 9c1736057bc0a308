//! Chatwoot end to end: the sync engine (or the `contact-sync` binary) against the simulators,
//! asserting what the simulators hold afterwards and what they were sent.
//!
//! Covers SPEC section 13's acceptance list: a value taken between listing and write (both
//! update APIs), labels as tags in both directions, a listing that stays short after its
//! re-scans, and a wrong HMAC token in public mode.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use contact_sync::config::{ChatwootUpdateApi, ProviderSpecific};
use contact_sync::sim::{Fault, FaultRule, SimOptions, Store};
use serde_json::{json, Value};

/// Changes the Chatwoot section of the world's engine config.
fn chatwoot_config(w: &mut World, f: impl FnOnce(&mut ChatwootUpdateApi, &mut String)) {
    let p = w
        .config
        .providers
        .iter_mut()
        .find(|p| p.kind == Chatwoot)
        .expect("chatwoot configured");
    if let ProviderSpecific::Chatwoot {
        update_api, sort, ..
    } = &mut p.specific
    {
        f(update_api, sort);
    }
}

/// Ada and Bob in Chatwoot and Privy, linked by a first sync that writes nothing. Returns
/// `[chatwoot id, privy id]` per person.
async fn ada_and_bob(w: &World) -> [Vec<String>; 2] {
    let ada = person("Ada Lovelace", "+14155550101", "ada@old.example");
    let bob = person("Bob Marley", "+14155550102", "bob@example.com");
    let ids = [
        w.seed(1, &ada, &[Chatwoot, Privy]),
        w.seed(2, &bob, &[Chatwoot, Privy]),
    ];
    let first = w.sync().await;
    assert_eq!(first.failure_count(), 0, "{}", first.to_text(false));
    assert_eq!(w.writes(), 0, "agreeing providers need no write");
    // Today Ada's e-mail changes in Privy, so Chatwoot is planned to take it.
    let mut ada = ada;
    ada.email = Some("ada@new.example".into());
    w.edit(Privy, 1, &ada);
    w.clear_requests();
    ids
}

/// A store hook: Chatwoot contact `id` takes Ada's new e-mail (another user's edit).
fn bob_takes_adas_email(id: String) -> Fault {
    Fault::Mutate(Arc::new(move |store: &mut Store| {
        if let Some(c) = store.get_mut(&id) {
            c["email"] = json!("ada@new.example");
        }
    }))
}

fn chatwoot_emails(w: &World) -> BTreeSet<(String, String)> {
    w.fleet
        .sim(Chatwoot)
        .contacts()
        .iter()
        .map(|c| {
            (
                c["id"].to_string(),
                s(c, "email").unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn application_mode_an_email_taken_after_the_listing_fails_422_and_deletes_nothing() {
    let w = World::start().await;
    let [ada, bob] = ada_and_bob(&w).await;
    let cw = w.fleet.sim(Chatwoot);
    // Bob takes the e-mail after the listing, right before Ada's update arrives.
    cw.inject(
        FaultRule::always(bob_takes_adas_email(bob[0].clone()))
            .on(reqwest::Method::PATCH)
            .path("/api/v1/accounts/7/contacts/")
            .times(1),
    );
    let report = w.sync().await;

    // One PATCH with the e-mail, answered 422, not retried; nothing else written.
    let writes = cw.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(
        writes[0].path,
        format!("/api/v1/accounts/7/contacts/{}", ada[0])
    );
    assert_eq!(writes[0].status, 422);
    assert_eq!(
        writes[0].body.as_ref().and_then(|b| b.get("email")),
        Some(&json!("ada@new.example"))
    );
    // A record-level failure, reported; the run went on.
    assert_eq!(report.failure_count(), 1, "{}", report.to_text(false));
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let failures = json(&report)["failures"].clone();
    assert_eq!(failures[0]["provider"], "chatwoot", "{failures}");
    assert_eq!(failures[0]["record"], Value::String(ada[0].clone()));
    let error = failures[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("422") && error.contains("already been taken"),
        "{error}"
    );
    // No contact was merged or deleted: both are there with their own e-mails.
    assert_eq!(
        chatwoot_emails(&w),
        [
            (ada[0].clone(), "ada@old.example".to_owned()),
            (bob[0].clone(), "ada@new.example".to_owned()),
        ]
        .into()
    );
}

#[tokio::test]
async fn public_mode_the_recheck_skips_an_email_taken_after_the_listing() {
    let mut w = World::start().await;
    chatwoot_config(&mut w, |api, _| *api = ChatwootUpdateApi::Public);
    let [ada, bob] = ada_and_bob(&w).await;
    let cw = w.fleet.sim(Chatwoot);
    // Bob takes the e-mail after the listing, right before the re-check searches for it.
    cw.inject(
        FaultRule::always(bob_takes_adas_email(bob[0].clone()))
            .on(reqwest::Method::GET)
            .path("/contacts/search")
            .times(1),
    );
    let report = w.sync().await;

    // The re-check searched for the e-mail and found Bob: nothing was sent to the public API,
    // which would have merged Ada into Bob and deleted her.
    let searches: Vec<_> = cw
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/contacts/search"))
        .collect();
    assert_eq!(searches.len(), 1);
    assert_eq!(searches[0].query.as_deref(), Some("q=ada%40new.example"));
    assert!(cw.writes().is_empty(), "{:?}", cw.writes());
    assert_eq!(
        chatwoot_emails(&w),
        [
            (ada[0].clone(), "ada@old.example".to_owned()),
            (bob[0].clone(), "ada@new.example".to_owned()),
        ]
        .into()
    );
    let failures = json(&report)["failures"].clone();
    assert_eq!(report.failure_count(), 1, "{}", report.to_text(false));
    let error = failures[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("would-merge-contacts") && error.contains(&format!("contact {}", bob[0])),
        "{error}"
    );
}

fn labels(w: &World, id: &str) -> BTreeSet<String> {
    w.contact(Chatwoot, id)["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect()
}

fn privy_tags(w: &World, id: &str) -> BTreeSet<String> {
    w.contact(Privy, id)["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn labels_round_trip_between_privy_tags_and_chatwoot_labels() {
    let w = World::start().await;
    let mut ada = person("Ada Lovelace", "+14155550101", "ada@example.com");
    ada.tags = vec!["lead".into()];
    let ids = w.seed(1, &ada, &[Chatwoot, Privy]);
    let (cw, privy) = (&ids[0], &ids[1]);
    let first = w.sync().await;
    assert_eq!(first.failure_count(), 0, "{}", first.to_text(false));
    assert_eq!(w.writes(), 0, "Chatwoot's label reads back as Privy's tag");

    // A tag added in Privy reaches Chatwoot as a label, through the labels endpoint.
    ada.tags = vec!["lead".into(), "vip".into()];
    w.edit(Privy, 1, &ada);
    w.clear_requests();
    let r = w.sync().await;
    assert_eq!(r.failure_count(), 0, "{}", r.to_text(false));
    assert_eq!(labels(&w, cw), set(&["lead", "vip"]));
    let writes = w.fleet.sim(Chatwoot).writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(
        writes[0].path,
        format!("/api/v1/accounts/7/contacts/{cw}/labels")
    );
    assert_eq!(writes[0].body, Some(json!({"labels": ["lead", "vip"]})));
    assert_eq!(w.writes(), 1, "nothing else to write");

    // A label removed in Chatwoot leaves Privy's full tag list (Privy replaces the whole list).
    assert!(w
        .fleet
        .sim(Chatwoot)
        .modify(cw, |c| c["labels"] = json!(["vip"])));
    w.clear_requests();
    let r = w.sync().await;
    assert_eq!(r.failure_count(), 0, "{}", r.to_text(false));
    assert_eq!(privy_tags(&w, privy), set(&["vip"]));
    let writes = w.fleet.sim(Privy).writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(
        writes[0].body.as_ref().and_then(|b| b.get("tags")),
        Some(&json!(["vip"]))
    );
    assert_eq!(w.writes(), 1);

    // Converged: the next sync writes nothing.
    w.clear_requests();
    let r = w.sync().await;
    assert!(r.plan.updates.is_empty(), "{}", r.to_text(false));
    assert_eq!(w.writes(), 0);
    assert_eq!(labels(&w, cw), set(&["vip"]));
}

#[tokio::test]
async fn a_listing_still_short_after_its_rescans_is_reported_and_nothing_is_planned_for_it() {
    let mut w = World::start().await;
    chatwoot_config(&mut w, |_, sort| *sort = "name".into());
    let mut ids = Vec::new();
    for i in 1..=16u64 {
        let p = person(
            &format!("Person {i:02}"),
            &format!("+1415555{i:04}"),
            &format!("p{i}@example.com"),
        );
        ids.push(w.seed(i, &p, &[Chatwoot, Privy]));
    }
    let first = w.sync().await;
    assert_eq!(first.failure_count(), 0, "{}", first.to_text(false));
    // Privy renames person 2: Chatwoot would be planned to take the name.
    w.edit(
        Privy,
        2,
        &person("Person 02 Renamed", "+14155550002", "p2@example.com"),
    );
    // An adversarial concurrent editor: person 16 (alone on page 2 under `sort=name`) is
    // renamed to sort first right before every page 2 and back before every page 1, so no
    // scan ever sees it.
    let x = ids[15][0].clone();
    let calls = Arc::new(AtomicU64::new(0));
    let (hook_x, hook_calls) = (x.clone(), calls.clone());
    w.fleet.sim(Chatwoot).inject(
        FaultRule::always(Fault::Mutate(Arc::new(move |store: &mut Store| {
            let n = hook_calls.fetch_add(1, Ordering::Relaxed);
            if let Some(c) = store.get_mut(&hook_x) {
                c["name"] = json!(if n % 2 == 0 { "Person 16" } else { "Aaa" });
            }
        })))
        .on(reqwest::Method::GET)
        .path("/api/v1/accounts/7/contacts"),
    );
    w.clear_requests();
    let report = w.sync().await;
    assert_eq!(calls.load(Ordering::Relaxed), 6, "three scans of two pages");
    let problem = report
        .problems
        .iter()
        .find(|p| p.provider == "chatwoot")
        .expect("chatwoot reported");
    assert_eq!(problem.stage, "list");
    assert!(
        problem.error.contains("listing is incomplete") && problem.error.contains("3 scans"),
        "{}",
        problem.error
    );
    assert!(
        report.plan.updates.iter().all(|u| u.provider() != Chatwoot),
        "{}",
        report.to_text(false)
    );
    assert!(w.fleet.sim(Chatwoot).writes().is_empty());

    // Once the scans stop shifting, the same sync plans and sends the write.
    w.fleet.sim(Chatwoot).clear_faults();
    assert!(w
        .fleet
        .sim(Chatwoot)
        .modify(&x, |c| c["name"] = json!("Person 16")));
    let report = w.sync().await;
    assert_eq!(report.failure_count(), 0, "{}", report.to_text(false));
    assert_eq!(
        s(&w.contact(Chatwoot, &ids[1][0]), "name"),
        Some("Person 02 Renamed")
    );
}

#[tokio::test]
async fn public_mode_with_a_wrong_hmac_token_sends_one_request_per_record_and_exits_1() {
    let w = World::start_with(|k| {
        let mut o = SimOptions::for_provider(k).unlimited();
        o.chatwoot.hmac_token = Some("the-inbox-hmac-token".into());
        o
    })
    .await;
    let mut ids = Vec::new();
    for i in 1..=3u64 {
        let p = person(
            &format!("Person {i}"),
            &format!("+1415555{i:04}"),
            &format!("p{i}@example.com"),
        );
        ids.push(w.seed(i, &p, &[Chatwoot, Privy]));
    }
    let first = w.sync().await;
    assert_eq!(first.failure_count(), 0, "{}", first.to_text(false));
    for i in 1..=3u64 {
        let p = person(
            &format!("Person {i} Renamed"),
            &format!("+1415555{i:04}"),
            &format!("p{i}@example.com"),
        );
        w.edit(Privy, i, &p);
    }
    w.clear_requests();

    // Public mode with the wrong HMAC token, and retries on, so sending once is a decision.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config_toml(&w, dir.path(), "", "max_retries = 3");
    let hmac_file = dir.path().join("hmac");
    std::fs::write(&hmac_file, "a-wrong-hmac-token").expect("hmac file");
    let text = std::fs::read_to_string(&path).expect("config");
    // Labels are the application API's; public mode rejects `known_labels`.
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("known_labels"))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = text.replace(
        "[providers.chatwoot]\n",
        &format!(
            "[providers.chatwoot]\nupdate_api = \"public\"\nhmac_token_file = \"{}\"\n",
            hmac_file.display()
        ),
    );
    std::fs::write(&path, text).expect("config");
    let o = tokio::task::spawn_blocking(move || run_bin(&["sync", "--config", &path]))
        .await
        .expect("joined");
    let out = output_text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("hmac_token"), "{out}");
    assert!(out.contains("configuration error"), "{out}");
    assert!(
        !out.contains("a-wrong-hmac-token"),
        "the token never printed"
    );
    assert!(
        !out.contains("sim-inbox-identifier"),
        "nor the inbox identifier"
    );

    // One PATCH per record to the public API, each answered 500, none retried.
    let cw = w.fleet.sim(Chatwoot);
    let patches: Vec<_> = cw
        .writes()
        .into_iter()
        .filter(|r| r.path.starts_with("/public/api/v1/inboxes/"))
        .collect();
    assert_eq!(patches.len(), 3, "{patches:?}");
    assert!(patches.iter().all(|r| r.status == 500));
    let targets: BTreeSet<&str> = patches.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(targets.len(), 3, "one request for each record");
    assert_eq!(cw.writes().len(), 3, "nothing else written");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            s(&w.contact(Chatwoot, &id[0]), "name"),
            Some(format!("Person {}", i + 1).as_str()),
            "nothing stored"
        );
    }
}

#[tokio::test]
async fn a_tag_that_is_not_a_known_label_is_skipped_and_never_planned_again() {
    let w = World::start().await;
    // "wholesale" is configured as known but the account deleted it: it is still read back.
    w.fleet
        .sim(Chatwoot)
        .configure(|o| o.chatwoot.labels.retain(|l| l != "wholesale"));
    let mut ada = person("Ada Lovelace", "+14155550101", "ada@example.com");
    let ids = w.seed(1, &ada, &[Chatwoot, Privy]);
    let first = w.sync().await;
    assert_eq!(first.failure_count(), 0, "{}", first.to_text(false));

    ada.tags = vec!["newsletter".into(), "wholesale".into()];
    w.edit(Privy, 1, &ada);
    w.clear_requests();
    let r = w.sync().await;
    assert_eq!(r.failure_count(), 0, "{}", r.to_text(false));
    let report = json(&r);
    let skipped: Vec<&Value> = report["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .filter(|s| s["provider"] == "chatwoot")
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0]["field"], "tags");
    assert_eq!(skipped[0]["rule"], "unknown-tag");
    assert!(
        skipped[0]["detail"].to_string().contains("newsletter"),
        "{skipped:?}"
    );
    assert_eq!(labels(&w, &ids[0]), set(&["wholesale"]));
    let writes = w.fleet.sim(Chatwoot).writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].body, Some(json!({"labels": ["wholesale"]})));

    // Neither label is planned again: "wholesale" reads back, "newsletter" stays skipped.
    w.clear_requests();
    let r = w.sync().await;
    assert!(r.plan.updates.is_empty(), "{}", r.to_text(false));
    assert_eq!(w.writes(), 0);
}

async fn check_online(path: &str) -> (Option<i32>, String) {
    let path = path.to_owned();
    let o = tokio::task::spawn_blocking(move || {
        run_bin(&["check-config", "--online", "--config", &path])
    })
    .await
    .expect("joined");
    (o.status.code(), output_text(&o))
}

#[tokio::test]
async fn check_config_online_reports_every_provider_and_chatwoot_notes() {
    let w = World::start().await;
    w.seed(
        1,
        &person("Ada Lovelace", "+14155550101", "ada@example.com"),
        &[Protocol, Callbell, Chatwoot, Privy],
    );
    // A contact that has no session in the configured inbox.
    w.fleet.sim(Chatwoot).seed_json([json!({
        "id": 50, "name": "No Session", "email": "nosession@example.com",
        "phone_number": null, "identifier": null, "contact_inboxes": [],
    })]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config_toml(&w, dir.path(), "", "");
    let (code, out) = check_online(&path).await;
    assert_eq!(code, Some(0), "{out}");
    for provider in ["protocol", "callbell", "chatwoot", "privy"] {
        assert!(out.contains(&format!("  {provider}: OK")), "{out}");
    }
    assert!(out.contains("account 7, inbox 3, 2 contacts"), "{out}");
    assert!(
        out.contains("1 contacts have no source id for inbox 3"),
        "{out}"
    );
    assert!(
        out.contains("labels that may be added: lead, vip, wholesale"),
        "{out}"
    );
    // The inbox was read: `inbox_id` is proven to exist.
    assert!(w
        .fleet
        .sim(Chatwoot)
        .requests()
        .iter()
        .any(|r| r.path == "/api/v1/accounts/7/inboxes/3" && r.status == 200));
    assert!(w.writes() == 0, "an online check writes nothing");

    // Same config; the account deleted a known label and Privy's token was revoked: exit 1,
    // with each failure named.
    w.fleet
        .sim(Chatwoot)
        .configure(|o| o.chatwoot.labels.retain(|l| l != "vip"));
    w.fleet
        .sim(Privy)
        .configure(|o| o.token = "another-token".into());
    let (code, out) = check_online(&path).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("chatwoot: FAILED"), "{out}");
    assert!(out.contains("known_labels [\"vip\"]"), "{out}");
    assert!(out.contains("privy: FAILED"), "{out}");
    assert!(out.contains("2 of 4 providers failed"), "{out}");
    assert!(!out.contains("sim-privy-token"), "no token printed");
}

#[tokio::test]
async fn check_config_online_names_a_wrong_inbox_id() {
    let w = World::start_with(|k| {
        let mut o = SimOptions::for_provider(k).unlimited();
        o.chatwoot.inbox_id = 4;
        o
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config_toml(&w, dir.path(), "", "");
    let text = std::fs::read_to_string(&path)
        .expect("config")
        .replace("inbox_id = 4", "inbox_id = 3");
    std::fs::write(&path, text).expect("config");
    let o = tokio::task::spawn_blocking(move || {
        run_bin(&["check-config", "--online", "--config", &path])
    })
    .await
    .expect("joined");
    let out = output_text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("inbox 3 does not exist in account 7; check inbox_id"),
        "{out}"
    );
}

#[tokio::test]
async fn the_daemon_runs_the_health_checks_once_before_its_first_run() {
    let w = World::start().await;
    let mut config = w.config.clone();
    // No run is due for a year: whatever reaches the simulators is the start-up check.
    config.schedule = contact_sync::config::Schedule::new("0 0 0 1 1 *", chrono_tz::UTC)
        .expect("a valid schedule");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let daemon = tokio::spawn(contact_sync::daemon::run(
        config,
        contact_sync::daemon::DaemonOptions {
            config_path: None,
            run_now: false,
        },
        tx.clone(),
        rx,
    ));
    let cw = w.fleet.sim(Chatwoot);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cw.requests().iter().any(|r| r.path.ends_with("/labels"))
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tx.send(contact_sync::daemon::Control::Shutdown)
        .await
        .expect("daemon listening");
    daemon.await.expect("joined").expect("daemon ran");
    let paths: Vec<String> = cw.requests().into_iter().map(|r| r.path).collect();
    assert!(
        paths.contains(&"/api/v1/accounts/7/inboxes/3".to_owned()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/api/v1/accounts/7/labels".to_owned()),
        "{paths:?}"
    );
    for kind in [Protocol, Callbell, Privy] {
        assert!(
            !w.fleet.sim(kind).requests().is_empty(),
            "{kind} was checked"
        );
    }
    assert_eq!(w.writes(), 0);
}
