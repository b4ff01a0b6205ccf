//! Requests and responses, whatever carried them: a method, a path, headers and a JSON body; the error
//! codes and bodies every answer shares.

use serde::{Deserialize, Serialize};

use retail_sync_contracts::values::{Amount, Currency, MemberId, Points};

use crate::config::*;

/// The scope each route needs (the HTTP API's JWT authorizer checks it at the edge, and the service
/// again).
pub const SCOPE_BALANCE_READ: &str = "redemption/balance.read";
pub const SCOPE_HOLDS_READ: &str = "redemption/holds.read";
pub const SCOPE_HOLDS_WRITE: &str = "redemption/holds.write";

/// Who is calling, as the edge authenticated them (the JWT's claims).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The `client_id` claim (else `sub`): the channel application. It scopes idempotency keys and owns
    /// the holds it creates. See [`Caller::client_is_valid`] for what is accepted.
    pub client: String,
    /// The `scope` claim, split on spaces.
    pub scopes: Vec<String>,
    /// The `member_id` claim of a member's own token (a loyalty app): such a caller acts on that member
    /// only.
    pub member: Option<String>,
}

impl Caller {
    /// The local run's caller: the channel of a sample stream, with every scope and no member claim.
    pub fn local(client: impl Into<String>) -> Self {
        Self {
            client: client.into(),
            scopes: [SCOPE_BALANCE_READ, SCOPE_HOLDS_READ, SCOPE_HOLDS_WRITE]
                .map(str::to_owned)
                .to_vec(),
            member: None,
        }
    }

    /// Whose idempotency keys a request's key belongs to: the client application's, or — for a member's
    /// own token — that member's within it (`{client}/{member}`), so that two members of one app never
    /// replay or block each other's requests. Neither a client id nor a member id holds '/' or ':'.
    pub fn key_scope(&self) -> String {
        match &self.member {
            Some(member) => format!("{}/{member}", self.client),
            None => self.client.clone(),
        }
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Whether the client id is usable in keys: 1 to 128 characters of `[A-Za-z0-9._@|-]` (identity
    /// providers' client ids such as `abc@clients` or `auth0|abc` included), never ':', which separates
    /// key segments.
    pub fn client_is_valid(&self) -> bool {
        (1..=128).contains(&self.client.len())
            && self
                .client
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'|'))
    }
}

/// An HTTP request, whatever carried it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: String,
    /// The path without scheme and host; a query string, if any, is ignored.
    pub path: String,
    /// Header names are matched without regard to case; the first of repeated headers counts.
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// The authenticated caller; `None` is refused (401).
    pub caller: Option<Caller>,
}

impl ApiRequest {
    pub fn new(method: impl Into<String>, path: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            path: path.into(),
            ..Self::default()
        }
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers
            .push((name.into().to_ascii_lowercase(), value.into()));
        self
    }

    pub fn with_body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }

    pub fn with_caller(mut self, caller: Caller) -> Self {
        self.caller = Some(caller);
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// An HTTP response with a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl ApiResponse {
    /// `body` as JSON with the headers every answer carries.
    pub fn json(status: u16, body: &impl Serialize) -> Self {
        Self::raw(status, serde_json::to_string(body).expect("API bodies serialize"))
    }

    pub(crate) fn raw(status: u16, body: String) -> Self {
        Self {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                // Balances and holds change; an intermediary must never answer from a cache.
                ("cache-control".into(), "no-store".into()),
            ],
            body,
        }
    }

    /// An error answer: `{"code": ..., "message": ...}`.
    pub fn error(status: u16, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::json(status, &ErrorBody::new(code, message))
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every error code the API answers with (the `code` of the error body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body is not JSON or not the schema, or a path parameter is not an id; 422: a value is
    /// out of range (`ttl_seconds`). Not stored against the key: fix the request and send it again.
    InvalidRequest,
    /// 400: a POST without a usable `Idempotency-Key`.
    IdempotencyKeyRequired,
    /// 422: the key was first used for a different request.
    IdempotencyKeyReused,
    /// 409: the first request under this key is still being answered; retry after `Retry-After`.
    RequestInProgress,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, the method does not (`Allow` lists the ones that do).
    MethodNotAllowed,
    /// 422: the loyalty platform refused (not enough points, value above the basket, unknown member or
    /// hold, hold expired or released, ...), with the platform's message.
    RedemptionRefused,
    /// 503: the loyalty platform did not answer in time. `sale_allowed` says what the channel may do.
    LoyaltyUnavailable,
    /// 503: our own state (idempotency records) did not answer. Same `sale_allowed` rules.
    ServiceUnavailable,
    /// 500: a bug or a corrupt record; logged.
    InternalError,
    /// 401: no authenticated caller reached the service (the edge lets none through; a misrouted call).
    Unauthenticated,
    /// 403: the caller may not do this: a scope the token lacks, another member than its own, a hold
    /// another caller created, or a client id unusable in keys.
    Forbidden,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 12] = [
        Self::InvalidRequest,
        Self::IdempotencyKeyRequired,
        Self::IdempotencyKeyReused,
        Self::RequestInProgress,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::RedemptionRefused,
        Self::LoyaltyUnavailable,
        Self::ServiceUnavailable,
        Self::InternalError,
        Self::Unauthenticated,
        Self::Forbidden,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::IdempotencyKeyRequired => "idempotency_key_required",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::RequestInProgress => "request_in_progress",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RedemptionRefused => "redemption_refused",
            Self::LoyaltyUnavailable => "loyalty_unavailable",
            Self::ServiceUnavailable => "service_unavailable",
            Self::InternalError => "internal_error",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// On `redemption_refused`: the platform's reason class (e.g. `loyalty_rejected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// On 503: whether the channel may complete the sale without redeeming points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sale_allowed: Option<bool>,
    /// On 503: the outage policy in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<OutagePolicy>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            reason: None,
            sale_allowed: None,
            policy: None,
        }
    }
}

/// The body of `POST /v1/holds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateHoldBody {
    pub member_id: MemberId,
    pub points: Points,
    pub currency: Currency,
    /// Net value of the basket before tax; the hold's `value_minor` may not exceed it.
    pub basket_net_minor: Amount,
    /// 1..=86400; absent: the deployment's default (900).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}
