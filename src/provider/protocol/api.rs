//! Protocol's wire format: the contact object, the list envelope, the update bodies and the
//! error envelope, plus the endpoint paths and query parameters.
//!
//! Sources: `protocol-contacts-overview.md` (contact model, `GET /v1/contacts` with `limit` and
//! `has_more`, the older `PUT`) and `protocol-update-contact-patch.md` (`PATCH`, `updated_at`,
//! the error envelope). **Only this file knows Protocol's JSON.**

use reqwest::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};

/// Path segments of the contacts collection (`/v1/contacts`); a contact is one more segment.
pub const CONTACTS: [&str; 2] = ["v1", "contacts"];

/// Query parameter: records per page (1..=100, default 10).
pub const LIMIT: &str = "limit";

/// Query parameter: list the records after the one with this id (cursor pagination).
pub const STARTING_AFTER: &str = "starting_after";

/// The largest `limit` the list endpoint accepts.
pub const MAX_LIMIT: u32 = 100;

/// A contact as Protocol returns it from list, retrieve, create and update.
///
/// Every field but `id` is optional: the `PATCH` response leaves out `conversation_id`,
/// `last_active_at` and `created_at`, and `display_name` is `null` when it "defaults to the
/// username". Unknown fields are ignored so an additive API change does not break listing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ContactDto {
    pub id: String,
    #[serde(default)]
    pub username: Option<String>,
    /// Any human format (`"1-800-759-3000"`, `"+1 (555) 987-6543"`).
    #[serde(default)]
    pub phone_number: Option<String>,
    #[serde(default)]
    pub avatar_url: Option<String>,
    /// `null` means the contact list shows the username.
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Unix seconds.
    #[serde(default, deserialize_with = "lenient_unix")]
    pub last_active_at: Option<i64>,
    /// Unix seconds.
    #[serde(default, deserialize_with = "lenient_unix")]
    pub created_at: Option<i64>,
    /// Unix seconds; present in `PATCH` responses.
    #[serde(default, deserialize_with = "lenient_unix")]
    pub updated_at: Option<i64>,
}

/// `GET /v1/contacts` → `{"has_more": bool, "data": [...]}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ListResponse {
    pub has_more: bool,
    pub data: Vec<ContactDto>,
}

/// The body of `PATCH /v1/contacts/{id}` (and, with `display_name` only, of the legacy `PUT`).
///
/// Only the fields being changed are present: absent means "leave as is". A `null` is never
/// sent, because clearing a field is not documented.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UpdateBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

impl UpdateBody {
    /// Whether the body changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == UpdateBody::default()
    }
}

/// The body of `POST /v1/contacts` (`protocol-contacts-overview.md`, "Create a contact"):
/// `username` and `phone_number` are required, `avatar_url` and `display_name` optional (left
/// out when absent: the display name then defaults to the username).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateBody {
    pub username: String,
    pub phone_number: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

/// `{"error": {"code": "...", "message": "..."}}`, on every 4xx/5xx.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// The inside of [`ErrorEnvelope`].
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// Longest provider error message kept (a misbehaving server could send megabytes).
const MAX_MESSAGE_CHARS: usize = 300;

/// Turns an error response into `"<code>: <message>"`; falls back to the HTTP reason phrase
/// when the body is not Protocol's envelope.
pub fn parse_error(status: StatusCode, body: &[u8]) -> String {
    let fallback = || {
        status
            .canonical_reason()
            .map_or_else(|| format!("HTTP {}", status.as_u16()), str::to_owned)
    };
    let Ok(envelope) = serde_json::from_slice::<ErrorEnvelope>(body) else {
        return fallback();
    };
    let code = envelope.error.code.filter(|c| !c.trim().is_empty());
    let message = envelope.error.message.filter(|m| !m.trim().is_empty());
    let text = match (code, message) {
        (Some(c), Some(m)) => format!("{}: {}", c.trim(), m.trim()),
        (Some(c), None) => c.trim().to_owned(),
        (None, Some(m)) => m.trim().to_owned(),
        (None, None) => return fallback(),
    };
    truncate(&text, MAX_MESSAGE_CHARS)
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

/// Reads a unix timestamp leniently: an integer, a float (truncated) or a numeric string; any
/// other value (including `null`) reads as absent, so one odd timestamp never fails a page.
fn lenient_unix<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e15)
                .map(|f| f as i64)
        }),
        serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_list_response_decodes() {
        let body = r#"{
            "has_more": false,
            "data": [{
                "id": "WAz8eIbvDR60rouK",
                "username": "FrankMcCallister",
                "phone_number": "1-800-759-3000",
                "avatar_url": "https://assets.protocol.chat/avatars/frank.jpg",
                "display_name": null,
                "conversation_id": "xgQQXg3hrtjh7AvZ",
                "last_active_at": 705103200,
                "created_at": 692233200
            }]
        }"#;
        let list: ListResponse = serde_json::from_str(body).expect("documented shape");
        assert!(!list.has_more);
        let c = &list.data[0];
        assert_eq!(c.id, "WAz8eIbvDR60rouK");
        assert_eq!(c.display_name, None);
        assert_eq!(c.created_at, Some(692_233_200));
        assert_eq!(c.updated_at, None);
    }

    #[test]
    fn patch_response_without_model_only_fields_decodes() {
        let body = r#"{"id":"WAz8eIbvDR60rouK","username":"johndoe","phone_number":"+1 (555) 987-6543",
            "avatar_url":"https://assets.protocol.chat/avatars/johndoe.jpg","display_name":"John Smith",
            "updated_at":692233200}"#;
        let c: ContactDto = serde_json::from_str(body).expect("documented shape");
        assert_eq!(c.updated_at, Some(692_233_200));
        assert_eq!(c.conversation_id, None);
    }

    #[test]
    fn odd_timestamps_read_as_absent_or_truncated() {
        let c: ContactDto = serde_json::from_str(
            r#"{"id":"a","created_at":"yesterday","last_active_at":1.9,"updated_at":"12"}"#,
        )
        .expect("lenient");
        assert_eq!(c.created_at, None);
        assert_eq!(c.last_active_at, Some(1));
        assert_eq!(c.updated_at, Some(12));
    }

    #[test]
    fn update_body_omits_unchanged_fields() {
        let body = UpdateBody {
            display_name: Some("John Smith".into()),
            ..UpdateBody::default()
        };
        assert_eq!(
            serde_json::to_value(&body).expect("serializes"),
            serde_json::json!({"display_name": "John Smith"})
        );
        assert!(UpdateBody::default().is_empty());
    }

    #[test]
    fn create_body_leaves_out_absent_optional_fields() {
        let body = CreateBody {
            username: "FrankMcCallister".into(),
            phone_number: "+18007593000".into(),
            display_name: None,
            avatar_url: Some("https://assets.protocol.chat/avatars/frank.jpg".into()),
        };
        assert_eq!(
            serde_json::to_value(&body).expect("serializes"),
            serde_json::json!({
                "username": "FrankMcCallister",
                "phone_number": "+18007593000",
                "avatar_url": "https://assets.protocol.chat/avatars/frank.jpg"
            })
        );
    }

    #[test]
    fn error_envelope_becomes_code_and_message() {
        let body = br#"{"error":{"code":"invalid_request","message":"Unknown attribute email"}}"#;
        assert_eq!(
            parse_error(StatusCode::BAD_REQUEST, body),
            "invalid_request: Unknown attribute email"
        );
        assert_eq!(
            parse_error(StatusCode::BAD_GATEWAY, b"<html>nginx</html>"),
            "Bad Gateway"
        );
        assert_eq!(
            parse_error(StatusCode::NOT_FOUND, br#"{"error":{"code":"not_found"}}"#),
            "not_found"
        );
        let long = format!(
            r#"{{"error":{{"code":"x","message":"{}"}}}}"#,
            "m".repeat(1000)
        );
        assert!(
            parse_error(StatusCode::BAD_REQUEST, long.as_bytes())
                .chars()
                .count()
                <= 301
        );
    }
}
