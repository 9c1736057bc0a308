//! Callbell's create and phone lookup against the Callbell simulator, over real HTTP on
//! loopback (issue 10, SPEC section 11): what the simulator ends up holding and what it was
//! sent.

use std::time::Duration;

use contact_sync::config::ProviderSpecific;
use contact_sync::model::{Field, FieldValue, NewContact, Normalizer, ProviderKind, Value};
use contact_sync::provider::{AnyProvider, Created, LookupKey, ProviderError};
use contact_sync::sim::{provider_config, Fault, FaultRule, Recorded, SeedPerson, Sim, SimOptions};
use reqwest::Method;
use serde_json::{json, Value as Json};

const CALLBELL: ProviderKind = ProviderKind::Callbell;

async fn sim() -> Sim {
    Sim::start(CALLBELL, SimOptions::for_provider(CALLBELL).unlimited())
        .await
        .expect("simulator starts")
}

fn client(sim: &Sim) -> AnyProvider {
    AnyProvider::build(&provider_config(sim), Normalizer::default()).expect("client builds")
}

/// A create as the planner hands it over: values normalised as the adapters read them.
fn new_contact(name: Option<&str>, phone: Option<&str>) -> NewContact {
    let mut fields = Vec::new();
    if let Some(n) = name {
        fields.push((Field::Name, FieldValue::Scalar(Some(Value::plain(n)))));
    }
    if let Some(p) = phone {
        fields.push((
            Field::Phone,
            FieldValue::Scalar(Normalizer::default().phone(p).0),
        ));
    }
    NewContact {
        provider: CALLBELL,
        fields,
    }
}

fn posts(sim: &Sim) -> Vec<Recorded> {
    sim.requests()
        .into_iter()
        .filter(|r| r.method == Method::POST)
        .collect()
}

/// Sends a raw `POST /contacts`, as a client that ignores Callbell's rules would.
async fn raw_create(sim: &Sim, body: Json) -> (u16, Json) {
    let resp = reqwest::Client::new()
        .post(format!("{}/contacts", sim.base_url()))
        .bearer_auth(sim.token())
        .json(&body)
        .send()
        .await
        .expect("simulator answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Json::Null))
}

#[tokio::test]
async fn create_sends_identifier_source_and_name_once_and_the_simulator_holds_it() {
    let sim = sim().await;
    let mut new = new_contact(Some("Ada Lovelace"), Some("+1 (415) 555-0101"));
    new.fields
        .push((Field::Tags, FieldValue::Set(["vip".to_string()].into())));
    new.fields.push((
        Field::CustomFields,
        FieldValue::Map([("city".to_string(), "London".to_string())].into()),
    ));
    let created = client(&sim).create(&new).await.expect("created");
    let Created::New(contact) = created else {
        panic!("expected a new contact, got {created:?}");
    };
    assert_eq!(
        contact.phone.as_ref().map(|v| v.key()),
        Some("+14155550101")
    );
    assert_eq!(
        contact.name.as_ref().map(|n| n.display()),
        Some("Ada Lovelace")
    );
    assert!(contact.tags.contains("vip"));

    let stored = sim.contacts();
    assert_eq!(stored.len(), 1);
    let s = &stored[0];
    assert_eq!(s["uuid"], json!(contact.id.native));
    assert_eq!(s["phoneNumber"], "14155550101");
    assert_eq!(s["source"], "whatsapp");
    assert_eq!(s["name"], "Ada Lovelace");
    assert_eq!(s["tags"], json!(["vip"]));
    assert_eq!(s["customFields"], json!({"city": "London"}));

    let sent = posts(&sim);
    assert_eq!(sent.len(), 1, "exactly one create: {sent:?}");
    assert_eq!(sent[0].path, "/v1/contacts");
    assert_eq!(
        sent[0].body,
        Some(
            json!({"identifier": "14155550101", "source": "whatsapp", "name": "Ada Lovelace",
            "tags": ["vip"], "custom_fields": {"city": "London"}})
        )
    );
}

#[tokio::test]
async fn the_configured_create_source_is_sent() {
    let sim = sim().await;
    let mut cfg = provider_config(&sim);
    if let ProviderSpecific::Callbell { create_source, .. } = &mut cfg.specific {
        *create_source = "telegram".into();
    }
    let callbell = AnyProvider::build(&cfg, Normalizer::default()).expect("client");
    callbell
        .create(&new_contact(Some("Ada"), Some("+14155550101")))
        .await
        .expect("created");
    assert_eq!(sim.contacts()[0]["source"], "telegram");
    assert_eq!(
        posts(&sim)[0].body.as_ref().map(|b| b["source"].clone()),
        Some(json!("telegram"))
    );
}

#[tokio::test]
async fn simulator_requires_identifier_source_and_name_and_known_tags() {
    // Callbell's answer to a second create for a number is not documented; this simulator
    // refuses it only when asked (by default it creates the duplicate).
    let mut opts = SimOptions::for_provider(CALLBELL).unlimited();
    opts.callbell_refuses_duplicate_phone = true;
    let sim = Sim::start(CALLBELL, opts).await.expect("simulator starts");
    let ok = json!({"identifier": "14155550101", "source": "whatsapp", "name": "Ada"});
    for (missing, needle) in [
        ("identifier", "identifier"),
        ("source", "source"),
        ("name", "name"),
    ] {
        let mut body = ok.clone();
        body.as_object_mut().map(|o| o.remove(missing));
        let (status, answer) = raw_create(&sim, body).await;
        assert_eq!(status, 422, "without {missing}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{answer}"
        );
    }
    let mut unknown_tag = ok.clone();
    unknown_tag["tags"] = json!(["vip", "not-in-account"]);
    let (status, answer) = raw_create(&sim, unknown_tag).await;
    assert_eq!(status, 422);
    assert!(answer.to_string().contains("not-in-account"), "{answer}");
    let mut unknown_field = ok.clone();
    unknown_field["custom_fields"] = json!({"shoe_size": "9"});
    assert_eq!(raw_create(&sim, unknown_field).await.0, 422);
    let mut plus = ok.clone();
    plus["identifier"] = json!("+14155550101");
    assert_eq!(
        raw_create(&sim, plus).await.0,
        422,
        "digits only for WhatsApp"
    );
    let mut email = ok.clone();
    email["email"] = json!("ada@example.com");
    assert_eq!(
        raw_create(&sim, email).await.0,
        422,
        "Callbell has no email"
    );
    assert!(sim.contacts().is_empty(), "nothing was created");

    assert_eq!(raw_create(&sim, ok.clone()).await.0, 200);
    assert_eq!(raw_create(&sim, ok).await.0, 422, "the number is taken");
    assert_eq!(sim.contacts().len(), 1);
}

#[tokio::test]
async fn the_adapter_refuses_unknown_tags_and_missing_fields_before_sending() {
    let sim = sim().await;
    let callbell = client(&sim);
    let mut unknown = new_contact(Some("Ada"), Some("+14155550101"));
    unknown.fields.push((
        Field::Tags,
        FieldValue::Set(["not-in-account".to_string()].into()),
    ));
    let err = callbell.create(&unknown).await.expect_err("unknown tag");
    assert!(err.to_string().contains("not-in-account"), "{err}");
    let err = callbell
        .create(&new_contact(None, Some("+14155550101")))
        .await
        .expect_err("no name");
    assert!(err.to_string().contains("name"), "{err}");
    let err = callbell
        .create(&new_contact(Some("Ada"), None))
        .await
        .expect_err("no phone");
    assert!(err.to_string().contains("phone"), "{err}");
    assert!(!err.outcome_unknown());
    assert!(sim.requests().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn find_by_key_looks_the_phone_up_and_knows_no_email() {
    let sim = sim().await;
    let ids = sim.seed_people(&[SeedPerson {
        name: Some("Grace Hopper".into()),
        phone: Some("+1 202 555 0199".into()),
        ..SeedPerson::default()
    }]);
    let callbell = client(&sim);
    let found = callbell
        .find_by_key(&LookupKey::Phone("+12025550199".into()))
        .await
        .expect("lookup")
        .expect("Callbell has a lookup");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id.native, ids[0]);
    let log = sim.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].path, "/v1/contacts/phone/12025550199");
    let none = callbell
        .find_by_key(&LookupKey::Phone("+14155550101".into()))
        .await
        .expect("a 404 is an answer");
    assert_eq!(none.map(|v| v.len()), Some(0));
    sim.clear_requests();
    let email = callbell
        .find_by_key(&LookupKey::Email("grace@navy.mil".into()))
        .await
        .expect("no email in Callbell");
    assert_eq!(email.map(|v| v.len()), Some(0));
    assert!(
        sim.requests().is_empty(),
        "no request for a key Callbell cannot hold"
    );
}

#[tokio::test]
async fn a_create_applied_before_the_connection_dropped_is_unknown_then_found_by_phone() {
    let sim = sim().await;
    sim.inject(
        FaultRule::always(Fault::ApplyThenDrop)
            .on(Method::POST)
            .times(1),
    );
    let callbell = client(&sim);
    let err = callbell
        .create(&new_contact(Some("Ada"), Some("+14155550101")))
        .await
        .expect_err("no answer");
    assert!(err.outcome_unknown(), "{err}");
    assert_eq!(sim.contacts().len(), 1, "the simulator applied it");
    assert_eq!(
        posts(&sim).len(),
        1,
        "sent exactly once, never retried blind"
    );
    let found = callbell
        .find_by_key(&LookupKey::Phone("+14155550101".into()))
        .await
        .expect("lookup")
        .expect("Callbell has a lookup");
    assert_eq!(found.len(), 1);
    assert_eq!(
        Some(found[0].id.native.as_str()),
        sim.contacts()[0]["uuid"].as_str()
    );
    assert_eq!(posts(&sim).len(), 1);
}

#[tokio::test]
async fn a_create_whose_answer_times_out_is_unknown_and_a_5xx_is_not_retried() {
    let sim = sim().await;
    sim.inject(
        FaultRule::always(Fault::ApplyThenStall(Duration::from_secs(2)))
            .on(Method::POST)
            .times(1),
    );
    let mut cfg = provider_config(&sim);
    cfg.http.timeout = Duration::from_millis(300);
    let callbell = AnyProvider::build(&cfg, Normalizer::default()).expect("client");
    let err = callbell
        .create(&new_contact(Some("Ada"), Some("+14155550101")))
        .await
        .expect_err("timed out");
    assert!(matches!(err, ProviderError::Timeout { .. }), "{err}");
    assert!(err.outcome_unknown());
    assert_eq!(posts(&sim).len(), 1);
    assert_eq!(sim.contacts().len(), 1);

    sim.inject(
        FaultRule::always(Fault::Status(502))
            .on(Method::POST)
            .times(1),
    );
    let err = callbell
        .create(&new_contact(Some("Grace"), Some("+12025550199")))
        .await
        .expect_err("502");
    assert!(err.outcome_unknown());
    assert_eq!(posts(&sim).len(), 2, "the 502 was not retried");
    assert_eq!(sim.contacts().len(), 1);
}

/// By default the simulator does what a client must not count on Callbell refusing: a second
/// create for a number the account holds makes a second contact, so a create sent twice shows
/// up as a duplicate in the tests instead of being caught by the simulator.
#[tokio::test]
async fn simulator_by_default_creates_a_duplicate_for_a_taken_number() {
    let sim = sim().await;
    let ok = json!({"identifier": "14155550101", "source": "whatsapp", "name": "Ada"});
    assert_eq!(raw_create(&sim, ok.clone()).await.0, 200);
    assert_eq!(raw_create(&sim, ok).await.0, 200);
    assert_eq!(sim.contacts().len(), 2);
}
