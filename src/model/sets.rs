//! The two collection fields, tags and custom fields, as sorted vectors.
//!
//! A record has few tags and few custom fields (none, one or a handful), and there are millions
//! of records, so a B-tree's node (288 bytes for a one-tag set, 544 for a one-entry map) is the
//! wrong shape: these keep their elements sorted and unique in one `ThinVec` (one pointer in the
//! record, its length and capacity in the allocation), which costs nothing when empty and one
//! small allocation otherwise. They offer the part of `BTreeSet`/`BTreeMap`'s
//! interface the program uses, with the same iteration order (sorted by byte order of the text).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use compact_str::CompactString;
use thin_vec::ThinVec;

/// A set of tags, sorted and without duplicates.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TagSet(ThinVec<CompactString>);

impl TagSet {
    pub fn new() -> Self {
        TagSet(ThinVec::new())
    }

    fn find(&self, tag: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|t| t.as_str().cmp(tag))
    }

    /// Adds `tag`; false when it was already there.
    pub fn insert(&mut self, tag: impl Into<CompactString>) -> bool {
        let tag = tag.into();
        match self.find(&tag) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, tag);
                true
            }
        }
    }

    /// Removes `tag`; false when it was not there.
    pub fn remove(&mut self, tag: &str) -> bool {
        match self.find(tag) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    pub fn contains(&self, tag: &str) -> bool {
        self.find(tag).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The tags, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, CompactString> {
        self.0.iter()
    }

    /// The tags in `self` and not in `other`, in order.
    pub fn difference<'a>(&'a self, other: &'a TagSet) -> impl Iterator<Item = &'a CompactString> {
        self.0.iter().filter(|t| !other.contains(t))
    }

    /// The tags as plain strings, in order (what a provider's JSON carries).
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|t| t.to_string()).collect()
    }
}

impl fmt::Debug for TagSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.iter()).finish()
    }
}

impl<T: Into<CompactString>> FromIterator<T> for TagSet {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut v: ThinVec<CompactString> = iter.into_iter().map(Into::into).collect();
        v.sort_unstable();
        v.dedup();
        TagSet(v)
    }
}

impl<T: Into<CompactString>> Extend<T> for TagSet {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        for t in iter {
            self.insert(t);
        }
    }
}

impl<T: Into<CompactString>, const N: usize> From<[T; N]> for TagSet {
    fn from(tags: [T; N]) -> Self {
        tags.into_iter().collect()
    }
}

impl From<BTreeSet<String>> for TagSet {
    fn from(set: BTreeSet<String>) -> Self {
        // Already sorted and unique, in the same (byte) order.
        TagSet(set.into_iter().map(CompactString::from).collect())
    }
}

impl IntoIterator for TagSet {
    type Item = CompactString;
    type IntoIter = thin_vec::IntoIter<CompactString>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a TagSet {
    type Item = &'a CompactString;
    type IntoIter = std::slice::Iter<'a, CompactString>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Custom fields: names to values, sorted by name, each name once.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldMap(ThinVec<(CompactString, CompactString)>);

impl FieldMap {
    pub fn new() -> Self {
        FieldMap(ThinVec::new())
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// Sets `key` to `value`, returning the value it replaced.
    pub fn insert(
        &mut self,
        key: impl Into<CompactString>,
        value: impl Into<CompactString>,
    ) -> Option<CompactString> {
        let key = key.into();
        let value = value.into();
        match self.find(&key) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, value)),
            Err(at) => {
                self.0.insert(at, (key, value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<CompactString> {
        self.find(key).ok().map(|at| self.0.remove(at).1)
    }

    pub fn get(&self, key: &str) -> Option<&CompactString> {
        self.find(key).ok().map(|at| &self.0[at].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Names and values, in name order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&CompactString, &CompactString)> + '_ {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &CompactString> + '_ {
        self.0.iter().map(|(k, _)| k)
    }

    /// The entries as a map of plain strings (what a provider's JSON carries).
    pub fn to_btree(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl fmt::Debug for FieldMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<CompactString>, V: Into<CompactString>> FromIterator<(K, V)> for FieldMap {
    /// A later value for a name replaces an earlier one, as when collecting into a map.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = FieldMap::new();
        m.extend(iter);
        m
    }
}

impl<K: Into<CompactString>, V: Into<CompactString>> Extend<(K, V)> for FieldMap {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K: Into<CompactString>, V: Into<CompactString>, const N: usize> From<[(K, V); N]>
    for FieldMap
{
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl From<BTreeMap<String, String>> for FieldMap {
    fn from(map: BTreeMap<String, String>) -> Self {
        // Already sorted by name, each name once.
        FieldMap(map.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl IntoIterator for FieldMap {
    type Item = (CompactString, CompactString);
    type IntoIter = thin_vec::IntoIter<(CompactString, CompactString)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a FieldMap {
    type Item = (&'a CompactString, &'a CompactString);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (CompactString, CompactString)>,
        fn(&'a (CompactString, CompactString)) -> (&'a CompactString, &'a CompactString),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The same operations on a `TagSet` and a `BTreeSet` leave the same elements in the
        /// same order.
        #[test]
        fn tag_set_is_a_set(ops in proptest::collection::vec((any::<bool>(), "[a-c]{0,2}"), 0..40)) {
            let mut ours = TagSet::new();
            let mut std = BTreeSet::new();
            for (add, t) in ops {
                if add {
                    prop_assert_eq!(ours.insert(t.as_str()), std.insert(t));
                } else {
                    prop_assert_eq!(ours.remove(&t), std.remove(&t));
                }
                prop_assert_eq!(ours.len(), std.len());
            }
            let a: Vec<&str> = ours.iter().map(|t| t.as_str()).collect();
            let b: Vec<&str> = std.iter().map(|t| t.as_str()).collect();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.iter().copied().collect::<TagSet>(), ours);
        }

        /// The same for a `FieldMap` and a `BTreeMap`.
        #[test]
        fn field_map_is_a_map(ops in proptest::collection::vec((any::<bool>(), "[a-c]{0,2}", "[xy]"), 0..40)) {
            let mut ours = FieldMap::new();
            let mut std = BTreeMap::new();
            for (add, k, v) in ops {
                if add {
                    prop_assert_eq!(
                        ours.insert(k.as_str(), v.as_str()).map(String::from),
                        std.insert(k, v)
                    );
                } else {
                    prop_assert_eq!(ours.remove(&k).map(String::from), std.remove(&k));
                }
            }
            let a: Vec<(&str, &str)> = ours.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let b: Vec<(&str, &str)> = std.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            prop_assert_eq!(&a, &b);
            for (k, v) in &std {
                prop_assert_eq!(ours.get(k).map(|s| s.as_str()), Some(v.as_str()));
            }
        }
    }
}
