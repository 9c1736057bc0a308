//! Reconciliation policy: who wins, which fields sync, whether clears propagate.
//!
//! A validated type like the rest of `config`, which builds it from `[policy]` and the
//! providers' roles; the reconciler reads it (re-exported as `reconcile::Policy`).

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Contact, Field, ProviderKind};

/// The policy the reconciler applies. Built from `[policy]` in config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Default precedence: earlier providers win conflicts. Always lists all four providers.
    pub precedence: Vec<ProviderKind>,
    /// Per-field precedence overrides.
    pub field_precedence: BTreeMap<Field, Vec<ProviderKind>>,
    /// Fields that are synced at all.
    pub synced: BTreeSet<Field>,
    /// Whether a value cleared in one provider is cleared everywhere.
    pub propagate_clears: bool,
    /// Per field, the only providers whose edits count (`[policy.fields.NAME] sources`); a
    /// field absent here takes edits from every provider.
    pub field_sources: BTreeMap<Field, BTreeSet<ProviderKind>>,
    /// Per field, the only providers written (`[policy.fields.NAME] targets`).
    pub field_targets: BTreeMap<Field, BTreeSet<ProviderKind>>,
    /// Providers with `role = "target"`: written, but their own edits never count.
    pub write_only: BTreeSet<ProviderKind>,
    /// Providers with `role = "source"`: read, never written nor created in.
    pub read_only: BTreeSet<ProviderKind>,
    /// `[scope] exclude_tags`, as common tags: a person holding one in any provider is left
    /// out of the sync entirely (SPEC section 12).
    pub exclude_tags: BTreeSet<String>,
    /// Chatwoot's `skip_blocked`: a person with a blocked record is left out of the sync.
    pub skip_blocked: bool,
    /// Providers with `create = true`, and which people are created there.
    pub creates: BTreeMap<ProviderKind, CreateFilter>,
}

/// Which people a provider's creates are for (`create_filter`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateFilter {
    /// Fields the person must have.
    pub require: BTreeSet<Field>,
    /// The person's agreed tags must hold one of these (empty: no condition).
    pub tags_any: BTreeSet<String>,
    /// The person's agreed tags must hold none of these.
    pub tags_none: BTreeSet<String>,
    /// Only people with a record in one of these providers (empty: no condition).
    pub from: BTreeSet<ProviderKind>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            precedence: complete_precedence(&[
                ProviderKind::Chatwoot,
                ProviderKind::Privy,
                ProviderKind::Callbell,
                ProviderKind::Protocol,
            ]),
            field_precedence: BTreeMap::new(),
            synced: Field::ALL.into_iter().collect(),
            propagate_clears: false,
            field_sources: BTreeMap::new(),
            field_targets: BTreeMap::new(),
            write_only: BTreeSet::new(),
            read_only: BTreeSet::new(),
            exclude_tags: BTreeSet::new(),
            skip_blocked: true,
            creates: BTreeMap::new(),
        }
    }
}

impl Policy {
    /// The precedence order for `field`.
    pub fn precedence(&self, field: Field) -> &[ProviderKind] {
        self.field_precedence
            .get(&field)
            .map_or(&self.precedence, |p| p)
    }

    /// Whether `provider`'s edits of `field` count (its role and the field's `sources`).
    pub fn is_source(&self, field: Field, provider: ProviderKind) -> bool {
        !self.write_only.contains(&provider)
            && self
                .field_sources
                .get(&field)
                .is_none_or(|s| s.contains(&provider))
    }

    /// Whether `provider` is written for `field` (its role and the field's `targets`).
    pub fn is_target(&self, field: Field, provider: ProviderKind) -> bool {
        !self.read_only.contains(&provider)
            && self
                .field_targets
                .get(&field)
                .is_none_or(|s| s.contains(&provider))
    }

    /// Why the person holding `records` is out of scope, or `None` when they are synced.
    pub fn excluded<'c>(&self, records: impl IntoIterator<Item = &'c Contact>) -> Option<String> {
        for c in records {
            if self.skip_blocked && c.blocked {
                return Some(format!("{} is blocked (skip_blocked)", c.id));
            }
            if !self.exclude_tags.is_empty() {
                if let Some(tag) = c
                    .tags
                    .iter()
                    .find(|t| self.exclude_tags.contains(t.as_str()))
                {
                    return Some(format!("{} holds tag {tag:?} (exclude_tags)", c.id));
                }
            }
        }
        None
    }

    /// Rank of `provider` for `field` (0 = highest precedence).
    pub fn rank(&self, field: Field, provider: ProviderKind) -> usize {
        self.precedence(field)
            .iter()
            .position(|p| *p == provider)
            .unwrap_or(usize::MAX)
    }
}

/// `order` followed by any provider it leaves out, in the default report order.
pub fn complete_precedence(order: &[ProviderKind]) -> Vec<ProviderKind> {
    let mut out = order.to_vec();
    for p in ProviderKind::ALL {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}
