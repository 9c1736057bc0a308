//! Issue 13, end to end: Privy's simulator with a small daily quota (40 requests; 30 contacts
//! at 10 a page, so a scan costs 3). Repeated one-shot `sync` processes defer Privy before its
//! listing instead of failing mid-run, the simulator's daily quota is never exceeded, the other
//! providers keep syncing against Privy's snapshot, and once the quota resets Privy's pending
//! writes are sent.

mod common;

use std::time::Duration;

use common::*;
use contact_sync::model::ProviderKind;
use contact_sync::sim::SimQuota;
use contact_sync::state::StateStore;

/// The simulator's quota day: short, so the test can wait for it to reset.
const DAY: Duration = Duration::from_secs(20);
const QUOTA: u32 = 40;

fn people() -> Vec<contact_sync::sim::SeedPerson> {
    (1..=30)
        .map(|i| {
            person(
                &format!("Person {i} Example"),
                &format!("+1415555{:04}", 100 + i),
                &format!("person{i}@example.com"),
            )
        })
        .collect()
}

/// The config file: the simulators, and Privy at `daily_limit = 40`, 10 a page.
fn write_config(w: &World, dir: &std::path::Path) -> String {
    let path = config_toml(w, dir, "", "");
    let text = std::fs::read_to_string(&path).expect("config");
    let text = text.replace(
        "[providers.privy]\n",
        &format!("[providers.privy]\ndaily_limit = {QUOTA}\npage_size = 10\n"),
    );
    std::fs::write(&path, text).expect("config");
    path
}

/// One `contact-sync sync` process: its exit code and output.
async fn sync(config: &str) -> (Option<i32>, String) {
    let config = config.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        run_bin(&["sync", "--config", &config, "--log-format", "json"])
    })
    .await
    .expect("join");
    (out.status.code(), output_text(&out))
}

fn privy_requests(w: &World) -> Vec<contact_sync::sim::Recorded> {
    w.fleet.sim(Privy).requests()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_daily_quota_defers_privy_before_listing_and_its_writes_wait_for_the_reset() {
    let w = World::start().await;
    w.fleet.sim(Privy).set_quotas(vec![SimQuota {
        name: "Day",
        limit: QUOTA,
        period: DAY,
    }]);
    let day_started = std::time::Instant::now();
    let everyone = people();
    for (i, p) in everyone.iter().enumerate() {
        w.seed(i as u64 + 1, p, &[Protocol, Callbell, Chatwoot, Privy]);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(&w, dir.path());

    // Repeated syncs: each lists Privy whole (3 pages) until a scan no longer fits what is left
    // of the 40; then Privy is deferred before its listing and the run exits 1 saying when.
    let mut deferred_output = None;
    for run in 1..=20 {
        let before = privy_requests(&w).len();
        let (code, out) = sync(&config).await;
        let sent = privy_requests(&w).len() - before;
        if out.contains("privy (quota): deferred before listing") {
            assert_eq!(code, Some(1), "a deferred provider exits 1: {out}");
            assert_eq!(sent, 0, "run {run}: nothing sent to a deferred Privy");
            deferred_output = Some(out);
            break;
        }
        assert_eq!(code, Some(0), "run {run} synced Privy whole: {out}");
        assert!(
            sent >= 3,
            "run {run} listed Privy's three pages ({sent} requests)"
        );
    }
    let out = deferred_output.expect("Privy was deferred before its quota ran out");
    assert!(
        day_started.elapsed() < DAY,
        "the syncs ran within one quota day (the test is too slow for its premise)"
    );
    assert!(
        out.contains("it can be listed again after"),
        "the message says when: {out}"
    );
    let requests = privy_requests(&w);
    assert!(
        requests.len() <= QUOTA as usize,
        "the simulator's daily quota is never exceeded: {} requests",
        requests.len()
    );
    assert!(
        requests.iter().all(|r| r.status != 429),
        "no request was refused for quota"
    );
    assert!(
        QUOTA as usize - requests.len() < 3,
        "Privy was deferred only when a scan no longer fit ({} of {QUOTA} used)",
        requests.len()
    );

    // `status` shows it: requests today, deferred for quota, next scan at the reset.
    let config_s = config.clone();
    let status = tokio::task::spawn_blocking(move || {
        run_bin(&["status", "--config", &config_s, "--format", "json"])
    })
    .await
    .expect("join");
    assert_eq!(status.status.code(), Some(0), "{}", output_text(&status));
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let privy = doc["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .find(|p| p["provider"] == "privy")
        .expect("privy listed")
        .clone();
    assert_eq!(privy["deferred"], "quota_spent", "{privy}");
    assert_eq!(privy["contacts"], 30, "{privy}");
    assert_eq!(privy["daily_budget"], QUOTA, "{privy}");
    assert_eq!(
        privy["requests_today"].as_u64(),
        Some(requests.len() as u64),
        "our count matches what the simulator saw: {privy}"
    );
    assert!(
        privy["projected_today"].as_u64() <= Some(u64::from(QUOTA)),
        "{privy}"
    );

    // While Privy is deferred, an edit in Chatwoot still reaches Protocol and Callbell, matched
    // against Privy's snapshot; Privy gets nothing, and its write waits.
    let edited = person("Ada Renamed", "+14155550101", "person1@example.com");
    w.edit(Chatwoot, 1, &edited);
    let before = privy_requests(&w).len();
    let (code, out) = sync(&config).await;
    assert_eq!(code, Some(1), "Privy still deferred: {out}");
    assert_eq!(privy_requests(&w).len(), before, "nothing sent to Privy");
    assert!(
        out.contains("writes wait for its next scan"),
        "the report says Privy's writes wait: {out}"
    );
    let renamed = |kind: ProviderKind| {
        w.fleet
            .sim(kind)
            .contacts()
            .iter()
            // Privy stores the name in parts: its `last_name` is "Renamed".
            .filter(|c| c.to_string().contains("Renamed"))
            .count()
    };
    assert_eq!(renamed(Protocol), 1, "Protocol took the edit");
    assert_eq!(renamed(Callbell), 1, "Callbell took the edit");
    assert_eq!(renamed(Privy), 0, "Privy's write waits");
    // The snapshot's records counted as unchanged: nothing else was written anywhere, and no
    // Privy value was spread (the others hold exactly one renamed record and 29 as seeded).
    let store = StateStore::open_read_only(&w.state_path())
        .expect("state")
        .expect("exists");
    let runs = store.recent_runs(1).expect("runs");
    assert_eq!(
        runs[0].applied, 2,
        "one write each to Protocol and Callbell: {runs:?}"
    );

    // The quota resets: the next sync lists Privy and sends its pending write.
    let wait = DAY.saturating_sub(day_started.elapsed()) + Duration::from_millis(1500);
    tokio::time::sleep(wait).await;
    let before_writes = w.fleet.sim(Privy).writes().len();
    let (code, out) = sync(&config).await;
    assert_eq!(code, Some(0), "after the reset Privy syncs: {out}");
    let privy_writes = &w.fleet.sim(Privy).writes()[before_writes..];
    assert_eq!(privy_writes.len(), 1, "Privy's one pending write was sent");
    let body = privy_writes[0].body.clone().unwrap_or_default().to_string();
    assert!(body.contains("Renamed"), "{body}");
    assert_eq!(renamed(Privy), 1, "Privy now holds the edit");
    assert!(
        w.fleet
            .sim(Privy)
            .requests()
            .iter()
            .all(|r| r.status != 429),
        "still no request refused for quota"
    );
    // Converged: the next run plans nothing.
    let (code, out) = sync(&config).await;
    assert_eq!(code, Some(0), "{out}");
    let runs = store.recent_runs(1).expect("runs");
    assert_eq!(runs[0].planned, 0, "converged: {runs:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_deferred_before_its_first_listing_is_left_out() {
    // A provider deferred before it was ever listed has no snapshot: it is left out, and the
    // run says so.
    let w = World::start().await;
    w.seed(
        1,
        &person("Ada Lovelace", "+14155550101", "ada@example.com"),
        &[Protocol, Privy],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(&w, dir.path());
    // Spend the day in the state as another process would have: all 40 gone.
    {
        let store = StateStore::open(&w.state_path()).expect("state");
        let mut m = contact_sync::cadence::CostModel::default();
        m.spend(chrono::Utc::now(), 40, None, None);
        store
            .save_cost_model(ProviderKind::Privy, &m)
            .expect("save");
    }
    let (code, out) = sync(&config).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no snapshot of it is stored yet"), "{out}");
    assert!(privy_requests(&w).is_empty(), "Privy was not listed");
    assert!(
        !w.fleet.sim(Protocol).requests().is_empty(),
        "the others still ran"
    );
}
