//! Validation of `[mapping]`, `[scope]`, the per-field `sources` / `targets` of
//! `[policy.fields.NAME]` and Chatwoot's `skip_blocked` (SPEC section 12).
//!
//! Each check needs to know which providers are configured, so this runs after the provider
//! sections are validated. Every problem is pushed with its dotted key (and so its line).

use std::collections::{BTreeMap, BTreeSet};

use super::raw::RawConfig;
use super::{ChatwootUpdateApi, Errors, ProviderConfig, ProviderSpecific};
use crate::model::{Field, ProviderKind};
use crate::provider::mapping::{Mapping, Unmapped};
use crate::reconcile::Policy;

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
    let fold = |s: &str| if ci { s.to_lowercase() } else { s.to_owned() };

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
    use crate::config::{Config, ConfigError};
    use crate::model::{Field, ProviderKind};
    use crate::provider::mapping::Unmapped;

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
