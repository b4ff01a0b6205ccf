//! What both platforms' mappings share: reading the payload's fields with findings instead of panics,
//! money in minor units, identifiers that fit the contract, and the canonical events' metadata.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use retail_sync_contracts::events::LineItem;
use retail_sync_contracts::values::Currency;
use retail_sync_contracts::{Event, EventType};

use crate::{Mapped, Platform, Unmappable};

/// The contract's identifier rule: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`.
pub(crate) fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `prefix` + `raw` when that is a valid identifier, else `prefix` + the first 128 bits of `raw`'s
/// SHA-256 in hex: a platform's id becomes a canonical one without two ids ever meeting.
pub(crate) fn id_from(prefix: &str, raw: &str) -> String {
    let plain = format!("{prefix}{raw}");
    if is_id(&plain) {
        return plain;
    }
    let digest = Sha256::digest(raw.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// One native EventBridge event, read once: its `detail-type` and its `detail` object.
pub(crate) fn envelope(body: &str) -> Result<(String, Map<String, Value>), Unmappable> {
    let mut event: Value =
        serde_json::from_str(body).map_err(|e| Unmappable::new(format!("the message is not JSON: {e}")))?;
    let detail_type = event
        .get("detail-type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match event.get_mut("detail").map(Value::take) {
        Some(Value::Object(detail)) => Ok((detail_type, detail)),
        _ => Err(Unmappable::new("the event has no detail object")),
    }
}

/// A platform id (a JSON number, or a string of one) as text; ids above 2^53 stay exact because JSON
/// numbers are read as integers, never floats.
pub(crate) fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}

/// A money field (a decimal string as Shopify writes it, or a JSON number as Adobe Commerce and Shopify's
/// refund lines do) in minor units of `currency`.
pub(crate) fn money(v: &Value, currency: Currency) -> Option<i64> {
    match v {
        Value::String(s) => currency.minor_units(s),
        Value::Number(n) => currency.minor_units(&n.to_string()),
        _ => None,
    }
}

/// A platform timestamp (RFC 3339, any offset).
pub(crate) fn time(v: &Value) -> Option<Timestamp> {
    v.as_str()?.trim().parse().ok()
}

/// A whole quantity of units.
pub(crate) fn quantity(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => {
            if let Some(q) = n.as_u64() {
                return u32::try_from(q).ok();
            }
            // Adobe Commerce writes quantities as decimals (`2.0000` in the database, `2` or `2.0` in JSON).
            let f = n.as_f64()?;
            (f >= 0.0 && f.fract() == 0.0 && f <= f64::from(u32::MAX)).then_some(f as u32)
        }
        Value::String(s) => {
            let t = s.trim();
            let t = t
                .split_once('.')
                .map_or(t, |(w, f)| if f.bytes().all(|b| b == b'0') { w } else { "x" });
            t.parse().ok()
        }
        _ => None,
    }
}

/// Findings collected while reading a payload: the mapping reports them all at once.
#[derive(Default)]
pub(crate) struct Findings(pub Vec<String>);

impl Findings {
    pub fn add(&mut self, finding: impl Into<String>) {
        if self.0.len() < 20 {
            self.0.push(finding.into());
        }
    }

    /// `Err` with every finding when there is one.
    pub fn check(self, message: impl Into<String>) -> Result<(), Unmappable> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Unmappable::with(message, self.0))
        }
    }
}

/// The canonical events one native event maps to, built with their metadata at the end: with one
/// event its id is the native event's, with several they are numbered in a fixed order.
pub(crate) struct Events {
    platform: Platform,
    base_id: String,
    correlation_id: String,
    occurred_at: Timestamp,
    pending: Vec<(EventType, Value, Timestamp)>,
}

impl Events {
    pub fn new(
        platform: Platform,
        native_event_id: &str,
        correlation_id: &str,
        occurred_at: Timestamp,
    ) -> Self {
        Self {
            platform,
            base_id: id_from(&format!("{}-", platform.name()), native_event_id),
            correlation_id: id_from("", correlation_id),
            occurred_at,
            pending: Vec::new(),
        }
    }

    pub fn push(&mut self, event_type: EventType, data: Value) {
        self.pending.push((event_type, data, self.occurred_at));
    }

    /// [`Events::push`] of an event with a business time of its own (one of several fulfillments).
    pub fn push_at(&mut self, event_type: EventType, data: Value, occurred_at: Timestamp) {
        self.pending.push((event_type, data, occurred_at));
    }

    /// The typed events (through the contract's own constructors, so a value the contract refuses is a
    /// finding here, before the bus); `ignored` when there are none.
    pub fn finish(self, ignored: impl FnOnce() -> String) -> Result<Mapped, Unmappable> {
        if self.pending.is_empty() {
            return Ok(Mapped::Ignored(ignored()));
        }
        let many = self.pending.len() > 1;
        let mut events = Vec::with_capacity(self.pending.len());
        let mut findings = Findings::default();
        for (n, (event_type, data, occurred_at)) in self.pending.into_iter().enumerate() {
            let event_id = if many {
                // 64 characters at most: the numbered id keeps the base's digest form when needed.
                id_from("", &format!("{}-{}", self.base_id, n + 1))
            } else {
                self.base_id.clone()
            };
            let detail = json!({
                "metadata": {
                    "event_id": event_id,
                    "schema_version": 1,
                    "correlation_id": self.correlation_id,
                    "occurred_at": occurred_at,
                    "channel": self.platform.channel(),
                },
                "data": data,
            });
            match Event::from_detail(event_type, detail) {
                Ok(event) => events.push(event),
                Err(e) => findings.add(format!("{}: {e}", event_type.name())),
            }
        }
        findings.check("the mapped event does not meet the canonical contract")?;
        Ok(Mapped::Events(events))
    }
}

/// One priced line of an order, as a platform gave it.
pub(crate) struct LineDraft {
    pub sku: String,
    pub quantity: u32,
    pub unit_minor: i64,
    pub discount_minor: i64,
    pub tax_minor: i64,
    pub earns: bool,
    pub channel_line_id: Option<String>,
}

/// An order's lines and totals in the canonical shape: net = quantity × unit − discount per line; the
/// totals are the lines' sums, gross = net + tax.
#[derive(Default)]
pub(crate) struct OrderDraft {
    lines: Vec<Value>,
    net: i64,
    tax: i64,
}

impl OrderDraft {
    pub fn push(&mut self, line_no: usize, line: LineDraft) {
        let net = i64::from(line.quantity)
            .saturating_mul(line.unit_minor)
            .saturating_sub(line.discount_minor);
        self.net = self.net.saturating_add(net);
        self.tax = self.tax.saturating_add(line.tax_minor);
        self.lines.push(json!({
            "line_no": line_no,
            "sku": line.sku,
            "quantity": line.quantity,
            "unit_price_minor": line.unit_minor,
            "discount_minor": line.discount_minor,
            "net_minor": net,
            "tax_minor": line.tax_minor,
            "loyalty_eligible": line.earns,
            "channel_line_id": line.channel_line_id,
        }));
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The `OrderPlaced` data: these lines and totals, the member and redemption when there are, and
    /// where the order is in its platform (`channel_order`).
    pub fn order_placed(
        self,
        order_id: &str,
        currency: Currency,
        member: Option<String>,
        redemption: Option<Value>,
        channel_order: Value,
    ) -> Value {
        let mut data = json!({
            "order_id": order_id,
            "currency": currency,
            "lines": self.lines,
            "totals": {"net_minor": self.net, "tax_minor": self.tax, "gross_minor": self.net.saturating_add(self.tax)},
            "channel_order": channel_order,
        });
        if let Some(member) = member {
            data["member_id"] = json!(member);
        }
        if let Some(redemption) = redemption {
            data["redemption"] = redemption;
        }
        data
    }
}

/// Units per order line (shipped, or cancelled), as `[{line_no, quantity}]` in line order.
pub(crate) fn quantities(units: BTreeMap<u32, u32>) -> Vec<Value> {
    units
        .into_iter()
        .map(|(line_no, quantity)| json!({"line_no": line_no, "quantity": quantity}))
        .collect()
}

/// Goods coming back, per order line: the SKU, the units and the refunded net.
#[derive(Default)]
pub(crate) struct Returned(BTreeMap<u32, (String, u32, i64)>);

impl Returned {
    pub fn add(&mut self, line: &LineItem, quantity: u32, refund_minor: i64) {
        let entry = self
            .0
            .entry(line.line_no)
            .or_insert_with(|| (line.sku.to_string(), 0, 0));
        entry.1 = entry.1.saturating_add(quantity);
        entry.2 = entry.2.saturating_add(refund_minor);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `ReturnReceived` data of these lines.
    pub fn return_received(
        self,
        return_id: &str,
        order_id: &str,
        currency: Currency,
        store: Option<String>,
    ) -> Value {
        let lines: Vec<Value> = self
            .0
            .into_iter()
            .map(|(no, (sku, q, refund))| json!({"line_no": no, "sku": sku, "quantity": q, "refund_minor": refund}))
            .collect();
        let mut data = json!({
            "return_id": return_id,
            "original": {"kind": "order", "order_id": order_id},
            "currency": currency,
            "lines": lines,
        });
        if let Some(store) = store {
            data["store_id"] = json!(store);
        }
        data
    }
}

/// The `CustomerUpdated` data of a member: the e-mail and the marketing consent when the payload says.
pub(crate) fn customer_updated(member: String, email: Option<&str>, consent: Option<bool>) -> Value {
    let mut data = json!({"member_id": member});
    if let Some(email) = email.filter(|e| !e.is_empty()) {
        data["email"] = json!(email);
    }
    if let Some(consent) = consent {
        data["marketing_consent"] = json!(consent);
    }
    data
}

/// A follow-up's line of the accepted order, found by the platform's own line id.
pub(crate) fn order_line<'a>(lines: &'a [LineItem], channel_line_id: &str) -> Option<&'a LineItem> {
    lines.iter().find(|l| {
        l.channel_line_id
            .as_ref()
            .is_some_and(|id| id.as_str() == channel_line_id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_ids_become_contract_ids_without_colliding() {
        assert_eq!(
            id_from("shopify-", "59d6d79c-595f-4e7e"),
            "shopify-59d6d79c-595f-4e7e"
        );
        let long = id_from("x-", &"9".repeat(80));
        assert!(is_id(&long) && long.len() == 34, "{long}");
        assert_ne!(id_from("x-", "a b"), id_from("x-", "a/b"));
    }

    #[test]
    fn money_and_quantities_read_both_platforms_spellings() {
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(money(&json!("159.99"), eur), Some(15_999));
        assert_eq!(money(&json!(159.99), eur), Some(15_999));
        assert_eq!(money(&json!(0.0), eur), Some(0));
        assert_eq!(money(&json!("1.005"), eur), None);
        assert_eq!(money(&json!(null), eur), None);
        assert_eq!(quantity(&json!(2)), Some(2));
        assert_eq!(quantity(&json!(2.0)), Some(2));
        assert_eq!(quantity(&json!("3.0000")), Some(3));
        assert_eq!(quantity(&json!(1.5)), None);
        assert_eq!(quantity(&json!(-1)), None);
        assert_eq!(
            id_text(&json!(820982911946154508_u64)).as_deref(),
            Some("820982911946154508")
        );
        assert_eq!(id_text(&json!(1.5)), None);
    }
}
