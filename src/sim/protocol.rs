//! Protocol simulator, written from `protocol-contacts-overview.md` and
//! `protocol-update-contact-patch.md`.
//!
//! Endpoints: `GET /v1/contacts` (`limit` 1..=100, default 10; cursor `starting_after=<id>`;
//! `{"has_more", "data"}`), `POST /v1/contacts` (username and phone_number required),
//! `GET`/`PATCH`/`PUT`/`DELETE /v1/contacts/{id}`. `PATCH` accepts username, phone_number,
//! avatar_url and display_name as strings; the older `PUT` accepts display_name only. Anything
//! else (another key, a `null`, a number) is a 400. Every error is Protocol's envelope
//! `{"error":{"code","message"}}`; 429 carries `Retry-After`. Contacts are stored in the wire
//! format, in insertion order, which is also the list order.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use super::{json_response, Flavor, SeedPerson, SimOptions, SimShared};

/// Protocol's answers to authentication, rate limits and injected errors.
pub struct ProtocolFlavor;

impl Flavor for ProtocolFlavor {
    fn authorize(&self, headers: &HeaderMap, _path: &str, opts: &SimOptions) -> bool {
        super::bearer_token(headers) == Some(opts.token.as_str())
    }

    fn unauthorized(&self) -> Response {
        envelope(StatusCode::UNAUTHORIZED, "unauthorized", "Invalid API key")
    }

    fn rate_limited(&self, retry_after_secs: u64) -> Response {
        let mut r = envelope(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many requests; retry later",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        r
    }

    fn error(&self, status: StatusCode, message: &str) -> Response {
        envelope(status, code_for(status), message)
    }
}

/// The documented list default and maximum.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;

/// Keys `PATCH` may write.
const PATCH_KEYS: [&str; 4] = ["username", "phone_number", "avatar_url", "display_name"];
/// Keys the older `PUT` may write.
const PUT_KEYS: [&str; 1] = ["display_name"];
/// Keys `POST` accepts, and those it requires.
const CREATE_KEYS: [&str; 4] = PATCH_KEYS;
const CREATE_REQUIRED: [&str; 2] = ["username", "phone_number"];

/// Protocol's error envelope.
fn envelope(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, json!({"error": {"code": code, "message": message}}))
}

fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "invalid_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        429 => "rate_limited",
        503 => "service_unavailable",
        _ if status.is_server_error() => "internal_error",
        _ => "error",
    }
}

fn invalid(message: impl AsRef<str>) -> Response {
    envelope(StatusCode::BAD_REQUEST, "invalid_request", message.as_ref())
}

fn not_found(id: &str) -> Response {
    envelope(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("No contact with id {id:?}"),
    )
}

/// The simulator's routes.
pub fn router() -> Router<Arc<SimShared>> {
    Router::new()
        .route("/v1/contacts", get(list).post(create))
        .route(
            "/v1/contacts/{id}",
            get(retrieve)
                .patch(update)
                .put(legacy_update)
                .delete(remove),
        )
        .fallback(|| async { envelope(StatusCode::NOT_FOUND, "not_found", "No such endpoint") })
        .method_not_allowed_fallback(|| async {
            envelope(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed on this endpoint",
            )
        })
}

/// `GET /v1/contacts?limit=&starting_after=`.
async fn list(State(shared): State<Arc<SimShared>>, RawQuery(query): RawQuery) -> Response {
    let mut limit = DEFAULT_LIMIT;
    let mut after: Option<String> = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                _ => {
                    return invalid(format!(
                        "limit must be an integer between 1 and {MAX_LIMIT} (got {v:?})"
                    ))
                }
            },
            "starting_after" => after = Some(v.into_owned()),
            // Other filters (the docs' `active=true`) narrow nothing here.
            _ => {}
        }
    }
    // A test may make the server return shorter pages than asked for.
    if let Some(cap) = shared.options().page_size {
        limit = limit.min(cap.max(1));
    }
    let store = shared.store();
    let mut records = store.iter();
    if let Some(id) = &after {
        if !records.any(|c| has_id(c, id)) {
            return invalid(format!("starting_after: no contact with id {id:?}"));
        }
    }
    let data: Vec<Value> = records.by_ref().take(limit).cloned().collect();
    let has_more = records.next().is_some();
    drop(records);
    drop(store);
    json_response(StatusCode::OK, json!({"has_more": has_more, "data": data}))
}

/// Whether a stored contact has this id (without allocating, unlike `Store::id_of`).
fn has_id(contact: &Value, id: &str) -> bool {
    match contact.get("id") {
        Some(Value::String(s)) => s == id,
        Some(Value::Number(n)) => n.to_string() == id,
        _ => false,
    }
}

/// `GET /v1/contacts/{id}`.
async fn retrieve(State(shared): State<Arc<SimShared>>, Path(id): Path<String>) -> Response {
    match shared.store().get(&id) {
        Some(c) => json_response(StatusCode::OK, c.clone()),
        None => not_found(&id),
    }
}

/// `PATCH /v1/contacts/{id}`: any of the four documented attributes, as strings.
async fn update(
    State(shared): State<Arc<SimShared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    write(&shared, &id, &headers, &body, &PATCH_KEYS)
}

/// `PUT /v1/contacts/{id}` (older page): display_name only.
async fn legacy_update(
    State(shared): State<Arc<SimShared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    write(&shared, &id, &headers, &body, &PUT_KEYS)
}

fn write(
    shared: &SimShared,
    id: &str,
    headers: &HeaderMap,
    body: &Bytes,
    allowed: &[&str],
) -> Response {
    let fields = match parse_fields(headers, body, allowed) {
        Ok(f) => f,
        Err(message) => return invalid(message),
    };
    for key in CREATE_REQUIRED {
        if field(&fields, key).is_some_and(|v| v.trim().is_empty()) {
            return invalid(format!("{key} cannot be empty"));
        }
    }
    let reformat = shared.options().reformat_on_write;
    let mut store = shared.store();
    let Some(contact) = store.get_mut(id) else {
        return not_found(id);
    };
    for (key, value) in fields {
        let value = if key == "phone_number" && reformat {
            reformat_phone(&value)
        } else {
            value
        };
        contact[key.as_str()] = Value::String(value);
    }
    contact["updated_at"] = json!(now());
    json_response(StatusCode::OK, contact.clone())
}

/// `POST /v1/contacts` (`protocol-contacts-overview.md`, "Create a contact"): "you must provide
/// their Protocol username and phone number"; avatar_url and display_name are optional. The
/// page names no status for the answer; 201 is used, with the contact object as the example.
async fn create(State(shared): State<Arc<SimShared>>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = match parse_fields(&headers, &body, &CREATE_KEYS) {
        Ok(f) => f,
        Err(message) => return invalid(message),
    };
    for key in CREATE_REQUIRED {
        if field(&fields, key).is_none_or(|v| v.trim().is_empty()) {
            return invalid(format!("{key} is required"));
        }
    }
    let reformat = shared.options().reformat_on_write;
    let mut store = shared.store();
    let mut seq = store.allocate_seq();
    while store.get(&contact_id(seq)).is_some() {
        seq = store.allocate_seq();
    }
    let now = now();
    let mut contact = json!({
        "id": contact_id(seq),
        "username": null,
        "phone_number": null,
        "avatar_url": null,
        // `protocol-contacts-overview.md` says a display name "by default ... is just the
        // username", yet every contact object it shows (list, get, update) carries
        // `"display_name": null`: the field holds what was set, and the username stands in for
        // it only in Protocol's own contact list. The objects win (the README's rule).
        "display_name": null,
        "conversation_id": conversation_id(seq),
        "last_active_at": null,
        "created_at": now,
    });
    for (key, value) in fields {
        let value = if key == "phone_number" && reformat {
            reformat_phone(&value)
        } else {
            value
        };
        contact[key.as_str()] = Value::String(value);
    }
    store.upsert(contact.clone());
    drop(store);
    json_response(StatusCode::CREATED, contact)
}

/// `DELETE /v1/contacts/{id}`.
async fn remove(State(shared): State<Arc<SimShared>>, Path(id): Path<String>) -> Response {
    match shared.store().remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(&id),
    }
}

/// Reads a JSON object body (or, as the docs' curl examples send, a form body) whose keys are
/// all in `allowed` and whose values are all strings.
fn parse_fields(
    headers: &HeaderMap,
    body: &[u8],
    allowed: &[&str],
) -> Result<Vec<(String, String)>, String> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let object: Map<String, Value> = if is_form {
        url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err("The request body must be a JSON object".into()),
            Err(_) => return Err("The request body is not valid JSON".into()),
        }
    };
    let mut fields = Vec::with_capacity(object.len());
    for (key, value) in object {
        if !allowed.contains(&key.as_str()) {
            return Err(format!(
                "Unknown or read-only attribute {key:?}; this endpoint accepts {}",
                allowed.join(", ")
            ));
        }
        match value {
            Value::String(s) => fields.push((key, s)),
            _ => return Err(format!("{key} must be a string")),
        }
    }
    Ok(fields)
}

/// The value given for `key`, if any.
fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Reformats a phone the way a UI might, when it is written in E.164 (other formats are kept:
/// reformatting a national number would change the number).
fn reformat_phone(value: &str) -> String {
    if value.starts_with('+') {
        super::reformat_phone(value)
    } else {
        value.to_owned()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A 16-character alphanumeric id, like Protocol's (`WAz8eIbvDR60rouK`), derived from `seq`.
fn contact_id(seq: u64) -> String {
    format!("c{seq:015}")
}

fn conversation_id(seq: u64) -> String {
    format!("v{seq:015}")
}

/// A contact in Protocol's wire format for a seeded person. Protocol has no e-mail, tags,
/// custom fields or identifier; those are left out.
pub fn from_seed(p: &SeedPerson, seq: u64) -> Value {
    let username = p
        .username
        .clone()
        .filter(|u| !u.trim().is_empty())
        .or_else(|| {
            let from_name: String = p
                .name
                .as_deref()
                .unwrap_or_default()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect();
            (!from_name.is_empty()).then(|| format!("{from_name}{seq}"))
        })
        .unwrap_or_else(|| format!("user{seq}"));
    let created_at = 692_233_200 + seq as i64 * 60;
    json!({
        "id": contact_id(seq),
        "username": username,
        "phone_number": p.phone,
        "avatar_url": p.avatar_url,
        "display_name": p.name,
        "conversation_id": conversation_id(seq),
        "last_active_at": created_at + 86_400,
        "created_at": created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Store;

    #[test]
    fn seeded_ids_are_sixteen_alphanumerics() {
        let v = from_seed(
            &SeedPerson {
                name: Some("Ada Lovelace".into()),
                phone: Some("1-800-759-3000".into()),
                ..SeedPerson::default()
            },
            7,
        );
        let id = v["id"].as_str().expect("string id");
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(v["username"], "AdaLovelace7");
        assert_eq!(v["display_name"], "Ada Lovelace");
        assert_eq!(v["phone_number"], "1-800-759-3000");
        assert_eq!(from_seed(&SeedPerson::default(), 3)["username"], "user3");
        assert_eq!(
            from_seed(&SeedPerson::default(), 3)["display_name"],
            Value::Null
        );
    }

    #[test]
    fn only_e164_phones_are_reformatted() {
        assert_eq!(reformat_phone("+14155550101"), "+1 (415) 555-0101");
        assert_eq!(reformat_phone("(415) 555-0101"), "(415) 555-0101");
    }

    #[test]
    fn store_lookup_by_id_field() {
        let mut s = Store::new("id");
        s.upsert(from_seed(&SeedPerson::default(), 1));
        assert!(s.get("c000000000000001").is_some());
    }
}
