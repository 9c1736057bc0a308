//! The planner as it was before it was optimised (matcher and merge), kept for tests: the
//! optimised [`super::plan`] must give exactly the same plans. The one change: ties between
//! groups claiming one person id are broken by record id, as the optimised matcher does (the
//! original left them to hash map order).

#![allow(clippy::all)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{
    Agreed, Ambiguity, Conflict, Memory, PersonId, PersonPlan, Plan, Policy, Reason, RuleBook,
    Skip, Update,
};
use crate::model::{Change, Contact, Field, FieldValue, Patch, ProviderKind, RecordId, Value};
use crate::provider::rules::{Blocked, Holders, RuleId};

type Baseline = BTreeMap<Field, FieldValue>;

struct OldMemory {
    links: HashMap<RecordId, PersonId>,
    baselines: HashMap<RecordId, Baseline>,
    agreed: HashMap<PersonId, BTreeMap<Field, FieldValue>>,
}

/// The original planner, on memory converted to its types (baselines by key, as now stored).
pub fn plan(records: &[Contact], memory: &Memory, policy: &Policy, rules: &RuleBook) -> Plan {
    let old = OldMemory {
        links: memory.links.clone(),
        baselines: memory
            .baselines
            .iter()
            .map(|(id, b)| (id.clone(), b.iter().collect()))
            .collect(),
        agreed: memory
            .agreed
            .iter()
            .map(|(p, a)| (p.clone(), a.iter().map(|(f, v)| (*f, v.clone())).collect()))
            .collect(),
    };
    plan_old(records, &old, policy, rules)
}

/// A group of records that are one person.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    person: PersonId,
    /// Indexes into the record slice, sorted by record id.
    members: Vec<usize>,
}

/// The matcher's result.
#[derive(Debug, Clone, Default)]
struct Matching {
    /// Every non-ambiguous record is in exactly one group; sorted by person id.
    groups: Vec<Group>,
    ambiguous: Vec<Ambiguity>,
}

struct Dsu {
    parent: Vec<u32>,
    mask: Vec<u8>,
}

impl Dsu {
    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = p;
        }
        x
    }

    /// Joins the sets of `a` and `b` unless that would put two records of one provider together.
    fn union(&mut self, a: u32, b: u32) -> bool {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return true;
        }
        if self.mask[ra as usize] & self.mask[rb as usize] != 0 {
            return false;
        }
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[hi as usize] = lo;
        self.mask[lo as usize] |= self.mask[hi as usize];
        true
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Phone,
    Email,
    Link,
}

impl Via {
    fn describe(self) -> &'static str {
        match self {
            Via::Phone => "phone",
            Via::Email => "email",
            Via::Link => "a link from an earlier run",
        }
    }
}

/// Links `records`; `links` maps records to the person they were linked to in earlier runs.
fn match_records(records: &[Contact], links: &HashMap<RecordId, PersonId>) -> Matching {
    let n = records.len();
    // Walk records in id order so the edges, and so which join is refused, never depend on the
    // order the providers listed them in.
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by(|a, b| records[*a as usize].id.cmp(&records[*b as usize].id));
    let mut ambiguous_at: Vec<Option<String>> = vec![None; n];
    let mut ambiguities = Vec::new();

    // Keys shared by two records of one provider cannot say which of them is the person.
    let mut edges: Vec<(u32, u32, Via)> = Vec::with_capacity(n * 2);
    for via in [Via::Phone, Via::Email] {
        let mut holders: HashMap<&str, Vec<u32>> = HashMap::with_capacity(n);
        for &i in &order {
            let r = &records[i as usize];
            let value = match via {
                Via::Phone => r.phone.as_ref(),
                _ => r.email.as_ref(),
            };
            if let Some(v) = value.filter(|v| v.valid) {
                holders.entry(v.key.as_str()).or_default().push(i);
            }
        }
        let mut keys: Vec<_> = holders.into_iter().filter(|(_, h)| h.len() > 1).collect();
        keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, h) in keys {
            let mut mask = 0u8;
            let mut clash = false;
            for &i in &h {
                let bit = records[i as usize].provider().bit();
                clash |= mask & bit != 0;
                mask |= bit;
            }
            if clash {
                let mut ids: Vec<RecordId> =
                    h.iter().map(|&i| records[i as usize].id.clone()).collect();
                ids.sort();
                ambiguities.push(Ambiguity {
                    records: ids,
                    reason: format!(
                        "several records of one provider share the {} {key:?}; not linked by it",
                        via.describe()
                    ),
                });
                continue;
            }
            for w in h.windows(2) {
                edges.push((w[0], w[1], via));
            }
        }
    }
    let mut by_person: HashMap<&str, u32> = HashMap::new();
    let mut link_edges = Vec::new();
    for &i in &order {
        if let Some(p) = links.get(&records[i as usize].id) {
            match by_person.get(p.as_str()) {
                Some(&first) => link_edges.push((first, i, Via::Link)),
                None => {
                    by_person.insert(p.as_str(), i);
                }
            }
        }
    }
    edges.extend(link_edges);

    // Union, set aside the records a refused join touched, and union again without them until
    // nothing new is refused.
    let dsu = loop {
        let mut dsu = Dsu {
            parent: (0..n as u32).collect(),
            mask: records.iter().map(|r| r.provider().bit()).collect(),
        };
        let mut new_ambiguous = false;
        for &(a, b, via) in &edges {
            if ambiguous_at[a as usize].is_some() || ambiguous_at[b as usize].is_some() {
                continue;
            }
            if !dsu.union(a, b) {
                let (ra, rb) = (&records[a as usize], &records[b as usize]);
                let reason = format!(
                    "{} and {} are linked by {} but each already belongs with another {} record",
                    ra.id,
                    rb.id,
                    via.describe(),
                    if ra.provider() == rb.provider() {
                        ra.provider().as_str()
                    } else {
                        "same-provider"
                    }
                );
                ambiguous_at[a as usize] = Some(reason.clone());
                ambiguous_at[b as usize] = Some(reason);
                new_ambiguous = true;
            }
        }
        if !new_ambiguous {
            break dsu;
        }
    };
    let mut dsu = dsu;

    let mut pending: BTreeMap<String, Vec<RecordId>> = BTreeMap::new();
    for (i, reason) in ambiguous_at.iter().enumerate() {
        if let Some(reason) = reason {
            pending
                .entry(reason.clone())
                .or_default()
                .push(records[i].id.clone());
        }
    }
    for (reason, mut ids) in pending {
        ids.sort();
        ambiguities.push(Ambiguity {
            records: ids,
            reason,
        });
    }

    let mut groups_by_root: HashMap<u32, Vec<usize>> = HashMap::with_capacity(n);
    for (i, amb) in ambiguous_at.iter().enumerate() {
        if amb.is_none() {
            let root = dsu.find(i as u32);
            groups_by_root.entry(root).or_default().push(i);
        }
    }
    let mut groups: Vec<Group> = groups_by_root
        .into_values()
        .map(|mut members| {
            members.sort_unstable_by(|a, b| records[*a].id.cmp(&records[*b].id));
            // The smallest persisted person id among the members, else a new id from the
            // smallest record id: deterministic whatever the input order.
            let person = members
                .iter()
                .filter_map(|m| links.get(&records[*m].id))
                .min()
                .cloned()
                .unwrap_or_else(|| format!("p:{}", records[members[0]].id));
            Group { person, members }
        })
        .collect();
    groups.sort_unstable_by(|a, b| {
        a.person
            .cmp(&b.person)
            .then_with(|| a.members.len().cmp(&b.members.len()))
            .then_with(|| records[a.members[0]].id.cmp(&records[b.members[0]].id))
    });
    // A person id claimed by two groups (a link split by a refused join): the first keeps it.
    let mut previous: Option<PersonId> = None;
    for g in &mut groups {
        if previous.as_ref() == Some(&g.person) {
            g.person = format!("p:{}", records[g.members[0]].id);
        } else {
            previous = Some(g.person.clone());
        }
    }
    groups.sort_unstable_by(|a, b| {
        a.person
            .cmp(&b.person)
            .then_with(|| records[a.members[0]].id.cmp(&records[b.members[0]].id))
    });
    ambiguities.sort_by(|a, b| {
        a.records
            .cmp(&b.records)
            .then_with(|| a.reason.cmp(&b.reason))
    });
    Matching {
        groups,
        ambiguous: ambiguities,
    }
}

/// Plans a sync: links `records`, merges every synced field against `memory`, and checks each
/// resulting write against `rules`.
fn plan_old(records: &[Contact], memory: &OldMemory, policy: &Policy, rules: &RuleBook) -> Plan {
    let matching = match_records(records, &memory.links);
    let holders = PlanHolders::new(records, rules);
    let mut out = Plan {
        ambiguous: matching.ambiguous,
        ..Plan::default()
    };
    for group in &matching.groups {
        let members: Vec<&Contact> = group.members.iter().map(|i| &records[*i]).collect();
        plan_person(
            &group.person,
            &members,
            memory,
            policy,
            rules,
            &holders,
            &mut out,
        );
    }
    out.updates
        .sort_by(|a, b| a.patch.record.cmp(&b.patch.record));
    out.skipped
        .sort_by(|a, b| (&a.record, a.field, &a.detail).cmp(&(&b.record, b.field, &b.detail)));
    out.conflicts
        .sort_by(|a, b| (&a.person, a.field, &a.key).cmp(&(&b.person, b.field, &b.key)));
    out
}

/// One slot of the three-way merge: a record's current and baseline value of one field (or of
/// one tag or custom-field key), by comparison key.
#[derive(Clone, Copy)]
struct Slot<'v> {
    rank: usize,
    member: usize,
    cur: Option<&'v str>,
    /// `None`: no baseline (first run, or newly linked record).
    base: Option<Option<&'v str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Changed(usize),
    Conflict(usize),
    First(usize),
    Agreed,
}

/// SPEC section 2: one changer wins; disagreeing changers go by precedence (a conflict); no
/// changer keeps the agreed value; no agreed value takes the first non-empty value in precedence
/// order (newly linked records also fill an empty agreed value).
fn decide<'v>(
    slots: &[Slot<'v>],
    agreed: Option<Option<&'v str>>,
    removal_counts: bool,
) -> (Option<&'v str>, Why) {
    let mut best: Option<&Slot<'v>> = None;
    let mut disagree = false;
    for s in slots {
        let Some(base) = s.base else { continue };
        if base == s.cur || (s.cur.is_none() && !removal_counts) {
            continue;
        }
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
        return (
            b.cur,
            if disagree {
                Why::Conflict(b.member)
            } else {
                Why::Changed(b.member)
            },
        );
    }
    let first = |only_new: bool| {
        slots
            .iter()
            .filter(|s| s.cur.is_some() && (!only_new || s.base.is_none()))
            .min_by_key(|s| s.rank)
            .map(|s| (s.cur, Why::First(s.member)))
    };
    match agreed {
        Some(Some(a)) => (Some(a), Why::Agreed),
        Some(None) => first(true).unwrap_or((None, Why::Agreed)),
        None => first(false).unwrap_or((None, Why::Agreed)),
    }
}

fn conflict_candidates(
    slots: &[Slot<'_>],
    members: &[&Contact],
    removal_counts: bool,
) -> Vec<(RecordId, String)> {
    slots
        .iter()
        .filter(|s| s.base.is_some_and(|b| b != s.cur) && (s.cur.is_some() || removal_counts))
        .map(|s| {
            (
                members[s.member].id.clone(),
                s.cur.map_or_else(|| "(removed)".to_owned(), str::to_owned),
            )
        })
        .collect()
}

struct Ctx<'a> {
    person: &'a PersonId,
    members: &'a [&'a Contact],
    baselines: Vec<Option<&'a Baseline>>,
    ranks: Vec<usize>,
    supports: Vec<bool>,
}

fn plan_person(
    person: &PersonId,
    members: &[&Contact],
    memory: &OldMemory,
    policy: &Policy,
    rules: &RuleBook,
    holders: &PlanHolders,
    out: &mut Plan,
) {
    let previous = memory.agreed.get(person);
    let mut agreed_out = BTreeMap::new();
    let mut changes: Vec<Vec<(Change, Reason)>> = vec![Vec::new(); members.len()];
    let baselines: Vec<Option<&Baseline>> = members
        .iter()
        .map(|m| memory.baselines.get(&m.id))
        .collect();

    for field in Field::ALL {
        if !policy.synced.contains(&field) {
            continue;
        }
        let supports: Vec<bool> = members
            .iter()
            .map(|m| rules.get(m.provider()).is_some_and(|r| r.supports(field)))
            .collect();
        if !supports.iter().any(|s| *s) {
            continue;
        }
        let ranks = members
            .iter()
            .map(|m| policy.rank(field, m.provider()))
            .collect();
        let ctx = Ctx {
            person,
            members,
            baselines: baselines.clone(),
            ranks,
            supports,
        };
        let agreed_prev = previous.and_then(|a| a.get(&field));
        let (agreed, reason_for) = match field {
            Field::Tags => merge_set(&ctx, agreed_prev, out),
            Field::CustomFields => merge_map(&ctx, agreed_prev, out),
            _ => merge_scalar(&ctx, field, agreed_prev, policy.propagate_clears, out),
        };
        for (i, m) in members.iter().enumerate() {
            if !ctx.supports[i] {
                continue;
            }
            let Some(r) = rules.get(m.provider()) else {
                continue;
            };
            let current = m.get(field);
            if let FieldValue::Scalar(Some(v)) = &current {
                if !v.valid {
                    if !current.same_as(&agreed) {
                        out.skipped.push(Skip {
                            person: person.clone(),
                            record: m.id.clone(),
                            field,
                            current: current.clone(),
                            wanted: agreed.clone(),
                            rule: RuleId::InvalidFormat,
                            detail: format!(
                                "{} holds {:?}, which does not parse; left for a person to fix",
                                m.id, v.raw
                            ),
                        });
                    }
                    continue;
                }
            }
            if current.same_as(&agreed) {
                continue;
            }
            if field.is_scalar() && agreed.is_empty() && !policy.propagate_clears {
                continue;
            }
            if m.update_ref.is_none() {
                if r.can_write(field) {
                    out.skipped.push(Skip {
                        person: person.clone(),
                        record: m.id.clone(),
                        field,
                        current,
                        wanted: agreed.clone(),
                        rule: RuleId::RecordNotWritable,
                        detail: m
                            .write_blocked
                            .clone()
                            .unwrap_or_else(|| "the provider cannot address this record".into()),
                    });
                }
                continue;
            }
            let admission = r.admit(&m.id, field, &current, &agreed, holders);
            for Blocked { rule, detail } in admission.blocked {
                out.skipped.push(Skip {
                    person: person.clone(),
                    record: m.id.clone(),
                    field,
                    current: current.clone(),
                    wanted: agreed.clone(),
                    rule,
                    detail,
                });
            }
            if let Some(new) = admission.write {
                if r.rule(field).unique_per_account {
                    if let FieldValue::Scalar(Some(v)) = &new {
                        holders.claim(m.provider(), field, &v.key, &m.id);
                    }
                }
                changes[i].push((
                    Change {
                        field,
                        old: current,
                        new,
                    },
                    reason_for(i),
                ));
            }
        }
        agreed_out.insert(field, agreed);
    }

    for (i, list) in changes.into_iter().enumerate() {
        if list.is_empty() {
            continue;
        }
        let m = members[i];
        let (changes, reasons): (Vec<_>, Vec<_>) = list.into_iter().unzip();
        out.updates.push(Update {
            person: person.clone(),
            patch: Patch {
                record: m.id.clone(),
                update_ref: m.update_ref.clone().unwrap_or_default(),
                changes,
            },
            reasons,
        });
    }
    out.people.push(PersonPlan {
        person: person.clone(),
        records: members.iter().map(|m| m.id.clone()).collect(),
        agreed: Agreed::from(agreed_out),
    });
}

type ReasonFor<'a> = Box<dyn Fn(usize) -> Reason + 'a>;

fn merge_scalar<'a>(
    ctx: &Ctx<'a>,
    field: Field,
    agreed_prev: Option<&'a FieldValue>,
    propagate_clears: bool,
    out: &mut Plan,
) -> (FieldValue, ReasonFor<'a>) {
    let values: Vec<Option<Value>> = ctx
        .members
        .iter()
        .map(|m| match m.get(field) {
            FieldValue::Scalar(v) => v,
            _ => None,
        })
        .collect();
    let base_values: Vec<Option<Option<&Value>>> = ctx
        .baselines
        .iter()
        .map(|b| {
            // A baseline without this field (it was not synced then) is no baseline for it.
            b.and_then(|b| match b.get(&field) {
                Some(FieldValue::Scalar(v)) => Some(v.as_ref()),
                _ => None,
            })
        })
        .collect();
    let slots: Vec<Slot<'_>> = (0..ctx.members.len())
        .filter(|i| ctx.supports[*i] && values[*i].as_ref().is_none_or(|v| v.valid))
        .map(|i| Slot {
            rank: ctx.ranks[i],
            member: i,
            cur: values[i].as_ref().map(|v| v.key.as_str()),
            base: base_values[i].map(|b| b.map(|v| v.key.as_str())),
        })
        .collect();
    let prev_value = match agreed_prev {
        Some(FieldValue::Scalar(v)) => Some(v.as_ref()),
        _ => None,
    };
    let (_, why) = decide(
        &slots,
        prev_value.map(|v| v.map(|v| v.key.as_str())),
        propagate_clears,
    );
    let agreed = match why {
        Why::Changed(i) | Why::Conflict(i) | Why::First(i) => values[i].clone(),
        Why::Agreed => prev_value.flatten().cloned(),
    };
    if let Why::Conflict(winner) = why {
        out.conflicts.push(Conflict {
            person: ctx.person.clone(),
            field,
            key: None,
            candidates: conflict_candidates(&slots, ctx.members, propagate_clears)
                .into_iter()
                .map(|(id, _)| {
                    let shown = values[ctx.members.iter().position(|m| m.id == id).unwrap_or(0)]
                        .as_ref()
                        .map_or_else(|| "(cleared)".to_owned(), |v| v.raw.clone());
                    (id, shown)
                })
                .collect(),
            winner: ctx.members[winner].id.clone(),
        });
    }
    let members = ctx.members;
    let reason: Reason = match why {
        Why::Changed(i) => Reason::Changed {
            by: members[i].id.clone(),
        },
        Why::Conflict(i) => Reason::Conflict {
            winner: members[i].id.clone(),
        },
        Why::First(i) => Reason::FirstValue {
            from: members[i].id.clone(),
        },
        Why::Agreed => Reason::Agreed,
    };
    (
        FieldValue::Scalar(agreed),
        Box::new(move |_| reason.clone()),
    )
}

fn merge_set<'a>(
    ctx: &Ctx<'a>,
    agreed_prev: Option<&'a FieldValue>,
    out: &mut Plan,
) -> (FieldValue, ReasonFor<'a>) {
    let cur: Vec<Option<&BTreeSet<String>>> = ctx
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| ctx.supports[i].then_some(&m.tags))
        .collect();
    let base: Vec<Option<Option<&BTreeSet<String>>>> = ctx
        .baselines
        .iter()
        .map(|b| {
            b.and_then(|b| match b.get(&Field::Tags) {
                Some(FieldValue::Set(s)) => Some(Some(s)),
                _ => None,
            })
        })
        .collect();
    let prev = match agreed_prev {
        Some(FieldValue::Set(s)) => Some(s),
        _ => None,
    };
    let mut universe: BTreeSet<&str> = BTreeSet::new();
    universe.extend(prev.into_iter().flatten().map(String::as_str));
    for i in 0..ctx.members.len() {
        universe.extend(cur[i].into_iter().flatten().map(String::as_str));
        universe.extend(base[i].flatten().into_iter().flatten().map(String::as_str));
    }
    let present = |set: Option<&BTreeSet<String>>, tag: &str| {
        set.is_some_and(|s| s.contains(tag)).then_some("")
    };
    let mut agreed = BTreeSet::new();
    for tag in universe {
        let slots: Vec<Slot<'_>> = (0..ctx.members.len())
            .filter(|i| ctx.supports[*i])
            .map(|i| Slot {
                rank: ctx.ranks[i],
                member: i,
                cur: present(cur[i], tag),
                base: base[i].map(|b| present(b, tag)),
            })
            .collect();
        let (value, why) = decide(&slots, prev.map(|p| present(Some(p), tag)), true);
        if let Why::Conflict(winner) = why {
            out.conflicts.push(Conflict {
                person: ctx.person.clone(),
                field: Field::Tags,
                key: Some(tag.to_owned()),
                candidates: conflict_candidates(&slots, ctx.members, true)
                    .into_iter()
                    .map(|(id, v)| (id, if v.is_empty() { "(added)".into() } else { v }))
                    .collect(),
                winner: ctx.members[winner].id.clone(),
            });
        }
        if value.is_some() {
            agreed.insert(tag.to_owned());
        }
    }
    (FieldValue::Set(agreed), Box::new(|_| Reason::Merged))
}

fn merge_map<'a>(
    ctx: &Ctx<'a>,
    agreed_prev: Option<&'a FieldValue>,
    out: &mut Plan,
) -> (FieldValue, ReasonFor<'a>) {
    let cur: Vec<Option<&BTreeMap<String, String>>> = ctx
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| ctx.supports[i].then_some(&m.custom_fields))
        .collect();
    let base: Vec<Option<Option<&BTreeMap<String, String>>>> = ctx
        .baselines
        .iter()
        .map(|b| {
            b.and_then(|b| match b.get(&Field::CustomFields) {
                Some(FieldValue::Map(m)) => Some(Some(m)),
                _ => None,
            })
        })
        .collect();
    let prev = match agreed_prev {
        Some(FieldValue::Map(m)) => Some(m),
        _ => None,
    };
    let mut keys: BTreeSet<&str> = BTreeSet::new();
    keys.extend(prev.into_iter().flat_map(|m| m.keys()).map(String::as_str));
    for i in 0..ctx.members.len() {
        keys.extend(
            cur[i]
                .into_iter()
                .flat_map(|m| m.keys())
                .map(String::as_str),
        );
        keys.extend(
            base[i]
                .flatten()
                .into_iter()
                .flat_map(|m| m.keys())
                .map(String::as_str),
        );
    }
    let get = |map: Option<&'a BTreeMap<String, String>>, key: &str| {
        map.and_then(|m| m.get(key)).map(String::as_str)
    };
    let mut agreed = BTreeMap::new();
    for key in keys {
        let slots: Vec<Slot<'_>> = (0..ctx.members.len())
            .filter(|i| ctx.supports[*i])
            .map(|i| Slot {
                rank: ctx.ranks[i],
                member: i,
                cur: get(cur[i], key),
                base: base[i].map(|b| get(b, key)),
            })
            .collect();
        let (value, why) = decide(&slots, prev.map(|p| get(Some(p), key)), true);
        if let Why::Conflict(winner) = why {
            out.conflicts.push(Conflict {
                person: ctx.person.clone(),
                field: Field::CustomFields,
                key: Some(key.to_owned()),
                candidates: conflict_candidates(&slots, ctx.members, true),
                winner: ctx.members[winner].id.clone(),
            });
        }
        if let Some(v) = value {
            agreed.insert(key.to_owned(), v.to_owned());
        }
    }
    (FieldValue::Map(agreed), Box::new(|_| Reason::Merged))
}

/// Who holds each value of the fields some provider requires to be unique, plus the values
/// this plan already gives to a record.
struct PlanHolders {
    listed: HashMap<(ProviderKind, Field, String), Vec<RecordId>>,
    planned: RefCell<HashMap<(ProviderKind, Field, String), RecordId>>,
}

impl PlanHolders {
    fn new(records: &[Contact], rules: &RuleBook) -> Self {
        let mut listed: HashMap<(ProviderKind, Field, String), Vec<RecordId>> = HashMap::new();
        for r in records {
            let Some(table) = rules.get(r.provider()) else {
                continue;
            };
            for field in Field::SCALARS {
                if !table.rule(field).unique_per_account {
                    continue;
                }
                if let FieldValue::Scalar(Some(v)) = r.get(field) {
                    listed
                        .entry((r.provider(), field, v.key))
                        .or_default()
                        .push(r.id.clone());
                }
            }
        }
        PlanHolders {
            listed,
            planned: RefCell::new(HashMap::new()),
        }
    }

    fn claim(&self, provider: ProviderKind, field: Field, key: &str, record: &RecordId) {
        self.planned
            .borrow_mut()
            .insert((provider, field, key.to_owned()), record.clone());
    }
}

impl Holders for PlanHolders {
    fn held_by_other(
        &self,
        provider: ProviderKind,
        field: Field,
        key: &str,
        except: &RecordId,
    ) -> Option<RecordId> {
        let k = (provider, field, key.to_owned());
        if let Some(ids) = self.listed.get(&k) {
            if let Some(other) = ids.iter().filter(|id| *id != except).min() {
                return Some(other.clone());
            }
        }
        self.planned
            .borrow()
            .get(&k)
            .filter(|id| *id != except)
            .cloned()
    }
}
