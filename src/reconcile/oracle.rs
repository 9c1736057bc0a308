//! A naive oracle for [`super::plan`], written straight from SPEC sections 2, 3 and 10 (and the
//! lead's reading of them in issue 9), for the property tests in `tests.rs` to compare with.
//!
//! It shares no code with the planner except the public types and
//! [`FieldRules::admit`](crate::provider::rules::FieldRules::admit). It is
//! quadratic on purpose: every question ("who holds this key?", "which people does this group
//! fit?") is answered by scanning all records again, so each rule reads as the SPEC states it.
//!
//! Where the SPEC leaves a choice open, it settles it as follows (each was checked against the
//! planner, and is safe):
//! - a key two records of one provider hold is one ambiguity of all its holders; records linked
//!   twice to one person by one provider are one ambiguity per person and provider;
//! - a group of new records holding two records of one provider is split by chaining each key's
//!   holders in record-id order, phone keys first, then e-mail keys, each in key order; a
//!   refused edge sets both its ends aside (one ambiguity per edge) and the split starts again
//!   without them;
//! - a group whose member was unlinked from the one person it fits, and groups that would bring
//!   one person two records of one provider, are ambiguous;
//! - a new person never takes an id an earlier run gave (linked or with agreed values);
//! - a custom-field key removed counts as a change like a tag removed (SPEC 2: "the same, key by
//!   key"), whatever `propagate_clears` says; it applies to scalars only;
//! - `held-by-other-person` counts every listed record outside the person, ignored ones too; a
//!   phone or e-mail planned for one record of a unique-per-account field is held by it for
//!   people after it, in person-id order;
//! - invalid data is reported (`invalid-format`) even where nothing would be written; a record
//!   without `update_ref` is reported `record-not-writable` for the fields it could take, and
//!   nothing else;
//! - a field none of a person's listed records has is not decided.
//!
//! The tests compare sets of outcomes, never the wording of a reason.

use std::collections::{BTreeMap, BTreeSet};

use super::{Memory, Plan, Policy, RuleBook};
use crate::model::{Contact, Field, FieldValue, ProviderKind, RecordId, Value};
use crate::provider::rules::{Holders, RuleId};

/// What a plan decided, in a shape both the oracle and the planner's [`Plan`] reduce to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Each person and its records.
    pub people: BTreeMap<String, BTreeSet<RecordId>>,
    /// The record sets reported as ambiguous.
    pub ambiguous: BTreeSet<BTreeSet<RecordId>>,
    /// `(via, key, people)` of every join candidate.
    pub join_candidates: BTreeSet<(String, String, BTreeSet<String>)>,
    /// `(record, field, new value)` of every planned change.
    pub updates: BTreeSet<(RecordId, Field, String)>,
    /// `(record, field, rule)` of every skipped change.
    pub skips: BTreeSet<(RecordId, Field, RuleId)>,
    /// `(person, field, element key, winner)` of every conflict.
    pub conflicts: BTreeSet<(String, Field, Option<String>, RecordId)>,
    /// `(person, field, value)` of what each person's merge decided, scalars shown in full.
    pub agreed: BTreeSet<(String, Field, String)>,
}

/// A value shown in full: a scalar's text, comparison key and validity.
fn shown(v: &FieldValue) -> String {
    match v {
        FieldValue::Scalar(s) => format!("{:?}", s.as_ref().map(|v| (v.raw(), v.key(), v.valid()))),
        other => other.to_string(),
    }
}

impl Outcome {
    /// Reduces the planner's output to an [`Outcome`].
    pub fn of_plan(plan: &Plan) -> Outcome {
        let mut o = Outcome::default();
        for p in &plan.people {
            o.people
                .insert(p.person.to_string(), p.records.iter().cloned().collect());
        }
        for a in &plan.ambiguous {
            o.ambiguous.insert(a.records.iter().cloned().collect());
        }
        for j in &plan.join_candidates {
            let people = j.people.iter().map(|(p, _)| p.to_string()).collect();
            o.join_candidates
                .insert((j.via.to_owned(), j.key.clone(), people));
        }
        for u in &plan.updates {
            for c in &u.patch.changes {
                o.updates
                    .insert((u.patch.record.clone(), c.field, shown(&c.new)));
            }
        }
        for s in &plan.skipped {
            o.skips.insert((s.record.clone(), s.field, s.rule));
        }
        for p in &plan.people {
            for (f, v) in p.agreed.iter() {
                o.agreed.insert((p.person.to_string(), *f, shown(v)));
            }
        }
        for c in &plan.conflicts {
            o.conflicts.insert((
                c.person.to_string(),
                c.field,
                c.key.clone(),
                c.winner.clone(),
            ));
        }
        o
    }
}

/// The phone and e-mail keys a record matches by: valid, non-empty values only.
pub fn keys(c: &Contact) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (via, v) in [("phone", &c.phone), ("email", &c.email)] {
        if let Some(v) = v.as_ref().filter(|v| v.valid() && !v.key().is_empty()) {
            out.push((via, v.key().to_owned()));
        }
    }
    out
}

fn has_key(c: &Contact, key: &(&'static str, String)) -> bool {
    keys(c).contains(key)
}

fn holders_of<'a>(rs: &[&'a Contact], key: &(&'static str, String)) -> Vec<&'a Contact> {
    rs.iter().copied().filter(|c| has_key(c, key)).collect()
}

fn unlinked_from(memory: &Memory, id: &RecordId, person: &str) -> bool {
    memory
        .steering
        .unlinked_from
        .get(id)
        .is_some_and(|people| people.contains(person))
}

fn providers(rs: &[&Contact]) -> BTreeSet<ProviderKind> {
    rs.iter().map(|c| c.provider()).collect()
}

fn ids(rs: &[&Contact]) -> BTreeSet<RecordId> {
    rs.iter().map(|c| c.id.clone()).collect()
}

/// Plans what the SPEC says `plan(records, memory, policy, rules)` must plan.
pub fn expected(
    records: &[Contact],
    memory: &Memory,
    policy: &Policy,
    rules: &RuleBook,
) -> Outcome {
    let mut o = Outcome::default();
    let mut active: Vec<&Contact> = records
        .iter()
        .filter(|c| !memory.steering.ignored.contains(&c.id))
        .collect();
    active.sort_by(|a, b| a.id.cmp(&b.id));
    // A key held by two records of one provider says nothing about who is who.
    let clashes = |key: &(&'static str, String)| {
        let holders = holders_of(&active, key);
        providers(&holders).len() < holders.len()
    };
    for c in &active {
        for key in keys(c) {
            if clashes(&key) {
                o.ambiguous.insert(ids(&holders_of(&active, &key)));
            }
        }
    }

    // Linked records stay with their person; of two of one provider, the smaller id stays.
    let mut people: BTreeMap<String, Vec<&Contact>> = BTreeMap::new();
    let mut new: Vec<&Contact> = Vec::new();
    let mut doubled: BTreeMap<(&str, ProviderKind), BTreeSet<RecordId>> = BTreeMap::new();
    for c in &active {
        match memory.links.get(&c.id) {
            Some(p) => {
                let members = people.entry(p.to_string()).or_default();
                if members.iter().any(|m| m.provider() == c.provider()) {
                    doubled
                        .entry((p.as_str(), c.provider()))
                        .or_default()
                        .insert(c.id.clone());
                } else {
                    members.push(c);
                }
            }
            None => new.push(c),
        }
    }
    o.ambiguous.extend(doubled.into_values());
    let existing = people.clone();

    // New records group with each other through shared keys that do not clash.
    let mut groups: Vec<Vec<&Contact>> = Vec::new();
    let mut left = new.clone();
    while let Some(first) = left.first().copied() {
        let mut group = vec![first];
        let mut grew = true;
        while grew {
            grew = false;
            for c in &left {
                let linked = group
                    .iter()
                    .any(|g| keys(g).iter().any(|k| has_key(c, k) && !clashes(k)));
                if linked && !group.iter().any(|g| g.id == c.id) {
                    group.push(c);
                    grew = true;
                }
            }
        }
        left.retain(|c| !group.iter().any(|g| g.id == c.id));
        group.sort_by(|a, b| a.id.cmp(&b.id));
        if providers(&group).len() == group.len() {
            groups.push(group);
        } else {
            let (parts, refused) = split(&group, &clashes);
            groups.extend(parts);
            o.ambiguous.extend(refused.iter().map(|pair| ids(pair)));
        }
    }

    // Each new group joins the one person it fits, forms a new person, or is ambiguous.
    let mut joins: BTreeMap<String, Vec<Vec<&Contact>>> = BTreeMap::new();
    let mut fresh: Vec<Vec<&Contact>> = Vec::new();
    for g in groups {
        let fits: BTreeSet<&String> = existing
            .iter()
            .filter(|(p, linked)| {
                g.iter().any(|m| {
                    !unlinked_from(memory, &m.id, p)
                        && keys(m).iter().any(|k| linked.iter().any(|l| has_key(l, k)))
                })
            })
            .map(|(p, _)| p)
            .collect();
        let mut fits = fits.into_iter();
        match (fits.next(), fits.next()) {
            (None, _) => fresh.push(g),
            (Some(p), None)
                if providers(&existing[p]).is_disjoint(&providers(&g))
                    && !g.iter().any(|m| unlinked_from(memory, &m.id, p)) =>
            {
                joins.entry(p.clone()).or_default().push(g)
            }
            _ => {
                o.ambiguous.insert(ids(&g));
            }
        }
    }
    // Groups joining one person that would bring it two records of one provider do not join.
    for (p, gs) in &joins {
        for (i, g) in gs.iter().enumerate() {
            let others: Vec<&Contact> = (0..gs.len())
                .filter(|j| *j != i)
                .flat_map(|j| gs[j].iter().copied())
                .collect();
            if providers(g).is_disjoint(&providers(&others)) {
                people
                    .entry(p.clone())
                    .or_default()
                    .extend(g.iter().copied());
            } else {
                o.ambiguous.insert(ids(g));
            }
        }
    }
    // Every id an earlier run gave is taken, whether or not its records are listed now.
    let taken: BTreeSet<&str> = memory
        .links
        .values()
        .chain(memory.agreed.keys())
        .map(|p| p.as_str())
        .collect();
    for g in fresh {
        let first = &g[0].id;
        let base = format!("p:{}:{}", first.provider, first.native);
        let id = std::iter::once(base.clone())
            .chain((2..).map(|k| format!("{base}~{k}")))
            .find(|id| !taken.contains(id.as_str()))
            .unwrap_or(base);
        people.insert(id, g);
    }
    for (p, rs) in &people {
        o.people.insert(p.clone(), ids(rs));
    }

    // A key held in two or more people is reported, not acted on.
    let grouped: Vec<(&String, &Contact)> = people
        .iter()
        .flat_map(|(p, rs)| rs.iter().map(move |c| (p, *c)))
        .collect();
    for (_, c) in &grouped {
        for key in keys(c) {
            let holders: Vec<&(&String, &Contact)> =
                grouped.iter().filter(|(_, h)| has_key(h, &key)).collect();
            let involved: BTreeSet<String> = holders.iter().map(|(p, _)| (*p).clone()).collect();
            let steered = holders
                .iter()
                .any(|(_, h)| involved.iter().any(|p| unlinked_from(memory, &h.id, p)));
            if involved.len() > 1 && !steered {
                o.join_candidates
                    .insert((key.0.to_owned(), key.1.clone(), involved));
            }
        }
    }

    // Plan the writes person by person, in person-id order: a value planned for one record is
    // held by it when a later person's record of that provider asks (SPEC section 9: Chatwoot
    // merges two contacts that would share an e-mail or phone).
    let mut wanted: Vec<(&Contact, Field, FieldValue, Vec<&Contact>)> = Vec::new();
    for (p, rs) in &people {
        let agreed = memory.agreed.get(p.as_str());
        let outside: Vec<&Contact> = records
            .iter()
            .filter(|c| !rs.iter().any(|r| r.id == c.id))
            .collect();
        for f in Field::ALL.into_iter().filter(|f| policy.synced.contains(f)) {
            let rs: Vec<&Contact> = rs
                .iter()
                .copied()
                .filter(|c| rules.get(c.provider()).is_some_and(|r| r.supports(f)))
                .collect();
            let agreed = agreed.and_then(|a| a.get(&f)).filter(|v| shape_fits(f, v));
            let want = merge(f, &rs, agreed, memory, policy, p, &mut o);
            // A field none of the person's listed records has is not decided (nor kept).
            if !rs.is_empty() {
                o.agreed.insert((p.clone(), f, shown(&want)));
            }
            for c in rs {
                wanted.push((c, f, want.clone(), outside.clone()));
            }
        }
    }
    let mut writer = Writer {
        policy,
        rules,
        holders: Listed(records, Vec::new()),
    };
    for (c, f, want, outside) in wanted {
        write(&mut writer, c, f, &want, &outside, &mut o);
    }
    o
}

/// Splits a group of new records holding two records of one provider (see the module docs):
/// the parts, and the ends of each refused edge.
fn split<'a>(
    group: &[&'a Contact],
    clashes: &dyn Fn(&(&'static str, String)) -> bool,
) -> (Vec<Vec<&'a Contact>>, Vec<[&'a Contact; 2]>) {
    let mut refused: Vec<[&Contact; 2]> = Vec::new();
    'again: loop {
        let members: Vec<&Contact> = group
            .iter()
            .copied()
            .filter(|c| !refused.iter().flatten().any(|a| a.id == c.id))
            .collect();
        let mut parts: Vec<Vec<&Contact>> = members.iter().map(|c| vec![*c]).collect();
        let mut edge_keys: Vec<(&'static str, String)> =
            members.iter().flat_map(|c| keys(c)).collect();
        edge_keys.sort_by(|a, b| (a.0 != "phone", &a.1).cmp(&(b.0 != "phone", &b.1)));
        edge_keys.dedup();
        for key in edge_keys.into_iter().filter(|k| !clashes(k)) {
            let holders: Vec<&Contact> = members
                .iter()
                .copied()
                .filter(|c| has_key(c, &key))
                .collect();
            for pair in holders.windows(2) {
                let find = |c: &Contact| parts.iter().position(|p| p.iter().any(|m| m.id == c.id));
                let (Some(a), Some(b)) = (find(pair[0]), find(pair[1])) else {
                    continue;
                };
                if a == b {
                    continue;
                }
                if !providers(&parts[a]).is_disjoint(&providers(&parts[b])) {
                    refused.push([pair[0], pair[1]]);
                    continue 'again;
                }
                let moved = std::mem::take(&mut parts[b]);
                parts[a].extend(moved);
            }
        }
        parts.retain(|p| !p.is_empty());
        for p in &mut parts {
            p.sort_by(|a, b| a.id.cmp(&b.id));
        }
        return (parts, refused);
    }
}

/// Whether a remembered value has its field's shape (one of the wrong shape is no value).
fn shape_fits(f: Field, v: &FieldValue) -> bool {
    match v {
        FieldValue::Scalar(_) => f.is_scalar(),
        FieldValue::Set(_) => f == Field::Tags,
        FieldValue::Map(_) => f == Field::CustomFields,
    }
}

/// One record's say about one element: its current value and its baseline (`None`: none).
struct Vote {
    record: RecordId,
    rank: usize,
    current: Option<String>,
    baseline: Option<Option<String>>,
}

/// Which value an element takes: a voter's current value, or the agreed one.
enum Pick {
    Voter(usize),
    Agreed,
}

/// The three-way merge of one element (SPEC section 2, and section 10 for newcomers). Returns
/// the pick and, when precedence settled a disagreement, the winner.
fn decide(
    votes: &[Vote],
    agreed: Option<Option<&str>>,
    newcomers_compete: bool,
    clears: bool,
) -> (Pick, Option<RecordId>) {
    let best = |idx: &[usize]| idx.iter().copied().min_by_key(|i| votes[*i].rank);
    let changers: Vec<usize> = (0..votes.len())
        .filter(|i| {
            let v = &votes[*i];
            v.baseline.as_ref().is_some_and(|b| *b != v.current) && (v.current.is_some() || clears)
        })
        .collect();
    let newcomers: Vec<usize> = (0..votes.len())
        .filter(|i| {
            let v = &votes[*i];
            v.baseline.is_none()
                && v.current.is_some()
                && agreed.is_some_and(|a| a.is_some() && a != v.current.as_deref())
        })
        .collect();
    let same = |idx: &[usize]| {
        idx.iter()
            .all(|i| votes[*i].current == votes[idx[0]].current)
    };
    if !changers.is_empty() {
        let mut all = changers;
        if newcomers_compete {
            all.extend(newcomers);
        }
        let winner = best(&all).unwrap_or(all[0]);
        let conflict = (!same(&all)).then(|| votes[winner].record.clone());
        return (Pick::Voter(winner), conflict);
    }
    if newcomers_compete && !newcomers.is_empty() {
        let a = agreed.flatten();
        let holding: Vec<usize> = (0..votes.len())
            .filter(|i| votes[*i].baseline.is_some() && votes[*i].current.as_deref() == a)
            .collect();
        let all: Vec<usize> = newcomers.iter().chain(&holding).copied().collect();
        let winner = best(&all).unwrap_or(all[0]);
        let conflict =
            (!holding.is_empty() || !same(&newcomers)).then(|| votes[winner].record.clone());
        let pick = if holding.contains(&winner) {
            Pick::Agreed
        } else {
            Pick::Voter(winner)
        };
        return (pick, conflict);
    }
    let first = |filter: &dyn Fn(&Vote) -> bool| {
        let idx: Vec<usize> = (0..votes.len())
            .filter(|i| votes[*i].current.is_some() && filter(&votes[*i]))
            .collect();
        best(&idx)
    };
    let pick = match agreed {
        Some(Some(_)) => None,
        Some(None) => first(&|v| v.baseline.is_none()),
        None => first(&|_| true),
    };
    (pick.map_or(Pick::Agreed, Pick::Voter), None)
}

/// The value a person's field takes.
fn merge(
    f: Field,
    rs: &[&Contact],
    agreed: Option<&FieldValue>,
    memory: &Memory,
    policy: &Policy,
    person: &str,
    o: &mut Outcome,
) -> FieldValue {
    let baseline = |c: &Contact| memory.baselines.get(&c.id).and_then(|b| b.get(f));
    let vote = |c: &Contact, current: Option<String>, baseline: Option<Option<String>>| Vote {
        record: c.id.clone(),
        rank: policy.rank(f, c.provider()),
        current,
        baseline,
    };
    let mut conflict = |key: Option<String>, winner: Option<RecordId>| {
        if let Some(w) = winner {
            o.conflicts.insert((person.to_owned(), f, key, w));
        }
    };
    match f {
        Field::Tags | Field::CustomFields => {
            let as_map = |v: &FieldValue| -> BTreeMap<String, String> {
                match v {
                    FieldValue::Set(s) => {
                        s.iter().map(|t| (t.to_string(), t.to_string())).collect()
                    }
                    FieldValue::Map(m) => m.to_btree(),
                    FieldValue::Scalar(_) => BTreeMap::new(),
                }
            };
            let agreed = agreed.map(as_map);
            let current: Vec<BTreeMap<String, String>> =
                rs.iter().map(|c| as_map(&c.get(f))).collect();
            let baselines: Vec<Option<BTreeMap<String, String>>> =
                rs.iter().map(|c| baseline(c).map(|b| as_map(&b))).collect();
            let mut elements: BTreeSet<&String> = agreed.iter().flat_map(|a| a.keys()).collect();
            elements.extend(
                current
                    .iter()
                    .chain(baselines.iter().flatten())
                    .flat_map(|m| m.keys()),
            );
            let mut out = BTreeMap::new();
            for e in elements {
                let votes: Vec<Vote> = (0..rs.len())
                    .map(|i| {
                        let b = baselines[i].as_ref().map(|b| b.get(e).cloned());
                        vote(rs[i], current[i].get(e).cloned(), b)
                    })
                    .collect();
                let a = agreed.as_ref().map(|a| a.get(e).map(String::as_str));
                let (pick, winner) = decide(&votes, a, f == Field::CustomFields, true);
                conflict(Some(e.clone()), winner);
                let value = match pick {
                    Pick::Voter(i) => votes[i].current.clone(),
                    Pick::Agreed => a.flatten().map(str::to_owned),
                };
                if let Some(v) = value {
                    out.insert(e.clone(), v);
                }
            }
            if f == Field::Tags {
                FieldValue::Set(out.into_keys().collect())
            } else {
                FieldValue::Map(out.into_iter().collect())
            }
        }
        _ => {
            let scalar = |v: FieldValue| match v {
                FieldValue::Scalar(s) => s,
                _ => None,
            };
            let valid: Vec<(&Contact, Option<Value>)> = rs
                .iter()
                .map(|c| (*c, scalar(c.get(f))))
                .filter(|(_, v)| v.as_ref().is_none_or(|v| v.valid()))
                .collect();
            let votes: Vec<Vote> = valid
                .iter()
                .map(|(c, v)| {
                    let b = baseline(c).map(|b| scalar(b).map(|b| b.key().to_owned()));
                    vote(c, v.as_ref().map(|v| v.key().to_owned()), b)
                })
                .collect();
            let agreed = agreed.cloned().map(scalar);
            let a = agreed.as_ref().map(|a| a.as_ref().map(|v| v.key()));
            let (pick, winner) = decide(&votes, a, true, policy.propagate_clears);
            conflict(None, winner);
            FieldValue::Scalar(match pick {
                Pick::Voter(i) => valid[i].1.clone(),
                Pick::Agreed => agreed.flatten(),
            })
        }
    }
}

/// What planning a write needs besides the record and value.
struct Writer<'a> {
    policy: &'a Policy,
    rules: &'a RuleBook,
    holders: Listed<'a>,
}

/// Plans (or skips) writing `want` to record `c`; `outside` are the listed records not of its
/// person (other people's, ambiguous and ignored ones: an ignored record still holds its keys).
fn write(
    w: &mut Writer,
    c: &Contact,
    f: Field,
    want: &FieldValue,
    outside: &[&Contact],
    o: &mut Outcome,
) {
    let (policy, rules) = (w.policy, w.rules);
    let Some(table) = rules.get(c.provider()) else {
        return;
    };
    let current = c.get(f);
    if current.same_as(want) {
        return;
    }
    let mut skip = |rule| {
        o.skips.insert((c.id.clone(), f, rule));
    };
    // Invalid data is kept and reported, even where nothing would be written over it.
    if matches!(&current, FieldValue::Scalar(Some(v)) if !v.valid()) {
        return skip(RuleId::InvalidFormat);
    }
    if f.is_scalar() && want.is_empty() && !policy.propagate_clears {
        return;
    }
    // A record that cannot be written at all is reported once per field it could otherwise
    // take; its read-only fields say nothing more.
    if c.update_ref.is_none() {
        if table.can_write(f) {
            skip(RuleId::RecordNotWritable);
        }
        return;
    }
    // The provider's own rules first; a value they allow is still never one another person
    // holds.
    let admitted = table.admit(&c.id, f, &current, want, &w.holders);
    for b in admitted.blocked {
        skip(b.rule);
    }
    let Some(new) = admitted.write else {
        return;
    };
    if let (Field::Phone | Field::Email, FieldValue::Scalar(Some(v))) = (f, want) {
        let key = (
            if f == Field::Phone { "phone" } else { "email" },
            v.key().to_owned(),
        );
        if outside.iter().any(|h| has_key(h, &key)) {
            return skip(RuleId::HeldByOtherPerson);
        }
    }
    if let FieldValue::Scalar(Some(v)) = &new {
        w.holders.1.push((c.id.clone(), f, v.key().to_owned()));
    }
    o.updates.insert((c.id.clone(), f, shown(&new)));
}

/// Every listed record, and every value planned so far `(record, field, key)`, as the
/// [`Holders`] that uniqueness rules ask.
struct Listed<'a>(&'a [Contact], Vec<(RecordId, Field, String)>);

impl Holders for Listed<'_> {
    fn held_by_other(
        &self,
        provider: ProviderKind,
        field: Field,
        key: &str,
        except: &RecordId,
    ) -> Option<RecordId> {
        let listed = self
            .0
            .iter()
            .filter(|c| c.provider() == provider && c.id != *except)
            .find(|c| matches!(c.get(field), FieldValue::Scalar(Some(v)) if v.key() == key))
            .map(|c| c.id.clone());
        let planned = self
            .1
            .iter()
            .find(|(r, f, k)| r.provider == provider && r != except && *f == field && k == key);
        listed.or_else(|| planned.map(|(r, _, _)| r.clone()))
    }
}
