//! The common contact model: one provider-neutral record type that every adapter maps to and
//! from, and the field vocabulary the reconciler works in.
//!
//! Nothing here knows a provider's JSON or does I/O. Values are normalised once, when an adapter
//! builds a [`Contact`] (see [`normalize`]), so comparisons everywhere else are plain equality on
//! [`Value::key`].

pub mod normalize;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

pub use normalize::Normalizer;

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
    pub native: String,
}

impl RecordId {
    pub fn new(provider: ProviderKind, native: impl Into<String>) -> Self {
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
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Value {
    pub raw: String,
    pub key: String,
    pub valid: bool,
}

impl Value {
    /// A value whose comparison key is the raw text itself.
    pub fn plain(raw: impl Into<String>) -> Self {
        let raw = raw.into();
        Value {
            key: raw.clone(),
            raw,
            valid: true,
        }
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
        Value {
            raw: self.raw.to_owned(),
            key: self.key.to_owned(),
            valid: self.valid,
        }
    }
}

impl<'a> From<&'a Value> for ValueRef<'a> {
    fn from(v: &'a Value) -> Self {
        ValueRef {
            raw: &v.raw,
            key: &v.key,
            valid: v.valid,
        }
    }
}

/// A person's name: the display form plus given/family parts.
///
/// Providers that store one display name use `display`; Privy stores the parts. The split rule
/// (family name = last word, given name = the rest, one word = given name) lives in
/// [`Name::from_display`] so every adapter applies the same one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Name {
    pub display: String,
    pub given: Option<String>,
    pub family: Option<String>,
}

impl Name {
    /// Splits a display name into parts: the last word is the family name.
    ///
    /// ```
    /// use contact_sync::model::Name;
    ///
    /// let n = Name::from_display("  Ada   King Lovelace ");
    /// assert_eq!(n.display, "Ada King Lovelace");
    /// assert_eq!(n.given.as_deref(), Some("Ada King"));
    /// assert_eq!(n.family.as_deref(), Some("Lovelace"));
    /// ```
    pub fn from_display(display: &str) -> Self {
        let display = normalize::collapse_whitespace(display);
        let (given, family) = match display.rsplit_once(' ') {
            Some((given, family)) => (Some(given.to_owned()), Some(family.to_owned())),
            None if display.is_empty() => (None, None),
            None => (Some(display.clone()), None),
        };
        Name {
            display,
            given,
            family,
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
        let display = match (&given, &family) {
            (Some(g), Some(f)) => format!("{g} {f}"),
            (Some(g), None) => g.clone(),
            (None, Some(f)) => f.clone(),
            (None, None) => String::new(),
        };
        Name {
            display,
            given,
            family,
        }
    }
}

/// One provider record in the common model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub id: RecordId,
    /// The reference the provider's update endpoint addresses, when it differs from the native
    /// id (Chatwoot: the configured inbox's `source_id`). `None` means the record cannot be
    /// updated at all; `write_blocked` then says why.
    pub update_ref: Option<String>,
    /// Why the record cannot be written, when `update_ref` is `None`.
    pub write_blocked: Option<String>,
    pub name: Option<Name>,
    pub email: Option<Value>,
    pub phone: Option<Value>,
    pub avatar_url: Option<Value>,
    pub username: Option<Value>,
    pub external_id: Option<Value>,
    pub tags: BTreeSet<String>,
    pub custom_fields: BTreeMap<String, String>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Problems found while normalising this record (kept data that did not parse).
    pub warnings: Vec<String>,
    /// The provider marks the contact blocked (Chatwoot's `blocked`); with `skip_blocked` the
    /// person is left out of the sync (SPEC section 12).
    pub blocked: bool,
}

impl Contact {
    /// An empty record for `provider`/`native`, writable through its native id.
    pub fn new(provider: ProviderKind, native: impl Into<String>) -> Self {
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
            tags: BTreeSet::new(),
            custom_fields: BTreeMap::new(),
            updated_at: None,
            warnings: Vec::new(),
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
                    .filter(|n| !n.display.is_empty())
                    .map(|n| Value::plain(n.display.clone())),
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
                    .filter(|n| !n.display.is_empty())
                    .map(|n| ValueRef {
                        raw: &n.display,
                        key: &n.display,
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
                self.name = v.map(|v| Name::from_display(&v.raw));
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
    Set(BTreeSet<String>),
    Map(BTreeMap<String, String>),
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
                a.as_ref().map(|v| &v.key) == b.as_ref().map(|v| &v.key)
            }
            _ => self == other,
        }
    }

    /// The empty value of a field's shape.
    pub fn empty_for(field: Field) -> FieldValue {
        match field {
            Field::Tags => FieldValue::Set(BTreeSet::new()),
            Field::CustomFields => FieldValue::Map(BTreeMap::new()),
            _ => FieldValue::Scalar(None),
        }
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Scalar(None) => f.write_str("∅"),
            FieldValue::Scalar(Some(v)) => write!(f, "{:?}", v.raw),
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
    pub update_ref: String,
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
        assert_eq!(n.display, "Ada King Lovelace");
        assert_eq!(n.given.as_deref(), Some("Ada King"));
        assert_eq!(n.family.as_deref(), Some("Lovelace"));
        let one = Name::from_display("Cher");
        assert_eq!(one.given.as_deref(), Some("Cher"));
        assert_eq!(one.family, None);
        assert_eq!(
            Name::from_parts(Some("Ada"), Some("Lovelace")).display,
            "Ada Lovelace"
        );
        assert_eq!(Name::from_parts(None, Some("Lovelace")).display, "Lovelace");
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
