//! Creates: a contact for every person a provider with `create = true` lacks (SPEC section 11).
//!
//! Pure, like the rest of the planner. A person gets one create per such provider when it
//! passes the provider's `create_filter` and has every field the provider requires; the create
//! carries every field the provider takes, its rules allow and the policy targets, with the
//! person's agreed values. Never a duplicate: a create whose phone or e-mail a record of that
//! provider already holds is a match or an ambiguity, not a create (`key-exists`); a key another
//! person holds is not spread (`held-by-other-person`); two creates of one run never carry the
//! same key.

use std::collections::HashSet;

use super::matcher::Matching;
use super::plan::{Create, CreateSkip, PersonPlan};
use super::{KeyOwners, Policy, RuleBook};
use crate::model::{Field, FieldValue, NewContact, ProviderKind, RecordId};
use crate::provider::rules::{NoHolders, RuleId};
use crate::provider::LookupKey;

/// Plans the creates of `people` (in person order, so the first person in that order gets a
/// contested key).
pub(super) fn plan_creates(
    people: &[PersonPlan],
    matching: &Matching,
    policy: &Policy,
    rules: &RuleBook,
    owners: &KeyOwners<'_>,
) -> (Vec<Create>, Vec<CreateSkip>) {
    let mut creates = Vec::new();
    let mut skipped = Vec::new();
    if policy.creates.is_empty() {
        return (creates, skipped);
    }
    let mut claimed: HashSet<(ProviderKind, Field, String)> = HashSet::new();
    for (rank, person) in people.iter().enumerate() {
        let group = matching.by_person.get(rank).copied().unwrap_or(u32::MAX);
        let present: u8 = person.records.iter().fold(0, |m, r| m | r.provider.bit());
        for (&provider, filter) in &policy.creates {
            if present & provider.bit() != 0 || policy.read_only.contains(&provider) {
                continue;
            }
            let Some(table) = rules.get(provider) else {
                continue;
            };
            let Some(spec) = table.create else {
                continue;
            };
            let agreed = |f: Field| person.agreed.get(&f).filter(|v| !v.is_empty());
            let tags = match person.agreed.get(&Field::Tags) {
                Some(FieldValue::Set(t)) => Some(t),
                _ => None,
            };
            let passes = (filter.from.is_empty()
                || person
                    .records
                    .iter()
                    .any(|r| filter.from.contains(&r.provider)))
                && filter.require.iter().all(|f| agreed(*f).is_some())
                && (filter.tags_any.is_empty()
                    || tags.is_some_and(|t| filter.tags_any.iter().any(|x| t.contains(x))))
                && !tags.is_some_and(|t| filter.tags_none.iter().any(|x| t.contains(x)));
            if !passes {
                continue;
            }
            let skip = |rule: RuleId, detail: String| CreateSkip {
                person: person.person.clone(),
                provider,
                rule,
                detail,
            };
            let new_id = RecordId::new(provider, "");
            let mut fields: Vec<(Field, FieldValue)> = Vec::new();
            for &field in spec.fields {
                if !policy.synced.contains(&field) || !policy.is_target(field, provider) {
                    continue;
                }
                let Some(value) = agreed(field) else { continue };
                if let FieldValue::Scalar(Some(v)) = value {
                    if !v.valid() {
                        continue;
                    }
                }
                let empty = FieldValue::empty_for(field);
                let admission = table.admit(&new_id, field, &empty, value, &NoHolders);
                let value = match admission.write {
                    Some(w) if !w.is_empty() => w,
                    Some(_) => continue,
                    // A value the update endpoint may not change (Callbell's phone is its
                    // identity) is still what a create is made of, when its format is right.
                    None if admission.blocked.iter().all(|b| b.rule == RuleId::ReadOnly) => {
                        value.clone()
                    }
                    None => continue,
                };
                fields.push((field, value));
            }
            let has = |f: Field| fields.iter().any(|(x, _)| *x == f);
            if let Some(group) = spec.requires.iter().find(|g| !g.iter().any(|f| has(*f))) {
                let names: Vec<&str> = group.iter().map(|f| f.as_str()).collect();
                skipped.push(skip(
                    RuleId::MissingRequired,
                    format!(
                        "{provider} requires {} to create a contact; {} has none",
                        names.join(" or "),
                        person.person
                    ),
                ));
                continue;
            }
            let mut blocked = None;
            for (field, value) in &fields {
                let FieldValue::Scalar(Some(v)) = value else {
                    continue;
                };
                if !matches!(field, Field::Phone | Field::Email) {
                    continue;
                }
                if owners.held_in(provider, *field, v.key()) {
                    blocked = Some(skip(
                        RuleId::KeyExists,
                        format!(
                            "a {provider} record already holds the {field} {}: it is matched or ambiguous, never created again (see `contact-sync review`)",
                            v.key()
                        ),
                    ));
                } else if let Some(holder) = owners.held_by_other_person(*field, value, group) {
                    blocked = Some(skip(
                        RuleId::HeldByOtherPerson,
                        format!(
                            "{holder} holds the {field} {} and is not {}; not created",
                            v.key(),
                            person.person
                        ),
                    ));
                } else if claimed.contains(&(provider, *field, v.key().to_owned())) {
                    blocked = Some(skip(
                        RuleId::KeyExists,
                        format!("another create of this run carries the {field} {}", v.key()),
                    ));
                }
                if blocked.is_some() {
                    break;
                }
            }
            if let Some(b) = blocked {
                skipped.push(b);
                continue;
            }
            let key = |f: Field| {
                fields.iter().find_map(|(x, v)| match v {
                    FieldValue::Scalar(Some(v)) if *x == f => Some(v.key().to_owned()),
                    _ => None,
                })
            };
            for f in [Field::Phone, Field::Email] {
                if let Some(k) = key(f) {
                    claimed.insert((provider, f, k));
                }
            }
            let Some(lookup) = key(Field::Phone)
                .map(LookupKey::Phone)
                .or_else(|| key(Field::Email).map(LookupKey::Email))
            else {
                // Without a key an unknown outcome could not be looked up: never created.
                skipped.push(skip(
                    RuleId::MissingRequired,
                    format!(
                        "a create needs a phone or an e-mail {provider} takes, to be found again if its answer is lost; {} has none",
                        person.person
                    ),
                ));
                continue;
            };
            let from: Vec<String> = person.records.iter().map(|r| r.to_string()).collect();
            creates.push(Create {
                person: person.person.clone(),
                new: NewContact { provider, fields },
                key: Some(lookup),
                reason: format!("no {provider} record; known from {}", from.join(", ")),
            });
        }
    }
    creates.sort_by(|a, b| (a.new.provider, &a.person).cmp(&(b.new.provider, &b.person)));
    skipped.sort_by(|a, b| (a.provider, &a.person).cmp(&(b.provider, &b.person)));
    (creates, skipped)
}
