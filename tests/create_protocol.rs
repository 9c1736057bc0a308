//! Protocol's create against the Protocol simulator, over real HTTP on loopback (issue 10,
//! SPEC section 11): what the simulator ends up holding and what it was sent.

use contact_sync::model::{Field, FieldValue, NewContact, Normalizer, ProviderKind, Value};
use contact_sync::provider::{list_all, AnyProvider, Created, LookupKey};
use contact_sync::sim::{provider_config, Fault, FaultRule, Recorded, SeedPerson, Sim, SimOptions};
use reqwest::Method;
use serde_json::{json, Value as Json};

const PROTOCOL: ProviderKind = ProviderKind::Protocol;

async fn sim() -> Sim {
    Sim::start(PROTOCOL, SimOptions::for_provider(PROTOCOL).unlimited())
        .await
        .expect("simulator starts")
}

fn client(sim: &Sim) -> AnyProvider {
    AnyProvider::build(&provider_config(sim), Normalizer::default()).expect("client builds")
}

fn scalar(s: &str) -> FieldValue {
    FieldValue::Scalar(Some(Value::plain(s)))
}

/// A create as the planner hands it over: values normalised as the adapters read them.
fn new_contact(username: Option<&str>, phone: Option<&str>) -> NewContact {
    let mut fields = vec![(Field::Name, scalar("Frank McCallister"))];
    if let Some(p) = phone {
        fields.push((
            Field::Phone,
            FieldValue::Scalar(Normalizer::default().phone(p).0),
        ));
    }
    if let Some(u) = username {
        fields.push((Field::Username, scalar(u)));
    }
    NewContact {
        provider: PROTOCOL,
        fields,
    }
}

fn posts(sim: &Sim) -> Vec<Recorded> {
    sim.requests()
        .into_iter()
        .filter(|r| r.method == Method::POST)
        .collect()
}

async fn raw_create(sim: &Sim, body: Json) -> (u16, Json) {
    let resp = reqwest::Client::new()
        .post(format!("{}v1/contacts", sim.base_url()))
        .bearer_auth(sim.token())
        .json(&body)
        .send()
        .await
        .expect("simulator answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Json::Null))
}

#[tokio::test]
async fn create_sends_one_post_and_the_simulator_holds_the_contact() {
    let sim = sim().await;
    sim.seed_people(&[SeedPerson {
        name: Some("Someone Else".into()),
        phone: Some("+12025550100".into()),
        ..SeedPerson::default()
    }]);
    let mut new = new_contact(Some("FrankMcCallister"), Some("1-800-759-3000"));
    new.fields.push((
        Field::AvatarUrl,
        scalar("https://assets.protocol.chat/avatars/frank.jpg"),
    ));
    let protocol = client(&sim);
    let created = protocol.create(&new).await.expect("created");
    let Created::New(contact) = created else {
        panic!("expected a new contact, got {created:?}");
    };
    assert_eq!(
        contact.phone.as_ref().map(|v| v.key()),
        Some("+18007593000")
    );
    assert_eq!(
        contact.username.as_ref().map(|v| v.raw()),
        Some("FrankMcCallister")
    );
    assert_eq!(
        contact.name.as_ref().map(|n| n.display()),
        Some("Frank McCallister")
    );

    let held = sim
        .contact(&contact.id.native)
        .expect("the simulator holds it");
    assert_eq!(held["username"], "FrankMcCallister");
    assert_eq!(held["phone_number"], "+18007593000");
    assert_eq!(held["display_name"], "Frank McCallister");
    assert_eq!(
        held["avatar_url"],
        "https://assets.protocol.chat/avatars/frank.jpg"
    );
    assert_eq!(sim.contacts().len(), 2);

    let sent = posts(&sim);
    assert_eq!(sent.len(), 1, "exactly one create: {sent:?}");
    assert_eq!(sent[0].path, "/v1/contacts");
    assert_eq!(sent[0].status, 201);
    assert_eq!(
        sent[0].body,
        Some(
            json!({"username": "FrankMcCallister", "phone_number": "+18007593000",
            "display_name": "Frank McCallister",
            "avatar_url": "https://assets.protocol.chat/avatars/frank.jpg"})
        )
    );
    // Protocol has no lookup: the fresh listing is the answer, and it holds the new contact.
    let lookup = protocol
        .find_by_key(&LookupKey::Phone("+18007593000".into()))
        .await
        .expect("no request needed");
    assert!(lookup.is_none());
    let listed = list_all(&protocol).await.expect("list");
    assert!(listed.contacts.iter().any(|c| c.id == contact.id));
}

#[tokio::test]
async fn simulator_requires_username_and_phone_number() {
    let sim = sim().await;
    let (status, body) = raw_create(&sim, json!({"username": "frank"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("phone_number"));
    let (status, body) = raw_create(&sim, json!({"phone_number": "+18007593000"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("username"));
    let (status, _) = raw_create(
        &sim,
        json!({"username": "frank", "phone_number": "+18007593000", "email": "f@example.com"}),
    )
    .await;
    assert_eq!(status, 400, "Protocol has no e-mail");
    assert!(sim.contacts().is_empty(), "nothing was created");
}

#[tokio::test]
async fn the_adapter_refuses_a_create_without_username_or_phone_before_sending() {
    let sim = sim().await;
    let protocol = client(&sim);
    let err = protocol
        .create(&new_contact(None, Some("+18007593000")))
        .await
        .expect_err("no username");
    assert!(err.to_string().contains("username"), "{err}");
    let err = protocol
        .create(&new_contact(Some("frank"), None))
        .await
        .expect_err("no phone");
    assert!(err.to_string().contains("phone_number"), "{err}");
    assert!(!err.outcome_unknown());
    assert!(sim.requests().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn a_create_is_sent_once_even_when_its_outcome_is_unknown() {
    let sim = sim().await;
    sim.inject(
        FaultRule::always(Fault::ApplyThenDrop)
            .on(Method::POST)
            .times(1),
    );
    let protocol = client(&sim);
    let err = protocol
        .create(&new_contact(Some("frank"), Some("+18007593000")))
        .await
        .expect_err("no answer");
    assert!(err.outcome_unknown(), "{err}");
    assert_eq!(posts(&sim).len(), 1, "never retried blind");
    let listed = list_all(&protocol).await.expect("list");
    assert_eq!(
        listed.contacts.len(),
        1,
        "the listing shows the applied create"
    );

    sim.inject(
        FaultRule::always(Fault::Status(500))
            .on(Method::POST)
            .times(1),
    );
    let err = protocol
        .create(&new_contact(Some("grace"), Some("+12025550199")))
        .await
        .expect_err("500");
    assert!(err.outcome_unknown());
    assert_eq!(posts(&sim).len(), 2, "the 500 was not retried");
    assert_eq!(sim.contacts().len(), 1);
}
