//! Configuration: TOML in, a validated [`Config`] out.
//!
//! Two phases. [`raw`] is what serde reads (unknown keys rejected, every key documented and
//! defaulted). [`validate`] is pure: it checks every value and collects every problem, each
//! naming the file, the key and its line. Reading secrets (environment, files, systemd
//! credentials) happens last, in [`Config::resolve_secrets`].

mod collect;
pub mod mapping;
pub mod policy;
pub mod raw;
mod secret;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use url::Url;

pub use policy::{CreateFilter, Policy};
pub use secret::{Secret, SecretSource};

use crate::budget::Rate;
use crate::model::{Field, Normalizer, ProviderKind};
use policy::complete_precedence;
use raw::{
    ProviderSection, RawCallbell, RawChatwoot, RawCommon, RawConfig, RawGuard, RawPrivy,
    RawProtocol,
};

/// The example config shipped with the project; a unit test keeps it valid.
pub const EXAMPLE: &str = include_str!("../../config/contact-sync.example.toml");

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub source: String,
    pub state_path: PathBuf,
    pub schedule: Schedule,
    pub normalizer: Normalizer,
    pub policy: Policy,
    /// Custom-field keys and tags per provider (`[mapping]`), applied by the adapters.
    pub mapping: mapping::Mapping,
    pub daemon: DaemonSettings,
    /// Configured providers, in report order.
    pub providers: Vec<ProviderConfig>,
}

/// When the daemon runs: a cron expression parsed once, in validation, and its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: String,
    parsed: croner::Cron,
    timezone: chrono_tz::Tz,
}

impl Schedule {
    /// A schedule from a cron expression with a seconds field, in `timezone`.
    ///
    /// # Errors
    /// The expression does not parse (the message says why).
    pub fn new(cron: &str, timezone: chrono_tz::Tz) -> Result<Self, String> {
        Ok(Schedule {
            cron: cron.to_owned(),
            parsed: parse_cron(cron)?,
            timezone,
        })
    }

    /// The expression as written (the scheduler and messages use it).
    pub fn cron(&self) -> &str {
        &self.cron
    }

    /// The time zone the expression is read in.
    pub fn timezone(&self) -> chrono_tz::Tz {
        self.timezone
    }

    /// The next time the schedule fires after `after`.
    pub fn next_after(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.parsed
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    }
}

/// The daemon's listener and shutdown settings.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    /// Where `/healthz` and `/metrics` are served; `None` disables the listener.
    pub listen: Option<SocketAddr>,
    /// How long a stop waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Longest a sync may run before the daemon stops pinging the systemd watchdog (so a
    /// wedged run gets the daemon restarted); `None`: no limit.
    pub max_run_time: Option<Duration>,
}

/// Timeouts, limits and retry settings for one provider.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Per-request timeout, including reading the body.
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_body_bytes: usize,
    /// Retries after the first attempt, for retryable failures.
    pub max_retries: u32,
    /// First backoff; doubles each retry, with full jitter.
    pub backoff_base: Duration,
    /// Largest single backoff.
    pub backoff_max: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            timeout: Duration::from_secs(30),
            max_body_bytes: 16 * 1024 * 1024,
            max_retries: 4,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// Guard rails for one provider.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guard {
    pub max_change_share: f64,
    pub max_clears: u64,
    pub min_records: u64,
}

/// One provider's validated settings.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Read and written, read only, or written only (`role`).
    pub role: Role,
    /// With `create = true`: which people are created here (`create_filter`).
    pub create: Option<CreateFilter>,
    /// The guard rail on creates per run (`max_creates`, default 100).
    pub max_creates: u64,
    pub base_url: Url,
    pub token: SecretSource,
    pub rate: Rate,
    /// Share of `rate` to use (1 - headroom for other users of the key).
    pub share: f64,
    pub http: HttpSettings,
    pub max_concurrency: usize,
    pub guard: Guard,
    /// Least time between two listings (`min_scan_interval`); `None` scans as often as the
    /// daily quota allows (see the `cadence` module).
    pub min_scan_interval: Option<Duration>,
    pub specific: ProviderSpecific,
}

/// Which Chatwoot API updates go through (SPEC section 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatwootUpdateApi {
    /// `PATCH /api/v1/accounts/{account_id}/contacts/{id}` with the access token: a clash is a
    /// 422, never a merge; it writes `identifier`, clears values, and labels go through the
    /// labels endpoint. The default.
    Application,
    /// The public client API of one inbox, addressed by `source_id`: it merges contacts on a
    /// clash, so the merge guard runs again right before each write.
    Public,
}

/// Sort keys Chatwoot's contact list accepts (`sort_on` in
/// `app/controllers/api/v1/accounts/contacts_controller.rb`, release 4.13.0), each also with `-`.
pub const CHATWOOT_SORTS: [&str; 8] = [
    "created_at",
    "email",
    "name",
    "phone_number",
    "last_activity_at",
    "company",
    "city",
    "country",
];

/// What a provider is to the sync (SPEC section 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Read and written (default).
    #[default]
    Both,
    /// Read only: never written nor created in.
    Source,
    /// Written and created in; its own edits never spread.
    Target,
}

/// The default guard rail on creates per provider per run.
pub const DEFAULT_MAX_CREATES: u64 = 100;

/// Settings only one provider has.
#[derive(Debug, Clone)]
pub enum ProviderSpecific {
    Protocol {
        legacy_put: bool,
        page_size: u32,
    },
    Callbell {
        known_tags: BTreeSet<String>,
        known_custom_fields: BTreeSet<String>,
        /// The `source` sent with `POST /contacts` (`create_source`, default `"whatsapp"`).
        create_source: String,
    },
    Chatwoot {
        account_id: u64,
        /// The inbox new contacts are created in and, in public mode, whose `source_id`
        /// addresses each contact.
        inbox_id: u64,
        /// The public API's path secret; required only when `update_api` is `Public`.
        inbox_identifier: Option<SecretSource>,
        hmac_token: Option<SecretSource>,
        /// Listing sort key, one Chatwoot accepts (`created_at` by default, `-key` descending).
        sort: String,
        /// Which API updates go through.
        update_api: ChatwootUpdateApi,
        /// Labels that may be added to contacts (`known_labels`): they must already exist as
        /// account labels, because the adapter reads labels back one account label at a time,
        /// so any other label written would be planned again every run. Empty when unset.
        known_labels: BTreeSet<String>,
    },
    Privy {
        daily_limit: Option<u64>,
        page_size: u32,
        /// Whose midnight starts the day of a locally counted daily quota.
        day_timezone: chrono_tz::Tz,
    },
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(
                f,
                "{}:{}: `{}`: {}",
                self.file, line, self.key, self.message
            ),
            None => write!(f, "{}: `{}`: {}", self.file, self.key, self.message),
        }
    }
}

/// Every problem found, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads, parses and validates `path`, then resolves its secrets.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: file.clone(),
                key: "(file)".into(),
                line: None,
                message: format!("cannot read: {e}"),
            }])
        })?;
        let config = Config::parse(&text, &file)?;
        config.resolve_secrets()
    }

    /// Parses and validates TOML text (no I/O). `file` names it in messages.
    ///
    /// Every unknown key and wrong type is reported, with the problems validation finds in the
    /// rest of the file, all in one [`ConfigErrors`] sorted by line.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        let read = collect::read(text);
        let mut errors: Vec<ConfigError> = read
            .problems
            .iter()
            .map(|p| serde_error(&read.text, file, p))
            .collect();
        let Some(raw) = read.raw else {
            return Err(ConfigErrors(errors));
        };
        match validate(raw, &read.text, file) {
            Ok(config) if errors.is_empty() => return Ok(config),
            Ok(_) => {}
            Err(found) => {
                // A neutralised key holds a placeholder: what validation says of it is noise.
                let about_neutralised = |e: &ConfigError| {
                    read.neutralised.iter().any(|k| {
                        e.key == *k
                            || e.key
                                .strip_prefix(k.as_str())
                                .is_some_and(|r| r.starts_with('.'))
                    })
                };
                errors.extend(found.0.into_iter().filter(|e| !about_neutralised(e)));
            }
        }
        errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        Err(ConfigErrors(errors))
    }

    /// Replaces every secret reference with its value, or reports every one that is missing.
    pub fn resolve_secrets(mut self) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let file = self.source.clone();
        // Relative secret files are relative to the config file, not the working directory.
        let base = Path::new(&self.source)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut resolve = |source: &mut SecretSource, key: String| {
            if let SecretSource::File(p) = source {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
            match source.resolve() {
                Ok(s) => *source = SecretSource::Literal(s),
                Err(message) => {
                    // Read the file again only to point at the line of a failing reference.
                    let src = std::fs::read_to_string(&file).unwrap_or_default();
                    let line = line_of(&src, &key);
                    errors.push(ConfigError {
                        file: file.clone(),
                        key,
                        line,
                        message,
                    });
                }
            }
        };
        for p in &mut self.providers {
            let section = format!("providers.{}", p.kind);
            let key = secret_key(&section, "token", &p.token);
            resolve(&mut p.token, key);
            if let ProviderSpecific::Chatwoot {
                inbox_identifier,
                hmac_token,
                ..
            } = &mut p.specific
            {
                if let Some(i) = inbox_identifier {
                    let key = secret_key(&section, "inbox_identifier", i);
                    resolve(i, key);
                }
                if let Some(h) = hmac_token {
                    let key = secret_key(&section, "hmac_token", h);
                    resolve(h, key);
                }
            }
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// The settings of `kind`, if configured.
    pub fn provider(&self, kind: ProviderKind) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.kind == kind)
    }

    /// Turns creation on for `kind` with `filter`, in the provider's settings and in the policy
    /// the planner reads, as validation does for `create = true`.
    pub fn enable_create(&mut self, kind: ProviderKind, filter: CreateFilter) {
        if let Some(p) = self.providers.iter_mut().find(|p| p.kind == kind) {
            p.create = Some(filter.clone());
        }
        self.policy.creates.insert(kind, filter);
    }

    /// Gives `kind` a `role`, in the provider's settings and in the policy, as validation does.
    pub fn set_role(&mut self, kind: ProviderKind, role: Role) {
        if let Some(p) = self.providers.iter_mut().find(|p| p.kind == kind) {
            p.role = role;
        }
        self.policy.read_only.remove(&kind);
        self.policy.write_only.remove(&kind);
        match role {
            Role::Source => {
                self.policy.read_only.insert(kind);
            }
            Role::Target => {
                self.policy.write_only.insert(kind);
            }
            Role::Both => {}
        }
    }

    /// A digest of everything that decides what a plan contains (policy, providers, their
    /// rules and endpoints), never secrets. A plan made under one fingerprint is refused under
    /// another.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!(
            "{:?}|{:?}|{:?}|",
            self.policy, self.normalizer, self.mapping
        ));
        for p in &self.providers {
            h.update(format!(
                "{}|{}|{:?}|",
                p.kind,
                p.base_url,
                p.specific_fingerprint()
            ));
        }
        hex::encode(&h.finalize()[..16])
    }
}

impl ProviderConfig {
    fn specific_fingerprint(&self) -> String {
        match &self.specific {
            ProviderSpecific::Protocol { legacy_put, .. } => format!("legacy_put={legacy_put}"),
            ProviderSpecific::Callbell {
                known_tags,
                known_custom_fields,
                create_source,
            } => format!("{known_tags:?}{known_custom_fields:?}{create_source}"),
            ProviderSpecific::Chatwoot {
                account_id,
                inbox_id,
                update_api,
                known_labels,
                ..
            } => format!("{account_id}/{inbox_id}/{update_api:?}/{known_labels:?}"),
            ProviderSpecific::Privy { .. } => String::new(),
        }
    }
}

fn secret_key(section: &str, name: &str, source: &SecretSource) -> String {
    let suffix = match source {
        SecretSource::Env(_) => "env",
        SecretSource::File(_) => "file",
        SecretSource::Credential(_) => "credential",
        SecretSource::Literal(_) => "value",
    };
    format!("{section}.{name}_{suffix}")
}

/// Parses a cron expression the way the scheduler does (seconds field required).
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| e.to_string())
}

/// Parses a duration like `1s`, `500ms`, `1m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like \"1s\" or \"1m\": {e}"))?;
    if d.is_zero() {
        return Err(format!("{s:?} must be longer than zero"));
    }
    Ok(d)
}

struct Errors<'a> {
    text: &'a str,
    file: &'a str,
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        let line = line_of(self.text, &key);
        self.list.push(ConfigError {
            file: self.file.to_owned(),
            key,
            line,
            message: message.into(),
        });
    }
}

/// Validates a parsed file. Pure: no file system, network or clock.
pub fn validate(raw: RawConfig, text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let mut e = Errors {
        text,
        file,
        list: Vec::new(),
    };

    let timezone = raw
        .schedule
        .timezone
        .parse::<chrono_tz::Tz>()
        .unwrap_or_else(|_| {
            e.push(
                "schedule.timezone",
                format!(
                    "{:?} is not an IANA time zone like \"UTC\" or \"Europe/Paris\"",
                    raw.schedule.timezone
                ),
            );
            chrono_tz::UTC
        });
    let schedule = Schedule::new(&raw.schedule.cron, timezone).map_err(|msg| {
        e.push("schedule.cron", format!("{:?} is not a cron expression with a seconds field (sec min hour day-of-month month day-of-week): {msg}", raw.schedule.cron));
    });
    let normalizer = Normalizer::new(&raw.matching.default_region).unwrap_or_else(|msg| {
        e.push("matching.default_region", msg);
        Normalizer::default()
    });

    let mut policy = validate_policy(&raw.policy, &mut e);

    let listen = if raw.daemon.listen.trim().is_empty() {
        None
    } else {
        match raw.daemon.listen.parse::<SocketAddr>() {
            Ok(addr) if addr.ip().is_loopback() => Some(addr),
            Ok(_) => {
                e.push("daemon.listen", format!("{:?} is not a loopback address; health and metrics are served on loopback only", raw.daemon.listen));
                None
            }
            Err(_) => {
                e.push(
                    "daemon.listen",
                    format!(
                        "{:?} is not an address like \"127.0.0.1:9187\"",
                        raw.daemon.listen
                    ),
                );
                None
            }
        }
    };
    let shutdown_grace = parse_duration(&raw.daemon.shutdown_grace).unwrap_or_else(|m| {
        e.push("daemon.shutdown_grace", m);
        Duration::from_secs(30)
    });
    let max_run_time = match raw.daemon.max_run_time.trim() {
        "" => None,
        text => parse_duration(text)
            .map_err(|m| e.push("daemon.max_run_time", m))
            .ok(),
    };
    check_guard("guard", &raw.guard, &mut e);

    let p = &raw.providers;
    let mut providers = Vec::new();
    providers.extend(provider(p.protocol.as_ref(), &raw.guard, &mut e));
    providers.extend(provider(p.callbell.as_ref(), &raw.guard, &mut e));
    providers.extend(provider(p.chatwoot.as_ref(), &raw.guard, &mut e));
    providers.extend(provider(p.privy.as_ref(), &raw.guard, &mut e));
    for p in &providers {
        match p.role {
            Role::Source => {
                policy.read_only.insert(p.kind);
            }
            Role::Target => {
                policy.write_only.insert(p.kind);
            }
            Role::Both => {}
        }
        if let Some(filter) = &p.create {
            for from in &filter.from {
                if !providers.iter().any(|o| o.kind == *from) {
                    e.push(
                        format!("providers.{}.create_filter.from", p.kind),
                        format!("`{from}` is not configured (no [providers.{from}] section)"),
                    );
                }
            }
            policy.creates.insert(p.kind, filter.clone());
        }
    }
    let mapping = mapping::validate(&raw, &providers, &mut policy, &mut e);

    let (Ok(schedule), true) = (schedule, e.list.is_empty()) else {
        return Err(ConfigErrors(e.list));
    };
    Ok(Config {
        source: file.to_owned(),
        state_path: raw.state.path,
        schedule,
        normalizer,
        policy,
        mapping,
        daemon: DaemonSettings {
            listen,
            shutdown_grace,
            max_run_time,
        },
        providers,
    })
}

/// A provider section's own keys, validated into its [`ProviderSpecific`].
trait Specific: ProviderSection {
    /// Checks the keys only this provider has, recording problems in `e`.
    fn specific(&self, e: &mut Errors<'_>) -> ProviderSpecific;

    /// The share of the quota left for others when `headroom` is not set (none by default).
    fn default_headroom() -> Option<f64> {
        None
    }
}

/// Validates one `[providers.<name>]` section, when it is present.
fn provider<S: Specific>(
    section: Option<&S>,
    guard: &RawGuard,
    e: &mut Errors<'_>,
) -> Option<ProviderConfig> {
    let s = section?;
    let specific = s.specific(e);
    let mut raw = s.common();
    raw.headroom = raw.headroom.or(S::default_headroom());
    Some(common(
        S::KIND,
        &raw,
        guard,
        default_rate(S::KIND),
        e,
        specific,
    ))
}

impl Specific for RawProtocol {
    fn specific(&self, e: &mut Errors<'_>) -> ProviderSpecific {
        ProviderSpecific::Protocol {
            legacy_put: self.legacy_put,
            page_size: check_page_size("providers.protocol.page_size", self.page_size, 100, e),
        }
    }
}

impl Specific for RawCallbell {
    fn specific(&self, e: &mut Errors<'_>) -> ProviderSpecific {
        let create_source = check_create_source(
            "providers.callbell.create_source",
            self.create_source.as_deref(),
            e,
        );
        ProviderSpecific::Callbell {
            known_tags: self.known_tags.iter().cloned().collect(),
            known_custom_fields: self.known_custom_fields.iter().cloned().collect(),
            create_source,
        }
    }
}

impl Specific for RawChatwoot {
    fn specific(&self, e: &mut Errors<'_>) -> ProviderSpecific {
        let section = "providers.chatwoot";
        let update_api = match self.update_api.as_deref() {
            None | Some("application") => ChatwootUpdateApi::Application,
            Some("public") => ChatwootUpdateApi::Public,
            Some(other) => {
                e.push(
                    "providers.chatwoot.update_api",
                    format!("{other:?} is not one of \"application\", \"public\""),
                );
                ChatwootUpdateApi::Application
            }
        };
        // The inbox identifier is the public API's secret: only public mode needs it.
        let inbox_identifier = one_secret(
            section,
            "inbox_identifier",
            self.inbox_identifier_env.as_deref(),
            self.inbox_identifier_file.as_ref(),
            self.inbox_identifier_credential.as_deref(),
            update_api == ChatwootUpdateApi::Public,
            e,
        );
        let hmac_token = one_secret(
            section,
            "hmac_token",
            self.hmac_token_env.as_deref(),
            self.hmac_token_file.as_ref(),
            self.hmac_token_credential.as_deref(),
            false,
            e,
        );
        let sort = self.sort.clone().unwrap_or_else(|| "created_at".into());
        if !CHATWOOT_SORTS.contains(&sort.strip_prefix('-').unwrap_or(&sort)) {
            e.push(
                "providers.chatwoot.sort",
                format!(
                    "{sort:?} is not one of {} (each also descending with a leading `-`)",
                    CHATWOOT_SORTS.join(", ")
                ),
            );
        }
        let mut known_labels = BTreeSet::new();
        if let Some(labels) = &self.known_labels {
            if update_api == ChatwootUpdateApi::Public {
                e.push(
                    "providers.chatwoot.known_labels",
                    "applies to update_api = \"application\" only: the public API cannot set labels",
                );
            }
            for label in labels {
                if label.trim().is_empty() || label.trim() != label {
                    e.push(
                        "providers.chatwoot.known_labels",
                        format!("{label:?} is not a label title (blank, or spaces around it)"),
                    );
                } else if !known_labels.insert(label.clone()) {
                    e.push(
                        "providers.chatwoot.known_labels",
                        format!("{label:?} is listed twice"),
                    );
                }
            }
        }
        ProviderSpecific::Chatwoot {
            account_id: self.account_id,
            inbox_id: self.inbox_id,
            inbox_identifier,
            hmac_token,
            sort,
            update_api,
            known_labels,
        }
    }

    /// Chatwoot's limit is per IP and shared with every other client of the instance (SPEC
    /// section 13), so by default only 80% of it is used.
    fn default_headroom() -> Option<f64> {
        Some(0.8)
    }
}

impl Specific for RawPrivy {
    fn specific(&self, e: &mut Errors<'_>) -> ProviderSpecific {
        let page_size = check_page_size("providers.privy.page_size", self.page_size, 100, e);
        if self.daily_limit == Some(0) {
            e.push("providers.privy.daily_limit", "must be at least 1");
        }
        let day_timezone = match self.daily_reset_timezone.as_deref() {
            None => chrono_tz::UTC,
            Some(name) => name.parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
                e.push(
                    "providers.privy.daily_reset_timezone",
                    format!("{name:?} is not an IANA time zone like \"UTC\" or \"Europe/Paris\""),
                );
                chrono_tz::UTC
            }),
        };
        ProviderSpecific::Privy {
            daily_limit: Some(self.daily_limit.unwrap_or(10_000)),
            page_size,
            day_timezone,
        }
    }
}

/// Conservative defaults per provider (SPEC section 9).
pub fn default_rate(kind: ProviderKind) -> Rate {
    let (n, secs) = match kind {
        ProviderKind::Protocol => (10, 1),
        ProviderKind::Callbell => (300, 1),
        ProviderKind::Chatwoot => (50, 1),
        ProviderKind::Privy => (60, 60),
    };
    Rate {
        requests: NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN),
        per: Duration::from_secs(secs),
    }
}

fn parse_order(key: &str, names: &[String], e: &mut Errors<'_>) -> Vec<ProviderKind> {
    let mut out = Vec::new();
    for name in names {
        match name.parse::<ProviderKind>() {
            Ok(p) if out.contains(&p) => e.push(key, format!("`{name}` is listed twice")),
            Ok(p) => out.push(p),
            Err(msg) => e.push(key, msg),
        }
    }
    complete_precedence(&out)
}

fn validate_policy(raw: &raw::RawPolicy, e: &mut Errors<'_>) -> Policy {
    let precedence = parse_order("policy.precedence", &raw.precedence, e);
    let mut field_precedence = BTreeMap::new();
    for (name, fp) in &raw.fields {
        let key = format!("policy.fields.{name}");
        match name.parse::<Field>() {
            Ok(f) => {
                if let Some(order) = &fp.precedence {
                    field_precedence.insert(f, parse_order(&format!("{key}.precedence"), order, e));
                }
            }
            Err(msg) => e.push(key, msg),
        }
    }
    let mut synced = BTreeSet::new();
    for name in &raw.sync_fields {
        match name.parse::<Field>() {
            Ok(f) => {
                synced.insert(f);
            }
            Err(msg) => e.push("policy.sync_fields", msg),
        }
    }
    Policy {
        precedence,
        field_precedence,
        synced,
        propagate_clears: raw.propagate_clears,
        ..Policy::default()
    }
}

fn check_guard(key: &str, g: &RawGuard, e: &mut Errors<'_>) {
    if !(g.max_change_share > 0.0 && g.max_change_share <= 1.0) {
        e.push(
            format!("{key}.max_change_share"),
            format!(
                "{} must be greater than 0 and at most 1",
                g.max_change_share
            ),
        );
    }
}

/// Callbell's default contact source for creates: WhatsApp, whose identifier is the phone.
pub const DEFAULT_CALLBELL_CREATE_SOURCE: &str = "whatsapp";

/// Validates Callbell's `create_source`: a channel name such as `whatsapp` or `telegram`
/// (lower-case letters, digits and `_`), as Callbell's `source` values are written.
fn check_create_source(key: &str, value: Option<&str>, e: &mut Errors<'_>) -> String {
    let Some(v) = value else {
        return DEFAULT_CALLBELL_CREATE_SOURCE.to_owned();
    };
    let valid = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        v.to_owned()
    } else {
        e.push(
            key,
            format!(
                "{v:?} is not a Callbell source name (lower-case letters, digits and `_`, e.g. \"whatsapp\")"
            ),
        );
        DEFAULT_CALLBELL_CREATE_SOURCE.to_owned()
    }
}

fn check_page_size(key: &str, size: Option<u32>, max: u32, e: &mut Errors<'_>) -> u32 {
    match size {
        None => max,
        Some(n) if (1..=max).contains(&n) => n,
        Some(n) => {
            e.push(key, format!("{n} is outside 1..={max}"));
            max
        }
    }
}

fn one_secret(
    section: &str,
    name: &str,
    env: Option<&str>,
    file: Option<&PathBuf>,
    credential: Option<&str>,
    required: bool,
    e: &mut Errors<'_>,
) -> Option<SecretSource> {
    let mut found = Vec::new();
    if let Some(v) = env {
        found.push(SecretSource::Env(v.to_owned()));
    }
    if let Some(f) = file {
        found.push(SecretSource::File(f.clone()));
    }
    if let Some(c) = credential {
        found.push(SecretSource::Credential(c.to_owned()));
    }
    match found.len() {
        1 => found.pop(),
        0 if !required => None,
        0 => {
            e.push(
                format!("{section}.{name}_env"),
                format!("missing: set one of `{name}_env`, `{name}_file` or `{name}_credential`"),
            );
            None
        }
        _ => {
            e.push(
                format!("{section}.{name}_env"),
                format!("set only one of `{name}_env`, `{name}_file` and `{name}_credential`"),
            );
            None
        }
    }
}

fn common(
    kind: ProviderKind,
    raw: &RawCommon<'_>,
    guard: &RawGuard,
    default_rate: Rate,
    e: &mut Errors<'_>,
    specific: ProviderSpecific,
) -> ProviderConfig {
    let section = format!("providers.{kind}");
    let base_url = match Url::parse(raw.base_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
        Ok(u) => {
            e.push(
                format!("{section}.base_url"),
                format!(
                    "{:?} must be an http(s) URL with a host (got scheme `{}`)",
                    raw.base_url,
                    u.scheme()
                ),
            );
            fallback_url()
        }
        Err(err) => {
            e.push(
                format!("{section}.base_url"),
                format!("{:?} is not a valid URL: {err}", raw.base_url),
            );
            fallback_url()
        }
    };
    let token = one_secret(
        &section,
        "token",
        raw.token_env,
        raw.token_file,
        raw.token_credential,
        true,
        e,
    )
    .unwrap_or(SecretSource::Env(String::new()));
    let rate = match raw.rate_limit {
        None => default_rate,
        Some(r) => {
            let per = parse_duration(&r.per).unwrap_or_else(|m| {
                e.push(format!("{section}.rate_limit.per"), m);
                Duration::from_secs(1)
            });
            match NonZeroU32::new(r.requests) {
                Some(requests) => Rate { requests, per },
                None => {
                    e.push(
                        format!("{section}.rate_limit.requests"),
                        "must be at least 1 (a zero quota would never send anything)",
                    );
                    default_rate
                }
            }
        }
    };
    let share = match raw.headroom {
        None => 1.0,
        Some(h) if h > 0.0 && h <= 1.0 => h,
        Some(h) => {
            e.push(
                format!("{section}.headroom"),
                format!("{h} must be greater than 0 and at most 1 (the share of the quota to use)"),
            );
            1.0
        }
    };
    let mut http = HttpSettings::default();
    if let Some(t) = raw.timeout {
        match parse_duration(t) {
            Ok(d) => http.timeout = d,
            Err(m) => e.push(format!("{section}.timeout"), m),
        }
    }
    if let Some(r) = raw.max_retries {
        http.max_retries = r.min(20);
    }
    if let Some(b) = raw.max_body_bytes {
        if b < 1024 {
            e.push(
                format!("{section}.max_body_bytes"),
                format!("{b} is too small (at least 1024)"),
            );
        } else {
            http.max_body_bytes = usize::try_from(b).unwrap_or(usize::MAX);
        }
    }
    let max_concurrency = match raw.max_concurrency {
        None => 4,
        Some(0) => {
            e.push(format!("{section}.max_concurrency"), "must be at least 1");
            1
        }
        Some(n) => n as usize,
    };
    let o = raw.guard.unwrap_or_default();
    let guard = RawGuard {
        max_change_share: o.max_change_share.unwrap_or(guard.max_change_share),
        max_clears: o.max_clears.unwrap_or(guard.max_clears),
        min_records: o.min_records.unwrap_or(guard.min_records),
    };
    if raw.guard.is_some() {
        check_guard(&format!("{section}.guard"), &guard, e);
    }
    let role = match raw.role {
        None | Some("both") => Role::Both,
        Some("source") => Role::Source,
        Some("target") => Role::Target,
        Some(other) => {
            e.push(
                format!("{section}.role"),
                format!("{other:?} is not one of \"both\", \"source\", \"target\""),
            );
            Role::Both
        }
    };
    if role == Role::Source && raw.create {
        e.push(
            format!("{section}.create"),
            "a `role = \"source\"` provider is never written, so it cannot create contacts; drop `create` or change the role",
        );
    }
    let create = raw
        .create
        .then(|| create_filter(&section, raw.create_filter, e));
    if !raw.create && raw.create_filter.is_some() {
        e.push(
            format!("{section}.create_filter"),
            "has no effect without `create = true`",
        );
    }
    let min_scan_interval = raw.min_scan_interval.and_then(|t| match parse_duration(t) {
        Ok(d) if d > Duration::from_secs(7 * 86_400) => {
            e.push(
                format!("{section}.min_scan_interval"),
                format!("{t:?} is longer than a week: the provider's records would be that stale"),
            );
            None
        }
        Ok(d) => Some(d),
        Err(m) => {
            e.push(format!("{section}.min_scan_interval"), m);
            None
        }
    });
    ProviderConfig {
        kind,
        role,
        create,
        max_creates: raw.max_creates.unwrap_or(DEFAULT_MAX_CREATES),
        base_url,
        token,
        rate,
        share,
        http,
        max_concurrency,
        guard: Guard {
            max_change_share: guard.max_change_share,
            max_clears: guard.max_clears,
            min_records: guard.min_records,
        },
        min_scan_interval,
        specific,
    }
}

/// Validates a `create_filter`.
fn create_filter(
    section: &str,
    raw: Option<&raw::RawCreateFilter>,
    e: &mut Errors<'_>,
) -> CreateFilter {
    let Some(raw) = raw else {
        return CreateFilter::default();
    };
    let key = format!("{section}.create_filter");
    let mut filter = CreateFilter::default();
    for name in &raw.require {
        match name.parse::<Field>() {
            Ok(f) => {
                filter.require.insert(f);
            }
            Err(msg) => e.push(format!("{key}.require"), msg),
        }
    }
    for name in &raw.from {
        match name.parse::<ProviderKind>() {
            Ok(p) => {
                filter.from.insert(p);
            }
            Err(msg) => e.push(format!("{key}.from"), msg),
        }
    }
    filter.tags_any = raw.tags_any.iter().cloned().collect();
    filter.tags_none = raw.tags_none.iter().cloned().collect();
    if let Some(both) = filter.tags_any.intersection(&filter.tags_none).next() {
        e.push(
            format!("{key}.tags_none"),
            format!("{both:?} is also in `tags_any`: no person could pass"),
        );
    }
    filter
}

fn fallback_url() -> Url {
    // Used only to keep collecting errors after a bad `base_url`; the config is rejected anyway.
    Url::parse("http://invalid.invalid/").expect("a constant URL parses")
}

fn serde_error(text: &str, file: &str, problem: &collect::SerdeProblem) -> ConfigError {
    let line = problem.offset.map(|at| line_at(text, at));
    let message = problem.message.clone();
    // The full dotted key when the text names one; else serde's unknown key in backticks.
    let key = problem
        .key
        .clone()
        .or_else(|| {
            message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
                .map(String::from)
        })
        .or_else(|| {
            line.and_then(|l| text.lines().nth(l - 1))
                .filter(|l| l.contains('='))
                .and_then(|l| l.split('=').next())
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty())
        })
        .unwrap_or_else(|| "(syntax)".into());
    ConfigError {
        file: file.to_owned(),
        key: printable(&key, 80),
        line,
        message: printable(&message, 400),
    }
}

/// Text from a config file made safe to print: control characters escaped (they could drive a
/// terminal), and long text cut.
fn printable(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .flat_map(|c| {
            if c.is_control() && c != '\n' {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// The line a dotted key is written on, if it is in the file.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    let table = toml::de::DeTable::parse(text).ok()?;
    let mut parts = key.split('.');
    let first = parts.next()?;
    let (mut k, mut v) = table
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == first)?;
    for part in parts {
        let Some(t) = v.get_ref().as_table() else {
            break;
        };
        match t.iter().find(|(k, _)| k.get_ref().as_ref() == part) {
            Some((nk, nv)) => {
                k = nk;
                v = nv;
            }
            None => break,
        }
    }
    Some(line_at(text, k.span().start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_valid() {
        let c = Config::parse(EXAMPLE, "contact-sync.example.toml").expect("example validates");
        assert_eq!(c.providers.len(), 4);
        assert_eq!(
            c.provider(ProviderKind::Privy).map(|p| p.rate.per),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = "[state]\npath = \"x.db\"\n\n[providers.privy]\nbase_url = \"http://127.0.0.1:1\"\ntokn_env = \"X\"\n";
        let err = Config::parse(text, "c.toml").expect_err("unknown key");
        let e = err
            .0
            .iter()
            .find(|e| e.message.contains("unknown field"))
            .expect("the unknown key is reported");
        assert_eq!(e.key, "providers.privy.tokn_env");
        assert_eq!(e.line, Some(6));
        assert!(err.to_string().contains("c.toml:6"), "{err}");
    }

    #[test]
    fn every_unknown_key_and_wrong_type_is_reported_at_once_with_validation_problems() {
        let text = "[state]\npth = \"x.db\"\n\n[providers.privy]\nbase_url = \"http://127.0.0.1:1\"\ntokn_env = \"X\"\ntoken_env = \"P\"\npage_size = \"ten\"\n[providers.privy.rate_limit]\nrequests = \"5\"\nper = \"1m\"\n[providers.nope]\nbase_url = \"x\"\n[schedule]\ncron = \"bad\"\ntimezone = 7\n";
        let err = Config::parse(text, "c.toml").expect_err("invalid");
        let keys: Vec<_> = err.0.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(
            keys,
            vec![
                ("state.pth", Some(2)),
                ("providers.privy.tokn_env", Some(6)),
                ("providers.privy.page_size", Some(8)),
                ("providers.privy.rate_limit.requests", Some(10)),
                ("providers.nope", Some(12)),
                ("schedule.cron", Some(15)),
                ("schedule.timezone", Some(16)),
            ],
            "{err}"
        );
        assert!(err.0[2].message.contains("expected"), "{err}");
        assert!(
            err.to_string()
                .contains("c.toml:8: `providers.privy.page_size`"),
            "{err}"
        );
    }

    #[test]
    fn a_syntax_error_is_reported_once() {
        let err = Config::parse("[state\npath = 1\n", "c.toml").expect_err("syntax");
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].line, Some(1), "{err}");
    }

    #[test]
    fn every_validation_problem_is_reported_with_its_line() {
        let text = "[schedule]\ncron = \"*/5 * * *\"\n[providers.privy]\nbase_url = \"not a url\"\ntoken_env = \"P\"\nrate_limit = { requests = 0, per = \"1m\" }\n";
        let err = Config::parse(text, "c.toml").expect_err("invalid");
        let keys: Vec<_> = err.0.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert!(keys.contains(&("schedule.cron", Some(2))), "{keys:?}");
        assert!(
            keys.contains(&("providers.privy.base_url", Some(4))),
            "{keys:?}"
        );
        assert!(
            keys.contains(&("providers.privy.rate_limit.requests", Some(6))),
            "{keys:?}"
        );
    }

    #[test]
    fn callbell_create_source_defaults_to_whatsapp_and_is_validated() {
        let section =
            "[providers.callbell]\nbase_url = \"http://127.0.0.1:1/v1\"\ntoken_env = \"C\"\n";
        let source = |c: &Config| match c.provider(ProviderKind::Callbell).map(|p| &p.specific) {
            Some(ProviderSpecific::Callbell { create_source, .. }) => create_source.clone(),
            other => panic!("not a Callbell section: {other:?}"),
        };
        let c = Config::parse(section, "c.toml").expect("valid");
        assert_eq!(source(&c), "whatsapp");
        let c = Config::parse(
            &format!("{section}create_source = \"telegram\"\n"),
            "c.toml",
        )
        .expect("valid");
        assert_eq!(source(&c), "telegram");
        let err = Config::parse(
            &format!("{section}create_source = \"Whats App\"\n"),
            "c.toml",
        )
        .expect_err("invalid source");
        let e = &err.0[0];
        assert_eq!(e.key, "providers.callbell.create_source");
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("Whats App"), "{}", e.message);
    }

    #[test]
    fn missing_secret_names_the_key() {
        let text = "[providers.privy]\nbase_url = \"http://127.0.0.1:1\"\ntoken_env = \"CONTACT_SYNC_SURELY_UNSET_TOKEN\"\n";
        let c = Config::parse(text, "c.toml").expect("valid");
        let err = c.resolve_secrets().expect_err("unset");
        assert_eq!(err.0[0].key, "providers.privy.token_env");
        assert!(err.0[0].message.contains("CONTACT_SYNC_SURELY_UNSET_TOKEN"));
    }

    #[test]
    fn chatwoot_known_labels_are_checked() {
        let section = "[providers.chatwoot]\nbase_url = \"http://127.0.0.1:1\"\ntoken_env = \"T\"\naccount_id = 1\ninbox_id = 2\n";
        let c = Config::parse(
            &format!("{section}known_labels = [\"vip\", \"lead\"]\n"),
            "c.toml",
        )
        .expect("valid");
        let Some(ProviderSpecific::Chatwoot { known_labels, .. }) =
            c.provider(ProviderKind::Chatwoot).map(|p| &p.specific)
        else {
            panic!("chatwoot configured");
        };
        assert_eq!(known_labels, &["lead", "vip"].map(String::from).into());
        let unset = Config::parse(section, "c.toml").expect("valid");
        assert!(matches!(
            unset.provider(ProviderKind::Chatwoot).map(|p| &p.specific),
            Some(ProviderSpecific::Chatwoot { known_labels, .. }) if known_labels.is_empty()
        ));
        let err = Config::parse(
            &format!("{section}known_labels = [\"vip\", \" \", \"vip\"]\nupdate_api = \"public\"\ninbox_identifier_env = \"I\"\n"),
            "c.toml",
        )
        .expect_err("invalid");
        let problems: Vec<_> = err
            .0
            .iter()
            .filter(|e| e.key == "providers.chatwoot.known_labels")
            .map(|e| (e.line, e.message.as_str()))
            .collect();
        assert_eq!(problems.len(), 3, "{err}");
        assert!(problems.iter().all(|(line, _)| *line == Some(6)), "{err}");
        assert!(problems[0].1.contains("application"), "{err}");
        assert!(problems[1].1.contains("\" \""), "{err}");
        assert!(problems[2].1.contains("twice"), "{err}");
    }

    #[test]
    fn fingerprint_ignores_secrets_but_not_policy() {
        let a = Config::parse(EXAMPLE, "a").expect("valid");
        let b = Config::parse(
            &EXAMPLE.replace("example-secrets/privy", "elsewhere/privy-token"),
            "b",
        )
        .expect("valid");
        assert_eq!(a.fingerprint(), b.fingerprint());
        let c = Config::parse(
            &EXAMPLE.replace("propagate_clears = false", "propagate_clears = true"),
            "c",
        )
        .expect("valid");
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
