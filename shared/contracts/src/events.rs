//! Payloads (`detail.data`) of the v1 contracts. Money is integer minor units in the event's `currency`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::values::*;

/// One priced line of a sale or order. `net_minor` = quantity × unit price − discount, before tax; the
/// loyalty platform earns on the net of eligible lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LineItem {
    #[schemars(range(min = 1, max = 9999))]
    #[serde(deserialize_with = "bounded_u32::<_, 1, 9999>")]
    pub line_no: u32,
    pub sku: Sku,
    #[schemars(range(min = 1, max = 100000))]
    #[serde(deserialize_with = "bounded_u32::<_, 1, 100000>")]
    pub quantity: u32,
    pub unit_price_minor: Amount,
    #[serde(default)]
    pub discount_minor: Amount,
    pub net_minor: Amount,
    pub tax_minor: Amount,
    /// False for lines the retailer excludes from earning (gift cards, tobacco, …).
    pub loyalty_eligible: bool,
    /// The line's own id in the platform that sent the order (a Shopify line item id, an Adobe Commerce
    /// order item id): the platform's shipments and refunds name lines by it, and the mapper finds their
    /// `line_no` through it. Absent for channels that speak the canonical contract themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_line_id: Option<PlatformId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    pub net_minor: Amount,
    pub tax_minor: Amount,
    pub gross_minor: Amount,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenderMethod {
    Cash,
    Card,
    GiftCard,
    Points,
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tender {
    pub method: TenderMethod,
    pub amount_minor: Amount,
    /// A `points` tender: how many points paid `amount_minor`. With it, a return gives back its share of
    /// them (as an order's redeemed points); without it, they cannot be given back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<Points>,
}

/// A completed point-of-sale transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaleCompleted {
    pub store_id: StoreId,
    pub receipt_id: ReceiptId,
    /// Absent for anonymous sales: they are posted to the ERP and earn nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<MemberId>,
    pub currency: Currency,
    #[schemars(length(min = 1, max = 500))]
    #[serde(deserialize_with = "bounded_vec::<_, _, 1, 500>")]
    pub lines: Vec<LineItem>,
    pub totals: Totals,
    #[schemars(length(min = 1, max = 20))]
    #[serde(deserialize_with = "bounded_vec::<_, _, 1, 20>")]
    pub tenders: Vec<Tender>,
}

/// Points redeemed at checkout. `value_minor` is applied to the basket before tax, the same in every
/// system; it is carried explicitly so no system re-derives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redemption {
    pub hold_id: HoldId,
    pub points: Points,
    pub value_minor: Amount,
}

/// An ecommerce / mobile / marketplace order accepted for fulfilment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderPlaced {
    pub order_id: OrderId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<MemberId>,
    pub currency: Currency,
    #[schemars(length(min = 1, max = 500))]
    #[serde(deserialize_with = "bounded_vec::<_, _, 1, 500>")]
    pub lines: Vec<LineItem>,
    pub totals: Totals,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redemption: Option<Redemption>,
    /// The order in the ecommerce platform it came from, when retail-sync mapped it from that platform's
    /// own events: where the order's outcomes (points earned, reversed, a cancellation) are told back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_order: Option<ChannelOrder>,
}

/// The ecommerce platforms retail-sync maps orders from and tells outcomes back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelPlatform {
    Shopify,
    AdobeCommerce,
}

/// An order's own id in its platform (a Shopify order id, an Adobe Commerce order `entity_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelOrder {
    pub platform: ChannelPlatform,
    pub order_ref: PlatformId,
}

/// A quantity of one order line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LineQuantity {
    #[schemars(range(min = 1, max = 9999))]
    #[serde(deserialize_with = "bounded_u32::<_, 1, 9999>")]
    pub line_no: u32,
    #[schemars(range(min = 1, max = 100000))]
    #[serde(deserialize_with = "bounded_u32::<_, 1, 100000>")]
    pub quantity: u32,
}

/// (Part of) an order left the warehouse. Points accrue on shipped lines only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderShipped {
    pub order_id: OrderId,
    pub shipment_id: ShipmentId,
    #[schemars(length(min = 1, max = 500))]
    #[serde(deserialize_with = "bounded_vec::<_, _, 1, 500>")]
    pub lines: Vec<LineQuantity>,
}

/// An order, or some of its lines, cancelled before shipment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderCancelled {
    pub order_id: OrderId,
    /// The cancellation's own id, unique within the order: a cancellation re-sent under another event id
    /// is recognised by it. Optional in v1; without it the cancellation is identified by its content
    /// and business time (see the README, "Cancellations").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation_id: Option<CancellationId>,
    /// Absent: the whole order is cancelled.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_opt_vec::<_, _, 1, 500>"
    )]
    #[schemars(length(min = 1, max = 500))]
    pub lines: Option<Vec<LineQuantity>>,
    #[schemars(length(max = 500))]
    pub reason: String,
}

/// The business transaction something refers to: a POS receipt or an order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TransactionRef {
    Receipt {
        store_id: StoreId,
        receipt_id: ReceiptId,
    },
    Order {
        order_id: OrderId,
    },
}

/// A returned line, referring to the original transaction's line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnLine {
    #[schemars(range(min = 1, max = 9999))]
    #[serde(deserialize_with = "bounded_u32::<_, 1, 9999>")]
    pub line_no: u32,
    pub sku: Sku,
    #[schemars(range(min = 1, max = 100000))]
    #[serde(deserialize_with = "bounded_u32::<_, 1, 100000>")]
    pub quantity: u32,
    /// Refunded net value of these units, before tax.
    pub refund_minor: Amount,
}

/// Goods came back, in any channel (bought online, returned in store is normal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnReceived {
    pub return_id: ReturnId,
    pub original: TransactionRef,
    /// Where the goods were handed back, when it was a store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<StoreId>,
    pub currency: Currency,
    #[schemars(length(min = 1, max = 500))]
    #[serde(deserialize_with = "bounded_vec::<_, _, 1, 500>")]
    pub lines: Vec<ReturnLine>,
}

/// A refund for a return was paid out: the payment side's word on how. Its `points` tenders (each with
/// its `points`) are the redeemed or tendered points given back for the return, instead of the share the
/// return's value would give back (README, "Refunds paid with points"); a refund with no `points` tender
/// gives no points back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundSettled {
    pub refund_id: RefundId,
    pub return_id: ReturnId,
    pub original: TransactionRef,
    pub currency: Currency,
    #[schemars(length(min = 1, max = 20))]
    #[serde(deserialize_with = "bounded_vec::<_, _, 1, 20>")]
    pub tenders: Vec<Tender>,
}

/// Customer master data changed in a system (the CRM, a shop's account page, the POS). Only the
/// attributes present are changed; which source may change which attribute is the member ownership table
/// (README, "Customers, tiers and consent").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerUpdated {
    pub member_id: MemberId,
    /// Profile: the member's name as they gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub name: Option<String>,
    /// Contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 254))]
    pub email: Option<String>,
    /// Contact, E.164 or national digits (spaces, dashes and brackets are ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 32))]
    pub phone: Option<String>,
    /// The sender checked the contact data (a confirmed e-mail, a verified phone): a verified value is
    /// not overwritten by an unverified one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_verified: Option<bool>,
    /// Consent to marketing; `false` is a withdrawal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marketing_consent: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_store_id: Option<StoreId>,
}

/// A new loyalty member signed up (at a till, on the web, in the app, in the CRM). The member is enrolled
/// on the loyalty platform and known to the ERP and the CRM from then on; the attributes are applied as a
/// `CustomerUpdated` from the same source would be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberEnrolled {
    pub member_id: MemberId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 254))]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 32))]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marketing_consent: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_store_id: Option<StoreId>,
}

/// The member asked for their personal data to be erased (GDPR art. 17): name, e-mail and phone are
/// removed from every system and from retail-sync's own records; points and the books stay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequested {
    pub member_id: MemberId,
}

/// Two member accounts are one person: the duplicate's points and history move to the survivor, once,
/// and the duplicate is closed as merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberMergeRequested {
    pub survivor_id: MemberId,
    pub duplicate_id: MemberId,
}

/// A member's tier changed on the loyalty platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TierChanged {
    pub member_id: MemberId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_tier: Option<Tier>,
    pub new_tier: Tier,
    #[schemars(length(max = 500))]
    pub reason: String,
}

/// Outbound: a new member's e-mail or phone is already another member's. Never merged without a
/// person: an operator (or the CRM) merges with `MemberMergeRequested`. Carries no personal data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DuplicateMemberSuspected {
    pub member_id: MemberId,
    pub existing_member_id: MemberId,
    /// `email`, `phone`.
    #[schemars(length(min = 1, max = 2))]
    #[serde(deserialize_with = "bounded_vec::<_, _, 1, 2>")]
    pub matched_on: Vec<String>,
}

/// Outbound: a difference the nightly reconciliation found between retail-sync's sagas, the ERP's
/// documents and the loyalty platform's ledger that it did not repair (see the README's
/// "Reconciliation"). One per difference and window; carries no personal data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationMismatch {
    /// `missing_accrual`, `double_accrual`, `amount_mismatch`, `reversal_missing`,
    /// `redemption_not_booked`, `document_missing`, `orphan_document`, `stuck_saga`.
    #[schemars(length(min = 1, max = 40))]
    pub difference: String,
    /// Stable across runs: the same difference found again has the same id.
    #[schemars(length(min = 1, max = 300))]
    pub finding_id: String,
    /// `loyalty`, `erp`, `retail-sync`.
    #[schemars(length(min = 1, max = 20))]
    pub system: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub transaction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 120))]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<i64>,
    /// Whether `retail-sync reconcile --repair` can repair it.
    pub repairable: bool,
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub window_from: jiff::Timestamp,
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub window_to: jiff::Timestamp,
    #[schemars(length(max = 500))]
    pub message: String,
}

/// A member's account status, the same in every system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    Active,
    /// Merged into another member (`merged_into`); their points moved there.
    Merged,
    /// Personal data erased on the member's request.
    Erased,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Merged => "merged",
            Self::Erased => "erased",
        }
    }
}

/// Outbound: a member's record changed; for the POS and digital channels (tier at the till, consent
/// in the app). Carries no personal data. `revision` increases with every change of the member: a
/// consumer keeps the highest it saw and ignores an older one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberChanged {
    pub member_id: MemberId,
    #[schemars(range(min = 1))]
    pub revision: u64,
    pub status: MemberStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_store_id: Option<StoreId>,
    pub marketing_consent: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<MemberId>,
}

/// Outbound: the ERP accepted a sale (POS receipt or order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErpSalePosted {
    pub transaction: TransactionRef,
    pub erp_document_id: ExternalRef,
    pub currency: Currency,
    pub totals: Totals,
}

/// Outbound: the ERP accepted a return.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErpReturnPosted {
    pub return_id: ReturnId,
    pub original: TransactionRef,
    pub erp_document_id: ExternalRef,
    pub currency: Currency,
    pub refund_minor: Amount,
}

/// Outbound: points were accrued on the loyalty platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoyaltyAccrued {
    pub member_id: MemberId,
    pub transaction: TransactionRef,
    /// The shipment that earned, for orders (points accrue per shipment, never at order time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipment_id: Option<ShipmentId>,
    pub points: Points,
    /// The value the loyalty platform earned on, in the transaction's currency.
    pub eligible_minor: Amount,
    pub currency: Currency,
    pub loyalty_transaction_id: ExternalRef,
}

/// Outbound: a cancellation of (lines of) an order took effect: the ERP booked it (`erp_document_id`),
/// and the redeemed points it gives back are decided. Not announced for a cancellation that found nothing
/// open, was refused, or came for an order that failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderCancellationApplied {
    pub order_id: OrderId,
    pub cancellation_id: CancellationId,
    /// The units cancelled (a requested unit that had shipped is not among them).
    #[schemars(length(min = 1, max = 500))]
    #[serde(deserialize_with = "bounded_vec::<_, _, 1, 500>")]
    pub lines: Vec<LineQuantity>,
    pub net_minor: Amount,
    pub erp_document_id: ExternalRef,
    /// Redeemed points given back for the cancelled units.
    pub points_recredited: Points,
}

/// Outbound: points were reversed for a return (earned points taken back in proportion to the returned
/// eligible value; redeemed points given back in proportion to the refunded value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoyaltyReversed {
    pub member_id: MemberId,
    pub return_id: ReturnId,
    pub original: TransactionRef,
    /// Earned points taken back by this return.
    pub points: Points,
    /// Ledger transaction of the reversal; absent when nothing was due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loyalty_transaction_id: Option<ExternalRef>,
    /// Redeemed points given back by this return.
    #[serde(default)]
    pub points_recredited: Points,
    /// Totals over every return of the original transaction so far.
    pub total_reversed: Points,
    pub total_earned: Points,
}

/// Outbound: the points redeemed at checkout were spent on the order; the ERP sales order follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedemptionCommitted {
    pub order_id: OrderId,
    pub member_id: MemberId,
    pub hold_id: HoldId,
    pub points: Points,
    /// Applied to the order before tax.
    pub value_minor: Amount,
    pub currency: Currency,
    pub loyalty_transaction_id: ExternalRef,
}

/// Outbound (internal): a step failed for good after earlier steps took effect; the compensate step
/// undoes those effects in reverse order and closes the saga as `compensated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompensationRequested {
    pub transaction: TransactionRef,
    #[schemars(length(min = 1, max = 64))]
    pub failed_step: String,
    pub reason: ReasonCode,
    #[schemars(length(max = 2000))]
    pub message: String,
}

/// Machine-readable reasons a workflow stopped. Stable strings: operators and tools filter on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    InvalidJson,
    NotAnEnvelope,
    Oversized,
    UnknownEventType,
    UnknownSchemaVersion,
    SchemaViolation,
    MissingIdentifier,
    BusinessRuleViolation,
    IdempotencyKeyReused,
    ErpRejected,
    LoyaltyRejected,
    RetriesExhausted,
    /// More units returned than were bought (or shipped and kept), or a return id reused.
    OverReturn,
    /// A shipment or cancellation for more units than are open on the order.
    QuantityExceeded,
    /// The points hold of an order could not be committed (expired, released, unknown, mismatched).
    RedemptionRefused,
    /// A follow-up event for a transaction that failed or was compensated: nothing to apply it to.
    TransactionClosed,
    /// A workflow event that does not match what its saga records (a forgery, or a bug): never applied.
    InconsistentWithSaga,
    /// An inbound event from a source that may not send its type (see the source policy).
    SourceNotAllowed,
    /// A channel platform's native payload (Shopify, Adobe Commerce) that the mapping cannot turn into
    /// a canonical event: an unknown product or location, a missing field, an amount that does not read.
    Unmappable,
    /// An ecommerce platform refused to record an order's outcome (a missing order, a refused field).
    ChannelRejected,
    /// A member attribute sent by a source that does not own it (see the member ownership table).
    NotOwner,
    /// The loyalty platform does not know the member (not enrolled, or the id was never issued).
    MemberNotEnrolled,
    /// A merge of two members that cannot be done (the same member, one unknown, already merged).
    MergeRefused,
    /// The CRM refused a member's record.
    CrmRejected,
}

impl ReasonCode {
    pub const ALL: &[ReasonCode] = &[
        Self::InvalidJson,
        Self::NotAnEnvelope,
        Self::Oversized,
        Self::UnknownEventType,
        Self::UnknownSchemaVersion,
        Self::SchemaViolation,
        Self::MissingIdentifier,
        Self::BusinessRuleViolation,
        Self::IdempotencyKeyReused,
        Self::ErpRejected,
        Self::LoyaltyRejected,
        Self::RetriesExhausted,
        Self::OverReturn,
        Self::QuantityExceeded,
        Self::RedemptionRefused,
        Self::TransactionClosed,
        Self::InconsistentWithSaga,
        Self::SourceNotAllowed,
        Self::Unmappable,
        Self::ChannelRejected,
        Self::NotOwner,
        Self::MemberNotEnrolled,
        Self::MergeRefused,
        Self::CrmRejected,
    ];

    /// The wire name (as serialized), for logs, metric dimensions and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::NotAnEnvelope => "not_an_envelope",
            Self::Oversized => "oversized",
            Self::UnknownEventType => "unknown_event_type",
            Self::UnknownSchemaVersion => "unknown_schema_version",
            Self::SchemaViolation => "schema_violation",
            Self::MissingIdentifier => "missing_identifier",
            Self::BusinessRuleViolation => "business_rule_violation",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::ErpRejected => "erp_rejected",
            Self::LoyaltyRejected => "loyalty_rejected",
            Self::RetriesExhausted => "retries_exhausted",
            Self::OverReturn => "over_return",
            Self::QuantityExceeded => "quantity_exceeded",
            Self::RedemptionRefused => "redemption_refused",
            Self::TransactionClosed => "transaction_closed",
            Self::InconsistentWithSaga => "inconsistent_with_saga",
            Self::SourceNotAllowed => "source_not_allowed",
            Self::Unmappable => "unmappable",
            Self::ChannelRejected => "channel_rejected",
            Self::NotOwner => "not_owner",
            Self::MemberNotEnrolled => "member_not_enrolled",
            Self::MergeRefused => "merge_refused",
            Self::CrmRejected => "crm_rejected",
        }
    }
}

/// Outbound: a workflow could not complete; operators and channels are told why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowException {
    /// The step that stopped (`ingest`, `post-sale-to-erp`, …).
    #[schemars(length(min = 1, max = 64))]
    pub step: String,
    pub reason: ReasonCode,
    #[schemars(length(max = 2000))]
    pub message: String,
    /// The `detail-type` of the event that was being processed, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail_type: Option<String>,
    /// The id of the event that was being processed, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_event_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::ReasonCode;

    #[test]
    fn reason_names_are_the_serialized_ones() {
        for &r in ReasonCode::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }
}
