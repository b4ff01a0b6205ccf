//! The ports: what the workflows need from the outside world, one role per trait. AWS, embedded, HTTP and
//! in-memory adapters implement them in their own crates/modules.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use retail_sync_contracts::events::{LineQuantity, ReturnLine, TransactionRef};
use retail_sync_contracts::values::*;
use retail_sync_contracts::{Event, LineItem, Redemption, Rejection, Totals};

use crate::error::Error;
use crate::idempotency::{IdempotencyKey, IdempotencyRecord};
use crate::saga::{Saga, SagaId};

/// Idempotency records. Adapters make `try_insert` one conditional write.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Writes `record` unless a record that is live at `now` (see `IdempotencyRecord::is_live`) holds the
    /// key; in that case writes nothing and returns the live record.
    async fn try_insert(
        &self,
        record: &IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, Error>;
    /// Drops our in-progress claim (only if it is still ours and still in progress) after a retryable
    /// failure, so the next delivery need not wait for the lease to lapse.
    async fn release(&self, claim: &IdempotencyRecord) -> Result<(), Error>;
    async fn get(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyRecord>, Error>;
}

/// Saga records.
#[async_trait]
pub trait SagaStore: Send + Sync {
    /// Creates the saga unless one with its id exists; returns the existing one then.
    async fn create(&self, saga: &Saga) -> Result<Option<Saga>, Error>;
    async fn load(&self, id: &SagaId) -> Result<Option<Saga>, Error>;
    /// The sagas of `ids` that exist, each once (an id asked twice too) and in any order, each as
    /// strongly consistent as [`load`](Self::load) reads it. A step reads its batch's sagas ahead with
    /// it (see `steps::skeleton`): an adapter whose reads are remote makes it one request for many ids.
    /// It may leave out an id it could not read (a throttled part of a batch read): the step then loads
    /// that saga on its own.
    async fn load_many(&self, ids: &[SagaId]) -> Result<Vec<Saga>, Error> {
        let distinct: std::collections::BTreeSet<&SagaId> = ids.iter().collect();
        let mut found = Vec::with_capacity(distinct.len());
        for id in distinct {
            found.extend(self.load(id).await?);
        }
        Ok(found)
    }
    /// Finds the saga a correlation id belongs to.
    async fn find_by_correlation(&self, correlation_id: &CorrelationId) -> Result<Option<Saga>, Error>;
    /// Writes `saga` if the stored version is `saga.version - 1` (else `Error::Conflict`), and in the same
    /// atomic write stores `completion` (the step's idempotency record, now completed): a step's effect is
    /// recorded on the timeline and as done, or neither.
    async fn save(&self, saga: &Saga, completion: Option<&IdempotencyRecord>) -> Result<(), Error>;
}

/// Bad input and permanently failed messages, kept for operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineItem {
    /// `{step}:{event id}` (the refused event, or the WorkflowException announcing a failure), else the
    /// queue message id: a redelivery or a duplicate delivery is the same entry (kept once, see [`QuarantineStore::keep`]).
    pub id: String,
    pub received_at: Timestamp,
    pub step: String,
    /// Why it was kept: the same rejection ingest gives bad input and the steps give refusals (stored
    /// flat, as its fields always were).
    #[serde(flatten)]
    pub rejection: Rejection,
    /// The input as received (cut at `QUARANTINE_BODY_LIMIT` bytes; `body_truncated` says so).
    pub body: String,
    #[serde(default)]
    pub body_truncated: bool,
}

/// What a quarantined body is cut to: enough to diagnose, small enough for one DynamoDB item.
pub const QUARANTINE_BODY_LIMIT: usize = 128 * 1024;

#[async_trait]
pub trait QuarantineStore: Send + Sync {
    /// Writes the entry, replacing one with its id (an erasure's scrub of it).
    async fn put(&self, item: &QuarantineItem) -> Result<(), Error>;
    /// Writes the entry unless one with its id is there: a redelivery of the same refusal is the same
    /// entry, as first kept — so what an erasure removed from it is not written back by a later copy of
    /// the message. Atomic: of two deliveries at once, one entry stands.
    async fn keep(&self, item: &QuarantineItem) -> Result<(), Error>;
    /// Oldest first (then by id), at most `limit`.
    async fn list(&self, limit: usize) -> Result<Vec<QuarantineItem>, Error>;
    /// One entry by its id, however many there are (operators name one to show or retry it).
    async fn find(&self, id: &str) -> Result<Option<QuarantineItem>, Error> {
        Ok(self.list(usize::MAX).await?.into_iter().find(|i| i.id == id))
    }
}

/// An event a step wants on the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub source: &'static str,
    pub event: Event,
}

impl Outgoing {
    pub fn detail_type(&self) -> &'static str {
        self.event.event_type().name()
    }
}

/// The event bus. Returns one result per event, in order: PutEvents can fail some entries of a batch.
#[async_trait]
pub trait Publisher: Send + Sync {
    async fn publish(&self, events: &[Outgoing]) -> Vec<Result<(), Error>>;
}

/// Publishes channel events (source `retail.*`) to one bus and retail-sync's own to the other: a platform
/// mapper puts what it maps in front of ingest, on the channel bus, and announces a message it
/// quarantines on the internal bus as every step does. Results come back in the events' order.
pub struct BySource {
    pub channel: Arc<dyn Publisher>,
    pub internal: Arc<dyn Publisher>,
}

#[async_trait]
impl Publisher for BySource {
    async fn publish(&self, events: &[Outgoing]) -> Vec<Result<(), Error>> {
        let is_channel = |o: &Outgoing| {
            o.source
                .starts_with(retail_sync_contracts::envelope::CHANNEL_SOURCE_PREFIX)
        };
        let (channel, internal): (Vec<Outgoing>, Vec<Outgoing>) =
            events.iter().cloned().partition(is_channel);
        let mut channel = self.channel.publish(&channel).await.into_iter();
        let mut internal = self.internal.publish(&internal).await.into_iter();
        let missing = || Err(Error::unavailable("event bus", "no result for an event"));
        events
            .iter()
            .map(|o| {
                let next = if is_channel(o) {
                    channel.next()
                } else {
                    internal.next()
                };
                next.unwrap_or_else(missing)
            })
            .collect()
    }
}

/// An order's outcome told back to the ecommerce platform it came from (see `steps::NotifyChannel`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelOutcome {
    /// Unique among the order's outcomes (`earned-<shipment>`, `returned-<return>`,
    /// `cancelled-<cancellation>`): the platform-side record is keyed by it, so telling it twice is
    /// telling it once.
    pub outcome_id: String,
    pub order_id: OrderId,
    pub order: retail_sync_contracts::events::ChannelOrder,
    pub kind: OutcomeKind,
    /// Earned points (earned) or earned points taken back (returned).
    pub points: Points,
    /// Redeemed points given back (returned, cancelled).
    pub points_given_back: Points,
    pub occurred_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    PointsEarned,
    ReturnReversed,
    Cancelled,
}

impl ChannelOutcome {
    /// The platform's order id, refused unless it is a number (as both platforms' ids are): the only
    /// form that goes into a URL or a global id.
    pub fn platform_order(&self) -> Result<&str, Error> {
        let r = self.order.order_ref.as_str();
        if !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()) {
            Ok(r)
        } else {
            Err(Error::rejected(
                retail_sync_contracts::events::ReasonCode::ChannelRejected,
                format!("order reference {r:?} is not a platform order id"),
            ))
        }
    }

    /// The outcome id as a record's key on a platform (a Shopify metafield key: 2 to 64 letters, digits,
    /// `_`, `-`): the id itself, `.` made `_`, when it fits; else its start and a digest of the whole, so
    /// two outcomes never share a key.
    pub fn record_key(&self) -> String {
        let plain = self.outcome_id.replace('.', "_");
        if plain.len() <= 64 {
            return plain;
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.outcome_id.as_bytes());
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{hex}", &plain[..39])
    }

    /// The sentence the service team reads on the order, the same on every platform.
    pub fn summary(&self) -> String {
        let back = |n: Points| {
            if n.get() > 0 {
                format!("; {n} redeemed points given back")
            } else {
                String::new()
            }
        };
        match self.kind {
            OutcomeKind::PointsEarned => format!("Loyalty: {} points earned", self.points),
            OutcomeKind::ReturnReversed => format!(
                "Loyalty: return refunded, {} earned points taken back{}",
                self.points,
                back(self.points_given_back)
            ),
            OutcomeKind::Cancelled => {
                format!("Loyalty: cancellation applied{}", back(self.points_given_back))
            }
        }
    }
}

/// An ecommerce platform's order API, as far as outcomes go.
#[async_trait]
pub trait ChannelOutcomes: Send + Sync {
    /// Records `outcome` on its order, once however often it is told (the record is keyed by the
    /// outcome id). A refusal is `Error::Rejected`; an answer that did not come, retryable.
    async fn tell(&self, outcome: &ChannelOutcome, key: &IdempotencyKey) -> Result<(), Error>;
}

/// What the ERP receives for a sale (POS receipt or order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErpSaleRequest {
    pub transaction: TransactionRef,
    /// The loyalty member the sale was made to, when there was one: an ERP that keeps members as
    /// customers sells to them (see the SAP mapping's `sold_to`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<MemberId>,
    pub currency: Currency,
    pub lines: Vec<LineItem>,
    pub totals: Totals,
    /// Points redeemed on an order: their value is deducted before tax, as the order states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redemption: Option<Redemption>,
    pub occurred_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErpDocument {
    pub document_id: ExternalRef,
}

/// What the ERP receives to cancel (lines of) a sales order that has not shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErpCancelRequest {
    pub transaction: TransactionRef,
    /// The cancellation's identity (`OrderCancelled.cancellation_id`, or one derived from its content):
    /// two cancellations of the same order are two documents.
    pub cancellation_id: CancellationId,
    /// Absent: every open line is cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<LineQuantity>>,
    pub currency: Currency,
    /// Net value (before tax) of what is cancelled.
    pub value_minor: Amount,
    pub reason: String,
    pub occurred_at: Timestamp,
}

/// What the ERP receives to reinstate cancelled units of an order that a shipment proved had left: they
/// are charged again (the opposite of a cancellation, for those units).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErpReinstateRequest {
    pub transaction: TransactionRef,
    /// The shipment that left with the units: the reinstatement's identity.
    pub shipment_id: ShipmentId,
    /// The cancellations the units are taken back from.
    pub cancellation_ids: Vec<CancellationId>,
    pub lines: Vec<LineQuantity>,
    pub currency: Currency,
    /// Net value (before tax) charged again: what the cancellations had credited for these units.
    pub value_minor: Amount,
    pub occurred_at: Timestamp,
}

/// What the ERP receives for goods returned against an earlier sale or order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErpReturnRequest {
    pub return_id: ReturnId,
    pub original: TransactionRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<StoreId>,
    pub currency: Currency,
    pub lines: Vec<ReturnLine>,
    /// Sum of the lines' refunds, before tax.
    pub refund_minor: Amount,
    pub occurred_at: Timestamp,
}

/// The ERP's "system API". Every mutating call carries the idempotency key; the contract obliges the
/// ERP side to return the first result for a repeated key instead of applying twice.
#[async_trait]
pub trait Erp: Send + Sync {
    /// Posts a POS sale or creates the sales order of an ecommerce order.
    /// `Err(Error::Rejected)` when the ERP refuses the document for good (validation, closed period).
    async fn post_sale(&self, request: &ErpSaleRequest, key: &IdempotencyKey) -> Result<ErpDocument, Error>;
    /// Cancels (lines of) an order. `Err(Error::Rejected)` when the ERP refuses (e.g. already shipped).
    async fn cancel_order(
        &self,
        request: &ErpCancelRequest,
        key: &IdempotencyKey,
    ) -> Result<ErpDocument, Error>;
    /// Posts a return (credit note). `Err(Error::Rejected)` when the ERP refuses it for good.
    async fn post_return(
        &self,
        request: &ErpReturnRequest,
        key: &IdempotencyKey,
    ) -> Result<ErpDocument, Error>;
    /// Reinstates cancelled units that shipped after all. `Err(Error::Rejected)` when the ERP refuses.
    async fn reinstate(
        &self,
        request: &ErpReinstateRequest,
        key: &IdempotencyKey,
    ) -> Result<ErpDocument, Error>;
}

/// What the loyalty platform receives to accrue; it computes the points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccrualRequest {
    pub member_id: MemberId,
    pub transaction: TransactionRef,
    pub currency: Currency,
    /// Net value (before tax, after discounts) of the lines that earn.
    pub eligible_minor: Amount,
    pub occurred_at: Timestamp,
    /// The end of the sale's return window (see `settlement::ReturnWindows`): the points are pending —
    /// the member's, not spendable — until retail-sync confirms them after this instant; a return before
    /// then cancels them. Absent: spendable at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_until: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accrual {
    pub loyalty_transaction_id: ExternalRef,
    pub points: Points,
    pub balance: Points,
    /// The platform holds the points pending (it was asked to, and it can): they wait for
    /// [`Loyalty::confirm_accrual`]. `false` from a platform that holds nothing pending (the points are
    /// spendable at once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// Pending points made spendable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confirmation {
    pub loyalty_transaction_id: ExternalRef,
    /// What was still pending and is now spendable (less than the accrual when a return cancelled part
    /// of it; 0 when a return cancelled it all).
    pub points_confirmed: Points,
    pub balance: Points,
}

/// A member's points: `balance` is what they own, `held` what open holds reserve, `available` the
/// difference (what a new hold may take).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Balance {
    pub member_id: MemberId,
    pub balance: Points,
    pub held: Points,
    pub available: Points,
    /// Earned points waiting for their sale's return window to end: not in `balance`, not spendable.
    #[serde(default)]
    pub pending: Points,
}

/// A request to reserve points for a basket at checkout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldRequest {
    pub member_id: MemberId,
    pub points: Points,
    pub currency: Currency,
    /// Net value of the basket before tax: a redemption is applied before tax, so its value may not
    /// exceed this.
    pub basket_net_minor: Amount,
    /// After this instant the hold is released by the platform without anyone asking.
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    Held,
    Committed,
    Released,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Committed => "committed",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }
}

/// A points reservation and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub hold_id: HoldId,
    pub member_id: MemberId,
    pub points: Points,
    pub currency: Currency,
    /// What the points are worth, before tax, as the loyalty platform values them. Orders carry this
    /// figure; no other system re-derives it.
    pub value_minor: Amount,
    pub status: HoldStatus,
    pub expires_at: Timestamp,
    /// The order the hold was committed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<TransactionRef>,
    /// The redemption transaction on the loyalty ledger, once committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loyalty_transaction_id: Option<ExternalRef>,
}

/// Commits a hold to the order that used it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRequest {
    pub transaction: TransactionRef,
    /// The points the order says it redeemed; the platform refuses a commit that disagrees with the hold.
    pub points: Points,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentKind {
    /// Earned points taken back (a return).
    Reversal,
    /// Redeemed points given back (a return, a cancellation, a compensation).
    Recredit,
    /// Earned points given back that returns reversed beyond their share: a return decided before a
    /// later shipment of its order earned took a share of less (see `Ledger::decide_correction`).
    Restore,
}

/// A correction of a member's balance tied to an earlier transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdjustmentRequest {
    pub member_id: MemberId,
    pub kind: AdjustmentKind,
    /// The transaction whose points are corrected.
    pub transaction: TransactionRef,
    /// What caused the correction (a return id, a cancellation id, `compensation`).
    pub reference: String,
    /// How many points (always positive; `kind` gives the direction).
    pub points: Points,
    pub occurred_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adjustment {
    pub loyalty_transaction_id: ExternalRef,
    /// Signed change applied: to the balance, and for a reversal also to the transaction's pending
    /// points (see `pending_cancelled`).
    pub delta: i64,
    pub balance: Points,
    /// Of a reversal: the points taken from the transaction's pending accruals (a return inside the return
    /// window cancels pending points before it reverses spendable ones); the rest came off the balance.
    #[serde(default, skip_serializing_if = "Points::is_zero")]
    pub pending_cancelled: Points,
}

#[async_trait]
pub trait Loyalty: Send + Sync {
    /// `Err(Error::Rejected)` for e.g. an unknown or closed member.
    async fn accrue(&self, request: &AccrualRequest, key: &IdempotencyKey) -> Result<Accrual, Error>;
    /// `Err(Error::Rejected)` for an unknown member.
    async fn balance(&self, member_id: &MemberId) -> Result<Balance, Error>;
    /// Reserves points. `Err(Error::Rejected)` when the member lacks them or their value exceeds the
    /// basket before tax.
    async fn create_hold(&self, request: &HoldRequest, key: &IdempotencyKey) -> Result<Hold, Error>;
    async fn get_hold(&self, hold_id: &HoldId) -> Result<Hold, Error>;
    /// Spends the held points for an order. `Err(Error::Rejected)` when the hold is expired, released,
    /// unknown, committed to another order or for other points.
    async fn commit_hold(
        &self,
        hold_id: &HoldId,
        request: &CommitRequest,
        key: &IdempotencyKey,
    ) -> Result<Hold, Error>;
    /// Gives a held (not committed) reservation back. Releasing a released or expired hold is a no-op
    /// that returns it; a committed one is `Err(Error::Rejected)` (re-credit it instead).
    async fn release_hold(&self, hold_id: &HoldId, key: &IdempotencyKey) -> Result<Hold, Error>;
    /// Reverses earned or re-credits redeemed points.
    async fn adjust(&self, request: &AdjustmentRequest, key: &IdempotencyKey) -> Result<Adjustment, Error>;
    /// Makes an accrual's pending points spendable (what a return has not cancelled). Confirming again
    /// answers the first confirmation. `Err(Error::Rejected)` for an unknown accrual or one that was never
    /// pending. A platform that holds nothing pending never answers `pending` and is never asked.
    async fn confirm_accrual(
        &self,
        loyalty_transaction_id: &ExternalRef,
        key: &IdempotencyKey,
    ) -> Result<Confirmation, Error> {
        let _ = key;
        Err(Error::rejected(
            retail_sync_contracts::events::ReasonCode::LoyaltyRejected,
            format!("this loyalty platform holds no points pending ({loyalty_transaction_id})"),
        ))
    }
}

/// What a document in the ERP's books is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    Sale,
    Cancellation,
    Return,
    Reinstatement,
}

/// One document as the ERP's books show it, for reconciliation (see `reconcile`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookedDocument {
    pub document_id: ExternalRef,
    pub kind: DocumentKind,
    /// The sale or order the document belongs to (a return's original transaction).
    pub transaction: TransactionRef,
    /// The cancellation, return or reinstating shipment id; sales have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub currency: Currency,
    /// Net value before tax, never negative (`kind` gives the direction).
    pub net_minor: Amount,
    /// Sales only: the value of the points redeemed on it, as booked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redemption_minor: Option<Amount>,
    pub occurred_at: Timestamp,
}

/// What a movement on the loyalty platform's ledger is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointsKind {
    Accrual,
    Redemption,
    Reversal,
    Recredit,
    /// Earned points a return had reversed, given back (see [`AdjustmentKind::Restore`]).
    Restore,
    /// A merge of two members' balances (no transaction of ours).
    Merge,
}

/// One movement of points as the loyalty platform's ledger shows it, for reconciliation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookedPoints {
    pub loyalty_transaction_id: ExternalRef,
    pub kind: PointsKind,
    pub member_id: MemberId,
    /// The sale or order the points belong to; merges have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<TransactionRef>,
    /// Adjustments: what caused them (`return:<id>`, `cancellation:<id>`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Signed change of the balance.
    pub points: i64,
    /// Reversals that took less than they asked (the member had spent the points): what was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_points: Option<Points>,
    /// Redemptions: what the points were worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_minor: Option<Amount>,
    /// Accruals: the points still pending (neither confirmed nor cancelled by a return) as of the read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_points: Option<Points>,
    pub occurred_at: Timestamp,
}

/// The ERP's books, read back: every document whose business time is in `[from, until)`, in any order.
#[async_trait]
pub trait ErpBooks: Send + Sync {
    async fn documents(&self, from: Timestamp, until: Timestamp) -> Result<Vec<BookedDocument>, Error>;
}

/// The loyalty platform's ledger, read back: every movement whose business time is in `[from, until)`.
#[async_trait]
pub trait LoyaltyBooks: Send + Sync {
    async fn movements(&self, from: Timestamp, until: Timestamp) -> Result<Vec<BookedPoints>, Error>;
}

/// What a system is told about a member: retail-sync's record of the member at `revision`, cut to what
/// that system is to hold (see `members::Snapshot`). Whole state, never a delta: a system keeps the
/// highest revision it was told and ignores an older one, so redeliveries and reordering change nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberSnapshot {
    pub member_id: MemberId,
    pub revision: u64,
    pub status: retail_sync_contracts::events::MemberStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_store_id: Option<StoreId>,
    pub marketing_consent: bool,
    /// Personal data, absent once erased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// The address campaigns go to: the e-mail, and only while the member consents to marketing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marketing_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<MemberId>,
}

/// A system that keeps a copy of members (the ERP's customer accounts, the CRM's contacts, the loyalty
/// platform's member profiles).
#[async_trait]
pub trait MemberSync: Send + Sync {
    /// Brings the system's copy of the member to `snapshot`, unless it holds a later revision (then
    /// nothing changes). Repeating a key repeats nothing. `Err(Error::Rejected)` when the system refuses
    /// (`MemberNotEnrolled` from a loyalty platform that does not know the member).
    async fn sync_member(&self, snapshot: &MemberSnapshot, key: &IdempotencyKey) -> Result<(), Error>;
}

/// The loyalty platform's member administration, beyond points.
#[async_trait]
pub trait LoyaltyMembers: MemberSync {
    /// Enrols the member; enrolling an enrolled member changes nothing. `Err(Error::Rejected)` with
    /// `MemberNotEnrolled` when the platform will not enrol the id (a card number never issued).
    async fn enrol(&self, member_id: &MemberId, key: &IdempotencyKey) -> Result<(), Error>;
    /// Moves the duplicate's balance and transactions to the survivor and closes the duplicate as merged,
    /// once per key; returns the points moved. Merging again into the same survivor returns the first
    /// result. `Err(Error::Rejected)`: `MergeRefused` for the same member twice, a duplicate merged
    /// elsewhere, or one with open holds; `MemberNotEnrolled` for a member the platform does not know
    /// (yet: the merge waits for both enrolments).
    async fn merge(
        &self,
        duplicate: &MemberId,
        survivor: &MemberId,
        key: &IdempotencyKey,
    ) -> Result<Points, Error>;
}

/// The systems a member's record is propagated to, as this deployment connects them (`None`: not
/// connected, or a connector that does not carry members).
#[derive(Clone, Default)]
pub struct MemberSystems {
    pub loyalty: Option<Arc<dyn LoyaltyMembers>>,
    pub erp: Option<Arc<dyn MemberSync>>,
    pub crm: Option<Arc<dyn MemberSync>>,
}

/// A queue message handed out by a receive, with the handle that deletes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub message: crate::steps::Message,
    pub receipt: String,
}

/// Consuming a queue the way Lambda's SQS event source mapping does; the local runner drives the steps
/// through this on backends without Lambda (embedded, an emulator).
#[async_trait]
pub trait QueueConsumer: Send + Sync {
    /// Up to `max` visible messages; each becomes invisible for the queue's visibility timeout.
    async fn receive(&self, queue: &str, max: usize) -> Result<Vec<Received>, Error>;
    /// Acknowledges processed messages.
    async fn delete(&self, queue: &str, receipts: &[String]) -> Result<(), Error>;
    /// Keeps a received message invisible for `wait` from now (SQS ChangeMessageVisibility): a failed
    /// message's backoff, or the wait a dependency asked for.
    async fn change_visibility(&self, queue: &str, receipt: &str, wait: Duration) -> Result<(), Error>;
    /// [`change_visibility`](Self::change_visibility), and the receive that handed the message out does
    /// not count toward its queue's maxReceiveCount: a local run's message that waits for another step
    /// while the run moves on (see `runner::Patience`). SQS cannot take a receive back: there, and by
    /// default, this is `change_visibility`.
    async fn defer(&self, queue: &str, receipt: &str, wait: Duration) -> Result<(), Error> {
        self.change_visibility(queue, receipt, wait).await
    }
}

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Business metrics (EMF on Lambda, counters in the local summary).
pub trait Metrics: Send + Sync {
    /// Adds `value` to the counter `name`, optionally split by one dimension (e.g. `reason`).
    fn add(&self, name: &'static str, value: u64, dimension: Option<(&'static str, &str)>);
    /// [`Metrics::add`] for a transaction of `channel` (`pos`, `ecommerce`, …): also split by channel,
    /// counted once in the step's total. Adapters without a channel split just add.
    fn add_for(
        &self,
        channel: &str,
        name: &'static str,
        value: u64,
        dimension: Option<(&'static str, &str)>,
    ) {
        let _ = channel;
        self.add(name, value, dimension);
    }
}

/// A step's metrics for one transaction: every counter also split by the transaction's channel.
pub struct ForChannel<'a> {
    pub inner: &'a dyn Metrics,
    pub channel: &'a str,
}

impl Metrics for ForChannel<'_> {
    fn add(&self, name: &'static str, value: u64, dimension: Option<(&'static str, &str)>) {
        self.inner.add_for(self.channel, name, value, dimension);
    }
}

/// Metrics that go nowhere, for callers that do not care.
pub struct NoMetrics;

impl Metrics for NoMetrics {
    fn add(&self, _: &'static str, _: u64, _: Option<(&'static str, &str)>) {}
}

#[cfg(test)]
mod quarantine_shape {
    use super::QuarantineItem;

    /// A quarantine entry as stored before it embedded the rejection (flat fields) reads, and is written
    /// back, the same: entries live for ninety days across deployments.
    #[test]
    fn a_stored_entry_reads_and_writes_as_before() {
        let stored = serde_json::json!({
            "id": "post-return-to-erp:evt-1:0a1b2c3d",
            "received_at": "2026-11-20T10:00:00Z",
            "step": "post-return-to-erp",
            "reason": "over_return",
            "message": "return r-1 refused: line 1: 5 returned",
            "findings": ["line 1"],
            "detail_type": "ReturnReceived",
            "event_id": "evt-1",
            "correlation_id": "c-1",
            "body": "{}",
            "body_truncated": false
        });
        let item: QuarantineItem = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(item.rejection.message, "return r-1 refused: line 1: 5 returned");
        assert_eq!(serde_json::to_value(&item).unwrap(), stored);
    }
}

#[cfg(test)]
mod outcome_keys {
    use super::*;

    fn outcome(id: &str) -> ChannelOutcome {
        ChannelOutcome {
            outcome_id: id.to_owned(),
            order_id: OrderId::parse("web-1").unwrap(),
            order: retail_sync_contracts::events::ChannelOrder {
                platform: retail_sync_contracts::events::ChannelPlatform::Shopify,
                order_ref: PlatformId::parse("1").unwrap(),
            },
            kind: OutcomeKind::PointsEarned,
            points: Points::ZERO,
            points_given_back: Points::ZERO,
            occurred_at: "2026-11-21T09:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn record_keys_fit_a_metafield_key_and_never_collide() {
        assert_eq!(outcome("earned-shp.1").record_key(), "earned-shp_1");
        let a = outcome(&format!("returned-{}", "r".repeat(60))).record_key();
        let b = outcome(&format!("returned-{}x", "r".repeat(59))).record_key();
        assert!(a.len() <= 64 && b.len() <= 64, "{a} {b}");
        assert_ne!(a, b);
        let bad = ChannelOutcome {
            order: retail_sync_contracts::events::ChannelOrder {
                platform: retail_sync_contracts::events::ChannelPlatform::Shopify,
                order_ref: PlatformId::parse("gid-1").unwrap(),
            },
            ..outcome("x")
        };
        assert!(bad.platform_order().is_err());
    }
}
