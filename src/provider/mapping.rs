//! Custom-field and tag mapping at the adapter boundary (SPEC section 12).
//!
//! Providers name the same thing differently: Privy's custom field `loyalty_tier` is Callbell's
//! "Loyalty Tier" and a Chatwoot attribute `tier`. `[mapping.custom_fields]` and
//! `[mapping.tags]` give each such thing one *common* name. Like normalisation, mapping
//! happens once, where an adapter builds a [`Contact`]: from then on the model, the matcher and
//! the planner see common names only, and the adapter translates back when it writes.
//!
//! [`Mapping`] is the validated config for every provider; [`ProviderMapping`] is one
//! provider's view of it (both ways, pure); [`Boundary`] is what an adapter holds at run time:
//! its [`ProviderMapping`] plus what it learned while listing (how the account spells each tag,
//! and the provider keys a record holds that are not synced, which a write that replaces the
//! whole value must carry back unchanged).
//!
//! The rules, for one provider:
//! - a mapped provider key reads as its common name, and the common name writes as that key;
//! - a common name mapped for other providers but not this one is never written here (and this
//!   provider's own key of that spelling is not read, so it cannot be taken for the mapped one);
//! - an unmapped custom-field key syncs under its own name (`unmapped_custom_fields = "sync"`,
//!   the default) or not at all (`"ignore"`); unmapped tags always sync under their own name;
//! - with `tags_case_insensitive`, tags compare by their lower-case form, and a write uses the
//!   provider's own spelling: the mapped name, else the spelling of a tag the account is
//!   configured to know (Callbell's `known_tags`, Chatwoot's `known_labels`: the provider
//!   accepts that one), else the spelling its listing showed last.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use crate::model::{
    CompactString, Contact, Field, FieldMap, FieldValue, NewContact, Patch, TagSet,
};
use crate::provider::FieldRules;

pub use crate::config::mapping::{Mapping, ProviderMapping, Unmapped};

/// What a record holds that is not synced, kept so a write that replaces the whole value
/// carries it back unchanged.
#[derive(Debug, Clone, Default)]
struct Kept {
    tags: Vec<CompactString>,
    fields: Vec<(CompactString, CompactString)>,
}

/// An adapter's mapping at run time: its [`ProviderMapping`], how the account spells each tag
/// (for case-insensitive tags), and per record the unsynced tags and keys it holds. Only
/// records holding unsynced data have an entry, so an identity mapping costs nothing.
#[derive(Default)]
pub struct Boundary {
    map: ProviderMapping,
    /// Common (folded) tag → its spelling among the tags the account is configured to know
    /// (Callbell's `known_tags`): the provider accepts that one, so it wins.
    known: HashMap<String, String>,
    /// Common (folded) tag → the spelling the provider's listing showed last.
    spellings: Mutex<HashMap<String, CompactString>>,
    /// Native record id → what it holds that is not synced.
    kept: Mutex<HashMap<CompactString, Kept>>,
}

impl std::fmt::Debug for Boundary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Boundary")
            .field("map", &self.map)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; it is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Boundary {
    /// A boundary applying `map`.
    pub fn new(map: ProviderMapping) -> Self {
        Boundary {
            map,
            ..Boundary::default()
        }
    }

    /// Rewrites `rules` in common names: the tags and keys that must already exist in the
    /// account (Callbell's `known_tags` / `known_custom_fields`) are translated, and the common
    /// names never written here are marked so the planner plans no write of them. The known
    /// tags also teach the boundary how the account spells them.
    pub fn adapt_rules(&mut self, rules: &mut FieldRules) {
        if self.map.is_identity() {
            return;
        }
        let tags = rules.rule_mut(Field::Tags);
        if let Some(known) = tags.must_pre_exist.take() {
            let mut common = BTreeSet::new();
            for t in known {
                if let Some(c) = self.map.tag_in(&t) {
                    self.known.entry(c.clone()).or_insert(t);
                    common.insert(c);
                }
            }
            tags.must_pre_exist = Some(common);
        }
        tags.not_written.clone_from(self.map.absent_tags());
        let fields = rules.rule_mut(Field::CustomFields);
        if let Some(known) = fields.must_pre_exist.take() {
            fields.must_pre_exist =
                Some(known.iter().filter_map(|k| self.map.field_in(k)).collect());
        }
        fields.not_written.clone_from(self.map.absent_fields());
    }

    /// Translates a record the adapter just read into common names, remembering what it holds
    /// that is not synced.
    pub fn inbound(&self, c: &mut Contact) {
        if self.map.is_identity() {
            return;
        }
        let mut kept = Kept::default();
        if !c.tags.is_empty() {
            let mut spellings = None;
            for t in std::mem::take(&mut c.tags) {
                match self.map.tag_in(&t) {
                    Some(common) => {
                        let unmapped = self
                            .map
                            .tag_out(&common)
                            .is_some_and(|o| matches!(o, Cow::Borrowed(_)));
                        if self.map.folds_tags() && unmapped && !self.known.contains_key(&common) {
                            spellings
                                .get_or_insert_with(|| lock(&self.spellings))
                                .insert(common.clone(), t);
                        }
                        c.tags.insert(common);
                    }
                    None => kept.tags.push(t),
                }
            }
        }
        if !c.custom_fields.is_empty() {
            for (k, v) in std::mem::take(&mut c.custom_fields) {
                match self.map.field_in(&k) {
                    Some(common) => {
                        c.custom_fields.insert(common, v);
                    }
                    None => kept.fields.push((k, v)),
                }
            }
        }
        let mut all = lock(&self.kept);
        if kept.tags.is_empty() && kept.fields.is_empty() {
            all.remove(&c.id.native);
        } else {
            all.insert(c.id.native.clone(), kept);
        }
    }

    /// The provider's spelling of the common tags in `set` (those written here).
    fn tags_out(&self, set: &TagSet) -> TagSet {
        let spellings = lock(&self.spellings);
        set.iter()
            .filter_map(|t| match self.map.tag_out(t)? {
                Cow::Owned(own) => Some(CompactString::from(own)),
                Cow::Borrowed(same) => {
                    Some(spellings.get(same).cloned().unwrap_or_else(|| same.into()))
                }
            })
            .collect()
    }

    /// The provider's keys for the common custom fields in `map` (those written here).
    fn fields_out(&self, map: &FieldMap) -> FieldMap {
        map.iter()
            .filter_map(|(k, v)| Some((CompactString::from(self.map.field_out(k)?), v.clone())))
            .collect()
    }

    fn value_out(&self, field: Field, v: &FieldValue, kept: Option<&Kept>) -> FieldValue {
        match (field, v) {
            (Field::Tags, FieldValue::Set(s)) => {
                let mut out = self.tags_out(s);
                out.extend(kept.iter().flat_map(|k| k.tags.iter().cloned()));
                FieldValue::Set(out)
            }
            (Field::CustomFields, FieldValue::Map(m)) => {
                let mut out = self.fields_out(m);
                for (k, v) in kept.iter().flat_map(|k| k.fields.iter()) {
                    if !out.contains_key(k) {
                        out.insert(k.clone(), v.clone());
                    }
                }
                FieldValue::Map(out)
            }
            _ => v.clone(),
        }
    }

    /// `patch` in the provider's names. Tags and custom fields the record holds but that are
    /// not synced are added to both the old and the new value, so a write that replaces the
    /// whole set or map keeps them and a write of the changed keys only leaves them alone.
    pub fn outbound_patch<'p>(&self, patch: &'p Patch) -> Cow<'p, Patch> {
        if self.map.is_identity()
            || !patch
                .changes
                .iter()
                .any(|c| matches!(c.field, Field::Tags | Field::CustomFields))
        {
            return Cow::Borrowed(patch);
        }
        let kept = lock(&self.kept).get(&patch.record.native).cloned();
        let mut out = patch.clone();
        for c in &mut out.changes {
            c.old = self.value_out(c.field, &c.old, kept.as_ref());
            c.new = self.value_out(c.field, &c.new, kept.as_ref());
        }
        Cow::Owned(out)
    }

    /// `new` in the provider's names.
    pub fn outbound_new<'n>(&self, new: &'n NewContact) -> Cow<'n, NewContact> {
        if self.map.is_identity() {
            return Cow::Borrowed(new);
        }
        let mut out = new.clone();
        for (f, v) in &mut out.fields {
            *v = self.value_out(*f, v, None);
        }
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::mapping::fold;
    use crate::model::ProviderKind;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use ProviderKind::{Callbell, Chatwoot, Privy};

    fn loyalty() -> Mapping {
        Mapping {
            custom_fields: [(
                "loyalty_tier".to_string(),
                [
                    (Privy, "loyalty_tier".to_string()),
                    (Callbell, "Loyalty Tier".to_string()),
                    (Chatwoot, "tier".to_string()),
                ]
                .into(),
            )]
            .into(),
            tags: [(
                "vip".to_string(),
                [(Privy, "VIP".to_string()), (Callbell, "vip".to_string())].into(),
            )]
            .into(),
            ..Mapping::default()
        }
    }

    #[test]
    fn mapped_keys_translate_both_ways_and_unmapped_follow_the_policy() {
        let m = loyalty();
        let cb = m.for_provider(Callbell);
        assert_eq!(cb.field_in("Loyalty Tier").as_deref(), Some("loyalty_tier"));
        assert_eq!(
            cb.field_out("loyalty_tier").as_deref(),
            Some("Loyalty Tier")
        );
        // Callbell's own `loyalty_tier`, if it had one, is not the mapped field.
        assert_eq!(cb.field_in("loyalty_tier"), None);
        assert_eq!(cb.field_in("city").as_deref(), Some("city"));
        let cw = m.for_provider(Chatwoot);
        assert_eq!(cw.tag_out("vip"), None, "vip is not mapped for Chatwoot");
        assert_eq!(cw.tag_in("vip"), None);
        let ignore = Mapping {
            unmapped_custom_fields: Unmapped::Ignore,
            ..loyalty()
        }
        .for_provider(Privy);
        assert_eq!(ignore.field_in("city"), None);
        assert_eq!(ignore.field_out("city"), None);
        assert_eq!(
            ignore.field_in("loyalty_tier").as_deref(),
            Some("loyalty_tier")
        );
    }

    #[test]
    fn case_insensitive_tags_write_the_accounts_spelling_and_keep_unsynced_data() {
        let m = Mapping {
            tags_case_insensitive: true,
            unmapped_custom_fields: Unmapped::Ignore,
            ..loyalty()
        };
        let b = Boundary::new(m.for_provider(Privy));
        let mut c = Contact::new(Privy, "cus_1");
        c.tags = ["VIP".to_string(), "Wholesale".into()].into();
        c.custom_fields = [
            ("loyalty_tier".to_string(), "gold".to_string()),
            ("notes".into(), "keep me".into()),
        ]
        .into();
        b.inbound(&mut c);
        assert_eq!(c.tags, ["vip".to_string(), "wholesale".into()].into());
        assert_eq!(c.custom_fields.keys().collect::<Vec<_>>(), ["loyalty_tier"]);
        let patch = Patch {
            record: c.id.clone(),
            update_ref: "cus_1".into(),
            changes: vec![
                crate::model::Change {
                    field: Field::Tags,
                    old: FieldValue::Set(c.tags.clone()),
                    new: FieldValue::Set(
                        ["vip".to_string(), "wholesale".into(), "lead".into()].into(),
                    ),
                },
                crate::model::Change {
                    field: Field::CustomFields,
                    old: FieldValue::Map(c.custom_fields.clone()),
                    new: FieldValue::Map(
                        [("loyalty_tier".to_string(), "silver".to_string())].into(),
                    ),
                },
            ],
        };
        let out = b.outbound_patch(&patch);
        assert_eq!(
            out.changes[0].new,
            FieldValue::Set(["VIP".to_string(), "Wholesale".into(), "lead".into()].into())
        );
        assert_eq!(
            out.changes[1].new,
            FieldValue::Map(
                [
                    ("loyalty_tier".to_string(), "silver".to_string()),
                    ("notes".into(), "keep me".into())
                ]
                .into()
            )
        );
    }

    #[test]
    fn a_known_tags_spelling_wins_over_what_a_listing_shows() {
        let m = Mapping {
            tags_case_insensitive: true,
            ..Mapping::default()
        };
        let mut b = Boundary::new(m.for_provider(Callbell));
        let mut rules =
            crate::provider::callbell::field_rules(["vip".to_string()].into(), BTreeSet::new());
        b.adapt_rules(&mut rules);
        assert_eq!(
            rules.rule(Field::Tags).must_pre_exist,
            Some(["vip".to_string()].into())
        );
        let mut c = Contact::new(Callbell, "u1");
        c.tags = ["VIP".to_string(), "Lead".into()].into();
        b.inbound(&mut c);
        let out = b.tags_out(&["vip".to_string(), "lead".into()].into());
        assert_eq!(out, ["Lead".to_string(), "vip".into()].into());
    }

    fn provider() -> impl Strategy<Value = ProviderKind> {
        prop::sample::select(ProviderKind::ALL.to_vec())
    }

    /// Mappings as `check-config` admits them: per provider, no name used twice (after folding
    /// for tags).
    fn mapping() -> impl Strategy<Value = Mapping> {
        let names = "[a-dA-D]{1,2}";
        let entries = || {
            prop::collection::btree_map(
                names,
                prop::collection::btree_map(provider(), names, 0..4),
                0..5,
            )
        };
        (entries(), entries(), any::<bool>(), any::<bool>()).prop_map(|(f, t, ignore, ci)| {
            let dedupe = |e: BTreeMap<String, BTreeMap<ProviderKind, String>>, fold_names: bool| {
                let mut seen: BTreeSet<(ProviderKind, String)> = BTreeSet::new();
                let mut commons = BTreeSet::new();
                let mut out = BTreeMap::new();
                for (c, per) in e {
                    if !commons.insert(fold(fold_names, &c).into_owned()) {
                        continue;
                    }
                    let per: BTreeMap<_, _> = per
                        .into_iter()
                        .filter(|(p, n)| seen.insert((*p, fold(fold_names, n).into_owned())))
                        .collect();
                    out.insert(c, per);
                }
                out
            };
            Mapping {
                custom_fields: dedupe(f, false),
                tags: dedupe(t, ci),
                unmapped_custom_fields: if ignore {
                    Unmapped::Ignore
                } else {
                    Unmapped::Sync
                },
                tags_case_insensitive: ci,
            }
        })
    }

    proptest! {
        /// Provider key → common key → provider key gives the key back (tags: its spelling when
        /// they compare without case), for every configured and every unmapped name; and a
        /// common name written somewhere reads back as itself.
        #[test]
        fn mapping_round_trips(m in mapping(), p in provider(), extra in "[a-dA-D]{1,2}") {
            let pm = m.for_provider(p);
            let mut names: Vec<String> = m.custom_fields.values().flat_map(|per| per.values().cloned()).collect();
            names.extend(m.custom_fields.keys().cloned());
            names.push(extra.clone());
            for k in &names {
                if let Some(c) = pm.field_in(k) {
                    prop_assert_eq!(pm.field_out(&c).map(|o| o.into_owned()), Some(k.clone()));
                }
                if let Some(own) = pm.field_out(k) {
                    prop_assert_eq!(pm.field_in(&own), Some(k.clone()));
                }
            }
            for (c, per) in &m.custom_fields {
                match per.get(&p) {
                    Some(own) => prop_assert_eq!(pm.field_in(own), Some(c.clone())),
                    None => prop_assert_eq!(pm.field_out(c), None),
                }
            }
            let b = Boundary::new(pm.clone());
            let mut tags: Vec<String> = m.tags.values().flat_map(|per| per.values().cloned()).collect();
            tags.push(extra);
            for t in &tags {
                let mut c = Contact::new(p, "r1");
                c.tags.insert(t.clone());
                b.inbound(&mut c);
                let back = b.tags_out(&c.tags);
                if c.tags.is_empty() {
                    continue;
                }
                let back: Vec<String> = back.to_strings();
                prop_assert_eq!(back.len(), 1);
                prop_assert_eq!(m.fold_tag(&back[0]), m.fold_tag(t), "tag {} read as {:?}", t, c.tags);
                if !m.tags_case_insensitive || pm.tag_out(&c.tags.iter().next().cloned().unwrap_or_default()).is_some_and(|o| matches!(o, Cow::Borrowed(_))) {
                    prop_assert_eq!(&back[0], t, "an unmapped tag keeps its spelling");
                }
            }
        }
    }
}
