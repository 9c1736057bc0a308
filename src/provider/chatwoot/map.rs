//! Pure conversions: Chatwoot DTOs to the common model, a [`Patch`] to the public API's update
//! body, the `identifier_hash`, and Chatwoot's error bodies to messages.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::Value as Json;
use sha2::Sha256;

use super::api::{
    AppUpdateContact, ContactRecord, CreateContact, ErrorBody, Timestamp, UpdateContact,
};
use crate::config::ChatwootUpdateApi;
use crate::model::{
    format_compact, Contact, Field, FieldMap, FieldValue, Name, NewContact, Normalizer, Patch,
    ProviderKind,
};

/// Longest provider error message kept (the rest is cut), so a verbose body cannot flood logs.
const MAX_MESSAGE_CHARS: usize = 300;

/// Maps one contact to the common model.
///
/// `update_ref` is the `source_id` of the contact's `contact_inbox` in `inbox_id`, the only
/// handle Chatwoot's public API accepts. A contact with no session in that inbox cannot be
/// updated at all: `update_ref` is `None` and `write_blocked` says why.
pub fn to_contact(rec: &ContactRecord, inbox_id: u64, normalizer: &Normalizer) -> Contact {
    let mut c = Contact::new(ProviderKind::Chatwoot, rec.id.to_string());
    c.update_ref = source_id_for(rec, inbox_id).map(Into::into);
    if c.update_ref.is_none() {
        c.write_blocked = Some(format_compact!(
            "no contact_inbox for inbox {inbox_id}: Chatwoot's public API cannot address this contact"
        ));
    }
    c.name = rec
        .name
        .as_deref()
        .map(Name::from_display)
        .filter(|n| !n.display().is_empty());
    if let Some(raw) = rec.email.as_deref() {
        let (value, warning) = normalizer.email(raw);
        c.email = value;
        c.warnings.extend(warning);
    }
    if let Some(raw) = rec.phone_number.as_deref() {
        let (value, warning) = normalizer.phone(raw);
        c.phone = value;
        c.warnings.extend(warning);
    }
    c.external_id = rec.identifier.as_deref().and_then(|s| normalizer.text(s));
    c.blocked = rec.blocked.unwrap_or(false);
    if let Some(attrs) = &rec.custom_attributes {
        c.custom_fields = attrs
            .iter()
            .filter_map(|(k, v)| attribute_text(v).map(|text| (k.clone(), text)))
            .collect();
    }
    // `thumbnail` is deliberately not mapped: avatar URLs are unsupported (see the rules).
    if let Some(ts) = &rec.updated_at {
        match timestamp(ts) {
            Some(t) => c.updated_at = Some(t),
            None => c
                .warnings
                .push(format!("updated_at {ts:?} is not a timestamp; ignored")),
        }
    }
    c
}

/// Maps one contact for the configured update API: in application mode every contact is
/// addressed by its id (`update_ref` is the id, nothing is write-blocked); in public mode by
/// its `source_id` in `inbox_id`, as [`to_contact`] does.
pub fn to_contact_for(
    rec: &ContactRecord,
    inbox_id: u64,
    mode: ChatwootUpdateApi,
    normalizer: &Normalizer,
) -> Contact {
    let mut c = to_contact(rec, inbox_id, normalizer);
    if mode == ChatwootUpdateApi::Application {
        c.update_ref = Some(format_compact!("{}", rec.id));
        c.write_blocked = None;
    }
    c
}

/// The `source_id` of the contact's session in `inbox_id` (the first, should a merge have left
/// it two).
pub fn source_id_for(rec: &ContactRecord, inbox_id: u64) -> Option<String> {
    rec.contact_inboxes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|ci| ci.inbox.id == inbox_id && !ci.source_id.is_empty())
        .map(|ci| ci.source_id.clone())
}

/// A custom attribute as text: strings as they are, other JSON values as their JSON text
/// (`3`, `true`, `["a","b"]`). `null` holds no value and is left out, so it is never written
/// back as the text "null".
pub fn attribute_text(v: &Json) -> Option<String> {
    match v {
        Json::Null => None,
        Json::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A Chatwoot timestamp (Unix seconds or ISO 8601 text) as UTC.
pub fn timestamp(ts: &Timestamp) -> Option<DateTime<Utc>> {
    match ts {
        Timestamp::Unix(secs) => DateTime::from_timestamp(*secs, 0),
        Timestamp::Text(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
    }
}

/// Builds the public API's update body for `patch`, without the HMAC fields.
///
/// Only fields the patch changes are sent, and of custom attributes only the keys whose value
/// changes (Chatwoot merges them into what it holds).
///
/// # Errors
/// A change the public API cannot carry out is refused before anything is sent, because
/// Chatwoot would answer 200 and silently ignore it: clearing a value or a custom attribute
/// (it drops blank values), or writing a field it ignores or does not have. The field rules
/// block all of these, so an error here means a rule is missing.
pub fn update_body(patch: &Patch) -> Result<UpdateContact, String> {
    let mut body = UpdateContact::default();
    for change in &patch.changes {
        match (change.field, &change.new) {
            (Field::Name | Field::Email | Field::Phone, FieldValue::Scalar(new)) => {
                let Some(value) = new.as_ref().filter(|v| !v.raw().trim().is_empty()) else {
                    return Err(format!(
                        "Chatwoot's public API cannot clear {} (it ignores blank values)",
                        change.field
                    ));
                };
                let slot = match change.field {
                    Field::Name => &mut body.name,
                    Field::Email => &mut body.email,
                    _ => &mut body.phone_number,
                };
                *slot = Some(value.raw().to_owned());
            }
            (Field::CustomFields, FieldValue::Map(new)) => {
                let empty = FieldMap::new();
                let old = match &change.old {
                    FieldValue::Map(old) => old,
                    _ => &empty,
                };
                if let Some(key) = old.keys().find(|k| !new.contains_key(k)) {
                    return Err(format!(
                        "Chatwoot's public API cannot remove custom attribute {key:?} (attributes merge by key)"
                    ));
                }
                let mut send = BTreeMap::new();
                for (key, value) in new {
                    if old.get(key) == Some(value) {
                        continue;
                    }
                    if value.trim().is_empty() {
                        return Err(format!(
                            "Chatwoot's public API cannot set custom attribute {key:?} to a blank value (it ignores blank values)"
                        ));
                    }
                    send.insert(key.to_string(), value.to_string());
                }
                if !send.is_empty() {
                    body.custom_attributes = Some(send);
                }
            }
            (Field::ExternalId, _) => {
                return Err("Chatwoot's public API ignores identifier".into());
            }
            (field, _) => {
                return Err(format!(
                    "Chatwoot cannot write {field} through this adapter"
                ));
            }
        }
    }
    Ok(body)
}

/// What one application-mode update sends: the `PATCH` body, the custom-attribute keys to
/// remove, and the whole label list when labels change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppUpdate {
    pub body: AppUpdateContact,
    /// Keys for `destroy_custom_attributes` (the `PATCH` merges, so it cannot remove one).
    pub remove_keys: Vec<String>,
    /// The full label list for the labels endpoint (it replaces the whole list).
    pub labels: Option<Vec<String>>,
}

/// Builds the application API's requests for `patch`.
///
/// Scalars are sent as given, and a cleared one as `null` (the application API assigns it).
/// Of custom attributes only changed keys are sent; removed keys go to
/// `destroy_custom_attributes`. Tags become the contact's whole label list.
///
/// # Errors
/// A field the application API cannot write (avatar, username) is refused before anything is
/// sent; the rules block these, so an error here means a rule is missing.
pub fn app_update(patch: &Patch) -> Result<AppUpdate, String> {
    let mut out = AppUpdate::default();
    for change in &patch.changes {
        match (change.field, &change.new) {
            (
                Field::Name | Field::Email | Field::Phone | Field::ExternalId,
                FieldValue::Scalar(new),
            ) => {
                let value = new
                    .as_ref()
                    .map(|v| v.raw().to_owned())
                    .filter(|v| !v.trim().is_empty());
                let slot = match change.field {
                    Field::Name => &mut out.body.name,
                    Field::Email => &mut out.body.email,
                    Field::Phone => &mut out.body.phone_number,
                    _ => &mut out.body.identifier,
                };
                *slot = Some(value);
            }
            (Field::CustomFields, FieldValue::Map(new)) => {
                let empty = FieldMap::new();
                let old = match &change.old {
                    FieldValue::Map(old) => old,
                    _ => &empty,
                };
                out.remove_keys = old
                    .keys()
                    .filter(|k| !new.contains_key(k))
                    .map(|k| k.to_string())
                    .collect();
                let send: BTreeMap<String, String> = new
                    .iter()
                    .filter(|(k, v)| old.get(k) != Some(*v))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                if !send.is_empty() {
                    out.body.custom_attributes = Some(send);
                }
            }
            (Field::Tags, FieldValue::Set(new)) => {
                out.labels = Some(new.to_strings());
            }
            (field, _) => {
                return Err(format!(
                    "Chatwoot's application API cannot write {field} through this adapter"
                ));
            }
        }
    }
    Ok(out)
}

/// The fields the application API's `POST /api/v1/accounts/{account_id}/contacts` takes
/// (labels set right after, through the labels endpoint).
pub const CREATE_FIELDS: [Field; 6] = [
    Field::Name,
    Field::Email,
    Field::Phone,
    Field::ExternalId,
    Field::Tags,
    Field::CustomFields,
];

/// What a create requires: one of e-mail, phone or identifier (SPEC section 11), since the
/// contacts list shows only contacts with one of them (`app/models/contact.rb`).
pub const CREATE_REQUIRES: &[&[Field]] = &[&[Field::Email, Field::Phone, Field::ExternalId]];

/// The create body for `new` in `inbox_id`, and the labels to set afterwards (if any).
///
/// # Errors
/// When `new` holds none of e-mail, phone and identifier (Chatwoot would create a contact its
/// list never shows), or a field the application API cannot write.
pub fn create_body(
    new: &NewContact,
    inbox_id: u64,
) -> Result<(CreateContact, Option<Vec<String>>), String> {
    let mut body = CreateContact {
        inbox_id,
        ..CreateContact::default()
    };
    let mut labels = None;
    for (field, value) in &new.fields {
        match (field, value) {
            (
                Field::Name | Field::Email | Field::Phone | Field::ExternalId,
                FieldValue::Scalar(v),
            ) => {
                let text = v
                    .as_ref()
                    .map(|v| v.raw().to_owned())
                    .filter(|t| !t.trim().is_empty());
                match field {
                    Field::Name => body.name = text,
                    Field::Email => body.email = text,
                    Field::Phone => body.phone_number = text,
                    _ => body.identifier = text,
                }
            }
            (Field::CustomFields, FieldValue::Map(m)) if !m.is_empty() => {
                body.custom_attributes = Some(m.to_btree());
            }
            (Field::CustomFields, FieldValue::Map(_)) => {}
            (Field::Tags, FieldValue::Set(t)) if !t.is_empty() => {
                labels = Some(t.to_strings());
            }
            (Field::Tags, FieldValue::Set(_)) => {}
            (field, _) => {
                return Err(format!("Chatwoot cannot create a contact with {field}"));
            }
        }
    }
    if body.email.is_none() && body.phone_number.is_none() && body.identifier.is_none() {
        return Err("Chatwoot needs one of email, phone or external_id (identifier)".into());
    }
    Ok((body, labels))
}

/// The values of `body` that `stored` (the record Chatwoot returned) does not hold, meaning
/// Chatwoot accepted the request but silently discarded the value (its public API drops
/// invalid e-mails and phones, over-long strings and blank values instead of answering 422).
///
/// Each value sent is normalised the way [`to_contact`] reads it back, so a value Chatwoot
/// stored reformatted (e-mail case, name spacing) counts as stored.
pub fn unstored(body: &UpdateContact, stored: &Contact, normalizer: &Normalizer) -> Vec<String> {
    let key = |v: Option<crate::model::Value>| v.map(|v| v.key().to_owned());
    let mut missing = Vec::new();
    let mut check = |field: &str, sent: Option<String>, held: Option<String>| {
        if sent.is_some() && sent != held {
            missing.push(field.to_owned());
        }
    };
    check(
        "name",
        body.name
            .as_deref()
            .map(|n| Name::from_display(n).display().to_owned()),
        stored.name.as_ref().map(|n| n.display().to_owned()),
    );
    check(
        "email",
        body.email
            .as_deref()
            .and_then(|e| key(normalizer.email(e).0)),
        stored.email.as_ref().map(|v| v.key().to_owned()),
    );
    check(
        "phone",
        body.phone_number
            .as_deref()
            .and_then(|p| key(normalizer.phone(p).0)),
        stored.phone.as_ref().map(|v| v.key().to_owned()),
    );
    for (k, value) in body.custom_attributes.iter().flatten() {
        if stored.custom_fields.get(k).map(|v| v.as_str()) != Some(value.as_str()) {
            missing.push(format!("custom attribute {k:?}"));
        }
    }
    missing
}

/// Lower-case hex HMAC-SHA256 of `identifier` keyed with the inbox's HMAC token: Chatwoot's
/// `identifier_hash`.
pub fn identifier_hash(hmac_token: &str, identifier: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(hmac_token.as_bytes())
        .expect("HMAC accepts a key of any length");
    mac.update(identifier.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Chatwoot's error body as a message: a 422 `{"message","attributes"}` becomes
/// `"message (attributes: a, b)"`, a 401/404 `{"error": "…"}` its text, a 429's plain-text body
/// (`Retry later`) itself, anything else the HTTP reason phrase. The body is never echoed
/// otherwise (an HTML error page or a proxy's page is not a message).
pub fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(e) = serde_json::from_slice::<ErrorBody>(body) {
        if let Some(message) = e.message.filter(|m| !m.trim().is_empty()) {
            let attributes: Vec<String> = e
                .attributes
                .unwrap_or_default()
                .iter()
                .filter_map(attribute_text)
                .collect();
            let text = if attributes.is_empty() {
                message
            } else {
                format!("{message} (attributes: {})", attributes.join(", "))
            };
            return truncate(&text);
        }
        match e.error {
            Some(Json::String(s)) if !s.trim().is_empty() => return truncate(&s),
            Some(Json::Null) | None => {}
            Some(other) => return truncate(&other.to_string()),
        }
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        if let Ok(text) = std::str::from_utf8(body) {
            let text = text.trim();
            if !text.is_empty() && !text.contains('<') {
                return truncate(text);
            }
        }
    }
    status
        .canonical_reason()
        .unwrap_or("unexpected status")
        .to_owned()
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Change, RecordId, Value};

    fn record(json: serde_json::Value) -> ContactRecord {
        serde_json::from_value(json).expect("valid record")
    }

    fn patch(changes: Vec<Change>) -> Patch {
        Patch {
            record: RecordId::new(ProviderKind::Chatwoot, "12"),
            update_ref: "src-12".into(),
            changes,
        }
    }

    fn scalar(s: &str) -> FieldValue {
        FieldValue::Scalar(Some(Value::plain(s)))
    }

    fn map(pairs: &[(&str, &str)]) -> FieldValue {
        FieldValue::Map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn maps_fields_and_finds_the_inbox_source_id() {
        let n = Normalizer::new("US").expect("region");
        let c = to_contact(
            &record(serde_json::json!({
                "id": 12, "name": "  Ada  Lovelace ", "email": "Ada@Example.COM",
                "phone_number": "+14155550101", "identifier": "crm-1", "thumbnail": "https://x/a.png",
                "custom_attributes": {"tier": "gold", "visits": 3, "vip": true, "tags": ["a"], "gone": null},
                "contact_inboxes": [
                    {"source_id": "other", "inbox": {"id": 9}},
                    {"source_id": "src-12", "inbox": {"id": 3}}
                ],
                "updated_at": 1_700_000_000
            })),
            3,
            &n,
        );
        assert_eq!(c.id.native, "12");
        assert_eq!(c.update_ref.as_deref(), Some("src-12"));
        assert_eq!(c.write_blocked, None);
        assert_eq!(c.name.as_ref().map(|n| n.display()), Some("Ada Lovelace"));
        assert_eq!(c.email.as_ref().map(|v| v.key()), Some("ada@example.com"));
        assert_eq!(c.external_id.as_ref().map(|v| v.raw()), Some("crm-1"));
        assert_eq!(c.avatar_url, None, "thumbnail is never mapped");
        assert_eq!(
            c.custom_fields,
            [
                ("tier", "gold"),
                ("visits", "3"),
                ("vip", "true"),
                ("tags", "[\"a\"]")
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
        );
        assert_eq!(c.updated_at.map(|t| t.timestamp()), Some(1_700_000_000));
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn a_contact_without_a_session_in_the_inbox_is_not_writable() {
        let c = to_contact(
            &record(
                serde_json::json!({"id": 4, "email": "x@y.io", "contact_inboxes": [
                    {"source_id": "elsewhere", "inbox": {"id": 9}}
                ]}),
            ),
            3,
            &Normalizer::default(),
        );
        assert_eq!(c.update_ref, None);
        assert_eq!(
            c.write_blocked.as_deref(),
            Some("no contact_inbox for inbox 3: Chatwoot's public API cannot address this contact")
        );
    }

    #[test]
    fn body_carries_changed_fields_and_changed_attribute_keys_only() {
        let body = update_body(&patch(vec![
            Change {
                field: Field::Name,
                old: scalar("Ada"),
                new: scalar("Ada King"),
            },
            Change {
                field: Field::CustomFields,
                old: map(&[("tier", "gold"), ("city", "Paris")]),
                new: map(&[("tier", "gold"), ("city", "Lyon"), ("new", "1")]),
            },
        ]))
        .expect("writable");
        assert_eq!(
            serde_json::to_value(&body).expect("serialises"),
            serde_json::json!({"name": "Ada King", "custom_attributes": {"city": "Lyon", "new": "1"}})
        );
    }

    #[test]
    fn body_refuses_what_chatwoot_would_silently_ignore() {
        for change in [
            Change {
                field: Field::Email,
                old: scalar("a@b.io"),
                new: FieldValue::Scalar(None),
            },
            Change {
                field: Field::CustomFields,
                old: map(&[("a", "1")]),
                new: map(&[]),
            },
            Change {
                field: Field::CustomFields,
                old: map(&[]),
                new: map(&[("a", " ")]),
            },
            Change {
                field: Field::ExternalId,
                old: FieldValue::Scalar(None),
                new: scalar("x"),
            },
            Change {
                field: Field::AvatarUrl,
                old: FieldValue::Scalar(None),
                new: scalar("https://x/a.png"),
            },
            Change {
                field: Field::Tags,
                old: FieldValue::Set(Default::default()),
                new: FieldValue::Set(["vip".to_owned()].into()),
            },
        ] {
            let field = change.field;
            assert!(update_body(&patch(vec![change])).is_err(), "{field}");
        }
    }

    #[test]
    fn identifier_hash_is_hex_hmac_sha256() {
        // RFC 4231-style known answer (key "key").
        assert_eq!(
            identifier_hash("key", "The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn error_bodies_become_messages() {
        let m = |status: u16, body: &str| {
            error_message(
                StatusCode::from_u16(status).expect("status"),
                body.as_bytes(),
            )
        };
        assert_eq!(
            m(
                422,
                r#"{"message":"Email has already been taken","attributes":["email"]}"#
            ),
            "Email has already been taken (attributes: email)"
        );
        assert_eq!(
            m(404, r#"{"error":"Resource could not be found"}"#),
            "Resource could not be found"
        );
        assert_eq!(
            m(
                401,
                r#"{"error":"HMAC failed: Invalid Identifier Hash Provided"}"#
            ),
            "HMAC failed: Invalid Identifier Hash Provided"
        );
        assert_eq!(m(429, "Retry later"), "Retry later");
        assert_eq!(m(502, "<html>bad gateway</html>"), "Bad Gateway");
        assert_eq!(m(500, "{}"), "Internal Server Error");
        assert_eq!(m(400, &"x".repeat(10)), "Bad Request");
        assert!(m(422, &format!(r#"{{"message":"{}"}}"#, "y".repeat(1000))).ends_with('…'));
    }

    #[test]
    fn unstored_values_are_detected() {
        let n = Normalizer::default();
        let stored = to_contact(
            &record(
                serde_json::json!({"id": 12, "name": "Ada", "email": "old@x.io",
                "custom_attributes": {"a": "1"}}),
            ),
            3,
            &n,
        );
        let p = patch(vec![
            Change {
                field: Field::Name,
                old: scalar("A"),
                new: scalar("Ada"),
            },
            Change {
                field: Field::Email,
                old: scalar("old@x.io"),
                new: scalar("new@x"),
            },
            Change {
                field: Field::CustomFields,
                old: map(&[]),
                new: map(&[("a", "1"), ("b", "2")]),
            },
        ]);
        let body = update_body(&p).expect("writable");
        assert_eq!(
            unstored(&body, &stored, &n),
            vec!["email".to_owned(), "custom attribute \"b\"".to_owned()]
        );

        // Stored reformatted (e-mail domain case, name spacing, phone punctuation): stored.
        let reformatted = to_contact(
            &record(
                serde_json::json!({"id": 12, "name": "Ada King", "email": "new@EXAMPLE.ORG",
                "phone_number": "+1 (415) 555-0101"}),
            ),
            3,
            &n,
        );
        let body = UpdateContact {
            name: Some(" Ada  King".into()),
            email: Some("new@example.org".into()),
            phone_number: Some("+14155550101".into()),
            ..UpdateContact::default()
        };
        assert!(unstored(&body, &reformatted, &n).is_empty());
    }

    proptest::proptest! {
        /// Merging the body's custom attributes into the old map (what Chatwoot does) gives
        /// exactly the new map, and only changed keys are sent.
        #[test]
        fn custom_attribute_bodies_merge_to_the_target(
            old in proptest::collection::btree_map("[a-z]{1,4}", "[a-z0-9]{1,6}", 0..6),
            overlay in proptest::collection::btree_map("[a-z]{1,4}", "[a-z0-9]{1,6}", 0..6),
        ) {
            let mut new = old.clone();
            new.extend(overlay);
            let p = patch(vec![Change {
                field: Field::CustomFields,
                old: FieldValue::Map(old.clone().into()),
                new: FieldValue::Map(new.clone().into()),
            }]);
            let body = update_body(&p).expect("adding and changing keys is writable");
            let sent = body.custom_attributes.clone().unwrap_or_default();
            for (k, v) in &sent {
                proptest::prop_assert_ne!(old.get(k), Some(v));
            }
            let mut merged = old.clone();
            merged.extend(sent);
            proptest::prop_assert_eq!(&merged, &new);

            // Read back from what Chatwoot would then hold, nothing is missing.
            let stored = to_contact(
                &record(serde_json::json!({"id": 12, "custom_attributes": merged})),
                3,
                &Normalizer::default(),
            );
            proptest::prop_assert!(unstored(&body, &stored, &Normalizer::default()).is_empty());
        }
    }
}
