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
use crate::model::{Contact, Field, Normalizer, Patch, ProviderKind};
use crate::provider::base::{ClientBase, Credential};
use crate::provider::rules::{FieldRule, Format};
use crate::provider::{FieldRules, Page, Provider, ProviderError};

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

    fn typed(&self) -> MutexGuard<'_, HashMap<String, Map<String, Value>>> {
        // Plain data, never held across an await: a poisoned lock still holds usable values.
        self.typed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Provider for PrivyClient {
    fn base(&self) -> &ClientBase {
        &self.base
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

    /// One `PATCH` with every change (an empty patch reads the record instead).
    ///
    /// A 422 on a patch that sets the e-mail or phone is checked against the record: when the
    /// record already holds every value of the patch, an earlier attempt whose answer was lost
    /// (a timeout or a dropped connection, then a retry) did the write, and the patch succeeded.
    async fn create(
        &self,
        _new: &crate::model::NewContact,
    ) -> Result<crate::provider::Created, ProviderError> {
        // Placeholder until the create endpoint lands (issue 10).
        Err(ProviderError::Protocol {
            provider: crate::model::ProviderKind::Privy,
            message: "creating contacts is not supported yet".into(),
        })
    }

    async fn find_by_key(
        &self,
        _key: &crate::provider::LookupKey,
    ) -> Result<Option<Vec<Contact>>, ProviderError> {
        Ok(None)
    }

    async fn apply(&self, patch: &Patch) -> Result<Contact, ProviderError> {
        let typed = self.typed().get(&patch.update_ref).cloned();
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
