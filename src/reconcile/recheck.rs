//! Checks the writes of a plan file again on a fresh listing, right before they are applied
//! (issue 9 item 7): the provider rules and the identity rules are asked about each change as if
//! it were planned now, so a value someone else took since the plan was made (a Chatwoot e-mail,
//! a phone now held by another person) is skipped with its rule instead of written.

use std::collections::HashMap;

use super::{matcher, KeyOwners, Memory, PlanHolders, RuleBook, Skip, Update};
use crate::model::{Contact, RecordId};
use crate::provider::rules::{Blocked, RuleId};

/// Removes from `updates` every change the rules forbid on `records` (the fresh listing) and
/// returns the skips; an update left with no change is removed. `memory` gives the links the
/// matcher needs to know whose records hold a key.
pub fn recheck(
    records: &[Contact],
    memory: &Memory,
    rules: &RuleBook,
    updates: &mut Vec<Update>,
) -> Vec<Skip> {
    let linked = super::index::join(records, &memory.links);
    let matching = matcher::match_linked(records, &linked, &memory.steering, &|p| {
        memory.agreed.contains_key(p)
    });
    let owners = KeyOwners::new(records, &matching.group_of);
    let holders = PlanHolders::new(records, rules);
    let index: HashMap<&RecordId, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (&r.id, i))
        .collect();
    let mut skipped = Vec::new();
    updates.retain_mut(|u| {
        let Some(&i) = index.get(&u.patch.record) else {
            return true;
        };
        let Some(table) = rules.get(u.provider()) else {
            return true;
        };
        let group = matching.group_of[i];
        let current_record = &records[i];
        let mut kept = Vec::new();
        let mut reasons = Vec::new();
        for (change, reason) in u.patch.changes.drain(..).zip(u.reasons.drain(..)) {
            let current = current_record.get(change.field);
            let admission = table.admit(
                &u.patch.record,
                change.field,
                &current,
                &change.new,
                &holders,
            );
            let mut blocked: Vec<Blocked> = Vec::new();
            if admission.write.as_ref() != Some(&change.new) {
                blocked.extend(admission.blocked);
                if blocked.is_empty() {
                    blocked.push(Blocked {
                        rule: RuleId::ReadOnly,
                        detail: "the rules no longer allow this value".into(),
                    });
                }
            } else if let Some(holder) =
                owners.held_by_other_person(change.field, &change.new, group)
            {
                blocked.push(Blocked {
                    rule: RuleId::HeldByOtherPerson,
                    detail: format!(
                        "{holder} holds this {} now and is not {}; not written",
                        change.field, u.person
                    ),
                });
            }
            if blocked.is_empty() {
                kept.push(change);
                reasons.push(reason);
            } else {
                for Blocked { rule, detail } in blocked {
                    skipped.push(Skip {
                        person: u.person.clone(),
                        record: u.patch.record.clone(),
                        field: change.field,
                        current: current.clone(),
                        wanted: change.new.clone(),
                        rule,
                        detail,
                    });
                }
            }
        }
        u.patch.changes = kept;
        u.reasons = reasons;
        !u.patch.changes.is_empty()
    });
    skipped
}
