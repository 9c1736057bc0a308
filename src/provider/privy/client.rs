//! The Privy client: listing, updating and the field rules of `PATCH /v1/contacts/{id}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use reqwest::header::AUTHORIZATION;
use reqwest::Method;
use serde_json::{Map, Value};
use url::Url;

use super::api::{self, ContactDto, ContactEnvelope, ListResponse, CONTACTS, MAX_PAGE_SIZE};
use super::map;
use crate::budget::RateBudget;
use crate::config::{ProviderConfig, ProviderSpecific};
use crate::model::{Contact, Field, FieldValue, NewContact, Normalizer, Patch, ProviderKind};
use crate::provider::base::{ClientBase, Credential};
use crate::provider::rules::{FieldRule, Format};
use crate::provider::{Created, FieldRules, LookupKey, Page, Provider, ProviderError};

const PRIVY: ProviderKind = ProviderKind::Privy;

/// Talks to one Privy account.
pub struct PrivyClient {
    base: ClientBase,
    page_size: u32,
    /// Non-string custom fields per record id (see [`map::typed_custom_fields`]), so a write
    /// that replaces the whole map keeps a number a number. Only records holding such values
    /// have an entry.
    typed: Mutex<HashMap<String, Map<String, Value>>>,
}

impl std::fmt::Debug for PrivyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivyClient")
            .field("http", &self.base.http)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

/// What `PATCH /v1/contacts/{id}` may write.
///
/// - Name: written as `first_name` (given name) and `last_name` (family name = last word; null
///   for a one-word name). Not cleared: the update page documents the parts as strings and
///   never as removable.
/// - Email and phone: only while the record's value is null, never changed or cleared once
///   set; the phone must be E.164 and the e-mail well formed.
/// - Tags and custom fields: each write replaces the whole value, so it carries the full merged
///   set or map; removing elements is therefore possible. Custom fields are flat.
/// - Everything else (avatar, username, external id) Privy does not have.
pub fn privy_rules() -> FieldRules {
    FieldRules::new(
        PRIVY,
        [
            (Field::Name, FieldRule::writable().not_clearable()),
            (
                Field::Email,
                FieldRule::writable().set_once().formats(&[Format::Email]),
            ),
            (
                Field::Phone,
                FieldRule::writable().set_once().formats(&[Format::E164]),
            ),
            (Field::Tags, FieldRule::writable()),
            (Field::CustomFields, FieldRule::writable()),
        ],
    )
    .with_create(&super::CREATE_FIELDS, super::CREATE_REQUIRES)
}

impl PrivyClient {
    /// A client for the account `config` describes. The token must already be resolved.
    ///
    /// # Errors
    /// The token cannot be read or sent in a header, or the HTTP client cannot be built.
    pub fn new(
        config: &ProviderConfig,
        normalizer: Normalizer,
        budget: Arc<RateBudget>,
    ) -> Result<Self, ProviderError> {
        let page_size = match &config.specific {
            ProviderSpecific::Privy { page_size, .. } => (*page_size).clamp(1, MAX_PAGE_SIZE),
            _ => MAX_PAGE_SIZE,
        };
        let mut base = ClientBase::new(
            config,
            normalizer,
            budget,
            privy_rules(),
            api::parse_error,
            Credential::Bearer,
        )?;
        base.http = base.http.with_quota_headers(api::quota_report);
        Ok(PrivyClient {
            base,
            page_size,
            typed: Mutex::new(HashMap::new()),
        })
    }

    async fn list(
        &self,
        operation: &'static str,
        page: u64,
        per_page: u32,
    ) -> Result<ListResponse, ProviderError> {
        let url = self.base.http.url(&CONTACTS)?;
        self.base
            .http
            .send_json(operation, || {
                self.base
                    .http
                    .request(Method::GET, url.clone())
                    .header(AUTHORIZATION, self.base.auth.clone())
                    .query(&[("page", page), ("per_page", u64::from(per_page))])
            })
            .await
    }

    /// Maps records and remembers their typed custom fields.
    fn mapped(&self, records: &[ContactDto]) -> Vec<Contact> {
        let mut typed = self.typed();
        records
            .iter()
            .map(|dto| {
                let t = map::typed_custom_fields(dto);
                if t.is_empty() {
                    typed.remove(&dto.id);
                } else {
                    typed.insert(dto.id.clone(), t);
                }
                map::to_contact(dto, &self.base.normalizer)
            })
            .collect()
    }

    /// Maps one record (see [`Self::mapped`]).
    fn mapped_one(&self, record: &ContactDto) -> Contact {
        self.mapped(std::slice::from_ref(record))
            .pop()
            .unwrap_or_else(|| map::to_contact(record, &self.base.normalizer))
    }

    /// `GET /v1/contacts/{id}`.
    async fn read(&self, url: Url) -> Result<Contact, ProviderError> {
        let envelope: ContactEnvelope = self
            .base
            .http
            .send_json("read contact", || {
                self.base
                    .http
                    .request(Method::GET, url.clone())
                    .header(AUTHORIZATION, self.base.auth.clone())
            })
            .await?;
        Ok(self.mapped_one(&envelope.data))
    }

    /// `GET /v1/contacts?email=…` or `?phone_number=…`: the live contacts holding `key`.
    ///
    /// Only records that really hold the key are returned: a server that ignored the filter
    /// would otherwise answer with the first page of every contact, and one of those would be
    /// linked to the wrong person. The e-mail is sent case-folded (the lookup key); should Privy
    /// compare case-sensitively and miss a record, a create that follows answers 409 and links
    /// it, so a miss cannot make a duplicate.
    async fn filter(&self, key: &LookupKey) -> Result<Vec<Contact>, ProviderError> {
        let (param, value) = match key {
            LookupKey::Email(e) => (api::EMAIL_FILTER, e.as_str()),
            LookupKey::Phone(p) => (api::PHONE_FILTER, p.as_str()),
        };
        let url = self.base.http.url(&CONTACTS)?;
        let per_page = MAX_PAGE_SIZE.to_string();
        let resp: ListResponse = self
            .base
            .http
            .send_json("look up contact", || {
                self.base
                    .http
                    .request(Method::GET, url.clone())
                    .header(AUTHORIZATION, self.base.auth.clone())
                    .query(&[
                        (param, value),
                        ("page", "1"),
                        ("per_page", per_page.as_str()),
                    ])
            })
            .await?;
        Ok(self
            .mapped(&resp.data)
            .into_iter()
            .filter(|c| holds_key(c, key))
            .collect())
    }

    /// Finds the contact a 409 on create refers to: the id the answer names, when it has one
    /// and that contact holds one of the create's keys; otherwise the list filter, e-mail
    /// first, then phone.
    async fn conflicting(
        &self,
        new: &NewContact,
        message: &str,
    ) -> Result<Option<Contact>, ProviderError> {
        let keys = create_keys(new);
        if let Some(id) = api::conflict_id(message) {
            let url = self.base.http.url(&[CONTACTS[0], CONTACTS[1], id])?;
            match self.read(url).await {
                Ok(c) if keys.iter().any(|k| holds_key(&c, k)) => return Ok(Some(c)),
                Ok(c) => {
                    tracing::warn!(provider = %PRIVY, record = %c.id, "The conflict names a contact that holds neither key; looking the keys up instead.");
                }
                Err(ProviderError::Rejected { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for key in &keys {
            if let Some(c) = self.filter(key).await?.into_iter().next() {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    fn typed(&self) -> MutexGuard<'_, HashMap<String, Map<String, Value>>> {
        // Plain data, never held across an await: a poisoned lock still holds usable values.
        self.typed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Provider for PrivyClient {
    fn base(&self) -> &ClientBase {
        &self.base
    }

    fn base_mut(&mut self) -> &mut ClientBase {
        &mut self.base
    }

    async fn healthcheck(&self) -> Result<(), ProviderError> {
        self.list("healthcheck", 1, 1).await.map(|_| ())
    }

    /// The cursor is the next page number; pages hold up to 100 records.
    async fn list_page(&self, cursor: Option<&str>) -> Result<Page, ProviderError> {
        let page = match cursor {
            None => 1,
            Some(c) => c.parse::<u64>().ok().filter(|p| *p >= 1).ok_or_else(|| {
                ProviderError::Protocol {
                    provider: PRIVY,
                    message: format!("{c:?} is not a Privy page cursor"),
                }
            })?,
        };
        let resp = self.list("list contacts", page, self.page_size).await?;
        let next = (page < resp.pagination.total_pages).then(|| (page + 1).to_string());
        Ok(Page {
            contacts: self.mapped(&resp.data),
            next,
            total: Some(resp.pagination.total_count),
        })
    }

    /// `POST /v1/contacts`, sent once (see [`ProviderHttp::send_json_once`](crate::provider::http::ProviderHttp::send_json_once)), never with a
    /// consent field.
    ///
    /// A 409 Conflict means another contact already holds the e-mail or phone (SPEC section
    /// 11): that contact is found (the id in the answer, else the list filter) and returned as
    /// [`Created::Existing`], so it is linked instead of duplicated. A deleted contact holding
    /// the key is restored by Privy and comes back as a new record.
    #[tracing::instrument(level = "debug", skip_all, fields(provider = %PRIVY), err(level = "debug"))]
    async fn create(&self, new: &NewContact) -> Result<Created, ProviderError> {
        let body = map::create_body(new).map_err(|message| ProviderError::Protocol {
            provider: PRIVY,
            message: format!("not sending the create: {message}"),
        })?;
        let url = self.base.http.url(&CONTACTS)?;
        let sent: Result<ContactEnvelope, ProviderError> = self
            .base
            .http
            .send_json_once("create contact", || {
                self.base
                    .http
                    .request(Method::POST, url.clone())
                    .header(AUTHORIZATION, self.base.auth.clone())
                    .json(&body)
            })
            .await;
        match sent {
            Ok(envelope) => Ok(Created::New(self.mapped_one(&envelope.data))),
            Err(ProviderError::Rejected {
                status: 409,
                operation,
                message,
                ..
            }) => match self.conflicting(new, &message).await? {
                Some(existing) => {
                    tracing::debug!(provider = %PRIVY, record = %existing.id, "Create conflicted with an existing contact; linking it.");
                    Ok(Created::Existing(existing))
                }
                None => Err(ProviderError::Rejected {
                    provider: PRIVY,
                    operation,
                    status: 409,
                    message: format!(
                        "{message}; no contact holding the create's e-mail or phone could be found"
                    ),
                }),
            },
            Err(e) => Err(e),
        }
    }

    /// The list filter `GET /v1/contacts?email=` or `?phone_number=` (SPEC section 11).
    #[tracing::instrument(level = "debug", skip_all, fields(provider = %PRIVY), err(level = "debug"))]
    async fn find_by_key(&self, key: &LookupKey) -> Result<Option<Vec<Contact>>, ProviderError> {
        self.filter(key).await.map(Some)
    }

    /// One `PATCH` with every change (an empty patch reads the record instead).
    ///
    /// A 422 on a patch that sets the e-mail or phone is checked against the record: when the
    /// record already holds every value of the patch, an earlier attempt whose answer was lost
    /// (a timeout or a dropped connection, then a retry) did the write, and the patch succeeded.
    async fn apply(&self, patch: &Patch) -> Result<Contact, ProviderError> {
        let typed = self.typed().get(patch.update_ref.as_str()).cloned();
        let body =
            map::update_body(patch, typed.as_ref()).map_err(|message| ProviderError::Protocol {
                provider: PRIVY,
                message: format!("cannot update {}: {message}", patch.record),
            })?;
        let url = self
            .base
            .http
            .url(&[CONTACTS[0], CONTACTS[1], patch.update_ref.as_str()])?;
        if body.is_empty() {
            return self.read(url).await;
        }
        let sent: Result<ContactEnvelope, ProviderError> = self
            .base
            .http
            .send_json("update contact", || {
                self.base
                    .http
                    .request(Method::PATCH, url.clone())
                    .header(AUTHORIZATION, self.base.auth.clone())
                    .json(&body)
            })
            .await;
        match sent {
            Ok(envelope) => Ok(self.mapped_one(&envelope.data)),
            Err(error @ ProviderError::Rejected { status: 422, .. })
                if body.email.is_some() || body.phone_number.is_some() =>
            {
                let current = self.read(url).await?;
                if holds(&current, patch) {
                    tracing::debug!(provider = %PRIVY, record = %patch.record, "Update was rejected but the record already holds it; an earlier attempt wrote it.");
                    Ok(current)
                } else {
                    Err(error)
                }
            }
            Err(error) => Err(error),
        }
    }
}

/// Whether `contact` already holds every value `patch` writes.
fn holds(contact: &Contact, patch: &Patch) -> bool {
    patch
        .changes
        .iter()
        .all(|c| contact.get(c.field).same_as(&c.new))
}

/// The lookup keys a create carries: its e-mail (case-folded) and its phone (E.164), each when
/// valid.
fn create_keys(new: &NewContact) -> Vec<LookupKey> {
    let key = |field| match new.get(field) {
        Some(FieldValue::Scalar(Some(v))) if v.valid() => Some(v.key().to_owned()),
        _ => None,
    };
    key(Field::Email)
        .map(LookupKey::Email)
        .into_iter()
        .chain(key(Field::Phone).map(LookupKey::Phone))
        .collect()
}

/// Whether `contact` holds `key` (compared after normalisation).
fn holds_key(contact: &Contact, key: &LookupKey) -> bool {
    match key {
        LookupKey::Email(e) => contact.email.as_ref().is_some_and(|v| v.key() == *e),
        LookupKey::Phone(p) => contact.phone.as_ref().is_some_and(|v| v.key() == *p),
    }
}
