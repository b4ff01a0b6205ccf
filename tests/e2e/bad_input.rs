//! Hostile and broken input through the whole system (the ingest queue, then the workflow): each piece
//! ends quarantined with a machine-readable reason, the run goes on, and nothing panics.

use std::time::Duration;

use serde_json::{Value, json};

use retail_sync_cli::backends::Backend;
use retail_sync_cli::input::Input;
use retail_sync_cli::local::{LocalOptions, LocalSystem, Simulators, open_embedded};
use retail_sync_core::ports::QuarantineStore;
use retail_sync_embedded::Embedded;
use retail_sync_tests::workspace;

fn sale(id: &str) -> Value {
    json!({
        "version": "0", "id": format!("bus-{id}"), "detail-type": "SaleCompleted", "source": "retail.pos",
        "account": "123456789012", "time": "2026-11-20T10:00:00Z", "region": "eu-west-1", "resources": [],
        "detail": {
            "metadata": {"event_id": format!("ev-{id}"), "schema_version": 1, "correlation_id": format!("c-{id}"),
                         "occurred_at": "2026-11-20T10:00:00Z", "channel": "pos"},
            "data": {"store_id": "store-001", "receipt_id": format!("r-{id}"), "currency": "EUR",
                "lines": [{"line_no": 1, "sku": "SKU-1", "quantity": 2, "unit_price_minor": 1000, "discount_minor": 0,
                           "net_minor": 2000, "tax_minor": 400, "loyalty_eligible": true}],
                "totals": {"net_minor": 2000, "tax_minor": 400, "gross_minor": 2400},
                "tenders": [{"method": "card", "amount_minor": 2400}],
                "member_id": "m-1"}
        }
    })
}

fn with(id: &str, pointer: &str, value: Value) -> String {
    let mut event = sale(id);
    *event.pointer_mut(pointer).unwrap() = value;
    event.to_string()
}

fn without(id: &str, parent: &str, field: &str) -> String {
    let mut event = sale(id);
    event
        .pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(field);
    event.to_string()
}

async fn system(dir: &tempfile::TempDir) -> LocalSystem<Embedded> {
    let mut options = LocalOptions::new(workspace().join("infra/template.yaml"), dir.path().join("s.db"));
    options.visibility_timeout = Duration::from_millis(50);
    open_embedded(&options, Simulators::default()).unwrap()
}

/// (what, body, expected reason, a word the reason's message must carry)
fn cases() -> Vec<(&'static str, String, &'static str, &'static str)> {
    let nested = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let mut deep = json!([]);
    for _ in 0..100 {
        deep = json!([deep]);
    }
    vec![
        (
            "oversized",
            with("a1", "/detail/data/lines/0/sku", json!("S".repeat(70_000))),
            "oversized",
            "bytes",
        ),
        ("deep nesting", nested.clone(), "invalid_json", "recursion"),
        (
            "deep nesting inside an event",
            with("a2", "/detail/data/lines", deep),
            "schema_violation",
            "",
        ),
        (
            "duplicate keys",
            sale("a3").to_string().replace(
                "\"receipt_id\":\"r-a3\"",
                "\"receipt_id\":\"r-a3\",\"receipt_id\":\"r-a3b\"",
            ),
            "invalid_json",
            "duplicate key",
        ),
        (
            "a quantity as a string",
            with("a4", "/detail/data/lines/0/quantity", json!("2")),
            "schema_violation",
            "",
        ),
        (
            "an unknown schema version",
            with("a5", "/detail/metadata/schema_version", json!(2)),
            "unknown_schema_version",
            "",
        ),
        (
            "no event id",
            without("a6", "/detail/metadata", "event_id"),
            "missing_identifier",
            "",
        ),
        (
            "no receipt id",
            without("a7", "/detail/data", "receipt_id"),
            "missing_identifier",
            "schema",
        ),
        (
            "a negative quantity",
            with("a8", "/detail/data/lines/0/quantity", json!(-2)),
            "schema_violation",
            "",
        ),
        (
            "a huge amount",
            with("a9", "/detail/data/lines/0/unit_price_minor", json!(1u64 << 60)),
            "schema_violation",
            "",
        ),
        (
            "an amount beyond 64 bits",
            sale("b1").to_string().replace(
                "\"unit_price_minor\":1000",
                "\"unit_price_minor\":100000000000000000000000",
            ),
            "schema_violation",
            "",
        ),
        (
            "a huge quantity",
            with("b2", "/detail/data/lines/0/quantity", json!(u64::MAX)),
            "schema_violation",
            "",
        ),
        (
            "full-width digits in an id",
            with("b3", "/detail/data/receipt_id", json!("r-１２３")),
            "schema_violation",
            "",
        ),
        (
            "a right-to-left override in a SKU",
            with("b4", "/detail/data/lines/0/sku", json!("SKU-\u{202e}1")),
            "schema_violation",
            "",
        ),
        (
            "a NUL in a store id",
            with("b5", "/detail/data/store_id", json!("store\u{0}1")),
            "schema_violation",
            "",
        ),
        (
            "an emoji member id",
            with("b6", "/detail/data/member_id", json!("m-😀")),
            "schema_violation",
            "",
        ),
        (
            "a lone surrogate",
            sale("b7").to_string().replace("\"SKU-1\"", "\"SKU-\\ud800\""),
            "invalid_json",
            "",
        ),
        (
            "totals that do not add up",
            with("b8", "/detail/data/totals/gross_minor", json!(9_999)),
            "business_rule_violation",
            "",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_is_quarantined_with_its_reason_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let system = system(&dir).await;
    let cases = cases();
    let mut inputs: Vec<Input> = cases
        .iter()
        .map(|(_, body, _, _)| Input::Raw(body.clone()))
        .collect();
    // A good sale among them still goes through.
    inputs.push(Input::Raw(sale("good").to_string()));
    system.feed(&inputs).await.unwrap();
    system.run_until_idle(|_| {}).await.unwrap();
    let quarantine = QuarantineStore::list(&*system.backend, usize::MAX).await.unwrap();
    let mut wrong = Vec::new();
    for (what, body, reason, word) in &cases {
        let cut = &body[..body.len().min(1_000)];
        let entry = quarantine.iter().find(|q| q.body.starts_with(cut));
        match entry {
            Some(q) if q.rejection.reason.as_str() == *reason && q.rejection.message.contains(word) => {}
            Some(q) => wrong.push(format!(
                "{what}: {} {}",
                q.rejection.reason.as_str(),
                q.rejection.message
            )),
            None => wrong.push(format!("{what}: not quarantined")),
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(quarantine.len(), cases.len());
    let sagas = system.backend.all_sagas().await.unwrap();
    assert_eq!(sagas.len(), 1, "the good sale went through");
    assert_eq!(system.simulators.erp.postings().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_in_another_currency_than_its_sale_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let system = system(&dir).await;
    let sale = sale("s1");
    let ret = json!({
        "return_id": "ret-1",
        "original": {"kind": "receipt", "store_id": "store-001", "receipt_id": "r-s1"},
        "store_id": "store-001", "currency": "USD",
        "lines": [{"line_no": 1, "sku": "SKU-1", "quantity": 1, "refund_minor": 1000}]
    });
    let inputs = vec![
        Input::Event {
            source: "retail.pos".into(),
            detail_type: "SaleCompleted".into(),
            detail: sale["detail"].clone(),
        },
        Input::Event {
            source: "retail.pos".into(),
            detail_type: "ReturnReceived".into(),
            detail: json!({"metadata": {"event_id": "ev-ret-1", "schema_version": 1, "correlation_id": "c-s1",
                "occurred_at": "2026-11-20T11:00:00Z", "channel": "pos"}, "data": ret}),
        },
    ];
    system.feed(&inputs).await.unwrap();
    system.run_until_idle(|_| {}).await.unwrap();
    let quarantine = QuarantineStore::list(&*system.backend, usize::MAX).await.unwrap();
    let refused: Vec<_> = quarantine
        .iter()
        .filter(|q| q.rejection.reason.as_str() == "over_return")
        .collect();
    assert_eq!(refused.len(), 1, "{quarantine:#?}");
    assert!(
        refused[0].rejection.message.contains("USD"),
        "{}",
        refused[0].rejection.message
    );
    let returns = system
        .simulators
        .erp
        .postings()
        .into_iter()
        .filter(|p| p.kind == retail_sync_simulators::ErpPostingKind::Return)
        .count();
    assert_eq!(returns, 0, "no credit note in a currency the sale never had");
}
