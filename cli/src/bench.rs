//! Benchmarks that print figures (never timed tests): end-to-end sale sagas per second on the embedded
//! backend with the in-process simulators.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::ensure;
use serde_json::json;

use crate::input::Input;
use crate::local::{LocalOptions, Simulators, open_embedded};

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
