//! The simulators as adapters of the core `Erp` and `Loyalty` ports, called in-process: the fast path of
//! the local runner and the benchmarks (no sockets, no serialization).

use async_trait::async_trait;

use retail_sync_contracts::events::ReasonCode;
use retail_sync_core::Error;
use retail_sync_core::idempotency::IdempotencyKey;
use retail_sync_core::ports::{Accrual, AccrualRequest, Erp, ErpDocument, ErpSaleRequest, Loyalty};

use crate::erp::ErpSimulator;
use crate::error::SimError;
use crate::loyalty::LoyaltySimulator;

#[derive(Clone)]
pub struct InProcessErp(pub ErpSimulator);

#[derive(Clone)]
pub struct InProcessLoyalty(pub LoyaltySimulator);

/// A refusal is the system's final word; a fault is what a network call would have shown as a 503 or a
/// timeout. An injected timeout returns at once: in-process there is no client timer to wait out.
fn to_port_error(e: SimError, what: &'static str, reason: ReasonCode) -> Error {
    match e {
        SimError::Refused { code, message, .. } => Error::rejected(reason, format!("{code}: {message}")),
        e @ (SimError::Unavailable { .. } | SimError::TimedOut { .. }) => Error::unavailable(what, e),
    }
}

#[async_trait]
impl Erp for InProcessErp {
    async fn post_sale(&self, request: &ErpSaleRequest, key: &IdempotencyKey) -> Result<ErpDocument, Error> {
        self.0.delay().await;
        self.0
            .post_sale(request, key.as_str())
            .map_err(|e| to_port_error(e, "erp", ReasonCode::ErpRejected))
    }
}

#[async_trait]
impl Loyalty for InProcessLoyalty {
    async fn accrue(&self, request: &AccrualRequest, key: &IdempotencyKey) -> Result<Accrual, Error> {
        self.0.delay().await;
        self.0
            .accrue(request, key.as_str())
            .map_err(|e| to_port_error(e, "loyalty", ReasonCode::LoyaltyRejected))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::faults::{FaultKind, Faults};
    use crate::samples::{accrual, sale};

    fn key(s: &str) -> IdempotencyKey {
        IdempotencyKey::for_step(s, "test")
    }

    #[tokio::test]
    async fn refusals_become_rejections_and_faults_become_unavailable() {
        let erp = InProcessErp(ErpSimulator::new());
        let err = erp
            .post_sale(&sale("closed-1", "r-1"), &key("a"))
            .await
            .unwrap_err();
        match err {
            Error::Rejected { reason, message } => {
                assert_eq!(reason, ReasonCode::ErpRejected);
                assert!(message.starts_with("period_closed: "), "{message}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        erp.0.set_faults(Faults {
            fail_first: 1,
            fail_first_with: FaultKind::TimeoutAfterCommit,
            ..Faults::default()
        });
        let err = erp
            .post_sale(&sale("store-1", "r-1"), &key("b"))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        let doc = erp.post_sale(&sale("store-1", "r-1"), &key("b")).await.unwrap();
        assert_eq!(doc.document_id.as_str(), "ERP-00000001");

        let loyalty = InProcessLoyalty(LoyaltySimulator::new());
        let err = loyalty
            .accrue(&accrual("unknown-1", "r-1", 100), &key("c"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Rejected {
                    reason: ReasonCode::LoyaltyRejected,
                    ..
                }
            ),
            "{err:?}"
        );
        let ok = loyalty
            .accrue(&accrual("m-1", "r-1", 250), &key("d"))
            .await
            .unwrap();
        assert_eq!(ok.points.get(), 2);
    }

    #[tokio::test]
    async fn the_latency_fault_delays_the_call() {
        let loyalty = InProcessLoyalty(LoyaltySimulator::with_faults(Faults {
            latency_ms: 30,
            ..Faults::default()
        }));
        let started = Instant::now();
        loyalty
            .accrue(&accrual("m-1", "r-1", 100), &key("k"))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    /// The local runner and the benchmarks lean on this path; even an unoptimised test build must do
    /// well over 10k calls a second.
    #[tokio::test]
    async fn the_in_process_path_sustains_many_calls() {
        let erp = InProcessErp(ErpSimulator::new());
        let requests: Vec<_> = (0..20_000)
            .map(|i| (sale("store-1", &format!("r-{i}")), key(&i.to_string())))
            .collect();
        let started = Instant::now();
        for (request, key) in &requests {
            erp.post_sale(request, key).await.unwrap();
        }
        let elapsed = started.elapsed();
        assert_eq!(erp.0.postings().len(), 20_000);
        assert!(elapsed < Duration::from_secs(2), "20k calls took {elapsed:?}");
    }
}
