//! The HTTP adapters against the HTTP simulator on a free local port, with short timeouts and backoff so
//! the failure paths stay fast.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use retail_sync_connectors::{HttpConfig, HttpErp, HttpLoyalty};
use retail_sync_contracts::events::ReasonCode;
use retail_sync_core::Error;
use retail_sync_core::idempotency::IdempotencyKey;
use retail_sync_core::ports::{Erp, Loyalty};
use retail_sync_simulators::samples::{accrual, sale};
use retail_sync_simulators::{ErpSimulator, FaultKind, Faults, LoyaltySimulator, serve};

fn fast(base_url: String) -> HttpConfig {
    HttpConfig {
        connect_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(300),
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        ..HttpConfig::new(base_url)
    }
}

struct Harness {
    erp: ErpSimulator,
    loyalty: LoyaltySimulator,
    http_erp: HttpErp,
    http_loyalty: HttpLoyalty,
}

async fn start() -> Harness {
    let (erp, loyalty) = (ErpSimulator::new(), LoyaltySimulator::new());
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (bound, _server) = serve(erp.clone(), loyalty.clone(), addr).await.unwrap();
    let config = fast(format!("http://{bound}/"));
    Harness {
        erp,
        loyalty,
        http_erp: HttpErp::new(&config).unwrap(),
        http_loyalty: HttpLoyalty::new(&config).unwrap(),
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
    let erp = HttpErp::new(&fast(format!("http://{addr}"))).unwrap();
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
            assert_eq!(reason, ReasonCode::LoyaltyRejected);
            assert!(message.starts_with("member_not_found: "), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(h.loyalty.requests(), 1);
}
