//! The create journal (SPEC section 11): every create is recorded as intended, with the key it
//! carries, before it is sent; then confirmed (with the record it made, linked to its person),
//! failed, or left intended when its outcome is unknown, to be settled by a lookup next run.

use rusqlite::params;

use super::{now, AtPath, StateError, StateStore};
use crate::model::{ProviderKind, RecordId};
use crate::provider::LookupKey;
use crate::reconcile::{Baseline, Create, PersonId};

/// The schema these functions use (migration 3).
pub(super) const MIGRATION: &str = "
    CREATE TABLE creates (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        provider TEXT NOT NULL,
        person TEXT NOT NULL,
        key_kind TEXT,
        key TEXT,
        fields TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('intended', 'confirmed', 'linked', 'failed', 'not-applied')),
        native TEXT,
        error TEXT,
        created_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE INDEX creates_state ON creates(state);";

/// A create recorded as intended whose outcome is unknown.
#[derive(Debug, Clone)]
pub struct PendingCreate {
    pub id: i64,
    pub provider: ProviderKind,
    pub person: PersonId,
    pub key: Option<LookupKey>,
}

impl StateStore {
    /// Records a create as intended, with its key, before it is sent.
    pub fn create_intended(&self, run: i64, create: &Create) -> Result<i64, StateError> {
        let (kind, key) = match &create.key {
            Some(LookupKey::Phone(k)) => (Some("phone"), Some(k.as_str())),
            Some(LookupKey::Email(k)) => (Some("email"), Some(k.as_str())),
            None => (None, None),
        };
        let fields = super::encode_fields(create.new.fields.iter().map(|(f, v)| (f, v)));
        self.conn
            .execute(
                "INSERT INTO creates (run_id, provider, person, key_kind, key, fields, state, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'intended', ?7)",
                params![run, create.provider().as_str(), create.person.as_str(), kind, key, fields, now()],
            )
            .at(&self.path)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records a create as done (`confirmed`: the provider made the contact; `linked`: it
    /// already held one with the key), and links the record to the person with the provider's
    /// answer as its baseline, in one transaction.
    pub fn create_done(
        &mut self,
        create: i64,
        record: &RecordId,
        person: &PersonId,
        baseline: &Baseline,
        existing: bool,
    ) -> Result<(), StateError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().at(&path)?;
        let ts = now();
        tx.execute(
            "UPDATE creates SET state = ?2, native = ?3, finished_at = ?4 WHERE id = ?1",
            params![
                create,
                if existing { "linked" } else { "confirmed" },
                record.native.as_str(),
                ts
            ],
        )
        .at(&path)?;
        tx.execute(
            super::UPSERT_RECORD,
            params![
                record.provider.as_str(),
                record.native.as_str(),
                person.as_str(),
                super::encode_baseline(baseline),
                ts
            ],
        )
        .at(&path)?;
        tx.commit().at(&path)
    }

    /// Records a create as failed (the provider said no), or, with `unknown`, keeps it
    /// intended with the error: it may have been applied, so the next run looks its key up.
    pub fn create_failed(&self, create: i64, error: &str, unknown: bool) -> Result<(), StateError> {
        let sql = if unknown {
            "UPDATE creates SET error = ?2 WHERE id = ?1"
        } else {
            "UPDATE creates SET state = 'failed', error = ?2, finished_at = ?3 WHERE id = ?1"
        };
        if unknown {
            self.conn
                .execute(sql, params![create, error])
                .at(&self.path)?;
        } else {
            self.conn
                .execute(sql, params![create, error, now()])
                .at(&self.path)?;
        }
        Ok(())
    }

    /// Creates left intended: a crash after sending, or an unknown outcome.
    pub fn pending_creates(&self) -> Result<Vec<PendingCreate>, StateError> {
        let p = &self.path;
        let mut stmt = self
            .conn
            .prepare("SELECT id, provider, person, key_kind, key FROM creates WHERE state = 'intended' ORDER BY id")
            .at(p)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })
            .at(p)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, provider, person, kind, key) = row.at(p)?;
            let Ok(provider) = provider.parse::<ProviderKind>() else {
                continue;
            };
            let key = match (kind.as_deref(), key) {
                (Some("phone"), Some(k)) => Some(LookupKey::Phone(k)),
                (Some("email"), Some(k)) => Some(LookupKey::Email(k)),
                _ => None,
            };
            out.push(PendingCreate {
                id,
                provider,
                person: person.into(),
                key,
            });
        }
        Ok(out)
    }

    /// Settles a pending create: the record found holding its key is linked to the person
    /// (`linked`), or none was found (`not-applied`, so it may be planned again).
    pub fn settle_create(
        &mut self,
        create: i64,
        found: Option<(&RecordId, &PersonId, &Baseline)>,
    ) -> Result<(), StateError> {
        match found {
            Some((record, person, baseline)) => {
                self.create_done(create, record, person, baseline, true)
            }
            None => {
                self.conn
                    .execute(
                        "UPDATE creates SET state = 'not-applied', finished_at = ?2 WHERE id = ?1",
                        params![create, now()],
                    )
                    .at(&self.path)?;
                Ok(())
            }
        }
    }

    /// How many creates ended in each state (for tests and `status`).
    pub fn create_counts(&self) -> Result<std::collections::BTreeMap<String, i64>, StateError> {
        let p = &self.path;
        let mut stmt = self
            .conn
            .prepare("SELECT state, COUNT(*) FROM creates GROUP BY state")
            .at(p)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .at(p)?;
        rows.collect::<Result<_, _>>().at(p)
    }
}
