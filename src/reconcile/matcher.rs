//! The matcher: decides which records are one person (SPEC section 10).
//!
//! Identity is conservative, because a wrong join writes one person's data over another's and
//! nothing downstream can undo it:
//!
//! - **Linked records stay with their person.** A record linked in an earlier run (or by a
//!   human's `link`) belongs to that person whatever its keys now say. Two people that exist are
//!   never joined by a key: when a linked record's phone or e-mail equals another person's, both
//!   stay where they are and a [`JoinCandidate`] is reported for a human.
//! - **New records join, or form new people.** Records with no link are first grouped among
//!   themselves by normalised phone and case-folded e-mail. A group then joins the one existing
//!   person its keys point at, if exactly one fits and that person has no record of the group's
//!   providers; it forms a new person if none fits; anything else is an [`Ambiguity`]: reported,
//!   left alone (neither merged nor written).
//! - A person holds at most one record per provider. A key two records of one provider share
//!   links nobody (it cannot say which of them is the person), and is reported.
//! - Ignored records (a human's `ignore`) take no part at all; a record a human unlinked from a
//!   person never joins that person again by a key.
//!
//! Linear in the number of records: hash tables from key to holders and a union-find, no
//! pairwise comparison. Which join within new records is refused can depend on the order joins
//! are tried in, so refusals follow one canonical order (phone keys, then e-mail keys, in key
//! order); that order only matters inside a group of new records holding two records of one
//! provider, so only those rare groups are linked again in the canonical order.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::index::Distinct;
use super::Hasher;
use crate::model::{format_compact, CompactString, Contact, RecordId};

/// A stable person id, persisted in the state store.
pub type PersonId = CompactString;

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

/// Records that could not be linked unambiguously: reported, neither merged nor written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ambiguity {
    pub records: Vec<RecordId>,
    pub reason: String,
    /// The existing people the records' keys point at, where that is why they are ambiguous.
    pub people: Vec<PersonId>,
}

/// Two or more people whose records now share a phone or e-mail. Not joined: a human decides
/// (`contact-sync link`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinCandidate {
    /// `phone` or `email`.
    pub via: &'static str,
    /// The shared key, normalised.
    pub key: String,
    /// Each person involved, with all its records, sorted by person id.
    pub people: Vec<(PersonId, Vec<RecordId>)>,
    /// The records that hold the key.
    pub holders: Vec<RecordId>,
}

impl JoinCandidate {
    /// Whether the people could be one person: no provider appears in two of them.
    pub fn joinable(&self) -> bool {
        let mut seen = 0u8;
        for r in self.people.iter().flat_map(|(_, rs)| rs) {
            let bit = r.provider.bit();
            if seen & bit != 0 {
                return false;
            }
            seen |= bit;
        }
        true
    }
}

/// What humans decided about identity, as the matcher needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Steering {
    /// Records taking no part in matching, merging or writing.
    pub ignored: HashSet<RecordId>,
    /// Per record, the people it was unlinked from: it never joins them by a key.
    pub unlinked_from: HashMap<RecordId, BTreeSet<PersonId>>,
}

impl Steering {
    pub fn is_empty(&self) -> bool {
        self.ignored.is_empty() && self.unlinked_from.is_empty()
    }
}

/// The matcher's result.
#[derive(Debug, Clone, Default)]
pub struct Matching {
    /// Every record that is neither ambiguous nor ignored is in exactly one group. In the order
    /// of each group's first record in the input (so a pass over the groups reads the records
    /// roughly in order).
    pub groups: Vec<Group>,
    /// Indexes into `groups`, sorted by person id (person ids are unique).
    pub by_person: Vec<u32>,
    /// The members of every group, each group's contiguous (see [`Group::members`]).
    pub members: Vec<u32>,
    /// Per record (by index), its group in `groups`; [`NONE`] for ambiguous and ignored ones.
    pub group_of: Vec<u32>,
    pub ambiguous: Vec<Ambiguity>,
    pub join_candidates: Vec<JoinCandidate>,
}

/// "No index": no key, no group, no person.
pub const NONE: u32 = u32::MAX;

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
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Phone => "phone",
            Via::Email => "email",
        }
    }

    fn key(self, r: &Contact) -> Option<&str> {
        match self {
            Via::Phone => r.phone.as_ref(),
            Via::Email => r.email.as_ref(),
        }
        .filter(|v| v.valid())
        .map(|v| v.key())
    }
}

/// One phone or e-mail key and the records holding it.
struct Key<'a> {
    key: &'a str,
    /// The first record with no link holding it (`NONE`: only linked records do).
    first_free: u32,
    providers: u8,
    /// Two records of one provider hold it: it links nobody.
    clash: bool,
    /// The existing people (by number) whose linked records hold it: the first, and whether
    /// another one does too.
    owner: u32,
    /// Another one, when more than one person's records hold it.
    owner2: u32,
}

/// The keys of one kind (phone or e-mail): which key each record holds.
struct Keys<'a> {
    via: Via,
    keys: Vec<Key<'a>>,
    /// Per record, its index in `keys` (`NONE`: no valid key, or not taking part).
    of_record: Vec<u32>,
    /// The people beyond `owner` and `owner2` holding a key, for the rare keys held by three
    /// or more people.
    more_owners: HashMap<u32, Vec<u32>>,
}

impl<'a> Keys<'a> {
    /// `person[i]`: the existing person (by number) of record `i`, `NONE` when it has no link
    /// or was set aside; `active[i]`: whether the record takes part; `free(i)`: whether it is
    /// a new record (a linked record set aside links no new records together).
    fn collect(
        records: &'a [Contact],
        via: Via,
        person: &[u32],
        active: &[bool],
        free: &dyn Fn(usize) -> bool,
    ) -> Self {
        let mut distinct = Distinct::new();
        let mut keys: Vec<Key<'a>> = Vec::new();
        let mut more_owners: HashMap<u32, Vec<u32>> = HashMap::new();
        let of_record = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if !active[i] {
                    return NONE;
                }
                let Some(key) = via.key(r) else {
                    return NONE;
                };
                let bit = r.provider().bit();
                let k = distinct.number(key);
                if k as usize == keys.len() {
                    keys.push(Key {
                        key,
                        first_free: NONE,
                        providers: 0,
                        clash: false,
                        owner: NONE,
                        owner2: NONE,
                    });
                }
                let entry = &mut keys[k as usize];
                entry.clash |= entry.providers & bit != 0;
                entry.providers |= bit;
                let p = person[i];
                if p == NONE {
                    if entry.first_free == NONE && free(i) {
                        entry.first_free = i as u32;
                    }
                } else if entry.owner == NONE {
                    entry.owner = p;
                } else if entry.owner != p && entry.owner2 == NONE {
                    entry.owner2 = p;
                } else if entry.owner != p && entry.owner2 != p {
                    let more = more_owners.entry(k).or_default();
                    if !more.contains(&p) {
                        more.push(p);
                    }
                }
                k
            })
            .collect();
        Keys {
            via,
            keys,
            of_record,
            more_owners,
        }
    }

    /// Every existing person (by number) whose linked records hold key `k`.
    fn owners(&self, k: u32) -> impl Iterator<Item = u32> + '_ {
        let key = &self.keys[k as usize];
        [key.owner, key.owner2]
            .into_iter()
            .filter(|p| *p != NONE)
            .chain(self.more_owners.get(&k).into_iter().flatten().copied())
    }

    fn of(&self, i: usize) -> Option<&Key<'a>> {
        let k = *self.of_record.get(i)?;
        self.keys.get(k as usize)
    }

    /// The key record `i` links new records by, if any.
    fn linking(&self, i: usize) -> Option<&Key<'a>> {
        self.of(i).filter(|k| !k.clash)
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
                people: Vec::new(),
                reason: format!(
                    "several records of one provider share the {} {:?}; not linked by it",
                    self.via.as_str(),
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
    match_linked(records, &linked, &Steering::default(), &|p| {
        links.values().any(|q| q == p)
    })
}

/// [`match_records`] with each record's earlier person, by record index (empty: none), and the
/// humans' decisions. `known` tells whether an earlier run gave a person that id, even if none
/// of its records is listed now (its provider's listing failed): a new person never takes it,
/// or those records would join the newcomer when they are listed again.
pub(crate) fn match_linked(
    records: &[Contact],
    linked: &[Option<&PersonId>],
    steering: &Steering,
    known: &dyn Fn(&str) -> bool,
) -> Matching {
    let n = records.len();
    let mut ambiguities = Vec::new();
    let link_of = |i: usize| linked.get(i).copied().flatten();
    let active: Vec<bool> = if steering.ignored.is_empty() {
        vec![true; n]
    } else {
        records
            .iter()
            .map(|r| !steering.ignored.contains(&r.id))
            .collect()
    };

    // 1. Existing people: every linked record stays with its person. Two records of one
    //    provider linked to one person (a state written by an older version, or edited by
    //    hand): the smaller record id stays, the other is set aside.
    let mut people = Distinct::new();
    let mut person_ids: Vec<&PersonId> = Vec::new();
    let mut person_of = vec![NONE; n];
    let mut person_mask: Vec<u8> = Vec::new();
    let mut person_first: Vec<u32> = Vec::new();
    let mut doubled: Vec<u32> = Vec::new();
    for i in 0..n {
        let Some(p) = link_of(i).filter(|_| active[i]) else {
            continue;
        };
        let k = people.number(p);
        if k as usize == person_ids.len() {
            person_ids.push(p);
            person_mask.push(0);
            person_first.push(i as u32);
        }
        let bit = records[i].provider().bit();
        if person_mask[k as usize] & bit != 0 {
            doubled.push(k);
        }
        person_mask[k as usize] |= bit;
        person_of[i] = k;
    }
    if !doubled.is_empty() {
        set_aside_doubles(records, &doubled, &mut person_of, &mut ambiguities);
    }

    // 2. New records grouped among themselves by phone and e-mail, in any order.
    let free = |i: usize| active[i] && link_of(i).is_none();
    let keys =
        [Via::Phone, Via::Email].map(|via| Keys::collect(records, via, &person_of, &active, &free));
    let mut dsu = Dsu::new(n);
    for k in &keys {
        k.clashes(records, &mut ambiguities);
        for i in 0..n {
            if !free(i) {
                continue;
            }
            if let Some(key) = k.linking(i) {
                dsu.union(key.first_free, i as u32);
            }
        }
    }
    let mut roots: Vec<u32> = (0..n as u32)
        .map(|i| if free(i as usize) { dsu.find(i) } else { NONE })
        .collect();
    drop(dsu);
    // Groups of new records holding two records of one provider are linked again, canonically.
    const TWICE: u8 = 0x80;
    let mut providers = vec![0u8; n];
    let mut any_twice = false;
    for (i, r) in records.iter().enumerate() {
        let root = roots[i];
        if root == NONE {
            continue;
        }
        let bit = r.provider().bit();
        let m = &mut providers[root as usize];
        if *m & bit != 0 {
            *m |= TWICE;
            any_twice = true;
        }
        *m |= bit;
    }
    if any_twice {
        let contested: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                let root = roots[i as usize];
                root != NONE && providers[root as usize] & TWICE != 0
            })
            .collect();
        link_canonically(records, &contested, &keys, &mut roots, &mut ambiguities);
        providers.iter_mut().for_each(|m| *m = 0);
        for (i, r) in records.iter().enumerate() {
            if roots[i] != NONE {
                providers[roots[i] as usize] |= r.provider().bit();
            }
        }
    }

    // 3. Each group of new records joins the one existing person its keys point at, forms a
    //    new person when none does, and is ambiguous otherwise.
    //    Per root: the person it joins (a person number), `NONE` for a new person.
    let mut fit: HashMap<u32, Vec<u32>, Hasher> = HashMap::default();
    for i in 0..n {
        let root = roots[i];
        if root == NONE {
            continue;
        }
        let forbidden = |p: u32| {
            steering
                .unlinked_from
                .get(&records[i].id)
                .is_some_and(|s| s.contains(person_ids[p as usize]))
        };
        for k in &keys {
            let Some(&key) = k.of_record.get(i).filter(|key| **key != NONE) else {
                continue;
            };
            for p in k.owners(key) {
                if forbidden(p) {
                    continue;
                }
                let people = fit.entry(root).or_default();
                if !people.contains(&p) {
                    people.push(p);
                }
            }
        }
    }
    let mut set_aside: BTreeMap<u32, (String, Vec<PersonId>)> = BTreeMap::new();
    for (&root, fits) in &fit {
        let mut named: Vec<PersonId> = fits
            .iter()
            .map(|&p| person_ids[p as usize].clone())
            .collect();
        named.sort();
        let reason = match fits.as_slice() {
            [p] if person_mask[*p as usize] & providers[root as usize] == 0 => continue,
            [p] => format!(
                "its phone or e-mail points at person {}, who already has a record of that provider; not joined",
                person_ids[*p as usize]
            ),
            _ => format!(
                "its phone or e-mail points at more than one person ({}); not joined",
                named.join(", ")
            ),
        };
        set_aside.insert(root, (reason, named));
    }
    // A group holding a record a human unlinked from the one person it fits does not join
    // it: that record would be re-joined by a key (SPEC section 10).
    if !steering.unlinked_from.is_empty() {
        for (i, r) in records.iter().enumerate() {
            let root = roots[i];
            if root == NONE || set_aside.contains_key(&root) {
                continue;
            }
            let Some([p]) = fit.get(&root).map(Vec::as_slice) else {
                continue;
            };
            let person = person_ids[*p as usize];
            if steering
                .unlinked_from
                .get(&r.id)
                .is_some_and(|s| s.contains(person))
            {
                let reason = format!(
                    "its phone or e-mail points at person {person}, which {} was unlinked from; not joined",
                    r.id
                );
                set_aside.insert(root, (reason, vec![person.clone()]));
            }
        }
    }
    // Two groups joining one person must not bring it two records of one provider (a key two
    // records of one provider hold points both at it): neither can say it is that person.
    let mut joining: HashMap<u32, Vec<u32>, Hasher> = HashMap::default();
    for (&root, f) in &fit {
        if let ([p], false) = (f.as_slice(), set_aside.contains_key(&root)) {
            joining.entry(*p).or_default().push(root);
        }
    }
    for (p, joiners) in joining.iter().filter(|(_, j)| j.len() > 1) {
        for &root in joiners {
            let others = joiners
                .iter()
                .filter(|&&r| r != root)
                .fold(0u8, |m, &r| m | providers[r as usize]);
            if providers[root as usize] & others != 0 {
                let reason = format!(
                    "its phone or e-mail points at person {}, as another new record's of that provider does; not joined",
                    person_ids[*p as usize]
                );
                set_aside.insert(root, (reason, vec![person_ids[*p as usize].clone()]));
            }
        }
    }
    if !set_aside.is_empty() {
        let mut pending: BTreeMap<u32, Vec<RecordId>> = BTreeMap::new();
        for i in 0..n {
            let root = roots[i];
            if root == NONE {
                continue;
            }
            if set_aside.contains_key(&root) {
                pending.entry(root).or_default().push(records[i].id.clone());
                roots[i] = NONE;
            }
        }
        for (root, mut ids) in pending {
            ids.sort();
            let (reason, people) = set_aside.remove(&root).unwrap_or_default();
            ambiguities.push(Ambiguity {
                records: ids,
                reason,
                people,
            });
        }
    }

    // 4. Groups: each existing person's records, plus the new records joining it; then each
    //    new person. Numbered by first record in the input.
    //    A group is keyed by `person number` for existing people and `n + root` for new ones.
    let mut group_of = vec![NONE; n];
    // The group of each existing person (by number) and of each new person (by root), once
    // seen: dense numbers, so plain vectors (the one for roots only when there are new records).
    let mut group_of_person = vec![NONE; person_ids.len()];
    let mut group_of_root = if roots.iter().any(|&r| r != NONE) {
        vec![NONE; n]
    } else {
        Vec::new()
    };
    let mut sizes: Vec<u32> = Vec::new();
    let mut slot_person: Vec<u32> = Vec::new();
    for i in 0..n {
        let (slot, person) = if person_of[i] != NONE {
            (&mut group_of_person[person_of[i] as usize], person_of[i])
        } else if roots[i] != NONE {
            match fit.get(&roots[i]).map(Vec::as_slice) {
                Some([p]) => (&mut group_of_person[*p as usize], *p),
                _ => (&mut group_of_root[roots[i] as usize], NONE),
            }
        } else {
            continue;
        };
        if *slot == NONE {
            *slot = sizes.len() as u32;
            sizes.push(0);
            slot_person.push(person);
        }
        let g = *slot;
        sizes[g as usize] += 1;
        group_of[i] = g;
    }
    drop((group_of_person, group_of_root));
    let mut starts = Vec::with_capacity(sizes.len());
    let mut total = 0u32;
    for s in &sizes {
        starts.push(total);
        total += s;
    }
    let mut fill = starts.clone();
    let mut members = vec![0u32; total as usize];
    for (i, &g) in group_of.iter().enumerate() {
        if g == NONE {
            continue;
        }
        members[fill[g as usize] as usize] = i as u32;
        fill[g as usize] += 1;
    }
    drop(fill);
    // The ids in use, which a new person's id must not take: needed only when there are new
    // people.
    let taken: HashSet<&str, Hasher> = if slot_person.contains(&NONE) {
        person_ids.iter().map(|p| p.as_str()).collect()
    } else {
        HashSet::default()
    };
    let mut groups: Vec<Group> = Vec::with_capacity(sizes.len());
    for (g, (&start, &len)) in starts.iter().zip(&sizes).enumerate() {
        let slice = &mut members[start as usize..(start + len) as usize];
        slice.sort_unstable_by(|a, b| records[*a as usize].id.cmp(&records[*b as usize].id));
        let p = slot_person[g];
        let person = if p != NONE {
            person_ids[p as usize].clone()
        } else {
            // New ids never collide with each other: two groups never share a smallest record.
            fresh_person_id(&records[slice[0] as usize].id, &taken, known)
        };
        groups.push(Group { person, start, len });
    }
    drop((starts, sizes, slot_person, taken));
    let first_id = |g: &Group| &records[members[g.start as usize] as usize].id;
    let by_person = sort_by_person(&groups, |a, b| first_id(a).cmp(first_id(b)));

    // 5. Join candidates: a key held by records of different people.
    let join_candidates = join_candidates(records, &keys, &group_of, &groups, &members, steering);

    ambiguities.sort_by(|a, b| {
        a.records
            .cmp(&b.records)
            .then_with(|| a.reason.cmp(&b.reason))
    });
    Matching {
        groups,
        by_person,
        members,
        group_of,
        ambiguous: ambiguities,
        join_candidates,
    }
}

/// Keeps, of two or more records of one provider linked to one person, the smallest record id;
/// the others are set aside as ambiguous.
fn set_aside_doubles(
    records: &[Contact],
    doubled: &[u32],
    person_of: &mut [u32],
    ambiguities: &mut Vec<Ambiguity>,
) {
    let doubled: HashSet<u32> = doubled.iter().copied().collect();
    let mut by: BTreeMap<(u32, crate::model::ProviderKind), Vec<u32>> = BTreeMap::new();
    for (i, &p) in person_of.iter().enumerate() {
        if p != NONE && doubled.contains(&p) {
            by.entry((p, records[i].provider()))
                .or_default()
                .push(i as u32);
        }
    }
    for (_, mut idx) in by {
        if idx.len() < 2 {
            continue;
        }
        idx.sort_by(|a, b| records[*a as usize].id.cmp(&records[*b as usize].id));
        let keep = &records[idx[0] as usize].id;
        let mut ids = Vec::new();
        for &i in &idx[1..] {
            person_of[i as usize] = NONE;
            ids.push(records[i as usize].id.clone());
        }
        ambiguities.push(Ambiguity {
            records: ids,
            people: Vec::new(),
            reason: format!(
                "linked to the same person as {keep}, another record of that provider; left out until a human unlinks one"
            ),
        });
    }
}

fn join_candidates(
    records: &[Contact],
    keys: &[Keys<'_>; 2],
    group_of: &[u32],
    groups: &[Group],
    members: &[u32],
    steering: &Steering,
) -> Vec<JoinCandidate> {
    let mut out = Vec::new();
    for k in keys {
        // Per key: the first group holding it, and whether another group does.
        let mut first = vec![NONE; k.keys.len()];
        let mut several = vec![false; k.keys.len()];
        let mut any = false;
        for (i, &key) in k.of_record.iter().enumerate() {
            let g = group_of[i];
            if key == NONE || g == NONE {
                continue;
            }
            let f = &mut first[key as usize];
            if *f == NONE {
                *f = g;
            } else if *f != g {
                several[key as usize] = true;
                any = true;
            }
        }
        if !any {
            continue;
        }
        let mut holders: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (i, &key) in k.of_record.iter().enumerate() {
            if key != NONE && group_of[i] != NONE && several[key as usize] {
                holders.entry(key).or_default().push(i as u32);
            }
        }
        for (key, idx) in holders {
            let mut people: BTreeMap<&PersonId, u32> = BTreeMap::new();
            for &i in &idx {
                let g = group_of[i as usize];
                people.insert(&groups[g as usize].person, g);
            }
            // A human unlinked one of these records from one of these people: not suggested.
            let unlinked = idx.iter().any(|&i| {
                steering
                    .unlinked_from
                    .get(&records[i as usize].id)
                    .is_some_and(|from| people.keys().any(|p| from.contains(*p)))
            });
            if unlinked {
                continue;
            }
            let mut holder_ids: Vec<RecordId> = idx
                .iter()
                .map(|&i| records[i as usize].id.clone())
                .collect();
            holder_ids.sort();
            out.push(JoinCandidate {
                via: k.via.as_str(),
                key: k.keys[key as usize].key.to_owned(),
                people: people
                    .into_iter()
                    .map(|(p, g)| {
                        let g = &groups[g as usize];
                        let recs = g
                            .members(members)
                            .iter()
                            .map(|&m| records[m as usize].id.clone())
                            .collect();
                        (p.clone(), recs)
                    })
                    .collect(),
                holders: holder_ids,
            });
        }
    }
    out.sort_by(|a, b| (&a.people, a.via, &a.key).cmp(&(&b.people, b.via, &b.key)));
    out
}

/// A new person id: `p:` and the record id (its smallest record's, so it does not depend on the
/// input order), with `~N` added when that id is taken (a record unlinked from the person it
/// founded).
fn fresh_person_id(
    id: &RecordId,
    taken: &HashSet<&str, Hasher>,
    known: &dyn Fn(&str) -> bool,
) -> PersonId {
    let free = |c: &str| !taken.contains(c) && !known(c);
    let base = new_person_id(id);
    if free(&base) {
        return base;
    }
    (2u32..)
        .map(|k| format_compact!("{base}~{k}"))
        .find(|c| free(c))
        .unwrap_or(base)
}

/// The plain new person id for a record: `p:provider:native`.
pub fn new_person_id(id: &RecordId) -> PersonId {
    let provider = id.provider.as_str();
    let mut s = CompactString::with_capacity(3 + provider.len() + id.native.len());
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

/// Links the `contested` new records (whole groups that hold two records of one provider) in
/// the canonical order: phone keys, then e-mail keys, each in key order and each key's holders in
/// record id order. A refused join sets both its records aside as ambiguous, and linking starts
/// over without them until nothing new is refused. Updates `roots` of the contested records
/// (`NONE` for ambiguous ones).
fn link_canonically(
    records: &[Contact],
    contested: &[u32],
    keys: &[Keys<'_>; 2],
    roots: &mut [u32],
    ambiguities: &mut Vec<Ambiguity>,
) {
    let mut order = contested.to_vec();
    order.sort_unstable_by(|a, b| records[*a as usize].id.cmp(&records[*b as usize].id));
    // Each key chains its holders in record-id order. The chains are built again on every
    // pass from the records not yet set aside, so setting aside a record in the middle of a
    // chain does not part the holders on either side of it.
    let edges_without = |aside: &BTreeMap<u32, String>| {
        let mut edges: Vec<(u32, u32, Via)> = Vec::new();
        for k in keys {
            let mut holders: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
            for &i in order.iter().filter(|i| !aside.contains_key(i)) {
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
        edges
    };

    let mut ambiguous_at: BTreeMap<u32, String> = BTreeMap::new();
    let mut dsu = loop {
        let mut dsu = Dsu::with_masks(records);
        let mut new_ambiguous = false;
        for (a, b, via) in edges_without(&ambiguous_at) {
            if ambiguous_at.contains_key(&a) || ambiguous_at.contains_key(&b) {
                continue;
            }
            if !dsu.union(a, b) {
                let (ra, rb) = (&records[a as usize], &records[b as usize]);
                let reason = format!(
                    "{} and {} are linked by {} but each already belongs with another {} record",
                    ra.id,
                    rb.id,
                    via.as_str(),
                    if ra.provider() == rb.provider() {
                        ra.provider().as_str()
                    } else {
                        "same-provider"
                    }
                );
                ambiguous_at.insert(a, reason.clone());
                ambiguous_at.insert(b, reason);
                new_ambiguous = true;
                // Start again without them: a record set aside must not refuse later edges.
                break;
            }
        }
        if !new_ambiguous {
            break dsu;
        }
    };
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
            people: Vec::new(),
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

    fn person_of<'m>(records: &[Contact], m: &'m Matching, id: &str) -> Option<&'m str> {
        let i = records.iter().position(|r| r.id.to_string() == id)?;
        let g = m.group_of[i];
        (g != NONE).then(|| m.groups[g as usize].person.as_str())
    }

    fn links(pairs: &[(ProviderKind, &str, &str)]) -> HashMap<RecordId, PersonId> {
        pairs
            .iter()
            .map(|(p, id, person)| (RecordId::new(*p, *id), PersonId::from(*person)))
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
        assert!(m.join_candidates.is_empty());
    }

    #[test]
    fn persisted_links_survive_a_phone_change() {
        use ProviderKind::*;
        let records = vec![
            rec(Privy, "a", Some("+14155550111"), None),
            rec(Chatwoot, "1", Some("+14155550101"), None),
        ];
        let links = links(&[(Privy, "a", "p:1"), (Chatwoot, "1", "p:1")]);
        let m = match_records(&records, &links);
        assert_eq!(m.groups.len(), 1);
        assert_eq!(m.groups[0].person, "p:1");
    }

    #[test]
    fn two_existing_people_never_fuse_by_a_key() {
        use ProviderKind::*;
        // P1 = protocol:a + callbell:b, P2 = chatwoot:8 + privy:9; chatwoot:8's phone was edited
        // to P1's.
        let records = vec![
            rec(Protocol, "a", Some("+14155550101"), None),
            rec(Callbell, "b", Some("+14155550101"), None),
            rec(Chatwoot, "8", Some("+14155550101"), None),
            rec(Privy, "9", Some("+14155550202"), None),
        ];
        let links = links(&[
            (Protocol, "a", "p:1"),
            (Callbell, "b", "p:1"),
            (Chatwoot, "8", "p:2"),
            (Privy, "9", "p:2"),
        ]);
        let m = match_records(&records, &links);
        assert_eq!(m.groups.len(), 2);
        assert_eq!(person_of(&records, &m, "chatwoot:8"), Some("p:2"));
        assert_eq!(person_of(&records, &m, "protocol:a"), Some("p:1"));
        assert_eq!(m.join_candidates.len(), 1, "{:?}", m.join_candidates);
        let jc = &m.join_candidates[0];
        assert_eq!(jc.via, "phone");
        assert_eq!(jc.key, "+14155550101");
        assert_eq!(
            jc.people
                .iter()
                .map(|(p, _)| p.as_str())
                .collect::<Vec<_>>(),
            ["p:1", "p:2"]
        );
        assert!(jc.joinable());
    }

    #[test]
    fn a_new_record_joins_the_one_person_its_key_points_at() {
        use ProviderKind::*;
        let records = vec![
            rec(Protocol, "a", Some("+14155550101"), None),
            rec(Privy, "new", Some("+14155550101"), None),
        ];
        let m = match_records(&records, &links(&[(Protocol, "a", "p:1")]));
        assert_eq!(person_of(&records, &m, "privy:new"), Some("p:1"));
    }

    #[test]
    fn a_new_record_pointing_at_two_people_is_ambiguous() {
        use ProviderKind::*;
        let records = vec![
            rec(Protocol, "a", Some("+14155550101"), None),
            rec(Callbell, "b", None, Some("b@x.io")),
            rec(Privy, "new", Some("+14155550101"), Some("b@x.io")),
        ];
        let m = match_records(
            &records,
            &links(&[(Protocol, "a", "p:1"), (Callbell, "b", "p:2")]),
        );
        assert_eq!(person_of(&records, &m, "privy:new"), None);
        assert!(m
            .ambiguous
            .iter()
            .any(|a| a.records == [RecordId::new(Privy, "new")]));
    }

    #[test]
    fn a_new_record_whose_person_has_its_provider_is_ambiguous() {
        use ProviderKind::*;
        let records = vec![
            rec(Privy, "a", None, Some("ada@x.io")),
            rec(Privy, "b", None, Some("ada@x.io")),
        ];
        let m = match_records(&records, &links(&[(Privy, "a", "p:1")]));
        assert_eq!(person_of(&records, &m, "privy:b"), None);
        assert_eq!(person_of(&records, &m, "privy:a"), Some("p:1"));
    }

    #[test]
    fn an_unlinked_record_never_rejoins_its_old_person() {
        use ProviderKind::*;
        let records = vec![
            rec(Protocol, "a", Some("+14155550101"), None),
            rec(Privy, "x", Some("+14155550101"), None),
        ];
        let steering = Steering {
            unlinked_from: [(RecordId::new(Privy, "x"), [PersonId::from("p:1")].into())].into(),
            ..Steering::default()
        };
        let links = links(&[(Protocol, "a", "p:1")]);
        let linked: Vec<_> = records.iter().map(|r| links.get(&r.id)).collect();
        let m = match_linked(&records, &linked, &steering, &|_| false);
        let x = person_of(&records, &m, "privy:x").expect("a person of its own");
        assert_ne!(x, "p:1");
        assert!(m.join_candidates.is_empty(), "a human said no");
    }

    #[test]
    fn ignored_records_take_no_part() {
        use ProviderKind::*;
        let records = vec![
            rec(Protocol, "a", Some("+14155550101"), None),
            rec(Privy, "x", Some("+14155550101"), None),
        ];
        let steering = Steering {
            ignored: [RecordId::new(Privy, "x")].into(),
            ..Steering::default()
        };
        let m = match_linked(&records, &[], &steering, &|_| false);
        assert_eq!(m.groups.len(), 1);
        assert_eq!(person_of(&records, &m, "privy:x"), None);
        assert!(m.ambiguous.is_empty());
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
