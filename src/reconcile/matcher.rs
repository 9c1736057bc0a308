//! The matcher: links records of different providers that describe the same person.
//!
//! Records are joined by normalised phone, then case-folded e-mail, then links persisted from
//! earlier runs (so a person stays linked after changing their phone in one provider). A person
//! holds at most one record per provider: a join that would put two records of one provider into
//! one person is refused, and the records involved are reported as ambiguous and left alone.
//!
//! Linear in the number of records: hash maps from key to holders and a union-find, no pairwise
//! comparison.

use std::collections::{BTreeMap, HashMap};

use crate::model::{Contact, RecordId};

/// A stable person id, persisted in the state store.
pub type PersonId = String;

/// A group of records that are one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub person: PersonId,
    /// Indexes into the record slice, sorted by record id.
    pub members: Vec<usize>,
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
    /// Every non-ambiguous record is in exactly one group; sorted by person id.
    pub groups: Vec<Group>,
    pub ambiguous: Vec<Ambiguity>,
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
pub fn match_records(records: &[Contact], links: &HashMap<RecordId, PersonId>) -> Matching {
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
    groups.sort_unstable_by(|a, b| a.person.cmp(&b.person));
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

    fn ids(records: &[Contact], g: &Group) -> Vec<String> {
        g.members
            .iter()
            .map(|m| records[*m].id.to_string())
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
        let big = m
            .groups
            .iter()
            .find(|g| g.members.len() == 3)
            .expect("linked");
        assert_eq!(ids(&records, big), ["callbell:u", "chatwoot:1", "privy:a"]);
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
            .all(|g| g.members.iter().all(|i| records[*i].id.native != "1")));
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
