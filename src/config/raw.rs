//! The config file as written: serde types with every field documented and defaulted, and
//! unknown keys rejected. [`super::validate`] turns this into a [`super::Config`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::model::ProviderKind;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where the state store lives.
    #[serde(default)]
    pub state: RawState,
    /// The daemon's schedule.
    #[serde(default)]
    pub schedule: RawSchedule,
    /// How records are matched across providers.
    #[serde(default)]
    pub matching: RawMatching,
    /// Who wins, which fields sync, whether clears propagate.
    #[serde(default)]
    pub policy: RawPolicy,
    /// Guard rails applied to every provider unless its section overrides them.
    #[serde(default)]
    pub guard: RawGuard,
    /// The daemon's HTTP listener and shutdown.
    #[serde(default)]
    pub daemon: RawDaemon,
    /// One section per provider; a provider without a section is not synced.
    #[serde(default)]
    pub providers: RawProviders,
    /// Custom-field keys and tags named differently per provider (SPEC section 12).
    #[serde(default)]
    pub mapping: RawMapping,
    /// Who is left out of the sync.
    #[serde(default)]
    pub scope: RawScope,
}

/// `[mapping]`: one common name per custom field or tag, and each provider's own name for it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    /// `"sync"` (default): a key no mapping names syncs under its own name; `"ignore"`: it is
    /// neither read nor written.
    #[serde(default = "default_unmapped")]
    pub unmapped_custom_fields: String,
    /// Whether tags compare without case (writes keep each provider's spelling).
    #[serde(default)]
    pub tags_case_insensitive: bool,
    /// Common key → provider name → that provider's custom-field key.
    #[serde(default)]
    pub custom_fields: BTreeMap<String, BTreeMap<String, String>>,
    /// Common tag → provider name → that provider's tag.
    #[serde(default)]
    pub tags: BTreeMap<String, BTreeMap<String, String>>,
}

impl Default for RawMapping {
    fn default() -> Self {
        RawMapping {
            unmapped_custom_fields: default_unmapped(),
            tags_case_insensitive: false,
            custom_fields: BTreeMap::new(),
            tags: BTreeMap::new(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_unmapped() -> String {
    "sync".into()
}

/// `[scope]`: who is left out of the sync.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScope {
    /// Common tags (after `[mapping.tags]`) that put a person out of scope when any of their
    /// records holds one.
    #[serde(default)]
    pub exclude_tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// SQLite file; created on first use.
    #[serde(default = "default_state_path")]
    pub path: PathBuf,
}

impl Default for RawState {
    fn default() -> Self {
        RawState {
            path: default_state_path(),
        }
    }
}

fn default_state_path() -> PathBuf {
    PathBuf::from("/var/lib/contact-sync/state.db")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// Cron expression with a seconds field: `sec min hour day-of-month month day-of-week`.
    #[serde(default = "default_cron")]
    pub cron: String,
    /// IANA time zone the expression is read in.
    #[serde(default = "default_tz")]
    pub timezone: String,
}

impl Default for RawSchedule {
    fn default() -> Self {
        RawSchedule {
            cron: default_cron(),
            timezone: default_tz(),
        }
    }
}

fn default_cron() -> String {
    "0 */15 * * * *".into()
}
fn default_tz() -> String {
    "UTC".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatching {
    /// Region for phone numbers stored without a country code (ISO 3166-1 alpha-2).
    #[serde(default = "default_region")]
    pub default_region: String,
}

impl Default for RawMatching {
    fn default() -> Self {
        RawMatching {
            default_region: default_region(),
        }
    }
}

fn default_region() -> String {
    "US".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Who wins a conflict, by default (first wins).
    #[serde(default = "default_precedence")]
    pub precedence: Vec<String>,
    /// Whether clearing a value in one provider clears it everywhere.
    #[serde(default)]
    pub propagate_clears: bool,
    /// Fields to sync; default all.
    #[serde(default = "default_fields")]
    pub sync_fields: Vec<String>,
    /// Per-field overrides.
    #[serde(default)]
    pub fields: BTreeMap<String, RawFieldPolicy>,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            precedence: default_precedence(),
            propagate_clears: false,
            sync_fields: default_fields(),
            fields: BTreeMap::new(),
        }
    }
}

fn default_precedence() -> Vec<String> {
    ["chatwoot", "privy", "callbell", "protocol"]
        .map(String::from)
        .to_vec()
}

fn default_fields() -> Vec<String> {
    crate::model::Field::ALL
        .iter()
        .map(|f| f.as_str().to_owned())
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFieldPolicy {
    /// Precedence for this field only; default the `[policy]` one.
    #[serde(default)]
    pub precedence: Option<Vec<String>>,
    /// The only providers whose edits of this field count; default all.
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    /// The only providers this field is written to; default all.
    #[serde(default)]
    pub targets: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    /// Largest share (0..=1) of a provider's contacts one run may change.
    #[serde(default = "default_max_change_share")]
    pub max_change_share: f64,
    /// Largest number of values one run may clear in a provider.
    #[serde(default = "default_max_clears")]
    pub max_clears: u64,
    /// Runs that would change fewer records than this are never stopped by the share rule
    /// (a small account changing 3 of 5 contacts is a normal day).
    #[serde(default = "default_min_changes")]
    pub min_records: u64,
}

impl Default for RawGuard {
    fn default() -> Self {
        RawGuard {
            max_change_share: default_max_change_share(),
            max_clears: default_max_clears(),
            min_records: default_min_changes(),
        }
    }
}

fn default_max_change_share() -> f64 {
    0.5
}
fn default_max_clears() -> u64 {
    25
}
fn default_min_changes() -> u64 {
    20
}

/// Per-provider guard overrides.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuardOverride {
    pub max_change_share: Option<f64>,
    pub max_clears: Option<u64>,
    pub min_records: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    /// Loopback address for `/healthz` and `/metrics`; empty disables the listener.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// How long SIGTERM waits for in-flight requests.
    #[serde(default = "default_grace")]
    pub shutdown_grace: String,
    /// Longest a sync may run before the daemon stops pinging the systemd watchdog (with
    /// `WatchdogSec=`, systemd then restarts it), e.g. "2h"; empty: no limit.
    #[serde(default)]
    pub max_run_time: String,
}

impl Default for RawDaemon {
    fn default() -> Self {
        RawDaemon {
            listen: default_listen(),
            shutdown_grace: default_grace(),
            max_run_time: String::new(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9187".into()
}
fn default_grace() -> String {
    "30s".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProviders {
    pub protocol: Option<RawProtocol>,
    pub callbell: Option<RawCallbell>,
    pub chatwoot: Option<RawChatwoot>,
    pub privy: Option<RawPrivy>,
}

/// `{ requests = 10, per = "1s" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    pub requests: u32,
    pub per: String,
}

/// Keys every provider section has. Spelled out in each section (serde cannot combine
/// `flatten` with `deny_unknown_fields`), and read through [`RawCommon`].
#[derive(Debug, Clone)]
pub struct RawCommon<'a> {
    pub base_url: &'a str,
    pub token_env: Option<&'a str>,
    pub token_file: Option<&'a PathBuf>,
    pub token_credential: Option<&'a str>,
    pub rate_limit: Option<&'a RawRate>,
    pub headroom: Option<f64>,
    pub timeout: Option<&'a str>,
    pub max_concurrency: Option<u32>,
    pub max_retries: Option<u32>,
    pub max_body_bytes: Option<u64>,
    pub guard: Option<RawGuardOverride>,
    pub role: Option<&'a str>,
    pub create: bool,
    pub create_filter: Option<&'a RawCreateFilter>,
    pub max_creates: Option<u64>,
    pub min_scan_interval: Option<&'a str>,
}

/// `create_filter = { require = [...], tags_any = [...], tags_none = [...], from = [...] }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCreateFilter {
    /// Fields the person must have (e.g. `["phone"]`).
    #[serde(default)]
    pub require: Vec<String>,
    /// The person's agreed tags must hold one of these.
    #[serde(default)]
    pub tags_any: Vec<String>,
    /// The person's agreed tags must hold none of these.
    #[serde(default)]
    pub tags_none: Vec<String>,
    /// Only people with a record in one of these providers.
    #[serde(default)]
    pub from: Vec<String>,
}

/// A `[providers.<name>]` section: which provider it configures and the keys all of them have.
pub trait ProviderSection {
    /// The provider the section configures.
    const KIND: ProviderKind;
    /// The keys every provider section has.
    fn common(&self) -> RawCommon<'_>;
}

macro_rules! provider_section {
    ($(#[$meta:meta])* $name:ident = $kind:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// API base URL (override to point at a simulator).
            pub base_url: String,
            /// Token from this environment variable.
            pub token_env: Option<String>,
            /// Token from this file.
            pub token_file: Option<PathBuf>,
            /// Token from this systemd credential (`LoadCredential=`).
            pub token_credential: Option<String>,
            /// Provider quota.
            pub rate_limit: Option<RawRate>,
            /// Share of the quota to use (0.01..=1), leaving the rest for other users of the key.
            pub headroom: Option<f64>,
            /// Per-request timeout, e.g. "30s".
            pub timeout: Option<String>,
            /// Concurrent requests to this provider.
            pub max_concurrency: Option<u32>,
            /// Retries for a retryable failure.
            pub max_retries: Option<u32>,
            /// Largest response body accepted.
            pub max_body_bytes: Option<u64>,
            /// Guard rail overrides for this provider.
            pub guard: Option<RawGuardOverride>,
            /// `"both"` (default: read and written), `"source"` (read, never written or created
            /// in) or `"target"` (written and created in; its own edits never spread).
            pub role: Option<String>,
            /// Create the contacts this provider lacks (default false).
            #[serde(default)]
            pub create: bool,
            /// Which people are created here.
            pub create_filter: Option<RawCreateFilter>,
            /// Most creates one run may send here before the guard rail stops it (default 100).
            pub max_creates: Option<u64>,
            /// Least time between two listings of this provider, e.g. "1h" (default: as often
            /// as its daily quota allows).
            pub min_scan_interval: Option<String>,
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl ProviderSection for $name {
            const KIND: ProviderKind = ProviderKind::$kind;

            fn common(&self) -> RawCommon<'_> {
                RawCommon {
                    base_url: &self.base_url,
                    token_env: self.token_env.as_deref(),
                    token_file: self.token_file.as_ref(),
                    token_credential: self.token_credential.as_deref(),
                    rate_limit: self.rate_limit.as_ref(),
                    headroom: self.headroom,
                    timeout: self.timeout.as_deref(),
                    max_concurrency: self.max_concurrency,
                    max_retries: self.max_retries,
                    max_body_bytes: self.max_body_bytes,
                    guard: self.guard,
                    role: self.role.as_deref(),
                    create: self.create,
                    create_filter: self.create_filter.as_ref(),
                    max_creates: self.max_creates,
                    min_scan_interval: self.min_scan_interval.as_deref(),
                }
            }
        }
    };
}

provider_section!(
    /// `[providers.protocol]`.
    RawProtocol = Protocol {
        /// Use the older `PUT` endpoint, which writes `display_name` only.
        #[serde(default)]
        legacy_put: bool,
        /// Page size for listing (the API allows up to 100).
        page_size: Option<u32>,
    }
);

provider_section!(
    /// `[providers.callbell]`.
    RawCallbell = Callbell {
        /// Tags that exist in the account (Callbell has no API to list them).
        #[serde(default)]
        known_tags: Vec<String>,
        /// Custom-field keys that exist in the account.
        #[serde(default)]
        known_custom_fields: Vec<String>,
        /// The `source` (channel) sent when creating a contact; default `"whatsapp"`, whose
        /// identifier is the phone as international digits.
        create_source: Option<String>,
    }
);

provider_section!(
    /// `[providers.chatwoot]`.
    RawChatwoot = Chatwoot {
        /// Account whose contacts are synced.
        account_id: u64,
        /// Inbox whose contact source ids are used for updates.
        inbox_id: u64,
        /// Public API inbox identifier from this environment variable.
        inbox_identifier_env: Option<String>,
        /// Public API inbox identifier from this file.
        inbox_identifier_file: Option<PathBuf>,
        /// Public API inbox identifier from this systemd credential.
        inbox_identifier_credential: Option<String>,
        /// Inbox HMAC token (optional) from this environment variable.
        hmac_token_env: Option<String>,
        /// Inbox HMAC token from this file.
        hmac_token_file: Option<PathBuf>,
        /// Inbox HMAC token from this systemd credential.
        hmac_token_credential: Option<String>,
        /// Sort key for listing (the API wants one always); default `created_at`.
        sort: Option<String>,
        /// `"application"` (default) or `"public"`: which API updates go through.
        update_api: Option<String>,
        /// Labels defined in the account (Settings → Labels) that may be added to contacts;
        /// application mode only. Unset: no label is added (removals still sync).
        known_labels: Option<Vec<String>>,
        /// Leave blocked contacts (and the people they belong to) out of the sync.
        #[serde(default = "default_true")]
        skip_blocked: bool,
    }
);

provider_section!(
    /// `[providers.privy]`.
    RawPrivy = Privy {
        /// Requests per day the account allows.
        daily_limit: Option<u64>,
        /// IANA time zone whose midnight starts the provider's day, when the daily quota is
        /// counted locally (no reset header); default "UTC".
        daily_reset_timezone: Option<String>,
        /// Page size for listing (the API allows up to 100).
        page_size: Option<u32>,
    }
);
