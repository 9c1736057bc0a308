//! Reading the TOML into [`RawConfig`] while collecting every serde problem (unknown key, wrong
//! type), not only the first one serde stops at.
//!
//! serde stops at the first error. To find the next one, the offending entry is neutralised in
//! a working copy of the text and the file is read again: an unknown key is blanked out, a value
//! of the wrong type is replaced by a placeholder of the expected type. Newlines are never added
//! or removed, so every later error still points at its line in the original file. Syntax errors
//! and missing keys end the collection (there is nothing safe to neutralise).

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::raw::RawConfig;

/// Most problems collected from one file; past that the file is probably not a config at all.
const MAX_PROBLEMS: usize = 50;

/// One serde problem: where it is in the text, the dotted key it concerns (when the text names
/// one), and serde's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerdeProblem {
    /// Byte offset in the text the problem was found in (same lines as the original).
    pub offset: Option<usize>,
    /// The full dotted key, e.g. `providers.privy.tokn_env`.
    pub key: Option<String>,
    /// serde's message.
    pub message: String,
}

/// The outcome of [`read`]: the config as read from the neutralised text (so validation can
/// still report its own problems), and every serde problem found on the way.
#[derive(Debug)]
pub struct Read {
    /// `None` when reading could not go on (syntax error, missing key, too many problems).
    pub raw: Option<RawConfig>,
    /// The keys that were neutralised; validation problems about them are not worth reporting.
    pub neutralised: Vec<String>,
    /// The text the problems' offsets refer to.
    pub text: String,
    /// Every serde problem, in the order they were found.
    pub problems: Vec<SerdeProblem>,
}

/// Reads `text`, collecting every unknown key and wrong type.
pub fn read(text: &str) -> Read {
    let mut working = text.to_owned();
    let mut problems = Vec::new();
    let mut neutralised = Vec::new();
    loop {
        let err = match toml::from_str::<RawConfig>(&working) {
            Ok(raw) => {
                return Read {
                    raw: Some(raw),
                    neutralised,
                    text: working,
                    problems,
                }
            }
            Err(err) => err,
        };
        let offset = err.span().map(|s| s.start);
        let entry = offset.and_then(|at| {
            let table = DeTable::parse(&working).ok()?;
            find(table.get_ref(), at, "")
        });
        problems.push(SerdeProblem {
            offset,
            key: entry.as_ref().map(|e| e.key.clone()),
            message: err.message().to_owned(),
        });
        let next = entry.and_then(|e| neutralise(&working, &e, err.message()));
        match next {
            Some(text) if problems.len() < MAX_PROBLEMS && text != working => {
                if let Some(key) = problems.last().and_then(|p| p.key.clone()) {
                    neutralised.push(key);
                }
                working = text;
            }
            _ => {
                return Read {
                    raw: None,
                    neutralised,
                    text: working,
                    problems,
                }
            }
        }
    }
}

/// The entry an error offset falls in.
#[derive(Debug)]
struct Entry {
    key: String,
    /// The key's span in the text.
    key_span: Range<usize>,
    /// The value's span in the text.
    value_span: Range<usize>,
    /// Whether the offset is on the key (an unknown key) rather than in the value.
    on_key: bool,
    /// Whether the value is a table (written as a `[header]` or inline).
    is_table: bool,
}

fn find(table: &DeTable<'_>, at: usize, prefix: &str) -> Option<Entry> {
    for (k, v) in table.iter() {
        let key = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        let key_span = k.span();
        let value_span = v.span();
        if key_span.contains(&at) {
            return Some(Entry {
                key,
                key_span,
                value_span,
                on_key: true,
                is_table: v.get_ref().is_table(),
            });
        }
        if let DeValue::Table(inner) = v.get_ref() {
            if let Some(found) = find(inner, at, &key) {
                return Some(found);
            }
        }
        if value_span.contains(&at) {
            return Some(Entry {
                key,
                key_span,
                value_span,
                on_key: false,
                is_table: v.get_ref().is_table(),
            });
        }
    }
    None
}

/// The text with `entry` made harmless, or `None` when that is not possible.
fn neutralise(text: &str, entry: &Entry, message: &str) -> Option<String> {
    let line_start = text[..entry.key_span.start]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let header = text[line_start..].trim_start().starts_with('[');
    if entry.on_key && header {
        // An unknown `[table]`: blank its header and its lines up to the next header.
        let mut end = text[line_start..]
            .find('\n')
            .map_or(text.len(), |i| line_start + i + 1);
        while end < text.len() {
            let next_end = text[end..].find('\n').map_or(text.len(), |i| end + i + 1);
            if text[end..next_end].trim_start().starts_with('[') {
                break;
            }
            end = next_end;
        }
        return Some(blank(text, line_start..end, ""));
    }
    if entry.on_key {
        let end = entry.value_span.end.max(entry.key_span.end);
        return Some(blank(text, entry.key_span.start..end, ""));
    }
    if entry.is_table && !text[entry.value_span.start..].starts_with('{') {
        // A problem inside a `[table]` that `find` could not narrow down.
        return None;
    }
    let placeholder = placeholder(message)?;
    Some(blank(text, entry.value_span.clone(), placeholder))
}

/// A value of the type serde expected, from its message ("invalid type: integer `5`, expected a
/// string").
fn placeholder(message: &str) -> Option<&'static str> {
    let expected = message.split("expected").nth(1)?.trim();
    let kind = expected.trim_start_matches("a ").trim_start_matches("an ");
    Some(
        if kind.starts_with("string") || kind.contains("string") || kind.starts_with("path") {
            "\"\""
        } else if kind.starts_with("bool") {
            "false"
        } else if kind.starts_with('f') || kind.starts_with("float") {
            "1.0"
        } else if kind.starts_with('u') || kind.starts_with('i') {
            "1"
        } else if kind.starts_with("sequence") {
            "[]"
        } else if kind.starts_with("struct") || kind.starts_with("map") || kind.starts_with("table")
        {
            "{}"
        } else {
            return None;
        },
    )
}

/// `text` with `range` replaced by `with`, then spaces, keeping every newline in `range`.
fn blank(text: &str, range: Range<usize>, with: &str) -> String {
    let mut out = String::with_capacity(text.len() + with.len());
    out.push_str(&text[..range.start]);
    out.push_str(with);
    for c in text[range.clone()].chars().skip(with.chars().count()) {
        out.push(if c == '\n' { '\n' } else { ' ' });
    }
    // A placeholder longer than what it replaced pushes the rest of its line along; lines stay.
    let replaced_newlines = text[range.clone()].chars().take(with.chars().count());
    for c in replaced_newlines {
        if c == '\n' {
            out.push('\n');
        }
    }
    out.push_str(&text[range.end..]);
    out
}
