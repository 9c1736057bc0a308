//! The matcher: links records of different providers that describe the same person.
//!
//! Records are joined by normalised phone, then case-folded e-mail, then links persisted from
//! earlier runs (so a person stays linked after changing their phone in one provider). A person
//! holds at most one record per provider: a join that would put two records of one provider into
//! one person is refused, and the records involved are reported as ambiguous and left alone.
//!
//! Linear in the number of records: hash tables from key to holders and a union-find, no
//! pairwise comparison.
//!
//! Which join is refused can depend on the order joins are tried in, so refusals follow one
//! canonical order (phone keys, then e-mail keys, in key order; then links, in record id order).
//! That order only matters inside a component (the records connected by any key or link) holding
//! two records of one provider: everywhere else every join succeeds whatever the order. So all
//! keys and links are first joined in any order, and only the rare components with a
//! same-provider pair are linked again in the canonical order.

use std::collections::{BTreeMap, HashMap};

use super::index::Distinct;
use crate::model::{Contact, RecordId};

/// A stable person id, persisted in the state store.
pub type PersonId = String;

/// A group of records that are one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub person: PersonId,
    /// Where the group's members are in [`Matching::members`].
    pub start: u32,
    pub len: u32,
}

impl Group {
    /// The group's members: indexes into the record slice, sorted by record id.
    pub fn members<'m>(&self, all: &'m [u32]) -> &'m [u32] {
        let start = self.start as usize;
        all.get(start..start + self.len as usize)
            .unwrap_or_default()
    }
}

/// Records that could not be linked unambiguously.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ambiguity {
    pub records: Vec<RecordId>,
    pub reason: String,
}

/// The matcher's result.
#[derive(Debug, Clone, Default)]
pub struct Matching {
    /// Every non-ambiguous record is in exactly one group. In the order of each group's first
    /// record in the input (so a pass over the groups reads the records roughly in order).
    pub groups: Vec<Group>,
    /// Indexes into `groups`, sorted by person id (person ids are unique).
    pub by_person: Vec<u32>,
    /// The members of every group, each group's contiguous (see [`Group::members`]).
    pub members: Vec<u32>,
    pub ambiguous: Vec<Ambiguity>,
}

const NONE: u32 = u32::MAX;

/// Union-find. With `mask`, a join that would put two records of one provider together is
/// refused.
struct Dsu {
    parent: Vec<u32>,
    mask: Vec<u8>,
}

impl Dsu {
    fn new(n: usize) -> Self {
        Dsu {
            parent: (0..n as u32).collect(),
            mask: Vec::new(),
        }
    }

    fn with_masks(records: &[Contact]) -> Self {
        Dsu {
            mask: records.iter().map(|r| r.provider().bit()).collect(),
            ..Dsu::new(records.len())
        }
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = p;
        }
        x
    }

    /// Joins the sets of `a` and `b`; `false` when the masks forbid it.
    fn union(&mut self, a: u32, b: u32) -> bool {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return true;
        }
        if !self.mask.is_empty() {
            if self.mask[ra as usize] & self.mask[rb as usize] != 0 {
                return false;
            }
            let m = self.mask[rb.max(ra) as usize];
            self.mask[ra.min(rb) as usize] |= m;
        }
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[hi as usize] = lo;
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

    fn key(self, r: &Contact) -> Option<&str> {
        match self {
            Via::Phone => r.phone.as_ref(),
            Via::Email => r.email.as_ref(),
            Via::Link => None,
        }
        .filter(|v| v.valid)
        .map(|v| v.key.as_str())
    }
}

/// One phone or e-mail key and the records holding it.
struct Key<'a> {
    key: &'a str,
    first: u32,
    providers: u8,
    /// Two records of one provider hold it: it links nobody.
    clash: bool,
}

/// The keys of one kind (phone or e-mail): which key each record holds.
struct Keys<'a> {
    via: Via,
    keys: Vec<Key<'a>>,
    /// Per record, its index in `keys` (`NONE`: no valid key).
    of_record: Vec<u32>,
}

impl<'a> Keys<'a> {
    fn collect(records: &'a [Contact], via: Via) -> Self {
        let mut distinct = Distinct::new();
        let mut keys: Vec<Key<'a>> = Vec::new();
        let of_record = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let Some(key) = via.key(r) else {
                    return NONE;
                };
                let bit = r.provider().bit();
                let k = distinct.number(key);
                if k as usize == keys.len() {
                    keys.push(Key {
                        key,
                        first: i as u32,
                        providers: 0,
                        clash: false,
                    });
                }
                let entry = &mut keys[k as usize];
                entry.clash |= entry.providers & bit != 0;
                entry.providers |= bit;
                k
            })
            .collect();
        Keys {
            via,
            keys,
            of_record,
        }
    }

    /// The key record `i` links by, if any.
    fn linking(&self, i: usize) -> Option<&Key<'a>> {
        let k = *self.of_record.get(i)?;
        self.keys.get(k as usize).filter(|k| !k.clash)
    }

    /// Keys shared by two records of one provider cannot say which of them is the person.
    fn clashes(&self, records: &[Contact], out: &mut Vec<Ambiguity>) {
        if !self.keys.iter().any(|k| k.clash) {
            return;
        }
        let mut holders: BTreeMap<u32, Vec<RecordId>> = BTreeMap::new();
        for (i, &k) in self.of_record.iter().enumerate() {
            if k != NONE && self.keys[k as usize].clash {
                holders.entry(k).or_default().push(records[i].id.clone());
            }
        }
        for (k, mut ids) in holders {
            ids.sort();
            out.push(Ambiguity {
                records: ids,
                reason: format!(
                    "several records of one provider share the {} {:?}; not linked by it",
                    self.via.describe(),
                    self.keys[k as usize].key
                ),
            });
        }
    }
}

/// Links `records`; `links` maps records to the person they were linked to in earlier runs.
pub fn match_records(records: &[Contact], links: &HashMap<RecordId, PersonId>) -> Matching {
    let linked: Vec<Option<&PersonId>> = if links.is_empty() {
        Vec::new()
    } else {
        records.iter().map(|r| links.get(&r.id)).collect()
    };
    match_linked(records, &linked)
}

/// [`match_records`] with each record's earlier person, by record index (empty: none).
pub(crate) fn match_linked(records: &[Contact], linked: &[Option<&PersonId>]) -> Matching {
    let n = records.len();
    let mut ambiguities = Vec::new();
    let link_of = |i: usize| linked.get(i).copied().flatten();

    // 1. Join every record with the others holding its phone, its e-mail or its person link,
    //    in any order.
    let mut dsu = Dsu::new(n);
    let keys = [Via::Phone, Via::Email].map(|via| Keys::collect(records, via));
    for k in &keys {
        k.clashes(records, &mut ambiguities);
        for i in 0..n {
            if let Some(key) = k.linking(i) {
                dsu.union(key.first, i as u32);
            }
        }
    }
    if !linked.is_empty() {
        let mut people = Distinct::new();
        let mut first: Vec<u32> = Vec::new();
        for i in 0..n {
            if let Some(p) = link_of(i) {
                let k = people.number(p) as usize;
                if k == first.len() {
                    first.push(i as u32);
                }
                dsu.union(first[k], i as u32);
            }
        }
    }

    // 2. Components holding two records of one provider are linked again, canonically.
    const TWICE: u8 = 0x80;
    let mut providers = vec![0u8; n];
    let mut any_twice = false;
    for (i, r) in records.iter().enumerate() {
        let root = dsu.find(i as u32) as usize;
        let bit = r.provider().bit();
        if providers[root] & bit != 0 {
            providers[root] |= TWICE;
            any_twice = true;
        }
        providers[root] |= bit;
    }
    let mut roots: Vec<u32> = (0..n as u32).map(|i| dsu.find(i)).collect();
    drop(dsu);
    if any_twice {
        let contested: Vec<u32> = (0..n as u32)
            .filter(|&i| providers[roots[i as usize] as usize] & TWICE != 0)
            .collect();
        link_canonically(
            records,
            &contested,
            &keys,
            linked,
            &mut roots,
            &mut ambiguities,
        );
    }
    drop(providers);
    drop(keys);

    // 3. Groups: the members of each root, sorted by record id.
    let mut group_of = vec![NONE; n];
    let mut sizes: Vec<u32> = Vec::new();
    for &root in &roots {
        if root == NONE {
            continue;
        }
        let g = &mut group_of[root as usize];
        if *g == NONE {
            *g = sizes.len() as u32;
            sizes.push(0);
        }
        sizes[*g as usize] += 1;
    }
    let mut starts = Vec::with_capacity(sizes.len());
    let mut total = 0u32;
    for s in &sizes {
        starts.push(total);
        total += s;
    }
    let mut fill = starts.clone();
    let mut members = vec![0u32; total as usize];
    for (i, &root) in roots.iter().enumerate() {
        if root == NONE {
            continue;
        }
        let g = group_of[root as usize] as usize;
        members[fill[g] as usize] = i as u32;
        fill[g] += 1;
    }
    drop((roots, group_of, fill));
    let mut groups: Vec<Group> = starts
        .iter()
        .zip(&sizes)
        .map(|(&start, &len)| {
            let slice = &mut members[start as usize..(start + len) as usize];
            slice.sort_unstable_by(|a, b| records[*a as usize].id.cmp(&records[*b as usize].id));
            // The smallest persisted person id among the members, else a new id from the
            // smallest record id: deterministic whatever the input order.
            let person = slice
                .iter()
                .filter_map(|m| link_of(*m as usize))
                .min()
                .cloned()
                .unwrap_or_else(|| new_person_id(&records[slice[0] as usize].id));
            Group { person, start, len }
        })
        .collect();
    drop((starts, sizes));
    let first_id = |g: &Group| &records[members[g.start as usize] as usize].id;
    let mut by_person = sort_by_person(&groups, |a, b| {
        a.len.cmp(&b.len).then_with(|| first_id(a).cmp(first_id(b)))
    });
    // A person id claimed by two groups (a link split by a refused join): the first keeps it.
    let mut renamed = false;
    let mut previous: Option<usize> = None;
    for &g in &by_person {
        let g = g as usize;
        if previous.is_some_and(|p| groups[p].person == groups[g].person) {
            groups[g].person = new_person_id(first_id(&groups[g]));
            renamed = true;
        } else {
            previous = Some(g);
        }
    }
    if renamed {
        by_person = sort_by_person(&groups, |a, b| first_id(a).cmp(first_id(b)));
    }
    ambiguities.sort_by(|a, b| {
        a.records
            .cmp(&b.records)
            .then_with(|| a.reason.cmp(&b.reason))
    });
    Matching {
        groups,
        by_person,
        members,
        ambiguous: ambiguities,
    }
}

/// A new person id: `p:` and the record id (its smallest record's, so it does not depend on the
/// input order).
fn new_person_id(id: &RecordId) -> PersonId {
    let provider = id.provider.as_str();
    let mut s = String::with_capacity(3 + provider.len() + id.native.len());
    s.push_str("p:");
    s.push_str(provider);
    s.push(':');
    s.push_str(&id.native);
    s
}

/// Group indexes sorted by person id, then by `tie`.
///
/// Compares mostly eight-byte keys taken after the prefix every person id shares (`p:` and
/// often more), so the sort rarely reaches the strings themselves.
fn sort_by_person(
    groups: &[Group],
    tie: impl Fn(&Group, &Group) -> std::cmp::Ordering,
) -> Vec<u32> {
    let ids = || groups.iter().map(|g| g.person.as_bytes());
    let shared = match (ids().min(), ids().max()) {
        (Some(lo), Some(hi)) => lo.iter().zip(hi).take_while(|(a, b)| a == b).count(),
        _ => 0,
    };
    let mut keyed: Vec<(u64, u32)> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let mut key = [0u8; 8];
            let rest = g.person.as_bytes().get(shared..).unwrap_or_default();
            let n = rest.len().min(8);
            key[..n].copy_from_slice(&rest[..n]);
            (u64::from_be_bytes(key), i as u32)
        })
        .collect();
    keyed.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| {
            let (ga, gb) = (&groups[a.1 as usize], &groups[b.1 as usize]);
            ga.person.cmp(&gb.person).then_with(|| tie(ga, gb))
        })
    });
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// Links the `contested` records (whole components that hold two records of one provider) in the
/// canonical order: phone keys, then e-mail keys, each in key order and each key's holders in
/// record id order; then links, in record id order. A refused join sets both its records aside
/// as ambiguous, and linking starts over without them until nothing new is refused. Updates
/// `roots` of the contested records (`NONE` for ambiguous ones).
fn link_canonically(
    records: &[Contact],
    contested: &[u32],
    keys: &[Keys<'_>; 2],
    linked: &[Option<&PersonId>],
    roots: &mut [u32],
    ambiguities: &mut Vec<Ambiguity>,
) {
    let n = records.len();
    let mut order = contested.to_vec();
    order.sort_unstable_by(|a, b| records[*a as usize].id.cmp(&records[*b as usize].id));
    let mut edges: Vec<(u32, u32, Via)> = Vec::new();
    for k in keys {
        let mut holders: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for &i in &order {
            if let Some(key) = k.linking(i as usize) {
                holders.entry(key.key).or_default().push(i);
            }
        }
        for h in holders.values() {
            for w in h.windows(2) {
                edges.push((w[0], w[1], k.via));
            }
        }
    }
    let mut by_person: HashMap<&str, u32> = HashMap::new();
    for &i in &order {
        if let Some(p) = linked.get(i as usize).copied().flatten() {
            match by_person.get(p.as_str()) {
                Some(&first) => edges.push((first, i, Via::Link)),
                None => {
                    by_person.insert(p.as_str(), i);
                }
            }
        }
    }

    let mut ambiguous_at: BTreeMap<u32, String> = BTreeMap::new();
    let mut dsu = loop {
        let mut dsu = Dsu::with_masks(records);
        let mut new_ambiguous = false;
        for &(a, b, via) in &edges {
            if ambiguous_at.contains_key(&a) || ambiguous_at.contains_key(&b) {
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
                ambiguous_at.insert(a, reason.clone());
                ambiguous_at.insert(b, reason);
                new_ambiguous = true;
            }
        }
        if !new_ambiguous {
            break dsu;
        }
    };
    debug_assert!(dsu.parent.len() == n);
    for &i in contested {
        roots[i as usize] = if ambiguous_at.contains_key(&i) {
            NONE
        } else {
            dsu.find(i)
        };
    }

    let mut pending: BTreeMap<String, Vec<RecordId>> = BTreeMap::new();
    for (i, reason) in ambiguous_at {
        pending
            .entry(reason)
            .or_default()
            .push(records[i as usize].id.clone());
    }
    for (reason, mut ids) in pending {
        ids.sort();
        ambiguities.push(Ambiguity {
            records: ids,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Normalizer, ProviderKind};

    fn rec(p: ProviderKind, id: &str, phone: Option<&str>, email: Option<&str>) -> Contact {
        let n = Normalizer::default();
        let mut c = Contact::new(p, id);
        c.phone = phone.and_then(|x| n.phone(x).0);
        c.email = email.and_then(|x| n.email(x).0);
        c
    }

    fn ids(records: &[Contact], m: &Matching, g: &Group) -> Vec<String> {
        g.members(&m.members)
            .iter()
            .map(|i| records[*i as usize].id.to_string())
            .collect()
    }

    #[test]
    fn links_by_phone_then_email() {
        use ProviderKind::*;
        let records = vec![
            rec(Privy, "a", Some("+14155550101"), Some("ada@x.io")),
            rec(Chatwoot, "1", Some("(415) 555-0101"), None),
            rec(Callbell, "u", None, Some("ADA@x.io")),
            rec(Protocol, "z", Some("+14155550199"), None),
        ];
        let m = match_records(&records, &HashMap::new());
        assert_eq!(m.groups.len(), 2);
        let big = m.groups.iter().find(|g| g.len == 3).expect("linked");
        assert_eq!(
            ids(&records, &m, big),
            ["callbell:u", "chatwoot:1", "privy:a"]
        );
        assert!(m.ambiguous.is_empty());
    }

    #[test]
    fn persisted_links_survive_a_phone_change() {
        use ProviderKind::*;
        let records = vec![
            rec(Privy, "a", Some("+14155550111"), None),
            rec(Chatwoot, "1", Some("+14155550101"), None),
        ];
        let links: HashMap<_, _> = [
            (RecordId::new(Privy, "a"), "p:1".to_string()),
            (RecordId::new(Chatwoot, "1"), "p:1".to_string()),
        ]
        .into();
        let m = match_records(&records, &links);
        assert_eq!(m.groups.len(), 1);
        assert_eq!(m.groups[0].person, "p:1");
    }

    #[test]
    fn a_record_fitting_two_people_is_ambiguous_and_left_alone() {
        use ProviderKind::*;
        let records = vec![
            rec(Privy, "a", None, Some("ada@x.io")),
            rec(Privy, "b", Some("+14155550101"), None),
            rec(Chatwoot, "1", Some("+14155550101"), Some("ada@x.io")),
        ];
        let m = match_records(&records, &HashMap::new());
        let amb: Vec<_> = m
            .ambiguous
            .iter()
            .flat_map(|a| a.records.iter().map(|r| r.to_string()))
            .collect();
        assert!(amb.contains(&"chatwoot:1".to_string()), "{m:?}");
        assert!(m
            .groups
            .iter()
            .all(|g| g
                .members(&m.members)
                .iter()
                .all(|i| records[*i as usize].id.native != "1")));
    }

    #[test]
    fn duplicate_keys_within_a_provider_are_reported() {
        use ProviderKind::*;
        let records = vec![
            rec(Privy, "a", Some("+14155550101"), None),
            rec(Privy, "b", Some("+14155550101"), None),
            rec(Chatwoot, "1", Some("+14155550101"), None),
        ];
        let m = match_records(&records, &HashMap::new());
        assert_eq!(m.groups.len(), 3, "nothing linked by the shared phone");
        assert_eq!(m.ambiguous.len(), 1);
    }
}
