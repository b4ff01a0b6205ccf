//! What a retailer's SAP tenant calls things: sales areas per store, materials per SKU, sold-to parties
//! per member, document types, condition types and the field the idempotency stamp goes in. One JSON
//! file (documented in the README, sample in `infra/connectors/sap-s4hana.json`), never code: every
//! tenant's customizing differs.

use std::collections::BTreeMap;

use serde::Deserialize;

use retail_sync_contracts::events::TransactionRef;
use retail_sync_contracts::values::{MemberId, Sku, StoreId};

use crate::error::ConnectorError;

/// A sales area and the plant goods leave from or come back to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesArea {
    pub sales_organization: String,
    pub distribution_channel: String,
    pub division: String,
    pub plant: String,
}

/// Condition types of the tenant's pricing procedure that carry the amounts retail-sync sends. Each
/// must allow manual entry (the channel priced the sale; SAP books it as priced).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Item price per unit (`PPR0` in the S/4HANA standard procedure).
    #[serde(default = "Conditions::default_price")]
    pub price: String,
    /// Item discount, an absolute amount (negative).
    #[serde(default = "Conditions::default_discount")]
    pub discount: String,
    /// Item output tax as charged at the till or in the webshop, an absolute amount.
    #[serde(default = "Conditions::default_tax")]
    pub tax: String,
    /// Header deduction for loyalty points redeemed on an order, an absolute amount (negative), before
    /// tax.
    #[serde(default = "Conditions::default_redemption")]
    pub redemption: String,
    /// Item refund value of a customer return, an absolute amount.
    #[serde(default = "Conditions::default_price")]
    pub refund: String,
}

impl Conditions {
    fn default_price() -> String {
        "PPR0".into()
    }
    fn default_discount() -> String {
        "DRV1".into()
    }
    fn default_tax() -> String {
        "TTX1".into()
    }
    fn default_redemption() -> String {
        "ZRSR".into()
    }
}

impl Default for Conditions {
    fn default() -> Self {
        Self {
            price: Self::default_price(),
            discount: Self::default_discount(),
            tax: Self::default_tax(),
            redemption: Self::default_redemption(),
            refund: Self::default_price(),
        }
    }
}

/// Who the documents are sold to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoldTo {
    /// The customer of a sale without a member, and of a member the table does not list (a one-time
    /// customer or the store's walk-in account).
    pub default: String,
    /// Loyalty member → SAP business partner (customer) number.
    #[serde(default)]
    pub members: BTreeMap<String, String>,
}

/// The whole mapping file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SapMapping {
    /// Free text: where the file came from, who owns it.
    #[serde(default)]
    pub description: Option<String>,
    /// The document header field the idempotency stamp is written to and looked up by: at most 35
    /// characters, filterable (`PurchaseOrderByCustomer`, or a custom field such as
    /// `YY1_RetailSyncKey_SDH`).
    #[serde(default = "SapMapping::default_stamp_field")]
    pub stamp_field: String,
    /// Sales document type of a sale or order (`OR`, or a retail type such as `ZPOS`).
    #[serde(default = "SapMapping::default_sales_order_type")]
    pub sales_order_type: String,
    /// Customer return type (`CBAR`, advanced returns management).
    #[serde(default = "SapMapping::default_customer_return_type")]
    pub customer_return_type: String,
    /// Order reason of a customer return (`SDDocumentReason` of the header, `ReturnReason` of each item;
    /// at most 3 characters, as customized in the tenant).
    #[serde(default = "SapMapping::default_return_reason")]
    pub return_reason: String,
    /// Rejection reason of an item whose every open unit is cancelled (`SalesDocumentRjcnReason`, 2
    /// characters; the tenant's code for "cancelled by the customer").
    #[serde(default = "SapMapping::default_rejection_reason")]
    pub rejection_reason: String,
    /// Header text id (`LongTextID`) of the reference text retail-sync writes on each document it
    /// creates or changes: the transaction, return, cancellation or shipment it stands for.
    #[serde(default = "SapMapping::default_text_id")]
    pub text_id: String,
    /// Unit of measure of every quantity sent (`PC`: retail units are pieces).
    #[serde(default = "SapMapping::default_unit")]
    pub unit: String,
    #[serde(default)]
    pub conditions: Conditions,
    /// Sales area of ecommerce orders (they name no store).
    pub orders: SalesArea,
    /// Sales area per store (POS receipts, and returns brought back to a store).
    #[serde(default)]
    pub stores: BTreeMap<String, SalesArea>,
    /// Sales area of a store the table does not list; without one, such a store's documents are refused
    /// (quarantined with the reason) until the mapping is completed.
    #[serde(default)]
    pub default_store: Option<SalesArea>,
    /// SKU → material number; a SKU the table does not list is sent as the material number itself.
    #[serde(default)]
    pub materials: BTreeMap<String, String>,
    pub sold_to: SoldTo,
}

impl SapMapping {
    fn default_stamp_field() -> String {
        "PurchaseOrderByCustomer".into()
    }
    fn default_sales_order_type() -> String {
        "OR".into()
    }
    fn default_customer_return_type() -> String {
        "CBAR".into()
    }
    fn default_return_reason() -> String {
        "101".into()
    }
    fn default_rejection_reason() -> String {
        "10".into()
    }
    fn default_text_id() -> String {
        "ZRS1".into()
    }
    fn default_unit() -> String {
        "PC".into()
    }

    /// Parses and checks a mapping file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConnectorError> {
        let config = |message: String| ConnectorError::Config {
            var: origin.to_owned(),
            message,
        };
        let mapping: Self =
            serde_json::from_str(text).map_err(|e| config(format!("not a valid SAP mapping: {e}")))?;
        let field_ok = |f: &str| {
            !f.is_empty() && f.len() <= 30 && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if !field_ok(&mapping.stamp_field) {
            return Err(config(format!(
                "stamp_field {:?} is not an OData property name",
                mapping.stamp_field
            )));
        }
        Ok(mapping)
    }

    /// Reads the mapping from `{prefix}_SAP_MAPPING` (the JSON itself, as the template passes it) or
    /// `{prefix}_SAP_MAPPING_FILE` (a path, for local runs).
    pub fn from_lookup(
        prefix: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConnectorError> {
        let (text, origin) = crate::config::mapping_text(&format!("{prefix}_SAP_MAPPING"), lookup)?;
        Self::parse(&text, &origin)
    }

    /// The sales area of a document for `transaction`, booked in `store` when it names one (a return
    /// brought back to a store); `None` when the store is not mapped and there is no default.
    pub fn sales_area(&self, transaction: &TransactionRef, store: Option<&StoreId>) -> Option<&SalesArea> {
        let store = store.or(match transaction {
            TransactionRef::Receipt { store_id, .. } => Some(store_id),
            TransactionRef::Order { .. } => None,
        });
        match store {
            Some(store) => self.stores.get(store.as_str()).or(self.default_store.as_ref()),
            None => Some(&self.orders),
        }
    }

    pub fn material<'a>(&'a self, sku: &'a Sku) -> &'a str {
        self.materials
            .get(sku.as_str())
            .map_or(sku.as_str(), String::as_str)
    }

    pub fn sold_to<'a>(&'a self, member: Option<&MemberId>) -> &'a str {
        member
            .and_then(|m| self.sold_to.members.get(m.as_str()))
            .unwrap_or(&self.sold_to.default)
    }
}
