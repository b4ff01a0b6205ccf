//! The SAP connector against SAP's documented shapes (`events/samples/sap`, sources in its README): what
//! it sends uses only properties SAP's API specification lists for the entity, within their lengths;
//! what SAP answers in its documentation, it reads.

use std::collections::BTreeMap;

use serde_json::Value;

use retail_sync_contracts::values::{MemberId, StoreId};
use retail_sync_simulators::samples;

use super::*;
use crate::auth::{Credentials, StaticCredentials};

fn sample(name: &str) -> Value {
    let path = format!("{}/../../events/samples/sap/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn mapping() -> SapMapping {
    let path = format!(
        "{}/../../infra/connectors/sap-s4hana.json",
        env!("CARGO_MANIFEST_DIR")
    );
    SapMapping::parse(&std::fs::read_to_string(path).unwrap(), "sample").unwrap()
}

fn connector() -> SapErp {
    let auth = Auth {
        method: crate::AuthMethod::Basic,
        credentials: std::sync::Arc::new(StaticCredentials {
            credentials: Credentials::default(),
            origin: "none".into(),
        }),
    };
    SapErp::new(&HttpConfig::new("https://tenant.example.com"), auth, mapping()).unwrap()
}

/// The documented properties of `entity` (`A_SalesOrderType-create`, …) and their maximum lengths.
fn documented(entity: &str) -> BTreeMap<String, Value> {
    let props = sample("properties.json");
    let schema = props["schemas"][entity]
        .as_object()
        .unwrap_or_else(|| panic!("{entity} is not in properties.json"));
    schema.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Where each navigation property leads.
const NAVIGATION: &[(&str, &str, &str)] = &[
    (
        "A_SalesOrderType-create",
        "to_Item",
        "A_SalesOrderItemType-create",
    ),
    (
        "A_SalesOrderType-create",
        "to_Text",
        "A_SalesOrderTextType-create",
    ),
    (
        "A_SalesOrderType-create",
        "to_PricingElement",
        "A_SalesOrderHeaderPrElementType-create",
    ),
    (
        "A_SalesOrderItemType-create",
        "to_PricingElement",
        "A_SalesOrderItemPrElementType-create",
    ),
    (
        "A_CustomerReturnType-create",
        "to_Item",
        "A_CustomerReturnItemType-create",
    ),
    (
        "A_CustomerReturnType-create",
        "to_Text",
        "A_CustomerReturnTextType-create",
    ),
    (
        "A_CustomerReturnItemType-create",
        "to_PricingElement",
        "A_CustomerReturnItemPrcgElmntType-create",
    ),
];

/// Every property of `body` is one `entity` documents, within its length; navigation properties are
/// checked against the entities they lead to.
fn conforms(body: &Value, entity: &str) {
    let schema = documented(entity);
    for (name, value) in body.as_object().unwrap() {
        let Some(rule) = schema.get(name) else {
            panic!("{entity} has no property {name}");
        };
        if let Some((_, _, target)) = NAVIGATION.iter().find(|(e, n, _)| *e == entity && n == name) {
            assert_eq!(rule, "navigation", "{entity}.{name}");
            for element in value.as_array().unwrap() {
                conforms(element, target);
            }
            continue;
        }
        let text = value
            .as_str()
            .unwrap_or_else(|| panic!("{entity}.{name} is sent as {value}"));
        if let Some(max) = rule.as_u64() {
            assert!(
                text.chars().count() as u64 <= max,
                "{entity}.{name} {text:?} is longer than {max}"
            );
        }
    }
}

fn sale_with_everything() -> ErpSaleRequest {
    let mut sale = samples::sale("store-001", "r-000001");
    sale.member_id = Some(MemberId::parse("m-1").unwrap());
    sale.lines[0].discount_minor = retail_sync_contracts::values::Amount::new(100).unwrap();
    sale.lines[0].net_minor = retail_sync_contracts::values::Amount::new(900).unwrap();
    sale.redemption = Some(retail_sync_contracts::Redemption {
        hold_id: retail_sync_contracts::values::HoldId::parse("h-1").unwrap(),
        points: retail_sync_contracts::values::Points::new(200).unwrap(),
        value_minor: retail_sync_contracts::values::Amount::new(200).unwrap(),
    });
    sale
}

#[test]
fn a_sales_order_uses_only_documented_properties_within_their_lengths() {
    let body = connector().sales_order_body(&sale_with_everything()).unwrap();
    assert!(documented("A_SalesOrderType-create").contains_key(&mapping().stamp_field));
    conforms(&body, "A_SalesOrderType-create");
    assert_eq!(
        body["to_Item"][0]["to_PricingElement"].as_array().unwrap().len(),
        3,
        "price, discount, tax"
    );
    assert_eq!(
        body["to_PricingElement"][0]["ConditionRateValue"], "-2.00",
        "points redeemed"
    );
}

#[test]
fn a_customer_return_uses_only_documented_properties_within_their_lengths() {
    let original = samples::receipt("store-001", "r-000001");
    let mut request = samples::return_of("ret-1", original, Some("store-002"));
    request.store_id = Some(StoreId::parse("store-002").unwrap());
    let body = connector()
        .customer_return_body(
            &request,
            "1000013602",
            &odata::stamp("a:long:key:that:needs:a:digest:x"),
        )
        .unwrap();
    conforms(&body, "A_CustomerReturnType-create");
    assert_eq!(body["to_Item"][0]["ReferenceSDDocument"], "1000013602");
}

#[test]
fn item_changes_use_only_documented_update_properties() {
    let update = documented("A_SalesOrderItemType-update");
    for property in ["RequestedQuantity", "SalesDocumentRjcnReason"] {
        assert!(update.contains_key(property), "{property} is not updatable");
    }
    assert_eq!(update["SalesDocumentRjcnReason"], 2);
    assert!(mapping().rejection_reason.len() <= 2);
}

#[test]
fn the_documented_create_sample_is_the_shape_we_send() {
    // SAP's own deep insert: plain arrays for to_Item and to_PricingElement, decimals as strings.
    let documented = sample("sales-order-create.request.json");
    let ours = connector().sales_order_body(&sale_with_everything()).unwrap();
    assert!(documented["to_Item"].is_array() && ours["to_Item"].is_array());
    let (d, o) = (&documented["to_Item"][0], &ours["to_Item"][0]);
    assert!(d["RequestedQuantity"].is_string() && o["RequestedQuantity"].is_string());
    assert!(d["to_PricingElement"][0]["ConditionRateValue"].is_string());
    assert!(o["to_PricingElement"][0]["ConditionRateValue"].is_string());
}

#[test]
fn documented_answers_are_read() {
    let created = sample("sales-order-create.response.json");
    assert_eq!(
        created.pointer("/d/SalesOrder").and_then(Value::as_str),
        Some("1000013602")
    );
    assert!(checked_number("1000013602").is_ok());
    let found = sample("sales-order-query.response.json");
    let first = &found["d"]["results"][0];
    assert_eq!(first["SalesOrder"], "4000043");
    assert!(
        first
            .pointer("/__metadata/etag")
            .and_then(Value::as_str)
            .unwrap()
            .starts_with("W/")
    );
    let error = serde_json::to_vec(&sample("error.json")).unwrap();
    let (code, message) = odata::error_of(&error).unwrap();
    assert_eq!(code, "XX/123");
    assert!(message.starts_with("Account 12345678"));
}

#[test]
fn odd_answers_are_errors_not_panics() {
    for body in [
        &b""[..],
        b"null",
        b"[]",
        b"{\"error\": 1}",
        b"{\"error\": {\"code\": 7}}",
        b"\xff\xfe",
    ] {
        let _ = odata::error_of(body);
        let _ = odata::batch_failure(&String::from_utf8_lossy(body));
    }
    for text in [
        "HTTP/1.1 ",
        "HTTP/1.1 9999999999 x",
        "HTTP/1.1 500\r\n",
        "--b\r\nHTTP/1.1 412 x",
    ] {
        let _ = odata::batch_failure(text);
    }
    assert!(checked_number("1'; DROP").is_err());
    assert!(checked_number("").is_err());
}
