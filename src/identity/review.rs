//! `contact-sync review`: what needs a human, each item with the command that settles it
//! (SPEC section 10).
//!
//! Built from a plan (the live one, or the last sync's, stored as findings): ambiguous records,
//! join candidates, conflicts that precedence decided, and changes blocked by a rule only a
//! person can lift (`would-merge-contacts`, `held-by-other-person`, set-once values that differ).
//! The JSON form is the documented schema `contact-sync/review/v1` (README).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{FieldValue, RecordId};
use crate::provider::rules::RuleId;
use crate::reconcile::{Plan, Skip};

/// The review document's format identifier.
pub const FORMAT: &str = "contact-sync/review/v1";

/// Everything that needs a human.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Review {
    pub format: String,
    /// `live` (providers read now) or `last-run` (the last sync's findings, `--offline`).
    pub source: String,
    /// The sync run the findings come from (`last-run` only).
    pub run_id: Option<i64>,
    pub generated_at: String,
    pub items: Vec<Item>,
}

/// The kinds of item, in the order they are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    JoinCandidate,
    Ambiguous,
    Blocked,
    Conflict,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::JoinCandidate => "join-candidate",
            Kind::Ambiguous => "ambiguous",
            Kind::Blocked => "blocked",
            Kind::Conflict => "conflict",
        }
    }
}

/// One thing a human should look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub kind: Kind,
    /// One sentence saying what was found.
    pub summary: String,
    /// The person concerned, where there is one.
    pub person: Option<String>,
    pub field: Option<String>,
    /// The rule that blocked a change (`blocked` only).
    pub rule: Option<String>,
    /// Every record concerned, as `provider:id`.
    pub records: Vec<String>,
    /// Commands that settle it, the suggested one first.
    pub commands: Vec<String>,
}

/// Quotes a value for a POSIX shell when it needs it.
fn quoted(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-_.:@/%=,".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn ids<'a>(records: impl IntoIterator<Item = &'a RecordId>) -> Vec<String> {
    records.into_iter().map(|r| r.to_string()).collect()
}

impl Review {
    /// The review of a plan. `source` and `run_id` say where it came from.
    pub fn of_plan(plan: &Plan, source: &str, run_id: Option<i64>) -> Review {
        let people: BTreeMap<&str, &[RecordId]> = plan
            .people
            .iter()
            .map(|p| (p.person.as_str(), p.records.as_slice()))
            .collect();
        let mut items = Vec::new();

        for jc in &plan.join_candidates {
            let all: Vec<&RecordId> = jc.people.iter().flat_map(|(_, rs)| rs).collect();
            let mut sorted: Vec<&RecordId> = all.clone();
            sorted.sort();
            let names: Vec<String> = jc
                .people
                .iter()
                .map(|(p, rs)| format!("{p} ({})", ids(rs).join(", ")))
                .collect();
            let (summary, commands) = if jc.joinable() {
                (
                    format!(
                        "{} now share the {} {}: {}; not joined",
                        ids(&jc.holders).join(" and "),
                        jc.via,
                        jc.key,
                        names.join(" and ")
                    ),
                    vec![format!(
                        "contact-sync link {}",
                        ids(sorted.iter().copied()).join(" ")
                    )],
                )
            } else {
                (
                    format!(
                        "{} now share the {} {}: {}; they cannot be one person (two records of one provider)",
                        ids(&jc.holders).join(" and "),
                        jc.via,
                        jc.key,
                        names.join(" and ")
                    ),
                    // Not one person: the shared key is likely a mistake in one record. Agree
                    // again on what a record not holding it says, or leave the holder alone.
                    jc.people
                        .iter()
                        .filter_map(|(p, rs)| {
                            rs.iter().find(|r| !jc.holders.contains(r)).map(|r| {
                                format!(
                                    "contact-sync resolve {} {} --from {}",
                                    quoted(p),
                                    jc.via,
                                    r.provider
                                )
                            })
                        })
                        .chain(jc.holders.iter().map(|h| format!("contact-sync ignore {h}")))
                        .collect(),
                )
            };
            items.push(Item {
                kind: Kind::JoinCandidate,
                summary,
                person: None,
                field: Some(jc.via.to_owned()),
                rule: None,
                records: ids(sorted.iter().copied()),
                commands,
            });
        }

        for a in &plan.ambiguous {
            let mut commands = Vec::new();
            for p in &a.people {
                if let Some(rs) = people.get(p.as_str()) {
                    let mut all: BTreeSet<String> = ids(rs.iter()).into_iter().collect();
                    all.extend(ids(&a.records));
                    commands.push(format!(
                        "contact-sync link {}",
                        all.into_iter().collect::<Vec<_>>().join(" ")
                    ));
                }
            }
            commands.extend(a.records.iter().map(|r| format!("contact-sync ignore {r}")));
            items.push(Item {
                kind: Kind::Ambiguous,
                summary: format!("{}: {}", ids(&a.records).join(", "), a.reason),
                person: None,
                field: None,
                rule: None,
                records: ids(&a.records),
                commands,
            });
        }

        // One item per person, field and rule: the records it blocks.
        let mut blocked: BTreeMap<(&str, &str, RuleId), Vec<&Skip>> = BTreeMap::new();
        for s in &plan.skipped {
            if needs_a_person(s) {
                blocked
                    .entry((s.person.as_str(), s.field.as_str(), s.rule))
                    .or_default()
                    .push(s);
            }
        }
        for ((person, field, rule), skips) in blocked {
            let records: Vec<&RecordId> = skips.iter().map(|s| &s.record).collect();
            let mut commands: Vec<String> = skips
                .iter()
                .map(|s| {
                    format!(
                        "contact-sync resolve {} {field} --from {}",
                        quoted(person),
                        s.record.provider
                    )
                })
                .collect();
            commands.dedup();
            let details: Vec<String> = skips
                .iter()
                .map(|s| format!("{}: {}", s.record, s.detail))
                .collect();
            items.push(Item {
                kind: Kind::Blocked,
                summary: format!(
                    "{field} of person {person} blocked by {rule}: {}",
                    details.join("; ")
                ),
                person: Some(person.to_owned()),
                field: Some(field.to_owned()),
                rule: Some(rule.as_str().to_owned()),
                records: ids(records),
                commands,
            });
        }

        for c in &plan.conflicts {
            let field = match &c.key {
                Some(k) => format!("{} {k:?}", c.field),
                None => c.field.to_string(),
            };
            let shown: Vec<String> = c
                .candidates
                .iter()
                .map(|(r, v)| format!("{r} {v:?}"))
                .collect();
            let commands = c
                .candidates
                .iter()
                .filter(|(r, _)| *r != c.winner)
                .map(|(r, _)| {
                    format!(
                        "contact-sync resolve {} {} --from {}",
                        quoted(&c.person),
                        c.field,
                        r.provider
                    )
                })
                .collect();
            let mut records: Vec<&RecordId> = c.candidates.iter().map(|(r, _)| r).collect();
            records.sort();
            items.push(Item {
                kind: Kind::Conflict,
                summary: format!(
                    "{field} of person {}: precedence chose {} among {}",
                    c.person,
                    c.winner,
                    shown.join(", ")
                ),
                person: Some(c.person.to_string()),
                field: Some(c.field.to_string()),
                rule: None,
                records: ids(records),
                commands,
            });
        }
        items.sort_by(|a, b| (a.kind, &a.records, &a.field).cmp(&(b.kind, &b.records, &b.field)));
        Review {
            format: FORMAT.to_owned(),
            source: source.to_owned(),
            run_id,
            generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            items,
        }
    }

    /// Parses a stored review.
    pub fn from_json(text: &str) -> Result<Review, String> {
        let r: Review = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if r.format != FORMAT {
            return Err(format!("unknown review format {:?}", r.format));
        }
        Ok(r)
    }

    pub fn to_json(&self) -> String {
        // Serialising plain strings, numbers and lists cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Every record an item names.
    pub fn records_mentioned(&self) -> BTreeSet<String> {
        self.items
            .iter()
            .flat_map(|i| i.records.iter().cloned())
            .collect()
    }

    /// Text, or Markdown.
    pub fn to_text(&self, markdown: bool) -> String {
        let mut out = String::new();
        let source = match (self.source.as_str(), self.run_id) {
            ("last-run", Some(run)) => format!("from the findings of sync run {run}"),
            _ => "from the providers, now".to_owned(),
        };
        if markdown {
            out.push_str(&format!(
                "# contact-sync review\n\n{} items, {source}.\n\n",
                self.items.len()
            ));
        } else {
            out.push_str(&format!(
                "review: {} items need a human ({source})\n",
                self.items.len()
            ));
        }
        for item in &self.items {
            if markdown {
                out.push_str(&format!("- **{}**: {}\n", item.kind.as_str(), item.summary));
                for c in &item.commands {
                    out.push_str(&format!("  - `{c}`\n"));
                }
            } else {
                out.push_str(&format!("\n{:<15} {}\n", item.kind.as_str(), item.summary));
                for c in &item.commands {
                    out.push_str(&format!("{:<15}   $ {c}\n", ""));
                }
            }
        }
        if self.items.is_empty() {
            out.push_str(if markdown {
                "Nothing needs a human.\n"
            } else {
                "nothing needs a human\n"
            });
        }
        out
    }
}

/// Whether a skipped change is one only a person can lift.
fn needs_a_person(s: &Skip) -> bool {
    match s.rule {
        RuleId::WouldMergeContacts | RuleId::HeldByOtherPerson => true,
        RuleId::SetOnce => {
            matches!(&s.current, FieldValue::Scalar(Some(_))) && s.current != s.wanted
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ProviderKind;
    use crate::reconcile::{Ambiguity, JoinCandidate, PersonPlan};

    #[test]
    fn a_join_candidate_gets_the_link_command_and_round_trips() {
        let a = RecordId::new(ProviderKind::Protocol, "a");
        let b = RecordId::new(ProviderKind::Callbell, "b");
        let c = RecordId::new(ProviderKind::Chatwoot, "8");
        let d = RecordId::new(ProviderKind::Privy, "9");
        let plan = Plan {
            join_candidates: vec![JoinCandidate {
                via: "phone",
                key: "+14155550101".into(),
                people: vec![
                    ("p:1".into(), vec![b.clone(), a.clone()]),
                    ("p:2".into(), vec![c.clone(), d.clone()]),
                ],
                holders: vec![a.clone(), c.clone()],
            }],
            ambiguous: vec![Ambiguity {
                records: vec![d.clone()],
                reason: "points at two people".into(),
                people: vec!["p:1".into()],
            }],
            people: vec![PersonPlan {
                person: "p:1".into(),
                records: vec![a.clone(), b.clone()],
                agreed: Default::default(),
            }],
            ..Plan::default()
        };
        let r = Review::of_plan(&plan, "live", None);
        assert_eq!(
            r.items[0].commands,
            ["contact-sync link protocol:a callbell:b chatwoot:8 privy:9"]
        );
        assert_eq!(
            r.items[1].commands,
            [
                "contact-sync link callbell:b privy:9 protocol:a",
                "contact-sync ignore privy:9"
            ]
        );
        assert_eq!(Review::from_json(&r.to_json()), Ok(r.clone()));
        assert!(r.to_text(false).contains("$ contact-sync link"));
    }

    #[test]
    fn values_are_quoted_for_the_shell() {
        assert_eq!(quoted("p:privy:1"), "p:privy:1");
        assert_eq!(quoted("it's"), r"'it'\''s'");
    }
}
