//! What a saga costs on AWS: the units a run on the emulator used (`bench aws --cost`), priced with the
//! one price table in the repository, `infra/aws-prices.json` (list prices with their date).

use std::fmt;

use serde::Deserialize;

use retail_sync_aws::Bill;

use crate::local::Invocations;

/// `infra/aws-prices.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Prices {
    pub region: String,
    pub as_of: String,
    pub lambda_requests_per_million: f64,
    pub lambda_arm64_per_gb_second: f64,
    pub dynamodb_write_request_units_per_million: f64,
    pub dynamodb_read_request_units_per_million: f64,
    pub eventbridge_custom_events_per_million: f64,
    pub sqs_standard_requests_per_million: f64,
    pub step_functions_standard_transitions_per_thousand: f64,
}

impl Prices {
    /// The table compiled in: a figure always says which prices it used.
    pub fn table() -> anyhow::Result<Self> {
        Ok(serde_json::from_str(include_str!("../../infra/aws-prices.json"))?)
    }
}

/// Lambda's SQS event source mapping long-polls an idle queue with five pollers, each every 20 s.
const IDLE_POLLS_PER_QUEUE_MONTH: f64 = 5.0 * 3.0 * 60.0 * 24.0 * 30.0;

/// What one scenario used on the emulator, for `sagas` sagas.
#[derive(Debug, Clone)]
pub struct Usage {
    pub scenario: String,
    pub sagas: usize,
    /// The channels' PutEvents of the inbound events.
    pub channel: Bill,
    /// What the functions' own requests were billed as.
    pub steps: Bill,
    pub invocations: Invocations,
    /// The functions' memory (the template's `MemorySize`).
    pub memory_mb: u32,
    /// Queues consumed by functions (each with its event source mapping).
    pub queues: usize,
}

/// One priced line: units per saga and dollars per million sagas.
pub struct Line {
    pub what: &'static str,
    pub per_saga: f64,
    pub unit: &'static str,
    pub per_million: f64,
}

impl Usage {
    fn per_saga(&self, units: f64) -> f64 {
        units / self.sagas.max(1) as f64
    }

    /// Milliseconds billed: each invocation's time rounded up to the millisecond.
    fn billed_ms(&self) -> u64 {
        self.invocations
            .durations
            .iter()
            .map(|d| d.as_micros().div_ceil(1000) as u64)
            .sum()
    }

    pub fn lines(&self, p: &Prices) -> Vec<Line> {
        let invocations = self.invocations.durations.len() as f64;
        // A billed millisecond at the function's memory, per million.
        let per_ms = f64::from(self.memory_mb) / 1024.0 / 1000.0 * p.lambda_arm64_per_gb_second * 1e6;
        // SQS on AWS: the bus rules' deliveries (one SendMessage each), the functions' own sends, and
        // per batch the event source mapping's receive and delete.
        let sqs =
            self.invocations.deliveries as f64 + self.steps.sqs_billed_requests as f64 + 2.0 * invocations;
        let line = |what, units: f64, unit, price_per_million: f64| Line {
            what,
            per_saga: self.per_saga(units),
            unit,
            per_million: self.per_saga(units) * price_per_million,
        };
        vec![
            line(
                "Lambda requests",
                invocations,
                "invocations",
                p.lambda_requests_per_million,
            ),
            line("Lambda duration", self.billed_ms() as f64, "ms billed", per_ms),
            line(
                "DynamoDB writes",
                self.steps.write_units as f64,
                "write units",
                p.dynamodb_write_request_units_per_million,
            ),
            line(
                "DynamoDB reads",
                self.steps.read_units,
                "read units",
                p.dynamodb_read_request_units_per_million,
            ),
            line(
                "EventBridge, channel events",
                self.channel.bus_billed_events as f64,
                "events",
                p.eventbridge_custom_events_per_million,
            ),
            line(
                "EventBridge, internal events",
                self.steps.bus_billed_events as f64,
                "events",
                p.eventbridge_custom_events_per_million,
            ),
            line("SQS", sqs, "requests", p.sqs_standard_requests_per_million),
        ]
    }

    /// The same saga as a Step Functions Standard state machine: one Task state per step that ran
    /// (a lower bound: no Choice, Pass or retry transitions), priced per transition. It replaces the
    /// bus hops and queues between the steps, not the functions or the idempotency writes.
    pub fn step_functions(&self, p: &Prices) -> (f64, f64) {
        let transitions = self.per_saga(self.invocations.deliveries as f64);
        (
            transitions,
            transitions * p.step_functions_standard_transitions_per_thousand * 1000.0,
        )
    }
}

/// A usage priced: what `bench aws --cost` prints.
pub struct Costed<'a> {
    pub usage: &'a Usage,
    pub prices: &'a Prices,
}

impl fmt::Display for Costed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (u, p) = (self.usage, self.prices);
        writeln!(
            f,
            "cost of one {} on AWS ({} sagas on moto), {} list prices as of {} (infra/aws-prices.json):",
            u.scenario, u.sagas, p.region, p.as_of
        )?;
        writeln!(
            f,
            "  {:<30} {:>10} {:<12} {:>16}",
            "", "per saga", "", "$ per million"
        )?;
        let lines = u.lines(p);
        for l in &lines {
            writeln!(
                f,
                "  {:<30} {:>10.2} {:<12} {:>16.2}",
                l.what, l.per_saga, l.unit, l.per_million
            )?;
        }
        let total: f64 = lines.iter().map(|l| l.per_million).sum();
        writeln!(f, "  {:<30} {:>10} {:<12} {:>16.2}", "total", "", "", total)?;
        let between: f64 = lines
            .iter()
            .filter(|l| l.what.starts_with("EventBridge, internal") || l.what == "SQS")
            .map(|l| l.per_million)
            .sum();
        let (transitions, sfn) = u.step_functions(p);
        writeln!(
            f,
            "  Step Functions Standard instead of the bus and queues between the steps: {transitions:.2} transitions \
             = ${sfn:.2} per million (the bus and queues cost ${between:.2})"
        )?;
        let per = |units: u64| u.per_saga(units as f64);
        let b = &u.steps;
        writeln!(
            f,
            "  write units: {:.2} alone + {:.2} in transactions (half of it the doubling) + {:.2} index entries; \
             {:.2} of them because items are over 1 KB",
            per(b.write_units - b.transaction_write_units - b.index_write_units),
            per(b.transaction_write_units),
            per(b.index_write_units),
            per(b.oversize_write_units),
        )?;
        let written: Vec<String> = u
            .steps
            .items_written
            .iter()
            .map(|(table, (n, bytes))| format!("{table} {} B", bytes.checked_div(*n).unwrap_or(0)))
            .collect();
        writeln!(f, "  average item written: {}", written.join(", "))?;
        write!(
            f,
            "  fixed, whatever the volume: the event source mappings' idle long polls, {} queues × {:.0} requests \
             = ${:.2} a month",
            u.queues,
            IDLE_POLLS_PER_QUEUE_MONTH,
            u.queues as f64 * IDLE_POLLS_PER_QUEUE_MONTH * p.sqs_standard_requests_per_million / 1e6
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_price_table_parses_and_is_dated() {
        let p = Prices::table().expect("infra/aws-prices.json");
        assert_eq!(p.region, "us-east-1");
        assert!(p.as_of.len() >= 7, "{}", p.as_of);
        assert!(p.lambda_arm64_per_gb_second > 0.0);
    }

    #[test]
    fn units_are_priced_per_saga_and_durations_billed_by_the_millisecond() {
        let p = Prices::table().expect("prices");
        let usage = Usage {
            scenario: "sale saga".into(),
            sagas: 10,
            channel: Bill {
                bus_billed_events: 10,
                ..Bill::default()
            },
            steps: Bill {
                write_units: 80,
                read_units: 20.0,
                bus_billed_events: 20,
                sqs_billed_requests: 0,
                ..Bill::default()
            },
            invocations: Invocations {
                // 2.1 ms is billed as 3 ms.
                durations: vec![Duration::from_micros(2_100); 3],
                deliveries: 30,
            },
            memory_mb: 128,
            queues: 3,
        };
        let lines = usage.lines(&p);
        let get = |what: &str| lines.iter().find(|l| l.what == what).expect(what);
        assert!((get("DynamoDB writes").per_saga - 8.0).abs() < 1e-9);
        assert!((get("DynamoDB writes").per_million - 8.0 * 0.625).abs() < 1e-9);
        assert!((get("Lambda duration").per_saga - 0.9).abs() < 1e-9);
        let gb_s = 0.9 / 1000.0 * 0.125;
        assert!(
            (get("Lambda duration").per_million - gb_s * p.lambda_arm64_per_gb_second * 1e6).abs() < 1e-9
        );
        // 30 deliveries + 3 receives + 3 deletes, per saga.
        assert!((get("SQS").per_saga - 3.6).abs() < 1e-9);
        assert_eq!(usage.step_functions(&p).0, 3.0);
        let text = Costed {
            usage: &usage,
            prices: &p,
        }
        .to_string();
        assert!(text.contains("Step Functions Standard"), "{text}");
        assert!(text.contains("as of 2026-03"), "{text}");
    }
}
