//! Adobe Commerce's events as canonical events.
//!
//! Adobe I/O Events for Adobe Commerce publishes the observer events an instance subscribes to
//! (`bin/magento events:subscribe`, or `io_events.xml`) as CloudEvents, and delivers them to Amazon
//! EventBridge through its partner event source (`aws.partner/developer.adobe.com…/<uuid>`): the
//! EventBridge event's `detail` holds the event data — the saved object in `value`, with the fields the
//! subscription lists, as Magento's model data: ids, quantities and amounts as strings or numbers
//! (`"3.000000"`, `200`), times as `2026-11-21 09:05:00` UTC. Sources: developer.adobe.com, "Adobe I/O
//! Events for Adobe Commerce" (event payloads; AdobeDocs/commerce-extensibility) and "Amazon
//! EventBridge" of Adobe I/O Events (AdobeDocs/adobe-io-events).
//!
//! | event code (`com.adobe.commerce.` + …) | canonical |
//! |---|---|
//! | `observer.sales_order_save_after` | `OrderPlaced`; with `OrderCancelled` of the units cancelled |
//! | `observer.sales_order_shipment_save_after` | `OrderShipped` |
//! | `observer.sales_order_creditmemo_save_after` | `ReturnReceived` |
//! | `observer.customer_save_after` | `CustomerUpdated`, for loyalty members |
//!
//! An order is saved many times (invoiced, shipped, cancelled): each save maps to the same `OrderPlaced`,
//! which ingest recognises as a duplicate of the accepted order.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use retail_sync_contracts::EventType;
use retail_sync_contracts::events::OrderPlaced;
use retail_sync_contracts::values::{Currency, OrderId};

use crate::build::{
    Events, Findings, LineDraft, OrderDraft, Returned, customer_updated, envelope, id_from, id_text, is_id,
    money, order_line, quantities, quantity, time,
};
use crate::{Mapped, Mapper, Native, Platform, Unmappable};

const PREFIX: &str = "com.adobe.commerce.";
pub const ORDER_SAVED: &str = "com.adobe.commerce.observer.sales_order_save_after";
pub const SHIPMENT_SAVED: &str = "com.adobe.commerce.observer.sales_order_shipment_save_after";
pub const CREDIT_MEMO_SAVED: &str = "com.adobe.commerce.observer.sales_order_creditmemo_save_after";
pub const CUSTOMER_SAVED: &str = "com.adobe.commerce.observer.customer_save_after";
pub const EVENT_CODES: [&str; 4] = [ORDER_SAVED, SHIPMENT_SAVED, CREDIT_MEMO_SAVED, CUSTOMER_SAVED];

/// Order states in which nothing is sold yet: the payment is still open.
const AWAITING_PAYMENT: [&str; 2] = ["pending_payment", "payment_review"];

/// How a retailer's Adobe Commerce instance maps to retail-sync (the file `ADOBE_COMMERCE_MAPPING` holds;
/// see the README, "Shopify and Adobe Commerce").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdobeMapping {
    /// The instances (the I/O event's `data.source`, `<instance id>` or `<instance id>.<workspace>`)
    /// whose events are mapped; empty: any.
    #[serde(default)]
    pub instances: Vec<String>,
    /// Prepended to the order's `entity_id` to make the canonical `order_id`.
    #[serde(default)]
    pub order_id_prefix: String,
    /// Prepended to a credit memo's `entity_id` to make the `return_id`.
    #[serde(default = "default_return_prefix")]
    pub return_id_prefix: String,
    #[serde(default)]
    pub member: AdobeMemberRule,
    #[serde(default)]
    pub redemption: AdobeRedemptionRule,
    /// Adobe Commerce SKU → retail-sync SKU; a SKU not listed is used as it is.
    #[serde(default)]
    pub skus: BTreeMap<String, String>,
    /// Where credit memos' goods come back (Adobe Commerce names no store on a credit memo).
    #[serde(default)]
    pub default_store: Option<String>,
    #[serde(default)]
    pub earning: AdobeEarningRule,
}

/// Where the member id is: an order or customer field (an extension attribute the loyalty module adds),
/// else `<prefix><customer id>`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdobeMemberRule {
    #[serde(default = "default_member_field")]
    pub field: Option<String>,
    #[serde(default)]
    pub customer_id_prefix: Option<String>,
}

impl Default for AdobeMemberRule {
    fn default() -> Self {
        Self {
            field: default_member_field(),
            customer_id_prefix: None,
        }
    }
}

/// The order fields a checkout that spent points fills: the hold retail-sync's redemption API gave it,
/// the points, and their value taken off the order.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdobeRedemptionRule {
    #[serde(default = "default_hold_field")]
    pub hold_field: String,
    #[serde(default = "default_points_field")]
    pub points_field: String,
    #[serde(default = "default_value_field")]
    pub value_field: String,
}

impl Default for AdobeRedemptionRule {
    fn default() -> Self {
        Self {
            hold_field: default_hold_field(),
            points_field: default_points_field(),
            value_field: default_value_field(),
        }
    }
}

/// Which lines earn: every line but these product types (gift cards by default) and SKUs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdobeEarningRule {
    #[serde(default = "default_excluded_types")]
    pub exclude_product_types: Vec<String>,
    #[serde(default)]
    pub exclude_skus: Vec<String>,
}

impl Default for AdobeEarningRule {
    fn default() -> Self {
        Self {
            exclude_product_types: default_excluded_types(),
            exclude_skus: Vec::new(),
        }
    }
}

fn default_return_prefix() -> String {
    "adobe-creditmemo-".into()
}
fn default_member_field() -> Option<String> {
    Some("loyalty_member_id".into())
}
fn default_hold_field() -> String {
    "loyalty_hold_id".into()
}
fn default_points_field() -> String {
    "loyalty_points".into()
}
fn default_value_field() -> String {
    "loyalty_points_value".into()
}
fn default_excluded_types() -> Vec<String> {
    vec!["giftcard".into()]
}

/// A field of an object, or of its `extension_attributes` (where modules put theirs).
fn field<'a>(object: &'a Value, name: &str) -> Option<&'a Value> {
    object
        .get(name)
        .or_else(|| object.get("extension_attributes")?.get(name))
        .filter(|v| !v.is_null())
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The priced lines of an order: a configurable or bundle product's children (`parent_item_id` set)
/// repeat their parent, which carries the price.
fn priced_items(order: &Value) -> impl Iterator<Item = &Value> {
    order["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i.get("parent_item_id").is_none_or(Value::is_null))
}

impl AdobeMapping {
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    fn order_id(&self, id: Option<&Value>) -> Option<String> {
        id.and_then(id_text).map(|id| id_from(&self.order_id_prefix, &id))
    }

    fn member(&self, object: &Value, customer_id: Option<&Value>) -> Option<String> {
        let named = self.member.field.as_deref().and_then(|f| text(field(object, f)));
        named.or_else(|| {
            let prefix = self.member.customer_id_prefix.as_deref()?;
            Some(id_from(prefix, &id_text(customer_id?)?))
        })
    }

    fn sku(&self, item: &Value) -> Option<String> {
        let sku = item["sku"].as_str().map(str::trim).filter(|s| !s.is_empty())?;
        Some(self.skus.get(sku).cloned().unwrap_or_else(|| sku.to_owned()))
    }

    fn order_saved(&self, native: &Native) -> Result<Mapped, Unmappable> {
        let order = &native.payload;
        let state = order["state"].as_str().unwrap_or("");
        let order_id = self.order_id(order.get("entity_id"));
        if AWAITING_PAYMENT.contains(&state) {
            return Ok(Mapped::Ignored(format!(
                "order {} is {state}: nothing is sold until it is paid",
                order_id.unwrap_or_default()
            )));
        }
        // Cancelled before it was ever paid (a payment abandoned): it was never sold. Told only by the
        // order's `total_invoiced` or `total_paid`, when the subscription lists one of them; without
        // either the cancellation is mapped, as a cancellation of what is open.
        let unpaid = ["total_invoiced", "total_paid"].map(|f| field(order, f).and_then(is_zero));
        if state == "canceled" && unpaid.iter().any(Option::is_some) && unpaid.iter().flatten().all(|z| *z) {
            return Ok(Mapped::Ignored(format!(
                "order {} was cancelled before it was paid",
                order_id.unwrap_or_default()
            )));
        }
        let mut findings = Findings::default();
        if order_id.is_none() {
            findings.add("entity_id: the order has no id");
        }
        let currency = order["order_currency_code"]
            .as_str()
            .and_then(|c| Currency::parse(c).ok());
        let Some(currency) = currency else {
            return Err(Unmappable::new(format!(
                "order_currency_code {} is not an ISO 4217 code",
                order["order_currency_code"]
            )));
        };
        let mut draft = OrderDraft::default();
        let mut cancelled = BTreeMap::new();
        for (i, item) in priced_items(order).enumerate() {
            let at = |what: &str| format!("items[{}].{what}", i);
            let sku = self.sku(item);
            let qty = quantity(&item["qty_ordered"]).filter(|q| *q > 0);
            let unit = money(&item["price"], currency);
            let discount = money(&item["discount_amount"], currency).unwrap_or(0);
            let tax = money(&item["tax_amount"], currency).unwrap_or(0);
            let line_id = id_text(&item["item_id"]);
            for (ok, what) in [
                (sku.is_some(), "sku"),
                (qty.is_some(), "qty_ordered"),
                (unit.is_some(), "price"),
                (line_id.is_some(), "item_id"),
            ] {
                if !ok {
                    findings.add(format!("{}: missing or unreadable", at(what)));
                }
            }
            let (Some(sku), Some(qty), Some(unit)) = (sku, qty, unit) else {
                continue;
            };
            let product_type = item["product_type"].as_str().unwrap_or("");
            let earns = !self
                .earning
                .exclude_product_types
                .iter()
                .any(|t| t == product_type)
                && !self.earning.exclude_skus.contains(&sku);
            draft.push(
                i + 1,
                LineDraft {
                    sku,
                    quantity: qty,
                    unit_minor: unit,
                    discount_minor: discount,
                    tax_minor: tax,
                    earns,
                    channel_line_id: line_id,
                },
            );
            if let Some(q) = quantity(&item["qty_canceled"]).filter(|q| *q > 0) {
                cancelled.insert(u32::try_from(i + 1).unwrap_or(u32::MAX), q);
            }
        }
        if draft.is_empty() && findings.0.is_empty() {
            findings.add("items: the order has no priced items (subscribe with the items field)");
        }
        let rule = &self.redemption;
        let hold = text(field(order, &rule.hold_field));
        let redemption = match hold {
            None => None,
            Some(hold) => {
                let points = text(field(order, &rule.points_field)).and_then(|p| p.parse::<u64>().ok());
                let value = field(order, &rule.value_field).and_then(|v| money(v, currency));
                match (points, value) {
                    (Some(points), Some(value)) => {
                        Some(json!({"hold_id": hold, "points": points, "value_minor": value}))
                    }
                    _ => {
                        findings.add(format!(
                            "{} / {}: the points and value of hold {hold} are missing or unreadable",
                            rule.points_field, rule.value_field
                        ));
                        None
                    }
                }
            }
        };
        findings.check("the order cannot be mapped")?;
        let order_id = order_id.unwrap_or_default();
        let occurred =
            time_of(&order["created_at"]).ok_or_else(|| Unmappable::new("created_at: not a timestamp"))?;
        let member = self.member(order, order.get("customer_id"));
        // Where the order's outcomes are told back (the REST API's /V1/orders/<entity_id>).
        let channel_order = json!({"platform": "adobe-commerce", "order_ref": id_text(&order["entity_id"])});
        let data = draft.order_placed(&order_id, currency, member, redemption, channel_order);
        let mut events = Events::new(Platform::AdobeCommerce, &native.event_id, &order_id, occurred);
        events.push(EventType::OrderPlaced, data);
        if !cancelled.is_empty() {
            // Adobe Commerce cancels an order once (every unit not yet shipped or refunded), at the save
            // that cancels it: its time is that save's.
            let at = time_of(&order["updated_at"]).unwrap_or(occurred);
            events.push_at(
                EventType::OrderCancelled,
                json!({"order_id": order_id, "cancellation_id": "order-cancelled", "lines": quantities(cancelled), "reason": "cancelled"}),
                at,
            );
        }
        events.finish(String::new)
    }

    fn shipment_saved(&self, native: &Native, order: &OrderPlaced) -> Result<Mapped, Unmappable> {
        let shipment = &native.payload;
        let order_id = order.order_id.as_str();
        let id = id_text(&shipment["entity_id"])
            .ok_or_else(|| Unmappable::new("entity_id: the shipment has no id"))?;
        let mut findings = Findings::default();
        let mut lines: BTreeMap<u32, u32> = BTreeMap::new();
        for (i, item) in shipment["items"].as_array().into_iter().flatten().enumerate() {
            let Some(qty) = quantity(&item["qty"]) else {
                findings.add(format!("items[{i}].qty: not a whole number"));
                continue;
            };
            let line = id_text(&item["order_item_id"]).and_then(|id| order_line(&order.lines, &id));
            match line {
                Some(line) if qty > 0 => *lines.entry(line.line_no).or_default() += qty,
                Some(_) => {}
                // A configurable product's child (price 0) repeats its priced parent, which is the line.
                None if money(&item["price"], order.currency) == Some(0) => {}
                None => findings.add(format!(
                    "items[{i}].order_item_id: item {} is not a line of order {order_id}",
                    item["order_item_id"]
                )),
            }
        }
        findings.check("the shipment cannot be mapped")?;
        if lines.is_empty() {
            return Ok(Mapped::Ignored(format!(
                "shipment {id} of order {order_id} ships nothing"
            )));
        }
        let occurred =
            time_of(&shipment["created_at"]).ok_or_else(|| Unmappable::new("created_at: not a timestamp"))?;
        let lines = quantities(lines);
        let mut events = Events::new(Platform::AdobeCommerce, &native.event_id, order_id, occurred);
        events.push(
            EventType::OrderShipped,
            json!({"order_id": order_id, "shipment_id": id_from("", &id), "lines": lines}),
        );
        events.finish(String::new)
    }

    fn credit_memo_saved(&self, native: &Native, order: &OrderPlaced) -> Result<Mapped, Unmappable> {
        let memo = &native.payload;
        let order_id = order.order_id.as_str();
        let currency = order.currency;
        let id = id_text(&memo["entity_id"])
            .ok_or_else(|| Unmappable::new("entity_id: the credit memo has no id"))?;
        let mut findings = Findings::default();
        let mut returned = Returned::default();
        for (i, item) in memo["items"].as_array().into_iter().flatten().enumerate() {
            let Some(qty) = quantity(&item["qty"]) else {
                findings.add(format!("items[{i}].qty: not a whole number"));
                continue;
            };
            let row = money(&item["row_total"], currency);
            let discount = money(&item["discount_amount"], currency).unwrap_or(0);
            let line = id_text(&item["order_item_id"]).and_then(|id| order_line(&order.lines, &id));
            match (line, row) {
                (_, _) if qty == 0 => {}
                (Some(line), Some(row)) => returned.add(line, qty, row.saturating_sub(discount)),
                (Some(_), None) => findings.add(format!("items[{i}].row_total: not an amount in {currency}")),
                // A configurable product's child: refunded through its priced parent.
                (None, Some(0)) => {}
                (None, _) => findings.add(format!(
                    "items[{i}].order_item_id: item {} is not a line of order {order_id}",
                    item["order_item_id"]
                )),
            }
        }
        findings.check("the credit memo cannot be mapped")?;
        if returned.is_empty() {
            return Ok(Mapped::Ignored(format!(
                "credit memo {id} of order {order_id} refunds no goods (shipping or an adjustment only)"
            )));
        }
        let occurred =
            time_of(&memo["created_at"]).ok_or_else(|| Unmappable::new("created_at: not a timestamp"))?;
        let return_id = id_from(&self.return_id_prefix, &id);
        let data = returned.return_received(&return_id, order_id, currency, self.default_store.clone());
        let mut events = Events::new(Platform::AdobeCommerce, &native.event_id, order_id, occurred);
        events.push(EventType::ReturnReceived, data);
        events.finish(String::new)
    }

    fn customer_saved(&self, native: &Native) -> Result<Mapped, Unmappable> {
        let customer = &native.payload;
        let id = customer.get("entity_id").or_else(|| customer.get("id"));
        let Some(member) = self.member(customer, id) else {
            return Ok(Mapped::Ignored(format!(
                "customer {} is not a loyalty member (no member field, no customer id rule)",
                id.and_then(id_text).unwrap_or_default()
            )));
        };
        let occurred = time_of(&customer["updated_at"])
            .or_else(|| time_of(&customer["created_at"]))
            .ok_or_else(|| Unmappable::new("updated_at: not a timestamp"))?;
        let data = customer_updated(member, customer["email"].as_str(), None);
        let correlation = id_from("adobe-customer-", &id.and_then(id_text).unwrap_or_default());
        let mut events = Events::new(Platform::AdobeCommerce, &native.event_id, &correlation, occurred);
        events.push(EventType::CustomerUpdated, data);
        events.finish(String::new)
    }
}

/// Adobe Commerce writes times as `2026-11-21 09:05:00` (UTC, no zone) in its data, RFC 3339 elsewhere.
fn time_of(v: &Value) -> Option<jiff::Timestamp> {
    time(v).or_else(|| {
        let s = v.as_str()?.trim();
        let civil: jiff::civil::DateTime = s.parse().ok()?;
        civil
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp())
    })
}

impl Mapper for AdobeMapping {
    fn platform(&self) -> Platform {
        Platform::AdobeCommerce
    }

    fn parse(&self, body: &str) -> Result<Native, Unmappable> {
        let (detail_type, detail) = envelope(body)?;
        let detail = Value::Object(detail);
        // Adobe documents `detail` as "the event data": the I/O event (a CloudEvent whose `data` holds
        // the object), or its `data` alone. Both are read.
        let data = match detail.get("data") {
            Some(data) if data.get("value").is_some() => data,
            _ if detail.get("value").is_some() => &detail,
            _ => return Err(Unmappable::new("the event has no data.value (the saved object)")),
        };
        // The event code: the CloudEvent's `type`, else the detail-type (`<provider label>:<event code>`).
        let topic = detail
            .get("type")
            .and_then(Value::as_str)
            .or_else(|| detail_type.rsplit(':').next())
            .filter(|t| t.starts_with(PREFIX))
            .ok_or_else(|| {
                Unmappable::new("neither detail.type nor detail-type names an Adobe Commerce event code")
            })?;
        // The event's id, the same on every delivery of it: the I/O event id when the detail carries
        // it (spelled `event_id` or `eventid`), else the event's `data.key`.
        let id_of = |object: &Value, field: &str| {
            object
                .get(field)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
        };
        let event_id = ["event_id", "eventid", "id"]
            .iter()
            .find_map(|f| id_of(&detail, f))
            .or_else(|| id_of(data, "key"))
            .ok_or_else(|| Unmappable::new("the event has no id (detail.event_id, detail.id or data.key)"))?;
        let instance = data.get("source").and_then(Value::as_str).map(str::to_owned);
        if !self.instances.is_empty() && !instance.as_ref().is_some_and(|i| self.instances.contains(i)) {
            let message = format!(
                "data.source: instance {} is not one of the mapping's instances ({})",
                crate::named(instance.as_deref()),
                self.instances.join(", ")
            );
            return Err(Unmappable::new(message).of_event(&event_id, topic));
        }
        let payload = data
            .get("value")
            .filter(|v| v.is_object())
            .cloned()
            .ok_or_else(|| Unmappable::new("data.value (the saved object) is not an object"))?;
        Ok(Native {
            event_id,
            topic: topic.to_owned(),
            shop: instance,
            payload,
        })
    }

    fn needs_order(&self, native: &Native) -> Result<Option<OrderId>, Unmappable> {
        if ![SHIPMENT_SAVED, CREDIT_MEMO_SAVED].contains(&native.topic.as_str()) {
            return Ok(None);
        }
        let id = self
            .order_id(native.payload.get("order_id"))
            .filter(|id| is_id(id))
            .ok_or_else(|| Unmappable::new("order_id: missing"))?;
        OrderId::parse(id)
            .map(Some)
            .map_err(|e| Unmappable::new(e.to_string()))
    }

    fn map(&self, native: &Native, order: Option<&OrderPlaced>) -> Result<Mapped, Unmappable> {
        let order = || order.ok_or_else(|| Unmappable::new("the order this event refers to is needed"));
        match native.topic.as_str() {
            ORDER_SAVED => self.order_saved(native),
            SHIPMENT_SAVED => self.shipment_saved(native, order()?),
            CREDIT_MEMO_SAVED => self.credit_memo_saved(native, order()?),
            CUSTOMER_SAVED => self.customer_saved(native),
            other => Err(Unmappable::new(format!(
                "event {other:?} is not mapped; subscribe to {}",
                EVENT_CODES.join(", ")
            ))),
        }
    }
}

/// Whether an amount (a number, or a decimal string as Adobe Commerce stores it, `"0.0000"`) is zero;
/// `None` when it is no amount.
fn is_zero(v: &Value) -> Option<bool> {
    let amount = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    Some(amount == 0.0)
}
