//! The Protocol adapter against the Protocol simulator, over real HTTP on loopback.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use contact_sync::config::{Config, ProviderConfig, Secret, SecretSource};
use contact_sync::model::{
    Change, Contact, Field, FieldValue, Normalizer, Patch, ProviderKind, RecordId, Value,
};
use contact_sync::provider::rules::{Mutability, NoHolders, RuleId};
use contact_sync::provider::{list_all, AnyProvider, ProviderError};
use contact_sync::sim::{Fault, FaultRule, SeedPerson, Sim, SimOptions, SimQuota};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value as Json};

const KIND: ProviderKind = ProviderKind::Protocol;

async fn start() -> Sim {
    Sim::start(KIND, SimOptions::for_provider(KIND).unlimited())
        .await
        .expect("simulator starts")
}

/// A validated Protocol section pointing at `sim`, with `token` as a literal secret.
fn config(sim: &Sim, token: &str, legacy_put: bool, page_size: u32) -> ProviderConfig {
    let toml = format!(
        r#"
        [providers.protocol]
        base_url = "{}"
        token_env = "PROTOCOL_TOKEN_UNUSED"
        rate_limit = {{ requests = 10000, per = "1s" }}
        timeout = "5s"
        max_retries = 2
        legacy_put = {legacy_put}
        page_size = {page_size}
        "#,
        sim.base_url()
    );
    let cfg = Config::parse(&toml, "test.toml").expect("valid test config");
    let mut p = cfg.provider(KIND).expect("protocol configured").clone();
    p.token = SecretSource::Literal(Secret::new(token));
    p
}

fn normalizer() -> Normalizer {
    Normalizer::new("US").expect("valid region")
}

fn client(sim: &Sim) -> AnyProvider {
    AnyProvider::build(&config(sim, &sim.token(), false, 100), normalizer()).expect("builds")
}

fn legacy_client(sim: &Sim) -> AnyProvider {
    AnyProvider::build(&config(sim, &sim.token(), true, 100), normalizer()).expect("builds")
}

fn s(v: &str) -> FieldValue {
    FieldValue::Scalar(Some(Value::plain(v)))
}

fn e164(raw: &str) -> FieldValue {
    FieldValue::Scalar(normalizer().phone(raw).0)
}

fn patch(id: &str, changes: Vec<(Field, FieldValue)>) -> Patch {
    Patch {
        record: RecordId::new(KIND, id),
        update_ref: id.into(),
        changes: changes
            .into_iter()
            .map(|(field, new)| Change {
                field,
                old: FieldValue::Scalar(None),
                new,
            })
            .collect(),
    }
}

fn by_id<'a>(contacts: &'a [Contact], id: &str) -> &'a Contact {
    contacts
        .iter()
        .find(|c| c.id.native == id)
        .unwrap_or_else(|| panic!("contact {id} listed"))
}

fn raw_key(v: &Option<Value>) -> Option<&str> {
    v.as_ref().map(|v| v.key())
}

/// Sends a request straight to the simulator, bypassing the adapter.
async fn raw(
    sim: &Sim,
    method: Method,
    path_and_query: &str,
    body: Option<Json>,
) -> (StatusCode, reqwest::header::HeaderMap, Json) {
    let url = format!(
        "{}{}",
        sim.base_url().as_str().trim_end_matches('/'),
        path_and_query
    );
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(sim.token());
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("simulator answers");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
    (status, headers, json)
}

fn assert_envelope(body: &Json, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn people(n: usize) -> Vec<SeedPerson> {
    (0..n)
        .map(|i| SeedPerson {
            name: Some(format!("Person {i}")),
            phone: Some(match i % 3 {
                0 => format!("(415) 234-{:04}", 1000 + i),
                1 => format!("415-234-{:04}", 1000 + i),
                _ => format!("+1 415 234 {:04}", 1000 + i),
            }),
            avatar_url: (i % 2 == 0).then(|| format!("https://a.example/{i}.png")),
            // Protocol has no e-mail or tags: the simulator leaves them out.
            email: Some(format!("Person{i}@Example.COM")),
            tags: vec!["vip".into()],
            ..SeedPerson::default()
        })
        .collect()
}

#[tokio::test]
async fn lists_every_contact_once_at_the_largest_page_size() {
    let sim = start().await;
    let ids = sim.seed_people(&people(260));
    let listing = list_all(&client(&sim)).await.expect("lists");

    assert_eq!(listing.contacts.len(), 260);
    assert_eq!(listing.duplicates, 0);
    assert_eq!(listing.pages, 3);
    let listed: HashSet<_> = listing
        .contacts
        .iter()
        .map(|c| c.id.native.to_string())
        .collect();
    assert_eq!(listed, ids.iter().cloned().collect::<HashSet<_>>());

    for (i, id) in [
        (0usize, &ids[0]),
        (1, &ids[1]),
        (2, &ids[2]),
        (259, &ids[259]),
    ] {
        let c = by_id(&listing.contacts, id);
        assert_eq!(c.provider(), KIND);
        assert_eq!(c.update_ref.as_deref(), Some(id.as_str()));
        let name = format!("Person {i}");
        assert_eq!(c.name.as_ref().map(|n| n.display()), Some(name.as_str()));
        assert_eq!(
            c.name.as_ref().and_then(|n| n.family()),
            Some(i.to_string().as_str())
        );
        let phone = format!("+1415234{:04}", 1000 + i);
        assert_eq!(
            raw_key(&c.phone),
            Some(phone.as_str()),
            "E.164 from any format"
        );
        assert_eq!(c.phone.as_ref().map(|p| p.raw()), Some(phone.as_str()));
        let username = format!("Person{i}{}", i + 1);
        assert_eq!(raw_key(&c.username), Some(username.as_str()));
        let avatar = format!("https://a.example/{i}.png");
        assert_eq!(
            raw_key(&c.avatar_url),
            (i % 2 == 0).then_some(avatar.as_str())
        );
        // Protocol has no e-mail or tags (unlike the seed), and lists no updated_at.
        assert!(c.email.is_none() && c.tags.is_empty() && c.custom_fields.is_empty());
        assert_eq!(c.updated_at, None);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    // Cursor pagination: limit=100, then starting_after the last id of the previous page.
    let gets: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::GET)
        .collect();
    let queries: Vec<_> = gets
        .iter()
        .map(|r| r.query.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        queries,
        vec![
            "limit=100".to_string(),
            format!("limit=100&starting_after={}", ids[99]),
            format!("limit=100&starting_after={}", ids[199]),
        ]
    );
    assert!(gets
        .iter()
        .all(|r| r.path == "/v1/contacts" && r.status == 200));
    assert!(sim.writes().is_empty());
}

#[tokio::test]
async fn small_pages_and_short_server_pages_still_list_everything() {
    let sim = start().await;
    sim.seed_people(&people(23));
    let p =
        AnyProvider::build(&config(&sim, &sim.token(), false, 7), normalizer()).expect("builds");
    let listing = list_all(&p).await.expect("lists");
    assert_eq!(listing.contacts.len(), 23);
    assert_eq!(listing.pages, 4);

    // A server that answers fewer records than asked for is followed by its cursor.
    sim.configure(|o| o.page_size = Some(5));
    let listing = list_all(&client(&sim)).await.expect("lists");
    assert_eq!(listing.contacts.len(), 23);
    assert_eq!(listing.pages, 5);

    // An empty account is one empty page.
    let empty = start().await;
    let listing = list_all(&client(&empty)).await.expect("lists");
    assert_eq!((listing.contacts.len(), listing.pages), (0, 1));
}

#[tokio::test]
async fn patch_writes_exactly_the_changed_fields() {
    let sim = start().await;
    let ids = sim.seed_people(&people(3));
    let id = &ids[1];
    let before = sim.contact(id).expect("seeded");
    let p = client(&sim);

    let updated = p
        .apply(&patch(
            id,
            vec![
                (Field::Name, s("Ada Lovelace")),
                (Field::Phone, e164("(212) 555-0142")),
            ],
        ))
        .await
        .expect("accepted");

    let writes = sim.writes();
    assert_eq!(writes.len(), 1);
    let w = &writes[0];
    assert_eq!(w.method, Method::PATCH);
    assert_eq!(w.path, format!("/v1/contacts/{id}"));
    assert_eq!(w.status, 200);
    assert_eq!(
        w.body,
        Some(json!({"display_name": "Ada Lovelace", "phone_number": "+12125550142"}))
    );

    let after = sim.contact(id).expect("still there");
    assert_eq!(after["display_name"], "Ada Lovelace");
    assert_eq!(after["phone_number"], "+12125550142");
    assert!(after["updated_at"].as_i64().is_some());
    for untouched in [
        "username",
        "avatar_url",
        "conversation_id",
        "created_at",
        "last_active_at",
        "id",
    ] {
        assert_eq!(after[untouched], before[untouched], "{untouched}");
    }
    // The other records are untouched.
    assert_eq!(sim.contact(&ids[0]), Some(sim.contacts()[0].clone()));
    assert_eq!(sim.contacts()[0]["display_name"], "Person 0");

    assert_eq!(updated.id.native, *id);
    assert_eq!(
        updated.name.as_ref().map(|n| n.display()),
        Some("Ada Lovelace")
    );
    assert_eq!(raw_key(&updated.phone), Some("+12125550142"));
    assert!(
        updated.updated_at.is_some(),
        "updated_at from the PATCH response"
    );

    // Username and avatar too, in one request.
    sim.clear_requests();
    p.apply(&patch(
        id,
        vec![
            (Field::Username, s("ada")),
            (Field::AvatarUrl, s("https://a.example/ada.png")),
        ],
    ))
    .await
    .expect("accepted");
    let body = sim.writes()[0].body.clone().expect("json body");
    let keys: BTreeSet<_> = body.as_object().expect("object").keys().cloned().collect();
    assert_eq!(keys, ["avatar_url", "username"].map(String::from).into());
    assert_eq!(sim.contact(id).expect("there")["username"], "ada");
}

#[tokio::test]
async fn a_reformatted_phone_echo_compares_equal() {
    let sim = start().await;
    sim.configure(|o| o.reformat_on_write = true);
    let ids = sim.seed_people(&people(1));
    let want = e164("415 555 0199");
    let updated = client(&sim)
        .apply(&patch(&ids[0], vec![(Field::Phone, want.clone())]))
        .await
        .expect("accepted");
    assert_eq!(
        sim.contact(&ids[0]).expect("there")["phone_number"],
        "+1 (415) 555-0199"
    );
    assert!(
        updated.get(Field::Phone).same_as(&want),
        "no echo write needed"
    );
}

#[tokio::test]
async fn legacy_put_writes_display_name_only() {
    let sim = start().await;
    let ids = sim.seed_people(&people(2));
    let p = legacy_client(&sim);

    let updated = p
        .apply(&patch(&ids[0], vec![(Field::Name, s("Uncle Frank"))]))
        .await
        .expect("accepted");
    assert_eq!(
        updated.name.as_ref().map(|n| n.display()),
        Some("Uncle Frank")
    );
    let writes = sim.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, Method::PUT);
    assert_eq!(writes[0].path, format!("/v1/contacts/{}", ids[0]));
    assert_eq!(writes[0].body, Some(json!({"display_name": "Uncle Frank"})));

    // A patch the legacy rules forbid is refused before anything is sent.
    let err = p
        .apply(&patch(
            &ids[0],
            vec![(Field::Name, s("A")), (Field::Username, s("a"))],
        ))
        .await
        .expect_err("refused");
    assert!(matches!(err, ProviderError::Protocol { .. }), "{err}");
    assert_eq!(sim.writes().len(), 1, "nothing more was sent");

    for f in [Field::Username, Field::Phone, Field::AvatarUrl] {
        let a = p.rules().admit(
            &RecordId::new(KIND, &ids[0]),
            f,
            &FieldValue::Scalar(None),
            &s("+14155550101"),
            &NoHolders,
        );
        assert_eq!(a.write, None);
        assert_eq!(a.blocked[0].rule, RuleId::ReadOnly, "{f}");
    }
}

#[tokio::test]
async fn the_simulator_enforces_each_rule_the_adapter_knows() {
    let sim = start().await;
    let ids = sim.seed_people(&people(1));
    let id = &ids[0];
    let path = format!("/v1/contacts/{id}");
    let record = RecordId::new(KIND, id);
    let p = client(&sim);
    let rules = p.rules();
    let before = sim.contact(id).expect("seeded");

    // Fields Protocol does not have: 400 from the provider; unsupported in the rules, so the
    // reconciler never plans them.
    for (field, body) in [
        (Field::Email, json!({"email": "ada@example.com"})),
        (Field::Tags, json!({"tags": ["vip"]})),
        (
            Field::CustomFields,
            json!({"custom_fields": {"tier": "gold"}}),
        ),
        (Field::ExternalId, json!({"external_id": "42"})),
    ] {
        let (status, _, resp) = raw(&sim, Method::PATCH, &path, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_envelope(&resp, "invalid_request");
        assert_eq!(rules.rule(field).mutability, Mutability::Unsupported);
        let desired = match field {
            Field::Tags => FieldValue::Set(["vip".to_string()].into()),
            Field::CustomFields => {
                FieldValue::Map([("tier".to_string(), "gold".to_string())].into())
            }
            _ => s("x"),
        };
        let a = rules.admit(
            &record,
            field,
            &FieldValue::empty_for(field),
            &desired,
            &NoHolders,
        );
        assert_eq!(a.write, None, "{field}");
    }

    // Clearing (a null): 400 from the provider; NotClearable in the rules.
    for (field, key) in [
        (Field::Name, "display_name"),
        (Field::Username, "username"),
        (Field::Phone, "phone_number"),
        (Field::AvatarUrl, "avatar_url"),
    ] {
        let (status, _, resp) = raw(&sim, Method::PATCH, &path, Some(json!({ key: null }))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key}");
        assert_envelope(&resp, "invalid_request");
        let a = rules.admit(
            &record,
            field,
            &s("+14155550101"),
            &FieldValue::Scalar(None),
            &NoHolders,
        );
        assert_eq!(a.write, None);
        assert_eq!(a.blocked[0].rule, RuleId::NotClearable, "{field}");
    }

    // Non-string values are refused too.
    let (status, _, resp) = raw(&sim, Method::PATCH, &path, Some(json!({"username": 7}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&resp, "invalid_request");

    // The legacy PUT accepts display_name only: ReadOnly in the legacy rules.
    let (status, _, resp) = raw(&sim, Method::PUT, &path, Some(json!({"username": "frank"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&resp, "invalid_request");
    let legacy = legacy_client(&sim);
    let a = legacy
        .rules()
        .admit(&record, Field::Username, &s("a"), &s("frank"), &NoHolders);
    assert_eq!(a.blocked[0].rule, RuleId::ReadOnly);

    // Nothing was changed by any refused write.
    assert_eq!(sim.contact(id), Some(before));

    // What the rules allow, the provider accepts.
    for (key, value) in [
        ("display_name", "Ada"),
        ("username", "ada"),
        ("phone_number", "+14155550101"),
        ("avatar_url", "https://a.example/ada.png"),
    ] {
        let (status, _, resp) = raw(&sim, Method::PATCH, &path, Some(json!({ key: value }))).await;
        assert_eq!(status, StatusCode::OK, "{key}: {resp}");
        assert_eq!(resp[key], value);
    }
    let (status, _, _) = raw(
        &sim,
        Method::PUT,
        &path,
        Some(json!({"display_name": "Ada L"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn provider_errors_carry_the_envelope_code_and_message() {
    let sim = start().await;
    let err = client(&sim)
        .apply(&patch("nobody00000000000", vec![(Field::Name, s("A"))]))
        .await
        .expect_err("unknown id");
    match &err {
        ProviderError::Rejected {
            status, message, ..
        } => {
            assert_eq!(*status, 404);
            assert!(message.starts_with("not_found: "), "{message}");
        }
        other => panic!("expected Rejected, got {other}"),
    }
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_wrong_token_is_an_auth_error_that_never_shows_the_token() {
    let sim = start().await;
    sim.seed_people(&people(2));
    let token = "tok-WRONG-5f1c9e2a7b";
    let p = AnyProvider::build(&config(&sim, token, false, 100), normalizer()).expect("builds");

    for err in [
        p.healthcheck().await.expect_err("refused"),
        p.list_page(None).await.expect_err("refused"),
    ] {
        assert!(
            matches!(err, ProviderError::Auth { status: 401, .. }),
            "{err}"
        );
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("protocol"), "{shown}");
        assert!(shown.contains("unauthorized: Invalid API key"), "{shown}");
        assert!(!shown.contains(token), "{shown}");
        assert!(!shown.contains(&sim.token()), "{shown}");
    }
    assert!(!format!("{p:?}").contains(token));

    // The right token passes the healthcheck with one cheap request.
    sim.clear_requests();
    client(&sim).healthcheck().await.expect("healthy");
    let reqs = sim.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].query.as_deref(), Some("limit=1"));
}

#[tokio::test]
async fn invalid_provider_data_is_kept_with_a_warning() {
    let sim = start().await;
    sim.seed_json([
        json!({"id": "bad0000000000001", "username": "nophone", "phone_number": "call me maybe",
               "display_name": "No Phone", "created_at": "yesterday"}),
        json!({"id": "bad0000000000002", "username": "   ", "phone_number": "+1 555 000",
               "avatar_url": "", "display_name": null}),
        json!({"id": "ok00000000000003", "username": "fine", "phone_number": "1-800-759-3000"}),
    ]);
    let listing = list_all(&client(&sim)).await.expect("lists");
    assert_eq!(listing.contacts.len(), 3, "nothing dropped");

    let c = by_id(&listing.contacts, "bad0000000000001");
    let phone = c.phone.as_ref().expect("kept");
    assert!(!phone.valid());
    assert_eq!(phone.raw(), "call me maybe");
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].contains("call me maybe"), "{:?}", c.warnings);
    assert_eq!(c.name.as_ref().map(|n| n.display()), Some("No Phone"));

    let c = by_id(&listing.contacts, "bad0000000000002");
    assert!(!c.phone.as_ref().expect("kept").valid());
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.username, None, "blank text is absent");
    assert_eq!(c.avatar_url, None);

    // An invalid value is never written back (the rules block it).
    let a = client(&sim).rules().admit(
        &RecordId::new(KIND, "ok00000000000003"),
        Field::Phone,
        &e164("1-800-759-3000"),
        &FieldValue::Scalar(c.phone.clone()),
        &NoHolders,
    );
    assert_eq!(a.write, None);
    assert_eq!(a.blocked[0].rule, RuleId::InvalidFormat);
}

#[tokio::test]
async fn fixture_contacts_map_correctly() {
    let text = include_str!("fixtures/protocol/contacts.json");
    let fixture: Vec<Json> = serde_json::from_str(text).expect("fixture is JSON");
    let sim = start().await;
    sim.seed_json(fixture);
    let listing = list_all(&client(&sim)).await.expect("lists");
    assert_eq!(listing.contacts.len(), 3);

    let frank = by_id(&listing.contacts, "WAz8eIbvDR60rouK");
    assert_eq!(
        frank.name, None,
        "display_name null defaults to the username"
    );
    assert_eq!(raw_key(&frank.username), Some("FrankMcCallister"));
    assert_eq!(raw_key(&frank.phone), Some("+18007593000"));
    assert_eq!(
        raw_key(&frank.avatar_url),
        Some("https://assets.protocol.chat/avatars/frank.jpg")
    );
    assert_eq!(frank.updated_at, None);

    let kevin = by_id(&listing.contacts, "hSIhXBhNe8X1d8Et");
    let name = kevin.name.as_ref().expect("named");
    assert_eq!(name.display(), "Kevin McCallister");
    assert_eq!(name.given(), Some("Kevin"));
    assert_eq!(name.family(), Some("McCallister"));
    assert_eq!(raw_key(&kevin.phone), Some("+442079460958"));
    assert_eq!(kevin.avatar_url, None);
    assert_eq!(kevin.updated_at.map(|t| t.timestamp()), Some(705_103_300));

    let john = by_id(&listing.contacts, "q7RmZ2xW9vN4kT1s");
    assert_eq!(john.name.as_ref().map(|n| n.display()), Some("John Smith"));
    assert_eq!(raw_key(&john.phone), Some("+14155550101"));
    assert!(listing.contacts.iter().all(|c| c.warnings.is_empty()));
}

#[tokio::test]
async fn ids_are_encoded_and_never_reach_another_endpoint() {
    let sim = start().await;
    let nasty = "x/../../admin?y=1#f";
    sim.seed_json([
        json!({"id": nasty, "username": "nasty", "phone_number": "1-800-759-3000"}),
        json!({"id": "admin", "username": "admin", "phone_number": "1-800-759-3001"}),
    ]);
    let p = client(&sim);
    p.apply(&patch(nasty, vec![(Field::Name, s("Encoded"))]))
        .await
        .expect("accepted");
    let writes = sim.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].path, "/v1/contacts/x%2F..%2F..%2Fadmin%3Fy=1%23f");
    assert_eq!(writes[0].query, None);
    assert_eq!(
        sim.contact(nasty).expect("there")["display_name"],
        "Encoded"
    );
    assert_eq!(
        sim.contact("admin").expect("there")["display_name"],
        Json::Null
    );

    // Ids a URL parser would collapse are refused before anything is sent.
    for bad in ["..", ".", "", "%2e%2E"] {
        let err = p
            .apply(&patch(bad, vec![(Field::Name, s("X"))]))
            .await
            .expect_err("refused");
        assert!(matches!(err, ProviderError::Protocol { .. }), "{err}");
    }
    assert_eq!(sim.writes().len(), 1);

    // The listing cursor is a query value, encoded too.
    let listing = list_all(
        &AnyProvider::build(&config(&sim, &sim.token(), false, 1), normalizer()).expect("builds"),
    )
    .await
    .expect("lists");
    assert_eq!(listing.contacts.len(), 2);
}

#[tokio::test]
async fn list_parameters_are_validated_like_the_provider() {
    let sim = start().await;
    sim.seed_people(&people(15));
    let (status, _, body) = raw(&sim, Method::GET, "/v1/contacts", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["data"].as_array().map(Vec::len),
        Some(10),
        "default limit is 10"
    );
    assert_eq!(body["has_more"], true);
    for q in ["limit=0", "limit=101", "limit=ten", "starting_after=nope"] {
        let (status, _, body) = raw(&sim, Method::GET, &format!("/v1/contacts?{q}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}");
        assert_envelope(&body, "invalid_request");
    }
    let (status, _, body) = raw(&sim, Method::GET, "/v1/contacts?limit=100", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["has_more"], false);
}

#[tokio::test]
async fn create_retrieve_and_delete_follow_the_overview_page() {
    let sim = start().await;
    let (status, _, body) = raw(
        &sim,
        Method::POST,
        "/v1/contacts",
        Some(json!({"username": "FrankMcCallister"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "phone_number is required");
    assert_envelope(&body, "invalid_request");

    let (status, _, created) = raw(
        &sim,
        Method::POST,
        "/v1/contacts",
        Some(json!({"username": "FrankMcCallister", "phone_number": "1-800-759-3000"})),
    )
    .await;
    assert!(status.is_success(), "{status}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(id.len(), 16);
    assert_eq!(created["display_name"], Json::Null);
    assert!(created["created_at"].as_i64().is_some());

    let (status, _, got) = raw(&sim, Method::GET, &format!("/v1/contacts/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, created);

    let (status, _, _) = raw(&sim, Method::DELETE, &format!("/v1/contacts/{id}"), None).await;
    assert!(status.is_success());
    let (status, _, body) = raw(&sim, Method::GET, &format!("/v1/contacts/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, "not_found");
    let (status, _, body) = raw(
        &sim,
        Method::PATCH,
        &format!("/v1/contacts/{id}"),
        Some(json!({"username": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, "not_found");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_the_adapter_waits() {
    let sim = start().await;
    sim.seed_people(&people(3));
    sim.set_quotas(vec![SimQuota {
        name: "Minute",
        limit: 1,
        period: Duration::from_secs(60),
    }]);
    let (status, _, _) = raw(&sim, Method::GET, "/v1/contacts", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, body) = raw(&sim, Method::GET, "/v1/contacts", None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_envelope(&body, "rate_limited");
    let secs: u64 = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=60).contains(&secs));

    // One injected 429 with Retry-After: 1 is waited out, then the listing completes.
    sim.set_quotas(vec![]);
    sim.clear_requests();
    sim.inject(
        FaultRule::always(Fault::RateLimited {
            retry_after: Some(1),
        })
        .on(Method::GET)
        .times(1),
    );
    let listing = list_all(&client(&sim)).await.expect("lists after waiting");
    assert_eq!(listing.contacts.len(), 3);
    let statuses: Vec<_> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 200]);
}

#[tokio::test]
async fn a_response_of_the_wrong_shape_is_a_decode_error() {
    let sim = start().await;
    sim.inject(FaultRule::always(Fault::WrongShape).on(Method::GET));
    let err = list_all(&client(&sim)).await.expect_err("wrong shape");
    assert!(matches!(err, ProviderError::Decode { .. }), "{err}");
}
