//! The Shopify samples (`events/native/shopify`, real-shaped after shopify.dev's webhook reference) through
//! the sample store's mapping (`infra/channels/shopify.json`): what each topic becomes, duplicates, and
//! every way a payload can fail to map.

use serde_json::{Value, json};

use retail_sync_channels::{Mapped, Mapper, ShopifyMapping, Unmappable};
use retail_sync_contracts::Event;
use retail_sync_contracts::events::OrderPlaced;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn mapping() -> ShopifyMapping {
    ShopifyMapping::parse(&std::fs::read_to_string(root().join("infra/channels/shopify.json")).unwrap())
        .unwrap()
}

fn sample(name: &str) -> Value {
    let path = root().join("events/native/shopify").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn map(m: &ShopifyMapping, event: &Value, order: Option<&OrderPlaced>) -> Result<Mapped, Unmappable> {
    let native = m.parse(&event.to_string())?;
    m.map(&native, order)
}

fn events(mapped: Result<Mapped, Unmappable>) -> Vec<Value> {
    match mapped.unwrap() {
        Mapped::Events(events) => events
            .into_iter()
            .map(|e| json!({"type": e.event_type().name(), "detail": serde_json::to_value(&e).unwrap()}))
            .collect(),
        Mapped::Ignored(why) => panic!("ignored: {why}"),
    }
}

/// The accepted order, as the mapper step reads it from the saga.
fn placed(m: &ShopifyMapping) -> OrderPlaced {
    let Mapped::Events(events) = map(m, &sample("orders-create.json"), None).unwrap() else {
        panic!("mapped")
    };
    match &events[0] {
        Event::OrderPlaced(d) => d.data.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_order_with_points_becomes_the_canonical_order_with_its_redemption() {
    let m = mapping();
    let out = events(map(&m, &sample("orders-create.json"), None));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["type"], "OrderPlaced");
    let detail = &out[0]["detail"];
    assert_eq!(
        detail["metadata"]["event_id"],
        "shopify-orders-create-3f6a1c2e-8b4d-4e2a-9c1f-000000000001"
    );
    assert_eq!(detail["metadata"]["channel"], "ecommerce");
    assert_eq!(detail["metadata"]["correlation_id"], "web-1001");
    assert_eq!(detail["metadata"]["occurred_at"], "2026-11-21T09:01:00Z");
    // The canonical day's web-1001 (events/streams/orders-day.jsonl), with the platform's line ids: the
    // points' discount is the redemption, not a price discount.
    assert_eq!(
        detail["data"],
        json!({
            "order_id": "web-1001",
            "member_id": "m-3001",
            "currency": "EUR",
            "lines": [
                {"line_no": 1, "sku": "SKU-7001", "quantity": 1, "unit_price_minor": 12900, "discount_minor": 0,
                 "net_minor": 12900, "tax_minor": 2580, "loyalty_eligible": true, "channel_line_id": "100101"},
                {"line_no": 2, "sku": "SKU-7002", "quantity": 2, "unit_price_minor": 2450, "discount_minor": 0,
                 "net_minor": 4900, "tax_minor": 980, "loyalty_eligible": true, "channel_line_id": "100102"}
            ],
            "totals": {"net_minor": 17800, "tax_minor": 3560, "gross_minor": 21360},
            "redemption": {"hold_id": "H-00000001", "points": 500, "value_minor": 500},
            "channel_order": {"platform": "shopify", "order_ref": "1001"}
        })
    );
    // A second delivery of the same webhook is the same event, id included.
    assert_eq!(events(map(&m, &sample("orders-create.json"), None)), out);
}

#[test]
fn fulfillments_ship_by_the_orders_line_ids_and_orders_fulfilled_repeats_them() {
    let m = mapping();
    let order = placed(&m);
    let native = m.parse(&sample("fulfillments-create.json").to_string()).unwrap();
    assert_eq!(m.needs_order(&native).unwrap().unwrap().as_str(), "web-1001");
    let shipped = events(m.map(&native, Some(&order)));
    assert_eq!(
        shipped[0]["detail"]["data"],
        json!({"order_id": "web-1001", "shipment_id": "5305427689701",
               "lines": [{"line_no": 1, "quantity": 1}, {"line_no": 2, "quantity": 1}]})
    );
    // A fulfillment created pending ships by its update: the same shipment.
    let mut updated = sample("fulfillments-create.json");
    updated["detail"]["metadata"]["X-Shopify-Topic"] = json!("fulfillments/update");
    let native = m.parse(&updated.to_string()).unwrap();
    assert_eq!(m.needs_order(&native).unwrap().unwrap().as_str(), "web-1001");
    assert_eq!(
        events(m.map(&native, Some(&order)))[0]["detail"]["data"],
        shipped[0]["detail"]["data"]
    );
    // orders/fulfilled carries the order with both fulfillments: two shipments, the first the same.
    let fulfilled = events(map(&m, &sample("orders-fulfilled.json"), None));
    let ids: Vec<&Value> = fulfilled
        .iter()
        .map(|e| &e["detail"]["data"]["shipment_id"])
        .collect();
    assert_eq!(ids, [&json!("5305427689701"), &json!("5305427689702")]);
    assert_eq!(fulfilled[0]["detail"]["data"], shipped[0]["detail"]["data"]);
    assert_eq!(
        fulfilled[0]["detail"]["metadata"]["occurred_at"], shipped[0]["detail"]["metadata"]["occurred_at"],
        "each shipment at its own fulfillment's time"
    );
    assert_ne!(
        fulfilled[0]["detail"]["metadata"]["event_id"],
        fulfilled[1]["detail"]["metadata"]["event_id"]
    );
}

#[test]
fn refunds_return_goods_or_cancel_unshipped_units_by_restock_type() {
    let m = mapping();
    let order = placed(&m);
    let returned = events(map(&m, &sample("refunds-create.json"), Some(&order)));
    assert_eq!(returned[0]["type"], "ReturnReceived");
    assert_eq!(
        returned[0]["detail"]["data"],
        json!({"return_id": "shopify-refund-890088186047801", "original": {"kind": "order", "order_id": "web-1001"},
               "store_id": "store-050", "currency": "EUR",
               "lines": [{"line_no": 2, "sku": "SKU-7002", "quantity": 1, "refund_minor": 2380}]})
    );

    // web-1005's refund restocked as `cancel`: a cancellation of the unshipped unit.
    let web_1005 = {
        let mut o = order.clone();
        o.order_id = retail_sync_contracts::values::OrderId::parse("web-1005").unwrap();
        o.lines.truncate(1);
        o.lines[0].channel_line_id =
            Some(retail_sync_contracts::values::PlatformId::parse("100501").unwrap());
        o
    };
    let cancelled = events(map(&m, &sample("refunds-create-cancel.json"), Some(&web_1005)));
    assert_eq!(cancelled[0]["type"], "OrderCancelled");
    assert_eq!(
        cancelled[0]["detail"]["data"],
        json!({"order_id": "web-1005", "cancellation_id": "refund-890088186047805",
               "lines": [{"line_no": 1, "quantity": 1}], "reason": "Customer changed their mind"})
    );
}

#[test]
fn a_cancelled_order_and_a_members_update_map_whole() {
    let m = mapping();
    let cancelled = events(map(&m, &sample("orders-cancelled.json"), None));
    assert_eq!(
        cancelled[0]["detail"]["data"],
        json!({"order_id": "web-1003", "cancellation_id": "order-cancelled", "reason": "customer"})
    );
    let customer = events(map(&m, &sample("customers-update.json"), None));
    assert_eq!(
        customer[0]["detail"]["data"],
        json!({"member_id": "m-3001", "email": "ana@example.com", "marketing_consent": true})
    );
}

/// `(what is changed, the finding or message expected)`: each is unmappable, with a reason.
#[test]
fn what_cannot_be_mapped_says_why() {
    let m = mapping();
    let order = placed(&m);
    let unmappable = |event: Value, order: Option<&OrderPlaced>| -> String {
        match map(&m, &event, order) {
            Err(u) => format!("{} {}", u.message, u.findings.join(" | ")),
            Ok(other) => panic!("mapped: {other:?}"),
        }
    };
    let with = |name: &str, pointer: &str, value: Value| {
        let mut e = sample(name);
        *e.pointer_mut(pointer).unwrap() = value;
        e
    };
    let cases: Vec<(Value, Option<&OrderPlaced>, &str)> = vec![
        (
            {
                // A variant the mapping does not list, on a line without a SKU of its own.
                let mut e = with(
                    "orders-create.json",
                    "/detail/payload/line_items/0/variant_id",
                    json!(1),
                );
                e["detail"]["payload"]["line_items"][0]["sku"] = json!("");
                e
            },
            None,
            "variant 1 has no SKU",
        ),
        (
            with(
                "orders-create.json",
                "/detail/payload/line_items/1/price",
                json!("24.505"),
            ),
            None,
            "line_items[1].price",
        ),
        (
            with("orders-create.json", "/detail/payload/currency", json!("EURO")),
            None,
            "not an ISO 4217 code",
        ),
        (
            with(
                "orders-create.json",
                "/detail/payload/note_attributes/2/value",
                json!("many"),
            ),
            None,
            "the points of hold H-00000001",
        ),
        (
            with("orders-create.json", "/detail/payload/note_attributes", json!([])),
            None,
            "a POINTS- discount without the hold",
        ),
        (
            with(
                "orders-create.json",
                "/detail/metadata/X-Shopify-Topic",
                json!("products/update"),
            ),
            None,
            "is not mapped; subscribe to",
        ),
        (
            with(
                "orders-create.json",
                "/detail/metadata/X-Shopify-Shop-Domain",
                json!("other.myshopify.com"),
            ),
            None,
            "is not one of the mapping's shops",
        ),
        (
            with("orders-create.json", "/detail-type", json!("orderCreated")),
            None,
            "detail-type",
        ),
        (
            with(
                "refunds-create.json",
                "/detail/payload/refund_line_items/0/line_item_id",
                json!(42),
            ),
            Some(&order),
            "line item 42 is not a line of order web-1001",
        ),
        (
            with(
                "fulfillments-create.json",
                "/detail/payload/line_items/0/quantity",
                json!(-1),
            ),
            Some(&order),
            "quantity",
        ),
    ];
    for (event, order, expected) in cases {
        let got = unmappable(event, order);
        assert!(got.contains(expected), "{expected:?} not in {got:?}");
    }
    // A missing event id falls back to the webhook id; without either the event cannot be told apart.
    let mut e = sample("orders-create.json");
    e["detail"]["metadata"]["X-Shopify-Event-Id"] = Value::Null;
    assert!(map(&m, &e, None).is_ok());
    e["detail"]["metadata"]["X-Shopify-Webhook-Id"] = Value::Null;
    assert!(unmappable(e, None).contains("X-Shopify-Event-Id"));
    assert!(m.parse("{not json").unwrap_err().message.contains("not JSON"));
}

#[test]
fn what_means_nothing_for_the_books_is_ignored_with_a_reason() {
    let m = mapping();
    let order = placed(&m);
    let ignored = |event: Value| match map(&m, &event, Some(&order)).unwrap() {
        Mapped::Ignored(why) => why,
        Mapped::Events(e) => panic!("mapped: {e:?}"),
    };
    let mut pending = sample("fulfillments-create.json");
    pending["detail"]["payload"]["status"] = json!("pending");
    assert!(ignored(pending).contains("no successful fulfillment"));
    let mut shipping_only = sample("refunds-create.json");
    shipping_only["detail"]["payload"]["refund_line_items"] = json!([]);
    assert!(ignored(shipping_only).contains("refunds no goods"));
    let mut stranger = sample("customers-update.json");
    stranger["detail"]["payload"]["tags"] = json!("vip");
    assert!(ignored(stranger).contains("not a loyalty member"));
}

#[test]
fn headers_are_found_whatever_their_case_and_header_casing_does_not_change_the_events() {
    let m = mapping();
    let mut e = sample("orders-create.json");
    let metadata = e["detail"]["metadata"].as_object().unwrap().clone();
    let lower: serde_json::Map<String, Value> =
        metadata.into_iter().map(|(k, v)| (k.to_lowercase(), v)).collect();
    e["detail"]["metadata"] = Value::Object(lower);
    assert_eq!(
        events(map(&m, &e, None)),
        events(map(&m, &sample("orders-create.json"), None))
    );
}

/// A tax-inclusive store (`taxes_included`, the usual EU setting): prices hold their tax, so the canonical
/// line's net is the price less that tax and the gross is what the customer paid.
#[test]
fn a_tax_inclusive_order_is_booked_before_tax() {
    let m = mapping();
    let mut e = sample("orders-create.json");
    e["detail"]["payload"]["taxes_included"] = json!(true);
    // One unit at 129.00 holding 21.50 of VAT; two at 24.50 holding 8.17 together.
    e["detail"]["payload"]["line_items"][0]["tax_lines"][0]["price"] = json!("21.50");
    e["detail"]["payload"]["line_items"][1]["tax_lines"][0]["price"] = json!("8.17");
    let out = events(map(&m, &e, None));
    let data = &out[0]["detail"]["data"];
    let line = |i: usize, f: &str| data["lines"][i][f].as_i64().unwrap();
    assert_eq!(
        (
            line(0, "unit_price_minor"),
            line(0, "net_minor"),
            line(0, "tax_minor")
        ),
        (10750, 10750, 2150)
    );
    // 4900 − 817 = 4083 before tax: 2 × 2042 less 1 of rounding.
    assert_eq!(
        (
            line(1, "unit_price_minor"),
            line(1, "discount_minor"),
            line(1, "net_minor")
        ),
        (2042, 1, 4083)
    );
    assert_eq!(
        data["totals"],
        json!({"net_minor": 14833, "tax_minor": 2967, "gross_minor": 17800})
    );
}

#[test]
fn units_refunded_before_fulfillment_are_cancelled_and_a_hold_without_its_discount_is_refused() {
    let m = mapping();
    let order = placed(&m);
    let mut refund = sample("refunds-create.json");
    refund["detail"]["payload"]["refund_line_items"][0]["restock_type"] = json!("no_restock");
    refund["detail"]["payload"]["refund_line_items"][0]["line_item"]["fulfillment_status"] = Value::Null;
    let out = events(map(&m, &refund, Some(&order)));
    assert_eq!(out[0]["type"], "OrderCancelled", "{out:?}");
    // Refunded without restocking after it was fulfilled: a return.
    refund["detail"]["payload"]["refund_line_items"][0]["line_item"]["fulfillment_status"] =
        json!("fulfilled");
    assert_eq!(
        events(map(&m, &refund, Some(&order)))[0]["type"],
        "ReturnReceived"
    );

    let mut no_discount = sample("orders-create.json");
    for line in no_discount["detail"]["payload"]["line_items"]
        .as_array_mut()
        .unwrap()
    {
        line["discount_allocations"] = json!([]);
    }
    let e = map(&m, &no_discount, None).unwrap_err();
    assert!(e.findings.join(" ").contains("but no POINTS- discount"), "{e:?}");
}
