//! The redemption experience API: what a channel calls synchronously at checkout to show a member's
//! points, reserve some for the basket (a hold), and, for channels that settle on the spot, commit or
//! release the hold. Transport-neutral: a request is a method, a path, headers and a body; the Lambda
//! adapter (`retail-sync-lambda`, `http`) maps API Gateway's payload onto it. The contract is
//! `openapi/redemption.yaml` in this crate.
//!
//! Authentication is not done here: the HTTP API in front of the function checks the caller's JWT
//! (template), and this service trusts whoever reaches it.
//!
//! Idempotency: every POST carries the client's `Idempotency-Key`. The first final answer (2xx, or a 4xx
//! the loyalty platform gave) is stored in our own idempotency table under `api:{key}` and returned for
//! every repeat without calling the platform again. Answers to outages are not stored, so a retry reaches
//! the platform; the platform itself receives a key derived from the client's, so a call that timed out
//! after the platform acted is not applied twice there either.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use retail_sync_contracts::values::{Amount, Currency, HoldId, MemberId, Points};

use crate::error::Error;
use crate::idempotency::{
    Claim, Fingerprint, IdempotencyKey, IdempotencyPolicy, IdempotencyRecord, RecordState, decide,
};
use crate::ports::{Clock, CommitRequest, HoldRequest, IdempotencyStore, Loyalty};

/// A hold lives this long unless the request or the deployment says otherwise: long enough to finish a
/// checkout, short enough that abandoned baskets give their points back the same hour.
pub const DEFAULT_HOLD_TTL_SECONDS: u64 = 900;
/// No hold may be asked for longer than a day.
pub const MAX_HOLD_TTL_SECONDS: u64 = 86_400;
/// A checkout waits at most this long for the loyalty platform by default.
pub const DEFAULT_LOYALTY_TIMEOUT: Duration = Duration::from_millis(2000);
/// What a 503 tells the channel to wait before asking again.
pub const OUTAGE_RETRY_AFTER_SECONDS: u64 = 30;
/// `Idempotency-Key` length limit.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

// --- Configuration -------------------------------------------------------------------------------------

/// What the channel is told to do when the loyalty platform (or our own state) does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutagePolicy {
    /// Complete the sale without redeeming points. The points the sale earns are still accrued: the
    /// accrual steps retry until loyalty is back (then DLQ and redrive), so nothing is lost.
    #[default]
    RefuseRedemption,
    /// Do not complete the sale while loyalty is down (for retailers whose tender rules require it).
    BlockCheckout,
}

impl OutagePolicy {
    pub const ALL: [OutagePolicy; 2] = [Self::RefuseRedemption, Self::BlockCheckout];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RefuseRedemption => "refuse_redemption",
            Self::BlockCheckout => "block_checkout",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Whether the channel may complete the sale (without points) during an outage.
    pub fn sale_allowed(self) -> bool {
        matches!(self, Self::RefuseRedemption)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedemptionConfig {
    pub outage_policy: OutagePolicy,
    /// The lifetime of a hold whose request names none.
    pub hold_ttl_seconds: u64,
    /// Bounds every loyalty call; a call that takes longer is an outage.
    pub loyalty_timeout: Duration,
}

impl Default for RedemptionConfig {
    fn default() -> Self {
        Self {
            outage_policy: OutagePolicy::default(),
            hold_ttl_seconds: DEFAULT_HOLD_TTL_SECONDS,
            loyalty_timeout: DEFAULT_LOYALTY_TIMEOUT,
        }
    }
}

/// A setting that cannot be used, naming the variable it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl RedemptionConfig {
    /// Reads `REDEMPTION_OUTAGE_POLICY` (`refuse_redemption` | `block_checkout`),
    /// `REDEMPTION_HOLD_TTL_SECONDS` (1..=86400) and `REDEMPTION_LOYALTY_TIMEOUT_MS` (> 0); each is
    /// optional (unset or empty: the default).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any source of variables.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |var: &str| lookup(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let number =
            |var: &'static str, range: std::ops::RangeInclusive<u64>| -> Result<Option<u64>, ConfigError> {
                get(var)
                    .map(|v| match v.parse::<u64>() {
                        Ok(n) if range.contains(&n) => Ok(n),
                        Ok(n) => Err(ConfigError {
                            var,
                            message: format!("{n} is outside {}..={}", range.start(), range.end()),
                        }),
                        Err(e) => Err(ConfigError {
                            var,
                            message: format!("{v:?} is not a whole number: {e}"),
                        }),
                    })
                    .transpose()
            };
        let mut config = Self::default();
        if let Some(v) = get("REDEMPTION_OUTAGE_POLICY") {
            config.outage_policy = OutagePolicy::parse(&v).ok_or_else(|| ConfigError {
                var: "REDEMPTION_OUTAGE_POLICY",
                message: format!("{v:?} is not one of refuse_redemption, block_checkout"),
            })?;
        }
        if let Some(n) = number("REDEMPTION_HOLD_TTL_SECONDS", 1..=MAX_HOLD_TTL_SECONDS)? {
            config.hold_ttl_seconds = n;
        }
        if let Some(ms) = number("REDEMPTION_LOYALTY_TIMEOUT_MS", 1..=u64::MAX)? {
            config.loyalty_timeout = Duration::from_millis(ms);
        }
        Ok(config)
    }
}

// --- Requests and responses ----------------------------------------------------------------------------

/// An HTTP request, whatever carried it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: String,
    /// The path without scheme and host; a query string, if any, is ignored.
    pub path: String,
    /// Header names are matched without regard to case; the first of repeated headers counts.
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
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

    fn raw(status: u16, body: String) -> Self {
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
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
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

// --- Routes --------------------------------------------------------------------------------------------

/// The API's operations; `method()` and `path()` are the routing table, and the OpenAPI document must
/// list exactly these (a test checks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    GetBalance,
    CreateHold,
    GetHold,
    CommitHold,
    ReleaseHold,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Self::GetBalance,
        Self::CreateHold,
        Self::GetHold,
        Self::CommitHold,
        Self::ReleaseHold,
    ];

    pub fn method(self) -> &'static str {
        match self {
            Self::GetBalance | Self::GetHold => "GET",
            Self::CreateHold | Self::CommitHold | Self::ReleaseHold => "POST",
        }
    }

    /// The path template; `{name}` is one path segment.
    pub fn path(self) -> &'static str {
        match self {
            Self::GetBalance => "/v1/members/{member_id}/balance",
            Self::CreateHold => "/v1/holds",
            Self::GetHold => "/v1/holds/{hold_id}",
            Self::CommitHold => "/v1/holds/{hold_id}/commit",
            Self::ReleaseHold => "/v1/holds/{hold_id}/release",
        }
    }

    /// The OpenAPI `operationId`.
    pub fn operation_id(self) -> &'static str {
        match self {
            Self::GetBalance => "getBalance",
            Self::CreateHold => "createHold",
            Self::GetHold => "getHold",
            Self::CommitHold => "commitHold",
            Self::ReleaseHold => "releaseHold",
        }
    }

    /// The suffix of the key the loyalty platform receives for a mutating call.
    fn loyalty_step(self) -> &'static str {
        match self {
            Self::CreateHold => "create-hold",
            Self::CommitHold => "commit-hold",
            Self::ReleaseHold => "release-hold",
            Self::GetBalance | Self::GetHold => "read",
        }
    }

    /// The path parameters if `path` is this operation's path.
    fn matches(self, path: &str) -> Option<Vec<&str>> {
        let mut params = Vec::new();
        let mut template = self.path().split('/');
        let mut actual = path.split('/');
        loop {
            match (template.next(), actual.next()) {
                (None, None) => return Some(params),
                (Some(t), Some(a)) if t.starts_with('{') && !a.is_empty() => params.push(a),
                (Some(t), Some(a)) if t == a => {}
                _ => return None,
            }
        }
    }
}

/// The operation `method` + `path` names, or the 404/405 answer.
fn route<'p>(method: &str, path: &'p str) -> Result<(Operation, Vec<&'p str>), ApiResponse> {
    let mut allowed = Vec::new();
    for op in Operation::ALL {
        if let Some(params) = op.matches(path) {
            if op.method() == method {
                return Ok((op, params));
            }
            allowed.push(op.method());
        }
    }
    if allowed.is_empty() {
        Err(ApiResponse::error(
            404,
            ErrorCode::NotFound,
            format!("no route {method} {path}"),
        ))
    } else {
        Err(ApiResponse::error(
            405,
            ErrorCode::MethodNotAllowed,
            format!("{path} does not accept {method}"),
        )
        .with_header("allow", allowed.join(", ")))
    }
}

/// The client's `Idempotency-Key`: 1–200 characters of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKey(String);

impl ClientKey {
    pub fn parse(s: &str) -> Option<Self> {
        let ok = (1..=MAX_IDEMPOTENCY_KEY_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where the API keeps the answer: `api:{key}`. The `api` namespace holds no ':' of its own, so it
    /// cannot meet the steps' keys (`receipt:…`, `order:…`) nor the pinned hold requests (`api-hold:…`).
    pub fn store_key(&self) -> IdempotencyKey {
        IdempotencyKey::for_step("api", &self.0)
    }

    /// Where the first attempt's hold request is pinned (see [`RedemptionApi`]).
    fn hold_request_key(&self) -> IdempotencyKey {
        IdempotencyKey::for_step("api-hold", &self.0)
    }

    /// What the loyalty platform receives: `api:{key}:{operation}`. Operations contain no ':', so two
    /// different (key, operation) pairs never give the same platform key.
    pub fn loyalty_key(&self, operation: Operation) -> IdempotencyKey {
        IdempotencyKey::for_step(&format!("api:{}", self.0), operation.loyalty_step())
    }
}

/// What is stored against a client key: the answer, byte for byte.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredResponse {
    status: u16,
    body: String,
}

/// The pinned part of a hold request (see [`RedemptionApi`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PinnedHold {
    expires_at: Timestamp,
}

/// What a validated POST will do.
enum Command {
    Create(CreateHoldBody),
    Commit(HoldId, CommitRequest),
    Release(HoldId),
}

/// Which dependency failed, for the 503's code.
#[derive(Clone, Copy)]
enum Dependency {
    Loyalty,
    State,
}

// --- The service ---------------------------------------------------------------------------------------

/// The redemption API over the loyalty port and our idempotency store.
///
/// A hold request carries `expires_at = now + ttl`. If the platform acted on a call that then timed out,
/// the client's retry must send the platform the same body under the same key, or the platform would
/// see its key reused for a different request. So the first attempt pins `expires_at` under
/// `api-hold:{key}` before calling, and every retry under that key sends the pinned instant.
pub struct RedemptionApi {
    pub loyalty: Arc<dyn Loyalty>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub clock: Arc<dyn Clock>,
    pub policy: IdempotencyPolicy,
    pub config: RedemptionConfig,
}

impl RedemptionApi {
    pub async fn handle(&self, request: ApiRequest) -> ApiResponse {
        let response = match self.dispatch(&request).await {
            Ok(r) | Err(r) => r,
        };
        tracing::info!(
            method = %request.method,
            status = response.status,
            "redemption api"
        );
        response
    }

    async fn dispatch(&self, request: &ApiRequest) -> Result<ApiResponse, ApiResponse> {
        let path = request
            .path
            .split_once('?')
            .map_or(request.path.as_str(), |(p, _)| p);
        let (op, params) = route(&request.method, path)?;
        match op {
            Operation::GetBalance => {
                let member_id = id_param(params[0], MemberId::parse)?;
                let balance = self.loyalty_call(self.loyalty.balance(&member_id)).await;
                Ok(self.answer(200, balance))
            }
            Operation::GetHold => {
                let hold_id = id_param(params[0], HoldId::parse)?;
                let hold = self.loyalty_call(self.loyalty.get_hold(&hold_id)).await;
                Ok(self.answer(200, hold))
            }
            Operation::CreateHold | Operation::CommitHold | Operation::ReleaseHold => {
                let key = request
                    .header("idempotency-key")
                    .and_then(ClientKey::parse)
                    .ok_or_else(|| {
                        ApiResponse::error(
                            400,
                            ErrorCode::IdempotencyKeyRequired,
                            format!(
                                "every POST needs an Idempotency-Key header of 1 to \
                                 {MAX_IDEMPOTENCY_KEY_LEN} characters from [A-Za-z0-9._:-]"
                            ),
                        )
                    })?;
                let body = json_body(request, op != Operation::ReleaseHold)?;
                let command = match op {
                    Operation::CreateHold => Command::Create(self.create_body(&body)?),
                    Operation::CommitHold => Command::Commit(
                        id_param(params[0], HoldId::parse)?,
                        typed_body::<CommitRequest>(&body)?,
                    ),
                    _ => Command::Release(id_param(params[0], HoldId::parse)?),
                };
                // The fingerprint is of the parsed body, so whitespace and key order do not make a
                // retry look like a different request.
                let fingerprint = Fingerprint::of(&(op.method(), path, &body));
                Ok(self.once(op, &key, fingerprint, command).await)
            }
        }
    }

    fn create_body(&self, body: &Value) -> Result<CreateHoldBody, ApiResponse> {
        let create: CreateHoldBody = typed_body(body)?;
        if let Some(ttl) = create.ttl_seconds
            && !(1..=MAX_HOLD_TTL_SECONDS).contains(&ttl)
        {
            return Err(ApiResponse::error(
                422,
                ErrorCode::InvalidRequest,
                format!("ttl_seconds must be 1 to {MAX_HOLD_TTL_SECONDS}, not {ttl}"),
            ));
        }
        Ok(create)
    }

    /// Runs a mutating command at most once per client key and answers as the first run did.
    async fn once(
        &self,
        op: Operation,
        key: &ClientKey,
        fingerprint: Fingerprint,
        command: Command,
    ) -> ApiResponse {
        let now = self.clock.now();
        let claim = self.policy.in_progress(key.store_key(), fingerprint, now);
        let existing = match self.idempotency.try_insert(&claim, now).await {
            Ok(existing) => existing,
            Err(e) => return self.failure(e, Dependency::State),
        };
        if let Some(existing) = existing {
            return match decide(&existing, &claim.fingerprint, now) {
                Claim::AlreadyDone(stored) => replay(key, stored),
                Claim::InProgress { retry_after } => ApiResponse::error(
                    409,
                    ErrorCode::RequestInProgress,
                    "a request with this Idempotency-Key is still being answered; retry later",
                )
                .with_header("retry-after", retry_after.as_secs().max(1).to_string()),
                Claim::KeyReused => ApiResponse::error(
                    422,
                    ErrorCode::IdempotencyKeyReused,
                    "this Idempotency-Key was first used for a different request",
                ),
                // `decide` does not answer Proceed for a live record; treat it as the conflict it
                // would be rather than act twice.
                Claim::Proceed => ApiResponse::error(
                    409,
                    ErrorCode::RequestInProgress,
                    "a request with this Idempotency-Key is still being answered; retry later",
                )
                .with_header("retry-after", "1"),
            };
        }

        let response = self.execute(op, key, &claim, command, now).await;
        if response.status < 500 {
            self.complete(&claim, &response, now).await;
        } else if let Err(e) = self.idempotency.release(&claim).await {
            // The claim lapses at the end of its lease anyway; until then a retry gets a 409.
            tracing::warn!(error = %e, key = %claim.key, "could not release the claim");
        }
        response
    }

    async fn execute(
        &self,
        op: Operation,
        key: &ClientKey,
        claim: &IdempotencyRecord,
        command: Command,
        now: Timestamp,
    ) -> ApiResponse {
        let loyalty_key = key.loyalty_key(op);
        match command {
            Command::Create(body) => {
                let ttl = body.ttl_seconds.unwrap_or(self.config.hold_ttl_seconds);
                let fresh = now + Duration::from_secs(ttl);
                let expires_at = match self.pinned_expiry(key, claim, fresh, now).await {
                    Ok(t) => t,
                    Err(e) => return self.failure(e, Dependency::State),
                };
                let request = HoldRequest {
                    member_id: body.member_id,
                    points: body.points,
                    currency: body.currency,
                    basket_net_minor: body.basket_net_minor,
                    expires_at,
                };
                let hold = self
                    .loyalty_call(self.loyalty.create_hold(&request, &loyalty_key))
                    .await;
                self.answer(201, hold)
            }
            Command::Commit(hold_id, request) => {
                let hold = self
                    .loyalty_call(self.loyalty.commit_hold(&hold_id, &request, &loyalty_key))
                    .await;
                self.answer(200, hold)
            }
            Command::Release(hold_id) => {
                let hold = self
                    .loyalty_call(self.loyalty.release_hold(&hold_id, &loyalty_key))
                    .await;
                self.answer(200, hold)
            }
        }
    }

    /// The `expires_at` the first attempt under this key chose (`fresh` if this is the first).
    async fn pinned_expiry(
        &self,
        key: &ClientKey,
        claim: &IdempotencyRecord,
        fresh: Timestamp,
        now: Timestamp,
    ) -> Result<Timestamp, Error> {
        let pin = self.policy.completed(
            &self
                .policy
                .in_progress(key.hold_request_key(), claim.fingerprint.clone(), now),
            serde_json::to_value(PinnedHold { expires_at: fresh }).expect("pins serialize"),
            now,
        );
        Ok(match self.idempotency.try_insert(&pin, now).await? {
            None => fresh,
            Some(IdempotencyRecord {
                fingerprint,
                state: RecordState::Completed { result },
                ..
            }) if fingerprint == claim.fingerprint => serde_json::from_value::<PinnedHold>(result)
                .map(|p| p.expires_at)
                .unwrap_or(fresh),
            // Cannot happen while the answer record guards the key (same retention); should it, the
            // platform will judge the request on its own.
            Some(_) => fresh,
        })
    }

    /// Replaces our in-progress claim by the answer, in one conditional write: the insert's condition
    /// is evaluated at the end of our lease, when our own claim no longer blocks, while a record taken
    /// by someone else (only possible after our lease lapsed, so with a later lease) or a completed one
    /// still does.
    async fn complete(&self, claim: &IdempotencyRecord, response: &ApiResponse, now: Timestamp) {
        let RecordState::InProgress { lease_until } = claim.state else {
            return;
        };
        let stored = StoredResponse {
            status: response.status,
            body: response.body.clone(),
        };
        let record = self.policy.completed(
            claim,
            serde_json::to_value(stored).expect("responses serialize"),
            now,
        );
        match self.idempotency.try_insert(&record, lease_until).await {
            Ok(None) => {}
            Ok(Some(_)) => {
                tracing::warn!(key = %claim.key, "the key was taken over before the answer was stored")
            }
            // The answer still goes out; a repeat finds the claim (409) until its lease lapses, then
            // asks the platform again, which answers from its own idempotency record.
            Err(e) => tracing::warn!(error = %e, key = %claim.key, "could not store the answer"),
        }
    }

    /// A loyalty call, bounded by the configured timeout (which counts as an outage).
    async fn loyalty_call<T>(&self, call: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        match tokio::time::timeout(self.config.loyalty_timeout, call).await {
            Ok(result) => result,
            Err(elapsed) => Err(Error::unavailable("loyalty", elapsed)),
        }
    }

    fn answer<T: Serialize>(&self, status: u16, result: Result<T, Error>) -> ApiResponse {
        match result {
            Ok(value) => ApiResponse::json(status, &value),
            Err(e) => self.failure(e, Dependency::Loyalty),
        }
    }

    fn failure(&self, error: Error, dependency: Dependency) -> ApiResponse {
        match error {
            Error::Rejected { reason, message } => {
                let mut body = ErrorBody::new(ErrorCode::RedemptionRefused, message);
                body.reason = Some(reason.as_str().to_owned());
                ApiResponse::json(422, &body)
            }
            Error::BadInput(rejection) => {
                let mut body = ErrorBody::new(ErrorCode::RedemptionRefused, rejection.message);
                body.reason = Some(rejection.reason.as_str().to_owned());
                ApiResponse::json(422, &body)
            }
            e if e.is_retryable() => {
                tracing::warn!(error = %e, class = e.class(), "redemption unavailable");
                let policy = self.config.outage_policy;
                let (code, what) = match dependency {
                    Dependency::Loyalty => (ErrorCode::LoyaltyUnavailable, "The loyalty platform is"),
                    Dependency::State => (ErrorCode::ServiceUnavailable, "Redemption is"),
                };
                let message = if policy.sale_allowed() {
                    format!(
                        "{what} not available: complete the sale without redeeming points (the points it \
                         earns are accrued later), or retry with the same Idempotency-Key"
                    )
                } else {
                    format!(
                        "{what} not available and this retailer does not complete sales meanwhile: \
                         retry with the same Idempotency-Key"
                    )
                };
                let mut body = ErrorBody::new(code, message);
                body.sale_allowed = Some(policy.sale_allowed());
                body.policy = Some(policy);
                ApiResponse::json(503, &body)
                    .with_header("retry-after", OUTAGE_RETRY_AFTER_SECONDS.to_string())
            }
            e => {
                tracing::error!(error = %e, class = e.class(), "redemption api failed");
                ApiResponse::error(500, ErrorCode::InternalError, "internal error")
            }
        }
    }
}

/// The stored first answer, as it was.
fn replay(key: &ClientKey, stored: Value) -> ApiResponse {
    match serde_json::from_value::<StoredResponse>(stored) {
        Ok(s) => ApiResponse::raw(s.status, s.body).with_header("idempotent-replayed", "true"),
        Err(e) => {
            tracing::error!(error = %e, key = key.as_str(), "corrupt stored answer");
            ApiResponse::error(500, ErrorCode::InternalError, "internal error")
        }
    }
}

fn id_param<T>(
    raw: &str,
    parse: impl FnOnce(String) -> Result<T, retail_sync_contracts::values::ValueError>,
) -> Result<T, ApiResponse> {
    parse(raw.to_owned()).map_err(|e| ApiResponse::error(400, ErrorCode::InvalidRequest, e.to_string()))
}

/// The body as JSON; an absent or blank body is `null`, refused where a body is `required`.
fn json_body(request: &ApiRequest, required: bool) -> Result<Value, ApiResponse> {
    let text = request.body.as_deref().unwrap_or("").trim();
    if text.is_empty() {
        return if required {
            Err(ApiResponse::error(
                400,
                ErrorCode::InvalidRequest,
                "a JSON body is required",
            ))
        } else {
            Ok(Value::Null)
        };
    }
    serde_json::from_str(text).map_err(|e| {
        ApiResponse::error(
            400,
            ErrorCode::InvalidRequest,
            format!("the body is not JSON: {e}"),
        )
    })
}

fn typed_body<T: DeserializeOwned>(body: &Value) -> Result<T, ApiResponse> {
    T::deserialize(body).map_err(|e| {
        ApiResponse::error(
            400,
            ErrorCode::InvalidRequest,
            format!("the body does not match the schema: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn without_settings_the_defaults_hold() {
        assert_eq!(
            RedemptionConfig::from_lookup(vars(&[])).unwrap(),
            RedemptionConfig::default()
        );
        let d = RedemptionConfig::default();
        assert_eq!(d.outage_policy, OutagePolicy::RefuseRedemption);
        assert_eq!(d.hold_ttl_seconds, 900);
        assert_eq!(d.loyalty_timeout, Duration::from_millis(2000));
    }

    #[test]
    fn settings_are_read_and_bad_ones_name_their_variable() {
        let c = RedemptionConfig::from_lookup(vars(&[
            ("REDEMPTION_OUTAGE_POLICY", "block_checkout"),
            ("REDEMPTION_HOLD_TTL_SECONDS", "600"),
            ("REDEMPTION_LOYALTY_TIMEOUT_MS", "750"),
        ]))
        .unwrap();
        assert_eq!(c.outage_policy, OutagePolicy::BlockCheckout);
        assert_eq!(c.hold_ttl_seconds, 600);
        assert_eq!(c.loyalty_timeout, Duration::from_millis(750));

        for (var, value) in [
            ("REDEMPTION_OUTAGE_POLICY", "block"),
            ("REDEMPTION_HOLD_TTL_SECONDS", "86401"),
            ("REDEMPTION_HOLD_TTL_SECONDS", "0"),
            ("REDEMPTION_HOLD_TTL_SECONDS", "ten"),
            ("REDEMPTION_LOYALTY_TIMEOUT_MS", "0"),
        ] {
            let e = RedemptionConfig::from_lookup(vars(&[(var, value)])).unwrap_err();
            assert_eq!(e.var, var, "{e}");
        }
    }

    #[test]
    fn routes_match_whole_segments_only() {
        assert_eq!(
            route("GET", "/v1/members/m-1/balance").unwrap(),
            (Operation::GetBalance, vec!["m-1"])
        );
        assert_eq!(
            route("POST", "/v1/holds/h-1/commit").unwrap(),
            (Operation::CommitHold, vec!["h-1"])
        );
        assert_eq!(route("GET", "/v1/holds/").unwrap_err().status, 404);
        assert_eq!(route("GET", "/v1/holds/h-1/commit/x").unwrap_err().status, 404);
        let not_allowed = route("DELETE", "/v1/holds/h-1").unwrap_err();
        assert_eq!(not_allowed.status, 405);
        assert_eq!(not_allowed.header("Allow"), Some("GET"));
    }

    #[test]
    fn client_keys_are_bounded_and_namespaced() {
        assert!(ClientKey::parse("").is_none());
        assert!(ClientKey::parse("a b").is_none());
        assert!(ClientKey::parse(&"k".repeat(201)).is_none());
        let key = ClientKey::parse("pos-1:basket.42_x").unwrap();
        assert_eq!(key.store_key().as_str(), "api:pos-1:basket.42_x");
        assert_eq!(
            key.loyalty_key(Operation::CreateHold).as_str(),
            "api:pos-1:basket.42_x:create-hold"
        );
    }
}
