//! Mapping and scope end to end (SPEC section 12), over HTTP against the simulators: a custom
//! field named differently in three providers, tags compared without case, per-field sources
//! and targets, and people left out by tag or because Chatwoot blocks them. Every test asserts
//! on what the simulators hold and on the requests they were sent.

mod common;

use common::*;
use contact_sync::config::Config;
use contact_sync::model::ProviderKind;
use contact_sync::sim::{SeedPerson, SimOptions};
use serde_json::{json, Value};

const ALL: [ProviderKind; 4] = [Protocol, Callbell, Chatwoot, Privy];

/// The fleet, with a Callbell account that knows the custom field "Loyalty Tier" and the tags
/// the tests use.
async fn world() -> World {
    World::start_with(|k| {
        let mut o = SimOptions::for_provider(k).unlimited();
        o.callbell_custom_fields.insert("Loyalty Tier".into());
        o.callbell_tags.insert("no-sync".into());
        o.chatwoot.labels.push("vip-customer".into());
        o
    })
    .await
}

/// Points the world at a config file with `top` (the mapping, scope and policy sections under
/// test) and Callbell's known names as that account has them.
fn configure(w: &mut World, top: &str) {
    let dir = w.dir.path().to_path_buf();
    let path = config_toml(w, &dir, top, "");
    let text = std::fs::read_to_string(&path)
        .expect("config written")
        .replace(
            "known_custom_fields = [\"loyalty_tier\", \"city\"]",
            "known_custom_fields = [\"Loyalty Tier\", \"city\"]",
        )
        .replace(
            "known_tags = [\"vip\", \"wholesale\", \"lead\"]",
            "known_tags = [\"vip\", \"wholesale\", \"lead\", \"no-sync\"]",
        );
    std::fs::write(&path, text).expect("config rewritten");
    w.config = Config::load(std::path::Path::new(&path)).expect("the config is valid");
}

/// `base` as `kind` stores it, with `fields` as its custom fields and `tags` as its tags.
fn seed_as(
    w: &World,
    seq: u64,
    base: &SeedPerson,
    kind: ProviderKind,
    fields: &[(&str, &str)],
    tags: &[&str],
) -> String {
    let mut p = base.clone();
    p.custom_fields = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    p.tags = tags.iter().map(|t| (*t).to_owned()).collect();
    w.edit(kind, seq, &p)
}

/// The custom fields of a stored contact, as each simulator keeps them.
fn fields_of(w: &World, kind: ProviderKind, id: &str) -> Value {
    let c = w.contact(kind, id);
    match kind {
        Callbell => c["customFields"].clone(),
        Chatwoot => c["custom_attributes"].clone(),
        _ => c["custom_fields"].clone(),
    }
}

/// The tags of a stored contact (Chatwoot: its labels), sorted.
fn tags_of(w: &World, kind: ProviderKind, id: &str) -> Vec<String> {
    let key = if kind == Chatwoot { "labels" } else { "tags" };
    let mut t: Vec<String> = w.contact(kind, id)[key]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    t.sort();
    t
}

/// The bodies of the writes `kind` received.
fn bodies(w: &World, kind: ProviderKind) -> Vec<Value> {
    w.fleet
        .sim(kind)
        .writes()
        .into_iter()
        .map(|r| r.body.unwrap_or(Value::Null))
        .collect()
}

const LOYALTY: &str = "[mapping]\nunmapped_custom_fields = \"ignore\"\n[mapping.custom_fields]\nloyalty_tier = { privy = \"loyalty_tier\", callbell = \"Loyalty Tier\", chatwoot = \"tier\" }\n";

#[tokio::test]
async fn a_tier_changed_in_callbell_reaches_privy_and_chatwoot_under_their_names() {
    let mut w = world().await;
    configure(&mut w, LOYALTY);
    let ada = person("Ada Lovelace", "+14155550101", "ada@example.com");
    w.seed(1, &ada, &[Protocol]);
    let cb = seed_as(
        &w,
        1,
        &ada,
        Callbell,
        &[("Loyalty Tier", "silver"), ("city", "London")],
        &[],
    );
    let cw = seed_as(
        &w,
        1,
        &ada,
        Chatwoot,
        &[("tier", "silver"), ("nickname", "Countess")],
        &[],
    );
    let pv = seed_as(
        &w,
        1,
        &ada,
        Privy,
        &[("loyalty_tier", "silver"), ("notes", "met at the fair")],
        &[],
    );

    let first = w.sync().await;
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    assert_eq!(first.plan.people.len(), 1);
    assert_eq!(
        w.writes(),
        0,
        "the tier agrees under three names and unmapped keys are ignored"
    );

    seed_as(
        &w,
        1,
        &ada,
        Callbell,
        &[("Loyalty Tier", "gold"), ("city", "London")],
        &[],
    );
    w.clear_requests();
    let second = w.sync().await;
    assert!(second.problems.is_empty(), "{:?}", second.problems);
    let report = json(&second);
    let fields: Vec<(&str, &str)> = report["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["provider"].as_str().unwrap_or_default(),
                c["field"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        [("chatwoot", "custom_fields"), ("privy", "custom_fields")],
        "{report:#}"
    );
    // The report shows common keys, and where a provider names one differently, its own name.
    assert_eq!(report["changes"][0]["new"], json!({"loyalty_tier": "gold"}));
    assert_eq!(
        report["changes"][0]["provider_names"],
        json!({"loyalty_tier": "tier"})
    );
    assert!(
        report["changes"][1].get("provider_names").is_none(),
        "{report:#}"
    );
    assert!(
        second
            .to_text(false)
            .contains("in chatwoot: loyalty_tier = \"tier\""),
        "{}",
        second.to_text(false)
    );

    // What the providers hold: the new tier under each one's own key, their unmapped keys
    // untouched, and nobody given another provider's unmapped key.
    assert_eq!(
        fields_of(&w, Privy, &pv),
        json!({"loyalty_tier": "gold", "notes": "met at the fair"})
    );
    assert_eq!(
        fields_of(&w, Chatwoot, &cw),
        json!({"tier": "gold", "nickname": "Countess"})
    );
    assert_eq!(
        fields_of(&w, Callbell, &cb),
        json!({"Loyalty Tier": "gold", "city": "London"})
    );
    // What they were sent: Privy replaces the whole map, so its unmapped key is carried back
    // as it was; Chatwoot merges keys and is sent the mapped one only.
    assert_eq!(
        bodies(&w, Privy),
        [json!({"custom_fields": {"loyalty_tier": "gold", "notes": "met at the fair"}})]
    );
    let cw_bodies = bodies(&w, Chatwoot);
    assert_eq!(cw_bodies.len(), 1, "{cw_bodies:?}");
    assert_eq!(cw_bodies[0]["custom_attributes"], json!({"tier": "gold"}));
    for b in bodies(&w, Privy).iter().chain(&cw_bodies) {
        let text = b.to_string();
        for unmapped in ["city", "London", "nickname", "Loyalty Tier"] {
            assert!(!text.contains(unmapped), "{unmapped:?} was written: {text}");
        }
    }
    assert!(bodies(&w, Callbell).is_empty() && bodies(&w, Protocol).is_empty());

    w.clear_requests();
    let third = w.sync().await;
    assert!(third.problems.is_empty(), "{:?}", third.problems);
    assert_eq!(w.writes(), 0, "the next sync sends zero writes");
}

#[tokio::test]
async fn an_unmapped_key_syncs_under_its_own_name_only_by_default() {
    let mut w = world().await;
    configure(
        &mut w,
        "[mapping.custom_fields]\nloyalty_tier = { privy = \"loyalty_tier\", callbell = \"Loyalty Tier\" }\n",
    );
    let ada = person("Ada Lovelace", "+14155550101", "ada@example.com");
    let cb = seed_as(&w, 1, &ada, Callbell, &[("city", "London")], &[]);
    let cw = seed_as(&w, 1, &ada, Chatwoot, &[], &[]);
    let pv = seed_as(&w, 1, &ada, Privy, &[], &[]);
    let first = w.sync().await;
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    // `city` is unmapped: it syncs under its own name; `loyalty_tier` is mapped for Privy and
    // Callbell only, so Chatwoot is never given it.
    assert_eq!(fields_of(&w, Privy, &pv), json!({"city": "London"}));
    assert_eq!(fields_of(&w, Chatwoot, &cw), json!({"city": "London"}));
    seed_as(
        &w,
        1,
        &ada,
        Callbell,
        &[("city", "London"), ("Loyalty Tier", "gold")],
        &[],
    );
    w.clear_requests();
    let second = w.sync().await;
    assert!(second.problems.is_empty(), "{:?}", second.problems);
    assert_eq!(
        fields_of(&w, Privy, &pv),
        json!({"city": "London", "loyalty_tier": "gold"})
    );
    assert_eq!(fields_of(&w, Chatwoot, &cw), json!({"city": "London"}));
    assert!(
        bodies(&w, Chatwoot).is_empty(),
        "{:?}",
        bodies(&w, Chatwoot)
    );
    assert_eq!(
        fields_of(&w, Callbell, &cb),
        json!({"city": "London", "Loyalty Tier": "gold"})
    );
    w.clear_requests();
    w.sync().await;
    assert_eq!(w.writes(), 0, "converged");
}

#[tokio::test]
async fn tags_compare_without_case_and_a_removal_spreads_in_each_providers_spelling() {
    let mut w = world().await;
    configure(&mut w, "[mapping]\ntags_case_insensitive = true\n");
    let ada = person("Ada Lovelace", "+14155550101", "ada@example.com");
    w.seed(1, &ada, &[Protocol]);
    let pv = seed_as(&w, 1, &ada, Privy, &[], &["VIP", "Wholesale"]);
    let cb = seed_as(&w, 1, &ada, Callbell, &[], &["vip", "wholesale"]);
    // Chatwoot's labels take part as its tags.
    let cw = seed_as(&w, 1, &ada, Chatwoot, &[], &["Vip", "wholesale"]);
    let first = w.sync().await;
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    assert_eq!(w.writes(), 0, "VIP and vip are one tag");

    // Callbell adds "lead": Privy gets it, and keeps its own spelling of the others.
    seed_as(&w, 1, &ada, Callbell, &[], &["vip", "wholesale", "lead"]);
    w.clear_requests();
    w.sync().await;
    assert_eq!(tags_of(&w, Privy, &pv), ["VIP", "Wholesale", "lead"]);
    assert_eq!(
        bodies(&w, Privy),
        [json!({"tags": ["VIP", "Wholesale", "lead"]})]
    );
    // Chatwoot's labels are written as its account knows them (`known_labels`), like
    // Callbell's known_tags: "vip", whatever case a contact's listing showed.
    assert_eq!(tags_of(&w, Chatwoot, &cw), ["lead", "vip", "wholesale"]);

    // Privy drops "VIP": Callbell drops "vip" (the merge stays element-wise).
    seed_as(&w, 1, &ada, Privy, &[], &["Wholesale", "lead"]);
    w.clear_requests();
    let third = w.sync().await;
    assert!(third.problems.is_empty(), "{:?}", third.problems);
    assert_eq!(tags_of(&w, Callbell, &cb), ["lead", "wholesale"]);
    assert_eq!(
        bodies(&w, Callbell),
        [json!({"tags": ["lead", "wholesale"]})]
    );
    assert!(bodies(&w, Privy).is_empty());
    w.clear_requests();
    w.sync().await;
    assert_eq!(w.writes(), 0, "converged");
}

#[tokio::test]
async fn a_tag_map_joins_different_names_and_a_removal_spreads() {
    let mut w = world().await;
    configure(
        &mut w,
        "[mapping]\ntags_case_insensitive = true\n[mapping.tags]\nvip = { privy = \"Gold Member\", callbell = \"vip\" }\n",
    );
    let ada = person("Ada Lovelace", "+14155550101", "ada@example.com");
    w.seed(1, &ada, &[Protocol]);
    let pv = seed_as(&w, 1, &ada, Privy, &[], &["lead"]);
    let cb = seed_as(&w, 1, &ada, Callbell, &[], &["lead"]);
    let cw = seed_as(&w, 1, &ada, Chatwoot, &[], &["lead"]);
    w.sync().await;
    assert_eq!(w.writes(), 0);

    seed_as(&w, 1, &ada, Privy, &[], &["GOLD MEMBER", "lead"]);
    w.clear_requests();
    let r = w.sync().await;
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(tags_of(&w, Callbell, &cb), ["lead", "vip"]);
    assert_eq!(bodies(&w, Callbell), [json!({"tags": ["lead", "vip"]})]);
    // The mapping names vip for Privy and Callbell only: Chatwoot is never given it.
    assert_eq!(tags_of(&w, Chatwoot, &cw), ["lead"]);
    assert!(
        bodies(&w, Chatwoot).is_empty(),
        "{:?}",
        bodies(&w, Chatwoot)
    );

    seed_as(&w, 1, &ada, Callbell, &[], &["lead"]);
    w.clear_requests();
    w.sync().await;
    assert_eq!(tags_of(&w, Privy, &pv), ["lead"]);
    w.clear_requests();
    w.sync().await;
    assert_eq!(w.writes(), 0, "converged");
}

#[tokio::test]
async fn email_from_chatwoot_only_spreads_and_targets_exclude_a_provider() {
    let mut w = world().await;
    configure(
        &mut w,
        "[policy.fields.email]\nsources = [\"chatwoot\"]\n[policy.fields.name]\ntargets = [\"chatwoot\", \"privy\"]\n",
    );
    // Privy's e-mail is empty, so it may be set there (set-once allows it) and edited by hand.
    let ada = person("Ada Lovelace", "+14155550101", "ada@example.com");
    let ids = w.seed(1, &ada, &ALL);
    let id = |k: ProviderKind| ids[ALL.iter().position(|x| *x == k).expect("kind")].clone();
    w.sync().await;
    assert_eq!(w.writes(), 0);

    // An e-mail edited in Privy does not spread: Privy is not a source of e-mail.
    w.fleet.sim(Privy).modify(&id(Privy), |c| {
        c["email"] = json!("ada@privy-edit.example");
    });
    w.clear_requests();
    let r = w.sync().await;
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert!(
        bodies(&w, Chatwoot).is_empty(),
        "{:?}",
        bodies(&w, Chatwoot)
    );
    assert_eq!(
        s(&w.contact(Chatwoot, &id(Chatwoot)), "email"),
        Some("ada@example.com")
    );

    // One edited in Chatwoot does (Privy's e-mail is set-once, so the write is reported as
    // skipped there, not sent).
    w.fleet.sim(Chatwoot).modify(&id(Chatwoot), |c| {
        c["email"] = json!("ada@chatwoot-edit.example");
    });
    w.clear_requests();
    let r = w.sync().await;
    let report = json(&r);
    let skipped: Vec<(&str, &str, &str)> = report["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|s| {
            (
                s["provider"].as_str().unwrap_or_default(),
                s["field"].as_str().unwrap_or_default(),
                s["rule"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        skipped.contains(&("privy", "email", "set-once")),
        "{report:#}"
    );
    assert!(
        bodies(&w, Chatwoot).is_empty(),
        "the source is not written back"
    );

    // A name edited in Protocol reaches Chatwoot and Privy, the targets, but not Callbell; the
    // summary counts the untargeted record once, with rule not-a-target.
    let mut renamed = ada.clone();
    renamed.name = Some("Ada King".into());
    w.edit(Protocol, 1, &renamed);
    w.clear_requests();
    let r = w.sync().await;
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(
        s(&w.contact(Chatwoot, &id(Chatwoot)), "name"),
        Some("Ada King")
    );
    assert_eq!(s(&w.contact(Privy, &id(Privy)), "first_name"), Some("Ada"));
    assert_eq!(s(&w.contact(Privy, &id(Privy)), "last_name"), Some("King"));
    assert_eq!(
        s(&w.contact(Callbell, &id(Callbell)), "name"),
        Some("Ada Lovelace")
    );
    assert!(
        bodies(&w, Callbell).is_empty(),
        "{:?}",
        bodies(&w, Callbell)
    );
    let report = json(&r);
    assert_eq!(
        report["summary"]["untargeted"],
        json!([{"provider": "callbell", "field": "name", "records": 1, "rule": "not-a-target"}]),
        "{report:#}"
    );
    assert!(r
        .to_text(false)
        .contains("callbell name: 1 records differ but are not written [not-a-target]"));
}

#[tokio::test]
async fn a_person_tagged_no_sync_in_privy_gets_no_write_anywhere() {
    let mut w = world().await;
    configure(&mut w, "[scope]\nexclude_tags = [\"no-sync\"]\n");
    let ada = person("Ada Lovelace", "+14155550101", "ada@example.com");
    let alan = person("Alan Turing", "+14155550102", "alan@example.com");
    w.seed(1, &ada, &[Protocol, Callbell, Chatwoot]);
    let pv = seed_as(&w, 1, &ada, Privy, &[], &["no-sync"]);
    let alan_ids = w.seed(2, &alan, &ALL);
    let first = w.sync().await;
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    assert_eq!(w.writes(), 0, "an excluded tag is never spread either");

    // Everyone else edits Ada; Alan is edited too and still syncs.
    let mut ada2 = ada.clone();
    ada2.name = Some("Ada King".into());
    w.edit(Protocol, 1, &ada2);
    let mut cb = ada2.clone();
    cb.tags = vec!["vip".into()];
    w.edit(Callbell, 1, &cb);
    let mut alan2 = alan.clone();
    alan2.name = Some("Alan M. Turing".into());
    w.edit(Chatwoot, 2, &alan2);
    w.clear_requests();
    let r = w.sync().await;
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let report = json(&r);
    let excluded = report["excluded"].as_array().expect("excluded");
    assert_eq!(excluded.len(), 1, "{report:#}");
    assert!(
        excluded[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no-sync"),
        "{report:#}"
    );
    assert_eq!(excluded[0]["records"].as_array().map(Vec::len), Some(4));
    assert_eq!(report["summary"]["excluded"], json!(1));
    for c in report["changes"].as_array().expect("changes") {
        assert_eq!(
            c["new"],
            json!("Alan M. Turing"),
            "only Alan is written: {c}"
        );
    }
    for sim in &w.fleet.sims {
        for req in sim.writes() {
            let text = req.body.map(|b| b.to_string()).unwrap_or_default();
            assert!(!text.contains("Ada"), "{} was sent {text}", sim.kind);
        }
    }
    assert_eq!(s(&w.contact(Privy, &pv), "first_name"), Some("Ada"));
    assert_eq!(s(&w.contact(Privy, &pv), "last_name"), Some("Lovelace"));
    let alan_privy = &alan_ids[3];
    assert_eq!(
        s(&w.contact(Privy, alan_privy), "first_name"),
        Some("Alan M.")
    );
    assert!(r.to_text(false).contains("Excluded by scope"));
}

#[tokio::test]
async fn a_blocked_chatwoot_contact_is_left_out_unless_skip_blocked_is_off() {
    let mut w = world().await;
    configure(&mut w, "");
    let ada = person("Ada Lovelace", "+14155550101", "ada@example.com");
    let ids = w.seed(1, &ada, &ALL);
    w.fleet
        .sim(Chatwoot)
        .modify(&ids[2], |c| c["blocked"] = json!(true));
    let mut renamed = ada.clone();
    renamed.name = Some("Ada King".into());
    w.sync().await;
    w.edit(Protocol, 1, &renamed);
    w.clear_requests();
    let r = w.sync().await;
    let report = json(&r);
    assert_eq!(report["summary"]["excluded"], json!(1), "{report:#}");
    assert!(report["excluded"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("blocked"));
    assert_eq!(w.writes(), 0, "a blocked person is written nowhere");

    // With skip_blocked = false the person syncs again. Nothing was remembered of them while
    // they were out of scope, so they are planned as newly seen: the first value in precedence
    // order (Chatwoot's) wins, and every provider ends up holding it.
    let dir = w.dir.path().to_path_buf();
    let path = config_toml(&w, &dir, "", "");
    let text = std::fs::read_to_string(&path)
        .expect("config")
        .replace("account_id =", "skip_blocked = false\naccount_id =");
    std::fs::write(&path, text).expect("config");
    w.config = Config::load(std::path::Path::new(&path)).expect("valid");
    w.clear_requests();
    let r = w.sync().await;
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(json(&r)["summary"]["excluded"], json!(0));
    assert_eq!(
        s(&w.contact(Protocol, &ids[0]), "display_name"),
        Some("Ada Lovelace")
    );
    assert_eq!(
        bodies(&w, Protocol),
        [json!({"display_name": "Ada Lovelace"})]
    );
    w.clear_requests();
    w.sync().await;
    assert_eq!(w.writes(), 0, "converged");
}

#[tokio::test]
async fn a_chatwoot_label_maps_to_other_providers_tags_both_ways() {
    let mut w = world().await;
    configure(
        &mut w,
        "[mapping.tags]\nvip = { privy = \"VIP\", callbell = \"vip\", chatwoot = \"vip-customer\" }\n",
    );
    let ada = person("Ada Lovelace", "+14155550101", "ada@example.com");
    w.seed(1, &ada, &[Protocol]);
    let pv = seed_as(&w, 1, &ada, Privy, &[], &["lead"]);
    let cb = seed_as(&w, 1, &ada, Callbell, &[], &["lead"]);
    let cw = seed_as(&w, 1, &ada, Chatwoot, &[], &["lead"]);
    let first = w.sync().await;
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    assert_eq!(w.writes(), 0);

    // Chatwoot's label "vip-customer" is Privy's "VIP" and Callbell's "vip".
    seed_as(&w, 1, &ada, Chatwoot, &[], &["lead", "vip-customer"]);
    w.clear_requests();
    let r = w.sync().await;
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(tags_of(&w, Privy, &pv), ["VIP", "lead"]);
    assert_eq!(tags_of(&w, Callbell, &cb), ["lead", "vip"]);
    assert!(
        bodies(&w, Chatwoot).is_empty(),
        "{:?}",
        bodies(&w, Chatwoot)
    );

    // Privy drops "VIP": Chatwoot loses its label.
    seed_as(&w, 1, &ada, Privy, &[], &["lead"]);
    w.clear_requests();
    w.sync().await;
    assert_eq!(tags_of(&w, Chatwoot, &cw), ["lead"]);
    assert_eq!(tags_of(&w, Callbell, &cb), ["lead"]);
    w.clear_requests();
    w.sync().await;
    assert_eq!(w.writes(), 0, "converged");
}

#[tokio::test]
async fn a_create_carries_mapped_names_and_an_excluded_person_is_never_created() {
    let mut w = world().await;
    configure(
        &mut w,
        &format!("{LOYALTY}[scope]\nexclude_tags = [\"no-sync\"]\n"),
    );
    // Creation on in Callbell, as `create = true` in its section does.
    w.config
        .enable_create(Callbell, contact_sync::reconcile::CreateFilter::default());
    let ada = person("Ada Lovelace", "+14155550101", "ada@example.com");
    let alan = person("Alan Turing", "+14155550102", "alan@example.com");
    seed_as(
        &w,
        1,
        &ada,
        Privy,
        &[("loyalty_tier", "gold")],
        &["no-sync"],
    );
    seed_as(&w, 1, &ada, Chatwoot, &[("tier", "gold")], &[]);
    seed_as(&w, 2, &alan, Privy, &[("loyalty_tier", "silver")], &[]);
    seed_as(&w, 2, &alan, Chatwoot, &[("tier", "silver")], &[]);

    let r = w.sync().await;
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let posts: Vec<Value> = w
        .fleet
        .sim(Callbell)
        .writes()
        .into_iter()
        .filter(|q| q.method == reqwest::Method::POST)
        .map(|q| q.body.unwrap_or(Value::Null))
        .collect();
    assert_eq!(
        posts.len(),
        1,
        "only Alan is created: {posts:?} {:#}",
        json(&r)
    );
    assert_eq!(posts[0]["name"], json!("Alan Turing"));
    assert_eq!(
        posts[0]["custom_fields"],
        json!({"Loyalty Tier": "silver"}),
        "the create uses Callbell's own key"
    );
    let stored: Vec<Value> = w.fleet.sim(Callbell).contacts();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["customFields"], json!({"Loyalty Tier": "silver"}));
    assert_eq!(json(&r)["summary"]["excluded"], json!(1));
    w.clear_requests();
    w.sync().await;
    assert_eq!(w.writes(), 0, "converged");
}
