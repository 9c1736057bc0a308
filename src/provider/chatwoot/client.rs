//! The Chatwoot client: lists through the application API, updates through the public API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use reqwest::Method;

use super::api::{self, ContactList, ContactRecord, ContactShow, PublicContact};
use super::map;
use crate::budget::RateBudget;
use crate::config::{ProviderConfig, ProviderSpecific, Secret};
use crate::model::{Contact, Field, Normalizer, Patch, ProviderKind};
use crate::provider::base::{wrong_settings, ClientBase, Credential};
use crate::provider::rules::{FieldRule, Format};
use crate::provider::{FieldRules, Page, Provider, ProviderError};

const KIND: ProviderKind = ProviderKind::Chatwoot;

/// What Chatwoot's public update endpoint can write (SPEC sections 3 and 9).
///
/// - `name`: written as given; blank values are dropped, so it cannot be cleared; at most 255
///   characters.
/// - `email`, `phone`: unique per account (e-mail case-insensitively). Writing a value another
///   contact holds does not fail: Chatwoot *merges* the contact being updated into that other
///   contact and deletes it. `unique()` makes the reconciler block such a write
///   ("would-merge-contacts") using everything it listed. Blank values are dropped (not
///   clearable); invalid values are silently discarded, so the formats are checked first.
/// - `external_id` (`identifier`): the public update ignores it.
/// - `custom_fields` (`custom_attributes`): merged by key into what Chatwoot holds, and blank
///   values are dropped, so keys can be added or changed but never removed.
/// - `avatar_url`: unsupported. Chatwoot downloads the image and re-hosts it, so the URL read
///   back (`thumbnail`) never equals the URL written, and comparing the two could never
///   converge: every run would write the avatar again.
/// - `tags`: unsupported. Chatwoot's labels are not in the list payload and the public API
///   cannot write them.
/// - `username`: Chatwoot has no such field.
pub fn field_rules() -> FieldRules {
    FieldRules::new(
        KIND,
        [
            (
                Field::Name,
                FieldRule::writable()
                    .not_clearable()
                    .formats(&[Format::MaxLen(255)]),
            ),
            (
                Field::Email,
                FieldRule::writable()
                    .unique()
                    .not_clearable()
                    .formats(&[Format::Email, Format::MaxLen(255)]),
            ),
            (
                Field::Phone,
                FieldRule::writable()
                    .unique()
                    .not_clearable()
                    .formats(&[Format::E164]),
            ),
            (
                Field::ExternalId,
                FieldRule::read_only("Chatwoot's public API ignores identifier"),
            ),
            (
                Field::CustomFields,
                FieldRule::writable()
                    .merge_keys()
                    .formats(&[Format::NonBlank]),
            ),
            (Field::AvatarUrl, FieldRule::unsupported()),
            (Field::Tags, FieldRule::unsupported()),
            (Field::Username, FieldRule::unsupported()),
        ],
    )
}

/// Chatwoot adapter.
///
/// Lists with the application API (`api_access_token`), updates with the public client API of
/// the configured inbox, addressing each contact by its `contact_inbox` `source_id` in that
/// inbox. The inbox identifier is a secret carried in the public API's URL path, so URLs are
/// never logged or put in errors.
pub struct ChatwootClient {
    /// Its `auth` is the application API access token, sent as `api_access_token`.
    base: ClientBase,
    account_id: String,
    inbox_id: u64,
    inbox_identifier: Secret,
    hmac_token: Option<Secret>,
    sort: String,
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
        } = &config.specific
        else {
            return Err(wrong_settings(KIND));
        };
        let inbox_identifier = inbox_identifier
            .resolve()
            .map_err(|m| protocol(format!("inbox_identifier: {m}")))?;
        if matches!(inbox_identifier.expose().trim(), "" | "." | "..") {
            return Err(protocol(
                "the configured inbox_identifier cannot address the public API".into(),
            ));
        }
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
                field_rules(),
                map::error_message,
                Credential::Raw,
            )?,
            account_id: account_id.to_string(),
            inbox_id: *inbox_id,
            inbox_identifier,
            hmac_token,
            sort: sort.clone(),
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

    /// One page of the application API's contact list.
    async fn fetch_page(&self, page: u64) -> Result<ContactList, ProviderError> {
        let url = self.base.http.url(&api::list_path(&self.account_id))?;
        let page_text = page.to_string();
        let list: ContactList = self
            .base
            .http
            .send_json("list contacts", || {
                self.base
                    .http
                    .request(Method::GET, url.clone())
                    .query(&[("page", page_text.as_str()), ("sort", self.sort.as_str())])
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

    /// The contact's current identifier (`""` when it has none), from the listing or, when this
    /// process has not listed it, from the application API.
    async fn identifier_of(&self, native: &str) -> Result<String, ProviderError> {
        if let Some(identifier) = self.identifiers().get(native) {
            return Ok(identifier.clone());
        }
        let url = self
            .base
            .http
            .url(&api::contact_path(&self.account_id, native))?;
        let show: ContactShow = self
            .base
            .http
            .send_json("read contact", || {
                self.base
                    .http
                    .request(Method::GET, url.clone())
                    .header(api::ACCESS_TOKEN_HEADER, self.base.auth.clone())
            })
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

    /// Removes the inbox identifier from a provider message, should Chatwoot (or a proxy) ever
    /// echo the request path in an error body.
    fn redact(&self, err: ProviderError) -> ProviderError {
        let secret = self.inbox_identifier.expose();
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

    /// Checks the public API with one contact of the first page: a wrong inbox identifier (or
    /// an `inbox_id` that is not that inbox) would otherwise fail every update with a 404.
    async fn check_public_api(&self, rec: &ContactRecord) -> Result<(), ProviderError> {
        let Some(source_id) = map::source_id_for(rec, self.inbox_id) else {
            return Ok(());
        };
        let url = self.base.http.url(&api::public_contact_path(
            self.inbox_identifier.expose(),
            &source_id,
        ))?;
        let hmac = self.hmac_pair(rec.identifier.clone().unwrap_or_default());
        let result: Result<PublicContact, ProviderError> = self
            .base
            .http
            .send_json("read contact through the public API", || {
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
                    "the public API does not know the configured inbox_identifier, or it is not the identifier of inbox {}; check inbox_identifier and inbox_id",
                    self.inbox_id
                ),
            }),
            Err(e) => Err(e),
        }
    }
}

impl Provider for ChatwootClient {
    fn base(&self) -> &ClientBase {
        &self.base
    }

    fn base_mut(&mut self) -> &mut ClientBase {
        &mut self.base
    }

    /// Lists the first page (application API token and account), then reads one contact of it
    /// through the public API (inbox identifier, inbox id and, if configured, HMAC token).
    #[tracing::instrument(level = "debug", skip_all, fields(provider = %KIND), err(level = "debug"))]
    async fn healthcheck(&self) -> Result<(), ProviderError> {
        let first = match self.fetch_page(1).await {
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
        match first.payload.first() {
            Some(rec) => self.check_public_api(rec).await,
            None => Ok(()),
        }
    }

    /// Pages are numbered from 1 and hold 15 contacts (fixed by Chatwoot). The cursor is
    /// `"<next page>:<contacts seen so far>"`, so the listing stops as soon as every contact
    /// of `meta.count` was seen, without asking for an empty page.
    #[tracing::instrument(level = "debug", skip_all, fields(provider = %KIND, cursor = cursor.unwrap_or("1:0")), err(level = "debug"))]
    async fn list_page(&self, cursor: Option<&str>) -> Result<Page, ProviderError> {
        let (page, seen) = parse_cursor(cursor)?;
        let list = self.fetch_page(page).await?;
        let contacts: Vec<Contact> = list
            .payload
            .iter()
            .map(|rec| {
                self.remember_identifier(rec);
                map::to_contact(rec, self.inbox_id, &self.base.normalizer)
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

    /// One `PATCH` to the public API carrying every change. Chatwoot answers 200 even when it
    /// did not do what was asked, so the answer is checked: a different contact id means it
    /// merged the contact into another one (an error naming both), and a value missing from
    /// the answer means it silently discarded it (an error naming the fields).
    async fn create(
        &self,
        _new: &crate::model::NewContact,
    ) -> Result<crate::provider::Created, ProviderError> {
        // Placeholder until the create endpoint lands (issue 10).
        Err(ProviderError::Protocol {
            provider: crate::model::ProviderKind::Chatwoot,
            message: "creating contacts is not supported yet".into(),
        })
    }

    async fn find_by_key(
        &self,
        _key: &crate::provider::LookupKey,
    ) -> Result<Option<Vec<Contact>>, ProviderError> {
        Ok(None)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = %KIND, record = %patch.record), err(level = "debug"))]
    async fn apply(&self, patch: &Patch) -> Result<Contact, ProviderError> {
        let native = &patch.record.native;
        let refuse = |message: String| ProviderError::Protocol {
            provider: KIND,
            message: format!("cannot update contact {native}: {message}"),
        };
        if patch.record.provider != KIND {
            return Err(refuse(format!(
                "the patch is for a {} record",
                patch.record.provider
            )));
        }
        let mut body = map::update_body(patch).map_err(refuse)?;
        if self.hmac_token.is_some() {
            let identifier = self.identifier_of(native).await?;
            if let Some((hash, identifier)) = self.hmac_pair(identifier) {
                body.identifier = Some(identifier);
                body.identifier_hash = Some(hash);
            }
        }
        let url = self.base.http.url(&api::public_contact_path(
            self.inbox_identifier.expose(),
            &patch.update_ref,
        ))?;
        let record: ContactRecord = self
            .base
            .http
            .send_json("update contact", || {
                self.base
                    .http
                    .request(Method::PATCH, url.clone())
                    .json(&body)
            })
            .await
            .map_err(|e| self.redact(e))?;
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
                    "Chatwoot answered 200 but did not store {} of contact {native} (its public API silently discards invalid, over-long and blank values)",
                    missing.join(", ")
                ),
            });
        }
        Ok(contact)
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
    fn rules_match_the_public_api() {
        let r = field_rules();
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
