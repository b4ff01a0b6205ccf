//! The ERP's books read back from SAP (`ErpBooks`), for reconciliation: the documents retail-sync wrote,
//! derived from what SAP holds, the same as the system-API ERP books them (kind, transaction, reference,
//! currency, net, redemption, business time), with SAP's document numbers.
//!
//! # Reads
//! `A_SalesOrder` (`$expand=to_Item,to_Item/to_PricingElement,to_Text,to_PricingElement`) and
//! `A_CustomerReturn` (`$expand=to_Item,to_Item/to_PricingElement,to_Text`), both with
//! `$filter=LastChangeDateTime ge datetimeoffset'…'` and `$format=json`, every page: the `__next` link of
//! each answer is followed (on the configured host: only its query is taken) until an answer has none.
//! `LastChangeDateTime` is SAP's clock, the window is business time: a document is created or changed
//! after its business time, so every document of the window is on a document changed since `from`; the
//! reads start [`CLOCK_MARGIN`] earlier for channel clocks ahead of SAP's. What they find is then cut to
//! the window by the business time each reference text records.
//!
//! # Documents
//! Only documents with a retail-sync reference text (see [`super::reference`]) are read; anything else
//! in SAP is not retail-sync's and names no transaction.
//! - Sales order → a sale: the transaction and business time of its text, the currency of the order,
//!   the net of its items as ordered (price condition × ordered units + discount conditions), and the
//!   redemption as the negated sum of the header's redemption conditions (none without one).
//! - Each cancellation or reinstatement text on it → a cancellation or reinstatement: the id and business
//!   time of the text, and the net value of the units it changed, item by item, as the core values them:
//!   the item's net as ordered prorated to the units between its open quantity before and after
//!   ([`units_value`]).
//! - Customer return → a return: its return id, original transaction and business time from its text,
//!   the net as the sum of its items' refund conditions.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use retail_sync_contracts::events::{ReasonCode, TransactionRef};
use retail_sync_contracts::values::{Amount, Currency, ExternalRef};
use retail_sync_core::Error;
use retail_sync_core::ports::{BookedDocument, DocumentKind, ErpBooks};
use retail_sync_core::proration::units_value;
use retail_sync_core::saga::SagaId;

use super::mapping::SapMapping;
use super::reference::{ItemChange, Reference};
use super::{CUSTOMER_RETURN_SERVICE, SALES_ORDER_SERVICE, SapErp, port_error, query_string};
use crate::error::ConnectorError;

/// How much earlier than the window's start the reads reach on SAP's clock (`LastChangeDateTime`): room
/// for a channel whose clock runs ahead of SAP's.
pub const CLOCK_MARGIN: SignedDuration = SignedDuration::from_hours(24);

/// Pages followed at most in one read: a `__next` chain longer than this is a server that never ends.
const MAX_PAGES: usize = 10_000;

const SALES_ORDER_EXPAND: &str = "to_Item,to_Item/to_PricingElement,to_Text,to_PricingElement";
const CUSTOMER_RETURN_EXPAND: &str = "to_Item,to_Item/to_PricingElement,to_Text";

/// An answer that cannot be read as SAP's documents: the books are unavailable (never guessed).
fn malformed(message: String) -> Error {
    Error::unavailable("erp", format!("SAP's books cannot be read: {message}"))
}

/// The `datetimeoffset` literal of the reads' lower bound: `from` less the margin, whole seconds down.
fn since(from: Timestamp) -> String {
    let at = from.checked_sub(CLOCK_MARGIN).unwrap_or(Timestamp::MIN);
    let mut second = at.as_second();
    if Timestamp::from_second(second).is_ok_and(|s| s > at) {
        second -= 1;
    }
    let floor = Timestamp::from_second(second).unwrap_or(Timestamp::MIN);
    format!("datetimeoffset'{}'", floor.strftime("%Y-%m-%dT%H:%M:%SZ"))
}

impl SapErp {
    /// Every entity of `entity_set` the query selects, page after page.
    async fn read_all(
        &self,
        service: &str,
        entity_set: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<Value>, Error> {
        let path = format!("{service}/{entity_set}");
        let mut url = format!("{}?{}", self.caller.url(&path), query_string(query));
        let mut seen = HashSet::new();
        let mut entities = Vec::new();
        loop {
            if seen.len() >= MAX_PAGES {
                return Err(malformed(format!(
                    "{entity_set} answered more than {MAX_PAGES} pages"
                )));
            }
            if !seen.insert(url.clone()) {
                return Err(malformed(format!(
                    "{entity_set}'s __next link leads back to a page already read"
                )));
            }
            let page = self
                .caller
                .retrying(entity_set, None, || async {
                    self.read_url(&path, &url)
                        .await?
                        .ok_or_else(|| ConnectorError::Misrouted {
                            path: path.clone(),
                            status: 404,
                            message: "the service or entity set does not exist".into(),
                        })
                })
                .await
                .map_err(port_error)?;
            let results = page
                .get("results")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed(format!("{entity_set} answered no results array")))?;
            entities.extend(results.iter().cloned());
            match page.get("__next") {
                None | Some(Value::Null) => return Ok(entities),
                Some(Value::String(next)) => url = self.next_page(&path, entity_set, next)?,
                Some(other) => {
                    return Err(malformed(format!(
                        "{entity_set} answered a __next that is not a link: {other}"
                    )));
                }
            }
        }
    }

    /// The URL of the page `next` (an answer's `__next`) names: its query on the configured host and
    /// path, whatever host it names (SAP builds it from the `Host` it was reached by, which a proxy may
    /// have changed; and no credential goes anywhere else). Absolute, absolute-path and relative
    /// (`A_SalesOrder?…`) links are read; one that does not continue `entity_set` is refused.
    fn next_page(&self, path: &str, entity_set: &str, next: &str) -> Result<String, Error> {
        let marker = format!("{path}?");
        let query = next
            .find(&marker)
            .map(|i| &next[i + marker.len()..])
            .or_else(|| next.strip_prefix(&format!("{entity_set}?")));
        match query {
            Some(q) if !q.is_empty() && !q.chars().any(|c| c.is_control() || c == '#') => {
                Ok(format!("{}?{q}", self.caller.url(path)))
            }
            _ => Err(malformed(format!(
                "{entity_set} answered a __next link that does not continue it: {next:?}"
            ))),
        }
    }
}

/// The ERP's books on SAP: see the module's documentation. An empty or inverted window is refused as
/// the system API refuses it (`invalid_window`); SAP unreachable, failing or slow is `Unavailable` once
/// the attempts run out, as for every other call; an answer that cannot be read as documents is
/// `Unavailable` with what is wrong, and nothing is guessed.
#[async_trait]
impl ErpBooks for SapErp {
    async fn documents(&self, from: Timestamp, until: Timestamp) -> Result<Vec<BookedDocument>, Error> {
        if from >= until {
            return Err(Error::rejected(
                ReasonCode::ErpRejected,
                format!(
                    "invalid_window: from {from} is not before to {until}: the window [from, to) is empty"
                ),
            ));
        }
        let filter = format!("LastChangeDateTime ge {}", since(from));
        let orders = self
            .read_all(
                SALES_ORDER_SERVICE,
                "A_SalesOrder",
                &[
                    ("$filter", &filter),
                    ("$expand", SALES_ORDER_EXPAND),
                    ("$format", "json"),
                ],
            )
            .await?;
        let returns = self
            .read_all(
                CUSTOMER_RETURN_SERVICE,
                "A_CustomerReturn",
                &[
                    ("$filter", &filter),
                    ("$expand", CUSTOMER_RETURN_EXPAND),
                    ("$format", "json"),
                ],
            )
            .await?;
        let mut documents = Vec::new();
        let mut numbers = HashSet::new();
        for order in &orders {
            // A document met twice (it moved between pages while they were read) counts once.
            if numbers.insert(("A_SalesOrder", str_of(order, "SalesOrder"))) {
                documents.extend(sales_order_documents(order, &self.mapping).map_err(malformed)?);
            }
        }
        for ret in &returns {
            if numbers.insert(("A_CustomerReturn", str_of(ret, "CustomerReturn"))) {
                documents.extend(customer_return_document(ret, &self.mapping).map_err(malformed)?);
            }
        }
        documents.retain(|d| from <= d.occurred_at && d.occurred_at < until);
        documents.sort_by(|a, b| {
            (a.occurred_at, a.document_id.as_str(), a.kind, &a.reference).cmp(&(
                b.occurred_at,
                b.document_id.as_str(),
                b.kind,
                &b.reference,
            ))
        });
        Ok(documents)
    }
}

// --- documents from SAP's entities -------------------------------------------------------------------

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// An expanded navigation property: `{"results": […]}` (OData v2 JSON) or a plain array. Missing or
/// deferred, it was not expanded: the document cannot be read whole.
fn expanded<'a>(v: &'a Value, nav: &str, what: &str) -> Result<&'a [Value], String> {
    match v.get(nav) {
        Some(Value::Array(a)) => Ok(a),
        Some(o) => o
            .get("results")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("{what} was read without its {nav} expanded")),
        None => Err(format!("{what} was read without its {nav} expanded")),
    }
}

/// A document number as retail-sync keeps it.
fn number_of(v: &Value, field: &str, what: &str) -> Result<ExternalRef, String> {
    let number = str_of(v, field);
    ExternalRef::parse(number.to_owned()).map_err(|e| format!("{what} has no usable {field} {number:?}: {e}"))
}

fn currency_of(v: &Value, what: &str) -> Result<Currency, String> {
    let text = str_of(v, "TransactionCurrency");
    Currency::parse(text).map_err(|e| format!("{what}: TransactionCurrency {text:?}: {e}"))
}

/// `Edm.DateTime` / `Edm.DateTimeOffset` in OData v2 JSON: `/Date(<ms>)/` or `/Date(<ms>+0000)/`.
fn date_of(v: &Value, field: &str, what: &str) -> Result<Timestamp, String> {
    let text = str_of(v, field);
    let inner = text
        .strip_prefix("/Date(")
        .and_then(|r| r.strip_suffix(")/"))
        .unwrap_or_default();
    let digits_end = inner
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && *c == '-')))
        .map_or(inner.len(), |(i, _)| i);
    inner[..digits_end]
        .parse::<i64>()
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .ok_or_else(|| format!("{what}: {field} {text:?} is not an OData date"))
}

/// The sum of the rates (`ConditionRateValue`) of `conditions` of type `kind`, in minor units.
fn rates(conditions: &[Value], kind: &str, currency: Currency, what: &str) -> Result<Option<i64>, String> {
    let mut sum: Option<i64> = None;
    for c in conditions.iter().filter(|c| str_of(c, "ConditionType") == kind) {
        let text = str_of(c, "ConditionRateValue");
        let minor = currency.minor_units(text).ok_or_else(|| {
            format!("{what}: {kind} ConditionRateValue {text:?} is not an amount in {currency}")
        })?;
        sum = Some(
            sum.unwrap_or(0)
                .checked_add(minor)
                .ok_or_else(|| format!("{what}: the {kind} conditions overflow"))?,
        );
    }
    Ok(sum)
}

/// A whole number of units (`Edm.Decimal`, `"2"` or `"2.000"`).
fn units(text: &str, what: &str) -> Result<u32, String> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if !fraction.chars().all(|c| c == '0') {
        return Err(format!("{what}: {text:?} is not a whole number of units"));
    }
    whole
        .parse()
        .map_err(|_| format!("{what}: {text:?} is not a number of units"))
}

fn amount(minor: i64, what: &str) -> Result<Amount, String> {
    Amount::new(minor).map_err(|e| format!("{what}: {e}"))
}

fn transaction_of(saga: &str, what: &str) -> Result<TransactionRef, String> {
    SagaId::from_stored(saga.to_owned())
        .transaction()
        .ok_or_else(|| format!("{what}: {saga:?} names no transaction"))
}

/// The retail-sync reference texts of a document (its header texts of the mapping's text id).
fn references<'a>(texts: &'a [Value], mapping: &SapMapping) -> Vec<Reference<'a>> {
    texts
        .iter()
        .filter(|t| str_of(t, "LongTextID") == mapping.text_id)
        .filter_map(|t| t.get("LongText").and_then(Value::as_str))
        .filter_map(Reference::parse)
        .collect()
}

/// One item of a sales order as its books need it.
struct Item {
    /// Price per unit and the sum of the discounts (negative), in minor units.
    price: i64,
    discount: i64,
    /// The units it was ordered with.
    ordered: u32,
}

impl Item {
    /// Net as ordered: price × units + discounts.
    fn net(&self, what: &str) -> Result<i64, String> {
        i64::from(self.ordered)
            .checked_mul(self.price)
            .and_then(|n| n.checked_add(self.discount))
            .filter(|n| *n >= 0)
            .ok_or_else(|| format!("{what}: its net as ordered is not an amount"))
    }
}

/// The sale, cancellations and reinstatements a sales order holds; none when it is not retail-sync's.
pub(super) fn sales_order_documents(
    order: &Value,
    mapping: &SapMapping,
) -> Result<Vec<BookedDocument>, String> {
    let number = str_of(order, "SalesOrder");
    let what = format!("sales order {number:?}");
    let texts = expanded(order, "to_Text", &what)?;
    let references = references(texts, mapping);
    let Some(creation) = references.iter().find(|r| r.get("transaction").is_some()) else {
        return Ok(Vec::new());
    };
    let document_id = number_of(order, "SalesOrder", &what)?;
    let transaction = transaction_of(creation.get("transaction").unwrap_or_default(), &what)?;
    let currency = currency_of(order, &what)?;

    // The changes, with the units each item was ordered with as they record it.
    let mut changes: Vec<(DocumentKind, &str, &Reference, Vec<ItemChange>)> = Vec::new();
    let mut ordered: BTreeMap<String, u32> = BTreeMap::new();
    for r in &references {
        let (kind, id) = match (r.get("cancellation"), r.get("reinstatement")) {
            (Some(id), _) => (DocumentKind::Cancellation, id),
            (None, Some(id)) => (DocumentKind::Reinstatement, id),
            (None, None) => continue,
        };
        let items = r
            .items()
            .map_err(|e| format!("{what}, text of {id}: {e}"))?
            .ok_or_else(|| {
                format!("{what}: the text of {id} names no items changed (written before retail-sync recorded them)")
            })?;
        for c in &items {
            if *ordered.entry(c.item.clone()).or_insert(c.ordered) != c.ordered {
                return Err(format!(
                    "{what}: its texts disagree on the units item {} was ordered with",
                    c.item
                ));
            }
        }
        changes.push((kind, id, r, items));
    }

    let mut items: BTreeMap<String, Item> = BTreeMap::new();
    for i in expanded(order, "to_Item", &what)? {
        let item = str_of(i, "SalesOrderItem");
        let what = format!("{what} item {item:?}");
        let conditions = expanded(i, "to_PricingElement", &what)?;
        let current = units(str_of(i, "RequestedQuantity"), &what)?;
        items.insert(
            item.to_owned(),
            Item {
                price: rates(conditions, &mapping.conditions.price, currency, &what)?.unwrap_or(0),
                discount: rates(conditions, &mapping.conditions.discount, currency, &what)?.unwrap_or(0),
                ordered: ordered.get(item).copied().unwrap_or(current),
            },
        );
    }

    let mut net = 0_i64;
    for (number, item) in &items {
        net = net
            .checked_add(item.net(&format!("{what} item {number}"))?)
            .ok_or_else(|| format!("{what}: its net overflows"))?;
    }
    let header = expanded(order, "to_PricingElement", &what)?;
    let redemption = rates(header, &mapping.conditions.redemption, currency, &what)?
        .map(|r| amount(-r, &format!("{what}: the redemption")))
        .transpose()?;
    let occurred_at = match creation.at().map_err(|e| format!("{what}: {e}"))? {
        Some(at) => at,
        None => date_of(order, "CustomerPurchaseOrderDate", &what)?,
    };
    let mut documents = vec![BookedDocument {
        document_id: document_id.clone(),
        kind: DocumentKind::Sale,
        transaction: transaction.clone(),
        reference: None,
        currency,
        net_minor: amount(net, &what)?,
        redemption_minor: redemption,
        occurred_at,
    }];

    for (kind, id, r, changed) in changes {
        let occurred_at = r
            .at()
            .map_err(|e| format!("{what}, text of {id}: {e}"))?
            .ok_or_else(|| {
                format!(
                    "{what}: the text of {id} has no business time (written before retail-sync recorded it)"
                )
            })?;
        let mut value = 0_i64;
        for c in &changed {
            let Some(item) = items.get(&c.item) else {
                return Err(format!(
                    "{what}: the text of {id} names item {} it does not have",
                    c.item
                ));
            };
            let line = item.net(&format!("{what} item {}", c.item))?;
            let (low, high) = (c.before.min(c.after), c.before.max(c.after));
            value = value
                .checked_add(units_value(line, c.ordered, low, high))
                .ok_or_else(|| format!("{what}: the value of {id} overflows"))?;
        }
        documents.push(BookedDocument {
            document_id: document_id.clone(),
            kind,
            transaction: transaction.clone(),
            reference: Some(id.to_owned()),
            currency,
            net_minor: amount(value, &format!("{what}, {id}"))?,
            redemption_minor: None,
            occurred_at,
        });
    }
    Ok(documents)
}

/// The return a customer return stands for; none when it is not retail-sync's.
pub(super) fn customer_return_document(
    ret: &Value,
    mapping: &SapMapping,
) -> Result<Option<BookedDocument>, String> {
    let number = str_of(ret, "CustomerReturn");
    let what = format!("customer return {number:?}");
    let texts = expanded(ret, "to_Text", &what)?;
    let references = references(texts, mapping);
    let Some(text) = references
        .iter()
        .find(|r| r.get("return").is_some() && r.get("original").is_some())
    else {
        return Ok(None);
    };
    let document_id = number_of(ret, "CustomerReturn", &what)?;
    let transaction = transaction_of(text.get("original").unwrap_or_default(), &what)?;
    let currency = currency_of(ret, &what)?;
    let mut refund = 0_i64;
    for i in expanded(ret, "to_Item", &what)? {
        let what = format!("{what} item {:?}", str_of(i, "CustomerReturnItem"));
        let conditions = expanded(i, "to_PricingElement", &what)?;
        refund = refund
            .checked_add(rates(conditions, &mapping.conditions.refund, currency, &what)?.unwrap_or(0))
            .ok_or_else(|| format!("{what}: the refund overflows"))?;
    }
    let occurred_at = match text.at().map_err(|e| format!("{what}: {e}"))? {
        Some(at) => at,
        None => date_of(ret, "CustomerPurchaseOrderDate", &what)?,
    };
    Ok(Some(BookedDocument {
        document_id,
        kind: DocumentKind::Return,
        transaction,
        reference: text.get("return").map(str::to_owned),
        currency,
        net_minor: amount(refund, &what)?,
        redemption_minor: None,
        occurred_at,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn mapping() -> SapMapping {
        let path = format!(
            "{}/../../infra/connectors/sap-s4hana.json",
            env!("CARGO_MANIFEST_DIR")
        );
        SapMapping::parse(&std::fs::read_to_string(path).unwrap(), "sample").unwrap()
    }

    /// A sales order of one item (2 × 5.00) with these texts.
    fn order(texts: &[&str]) -> Value {
        json!({
            "SalesOrder": "7",
            "TransactionCurrency": "EUR",
            "CustomerPurchaseOrderDate": "/Date(1779926400000)/",
            "to_PricingElement": {"results": []},
            "to_Text": {"results": texts.iter().map(|t| json!({"LongTextID": "ZRS1", "LongText": t})).collect::<Vec<_>>()},
            "to_Item": {"results": [{
                "SalesOrderItem": "10",
                "RequestedQuantity": "2",
                "to_PricingElement": {"results": [{"ConditionType": "PPR0", "ConditionRateValue": "5.00"}]},
            }]},
        })
    }

    const SALE: &str = "retail-sync order:o-1 transaction=order:o-1 at=2026-05-28T20:26:40.123Z";

    #[test]
    fn documents_without_our_text_are_not_ours() {
        let mut other = order(&[]);
        other["to_Text"] = json!({"results": [{"LongTextID": "ZRS1", "LongText": "typed in by hand"}]});
        assert!(sales_order_documents(&other, &mapping()).unwrap().is_empty());
        let ret = json!({"CustomerReturn": "9", "to_Text": {"results": []}});
        assert!(customer_return_document(&ret, &mapping()).unwrap().is_none());
        // Our text under another text id is someone else's copy.
        let mut copied = order(&[]);
        copied["to_Text"] = json!({"results": [{"LongTextID": "0001", "LongText": SALE}]});
        assert!(sales_order_documents(&copied, &mapping()).unwrap().is_empty());
    }

    #[test]
    fn a_sale_written_before_its_time_was_recorded_is_dated_by_its_customer_reference_date() {
        let documents = sales_order_documents(
            &order(&["retail-sync order:o-1 transaction=order:o-1"]),
            &mapping(),
        )
        .unwrap();
        assert_eq!(documents[0].occurred_at.to_string(), "2026-05-28T00:00:00Z");
        let documents = sales_order_documents(&order(&[SALE]), &mapping()).unwrap();
        assert_eq!(documents[0].occurred_at.to_string(), "2026-05-28T20:26:40.123Z");
        assert_eq!(documents[0].redemption_minor, None, "no redemption condition");
        assert_eq!(documents[0].net_minor.get(), 1_000);
    }

    #[test]
    fn what_cannot_be_derived_is_an_error_that_says_why() {
        let m = mapping();
        for (texts, expected) in [
            (
                vec![SALE, "retail-sync k cancellation=cx-1"],
                "names no items changed",
            ),
            (
                vec![SALE, "retail-sync k cancellation=cx-1 items=10/2:2>1"],
                "has no business time",
            ),
            (
                vec![
                    SALE,
                    "retail-sync k cancellation=cx-1 at=2026-05-29T00:00:00Z items=30/1:1>0",
                ],
                "names item 30 it does not have",
            ),
            (
                vec![
                    SALE,
                    "retail-sync k cancellation=cx-1 at=2026-05-29T00:00:00Z items=10/2:2>1",
                    "retail-sync l reinstatement=s-1 at=2026-05-29T01:00:00Z items=10/3:1>2",
                ],
                "disagree on the units item 10 was ordered with",
            ),
            (
                vec!["retail-sync k transaction=order:o-1 at=tuesday"],
                "is not an RFC 3339 instant",
            ),
            (
                vec!["retail-sync k transaction=nothing:x at=2026-05-29T00:00:00Z"],
                "names no transaction",
            ),
        ] {
            let err = sales_order_documents(&order(&texts), &m).unwrap_err();
            assert!(err.contains(expected), "{texts:?}: {err}");
        }
        // Navigation that was not expanded, odd numbers and currencies.
        let mut deferred = order(&[SALE]);
        deferred["to_Item"] = json!({"__deferred": {"uri": "A_SalesOrder('7')/to_Item"}});
        let err = sales_order_documents(&deferred, &m).unwrap_err();
        assert!(err.contains("without its to_Item expanded"), "{err}");
        let mut fractional = order(&[SALE]);
        fractional["to_Item"]["results"][0]["RequestedQuantity"] = json!("1.500");
        let err = sales_order_documents(&fractional, &m).unwrap_err();
        assert!(err.contains("not a whole number"), "{err}");
        let mut currency = order(&[SALE]);
        currency["TransactionCurrency"] = json!(7);
        assert!(sales_order_documents(&currency, &m).is_err());
        let mut negative = order(&[SALE]);
        negative["to_PricingElement"] =
            json!({"results": [{"ConditionType": "ZRSR", "ConditionRateValue": "2.00"}]});
        assert!(
            sales_order_documents(&negative, &m).is_err(),
            "a redemption is a deduction"
        );
        let mut no_date = order(&["retail-sync k transaction=order:o-1"]);
        no_date["CustomerPurchaseOrderDate"] = json!(null);
        assert!(sales_order_documents(&no_date, &m).is_err());
        for odd in [json!(null), json!([]), json!("x"), json!({"SalesOrder": 1})] {
            let _ = sales_order_documents(&odd, &m);
            let _ = customer_return_document(&odd, &m);
        }
    }

    #[test]
    fn a_rejected_item_is_valued_on_the_units_it_was_ordered_with() {
        // Both units cancelled at once: SAP keeps the item's last quantity and shows the rejection.
        let mut o = order(&[
            SALE,
            "retail-sync k cancellation=cx-1 at=2026-05-29T00:00:00Z items=10/2:2>0",
        ]);
        o["to_Item"]["results"][0]["SalesDocumentRjcnReason"] = json!("10");
        let documents = sales_order_documents(&o, &mapping()).unwrap();
        assert_eq!(documents[0].net_minor.get(), 1_000);
        assert_eq!(documents[1].kind, DocumentKind::Cancellation);
        assert_eq!(documents[1].net_minor.get(), 1_000);
    }

    #[test]
    fn the_reads_start_a_margin_before_the_window_on_whole_seconds() {
        assert_eq!(
            since("2026-05-28T20:26:40.9Z".parse().unwrap()),
            "datetimeoffset'2026-05-27T20:26:40Z'"
        );
        assert_eq!(
            since("1969-12-31T00:00:00.5Z".parse().unwrap()),
            "datetimeoffset'1969-12-30T00:00:00Z'"
        );
        assert!(since(Timestamp::MIN).starts_with("datetimeoffset'-"));
    }

    #[test]
    fn dates_are_read_with_or_without_an_offset() {
        let v = json!({"a": "/Date(1780000000000)/", "b": "/Date(1780000000000+0000)/", "c": "/Date(-86400000)/", "d": "2026-05-28"});
        for field in ["a", "b"] {
            assert_eq!(date_of(&v, field, "x").unwrap().as_second(), 1_780_000_000);
        }
        assert_eq!(date_of(&v, "c", "x").unwrap().as_second(), -86_400);
        assert!(date_of(&v, "d", "x").is_err());
    }
}
