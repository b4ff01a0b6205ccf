//! The deployment's settings: outage policy, hold lifetime, loyalty timeout (from the environment).

use std::time::Duration;

use serde::{Deserialize, Serialize};

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
}
