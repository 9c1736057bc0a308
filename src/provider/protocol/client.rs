//! The Protocol client: listing with `limit`/`starting_after`, one `PATCH` (or legacy `PUT`) per
//! record, and the field rules of the configured update endpoint.

use std::sync::Arc;

use reqwest::header::AUTHORIZATION;
use reqwest::Method;

use super::api::{self, ContactDto, ListResponse};
use super::map::{self, UpdateMode};
use crate::budget::RateBudget;
use crate::config::{ProviderConfig, ProviderSpecific};
use crate::model::{Contact, Field, NewContact, Normalizer, Patch, ProviderKind};
use crate::provider::base::{wrong_settings, ClientBase, Credential};
use crate::provider::rules::{FieldRule, Format};
use crate::provider::{Created, FieldRules, LookupKey, Page, Provider, ProviderError};

const KIND: ProviderKind = ProviderKind::Protocol;

/// Why legacy mode cannot write a field, shown in reports.
const LEGACY_READ_ONLY: &str = "legacy PUT mode writes display_name only";

/// The Protocol adapter.
#[derive(Debug)]
pub struct ProtocolClient {
    base: ClientBase,
    mode: UpdateMode,
    /// Records per list page (1..=100; validated in config).
    page_size: u32,
}

impl ProtocolClient {
    /// Builds the adapter from a validated config whose token is resolved.
    ///
    /// # Errors
    /// The config is not a Protocol section, its token cannot be read or put in a header, or
    /// the HTTP client cannot be built.
    pub fn new(
        config: &ProviderConfig,
        normalizer: Normalizer,
        budget: Arc<RateBudget>,
    ) -> Result<Self, ProviderError> {
        let ProviderSpecific::Protocol {
            legacy_put,
            page_size,
        } = &config.specific
        else {
            return Err(wrong_settings(KIND));
        };
        let mode = if *legacy_put {
            UpdateMode::LegacyPut
        } else {
            UpdateMode::Patch
        };
        Ok(ProtocolClient {
            base: ClientBase::new(
                config,
                normalizer,
                budget,
                field_rules(mode),
                api::parse_error,
                Credential::Bearer,
            )?,
            mode,
            page_size: (*page_size).clamp(1, api::MAX_LIMIT),
        })
    }

    /// `GET /v1/contacts?limit=N[&starting_after=ID]`.
    async fn fetch_page(
        &self,
        limit: u32,
        starting_after: Option<&str>,
        operation: &'static str,
    ) -> Result<ListResponse, ProviderError> {
        let url = self.base.http.url(&api::CONTACTS)?;
        let mut query = vec![(api::LIMIT, limit.to_string())];
        if let Some(after) = starting_after {
            query.push((api::STARTING_AFTER, after.to_owned()));
        }
        self.base
            .http
            .send_json(operation, || {
                self.base
                    .http
                    .request(Method::GET, url.clone())
                    .header(AUTHORIZATION, self.base.auth.clone())
                    .query(&query)
            })
            .await
    }
}

/// What the configured update endpoint may write.
///
/// `PATCH` writes display_name, username, phone_number and avatar_url; none of them can be
/// cleared (the page documents no way to, so a `null` is never sent). Phones are written as
/// E.164 (Protocol accepts any format; E.164 is unambiguous). Legacy `PUT` writes display_name
/// only; the other three are read and matched on but never written. Protocol has no e-mail,
/// tags, custom fields or external id.
pub fn field_rules(mode: UpdateMode) -> FieldRules {
    let name = (
        Field::Name,
        FieldRule::writable()
            .not_clearable()
            .formats(&[Format::MaxLen(255)]),
    );
    let others = match mode {
        UpdateMode::Patch => [
            (Field::Username, FieldRule::writable().not_clearable()),
            (
                Field::Phone,
                FieldRule::writable()
                    .not_clearable()
                    .formats(&[Format::E164]),
            ),
            (Field::AvatarUrl, FieldRule::writable().not_clearable()),
        ],
        UpdateMode::LegacyPut => [
            (Field::Username, FieldRule::read_only(LEGACY_READ_ONLY)),
            (Field::Phone, FieldRule::read_only(LEGACY_READ_ONLY)),
            (Field::AvatarUrl, FieldRule::read_only(LEGACY_READ_ONLY)),
        ],
    };
    FieldRules::new(KIND, std::iter::once(name).chain(others))
        .with_create(&super::CREATE_FIELDS, super::CREATE_REQUIRES)
}

impl Provider for ProtocolClient {
    fn base(&self) -> &ClientBase {
        &self.base
    }

    fn base_mut(&mut self) -> &mut ClientBase {
        &mut self.base
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = %KIND), err(level = "debug"))]
    async fn healthcheck(&self) -> Result<(), ProviderError> {
        self.fetch_page(1, None, "healthcheck").await.map(|_| ())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = %KIND, cursor = ?cursor), err(level = "debug"))]
    async fn list_page(&self, cursor: Option<&str>) -> Result<Page, ProviderError> {
        let page = self
            .fetch_page(self.page_size, cursor, "list contacts")
            .await?;
        let next = match (page.has_more, page.data.last()) {
            (false, _) => None,
            (true, Some(last)) => Some(last.id.clone()),
            (true, None) => {
                return Err(ProviderError::Protocol {
                    provider: KIND,
                    message: "the contact list says it has more records but returned an empty page; the listing cannot continue".into(),
                })
            }
        };
        let contacts = page
            .data
            .iter()
            .map(|dto| map::to_contact(dto, &self.base.normalizer))
            .collect();
        Ok(Page {
            contacts,
            next,
            total: None,
        })
    }

    /// `POST /v1/contacts`, sent once (see [`ProviderHttp::send_json_once`](crate::provider::http::ProviderHttp::send_json_once)).
    #[tracing::instrument(level = "debug", skip_all, fields(provider = %KIND), err(level = "debug"))]
    async fn create(&self, new: &NewContact) -> Result<Created, ProviderError> {
        let body = map::create_body(new).map_err(|why| ProviderError::Protocol {
            provider: KIND,
            message: format!("not sending the create: {why}"),
        })?;
        let url = self.base.http.url(&api::CONTACTS)?;
        let dto: ContactDto = self
            .base
            .http
            .send_json_once("create contact", || {
                self.base
                    .http
                    .request(Method::POST, url.clone())
                    .header(AUTHORIZATION, self.base.auth.clone())
                    .json(&body)
            })
            .await?;
        Ok(Created::New(map::to_contact(&dto, &self.base.normalizer)))
    }

    /// Protocol has no lookup by phone or username: the run's fresh listing is the answer.
    async fn find_by_key(&self, _key: &LookupKey) -> Result<Option<Vec<Contact>>, ProviderError> {
        Ok(None)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = %KIND, record = %patch.update_ref), err(level = "debug"))]
    async fn apply(&self, patch: &Patch) -> Result<Contact, ProviderError> {
        let body = map::update_body(patch, self.mode).map_err(|why| ProviderError::Protocol {
            provider: KIND,
            message: format!("not sending the update of {}: {why}", patch.record),
        })?;
        let url = self
            .base
            .http
            .url(&[api::CONTACTS[0], api::CONTACTS[1], &patch.update_ref])?;
        let dto: ContactDto = if body.is_empty() {
            // Nothing to change: read the record instead of sending an empty write.
            self.base
                .http
                .send_json("retrieve contact", || {
                    self.base
                        .http
                        .request(Method::GET, url.clone())
                        .header(AUTHORIZATION, self.base.auth.clone())
                })
                .await?
        } else {
            let (method, operation) = match self.mode {
                UpdateMode::Patch => (Method::PATCH, "update contact"),
                UpdateMode::LegacyPut => (Method::PUT, "update contact (legacy PUT)"),
            };
            self.base
                .http
                .send_json(operation, || {
                    self.base
                        .http
                        .request(method.clone(), url.clone())
                        .header(AUTHORIZATION, self.base.auth.clone())
                        .json(&body)
                })
                .await?
        };
        Ok(map::to_contact(&dto, &self.base.normalizer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FieldValue, RecordId, Value};
    use crate::provider::rules::{Mutability, NoHolders, RuleId};

    fn s(v: &str) -> FieldValue {
        FieldValue::Scalar(Some(Value::plain(v)))
    }

    #[test]
    fn patch_mode_writes_four_fields_and_clears_none() {
        let rules = field_rules(UpdateMode::Patch);
        let id = RecordId::new(KIND, "c1");
        for f in [Field::Name, Field::Username, Field::Phone, Field::AvatarUrl] {
            assert!(rules.can_write(f), "{f}");
            let a = rules.admit(
                &id,
                f,
                &s("+14155550101"),
                &FieldValue::Scalar(None),
                &NoHolders,
            );
            assert_eq!(a.blocked[0].rule, RuleId::NotClearable, "{f}");
        }
        for f in [
            Field::Email,
            Field::ExternalId,
            Field::Tags,
            Field::CustomFields,
        ] {
            assert_eq!(rules.rule(f).mutability, Mutability::Unsupported, "{f}");
        }
        let national = rules.admit(
            &id,
            Field::Phone,
            &FieldValue::Scalar(None),
            &s("(415) 555-0101"),
            &NoHolders,
        );
        assert_eq!(national.blocked[0].rule, RuleId::InvalidFormat);
    }

    #[test]
    fn legacy_mode_writes_display_name_only() {
        let rules = field_rules(UpdateMode::LegacyPut);
        let id = RecordId::new(KIND, "c1");
        assert!(rules.can_write(Field::Name));
        for f in [Field::Username, Field::Phone, Field::AvatarUrl] {
            assert!(rules.supports(f) && !rules.can_write(f), "{f}");
            let a = rules.admit(
                &id,
                f,
                &FieldValue::Scalar(None),
                &s("+14155550101"),
                &NoHolders,
            );
            assert_eq!(a.blocked[0].rule, RuleId::ReadOnly, "{f}");
            assert!(a.blocked[0].detail.contains(LEGACY_READ_ONLY));
        }
    }
}
