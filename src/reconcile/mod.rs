//! Reconciliation: match records into people, merge each field three ways, and plan the writes
//! the providers' rules allow.
//!
//! **Architecture Invariant:** this module performs no I/O, reads no clock and cannot fail on a
//! network error. [`plan()`] is a pure function of its inputs, and its output is sorted, so the
//! same input always gives the same plan.
//!
//! Planning is on the path of every sync and must stay fast at a million people (SPEC section
//! 6). At that size it is bound by memory latency, so: the memory's maps are joined with the
//! records in one pass (`index.rs`); people are planned in the order their records come in, not
//! in person id order; the per-person loop compares borrowed values, reuses its buffers, reads
//! rules and precedence from per-plan tables, and copies a value only into what the plan
//! outputs.

mod create;
mod index;
pub mod matcher;
pub mod plan;
mod recheck;
mod stored;

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use crate::config::policy::{CreateFilter, Policy};
pub use matcher::{Ambiguity, JoinCandidate, PersonId, Steering};
pub use plan::{Conflict, Create, CreateSkip, Excluded, PersonPlan, Plan, Reason, Skip, Update};
pub use recheck::recheck;
pub use stored::{Agreed, Baseline};

use crate::model::{
    Change, CompactString, Contact, Field, FieldMap, FieldValue, Patch, ProviderKind, RecordId,
    TagSet, Value, ValueRef,
};
use crate::provider::rules::{Blocked, FieldRules, Holders, RuleId};

/// The hasher of the memory's maps: foldhash, several times faster than SipHash on short keys
/// and still seeded per process.
pub type Hasher = foldhash::fast::RandomState;

/// Record id → person, in the order the records were first saved (see [`index::join`]).
pub type Links = indexmap::IndexMap<RecordId, PersonId, Hasher>;

/// Record id → baseline, in the order the records were first saved.
pub type Baselines = indexmap::IndexMap<RecordId, Baseline, Hasher>;

/// Person → the values the last merge decided.
pub type AgreedValues = HashMap<PersonId, Agreed, Hasher>;

/// What the state store remembers from earlier runs.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Which person each record was linked to.
    pub links: Links,
    /// Per record: the value of each field when the last sync finished.
    pub baselines: Baselines,
    /// Per person: the value of each field the last merge decided.
    pub agreed: AgreedValues,
    /// What humans decided about identity (`ignore`, `unlink`).
    pub steering: Steering,
}

/// The rule tables of the providers being synced.
#[derive(Debug, Clone, Default)]
pub struct RuleBook {
    rules: BTreeMap<ProviderKind, FieldRules>,
}

impl RuleBook {
    pub fn new(rules: impl IntoIterator<Item = FieldRules>) -> Self {
        RuleBook {
            rules: rules.into_iter().map(|r| (r.provider, r)).collect(),
        }
    }

    pub fn get(&self, p: ProviderKind) -> Option<&FieldRules> {
        self.rules.get(&p)
    }

    /// The book for a run in which only `listed` providers could be listed: nothing is created
    /// in a provider whose listing failed, since every person would seem to lack a record there.
    pub fn creating_only_in(&self, listed: &BTreeSet<ProviderKind>) -> RuleBook {
        let mut book = self.clone();
        for (p, r) in &mut book.rules {
            if !listed.contains(p) {
                r.create = None;
            }
        }
        book
    }
}

const FIELDS: usize = Field::ALL.len();
const PROVIDERS: usize = ProviderKind::ALL.len();

/// Plans a sync: links `records`, merges every synced field against `memory`, and checks each
/// resulting write against `rules`.
pub fn plan(records: &[Contact], memory: &Memory, policy: &Policy, rules: &RuleBook) -> Plan {
    let linked = index::join(records, &memory.links);
    let baselines = index::join(records, &memory.baselines);
    // Every person an earlier run saved has agreed values (the store saves people before
    // links), so those keys are every id ever given, listed now or not.
    let known = |p: &str| memory.agreed.contains_key(p);
    let mut matching = matcher::match_linked(records, &linked, &memory.steering, &known);
    drop(linked);
    let owners = KeyOwners::new(records, &matching.group_of);
    let tables = Tables::new(policy, rules);
    let ambiguous = std::mem::take(&mut matching.ambiguous);
    let mut rank = vec![0u32; matching.groups.len()];
    for (r, &g) in matching.by_person.iter().enumerate() {
        rank[g as usize] = r as u32;
    }
    // Scope is checked only when something can put a person out of it, to keep the hot loop
    // free of it otherwise.
    let scoped = !policy.exclude_tags.is_empty()
        || (policy.skip_blocked && records.iter().any(|c| c.blocked));
    let plan_people = |order: &[u32], in_person_order: bool| {
        let mut planner = Planner {
            records,
            baselines: &baselines,
            tables: &tables,
            holders: PlanHolders::new(records, rules),
            owners: &owners,
            scratch: Scratch::default(),
        };
        // Looked up together, so the cache misses overlap.
        let agreed: Vec<Option<&Agreed>> = if memory.agreed.is_empty() {
            Vec::new()
        } else {
            order
                .iter()
                .map(|&g| memory.agreed.get(&matching.groups[g as usize].person))
                .collect()
        };
        let mut out = Plan::default();
        let mut people = Vec::with_capacity(order.len());
        for (k, &g) in order.iter().enumerate() {
            let group = &matching.groups[g as usize];
            let members = group.members(&matching.members);
            if scoped {
                let contacts = members.iter().map(|&i| &records[i as usize]);
                if let Some(reason) = policy.excluded(contacts) {
                    out.excluded.push(Excluded {
                        person: group.person.clone(),
                        records: members
                            .iter()
                            .map(|&i| records[i as usize].id.clone())
                            .collect(),
                        reason,
                    });
                    continue;
                }
            }
            let previous = agreed.get(k).copied().flatten();
            let person = planner.person(g, &group.person, previous, members, &mut out);
            people.push((rank[g as usize], person));
        }
        if !in_person_order && planner.holders.contested.get() {
            return None;
        }
        people.sort_unstable_by_key(|(r, _)| *r);
        out.people = people.into_iter().map(|(_, p)| p).collect();
        Some(out)
    };
    // People are planned in the order their records come in, so memory access follows the
    // records. Only when two records want one value that must be unique does the order matter
    // (the first in person order gets it, as always): then planning starts over in that order.
    let by_record: Vec<u32> = (0..matching.groups.len() as u32).collect();
    let mut out = plan_people(&by_record, false)
        .or_else(|| plan_people(&matching.by_person, true))
        .unwrap_or_default();
    out.ambiguous = ambiguous;
    out.join_candidates = std::mem::take(&mut matching.join_candidates);
    if !out.excluded.is_empty() {
        // `out.people` leaves excluded people out; keep person order aligned with it for the
        // creates, which are never planned for them either.
        let gone: std::collections::HashSet<&PersonId> =
            out.excluded.iter().map(|x| &x.person).collect();
        let groups = &matching.groups;
        matching
            .by_person
            .retain(|&g| !gone.contains(&groups[g as usize].person));
    }
    let (creates, create_skips) =
        create::plan_creates(&out.people, &matching, policy, rules, &owners);
    out.creates = creates;
    out.create_skips = create_skips;
    out.updates
        .sort_by(|a, b| a.patch.record.cmp(&b.patch.record));
    out.skipped
        .sort_by(|a, b| (&a.record, a.field, &a.detail).cmp(&(&b.record, b.field, &b.detail)));
    out.conflicts
        .sort_by(|a, b| (&a.person, a.field, &a.key).cmp(&(&b.person, b.field, &b.key)));
    out.excluded.sort_by(|a, b| a.person.cmp(&b.person));
    out
}

/// The policy and rules as arrays indexed by field and provider, built once per plan.
struct Tables<'a> {
    synced: [bool; FIELDS],
    rules: [Option<&'a FieldRules>; PROVIDERS],
    /// Whether the provider has the field (and a rule table at all).
    supports: [[bool; PROVIDERS]; FIELDS],
    rank: [[usize; PROVIDERS]; FIELDS],
    /// Whether the provider's edits of the field count (role, `sources`).
    source: [[bool; PROVIDERS]; FIELDS],
    /// Whether the provider is written for the field (role, `targets`).
    target: [[bool; PROVIDERS]; FIELDS],
    propagate_clears: bool,
}

impl<'a> Tables<'a> {
    fn new(policy: &Policy, rules: &'a RuleBook) -> Self {
        let rules = ProviderKind::ALL.map(|p| rules.get(p));
        Tables {
            synced: Field::ALL.map(|f| policy.synced.contains(&f)),
            supports: Field::ALL.map(|f| {
                ProviderKind::ALL.map(|p| rules[p as usize].is_some_and(|r| r.supports(f)))
            }),
            rank: Field::ALL.map(|f| ProviderKind::ALL.map(|p| policy.rank(f, p))),
            source: Field::ALL.map(|f| ProviderKind::ALL.map(|p| policy.is_source(f, p))),
            target: Field::ALL.map(|f| ProviderKind::ALL.map(|p| policy.is_target(f, p))),
            rules,
            propagate_clears: policy.propagate_clears,
        }
    }
}

/// One record of the person being planned.
struct Member<'a> {
    c: &'a Contact,
    provider: usize,
    /// The encoded baseline of each field (`None`: no baseline for it).
    base: [Option<&'a [u8]>; FIELDS],
}

/// Buffers reused from person to person.
#[derive(Default)]
struct Scratch<'a> {
    members: Vec<Member<'a>>,
    slots: Vec<Slot<'a>>,
    /// Current scalar value of each member, for the field being merged.
    cur: Vec<Option<ValueRef<'a>>>,
    /// Tags or custom-field keys being merged, and the agreed elements.
    universe: Vec<&'a str>,
    agreed_set: Vec<&'a str>,
    agreed_map: Vec<(&'a str, &'a str)>,
    decided: Vec<(Field, Decided<'a>)>,
    changes: Vec<(usize, Change, Reason)>,
}

/// A field's agreed value: exactly the one remembered, or a new one.
enum Decided<'a> {
    Same(&'a FieldValue),
    New(FieldValue),
}

impl Decided<'_> {
    fn value(&self) -> &FieldValue {
        match self {
            Decided::Same(v) => v,
            Decided::New(v) => v,
        }
    }
}

/// A field's agreed value before it is copied: borrowed from a member or from memory.
#[derive(Clone, Copy)]
enum AgreedRef<'a> {
    Scalar(Option<ValueRef<'a>>),
    /// In `Scratch::agreed_set`.
    Set,
    /// In `Scratch::agreed_map`.
    Map,
}

struct Planner<'a, 'p> {
    records: &'a [Contact],
    /// Each record's baseline, by record index (empty: none at all).
    baselines: &'p [Option<&'a Baseline>],
    tables: &'p Tables<'a>,
    holders: PlanHolders<'a>,
    owners: &'p KeyOwners<'a>,
    scratch: Scratch<'a>,
}

/// One slot of the three-way merge: a record's current and baseline value of one field (or of
/// one tag or custom-field key), by comparison key.
#[derive(Clone, Copy)]
struct Slot<'v> {
    rank: usize,
    member: usize,
    cur: Option<&'v [u8]>,
    /// `None`: no baseline (first run, or newly linked record).
    base: Option<Option<&'v [u8]>>,
}

/// Whose value a merge chose. `Agreed`: the remembered agreed value (which may be empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Changed(usize),
    Conflict(usize),
    First(usize),
    Agreed,
}

/// What a merge of one field (or one tag or custom-field key) compares against.
#[derive(Clone, Copy)]
struct Merge<'v> {
    /// The value agreed before: `None` when nothing was decided for it yet, `Some(None)` when
    /// the agreed value is empty.
    agreed: Option<Option<&'v [u8]>>,
    /// Whether a value turning empty counts as a change.
    removal_counts: bool,
    /// Whether a record with no baseline that holds another value than the agreed one competes
    /// with it by precedence (SPEC section 10); off for tags, where a newcomer's tags are added.
    compete: bool,
}

impl<'v> Merge<'v> {
    /// The record changed the value since its baseline.
    fn changed(&self, s: &Slot<'_>) -> bool {
        s.base.is_some_and(|b| b != s.cur) && (s.cur.is_some() || self.removal_counts)
    }

    /// The record has no baseline and holds a value other than the agreed one.
    fn newcomer(&self, s: &Slot<'_>) -> bool {
        self.compete
            && s.base.is_none()
            && s.cur.is_some()
            && matches!(self.agreed, Some(Some(k)) if s.cur != Some(k))
    }

    /// The record has a baseline and holds the agreed value.
    fn holds_agreed(&self, s: &Slot<'_>) -> bool {
        s.base.is_some() && matches!(self.agreed, Some(Some(k)) if s.cur == Some(k))
    }

    /// SPEC sections 2 and 10: one changer wins; disagreeing changers go by precedence (a
    /// conflict); a record with no baseline whose value differs from the agreed one competes
    /// with the records holding it, by precedence, as a conflict; no changer keeps the agreed
    /// value; no agreed value takes the first non-empty value in precedence order (newly linked
    /// records also fill an empty agreed value).
    fn decide(&self, slots: &[Slot<'_>]) -> Why {
        let mut best: Option<&Slot<'_>> = None;
        let mut disagree = false;
        let mut any_changer = false;
        for s in slots {
            let changed = self.changed(s);
            if !changed && !self.newcomer(s) {
                continue;
            }
            any_changer |= changed;
            match best {
                None => best = Some(s),
                Some(b) => {
                    disagree |= b.cur != s.cur;
                    if s.rank < b.rank {
                        best = Some(s);
                    }
                }
            }
        }
        if let Some(b) = best {
            if any_changer {
                return if disagree {
                    Why::Conflict(b.member)
                } else {
                    Why::Changed(b.member)
                };
            }
            // Only newcomers: they compete with the holders of the agreed value.
            let holder = slots
                .iter()
                .filter(|s| self.holds_agreed(s))
                .min_by_key(|s| s.rank);
            return match holder {
                Some(h) if h.rank < b.rank => Why::Conflict(h.member),
                Some(_) => Why::Conflict(b.member),
                None if disagree => Why::Conflict(b.member),
                None => Why::First(b.member),
            };
        }
        let first = |only_new: bool| {
            slots
                .iter()
                .filter(|s| s.cur.is_some() && (!only_new || s.base.is_none()))
                .min_by_key(|s| s.rank)
                .map(|s| Why::First(s.member))
        };
        match self.agreed {
            Some(Some(_)) => Why::Agreed,
            Some(None) => first(true).unwrap_or(Why::Agreed),
            None => first(false).unwrap_or(Why::Agreed),
        }
    }

    /// The records a conflict was between: the changers and newcomers, and when nobody changed
    /// the value, the holders of the agreed value the newcomers competed with.
    fn contenders<'s>(
        &self,
        slots: &'s [Slot<'s>],
    ) -> impl Iterator<Item = &'s Slot<'s>> + use<'s, 'v> {
        let any_changer = slots.iter().any(|s| self.changed(s));
        let m = *self;
        slots
            .iter()
            .filter(move |s| m.changed(s) || m.newcomer(s) || (!any_changer && m.holds_agreed(s)))
    }
}

/// String equality that does not read the text when both are the same string (as when the
/// merge kept the remembered value).
fn same_str(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

fn same_value(a: ValueRef<'_>, b: &Value) -> bool {
    a.valid == b.valid() && same_str(a.key, b.key()) && same_str(a.raw, b.raw())
}

fn set_eq(set: &TagSet, items: &[&str]) -> bool {
    set.len() == items.len() && set.iter().zip(items).all(|(a, b)| same_str(a, b))
}

fn map_eq(map: &FieldMap, items: &[(&str, &str)]) -> bool {
    map.len() == items.len()
        && map
            .iter()
            .zip(items)
            .all(|((k, v), (ik, iv))| same_str(k, ik) && same_str(v, iv))
}

impl<'a> Planner<'a, '_> {
    /// Plans one person: the writes, skips and conflicts go to `out`.
    fn person(
        &mut self,
        group: u32,
        person: &PersonId,
        previous: Option<&'a Agreed>,
        ids: &[u32],
        out: &mut Plan,
    ) -> PersonPlan {
        let mut s = std::mem::take(&mut self.scratch);
        s.members.clear();
        s.members.extend(ids.iter().map(|&i| {
            let c = &self.records[i as usize];
            Member {
                c,
                provider: c.provider() as usize,
                base: self
                    .baselines
                    .get(i as usize)
                    .copied()
                    .flatten()
                    .map_or([None; FIELDS], Baseline::parts),
            }
        }));
        s.decided.clear();
        s.changes.clear();

        for field in Field::ALL {
            let f = field as usize;
            if !self.tables.synced[f] {
                continue;
            }
            if !s
                .members
                .iter()
                .any(|m| self.tables.supports[f][m.provider])
            {
                continue;
            }
            let prev = previous.and_then(|a| a.get(&field));
            let (agreed, why) = match field {
                Field::Tags => self.merge_elements::<Tags>(person, prev, &mut s, out),
                Field::CustomFields => {
                    self.merge_elements::<CustomFields>(person, prev, &mut s, out)
                }
                _ => self.merge_scalar(person, field, prev, &mut s, out),
            };
            let decided = match (agreed, prev) {
                (AgreedRef::Scalar(a), Some(p @ FieldValue::Scalar(pv)))
                    if match (a, pv) {
                        (None, None) => true,
                        (Some(a), Some(pv)) => same_value(a, pv),
                        _ => false,
                    } =>
                {
                    Decided::Same(p)
                }
                (AgreedRef::Set, Some(p @ FieldValue::Set(ps))) if set_eq(ps, &s.agreed_set) => {
                    Decided::Same(p)
                }
                (AgreedRef::Map, Some(p @ FieldValue::Map(pm))) if map_eq(pm, &s.agreed_map) => {
                    Decided::Same(p)
                }
                (AgreedRef::Scalar(a), _) => {
                    Decided::New(FieldValue::Scalar(a.map(ValueRef::to_value)))
                }
                (AgreedRef::Set, _) => Decided::New(FieldValue::Set(
                    s.agreed_set.iter().map(|t| (*t).to_owned()).collect(),
                )),
                (AgreedRef::Map, _) => Decided::New(FieldValue::Map(
                    s.agreed_map
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                )),
            };
            self.writes(group, person, field, agreed, &decided, why, &mut s, out);
            s.decided.push((field, decided));
        }

        if !s.changes.is_empty() {
            s.changes.sort_by_key(|(member, _, _)| *member);
            let mut changes = s.changes.drain(..).peekable();
            while let Some((member, change, reason)) = changes.next() {
                let m = s.members[member].c;
                let mut list = vec![change];
                let mut reasons = vec![reason];
                while let Some((_, change, reason)) = changes.next_if(|c| c.0 == member) {
                    list.push(change);
                    reasons.push(reason);
                }
                out.updates.push(Update {
                    person: person.clone(),
                    patch: Patch {
                        record: m.id.clone(),
                        update_ref: m.update_ref.clone().unwrap_or_default(),
                        changes: list,
                    },
                    reasons,
                });
            }
        }
        let unchanged = previous.filter(|p| {
            p.len() == s.decided.len()
                && s.decided.iter().all(|(_, d)| matches!(d, Decided::Same(_)))
        });
        let agreed = match unchanged {
            Some(p) => p.clone(),
            None => Agreed::from_sorted(s.decided.drain(..).map(|(f, d)| {
                (
                    f,
                    match d {
                        Decided::Same(v) => v.clone(),
                        Decided::New(v) => v,
                    },
                )
            })),
        };
        let plan = PersonPlan {
            person: person.clone(),
            records: s.members.iter().map(|m| m.c.id.clone()).collect(),
            agreed,
        };
        self.scratch = s;
        plan
    }

    /// Plans the writes of one field: every member whose value differs from the agreed one gets
    /// it, where its rules allow.
    #[allow(clippy::too_many_arguments)]
    fn writes(
        &self,
        group: u32,
        person: &PersonId,
        field: Field,
        agreed: AgreedRef<'a>,
        decided: &Decided<'a>,
        why: Why,
        s: &mut Scratch<'a>,
        out: &mut Plan,
    ) {
        let t = &self.tables;
        let f = field as usize;
        let wanted = decided.value();
        for (i, m) in s.members.iter().enumerate() {
            if !t.supports[f][m.provider] {
                continue;
            }
            let Some(r) = t.rules[m.provider] else {
                continue;
            };
            let untargeted = !t.target[f][m.provider];
            let same = match agreed {
                AgreedRef::Scalar(a) => {
                    let cur = s.cur[i];
                    let same = cur.map(|v| v.key) == a.map(|v| v.key);
                    if let Some(v) = cur.filter(|v| !v.valid) {
                        if !same {
                            out.skipped.push(Skip {
                                person: person.clone(),
                                record: m.c.id.clone(),
                                field,
                                current: m.c.get(field),
                                wanted: wanted.clone(),
                                rule: RuleId::InvalidFormat,
                                detail: format!(
                                    "{} holds {:?}, which does not parse; left for a person to fix",
                                    m.c.id, v.raw
                                ),
                            });
                        }
                        continue;
                    }
                    same
                }
                AgreedRef::Set => set_eq(&m.c.tags, &s.agreed_set),
                AgreedRef::Map => map_eq(&m.c.custom_fields, &s.agreed_map),
            };
            if same {
                continue;
            }
            if field.is_scalar() && wanted.is_empty() && !t.propagate_clears {
                continue;
            }
            if untargeted {
                *out.untargeted.entry((m.c.provider(), field)).or_default() += 1;
                continue;
            }
            let current = m.c.get(field);
            if m.c.update_ref.is_none() {
                if r.can_write(field) {
                    out.skipped.push(Skip {
                        person: person.clone(),
                        record: m.c.id.clone(),
                        field,
                        current,
                        wanted: wanted.clone(),
                        rule: RuleId::RecordNotWritable,
                        detail: m
                            .c
                            .write_blocked
                            .as_deref()
                            .unwrap_or("the provider cannot address this record")
                            .to_owned(),
                    });
                }
                continue;
            }
            let mut admission = r.admit(&m.c.id, field, &current, wanted, &self.holders);
            if admission.write.is_some() {
                if let Some(holder) = self.owners.held_by_other_person(field, wanted, group) {
                    admission.write = None;
                    admission.blocked.push(Blocked {
                        rule: RuleId::HeldByOtherPerson,
                        detail: format!(
                            "{holder} holds this {field} and is not {person}; a human decides (contact-sync review)"
                        ),
                    });
                }
            }
            for Blocked { rule, detail } in admission.blocked {
                out.skipped.push(Skip {
                    person: person.clone(),
                    record: m.c.id.clone(),
                    field,
                    current: current.clone(),
                    wanted: wanted.clone(),
                    rule,
                    detail,
                });
            }
            if let Some(new) = admission.write {
                if r.rule(field).unique_per_account {
                    if let FieldValue::Scalar(Some(v)) = &new {
                        self.holders.claim(m.c.provider(), field, v.key(), &m.c.id);
                    }
                }
                let reason = match (field.is_scalar(), why) {
                    (false, _) => Reason::Merged,
                    (true, Why::Changed(w)) => Reason::Changed {
                        by: s.members[w].c.id.clone(),
                    },
                    (true, Why::Conflict(w)) => Reason::Conflict {
                        winner: s.members[w].c.id.clone(),
                    },
                    (true, Why::First(w)) => Reason::FirstValue {
                        from: s.members[w].c.id.clone(),
                    },
                    (true, Why::Agreed) => Reason::Agreed,
                };
                s.changes.push((
                    i,
                    Change {
                        field,
                        old: current,
                        new,
                    },
                    reason,
                ));
            }
        }
    }

    fn merge_scalar(
        &self,
        person: &PersonId,
        field: Field,
        prev: Option<&'a FieldValue>,
        s: &mut Scratch<'a>,
        out: &mut Plan,
    ) -> (AgreedRef<'a>, Why) {
        let t = &self.tables;
        let f = field as usize;
        s.cur.clear();
        s.slots.clear();
        for (i, m) in s.members.iter().enumerate() {
            let cur = m.c.scalar_ref(field);
            s.cur.push(cur);
            if !t.supports[f][m.provider]
                || !t.source[f][m.provider]
                || cur.is_some_and(|v| !v.valid)
            {
                continue;
            }
            s.slots.push(Slot {
                rank: t.rank[f][m.provider],
                member: i,
                cur: cur.map(|v| v.key.as_bytes()),
                base: m.base[f].map(stored::scalar_key),
            });
        }
        let prev: Option<Option<&Value>> = match prev {
            Some(FieldValue::Scalar(v)) => Some(v.as_ref()),
            _ => None,
        };
        let merge = Merge {
            agreed: prev.map(|v| v.map(|v| v.key().as_bytes())),
            removal_counts: t.propagate_clears,
            compete: true,
        };
        let why = merge.decide(&s.slots);
        let agreed = match why {
            Why::Changed(i) | Why::Conflict(i) | Why::First(i) => s.cur[i],
            Why::Agreed => prev.flatten().map(ValueRef::from),
        };
        if let Why::Conflict(winner) = why {
            out.conflicts.push(Conflict {
                person: person.clone(),
                field,
                key: None,
                candidates: merge
                    .contenders(&s.slots)
                    .map(|c| {
                        (
                            s.members[c.member].c.id.clone(),
                            s.cur[c.member]
                                .map_or_else(|| "(cleared)".to_owned(), |v| v.raw.to_owned()),
                        )
                    })
                    .collect(),
                winner: s.members[winner].c.id.clone(),
            });
        }
        (AgreedRef::Scalar(agreed), why)
    }

    /// Merges a set or map element by element: each tag or custom-field key agreed before or
    /// held now is merged on its own, the conflicts are reported per element, and the agreed
    /// elements are left in `Scratch::agreed_set` or `Scratch::agreed_map`.
    fn merge_elements<E: Elements<'a>>(
        &self,
        person: &PersonId,
        prev: Option<&'a FieldValue>,
        s: &mut Scratch<'a>,
        out: &mut Plan,
    ) -> (AgreedRef<'a>, Why) {
        let t = &self.tables;
        let f = E::FIELD as usize;
        let prev = prev.and_then(E::remembered);
        // Every element agreed before or held now. (An element only some baseline holds would
        // merge to "absent" without a conflict, so it needs no look.)
        s.universe.clear();
        s.universe.extend(prev.into_iter().flat_map(E::keys));
        for m in &s.members {
            if t.supports[f][m.provider] && t.source[f][m.provider] {
                s.universe.extend(E::keys(E::held(m.c)));
            }
        }
        // Stable, so of equal elements the remembered one (listed first) is kept.
        s.universe.sort();
        s.universe.dedup();
        E::clear(s);
        // By index: `keep` borrows the scratch whole.
        for k in 0..s.universe.len() {
            let key = s.universe[k];
            s.slots.clear();
            for (i, m) in s.members.iter().enumerate() {
                if !t.supports[f][m.provider] || !t.source[f][m.provider] {
                    continue;
                }
                s.slots.push(Slot {
                    rank: t.rank[f][m.provider],
                    member: i,
                    cur: E::value(E::held(m.c), key).map(str::as_bytes),
                    base: m.base[f].map(|part| E::base_value(part, key)),
                });
            }
            let merge = Merge {
                agreed: prev.map(|p| E::value(p, key).map(str::as_bytes)),
                removal_counts: true,
                compete: E::COMPETE,
            };
            let why = merge.decide(&s.slots);
            let value = match why {
                Why::Changed(i) | Why::Conflict(i) | Why::First(i) => {
                    E::value(E::held(s.members[i].c), key)
                }
                Why::Agreed => prev.and_then(|p| E::value(p, key)),
            };
            if let Why::Conflict(winner) = why {
                out.conflicts.push(Conflict {
                    person: person.clone(),
                    field: E::FIELD,
                    key: Some(key.to_owned()),
                    candidates: merge
                        .contenders(&s.slots)
                        .map(|c| {
                            let m = s.members[c.member].c;
                            (m.id.clone(), E::shown(E::value(E::held(m), key)))
                        })
                        .collect(),
                    winner: s.members[winner].c.id.clone(),
                });
            }
            if let Some(v) = value {
                E::keep(s, key, v);
            }
        }
        (E::AGREED, Why::Agreed)
    }
}

/// A field merged element by element (SPEC section 10): the tags, a set whose elements are
/// present or absent, or the custom fields, a map from key to value. A tag's value is the empty
/// string, so that both merge alike.
trait Elements<'a> {
    /// The collection as a record or the agreed memory holds it.
    type Held: 'a;
    /// The field.
    const FIELD: Field;
    /// Whether a record with no baseline that holds another value competes with the agreed one
    /// (see [`Merge::compete`]); off for tags, where a newcomer's tags are added.
    const COMPETE: bool;
    /// Where the agreed elements are left.
    const AGREED: AgreedRef<'static>;

    /// The remembered agreed collection, when `v` is one.
    fn remembered(v: &'a FieldValue) -> Option<&'a Self::Held>;

    /// A record's collection.
    fn held(c: &'a Contact) -> &'a Self::Held;

    /// The keys of a collection, in order.
    fn keys(held: &'a Self::Held) -> impl Iterator<Item = &'a str>;

    /// The value of element `key` (`""` for a tag), or `None` when the collection lacks it.
    fn value(held: &'a Self::Held, key: &str) -> Option<&'a str>;

    /// The value of element `key` in an encoded baseline part, by comparison key.
    fn base_value(part: &'a [u8], key: &str) -> Option<&'a [u8]>;

    /// How a contender's element is shown in a conflict.
    fn shown(value: Option<&str>) -> String;

    /// Empties the agreed elements.
    fn clear(s: &mut Scratch<'a>);

    /// Adds an agreed element.
    fn keep(s: &mut Scratch<'a>, key: &'a str, value: &'a str);
}

/// The tags, merged tag by tag.
struct Tags;

impl<'a> Elements<'a> for Tags {
    type Held = TagSet;
    const FIELD: Field = Field::Tags;
    const COMPETE: bool = false;
    const AGREED: AgreedRef<'static> = AgreedRef::Set;

    fn remembered(v: &'a FieldValue) -> Option<&'a Self::Held> {
        match v {
            FieldValue::Set(p) => Some(p),
            _ => None,
        }
    }

    fn held(c: &'a Contact) -> &'a Self::Held {
        &c.tags
    }

    fn keys(held: &'a Self::Held) -> impl Iterator<Item = &'a str> {
        held.iter().map(CompactString::as_str)
    }

    fn value(held: &'a Self::Held, key: &str) -> Option<&'a str> {
        held.contains(key).then_some("")
    }

    fn base_value(part: &'a [u8], key: &str) -> Option<&'a [u8]> {
        stored::Items::new(part)
            .is_some_and(|items| items.contains(key.as_bytes()))
            .then_some(b"".as_slice())
    }

    fn shown(value: Option<&str>) -> String {
        if value.is_some() {
            "(added)"
        } else {
            "(removed)"
        }
        .to_owned()
    }

    fn clear(s: &mut Scratch<'a>) {
        s.agreed_set.clear();
    }

    fn keep(s: &mut Scratch<'a>, key: &'a str, _value: &'a str) {
        s.agreed_set.push(key);
    }
}

/// The custom fields, merged key by key.
struct CustomFields;

impl<'a> Elements<'a> for CustomFields {
    type Held = FieldMap;
    const FIELD: Field = Field::CustomFields;
    const COMPETE: bool = true;
    const AGREED: AgreedRef<'static> = AgreedRef::Map;

    fn remembered(v: &'a FieldValue) -> Option<&'a Self::Held> {
        match v {
            FieldValue::Map(p) => Some(p),
            _ => None,
        }
    }

    fn held(c: &'a Contact) -> &'a Self::Held {
        &c.custom_fields
    }

    fn keys(held: &'a Self::Held) -> impl Iterator<Item = &'a str> {
        held.keys().map(CompactString::as_str)
    }

    fn value(held: &'a Self::Held, key: &str) -> Option<&'a str> {
        held.get(key).map(CompactString::as_str)
    }

    fn base_value(part: &'a [u8], key: &str) -> Option<&'a [u8]> {
        stored::Items::new(part).and_then(|items| items.get(key.as_bytes()))
    }

    fn shown(value: Option<&str>) -> String {
        value.unwrap_or("(removed)").to_owned()
    }

    fn clear(s: &mut Scratch<'a>) {
        s.agreed_map.clear();
    }

    fn keep(s: &mut Scratch<'a>, key: &'a str, value: &'a str) {
        s.agreed_map.push((key, value));
    }
}

/// Per key: its first holder, a holder of another person (`NONE`: none), the providers holding it.
type KeyIndex<'a> = HashMap<&'a str, (u32, u32, u8)>;

/// Which person holds each phone and e-mail, so that a key is never written to a record of
/// another person (SPEC section 10, rule `held-by-other-person`). Built on the first question:
/// a plan that writes no phone or e-mail never builds it.
struct KeyOwners<'a> {
    records: &'a [Contact],
    group_of: &'a [u32],
    /// Per field (phone, e-mail) and key: the first record holding it, a record of another
    /// person holding it too (`NONE`: none), and the providers whose records hold it.
    index: OnceCell<[KeyIndex<'a>; 2]>,
}

impl<'a> KeyOwners<'a> {
    fn new(records: &'a [Contact], group_of: &'a [u32]) -> Self {
        KeyOwners {
            records,
            group_of,
            index: OnceCell::new(),
        }
    }

    /// The person a record belongs to; every record outside a group (ambiguous) is a person of
    /// its own. Ignored records are not asked about.
    fn owner(&self, i: u32) -> u64 {
        match self.group_of.get(i as usize) {
            Some(&g) if g != matcher::NONE => u64::from(g),
            _ => (1u64 << 32) | u64::from(i),
        }
    }

    fn index(&self) -> &[KeyIndex<'a>; 2] {
        self.index.get_or_init(|| {
            let keys = |r: &'a Contact| {
                [&r.phone, &r.email].map(|v| v.as_ref().filter(|v| v.valid()).map(|v| v.key()))
            };
            // The smallest record id holding each key, then the smallest held by another
            // person than that one: the answer does not depend on the input order.
            let mut index = [HashMap::new(), HashMap::new()];
            for (i, r) in self.records.iter().enumerate() {
                for (slot, key) in keys(r).into_iter().enumerate() {
                    let Some(key) = key else { continue };
                    let e = index[slot]
                        .entry(key)
                        .or_insert((i as u32, matcher::NONE, 0));
                    e.2 |= r.provider().bit();
                    if r.id < self.records[e.0 as usize].id {
                        e.0 = i as u32;
                    }
                }
            }
            for (i, r) in self.records.iter().enumerate() {
                for (slot, key) in keys(r).into_iter().enumerate() {
                    let Some(e) = key.and_then(|k| index[slot].get_mut(k)) else {
                        continue;
                    };
                    if self.owner(e.0) != self.owner(i as u32)
                        && (e.1 == matcher::NONE || r.id < self.records[e.1 as usize].id)
                    {
                        e.1 = i as u32;
                    }
                }
            }
            index
        })
    }

    /// A record of another person than `group` that holds the phone or e-mail `wanted`.
    fn held_by_other_person(
        &self,
        field: Field,
        wanted: &FieldValue,
        group: u32,
    ) -> Option<&'a RecordId> {
        let slot = match field {
            Field::Phone => 0,
            Field::Email => 1,
            _ => return None,
        };
        let FieldValue::Scalar(Some(v)) = wanted else {
            return None;
        };
        let &(first, other, _) = self.index()[slot].get(v.key())?;
        let mine = u64::from(group);
        let holder = if self.owner(first) != mine {
            first
        } else if other != matcher::NONE {
            other
        } else {
            return None;
        };
        Some(&self.records[holder as usize].id)
    }

    /// Whether a listed record of `provider` holds the phone or e-mail `key`.
    fn held_in(&self, provider: ProviderKind, field: Field, key: &str) -> bool {
        let slot = match field {
            Field::Phone => 0,
            Field::Email => 1,
            _ => return false,
        };
        self.index()[slot]
            .get(key)
            .is_some_and(|e| e.2 & provider.bit() != 0)
    }
}

/// Per value: the provider, field and record index of each listed holder.
type Listed<'a> = HashMap<&'a str, Vec<(ProviderKind, Field, u32)>>;

/// Who holds each value of the fields some provider requires to be unique, plus the values
/// this plan already gives to a record. The listed holders are indexed on the first question,
/// so a plan that writes no unique field never builds the index.
struct PlanHolders<'a> {
    records: &'a [Contact],
    rules: &'a RuleBook,
    /// Per value: the provider, field and record index of each holder.
    listed: OnceCell<Listed<'a>>,
    planned: RefCell<HashMap<(ProviderKind, Field, String), RecordId>>,
    /// The first record asked about each value no listed record holds.
    asked: RefCell<HashMap<(ProviderKind, Field, String), RecordId>>,
    /// Two records were asked about one such value: which of them gets it depends on the order
    /// people are planned in.
    contested: Cell<bool>,
}

impl<'a> PlanHolders<'a> {
    fn new(records: &'a [Contact], rules: &'a RuleBook) -> Self {
        PlanHolders {
            records,
            rules,
            listed: OnceCell::new(),
            planned: RefCell::new(HashMap::new()),
            asked: RefCell::new(HashMap::new()),
            contested: Cell::new(false),
        }
    }

    fn listed(&self) -> &Listed<'a> {
        self.listed.get_or_init(|| {
            let mut listed: Listed<'a> = HashMap::new();
            for (i, r) in self.records.iter().enumerate() {
                let Some(table) = self.rules.get(r.provider()) else {
                    continue;
                };
                for field in Field::SCALARS {
                    if !table.rule(field).unique_per_account {
                        continue;
                    }
                    if let Some(v) = r.scalar_ref(field) {
                        listed
                            .entry(v.key)
                            .or_default()
                            .push((r.provider(), field, i as u32));
                    }
                }
            }
            listed
        })
    }

    fn claim(&self, provider: ProviderKind, field: Field, key: &str, record: &RecordId) {
        self.planned
            .borrow_mut()
            .insert((provider, field, key.to_owned()), record.clone());
    }
}

impl Holders for PlanHolders<'_> {
    fn held_by_other(
        &self,
        provider: ProviderKind,
        field: Field,
        key: &str,
        except: &RecordId,
    ) -> Option<RecordId> {
        if let Some(holders) = self.listed().get(key) {
            let other = holders
                .iter()
                .filter(|(p, f, _)| *p == provider && *f == field)
                .map(|(_, _, i)| &self.records[*i as usize].id)
                .filter(|id| *id != except)
                .min();
            if let Some(other) = other {
                return Some(other.clone());
            }
        }
        let k = (provider, field, key.to_owned());
        match self.asked.borrow_mut().entry(k.clone()) {
            std::collections::hash_map::Entry::Occupied(first) => {
                if first.get() != except {
                    self.contested.set(true);
                }
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(except.clone());
            }
        }
        self.planned
            .borrow()
            .get(&k)
            .filter(|id| *id != except)
            .cloned()
    }
}

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod tests;
