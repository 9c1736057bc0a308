//! Chatwoot adapter against the Chatwoot simulator, over real HTTP on loopback.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::time::Duration;

use contact_sync::budget::Rate;
use contact_sync::config::{
    ChatwootUpdateApi, Guard, ProviderConfig, ProviderSpecific, Secret, SecretSource,
};
use contact_sync::model::{
    Change, Contact, Field, FieldMap, FieldValue, Normalizer, Patch, ProviderKind, RecordId, Value,
};
use contact_sync::provider::http::HttpSettings;
use contact_sync::provider::rules::{Holders, RuleId};
use contact_sync::provider::{list_all, AnyProvider, ProviderError};
use contact_sync::sim::{Fault, FaultRule, SeedPerson, Sim, SimOptions, SimQuota};
use hmac::{Hmac, Mac};
use serde_json::{json, Value as Json};
use sha2::Sha256;

const KIND: ProviderKind = ProviderKind::Chatwoot;

async fn start() -> Sim {
    Sim::start(KIND, SimOptions::for_provider(KIND).unlimited())
        .await
        .expect("simulator starts")
}

/// A config pointing at `sim`, with its token, account, inbox and (optionally) HMAC token.
fn config(sim: &Sim, hmac: Option<&str>) -> ProviderConfig {
    let opts = sim.shared().options();
    config_for(
        sim.base_url(),
        &sim.token(),
        &opts.chatwoot.inbox_identifier,
        hmac,
    )
}

fn config_for(
    base_url: url::Url,
    token: &str,
    inbox_identifier: &str,
    hmac: Option<&str>,
) -> ProviderConfig {
    let defaults = SimOptions::for_provider(KIND).chatwoot;
    ProviderConfig {
        role: contact_sync::config::Role::Both,
        create: None,
        max_creates: contact_sync::config::DEFAULT_MAX_CREATES,
        kind: KIND,
        base_url,
        token: SecretSource::Literal(Secret::new(token)),
        rate: Rate {
            requests: NonZeroU32::new(10_000).expect("non-zero"),
            per: Duration::from_secs(1),
        },
        share: 1.0,
        http: HttpSettings {
            max_retries: 0,
            timeout: Duration::from_secs(5),
            ..HttpSettings::default()
        },
        max_concurrency: 4,
        guard: Guard {
            max_change_share: 1.0,
            max_clears: 1000,
            min_records: 0,
        },
        min_scan_interval: None,
        specific: ProviderSpecific::Chatwoot {
            account_id: defaults.account_id,
            inbox_id: defaults.inbox_id,
            inbox_identifier: Some(SecretSource::Literal(Secret::new(inbox_identifier))),
            hmac_token: hmac.map(|h| SecretSource::Literal(Secret::new(h))),
            sort: "name".into(),
            // These tests exercise the public API; `tests/chatwoot_application.rs` covers the
            // default application mode.
            update_api: ChatwootUpdateApi::Public,
            known_labels: BTreeSet::new(),
        },
    }
}

fn build(cfg: &ProviderConfig) -> AnyProvider {
    AnyProvider::build(cfg, Normalizer::new("US").expect("region")).expect("adapter builds")
}

fn person(i: u64) -> SeedPerson {
    SeedPerson {
        name: Some(format!("Person {i:03}")),
        email: Some(format!("Person{i}@Example.com")),
        phone: Some(format!("+1415555{i:04}")),
        identifier: i.is_multiple_of(3).then(|| format!("crm-{i}")),
        custom_fields: if i.is_multiple_of(2) {
            [("tier".to_owned(), "gold".to_owned())].into()
        } else {
            BTreeMap::new()
        },
        ..SeedPerson::default()
    }
}

fn seed(sim: &Sim, n: u64) -> Vec<String> {
    let people: Vec<SeedPerson> = (1..=n).map(person).collect();
    sim.seed_people(&people)
}

/// The `source_id` of a stored contact's first session.
fn source_id(sim: &Sim, id: &str) -> String {
    sim.contact(id).expect("stored")["contact_inboxes"][0]["source_id"]
        .as_str()
        .expect("source_id")
        .to_owned()
}

fn public_path(sim: &Sim, source_id: &str) -> String {
    let ident = sim.shared().options().chatwoot.inbox_identifier;
    format!("/public/api/v1/inboxes/{ident}/contacts/{source_id}")
}

fn scalar(raw: &str) -> FieldValue {
    FieldValue::Scalar(Some(Value::plain(raw)))
}

fn email(raw: &str) -> FieldValue {
    FieldValue::Scalar(Normalizer::default().email(raw).0)
}

fn patch(id: &str, update_ref: &str, changes: Vec<Change>) -> Patch {
    Patch {
        record: RecordId::new(KIND, id),
        update_ref: update_ref.into(),
        changes,
    }
}

fn change(field: Field, old: FieldValue, new: FieldValue) -> Change {
    Change { field, old, new }
}

async fn listed(provider: &AnyProvider) -> Vec<Contact> {
    list_all(provider).await.expect("listing").contacts
}

fn find<'a>(contacts: &'a [Contact], id: &str) -> &'a Contact {
    contacts
        .iter()
        .find(|c| c.id.native == id)
        .expect("contact listed")
}

fn hmac_hex(key: &str, message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Raw HTTP, to probe the simulator the way Chatwoot's own clients would.
struct Raw {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Raw {
    fn new(sim: &Sim) -> Self {
        Raw {
            client: reqwest::Client::new(),
            base: sim.base_url().as_str().trim_end_matches('/').to_owned(),
            token: sim.token(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Json>,
        auth: bool,
    ) -> (u16, Json, reqwest::header::HeaderMap) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if auth {
            req = req.header("api_access_token", &self.token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Json::String(text));
        (status, json, headers)
    }

    async fn app(&self, method: reqwest::Method, path: &str, body: Option<Json>) -> (u16, Json) {
        let (s, j, _) = self.send(method, path, body, true).await;
        (s, j)
    }

    async fn public(&self, method: reqwest::Method, path: &str, body: Option<Json>) -> (u16, Json) {
        let (s, j, _) = self.send(method, path, body, false).await;
        (s, j)
    }
}

/// Knows which listed record holds each e-mail and phone, as the reconciler does.
struct Listed(Vec<Contact>);

impl Holders for Listed {
    fn held_by_other(
        &self,
        provider: ProviderKind,
        field: Field,
        key: &str,
        except: &RecordId,
    ) -> Option<RecordId> {
        self.0
            .iter()
            .filter(|c| c.id.provider == provider && c.id != *except)
            .find(|c| match c.get(field) {
                FieldValue::Scalar(Some(v)) => v.key() == key,
                _ => false,
            })
            .map(|c| c.id.clone())
    }
}

// ----- 1. Paging ---------------------------------------------------------------------------

#[tokio::test]
async fn lists_every_contact_once_across_pages_and_maps_them() {
    let sim = start().await;
    seed(&sim, 260);
    let provider = build(&config(&sim, None));

    let listing = list_all(&provider).await.expect("listing");
    assert_eq!(listing.contacts.len(), 260);
    assert_eq!(listing.duplicates, 0);
    assert_eq!(
        listing.pages, 18,
        "15 per page, stops once meta.count is seen"
    );
    let ids: BTreeSet<_> = listing
        .contacts
        .iter()
        .map(|c| c.id.native.clone())
        .collect();
    assert_eq!(ids.len(), 260);

    // Every page request passes `sort` and a page number, and no empty page was fetched.
    let pages: Vec<String> = sim
        .requests()
        .iter()
        .map(|r| r.query.clone().unwrap_or_default())
        .collect();
    assert_eq!(pages.len(), 18);
    for (i, q) in pages.iter().enumerate() {
        assert!(q.contains(&format!("page={}", i + 1)), "{q}");
        assert!(q.contains("sort=name"), "{q}");
    }

    for id in ["7", "150", "260"] {
        let n: u64 = id.parse().expect("numeric id");
        let c = find(&listing.contacts, id);
        assert_eq!(c.id.provider, KIND);
        assert_eq!(
            c.name.as_ref().map(|n| n.display().to_owned()),
            Some(format!("Person {n:03}"))
        );
        let e = c.email.as_ref().expect("email");
        // Stored downcased by Chatwoot's model.
        assert_eq!(e.raw(), format!("person{n}@example.com"));
        assert_eq!(e.key(), format!("person{n}@example.com"));
        let p = c.phone.as_ref().expect("phone");
        assert_eq!(p.key(), format!("+1415555{n:04}"));
        assert!(p.valid(), "{p:?}");
        assert_eq!(
            c.external_id.as_ref().map(|v| v.raw().to_owned()),
            n.is_multiple_of(3).then(|| format!("crm-{n}"))
        );
        assert_eq!(
            c.custom_fields.get("tier").map(|s| s.as_str()),
            n.is_multiple_of(2).then_some("gold")
        );
        assert_eq!(c.update_ref.as_deref(), Some(source_id(&sim, id).as_str()));
        assert_eq!(c.write_blocked, None);
        assert!(c.tags.is_empty());
        assert!(c.avatar_url.is_none());
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }
}

#[tokio::test]
async fn listing_does_not_assume_the_page_size() {
    let sim = start().await;
    seed(&sim, 40);
    sim.configure(|o| o.page_size = Some(7));
    let provider = build(&config(&sim, None));
    let listing = list_all(&provider).await.expect("listing");
    assert_eq!(listing.contacts.len(), 40);
    assert_eq!(listing.pages, 6);
}

// ----- 2. Updates --------------------------------------------------------------------------

#[tokio::test]
async fn apply_sends_one_patch_with_exactly_the_changed_fields() {
    let sim = start().await;
    seed(&sim, 3);
    sim.modify("2", |c| {
        c["custom_attributes"] = json!({"tier": "gold", "city": "Paris", "visits": 3});
    });
    let before_1 = sim.contact("1").expect("stored");
    let before_2 = sim.contact("2").expect("stored");
    let provider = build(&config(&sim, None));
    let current = find(&listed(&provider).await, "2").clone();
    sim.clear_requests();

    let src = source_id(&sim, "2");
    let mut new_custom = current.custom_fields.clone();
    new_custom.insert("city", "Lyon");
    new_custom.insert("segment", "b2b");
    let p = patch(
        "2",
        &src,
        vec![
            change(Field::Name, current.get(Field::Name), scalar("Ada King")),
            change(
                Field::Email,
                current.get(Field::Email),
                email("ada.king@example.org"),
            ),
            change(
                Field::CustomFields,
                current.get(Field::CustomFields),
                FieldValue::Map(new_custom.clone()),
            ),
        ],
    );
    let written = provider.apply(&p).await.expect("applied");

    let writes = sim.writes();
    assert_eq!(writes.len(), 1, "one request per record");
    let w = &writes[0];
    assert_eq!(w.method, reqwest::Method::PATCH);
    assert_eq!(w.path, public_path(&sim, &src));
    assert_eq!(w.status, 200);
    let body = w.body.as_ref().expect("JSON body");
    let keys: BTreeSet<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["custom_attributes", "email", "name"].into());
    assert_eq!(body["name"], "Ada King");
    assert_eq!(body["email"], "ada.king@example.org");
    assert_eq!(
        body["custom_attributes"],
        json!({"city": "Lyon", "segment": "b2b"}),
        "only changed keys"
    );
    let other: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| !r.is_write())
        .map(|r| r.path)
        .collect();
    assert_eq!(
        other,
        vec!["/api/v1/accounts/7/contacts/search".to_owned()],
        "only the merge re-check before the write"
    );

    let after = sim.contact("2").expect("still there");
    assert_eq!(after["name"], "Ada King");
    assert_eq!(after["email"], "ada.king@example.org");
    assert_eq!(
        after["custom_attributes"],
        json!({"tier": "gold", "city": "Lyon", "visits": 3, "segment": "b2b"})
    );
    for untouched in [
        "phone_number",
        "identifier",
        "contact_inboxes",
        "created_at",
        "thumbnail",
    ] {
        assert_eq!(after[untouched], before_2[untouched], "{untouched}");
    }
    assert!(after["updated_at"].as_i64() > before_2["updated_at"].as_i64());
    assert_eq!(sim.contact("1"), Some(before_1), "other contacts untouched");

    assert_eq!(written.id, RecordId::new(KIND, "2"));
    assert_eq!(written.update_ref.as_deref(), Some(src.as_str()));
    assert_eq!(written.name.as_ref().map(|n| n.display()), Some("Ada King"));
    assert_eq!(
        written.email.as_ref().map(|v| v.key()),
        Some("ada.king@example.org")
    );
    assert_eq!(
        written.custom_fields,
        [
            ("city", "Lyon"),
            ("segment", "b2b"),
            ("tier", "gold"),
            ("visits", "3")
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    );
    assert!(written.updated_at.is_some());
}

#[tokio::test]
async fn reformatted_echoes_compare_equal() {
    let sim = start().await;
    seed(&sim, 2);
    sim.configure(|o| o.reformat_on_write = true);
    let provider = build(&config(&sim, None));
    let src = source_id(&sim, "1");
    let new = email("new.mail@example.org");
    let written = provider
        .apply(&patch(
            "1",
            &src,
            vec![change(
                Field::Email,
                email("Person1@Example.com"),
                new.clone(),
            )],
        ))
        .await
        .expect("a case change is not a discarded value");
    // Chatwoot downcases e-mails on save (`prepare_email_attribute`).
    assert_eq!(
        sim.contact("1").expect("stored")["email"],
        "new.mail@example.org"
    );
    assert!(written.get(Field::Email).same_as(&new));
    let relisted = find(&listed(&provider).await, "1").get(Field::Email);
    assert!(relisted.same_as(&new), "no echo write: {relisted}");
}

#[tokio::test]
async fn a_value_chatwoot_silently_discards_is_reported() {
    let sim = start().await;
    seed(&sim, 1);
    let provider = build(&config(&sim, None));
    let src = source_id(&sim, "1");
    // The rules would block this (invalid e-mail); sent anyway, Chatwoot's public update
    // answers 422 (no `discard_invalid_attrs`) and keeps the old value.
    let err = provider
        .apply(&patch(
            "1",
            &src,
            vec![change(
                Field::Email,
                email("Person1@Example.com"),
                scalar("broken@"),
            )],
        ))
        .await
        .expect_err("not stored");
    assert!(
        matches!(err, ProviderError::Rejected { status: 422, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("Invalid email"), "{err}");
    assert_eq!(
        sim.contact("1").expect("stored")["email"],
        "person1@example.com"
    );
}

#[tokio::test]
async fn writes_chatwoot_would_ignore_are_refused_before_sending() {
    let sim = start().await;
    seed(&sim, 1);
    let provider = build(&config(&sim, None));
    let src = source_id(&sim, "1");
    for c in [
        change(Field::Name, scalar("Person 001"), FieldValue::Scalar(None)),
        change(
            Field::CustomFields,
            FieldValue::Map(FieldMap::new()),
            FieldValue::Map([("tier".to_owned(), String::new())].into()),
        ),
        change(Field::ExternalId, FieldValue::Scalar(None), scalar("crm-9")),
        change(
            Field::AvatarUrl,
            FieldValue::Scalar(None),
            scalar("https://example.org/a.png"),
        ),
    ] {
        let field = c.field;
        let err = provider
            .apply(&patch("1", &src, vec![c]))
            .await
            .expect_err("refused");
        assert!(
            matches!(err, ProviderError::Protocol { .. }),
            "{field}: {err:?}"
        );
    }
    assert!(sim.requests().is_empty(), "nothing was sent");
}

// ----- 3. Rules: enforced by the simulator and known to the adapter --------------------------

#[tokio::test]
async fn application_api_validates_like_chatwoot() {
    let sim = start().await;
    seed(&sim, 3);
    let raw = Raw::new(&sim);
    let path = |id: &str| format!("/api/v1/accounts/7/contacts/{id}");
    let before = sim.contact("1").expect("stored");
    let cases = [
        (
            json!({"email": "not an email"}),
            "Email Invalid email",
            "email",
        ),
        (
            json!({"phone_number": "4155550101"}),
            "Phone number should be in e164 format",
            "phone_number",
        ),
        (
            json!({"name": "n".repeat(256)}),
            "Name is too long (maximum is 255 characters)",
            "name",
        ),
        (
            json!({"email": "PERSON2@example.COM"}),
            "Email has already been taken",
            "email",
        ),
        (
            json!({"phone_number": "+14155550002"}),
            "Phone number has already been taken",
            "phone_number",
        ),
        (
            json!({"identifier": "crm-3"}),
            "Identifier has already been taken",
            "identifier",
        ),
    ];
    for (body, message, attribute) in cases {
        let (status, answer) = raw.app(reqwest::Method::PUT, &path("1"), Some(body)).await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(
            answer,
            json!({"message": message, "attributes": [attribute]})
        );
        assert_eq!(sim.contact("1"), Some(before.clone()), "nothing changed");
    }
    let (status, answer) = raw
        .app(
            reqwest::Method::PUT,
            &path("1"),
            Some(json!({"email": "x", "phone_number": "1"})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        answer,
        json!({"message": "Email Invalid email, Phone number should be in e164 format", "attributes": ["email", "phone_number"]})
    );
    let (status, answer) = raw
        .app(
            reqwest::Method::POST,
            "/api/v1/accounts/7/contacts",
            Some(json!({"inbox_id": 3, "name": "Dup", "email": "person3@example.com"})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(answer["message"], "Email has already been taken");
    assert_eq!(sim.contacts().len(), 3);

    // A valid update goes through and answers the show payload.
    let (status, answer) = raw
        .app(
            reqwest::Method::PUT,
            &path("1"),
            Some(json!({"name": "Renamed", "custom_attributes": {"k": "v"}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["payload"]["name"], "Renamed");
    assert_eq!(answer["payload"]["custom_attributes"]["k"], "v");
    assert!(answer["payload"]["contact_inboxes"].is_array());

    // Wrong account, wrong contact, no token.
    let (status, answer) = raw
        .app(reqwest::Method::GET, "/api/v1/accounts/8/contacts", None)
        .await;
    assert_eq!(
        (status, answer),
        (404, json!({"error": "Resource could not be found"}))
    );
    let (status, _) = raw.app(reqwest::Method::GET, &path("999"), None).await;
    assert_eq!(status, 404);
    let (status, answer, _) = raw
        .send(
            reqwest::Method::GET,
            "/api/v1/accounts/7/contacts",
            None,
            false,
        )
        .await;
    assert_eq!(
        (status, answer),
        (
            401,
            json!({"error": "You need to sign in or sign up before continuing."})
        )
    );
}

#[tokio::test]
async fn adapter_rules_block_what_chatwoot_rejects_or_ignores() {
    let sim = start().await;
    seed(&sim, 3);
    let provider = build(&config(&sim, None));
    let contacts = listed(&provider).await;
    let holders = Listed(contacts.clone());
    let rules = provider.rules();
    let one = find(&contacts, "1");
    let admit = |field: Field, new: FieldValue| {
        rules.admit(&one.id, field, &one.get(field), &new, &holders)
    };
    let blocked_by = |field: Field, new: FieldValue| {
        let a = admit(field, new);
        assert_eq!(a.write, None, "{field} must not be written");
        a.blocked.first().map(|b| b.rule)
    };

    assert_eq!(
        blocked_by(Field::Email, email("Person2@EXAMPLE.com")),
        Some(RuleId::WouldMergeContacts)
    );
    let two_phone = find(&contacts, "2").get(Field::Phone);
    assert_eq!(
        blocked_by(Field::Phone, two_phone),
        Some(RuleId::WouldMergeContacts)
    );
    assert_eq!(
        blocked_by(Field::Email, email("not an email")),
        Some(RuleId::InvalidFormat)
    );
    assert_eq!(
        blocked_by(Field::Phone, scalar("4155550101")),
        Some(RuleId::InvalidFormat)
    );
    assert_eq!(
        blocked_by(Field::Name, scalar(&"n".repeat(256))),
        Some(RuleId::InvalidFormat)
    );
    assert_eq!(
        blocked_by(Field::Email, FieldValue::Scalar(None)),
        Some(RuleId::NotClearable)
    );
    assert_eq!(
        blocked_by(Field::Name, FieldValue::Scalar(None)),
        Some(RuleId::NotClearable)
    );
    assert_eq!(
        blocked_by(Field::ExternalId, scalar("crm-new")),
        Some(RuleId::ReadOnly)
    );
    // Unsupported fields are neither written nor reported.
    assert_eq!(
        blocked_by(Field::AvatarUrl, scalar("https://x/a.png")),
        None
    );
    assert_eq!(
        blocked_by(Field::Tags, FieldValue::Set(["vip".to_owned()].into())),
        None
    );
    assert_eq!(blocked_by(Field::Username, scalar("ada")), None);

    // Custom attributes: keys can be added and changed, never removed.
    let two = find(&contacts, "2");
    let a = rules.admit(
        &two.id,
        Field::CustomFields,
        &two.get(Field::CustomFields),
        &FieldValue::Map([("city".to_owned(), "Oslo".to_owned())].into()),
        &holders,
    );
    assert_eq!(
        a.write,
        Some(FieldValue::Map(
            [
                ("city".to_owned(), "Oslo".to_owned()),
                ("tier".to_owned(), "gold".to_owned())
            ]
            .into()
        ))
    );
    assert_eq!(a.blocked[0].rule, RuleId::NotClearable);

    // A free e-mail is admitted.
    assert_eq!(
        admit(Field::Email, email("fresh@example.org")).write,
        Some(email("fresh@example.org"))
    );
}

#[tokio::test]
async fn public_api_drops_blanks_ignores_identifier_and_rejects_invalid_values() {
    let sim = start().await;
    seed(&sim, 3);
    let raw = Raw::new(&sim);
    let path = public_path(&sim, &source_id(&sim, "3"));
    let before = sim.contact("3").expect("stored");
    let unchanged = |after: &Json| {
        for k in [
            "name",
            "email",
            "phone_number",
            "identifier",
            "custom_attributes",
        ] {
            assert_eq!(after[k], before[k], "{k}");
        }
    };

    // Blank scalars are dropped: nothing can be cleared (`update_contact` rejects blank
    // values of identifier, name, email, phone) ...
    let (status, answer) = raw
        .public(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"name": "", "email": null, "phone_number": "  "})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    unchanged(&sim.contact("3").expect("stored"));
    assert_eq!(answer["id"], 3);
    // ... and a save that changes nothing keeps `updated_at`.
    assert_eq!(
        sim.contact("3").expect("stored")["updated_at"],
        before["updated_at"]
    );
    assert!(answer.get("contact_inboxes").is_none(), "public record");

    // `identifier` is ignored.
    let (status, answer) = raw
        .public(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"identifier": "crm-new"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["identifier"], "crm-3");
    unchanged(&sim.contact("3").expect("stored"));

    // Invalid values fail the save: 422 `{message, attributes}`, nothing stored (the public
    // update does not pass `discard_invalid_attrs`).
    let (status, answer) = raw
        .public(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"email": "bad", "phone_number": "4155550101", "name": "n".repeat(256), "custom_attributes": {"x": "1"}})),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        answer["attributes"],
        json!(["name", "email", "phone_number"])
    );
    unchanged(&sim.contact("3").expect("stored"));

    // Blank custom attributes are kept as sent (`deep_merge`), `""` and `null` alike.
    let (status, answer) = raw
        .public(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"custom_attributes": {"tier": "", "gone": null}})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["custom_attributes"],
        json!({"tier": "", "gone": null})
    );

    // Custom attributes merge by key.
    let (status, answer) = raw
        .public(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"custom_attributes": {"city": "Oslo"}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["custom_attributes"],
        json!({"tier": "", "gone": null, "city": "Oslo"})
    );
    sim.modify("2", |c| {
        c["custom_attributes"] = json!({"a": "1", "b": "2"})
    });
    let (_, answer) = raw
        .public(
            reqwest::Method::PATCH,
            &public_path(&sim, &source_id(&sim, "2")),
            Some(json!({"custom_attributes": {"b": "3", "c": "4"}})),
        )
        .await;
    assert_eq!(
        answer["custom_attributes"],
        json!({"a": "1", "b": "3", "c": "4"})
    );

    // Wrong inbox identifier, unknown session, a session of another inbox: `find_by!` fails
    // outside any handler, so Rails answers its HTML 404 page.
    let not_found = |answer: &Json| {
        answer
            .as_str()
            .is_some_and(|t| t.starts_with("<!DOCTYPE html>") && t.contains("(404)"))
    };
    let src = source_id(&sim, "3");
    let (status, answer) = raw
        .public(
            reqwest::Method::PATCH,
            &format!("/public/api/v1/inboxes/wrong/contacts/{src}"),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, 404);
    assert!(not_found(&answer), "{answer}");
    let (status, answer) = raw
        .public(
            reqwest::Method::PATCH,
            &public_path(&sim, "no-such-session"),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, 404);
    assert!(not_found(&answer), "{answer}");
    sim.modify("1", |c| c["contact_inboxes"][0]["inbox"]["id"] = json!(9));
    let (status, _) = raw
        .public(
            reqwest::Method::GET,
            &public_path(&sim, &source_id(&sim, "1")),
            None,
        )
        .await;
    assert_eq!(status, 404, "only sessions of the configured inbox");
}

#[tokio::test]
async fn public_patch_with_another_contacts_email_merges_and_deletes_the_contact() {
    let sim = start().await;
    seed(&sim, 3);
    let raw = Raw::new(&sim);
    let src1 = source_id(&sim, "1");
    let src2 = source_id(&sim, "2");
    sim.modify("1", |c| {
        c["identifier"] = json!("crm-1");
        c["custom_attributes"] = json!({"from_1": "yes", "tier": "bronze"});
    });

    let (status, answer) = raw
        .public(
            reqwest::Method::PATCH,
            &public_path(&sim, &src1),
            Some(json!({"email": "PERSON2@example.com", "name": "Merged Name"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["id"], 2, "the answer is the survivor");
    assert_eq!(sim.contact("1"), None, "the updated contact is deleted");
    let survivor = sim.contact("2").expect("survivor");
    assert_eq!(survivor["name"], "Merged Name", "remaining params applied");
    assert_eq!(survivor["email"], "person2@example.com", "stored downcased");
    assert_eq!(
        survivor["identifier"], "crm-1",
        "blank filled from the mergee"
    );
    assert_eq!(
        survivor["custom_attributes"],
        json!({"from_1": "yes", "tier": "gold"}),
        "the survivor's own values win"
    );
    let sessions: Vec<&str> = survivor["contact_inboxes"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|ci| ci["source_id"].as_str())
        .collect();
    assert_eq!(sessions, [src2.as_str(), src1.as_str()]);

    // A phone another contact holds merges too.
    let (_, answer) = raw
        .public(
            reqwest::Method::PATCH,
            &public_path(&sim, &source_id(&sim, "3")),
            Some(json!({"phone_number": "+14155550002"})),
        )
        .await;
    assert_eq!(answer["id"], 2);
    assert_eq!(sim.contact("3"), None);
    assert_eq!(sim.contacts().len(), 1);
}

#[tokio::test]
async fn adapter_reports_a_merge_instead_of_succeeding() {
    let sim = start().await;
    seed(&sim, 2);
    let provider = build(&config(&sim, None));
    let contacts = listed(&provider).await;
    let one = find(&contacts, "1");
    let taken = email("person2@EXAMPLE.com");

    // Planning blocks this write ...
    let a = provider.rules().admit(
        &one.id,
        Field::Email,
        &one.get(Field::Email),
        &taken,
        &Listed(contacts.clone()),
    );
    assert_eq!(a.blocked[0].rule, RuleId::WouldMergeContacts);

    // ... should one slip through the plan (another contact took the e-mail after the
    // listing), the re-check right before the write skips it: nothing is sent, nothing merged.
    let err = provider
        .apply(&patch(
            "1",
            one.update_ref.as_deref().expect("writable"),
            vec![change(Field::Email, one.get(Field::Email), taken.clone())],
        ))
        .await
        .expect_err("the re-check skips it");
    assert!(err.to_string().contains("would-merge-contacts"), "{err}");
    assert!(sim.writes().is_empty(), "no PATCH was sent");
    assert!(sim.contact("1").is_some(), "contact 1 is intact");

    // ... and when the e-mail is taken between the re-check and the PATCH itself, the adapter
    // does not report success.
    sim.modify("2", |c| c["email"] = json!("elsewhere@example.com"));
    sim.inject(
        FaultRule::always(Fault::Mutate(std::sync::Arc::new(|store| {
            if let Some(c) = store.get_mut("2") {
                c["email"] = json!("person2@example.com");
            }
        })))
        .on(reqwest::Method::PATCH),
    );
    let err = provider
        .apply(&patch(
            "1",
            one.update_ref.as_deref().expect("writable"),
            vec![change(Field::Email, one.get(Field::Email), taken)],
        ))
        .await
        .expect_err("a merge is not a success");
    assert!(matches!(err, ProviderError::Rejected { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("Chatwoot merged contact 1 into contact 2"),
        "{text}"
    );
    assert!(sim.contact("1").is_none());
    assert_eq!(
        sim.contact("2").expect("survivor")["contact_inboxes"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

#[tokio::test]
async fn hmac_is_required_when_configured_and_the_adapter_signs_the_identifier() {
    let sim = start().await;
    seed(&sim, 3);
    let key = "inbox-hmac-token";
    sim.configure(|o| o.chatwoot.hmac_token = Some(key.into()));
    let raw = Raw::new(&sim);
    let src3 = source_id(&sim, "3");
    // A failed check raises a `StandardError` no handler catches: Rails' 500 page.
    let hmac_failed = |status: u16, answer: &Json| {
        status == 500 && answer.as_str().is_some_and(|t| t.contains("(500)"))
    };
    let (status, answer) = raw
        .public(
            reqwest::Method::PATCH,
            &public_path(&sim, &src3),
            Some(json!({"name": "x"})),
        )
        .await;
    assert!(hmac_failed(status, &answer), "{status} {answer}");
    let (status, answer) = raw
        .public(
            reqwest::Method::PATCH,
            &public_path(&sim, &src3),
            Some(json!({"name": "x", "identifier": "crm-3", "identifier_hash": hmac_hex("wrong", "crm-3")})),
        )
        .await;
    assert!(hmac_failed(status, &answer), "{status} {answer}");
    assert_eq!(sim.contact("3").expect("stored")["name"], "Person 003");

    // The adapter signs the contact's current identifier (known from the listing).
    let provider = build(&config(&sim, Some(key)));
    provider.healthcheck().await.expect("healthy with HMAC");
    listed(&provider).await;
    sim.clear_requests();
    provider
        .apply(&patch(
            "3",
            &src3,
            vec![change(Field::Name, scalar("Person 003"), scalar("Signed"))],
        ))
        .await
        .expect("signed update");
    let writes = sim.writes();
    assert_eq!(writes.len(), 1);
    let body = writes[0].body.as_ref().expect("body");
    assert_eq!(body["identifier"], "crm-3");
    assert_eq!(body["identifier_hash"], hmac_hex(key, "crm-3"));
    assert_eq!(sim.contact("3").expect("stored")["name"], "Signed");
    assert_eq!(sim.requests().len(), 1, "identifier came from the listing");

    // Without a listing, the adapter reads the identifier first; no identifier signs "".
    let fresh = build(&config(&sim, Some(key)));
    sim.clear_requests();
    let src1 = source_id(&sim, "1");
    fresh
        .apply(&patch(
            "1",
            &src1,
            vec![change(
                Field::Name,
                scalar("Person 001"),
                scalar("Unsigned"),
            )],
        ))
        .await
        .expect("signed update");
    let requests = sim.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, reqwest::Method::GET);
    assert_eq!(requests[0].path, "/api/v1/accounts/7/contacts/1");
    let body = requests[1].body.as_ref().expect("body");
    assert_eq!(body["identifier"], "");
    assert_eq!(body["identifier_hash"], hmac_hex(key, ""));

    // A wrong HMAC token: Chatwoot answers 500; the adapter sends once and reports a
    // configuration error naming `hmac_token`, never the token.
    sim.clear_requests();
    let wrong = build(&config(&sim, Some("not-the-hmac-token")));
    let err = wrong
        .apply(&patch(
            "2",
            &source_id(&sim, "2"),
            vec![change(Field::Name, scalar("Person 002"), scalar("Nope"))],
        ))
        .await
        .expect_err("HMAC fails");
    assert!(
        matches!(err, ProviderError::Rejected { status: 500, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable() && !err.is_fatal_for_provider());
    let text = err.to_string();
    assert!(text.contains("configuration error"), "{text}");
    assert!(text.contains("hmac_token"), "{text}");
    assert!(!text.contains("not-the-hmac-token"), "{text}");
    assert_eq!(
        sim.writes().len(),
        1,
        "one request for the record, no retries"
    );
}

#[tokio::test]
async fn chatwoot_429_is_plain_text_without_retry_after() {
    let sim = start().await;
    seed(&sim, 1);
    sim.set_quotas(vec![SimQuota {
        name: "Minute",
        limit: 1,
        period: Duration::from_secs(60),
    }]);
    let raw = Raw::new(&sim);
    let (first, _, _) = raw
        .send(
            reqwest::Method::GET,
            "/api/v1/accounts/7/contacts",
            None,
            true,
        )
        .await;
    assert_eq!(first, 200);
    let (status, body, headers) = raw
        .send(
            reqwest::Method::GET,
            "/api/v1/accounts/7/contacts",
            None,
            true,
        )
        .await;
    assert_eq!(status, 429);
    assert_eq!(body.as_str().map(str::trim), Some("Retry later"));
    assert!(headers.get("retry-after").is_none());
    assert!(headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain")));

    let provider = build(&config(&sim, None));
    let err = provider.list_page(None).await.expect_err("throttled");
    assert!(
        matches!(
            err,
            ProviderError::RateLimited {
                retry_after: None,
                ..
            }
        ),
        "{err:?}"
    );
}

// ----- 4. Authentication ---------------------------------------------------------------------

#[tokio::test]
async fn a_wrong_token_is_an_auth_error_that_never_shows_the_token() {
    let sim = start().await;
    seed(&sim, 2);
    let secret = "wrong-token-5f1d9c";
    let mut cfg = config(&sim, None);
    cfg.token = SecretSource::Literal(Secret::new(secret));
    let provider = build(&cfg);
    for err in [
        provider.healthcheck().await.expect_err("unauthorised"),
        provider.list_page(None).await.expect_err("unauthorised"),
    ] {
        assert!(
            matches!(err, ProviderError::Auth { status: 401, .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("chatwoot"), "{text}");
        assert!(text.contains("You need to sign in"), "{text}");
        assert!(!text.contains(secret), "{text}");
        assert!(!format!("{err:?}").contains(secret));
    }
    assert!(!format!("{provider:?}").contains(secret));
}

#[tokio::test]
async fn healthcheck_proves_the_account_and_the_public_inbox() {
    let sim = start().await;
    seed(&sim, 2);
    build(&config(&sim, None))
        .healthcheck()
        .await
        .expect("healthy");

    let wrong_inbox = "wrong-inbox-identifier-81c2";
    let cfg = config_for(sim.base_url(), &sim.token(), wrong_inbox, None);
    let err = build(&cfg).healthcheck().await.expect_err("inbox unknown");
    assert!(
        matches!(err, ProviderError::Auth { status: 404, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("inbox_identifier"), "{text}");
    assert!(!text.contains(wrong_inbox), "{text}");

    let mut cfg = config(&sim, None);
    if let ProviderSpecific::Chatwoot { account_id, .. } = &mut cfg.specific {
        *account_id = 8;
    }
    let err = build(&cfg)
        .healthcheck()
        .await
        .expect_err("account unknown");
    assert!(err.to_string().contains("account_id"), "{err}");
}

// ----- 5. Invalid provider data --------------------------------------------------------------

#[tokio::test]
async fn invalid_phone_and_email_are_kept_with_warnings() {
    let sim = start().await;
    seed(&sim, 1);
    sim.modify("1", |c| {
        c["phone_number"] = json!("12345");
        c["email"] = json!("not-an-email");
    });
    let provider = build(&config(&sim, None));
    let contacts = listed(&provider).await;
    let c = find(&contacts, "1");
    let phone = c.phone.as_ref().expect("kept");
    assert_eq!(phone.raw(), "12345");
    assert!(!phone.valid());
    let mail = c.email.as_ref().expect("kept");
    assert_eq!(mail.raw(), "not-an-email");
    assert!(!mail.valid());
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
}

// ----- 6. Fixture ----------------------------------------------------------------------------

#[tokio::test]
async fn fixture_contacts_map_correctly() {
    let sim = start().await;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/chatwoot/contacts.json"
    ))
    .expect("fixture readable");
    let contacts: Vec<Json> = serde_json::from_str(&text).expect("fixture is JSON");
    sim.seed_json(contacts);
    let provider = build(&config(&sim, None));
    let listing = list_all(&provider).await.expect("listing");

    // 104 has no identifier, e-mail or phone: Chatwoot does not list unresolved contacts.
    let ids: Vec<&str> = listing
        .contacts
        .iter()
        .map(|c| c.id.native.as_str())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(!ids.contains(&"104"));

    let grace = find(&listing.contacts, "101");
    let name = grace.name.as_ref().expect("name");
    assert_eq!(name.display(), "Grace Brewster Hopper");
    assert_eq!(name.family(), Some("Hopper"));
    let mail = grace.email.as_ref().expect("email");
    assert_eq!(mail.raw(), "Grace.Hopper@Navy.MIL");
    assert_eq!(mail.key(), "grace.hopper@navy.mil");
    assert_eq!(grace.phone.as_ref().map(|v| v.key()), Some("+12025550143"));
    assert_eq!(grace.external_id.as_ref().map(|v| v.raw()), Some("crm-101"));
    assert_eq!(
        grace.update_ref.as_deref(),
        Some("2f0c6a1e-7c1d-4b8e-9a51-0d6f3c2b9e11"),
        "the session of inbox 3, not of inbox 9"
    );
    assert_eq!(
        grace.avatar_url, None,
        "re-hosted thumbnails are not mapped"
    );
    let expected: BTreeMap<String, String> = [
        ("languages", "[\"en\",\"fr\"]"),
        ("signed_up_at", "2024-03-01"),
        ("tier", "gold"),
        ("visits", "12"),
        ("vip", "true"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(grace.custom_fields, expected.into());
    assert_eq!(
        grace.updated_at.map(|t| t.timestamp()),
        None,
        "the list does not render updated_at"
    );

    let alan = find(&listing.contacts, "102");
    assert_eq!(
        alan.phone.as_ref().map(|v| v.key()),
        Some("+14155550102"),
        "a national number of the default region"
    );
    assert_eq!(alan.email, None);
    assert_eq!(alan.update_ref, None);
    assert_eq!(
        alan.write_blocked.as_deref(),
        Some("no contact_inbox for inbox 3: Chatwoot's public API cannot address this contact")
    );

    let broken = find(&listing.contacts, "103");
    assert_eq!(broken.update_ref, None);
    assert_eq!(broken.external_id, None, "blank identifier is absent");
    assert_eq!(broken.warnings.len(), 2);
}

#[tokio::test]
async fn a_contact_created_without_an_inbox_is_listed_but_not_writable() {
    let sim = start().await;
    seed(&sim, 1);
    let raw = Raw::new(&sim);
    let (status, answer) = raw
        .app(
            reqwest::Method::POST,
            "/api/v1/accounts/7/contacts",
            Some(json!({"name": "No Session", "email": "nosession@example.org"})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["payload"]["contact_inbox"], Json::Null);
    let id = answer["payload"]["contact"]["id"].to_string();
    let (status, answer) = raw
        .app(
            reqwest::Method::POST,
            "/api/v1/accounts/7/contacts",
            Some(json!({"inbox_id": 3, "name": "With Session", "phone_number": "+442079460958"})),
        )
        .await;
    assert_eq!(status, 200);
    let with_session = answer["payload"]["contact_inbox"]["source_id"]
        .as_str()
        .expect("session created")
        .to_owned();

    let provider = build(&config(&sim, None));
    let contacts = listed(&provider).await;
    let c = find(&contacts, &id);
    assert_eq!(c.update_ref, None);
    assert_eq!(
        c.write_blocked.as_deref(),
        Some("no contact_inbox for inbox 3: Chatwoot's public API cannot address this contact")
    );
    let w = find(&contacts, &answer["payload"]["contact"]["id"].to_string());
    assert_eq!(w.update_ref.as_deref(), Some(with_session.as_str()));
}

// ----- 7. Ids are one encoded path segment ---------------------------------------------------

#[tokio::test]
async fn odd_source_ids_are_encoded_and_never_reach_another_endpoint() {
    let sim = start().await;
    seed(&sim, 2);
    let odd = "a/../../b?c=1#d";
    sim.modify("2", |c| c["contact_inboxes"][0]["source_id"] = json!(odd));
    let provider = build(&config(&sim, None));
    let written = provider
        .apply(&patch(
            "2",
            odd,
            vec![change(Field::Name, scalar("Person 002"), scalar("Odd Id"))],
        ))
        .await
        .expect("addressed through its encoded source_id");
    assert_eq!(written.update_ref.as_deref(), Some(odd));
    let writes = sim.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(
        writes[0].path,
        public_path(&sim, "a%2F..%2F..%2Fb%3Fc=1%23d")
    );
    assert_eq!(writes[0].query, None);
    assert_eq!(sim.contact("2").expect("stored")["name"], "Odd Id");
    assert_eq!(sim.contact("1").expect("stored")["name"], "Person 001");

    sim.clear_requests();
    for bad in ["..", ".", ""] {
        let err = provider
            .apply(&patch(
                "1",
                bad,
                vec![change(Field::Name, scalar("Person 001"), scalar("X"))],
            ))
            .await
            .expect_err("unaddressable");
        assert!(matches!(err, ProviderError::Protocol { .. }), "{err:?}");
    }
    assert!(sim.requests().is_empty());
}

// ----- Secrets -------------------------------------------------------------------------------

#[tokio::test]
async fn the_inbox_identifier_never_appears_in_errors() {
    let secret_inbox = "inbox-identifier-7e3a-SECRET";
    // A closed port: the transport error must not carry the URL (its path holds the secret).
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let base = url::Url::parse(&format!("http://{closed}")).expect("url");
    let provider = build(&config_for(base, "token", secret_inbox, Some("hmac-key")));
    let err = provider
        .apply(&patch(
            "1",
            "src-1",
            vec![change(Field::Name, scalar("A"), scalar("B"))],
        ))
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(
            err,
            ProviderError::Transport { .. } | ProviderError::Timeout { .. }
        ),
        "{err:?}"
    );
    let no_hmac = build(&config_for(
        url::Url::parse(&format!("http://{closed}")).expect("url"),
        "token",
        secret_inbox,
        None,
    ));
    let transport = no_hmac
        .apply(&patch(
            "1",
            "src-1",
            vec![change(Field::Name, scalar("A"), scalar("B"))],
        ))
        .await
        .expect_err("nothing listens");

    // A 404 from the public API.
    let sim = start().await;
    seed(&sim, 1);
    sim.configure(|o| o.chatwoot.inbox_identifier = secret_inbox.into());
    let provider_ok = build(&config(&sim, None));
    let not_found = provider_ok
        .apply(&patch(
            "1",
            "no-such-session",
            vec![change(Field::Name, scalar("A"), scalar("B"))],
        ))
        .await
        .expect_err("unknown session");
    assert!(
        matches!(not_found, ProviderError::Rejected { status: 404, .. }),
        "{not_found:?}"
    );
    assert!(not_found.to_string().contains("Not Found"), "{not_found}");

    for e in [&err, &transport, &not_found] {
        let shown = format!("{e} {e:?}");
        let mut source = std::error::Error::source(e);
        let mut chain = String::new();
        while let Some(s) = source {
            chain.push_str(&format!("{s} {s:?}"));
            source = s.source();
        }
        assert!(!shown.contains(secret_inbox), "{shown}");
        assert!(!chain.contains(secret_inbox), "{chain}");
        assert!(!shown.contains("hmac-key"));
    }
    assert!(!format!("{provider:?} {provider_ok:?}").contains(secret_inbox));
}

// ----- Simulator details -----------------------------------------------------------------------

#[tokio::test]
async fn list_sorts_pages_and_counts_resolved_contacts_only() {
    let sim = start().await;
    seed(&sim, 20);
    // An anonymous contact (no identifier, e-mail or phone) is not listed nor counted.
    sim.seed_json([
        json!({"id": 99, "name": "Visitor", "email": null, "phone_number": null,
        "identifier": null, "contact_inboxes": []}),
    ]);
    let raw = Raw::new(&sim);
    let (status, answer) = raw
        .app(
            reqwest::Method::GET,
            "/api/v1/accounts/7/contacts?page=1&sort=-name",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["meta"], json!({"count": 20, "current_page": "1"}));
    let payload = answer["payload"].as_array().expect("payload");
    assert_eq!(payload.len(), 15);
    assert_eq!(payload[0]["name"], "Person 020");
    assert!(
        payload[0].get("updated_at").is_none(),
        "not rendered by the list"
    );
    assert!(payload[0]["contact_inboxes"][0]["source_id"].is_string());
    let (_, answer) = raw
        .app(
            reqwest::Method::GET,
            "/api/v1/accounts/7/contacts?page=2&sort=name",
            None,
        )
        .await;
    assert_eq!(answer["payload"].as_array().map(Vec::len), Some(5));
    assert_eq!(answer["payload"][0]["name"], "Person 016");
    let (_, answer) = raw
        .app(
            reqwest::Method::GET,
            "/api/v1/accounts/7/contacts?page=3",
            None,
        )
        .await;
    assert_eq!(answer["payload"], json!([]));
    assert_eq!(answer["meta"]["count"], 20);
}

#[tokio::test]
async fn a_phone_held_by_a_contact_with_another_email_is_dropped_not_merged() {
    let sim = start().await;
    seed(&sim, 3);
    let raw = Raw::new(&sim);
    // ContactIdentifyAction gives the e-mail priority: the phone of contact 2 (whose e-mail
    // differs from the one sent) is not written and nothing is merged.
    let (status, answer) = raw
        .public(
            reqwest::Method::PATCH,
            &public_path(&sim, &source_id(&sim, "3")),
            Some(json!({"email": "fresh@example.org", "phone_number": "+14155550002"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["id"], 3);
    assert_eq!(answer["email"], "fresh@example.org");
    assert_eq!(answer["phone_number"], "+14155550003");
    assert_eq!(sim.contacts().len(), 3);
}

#[tokio::test]
async fn injected_faults_surface_as_classified_errors() {
    use contact_sync::sim::{Fault, FaultRule};
    let sim = start().await;
    seed(&sim, 2);
    let provider = build(&config(&sim, None));
    sim.inject(
        FaultRule::always(Fault::Truncated)
            .on(reqwest::Method::GET)
            .times(1),
    );
    let err = provider.list_page(None).await.expect_err("truncated body");
    assert!(matches!(err, ProviderError::Decode { .. }), "{err:?}");
    assert_eq!(
        provider
            .list_page(None)
            .await
            .expect("next one is fine")
            .contacts
            .len(),
        2
    );

    sim.inject(
        FaultRule::always(Fault::Status(422))
            .on(reqwest::Method::PATCH)
            .times(1),
    );
    let src = source_id(&sim, "1");
    let p = patch(
        "1",
        &src,
        vec![change(Field::Name, scalar("Person 001"), scalar("Z"))],
    );
    let err = provider.apply(&p).await.expect_err("injected 422");
    assert!(
        matches!(&err, ProviderError::Rejected { status: 422, message, .. } if message == "injected fault"),
        "{err:?}"
    );
    sim.inject(
        FaultRule::always(Fault::Status(503))
            .on(reqwest::Method::PATCH)
            .times(1),
    );
    let err = provider.apply(&p).await.expect_err("injected 503");
    assert!(err.is_retryable(), "{err:?}");
    provider.apply(&p).await.expect("then it goes through");
    assert_eq!(sim.contact("1").expect("stored")["name"], "Z");
}
