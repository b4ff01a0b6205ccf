//! Small valid requests, for tests, demos and smoke checks against a simulator or a real system.

use jiff::Timestamp;

use retail_sync_contracts::events::TransactionRef;
use retail_sync_contracts::values::{Amount, Currency, MemberId, ReceiptId, Sku, StoreId};
use retail_sync_contracts::{LineItem, Totals};
use retail_sync_core::ports::{AccrualRequest, ErpSaleRequest};

/// The identifiers are the caller's; a bad one is a bug in the caller, hence the panics.
fn receipt(store_id: &str, receipt_id: &str) -> TransactionRef {
    TransactionRef::Receipt {
        store_id: StoreId::parse(store_id).expect("a valid store id"),
        receipt_id: ReceiptId::parse(receipt_id).expect("a valid receipt id"),
    }
}

fn eur() -> Currency {
    Currency::parse("EUR").expect("EUR is a currency")
}

fn amount(minor: i64) -> Amount {
    Amount::new(minor).expect("a small non-negative amount")
}

fn at() -> Timestamp {
    Timestamp::from_second(1_780_000_000).expect("a valid instant")
}

/// A one-line EUR sale: net 10.00, tax 1.90, gross 11.90.
pub fn sale(store_id: &str, receipt_id: &str) -> ErpSaleRequest {
    ErpSaleRequest {
        transaction: receipt(store_id, receipt_id),
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
        }],
        totals: Totals {
            net_minor: amount(1000),
            tax_minor: amount(190),
            gross_minor: amount(1190),
        },
        occurred_at: at(),
    }
}

/// An EUR accrual on `eligible_minor` for a receipt of `store-1`.
pub fn accrual(member_id: &str, receipt_id: &str, eligible_minor: i64) -> AccrualRequest {
    AccrualRequest {
        member_id: MemberId::parse(member_id).expect("a valid member id"),
        transaction: receipt("store-1", receipt_id),
        currency: eur(),
        eligible_minor: amount(eligible_minor),
        occurred_at: at(),
    }
}
