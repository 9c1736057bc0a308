//! Hash tables for the planner's hot paths.
//!
//! At a million people, planning is bound by memory latency, not by computation: a lookup in a
//! large hash map keyed by `String` misses the cache three times in a row (control bytes, entry,
//! key text). These tables store 4-byte numbers and keep each key's hash, so they stay small and
//! never re-read key text to grow; [`join`] reads the memory's big maps in one sequential pass
//! beside the records instead of looking each record up.
//!
//! foldhash is several times faster than SipHash on short keys and still seeded per process.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::hash_table::{Entry, HashTable};
use indexmap::IndexMap;

use crate::model::{Contact, RecordId};

/// Numbers the distinct strings it is given, densely from 0.
pub(crate) struct Distinct<'a> {
    state: RandomState,
    table: HashTable<u32>,
    /// Each distinct string and its hash, by number.
    items: Vec<(u64, &'a str)>,
}

impl<'a> Distinct<'a> {
    pub(crate) fn new() -> Self {
        Distinct {
            state: RandomState::default(),
            table: HashTable::new(),
            items: Vec::new(),
        }
    }

    /// The number of `s`, given on first sight.
    pub(crate) fn number(&mut self, s: &'a str) -> u32 {
        let hash = self.state.hash_one(s);
        let items = &self.items;
        let entry = self.table.entry(
            hash,
            |&k| items[k as usize] == (hash, s),
            |&k| items[k as usize].0,
        );
        match entry {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                let k = self.items.len() as u32;
                e.insert(k);
                self.items.push((hash, s));
                k
            }
        }
    }

    #[cfg(test)]
    fn get(&self, k: u32) -> &'a str {
        self.items[k as usize].1
    }
}

/// `map`'s value for each record, by record index; empty when `map` is.
///
/// The state store keeps records in the order they were first saved, which is the order their
/// providers list them, so the maps' entries come in the listing's order. The join walks the
/// records and the map side by side, comparing each record's id with the entry after the last
/// one matched; only a record out of that order (new, deleted or moved since) costs a hash
/// lookup, after which the walk goes on from where it found it. A converged listing in its
/// usual order is joined without hashing at all.
pub(crate) fn join<'m, V, S: BuildHasher>(
    records: &[Contact],
    map: &'m IndexMap<RecordId, V, S>,
) -> Vec<Option<&'m V>> {
    if map.is_empty() {
        return Vec::new();
    }
    let mut next = 0;
    records
        .iter()
        .map(|r| {
            if let Some((id, v)) = map.get_index(next) {
                if *id == r.id {
                    next += 1;
                    return Some(v);
                }
            }
            let (at, _, v) = map.get_full(&r.id)?;
            next = at + 1;
            Some(v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ProviderKind;

    #[test]
    fn distinct_numbers_each_string_once() {
        let words: Vec<String> = (0..1000).map(|i| format!("w{}", i % 300)).collect();
        let mut d = Distinct::new();
        let numbers: Vec<u32> = words.iter().map(|w| d.number(w)).collect();
        for (w, k) in words.iter().zip(&numbers) {
            assert_eq!(d.get(*k), w);
            assert_eq!(
                *k as usize,
                words.iter().position(|x| x == w).unwrap_or(0) % 300
            );
        }
    }

    use proptest::prelude::*;

    proptest! {
        /// Whatever the order of the records and of the map (the listing's order, shuffled,
        /// with records missing on either side or listed twice), the join finds what a lookup
        /// of each record finds.
        #[test]
        fn join_matches_lookups(
            ids in proptest::collection::vec((0..4usize, 0..30u8), 0..60),
            keep in proptest::collection::vec(any::<bool>(), 60),
            order in proptest::collection::vec(any::<u8>(), 60),
        ) {
            let records: Vec<Contact> = ids
                .iter()
                .map(|(p, n)| Contact::new(ProviderKind::ALL[*p], n.to_string()))
                .collect();
            // The map in the listing's order, then a few entries moved to the end.
            let mut entries: Vec<(RecordId, usize)> = records
                .iter()
                .enumerate()
                .filter(|(i, _)| keep[*i])
                .map(|(i, r)| (r.id.clone(), i))
                .chain([(RecordId::new(ProviderKind::Privy, "gone"), 99)])
                .collect();
            for (k, o) in order.iter().enumerate().take(entries.len()) {
                if o % 7 == 0 {
                    let e = entries.remove(k);
                    entries.push(e);
                }
            }
            let map: IndexMap<RecordId, usize, RandomState> = entries.into_iter().collect();
            let want: Vec<Option<&usize>> = records.iter().map(|r| map.get(&r.id)).collect();
            let got = join(&records, &map);
            if map.is_empty() {
                prop_assert!(got.is_empty());
            } else {
                prop_assert_eq!(got, want);
            }
        }
    }
}
