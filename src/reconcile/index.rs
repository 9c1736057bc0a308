//! Hash tables for the planner's hot paths.
//!
//! At a million people, planning is bound by memory latency, not by computation: a lookup in a
//! large hash map keyed by `String` misses the cache three times in a row (control bytes, entry,
//! key text). These tables store 4-byte numbers and keep each key's hash, so they stay small and
//! never re-read key text to grow; [`RecordIndex::join`] reads the memory's big maps in one
//! sequential pass instead of looking each record up.
//!
//! foldhash is several times faster than SipHash on short keys and still seeded per process.

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::hash_table::{Entry, HashTable};

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

/// Finds records by id.
pub(crate) struct RecordIndex<'a> {
    records: &'a [Contact],
    state: RandomState,
    table: HashTable<u32>,
    /// Two records share an id (then joins fall back to lookups, which find both).
    duplicates: bool,
}

impl<'a> RecordIndex<'a> {
    pub(crate) fn new(records: &'a [Contact]) -> Self {
        let state = RandomState::default();
        let mut table = HashTable::with_capacity(records.len());
        let mut duplicates = false;
        for (i, r) in records.iter().enumerate() {
            let hash = state.hash_one(&r.id);
            match table.entry(
                hash,
                |&k| records[k as usize].id == r.id,
                |&k| state.hash_one(&records[k as usize].id),
            ) {
                Entry::Occupied(_) => duplicates = true,
                Entry::Vacant(e) => {
                    e.insert(i as u32);
                }
            }
        }
        RecordIndex {
            records,
            state,
            table,
            duplicates,
        }
    }

    fn find(&self, id: &RecordId) -> Option<usize> {
        let hash = self.state.hash_one(id);
        self.table
            .find(hash, |&k| self.records[k as usize].id == *id)
            .map(|&k| k as usize)
    }

    /// `map`'s value for each record, by record index; empty when `map` is.
    ///
    /// Scans `map` when it is not much larger than the record list (the usual case: it holds
    /// the records of earlier runs), else looks each record up.
    pub(crate) fn join<'m, V>(&self, map: &'m HashMap<RecordId, V>) -> Vec<Option<&'m V>> {
        let n = self.records.len();
        if map.is_empty() {
            return Vec::new();
        }
        if self.duplicates || map.len() > 2 * n {
            return self.records.iter().map(|r| map.get(&r.id)).collect();
        }
        let mut out = vec![None; n];
        for (id, v) in map {
            if let Some(i) = self.find(id) {
                out[i] = Some(v);
            }
        }
        out
    }
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

    #[test]
    fn join_matches_lookups() {
        let mut records: Vec<Contact> = (0..50)
            .map(|i| Contact::new(ProviderKind::ALL[i % 4], format!("{}", i / 3)))
            .collect();
        let map: HashMap<RecordId, usize> = records
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(i, r)| (r.id.clone(), i))
            .chain([(RecordId::new(ProviderKind::Privy, "gone"), 99)])
            .collect();
        let want: Vec<Option<&usize>> = records.iter().map(|r| map.get(&r.id)).collect();
        assert_eq!(RecordIndex::new(&records).join(&map), want);
        records.push(records[7].clone());
        let want: Vec<Option<&usize>> = records.iter().map(|r| map.get(&r.id)).collect();
        assert_eq!(RecordIndex::new(&records).join(&map), want);
        assert!(RecordIndex::new(&records)
            .join(&HashMap::<RecordId, u8>::new())
            .is_empty());
    }
}
