//! Counts the HTTP requests the SDK sends, per service and operation, so a benchmark can say what a
//! sale costs in AWS API calls (and so in money and latency).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};

/// Shared by clones: give one to every client's interceptor and read it from anywhere.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl RequestCounter {
    pub fn new() -> Self {
        Self::default()
    }

    fn counts(&self) -> MutexGuard<'_, BTreeMap<String, u64>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests so far by `service:Operation` (e.g. `dynamodb:PutItem`, `sqs:ReceiveMessage`).
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts().clone()
    }

    pub fn total(&self) -> u64 {
        self.counts().values().sum()
    }

    pub fn reset(&self) {
        self.counts().clear();
    }

    fn record(&self, key: String) {
        *self.counts().entry(key).or_default() += 1;
    }

    /// The interceptor to install on one service's client config builder.
    pub fn interceptor(&self, service: &'static str) -> CountingInterceptor {
        CountingInterceptor {
            service,
            counter: self.clone(),
        }
    }
}

/// Counts in `read_before_transmit`, which runs once per attempt, so SDK retries count as the requests
/// they are.
#[derive(Debug)]
pub struct CountingInterceptor {
    service: &'static str,
    counter: RequestCounter,
}

/// The operation of a request. DynamoDB, SQS (since its move to the JSON protocol) and EventBridge all
/// name it in `X-Amz-Target` as `<ServicePrefix>.<Operation>`; reading it there spares a dependency on
/// the smithy runtime's operation metadata.
fn operation_of(target: Option<&str>) -> &str {
    target
        .and_then(|t| t.rsplit('.').next())
        .filter(|op| !op.is_empty())
        .unwrap_or("unknown")
}

impl Intercept for CountingInterceptor {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let operation = operation_of(context.request().headers().get("x-amz-target"));
        self.counter.record(format!("{}:{operation}", self.service));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operation_is_the_last_part_of_the_target_header() {
        assert_eq!(operation_of(Some("DynamoDB_20120810.PutItem")), "PutItem");
        assert_eq!(operation_of(Some("AmazonSQS.ReceiveMessage")), "ReceiveMessage");
        assert_eq!(operation_of(Some("AWSEvents.PutEvents")), "PutEvents");
        assert_eq!(operation_of(None), "unknown");
    }

    #[test]
    fn clones_share_their_counts() {
        let counter = RequestCounter::new();
        let other = counter.clone();
        other.record("sqs:SendMessage".into());
        other.record("sqs:SendMessage".into());
        counter.record("dynamodb:GetItem".into());
        assert_eq!(counter.total(), 3);
        assert_eq!(counter.snapshot()["sqs:SendMessage"], 2);
        counter.reset();
        assert_eq!(other.total(), 0);
    }
}
