//! Validation of `[mapping]`, `[scope]`, the per-field `sources` / `targets` of
//! `[policy.fields.NAME]` and Chatwoot's `skip_blocked` (SPEC section 12).
//!
//! Each check needs to know which providers are configured, so this runs after the provider
//! sections are validated. Every problem is pushed with its dotted key (and so its line).

use std::collections::{BTreeMap, BTreeSet};

use super::policy::Policy;
use super::raw::RawConfig;
use super::{ChatwootUpdateApi, Errors, ProviderConfig, ProviderSpecific};
use crate::model::{Field, ProviderKind};
use std::borrow::Cow;

/// What happens to a custom-field key no `[mapping.custom_fields]` entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unmapped {
    /// It syncs under its own name between the providers that spell it alike.
    #[default]
    Sync,
    /// It is neither read nor written anywhere.
    Ignore,
}

/// The validated `[mapping]` section: per common name, each provider's own name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    /// Common custom-field key → provider → that provider's key.
    pub custom_fields: BTreeMap<String, BTreeMap<ProviderKind, String>>,
    /// Common tag → provider → that provider's tag.
    pub tags: BTreeMap<String, BTreeMap<ProviderKind, String>>,
    /// What happens to custom-field keys no mapping names.
    pub unmapped_custom_fields: Unmapped,
    /// Whether tags compare without case.
    pub tags_case_insensitive: bool,
}

impl Mapping {
    /// Whether the mapping changes nothing: every key and tag keeps its own name.
    pub fn is_identity(&self) -> bool {
        self.custom_fields.is_empty()
            && self.tags.is_empty()
            && self.unmapped_custom_fields == Unmapped::Sync
            && !self.tags_case_insensitive
    }

    /// A tag in the form tags compare by: lower-case when `tags_case_insensitive`.
    pub fn fold_tag<'s>(&self, tag: &'s str) -> Cow<'s, str> {
        fold(self.tags_case_insensitive, tag)
    }

    /// `kind`'s view of the mapping.
    pub fn for_provider(&self, kind: ProviderKind) -> ProviderMapping {
        ProviderMapping {
            fields: KeyMap::new(kind, &self.custom_fields, false),
            tags: KeyMap::new(kind, &self.tags, self.tags_case_insensitive),
            ignore_unmapped_fields: self.unmapped_custom_fields == Unmapped::Ignore,
            fold_tags: self.tags_case_insensitive,
            identity: self.is_identity(),
        }
    }
}

pub(crate) fn fold(on: bool, s: &str) -> Cow<'_, str> {
    if on && s.chars().any(char::is_uppercase) {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// One provider's names for one kind of key (custom fields or tags), both ways.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct KeyMap {
    /// Provider name (folded, for case-insensitive tags) → common name.
    to_common: BTreeMap<String, String>,
    /// Common name → the provider's own spelling.
    to_provider: BTreeMap<String, String>,
    /// Common names never written to this provider: mapped for others but not for it, or
    /// spelled like one of its own mapped keys (which would read back as another name).
    absent: BTreeSet<String>,
    fold: bool,
}

impl KeyMap {
    fn new(
        kind: ProviderKind,
        entries: &BTreeMap<String, BTreeMap<ProviderKind, String>>,
        fold_names: bool,
    ) -> Self {
        let mut m = KeyMap {
            fold: fold_names,
            ..KeyMap::default()
        };
        for (common, per) in entries {
            let common = fold(fold_names, common).into_owned();
            match per.get(&kind) {
                Some(own) => {
                    m.to_common
                        .insert(fold(fold_names, own).into_owned(), common.clone());
                    m.to_provider.insert(common, own.clone());
                }
                None => {
                    m.absent.insert(common);
                }
            }
        }
        let collisions: Vec<String> = m
            .to_common
            .keys()
            .filter(|k| !m.to_provider.contains_key(*k))
            .cloned()
            .collect();
        m.absent.extend(collisions);
        m
    }

    /// The common name of provider name `name`, or `None` when it is not synced.
    fn inbound(&self, name: &str, ignore_unmapped: bool) -> Option<String> {
        let name = fold(self.fold, name);
        if let Some(common) = self.to_common.get(name.as_ref()) {
            return Some(common.clone());
        }
        let taken =
            self.absent.contains(name.as_ref()) || self.to_provider.contains_key(name.as_ref());
        (!ignore_unmapped && !taken).then(|| name.into_owned())
    }

    /// The provider name of common name `common`, or `None` when it is not written here.
    /// `Cow::Borrowed` means the common name itself (before any spelling lookup).
    fn outbound<'c>(&self, common: &'c str, ignore_unmapped: bool) -> Option<Cow<'c, str>> {
        if let Some(own) = self.to_provider.get(common) {
            return Some(Cow::Owned(own.clone()));
        }
        (!ignore_unmapped && !self.absent.contains(common)).then_some(Cow::Borrowed(common))
    }
}

/// One provider's view of the [`Mapping`]: pure translations between its names and the common
/// names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderMapping {
    fields: KeyMap,
    tags: KeyMap,
    ignore_unmapped_fields: bool,
    fold_tags: bool,
    identity: bool,
}

impl Default for ProviderMapping {
    fn default() -> Self {
        Mapping::default().for_provider(ProviderKind::Protocol)
    }
}

impl ProviderMapping {
    /// Whether every key and tag keeps its own name (nothing to translate).
    pub fn is_identity(&self) -> bool {
        self.identity
    }

    /// Whether tags compare without case.
    pub fn folds_tags(&self) -> bool {
        self.fold_tags
    }

    /// The common key of the provider's custom-field key `key`, or `None` when it is not synced.
    pub fn field_in(&self, key: &str) -> Option<String> {
        self.fields.inbound(key, self.ignore_unmapped_fields)
    }

    /// The provider's key for common custom-field key `common`, or `None` when it is not
    /// written to this provider.
    pub fn field_out<'c>(&self, common: &'c str) -> Option<Cow<'c, str>> {
        self.fields.outbound(common, self.ignore_unmapped_fields)
    }

    /// The common tag of the provider's tag `tag` (lower-case when tags compare without case),
    /// or `None` when it is not synced.
    pub fn tag_in(&self, tag: &str) -> Option<String> {
        self.tags.inbound(tag, false)
    }

    /// The provider's tag for common tag `common`, or `None` when it is not written to this
    /// provider. `Cow::Borrowed` means no mapping names it: the caller may pick the account's
    /// own spelling (see `provider::mapping::Boundary`).
    pub fn tag_out<'c>(&self, common: &'c str) -> Option<Cow<'c, str>> {
        self.tags.outbound(common, false)
    }

    /// Common tags never written to this provider (mapped for others only).
    pub fn absent_tags(&self) -> &BTreeSet<String> {
        &self.tags.absent
    }

    /// Common custom-field keys never written to this provider (mapped for others only).
    pub fn absent_fields(&self) -> &BTreeSet<String> {
        &self.fields.absent
    }
}

/// Validates the mapping and scope keys, completing `policy` with `sources`, `targets`,
/// `exclude_tags` and `skip_blocked`; returns the mapping.
pub(super) fn validate(
    raw: &RawConfig,
    providers: &[ProviderConfig],
    policy: &mut Policy,
    e: &mut Errors<'_>,
) -> Mapping {
    let configured: BTreeSet<ProviderKind> = providers.iter().map(|p| p.kind).collect();
    let m = &raw.mapping;
    let unmapped = match m.unmapped_custom_fields.as_str() {
        "sync" => Unmapped::Sync,
        "ignore" => Unmapped::Ignore,
        other => {
            e.push(
                "mapping.unmapped_custom_fields",
                format!("{other:?} is not \"sync\" or \"ignore\""),
            );
            Unmapped::Sync
        }
    };
    let ci = m.tags_case_insensitive;
    let callbell = providers.iter().find_map(|p| match &p.specific {
        ProviderSpecific::Callbell {
            known_tags,
            known_custom_fields,
            ..
        } => Some((known_tags, known_custom_fields)),
        _ => None,
    });
    // Chatwoot adds only `known_labels`, and only through the application API.
    let chatwoot_labels = providers.iter().find_map(|p| match &p.specific {
        ProviderSpecific::Chatwoot {
            known_labels,
            update_api: ChatwootUpdateApi::Application,
            ..
        } => Some(known_labels),
        _ => None,
    });
    let fold = |s: &str| fold(ci, s).into_owned();

    let custom_fields = entries(
        "mapping.custom_fields",
        "custom field",
        &m.custom_fields,
        &configured,
        |s| s.to_owned(),
        |kind, key| {
            match (kind, callbell) {
            (ProviderKind::Protocol, _) => Some("Protocol has no custom fields".to_owned()),
            (ProviderKind::Callbell, Some((_, known))) if !known.contains(key) => Some(format!(
                "{key:?} is not in `providers.callbell.known_custom_fields`; Callbell only takes keys that exist in the account"
            )),
            _ => None,
        }
        },
        e,
    );
    let tags = entries(
        "mapping.tags",
        "tag",
        &m.tags,
        &configured,
        fold,
        |kind, tag| {
            match (kind, callbell) {
            (ProviderKind::Protocol, _) => Some("Protocol has no tags".to_owned()),
            (ProviderKind::Callbell, Some((known, _)))
                if !known.iter().any(|k| fold(k) == fold(tag)) =>
            {
                Some(format!(
                    "{tag:?} is not in `providers.callbell.known_tags`; Callbell only takes tags that exist in the account"
                ))
            }
            (ProviderKind::Chatwoot, _)
                if chatwoot_labels.is_some_and(|known| !known.iter().any(|k| fold(k) == fold(tag))) =>
            {
                Some(format!(
                    "{tag:?} is not in `providers.chatwoot.known_labels`; Chatwoot is given only labels the account has"
                ))
            }
            _ => None,
        }
        },
        e,
    );

    for (i, tag) in raw.scope.exclude_tags.iter().enumerate() {
        if tag.trim().is_empty() {
            e.push("scope.exclude_tags", format!("entry {} is empty", i + 1));
        } else {
            policy.exclude_tags.insert(fold(tag));
        }
    }
    // A create filter's tags compare with the agreed tags, which are in the fold too.
    for filter in policy.creates.values_mut() {
        for set in [&mut filter.tags_any, &mut filter.tags_none] {
            *set = set.iter().map(|t| fold(t)).collect();
        }
    }
    if let Some(c) = &raw.providers.chatwoot {
        policy.skip_blocked = c.skip_blocked;
    }

    for (name, fp) in &raw.policy.fields {
        let Ok(field) = name.parse::<Field>() else {
            continue; // Reported with `policy.fields`.
        };
        let key = format!("policy.fields.{name}");
        if let Some(list) = &fp.sources {
            let set = provider_set(&format!("{key}.sources"), list, &configured, e);
            policy.field_sources.insert(field, set);
        }
        if let Some(list) = &fp.targets {
            let set = provider_set(&format!("{key}.targets"), list, &configured, e);
            policy.field_targets.insert(field, set);
        }
    }

    Mapping {
        custom_fields,
        tags,
        unmapped_custom_fields: unmapped,
        tags_case_insensitive: ci,
    }
}

/// Validates one mapping table (`[mapping.custom_fields]` or `[mapping.tags]`): known and
/// configured providers, non-empty names, no provider name mapped twice (after `fold`), no two
/// common names alike (after `fold`), and what `provider_problem` says of each name.
fn entries(
    table: &str,
    what: &str,
    raw: &BTreeMap<String, BTreeMap<String, String>>,
    configured: &BTreeSet<ProviderKind>,
    fold: impl Fn(&str) -> String,
    provider_problem: impl Fn(ProviderKind, &str) -> Option<String>,
    e: &mut Errors<'_>,
) -> BTreeMap<String, BTreeMap<ProviderKind, String>> {
    let mut out = BTreeMap::new();
    let mut commons: BTreeMap<String, &str> = BTreeMap::new();
    let mut used: BTreeMap<(ProviderKind, String), &str> = BTreeMap::new();
    for (common, per) in raw {
        let key = format!("{table}.{common}");
        if common.trim().is_empty() {
            e.push(key.clone(), format!("a common {what} name cannot be empty"));
            continue;
        }
        if let Some(other) = commons.insert(fold(common), common) {
            e.push(
                key.clone(),
                format!("{common:?} and {other:?} are the same {what} (tags compare without case)"),
            );
            continue;
        }
        let mut names = BTreeMap::new();
        for (provider, own) in per {
            let pkey = format!("{key}.{provider}");
            let kind = match provider.parse::<ProviderKind>() {
                Ok(k) => k,
                Err(msg) => {
                    e.push(pkey, msg);
                    continue;
                }
            };
            if !configured.contains(&kind) {
                e.push(
                    pkey,
                    format!("{kind} is not configured (no `[providers.{kind}]` section)"),
                );
                continue;
            }
            if own.trim().is_empty() {
                e.push(pkey, format!("the {kind} {what} name cannot be empty"));
                continue;
            }
            if let Some(problem) = provider_problem(kind, own) {
                e.push(pkey, problem);
                continue;
            }
            if let Some(first) = used.insert((kind, fold(own)), common) {
                e.push(
                    pkey,
                    format!("{kind} {what} {own:?} is mapped twice (also by `{table}.{first}`)"),
                );
                continue;
            }
            names.insert(kind, own.clone());
        }
        out.insert(common.clone(), names);
    }
    out
}

/// A `sources` / `targets` list: known, configured providers, each once.
fn provider_set(
    key: &str,
    list: &[String],
    configured: &BTreeSet<ProviderKind>,
    e: &mut Errors<'_>,
) -> BTreeSet<ProviderKind> {
    let mut out = BTreeSet::new();
    for name in list {
        match name.parse::<ProviderKind>() {
            Ok(p) if !configured.contains(&p) => e.push(
                key,
                format!("{p} is not configured (no `[providers.{p}]` section)"),
            ),
            Ok(p) if !out.insert(p) => e.push(key, format!("`{name}` is listed twice")),
            Ok(_) => {}
            Err(msg) => e.push(key, msg),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Unmapped;
    use crate::config::{Config, ConfigError};
    use crate::model::{Field, ProviderKind};

    const PROVIDERS: &str = "[providers.privy]\nbase_url = \"http://127.0.0.1:1\"\ntoken_env = \"P\"\n[providers.callbell]\nbase_url = \"http://127.0.0.1:1/v1\"\ntoken_env = \"C\"\nknown_tags = [\"vip\"]\nknown_custom_fields = [\"Loyalty Tier\"]\n";

    fn errors(text: &str) -> Vec<ConfigError> {
        Config::parse(text, "c.toml").expect_err("invalid").0
    }

    #[test]
    fn a_valid_mapping_and_scope_reach_the_config_and_policy() {
        let text = format!(
            "{PROVIDERS}[mapping]\nunmapped_custom_fields = \"ignore\"\ntags_case_insensitive = true\n[mapping.custom_fields]\nloyalty_tier = {{ privy = \"loyalty_tier\", callbell = \"Loyalty Tier\" }}\n[mapping.tags]\nvip = {{ privy = \"VIP\", callbell = \"vip\" }}\n[scope]\nexclude_tags = [\"No-Sync\"]\n[policy.fields.email]\nsources = [\"privy\"]\ntargets = [\"privy\"]\n"
        );
        let c = Config::parse(&text, "c.toml").expect("valid");
        assert_eq!(c.mapping.unmapped_custom_fields, Unmapped::Ignore);
        assert_eq!(
            c.mapping.custom_fields["loyalty_tier"][&ProviderKind::Callbell],
            "Loyalty Tier"
        );
        assert_eq!(c.mapping.tags["vip"][&ProviderKind::Privy], "VIP");
        assert!(c.policy.exclude_tags.contains("no-sync"));
        assert!(c.policy.skip_blocked);
        assert!(!c.policy.is_source(Field::Email, ProviderKind::Callbell));
        assert!(c.policy.is_target(Field::Email, ProviderKind::Privy));
        assert!(!c.policy.is_target(Field::Email, ProviderKind::Callbell));
    }

    /// With `tags_case_insensitive`, a create filter's tags are folded like the tags they are
    /// compared with, so `tags_any = ["VIP"]` matches a person tagged `vip` anywhere.
    #[test]
    fn create_filter_tags_fold_with_the_mapping() {
        let text = format!(
            "{PROVIDERS}create = true\ncreate_source = \"whatsapp\"\ncreate_filter = {{ tags_any = [\"VIP\"], tags_none = [\"No-Sync\"] }}\n[mapping]\ntags_case_insensitive = true\n"
        );
        let c = Config::parse(&text, "c.toml").expect("valid");
        let f = &c.policy.creates[&ProviderKind::Callbell];
        assert!(f.tags_any.contains("vip"), "{:?}", f.tags_any);
        assert!(f.tags_none.contains("no-sync"), "{:?}", f.tags_none);
        let exact = Config::parse(
            &format!("{PROVIDERS}create = true\ncreate_source = \"whatsapp\"\ncreate_filter = {{ tags_any = [\"VIP\"] }}\n"),
            "c.toml",
        )
        .expect("valid");
        assert!(exact.policy.creates[&ProviderKind::Callbell]
            .tags_any
            .contains("VIP"));
    }

    #[test]
    fn check_config_names_every_bad_mapping_with_its_key_and_line() {
        let text = format!(
            "{PROVIDERS}[mapping]\nunmapped_custom_fields = \"drop\"\n[mapping.custom_fields]\nloyalty_tier = {{ privy = \"loyalty_tier\", chatwoot = \"tier\" }}\npoints = {{ privy = \"loyalty_tier\", callbell = \"Points\" }}\n[mapping.tags]\nvip = {{ callbell = \"gold\", privy = \"VIP\", nope = \"x\" }}\n[policy.fields.email]\nsources = [\"protocol\"]\n"
        );
        let errs = errors(&text);
        let got: Vec<(&str, Option<usize>)> =
            errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        let want = [
            ("mapping.unmapped_custom_fields", Some(10)),
            ("mapping.custom_fields.loyalty_tier.chatwoot", Some(12)),
            ("mapping.custom_fields.points.privy", Some(13)),
            ("mapping.custom_fields.points.callbell", Some(13)),
            ("mapping.tags.vip.callbell", Some(15)),
            ("mapping.tags.vip.nope", Some(15)),
            ("policy.fields.email.sources", Some(17)),
        ];
        for w in want {
            assert!(got.contains(&w), "{w:?} missing from {got:?}");
        }
        let msg = |k: &str| {
            errs.iter()
                .find(|e| e.key == k)
                .map(|e| e.message.clone())
                .unwrap_or_default()
        };
        assert!(msg("mapping.custom_fields.loyalty_tier.chatwoot").contains("not configured"));
        assert!(msg("mapping.custom_fields.points.privy").contains("mapped twice"));
        assert!(msg("mapping.custom_fields.points.callbell").contains("known_custom_fields"));
        assert!(msg("mapping.tags.vip.callbell").contains("known_tags"));
        assert!(msg("policy.fields.email.sources").contains("protocol is not configured"));
        assert!(Config::parse(&text, "c.toml")
            .expect_err("invalid")
            .to_string()
            .contains("c.toml:13: `mapping.custom_fields.points.privy`"));
    }

    #[test]
    fn tags_alike_without_case_are_one_tag() {
        let text = format!(
            "{PROVIDERS}[mapping]\ntags_case_insensitive = true\n[mapping.tags]\nvip = {{ privy = \"VIP\" }}\nVIP = {{ privy = \"gold\" }}\ngold = {{ privy = \"Gold\" }}\n"
        );
        let keys: Vec<String> = errors(&text).into_iter().map(|e| e.key).collect();
        assert!(keys.iter().any(|k| k == "mapping.tags.vip"), "{keys:?}");
        assert!(
            keys.iter().any(|k| k == "mapping.tags.gold.privy"),
            "{keys:?}"
        );
    }

    #[test]
    fn the_example_config_documents_and_uses_every_mapping_and_scope_key() {
        let c = Config::parse(crate::config::EXAMPLE, "example").expect("valid");
        assert_eq!(
            c.mapping.custom_fields["loyalty_tier"].len(),
            3,
            "one field under three names"
        );
        assert_eq!(c.mapping.tags["vip"][&ProviderKind::Privy], "VIP");
        assert!(c.policy.exclude_tags.contains("no-sync"));
        assert!(!c.policy.is_source(Field::Email, ProviderKind::Protocol));
        for key in [
            "unmapped_custom_fields",
            "tags_case_insensitive",
            "[mapping.custom_fields]",
            "[mapping.tags]",
            "exclude_tags",
            "skip_blocked",
            "sources",
            "targets",
        ] {
            assert!(
                crate::config::EXAMPLE.contains(key),
                "{key} is not documented"
            );
        }
    }

    #[test]
    fn a_chatwoot_label_must_be_known_in_application_mode() {
        let chatwoot = "[providers.chatwoot]\nbase_url = \"http://127.0.0.1:1\"\ntoken_env = \"T\"\naccount_id = 1\ninbox_id = 1\nknown_labels = [\"vip\"]\n";
        let text = format!("{chatwoot}[mapping.tags]\nvip = {{ chatwoot = \"vip\" }}\ngold = {{ chatwoot = \"gold\" }}\n");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "mapping.tags.gold.chatwoot");
        assert!(
            errs[0].message.contains("known_labels"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn skip_blocked_can_be_turned_off() {
        let text = "[providers.chatwoot]\nbase_url = \"http://127.0.0.1:1\"\ntoken_env = \"T\"\naccount_id = 1\ninbox_id = 1\ninbox_identifier_env = \"I\"\nskip_blocked = false\n";
        let c = Config::parse(text, "c.toml").expect("valid");
        assert!(!c.policy.skip_blocked);
    }
}
