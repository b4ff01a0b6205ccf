//! Where the backend's resources are (table, bus and queue names) and how the SDK reaches them.

use std::collections::BTreeMap;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use aws_smithy_types::retry::{ReconnectMode, RetryConfig};

use crate::error::AwsError;

/// The names the template gives the functions through their environment, plus what the operator tools
/// need besides (queue urls, an emulator endpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    /// An explicit endpoint (a `--endpoint-url` flag, moto). Without it the SDK resolves the endpoint
    /// itself, honouring `AWS_ENDPOINT_URL`.
    pub endpoint_url: Option<String>,
    /// Without it the SDK's region chain decides (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// A named profile of the shared config files (`--profile`); without it the default chain.
    pub profile: Option<String>,
    pub idempotency_table: String,
    pub saga_table: String,
    pub quarantine_table: String,
    /// The internal bus: where the functions publish workflow events (`EVENT_BUS_NAME`).
    pub event_bus_name: String,
    /// The channel bus: where channels (and a local run feeding sample events) put their events
    /// (`CHANNEL_BUS_NAME`). The functions never need it.
    pub channel_bus_name: Option<String>,
    /// The channel bus's archive (operator replays only).
    pub archive_name: Option<String>,
    /// Queue url by the queue's logical id in the template (`IngestQueue`, `IngestDLQ`, ...).
    pub queue_urls: BTreeMap<String, String>,
    /// How long a saga is kept after its last change (`SAGA_RETENTION_DAYS`; 0 or unset: kept until an
    /// operator deletes it). Its TTL attribute is moved forward by every write.
    pub saga_retention: Option<std::time::Duration>,
    /// How long a quarantine entry is kept after it was received (`QUARANTINE_RETENTION_DAYS`, default
    /// 90).
    pub quarantine_retention: std::time::Duration,
}

/// Days → a retention, for the settings above.
pub(crate) fn days(n: u64) -> std::time::Duration {
    std::time::Duration::from_secs(n * 24 * 3600)
}

/// The quarantine's retention when the deployment says nothing.
pub const DEFAULT_QUARANTINE_RETENTION_DAYS: u64 = 90;

impl AwsSettings {
    /// Reads the variables the template sets on every function.
    pub fn from_env() -> Result<Self, AwsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any source of variables (tests, a dotenv map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, AwsError> {
        let required = |name: &'static str| {
            lookup(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or(AwsError::MissingEnv(name))
        };
        // Whole days, at most ten years; a bad value stops the function at start rather than keeping
        // data for a surprising time.
        let number = |name: &'static str| -> Result<Option<u64>, AwsError> {
            match lookup(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n <= 3653)
                    .map(Some)
                    .ok_or(AwsError::BadEnv(name)),
            }
        };
        Ok(Self {
            endpoint_url: None,
            region: None,
            profile: None,
            idempotency_table: required("IDEMPOTENCY_TABLE")?,
            saga_table: required("SAGA_TABLE")?,
            quarantine_table: required("QUARANTINE_TABLE")?,
            event_bus_name: required("EVENT_BUS_NAME")?,
            channel_bus_name: lookup("CHANNEL_BUS_NAME").filter(|v| !v.trim().is_empty()),
            archive_name: None,
            queue_urls: BTreeMap::new(),
            saga_retention: match number("SAGA_RETENTION_DAYS")? {
                None | Some(0) => None,
                Some(n) => Some(days(n)),
            },
            quarantine_retention: days(
                number("QUARANTINE_RETENTION_DAYS")?.unwrap_or(DEFAULT_QUARANTINE_RETENTION_DAYS),
            ),
        })
    }

    pub fn with_endpoint_url(mut self, endpoint_url: impl Into<String>) -> Self {
        self.endpoint_url = Some(endpoint_url.into());
        self
    }

    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// The settings of a deployed stack from its resources, `(logical id, physical id)` as CloudFormation
    /// lists them: a table's or a bus's physical id is its name, a queue's is its URL.
    pub fn from_stack_resources<'a>(
        topology: &retail_sync_topology::Topology,
        resources: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, AwsError> {
        let physical: BTreeMap<&str, &str> = resources.into_iter().collect();
        let named = |id: &'static str| {
            physical
                .get(id)
                .map(|p| (*p).to_owned())
                .ok_or(AwsError::MissingResource(id))
        };
        let mut queue_urls = BTreeMap::new();
        for id in topology.queues.keys() {
            if let Some(url) = physical.get(id.as_str()) {
                queue_urls.insert(id.clone(), (*url).to_owned());
            }
        }
        Ok(Self {
            idempotency_table: named("IdempotencyTable")?,
            saga_table: named("SagaTable")?,
            quarantine_table: named("QuarantineTable")?,
            event_bus_name: named(retail_sync_topology::INTERNAL_BUS)?,
            channel_bus_name: physical
                .get(retail_sync_topology::CHANNEL_BUS)
                .map(|p| (*p).to_owned()),
            archive_name: topology
                .archives
                .first()
                .and_then(|a| physical.get(a.id.as_str()))
                .map(|p| (*p).to_owned()),
            queue_urls,
            quarantine_retention: days(DEFAULT_QUARANTINE_RETENTION_DAYS),
            ..Self::default()
        })
    }

    pub fn with_queue_url(mut self, logical_id: impl Into<String>, url: impl Into<String>) -> Self {
        self.queue_urls.insert(logical_id.into(), url.into());
        self
    }
}

/// The region emulators are addressed in when nothing else is said.
pub const EMULATOR_REGION: &str = "us-east-1";

fn loader(settings: &AwsSettings) -> aws_config::ConfigLoader {
    // Every SDK client of the process sends through `SdkHttp`: one TLS configuration with the connectors.
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(crate::http::SdkHttp);
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &settings.endpoint_url {
        loader = loader.endpoint_url(endpoint.clone());
    }
    loader
}

/// The SDK configuration for a real account: the default credential and region chains, with the
/// settings' overrides. Loading it resolves credentials and region, which is the expensive part; build
/// it once per process and derive every client from it (clients are cheap).
///
/// The process's TLS configuration is built here, before the first request rather than at it: a
/// function loads its root certificates in its init phase (which Lambda runs with a whole vCPU), not in
/// its first invocation, and a bundle that cannot be read (`CaBundleFile` naming a missing file) stops
/// the function at start with the reason instead of failing every request after.
pub async fn sdk_config(settings: &AwsSettings) -> Result<SdkConfig, AwsError> {
    retail_sync_http::tls()?;
    Ok(reusing_connections(loader(settings).load().await))
}

/// The loaded configuration with its retry settings kept (`AWS_MAX_ATTEMPTS`, `AWS_RETRY_MODE`) and
/// connections reused after a transient error. After a throttle or a 5xx the SDK would ask the HTTP
/// client to drop the connection it came on ("poisoning"); `SdkHttp` sends through `reqwest`'s pool,
/// which cannot drop one pooled connection on demand, and the SDK logged an error at every such retry
/// when it found no connection to drop. A connection that failed in transport is not pooled again anyway.
fn reusing_connections(config: SdkConfig) -> SdkConfig {
    let retry = config
        .retry_config()
        .cloned()
        .unwrap_or_else(RetryConfig::standard)
        .with_reconnect_mode(ReconnectMode::ReuseAllConnections);
    config.into_builder().retry_config(retry).build()
}

/// The SDK configuration for an emulator (moto): fixed dummy credentials, so nothing on the machine
/// (profiles, SSO, IMDS) is consulted, and `us-east-1` unless the settings name a region.
pub async fn emulator_sdk_config(settings: &AwsSettings) -> SdkConfig {
    let mut loader = loader(settings).credentials_provider(Credentials::new(
        "testing",
        "testing",
        None,
        None,
        "retail-sync-emulator",
    ));
    if settings.region.is_none() {
        loader = loader.region(Region::new(EMULATOR_REGION));
    }
    reusing_connections(loader.load().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    /// The retry settings a deployment gives (here 7 attempts, adaptive) survive; only reconnecting after
    /// a transient error is turned off.
    #[test]
    fn connections_are_reused_and_the_retry_settings_kept() {
        let given = RetryConfig::adaptive().with_max_attempts(7);
        let config = reusing_connections(SdkConfig::builder().retry_config(given).build());
        let retry = config.retry_config().unwrap();
        assert_eq!(retry.max_attempts(), 7);
        assert_eq!(retry.mode(), aws_smithy_types::retry::RetryMode::Adaptive);
        assert_eq!(retry.reconnect_mode(), ReconnectMode::ReuseAllConnections);
        // No retry settings at all: the SDK's standard ones.
        let config = reusing_connections(SdkConfig::builder().build());
        assert_eq!(config.retry_config().unwrap().max_attempts(), 3);
    }

    #[test]
    fn reads_the_names_the_template_gives_every_function() {
        let settings = AwsSettings::from_lookup(env(&[
            ("IDEMPOTENCY_TABLE", "idem"),
            ("SAGA_TABLE", "sagas"),
            ("QUARANTINE_TABLE", "quarantine"),
            ("EVENT_BUS_NAME", "bus"),
        ]))
        .unwrap();
        assert_eq!(settings.saga_table, "sagas");
        assert_eq!(settings.event_bus_name, "bus");
        assert_eq!(settings.endpoint_url, None);
    }

    #[test]
    fn retention_is_read_in_days_and_bad_values_stop_the_start() {
        let with = |extra: &[(&str, &str)]| {
            let mut pairs = vec![
                ("IDEMPOTENCY_TABLE", "i"),
                ("SAGA_TABLE", "s"),
                ("QUARANTINE_TABLE", "q"),
                ("EVENT_BUS_NAME", "b"),
            ];
            pairs.extend_from_slice(extra);
            AwsSettings::from_lookup(env(&pairs))
        };
        let d = with(&[]).unwrap();
        assert_eq!(d.saga_retention, None);
        assert_eq!(d.quarantine_retention, days(90));
        let s = with(&[
            ("SAGA_RETENTION_DAYS", "400"),
            ("QUARANTINE_RETENTION_DAYS", "30"),
        ])
        .unwrap();
        assert_eq!(s.saga_retention, Some(days(400)));
        assert_eq!(s.quarantine_retention, days(30));
        assert_eq!(
            with(&[("SAGA_RETENTION_DAYS", "0")]).unwrap().saga_retention,
            None
        );
        for bad in ["-1", "ten", "3654"] {
            let e = with(&[("QUARANTINE_RETENTION_DAYS", bad)]).unwrap_err();
            assert!(e.to_string().contains("QUARANTINE_RETENTION_DAYS"), "{e}");
        }
    }

    #[test]
    fn a_missing_variable_is_named() {
        let e =
            AwsSettings::from_lookup(env(&[("IDEMPOTENCY_TABLE", "idem"), ("SAGA_TABLE", "")])).unwrap_err();
        assert_eq!(e.to_string(), "environment variable SAGA_TABLE is not set");
    }

    #[test]
    fn a_stacks_resources_give_the_settings() {
        let template = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
        let topology = retail_sync_topology::Topology::load(std::path::Path::new(template)).unwrap();
        let resources = [
            ("IdempotencyTable", "st-IdempotencyTable-1"),
            ("SagaTable", "st-SagaTable-2"),
            ("QuarantineTable", "st-QuarantineTable-3"),
            ("InternalBus", "retail-sync-st-internal"),
            ("ChannelBus", "retail-sync-st-channels"),
            (
                "IngestDLQ",
                "https://sqs.eu-west-1.amazonaws.com/1/st-IngestDLQ-4",
            ),
            ("IngestRole", "st-IngestRole-5"),
        ];
        let s = AwsSettings::from_stack_resources(&topology, resources).unwrap();
        assert_eq!(s.saga_table, "st-SagaTable-2");
        assert_eq!(s.event_bus_name, "retail-sync-st-internal");
        assert_eq!(s.channel_bus_name.as_deref(), Some("retail-sync-st-channels"));
        assert_eq!(s.queue_urls.len(), 1);
        assert!(s.queue_urls["IngestDLQ"].ends_with("st-IngestDLQ-4"));
        let e = AwsSettings::from_stack_resources(&topology, resources[1..].iter().copied())
            .unwrap_err()
            .to_string();
        assert!(e.contains("IdempotencyTable"), "{e}");
    }
}
