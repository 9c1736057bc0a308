//! Normalisation at the adapter boundary: phones to E.164, e-mails case-folded for matching,
//! names trimmed. Invalid data is kept as-is, flagged invalid, with a warning; it never panics and
//! is never dropped.

use std::str::FromStr;

use phonenumber::country::Id as CountryId;
use phonenumber::Mode;

use super::Value;

/// Normalises values read from providers. Cheap to clone; one per run.
#[derive(Debug, Clone, Copy)]
pub struct Normalizer {
    default_region: CountryId,
}

impl Default for Normalizer {
    fn default() -> Self {
        Normalizer {
            default_region: CountryId::US,
        }
    }
}

impl Normalizer {
    /// A normaliser that reads national numbers as numbers of `region` (ISO 3166 alpha-2).
    pub fn new(region: &str) -> Result<Self, String> {
        let default_region = CountryId::from_str(&region.to_ascii_uppercase())
            .map_err(|_| format!("`{region}` is not an ISO 3166-1 alpha-2 region code"))?;
        Ok(Normalizer { default_region })
    }

    /// A phone number as stored by a provider that may store national numbers. Returns the value
    /// and, for data that does not parse, a warning.
    ///
    /// ```
    /// use contact_sync::model::Normalizer;
    ///
    /// let n = Normalizer::new("US").expect("a region");
    /// let (v, warning) = n.phone("(415) 555-0101");
    /// assert_eq!(v.as_ref().map(|v| v.key()), Some("+14155550101"));
    /// assert!(warning.is_none());
    /// ```
    pub fn phone(&self, raw: &str) -> (Option<Value>, Option<String>) {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return (None, None);
        }
        match phonenumber::parse(Some(self.default_region), trimmed) {
            Ok(number) if number.is_valid() => {
                let e164 = number.format().mode(Mode::E164).to_string();
                (Some(Value::plain(e164)), None)
            }
            _ => (
                Some(Value::new(trimmed, trimmed, false)),
                Some(format!(
                    "phone {trimmed:?} is not a valid number; kept as-is"
                )),
            ),
        }
    }

    /// A phone number stored as international digits without `+` (Callbell's WhatsApp ids):
    /// always read as international, never as a national number of the default region.
    pub fn international_digits(&self, raw: &str) -> (Option<Value>, Option<String>) {
        let digits: String = raw.chars().filter(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() {
            return if raw.trim().is_empty() {
                (None, None)
            } else {
                self.phone(raw)
            };
        }
        self.phone(&format!("+{digits}"))
    }

    /// An e-mail address: the original (trimmed) is kept for writing, the key is case-folded.
    pub fn email(&self, raw: &str) -> (Option<Value>, Option<String>) {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return (None, None);
        }
        let valid = is_plausible_email(trimmed);
        let warning = (!valid).then(|| format!("email {trimmed:?} is malformed; kept as-is"));
        (
            Some(Value::new(trimmed, &trimmed.to_lowercase(), valid)),
            warning,
        )
    }

    /// Free text (avatar URL, username, identifier): trimmed, empty means absent.
    pub fn text(&self, raw: &str) -> Option<Value> {
        let trimmed = raw.trim();
        (!trimmed.is_empty()).then(|| Value::plain(trimmed))
    }
}

/// The e-mail shape the strictest provider accepts (Chatwoot: `[^@\s]+@[^@\s]+`), with a dot in
/// the domain so obvious typos are caught.
pub fn is_plausible_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let ok = |part: &str| !part.is_empty() && !part.chars().any(|c| c == '@' || c.is_whitespace());
    ok(local)
        && ok(domain)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
}

/// Whether `s` is strict E.164: `+` then 2 to 15 digits, no leading zero.
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Trims and collapses internal runs of whitespace (and drops control characters) so that
/// `" Ada  Lovelace"` and `"Ada Lovelace"` are the same name.
pub fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_normalise_to_e164_with_default_region() {
        let n = Normalizer::new("us").expect("valid region");
        assert_eq!(
            n.phone("(415) 555-0101").0.map(|v| v.key().to_owned()),
            Some("+14155550101".into())
        );
        assert_eq!(
            n.phone("+44 20 7946 0958").0.map(|v| v.raw().to_owned()),
            Some("+442079460958".into())
        );
        assert_eq!(n.phone("  ").0, None);
        let (bad, warning) = n.phone("call me maybe");
        let bad = bad.expect("kept");
        assert!(!bad.valid());
        assert_eq!(bad.raw(), "call me maybe");
        assert!(warning.is_some());
    }

    #[test]
    fn callbell_digits_are_international() {
        let n = Normalizer::new("GB").expect("valid region");
        assert_eq!(
            n.international_digits("14155550101")
                .0
                .map(|v| v.key().to_owned()),
            Some("+14155550101".into())
        );
        assert_eq!(
            n.international_digits("+123 456 789").0.map(|v| v.valid()),
            Some(false),
            "an impossible number is kept but flagged"
        );
    }

    #[test]
    fn emails_fold_case_for_matching_but_keep_original() {
        let n = Normalizer::default();
        let v = n.email("  Ada@Example.COM ").0.expect("present");
        assert_eq!(v.raw(), "Ada@Example.COM");
        assert_eq!(v.key(), "ada@example.com");
        assert!(v.valid());
        let (bad, w) = n.email("not-an-email");
        assert!(!bad.expect("kept").valid());
        assert!(w.is_some());
    }

    #[test]
    fn strict_e164() {
        assert!(is_e164("+14155550101"));
        assert!(!is_e164("14155550101"));
        assert!(!is_e164("+1 415"));
        assert!(!is_e164("+0123"));
    }

    #[test]
    fn whitespace_and_controls_collapse() {
        assert_eq!(collapse_whitespace("  a\t\u{7} b \n"), "a b");
    }
}
