//! The SAP S/4HANA connector against the SAP simulator (the reference ERP behind SAP's OData dialect):
//! exactly once without an idempotency key, cancellations and reinstatements as item changes, returns,
//! CSRF tokens, refusals and outages.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use retail_sync_connectors::{ClientAuth, HttpConfig, HttpErp, SapErp, SapMapping};
use retail_sync_contracts::events::{LineQuantity, ReasonCode};
use retail_sync_contracts::values::{Amount, ExternalRef, HoldId, Points, Sku};
use retail_sync_contracts::{LineItem, Redemption, Totals};
use retail_sync_core::Error;
use retail_sync_core::idempotency::IdempotencyKey;
use retail_sync_core::ports::{BookedDocument, DocumentKind, Erp, ErpBooks, ErpSaleRequest};
use retail_sync_simulators::access::Access;
use retail_sync_simulators::samples::{
    cancellation, order, order_sale, receipt, reinstatement, return_of, sale,
};
use retail_sync_simulators::{Dialects, ErpPostingKind, ErpSimulator, FaultKind, Faults, LoyaltySimulator};
use retail_sync_testkit::sims;

fn workspace_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap()
}

struct Harness {
    erp: ErpSimulator,
    dialects: Dialects,
    sap: SapErp,
    base: String,
}

fn mapping() -> SapMapping {
    SapMapping::parse(&workspace_file("infra/connectors/sap-s4hana.json"), "sample").unwrap()
}

fn fast(base: String) -> HttpConfig {
    sims::fast(base, Duration::from_millis(400))
}

async fn start_with(mapping: SapMapping) -> Harness {
    let (erp, loyalty) = (ErpSimulator::new(), LoyaltySimulator::new());
    let dialects = Dialects::over(&erp, &loyalty);
    let (base, _server) = sims::serve_with(erp.clone(), loyalty, dialects.clone(), Access::local()).await;
    Harness {
        erp,
        dialects,
        // SAP communication users authenticate with HTTP Basic.
        sap: SapErp::new(&fast(base.clone()), sims::basic(), mapping).unwrap(),
        base,
    }
}

async fn start() -> Harness {
    start_with(mapping()).await
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::for_step(k, "test")
}

fn kinds(erp: &ErpSimulator) -> Vec<(ErpPostingKind, i64)> {
    erp.postings()
        .iter()
        .map(|p| (p.kind, p.signed_net_minor()))
        .collect()
}

#[tokio::test]
async fn a_sales_order_created_then_timed_out_is_found_on_retry_not_made_twice() {
    let h = start().await;
    h.erp.set_faults(Faults {
        fail_first: 1,
        fail_first_with: FaultKind::TimeoutAfterCommit,
        ..Faults::default()
    });
    // The answer is lost: the outcome is unknown, so this delivery does not send the create again.
    let lost = h
        .sap
        .post_sale(&sale("store-001", "r-1"), &key("k1"))
        .await
        .unwrap_err();
    assert!(matches!(lost, Error::Unavailable { .. }), "{lost:?}");
    assert!(lost.to_string().contains("outcome not settled"), "{lost}");
    assert_eq!(
        h.erp.postings().len(),
        1,
        "committed once, though the answer was lost"
    );
    // The next delivery looks it up and finds it.
    let first = h
        .sap
        .post_sale(&sale("store-001", "r-1"), &key("k1"))
        .await
        .unwrap();
    assert_eq!(
        h.dialects.sap.creates(),
        1,
        "the redelivery looked the order up instead of creating it"
    );
    // A later delivery of the same sale (a new key after an operator retry, even) finds it too.
    let again = h
        .sap
        .post_sale(&sale("store-001", "r-1"), &key("k2"))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!((h.erp.postings().len(), h.dialects.sap.creates()), (1, 1));
    assert_eq!(first.document_id.as_str(), "1", "SAP's own document number");
}

#[tokio::test]
async fn a_customer_return_timed_out_after_commit_is_booked_once() {
    let h = start().await;
    h.sap
        .post_sale(&sale("store-001", "r-2"), &key("s"))
        .await
        .unwrap();
    h.erp.set_faults(Faults {
        fail_first: 1,
        fail_first_with: FaultKind::TimeoutAfterCommit,
        ..Faults::default()
    });
    let original = retail_sync_simulators::samples::receipt("store-001", "r-2");
    let ret = return_of("ret-1", original, Some("store-002"));
    let lost = h.sap.post_return(&ret, &key("ret")).await.unwrap_err();
    assert!(matches!(lost, Error::Unavailable { .. }), "{lost:?}");
    let doc = h.sap.post_return(&ret, &key("ret")).await.unwrap();
    assert!(doc.document_id.as_str().starts_with("600"), "{doc:?}");
    assert_eq!(h.sap.post_return(&ret, &key("ret")).await.unwrap(), doc);
    let returns: Vec<_> = h
        .erp
        .postings()
        .into_iter()
        .filter(|p| p.kind == ErpPostingKind::Return)
        .collect();
    assert_eq!(returns.len(), 1);
    assert_eq!(
        returns[0].store_id.as_ref().map(|s| s.as_str()),
        Some("store-002")
    );
    assert_eq!(returns[0].net_minor, ret.refund_minor);
}

#[tokio::test]
async fn cancellations_and_reinstatements_change_the_items_once_each() {
    let h = start().await;
    h.sap.post_sale(&order_sale("o-1"), &key("sale")).await.unwrap();
    // One of the two units of line 1 (net 10.00 for 2).
    let mut one = cancellation("o-1", "cx-1");
    one.lines = Some(vec![LineQuantity {
        line_no: 1,
        quantity: 1,
    }]);
    h.erp.set_faults(Faults {
        fail_first: 1,
        fail_first_with: FaultKind::TimeoutAfterCommit,
        ..Faults::default()
    });
    // Lost answer, then the redelivery (which finds the change made), then a duplicate.
    h.sap.cancel_order(&one, &key("cx-1")).await.unwrap_err();
    h.sap.cancel_order(&one, &key("cx-1")).await.unwrap();
    h.sap.cancel_order(&one, &key("cx-1")).await.unwrap();
    assert_eq!(
        kinds(&h.erp),
        vec![(ErpPostingKind::Sale, 1000), (ErpPostingKind::Cancellation, -500)]
    );
    // The unit shipped after all.
    let back = reinstatement("o-1", "s-1", "cx-1");
    h.sap.reinstate(&back, &key("s-1")).await.unwrap();
    h.sap.reinstate(&back, &key("s-1")).await.unwrap();
    assert_eq!(kinds(&h.erp)[2], (ErpPostingKind::Reinstatement, 500));
    // Everything still open: the item is rejected.
    h.sap
        .cancel_order(&cancellation("o-1", "cx-2"), &key("cx-2"))
        .await
        .unwrap();
    assert_eq!(kinds(&h.erp)[3], (ErpPostingKind::Cancellation, -1000));
    let net: i64 = kinds(&h.erp).iter().map(|(_, n)| n).sum();
    assert_eq!(net, 0);
    // Nothing is open any more: a cancellation of more is SAP's refusal, not a retry.
    let mut more = cancellation("o-1", "cx-3");
    more.lines = Some(vec![LineQuantity {
        line_no: 1,
        quantity: 1,
    }]);
    let e = h.sap.cancel_order(&more, &key("cx-3")).await.unwrap_err();
    assert!(matches!(e, Error::Rejected { .. }), "{e:?}");
    let e = h
        .sap
        .cancel_order(&cancellation("o-404", "cx"), &key("cx-404"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("order_not_found"), "{e}");
}

#[tokio::test]
async fn an_ended_csrf_session_is_fetched_again() {
    let h = start().await;
    h.sap
        .post_sale(&sale("store-001", "r-3"), &key("a"))
        .await
        .unwrap();
    h.dialects.sap.end_sessions();
    h.sap
        .post_sale(&sale("store-001", "r-4"), &key("b"))
        .await
        .unwrap();
    assert_eq!(h.erp.postings().len(), 2);
}

#[tokio::test]
async fn sap_refusals_are_rejections_and_outages_are_not() {
    let h = start().await;
    let e = h
        .sap
        .post_sale(&sale("closed-007", "r-5"), &key("c"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Rejected { .. }) && e.to_string().contains("period_closed"),
        "{e:?}"
    );
    h.erp.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let e = h
        .sap
        .post_sale(&sale("store-001", "r-6"), &key("d"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(h.erp.postings().is_empty());
}

#[tokio::test]
async fn a_store_missing_from_the_mapping_is_refused_with_the_fix() {
    let mut m = mapping();
    m.default_store = None;
    let h = start_with(m).await;
    let e = h
        .sap
        .post_sale(&sale("store-999", "r-7"), &key("e"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Rejected { .. }), "{e:?}");
    assert!(e.to_string().contains("add the store"), "{e}");
    assert_eq!(h.dialects.sap.creates(), 0, "nothing was sent");
    // A mapped one goes through.
    h.sap.post_sale(&order_sale("o-2"), &key("f")).await.unwrap();
}

#[tokio::test]
async fn an_order_changed_between_the_read_and_the_change_is_read_again() {
    let h = start().await;
    h.sap.post_sale(&order_sale("o-3"), &key("sale")).await.unwrap();
    // Someone edits the order twice between the connector's read and its change set: 412 twice.
    h.dialects.sap.edit_between_read_and_change(2);
    let mut one = cancellation("o-3", "cx-1");
    one.lines = Some(vec![LineQuantity {
        line_no: 1,
        quantity: 1,
    }]);
    h.sap.cancel_order(&one, &key("cx-3")).await.unwrap();
    assert_eq!(h.dialects.sap.stale_answers(), 2);
    assert_eq!(
        kinds(&h.erp),
        vec![(ErpPostingKind::Sale, 1000), (ErpPostingKind::Cancellation, -500)]
    );
}

/// A wrong base URL (or a service not activated) answers 404 everywhere: the sale waits for the fix,
/// it is never refused.
#[tokio::test]
async fn a_service_that_is_not_there_is_a_setup_fault_not_a_refusal() {
    let h = start().await;
    let base = h.base.clone();
    let wrong = SapErp::new(
        &fast(format!("{base}/not-the-api-host")),
        sims::basic(),
        mapping(),
    )
    .unwrap();
    let e = wrong
        .post_sale(&sale("store-001", "r-8"), &key("g"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().contains("check the base URL"), "{e}");
    assert!(h.erp.postings().is_empty());
}

// --- the books read back (ErpBooks) ---------------------------------------------------------------

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn amount(minor: i64) -> Amount {
    Amount::new(minor).unwrap()
}

/// Order `o-7`, 2026-05-28 10:00: line 1, 2 × 5.00; line 2, 3 × 3.33 less 1.00 (8.99 net); 2.00 of
/// points redeemed.
fn redeemed_order() -> ErpSaleRequest {
    let mut sale = order_sale("o-7");
    let second = LineItem {
        line_no: 2,
        sku: Sku::parse("SKU-2").unwrap(),
        quantity: 3,
        unit_price_minor: amount(333),
        discount_minor: amount(100),
        net_minor: amount(899),
        tax_minor: amount(171),
        ..sale.lines[0].clone()
    };
    sale.lines.push(second);
    sale.totals = Totals {
        net_minor: amount(1_899),
        tax_minor: amount(361),
        gross_minor: amount(2_260),
    };
    sale.redemption = Some(Redemption {
        hold_id: HoldId::parse("h-7").unwrap(),
        points: Points::new(200).unwrap(),
        value_minor: amount(200),
    });
    sale.occurred_at = t("2026-05-28T10:00:00Z");
    sale
}

/// A day's postings, each with the figures the core sends: the order with its redemption; the receipt
/// `store-001/r-7` without one (10:30); two of line 2's three units cancelled (`cx-1`, 11:00: 6.00,
/// the top two units' share of 8.99); one of them shipped after all (`s-1`, 12:00: 3.00); one unit of
/// the receipt returned in `store-002` (`ret-7`, 13:00: 5.00); and everything still open cancelled
/// (`cx-2`, 14:00: both units of line 1, 10.00, and two of line 2, 5.99).
async fn post_day(erp: &dyn Erp) {
    erp.post_sale(&redeemed_order(), &key("order:o-7:sale"))
        .await
        .unwrap();
    let mut receipt_sale = sale("store-001", "r-7");
    receipt_sale.occurred_at = t("2026-05-28T10:30:00Z");
    erp.post_sale(&receipt_sale, &key("receipt:r-7:sale"))
        .await
        .unwrap();
    let mut cx1 = cancellation("o-7", "cx-1");
    cx1.lines = Some(vec![LineQuantity {
        line_no: 2,
        quantity: 2,
    }]);
    cx1.value_minor = amount(600);
    cx1.occurred_at = t("2026-05-28T11:00:00Z");
    erp.cancel_order(&cx1, &key("order:o-7:cx-1")).await.unwrap();
    let mut s1 = reinstatement("o-7", "s-1", "cx-1");
    s1.lines = vec![LineQuantity {
        line_no: 2,
        quantity: 1,
    }];
    s1.value_minor = amount(300);
    s1.occurred_at = t("2026-05-28T12:00:00Z");
    erp.reinstate(&s1, &key("order:o-7:s-1")).await.unwrap();
    let mut ret = return_of("ret-7", receipt("store-001", "r-7"), Some("store-002"));
    ret.occurred_at = t("2026-05-28T13:00:00Z");
    erp.post_return(&ret, &key("receipt:r-7:ret-7")).await.unwrap();
    let mut cx2 = cancellation("o-7", "cx-2");
    cx2.value_minor = amount(1_599);
    cx2.occurred_at = t("2026-05-28T14:00:00Z");
    erp.cancel_order(&cx2, &key("order:o-7:cx-2")).await.unwrap();
}

/// The reference ERP behind the system API, with its connector: what the SAP connector's books are
/// compared with.
async fn system_api() -> (ErpSimulator, HttpErp) {
    let erp = ErpSimulator::new();
    let (base, _server) = sims::serve(erp.clone(), LoyaltySimulator::new(), Access::local()).await;
    let http = HttpErp::new(&fast(base.clone()), sims::oauth(&base, ClientAuth::Basic)).unwrap();
    (erp, http)
}

/// Documents in one order, their numbers (each system's own) left out.
fn comparable(documents: &[BookedDocument]) -> Vec<BookedDocument> {
    let mut documents: Vec<BookedDocument> = documents
        .iter()
        .map(|d| BookedDocument {
            document_id: ExternalRef::parse("any".to_owned()).unwrap(),
            ..d.clone()
        })
        .collect();
    documents
        .sort_by(|a, b| (a.occurred_at, a.kind, &a.reference).cmp(&(b.occurred_at, b.kind, &b.reference)));
    documents
}

fn document(
    number: &str,
    kind: DocumentKind,
    transaction: retail_sync_contracts::events::TransactionRef,
    reference: Option<&str>,
    net: i64,
    redemption: Option<i64>,
    at: &str,
) -> BookedDocument {
    BookedDocument {
        document_id: ExternalRef::parse(number.to_owned()).unwrap(),
        kind,
        transaction,
        reference: reference.map(str::to_owned),
        currency: retail_sync_contracts::values::Currency::parse("EUR").unwrap(),
        net_minor: amount(net),
        redemption_minor: redemption.map(amount),
        occurred_at: t(at),
    }
}

fn may() -> (Timestamp, Timestamp) {
    (t("2026-05-01T00:00:00Z"), t("2026-06-01T00:00:00Z"))
}

/// What the SAP connector posts is read back from SAP's sales orders, items, pricing elements, texts
/// and customer returns as exactly the documents the system-API ERP books for the same requests, with
/// SAP's numbers: a sales order's cancellations and reinstatements carry its number.
#[tokio::test]
async fn the_books_read_from_sap_are_the_system_api_s_for_the_same_postings() {
    let h = start().await;
    post_day(&h.sap).await;
    let (reference, http) = system_api().await;
    post_day(&http).await;
    let (from, until) = may();

    let documents = h.sap.documents(from, until).await.unwrap();
    use DocumentKind::*;
    let expected = vec![
        document(
            "1",
            Sale,
            order("o-7"),
            None,
            1_899,
            Some(200),
            "2026-05-28T10:00:00Z",
        ),
        document(
            "2",
            Sale,
            receipt("store-001", "r-7"),
            None,
            1_000,
            None,
            "2026-05-28T10:30:00Z",
        ),
        document(
            "1",
            Cancellation,
            order("o-7"),
            Some("cx-1"),
            600,
            None,
            "2026-05-28T11:00:00Z",
        ),
        document(
            "1",
            Reinstatement,
            order("o-7"),
            Some("s-1"),
            300,
            None,
            "2026-05-28T12:00:00Z",
        ),
        document(
            "60000005",
            Return,
            receipt("store-001", "r-7"),
            Some("ret-7"),
            500,
            None,
            "2026-05-28T13:00:00Z",
        ),
        document(
            "1",
            Cancellation,
            order("o-7"),
            Some("cx-2"),
            1_599,
            None,
            "2026-05-28T14:00:00Z",
        ),
    ];
    assert_eq!(documents, expected);
    let from_system_api = http.documents(from, until).await.unwrap();
    assert_eq!(comparable(&documents), comparable(&from_system_api));
    assert_eq!(from_system_api, reference.documents_between(from, until));
    // The reference ERP behind SAP booked the same, with the business times the connector sent.
    assert_eq!(
        comparable(&documents),
        comparable(&h.erp.documents_between(from, until))
    );
    // A read changes nothing.
    assert_eq!(h.dialects.sap.creates(), 6);
}

/// A window is `[from, until)` in business time, to the nanosecond, whatever SAP's clock says; a
/// window after every change reads nothing (SAP's own filter leaves the documents out).
#[tokio::test]
async fn the_window_takes_from_and_leaves_until_out() {
    let h = start().await;
    post_day(&h.sap).await;
    let (_reference, http) = system_api().await;
    post_day(&http).await;
    for (from, until, kinds) in [
        (
            "2026-05-28T11:00:00Z",
            "2026-05-28T13:00:00Z",
            vec![DocumentKind::Cancellation, DocumentKind::Reinstatement],
        ),
        (
            "2026-05-28T10:00:00Z",
            "2026-05-28T10:00:00.000000001Z",
            vec![DocumentKind::Sale],
        ),
        ("2026-05-28T13:00:00.000000001Z", "2026-05-28T14:00:00Z", vec![]),
        (
            "2026-05-28T14:00:00Z",
            "2026-06-01T00:00:00Z",
            vec![DocumentKind::Cancellation],
        ),
        ("2026-06-01T00:00:00Z", "2026-07-01T00:00:00Z", vec![]),
    ] {
        let (from, until) = (t(from), t(until));
        let documents = h.sap.documents(from, until).await.unwrap();
        assert_eq!(
            documents.iter().map(|d| d.kind).collect::<Vec<_>>(),
            kinds,
            "[{from}, {until})"
        );
        assert_eq!(
            comparable(&documents),
            comparable(&http.documents(from, until).await.unwrap()),
            "[{from}, {until})"
        );
    }
    let pages = h.dialects.sap.pages_served();
    let nothing = h
        .sap
        .documents(t("2026-06-01T00:00:00Z"), t("2026-07-01T00:00:00Z"))
        .await
        .unwrap();
    assert!(nothing.is_empty());
    assert_eq!(
        h.dialects.sap.pages_served() - pages,
        2,
        "one page of each, empty"
    );
}

/// More documents than a page holds: every `__next` link is followed to the end.
#[tokio::test]
async fn every_page_is_read() {
    let h = start().await;
    post_day(&h.sap).await;
    for i in 1..=7 {
        let mut receipt_sale = sale("store-001", &format!("r-10{i}"));
        receipt_sale.occurred_at = t(&format!("2026-05-29T0{i}:00:00Z"));
        h.sap
            .post_sale(&receipt_sale, &key(&format!("receipt:r-10{i}")))
            .await
            .unwrap();
    }
    h.dialects.sap.set_page_size(3);
    let pages = h.dialects.sap.pages_served();
    let documents = h.sap.documents(may().0, may().1).await.unwrap();
    // 9 sales orders in pages of 3, and 1 customer return.
    assert_eq!(h.dialects.sap.pages_served() - pages, 3 + 1);
    assert_eq!(documents.len(), 6 + 7);
    assert_eq!(
        comparable(&documents),
        comparable(&h.erp.documents_between(may().0, may().1))
    );
}

/// An empty or inverted window is refused as the system API refuses it, before SAP is asked.
#[tokio::test]
async fn an_empty_window_is_refused_without_a_call() {
    let h = start().await;
    let (from, until) = may();
    for (from, until) in [(until, from), (from, from)] {
        match h.sap.documents(from, until).await.unwrap_err() {
            Error::Rejected { reason, message } => {
                assert_eq!(reason, ReasonCode::ErpRejected);
                assert!(message.starts_with("invalid_window: "), "{message}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    assert_eq!(h.dialects.sap.pages_served(), 0);
}

/// SAP down (503) or too slow to answer is `Unavailable` once the attempts run out, as every other
/// call; once it answers again, so do the books.
#[tokio::test]
async fn sap_down_or_slow_makes_the_books_unavailable() {
    let h = start().await;
    post_day(&h.sap).await;
    let (from, until) = may();
    h.erp.set_down(true);
    let err = h.sap.documents(from, until).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { what: "erp", .. }), "{err:?}");
    assert!(err.to_string().contains("gave up after 4 attempts"), "{err}");
    assert!(err.is_retryable());
    h.erp.set_down(false);
    assert_eq!(h.sap.documents(from, until).await.unwrap().len(), 6);

    h.erp.set_faults(Faults {
        latency_ms: 2_000,
        ..Faults::default()
    });
    let started = Instant::now();
    let err = h.sap.documents(from, until).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { what: "erp", .. }), "{err:?}");
    assert!(err.to_string().contains("gave up after 4 attempts"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the client's timeouts, not the hang"
    );
    h.erp.set_faults(Faults::default());
    assert_eq!(h.sap.documents(from, until).await.unwrap().len(), 6);
}

/// What a stand-in tenant answers a request line with: status and body.
type Answer = Box<dyn Fn(&str) -> (u16, String) + Send>;

/// A stand-in SAP tenant answering every request with what `answer` gives for its request line
/// (`GET /path?query HTTP/1.1`), one connection at a time; answers the base URL and a count of requests.
fn tenant(answer: impl Fn(&str) -> (u16, String) + Send + 'static) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0_u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let head = String::from_utf8_lossy(&head);
            counted.fetch_add(1, Ordering::SeqCst);
            let (status, body) = answer(head.lines().next().unwrap_or_default());
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (base, requests)
}

fn sap_at(base: &str) -> SapErp {
    SapErp::new(&fast(base.to_owned()), sims::basic(), mapping()).unwrap()
}

/// A sales order of ours as a tenant answers it, with `rate` as its item's price.
fn order_entity(number: &str, rate: &str) -> String {
    serde_json::json!({
        "SalesOrder": number,
        "TransactionCurrency": "EUR",
        "CustomerPurchaseOrderDate": "/Date(1779926400000)/",
        "LastChangeDateTime": "/Date(1780000000000+0000)/",
        "to_Text": {"results": [{"LongTextID": "ZRS1", "LongText": format!("retail-sync order:o-{number} transaction=order:o-{number} at=2026-05-28T20:26:40Z")}]},
        "to_PricingElement": {"results": []},
        "to_Item": {"results": [{
            "SalesOrderItem": "10",
            "RequestedQuantity": "2.000",
            "to_PricingElement": {"results": [{"ConditionType": "PPR0", "ConditionRateValue": rate}]},
        }]},
    })
    .to_string()
}

fn page(entities: &[String], next: Option<&str>) -> String {
    let next = next.map_or(String::new(), |n| format!(r#","__next":"{n}""#));
    format!(r#"{{"d":{{"results":[{}]{next}}}}}"#, entities.join(","))
}

/// Answers that cannot be read as SAP's documents are errors that say what is wrong, never a panic
/// and never a partial book: a body that is not JSON (retried, then `Unavailable`), JSON without
/// results, an amount that is not one, and `__next` links that lead elsewhere or back.
#[tokio::test]
async fn malformed_answers_are_clear_errors() {
    let (from, until) = may();
    let cases: Vec<(&str, Answer, &str, usize)> = vec![
        (
            "not JSON",
            Box::new(|_: &str| (200, "<html>maintenance</html>".to_owned())),
            "unreadable success response",
            4,
        ),
        (
            "no results",
            Box::new(|_: &str| (200, r#"{"d":{"results":"none"}}"#.to_owned())),
            "A_SalesOrder answered no results array",
            1,
        ),
        (
            "a price that is not an amount",
            Box::new(move |line: &str| {
                if line.contains("A_SalesOrder") {
                    (200, page(&[order_entity("1", "5.00.0")], None))
                } else {
                    (200, page(&[], None))
                }
            }),
            r#"sales order \"1\" item \"10\": PPR0 ConditionRateValue \"5.00.0\" is not an amount in EUR"#,
            2,
        ),
        (
            "a __next to another entity set",
            Box::new(|_: &str| {
                let next = "https://sap.internal/sap/opu/odata/sap/API_SALES_ORDER_SRV/A_SalesOrderItem?$skiptoken=1";
                (200, page(&[], Some(next)))
            }),
            "answered a __next link that does not continue it",
            1,
        ),
        (
            "a __next back to the first page",
            Box::new(|line: &str| {
                let next = line.split(' ').nth(1).unwrap_or_default().to_owned();
                (200, page(&[], Some(&next)))
            }),
            "leads back to a page already read",
            1,
        ),
    ];
    for (case, answer, expected, calls) in cases {
        let (base, requests) = tenant(answer);
        let err = sap_at(&base).documents(from, until).await.unwrap_err();
        assert!(
            matches!(err, Error::Unavailable { what: "erp", .. }),
            "{case}: {err:?}"
        );
        let text = format!("{err} {err:?}");
        assert!(text.contains(expected), "{case}: {text}");
        assert_eq!(requests.load(Ordering::SeqCst), calls, "{case}");
    }
}

/// SAP builds `__next` from the host it was reached by, which a proxy may have changed: the link's
/// query is followed on the configured host, and the pages add up.
#[tokio::test]
async fn a_next_link_naming_another_host_is_followed_on_the_configured_one() {
    let (base, requests) = tenant(|line: &str| {
        if line.contains("A_CustomerReturn") {
            (200, page(&[], None))
        } else if line.contains("skiptoken=1") {
            (200, page(&[order_entity("2", "7.000000000")], None))
        } else {
            let next = "https://s4.internal:44300/sap/opu/odata/sap/API_SALES_ORDER_SRV/A_SalesOrder?$skiptoken=1&$format=json";
            (200, page(&[order_entity("1", "5.000000000")], Some(next)))
        }
    });
    let documents = sap_at(&base).documents(may().0, may().1).await.unwrap();
    let nets: Vec<(&str, i64)> = documents
        .iter()
        .map(|d| (d.document_id.as_str(), d.net_minor.get()))
        .collect();
    assert_eq!(nets, [("1", 1_000), ("2", 1_400)]);
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}
