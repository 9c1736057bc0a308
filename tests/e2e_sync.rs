//! End to end over HTTP against the four simulators: seeded disagreements → `diff` lists exactly
//! the expected changes, skips and conflicts → `sync` makes the providers agree where the rules
//! allow → a second sync sends no write → `diff` sends no write at all.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

const ALL: [contact_sync::model::ProviderKind; 4] = [Protocol, Callbell, Chatwoot, Privy];

#[tokio::test]
async fn diff_then_sync_converges_and_second_run_sends_nothing() {
    let w = World::start().await;
    let ada = person("Ada Lovelace", "+14155550101", "ada@example.com");
    let edsger = person("Edsger Dijkstra", "+14155550102", "edsger@old.example");
    let mut barbara = person("Barbara Liskov", "+14155550103", "barbara@example.com");
    barbara.tags = vec!["lead".into()];
    let grace = person("Grace Hopper", "+14155550104", "grace@example.com");
    let ids: Vec<Vec<String>> = [&ada, &edsger, &barbara, &grace]
        .iter()
        .enumerate()
        .map(|(i, p)| w.seed(i as u64 + 1, p, &ALL))
        .collect();
    let id = |person: usize, kind: contact_sync::model::ProviderKind| {
        ids[person][ALL.iter().position(|k| *k == kind).expect("kind")].clone()
    };

    // Yesterday: everyone agrees, so the first sync links them and writes nothing.
    let first = w.sync().await;
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    assert_eq!(first.plan.people.len(), 4, "{:#?}", first.plan.ambiguous);
    assert_eq!(w.writes(), 0, "agreeing providers need no write");

    // Today's edits, made in the providers.
    w.edit(
        Chatwoot,
        1,
        &person("Ada King", "+14155550101", "ada@example.com"),
    );
    w.edit(
        Chatwoot,
        2,
        &person("Edsger Dijkstra", "+14155550102", "edsger@new.example"),
    );
    let mut b = barbara.clone();
    b.tags = vec!["lead".into(), "vip".into(), "newsletter".into()];
    w.edit(Privy, 3, &b);
    w.edit(
        Privy,
        4,
        &person("Grace B. Hopper", "+14155550104", "grace@example.com"),
    );
    w.edit(
        Chatwoot,
        4,
        &person("Grace M. Hopper", "+14155550104", "grace@example.com"),
    );
    w.clear_requests();

    let diff = w.diff().await;
    assert_eq!(w.writes(), 0, "diff sends no write");
    let report = json(&diff);
    let changes: BTreeSet<(String, String, String, String)> = report["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["provider"].as_str().unwrap_or_default().to_string(),
                c["record"].as_str().unwrap_or_default().to_string(),
                c["field"].as_str().unwrap_or_default().to_string(),
                c["new"].to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, String, String)> = [
        ("privy", id(0, Privy), "name", "\"Ada King\""),
        ("callbell", id(0, Callbell), "name", "\"Ada King\""),
        ("protocol", id(0, Protocol), "name", "\"Ada King\""),
        ("callbell", id(2, Callbell), "tags", "[\"lead\",\"vip\"]"),
        // Chatwoot labels take part as tags (application API, the default); "newsletter" is
        // not one of its known labels.
        ("chatwoot", id(2, Chatwoot), "tags", "[\"lead\",\"vip\"]"),
        ("privy", id(3, Privy), "name", "\"Grace M. Hopper\""),
        ("callbell", id(3, Callbell), "name", "\"Grace M. Hopper\""),
        ("protocol", id(3, Protocol), "name", "\"Grace M. Hopper\""),
    ]
    .into_iter()
    .map(|(p, r, f, n)| (p.to_string(), r, f.to_string(), n.to_string()))
    .collect();
    assert_eq!(changes, expected, "{}", diff.to_text(false));

    let skipped: BTreeSet<(String, String, String)> = report["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|s| {
            (
                s["provider"].as_str().unwrap_or_default().to_string(),
                s["field"].as_str().unwrap_or_default().to_string(),
                s["rule"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        skipped.contains(&("privy".into(), "email".into(), "set-once".into())),
        "{skipped:?}"
    );
    assert!(
        skipped.contains(&("callbell".into(), "tags".into(), "unknown-tag".into())),
        "{skipped:?}"
    );
    assert!(
        skipped.contains(&("chatwoot".into(), "tags".into(), "unknown-tag".into())),
        "{skipped:?}"
    );
    let conflicts = report["conflicts"].as_array().expect("conflicts");
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0]["field"], "name");
    assert_eq!(
        conflicts[0]["winner"],
        Value::String(format!("chatwoot:{}", id(3, Chatwoot)))
    );
    assert_eq!(
        report["summary"]["planned_writes"], 8,
        "one request per record carrying all its fields"
    );

    // Sync: the simulators end up agreeing where the rules allow.
    let sync = w.sync().await;
    assert_eq!(sync.failure_count(), 0, "{}", sync.to_text(false));
    assert_eq!(
        w.writes(),
        8,
        "one write per changed record (Chatwoot labels: one labels POST)"
    );
    let privy_ada = w.contact(Privy, &id(0, Privy));
    assert_eq!(
        (s(&privy_ada, "first_name"), s(&privy_ada, "last_name")),
        (Some("Ada"), Some("King"))
    );
    assert_eq!(
        s(&w.contact(Callbell, &id(0, Callbell)), "name"),
        Some("Ada King")
    );
    assert_eq!(
        s(&w.contact(Protocol, &id(0, Protocol)), "display_name"),
        Some("Ada King")
    );
    assert_eq!(
        s(&w.contact(Privy, &id(1, Privy)), "email"),
        Some("edsger@old.example"),
        "set-once e-mail untouched"
    );
    let barbara_cb = w.contact(Callbell, &id(2, Callbell));
    let tags: BTreeSet<&str> = barbara_cb["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        tags,
        ["lead", "vip"].into(),
        "unknown tag never sent to Callbell"
    );
    let privy_grace = w.contact(Privy, &id(3, Privy));
    assert_eq!(
        (s(&privy_grace, "first_name"), s(&privy_grace, "last_name")),
        (Some("Grace M."), Some("Hopper"))
    );
    let sent = w.fleet.sim(Callbell).writes();
    let labels = w.fleet.sim(Chatwoot).writes();
    assert!(!labels.is_empty(), "Chatwoot was sent its labels");
    for r in sent.iter().chain(&labels) {
        let tags = r
            .body
            .as_ref()
            .and_then(|b| b.get("tags").or_else(|| b.get("labels")))
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(
            !tags.contains("newsletter"),
            "a forbidden tag was sent: {tags}"
        );
    }

    // A second sync right after sends nothing; a diff sends nothing either.
    w.clear_requests();
    let again = w.sync().await;
    assert!(again.plan.updates.is_empty(), "{}", again.to_text(false));
    assert_eq!(w.writes(), 0);
    let d = w.diff().await;
    assert!(d.plan.updates.is_empty());
    assert_eq!(w.writes(), 0);
}
