//! Reliability over HTTP: a provider that starts answering 429 mid-sync, and a provider that is
//! down (connection refused) and comes back.

mod common;

use std::time::Duration;

use axum::http::Method;
use common::*;
use contact_sync::sim::{Fault, FaultRule, Sim};

const ALL: [contact_sync::model::ProviderKind; 4] = [Protocol, Callbell, Chatwoot, Privy];

fn people(n: usize) -> Vec<contact_sync::sim::SeedPerson> {
    (0..n)
        .map(|i| {
            person(
                &format!("Person {i}"),
                &format!("+1415555{:04}", 2000 + i),
                &format!("p{i}@example.com"),
            )
        })
        .collect()
}

#[tokio::test]
async fn retry_after_is_honoured_mid_sync() {
    let mut w = World::start().await;
    for p in &mut w.config.providers {
        p.max_concurrency = 1;
    }
    let ps = people(12);
    for (i, p) in ps.iter().enumerate() {
        w.seed(i as u64 + 1, p, &ALL);
    }
    w.sync().await;
    for (i, p) in ps.iter().enumerate() {
        let mut renamed = p.clone();
        renamed.name = Some(format!("Renamed {i}"));
        w.edit(Chatwoot, i as u64 + 1, &renamed);
    }
    w.clear_requests();
    let privy = w.fleet.sim(Privy);
    privy.inject(
        FaultRule::always(Fault::RateLimited {
            retry_after: Some(1),
        })
        .on(Method::PATCH)
        .after(4)
        .times(1),
    );

    let report = w.sync().await;
    assert_eq!(report.failure_count(), 0, "{}", report.to_text(false));
    assert_eq!(
        report.applied(),
        36,
        "12 records in each of Protocol, Callbell and Privy"
    );

    let requests = privy.requests();
    let throttled = requests
        .iter()
        .find(|r| r.status == 429)
        .expect("the simulator answered 429 once");
    let after: Vec<_> = requests.iter().filter(|r| r.at > throttled.at).collect();
    assert!(!after.is_empty());
    for r in after {
        assert!(
            r.at.duration_since(throttled.at) >= Duration::from_secs(1),
            "{} {} sent {:?} after the 429, before Retry-After passed",
            r.method,
            r.path,
            r.at.duration_since(throttled.at)
        );
    }
    let patched = requests
        .iter()
        .filter(|r| r.method == Method::PATCH && r.status == 200)
        .count();
    assert_eq!(patched, 12, "every Privy record written exactly once");
}

#[tokio::test]
async fn a_provider_that_is_down_is_reported_and_completed_next_run() {
    let mut w = World::start().await;
    let ps = people(5);
    for (i, p) in ps.iter().enumerate() {
        w.seed(i as u64 + 1, p, &ALL);
    }
    w.sync().await;
    for (i, p) in ps.iter().enumerate() {
        let mut renamed = p.clone();
        renamed.name = Some(format!("Renamed {i}"));
        w.edit(Chatwoot, i as u64 + 1, &renamed);
    }

    // Protocol goes down: its port refuses connections.
    let idx = w
        .fleet
        .sims
        .iter()
        .position(|s| s.kind == Protocol)
        .expect("protocol");
    let down = w.fleet.sims.remove(idx);
    let addr = down.addr;
    let saved = down.contacts();
    let opts = down.shared().options();
    down.stop().await;

    let report = w.sync().await;
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].provider, "protocol");
    assert!(
        report.problems[0].error.contains("connection"),
        "{}",
        report.problems[0].error
    );
    assert!(report.failure_count() > 0, "exit code 1");
    assert_eq!(report.applied(), 10, "Callbell and Privy were still synced");
    for i in 0..5 {
        let privy = w.fleet.sim(Privy).contacts();
        assert!(
            privy
                .iter()
                .any(|c| c["first_name"] == "Renamed" && c["last_name"] == format!("{i}")),
            "privy has Renamed {i}"
        );
    }

    // It comes back with its data: the next run completes it.
    let back = Sim::start_on(Protocol, opts, addr)
        .await
        .expect("restart on the same port");
    back.seed_json(saved);
    w.fleet.sims.push(back);
    let report = w.sync().await;
    assert_eq!(report.failure_count(), 0, "{}", report.to_text(false));
    assert_eq!(report.applied(), 5);
    let names: Vec<String> = w
        .fleet
        .sim(Protocol)
        .contacts()
        .iter()
        .filter_map(|c| c["display_name"].as_str().map(String::from))
        .collect();
    for i in 0..5 {
        assert!(names.contains(&format!("Renamed {i}")), "{names:?}");
    }
    let again = w.sync().await;
    assert!(again.plan.updates.is_empty());
}
