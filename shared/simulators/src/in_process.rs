//! The simulators as adapters of the core `Erp`, `Loyalty`, `LoyaltyMembers` and `MemberSync` ports,
//! called in-process: the fast path of the local runner and the benchmarks (no sockets, no
//! serialization).

use async_trait::async_trait;

use retail_sync_contracts::events::ReasonCode;
use retail_sync_contracts::values::{ExternalRef, HoldId, MemberId, Points};
use retail_sync_core::Error;
use retail_sync_core::idempotency::IdempotencyKey;
use retail_sync_core::ports::{
    Accrual, AccrualRequest, Adjustment, AdjustmentRequest, Balance, CommitRequest, Confirmation, Erp,
    ErpCancelRequest, ErpDocument, ErpReinstateRequest, ErpReturnRequest, ErpSaleRequest, Hold, HoldRequest,
    Loyalty, LoyaltyMembers, MemberSnapshot, MemberSync,
};
use retail_sync_core::ports::{BookedDocument, BookedPoints, ErpBooks, LoyaltyBooks};

use crate::crm::CrmSimulator;
use crate::erp::ErpSimulator;
use crate::error::SimError;
use crate::loyalty::LoyaltySimulator;

#[derive(Clone)]
pub struct InProcessErp(pub ErpSimulator);

#[derive(Clone)]
pub struct InProcessLoyalty(pub LoyaltySimulator);

#[derive(Clone)]
pub struct InProcessCrm(pub CrmSimulator);

/// The refusals whose code says more than the system or the call that refused: the system API contract
/// gives these codes one meaning on every route, and the member workflow acts on an unknown member or a
/// merged one whichever call met them. (`retail-sync-connectors` maps them the same way over HTTP.)
pub fn reason_of_code(code: &str) -> Option<ReasonCode> {
    match code {
        "member_not_found" | "enrolment_refused" => Some(ReasonCode::MemberNotEnrolled),
        "merge_refused" | "member_merged" => Some(ReasonCode::MergeRefused),
        _ => None,
    }
}

/// A refusal is the system's final word; a fault is what a network call would have shown as a 503 or a
/// timeout. An injected timeout returns at once: in-process there is no client timer to wait out.
/// Refusals of a hold commit are `RedemptionRefused`, so the order workflow can tell that its points
/// could not be spent from any other loyalty refusal; the codes of [`reason_of_code`] override `reason`.
pub(crate) fn to_port_error(e: SimError, what: &'static str, reason: ReasonCode) -> Error {
    match e {
        SimError::Refused { code, message, .. } => Error::rejected(
            reason_of_code(code).unwrap_or(reason),
            format!("{code}: {message}"),
        ),
        SimError::Throttled { retry_after_ms } => {
            let wait = std::time::Duration::from_millis(retry_after_ms);
            Error::unavailable_for(what, SimError::Throttled { retry_after_ms }, wait)
        }
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

    async fn cancel_order(
        &self,
        request: &ErpCancelRequest,
        key: &IdempotencyKey,
    ) -> Result<ErpDocument, Error> {
        self.0.delay().await;
        self.0
            .cancel_order(request, key.as_str())
            .map_err(|e| to_port_error(e, "erp", ReasonCode::ErpRejected))
    }

    async fn post_return(
        &self,
        request: &ErpReturnRequest,
        key: &IdempotencyKey,
    ) -> Result<ErpDocument, Error> {
        self.0.delay().await;
        self.0
            .post_return(request, key.as_str())
            .map_err(|e| to_port_error(e, "erp", ReasonCode::ErpRejected))
    }

    async fn reinstate(
        &self,
        request: &ErpReinstateRequest,
        key: &IdempotencyKey,
    ) -> Result<ErpDocument, Error> {
        self.0.delay().await;
        self.0
            .reinstate(request, key.as_str())
            .map_err(|e| to_port_error(e, "erp", ReasonCode::ErpRejected))
    }
}

#[async_trait]
impl MemberSync for InProcessErp {
    async fn sync_member(&self, snapshot: &MemberSnapshot, key: &IdempotencyKey) -> Result<(), Error> {
        self.0.delay().await;
        self.0
            .sync_member(snapshot, key.as_str())
            .map(drop)
            .map_err(|e| to_port_error(e, "erp", ReasonCode::ErpRejected))
    }
}

#[async_trait]
impl MemberSync for InProcessCrm {
    async fn sync_member(&self, snapshot: &MemberSnapshot, key: &IdempotencyKey) -> Result<(), Error> {
        self.0.delay().await;
        self.0
            .sync_member(snapshot, key.as_str())
            .map(drop)
            .map_err(|e| to_port_error(e, "crm", ReasonCode::CrmRejected))
    }
}

#[async_trait]
impl MemberSync for InProcessLoyalty {
    async fn sync_member(&self, snapshot: &MemberSnapshot, key: &IdempotencyKey) -> Result<(), Error> {
        self.0.delay().await;
        self.0
            .sync_member(snapshot, key.as_str())
            .map(drop)
            .map_err(|e| to_port_error(e, "loyalty", ReasonCode::LoyaltyRejected))
    }
}

#[async_trait]
impl LoyaltyMembers for InProcessLoyalty {
    async fn enrol(&self, member_id: &MemberId, key: &IdempotencyKey) -> Result<(), Error> {
        self.0.delay().await;
        self.0
            .enrol(member_id, key.as_str())
            .map_err(|e| to_port_error(e, "loyalty", ReasonCode::LoyaltyRejected))
    }

    async fn merge(
        &self,
        duplicate: &MemberId,
        survivor: &MemberId,
        key: &IdempotencyKey,
    ) -> Result<Points, Error> {
        self.0.delay().await;
        self.0
            .merge(duplicate, survivor, key.as_str())
            .map(|m| m.points_moved)
            // `MergeRefused`, but `MemberNotEnrolled` for a member the platform does not know, as the port
            // has it.
            .map_err(|e| to_port_error(e, "loyalty", ReasonCode::MergeRefused))
    }
}

#[async_trait]
impl ErpBooks for InProcessErp {
    async fn documents(
        &self,
        from: jiff::Timestamp,
        until: jiff::Timestamp,
    ) -> Result<Vec<BookedDocument>, Error> {
        self.0.delay().await;
        Ok(self.0.documents_between(from, until))
    }
}

#[async_trait]
impl LoyaltyBooks for InProcessLoyalty {
    async fn movements(
        &self,
        from: jiff::Timestamp,
        until: jiff::Timestamp,
    ) -> Result<Vec<BookedPoints>, Error> {
        self.0.delay().await;
        Ok(self.0.movements(from, until))
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

    async fn balance(&self, member_id: &MemberId) -> Result<Balance, Error> {
        self.0.delay().await;
        self.0
            .member_balance(member_id)
            .map_err(|e| to_port_error(e, "loyalty", ReasonCode::LoyaltyRejected))
    }

    async fn create_hold(&self, request: &HoldRequest, key: &IdempotencyKey) -> Result<Hold, Error> {
        self.0.delay().await;
        self.0
            .create_hold(request, key.as_str())
            .map_err(|e| to_port_error(e, "loyalty", ReasonCode::LoyaltyRejected))
    }

    async fn get_hold(&self, hold_id: &HoldId) -> Result<Hold, Error> {
        self.0.delay().await;
        self.0
            .get_hold(hold_id)
            .map_err(|e| to_port_error(e, "loyalty", ReasonCode::LoyaltyRejected))
    }

    async fn commit_hold(
        &self,
        hold_id: &HoldId,
        request: &CommitRequest,
        key: &IdempotencyKey,
    ) -> Result<Hold, Error> {
        self.0.delay().await;
        self.0
            .commit_hold(hold_id, request, key.as_str())
            .map_err(|e| to_port_error(e, "loyalty", ReasonCode::RedemptionRefused))
    }

    async fn release_hold(&self, hold_id: &HoldId, key: &IdempotencyKey) -> Result<Hold, Error> {
        self.0.delay().await;
        self.0
            .release_hold(hold_id, key.as_str())
            .map_err(|e| to_port_error(e, "loyalty", ReasonCode::LoyaltyRejected))
    }

    async fn adjust(&self, request: &AdjustmentRequest, key: &IdempotencyKey) -> Result<Adjustment, Error> {
        self.0.delay().await;
        self.0
            .adjust(request, key.as_str())
            .map_err(|e| to_port_error(e, "loyalty", ReasonCode::LoyaltyRejected))
    }

    /// `transaction_not_found` and `not_pending` are `LoyaltyRejected`, the code in the message.
    async fn confirm_accrual(
        &self,
        loyalty_transaction_id: &ExternalRef,
        key: &IdempotencyKey,
    ) -> Result<Confirmation, Error> {
        self.0.delay().await;
        self.0
            .confirm_accrual(loyalty_transaction_id, key.as_str())
            .map_err(|e| to_port_error(e, "loyalty", ReasonCode::LoyaltyRejected))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::faults::{FaultKind, Faults};
    use crate::samples::{
        accrual, adjustment, cancellation, commit, erased_snapshot, hold, member_snapshot, order, order_sale,
        return_of, sale,
    };
    use retail_sync_contracts::values::Points;
    use retail_sync_core::ports::{AdjustmentKind, HoldStatus};

    fn key(s: &str) -> IdempotencyKey {
        IdempotencyKey::for_step(s, "test")
    }

    fn member(id: &str) -> MemberId {
        MemberId::parse(id).unwrap()
    }

    #[tokio::test]
    async fn members_are_enrolled_synced_and_merged_and_their_refusals_say_why() {
        let loyalty = InProcessLoyalty(LoyaltySimulator::new());
        let (reason, message) = reason_of(loyalty.enrol(&member("unknown-1"), &key("e0")).await);
        assert_eq!(reason, ReasonCode::MemberNotEnrolled);
        assert!(message.starts_with("enrolment_refused: "), "{message}");
        let (reason, _) = reason_of(loyalty.sync_member(&member_snapshot("m-1", 1), &key("s0")).await);
        assert_eq!(reason, ReasonCode::MemberNotEnrolled, "not enrolled yet");

        loyalty.enrol(&member("m-1"), &key("e1")).await.unwrap();
        loyalty.enrol(&member("m-1"), &key("e1")).await.unwrap();
        loyalty.enrol(&member("m-2"), &key("e2")).await.unwrap();
        loyalty
            .sync_member(&member_snapshot("m-1", 1), &key("s1"))
            .await
            .unwrap();
        loyalty
            .accrue(&accrual("m-1", "r-1", 2_500), &key("a1"))
            .await
            .unwrap();
        let moved = loyalty
            .merge(&member("m-1"), &member("m-2"), &key("m1"))
            .await
            .unwrap();
        assert_eq!(moved.get(), 25);
        let again = loyalty
            .merge(&member("m-1"), &member("m-2"), &key("m2"))
            .await
            .unwrap();
        assert_eq!(again, moved, "the first merge's answer");
        assert_eq!(loyalty.0.balance("m-2").map(Points::get), Some(25));

        let (reason, message) = reason_of(loyalty.merge(&member("m-2"), &member("m-2"), &key("m3")).await);
        assert_eq!(reason, ReasonCode::MergeRefused);
        assert!(message.starts_with("merge_refused: "), "{message}");
        let (reason, message) = reason_of(loyalty.accrue(&accrual("m-1", "r-2", 100), &key("a2")).await);
        assert_eq!(reason, ReasonCode::MergeRefused);
        assert!(message.starts_with("member_merged: "), "{message}");
        let (reason, message) = reason_of(loyalty.merge(&member("m-9"), &member("m-2"), &key("m4")).await);
        assert_eq!(reason, ReasonCode::MemberNotEnrolled, "what a merge waits on");
        assert!(message.starts_with("member_not_found: "), "{message}");
    }

    #[tokio::test]
    async fn the_erp_and_the_crm_keep_the_highest_revision_of_any_member() {
        let erp = InProcessErp(ErpSimulator::new());
        let crm = InProcessCrm(CrmSimulator::new());
        for system in [&erp as &dyn MemberSync, &crm] {
            system
                .sync_member(&member_snapshot("m-7", 2), &key("s2"))
                .await
                .unwrap();
            system
                .sync_member(&member_snapshot("m-7", 1), &key("s1"))
                .await
                .unwrap();
            system
                .sync_member(&erased_snapshot("m-7", 3), &key("s3"))
                .await
                .unwrap();
            system
                .sync_member(&erased_snapshot("m-7", 3), &key("s3"))
                .await
                .unwrap();
            let (reason, message) =
                reason_of(system.sync_member(&member_snapshot("m-7", 4), &key("s3")).await);
            assert!(message.starts_with("idempotency_key_reused: "), "{message}");
            assert!(matches!(
                reason,
                ReasonCode::ErpRejected | ReasonCode::CrmRejected
            ));
        }
        assert_eq!(erp.0.customer(&member("m-7")), Some(erased_snapshot("m-7", 3)));
        assert_eq!(
            crm.0.contact(&member("m-7")).unwrap().member,
            erased_snapshot("m-7", 3)
        );
        crm.0.set_down(true);
        let err = crm
            .sync_member(&member_snapshot("m-7", 4), &key("s4"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable { what: "crm", .. }), "{err:?}");
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
                    reason: ReasonCode::MemberNotEnrolled,
                    ..
                }
            ),
            "{err:?}"
        );
        loyalty.enrol(&member("m-1"), &key("e")).await.unwrap();
        let ok = loyalty
            .accrue(&accrual("m-1", "r-1", 250), &key("d"))
            .await
            .unwrap();
        assert_eq!(ok.points.get(), 2);
    }

    fn reason_of<T: std::fmt::Debug>(result: Result<T, Error>) -> (ReasonCode, String) {
        match result {
            Err(Error::Rejected { reason, message }) => (reason, message),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn cancellations_and_returns_go_through_and_their_refusals_are_erp_rejections() {
        let erp = InProcessErp(ErpSimulator::new());
        let (reason, message) = reason_of(erp.post_sale(&order_sale("reject-1"), &key("s0")).await);
        assert_eq!(reason, ReasonCode::ErpRejected);
        assert!(message.starts_with("order_rejected: "), "{message}");
        erp.post_sale(&order_sale("o-1"), &key("s1")).await.unwrap();
        let doc = erp
            .cancel_order(&cancellation("o-1", "cx-1"), &key("c1"))
            .await
            .unwrap();
        assert_eq!(doc.document_id.as_str(), "ERP-00000002");
        let doc = erp
            .post_return(&return_of("ret-1", order("o-1"), None), &key("r1"))
            .await
            .unwrap();
        assert_eq!(doc.document_id.as_str(), "ERP-00000003");
        let (reason, message) = reason_of(erp.cancel_order(&cancellation("o-2", "cx-1"), &key("c2")).await);
        assert_eq!(reason, ReasonCode::ErpRejected);
        assert!(message.starts_with("order_not_found: "), "{message}");
        let (reason, _) = reason_of(
            erp.post_return(&return_of("ret-2", order("o-2"), None), &key("r2"))
                .await,
        );
        assert_eq!(reason, ReasonCode::ErpRejected);
    }

    #[tokio::test]
    async fn hold_refusals_at_commit_are_refused_redemptions_and_the_rest_loyalty_rejections() {
        let sim = LoyaltySimulator::new();
        sim.seed_balance("m-1", Points::new(1_000).unwrap());
        let loyalty = InProcessLoyalty(sim);
        let now = jiff::Timestamp::now();
        let minutes = jiff::SignedDuration::from_secs(600);
        let (reason, message) = reason_of(
            loyalty
                .create_hold(&hold("m-1", 2_000, 10_000, now, minutes), &key("h0"))
                .await,
        );
        assert_eq!(reason, ReasonCode::LoyaltyRejected);
        assert!(message.starts_with("insufficient_points: "), "{message}");

        let h = loyalty
            .create_hold(&hold("m-1", 300, 10_000, now, minutes), &key("h1"))
            .await
            .unwrap();
        let balance = loyalty.balance(&h.member_id).await.unwrap();
        assert_eq!((balance.balance.get(), balance.available.get()), (1_000, 700));
        let (reason, message) = reason_of(
            loyalty
                .commit_hold(&h.hold_id, &commit("o-1", 299), &key("c1"))
                .await,
        );
        assert_eq!(reason, ReasonCode::RedemptionRefused);
        assert!(message.starts_with("points_mismatch: "), "{message}");
        let released = loyalty.release_hold(&h.hold_id, &key("r1")).await.unwrap();
        assert_eq!(released.status, HoldStatus::Released);
        assert_eq!(loyalty.get_hold(&h.hold_id).await.unwrap(), released);
        let (reason, message) = reason_of(
            loyalty
                .commit_hold(&h.hold_id, &commit("o-1", 300), &key("c2"))
                .await,
        );
        assert_eq!(reason, ReasonCode::RedemptionRefused);
        assert!(message.starts_with("hold_released: "), "{message}");

        let a = loyalty
            .adjust(
                &adjustment("m-1", AdjustmentKind::Recredit, "o-1", "compensation", 5),
                &key("a1"),
            )
            .await
            .unwrap();
        assert_eq!((a.delta, a.balance.get()), (5, 1_005));
        let (reason, _) = reason_of(
            loyalty
                .balance(&retail_sync_contracts::values::MemberId::parse("unknown-1").unwrap())
                .await,
        );
        assert_eq!(
            reason,
            ReasonCode::MemberNotEnrolled,
            "an unknown member, whichever call"
        );
        loyalty.0.set_faults(Faults {
            down: true,
            ..Faults::default()
        });
        let err = loyalty.get_hold(&h.hold_id).await.unwrap_err();
        assert!(
            matches!(err, Error::Unavailable { what: "loyalty", .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn pending_points_are_confirmed_through_the_port_and_its_refusals_say_why() {
        let loyalty = InProcessLoyalty(LoyaltySimulator::new());
        loyalty.enrol(&member("m-1"), &key("e1")).await.unwrap();
        let pending = retail_sync_core::ports::AccrualRequest {
            pending_until: Some("2026-12-20T10:00:00Z".parse().unwrap()),
            ..accrual("m-1", "r-1", 2_500)
        };
        let a = loyalty.accrue(&pending, &key("a1")).await.unwrap();
        assert!(a.pending);
        let b = loyalty.balance(&member("m-1")).await.unwrap();
        assert_eq!((b.balance.get(), b.available.get(), b.pending.get()), (0, 0, 25));
        let c = loyalty
            .confirm_accrual(&a.loyalty_transaction_id, &key("c1"))
            .await
            .unwrap();
        assert_eq!((c.points_confirmed.get(), c.balance.get()), (25, 25));
        let again = loyalty
            .confirm_accrual(&a.loyalty_transaction_id, &key("c2"))
            .await
            .unwrap();
        assert_eq!(again, c);
        let b = loyalty.balance(&member("m-1")).await.unwrap();
        assert_eq!((b.balance.get(), b.available.get(), b.pending.get()), (25, 25, 0));

        let plain = loyalty
            .accrue(&accrual("m-1", "r-2", 1_000), &key("a2"))
            .await
            .unwrap();
        let (reason, message) = reason_of(
            loyalty
                .confirm_accrual(&plain.loyalty_transaction_id, &key("c3"))
                .await,
        );
        assert_eq!(reason, ReasonCode::LoyaltyRejected);
        assert!(message.starts_with("not_pending: "), "{message}");
        let unknown = ExternalRef::parse("LT-00000042").unwrap();
        let (reason, message) = reason_of(loyalty.confirm_accrual(&unknown, &key("c4")).await);
        assert_eq!(reason, ReasonCode::LoyaltyRejected);
        assert!(message.starts_with("transaction_not_found: "), "{message}");
    }

    #[tokio::test]
    async fn the_latency_fault_delays_the_call() {
        let loyalty = InProcessLoyalty(LoyaltySimulator::with_faults(Faults {
            latency_ms: 30,
            ..Faults::default()
        }));
        loyalty.0.seed_balance("m-1", Points::ZERO);
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
