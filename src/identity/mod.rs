//! Identity decisions by a human (SPEC section 10): `link`, `unlink`, `ignore`, `unignore` and
//! `resolve`, validated against the state store, stored there with an audit row, and honoured by
//! every later run (`diff`, `sync`, the daemon, plan files) through
//! [`crate::reconcile::Memory::steering`] and the stored links and agreed values.
//!
//! Each command checks its arguments against the state before changing anything, changes the
//! state in one transaction, and returns a sentence saying what it changed.

pub mod review;

use std::collections::BTreeSet;

use crate::config::Config;
use crate::model::{format_compact, Field, FieldValue, ProviderKind, RecordId, Value};
use crate::reconcile::{matcher, PersonId};
use crate::state::{Relink, StateError, StateStore};

/// Why a decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    /// The arguments do not fit the state (unknown record, two records of one provider, ...):
    /// nothing was changed.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    State(#[from] StateError),
}

impl DecisionError {
    /// Whether the user's arguments were wrong (exit 2), as opposed to the state failing.
    pub fn is_usage(&self) -> bool {
        matches!(self, DecisionError::Invalid(_))
    }
}

fn invalid(msg: impl Into<String>) -> DecisionError {
    DecisionError::Invalid(msg.into())
}

/// Parses `provider:id` as reports print it, for a provider the config syncs.
pub fn parse_record(text: &str, config: &Config) -> Result<RecordId, DecisionError> {
    let (provider, native) = text.split_once(':').ok_or_else(|| {
        invalid(format!(
            "`{text}` is not a record: write it as provider:id, as reports print it (e.g. chatwoot:8)"
        ))
    })?;
    let provider: ProviderKind = provider
        .parse()
        .map_err(|e: String| invalid(format!("`{text}`: {e}")))?;
    if native.is_empty() {
        return Err(invalid(format!(
            "`{text}`: the id after `{provider}:` is empty"
        )));
    }
    if config.provider(provider).is_none() {
        return Err(invalid(format!(
            "`{text}`: {provider} is not configured in this config (no [providers.{provider}] section)"
        )));
    }
    Ok(RecordId::new(provider, native))
}

/// Records the last sync listed but could not place (ambiguous ones), from its findings: they
/// are not in the `records` table, yet a human may link or ignore them.
fn recently_seen(store: &StateStore) -> Result<BTreeSet<String>, DecisionError> {
    Ok(match store.findings()? {
        Some(f) => review::Review::from_json(&f.body)
            .map(|r| r.records_mentioned())
            .unwrap_or_default(),
        None => BTreeSet::new(),
    })
}

/// A person id no record or person uses yet, based on `record`.
fn fresh_person(store: &StateStore, record: &RecordId) -> Result<PersonId, DecisionError> {
    let taken = store.person_ids()?;
    let base = matcher::new_person_id(record);
    if !taken.contains(base.as_str()) {
        return Ok(base);
    }
    Ok((2u32..)
        .map(|k| format_compact!("{base}~{k}"))
        .find(|c| !taken.contains(c.as_str()))
        .unwrap_or(base))
}

/// `contact-sync link RECORD RECORD…`: these records are one person.
///
/// The person kept is the smallest person id among the records' current people (a new one when
/// none has a person yet). Records that move lose their baseline, so on the next sync their
/// values compete with the person's agreed values by precedence, and differences are reported as
/// conflicts. Other records of the people they leave stay where they are.
pub fn link(store: &mut StateStore, records: &[RecordId]) -> Result<String, DecisionError> {
    let records: BTreeSet<&RecordId> = records.iter().collect();
    if records.len() < 2 {
        return Err(invalid(
            "`link` takes at least two different records (provider:id provider:id …)",
        ));
    }
    let mut providers = BTreeSet::new();
    for r in &records {
        if !providers.insert(r.provider) {
            let same: Vec<String> = records
                .iter()
                .filter(|o| o.provider == r.provider)
                .map(|o| o.to_string())
                .collect();
            return Err(invalid(format!(
                "cannot link {}: a person has at most one record per provider ({} twice); nothing changed",
                same.join(" and "),
                r.provider
            )));
        }
    }
    let seen = recently_seen(store)?;
    let mut current: Vec<(&RecordId, Option<PersonId>)> = Vec::new();
    for r in &records {
        if store.is_ignored(r)? {
            return Err(invalid(format!(
                "{r} is ignored; run `contact-sync unignore {r}` first; nothing changed"
            )));
        }
        let known = store.known_record(r)?;
        if known.is_none() && !seen.contains(&r.to_string()) {
            return Err(invalid(format!(
                "{r} is not known to the state: no sync has listed it (run `contact-sync sync` first, and check the id); nothing changed"
            )));
        }
        current.push((r, known.map(|k| k.person)));
    }
    let target = match current.iter().filter_map(|(_, p)| p.as_ref()).min() {
        Some(p) => p.clone(),
        None => fresh_person(
            store,
            records
                .iter()
                .next()
                .copied()
                .ok_or_else(|| invalid("no records"))?,
        )?,
    };
    for other in store.records_of(&target)? {
        if !records.contains(&other) && providers.contains(&other.provider) {
            return Err(invalid(format!(
                "person {target} already has {other}, another {} record; name it too, or run `contact-sync unlink {other}` first; nothing changed",
                other.provider
            )));
        }
    }
    let moves: Vec<(&RecordId, Option<PersonId>)> = current
        .into_iter()
        .filter(|(_, p)| p.as_deref() != Some(target.as_str()))
        .collect();
    if moves.is_empty() {
        return Ok(format!(
            "{} are already one person ({target}); nothing changed",
            list(records.iter().copied())
        ));
    }
    let relinks: Vec<Relink> = moves
        .iter()
        .map(|(r, _)| Relink {
            record: (*r).clone(),
            person: target.clone(),
        })
        .collect();
    let detail = serde_json::json!({
        "person": target,
        "moved": moves.iter().map(|(r, from)| serde_json::json!({"record": r.to_string(), "from": from})).collect::<Vec<_>>(),
    });
    store.decide_links(
        "link",
        &list(records.iter().copied()),
        &detail.to_string(),
        &relinks,
        None,
    )?;
    let moved: Vec<String> = moves
        .iter()
        .map(|(r, from)| match from {
            Some(p) => format!("{r} (from {p})"),
            None => r.to_string(),
        })
        .collect();
    Ok(format!(
        "Linked {} as person {target}: moved {}. On the next sync their values compete by precedence; differences are reported as conflicts.",
        list(records.iter().copied()),
        moved.join(", ")
    ))
}

/// `contact-sync unlink RECORD`: the record leaves its person, becomes a person of its own with
/// no baseline, and never joins the person it left by a key again.
pub fn unlink(store: &mut StateStore, record: &RecordId) -> Result<String, DecisionError> {
    let Some(known) = store.known_record(record)? else {
        return Err(invalid(format!(
            "{record} is not linked to anyone in the state (no sync has placed it); nothing changed"
        )));
    };
    let others: Vec<RecordId> = store
        .records_of(&known.person)?
        .into_iter()
        .filter(|r| r != record)
        .collect();
    if others.is_empty() {
        return Err(invalid(format!(
            "{record} is the only record of person {}; there is nothing to unlink it from",
            known.person
        )));
    }
    let person = fresh_person(store, record)?;
    let detail = serde_json::json!({"from": known.person, "person": person});
    store.decide_links(
        "unlink",
        &record.to_string(),
        &detail.to_string(),
        &[Relink {
            record: record.clone(),
            person: person.clone(),
        }],
        Some((record, &known.person)),
    )?;
    Ok(format!(
        "Unlinked {record} from person {} (which keeps {}); it is now person {person} and is never joined to {} by a key again.",
        known.person,
        list(others.iter()),
        known.person
    ))
}

/// `contact-sync ignore RECORD` / `unignore RECORD`.
pub fn ignore(
    store: &mut StateStore,
    record: &RecordId,
    ignore: bool,
) -> Result<String, DecisionError> {
    let ignored = store.is_ignored(record)?;
    if ignore {
        if ignored {
            return Ok(format!("{record} is already ignored; nothing changed"));
        }
        let known = store.known_record(record)?.is_some();
        if !known && !recently_seen(store)?.contains(&record.to_string()) {
            return Err(invalid(format!(
                "{record} is not known to the state: no sync has listed it (check the id); nothing changed"
            )));
        }
        store.decide_ignore(record, true)?;
        Ok(format!(
            "Ignoring {record}: from the next run it is neither matched, merged nor written."
        ))
    } else {
        if !ignored {
            return Err(invalid(format!("{record} is not ignored; nothing changed")));
        }
        store.decide_ignore(record, false)?;
        Ok(format!(
            "No longer ignoring {record}: on the next run it is matched again, and its values compete by precedence."
        ))
    }
}

/// Where `resolve` takes its value from.
#[derive(Debug, Clone)]
pub enum ResolveFrom {
    /// The value this provider's record of the person held at the last sync.
    Provider(ProviderKind),
    /// A value given on the command line (scalar fields).
    Value(String),
}

/// `contact-sync resolve PERSON FIELD (--from PROVIDER | --value VALUE)`: sets the person's
/// agreed value of one field; the next sync spreads it like any agreed value.
pub fn resolve(
    store: &mut StateStore,
    config: &Config,
    person: &str,
    field: &str,
    from: &ResolveFrom,
) -> Result<String, DecisionError> {
    if !store.person_exists(person)? {
        return Err(invalid(format!(
            "unknown person `{person}`: use a person id from a report or `contact-sync review`; nothing changed"
        )));
    }
    let field: Field = field.parse().map_err(|e: String| invalid(e))?;
    if !config.policy.synced.contains(&field) {
        return Err(invalid(format!(
            "field `{field}` is not synced by this config's policy; nothing changed"
        )));
    }
    let value = match from {
        ResolveFrom::Provider(p) => {
            let record = store
                .records_of(person)?
                .into_iter()
                .find(|r| r.provider == *p)
                .ok_or_else(|| {
                    invalid(format!(
                        "person {person} has no {p} record; nothing changed"
                    ))
                })?;
            let known = store.known_record(&record)?;
            known
                .and_then(|k| k.baseline.get(field))
                .ok_or_else(|| {
                    invalid(format!(
                        "no {field} of {record} is known yet (it was linked since the last sync); run a sync first, or use --value; nothing changed"
                    ))
                })?
        }
        ResolveFrom::Value(text) => value_from_text(config, field, text)?,
    };
    store.decide_resolve(person, field, &value)?;
    Ok(format!(
        "Resolved {field} of person {person} to {value}; the next sync writes it wherever the rules allow (a later edit still wins as an edit)."
    ))
}

/// A value given as text, normalised as an adapter would.
fn value_from_text(config: &Config, field: Field, text: &str) -> Result<FieldValue, DecisionError> {
    let text = text.trim();
    if !field.is_scalar() {
        return Err(invalid(format!(
            "`--value` takes a single value; for {field} use `--from PROVIDER`"
        )));
    }
    if text.is_empty() {
        return Err(invalid(
            "`--value` is empty; an agreed value is never set to empty by hand",
        ));
    }
    let value = match field {
        Field::Phone => config.normalizer.phone(text).0,
        Field::Email => config.normalizer.email(text).0,
        _ => Some(Value::plain(text)),
    }
    .filter(|v| v.valid())
    .ok_or_else(|| invalid(format!("`{text}` is not a valid {field}; nothing changed")))?;
    Ok(FieldValue::Scalar(Some(value)))
}

fn list<'a>(records: impl IntoIterator<Item = &'a RecordId>) -> String {
    records
        .into_iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Opens the state for a decision (locked: no sync may run meanwhile).
pub fn open_state(config: &Config) -> Result<StateStore, DecisionError> {
    Ok(StateStore::open(&config.state_path)?)
}
