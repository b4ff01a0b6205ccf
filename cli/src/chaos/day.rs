//! A generated trading day: the business facts (the plan the checker recomputes the books from) and the
//! inputs a channel would send for them, with duplicates, re-sent transactions and poison, shuffled.
//!
//! Amounts are whole currency units per unit (unit nets are multiples of 100 minor units, and of 1,000
//! on orders, whose redemptions are 10% or 20% of the net): every proration the rules do is then exact,
//! so the expected books do not depend on rounding, whatever the order of arrival. (Rounding itself is
//! property-tested in `shared/core/src/proration.rs`.)

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::input::{ApiCall, Input};

/// Opening balance of every generated member (outside the loyalty ledger): enough that no reversal is
/// ever cut short by a spent balance, so the books are exactly the rules' arithmetic.
pub const OPENING_BALANCE: i64 = 10_000_000;

#[derive(Debug, Clone)]
pub struct Line {
    pub no: u32,
    pub sku: String,
    pub quantity: u32,
    /// Net per unit, minor units.
    pub unit_net: i64,
    pub eligible: bool,
}

impl Line {
    pub fn net(&self) -> i64 {
        self.unit_net * i64::from(self.quantity)
    }
}

/// Units per line, by line number.
pub type Units = Vec<(u32, u32)>;

#[derive(Debug, Clone)]
pub struct ReturnPlan {
    pub id: String,
    pub lines: Units,
    /// Some line asks more units than were bought: refused (`over_return`) whenever it is processed.
    pub over: bool,
}

#[derive(Debug, Clone)]
pub struct Receipt {
    pub store: String,
    pub receipt: String,
    pub member: Option<String>,
    pub lines: Vec<Line>,
    pub returns: Vec<ReturnPlan>,
}

impl Receipt {
    /// The ERP refuses sales in `closed-` stores; loyalty does not know `unknown-` members.
    pub fn erp_refuses(&self) -> bool {
        self.store.starts_with("closed-")
    }

    pub fn loyalty_refuses(&self) -> bool {
        self.member.as_deref().is_some_and(|m| m.starts_with("unknown-"))
    }
}

#[derive(Debug, Clone)]
pub struct Redemption {
    pub hold_id: String,
    pub points: i64,
}

#[derive(Debug, Clone)]
pub struct Cancellation {
    pub id: String,
    /// `None`: the whole order.
    pub lines: Option<Units>,
}

#[derive(Debug, Clone)]
pub struct Order {
    pub id: String,
    pub member: String,
    pub lines: Vec<Line>,
    pub redemption: Option<Redemption>,
    pub shipments: Vec<(String, Units)>,
    pub cancellation: Option<Cancellation>,
    pub returns: Vec<ReturnPlan>,
}

impl Order {
    /// The ERP refuses orders whose id starts with `reject-`: their points are given back (compensated).
    pub fn erp_refuses(&self) -> bool {
        self.id.starts_with("reject-")
    }

    pub fn net(&self) -> i64 {
        self.lines.iter().map(Line::net).sum()
    }
}

/// Bad input, each piece recognisable by its marker in the quarantined body.
#[derive(Debug, Clone)]
pub struct Poison {
    pub marker: String,
    /// The reason ingest must give.
    pub reason: &'static str,
}

/// What happened in the day, as facts; the checker's only source.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub members: Vec<String>,
    pub receipts: Vec<Receipt>,
    pub orders: Vec<Order>,
    pub poison: Vec<Poison>,
    /// Checkouts whose hold was never used (it expires by itself).
    pub abandoned_holds: usize,
}

/// The plan and the day's inputs: the checkout API calls first (in order: a hold exists before the
/// order naming it), then every event, duplicated and shuffled.
pub struct Day {
    pub plan: Plan,
    pub inputs: Vec<Input>,
    /// Inbound events among `inputs` (duplicates and poison included).
    pub events: usize,
    pub duplicates: usize,
}

/// The mix of a generated day.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// Share of events delivered twice (the same event id).
    pub duplicate_rate: f64,
    /// Share of transactions whose facts are all sent again under new event ids.
    pub resend_rate: f64,
    pub poison_rate: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            duplicate_rate: 0.07,
            resend_rate: 0.03,
            poison_rate: 0.005,
        }
    }
}

struct Gen {
    rng: StdRng,
    events: Vec<Input>,
    api: Vec<Input>,
    seq: u64,
    holds: u64,
    /// Business time, seconds into the day.
    clock: i64,
}

const DAY: &str = "2026-11-20";

impl Gen {
    fn at(&self, offset: i64) -> String {
        let t = self.clock + offset;
        format!("{DAY}T{:02}:{:02}:{:02}Z", (t / 3600) % 24, (t / 60) % 60, t % 60)
    }

    fn event_id(&mut self) -> String {
        self.seq += 1;
        format!("ev-{:08}", self.seq)
    }

    /// One event, and its re-send under a new event id when the transaction is re-sent.
    fn emit(
        &mut self,
        source: &str,
        detail_type: &str,
        correlation: &str,
        offset: i64,
        data: Value,
        resend: bool,
    ) {
        let channel = source.trim_start_matches("retail.").to_owned();
        let occurred_at = self.at(offset);
        let copies = if resend { 2 } else { 1 };
        for _ in 0..copies {
            let detail = json!({
                "metadata": {
                    "event_id": self.event_id(),
                    "schema_version": 1,
                    "correlation_id": correlation,
                    "occurred_at": occurred_at,
                    "channel": channel,
                },
                "data": data,
            });
            self.events.push(Input::Event {
                source: source.to_owned(),
                detail_type: detail_type.to_owned(),
                detail,
            });
        }
    }

    fn lines(&mut self, max_quantity: u32, unit_step: i64, max_units: i64) -> Vec<Line> {
        let n = self.rng.random_range(1..=3);
        (1..=n)
            .map(|no| {
                let gift = self.rng.random_bool(0.08);
                Line {
                    no,
                    sku: if gift {
                        "GIFT-CARD".into()
                    } else {
                        format!("SKU-{:04}", self.rng.random_range(1..500))
                    },
                    quantity: self.rng.random_range(1..=max_quantity),
                    unit_net: unit_step * self.rng.random_range(1..=max_units),
                    eligible: !gift,
                }
            })
            .collect()
    }

    fn member(&mut self, members: &[String]) -> String {
        members[self.rng.random_range(0..members.len())].clone()
    }

    /// Some units of what was kept, as return lines: at least one unit, at most `left` per line.
    fn take_units(&mut self, left: &mut [(u32, u32)]) -> Units {
        let mut units = Vec::new();
        for (line, n) in left.iter_mut() {
            if *n > 0 && (units.is_empty() || self.rng.random_bool(0.5)) {
                let k = self.rng.random_range(1..=*n);
                *n -= k;
                units.push((*line, k));
            }
        }
        units
    }

    /// Partial and repeated returns of what was kept; `over_returns` adds, now and then, a return of
    /// more units than were bought (only where the sale is surely recorded when it is checked: an order's
    /// return of units not shipped yet waits instead).
    fn returns(&mut self, prefix: &str, kept: Units, lines: &[Line], over_returns: bool) -> Vec<ReturnPlan> {
        let mut returns = Vec::new();
        let mut left = kept;
        if left.iter().all(|(_, n)| *n == 0) {
            return returns;
        }
        if self.rng.random_bool(0.25) {
            let count = self.rng.random_range(1..=2);
            for j in 1..=count {
                if left.iter().all(|(_, n)| *n == 0) {
                    break;
                }
                let units = self.take_units(&mut left);
                returns.push(ReturnPlan {
                    id: format!("ret-{prefix}-{j}"),
                    lines: units,
                    over: false,
                });
            }
        }
        if over_returns && self.rng.random_bool(0.02) {
            let line = &lines[0];
            returns.push(ReturnPlan {
                id: format!("ret-{prefix}-over"),
                lines: vec![(line.no, line.quantity + 1)],
                over: true,
            });
        }
        returns
    }

    /// A ReturnReceived's data.
    fn return_data(original: Value, plan: &ReturnPlan, lines: &[Line], store: &str) -> Value {
        json!({
            "return_id": plan.id,
            "original": original,
            "store_id": store,
            "currency": "EUR",
            "lines": plan.lines.iter().map(|(no, q)| {
                let line = lines.iter().find(|l| l.no == *no).expect("a line of the transaction");
                // An over-return asks one unit more than bought, refunded at the unit price.
                json!({"line_no": no, "sku": line.sku, "quantity": q, "refund_minor": line.unit_net * i64::from(*q)})
            }).collect::<Vec<_>>(),
        })
    }

    fn receipt(&mut self, n: usize, members: &[String]) -> Receipt {
        let closed = self.rng.random_bool(0.02);
        let store = if closed {
            format!("closed-{:03}", n % 7)
        } else {
            format!("store-{:03}", self.rng.random_range(1..60))
        };
        let member = match self.rng.random_range(0..100) {
            0..=1 => Some(format!("unknown-{n}")),
            2..=21 => None,
            _ => Some(self.member(members)),
        };
        let lines = self.lines(3, 100, 200);
        let mut receipt = Receipt {
            store,
            receipt: format!("r-{n:07}"),
            member,
            lines,
            returns: Vec::new(),
        };
        // Returns only of sales both systems took: a refused sale is a person's matter.
        if !receipt.erp_refuses() && !receipt.loyalty_refuses() {
            let kept = receipt.lines.iter().map(|l| (l.no, l.quantity)).collect();
            receipt.returns = self.returns(&receipt.receipt, kept, &receipt.lines, true);
        }
        receipt
    }

    fn emit_receipt(&mut self, r: &Receipt, resend: bool) {
        let correlation = format!("pos-{}-{}", r.store, r.receipt);
        let net: i64 = r.lines.iter().map(Line::net).sum();
        let tax: i64 = r.lines.iter().map(|l| l.net() / 5).sum();
        let mut data = json!({
            "store_id": r.store,
            "receipt_id": r.receipt,
            "currency": "EUR",
            "lines": r.lines.iter().map(|l| json!({
                "line_no": l.no, "sku": l.sku, "quantity": l.quantity, "unit_price_minor": l.unit_net,
                "discount_minor": 0, "net_minor": l.net(), "tax_minor": l.net() / 5, "loyalty_eligible": l.eligible,
            })).collect::<Vec<_>>(),
            "totals": {"net_minor": net, "tax_minor": tax, "gross_minor": net + tax},
            "tenders": [{"method": "card", "amount_minor": net + tax}],
        });
        if let Some(m) = &r.member {
            data["member_id"] = json!(m);
        }
        self.emit("retail.pos", "SaleCompleted", &correlation, 0, data, resend);
        let original = json!({"kind": "receipt", "store_id": r.store, "receipt_id": r.receipt});
        for (j, ret) in r.returns.clone().iter().enumerate() {
            let offset = 600 + 60 * j as i64;
            let data = Self::return_data(original.clone(), ret, &r.lines, &r.store);
            self.emit("retail.pos", "ReturnReceived", &correlation, offset, data, resend);
        }
    }

    fn order(&mut self, n: usize, members: &[String]) -> Order {
        let reject = self.rng.random_bool(0.01);
        let id = if reject {
            format!("reject-{n:07}")
        } else {
            format!("web-{n:07}")
        };
        let member = self.member(members);
        let lines = self.lines(4, 1_000, 15);
        let net: i64 = lines.iter().map(Line::net).sum();
        // A redemption of 10% or 20% of the net (1 point = 1 cent): every line's share is exact.
        let redemption = (reject || self.rng.random_bool(0.3)).then(|| {
            self.holds += 1;
            let percent = if self.rng.random_bool(0.5) { 10 } else { 20 };
            Redemption {
                hold_id: format!("H-{:08}", self.holds),
                points: net * percent / 100,
            }
        });
        let mut order = Order {
            id,
            member,
            lines,
            redemption,
            shipments: Vec::new(),
            cancellation: None,
            returns: Vec::new(),
        };
        if reject {
            return order;
        }
        // Per line, the units that ship; with a cancellation the rest (and sometimes shipped units too:
        // the cancellation then races the shipment) is asked to be cancelled.
        let cancel = self.rng.random_bool(0.2);
        let whole = cancel && self.rng.random_bool(0.3);
        let mut shipped: Units = Vec::new();
        let mut asked: Units = Vec::new();
        for line in &order.lines {
            let ships = if cancel {
                self.rng.random_range(0..=line.quantity)
            } else {
                line.quantity
            };
            shipped.push((line.no, ships));
            let open = line.quantity - ships;
            let extra = if ships > 0 && self.rng.random_bool(0.3) {
                self.rng.random_range(1..=ships)
            } else {
                0
            };
            asked.push((line.no, open + extra));
        }
        if cancel {
            order.cancellation = Some(Cancellation {
                id: format!("cx-{}", order.id),
                lines: if whole {
                    None
                } else {
                    Some(asked.iter().copied().filter(|(_, q)| *q > 0).collect())
                },
            });
            if !whole
                && order
                    .cancellation
                    .as_ref()
                    .and_then(|c| c.lines.as_ref())
                    .is_some_and(Vec::is_empty)
            {
                order.cancellation = None;
            }
        }
        // Shipments: the shipped units in one to three parcels.
        let mut left = shipped.clone();
        let parcels = self.rng.random_range(1..=3);
        for j in 1..=parcels {
            let units: Units = if j == parcels {
                left.iter().copied().filter(|(_, q)| *q > 0).collect()
            } else {
                let mut units = Vec::new();
                for (no, q) in left.iter_mut() {
                    if *q > 0 && self.rng.random_bool(0.5) {
                        let k = self.rng.random_range(1..=*q);
                        *q -= k;
                        units.push((*no, k));
                    }
                }
                units
            };
            if j == parcels {
                left.iter_mut().for_each(|(_, q)| *q = 0);
            }
            if !units.is_empty() {
                order.shipments.push((format!("shp-{}-{j}", order.id), units));
            }
        }
        let prefix = order.id.clone();
        let lines = order.lines.clone();
        order.returns = self.returns(&prefix, shipped, &lines, false);
        order
    }

    fn emit_order(&mut self, o: &Order, resend: bool) {
        let correlation = o.id.clone();
        let net = o.net();
        let tax: i64 = o.lines.iter().map(|l| l.net() / 5).sum();
        let mut data = json!({
            "order_id": o.id,
            "member_id": o.member,
            "currency": "EUR",
            "lines": o.lines.iter().map(|l| json!({
                "line_no": l.no, "sku": l.sku, "quantity": l.quantity, "unit_price_minor": l.unit_net,
                "discount_minor": 0, "net_minor": l.net(), "tax_minor": l.net() / 5, "loyalty_eligible": l.eligible,
            })).collect::<Vec<_>>(),
            "totals": {"net_minor": net, "tax_minor": tax, "gross_minor": net + tax},
        });
        if let Some(r) = &o.redemption {
            data["redemption"] = json!({"hold_id": r.hold_id, "points": r.points, "value_minor": r.points});
        }
        self.emit("retail.ecommerce", "OrderPlaced", &correlation, 0, data, resend);
        for (j, (shipment, units)) in o.shipments.clone().iter().enumerate() {
            let data = json!({
                "order_id": o.id,
                "shipment_id": shipment,
                "lines": units.iter().map(|(no, q)| json!({"line_no": no, "quantity": q})).collect::<Vec<_>>(),
            });
            self.emit(
                "retail.oms",
                "OrderShipped",
                &correlation,
                3_600 * (j as i64 + 1),
                data,
                resend,
            );
        }
        if let Some(c) = &o.cancellation {
            let mut data = json!({"order_id": o.id, "cancellation_id": c.id, "reason": "customer_request"});
            if let Some(lines) = &c.lines {
                data["lines"] = json!(
                    lines
                        .iter()
                        .map(|(no, q)| json!({"line_no": no, "quantity": q}))
                        .collect::<Vec<_>>()
                );
            }
            self.emit("retail.oms", "OrderCancelled", &correlation, 1_800, data, resend);
        }
        let original = json!({"kind": "order", "order_id": o.id});
        for (j, ret) in o.returns.clone().iter().enumerate() {
            // Online, or bought online and returned in store.
            let (source, store) = if j % 2 == 0 {
                ("retail.ecommerce", "store-web")
            } else {
                ("retail.pos", "store-001")
            };
            let data = Self::return_data(original.clone(), ret, &o.lines, store);
            let offset = 86_400 / 4 + 60 * j as i64;
            self.emit(source, "ReturnReceived", &correlation, offset, data, resend);
        }
    }

    fn hold_call(&mut self, key: &str, member: &str, points: i64, basket_net: i64, ttl: Option<u64>) {
        let mut body =
            json!({"member_id": member, "points": points, "currency": "EUR", "basket_net_minor": basket_net});
        if let Some(ttl) = ttl {
            body["ttl_seconds"] = json!(ttl);
        }
        self.api.push(Input::Api(ApiCall {
            method: "POST".into(),
            path: "/v1/holds".into(),
            idempotency_key: Some(key.to_owned()),
            body: Some(body),
            client: None,
            member_id: None,
        }));
    }

    fn poison(&mut self, n: usize) -> Poison {
        let marker = format!("poison-{n:06}");
        let event_id = self.event_id();
        let meta = json!({"event_id": event_id, "schema_version": 1, "correlation_id": marker, "occurred_at": self.at(0), "channel": "pos"});
        let (input, reason) = match n % 5 {
            0 => (Input::Raw(format!("{{\"{marker}\": [1, 2")), "invalid_json"),
            1 => (
                Input::Raw(format!("{{\"note\": \"{marker}\"}}")),
                "not_an_envelope",
            ),
            2 => (
                Input::Event {
                    source: "retail.pos".into(),
                    detail_type: "SaleCompleted".into(),
                    detail: json!({"metadata": meta, "data": {"store_id": "store-001", "receipt_id": marker, "currency": "EUR",
                        "lines": [{"line_no": 1, "sku": "SKU-1", "quantity": -2, "unit_price_minor": 100, "discount_minor": 0,
                                   "net_minor": -200, "tax_minor": 0, "loyalty_eligible": true}],
                        "totals": {"net_minor": -200, "tax_minor": 0, "gross_minor": -200},
                        "tenders": [{"method": "card", "amount_minor": -200}]}}),
                },
                "schema_violation",
            ),
            3 => (
                Input::Event {
                    source: "retail.pos".into(),
                    detail_type: "SaleCompleted".into(),
                    detail: json!({"metadata": meta, "data": {"store_id": "store-001", "receipt_id": marker, "currency": "EUR",
                        "lines": [{"line_no": 1, "sku": "SKU-1", "quantity": 2, "unit_price_minor": 100, "discount_minor": 0,
                                   "net_minor": 200, "tax_minor": 40, "loyalty_eligible": true}],
                        "totals": {"net_minor": 999, "tax_minor": 40, "gross_minor": 1039},
                        "tenders": [{"method": "card", "amount_minor": 1039}]}}),
                },
                "business_rule_violation",
            ),
            _ => (
                Input::Event {
                    source: "retail.pos".into(),
                    detail_type: "SaleCompleted".into(),
                    detail: json!({"metadata": {"event_id": event_id, "schema_version": 7, "correlation_id": marker,
                        "occurred_at": self.at(0), "channel": "pos"}, "data": {}}),
                },
                "unknown_schema_version",
            ),
        };
        self.events.push(input);
        Poison { marker, reason }
    }
}

/// Generates a day of about `events` inbound events from `seed`: the same seed and size give the
/// same day, byte for byte.
pub fn generate(events: usize, seed: u64, mix: Mix) -> Day {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        events: Vec::new(),
        api: Vec::new(),
        seq: 0,
        holds: 0,
        clock: 8 * 3600,
    };
    // About one member per 50 events, at least 20: members come back during the day.
    let members: Vec<String> = (1..=(events / 50).max(20)).map(|i| format!("m-{i:05}")).collect();
    let mut plan = Plan {
        members: members.clone(),
        ..Plan::default()
    };
    // Every transaction's events, before duplicates; stop when the day is big enough.
    let target = (events as f64 / (1.0 + mix.duplicate_rate)).round() as usize;
    let mut n = 0;
    while g.events.len() < target {
        n += 1;
        g.clock = 8 * 3600 + (n as i64 * 7) % (6 * 3600);
        if mix.poison_rate > 0.0 && g.rng.random_bool(mix.poison_rate.min(1.0)) {
            let p = g.poison(n);
            plan.poison.push(p);
            continue;
        }
        let resend = g.rng.random_bool(mix.resend_rate.clamp(0.0, 1.0));
        if g.rng.random_bool(0.55) {
            let r = g.receipt(n, &members);
            g.emit_receipt(&r, resend);
            plan.receipts.push(r);
        } else {
            let o = g.order(n, &members);
            if let Some(r) = &o.redemption {
                g.hold_call(&format!("chk-{}", o.id), &o.member, r.points, o.net(), None);
            }
            g.emit_order(&o, resend);
            plan.orders.push(o);
            // Now and then a checkout is abandoned: its hold expires by itself after 60 s.
            if g.rng.random_bool(0.02) {
                g.holds += 1;
                let member = g.member(&members);
                g.hold_call(&format!("chk-abandoned-{n}"), &member, 100, 10_000, Some(60));
                plan.abandoned_holds += 1;
            }
        }
    }
    // Duplicate deliveries: the same event (same id) again.
    let originals = g.events.len();
    let mut duplicates = 0;
    for i in 0..originals {
        if g.rng.random_bool(mix.duplicate_rate.clamp(0.0, 1.0)) {
            let copy = g.events[i].clone();
            g.events.push(copy);
            duplicates += 1;
        }
    }
    let mut events = std::mem::take(&mut g.events);
    events.shuffle(&mut g.rng);
    let count = events.len();
    let mut inputs = std::mem::take(&mut g.api);
    inputs.extend(events);
    Day {
        plan,
        inputs,
        events: count,
        duplicates,
    }
}
