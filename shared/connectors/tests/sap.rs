//! The SAP S/4HANA connector against the SAP simulator (the reference ERP behind SAP's OData dialect):
//! exactly once without an idempotency key, cancellations and reinstatements as item changes, returns,
//! CSRF tokens, refusals and outages.

use std::time::Duration;

use retail_sync_connectors::{HttpConfig, SapErp, SapMapping};
use retail_sync_contracts::events::LineQuantity;
use retail_sync_core::Error;
use retail_sync_core::idempotency::IdempotencyKey;
use retail_sync_core::ports::Erp;
use retail_sync_simulators::access::Access;
use retail_sync_simulators::samples::{cancellation, order_sale, reinstatement, return_of, sale};
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
