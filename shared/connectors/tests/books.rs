//! The books read back over HTTP (`ErpBooks`, `LoyaltyBooks`) against the HTTP simulator on a free local
//! port: what the connectors post is what reconciliation reads, as the in-process adapters show it.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use retail_sync_connectors::{
    Auth, AuthMethod, ClientAuth, Credentials, HttpErp, HttpLoyalty, Secret, StaticCredentials,
    erp_books_from_lookup, loyalty_books_from_lookup,
};
use retail_sync_contracts::events::ReasonCode;
use retail_sync_contracts::values::Points;
use retail_sync_core::Error;
use retail_sync_core::idempotency::IdempotencyKey;
use retail_sync_core::memory::ManualClock;
use retail_sync_core::ports::{
    AdjustmentKind, DocumentKind, Erp, ErpBooks, Loyalty, LoyaltyBooks, PointsKind,
};
use retail_sync_simulators::access::{Access, LOCAL_API_KEY};
use retail_sync_simulators::samples::{
    accrual, adjustment, cancellation, commit, hold, order_sale, receipt, return_of, sale,
};
use retail_sync_simulators::{ErpSimulator, Faults, InProcessErp, InProcessLoyalty, LoyaltySimulator};
use retail_sync_testkit::sims;

struct Harness {
    erp: ErpSimulator,
    loyalty: LoyaltySimulator,
    base: String,
    http_erp: HttpErp,
    http_loyalty: HttpLoyalty,
}

/// The simulators behind their token endpoint, both connectors on OAuth 2.0, short timeouts and
/// backoff; `m-1` enrolled with 1,000 points on a loyalty clock of 2026-11-20T10:00:00Z.
async fn start() -> Harness {
    let (erp, loyalty) = (ErpSimulator::new(), LoyaltySimulator::new());
    loyalty.set_clock(Arc::new(ManualClock::new(
        "2026-11-20T10:00:00Z".parse().unwrap(),
    )));
    loyalty.seed_balance("m-1", Points::new(1_000).unwrap());
    let (base, _server) = sims::serve(erp.clone(), loyalty.clone(), Access::local()).await;
    let config = sims::fast(base.clone(), Duration::from_millis(300));
    Harness {
        http_erp: HttpErp::new(&config, sims::oauth(&base, ClientAuth::Basic)).unwrap(),
        http_loyalty: HttpLoyalty::new(&config, sims::oauth(&base, ClientAuth::Body)).unwrap(),
        erp,
        loyalty,
        base,
    }
}

fn key(business: &str, step: &str) -> IdempotencyKey {
    IdempotencyKey::for_step(business, step)
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// The year the samples and the loyalty clock fall in.
fn year() -> (Timestamp, Timestamp) {
    (at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
}

/// Posts through the connectors: a receipt and an order sold, the order cancelled, the receipt
/// returned; points accrued on the receipt, some redeemed on the order and some taken back.
async fn trade(h: &Harness) {
    let erp = &h.http_erp;
    erp.post_sale(
        &sale("store-1", "r-1"),
        &key("receipt:store-1:r-1", "post-sale-to-erp"),
    )
    .await
    .unwrap();
    erp.post_sale(&order_sale("o-1"), &key("order:o-1", "post-sale-to-erp"))
        .await
        .unwrap();
    erp.cancel_order(&cancellation("o-1", "cx-1"), &key("order:o-1", "cancel-order"))
        .await
        .unwrap();
    erp.post_return(
        &return_of("ret-1", receipt("store-1", "r-1"), None),
        &key("receipt:store-1:r-1", "post-return-to-erp"),
    )
    .await
    .unwrap();

    let loyalty = &h.http_loyalty;
    loyalty
        .accrue(
            &accrual("m-1", "r-1", 2_500),
            &key("receipt:store-1:r-1", "accrue-loyalty"),
        )
        .await
        .unwrap();
    let now = at("2026-11-20T10:00:00Z");
    let held = loyalty
        .create_hold(
            &hold("m-1", 300, 5_000, now, SignedDuration::from_secs(900)),
            &key("checkout-1", "hold"),
        )
        .await
        .unwrap();
    loyalty
        .commit_hold(
            &held.hold_id,
            &commit("o-1", 300),
            &key("order:o-1", "commit-redemption"),
        )
        .await
        .unwrap();
    loyalty
        .adjust(
            &adjustment("m-1", AdjustmentKind::Reversal, "o-1", "cancellation:cx-1", 10),
            &key("order:o-1", "reverse-loyalty"),
        )
        .await
        .unwrap();
}

/// What a sale and an accrual posted through the connectors look like read back through them: the
/// same documents and movements, field for field and in the same order, as the in-process adapters read
/// from the simulators' own books; a window leaves out what falls outside it.
#[tokio::test]
async fn what_the_connectors_post_is_read_back_as_the_in_process_books_show_it() {
    let h = start().await;
    trade(&h).await;
    let (from, until) = year();

    let documents = h.http_erp.documents(from, until).await.unwrap();
    let in_process = InProcessErp(h.erp.clone()).documents(from, until).await.unwrap();
    assert_eq!(documents, in_process);
    let kinds: Vec<_> = documents.iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        [
            DocumentKind::Sale,
            DocumentKind::Sale,
            DocumentKind::Cancellation,
            DocumentKind::Return
        ]
    );
    assert_eq!(documents[0].transaction, receipt("store-1", "r-1"));
    assert_eq!(documents[0].net_minor.get(), 1_000);
    assert_eq!(documents[2].reference.as_deref(), Some("cx-1"));

    let movements = h.http_loyalty.movements(from, until).await.unwrap();
    let in_process = InProcessLoyalty(h.loyalty.clone())
        .movements(from, until)
        .await
        .unwrap();
    assert_eq!(movements, in_process);
    let points: Vec<_> = movements.iter().map(|m| (m.kind, m.points)).collect();
    assert_eq!(
        points,
        [
            (PointsKind::Accrual, 25),
            (PointsKind::Redemption, -300),
            (PointsKind::Reversal, -10)
        ]
    );
    assert_eq!(movements[1].value_minor.map(|v| v.get()), Some(300));
    assert_eq!(movements[2].reference.as_deref(), Some("cancellation:cx-1"));

    // The samples are dated 2026-05-28T20:26:40Z; the redemption, at the platform's clock.
    let (may, june) = (at("2026-05-28T00:00:00Z"), at("2026-06-01T00:00:00Z"));
    let documents = h.http_erp.documents(may, june).await.unwrap();
    assert_eq!(documents.len(), 4);
    assert!(
        h.http_erp
            .documents(at("2026-05-28T20:26:40.000000001Z"), june)
            .await
            .unwrap()
            .is_empty(),
        "from is inclusive, to exclusive, to the nanosecond"
    );
    assert_eq!(
        h.http_erp
            .documents(may, at("2026-05-28T20:26:40.000000001Z"))
            .await
            .unwrap()
            .len(),
        4
    );
    let movements = h.http_loyalty.movements(may, june).await.unwrap();
    assert_eq!(
        movements.iter().map(|m| m.kind).collect::<Vec<_>>(),
        [PointsKind::Accrual, PointsKind::Reversal],
        "the redemption was booked in November"
    );
    assert!(h.http_loyalty.movements(june, until).await.unwrap().len() == 1);
}

/// An empty or inverted window is the system's refusal (`invalid_window`), reported as such and not
/// retried; the system's books are untouched.
#[tokio::test]
async fn a_window_the_system_refuses_is_a_clear_rejection() {
    let h = start().await;
    trade(&h).await;
    let (from, until) = year();
    for (from, until) in [(until, from), (from, from)] {
        let err = h.http_erp.documents(from, until).await.unwrap_err();
        assert!(!err.is_retryable(), "{err:?}");
        match err {
            Error::Rejected { reason, message } => {
                assert_eq!(reason, ReasonCode::ErpRejected);
                assert!(message.starts_with("invalid_window: "), "{message}");
                assert!(message.contains("is not before"), "{message}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        let err = h.http_loyalty.movements(from, until).await.unwrap_err();
        match err {
            Error::Rejected { reason, message } => {
                assert_eq!(reason, ReasonCode::LoyaltyRejected);
                assert!(message.starts_with("invalid_window: "), "{message}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    assert_eq!(h.erp.postings().len(), 4);
}

/// A system that is down (503) or does not answer in time is `Unavailable` once the attempts run out,
/// as for every other call; it answers again, and so do the reads.
#[tokio::test]
async fn a_system_that_is_down_or_slow_makes_the_books_unavailable() {
    let h = start().await;
    trade(&h).await;
    let (from, until) = year();
    h.erp.set_down(true);
    let err = h.http_erp.documents(from, until).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { what: "erp", .. }), "{err:?}");
    assert!(err.to_string().contains("gave up after 4 attempts"), "{err}");
    h.erp.set_down(false);
    assert_eq!(h.http_erp.documents(from, until).await.unwrap().len(), 4);

    h.loyalty.set_faults(Faults {
        latency_ms: 2_000,
        ..Faults::default()
    });
    let err = h.http_loyalty.movements(from, until).await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable { what: "loyalty", .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    h.loyalty.set_faults(Faults::default());
    assert_eq!(h.http_loyalty.movements(from, until).await.unwrap().len(), 3);
}

/// Credentials the system refuses are never a verdict on the read: `Unavailable`, like every other
/// call, and the secret appears in no error.
#[tokio::test]
async fn wrong_credentials_make_the_books_unavailable_and_leak_nothing() {
    let h = start().await;
    let config = sims::fast(h.base.clone(), Duration::from_millis(300));
    let wrong_secret = Auth {
        method: AuthMethod::OAuth2ClientCredentials {
            token_url: format!("{}/oauth/token", h.base),
            scope: None,
            client_auth: ClientAuth::Basic,
        },
        credentials: Arc::new(StaticCredentials {
            credentials: Credentials {
                client_id: Some("retail-sync-local".into()),
                client_secret: Some(Secret::new("guessed-secret")),
                ..Credentials::default()
            },
            origin: "test".into(),
        }),
    };
    let erp = HttpErp::new(&config, wrong_secret).unwrap();
    let (from, until) = year();
    let err = erp.documents(from, until).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { what: "erp", .. }), "{err:?}");
    let text = format!("{err:#?} {err}");
    assert!(text.contains("invalid_client"), "{text}");
    assert!(!text.contains("guessed-secret"), "the secret leaked: {text}");

    let wrong_key = Auth {
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
    let loyalty = HttpLoyalty::new(&config, wrong_key).unwrap();
    let err = loyalty.movements(from, until).await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable { what: "loyalty", .. }),
        "{err:?}"
    );
    let text = format!("{err:#?} {err}");
    assert!(text.contains("401") && text.contains("unauthorized"), "{text}");
    assert!(!text.contains("not-the-key"), "the key leaked: {text}");
}

/// The factories a deployment builds its reconciliation from: `*_KIND` (the system API by default),
/// `*_BASE_URL` and the other settings, the credential given.
#[tokio::test]
async fn the_books_factories_read_the_system_api_that_the_settings_name() {
    let h = start().await;
    trade(&h).await;
    let api_key = || Auth {
        method: AuthMethod::ApiKey {
            header: "x-api-key".into(),
        },
        credentials: Arc::new(StaticCredentials {
            credentials: Credentials {
                api_key: Some(Secret::new(LOCAL_API_KEY)),
                ..Credentials::default()
            },
            origin: "test".into(),
        }),
    };
    let base = h.base.clone();
    let vars = move |name: &str| match name {
        "ERP_BASE_URL" | "LOYALTY_BASE_URL" => Some(base.clone()),
        "ERP_MAX_ATTEMPTS" | "LOYALTY_MAX_ATTEMPTS" => Some("1".to_owned()),
        _ => None,
    };
    let erp = erp_books_from_lookup(api_key(), &vars).unwrap();
    let loyalty = loyalty_books_from_lookup(api_key(), &vars).unwrap();
    let (from, until) = year();
    assert_eq!(
        erp.documents(from, until).await.unwrap(),
        h.erp.documents_between(from, until)
    );
    assert_eq!(
        loyalty.movements(from, until).await.unwrap(),
        h.loyalty.movements(from, until)
    );
}
