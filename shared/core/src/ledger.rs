//! What the ERP and the loyalty platform hold for one business transaction, as far as retail-sync knows
//! (the saga's ledger), and the rules that guard follow-ups against it: a shipment or cancellation may
//! not exceed the open units, a return may not exceed what the customer kept, and points reversed or
//! re-credited are computed on cumulative values (see [`crate::proration`]) so that partial events that
//! add up to the whole move exactly the whole.
//!
//! Every entry is written to the saga *before* its remote call (a reservation), under the saga's
//! versioned write: two follow-ups of one transaction processed at once cannot both pass a check that
//! only one of them fits, and a redelivery finds its entry and reuses its figures.
//!
//! Shipments and cancellations race (they travel on different queues, and the OMS may ship a unit the
//! customer is cancelling at that moment), so the books are defined by facts, not arrival: a shipment is
//! the fulfilment authority's word that units left and always stands; a cancellation cancels the units
//! that are not shipped. A shipment of units a confirmed cancellation had claimed *reinstates* them (the
//! ERP charges them again and the redeemed points the cancellation gave back for them are taken back);
//! a cancellation processed after a shipment simply finds fewer units open. Either way, per line,
//! `cancelled = min(requested, ordered − shipped)`.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use retail_sync_contracts::events::{LineQuantity, ReasonCode, ReturnLine};
use retail_sync_contracts::values::*;
use retail_sync_contracts::{Event, LineItem, TenderMethod};

use crate::idempotency::Fingerprint;
use crate::ports::AdjustmentKind;
use crate::proration::{allocate, due, share, share_up, units_value};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erp_document_id: Option<ExternalRef>,
    /// The accrual of a POS sale (orders accrue per shipment, see `shipments`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loyalty_transaction_id: Option<ExternalRef>,
    /// Points earned in total (a sale's accrual, or the sum of an order's shipments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_accrued: Option<Points>,
    /// The eligible value those points were earned on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eligible_minor: Option<Amount>,
    /// Points redeemed at checkout and committed to the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redemption: Option<RedemptionEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shipments: Vec<ShipmentEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancellations: Vec<CancellationEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub returns: Vec<ReturnEntry>,
    /// Follow-ups refused for good, so that a duplicate of one is the same refusal whatever happened
    /// since (see `steps::reserve`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<RefusalEntry>,
    /// Accruals the loyalty platform holds pending until their return window ends (see `settlement`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingEntry>,
    /// A POS sale paid partly with points ([`Basis::points_tendered`]): the tendered points given back so
    /// far by returns (an order's are counted on its `redemption`).
    #[serde(default, skip_serializing_if = "Points::is_zero")]
    pub tender_recredited: Points,
    /// Refunds the payment side settled (`RefundSettled`): the points they paid decide what is given
    /// back for their returns (see [`Ledger::decide_refund`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refunds: Vec<RefundEntry>,
}

/// A settled refund and what it changed in the points given back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundEntry {
    pub refund_id: RefundId,
    pub return_id: ReturnId,
    /// The points its `points` tenders paid.
    pub points: Points,
    /// The settlement's business time: every request about the refund carries it.
    pub occurred_at: Timestamp,
    /// Decided with the entry, one of the two zero: redeemed or tendered points to give back, or to take
    /// back (the return's share was given back already and the refund paid fewer points).
    pub give_back: Points,
    pub take_back: Points,
    /// What the platform applied in the decided direction, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Points>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loyalty_transaction_id: Option<ExternalRef>,
}

/// An accrual whose points wait for the return window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingEntry {
    pub loyalty_transaction_id: ExternalRef,
    pub points: Points,
    /// The end of the return window: `confirm-points` confirms after it.
    pub until: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<Timestamp>,
    /// What the confirmation made spendable (less than `points` when returns cancelled some).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_confirmed: Option<Points>,
}

/// A follow-up refused for good: what it was (`follow_up`, e.g. `return ret-1`), the fingerprint of its
/// content, and the refusal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefusalEntry {
    pub follow_up: String,
    pub fingerprint: Fingerprint,
    pub reason: ReasonCode,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedemptionEntry {
    pub hold_id: HoldId,
    pub points: Points,
    pub value_minor: Amount,
    pub loyalty_transaction_id: ExternalRef,
    /// Redeemed points given back so far (cancellations, returns, compensation).
    #[serde(default)]
    pub points_recredited: Points,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentEntry {
    pub shipment_id: ShipmentId,
    pub lines: Vec<LineQuantity>,
    /// Eligible value of the shipped units.
    pub eligible_minor: Amount,
    /// Set once the accrual is done (0 for an anonymous order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<Points>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loyalty_transaction_id: Option<ExternalRef>,
    /// Units of this shipment that confirmed cancellations had claimed: the shipment proves they left,
    /// so they are reinstated (see the module doc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reinstatement: Option<Reinstatement>,
    /// Decided with the accrual when returns of the order were decided before it: what brings the
    /// earned points reversed to their share of everything earned now (see [`Ledger::decide_correction`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<ReversalCorrection>,
}

/// A later shipment's correction of the earned points its order's returns reversed: more taken back
/// (`Reversal`) or some given back (`Restore`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReversalCorrection {
    pub kind: AdjustmentKind,
    /// Decided; always more than 0.
    pub points: Points,
    /// The business time of the shipment that decided it: every request about the correction carries
    /// it, so a shipment re-sent under another event id sends the same request.
    pub occurred_at: Timestamp,
    /// What the platform applied, once done (a reversal may take less: the member spent the points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Points>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loyalty_transaction_id: Option<ExternalRef>,
}

impl ReversalCorrection {
    /// Its signed effect on the points reversed: what was applied, or what was decided until then.
    fn reversed(&self) -> i64 {
        let p = self.applied.unwrap_or(self.points).get();
        if self.kind == AdjustmentKind::Restore {
            -p
        } else {
            p
        }
    }
}

/// Cancelled units a shipment reinstates: charged again in the ERP, and the redeemed points their
/// cancellation gave back taken back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reinstatement {
    /// The units, by the cancellation they are taken back from, with their net value.
    pub parts: Vec<ReinstatedPart>,
    /// The shipment's business time: every request about the reinstatement carries it, so a shipment
    /// re-sent under another event id sends the same requests.
    pub occurred_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erp_document_id: Option<ExternalRef>,
    /// Set with the ERP's document: the redeemed points to take back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_taken_back: Option<Points>,
    /// What the loyalty platform took back (it takes what the member has available).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_taken: Option<Points>,
}

/// Units of one line taken back from one cancellation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReinstatedPart {
    pub cancellation_id: CancellationId,
    pub line_no: u32,
    pub quantity: u32,
    pub net_minor: Amount,
}

impl Reinstatement {
    /// The units per line, as the ERP receives them.
    pub fn lines(&self) -> Vec<LineQuantity> {
        let mut lines: Vec<LineQuantity> = Vec::new();
        for p in &self.parts {
            match lines.iter_mut().find(|l| l.line_no == p.line_no) {
                Some(l) => l.quantity += p.quantity,
                None => lines.push(LineQuantity {
                    line_no: p.line_no,
                    quantity: p.quantity,
                }),
            }
        }
        lines
    }

    /// The cancellations the units are taken back from, each once.
    pub fn cancellation_ids(&self) -> Vec<CancellationId> {
        let mut ids: Vec<CancellationId> = Vec::new();
        for p in &self.parts {
            if !ids.contains(&p.cancellation_id) {
                ids.push(p.cancellation_id.clone());
            }
        }
        ids
    }

    /// Net value of the units: what the cancellations had credited for them.
    pub fn net_minor(&self) -> Amount {
        Amount::saturating_sum(self.parts.iter().map(|p| p.net_minor))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancellationEntry {
    pub cancellation_id: CancellationId,
    /// The units cancelled when it was decided (a requested unit that had shipped is not among them).
    pub lines: Vec<LineQuantity>,
    /// Net value of the cancelled units.
    pub net_minor: Amount,
    /// Business time of the cancellation: a shipment reinstates units from the latest one first. (The
    /// units shipments took back from it are on their `reinstatement`, see [`Ledger::held`].)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erp_document_id: Option<ExternalRef>,
    /// Set with the ERP's document: the redeemed points this cancellation gave back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_recredited: Option<Points>,
    /// The ERP refused it: its units are open again (kept, so a redelivery finds it decided).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}

impl CancellationEntry {
    fn confirmed(&self) -> bool {
        self.erp_document_id.is_some() && !self.refused
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnStatus {
    /// Checked and counted; being posted.
    Reserved,
    Posted,
    /// The ERP refused it; its units count as kept again.
    Refused,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReturnEntry {
    pub return_id: ReturnId,
    pub lines: Vec<ReturnLine>,
    /// Net and eligible value of the returned units, and what the channel refunded.
    pub net_minor: Amount,
    pub eligible_minor: Amount,
    pub refund_minor: Amount,
    pub status: ReturnStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erp_document_id: Option<ExternalRef>,
    /// Set when the loyalty side of the return is decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_reversed: Option<Points>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_recredited: Option<Points>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loyalty_transaction_id: Option<ExternalRef>,
    /// Of the points reversed, those the platform took from pending points (a return inside the return
    /// window) rather than from the member's spendable balance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_pending_cancelled: Option<Points>,
}

/// One line of the original transaction with the values follow-ups are prorated on.
#[derive(Debug, Clone, PartialEq)]
pub struct LineBasis {
    pub line_no: u32,
    pub sku: Sku,
    pub quantity: u32,
    pub net_minor: i64,
    /// Net less the line's share of the points redeemed; 0 for lines that do not earn.
    pub eligible_minor: i64,
}

/// The original transaction as follow-ups see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Basis {
    pub is_order: bool,
    pub member_id: Option<MemberId>,
    pub currency: Currency,
    pub lines: Vec<LineBasis>,
    pub net_minor: i64,
    /// A POS sale's `points` tenders that say how many points they were: given back on returns as an
    /// order's redeemed points are (see `Ledger::recredit_due`).
    pub points_tendered: Option<Points>,
    /// A POS sale has a `points` tender that does not say how many points it was: what was paid with
    /// points is not known, so refunds' points are not capped by it.
    pub points_uncounted: bool,
}

/// Why a follow-up cannot be applied (yet).
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// Never: the findings say why (more units than open or kept, unknown line, …).
    Refuse(Vec<String>),
    /// Not yet: something it depends on has not been processed (a shipment behind a return).
    Wait(String),
}

impl Basis {
    /// From the event that started the saga; `None` for types that do not start one.
    pub fn of(origin: &Event) -> Option<Self> {
        let (is_order, member_id, currency, lines, points_value) = match origin {
            Event::SaleCompleted(d) => {
                let paid_with_points: i64 = d
                    .data
                    .tenders
                    .iter()
                    .filter(|t| t.method == TenderMethod::Points)
                    .map(|t| t.amount_minor.get())
                    .sum();
                (
                    false,
                    &d.data.member_id,
                    d.data.currency,
                    &d.data.lines,
                    paid_with_points,
                )
            }
            Event::OrderPlaced(d) => {
                let value = d.data.redemption.as_ref().map_or(0, |r| r.value_minor.get());
                (true, &d.data.member_id, d.data.currency, &d.data.lines, value)
            }
            _ => return None,
        };
        let mut basis = Self::new(is_order, member_id.clone(), currency, lines, points_value);
        if let Event::SaleCompleted(d) = origin {
            let tendered: Vec<Points> = d
                .data
                .tenders
                .iter()
                .filter(|t| t.method == TenderMethod::Points)
                .filter_map(|t| t.points)
                .collect();
            if !tendered.is_empty() {
                basis.points_tendered = Some(Points::saturating_sum(tendered));
            }
            basis.points_uncounted = d
                .data
                .tenders
                .iter()
                .any(|t| t.method == TenderMethod::Points && t.points.is_none());
        }
        Some(basis)
    }

    /// Points do not earn points. The value paid with them is a basket-level tender, spread over *every*
    /// line in proportion to its net (as ERPs and order systems allocate a header-level discount to the
    /// lines, and as the tax base of each line is reduced); an eligible line's eligible value is its net
    /// less its share, a line that does not earn (a gift card) has none, whatever share it carries.
    pub fn new(
        is_order: bool,
        member_id: Option<MemberId>,
        currency: Currency,
        lines: &[LineItem],
        points_value: i64,
    ) -> Self {
        let eligible = eligible_by_line(lines, points_value);
        let lines: Vec<LineBasis> = lines
            .iter()
            .zip(eligible)
            .map(|(l, eligible_minor)| LineBasis {
                line_no: l.line_no,
                sku: l.sku.clone(),
                quantity: l.quantity,
                net_minor: l.net_minor.get(),
                eligible_minor,
            })
            .collect();
        Self {
            is_order,
            member_id,
            currency,
            net_minor: lines.iter().map(|l| l.net_minor).sum(),
            lines,
            points_tendered: None,
            points_uncounted: false,
        }
    }

    /// Total eligible value of the transaction.
    pub fn eligible_minor(&self) -> i64 {
        self.lines.iter().map(|l| l.eligible_minor).sum()
    }

    fn line(&self, line_no: u32) -> Option<&LineBasis> {
        self.lines.iter().find(|l| l.line_no == line_no)
    }

    /// The units a cancellation takes and their net value: of each line it names (every line when
    /// `lines` is absent), as many of the requested units as are open — neither shipped nor cancelled
    /// already (a unit that shipped is not cancelled: the goods left). The result may be empty. Only a
    /// line the order does not have, or more units than it ordered, is refused. Cancelled units are taken
    /// from the top of each line (shipments from the bottom), so the two never overlap.
    pub fn cancellation(
        &self,
        ledger: &Ledger,
        lines: Option<&[LineQuantity]>,
    ) -> Result<(Vec<LineQuantity>, Amount), Check> {
        let requested: Vec<LineQuantity> = match lines {
            Some(lines) => merged(lines),
            None => self
                .lines
                .iter()
                .map(|l| LineQuantity {
                    line_no: l.line_no,
                    quantity: l.quantity,
                })
                .collect(),
        };
        let mut findings = Vec::new();
        let mut taken: Vec<LineQuantity> = Vec::new();
        let mut net = 0;
        for q in &requested {
            let Some(line) = self.line(q.line_no) else {
                findings.push(format!("line {} is not on the order", q.line_no));
                continue;
            };
            if q.quantity > line.quantity {
                findings.push(format!(
                    "line {}: {} cancelled but the order has {}",
                    q.line_no, q.quantity, line.quantity
                ));
                continue;
            }
            if ledger.cancellation_pending(q.line_no) {
                // Another cancellation holds units of this line and the ERP has not answered it: if it
                // refuses, they are open again, and this one must take them (when it asks for more than
                // is open) and be valued from the top without them. Taken before the answer, the
                // units and their value would follow arrival.
                return Err(Check::Wait(format!(
                    "line {}: a cancellation is pending",
                    q.line_no
                )));
            }
            // Each line is requested once (`merged`), so nothing taken yet counts here.
            let cancelled = ledger.cancelled(q.line_no);
            let open = line
                .quantity
                .saturating_sub(ledger.shipped(q.line_no))
                .saturating_sub(cancelled);
            let n = q.quantity.min(open);
            if n == 0 {
                continue;
            }
            let top = line.quantity - cancelled;
            net += units_value(line.net_minor, line.quantity, top - n, top);
            taken.push(LineQuantity {
                line_no: q.line_no,
                quantity: n,
            });
        }
        if findings.is_empty() {
            Ok((taken, amount(net)))
        } else {
            Err(Check::Refuse(findings))
        }
    }

    /// Checks a return against what the customer kept, and values its units: (net, eligible).
    /// Units of an order that are not shipped yet (as far as retail-sync has processed; cancelled units
    /// included) make it wait; more units than were bought, a wrong SKU or a refund above the units'
    /// value refuse it, and so does a return in another currency than the original's (its refund
    /// would be booked in a currency the sale never had).
    pub fn check_return(
        &self,
        ledger: &Ledger,
        currency: Currency,
        lines: &[ReturnLine],
    ) -> Result<(Amount, Amount), Check> {
        let mut findings = Vec::new();
        if currency != self.currency {
            findings.push(format!(
                "the return is in {currency}, the original transaction in {}",
                self.currency
            ));
        }
        let mut wait = None;
        let (mut net, mut eligible) = (0, 0);
        for (i, r) in lines.iter().enumerate() {
            let Some(line) = self.line(r.line_no) else {
                findings.push(format!("line {} is not on the original transaction", r.line_no));
                continue;
            };
            if r.sku != line.sku {
                findings.push(format!(
                    "line {}: sku {} returned, {} was bought",
                    r.line_no, r.sku, line.sku
                ));
            }
            // Two bounds on the refund, both independent of the order returns come in: this return's
            // units can be worth at most their share of the line rounded up (whichever units they are
            // taken to be), and the line's refunds together at most its net (below). A bound on the
            // refunds so far against the units so far (a cumulative floor) refused a 1,999 refund of one
            // unit of 3 × 5,996 when it came first and accepted it when it came second. The first bound
            // depends on this return alone, so it refuses before anything makes the return wait: a
            // return that can never pass is refused now, not dead-lettered after its retries.
            let refund = r.refund_minor.get();
            let most = share_up(line.net_minor, i64::from(r.quantity), i64::from(line.quantity));
            if refund > most {
                findings.push(format!(
                    "line {}: refund {refund} exceeds {most}, the net value of {} of its {} units",
                    r.line_no, r.quantity, line.quantity
                ));
            }
            // Earlier lines of this return naming the same line count with it.
            let earlier = lines[..i].iter().filter(|o| o.line_no == r.line_no);
            let returned = ledger.returned(r.line_no) + earlier.clone().map(|o| o.quantity).sum::<u32>();
            // Cancelled units of an order are not "not bought" for good: a shipment may still prove they
            // left (reinstatement), so a return of them waits for the shipment like any unit not shipped
            // yet, and only more units than were ordered are refused.
            let bought = line.quantity;
            let received = if self.is_order {
                ledger.shipped_done(r.line_no)
            } else {
                line.quantity
            };
            let after = returned + r.quantity;
            // Units of returns the ERP has not answered yet (reserved, not posted): if it refuses one,
            // its units are kept again.
            let pending = ledger.returned(r.line_no) - ledger.returned_posted(r.line_no);
            if after - pending > bought {
                findings.push(format!(
                    "line {}: {} returned but only {} of {bought} bought are not returned yet",
                    r.line_no,
                    r.quantity,
                    bought.saturating_sub(returned)
                ));
                continue;
            }
            if pending > 0 {
                // Too many only with the pending units, or valued on top of them: were that return
                // refused, these units would be returnable after all, or would have been valued as the
                // ones above it. Waiting for the answer keeps both independent of arrival.
                wait = Some(format!(
                    "line {}: another return of this line is pending",
                    r.line_no
                ));
                continue;
            }
            if after > received {
                wait = Some(format!(
                    "line {}: {after} units returned, {received} shipped so far",
                    r.line_no
                ));
                continue;
            }
            let refunded =
                ledger.refunded(r.line_no) + earlier.map(|o| o.refund_minor.get()).sum::<i64>() + refund;
            if refunded > line.net_minor {
                findings.push(format!(
                    "line {}: refunds of {refunded} exceed the line's net value {}",
                    r.line_no, line.net_minor
                ));
            }
            net += units_value(line.net_minor, line.quantity, returned, after);
            eligible += units_value(line.eligible_minor, line.quantity, returned, after);
        }
        if !findings.is_empty() {
            return Err(Check::Refuse(findings));
        }
        if let Some(message) = wait {
            return Err(Check::Wait(message));
        }
        Ok((amount(net), amount(eligible)))
    }
}

impl RefundEntry {
    /// Which way the refund moves points, and how many: a re-credit of what it gives back, or a reversal
    /// of what it takes back (one of the two is zero; with both zero, a re-credit of none).
    pub fn movement(&self) -> (AdjustmentKind, Points) {
        if self.take_back.is_zero() {
            (AdjustmentKind::Recredit, self.give_back)
        } else {
            (AdjustmentKind::Reversal, self.take_back)
        }
    }
}

/// A `RefundSettled` as the ledger decides it.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundSettlement {
    pub refund_id: RefundId,
    pub return_id: ReturnId,
    pub currency: Currency,
    pub points: Points,
    pub occurred_at: Timestamp,
}

/// The follow-up whose give-back is being decided (cancellation and return ids are separate spaces).
#[derive(Clone, Copy, PartialEq)]
enum Deciding<'a> {
    Cancellation(&'a CancellationId),
    Return(&'a ReturnId),
}

/// `lines` with each line once, its quantities added up, in the order lines first appear: an event
/// that names a line twice asks for the sum of its units (a cancellation of 2 + 2 of a 3-unit line asks
/// for 4, and is refused).
fn merged(lines: &[LineQuantity]) -> Vec<LineQuantity> {
    let mut out: Vec<LineQuantity> = Vec::with_capacity(lines.len());
    for q in lines {
        match out.iter_mut().find(|o| o.line_no == q.line_no) {
            Some(o) => o.quantity = o.quantity.saturating_add(q.quantity),
            None => out.push(q.clone()),
        }
    }
    out
}

/// Each line's eligible value: its net less its share of `points_value` (spread over every line by net),
/// 0 for lines that do not earn. The one place the rule "points do not earn points" is computed.
pub fn eligible_by_line(lines: &[LineItem], points_value: i64) -> Vec<i64> {
    let nets: Vec<i64> = lines.iter().map(|l| l.net_minor.get()).collect();
    let total: i64 = nets.iter().sum();
    let shares = allocate(points_value.clamp(0, total.max(0)), &nets);
    lines
        .iter()
        .zip(nets.iter().zip(shares))
        .map(|(l, (net, share))| if l.loyalty_eligible { net - share } else { 0 })
        .collect()
}

/// A figure `proration` computed (exact integer shares of a value that is itself in range), typed
/// again; the clamp keeps a bug from becoming a panic that would fail a whole batch.
fn amount(v: i64) -> Amount {
    Amount::new(v.clamp(0, MAX_SAFE_INTEGER)).unwrap_or(Amount::ZERO)
}

/// As [`amount`], for points.
fn points(v: i64) -> Points {
    Points::new(v.clamp(0, MAX_SAFE_INTEGER)).unwrap_or(Points::ZERO)
}

impl Ledger {
    /// Units of a line shipped (reserved or accrued).
    pub fn shipped(&self, line_no: u32) -> u32 {
        quantity(self.shipments.iter().flat_map(|s| &s.lines), line_no)
    }

    /// Units of a line whose shipment is fully processed (accrued).
    pub fn shipped_done(&self, line_no: u32) -> u32 {
        quantity(
            self.shipments
                .iter()
                .filter(|s| s.points.is_some())
                .flat_map(|s| &s.lines),
            line_no,
        )
    }

    /// Units of a line cancelled, or being cancelled (refused cancellations and reinstated units do not
    /// count).
    pub fn cancelled(&self, line_no: u32) -> u32 {
        self.cancellations.iter().map(|c| self.held(c, line_no)).sum()
    }

    /// The parts of the shipments' reinstatements, each with its shipment.
    fn reinstated_parts(&self) -> impl Iterator<Item = &ReinstatedPart> {
        self.shipments
            .iter()
            .filter_map(|s| s.reinstatement.as_ref())
            .flat_map(|r| &r.parts)
    }

    /// Units of a line a cancellation holds now: what it took less what shipments reinstated from it (0
    /// for a refused one).
    pub fn held(&self, c: &CancellationEntry, line_no: u32) -> u32 {
        if c.refused {
            return 0;
        }
        let reinstated: u32 = self
            .reinstated_parts()
            .filter(|p| p.cancellation_id == c.cancellation_id && p.line_no == line_no)
            .map(|p| p.quantity)
            .sum();
        quantity(c.lines.iter(), line_no).saturating_sub(reinstated)
    }

    /// Net value of the units a cancellation holds now.
    fn net_held(&self, c: &CancellationEntry) -> Amount {
        let reinstated = Amount::saturating_sum(
            self.reinstated_parts()
                .filter(|p| p.cancellation_id == c.cancellation_id)
                .map(|p| p.net_minor),
        );
        c.net_minor.saturating_sub(reinstated)
    }

    /// A cancellation the ERP has not answered yet holds units of the line: whatever would take them
    /// waits, since a refusal opens them again.
    fn cancellation_pending(&self, line_no: u32) -> bool {
        self.cancellations
            .iter()
            .any(|c| !c.confirmed() && self.held(c, line_no) > 0)
    }

    /// Checks a return ([`Basis::check_return`]) and reserves its units, in one step under the saga's
    /// versioned write: they count as returned from now on, `Reserved` until the ERP answers. Returns the
    /// entry.
    pub fn reserve_return(
        &mut self,
        basis: &Basis,
        return_id: &ReturnId,
        currency: Currency,
        lines: &[ReturnLine],
        refund_minor: Amount,
    ) -> Result<ReturnEntry, Check> {
        let (net_minor, eligible_minor) = basis.check_return(self, currency, lines)?;
        let entry = ReturnEntry {
            return_id: return_id.clone(),
            lines: lines.to_vec(),
            net_minor,
            eligible_minor,
            refund_minor,
            status: ReturnStatus::Reserved,
            erp_document_id: None,
            points_reversed: None,
            points_recredited: None,
            loyalty_transaction_id: None,
            points_pending_cancelled: None,
        };
        self.returns.push(entry.clone());
        Ok(entry)
    }

    /// Checks a shipment and reserves its units, in one step under the saga's versioned write. A shipment
    /// of more units than the line has, less what other shipments took, is refused (two shipments of the
    /// same units cannot both be true: a person decides). Units that cancellations hold are reinstated
    /// from the cancellation latest in business time first (`occurred_at`, then the greater id); while a
    /// cancellation of such a line is not confirmed by the ERP yet, the shipment waits. Returns the entry.
    pub fn reserve_shipment(
        &mut self,
        basis: &Basis,
        shipment_id: &ShipmentId,
        lines: &[LineQuantity],
        occurred_at: Timestamp,
    ) -> Result<ShipmentEntry, Check> {
        let mut findings = Vec::new();
        let mut eligible = 0;
        // (line, units to reinstate) once every line is checked.
        let mut overlaps: Vec<(&LineBasis, u32)> = Vec::new();
        // A line named twice is shipped as one: its units earn on their sum, rounded down once.
        let merged = merged(lines);
        for q in &merged {
            let Some(line) = basis.line(q.line_no) else {
                findings.push(format!("line {} is not on the order", q.line_no));
                continue;
            };
            let before = self.shipped(q.line_no);
            if before + q.quantity > line.quantity {
                findings.push(format!(
                    "line {}: {} more shipped but only {} of {} are not shipped yet",
                    q.line_no,
                    q.quantity,
                    line.quantity.saturating_sub(before),
                    line.quantity
                ));
                continue;
            }
            let overlap = (before + q.quantity + self.cancelled(q.line_no)).saturating_sub(line.quantity);
            if overlap > 0 {
                overlaps.push((line, overlap));
            }
            // What the units earn on is their share of the line's eligible value rounded down, the same
            // whichever shipment is processed first: the platform rounds each accrual down to whole
            // points, so valuing them by their place in the line (the first units shipped, a cumulative
            // share) made the points earned follow arrival (a line of 2 units of 19,999: 9,999 or 10,000
            // for the first shipment). A line split over shipments may leave a few minor units unearned.
            eligible += share(
                line.eligible_minor,
                i64::from(q.quantity),
                i64::from(line.quantity),
            );
        }
        if !findings.is_empty() {
            return Err(Check::Refuse(findings));
        }
        for (line, _) in &overlaps {
            if self.cancellation_pending(line.line_no) {
                // If the ERP refuses that cancellation, its units are open again and nothing is reinstated.
                return Err(Check::Wait(format!(
                    "line {}: a cancellation is pending",
                    line.line_no
                )));
            }
        }
        let reinstatement = (!overlaps.is_empty()).then(|| self.reinstate(&overlaps, occurred_at));
        let entry = ShipmentEntry {
            shipment_id: shipment_id.clone(),
            lines: lines.to_vec(),
            eligible_minor: amount(eligible),
            points: None,
            loyalty_transaction_id: None,
            reinstatement,
            correction: None,
        };
        self.shipments.push(entry.clone());
        Ok(entry)
    }

    /// Takes `overlaps` (line, units) back from the cancellations holding them, latest first, valuing the
    /// units on the line's cumulative cancelled value so that cancelled and reinstated values always add
    /// up to the value of the units still cancelled. The cancellations are not changed: what they hold
    /// is derived from the reinstatements (see [`Ledger::held`]).
    fn reinstate(&self, overlaps: &[(&LineBasis, u32)], occurred_at: Timestamp) -> Reinstatement {
        let mut latest_first: Vec<&CancellationEntry> = self.cancellations.iter().collect();
        latest_first
            .sort_by(|a, b| (b.occurred_at, &b.cancellation_id).cmp(&(a.occurred_at, &a.cancellation_id)));
        let mut parts = Vec::new();
        for (line, units) in overlaps {
            let mut left = *units;
            let mut cancelled = self.cancelled(line.line_no);
            for c in &latest_first {
                if left == 0 {
                    break;
                }
                let n = self.held(c, line.line_no).min(left);
                if n == 0 {
                    continue;
                }
                // The units held lowest on the line (cancellations take from the top down) go back first.
                let bottom = line.quantity - cancelled;
                parts.push(ReinstatedPart {
                    cancellation_id: c.cancellation_id.clone(),
                    line_no: line.line_no,
                    quantity: n,
                    net_minor: amount(units_value(line.net_minor, line.quantity, bottom, bottom + n)),
                });
                cancelled -= n;
                left -= n;
            }
        }
        Reinstatement {
            parts,
            occurred_at,
            erp_document_id: None,
            points_taken_back: None,
            points_taken: None,
        }
    }

    /// Undoes a shipment's reservation whose reinstatement the ERP refused: the shipment is forgotten, so
    /// its units are the cancellations' again (its refusal is remembered apart, see `steps::reserve`).
    /// Nothing to undo once the ERP confirmed it, or for an unknown shipment.
    pub fn undo_shipment(&mut self, shipment_id: &ShipmentId) {
        self.shipments.retain(|s| {
            &s.shipment_id != shipment_id
                || s.reinstatement
                    .as_ref()
                    .is_none_or(|r| r.erp_document_id.is_some())
        });
    }

    /// The refusal remembered for `follow_up` with this content, if it was refused for good.
    pub fn refusal(&self, follow_up: &str, fingerprint: &Fingerprint) -> Option<&RefusalEntry> {
        self.refusals
            .iter()
            .find(|r| r.follow_up == follow_up && &r.fingerprint == fingerprint)
    }

    /// Remembers that `follow_up` with this content was refused for good (once).
    pub fn remember_refusal(
        &mut self,
        follow_up: &str,
        fingerprint: &Fingerprint,
        reason: ReasonCode,
        message: &str,
    ) {
        if self.refusal(follow_up, fingerprint).is_none() {
            self.refusals.push(RefusalEntry {
                follow_up: follow_up.to_owned(),
                fingerprint: fingerprint.clone(),
                reason,
                message: message.to_owned(),
            });
        }
    }

    /// Records what the platform took back of a reinstatement's decided figure; what it could not take
    /// stays counted as given back (the member still has it). Returns the shortfall the first time.
    pub fn record_taken_back(&mut self, shipment_id: &ShipmentId, taken: Points) -> Option<Points> {
        let entry = self
            .shipments
            .iter_mut()
            .find(|s| &s.shipment_id == shipment_id)?
            .reinstatement
            .as_mut()?;
        if entry.points_taken.is_some() {
            return None;
        }
        entry.points_taken = Some(taken);
        let shortfall = entry
            .points_taken_back
            .unwrap_or(Points::ZERO)
            .saturating_sub(taken);
        self.count_recredited(shortfall);
        Some(shortfall)
    }

    /// Decides, with the ERP's document for a shipment's reinstatement, the redeemed points to take back:
    /// what was given back beyond the cumulative target for the net value still given back. Records both;
    /// a reinstatement already decided keeps its figure.
    pub fn decide_reinstatement(
        &mut self,
        shipment_id: &ShipmentId,
        document: &ExternalRef,
        basis: &Basis,
    ) -> Option<Points> {
        let target = self.recredit_target(self.given_back(None), basis);
        let recredited = self.recredited();
        let entry = self
            .shipments
            .iter_mut()
            .find(|s| &s.shipment_id == shipment_id)?
            .reinstatement
            .as_mut()?;
        if let Some(p) = entry.points_taken_back {
            return Some(p);
        }
        let take_back = recredited.saturating_sub(target);
        entry.erp_document_id = Some(document.clone());
        entry.points_taken_back = Some(take_back);
        self.uncount_recredited(take_back);
        Some(take_back)
    }

    /// Units of a line returned with the ERP's credit note.
    pub fn returned_posted(&self, line_no: u32) -> u32 {
        self.returns
            .iter()
            .filter(|r| r.status == ReturnStatus::Posted)
            .flat_map(|r| &r.lines)
            .filter(|l| l.line_no == line_no)
            .map(|l| l.quantity)
            .sum()
    }

    /// Net value given back so far that redeemed points are re-credited on: confirmed cancellations and
    /// returns whose loyalty side is decided and that no refund settled, plus `also` (the one being
    /// decided).
    fn given_back(&self, also: Option<Deciding<'_>>) -> Amount {
        let cancelled = self
            .cancellations
            .iter()
            .filter(|c| {
                (c.confirmed() && c.points_recredited.is_some())
                    || also == Some(Deciding::Cancellation(&c.cancellation_id))
            })
            .map(|c| self.net_held(c));
        // A return a refund settled gives back what the refund paid instead of a share of its value.
        let returned = self
            .returns
            .iter()
            .filter(|r| r.points_recredited.is_some() || also == Some(Deciding::Return(&r.return_id)))
            .filter(|r| !self.settled(&r.return_id))
            .map(|r| r.net_minor);
        Amount::saturating_sum(cancelled.chain(returned))
    }

    /// Decides the redeemed points a cancellation the ERP confirmed (as `document`) gives back, on the
    /// cumulative net value given back, and records both; a cancellation already decided keeps its figure.
    pub fn decide_cancellation(
        &mut self,
        cancellation_id: &CancellationId,
        document: &ExternalRef,
        basis: &Basis,
    ) -> Option<Points> {
        let entry = self.cancellation_entry(cancellation_id)?;
        if let Some(p) = entry.points_recredited {
            return Some(p);
        }
        let recredit = self.recredit_due(
            self.given_back(Some(Deciding::Cancellation(cancellation_id))),
            basis,
        );
        let entry = self.cancellation_entry_mut(cancellation_id)?;
        entry.erp_document_id = Some(document.clone());
        entry.points_recredited = Some(recredit);
        self.count_recredited(recredit);
        Some(recredit)
    }

    fn live_returns(&self) -> impl Iterator<Item = &ReturnEntry> {
        self.returns.iter().filter(|r| r.status != ReturnStatus::Refused)
    }

    pub fn returned(&self, line_no: u32) -> u32 {
        self.live_returns()
            .flat_map(|r| &r.lines)
            .filter(|l| l.line_no == line_no)
            .map(|l| l.quantity)
            .sum()
    }

    fn refunded(&self, line_no: u32) -> i64 {
        self.live_returns()
            .flat_map(|r| &r.lines)
            .filter(|l| l.line_no == line_no)
            .map(|l| l.refund_minor.get())
            .sum()
    }

    pub fn cancellation_entry(&self, id: &CancellationId) -> Option<&CancellationEntry> {
        self.cancellations.iter().find(|c| &c.cancellation_id == id)
    }

    pub fn cancellation_entry_mut(&mut self, id: &CancellationId) -> Option<&mut CancellationEntry> {
        self.cancellations.iter_mut().find(|c| &c.cancellation_id == id)
    }

    pub fn return_entry(&self, return_id: &ReturnId) -> Option<&ReturnEntry> {
        self.returns.iter().find(|r| &r.return_id == return_id)
    }

    pub fn return_entry_mut(&mut self, return_id: &ReturnId) -> Option<&mut ReturnEntry> {
        self.returns.iter_mut().find(|r| &r.return_id == return_id)
    }

    /// Earned points reversed so far: by returns, and by the corrections of later shipments.
    pub fn points_reversed(&self) -> Points {
        let returns = Points::saturating_sum(self.returns.iter().filter_map(|r| r.points_reversed));
        let corrected: i64 = self
            .shipments
            .iter()
            .filter_map(|s| s.correction.as_ref())
            .map(ReversalCorrection::reversed)
            .sum();
        points(returns.get().saturating_add(corrected))
    }

    /// What the earned points reversed are a share of, by the facts counted so far: (everything earned,
    /// the eligible value of the returns decided and `deciding`, the eligible value earned on). Their
    /// target is `floor(earned × returned eligible / eligible earned on)`: a function of the facts, not of
    /// their order — a return decided before a later shipment is brought to it by that shipment's
    /// correction.
    fn reversal_terms(&self, deciding: Option<&ReturnId>, basis: &Basis) -> (i64, i64, i64) {
        let returned_eligible: i64 = self
            .returns
            .iter()
            .filter(|r| r.points_reversed.is_some() || Some(&r.return_id) == deciding)
            .map(|r| r.eligible_minor.get())
            .sum();
        let earned = self.points_accrued.map_or(0, Points::get);
        // Sales accrued before the ledger kept the eligible value: the basis recomputes it (the same
        // figure `domain::eligible_net` sent).
        let basis_eligible = self
            .eligible_minor
            .map_or_else(|| basis.eligible_minor(), Amount::get);
        (earned, returned_eligible, basis_eligible)
    }

    /// Decides, after a shipment's accrual, what brings the earned points its order's returns reversed
    /// to their target (see [`Ledger::reversal_terms`]): a return decided before this shipment took its share of what had
    /// been earned then, which the shipment changed (by rounding, or by a different earning rate). More
    /// to take back is a `Reversal`, too much taken a `Restore`. Recorded on the shipment's entry; a
    /// shipment already corrected keeps its figure, and nothing is decided when nothing differs.
    pub fn decide_correction(
        &mut self,
        shipment_id: &ShipmentId,
        occurred_at: Timestamp,
        basis: &Basis,
    ) -> Option<ReversalCorrection> {
        let entry = self.shipments.iter().find(|s| &s.shipment_id == shipment_id)?;
        if entry.correction.is_some() {
            return entry.correction.clone();
        }
        let (earned, returned_eligible, eligible) = self.reversal_terms(None, basis);
        let difference = share(earned, returned_eligible, eligible) - self.points_reversed().get();
        let kind = match difference {
            0 => return None,
            d if d > 0 => AdjustmentKind::Reversal,
            _ => AdjustmentKind::Restore,
        };
        let correction = ReversalCorrection {
            kind,
            points: points(difference.saturating_abs()),
            occurred_at,
            applied: None,
            loyalty_transaction_id: None,
        };
        let entry = self
            .shipments
            .iter_mut()
            .find(|s| &s.shipment_id == shipment_id)?;
        entry.correction = Some(correction.clone());
        Some(correction)
    }

    /// Records what the platform applied of a shipment's correction; nothing the second time.
    pub fn record_correction(&mut self, shipment_id: &ShipmentId, applied: Points, id: Option<ExternalRef>) {
        let Some(c) = self
            .shipments
            .iter_mut()
            .find(|s| &s.shipment_id == shipment_id)
            .and_then(|s| s.correction.as_mut())
        else {
            return;
        };
        if c.applied.is_none() {
            c.applied = Some(applied);
            c.loyalty_transaction_id = id;
        }
    }

    /// Decides the loyalty side of a posted return: the earned points to reverse (what is due on the
    /// terms of [`Ledger::reversal_terms`], with this return, beyond what was reversed so far) and the
    /// redeemed points to give back (on the cumulative net value given back: cancellations and returns). Records both on the
    /// return's entry and returns them; a return already decided keeps its figures.
    pub fn decide_return(&mut self, return_id: &ReturnId, basis: &Basis) -> Option<(Points, Points)> {
        let entry = self.return_entry(return_id)?;
        if let (Some(r), Some(c)) = (entry.points_reversed, entry.points_recredited) {
            return Some((r, c));
        }
        let (earned, returned_eligible, eligible) = self.reversal_terms(Some(return_id), basis);
        let reverse = due(earned, returned_eligible, eligible, self.points_reversed().get());
        let recredit = self.recredit_due(self.given_back(Some(Deciding::Return(return_id))), basis);
        let reverse = points(reverse);
        let entry = self.return_entry_mut(return_id)?;
        entry.points_reversed = Some(reverse);
        entry.points_recredited = Some(recredit);
        self.count_recredited(recredit);
        Some((reverse, recredit))
    }

    /// Counts `more` redeemed points as given back, never beyond what was redeemed. With
    /// [`Ledger::uncount_recredited`], the one place that count changes.
    pub fn count_recredited(&mut self, more: Points) {
        match self.redemption.as_mut() {
            Some(r) => r.points_recredited = r.points_recredited.saturating_add(more).min(r.points),
            // A POS sale's tendered points (what is due never exceeds them).
            None => self.tender_recredited = self.tender_recredited.saturating_add(more),
        }
    }

    /// Counts `less` redeemed points as given back: what a decision counted but the platform did not
    /// apply, or what a reinstatement takes back.
    pub fn uncount_recredited(&mut self, less: Points) {
        match self.redemption.as_mut() {
            Some(r) => r.points_recredited = r.points_recredited.saturating_sub(less),
            None => self.tender_recredited = self.tender_recredited.saturating_sub(less),
        }
    }

    /// Points paid with points due back once `given_back_net` of the transaction's net has been
    /// cancelled or returned (and not settled by a refund): an order's redeemed points, or a POS sale's
    /// tendered points, as far as the target exceeds what was given back.
    fn recredit_due(&self, given_back_net: Amount, basis: &Basis) -> Points {
        self.recredit_target(given_back_net, basis)
            .saturating_sub(self.recredited())
    }

    /// What the points given back for the transaction add up to by the facts counted so far: every
    /// settled refund's points, plus the share of what was paid with points that `given_back_net` (the
    /// cancellations and the returns no refund settled) carries, never more than was paid. A function of
    /// the facts, not of their order: each decision moves what was given back to this target.
    fn recredit_target(&self, given_back_net: Amount, basis: &Basis) -> Points {
        let settled = Points::saturating_sum(self.refunds.iter().map(|r| r.points));
        let proportional = self
            .redemption
            .as_ref()
            .map(|r| r.points)
            .or(basis.points_tendered)
            .map_or(0, |paid| share(paid.get(), given_back_net.get(), basis.net_minor));
        let target = settled.saturating_add(points(proportional));
        match self.points_paid(basis) {
            Some(paid) => target.min(paid),
            None => target,
        }
    }

    /// What was paid with points: an order's redeemed points, a POS sale's counted points tenders (0
    /// without any); `None` when a POS points tender did not say how many points it was.
    pub fn points_paid(&self, basis: &Basis) -> Option<Points> {
        if let Some(r) = &self.redemption {
            return Some(r.points);
        }
        (!basis.points_uncounted).then(|| basis.points_tendered.unwrap_or(Points::ZERO))
    }

    /// Points paid with points given back so far: an order's redemption's, or a POS sale's tendered
    /// points.
    pub fn recredited(&self) -> Points {
        self.redemption
            .as_ref()
            .map_or(self.tender_recredited, |r| r.points_recredited)
    }

    /// Whether a refund settled `return_id`.
    fn settled(&self, return_id: &ReturnId) -> bool {
        self.refunds.iter().any(|r| &r.return_id == return_id)
    }

    pub fn refund_entry(&self, refund_id: &RefundId) -> Option<&RefundEntry> {
        self.refunds.iter().find(|r| &r.refund_id == refund_id)
    }

    /// Checks and records a settled refund, and decides what it changes in the points given back: with
    /// its points counted and its return's value taken out of the proportional part, the target of
    /// `Ledger::recredit_target` is computed again and the difference to what was given back is given
    /// back (or taken back). The same refund again keeps its entry; the same id with other figures, a
    /// refund in another currency, points refunded on a transaction not paid with points, or more than
    /// was paid are refused.
    pub fn decide_refund(&mut self, refund: RefundSettlement, basis: &Basis) -> Result<RefundEntry, Check> {
        if let Some(existing) = self.refund_entry(&refund.refund_id) {
            if existing.return_id == refund.return_id && existing.points == refund.points {
                return Ok(existing.clone());
            }
            return Err(Check::Refuse(vec![format!(
                "refund {} was already settled for return {} with {} points",
                existing.refund_id, existing.return_id, existing.points
            )]));
        }
        let mut findings = Vec::new();
        if refund.currency != basis.currency {
            findings.push(format!(
                "currency {} is not the original's {}",
                refund.currency, basis.currency
            ));
        }
        match self.points_paid(basis) {
            Some(paid) if paid.is_zero() && !refund.points.is_zero() => findings.push(format!(
                "it gives back {} points, but the original was not paid with points",
                refund.points
            )),
            Some(paid) if refund.points > paid => findings.push(format!(
                "it gives back {} points, more than the {paid} the original was paid with",
                refund.points
            )),
            _ => {}
        }
        if !findings.is_empty() {
            return Err(Check::Refuse(findings));
        }
        self.refunds.push(RefundEntry {
            refund_id: refund.refund_id,
            return_id: refund.return_id,
            points: refund.points,
            occurred_at: refund.occurred_at,
            give_back: Points::ZERO,
            take_back: Points::ZERO,
            applied: None,
            loyalty_transaction_id: None,
        });
        let target = self.recredit_target(self.given_back(None), basis);
        let given = self.recredited();
        let (give_back, take_back) = (target.saturating_sub(given), given.saturating_sub(target));
        self.count_recredited(give_back);
        self.uncount_recredited(take_back);
        // The entry pushed above: the last one.
        let last = self.refunds.len() - 1;
        let entry = &mut self.refunds[last];
        entry.give_back = give_back;
        entry.take_back = take_back;
        Ok(entry.clone())
    }

    /// Records what the platform applied of a refund's decided figure; the count of what was given back
    /// follows what was applied (what it could not take back stays given: the member still has it).
    /// Nothing the second time.
    pub fn record_refund(&mut self, refund_id: &RefundId, applied: Points, id: Option<ExternalRef>) {
        let Some(entry) = self.refunds.iter_mut().find(|r| &r.refund_id == refund_id) else {
            return;
        };
        if entry.applied.is_some() {
            return;
        }
        entry.applied = Some(applied);
        entry.loyalty_transaction_id = id;
        let (kind, decided) = entry.movement();
        match kind {
            // `movement` answers a re-credit or a take-back, never a restore.
            AdjustmentKind::Recredit | AdjustmentKind::Restore => {
                self.uncount_recredited(decided.saturating_sub(applied))
            }
            AdjustmentKind::Reversal => self.count_recredited(decided.saturating_sub(applied)),
        }
    }

    /// Records the total earned after a shipment's accrual.
    pub fn add_accrual(&mut self, points_earned: Points, eligible: Amount) {
        self.points_accrued = Some(
            self.points_accrued
                .map_or(points_earned, |p| p.saturating_add(points_earned)),
        );
        self.eligible_minor = Some(
            self.eligible_minor
                .map_or(eligible, |e| e.saturating_add(eligible)),
        );
    }

    /// Every unit of the order is either cancelled or shipped and accrued.
    pub fn order_settled(&self, basis: &Basis) -> bool {
        basis
            .lines
            .iter()
            .all(|l| self.cancelled(l.line_no) + self.shipped_done(l.line_no) >= l.quantity)
    }
}

fn quantity<'a>(lines: impl Iterator<Item = &'a LineQuantity>, line_no: u32) -> u32 {
    lines.filter(|l| l.line_no == line_no).map(|l| l.quantity).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(no: u32, qty: u32, unit: i64, eligible: bool) -> LineItem {
        LineItem {
            line_no: no,
            sku: Sku::parse(format!("sku-{no}")).unwrap(),
            quantity: qty,
            unit_price_minor: Amount::new(unit).unwrap(),
            discount_minor: Amount::ZERO,
            net_minor: Amount::new(i64::from(qty) * unit).unwrap(),
            tax_minor: Amount::ZERO,
            loyalty_eligible: eligible,
            channel_line_id: None,
        }
    }

    /// An eligible line of `qty` units at `unit` less a discount of 1: its units are not worth whole
    /// minor units, so where a rounding falls shows.
    fn odd_line(no: u32, qty: u32, unit: i64) -> LineItem {
        let mut l = line(no, qty, unit, true);
        l.discount_minor = Amount::new(1).unwrap();
        l.net_minor = Amount::new(i64::from(qty) * unit - 1).unwrap();
        l
    }

    fn basis(lines: &[LineItem], redeemed_value: i64) -> Basis {
        Basis::new(
            true,
            Some(MemberId::parse("m-1").unwrap()),
            Currency::parse("EUR").unwrap(),
            lines,
            redeemed_value,
        )
    }

    /// The loyalty simulator's earning rule (1 point per whole EUR, rounded down).
    fn earn(eligible: Amount) -> Points {
        Points::new(eligible.get() / 100).unwrap()
    }

    /// A shipment as the step processes it: reserved, any reinstatement confirmed, then accrued, and the
    /// reversal of returns decided before it corrected (applied in full).
    fn ship(ledger: &mut Ledger, b: &Basis, id: &str, lines: Vec<LineQuantity>) -> Result<(), Check> {
        ship_at_rate(ledger, b, id, lines, 1)
    }

    /// As [`ship`], earning `rate` times the simulator's rule (a member whose tier changed).
    fn ship_at_rate(
        ledger: &mut Ledger,
        b: &Basis,
        id: &str,
        lines: Vec<LineQuantity>,
        rate: i64,
    ) -> Result<(), Check> {
        let shipment_id = ShipmentId::parse(id).unwrap();
        let entry = ledger.reserve_shipment(b, &shipment_id, &lines, minute(0))?;
        if entry.reinstatement.is_some() {
            ledger
                .decide_reinstatement(&shipment_id, &ExternalRef::parse("ERP-R").unwrap(), b)
                .unwrap();
        }
        let p = Points::new(earn(entry.eligible_minor).get() * rate).unwrap();
        let e = ledger
            .shipments
            .iter_mut()
            .find(|s| s.shipment_id == shipment_id)
            .unwrap();
        e.points = Some(p);
        ledger.add_accrual(p, entry.eligible_minor);
        if let Some(c) = ledger.decide_correction(&shipment_id, minute(0), b) {
            ledger.record_correction(&shipment_id, c.points, None);
        }
        Ok(())
    }

    fn minute(n: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + n * 60).unwrap()
    }

    fn cx(id: &str) -> CancellationId {
        CancellationId::parse(id).unwrap()
    }

    /// A cancellation as the step processes it: reserved at `minute`, then (unless `pending`) confirmed
    /// by the ERP with its re-credit decided.
    fn cancel(
        ledger: &mut Ledger,
        b: &Basis,
        id: &str,
        minute: i64,
        lines: Option<Vec<LineQuantity>>,
        pending: bool,
    ) -> Result<(), Check> {
        let (taken, net) = b.cancellation(ledger, lines.as_deref())?;
        ledger.cancellations.push(CancellationEntry {
            cancellation_id: cx(id),
            lines: taken,
            net_minor: net,
            occurred_at: Some(self::minute(minute)),
            erp_document_id: None,
            points_recredited: None,
            refused: false,
        });
        if !pending {
            ledger
                .decide_cancellation(&cx(id), &ExternalRef::parse("ERP-C").unwrap(), b)
                .unwrap();
        }
        Ok(())
    }

    fn redeemed(points: i64) -> Option<RedemptionEntry> {
        Some(RedemptionEntry {
            hold_id: HoldId::parse("h-1").unwrap(),
            points: Points::new(points).unwrap(),
            value_minor: Amount::new(points).unwrap(),
            loyalty_transaction_id: ExternalRef::parse("LT-1").unwrap(),
            points_recredited: Points::ZERO,
        })
    }

    fn give_back(
        ledger: &mut Ledger,
        b: &Basis,
        id: &str,
        lines: Vec<(u32, u32)>,
    ) -> Result<(Points, Points), Check> {
        let lines = lines.into_iter().map(|(no, q)| (no, q, 0)).collect();
        give_back_refunding(ledger, b, id, lines)
    }

    /// [`give_back`] with each line's refund: `(line_no, quantity, refund_minor)`.
    fn give_back_refunding(
        ledger: &mut Ledger,
        b: &Basis,
        id: &str,
        lines: Vec<(u32, u32, i64)>,
    ) -> Result<(Points, Points), Check> {
        let lines: Vec<ReturnLine> = lines
            .into_iter()
            .map(|(no, q, refund)| ReturnLine {
                line_no: no,
                sku: Sku::parse(format!("sku-{no}")).unwrap(),
                quantity: q,
                refund_minor: Amount::new(refund).unwrap(),
            })
            .collect();
        let return_id = ReturnId::parse(id).unwrap();
        ledger.reserve_return(b, &return_id, b.currency, &lines, Amount::ZERO)?;
        if let Some(e) = ledger.returns.last_mut() {
            e.status = ReturnStatus::Posted;
        }
        Ok(ledger.decide_return(&return_id, b).unwrap())
    }

    /// The findings a return is refused with (the test fails if it is not refused).
    fn refused(ledger: &mut Ledger, b: &Basis, id: &str, lines: Vec<(u32, u32, i64)>) -> Vec<String> {
        match give_back_refunding(ledger, b, id, lines) {
            Err(Check::Refuse(findings)) => findings,
            other => panic!("{id} is not refused: {other:?}"),
        }
    }

    /// Processes `facts` in turn as the queues deliver them: a fact that must wait goes to the back and
    /// is tried again after the others; any other refusal fails the test.
    fn process<F: Clone + std::fmt::Debug>(facts: &[F], mut apply: impl FnMut(&F) -> Result<(), Check>) {
        let mut queue: std::collections::VecDeque<F> = facts.iter().cloned().collect();
        let mut waited = 0;
        while let Some(f) = queue.pop_front() {
            match apply(&f) {
                Ok(()) => waited = 0,
                Err(Check::Wait(_)) if waited <= queue.len() => {
                    waited += 1;
                    queue.push_back(f);
                }
                Err(e) => panic!("{f:?}: {e:?} after {facts:?}"),
            }
        }
    }

    fn lq(line_no: u32, quantity: u32) -> LineQuantity {
        LineQuantity { line_no, quantity }
    }

    /// A POS sale paid partly with points that say how many: its returns give the points back as an
    /// order's returns give back its redeemed points — by cumulative net, exactly the whole at the end;
    /// a points tender without its points gives nothing back (nothing to give back is known).
    #[test]
    fn a_pos_sales_tendered_points_are_given_back_by_its_returns() {
        let lines = [line(1, 1, 6_000, true), line(2, 1, 4_000, true)];
        let mut b = basis(&lines, 1_000);
        b.is_order = false;
        b.points_tendered = Some(Points::new(1_000).unwrap());
        let mut ledger = Ledger {
            points_accrued: Some(Points::new(90).unwrap()),
            eligible_minor: Some(Amount::new(9_000).unwrap()),
            ..Default::default()
        };
        let (_, first) = give_back(&mut ledger, &b, "r-1", vec![(2, 1)]).unwrap();
        assert_eq!(first.get(), 400);
        assert_eq!(ledger.tender_recredited.get(), 400);
        let (_, second) = give_back(&mut ledger, &b, "r-2", vec![(1, 1)]).unwrap();
        assert_eq!(second.get(), 600, "the whole 1,000 in the end");
        assert_eq!(ledger.tender_recredited.get(), 1_000);

        b.points_tendered = None;
        let mut ledger = Ledger::default();
        let (_, nothing) = give_back(&mut ledger, &b, "r-1", vec![(2, 1)]).unwrap();
        assert_eq!(nothing, Points::ZERO);
    }

    fn settlement(refund: &str, ret: &str, points: i64) -> RefundSettlement {
        RefundSettlement {
            refund_id: RefundId::parse(refund).unwrap(),
            return_id: ReturnId::parse(ret).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            points: Points::new(points).unwrap(),
            occurred_at: minute(9),
        }
    }

    /// A POS sale of 10,000 paid 1,000 points: two returns (6,000 and 4,000) and refunds settling some
    /// of them, in every order, give back the same points in total, the platform applying each decision
    /// in full: the settled refunds' points plus the share of the unsettled returns' value.
    #[test]
    fn returns_and_refunds_give_back_the_same_points_in_every_order() {
        #[derive(Debug, Clone)]
        enum F {
            Return(&'static str, u32),
            Refund(&'static str, &'static str, i64),
        }
        let lines = [line(1, 1, 6_000, true), line(2, 1, 4_000, true)];
        let mut b = basis(&lines, 1_000);
        b.is_order = false;
        b.points_tendered = Some(Points::new(1_000).unwrap());
        let total = |facts: &[F]| {
            let mut ledger = Ledger::default();
            for f in facts {
                match f {
                    F::Return(id, line_no) => {
                        give_back(&mut ledger, &b, id, vec![(*line_no, 1)]).unwrap();
                    }
                    F::Refund(id, ret, p) => {
                        let e = ledger.decide_refund(settlement(id, ret, *p), &b).unwrap();
                        assert!(e.give_back.is_zero() || e.take_back.is_zero());
                    }
                }
            }
            ledger.tender_recredited.get()
        };
        let cases: [(Vec<F>, i64); 4] = [
            // r-2's refund paid 100 points instead of its share (400): 600 + 100.
            (
                vec![
                    F::Return("r-1", 1),
                    F::Return("r-2", 2),
                    F::Refund("f-2", "r-2", 100),
                ],
                700,
            ),
            // Refunded to the card only: no points back for r-1, r-2's share (400).
            (
                vec![
                    F::Return("r-1", 1),
                    F::Return("r-2", 2),
                    F::Refund("f-1", "r-1", 0),
                ],
                400,
            ),
            // Both settled, one in two refunds: 300 + 200 + 250.
            (
                vec![
                    F::Return("r-1", 1),
                    F::Return("r-2", 2),
                    F::Refund("f-1", "r-1", 300),
                    F::Refund("f-1b", "r-1", 200),
                    F::Refund("f-2", "r-2", 250),
                ],
                750,
            ),
            // Refunds above what was paid in total are capped at it: 900 + share of r-2 (400).
            (
                vec![
                    F::Return("r-1", 1),
                    F::Return("r-2", 2),
                    F::Refund("f-1", "r-1", 900),
                ],
                1_000,
            ),
        ];
        for (facts, expected) in cases {
            for order in permutations(&facts) {
                assert_eq!(total(&order), expected, "{order:?}");
            }
        }
    }

    /// An order of 3 × 1,000 and 2 × 2,450 redeeming 600 points: two shipments, a whole cancellation
    /// (which a late shipment reinstates), a return of a shipped unit and its refund of 50 points, in
    /// every order (a fact that must wait — a return before its units shipped — is taken again after the
    /// others): the redeemed points given back end the same, as do the units and the ERP's net.
    #[test]
    fn an_orders_shipments_cancellation_return_and_refund_give_the_same_points_back_in_every_order() {
        #[derive(Debug, Clone)]
        enum F {
            Ship(&'static str, Vec<LineQuantity>),
            Cancel,
            Return,
            Refund,
        }
        let lines = [line(1, 3, 1_000, true), line(2, 2, 2_450, true)];
        let b = basis(&lines, 600);
        let books = |facts: &[F]| {
            let mut ledger = Ledger {
                redemption: redeemed(600),
                ..Ledger::default()
            };
            process(facts, |f| match f {
                F::Ship(id, l) => ship(&mut ledger, &b, id, l.clone()),
                F::Cancel => cancel(&mut ledger, &b, "c-1", 5, None, false),
                F::Return => give_back(&mut ledger, &b, "r-1", vec![(1, 1)]).map(drop),
                F::Refund => ledger.decide_refund(settlement("f-1", "r-1", 50), &b).map(drop),
            });
            let per_line: Vec<(u32, u32)> = b
                .lines
                .iter()
                .map(|l| (ledger.shipped(l.line_no), ledger.cancelled(l.line_no)))
                .collect();
            (ledger.redemption.map(|r| r.points_recredited.get()), per_line)
        };
        let facts = [
            F::Ship("s-1", vec![lq(1, 1)]),
            F::Cancel,
            F::Ship("s-2", vec![lq(2, 1)]),
            F::Return,
            F::Refund,
        ];
        let all = permutations(&facts);
        let expected = books(&facts);
        // Line 1: 1 shipped and returned, 2 cancelled; line 2: 1 shipped, 1 cancelled. Given back: the
        // refund's 50 for the returned unit, plus the cancelled net's share: floor(600 × 4,450 / 7,900).
        assert_eq!(expected, (Some(50 + 337), vec![(1, 2), (1, 1)]));
        for order in &all {
            assert_eq!(books(order), expected, "{order:?}");
        }
    }

    /// The earned points reversed do not depend on whether a return was decided before or after a later
    /// shipment of the order: the later shipment corrects what the return took to the share of
    /// everything earned, whether that is less (rounding: the README's example, 10 then corrected to 9)
    /// or more (the second shipment earned at a higher rate).
    #[test]
    fn returns_reverse_the_same_points_whether_decided_before_or_after_a_later_shipment() {
        #[derive(Debug, Clone)]
        enum F {
            Ship(&'static str, Vec<LineQuantity>, i64),
            Return(&'static str, Vec<(u32, u32)>),
        }
        let books = |lines: &[LineItem], facts: &[F]| {
            let b = basis(lines, 0);
            let mut ledger = Ledger::default();
            process(facts, |f| match f {
                F::Ship(id, l, rate) => ship_at_rate(&mut ledger, &b, id, l.clone(), *rate),
                F::Return(id, l) => give_back(&mut ledger, &b, id, l.clone()).map(drop),
            });
            let earned = ledger.points_accrued.map_or(0, Points::get);
            let corrections: Vec<AdjustmentKind> = ledger
                .shipments
                .iter()
                .filter_map(|s| s.correction.as_ref().map(|c| c.kind))
                .collect();
            (earned, ledger.points_reversed().get(), corrections)
        };
        let readme = [line(1, 1, 1_001, true), line(2, 1, 1_054, true)];
        let facts = [
            F::Ship("s-1", vec![lq(1, 1)], 1),
            F::Ship("s-2", vec![lq(2, 1)], 1),
            F::Return("r-1", vec![(1, 1)]),
        ];
        for order in permutations(&facts) {
            let (earned, reversed, _) = books(&readme, &order);
            // floor(20 × 1,001 / 2,055) = 9, whichever came first.
            assert_eq!((earned, reversed), (20, 9), "{order:?}");
        }
        // Decided between the shipments, the return took 10 and the second shipment gave 1 back.
        assert_eq!(
            books(&readme, &[facts[0].clone(), facts[2].clone(), facts[1].clone()]).2,
            [AdjustmentKind::Restore]
        );

        // A higher rate for the later shipment, two partial returns, units over several shipments.
        let lines = [line(1, 3, 1_250, true), line(2, 2, 2_475, true)];
        let facts = [
            F::Ship("s-1", vec![lq(1, 2)], 1),
            F::Ship("s-2", vec![lq(2, 1), lq(1, 1)], 3),
            F::Ship("s-3", vec![lq(2, 1)], 2),
            F::Return("r-1", vec![(1, 1)]),
            F::Return("r-2", vec![(2, 1), (1, 1)]),
        ];
        let all = permutations(&facts);
        let expected = books(&lines, &facts);
        // Earned 25 + 3 × 37 + 2 × 24 = 184 on 8,700; returned 1,250 + 3,725 eligible:
        // floor(184 × 4,975 / 8,700) = 105.
        assert_eq!((expected.0, expected.1), (184, 105));
        let mut kinds = std::collections::BTreeSet::new();
        for order in &all {
            let (earned, reversed, corrections) = books(&lines, order);
            assert_eq!((earned, reversed), (expected.0, expected.1), "{order:?}");
            kinds.extend(corrections.into_iter().map(|k| format!("{k:?}")));
        }
        // Both directions were needed along the way.
        assert_eq!(kinds.into_iter().collect::<Vec<_>>(), ["Restore", "Reversal"]);
    }

    /// What the platform could not apply of a correction stays as it was: the points reversed count
    /// what was applied, and the next return's cumulative figure takes up the rest.
    #[test]
    fn a_correction_applied_in_part_counts_what_was_applied() {
        let lines = [line(1, 2, 1_000, true), line(2, 1, 2_000, true)];
        let b = basis(&lines, 0);
        let mut ledger = Ledger::default();
        ship_at_rate(&mut ledger, &b, "s-1", vec![lq(1, 1)], 1).unwrap();
        give_back(&mut ledger, &b, "r-1", vec![(1, 1)]).unwrap();
        assert_eq!(ledger.points_reversed().get(), 10);
        // Then 60 points (a higher tier) on 3,000: the target is floor(70 × 1,000 / 4,000) = 17, 7 more.
        let s2 = ShipmentId::parse("s-2").unwrap();
        let entry = ledger
            .reserve_shipment(&b, &s2, &[lq(1, 1), lq(2, 1)], minute(0))
            .unwrap();
        ledger.shipments.last_mut().unwrap().points = Some(Points::new(60).unwrap());
        ledger.add_accrual(Points::new(60).unwrap(), entry.eligible_minor);
        let c = ledger.decide_correction(&s2, minute(1), &b).unwrap();
        assert_eq!((c.kind, c.points.get()), (AdjustmentKind::Reversal, 7));
        assert_eq!(
            ledger.decide_correction(&s2, minute(1), &b),
            Some(c),
            "decided once"
        );
        // The member had spent all but 4.
        ledger.record_correction(&s2, Points::new(4).unwrap(), None);
        ledger.record_correction(&s2, Points::new(7).unwrap(), None);
        assert_eq!(ledger.points_reversed().get(), 14, "the first record stands");
        // The last unit of line 1 comes back: floor(70 × 2,000 / 4,000) = 35, less the 14 reversed.
        let (reversed, _) = give_back(&mut ledger, &b, "r-2", vec![(1, 1)]).unwrap();
        assert_eq!(reversed.get(), 21);
        assert_eq!(ledger.points_reversed().get(), 35);
    }

    /// A refund is refused when its figures cannot be true of the original: another currency, points on
    /// a sale not paid with points, more points than were paid, its id again with other points. The same
    /// refund again keeps its decision; what the platform could not take back stays given back.
    #[test]
    fn refunds_that_cannot_be_true_are_refused_and_a_repeat_keeps_its_decision() {
        let lines = [line(1, 1, 6_000, true), line(2, 1, 4_000, true)];
        let mut b = basis(&lines, 0);
        b.is_order = false;
        let mut ledger = Ledger::default();
        let refused = |r: Result<RefundEntry, Check>| match r {
            Err(Check::Refuse(f)) => f.join("; "),
            other => panic!("not refused: {other:?}"),
        };
        let card_only = ledger.decide_refund(settlement("f-0", "r-0", 0), &b).unwrap();
        assert!(card_only.give_back.is_zero() && card_only.take_back.is_zero());
        let why = refused(ledger.decide_refund(settlement("f-1", "r-1", 10), &b));
        assert!(why.contains("not paid with points"), "{why}");

        b.points_tendered = Some(Points::new(1_000).unwrap());
        let why = refused(ledger.decide_refund(settlement("f-1", "r-1", 1_001), &b));
        assert!(why.contains("more than the 1000"), "{why}");
        let mut other = settlement("f-1", "r-1", 10);
        other.currency = Currency::parse("USD").unwrap();
        let why = refused(ledger.decide_refund(other, &b));
        assert!(why.contains("currency USD"), "{why}");

        give_back(&mut ledger, &b, "r-1", vec![(1, 1)]).unwrap();
        assert_eq!(ledger.tender_recredited.get(), 600);
        let first = ledger.decide_refund(settlement("f-1", "r-1", 100), &b).unwrap();
        assert_eq!((first.give_back.get(), first.take_back.get()), (0, 500));
        assert_eq!(ledger.tender_recredited.get(), 100);
        let again = ledger.decide_refund(settlement("f-1", "r-1", 100), &b).unwrap();
        assert_eq!(again, first);
        let why = refused(ledger.decide_refund(settlement("f-1", "r-1", 150), &b));
        assert!(why.contains("already settled"), "{why}");
        // The member had spent 200 of the 500: they stay counted as given back.
        ledger.record_refund(&first.refund_id, Points::new(300).unwrap(), None);
        assert_eq!(ledger.tender_recredited.get(), 300);
        ledger.record_refund(&first.refund_id, Points::ZERO, None);
        assert_eq!(ledger.tender_recredited.get(), 300, "recorded once");

        // Tendered points whose count the till did not send: refunds are taken at their word.
        b.points_tendered = None;
        b.points_uncounted = true;
        let mut ledger = Ledger::default();
        let e = ledger.decide_refund(settlement("f-9", "r-1", 5_000), &b).unwrap();
        assert_eq!(e.give_back.get(), 5_000);
    }

    #[test]
    fn split_shipment_then_partial_returns_reverse_exactly_what_was_earned() {
        let lines = [line(1, 1, 12_900, true), line(2, 2, 2_450, true)];
        let b = basis(&lines, 500);
        let mut ledger = Ledger {
            redemption: Some(RedemptionEntry {
                hold_id: HoldId::parse("h-1").unwrap(),
                points: Points::new(500).unwrap(),
                value_minor: Amount::new(500).unwrap(),
                loyalty_transaction_id: ExternalRef::parse("LT-1").unwrap(),
                points_recredited: Points::ZERO,
            }),
            ..Ledger::default()
        };
        ship(&mut ledger, &b, "s-1", vec![lq(1, 1), lq(2, 1)]).unwrap();
        ship(&mut ledger, &b, "s-2", vec![lq(2, 1)]).unwrap();
        let earned = ledger.points_accrued.unwrap().get();
        assert_eq!(earned, 149 + 23, "points are earned per shipment");
        let (r1, c1) = give_back(&mut ledger, &b, "ret-1", vec![(2, 1)]).unwrap();
        let (r2, c2) = give_back(&mut ledger, &b, "ret-2", vec![(1, 1), (2, 1)]).unwrap();
        assert_eq!(r1.get() + r2.get(), earned);
        assert_eq!(c1.get() + c2.get(), 500);
        assert!(matches!(
            give_back(&mut ledger, &b, "ret-3", vec![(2, 1)]),
            Err(Check::Refuse(_))
        ));
    }

    /// Three returns of one unit each of a line of 3 × 5,996 (net 5,996: 1,998.67 a unit), refunding
    /// 1,999, 1,998 and 1,999: together exactly the line, so every order of arrival accepts all three.
    /// A refund above a unit's share rounded up is refused whenever it comes, and of refunds that
    /// together exceed the line, exactly one (the last processed) is.
    #[test]
    fn refunds_of_a_lines_units_are_bounded_the_same_whatever_the_order() {
        let mut discounted = line(1, 3, 1_999, true);
        discounted.discount_minor = Amount::new(1).unwrap();
        discounted.net_minor = Amount::new(5_996).unwrap();
        let lines = [discounted];
        let mut b = basis(&lines, 0);
        b.is_order = false;
        let orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
        let refunds_of = |refunds: [i64; 3]| {
            orders
                .iter()
                .map(|order| {
                    let mut ledger = Ledger::default();
                    order
                        .iter()
                        .map(|&k| {
                            let id = format!("r-{k}");
                            give_back_refunding(&mut ledger, &b, &id, vec![(1, 1, refunds[k])]).is_ok()
                        })
                        .collect::<Vec<bool>>()
                })
                .collect::<Vec<_>>()
        };
        for accepted in refunds_of([1_999, 1_998, 1_999]) {
            assert_eq!(accepted, vec![true; 3]);
        }
        for accepted in refunds_of([1_999, 1_999, 1_999]) {
            assert_eq!(
                accepted,
                vec![true, true, false],
                "5,997 is more than the line's 5,996"
            );
        }
        let mut ledger = Ledger::default();
        assert_eq!(
            refused(&mut ledger, &b, "r-1", vec![(1, 1, 2_000)]),
            vec!["line 1: refund 2000 exceeds 1999, the net value of 1 of its 3 units"]
        );
        // Two lines of one return that name the same line count together.
        assert_eq!(
            refused(&mut ledger, &b, "r-2", vec![(1, 2, 3_998), (1, 1, 1_999)]),
            vec!["line 1: refunds of 5997 exceed the line's net value 5996"]
        );
    }

    /// Shipments of a line whose units are not worth whole minor units earn the same points in either
    /// order: each is valued on its own, not by which units of the line it happened to take.
    #[test]
    fn shipments_earn_the_same_points_whichever_is_processed_first() {
        let odd = odd_line(1, 2, 10_000);
        let lines = [odd, line(2, 1, 10_001, true)];
        let b = basis(&lines, 0);
        let earned = |first: (&str, Vec<LineQuantity>), second: (&str, Vec<LineQuantity>)| {
            let mut ledger = Ledger::default();
            ship(&mut ledger, &b, first.0, first.1).unwrap();
            ship(&mut ledger, &b, second.0, second.1).unwrap();
            let eligible: Vec<i64> = ledger.shipments.iter().map(|s| s.eligible_minor.get()).collect();
            (ledger.points_accrued.unwrap().get(), eligible)
        };
        let x = || ("x", vec![lq(1, 1), lq(2, 1)]);
        let y = || ("y", vec![lq(1, 1)]);
        assert_eq!(earned(x(), y()), (299, vec![20_000, 9_999]));
        assert_eq!(earned(y(), x()), (299, vec![9_999, 20_000]));
    }

    /// An event that names a line twice asks for the sum of its units: a shipment earns on the sum
    /// rounded down once, a cancellation of more units than ordered in all is refused, and one within
    /// them takes the sum.
    #[test]
    fn a_line_named_twice_counts_as_the_sum_of_its_units() {
        let odd = odd_line(1, 3, 10_000);
        let lines = [odd];
        let b = basis(&lines, 0);
        let mut twice = Ledger::default();
        ship(&mut twice, &b, "s-1", vec![lq(1, 1), lq(1, 1)]).unwrap();
        let mut once = Ledger::default();
        ship(&mut once, &b, "s-1", vec![lq(1, 2)]).unwrap();
        // floor(29,999 × 2 / 3) = 19,999, where two single units would earn on 2 × 9,999.
        assert_eq!(twice.shipments[0].eligible_minor.get(), 19_999);
        assert_eq!(twice.points_accrued, once.points_accrued);
        assert_eq!(twice.shipments[0].lines, [lq(1, 1), lq(1, 1)], "kept as sent");
        assert!(matches!(
            ship(&mut twice, &b, "s-2", vec![lq(1, 1), lq(1, 1)]),
            Err(Check::Refuse(_))
        ));

        let fresh = Ledger::default();
        match b.cancellation(&fresh, Some(&[lq(1, 2), lq(1, 2)])) {
            Err(Check::Refuse(findings)) => {
                assert_eq!(findings, ["line 1: 4 cancelled but the order has 3"]);
            }
            other => panic!("{other:?}"),
        }
        let (taken, net) = b.cancellation(&fresh, Some(&[lq(1, 1), lq(1, 1)])).unwrap();
        assert_eq!(taken, [lq(1, 2)]);
        assert_eq!(net, b.cancellation(&fresh, Some(&[lq(1, 2)])).unwrap().1);
    }

    #[test]
    fn a_return_of_units_not_yet_shipped_waits_and_more_than_bought_is_refused() {
        let lines = [line(1, 2, 1_000, true)];
        let b = basis(&lines, 0);
        let mut ledger = Ledger::default();
        ship(&mut ledger, &b, "s-1", vec![lq(1, 1)]).unwrap();
        assert!(matches!(
            give_back(&mut ledger, &b, "r", vec![(1, 2)]),
            Err(Check::Wait(_))
        ));
        assert!(matches!(
            give_back(&mut ledger, &b, "r", vec![(1, 3)]),
            Err(Check::Refuse(_))
        ));
        // A unit not shipped yet whose refund is above what one unit can be worth is refused now: no
        // shipment could make that refund pass, so waiting would only end in the DLQ.
        give_back_refunding(&mut ledger, &b, "r-a", vec![(1, 1, 1_000)]).unwrap();
        assert!(matches!(
            give_back_refunding(&mut ledger, &b, "r-b", vec![(1, 1, 1_000)]),
            Err(Check::Wait(_))
        ));
        assert_eq!(
            refused(&mut ledger, &b, "r-b", vec![(1, 1, 1_001)]),
            vec!["line 1: refund 1001 exceeds 1000, the net value of 1 of its 2 units"]
        );
        assert!(matches!(
            ship(&mut ledger, &b, "s-2", vec![lq(1, 2)]),
            Err(Check::Refuse(_))
        ));
    }

    #[test]
    fn a_whole_cancellation_takes_what_is_open_and_a_pending_one_makes_a_shipment_of_its_units_wait() {
        let lines = [line(1, 3, 1_000, true), line(2, 1, 500, false)];
        let b = basis(&lines, 0);
        let mut ledger = Ledger::default();
        ship(&mut ledger, &b, "s-1", vec![lq(1, 1)]).unwrap();
        let (taken, net) = b.cancellation(&ledger, None).unwrap();
        assert_eq!(taken, vec![lq(1, 2), lq(2, 1)]);
        assert_eq!(net.get(), 2_500);
        cancel(&mut ledger, &b, "c-1", 1, None, true).unwrap();
        assert!(
            matches!(ship(&mut ledger, &b, "s-2", vec![lq(1, 1)]), Err(Check::Wait(_))),
            "a pending cancellation makes a shipment of its units wait"
        );
        assert!(ledger.order_settled(&b));
        assert!(
            matches!(b.cancellation(&ledger, None), Err(Check::Wait(_))),
            "a second cancellation of the units waits for the ERP's answer to the first"
        );
        let mut confirmed = ledger.clone();
        confirmed
            .decide_cancellation(&cx("c-1"), &ExternalRef::parse("ERP-9").unwrap(), &b)
            .unwrap();
        assert_eq!(
            b.cancellation(&confirmed, None).unwrap().0,
            Vec::new(),
            "once it is confirmed nothing is open: a second cancellation takes nothing"
        );
        ledger.cancellations[0].refused = true;
        assert!(
            ship(&mut ledger, &b, "s-2", vec![lq(1, 1)]).is_ok(),
            "a refused one frees its units"
        );
    }

    #[test]
    fn a_shipment_of_cancelled_units_reinstates_them_and_takes_their_redeemed_points_back() {
        let lines = [line(1, 3, 1_000, true)];
        let b = basis(&lines, 600);
        let mut ledger = Ledger {
            redemption: redeemed(600),
            ..Ledger::default()
        };
        cancel(&mut ledger, &b, "c-1", 2, None, false).unwrap();
        assert_eq!(ledger.redemption.as_ref().unwrap().points_recredited.get(), 600);
        ship(&mut ledger, &b, "s-1", vec![lq(1, 1)]).unwrap();
        let r = ledger.shipments[0].reinstatement.clone().unwrap();
        assert_eq!((r.lines(), r.net_minor().get()), (vec![lq(1, 1)], 1_000));
        assert_eq!(r.points_taken_back.map(Points::get), Some(200));
        assert_eq!((ledger.cancelled(1), ledger.shipped(1)), (2, 1));
        assert_eq!(ledger.redemption.as_ref().unwrap().points_recredited.get(), 400);
        assert!(
            matches!(
                ship(&mut ledger, &b, "s-2", vec![lq(1, 3)]),
                Err(Check::Refuse(_))
            ),
            "more units than the order has not shipped yet are refused"
        );
    }

    #[test]
    fn a_return_of_cancelled_units_waits_for_the_shipment_that_reinstates_them() {
        let lines = [line(1, 2, 1_000, true)];
        let b = basis(&lines, 0);
        let mut ledger = Ledger::default();
        cancel(&mut ledger, &b, "c-1", 1, None, false).unwrap();
        assert!(matches!(
            give_back(&mut ledger, &b, "r-1", vec![(1, 1)]),
            Err(Check::Wait(_))
        ));
        ship(&mut ledger, &b, "s-1", vec![lq(1, 1)]).unwrap();
        assert!(give_back(&mut ledger, &b, "r-1", vec![(1, 1)]).is_ok());
        assert!(matches!(
            give_back(&mut ledger, &b, "r-2", vec![(1, 2)]),
            Err(Check::Refuse(_))
        ));
    }

    #[test]
    fn a_reinstatement_the_erp_refuses_gives_the_units_back_to_their_cancellation() {
        let lines = [line(1, 3, 1_000, true)];
        let b = basis(&lines, 0);
        let mut ledger = Ledger::default();
        cancel(&mut ledger, &b, "c-1", 1, None, false).unwrap();
        let before = ledger.cancellations.clone();
        let s1 = ShipmentId::parse("s-1").unwrap();
        ledger.reserve_shipment(&b, &s1, &[lq(1, 1)], minute(2)).unwrap();
        assert_eq!(ledger.cancelled(1), 2);
        ledger.undo_shipment(&s1);
        assert_eq!(ledger.cancellations, before);
        assert!(ledger.shipments.is_empty());
    }

    /// A cancellation of a line another one holds units of, unanswered by the ERP, waits — even one the
    /// open units would cover: taken before the answer, it would be valued below the pending one, and a
    /// refusal of that one would leave it valued as the wrong units.
    #[test]
    fn a_second_cancellation_of_a_line_a_pending_one_holds_waits() {
        let odd = odd_line(1, 3, 1_000);
        let lines = [odd];
        let b = basis(&lines, 0);
        let mut ledger = Ledger::default();
        cancel(&mut ledger, &b, "c-1", 1, Some(vec![lq(1, 2)]), true).unwrap();
        assert!(matches!(
            b.cancellation(&ledger, Some(&[lq(1, 1)])),
            Err(Check::Wait(_))
        ));
        assert!(matches!(b.cancellation(&ledger, None), Err(Check::Wait(_))));
        // Refused, c-1 holds nothing: the unit is the line's top one, as if c-1 had never come.
        let mut refused = ledger.clone();
        refused.cancellations[0].refused = true;
        let (taken, net) = b.cancellation(&refused, Some(&[lq(1, 1)])).unwrap();
        assert_eq!((taken, net.get()), (vec![lq(1, 1)], 2_999 - 1_999));
        // Confirmed, it holds the top two: the unit below them.
        ledger
            .decide_cancellation(&cx("c-1"), &ExternalRef::parse("ERP-C").unwrap(), &b)
            .unwrap();
        let (taken, net) = b.cancellation(&ledger, Some(&[lq(1, 1)])).unwrap();
        assert_eq!((taken, net.get()), (vec![lq(1, 1)], 999));
    }

    /// A return of a line another return holds units of, unanswered by the ERP, waits: valued on top of
    /// it, it would keep that value if the ERP refused the other.
    #[test]
    fn a_return_of_a_line_a_pending_return_holds_units_of_waits() {
        let odd = odd_line(1, 3, 1_000);
        let lines = [odd];
        let b = basis(&lines, 0);
        let one = || {
            vec![ReturnLine {
                line_no: 1,
                sku: Sku::parse("sku-1").unwrap(),
                quantity: 1,
                refund_minor: Amount::ZERO,
            }]
        };
        let mut ledger = Ledger::default();
        ship(&mut ledger, &b, "s-1", vec![lq(1, 3)]).unwrap();
        let r_a = ReturnId::parse("r-a").unwrap();
        ledger
            .reserve_return(&b, &r_a, b.currency, &one(), Amount::ZERO)
            .unwrap();
        assert!(matches!(
            b.check_return(&ledger, b.currency, &one()),
            Err(Check::Wait(_))
        ));
        // Refused, r-a's unit is kept again: r-b is the line's first unit, floor(2,999 / 3).
        ledger.returns[0].status = ReturnStatus::Refused;
        assert_eq!(b.check_return(&ledger, b.currency, &one()).unwrap().0.get(), 999);
        // Posted, r-b comes on top of it: floor(2,999 × 2 / 3) − 999.
        ledger.returns[0].status = ReturnStatus::Posted;
        assert_eq!(
            b.check_return(&ledger, b.currency, &one()).unwrap().0.get(),
            1_000
        );
    }

    #[test]
    fn what_the_platform_could_not_take_back_stays_given_back() {
        let lines = [line(1, 3, 1_000, true)];
        let b = basis(&lines, 600);
        let mut ledger = Ledger {
            redemption: redeemed(600),
            ..Ledger::default()
        };
        cancel(&mut ledger, &b, "c-1", 1, None, false).unwrap();
        ship(&mut ledger, &b, "s-1", vec![lq(1, 1)]).unwrap();
        let s1 = ShipmentId::parse("s-1").unwrap();
        assert_eq!(ledger.redemption.as_ref().unwrap().points_recredited.get(), 400);
        assert_eq!(
            ledger.record_taken_back(&s1, Points::new(150).unwrap()),
            Some(Points::new(50).unwrap())
        );
        assert_eq!(ledger.redemption.as_ref().unwrap().points_recredited.get(), 450);
        assert_eq!(
            ledger.record_taken_back(&s1, Points::new(150).unwrap()),
            None,
            "once"
        );
    }

    #[test]
    fn a_cancellation_of_units_that_shipped_cancels_only_the_open_ones() {
        let lines = [line(1, 3, 1_000, true)];
        let b = basis(&lines, 0);
        let mut ledger = Ledger::default();
        ship(&mut ledger, &b, "s-1", vec![lq(1, 2)]).unwrap();
        let (taken, net) = b.cancellation(&ledger, Some(&[lq(1, 2)])).unwrap();
        assert_eq!((taken, net.get()), (vec![lq(1, 1)], 1_000));
        assert!(
            matches!(b.cancellation(&ledger, Some(&[lq(1, 4)])), Err(Check::Refuse(_))),
            "more units than ordered"
        );
        assert!(matches!(
            b.cancellation(&ledger, Some(&[lq(9, 1)])),
            Err(Check::Refuse(_))
        ));
    }

    #[test]
    fn cancellations_and_returns_together_give_back_exactly_the_redeemed_points() {
        let lines = [line(1, 2, 5_000, true)];
        let b = basis(&lines, 1_000);
        let mut ledger = Ledger {
            redemption: redeemed(1_000),
            ..Ledger::default()
        };
        ship(&mut ledger, &b, "s-1", vec![lq(1, 1)]).unwrap();
        cancel(&mut ledger, &b, "c-1", 1, None, true).unwrap();
        // The return is decided while the cancellation is still pending: it counts only itself.
        let (_, c1) = give_back(&mut ledger, &b, "r-1", vec![(1, 1)]).unwrap();
        let c2 = ledger
            .decide_cancellation(&cx("c-1"), &ExternalRef::parse("ERP-9").unwrap(), &b)
            .unwrap();
        assert_eq!((c1.get(), c2.get()), (500, 500));
        assert_eq!(ledger.redemption.unwrap().points_recredited.get(), 1_000);
    }

    #[test]
    fn redeemed_points_are_shared_over_every_line_by_net() {
        // 5,000 that earns, a 5,000 gift card that does not, 1,000 redeemed: each line carries 500.
        let b = basis(&[line(1, 1, 5_000, true), line(2, 1, 5_000, false)], 1_000);
        assert_eq!(b.eligible_minor(), 4_500);
        assert_eq!(earn(amount(b.eligible_minor())).get(), 45);
    }

    /// A follow-up of an order, for the interleaving tests.
    #[derive(Debug, Clone)]
    enum Fact {
        Ship(&'static str, Vec<LineQuantity>),
        /// id, business minute, lines (None: the whole order)
        Cancel(&'static str, i64, Option<Vec<LineQuantity>>),
    }

    /// What the systems end up with: the ERP's net for the order (sale − cancellations + reinstatements),
    /// points earned, redeemed points given back, and per line (shipped, cancelled).
    fn books(lines: &[LineItem], redeemed_points: i64, facts: &[Fact]) -> (i64, i64, i64, Vec<(u32, u32)>) {
        let b = basis(lines, redeemed_points);
        let mut ledger = Ledger {
            redemption: redeemed(redeemed_points),
            ..Ledger::default()
        };
        for fact in facts {
            match fact {
                Fact::Ship(id, l) => ship(&mut ledger, &b, id, l.clone()).unwrap(),
                Fact::Cancel(id, minute, l) => {
                    cancel(&mut ledger, &b, id, *minute, l.clone(), false).unwrap()
                }
            }
        }
        let cancelled: i64 = ledger.cancellations.iter().map(|c| c.net_minor.get()).sum();
        let reinstated: i64 = ledger
            .shipments
            .iter()
            .filter_map(|s| s.reinstatement.as_ref())
            .map(|r| r.net_minor().get())
            .sum();
        let per_line = b
            .lines
            .iter()
            .map(|l| (ledger.shipped(l.line_no), ledger.cancelled(l.line_no)))
            .collect();
        (
            b.net_minor - cancelled + reinstated,
            ledger.points_accrued.map_or(0, Points::get),
            ledger.redemption.map_or(0, |r| r.points_recredited.get()),
            per_line,
        )
    }

    fn permutations<T: Clone>(facts: &[T]) -> Vec<Vec<T>> {
        if facts.len() <= 1 {
            return vec![facts.to_vec()];
        }
        let mut out = Vec::new();
        for i in 0..facts.len() {
            let mut rest = facts.to_vec();
            let first = rest.remove(i);
            for mut p in permutations(&rest) {
                p.insert(0, first.clone());
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn shipments_and_cancellations_give_the_same_books_in_every_order() {
        let lines = [line(1, 3, 1_000, true), line(2, 2, 2_450, true)];
        let sequences: Vec<Vec<Fact>> = vec![
            // The acceptance run's case: ship 1, cancel the whole order.
            vec![Fact::Ship("s-1", vec![lq(1, 1)]), Fact::Cancel("c-1", 5, None)],
            // Two shipments and a whole cancellation between them in business time.
            vec![
                Fact::Ship("s-1", vec![lq(1, 1)]),
                Fact::Cancel("c-1", 5, None),
                Fact::Ship("s-2", vec![lq(2, 1), lq(1, 1)]),
            ],
            // Partial cancellations that overlap a shipment, and a whole one.
            vec![
                Fact::Cancel("c-1", 1, Some(vec![lq(1, 2)])),
                Fact::Ship("s-1", vec![lq(1, 2)]),
                Fact::Cancel("c-2", 2, Some(vec![lq(2, 1), lq(1, 1)])),
                Fact::Cancel("c-3", 3, None),
            ],
        ];
        for facts in sequences {
            let all = permutations(&facts);
            let expected = books(&lines, 600, &all[0]);
            for order in &all {
                assert_eq!(books(&lines, 600, order), expected, "{order:?}");
            }
        }
    }

    prop_compose! {
        fn order()(specs in prop::collection::vec((1_u32..5, 1_i64..20_000, any::<bool>()), 1..6), redeemed in 0_i64..3_000)
            -> (Vec<LineItem>, i64) {
            let lines = specs.iter().enumerate().map(|(i, (q, unit, e))| line(i as u32 + 1, *q, *unit, *e)).collect();
            (lines, redeemed)
        }
    }

    /// Ships every unit and then returns every unit, in chunks picked by the cuts (each a share of what
    /// is left, so a line of 100,000 units takes a handful of steps): the points reversed never exceed
    /// what was earned and equal it once everything came back; the same for redeemed points given back.
    fn reversals_hold(
        lines: &[LineItem],
        redeemed_points: i64,
        ship_cuts: &[u8],
        return_cuts: &[u8],
    ) -> Result<(), TestCaseError> {
        let chunk = |left: u32, cut: u8| (u64::from(left) * (u64::from(cut) + 1) / 256).max(1) as u32;
        let net: i64 = lines.iter().map(|l| l.net_minor.get()).sum();
        let value = redeemed_points.min(net);
        let b = basis(lines, value);
        let mut ledger = Ledger {
            redemption: (redeemed_points > 0).then(|| RedemptionEntry {
                hold_id: HoldId::parse("h-1").unwrap(),
                points: Points::new(redeemed_points).unwrap(),
                value_minor: Amount::new(value).unwrap(),
                loyalty_transaction_id: ExternalRef::parse("LT-1").unwrap(),
                points_recredited: Points::ZERO,
            }),
            ..Ledger::default()
        };
        for (i, l) in lines.iter().enumerate() {
            let (mut left, mut n) = (l.quantity, 0);
            while left > 0 {
                let q = chunk(left, ship_cuts[(i + n) % ship_cuts.len()]);
                ship(&mut ledger, &b, &format!("s-{i}-{n}"), vec![lq(l.line_no, q)]).unwrap();
                left -= q;
                n += 1;
            }
        }
        let earned = ledger.points_accrued.unwrap().get();
        let (mut reversed, mut recredited) = (0, 0);
        let mut k = 0;
        for l in lines {
            let mut left = l.quantity;
            while left > 0 {
                let q = chunk(left, return_cuts[k % return_cuts.len()]);
                let (r, c) = give_back(&mut ledger, &b, &format!("r-{k}"), vec![(l.line_no, q)]).unwrap();
                reversed += r.get();
                recredited += c.get();
                prop_assert!(reversed <= earned);
                prop_assert!(recredited <= redeemed_points);
                left -= q;
                k += 1;
            }
        }
        prop_assert_eq!(reversed, earned);
        prop_assert_eq!(recredited, redeemed_points);
        prop_assert_eq!(ledger.points_reversed().get(), earned);
        Ok(())
    }

    prop_compose! {
        /// Orders at the contract's edges: up to 100,000 units a line, unit prices up to 900 million
        /// (so a line's net stays below 2^53), up to every point there can be.
        fn extreme_order()(
            specs in prop::collection::vec(
                (prop_oneof![Just(1_u32), Just(99_999), Just(100_000), 1_u32..100_000],
                 prop_oneof![Just(1_i64), Just(90_000_000_000), 1_i64..90_000_000_000],
                 any::<bool>()),
                1..4),
            redeemed in prop_oneof![Just(0_i64), Just(MAX_SAFE_INTEGER), 0_i64..MAX_SAFE_INTEGER],
        ) -> (Vec<LineItem>, i64) {
            let lines = specs.iter().enumerate().map(|(i, (q, unit, e))| line(i as u32 + 1, *q, *unit, *e)).collect();
            (lines, redeemed)
        }
    }

    proptest! {
        #[test]
        fn reversals_never_exceed_earnings_and_match_them_when_all_is_returned(
            (lines, redeemed_points) in order(),
            ship_cuts in prop::collection::vec(any::<u8>(), 1..6),
            return_cuts in prop::collection::vec(any::<u8>(), 1..6),
        ) {
            reversals_hold(&lines, redeemed_points, &ship_cuts, &return_cuts)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The same books at the edges of what the contracts admit: the typed event parses (bounds hold),
        /// its lines add up by the domain's arithmetic, and the ledger and proration neither overflow nor
        /// panic on the way.
        #[test]
        fn extreme_values_pass_ingest_ledger_and_proration_without_overflow(
            (lines, redeemed_points) in extreme_order(),
            ship_cuts in prop::collection::vec(any::<u8>(), 1..4),
            return_cuts in prop::collection::vec(any::<u8>(), 1..4),
        ) {
            let net: i64 = lines.iter().map(|l| l.net_minor.get()).sum();
            prop_assume!(net <= MAX_SAFE_INTEGER);
            let detail = serde_json::json!({
                "metadata": {"event_id": "e-1", "schema_version": 1, "correlation_id": "c-1",
                             "occurred_at": "2026-11-20T10:00:00Z", "channel": "ecommerce"},
                "data": {"order_id": "o-1", "member_id": "m-1", "currency": "EUR", "lines": lines,
                         "totals": {"net_minor": net, "tax_minor": 0, "gross_minor": net}},
            });
            // Through ingest's own parser: envelope, JSON Schema, typed event.
            let envelope = serde_json::json!({
                "version": "0", "id": "b-1", "detail-type": "OrderPlaced", "source": "retail.ecommerce",
                "time": "2026-11-20T10:00:00Z", "resources": [], "detail": detail,
            });
            let raw = serde_json::to_vec(&envelope).unwrap();
            let accepted = retail_sync_contracts::parse_inbound(&raw, &Default::default());
            let Ok(retail_sync_contracts::BusEvent { detail: Event::OrderPlaced(order), .. }) = accepted else {
                return Err(TestCaseError::fail(format!("refused: {accepted:?}")));
            };
            prop_assert!(crate::domain::check_lines(&order.data.lines, &order.data.totals).is_empty());
            reversals_hold(&order.data.lines, redeemed_points, &ship_cuts, &return_cuts)?;
        }
    }

    #[test]
    fn a_quantity_beyond_the_contract_does_not_type() {
        let detail = serde_json::json!({
            "metadata": {"event_id": "e-1", "schema_version": 1, "correlation_id": "c-1",
                         "occurred_at": "2026-11-20T10:00:00Z", "channel": "oms"},
            "data": {"order_id": "o-1", "shipment_id": "s-1", "lines": [{"line_no": 1, "quantity": 4_000_000_000_u32}]},
        });
        let e = Event::from_detail(retail_sync_contracts::EventType::OrderShipped, detail).unwrap_err();
        assert!(e.to_string().contains("4000000000 is outside 1..=100000"), "{e}");
    }
}
