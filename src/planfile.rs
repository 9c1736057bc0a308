//! Applyable plan files: `diff --plan-out plan.json` writes one, `sync --plan plan.json`
//! applies exactly it, after checking that each target record still holds the values the plan
//! was made from.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::model::{Change, Field, NewContact, Patch, ProviderKind, RecordId};
use crate::reconcile::{Agreed, Plan, Reason, Update};
use crate::state::codec::{decode_value, encode_value};

/// The plan file format identifier.
pub const FORMAT: &str = "contact-sync/plan/v1";

/// A plan as written to disk.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    pub format: String,
    /// [`crate::config::Config::fingerprint`] of the config the plan was made under.
    pub config_fingerprint: String,
    pub created_at: String,
    pub writes: Vec<PlannedWrite>,
    /// Contacts the plan would create (a plan from before creates existed has none).
    #[serde(default)]
    pub creates: Vec<PlannedCreate>,
    /// Agreed values of the people the writes concern, saved when the plan is applied.
    pub people: BTreeMap<String, BTreeMap<String, Json>>,
}

/// One request the plan would send.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedWrite {
    pub person: String,
    pub provider: String,
    pub record: String,
    pub update_ref: String,
    pub changes: Vec<PlannedChange>,
}

/// One contact the plan would create.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedCreate {
    pub person: String,
    pub provider: String,
    /// Each field to send, as stored.
    pub fields: BTreeMap<String, Json>,
    pub reason: String,
}

/// One field of a planned request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedChange {
    pub field: String,
    pub old: Json,
    pub new: Json,
    /// The rule or precedence that chose the value.
    pub reason: String,
}

/// Problems reading a plan file.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("cannot read plan file {path}: {message}")]
    Read { path: String, message: String },
    #[error("plan file {path} is not a contact-sync plan: {message}")]
    Invalid { path: String, message: String },
    #[error("plan file {path} was made under a different configuration (fingerprint {found}, current {current}); make a new plan with `contact-sync diff --plan-out`")]
    WrongConfig {
        path: String,
        found: String,
        current: String,
    },
}

impl PlanFile {
    /// Builds the file for `plan` under config `fingerprint`.
    pub fn from_plan(plan: &Plan, fingerprint: &str) -> Self {
        let touched: std::collections::BTreeSet<&str> =
            plan.updates.iter().map(|u| u.person.as_str()).collect();
        PlanFile {
            format: FORMAT.into(),
            config_fingerprint: fingerprint.into(),
            created_at: chrono::Utc::now().to_rfc3339(),
            writes: plan
                .updates
                .iter()
                .map(|u| PlannedWrite {
                    person: u.person.to_string(),
                    provider: u.provider().to_string(),
                    record: u.patch.record.native.to_string(),
                    update_ref: u.patch.update_ref.to_string(),
                    changes: u
                        .patch
                        .changes
                        .iter()
                        .zip(&u.reasons)
                        .map(|(c, r)| PlannedChange {
                            field: c.field.to_string(),
                            old: encode_value(&c.old),
                            new: encode_value(&c.new),
                            reason: r.to_string(),
                        })
                        .collect(),
                })
                .collect(),
            creates: plan
                .creates
                .iter()
                .map(|c| PlannedCreate {
                    person: c.person.to_string(),
                    provider: c.provider().to_string(),
                    fields: c
                        .new
                        .fields
                        .iter()
                        .map(|(f, v)| (f.to_string(), encode_value(v)))
                        .collect(),
                    reason: c.reason.clone(),
                })
                .collect(),
            people: plan
                .people
                .iter()
                .filter(|p| touched.contains(p.person.as_str()))
                .map(|p| {
                    (
                        p.person.to_string(),
                        p.agreed
                            .iter()
                            .map(|(f, v)| (f.to_string(), encode_value(v)))
                            .collect(),
                    )
                })
                .collect(),
        }
    }

    /// Reads and checks a plan file against the current config fingerprint.
    pub fn load(path: &Path, fingerprint: &str) -> Result<PlanFile, PlanFileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PlanFileError::Read {
            path: p.clone(),
            message: e.to_string(),
        })?;
        let file: PlanFile = serde_json::from_str(&text).map_err(|e| PlanFileError::Invalid {
            path: p.clone(),
            message: e.to_string(),
        })?;
        if file.format != FORMAT {
            return Err(PlanFileError::Invalid {
                path: p,
                message: format!("format {:?}, expected {FORMAT:?}", file.format),
            });
        }
        if file.config_fingerprint != fingerprint {
            return Err(PlanFileError::WrongConfig {
                path: p,
                found: file.config_fingerprint,
                current: fingerprint.into(),
            });
        }
        file.updates().map_err(|message| PlanFileError::Invalid {
            path: p.clone(),
            message,
        })?;
        file.creates()
            .map_err(|message| PlanFileError::Invalid { path: p, message })?;
        Ok(file)
    }

    /// The planned creates, as (person, contact to create).
    pub fn creates(&self) -> Result<Vec<(String, NewContact)>, String> {
        self.creates
            .iter()
            .map(|c| {
                let provider: ProviderKind = c.provider.parse()?;
                let mut fields = Vec::new();
                for (name, json) in &c.fields {
                    let field: Field = name.parse()?;
                    let value = decode_value(field, json)
                        .ok_or_else(|| format!("value {json} does not fit field {field}"))?;
                    fields.push((field, value));
                }
                fields.sort_by_key(|(f, _)| *f);
                Ok((c.person.clone(), NewContact { provider, fields }))
            })
            .collect()
    }

    /// The planned writes as updates.
    pub fn updates(&self) -> Result<Vec<Update>, String> {
        self.writes
            .iter()
            .map(|w| {
                let provider: ProviderKind = w.provider.parse()?;
                let mut changes = Vec::new();
                for c in &w.changes {
                    let field: Field = c.field.parse()?;
                    let decode = |j: &Json| {
                        decode_value(field, j)
                            .ok_or_else(|| format!("value {j} does not fit field {field}"))
                    };
                    changes.push(Change {
                        field,
                        old: decode(&c.old)?,
                        new: decode(&c.new)?,
                    });
                }
                Ok(Update {
                    person: w.person.as_str().into(),
                    patch: Patch {
                        record: RecordId::new(provider, w.record.clone()),
                        update_ref: w.update_ref.as_str().into(),
                        changes,
                    },
                    reasons: w
                        .changes
                        .iter()
                        .map(|c| Reason::FromPlan(c.reason.clone()))
                        .collect(),
                })
            })
            .collect()
    }

    /// The agreed values recorded in the plan.
    pub fn agreed(&self) -> BTreeMap<String, Agreed> {
        self.people
            .iter()
            .map(|(person, fields)| {
                let decoded = fields
                    .iter()
                    .filter_map(|(k, v)| {
                        let f: Field = k.parse().ok()?;
                        Some((f, decode_value(f, v)?))
                    })
                    .collect();
                (person.clone(), decoded)
            })
            .collect()
    }
}
