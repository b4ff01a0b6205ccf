//! The scheduled reconciliation on AWS (`functions/reconcile`, started daily by EventBridge Scheduler)
//! and `retail-sync reconcile --backend aws`: the sagas in DynamoDB against the ERP's and the loyalty
//! platform's books, read through the connectors the steps use. The function writes the report to the
//! report bucket (`reconciliation/<from>_<to>.json` and `.txt`), announces every difference it leaves
//! (`ReconciliationMismatch` on the internal bus, the metric `reconciliation_mismatches`, which the
//! template's alarm watches) and repairs only when `RECONCILE_REPAIR` is `apply`.

use std::sync::Arc;

use anyhow::Context;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use retail_sync_aws::{AwsBackend, AwsClients, AwsSettings, ReportBucket, sdk_config};
use retail_sync_core::ports::{ErpBooks, Loyalty, LoyaltyBooks, Metrics, Publisher, SagaStore};
use retail_sync_core::reconcile::{self, Reconciliation, RepairMode, Settings, Sources, Window};
use retail_sync_core::saga::Saga;

use crate::{emf, secrets};

/// The systems a reconciliation reads (and repairs through), as this deployment connects them.
pub struct Systems {
    pub erp: Arc<dyn ErpBooks>,
    pub loyalty_books: Arc<dyn LoyaltyBooks>,
    pub loyalty: Arc<dyn Loyalty>,
}

impl Systems {
    /// From the connectors' settings (`ERP_*`, `LOYALTY_*`, credentials from their secrets), as the steps
    /// read them.
    pub fn from_env(secrets: &aws_sdk_secretsmanager::Client) -> anyhow::Result<Self> {
        Ok(Self {
            erp: retail_sync_connectors::erp_books_from_env(secrets::auth_from_env("ERP", secrets)?)?,
            loyalty_books: retail_sync_connectors::loyalty_books_from_env(secrets::auth_from_env(
                "LOYALTY", secrets,
            )?)?,
            loyalty: crate::confirm::loyalty_from_env(secrets)?,
        })
    }
}

/// One reconciliation over `systems`.
#[allow(clippy::too_many_arguments)]
pub async fn reconcile_with(
    systems: &Systems,
    window: Window,
    settings: Settings,
    mode: RepairMode,
    sagas: &[Saga],
    store: &dyn SagaStore,
    publisher: Option<&dyn Publisher>,
    metrics: &dyn Metrics,
) -> Result<Reconciliation, retail_sync_core::Error> {
    reconcile::run(
        window,
        Timestamp::now(),
        settings,
        mode,
        Sources {
            sagas,
            erp: systems.erp.as_ref(),
            loyalty_books: systems.loyalty_books.as_ref(),
            loyalty: systems.loyalty.as_ref(),
            store,
            publisher,
            metrics,
        },
    )
    .await
}

/// The function's settings, from its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub settings: Settings,
    pub mode: RepairMode,
    pub bucket: String,
}

impl Config {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let number = |name: &str, default: i64| -> anyhow::Result<i64> {
            match lookup(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<i64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => anyhow::bail!("{name} must be a positive whole number, not {v:?}"),
                },
            }
        };
        let mode = match lookup("RECONCILE_REPAIR").as_deref().map(str::trim) {
            None | Some("" | "off") => RepairMode::Off,
            Some("dry-run") => RepairMode::DryRun,
            Some("apply") => RepairMode::Apply,
            Some(other) => anyhow::bail!("RECONCILE_REPAIR is off, dry-run or apply, not {other:?}"),
        };
        Ok(Self {
            settings: Settings {
                stuck_after: SignedDuration::from_mins(number("RECONCILE_STUCK_AFTER_MINUTES", 120)?),
                points_per_major: number("POINTS_PER_MAJOR", 100)?,
            },
            mode,
            bucket: lookup("REPORT_BUCKET")
                .filter(|v| !v.trim().is_empty())
                .context("REPORT_BUCKET is not set")?,
        })
    }
}

/// What the schedule sends: a window, or nothing for yesterday (UTC).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default)]
    pub from: Option<Timestamp>,
    #[serde(default)]
    pub to: Option<Timestamp>,
}

impl Request {
    pub fn window(&self, now: Timestamp) -> Result<Window, String> {
        match (self.from, self.to) {
            (None, None) => Ok(Window::day_before(now)),
            (Some(from), Some(to)) => Window::new(from, to),
            _ => Err("name both ends of the window (from and to), or neither for yesterday".to_owned()),
        }
    }
}

/// What the function answers (and logs): where the report is and what it found.
#[derive(Debug, Serialize)]
pub struct Answer {
    pub report: String,
    pub findings: usize,
    pub repairs: usize,
    pub differences: std::collections::BTreeMap<String, usize>,
}

/// The report's keys in the bucket for `window`.
pub fn report_keys(window: Window) -> (String, String) {
    let stem = format!("reconciliation/{}_{}", window.from, window.to);
    (format!("{stem}.json"), format!("{stem}.txt"))
}

struct Function {
    backend: AwsBackend,
    systems: Systems,
    bucket: ReportBucket,
    config: Config,
    metrics: emf::EmfMetrics,
}

impl Function {
    async fn reconcile(&self, request: Request) -> anyhow::Result<Answer> {
        let window = request.window(Timestamp::now()).map_err(anyhow::Error::msg)?;
        // A scan: the nightly run reads the whole table once (see the README on its cost).
        let sagas = self.backend.scan_sagas().await?;
        let report = reconcile_with(
            &self.systems,
            window,
            self.config.settings,
            self.config.mode,
            &sagas,
            &self.backend,
            Some(&self.backend),
            &self.metrics,
        )
        .await;
        self.metrics.flush();
        let report = report?;
        let (json_key, text_key) = report_keys(window);
        self.bucket
            .put(&json_key, serde_json::to_vec_pretty(&report)?, "application/json")
            .await?;
        self.bucket
            .put(
                &text_key,
                reconcile::render(&report).into_bytes(),
                "text/plain; charset=utf-8",
            )
            .await?;
        let answer = Answer {
            report: format!("s3://{}/{json_key}", self.bucket.bucket()),
            findings: report.findings.len(),
            repairs: report.repairs.len(),
            differences: report.differences,
        };
        tracing::info!(
            report = %answer.report,
            findings = answer.findings,
            repairs = answer.repairs,
            "reconciled {} .. {}",
            window.from,
            window.to
        );
        Ok(answer)
    }
}

/// Runs the reconcile function under the Lambda runtime API.
pub async fn run_scheduled() -> Result<(), lambda_runtime::Error> {
    crate::serve_scheduled(wire()).await
}

#[async_trait::async_trait]
impl crate::Scheduled for Function {
    type Answer = Answer;
    async fn handle(&self, payload: serde_json::Value) -> anyhow::Result<Answer> {
        // An empty or null payload is the default window; anything else must be a request.
        let request: Request = match payload {
            serde_json::Value::Null => Request::default(),
            v if v.as_object().is_some_and(|o| o.is_empty()) => Request::default(),
            v => serde_json::from_value(v).context("the request is not {from, to}")?,
        };
        self.reconcile(request).await
    }
}

async fn wire() -> anyhow::Result<Function> {
    let config = Config::from_lookup(|v| std::env::var(v).ok())?;
    let settings = AwsSettings::from_env()?;
    let sdk = sdk_config(&settings).await?;
    let path_style = settings.endpoint_url.is_some();
    let backend = AwsBackend::new(&AwsClients::new(&sdk), settings);
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let namespace = std::env::var("METRICS_NAMESPACE").unwrap_or_else(|_| "RetailSync".into());
    Ok(Function {
        backend,
        systems: Systems::from_env(&secrets)?,
        bucket: ReportBucket::new(&sdk, config.bucket.clone(), path_style),
        config,
        metrics: emf::EmfMetrics::new(namespace, "reconcile"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_has_defaults_and_refuses_nonsense() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let c = Config::from_lookup(env(&[("REPORT_BUCKET", "b")])).unwrap();
        assert_eq!(c.mode, RepairMode::Off);
        assert_eq!(c.settings, Settings::default());
        let c = Config::from_lookup(env(&[
            ("REPORT_BUCKET", "b"),
            ("RECONCILE_REPAIR", "apply"),
            ("RECONCILE_STUCK_AFTER_MINUTES", "30"),
        ]))
        .unwrap();
        assert_eq!(c.mode, RepairMode::Apply);
        assert_eq!(c.settings.stuck_after, SignedDuration::from_mins(30));
        assert!(Config::from_lookup(env(&[])).is_err(), "no bucket");
        let e = Config::from_lookup(env(&[("REPORT_BUCKET", "b"), ("RECONCILE_REPAIR", "yes")])).unwrap_err();
        assert!(e.to_string().contains("off, dry-run or apply"), "{e}");
        assert!(Config::from_lookup(env(&[("REPORT_BUCKET", "b"), ("POINTS_PER_MAJOR", "0")])).is_err());
    }

    #[test]
    fn a_request_names_a_window_or_none() {
        let now: Timestamp = "2026-11-22T02:00:00Z".parse().unwrap();
        let w = Request::default().window(now).unwrap();
        assert_eq!(w.from.to_string(), "2026-11-21T00:00:00Z");
        assert_eq!(w.to.to_string(), "2026-11-22T00:00:00Z");
        let r: Request =
            serde_json::from_str(r#"{"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z"}"#).unwrap();
        assert_eq!(r.window(now).unwrap().from.to_string(), "2026-11-20T00:00:00Z");
        let half: Request = serde_json::from_str(r#"{"from":"2026-11-20T00:00:00Z"}"#).unwrap();
        assert!(half.window(now).is_err());
        let backwards: Request =
            serde_json::from_str(r#"{"from":"2026-11-21T00:00:00Z","to":"2026-11-20T00:00:00Z"}"#).unwrap();
        assert!(backwards.window(now).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"form":"x"}"#).is_err());
        assert_eq!(
            report_keys(w).0,
            "reconciliation/2026-11-21T00:00:00Z_2026-11-22T00:00:00Z.json"
        );
    }
}
