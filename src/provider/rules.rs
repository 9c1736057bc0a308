//! Field rules: what each provider lets its update endpoint write, as data.
//!
//! Each adapter describes its provider with a [`FieldRules`] table. The reconciler asks
//! [`FieldRules::admit`] before planning any write, so a change a provider would reject is
//! caught in planning and reported as *skipped* with the rule's name, instead of being sent.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::model::normalize::{is_e164, is_plausible_email};
use crate::model::{
    CompactString, Field, FieldMap, FieldValue, ProviderKind, RecordId, TagSet, Value,
};

/// Whether and when a field may be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutability {
    /// The update endpoint writes it freely.
    Writable,
    /// Writable only while the record's current value is empty (Privy email/phone).
    SetOnceWhileNull,
    /// Read but never written, with the reason shown in reports.
    ReadOnly(&'static str),
    /// The provider has no such field (nothing to read, nothing to write).
    Unsupported,
}

/// How a set or map field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// The write replaces the whole value, so it must carry the full merged set or map.
    ReplaceWhole,
    /// The write merges keys into what is there: nothing can be removed.
    MergeKeys,
}

/// A format a provider validates on write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Strict E.164 (`+` and digits).
    E164,
    /// `local@domain` with no whitespace.
    Email,
    /// At most this many characters.
    MaxLen(usize),
    /// Not empty or whitespace (the provider silently ignores blank values).
    NonBlank,
}

/// The rule for one field of one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRule {
    pub mutability: Mutability,
    /// For tags and custom fields: how a write is applied.
    pub write_mode: WriteMode,
    /// Tags (or custom-field keys) that exist in the account; `None` means any is accepted.
    pub must_pre_exist: Option<BTreeSet<String>>,
    /// The value identifies a contact within the account: writing one another contact holds
    /// would collide (Chatwoot merges the two contacts).
    pub unique_per_account: bool,
    /// Whether a value can be removed (a scalar cleared, a tag or key dropped).
    pub clearable: bool,
    /// Formats the provider validates.
    pub formats: &'static [Format],
    /// For tags and custom fields: common names this provider never holds, because the
    /// mapping names them for other providers only (SPEC section 12). They are not planned
    /// here, and not reported: the config says so.
    pub not_written: BTreeSet<String>,
}

impl FieldRule {
    /// A plainly writable, clearable field with no format rules.
    pub fn writable() -> Self {
        FieldRule {
            mutability: Mutability::Writable,
            write_mode: WriteMode::ReplaceWhole,
            must_pre_exist: None,
            unique_per_account: false,
            clearable: true,
            formats: &[],
            not_written: BTreeSet::new(),
        }
    }

    /// A field the provider does not have.
    pub fn unsupported() -> Self {
        FieldRule {
            mutability: Mutability::Unsupported,
            ..FieldRule::writable()
        }
    }

    /// A field the provider has but its update endpoint cannot write.
    pub fn read_only(why: &'static str) -> Self {
        FieldRule {
            mutability: Mutability::ReadOnly(why),
            ..FieldRule::writable()
        }
    }

    pub fn set_once(mut self) -> Self {
        self.mutability = Mutability::SetOnceWhileNull;
        self
    }

    pub fn merge_keys(mut self) -> Self {
        self.write_mode = WriteMode::MergeKeys;
        self.clearable = false;
        self
    }

    pub fn not_clearable(mut self) -> Self {
        self.clearable = false;
        self
    }

    pub fn unique(mut self) -> Self {
        self.unique_per_account = true;
        self
    }

    pub fn formats(mut self, formats: &'static [Format]) -> Self {
        self.formats = formats;
        self
    }

    pub fn pre_existing(mut self, allowed: BTreeSet<String>) -> Self {
        self.must_pre_exist = Some(allowed);
        self
    }
}

/// The named rules a planned change can be blocked by. Their `as_str` names appear in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleId {
    ReadOnly,
    SetOnce,
    UnknownTag,
    UnknownCustomField,
    WouldMergeContacts,
    InvalidFormat,
    NotClearable,
    RecordNotWritable,
    /// A phone or e-mail another person holds is never written (SPEC section 10).
    HeldByOtherPerson,
    /// A create lacks a field the provider requires (SPEC section 11).
    MissingRequired,
    /// A create's key is held by a record of that provider already: a match or an ambiguity,
    /// never a duplicate.
    KeyExists,
    /// The provider is not a target of the field (its role, or the field's `targets`).
    NotATarget,
}

impl RuleId {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleId::ReadOnly => "read-only",
            RuleId::SetOnce => "set-once",
            RuleId::UnknownTag => "unknown-tag",
            RuleId::UnknownCustomField => "unknown-custom-field",
            RuleId::WouldMergeContacts => "would-merge-contacts",
            RuleId::InvalidFormat => "invalid-format",
            RuleId::NotClearable => "not-clearable",
            RuleId::RecordNotWritable => "record-not-writable",
            RuleId::HeldByOtherPerson => "held-by-other-person",
            RuleId::MissingRequired => "missing-required",
            RuleId::KeyExists => "key-exists",
            RuleId::NotATarget => "not-a-target",
        }
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change a rule forbids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub rule: RuleId,
    pub detail: String,
}

/// What [`FieldRules::admit`] allows: the value to write (if any) and the parts it blocked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Admission {
    /// The full value the record should hold after the write, or `None` when nothing is written.
    pub write: Option<FieldValue>,
    pub blocked: Vec<Blocked>,
}

/// Answers "does another record of this provider already hold this value?", for fields that
/// are unique per account. The reconciler builds one from everything it listed.
pub trait Holders {
    /// Another record (not `except`) of `provider` whose `field` has normalised value `key`.
    fn held_by_other(
        &self,
        provider: ProviderKind,
        field: Field,
        key: &str,
        except: &RecordId,
    ) -> Option<RecordId>;
}

/// A provider's complete rule table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRules {
    pub provider: ProviderKind,
    rules: BTreeMap<Field, FieldRule>,
    /// What the provider's create endpoint takes and requires (`None`: it has none).
    pub create: Option<CreateSpec>,
}

/// A create endpoint's fields (SPEC section 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateSpec {
    /// The fields it takes.
    pub fields: &'static [Field],
    /// Each group needs one of its fields present.
    pub requires: &'static [&'static [Field]],
}

impl FieldRules {
    /// The table, with the provider's create endpoint.
    pub fn with_create(
        mut self,
        fields: &'static [Field],
        requires: &'static [&'static [Field]],
    ) -> Self {
        self.create = Some(CreateSpec { fields, requires });
        self
    }

    /// A table where every field not listed is unsupported.
    pub fn new(
        provider: ProviderKind,
        rules: impl IntoIterator<Item = (Field, FieldRule)>,
    ) -> Self {
        let mut map: BTreeMap<Field, FieldRule> = Field::ALL
            .iter()
            .map(|f| (*f, FieldRule::unsupported()))
            .collect();
        map.extend(rules);
        FieldRules {
            provider,
            rules: map,
            create: None,
        }
    }

    /// The rule for `field`.
    pub fn rule(&self, field: Field) -> &FieldRule {
        // Every field is present: `new` fills the table.
        &self.rules[&field]
    }

    /// The rule for `field`, to adapt (the mapping rewrites tag and key names).
    pub fn rule_mut(&mut self, field: Field) -> &mut FieldRule {
        self.rules
            .entry(field)
            .or_insert_with(FieldRule::unsupported)
    }

    /// Whether the provider has the field at all.
    pub fn supports(&self, field: Field) -> bool {
        self.rule(field).mutability != Mutability::Unsupported
    }

    /// Whether the provider's update endpoint can ever write the field.
    pub fn can_write(&self, field: Field) -> bool {
        matches!(
            self.rule(field).mutability,
            Mutability::Writable | Mutability::SetOnceWhileNull
        )
    }

    /// Decides what of `desired` may be written to `record`, whose current value is `current`.
    ///
    /// Scalars are all-or-nothing. Sets and maps are admitted element by element: the elements a
    /// rule blocks are reported, the rest is written, and elements the record already holds are
    /// never dropped because of a rule.
    pub fn admit(
        &self,
        record: &RecordId,
        field: Field,
        current: &FieldValue,
        desired: &FieldValue,
        holders: &dyn Holders,
    ) -> Admission {
        let rule = self.rule(field);
        if current.same_as(desired) {
            return Admission::default();
        }
        match &rule.mutability {
            Mutability::Unsupported => return Admission::default(),
            Mutability::ReadOnly(why) => {
                return Admission::blocked(
                    RuleId::ReadOnly,
                    format!("{} {field}: {why}", self.provider),
                );
            }
            Mutability::Writable | Mutability::SetOnceWhileNull => {}
        }
        match (current, desired) {
            (FieldValue::Scalar(cur), FieldValue::Scalar(want)) => {
                self.admit_scalar(rule, record, field, cur.as_ref(), want.as_ref(), holders)
            }
            (FieldValue::Set(cur), FieldValue::Set(want)) => {
                self.admit_elements(rule, field, cur, want)
            }
            (FieldValue::Map(cur), FieldValue::Map(want)) => {
                self.admit_elements(rule, field, cur, want)
            }
            _ => Admission::default(),
        }
    }

    fn admit_scalar(
        &self,
        rule: &FieldRule,
        record: &RecordId,
        field: Field,
        current: Option<&Value>,
        desired: Option<&Value>,
        holders: &dyn Holders,
    ) -> Admission {
        let p = self.provider;
        let Some(want) = desired else {
            return if rule.mutability == Mutability::SetOnceWhileNull {
                Admission::blocked(
                    RuleId::SetOnce,
                    format!("{p} {field} cannot be cleared once set"),
                )
            } else if !rule.clearable {
                Admission::blocked(RuleId::NotClearable, format!("{p} cannot clear {field}"))
            } else {
                Admission::write(FieldValue::Scalar(None))
            };
        };
        if rule.mutability == Mutability::SetOnceWhileNull && current.is_some() {
            return Admission::blocked(
                RuleId::SetOnce,
                format!("{p} {field} can only be set while empty"),
            );
        }
        if let Some(problem) = format_problem(rule.formats, want) {
            return Admission::blocked(RuleId::InvalidFormat, format!("{p} {field}: {problem}"));
        }
        if rule.unique_per_account {
            if let Some(other) = holders.held_by_other(p, field, want.key(), record) {
                return Admission::blocked(
                    RuleId::WouldMergeContacts,
                    format!("{other} already holds this {field}; writing it would merge the two contacts"),
                );
            }
        }
        Admission::write(FieldValue::Scalar(Some(want.clone())))
    }

    /// Admits a set or map element by element: an element the record lacks (or, in a map,
    /// holds with another value) is added unless the account does not know it or its value is
    /// malformed; an element `desired` lacks is removed unless the rule forbids clearing.
    fn admit_elements<C: Elements>(
        &self,
        rule: &FieldRule,
        field: Field,
        current: &C,
        desired: &C,
    ) -> Admission {
        let p = self.provider;
        let mut blocked = Vec::new();
        let mut write = current.clone();
        for (key, value) in desired.differing(current) {
            // A key or tag the mapping keeps out of the sync is never written (SPEC section 12).
            if rule.not_written.contains(key.as_str()) {
                continue;
            }
            if !current.holds(key) {
                if let Some(allowed) = &rule.must_pre_exist {
                    if !allowed.contains(key.as_str()) {
                        blocked.push(Blocked {
                            rule: C::UNKNOWN,
                            detail: format!(
                                "{} {key:?} does not exist in the {p} account",
                                C::NOUN
                            ),
                        });
                        continue;
                    }
                }
            }
            if let Some(problem) = C::format_problem(rule.formats, value) {
                blocked.push(Blocked {
                    rule: RuleId::InvalidFormat,
                    detail: format!("{p} {field} {key:?}: {problem}"),
                });
                continue;
            }
            write.put(key, value);
        }
        for key in current.keys().filter(|k| !desired.holds(k)) {
            if rule.clearable {
                write.take(key);
            } else {
                blocked.push(Blocked {
                    rule: RuleId::NotClearable,
                    detail: format!("{p} cannot remove {field} {} {key:?}", C::PART),
                });
            }
        }
        let write = (&write != current).then(|| write.into_value());
        Admission { write, blocked }
    }
}

/// A field admitted element by element: the tags (a set, whose elements carry no value) or the
/// custom fields (a map from key to value).
trait Elements: Clone + PartialEq {
    /// The rule an element the account does not know breaks.
    const UNKNOWN: RuleId;
    /// What an element is called where the account does not know it.
    const NOUN: &'static str;
    /// What an element is called where it cannot be removed.
    const PART: &'static str;
    /// What an element holds beside its key: nothing for a set, the value for a map.
    type Item;

    /// The elements' keys, in order.
    fn keys(&self) -> impl Iterator<Item = &CompactString>;

    /// Whether an element with `key` is held.
    fn holds(&self, key: &str) -> bool;

    /// The elements of `self` that `current` lacks or holds with another value.
    fn differing<'s>(
        &'s self,
        current: &'s Self,
    ) -> impl Iterator<Item = (&'s CompactString, &'s Self::Item)>;

    /// What is wrong with an element's item under `formats`, if anything.
    fn format_problem(formats: &[Format], item: &Self::Item) -> Option<String>;

    /// Adds the element `key` with `item`, or sets its item.
    fn put(&mut self, key: &str, item: &Self::Item);

    /// Removes the element `key`.
    fn take(&mut self, key: &str);

    /// The whole as a field value.
    fn into_value(self) -> FieldValue;
}

impl Elements for TagSet {
    const UNKNOWN: RuleId = RuleId::UnknownTag;
    const NOUN: &'static str = "tag";
    const PART: &'static str = "element";
    type Item = ();

    fn keys(&self) -> impl Iterator<Item = &CompactString> {
        self.iter()
    }

    fn holds(&self, key: &str) -> bool {
        self.contains(key)
    }

    fn differing<'s>(
        &'s self,
        current: &'s Self,
    ) -> impl Iterator<Item = (&'s CompactString, &'s ())> {
        self.difference(current).map(|tag| (tag, &()))
    }

    /// Tags carry no value to check.
    fn format_problem(_formats: &[Format], _item: &()) -> Option<String> {
        None
    }

    fn put(&mut self, key: &str, _item: &()) {
        self.insert(key);
    }

    fn take(&mut self, key: &str) {
        self.remove(key);
    }

    fn into_value(self) -> FieldValue {
        FieldValue::Set(self)
    }
}

impl Elements for FieldMap {
    const UNKNOWN: RuleId = RuleId::UnknownCustomField;
    const NOUN: &'static str = "custom field";
    const PART: &'static str = "key";
    type Item = CompactString;

    fn keys(&self) -> impl Iterator<Item = &CompactString> {
        FieldMap::keys(self)
    }

    fn holds(&self, key: &str) -> bool {
        self.contains_key(key)
    }

    fn differing<'s>(
        &'s self,
        current: &'s Self,
    ) -> impl Iterator<Item = (&'s CompactString, &'s CompactString)> {
        self.iter()
            .filter(|&(key, value)| current.get(key) != Some(value))
    }

    fn format_problem(formats: &[Format], item: &CompactString) -> Option<String> {
        format_problem(formats, &Value::plain(item.clone()))
    }

    fn put(&mut self, key: &str, item: &CompactString) {
        self.insert(key, item.clone());
    }

    fn take(&mut self, key: &str) {
        self.remove(key);
    }

    fn into_value(self) -> FieldValue {
        FieldValue::Map(self)
    }
}

impl Admission {
    fn write(value: FieldValue) -> Self {
        Admission {
            write: Some(value),
            blocked: Vec::new(),
        }
    }

    fn blocked(rule: RuleId, detail: String) -> Self {
        Admission {
            write: None,
            blocked: vec![Blocked { rule, detail }],
        }
    }
}

fn format_problem(formats: &[Format], value: &Value) -> Option<String> {
    for format in formats {
        match format {
            Format::E164 if !is_e164(value.raw()) => {
                return Some(format!("{:?} is not an E.164 number", value.raw()));
            }
            Format::Email if !is_plausible_email(value.raw()) => {
                return Some(format!("{:?} is not a valid e-mail address", value.raw()));
            }
            Format::MaxLen(n) if value.raw().chars().count() > *n => {
                return Some(format!("longer than {n} characters"));
            }
            Format::NonBlank if value.raw().trim().is_empty() => {
                return Some("blank values are ignored by the provider".into());
            }
            _ => {}
        }
    }
    if !value.valid() {
        return Some(format!("{:?} did not parse when it was read", value.raw()));
    }
    None
}

/// A [`Holders`] that knows no values: for providers with no uniqueness rules and for tests.
pub struct NoHolders;

impl Holders for NoHolders {
    fn held_by_other(&self, _: ProviderKind, _: Field, _: &str, _: &RecordId) -> Option<RecordId> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn privy_like() -> FieldRules {
        FieldRules::new(
            ProviderKind::Privy,
            [
                (
                    Field::Email,
                    FieldRule::writable().set_once().formats(&[Format::Email]),
                ),
                (Field::Tags, FieldRule::writable()),
            ],
        )
    }

    fn scalar(s: &str) -> FieldValue {
        FieldValue::Scalar(Some(Value::plain(s)))
    }

    #[test]
    fn set_once_blocks_a_change_but_allows_a_first_value() {
        let rules = privy_like();
        let id = RecordId::new(ProviderKind::Privy, "1");
        let a = rules.admit(
            &id,
            Field::Email,
            &scalar("a@x.io"),
            &scalar("b@x.io"),
            &NoHolders,
        );
        assert_eq!(a.write, None);
        assert_eq!(a.blocked[0].rule, RuleId::SetOnce);
        let b = rules.admit(
            &id,
            Field::Email,
            &FieldValue::Scalar(None),
            &scalar("b@x.io"),
            &NoHolders,
        );
        assert_eq!(b.write, Some(scalar("b@x.io")));
        assert!(b.blocked.is_empty());
    }

    #[test]
    fn unsupported_fields_are_silently_not_written() {
        let rules = privy_like();
        let id = RecordId::new(ProviderKind::Privy, "1");
        let a = rules.admit(
            &id,
            Field::Username,
            &FieldValue::Scalar(None),
            &scalar("x"),
            &NoHolders,
        );
        assert_eq!(a, Admission::default());
    }

    #[test]
    fn unknown_tags_are_blocked_but_existing_ones_kept() {
        let allowed: BTreeSet<String> = ["vip".to_string()].into();
        let rules = FieldRules::new(
            ProviderKind::Callbell,
            [(Field::Tags, FieldRule::writable().pre_existing(allowed))],
        );
        let id = RecordId::new(ProviderKind::Callbell, "u");
        let cur = FieldValue::Set(["legacy".to_string()].into());
        let want = FieldValue::Set(["legacy".to_string(), "vip".into(), "new".into()].into());
        let a = rules.admit(&id, Field::Tags, &cur, &want, &NoHolders);
        assert_eq!(
            a.write,
            Some(FieldValue::Set(["legacy".to_string(), "vip".into()].into()))
        );
        assert_eq!(a.blocked.len(), 1);
        assert_eq!(a.blocked[0].rule, RuleId::UnknownTag);
    }

    #[test]
    fn merge_keys_cannot_remove() {
        let rules = FieldRules::new(
            ProviderKind::Chatwoot,
            [(Field::CustomFields, FieldRule::writable().merge_keys())],
        );
        let id = RecordId::new(ProviderKind::Chatwoot, "1");
        let cur = FieldValue::Map([("a".to_string(), "1".to_string())].into());
        let want = FieldValue::Map([("b".to_string(), "2".to_string())].into());
        let a = rules.admit(&id, Field::CustomFields, &cur, &want, &NoHolders);
        assert_eq!(
            a.write,
            Some(FieldValue::Map(
                [("a".to_string(), "1".to_string()), ("b".into(), "2".into())].into()
            ))
        );
        assert_eq!(a.blocked[0].rule, RuleId::NotClearable);
    }

    #[test]
    fn custom_fields_are_admitted_key_by_key() {
        let allowed: BTreeSet<String> = ["tier".to_string(), "since".into(), "old".into()].into();
        let rules = FieldRules::new(
            ProviderKind::Privy,
            [(
                Field::CustomFields,
                FieldRule::writable()
                    .pre_existing(allowed)
                    .formats(&[Format::MaxLen(4)]),
            )],
        );
        let id = RecordId::new(ProviderKind::Privy, "p");
        let map = |pairs: &[(&str, &str)]| {
            FieldValue::Map(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        let cur = map(&[("tier", "gold"), ("old", "x")]);
        let want = map(&[("tier", "platinum"), ("since", "2024"), ("zone", "eu")]);
        let a = rules.admit(&id, Field::CustomFields, &cur, &want, &NoHolders);
        // "tier" is too long and stays, "since" is added, "zone" is unknown, "old" is removed.
        assert_eq!(a.write, Some(map(&[("tier", "gold"), ("since", "2024")])));
        let rules_hit: Vec<RuleId> = a.blocked.iter().map(|b| b.rule).collect();
        assert_eq!(
            rules_hit,
            [RuleId::InvalidFormat, RuleId::UnknownCustomField]
        );
        assert_eq!(
            a.blocked[1].detail,
            "custom field \"zone\" does not exist in the privy account"
        );
    }

    #[test]
    fn tags_that_cannot_be_cleared_are_kept_and_reported() {
        let rules = FieldRules::new(
            ProviderKind::Callbell,
            [(Field::Tags, FieldRule::writable().not_clearable())],
        );
        let id = RecordId::new(ProviderKind::Callbell, "u");
        let cur = FieldValue::Set(["a".to_string(), "b".into()].into());
        let want = FieldValue::Set(["b".to_string(), "c".into()].into());
        let a = rules.admit(&id, Field::Tags, &cur, &want, &NoHolders);
        assert_eq!(
            a.write,
            Some(FieldValue::Set(
                ["a".to_string(), "b".into(), "c".into()].into()
            ))
        );
        assert_eq!(a.blocked.len(), 1);
        assert_eq!(a.blocked[0].rule, RuleId::NotClearable);
        assert_eq!(
            a.blocked[0].detail,
            format!("callbell cannot remove {} element \"a\"", Field::Tags)
        );
    }

    struct OneHolder;
    impl Holders for OneHolder {
        fn held_by_other(
            &self,
            p: ProviderKind,
            _: Field,
            key: &str,
            except: &RecordId,
        ) -> Option<RecordId> {
            (key == "taken@x.io" && except.native != "9").then(|| RecordId::new(p, "9"))
        }
    }

    #[test]
    fn unique_values_held_elsewhere_would_merge() {
        let rules = FieldRules::new(
            ProviderKind::Chatwoot,
            [(Field::Email, FieldRule::writable().unique())],
        );
        let id = RecordId::new(ProviderKind::Chatwoot, "1");
        let a = rules.admit(
            &id,
            Field::Email,
            &FieldValue::Scalar(None),
            &scalar("taken@x.io"),
            &OneHolder,
        );
        assert_eq!(a.blocked[0].rule, RuleId::WouldMergeContacts);
    }
}
