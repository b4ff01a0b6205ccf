//! The scheduled `confirm-points` function (EventBridge Scheduler, hourly by default) and
//! `retail-sync points confirm --backend aws`: every pending accrual whose return window has ended is
//! confirmed on the loyalty platform, once (see `retail_sync_core::settlement`). A run with a failed
//! confirmation ends in error (the `ConfirmPointsFailedAlarm` watches the function's errors) after
//! confirming everything else; the next run tries the failed ones again.

use std::sync::Arc;

use jiff::Timestamp;

use retail_sync_aws::{AwsBackend, AwsClients, AwsSettings, sdk_config};
use retail_sync_core::ports::Loyalty;
use retail_sync_core::settlement::{CONFIRM_POINTS, Confirmed, confirm_due};

use crate::{emf, secrets};

/// The loyalty platform as the steps reach it (`LOYALTY_*`, credentials from its secret).
pub fn loyalty_from_env(secrets: &aws_sdk_secretsmanager::Client) -> anyhow::Result<Arc<dyn Loyalty>> {
    Ok(retail_sync_connectors::loyalty_from_env(secrets::auth_from_env(
        "LOYALTY", secrets,
    )?)?)
}

struct Function {
    backend: AwsBackend,
    loyalty: Arc<dyn Loyalty>,
    metrics: emf::EmfMetrics,
}

impl Function {
    async fn confirm(&self) -> anyhow::Result<Confirmed> {
        // A scan, as the reconciliation's: pending accruals are found on their sagas.
        let sagas = self.backend.scan_sagas().await?;
        let done = confirm_due(
            &sagas,
            self.loyalty.as_ref(),
            &self.backend,
            &self.metrics,
            Timestamp::now(),
        )
        .await;
        self.metrics.flush();
        tracing::info!(
            confirmed = done.accruals,
            points = done.points,
            waiting = done.waiting,
            failed = done.failed.len(),
            "pending points confirmed"
        );
        if let Some((saga, message)) = done.failed.first() {
            anyhow::bail!(
                "{} of {} due confirmations failed (first: {saga}: {message}); the next run tries them again",
                done.failed.len(),
                done.failed.len() + done.accruals
            );
        }
        Ok(done)
    }
}

/// Runs the confirm-points function under the Lambda runtime API (any payload: it confirms what is due).
pub async fn run_scheduled() -> Result<(), lambda_runtime::Error> {
    crate::serve_scheduled(wire()).await
}

#[async_trait::async_trait]
impl crate::Scheduled for Function {
    type Answer = Confirmed;
    async fn handle(&self, _: serde_json::Value) -> anyhow::Result<Confirmed> {
        self.confirm().await
    }
}

async fn wire() -> anyhow::Result<Function> {
    let settings = AwsSettings::from_env()?;
    let sdk = sdk_config(&settings).await?;
    let backend = AwsBackend::new(&AwsClients::new(&sdk), settings);
    let namespace = std::env::var("METRICS_NAMESPACE").unwrap_or_else(|_| "RetailSync".into());
    Ok(Function {
        backend,
        loyalty: loyalty_from_env(&aws_sdk_secretsmanager::Client::new(&sdk))?,
        metrics: emf::EmfMetrics::new(namespace, CONFIRM_POINTS),
    })
}
