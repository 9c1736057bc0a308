//! The Chatwoot client: lists, creates and (by default) updates through the application API;
//! updates through the public client API when `update_api = "public"`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use reqwest::Method;

use super::api::{
    self, AccountLabels, ContactList, ContactRecord, ContactShow, InboxShow, LabelList,
    PublicContact,
};
use super::map;
use crate::budget::RateBudget;
use crate::config::{ChatwootUpdateApi, ProviderConfig, ProviderSpecific, Secret};
use crate::model::{Contact, Field, NewContact, Normalizer, Patch, ProviderKind, TagSet};
use crate::provider::base::{ClientBase, Credential};
use crate::provider::rules::{FieldRule, Format};
use crate::provider::{Created, FieldRules, Listing, LookupKey, Page, Provider, ProviderError};

const KIND: ProviderKind = ProviderKind::Chatwoot;

/// What Chatwoot's update API of `mode` can write (SPEC sections 3, 9 and 13).
///
/// Application API (`PATCH /api/v1/accounts/{account_id}/contacts/{id}`, the default):
/// - `name`, `email`, `phone`, `external_id` (`identifier`): assigned as sent, so they can be
///   cleared. `email`, `phone` and `identifier` are unique per account: writing one another
///   contact holds fails with 422 (`validates ... uniqueness` in `app/models/contact.rb`), so
///   the planner blocks clashes it can see and the rest fail as record-level failures.
/// - `custom_fields` (`custom_attributes`): the update merges sent keys into the stored ones
///   (`contact_custom_attributes` in `app/controllers/api/v1/accounts/contacts_controller.rb`);
///   keys are removed through `destroy_custom_attributes`, so the whole map is writable.
/// - `tags` (labels): the labels endpoint replaces the whole list (`update_labels` in
///   `app/models/concerns/labelable.rb`). A label can be added only when it is one of
///   `known_labels` (`must_pre_exist`, rule `unknown-tag`): the list does not render labels, so
///   the adapter reads them back one account label at a time (`labels[]` filter), and a label
///   outside that set would never read back and be planned again every run.
///
/// Public client API (`update_api = "public"`):
/// - `name`, `email`, `phone`: blank values are dropped (`update_contact` in
///   `app/actions/contact_identify_action.rb`), so they cannot be cleared; an `email` or
///   `phone` another contact holds *merges* the contact being updated into that contact, so
///   `unique()` blocks such writes and the adapter checks again right before each write.
/// - `external_id`: the public update drops `identifier`
///   (`app/controllers/public/api/v1/inboxes/contacts_controller.rb`, `update`).
/// - `custom_fields`: deep-merged, blanks not sent: keys can be added or changed, never removed.
/// - `tags`: the public API has no labels endpoint.
///
/// Both: `avatar_url` is unsupported (Chatwoot downloads the image and re-hosts it, so the URL
/// read back never equals the URL written); `username` does not exist.
pub fn field_rules_for(mode: ChatwootUpdateApi, known_labels: &BTreeSet<String>) -> FieldRules {
    let (clearable, external_id, custom, tags) = match mode {
        ChatwootUpdateApi::Application => (
            true,
            FieldRule::writable()
                .unique()
                .formats(&[Format::MaxLen(255)]),
            FieldRule::writable(),
            FieldRule::writable().pre_existing(known_labels.clone()),
        ),
        ChatwootUpdateApi::Public => (
            false,
            FieldRule::read_only("Chatwoot's public API ignores identifier"),
            FieldRule::writable()
                .merge_keys()
                .formats(&[Format::NonBlank]),
            FieldRule::unsupported(),
        ),
    };
    let scalar = |rule: FieldRule| {
        if clearable {
            rule
        } else {
            rule.not_clearable()
        }
    };
    FieldRules::new(
        KIND,
        [
            (
                Field::Name,
                scalar(FieldRule::writable().formats(&[Format::MaxLen(255)])),
            ),
            (
                Field::Email,
                scalar(
                    FieldRule::writable()
                        .unique()
                        .formats(&[Format::Email, Format::MaxLen(255)]),
                ),
            ),
            (
                Field::Phone,
                scalar(FieldRule::writable().unique().formats(&[Format::E164])),
            ),
            (Field::ExternalId, external_id),
            (Field::CustomFields, custom),
            (Field::Tags, tags),
            (Field::AvatarUrl, FieldRule::unsupported()),
            (Field::Username, FieldRule::unsupported()),
        ],
    )
    .with_create(&map::CREATE_FIELDS, map::CREATE_REQUIRES)
}

/// The public API's rules (the table this adapter had before the application API became the
/// default), for callers that plan without a configured adapter; a built adapter uses
/// [`field_rules_for`] with its configured mode.
pub fn field_rules() -> FieldRules {
    field_rules_for(ChatwootUpdateApi::Public, &BTreeSet::new())
}

/// Chatwoot adapter.
///
/// Lists, creates and (in application mode) updates with the application API
/// (`api_access_token`). In public mode it updates with the public client API of the configured
/// inbox, addressing each contact by its `contact_inbox` `source_id` in that inbox; the inbox
/// identifier is a secret carried in that API's URL path, so URLs are never logged or put in
/// errors.
pub struct ChatwootClient {
    /// Its `auth` is the application API access token, sent as `api_access_token`.
    base: ClientBase,
    account_id: String,
    inbox_id: u64,
    /// Present in public mode only (validation requires it there).
    inbox_identifier: Option<Secret>,
    hmac_token: Option<Secret>,
    sort: String,
    update_api: ChatwootUpdateApi,
    /// The labels that may be added (`known_labels`); read back with the account's labels.
    known_labels: BTreeSet<String>,
    /// Each contact's identifier as last read, kept only when an HMAC token is configured:
    /// `identifier_hash` signs the contact's identifier, which the patch does not carry.
    identifiers: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for ChatwootClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatwootClient")
            .field("http", &self.base.http)
            .field("account_id", &self.account_id)
            .field("inbox_id", &self.inbox_id)
            .field("hmac", &self.hmac_token.is_some())
            .field("sort", &self.sort)
            .field("update_api", &self.update_api)
            .finish_non_exhaustive()
    }
}

impl ChatwootClient {
    /// Builds the adapter from a validated config whose secrets are resolved.
    ///
    /// # Errors
    /// `ProviderError::Protocol` when the config is not Chatwoot's, a secret cannot be read, or
    /// the inbox identifier cannot be a URL path segment. Messages never hold a secret.
    pub fn new(
        config: &ProviderConfig,
        normalizer: Normalizer,
        budget: Arc<RateBudget>,
    ) -> Result<Self, ProviderError> {
        let protocol = |message: String| ProviderError::Protocol {
            provider: KIND,
            message,
        };
        let ProviderSpecific::Chatwoot {
            account_id,
            inbox_id,
            inbox_identifier,
            hmac_token,
            sort,
            update_api,
            known_labels,
        } = &config.specific
        else {
            return Err(protocol(
                "the Chatwoot adapter was given another provider's settings".into(),
            ));
        };
        let inbox_identifier = match (update_api, inbox_identifier) {
            (ChatwootUpdateApi::Public, None) => {
                return Err(protocol(
                    "update_api = \"public\" needs the inbox_identifier".into(),
                ))
            }
            (_, None) => None,
            (_, Some(source)) => {
                let secret = source
                    .resolve()
                    .map_err(|m| protocol(format!("inbox_identifier: {m}")))?;
                if matches!(secret.expose().trim(), "" | "." | "..") {
                    return Err(protocol(
                        "the configured inbox_identifier cannot address the public API".into(),
                    ));
                }
                Some(secret)
            }
        };
        let hmac_token = hmac_token
            .as_ref()
            .map(|s| {
                s.resolve()
                    .map_err(|m| protocol(format!("hmac_token: {m}")))
            })
            .transpose()?;
        Ok(ChatwootClient {
            base: ClientBase::new(
                config,
                normalizer,
                budget,
                field_rules_for(*update_api, known_labels),
                map::error_message,
                Credential::Raw,
            )?,
            account_id: account_id.to_string(),
            inbox_id: *inbox_id,
            inbox_identifier,
            hmac_token,
            sort: sort.clone(),
            update_api: *update_api,
            known_labels: known_labels.clone(),
            identifiers: Mutex::new(HashMap::new()),
        })
    }

    fn identifiers(&self) -> MutexGuard<'_, HashMap<String, String>> {
        // The map holds plain data; a panic elsewhere cannot leave it inconsistent.
        self.identifiers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember_identifier(&self, rec: &ContactRecord) {
        if self.hmac_token.is_some() {
            self.identifiers().insert(
                rec.id.to_string(),
                rec.identifier.clone().unwrap_or_default(),
            );
        }
    }

    /// One page of the application API's contact list, of every resolved contact or (with
    /// `label`) of those holding that label (`tagged_with(params[:labels], any: true)` in
    /// `resolved_contacts`, `app/controllers/api/v1/accounts/contacts_controller.rb`).
    async fn fetch_page(
        &self,
        page: u64,
        label: Option<&str>,
    ) -> Result<ContactList, ProviderError> {
        let url = self.base.http.url(&api::list_path(&self.account_id))?;
        let page_text = page.to_string();
        let list: ContactList = self
            .base
            .http
            .send_json("list contacts", || {
                let mut query = vec![("page", page_text.as_str()), ("sort", self.sort.as_str())];
                if let Some(label) = label {
                    query.push(("labels[]", label));
                }
                self.base
                    .http
                    .request(Method::GET, url.clone())
                    .query(&query)
                    .header(api::ACCESS_TOKEN_HEADER, self.base.auth.clone())
            })
            .await?;
        let served = list.meta.current_page.as_ref().and_then(|v| match v {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        });
        if let Some(served) = served.filter(|s| *s != page) {
            return Err(ProviderError::Protocol {
                provider: KIND,
                message: format!("asked for contact page {page} but Chatwoot served page {served}; is a proxy dropping query parameters?"),
            });
        }
        Ok(list)
    }

    /// A GET on the application API with the access token.
    async fn get_app<T: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &[&str],
    ) -> Result<T, ProviderError> {
        let url = self.base.http.url(path)?;
        self.base
            .http
            .send_json(operation, || {
                self.base
                    .http
                    .request(Method::GET, url.clone())
                    .header(api::ACCESS_TOKEN_HEADER, self.base.auth.clone())
            })
            .await
    }

    /// A JSON write (`PATCH` or `POST`) on the application API with the access token. Every
    /// write sent this way is idempotent (it sets values), so the usual retry policy applies.
    async fn write_app<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        path: &[&str],
        body: &B,
    ) -> Result<T, ProviderError> {
        let url = self.base.http.url(path)?;
        self.base
            .http
            .send_json(operation, || {
                self.base
                    .http
                    .request(method.clone(), url.clone())
                    .header(api::ACCESS_TOKEN_HEADER, self.base.auth.clone())
                    .json(body)
            })
            .await
    }

    /// The contact's current identifier (`""` when it has none), from the listing or, when this
    /// process has not listed it, from the application API.
    async fn identifier_of(&self, native: &str) -> Result<String, ProviderError> {
        if let Some(identifier) = self.identifiers().get(native) {
            return Ok(identifier.clone());
        }
        let show: ContactShow = self
            .get_app("read contact", &api::contact_path(&self.account_id, native))
            .await?;
        self.remember_identifier(&show.payload);
        Ok(show.payload.identifier.unwrap_or_default())
    }

    /// The HMAC pair for `identifier`, when an HMAC token is configured.
    fn hmac_pair(&self, identifier: String) -> Option<(String, String)> {
        self.hmac_token
            .as_ref()
            .map(|key| (map::identifier_hash(key.expose(), &identifier), identifier))
    }

    /// The inbox identifier, which only public mode has.
    fn inbox_identifier(&self) -> Result<&str, ProviderError> {
        self.inbox_identifier
            .as_ref()
            .map(Secret::expose)
            .ok_or_else(|| ProviderError::Protocol {
                provider: KIND,
                message: "the public API needs providers.chatwoot.inbox_identifier".into(),
            })
    }

    /// Removes the inbox identifier from a provider message, should Chatwoot (or a proxy) ever
    /// echo the request path in an error body.
    fn redact(&self, err: ProviderError) -> ProviderError {
        let Some(secret) = self.inbox_identifier.as_ref().map(Secret::expose) else {
            return err;
        };
        let clean = |m: String| {
            if m.contains(secret) {
                m.replace(secret, "**REDACTED**")
            } else {
                m
            }
        };
        match err {
            ProviderError::Auth {
                provider,
                status,
                message,
            } => ProviderError::Auth {
                provider,
                status,
                message: clean(message),
            },
            ProviderError::Rejected {
                provider,
                operation,
                status,
                message,
            } => ProviderError::Rejected {
                provider,
                operation,
                status,
                message: clean(message),
            },
            ProviderError::Server {
                provider,
                operation,
                status,
                message,
            } => ProviderError::Server {
                provider,
                operation,
                status,
                message: clean(message),
            },
            ProviderError::Decode {
                provider,
                operation,
                message,
            } => ProviderError::Decode {
                provider,
                operation,
                message: clean(message),
            },
            ProviderError::Protocol { provider, message } => ProviderError::Protocol {
                provider,
                message: clean(message),
            },
            other => other,
        }
    }

    /// What a 500 from the public API means: Chatwoot raises a plain `StandardError` with no
    /// handler when the `identifier_hash` check fails or the inbox requires one and none was
    /// sent (`process_hmac` in `app/controllers/public/api/v1/inboxes/contacts_controller.rb`),
    /// so it is reported as that configuration error, after one attempt.
    fn hmac_error(&self, err: ProviderError, operation: &'static str) -> ProviderError {
        match err {
            ProviderError::Server { status: 500, .. } => ProviderError::Rejected {
                provider: KIND,
                operation,
                status: 500,
                message: if self.hmac_token.is_some() {
                    "configuration error: Chatwoot's public API failed the identifier_hash check (it answers 500 for that); check providers.chatwoot.hmac_token against the inbox's HMAC token".into()
                } else {
                    "configuration error: Chatwoot's public API answered 500, which is how it refuses a request without identifier_hash when the inbox makes HMAC mandatory; configure providers.chatwoot.hmac_token".into()
                },
            },
            other => other,
        }
    }

    /// Checks the public API: the inbox identifier names an API inbox
    /// (`Channel::Api.find_by!(identifier:)`, `app/controllers/public/api/v1/inboxes_controller.rb`),
    /// and, with a contact of the first page that has a session in `inbox_id`, that the
    /// identifier belongs to that inbox and the HMAC token (if any) is accepted.
    async fn check_public_api(&self, first: &[ContactRecord]) -> Result<(), ProviderError> {
        let identifier = self.inbox_identifier()?;
        let url = self
            .base
            .http
            .url(&["public", "api", "v1", "inboxes", identifier])?;
        let inbox: Result<serde_json::Value, ProviderError> = self
            .base
            .http
            .send_json("read the public inbox", || {
                self.base.http.request(Method::GET, url.clone())
            })
            .await;
        match inbox.map_err(|e| self.redact(e)) {
            Ok(_) => {}
            Err(ProviderError::Rejected { status: 404, .. }) => {
                return Err(ProviderError::Auth {
                    provider: KIND,
                    status: 404,
                    message: "the public API does not know the configured inbox_identifier (only API inboxes have one); check inbox_identifier".into(),
                })
            }
            Err(e) => return Err(e),
        }
        let Some((rec, source_id)) = first
            .iter()
            .find_map(|rec| map::source_id_for(rec, self.inbox_id).map(|s| (rec, s)))
        else {
            return Ok(());
        };
        let url = self
            .base
            .http
            .url(&api::public_contact_path(identifier, &source_id))?;
        let hmac = self.hmac_pair(rec.identifier.clone().unwrap_or_default());
        let result: Result<PublicContact, ProviderError> = self
            .base
            .http
            .send_json_once("read contact through the public API", || {
                let request = self.base.http.request(Method::GET, url.clone());
                match &hmac {
                    Some((hash, identifier)) => request.query(&[
                        ("identifier", identifier.as_str()),
                        ("identifier_hash", hash.as_str()),
                    ]),
                    None => request,
                }
            })
            .await;
        match result.map_err(|e| self.redact(e)) {
            Ok(found) if found.id == rec.id => Ok(()),
            Ok(found) => Err(ProviderError::Auth {
                provider: KIND,
                status: 200,
                message: format!(
                    "the public API resolved contact {}'s source_id in inbox {} to contact {}; check inbox_id and inbox_identifier",
                    rec.id, self.inbox_id, found.id
                ),
            }),
            Err(ProviderError::Rejected { status: 404, .. }) => Err(ProviderError::Auth {
                provider: KIND,
                status: 404,
                message: format!(
                    "the configured inbox_identifier is not the identifier of inbox {}; check inbox_identifier and inbox_id",
                    self.inbox_id
                ),
            }),
            Err(e) => Err(self.hmac_error(e, "read contact through the public API")),
        }
    }

    /// The cheap checks: the token and account (first list page), the inbox (`inbox_id` in the
    /// account), and in public mode the public API. Returns the first page for reuse.
    async fn check(&self) -> Result<ContactList, ProviderError> {
        let first = match self.fetch_page(1, None).await {
            Err(ProviderError::Rejected { status: 404, .. }) => {
                return Err(ProviderError::Auth {
                    provider: KIND,
                    status: 404,
                    message: format!(
                        "account {} was not found for this access token; check account_id",
                        self.account_id
                    ),
                })
            }
            other => other?,
        };
        let inbox_text = self.inbox_id.to_string();
        let inbox: InboxShow = match self
            .get_app(
                "read inbox",
                &api::inbox_path(&self.account_id, &inbox_text),
            )
            .await
        {
            Err(ProviderError::Rejected { status: 404, .. }) => {
                return Err(ProviderError::Auth {
                    provider: KIND,
                    status: 404,
                    message: format!(
                        "inbox {} does not exist in account {}; check inbox_id",
                        self.inbox_id, self.account_id
                    ),
                })
            }
            other => other?,
        };
        if self.update_api == ChatwootUpdateApi::Public {
            if inbox.channel_type.as_deref() != Some("Channel::Api") {
                return Err(ProviderError::Auth {
                    provider: KIND,
                    status: 200,
                    message: format!(
                        "inbox {} is a {} inbox, but the public API reaches API inboxes only; check inbox_id",
                        inbox.id,
                        inbox.channel_type.as_deref().unwrap_or("unknown")
                    ),
                });
            }
            self.check_public_api(&first.payload).await?;
        }
        Ok(first)
    }

    /// The healthcheck plus what an operator should know: how many contacts have no session
    /// in `inbox_id` (in public mode those cannot be updated at all), and in application mode
    /// which labels may be added. Lists every page.
    ///
    /// # Errors
    /// What [`Provider::healthcheck`] reports, a listing failure, or (application mode) a
    /// `known_labels` entry that is not a label of the account.
    pub async fn health_report(&self) -> Result<Vec<String>, ProviderError> {
        let first = self.check().await?;
        let mut without = 0u64;
        let mut seen = 0u64;
        let mut page = 1u64;
        let mut list = first;
        loop {
            without += list
                .payload
                .iter()
                .filter(|rec| map::source_id_for(rec, self.inbox_id).is_none())
                .count() as u64;
            seen += list.payload.len() as u64;
            if list.payload.is_empty() || seen >= list.meta.count {
                break;
            }
            page += 1;
            list = self.fetch_page(page, None).await?;
        }
        let mode = match self.update_api {
            ChatwootUpdateApi::Application => "updates use the application API",
            ChatwootUpdateApi::Public => "updates use the public API",
        };
        let mut notes = vec![format!(
            "account {}, inbox {}, {seen} contacts; {mode}",
            self.account_id, self.inbox_id
        )];
        if without > 0 {
            notes.push(match self.update_api {
                ChatwootUpdateApi::Public => format!(
                    "{without} contacts have no source id for inbox {}: the public API cannot update them",
                    self.inbox_id
                ),
                ChatwootUpdateApi::Application => format!(
                    "{without} contacts have no source id for inbox {} (not needed by the application API)",
                    self.inbox_id
                ),
            });
        }
        if self.update_api == ChatwootUpdateApi::Application {
            notes.extend(self.label_notes().await?);
        }
        Ok(notes)
    }

    /// Checks `known_labels` against the account's labels: each must be one (SPEC section 13:
    /// labels are tags that must pre-exist), and the notes say what may be added.
    async fn label_notes(&self) -> Result<Vec<String>, ProviderError> {
        let account = self.account_labels().await?;
        let undefined = self.undefined_known_labels(&account);
        if !undefined.is_empty() {
            return Err(ProviderError::Protocol {
                provider: KIND,
                message: format!(
                    "known_labels {undefined:?} are not labels of account {}; create them in Chatwoot (Settings, Labels) or remove them from providers.chatwoot.known_labels",
                    self.account_id
                ),
            });
        }
        let list = |labels: &mut dyn Iterator<Item = &String>| {
            let labels: Vec<&str> = labels.map(String::as_str).collect();
            if labels.is_empty() {
                "none".to_owned()
            } else {
                labels.join(", ")
            }
        };
        let mut notes = Vec::new();
        if self.known_labels.is_empty() {
            notes.push(format!(
                "known_labels is not set: labels are read and removals sync, but no label is added (the account defines: {})",
                list(&mut account.iter())
            ));
        } else {
            notes.push(format!(
                "labels that may be added: {}",
                list(&mut self.known_labels.iter())
            ));
            let mut unlisted = account.difference(&self.known_labels).peekable();
            if unlisted.peek().is_some() {
                notes.push(format!(
                    "account labels not in known_labels (read, never added): {}",
                    list(&mut unlisted)
                ));
            }
        }
        Ok(notes)
    }

    /// The account's label titles (`GET /api/v1/accounts/{account_id}/labels`).
    async fn account_labels(&self) -> Result<BTreeSet<String>, ProviderError> {
        let labels: AccountLabels = self
            .get_app("list labels", &api::account_labels_path(&self.account_id))
            .await?;
        Ok(labels.payload.into_iter().map(|l| l.title).collect())
    }

    /// The configured `known_labels` the account does not define.
    fn undefined_known_labels<'a>(&'a self, account: &BTreeSet<String>) -> Vec<&'a str> {
        self.known_labels
            .iter()
            .filter(|l| !account.contains(*l))
            .map(String::as_str)
            .collect()
    }

    /// Reads every label's contacts and sets each listed contact's tags: the list does not
    /// render labels (`app/views/api/v1/models/_contact.json.jbuilder`), so one filtered scan
    /// per label is far cheaper than one request per contact. The labels read are the
    /// account's and the configured `known_labels` (a known label the account lost is still
    /// read back, so what this adapter wrote is never planned again).
    async fn read_labels(&self, listing: &mut Listing) -> Result<(), ProviderError> {
        let mut titles = self.account_labels().await?;
        let undefined = self.undefined_known_labels(&titles);
        if !undefined.is_empty() {
            tracing::warn!(provider = %KIND, labels = ?undefined, "Known labels are not labels of the Chatwoot account; create them there or remove them from known_labels.");
        }
        titles.extend(self.known_labels.iter().cloned());
        let mut tags: HashMap<String, TagSet> = HashMap::new();
        for title in &titles {
            let mut page = 1u64;
            let mut seen = std::collections::HashSet::new();
            loop {
                let list = self.fetch_page(page, Some(title)).await?;
                let before = seen.len();
                for rec in &list.payload {
                    if seen.insert(rec.id) {
                        tags.entry(rec.id.to_string())
                            .or_default()
                            .insert(title.clone());
                    }
                }
                // Stop at the count, on an empty page, or when a page adds nothing new.
                if list.payload.is_empty()
                    || seen.len() as u64 >= list.meta.count
                    || seen.len() == before
                    || page >= 100_000
                {
                    break;
                }
                page += 1;
            }
        }
        for c in &mut listing.contacts {
            if let Some(t) = tags.remove(c.id.native.as_str()) {
                c.tags = t;
            }
        }
        Ok(())
    }

    /// The merge guard of SPEC section 9, run again right before a public-API write: another
    /// contact that took the e-mail or phone since the listing would otherwise be merged with
    /// this one (`ContactIdentifyAction`). Uses the application API's search
    /// (`search` in `app/controllers/api/v1/accounts/contacts_controller.rb`).
    async fn recheck_merge(
        &self,
        native: &str,
        body: &api::UpdateContact,
    ) -> Result<(), ProviderError> {
        let url = self.base.http.url(&[
            "api",
            "v1",
            "accounts",
            &self.account_id,
            "contacts",
            "search",
        ])?;
        let checks = [
            ("e-mail", body.email.as_deref()),
            ("phone", body.phone_number.as_deref()),
        ];
        for (what, value) in checks {
            let Some(value) = value else { continue };
            let found: api::SearchResult = self
                .base
                .http
                .send_json("search contacts", || {
                    self.base
                        .http
                        .request(Method::GET, url.clone())
                        .query(&[("q", value)])
                        .header(api::ACCESS_TOKEN_HEADER, self.base.auth.clone())
                })
                .await?;
            let holder = found.payload.iter().find(|rec| {
                rec.id.to_string() != native
                    && match what {
                        "e-mail" => rec
                            .email
                            .as_deref()
                            .is_some_and(|e| e.eq_ignore_ascii_case(value)),
                        _ => rec.phone_number.as_deref() == Some(value),
                    }
            });
            if let Some(holder) = holder {
                return Err(ProviderError::Protocol {
                    provider: KIND,
                    message: format!(
                        "skipped contact {native} (would-merge-contacts): contact {} took this {what} after the listing, and the public API would merge the two contacts",
                        holder.id
                    ),
                });
            }
        }
        Ok(())
    }

    /// Application mode: one `PATCH` for the scalars and changed custom attributes, one
    /// `destroy_custom_attributes` for removed keys, one labels `POST` for tags, each only when
    /// needed. A 422 (a value another contact holds, an invalid value) is a record-level
    /// failure; nothing is merged.
    async fn apply_application(&self, patch: &Patch) -> Result<Contact, ProviderError> {
        let native = &patch.record.native;
        let update = map::app_update(patch).map_err(|message| ProviderError::Protocol {
            provider: KIND,
            message: format!("cannot update contact {native}: {message}"),
        })?;
        let mut record: Option<ContactRecord> = None;
        if !update.body.is_empty() {
            let show: ContactShow = self
                .write_app(
                    "update contact",
                    Method::PATCH,
                    &api::contact_path(&self.account_id, native),
                    &update.body,
                )
                .await?;
            record = Some(show.payload);
        }
        if !update.remove_keys.is_empty() {
            let show: ContactShow = self
                .write_app(
                    "remove custom attributes",
                    Method::POST,
                    &api::destroy_custom_attributes_path(&self.account_id, native),
                    &api::DestroyCustomAttributes {
                        custom_attributes: update.remove_keys.clone(),
                    },
                )
                .await?;
            record = Some(show.payload);
        }
        let labels = match &update.labels {
            Some(labels) => {
                let got: LabelList = self
                    .write_app(
                        "set labels",
                        Method::POST,
                        &api::labels_path(&self.account_id, native),
                        &api::SetLabels {
                            labels: labels.clone(),
                        },
                    )
                    .await?;
                Some(got.payload)
            }
            None => None,
        };
        let mut contact = match &record {
            Some(rec) => {
                self.remember_identifier(rec);
                map::to_contact_for(rec, self.inbox_id, self.update_api, &self.base.normalizer)
            }
            None => {
                let mut c = Contact::new(KIND, native.clone());
                c.update_ref = Some(native.clone());
                c
            }
        };
        if let Some(labels) = labels {
            contact.tags = labels.into_iter().collect();
        }
        Ok(contact)
    }

    /// Public mode: one `PATCH` to the public API carrying every change, after the merge guard
    /// ran again. Sent once: a 500 is the HMAC check failing (see [`Self::hmac_error`]).
    /// Chatwoot answers 200 even when it did not do what was asked, so the answer is checked: a
    /// different contact id means it merged the contact into another one (an error naming
    /// both), and a value missing from the answer means it was not stored.
    async fn apply_public(&self, patch: &Patch) -> Result<Contact, ProviderError> {
        let native = &patch.record.native;
        let refuse = |message: String| ProviderError::Protocol {
            provider: KIND,
            message: format!("cannot update contact {native}: {message}"),
        };
        let mut body = map::update_body(patch).map_err(refuse)?;
        self.recheck_merge(native, &body).await?;
        if self.hmac_token.is_some() {
            let identifier = self.identifier_of(native).await?;
            if let Some((hash, identifier)) = self.hmac_pair(identifier) {
                body.identifier = Some(identifier);
                body.identifier_hash = Some(hash);
            }
        }
        let url = self.base.http.url(&api::public_contact_path(
            self.inbox_identifier()?,
            &patch.update_ref,
        ))?;
        let record: ContactRecord = self
            .base
            .http
            .send_json_once("update contact", || {
                self.base
                    .http
                    .request(Method::PATCH, url.clone())
                    .json(&body)
            })
            .await
            .map_err(|e| self.hmac_error(self.redact(e), "update contact"))?;
        if record.id.to_string() != *native {
            let what = body
                .field_names()
                .into_iter()
                .filter(|f| matches!(*f, "email" | "phone_number"))
                .collect::<Vec<_>>()
                .join(" or ");
            self.identifiers().remove(native.as_str());
            return Err(ProviderError::Rejected {
                provider: KIND,
                operation: "update contact",
                status: 200,
                message: format!(
                    "Chatwoot merged contact {native} into contact {} (the {} written belonged to it); contact {native} no longer exists, review contact {}",
                    record.id,
                    if what.is_empty() { "value" } else { what.as_str() },
                    record.id
                ),
            });
        }
        self.remember_identifier(&record);
        let mut contact = map::to_contact(&record, self.inbox_id, &self.base.normalizer);
        // The public record has no contact_inboxes: the session just used still addresses it.
        contact.update_ref = Some(patch.update_ref.clone());
        contact.write_blocked = None;
        let missing = map::unstored(&body, &contact, &self.base.normalizer);
        if !missing.is_empty() {
            return Err(ProviderError::Rejected {
                provider: KIND,
                operation: "update contact",
                status: 200,
                message: format!(
                    "Chatwoot answered 200 but did not store {} of contact {native}",
                    missing.join(", ")
                ),
            });
        }
        Ok(contact)
    }
}

impl Provider for ChatwootClient {
    fn base(&self) -> &ClientBase {
        &self.base
    }

    fn base_mut(&mut self) -> &mut ClientBase {
        &mut self.base
    }

    /// Lists the first page (token and account), reads the inbox (`inbox_id` exists in the
    /// account) and, in public mode, checks the public API (inbox identifier of an API inbox,
    /// and HMAC token) with a contact of the first page.
    #[tracing::instrument(level = "debug", skip_all, fields(provider = %KIND), err(level = "debug"))]
    async fn healthcheck(&self) -> Result<(), ProviderError> {
        self.check().await.map(|_| ())
    }

    /// Pages are numbered from 1 and hold 15 contacts (fixed by Chatwoot). The cursor is
    /// `"<next page>:<contacts seen so far>"`, so the listing stops as soon as every contact
    /// of `meta.count` was seen, without asking for an empty page.
    #[tracing::instrument(level = "debug", skip_all, fields(provider = %KIND, cursor = cursor.unwrap_or("1:0")), err(level = "debug"))]
    async fn list_page(&self, cursor: Option<&str>) -> Result<Page, ProviderError> {
        let (page, seen) = parse_cursor(cursor)?;
        let list = self.fetch_page(page, None).await?;
        let contacts: Vec<Contact> = list
            .payload
            .iter()
            .map(|rec| {
                self.remember_identifier(rec);
                map::to_contact_for(rec, self.inbox_id, self.update_api, &self.base.normalizer)
            })
            .collect();
        let seen = seen.saturating_add(contacts.len() as u64);
        let next = (!contacts.is_empty() && seen < list.meta.count)
            .then(|| format!("{}:{seen}", page.saturating_add(1)));
        Ok(Page {
            contacts,
            next,
            total: Some(list.meta.count),
        })
    }

    /// In application mode, reads labels as tags (one filtered listing per label; see `read_labels`).
    async fn finish_listing(&self, listing: &mut Listing) -> Result<(), ProviderError> {
        match self.update_api {
            ChatwootUpdateApi::Application => self.read_labels(listing).await,
            ChatwootUpdateApi::Public => Ok(()),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = %KIND, record = %patch.record), err(level = "debug"))]
    async fn apply(&self, patch: &Patch) -> Result<Contact, ProviderError> {
        if patch.record.provider != KIND {
            return Err(ProviderError::Protocol {
                provider: KIND,
                message: format!(
                    "cannot update contact {}: the patch is for a {} record",
                    patch.record.native, patch.record.provider
                ),
            });
        }
        match self.update_api {
            ChatwootUpdateApi::Application => self.apply_application(patch).await,
            ChatwootUpdateApi::Public => self.apply_public(patch).await,
        }
    }

    /// `POST /api/v1/accounts/{account_id}/contacts` with the configured `inbox_id`, sent once
    /// ([`ProviderHttp::send_json_once`](crate::provider::http::ProviderHttp::send_json_once)): Chatwoot creates the contact and its session in that
    /// inbox in one transaction (`create` in
    /// `app/controllers/api/v1/accounts/contacts_controller.rb`, `ContactInboxBuilder`). Needs
    /// one of e-mail, phone or identifier (else the contact would not even be listed). Labels
    /// planned for it are set afterwards through the labels endpoint; should that fail, the
    /// contact exists without them and the next sync plans the labels as an update.
    async fn create(&self, new: &NewContact) -> Result<Created, ProviderError> {
        let (body, labels) =
            map::create_body(new, self.inbox_id).map_err(|message| ProviderError::Protocol {
                provider: KIND,
                message: format!("cannot create a contact: {message}"),
            })?;
        let url = self.base.http.url(&api::list_path(&self.account_id))?;
        let created: api::Created = self
            .base
            .http
            .send_json_once("create contact", || {
                self.base
                    .http
                    .request(Method::POST, url.clone())
                    .header(api::ACCESS_TOKEN_HEADER, self.base.auth.clone())
                    .json(&body)
            })
            .await?;
        let rec = created.payload.contact;
        self.remember_identifier(&rec);
        let mut contact =
            map::to_contact_for(&rec, self.inbox_id, self.update_api, &self.base.normalizer);
        if self.update_api == ChatwootUpdateApi::Public && contact.update_ref.is_none() {
            // The create answer names the session even when the contact view omits it.
            if let Some(source_id) = created
                .payload
                .contact_inbox
                .and_then(|ci| ci.source_id)
                .filter(|s| !s.is_empty())
            {
                contact.update_ref = Some(source_id.into());
                contact.write_blocked = None;
            }
        }
        if let Some(labels) = labels {
            let native = rec.id.to_string();
            let got: LabelList = self
                .write_app(
                    "set labels",
                    Method::POST,
                    &api::labels_path(&self.account_id, &native),
                    &api::SetLabels { labels },
                )
                .await
                .map_err(|e| ProviderError::Rejected {
                    provider: KIND,
                    operation: "set labels",
                    status: 0,
                    message: format!(
                        "contact {native} was created, but its labels could not be set ({e}); the next sync sets them"
                    ),
                })?;
            contact.tags = got.payload.into_iter().collect();
        }
        Ok(Created::New(contact))
    }

    /// Chatwoot has no lookup by key worth a request: the run's fresh listing answers it.
    async fn find_by_key(&self, _key: &LookupKey) -> Result<Option<Vec<Contact>>, ProviderError> {
        Ok(None)
    }
}

/// Reads a cursor: `None` is page 1; otherwise `"<page>:<seen>"` (a bare page number is
/// accepted too).
fn parse_cursor(cursor: Option<&str>) -> Result<(u64, u64), ProviderError> {
    let Some(cursor) = cursor else {
        return Ok((1, 0));
    };
    let bad = || ProviderError::Protocol {
        provider: KIND,
        message: format!("invalid listing cursor {cursor:?}"),
    };
    let (page, seen) = cursor.split_once(':').unwrap_or((cursor, "0"));
    let page: u64 = page.parse().map_err(|_| bad())?;
    let seen: u64 = seen.parse().map_err(|_| bad())?;
    if page == 0 {
        return Err(bad());
    }
    Ok((page, seen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        assert_eq!(parse_cursor(None).expect("first"), (1, 0));
        assert_eq!(parse_cursor(Some("3:30")).expect("third"), (3, 30));
        assert_eq!(parse_cursor(Some("2")).expect("bare"), (2, 0));
        assert!(parse_cursor(Some("0:0")).is_err());
        assert!(parse_cursor(Some("x")).is_err());
    }

    #[test]
    fn rules_match_the_application_api() {
        let known: BTreeSet<String> = ["vip".to_owned()].into();
        let r = field_rules_for(ChatwootUpdateApi::Application, &known);
        assert_eq!(r.rule(Field::Tags).must_pre_exist.as_ref(), Some(&known));
        assert!(r.can_write(Field::Name));
        assert!(r.rule(Field::Email).unique_per_account);
        assert!(r.rule(Field::Email).clearable);
        assert!(r.can_write(Field::ExternalId));
        assert!(r.rule(Field::ExternalId).unique_per_account);
        assert!(r.can_write(Field::Tags));
        assert!(r.rule(Field::CustomFields).clearable);
        assert!(!r.supports(Field::AvatarUrl));
        assert!(!r.supports(Field::Username));
    }

    #[test]
    fn rules_match_the_public_api() {
        let r = field_rules_for(ChatwootUpdateApi::Public, &BTreeSet::new());
        assert!(r.can_write(Field::Name));
        assert!(r.rule(Field::Email).unique_per_account);
        assert!(r.rule(Field::Phone).unique_per_account);
        assert!(!r.rule(Field::Email).clearable);
        assert!(!r.can_write(Field::ExternalId));
        assert!(r.supports(Field::ExternalId));
        assert!(!r.supports(Field::AvatarUrl));
        assert!(!r.supports(Field::Tags));
        assert!(!r.supports(Field::Username));
    }
}
