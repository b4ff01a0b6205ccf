//! Small valid requests, for tests, demos and smoke checks against a simulator or a real system.

use jiff::{SignedDuration, Timestamp};

use retail_sync_contracts::events::{MemberStatus, ReturnLine, TransactionRef};
use retail_sync_contracts::values::{
    Amount, CancellationId, Currency, MemberId, OrderId, Points, ReceiptId, ReturnId, ShipmentId, Sku,
    StoreId, Tier,
};
use retail_sync_contracts::{LineItem, Totals};
use retail_sync_core::ports::{
    AccrualRequest, AdjustmentKind, AdjustmentRequest, CommitRequest, ErpCancelRequest, ErpReinstateRequest,
    ErpReturnRequest, ErpSaleRequest, HoldRequest, MemberSnapshot,
};

/// A receipt reference. The identifiers are the caller's; a bad one is a bug in the caller, hence the
/// panics.
pub fn receipt(store_id: &str, receipt_id: &str) -> TransactionRef {
    TransactionRef::Receipt {
        store_id: StoreId::parse(store_id).expect("a valid store id"),
        receipt_id: ReceiptId::parse(receipt_id).expect("a valid receipt id"),
    }
}

/// An order reference.
pub fn order(order_id: &str) -> TransactionRef {
    TransactionRef::Order {
        order_id: OrderId::parse(order_id).expect("a valid order id"),
    }
}

fn eur() -> Currency {
    Currency::parse("EUR").expect("EUR is a currency")
}

fn amount(minor: i64) -> Amount {
    Amount::new(minor).expect("a small non-negative amount")
}

fn points(n: i64) -> Points {
    Points::new(n).expect("a small non-negative number of points")
}

fn member(member_id: &str) -> MemberId {
    MemberId::parse(member_id).expect("a valid member id")
}

fn at() -> Timestamp {
    Timestamp::from_second(1_780_000_000).expect("a valid instant")
}

/// A one-line EUR sale: net 10.00, tax 1.90, gross 11.90.
pub fn sale(store_id: &str, receipt_id: &str) -> ErpSaleRequest {
    sale_of(receipt(store_id, receipt_id))
}

/// The sales order of an order, with the lines and totals of [`sale`].
pub fn order_sale(order_id: &str) -> ErpSaleRequest {
    sale_of(order(order_id))
}

fn sale_of(transaction: TransactionRef) -> ErpSaleRequest {
    ErpSaleRequest {
        member_id: None,
        transaction,
        currency: eur(),
        lines: vec![LineItem {
            line_no: 1,
            sku: Sku::parse("SKU-1").expect("a valid sku"),
            quantity: 2,
            unit_price_minor: amount(500),
            discount_minor: Amount::ZERO,
            net_minor: amount(1000),
            tax_minor: amount(190),
            loyalty_eligible: true,
            channel_line_id: None,
        }],
        totals: Totals {
            net_minor: amount(1000),
            tax_minor: amount(190),
            gross_minor: amount(1190),
        },
        redemption: None,
        occurred_at: at(),
    }
}

/// An EUR accrual on `eligible_minor` for a receipt of `store-1`.
pub fn accrual(member_id: &str, receipt_id: &str, eligible_minor: i64) -> AccrualRequest {
    AccrualRequest {
        member_id: member(member_id),
        transaction: receipt("store-1", receipt_id),
        currency: eur(),
        eligible_minor: amount(eligible_minor),
        occurred_at: at(),
        pending_until: None,
    }
}

/// The cancellation `cancellation_id` of every open line of `order_id`, worth 10.00 net.
pub fn cancellation(order_id: &str, cancellation_id: &str) -> ErpCancelRequest {
    ErpCancelRequest {
        transaction: order(order_id),
        cancellation_id: CancellationId::parse(cancellation_id).expect("a valid cancellation id"),
        lines: None,
        currency: eur(),
        value_minor: amount(1000),
        reason: "customer changed their mind".to_owned(),
        occurred_at: at(),
    }
}

/// Shipment `shipment_id` of `order_id` reinstating one unit of line 1 from `cancellation_id` (10.00 net).
pub fn reinstatement(order_id: &str, shipment_id: &str, cancellation_id: &str) -> ErpReinstateRequest {
    ErpReinstateRequest {
        transaction: order(order_id),
        shipment_id: ShipmentId::parse(shipment_id).expect("a valid shipment id"),
        cancellation_ids: vec![CancellationId::parse(cancellation_id).expect("a valid cancellation id")],
        lines: vec![retail_sync_contracts::events::LineQuantity {
            line_no: 1,
            quantity: 1,
        }],
        currency: eur(),
        value_minor: amount(1000),
        occurred_at: at(),
    }
}

/// The return `return_id` of one unit of line 1 of `original` (refund 5.00 net), handed back in
/// `store_id` when given.
pub fn return_of(return_id: &str, original: TransactionRef, store_id: Option<&str>) -> ErpReturnRequest {
    ErpReturnRequest {
        return_id: ReturnId::parse(return_id).expect("a valid return id"),
        original,
        store_id: store_id.map(|s| StoreId::parse(s).expect("a valid store id")),
        currency: eur(),
        lines: vec![ReturnLine {
            line_no: 1,
            sku: Sku::parse("SKU-1").expect("a valid sku"),
            quantity: 1,
            refund_minor: amount(500),
        }],
        refund_minor: amount(500),
        occurred_at: at(),
    }
}

/// A EUR hold of `held` points of `member_id` on a basket of `basket_net_minor`, expiring `expires_in`
/// after `now`.
pub fn hold(
    member_id: &str,
    held: i64,
    basket_net_minor: i64,
    now: Timestamp,
    expires_in: SignedDuration,
) -> HoldRequest {
    HoldRequest {
        member_id: member(member_id),
        points: points(held),
        currency: eur(),
        basket_net_minor: amount(basket_net_minor),
        expires_at: now + expires_in,
    }
}

/// Commits `committed` points of a hold to the order `order_id`.
pub fn commit(order_id: &str, committed: i64) -> CommitRequest {
    CommitRequest {
        transaction: order(order_id),
        points: points(committed),
    }
}

/// An adjustment of `adjusted` points of `member_id` for the order `order_id`, caused by `reference`.
pub fn adjustment(
    member_id: &str,
    kind: AdjustmentKind,
    order_id: &str,
    reference: &str,
    adjusted: i64,
) -> AdjustmentRequest {
    AdjustmentRequest {
        member_id: member(member_id),
        kind,
        transaction: order(order_id),
        reference: reference.to_owned(),
        points: points(adjusted),
        occurred_at: at(),
    }
}

/// An active member at `revision`: gold tier, home store `store-1`, consenting to marketing, with made-up
/// personal data (`Ada Example`, `ada@example.com`, `+4930123456`).
pub fn member_snapshot(member_id: &str, revision: u64) -> MemberSnapshot {
    MemberSnapshot {
        member_id: member(member_id),
        revision,
        status: MemberStatus::Active,
        tier: Some(Tier::parse("gold").expect("a valid tier")),
        home_store_id: Some(StoreId::parse("store-1").expect("a valid store id")),
        marketing_consent: true,
        name: Some("Ada Example".to_owned()),
        email: Some("ada@example.com".to_owned()),
        phone: Some("+4930123456".to_owned()),
        marketing_email: Some("ada@example.com".to_owned()),
        merged_into: None,
    }
}

/// The member of [`member_snapshot`] erased at `revision`: no personal data, no consent.
pub fn erased_snapshot(member_id: &str, revision: u64) -> MemberSnapshot {
    MemberSnapshot {
        status: MemberStatus::Erased,
        marketing_consent: false,
        name: None,
        email: None,
        phone: None,
        marketing_email: None,
        ..member_snapshot(member_id, revision)
    }
}
