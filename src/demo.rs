//! `contact-sync demo`: the whole job on the built-in simulators, no account or network needed.
//!
//! Starts the four simulators on loopback, seeds a few dozen people, runs a quiet first sync
//! ("yesterday"), then makes today's edits directly in the providers (a rename, a phone known
//! only to one provider, an e-mail Privy cannot take, a tag Callbell does not know, a
//! conflicting rename, a custom-field change, a record that fits two people), prints the dry-run
//! diff, syncs, and shows that a second dry run plans nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tokio_util::sync::CancellationToken;

use crate::model::{Field, ProviderKind};
use crate::provider::mapping::Mapping;
use crate::sim::{Fleet, SeedPerson, SimOptions};
use crate::sync::{Engine, Quiet, RunOptions};

const FIRST: [&str; 16] = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Margaret",
    "Dennis",
    "Radia",
    "Leslie",
    "Katherine",
    "John",
    "Hedy",
    "Niklaus",
];
const LAST: [&str; 16] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton",
    "Ritchie", "Perlman", "Lamport", "Johnson", "Backus", "Lamarr", "Wirth",
];

/// The people the demo starts with (in agreement), by sequence number.
pub fn sample_people(n: usize) -> Vec<SeedPerson> {
    (0..n)
        .map(|i| {
            let first = FIRST[i % FIRST.len()];
            let last = LAST[(i * 7 + i / FIRST.len()) % LAST.len()];
            let mut custom_fields = BTreeMap::new();
            if i % 3 == 0 {
                custom_fields.insert(
                    "loyalty_tier".to_string(),
                    ["gold", "silver"][i % 2].to_string(),
                );
            }
            SeedPerson {
                name: Some(format!("{first} {last}")),
                email: Some(format!(
                    "{}.{}{i}@example.com",
                    first.to_lowercase(),
                    last.to_lowercase()
                )),
                phone: Some(format!("+1415555{:04}", 100 + i)),
                avatar_url: None,
                username: Some(format!("{}{i}", first.to_lowercase())),
                identifier: None,
                tags: if i % 4 == 0 {
                    vec!["vip".into()]
                } else {
                    vec![]
                },
                custom_fields,
            }
        })
        .collect()
}

/// Which providers hold person `i` (everyone is in Chatwoot and Privy).
fn holds(kind: ProviderKind, i: usize) -> bool {
    match kind {
        ProviderKind::Chatwoot | ProviderKind::Privy => true,
        ProviderKind::Callbell => i % 5 != 4 && i != 2,
        ProviderKind::Protocol => i % 3 != 2,
    }
}

/// The demo's `[mapping]`: one custom field under three names, as real accounts spell it
/// (`loyalty_tier = { privy = "loyalty_tier", callbell = "Loyalty Tier", chatwoot = "tier" }`).
pub fn demo_mapping() -> Mapping {
    Mapping {
        custom_fields: [(
            "loyalty_tier".to_string(),
            [
                (ProviderKind::Privy, "loyalty_tier".to_string()),
                (ProviderKind::Callbell, "Loyalty Tier".to_string()),
                (ProviderKind::Chatwoot, "tier".to_string()),
            ]
            .into(),
        )]
        .into(),
        ..Mapping::default()
    }
}

/// `p` as `kind` stores it, its custom fields under that provider's own keys.
fn stored(mapping: &Mapping, kind: ProviderKind, p: &SeedPerson) -> SeedPerson {
    let mut p = p.stored_by(kind);
    p.custom_fields = std::mem::take(&mut p.custom_fields)
        .into_iter()
        .map(|(k, v)| {
            let own = mapping
                .custom_fields
                .get(&k)
                .and_then(|per| per.get(&kind))
                .cloned()
                .unwrap_or(k);
            (own, v)
        })
        .collect();
    p
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The simulators could not bind their loopback ports.
    #[error("cannot start the provider simulators on loopback: {0}")]
    Simulators(#[source] std::io::Error),
    /// The temporary directory for the demo's state could not be made.
    #[error("cannot create a temporary directory for the demo's state: {0}")]
    TempDir(#[source] std::io::Error),
    /// The providers could not be set up against the simulators.
    #[error("cannot set up the providers: {0}")]
    Providers(#[source] crate::provider::ProviderError),
    /// A sync of the demo failed as a whole.
    #[error("a demo sync failed: {0}")]
    Sync(#[source] crate::sync::SyncError),
}

/// Runs the demo and returns what it printed.
///
/// # Errors
/// The simulators, the state directory or the providers cannot be set up, or a sync fails.
pub async fn run(people: usize) -> Result<String, DemoError> {
    let mut out = String::new();
    let fleet = Fleet::start(|k| {
        let mut o = SimOptions::for_provider(k).unlimited();
        o.callbell_tags = ["vip", "wholesale", "lead"].map(String::from).into();
        o.callbell_custom_fields = ["Loyalty Tier", "city"].map(String::from).into();
        o
    })
    .await
    .map_err(DemoError::Simulators)?;
    let dir = tempfile::tempdir().map_err(DemoError::TempDir)?;
    let mut config = fleet.config(&dir.path().join("state.db"));
    config.mapping = demo_mapping();
    let mapping = config.mapping.clone();
    config.policy.field_precedence.insert(
        Field::Name,
        vec![
            ProviderKind::Privy,
            ProviderKind::Chatwoot,
            ProviderKind::Callbell,
            ProviderKind::Protocol,
        ],
    );

    // Import (from today on): everyone known anywhere is created in Privy; leads are created
    // in Callbell and Protocol too (Protocol requires a username, which a lead known only to
    // Chatwoot lacks).
    let mut importing = config.clone();
    let leads = crate::reconcile::CreateFilter {
        tags_any: ["lead".to_string()].into(),
        ..Default::default()
    };
    for (kind, filter) in [
        (
            ProviderKind::Privy,
            crate::reconcile::CreateFilter::default(),
        ),
        (ProviderKind::Callbell, leads.clone()),
        (ProviderKind::Protocol, leads),
    ] {
        importing.enable_create(kind, filter);
    }

    let mut sample = sample_people(people.max(12));
    // Person 2 has no phone anywhere: Chatwoot and Privy link by e-mail.
    sample[2].phone = None;
    for (i, p) in sample.iter().enumerate() {
        for kind in ProviderKind::ALL {
            if holds(kind, i) {
                fleet
                    .sim(kind)
                    .seed_person_at(i as u64 + 1, &stored(&mapping, kind, p));
            }
        }
    }
    // Tim is two people yesterday: one in Protocol and Callbell, one in Chatwoot and Privy.
    let tim_seq = sample.len() as u64 + 10;
    let tim_a = SeedPerson {
        name: Some("Tim Berners-Lee".into()),
        phone: Some("+14155550800".into()),
        username: Some("timbl".into()),
        ..SeedPerson::default()
    };
    let tim_b = SeedPerson {
        name: Some("Tim B. Lee".into()),
        phone: Some("+14155550801".into()),
        email: Some("tim@example.com".into()),
        ..SeedPerson::default()
    };
    for kind in [ProviderKind::Protocol, ProviderKind::Callbell] {
        fleet
            .sim(kind)
            .seed_person_at(tim_seq, &tim_a.stored_by(kind));
    }
    for kind in [ProviderKind::Chatwoot, ProviderKind::Privy] {
        fleet
            .sim(kind)
            .seed_person_at(tim_seq + 1, &tim_b.stored_by(kind));
    }
    let _ = writeln!(
        out,
        "contact-sync demo: four provider simulators on loopback, no tokens, no network."
    );
    for s in &fleet.sims {
        let _ = writeln!(
            out,
            "  {:<9} {}  ({} contacts)",
            s.kind.to_string(),
            s.base_url(),
            s.contacts().len()
        );
    }

    let engine = Engine::new(config).map_err(DemoError::Providers)?;
    let cancel = CancellationToken::new();
    let yesterday = engine
        .run(RunOptions::default(), &cancel, &Quiet)
        .await
        .map_err(DemoError::Sync)?;
    let _ = writeln!(
        out,
        "\nYesterday's sync linked {} people and recorded baselines ({} writes).",
        yesterday.plan.people.len(),
        yesterday.applied()
    );

    // Today's edits, made directly in the providers.
    let mut edits = Vec::new();
    let mut edit = |kind: ProviderKind, i: usize, what: &str, f: &dyn Fn(&mut SeedPerson)| {
        let mut p = sample[i].clone();
        f(&mut p);
        fleet
            .sim(kind)
            .seed_person_at(i as u64 + 1, &stored(&mapping, kind, &p));
        edits.push(format!("{kind}: {what}"));
    };
    edit(
        ProviderKind::Chatwoot,
        0,
        "Ada Lovelace renamed to \"Ada King\"",
        &|p| p.name = Some("Ada King".into()),
    );
    edit(
        ProviderKind::Chatwoot,
        2,
        "a phone number added (known only to Chatwoot)",
        &|p| p.phone = Some("+14155550999".into()),
    );
    edit(
        ProviderKind::Chatwoot,
        3,
        "e-mail changed (Privy's is set-once)",
        &|p| p.email = Some("edsger@newmail.example".into()),
    );
    edit(
        ProviderKind::Privy,
        4,
        "tags \"vip\" and \"newsletter\" added (neither Callbell nor Chatwoot knows \"newsletter\")",
        &|p| {
            p.tags = vec!["vip".into(), "newsletter".into()];
        },
    );
    edit(
        ProviderKind::Privy,
        5,
        "renamed to \"Donald E. Knuth\"",
        &|p| p.name = Some("Donald E. Knuth".into()),
    );
    edit(
        ProviderKind::Chatwoot,
        5,
        "renamed to \"Don Knuth\" (a conflict)",
        &|p| p.name = Some("Don Knuth".into()),
    );
    edit(
        ProviderKind::Callbell,
        6,
        "\"Loyalty Tier\" set to \"platinum\" (Privy's loyalty_tier, Chatwoot's tier)",
        &|p| {
            p.custom_fields
                .insert("loyalty_tier".into(), "platinum".into());
        },
    );
    let other_email = sample[8].email.clone();
    edit(
        ProviderKind::Privy,
        7,
        "took an e-mail another Chatwoot contact holds (fits two people)",
        &move |p| p.email = other_email.clone(),
    );
    let mut tim_b_today = tim_b.stored_by(ProviderKind::Chatwoot);
    tim_b_today.phone = tim_a.phone.clone();
    fleet
        .sim(ProviderKind::Chatwoot)
        .seed_person_at(tim_seq + 1, &tim_b_today);
    edits.push(
        "chatwoot: Tim B. Lee's phone changed to Tim Berners-Lee's (a join candidate, never a silent merge)"
            .into(),
    );
    // Two people known to one provider only.
    let seq = sample.len() as u64 + 1;
    let linus = SeedPerson {
        name: Some("Linus Torvalds".into()),
        email: Some("linus@example.com".into()),
        phone: Some("+14155550900".into()),
        tags: vec!["lead".into()],
        ..SeedPerson::default()
    };
    fleet
        .sim(ProviderKind::Chatwoot)
        .seed_person_at(seq, &linus.stored_by(ProviderKind::Chatwoot));
    edits.push("chatwoot: a new lead, Linus Torvalds (known only to Chatwoot)".into());
    let guido = SeedPerson {
        name: Some("Guido van Rossum".into()),
        phone: Some("+14155550901".into()),
        username: Some("guido".into()),
        ..SeedPerson::default()
    };
    fleet
        .sim(ProviderKind::Protocol)
        .seed_person_at(seq + 1, &guido.stored_by(ProviderKind::Protocol));
    edits.push("protocol: a new contact, Guido van Rossum (known only to Protocol)".into());
    let _ = writeln!(out, "\nToday's edits, made directly in the providers:");
    for e in &edits {
        let _ = writeln!(out, "  - {e}");
    }

    let engine = Engine::reusing(importing, Some(&engine)).map_err(DemoError::Providers)?;
    let diff = engine
        .run(
            RunOptions {
                diff: true,
                ..RunOptions::default()
            },
            &cancel,
            &Quiet,
        )
        .await
        .map_err(DemoError::Sync)?;
    let _ = writeln!(out, "\n$ contact-sync diff\n{}", diff.to_text(false));
    let review = crate::identity::review::Review::of_plan(&diff.plan, "live", None);
    let joins: Vec<&crate::identity::review::Item> = review
        .items
        .iter()
        .filter(|i| {
            i.kind == crate::identity::review::Kind::JoinCandidate
                && i.commands.iter().any(|c| c.contains(" link "))
        })
        .collect();
    let _ = writeln!(
        out,
        "$ contact-sync review   # {} items need a human; the join candidate:",
        review.items.len()
    );
    for item in joins {
        let _ = writeln!(out, "  {}", item.summary);
        for c in &item.commands {
            let _ = writeln!(out, "    $ {c}");
        }
    }
    let _ = writeln!(out);
    fleet.sims.iter().for_each(|s| s.clear_requests());
    let sync = engine
        .run(RunOptions::default(), &cancel, &Quiet)
        .await
        .map_err(DemoError::Sync)?;
    let _ = writeln!(out, "$ contact-sync sync");
    for line in sync.provider_lines() {
        let _ = writeln!(out, "  {line}");
    }
    let writes: usize = fleet.sims.iter().map(|s| s.writes().len()).sum();
    let _ = writeln!(
        out,
        "  ({writes} write requests received by the simulators, {} of them creates)",
        sync.created()
    );
    fleet.sims.iter().for_each(|s| s.clear_requests());
    let again = engine
        .run(
            RunOptions {
                diff: true,
                ..RunOptions::default()
            },
            &cancel,
            &Quiet,
        )
        .await
        .map_err(DemoError::Sync)?;
    let writes_after: usize = fleet.sims.iter().map(|s| s.writes().len()).sum();
    let _ = writeln!(
        out,
        "\n$ contact-sync diff   # again\n{} writes and {} creates planned ({} write requests sent by the dry run); lasting differences still reported: {} skipped, {} creates skipped, {} ambiguous, {} join candidates.",
        again.plan.updates.len(),
        again.plan.creates.len(),
        writes_after,
        again.plan.skipped.len(),
        again.plan.create_skips.len(),
        again.plan.ambiguous.len(),
        again.plan.join_candidates.len()
    );
    Ok(out)
}
