//! The plan: what a sync would send, what it would not and why, and what it decided.

use super::matcher::{Ambiguity, JoinCandidate, PersonId};
use super::Agreed;
use crate::model::{Field, FieldValue, NewContact, Patch, ProviderKind, RecordId};
use crate::provider::rules::RuleId;
use crate::provider::LookupKey;

/// Why a value was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// One record changed the field since the last sync (or several, agreeing).
    Changed { by: RecordId },
    /// Several records changed it differently; the precedence list chose this one.
    Conflict { winner: RecordId },
    /// No value was agreed yet: the first non-empty value in precedence order.
    FirstValue { from: RecordId },
    /// Nobody changed it: the value agreed at the last sync stands.
    Agreed,
    /// A set or map merged element by element.
    Merged,
    /// Read from a plan file; the text is the reason recorded when the plan was made.
    FromPlan(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Changed { by } => write!(f, "changed in {by}"),
            Reason::Conflict { winner } => write!(f, "conflict, precedence chose {winner}"),
            Reason::FirstValue { from } => write!(f, "first value, from {from}"),
            Reason::Agreed => f.write_str("agreed value"),
            Reason::Merged => f.write_str("merged element-wise"),
            Reason::FromPlan(why) => write!(f, "plan file: {why}"),
        }
    }
}

/// One planned request: every change to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub person: PersonId,
    pub patch: Patch,
    /// Why each change's value was chosen, in the order of `patch.changes`.
    pub reasons: Vec<Reason>,
}

impl Update {
    pub fn provider(&self) -> ProviderKind {
        self.patch.record.provider
    }
}

/// One planned create: a contact for a person the provider lacks (SPEC section 11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Create {
    pub person: PersonId,
    /// The provider and every value to send.
    pub new: NewContact,
    /// The key journaled with the create and looked up before an unknown outcome is retried:
    /// the phone, else the e-mail.
    pub key: Option<LookupKey>,
    pub reason: String,
}

impl Create {
    pub fn provider(&self) -> ProviderKind {
        self.new.provider
    }
}

/// A create that is not planned, and the rule why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSkip {
    pub person: PersonId,
    pub provider: ProviderKind,
    pub rule: RuleId,
    pub detail: String,
}

/// A change a rule forbids: reported, not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub person: PersonId,
    pub record: RecordId,
    pub field: Field,
    pub current: FieldValue,
    pub wanted: FieldValue,
    pub rule: RuleId,
    pub detail: String,
}

/// Records that changed a field differently since the last sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub person: PersonId,
    pub field: Field,
    /// The tag or custom-field key, for sets and maps.
    pub key: Option<String>,
    /// Each changer and the value it holds (as shown to people).
    pub candidates: Vec<(RecordId, String)>,
    pub winner: RecordId,
}

/// A person left out of the sync by `[scope]` (an excluded tag, or a blocked Chatwoot contact):
/// neither merged nor written, and nothing about them is remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excluded {
    pub person: PersonId,
    pub records: Vec<RecordId>,
    /// Which record put the person out of scope, and by which setting.
    pub reason: String,
}

/// What the plan decided for one person, persisted after the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonPlan {
    pub person: PersonId,
    pub records: Vec<RecordId>,
    pub agreed: Agreed,
}

/// The reconciler's output. Every list is sorted, so equal inputs give equal plans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub updates: Vec<Update>,
    /// Contacts to create, by provider then person.
    pub creates: Vec<Create>,
    /// Creates that were not planned, with the rule why.
    pub create_skips: Vec<CreateSkip>,
    pub skipped: Vec<Skip>,
    pub conflicts: Vec<Conflict>,
    pub ambiguous: Vec<Ambiguity>,
    /// People whose records now share a phone or e-mail: not joined, reported.
    pub join_candidates: Vec<JoinCandidate>,
    /// Per provider and field: how many records differ from the agreed value but are not
    /// written, because the provider is not a target of the field (its role, or the field's
    /// `targets`). Rule `not-a-target`, reported once per provider and field.
    pub untargeted: std::collections::BTreeMap<(ProviderKind, Field), usize>,
    /// People out of scope, once each, in person order.
    pub excluded: Vec<Excluded>,
    pub people: Vec<PersonPlan>,
}

impl Plan {
    /// Whether the plan would send nothing.
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty() && self.creates.is_empty()
    }

    /// Planned updates for one provider.
    pub fn updates_for(&self, provider: ProviderKind) -> impl Iterator<Item = &Update> {
        self.updates
            .iter()
            .filter(move |u| u.provider() == provider)
    }
}
