//! Shopify's webhooks as canonical events.
//!
//! They arrive as Amazon EventBridge events of detail-type `shopifyWebhook`: from Shopify's partner event
//! source (`aws.partner/shopify.com/<app id>/<name>`), or from retail-sync's webhook ingress, which puts
//! an HTTPS delivery on the channel bus in the same shape. `detail.metadata` holds the webhook's headers
//! (`X-Shopify-Topic`, `X-Shopify-Event-Id`, `X-Shopify-Shop-Domain`, …; their case varies, so they are
//! looked up without it) and `detail.payload` the resource in Shopify's REST shape (money as decimal
//! strings, ids as 64-bit integers). Sources: shopify.dev, "Webhooks" topic reference (API 2026-07) and
//! "Manage webhook events with Amazon EventBridge".
//!
//! | topic | canonical |
//! |---|---|
//! | `orders/create` | `OrderPlaced` (with the redemption when the checkout used points) |
//! | `fulfillments/create`, `fulfillments/update`, `orders/fulfilled` | `OrderShipped` per successful fulfillment |
//! | `orders/cancelled` | `OrderCancelled` of the whole order |
//! | `refunds/create` | `OrderCancelled` of units refunded before fulfillment, `ReturnReceived` of the others |
//! | `customers/update` | `CustomerUpdated`, for loyalty members |

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use retail_sync_contracts::EventType;
use retail_sync_contracts::events::OrderPlaced;
use retail_sync_contracts::values::{Currency, OrderId};

use crate::build::{
    Events, Findings, LineDraft, OrderDraft, Returned, customer_updated, envelope, id_from, id_text, is_id,
    money, order_line, quantities, quantity, time,
};
use crate::{Mapped, Mapper, Native, Platform, Unmappable};

pub const DETAIL_TYPE: &str = "shopifyWebhook";

/// The topics the mapping knows; a subscription to any other is a setup mistake, quarantined as such.
pub const TOPICS: [&str; 7] = [
    "orders/create",
    "fulfillments/create",
    "fulfillments/update",
    "orders/fulfilled",
    "orders/cancelled",
    "refunds/create",
    "customers/update",
];

/// How a retailer's Shopify store maps to retail-sync (the file `SHOPIFY_MAPPING` holds; see the README,
/// "Shopify and Adobe Commerce").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopifyMapping {
    /// The `*.myshopify.com` domains whose events are mapped; an event of another shop is quarantined.
    /// Empty: any shop (the partner event source is one app's; list the shops when it serves several).
    #[serde(default)]
    pub shops: Vec<String>,
    /// Prepended to Shopify's order id to make the canonical `order_id` (e.g. `web-` → `web-5893217321195`).
    #[serde(default)]
    pub order_id_prefix: String,
    /// Prepended to a refund's id to make the `return_id` of the goods it takes back.
    #[serde(default = "default_return_prefix")]
    pub return_id_prefix: String,
    #[serde(default)]
    pub member: MemberRule,
    #[serde(default)]
    pub redemption: RedemptionRule,
    /// Variant id → SKU. A variant not listed uses the line's own `sku` unless `sku_from_line` is false.
    #[serde(default)]
    pub skus: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub sku_from_line: bool,
    /// Location id → store id, for returns restocked at a location.
    #[serde(default)]
    pub locations: BTreeMap<String, String>,
    /// The store of a return whose location is not listed (none: the return names no store).
    #[serde(default)]
    pub default_store: Option<String>,
    #[serde(default)]
    pub earning: EarningRule,
}

/// Where an order's or a customer's loyalty member id is, tried in this order.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRule {
    /// The order's note attribute (cart attribute) the checkout writes the member id into.
    #[serde(default = "default_member_attribute")]
    pub note_attribute: Option<String>,
    /// A customer tag `<prefix><member id>` (payloads before API version 2025-01 carry customer tags).
    #[serde(default)]
    pub customer_tag_prefix: Option<String>,
    /// The member id is `<prefix><Shopify customer id>` (a loyalty platform keyed by Shopify's customers).
    #[serde(default)]
    pub customer_id_prefix: Option<String>,
}

impl Default for MemberRule {
    fn default() -> Self {
        Self {
            note_attribute: default_member_attribute(),
            customer_tag_prefix: None,
            customer_id_prefix: None,
        }
    }
}

/// How the checkout records points spent: it holds them through retail-sync's redemption API, writes the
/// hold into the order's note attributes, and takes their value off with a discount code.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedemptionRule {
    #[serde(default = "default_hold_attribute")]
    pub hold_attribute: String,
    #[serde(default = "default_points_attribute")]
    pub points_attribute: String,
    /// The discount applications (by code or title) that are the points' value, not a price discount.
    #[serde(default = "default_points_code")]
    pub discount_code_prefix: String,
}

impl Default for RedemptionRule {
    fn default() -> Self {
        Self {
            hold_attribute: default_hold_attribute(),
            points_attribute: default_points_attribute(),
            discount_code_prefix: default_points_code(),
        }
    }
}

/// Which lines earn points: every line but these.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarningRule {
    /// Gift cards earn only when this is true (they are a means of payment, not goods).
    #[serde(default)]
    pub gift_cards: bool,
    #[serde(default)]
    pub exclude_skus: Vec<String>,
    #[serde(default)]
    pub exclude_vendors: Vec<String>,
}

fn yes() -> bool {
    true
}
fn default_return_prefix() -> String {
    "shopify-refund-".into()
}
fn default_member_attribute() -> Option<String> {
    Some("loyalty_member_id".into())
}
fn default_hold_attribute() -> String {
    "loyalty_hold_id".into()
}
fn default_points_attribute() -> String {
    "loyalty_points".into()
}
fn default_points_code() -> String {
    "POINTS-".into()
}

/// A header of `detail.metadata`, whatever its case.
fn header<'a>(metadata: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    metadata
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl ShopifyMapping {
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    fn order_id(&self, id: &Value) -> Option<String> {
        id_text(id).map(|id| id_from(&self.order_id_prefix, &id))
    }

    /// The member of an order: its note attribute, a customer tag, or the customer id.
    fn member_of_order(&self, order: &Value) -> Option<String> {
        let attribute = self
            .member
            .note_attribute
            .as_deref()
            .and_then(|name| note_attribute(order, name));
        attribute.or_else(|| self.member_of_customer(order.get("customer")?))
    }

    fn member_of_customer(&self, customer: &Value) -> Option<String> {
        let tagged = self.member.customer_tag_prefix.as_deref().and_then(|prefix| {
            customer
                .get("tags")
                .and_then(Value::as_str)?
                .split(',')
                .find_map(|t| t.trim().strip_prefix(prefix).map(str::to_owned))
        });
        tagged.or_else(|| {
            let prefix = self.member.customer_id_prefix.as_deref()?;
            Some(id_from(prefix, &id_text(customer.get("id")?)?))
        })
    }

    fn sku(&self, line: &Value) -> Option<String> {
        let mapped = line
            .get("variant_id")
            .and_then(id_text)
            .and_then(|v| self.skus.get(&v).cloned());
        mapped.or_else(|| {
            self.sku_from_line
                .then(|| line.get("sku").and_then(Value::as_str).map(str::trim))
                .flatten()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
    }

    fn earns(&self, line: &Value, sku: &str) -> bool {
        let gift_card = line.get("gift_card").and_then(Value::as_bool).unwrap_or(false);
        let vendor = line.get("vendor").and_then(Value::as_str).unwrap_or("");
        (!gift_card || self.earning.gift_cards)
            && !self.earning.exclude_skus.iter().any(|s| s == sku)
            && !self.earning.exclude_vendors.iter().any(|v| v == vendor)
    }

    /// Whether discount application `index` of `order` is the points' value.
    fn is_points(&self, order: &Value, index: &Value) -> bool {
        let Some(application) = index
            .as_u64()
            .and_then(|i| order.get("discount_applications")?.get(usize::try_from(i).ok()?))
        else {
            return false;
        };
        let prefix = &self.redemption.discount_code_prefix;
        ["code", "title"].iter().any(|f| {
            application
                .get(*f)
                .and_then(Value::as_str)
                .is_some_and(|c| !prefix.is_empty() && c.starts_with(prefix.as_str()))
        })
    }

    fn order_placed(&self, native: &Native) -> Result<Mapped, Unmappable> {
        let order = &native.payload;
        let mut findings = Findings::default();
        let order_id = self.order_id(&order["id"]);
        if order_id.is_none() {
            findings.add("id: the order has no id");
        }
        let currency = order["currency"].as_str().and_then(|c| Currency::parse(c).ok());
        let Some(currency) = currency else {
            return Err(Unmappable::new(format!(
                "currency {} is not an ISO 4217 code",
                order["currency"]
            )));
        };
        let mut draft = OrderDraft::default();
        let mut points_value = 0_i64;
        let taxes_included = order["taxes_included"].as_bool().unwrap_or(false);
        let empty = Vec::new();
        let items = order["line_items"].as_array().unwrap_or(&empty);
        if items.is_empty() {
            findings.add("line_items: the order has no lines");
        }
        for (i, line) in items.iter().enumerate() {
            let at = |what: &str| format!("line_items[{i}].{what}");
            let sku = self.sku(line);
            if sku.is_none() {
                findings.add(format!(
                    "{}: variant {} has no SKU in the mapping and the line none of its own",
                    at("variant_id"),
                    line["variant_id"]
                ));
            }
            let qty = quantity(&line["quantity"]).filter(|q| *q > 0);
            let unit = money(&line["price"], currency);
            if qty.is_none() {
                findings.add(format!("{}: not a whole number of units", at("quantity")));
            }
            if unit.is_none() {
                findings.add(format!("{}: not an amount in {currency}", at("price")));
            }
            let (mut discount, mut points) = (0_i64, 0_i64);
            for allocation in line["discount_allocations"].as_array().unwrap_or(&empty) {
                let Some(amount) = money(&allocation["amount"], currency) else {
                    findings.add(format!("{}: not an amount", at("discount_allocations")));
                    continue;
                };
                if self.is_points(order, &allocation["discount_application_index"]) {
                    points += amount;
                } else {
                    discount += amount;
                }
            }
            let mut tax = 0_i64;
            for tax_line in line["tax_lines"].as_array().unwrap_or(&empty) {
                match money(&tax_line["price"], currency) {
                    Some(t) => tax += t,
                    None => findings.add(format!("{}: not an amount", at("tax_lines"))),
                }
            }
            let (Some(sku), Some(qty), Some(unit)) = (sku, qty, unit) else {
                continue;
            };
            // A tax-inclusive store's prices hold their tax. The canonical line is before tax: its unit
            // price is the price less the tax it holds per unit (rounded up, the rest counted with the
            // discount), so that net = quantity × unit − discount is the value before tax exactly and
            // gross = net + tax is what the customer paid.
            let (unit, discount) = if taxes_included {
                let before_tax = i64::from(qty).saturating_mul(unit).saturating_sub(tax);
                if before_tax < 0 {
                    findings.add(format!("{}: more tax than price", at("tax_lines")));
                    continue;
                }
                let q = i64::from(qty);
                let per_unit = before_tax / q + i64::from(before_tax % q > 0);
                (per_unit, q.saturating_mul(per_unit) - before_tax + discount)
            } else {
                (unit, discount)
            };
            points_value = points_value.saturating_add(points);
            let earns = self.earns(line, &sku);
            draft.push(
                i + 1,
                LineDraft {
                    sku,
                    quantity: qty,
                    unit_minor: unit,
                    discount_minor: discount,
                    tax_minor: tax,
                    earns,
                    channel_line_id: id_text(&line["id"]),
                },
            );
        }
        let member = self.member_of_order(order);
        let hold = note_attribute(order, &self.redemption.hold_attribute);
        let points = note_attribute(order, &self.redemption.points_attribute);
        let redemption = match (hold, points_value) {
            (None, 0) => None,
            (Some(hold), 0) => {
                // The cart kept the hold, but no points discount was applied: nothing was taken off.
                findings.add(format!(
                    "discount_applications: hold {hold} in note_attributes.{} but no {} discount",
                    self.redemption.hold_attribute, self.redemption.discount_code_prefix
                ));
                None
            }
            (Some(hold), value) => match points.as_deref().map(str::parse::<u64>) {
                Some(Ok(points)) => Some(json!({"hold_id": hold, "points": points, "value_minor": value})),
                _ => {
                    findings.add(format!(
                        "note_attributes.{}: the points of hold {hold} are missing or not a number",
                        self.redemption.points_attribute
                    ));
                    None
                }
            },
            (None, _) => {
                findings.add(format!(
                    "discount_applications: a {} discount without the hold in note_attributes.{}",
                    self.redemption.discount_code_prefix, self.redemption.hold_attribute
                ));
                None
            }
        };
        findings.check("the order cannot be mapped")?;
        let order_id = order_id.unwrap_or_default();
        let occurred = time(&order["processed_at"]).or_else(|| time(&order["created_at"]));
        let occurred = occurred.ok_or_else(|| Unmappable::new("created_at: not a timestamp"))?;
        // Where the order's outcomes are told back (Admin GraphQL names it gid://shopify/Order/<id>).
        let channel_order = json!({"platform": "shopify", "order_ref": id_text(&order["id"])});
        let data = draft.order_placed(&order_id, currency, member, redemption, channel_order);
        let mut events = Events::new(Platform::Shopify, &native.event_id, &order_id, occurred);
        events.push(EventType::OrderPlaced, data);
        events.finish(String::new)
    }

    /// One `OrderShipped` per successful fulfillment; lines by the order's line ids (`lines`: the line
    /// item ids in the order's own line order).
    fn shipments(
        &self,
        native: &Native,
        order_id: &str,
        fulfillments: &[Value],
        line_no: impl Fn(&str) -> Option<u32>,
    ) -> Result<Mapped, Unmappable> {
        let mut findings = Findings::default();
        let mut shipped = Vec::new();
        let mut occurred = None;
        for (f, fulfillment) in fulfillments.iter().enumerate() {
            let status = fulfillment["status"].as_str().unwrap_or("");
            if status != "success" {
                continue;
            }
            let Some(id) = id_text(&fulfillment["id"]) else {
                findings.add(format!("fulfillments[{f}].id: missing"));
                continue;
            };
            let mut lines: BTreeMap<u32, u32> = BTreeMap::new();
            for (i, line) in fulfillment["line_items"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let no = id_text(&line["id"]).and_then(|id| line_no(&id));
                let qty = quantity(&line["quantity"]).filter(|q| *q > 0);
                match (no, qty) {
                    (Some(no), Some(qty)) => *lines.entry(no).or_default() += qty,
                    (None, _) => findings.add(format!(
                        "fulfillment {id} line_items[{i}]: line item {} is not a line of order {order_id}",
                        line["id"]
                    )),
                    (_, None) => findings.add(format!(
                        "fulfillment {id} line_items[{i}].quantity: not a whole number"
                    )),
                }
            }
            let Some(at) = time(&fulfillment["created_at"]) else {
                findings.add(format!("fulfillment {id} created_at: not a timestamp"));
                continue;
            };
            occurred = occurred.max(Some(at));
            let lines = quantities(lines);
            // Each shipment at its own fulfillment's time: the same fulfillment mapped from
            // fulfillments/create and from orders/fulfilled is then the same event.
            shipped.push((
                json!({"order_id": order_id, "shipment_id": id_from("", &id), "lines": lines}),
                at,
            ));
        }
        findings.check("the fulfillment cannot be mapped")?;
        let ignored = || format!("order {order_id}: no successful fulfillment");
        if shipped.is_empty() {
            return Ok(Mapped::Ignored(ignored()));
        }
        let occurred =
            occurred.ok_or_else(|| Unmappable::new("created_at: the fulfillment has no timestamp"))?;
        let mut events = Events::new(Platform::Shopify, &native.event_id, order_id, occurred);
        for (data, at) in shipped {
            events.push_at(EventType::OrderShipped, data, at);
        }
        events.finish(ignored)
    }

    fn refund(&self, native: &Native, order: &OrderPlaced) -> Result<Mapped, Unmappable> {
        let refund = &native.payload;
        let order_id = order.order_id.as_str();
        let currency = order.currency;
        let refund_id = id_text(&refund["id"]).ok_or_else(|| Unmappable::new("id: the refund has no id"))?;
        let occurred = time(&refund["processed_at"])
            .or_else(|| time(&refund["created_at"]))
            .ok_or_else(|| Unmappable::new("created_at: not a timestamp"))?;
        let mut findings = Findings::default();
        // Goods back, and units cancelled before they shipped (line_no → quantity).
        let mut returned = Returned::default();
        let mut cancelled: BTreeMap<u32, u32> = BTreeMap::new();
        let mut store = None;
        for (i, item) in refund["refund_line_items"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("refund_line_items[{i}]");
            let line = id_text(&item["line_item_id"]).and_then(|id| order_line(&order.lines, &id));
            let Some(line) = line else {
                findings.add(format!(
                    "{at}.line_item_id: line item {} is not a line of order {order_id}",
                    item["line_item_id"]
                ));
                continue;
            };
            let Some(qty) = quantity(&item["quantity"]).filter(|q| *q > 0) else {
                findings.add(format!("{at}.quantity: not a whole number of units"));
                continue;
            };
            // Units refunded before they were fulfilled are cancelled, not returned: restocked as
            // `cancel`, or refunded without restocking (`no_restock`) from a line nothing of which was
            // fulfilled.
            let unfulfilled = item
                .pointer("/line_item/fulfillment_status")
                .is_some_and(Value::is_null);
            let restock = item["restock_type"].as_str();
            if restock == Some("cancel") || (restock == Some("no_restock") && unfulfilled) {
                *cancelled.entry(line.line_no).or_default() += qty;
                continue;
            }
            let Some(subtotal) = money(&item["subtotal"], currency) else {
                findings.add(format!("{at}.subtotal: not an amount in {currency}"));
                continue;
            };
            returned.add(line, qty, subtotal);
            if store.is_none() {
                store = id_text(&item["location_id"]).and_then(|l| self.locations.get(&l).cloned());
            }
        }
        findings.check("the refund cannot be mapped")?;
        let mut events = Events::new(Platform::Shopify, &native.event_id, order_id, occurred);
        if !cancelled.is_empty() {
            let lines = quantities(cancelled);
            events.push(
                EventType::OrderCancelled,
                json!({
                    "order_id": order_id,
                    "cancellation_id": id_from("refund-", &refund_id),
                    "lines": lines,
                    "reason": reason(&refund["note"], "refunded before shipment"),
                }),
            );
        }
        if !returned.is_empty() {
            let return_id = id_from(&self.return_id_prefix, &refund_id);
            let store = store.or_else(|| self.default_store.clone());
            let data = returned.return_received(&return_id, order_id, currency, store);
            events.push(EventType::ReturnReceived, data);
        }
        events.finish(|| {
            format!("refund {refund_id} of order {order_id} refunds no goods (shipping or an amount only)")
        })
    }

    fn cancelled(&self, native: &Native) -> Result<Mapped, Unmappable> {
        let order = &native.payload;
        let order_id = self
            .order_id(&order["id"])
            .ok_or_else(|| Unmappable::new("id: the order has no id"))?;
        let occurred = time(&order["cancelled_at"])
            .or_else(|| time(&order["updated_at"]))
            .ok_or_else(|| Unmappable::new("cancelled_at: not a timestamp"))?;
        let mut events = Events::new(Platform::Shopify, &native.event_id, &order_id, occurred);
        // Shopify cancels an order once: its cancellation needs no id of its own beyond the order's.
        events.push(
            EventType::OrderCancelled,
            json!({
                "order_id": order_id,
                "cancellation_id": "order-cancelled",
                "reason": reason(&order["cancel_reason"], "cancelled"),
            }),
        );
        events.finish(String::new)
    }

    fn customer(&self, native: &Native) -> Result<Mapped, Unmappable> {
        let customer = &native.payload;
        let customer_id = id_text(&customer["id"]).unwrap_or_default();
        let Some(member) = self.member_of_customer(customer) else {
            return Ok(Mapped::Ignored(format!(
                "customer {customer_id} is not a loyalty member (no member tag, no customer id rule)"
            )));
        };
        let occurred = time(&customer["updated_at"])
            .or_else(|| time(&customer["created_at"]))
            .ok_or_else(|| Unmappable::new("updated_at: not a timestamp"))?;
        // Payloads before API version 2025-01 carry the consent; later ones leave it to its own topic.
        let consent = match customer
            .pointer("/email_marketing_consent/state")
            .and_then(Value::as_str)
        {
            Some("subscribed") => Some(true),
            Some("not_subscribed" | "unsubscribed" | "redacted") => Some(false),
            _ => None,
        };
        let data = customer_updated(member, customer["email"].as_str(), consent);
        let correlation = id_from("shopify-customer-", &customer_id);
        let mut events = Events::new(Platform::Shopify, &native.event_id, &correlation, occurred);
        events.push(EventType::CustomerUpdated, data);
        events.finish(String::new)
    }
}

/// A note attribute's value (`[{"name": …, "value": …}]`).
fn note_attribute(order: &Value, name: &str) -> Option<String> {
    order["note_attributes"]
        .as_array()?
        .iter()
        .find(|a| a["name"].as_str() == Some(name))
        .and_then(|a| match &a["value"] {
            Value::String(s) => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .filter(|v| !v.is_empty())
}

/// A free-text reason, cut to the contract's 500 characters.
fn reason(v: &Value, default: &str) -> String {
    let text = v
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(default);
    text.chars().take(500).collect()
}

impl Mapper for ShopifyMapping {
    fn platform(&self) -> Platform {
        Platform::Shopify
    }

    fn parse(&self, body: &str) -> Result<Native, Unmappable> {
        let (detail_type, detail) = envelope(body)?;
        if detail_type != DETAIL_TYPE {
            return Err(Unmappable::new(format!(
                "expected an EventBridge event of detail-type {DETAIL_TYPE:?}, got {detail_type:?}"
            )));
        }
        let metadata = detail
            .get("metadata")
            .and_then(Value::as_object)
            .ok_or_else(|| Unmappable::new("detail.metadata (the webhook's headers) is missing"))?;
        let topic = header(metadata, "X-Shopify-Topic")
            .ok_or_else(|| Unmappable::new("detail.metadata has no X-Shopify-Topic"))?;
        // The id shared by every delivery of one merchant action: duplicates map to the same events.
        let event_id = header(metadata, "X-Shopify-Event-Id")
            .or_else(|| header(metadata, "X-Shopify-Webhook-Id"))
            .ok_or_else(|| Unmappable::new("detail.metadata has no X-Shopify-Event-Id"))?;
        // One merchant action (a cancellation with its refund) shares its Event-Id across topics: the
        // topic keeps their events apart.
        let event_id = format!("{}-{event_id}", topic.replace('/', "-"));
        let shop = header(metadata, "X-Shopify-Shop-Domain").map(str::to_owned);
        if !self.shops.is_empty() && !shop.as_ref().is_some_and(|s| self.shops.contains(s)) {
            let message = format!(
                "X-Shopify-Shop-Domain: shop {} is not one of the mapping's shops ({})",
                crate::named(shop.as_deref()),
                self.shops.join(", ")
            );
            return Err(Unmappable::new(message).of_event(&event_id, topic));
        }
        let payload = detail
            .get("payload")
            .filter(|p| p.is_object())
            .cloned()
            .ok_or_else(|| Unmappable::new("detail.payload (the resource) is missing"))?;
        Ok(Native {
            event_id,
            topic: topic.to_owned(),
            shop,
            payload,
        })
    }

    fn needs_order(&self, native: &Native) -> Result<Option<OrderId>, Unmappable> {
        let order_field = match native.topic.as_str() {
            "fulfillments/create" | "fulfillments/update" | "refunds/create" => "order_id",
            _ => return Ok(None),
        };
        let id = self
            .order_id(&native.payload[order_field])
            .filter(|id| is_id(id))
            .ok_or_else(|| Unmappable::new(format!("{order_field}: missing")))?;
        OrderId::parse(id)
            .map(Some)
            .map_err(|e| Unmappable::new(e.to_string()))
    }

    fn map(&self, native: &Native, order: Option<&OrderPlaced>) -> Result<Mapped, Unmappable> {
        match native.topic.as_str() {
            "orders/create" => self.order_placed(native),
            "orders/cancelled" => self.cancelled(native),
            "orders/fulfilled" => {
                let order = &native.payload;
                let order_id = self
                    .order_id(&order["id"])
                    .ok_or_else(|| Unmappable::new("id: the order has no id"))?;
                // The order's own lines give the line numbers, as `orders/create` numbered them.
                let ids: Vec<Option<String>> = order["line_items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|l| id_text(&l["id"]))
                    .collect();
                let line_no = |id: &str| {
                    ids.iter()
                        .position(|l| l.as_deref() == Some(id))
                        .and_then(|p| u32::try_from(p + 1).ok())
                };
                let empty = Vec::new();
                let fulfillments = order["fulfillments"].as_array().unwrap_or(&empty);
                self.shipments(native, &order_id, fulfillments, line_no)
            }
            // A fulfillment created pending and later successful is shipped by its update.
            "fulfillments/create" | "fulfillments/update" => {
                let order = order.ok_or_else(|| Unmappable::new("the fulfillment's order is needed"))?;
                let line_no = |id: &str| order_line(&order.lines, id).map(|l| l.line_no);
                self.shipments(
                    native,
                    order.order_id.as_str(),
                    std::slice::from_ref(&native.payload),
                    line_no,
                )
            }
            "refunds/create" => {
                let order = order.ok_or_else(|| Unmappable::new("the refund's order is needed"))?;
                self.refund(native, order)
            }
            "customers/update" => self.customer(native),
            other => Err(Unmappable::new(format!(
                "topic {other:?} is not mapped; subscribe to {}",
                TOPICS.join(", ")
            ))),
        }
    }
}
