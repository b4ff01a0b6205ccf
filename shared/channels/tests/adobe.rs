//! The Adobe Commerce samples (`events/native/adobe-commerce`, I/O events for Adobe Commerce delivered to
//! Amazon EventBridge) through the sample instance's mapping (`infra/channels/adobe-commerce.json`).

use serde_json::{Value, json};

use retail_sync_channels::{AdobeMapping, Mapped, Mapper, Unmappable};
use retail_sync_contracts::Event;
use retail_sync_contracts::events::OrderPlaced;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn mapping() -> AdobeMapping {
    let text = std::fs::read_to_string(root().join("infra/channels/adobe-commerce.json")).unwrap();
    AdobeMapping::parse(&text).unwrap()
}

fn sample(name: &str) -> Value {
    let path = root().join("events/native/adobe-commerce").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn map(m: &AdobeMapping, event: &Value, order: Option<&OrderPlaced>) -> Result<Mapped, Unmappable> {
    let native = m.parse(&event.to_string())?;
    m.map(&native, order)
}

fn data(mapped: Result<Mapped, Unmappable>) -> Vec<(String, Value)> {
    match mapped.unwrap() {
        Mapped::Events(events) => events
            .iter()
            .map(|e| {
                let v = serde_json::to_value(e).unwrap();
                (e.event_type().name().to_owned(), v["data"].clone())
            })
            .collect(),
        Mapped::Ignored(why) => panic!("ignored: {why}"),
    }
}

fn placed(m: &AdobeMapping) -> OrderPlaced {
    let Mapped::Events(events) = map(m, &sample("sales-order-save-after.json"), None).unwrap() else {
        panic!("mapped")
    };
    match &events[0] {
        Event::OrderPlaced(d) => d.data.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_order_save_is_the_canonical_order_priced_by_its_parent_items() {
    let m = mapping();
    let out = data(map(&m, &sample("sales-order-save-after.json"), None));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "OrderPlaced");
    // The canonical day's web-1002; the configurable product's child item repeats its parent's line.
    assert_eq!(
        out[0].1,
        json!({
            "order_id": "web-1002",
            "member_id": "m-3002",
            "currency": "EUR",
            "lines": [
                {"line_no": 1, "sku": "SKU-7001", "quantity": 2, "unit_price_minor": 3500, "discount_minor": 0,
                 "net_minor": 7000, "tax_minor": 1400, "loyalty_eligible": true, "channel_line_id": "10021"},
                {"line_no": 2, "sku": "SKU-7002", "quantity": 1, "unit_price_minor": 1999, "discount_minor": 0,
                 "net_minor": 1999, "tax_minor": 399, "loyalty_eligible": true, "channel_line_id": "10022"}
            ],
            "totals": {"net_minor": 8999, "tax_minor": 1799, "gross_minor": 10798},
            "channel_order": {"platform": "adobe-commerce", "order_ref": "1002"}
        })
    );
}

#[test]
fn shipments_and_credit_memos_name_lines_by_order_item() {
    let m = mapping();
    let order = placed(&m);
    let shipped = data(map(
        &m,
        &sample("sales-order-shipment-save-after.json"),
        Some(&order),
    ));
    assert_eq!(
        shipped,
        [(
            "OrderShipped".to_owned(),
            json!({"order_id": "web-1002", "shipment_id": "2002",
                   "lines": [{"line_no": 1, "quantity": 2}, {"line_no": 2, "quantity": 1}]})
        )]
    );
    let returned = data(map(
        &m,
        &sample("sales-order-creditmemo-save-after.json"),
        Some(&order),
    ));
    assert_eq!(
        returned[0].1,
        json!({"return_id": "adobe-creditmemo-3022", "original": {"kind": "order", "order_id": "web-1002"},
               "store_id": "store-050", "currency": "EUR",
               "lines": [{"line_no": 1, "sku": "SKU-7001", "quantity": 1, "refund_minor": 3500},
                         {"line_no": 2, "sku": "SKU-7002", "quantity": 1, "refund_minor": 1999}]})
    );
}

#[test]
fn a_cancelled_order_save_cancels_the_units_adobe_cancelled() {
    let m = mapping();
    let out = data(map(&m, &sample("sales-order-save-after-cancelled.json"), None));
    assert_eq!(out[0].0, "OrderPlaced");
    assert_eq!(
        out[1],
        (
            "OrderCancelled".to_owned(),
            json!({"order_id": "web-1006", "cancellation_id": "order-cancelled",
                   "lines": [{"line_no": 1, "quantity": 2}], "reason": "cancelled"})
        )
    );
    // Every save of the order maps to the same OrderPlaced: ingest takes the later ones as duplicates.
    let first = data(map(&m, &sample("sales-order-save-after.json"), None));
    let mut resaved = sample("sales-order-save-after.json");
    resaved["detail"]["data"]["value"]["status"] = json!("complete");
    resaved["detail"]["event_id"] = json!("another-event");
    assert_eq!(data(map(&m, &resaved, None)), first);
}

#[test]
fn a_customer_save_is_a_members_update() {
    let m = mapping();
    let out = data(map(&m, &sample("customer-save-after.json"), None));
    assert_eq!(
        out,
        [(
            "CustomerUpdated".to_owned(),
            json!({"member_id": "m-3002", "email": "ben@example.com"})
        )]
    );
}

#[test]
fn what_cannot_be_mapped_says_why_and_an_unpaid_order_waits() {
    let m = mapping();
    let order = placed(&m);
    let with = |name: &str, pointer: &str, value: Value| {
        let mut e = sample(name);
        *e.pointer_mut(pointer).unwrap() = value;
        e
    };
    let unmappable = |event: Value, order: Option<&OrderPlaced>| match map(&m, &event, order) {
        Err(u) => format!("{} {}", u.message, u.findings.join(" | ")),
        Ok(other) => panic!("mapped: {other:?}"),
    };
    let order_value = "/detail/data/value";
    for (event, order, expected) in [
        (
            with(
                "sales-order-save-after.json",
                &format!("{order_value}/items"),
                json!([]),
            ),
            None,
            "no priced items",
        ),
        (
            with(
                "sales-order-save-after.json",
                &format!("{order_value}/items/0/price"),
                json!("x"),
            ),
            None,
            "items[0].price",
        ),
        (
            with(
                "sales-order-save-after.json",
                &format!("{order_value}/extension_attributes"),
                json!({"loyalty_member_id": "m-3002", "loyalty_hold_id": "H-1"}),
            ),
            None,
            "the points and value of hold H-1",
        ),
        (
            with(
                "sales-order-save-after.json",
                "/detail/type",
                json!("com.adobe.commerce.observer.catalog_product_save_after"),
            ),
            None,
            "is not mapped; subscribe to",
        ),
        (
            with("sales-order-save-after.json", "/detail/event_id", Value::Null),
            None,
            // Falls back to the CloudEvent id; without both there is no id.
            "",
        ),
        (
            with(
                "sales-order-shipment-save-after.json",
                &format!("{order_value}/items/0/order_item_id"),
                json!(99),
            ),
            Some(&order),
            "item 99 is not a line of order web-1002",
        ),
        (
            with("sales-order-save-after.json", "/detail/data/value", Value::Null),
            None,
            "data.value",
        ),
    ] {
        if expected.is_empty() {
            assert!(map(&m, &event, order).is_ok());
            continue;
        }
        let got = unmappable(event, order);
        assert!(got.contains(expected), "{expected:?} not in {got:?}");
    }
    let pending = with(
        "sales-order-save-after.json",
        &format!("{order_value}/state"),
        json!("pending_payment"),
    );
    assert!(
        matches!(map(&m, &pending, None).unwrap(), Mapped::Ignored(why) if why.contains("pending_payment"))
    );
    let strict = AdobeMapping {
        instances: vec!["production".into()],
        ..mapping()
    };
    let e = map(&strict, &sample("sales-order-save-after.json"), None).unwrap_err();
    assert!(e.message.contains("not one of the mapping's instances"), "{e}");
}

/// Adobe documents the EventBridge `detail` only as "the event data": the mapping reads the CloudEvent,
/// and its `data` alone too — the event code from the detail-type (`<provider label>:<event code>`), the
/// id from `data.key`.
#[test]
fn the_event_data_alone_maps_the_same() {
    let m = mapping();
    let full = sample("sales-order-save-after.json");
    let mut bare = full.clone();
    bare["detail"] = full["detail"]["data"].clone();
    let (a, b) = (
        m.parse(&full.to_string()).unwrap(),
        m.parse(&bare.to_string()).unwrap(),
    );
    assert_eq!(b.topic, "com.adobe.commerce.observer.sales_order_save_after");
    assert_eq!(b.event_id, full["detail"]["data"]["key"].as_str().unwrap());
    assert_eq!(a.payload, b.payload);
    assert_eq!(data(m.map(&a, None)), data(m.map(&b, None)));
    let mut unknown = bare;
    unknown["detail-type"] =
        json!("Retail Sync Commerce Events:com.adobe.commerce.observer.catalog_product_save_after");
    assert!(
        map(&m, &unknown, None)
            .unwrap_err()
            .message
            .contains("is not mapped")
    );
}

/// An order cancelled before it was paid was never sold: ignored. A paid one cancelled is a
/// cancellation at the save that cancels it.
#[test]
fn an_order_cancelled_unpaid_is_ignored_and_a_cancellation_has_its_own_time() {
    let m = mapping();
    let mut unpaid = sample("sales-order-save-after-cancelled.json");
    unpaid["detail"]["data"]["value"]["state"] = json!("canceled");
    unpaid["detail"]["data"]["value"]["total_invoiced"] = json!("0.0000");
    assert!(
        matches!(map(&m, &unpaid, None).unwrap(), Mapped::Ignored(why) if why.contains("before it was paid"))
    );
    unpaid["detail"]["data"]["value"]["total_invoiced"] = json!("36.0000");
    assert!(matches!(map(&m, &unpaid, None).unwrap(), Mapped::Events(_)));

    let Mapped::Events(events) = map(&m, &sample("sales-order-save-after-cancelled.json"), None).unwrap()
    else {
        panic!("mapped")
    };
    let times: Vec<String> = events
        .iter()
        .map(|e| e.metadata().occurred_at.to_string())
        .collect();
    assert_eq!(
        times,
        ["2026-11-21T09:18:00Z", "2026-11-21T09:20:00Z"],
        "placed, then cancelled"
    );
}
