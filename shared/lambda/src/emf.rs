//! Business metrics in CloudWatch Embedded Metric Format: one JSON line per dimension set, printed to
//! stdout after each batch; CloudWatch turns them into metrics without any API call from the function.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use retail_sync_core::ports::Metrics;

/// Counters of one invocation, keyed by (dimension name, dimension value) — `None` for the step-only
/// set — then metric name.
type Counters = BTreeMap<Option<(String, String)>, BTreeMap<String, u64>>;

pub struct EmfMetrics {
    namespace: String,
    step: &'static str,
    counters: Mutex<Counters>,
}

impl EmfMetrics {
    pub fn new(namespace: String, step: &'static str) -> Self {
        Self {
            namespace,
            step,
            counters: Mutex::default(),
        }
    }

    /// Prints and resets the counters.
    pub fn flush(&self) {
        let counters = std::mem::take(&mut *self.counters.lock().unwrap_or_else(|p| p.into_inner()));
        for doc in documents(
            &self.namespace,
            self.step,
            &counters,
            jiff::Timestamp::now().as_millisecond(),
        ) {
            println!("{doc}");
        }
    }
}

impl Metrics for EmfMetrics {
    fn add(&self, name: &'static str, value: u64, dimension: Option<(&'static str, &str)>) {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        // Every counter is reported by step; a dimensioned one also by step and its dimension.
        *counters
            .entry(None)
            .or_default()
            .entry(name.to_owned())
            .or_default() += value;
        if let Some((d, v)) = dimension {
            let key = Some((d.to_owned(), v.to_owned()));
            *counters
                .entry(key)
                .or_default()
                .entry(name.to_owned())
                .or_default() += value;
        }
    }

    fn add_for(
        &self,
        channel: &str,
        name: &'static str,
        value: u64,
        dimension: Option<(&'static str, &str)>,
    ) {
        self.add(name, value, dimension);
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *counters
            .entry(Some(("channel".to_owned(), channel.to_owned())))
            .or_default()
            .entry(name.to_owned())
            .or_default() += value;
    }
}

/// The EMF documents for `counters`.
pub fn documents(namespace: &str, step: &str, counters: &Counters, timestamp_ms: i64) -> Vec<Value> {
    counters
        .iter()
        .filter(|(_, metrics)| !metrics.is_empty())
        .map(|(dimension, metrics)| {
            let mut dims = vec!["step".to_owned()];
            let mut doc = Map::new();
            doc.insert("step".into(), step.into());
            if let Some((name, value)) = dimension {
                dims.push(name.clone());
                doc.insert(name.clone(), value.clone().into());
            }
            let definitions: Vec<Value> = metrics.keys().map(|m| json!({"Name": m, "Unit": "Count"})).collect();
            for (name, value) in metrics {
                doc.insert(name.clone(), (*value).into());
            }
            doc.insert(
                "_aws".into(),
                json!({
                    "Timestamp": timestamp_ms,
                    "CloudWatchMetrics": [{"Namespace": namespace, "Dimensions": [dims], "Metrics": definitions}],
                }),
            );
            Value::Object(doc)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dimension_value_gets_its_own_document_and_totals_stay_per_step() {
        let m = EmfMetrics::new("RetailSync".into(), "ingest");
        m.add("quarantined", 1, Some(("reason", "invalid_json")));
        m.add("quarantined", 2, Some(("reason", "schema_violation")));
        m.add("accepted", 5, None);
        let counters = m.counters.lock().unwrap().clone();
        let docs = documents("RetailSync", "ingest", &counters, 1);
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0]["quarantined"], 3);
        assert_eq!(docs[0]["accepted"], 5);
        assert_eq!(
            docs[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["step"]])
        );
        let by_reason = docs.iter().find(|d| d["reason"] == "schema_violation").unwrap();
        assert_eq!(by_reason["quarantined"], 2);
        assert_eq!(
            by_reason["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["step", "reason"]])
        );
        assert_eq!(
            by_reason["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "RetailSync"
        );
    }

    #[test]
    fn a_transactions_counters_are_also_split_by_channel_once() {
        let m = EmfMetrics::new("RetailSync".into(), "accrue-loyalty");
        m.add_for("pos", "points_accrued", 79, None);
        m.add_for("ecommerce", "points_accrued", 10, None);
        let counters = m.counters.lock().unwrap().clone();
        let docs = documents("RetailSync", "accrue-loyalty", &counters, 1);
        assert_eq!(docs.len(), 3);
        let total = docs.iter().find(|d| d.get("channel").is_none()).unwrap();
        assert_eq!(total["points_accrued"], 89, "the step's total counts each once");
        let pos = docs.iter().find(|d| d["channel"] == "pos").unwrap();
        assert_eq!(pos["points_accrued"], 79);
        assert_eq!(
            pos["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["step", "channel"]])
        );
    }
}
