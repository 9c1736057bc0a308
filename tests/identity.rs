//! Identity a human can trust and steer (SPEC section 10, issue 9), end to end over HTTP against
//! the simulators: existing people never fuse by a key, join candidates and `review`, the
//! decision commands (`link`, `unlink`, `ignore`, `resolve`), plan files that keep a stale edit
//! and re-check the rules, and writes whose outcome was unknown.

mod common;

use common::*;
use contact_sync::model::ProviderKind;
use contact_sync::planfile::PlanFile;
use contact_sync::provider::rules::RuleId;
use contact_sync::reconcile::PersonId;
use contact_sync::sim::{Fault, FaultRule, SeedPerson};
use contact_sync::state::StateStore;
use contact_sync::sync::{Quiet, RunOptions};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const ALL: [ProviderKind; 4] = [Protocol, Callbell, Chatwoot, Privy];

/// The display name a simulator holds for a contact.
fn name_in(w: &World, kind: ProviderKind, id: &str) -> String {
    let c = w.contact(kind, id);
    match kind {
        Protocol => s(&c, "display_name").unwrap_or_default().to_owned(),
        Privy => [s(&c, "first_name"), s(&c, "last_name")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
        _ => s(&c, "name").unwrap_or_default().to_owned(),
    }
}

/// The person a record is in, in a run's plan.
fn person_of(report: &contact_sync::report::RunReport, record: &str) -> Option<PersonId> {
    report
        .plan
        .people
        .iter()
        .find(|p| p.records.iter().any(|r| r.to_string() == record))
        .map(|p| p.person.clone())
}

/// Runs the binary with the config and `args`; returns (exit code, stdout, stderr).
async fn cli(config: &str, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.push("--config".into());
    all.push(config.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        run_bin(&refs)
    })
    .await
    .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rec(kind: ProviderKind, id: &str) -> String {
    format!("{kind}:{id}")
}

#[tokio::test]
async fn a_key_edit_never_fuses_two_people_and_a_link_joins_them_by_precedence() {
    let w = World::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_toml(&w, dir.path(), "", "");
    let ada = person("Ada Lovelace", "+14155550101", "ada@example.com");
    let bob = person("Bob Marley", "+14155550202", "bob@example.com");
    let p1 = w.seed(1, &ada, &[Protocol, Callbell]);
    let p2 = w.seed(2, &bob, &[Chatwoot, Privy]);
    let (protocol, callbell, chatwoot, privy) = (
        rec(Protocol, &p1[0]),
        rec(Callbell, &p1[1]),
        rec(Chatwoot, &p2[0]),
        rec(Privy, &p2[1]),
    );

    let first = w.sync().await;
    assert_eq!(first.plan.people.len(), 2, "{:#?}", first.plan.people);

    // Someone types Ada's phone into Bob's Chatwoot contact.
    w.edit(
        Chatwoot,
        2,
        &person("Bob Marley", "+14155550101", "bob@example.com"),
    );
    w.clear_requests();
    let second = w.sync().await;
    assert_eq!(w.writes(), 0, "no name, no phone is written across people");
    assert_ne!(person_of(&second, &chatwoot), person_of(&second, &protocol));
    assert_eq!(second.plan.join_candidates.len(), 1, "{:#?}", second.plan);
    assert_eq!(json(&second)["summary"]["join_candidates"], 1);
    assert_eq!(name_in(&w, Protocol, &p1[0]), "Ada Lovelace");
    assert_eq!(name_in(&w, Callbell, &p1[1]), "Ada Lovelace");
    assert_eq!(name_in(&w, Chatwoot, &p2[0]), "Bob Marley");
    assert_eq!(name_in(&w, Privy, &p2[1]), "Bob Marley");

    // `review` lists it with the command that settles it.
    let (code, out, err) = cli(&config, &["review", "--format", "json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let review: Value = serde_json::from_str(&out).expect("review JSON");
    let item = review["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["kind"] == "join-candidate")
        .unwrap_or_else(|| panic!("a join candidate in {review:#}"));
    let link = format!("contact-sync link {protocol} {callbell} {chatwoot} {privy}");
    assert_eq!(item["commands"][0], link.as_str(), "{item:#}");
    let (code, out, _) = cli(&config, &["review", "--offline"]).await;
    assert_eq!(code, 0);
    assert!(out.contains(&link), "{out}");

    // Running it joins them; precedence decides each field, and the conflict is reported.
    let args: Vec<&str> = link.split(' ').skip(1).collect();
    let (code, out, err) = cli(&config, &args).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Linked"), "{out}");
    let third = w.sync().await;
    assert_eq!(third.plan.people.len(), 1, "{:#?}", third.plan.people);
    assert!(
        third
            .plan
            .conflicts
            .iter()
            .any(|c| c.field == contact_sync::model::Field::Name),
        "{:#?}",
        third.plan.conflicts
    );
    assert!(third.plan.join_candidates.is_empty());
    // Chatwoot comes first in the default precedence.
    for (kind, id) in [(Protocol, &p1[0]), (Callbell, &p1[1]), (Privy, &p2[1])] {
        assert_eq!(name_in(&w, kind, id), "Bob Marley", "{kind}");
    }
    w.clear_requests();
    let fourth = w.sync().await;
    assert_eq!(w.writes(), 0, "{:#?}", fourth.plan.updates);

    // The decisions are in the audit log.
    let store = StateStore::open_read_only(&w.state_path())
        .expect("state")
        .expect("exists");
    let log = store.decisions().expect("decisions");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].kind, "link");
}

#[tokio::test]
async fn an_unlinked_record_is_not_rejoined_on_the_next_two_runs() {
    let w = World::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_toml(&w, dir.path(), "", "");
    let ids = w.seed(
        1,
        &person("Ada Lovelace", "+14155550101", "ada@example.com"),
        &ALL,
    );
    let privy = rec(Privy, &ids[3]);
    let chatwoot = rec(Chatwoot, &ids[2]);
    let first = w.sync().await;
    let person = person_of(&first, &privy).expect("linked");
    assert_eq!(person_of(&first, &chatwoot).as_ref(), Some(&person));

    let (code, out, err) = cli(&config, &["unlink", &privy]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("never joined"), "{out}");

    for round in 0..2 {
        if round == 1 {
            w.edit(
                Chatwoot,
                1,
                &common::person("Ada King", "+14155550101", "ada@example.com"),
            );
        }
        let r = w.sync().await;
        let now = person_of(&r, &privy).expect("a person of its own");
        assert_ne!(now, person, "round {round}: re-joined");
        assert_eq!(person_of(&r, &chatwoot).as_ref(), Some(&person));
        assert!(
            r.plan.join_candidates.is_empty(),
            "a human unlinked it: {:#?}",
            r.plan.join_candidates
        );
    }
    assert_eq!(name_in(&w, Protocol, &ids[0]), "Ada King");
    assert_eq!(
        name_in(&w, Privy, &ids[3]),
        "Ada Lovelace",
        "not its person any more"
    );
}

#[tokio::test]
async fn an_ignored_record_is_neither_read_into_matching_nor_written() {
    let w = World::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_toml(&w, dir.path(), "", "");
    let ids = w.seed(
        1,
        &person("Ada Lovelace", "+14155550101", "ada@example.com"),
        &ALL,
    );
    let chatwoot = rec(Chatwoot, &ids[2]);
    w.sync().await;
    let (code, out, err) = cli(&config, &["ignore", &chatwoot]).await;
    assert_eq!(code, 0, "{out}{err}");

    // Its edit does not spread; an edit elsewhere does not reach it.
    w.edit(
        Chatwoot,
        1,
        &person("Ada From Chatwoot", "+14155550101", "ada@example.com"),
    );
    w.edit(
        Privy,
        1,
        &person("Ada From Privy", "+14155550101", "ada@example.com"),
    );
    w.clear_requests();
    let r = w.sync().await;
    assert_eq!(person_of(&r, &chatwoot), None, "not matched");
    assert!(w.fleet.sim(Chatwoot).writes().is_empty(), "not written");
    assert_eq!(name_in(&w, Chatwoot, &ids[2]), "Ada From Chatwoot");
    assert_eq!(name_in(&w, Protocol, &ids[0]), "Ada From Privy");
    assert_eq!(name_in(&w, Callbell, &ids[1]), "Ada From Privy");

    let (code, _, err) = cli(&config, &["unignore", &chatwoot]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&config, &["unignore", &chatwoot]).await;
    assert_eq!(code, 2, "not ignored any more: {err}");
}

#[tokio::test]
async fn a_resolved_value_spreads_and_a_later_edit_still_wins() {
    let w = World::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_toml(&w, dir.path(), "", "");
    let ids = w.seed(
        1,
        &person("Ada Lovelace", "+14155550101", "ada@example.com"),
        &ALL,
    );
    let first = w.sync().await;
    let person = first.plan.people[0].person.clone();

    let (code, out, err) = cli(
        &config,
        &["resolve", &person, "name", "--value", "Ada King-Noel"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let r = w.sync().await;
    assert!(r.plan.conflicts.is_empty());
    for (i, kind) in ALL.iter().enumerate() {
        assert_eq!(name_in(&w, *kind, &ids[i]), "Ada King-Noel", "{kind}");
    }

    w.edit(
        Callbell,
        1,
        &common::person("Ada Byron", "+14155550101", "ada@example.com"),
    );
    let r = w.sync().await;
    assert!(r.plan.conflicts.is_empty(), "{:#?}", r.plan.conflicts);
    for (i, kind) in ALL.iter().enumerate() {
        assert_eq!(name_in(&w, *kind, &ids[i]), "Ada Byron", "{kind}");
    }

    // Bad arguments change nothing.
    let (code, _, err) = cli(&config, &["resolve", "p:nobody", "name", "--value", "X"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("unknown person"), "{err}");
    let (code, _, err) = cli(
        &config,
        &["resolve", &person, "phone", "--value", "not a phone"],
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("not a valid phone"), "{err}");
}

#[tokio::test]
async fn link_refuses_two_records_of_one_provider_and_changes_nothing() {
    let w = World::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_toml(&w, dir.path(), "", "");
    let a = w.seed(
        1,
        &person("Ada Lovelace", "+14155550101", "ada@example.com"),
        &[Privy],
    );
    let b = w.seed(
        2,
        &person("Bob Marley", "+14155550202", "bob@example.com"),
        &[Privy],
    );
    w.sync().await;
    let (code, _, err) = cli(&config, &["link", &rec(Privy, &a[0]), &rec(Privy, &b[0])]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at most one record per provider"), "{err}");
    let (code, _, err) = cli(&config, &["link", &rec(Privy, &a[0]), "chatwoot:404"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not known to the state"), "{err}");
    let (code, _, err) = cli(&config, &["link", "nonsense", &rec(Privy, &a[0])]).await;
    assert_eq!(code, 2, "{err}");
    let store = StateStore::open_read_only(&w.state_path())
        .expect("state")
        .expect("exists");
    assert!(store.decisions().expect("log").is_empty());
}

#[tokio::test]
async fn a_stale_plan_edit_survives_and_spreads_as_an_edit() {
    let w = World::start().await;
    let ids = w.seed(
        1,
        &person("Ada Lovelace", "+14155550101", "ada@example.com"),
        &ALL,
    );
    w.sync().await;
    w.edit(
        Chatwoot,
        1,
        &person("Ada King", "+14155550101", "ada@example.com"),
    );
    let diff = w.diff().await;
    let file = PlanFile::from_plan(&diff.plan, &w.config.fingerprint());
    let file: PlanFile =
        serde_json::from_str(&serde_json::to_string(&file).expect("plan")).expect("round trip");

    // Privy's contact is edited after the plan was made.
    w.edit(
        Privy,
        1,
        &person("Ada Privy", "+14155550101", "ada@example.com"),
    );
    let applied = w
        .engine()
        .run(
            RunOptions {
                plan: Some(file),
                ..RunOptions::default()
            },
            &CancellationToken::new(),
            &Quiet,
        )
        .await
        .expect("plan applies");
    assert_eq!(applied.stale.len(), 1, "{:#?}", applied.stale);
    assert_eq!(name_in(&w, Privy, &ids[3]), "Ada Privy", "not overwritten");

    for _ in 0..2 {
        w.sync().await;
    }
    for (i, kind) in ALL.iter().enumerate() {
        assert_eq!(name_in(&w, *kind, &ids[i]), "Ada Privy", "{kind}");
    }
}

#[tokio::test]
async fn an_email_chatwoot_gave_away_since_the_plan_is_not_written() {
    let w = World::start().await;
    let ada = person("Ada Lovelace", "+14155550101", "ada@example.com");
    let ids = w.seed(1, &ada, &[Privy]);
    let no_email = SeedPerson {
        email: None,
        ..ada.clone()
    };
    let cw = w.seed(1, &no_email, &[Chatwoot]);
    let diff = w.diff().await;
    assert!(
        diff.plan
            .updates
            .iter()
            .any(|u| u.patch.record.to_string() == rec(Chatwoot, &cw[0])),
        "the plan gives Chatwoot the e-mail: {:#?}",
        diff.plan.updates
    );
    let file = PlanFile::from_plan(&diff.plan, &w.config.fingerprint());

    // Another Chatwoot contact takes the e-mail before the plan is applied.
    w.seed(
        3,
        &person("Someone Else", "+14155550303", "ada@example.com"),
        &[Chatwoot],
    );
    let before = w.fleet.sim(Chatwoot).contacts().len();
    let applied = w
        .engine()
        .run(
            RunOptions {
                plan: Some(file),
                ..RunOptions::default()
            },
            &CancellationToken::new(),
            &Quiet,
        )
        .await
        .expect("plan applies");
    assert!(
        applied
            .plan
            .skipped
            .iter()
            .any(|s| s.rule == RuleId::WouldMergeContacts
                && s.record.to_string() == rec(Chatwoot, &cw[0])),
        "{:#?}",
        applied.plan.skipped
    );
    assert_eq!(w.fleet.sim(Chatwoot).contacts().len(), before, "no merge");
    assert_eq!(w.contact(Chatwoot, &cw[0])["email"], Value::Null);
    let _ = ids;
}

#[tokio::test]
async fn a_write_applied_without_an_answer_is_no_phantom_edit() {
    let mut w = World::start().await;
    for p in &mut w.config.providers {
        p.http.max_retries = 1;
    }
    let ids = w.seed(
        1,
        &person("Ada Lovelace", "+14155550101", "ada@example.com"),
        &[Chatwoot, Privy],
    );
    w.sync().await;
    w.edit(
        Chatwoot,
        1,
        &person("Ada King", "+14155550101", "ada@example.com"),
    );
    // Privy applies the write, then the connection breaks before the answer arrives.
    w.fleet
        .sim(Privy)
        .inject(FaultRule::always(Fault::ResetMidBody).on(reqwest::Method::PATCH));
    let unknown = w.sync().await;
    assert_eq!(unknown.failure_count(), 1);
    assert_eq!(
        name_in(&w, Privy, &ids[1]),
        "Ada King",
        "applied all the same"
    );
    w.fleet.sim(Privy).clear_faults();

    // A genuine edit elsewhere: it wins, with no conflict against our own write.
    w.edit(
        Chatwoot,
        1,
        &person("Ada Byron", "+14155550101", "ada@example.com"),
    );
    let next = w.sync().await;
    assert!(next.plan.conflicts.is_empty(), "{:#?}", next.plan.conflicts);
    assert_eq!(next.pending_checked, (1, 0));
    assert_eq!(name_in(&w, Privy, &ids[1]), "Ada Byron");
}
