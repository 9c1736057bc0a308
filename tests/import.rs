//! Import (SPEC section 11, issue 10) end to end over HTTP against the simulators: creating the
//! contacts a provider lacks, roles, the never-a-duplicate guarantee when an answer is lost,
//! Privy's 409, and the `max_creates` guard rail.

mod common;

use common::*;
use contact_sync::config::Role;
use contact_sync::model::ProviderKind;
use contact_sync::reconcile::CreateFilter;
use contact_sync::sim::{privy, Fault, FaultRule, SeedPerson};
use contact_sync::state::StateStore;
use contact_sync::sync::{Quiet, RunOptions};
use reqwest::Method;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Turns `create = true` on for `kinds`, as the config would.
fn creating(w: &mut World, kinds: &[ProviderKind]) {
    for k in kinds {
        w.config.enable_create(*k, CreateFilter::default());
    }
}

fn with_email(w: &World, kind: ProviderKind, email: &str) -> Vec<Value> {
    w.fleet
        .sim(kind)
        .contacts()
        .into_iter()
        .filter(|c| {
            c["email"]
                .as_str()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        })
        .collect()
}

fn with_phone(w: &World, kind: ProviderKind, digits: &str) -> Vec<Value> {
    w.fleet
        .sim(kind)
        .contacts()
        .into_iter()
        .filter(|c| {
            ["phone_number", "phoneNumber"].iter().any(|k| {
                c[*k]
                    .as_str()
                    .is_some_and(|p| p.trim_start_matches('+') == digits)
            })
        })
        .collect()
}

#[tokio::test]
async fn a_person_known_to_chatwoot_only_is_created_where_creation_is_on() {
    let mut w = World::start().await;
    creating(&mut w, &[Privy, Callbell]);
    let ada = person("Ada Lovelace", "+14155550101", "ada@example.com");
    w.seed(1, &ada, &[Chatwoot]);

    let diff = w.diff().await;
    assert_eq!(diff.plan.creates.len(), 2, "{:#?}", diff.plan.creates);
    assert_eq!(json(&diff)["summary"]["planned_creates"], 2);
    assert_eq!(w.writes(), 0, "a diff sends nothing");

    let first = w.sync().await;
    assert_eq!(first.created(), 2, "{:#?}", first.create_outcomes);
    assert_eq!(with_email(&w, Privy, "ada@example.com").len(), 1);
    assert_eq!(with_phone(&w, Callbell, "14155550101").len(), 1);
    assert!(
        w.fleet.sim(Protocol).contacts().is_empty(),
        "create = false for Protocol"
    );
    assert_eq!(w.fleet.sim(Privy).welcome_sms_sent(), 0);
    let privy_sent = w.fleet.sim(Privy).writes();
    assert_eq!(privy_sent.len(), 1);
    let body = privy_sent[0].body.clone().unwrap_or_default();
    assert!(body.get("sms_consent").is_none() && body.get("email_consent").is_none());

    // The new records are linked to the person: the next sync sends only listings.
    w.clear_requests();
    let second = w.sync().await;
    assert!(second.plan.creates.is_empty(), "{:#?}", second.plan.creates);
    assert_eq!(second.plan.people.len(), 1);
    assert_eq!(second.plan.people[0].records.len(), 3);
    for sim in &w.fleet.sims {
        let not_get: Vec<_> = sim
            .requests()
            .into_iter()
            .filter(|r| r.method != Method::GET)
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(not_get.is_empty(), "{}: {not_get:?}", sim.kind);
    }
}

#[tokio::test]
async fn a_person_without_a_required_field_is_skipped_with_the_rule() {
    let mut w = World::start().await;
    creating(&mut w, &[Protocol]);
    let ada = SeedPerson {
        username: None,
        ..person("Ada Lovelace", "+14155550101", "ada@example.com")
    };
    w.seed(1, &ada, &[Chatwoot]);
    let r = w.sync().await;
    assert!(r.plan.creates.is_empty());
    let skip = r
        .plan
        .create_skips
        .iter()
        .find(|s| s.provider == Protocol)
        .expect("skipped");
    assert_eq!(skip.rule.as_str(), "missing-required");
    assert!(skip.detail.contains("username"), "{}", skip.detail);
    assert!(w.fleet.sim(Protocol).contacts().is_empty());
}

#[tokio::test]
async fn a_source_is_never_written_and_a_target_takes_the_agreed_values() {
    let mut w = World::start().await;
    let ada = person("Ada Lovelace", "+14155550101", "ada@example.com");
    let ids = w.seed(1, &ada, &[Chatwoot, Privy, Callbell]);
    w.config.set_role(Chatwoot, Role::Source);
    w.config.set_role(Privy, Role::Target);
    creating(&mut w, &[Protocol]);
    w.sync().await;

    // A target's edit is overwritten by the agreed value and never spreads.
    w.edit(
        Privy,
        1,
        &person("Ada From Privy", "+14155550101", "ada@example.com"),
    );
    // A source's edit spreads, but the source is never written.
    w.edit(
        Callbell,
        1,
        &person("Ada From Callbell", "+14155550101", "ada@example.com"),
    );
    w.clear_requests();
    w.sync().await;
    assert!(
        w.fleet.sim(Chatwoot).writes().is_empty(),
        "a source is never written"
    );
    let privy = w.contact(Privy, &ids[1]);
    assert_eq!(privy["first_name"], "Ada From");
    assert_eq!(privy["last_name"], "Callbell");
    assert_eq!(w.contact(Chatwoot, &ids[0])["name"], "Ada Lovelace");
}

#[tokio::test]
async fn a_privy_create_whose_email_another_contact_took_links_that_contact() {
    let mut w = World::start().await;
    creating(&mut w, &[Privy]);
    let ada = person("Ada Lovelace", "+14155550101", "ada@example.com");
    w.seed(1, &ada, &[Chatwoot]);
    // Between the listing and the create, someone adds Ada to Privy by hand.
    let hook: contact_sync::sim::StoreHook = std::sync::Arc::new(|store| {
        store.upsert(privy::from_seed(
            &person("Ada L.", "+14155550199", "ada@example.com"),
            77,
        ));
    });
    w.fleet.sim(Privy).inject(
        FaultRule::always(Fault::Mutate(hook))
            .on(Method::POST)
            .times(1),
    );
    let r = w.sync().await;
    assert_eq!(r.failure_count(), 0, "{:#?}", r.create_outcomes);
    let outcome = r.create_outcomes.as_ref().expect("sent");
    assert_eq!(outcome[0].label(), "linked-existing");
    assert_eq!(
        with_email(&w, Privy, "ada@example.com").len(),
        1,
        "no duplicate"
    );
    assert_eq!(w.fleet.sim(Privy).welcome_sms_sent(), 0);
    let again = w.sync().await;
    assert!(again.plan.creates.is_empty(), "{:#?}", again.plan.creates);
    assert_eq!(again.plan.people[0].records.len(), 2);
}

#[tokio::test]
async fn a_create_applied_before_the_connection_dropped_is_linked_not_sent_again() {
    let mut w = World::start().await;
    creating(&mut w, &[Privy, Callbell]);
    w.seed(
        1,
        &person("Ada Lovelace", "+14155550101", "ada@example.com"),
        &[Chatwoot],
    );
    for k in [Privy, Callbell] {
        w.fleet
            .sim(k)
            .inject(FaultRule::always(Fault::ApplyThenDrop).on(Method::POST));
    }
    let lost = w.sync().await;
    assert_eq!(lost.create_failures(), 2, "{:#?}", lost.create_outcomes);
    for k in [Privy, Callbell] {
        w.fleet.sim(k).clear_faults();
        w.fleet.sim(k).clear_requests();
    }
    let next = w.sync().await;
    assert_eq!(
        next.creates_settled.linked, 2,
        "{:#?}",
        next.creates_settled
    );
    assert!(next.plan.creates.is_empty(), "{:#?}", next.plan.creates);
    assert_eq!(with_email(&w, Privy, "ada@example.com").len(), 1);
    assert_eq!(with_phone(&w, Callbell, "14155550101").len(), 1);
    for k in [Privy, Callbell] {
        assert!(
            !w.fleet
                .sim(k)
                .requests()
                .iter()
                .any(|r| r.method == Method::POST),
            "{k}: never sent again"
        );
    }
    assert_eq!(next.plan.people[0].records.len(), 3);
}

#[tokio::test]
async fn the_max_creates_guard_rail_stops_the_run_and_force_applies_it() {
    let mut w = World::start().await;
    creating(&mut w, &[Privy]);
    let people: Vec<SeedPerson> = (0..150)
        .map(|i| {
            person(
                &format!("Person {i}"),
                &format!("+1415555{:04}", 1000 + i),
                &format!("p{i}@example.com"),
            )
        })
        .collect();
    w.fleet.sim(Chatwoot).seed_people(&people);
    let stopped = w.sync().await;
    assert_eq!(stopped.guard.len(), 1, "{:#?}", stopped.guard);
    let g = &stopped.guard[0];
    assert_eq!(
        (g.provider.as_str(), g.threshold.as_str()),
        ("privy", "max_creates")
    );
    assert!(
        g.message.contains("150") && g.message.contains("max_creates") && g.message.contains("100"),
        "{}",
        g.message
    );
    assert!(w.fleet.sim(Privy).contacts().is_empty(), "nothing written");
    let forced = w
        .engine()
        .run(
            RunOptions {
                force: true,
                ..RunOptions::default()
            },
            &CancellationToken::new(),
            &Quiet,
        )
        .await
        .expect("sync");
    assert_eq!(forced.created(), 150);
    assert_eq!(w.fleet.sim(Privy).contacts().len(), 150);
    let store = StateStore::open_read_only(&w.state_path())
        .expect("state")
        .expect("exists");
    assert_eq!(
        store.create_counts().expect("counts").get("confirmed"),
        Some(&150)
    );
}
