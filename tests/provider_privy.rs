//! The Privy adapter against the Privy simulator, over real HTTP on loopback.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use contact_sync::config::{Config, ProviderConfig, Secret, SecretSource};
use contact_sync::model::{
    Change, Contact, Field, FieldMap, FieldValue, Normalizer, Patch, ProviderKind, RecordId,
    TagSet, Value,
};
use contact_sync::provider::rules::{NoHolders, RuleId, WriteMode};
use contact_sync::provider::{list_all, AnyProvider, ProviderError};
use contact_sync::sim::{Fault, FaultRule, SeedPerson, Sim, SimOptions, SimQuota};
use reqwest::Method;
use serde_json::{json, Value as Json};

const PRIVY: ProviderKind = ProviderKind::Privy;

async fn sim() -> Sim {
    Sim::start(PRIVY, SimOptions::for_provider(PRIVY).unlimited())
        .await
        .expect("simulator starts")
}

/// The adapter's config for `sim`, with a fast local rate unless `extra` sets one.
fn config(sim: &Sim, extra: &str) -> ProviderConfig {
    let rate = if extra.contains("rate_limit") {
        ""
    } else {
        "rate_limit = { requests = 1000, per = \"1s\" }\n"
    };
    let text = format!(
        "[providers.privy]\nbase_url = \"{}\"\ntoken_env = \"PRIVY_TOKEN_UNUSED\"\n{rate}{extra}\n",
        sim.base_url()
    );
    let cfg = Config::parse(&text, "privy-test.toml").expect("test config is valid");
    let mut p = cfg.provider(PRIVY).expect("privy configured").clone();
    p.token = SecretSource::Literal(Secret::new(sim.token()));
    p
}

fn client(cfg: &ProviderConfig) -> AnyProvider {
    AnyProvider::build(cfg, Normalizer::new("US").expect("region")).expect("client builds")
}

fn person(i: usize) -> SeedPerson {
    SeedPerson {
        name: Some(format!("Person {i} Number{i}")),
        email: Some(format!("Person{i}@Example.COM")),
        phone: Some(format!("+442079460{:03}", i % 1000)),
        tags: vec!["customer".into(), format!("cohort-{}", i % 3)],
        custom_fields: [("seq".to_string(), i.to_string())].into(),
        ..SeedPerson::default()
    }
}

fn scalar(s: &str) -> FieldValue {
    FieldValue::Scalar(Some(Value::plain(s)))
}

fn set(items: &[&str]) -> FieldValue {
    FieldValue::Set(items.iter().map(|s| s.to_string()).collect())
}

fn map(items: &[(&str, &str)]) -> FieldValue {
    FieldValue::Map(
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn patch(id: &str, changes: Vec<(Field, FieldValue, FieldValue)>) -> Patch {
    Patch {
        record: RecordId::new(PRIVY, id),
        update_ref: id.into(),
        changes: changes
            .into_iter()
            .map(|(field, old, new)| Change { field, old, new })
            .collect(),
    }
}

fn url(sim: &Sim, path: &str) -> String {
    format!("{}{}", sim.base_url().as_str().trim_end_matches('/'), path)
}

/// Sends a raw request to the simulator, as a client that ignores Privy's rules would.
async fn raw(sim: &Sim, method: Method, path: &str, body: Option<Json>) -> (u16, Json) {
    let (status, _, body) = raw_with_headers(sim, method, path, body, &sim.token()).await;
    (status, body)
}

async fn raw_with_headers(
    sim: &Sim,
    method: Method,
    path: &str,
    body: Option<Json>,
    token: &str,
) -> (u16, reqwest::header::HeaderMap, Json) {
    let mut req = reqwest::Client::new()
        .request(method, url(sim, path))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("simulator answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json::<Json>().await.unwrap_or(Json::Null);
    (status, headers, body)
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> u64 {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("header {name} missing or not a number: {h:?}"))
}

fn detail_fields(body: &Json) -> Vec<String> {
    body["error"]["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|x| x["field"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn by_id<'a>(contacts: &'a [Contact], id: &str) -> &'a Contact {
    contacts
        .iter()
        .find(|c| c.id.native == id)
        .unwrap_or_else(|| panic!("{id} listed"))
}

// 1. Listing.

#[tokio::test]
async fn list_all_pages_through_every_contact_once() {
    let sim = sim().await;
    let people: Vec<SeedPerson> = (0..260).map(person).collect();
    let ids = sim.seed_people(&people);
    let provider = client(&config(&sim, ""));

    let listing = list_all(&provider).await.expect("listing succeeds");
    assert_eq!(listing.contacts.len(), 260);
    assert_eq!(listing.duplicates, 0);
    assert_eq!(listing.pages, 3, "100 per page");
    let listed: BTreeSet<&str> = listing
        .contacts
        .iter()
        .map(|c| c.id.native.as_str())
        .collect();
    assert_eq!(listed, ids.iter().map(String::as_str).collect());

    let queries: Vec<String> = sim.requests().into_iter().filter_map(|r| r.query).collect();
    assert_eq!(
        queries,
        [
            "page=1&per_page=100",
            "page=2&per_page=100",
            "page=3&per_page=100"
        ]
    );

    for i in [0usize, 99, 100, 259] {
        let c = by_id(&listing.contacts, &ids[i]);
        assert_eq!(c.id.native, format!("cus_{:016x}", i + 1));
        let name = c.name.as_ref().expect("named");
        assert_eq!(name.display(), format!("Person {i} Number{i}"));
        assert_eq!(name.given(), Some(format!("Person {i}").as_str()));
        assert_eq!(name.family(), Some(format!("Number{i}").as_str()));
        let email = c.email.as_ref().expect("email");
        assert_eq!(email.raw(), format!("Person{i}@Example.COM"));
        assert_eq!(email.key(), format!("person{i}@example.com"));
        let phone = c.phone.as_ref().expect("phone");
        assert_eq!(phone.key(), format!("+442079460{:03}", i % 1000));
        assert!(phone.valid());
        assert_eq!(
            c.tags,
            TagSet::from(["customer".to_string(), format!("cohort-{}", i % 3)])
        );
        assert_eq!(
            c.custom_fields.get("seq").map(|s| s.as_str()),
            Some(i.to_string().as_str())
        );
        assert!(c.updated_at.is_some());
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }
}

#[tokio::test]
async fn configured_page_size_is_used_and_total_is_reported() {
    let sim = sim().await;
    sim.seed_people(&(0..7).map(person).collect::<Vec<_>>());
    let provider = client(&config(&sim, "page_size = 3"));
    let first = provider.list_page(None).await.expect("page 1");
    assert_eq!(first.contacts.len(), 3);
    assert_eq!(first.next.as_deref(), Some("2"));
    assert_eq!(first.total, Some(7));
    let last = provider.list_page(Some("3")).await.expect("page 3");
    assert_eq!(last.contacts.len(), 1);
    assert_eq!(last.next, None);
    assert!(provider.list_page(Some("zero")).await.is_err());
}

#[tokio::test]
async fn simulator_validates_pagination() {
    let sim = sim().await;
    sim.seed_people(&(0..5).map(person).collect::<Vec<_>>());
    for q in ["per_page=101", "per_page=0", "page=0", "page=x"] {
        let (status, body) = raw(&sim, Method::GET, &format!("/v1/contacts?{q}"), None).await;
        assert_eq!(status, 422, "{q}");
        assert_eq!(body["error"]["code"], "validation_failed", "{q}");
        assert_eq!(detail_fields(&body).len(), 1, "{q}: {body}");
    }
    let (status, body) = raw(&sim, Method::GET, "/v1/contacts?page=9&per_page=2", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], json!([]));
    assert_eq!(
        body["pagination"],
        json!({"page": 9, "per_page": 2, "total_count": 5, "total_pages": 3})
    );
    let (status, body) = raw(&sim, Method::GET, "/v1/contacts/cus_nope", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

// 2. Updates.

#[tokio::test]
async fn apply_sends_one_patch_with_only_the_changed_fields() {
    let sim = sim().await;
    let ids = sim.seed_people(&[person(1), person(2)]);
    let id = &ids[0];
    let before = sim.contact(id).expect("seeded");
    let other_before = sim.contact(&ids[1]).expect("seeded");
    let provider = client(&config(&sim, ""));

    let updated = provider
        .apply(&patch(
            id,
            vec![
                (
                    Field::Name,
                    scalar("Person 1 Number1"),
                    scalar("Ada King Lovelace"),
                ),
                (
                    Field::Tags,
                    set(&["customer", "cohort-1"]),
                    set(&["customer", "vip"]),
                ),
                (
                    Field::CustomFields,
                    map(&[("seq", "1")]),
                    map(&[("seq", "1"), ("tier", "gold")]),
                ),
            ],
        ))
        .await
        .expect("update accepted");

    let writes = sim.writes();
    assert_eq!(writes.len(), 1, "one request per record");
    let w = &writes[0];
    assert_eq!(w.method, Method::PATCH);
    assert_eq!(w.path, format!("/v1/contacts/{id}"));
    let body = w.body.as_ref().expect("JSON body");
    let keys: BTreeSet<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["first_name", "last_name", "tags", "custom_fields"])
    );
    assert_eq!(body["tags"], json!(["customer", "vip"]));
    assert_eq!(body["custom_fields"], json!({"seq": "1", "tier": "gold"}));

    let after = sim.contact(id).expect("still there");
    assert_eq!(after["first_name"], "Ada King");
    assert_eq!(after["last_name"], "Lovelace");
    assert_eq!(after["tags"], json!(["customer", "vip"]));
    assert_eq!(after["custom_fields"], json!({"seq": "1", "tier": "gold"}));
    for untouched in [
        "email",
        "phone_number",
        "email_consent",
        "sms_consent",
        "created_at",
        "id",
    ] {
        assert_eq!(after[untouched], before[untouched], "{untouched}");
    }
    assert_ne!(after["updated_at"], before["updated_at"]);
    assert_eq!(
        sim.contact(&ids[1]),
        Some(other_before),
        "other records untouched"
    );

    assert_eq!(
        updated.name.as_ref().map(|n| n.display()),
        Some("Ada King Lovelace")
    );
    assert_eq!(
        updated.tags,
        TagSet::from(["customer".to_string(), "vip".into()])
    );
    assert_eq!(
        updated.custom_fields.get("tier").map(|s| s.as_str()),
        Some("gold")
    );
}

#[tokio::test]
async fn one_word_names_clear_the_last_name() {
    let sim = sim().await;
    let ids = sim.seed_people(&[person(1)]);
    let provider = client(&config(&sim, ""));
    let updated = provider
        .apply(&patch(
            &ids[0],
            vec![(Field::Name, scalar("Person 1 Number1"), scalar("Cher"))],
        ))
        .await
        .expect("update accepted");
    let body = sim.writes()[0].body.clone().expect("body");
    assert_eq!(body, json!({"first_name": "Cher", "last_name": null}));
    let after = sim.contact(&ids[0]).expect("there");
    assert_eq!(after["first_name"], "Cher");
    assert!(after["last_name"].is_null());
    assert_eq!(
        updated.name.map(|n| n.display().to_owned()),
        Some("Cher".into())
    );
}

#[tokio::test]
async fn first_email_and_phone_are_set_and_reformatting_is_not_an_echo() {
    let sim = sim().await;
    sim.configure(|o| o.reformat_on_write = true);
    let ids = sim.seed_people(&[SeedPerson {
        name: Some("No Contact".into()),
        ..SeedPerson::default()
    }]);
    let id = &ids[0];
    let provider = client(&config(&sim, ""));
    let email = Value::new("new@example.com", "new@example.com", true);
    let updated = provider
        .apply(&patch(
            id,
            vec![
                (
                    Field::Email,
                    FieldValue::Scalar(None),
                    FieldValue::Scalar(Some(email.clone())),
                ),
                (
                    Field::Phone,
                    FieldValue::Scalar(None),
                    scalar("+14155550101"),
                ),
                (Field::Tags, set(&[]), set(&["a", "b", "c"])),
            ],
        ))
        .await
        .expect("setting empty email and phone is allowed");
    let after = sim.contact(id).expect("there");
    assert_eq!(
        after["email"], "new@EXAMPLE.COM",
        "the simulator reformatted"
    );
    assert_eq!(after["tags"], json!(["c", "b", "a"]));
    assert_eq!(after["phone_number"], "+14155550101");
    // The record as returned compares equal to what was written: no echo write next run.
    assert!(updated
        .get(Field::Email)
        .same_as(&FieldValue::Scalar(Some(email))));
    assert_eq!(updated.get(Field::Tags), set(&["a", "b", "c"]));
    assert!(updated.get(Field::Phone).same_as(&scalar("+14155550101")));
}

#[tokio::test]
async fn numeric_custom_fields_keep_their_type_when_the_map_is_rewritten() {
    let sim = sim().await;
    sim.seed_json([json!({
        "id": "cus_typed", "first_name": "Typed", "last_name": null, "email": null, "phone_number": null,
        "tags": [], "custom_fields": {"points": 42, "vip": true, "tier": "gold"},
        "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z"
    })]);
    let provider = client(&config(&sim, ""));
    let listing = list_all(&provider).await.expect("lists");
    let c = by_id(&listing.contacts, "cus_typed");
    assert_eq!(
        c.custom_fields.get("points").map(|s| s.as_str()),
        Some("42")
    );
    provider
        .apply(&patch(
            "cus_typed",
            vec![(
                Field::CustomFields,
                map(&[("points", "42"), ("vip", "true"), ("tier", "gold")]),
                map(&[("points", "42"), ("vip", "true"), ("tier", "platinum")]),
            )],
        ))
        .await
        .expect("accepted");
    assert_eq!(
        sim.contact("cus_typed").expect("there")["custom_fields"],
        json!({"points": 42, "vip": true, "tier": "platinum"})
    );
}

#[tokio::test]
async fn a_set_once_write_whose_answer_was_lost_is_not_a_failure() {
    let sim = sim().await;
    let ids = sim.seed_people(&[SeedPerson {
        name: Some("Lost Answer".into()),
        ..SeedPerson::default()
    }]);
    let id = &ids[0];
    // The first PATCH is applied, then the connection drops; the retry meets the set-once rule.
    sim.inject(
        FaultRule::always(Fault::ResetMidBody)
            .on(Method::PATCH)
            .times(1),
    );
    let provider = client(&config(&sim, ""));
    let updated = provider
        .apply(&patch(
            id,
            vec![
                (
                    Field::Email,
                    FieldValue::Scalar(None),
                    scalar("late@example.com"),
                ),
                (Field::Tags, set(&[]), set(&["x"])),
            ],
        ))
        .await
        .expect("the record holds the patch");
    assert_eq!(
        updated.email.map(|e| e.key().to_owned()),
        Some("late@example.com".into())
    );
    let trail: Vec<(Method, u16)> = sim
        .requests()
        .into_iter()
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(
        trail,
        [(Method::PATCH, 0), (Method::PATCH, 422), (Method::GET, 200)]
    );
}

// 3. Rules: enforced by the simulator and known to the adapter.

#[tokio::test]
async fn set_once_email_and_phone() {
    let sim = sim().await;
    let ids = sim.seed_people(&[person(1)]);
    let id = &ids[0];
    let before = sim.contact(id).expect("seeded");
    let path = format!("/v1/contacts/{id}");
    for body in [
        json!({"email": "other@example.com", "first_name": "Changed"}),
        json!({"email": null}),
        json!({"email": before["email"].clone()}),
        json!({"phone_number": "+14155550199", "tags": ["x"]}),
        json!({"phone_number": null}),
    ] {
        let (status, resp) = raw(&sim, Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(resp["error"]["code"], "validation_failed");
        let field = if body.get("email").is_some() {
            "email"
        } else {
            "phone_number"
        };
        assert_eq!(
            resp["error"]["details"],
            json!([{"field": field, "message": "can only be set while empty"}]),
            "{body}"
        );
    }
    assert_eq!(sim.contact(id), Some(before.clone()), "nothing changed");

    let provider = client(&config(&sim, ""));
    let rules = provider.rules();
    let rec = RecordId::new(PRIVY, id.as_str());
    for (field, current, desired) in [
        (
            Field::Email,
            scalar("person1@example.com"),
            scalar("other@example.com"),
        ),
        (
            Field::Email,
            scalar("person1@example.com"),
            FieldValue::Scalar(None),
        ),
        (
            Field::Phone,
            scalar("+442079460001"),
            scalar("+14155550199"),
        ),
        (
            Field::Phone,
            scalar("+442079460001"),
            FieldValue::Scalar(None),
        ),
    ] {
        let a = rules.admit(&rec, field, &current, &desired, &NoHolders);
        assert_eq!(a.write, None, "{field}");
        assert_eq!(a.blocked[0].rule, RuleId::SetOnce, "{field}");
    }
    let first = rules.admit(
        &rec,
        Field::Email,
        &FieldValue::Scalar(None),
        &scalar("first@example.com"),
        &NoHolders,
    );
    assert!(first.write.is_some() && first.blocked.is_empty());

    // The adapter sends a forbidden change if asked directly: the simulator's answer surfaces.
    let err = provider
        .apply(&patch(
            id,
            vec![(
                Field::Email,
                scalar("person1@example.com"),
                scalar("x@example.com"),
            )],
        ))
        .await
        .expect_err("rejected");
    match &err {
        ProviderError::Rejected {
            status, message, ..
        } => {
            assert_eq!(*status, 422);
            assert_eq!(
                message,
                "validation_failed: The contact could not be updated (email: can only be set while empty)"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(sim.contact(id), Some(before));
}

#[tokio::test]
async fn formats_of_email_and_phone() {
    let sim = sim().await;
    let ids = sim.seed_people(&[SeedPerson {
        name: Some("Blank Slate".into()),
        ..SeedPerson::default()
    }]);
    let id = &ids[0];
    let before = sim.contact(id).expect("seeded");
    let path = format!("/v1/contacts/{id}");
    for (body, field) in [
        (json!({"phone_number": "+1 415 555 0101"}), "phone_number"),
        (json!({"phone_number": "4155550101"}), "phone_number"),
        (json!({"phone_number": 4155550101u64}), "phone_number"),
        (json!({"email": "not-an-email"}), "email"),
        (json!({"email": "a b@example.com"}), "email"),
    ] {
        let (status, resp) = raw(&sim, Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(detail_fields(&resp), [field], "{body}");
    }
    assert_eq!(sim.contact(id), Some(before));

    let provider = client(&config(&sim, ""));
    let rec = RecordId::new(PRIVY, id.as_str());
    for (field, bad) in [
        (Field::Phone, "4155550101"),
        (Field::Phone, "+1 415 555 0101"),
        (Field::Email, "not-an-email"),
    ] {
        let a = provider.rules().admit(
            &rec,
            field,
            &FieldValue::Scalar(None),
            &scalar(bad),
            &NoHolders,
        );
        assert_eq!(a.blocked[0].rule, RuleId::InvalidFormat, "{bad}");
    }
}

#[tokio::test]
async fn only_the_six_mutable_fields_are_accepted() {
    let sim = sim().await;
    let ids = sim.seed_people(&[person(1)]);
    let id = &ids[0];
    let before = sim.contact(id).expect("seeded");
    let (status, resp) = raw(
        &sim,
        Method::PATCH,
        &format!("/v1/contacts/{id}"),
        Some(json!({"first_name": "Ok", "email_consent": "unsubscribed", "avatar_url": "https://x.io/a.png", "id": "cus_other"})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(resp["error"]["code"], "validation_failed");
    let fields: BTreeSet<String> = detail_fields(&resp).into_iter().collect();
    assert_eq!(
        fields,
        BTreeSet::from(["email_consent".into(), "avatar_url".into(), "id".into()])
    );
    assert_eq!(sim.contact(id), Some(before));

    let provider = client(&config(&sim, ""));
    let rules = provider.rules();
    let rec = RecordId::new(PRIVY, id.as_str());
    for field in [Field::AvatarUrl, Field::Username, Field::ExternalId] {
        assert!(!rules.supports(field), "{field}");
        let a = rules.admit(
            &rec,
            field,
            &FieldValue::Scalar(None),
            &scalar("x"),
            &NoHolders,
        );
        assert_eq!(a.write, None, "{field}: never written");
    }
    let err = provider
        .apply(&patch(
            id,
            vec![(
                Field::AvatarUrl,
                FieldValue::Scalar(None),
                scalar("https://x.io/a.png"),
            )],
        ))
        .await
        .expect_err("privy has no avatar");
    assert!(err.to_string().contains("avatar_url"), "{err}");
    assert!(sim.writes().len() == 1, "the adapter sent nothing for it");
}

#[tokio::test]
async fn names_can_be_written_but_not_cleared_by_the_adapter() {
    let sim = sim().await;
    let ids = sim.seed_people(&[person(1)]);
    let id = &ids[0];
    // The simulator accepts a null name part (a one-word name has no last name).
    let (status, _) = raw(
        &sim,
        Method::PATCH,
        &format!("/v1/contacts/{id}"),
        Some(json!({"last_name": null})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, resp) = raw(
        &sim,
        Method::PATCH,
        &format!("/v1/contacts/{id}"),
        Some(json!({"first_name": ["A"]})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(detail_fields(&resp), ["first_name"]);

    let provider = client(&config(&sim, ""));
    let rec = RecordId::new(PRIVY, id.as_str());
    let a = provider.rules().admit(
        &rec,
        Field::Name,
        &scalar("Person 1"),
        &FieldValue::Scalar(None),
        &NoHolders,
    );
    assert_eq!(a.blocked[0].rule, RuleId::NotClearable);
    let b = provider.rules().admit(
        &rec,
        Field::Name,
        &scalar("Person 1"),
        &scalar("Person One"),
        &NoHolders,
    );
    assert_eq!(b.write, Some(scalar("Person One")));
}

#[tokio::test]
async fn tags_and_custom_fields_replace_the_whole_value() {
    let sim = sim().await;
    let ids = sim.seed_people(&[SeedPerson {
        name: Some("Re Place".into()),
        tags: vec!["a".into(), "x".into()],
        custom_fields: [("k1".to_string(), "v1".to_string())].into(),
        ..SeedPerson::default()
    }]);
    let id = &ids[0];
    let path = format!("/v1/contacts/{id}");
    let (status, resp) = raw(
        &sim,
        Method::PATCH,
        &path,
        Some(json!({"tags": ["b"], "custom_fields": {"k2": 2, "k3": null, "k4": false}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(resp["data"]["tags"], json!(["b"]));
    let after = sim.contact(id).expect("there");
    assert_eq!(after["tags"], json!(["b"]));
    assert_eq!(
        after["custom_fields"],
        json!({"k2": 2, "k3": null, "k4": false})
    );
    let (status, _) = raw(
        &sim,
        Method::PATCH,
        &path,
        Some(json!({"tags": [], "custom_fields": {}})),
    )
    .await;
    assert_eq!(status, 200);
    let after = sim.contact(id).expect("there");
    assert_eq!(
        (after["tags"].clone(), after["custom_fields"].clone()),
        (json!([]), json!({}))
    );

    let provider = client(&config(&sim, ""));
    let rules = provider.rules();
    for field in [Field::Tags, Field::CustomFields] {
        assert_eq!(rules.rule(field).write_mode, WriteMode::ReplaceWhole);
        assert!(rules.rule(field).clearable);
    }
    // Removing an element is allowed: the write carries the full remaining set or map.
    let rec = RecordId::new(PRIVY, id.as_str());
    let a = rules.admit(
        &rec,
        Field::Tags,
        &set(&["a", "x"]),
        &set(&["a"]),
        &NoHolders,
    );
    assert_eq!(a.write, Some(set(&["a"])));
    let m = rules.admit(
        &rec,
        Field::CustomFields,
        &map(&[("k1", "v1"), ("k2", "v2")]),
        &map(&[("k2", "v2")]),
        &NoHolders,
    );
    assert_eq!(m.write, Some(map(&[("k2", "v2")])));

    sim.clear_requests();
    provider
        .apply(&patch(
            id,
            vec![
                (Field::Tags, set(&[]), set(&["p", "q"])),
                (Field::CustomFields, map(&[]), map(&[("only", "this")])),
            ],
        ))
        .await
        .expect("accepted");
    let body = sim.writes()[0].body.clone().expect("body");
    assert_eq!(
        body,
        json!({"tags": ["p", "q"], "custom_fields": {"only": "this"}})
    );
    let after = sim.contact(id).expect("there");
    assert_eq!(after["tags"], json!(["p", "q"]));
    assert_eq!(after["custom_fields"], json!({"only": "this"}));
}

#[tokio::test]
async fn tags_must_be_strings_and_custom_fields_flat() {
    let sim = sim().await;
    let ids = sim.seed_people(&[person(1)]);
    let id = &ids[0];
    let before = sim.contact(id).expect("seeded");
    let path = format!("/v1/contacts/{id}");
    for (body, field, message) in [
        (
            json!({"tags": "vip"}),
            "tags",
            "must be an array of strings",
        ),
        (
            json!({"tags": ["vip", 3]}),
            "tags",
            "must be an array of strings",
        ),
        (json!({"tags": null}), "tags", "must be an array of strings"),
        (
            json!({"custom_fields": {"a": {"b": 1}}}),
            "custom_fields",
            "must be a flat key-value object",
        ),
        (
            json!({"custom_fields": {"a": [1, 2]}}),
            "custom_fields",
            "must be a flat key-value object",
        ),
        (
            json!({"custom_fields": ["a"]}),
            "custom_fields",
            "must be a flat key-value object",
        ),
    ] {
        let (status, resp) = raw(&sim, Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(
            resp["error"]["details"],
            json!([{"field": field, "message": message}]),
            "{body}"
        );
    }
    for body in [json!({}), json!(["first_name"])] {
        let (status, resp) = raw(&sim, Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(resp["error"]["code"], "validation_failed");
    }
    assert_eq!(sim.contact(id), Some(before));
    // The adapter can only express flat string maps and string sets; what it writes is accepted.
    let provider = client(&config(&sim, ""));
    provider
        .apply(&patch(
            id,
            vec![(
                Field::CustomFields,
                map(&[("seq", "1")]),
                map(&[("json_looking", "{\"a\":1}"), ("list", "[1,2]")]),
            )],
        ))
        .await
        .expect("flat strings are accepted");
    assert_eq!(
        sim.contact(id).expect("there")["custom_fields"],
        json!({"json_looking": "{\"a\":1}", "list": "[1,2]"})
    );
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let sim = sim().await;
    let provider = client(&config(&sim, ""));
    let (status, resp) = raw(
        &sim,
        Method::PATCH,
        "/v1/contacts/cus_missing",
        Some(json!({"tags": []})),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        resp,
        json!({"error": {"code": "not_found", "message": "Contact not found"}})
    );
    let err = provider
        .apply(&patch(
            "cus_missing",
            vec![(Field::Tags, set(&[]), set(&["a"]))],
        ))
        .await
        .expect_err("not found");
    assert!(
        matches!(&err, ProviderError::Rejected { status: 404, message, .. } if message == "not_found: Contact not found"),
        "{err:?}"
    );
}

// 4. Authentication.

#[tokio::test]
async fn wrong_token_is_an_auth_error_that_names_privy_and_hides_the_token() {
    let sim = sim().await;
    let secret = "privy-wrong-token-8c1f0e";
    let mut cfg = config(&sim, "");
    cfg.token = SecretSource::Literal(Secret::new(secret));
    let provider = client(&cfg);
    for err in [
        provider.healthcheck().await.expect_err("refused"),
        provider.list_page(None).await.expect_err("refused"),
    ] {
        assert!(
            matches!(err, ProviderError::Auth { status: 401, .. }),
            "{err:?}"
        );
        let shown = err.to_string();
        assert!(shown.contains("privy"), "{shown}");
        assert!(shown.contains("unauthorized: Invalid API token"), "{shown}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(!format!("{err:?}").contains(secret));
    }
    assert!(!format!("{provider:?}").contains(secret));
    let (status, _, body) = raw_with_headers(&sim, Method::GET, "/v1/contacts", None, secret).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"error": {"code": "unauthorized", "message": "Invalid API token"}})
    );
    client(&config(&sim, ""))
        .healthcheck()
        .await
        .expect("the right token works");
}

// 5. Invalid provider data.

#[tokio::test]
async fn invalid_provider_data_is_kept_with_warnings() {
    let sim = sim().await;
    let ids = sim.seed_people(&[
        SeedPerson {
            name: Some("Bad Phone".into()),
            phone: Some("555-CALL-NOW".into()),
            email: Some("bob(at)example".into()),
            ..SeedPerson::default()
        },
        person(2),
    ]);
    let provider = client(&config(&sim, ""));
    let listing = list_all(&provider).await.expect("listing succeeds");
    assert_eq!(listing.contacts.len(), 2, "nothing dropped");
    let bad = by_id(&listing.contacts, &ids[0]);
    let phone = bad.phone.as_ref().expect("phone kept");
    assert_eq!((phone.raw(), phone.valid()), ("555-CALL-NOW", false));
    let email = bad.email.as_ref().expect("email kept");
    assert_eq!((email.raw(), email.valid()), ("bob(at)example", false));
    assert_eq!(bad.warnings.len(), 2, "{:?}", bad.warnings);
    // A value that did not parse is never written back (it would be rejected).
    let a = provider.rules().admit(
        &RecordId::new(PRIVY, "cus_other"),
        Field::Phone,
        &FieldValue::Scalar(None),
        &FieldValue::Scalar(bad.phone.clone()),
        &NoHolders,
    );
    assert_eq!(a.blocked[0].rule, RuleId::InvalidFormat);
}

// 6. Fixture.

#[tokio::test]
async fn recorded_fixture_seeds_and_maps() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/privy/contacts_page.json"
    ))
    .expect("fixture readable");
    let page: Json = serde_json::from_str(&text).expect("fixture is JSON");
    let sim = sim().await;
    sim.seed_json(page["data"].as_array().expect("data array").clone());
    let provider = client(&config(&sim, ""));
    let listing = list_all(&provider).await.expect("listing succeeds");
    assert_eq!(listing.contacts.len(), 4);

    let janet = by_id(&listing.contacts, "cus_a1b2c3d4e5f6g7h8");
    assert_eq!(janet.name.as_ref().map(|n| n.display()), Some("Janet Doe"));
    assert_eq!(
        janet.email.as_ref().map(|e| e.key()),
        Some("jane@example.com")
    );
    assert_eq!(janet.phone.as_ref().map(|p| p.key()), Some("+14155550101"));
    assert_eq!(
        janet.tags,
        TagSet::from(["vip".to_string(), "wholesale".into()])
    );
    let expected: BTreeMap<String, String> = [
        ("loyalty_tier", "gold"),
        ("points", "1250"),
        ("newsletter", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(janet.custom_fields, expected.into());
    assert_eq!(
        janet.updated_at.map(|t| t.to_rfc3339()),
        Some("2025-04-01T12:15:00+00:00".into())
    );

    // Old consent names (before 2026-05-12) decode too; consent is not synced.
    let cher = by_id(&listing.contacts, "cus_b7c8d9e0f1a2b3c4");
    let name = cher.name.as_ref().expect("named");
    assert_eq!((name.display(), name.family()), ("Cher", None));
    assert_eq!(cher.email, None);
    assert_eq!(cher.phone.as_ref().map(|p| p.key()), Some("+442079460958"));

    let mary = by_id(&listing.contacts, "cus_c5d6e7f8a9b0c1d2");
    assert_eq!(mary.name.as_ref().and_then(|n| n.given()), Some("Mary Ann"));
    assert_eq!(mary.phone, None);
    assert_eq!(mary.custom_fields, FieldMap::from([("city", "Nuneaton")]));

    let imported = by_id(&listing.contacts, "cus_d3e4f5a6b7c8d9e0");
    assert_eq!(
        imported.name.as_ref().map(|n| n.display()),
        Some("Imported Row")
    );
    assert_eq!(imported.email.as_ref().map(|e| e.valid()), Some(false));
    assert_eq!(imported.phone.as_ref().map(|p| p.valid()), Some(false));
    assert!(imported.tags.is_empty() && imported.custom_fields.is_empty());
    assert_eq!(imported.warnings.len(), 2, "{:?}", imported.warnings);
}

// 7. Ids that look like paths.

#[tokio::test]
async fn ids_with_path_characters_stay_one_segment() {
    let sim = sim().await;
    let ids = sim.seed_people(&[person(1)]);
    let tricky = "cus/../../v1/contacts?page=2#x";
    sim.seed_json([json!({
        "id": tricky, "first_name": "Tricky", "last_name": "Id", "email": null, "phone_number": null,
        "tags": [], "custom_fields": {}, "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z"
    })]);
    let innocent = sim.contact(&ids[0]).expect("seeded");
    let provider = client(&config(&sim, ""));
    let listing = list_all(&provider).await.expect("lists");
    let c = by_id(&listing.contacts, tricky);
    let mut p = patch(tricky, vec![(Field::Tags, set(&[]), set(&["safe"]))]);
    p.update_ref = c.update_ref.clone().expect("writable");
    sim.clear_requests();
    provider.apply(&p).await.expect("accepted");

    let reqs = sim.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].path,
        "/v1/contacts/cus%2F..%2F..%2Fv1%2Fcontacts%3Fpage=2%23x"
    );
    assert_eq!(reqs[0].query, None);
    assert_eq!(sim.contact(tricky).expect("there")["tags"], json!(["safe"]));
    assert_eq!(sim.contact(&ids[0]), Some(innocent));

    for bad in ["..", "."] {
        let err = provider
            .apply(&patch(bad, vec![(Field::Tags, set(&[]), set(&["x"]))]))
            .await
            .expect_err("refused");
        assert!(matches!(err, ProviderError::Protocol { .. }), "{err:?}");
    }
    assert_eq!(
        sim.requests().len(),
        1,
        "refused ids never reach the simulator"
    );
}

// Rate limits.

#[tokio::test]
async fn per_minute_quota_answers_429_with_headers() {
    let sim = sim().await;
    sim.set_quotas(vec![
        SimQuota {
            name: "Minute",
            limit: 5,
            period: Duration::from_secs(2),
        },
        SimQuota {
            name: "Day",
            limit: 1000,
            period: Duration::from_secs(86_400),
        },
    ]);
    let token = sim.token();
    let (status, h, _) = raw_with_headers(&sim, Method::GET, "/v1/contacts", None, &token).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-ratelimit-limit-minute"), 5);
    assert_eq!(header(&h, "x-ratelimit-remaining-minute"), 4);
    assert!((1..=2).contains(&header(&h, "x-ratelimit-reset-minute")));
    assert_eq!(header(&h, "x-ratelimit-limit-day"), 1000);
    assert_eq!(header(&h, "x-ratelimit-remaining-day"), 999);
    assert!((86_390..=86_400).contains(&header(&h, "x-ratelimit-reset-day")));
    for left in [3, 2, 1, 0] {
        let (status, h, _) =
            raw_with_headers(&sim, Method::GET, "/v1/contacts", None, &token).await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "x-ratelimit-remaining-minute"), left);
    }
    let (status, h, body) = raw_with_headers(&sim, Method::GET, "/v1/contacts", None, &token).await;
    assert_eq!(status, 429);
    assert!((1..=2).contains(&header(&h, "retry-after")), "{h:?}");
    assert_eq!(header(&h, "x-ratelimit-remaining-minute"), 0);
    assert_eq!(header(&h, "x-ratelimit-remaining-day"), 995);
    assert_eq!(
        body,
        json!({"error": {"code": "rate_limited", "message": "Rate limit exceeded"}})
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, h, _) = raw_with_headers(&sim, Method::GET, "/v1/contacts", None, &token).await;
    assert_eq!(status, 200, "the window reset");
    assert_eq!(header(&h, "x-ratelimit-remaining-minute"), 4);
}

#[tokio::test]
async fn per_day_quota_is_enforced_too() {
    let sim = sim().await;
    sim.set_quotas(vec![
        SimQuota {
            name: "Minute",
            limit: 1000,
            period: Duration::from_secs(60),
        },
        SimQuota {
            name: "Day",
            limit: 3,
            period: Duration::from_secs(600),
        },
    ]);
    let token = sim.token();
    for left in [2, 1, 0] {
        let (status, h, _) =
            raw_with_headers(&sim, Method::GET, "/v1/contacts", None, &token).await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "x-ratelimit-remaining-day"), left);
        assert_eq!(header(&h, "x-ratelimit-remaining-minute"), 1000 - 3 + left);
    }
    let (status, h, body) = raw_with_headers(&sim, Method::GET, "/v1/contacts", None, &token).await;
    assert_eq!(status, 429);
    assert!((590..=600).contains(&header(&h, "retry-after")), "{h:?}");
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn adapter_waits_for_the_window_the_headers_announce() {
    let sim = sim().await;
    sim.seed_people(&[person(1)]);
    sim.set_quotas(vec![
        SimQuota {
            name: "Minute",
            limit: 3,
            period: Duration::from_secs(2),
        },
        SimQuota {
            name: "Day",
            limit: 1000,
            period: Duration::from_secs(86_400),
        },
    ]);
    // The local rate alone would allow all four requests at once.
    let provider = client(&config(&sim, "daily_limit = 1000\nmax_retries = 0"));
    for _ in 0..3 {
        provider.healthcheck().await.expect("within quota");
    }
    let started = Instant::now();
    provider
        .healthcheck()
        .await
        .expect("waits for the window instead of drawing a 429");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "waited {:?}",
        started.elapsed()
    );
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200]);
    assert_eq!(provider.budget().throttled_count(), 0);
}

#[tokio::test]
async fn adapter_stops_when_the_headers_say_the_day_is_spent() {
    let sim = sim().await;
    sim.set_quotas(vec![
        SimQuota {
            name: "Minute",
            limit: 1000,
            period: Duration::from_secs(60),
        },
        SimQuota {
            name: "Day",
            limit: 3,
            period: Duration::from_secs(3600),
        },
    ]);
    // Configured for more than the account has left: the headers correct it.
    let provider = client(&config(&sim, "daily_limit = 5"));
    for _ in 0..3 {
        provider.healthcheck().await.expect("within quota");
    }
    let err = provider.healthcheck().await.expect_err("day spent");
    match err {
        ProviderError::QuotaExhausted { resets_in, .. } => {
            assert!(resets_in > Duration::from_secs(3500), "{resets_in:?}");
        }
        other => panic!("expected QuotaExhausted, got {other:?}"),
    }
    assert_eq!(sim.requests().len(), 3, "no request was sent to draw a 429");
}
