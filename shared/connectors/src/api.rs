//! One JSON-over-HTTP caller per system: the process's `reqwest::Client` (connection pool, TLS), its
//! credentials on every call, the idempotency key on every mutating call, and retries of the failures
//! that are worth retrying (reads included).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::HeaderValue;
use serde::Serialize;
use serde::de::DeserializeOwned;

use retail_sync_contracts::events::ReasonCode;
use retail_sync_core::Error;
use retail_sync_core::idempotency::IdempotencyKey;

use crate::auth::{AuthMethod, Authenticator, CredentialSource};
use crate::config::{HttpConfig, check_url};
use crate::error::ConnectorError;

pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// How a connector authenticates, and where its credentials come from.
#[derive(Clone)]
pub struct Auth {
    pub method: AuthMethod,
    pub credentials: Arc<dyn CredentialSource>,
}

impl Auth {
    /// From `{prefix}_AUTH` and the rest of [`AuthMethod::from_lookup`], with the credentials of the
    /// environment (`{prefix}_CLIENT_ID`, `{prefix}_CLIENT_SECRET`, `{prefix}_API_KEY`).
    pub fn from_env(prefix: &str) -> Result<Self, ConnectorError> {
        let lookup = |name: &str| std::env::var(name).ok();
        Ok(Self {
            method: AuthMethod::from_lookup(prefix, lookup)?,
            credentials: Arc::new(crate::auth::StaticCredentials {
                credentials: crate::auth::Credentials::from_lookup(prefix, lookup),
                origin: format!("{prefix}_CLIENT_ID/{prefix}_CLIENT_SECRET/{prefix}_API_KEY"),
            }),
        })
    }
}

/// The error body the contract specifies for every non-2xx answer.
#[derive(serde::Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

/// What every dialect shares: the process's `reqwest::Client` for its timeouts (connection pool, TLS,
/// no redirects; see [`shared_client`]), its credentials on every call (fetched again once after a
/// 401), and the retry loop with its backoff and `Retry-After` handling. The dialects (the system API, SAP OData, Salesforce) differ in what
/// they send and how their answers and errors read, not in this.
#[derive(Clone)]
pub(crate) struct Caller {
    client: reqwest::Client,
    base_url: String,
    auth: Arc<Authenticator>,
    backoff: ExponentialBuilder,
    /// The longest wait between attempts: a `Retry-After` beyond it is not waited out in place.
    max_backoff: Duration,
    /// For `Error::Unavailable` and the logs: `erp` or `loyalty`.
    pub(crate) system: &'static str,
}

/// The process's HTTP client for these timeouts (`retail_sync_http::client`): connectors with the same
/// settings share one pool of connections per host, and every client of the process shares one TLS
/// configuration, so the root certificates are loaded once, not once per connector.
fn shared_client(connect: Duration, request: Duration) -> Result<reqwest::Client, ConnectorError> {
    retail_sync_http::client(retail_sync_http::Timeouts {
        connect: Some(connect),
        read: None,
        total: Some(request),
    })
    .map_err(ConnectorError::Client)
}

impl Caller {
    pub(crate) fn new(config: &HttpConfig, auth: Auth, system: &'static str) -> Result<Self, ConnectorError> {
        config.check_base_url("base_url")?;
        if let AuthMethod::OAuth2ClientCredentials { token_url, .. } = &auth.method {
            check_url(token_url, "token_url")?;
        }
        let client = shared_client(config.connect_timeout, config.request_timeout)?;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(config.min_backoff)
            .with_max_delay(config.max_backoff)
            .with_max_times(config.max_attempts.saturating_sub(1) as usize)
            .with_jitter();
        Ok(Self {
            client,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            auth: Arc::new(Authenticator::new(auth.method, auth.credentials)),
            backoff,
            max_backoff: config.max_backoff,
            system,
        })
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The base URL followed by `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Runs `attempt` until it succeeds, fails for good or the attempts run out. A retryable failure
    /// that uses up the attempts comes back as [`ConnectorError::GaveUp`]. `what` and `key` are for the
    /// logs.
    pub(crate) async fn retrying<T, Fut>(
        &self,
        what: &str,
        key: Option<&str>,
        attempt: impl FnMut() -> Fut,
    ) -> Result<T, ConnectorError>
    where
        Fut: Future<Output = Result<T, ConnectorError>>,
    {
        let attempts = AtomicU32::new(0);
        let mut attempt = attempt;
        let result = (|| {
            attempts.fetch_add(1, Ordering::Relaxed);
            attempt()
        })
        .retry(self.backoff)
        .when(ConnectorError::is_retryable)
        // A `Retry-After` within our own backoff's reach is waited out here; a longer one ends the
        // attempts, and the wait goes up with the error (the runner keeps the message invisible that
        // long) instead of holding the function.
        .adjust(|e, backoff| match (e.retry_after(), backoff) {
            (Some(wait), Some(_)) if wait <= self.max_backoff => Some(wait),
            (Some(_), _) => None,
            (None, backoff) => backoff,
        })
        .notify(|e, delay| {
            tracing::warn!(
                system = self.system,
                call = what,
                attempt = attempts.load(Ordering::Relaxed),
                status = e.status(),
                error = %retail_sync_core::error::describe(e),
                retry_in_ms = delay.as_millis() as u64,
                idempotency_key = key,
                "call failed, retrying"
            );
        })
        .await;
        result.map_err(|e| {
            if e.is_retryable() {
                // `when` only lets a retryable error out once the attempts are used up.
                ConnectorError::GaveUp {
                    attempts: attempts.load(Ordering::Relaxed),
                    last: Box::new(e),
                }
            } else {
                e
            }
        })
    }

    /// Sends what `request` builds with the current credential; on a 401, once more with fresh ones (the
    /// token expired or was revoked early, or the secret was rotated). A second 401 stands: the
    /// credentials are wrong. Any other answer comes back as it is, for the dialect to read.
    pub(crate) async fn authorized(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ConnectorError> {
        let (name, value) = self.auth.header(&self.client).await?;
        let response = request()
            .header(name, value.clone())
            .send()
            .await
            .map_err(|e| ConnectorError::Transport(e.without_url()))?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        tracing::info!(system = self.system, "credential refused, fetching a fresh one");
        self.auth.refused(&value).await;
        let (name, value) = self.auth.header(&self.client).await?;
        request()
            .header(name, value)
            .send()
            .await
            .map_err(|e| ConnectorError::Transport(e.without_url()))
    }

    /// GETs `url` asking for JSON, with the credential (see [`Caller::authorized`]).
    pub(crate) async fn get_json(&self, url: &str) -> Result<reqwest::Response, ConnectorError> {
        self.authorized(|| self.client.get(url).header("accept", "application/json"))
            .await
    }

    /// Tokens fetched so far (tests, and the proof that one token serves many calls).
    pub(crate) fn tokens_fetched(&self) -> u64 {
        self.auth.tokens_fetched()
    }
}

/// A non-2xx answer as a [`ConnectorError::Status`]: `error_of` reads the dialect's error body into
/// `(code, message)`; without one, the status text and the start of the body stand in.
pub(crate) async fn status_error(
    response: reqwest::Response,
    error_of: impl Fn(&[u8]) -> Option<(String, String)>,
) -> ConnectorError {
    let status = response.status();
    // Delta-seconds only (what rate limiters send); an HTTP-date is left to our own backoff.
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(43_200)));
    // The error body is only for the message; an unreadable one must not hide the status.
    let bytes = response.bytes().await.unwrap_or_default();
    let (code, message) = error_of(&bytes).unwrap_or_else(|| {
        (
            status
                .canonical_reason()
                .unwrap_or("unexpected status")
                .to_owned(),
            String::from_utf8_lossy(&bytes).chars().take(200).collect(),
        )
    });
    ConnectorError::Status {
        status: status.as_u16(),
        code,
        message,
        retry_after,
    }
}

/// A 2xx answer's JSON body, else the answer as an error.
pub(crate) async fn json_of<Resp: DeserializeOwned>(
    response: reqwest::Response,
    error_of: impl Fn(&[u8]) -> Option<(String, String)>,
) -> Result<Resp, ConnectorError> {
    if response.status().is_success() {
        response.json().await.map_err(ConnectorError::Body)
    } else {
        Err(status_error(response, error_of).await)
    }
}

/// `path` with the business-time window `[from, until)` of a read of the books as its query: `from` and
/// `to`, RFC 3339, percent-encoded.
pub(crate) fn with_window(path: &str, from: jiff::Timestamp, until: jiff::Timestamp) -> String {
    use crate::wire::percent;
    format!(
        "{path}?from={}&to={}",
        percent(&from.to_string()),
        percent(&until.to_string())
    )
}

/// The system API's error body: `{code, message}`.
fn system_api_error(bytes: &[u8]) -> Option<(String, String)> {
    serde_json::from_slice::<ErrorBody>(bytes)
        .ok()
        .map(|b| (b.code, b.message))
}

/// The refusals whose code says more than the system or the call that refused: the system API contract
/// gives these codes one meaning on every route, and the member workflow acts on an unknown member or a
/// merged one whichever call met them. (The in-process adapters of `retail-sync-simulators` map them
/// the same way.)
pub(crate) fn reason_of_code(code: &str) -> Option<ReasonCode> {
    match code {
        "member_not_found" | "enrolment_refused" => Some(ReasonCode::MemberNotEnrolled),
        "merge_refused" | "member_merged" => Some(ReasonCode::MergeRefused),
        _ => None,
    }
}

/// The system API (`openapi/{erp,loyalty,crm}.yaml`): JSON in and out, the idempotency key on every
/// mutating call, errors as `{code, message}`.
#[derive(Clone)]
pub(crate) struct JsonApi {
    caller: Caller,
    /// What a refusal of this system is reported as.
    rejected: ReasonCode,
}

impl JsonApi {
    pub(crate) fn new(
        config: &HttpConfig,
        auth: Auth,
        system: &'static str,
        rejected: ReasonCode,
    ) -> Result<Self, ConnectorError> {
        Ok(Self {
            caller: Caller::new(config, auth, system)?,
            rejected,
        })
    }

    /// POSTs `body` to `path` with the idempotency key and returns the parsed 2xx body.
    ///
    /// Retrying a POST is safe here only because of the key: the contract obliges the system to answer a
    /// repeated key with its first response and never to apply twice, so a timeout after the system
    /// committed costs a duplicate request, not a duplicate posting.
    pub(crate) async fn post<Req, Resp>(
        &self,
        path: &str,
        body: &Req,
        key: &IdempotencyKey,
    ) -> Result<Resp, Error>
    where
        Req: Serialize + Sync,
        Resp: DeserializeOwned,
    {
        self.post_refused_as(path, body, key, |_| self.rejected).await
    }

    /// [`JsonApi::post`], reporting a refusal with the reason `refused_as` gives its status: one call
    /// of a system may need its refusals told apart from the system's others.
    pub(crate) async fn post_refused_as<Req, Resp>(
        &self,
        path: &str,
        body: &Req,
        key: &IdempotencyKey,
        refused_as: impl Fn(u16) -> ReasonCode,
    ) -> Result<Resp, Error>
    where
        Req: Serialize + Sync,
        Resp: DeserializeOwned,
    {
        self.keyed(reqwest::Method::POST, path, body, key, refused_as)
            .await
    }

    /// PUTs `body` (a whole record, which the system keeps unless it holds a later one) to `path` with
    /// the idempotency key, like [`JsonApi::post`].
    pub(crate) async fn put<Req, Resp>(
        &self,
        path: &str,
        body: &Req,
        key: &IdempotencyKey,
    ) -> Result<Resp, Error>
    where
        Req: Serialize + Sync,
        Resp: DeserializeOwned,
    {
        self.keyed(reqwest::Method::PUT, path, body, key, |_| self.rejected)
            .await
    }

    /// A mutating call: `body` sent with `method` to `path` under the idempotency key.
    async fn keyed<Req, Resp>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Req,
        key: &IdempotencyKey,
        refused_as: impl Fn(u16) -> ReasonCode,
    ) -> Result<Resp, Error>
    where
        Req: Serialize + Sync,
        Resp: DeserializeOwned,
    {
        let Ok(key_header) = HeaderValue::from_str(key.as_str()) else {
            // Keys are built from validated identifiers; this is a bug upstream, and retrying cannot help.
            let message = format!("idempotency key {key} cannot be sent as an HTTP header");
            return Err(Error::rejected(self.rejected, message));
        };
        let url = self.caller.url(path);
        let request = || {
            self.caller
                .client()
                .request(method.clone(), &url)
                .header(IDEMPOTENCY_KEY_HEADER, key_header.clone())
                .json(body)
        };
        self.send(path, request, Some(key), refused_as).await
    }

    /// GETs `path` and returns the parsed 2xx body. A read changes nothing, so it is retried like a POST
    /// without needing a key.
    pub(crate) async fn get<Resp>(&self, path: &str) -> Result<Resp, Error>
    where
        Resp: DeserializeOwned,
    {
        let url = self.caller.url(path);
        self.send(path, || self.caller.client().get(&url), None, |_| self.rejected)
            .await
    }

    /// GETs `path` like [`JsonApi::get`], except that a 404 is `None` (no such resource) rather than a
    /// refusal.
    pub(crate) async fn get_optional<Resp>(&self, path: &str) -> Result<Option<Resp>, Error>
    where
        Resp: DeserializeOwned,
    {
        let url = self.caller.url(path);
        let request = || self.caller.client().get(&url);
        let request = &request;
        self.caller
            .retrying(path, None, || async move {
                let response = self.caller.authorized(request).await?;
                if response.status() == reqwest::StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                json_of(response, system_api_error).await.map(Some)
            })
            .await
            .map_err(|e| self.port_error(e, |_| self.rejected))
    }

    /// The core's error for a failed call: a refusal's reason is the one its code has everywhere
    /// ([`reason_of_code`]), else what `refused_as` gives its status.
    fn port_error(&self, e: ConnectorError, refused_as: impl Fn(u16) -> ReasonCode) -> Error {
        let reason = e
            .code()
            .and_then(reason_of_code)
            .unwrap_or_else(|| e.status().map_or(self.rejected, &refused_as));
        e.into_port_error(self.caller.system, reason)
    }

    /// Sends what `request` builds (once per attempt) until it succeeds, fails for good or the attempts
    /// run out, and maps the failure onto the port's errors.
    async fn send<Resp>(
        &self,
        path: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
        key: Option<&IdempotencyKey>,
        refused_as: impl Fn(u16) -> ReasonCode,
    ) -> Result<Resp, Error>
    where
        Resp: DeserializeOwned,
    {
        let request = &request;
        self.caller
            .retrying(path, key.map(IdempotencyKey::as_str), || async move {
                json_of(self.caller.authorized(request).await?, system_api_error).await
            })
            .await
            .map_err(|e| self.port_error(e, refused_as))
    }

    /// Tokens fetched so far (tests, and the proof that one token serves many calls).
    pub(crate) fn tokens_fetched(&self) -> u64 {
        self.caller.tokens_fetched()
    }
}
