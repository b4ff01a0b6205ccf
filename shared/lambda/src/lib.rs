//! Lambda glue: what every function binary shares. A function's `main` is one line,
//! `start(run::<steps::Ingest>())` for a workflow step (chosen at compile time, so the binary links only
//! that step and its connectors), `start(run_http("<binary>"))` for the redemption API; this crate turns
//! the environment into adapters, builds the step the binary names, and serves SQS batches with partial
//! batch responses (or HTTP API requests).
//!
//! # Layout
//! - [`handler`]: SQS event → step batch → `SqsBatchResponse` (the ids to redeliver).
//! - [`http`]: HTTP API / Function URL event (payload 2.0) ↔ the redemption API's request and response.
//! - [`emf`]: business metrics as CloudWatch Embedded Metric Format lines.
//! - [`telemetry`]: JSON logs in which every line of a message carries its step and correlation id.
//! - [`secrets`]: connector credentials from Secrets Manager (or the environment).
//! - [`confirm`]: the scheduled confirmation of pending points whose return window ended.
//! - [`reconcile`]: the scheduled reconciliation (its report to S3, its mismatches announced).
//! - [`webhooks`]: the webhook ingress (platforms' signed HTTPS deliveries onto the channel bus).
//! - [`run`], [`run_http`]: wiring from environment variables (the SAM template sets them).
//! - [`start`]: the one-threaded runtime every function runs on.

pub mod confirm;
pub mod emf;
pub mod handler;
pub mod http;
pub mod reconcile;
pub mod secrets;
pub mod telemetry;
pub mod webhooks;

/// The workflow steps a function's `main` names (`run::<steps::Ingest>()`).
pub use retail_sync_core::steps;

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};

use retail_sync_aws::{AwsBackend, AwsClients, AwsSettings, EventBus, SourceQueues, sdk_config};
use retail_sync_contracts::ChannelPlatform;
use retail_sync_contracts::IngestLimits;
use retail_sync_core::error::{BoxError, describe};
use retail_sync_core::guard::{BreakerSettings, Downstream, GuardedErp, GuardedLoyalty};
use retail_sync_core::idempotency::IdempotencyPolicy;
use retail_sync_core::ports::{ChannelOutcomes, Clock, SystemClock};
use retail_sync_core::runner::Backoff;
use retail_sync_core::steps::{Base, Kind, Wiring};
use retail_sync_redemption::{RedemptionApi, RedemptionConfig};

/// A failed message's wait on AWS: 1 minute, then four times longer per receive up to 2 hours, so the
/// five receives before the DLQ span about 85 minutes (60 + 240 + 960 + 3,840 s): an outage of the ERP
/// or the loyalty platform shorter than that is ridden out without a DLQ (a `Retry-After` or an open
/// breaker may ask more).
pub const LAMBDA_BACKOFF: Backoff = Backoff {
    first: std::time::Duration::from_secs(60),
    factor: 4,
    max: std::time::Duration::from_secs(7_200),
};

/// Runs a function's `main` to its end on one thread: every function's `main` is
/// `retail_sync_lambda::start(…)`. Lambda hands a function one invocation at a time and, at the
/// template's 128 to 512 MB, a fraction of a vCPU, and a batch's messages are handled one after the
/// other (`retail_sync_core::batch`): a multi-threaded runtime's worker threads had nothing to run in
/// parallel, and cost start time and memory (README, "Cold start").
pub fn start(
    main: impl std::future::Future<Output = Result<(), lambda_runtime::Error>>,
) -> Result<(), lambda_runtime::Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(main)
}

/// A function EventBridge Scheduler starts (the reconciliation, the confirmation of pending points):
/// wired once per container, then handling each invocation's payload.
#[async_trait::async_trait]
pub(crate) trait Scheduled: Send + Sync + 'static {
    type Answer: serde::Serialize + Send;
    async fn handle(&self, payload: serde_json::Value) -> anyhow::Result<Self::Answer>;
}

/// Serves a [`Scheduled`] function under the Lambda runtime API; a wiring error is logged and ends the
/// process, a handling error is the invocation's error (what the function's `Errors` alarm counts).
pub(crate) async fn serve_scheduled<F: Scheduled>(
    wire: impl std::future::Future<Output = anyhow::Result<F>>,
) -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let function = Arc::new(
        wire.await
            .inspect_err(|e| tracing::error!(error = %describe(e.as_ref()), "cannot start"))?,
    );
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let function = function.clone();
        async move {
            function
                .handle(event.payload)
                .await
                .map_err(|e| lambda_runtime::Error::from(describe(e.as_ref())))
        }
    }))
    .await
}

/// Runs the workflow step `K` under the Lambda runtime API. The step is chosen at compile time (a
/// function's `main` names it) so that the binary links that step and the connectors it uses, not every
/// step's.
pub async fn run<K: Kind>() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let runner = Arc::new(
        wire::<K>()
            .await
            .inspect_err(|e| tracing::error!(error = %describe(e.as_ref()), "cannot start"))?,
    );
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<aws_lambda_events::sqs::SqsEvent>| {
            let runner = runner.clone();
            async move { Ok::<_, lambda_runtime::Error>(runner.handle(event.payload).await) }
        },
    ))
    .await
}

/// A port the step does not use (not in its `Kind::PORTS`): nothing of its connector is linked.
fn unused(port: &'static str) -> BoxError {
    format!("the {port} is not connected in this function").into()
}

/// The step `K` and its adapters, from the environment. Each port is connected only if `K::PORTS`
/// names it: the conditions are constants, so the optimiser drops the other branches and the linker
/// their connectors. (A copy of `K::PORTS` in a local would not do: kept across an `.await`, it is a
/// field of the future, which the optimiser does not see as constant.)
async fn wire<K: Kind>() -> anyhow::Result<handler::Function> {
    let settings = AwsSettings::from_env()?;
    let sdk = sdk_config(&settings).await?;
    let clients = AwsClients::new(&sdk);
    let sqs = clients.sqs.clone();
    // Only the platform mappers publish to the channel bus (their template sets CHANNEL_BUS_NAME).
    let channel_bus = EventBus::channels(clients.eventbridge.clone(), &settings);
    let backend = Arc::new(AwsBackend::new(&clients, settings));
    let namespace = std::env::var("METRICS_NAMESPACE").unwrap_or_else(|_| "RetailSync".into());
    let metrics = Arc::new(emf::EmfMetrics::new(namespace, K::BINARY));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // One Secrets Manager client for every port whose connector reads a secret, made on the first:
    // a function whose ports read none (`ingest`) neither builds nor links it.
    let secrets = std::cell::OnceCell::new();
    let secrets_client = || {
        secrets
            .get_or_init(|| aws_sdk_secretsmanager::Client::new(&sdk))
            .clone()
    };
    // The connectors read their settings only when the step needs them: `ingest` has none.
    let wiring = Wiring {
        base: Base {
            idempotency: backend.clone(),
            sagas: backend.clone(),
            clock,
            metrics: metrics.clone(),
            policy: IdempotencyPolicy::default(),
        },
        limits: IngestLimits::default(),
        // Each behind its breaker (this container's; the event source's MaximumConcurrency is the cap).
        erp: if K::PORTS.erp {
            let secrets = secrets_client();
            Arc::new(move || {
                let auth = secrets::auth_from_env("ERP", &secrets)?;
                // The dialect ERP_KIND names: the system API, or SAP S/4HANA's OData.
                let erp = retail_sync_connectors::erp_from_env(auth)?;
                Ok(Arc::new(GuardedErp {
                    inner: erp,
                    guard: Downstream::new("erp", BreakerSettings::default(), None),
                }))
            })
        } else {
            Arc::new(|| Err(unused("ERP")))
        },
        loyalty: if K::PORTS.loyalty {
            let secrets = secrets_client();
            Arc::new(move || {
                let auth = secrets::auth_from_env("LOYALTY", &secrets)?;
                // The dialect LOYALTY_KIND names: the system API, or Salesforce Loyalty Management.
                let loyalty = retail_sync_connectors::loyalty_from_env(auth)?;
                Ok(Arc::new(GuardedLoyalty {
                    inner: loyalty,
                    guard: Downstream::new("loyalty", BreakerSettings::default(), None),
                }))
            })
        } else {
            Arc::new(|| Err(unused("loyalty platform")))
        },
        publisher: backend.clone(),
        channel_bus: Arc::new(move || match &channel_bus {
            Some(bus) => Ok(Arc::new(bus.clone())),
            None => Err("CHANNEL_BUS_NAME is not set".into()),
        }),
        // The file SHOPIFY_MAPPING / ADOBE_COMMERCE_MAPPING holds (the template passes its JSON).
        channel_mapping: if K::PORTS.channel {
            Arc::new(|platform| {
                Ok(retail_sync_channels::mapper_from_lookup(platform, |v| {
                    std::env::var(v).ok()
                })?)
            })
        } else {
            Arc::new(|_| Err(unused("platform mapping")))
        },
        // The platforms' order APIs, for notify-channel only, each when its base URL is set.
        channel_outcomes: if K::PORTS.channel_outcomes {
            let outcomes = channel_outcomes(&secrets_client())?;
            Arc::new(move |platform| outcomes.get(&platform).cloned())
        } else {
            Arc::new(|_| None)
        },
        member_systems: if K::PORTS.member_systems {
            let secrets = secrets_client();
            Arc::new(move || {
                let loyalty = Downstream::new("loyalty", BreakerSettings::default(), None);
                let erp = Downstream::new("erp", BreakerSettings::default(), None);
                Ok(member_systems(&secrets)?.guarded(&loyalty, &erp))
            })
        } else {
            Arc::new(|| Err(unused("member systems")))
        },
        ownership: Arc::new(
            retail_sync_core::members::Ownership::from_lookup(|v| std::env::var(v).ok())
                .map_err(anyhow::Error::msg)?,
        ),
        return_windows: retail_sync_core::settlement::ReturnWindows::from_lookup(|v| std::env::var(v).ok())
            .map_err(anyhow::Error::msg)?,
        enrolment: retail_sync_core::members::Enrolment::from_lookup(|v| std::env::var(v).ok())
            .map_err(anyhow::Error::msg)?,
        quarantine: backend,
    };
    Ok(handler::Function {
        runner: wiring.runner_of::<K>()?,
        metrics,
        visibility: Some((Arc::new(SourceQueues::new(sqs)), LAMBDA_BACKOFF)),
    })
}

/// The systems that keep members, each as far as its connector carries them: the loyalty platform and
/// the ERP through their system APIs (`*_KIND` `system-api`; the SAP and Salesforce connectors do not
/// carry members yet), the CRM when `CRM_BASE_URL` is set.
fn member_systems(
    secrets: &aws_sdk_secretsmanager::Client,
) -> Result<retail_sync_core::ports::MemberSystems, retail_sync_connectors::ConnectorError> {
    use retail_sync_connectors::{ErpKind, HttpConfig, LoyaltyKind};
    let lookup = |name: &str| std::env::var(name).ok();
    let set = |name: &str| lookup(name).is_some_and(|v| !v.trim().is_empty());
    let mut systems = retail_sync_core::ports::MemberSystems::default();
    if set("LOYALTY_BASE_URL") && LoyaltyKind::from_lookup(lookup)? == LoyaltyKind::SystemApi {
        let auth = secrets::auth_from_env("LOYALTY", secrets)?;
        systems.loyalty = Some(Arc::new(retail_sync_connectors::HttpLoyalty::new(
            &HttpConfig::from_env("LOYALTY")?,
            auth,
        )?));
    }
    if set("ERP_BASE_URL") && ErpKind::from_lookup(lookup)? == ErpKind::SystemApi {
        let auth = secrets::auth_from_env("ERP", secrets)?;
        systems.erp = Some(Arc::new(retail_sync_connectors::HttpErp::new(
            &HttpConfig::from_env("ERP")?,
            auth,
        )?));
    }
    if set("CRM_BASE_URL") {
        let auth = secrets::auth_from_env("CRM", secrets)?;
        systems.crm = Some(Arc::new(retail_sync_connectors::HttpCrm::new(
            &HttpConfig::from_env("CRM")?,
            auth,
        )?));
    }
    Ok(systems)
}

/// The order APIs outcomes are told to: Shopify's Admin GraphQL API (`SHOPIFY_ADMIN_BASE_URL`, its
/// access token from `SHOPIFY_ADMIN_CREDENTIALS_SECRET_ARN`) and Adobe Commerce's REST API
/// (`ADOBE_COMMERCE_BASE_URL`, `ADOBE_COMMERCE_CREDENTIALS_SECRET_ARN`), each only when configured.
fn channel_outcomes(
    secrets: &aws_sdk_secretsmanager::Client,
) -> anyhow::Result<std::collections::HashMap<ChannelPlatform, Arc<dyn ChannelOutcomes>>> {
    let lookup = |name: &str| std::env::var(name).ok();
    let configured =
        |prefix: &str| lookup(&format!("{prefix}_BASE_URL")).is_some_and(|u| !u.trim().is_empty());
    let mut out: std::collections::HashMap<ChannelPlatform, Arc<dyn ChannelOutcomes>> = Default::default();
    if configured("SHOPIFY_ADMIN") {
        let auth = secrets::auth_from_env("SHOPIFY_ADMIN", secrets)?;
        if let Some(shopify) = retail_sync_connectors::ShopifyAdmin::from_lookup(auth, lookup)? {
            out.insert(ChannelPlatform::Shopify, Arc::new(shopify));
        }
    }
    if configured("ADOBE_COMMERCE") {
        let auth = secrets::auth_from_env("ADOBE_COMMERCE", secrets)?;
        if let Some(adobe) = retail_sync_connectors::AdobeCommerceRest::from_lookup(auth, lookup)? {
            out.insert(ChannelPlatform::AdobeCommerce, Arc::new(adobe));
        }
    }
    Ok(out)
}

/// Runs the HTTP function `binary` (the redemption API) under the Lambda runtime API; its events come
/// from an API Gateway HTTP API or a Function URL (payload format 2.0).
pub async fn run_http(binary: &'static str) -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let api = Arc::new(
        wire_http()
            .await
            .inspect_err(|e| tracing::error!(binary, error = %describe(e.as_ref()), "cannot start"))?,
    );
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<aws_lambda_events::apigw::ApiGatewayV2httpRequest>| {
            let api = api.clone();
            async move { Ok::<_, lambda_runtime::Error>(http::handle(&api, event.payload).await) }
        },
    ))
    .await
}

/// The redemption API and its adapters, from the environment.
async fn wire_http() -> anyhow::Result<RedemptionApi> {
    let config = RedemptionConfig::from_env()?;
    let settings = AwsSettings::from_env()?;
    let sdk = sdk_config(&settings).await?;
    let backend = Arc::new(AwsBackend::new(&AwsClients::new(&sdk), settings));
    let auth = secrets::auth_from_env("LOYALTY", &aws_sdk_secretsmanager::Client::new(&sdk))?;
    Ok(RedemptionApi {
        loyalty: retail_sync_connectors::loyalty_from_env(auth)?,
        idempotency: backend.clone(),
        members: backend,
        clock: Arc::new(SystemClock),
        policy: IdempotencyPolicy::default(),
        config,
    })
}

/// Runs the webhook ingress `binary` under the Lambda runtime API, behind an API Gateway HTTP API.
pub async fn run_webhooks(binary: &'static str) -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let ingress = Arc::new(
        wire_webhooks()
            .await
            .inspect_err(|e| tracing::error!(binary, error = %describe(e.as_ref()), "cannot start"))?,
    );
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<aws_lambda_events::apigw::ApiGatewayV2httpRequest>| {
            let ingress = ingress.clone();
            async move { Ok::<_, lambda_runtime::Error>(webhooks::handle(&ingress, event.payload).await) }
        },
    ))
    .await
}

async fn wire_webhooks() -> anyhow::Result<webhooks::Ingress> {
    let settings = AwsSettings::from_env()?;
    let sdk = sdk_config(&settings).await?;
    let clients = AwsClients::new(&sdk);
    let bus = EventBus::channels(clients.eventbridge.clone(), &settings)
        .ok_or_else(|| anyhow::anyhow!("CHANNEL_BUS_NAME is not set"))?;
    let arn = std::env::var("SHOPIFY_WEBHOOK_SECRET_ARN")
        .ok()
        .filter(|a| !a.trim().is_empty())
        .ok_or_else(|| anyhow::anyhow!("SHOPIFY_WEBHOOK_SECRET_ARN is not set"))?;
    Ok(webhooks::Ingress {
        bus,
        secrets: webhooks::SigningSecrets::new(aws_sdk_secretsmanager::Client::new(&sdk), arn),
        window: webhooks::window_from_env()?,
    })
}
