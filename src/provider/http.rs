//! The HTTP layer every adapter sends through: shared rate budget, timeouts, size-limited
//! bodies, and one retry policy for every provider.
//!
//! Adapters build requests and parse bodies; this module decides whether a response is a
//! success, a retry, or a failure (see [`classify`]), so that decision lives in one place.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use url::Url;

use super::error::ProviderError;
use crate::budget::{QuotaReport, RateBudget, Refusal};
use crate::model::ProviderKind;

/// Validated HTTP settings live in `config` (where validated types live); re-exported here for
/// the callers that name them beside the client.
pub use crate::config::HttpSettings;

/// Reads a provider's error body into a human message (its error envelope's `message`).
pub type ErrorParser = fn(StatusCode, &[u8]) -> String;

/// Reads a provider's rate-limit headers.
pub type QuotaHeaders = fn(&HeaderMap) -> QuotaReport;

/// A provider's HTTP client. Cheap to clone.
#[derive(Clone)]
pub struct ProviderHttp {
    provider: ProviderKind,
    client: reqwest::Client,
    base: Url,
    budget: Arc<RateBudget>,
    settings: HttpSettings,
    error_parser: ErrorParser,
    quota_headers: Option<QuotaHeaders>,
}

impl std::fmt::Debug for ProviderHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderHttp")
            .field("provider", &self.provider)
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// A successful response.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub body: bytes::Bytes,
}

impl ProviderHttp {
    /// A client for `provider` at `base`, drawing on `budget`.
    pub fn new(
        provider: ProviderKind,
        base: Url,
        budget: Arc<RateBudget>,
        settings: HttpSettings,
        error_parser: ErrorParser,
    ) -> Result<Self, ProviderError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("contact-sync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProviderError::Protocol {
                provider,
                message: format!("cannot build HTTP client: {}", e.without_url()),
            })?;
        Ok(ProviderHttp {
            provider,
            client,
            base,
            budget,
            settings,
            error_parser,
            quota_headers: None,
        })
    }

    /// Reads the provider's rate-limit headers on every response.
    pub fn with_quota_headers(mut self, parser: QuotaHeaders) -> Self {
        self.quota_headers = Some(parser);
        self
    }

    /// The provider this client talks to.
    pub fn provider(&self) -> ProviderKind {
        self.provider
    }

    /// The shared budget.
    pub fn budget(&self) -> &Arc<RateBudget> {
        &self.budget
    }

    /// The base URL joined with `segments`, each percent-encoded as one path segment, so an id
    /// holding `/`, `?` or `#` can never address another endpoint.
    ///
    /// # Errors
    /// Ids that are empty, `.` or `..` cannot be addressed safely (URL parsers collapse them,
    /// even percent-encoded), so they are refused.
    pub fn url(&self, segments: &[&str]) -> Result<Url, ProviderError> {
        let mut url = self.base.clone();
        for s in segments {
            if s.is_empty()
                || *s == "."
                || *s == ".."
                || s.eq_ignore_ascii_case("%2e")
                || s.eq_ignore_ascii_case("%2e%2e")
            {
                return Err(ProviderError::Protocol {
                    provider: self.provider,
                    message: format!("refusing to address a record with the id {s:?}"),
                });
            }
        }
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| ProviderError::Protocol {
                    provider: self.provider,
                    message: "base_url cannot hold a path".into(),
                })?;
            path.pop_if_empty().extend(segments);
        }
        Ok(url)
    }

    /// A request builder for `method` on `url`.
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.client
            .request(method, url)
            .header(reqwest::header::ACCEPT, "application/json")
    }

    /// Sends the request `build` makes, retrying per the policy, and returns the 2xx response.
    pub async fn send(
        &self,
        operation: &'static str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, ProviderError> {
        self.send_with(operation, build, Ok).await
    }

    /// Like [`send`](Self::send), then decodes the body as JSON. A body that does not decode
    /// counts as a retryable failure (a truncated or garbled body is usually transient).
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<T, ProviderError> {
        let provider = self.provider;
        self.send_with(operation, build, |r| {
            serde_json::from_slice(&r.body).map_err(|e| ProviderError::Decode {
                provider,
                operation,
                message: e.to_string(),
            })
        })
        .await
    }

    /// Like [`send_json`](Self::send_json) for a request that must not be repeated blindly (a
    /// create): only a 429, which the provider answers before doing anything, is retried. Every
    /// other failure is returned at once; [`ProviderError::outcome_unknown`] says whether the
    /// provider may have applied it, in which case the caller settles it by looking the record up.
    pub async fn send_json_once<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<T, ProviderError> {
        let provider = self.provider;
        self.send_with_policy(
            operation,
            build,
            |r| {
                serde_json::from_slice(&r.body).map_err(|e| ProviderError::Decode {
                    provider,
                    operation,
                    message: e.to_string(),
                })
            },
            |e| matches!(e, ProviderError::RateLimited { .. }),
        )
        .await
    }

    async fn send_with<T>(
        &self,
        operation: &'static str,
        build: impl Fn() -> RequestBuilder,
        decode: impl Fn(Response) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        self.send_with_policy(operation, build, decode, ProviderError::is_retryable)
            .await
    }

    async fn send_with_policy<T>(
        &self,
        operation: &'static str,
        build: impl Fn() -> RequestBuilder,
        decode: impl Fn(Response) -> Result<T, ProviderError>,
        may_retry: impl Fn(&ProviderError) -> bool,
    ) -> Result<T, ProviderError> {
        let provider = self.provider;
        let mut attempt = 0u32;
        loop {
            self.budget
                .acquire()
                .await
                .map_err(|Refusal::DailyQuotaExhausted(resets_in)| {
                    ProviderError::QuotaExhausted {
                        provider,
                        resets_in,
                    }
                })?;
            let request = build().build().map_err(|e| ProviderError::Protocol {
                provider,
                message: format!("cannot build the {operation} request: {}", e.without_url()),
            })?;
            let method = request.method().to_string();
            let started = Instant::now();
            let outcome = self.attempt(operation, request).await;
            let elapsed = started.elapsed();
            let status_label = match &outcome {
                Ok(r) => r.status.as_u16().to_string(),
                Err(e) => e.metric_label().to_string(),
            };
            metrics::counter!("contact_sync_requests_total", "provider" => provider.as_str(), "method" => method.clone(), "status" => status_label).increment(1);
            metrics::histogram!("contact_sync_request_duration_seconds", "provider" => provider.as_str()).record(elapsed.as_secs_f64());
            let result = outcome.and_then(&decode);
            let error = match result {
                Ok(value) => {
                    self.budget.succeeded();
                    return Ok(value);
                }
                Err(e) => e,
            };
            if !may_retry(&error) || attempt >= self.settings.max_retries {
                return Err(error);
            }
            attempt += 1;
            metrics::counter!("contact_sync_retries_total", "provider" => provider.as_str())
                .increment(1);
            let delay = self.backoff(attempt);
            tracing::debug!(provider = %provider, operation, attempt, error = %error, delay_ms = delay.as_millis() as u64, "Retrying request.");
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt: send, read the body within limits, classify the status.
    async fn attempt(
        &self,
        operation: &'static str,
        request: reqwest::Request,
    ) -> Result<Response, ProviderError> {
        let provider = self.provider;
        let timeout = self.settings.timeout;
        let read = async {
            let mut resp = self.client.execute(request).await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                if body.len() + chunk.len() > self.settings.max_body_bytes {
                    return Ok(Err(headers));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>(Ok((status, headers, body)))
        };
        let (status, headers, body) = match tokio::time::timeout(timeout, read).await {
            Err(_) => {
                return Err(ProviderError::Timeout {
                    provider,
                    operation,
                    after: timeout,
                })
            }
            Ok(Err(e)) if e.is_timeout() => {
                return Err(ProviderError::Timeout {
                    provider,
                    operation,
                    after: timeout,
                })
            }
            Ok(Err(e)) => {
                return Err(ProviderError::Transport {
                    provider,
                    operation,
                    source: e.without_url(),
                })
            }
            Ok(Ok(Err(headers))) => {
                self.observe_headers(&headers);
                return Err(ProviderError::BodyTooLarge {
                    provider,
                    operation,
                    limit: self.settings.max_body_bytes,
                });
            }
            Ok(Ok(Ok(parts))) => parts,
        };
        self.observe_headers(&headers);
        match classify(status) {
            Class::Success => Ok(Response {
                status,
                body: body.into(),
            }),
            Class::RateLimited => {
                let retry_after = retry_after(&headers);
                self.budget.throttled(retry_after);
                metrics::counter!("contact_sync_throttled_total", "provider" => provider.as_str())
                    .increment(1);
                tracing::warn!(provider = %provider, operation, retry_after_ms = retry_after.map(|d| d.as_millis() as u64), "Provider answered 429; slowing down.");
                Err(ProviderError::RateLimited {
                    provider,
                    operation,
                    retry_after,
                })
            }
            Class::Auth => Err(ProviderError::Auth {
                provider,
                status: status.as_u16(),
                message: (self.error_parser)(status, &body),
            }),
            Class::Retryable => Err(ProviderError::Server {
                provider,
                operation,
                status: status.as_u16(),
                message: (self.error_parser)(status, &body),
            }),
            Class::Permanent => Err(ProviderError::Rejected {
                provider,
                operation,
                status: status.as_u16(),
                message: (self.error_parser)(status, &body),
            }),
        }
    }

    fn observe_headers(&self, headers: &HeaderMap) {
        if let Some(parse) = self.quota_headers {
            self.budget.observe(&parse(headers));
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .settings
            .backoff_base
            .saturating_mul(1u32 << attempt.min(16));
        let cap = exp.min(self.settings.backoff_max);
        // Full jitter, but never less than a quarter of the step, so retries do spread out.
        let low = cap / 4;
        let span = cap.saturating_sub(low).as_millis() as u64;
        low + Duration::from_millis(rand::rng().random_range(0..=span))
    }
}

/// What a status means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Success,
    RateLimited,
    Auth,
    Retryable,
    Permanent,
}

/// The one place that maps an HTTP status to a retry decision: 429 waits and retries, 408 and
/// 5xx (but 501) retry with backoff, 401/403 fail with an authentication hint, other 4xx fail.
pub fn classify(status: StatusCode) -> Class {
    match status.as_u16() {
        200..=299 => Class::Success,
        429 => Class::RateLimited,
        401 | 403 => Class::Auth,
        408 => Class::Retryable,
        501 => Class::Permanent,
        500..=599 => Class::Retryable,
        _ => Class::Permanent,
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(3600.0)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(
        delta
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(3600)),
    )
}

/// A header value holding a secret, marked sensitive.
pub fn sensitive(provider: ProviderKind, value: &str) -> Result<HeaderValue, ProviderError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| ProviderError::Protocol {
        provider,
        message: "a configured token holds characters that cannot be sent in an HTTP header".into(),
    })?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Rate;
    use std::num::NonZeroU32;

    fn client() -> ProviderHttp {
        let budget = RateBudget::new(
            Rate {
                requests: NonZeroU32::new(10).expect("nz"),
                per: Duration::from_secs(1),
            },
            1.0,
            None,
        );
        ProviderHttp::new(
            ProviderKind::Privy,
            Url::parse("http://127.0.0.1:1/v1").expect("url"),
            budget,
            HttpSettings::default(),
            |_, _| String::new(),
        )
        .expect("client")
    }

    #[test]
    fn ids_are_one_encoded_segment() {
        let c = client();
        let url = c
            .url(&["contacts", "a/../../admin?x=1#f"])
            .expect("encodable");
        assert_eq!(url.path(), "/v1/contacts/a%2F..%2F..%2Fadmin%3Fx=1%23f");
        assert_eq!(url.query(), None);
        assert!(c.url(&["contacts", ".."]).is_err());
        assert!(c.url(&["contacts", "%2E%2e"]).is_err());
        assert!(c.url(&["contacts", ""]).is_err());
    }

    #[test]
    fn status_classes() {
        assert_eq!(classify(StatusCode::OK), Class::Success);
        assert_eq!(classify(StatusCode::TOO_MANY_REQUESTS), Class::RateLimited);
        assert_eq!(classify(StatusCode::UNAUTHORIZED), Class::Auth);
        assert_eq!(classify(StatusCode::BAD_GATEWAY), Class::Retryable);
        assert_eq!(classify(StatusCode::NOT_IMPLEMENTED), Class::Permanent);
        assert_eq!(classify(StatusCode::UNPROCESSABLE_ENTITY), Class::Permanent);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
