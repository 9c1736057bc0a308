//! Privy's create and key lookup against the Privy simulator, over real HTTP on loopback
//! (issue 10, SPEC section 11): what the simulator ends up holding and what it was sent.

use std::time::Duration;

use contact_sync::model::{Field, FieldValue, NewContact, Normalizer, ProviderKind, Value};
use contact_sync::provider::{AnyProvider, Created, LookupKey, ProviderError};
use contact_sync::sim::{provider_config, Fault, FaultRule, Recorded, SeedPerson, Sim, SimOptions};
use reqwest::Method;
use serde_json::{json, Value as Json};

const PRIVY: ProviderKind = ProviderKind::Privy;

async fn sim_with(f: impl FnOnce(&mut SimOptions)) -> Sim {
    let mut opts = SimOptions::for_provider(PRIVY).unlimited();
    f(&mut opts);
    Sim::start(PRIVY, opts).await.expect("simulator starts")
}

async fn sim() -> Sim {
    sim_with(|_| {}).await
}

fn client(sim: &Sim) -> AnyProvider {
    AnyProvider::build(&provider_config(sim), Normalizer::default()).expect("client builds")
}

/// A create as the planner hands it over: values normalised as the adapters read them.
fn new_contact(name: &str, email: Option<&str>, phone: Option<&str>) -> NewContact {
    let n = Normalizer::default();
    let mut fields = vec![(Field::Name, FieldValue::Scalar(Some(Value::plain(name))))];
    if let Some(e) = email {
        fields.push((Field::Email, FieldValue::Scalar(n.email(e).0)));
    }
    if let Some(p) = phone {
        fields.push((Field::Phone, FieldValue::Scalar(n.phone(p).0)));
    }
    NewContact {
        provider: PRIVY,
        fields,
    }
}

fn posts(sim: &Sim) -> Vec<Recorded> {
    sim.requests()
        .into_iter()
        .filter(|r| r.method == Method::POST)
        .collect()
}

/// Sends a raw request, as a client that ignores Privy's rules would.
async fn raw(sim: &Sim, method: Method, path: &str, body: Json) -> (u16, Json) {
    let url = format!("{}{path}", sim.base_url().as_str().trim_end_matches('/'));
    let resp = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(sim.token())
        .json(&body)
        .send()
        .await
        .expect("simulator answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Json::Null))
}

fn seed(sim: &Sim, name: &str, email: &str, phone: &str) -> String {
    sim.seed_people(&[SeedPerson {
        name: Some(name.into()),
        email: Some(email.into()),
        phone: Some(phone.into()),
        ..SeedPerson::default()
    }])
    .remove(0)
}

#[tokio::test]
async fn create_sends_one_post_without_consent_and_the_simulator_holds_the_contact() {
    let sim = sim().await;
    let mut new = new_contact(
        "Ada King Lovelace",
        Some("Ada@Example.com"),
        Some("(415) 555-0101"),
    );
    new.fields
        .push((Field::Tags, FieldValue::Set(["vip".to_string()].into())));
    new.fields.push((
        Field::CustomFields,
        FieldValue::Map([("tier".to_string(), "gold".to_string())].into()),
    ));
    let created = client(&sim).create(&new).await.expect("created");
    let Created::New(contact) = created else {
        panic!("expected a new contact, got {created:?}");
    };
    assert_eq!(
        contact.email.as_ref().map(|v| v.key()),
        Some("ada@example.com")
    );
    assert_eq!(
        contact.phone.as_ref().map(|v| v.key()),
        Some("+14155550101")
    );
    assert_eq!(
        contact.name.as_ref().map(|n| n.display()),
        Some("Ada King Lovelace")
    );

    let stored = sim.contacts();
    assert_eq!(stored.len(), 1);
    let s = &stored[0];
    assert_eq!(s["id"], json!(contact.id.native));
    assert_eq!(s["first_name"], "Ada King");
    assert_eq!(s["last_name"], "Lovelace");
    assert_eq!(s["email"], "Ada@Example.com");
    assert_eq!(s["phone_number"], "+14155550101");
    assert_eq!(s["tags"], json!(["vip"]));
    assert_eq!(s["custom_fields"], json!({"tier": "gold"}));
    assert!(
        s["sms_consent"].is_null() && s["email_consent"].is_null(),
        "{s}"
    );

    let sent = posts(&sim);
    assert_eq!(sent.len(), 1, "exactly one create: {sent:?}");
    assert_eq!(sent[0].path, "/v1/contacts");
    assert_eq!(sent[0].status, 201);
    assert_eq!(
        sent[0].body,
        Some(json!({
            "first_name": "Ada King", "last_name": "Lovelace", "email": "Ada@Example.com",
            "phone_number": "+14155550101", "tags": ["vip"], "custom_fields": {"tier": "gold"}
        }))
    );
    assert_eq!(sim.welcome_sms_sent(), 0);
}

#[tokio::test]
async fn simulator_requires_an_email_or_phone_and_rejects_old_consent_names() {
    let sim = sim().await;
    let (status, body) = raw(
        &sim,
        Method::POST,
        "/v1/contacts",
        json!({"first_name": "Ada"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed");
    let (status, body) = raw(
        &sim,
        Method::POST,
        "/v1/contacts",
        json!({"email": "a@example.com", "phone_permission": "subscribed"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("sms_consent"), "{body}");
    let (status, _) = raw(
        &sim,
        Method::POST,
        "/v1/contacts",
        json!({"phone_number": "415-555-0101"}),
    )
    .await;
    assert_eq!(status, 422, "a phone that is not E.164 is rejected");
    assert!(sim.contacts().is_empty());
    assert_eq!(sim.welcome_sms_sent(), 0);
}

#[tokio::test]
async fn the_adapter_refuses_a_create_without_email_or_phone_before_sending() {
    let sim = sim().await;
    let err = client(&sim)
        .create(&new_contact("Ada", None, None))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("email or a phone_number"), "{err}");
    assert!(!err.outcome_unknown());
    assert!(sim.requests().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn the_welcome_sms_counter_counts_a_create_with_subscribed_sms_consent() {
    // The counter the other tests assert zero on can be non-zero: a client that sent consent
    // would be caught.
    let sim = sim().await;
    let (status, _) = raw(
        &sim,
        Method::POST,
        "/v1/contacts",
        json!({"phone_number": "+14155550101", "sms_consent": "subscribed"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(sim.welcome_sms_sent(), 1);
}

#[tokio::test]
async fn a_taken_email_links_the_existing_contact_named_in_the_conflict() {
    let sim = sim().await;
    let existing = seed(&sim, "Grace Hopper", "grace@navy.mil", "+12025550199");
    let new = new_contact(
        "Grace Hopper",
        Some("GRACE@navy.mil"),
        Some("(415) 555-0101"),
    );
    let created = client(&sim).create(&new).await.expect("linked, not failed");
    let Created::Existing(contact) = created else {
        panic!("expected the existing contact, got {created:?}");
    };
    assert_eq!(contact.id.native, existing);
    assert_eq!(sim.contacts().len(), 1, "no duplicate");
    assert_eq!(sim.welcome_sms_sent(), 0);
    let log = sim.requests();
    let sent = posts(&sim);
    assert_eq!(sent.len(), 1, "the create is not sent again: {log:?}");
    assert_eq!(sent[0].status, 409);
    assert!(
        log.iter()
            .any(|r| r.method == Method::GET && r.path == format!("/v1/contacts/{existing}")),
        "the contact named in the conflict is read: {log:?}"
    );
}

#[tokio::test]
async fn a_conflict_without_an_id_is_resolved_through_the_list_filter() {
    let sim = sim_with(|o| o.privy_conflict_id_in_body = false).await;
    seed(&sim, "Someone Else", "other@example.com", "+12025550100");
    let existing = seed(&sim, "Grace Hopper", "grace@navy.mil", "+12025550199");
    // The phone is the key taken here; the e-mail is new.
    let new = new_contact(
        "Grace Hopper",
        Some("g.hopper@example.com"),
        Some("+1 202 555 0199"),
    );
    let created = client(&sim).create(&new).await.expect("linked");
    let Created::Existing(contact) = created else {
        panic!("expected the existing contact, got {created:?}");
    };
    assert_eq!(contact.id.native, existing);
    assert_eq!(sim.contacts().len(), 2, "no duplicate");
    assert_eq!(posts(&sim).len(), 1);
    let filters: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::GET)
        .filter_map(|r| r.query)
        .collect();
    assert!(
        filters
            .iter()
            .any(|q| q.contains("email=g.hopper%40example.com")),
        "{filters:?}"
    );
    assert!(
        filters
            .iter()
            .any(|q| q.contains("phone_number=%2B12025550199")),
        "{filters:?}"
    );
    assert_eq!(sim.welcome_sms_sent(), 0);
}

#[tokio::test]
async fn a_deleted_contact_holding_the_key_is_restored_not_duplicated() {
    let sim = sim().await;
    let old = seed(&sim, "Ada Lovelace", "ada@example.com", "+14155550101");
    let (status, _) = raw(
        &sim,
        Method::DELETE,
        &format!("/v1/contacts/{old}"),
        json!({}),
    )
    .await;
    assert_eq!(status, 204);
    assert!(sim.contacts().is_empty());
    let created = client(&sim)
        .create(&new_contact("Ada Lovelace", Some("ada@example.com"), None))
        .await
        .expect("restored");
    let Created::New(contact) = created else {
        panic!("a restore is not a conflict: {created:?}");
    };
    assert_eq!(contact.id.native, old, "the same contact came back");
    assert_eq!(sim.contacts().len(), 1);
    assert!(sim.deleted_contacts().is_empty());
    assert_eq!(sim.welcome_sms_sent(), 0);
}

#[tokio::test]
async fn a_create_applied_before_the_connection_dropped_is_unknown_then_found_by_key() {
    let sim = sim().await;
    sim.inject(
        FaultRule::always(Fault::ApplyThenDrop)
            .on(Method::POST)
            .times(1),
    );
    let privy = client(&sim);
    let new = new_contact(
        "Ada Lovelace",
        Some("Ada@Example.com"),
        Some("+14155550101"),
    );
    let err = privy.create(&new).await.expect_err("no answer");
    assert!(err.outcome_unknown(), "{err}");
    assert_eq!(sim.contacts().len(), 1, "the simulator applied it");
    assert_eq!(
        posts(&sim).len(),
        1,
        "sent exactly once, never retried blind"
    );

    let found = privy
        .find_by_key(&LookupKey::Email("ada@example.com".into()))
        .await
        .expect("lookup")
        .expect("Privy has a lookup");
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].id.native,
        sim.contacts()[0]["id"].as_str().unwrap_or_default()
    );
    let by_phone = privy
        .find_by_key(&LookupKey::Phone("+14155550101".into()))
        .await
        .expect("lookup")
        .expect("Privy has a lookup");
    assert_eq!(by_phone.len(), 1);
    let nobody = privy
        .find_by_key(&LookupKey::Email("nobody@example.com".into()))
        .await
        .expect("lookup");
    assert_eq!(nobody.map(|v| v.len()), Some(0));
    assert_eq!(posts(&sim).len(), 1);
}

#[tokio::test]
async fn a_create_whose_answer_times_out_is_unknown_and_not_resent() {
    let sim = sim().await;
    sim.inject(
        FaultRule::always(Fault::ApplyThenStall(Duration::from_secs(2)))
            .on(Method::POST)
            .times(1),
    );
    let mut cfg = provider_config(&sim);
    cfg.http.timeout = Duration::from_millis(300);
    let privy = AnyProvider::build(&cfg, Normalizer::default()).expect("client");
    let err = privy
        .create(&new_contact("Ada", Some("ada@example.com"), None))
        .await
        .expect_err("timed out");
    assert!(matches!(err, ProviderError::Timeout { .. }), "{err}");
    assert!(err.outcome_unknown());
    assert_eq!(posts(&sim).len(), 1);
    let found = privy
        .find_by_key(&LookupKey::Email("ada@example.com".into()))
        .await
        .expect("lookup");
    assert_eq!(found.map(|v| v.len()), Some(1));
}

#[tokio::test]
async fn a_server_error_on_create_is_not_retried_but_a_429_is() {
    let sim = sim().await;
    sim.inject(
        FaultRule::always(Fault::Status(503))
            .on(Method::POST)
            .times(1),
    );
    let privy = client(&sim);
    let new = new_contact("Ada", Some("ada@example.com"), None);
    let err = privy.create(&new).await.expect_err("503");
    assert!(err.outcome_unknown(), "a 5xx may have been applied: {err}");
    assert_eq!(posts(&sim).len(), 1, "not retried");
    assert!(sim.contacts().is_empty());

    sim.clear_requests();
    sim.inject(
        FaultRule::always(Fault::RateLimited {
            retry_after: Some(0),
        })
        .on(Method::POST)
        .times(1),
    );
    let created = privy.create(&new).await.expect("429 then created");
    assert!(matches!(created, Created::New(_)));
    let statuses: Vec<u16> = posts(&sim).iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 201]);
    assert_eq!(sim.contacts().len(), 1);
}

#[tokio::test]
async fn a_lookup_keeps_only_records_holding_the_key() {
    // A server that ignored the filter would answer with every contact; none of them may be
    // taken for the person.
    let sim = sim().await;
    seed(&sim, "Someone Else", "other@example.com", "+12025550100");
    let privy = client(&sim);
    let url = format!("{}v1/contacts?email=x%40example.com", sim.base_url());
    let unfiltered: Json = reqwest::Client::new()
        .get(url)
        .bearer_auth(sim.token())
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("json");
    assert_eq!(unfiltered["data"], json!([]), "the simulator filters");
    // Make the simulator ignore the filter by answering the unfiltered first page.
    let everything = json!({"data": sim.contacts(), "pagination":
        {"page": 1, "per_page": 100, "total_count": 1, "total_pages": 1}});
    sim.inject(
        FaultRule::always(Fault::Body(200, everything.to_string().into()))
            .on(Method::GET)
            .path("/v1/contacts"),
    );
    let found = privy
        .find_by_key(&LookupKey::Email("x@example.com".into()))
        .await
        .expect("lookup");
    assert_eq!(found.map(|v| v.len()), Some(0));
}

#[tokio::test]
async fn every_lost_answer_to_a_create_is_unknown_and_settled_by_the_lookup() {
    // Faults that let the simulator apply the create, and one that does not: either way the
    // outcome is unknown to the client, the create is sent once, and the lookup tells.
    for (fault, applied) in [
        (Fault::ApplyThenDrop, true),
        (Fault::ResetMidBody, true),
        (Fault::Truncated, true),
        (Fault::Drop, false),
    ] {
        let sim = sim().await;
        let label = format!("{fault:?}");
        sim.inject(FaultRule::always(fault).on(Method::POST).times(1));
        let privy = client(&sim);
        let err = privy
            .create(&new_contact("Ada", Some("ada@example.com"), None))
            .await
            .expect_err("no usable answer");
        assert!(err.outcome_unknown(), "{label}: {err}");
        assert_eq!(posts(&sim).len(), 1, "{label}: sent once");
        assert_eq!(sim.contacts().len(), usize::from(applied), "{label}");
        let found = privy
            .find_by_key(&LookupKey::Email("ada@example.com".into()))
            .await
            .expect("lookup")
            .expect("Privy has a lookup");
        assert_eq!(found.len(), usize::from(applied), "{label}");
        assert_eq!(sim.welcome_sms_sent(), 0);
    }
}

#[tokio::test]
async fn a_conflict_naming_a_contact_without_the_key_is_checked_and_the_filter_decides() {
    let sim = sim().await;
    let unrelated = seed(&sim, "Someone Else", "other@example.com", "+12025550100");
    let holder = seed(&sim, "Grace Hopper", "grace@navy.mil", "+12025550199");
    // A 409 whose body names a contact that does not hold the key must not link that contact.
    let body = json!({"error": {"code": "conflict", "message": "taken", "existing_id": unrelated}});
    sim.inject(
        FaultRule::always(Fault::Body(409, body.to_string().into()))
            .on(Method::POST)
            .times(1),
    );
    let created = client(&sim)
        .create(&new_contact("Grace Hopper", Some("grace@navy.mil"), None))
        .await
        .expect("linked");
    let Created::Existing(contact) = created else {
        panic!("expected the existing contact, got {created:?}");
    };
    assert_eq!(
        contact.id.native, holder,
        "the contact holding the e-mail, not {unrelated}"
    );
    assert_eq!(sim.contacts().len(), 2);

    // A 409 for a key nobody holds is a failure that says so, not a guess.
    let body = json!({"error": {"code": "conflict", "message": "taken"}});
    sim.inject(
        FaultRule::always(Fault::Body(409, body.to_string().into()))
            .on(Method::POST)
            .times(1),
    );
    let err = client(&sim)
        .create(&new_contact("Nobody", Some("nobody@example.com"), None))
        .await
        .expect_err("nobody holds it");
    assert!(
        matches!(err, ProviderError::Rejected { status: 409, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("could be found"), "{err}");
    assert!(!err.outcome_unknown());
}
