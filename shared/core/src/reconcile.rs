//! Reconciliation: the books of a window checked as a whole. Each step keeps its own transaction right;
//! this compares what retail-sync's sagas say happened with what the ERP's documents and the loyalty
//! platform's ledger hold (read back through [`ErpBooks`](crate::ports::ErpBooks) and
//! [`LoyaltyBooks`](crate::ports::LoyaltyBooks), so every connector that can list its books takes
//! part), classifies every difference, and totals the liability per day, store, channel and currency.
//!
//! The comparison is a pure function of the three sources ([`reconcile`]): the same books give the same
//! report whatever order the events arrived in, and the report says nothing about arrival. Only the
//! safe differences are repaired ([`repair`]): an accrual or a reversal the saga made and the platform
//! does not hold is made again, under a key of the finding's own, so that repairing twice (two operators,
//! a retry after a crash) applies it once; the saga records the new transaction, after which the
//! difference is gone. Everything else needs a person and is announced.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use retail_sync_contracts::events::TransactionRef;
use retail_sync_contracts::values::*;

use crate::batch::cut;
use crate::error::Error;
use crate::idempotency::IdempotencyKey;
use crate::ledger::{Basis, ReturnStatus};
use crate::ports::{
    AccrualRequest, AdjustmentKind, AdjustmentRequest, BookedDocument, BookedPoints, DocumentKind, Loyalty,
    PointsKind, SagaStore,
};
use crate::saga::{self, Saga, SagaId, SagaStatus, StepOutcome};

/// `report_version` of [`Reconciliation`]; changes only with an incompatible change.
pub const RECONCILIATION_VERSION: u32 = 1;

/// The step name repairs write on a saga's timeline.
pub const RECONCILE: &str = "reconcile";

/// The business-time window `[from, to)` reconciled: the sagas whose transaction happened in it, with
/// everything the systems booked for them since (a return a week later included), and whatever the
/// systems booked in it that no saga knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub from: Timestamp,
    pub to: Timestamp,
}

impl Window {
    pub fn new(from: Timestamp, to: Timestamp) -> Result<Self, String> {
        if from >= to {
            return Err(format!("the window is empty: from {from} is not before to {to}"));
        }
        Ok(Self { from, to })
    }

    /// The UTC day before the one `now` is in: what the nightly run checks.
    pub fn day_before(now: Timestamp) -> Self {
        let today = now
            .to_zoned(jiff::tz::TimeZone::UTC)
            .start_of_day()
            .map(|z| z.timestamp())
            .unwrap_or(now);
        Self {
            from: today - SignedDuration::from_hours(24),
            to: today,
        }
    }

    fn contains(&self, t: Timestamp) -> bool {
        t >= self.from && t < self.to
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// A running saga with an unfinished effect and no change for this long is stuck (its step should
    /// have finished, been retried or dead-lettered well within it).
    pub stuck_after: SignedDuration,
    /// What a point is worth: this many points make one major unit of the sale's currency (100, the
    /// reference loyalty platform's rule: a point is worth 0.01).
    pub points_per_major: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            stuck_after: SignedDuration::from_hours(2),
            points_per_major: 100,
        }
    }
}

/// The kinds of difference, each with what it means for the books.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Difference {
    /// The saga accrued points the loyalty ledger does not hold: the member is owed them. Repairable.
    MissingAccrual,
    /// The ledger holds an accrual for the transaction that the saga did not make: points given twice.
    DoubleAccrual,
    /// Both sides hold the movement, for different points.
    AmountMismatch,
    /// The saga reversed (or re-credited) points for a return or reinstatement that the ledger does not
    /// hold: the member has points they should not. Repairable.
    ReversalMissing,
    /// Points were redeemed on the order, and its sales document in the ERP books no redemption (or
    /// another value): revenue is overstated.
    RedemptionNotBooked,
    /// A document the saga says the ERP posted is not in the ERP's books.
    DocumentMissing,
    /// A document or ledger movement in a system that no saga made.
    OrphanDocument,
    /// A saga still running, with an effect unfinished, past its deadline.
    StuckSaga,
}

impl Difference {
    pub const ALL: [Difference; 8] = [
        Self::MissingAccrual,
        Self::DoubleAccrual,
        Self::AmountMismatch,
        Self::ReversalMissing,
        Self::RedemptionNotBooked,
        Self::DocumentMissing,
        Self::OrphanDocument,
        Self::StuckSaga,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingAccrual => "missing_accrual",
            Self::DoubleAccrual => "double_accrual",
            Self::AmountMismatch => "amount_mismatch",
            Self::ReversalMissing => "reversal_missing",
            Self::RedemptionNotBooked => "redemption_not_booked",
            Self::DocumentMissing => "document_missing",
            Self::OrphanDocument => "orphan_document",
            Self::StuckSaga => "stuck_saga",
        }
    }
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable across runs: `<difference>:<transaction or document>[:<what>]`.
    pub id: String,
    pub difference: Difference,
    /// Where the difference is: `loyalty`, `erp` or `retail-sync`.
    pub system: String,
    /// The transaction (`receipt:<store>:<receipt>`, `order:<id>`), when one is concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The system's document or ledger id concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Points (or minor units for the ERP) as retail-sync has them, and as the system does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<i64>,
    pub message: String,
    /// The repair, for the safe differences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
}

/// A safe repair: the movement the saga made, made again on the loyalty platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Repair {
    Accrue {
        saga: SagaId,
        /// The ledger id the saga holds and the platform does not.
        lost: ExternalRef,
        request: AccrualRequest,
    },
    Adjust {
        saga: SagaId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lost: Option<ExternalRef>,
        request: AdjustmentRequest,
    },
}

impl Repair {
    pub fn describe(&self) -> String {
        match self {
            Self::Accrue { request, .. } => format!(
                "accrue again on {} for {} {} eligible",
                request.member_id,
                money(request.eligible_minor.get(), request.currency.as_str()),
                request.currency
            ),
            Self::Adjust { request, .. } => format!(
                "{} {} points again for {} ({})",
                match request.kind {
                    AdjustmentKind::Reversal => "reverse",
                    AdjustmentKind::Recredit => "re-credit",
                    AdjustmentKind::Restore => "restore",
                },
                request.points,
                request.member_id,
                request.reference
            ),
        }
    }
}

/// Totals of one day, store, channel and currency (the transaction's own: a return booked a week later
/// counts on its sale's day, so a day's figures change only while its returns come in).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub points_issued: i64,
    pub points_reversed: i64,
    pub points_redeemed: i64,
    pub points_recredited: i64,
    /// Issued − reversed − redeemed + re-credited: what the members may still spend of this business.
    pub outstanding_points: i64,
    /// Of the outstanding points, those still pending (their return window has not ended).
    #[serde(default)]
    pub pending_points: i64,
    /// `outstanding_points` in the currency's minor units.
    pub liability_minor: i64,
    /// Net value the ERP booked (sales and reinstatements less cancellations and returns).
    pub erp_net_minor: i64,
    pub differences: usize,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.points_issued += other.points_issued;
        self.points_reversed += other.points_reversed;
        self.points_redeemed += other.points_redeemed;
        self.points_recredited += other.points_recredited;
        self.outstanding_points += other.outstanding_points;
        self.pending_points += other.pending_points;
        self.liability_minor += other.liability_minor;
        self.erp_net_minor += other.erp_net_minor;
        self.differences += other.differences;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TotalsKey {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    /// The receipt's store; `-` for an order.
    pub store: String,
    pub channel: String,
    /// `-` where the currency is not known (a movement no saga made).
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TotalsRow {
    #[serde(flatten)]
    pub key: TotalsKey,
    #[serde(flatten)]
    pub totals: Totals,
}

/// How much was compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compared {
    pub sagas: usize,
    pub erp_documents: usize,
    pub loyalty_movements: usize,
}

/// What a repair did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepairOutcome {
    pub finding: String,
    /// `proposed` (dry run), `applied`, or `failed`.
    pub status: String,
    pub message: String,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reconciliation {
    pub report_version: u32,
    pub window: Window,
    pub generated_at: Timestamp,
    pub compared: Compared,
    /// Per day, store, channel and currency, in that order.
    pub totals: Vec<TotalsRow>,
    /// Per currency, over the window.
    pub total: BTreeMap<String, Totals>,
    /// How many differences of each kind (every kind listed, zeros included).
    pub differences: BTreeMap<String, usize>,
    /// Ordered by difference, transaction and id.
    pub findings: Vec<Finding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repairs: Vec<RepairOutcome>,
}

impl Reconciliation {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// What the saga says the systems hold for its transaction.
struct Expected<'a> {
    saga: &'a Saga,
    basis: Option<Basis>,
    /// Accruals: (ledger id, points).
    accruals: Vec<(ExternalRef, Points)>,
    /// Reversals and re-credits by reference: (kind, points, ledger id when kept).
    adjustments: BTreeMap<(PointsKind, String), (i64, Option<ExternalRef>)>,
    redemption: Option<(Points, Amount)>,
    /// ERP documents: (kind, reference).
    documents: BTreeSet<(DocumentKind, Option<String>)>,
    /// An effect the saga started and has not finished.
    unfinished: Option<&'static str>,
}

impl<'a> Expected<'a> {
    fn of(saga: &'a Saga) -> Self {
        let l = &saga.ledger;
        let mut accruals = Vec::new();
        if let (Some(id), Some(p)) = (&l.loyalty_transaction_id, l.points_accrued) {
            accruals.push((id.clone(), p));
        }
        for s in &l.shipments {
            if let (Some(id), Some(p)) = (&s.loyalty_transaction_id, s.points) {
                accruals.push((id.clone(), p));
            }
        }
        let mut adjustments: BTreeMap<(PointsKind, String), (i64, Option<ExternalRef>)> = BTreeMap::new();
        let mut adjust = |kind, reference: String, points: Option<Points>, id: Option<&ExternalRef>| {
            if let Some(p) = points.filter(|p| p.get() > 0) {
                adjustments.insert((kind, reference), (p.get(), id.cloned()));
            }
        };
        for r in &l.returns {
            let reference = format!("return:{}", r.return_id);
            adjust(
                PointsKind::Reversal,
                reference.clone(),
                r.points_reversed,
                r.loyalty_transaction_id.as_ref(),
            );
            adjust(PointsKind::Recredit, reference, r.points_recredited, None);
        }
        for c in &l.cancellations {
            adjust(
                PointsKind::Recredit,
                format!("cancellation:{}", c.cancellation_id),
                c.points_recredited,
                None,
            );
        }
        for f in &l.refunds {
            // A refund gives back or takes back, as it was decided.
            let kind = match f.movement().0 {
                AdjustmentKind::Recredit | AdjustmentKind::Restore => PointsKind::Recredit,
                AdjustmentKind::Reversal => PointsKind::Reversal,
            };
            adjust(
                kind,
                format!("refund:{}", f.refund_id),
                f.applied,
                f.loyalty_transaction_id.as_ref(),
            );
        }
        for s in &l.shipments {
            if let Some(c) = &s.correction {
                let kind = match c.kind {
                    AdjustmentKind::Restore => PointsKind::Restore,
                    _ => PointsKind::Reversal,
                };
                adjust(
                    kind,
                    format!("correction:{}", s.shipment_id),
                    c.applied,
                    c.loyalty_transaction_id.as_ref(),
                );
            }
            if let Some(r) = &s.reinstatement {
                adjust(
                    PointsKind::Reversal,
                    format!("reinstatement:{}", s.shipment_id),
                    r.points_taken,
                    None,
                );
            }
        }
        // A compensation undid what the order had done (`steps::compensate::undo_plan`): each accrual
        // reversed and the redemption re-credited, under references of their own. Nothing else gives
        // back on an order the ERP never took (its cancellations are skipped, its returns and refunds
        // refused), so what its redemption has had re-credited is the compensation's.
        if saga.status == SagaStatus::Compensated {
            for s in &l.shipments {
                adjust(
                    PointsKind::Reversal,
                    format!("compensation:shipment:{}", s.shipment_id),
                    s.points,
                    None,
                );
            }
            if let Some(r) = &l.redemption {
                adjust(
                    PointsKind::Recredit,
                    format!("compensation:hold:{}", r.hold_id),
                    Some(r.points_recredited),
                    None,
                );
            }
        }
        let mut documents = BTreeSet::new();
        if l.erp_document_id.is_some() {
            documents.insert((DocumentKind::Sale, None));
        }
        for c in l.cancellations.iter().filter(|c| c.erp_document_id.is_some()) {
            documents.insert((DocumentKind::Cancellation, Some(c.cancellation_id.to_string())));
        }
        for r in l.returns.iter().filter(|r| r.erp_document_id.is_some()) {
            documents.insert((DocumentKind::Return, Some(r.return_id.to_string())));
        }
        for s in &l.shipments {
            if s.reinstatement
                .as_ref()
                .is_some_and(|r| r.erp_document_id.is_some())
            {
                documents.insert((DocumentKind::Reinstatement, Some(s.shipment_id.to_string())));
            }
        }
        let unfinished = if saga.status != SagaStatus::Running {
            None
        } else if l.erp_document_id.is_none() {
            Some("the ERP posting")
        } else if saga.origin_type == "SaleCompleted" {
            // A sale's saga ends with its accrual.
            Some("the accrual")
        } else if l.shipments.iter().any(|s| s.points.is_none()) {
            Some("a shipment's accrual")
        } else if l
            .shipments
            .iter()
            .any(|s| s.correction.as_ref().is_some_and(|c| c.applied.is_none()))
        {
            Some("a shipment's correction of its order's reversed points")
        } else if l
            .cancellations
            .iter()
            .any(|c| !c.refused && c.erp_document_id.is_none())
        {
            Some("a cancellation")
        } else if l.returns.iter().any(|r| {
            r.status == ReturnStatus::Reserved
                || (r.status == ReturnStatus::Posted && r.points_reversed.is_none())
        }) {
            Some("a return")
        } else if l.refunds.iter().any(|f| f.applied.is_none()) {
            Some("a refund")
        } else {
            None
        };
        Self {
            saga,
            basis: saga.origin_event().ok().as_ref().and_then(Basis::of),
            accruals,
            adjustments,
            redemption: l.redemption.as_ref().map(|r| (r.points, r.value_minor)),
            documents,
            unfinished,
        }
    }

    fn key(&self) -> TotalsKey {
        TotalsKey {
            day: utc_day(business_time(self.saga)),
            store: store_of(self.saga.id.transaction().as_ref()),
            channel: self
                .saga
                .channel
                .map_or_else(|| "-".to_owned(), |c| c.as_str().to_owned()),
            currency: self
                .basis
                .as_ref()
                .map_or_else(|| "-".to_owned(), |b| b.currency.as_str().to_owned()),
        }
    }

    fn finding(&self, difference: Difference, what: &str, system: &str, message: String) -> Finding {
        Finding {
            id: if what.is_empty() {
                format!("{}:{}", difference.as_str(), self.saga.id)
            } else {
                format!("{}:{}:{what}", difference.as_str(), self.saga.id)
            },
            difference,
            system: system.to_owned(),
            transaction: Some(self.saga.id.to_string()),
            correlation_id: Some(self.saga.correlation_id.to_string()),
            reference: None,
            expected: None,
            found: None,
            message,
            repair: None,
        }
    }
}

fn signed(d: &BookedDocument) -> i64 {
    match d.kind {
        DocumentKind::Sale | DocumentKind::Reinstatement => d.net_minor.get(),
        DocumentKind::Cancellation | DocumentKind::Return => -d.net_minor.get(),
    }
}

/// `YYYY-MM-DD` of `t` in UTC: the day a row counts on.
fn utc_day(t: Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::UTC).date().to_string()
}

/// A receipt's store; `-` for an order or nothing.
fn store_of(transaction: Option<&TransactionRef>) -> String {
    match transaction {
        Some(TransactionRef::Receipt { store_id, .. }) => store_id.to_string(),
        _ => "-".to_owned(),
    }
}

/// When a saga's transaction happened in its channel (its creation, for a saga stored without it).
fn business_time(saga: &Saga) -> Timestamp {
    saga.occurred_at.unwrap_or(saga.created_at)
}

/// The row of something no saga knows: its own day, its receipt's store when it names one, its currency
/// when it has one.
fn orphan_key(t: Timestamp, transaction: Option<&TransactionRef>, currency: Option<Currency>) -> TotalsKey {
    TotalsKey {
        day: utc_day(t),
        store: store_of(transaction),
        channel: "-".to_owned(),
        currency: currency.map_or_else(|| "-".to_owned(), |c| c.as_str().to_owned()),
    }
}

/// Compares the three sources for `window`. `sagas` may hold more than the window (and member records,
/// which are skipped); `documents` and `movements` are what the systems booked from the window's start
/// on. `now` decides which running sagas are past their deadline.
pub fn reconcile(
    window: Window,
    now: Timestamp,
    settings: Settings,
    sagas: &[Saga],
    documents: &[BookedDocument],
    movements: &[BookedPoints],
) -> Reconciliation {
    let in_window: Vec<Expected> = sagas
        .iter()
        .filter(|s| s.member.is_none())
        .filter(|s| window.contains(business_time(s)))
        .map(Expected::of)
        .collect();
    let mut books = Books::sort(window, sagas, documents, movements);
    for e in &in_window {
        let docs = books.docs_of.remove(&e.saga.id).unwrap_or_default();
        let moves = books.moves_of.remove(&e.saga.id).unwrap_or_default();
        let before = books.findings.len();
        check_accruals(e, &moves, &mut books.findings);
        check_adjustments(e, &moves, &mut books.findings);
        check_redeemed(e, &moves, &mut books.findings);
        check_erp(e, &docs, &moves, &mut books.findings);
        books.findings.extend(check_stuck(e, settings, now));
        let row = books.rows.entry(e.key()).or_default();
        for m in &moves {
            count_points(row, m);
        }
        row.erp_net_minor += docs.iter().map(|d| signed(d)).sum::<i64>();
        row.differences += books.findings.len() - before;
    }
    let (totals, total) = finish_totals(books.rows, settings);
    let mut findings = books.findings;
    findings
        .sort_by(|a, b| (a.difference, &a.transaction, &a.id).cmp(&(b.difference, &b.transaction, &b.id)));
    findings.dedup_by(|a, b| a.id == b.id);
    Reconciliation {
        report_version: RECONCILIATION_VERSION,
        window,
        generated_at: now,
        compared: Compared {
            sagas: in_window.len(),
            erp_documents: documents.len(),
            loyalty_movements: movements.len(),
        },
        totals,
        total,
        differences: count_differences(&findings),
        findings,
        repairs: Vec::new(),
    }
}

/// Both systems' books sorted by the transaction they belong to, for the transactions retail-sync
/// knows; what it does not know (in the window) is already a finding with its row.
struct Books<'a> {
    docs_of: BTreeMap<SagaId, Vec<&'a BookedDocument>>,
    moves_of: BTreeMap<SagaId, Vec<&'a BookedPoints>>,
    rows: BTreeMap<TotalsKey, Totals>,
    findings: Vec<Finding>,
}

impl<'a> Books<'a> {
    fn sort(
        window: Window,
        sagas: &[Saga],
        documents: &'a [BookedDocument],
        movements: &'a [BookedPoints],
    ) -> Self {
        // Every transaction retail-sync knows, in or out of the window: a document of last week's sale
        // is not an orphan.
        let known: BTreeSet<SagaId> = sagas
            .iter()
            .filter(|s| s.member.is_none())
            .map(|s| s.id.clone())
            .collect();
        let mut books = Self {
            docs_of: BTreeMap::new(),
            moves_of: BTreeMap::new(),
            rows: BTreeMap::new(),
            findings: Vec::new(),
        };
        for d in documents {
            let id = SagaId::of(&d.transaction);
            if known.contains(&id) {
                books.docs_of.entry(id).or_default().push(d);
            } else if window.contains(d.occurred_at) {
                let row = books
                    .rows
                    .entry(orphan_key(d.occurred_at, Some(&d.transaction), Some(d.currency)))
                    .or_default();
                row.erp_net_minor += signed(d);
                row.differences += 1;
                books.findings.push(orphan(
                    "erp",
                    d.document_id.as_str(),
                    Some(&id),
                    signed(d),
                    format!(
                        "ERP {} document {} for {id}, which retail-sync never saw",
                        kind_name(d.kind),
                        d.document_id
                    ),
                ));
            }
        }
        for m in movements.iter().filter(|m| m.kind != PointsKind::Merge) {
            let id = m.transaction.as_ref().map(SagaId::of);
            match id {
                Some(id) if known.contains(&id) => books.moves_of.entry(id).or_default().push(m),
                _ if window.contains(m.occurred_at) => {
                    let row = books
                        .rows
                        .entry(orphan_key(m.occurred_at, m.transaction.as_ref(), None))
                        .or_default();
                    count_points(row, m);
                    row.differences += 1;
                    books.findings.push(orphan(
                        "loyalty",
                        m.loyalty_transaction_id.as_str(),
                        id.as_ref(),
                        m.points,
                        format!(
                            "loyalty {} {} of {} points for {}, which retail-sync never made",
                            points_name(m.kind),
                            m.loyalty_transaction_id,
                            m.points,
                            id.as_ref()
                                .map_or_else(|| "no transaction".to_owned(), ToString::to_string)
                        ),
                    ));
                }
                _ => {}
            }
        }
        books
    }
}

/// A running saga with an unfinished effect and no change since before `now − stuck_after`.
fn check_stuck(e: &Expected, settings: Settings, now: Timestamp) -> Option<Finding> {
    let what = e.unfinished?;
    let deadline = e.saga.updated_at + settings.stuck_after;
    if now <= deadline {
        return None;
    }
    let mut f = e.finding(
        Difference::StuckSaga,
        "",
        "retail-sync",
        format!(
            "running since {} with {what} unfinished; its deadline was {deadline}",
            e.saga.updated_at
        ),
    );
    f.reference = e.saga.steps.last().map(|s| s.step.clone());
    Some(f)
}

/// The rows with their outstanding points and liability, and the totals per currency.
fn finish_totals(
    rows: BTreeMap<TotalsKey, Totals>,
    settings: Settings,
) -> (Vec<TotalsRow>, BTreeMap<String, Totals>) {
    let mut total: BTreeMap<String, Totals> = BTreeMap::new();
    let rows = rows
        .into_iter()
        .map(|(key, mut totals)| {
            totals.outstanding_points =
                totals.points_issued - totals.points_reversed - totals.points_redeemed
                    + totals.points_recredited;
            totals.liability_minor = Currency::parse(&key.currency).map_or(0, |c| {
                let value = i128::from(totals.outstanding_points) * i128::from(c.minor_per_major())
                    / i128::from(settings.points_per_major.max(1));
                i64::try_from(value).unwrap_or(i64::MAX)
            });
            total.entry(key.currency.clone()).or_default().add(&totals);
            TotalsRow { key, totals }
        })
        .collect();
    (rows, total)
}

/// How many findings of each kind, every kind listed.
fn count_differences(findings: &[Finding]) -> BTreeMap<String, usize> {
    let mut differences: BTreeMap<String, usize> = Difference::ALL
        .iter()
        .map(|d| (d.as_str().to_owned(), 0))
        .collect();
    for f in findings {
        *differences.entry(f.difference.as_str().to_owned()).or_default() += 1;
    }
    differences
}

fn kind_name(k: DocumentKind) -> &'static str {
    match k {
        DocumentKind::Sale => "sale",
        DocumentKind::Cancellation => "cancellation",
        DocumentKind::Return => "return",
        DocumentKind::Reinstatement => "reinstatement",
    }
}

fn points_name(k: PointsKind) -> &'static str {
    match k {
        PointsKind::Accrual => "accrual",
        PointsKind::Redemption => "redemption",
        PointsKind::Reversal => "reversal",
        PointsKind::Recredit => "re-credit",
        PointsKind::Restore => "restore",
        PointsKind::Merge => "merge",
    }
}

fn count_points(row: &mut Totals, m: &BookedPoints) {
    let n = m.points.abs();
    match m.kind {
        PointsKind::Accrual => {
            row.points_issued += m.points;
            row.pending_points += m.pending_points.map_or(0, |p| p.get());
        }
        PointsKind::Reversal => row.points_reversed += n,
        // Earned points a return had reversed beyond its share, given back: the reversal is less.
        PointsKind::Restore => row.points_reversed -= n,
        PointsKind::Redemption => row.points_redeemed += n,
        PointsKind::Recredit => row.points_recredited += n,
        PointsKind::Merge => {}
    }
}

fn orphan(
    system: &str,
    reference: &str,
    transaction: Option<&SagaId>,
    found: i64,
    message: String,
) -> Finding {
    Finding {
        id: format!("{}:{system}:{reference}", Difference::OrphanDocument.as_str()),
        difference: Difference::OrphanDocument,
        system: system.to_owned(),
        transaction: transaction.map(ToString::to_string),
        correlation_id: None,
        reference: Some(reference.to_owned()),
        expected: None,
        found: Some(found),
        message,
        repair: None,
    }
}

/// The saga's accruals against the ledger's: each found with its points, none made twice.
fn check_accruals(e: &Expected, moves: &[&BookedPoints], findings: &mut Vec<Finding>) {
    let accruals: Vec<&&BookedPoints> = moves.iter().filter(|m| m.kind == PointsKind::Accrual).collect();
    for (id, points) in &e.accruals {
        match accruals.iter().find(|m| &m.loyalty_transaction_id == id) {
            Some(m) if m.points != points.get() => {
                let mut f = e.finding(
                    Difference::AmountMismatch,
                    id.as_str(),
                    "loyalty",
                    format!(
                        "accrual {id}: the saga earned {points} points, the ledger holds {}",
                        m.points
                    ),
                );
                f.reference = Some(id.to_string());
                f.expected = Some(points.get());
                f.found = Some(m.points);
                findings.push(f);
            }
            Some(_) => {}
            None => {
                let mut f = e.finding(
                    Difference::MissingAccrual,
                    id.as_str(),
                    "loyalty",
                    format!("accrual {id} of {points} points is not on the loyalty ledger"),
                );
                f.reference = Some(id.to_string());
                f.expected = Some(points.get());
                f.found = Some(0);
                f.repair = accrual_repair(e, id);
                findings.push(f);
            }
        }
    }
    for m in accruals
        .iter()
        .filter(|m| !e.accruals.iter().any(|(id, _)| id == &m.loyalty_transaction_id))
    {
        let mut f = e.finding(
            Difference::DoubleAccrual,
            m.loyalty_transaction_id.as_str(),
            "loyalty",
            format!(
                "accrual {} of {} points that the saga did not make (it made {})",
                m.loyalty_transaction_id,
                m.points,
                if e.accruals.is_empty() {
                    "none".to_owned()
                } else {
                    e.accruals
                        .iter()
                        .map(|(id, p)| format!("{id}: {p}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        );
        f.reference = Some(m.loyalty_transaction_id.to_string());
        f.expected = Some(0);
        f.found = Some(m.points);
        findings.push(f);
    }
}

/// Reversals and re-credits by reference: what the platform took may be less than asked (the member had
/// spent the points), and the saga keeps what was applied.
fn check_adjustments(e: &Expected, moves: &[&BookedPoints], findings: &mut Vec<Finding>) {
    let mut booked: BTreeMap<(PointsKind, String), (i64, i64)> = BTreeMap::new();
    for m in moves.iter().filter(|m| {
        matches!(
            m.kind,
            PointsKind::Reversal | PointsKind::Recredit | PointsKind::Restore
        )
    }) {
        let reference = m.reference.clone().unwrap_or_default();
        let b = booked.entry((m.kind, reference)).or_default();
        b.0 += m.points.abs();
        b.1 += 1;
    }
    for ((kind, reference), (points, id)) in &e.adjustments {
        let what = format!("{}:{reference}", points_name(*kind));
        match booked.get(&(*kind, reference.clone())) {
            None => {
                let mut f = e.finding(
                    Difference::ReversalMissing,
                    &what,
                    "loyalty",
                    format!(
                        "the {} of {points} points for {reference} is not on the loyalty ledger",
                        points_name(*kind)
                    ),
                );
                f.reference = id.as_ref().map(ToString::to_string);
                f.expected = Some(*points);
                f.found = Some(0);
                f.repair = adjustment_repair(e, *kind, reference, *points, id.clone());
                findings.push(f);
            }
            Some((found, _)) if found != points => {
                let mut f = e.finding(
                    Difference::AmountMismatch,
                    &what,
                    "loyalty",
                    format!(
                        "{} for {reference}: the saga applied {points} points, the ledger holds {found}",
                        points_name(*kind)
                    ),
                );
                f.expected = Some(*points);
                f.found = Some(*found);
                findings.push(f);
            }
            Some(_) => {}
        }
    }
}

/// The points the order redeemed against the ledger's redemptions.
fn check_redeemed(e: &Expected, moves: &[&BookedPoints], findings: &mut Vec<Finding>) {
    if let Some((points, _)) = e.redemption {
        let booked: i64 = moves
            .iter()
            .filter(|m| m.kind == PointsKind::Redemption)
            .map(|m| m.points.abs())
            .sum();
        if booked != points.get() {
            let mut f = e.finding(
                Difference::AmountMismatch,
                "redemption",
                "loyalty",
                format!("the order redeemed {points} points, the ledger holds {booked}"),
            );
            f.expected = Some(points.get());
            f.found = Some(booked);
            findings.push(f);
        }
    }
}

fn check_erp(e: &Expected, docs: &[&BookedDocument], moves: &[&BookedPoints], findings: &mut Vec<Finding>) {
    let mut seen: BTreeMap<(DocumentKind, Option<String>), Vec<&BookedDocument>> = BTreeMap::new();
    for d in docs {
        seen.entry((d.kind, d.reference.clone())).or_default().push(d);
    }
    for (kind, reference) in &e.documents {
        if !seen.contains_key(&(*kind, reference.clone())) {
            let what = reference.clone().unwrap_or_else(|| kind_name(*kind).to_owned());
            findings.push(e.finding(
                Difference::DocumentMissing,
                &what,
                "erp",
                format!(
                    "the {} document{} the saga recorded is not in the ERP's books",
                    kind_name(*kind),
                    reference.as_ref().map(|r| format!(" for {r}")).unwrap_or_default()
                ),
            ));
        }
    }
    for ((kind, reference), ds) in &seen {
        // One document per sale, cancellation, return and reinstatement: more, or one the saga did not
        // record, came from elsewhere.
        let expected = usize::from(e.documents.contains(&(*kind, reference.clone())));
        for d in ds.iter().skip(expected) {
            let mut f = orphan(
                "erp",
                d.document_id.as_str(),
                Some(&e.saga.id),
                signed(d),
                format!(
                    "ERP {} document {}{} that the saga did not post",
                    kind_name(*kind),
                    d.document_id,
                    reference
                        .as_ref()
                        .map(|r| format!(" for {r}"))
                        .unwrap_or_default()
                ),
            );
            f.correlation_id = Some(e.saga.correlation_id.to_string());
            findings.push(f);
        }
    }
    // What the points redeemed were worth, as the platform booked them (else as the order said).
    let booked_value: Option<i64> = {
        let values: Vec<i64> = moves
            .iter()
            .filter(|m| m.kind == PointsKind::Redemption)
            .filter_map(|m| m.value_minor.map(|v| v.get()))
            .collect();
        if values.is_empty() {
            e.redemption.map(|(_, v)| v.get())
        } else {
            Some(values.iter().sum())
        }
    };
    if let (Some(value), Some(sale)) = (
        booked_value.filter(|v| *v > 0),
        seen.get(&(DocumentKind::Sale, None)).and_then(|d| d.first()),
    ) {
        let in_erp = sale.redemption_minor.map_or(0, |a| a.get());
        if in_erp != value {
            let mut f = e.finding(
                Difference::RedemptionNotBooked,
                "",
                "erp",
                format!(
                    "points worth {value} were redeemed on the order; its sales document {} books {in_erp}",
                    sale.document_id
                ),
            );
            f.reference = Some(sale.document_id.to_string());
            f.expected = Some(value);
            f.found = Some(in_erp);
            findings.push(f);
        }
    }
}

fn accrual_repair(e: &Expected, lost: &ExternalRef) -> Option<Repair> {
    let basis = e.basis.as_ref()?;
    let member_id = basis.member_id.clone()?;
    let transaction = e.saga.id.transaction()?;
    let l = &e.saga.ledger;
    let eligible_minor = if l.loyalty_transaction_id.as_ref() == Some(lost) {
        l.eligible_minor?
    } else {
        l.shipments
            .iter()
            .find(|s| s.loyalty_transaction_id.as_ref() == Some(lost))?
            .eligible_minor
    };
    Some(Repair::Accrue {
        saga: e.saga.id.clone(),
        lost: lost.clone(),
        request: AccrualRequest {
            member_id,
            transaction,
            currency: basis.currency,
            eligible_minor,
            occurred_at: business_time(e.saga),
            // A lost accrual that was still pending is made again pending, until the same instant.
            pending_until: l
                .pending
                .iter()
                .find(|p| &p.loyalty_transaction_id == lost && p.confirmed_at.is_none())
                .map(|p| p.until),
        },
    })
}

fn adjustment_repair(
    e: &Expected,
    kind: PointsKind,
    reference: &str,
    points: i64,
    lost: Option<ExternalRef>,
) -> Option<Repair> {
    let member_id = e.basis.as_ref()?.member_id.clone()?;
    Some(Repair::Adjust {
        saga: e.saga.id.clone(),
        lost,
        request: AdjustmentRequest {
            member_id,
            kind: match kind {
                PointsKind::Reversal => AdjustmentKind::Reversal,
                PointsKind::Restore => AdjustmentKind::Restore,
                _ => AdjustmentKind::Recredit,
            },
            transaction: e.saga.id.transaction()?,
            reference: reference.to_owned(),
            points: Points::new(points).ok()?,
            occurred_at: business_time(e.saga),
        },
    })
}

/// Applies the repair of `finding` (`None`: it has none). The call goes to the loyalty platform under the
/// finding's own key (`<saga>:reconcile:<finding>`), so a second repair of the same finding — two
/// operators, a rerun after a crash between the call and the saga's write — is answered with the first
/// result; then the saga records the new ledger id in place of the lost one and says so on its timeline,
/// in one versioned write. Returns what was done, in words.
pub async fn repair(
    finding: &Finding,
    loyalty: &dyn Loyalty,
    sagas: &dyn SagaStore,
    now: Timestamp,
) -> Result<Option<String>, Error> {
    let Some(r) = &finding.repair else {
        return Ok(None);
    };
    let (saga_id, lost) = match r {
        Repair::Accrue { saga, lost, .. } => (saga, Some(lost.clone())),
        Repair::Adjust { saga, lost, .. } => (saga, lost.clone()),
    };
    let key = IdempotencyKey::for_step(&format!("{saga_id}:{RECONCILE}"), &finding.id);
    // A repair for a member merged since follows the merge, as the steps do.
    let loyalty = crate::members::Following { loyalty, sagas };
    let (new_id, message) = match r {
        Repair::Accrue { request, .. } => {
            let a = loyalty.accrue(request, &key).await?;
            let m = format!(
                "{}: accrued again as {} ({} points)",
                finding.id, a.loyalty_transaction_id, a.points
            );
            (a.loyalty_transaction_id, m)
        }
        Repair::Adjust { request, .. } => {
            let a = loyalty.adjust(request, &key).await?;
            let m = format!(
                "{}: applied again as {} ({} points)",
                finding.id, a.loyalty_transaction_id, a.delta
            );
            (a.loyalty_transaction_id, m)
        }
    };
    let current = saga::load_existing(sagas, saga_id).await?;
    if current
        .steps
        .iter()
        .any(|s| s.step == RECONCILE && s.message == message)
    {
        return Ok(Some(message));
    }
    saga::update_from(sagas, current, None, |s| {
        if let Some(lost) = &lost {
            let l = &mut s.ledger;
            let replace = |slot: &mut Option<ExternalRef>| {
                if slot.as_ref() == Some(lost) {
                    *slot = Some(new_id.clone());
                }
            };
            replace(&mut l.loyalty_transaction_id);
            l.shipments
                .iter_mut()
                .for_each(|x| replace(&mut x.loyalty_transaction_id));
            l.returns
                .iter_mut()
                .for_each(|x| replace(&mut x.loyalty_transaction_id));
            // The pending entry follows its accrual, so confirm-points confirms the new one.
            for p in l.pending.iter_mut().filter(|p| &p.loyalty_transaction_id == lost) {
                p.loyalty_transaction_id = new_id.clone();
            }
        }
        s.record(RECONCILE, StepOutcome::Done, message.clone(), now);
    })
    .await?;
    Ok(Some(message))
}

/// What a run does about the differences it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairMode {
    /// Report only.
    Off,
    /// Propose the repairs (listed as `proposed`), change nothing.
    DryRun,
    /// Apply the repairs of the safe differences.
    Apply,
}

/// Where a run reads from and acts on.
pub struct Sources<'a> {
    /// Every saga the store holds (or at least those of the window and what their books refer to).
    pub sagas: &'a [Saga],
    pub erp: &'a dyn crate::ports::ErpBooks,
    pub loyalty_books: &'a dyn crate::ports::LoyaltyBooks,
    /// For repairs.
    pub loyalty: &'a dyn Loyalty,
    pub store: &'a dyn SagaStore,
    /// `ReconciliationMismatch` events go here, when announcing.
    pub publisher: Option<&'a dyn crate::ports::Publisher>,
    pub metrics: &'a dyn crate::ports::Metrics,
}

/// One run: reads both systems' books from the window's start (or the earliest start of one of its
/// transactions in retail-sync, if before) to `now` (or the window's end, if later),
/// compares, repairs as `mode` says, then announces what is left — one `ReconciliationMismatch` per
/// difference not repaired, and the metric `reconciliation_mismatches` by difference — when a publisher
/// is given. A repaired difference is gone from the report's findings (its outcome is in `repairs`).
pub async fn run(
    window: Window,
    now: Timestamp,
    settings: Settings,
    mode: RepairMode,
    sources: Sources<'_>,
) -> Result<Reconciliation, Error> {
    let until = if now > window.to { now } else { window.to };
    // A loyalty platform dates a redemption by its own clock when the hold is committed, not by the
    // order's business time: a day whose business times lie ahead of when it was processed (a local run
    // of next week's day) has its redemptions booked before `from`. Reading from the earliest moment
    // retail-sync started a transaction of the window finds them; whatever else that reads belongs to
    // a transaction retail-sync knows or, outside the window, is left out (`Books::sort`).
    let from = sources
        .sagas
        .iter()
        .filter(|s| s.member.is_none() && window.contains(business_time(s)))
        .map(|s| s.created_at)
        .fold(window.from, Timestamp::min);
    // Both systems are read at once: neither waits for the other's pages.
    let (documents, movements) = tokio::join!(
        sources.erp.documents(from, until),
        sources.loyalty_books.movements(from, until),
    );
    let (documents, movements) = (documents?, movements?);
    let mut report = reconcile(window, now, settings, sources.sagas, &documents, &movements);
    let mut repaired = BTreeSet::new();
    for f in report.findings.iter().filter(|f| f.repair.is_some()) {
        let outcome = match mode {
            RepairMode::Off => continue,
            RepairMode::DryRun => RepairOutcome {
                finding: f.id.clone(),
                status: "proposed".to_owned(),
                message: f.repair.as_ref().map(Repair::describe).unwrap_or_default(),
            },
            RepairMode::Apply => match repair(f, sources.loyalty, sources.store, now).await {
                Ok(done) => {
                    repaired.insert(f.id.clone());
                    sources.metrics.add(
                        "reconciliation_repairs",
                        1,
                        Some(("difference", f.difference.as_str())),
                    );
                    RepairOutcome {
                        finding: f.id.clone(),
                        status: "applied".to_owned(),
                        message: done.unwrap_or_default(),
                    }
                }
                Err(e) => RepairOutcome {
                    finding: f.id.clone(),
                    status: "failed".to_owned(),
                    message: e.to_string(),
                },
            },
        };
        report.repairs.push(outcome);
    }
    if !repaired.is_empty() {
        report.findings.retain(|f| !repaired.contains(&f.id));
        report.differences = count_differences(&report.findings);
    }
    for f in &report.findings {
        sources.metrics.add(
            "reconciliation_mismatches",
            1,
            Some(("difference", f.difference.as_str())),
        );
    }
    if let Some(publisher) = sources.publisher {
        let events: Vec<crate::ports::Outgoing> = report
            .findings
            .iter()
            .map(|f| mismatch_event(f, window, now))
            .collect();
        for chunk in events.chunks(10) {
            for result in publisher.publish(chunk).await {
                result?;
            }
        }
    }
    Ok(report)
}

/// The announcement of a difference left for a person. Its event id is derived from the finding and the
/// window: the same difference found again by a rerun of the window is the same event.
pub fn mismatch_event(f: &Finding, window: Window, now: Timestamp) -> crate::ports::Outgoing {
    use retail_sync_contracts::EventType;
    use retail_sync_contracts::envelope::{Channel, Detail, Metadata};
    use retail_sync_contracts::events::ReconciliationMismatch;
    let key = format!("{}:{}", window.from, f.id);
    let correlation = f
        .correlation_id
        .as_deref()
        .and_then(|c| CorrelationId::parse(c).ok())
        .unwrap_or_else(|| {
            let day = window
                .from
                .to_zoned(jiff::tz::TimeZone::UTC)
                .date()
                .strftime("%Y%m%d");
            CorrelationId::parse(format!("reconcile-{day}")).expect("a fixed word and digits are an id")
        });
    crate::ports::Outgoing {
        source: retail_sync_contracts::envelope::SOURCE_RETAIL_SYNC,
        event: retail_sync_contracts::Event::ReconciliationMismatch(Detail {
            metadata: Metadata {
                event_id: crate::steps::derived_event_id(&key, EventType::ReconciliationMismatch),
                schema_version: 1,
                correlation_id: correlation,
                causation_id: None,
                occurred_at: now,
                channel: Channel::RetailSync,
            },
            data: ReconciliationMismatch {
                difference: f.difference.as_str().to_owned(),
                finding_id: cut(&f.id, 300),
                system: f.system.clone(),
                transaction: f.transaction.as_deref().map(|t| cut(t, 200)),
                reference: f.reference.as_deref().map(|r| cut(r, 120)),
                expected: f.expected,
                found: f.found,
                repairable: f.repair.is_some(),
                window_from: window.from,
                window_to: window.to,
                message: cut(&f.message, 500),
            },
        }),
    }
}

// The report as a table.

/// `minor` in the currency's major units (`1234.50`); as it is where the currency is unknown.
fn money(minor: i64, currency: &str) -> String {
    Currency::parse(currency).map_or_else(|_| minor.to_string(), |c| c.decimal(minor))
}

fn row(out: &mut String, day: &str, store: &str, channel: &str, currency: &str, t: &Totals) {
    let _ = writeln!(
        out,
        "{day:<10}  {store:<12}  {channel:<10}  {currency:<3}  {:>8}  {:>8}  {:>8}  {:>8}  {:>11}  {:>8}  {:>11}  {:>12}  {:>5}",
        t.points_issued,
        t.points_reversed,
        t.points_redeemed,
        t.points_recredited,
        t.outstanding_points,
        t.pending_points,
        money(t.liability_minor, currency),
        money(t.erp_net_minor, currency),
        t.differences,
    );
}

/// The report as people read it: totals per day, store, channel and currency, the window's total per
/// currency, then every difference with its transaction and what a repair would do.
pub fn render(r: &Reconciliation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "reconciliation {} .. {}: {} sagas, {} ERP documents, {} loyalty movements compared",
        r.window.from, r.window.to, r.compared.sagas, r.compared.erp_documents, r.compared.loyalty_movements
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<10}  {:<12}  {:<10}  {:<3}  {:>8}  {:>8}  {:>8}  {:>8}  {:>11}  {:>8}  {:>11}  {:>12}  {:>5}",
        "day",
        "store",
        "channel",
        "cur",
        "issued",
        "reversed",
        "redeemed",
        "recredit",
        "outstanding",
        "pending",
        "liability",
        "ERP net",
        "diffs"
    );
    for t in &r.totals {
        row(
            &mut out,
            &t.key.day,
            &t.key.store,
            &t.key.channel,
            &t.key.currency,
            &t.totals,
        );
    }
    for (currency, t) in &r.total {
        row(&mut out, "total", "", "", currency, t);
    }
    let _ = writeln!(out);
    if r.findings.is_empty() {
        let _ = writeln!(out, "differences  none: the books agree");
    } else {
        let counts: Vec<String> = r
            .differences
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(d, n)| format!("{d} {n}"))
            .collect();
        let _ = writeln!(out, "differences  {} ({})", r.findings.len(), counts.join(", "));
        for f in &r.findings {
            let _ = writeln!(
                out,
                "  {:<22} {:<11} {:<34} {}",
                f.difference.as_str(),
                f.system,
                f.transaction.as_deref().unwrap_or("-"),
                f.message
            );
            if let Some(c) = &f.correlation_id {
                let _ = writeln!(out, "  {:<22} correlation {c}", "");
            }
            if let Some(repair) = &f.repair {
                let _ = writeln!(out, "  {:<22} repair: {}", "", repair.describe());
            }
        }
    }
    for rep in &r.repairs {
        let _ = writeln!(out, "repair {:<8} {}  {}", rep.status, rep.finding, rep.message);
    }
    out
}

#[cfg(test)]
mod render_tests {
    use super::money;

    #[test]
    fn money_is_in_major_units_with_the_currencys_digits() {
        assert_eq!(money(123_450, "EUR"), "1234.50");
        assert_eq!(money(-5, "EUR"), "-0.05");
        assert_eq!(money(1_500, "JPY"), "1500");
        assert_eq!(money(1_234, "KWD"), "1.234");
        assert_eq!(money(77, "-"), "77");
    }
}
