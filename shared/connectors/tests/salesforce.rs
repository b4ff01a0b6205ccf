//! The Salesforce Loyalty Management connector against the Salesforce simulator (the reference loyalty
//! platform behind Salesforce's dialect): exactly once without an idempotency key, holds as debits,
//! back-pressure and refusals.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use retail_sync_connectors::{ClientAuth, HttpConfig, SalesforceLoyalty, SalesforceMapping};
use retail_sync_contracts::events::ReasonCode;
use retail_sync_contracts::values::Points;
use retail_sync_core::Error;
use retail_sync_core::idempotency::IdempotencyKey;
use retail_sync_core::ports::{AdjustmentKind, HoldStatus, Loyalty};
use retail_sync_simulators::access::Access;
use retail_sync_simulators::samples::{accrual, adjustment, commit, hold, order};
use retail_sync_simulators::{Dialects, ErpSimulator, FaultKind, Faults, LoyaltySimulator};
use retail_sync_testkit::sims;

struct Harness {
    loyalty: LoyaltySimulator,
    dialects: Dialects,
    sf: SalesforceLoyalty,
    base: String,
}

fn mapping() -> SalesforceMapping {
    let path = format!(
        "{}/../../infra/connectors/salesforce-loyalty.json",
        env!("CARGO_MANIFEST_DIR")
    );
    SalesforceMapping::parse(&std::fs::read_to_string(path).unwrap(), "sample").unwrap()
}

async fn start() -> Harness {
    let (erp, loyalty) = (ErpSimulator::new(), LoyaltySimulator::new());
    let dialects = Dialects::over(&erp, &loyalty);
    let (base, _server) = sims::serve_with(erp, loyalty.clone(), dialects.clone(), Access::local()).await;
    let config = fast(base.clone());
    // A connected app's client credentials, sent in the form body as Salesforce documents, to the
    // token endpoint where Salesforce serves it.
    let auth = sims::oauth_at(&format!("{base}/services/oauth2/token"), ClientAuth::Body);
    loyalty.seed_balance("m-1", Points::new(5_000).unwrap());
    Harness {
        loyalty,
        dialects,
        sf: SalesforceLoyalty::new(&config, auth, mapping()).unwrap(),
        base,
    }
}

fn fast(base: String) -> HttpConfig {
    sims::fast(base, Duration::from_millis(400))
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::for_step(k, "test")
}

fn once_after_commit() -> Faults {
    Faults {
        fail_first: 1,
        fail_first_with: FaultKind::TimeoutAfterCommit,
        ..Faults::default()
    }
}

#[tokio::test]
async fn an_accrual_timed_out_after_commit_is_found_by_its_external_transaction_number() {
    let h = start().await;
    h.loyalty.set_faults(once_after_commit());
    let long_key = IdempotencyKey::for_step("receipt:store-001:r-000001", "accrue-loyalty-with-a-long-name");
    // The answer is lost: the outcome is unknown, so this delivery does not post again.
    let lost =
        h.sf.accrue(&accrual("m-1", "r-1", 12_345), &long_key)
            .await
            .unwrap_err();
    assert!(lost.to_string().contains("outcome not settled"), "{lost}");
    // The next delivery finds the journal by its number.
    let first =
        h.sf.accrue(&accrual("m-1", "r-1", 12_345), &long_key)
            .await
            .unwrap();
    assert_eq!(first.points.get(), 123, "the program's rule: 1 point per 1.00");
    assert_eq!(first.balance.get(), 5_123);
    assert_eq!(
        h.loyalty.transactions().len(),
        1,
        "posted once, though the answer was lost"
    );
    assert_eq!(
        h.dialects.salesforce.posts(),
        1,
        "the redelivery found the journal instead of posting"
    );
    let again =
        h.sf.accrue(&accrual("m-1", "r-1", 12_345), &long_key)
            .await
            .unwrap();
    assert_eq!(again, first);
}

#[tokio::test]
async fn reversals_and_recredits_are_posted_once_through_the_points_processes() {
    let h = start().await;
    h.sf.accrue(&accrual("m-1", "r-2", 10_000), &key("acc"))
        .await
        .unwrap();
    h.loyalty.set_faults(once_after_commit());
    let reversal = adjustment("m-1", AdjustmentKind::Reversal, "o-1", "ret-1", 40);
    h.sf.adjust(&reversal, &key("rev")).await.unwrap_err();
    let first = h.sf.adjust(&reversal, &key("rev")).await.unwrap();
    assert_eq!((first.delta, first.balance.get()), (-40, 5_060));
    assert_eq!(h.sf.adjust(&reversal, &key("rev")).await.unwrap(), first);
    let recredit = adjustment("m-1", AdjustmentKind::Recredit, "o-1", "cx-1", 25);
    let back = h.sf.adjust(&recredit, &key("rec")).await.unwrap();
    assert_eq!((back.delta, back.balance.get()), (25, 5_085));
    assert_eq!(h.loyalty.balance("m-1").unwrap().get(), 5_085);
    assert_eq!(h.loyalty.transactions().len(), 3);
}

#[tokio::test]
async fn a_hold_is_a_debit_committed_once_to_one_order() {
    let h = start().await;
    let now = Timestamp::now();
    h.loyalty.set_faults(once_after_commit());
    let request = hold("m-1", 600, 7_900, now, SignedDuration::from_secs(900));
    h.sf.create_hold(&request, &key("h1")).await.unwrap_err();
    let held = h.sf.create_hold(&request, &key("h1")).await.unwrap();
    assert_eq!((held.status, held.value_minor.get()), (HoldStatus::Held, 600));
    assert_eq!(
        h.sf.create_hold(&request, &key("h1")).await.unwrap().hold_id,
        held.hold_id
    );
    assert_eq!(
        h.loyalty.holds().len(),
        1,
        "one hold, though the first answer was lost"
    );
    assert_eq!(
        h.sf.balance(&request.member_id).await.unwrap().available.get(),
        4_400,
        "debited"
    );

    let committed =
        h.sf.commit_hold(&held.hold_id, &commit("o-9", 600), &key("c1"))
            .await
            .unwrap();
    assert_eq!(committed.status, HoldStatus::Committed);
    assert_eq!(committed.transaction, Some(order("o-9")));
    // The same commit again is the same answer; another order's is refused as a redemption verdict.
    let again =
        h.sf.commit_hold(&held.hold_id, &commit("o-9", 600), &key("c1"))
            .await
            .unwrap();
    assert_eq!(again.status, HoldStatus::Committed);
    let e =
        h.sf.commit_hold(&held.hold_id, &commit("o-10", 600), &key("c2"))
            .await
            .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Rejected {
                reason: ReasonCode::RedemptionRefused,
                ..
            }
        ),
        "{e:?}"
    );
    let e = h.sf.release_hold(&held.hold_id, &key("r1")).await.unwrap_err();
    assert!(e.to_string().contains("hold_committed"), "{e}");
    assert_eq!(h.loyalty.balance("m-1").unwrap().get(), 4_400);
}

#[tokio::test]
async fn a_released_or_expired_hold_gives_the_points_back_and_cannot_be_committed() {
    let h = start().await;
    let now = Timestamp::now();
    let held =
        h.sf.create_hold(
            &hold("m-1", 300, 5_000, now, SignedDuration::from_secs(900)),
            &key("h2"),
        )
        .await
        .unwrap();
    let released = h.sf.release_hold(&held.hold_id, &key("r2")).await.unwrap();
    assert_eq!(released.status, HoldStatus::Released);
    assert_eq!(
        h.sf.release_hold(&held.hold_id, &key("r2")).await.unwrap().status,
        HoldStatus::Released
    );
    let e =
        h.sf.commit_hold(&held.hold_id, &commit("o-11", 300), &key("c3"))
            .await
            .unwrap_err();
    assert!(e.to_string().contains("hold_released"), "{e}");

    let short =
        h.sf.create_hold(
            &hold("m-1", 200, 5_000, now, SignedDuration::from_millis(1_500)),
            &key("h3"),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert_eq!(
        h.sf.get_hold(&short.hold_id).await.unwrap().status,
        HoldStatus::Expired
    );
    let e =
        h.sf.commit_hold(&short.hold_id, &commit("o-12", 200), &key("c4"))
            .await
            .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Rejected {
                reason: ReasonCode::RedemptionRefused,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("hold_expired"), "{e}");
    assert_eq!(
        h.sf.balance(&short.member_id).await.unwrap().available.get(),
        5_000
    );
}

#[tokio::test]
async fn the_request_limit_and_outages_are_back_pressure_and_refusals_are_verdicts() {
    let h = start().await;
    h.loyalty.set_faults(Faults {
        throttle_rate: 1.0,
        ..Faults::default()
    });
    let e =
        h.sf.accrue(&accrual("m-1", "r-3", 1_000), &key("t"))
            .await
            .unwrap_err();
    assert!(
        matches!(e, Error::Unavailable { .. }),
        "REQUEST_LIMIT_EXCEEDED: {e:?}"
    );
    h.loyalty.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let e =
        h.sf.accrue(&accrual("m-1", "r-3", 1_000), &key("t"))
            .await
            .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "503: {e:?}");
    h.loyalty.set_faults(Faults::default());
    let e =
        h.sf.accrue(&accrual("unknown-7", "r-4", 1_000), &key("u"))
            .await
            .unwrap_err();
    assert!(
        matches!(e, Error::Rejected { .. }) && e.to_string().contains("member_not_found"),
        "{e:?}"
    );
    assert!(h.loyalty.transactions().is_empty());
}

/// Salesforce keeps an abandoned checkout's debit past the hold's expiry: the member's next balance
/// read cancels it (Cancel Redemption), and only it.
#[tokio::test]
async fn an_abandoned_hold_is_cancelled_by_the_member_s_next_balance_read() {
    let h = start().await;
    let now = Timestamp::now();
    let member = retail_sync_contracts::values::MemberId::parse("m-1").unwrap();
    let abandoned =
        h.sf.create_hold(
            &hold("m-1", 400, 5_000, now, SignedDuration::from_millis(1_200)),
            &key("h4"),
        )
        .await
        .unwrap();
    let kept =
        h.sf.create_hold(
            &hold("m-1", 100, 5_000, now, SignedDuration::from_secs(900)),
            &key("h5"),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(h.sf.balance(&member).await.unwrap().available.get(), 4_900);
    // What reached the platform: the abandoned hold's debit cancelled, nothing else.
    let cancelled: Vec<_> = h
        .loyalty
        .applied()
        .into_iter()
        .filter_map(|(_, call, _)| match call {
            retail_sync_simulators::loyalty::LoyaltyCall::Release(hold) => Some(hold),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled, vec![abandoned.hold_id.clone()]);
    assert_eq!(
        h.sf.get_hold(&abandoned.hold_id).await.unwrap().status,
        HoldStatus::Expired
    );
    assert_eq!(
        h.sf.get_hold(&kept.hold_id).await.unwrap().status,
        HoldStatus::Held,
        "a live hold stays"
    );
}

/// A wrong instance URL (or API version) answers 404: the accrual waits for the fix, it is never
/// refused.
#[tokio::test]
async fn an_org_that_is_not_there_is_a_setup_fault_not_a_refusal() {
    let h = start().await;
    let base = h.base.clone();
    let auth = sims::oauth_at(&format!("{base}/services/oauth2/token"), ClientAuth::Body);
    let wrong = SalesforceLoyalty::new(&fast(format!("{base}/not-the-instance")), auth, mapping()).unwrap();
    let e = wrong
        .accrue(&accrual("m-1", "r-9", 1_000), &key("w"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().contains("check the base URL"), "{e}");
    assert!(h.loyalty.transactions().is_empty());
}
