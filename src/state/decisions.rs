//! Identity decisions a human made (`link`, `unlink`, `ignore`, `unignore`, `resolve`), and the
//! last run's findings for `review --offline`.
//!
//! Each decision changes the state in one transaction together with its row in the
//! `decisions` audit log (who, when, what changed), so the log never disagrees with the state.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{params, OptionalExtension};

use super::codec::{decode_fields, encode_fields, encode_value};
use super::{now, record_id, AtPath, StateError, StateStore};
use crate::model::{Field, FieldValue, RecordId};
use crate::reconcile::{Baseline, PersonId, Steering};

/// The schema these functions use (migration 2).
pub(super) const MIGRATION: &str = "
    CREATE TABLE decisions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('link', 'unlink', 'ignore', 'unignore', 'resolve')),
        subject TEXT NOT NULL,
        detail TEXT NOT NULL,
        actor TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE ignored (
        provider TEXT NOT NULL,
        native TEXT NOT NULL,
        decision INTEGER NOT NULL REFERENCES decisions(id),
        PRIMARY KEY (provider, native)
    ) WITHOUT ROWID;
    CREATE TABLE unlinked (
        provider TEXT NOT NULL,
        native TEXT NOT NULL,
        person TEXT NOT NULL,
        decision INTEGER NOT NULL REFERENCES decisions(id),
        PRIMARY KEY (provider, native, person)
    ) WITHOUT ROWID;
    CREATE TABLE findings (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        run_id INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        body TEXT NOT NULL
    );";

/// One row of the decisions audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRow {
    pub id: i64,
    pub kind: String,
    pub subject: String,
    pub detail: String,
    pub actor: String,
    pub created_at: String,
}

/// A record as the state knows it: its person and whether it has a baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownRecord {
    pub person: PersonId,
    pub baseline: Baseline,
}

/// The last sync's findings, stored as the review document it produced.
#[derive(Debug, Clone)]
pub struct Findings {
    pub run_id: i64,
    pub created_at: String,
    pub body: String,
}

/// One change a decision makes to a record's link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relink {
    pub record: RecordId,
    pub person: PersonId,
}

/// Who made a decision: the login of the user running the command.
pub fn actor() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned())
}

impl StateStore {
    /// The humans' standing decisions, as the matcher takes them.
    pub fn load_steering(&self) -> Result<Steering, StateError> {
        let p = &self.path;
        let mut steering = Steering::default();
        let mut stmt = self
            .conn
            .prepare("SELECT provider, native FROM ignored")
            .at(p)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .at(p)?;
        for row in rows {
            let (provider, native) = row.at(p)?;
            steering.ignored.extend(record_id(&provider, native));
        }
        let mut stmt = self
            .conn
            .prepare("SELECT provider, native, person FROM unlinked")
            .at(p)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .at(p)?;
        for row in rows {
            let (provider, native, person) = row.at(p)?;
            if let Some(id) = record_id(&provider, native) {
                steering
                    .unlinked_from
                    .entry(id)
                    .or_default()
                    .insert(person.into());
            }
        }
        Ok(steering)
    }

    /// The record's link and baseline, when the state has it.
    pub fn known_record(&self, id: &RecordId) -> Result<Option<KnownRecord>, StateError> {
        let p = &self.path;
        self.conn
            .query_row(
                "SELECT person, baseline FROM records WHERE provider = ?1 AND native = ?2",
                params![id.provider.as_str(), id.native.as_str()],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()
            .at(p)
            .map(|row| {
                row.map(|(person, baseline)| KnownRecord {
                    person: person.into(),
                    baseline: super::codec::decode_baseline(&baseline),
                })
            })
    }

    /// Every record linked to `person`, sorted.
    pub fn records_of(&self, person: &str) -> Result<Vec<RecordId>, StateError> {
        let p = &self.path;
        let mut stmt = self
            .conn
            .prepare("SELECT provider, native FROM records WHERE person = ?1")
            .at(p)?;
        let rows = stmt
            .query_map([person], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .at(p)?;
        let mut out = Vec::new();
        for row in rows {
            let (provider, native) = row.at(p)?;
            out.extend(record_id(&provider, native));
        }
        out.sort();
        Ok(out)
    }

    /// Whether a person id is in use (by a record or an agreed value).
    pub fn person_exists(&self, person: &str) -> Result<bool, StateError> {
        let p = &self.path;
        self.conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM records WHERE person = ?1) OR EXISTS(SELECT 1 FROM people WHERE person = ?1)",
                [person],
                |r| r.get::<_, bool>(0),
            )
            .at(p)
    }

    /// The agreed values of a person.
    pub fn agreed_of(&self, person: &str) -> Result<BTreeMap<Field, FieldValue>, StateError> {
        let p = &self.path;
        let agreed: Option<String> = self
            .conn
            .query_row(
                "SELECT agreed FROM people WHERE person = ?1",
                [person],
                |r| r.get(0),
            )
            .optional()
            .at(p)?;
        Ok(agreed.map(|a| decode_fields(&a)).unwrap_or_default())
    }

    /// Whether the record is ignored.
    pub fn is_ignored(&self, id: &RecordId) -> Result<bool, StateError> {
        let p = &self.path;
        self.conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM ignored WHERE provider = ?1 AND native = ?2)",
                params![id.provider.as_str(), id.native.as_str()],
                |r| r.get::<_, bool>(0),
            )
            .at(p)
    }

    /// Links `relinks` (each record to its new person, with no baseline, so its values compete
    /// by precedence on the next sync) and forgets any earlier `unlink` of these records from
    /// their new person; logs the decision.
    pub fn decide_links(
        &mut self,
        kind: &str,
        subject: &str,
        detail: &str,
        relinks: &[Relink],
        unlinked_from: Option<(&RecordId, &PersonId)>,
    ) -> Result<i64, StateError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().at(&path)?;
        let ts = now();
        tx.execute(
            "INSERT INTO decisions (kind, subject, detail, actor, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![kind, subject, detail, actor(), ts],
        )
        .at(&path)?;
        let decision = tx.last_insert_rowid();
        for r in relinks {
            tx.execute(
                super::UPSERT_RECORD,
                params![
                    r.record.provider.as_str(),
                    r.record.native.as_str(),
                    r.person.as_str(),
                    "{}",
                    ts
                ],
            )
            .at(&path)?;
            tx.execute(
                "DELETE FROM unlinked WHERE provider = ?1 AND native = ?2 AND person = ?3",
                params![
                    r.record.provider.as_str(),
                    r.record.native.as_str(),
                    r.person.as_str()
                ],
            )
            .at(&path)?;
        }
        if let Some((record, person)) = unlinked_from {
            tx.execute(
                "INSERT OR IGNORE INTO unlinked (provider, native, person, decision) VALUES (?1, ?2, ?3, ?4)",
                params![record.provider.as_str(), record.native.as_str(), person.as_str(), decision],
            )
            .at(&path)?;
        }
        tx.commit().at(&path)?;
        Ok(decision)
    }

    /// Ignores a record, or stops ignoring it. On `unignore` the record's baseline is dropped,
    /// so what it holds now competes by precedence instead of counting as an edit.
    pub fn decide_ignore(&mut self, id: &RecordId, ignore: bool) -> Result<i64, StateError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().at(&path)?;
        let kind = if ignore { "ignore" } else { "unignore" };
        tx.execute(
            "INSERT INTO decisions (kind, subject, detail, actor, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![kind, id.to_string(), "{}", actor(), now()],
        )
        .at(&path)?;
        let decision = tx.last_insert_rowid();
        if ignore {
            tx.execute(
                "INSERT OR IGNORE INTO ignored (provider, native, decision) VALUES (?1, ?2, ?3)",
                params![id.provider.as_str(), id.native.as_str(), decision],
            )
            .at(&path)?;
        } else {
            tx.execute(
                "DELETE FROM ignored WHERE provider = ?1 AND native = ?2",
                params![id.provider.as_str(), id.native.as_str()],
            )
            .at(&path)?;
            tx.execute(
                "UPDATE records SET baseline = '{}' WHERE provider = ?1 AND native = ?2",
                params![id.provider.as_str(), id.native.as_str()],
            )
            .at(&path)?;
        }
        tx.commit().at(&path)?;
        Ok(decision)
    }

    /// Sets one agreed value of a person; logs the decision with the value before and after.
    pub fn decide_resolve(
        &mut self,
        person: &str,
        field: Field,
        value: &FieldValue,
    ) -> Result<i64, StateError> {
        let path = self.path.clone();
        let mut agreed = self.agreed_of(person)?;
        let before = agreed.get(&field).map(encode_value);
        agreed.insert(field, value.clone());
        let tx = self.conn.transaction().at(&path)?;
        let ts = now();
        let detail = serde_json::json!({
            "field": field.as_str(),
            "before": before,
            "after": encode_value(value),
        });
        tx.execute(
            "INSERT INTO decisions (kind, subject, detail, actor, created_at) VALUES ('resolve', ?1, ?2, ?3, ?4)",
            params![person, detail.to_string(), actor(), ts],
        )
        .at(&path)?;
        let decision = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO people (person, agreed, updated_at) VALUES (?1, ?2, ?3) ON CONFLICT(person) DO UPDATE SET agreed = excluded.agreed, updated_at = excluded.updated_at",
            params![person, encode_fields(&agreed), ts],
        )
        .at(&path)?;
        tx.commit().at(&path)?;
        Ok(decision)
    }

    /// The decisions audit log, oldest first.
    pub fn decisions(&self) -> Result<Vec<DecisionRow>, StateError> {
        let p = &self.path;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, kind, subject, detail, actor, created_at FROM decisions ORDER BY id",
            )
            .at(p)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(DecisionRow {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    subject: r.get(2)?,
                    detail: r.get(3)?,
                    actor: r.get(4)?,
                    created_at: r.get(5)?,
                })
            })
            .at(p)?;
        rows.collect::<Result<_, _>>().at(p)
    }

    /// Replaces the stored findings with the ones of run `run`.
    pub fn save_findings(&self, run: i64, body: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO findings (id, run_id, created_at, body) VALUES (1, ?1, ?2, ?3) ON CONFLICT(id) DO UPDATE SET run_id = excluded.run_id, created_at = excluded.created_at, body = excluded.body",
                params![run, now(), body],
            )
            .at(&self.path)?;
        Ok(())
    }

    /// The last run's findings, if a sync stored any.
    pub fn findings(&self) -> Result<Option<Findings>, StateError> {
        self.conn
            .query_row(
                "SELECT run_id, created_at, body FROM findings WHERE id = 1",
                [],
                |r| {
                    Ok(Findings {
                        run_id: r.get(0)?,
                        created_at: r.get(1)?,
                        body: r.get(2)?,
                    })
                },
            )
            .optional()
            .at(&self.path)
    }

    /// Every person id in use, for choosing new ones.
    pub fn person_ids(&self) -> Result<BTreeSet<String>, StateError> {
        let p = &self.path;
        let mut stmt = self
            .conn
            .prepare("SELECT person FROM records UNION SELECT person FROM people")
            .at(p)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).at(p)?;
        rows.collect::<Result<_, _>>().at(p)
    }
}
