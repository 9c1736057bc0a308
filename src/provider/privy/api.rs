//! Privy's wire format: endpoint paths, request and response bodies, error envelope and
//! rate-limit headers. Only this file knows Privy's JSON.
//!
//! - List: `GET /v1/contacts?page=N&per_page=M` (M ≤ 100) →
//!   `{"data":[…],"pagination":{"page","per_page","total_count","total_pages"}}`.
//! - Read one: `GET /v1/contacts/{id}` → `{"data":{…}}`.
//! - Update: `PATCH /v1/contacts/{id}` with any of the six mutable fields → `{"data":{…}}`.
//! - Errors: `{"error":{"code","message","details":[{"field","message"}]}}`.
//! - Quotas: `X-RateLimit-{Limit,Remaining,Reset}-{Minute,Day}` on every response (reset in
//!   seconds until the window starts over).

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::budget::QuotaReport;

/// Path segments of the contacts collection, below the base URL.
pub const CONTACTS: [&str; 2] = ["v1", "contacts"];

/// List filter: the contacts with this e-mail (SPEC section 11, `GET /v1/contacts?email=`).
pub const EMAIL_FILTER: &str = "email";

/// List filter: the contacts with this phone (SPEC section 11, `?phone_number=`).
pub const PHONE_FILTER: &str = "phone_number";

/// The largest page the list endpoint serves.
pub const MAX_PAGE_SIZE: u32 = 100;

/// One contact as Privy sends it.
///
/// Consent is not synced, so neither the current names (`email_consent`, `sms_consent`) nor the
/// names they replaced on 2026-05-12 (`email_permission`, `phone_permission`) are read: records
/// carrying either spelling, both or neither decode the same.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ContactDto {
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// E.164 when Privy validated it; older or imported records may hold anything.
    #[serde(default)]
    pub phone_number: Option<String>,
    /// Strings normally; anything else is kept as its JSON text.
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<Value>,
    /// A flat object of scalars normally; nested values are kept as their JSON text.
    #[serde(default, deserialize_with = "null_as_default")]
    pub custom_fields: Map<String, Value>,
    /// RFC 3339.
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// `{"data": {…}}`: the answer to a read or an update.
#[derive(Debug, Deserialize)]
pub struct ContactEnvelope {
    pub data: ContactDto,
}

/// The answer to a list request.
#[derive(Debug, Deserialize)]
pub struct ListResponse {
    pub data: Vec<ContactDto>,
    pub pagination: Pagination,
}

/// Offset pagination as Privy reports it (`page` and `per_page` echo the request and are not
/// needed).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Pagination {
    pub total_count: u64,
    pub total_pages: u64,
}

/// The body of `PATCH /v1/contacts/{id}`: only the fields present are sent.
///
/// `Some(None)` sends an explicit `null` (a name part that is absent); `None` leaves the
/// field out of the request.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UpdateBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<Option<String>>,
    /// Replaces every tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Replaces every custom field; must be flat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_fields: Option<Map<String, Value>>,
}

impl UpdateBody {
    /// Whether the body would change nothing.
    pub fn is_empty(&self) -> bool {
        self == &UpdateBody::default()
    }
}

/// The body of `POST /v1/contacts` (SPEC section 11; Privy's create page is not among the
/// provider pages, so the fields are those of the update page): an e-mail or a phone is
/// required, every field is left out when absent.
///
/// It has no consent field by construction: neither `email_consent`/`sms_consent` nor the
/// older `email_permission`/`phone_permission` can be sent, because a `subscribed` SMS consent
/// on create makes Privy send the person a welcome SMS.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CreateBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// E.164.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Flat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_fields: Option<Map<String, Value>>,
}

/// Privy's error envelope.
#[derive(Debug, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// The inside of the error envelope.
#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub details: Vec<ErrorDetail>,
}

/// One field-level problem in an error.
#[derive(Debug, Deserialize)]
pub struct ErrorDetail {
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// Longest error message kept from a response, so a huge body cannot flood logs and reports.
const MAX_ERROR_MESSAGE: usize = 500;

/// What [`parse_error`] appends to a 409's message when the body names the contact that holds
/// the e-mail or phone; [`conflict_id`] reads it back.
const CONFLICT_MARK: &str = " [existing contact ";

/// Longest contact id read from a 409 body.
const MAX_ID_CHARS: usize = 128;

/// The existing contact's id in a 409 body. Privy does not document where it sits (SPEC
/// section 11), so the usual places are tried: `error.existing_id`, `error.contact_id`,
/// `error.id`, the same keys in `error.details[]`, `data.id` and a top-level `existing_id` or
/// `id`. Whatever is found is only a hint: the client reads that contact and checks that it
/// holds the key before linking it.
fn conflict_id_in_body(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let keys = ["existing_id", "contact_id", "id"];
    let in_object = |o: &Value| keys.iter().find_map(|k| id_text(o.get(*k)?));
    let error = v.get("error");
    error
        .and_then(in_object)
        .or_else(|| {
            error
                .and_then(|e| e.get("details"))
                .and_then(Value::as_array)
                .and_then(|d| d.iter().find_map(in_object))
        })
        .or_else(|| v.get("data").and_then(|d| id_text(d.get("id")?)))
        .or_else(|| {
            ["existing_id", "id"]
                .iter()
                .find_map(|k| id_text(v.get(*k)?))
        })
}

/// An id as text, when it looks like one (a string or an integer, no spaces or brackets).
fn id_text(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        _ => return None,
    };
    let ok = !s.is_empty()
        && s.chars().count() <= MAX_ID_CHARS
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c));
    ok.then_some(s)
}

/// The existing contact's id that [`parse_error`] recorded in a 409's message, if the body
/// named one.
pub fn conflict_id(message: &str) -> Option<&str> {
    let start = message.rfind(CONFLICT_MARK)? + CONFLICT_MARK.len();
    message[start..].strip_suffix(']')
}

/// Reads Privy's error body into `code: message (field: problem; …)`; a 409 that names the
/// existing contact also carries ` [existing contact <id>]` (see [`conflict_id`]).
///
/// A body that is not Privy's envelope is not echoed (it could be anything, from an HTML page of
/// a proxy to a reflected request); the message then names the status only.
pub fn parse_error(status: StatusCode, body: &[u8]) -> String {
    let mut out = describe_error(status, body);
    if status == StatusCode::CONFLICT {
        if let Some(id) = conflict_id_in_body(body) {
            out.push_str(CONFLICT_MARK);
            out.push_str(&id);
            out.push(']');
        }
    }
    out
}

fn describe_error(status: StatusCode, body: &[u8]) -> String {
    let Ok(ErrorEnvelope { error }) = serde_json::from_slice::<ErrorEnvelope>(body) else {
        return format!(
            "{} (the {}-byte body is not Privy's error envelope)",
            status.canonical_reason().unwrap_or("unexpected status"),
            body.len()
        );
    };
    let mut out = match (error.code, error.message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        (None, Some(message)) => message,
        (None, None) => status
            .canonical_reason()
            .unwrap_or("unexpected status")
            .to_owned(),
    };
    let details: Vec<String> = error
        .details
        .iter()
        .map(|d| match (&d.field, &d.message) {
            (Some(f), Some(m)) => format!("{f}: {m}"),
            (Some(f), None) => f.clone(),
            (None, Some(m)) => m.clone(),
            (None, None) => String::new(),
        })
        .filter(|s| !s.is_empty())
        .collect();
    if !details.is_empty() {
        out.push_str(&format!(" ({})", details.join("; ")));
    }
    if out.chars().count() > MAX_ERROR_MESSAGE {
        out = out.chars().take(MAX_ERROR_MESSAGE).collect::<String>() + "…";
    }
    out
}

/// Reads Privy's `X-RateLimit-*-{Minute,Day}` headers (present on every response, 429s
/// included). Missing or unreadable headers are left out of the report.
pub fn quota_report(headers: &HeaderMap) -> QuotaReport {
    QuotaReport {
        window_limit: count(headers, "x-ratelimit-limit-minute"),
        window_remaining: count(headers, "x-ratelimit-remaining-minute"),
        window_reset: seconds(headers, "x-ratelimit-reset-minute"),
        day_remaining: count(headers, "x-ratelimit-remaining-day"),
        day_reset: seconds(headers, "x-ratelimit-reset-day"),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn count(headers: &HeaderMap, name: &str) -> Option<u32> {
    let v = header(headers, name)?;
    v.parse::<u32>().ok().or_else(|| {
        // A provider may send a count as `12.0`; anything else is ignored.
        let f = v.parse::<f64>().ok()?;
        (f.is_finite() && f >= 0.0).then(|| f.min(f64::from(u32::MAX)) as u32)
    })
}

/// Longest reset accepted from a header: a day and a bit. A larger figure is a misreading.
const MAX_RESET: Duration = Duration::from_secs(90_000);

fn seconds(headers: &HeaderMap, name: &str) -> Option<Duration> {
    let secs = header(headers, name)?.parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_RESET))
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn string_or_number<'de, D>(d: D) -> Result<String, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(serde_json::Number),
    }
    Ok(match Id::deserialize(d)? {
        Id::Text(s) => s,
        Id::Number(n) => n.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use serde_json::json;

    #[test]
    fn quota_headers_fill_the_report() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("X-RateLimit-Limit-Minute", "60"),
            ("X-RateLimit-Remaining-Minute", "0"),
            ("X-RateLimit-Reset-Minute", "17"),
            ("X-RateLimit-Limit-Day", "10000"),
            ("X-RateLimit-Remaining-Day", "9876"),
            ("X-RateLimit-Reset-Day", "3600"),
        ] {
            h.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                HeaderValue::from_static(v),
            );
        }
        assert_eq!(
            quota_report(&h),
            QuotaReport {
                window_limit: Some(60),
                window_remaining: Some(0),
                window_reset: Some(Duration::from_secs(17)),
                day_remaining: Some(9876),
                day_reset: Some(Duration::from_secs(3600)),
            }
        );
    }

    #[test]
    fn missing_or_garbled_quota_headers_are_left_out() {
        assert_eq!(quota_report(&HeaderMap::new()), QuotaReport::default());
        let mut h = HeaderMap::new();
        h.insert(
            "x-ratelimit-remaining-minute",
            HeaderValue::from_static("-1"),
        );
        h.insert("x-ratelimit-reset-minute", HeaderValue::from_static("soon"));
        h.insert("x-ratelimit-limit-minute", HeaderValue::from_static("60.0"));
        h.insert("x-ratelimit-reset-day", HeaderValue::from_static("1e12"));
        let r = quota_report(&h);
        assert_eq!(r.window_remaining, None);
        assert_eq!(r.window_reset, None);
        assert_eq!(r.window_limit, Some(60));
        assert_eq!(r.day_reset, Some(MAX_RESET));
    }

    #[test]
    fn error_envelope_reads_code_message_and_details() {
        let body = json!({"error": {"code": "validation_failed", "message": "Invalid contact", "details": [
            {"field": "email", "message": "can only be set while empty"},
            {"field": "tags", "message": "must be an array of strings"}
        ]}});
        assert_eq!(
            parse_error(StatusCode::UNPROCESSABLE_ENTITY, body.to_string().as_bytes()),
            "validation_failed: Invalid contact (email: can only be set while empty; tags: must be an array of strings)"
        );
        assert_eq!(
            parse_error(
                StatusCode::UNAUTHORIZED,
                br#"{"error":{"code":"unauthorized","message":"Invalid API token"}}"#
            ),
            "unauthorized: Invalid API token"
        );
        let odd = parse_error(
            StatusCode::BAD_GATEWAY,
            b"<html>Authorization: Bearer x</html>",
        );
        assert!(odd.starts_with("Bad Gateway"), "{odd}");
        assert!(!odd.contains("Bearer"), "{odd}");
    }

    #[test]
    fn conflict_ids_are_read_from_the_usual_places_and_only_on_409() {
        for body in [
            json!({"error": {"code": "conflict", "message": "taken", "existing_id": "cus_9"}}),
            json!({"error": {"code": "conflict", "message": "taken",
                "details": [{"field": "email", "message": "taken", "contact_id": "cus_9"}]}}),
            json!({"error": {"code": "conflict"}, "data": {"id": "cus_9"}}),
        ] {
            let m = parse_error(StatusCode::CONFLICT, body.to_string().as_bytes());
            assert_eq!(conflict_id(&m), Some("cus_9"), "{m}");
        }
        let none = parse_error(
            StatusCode::CONFLICT,
            br#"{"error":{"code":"conflict","message":"Email has already been taken"}}"#,
        );
        assert_eq!(conflict_id(&none), None, "{none}");
        let odd = parse_error(
            StatusCode::CONFLICT,
            br#"{"error":{"code":"conflict","existing_id":"a b]c"}}"#,
        );
        assert_eq!(conflict_id(&odd), None, "{odd}");
        let other = parse_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            br#"{"error":{"code":"validation_failed","existing_id":"cus_9"}}"#,
        );
        assert_eq!(conflict_id(&other), None, "{other}");
    }

    #[test]
    fn create_body_has_no_consent_fields() {
        let body = CreateBody {
            first_name: Some("Ada".into()),
            phone_number: Some("+14155550101".into()),
            ..CreateBody::default()
        };
        let v = serde_json::to_value(&body).expect("serializes");
        assert_eq!(
            v,
            json!({"first_name": "Ada", "phone_number": "+14155550101"})
        );
    }

    #[test]
    fn contacts_decode_with_old_new_or_no_consent_names() {
        for extra in [
            json!({"email_consent": "subscribed", "sms_consent": "unsubscribed"}),
            json!({"email_permission": "subscribed", "phone_permission": "subscribed"}),
            json!({"email_permission": "subscribed", "email_consent": "subscribed"}),
            json!({}),
        ] {
            let mut v =
                json!({"id": "cus_1", "first_name": "Ada", "tags": null, "custom_fields": null});
            if let (Some(obj), Some(more)) = (v.as_object_mut(), extra.as_object()) {
                obj.extend(more.clone());
            }
            let dto: ContactDto = serde_json::from_value(v).expect("decodes");
            assert_eq!(dto.id, "cus_1");
            assert!(dto.tags.is_empty() && dto.custom_fields.is_empty());
        }
        let numeric: ContactDto = serde_json::from_value(json!({"id": 42})).expect("decodes");
        assert_eq!(numeric.id, "42");
    }

    #[test]
    fn update_body_sends_only_present_fields_and_explicit_nulls() {
        let body = UpdateBody {
            first_name: Some(Some("Cher".into())),
            last_name: Some(None),
            tags: Some(vec!["vip".into()]),
            ..UpdateBody::default()
        };
        assert_eq!(
            serde_json::to_value(&body).expect("serializes"),
            json!({"first_name": "Cher", "last_name": null, "tags": ["vip"]})
        );
        assert!(UpdateBody::default().is_empty());
    }
}
