//! Chatwoot simulator, modelled on Chatwoot 4.13.
//!
//! Two APIs, as in the real service:
//!
//! - **Application API**, header `api_access_token`: list (`GET /api/v1/accounts/{account_id}/contacts`,
//!   15 resolved contacts per page, `{"meta":{"count","current_page"},"payload":[…]}`), show,
//!   create and update (`PUT`/`PATCH`) one contact. Writes are validated like the `Contact`
//!   model: e-mail `[^@\s]+@[^@\s]+`, phone strict E.164, strings of at most 255 characters,
//!   e-mail (case-insensitively), phone and identifier unique per account; a violation is a 422
//!   `{"message","attributes"}` and changes nothing.
//! - **Public client API**, no auth header (the inbox identifier in the path is the secret):
//!   show and update one contact by the `source_id` of its session in the configured inbox.
//!   The update behaves like Chatwoot's `ContactIdentifyAction`: blank values are dropped,
//!   `identifier` is ignored, invalid values are silently discarded, custom attributes merge by
//!   key, an `identifier_hash` is required when the inbox has an HMAC token, and, the hazard,
//!   an e-mail or phone another contact holds **merges** the contact being updated into that
//!   contact: the updated contact is deleted and the answer is the survivor (another id).
//!
//! Also as the 4.13.0 source behaves (each handler cites its file): labels
//! (`contacts/labels_controller.rb`, replace-whole), `destroy_custom_attributes`, `search`,
//! the account's labels, one inbox; e-mails stored downcased (`prepare_email_attribute` in
//! `app/models/contact.rb`); a save that changes nothing keeps `updated_at`; list ties in an
//! unstable order (no tie-breaker in `sort_on`), pages by offset over the live store so that an
//! edit during a scan shifts records between pages; the public API's invalid values are a 422
//! (its update does not pass `discard_invalid_attrs`), its blank custom attributes are kept,
//! its 404 is Rails' HTML page, and a failed HMAC check is a 500.
//!
//! Contacts are stored in the list's wire format (`contact_list_item` with `contact_inboxes`),
//! plus `updated_at` in Unix seconds, which the list does not render.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use super::{json_response, Flavor, SeedPerson, SimOptions, SimShared, Store};

/// Chatwoot's phone rule, `validates :phone_number, format: { with: /\+[1-9]\d{1,14}\z/ }`
/// (`app/models/contact.rb`, v4.13.0). The pattern has no start anchor, so anything before
/// the last `+` passes (`tel:+14155550101` is stored as it is): only the text after the last
/// `+` must be a digit 1–9 and 1 to 14 more digits. The simulator checks it itself rather than
/// through the adapters' stricter `is_e164`, so the two can disagree as the real ones do.
fn phone_format_ok(phone: &str) -> bool {
    phone.rsplit_once('+').is_some_and(|(_, tail)| {
        (2..=15).contains(&tail.len())
            && tail.bytes().all(|b| b.is_ascii_digit())
            && !tail.starts_with('0')
    })
}

/// Chatwoot's 404 text (`ActiveRecord::RecordNotFound`).
const NOT_FOUND: &str = "Resource could not be found";
/// Devise's answer to a missing or wrong `api_access_token`.
const SIGN_IN: &str = "You need to sign in or sign up before continuing.";
/// The public API's answer to a missing or wrong `identifier_hash`.
const HMAC_FAILED: &str = "HMAC failed: Invalid Identifier Hash Provided";
/// Longest name, e-mail or identifier accepted.
const MAX_LEN: usize = 255;
/// Seeded contacts are created from this instant on (2026-01-01T00:00:00Z).
const SEED_EPOCH: i64 = 1_767_225_600;
/// Stored keys the list does not render.
/// Stored keys the list does not render: `updated_at` (`models/_contact.json.jbuilder` has none)
/// and `labels` (the acts-as-taggable list, read through the labels endpoints).
const INTERNAL_KEYS: [&str; 2] = ["updated_at", "labels"];
/// Rails' production 404 page (`public/404.html`), which the public API answers when a
/// `find_by!` fails: `PublicController` has no `handle_with_exception`
/// (`app/controllers/public_controller.rb`; `app/controllers/application_controller.rb`).
const RAILS_404: &str = "<!DOCTYPE html>\n<html>\n<head><title>The page you were looking for doesn't exist (404)</title></head>\n<body><h1>The page you were looking for doesn't exist.</h1></body>\n</html>\n";

/// Counts list requests, so each one orders ties differently (as an unordered database scan
/// may).
static LIST_CALLS: AtomicU64 = AtomicU64::new(0);

/// Chatwoot's authentication, errors and rate-limit answer.
pub struct ChatwootFlavor;

impl Flavor for ChatwootFlavor {
    /// The application API needs `api_access_token`; the public API has no auth header (its
    /// handlers check the inbox identifier in the path).
    fn authorize(&self, headers: &HeaderMap, path: &str, opts: &SimOptions) -> bool {
        if is_public(path) {
            return true;
        }
        headers
            .get("api_access_token")
            .and_then(|v| v.to_str().ok())
            == Some(opts.token.as_str())
    }

    fn unauthorized(&self) -> Response {
        json_response(StatusCode::UNAUTHORIZED, json!({ "error": SIGN_IN }))
    }

    /// Rack::Attack's throttled answer: plain text, and no `Retry-After` header.
    fn rate_limited(&self, _retry_after_secs: u64) -> Response {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("content-type", "text/plain")],
            "Retry later\n",
        )
            .into_response()
    }

    fn error(&self, status: StatusCode, message: &str) -> Response {
        match status {
            StatusCode::TOO_MANY_REQUESTS => self.rate_limited(0),
            StatusCode::UNPROCESSABLE_ENTITY => {
                json_response(status, json!({ "message": message, "attributes": [] }))
            }
            _ => json_response(status, json!({ "error": message })),
        }
    }
}

fn is_public(path: &str) -> bool {
    path.starts_with("/public/")
}

/// The documented endpoints of both APIs.
pub fn router() -> Router<Arc<SimShared>> {
    Router::new()
        .route(
            "/api/v1/accounts/{account_id}/contacts",
            get(list).post(create),
        )
        .route("/api/v1/accounts/{account_id}/contacts/search", get(search))
        .route(
            "/api/v1/accounts/{account_id}/contacts/{id}",
            get(show).put(update).patch(update),
        )
        .route(
            "/api/v1/accounts/{account_id}/contacts/{id}/labels",
            get(contact_labels).post(set_contact_labels),
        )
        .route(
            "/api/v1/accounts/{account_id}/contacts/{id}/destroy_custom_attributes",
            post(destroy_custom_attributes),
        )
        .route("/api/v1/accounts/{account_id}/labels", get(account_labels))
        .route(
            "/api/v1/accounts/{account_id}/inboxes/{inbox_id}",
            get(inbox_show),
        )
        .route(
            "/public/api/v1/inboxes/{inbox_identifier}",
            get(public_inbox_show),
        )
        .route(
            "/public/api/v1/inboxes/{inbox_identifier}/contacts/{contact_identifier}",
            get(public_show).patch(public_update).put(public_update),
        )
        .fallback(|| async { not_found() })
}

/// A seeded contact in the list's wire format, with a session in the configured inbox.
pub fn from_seed(p: &SeedPerson, seq: u64, opts: &SimOptions) -> Value {
    let created = SEED_EPOCH + i64::try_from(seq).unwrap_or(i64::MAX / 120) * 60;
    let custom: Map<String, Value> = p
        .custom_fields
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "id": seq,
        "name": p.name.clone().unwrap_or_default(),
        // Saved through the model, which downcases e-mails (`prepare_email_attribute`).
        "email": p.email.as_deref().map(str::to_lowercase),
        "phone_number": p.phone,
        "identifier": p.identifier,
        "thumbnail": "",
        "custom_attributes": custom,
        "additional_attributes": {},
        "availability_status": "offline",
        "blocked": false,
        "contact_inboxes": [contact_inbox(&source_id_for(seq), opts.chatwoot.inbox_id)],
        "labels": p.tags,
        "created_at": created,
        "last_activity_at": created + 30,
        "updated_at": created,
    })
}

/// A deterministic, UUID-shaped `source_id` for contact number `seq` (unique per `seq`).
pub fn source_id_for(seq: u64) -> String {
    let h = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED_C4A7_000D_2026;
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 52) & 0xfff,
        seq & 0xffff_ffff_ffff
    )
}

/// A `contact_inbox` of the simulated API inbox.
fn contact_inbox(source_id: &str, inbox_id: u64) -> Value {
    json!({
        "source_id": source_id,
        "inbox": {"id": inbox_id, "name": "API", "channel_type": "Channel::Api"},
    })
}

// ----- Application API -------------------------------------------------------------------

async fn list(
    State(shared): State<Arc<SimShared>>,
    Path(account_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let opts = shared.options();
    if !account_matches(&account_id, &opts) {
        return not_found();
    }
    // Rails reads `page` with `to_i`: anything that is not a positive number is page 1.
    let page_param = query.get("page");
    let page = page_param
        .and_then(|p| p.trim().parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let per_page = opts.page_size.unwrap_or(15).max(1);
    let store = shared.store();
    // Only "resolved" contacts are listed: those with an identifier, e-mail or phone number
    // (`resolved_contacts` in `app/models/contact.rb`), optionally those with a label
    // (`tagged_with(params[:labels], any: true)`, contacts_controller.rb).
    let label = query
        .get("labels[]")
        .or_else(|| query.get("labels"))
        .map(|l| l.to_lowercase());
    let mut resolved: Vec<&Value> = store
        .iter()
        .filter(|c| is_resolved(c))
        .filter(|c| {
            label
                .as_ref()
                .is_none_or(|l| labels_of(c).iter().any(|x| x.to_lowercase() == *l))
        })
        .collect();
    let call = LIST_CALLS.fetch_add(1, AtomicOrdering::Relaxed);
    sort_contacts(
        &mut resolved,
        query.get("sort").map(String::as_str),
        opts.chatwoot.tie_seed ^ call.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let payload: Vec<Value> = resolved
        .iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(|c| list_item(c))
        .collect();
    let current_page = page_param.map_or(json!(1), |p| json!(p));
    json_response(
        StatusCode::OK,
        json!({
            "meta": {"count": resolved.len(), "current_page": current_page},
            "payload": payload,
        }),
    )
}

async fn show(
    State(shared): State<Arc<SimShared>>,
    Path((account_id, id)): Path<(String, String)>,
) -> Response {
    let opts = shared.options();
    if !account_matches(&account_id, &opts) {
        return not_found();
    }
    match shared.store().get(&id) {
        Some(c) => json_response(StatusCode::OK, json!({ "payload": list_item(c) })),
        None => not_found(),
    }
}

/// `POST /api/v1/accounts/{account_id}/contacts` (`app/controllers/api/v1/accounts/contacts_controller.rb`,
/// `create`): saves the contact with the model's validations (`app/models/contact.rb`: a taken
/// e-mail or phone is a 422, nothing saved), then, when `inbox_id` is given, finds that inbox in
/// the account (404 otherwise) and builds its contact inbox (`ContactInboxBuilder`), whose
/// `source_id` the answer carries as `payload.contact_inbox`.
async fn create(
    State(shared): State<Arc<SimShared>>,
    Path(account_id): Path<String>,
    body: Bytes,
) -> Response {
    let opts = shared.options();
    if !account_matches(&account_id, &opts) {
        return not_found();
    }
    let Some(params) = params(&body) else {
        return bad_json();
    };
    let inbox = match params.get("inbox_id") {
        None | Some(Value::Null) => None,
        Some(v) if value_u64(v) == Some(opts.chatwoot.inbox_id) => Some(opts.chatwoot.inbox_id),
        Some(_) => return not_found(),
    };
    let mut store = shared.store();
    let id = store
        .iter()
        .filter_map(|c| c.get("id").and_then(Value::as_u64))
        .max()
        .unwrap_or(0)
        + 1;
    let now = now();
    let mut contact = json!({
        "id": id, "name": "", "email": null, "phone_number": null, "identifier": null,
        "thumbnail": "", "custom_attributes": {}, "additional_attributes": {},
        "availability_status": "offline", "blocked": false, "contact_inboxes": [],
        "created_at": now, "last_activity_at": null, "updated_at": now,
    });
    assign_application_params(&mut contact, &params);
    if let Some(rejected) = validation_error(&store, &contact) {
        return rejected;
    }
    let source_id = inbox.map(|inbox_id| {
        let source_id = source_id_for(id);
        if let Some(list) = contact
            .get_mut("contact_inboxes")
            .and_then(Value::as_array_mut)
        {
            list.push(contact_inbox(&source_id, inbox_id));
        }
        source_id
    });
    reformat(&mut contact, &opts);
    let item = list_item(&contact);
    store.upsert(contact);
    let contact_inbox = match source_id {
        Some(s) => {
            json!({"source_id": s, "inbox": {"id": opts.chatwoot.inbox_id, "name": "API", "channel_type": "Channel::Api"}})
        }
        None => Value::Null,
    };
    json_response(
        StatusCode::OK,
        json!({"payload": {"contact": item, "contact_inbox": contact_inbox}}),
    )
}

async fn update(
    State(shared): State<Arc<SimShared>>,
    Path((account_id, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let opts = shared.options();
    if !account_matches(&account_id, &opts) {
        return not_found();
    }
    let Some(params) = params(&body) else {
        return bad_json();
    };
    let mut store = shared.store();
    let Some(mut contact) = store.get(&id).cloned() else {
        return not_found();
    };
    let before = contact.clone();
    assign_application_params(&mut contact, &params);
    if let Some(rejected) = validation_error(&store, &contact) {
        return rejected;
    }
    reformat(&mut contact, &opts);
    // `save!` on an unchanged record writes nothing, so `updated_at` stays.
    if contact != before {
        contact["updated_at"] = json!(now());
    }
    let item = list_item(&contact);
    store.upsert(contact);
    json_response(StatusCode::OK, json!({ "payload": item }))
}

/// Applies application API params the way `assign_attributes` does: given scalars replace
/// (blank clears), attribute hashes merge by key, `avatar_url` is fetched and re-hosted.
fn assign_application_params(contact: &mut Value, params: &Map<String, Value>) {
    for key in ["name", "email", "phone_number", "identifier"] {
        let Some(v) = params.get(key) else { continue };
        contact[key] = match scalar(v) {
            Some(s) => Value::String(s),
            None if key == "name" => Value::String(String::new()),
            None => Value::Null,
        };
    }
    for key in ["custom_attributes", "additional_attributes"] {
        if let Some(Value::Object(given)) = params.get(key) {
            with_object(contact, key, |merged| {
                for (k, v) in given {
                    merged.insert(k.clone(), v.clone());
                }
            });
        }
    }
    if let Some(Value::Bool(b)) = params.get("blocked") {
        contact["blocked"] = json!(b);
    }
    if let Some(url) = params.get("avatar_url").and_then(scalar) {
        contact["thumbnail"] = json!(rehosted_avatar(&url));
    }
}

/// Validates a contact about to be saved against the `Contact` model's rules: `None` when it
/// is valid, else Chatwoot's 422.
fn validation_error(store: &Store, contact: &Value) -> Option<Response> {
    let id = id_of(contact);
    let mut messages = Vec::new();
    let mut attributes: Vec<&str> = Vec::new();
    let mut fail = |attribute: &'static str, message: String| {
        messages.push(message);
        if !attributes.contains(&attribute) {
            attributes.push(attribute);
        }
    };
    if let Some(name) = text(contact, "name") {
        if name.chars().count() > MAX_LEN {
            fail("name", too_long("Name"));
        }
    }
    if let Some(email) = text(contact, "email") {
        if !is_email(email) {
            fail("email", "Email Invalid email".into());
        }
        if email.chars().count() > MAX_LEN {
            fail("email", too_long("Email"));
        }
        if holder_of_email(store, email, &id).is_some() {
            fail("email", "Email has already been taken".into());
        }
    }
    if let Some(phone) = text(contact, "phone_number") {
        if !phone_format_ok(phone) {
            fail(
                "phone_number",
                "Phone number should be in e164 format".into(),
            );
        }
        if holder_of_phone(store, phone, &id).is_some() {
            fail("phone_number", "Phone number has already been taken".into());
        }
    }
    if let Some(identifier) = text(contact, "identifier") {
        if identifier.chars().count() > MAX_LEN {
            fail("identifier", too_long("Identifier"));
        }
        let taken = store
            .iter()
            .any(|c| id_of(c) != id && text(c, "identifier") == Some(identifier));
        if taken {
            fail("identifier", "Identifier has already been taken".into());
        }
    }
    if messages.is_empty() {
        return None;
    }
    Some(json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"message": messages.join(", "), "attributes": attributes}),
    ))
}

fn too_long(attribute: &str) -> String {
    format!("{attribute} is too long (maximum is {MAX_LEN} characters)")
}

// ----- Public client API -----------------------------------------------------------------

async fn public_show(
    State(shared): State<Arc<SimShared>>,
    Path((inbox_identifier, contact_identifier)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let opts = shared.options();
    if inbox_identifier != opts.chatwoot.inbox_identifier {
        return public_not_found();
    }
    let params: Map<String, Value> = query
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let store = shared.store();
    let Some(id) = session_owner(&store, &contact_identifier, &opts) else {
        return public_not_found();
    };
    if let Some(rejected) = hmac_error(&params, &opts) {
        return rejected;
    }
    let Some(c) = store.get(&id) else {
        return public_not_found();
    };
    json_response(
        StatusCode::OK,
        json!({
            "id": c.get("id"),
            "source_id": contact_identifier,
            "name": c.get("name"),
            "email": c.get("email"),
            "phone_number": c.get("phone_number"),
            "pubsub_token": pubsub_token(&contact_identifier),
        }),
    )
}

/// `ContactIdentifyAction` as the public API runs it (`identifier` excluded, invalid values
/// discarded).
async fn public_update(
    State(shared): State<Arc<SimShared>>,
    Path((inbox_identifier, contact_identifier)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let opts = shared.options();
    if inbox_identifier != opts.chatwoot.inbox_identifier {
        return public_not_found();
    }
    let Some(params) = params(&body) else {
        return bad_json();
    };
    let mut store = shared.store();
    let Some(mut current) = session_owner(&store, &contact_identifier, &opts) else {
        return public_not_found();
    };
    if let Some(rejected) = hmac_error(&params, &opts) {
        return rejected;
    }
    // Blank values are dropped; `identifier` is never read.
    let name = params.get("name").and_then(scalar);
    let email = params.get("email").and_then(scalar);
    let mut phone = params.get("phone_number").and_then(scalar);
    let now = now();
    // The public update does not pass `discard_invalid_attrs`, so an invalid value fails
    // `save!` with a 422 and the transaction (merges included) rolls back: nothing changes
    // (`ContactIdentifyAction#perform`; `render_record_invalid` in
    // `app/controllers/concerns/request_exception_handler.rb`).
    if let Some(rejected) =
        public_validation_error(name.as_deref(), email.as_deref(), phone.as_deref())
    {
        return rejected;
    }

    // The merge hazard: a value another contact holds makes that contact the survivor.
    if let Some(email) = &email {
        if let Some(holder) = holder_of_email(&store, email, &current) {
            merge_into(&mut store, &holder, &current, now);
            current = holder;
        }
    }
    if let Some(p) = phone.clone() {
        if let Some(holder) = holder_of_phone(&store, &p, &current) {
            // The e-mail sent takes priority: a phone held by a contact with another e-mail
            // is dropped from the update instead of merging.
            let other_email = store
                .get(&holder)
                .and_then(|c| text(c, "email"))
                .map(str::to_owned);
            match (&email, other_email) {
                (Some(sent), Some(theirs)) if *sent != theirs => phone = None,
                _ => {
                    merge_into(&mut store, &holder, &current, now);
                    current = holder;
                }
            }
        }
    }

    let Some(contact) = store.get_mut(&current) else {
        return public_not_found();
    };
    let before = contact.clone();
    // `update_contact`: present values are assigned (blanks dropped), custom attributes are
    // deep-merged as sent, `""` and `null` included (`custom_attributes` in
    // `app/actions/contact_identify_action.rb`).
    if let Some(name) = name {
        contact["name"] = json!(name);
    }
    if let Some(email) = email {
        contact["email"] = json!(email);
    }
    if let Some(phone) = phone {
        contact["phone_number"] = json!(phone);
    }
    if let Some(Value::Object(given)) = params.get("custom_attributes") {
        with_object(contact, "custom_attributes", |attrs| {
            for (k, v) in given {
                deep_merge_value(attrs, k, v);
            }
        });
    }
    if let Some(url) = params.get("avatar_url").and_then(scalar) {
        contact["thumbnail"] = json!(rehosted_avatar(&url));
    }
    reformat(contact, &opts);
    // `save! if @contact.changed?`: an unchanged contact keeps its `updated_at`.
    if *contact != before {
        contact["updated_at"] = json!(now);
    }
    let record = public_record(contact, &opts);
    json_response(StatusCode::OK, record)
}

/// The model's format and length checks on the values a public update assigns.
fn public_validation_error(
    name: Option<&str>,
    email: Option<&str>,
    phone: Option<&str>,
) -> Option<Response> {
    let mut messages = Vec::new();
    let mut attributes = Vec::new();
    if name.is_some_and(|n| n.chars().count() > MAX_LEN) {
        messages.push(too_long("Name"));
        attributes.push("name");
    }
    if let Some(e) = email {
        if !is_email(e) {
            messages.push("Email Invalid email".to_owned());
            attributes.push("email");
        } else if e.chars().count() > MAX_LEN {
            messages.push(too_long("Email"));
            attributes.push("email");
        }
    }
    if phone.is_some_and(|p| !phone_format_ok(p)) {
        messages.push("Phone number should be in e164 format".to_owned());
        attributes.push("phone_number");
    }
    if messages.is_empty() {
        return None;
    }
    Some(json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"message": messages.join(", "), "attributes": attributes}),
    ))
}

/// The contact owning the session `source_id` in the configured inbox.
fn session_owner(store: &Store, source_id: &str, opts: &SimOptions) -> Option<String> {
    store
        .iter()
        .find(|c| {
            c.get("contact_inboxes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|ci| {
                    ci.get("source_id").and_then(Value::as_str) == Some(source_id)
                        && ci.pointer("/inbox/id").and_then(Value::as_u64)
                            == Some(opts.chatwoot.inbox_id)
                })
        })
        .map(id_of)
}

/// When the inbox has an HMAC token, `identifier_hash` must sign `identifier` (its text, or
/// `""` when absent): `None` when it does (or no token is set), else Chatwoot's 401.
fn hmac_error(params: &Map<String, Value>, opts: &SimOptions) -> Option<Response> {
    let key = opts.chatwoot.hmac_token.as_ref()?;
    let identifier = match params.get("identifier") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC accepts a key of any length");
    mac.update(identifier.as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    match params.get("identifier_hash").and_then(Value::as_str) {
        Some(given) if given == expected => None,
        // `raise StandardError, 'HMAC failed: ...'` has no handler: Rails answers 500 with its
        // error page (`process_hmac`, public/api/v1/inboxes/contacts_controller.rb).
        _ if opts.chatwoot.hmac_failure_500 => Some(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [("content-type", "text/html; charset=utf-8")],
                "<!DOCTYPE html>\n<html><head><title>We're sorry, but something went wrong (500)</title></head><body></body></html>\n",
            )
                .into_response(),
        ),
        _ => Some(json_response(
            StatusCode::UNAUTHORIZED,
            json!({ "error": HMAC_FAILED }),
        )),
    }
}

/// `ContactMergeAction`: the mergee is deleted; the base keeps its own values, takes the
/// mergee's where it has none (attribute hashes deep-merged, the base's keys winning), and
/// takes over the mergee's sessions.
fn merge_into(store: &mut Store, base_id: &str, mergee_id: &str, now: i64) {
    if base_id == mergee_id {
        return;
    }
    let Some(mergee) = store.remove(mergee_id) else {
        return;
    };
    let Some(base) = store.get_mut(base_id) else {
        store.upsert(mergee);
        return;
    };
    for key in ["identifier", "name", "email", "phone_number"] {
        if text(base, key).is_none() {
            if let Some(v) = text(&mergee, key) {
                base[key] = json!(v);
            }
        }
    }
    for key in ["custom_attributes", "additional_attributes"] {
        let mut merged = mergee
            .get(key)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(own) = base.get(key).and_then(Value::as_object) {
            for (k, v) in own {
                deep_merge_value(&mut merged, k, v);
            }
        }
        base[key] = Value::Object(merged);
    }
    let sessions: Vec<Value> = mergee
        .get("contact_inboxes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match base
        .get_mut("contact_inboxes")
        .and_then(Value::as_array_mut)
    {
        Some(list) => list.extend(sessions),
        None => base["contact_inboxes"] = Value::Array(sessions),
    }
    base["updated_at"] = json!(now);
}

/// The public API's answer: the `Contact` model rendered directly (`public_contact_record`),
/// timestamps in ISO 8601, no `contact_inboxes`.
fn public_record(c: &Value, opts: &SimOptions) -> Value {
    let iso = |key: &str| {
        c.get(key)
            .and_then(Value::as_i64)
            .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
            .map(|t| json!(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()))
            .unwrap_or(Value::Null)
    };
    json!({
        "id": c.get("id"),
        "name": c.get("name"),
        "email": c.get("email"),
        "phone_number": c.get("phone_number"),
        "identifier": c.get("identifier"),
        "blocked": c.get("blocked").cloned().unwrap_or(json!(false)),
        "additional_attributes": c.get("additional_attributes"),
        "custom_attributes": c.get("custom_attributes"),
        "contact_type": "lead",
        "country_code": null,
        "last_activity_at": iso("last_activity_at"),
        "created_at": iso("created_at"),
        "updated_at": iso("updated_at"),
        "last_name": null,
        "middle_name": null,
        "location": null,
        "account_id": opts.chatwoot.account_id,
        "company_id": null,
        "label_list": [],
    })
}

// ----- Helpers ---------------------------------------------------------------------------

fn not_found() -> Response {
    json_response(StatusCode::NOT_FOUND, json!({ "error": NOT_FOUND }))
}

fn account_matches(account_id: &str, opts: &SimOptions) -> bool {
    account_id.parse::<u64>().ok() == Some(opts.chatwoot.account_id)
}

/// Request params: a JSON object (an empty body, or JSON that is not an object, is no
/// params); `None` when the body is not JSON.
fn params(body: &Bytes) -> Option<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(Map::new());
    }
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Object(m) => Some(m),
        _ => Some(Map::new()),
    }
}

/// Rails' answer to a body that does not parse.
fn bad_json() -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({"error": "There was a problem in the JSON you submitted"}),
    )
}

/// A permitted scalar param as text, `None` when blank (Rails' `blank?`: null, empty or
/// whitespace-only text, `false`) or not a scalar.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(true) => Some("true".into()),
        _ => None,
    }
}

/// Ruby's `deep_merge` of one key: nested hashes merge, anything else replaces.
fn deep_merge_value(into: &mut Map<String, Value>, key: &str, value: &Value) {
    match (into.get_mut(key), value) {
        (Some(Value::Object(existing)), Value::Object(given)) => {
            for (k, v) in given {
                deep_merge_value(existing, k, v);
            }
        }
        _ => {
            into.insert(key.to_owned(), value.clone());
        }
    }
}

/// Changes the object at `key` (an empty one when missing or not an object).
fn with_object(contact: &mut Value, key: &str, f: impl FnOnce(&mut Map<String, Value>)) {
    let mut object = contact
        .get(key)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    f(&mut object);
    contact[key] = Value::Object(object);
}

/// A stored contact's id as text.
fn id_of(c: &Value) -> String {
    match c.get("id") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

fn value_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A non-blank string field.
fn text<'a>(c: &'a Value, key: &str) -> Option<&'a str> {
    c.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// Chatwoot lists only contacts with an identifier, e-mail or phone number.
fn is_resolved(c: &Value) -> bool {
    ["identifier", "email", "phone_number"]
        .iter()
        .any(|k| text(c, k).is_some())
}

/// Another contact (not `except`) holding `email`, compared case-insensitively.
fn holder_of_email(store: &Store, email: &str, except: &str) -> Option<String> {
    let wanted = email.to_lowercase();
    store
        .iter()
        .find(|c| {
            id_of(c) != except && text(c, "email").is_some_and(|e| e.to_lowercase() == wanted)
        })
        .map(id_of)
}

/// Another contact (not `except`) holding exactly `phone`.
fn holder_of_phone(store: &Store, phone: &str, except: &str) -> Option<String> {
    store
        .iter()
        .find(|c| id_of(c) != except && text(c, "phone_number") == Some(phone))
        .map(id_of)
}

/// Devise's e-mail format: `\A[^@\s]+@[^@\s]+\z`.
fn is_email(s: &str) -> bool {
    let mut parts = s.split('@');
    let ok =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && !p.chars().any(char::is_whitespace));
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// Stores the e-mail downcased, as `prepare_email_attribute` does before every save
/// (`app/models/contact.rb`), whatever `reformat_on_write` says: that is Chatwoot's own
/// reformatting.
fn reformat(contact: &mut Value, _opts: &SimOptions) {
    if let Some(email) = text(contact, "email").map(str::to_lowercase) {
        contact["email"] = json!(email);
    }
}

/// Where Chatwoot serves an avatar it downloaded: never the URL given.
fn rehosted_avatar(url: &str) -> String {
    format!(
        "https://app.chatwoot.com/rails/active_storage/representations/redirect/{:016x}/avatar.png",
        fnv(url)
    )
}

/// The websocket token of a session (opaque; stable per `source_id`).
fn pubsub_token(source_id: &str) -> String {
    format!(
        "{:016x}{:08x}",
        fnv(source_id),
        fnv(&source_id.len().to_string()) >> 32
    )
}

/// FNV-1a, for stable made-up tokens.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A stored contact as the list renders it.
fn list_item(c: &Value) -> Value {
    let mut item = c.clone();
    if let Some(m) = item.as_object_mut() {
        for key in INTERNAL_KEYS {
            m.remove(key);
        }
    }
    item
}

/// Orders contacts by the `sort` param as `sort_on` does (contacts_controller.rb; the scopes
/// in `app/models/contact.rb`): `email`, `phone_number` (plain columns), `name` (lower-cased),
/// `created_at`, `last_activity_at`, `company`, `city`, `country` (`NULLS LAST`), `-key`
/// descending; an unknown or absent key orders nothing. No key has a tie-breaker, so ties come
/// in an order `seed` decides (the database's, which differs between queries).
fn sort_contacts(contacts: &mut [&Value], sort: Option<&str>, seed: u64) {
    let tie = |c: &Value| {
        let id = c.get("id").and_then(Value::as_u64).unwrap_or(0);
        (id ^ seed)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .rotate_left(31)
            ^ seed
    };
    let Some(sort) = sort else {
        contacts.sort_by_key(|c| tie(c));
        return;
    };
    let (key, descending) = match sort.strip_prefix('-') {
        Some(k) => (k, true),
        None => (sort, false),
    };
    let path = match key {
        "name" | "email" | "phone_number" | "created_at" | "last_activity_at" => key.to_owned(),
        "company" => "additional_attributes/company_name".to_owned(),
        "city" => "additional_attributes/city".to_owned(),
        "country" => "additional_attributes/country".to_owned(),
        _ => {
            contacts.sort_by_key(|c| tie(c));
            return;
        }
    };
    let sort_key = |c: &Value| -> Option<String> {
        match c.pointer(&format!("/{path}"))? {
            Value::String(s) if key == "name" => Some(s.to_lowercase()),
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(format!("{:020}", n.as_i64().unwrap_or(0))),
            _ => None,
        }
    };
    contacts.sort_by(|a, b| {
        let order = match (sort_key(a), sort_key(b)) {
            (Some(x), Some(y)) if descending => y.cmp(&x),
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        order.then_with(|| tie(a).cmp(&tie(b)))
    });
}

/// A stored contact's labels.
fn labels_of(c: &Value) -> Vec<String> {
    c.get("labels")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// The public API's 404: Rails' HTML page (see [`RAILS_404`]).
fn public_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [("content-type", "text/html; charset=utf-8")],
        RAILS_404,
    )
        .into_response()
}

// ----- Labels, custom attributes, search, inboxes ----------------------------------------

/// `GET .../contacts/{id}/labels` (`LabelConcern#index`): `{"payload": label_list}`.
async fn contact_labels(
    State(shared): State<Arc<SimShared>>,
    Path((account_id, id)): Path<(String, String)>,
) -> Response {
    let opts = shared.options();
    if !account_matches(&account_id, &opts) {
        return not_found();
    }
    match shared.store().get(&id) {
        Some(c) => json_response(StatusCode::OK, json!({ "payload": labels_of(c) })),
        None => not_found(),
    }
}

/// `POST .../contacts/{id}/labels` (`LabelConcern#create`, `update_labels` in
/// `app/models/concerns/labelable.rb`): the list given replaces the whole list. Labels need not
/// exist in the account (acts-as-taggable creates the tag); duplicates are kept once.
async fn set_contact_labels(
    State(shared): State<Arc<SimShared>>,
    Path((account_id, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let opts = shared.options();
    if !account_matches(&account_id, &opts) {
        return not_found();
    }
    let Some(params) = params(&body) else {
        return bad_json();
    };
    let mut store = shared.store();
    let Some(contact) = store.get_mut(&id) else {
        return not_found();
    };
    let mut labels: Vec<String> = Vec::new();
    for l in params
        .get("labels")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(scalar)
    {
        let l = l.trim().to_owned();
        if !labels.iter().any(|x| x.eq_ignore_ascii_case(&l)) {
            labels.push(l);
        }
    }
    if labels_of(contact) != labels {
        contact["labels"] = json!(labels);
        contact["updated_at"] = json!(now());
    }
    json_response(StatusCode::OK, json!({ "payload": labels }))
}

/// `POST .../contacts/{id}/destroy_custom_attributes`
/// (`custom_attributes.excluding(params[:custom_attributes])`, contacts_controller.rb).
async fn destroy_custom_attributes(
    State(shared): State<Arc<SimShared>>,
    Path((account_id, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let opts = shared.options();
    if !account_matches(&account_id, &opts) {
        return not_found();
    }
    let Some(params) = params(&body) else {
        return bad_json();
    };
    let keys: Vec<String> = params
        .get("custom_attributes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let mut store = shared.store();
    let Some(contact) = store.get_mut(&id) else {
        return not_found();
    };
    let before = contact.clone();
    with_object(contact, "custom_attributes", |attrs| {
        for k in &keys {
            attrs.remove(k);
        }
    });
    if *contact != before {
        contact["updated_at"] = json!(now());
    }
    json_response(StatusCode::OK, json!({ "payload": list_item(contact) }))
}

/// `GET .../contacts/search?q=` (contacts_controller.rb `search`): name, e-mail and phone
/// contain `q` case-insensitively, or the identifier contains it; 15 per page, `has_more`.
async fn search(
    State(shared): State<Arc<SimShared>>,
    Path(account_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let opts = shared.options();
    if !account_matches(&account_id, &opts) {
        return not_found();
    }
    let Some(q) = query
        .get("q")
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty())
    else {
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": "Specify search string with parameter q"}),
        );
    };
    let page = query
        .get("page")
        .and_then(|p| p.trim().parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let lower = q.to_lowercase();
    let store = shared.store();
    let hits: Vec<Value> = store
        .iter()
        .filter(|c| {
            ["name", "email", "phone_number"]
                .iter()
                .any(|k| text(c, k).is_some_and(|v| v.to_lowercase().contains(&lower)))
                || text(c, "identifier").is_some_and(|v| v.contains(&q))
        })
        .skip((page - 1) * 15)
        .take(16)
        .map(list_item)
        .collect();
    let has_more = hits.len() > 15;
    let payload: Vec<Value> = hits.into_iter().take(15).collect();
    json_response(
        StatusCode::OK,
        json!({
            "meta": {"count": payload.len(), "current_page": query.get("page").map_or(json!(1), |p| json!(p)), "has_more": has_more},
            "payload": payload,
        }),
    )
}

/// `GET /api/v1/accounts/{id}/labels` (`labels/index.json.jbuilder`, ordered by title).
async fn account_labels(
    State(shared): State<Arc<SimShared>>,
    Path(account_id): Path<String>,
) -> Response {
    let opts = shared.options();
    if !account_matches(&account_id, &opts) {
        return not_found();
    }
    let mut titles = opts.chatwoot.labels.clone();
    titles.sort();
    let payload: Vec<Value> = titles
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": i + 1, "title": t, "description": null, "color": "#1f93ff", "show_on_sidebar": true}))
        .collect();
    json_response(StatusCode::OK, json!({ "payload": payload }))
}

/// `GET /api/v1/accounts/{id}/inboxes/{inbox_id}` (`models/_inbox.json.jbuilder`): the one
/// simulated API inbox, or 404.
async fn inbox_show(
    State(shared): State<Arc<SimShared>>,
    Path((account_id, inbox_id)): Path<(String, String)>,
) -> Response {
    let opts = shared.options();
    if !account_matches(&account_id, &opts)
        || inbox_id.parse::<u64>().ok() != Some(opts.chatwoot.inbox_id)
    {
        return not_found();
    }
    json_response(
        StatusCode::OK,
        json!({
            "id": opts.chatwoot.inbox_id, "name": "API", "channel_type": "Channel::Api",
            "hmac_mandatory": false, "inbox_identifier": opts.chatwoot.inbox_identifier,
        }),
    )
}

/// `GET /public/api/v1/inboxes/{identifier}` (`Channel::Api.find_by!(identifier:)`,
/// `public/api/v1/inboxes_controller.rb`; `public/api/v1/inboxes/show.json.jbuilder`).
async fn public_inbox_show(
    State(shared): State<Arc<SimShared>>,
    Path(inbox_identifier): Path<String>,
) -> Response {
    let opts = shared.options();
    if inbox_identifier != opts.chatwoot.inbox_identifier {
        return public_not_found();
    }
    json_response(
        StatusCode::OK,
        json!({
            "identifier": inbox_identifier,
            "identity_validation_enabled": opts.chatwoot.hmac_token.is_some(),
            "name": "API",
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::normalize::is_e164;

    #[test]
    fn formats_match_chatwoot() {
        assert!(is_email("a@b"));
        assert!(!is_email("a@b@c"));
        assert!(!is_email("a b@c"));
        assert!(!is_email("@c"));
        assert!(is_e164("+14155550101"));
        assert!(!is_e164("4155550101"));
        assert!(!is_e164("+0123"));
        assert!(!is_e164("+1"));
        // Chatwoot's own rule is looser than strict E.164: no start anchor.
        assert!(phone_format_ok("+14155550101"));
        assert!(phone_format_ok("tel:+14155550101"));
        assert!(!phone_format_ok("4155550101"));
        assert!(!phone_format_ok("+0123"));
        assert!(!phone_format_ok("+1"));
        assert!(!phone_format_ok("+1415 555 0101"));
        assert!(!phone_format_ok("+1234567890123456"));
    }

    #[test]
    fn source_ids_are_unique_and_uuid_shaped() {
        let a = source_id_for(1);
        let b = source_id_for(2);
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn merge_keeps_base_values_and_takes_sessions() {
        let opts = SimOptions::for_provider(crate::model::ProviderKind::Chatwoot);
        let mut store = Store::new("id");
        let mut a = from_seed(
            &SeedPerson {
                name: Some("A".into()),
                email: Some("a@x.io".into()),
                custom_fields: [
                    ("k".to_owned(), "a".to_owned()),
                    ("only_a".into(), "1".into()),
                ]
                .into(),
                ..SeedPerson::default()
            },
            1,
            &opts,
        );
        a["identifier"] = json!("id-a");
        let b = from_seed(
            &SeedPerson {
                name: Some("B".into()),
                email: Some("b@x.io".into()),
                custom_fields: [("k".to_owned(), "b".to_owned())].into(),
                ..SeedPerson::default()
            },
            2,
            &opts,
        );
        store.upsert(a);
        store.upsert(b);
        merge_into(&mut store, "2", "1", 5);
        assert!(store.get("1").is_none());
        let b = store.get("2").expect("survivor");
        assert_eq!(b["name"], "B");
        assert_eq!(b["identifier"], "id-a");
        assert_eq!(b["custom_attributes"], json!({"k": "b", "only_a": "1"}));
        assert_eq!(b["contact_inboxes"].as_array().map(Vec::len), Some(2));
    }
}
