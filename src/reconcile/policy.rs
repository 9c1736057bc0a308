//! Reconciliation policy: who wins, which fields sync, whether clears propagate.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Field, ProviderKind};

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
