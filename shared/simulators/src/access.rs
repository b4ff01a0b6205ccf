//! Who may call the simulators over HTTP, as a real ERP or loyalty platform would ask: an OAuth 2.0
//! token endpoint (client credentials, RFC 6749 §4.4), optionally an API key, and HTTP Basic with the
//! client's id and secret as user and password (an SAP communication user). Every route of the
//! system APIs (`/erp/v1/…`, `/loyalty/v1/…`) refuses a call without a valid bearer token or key with
//! 401, so every test that goes through HTTP proves the connectors authenticate.
//!
//! - `POST /oauth/token`, form `grant_type=client_credentials` (and optionally `scope`), the client
//!   authenticated by `Authorization: Basic` or by `client_id`/`client_secret` in the form → 200
//!   `{"access_token", "token_type": "Bearer", "expires_in"}` (no `expires_in` when tokens do not
//!   expire, as Salesforce answers); a wrong client → 401 `{"error": "invalid_client"}`; another grant →
//!   400 `{"error": "unsupported_grant_type"}`.
//! - [`Access::revoke_tokens`] makes every token issued so far invalid (an early revocation), and a
//!   short [`Access::with_token_ttl`] makes tokens expire mid-run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

/// The reference credentials of a local run (`ERP_CLIENT_ID`… default to these in the CLI): they open
/// nothing but a simulator on this machine.
pub const LOCAL_CLIENT_ID: &str = "retail-sync-local";
pub const LOCAL_CLIENT_SECRET: &str = "local-simulator-secret";
pub const LOCAL_API_KEY: &str = "local-simulator-api-key";

/// The token path on the simulator server.
pub const TOKEN_PATH: &str = "/oauth/token";

/// The simulators' access rules. Cheap to clone: clones share the issued tokens.
#[derive(Clone)]
pub struct Access {
    inner: Arc<Mutex<State>>,
}

struct State {
    client_id: String,
    client_secret: String,
    api_key: Option<String>,
    /// `None`: tokens never expire (only a revocation ends them).
    ttl: Option<Duration>,
    /// token → when it stops being valid.
    tokens: HashMap<String, Option<Instant>>,
    issued: u64,
    refused: u64,
}

/// Why a token request was refused: (status, RFC 6749 error code).
pub type TokenRefusal = (u16, &'static str);

/// A token as the endpoint answers it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IssuedToken {
    pub access_token: String,
    pub token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

impl Access {
    /// One OAuth client; tokens live an hour.
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(State {
                client_id: client_id.into(),
                client_secret: client_secret.into(),
                api_key: None,
                ttl: Some(Duration::from_secs(3600)),
                tokens: HashMap::new(),
                issued: 0,
                refused: 0,
            })),
        }
    }

    /// The reference client and API key of a local run.
    pub fn local() -> Self {
        Self::new(LOCAL_CLIENT_ID, LOCAL_CLIENT_SECRET).with_api_key(LOCAL_API_KEY)
    }

    /// Also accept this API key (header `x-api-key`).
    pub fn with_api_key(self, key: impl Into<String>) -> Self {
        self.state().api_key = Some(key.into());
        self
    }

    /// How long a token lives; `None`: until revoked.
    pub fn with_token_ttl(self, ttl: Option<Duration>) -> Self {
        self.state().ttl = ttl;
        self
    }

    /// The client's secret changes (a rotation at the identity provider): the old one is refused.
    pub fn set_client_secret(&self, secret: impl Into<String>) {
        self.state().client_secret = secret.into();
    }

    /// The platform's key changes (a rotation): the old one is refused from now on.
    pub fn set_api_key(&self, key: impl Into<String>) {
        self.state().api_key = Some(key.into());
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every token issued so far stops being valid.
    pub fn revoke_tokens(&self) {
        self.state().tokens.clear();
    }

    pub fn tokens_issued(&self) -> u64 {
        self.state().issued
    }

    /// Calls refused for lack of a valid credential.
    pub fn refused(&self) -> u64 {
        self.state().refused
    }

    /// The token endpoint: `authorization` is the request's header, `form` its decoded body.
    pub fn issue(
        &self,
        authorization: Option<&str>,
        form: &HashMap<String, String>,
    ) -> Result<IssuedToken, TokenRefusal> {
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return Err((400, "unsupported_grant_type"));
        }
        let (id, secret) = match authorization.and_then(basic) {
            Some(pair) => pair,
            None => match (form.get("client_id"), form.get("client_secret")) {
                (Some(id), Some(secret)) => (id.clone(), secret.clone()),
                _ => return Err((401, "invalid_client")),
            },
        };
        let mut state = self.state();
        if id != state.client_id || secret != state.client_secret {
            return Err((401, "invalid_client"));
        }
        let token = format!("sim-{:032x}", rand::random::<u128>());
        let ttl = state.ttl;
        state
            .tokens
            .insert(token.clone(), ttl.map(|t| Instant::now() + t));
        state.issued += 1;
        Ok(IssuedToken {
            access_token: token,
            token_type: "Bearer",
            expires_in: ttl.map(|t| t.as_secs().max(1)),
        })
    }

    /// Whether a call to a system API may proceed (counts the refusals).
    pub fn admits(&self, authorization: Option<&str>, api_key: Option<&str>) -> bool {
        let mut state = self.state();
        let by_token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .and_then(|t| state.tokens.get(t))
            .is_some_and(|until| until.is_none_or(|u| Instant::now() < u));
        let by_key = api_key.is_some_and(|k| state.api_key.as_deref() == Some(k));
        // HTTP Basic with the client's id and secret: the communication user of an SAP tenant.
        let by_user = authorization
            .and_then(basic)
            .is_some_and(|(user, password)| user == state.client_id && password == state.client_secret);
        if !(by_token || by_key || by_user) {
            state.refused += 1;
        }
        by_token || by_key || by_user
    }
}

/// `Basic base64(id:secret)` → (id, secret).
fn basic(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tokens_are_issued_to_the_client_alone_and_end_when_revoked() {
        let access = Access::new("app", "pw");
        let grant = [("grant_type", "client_credentials")];
        let basic_header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("app:pw")
        );
        let t = access.issue(Some(&basic_header), &form(&grant)).unwrap();
        assert_eq!(t.expires_in, Some(3600));
        let bearer = format!("Bearer {}", t.access_token);
        assert!(access.admits(Some(&bearer), None));
        let in_body = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("client_secret", "pw"),
        ]);
        assert!(access.issue(None, &in_body).is_ok());
        let wrong = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("client_secret", "guess"),
        ]);
        assert_eq!(access.issue(None, &wrong), Err((401, "invalid_client")));
        assert_eq!(
            access.issue(Some(&basic_header), &form(&[("grant_type", "password")])),
            Err((400, "unsupported_grant_type"))
        );
        access.revoke_tokens();
        assert!(!access.admits(Some(&bearer), None));
        assert!(!access.admits(None, None));
        assert!(!access.admits(None, Some("any")));
        assert_eq!(access.refused(), 3);
        assert_eq!(access.tokens_issued(), 2);
        let keyed = Access::new("app", "pw").with_api_key("k");
        assert!(keyed.admits(None, Some("k")));
    }

    #[test]
    fn a_token_expires_after_its_ttl() {
        let access = Access::new("app", "pw").with_token_ttl(Some(Duration::from_millis(20)));
        let in_body = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("client_secret", "pw"),
        ]);
        let t = access.issue(None, &in_body).unwrap();
        let bearer = format!("Bearer {}", t.access_token);
        assert!(access.admits(Some(&bearer), None));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!access.admits(Some(&bearer), None));
    }
}
