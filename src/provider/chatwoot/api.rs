//! Chatwoot's wire format: the DTOs of the two APIs the adapter speaks, and their paths.
//!
//! - The **application API** (`/api/v1/accounts/{account_id}/...`, header `api_access_token`)
//!   lists contacts; every contact carries its `contact_inboxes`, whose `source_id` for the
//!   configured inbox is what the public API addresses.
//!   By default it also updates (`PATCH .../contacts/{id}`), sets labels
//!   (`POST .../contacts/{id}/labels`), removes custom attributes
//!   (`POST .../contacts/{id}/destroy_custom_attributes`) and creates contacts.
//! - The **public client API** (`/public/api/v1/inboxes/{inbox_identifier}/...`, no auth
//!   header: the inbox identifier in the path is the secret) updates one contact when
//!   `update_api = "public"`.
//!
//! This is the only file that knows Chatwoot's JSON. Readers are tolerant (unknown fields are
//! ignored, missing ones default) because Chatwoot adds fields between releases.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Header carrying the application API access token.
pub const ACCESS_TOKEN_HEADER: &str = "api_access_token";

/// Path segments of the contact list: `/api/v1/accounts/{account_id}/contacts`.
pub fn list_path(account_id: &str) -> [&str; 5] {
    ["api", "v1", "accounts", account_id, "contacts"]
}

/// Path segments of one contact in the application API:
/// `/api/v1/accounts/{account_id}/contacts/{id}`.
pub fn contact_path<'a>(account_id: &'a str, id: &'a str) -> [&'a str; 6] {
    ["api", "v1", "accounts", account_id, "contacts", id]
}

/// Path segments of a contact's labels: `/api/v1/accounts/{account_id}/contacts/{id}/labels`
/// (`resources :labels, only: [:create, :index]` under contacts in `config/routes.rb`).
pub fn labels_path<'a>(account_id: &'a str, id: &'a str) -> [&'a str; 7] {
    [
        "api", "v1", "accounts", account_id, "contacts", id, "labels",
    ]
}

/// Path segments of `POST /api/v1/accounts/{account_id}/contacts/{id}/destroy_custom_attributes`.
pub fn destroy_custom_attributes_path<'a>(account_id: &'a str, id: &'a str) -> [&'a str; 7] {
    [
        "api",
        "v1",
        "accounts",
        account_id,
        "contacts",
        id,
        "destroy_custom_attributes",
    ]
}

/// Path segments of the account's labels: `/api/v1/accounts/{account_id}/labels`.
pub fn account_labels_path(account_id: &str) -> [&str; 5] {
    ["api", "v1", "accounts", account_id, "labels"]
}

/// Path segments of one inbox: `/api/v1/accounts/{account_id}/inboxes/{inbox_id}`.
pub fn inbox_path<'a>(account_id: &'a str, inbox_id: &'a str) -> [&'a str; 6] {
    ["api", "v1", "accounts", account_id, "inboxes", inbox_id]
}

/// Path segments of one contact in the public API:
/// `/public/api/v1/inboxes/{inbox_identifier}/contacts/{source_id}`. The result holds the
/// inbox identifier (a secret): never log or format the URL built from it.
pub fn public_contact_path<'a>(inbox_identifier: &'a str, source_id: &'a str) -> [&'a str; 7] {
    [
        "public",
        "api",
        "v1",
        "inboxes",
        inbox_identifier,
        "contacts",
        source_id,
    ]
}

/// `GET /api/v1/accounts/{account_id}/contacts?page=N&sort=…` (schema `contacts_list_response`).
#[derive(Debug, Deserialize)]
pub struct ContactList {
    pub meta: ListMeta,
    #[serde(default)]
    pub payload: Vec<ContactRecord>,
}

/// `contact_meta`: the total of (resolved) contacts and the page served.
#[derive(Debug, Deserialize)]
pub struct ListMeta {
    pub count: u64,
    /// Echoes the `page` parameter: a string when one was sent, else the integer 1.
    #[serde(default)]
    pub current_page: Option<Value>,
}

/// `GET /api/v1/accounts/{account_id}/contacts/{id}` (schema `contact_show_response`).
#[derive(Debug, Deserialize)]
pub struct ContactShow {
    pub payload: ContactRecord,
}

/// One contact, as the list (`contact_list_item`) and the public update response
/// (`public_contact_record`) both render it. The two differ only where noted.
///
/// Fields not read: `thumbnail` (Chatwoot re-hosts avatars, so avatar URLs are unsupported),
/// `additional_attributes`, `blocked`, `availability_status`, `created_at` and
/// `last_activity_at` (activity, not edits: no model field holds them).
#[derive(Debug, Clone, Deserialize)]
pub struct ContactRecord {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone_number: Option<String>,
    /// The external identifier.
    #[serde(default)]
    pub identifier: Option<String>,
    /// Any JSON values (strings, numbers, booleans, dates as text, lists).
    #[serde(default)]
    pub custom_attributes: Option<BTreeMap<String, Value>>,
    /// Present in the list (and the application API's show), absent from the public record.
    #[serde(default)]
    pub contact_inboxes: Option<Vec<ContactInbox>>,
    /// Unix seconds in the application API, ISO 8601 text in the public record. Read when
    /// present (the list of some releases omits it).
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
    /// Whether the contact is blocked: a `NOT NULL DEFAULT FALSE` column in Chatwoot 4.13.0
    /// (`app/models/contact.rb`, schema comment) that the contact partial renders
    /// (`app/views/api/v1/models/_contact.json.jbuilder`: `json.blocked resource.blocked`).
    /// Absent (the public record) reads as not blocked.
    #[serde(default)]
    pub blocked: Option<bool>,
}

/// `GET /public/api/v1/inboxes/{inbox_identifier}/contacts/{source_id}` (schema
/// `public_contact`), used by the healthcheck to prove the inbox identifier works.
#[derive(Debug, Clone, Deserialize)]
pub struct PublicContact {
    pub id: u64,
}

/// `contact_inbox`: the contact's session in one inbox.
#[derive(Debug, Clone, Deserialize)]
pub struct ContactInbox {
    /// What the public API's `{contact_identifier}` addresses.
    pub source_id: String,
    pub inbox: InboxRef,
}

/// The inbox of a `contact_inbox` (only its id matters here).
#[derive(Debug, Clone, Deserialize)]
pub struct InboxRef {
    pub id: u64,
}

/// A timestamp in either of Chatwoot's renderings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Timestamp {
    /// Unix seconds (application API jbuilder views).
    Unix(i64),
    /// ISO 8601 / RFC 3339 text (models rendered directly, as the public update does).
    Text(String),
}

/// `PATCH /public/api/v1/inboxes/{inbox_identifier}/contacts/{source_id}`, exactly the fields
/// of `public_contact_create_update_payload` this adapter writes. Absent fields are not sent
/// (Chatwoot ignores blank values, so a field can never be cleared through this endpoint).
///
/// `avatar`/`avatar_url` are never sent: Chatwoot re-hosts avatars, see the adapter's rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UpdateContact {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// Only the keys to set: Chatwoot merges them into the stored attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_attributes: Option<BTreeMap<String, String>>,
    /// Sent only with `identifier_hash`, as the message the hash signs; the public update
    /// itself ignores it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    /// Lower-case hex HMAC-SHA256 of `identifier` keyed with the inbox's HMAC token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier_hash: Option<String>,
}

impl UpdateContact {
    /// The names of the fields this body sends, for messages.
    pub fn field_names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.name.is_some() {
            out.push("name");
        }
        if self.email.is_some() {
            out.push("email");
        }
        if self.phone_number.is_some() {
            out.push("phone_number");
        }
        if self.custom_attributes.is_some() {
            out.push("custom_attributes");
        }
        out
    }
}

/// `PATCH /api/v1/accounts/{account_id}/contacts/{id}`: the application API's update
/// (`contact_update_params` in `app/controllers/api/v1/accounts/contacts_controller.rb`).
/// Scalars are assigned as sent, so `null` clears one; `custom_attributes` are merged into the
/// stored ones key by key (removing a key takes [`DestroyCustomAttributes`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AppUpdateContact {
    /// `Some(None)` sends `null` (clears the field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<Option<String>>,
    /// Only the keys to set or change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_attributes: Option<BTreeMap<String, String>>,
}

impl AppUpdateContact {
    /// Whether the body would change nothing.
    pub fn is_empty(&self) -> bool {
        *self == AppUpdateContact::default()
    }
}

/// `POST /api/v1/accounts/{account_id}/contacts/{id}/destroy_custom_attributes`: the keys to
/// remove (`custom_attributes.excluding(params[:custom_attributes])`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestroyCustomAttributes {
    pub custom_attributes: Vec<String>,
}

/// `POST /api/v1/accounts/{account_id}/contacts/{id}/labels`: the whole label list
/// (`update_labels` in `app/models/concerns/labelable.rb` replaces it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetLabels {
    pub labels: Vec<String>,
}

/// The labels endpoints' answer (`labels/create.json.jbuilder`, `labels/index.json.jbuilder`):
/// `{"payload": ["vip", …]}`.
#[derive(Debug, Deserialize)]
pub struct LabelList {
    #[serde(default)]
    pub payload: Vec<String>,
}

/// `GET /api/v1/accounts/{account_id}/labels` (`labels/index.json.jbuilder`).
#[derive(Debug, Deserialize)]
pub struct AccountLabels {
    #[serde(default)]
    pub payload: Vec<AccountLabel>,
}

/// One label of the account.
#[derive(Debug, Deserialize)]
pub struct AccountLabel {
    pub title: String,
}

/// `GET /api/v1/accounts/{account_id}/inboxes/{inbox_id}` (`models/_inbox.json.jbuilder`), as
/// far as the healthcheck reads it.
#[derive(Debug, Deserialize)]
pub struct InboxShow {
    pub id: u64,
    #[serde(default)]
    pub channel_type: Option<String>,
}

/// `POST /api/v1/accounts/{account_id}/contacts` (`permitted_params` and `build_contact_inbox`
/// in `app/controllers/api/v1/accounts/contacts_controller.rb`). With `inbox_id`, Chatwoot
/// also creates the contact's session in that inbox (`ContactInboxBuilder`; an API inbox gets a
/// random UUID `source_id`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CreateContact {
    pub inbox_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_attributes: Option<BTreeMap<String, String>>,
}

/// The create answer (`contacts/create.json.jbuilder`):
/// `{"payload": {"contact": {…}, "contact_inbox": {"inbox": …, "source_id": …}}}`.
#[derive(Debug, Deserialize)]
pub struct Created {
    pub payload: CreatedPayload,
}

/// See [`Created`].
#[derive(Debug, Deserialize)]
pub struct CreatedPayload {
    pub contact: ContactRecord,
    #[serde(default)]
    pub contact_inbox: Option<CreatedInbox>,
}

/// The session the create made (`null` fields when no inbox was given).
#[derive(Debug, Deserialize)]
pub struct CreatedInbox {
    #[serde(default)]
    pub source_id: Option<String>,
}

/// `GET /api/v1/accounts/{account_id}/contacts/search?q=…` (`contacts/search.json.jbuilder`):
/// contacts whose name, e-mail, phone or identifier contain `q`.
#[derive(Debug, Deserialize)]
pub struct SearchResult {
    #[serde(default)]
    pub payload: Vec<ContactRecord>,
}

/// Chatwoot's error bodies: 422 `{"message","attributes":[…]}`; 401/404 `{"error": "…"}`.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub attributes: Option<Vec<Value>>,
    #[serde(default)]
    pub error: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_items_and_public_records_decode() {
        let list: ContactList = serde_json::from_str(
            r#"{"meta":{"count":2,"current_page":"1"},"payload":[
                {"id":1,"name":"Ada","email":null,"phone_number":"+14155550101","identifier":null,
                 "thumbnail":"","custom_attributes":{"tier":"gold","n":3},"additional_attributes":{},
                 "contact_inboxes":[{"source_id":"s-1","inbox":{"id":3,"name":"API","channel_type":"Channel::Api"}}],
                 "created_at":1700000000,"last_activity_at":null,"blocked":false,"availability_status":"offline"}]}"#,
        )
        .expect("list decodes");
        assert_eq!(list.meta.count, 2);
        let c = &list.payload[0];
        assert_eq!(c.id, 1);
        assert_eq!(c.contact_inboxes.as_ref().map(Vec::len), Some(1));
        assert_eq!(c.identifier, None);

        let rec: ContactRecord = serde_json::from_str(
            r#"{"id":5,"name":"Bo","identifier":"x","custom_attributes":null,
                "updated_at":"2026-05-01T10:00:00.000Z","account_id":7,"label_list":[]}"#,
        )
        .expect("record decodes");
        assert!(rec.contact_inboxes.is_none());
        assert_eq!(
            rec.updated_at,
            Some(Timestamp::Text("2026-05-01T10:00:00.000Z".into()))
        );
    }

    #[test]
    fn update_body_sends_only_present_fields() {
        let body = UpdateContact {
            name: Some("Ada".into()),
            ..UpdateContact::default()
        };
        assert_eq!(
            serde_json::to_value(&body).expect("serialises"),
            serde_json::json!({"name": "Ada"})
        );
    }
}
