//! Callbell simulator, written from Callbell's API reference (`provider-docs/callbell-docs/`).
//!
//! Endpoints, under the `/v1` base path:
//! - `GET /v1/contacts?page=N` → `{"contacts":[…]}`, `opts.page_size` (default 20) per page,
//!   an empty list past the end, no total;
//! - `GET /v1/contacts/{uuid}` → `{"contact":[{…}]}`;
//! - `PATCH /v1/contacts/{uuid}` with `name`, `tags`, `custom_fields` (and the other documented
//!   optional parameters) → `{"contact":[{…}]}`, the one-element array of the documented
//!   example.
//! - `POST /v1/contacts` (`contacts_api/post_contacts.md`): `identifier`, `source` and `name`
//!   required, `tags` and `custom_fields` must exist in the account → `{"contact":[{…}]}`.
//! - `GET /v1/contacts/phone/{number}` (`contacts_api/get_contact_by_phone.md`) →
//!   `{"contact":{…}}`, or 404 when no contact has that number.
//!
//! Rules enforced like the real service: tags and custom-field keys must exist in the account
//! (`opts.callbell_tags`, `opts.callbell_custom_fields`, plus whatever the contact already
//! carries), else 422 and nothing changes; `tags` replaces the list; `custom_fields` sets the
//! given keys and leaves the others; the name cannot be blanked; unknown parameters (phone,
//! e-mail, avatar, …) are rejected with 422. Errors are `{"error": "…"}`; 429 has no
//! `Retry-After`. Contacts are stored in the wire format (camelCase).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::{json_response, Flavor, SeedPerson, SimOptions, SimShared};

/// Contacts per list page when `opts.page_size` is not set (Callbell states none; about 20).
pub const DEFAULT_PAGE_SIZE: usize = 20;

/// The optional `PATCH /contacts/{uuid}` parameters Callbell documents. Anything else is
/// rejected.
const PATCH_PARAMS: [&str; 8] = [
    "name",
    "tags",
    "custom_fields",
    "assigned_user",
    "unassign_user",
    "team_uuid",
    "bot_status",
    "note",
];

/// The `POST /contacts` parameters Callbell documents (`post_contacts.md`): three required, the
/// rest optional. Anything else is rejected.
const CREATE_PARAMS: [&str; 10] = [
    "identifier",
    "source",
    "name",
    "tags",
    "custom_fields",
    "assigned_user",
    "team_uuid",
    "channel_uuid",
    "bot_status",
    "note",
];

/// The channels a Callbell contact can come from (`docs/home.md` of callbellchat/
/// callbell-public-docs: "WhatsApp, Instagram, Facebook Messenger and Telegram").
const SOURCES: [&str; 4] = ["whatsapp", "instagram", "facebook", "telegram"];

/// Longest note Callbell accepts.
const MAX_NOTE_CHARS: usize = 1000;

/// Callbell's answers for the shared middleware.
pub struct CallbellFlavor;

impl Flavor for CallbellFlavor {
    fn authorize(&self, headers: &HeaderMap, _path: &str, opts: &SimOptions) -> bool {
        super::bearer_token(headers) == Some(opts.token.as_str())
    }

    fn unauthorized(&self) -> Response {
        error_response(StatusCode::UNAUTHORIZED, "Unauthorized")
    }

    /// Callbell answers 429 without `Retry-After`, whatever the window left.
    fn rate_limited(&self, _retry_after_secs: u64) -> Response {
        error_response(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
    }

    fn error(&self, status: StatusCode, message: &str) -> Response {
        error_response(status, message)
    }
}

fn error_response(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({ "error": message }))
}

/// The simulator's routes.
pub fn router() -> Router<Arc<SimShared>> {
    Router::new()
        .route("/v1/contacts", get(list_contacts).post(create_contact))
        .route("/v1/contacts/phone/{number}", get(contact_by_phone))
        .route(
            "/v1/contacts/{uuid}",
            get(get_contact).patch(update_contact),
        )
        .fallback(not_found)
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "Not Found")
}

/// `GET /v1/contacts?page=N`.
async fn list_contacts(
    State(shared): State<Arc<SimShared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let page = match params.get("page").map(|p| p.trim()) {
        None | Some("") => 1,
        Some(p) => match p.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("page must be a positive integer, got {p:?}"),
                )
            }
        },
    };
    let size = shared
        .options()
        .page_size
        .unwrap_or(DEFAULT_PAGE_SIZE)
        .max(1);
    let contacts: Vec<Value> = {
        let store = shared.store();
        store
            .iter()
            .skip((page - 1).saturating_mul(size))
            .take(size)
            .cloned()
            .collect()
    };
    json_response(StatusCode::OK, json!({ "contacts": contacts }))
}

/// `GET /v1/contacts/{uuid}`.
async fn get_contact(State(shared): State<Arc<SimShared>>, Path(uuid): Path<String>) -> Response {
    let found = shared.store().get(&uuid).cloned();
    match found {
        Some(c) => json_response(StatusCode::OK, json!({ "contact": [c] })),
        None => contact_not_found(),
    }
}

fn contact_not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "Contact not found")
}

/// `GET /v1/contacts/phone/{number}` (`get_contact_by_phone.md`): the contact whose WhatsApp
/// number is `number`, compared as digits (the page's example stores `+123 456 789`), answered
/// as `{"contact": {…}}` (an object, as that page shows).
async fn contact_by_phone(
    State(shared): State<Arc<SimShared>>,
    Path(number): Path<String>,
) -> Response {
    let wanted = digits(&number);
    if wanted.is_empty() {
        return contact_not_found();
    }
    let found = shared
        .store()
        .iter()
        .find(|c| {
            c.get("phoneNumber")
                .and_then(Value::as_str)
                .is_some_and(|p| digits(p) == wanted)
        })
        .cloned();
    match found {
        Some(c) => json_response(StatusCode::OK, json!({ "contact": c })),
        None => contact_not_found(),
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// `POST /v1/contacts` (`post_contacts.md`): validates everything, then creates the contact.
/// The answer is `{"contact": [{…}]}`, the documented example's one-element array; the page
/// names no status, 200 is used.
async fn create_contact(State(shared): State<Arc<SimShared>>, body: Bytes) -> Response {
    let Ok(Value::Object(params)) = serde_json::from_slice::<Value>(&body) else {
        return error_response(StatusCode::BAD_REQUEST, "the body must be a JSON object");
    };
    let opts = shared.options();
    let mut store = shared.store();
    let (identifier, source) =
        match validate_create(&params, &store, opts.callbell_refuses_duplicate_phone) {
            Ok(v) => v,
            Err(message) => return error_response(StatusCode::UNPROCESSABLE_ENTITY, &message),
        };
    // Optional parameters go through the same checks as an update (tags and custom fields must
    // exist, a note is at most 1000 characters, no users, teams or bots in this account).
    let optional: Map<String, Value> = params
        .iter()
        .filter(|(k, _)| !["identifier", "source", "channel_uuid"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let update = match validate(&optional, &Value::Null, &opts) {
        Ok(u) => u,
        Err(message) => return error_response(StatusCode::UNPROCESSABLE_ENTITY, &message),
    };
    let mut seq = store.allocate_seq();
    let mut contact = from_seed(&SeedPerson::default(), seq);
    while contact["uuid"]
        .as_str()
        .is_some_and(|u| store.get(u).is_some())
    {
        seq = store.allocate_seq();
        contact = from_seed(&SeedPerson::default(), seq);
    }
    contact["phoneNumber"] = json!(identifier);
    contact["source"] = json!(source);
    contact["tags"] = json!([]);
    contact["customFields"] = json!({});
    contact["createdAt"] = json!(Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string());
    update.apply_to(&mut contact, false);
    store.upsert(contact.clone());
    drop(store);
    json_response(StatusCode::OK, json!({ "contact": [contact] }))
}

/// Checks the required `POST /contacts` parameters; returns the identifier and source.
fn validate_create(
    params: &Map<String, Value>,
    store: &super::Store,
    refuse_duplicate_phone: bool,
) -> Result<(String, String), String> {
    if let Some(unknown) = params.keys().find(|k| !CREATE_PARAMS.contains(&k.as_str())) {
        return Err(format!("Unknown parameter '{unknown}'"));
    }
    let required = |key: &str| match params.get(key).and_then(Value::as_str).map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        _ => Err(format!("{key} is required")),
    };
    let identifier = required("identifier")?;
    let source = required("source")?;
    required("name")?;
    if !SOURCES.contains(&source.as_str()) {
        return Err(format!(
            "source '{source}' is not one of {}",
            SOURCES.join(", ")
        ));
    }
    if source == "whatsapp" {
        // A WhatsApp contact's identifier is its phone number (`post_contacts.md`), which
        // Callbell holds as international digits without `+` (SPEC section 9).
        let ok =
            (7..=15).contains(&identifier.len()) && identifier.bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return Err(format!(
                "identifier '{identifier}' is not a phone number in international digits"
            ));
        }
        // Not documented (see `SimOptions::callbell_refuses_duplicate_phone`): by default a
        // second contact for a number the account already has is created.
        let taken = refuse_duplicate_phone
            && store.iter().any(|c| {
                c.get("phoneNumber")
                    .and_then(Value::as_str)
                    .is_some_and(|p| digits(p) == identifier)
            });
        if taken {
            return Err(format!(
                "A contact with identifier '{identifier}' already exists"
            ));
        }
    }
    if let Some(v) = params.get("channel_uuid") {
        return Err(format!("Channel {v} does not exist in this account"));
    }
    Ok((identifier, source))
}

/// `PATCH /v1/contacts/{uuid}`: validates everything first, then applies it all, so a rejected
/// request changes nothing.
async fn update_contact(
    State(shared): State<Arc<SimShared>>,
    Path(uuid): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(Value::Object(params)) = serde_json::from_slice::<Value>(&body) else {
        return error_response(StatusCode::BAD_REQUEST, "the body must be a JSON object");
    };
    let opts = shared.options();
    let mut store = shared.store();
    let Some(contact) = store.get_mut(&uuid) else {
        return contact_not_found();
    };
    let update = match validate(&params, contact, &opts) {
        Ok(u) => u,
        Err(message) => return error_response(StatusCode::UNPROCESSABLE_ENTITY, &message),
    };
    update.apply_to(contact, opts.reformat_on_write);
    let stored = contact.clone();
    drop(store);
    json_response(StatusCode::OK, json!({ "contact": [stored] }))
}

/// A validated update, ready to apply.
#[derive(Default)]
struct Update {
    name: Option<String>,
    tags: Option<Vec<String>>,
    custom_fields: Option<Map<String, Value>>,
    note: Option<Option<String>>,
    unassign_user: bool,
}

impl Update {
    fn apply_to(self, contact: &mut Value, reformat: bool) {
        let Some(obj) = contact.as_object_mut() else {
            return;
        };
        if let Some(name) = self.name {
            obj.insert("name".into(), Value::String(name));
        }
        if let Some(mut tags) = self.tags {
            // A UI may store tags in another order; comparisons must not care.
            if reformat {
                tags.reverse();
            }
            obj.insert("tags".into(), json!(tags));
        }
        if let Some(fields) = self.custom_fields {
            let entry = obj
                .entry("customFields")
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Some(existing) = entry.as_object_mut() {
                existing.extend(fields);
            }
        }
        if let Some(note) = self.note {
            obj.insert("note".into(), json!(note));
        }
        if self.unassign_user {
            obj.insert("assignedUser".into(), Value::Null);
        }
    }
}

/// Checks a `PATCH` body against the documented parameters and the account's tags and custom
/// fields. The error text names the offending parameter, tag or field.
fn validate(
    params: &Map<String, Value>,
    contact: &Value,
    opts: &SimOptions,
) -> Result<Update, String> {
    if let Some(unknown) = params.keys().find(|k| !PATCH_PARAMS.contains(&k.as_str())) {
        return Err(format!("Unknown parameter '{unknown}'"));
    }
    let mut update = Update::default();
    if let Some(v) = params.get("name") {
        match v.as_str().map(str::trim) {
            Some(name) if !name.is_empty() => update.name = Some(name.to_owned()),
            _ => return Err("name must be a non-empty string".into()),
        }
    }
    if let Some(v) = params.get("tags") {
        let Some(items) = v.as_array() else {
            return Err("tags must be an array of strings".into());
        };
        let held = held_tags(contact);
        let mut tags: Vec<String> = Vec::with_capacity(items.len());
        for item in items {
            let Some(tag) = item.as_str() else {
                return Err("tags must be an array of strings".into());
            };
            if !opts.callbell_tags.contains(tag) && !held.contains(tag) {
                return Err(format!("Tag '{tag}' does not exist in this account"));
            }
            if !tags.iter().any(|t| t == tag) {
                tags.push(tag.to_owned());
            }
        }
        update.tags = Some(tags);
    }
    if let Some(v) = params.get("custom_fields") {
        let Some(fields) = v.as_object() else {
            return Err("custom_fields must be an object".into());
        };
        let held = contact.get("customFields").and_then(Value::as_object);
        for (key, value) in fields {
            let exists = opts.callbell_custom_fields.contains(key)
                || held.is_some_and(|h| h.contains_key(key));
            if !exists {
                return Err(format!(
                    "Custom field '{key}' does not exist in this account"
                ));
            }
            let valid = match value {
                Value::String(_) => true,
                // Checkbox fields take a list of their options.
                Value::Array(a) => a.iter().all(Value::is_string),
                _ => false,
            };
            if !valid {
                return Err(format!(
                    "Custom field '{key}' must be a string (or a list of strings for a checkbox field)"
                ));
            }
        }
        update.custom_fields = Some(fields.clone());
    }
    if let Some(v) = params.get("note") {
        match v.as_str() {
            Some(s) if s.chars().count() > MAX_NOTE_CHARS => {
                return Err(format!("note must be at most {MAX_NOTE_CHARS} characters"));
            }
            Some("") => update.note = Some(None),
            Some(s) => update.note = Some(Some(s.to_owned())),
            None => return Err("note must be a string".into()),
        }
    }
    if let Some(v) = params.get("unassign_user") {
        match v.as_bool() {
            Some(b) => update.unassign_user = b,
            None => return Err("unassign_user must be a boolean".into()),
        }
    }
    // The simulated account has no collaborators, teams or bots.
    if let Some(v) = params.get("assigned_user") {
        return Err(format!("User {v} does not exist in this account"));
    }
    if let Some(v) = params.get("team_uuid") {
        return Err(format!("Team {v} does not exist in this account"));
    }
    if params.contains_key("bot_status") {
        return Err("No bot is enabled in this account".into());
    }
    Ok(update)
}

/// The tags a contact carries (they exist in the account, whatever the configured list says).
fn held_tags(contact: &Value) -> BTreeSet<&str> {
    contact
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A Callbell contact for a seeded person, in the wire format. The uuid is 32 hex characters
/// derived from `seq`; the phone is stored as international digits without `+`.
pub fn from_seed(p: &SeedPerson, seq: u64) -> Value {
    let uuid = format!("{:032x}", seq.wrapping_mul(7919).wrapping_add(1));
    let phone = p.phone.as_ref().map(|raw| {
        let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
        if digits.is_empty() {
            raw.clone()
        } else {
            digits
        }
    });
    // One contact a minute from 2020-09-13, wrapping after about ten years.
    let minutes = i64::try_from(seq % 5_000_000).unwrap_or(0);
    let created =
        DateTime::<Utc>::from_timestamp(1_600_000_000 + minutes * 60, 0).unwrap_or_default();
    json!({
        "uuid": uuid,
        "name": p.name,
        "phoneNumber": phone,
        "avatarUrl": p.avatar_url,
        "createdAt": created.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "source": "whatsapp",
        "href": format!("https://dash.callbell.eu/contacts/{uuid}"),
        "conversationHref": format!("https://dash.callbell.eu/chat/{uuid}"),
        "tags": p.tags,
        "assignedUser": null,
        "customFields": p.custom_fields,
        "note": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_have_hex_uuids_and_digit_phones() {
        let p = SeedPerson {
            name: Some("Ada".into()),
            phone: Some("+1 415 555 0101".into()),
            tags: vec!["vip".into()],
            ..SeedPerson::default()
        };
        let v = from_seed(&p, 3);
        let uuid = v["uuid"].as_str().expect("uuid");
        assert_eq!(uuid.len(), 32);
        assert!(uuid.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(uuid, from_seed(&p, 4)["uuid"].as_str().expect("uuid"));
        assert_eq!(v["phoneNumber"], "14155550101");
        assert_eq!(v["source"], "whatsapp");
        assert_eq!(v["tags"], json!(["vip"]));
    }

    #[test]
    fn rejected_updates_name_the_problem() {
        let opts = SimOptions::for_provider(crate::model::ProviderKind::Callbell);
        let contact = json!({"uuid": "u", "tags": ["legacy"], "customFields": {"old": "1"}});
        let body = |v: Value| v.as_object().cloned().expect("object");
        let err = |v: Value| {
            validate(&body(v), &contact, &opts)
                .err()
                .unwrap_or_default()
        };
        assert!(err(json!({"tags": ["nope"]})).contains("nope"));
        assert!(err(json!({"custom_fields": {"nope": "1"}})).contains("nope"));
        assert!(err(json!({"phone_number": "1"})).contains("phone_number"));
        assert!(err(json!({"name": " "})).contains("name"));
        // Tags and keys the contact already carries exist in the account.
        assert!(validate(
            &body(json!({"tags": ["legacy", "vip"], "custom_fields": {"old": "2"}})),
            &contact,
            &opts
        )
        .is_ok());
    }
}
