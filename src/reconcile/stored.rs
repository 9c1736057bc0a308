//! The values the planner remembers between runs, in compact form: a [`Baseline`] per record and
//! the [`Agreed`] values per person.
//!
//! Both exist once per record or person, so at a million people their size is most of the
//! state's memory. A baseline keeps only comparison keys, packed into one allocation; agreed
//! values keep full values (they are written) in one shared allocation that a plan hands on
//! without copying when nothing changed.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use crate::model::{CompactString, Field, FieldMap, FieldValue, TagSet, Value};

const FIELDS: usize = Field::ALL.len();

fn bit(field: Field) -> u8 {
    1 << (field as u8)
}

/// A record's values at the end of the last sync, per field, by comparison key.
///
/// The three-way merge only ever compares a baseline with current values, after normalisation,
/// so a baseline keeps each scalar's [`Value::key`] and nothing else (a scalar comes back as
/// `Value::plain(key)`); sets and maps are kept whole. A field can be absent (no baseline for it:
/// it was not synced then), present and empty, or present with a value; a value of the wrong
/// shape for its field counts as absent, as the planner always treated it.
///
/// Layout: one bit per present field, and the present fields' encodings concatenated in field
/// order in one allocation. A scalar is `varint(0)` (empty) or `varint(len + 1)` and the key's
/// bytes; a set is `varint(count)` and each element as `varint(len)` and bytes; a map is
/// `varint(count)` and each key and value likewise. When the encodings take at most 255 bytes
/// (nearly always), the allocation starts with one byte per present field saying where its
/// encoding ends (`indexed`), so the planner finds each field without decoding the ones
/// before it; the allocator's size classes usually absorb those bytes.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Baseline {
    fields: u8,
    indexed: bool,
    data: Box<[u8]>,
}

impl Baseline {
    pub fn new() -> Self {
        Baseline::default()
    }

    /// How many fields have a baseline.
    pub fn len(&self) -> usize {
        self.fields.count_ones() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.fields == 0
    }

    /// Whether `field` has a baseline (possibly empty).
    pub fn contains(&self, field: Field) -> bool {
        self.fields & bit(field) != 0
    }

    /// Sets the baseline of `field` from a value (by its comparison key). A value of the wrong
    /// shape for the field removes the field's baseline.
    pub fn insert(&mut self, field: Field, value: FieldValue) {
        let mut buf = Vec::new();
        let encoded = encode_into(field, &value, &mut buf);
        let mut parts = self.parts();
        parts[field as usize] = encoded.then_some(buf.as_slice());
        *self = Baseline::from_parts(&parts);
    }

    /// The baseline of `field`, decoded (scalars as `Value::plain(key)`).
    pub fn get(&self, field: Field) -> Option<FieldValue> {
        self.parts()[field as usize].map(|part| decode(field, part))
    }

    /// Every field with a baseline, in field order, decoded.
    pub fn iter(&self) -> impl Iterator<Item = (Field, FieldValue)> + '_ {
        let parts = self.parts();
        Field::ALL
            .into_iter()
            .filter_map(move |f| parts[f as usize].map(|part| (f, decode(f, part))))
    }

    /// The encoded part of every present field, by field index.
    pub(crate) fn parts(&self) -> [Option<&[u8]>; FIELDS] {
        let mut out = [None; FIELDS];
        if self.indexed {
            let k = self.len();
            let (ends, payload) = self.data.split_at(k.min(self.data.len()));
            let mut start = 0;
            let mut i = 0;
            for f in Field::ALL {
                if !self.contains(f) {
                    continue;
                }
                let end = ends.get(i).map_or(start, |e| *e as usize);
                out[f as usize] = payload.get(start..end);
                start = end;
                i += 1;
            }
            return out;
        }
        let mut r = Reader::new(&self.data);
        for f in Field::ALL {
            if !self.contains(f) {
                continue;
            }
            let start = r.pos;
            let ok = match f {
                Field::Tags => r.skip_items(1),
                Field::CustomFields => r.skip_items(2),
                _ => r.skip_scalar(),
            };
            if ok.is_none() {
                break;
            }
            out[f as usize] = self.data.get(start..r.pos);
        }
        out
    }

    fn from_parts(parts: &[Option<&[u8]>; FIELDS]) -> Self {
        let mut fields = 0;
        let mut len = 0;
        let mut k = 0;
        for f in Field::ALL {
            if let Some(p) = parts[f as usize] {
                fields |= bit(f);
                len += p.len();
                k += 1;
            }
        }
        let indexed = len <= u8::MAX as usize;
        let mut data = Vec::with_capacity(len + if indexed { k } else { 0 });
        if indexed {
            let mut end = 0;
            for p in parts.iter().flatten() {
                end += p.len();
                data.push(end as u8);
            }
        }
        for p in parts.iter().flatten() {
            data.extend_from_slice(p);
        }
        Baseline {
            fields,
            indexed,
            data: data.into_boxed_slice(),
        }
    }
}

impl FromIterator<(Field, FieldValue)> for Baseline {
    /// Later values for a field replace earlier ones, as when collecting into a map.
    fn from_iter<I: IntoIterator<Item = (Field, FieldValue)>>(iter: I) -> Self {
        let mut buf = Vec::new();
        let mut ranges: [Option<Range<usize>>; FIELDS] = Default::default();
        for (f, v) in iter {
            let start = buf.len();
            ranges[f as usize] = encode_into(f, &v, &mut buf).then_some(start..buf.len());
        }
        let parts = ranges.map(|r| r.and_then(|r| buf.get(r)));
        Baseline::from_parts(&parts)
    }
}

impl<const N: usize> From<[(Field, FieldValue); N]> for Baseline {
    fn from(values: [(Field, FieldValue); N]) -> Self {
        values.into_iter().collect()
    }
}

impl fmt::Debug for Baseline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Appends the encoding of `value` as `field`'s baseline; `false` (and nothing appended) when
/// the value does not have the field's shape.
fn encode_into(field: Field, value: &FieldValue, buf: &mut Vec<u8>) -> bool {
    fn bytes(buf: &mut Vec<u8>, s: &str) {
        put_varint(buf, s.len());
        buf.extend_from_slice(s.as_bytes());
    }
    match (field, value) {
        (Field::Tags, FieldValue::Set(s)) => {
            put_varint(buf, s.len());
            for t in s {
                bytes(buf, t);
            }
        }
        (Field::CustomFields, FieldValue::Map(m)) => {
            put_varint(buf, m.len());
            for (k, v) in m {
                bytes(buf, k);
                bytes(buf, v);
            }
        }
        (Field::Tags | Field::CustomFields, _) | (_, FieldValue::Set(_) | FieldValue::Map(_)) => {
            return false
        }
        (_, FieldValue::Scalar(None)) => put_varint(buf, 0),
        (_, FieldValue::Scalar(Some(v))) => {
            put_varint(buf, v.key().len() + 1);
            buf.extend_from_slice(v.key().as_bytes());
        }
    }
    true
}

fn put_varint(buf: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        buf.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

fn text(b: &[u8]) -> CompactString {
    // Every stored byte string was a `str`; the lossy conversion never replaces anything.
    CompactString::from_utf8_lossy(b)
}

fn decode(field: Field, part: &[u8]) -> FieldValue {
    match field {
        Field::Tags => FieldValue::Set(
            Items::new(part).map_or_else(TagSet::new, |items| items.singles().map(text).collect()),
        ),
        Field::CustomFields => {
            FieldValue::Map(Items::new(part).map_or_else(FieldMap::new, |items| {
                items.pairs().map(|(k, v)| (text(k), text(v))).collect()
            }))
        }
        _ => FieldValue::Scalar(scalar_key(part).map(|k| Value::plain(text(k)))),
    }
}

/// The key of an encoded scalar part; `None` when the baseline is empty.
pub(crate) fn scalar_key(part: &[u8]) -> Option<&[u8]> {
    let mut r = Reader::new(part);
    let n = r.varint()?;
    r.bytes(n.checked_sub(1)?)
}

/// The elements of an encoded set or map part.
#[derive(Clone, Copy)]
pub(crate) struct Items<'a> {
    count: usize,
    rest: &'a [u8],
}

impl<'a> Items<'a> {
    pub(crate) fn new(part: &'a [u8]) -> Option<Self> {
        let mut r = Reader::new(part);
        let count = r.varint()?;
        Some(Items {
            count,
            rest: part.get(r.pos..)?,
        })
    }

    fn singles(self) -> impl Iterator<Item = &'a [u8]> {
        let mut r = Reader::new(self.rest);
        (0..self.count).map_while(move |_| r.string())
    }

    fn pairs(self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        let mut r = Reader::new(self.rest);
        (0..self.count).map_while(move |_| Some((r.string()?, r.string()?)))
    }

    /// Whether a set holds `item`.
    pub(crate) fn contains(self, item: &[u8]) -> bool {
        self.singles().any(|s| s == item)
    }

    /// A map's value for `key`.
    pub(crate) fn get(self, key: &[u8]) -> Option<&'a [u8]> {
        self.pairs().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    fn varint(&mut self) -> Option<usize> {
        let mut n = 0usize;
        let mut shift = 0;
        loop {
            let b = *self.data.get(self.pos)?;
            self.pos += 1;
            n |= usize::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(n);
            }
            shift += 7;
        }
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let n = self.varint()?;
        self.bytes(n)
    }

    fn skip_scalar(&mut self) -> Option<()> {
        let n = self.varint()?;
        self.bytes(n.saturating_sub(1)).map(drop)
    }

    fn skip_items(&mut self, strings_per_item: usize) -> Option<()> {
        let count = self.varint()?;
        for _ in 0..count.saturating_mul(strings_per_item) {
            self.string()?;
        }
        Some(())
    }
}

/// The value of each field the last merge decided for a person, in field order.
///
/// Cloning is cheap (the values are shared), so a plan that decides exactly what was agreed
/// before hands the remembered values on instead of copying them.
#[derive(Clone)]
pub struct Agreed(Arc<[(Field, FieldValue)]>);

impl Agreed {
    pub fn new() -> Self {
        Agreed(Arc::from(Vec::new()))
    }

    /// The agreed value of `field`, if one was decided.
    pub fn get(&self, field: &Field) -> Option<&FieldValue> {
        self.0.iter().find(|(f, _)| f == field).map(|(_, v)| v)
    }

    pub fn contains_key(&self, field: &Field) -> bool {
        self.get(field).is_some()
    }

    /// Every agreed field and value, in field order.
    pub fn iter(&self) -> impl Iterator<Item = (&Field, &FieldValue)> {
        self.0.iter().map(|(f, v)| (f, v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether both share one allocation (a clone, not a copy).
    #[cfg(test)]
    pub(crate) fn shares(&self, other: &Agreed) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// From values already in field order, each field once.
    pub(crate) fn from_sorted(values: impl ExactSizeIterator<Item = (Field, FieldValue)>) -> Self {
        Agreed(values.collect())
    }
}

impl Default for Agreed {
    fn default() -> Self {
        Agreed::new()
    }
}

impl PartialEq for Agreed {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for Agreed {}

impl fmt::Debug for Agreed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl FromIterator<(Field, FieldValue)> for Agreed {
    /// Later values for a field replace earlier ones, as when collecting into a map.
    fn from_iter<I: IntoIterator<Item = (Field, FieldValue)>>(iter: I) -> Self {
        let map: BTreeMap<Field, FieldValue> = iter.into_iter().collect();
        Agreed::from(map)
    }
}

impl From<BTreeMap<Field, FieldValue>> for Agreed {
    fn from(map: BTreeMap<Field, FieldValue>) -> Self {
        Agreed::from_sorted(map.into_iter())
    }
}

impl<const N: usize> From<[(Field, FieldValue); N]> for Agreed {
    fn from(values: [(Field, FieldValue); N]) -> Self {
        values.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Agreed {
    type Item = (&'a Field, &'a FieldValue);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Field, FieldValue)>,
        fn(&'a (Field, FieldValue)) -> (&'a Field, &'a FieldValue),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(f, v)| (f, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Option<Value>> {
        prop::option::of(
            ("[a-zé ]{0,3}", "[a-z0-9@+.\u{1F600}]{0,200}", any::<bool>())
                .prop_map(|(raw, key, valid)| Value::new(&raw, &key, valid)),
        )
    }

    fn field_value(f: Field) -> BoxedStrategy<FieldValue> {
        match f {
            Field::Tags => prop::collection::btree_set("[a-z]{0,4}", 0..4)
                .prop_map(|s| FieldValue::Set(s.into_iter().collect()))
                .boxed(),
            Field::CustomFields => prop::collection::btree_map("[a-z]{0,3}", ".{0,3}", 0..4)
                .prop_map(|m| FieldValue::Map(m.into_iter().collect()))
                .boxed(),
            _ => value().prop_map(FieldValue::Scalar).boxed(),
        }
    }

    fn by_key(f: Field, v: &FieldValue) -> FieldValue {
        match (f.is_scalar(), v) {
            (true, FieldValue::Scalar(v)) => {
                FieldValue::Scalar(v.as_ref().map(|v| Value::plain(v.key().to_owned())))
            }
            _ => v.clone(),
        }
    }

    fn entries() -> impl Strategy<Value = Vec<(Field, FieldValue)>> {
        prop::collection::vec(prop::sample::select(Field::ALL.to_vec()), 0..10).prop_flat_map(
            |fields| {
                fields
                    .into_iter()
                    .map(|f| field_value(f).prop_map(move |v| (f, v)))
                    .collect::<Vec<_>>()
            },
        )
    }

    proptest! {
        /// A baseline holds what a map of comparison keys would hold.
        #[test]
        fn baseline_is_a_map_of_keys(entries in entries(), extra in entries()) {
            let map: BTreeMap<Field, FieldValue> =
                entries.iter().map(|(f, v)| (*f, by_key(*f, v))).collect();
            let mut b: Baseline = entries.into_iter().collect();
            prop_assert_eq!(b.iter().collect::<BTreeMap<_, _>>(), map.clone());
            prop_assert_eq!(b.len(), map.len());
            for f in Field::ALL {
                prop_assert_eq!(b.get(f), map.get(&f).cloned());
            }
            let mut map = map;
            for (f, v) in extra {
                map.insert(f, by_key(f, &v));
                b.insert(f, v);
            }
            prop_assert_eq!(b.iter().collect::<BTreeMap<_, _>>(), map.clone());
            let again: Baseline = map.into_iter().collect();
            prop_assert_eq!(again, b);
        }

        #[test]
        fn agreed_is_a_map(entries in entries()) {
            let map: BTreeMap<Field, FieldValue> = entries.iter().cloned().collect();
            let a: Agreed = entries.into_iter().collect();
            prop_assert_eq!(a.iter().map(|(f, v)| (*f, v.clone())).collect::<BTreeMap<_, _>>(), map.clone());
            for f in Field::ALL {
                prop_assert_eq!(a.get(&f), map.get(&f));
            }
            prop_assert_eq!(a.len(), map.len());
        }
    }

    #[test]
    fn a_value_of_the_wrong_shape_is_no_baseline() {
        let mut b = Baseline::from([(Field::Name, FieldValue::Scalar(Some(Value::plain("Ada"))))]);
        b.insert(Field::Name, FieldValue::Set(TagSet::new()));
        b.insert(Field::Tags, FieldValue::Scalar(None));
        b.insert(Field::CustomFields, FieldValue::Set(TagSet::new()));
        assert!(b.is_empty(), "{b:?}");
        b.insert(Field::Email, FieldValue::Scalar(None));
        assert!(b.contains(Field::Email));
        assert_eq!(b.get(Field::Email), Some(FieldValue::Scalar(None)));
        assert_eq!(b.get(Field::Name), None);
    }
}
