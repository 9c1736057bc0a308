//! Chatwoot simulator (skeleton: replaced by the full simulator).

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};

use super::{json_response, Flavor, SeedPerson, SimOptions, SimShared};

pub struct ChatwootFlavor;

impl Flavor for ChatwootFlavor {
    fn authorize(&self, headers: &HeaderMap, _path: &str, opts: &SimOptions) -> bool {
        super::bearer_token(headers) == Some(opts.token.as_str())
    }
    fn unauthorized(&self) -> Response {
        json_response(StatusCode::UNAUTHORIZED, json!({"error": "unauthorized"}))
    }
    fn rate_limited(&self, _retry_after_secs: u64) -> Response {
        json_response(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": "rate limited"}),
        )
    }
    fn error(&self, status: StatusCode, message: &str) -> Response {
        json_response(status, json!({"error": message}))
    }
}

pub fn router() -> Router<Arc<SimShared>> {
    Router::new()
}

pub fn from_seed(p: &SeedPerson, seq: u64, _opts: &SimOptions) -> Value {
    json!({"id": seq.to_string(), "uuid": seq.to_string(), "name": p.name})
}
