//! Privy simulator, written from Privy's update page and the facts in SPEC section 9.
//!
//! Endpoints (Bearer auth on all of them):
//!
//! - `GET /v1/contacts?page=N&per_page=M`: `page` ≥ 1, `per_page` 1..=100 (default 20, or
//!   `SimOptions::page_size`), anything else is a 422. Answers
//!   `{"data":[…],"pagination":{"page","per_page","total_count","total_pages"}}`; a page past
//!   the end has no data and the true pagination.
//! - `GET /v1/contacts/{id}` → `{"data":{…}}`.
//! - `PATCH /v1/contacts/{id}`: the six mutable fields only. `email` and `phone_number` only
//!   while the contact's value is null (E.164 phone, well-formed e-mail); `tags` (strings) and
//!   `custom_fields` (a flat object of scalars) replace the whole value; names are strings or
//!   null. Any problem rejects the whole request with a 422 naming each field, and changes
//!   nothing. Sets `updated_at`.
//!
//! - `POST /v1/contacts` (SPEC section 11; Privy's create page is not among the provider
//!   pages): the six mutable fields plus `email_consent`/`sms_consent`; an e-mail or a phone is
//!   required (422); formats as for `PATCH`. An e-mail (case-insensitively) or phone a live
//!   contact holds is a 409 Conflict naming that contact's id (in `error.existing_id`, unless
//!   `SimOptions::privy_conflict_id_in_body` is off). A deleted contact holding it is restored
//!   with the create's values. A create carrying `sms_consent: "subscribed"` for a phone sends
//!   the person a welcome SMS, counted in `SimShared::welcome_sms`. The old consent names
//!   (`email_permission`, `phone_permission`) are rejected.
//! - `GET /v1/contacts?email=…` / `?phone_number=…`: the list filtered to the contacts holding
//!   that e-mail (case-insensitively) or phone (SPEC section 11).
//! - `DELETE /v1/contacts/{id}` → 204; the contact leaves the listing but stays restorable.
//!
//! Errors use Privy's envelope `{"error":{"code","message","details":[{"field","message"}]}}`;
//! every response carries `X-RateLimit-{Limit,Remaining,Reset}-{Minute,Day}` (added by the
//! shared middleware from the quotas named `Minute` and `Day`), and a 429 carries
//! `Retry-After`. Contacts carry the consent fields under their current names
//! (`email_consent`, `sms_consent`, renamed from `email_permission`/`phone_permission` on
//! 2026-05-12); they are not writable.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

// Privy wants phones as `^\+[1-9]\d{1,14}$`, which is exactly strict E.164 as `is_e164`
// checks it (one implementation; the tests below pin the rule).
use super::{json_response, Flavor, SeedPerson, SimOptions, SimShared};
use crate::model::normalize::is_e164;

/// Privy's answers for the shared middleware.
pub struct PrivyFlavor;

impl Flavor for PrivyFlavor {
    fn authorize(&self, headers: &HeaderMap, _path: &str, opts: &SimOptions) -> bool {
        super::bearer_token(headers) == Some(opts.token.as_str())
    }

    fn unauthorized(&self) -> Response {
        error_response(StatusCode::UNAUTHORIZED, "Invalid API token", Vec::new())
    }

    fn rate_limited(&self, retry_after_secs: u64) -> Response {
        let mut r = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit exceeded",
            Vec::new(),
        );
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(retry_after_secs));
        r
    }

    fn error(&self, status: StatusCode, message: &str) -> Response {
        error_response(status, message, Vec::new())
    }

    fn quota_headers(&self) -> bool {
        true
    }
}

/// The error code Privy uses for a status.
fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "insufficient_scope",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        422 => "validation_failed",
        429 => "rate_limited",
        500..=599 => "internal_error",
        _ => "error",
    }
}

/// Privy's error envelope; `details` (field, problem) is included when there are any.
fn error_response(status: StatusCode, message: &str, details: Vec<(String, String)>) -> Response {
    let mut error = json!({"code": code_for(status), "message": message});
    if !details.is_empty() {
        error["details"] = details
            .into_iter()
            .map(|(field, message)| json!({"field": field, "message": message}))
            .collect();
    }
    json_response(status, json!({ "error": error }))
}

fn validation_failed(message: &str, details: Vec<(String, String)>) -> Response {
    error_response(StatusCode::UNPROCESSABLE_ENTITY, message, details)
}

fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "Contact not found", Vec::new())
}

/// The routes, below the base URL `http://<addr>`.
pub fn router() -> Router<Arc<SimShared>> {
    Router::new()
        .route("/v1/contacts", get(list).post(create))
        .route("/v1/contacts/{id}", get(show).patch(update).delete(remove))
        .fallback(|| async {
            error_response(StatusCode::NOT_FOUND, "Resource not found", Vec::new())
        })
        .method_not_allowed_fallback(|| async {
            error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                Vec::new(),
            )
        })
}

/// Page size when the request names none.
const DEFAULT_PER_PAGE: u64 = 20;
/// Largest page size served.
const MAX_PER_PAGE: u64 = 100;

async fn list(State(shared): State<Arc<SimShared>>, RawQuery(query): RawQuery) -> Response {
    let default_per_page = shared
        .options()
        .page_size
        .map_or(DEFAULT_PER_PAGE, |n| n as u64)
        .clamp(1, MAX_PER_PAGE);
    let mut page = 1u64;
    let mut per_page = default_per_page;
    let mut details = Vec::new();
    let mut filters: Vec<(&str, String)> = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "page" => match value.parse::<u64>() {
                Ok(n) if n >= 1 => page = n,
                _ => details.push(("page".into(), "must be an integer of at least 1".into())),
            },
            "per_page" => match value.parse::<u64>() {
                Ok(n) if (1..=MAX_PER_PAGE).contains(&n) => per_page = n,
                _ => details.push((
                    "per_page".into(),
                    format!("must be an integer between 1 and {MAX_PER_PAGE}"),
                )),
            },
            "email" => filters.push(("email", value.into_owned())),
            "phone_number" => filters.push(("phone_number", value.into_owned())),
            _ => {}
        }
    }
    if !details.is_empty() {
        return validation_failed("Invalid pagination parameters", details);
    }
    let store = shared.store();
    let matching: Vec<&Value> = store
        .iter()
        .filter(|c| filters.iter().all(|(key, value)| holds(c, key, value)))
        .collect();
    let total = matching.len() as u64;
    let start = usize::try_from((page - 1).saturating_mul(per_page)).unwrap_or(usize::MAX);
    let data: Vec<Value> = matching
        .into_iter()
        .skip(start)
        .take(per_page as usize)
        .cloned()
        .collect();
    json_response(
        StatusCode::OK,
        json!({
            "data": data,
            "pagination": {
                "page": page,
                "per_page": per_page,
                "total_count": total,
                "total_pages": total.div_ceil(per_page),
            }
        }),
    )
}

async fn show(State(shared): State<Arc<SimShared>>, Path(id): Path<String>) -> Response {
    match shared.store().get(&id) {
        Some(c) => json_response(StatusCode::OK, json!({ "data": c })),
        None => not_found(),
    }
}

async fn update(
    State(shared): State<Arc<SimShared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let reformat = shared.options().reformat_on_write;
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&body) else {
        return validation_failed(
            "The request body must be a JSON object",
            vec![("body".into(), "must be a JSON object".into())],
        );
    };
    let mut store = shared.store();
    let Some(current) = store.get_mut(&id) else {
        return not_found();
    };
    if fields.is_empty() {
        return validation_failed(
            "Include one or more mutable fields to update",
            vec![(
                "body".into(),
                "must include at least one of first_name, last_name, email, phone_number, tags, custom_fields".into(),
            )],
        );
    }
    let details = problems(current, &fields);
    if !details.is_empty() {
        return validation_failed("The contact could not be updated", details);
    }
    for (key, value) in fields {
        current[key.as_str()] = stored_form(&key, value, reformat);
    }
    current["updated_at"] = Value::String(Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true));
    json_response(StatusCode::OK, json!({ "data": current }))
}

/// What the simulator stores for a written `value` of `key`: as sent, or, with
/// `reformat_on_write`, the way a server that normalises may store it (the e-mail's domain
/// recased, the tags in another order), on update and create alike.
fn stored_form(key: &str, value: Value, reformat: bool) -> Value {
    match (key, value) {
        ("email", Value::String(e)) if reformat => Value::String(recase_domain(&e)),
        ("tags", Value::Array(mut tags)) if reformat => {
            tags.reverse();
            Value::Array(tags)
        }
        (_, v) => v,
    }
}

/// Whether a stored contact holds `value` in `key` (`email` compares case-insensitively, as
/// addresses are unique regardless of case; `phone_number` exactly, as Privy stores E.164).
fn holds(contact: &Value, key: &str, value: &str) -> bool {
    let Some(held) = contact.get(key).and_then(Value::as_str) else {
        return false;
    };
    if key == "email" {
        held.trim().eq_ignore_ascii_case(value.trim())
    } else {
        held == value
    }
}

/// Keys a create accepts besides the six mutable fields: the consent fields (current names).
const CONSENT_FIELDS: [&str; 2] = ["email_consent", "sms_consent"];

/// The consent names replaced on 2026-05-12 (SPEC section 9), and their successors.
const OLD_CONSENT_FIELDS: [(&str, &str); 2] = [
    ("email_permission", "email_consent"),
    ("phone_permission", "sms_consent"),
];

/// `POST /v1/contacts`: validates, answers 409 for a key a live contact holds, restores a
/// deleted contact holding it (200, with its old id), or creates a new one (201); both answer
/// `{"data": {…}}`. No status is documented for either, so the client must accept any 2xx.
async fn create(State(shared): State<Arc<SimShared>>, body: Bytes) -> Response {
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(&body) else {
        return validation_failed(
            "The request body must be a JSON object",
            vec![("body".into(), "must be a JSON object".into())],
        );
    };
    let mut details = Vec::new();
    let mut consent = Map::new();
    for (old, new) in OLD_CONSENT_FIELDS {
        if fields.remove(old).is_some() {
            details.push((old.to_owned(), format!("was renamed to {new}")));
        }
    }
    for key in CONSENT_FIELDS {
        if let Some(v) = fields.remove(key) {
            match v.as_str() {
                Some("subscribed" | "unsubscribed") => {
                    consent.insert(key.to_owned(), v);
                }
                _ => details.push((key.to_owned(), "must be subscribed or unsubscribed".into())),
            }
        }
    }
    let given = |k: &str| fields.get(k).is_some_and(|v| !v.is_null());
    if !given("email") && !given("phone_number") {
        details.push((
            "email".into(),
            "an email or a phone_number is required".into(),
        ));
    }
    // A new contact holds nothing yet, so the update rules apply as to an empty record.
    details.extend(problems(&json!({}), &fields));
    if !details.is_empty() {
        return validation_failed("The contact could not be created", details);
    }
    let keys: Vec<(&str, String)> = ["email", "phone_number"]
        .into_iter()
        .filter_map(|k| Some((k, fields.get(k)?.as_str()?.to_owned())))
        .collect();
    let conflict_id_in_body = shared.options().privy_conflict_id_in_body;
    let mut store = shared.store();
    let existing = store
        .iter()
        .find(|c| keys.iter().any(|(k, v)| holds(c, k, v)))
        .cloned();
    if let Some(existing) = existing {
        drop(store);
        let (field, _) = keys
            .iter()
            .find(|(k, v)| holds(&existing, k, v))
            .cloned()
            .unwrap_or(("email", String::new()));
        let mut r = json!({"error": {
            "code": "conflict",
            "message": format!("A contact with this {field} already exists"),
            "details": [{"field": field, "message": "has already been taken"}],
        }});
        if conflict_id_in_body {
            r["error"]["existing_id"] = existing["id"].clone();
        }
        return json_response(StatusCode::CONFLICT, r);
    }
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let restored = {
        let mut deleted = shared.deleted();
        let at = deleted
            .iter()
            .position(|c| keys.iter().any(|(k, v)| holds(c, k, v)));
        at.map(|i| deleted.remove(i))
    };
    let (mut contact, status) = match restored {
        Some(c) => (c, StatusCode::OK),
        None => {
            let mut seq = store.allocate_seq();
            while store.get(&format!("cus_{seq:016x}")).is_some() {
                seq = store.allocate_seq();
            }
            let mut c = from_seed(&SeedPerson::default(), seq);
            c["email_consent"] = Value::Null;
            c["sms_consent"] = Value::Null;
            c["created_at"] = json!(now);
            (c, StatusCode::CREATED)
        }
    };
    // Only a create that itself carries a subscribed SMS consent triggers the welcome SMS
    // (SPEC section 11); a restored contact's earlier consent does not.
    let asks_sms = consent
        .get("sms_consent")
        .is_some_and(|v| v == "subscribed");
    let reformat = shared.options().reformat_on_write;
    for (key, value) in fields.into_iter().chain(consent) {
        contact[key.as_str()] = stored_form(&key, value, reformat);
    }
    contact["updated_at"] = json!(now);
    let welcome = asks_sms && !contact["phone_number"].is_null();
    store.upsert(contact.clone());
    drop(store);
    if welcome {
        shared
            .welcome_sms
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    json_response(status, json!({ "data": contact }))
}

/// `DELETE /v1/contacts/{id}`: the contact leaves the listing and is kept restorable.
async fn remove(State(shared): State<Arc<SimShared>>, Path(id): Path<String>) -> Response {
    let removed = shared.store().remove(&id);
    match removed {
        Some(c) => {
            shared.deleted().push(c);
            axum::http::StatusCode::NO_CONTENT.into_response()
        }
        None => not_found(),
    }
}

/// Every problem with an update of `current`, as (field, message); empty when it is valid.
fn problems(current: &Value, fields: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut problem = |field: &str, message: &str| out.push((field.to_owned(), message.to_owned()));
    for (key, value) in fields {
        match key.as_str() {
            "first_name" | "last_name" => {
                if !(value.is_string() || value.is_null()) {
                    problem(key, "must be a string");
                }
            }
            "email" | "phone_number" => {
                if !current[key.as_str()].is_null() {
                    problem(key, "can only be set while empty");
                    continue;
                }
                let ok = match value {
                    Value::Null => true,
                    Value::String(s) if key == "email" => looks_like_email(s),
                    Value::String(s) => is_e164(s),
                    _ => false,
                };
                if !ok && key == "email" {
                    problem(key, "must be a valid email address");
                } else if !ok {
                    problem(key, "must be a phone number in E.164 format");
                }
            }
            "tags" => {
                let ok = value
                    .as_array()
                    .is_some_and(|tags| tags.iter().all(Value::is_string));
                if !ok {
                    problem(key, "must be an array of strings");
                }
            }
            "custom_fields" => {
                let ok = value
                    .as_object()
                    .is_some_and(|m| m.values().all(|v| !(v.is_object() || v.is_array())));
                if !ok {
                    problem(key, "must be a flat key-value object");
                }
            }
            _ => problem(key, "is not a mutable field"),
        }
    }
    out
}

/// `local@domain.tld` without whitespace.
fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let clean = |p: &str| !p.is_empty() && !p.chars().any(|c| c == '@' || c.is_whitespace());
    clean(local)
        && clean(domain)
        && domain
            .split_once('.')
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !b.ends_with('.'))
}

/// The e-mail with its domain upper-cased, the way some services store it.
fn recase_domain(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_uppercase()),
        None => email.to_owned(),
    }
}

/// A Privy contact for a seed person. The phone is stored as given, even when it is not
/// E.164: seeds may hold invalid data on purpose (imported records).
pub fn from_seed(p: &SeedPerson, seq: u64) -> Value {
    let words: Vec<&str> = p
        .name
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let (first, last) = match words.split_last() {
        None => (None, None),
        Some((only, [])) => (Some((*only).to_owned()), None),
        Some((last, rest)) => (Some(rest.join(" ")), Some((*last).to_owned())),
    };
    // 2025-01-15T10:30:00Z, one minute apart per record.
    let at = DateTime::from_timestamp(1_736_937_000 + (seq as i64).saturating_mul(60), 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    json!({
        "id": format!("cus_{seq:016x}"),
        "first_name": first,
        "last_name": last,
        "email": p.email,
        "email_consent": "subscribed",
        "phone_number": p.phone,
        "sms_consent": "subscribed",
        "tags": p.tags,
        "custom_fields": p.custom_fields,
        "created_at": at,
        "updated_at": at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert!(is_e164("+14155550101"));
        assert!(!is_e164("+0123"));
        assert!(!is_e164("14155550101"));
        assert!(!is_e164("+1 415 555 0101"));
        assert!(looks_like_email("a@b.io"));
        assert!(!looks_like_email("a@b"));
        assert!(!looks_like_email("a b@c.io"));
        assert_eq!(recase_domain("ada@example.com"), "ada@EXAMPLE.COM");
    }

    #[test]
    fn seeds_split_names_on_the_last_word() {
        let p = SeedPerson {
            name: Some("Ada King Lovelace".into()),
            phone: Some("555-0101".into()),
            ..SeedPerson::default()
        };
        let v = from_seed(&p, 255);
        assert_eq!(v["id"], "cus_00000000000000ff");
        assert_eq!(v["first_name"], "Ada King");
        assert_eq!(v["last_name"], "Lovelace");
        assert_eq!(v["phone_number"], "555-0101");
        let one = from_seed(
            &SeedPerson {
                name: Some("Cher".into()),
                ..SeedPerson::default()
            },
            1,
        );
        assert_eq!(one["first_name"], "Cher");
        assert!(one["last_name"].is_null());
    }
}
