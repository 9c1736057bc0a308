//! The common contact model: one provider-neutral record type that every adapter maps to and
//! from, and the field vocabulary the reconciler works in.
//!
//! Nothing here knows a provider's JSON or does I/O. Values are normalised once, when an adapter
//! builds a [`Contact`] (see [`normalize`]), so comparisons everywhere else are plain equality on
//! [`Value::key`].
//!
//! A sync holds every listed record at once (four million at a million people), so the types
//! here are laid out for size (issue 13): text is a [`CompactString`] (up to 24 bytes inline, no
//! allocation), a [`Value`] keeps its raw text and key in one string and the key only when it
//! differs, a [`Name`] keeps its parts as positions in its display text, and tag sets and custom
//! fields are sorted vectors ([`TagSet`], [`FieldMap`]) rather than B-trees.

pub mod normalize;
mod sets;

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

pub use compact_str::{format_compact, CompactString};
pub use normalize::Normalizer;
pub use sets::{FieldMap, TagSet};
use thin_vec::ThinVec;

/// The four providers contact-sync knows. The order of the variants is the order reports use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProviderKind {
    Protocol,
    Callbell,
    Chatwoot,
    Privy,
}

impl ProviderKind {
    /// Every provider, in report order.
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::Protocol,
        ProviderKind::Callbell,
        ProviderKind::Chatwoot,
        ProviderKind::Privy,
    ];

    /// The lower-case name used in config, reports and the state store.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Protocol => "protocol",
            ProviderKind::Callbell => "callbell",
            ProviderKind::Chatwoot => "chatwoot",
            ProviderKind::Privy => "privy",
        }
    }

    /// A bit unique to this provider, for cheap "one record per provider" checks.
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("unknown provider `{s}` (expected protocol, callbell, chatwoot or privy)")
            })
    }
}

/// A provider record's identity: the provider plus its native id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    pub provider: ProviderKind,
    pub native: CompactString,
}

impl RecordId {
    pub fn new(provider: ProviderKind, native: impl Into<CompactString>) -> Self {
        RecordId {
            provider,
            native: native.into(),
        }
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.provider, self.native)
    }
}

/// The fields contact-sync reconciles. Scalar fields hold one [`Value`]; `Tags` is a set and
/// `CustomFields` a string map, both merged element-wise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    Name,
    Email,
    Phone,
    AvatarUrl,
    Username,
    ExternalId,
    Tags,
    CustomFields,
}

impl Field {
    /// Every field, in report order.
    pub const ALL: [Field; 8] = [
        Field::Name,
        Field::Email,
        Field::Phone,
        Field::AvatarUrl,
        Field::Username,
        Field::ExternalId,
        Field::Tags,
        Field::CustomFields,
    ];

    /// The scalar fields (one value each).
    pub const SCALARS: [Field; 6] = [
        Field::Name,
        Field::Email,
        Field::Phone,
        Field::AvatarUrl,
        Field::Username,
        Field::ExternalId,
    ];

    /// The name used in config (`[policy.fields.<name>]`), reports and the state store.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Email => "email",
            Field::Phone => "phone",
            Field::AvatarUrl => "avatar_url",
            Field::Username => "username",
            Field::ExternalId => "external_id",
            Field::Tags => "tags",
            Field::CustomFields => "custom_fields",
        }
    }

    /// Whether the field holds a single value (as opposed to a set or map).
    pub fn is_scalar(self) -> bool {
        !matches!(self, Field::Tags | Field::CustomFields)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Field {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Field::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Field::ALL.iter().map(|f| f.as_str()).collect();
                format!("unknown field `{s}` (expected one of {})", names.join(", "))
            })
    }
}

/// A scalar value as read from (or to be written to) a provider.
///
/// `raw` is what is written; `key` is the normalised form every comparison uses, so a provider
/// that reformats what we wrote (phone punctuation, e-mail case) compares equal and never causes
/// another write. `valid` is false for data the provider holds that does not parse (an
/// unparseable phone, a malformed e-mail): such values are kept and reported, never dropped, and
/// never written to a provider that validates the format.
///
/// Layout: the raw text, followed by the key only when the key differs, in one
/// [`CompactString`] (so an E.164 phone or a lower-case e-mail is one inline string), plus where
/// the raw text ends. Each value has exactly one representation, so the derived equality and hash
/// are equality and hash of `(raw, key, valid)`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Value {
    text: CompactString,
    raw_len: u32,
    flags: u8,
}

const VALID: u8 = 1;
const KEY_IS_RAW: u8 = 2;

impl Value {
    /// A value with its raw text, comparison key and validity.
    pub fn new(raw: &str, key: &str, valid: bool) -> Self {
        let mut flags = if valid { VALID } else { 0 };
        let text = if raw == key {
            flags |= KEY_IS_RAW;
            CompactString::from(raw)
        } else {
            let mut t = CompactString::with_capacity(raw.len() + key.len());
            t.push_str(raw);
            t.push_str(key);
            t
        };
        Value {
            raw_len: u32::try_from(raw.len()).unwrap_or(u32::MAX),
            text,
            flags,
        }
    }

    /// A valid value whose comparison key is the raw text itself.
    pub fn plain(raw: impl Into<CompactString>) -> Self {
        let text = raw.into();
        Value {
            raw_len: u32::try_from(text.len()).unwrap_or(u32::MAX),
            text,
            flags: VALID | KEY_IS_RAW,
        }
    }

    /// What is written to a provider.
    pub fn raw(&self) -> &str {
        self.text.get(..self.raw_len as usize).unwrap_or(&self.text)
    }

    /// The normalised form every comparison uses.
    pub fn key(&self) -> &str {
        if self.flags & KEY_IS_RAW != 0 {
            self.raw()
        } else {
            self.text.get(self.raw_len as usize..).unwrap_or_default()
        }
    }

    /// Whether the value parses in the field's format.
    pub fn valid(&self) -> bool {
        self.flags & VALID != 0
    }

    /// The borrowed view.
    pub fn as_ref(&self) -> ValueRef<'_> {
        ValueRef {
            raw: self.raw(),
            key: self.key(),
            valid: self.valid(),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("raw", &self.raw())
            .field("key", &self.key())
            .field("valid", &self.valid())
            .finish()
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    /// By raw text, then key, then validity.
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_ref().cmp(&other.as_ref())
    }
}

/// A borrowed view of a scalar [`Value`]: what [`Contact::scalar_ref`] returns, so comparing
/// values needs no copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValueRef<'a> {
    pub raw: &'a str,
    pub key: &'a str,
    pub valid: bool,
}

impl ValueRef<'_> {
    /// The owned value.
    pub fn to_value(self) -> Value {
        Value::new(self.raw, self.key, self.valid)
    }
}

impl<'a> From<&'a Value> for ValueRef<'a> {
    fn from(v: &'a Value) -> Self {
        v.as_ref()
    }
}

/// A person's name: the display form plus given/family parts.
///
/// Providers that store one display name use `display`; Privy stores the parts. The split rule
/// (family name = last word, given name = the rest, one word = given name) lives in
/// [`Name::from_display`] so every adapter applies the same one.
///
/// Both ways of building a name make the parts pieces of the display text (`given`, a space,
/// `family`), so a name is its display text and where the given name ends.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Name {
    display: CompactString,
    /// Where the given name ends in `display` (the family name starts one past it).
    given_end: u32,
    flags: u8,
}

const HAS_GIVEN: u8 = 1;
const HAS_FAMILY: u8 = 2;

impl Name {
    /// Splits a display name into parts: the last word is the family name.
    ///
    /// ```
    /// use contact_sync::model::Name;
    ///
    /// let n = Name::from_display("  Ada   King Lovelace ");
    /// assert_eq!(n.display(), "Ada King Lovelace");
    /// assert_eq!(n.given(), Some("Ada King"));
    /// assert_eq!(n.family(), Some("Lovelace"));
    /// ```
    pub fn from_display(display: &str) -> Self {
        let display = normalize::collapse_whitespace(display);
        let (given_end, flags) = match display.rfind(' ') {
            Some(at) => (at, HAS_GIVEN | HAS_FAMILY),
            None if display.is_empty() => (0, 0),
            None => (display.len(), HAS_GIVEN),
        };
        Name {
            given_end: u32::try_from(given_end).unwrap_or(u32::MAX),
            display: display.into(),
            flags,
        }
    }

    /// Joins given and family parts into a display name.
    pub fn from_parts(given: Option<&str>, family: Option<&str>) -> Self {
        let given = given
            .map(normalize::collapse_whitespace)
            .filter(|s| !s.is_empty());
        let family = family
            .map(normalize::collapse_whitespace)
            .filter(|s| !s.is_empty());
        let mut display = CompactString::default();
        let mut flags = 0;
        if let Some(g) = &given {
            display.push_str(g);
            flags |= HAS_GIVEN;
        }
        let given_end = display.len();
        if let Some(f) = &family {
            if given.is_some() {
                display.push(' ');
            }
            display.push_str(f);
            flags |= HAS_FAMILY;
        }
        Name {
            display,
            given_end: u32::try_from(given_end).unwrap_or(u32::MAX),
            flags,
        }
    }

    /// The whole name as one line.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The given name(s).
    pub fn given(&self) -> Option<&str> {
        (self.flags & HAS_GIVEN != 0).then(|| self.display.get(..self.given_end as usize))?
    }

    /// The family name.
    pub fn family(&self) -> Option<&str> {
        if self.flags & HAS_FAMILY == 0 {
            return None;
        }
        let start = if self.flags & HAS_GIVEN != 0 {
            self.given_end as usize + 1
        } else {
            0
        };
        self.display.get(start..)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Name")
            .field("display", &self.display())
            .field("given", &self.given())
            .field("family", &self.family())
            .finish()
    }
}

/// One provider record in the common model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub id: RecordId,
    /// The reference the provider's update endpoint addresses, when it differs from the native
    /// id (Chatwoot: the configured inbox's `source_id`). `None` means the record cannot be
    /// updated at all; `write_blocked` then says why.
    pub update_ref: Option<CompactString>,
    /// Why the record cannot be written, when `update_ref` is `None`.
    pub write_blocked: Option<CompactString>,
    pub name: Option<Name>,
    pub email: Option<Value>,
    pub phone: Option<Value>,
    pub avatar_url: Option<Value>,
    pub username: Option<Value>,
    pub external_id: Option<Value>,
    pub tags: TagSet,
    pub custom_fields: FieldMap,
    pub updated_at: Option<DateTime<Utc>>,
    /// Problems found while normalising this record (kept data that did not parse). Most
    /// records have none, so the list is one pointer wide.
    pub warnings: ThinVec<String>,
    /// The provider marks the contact blocked (Chatwoot's `blocked`); with `skip_blocked` the
    /// person is left out of the sync (SPEC section 12).
    pub blocked: bool,
}

impl Contact {
    /// An empty record for `provider`/`native`, writable through its native id.
    pub fn new(provider: ProviderKind, native: impl Into<CompactString>) -> Self {
        let native = native.into();
        Contact {
            update_ref: Some(native.clone()),
            id: RecordId::new(provider, native),
            write_blocked: None,
            name: None,
            email: None,
            phone: None,
            avatar_url: None,
            username: None,
            external_id: None,
            tags: TagSet::new(),
            custom_fields: FieldMap::new(),
            updated_at: None,
            warnings: ThinVec::new(),
            blocked: false,
        }
    }

    /// The provider this record belongs to.
    pub fn provider(&self) -> ProviderKind {
        self.id.provider
    }

    /// The value of a field, in the shape the reconciler compares.
    pub fn get(&self, field: Field) -> FieldValue {
        match field {
            Field::Name => FieldValue::Scalar(
                self.name
                    .as_ref()
                    .filter(|n| !n.display().is_empty())
                    .map(|n| Value::plain(n.display())),
            ),
            Field::Email => FieldValue::Scalar(self.email.clone()),
            Field::Phone => FieldValue::Scalar(self.phone.clone()),
            Field::AvatarUrl => FieldValue::Scalar(self.avatar_url.clone()),
            Field::Username => FieldValue::Scalar(self.username.clone()),
            Field::ExternalId => FieldValue::Scalar(self.external_id.clone()),
            Field::Tags => FieldValue::Set(self.tags.clone()),
            Field::CustomFields => FieldValue::Map(self.custom_fields.clone()),
        }
    }

    /// The value of a scalar field, borrowed: [`Contact::get`] without the copy. `None` for an
    /// empty value and for the set and map fields.
    pub fn scalar_ref(&self, field: Field) -> Option<ValueRef<'_>> {
        let v = match field {
            Field::Name => {
                return self
                    .name
                    .as_ref()
                    .filter(|n| !n.display().is_empty())
                    .map(|n| ValueRef {
                        raw: n.display(),
                        key: n.display(),
                        valid: true,
                    });
            }
            Field::Email => &self.email,
            Field::Phone => &self.phone,
            Field::AvatarUrl => &self.avatar_url,
            Field::Username => &self.username,
            Field::ExternalId => &self.external_id,
            Field::Tags | Field::CustomFields => return None,
        };
        v.as_ref().map(ValueRef::from)
    }

    /// Sets a field from a reconciled value (used to model a write that succeeded).
    pub fn set(&mut self, field: Field, value: FieldValue) {
        match (field, value) {
            (Field::Name, FieldValue::Scalar(v)) => {
                self.name = v.map(|v| Name::from_display(v.raw()));
            }
            (Field::Email, FieldValue::Scalar(v)) => self.email = v,
            (Field::Phone, FieldValue::Scalar(v)) => self.phone = v,
            (Field::AvatarUrl, FieldValue::Scalar(v)) => self.avatar_url = v,
            (Field::Username, FieldValue::Scalar(v)) => self.username = v,
            (Field::ExternalId, FieldValue::Scalar(v)) => self.external_id = v,
            (Field::Tags, FieldValue::Set(s)) => self.tags = s,
            (Field::CustomFields, FieldValue::Map(m)) => self.custom_fields = m,
            // A value of the wrong shape for the field is a programming error upstream; the
            // record is left as it was rather than corrupted.
            _ => {}
        }
    }
}

/// A field's value in a shape common to every field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    Scalar(Option<Value>),
    Set(TagSet),
    Map(FieldMap),
}

impl FieldValue {
    /// Whether the value is empty (no scalar, empty set or map).
    pub fn is_empty(&self) -> bool {
        match self {
            FieldValue::Scalar(v) => v.is_none(),
            FieldValue::Set(s) => s.is_empty(),
            FieldValue::Map(m) => m.is_empty(),
        }
    }

    /// Equality after normalisation: scalars compare by key.
    pub fn same_as(&self, other: &FieldValue) -> bool {
        match (self, other) {
            (FieldValue::Scalar(a), FieldValue::Scalar(b)) => {
                a.as_ref().map(Value::key) == b.as_ref().map(Value::key)
            }
            _ => self == other,
        }
    }

    /// The empty value of a field's shape.
    pub fn empty_for(field: Field) -> FieldValue {
        match field {
            Field::Tags => FieldValue::Set(TagSet::new()),
            Field::CustomFields => FieldValue::Map(FieldMap::new()),
            _ => FieldValue::Scalar(None),
        }
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Scalar(None) => f.write_str("∅"),
            FieldValue::Scalar(Some(v)) => write!(f, "{:?}", v.raw()),
            FieldValue::Set(s) => {
                let items: Vec<_> = s.iter().map(|t| format!("{t:?}")).collect();
                write!(f, "[{}]", items.join(", "))
            }
            FieldValue::Map(m) => {
                let items: Vec<_> = m.iter().map(|(k, v)| format!("{k:?}: {v:?}")).collect();
                write!(f, "{{{}}}", items.join(", "))
            }
        }
    }
}

/// One field change in a write: the record's value before and the full value after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub field: Field,
    pub old: FieldValue,
    pub new: FieldValue,
}

/// Everything to write to one provider record, as one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    pub record: RecordId,
    /// What the provider's update endpoint addresses (see [`Contact::update_ref`]).
    pub update_ref: CompactString,
    pub changes: Vec<Change>,
}

impl Patch {
    /// The change to `field`, if the patch carries one.
    pub fn change(&self, field: Field) -> Option<&Change> {
        self.changes.iter().find(|c| c.field == field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_split_uses_last_word_as_family_name() {
        let n = Name::from_display("  Ada   King Lovelace ");
        assert_eq!(n.display(), "Ada King Lovelace");
        assert_eq!(n.given(), Some("Ada King"));
        assert_eq!(n.family(), Some("Lovelace"));
        let one = Name::from_display("Cher");
        assert_eq!(one.given(), Some("Cher"));
        assert_eq!(one.family(), None);
        let both = Name::from_parts(Some("Mary  Ann"), Some("Smith Jones"));
        assert_eq!(both.display(), "Mary Ann Smith Jones");
        assert_eq!(both.given(), Some("Mary Ann"));
        assert_eq!(both.family(), Some("Smith Jones"));
        let family = Name::from_parts(None, Some("Lovelace"));
        assert_eq!(family.display(), "Lovelace");
        assert_eq!((family.given(), family.family()), (None, Some("Lovelace")));
        let none = Name::from_parts(Some(" "), None);
        assert_eq!(
            (none.display(), none.given(), none.family()),
            ("", None, None)
        );
        assert_eq!(Name::from_display(""), none);
    }

    #[test]
    fn a_value_keeps_its_key_once_and_only_when_it_differs() {
        let same = Value::new("+14155550100", "+14155550100", true);
        assert_eq!(
            (same.raw(), same.key(), same.valid()),
            ("+14155550100", "+14155550100", true)
        );
        let other = Value::new("Ann@Example.com", "ann@example.com", false);
        assert_eq!(other.raw(), "Ann@Example.com");
        assert_eq!(other.key(), "ann@example.com");
        assert!(!other.valid());
        assert_eq!(Value::plain("x"), Value::new("x", "x", true));
        assert_ne!(Value::new("ab", "", true), Value::new("a", "b", true));
        assert!(Value::new("a", "z", true) < Value::new("b", "a", true));
        assert_eq!(std::mem::size_of::<Option<Value>>(), 32);
    }

    #[test]
    fn provider_and_field_names_round_trip() {
        for p in ProviderKind::ALL {
            assert_eq!(p.as_str().parse::<ProviderKind>(), Ok(p));
        }
        for f in Field::ALL {
            assert_eq!(f.as_str().parse::<Field>(), Ok(f));
        }
        assert!("nope".parse::<Field>().is_err());
    }
}

/// A contact to create in one provider: the full value of every field the planner chose for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContact {
    pub provider: ProviderKind,
    /// The values to send, in [`Field`] order, none empty; tags and custom fields carry the whole
    /// set or map.
    pub fields: Vec<(Field, FieldValue)>,
}

impl NewContact {
    /// The value planned for `field`, if any.
    pub fn get(&self, field: Field) -> Option<&FieldValue> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v)
    }
}
