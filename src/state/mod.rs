//! The state store: one SQLite file holding what contact-sync remembers between runs.
//!
//! - `records`: one row per provider record: the person it is linked to and its baseline (each
//!   field's value when the last sync finished).
//! - `people`: one row per person: the agreed value of each field.
//! - `runs`: run history (start, end, mode, outcome, counts).
//! - `writes`: the write log and audit trail. Every write is recorded as `intended` before it is
//!   sent, then `confirmed` (with the value the provider holds) or `failed` (with the error).
//! - `failures`: dead letters: records whose writes keep failing, with the last error.
//!
//! WAL mode, versioned schema (`PRAGMA user_version`), every multi-row change in one
//! transaction. A lock file next to the database stops a second process from syncing the same
//! state at the same time.

mod cadence;
pub mod codec;
mod creates;
mod decisions;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

pub use codec::{decode_baseline, decode_fields, encode_baseline, encode_fields};
pub use creates::PendingCreate;
pub use decisions::{actor, DecisionRow, Findings, KnownRecord, Relink};

use crate::model::{Field, FieldValue, ProviderKind, RecordId};
use crate::reconcile::{Baseline, Memory, PersonId, PersonPlan, Update};

/// State store errors.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state file {path} is in use by {} (lock {lock}); wait for it to finish, or stop it{}", holder.map_or_else(|| "another contact-sync process".to_owned(), |pid| format!("contact-sync process {pid}")), holder.map_or_else(String::new, |pid| format!(" (`kill {pid}`)")))]
    Locked {
        path: PathBuf,
        lock: PathBuf,
        /// The process id written in the lock file by the process holding it, when readable.
        holder: Option<u32>,
    },
    /// A file operation on the state failed.
    #[error("state file {path}: cannot {what}: {source}")]
    File {
        path: PathBuf,
        /// What was being done, e.g. "create directory /var/lib/contact-sync".
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A failure with no underlying error to carry (the store was still in use).
    #[error("state file {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("state file {path} has schema version {found}, newer than this contact-sync understands ({supported}); upgrade contact-sync")]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
}

const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "CREATE TABLE records (
        provider TEXT NOT NULL,
        native TEXT NOT NULL,
        person TEXT NOT NULL,
        baseline TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (provider, native)
    ) WITHOUT ROWID;
    CREATE INDEX records_person ON records(person);
    CREATE TABLE people (
        person TEXT PRIMARY KEY,
        agreed TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        mode TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        outcome TEXT,
        planned INTEGER NOT NULL DEFAULT 0,
        applied INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        skipped INTEGER NOT NULL DEFAULT 0,
        conflicts INTEGER NOT NULL DEFAULT 0,
        message TEXT
    );
    CREATE TABLE writes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        provider TEXT NOT NULL,
        native TEXT NOT NULL,
        person TEXT NOT NULL,
        changes TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('intended', 'confirmed', 'failed', 'verified', 'not-applied')),
        http_status INTEGER,
        error TEXT,
        created_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE INDEX writes_state ON writes(state);
    CREATE TABLE failures (
        provider TEXT NOT NULL,
        native TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        last_error TEXT NOT NULL,
        error_kind TEXT NOT NULL,
        first_failed_at TEXT NOT NULL,
        last_failed_at TEXT NOT NULL,
        last_run INTEGER NOT NULL,
        PRIMARY KEY (provider, native)
    ) WITHOUT ROWID;",
    // 2: identity decisions and the last run's findings (SPEC section 10).
    decisions::MIGRATION,
    // 3: the create journal (SPEC section 11).
    creates::MIGRATION,
    // 4: scan cadence cost models and snapshots (SPEC section 14).
    cadence::MIGRATION,
    // 5: where each record was in the listing it was first saved from, so the state loads in
    // listing order and the planner joins it to the next listing without hash lookups (issue
    // 13). 0: not placed yet (rows from before, or saved by a write); those load first.
    "ALTER TABLE records ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;",
];

/// Inserts a record's link and baseline, or replaces them.
const UPSERT_RECORD: &str = "INSERT INTO records (provider, native, person, baseline, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) \
     ON CONFLICT(provider, native) DO UPDATE SET person = excluded.person, baseline = excluded.baseline, updated_at = excluded.updated_at";

/// [`UPSERT_RECORD`] with the record's place in this run's listing, kept from its first save.
const UPSERT_RECORD_AT: &str = "INSERT INTO records (provider, native, person, baseline, updated_at, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
     ON CONFLICT(provider, native) DO UPDATE SET person = excluded.person, baseline = excluded.baseline, updated_at = excluded.updated_at, \
     seq = CASE WHEN records.seq = 0 THEN excluded.seq ELSE records.seq END";

/// Gives a record saved without a place its place in this run's listing.
const PLACE_RECORD: &str =
    "UPDATE records SET seq = ?3 WHERE provider = ?1 AND native = ?2 AND seq = 0";

/// What a run does: the `runs.mode` column's vocabulary, and what a report says it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fetch, plan, report; send no write and change no state.
    Diff,
    /// Fetch, plan, apply.
    Sync,
}

impl Mode {
    /// The word stored in `runs.mode` and written in JSON reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Diff => "diff",
            Mode::Sync => "sync",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run ended: the `runs.outcome` column's vocabulary, and what `/healthz` and the
/// `contact_sync_runs_total{outcome}` metric report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    /// Every planned write applied, or nothing to do.
    Ok,
    /// Some records or providers failed.
    Failed,
    /// A guard rail stopped the run before it wrote.
    Guard,
    /// A signal stopped the run; in-flight writes finished.
    Interrupted,
    /// The run could not run at all (the state could not be opened, ...); never in `runs`.
    Error,
}

impl RunOutcome {
    /// The word stored in `runs.outcome` and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Ok => "ok",
            RunOutcome::Failed => "failed",
            RunOutcome::Guard => "guard",
            RunOutcome::Interrupted => "interrupted",
            RunOutcome::Error => "error",
        }
    }
}

impl std::fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of run history.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: i64,
    pub mode: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: Option<String>,
    pub planned: i64,
    pub applied: i64,
    pub failed: i64,
    pub skipped: i64,
    pub conflicts: i64,
    pub message: Option<String>,
}

/// Counts recorded when a run finishes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunCounts {
    pub planned: usize,
    pub applied: usize,
    pub failed: usize,
    pub skipped: usize,
    pub conflicts: usize,
}

/// A record in the dead-letter view.
#[derive(Debug, Clone)]
pub struct FailureRow {
    pub record: RecordId,
    pub attempts: i64,
    pub last_error: String,
    pub error_kind: String,
    pub first_failed_at: String,
    pub last_failed_at: String,
    pub last_run: i64,
}

/// A write recorded as intended whose outcome is unknown (the process stopped mid-write).
#[derive(Debug, Clone)]
pub struct PendingWrite {
    pub id: i64,
    pub record: RecordId,
    /// The values the write would have set.
    pub after: BTreeMap<Field, FieldValue>,
}

/// The open state store.
pub struct StateStore {
    path: PathBuf,
    conn: Connection,
    _lock: Option<File>,
    /// Records the last [`StateStore::load_memory`] found without a listing place (saved
    /// before migration 5, or first by a confirmed write or create): the next save gives them
    /// one even when nothing else about them changed.
    unplaced: std::sync::Mutex<std::collections::HashSet<RecordId>>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl StateStore {
    /// Opens (creating if needed) the state for a sync, holding its lock until dropped.
    ///
    /// # Errors
    /// [`StateError::Locked`] when another process holds the lock.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StateError::File {
                path: path.into(),
                what: format!("create directory {}", dir.display()),
                source,
            })?;
        }
        let lock_path = lock_path(path);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StateError::File {
                path: path.into(),
                what: format!("open lock file {}", lock_path.display()),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => record_holder(&lock),
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock_path)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok());
                return Err(StateError::Locked {
                    path: path.into(),
                    lock: lock_path,
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StateError::File {
                    path: path.into(),
                    what: format!("lock {}", lock_path.display()),
                    source,
                })
            }
        }
        let conn = Connection::open(path).at(path)?;
        let mut store = StateStore {
            path: path.into(),
            conn,
            _lock: Some(lock),
            unplaced: Default::default(),
        };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    /// Opens existing state read-only, without the lock (for `diff`, `status`, `failures`).
    /// `Ok(None)` when there is no state yet.
    pub fn open_read_only(path: &Path) -> Result<Option<Self>, StateError> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .at(path)?;
        let store = StateStore {
            path: path.into(),
            conn,
            _lock: None,
            unplaced: Default::default(),
        };
        store
            .conn
            .busy_timeout(std::time::Duration::from_secs(5))
            .at(path)?;
        let version: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .at(path)?;
        if version > MIGRATIONS.len() as i64 {
            return Err(StateError::TooNew {
                path: path.into(),
                found: version,
                supported: MIGRATIONS.len() as i64,
            });
        }
        if version < MIGRATIONS.len() as i64 {
            // An older or empty file: nothing useful to read without migrating, which needs
            // write access. Behave as if there were no state.
            return Ok(None);
        }
        Ok(Some(store))
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn configure(&mut self) -> Result<(), StateError> {
        self.conn
            .busy_timeout(std::time::Duration::from_secs(5))
            .at(&self.path)?;
        self.conn
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
            )
            .at(&self.path)
    }

    fn migrate(&mut self) -> Result<(), StateError> {
        let path = self.path.clone();
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .at(&path)?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StateError::TooNew {
                path,
                found: version,
                supported,
            });
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction().at(&path)?;
            tx.execute_batch(m).at(&path)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .at(&path)?;
            tx.commit().at(&path)?;
        }
        Ok(())
    }

    /// Everything the reconciler needs from earlier runs.
    pub fn load_memory(&self) -> Result<Memory, StateError> {
        let p = &self.path;
        let mut memory = Memory::default();
        let mut stmt = self
            .conn
            .prepare("SELECT provider, native, person, baseline, seq FROM records ORDER BY seq, provider, native")
            .at(p)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .at(p)?;
        let mut unplaced = std::collections::HashSet::new();
        for row in rows {
            let (provider, native, person, baseline, seq) = row.at(p)?;
            let Some(id) = record_id(&provider, native) else {
                continue;
            };
            if seq == 0 {
                unplaced.insert(id.clone());
            }
            memory
                .baselines
                .insert(id.clone(), decode_baseline(&baseline));
            memory.links.insert(id, person.into());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT person, agreed FROM people")
            .at(p)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .at(p)?;
        for row in rows {
            let (person, agreed) = row.at(p)?;
            memory
                .agreed
                .insert(person.into(), decode_fields(&agreed).into());
        }
        memory.steering = self.load_steering()?;
        *self
            .unplaced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = unplaced;
        Ok(memory)
    }

    /// Starts a run in the history; returns its id.
    pub fn begin_run(&self, mode: Mode) -> Result<i64, StateError> {
        self.conn
            .execute(
                "INSERT INTO runs (mode, started_at) VALUES (?1, ?2)",
                params![mode.as_str(), now()],
            )
            .at(&self.path)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Finishes a run in the history.
    pub fn finish_run(
        &self,
        run: i64,
        outcome: RunOutcome,
        counts: RunCounts,
        message: Option<&str>,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?2, outcome = ?3, planned = ?4, applied = ?5, failed = ?6, skipped = ?7, conflicts = ?8, message = ?9 WHERE id = ?1",
                params![run, now(), outcome.as_str(), counts.planned as i64, counts.applied as i64, counts.failed as i64, counts.skipped as i64, counts.conflicts as i64, message],
            )
            .at(&self.path)?;
        Ok(())
    }

    /// Saves the agreed values and links the plan decided, in one transaction.
    pub fn save_people(
        &mut self,
        people: &[PersonPlan],
        memory: &Memory,
    ) -> Result<(), StateError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().at(&path)?;
        {
            let ts = now();
            let mut upsert = tx
                .prepare("INSERT INTO people (person, agreed, updated_at) VALUES (?1, ?2, ?3) ON CONFLICT(person) DO UPDATE SET agreed = excluded.agreed, updated_at = excluded.updated_at")
                .at(&path)?;
            for p in people {
                if memory.agreed.get(&p.person) == Some(&p.agreed) {
                    continue;
                }
                upsert
                    .execute(params![p.person.as_str(), encode_fields(&p.agreed), ts])
                    .at(&path)?;
            }
        }
        tx.commit().at(&path)
    }

    /// Saves record rows (person link, baseline, and the record's place in this run's
    /// listing, counted from 1) that differ from `memory`, in one transaction. A record keeps
    /// the place of its first save.
    pub fn save_records<'a>(
        &mut self,
        rows: impl IntoIterator<Item = (&'a RecordId, &'a PersonId, &'a Baseline, i64)>,
        memory: &Memory,
    ) -> Result<usize, StateError> {
        let path = self.path.clone();
        let mut unplaced = self
            .unplaced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = self.conn.transaction().at(&path)?;
        let mut n = 0;
        {
            let ts = now();
            let mut upsert = tx.prepare(UPSERT_RECORD_AT).at(&path)?;
            let mut place = tx.prepare(PLACE_RECORD).at(&path)?;
            for (id, person, baseline, seq) in rows {
                if memory.links.get(id) == Some(person)
                    && memory.baselines.get(id) == Some(baseline)
                {
                    if seq > 0 && unplaced.remove(id) {
                        place
                            .execute(params![id.provider.as_str(), id.native.as_str(), seq])
                            .at(&path)?;
                    }
                    continue;
                }
                unplaced.remove(id);
                upsert
                    .execute(params![
                        id.provider.as_str(),
                        id.native.as_str(),
                        person.as_str(),
                        encode_baseline(baseline),
                        ts,
                        seq
                    ])
                    .at(&path)?;
                n += 1;
            }
        }
        tx.commit().at(&path)?;
        Ok(n)
    }

    /// Gives records saved without a place (by a confirmed write or create) their place in
    /// this run's listing, counted from 1.
    pub fn place_records<'a>(
        &mut self,
        rows: impl IntoIterator<Item = (&'a RecordId, i64)>,
    ) -> Result<(), StateError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().at(&path)?;
        {
            let mut place = tx.prepare(PLACE_RECORD).at(&path)?;
            for (id, seq) in rows {
                place
                    .execute(params![id.provider.as_str(), id.native.as_str(), seq])
                    .at(&path)?;
            }
        }
        tx.commit().at(&path)?;
        Ok(())
    }

    /// Records a write as intended, before it is sent.
    pub fn write_intended(&self, run: i64, update: &Update) -> Result<i64, StateError> {
        let changes: serde_json::Map<String, serde_json::Value> = update
            .patch
            .changes
            .iter()
            .map(|c| {
                (c.field.as_str().to_owned(), serde_json::json!({"old": codec::encode_value(&c.old), "new": codec::encode_value(&c.new)}))
            })
            .collect();
        let r = &update.patch.record;
        self.conn
            .execute(
                "INSERT INTO writes (run_id, provider, native, person, changes, state, created_at) VALUES (?1, ?2, ?3, ?4, ?5, 'intended', ?6)",
                params![run, r.provider.as_str(), r.native.as_str(), update.person.as_str(), serde_json::Value::Object(changes).to_string(), now()],
            )
            .at(&self.path)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records a write as confirmed and makes the provider's answer the record's baseline, in
    /// one transaction, so a crash right after leaves the state exact.
    pub fn write_confirmed(
        &mut self,
        write: i64,
        record: &RecordId,
        person: &PersonId,
        baseline: &Baseline,
    ) -> Result<(), StateError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().at(&path)?;
        let ts = now();
        tx.execute("UPDATE writes SET state = 'confirmed', http_status = 200, finished_at = ?2 WHERE id = ?1", params![write, ts])
            .at(&path)?;
        tx.execute(
            UPSERT_RECORD,
            params![
                record.provider.as_str(),
                record.native.as_str(),
                person.as_str(),
                encode_baseline(baseline),
                ts
            ],
        )
        .at(&path)?;
        tx.execute(
            "DELETE FROM failures WHERE provider = ?1 AND native = ?2",
            params![record.provider.as_str(), record.native.as_str()],
        )
        .at(&path)?;
        tx.commit().at(&path)
    }

    /// Records a write as failed and counts it in the dead-letter view.
    pub fn write_failed(
        &mut self,
        run: i64,
        write: i64,
        record: &RecordId,
        status: Option<u16>,
        kind: &str,
        error: &str,
    ) -> Result<(), StateError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().at(&path)?;
        let ts = now();
        tx.execute(
            "UPDATE writes SET state = 'failed', http_status = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
            params![write, status.map(i64::from), error, ts],
        )
        .at(&path)?;
        tx.execute(
            "INSERT INTO failures (provider, native, attempts, last_error, error_kind, first_failed_at, last_failed_at, last_run) VALUES (?1, ?2, 1, ?3, ?4, ?5, ?5, ?6)
             ON CONFLICT(provider, native) DO UPDATE SET attempts = attempts + 1, last_error = excluded.last_error, error_kind = excluded.error_kind, last_failed_at = excluded.last_failed_at, last_run = excluded.last_run",
            params![record.provider.as_str(), record.native.as_str(), error, kind, ts, run],
        )
        .at(&path)?;
        tx.commit().at(&path)
    }

    /// Writes left `intended` by an earlier process that stopped mid-write.
    pub fn pending_writes(&self) -> Result<Vec<PendingWrite>, StateError> {
        let p = &self.path;
        let mut stmt = self
            .conn
            .prepare("SELECT id, provider, native, changes FROM writes WHERE state = 'intended' ORDER BY id")
            .at(p)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .at(p)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, provider, native, changes) = row.at(p)?;
            let Ok(provider) = provider.parse::<ProviderKind>() else {
                continue;
            };
            let parsed: serde_json::Value = serde_json::from_str(&changes).unwrap_or_default();
            let mut after = BTreeMap::new();
            if let Some(obj) = parsed.as_object() {
                for (k, v) in obj {
                    if let (Ok(field), Some(new)) = (k.parse::<Field>(), v.get("new")) {
                        if let Some(value) = codec::decode_value(field, new) {
                            after.insert(field, value);
                        }
                    }
                }
            }
            out.push(PendingWrite {
                id,
                record: RecordId::new(provider, native),
                after,
            });
        }
        Ok(out)
    }

    /// Settles a pending write after checking the provider: `verified` (the record holds the
    /// intended values) or `not-applied`; with `baseline`, the record's baseline becomes it in
    /// the same transaction (the fields it holds as intended count as confirmed).
    pub fn settle_pending(
        &self,
        write: i64,
        applied: bool,
        baseline: Option<(&RecordId, &Baseline)>,
    ) -> Result<(), StateError> {
        let state = if applied { "verified" } else { "not-applied" };
        let p = &self.path;
        let tx = self.conn.unchecked_transaction().at(p)?;
        tx.execute(
            "UPDATE writes SET state = ?2, finished_at = ?3 WHERE id = ?1",
            params![write, state, now()],
        )
        .at(p)?;
        if let Some((record, baseline)) = baseline {
            tx.execute(
                "UPDATE records SET baseline = ?3, updated_at = ?4 WHERE provider = ?1 AND native = ?2",
                params![record.provider.as_str(), record.native.as_str(), encode_baseline(baseline), now()],
            )
            .at(p)?;
        }
        tx.commit().at(p)
    }

    /// Records that a write's outcome is unknown (it timed out, or the connection was lost
    /// after it was sent): it stays `intended`, so the next run settles it against what the
    /// provider holds, and the dead-letter view counts it.
    pub fn write_unknown(
        &mut self,
        run: i64,
        write: i64,
        record: &RecordId,
        kind: &str,
        error: &str,
    ) -> Result<(), StateError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().at(&path)?;
        let ts = now();
        tx.execute(
            "UPDATE writes SET error = ?2 WHERE id = ?1",
            params![write, error],
        )
        .at(&path)?;
        tx.execute(
            "INSERT INTO failures (provider, native, attempts, last_error, error_kind, first_failed_at, last_failed_at, last_run) VALUES (?1, ?2, 1, ?3, ?4, ?5, ?5, ?6)
             ON CONFLICT(provider, native) DO UPDATE SET attempts = attempts + 1, last_error = excluded.last_error, error_kind = excluded.error_kind, last_failed_at = excluded.last_failed_at, last_run = excluded.last_run",
            params![record.provider.as_str(), record.native.as_str(), error, kind, ts, run],
        )
        .at(&path)?;
        tx.commit().at(&path)
    }

    /// The most recent runs, newest first.
    pub fn recent_runs(&self, limit: usize) -> Result<Vec<RunRow>, StateError> {
        let p = &self.path;
        let mut stmt = self
            .conn
            .prepare("SELECT id, mode, started_at, finished_at, outcome, planned, applied, failed, skipped, conflicts, message FROM runs ORDER BY id DESC LIMIT ?1")
            .at(p)?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(RunRow {
                    id: r.get(0)?,
                    mode: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    outcome: r.get(4)?,
                    planned: r.get(5)?,
                    applied: r.get(6)?,
                    failed: r.get(7)?,
                    skipped: r.get(8)?,
                    conflicts: r.get(9)?,
                    message: r.get(10)?,
                })
            })
            .at(p)?;
        rows.collect::<Result<_, _>>().at(p)
    }

    /// Records whose writes failed, most recent first.
    pub fn failures(&self) -> Result<Vec<FailureRow>, StateError> {
        let p = &self.path;
        let mut stmt = self
            .conn
            .prepare("SELECT provider, native, attempts, last_error, error_kind, first_failed_at, last_failed_at, last_run FROM failures ORDER BY last_failed_at DESC, provider, native")
            .at(p)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })
            .at(p)?;
        let mut out = Vec::new();
        for row in rows {
            let (
                provider,
                native,
                attempts,
                last_error,
                error_kind,
                first_failed_at,
                last_failed_at,
                last_run,
            ) = row.at(p)?;
            let Ok(provider) = provider.parse::<ProviderKind>() else {
                continue;
            };
            out.push(FailureRow {
                record: RecordId::new(provider, native),
                attempts,
                last_error,
                error_kind,
                first_failed_at,
                last_failed_at,
                last_run,
            });
        }
        Ok(out)
    }

    /// Counts of the write log by state (for status and tests).
    pub fn write_counts(&self) -> Result<HashMap<String, i64>, StateError> {
        let p = &self.path;
        let mut stmt = self
            .conn
            .prepare("SELECT state, COUNT(*) FROM writes GROUP BY state")
            .at(p)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .at(p)?;
        rows.collect::<Result<_, _>>().at(p)
    }

    /// SQLite's own integrity check: `"ok"` when the file is sound.
    pub fn integrity_check(&self) -> Result<String, StateError> {
        self.conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .at(&self.path)
    }

    /// The last finished run of `mode` that succeeded, if any.
    pub fn last_success(&self) -> Result<Option<String>, StateError> {
        self.conn
            .query_row("SELECT finished_at FROM runs WHERE outcome = 'ok' AND mode != 'diff' ORDER BY id DESC LIMIT 1", [], |r| r.get(0))
            .optional()
            .at(&self.path)
    }
}

/// The lock file guarding a state file.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Names the state file on a SQLite error: `conn.execute(..).at(path)?`.
trait AtPath<T> {
    /// The result, its error wrapped in [`StateError::Sqlite`] for `path`.
    fn at(self, path: &Path) -> Result<T, StateError>;
}

impl<T> AtPath<T> for rusqlite::Result<T> {
    fn at(self, path: &Path) -> Result<T, StateError> {
        self.map_err(|source| StateError::Sqlite {
            path: path.into(),
            source,
        })
    }
}

/// Writes this process's id into the lock file it now holds, so a second process can say who
/// holds the state. Best effort: the lock works without it.
fn record_holder(mut lock: &File) {
    use std::io::Write as _;
    let _ = lock
        .set_len(0)
        .and_then(|()| write!(lock, "{}", std::process::id()))
        .and_then(|()| lock.flush());
}

/// When a timestamp string was written, for display.
pub fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A record id as stored (provider name and native id); `None` for a provider this version
/// does not know (a row written by a newer one is skipped, not misread).
fn record_id(provider: &str, native: String) -> Option<RecordId> {
    provider
        .parse::<ProviderKind>()
        .ok()
        .map(|p| RecordId::new(p, native))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Patch, Value};
    use crate::reconcile::Agreed;

    /// The state loads records in the order of the listing they were first saved from, which
    /// is what lets the planner join it to the next listing in one pass; records saved by a
    /// write get their place afterwards, and a later save never moves a record.
    #[test]
    fn records_load_in_the_order_of_their_first_listing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = StateStore::open(&dir.path().join("s.db")).expect("open");
        let ids: Vec<RecordId> = ["9", "10", "2", "100"]
            .into_iter()
            .map(|n| RecordId::new(ProviderKind::Protocol, n))
            .collect();
        let person: PersonId = "p:1".into();
        let baseline = Baseline::new();
        let empty = Memory::default();
        // Listed as 9, 10, 2, 100 (not the ids' text order); "2" was written, so its row comes
        // from the write's confirmation, without a place.
        store
            .save_records(
                [0, 1, 3].map(|i| (&ids[i], &person, &baseline, i as i64 + 1)),
                &empty,
            )
            .expect("save");
        let run = store.begin_run(Mode::Sync).expect("run");
        let write = store
            .write_intended(
                run,
                &Update {
                    person: person.clone(),
                    patch: Patch {
                        record: ids[2].clone(),
                        update_ref: "2".into(),
                        changes: Vec::new(),
                    },
                    reasons: Vec::new(),
                },
            )
            .expect("intended");
        store
            .write_confirmed(write, &ids[2], &person, &baseline)
            .expect("confirmed");
        store.place_records([(&ids[2], 3)]).expect("placed");
        let order = |store: &StateStore| -> Vec<String> {
            let m = store.load_memory().expect("load");
            m.links.keys().map(|id| id.native.to_string()).collect()
        };
        assert_eq!(order(&store), ["9", "10", "2", "100"]);
        // A later listing in another order changes nothing: each keeps its first place.
        let other = Baseline::from([(Field::Name, FieldValue::Scalar(None))]);
        store
            .save_records(
                [3, 2, 1, 0].map(|i| (&ids[i], &person, &other, 4 - i as i64)),
                &empty,
            )
            .expect("save again");
        store.place_records([(&ids[0], 1)]).expect("placed");
        assert_eq!(order(&store), ["9", "10", "2", "100"]);

        // A row without a place (here one only a confirmed write saved) loads first, and the
        // next save gives it its place even though nothing else about it changed.
        let late = RecordId::new(ProviderKind::Protocol, "7");
        let run = store.begin_run(Mode::Sync).expect("run");
        let write = store
            .write_intended(
                run,
                &Update {
                    person: person.clone(),
                    patch: Patch {
                        record: late.clone(),
                        update_ref: "7".into(),
                        changes: Vec::new(),
                    },
                    reasons: Vec::new(),
                },
            )
            .expect("intended");
        store
            .write_confirmed(write, &late, &person, &other)
            .expect("confirmed");
        let m = store.load_memory().expect("load");
        assert_eq!(
            m.links.keys().next(),
            Some(&late),
            "unplaced rows load first"
        );
        assert_eq!(
            store
                .save_records([(&late, &person, &other, 5)], &m)
                .expect("save"),
            0,
            "nothing but its place changed"
        );
        assert_eq!(order(&store), ["9", "10", "2", "100", "7"]);
    }

    #[test]
    fn second_opener_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let _first = StateStore::open(&path).expect("first open");
        let err = StateStore::open(&path).expect_err("second open");
        let pid = std::process::id();
        assert!(
            matches!(err, StateError::Locked { holder: Some(p), .. } if p == pid),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("in use by contact-sync process {pid}")),
            "{err}"
        );
    }

    #[test]
    fn memory_round_trips_and_write_log_settles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/s.db");
        let mut store = StateStore::open(&path).expect("open");
        let id = RecordId::new(ProviderKind::Privy, "a");
        let person: PersonId = "p:1".into();
        let baseline: Baseline =
            [(Field::Name, FieldValue::Scalar(Some(Value::plain("Ada"))))].into();
        let agreed: Agreed = [(Field::Name, FieldValue::Scalar(Some(Value::plain("Ada"))))].into();
        let empty = Memory::default();
        assert_eq!(
            store
                .save_records([(&id, &person, &baseline, 1)], &empty)
                .expect("save"),
            1
        );
        store
            .save_people(
                &[PersonPlan {
                    person: person.clone(),
                    records: vec![id.clone()],
                    agreed: agreed.clone(),
                }],
                &empty,
            )
            .expect("people");
        let m = store.load_memory().expect("load");
        assert_eq!(m.baselines.get(&id), Some(&baseline));
        assert_eq!(m.links.get(&id), Some(&person));
        assert_eq!(m.agreed.get(&person), Some(&agreed));
        assert_eq!(
            store
                .save_records([(&id, &person, &baseline, 1)], &m)
                .expect("save"),
            0,
            "unchanged rows are not rewritten"
        );

        let run = store.begin_run(Mode::Sync).expect("run");
        let update = Update {
            person: person.clone(),
            patch: Patch {
                record: id.clone(),
                update_ref: "a".into(),
                changes: vec![],
            },
            reasons: vec![],
        };
        let w = store.write_intended(run, &update).expect("intended");
        assert_eq!(store.pending_writes().expect("pending").len(), 1);
        store
            .write_failed(run, w, &id, Some(503), "server", "boom")
            .expect("failed");
        assert_eq!(store.failures().expect("failures")[0].attempts, 1);
        let w2 = store.write_intended(run, &update).expect("intended");
        store
            .write_confirmed(w2, &id, &person, &baseline)
            .expect("confirmed");
        assert!(
            store.failures().expect("failures").is_empty(),
            "success clears the dead letter"
        );
        assert!(store.pending_writes().expect("pending").is_empty());
        store
            .finish_run(run, RunOutcome::Ok, RunCounts::default(), None)
            .expect("finish");
        let runs = store.recent_runs(5).expect("runs");
        assert_eq!(runs[0].mode, "sync");
        assert_eq!(runs[0].outcome.as_deref(), Some("ok"));
        assert_eq!(store.integrity_check().expect("check"), "ok");
        drop(store);
        let ro = StateStore::open_read_only(&path)
            .expect("ro")
            .expect("exists");
        assert_eq!(ro.load_memory().expect("load").baselines.len(), 1);
    }
}
