//! Run reports: what a run planned, sent, skipped and could not do, rendered as text (a table
//! grouped per person), markdown, or JSON with a stable, documented schema (`README.md`,
//! "Report schema").

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value as Json;

use crate::executor::Outcome;
use crate::model::{Change, CompactString, Field, FieldValue, ProviderKind};
use crate::provider::mapping::ProviderMapping;
use crate::reconcile::Plan;
use crate::state::codec::encode_value;
use crate::state::Mode;

/// The JSON schema identifier; bumped only for incompatible changes.
pub const SCHEMA: &str = "contact-sync/report/v1";

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

/// The status of one planned change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeStatus {
    Planned,
    Applied,
    Failed,
    NotAttempted,
    Stale,
}

/// A provider-level problem (listing failed, guard rail tripped, ...).
#[derive(Debug, Clone, Serialize)]
pub struct ProviderProblem {
    pub provider: String,
    pub stage: String,
    pub error: String,
}

/// A guard rail that stopped a run.
#[derive(Debug, Clone, Serialize)]
pub struct GuardTrip {
    pub provider: String,
    pub threshold: String,
    pub limit: String,
    pub actual: String,
    pub message: String,
}

/// Everything about one run.
#[derive(Debug)]
pub struct RunReport {
    pub mode: Mode,
    pub run_id: Option<i64>,
    pub plan: Plan,
    /// One per plan update, in order; `None` when nothing was sent (diff).
    pub outcomes: Option<Vec<Outcome>>,
    /// Per update: stale because the record changed since the plan file was made.
    pub stale: Vec<(usize, String)>,
    pub listed: BTreeMap<ProviderKind, usize>,
    /// Per provider listed: (records that moved during the scan, scans made).
    pub scanned: BTreeMap<ProviderKind, (usize, usize)>,
    pub problems: Vec<ProviderProblem>,
    pub guard: Vec<GuardTrip>,
    pub warnings: Vec<String>,
    /// Writes left unconfirmed by an earlier process: (verified as applied, not applied).
    pub pending_checked: (usize, usize),
    /// Creates left pending by an earlier run, and how they were settled.
    pub creates_settled: crate::import::SettledCreates,
    /// One per plan create, in order; `None` when nothing was sent (diff, guard rail).
    pub create_outcomes: Option<Vec<crate::import::CreateOutcome>>,
    pub duration_ms: u128,
    /// Time spent listing (all providers in parallel).
    pub list_ms: u128,
    /// Time spent applying (all providers in parallel).
    pub apply_ms: u128,
    /// Per provider: time from the start of the apply phase to its last write.
    pub lanes: BTreeMap<ProviderKind, std::time::Duration>,
    /// The run's `[mapping]`, so changes can show a provider's own name of a tag or custom
    /// field beside the common one.
    pub mapping: crate::provider::mapping::Mapping,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    schema: &'static str,
    mode: &'a str,
    run_id: Option<i64>,
    changes: Vec<JsonChange>,
    skipped: Vec<JsonSkip>,
    conflicts: Vec<JsonConflict>,
    ambiguous: Vec<JsonAmbiguous>,
    join_candidates: Vec<JsonJoinCandidate>,
    /// People out of scope (`[scope]`), once each with the reason.
    excluded: Vec<JsonExcluded>,
    creates: Vec<JsonCreate>,
    failures: Vec<JsonFailure>,
    guard: &'a [GuardTrip],
    warnings: &'a [String],
    summary: JsonSummary,
}

#[derive(Serialize)]
struct JsonChange {
    person: String,
    provider: String,
    record: String,
    field: String,
    old: Json,
    new: Json,
    reason: String,
    status: ChangeStatus,
    /// For tags and custom fields: common name → the provider's own name, where they differ.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    provider_names: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct JsonSkip {
    person: String,
    provider: String,
    record: String,
    field: String,
    current: Json,
    wanted: Json,
    rule: String,
    detail: String,
}

#[derive(Serialize)]
struct JsonCandidate {
    provider: String,
    record: String,
    value: String,
}

#[derive(Serialize)]
struct JsonConflict {
    person: String,
    field: String,
    key: Option<String>,
    candidates: Vec<JsonCandidate>,
    winner: String,
}

#[derive(Serialize)]
struct JsonAmbiguous {
    records: Vec<String>,
    reason: String,
    /// Existing people the records' keys point at, when that is the ambiguity.
    people: Vec<String>,
}

#[derive(Serialize)]
struct JsonCreate {
    person: String,
    provider: String,
    /// Each field sent, by name, as stored (`null`, a string, a list or a map).
    fields: BTreeMap<String, Json>,
    reason: String,
    /// `planned`, `created`, `linked-existing`, `failed`, `unknown`, `not-attempted`, or
    /// `skipped` (with `rule`).
    status: String,
    /// The record it made or linked (`provider:id`).
    record: Option<String>,
    rule: Option<String>,
    error: Option<String>,
}

#[derive(Serialize)]
struct JsonJoinCandidate {
    via: &'static str,
    key: String,
    holders: Vec<String>,
    people: Vec<JsonPerson>,
    /// Whether the people could be one person (no provider in two of them).
    joinable: bool,
}

#[derive(Serialize)]
struct JsonPerson {
    person: String,
    records: Vec<String>,
}

#[derive(Serialize)]
struct JsonExcluded {
    person: String,
    records: Vec<String>,
    reason: String,
}

/// Records that differ from the agreed value of a field but are not written, because their
/// provider is not a target of it: one line per provider and field, not one per record.
#[derive(Serialize)]
struct JsonUntargeted {
    provider: String,
    field: String,
    records: usize,
    rule: &'static str,
}

#[derive(Serialize)]
struct JsonFailure {
    provider: String,
    record: Option<String>,
    stage: String,
    kind: String,
    error: String,
}

#[derive(Serialize, Default)]
struct JsonProviderSummary {
    listed: usize,
    /// Records that moved between pages during the scan (seen twice, or found by a re-scan).
    moved: usize,
    /// Full scans made (more than one when a scan ended short of the provider's total).
    scans: usize,
    planned_writes: usize,
    applied: usize,
    failed: usize,
    skipped: usize,
}

#[derive(Serialize)]
struct JsonSummary {
    people: usize,
    planned_writes: usize,
    applied: usize,
    failed: usize,
    not_attempted: usize,
    stale: usize,
    skipped: usize,
    conflicts: usize,
    ambiguous: usize,
    join_candidates: usize,
    excluded: usize,
    untargeted: Vec<JsonUntargeted>,
    planned_creates: usize,
    created: usize,
    create_skips: usize,
    pending_creates_linked: usize,
    pending_creates_not_applied: usize,
    pending_writes_verified: usize,
    pending_writes_not_applied: usize,
    duration_ms: u128,
    providers: BTreeMap<String, JsonProviderSummary>,
}

impl RunReport {
    /// Each provider's view of the run's mapping; empty when it renames nothing.
    fn provider_mappings(&self) -> BTreeMap<ProviderKind, ProviderMapping> {
        if self.mapping.custom_fields.is_empty() && self.mapping.tags.is_empty() {
            return BTreeMap::new();
        }
        ProviderKind::ALL
            .into_iter()
            .map(|k| (k, self.mapping.for_provider(k)))
            .collect()
    }

    fn status(&self, i: usize) -> ChangeStatus {
        if self.stale.iter().any(|(s, _)| *s == i) {
            return ChangeStatus::Stale;
        }
        match self.outcomes.as_ref().and_then(|o| o.get(i)) {
            None => ChangeStatus::Planned,
            Some(Outcome::Applied(_)) => ChangeStatus::Applied,
            Some(Outcome::Failed(_)) => ChangeStatus::Failed,
            Some(Outcome::NotAttempted(_)) => ChangeStatus::NotAttempted,
        }
    }

    /// Writes that failed, plus provider-level problems.
    pub fn failure_count(&self) -> usize {
        self.record_failures().count() + self.problems.len() + self.create_failures()
    }

    /// Creates that were sent and failed, or whose outcome is unknown.
    pub fn create_failures(&self) -> usize {
        self.create_outcomes
            .iter()
            .flatten()
            .filter(|o| {
                matches!(
                    o,
                    crate::import::CreateOutcome::Failed(_)
                        | crate::import::CreateOutcome::Unknown(_)
                )
            })
            .count()
    }

    /// Creates the provider made or linked.
    pub fn created(&self) -> usize {
        self.create_outcomes
            .iter()
            .flatten()
            .filter(|o| o.record().is_some())
            .count()
    }

    /// The status of create `i`: planned (nothing sent), or what sending it ended in.
    fn create_status(&self, i: usize) -> &'static str {
        match self.create_outcomes.as_ref().and_then(|o| o.get(i)) {
            None => "planned",
            Some(o) => o.label(),
        }
    }

    fn record_failures(&self) -> impl Iterator<Item = (usize, String, &'static str)> + '_ {
        self.outcomes
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Outcome::Failed(e) => Some((i, e.to_string(), e.metric_label())),
                Outcome::NotAttempted(why) => Some((i, why.clone(), "not_attempted")),
                Outcome::Applied(_) => None,
            })
    }

    /// Count of applied writes.
    pub fn applied(&self) -> usize {
        self.outcomes
            .iter()
            .flatten()
            .filter(|o| o.is_applied())
            .count()
    }

    fn summary(&self) -> JsonSummary {
        let mut providers: BTreeMap<String, JsonProviderSummary> = self
            .listed
            .iter()
            .map(|(p, n)| {
                (
                    p.to_string(),
                    JsonProviderSummary {
                        listed: *n,
                        moved: self.scanned.get(p).map_or(0, |s| s.0),
                        scans: self.scanned.get(p).map_or(1, |s| s.1),
                        ..Default::default()
                    },
                )
            })
            .collect();
        for (i, u) in self.plan.updates.iter().enumerate() {
            let e = providers.entry(u.provider().to_string()).or_default();
            e.planned_writes += 1;
            match self.status(i) {
                ChangeStatus::Applied => e.applied += 1,
                ChangeStatus::Failed | ChangeStatus::NotAttempted => e.failed += 1,
                _ => {}
            }
        }
        for s in &self.plan.skipped {
            providers
                .entry(s.record.provider.to_string())
                .or_default()
                .skipped += 1;
        }
        let outcomes = self.outcomes.iter().flatten();
        JsonSummary {
            people: self.plan.people.len(),
            planned_writes: self.plan.updates.len(),
            applied: self.applied(),
            failed: outcomes
                .clone()
                .filter(|o| matches!(o, Outcome::Failed(_)))
                .count(),
            not_attempted: outcomes
                .filter(|o| matches!(o, Outcome::NotAttempted(_)))
                .count(),
            stale: self.stale.len(),
            skipped: self.plan.skipped.len(),
            conflicts: self.plan.conflicts.len(),
            ambiguous: self.plan.ambiguous.len(),
            join_candidates: self.plan.join_candidates.len(),
            excluded: self.plan.excluded.len(),
            untargeted: self
                .plan
                .untargeted
                .iter()
                .map(|((p, f), n)| JsonUntargeted {
                    provider: p.to_string(),
                    field: f.to_string(),
                    records: *n,
                    rule: crate::provider::rules::RuleId::NotATarget.as_str(),
                })
                .collect(),
            planned_creates: self.plan.creates.len(),
            created: self.created(),
            create_skips: self.plan.create_skips.len(),
            pending_creates_linked: self.creates_settled.linked,
            pending_creates_not_applied: self.creates_settled.not_applied,
            pending_writes_verified: self.pending_checked.0,
            pending_writes_not_applied: self.pending_checked.1,
            duration_ms: self.duration_ms,
            providers,
        }
    }

    /// The report as JSON (schema [`SCHEMA`]).
    pub fn to_json(&self) -> String {
        let mappings = self.provider_mappings();
        let mut changes = Vec::new();
        for (i, u) in self.plan.updates.iter().enumerate() {
            for (c, reason) in u.patch.changes.iter().zip(&u.reasons) {
                changes.push(JsonChange {
                    person: u.person.to_string(),
                    provider: u.provider().to_string(),
                    record: u.patch.record.native.to_string(),
                    field: c.field.to_string(),
                    old: shown(&c.old),
                    new: shown(&c.new),
                    reason: reason.to_string(),
                    status: self.status(i),
                    provider_names: provider_names(mappings.get(&u.provider()), c),
                });
            }
        }
        let skipped = self
            .plan
            .skipped
            .iter()
            .map(|s| JsonSkip {
                person: s.person.to_string(),
                provider: s.record.provider.to_string(),
                record: s.record.native.to_string(),
                field: s.field.to_string(),
                current: shown(&s.current),
                wanted: shown(&s.wanted),
                rule: s.rule.to_string(),
                detail: s.detail.clone(),
            })
            .collect();
        let conflicts = self
            .plan
            .conflicts
            .iter()
            .map(|c| JsonConflict {
                person: c.person.to_string(),
                field: c.field.to_string(),
                key: c.key.clone(),
                candidates: c
                    .candidates
                    .iter()
                    .map(|(id, v)| JsonCandidate {
                        provider: id.provider.to_string(),
                        record: id.native.to_string(),
                        value: v.clone(),
                    })
                    .collect(),
                winner: c.winner.to_string(),
            })
            .collect();
        let ambiguous = self
            .plan
            .ambiguous
            .iter()
            .map(|a| JsonAmbiguous {
                records: a.records.iter().map(ToString::to_string).collect(),
                reason: a.reason.clone(),
                people: a.people.iter().map(|p| p.to_string()).collect(),
            })
            .collect();
        let mut creates: Vec<JsonCreate> = self
            .plan
            .creates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let outcome = self.create_outcomes.as_ref().and_then(|o| o.get(i));
                JsonCreate {
                    person: c.person.to_string(),
                    provider: c.provider().to_string(),
                    fields: c
                        .new
                        .fields
                        .iter()
                        .map(|(f, v)| (f.as_str().to_owned(), shown(v)))
                        .collect(),
                    reason: c.reason.clone(),
                    status: self.create_status(i).to_owned(),
                    record: outcome.and_then(|o| o.record()).map(|r| r.id.to_string()),
                    rule: None,
                    error: outcome.and_then(|o| match o {
                        crate::import::CreateOutcome::Failed(e)
                        | crate::import::CreateOutcome::Unknown(e) => Some(e.to_string()),
                        crate::import::CreateOutcome::NotAttempted(why) => Some(why.clone()),
                        _ => None,
                    }),
                }
            })
            .collect();
        creates.extend(self.plan.create_skips.iter().map(|c| JsonCreate {
            person: c.person.to_string(),
            provider: c.provider.to_string(),
            fields: BTreeMap::new(),
            reason: c.detail.clone(),
            status: "skipped".into(),
            record: None,
            rule: Some(c.rule.to_string()),
            error: None,
        }));
        let join_candidates = self
            .plan
            .join_candidates
            .iter()
            .map(|j| JsonJoinCandidate {
                via: j.via,
                key: j.key.clone(),
                holders: j.holders.iter().map(ToString::to_string).collect(),
                people: j
                    .people
                    .iter()
                    .map(|(p, rs)| JsonPerson {
                        person: p.to_string(),
                        records: rs.iter().map(ToString::to_string).collect(),
                    })
                    .collect(),
                joinable: j.joinable(),
            })
            .collect();
        let excluded = self
            .plan
            .excluded
            .iter()
            .map(|x| JsonExcluded {
                person: x.person.to_string(),
                records: x.records.iter().map(ToString::to_string).collect(),
                reason: x.reason.clone(),
            })
            .collect();
        let mut failures: Vec<JsonFailure> = self
            .problems
            .iter()
            .map(|p| JsonFailure {
                provider: p.provider.clone(),
                record: None,
                stage: p.stage.clone(),
                kind: "provider".into(),
                error: p.error.clone(),
            })
            .collect();
        for (i, error, kind) in self.record_failures() {
            let u = &self.plan.updates[i];
            failures.push(JsonFailure {
                provider: u.provider().to_string(),
                record: Some(u.patch.record.native.to_string()),
                stage: "write".into(),
                kind: kind.into(),
                error,
            });
        }
        for (i, why) in &self.stale {
            let u = &self.plan.updates[*i];
            failures.push(JsonFailure {
                provider: u.provider().to_string(),
                record: Some(u.patch.record.native.to_string()),
                stage: "plan".into(),
                kind: "stale".into(),
                error: why.clone(),
            });
        }
        let report = JsonReport {
            schema: SCHEMA,
            mode: self.mode.as_str(),
            run_id: self.run_id,
            changes,
            skipped,
            conflicts,
            ambiguous,
            join_candidates,
            excluded,
            creates,
            failures,
            guard: &self.guard,
            warnings: &self.warnings,
            summary: self.summary(),
        };
        serde_json::to_string_pretty(&report)
            .unwrap_or_else(|e| format!("{{\"error\": \"cannot render report: {e}\"}}"))
    }

    /// A one-line summary per provider, for the end of a sync.
    pub fn provider_lines(&self) -> Vec<String> {
        self.summary()
            .providers
            .iter()
            .map(|(p, s)| {
                format!(
                    "{p:<9} listed {:>6}  planned {:>5}  applied {:>5}  failed {:>3}  skipped {:>4}",
                    s.listed, s.planned_writes, s.applied, s.failed, s.skipped
                )
            })
            .collect()
    }

    /// The report as a human-readable table grouped per person (or markdown).
    pub fn to_text(&self, markdown: bool) -> String {
        let mut out = String::new();
        let h = |level: usize, s: &str| {
            if markdown {
                format!("{} {s}\n\n", "#".repeat(level))
            } else {
                format!("{s}\n")
            }
        };
        let title = match self.mode {
            Mode::Diff => "contact-sync diff (dry run: nothing sent)",
            Mode::Sync => "contact-sync sync",
        };
        out.push_str(&h(1, title));
        let mappings = self.provider_mappings();
        let mut people: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (i, u) in self.plan.updates.iter().enumerate() {
            let status = match self.status(i) {
                ChangeStatus::Planned => "",
                ChangeStatus::Applied => " [applied]",
                ChangeStatus::Failed => " [FAILED]",
                ChangeStatus::NotAttempted => " [not sent]",
                ChangeStatus::Stale => " [stale: skipped]",
            };
            for (c, reason) in u.patch.changes.iter().zip(&u.reasons) {
                let names: Vec<String> = provider_names(mappings.get(&u.provider()), c)
                    .iter()
                    .map(|(common, own)| format!("{common} = {own:?}"))
                    .collect();
                let names = if names.is_empty() {
                    String::new()
                } else {
                    format!("; in {}: {}", u.provider(), names.join(", "))
                };
                people.entry(&u.person).or_default().push(row(
                    markdown,
                    "change",
                    &u.patch.record.to_string(),
                    c.field.as_str(),
                    &format!("{} → {}", c.old, c.new),
                    &format!("{reason}{status}{names}"),
                ));
            }
        }
        for (i, c) in self.plan.creates.iter().enumerate() {
            let status = match self.create_status(i) {
                "planned" => String::new(),
                other => format!(" [{other}]"),
            };
            let fields: Vec<String> = c
                .new
                .fields
                .iter()
                .map(|(f, v)| format!("{f}={v}"))
                .collect();
            people.entry(&c.person).or_default().push(row(
                markdown,
                "create",
                &format!("{}:(new)", c.provider()),
                "",
                &fields.join(", "),
                &format!("{}{status}", c.reason),
            ));
        }
        for c in &self.plan.create_skips {
            people.entry(&c.person).or_default().push(row(
                markdown,
                "skip",
                &format!("{}:(new)", c.provider),
                "create",
                "",
                &format!("[{}] {}", c.rule, c.detail),
            ));
        }
        for s in &self.plan.skipped {
            people.entry(&s.person).or_default().push(row(
                markdown,
                "skip",
                &s.record.to_string(),
                s.field.as_str(),
                &format!("{} → {}", s.current, s.wanted),
                &format!("[{}] {}", s.rule, s.detail),
            ));
        }
        for c in &self.plan.conflicts {
            let cands: Vec<String> = c
                .candidates
                .iter()
                .map(|(id, v)| format!("{id}={v:?}"))
                .collect();
            let field = match &c.key {
                Some(k) => format!("{}[{k}]", c.field),
                None => c.field.to_string(),
            };
            people.entry(&c.person).or_default().push(row(
                markdown,
                "conflict",
                &c.winner.to_string(),
                &field,
                &cands.join(" vs "),
                &format!("precedence chose {}", c.winner),
            ));
        }
        if people.is_empty() {
            out.push_str("No changes: every provider agrees.\n");
        }
        let names: BTreeMap<&str, &str> = self
            .plan
            .people
            .iter()
            .filter_map(|p| match p.agreed.get(&crate::model::Field::Name) {
                Some(FieldValue::Scalar(Some(v))) => Some((p.person.as_str(), v.raw())),
                _ => None,
            })
            .collect();
        for (person, rows) in &people {
            let label = match names.get(person) {
                Some(name) => format!("{name} ({person})"),
                None => (*person).to_string(),
            };
            if markdown {
                out.push_str(&format!(
                    "### {label}\n\n| | record | field | value | why |\n|---|---|---|---|---|\n"
                ));
            } else {
                out.push_str(&format!("\n{label}\n"));
            }
            for r in rows {
                out.push_str(r);
            }
            if markdown {
                out.push('\n');
            }
        }
        if !self.plan.join_candidates.is_empty() {
            out.push_str(&format!(
                "\n{}",
                h(2, "Join candidates (not joined; see `contact-sync review`)")
            ));
            for j in &self.plan.join_candidates {
                let people: Vec<String> = j.people.iter().map(|(p, _)| p.to_string()).collect();
                let holders: Vec<String> = j.holders.iter().map(ToString::to_string).collect();
                let _ = writeln!(
                    out,
                    "{}{} share the {} {} across people {}",
                    if markdown { "- " } else { "  " },
                    holders.join(" and "),
                    j.via,
                    j.key,
                    people.join(" and ")
                );
            }
        }
        if !self.plan.excluded.is_empty() {
            out.push_str(&format!("\n{}", h(2, "Excluded by scope (left alone)")));
            for x in &self.plan.excluded {
                let ids: Vec<String> = x.records.iter().map(ToString::to_string).collect();
                let _ = writeln!(
                    out,
                    "{}{} ({}): {}",
                    if markdown { "- " } else { "  " },
                    x.person,
                    ids.join(", "),
                    x.reason
                );
            }
        }
        if !self.plan.ambiguous.is_empty() {
            out.push_str(&format!("\n{}", h(2, "Ambiguous (left alone)")));
            for a in &self.plan.ambiguous {
                let ids: Vec<String> = a.records.iter().map(ToString::to_string).collect();
                let _ = writeln!(
                    out,
                    "{}{}: {}",
                    if markdown { "- " } else { "  " },
                    ids.join(", "),
                    a.reason
                );
            }
        }
        let failures: Vec<String> =
            self.problems
                .iter()
                .map(|p| format!("{} ({}): {}", p.provider, p.stage, p.error))
                .chain(
                    self.record_failures()
                        .map(|(i, e, _)| format!("{}: {e}", self.plan.updates[i].patch.record)),
                )
                .chain(self.stale.iter().map(|(i, why)| {
                    format!("{}: stale: {why}", self.plan.updates[*i].patch.record)
                }))
                .collect();
        if !failures.is_empty() {
            out.push_str(&format!("\n{}", h(2, "Failures")));
            for f in failures {
                let _ = writeln!(out, "{}{f}", if markdown { "- " } else { "  " });
            }
        }
        if !self.guard.is_empty() {
            out.push_str(&format!(
                "\n{}",
                h(
                    2,
                    "Stopped by guard rails (nothing was sent; --force overrides)"
                )
            ));
            for g in &self.guard {
                let _ = writeln!(out, "{}{}", if markdown { "- " } else { "  " }, g.message);
            }
        }
        let s = self.summary();
        out.push_str(&format!("\n{}", h(2, "Summary")));
        let _ = writeln!(
            out,
            "{} people; {} writes planned, {} applied, {} failed; {} creates planned, {} done, {} skipped; {} skipped by rules; {} conflicts; {} ambiguous; {} join candidates",
            s.people, s.planned_writes, s.applied, s.failed + s.not_attempted, s.planned_creates, s.created, s.create_skips, s.skipped, s.conflicts, s.ambiguous, s.join_candidates
        );
        for line in self.provider_lines() {
            let _ = writeln!(out, "{}{line}", if markdown { "    " } else { "  " });
        }
        if s.excluded > 0 {
            let _ = writeln!(out, "{} people excluded by scope", s.excluded);
        }
        for u in &s.untargeted {
            let _ = writeln!(
                out,
                "{}{} {}: {} records differ but are not written [{}]",
                if markdown { "- " } else { "  " },
                u.provider,
                u.field,
                u.records,
                u.rule
            );
        }
        out
    }
}

fn row(markdown: bool, kind: &str, record: &str, field: &str, value: &str, why: &str) -> String {
    if markdown {
        let esc = |s: &str| s.replace('|', "\\|");
        format!(
            "| {kind} | {} | {field} | {} | {} |\n",
            esc(record),
            esc(value),
            esc(why)
        )
    } else {
        format!(
            "  {} {} {} {value}  ({why})\n",
            pad(kind, 8),
            pad(record, 28),
            pad(field, 13)
        )
    }
}

/// The provider's own names of the tags or custom-field keys `c` touches, where they differ
/// from the common names (SPEC section 12).
fn provider_names(m: Option<&ProviderMapping>, c: &Change) -> BTreeMap<String, String> {
    let Some(m) = m else {
        return BTreeMap::new();
    };
    let names: Vec<&CompactString> = match (&c.old, &c.new) {
        (FieldValue::Set(a), FieldValue::Set(b)) => a.iter().chain(b.difference(a)).collect(),
        (FieldValue::Map(a), FieldValue::Map(b)) => a.keys().chain(b.keys()).collect(),
        _ => return BTreeMap::new(),
    };
    names
        .into_iter()
        .filter_map(|common| {
            let own = match c.field {
                Field::Tags => m.tag_out(common),
                _ => m.field_out(common),
            }?;
            (own != common.as_str()).then(|| (common.to_string(), own.into_owned()))
        })
        .collect()
}

/// `s` followed by spaces up to `width` terminal columns, measured by display width (a CJK
/// character or an emoji takes two), so columns line up whatever the script.
pub fn pad(s: &str, width: usize) -> String {
    let shown = unicode_width::UnicodeWidthStr::width(s);
    let mut out = String::with_capacity(s.len() + width.saturating_sub(shown));
    out.push_str(s);
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(shown)));
    out
}

/// A field value as shown in reports: scalars as strings (the value written), sets as arrays,
/// maps as objects.
pub fn shown(v: &FieldValue) -> Json {
    match v {
        FieldValue::Scalar(Some(v)) => Json::String(v.raw().to_owned()),
        other => encode_value(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unicode_width::UnicodeWidthStr;

    /// The display column at which `needle` starts in `line`.
    fn column_of(line: &str, needle: &str) -> usize {
        let at = line.find(needle).expect("needle in line");
        line[..at].width()
    }

    #[test]
    fn text_rows_line_up_by_display_width_with_cjk_and_emoji_records() {
        let rows = [
            row(false, "change", "privy:ada", "name", "A → B", "why"),
            row(false, "change", "privy:名前さん", "name", "A → B", "why"),
            row(false, "change", "privy:🙂🙂", "email", "A → B", "why"),
        ];
        let columns: Vec<usize> = rows
            .iter()
            .map(|r| column_of(r, if r.contains("email") { "email" } else { "name" }))
            .collect();
        assert!(
            columns.iter().all(|c| *c == columns[0]),
            "the field column starts at the same display column: {columns:?}\n{}",
            rows.concat()
        );
    }

    #[test]
    fn pad_counts_columns_not_characters() {
        assert_eq!(pad("ab", 4), "ab  ");
        assert_eq!(pad("名前", 6), "名前  ");
        assert_eq!(pad("toolong", 3), "toolong");
    }
}
