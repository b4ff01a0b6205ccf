//! Benchmarks that print figures (never timed tests): end-to-end sale sagas per second on the embedded
//! backend with the in-process simulators, and AWS API requests per sale saga on an emulator (moto).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use serde_json::json;

use retail_sync_aws::{
    AwsBackend, AwsClients, AwsSettings, ProvisionOptions, emulator_sdk_config, provision,
};
use retail_sync_topology::Topology;

use crate::input::Input;
use crate::local::{LocalOptions, LocalSystem, Simulators, open_embedded};

/// `n` distinct, valid POS sales: members and anonymous, one to three lines, some paid partly in points.
pub fn synthetic_sales(n: usize) -> Vec<Input> {
    (0..n)
        .map(|i| {
            let lines: Vec<_> = (1..=1 + i % 3)
                .map(|no| {
                    let (qty, unit) = (1 + (i + no) % 3, 199 + 100 * ((i * 7 + no) % 50));
                    let net = qty * unit;
                    json!({"line_no": no, "sku": format!("SKU-{}", (i + no) % 500), "quantity": qty,
                        "unit_price_minor": unit, "discount_minor": 0, "net_minor": net,
                        "tax_minor": net / 5, "loyalty_eligible": no != 3})
                })
                .collect();
            let net: usize = lines.iter().map(|l| l["net_minor"].as_u64().unwrap_or(0) as usize).sum();
            let tax: usize = lines.iter().map(|l| l["tax_minor"].as_u64().unwrap_or(0) as usize).sum();
            let mut data = json!({
                "store_id": format!("store-{:03}", i % 40), "receipt_id": format!("b-{i:08}"), "currency": "EUR",
                "lines": lines, "totals": {"net_minor": net, "tax_minor": tax, "gross_minor": net + tax},
                "tenders": [{"method": "card", "amount_minor": net + tax}],
            });
            if i % 5 != 0 {
                data["member_id"] = json!(format!("m-{}", i % 1000));
            }
            Input::Event {
                source: "retail.pos".into(),
                detail_type: "SaleCompleted".into(),
                detail: json!({
                    "metadata": {"event_id": format!("bench-{i}"), "schema_version": 1,
                        "correlation_id": format!("bench-{i}"), "occurred_at": "2026-11-20T10:00:00Z",
                        "channel": "pos"},
                    "data": data,
                }),
            }
        })
        .collect()
}

pub struct LocalFigures {
    pub sagas: usize,
    pub elapsed: Duration,
    pub messages: u64,
}

impl fmt::Display for LocalFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "embedded end to end: {} sale sagas ({} messages) in {:.2}s = {:.0} sagas/s",
            self.sagas,
            self.messages,
            secs,
            self.sagas as f64 / secs
        )
    }
}

/// Feeds `n` sales and runs them to completion; the clock covers feeding and processing.
pub async fn local(options: &LocalOptions, n: usize) -> anyhow::Result<LocalFigures> {
    let inputs = synthetic_sales(n);
    let mut options = options.clone();
    options.fresh = true;
    let system = open_embedded(&options, Simulators::default())?;
    let started = Instant::now();
    system.feed(&inputs).await?;
    let progress = system.run_until_idle(|_| {}).await?;
    let elapsed = started.elapsed();
    let report = system.report(Default::default()).await?;
    ensure!(
        report.summary.sagas_by_status.get("completed") == Some(&n),
        "not every saga completed: {:?}",
        report.summary
    );
    Ok(LocalFigures {
        sagas: n,
        elapsed,
        messages: progress.handled,
    })
}

/// AWS API requests of sale sagas on an emulator, by operation.
pub struct AwsFigures {
    pub sagas: usize,
    /// Requests the steps made (what the Lambda functions would make), by `service:Operation`.
    pub steps: BTreeMap<String, u64>,
    /// Requests of the local runner's polling (on AWS, Lambda's SQS event source mapping does this).
    pub polling: BTreeMap<String, u64>,
    /// The channel's PutEvents calls feeding the sales.
    pub feed: u64,
}

/// SQS operations the local runner (not the steps) makes.
const POLLING: [&str; 3] = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessageBatch",
    "sqs:GetQueueAttributes",
];

impl fmt::Display for AwsFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.sagas as f64;
        writeln!(
            f,
            "AWS API requests for {} sale sagas (moto), per saga:",
            self.sagas
        )?;
        per_saga(f, &self.steps, n, "steps total", "<- the functions' own requests")?;
        per_saga(
            f,
            &self.polling,
            n,
            "polling total",
            "<- Lambda's event source mapping on AWS",
        )?;
        write!(
            f,
            "  {:<36} {:>6.2}   (channel PutEvents, batches of 10)",
            "feed",
            self.feed as f64 / n
        )
    }
}

/// One line per operation, then their total with a note.
fn per_saga(
    f: &mut fmt::Formatter<'_>,
    ops: &BTreeMap<String, u64>,
    n: f64,
    total: &str,
    note: &str,
) -> fmt::Result {
    for (op, count) in ops {
        writeln!(f, "  {op:<36} {:>6.2}", *count as f64 / n)?;
    }
    writeln!(
        f,
        "  {total:<36} {:>6.2}   {note}",
        ops.values().sum::<u64>() as f64 / n
    )
}

/// Runs `n` sales through the AWS backend on the emulator at `endpoint` and counts the requests.
pub async fn aws(template: &Path, endpoint: &str, n: usize) -> anyhow::Result<AwsFigures> {
    let topology = Topology::load(template)?;
    let settings = AwsSettings::default().with_endpoint_url(endpoint);
    let clients = AwsClients::new(&emulator_sdk_config(&settings).await);
    let options = ProvisionOptions::unique().with_visibility_timeout(Duration::from_secs(2));
    let settings = provision(&clients, &topology, &options).await?;
    let backend = Arc::new(AwsBackend::new(&clients, settings));
    let system = LocalSystem::new(backend.clone(), topology, Simulators::default())?;

    backend.counter().reset();
    system.feed(&synthetic_sales(n)).await?;
    let feed = backend.counter().total();
    backend.counter().reset();
    system.run_until_idle(|_| {}).await?;
    let (polling, steps) = backend
        .counter()
        .snapshot()
        .into_iter()
        .partition(|(op, _)| POLLING.contains(&op.as_str()));
    let report = system.report(Default::default()).await?;
    ensure!(
        report.summary.sagas_by_status.get("completed") == Some(&n),
        "not every saga completed: {:?}",
        report.summary
    );
    Ok(AwsFigures {
        sagas: n,
        steps,
        polling,
        feed,
    })
}
