//! Callbell adapter against the Callbell simulator, over real HTTP on loopback.

use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroU32;
use std::time::Duration;

use contact_sync::budget::Rate;
use contact_sync::config::{Guard, ProviderConfig, ProviderSpecific, Secret, SecretSource};
use contact_sync::model::{
    Change, Contact, Field, FieldMap, FieldValue, Normalizer, Patch, ProviderKind, TagSet, Value,
};
use contact_sync::provider::http::HttpSettings;
use contact_sync::provider::rules::{NoHolders, RuleId};
use contact_sync::provider::{list_all, AnyProvider, ProviderError};
use contact_sync::sim::{Fault, FaultRule, SeedPerson, Sim, SimOptions, SimQuota};
use reqwest::Method;
use serde_json::json;

const KIND: ProviderKind = ProviderKind::Callbell;

async fn start() -> Sim {
    start_with(SimOptions::for_provider(KIND).unlimited()).await
}

async fn start_with(opts: SimOptions) -> Sim {
    Sim::start(KIND, opts).await.expect("simulator starts")
}

/// A Callbell config pointing at `sim`, knowing the account's tags and fields as the simulator
/// does, with short backoffs so retry tests are quick.
fn config(sim: &Sim, token: &str) -> ProviderConfig {
    let opts = sim.shared().options();
    ProviderConfig {
        kind: KIND,
        role: contact_sync::config::Role::Both,
        create: None,
        max_creates: contact_sync::config::DEFAULT_MAX_CREATES,
        base_url: sim.base_url(),
        token: SecretSource::Literal(Secret::new(token)),
        rate: Rate {
            requests: NonZeroU32::new(300).expect("non-zero"),
            per: Duration::from_secs(1),
        },
        share: 1.0,
        http: HttpSettings {
            timeout: Duration::from_secs(5),
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            ..HttpSettings::default()
        },
        max_concurrency: 4,
        guard: Guard {
            max_change_share: 0.5,
            max_clears: 25,
            min_records: 20,
        },
        min_scan_interval: None,
        specific: ProviderSpecific::Callbell {
            known_tags: opts.callbell_tags.clone(),
            known_custom_fields: opts.callbell_custom_fields.clone(),
            create_source: "whatsapp".into(),
        },
    }
}

fn client(sim: &Sim) -> AnyProvider {
    client_with_token(sim, &sim.token())
}

fn client_with_token(sim: &Sim, token: &str) -> AnyProvider {
    let normalizer = Normalizer::new("US").expect("valid region");
    AnyProvider::build(&config(sim, token), normalizer).expect("adapter builds")
}

fn person(i: usize) -> SeedPerson {
    let phone = match i % 10 {
        7 => None,
        n if n % 3 == 0 => Some(format!("+44 20 7946 {:04}", i % 1000)),
        _ => Some(format!("+1 415 555 {:04}", 100 + i)),
    };
    let mut tags = Vec::new();
    if i.is_multiple_of(2) {
        tags.push("vip".to_string());
    }
    if i.is_multiple_of(5) {
        tags.extend(["lead".to_string(), "wholesale".to_string()]);
    }
    let mut custom_fields = BTreeMap::new();
    if i.is_multiple_of(4) {
        custom_fields.insert("loyalty_tier".into(), format!("tier-{}", i % 3));
    }
    SeedPerson {
        name: Some(format!("Person {i}")),
        email: Some(format!("Person{i}@Example.COM")),
        phone,
        tags,
        custom_fields,
        ..SeedPerson::default()
    }
}

fn by_id(contacts: &[Contact], id: &str) -> Contact {
    contacts
        .iter()
        .find(|c| c.id.native == id)
        .cloned()
        .unwrap_or_else(|| panic!("contact {id} listed"))
}

fn set(items: &[&str]) -> TagSet {
    items.iter().copied().collect()
}

fn map(pairs: &[(&str, &str)]) -> FieldMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn scalar(s: &str) -> FieldValue {
    FieldValue::Scalar(Some(Value::plain(s)))
}

/// A raw request with the simulator's token, for checking what the simulator itself enforces.
async fn raw(
    sim: &Sim,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let url = format!("{}/{path}", sim.base_url().as_str().trim_end_matches('/'));
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(sim.token());
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

#[tokio::test]
async fn lists_every_contact_exactly_once_and_maps_it() {
    let sim = start().await;
    let people: Vec<SeedPerson> = (0..260).map(person).collect();
    let ids = sim.seed_people(&people);
    assert_eq!(ids.len(), 260);
    let p = client(&sim);
    p.healthcheck().await.expect("healthy");

    let listing = list_all(&p).await.expect("listing");
    assert_eq!(listing.contacts.len(), 260);
    assert_eq!(listing.duplicates, 0);
    // 13 full pages of 20, then the empty page that ends the listing.
    assert_eq!(listing.pages, 14);
    let listed: HashSet<&str> = listing
        .contacts
        .iter()
        .map(|c| c.id.native.as_str())
        .collect();
    let seeded: HashSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(listed, seeded);

    let c0 = by_id(&listing.contacts, &ids[0]);
    assert_eq!(c0.name.as_ref().map(|n| n.display()), Some("Person 0"));
    assert_eq!(c0.phone.as_ref().map(|v| v.key()), Some("+442079460000"));
    assert_eq!(c0.tags, set(&["vip", "lead", "wholesale"]));
    assert_eq!(c0.custom_fields, map(&[("loyalty_tier", "tier-0")]));

    let c101 = by_id(&listing.contacts, &ids[101]);
    assert_eq!(c101.phone.as_ref().map(|v| v.key()), Some("+14155550201"));
    assert_eq!(c101.name.as_ref().and_then(|n| n.family()), Some("101"));
    assert!(c101.tags.is_empty() && c101.custom_fields.is_empty());

    let c17 = by_id(&listing.contacts, &ids[17]);
    assert_eq!(c17.phone, None);

    let c259 = by_id(&listing.contacts, &ids[259]);
    assert_eq!(c259.phone.as_ref().map(|v| v.key()), Some("+442079460259"));
    assert_eq!(c259.update_ref.as_deref(), Some(ids[259].as_str()));

    // Callbell has no e-mail field: the seeded addresses are not on the wire at all.
    assert!(listing.contacts.iter().all(|c| c.email.is_none()));
    assert!(listing.contacts.iter().all(|c| c.warnings.is_empty()));
    assert!(listing
        .contacts
        .iter()
        .all(|c| c.phone.as_ref().is_none_or(|p| p.valid())));
    assert!(sim.writes().is_empty());
}

#[tokio::test]
async fn honours_the_simulated_page_size() {
    let mut opts = SimOptions::for_provider(KIND).unlimited();
    opts.page_size = Some(7);
    let sim = start_with(opts).await;
    let people: Vec<SeedPerson> = (0..23).map(person).collect();
    sim.seed_people(&people);
    let listing = list_all(&client(&sim)).await.expect("listing");
    assert_eq!(listing.contacts.len(), 23);
    assert_eq!(listing.pages, 5);
    let pages: Vec<Option<String>> = sim.requests().into_iter().map(|r| r.query).collect();
    assert_eq!(
        pages,
        (1..=5)
            .map(|n| Some(format!("page={n}")))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_page_that_repeats_the_previous_one_stops_the_listing() {
    let sim = start().await;
    let ids = sim.seed_people(&(0..45).map(person).collect::<Vec<_>>());
    let p = client(&sim);
    let first = p.list_page(None).await.expect("page 1");
    assert_eq!(first.contacts.len(), 20);
    assert_eq!(first.next, Some(format!("2:{}", ids[19])));
    // A provider ignoring `page` would answer page 2 with the records that ended page 2 before.
    let err = p
        .list_page(Some(&format!("2:{}", ids[39])))
        .await
        .expect_err("repeated page detected");
    assert!(matches!(err, ProviderError::Protocol { .. }), "{err:?}");
    let bad = p.list_page(Some("seven")).await.expect_err("bad cursor");
    assert!(matches!(bad, ProviderError::Protocol { .. }), "{bad:?}");
}

#[tokio::test]
async fn apply_changes_exactly_the_intended_fields() {
    let sim = start().await;
    let mut seed = person(1);
    seed.avatar_url = Some("https://cdn.example/ada.png".into());
    seed.tags = vec!["lead".into()];
    seed.custom_fields = map(&[("city", "Oslo"), ("loyalty_tier", "silver")]).to_btree();
    let id = sim.seed_people(&[seed, person(2)]).remove(0);
    let before = sim.contact(&id).expect("seeded");
    let p = client(&sim);
    let current = by_id(&list_all(&p).await.expect("listing").contacts, &id);
    sim.clear_requests();

    let patch = Patch {
        record: current.id.clone(),
        update_ref: current.update_ref.clone().expect("writable"),
        changes: vec![
            Change {
                field: Field::Name,
                old: current.get(Field::Name),
                new: scalar("Ada King"),
            },
            Change {
                field: Field::Tags,
                old: current.get(Field::Tags),
                new: FieldValue::Set(set(&["lead", "vip"])),
            },
            Change {
                field: Field::CustomFields,
                old: current.get(Field::CustomFields),
                new: FieldValue::Map(map(&[("city", "Oslo"), ("loyalty_tier", "gold")])),
            },
        ],
    };
    let after = p.apply(&patch).await.expect("applied");
    assert_eq!(after.name.as_ref().map(|n| n.display()), Some("Ada King"));
    assert_eq!(after.tags, set(&["lead", "vip"]));
    assert_eq!(
        after.custom_fields,
        map(&[("city", "Oslo"), ("loyalty_tier", "gold")])
    );
    assert_eq!(after.phone, current.phone);

    let writes = sim.writes();
    assert_eq!(writes.len(), 1, "one PATCH per record");
    let w = &writes[0];
    assert_eq!(w.method, Method::PATCH);
    assert_eq!(w.path, format!("/v1/contacts/{id}"));
    assert_eq!(w.status, 200);
    assert_eq!(
        w.body,
        Some(json!({
            "name": "Ada King",
            "tags": ["lead", "vip"],
            "custom_fields": {"loyalty_tier": "gold"}
        }))
    );

    let stored = sim.contact(&id).expect("still there");
    assert_eq!(stored["name"], "Ada King");
    assert_eq!(stored["tags"], json!(["lead", "vip"]));
    assert_eq!(
        stored["customFields"],
        json!({"city": "Oslo", "loyalty_tier": "gold"})
    );
    for unchanged in [
        "uuid",
        "phoneNumber",
        "avatarUrl",
        "createdAt",
        "source",
        "href",
    ] {
        assert_eq!(
            stored[unchanged], before[unchanged],
            "{unchanged} untouched"
        );
    }
}

#[tokio::test]
async fn reformatted_writes_compare_equal() {
    let mut opts = SimOptions::for_provider(KIND).unlimited();
    opts.reformat_on_write = true;
    let sim = start_with(opts).await;
    let id = sim.seed_people(&[person(1)]).remove(0);
    let p = client(&sim);
    let current = by_id(&list_all(&p).await.expect("listing").contacts, &id);
    let want = FieldValue::Set(set(&["lead", "vip", "wholesale"]));
    let patch = Patch {
        record: current.id.clone(),
        update_ref: id.as_str().into(),
        changes: vec![Change {
            field: Field::Tags,
            old: current.get(Field::Tags),
            new: want.clone(),
        }],
    };
    let after = p.apply(&patch).await.expect("applied");
    // The simulator stored the tags in another order; the model sees the same set.
    assert_eq!(
        sim.contact(&id).expect("stored")["tags"],
        json!(["wholesale", "vip", "lead"])
    );
    assert!(after.get(Field::Tags).same_as(&want));
    let relisted = by_id(&list_all(&p).await.expect("listing").contacts, &id);
    assert!(relisted.get(Field::Tags).same_as(&want));
}

#[tokio::test]
async fn simulator_and_rules_agree_on_what_cannot_be_written() {
    let sim = start().await;
    let mut seed = person(3);
    seed.tags = vec!["lead".into()];
    seed.custom_fields = map(&[("city", "Oslo"), ("loyalty_tier", "gold")]).to_btree();
    let id = sim.seed_people(&[seed]).remove(0);
    let before = sim.contact(&id).expect("seeded");
    let path = format!("contacts/{id}");
    let p = client(&sim);
    let rules = p.rules();
    let record = contact_sync::model::RecordId::new(KIND, id.clone());
    let blocked = |field, cur: FieldValue, want: FieldValue| {
        rules
            .admit(&record, field, &cur, &want, &NoHolders)
            .blocked
            .into_iter()
            .map(|b| b.rule)
            .collect::<Vec<_>>()
    };

    // A tag the account does not have: 422 naming it, nothing changed; blocked in planning.
    let (status, body) = raw(
        &sim,
        Method::PATCH,
        &path,
        Some(json!({"name": "New Name", "tags": ["lead", "ghost"]})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!({"error": "Tag 'ghost' does not exist in this account"})
    );
    assert_eq!(sim.contact(&id), Some(before.clone()));
    assert_eq!(
        blocked(
            Field::Tags,
            FieldValue::Set(set(&["lead"])),
            FieldValue::Set(set(&["lead", "ghost"]))
        ),
        vec![RuleId::UnknownTag]
    );

    // A custom field the account does not have.
    let (status, body) = raw(
        &sim,
        Method::PATCH,
        &path,
        Some(json!({"custom_fields": {"city": "Rome", "shoe_size": "44"}})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!({"error": "Custom field 'shoe_size' does not exist in this account"})
    );
    assert_eq!(sim.contact(&id), Some(before.clone()));
    assert_eq!(
        blocked(
            Field::CustomFields,
            FieldValue::Map(map(&[("city", "Oslo")])),
            FieldValue::Map(map(&[("city", "Oslo"), ("shoe_size", "44")]))
        ),
        vec![RuleId::UnknownCustomField]
    );

    // Custom fields merge by key: a key left out is kept, so none can be removed.
    let (status, body) = raw(
        &sim,
        Method::PATCH,
        &path,
        Some(json!({"custom_fields": {"city": "Rome"}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["contact"][0]["customFields"],
        json!({"city": "Rome", "loyalty_tier": "gold"})
    );
    assert_eq!(
        blocked(
            Field::CustomFields,
            FieldValue::Map(map(&[("city", "Rome"), ("loyalty_tier", "gold")])),
            FieldValue::Map(map(&[("city", "Rome")]))
        ),
        vec![RuleId::NotClearable]
    );
    let before = sim.contact(&id).expect("still there");

    // The phone is the WhatsApp identity: not a PATCH parameter.
    for key in ["phone_number", "phoneNumber"] {
        let (status, body) = raw(
            &sim,
            Method::PATCH,
            &path,
            Some(json!({key: "14155550199"})),
        )
        .await;
        assert_eq!(status, 422);
        assert_eq!(body, json!({"error": format!("Unknown parameter '{key}'")}));
    }
    assert_eq!(
        blocked(
            Field::Phone,
            FieldValue::Scalar(None),
            scalar("+14155550199")
        ),
        vec![RuleId::ReadOnly]
    );

    // Nor is the avatar.
    let (status, _) = raw(
        &sim,
        Method::PATCH,
        &path,
        Some(json!({"avatar_url": "https://x.io/a.png"})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        blocked(
            Field::AvatarUrl,
            FieldValue::Scalar(None),
            scalar("https://x.io/a.png")
        ),
        vec![RuleId::ReadOnly]
    );

    // Callbell has no e-mail, username or identifier: the adapter never plans them.
    let (status, _) = raw(&sim, Method::PATCH, &path, Some(json!({"email": "a@b.io"}))).await;
    assert_eq!(status, 422);
    for field in [Field::Email, Field::Username, Field::ExternalId] {
        assert!(!rules.supports(field), "{field}");
        assert_eq!(
            rules
                .admit(
                    &record,
                    field,
                    &FieldValue::Scalar(None),
                    &scalar("x"),
                    &NoHolders
                )
                .write,
            None
        );
    }

    // A contact keeps a name.
    let (status, body) = raw(&sim, Method::PATCH, &path, Some(json!({"name": "  "}))).await;
    assert_eq!(status, 422);
    assert_eq!(body, json!({"error": "name must be a non-empty string"}));
    assert_eq!(
        blocked(Field::Name, scalar("Person 3"), FieldValue::Scalar(None)),
        vec![RuleId::NotClearable]
    );
    assert_eq!(sim.contact(&id), Some(before));

    // An unknown contact.
    let (status, body) = raw(
        &sim,
        Method::PATCH,
        "contacts/00000000000000000000000000000000",
        Some(json!({"name": "X"})),
    )
    .await;
    assert_eq!((status, body), (404, json!({"error": "Contact not found"})));

    // Tags replace the list, and clearing them is allowed.
    let (status, body) = raw(&sim, Method::PATCH, &path, Some(json!({"tags": []}))).await;
    assert_eq!(status, 200);
    assert_eq!(body["contact"][0]["tags"], json!([]));
    assert!(blocked(
        Field::Tags,
        FieldValue::Set(set(&["lead"])),
        FieldValue::Set(TagSet::new())
    )
    .is_empty());

    // The documented answer to a read is the one-element array form.
    let (status, body) = raw(&sim, Method::GET, &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["contact"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn wrong_token_is_an_auth_error_that_hides_the_token() {
    let sim = start().await;
    sim.seed_people(&[person(1)]);
    let token = "cb-wrong-token-7f3a9c";
    let p = client_with_token(&sim, token);
    for err in [
        p.healthcheck().await.expect_err("rejected"),
        p.list_page(None).await.expect_err("rejected"),
    ] {
        assert!(
            matches!(err, ProviderError::Auth { status: 401, .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("callbell"), "{text}");
        assert!(text.contains("Unauthorized"), "{text}");
        assert!(!text.contains(token), "{text}");
        assert!(!format!("{err:?}").contains(token));
    }
    assert!(!format!("{p:?}").contains(token));
    let resp = reqwest::Client::new()
        .get(format!("{}/contacts", sim.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.json::<serde_json::Value>().await.expect("json"),
        json!({"error": "Unauthorized"})
    );
}

#[tokio::test]
async fn invalid_provider_data_is_kept_with_a_warning() {
    let sim = start().await;
    sim.seed_json([
        json!({"uuid": "bad-phone", "name": "Odd Number", "phoneNumber": "+123 456 789", "tags": ["vip"], "customFields": {}}),
        json!({"uuid": "no-digits", "name": "Words", "phoneNumber": "call me maybe"}),
        json!({"uuid": "odd-types", "name": null, "phoneNumber": null, "tags": ["vip", 7], "customFields": {"Features": ["A", "B"], "n": 3, "gone": null}}),
    ]);
    let listing = list_all(&client(&sim)).await.expect("listing");
    assert_eq!(listing.contacts.len(), 3);

    let bad = by_id(&listing.contacts, "bad-phone");
    let phone = bad.phone.as_ref().expect("kept");
    assert!(!phone.valid());
    assert_eq!(bad.warnings.len(), 1, "{:?}", bad.warnings);
    assert_eq!(bad.tags, set(&["vip"]));

    let words = by_id(&listing.contacts, "no-digits");
    assert_eq!(
        words.phone.as_ref().map(|p| (p.raw(), p.valid())),
        Some(("call me maybe", false))
    );
    assert_eq!(words.warnings.len(), 1);

    let odd = by_id(&listing.contacts, "odd-types");
    assert_eq!(odd.name, None);
    assert_eq!(odd.tags, set(&["vip", "7"]));
    assert_eq!(
        odd.custom_fields,
        map(&[("Features", r#"["A","B"]"#), ("n", "3")])
    );
    assert_eq!(odd.warnings.len(), 1, "{:?}", odd.warnings);
}

#[tokio::test]
async fn fixture_seeds_the_simulator_and_maps_correctly() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/callbell/contacts.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture readable");
    let fixture: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
    let contacts = fixture["contacts"]
        .as_array()
        .cloned()
        .expect("a contacts array");
    let sim = start().await;
    sim.seed_json(contacts);
    let listing = list_all(&client(&sim)).await.expect("listing");
    assert_eq!(listing.contacts.len(), 4);

    let john = by_id(&listing.contacts, "414a6d692bd645ed803f2e7ce360d4c8");
    assert_eq!(john.name.as_ref().map(|n| n.display()), Some("John Doe"));
    assert_eq!(john.phone.as_ref().map(|p| p.key()), Some("+14155550101"));
    assert_eq!(john.tags, set(&["vip", "lead"]));
    assert_eq!(
        john.custom_fields,
        map(&[("city", "London"), ("loyalty_tier", "gold")])
    );
    assert_eq!(john.avatar_url, None);
    assert!(john.warnings.is_empty());

    let mario = by_id(&listing.contacts, "ff8bec9363bc4c29b8b044eabf2afebd");
    assert_eq!(
        mario.avatar_url.as_ref().map(|a| a.raw()),
        Some("https://cdn.callbell.eu/avatars/ff8bec93.png")
    );
    assert_eq!(mario.tags, set(&["wholesale"]));
    assert_eq!(
        mario.custom_fields,
        map(&[("Stripe link", "https://stripe.com/contacts/cus124124153")])
    );
    // The docs' display-form number is too short for France: kept, flagged.
    assert_eq!(mario.phone.as_ref().map(|p| p.valid()), Some(false));
    assert_eq!(mario.warnings.len(), 1);

    let jane = by_id(&listing.contacts, "9b0f1c2d3e4f5a6b7c8d9e0f1a2b3c4d");
    assert_eq!(jane.name.as_ref().map(|n| n.display()), Some("Jane Roe"));
    assert_eq!(jane.name.as_ref().and_then(|n| n.family()), Some("Roe"));
    // International digits, never read as a US national number.
    assert_eq!(jane.phone.as_ref().map(|p| p.key()), Some("+442079460958"));
    assert_eq!(
        jane.custom_fields,
        map(&[("Features", r#"["Dark Mode","Notifications"]"#)])
    );

    let unknown = by_id(&listing.contacts, "c0ffee00c0ffee00c0ffee00c0ffee00");
    assert!(unknown.tags.is_empty());
    assert_eq!(unknown.phone.as_ref().map(|p| p.valid()), Some(false));
}

#[tokio::test]
async fn ids_are_one_encoded_path_segment() {
    let sim = start().await;
    let tricky = "a/../b?c=1#x";
    sim.seed_json([
        json!({"uuid": tricky, "name": "Tricky", "phoneNumber": "14155550111", "tags": [], "customFields": {}}),
        json!({"uuid": "b", "name": "Bystander", "phoneNumber": "14155550112", "tags": [], "customFields": {}}),
    ]);
    let bystander = sim.contact("b").expect("seeded");
    let p = client(&sim);
    let patch = |update_ref: &str| Patch {
        record: contact_sync::model::RecordId::new(KIND, update_ref),
        update_ref: update_ref.into(),
        changes: vec![Change {
            field: Field::Name,
            old: scalar("Tricky"),
            new: scalar("Renamed"),
        }],
    };
    let after = p.apply(&patch(tricky)).await.expect("applied");
    assert_eq!(after.id.native, tricky);
    let writes = sim.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].path, "/v1/contacts/a%2F..%2Fb%3Fc=1%23x");
    assert_eq!(writes[0].query, None);
    assert_eq!(sim.contact(tricky).expect("kept")["name"], "Renamed");
    assert_eq!(sim.contact("b"), Some(bystander));

    for bad in ["..", ".", ""] {
        let err = p.apply(&patch(bad)).await.expect_err("refused");
        assert!(matches!(err, ProviderError::Protocol { .. }), "{err:?}");
    }
    assert_eq!(sim.writes().len(), 1, "refused ids send nothing");
}

#[tokio::test]
async fn rate_limit_answers_429_without_retry_after() {
    let sim = start().await;
    sim.set_quotas(vec![SimQuota {
        name: "Second",
        limit: 1,
        period: Duration::from_secs(60),
    }]);
    let url = format!("{}/contacts", sim.base_url());
    let http = reqwest::Client::new();
    let first = http
        .get(&url)
        .bearer_auth(sim.token())
        .send()
        .await
        .expect("sent");
    assert_eq!(first.status().as_u16(), 200);
    let second = http
        .get(&url)
        .bearer_auth(sim.token())
        .send()
        .await
        .expect("sent");
    assert_eq!(second.status().as_u16(), 429);
    assert!(second.headers().get("retry-after").is_none());
    assert_eq!(
        second.json::<serde_json::Value>().await.expect("json"),
        json!({"error": "Too Many Requests"})
    );
}

#[tokio::test]
async fn transient_faults_are_retried() {
    let sim = start().await;
    sim.seed_people(&(0..30).map(person).collect::<Vec<_>>());
    sim.inject(FaultRule::always(Fault::Truncated).on(Method::GET).times(1));
    sim.inject(
        FaultRule::always(Fault::RateLimited { retry_after: None })
            .on(Method::GET)
            .after(2)
            .times(1),
    );
    sim.inject(
        FaultRule::always(Fault::Status(502))
            .on(Method::PATCH)
            .times(1),
    );
    let p = client(&sim);
    let listing = list_all(&p).await.expect("listing survives faults");
    assert_eq!(listing.contacts.len(), 30);
    let c = &listing.contacts[0];
    let patch = Patch {
        record: c.id.clone(),
        update_ref: c.id.native.clone(),
        changes: vec![Change {
            field: Field::Name,
            old: c.get(Field::Name),
            new: scalar("After Retry"),
        }],
    };
    p.apply(&patch).await.expect("applied after a 502");
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert!(
        statuses.contains(&429) && statuses.contains(&502),
        "{statuses:?}"
    );
    assert_eq!(
        sim.writes().iter().map(|w| w.status).collect::<Vec<_>>(),
        vec![502, 200]
    );
    assert_eq!(
        sim.contact(&c.id.native).expect("kept")["name"],
        "After Retry"
    );
}

#[tokio::test]
async fn rejected_update_is_a_permanent_record_error() {
    let sim = start().await;
    let id = sim.seed_people(&[person(1)]).remove(0);
    // The adapter was configured with a tag the account has since deleted.
    sim.configure(|o| {
        o.callbell_tags.remove("wholesale");
    });
    let p = client_with_known(&sim, &["vip", "wholesale", "lead"]);
    let patch = Patch {
        record: contact_sync::model::RecordId::new(KIND, id.clone()),
        update_ref: id.as_str().into(),
        changes: vec![Change {
            field: Field::Tags,
            old: FieldValue::Set(TagSet::new()),
            new: FieldValue::Set(set(&["wholesale"])),
        }],
    };
    let err = p.apply(&patch).await.expect_err("rejected");
    match &err {
        ProviderError::Rejected {
            status, message, ..
        } => {
            assert_eq!(*status, 422);
            assert!(message.contains("wholesale"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(sim.writes().len(), 1, "a 422 is not retried");
}

fn client_with_known(sim: &Sim, tags: &[&str]) -> AnyProvider {
    let mut cfg = config(sim, &sim.token());
    if let ProviderSpecific::Callbell { known_tags, .. } = &mut cfg.specific {
        *known_tags = tags.iter().map(|t| t.to_string()).collect();
    }
    AnyProvider::build(&cfg, Normalizer::new("US").expect("valid region")).expect("adapter builds")
}
