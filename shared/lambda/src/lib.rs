//! Lambda glue: what every function binary shares. A function's `main` is one line,
//! `retail_sync_lambda::run("<binary>")`; this crate turns the environment into adapters, builds the
//! step the binary names, and serves SQS batches with partial batch responses.
//!
//! # Layout
//! - [`handler`]: SQS event → step batch → `SqsBatchResponse` (the ids to redeliver).
//! - [`emf`]: business metrics as CloudWatch Embedded Metric Format lines.
//! - [`telemetry`]: JSON logs in which every line of a message carries its step and correlation id.
//! - [`run`]: wiring from environment variables (the SAM template sets them).

pub mod emf;
pub mod handler;
pub mod telemetry;

use std::sync::Arc;

use anyhow::Context;
use lambda_runtime::{LambdaEvent, service_fn};

use retail_sync_aws::{AwsBackend, AwsSettings};
use retail_sync_connectors::{HttpErp, HttpLoyalty};
use retail_sync_contracts::IngestLimits;
use retail_sync_core::batch::BatchRunner;
use retail_sync_core::idempotency::IdempotencyPolicy;
use retail_sync_core::ports::{Clock, SystemClock};
use retail_sync_core::steps::{self, Deps};

/// Runs the function `binary` (one of `steps::STEPS`) under the Lambda runtime API.
pub async fn run(binary: &'static str) -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let runner = Arc::new(
        wire(binary)
            .await
            .inspect_err(|e| tracing::error!(error = %format!("{e:#}"), "cannot start"))?,
    );
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<aws_lambda_events::sqs::SqsEvent>| {
            let runner = runner.clone();
            async move { Ok::<_, lambda_runtime::Error>(runner.handle(event.payload).await) }
        },
    ))
    .await
}

/// The step and its adapters, from the environment.
async fn wire(binary: &'static str) -> anyhow::Result<handler::Function> {
    let settings = AwsSettings::from_env()?;
    let backend = Arc::new(AwsBackend::connect(settings).await);
    let namespace = std::env::var("METRICS_NAMESPACE").unwrap_or_else(|_| "RetailSync".into());
    let metrics = Arc::new(emf::EmfMetrics::new(namespace, binary));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let deps = Deps {
        idempotency: backend.clone(),
        sagas: backend.clone(),
        erp: Arc::new(HttpErp::from_env()?),
        loyalty: Arc::new(HttpLoyalty::from_env()?),
        clock: clock.clone(),
        metrics: metrics.clone(),
        policy: IdempotencyPolicy::default(),
        limits: IngestLimits::default(),
    };
    let step = steps::build(binary, &deps).with_context(|| format!("no step is called {binary}"))?;
    Ok(handler::Function {
        runner: BatchRunner {
            step,
            publisher: backend.clone(),
            quarantine: backend,
            clock,
            metrics: metrics.clone(),
        },
        metrics,
    })
}
