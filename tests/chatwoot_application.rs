//! Chatwoot in its default application-API mode, against the Chatwoot simulator over real HTTP
//! on loopback: listing while the simulator shuffles sort ties and contacts are edited during
//! the scan, pages that shift under a concurrent edit or create, and creating contacts.
//!
//! Each behaviour is the one SPEC section 13 reads from Chatwoot 4.13.0's source; the
//! simulator cites the file beside each handler (`src/sim/chatwoot.rs`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use contact_sync::config::{ProviderConfig, ProviderSpecific};
use contact_sync::model::{Field, FieldValue, NewContact, Normalizer, ProviderKind, Value};
use contact_sync::provider::{list_all, AnyProvider, Created, ProviderError};
use contact_sync::sim::{provider_config, Fault, FaultRule, SeedPerson, Sim, SimOptions, Store};
use serde_json::{json, Value as Json};

const KIND: ProviderKind = ProviderKind::Chatwoot;
/// Seeded contacts are created from this instant on (the simulator's seed epoch).
const SEED_EPOCH: i64 = 1_767_225_600;

async fn start() -> Sim {
    Sim::start(KIND, SimOptions::for_provider(KIND).unlimited())
        .await
        .expect("simulator starts")
}

/// The simulator's own config (application mode, `sort = "created_at"`), with `sort` replaced.
fn config(sim: &Sim, sort: &str) -> ProviderConfig {
    let mut cfg = provider_config(sim);
    if let ProviderSpecific::Chatwoot { sort: s, .. } = &mut cfg.specific {
        *s = sort.to_owned();
    }
    cfg
}

fn build(cfg: &ProviderConfig) -> AnyProvider {
    AnyProvider::build(cfg, Normalizer::new("US").expect("region")).expect("adapter builds")
}

fn person(i: u64) -> SeedPerson {
    SeedPerson {
        name: Some(format!("Person {i:03}")),
        email: Some(format!("person{i}@example.com")),
        phone: Some(format!("+1415555{i:04}")),
        ..SeedPerson::default()
    }
}

/// splitmix64: a small deterministic generator, so each seeded run is reproducible.
fn next(state: &AtomicU64) -> u64 {
    let mut z = state
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What one seeded listing run ended in.
enum Run {
    /// Every contact exactly once; with the disturbance the listing saw.
    Complete { disturbed: usize },
    /// The re-scan bound was hit and the listing said so.
    Incomplete,
}

/// Seeds `n` contacts (created in bulk: four at a time share a `created_at`, as an import
/// does), then lists them with `sort` while the simulator orders ties by `seed` and, before
/// each list request after the first, two contacts are renamed (10% of `n` in all).
async fn seeded_run(n: u64, sort: &str, seed: u64) -> Run {
    let sim = start().await;
    let ids = sim.seed_people(&(1..=n).map(person).collect::<Vec<_>>());
    for (i, id) in ids.iter().enumerate() {
        let batch = i64::try_from(i / 4).expect("small");
        assert!(sim.modify(id, |c| c["created_at"] = json!(SEED_EPOCH + batch * 60)));
    }
    sim.configure(|o| o.chatwoot.tie_seed = seed);
    let rng = Arc::new(AtomicU64::new(seed));
    let edited = Arc::new(AtomicU64::new(0));
    let (hook_rng, hook_edited) = (rng.clone(), edited.clone());
    let hook = move |store: &mut Store| {
        for _ in 0..2 {
            let r = next(&hook_rng);
            let id = (r % n + 1).to_string();
            if let Some(c) = store.get_mut(&id) {
                // A user renames the contact: under `sort=name` it moves to another page.
                c["name"] = json!(format!("{:08x} renamed", r >> 32));
                c["updated_at"] = json!(SEED_EPOCH + 86_400);
                hook_edited.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let edits = u32::try_from(n / 10 / 2).expect("small");
    sim.inject(
        FaultRule::always(Fault::Mutate(Arc::new(hook)))
            .on(reqwest::Method::GET)
            .path("/api/v1/accounts/7/contacts")
            .after(1)
            .times(edits),
    );
    let provider = build(&config(&sim, sort));
    let result = list_all(&provider).await;
    assert_eq!(
        edited.load(Ordering::Relaxed),
        n / 10,
        "10% of the contacts were edited during the scan"
    );
    // Every list request asked for the configured sort.
    for r in sim
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/contacts"))
    {
        let q = r.query.unwrap_or_default();
        assert!(q.contains(&format!("sort={sort}")), "{q}");
    }
    match result {
        Ok(listing) => {
            let listed: Vec<&str> = listing
                .contacts
                .iter()
                .map(|c| c.id.native.as_str())
                .collect();
            let unique: BTreeSet<&str> = listed.iter().copied().collect();
            assert_eq!(listed.len(), unique.len(), "each contact once: {listed:?}");
            let stored: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
            assert_eq!(unique, stored, "every contact listed (seed {seed}, {sort})");
            Run::Complete {
                disturbed: listing.duplicates + listing.moved + (listing.scans - 1),
            }
        }
        Err(e) => {
            let text = e.to_string();
            assert!(
                matches!(e, ProviderError::Protocol { .. })
                    && text.contains("listing is incomplete")
                    && text.contains("3 scans"),
                "seed {seed}, {sort}: {text}"
            );
            Run::Incomplete
        }
    }
}

#[tokio::test]
async fn listing_survives_shuffled_ties_and_edits_during_the_scan_over_20_seeded_runs() {
    for sort in ["created_at", "name"] {
        let (mut complete, mut incomplete, mut disturbed_runs) = (0, 0, 0);
        for seed in 1..=20u64 {
            match seeded_run(120, sort, seed * 7919).await {
                Run::Complete { disturbed } => {
                    complete += 1;
                    disturbed_runs += usize::from(disturbed > 0);
                }
                Run::Incomplete => incomplete += 1,
            }
        }
        eprintln!(
            "{sort}: {complete} complete ({disturbed_runs} disturbed), {incomplete} incomplete"
        );
        assert_eq!(complete + incomplete, 20);
        assert!(
            complete >= 10,
            "{sort}: only {complete} of 20 listings completed"
        );
        // The test proves something only if the simulator really disturbed the scans.
        assert!(
            disturbed_runs + incomplete >= 5,
            "{sort}: the simulator shifted pages in only {disturbed_runs} runs"
        );
    }
}

/// GETs one list page with `sort` and returns the ids it holds.
async fn page_ids(sim: &Sim, page: u32, sort: &str) -> Vec<u64> {
    let url = format!(
        "{}api/v1/accounts/7/contacts?page={page}&sort={sort}",
        sim.base_url()
    );
    let body: Json = reqwest::Client::new()
        .get(url)
        .header("api_access_token", sim.token())
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    body["payload"]
        .as_array()
        .expect("payload")
        .iter()
        .filter_map(|c| c["id"].as_u64())
        .collect()
}

#[tokio::test]
async fn simulator_pages_shift_when_a_contact_is_edited_or_created_mid_scan() {
    // `fetch_contacts` pages by offset over a query that runs again for every page
    // (`app/controllers/api/v1/accounts/contacts_controller.rb`), so a change between two
    // page requests moves the rows after it.
    let sim = start().await;
    sim.seed_people(&(1..=30).map(person).collect::<Vec<_>>());
    let first = page_ids(&sim, 1, "name").await;
    assert_eq!(first, (1..=15).collect::<Vec<_>>());
    // Contact 20 (on page 2) is renamed to sort first: everything before it moves down one.
    assert!(sim.modify("20", |c| c["name"] = json!("Aaron")));
    let second = page_ids(&sim, 2, "name").await;
    assert_eq!(second[0], 15, "the last contact of page 1 is served again");
    assert!(
        !second.contains(&20),
        "the edited contact is seen on no page"
    );

    // A contact created mid-scan that sorts early shifts the pages the same way.
    let first = page_ids(&sim, 1, "name").await;
    let created = reqwest::Client::new()
        .post(format!("{}api/v1/accounts/7/contacts", sim.base_url()))
        .header("api_access_token", sim.token())
        .json(&json!({"name": "Aaaa", "email": "aaaa@example.com"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), 200);
    let second = page_ids(&sim, 2, "name").await;
    assert_eq!(
        second[0], first[14],
        "the last contact of page 1 is served again"
    );

    // Newest first (`-created_at`): a create moves every row down one.
    let first = page_ids(&sim, 1, "-created_at").await;
    sim.seed_person_at(40, &person(40));
    assert!(sim.modify("40", |c| c["created_at"] =
        json!(SEED_EPOCH + 1_000_000_000)));
    let second = page_ids(&sim, 2, "-created_at").await;
    assert_eq!(second[0], first[14]);

    // `created_at` (the default) is never edited: an edit leaves the pages where they were.
    let first = page_ids(&sim, 1, "created_at").await;
    assert!(sim.modify("5", |c| c["name"] = json!("Zed")));
    let second = page_ids(&sim, 2, "created_at").await;
    assert!(second.iter().all(|id| !first.contains(id)));

    // Ties have no tie-breaker: the same query orders them differently from one call to the
    // next (`order_on_name` in `app/models/contact.rb` orders by name only).
    for id in 1..=30u64 {
        assert!(sim.modify(&id.to_string(), |c| c["name"] = json!("Same Name")));
    }
    let a = page_ids(&sim, 1, "name").await;
    let b = page_ids(&sim, 1, "name").await;
    assert_ne!(a, b, "ties come back in another order");
}

fn scalar(v: Option<Value>) -> FieldValue {
    FieldValue::Scalar(v)
}

fn new_contact(name: &str, email: &str, phone: &str) -> NewContact {
    let n = Normalizer::default();
    NewContact {
        provider: KIND,
        fields: vec![
            (Field::Name, scalar(n.text(name))),
            (Field::Email, scalar(n.email(email).0)),
            (Field::Phone, scalar(n.phone(phone).0)),
        ],
    }
}

#[tokio::test]
async fn create_makes_a_contact_with_a_session_in_the_configured_inbox() {
    let sim = start().await;
    let provider = build(&config(&sim, "created_at"));
    let created = provider
        .create(&new_contact(
            "Ada Lovelace",
            "Ada@Example.com",
            "+14155550101",
        ))
        .await
        .expect("created");
    let Created::New(contact) = created else {
        panic!("a new contact: {created:?}");
    };
    let id = contact.id.native.clone();
    let stored = sim.contact(&id).expect("stored");
    assert_eq!(stored["name"], "Ada Lovelace");
    assert_eq!(stored["email"], "ada@example.com", "stored downcased");
    assert_eq!(stored["phone_number"], "+14155550101");
    let inboxes = stored["contact_inboxes"].as_array().expect("sessions");
    assert_eq!(inboxes.len(), 1);
    assert_eq!(inboxes[0]["inbox"]["id"], 3, "the configured inbox_id");
    let source_id = inboxes[0]["source_id"].as_str().expect("source_id");
    assert!(!source_id.is_empty());
    // One POST, carrying inbox_id, and nothing else written.
    let writes = sim.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].path, "/api/v1/accounts/7/contacts");
    let body = writes[0].body.as_ref().expect("JSON body");
    assert_eq!(body["inbox_id"], 3);
    assert_eq!(body["name"], "Ada Lovelace");
    // The record returned is the one the next listing shows.
    let listed = list_all(&provider).await.expect("listing").contacts;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id.native, id);
    assert_eq!(listed[0].email, contact.email);
}

#[tokio::test]
async fn create_with_a_taken_email_or_phone_is_a_422_and_creates_nothing() {
    let sim = start().await;
    sim.seed_people(&[person(1)]);
    let provider = build(&config(&sim, "created_at"));
    // E-mail uniqueness is case-insensitive (`validates :email, ... case_sensitive: false`).
    for (email, phone, taken) in [
        (
            "PERSON1@example.com",
            "+14155559999",
            "Email has already been taken",
        ),
        (
            "fresh@example.com",
            "+14155550001",
            "Phone number has already been taken",
        ),
    ] {
        let err = provider
            .create(&new_contact("Someone", email, phone))
            .await
            .expect_err("taken");
        match &err {
            ProviderError::Rejected { status: 422, .. } => {}
            other => panic!("a 422 rejection, got {other:?}"),
        }
        assert!(!err.outcome_unknown(), "a 422 is a known outcome");
        assert!(!err.is_fatal_for_provider(), "a record-level failure");
        assert!(err.to_string().contains(taken), "{err}");
        let last = sim.requests().pop().expect("sent");
        assert_eq!((last.method, last.status), (reqwest::Method::POST, 422));
    }
    assert_eq!(sim.contacts().len(), 1, "nothing was created");
    assert_eq!(sim.writes().len(), 2, "one attempt each, no retry");
}

#[tokio::test]
async fn a_create_applied_before_the_connection_dropped_is_outcome_unknown_and_not_resent() {
    let sim = start().await;
    let mut cfg = config(&sim, "created_at");
    cfg.http.max_retries = 3;
    let provider = build(&cfg);
    sim.inject(
        FaultRule::always(Fault::ResetMidBody)
            .on(reqwest::Method::POST)
            .path("/api/v1/accounts/7/contacts")
            .times(1),
    );
    let err = provider
        .create(&new_contact(
            "Ada Lovelace",
            "ada@example.com",
            "+14155550101",
        ))
        .await
        .expect_err("the answer was lost");
    assert!(err.outcome_unknown(), "{err:?}");
    assert_eq!(sim.contacts().len(), 1, "applied once, never sent again");
    assert_eq!(
        sim.writes().len(),
        1,
        "a create is sent once even with max_retries = 3"
    );
}
