//! Where a connector sends its calls and how patiently.

use std::time::Duration;

use crate::error::ConnectorError;

#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// The system's root, e.g. `http://127.0.0.1:8080`; the contract's paths (`/erp/v1/sales`, …) are
    /// appended to it.
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
        let base_url =
            lookup(&url_var)
                .filter(|u| !u.trim().is_empty())
                .ok_or_else(|| ConnectorError::Config {
                    message: format!(
                        "{url_var} is not set; it must hold the system's root URL, e.g. http://127.0.0.1:8080"
                    ),
                    var: url_var.clone(),
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

    /// Refuses a base URL that is not an absolute http(s) URL, naming `var` (where it came from).
    pub(crate) fn check_base_url(&self, var: &str) -> Result<(), ConnectorError> {
        match reqwest::Url::parse(&self.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(()),
            Ok(_) => Err(ConnectorError::Config {
                var: var.to_owned(),
                message: format!("{:?} is not an http(s) URL", self.base_url),
            }),
            Err(e) => Err(ConnectorError::Config {
                var: var.to_owned(),
                message: format!("{:?} is not a URL: {e}", self.base_url),
            }),
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
        let vars = lookup(&[("ERP_BASE_URL", "http://h"), ("ERP_TIMEOUT_MS", "5s")]);
        let err = HttpConfig::from_lookup("ERP", vars).unwrap_err().to_string();
        assert!(err.contains("ERP_TIMEOUT_MS"), "{err}");
    }
}
