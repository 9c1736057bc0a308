//! The Callbell client: listing, updates and the health check over the shared HTTP layer.

use std::sync::Arc;

use reqwest::header::AUTHORIZATION;
use reqwest::{Method, StatusCode};

use super::api::{self, ContactEnvelope, ContactsPage, ErrorBody};
use super::map::{self, CreateContext};
use crate::budget::RateBudget;
use crate::config::{ProviderConfig, ProviderSpecific};
use std::collections::BTreeSet;

use crate::model::{Contact, NewContact, Normalizer, Patch, ProviderKind};
use crate::provider::base::{wrong_settings, ClientBase, Credential};
use crate::provider::{Created, LookupKey, Page, Provider, ProviderError};

const KIND: ProviderKind = ProviderKind::Callbell;

/// Callbell adapter: `GET /contacts?page=N` to list, `PATCH /contacts/{uuid}` to update, Bearer
/// authentication. Callbell sends no rate-limit headers and no `Retry-After`, so the budget
/// relies on the configured quota (300 requests/s) and backs off on 429.
pub struct CallbellClient {
    base: ClientBase,
    /// The `source` sent with a create (config `create_source`).
    create_source: String,
    /// Tags and custom-field keys that exist in the account: a create may name only these.
    known_tags: BTreeSet<String>,
    known_custom_fields: BTreeSet<String>,
}

impl std::fmt::Debug for CallbellClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbellClient")
            .field("http", &self.base.http)
            .field("rules", &self.base.rules)
            .field("create_source", &self.create_source)
            .finish_non_exhaustive()
    }
}

impl CallbellClient {
    /// Builds the client from a validated config whose token is resolved.
    ///
    /// # Errors
    /// The token cannot be read or cannot be sent in a header, or the config is not a Callbell
    /// section.
    pub fn new(
        config: &ProviderConfig,
        normalizer: Normalizer,
        budget: Arc<RateBudget>,
    ) -> Result<Self, ProviderError> {
        let ProviderSpecific::Callbell {
            known_tags,
            known_custom_fields,
            create_source,
        } = &config.specific
        else {
            return Err(wrong_settings(KIND));
        };
        Ok(CallbellClient {
            base: ClientBase::new(
                config,
                normalizer,
                budget,
                map::rules(known_tags.clone(), known_custom_fields.clone()),
                parse_error,
                Credential::Bearer,
            )?,
            create_source: create_source.clone(),
            known_tags: known_tags.clone(),
            known_custom_fields: known_custom_fields.clone(),
        })
    }

    /// One page of the listing, as the API returns it.
    async fn fetch_page(
        &self,
        operation: &'static str,
        page: u64,
    ) -> Result<ContactsPage, ProviderError> {
        let url = self.base.http.url(&[api::CONTACTS])?;
        self.base
            .http
            .send_json(operation, || {
                self.base
                    .http
                    .request(Method::GET, url.clone())
                    .header(AUTHORIZATION, self.base.auth.clone())
                    .query(&[(api::PAGE_PARAM, page)])
            })
            .await
    }
}

impl Provider for CallbellClient {
    fn base(&self) -> &ClientBase {
        &self.base
    }

    fn base_mut(&mut self) -> &mut ClientBase {
        &mut self.base
    }

    async fn healthcheck(&self) -> Result<(), ProviderError> {
        // Callbell has no page-size parameter: the first page is the cheapest list call.
        self.fetch_page("healthcheck", 1).await.map(|_| ())
    }

    /// The cursor is `<page>:<uuid>`: the page number to fetch (1-based) and the last uuid of
    /// the page before it. Callbell states no total and no page size, so the listing ends at the
    /// first empty page; a page that ends on the same record as the one before means the
    /// `page` parameter is being ignored, which would otherwise list forever.
    async fn list_page(&self, cursor: Option<&str>) -> Result<Page, ProviderError> {
        let (page, previous_last) = match cursor {
            None => (1, None),
            Some(c) => parse_cursor(c).ok_or_else(|| ProviderError::Protocol {
                provider: KIND,
                message: format!("invalid list cursor {c:?} (expected `<page>:<uuid>`)"),
            })?,
        };
        let body = self.fetch_page("list contacts", page).await?;
        let last = body.contacts.last().map(|c| c.uuid.clone());
        if let (Some(last), Some(previous)) = (&last, previous_last) {
            if last == previous {
                return Err(ProviderError::Protocol {
                    provider: KIND,
                    message: format!(
                        "page {page} repeats the previous page (the `page` parameter seems ignored); listing stopped"
                    ),
                });
            }
        }
        let next = last.map(|uuid| format!("{}:{uuid}", page + 1));
        let contacts = body
            .contacts
            .into_iter()
            .map(|dto| map::to_contact(dto, &self.base.normalizer))
            .collect();
        Ok(Page {
            contacts,
            next,
            total: None,
        })
    }

    /// `POST /contacts`, sent once (see [`ProviderHttp::send_json_once`](crate::provider::http::ProviderHttp::send_json_once)). The answer is
    /// `{"contact": …}`, an object or a one-element array (`post_contacts.md` shows the array).
    #[tracing::instrument(level = "debug", skip_all, fields(provider = %KIND), err(level = "debug"))]
    async fn create(&self, new: &NewContact) -> Result<Created, ProviderError> {
        let ctx = CreateContext {
            source: &self.create_source,
            known_tags: &self.known_tags,
            known_custom_fields: &self.known_custom_fields,
        };
        let body = map::create_body(new, ctx).map_err(|message| ProviderError::Protocol {
            provider: KIND,
            message: format!("not sending the create: {message}"),
        })?;
        let url = self.base.http.url(&[api::CONTACTS])?;
        let envelope: ContactEnvelope = self
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
        let dto = envelope
            .into_contact()
            .map_err(|message| ProviderError::Decode {
                provider: KIND,
                operation: "create contact",
                message,
            })?;
        Ok(Created::New(map::to_contact(dto, &self.base.normalizer)))
    }

    /// A phone is looked up with `GET /contacts/phone/{digits}` (`get_contact_by_phone.md`,
    /// on the main WhatsApp channel); a 404 means no contact holds it. Callbell has no e-mail,
    /// so no contact can hold one.
    #[tracing::instrument(level = "debug", skip_all, fields(provider = %KIND), err(level = "debug"))]
    async fn find_by_key(&self, key: &LookupKey) -> Result<Option<Vec<Contact>>, ProviderError> {
        let e164 = match key {
            LookupKey::Phone(p) => p,
            LookupKey::Email(_) => return Ok(Some(Vec::new())),
        };
        let digits = map::phone_identifier(e164).map_err(|message| ProviderError::Protocol {
            provider: KIND,
            message: format!("cannot look the phone up: {message}"),
        })?;
        let url = self.base.http.url(&[api::CONTACTS, api::PHONE, &digits])?;
        let found: Result<ContactEnvelope, ProviderError> = self
            .base
            .http
            .send_json("look up contact by phone", || {
                self.base
                    .http
                    .request(Method::GET, url.clone())
                    .header(AUTHORIZATION, self.base.auth.clone())
            })
            .await;
        match found {
            Ok(envelope) => {
                let dto = envelope
                    .into_contact()
                    .map_err(|message| ProviderError::Decode {
                        provider: KIND,
                        operation: "look up contact by phone",
                        message,
                    })?;
                Ok(Some(vec![map::to_contact(dto, &self.base.normalizer)]))
            }
            Err(ProviderError::Rejected { status: 404, .. }) => Ok(Some(Vec::new())),
            Err(e) => Err(e),
        }
    }

    async fn apply(&self, patch: &Patch) -> Result<Contact, ProviderError> {
        let body = map::to_update(patch).map_err(|message| ProviderError::Protocol {
            provider: KIND,
            message: format!("not sent to {}: {message}", patch.record),
        })?;
        let url = self.base.http.url(&[api::CONTACTS, &patch.update_ref])?;
        let envelope: ContactEnvelope = self
            .base
            .http
            .send_json("update contact", || {
                self.base
                    .http
                    .request(Method::PATCH, url.clone())
                    .header(AUTHORIZATION, self.base.auth.clone())
                    .json(&body)
            })
            .await?;
        let dto = envelope
            .into_contact()
            .map_err(|message| ProviderError::Decode {
                provider: KIND,
                operation: "update contact",
                message,
            })?;
        Ok(map::to_contact(dto, &self.base.normalizer))
    }
}

/// Splits a `<page>:<uuid>` cursor (the uuid may itself hold `:`).
fn parse_cursor(cursor: &str) -> Option<(u64, Option<&str>)> {
    let (page, uuid) = cursor.split_once(':')?;
    let page = page.parse::<u64>().ok().filter(|n| *n >= 2)?;
    Some((page, Some(uuid)))
}

/// Longest provider error text kept in a message.
const MAX_ERROR_CHARS: usize = 300;

/// Callbell documents status classes only: use the body's `error`/`message` text when it has
/// one, otherwise the status reason. Raw bodies (possibly HTML) are never echoed.
fn parse_error(status: StatusCode, body: &[u8]) -> String {
    let text = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.message())
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("unexpected status")
                .to_owned()
        });
    if text.chars().count() > MAX_ERROR_CHARS {
        let cut: String = text.chars().take(MAX_ERROR_CHARS).collect();
        format!("{cut}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_carry_page_and_previous_uuid() {
        assert_eq!(parse_cursor("2:abc"), Some((2, Some("abc"))));
        assert_eq!(parse_cursor("3:a:b"), Some((3, Some("a:b"))));
        assert_eq!(parse_cursor("2"), None);
        assert_eq!(parse_cursor("1:abc"), None);
        assert_eq!(parse_cursor("x:abc"), None);
    }

    #[test]
    fn error_text_prefers_the_body_then_the_status() {
        assert_eq!(
            parse_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                br#"{"error":"Tag 'x' does not exist"}"#
            ),
            "Tag 'x' does not exist"
        );
        assert_eq!(
            parse_error(StatusCode::BAD_GATEWAY, b"<html>oops</html>"),
            "Bad Gateway"
        );
        let long = format!(r#"{{"error":"{}"}}"#, "x".repeat(1000));
        assert!(
            parse_error(StatusCode::BAD_REQUEST, long.as_bytes())
                .chars()
                .count()
                <= 301
        );
    }
}
