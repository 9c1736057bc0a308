//! What the scan cadence remembers (SPEC section 14): each provider's [`CostModel`], and its
//! snapshot, the records as last listed, through which a deferred provider takes part in a run.
//!
//! A snapshot is one row per record holding the record as a compact JSON array (see
//! [`encode_contact`]); a provider's rows are replaced in one transaction after each complete
//! listing, and a record's row is refreshed when a write to it is confirmed, so the snapshot is
//! what the provider held when the run ended.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value as Json};

use super::{now, AtPath, StateError, StateStore};
use crate::cadence::CostModel;
use crate::model::{Contact, Name, ProviderKind, Value};

/// The schema these functions use (migration 3).
pub(super) const MIGRATION: &str = "
    CREATE TABLE scan_costs (
        provider TEXT PRIMARY KEY,
        last_scan_at TEXT,
        pages INTEGER NOT NULL DEFAULT 0,
        contacts INTEGER NOT NULL DEFAULT 0,
        writes INTEGER NOT NULL DEFAULT 0,
        spent_today INTEGER NOT NULL DEFAULT 0,
        day_remaining INTEGER,
        day_resets_at TEXT,
        updated_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE snapshots (
        provider TEXT NOT NULL,
        native TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (provider, native)
    ) WITHOUT ROWID;";

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl StateStore {
    /// The cost model of `provider`; the default (never scanned, nothing spent) when none is
    /// stored.
    pub fn cost_model(&self, provider: ProviderKind) -> Result<CostModel, StateError> {
        let p = &self.path;
        let row = self
            .conn
            .query_row(
                "SELECT last_scan_at, pages, contacts, writes, spent_today, day_remaining, day_resets_at FROM scan_costs WHERE provider = ?1",
                [provider.as_str()],
                |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ))
                },
            )
            .optional()
            .at(p)?;
        let Some((last, pages, contacts, writes, spent, remaining, resets)) = row else {
            return Ok(CostModel::default());
        };
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(CostModel {
            last_scan_at: last.as_deref().and_then(super::parse_ts),
            pages: n(pages),
            contacts: n(contacts),
            writes: n(writes),
            spent_today: n(spent),
            day_remaining: remaining.map(n),
            day_resets_at: resets.as_deref().and_then(super::parse_ts),
        })
    }

    /// Saves the cost model of `provider`.
    pub fn save_cost_model(&self, provider: ProviderKind, m: &CostModel) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO scan_costs (provider, last_scan_at, pages, contacts, writes, spent_today, day_remaining, day_resets_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(provider) DO UPDATE SET last_scan_at = excluded.last_scan_at, pages = excluded.pages, contacts = excluded.contacts, writes = excluded.writes,
                   spent_today = excluded.spent_today, day_remaining = excluded.day_remaining, day_resets_at = excluded.day_resets_at, updated_at = excluded.updated_at",
                params![
                    provider.as_str(),
                    m.last_scan_at.map(ts),
                    count(m.pages),
                    count(m.contacts),
                    count(m.writes),
                    count(m.spent_today),
                    m.day_remaining.map(count),
                    m.day_resets_at.map(ts),
                    now()
                ],
            )
            .at(&self.path)?;
        Ok(())
    }

    /// The records of `provider` as last listed (empty when it was never listed). A row that
    /// does not decode is left out and logged.
    pub fn snapshot(&self, provider: ProviderKind) -> Result<Vec<Contact>, StateError> {
        let p = &self.path;
        let mut stmt = self
            .conn
            .prepare("SELECT native, record FROM snapshots WHERE provider = ?1 ORDER BY native")
            .at(p)?;
        let rows = stmt
            .query_map([provider.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .at(p)?;
        let mut out = Vec::new();
        for row in rows {
            let (native, text) = row.at(p)?;
            match decode_contact(provider, &native, &text) {
                Some(c) => out.push(c),
                None => {
                    tracing::warn!(provider = %provider, record = %native, "Snapshot row does not decode; left out.")
                }
            }
        }
        Ok(out)
    }

    /// Whether a snapshot of `provider` is stored.
    pub fn has_snapshot(&self, provider: ProviderKind) -> Result<bool, StateError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM snapshots WHERE provider = ?1)",
                [provider.as_str()],
                |r| r.get(0),
            )
            .at(&self.path)
    }

    /// Replaces the snapshot of `provider` by `records` (a complete listing), in one
    /// transaction.
    pub fn save_snapshot(
        &mut self,
        provider: ProviderKind,
        records: &[Contact],
    ) -> Result<(), StateError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().at(&path)?;
        tx.execute(
            "DELETE FROM snapshots WHERE provider = ?1",
            [provider.as_str()],
        )
        .at(&path)?;
        {
            let mut insert = tx
                .prepare("INSERT OR REPLACE INTO snapshots (provider, native, record) VALUES (?1, ?2, ?3)")
                .at(&path)?;
            for c in records.iter().filter(|c| c.id.provider == provider) {
                insert
                    .execute(params![
                        provider.as_str(),
                        c.id.native.as_str(),
                        encode_contact(c)
                    ])
                    .at(&path)?;
            }
        }
        tx.commit().at(&path)
    }

    /// Refreshes the snapshot rows of records a confirmed write changed (the record as the
    /// provider answered), in one transaction.
    pub fn refresh_snapshot<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a Contact>,
    ) -> Result<(), StateError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().at(&path)?;
        {
            let mut upsert = tx
                .prepare("INSERT OR REPLACE INTO snapshots (provider, native, record) VALUES (?1, ?2, ?3)")
                .at(&path)?;
            for c in records {
                upsert
                    .execute(params![
                        c.id.provider.as_str(),
                        c.id.native.as_str(),
                        encode_contact(c)
                    ])
                    .at(&path)?;
            }
        }
        tx.commit().at(&path)
    }
}

fn encode_value(v: &Option<Value>) -> Json {
    match v {
        None => Json::Null,
        Some(v) if v.valid() && v.raw() == v.key() => Json::String(v.raw().to_owned()),
        Some(v) => json!([v.raw(), v.key(), v.valid()]),
    }
}

fn decode_value(j: &Json) -> Option<Option<Value>> {
    Some(match j {
        Json::Null => None,
        Json::String(s) => Some(Value::plain(s.clone())),
        Json::Array(a) => Some(Value::new(
            a.first()?.as_str()?,
            a.get(1)?.as_str()?,
            a.get(2)?.as_bool()?,
        )),
        _ => return None,
    })
}

fn opt_str(j: &Json) -> Option<Option<&str>> {
    match j {
        Json::Null => Some(None),
        Json::String(s) => Some(Some(s)),
        _ => None,
    }
}

/// Encodes a record for its snapshot row: a JSON array of `update_ref`, `write_blocked`, the
/// name (`[display, given, family]`), e-mail, phone, avatar, username, external id (each a
/// string when its raw text is its valid key, else `[raw, key, valid]`), tags, custom fields
/// and `updated_at` (milliseconds since the epoch). A name is its display form alone when its
/// parts are what that form splits into. The id is the row's key, and warnings are not kept (they were reported when
/// the record was listed).
pub fn encode_contact(c: &Contact) -> String {
    // A name whose parts are what its display form splits into is stored as that form alone.
    let name = match &c.name {
        None => Json::Null,
        Some(n) if *n == Name::from_display(n.display()) => Json::String(n.display().to_owned()),
        Some(n) => json!([n.display(), n.given(), n.family()]),
    };
    json!([
        c.update_ref,
        c.write_blocked,
        name,
        encode_value(&c.email),
        encode_value(&c.phone),
        encode_value(&c.avatar_url),
        encode_value(&c.username),
        encode_value(&c.external_id),
        c.tags.to_strings(),
        c.custom_fields.to_btree(),
        c.updated_at.map(|t| t.timestamp_millis()),
    ])
    .to_string()
}

/// Decodes a snapshot row written by [`encode_contact`]; `None` when it does not fit.
pub fn decode_contact(provider: ProviderKind, native: &str, text: &str) -> Option<Contact> {
    let Json::Array(a) = serde_json::from_str::<Json>(text).ok()? else {
        return None;
    };
    let mut c = Contact::new(provider, native);
    c.update_ref = opt_str(a.first()?)?.map(Into::into);
    c.write_blocked = opt_str(a.get(1)?)?.map(Into::into);
    c.name = match a.get(2)? {
        Json::Null => None,
        Json::String(display) => Some(Name::from_display(display)),
        // Both ways of building a name make its display form from its parts.
        Json::Array(n) => Some(Name::from_parts(opt_str(n.get(1)?)?, opt_str(n.get(2)?)?)),
        _ => return None,
    };
    c.email = decode_value(a.get(3)?)?;
    c.phone = decode_value(a.get(4)?)?;
    c.avatar_url = decode_value(a.get(5)?)?;
    c.username = decode_value(a.get(6)?)?;
    c.external_id = decode_value(a.get(7)?)?;
    c.tags = a
        .get(8)?
        .as_array()?
        .iter()
        .map(|t| t.as_str().map(String::from))
        .collect::<Option<_>>()?;
    c.custom_fields = a
        .get(9)?
        .as_object()?
        .iter()
        .map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect::<Option<_>>()?;
    c.updated_at = match a.get(10)? {
        Json::Null => None,
        j => Some(DateTime::from_timestamp_millis(j.as_i64()?)?),
    };
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Normalizer;

    fn sample(i: usize) -> Contact {
        let norm = Normalizer::default();
        let mut c = Contact::new(ProviderKind::Privy, format!("pv_{i:06}"));
        c.name = Some(Name::from_display(&format!("Person Number {i}")));
        c.email = norm.email(&format!("Person{i}@Example.com")).0;
        c.phone = norm.phone(&format!("+1 (415) 555-{:04}", i % 10_000)).0;
        if i.is_multiple_of(4) {
            c.tags.insert("vip");
        }
        if i.is_multiple_of(3) {
            c.custom_fields.insert("tier", "gold");
        }
        c.updated_at = super::super::parse_ts("2026-01-05T10:00:00.000Z");
        c
    }

    #[test]
    fn snapshots_round_trip_and_are_replaced_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = StateStore::open(&dir.path().join("s.db")).expect("open");
        let mut odd = Contact::new(ProviderKind::Chatwoot, "8");
        odd.update_ref = None;
        odd.write_blocked = Some("no inbox".into());
        odd.phone = Some(Value::new("not a phone", "not a phone", false));
        odd.name = Some(Name::from_display("Cher"));
        let records = vec![sample(1), sample(2)];
        store
            .save_snapshot(ProviderKind::Privy, &records)
            .expect("save");
        store
            .save_snapshot(ProviderKind::Chatwoot, std::slice::from_ref(&odd))
            .expect("save");
        assert_eq!(store.snapshot(ProviderKind::Privy).expect("load"), records);
        assert_eq!(
            store.snapshot(ProviderKind::Chatwoot).expect("load"),
            vec![odd]
        );
        // A new listing replaces the old one (a deleted record leaves the snapshot).
        store
            .save_snapshot(ProviderKind::Privy, &records[1..])
            .expect("save");
        assert_eq!(
            store.snapshot(ProviderKind::Privy).expect("load"),
            records[1..]
        );
        // A confirmed write refreshes its row only.
        let mut written = records[1].clone();
        written.tags.insert("lead");
        store
            .refresh_snapshot(std::iter::once(&written))
            .expect("refresh");
        assert_eq!(
            store.snapshot(ProviderKind::Privy).expect("load"),
            vec![written]
        );
        assert!(store.has_snapshot(ProviderKind::Privy).expect("has"));
        assert!(!store.has_snapshot(ProviderKind::Protocol).expect("has"));
        assert!(decode_contact(ProviderKind::Privy, "x", "[1,2]").is_none());
        assert!(decode_contact(ProviderKind::Privy, "x", "not json").is_none());
    }

    #[test]
    fn cost_models_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(&dir.path().join("s.db")).expect("open");
        assert_eq!(
            store.cost_model(ProviderKind::Privy).expect("load"),
            CostModel::default()
        );
        let now: DateTime<Utc> = "2026-01-05T10:00:00Z".parse().expect("time");
        let mut m = CostModel::default();
        m.scanned(now, 500, 50_000);
        m.writes = 12;
        m.spend(
            now,
            512,
            Some(9_400),
            Some(std::time::Duration::from_secs(3_600)),
        );
        store
            .save_cost_model(ProviderKind::Privy, &m)
            .expect("save");
        assert_eq!(store.cost_model(ProviderKind::Privy).expect("load"), m);
        m.spent_today += 1;
        store
            .save_cost_model(ProviderKind::Privy, &m)
            .expect("save again");
        assert_eq!(store.cost_model(ProviderKind::Privy).expect("load"), m);
    }

    /// How big a snapshot is: 10,000 typical records, measured in the SQLite file. Prints the
    /// figure (`cargo test --lib snapshot_size -- --nocapture`) and keeps it under 220 bytes a
    /// record, well under the planner's own memory per record.
    #[test]
    fn snapshot_size_per_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let mut store = StateStore::open(&path).expect("open");
        let n = 10_000;
        let records: Vec<Contact> = (0..n).map(sample).collect();
        let page = |s: &StateStore| -> i64 {
            let count: i64 = s
                .conn
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .expect("pages");
            let size: i64 = s
                .conn
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .expect("size");
            count * size
        };
        let before = page(&store);
        store
            .save_snapshot(ProviderKind::Privy, &records)
            .expect("save");
        store
            .conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .expect("checkpoint");
        let bytes = page(&store) - before;
        let per_record = bytes as f64 / n as f64;
        let encoded: usize = records.iter().map(|c| encode_contact(c).len()).sum();
        println!(
            "snapshot: {per_record:.0} bytes/record in SQLite ({:.0} bytes/record encoded)",
            encoded as f64 / n as f64
        );
        assert!(per_record < 220.0, "{per_record} bytes/record");
    }
}
