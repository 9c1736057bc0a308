//! Provider simulators: faithful local HTTP servers for the four providers, used by the tests,
//! the benches and `contact-sync demo`.
//!
//! Each provider module (`protocol`, `callbell`, `chatwoot`, `privy`) supplies its routes, its
//! wire format and its rules, written from the provider's documentation. This module supplies
//! what they share: serving on an ephemeral loopback port, an in-memory contact [`Store`], a log
//! of every request received ([`Recorded`]), rate limits that answer 429 the way the provider
//! does, authentication, and per-test fault injection ([`FaultRule`]).

pub mod callbell;
pub mod chatwoot;
pub mod privy;
pub mod protocol;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use url::Url;

use crate::model::ProviderKind;

/// One request a simulator received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    /// The JSON body, if it had one that parsed.
    pub body: Option<Value>,
    /// The status the simulator answered (0 when the connection was dropped).
    pub status: u16,
    pub at: Instant,
}

impl Recorded {
    /// Whether this request could change data (anything but GET/HEAD).
    pub fn is_write(&self) -> bool {
        self.method != Method::GET && self.method != Method::HEAD
    }
}

/// Changes the store the way concurrent users of a provider would (used to make a listing's
/// pages repeat or skip records between calls).
pub type StoreHook = Arc<dyn Fn(&mut Store) + Send + Sync>;

/// A fault to inject.
#[derive(Clone)]
pub enum Fault {
    /// Answer with this status and the provider's error body.
    Status(u16),
    /// Answer 429, with or without `Retry-After` (seconds).
    RateLimited { retry_after: Option<u64> },
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Close the connection without an answer.
    Drop,
    /// Send headers and half of the real body, then reset the connection.
    ResetMidBody,
    /// Send the real answer's status with its JSON cut in half.
    Truncated,
    /// Send 200 with a body that is not JSON.
    Malformed,
    /// Send 200 with valid JSON of the wrong shape.
    WrongShape,
    /// Send 200 with a body of this many bytes.
    Oversized(usize),
    /// Change the store, then handle the request normally.
    Mutate(StoreHook),
    /// Answer with this status and exactly these bytes (fuzzing the adapters' parsers).
    Body(u16, Bytes),
    /// Handle the request normally (its effect happens), then drop the connection instead of
    /// answering: the client cannot tell whether a create or update was applied.
    ApplyThenDrop,
    /// Handle the request normally (its effect happens), then wait this long before answering,
    /// so a client with a shorter timeout gives up on a request that was applied.
    ApplyThenStall(Duration),
}

impl std::fmt::Debug for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Status(s) => write!(f, "Status({s})"),
            Fault::RateLimited { retry_after } => write!(f, "RateLimited({retry_after:?})"),
            Fault::Delay(d) => write!(f, "Delay({d:?})"),
            Fault::Drop => f.write_str("Drop"),
            Fault::ResetMidBody => f.write_str("ResetMidBody"),
            Fault::Truncated => f.write_str("Truncated"),
            Fault::Malformed => f.write_str("Malformed"),
            Fault::WrongShape => f.write_str("WrongShape"),
            Fault::Oversized(n) => write!(f, "Oversized({n})"),
            Fault::Mutate(_) => f.write_str("Mutate"),
            Fault::Body(status, b) => write!(f, "Body({status}, {} bytes)", b.len()),
            Fault::ApplyThenDrop => f.write_str("ApplyThenDrop"),
            Fault::ApplyThenStall(d) => write!(f, "ApplyThenStall({d:?})"),
        }
    }
}

/// When to inject a fault: matching requests, after letting `skip` of them through, `times`
/// times (or forever).
#[derive(Debug, Clone)]
pub struct FaultRule {
    pub method: Option<Method>,
    pub path_contains: Option<String>,
    pub skip: u32,
    pub times: Option<u32>,
    pub fault: Fault,
}

impl FaultRule {
    /// A fault on every request, forever.
    pub fn always(fault: Fault) -> Self {
        FaultRule {
            method: None,
            path_contains: None,
            skip: 0,
            times: None,
            fault,
        }
    }

    /// Only requests with this method.
    pub fn on(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Only requests whose path contains `s`.
    pub fn path(mut self, s: &str) -> Self {
        self.path_contains = Some(s.to_owned());
        self
    }

    /// Let the first `n` matching requests through.
    pub fn after(mut self, n: u32) -> Self {
        self.skip = n;
        self
    }

    /// Inject `n` times, then stop.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && self
                .path_contains
                .as_ref()
                .is_none_or(|p| path.contains(p.as_str()))
    }
}

/// A quota window: `limit` requests per `period`. `name` labels Privy-style headers
/// (`X-RateLimit-Limit-<name>`).
#[derive(Debug, Clone)]
pub struct SimQuota {
    pub name: &'static str,
    pub limit: u32,
    pub period: Duration,
}

#[derive(Debug)]
struct Window {
    quota: SimQuota,
    started: Instant,
    used: u32,
}

/// Settings for one simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The token the simulator accepts.
    pub token: String,
    /// Quotas enforced (429 when any is spent).
    pub quotas: Vec<SimQuota>,
    /// Records per list page, where the provider fixes it (Callbell about 20, Chatwoot 15).
    pub page_size: Option<usize>,
    /// Reformat values on write the way a real service may (phone punctuation, e-mail case,
    /// tag order), to prove comparisons are echo-free.
    pub reformat_on_write: bool,
    /// Callbell: tags and custom-field keys that exist in the account.
    pub callbell_tags: BTreeSet<String>,
    pub callbell_custom_fields: BTreeSet<String>,
    /// Callbell: refuse a create for a phone the account already holds. `post_contacts.md`
    /// does not say what Callbell does then, so the default is the unkind answer, a second
    /// contact for the same number, which a client that sends a create twice would make.
    pub callbell_refuses_duplicate_phone: bool,
    /// Privy: whether a 409 on create names the existing contact's id in its body. Privy does
    /// not document where (SPEC section 11), so tests run both ways: with the id, and without
    /// it, when the client must find the contact through the list filter.
    pub privy_conflict_id_in_body: bool,
    /// Chatwoot: the account, inbox and public inbox identifier served.
    pub chatwoot: ChatwootSim,
}

/// Chatwoot simulator settings.
#[derive(Debug, Clone)]
pub struct ChatwootSim {
    pub account_id: u64,
    pub inbox_id: u64,
    pub inbox_identifier: String,
    /// When set, updates must carry a matching `identifier_hash`.
    pub hmac_token: Option<String>,
    /// A failed HMAC check answers 500, as Chatwoot 4.13 does (its `StandardError` has no
    /// handler); `false` answers 401 instead, for tests that want the kinder variant.
    pub hmac_failure_500: bool,
    /// The account's labels (`GET /api/v1/accounts/{id}/labels`).
    pub labels: Vec<String>,
    /// Seeds the order of sort ties, which Chatwoot leaves to the database (unstable).
    pub tie_seed: u64,
}

impl Default for ChatwootSim {
    fn default() -> Self {
        ChatwootSim {
            account_id: 7,
            inbox_id: 3,
            inbox_identifier: "sim-inbox-identifier".into(),
            hmac_token: None,
            hmac_failure_500: true,
            // The same tags Callbell's account knows. The adapter adds only labels it is
            // configured to know (`known_labels`, which [`provider_config`] takes from here);
            // others, like the demo's "newsletter", are skipped as unknown tags.
            labels: ["lead", "vip", "wholesale"].map(String::from).into(),
            tie_seed: 0,
        }
    }
}

impl SimOptions {
    /// Defaults for `kind`: its documented quotas, a fixed token, an account with a few tags.
    pub fn for_provider(kind: ProviderKind) -> Self {
        let quotas = match kind {
            ProviderKind::Protocol => vec![],
            ProviderKind::Callbell => vec![SimQuota {
                name: "Second",
                limit: 300,
                period: Duration::from_secs(1),
            }],
            ProviderKind::Chatwoot => vec![SimQuota {
                name: "Minute",
                limit: 3000,
                period: Duration::from_secs(60),
            }],
            ProviderKind::Privy => vec![
                SimQuota {
                    name: "Minute",
                    limit: 60,
                    period: Duration::from_secs(60),
                },
                SimQuota {
                    name: "Day",
                    limit: 10_000,
                    period: Duration::from_secs(86_400),
                },
            ],
        };
        SimOptions {
            token: format!("sim-{kind}-token"),
            quotas,
            page_size: None,
            reformat_on_write: false,
            callbell_tags: ["vip", "wholesale", "lead"].map(String::from).into(),
            callbell_custom_fields: ["loyalty_tier", "city"].map(String::from).into(),
            callbell_refuses_duplicate_phone: false,
            privy_conflict_id_in_body: true,
            chatwoot: ChatwootSim::default(),
        }
    }

    /// No quotas at all (for tests that are not about rate limits).
    pub fn unlimited(mut self) -> Self {
        self.quotas.clear();
        self
    }
}

/// A provider-neutral description of a person, for seeding any simulator.
#[derive(Debug, Clone, Default)]
pub struct SeedPerson {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub avatar_url: Option<String>,
    pub username: Option<String>,
    pub identifier: Option<String>,
    pub tags: Vec<String>,
    pub custom_fields: BTreeMap<String, String>,
}

impl SeedPerson {
    /// The person as `kind` stores them: the fields that provider has no place for left out
    /// (no e-mail in Protocol or Callbell, no username outside Protocol, no tags in Protocol,
    /// no custom fields in Protocol). Chatwoot keeps tags as labels.
    pub fn stored_by(&self, kind: ProviderKind) -> SeedPerson {
        let mut p = self.clone();
        match kind {
            ProviderKind::Protocol => {
                p.email = None;
                p.tags.clear();
                p.custom_fields.clear();
            }
            ProviderKind::Callbell => {
                p.email = None;
                p.username = None;
            }
            ProviderKind::Chatwoot => p.username = None,
            ProviderKind::Privy => p.username = None,
        }
        p
    }
}

/// Contacts in insertion order, addressable by id.
#[derive(Debug, Default)]
pub struct Store {
    items: BTreeMap<i64, Value>,
    index: HashMap<String, i64>,
    next_seq: i64,
    first_seq: i64,
    /// Highest seed sequence number used, so new seeds never reuse an id (a merge or delete
    /// shrinks the store, so its length is no guide).
    seeded: u64,
    id_field: &'static str,
}

impl Store {
    pub fn new(id_field: &'static str) -> Self {
        Store {
            id_field,
            ..Store::default()
        }
    }

    /// The id of a stored contact (string or number), as text.
    pub fn id_of(&self, v: &Value) -> Option<String> {
        match v.get(self.id_field)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Inserts or replaces by id.
    pub fn upsert(&mut self, v: Value) {
        let Some(id) = self.id_of(&v) else { return };
        if let Some(seq) = self.index.get(&id) {
            self.items.insert(*seq, v);
        } else {
            self.next_seq += 1;
            self.items.insert(self.next_seq, v);
            self.index.insert(id, self.next_seq);
        }
    }

    /// Inserts a new contact before all others (as if it sorted first), so offset-paged
    /// listings in progress see a record repeat.
    pub fn insert_front(&mut self, v: Value) {
        let Some(id) = self.id_of(&v) else { return };
        if self.index.contains_key(&id) {
            return self.upsert(v);
        }
        self.first_seq -= 1;
        self.items.insert(self.first_seq, v);
        self.index.insert(id, self.first_seq);
    }

    /// Removes the first contact (so offset-paged listings in progress skip one).
    pub fn remove_first(&mut self) -> Option<Value> {
        let (seq, v) = self.items.pop_first()?;
        self.index.retain(|_, s| *s != seq);
        Some(v)
    }

    /// A sequence number no seeded or created contact has used, for a contact a simulator
    /// creates (so a later seed with the next number does not reuse its id by accident).
    pub fn allocate_seq(&mut self) -> u64 {
        self.seeded += 1;
        self.seeded
    }

    /// Contacts after the one with id `after`, in order (for cursor paging).
    pub fn iter_after<'a>(&'a self, after: &str) -> Option<impl Iterator<Item = &'a Value> + 'a> {
        let seq = *self.index.get(after)?;
        Some(self.items.range(seq + 1..).map(|(_, v)| v))
    }

    pub fn get(&self, id: &str) -> Option<&Value> {
        self.index.get(id).and_then(|s| self.items.get(s))
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Value> {
        let seq = *self.index.get(id)?;
        self.items.get_mut(&seq)
    }

    pub fn remove(&mut self, id: &str) -> Option<Value> {
        let seq = self.index.remove(id)?;
        self.items.remove(&seq)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// All contacts in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &Value> {
        self.items.values()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Value> {
        self.items.values_mut()
    }
}

/// Provider-specific answers the shared layer needs.
pub trait Flavor: Send + Sync + 'static {
    /// Checks authentication for a request (`path` without the query).
    fn authorize(&self, headers: &HeaderMap, path: &str, opts: &SimOptions) -> bool;
    /// The provider's 401.
    fn unauthorized(&self) -> Response;
    /// The provider's 429.
    fn rate_limited(&self, retry_after_secs: u64) -> Response;
    /// The provider's error body for an injected status.
    fn error(&self, status: StatusCode, message: &str) -> Response;
    /// Whether responses carry `X-RateLimit-*` headers.
    fn quota_headers(&self) -> bool {
        false
    }
}

/// State shared by the middleware and a provider's handlers.
pub struct SimShared {
    pub kind: ProviderKind,
    pub store: Mutex<Store>,
    pub opts: Mutex<SimOptions>,
    log: Mutex<Vec<Recorded>>,
    faults: Mutex<Vec<(FaultRule, u32)>>,
    windows: Mutex<Vec<Window>>,
    flavor: Box<dyn Flavor>,
    /// Contacts deleted through a provider that keeps them restorable (Privy restores a deleted
    /// contact when a create carries its e-mail or phone), in deletion order.
    pub deleted: Mutex<Vec<Value>>,
    /// Welcome SMS messages the provider would have sent (Privy: a create carrying a
    /// `subscribed` SMS consent). Tests assert that contact-sync never causes one.
    pub welcome_sms: AtomicU64,
}

impl SimShared {
    /// The store, locked. Never held across an await.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// A copy of the options.
    pub fn options(&self) -> SimOptions {
        lock(&self.opts).clone()
    }

    /// The provider's error response.
    pub fn error(&self, status: StatusCode, message: &str) -> Response {
        self.flavor.error(status, message)
    }

    /// The deleted contacts, locked. Never held across an await.
    pub fn deleted(&self) -> MutexGuard<'_, Vec<Value>> {
        lock(&self.deleted)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Simulator state stays consistent when a handler panics (each lock guards plain data), so
    // a poisoned lock is recovered instead of failing every later request.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running simulator.
pub struct Sim {
    pub kind: ProviderKind,
    pub addr: SocketAddr,
    shared: Arc<SimShared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("kind", &self.kind)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// Starts a simulator of `kind` on an ephemeral loopback port.
    pub async fn start(kind: ProviderKind, opts: SimOptions) -> std::io::Result<Sim> {
        Self::start_on(
            kind,
            opts,
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
        )
        .await
    }

    /// Starts a simulator on a given address (for restarting one on the same port).
    pub async fn start_on(
        kind: ProviderKind,
        opts: SimOptions,
        addr: SocketAddr,
    ) -> std::io::Result<Sim> {
        let (flavor, id_field): (Box<dyn Flavor>, &'static str) = match kind {
            ProviderKind::Protocol => (Box::new(protocol::ProtocolFlavor), "id"),
            ProviderKind::Callbell => (Box::new(callbell::CallbellFlavor), "uuid"),
            ProviderKind::Chatwoot => (Box::new(chatwoot::ChatwootFlavor), "id"),
            ProviderKind::Privy => (Box::new(privy::PrivyFlavor), "id"),
        };
        let now = Instant::now();
        let windows = opts
            .quotas
            .iter()
            .map(|q| Window {
                quota: q.clone(),
                started: now,
                used: 0,
            })
            .collect();
        let shared = Arc::new(SimShared {
            kind,
            store: Mutex::new(Store::new(id_field)),
            opts: Mutex::new(opts),
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            windows: Mutex::new(windows),
            flavor,
            deleted: Mutex::new(Vec::new()),
            welcome_sms: AtomicU64::new(0),
        });
        let routes = match kind {
            ProviderKind::Protocol => protocol::router(),
            ProviderKind::Callbell => callbell::router(),
            ProviderKind::Chatwoot => chatwoot::router(),
            ProviderKind::Privy => privy::router(),
        };
        let app: Router = routes
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                middleware,
            ))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "Simulator stopped with an error.");
            }
        });
        Ok(Sim {
            kind,
            addr,
            shared,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The base URL to configure as the provider's `base_url`.
    pub fn base_url(&self) -> Url {
        let path = match self.kind {
            ProviderKind::Callbell => "/v1",
            _ => "",
        };
        Url::parse(&format!("http://{}{path}", self.addr))
            .expect("a socket address forms a valid URL")
    }

    /// The token the simulator accepts.
    pub fn token(&self) -> String {
        lock(&self.shared.opts).token.clone()
    }

    /// The shared state (store, options), for provider-specific inspection.
    pub fn shared(&self) -> &Arc<SimShared> {
        &self.shared
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.log).clone()
    }

    /// The requests that could change data.
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_write)
            .collect()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    /// Every stored contact, in the provider's wire format, in insertion order.
    pub fn contacts(&self) -> Vec<Value> {
        self.shared.store().iter().cloned().collect()
    }

    /// One stored contact by id.
    pub fn contact(&self, id: &str) -> Option<Value> {
        self.shared.store().get(id).cloned()
    }

    /// Inserts or replaces a contact (wire format).
    pub fn upsert(&self, v: Value) {
        self.shared.store().upsert(v);
    }

    /// Changes one stored contact in place.
    pub fn modify(&self, id: &str, f: impl FnOnce(&mut Value)) -> bool {
        match self.shared.store().get_mut(id) {
            Some(v) => {
                f(v);
                true
            }
            None => false,
        }
    }

    /// Seeds contacts given in the provider's wire format (e.g. from a JSON fixture file).
    pub fn seed_json(&self, contacts: impl IntoIterator<Item = Value>) {
        let mut store = self.shared.store();
        for c in contacts {
            store.upsert(c);
        }
    }

    /// Seeds people described provider-neutrally; returns the ids assigned, in order.
    pub fn seed_people(&self, people: &[SeedPerson]) -> Vec<String> {
        let opts = self.shared.options();
        let mut store = self.shared.store();
        let mut ids = Vec::with_capacity(people.len());
        for p in people {
            store.seeded += 1;
            let seq = store.seeded;
            let v = match self.kind {
                ProviderKind::Protocol => protocol::from_seed(p, seq),
                ProviderKind::Callbell => callbell::from_seed(p, seq),
                ProviderKind::Chatwoot => chatwoot::from_seed(p, seq, &opts),
                ProviderKind::Privy => privy::from_seed(p, seq),
            };
            if let Some(id) = store.id_of(&v) {
                ids.push(id);
            }
            store.upsert(v);
        }
        ids
    }

    /// Adds a fault rule.
    pub fn inject(&self, rule: FaultRule) {
        lock(&self.shared.faults).push((rule, 0));
    }

    /// How many welcome SMS messages the provider would have sent (Privy; zero elsewhere).
    pub fn welcome_sms_sent(&self) -> u64 {
        self.shared.welcome_sms.load(Ordering::SeqCst)
    }

    /// Deletes a contact the way a user of the provider would, keeping it restorable: it leaves
    /// the listing and is kept aside (see [`SimShared::deleted`]). Returns whether it existed.
    pub fn soft_delete(&self, id: &str) -> bool {
        let removed = self.shared.store().remove(id);
        match removed {
            Some(v) => {
                self.shared.deleted().push(v);
                true
            }
            None => false,
        }
    }

    /// The contacts deleted and not restored, in the provider's wire format.
    pub fn deleted_contacts(&self) -> Vec<Value> {
        self.shared.deleted().clone()
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Replaces the quotas (and restarts their windows).
    pub fn set_quotas(&self, quotas: Vec<SimQuota>) {
        let now = Instant::now();
        *lock(&self.shared.windows) = quotas
            .iter()
            .map(|q| Window {
                quota: q.clone(),
                started: now,
                used: 0,
            })
            .collect();
        lock(&self.shared.opts).quotas = quotas;
    }

    /// Changes the options in place (tags known to Callbell, reformatting, ...).
    pub fn configure(&self, f: impl FnOnce(&mut SimOptions)) {
        f(&mut lock(&self.shared.opts));
    }

    /// Stops serving and waits for the server to finish.
    pub async fn stop(mut self) {
        self.shutdown_now().await;
    }

    async fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            // Connections left open by a client would hold graceful shutdown; do not wait long.
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                tracing::debug!("Simulator shutdown timed out; abandoning open connections.");
            }
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Records the request, then applies injected faults, quotas and authentication before the
/// provider's handler sees it.
async fn middleware(State(shared): State<Arc<SimShared>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 8 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let json_body = serde_json::from_slice::<Value>(&bytes).ok();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(String::from);
    let at = Instant::now();
    let record = |status: u16| {
        lock(&shared.log).push(Recorded {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: json_body.clone(),
            status,
            at,
        });
    };

    let fault = {
        let mut faults = lock(&shared.faults);
        let mut chosen = None;
        for (rule, seen) in faults.iter_mut() {
            if !rule.matches(&method, &path) {
                continue;
            }
            *seen += 1;
            let active = *seen > rule.skip && rule.times.is_none_or(|t| *seen <= rule.skip + t);
            if active && chosen.is_none() {
                chosen = Some(rule.fault.clone());
            }
        }
        chosen
    };

    let req = Request::from_parts(parts, Body::from(bytes));
    let response = match fault {
        None => handle(&shared, req, next).await,
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            handle(&shared, req, next).await
        }
        Some(Fault::Body(status, body)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            (status, [("content-type", "application/json")], body).into_response()
        }
        Some(Fault::Mutate(hook)) => {
            hook(&mut shared.store());
            handle(&shared, req, next).await
        }
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            shared.flavor.error(status, "injected fault")
        }
        Some(Fault::RateLimited { retry_after }) => {
            let mut r = shared.flavor.rate_limited(retry_after.unwrap_or(0));
            match retry_after {
                Some(s) => {
                    r.headers_mut().insert("retry-after", HeaderValue::from(s));
                }
                None => {
                    r.headers_mut().remove("retry-after");
                }
            }
            r
        }
        Some(Fault::Drop) => {
            record(0);
            return broken_body(Bytes::new());
        }
        Some(Fault::ApplyThenDrop) => {
            // The handler runs to completion, so the store holds its effect; the answer is
            // thrown away and the connection reset before any of it reaches the client.
            drop(handle(&shared, req, next).await);
            record(0);
            return broken_body(Bytes::new());
        }
        Some(Fault::ApplyThenStall(d)) => {
            let mut real = handle(&shared, req, next).await;
            if shared.flavor.quota_headers() {
                add_quota_headers(&shared, real.headers_mut());
            }
            // Logged now: a client that gives up closes the connection, and the server then
            // drops this future before the answer would have been logged.
            record(real.status().as_u16());
            tokio::time::sleep(d).await;
            return real;
        }
        Some(Fault::ResetMidBody) => {
            let real = handle(&shared, req, next).await;
            let (parts, body) = real.into_parts();
            let full = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            record(0);
            let mut r = broken_body(full.slice(..full.len() / 2));
            *r.status_mut() = parts.status;
            return r;
        }
        Some(Fault::Truncated) => {
            let real = handle(&shared, req, next).await;
            let (parts, body) = real.into_parts();
            let full = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let cut = full.slice(..full.len() / 2);
            let mut r = (parts.status, cut).into_response();
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            r
        }
        Some(Fault::Malformed) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            "<html>Bad gateway</html>",
        )
            .into_response(),
        Some(Fault::WrongShape) => (
            StatusCode::OK,
            axum::Json(json!({"unexpected": {"shape": [1, 2, 3]}})),
        )
            .into_response(),
        Some(Fault::Oversized(n)) => {
            let mut body = Vec::with_capacity(n + 16);
            body.extend_from_slice(b"{\"padding\":\"");
            body.resize(n.saturating_sub(2).max(12), b'x');
            body.extend_from_slice(b"\"}");
            (StatusCode::OK, [("content-type", "application/json")], body).into_response()
        }
    };
    let mut response = response;
    if shared.flavor.quota_headers() {
        add_quota_headers(&shared, response.headers_mut());
    }
    record(response.status().as_u16());
    response
}

/// Admits the request (quotas, authentication) and runs the provider's handler.
async fn handle(shared: &Arc<SimShared>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if let Some(resp) = admission(shared, req.headers(), &path) {
        return resp;
    }
    next.run(req).await
}

/// Quotas and authentication, in that order (a provider counts unauthenticated calls too).
fn admission(shared: &Arc<SimShared>, headers: &HeaderMap, path: &str) -> Option<Response> {
    {
        let mut windows = lock(&shared.windows);
        let now = Instant::now();
        let mut wait: Option<u64> = None;
        for w in windows.iter_mut() {
            if now.duration_since(w.started) >= w.quota.period {
                w.started = now;
                w.used = 0;
            }
            if w.used >= w.quota.limit {
                let left = w.quota.period.saturating_sub(now.duration_since(w.started));
                let secs = left.as_secs_f64().ceil() as u64;
                wait = Some(wait.map_or(secs, |x| x.max(secs)).max(1));
            }
        }
        if let Some(secs) = wait {
            return Some(shared.flavor.rate_limited(secs));
        }
        for w in windows.iter_mut() {
            w.used += 1;
        }
    }
    let opts = lock(&shared.opts);
    if !shared.flavor.authorize(headers, path, &opts) {
        return Some(shared.flavor.unauthorized());
    }
    None
}

fn add_quota_headers(shared: &Arc<SimShared>, headers: &mut HeaderMap) {
    let windows = lock(&shared.windows);
    let now = Instant::now();
    for w in windows.iter() {
        let remaining = w.quota.limit.saturating_sub(w.used);
        let reset = w
            .quota
            .period
            .saturating_sub(now.duration_since(w.started))
            .as_secs_f64()
            .ceil() as u64;
        let name = w.quota.name;
        for (k, v) in [
            ("Limit", u64::from(w.quota.limit)),
            ("Remaining", u64::from(remaining)),
            ("Reset", reset),
        ] {
            if let Ok(hn) = axum::http::HeaderName::try_from(format!(
                "x-ratelimit-{}-{}",
                k.to_lowercase(),
                name.to_lowercase()
            )) {
                headers.insert(hn, HeaderValue::from(v));
            }
        }
    }
}

/// A 200 response whose body sends `prefix` and then fails, so the connection is reset.
fn broken_body(prefix: Bytes) -> Response {
    let stream = futures::stream::iter(vec![
        Ok::<Bytes, std::io::Error>(prefix),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected connection reset",
        )),
    ]);
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// Reads a bearer token.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// A JSON response.
pub fn json_response(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

/// Reformats an E.164 phone the way a human-facing UI might (`+1 415-555-0101` style), for the
/// echo tests.
pub fn reformat_phone(e164: &str) -> String {
    let digits: Vec<char> = e164.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 8 {
        return e164.to_owned();
    }
    let (cc, rest) = digits.split_at(digits.len() - 10.min(digits.len() - 1));
    let rest: String = rest.iter().collect();
    let cc: String = cc.iter().collect();
    if rest.len() == 10 {
        format!("+{cc} ({}) {}-{}", &rest[..3], &rest[3..6], &rest[6..])
    } else {
        format!("+{cc} {rest}")
    }
}

/// A fleet of the four simulators, plus the config that points contact-sync at them.
pub struct Fleet {
    pub sims: Vec<Sim>,
}

impl Fleet {
    /// Starts one simulator per provider with `opts(kind)`.
    pub async fn start(opts: impl Fn(ProviderKind) -> SimOptions) -> std::io::Result<Fleet> {
        let mut sims = Vec::new();
        for kind in ProviderKind::ALL {
            sims.push(Sim::start(kind, opts(kind)).await?);
        }
        Ok(Fleet { sims })
    }

    /// The simulator of `kind`.
    ///
    /// # Panics
    /// If the fleet has no simulator of that kind (a fleet always has all four).
    pub fn sim(&self, kind: ProviderKind) -> &Sim {
        self.sims
            .iter()
            .find(|s| s.kind == kind)
            .expect("a fleet has every provider")
    }

    /// A validated config for these simulators, with state at `state_path`.
    pub fn config(&self, state_path: &std::path::Path) -> crate::config::Config {
        config_for(&self.sims, state_path)
    }
}

/// The provider settings that point contact-sync at a running simulator.
pub fn provider_config(sim: &Sim) -> crate::config::ProviderConfig {
    use crate::config::{Guard, ProviderConfig, ProviderSpecific, Secret, SecretSource};
    let opts = sim.shared.options();
    let specific = match sim.kind {
        ProviderKind::Protocol => ProviderSpecific::Protocol {
            legacy_put: false,
            page_size: 100,
        },
        ProviderKind::Callbell => ProviderSpecific::Callbell {
            known_tags: opts.callbell_tags.clone(),
            known_custom_fields: opts.callbell_custom_fields.clone(),
            create_source: crate::config::DEFAULT_CALLBELL_CREATE_SOURCE.to_owned(),
        },
        ProviderKind::Chatwoot => ProviderSpecific::Chatwoot {
            account_id: opts.chatwoot.account_id,
            inbox_id: opts.chatwoot.inbox_id,
            inbox_identifier: Some(SecretSource::Literal(Secret::new(
                opts.chatwoot.inbox_identifier.clone(),
            ))),
            hmac_token: opts
                .chatwoot
                .hmac_token
                .clone()
                .map(|t| SecretSource::Literal(Secret::new(t))),
            sort: "created_at".into(),
            update_api: crate::config::ChatwootUpdateApi::Application,
            known_labels: opts.chatwoot.labels.iter().cloned().collect(),
        },
        ProviderKind::Privy => ProviderSpecific::Privy {
            daily_limit: Some(10_000),
            page_size: 100,
            day_timezone: chrono_tz::UTC,
        },
    };
    // The simulator's own quota, when it has a short one, is what we are configured with.
    let rate = opts
        .quotas
        .iter()
        .filter(|q| q.period <= Duration::from_secs(60))
        .min_by_key(|q| q.period)
        .and_then(|q| {
            std::num::NonZeroU32::new(q.limit).map(|requests| crate::budget::Rate {
                requests,
                per: q.period,
            })
        })
        .unwrap_or_else(|| crate::budget::Rate {
            requests: std::num::NonZeroU32::new(1000).unwrap_or(std::num::NonZeroU32::MIN),
            per: Duration::from_secs(1),
        });
    let http = crate::provider::http::HttpSettings {
        timeout: Duration::from_secs(5),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(500),
        ..Default::default()
    };
    ProviderConfig {
        role: crate::config::Role::Both,
        create: None,
        max_creates: crate::config::DEFAULT_MAX_CREATES,
        kind: sim.kind,
        base_url: sim.base_url(),
        token: SecretSource::Literal(Secret::new(opts.token.clone())),
        rate,
        share: 1.0,
        http,
        max_concurrency: 4,
        guard: Guard {
            max_change_share: 1.0,
            max_clears: u64::MAX,
            min_records: 0,
        },
        min_scan_interval: None,
        specific,
    }
}

/// A validated config for `sims`, with state at `state_path` and default policy.
pub fn config_for(sims: &[Sim], state_path: &std::path::Path) -> crate::config::Config {
    use crate::config::{Config, DaemonSettings, Schedule};
    let mut providers: Vec<_> = sims.iter().map(provider_config).collect();
    providers.sort_by_key(|p| p.kind);
    Config {
        source: "(simulators)".into(),
        state_path: state_path.to_path_buf(),
        schedule: Schedule::new("*/1 * * * * *", chrono_tz::UTC)
            .expect("a constant cron expression parses"),
        normalizer: crate::model::Normalizer::default(),
        policy: crate::reconcile::Policy::default(),
        mapping: crate::provider::mapping::Mapping::default(),
        daemon: DaemonSettings {
            listen: None,
            shutdown_grace: Duration::from_secs(5),
            max_run_time: None,
        },
        providers,
    }
}

impl Sim {
    /// Seeds (or re-seeds, replacing) the person with sequence number `seq`: the same `seq`
    /// always gives the same provider id.
    pub fn seed_person_at(&self, seq: u64, p: &SeedPerson) -> String {
        let opts = self.shared.options();
        let v = match self.kind {
            ProviderKind::Protocol => protocol::from_seed(p, seq),
            ProviderKind::Callbell => callbell::from_seed(p, seq),
            ProviderKind::Chatwoot => chatwoot::from_seed(p, seq, &opts),
            ProviderKind::Privy => privy::from_seed(p, seq),
        };
        let mut store = self.shared.store();
        store.seeded = store.seeded.max(seq);
        let id = store.id_of(&v).unwrap_or_default();
        store.upsert(v);
        id
    }
}
