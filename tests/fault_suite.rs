//! A full sync under each fault the simulators can inject. Every case asserts: the run finishes;
//! every write that could succeed did; no write the rules forbid was sent (no simulator ever
//! rejected a write by rule); failed records are reported with their cause; and the next clean
//! run completes them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use common::*;
use contact_sync::config::ProviderSpecific;
use contact_sync::model::ProviderKind;
use contact_sync::sim::{Fault, FaultRule};
use rstest::rstest;
use serde_json::json;

const ALL: [ProviderKind; 4] = [Protocol, Callbell, Chatwoot, Privy];
const PEOPLE: usize = 6;

/// Six people in all providers, synced once, then renamed in Chatwoot: 18 writes are due
/// (Protocol, Callbell and Privy, six each).
async fn world() -> World {
    let mut w = World::start().await;
    for p in &mut w.config.providers {
        p.http.timeout = Duration::from_millis(600);
        p.http.max_retries = 3;
        p.http.max_body_bytes = 256 * 1024;
        if let ProviderSpecific::Privy { page_size, .. } = &mut p.specific {
            *page_size = 2;
        }
    }
    for i in 0..PEOPLE {
        w.seed(
            i as u64 + 1,
            &person(
                &format!("Person {i}"),
                &format!("+1415555{:04}", 3000 + i),
                &format!("p{i}@example.com"),
            ),
            &ALL,
        );
    }
    let first = w.sync().await;
    assert_eq!(first.failure_count(), 0);
    for i in 0..PEOPLE {
        w.edit(
            Chatwoot,
            i as u64 + 1,
            &person(
                &format!("Renamed {i}"),
                &format!("+1415555{:04}", 3000 + i),
                &format!("p{i}@example.com"),
            ),
        );
    }
    w.clear_requests();
    w
}

fn privy_renamed(w: &World) -> usize {
    w.fleet
        .sim(Privy)
        .contacts()
        .iter()
        .filter(|c| c["first_name"] == "Renamed")
        .count()
}

/// No simulator rejected a write by rule.
fn no_forbidden_write(w: &World) {
    for sim in &w.fleet.sims {
        for r in sim.writes() {
            // The simulators answer a write their rules forbid with 400 or 422 (404 means the
            // record is gone, which a concurrent delete can cause).
            assert!(
                !matches!(r.status, 400 | 422),
                "{} rejected {} {} with {}: {:?}",
                sim.kind,
                r.method,
                r.path,
                r.status,
                r.body
            );
        }
    }
}

#[rstest]
#[case::rate_limited_with_retry_after(FaultRule::always(Fault::RateLimited { retry_after: Some(1) }).on(Method::PATCH).after(1).times(1))]
#[case::rate_limited_without_retry_after(FaultRule::always(Fault::RateLimited { retry_after: None }).on(Method::PATCH).times(2))]
#[case::internal_error(FaultRule::always(Fault::Status(500)).on(Method::PATCH).times(2))]
#[case::bad_gateway(FaultRule::always(Fault::Status(502)).times(2))]
#[case::unavailable(FaultRule::always(Fault::Status(503)).times(2))]
#[case::slow_past_the_timeout(FaultRule::always(Fault::Delay(Duration::from_millis(1500))).on(Method::PATCH).times(1))]
#[case::reset_mid_body(FaultRule::always(Fault::ResetMidBody).times(2))]
#[case::dropped_connection(FaultRule::always(Fault::Drop).on(Method::PATCH).times(2))]
#[case::truncated_json(FaultRule::always(Fault::Truncated).on(Method::GET).times(2))]
#[case::wrong_shape(FaultRule::always(Fault::WrongShape).on(Method::GET).times(1))]
#[case::not_json(FaultRule::always(Fault::Malformed).times(2))]
#[case::oversized_body(FaultRule::always(Fault::Oversized(1024 * 1024)).on(Method::GET).times(1))]
// A record moves from the front to the back once between page calls: the first scan skips it
// and ends short of the total, and the re-scan finds it.
#[case::page_skips_a_record(FaultRule::always(Fault::Mutate(Arc::new(|s| { if let Some(v) = s.remove_first() { s.upsert(v) } }))).on(Method::GET).after(1).times(1))]
// A record is created at the front once during the scan: the first scan sees one record twice
// and ends short of the new total, and the re-scan finds the newcomer.
#[case::page_repeats_a_record(
    FaultRule::always(Fault::Mutate(Arc::new(|s| s.insert_front(json!({"id": "cus_inserted", "first_name": "New", "last_name": "Person", "email": null, "phone_number": null, "tags": [], "custom_fields": {}}))))).on(Method::GET).after(1).times(1)
)]
#[tokio::test]
async fn transient_faults_heal_within_the_run(#[case] rule: FaultRule) {
    let w = world().await;
    w.fleet.sim(Privy).inject(rule);
    let report = w.sync().await;
    assert_eq!(report.failure_count(), 0, "{}", report.to_text(false));
    assert_eq!(report.applied(), 3 * PEOPLE);
    assert_eq!(privy_renamed(&w), PEOPLE);
    no_forbidden_write(&w);
    w.clear_requests();
    let again = w.sync().await;
    assert!(again.plan.updates.is_empty(), "converged");
    assert_eq!(w.writes(), 0);
}

#[rstest]
#[case::server_error_on_every_write(FaultRule::always(Fault::Status(500)).on(Method::PATCH), "server error")]
#[case::timeout_on_every_write(FaultRule::always(Fault::Delay(Duration::from_millis(1500))).on(Method::PATCH), "timed out")]
#[case::rejected_write(FaultRule::always(Fault::Status(409)).on(Method::PATCH), "rejected")]
#[case::garbage_listing(FaultRule::always(Fault::WrongShape).on(Method::GET), "understand the response")]
#[case::oversized_listing(FaultRule::always(Fault::Oversized(1024 * 1024)).on(Method::GET), "larger than")]
// A record moves from the front to the back before every page call after the first (as
// updates can re-sort records): each of the three scans misses the same two records while the
// total stays, so the listing is caught as incomplete.
#[case::pages_keep_skipping_records(FaultRule::always(Fault::Mutate(Arc::new(|s| { if let Some(v) = s.remove_first() { s.upsert(v) } }))).on(Method::GET).after(1), "incomplete")]
// A record is deleted between page calls: the total drops with it, so the skip cannot be
// counted; the write to the deleted record fails with the provider's 404 and the record it hid
// is written next run.
#[case::page_loses_a_deleted_record(FaultRule::always(Fault::Mutate(Arc::new(|s| { s.remove_first(); }))).on(Method::GET).after(1).times(1), "not_found")]
#[tokio::test]
async fn persistent_faults_are_reported_and_completed_next_run(
    #[case] rule: FaultRule,
    #[case] cause: &str,
) {
    let w = world().await;
    w.fleet.sim(Privy).inject(rule);
    let report = w.sync().await;
    let text = report.to_text(false);
    assert!(report.failure_count() > 0, "{text}");
    assert!(text.contains(cause), "cause `{cause}` reported: {text}");
    assert!(
        report.applied() >= 2 * PEOPLE,
        "Protocol and Callbell were still written: {text}"
    );
    no_forbidden_write(&w);
    let json = json_report(&report);
    assert!(
        json["failures"]
            .as_array()
            .is_some_and(|f| f.iter().all(|f| f["provider"] == "privy")),
        "{json}"
    );

    w.fleet.sim(Privy).clear_faults();
    let next = w.sync().await;
    assert_eq!(next.failure_count(), 0, "{}", next.to_text(false));
    let stale = w
        .fleet
        .sim(Privy)
        .contacts()
        .iter()
        .filter(|c| c["first_name"] == "Person")
        .count();
    assert_eq!(stale, 0, "the next clean run completed Privy");
    let last = w.sync().await;
    assert!(last.plan.updates.is_empty());
}

fn json_report(r: &contact_sync::report::RunReport) -> serde_json::Value {
    serde_json::from_str(&r.to_json()).expect("json")
}
