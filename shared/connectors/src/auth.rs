//! How a connector proves who it is to the ERP or the loyalty platform: an OAuth 2.0 client-credentials
//! token (RFC 6749 §4.4), an API key header or HTTP Basic (an SAP communication user), with the credentials read from a [`CredentialSource`]
//! (AWS Secrets Manager in a Lambda function, the environment locally).
//!
//! A token is kept until shortly before it expires (or, when the token endpoint gives no `expires_in`,
//! as Salesforce's does not, until the system refuses it). On a 401 the connector forgets the token and
//! the credentials it was made from, loads both again and retries the call once: a token revoked early
//! and a secret rotated under a running container are both absorbed without losing the message.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use serde::Deserialize;
use tokio::sync::Mutex;

use retail_sync_core::BoxError;

use crate::error::ConnectorError;

/// A secret string: never printed, never logged.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The credentials as stored: the JSON object of a Secrets Manager secret, or the same fields from the
/// environment. Which fields are needed depends on the [`AuthMethod`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// The API key's header, when the secret names one (else the configured one).
    #[serde(default)]
    pub header: Option<String>,
    /// HTTP Basic: a communication user (SAP) and its password.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
}

/// Where the credentials come from. Loaded on the first call and again after a 401 (a rotated secret).
#[async_trait]
pub trait CredentialSource: Send + Sync {
    async fn load(&self) -> Result<Credentials, BoxError>;
    /// Where they come from, for errors (`secret arn:…`, `ERP_CLIENT_ID/…`): never the values.
    fn describe(&self) -> String;
}

/// Credentials known up front (tests, and the environment variables of a local run).
pub struct StaticCredentials {
    pub credentials: Credentials,
    pub origin: String,
}

#[async_trait]
impl CredentialSource for StaticCredentials {
    async fn load(&self) -> Result<Credentials, BoxError> {
        Ok(self.credentials.clone())
    }

    fn describe(&self) -> String {
        self.origin.clone()
    }
}

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic` with the client id and secret (what every server must accept).
    Basic,
    /// `client_id` and `client_secret` in the form body (what Salesforce documents).
    Body,
}

/// The authentication a connector uses, from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    OAuth2ClientCredentials {
        token_url: String,
        scope: Option<String>,
        client_auth: ClientAuth,
    },
    ApiKey {
        /// Used when the credentials name no header.
        header: String,
    },
    /// HTTP Basic with a user and password (an SAP communication user), over TLS only.
    Basic,
}

/// The API key header when nothing else is said.
pub const DEFAULT_API_KEY_HEADER: &str = "x-api-key";

/// The token endpoint's answer (RFC 6749 §5.1); extra fields (Salesforce's `instance_url`, …) ignored.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

struct Token {
    value: HeaderValue,
    /// `None`: valid until the system refuses it.
    renew_at: Option<Instant>,
}

#[derive(Default)]
struct Cache {
    credentials: Option<Credentials>,
    token: Option<Token>,
}

/// One connector's authentication state, shared by its clones: one token per container.
pub(crate) struct Authenticator {
    method: AuthMethod,
    source: Arc<dyn CredentialSource>,
    /// Held while a token is fetched, so that concurrent calls wait for one fetch instead of each
    /// making their own.
    cache: Mutex<Cache>,
    tokens_fetched: std::sync::atomic::AtomicU64,
}

/// Renew a token this long before it expires, or a tenth of its life when that is shorter.
const RENEW_MARGIN: Duration = Duration::from_secs(60);

impl Authenticator {
    pub(crate) fn new(method: AuthMethod, source: Arc<dyn CredentialSource>) -> Self {
        Self {
            method,
            source,
            cache: Mutex::new(Cache::default()),
            tokens_fetched: Default::default(),
        }
    }

    pub(crate) fn tokens_fetched(&self) -> u64 {
        self.tokens_fetched.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The header to send with a call: the current token, fetched first if there is none or it is about
    /// to expire; or the API key.
    pub(crate) async fn header(
        &self,
        client: &reqwest::Client,
    ) -> Result<(HeaderName, HeaderValue), ConnectorError> {
        let mut cache = self.cache.lock().await;
        let loaded_earlier = cache.credentials.is_some();
        let credentials = match &cache.credentials {
            Some(c) => c.clone(),
            None => {
                let loaded = self.load().await?;
                cache.credentials = Some(loaded.clone());
                loaded
            }
        };
        match &self.method {
            AuthMethod::ApiKey { header } => {
                let key = credentials
                    .api_key
                    .as_ref()
                    .ok_or_else(|| self.missing("api_key"))?;
                let name = credentials.header.as_deref().unwrap_or(header);
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| ConnectorError::Auth {
                    message: format!("API key header {name:?} is not a valid header name"),
                    retryable: false,
                })?;
                Ok((name, sensitive(key.expose())?))
            }
            AuthMethod::Basic => {
                let user = credentials
                    .username
                    .as_deref()
                    .ok_or_else(|| self.missing("username"))?;
                let password = credentials
                    .password
                    .as_ref()
                    .ok_or_else(|| self.missing("password"))?;
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.expose()));
                Ok((AUTHORIZATION, sensitive(&format!("Basic {encoded}"))?))
            }
            AuthMethod::OAuth2ClientCredentials {
                token_url,
                scope,
                client_auth,
            } => {
                let fresh = cache
                    .token
                    .as_ref()
                    .filter(|t| t.renew_at.is_none_or(|at| Instant::now() < at));
                if let Some(token) = fresh {
                    return Ok((AUTHORIZATION, token.value.clone()));
                }
                let fetched = self
                    .fetch_token(client, &credentials, token_url, scope.as_deref(), *client_auth)
                    .await;
                let token = match fetched {
                    // The token endpoint refused credentials this container loaded earlier: the secret may
                    // have been rotated since. Load it again and ask once more.
                    Err(ConnectorError::Auth { retryable: false, .. }) if loaded_earlier => {
                        let reloaded = self.load().await?;
                        cache.credentials = Some(reloaded.clone());
                        self.fetch_token(client, &reloaded, token_url, scope.as_deref(), *client_auth)
                            .await?
                    }
                    other => other?,
                };
                let value = token.value.clone();
                cache.token = Some(token);
                Ok((AUTHORIZATION, value))
            }
        }
    }

    /// The system answered 401 to a call made with `used`: forget that token (unless another call has
    /// already replaced it) and the credentials, so that the next [`header`](Self::header) loads both
    /// again (an API key too: its secret may have been rotated).
    pub(crate) async fn refused(&self, used: &HeaderValue) {
        let mut cache = self.cache.lock().await;
        if cache.token.as_ref().is_none_or(|t| t.value == used) {
            cache.token = None;
            cache.credentials = None;
        }
    }

    /// The credentials from their source; a source that cannot answer (Secrets Manager down) is a
    /// passing failure.
    async fn load(&self) -> Result<Credentials, ConnectorError> {
        self.source.load().await.map_err(|e| ConnectorError::Auth {
            message: format!("cannot load credentials from {}: {e}", self.source.describe()),
            retryable: true,
        })
    }

    fn missing(&self, field: &str) -> ConnectorError {
        ConnectorError::Auth {
            message: format!("the credentials from {} have no {field}", self.source.describe()),
            retryable: false,
        }
    }

    async fn fetch_token(
        &self,
        client: &reqwest::Client,
        credentials: &Credentials,
        token_url: &str,
        scope: Option<&str>,
        client_auth: ClientAuth,
    ) -> Result<Token, ConnectorError> {
        let id = credentials
            .client_id
            .as_deref()
            .ok_or_else(|| self.missing("client_id"))?;
        let secret = credentials
            .client_secret
            .as_ref()
            .ok_or_else(|| self.missing("client_secret"))?;
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let mut request = client.post(token_url);
        match client_auth {
            ClientAuth::Basic => request = request.basic_auth(id, Some(secret.expose())),
            ClientAuth::Body => {
                form.push(("client_id", id));
                form.push(("client_secret", secret.expose()));
            }
        }
        let started = Instant::now();
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| ConnectorError::Auth {
                // reqwest's error names the URL, never the form body.
                message: format!("token request failed: {e}"),
                retryable: true,
            })?;
        let status = response.status();
        if !status.is_success() {
            // RFC 6749 §5.2: `{"error": "invalid_client", …}`; only the error code is kept, a
            // description may echo what was sent.
            let code = response
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_default();
            return Err(ConnectorError::Auth {
                message: format!("the token endpoint answered {status} {code}"),
                // A refusal of the credentials stays a refusal until someone fixes them; an outage
                // of the endpoint may pass.
                retryable: matches!(status.as_u16(), 408 | 429 | 500..=599),
            });
        }
        let body: TokenResponse = response.json().await.map_err(|e| ConnectorError::Auth {
            message: format!("unreadable token response: {e}"),
            retryable: true,
        })?;
        if let Some(kind) = &body.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(ConnectorError::Auth {
                message: format!("token type {kind:?} is not Bearer"),
                retryable: false,
            });
        }
        self.tokens_fetched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(expires_in = body.expires_in, "connector token fetched");
        // An absurd `expires_in` (beyond what an Instant can hold) is treated as no expiry.
        let renew_at = body.expires_in.and_then(|secs| {
            let life = Duration::from_secs(secs);
            started.checked_add(life.saturating_sub(RENEW_MARGIN.min(life / 10)))
        });
        Ok(Token {
            value: sensitive(&format!("Bearer {}", body.access_token))?,
            renew_at,
        })
    }
}

/// A header value marked sensitive, so that no debug output of a request shows it.
fn sensitive(value: &str) -> Result<HeaderValue, ConnectorError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| ConnectorError::Auth {
        message: "the credential cannot be sent as an HTTP header".to_owned(),
        retryable: false,
    })?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let c: Credentials =
            serde_json::from_str(r#"{"client_id": "app", "client_secret": "s3cr3t"}"#).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("app"));
    }
}
