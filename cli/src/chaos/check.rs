//! The books a day must end with, recomputed from the plan alone (the README's rules, not the code that
//! did the work), and compared with what the ERP, the loyalty platform, the sagas, the quarantine and
//! the DLQs hold after the run.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use retail_sync_contracts::events::TransactionRef;
use retail_sync_core::ports::{Hold, HoldStatus, QuarantineItem};
use retail_sync_core::saga::Saga;
use retail_sync_simulators::{ErpPosting, ErpPostingKind, LoyaltyTransaction, LoyaltyTransactionKind};

use super::day::{Line, OPENING_BALANCE, Order, Plan, Receipt};

/// What the systems hold after a run.
pub struct Observed {
    pub sagas: Vec<Saga>,
    pub postings: Vec<ErpPosting>,
    pub transactions: Vec<LoyaltyTransaction>,
    /// Per member, the points they own: the balance and, under return windows, the pending points.
    pub balances: BTreeMap<String, u64>,
    pub holds: Vec<Hold>,
    pub quarantine: Vec<QuarantineItem>,
    pub dead_letters: usize,
    pub now: jiff::Timestamp,
}

/// The verdict. `problems` lists every difference (the first 50 are kept), each naming its transaction.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Verdict {
    pub transactions: usize,
    pub follow_ups: usize,
    pub poison: usize,
    /// Facts with no trace: no saga, follow-up not on its saga, refusal or poison not quarantined.
    pub lost: usize,
    /// Effects booked more than once (a second document or more points than the rules give).
    pub doubles: usize,
    /// Transactions whose books differ from the model in any other way.
    pub mismatched: usize,
    pub members_checked: usize,
    pub members_unbalanced: usize,
    pub holds_past_expiry: usize,
    pub over_reversed: usize,
    pub dead_letters: usize,
    pub expected: Totals,
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn balanced(&self) -> bool {
        self.lost == 0
            && self.doubles == 0
            && self.mismatched == 0
            && self.members_unbalanced == 0
            && self.holds_past_expiry == 0
            && self.over_reversed == 0
            && self.dead_letters == 0
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < 50 {
            self.problems.push(text);
        }
    }
}

/// The day's expected totals, for the summary.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Totals {
    pub erp_net_minor: i64,
    pub points_earned: i64,
    pub points_reversed: i64,
    pub points_redeemed: i64,
    pub points_given_back: i64,
}

/// One transaction's expected books.
#[derive(Debug, Default, Clone, PartialEq)]
struct Books {
    status: &'static str,
    member: Option<String>,
    sale_documents: usize,
    erp_net: i64,
    /// Return ids that must have a credit note; over-returns that must not.
    returns_posted: BTreeSet<String>,
    earned: i64,
    reversed: i64,
    redeemed: i64,
    given_back: i64,
    /// Refusals that must be in the quarantine, by reason.
    refusals: Vec<&'static str>,
}

fn eligible_per_unit(line: &Line, share_per_unit: i64) -> i64 {
    if line.eligible {
        line.unit_net - share_per_unit
    } else {
        0
    }
}

fn receipt_books(r: &Receipt) -> Books {
    if r.erp_refuses() {
        return Books {
            status: "failed",
            refusals: vec!["erp_rejected"],
            ..Books::default()
        };
    }
    let net: i64 = r.lines.iter().map(Line::net).sum();
    let mut books = Books {
        status: "completed",
        member: r.member.clone(),
        sale_documents: 1,
        erp_net: net,
        ..Books::default()
    };
    if r.loyalty_refuses() {
        books.status = "failed";
        books.member = None;
        books.refusals.push("loyalty_rejected");
        return books;
    }
    let unit = |no: u32| r.lines.iter().find(|l| l.no == no).expect("a planned line");
    let earns = r.member.is_some();
    if earns {
        books.earned = r
            .lines
            .iter()
            .map(|l| eligible_per_unit(l, 0) * i64::from(l.quantity))
            .sum::<i64>()
            / 100;
    }
    for ret in &r.returns {
        if ret.over {
            books.refusals.push("over_return");
            continue;
        }
        books.returns_posted.insert(ret.id.clone());
        for (no, q) in &ret.lines {
            let line = unit(*no);
            books.erp_net -= line.unit_net * i64::from(*q);
            if earns {
                books.reversed += eligible_per_unit(line, 0) * i64::from(*q) / 100;
            }
        }
    }
    books
}

fn order_books(o: &Order) -> Books {
    let redeemed = o.redemption.as_ref().map_or(0, |r| r.points);
    if o.erp_refuses() {
        // The points were spent, the ERP refused the order: compensated, everything given back.
        return Books {
            status: "compensated",
            member: Some(o.member.clone()),
            redeemed,
            given_back: redeemed,
            refusals: vec!["erp_rejected"],
            ..Books::default()
        };
    }
    let net = o.net();
    // The redemption spread over the lines by net: per unit, exactly unit_net × redeemed / net.
    let share = |line: &Line| {
        if net == 0 {
            0
        } else {
            line.unit_net * redeemed / net
        }
    };
    let units_of = |units: &[(u32, u32)], no: u32| {
        units
            .iter()
            .filter(|(n, _)| *n == no)
            .map(|(_, q)| *q)
            .sum::<u32>()
    };
    let mut books = Books {
        member: Some(o.member.clone()),
        sale_documents: 1,
        redeemed,
        ..Books::default()
    };
    let (mut any_shipped, mut value_back) = (false, 0_i64);
    for line in &o.lines {
        let shipped: u32 = o.shipments.iter().map(|(_, u)| units_of(u, line.no)).sum();
        let asked = match &o.cancellation {
            None => 0,
            Some(c) => match &c.lines {
                None => line.quantity,
                Some(lines) => units_of(lines, line.no),
            },
        };
        // Shipped units stand; a cancellation cancels what is not shipped.
        let cancelled = asked.min(line.quantity - shipped);
        let returned: u32 = o.returns.iter().map(|r| units_of(&r.lines, line.no)).sum();
        any_shipped |= shipped > 0;
        let per_unit = eligible_per_unit(line, share(line));
        books.erp_net += line.unit_net * i64::from(line.quantity - cancelled - returned);
        books.earned += per_unit * i64::from(shipped) / 100;
        books.reversed += per_unit * i64::from(returned) / 100;
        value_back += line.unit_net * i64::from(cancelled + returned);
    }
    books.given_back = if net == 0 { 0 } else { redeemed * value_back / net };
    books.returns_posted = o.returns.iter().map(|r| r.id.clone()).collect();
    books.status = if any_shipped { "completed" } else { "cancelled" };
    books
}

fn transaction_key(t: &TransactionRef) -> String {
    match t {
        TransactionRef::Receipt { store_id, receipt_id } => format!("receipt:{store_id}:{receipt_id}"),
        TransactionRef::Order { order_id } => format!("order:{order_id}"),
    }
}

/// What the systems booked for one transaction.
#[derive(Debug, Default)]
struct Booked {
    sale_documents: usize,
    erp_net: i64,
    /// Documents per (kind, reference): more than one is a double.
    documents: BTreeMap<(String, String), usize>,
    returns_posted: BTreeSet<String>,
    earned: i64,
    reversed: i64,
    redeemed: i64,
    recredited: i64,
    taken_back: i64,
    member: Option<String>,
    /// Every loyalty movement, `kind points (reference)`: what a mismatch line shows, so a difference
    /// seen once under faults explains itself without a rerun.
    movements: Vec<String>,
}

/// What a mismatch line adds: the loyalty movements booked and the saga's timeline, in order.
fn trace(got: &Booked, saga: Option<&Saga>) -> String {
    let mut out = format!("; loyalty: {}", got.movements.join(", "));
    if let Some(s) = saga {
        let steps: Vec<String> = s
            .steps
            .iter()
            .map(|e| format!("{} {}: {}", e.step, e.outcome.as_str(), e.message))
            .collect();
        out.push_str(&format!("; timeline: {}", steps.join(" | ")));
    }
    out
}

pub fn check(plan: &Plan, observed: &Observed) -> Verdict {
    let mut v = Verdict {
        dead_letters: observed.dead_letters,
        ..Verdict::default()
    };
    if observed.dead_letters > 0 {
        v.problem(format!(
            "{} messages left in the DLQs after the redrive",
            observed.dead_letters
        ));
    }
    let mut expected: BTreeMap<String, Books> = BTreeMap::new();
    for r in &plan.receipts {
        expected.insert(format!("receipt:{}:{}", r.store, r.receipt), receipt_books(r));
        v.follow_ups += r.returns.len();
    }
    for o in &plan.orders {
        expected.insert(format!("order:{}", o.id), order_books(o));
        v.follow_ups += o.shipments.len() + o.returns.len() + usize::from(o.cancellation.is_some());
    }
    v.transactions = expected.len();

    let mut booked: BTreeMap<String, Booked> = BTreeMap::new();
    for p in &observed.postings {
        let b = booked.entry(transaction_key(&p.transaction)).or_default();
        let reference = p.reference.clone().unwrap_or_default();
        *b.documents
            .entry((p.kind.as_str().to_owned(), reference.clone()))
            .or_default() += 1;
        b.erp_net += p.signed_net_minor();
        match p.kind {
            ErpPostingKind::Sale => b.sale_documents += 1,
            ErpPostingKind::Return => {
                b.returns_posted.insert(reference);
            }
            ErpPostingKind::Cancellation | ErpPostingKind::Reinstatement => {}
        }
    }
    for t in &observed.transactions {
        // Merges move a balance between members; they belong to no transaction (chaos days have none).
        let Some(transaction) = &t.transaction else {
            continue;
        };
        let b = booked.entry(transaction_key(transaction)).or_default();
        b.member = Some(t.member_id.to_string());
        b.movements.push(format!(
            "{} {} ({})",
            t.kind.as_str(),
            t.points,
            t.reference.as_deref().unwrap_or("-")
        ));
        let reinstatement = t
            .reference
            .as_deref()
            .is_some_and(|r| r.starts_with("reinstatement:"));
        match t.kind {
            LoyaltyTransactionKind::Accrual => b.earned += t.points,
            LoyaltyTransactionKind::Reversal if reinstatement => b.taken_back -= t.points,
            LoyaltyTransactionKind::Reversal => b.reversed -= t.points,
            // Earned points reversed beyond their share, given back (positive): less reversed.
            LoyaltyTransactionKind::Restore => b.reversed -= t.points,
            LoyaltyTransactionKind::Redemption => b.redeemed -= t.points,
            LoyaltyTransactionKind::Recredit => b.recredited += t.points,
            LoyaltyTransactionKind::MergeOut | LoyaltyTransactionKind::MergeIn => {}
        }
    }
    let sagas: BTreeMap<String, &Saga> = observed.sagas.iter().map(|s| (s.id.to_string(), s)).collect();

    // Quarantined refusals, by correlation id and reason.
    let mut refused: BTreeSet<(String, String)> = BTreeSet::new();
    for q in &observed.quarantine {
        if let Some(c) = &q.rejection.correlation_id {
            refused.insert((c.clone(), q.rejection.reason.as_str().to_owned()));
        }
    }

    let mut member_expected: BTreeMap<String, i64> = plan.members.iter().map(|m| (m.clone(), 0)).collect();
    for (key, want) in &expected {
        let empty = Booked::default();
        let got = booked.get(key).unwrap_or(&empty);
        let saga = sagas.get(key);
        let correlation = saga.map(|s| s.correlation_id.to_string());
        // Lost: no saga, or a follow-up without its trace.
        match saga {
            None => {
                v.lost += 1;
                v.problem(format!("{key}: no saga"));
                continue;
            }
            Some(s) => {
                let status = serde_json::to_value(s.status)
                    .ok()
                    .and_then(|s| s.as_str().map(str::to_owned))
                    .unwrap_or_default();
                if status != want.status {
                    v.mismatched += 1;
                    v.problem(format!("{key}: status {status}, expected {}", want.status));
                }
            }
        }
        for reason in &want.refusals {
            let found = correlation
                .as_ref()
                .is_some_and(|c| refused.contains(&(c.clone(), (*reason).to_owned())));
            if !found {
                v.lost += 1;
                v.problem(format!("{key}: no quarantine entry {reason}"));
            }
        }
        let missing_returns = want.returns_posted.difference(&got.returns_posted).count();
        if missing_returns > 0 {
            v.lost += missing_returns;
            v.problem(format!("{key}: {missing_returns} returns without a credit note"));
        }
        // Doubles: a second document for one effect, or more points than the rules give.
        let extra_documents: usize = got.documents.values().map(|n| n.saturating_sub(1)).sum();
        if extra_documents > 0 || got.sale_documents > want.sale_documents {
            v.doubles += extra_documents.max(got.sale_documents.saturating_sub(want.sale_documents));
            v.problem(format!("{key}: documents {:?}", got.documents));
        }
        let given_back = got.recredited - got.taken_back;
        let books_differ = got.sale_documents != want.sale_documents
            || got.erp_net != want.erp_net
            || got.earned != want.earned
            || got.reversed != want.reversed
            || got.redeemed != want.redeemed
            || given_back != want.given_back;
        if got.earned > want.earned
            || got.reversed > want.reversed
            || got.redeemed > want.redeemed
            || given_back > want.given_back
        {
            v.doubles += 1;
        }
        if books_differ {
            v.mismatched += 1;
            v.problem(format!(
                "{key}: booked erp {} earned {} reversed {} redeemed {} given back {}; expected erp {} earned {} reversed {} redeemed {} given back {}",
                got.erp_net, got.earned, got.reversed, got.redeemed, given_back,
                want.erp_net, want.earned, want.reversed, want.redeemed, want.given_back
            ) + &trace(got, saga.copied()));
        }
        if got.reversed > got.earned {
            v.over_reversed += 1;
            v.problem(format!(
                "{key}: reversed {} of {} earned",
                got.reversed, got.earned
            ));
        }
        if let Some(m) = &want.member {
            *member_expected.entry(m.clone()).or_default() +=
                want.earned - want.reversed - want.redeemed + want.given_back;
        }
        v.expected.erp_net_minor += want.erp_net;
        v.expected.points_earned += want.earned;
        v.expected.points_reversed += want.reversed;
        v.expected.points_redeemed += want.redeemed;
        v.expected.points_given_back += want.given_back;
    }
    // Documents for transactions the day never had.
    for key in booked.keys().filter(|k| !expected.contains_key(*k)) {
        v.mismatched += 1;
        v.problem(format!("{key}: booked, but not in the day"));
    }

    // Each member: balance = opening + the ledger's transactions = what the rules give.
    let mut ledger_sum: BTreeMap<String, i64> = BTreeMap::new();
    for t in &observed.transactions {
        *ledger_sum.entry(t.member_id.to_string()).or_default() += t.points;
    }
    for (member, delta) in &member_expected {
        v.members_checked += 1;
        let balance = observed.balances.get(member).map(|b| *b as i64);
        let from_ledger = OPENING_BALANCE + ledger_sum.get(member).copied().unwrap_or(0);
        let want = OPENING_BALANCE + delta;
        if balance != Some(from_ledger) || from_ledger != want {
            v.members_unbalanced += 1;
            v.problem(format!(
                "{member}: balance {balance:?}, ledger says {from_ledger}, the rules {want}"
            ));
        }
    }

    // Bad input: every piece quarantined, with its reason.
    v.poison = plan.poison.len();
    for p in &plan.poison {
        let found = observed
            .quarantine
            .iter()
            .any(|q| q.rejection.reason.as_str() == p.reason && q.body.contains(&p.marker));
        if !found {
            v.lost += 1;
            v.problem(format!("{}: not quarantined as {}", p.marker, p.reason));
        }
    }

    // Every order's hold was spent (a compensated order's too: it was given back by a re-credit).
    let statuses: BTreeMap<String, HoldStatus> = observed
        .holds
        .iter()
        .map(|h| (h.hold_id.to_string(), h.status))
        .collect();
    for o in &plan.orders {
        if let Some(r) = &o.redemption
            && statuses.get(&r.hold_id) != Some(&HoldStatus::Committed)
        {
            v.mismatched += 1;
            v.problem(format!(
                "order:{}: hold {} is {:?}",
                o.id,
                r.hold_id,
                statuses.get(&r.hold_id)
            ));
        }
    }
    // No hold still reserving points past its expiry.
    for h in &observed.holds {
        if h.status == HoldStatus::Held && h.expires_at < observed.now {
            v.holds_past_expiry += 1;
            v.problem(format!("{}: held past its expiry", h.hold_id));
        }
    }
    v
}
