//! Reconciliation: match records into people, merge each field three ways, and plan the writes
//! the providers' rules allow.
//!
//! **Architecture Invariant:** this module performs no I/O, reads no clock and cannot fail on a
//! network error. [`plan`] is a pure function of its inputs, and its output is sorted, so the
//! same input always gives the same plan.

pub mod matcher;
pub mod plan;
pub mod policy;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use matcher::{Ambiguity, PersonId};
pub use plan::{Conflict, PersonPlan, Plan, Reason, Skip, Update};
pub use policy::Policy;

use crate::model::{Change, Contact, Field, FieldValue, Patch, ProviderKind, RecordId, Value};
use crate::provider::rules::{Blocked, FieldRules, Holders, RuleId};

/// A record's values at the end of the last sync, per field.
pub type Baseline = BTreeMap<Field, FieldValue>;

/// What the state store remembers from earlier runs.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Which person each record was linked to.
    pub links: HashMap<RecordId, PersonId>,
    /// Per record: the value of each field when the last sync finished.
    pub baselines: HashMap<RecordId, Baseline>,
    /// Per person: the value of each field the last merge decided.
    pub agreed: HashMap<PersonId, BTreeMap<Field, FieldValue>>,
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
}

/// Plans a sync: links `records`, merges every synced field against `memory`, and checks each
/// resulting write against `rules`.
pub fn plan(records: &[Contact], memory: &Memory, policy: &Policy, rules: &RuleBook) -> Plan {
    let matching = matcher::match_records(records, &memory.links);
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
    memory: &Memory,
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
        agreed: agreed_out,
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

#[cfg(test)]
mod tests;
