//! Where a connector sends its calls, how patiently, and how it authenticates.

use std::time::Duration;

use crate::auth::{AuthMethod, ClientAuth, Credentials, DEFAULT_API_KEY_HEADER, Secret};
use crate::error::ConnectorError;

#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// The system's root, e.g. `https://erp.example.com` (`http://` only on a loopback address); the
    /// contract's paths (`/erp/v1/sales`, …) are appended to it.
    pub base_url: String,
    pub connect_timeout: Duration,
    /// Per attempt, connect included.
    pub request_timeout: Duration,
    /// Attempts in all, the first included; at least one is always made.
    pub max_attempts: u32,
    /// First delay between attempts; doubles per attempt up to `max_backoff`, and jitter adds up to as
    /// much again so that many workers retrying together spread out.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl HttpConfig {
    /// The defaults, for `base_url`.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_attempts: 4,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }

    /// Reads `{prefix}_BASE_URL` (required) and, optionally, `{prefix}_TIMEOUT_MS` (request timeout),
    /// `{prefix}_CONNECT_TIMEOUT_MS` and `{prefix}_MAX_ATTEMPTS`; e.g. `from_env("ERP")`.
    pub fn from_env(prefix: &str) -> Result<Self, ConnectorError> {
        Self::from_lookup(prefix, |name| std::env::var(name).ok())
    }

    /// [`HttpConfig::from_env`] over any source of variables (tests, a config file).
    pub fn from_lookup(
        prefix: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConnectorError> {
        let var = |suffix: &str| format!("{prefix}_{suffix}");
        let url_var = var("BASE_URL");
        let base_url = lookup(&url_var).filter(|u| !u.trim().is_empty()).ok_or_else(|| {
            ConnectorError::Config {
                message: format!(
                    "{url_var} is not set; it must hold the system's root URL, e.g. https://erp.example.com"
                ),
                var: url_var.clone(),
            }
        })?;
        let mut config = Self::new(base_url.trim());
        config.check_base_url(&url_var)?;
        let number = |name: String| -> Result<Option<u64>, ConnectorError> {
            lookup(&name)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|e| ConnectorError::Config {
                        message: format!("{v:?} is not a whole number: {e}"),
                        var: name.clone(),
                    })
                })
                .transpose()
        };
        if let Some(ms) = number(var("TIMEOUT_MS"))? {
            config.request_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = number(var("CONNECT_TIMEOUT_MS"))? {
            config.connect_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = number(var("MAX_ATTEMPTS"))? {
            config.max_attempts = u32::try_from(n).unwrap_or(u32::MAX);
        }
        Ok(config)
    }

    /// Refuses a base URL that is not an absolute https URL (or http on a loopback address), naming
    /// `var` (where it came from).
    pub(crate) fn check_base_url(&self, var: &str) -> Result<(), ConnectorError> {
        check_url(&self.base_url, var)
    }
}

/// A connector's mapping file (see [`retail_sync_contracts::mapping::mapping_text`]): its text and the
/// variable it came from, for errors.
pub(crate) fn mapping_text(
    var: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(String, String), ConnectorError> {
    retail_sync_contracts::mapping::mapping_text(var, lookup).map_err(|e| ConnectorError::Config {
        var: e.var,
        message: e.message,
    })
}

/// Credentials and calls travel over TLS: `https://` always, `http://` only to this machine (the
/// simulators, a local proxy), where nothing crosses a network.
pub(crate) fn check_url(url: &str, var: &str) -> Result<(), ConnectorError> {
    let refuse = |message: String| {
        Err(ConnectorError::Config {
            var: var.to_owned(),
            message,
        })
    };
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "https" && u.has_host() => Ok(()),
        Ok(u) if u.scheme() == "http" && is_loopback(&u) => Ok(()),
        Ok(u) if u.scheme() == "http" => refuse(format!(
            "{url:?} is plain http to another machine; use https (http is accepted only on a loopback address)"
        )),
        Ok(_) => refuse(format!("{url:?} is not an https URL")),
        Err(e) => refuse(format!("{url:?} is not a URL: {e}")),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || ip.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl AuthMethod {
    /// Reads `{prefix}_AUTH` (`oauth2-client-credentials`, `api-key` or `basic`, required) and what it needs:
    /// `{prefix}_TOKEN_URL` (required for OAuth 2.0), `{prefix}_SCOPE` and `{prefix}_TOKEN_AUTH`
    /// (`basic`, the default, or `body`); `{prefix}_API_KEY_HEADER` (default `x-api-key`).
    pub fn from_lookup(
        prefix: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConnectorError> {
        let var = |suffix: &str| format!("{prefix}_{suffix}");
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let config = |var: String, message: String| ConnectorError::Config { var, message };
        let auth_var = var("AUTH");
        match get(&auth_var).as_deref() {
            Some("oauth2-client-credentials") => {
                let url_var = var("TOKEN_URL");
                let token_url = get(&url_var).ok_or_else(|| {
                    config(
                        url_var.clone(),
                        format!("{url_var} is not set; OAuth 2.0 needs the token endpoint's URL"),
                    )
                })?;
                check_url(&token_url, &url_var)?;
                let client_auth = match get(&var("TOKEN_AUTH")).as_deref() {
                    None | Some("basic") => ClientAuth::Basic,
                    Some("body") => ClientAuth::Body,
                    Some(other) => {
                        return Err(config(
                            var("TOKEN_AUTH"),
                            format!("{other:?} is neither basic nor body"),
                        ));
                    }
                };
                Ok(Self::OAuth2ClientCredentials {
                    token_url,
                    scope: get(&var("SCOPE")),
                    client_auth,
                })
            }
            Some("basic") => Ok(Self::Basic),
            Some("api-key") => Ok(Self::ApiKey {
                header: get(&var("API_KEY_HEADER")).unwrap_or_else(|| DEFAULT_API_KEY_HEADER.to_owned()),
            }),
            Some(other) => Err(config(
                auth_var,
                format!("{other:?} is none of oauth2-client-credentials, api-key, basic"),
            )),
            None => Err(config(
                auth_var.clone(),
                format!("{auth_var} is not set; it must be oauth2-client-credentials, api-key or basic"),
            )),
        }
    }
}

impl Credentials {
    /// The credentials of a local run, from `{prefix}_CLIENT_ID`, `{prefix}_CLIENT_SECRET`,
    /// `{prefix}_API_KEY`, `{prefix}_USERNAME` and `{prefix}_PASSWORD` (on AWS they come from Secrets
    /// Manager instead).
    pub fn from_lookup(prefix: &str, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |suffix: &str| lookup(&format!("{prefix}_{suffix}")).filter(|v| !v.is_empty());
        Self {
            client_id: get("CLIENT_ID"),
            client_secret: get("CLIENT_SECRET").map(Secret::new),
            api_key: get("API_KEY").map(Secret::new),
            header: None,
            username: get("USERNAME"),
            password: get("PASSWORD").map(Secret::new),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn only_the_base_url_is_required_and_the_rest_defaults() {
        let config =
            HttpConfig::from_lookup("ERP", lookup(&[("ERP_BASE_URL", "http://127.0.0.1:8080")])).unwrap();
        assert_eq!(config, HttpConfig::new("http://127.0.0.1:8080"));
        assert_eq!(config.request_timeout, Duration::from_secs(5));
        assert_eq!(config.max_attempts, 4);
    }

    #[test]
    fn timeouts_and_attempts_can_be_set_per_system() {
        let vars = lookup(&[
            ("LOYALTY_BASE_URL", "https://loyalty.example.com"),
            ("LOYALTY_TIMEOUT_MS", "750"),
            ("LOYALTY_CONNECT_TIMEOUT_MS", "200"),
            ("LOYALTY_MAX_ATTEMPTS", "2"),
            ("ERP_TIMEOUT_MS", "1"),
        ]);
        let config = HttpConfig::from_lookup("LOYALTY", vars).unwrap();
        assert_eq!(config.request_timeout, Duration::from_millis(750));
        assert_eq!(config.connect_timeout, Duration::from_millis(200));
        assert_eq!(config.max_attempts, 2);
    }

    #[test]
    fn a_missing_or_bad_setting_names_its_variable() {
        let err = HttpConfig::from_lookup("ERP", lookup(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ERP_BASE_URL is not set"), "{err}");
        let err = HttpConfig::from_lookup("ERP", lookup(&[("ERP_BASE_URL", "localhost:8080")])).unwrap_err();
        assert!(err.to_string().contains("ERP_BASE_URL"), "{err}");
        let vars = lookup(&[("ERP_BASE_URL", "https://h"), ("ERP_TIMEOUT_MS", "5s")]);
        let err = HttpConfig::from_lookup("ERP", vars).unwrap_err().to_string();
        assert!(err.contains("ERP_TIMEOUT_MS"), "{err}");
    }

    #[test]
    fn plain_http_is_refused_except_on_loopback() {
        for ok in [
            "https://erp.example.com",
            "http://127.0.0.1:8080",
            "http://localhost:9",
            "http://[::1]:80",
        ] {
            assert!(check_url(ok, "V").is_ok(), "{ok}");
        }
        for refused in [
            "http://erp.example.com",
            "http://10.0.0.5",
            "ftp://h",
            "erp.example.com",
        ] {
            let e = check_url(refused, "ERP_BASE_URL").unwrap_err().to_string();
            assert!(e.contains("ERP_BASE_URL"), "{refused}: {e}");
        }
        let e = HttpConfig::from_lookup("ERP", lookup(&[("ERP_BASE_URL", "http://erp.example.com")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("use https"), "{e}");
    }

    #[test]
    fn the_auth_method_is_configuration_and_names_what_is_missing() {
        let method = AuthMethod::from_lookup(
            "ERP",
            lookup(&[
                ("ERP_AUTH", "oauth2-client-credentials"),
                ("ERP_TOKEN_URL", "https://login.example.com/oauth2/token"),
                ("ERP_SCOPE", "erp.write"),
                ("ERP_TOKEN_AUTH", "body"),
            ]),
        )
        .unwrap();
        assert_eq!(
            method,
            AuthMethod::OAuth2ClientCredentials {
                token_url: "https://login.example.com/oauth2/token".into(),
                scope: Some("erp.write".into()),
                client_auth: ClientAuth::Body,
            }
        );
        let key = AuthMethod::from_lookup("LOYALTY", lookup(&[("LOYALTY_AUTH", "api-key")])).unwrap();
        assert_eq!(
            key,
            AuthMethod::ApiKey {
                header: "x-api-key".into()
            }
        );
        for (vars, named) in [
            (vec![], "ERP_AUTH"),
            (vec![("ERP_AUTH", "magic")], "ERP_AUTH"),
            (vec![("ERP_AUTH", "oauth2-client-credentials")], "ERP_TOKEN_URL"),
            (
                vec![
                    ("ERP_AUTH", "oauth2-client-credentials"),
                    ("ERP_TOKEN_URL", "http://login.example.com/token"),
                ],
                "ERP_TOKEN_URL",
            ),
        ] {
            let e = AuthMethod::from_lookup("ERP", lookup(&vars))
                .unwrap_err()
                .to_string();
            assert!(e.contains(named), "{vars:?}: {e}");
        }
    }
}
