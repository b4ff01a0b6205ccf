//! The ERP simulator. Rules:
//! - documents are numbered `ERP-00000001`, `ERP-00000002`, … in posting order;
//! - a receipt of a store whose id starts with `closed-` is refused (422 `period_closed`): the store's
//!   accounting period is closed;
//! - the idempotency contract: a repeated key with the same request returns the first document without
//!   posting again; with another request it is refused (409 `idempotency_key_reused`).

use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use retail_sync_contracts::events::TransactionRef;
use retail_sync_contracts::values::{Amount, Currency, ExternalRef};
use retail_sync_core::ports::{ErpDocument, ErpSaleRequest};

use crate::error::SimError;
use crate::faults::Faults;
use crate::system::{Gate, Shared};

/// One posted document, as the ERP's journal shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErpPosting {
    pub document_id: ExternalRef,
    pub idempotency_key: String,
    pub transaction: TransactionRef,
    pub currency: Currency,
    pub net_minor: Amount,
    pub tax_minor: Amount,
    pub gross_minor: Amount,
    pub line_count: usize,
    pub occurred_at: Timestamp,
}

#[derive(Default)]
struct ErpState {
    gate: Gate<ErpSaleRequest, ErpDocument>,
    postings: Vec<ErpPosting>,
}

/// The simulated ERP. Clones share one state, so the HTTP server, the in-process adapter and a test can
/// all hold a handle.
#[derive(Clone, Default)]
pub struct ErpSimulator {
    shared: Arc<Shared<ErpState>>,
}

impl ErpSimulator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_faults(faults: Faults) -> Self {
        let sim = Self::new();
        sim.set_faults(faults);
        sim
    }

    /// Posts a sale under the rules above; `key` is the caller's idempotency key.
    pub fn post_sale(&self, request: &ErpSaleRequest, key: &str) -> Result<ErpDocument, SimError> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        state.gate.call(request, key, || {
            if let TransactionRef::Receipt { store_id, .. } = &request.transaction
                && store_id.as_str().starts_with("closed-")
            {
                return Err(SimError::refused(
                    422,
                    "period_closed",
                    format!("the accounting period of store {store_id} is closed"),
                ));
            }
            let document_id = ExternalRef::parse(format!("ERP-{:08}", state.postings.len() + 1))
                .expect("ERP- followed by digits is a valid ExternalRef");
            state.postings.push(ErpPosting {
                document_id: document_id.clone(),
                idempotency_key: key.to_owned(),
                transaction: request.transaction.clone(),
                currency: request.currency,
                net_minor: request.totals.net_minor,
                tax_minor: request.totals.tax_minor,
                gross_minor: request.totals.gross_minor,
                line_count: request.lines.len(),
                occurred_at: request.occurred_at,
            });
            Ok(ErpDocument { document_id })
        })
    }

    /// Every posted document, in posting order.
    pub fn postings(&self) -> Vec<ErpPosting> {
        self.shared.lock().postings.clone()
    }

    /// How many `post_sale` calls reached the ERP, faulted and refused ones included.
    pub fn requests(&self) -> u64 {
        self.shared.lock().gate.requests()
    }

    pub fn faults(&self) -> Faults {
        self.shared.lock().gate.faults().clone()
    }

    /// Replaces the faults (and restarts the seeded random sequence and the `fail_first` script).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_latency(faults.latency_ms);
        self.shared.lock().gate.set_faults(faults);
    }

    /// Waits out the latency fault; the adapters call it before `post_sale`.
    pub async fn delay(&self) {
        self.shared.delay().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::FaultKind;
    use crate::samples::sale;

    #[test]
    fn documents_are_numbered_in_posting_order() {
        let erp = ErpSimulator::new();
        let a = erp.post_sale(&sale("store-1", "r-1"), "k1").unwrap();
        let b = erp.post_sale(&sale("store-1", "r-2"), "k2").unwrap();
        assert_eq!(a.document_id.as_str(), "ERP-00000001");
        assert_eq!(b.document_id.as_str(), "ERP-00000002");
        let postings = erp.postings();
        assert_eq!(postings.len(), 2);
        assert_eq!(postings[0].idempotency_key, "k1");
        assert_eq!(postings[0].gross_minor.get(), 1190);
        assert_eq!(postings[0].line_count, 1);
    }

    #[test]
    fn a_store_with_a_closed_period_is_refused_and_nothing_is_posted() {
        let erp = ErpSimulator::new();
        let err = erp.post_sale(&sale("closed-7", "r-1"), "k").unwrap_err();
        assert!(
            matches!(
                err,
                SimError::Refused {
                    status: 422,
                    code: "period_closed",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(erp.postings().is_empty());
    }

    #[test]
    fn a_repeated_key_returns_the_first_document_without_posting_twice() {
        let erp = ErpSimulator::new();
        let first = erp.post_sale(&sale("store-1", "r-1"), "k").unwrap();
        let again = erp.post_sale(&sale("store-1", "r-1"), "k").unwrap();
        assert_eq!(first, again);
        assert_eq!(erp.postings().len(), 1);
        assert_eq!(erp.requests(), 2);
    }

    #[test]
    fn a_key_reused_for_another_sale_is_refused_with_409() {
        let erp = ErpSimulator::new();
        erp.post_sale(&sale("store-1", "r-1"), "k").unwrap();
        let err = erp.post_sale(&sale("store-1", "r-2"), "k").unwrap_err();
        assert!(matches!(
            err,
            SimError::Refused {
                status: 409,
                code: "idempotency_key_reused",
                ..
            }
        ));
        assert_eq!(erp.postings().len(), 1);
    }

    #[test]
    fn a_timeout_after_commit_posts_and_the_retry_finds_the_document() {
        let erp = ErpSimulator::with_faults(Faults {
            fail_first: 1,
            fail_first_with: FaultKind::TimeoutAfterCommit,
            ..Faults::default()
        });
        let err = erp.post_sale(&sale("store-1", "r-1"), "k").unwrap_err();
        assert_eq!(err, SimError::TimedOut { committed: true });
        assert_eq!(erp.faults().fail_first, 0, "the script counts down");
        let doc = erp.post_sale(&sale("store-1", "r-1"), "k").unwrap();
        assert_eq!(doc.document_id.as_str(), "ERP-00000001");
        assert_eq!(erp.postings().len(), 1);
    }

    #[test]
    fn errors_and_plain_timeouts_apply_nothing_and_down_refuses_everything() {
        let erp = ErpSimulator::with_faults(Faults {
            fail_first: 1,
            fail_first_with: FaultKind::Timeout,
            ..Faults::default()
        });
        assert_eq!(
            erp.post_sale(&sale("store-1", "r-1"), "k").unwrap_err(),
            SimError::TimedOut { committed: false }
        );
        erp.set_faults(Faults {
            down: true,
            ..Faults::default()
        });
        for _ in 0..3 {
            let err = erp.post_sale(&sale("store-1", "r-1"), "k").unwrap_err();
            assert!(matches!(err, SimError::Unavailable { .. }));
        }
        assert!(erp.postings().is_empty());
        assert_eq!(erp.requests(), 4);
    }

    #[test]
    fn seeded_faults_repeat_exactly_and_follow_the_rate() {
        let run = || {
            let erp = ErpSimulator::with_faults(Faults {
                error_rate: 0.3,
                seed: Some(42),
                ..Faults::default()
            });
            (0..1000)
                .map(|i| {
                    erp.post_sale(&sale("store-1", &format!("r-{i}")), &format!("k{i}"))
                        .is_ok()
                })
                .collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run(), "same seed, same calls: same faults");
        let failed = first.iter().filter(|ok| !**ok).count();
        assert!(
            (230..370).contains(&failed),
            "{failed} of 1000 failed at rate 0.3"
        );
    }
}
