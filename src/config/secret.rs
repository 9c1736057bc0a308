//! Secrets: held only by reference in config, resolved at start, and impossible to print.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

/// A secret value (token, HMAC key, Chatwoot inbox identifier). `Debug` and `Display` print
/// `**REDACTED**`; the only way to the text is [`Secret::expose`], used when building a request.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    /// The secret text. Call only to put it on the wire.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

/// Where a secret comes from. Exactly one source is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file (trailing newline stripped).
    File(PathBuf),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/<name>`.
    Credential(String),
    /// A literal value, only for the built-in demo and tests (never read from TOML).
    Literal(Secret),
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}
impl Eq for Secret {}

impl SecretSource {
    /// Reads the secret. The error names the source (variable or path), never the value.
    pub fn resolve(&self) -> Result<Secret, String> {
        let value = match self {
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(v) => v,
                Err(std::env::VarError::NotPresent) => {
                    return Err(format!("environment variable `{var}` is not set"))
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(format!("environment variable `{var}` is not valid UTF-8"))
                }
            },
            SecretSource::File(path) => read_file(path)?,
            SecretSource::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    format!("systemd credential `{name}` requested but $CREDENTIALS_DIRECTORY is not set (is LoadCredential= in the unit?)")
                })?;
                read_file(&Path::new(&dir).join(name))?
            }
            SecretSource::Literal(s) => return Ok(s.clone()),
        };
        let value = value.trim_end_matches(['\r', '\n']).to_owned();
        if value.is_empty() {
            return Err(format!("{} is empty", self.describe()));
        }
        Ok(Secret::new(value))
    }

    /// Where the secret comes from, for messages.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Env(v) => format!("environment variable `{v}`"),
            SecretSource::File(p) => format!("file `{}`", p.display()),
            SecretSource::Credential(n) => format!("systemd credential `{n}`"),
            SecretSource::Literal(_) => "built-in value".into(),
        }
    }
}

fn read_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read secret file `{}`: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "**REDACTED** **REDACTED**");
        let src = SecretSource::Literal(s);
        assert!(!format!("{src:?}").contains("hunter2"));
    }

    #[test]
    fn missing_env_names_the_variable() {
        let err = SecretSource::Env("CONTACT_SYNC_TEST_SURELY_UNSET".into())
            .resolve()
            .expect_err("unset");
        assert!(err.contains("CONTACT_SYNC_TEST_SURELY_UNSET"));
    }

    #[test]
    fn file_secret_strips_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("tok");
        std::fs::write(&p, "abc\n").expect("write");
        assert_eq!(
            SecretSource::File(p).resolve().expect("read").expose(),
            "abc"
        );
    }
}
