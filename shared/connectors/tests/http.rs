//! The HTTP adapters against the HTTP simulator on a free local port, with short timeouts and backoff so
//! the failure paths stay fast.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::SignedDuration;

use retail_sync_connectors::{
    Auth, AuthMethod, ClientAuth, CredentialSource, Credentials, HttpConfig, HttpErp, HttpLoyalty, Secret,
    StaticCredentials,
};
use retail_sync_contracts::events::ReasonCode;
use retail_sync_contracts::values::{HoldId, MemberId, Points};
use retail_sync_core::Error;
use retail_sync_core::idempotency::IdempotencyKey;
use retail_sync_core::memory::ManualClock;
use retail_sync_core::ports::{AdjustmentKind, Clock, Erp, HoldStatus, Loyalty};
use retail_sync_simulators::access::{Access, LOCAL_API_KEY};
use retail_sync_simulators::samples::{
    accrual, adjustment, cancellation, commit, hold, order, order_sale, return_of, sale,
};
use retail_sync_simulators::{ErpSimulator, FaultKind, Faults, LoyaltySimulator};
use retail_sync_testkit::sims;

fn fast(base_url: String) -> HttpConfig {
    sims::fast(base_url, Duration::from_millis(300))
}

struct Harness {
    erp: ErpSimulator,
    loyalty: LoyaltySimulator,
    access: Access,
    base: String,
    http_erp: HttpErp,
    http_loyalty: HttpLoyalty,
}

/// The simulators behind their token endpoint, and both connectors authenticating with OAuth 2.0.
async fn start() -> Harness {
    start_with(Access::local()).await
}

async fn start_with(access: Access) -> Harness {
    let (erp, loyalty) = (ErpSimulator::new(), LoyaltySimulator::new());
    // The platform knows only enrolled members: m-1 is one, with nothing yet.
    loyalty.seed_balance("m-1", Points::ZERO);
    let (base, _server) = sims::serve(erp.clone(), loyalty.clone(), access.clone()).await;
    let config = fast(format!("{base}/"));
    Harness {
        erp,
        loyalty,
        access,
        http_erp: HttpErp::new(&config, sims::oauth(&base, ClientAuth::Basic)).unwrap(),
        http_loyalty: HttpLoyalty::new(&config, sims::oauth(&base, ClientAuth::Body)).unwrap(),
        base,
    }
}

/// A secret that is rotated after its first read: `credentials(n)` is what load `n` (from 0) returns.
struct Rotating {
    loads: std::sync::atomic::AtomicU32,
    credentials: fn(u32) -> Credentials,
}

impl Rotating {
    fn new(credentials: fn(u32) -> Credentials) -> Self {
        Self {
            loads: Default::default(),
            credentials,
        }
    }

    fn loads(&self) -> u32 {
        self.loads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl CredentialSource for Rotating {
    async fn load(&self) -> Result<Credentials, retail_sync_core::BoxError> {
        let n = self.loads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok((self.credentials)(n))
    }

    fn describe(&self) -> String {
        "a rotating secret".into()
    }
}

fn key(business: &str) -> IdempotencyKey {
    IdempotencyKey::for_step(business, "post-sale-to-erp")
}

fn script(n: u32, kind: FaultKind) -> Faults {
    Faults {
        fail_first: n,
        fail_first_with: kind,
        ..Faults::default()
    }
}

#[tokio::test]
async fn a_sale_is_posted_and_its_document_returned() {
    let h = start().await;
    let doc = h
        .http_erp
        .post_sale(&sale("store-1", "r-1"), &key("receipt:store-1:r-1"))
        .await
        .unwrap();
    assert_eq!(doc.document_id.as_str(), "ERP-00000001");
    let postings = h.erp.postings();
    assert_eq!(postings.len(), 1);
    assert_eq!(
        postings[0].idempotency_key, "receipt:store-1:r-1:post-sale-to-erp",
        "the key was sent"
    );
}

#[tokio::test]
async fn a_timeout_after_commit_is_retried_with_the_same_key_and_posts_exactly_once() {
    let h = start().await;
    h.erp.set_faults(script(1, FaultKind::TimeoutAfterCommit));
    let doc = h
        .http_erp
        .post_sale(&sale("store-1", "r-1"), &key("receipt:store-1:r-1"))
        .await
        .unwrap();
    assert_eq!(
        doc.document_id.as_str(),
        "ERP-00000001",
        "the retry got the first document back"
    );
    assert_eq!(h.erp.postings().len(), 1, "exactly one posting");
    assert_eq!(h.erp.requests(), 2);
}

#[tokio::test]
async fn a_503_is_retried_until_the_system_answers() {
    let h = start().await;
    h.erp.set_faults(script(2, FaultKind::Error));
    let doc = h
        .http_erp
        .post_sale(&sale("store-1", "r-1"), &key("a"))
        .await
        .unwrap();
    assert_eq!(doc.document_id.as_str(), "ERP-00000001");
    assert_eq!(h.erp.requests(), 3);
    assert_eq!(h.erp.postings().len(), 1);
}

#[tokio::test]
async fn a_closed_period_is_rejected_at_once_without_retries() {
    let h = start().await;
    let err = h
        .http_erp
        .post_sale(&sale("closed-3", "r-1"), &key("a"))
        .await
        .unwrap_err();
    match err {
        Error::Rejected { reason, message } => {
            assert_eq!(reason, ReasonCode::ErpRejected);
            assert!(message.starts_with("period_closed: "), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(h.erp.requests(), 1, "a permanent answer is not retried");
}

#[tokio::test]
async fn a_key_reused_for_another_sale_is_rejected() {
    let h = start().await;
    h.http_erp
        .post_sale(&sale("store-1", "r-1"), &key("a"))
        .await
        .unwrap();
    let err = h
        .http_erp
        .post_sale(&sale("store-1", "r-2"), &key("a"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Rejected { message, .. } if message.starts_with("idempotency_key_reused: ")),
        "{err:?}"
    );
    assert_eq!(h.erp.requests(), 2);
}

#[tokio::test]
async fn a_system_that_stays_down_is_unavailable_after_the_last_attempt() {
    let h = start().await;
    h.erp.set_faults(Faults {
        down: true,
        ..Faults::default()
    });
    let err = h
        .http_erp
        .post_sale(&sale("store-1", "r-1"), &key("a"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { what: "erp", .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("gave up after 4 attempts"), "{err}");
    assert_eq!(h.erp.requests(), 4, "max_attempts");
}

#[tokio::test]
async fn timeouts_that_never_end_are_unavailable_within_the_attempt_budget() {
    let h = start().await;
    h.loyalty.set_faults(Faults {
        timeout_rate: 1.0,
        ..Faults::default()
    });
    let started = Instant::now();
    let err = h
        .http_loyalty
        .accrue(&accrual("m-1", "r-1", 1_000), &key("a"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unavailable { what: "loyalty", .. }),
        "{err:?}"
    );
    assert_eq!(h.loyalty.requests(), 4);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "4 × 300 ms plus backoff, not the server's hang"
    );
    assert!(h.loyalty.transactions().is_empty());
}

#[tokio::test]
async fn nobody_listening_is_unavailable() {
    // A port that was free a moment ago: connecting is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let base = format!("http://{addr}");
    let erp = HttpErp::new(&fast(base.clone()), sims::oauth(&base, ClientAuth::Basic)).unwrap();
    let err = erp
        .post_sale(&sale("store-1", "r-1"), &key("a"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { what: "erp", .. }), "{err:?}");
}

#[tokio::test]
async fn an_accrual_earns_points_on_the_eligible_amount_and_balances_add_up() {
    let h = start().await;
    let first = h
        .http_loyalty
        .accrue(&accrual("m-1", "r-1", 12_345), &key("a"))
        .await
        .unwrap();
    assert_eq!((first.points.get(), first.balance.get()), (123, 123));
    assert_eq!(first.loyalty_transaction_id.as_str(), "LT-00000001");
    let second = h
        .http_loyalty
        .accrue(&accrual("m-1", "r-2", 2_099), &key("b"))
        .await
        .unwrap();
    assert_eq!((second.points.get(), second.balance.get()), (20, 143));
    assert_eq!(h.loyalty.balance("m-1").map(|p| p.get()), Some(143));
}

#[tokio::test]
async fn an_accrual_retried_after_commit_earns_once() {
    let h = start().await;
    h.loyalty.set_faults(script(1, FaultKind::TimeoutAfterCommit));
    let accrued = h
        .http_loyalty
        .accrue(&accrual("m-1", "r-1", 5_000), &key("a"))
        .await
        .unwrap();
    assert_eq!(accrued.balance.get(), 50);
    assert_eq!(h.loyalty.transactions().len(), 1);
}

#[tokio::test]
async fn an_unknown_member_is_rejected_without_retries() {
    let h = start().await;
    let err = h
        .http_loyalty
        .accrue(&accrual("unknown-5", "r-1", 1_000), &key("a"))
        .await
        .unwrap_err();
    match err {
        Error::Rejected { reason, message } => {
            // Told apart from the platform's other refusals: the enrolment rule decides what follows.
            assert_eq!(reason, ReasonCode::MemberNotEnrolled);
            assert!(message.starts_with("member_not_found: "), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(h.loyalty.requests(), 1);
}

// --- Orders, returns and redemptions ---------------------------------------------------------------

/// A loyalty platform on a manual clock where `m-1` has 1,000 points.
fn with_points(h: &Harness) -> Arc<ManualClock> {
    let clock = Arc::new(ManualClock::new("2026-11-20T10:00:00Z".parse().unwrap()));
    h.loyalty.set_clock(clock.clone());
    h.loyalty.seed_balance("m-1", Points::new(1_000).unwrap());
    clock
}

fn m1() -> MemberId {
    MemberId::parse("m-1").unwrap()
}

fn rejection(err: Error) -> (ReasonCode, String) {
    match err {
        Error::Rejected { reason, message } => (reason, message),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn a_hold_is_created_committed_and_the_balance_shows_it() {
    let h = start().await;
    let clock = with_points(&h);
    let request = hold("m-1", 400, 5_000, clock.now(), SignedDuration::from_secs(900));
    let held = h
        .http_loyalty
        .create_hold(&request, &key("checkout"))
        .await
        .unwrap();
    assert_eq!(
        (held.hold_id.as_str(), held.status),
        ("H-00000001", HoldStatus::Held)
    );
    assert_eq!(held.value_minor.get(), 400, "1 point = 1 cent");
    let balance = h.http_loyalty.balance(&m1()).await.unwrap();
    assert_eq!(
        (balance.balance.get(), balance.held.get(), balance.available.get()),
        (1_000, 400, 600)
    );
    assert_eq!(h.http_loyalty.get_hold(&held.hold_id).await.unwrap(), held);

    let committed = h
        .http_loyalty
        .commit_hold(&held.hold_id, &commit("o-1", 400), &key("order:o-1"))
        .await
        .unwrap();
    assert_eq!(committed.status, HoldStatus::Committed);
    assert_eq!(committed.transaction, Some(order("o-1")));
    assert!(committed.loyalty_transaction_id.is_some());
    let balance = h.http_loyalty.balance(&m1()).await.unwrap();
    assert_eq!(
        (balance.balance.get(), balance.held.get(), balance.available.get()),
        (600, 0, 600)
    );

    let again = h
        .http_loyalty
        .commit_hold(&held.hold_id, &commit("o-1", 400), &key("another"))
        .await
        .unwrap();
    assert_eq!(again, committed, "the same commit, whatever the key");
    assert_eq!(h.loyalty.transactions().len(), 1);
}

#[tokio::test]
async fn a_commit_retried_after_a_timeout_spends_once() {
    let h = start().await;
    let clock = with_points(&h);
    let request = hold("m-1", 400, 5_000, clock.now(), SignedDuration::from_secs(900));
    let held = h
        .http_loyalty
        .create_hold(&request, &key("checkout"))
        .await
        .unwrap();
    h.loyalty.set_faults(script(1, FaultKind::TimeoutAfterCommit));
    let committed = h
        .http_loyalty
        .commit_hold(&held.hold_id, &commit("o-1", 400), &key("order:o-1"))
        .await
        .unwrap();
    assert_eq!(committed.status, HoldStatus::Committed);
    assert_eq!(h.loyalty.balance("m-1").map(Points::get), Some(600));
    assert_eq!(h.loyalty.transactions().len(), 1);
}

#[tokio::test]
async fn committing_an_expired_hold_is_a_refused_redemption() {
    let h = start().await;
    let clock = with_points(&h);
    let request = hold("m-1", 400, 5_000, clock.now(), SignedDuration::from_secs(900));
    let held = h
        .http_loyalty
        .create_hold(&request, &key("checkout"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(900));
    assert_eq!(
        h.http_loyalty.get_hold(&held.hold_id).await.unwrap().status,
        HoldStatus::Expired
    );
    let before = h.loyalty.requests();
    let err = h
        .http_loyalty
        .commit_hold(&held.hold_id, &commit("o-1", 400), &key("order:o-1"))
        .await
        .unwrap_err();
    let (reason, message) = rejection(err);
    assert_eq!(reason, ReasonCode::RedemptionRefused);
    assert!(message.starts_with("hold_expired: "), "{message}");
    assert_eq!(h.loyalty.requests(), before + 1, "a refusal is not retried");
    assert_eq!(h.loyalty.balance("m-1").map(Points::get), Some(1_000));
}

#[tokio::test]
async fn every_refusal_of_a_commit_is_a_refused_redemption() {
    let h = start().await;
    let clock = with_points(&h);
    let unknown = HoldId::parse("H-00000099").unwrap();
    let err = h
        .http_loyalty
        .commit_hold(&unknown, &commit("o-1", 1), &key("a"))
        .await
        .unwrap_err();
    assert_eq!(rejection(err).0, ReasonCode::RedemptionRefused, "404");
    let request = hold("m-1", 400, 5_000, clock.now(), SignedDuration::from_secs(900));
    let held = h
        .http_loyalty
        .create_hold(&request, &key("checkout"))
        .await
        .unwrap();
    let err = h
        .http_loyalty
        .commit_hold(&held.hold_id, &commit("o-1", 300), &key("b"))
        .await
        .unwrap_err();
    let (reason, message) = rejection(err);
    assert_eq!(reason, ReasonCode::RedemptionRefused, "422");
    assert!(message.starts_with("points_mismatch: "), "{message}");
    let released = h
        .http_loyalty
        .release_hold(&held.hold_id, &key("release"))
        .await
        .unwrap();
    assert_eq!(released.status, HoldStatus::Released);
    let err = h
        .http_loyalty
        .commit_hold(&held.hold_id, &commit("o-1", 400), &key("c"))
        .await
        .unwrap_err();
    let (reason, message) = rejection(err);
    assert_eq!(reason, ReasonCode::RedemptionRefused, "409");
    assert!(message.starts_with("hold_released: "), "{message}");

    // Refusals of other calls stay loyalty rejections.
    let too_much = hold("m-1", 5_000, 10_000, clock.now(), SignedDuration::from_secs(900));
    let err = h
        .http_loyalty
        .create_hold(&too_much, &key("d"))
        .await
        .unwrap_err();
    let (reason, message) = rejection(err);
    assert_eq!(reason, ReasonCode::LoyaltyRejected);
    assert!(message.starts_with("insufficient_points: "), "{message}");
    let err = h.http_loyalty.get_hold(&unknown).await.unwrap_err();
    assert_eq!(rejection(err).0, ReasonCode::LoyaltyRejected);
    let err = h
        .http_loyalty
        .balance(&MemberId::parse("unknown-1").unwrap())
        .await
        .unwrap_err();
    let (reason, message) = rejection(err);
    // An unknown member is told apart from the platform's other refusals on every call.
    assert_eq!(reason, ReasonCode::MemberNotEnrolled);
    assert!(message.starts_with("member_not_found: "), "{message}");
}

#[tokio::test]
async fn reads_are_retried_and_a_platform_that_stays_down_is_unavailable() {
    let h = start().await;
    h.loyalty.set_faults(Faults {
        down: true,
        ..Faults::default()
    });
    let err = h.http_loyalty.balance(&m1()).await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable { what: "loyalty", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("gave up after 4 attempts"), "{err}");
    let err = h
        .http_loyalty
        .get_hold(&HoldId::parse("H-00000001").unwrap())
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn an_adjustment_is_applied_once_under_its_key() {
    let h = start().await;
    with_points(&h);
    let request = adjustment("m-1", AdjustmentKind::Reversal, "o-1", "return:ret-1", 150);
    let first = h.http_loyalty.adjust(&request, &key("reverse")).await.unwrap();
    assert_eq!((first.delta, first.balance.get()), (-150, 850));
    let again = h.http_loyalty.adjust(&request, &key("reverse")).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(h.loyalty.balance("m-1").map(Points::get), Some(850));

    // Applied, then the answer was lost: the retry under the key gets it without applying again.
    h.loyalty.set_faults(script(1, FaultKind::TimeoutAfterCommit));
    let recredit = adjustment("m-1", AdjustmentKind::Recredit, "o-1", "cancellation:cx-1", 50);
    let adjusted = h.http_loyalty.adjust(&recredit, &key("recredit")).await.unwrap();
    assert_eq!((adjusted.delta, adjusted.balance.get()), (50, 900));
    assert_eq!(h.loyalty.transactions().len(), 2);

    let err = h
        .http_loyalty
        .adjust(&recredit, &key("reverse"))
        .await
        .unwrap_err();
    let (reason, message) = rejection(err);
    assert_eq!(reason, ReasonCode::LoyaltyRejected);
    assert!(message.starts_with("idempotency_key_reused: "), "{message}");
}

// --- Pending points ----------------------------------------------------------------------------------

/// Accrued pending through the connector: shown apart in the balance and not spendable; a return inside
/// the window cancels them first; the confirmation makes the rest spendable, once.
#[tokio::test]
async fn a_pending_accrual_is_confirmed_through_the_connector() {
    let h = start().await;
    let clock = with_points(&h);
    let request = retail_sync_core::ports::AccrualRequest {
        pending_until: Some("2026-12-20T10:00:00Z".parse().unwrap()),
        ..accrual("m-1", "r-1", 12_345)
    };
    let accrued = h.http_loyalty.accrue(&request, &key("accrue")).await.unwrap();
    assert!(accrued.pending);
    assert_eq!((accrued.points.get(), accrued.balance.get()), (123, 1_000));
    let balance = h.http_loyalty.balance(&m1()).await.unwrap();
    assert_eq!(
        (
            balance.balance.get(),
            balance.available.get(),
            balance.pending.get()
        ),
        (1_000, 1_000, 123)
    );
    // 1,123 are the member's, 1,000 spendable.
    let too_much = hold("m-1", 1_050, 20_000, clock.now(), SignedDuration::from_secs(900));
    let (reason, message) = rejection(
        h.http_loyalty
            .create_hold(&too_much, &key("hold"))
            .await
            .unwrap_err(),
    );
    assert_eq!(reason, ReasonCode::LoyaltyRejected);
    assert!(message.starts_with("insufficient_points: "), "{message}");

    let mut reversal = adjustment("m-1", AdjustmentKind::Reversal, "o-1", "return:ret-1", 100);
    reversal.transaction = retail_sync_simulators::samples::receipt("store-1", "r-1");
    let adjusted = h.http_loyalty.adjust(&reversal, &key("return")).await.unwrap();
    assert_eq!(
        (
            adjusted.delta,
            adjusted.balance.get(),
            adjusted.pending_cancelled.get()
        ),
        (-100, 1_000, 100)
    );

    // Applied, then the answer was lost: the retry under the key gets the confirmation, moved once.
    h.loyalty.set_faults(script(1, FaultKind::TimeoutAfterCommit));
    let confirmed = h
        .http_loyalty
        .confirm_accrual(&accrued.loyalty_transaction_id, &key("confirm"))
        .await
        .unwrap();
    assert_eq!(confirmed.loyalty_transaction_id, accrued.loyalty_transaction_id);
    assert_eq!(
        (confirmed.points_confirmed.get(), confirmed.balance.get()),
        (23, 1_023)
    );
    let again = h
        .http_loyalty
        .confirm_accrual(&accrued.loyalty_transaction_id, &key("confirm-again"))
        .await
        .unwrap();
    assert_eq!(again, confirmed, "another key: the first confirmation's figures");
    let balance = h.http_loyalty.balance(&m1()).await.unwrap();
    assert_eq!(
        (
            balance.balance.get(),
            balance.available.get(),
            balance.pending.get()
        ),
        (1_023, 1_023, 0)
    );
    h.http_loyalty
        .create_hold(
            &hold("m-1", 1_023, 20_000, clock.now(), SignedDuration::from_secs(900)),
            &key("hold-2"),
        )
        .await
        .unwrap();
}

/// An unknown accrual (404) and one never pending (409) are the platform's final word: rejected at
/// once, the code first in the message, nothing retried or moved.
#[tokio::test]
async fn confirming_an_unknown_or_never_pending_accrual_is_rejected_without_retries() {
    let h = start().await;
    with_points(&h);
    let plain = h
        .http_loyalty
        .accrue(&accrual("m-1", "r-1", 1_000), &key("accrue"))
        .await
        .unwrap();
    assert!(!plain.pending);
    for (id, code) in [
        (plain.loyalty_transaction_id.clone(), "not_pending: "),
        (
            retail_sync_contracts::values::ExternalRef::parse("LT-00000077").unwrap(),
            "transaction_not_found: ",
        ),
    ] {
        let before = h.loyalty.requests();
        let err = h
            .http_loyalty
            .confirm_accrual(&id, &key(&format!("confirm-{id}")))
            .await
            .unwrap_err();
        let (reason, message) = rejection(err);
        assert_eq!(reason, ReasonCode::LoyaltyRejected);
        assert!(message.starts_with(code), "{message}");
        assert_eq!(h.loyalty.requests(), before + 1, "a refusal is not retried");
    }
    assert_eq!(h.loyalty.balance("m-1").map(Points::get), Some(1_010));
    // A platform that stays down is unavailable, after the retries.
    h.loyalty.set_down(true);
    let err = h
        .http_loyalty
        .confirm_accrual(&plain.loyalty_transaction_id, &key("confirm-down"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unavailable { what: "loyalty", .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_order_is_cancelled_and_a_return_credited_in_the_erp() {
    let h = start().await;
    h.http_erp
        .post_sale(&order_sale("o-1"), &key("order:o-1"))
        .await
        .unwrap();
    let cancelled = h
        .http_erp
        .cancel_order(&cancellation("o-1", "cx-1"), &key("cancel"))
        .await
        .unwrap();
    assert_eq!(cancelled.document_id.as_str(), "ERP-00000002");
    let again = h
        .http_erp
        .cancel_order(&cancellation("o-1", "cx-1"), &key("cancel"))
        .await
        .unwrap();
    assert_eq!(again, cancelled);
    let returned = h
        .http_erp
        .post_return(&return_of("ret-1", order("o-1"), Some("store-2")), &key("return"))
        .await
        .unwrap();
    assert_eq!(returned.document_id.as_str(), "ERP-00000003");
    let postings = h.erp.postings();
    let kinds: Vec<_> = postings.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(kinds, ["sale", "cancellation", "return"]);
    assert_eq!(postings[1].idempotency_key, "cancel:post-sale-to-erp");

    let err = h
        .http_erp
        .post_return(&return_of("ret-2", order("o-9"), None), &key("return-2"))
        .await
        .unwrap_err();
    let (reason, message) = rejection(err);
    assert_eq!(reason, ReasonCode::ErpRejected);
    assert!(message.starts_with("original_not_found: "), "{message}");
    let err = h
        .http_erp
        .post_return(
            &return_of("ret-3", order("o-1"), Some("closed-2")),
            &key("return-3"),
        )
        .await
        .unwrap_err();
    assert!(rejection(err).1.starts_with("period_closed: "));
    let err = h
        .http_erp
        .cancel_order(&cancellation("o-9", "cx-1"), &key("cancel-2"))
        .await
        .unwrap_err();
    let (reason, message) = rejection(err);
    assert_eq!(reason, ReasonCode::ErpRejected);
    assert!(message.starts_with("order_not_found: "), "{message}");
    let err = h
        .http_erp
        .post_sale(&order_sale("reject-1"), &key("order:reject-1"))
        .await
        .unwrap_err();
    assert!(rejection(err).1.starts_with("order_rejected: "));
    assert_eq!(h.erp.postings().len(), 3);
}

/// One token serves every call until it is refused: 20 calls over two connectors, one token each.
#[tokio::test]
async fn a_token_is_fetched_once_and_reused() {
    let h = start().await;
    for i in 0..10 {
        let receipt = format!("r-{i}");
        h.http_erp
            .post_sale(&sale("store-1", &receipt), &key(&receipt))
            .await
            .unwrap();
        h.http_loyalty
            .accrue(&accrual("m-1", &receipt, 1_000), &key(&receipt))
            .await
            .unwrap();
    }
    assert_eq!(
        (h.http_erp.tokens_fetched(), h.http_loyalty.tokens_fetched()),
        (1, 1)
    );
    assert_eq!(h.access.tokens_issued(), 2);
    assert_eq!(h.access.refused(), 0);
}

/// A token revoked (or expired early) mid-run: the next call is refused once, the connector fetches a
/// new token and the call goes through — no message is lost, nothing is applied twice.
#[tokio::test]
async fn a_token_refused_mid_run_is_replaced_and_the_call_goes_through() {
    let h = start().await;
    h.http_erp
        .post_sale(&sale("store-1", "r-1"), &key("r-1"))
        .await
        .unwrap();
    h.access.revoke_tokens();
    let doc = h
        .http_erp
        .post_sale(&sale("store-1", "r-2"), &key("r-2"))
        .await
        .unwrap();
    assert_eq!(doc.document_id.as_str(), "ERP-00000002");
    assert_eq!(h.access.refused(), 1);
    assert_eq!(h.http_erp.tokens_fetched(), 2);
    assert_eq!(h.erp.postings().len(), 2);
}

/// A token that expires is renewed before it does (its `expires_in`, less a margin): no call is refused.
#[tokio::test]
async fn a_token_is_renewed_before_it_expires() {
    let h = start_with(Access::local().with_token_ttl(Some(Duration::from_secs(1)))).await;
    h.http_erp
        .post_sale(&sale("store-1", "r-1"), &key("r-1"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    h.http_erp
        .post_sale(&sale("store-1", "r-2"), &key("r-2"))
        .await
        .unwrap();
    assert_eq!(h.http_erp.tokens_fetched(), 2);
    assert_eq!(h.access.refused(), 0, "renewed, not refused");
}

/// Tokens without `expires_in` (as Salesforce answers) live until refused.
#[tokio::test]
async fn a_token_without_expiry_lives_until_refused() {
    let h = start_with(Access::local().with_token_ttl(None)).await;
    for i in 0..3 {
        let r = format!("r-{i}");
        h.http_erp
            .post_sale(&sale("store-1", &r), &key(&r))
            .await
            .unwrap();
    }
    assert_eq!(h.http_erp.tokens_fetched(), 1);
}

/// A secret rotated under a running connector: the old credentials stop working, the next call is
/// refused, the connector loads the credentials again and carries on.
#[tokio::test]
async fn a_rotated_secret_is_loaded_again_after_a_refusal() {
    let (erp, loyalty) = (ErpSimulator::new(), LoyaltySimulator::new());
    let access = Access::local().with_token_ttl(Some(Duration::from_secs(1)));
    let (base, _server) = sims::serve(erp.clone(), loyalty, access.clone()).await;
    let source = Arc::new(Rotating::new(|n| Credentials {
        api_key: Some(Secret::new(if n == 0 { LOCAL_API_KEY } else { "rotated-key" })),
        ..Credentials::default()
    }));
    let auth = Auth {
        method: AuthMethod::ApiKey {
            header: "x-api-key".into(),
        },
        credentials: source.clone(),
    };
    let http = HttpErp::new(&fast(base), auth).unwrap();
    http.post_sale(&sale("store-1", "r-1"), &key("r-1"))
        .await
        .unwrap();
    // The platform now accepts only the rotated key (and the secret holds it).
    access.set_api_key("rotated-key");
    http.post_sale(&sale("store-1", "r-2"), &key("r-2"))
        .await
        .unwrap();
    assert_eq!(erp.postings().len(), 2);
    assert_eq!(access.refused(), 1);
    assert_eq!(source.loads(), 2);
}

/// Wrong credentials are never a verdict on the sale: the call is `Unavailable` (redelivered, then
/// dead-lettered until someone fixes the secret), never `Rejected` (which would fail the saga), and
/// the token endpoint's refusal is not retried in a loop.
#[tokio::test]
async fn wrong_credentials_make_the_system_unavailable_not_a_refusal() {
    let h = start().await;
    let wrong = Auth {
        method: AuthMethod::OAuth2ClientCredentials {
            token_url: format!("{}/oauth/token", h.base),
            scope: None,
            client_auth: ClientAuth::Basic,
        },
        credentials: Arc::new(StaticCredentials {
            credentials: Credentials {
                client_id: Some("retail-sync-local".into()),
                client_secret: Some(Secret::new("guessed")),
                ..Credentials::default()
            },
            origin: "test".into(),
        }),
    };
    let erp = HttpErp::new(&fast(h.base.clone()), wrong).unwrap();
    let err = erp
        .post_sale(&sale("store-1", "r-1"), &key("r-1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { what: "erp", .. }), "{err:?}");
    let text = format!("{err:#?} {err}");
    assert!(text.contains("invalid_client"), "{text}");
    assert!(!text.contains("guessed"), "the secret leaked: {text}");
    assert_eq!(h.erp.requests(), 0);

    let keyless = Auth {
        method: AuthMethod::ApiKey {
            header: "x-api-key".into(),
        },
        credentials: Arc::new(StaticCredentials {
            credentials: Credentials {
                api_key: Some(Secret::new("not-the-key")),
                ..Credentials::default()
            },
            origin: "test".into(),
        }),
    };
    let erp = HttpErp::new(&fast(h.base.clone()), keyless).unwrap();
    let err = erp
        .post_sale(&sale("store-1", "r-1"), &key("r-1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { what: "erp", .. }), "{err:?}");
    assert!(h.erp.postings().is_empty());
}

/// Plain http to another machine is refused when the connector is built, for the system and for the
/// token endpoint alike.
#[test]
fn plain_http_beyond_loopback_is_refused() {
    let remote = "http://erp.example.com";
    assert!(
        HttpErp::new(
            &HttpConfig::new(remote),
            sims::oauth("https://login.example.com", ClientAuth::Basic)
        )
        .is_err()
    );
    let local = "http://127.0.0.1:9";
    let err = HttpErp::new(
        &HttpConfig::new(local),
        sims::oauth("http://login.example.com", ClientAuth::Basic),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("token_url"), "{err}");
}

/// The OAuth client's secret rotated while a container holds the old one: when its token expires and the
/// token endpoint refuses the old secret, the connector loads the secret again and goes on (no call of
/// the system is refused on the way).
#[tokio::test]
async fn a_client_secret_rotated_under_a_cached_token_is_reloaded_at_the_token_endpoint() {
    let (erp, loyalty) = (ErpSimulator::new(), LoyaltySimulator::new());
    let access = Access::local().with_token_ttl(Some(Duration::from_secs(1)));
    let (base, _server) = sims::serve(erp.clone(), loyalty, access.clone()).await;
    let source = Arc::new(Rotating::new(|n| Credentials {
        client_id: Some(retail_sync_simulators::access::LOCAL_CLIENT_ID.into()),
        client_secret: Some(Secret::new(if n == 0 {
            retail_sync_simulators::access::LOCAL_CLIENT_SECRET
        } else {
            "rotated-secret"
        })),
        ..Credentials::default()
    }));
    let auth = Auth {
        method: AuthMethod::OAuth2ClientCredentials {
            token_url: format!("{base}/oauth/token"),
            scope: None,
            client_auth: ClientAuth::Basic,
        },
        credentials: source.clone(),
    };
    let http = HttpErp::new(&fast(base), auth).unwrap();
    http.post_sale(&sale("store-1", "r-1"), &key("r-1"))
        .await
        .unwrap();
    // The identity provider now knows only the new secret; the token runs out.
    access.set_client_secret("rotated-secret");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    http.post_sale(&sale("store-1", "r-2"), &key("r-2"))
        .await
        .unwrap();
    assert_eq!(erp.postings().len(), 2);
    assert_eq!(http.tokens_fetched(), 2);
    assert_eq!(access.refused(), 0);
    // Loaded at first, and again when the token endpoint refused the old secret.
    assert_eq!(source.loads(), 2);
}

#[tokio::test]
async fn a_429_is_waited_out_for_its_retry_after_when_it_is_short() {
    let h = start().await;
    // `fast` allows 40 ms between attempts; the config below allows 2 s, so a 1 s Retry-After is
    // waited out in place.
    let config = HttpConfig {
        max_backoff: Duration::from_secs(2),
        ..fast(h.base.clone())
    };
    let erp = HttpErp::new(&config, sims::oauth(&h.base, ClientAuth::Basic)).unwrap();
    h.erp.set_faults(Faults {
        retry_after_ms: 1_000,
        ..script(1, FaultKind::Throttle)
    });
    let started = Instant::now();
    erp.post_sale(&sale("store-1", "r-1"), &key("a")).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "the Retry-After was honoured: {:?}",
        started.elapsed()
    );
    assert_eq!(h.erp.requests(), 2);
    assert_eq!(h.erp.postings().len(), 1);
}

#[tokio::test]
async fn a_429_asking_longer_than_our_backoff_ends_the_attempts_and_carries_the_wait() {
    let h = start().await;
    h.erp.set_faults(Faults {
        retry_after_ms: 30_000,
        ..script(1, FaultKind::Throttle)
    });
    let started = Instant::now();
    let err = h
        .http_erp
        .post_sale(&sale("store-1", "r-1"), &key("a"))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "not waited in place");
    assert!(matches!(err, Error::Unavailable { what: "erp", .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    assert_eq!(h.erp.requests(), 1, "no second attempt before the wait");
    assert!(h.erp.postings().is_empty());
}
