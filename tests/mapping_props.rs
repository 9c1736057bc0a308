//! Properties of mapping at the adapter boundary (SPEC section 12, STYLE rule 33): reading a
//! record into common names and writing it back gives the provider's names back, and planning
//! with mappings is still idempotent. Records are built in each provider's own names, read
//! through the adapter's [`Boundary`] exactly as a listing is, and written back through it
//! exactly as a patch is.

use std::collections::{BTreeMap, BTreeSet};

use contact_sync::model::{
    Change, Contact, Field, FieldValue, Normalizer, Patch, ProviderKind, TagSet,
};
use contact_sync::provider::mapping::{Boundary, Mapping, Unmapped};
use contact_sync::provider::{callbell, chatwoot, privy, FieldRules};
use contact_sync::reconcile::{plan, Memory, Plan, Policy, RuleBook};
use proptest::prelude::*;

use ProviderKind::{Callbell, Chatwoot, Privy};

const KINDS: [ProviderKind; 3] = [Callbell, Chatwoot, Privy];

/// The mapping of the README's worked example, with the unmapped policy and case folding
/// drawn by the test.
fn mapping(ignore: bool, ci: bool) -> Mapping {
    let per = |pairs: &[(ProviderKind, &str)]| -> BTreeMap<ProviderKind, String> {
        pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
    };
    Mapping {
        custom_fields: [
            (
                "loyalty_tier".to_owned(),
                per(&[
                    (Privy, "loyalty_tier"),
                    (Callbell, "Loyalty Tier"),
                    (Chatwoot, "tier"),
                ]),
            ),
            (
                "points".to_owned(),
                per(&[(Privy, "points"), (Chatwoot, "loyalty_points")]),
            ),
        ]
        .into(),
        tags: [(
            "vip".to_owned(),
            per(&[(Privy, "Gold Member"), (Callbell, "vip")]),
        )]
        .into(),
        unmapped_custom_fields: if ignore {
            Unmapped::Ignore
        } else {
            Unmapped::Sync
        },
        tags_case_insensitive: ci,
    }
}

/// The adapters' rule tables (Callbell's account knows these tags and keys, in its names).
fn rules(kind: ProviderKind) -> FieldRules {
    match kind {
        Callbell => callbell::field_rules(
            ["vip", "lead", "wholesale"].map(String::from).into(),
            ["Loyalty Tier", "city"].map(String::from).into(),
        ),
        Chatwoot => chatwoot::field_rules(),
        _ => privy::field_rules(),
    }
}

/// One boundary and its adapted rules per provider, as `AnyProvider::with_mapping` sets them.
fn boundaries(m: &Mapping) -> (Vec<Boundary>, RuleBook) {
    let mut book = Vec::new();
    let bs = KINDS
        .iter()
        .map(|k| {
            let mut b = Boundary::new(m.for_provider(*k));
            let mut r = rules(*k);
            b.adapt_rules(&mut r);
            book.push(r);
            b
        })
        .collect();
    (bs, RuleBook::new(book))
}

fn boundary(bs: &[Boundary], k: ProviderKind) -> &Boundary {
    &bs[KINDS.iter().position(|x| *x == k).unwrap_or(0)]
}

/// Provider records in the providers' own names: up to three people, each in some providers,
/// with tags and custom fields drawn from names every provider spells its own way.
fn arb_records() -> impl Strategy<Value = Vec<Contact>> {
    let tag = prop::sample::select(vec![
        "VIP",
        "vip",
        "Gold Member",
        "gold member",
        "lead",
        "Lead",
        "wholesale",
    ]);
    let key = prop::sample::select(vec![
        "loyalty_tier",
        "Loyalty Tier",
        "tier",
        "points",
        "loyalty_points",
        "city",
        "notes",
    ]);
    let value = prop::sample::select(vec!["gold", "silver", "7"]);
    let record = (
        0u8..3,
        prop::sample::select(KINDS.to_vec()),
        prop::collection::btree_set(tag, 0..4),
        prop::collection::btree_map(key, value, 0..4),
    );
    prop::collection::vec(record, 1..8).prop_map(|rs| {
        let mut seen = BTreeSet::new();
        rs.into_iter()
            .filter(|(person, kind, _, _)| seen.insert((*person, *kind)))
            .map(|(person, kind, tags, fields)| {
                let mut c = Contact::new(kind, format!("{kind}-{person}"));
                c.phone = Normalizer::default()
                    .phone(&format!("+1415555010{person}"))
                    .0;
                if kind != Chatwoot {
                    c.tags = tags.into_iter().map(String::from).collect();
                }
                c.custom_fields = fields
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                c
            })
            .collect()
    })
}

/// The records as the planner sees them: read through each provider's boundary.
fn read(bs: &[Boundary], provider_side: &[Contact]) -> Vec<Contact> {
    provider_side
        .iter()
        .map(|c| {
            let mut c = c.clone();
            boundary(bs, c.provider()).inbound(&mut c);
            c
        })
        .collect()
}

/// Applies a plan to the provider-side records through the boundaries, as the adapters send it
/// and the providers store it (Callbell's custom fields merge keys; the rest replace).
fn apply(bs: &[Boundary], provider_side: &mut [Contact], p: &Plan) {
    for u in &p.updates {
        let r = provider_side
            .iter_mut()
            .find(|r| r.id == u.patch.record)
            .expect("planned record exists");
        let sent = boundary(bs, r.provider()).outbound_patch(&u.patch);
        for c in &sent.changes {
            match (&c.new, r.provider()) {
                (FieldValue::Map(m), Callbell) => r.custom_fields.extend(m.clone()),
                _ => r.set(c.field, c.new.clone()),
            }
        }
    }
}

/// Memory as a successful sync leaves it (links, agreed values, every record's baseline).
fn synced(records: &[Contact], p: &Plan) -> Memory {
    let mut m = Memory::default();
    for person in &p.people {
        for r in &person.records {
            m.links.insert(r.clone(), person.person.clone());
        }
        m.agreed
            .insert(person.person.clone(), person.agreed.clone());
    }
    for r in records {
        m.baselines.insert(
            r.id.clone(),
            Field::ALL.iter().map(|f| (*f, r.get(*f))).collect(),
        );
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Provider key → common key → provider key: a record read in and written back whole holds
    /// its own tags and keys again (tags in a spelling alike without case, when tags compare
    /// without case), for every configured mapping and policy.
    #[test]
    fn a_record_read_and_written_back_is_unchanged(
        provider_side in arb_records(), ignore in any::<bool>(), ci in any::<bool>()
    ) {
        let m = mapping(ignore, ci);
        let (bs, _) = boundaries(&m);
        for (original, common) in provider_side.iter().zip(read(&bs, &provider_side)) {
            let patch = Patch {
                record: common.id.clone(),
                update_ref: common.id.native.clone(),
                changes: [Field::Tags, Field::CustomFields]
                    .into_iter()
                    .map(|f| Change { field: f, old: common.get(f), new: common.get(f) })
                    .collect(),
            };
            let sent = boundary(&bs, common.provider()).outbound_patch(&patch);
            let fold = |s: &TagSet| -> BTreeSet<String> {
                s.iter().map(|t| m.fold_tag(t).into_owned()).collect()
            };
            match &sent.changes[0].new {
                FieldValue::Set(tags) => prop_assert_eq!(fold(tags), fold(&original.tags)),
                other => prop_assert!(false, "tags became {:?}", other),
            }
            if !ci {
                prop_assert_eq!(&sent.changes[0].new, &FieldValue::Set(original.tags.clone()));
            }
            prop_assert_eq!(&sent.changes[1].new, &FieldValue::Map(original.custom_fields.clone()));
        }
    }

    /// Planning with mappings is idempotent: apply the plan through the boundaries, read the
    /// providers again, and the next plan sends nothing; also after edits in provider names.
    #[test]
    fn planning_with_mappings_is_idempotent(
        mut provider_side in arb_records(),
        edits in arb_records(),
        ignore in any::<bool>(),
        ci in any::<bool>(),
    ) {
        let m = mapping(ignore, ci);
        let (bs, book) = boundaries(&m);
        let policy = Policy::default();
        let p1 = plan(&read(&bs, &provider_side), &Memory::default(), &policy, &book);
        apply(&bs, &mut provider_side, &p1);
        let records = read(&bs, &provider_side);
        let memory = synced(&records, &p1);
        let p2 = plan(&records, &memory, &policy, &book);
        prop_assert!(p2.updates.is_empty(), "second plan: {:#?}", p2.updates);

        for e in edits {
            if let Some(r) = provider_side.iter_mut().find(|r| r.id == e.id) {
                r.tags = e.tags;
                r.custom_fields = e.custom_fields;
            }
        }
        let records = read(&bs, &provider_side);
        let p3 = plan(&records, &memory, &policy, &book);
        apply(&bs, &mut provider_side, &p3);
        let records = read(&bs, &provider_side);
        let memory = synced(&records, &p3);
        let p4 = plan(&records, &memory, &policy, &book);
        prop_assert!(p4.updates.is_empty(), "plan after edits, applied: {:#?}", p4.updates);
    }
}
