//! The ERP port on SAP S/4HANA, over its OData v2 APIs (`ERP_KIND=sap-s4hana`):
//! - a sale or an order → a sales order (`API_SALES_ORDER_SRV`, `A_SalesOrder`, deep insert with items,
//!   pricing conditions and the reference text);
//! - a cancellation → its items' open quantity reduced, or the item rejected when nothing is left, and a
//!   reference text, in one `$batch` change set with `If-Match` on every item;
//! - a reinstatement → the same, the quantity raised again (and a rejection lifted);
//! - a return → a customer return (`API_CUSTOMER_RETURN_SRV`, `A_CustomerReturn`) referring to the
//!   sales order's items;
//! - the books, for reconciliation (`ErpBooks`) → read back from the sales orders and customer returns
//!   changed since the window began, their items, pricing elements and reference texts (`books`).
//!
//! Every document carries a reference text ([`reference`](mod@reference)) naming the fact it stands for and its
//! business time; a cancellation's or reinstatement's also names the items it changed.
//!
//! # Exactly once without an idempotency key
//! SAP's OData services take no `Idempotency-Key`, so every document carries a stamp
//! ([`odata::stamp`]) in the mapping's `stamp_field` (`PurchaseOrderByCustomer` by default), and every
//! attempt — the first of a delivery included, since the delivery before it may have timed out after
//! SAP committed — looks the document up by its stamp before creating it. A sales order's stamp is its
//! transaction (one sales order per receipt or order, whichever key posts it), which is also how
//! returns and cancellations find it; a customer return's is the step's idempotency key. A cancellation
//! or reinstatement changes the sales order, so its stamp goes in the reference text written in the
//! same change set: found on the order, the change was made.

mod books;
#[cfg(test)]
mod contract;
pub mod mapping;
pub mod odata;
pub mod reference;

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use retail_sync_contracts::events::{LineQuantity, ReasonCode, TransactionRef};
use retail_sync_contracts::values::{Currency, ExternalRef};
use retail_sync_core::Error;
use retail_sync_core::idempotency::IdempotencyKey;
use retail_sync_core::ports::{
    Erp, ErpCancelRequest, ErpDocument, ErpReinstateRequest, ErpReturnRequest, ErpSaleRequest,
};
use retail_sync_core::saga::SagaId;

use crate::api::{Auth, Caller, json_of, status_error};
use crate::config::HttpConfig;
use crate::error::ConnectorError;
pub use mapping::SapMapping;
use odata::{Change, Session};
use reference::{ItemChange, Reference, items_text, reference_text};

/// The services' roots under the tenant's API host.
pub const SALES_ORDER_SERVICE: &str = "/sap/opu/odata/sap/API_SALES_ORDER_SRV";
pub const CUSTOMER_RETURN_SERVICE: &str = "/sap/opu/odata/sap/API_CUSTOMER_RETURN_SRV";

/// Cheap to clone: clones share the connection pool, the token and the CSRF session.
#[derive(Clone)]
pub struct SapErp {
    caller: Caller,
    mapping: Arc<SapMapping>,
    session: Arc<Mutex<Option<Session>>>,
}

/// A refusal of ours, before SAP is called (an unmapped store, a line SAP does not have).
fn refused(message: String) -> ConnectorError {
    ConnectorError::Status {
        status: 422,
        code: "mapping".into(),
        message,
        retry_after: None,
    }
}

/// One item of a sales order, as read back.
#[derive(Debug, Clone)]
struct Item {
    number: String,
    open: u32,
    rejected: bool,
}

/// A sales order, as read back with its items and texts. Its ETag guards changes to its items (which
/// have none of their own in SAP's metadata).
#[derive(Debug)]
struct Order {
    number: String,
    etag: Option<String>,
    items: Vec<Item>,
    texts: Vec<String>,
}

impl Order {
    /// The units `item` was ordered with: as the reference texts of earlier changes record it, else
    /// its quantity (an item never changed by us still has the quantity it was ordered with; SAP keeps
    /// a rejected item's last quantity).
    fn ordered(&self, item: &Item) -> u32 {
        self.texts
            .iter()
            .filter_map(|t| Reference::parse(t))
            .filter_map(|r| r.items().ok().flatten())
            .flatten()
            .find(|c| c.item == item.number)
            .map_or(item.open, |c| c.ordered)
    }
}

impl SapErp {
    pub fn new(config: &HttpConfig, auth: Auth, mapping: SapMapping) -> Result<Self, ConnectorError> {
        Ok(Self {
            caller: Caller::new(config, auth, "erp")?,
            mapping: Arc::new(mapping),
            session: Arc::default(),
        })
    }

    /// Tokens fetched from the token endpoint so far by this connector and its clones.
    pub fn tokens_fetched(&self) -> u64 {
        self.caller.tokens_fetched()
    }

    // --- the wire ---------------------------------------------------------------------------------

    /// GETs `path` (under the tenant root) with `query` and returns the `d` of its JSON, with the
    /// answer's `ETag` put in `d.__metadata.etag` when the body has none there.
    async fn read(&self, path: &str, query: &[(&str, &str)]) -> Result<Option<Value>, ConnectorError> {
        let url = format!("{}?{}", self.caller.url(path), query_string(query));
        self.read_url(path, &url).await
    }

    /// [`SapErp::read`] of a whole URL (a page after the first, say); `path` names it in errors.
    async fn read_url(&self, path: &str, url: &str) -> Result<Option<Value>, ConnectorError> {
        let response = self.caller.get_json(url).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // A read SAP refuses (a filter on a field that is not filterable, a property that does not
        // exist) says the setup is wrong, never that the document is.
        let body: Value = json_of(response, odata::error_of)
            .await
            .map_err(|e| match odata::classify(e) {
                ConnectorError::Status {
                    status: status @ (400 | 405 | 406 | 415 | 422),
                    message,
                    ..
                } => ConnectorError::Misrouted {
                    path: path.to_owned(),
                    status,
                    message,
                },
                other => other,
            })?;
        let mut d = body.get("d").cloned();
        // Only where the answer has room for it: an odd body must not panic us.
        if let Some(etag) = etag
            && let Some(metadata) = d
                .as_mut()
                .and_then(Value::as_object_mut)
                .map(|o| o.entry("__metadata").or_insert_with(|| json!({})))
                .and_then(Value::as_object_mut)
        {
            metadata.entry("etag").or_insert(Value::String(etag));
        }
        Ok(d)
    }

    /// The CSRF session, fetched first if there is none.
    async fn session(&self, service: &str) -> Result<Session, ConnectorError> {
        let mut session = self.session.lock().await;
        if let Some(s) = session.as_ref() {
            return Ok(s.clone());
        }
        let url = self.caller.url(&format!("{service}/"));
        let response = self
            .caller
            .authorized(|| {
                self.caller
                    .client()
                    .get(&url)
                    .header("x-csrf-token", "Fetch")
                    .header("accept", "application/json")
            })
            .await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(ConnectorError::Misrouted {
                path: format!("{service}/"),
                status: 404,
                message: "the service does not exist".into(),
            });
        }
        if !response.status().is_success() {
            return Err(odata::classify(status_error(response, odata::error_of).await));
        }
        let fresh = Session::from_headers(response.headers())?;
        *session = Some(fresh.clone());
        Ok(fresh)
    }

    /// Sends a modifying request (what `build` makes of the client and the URL) with the CSRF session;
    /// when SAP refuses the token ("CSRF token validation failed"), fetches a new one and sends once
    /// more. Answers the 2xx response, else the classified error.
    async fn modify(
        &self,
        service: &str,
        method: Method,
        path: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ConnectorError> {
        let url = self.caller.url(&format!("{service}/{path}"));
        let mut refetched = false;
        loop {
            let session = self.session(service).await?;
            let response = self
                .caller
                .authorized(|| {
                    let request = self
                        .caller
                        .client()
                        .request(method.clone(), &url)
                        .header("accept", "application/json");
                    build(session.apply(request))
                })
                .await?;
            if odata::csrf_refused(response.status(), response.headers()) && !refetched {
                tracing::info!(system = "erp", "CSRF token refused, fetching a new one");
                *self.session.lock().await = None;
                refetched = true;
                continue;
            }
            if response.status().is_success() {
                return Ok(response);
            }
            if response.status() == reqwest::StatusCode::NOT_FOUND {
                return Err(ConnectorError::Misrouted {
                    path: format!("{service}/{path}"),
                    status: 404,
                    message: "the service or entity set does not exist".into(),
                });
            }
            return Err(odata::classify(status_error(response, odata::error_of).await));
        }
    }

    /// The key of the `entity_set` document whose stamp field holds `stamp`, if one exists.
    async fn find(
        &self,
        service: &str,
        entity_set: &str,
        key_property: &str,
        stamp: &str,
    ) -> Result<Option<String>, ConnectorError> {
        let field = &self.mapping.stamp_field;
        let filter = format!("{field} eq '{stamp}'");
        let select = format!("{key_property},{field}");
        let found = self
            .read(
                &format!("{service}/{entity_set}"),
                &[("$filter", &filter), ("$select", &select), ("$top", "2")],
            )
            .await?;
        // A collection that is not there is a wrong base URL or a service not activated, never "no
        // such document" (which is an empty result).
        let Some(found) = found else {
            return Err(ConnectorError::Misrouted {
                path: format!("{service}/{entity_set}"),
                status: 404,
                message: "the service or entity set does not exist".into(),
            });
        };
        // An answer that cannot be read as the documents found must not pass for "none found".
        let unreadable = || ConnectorError::Unsettled {
            message: format!("the lookup of {entity_set} by its stamp answered no readable results"),
        };
        let results = found
            .get("results")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(unreadable)?;
        if results.len() > 1 {
            // Made twice by something else than this adapter (by hand, another integration): the first
            // stands, and the reconciliation shows the second.
            tracing::error!(system = "erp", entity_set, "two documents carry one stamp");
        }
        match results.first() {
            None => Ok(None),
            Some(first) => first
                .get(key_property)
                .and_then(Value::as_str)
                .map(|k| Some(k.to_owned()))
                .ok_or_else(unreadable),
        }
    }

    /// Creates an `entity_set` document and answers its `key_property`.
    async fn create(
        &self,
        service: &str,
        entity_set: &str,
        key_property: &str,
        body: &Value,
    ) -> Result<String, ConnectorError> {
        let response = self
            .modify(service, Method::POST, entity_set, |r| r.json(body))
            .await?;
        let created: Value = response.json().await.map_err(ConnectorError::Body)?;
        // Created, but the number cannot be read: the next delivery finds the document by its stamp.
        created
            .pointer(&format!("/d/{key_property}"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ConnectorError::Unsettled {
                message: format!("SAP answered the create of {entity_set} without {key_property}"),
            })
    }

    /// Looks the document up by its stamp, and creates it when it is not there. A create whose outcome
    /// is unknown (sent, no answer) is not sent again by this delivery — SAP may still be committing
    /// it — but left to the next one, whose lookup finds it if it was made.
    async fn find_or_create(
        &self,
        service: &str,
        entity_set: &str,
        key_property: &str,
        stamp: &str,
        key: &IdempotencyKey,
        body: &Value,
    ) -> Result<String, ConnectorError> {
        self.caller
            .retrying(entity_set, Some(key.as_str()), || async {
                if let Some(found) = self.find(service, entity_set, key_property, stamp).await? {
                    return Ok(found);
                }
                self.create(service, entity_set, key_property, body)
                    .await
                    .map_err(|e| e.settle_later(&format!("creating {entity_set}")))
            })
            .await
    }

    /// The sales order of `transaction`, with its items and reference texts.
    async fn order(&self, transaction: &TransactionRef) -> Result<Option<Order>, ConnectorError> {
        let stamp = odata::stamp(SagaId::of(transaction).as_str());
        let Some(number) = self
            .find(SALES_ORDER_SERVICE, "A_SalesOrder", "SalesOrder", &stamp)
            .await?
        else {
            return Ok(None);
        };
        let number = checked_number(&number)?;
        let Some(d) = self
            .read(
                &format!("{SALES_ORDER_SERVICE}/A_SalesOrder('{number}')"),
                &[("$expand", "to_Item,to_Text")],
            )
            .await?
        else {
            return Ok(None);
        };
        let results = |nav: &str| {
            d.pointer(&format!("/{nav}/results"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let text = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).unwrap_or_default().to_owned();
        let items = results("to_Item")
            .iter()
            .map(|i| Item {
                number: text(i, "SalesOrderItem"),
                open: text(i, "RequestedQuantity")
                    .split('.')
                    .next()
                    .and_then(|q| q.parse().ok())
                    .unwrap_or(0),
                rejected: !text(i, "SalesDocumentRjcnReason").is_empty(),
            })
            .collect();
        let texts = results("to_Text")
            .iter()
            .filter(|t| text(t, "LongTextID") == self.mapping.text_id)
            .map(|t| text(t, "LongText"))
            .collect();
        Ok(Some(Order {
            number: number.to_owned(),
            etag: d
                .pointer("/__metadata/etag")
                .and_then(Value::as_str)
                .map(str::to_owned),
            items,
            texts,
        }))
    }

    /// Applies a cancellation (`sign` −1) or reinstatement (+1) of `lines` to the order of
    /// `transaction`, once: the reference text with `stamp` says it was done. The text records `fact`
    /// (`cancellation=…`, `reinstatement=…`), the business time `at` and the items changed (see
    /// [`reference`]), which is what the books are read back from.
    #[allow(clippy::too_many_arguments)]
    async fn change_quantities(
        &self,
        transaction: &TransactionRef,
        lines: Option<&[LineQuantity]>,
        sign: i64,
        stamp: &str,
        fact: &str,
        at: Timestamp,
        key: &IdempotencyKey,
    ) -> Result<String, ConnectorError> {
        self.caller
            .retrying("A_SalesOrderItem", Some(key.as_str()), || async {
                let Some(order) = self.order(transaction).await? else {
                    return Err(ConnectorError::Status {
                        status: 404,
                        code: "order_not_found".into(),
                        message: format!("no sales order carries {}", SagaId::of(transaction)),
                        retry_after: None,
                    });
                };
                if order
                    .texts
                    .iter()
                    .any(|t| Reference::parse(t).is_some_and(|r| r.stamp == stamp))
                {
                    return Ok(order.number);
                }
                // Without the order's ETag a change would be unguarded against an edit made since the
                // read; an ETag or an item number SAP answered that does not look like one is not sent
                // back into a request.
                let Some(etag) = order
                    .etag
                    .clone()
                    .filter(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_graphic() || c == ' '))
                else {
                    return Err(ConnectorError::Unsettled {
                        message: format!("sales order {} was read without a usable ETag", order.number),
                    });
                };
                if let Some(bad) = order
                    .items
                    .iter()
                    .find(|i| i.number.is_empty() || !i.number.chars().all(|c| c.is_ascii_digit()))
                {
                    return Err(ConnectorError::Unsettled {
                        message: format!(
                            "sales order {} has an item numbered {:?}",
                            order.number, bad.number
                        ),
                    });
                }
                let mut changes = Vec::new();
                let mut changed = Vec::new();
                let wanted: Vec<(String, u32)> = match lines {
                    Some(lines) => lines
                        .iter()
                        .map(|l| (item_number(l.line_no), l.quantity))
                        .collect(),
                    None => order
                        .items
                        .iter()
                        .filter(|i| !i.rejected && i.open > 0)
                        .map(|i| (i.number.clone(), i.open))
                        .collect(),
                };
                for (number, quantity) in wanted.into_iter().filter(|(_, q)| *q > 0) {
                    let Some(item) = order.items.iter().find(|i| i.number == number) else {
                        return Err(refused(format!(
                            "sales order {} has no item {number}",
                            order.number
                        )));
                    };
                    let open = if item.rejected { 0 } else { i64::from(item.open) };
                    let after = open + sign * i64::from(quantity);
                    if after < 0 {
                        return Err(refused(format!(
                            "item {number} of sales order {} has {open} open, {quantity} cannot be cancelled",
                            order.number
                        )));
                    }
                    let ordered = order.ordered(item);
                    if after > i64::from(ordered) {
                        return Err(refused(format!(
                            "item {number} of sales order {} was ordered {ordered} and has {open} open, \
                             {quantity} cannot be reinstated",
                            order.number
                        )));
                    }
                    changed.push(ItemChange {
                        item: number.clone(),
                        ordered,
                        before: u32::try_from(open).unwrap_or(u32::MAX),
                        after: u32::try_from(after).unwrap_or(u32::MAX),
                    });
                    let body = if after == 0 {
                        json!({"SalesDocumentRjcnReason": self.mapping.rejection_reason})
                    } else {
                        json!({"RequestedQuantity": after.to_string(), "SalesDocumentRjcnReason": ""})
                    };
                    changes.push(Change {
                        method: "PATCH",
                        path: format!(
                            "A_SalesOrderItem(SalesOrder='{}',SalesOrderItem='{number}')",
                            order.number
                        ),
                        if_match: Some(etag.clone()),
                        body,
                    });
                }
                changes.push(Change {
                    method: "POST",
                    path: format!("A_SalesOrder('{}')/to_Text", order.number),
                    if_match: None,
                    body: json!({
                        "Language": "EN",
                        "LongTextID": self.mapping.text_id,
                        "LongText": reference_text(
                            stamp,
                            &format!("{fact} at={at} items={}", items_text(&changed)),
                        ),
                    }),
                });
                let boundary = format!("{:016x}", rand::random::<u64>());
                let (body, content_type) = odata::batch(&changes, &boundary);
                let sent = async {
                    let response = self
                        .modify(SALES_ORDER_SERVICE, Method::POST, "$batch", |r| {
                            r.header("content-type", content_type.clone()).body(body.clone())
                        })
                        .await?;
                    let text = response.text().await.map_err(ConnectorError::Body)?;
                    odata::batch_outcome(&text, changes.len())
                };
                sent.await
                    .map_err(|e| e.settle_later("the change set"))
                    .map(|()| order.number)
            })
            .await
    }

    fn area_refused(transaction: &TransactionRef) -> ConnectorError {
        refused(format!(
            "no SAP sales area for the store of {}: add the store (or a default_store) to the mapping",
            SagaId::of(transaction)
        ))
    }

    fn sales_order_body(&self, request: &ErpSaleRequest) -> Result<Value, ConnectorError> {
        let m = &self.mapping;
        let area = m
            .sales_area(&request.transaction, None)
            .ok_or_else(|| Self::area_refused(&request.transaction))?;
        let currency = request.currency;
        let amount = |minor: i64| crate::wire::decimal(minor, currency);
        let condition = |kind: &str, value: String| json!({"ConditionType": kind, "ConditionRateValue": value, "ConditionCurrency": currency.as_str()});
        let items: Vec<Value> = request
            .lines
            .iter()
            .map(|l| {
                let mut conditions = vec![condition(&m.conditions.price, amount(l.unit_price_minor.get()))];
                if l.discount_minor.get() > 0 {
                    conditions.push(condition(&m.conditions.discount, amount(-l.discount_minor.get())));
                }
                conditions.push(condition(&m.conditions.tax, amount(l.tax_minor.get())));
                json!({
                    "SalesOrderItem": item_number(l.line_no),
                    "Material": m.material(&l.sku),
                    "RequestedQuantity": l.quantity.to_string(),
                    "RequestedQuantityUnit": m.unit,
                    "ProductionPlant": area.plant,
                    "to_PricingElement": conditions,
                })
            })
            .collect();
        let transaction = SagaId::of(&request.transaction);
        let mut header = json!({
            "SalesOrderType": m.sales_order_type,
            "SalesOrganization": area.sales_organization,
            "DistributionChannel": area.distribution_channel,
            "OrganizationDivision": area.division,
            "SoldToParty": m.sold_to(request.member_id.as_ref()),
            "CustomerPurchaseOrderDate": crate::wire::date(request.occurred_at),
            "TransactionCurrency": currency.as_str(),
            "to_Text": [{
                "Language": "EN",
                "LongTextID": m.text_id,
                "LongText": reference_text(
                    &odata::stamp(transaction.as_str()),
                    &format!("transaction={transaction} at={}", request.occurred_at),
                ),
            }],
            "to_Item": items,
        });
        header[m.stamp_field.as_str()] = Value::String(odata::stamp(transaction.as_str()));
        if let Some(r) = &request.redemption {
            header["to_PricingElement"] =
                json!([condition(&m.conditions.redemption, amount(-r.value_minor.get()))]);
        }
        Ok(header)
    }

    fn customer_return_body(
        &self,
        request: &ErpReturnRequest,
        sales_order: &str,
        stamp: &str,
    ) -> Result<Value, ConnectorError> {
        let m = &self.mapping;
        let area = m
            .sales_area(&request.original, request.store_id.as_ref())
            .ok_or_else(|| Self::area_refused(&request.original))?;
        let currency: Currency = request.currency;
        let items: Vec<Value> = request
            .lines
            .iter()
            .map(|l| {
                json!({
                    "CustomerReturnItem": item_number(l.line_no),
                    "Material": m.material(&l.sku),
                    "RequestedQuantity": l.quantity.to_string(),
                    "RequestedQuantityUnit": m.unit,
                    "ReferenceSDDocument": sales_order,
                    "ReferenceSDDocumentItem": item_number(l.line_no),
                    "ReturnReason": m.return_reason,
                    "ProductionPlant": area.plant,
                    "to_PricingElement": [{
                        "ConditionType": m.conditions.refund,
                        "ConditionRateValue": crate::wire::decimal(l.refund_minor.get(), currency),
                        "ConditionCurrency": currency.as_str(),
                    }],
                })
            })
            .collect();
        let mut fact = format!(
            "return={} original={}",
            request.return_id,
            SagaId::of(&request.original)
        );
        if let Some(store) = &request.store_id {
            fact.push_str(&format!(" store={store}"));
        }
        fact.push_str(&format!(" at={}", request.occurred_at));
        let mut header = json!({
            "CustomerReturnType": m.customer_return_type,
            "SalesOrganization": area.sales_organization,
            "DistributionChannel": area.distribution_channel,
            "OrganizationDivision": area.division,
            "SoldToParty": m.sold_to(None),
            "SDDocumentReason": m.return_reason,
            "CustomerPurchaseOrderDate": crate::wire::date(request.occurred_at),
            "TransactionCurrency": currency.as_str(),
            "to_Text": [{"Language": "EN", "LongTextID": m.text_id, "LongText": reference_text(stamp, &fact)}],
            "to_Item": items,
        });
        header[m.stamp_field.as_str()] = Value::String(stamp.to_owned());
        Ok(header)
    }
}

/// Query options as a query string, their values percent-encoded.
fn query_string(query: &[(&str, &str)]) -> String {
    query
        .iter()
        .map(|(name, value)| format!("{name}={}", crate::wire::percent(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// SAP item numbers count in tens: line 1 is item 10.
fn item_number(line_no: u32) -> String {
    (u64::from(line_no) * 10).to_string()
}

fn checked_number(number: &str) -> Result<&str, ConnectorError> {
    if !number.is_empty() && number.len() <= 10 && number.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(number)
    } else {
        Err(refused(format!(
            "SAP answered a document number {number:?} that is not one"
        )))
    }
}

fn document(number: String) -> Result<ErpDocument, Error> {
    ExternalRef::parse(number.clone())
        .map(|document_id| ErpDocument { document_id })
        .map_err(|e| Error::unavailable("erp", format!("SAP document number {number:?}: {e}")))
}

fn port_error(e: ConnectorError) -> Error {
    e.into_port_error("erp", ReasonCode::ErpRejected)
}

#[async_trait]
impl Erp for SapErp {
    async fn post_sale(&self, request: &ErpSaleRequest, key: &IdempotencyKey) -> Result<ErpDocument, Error> {
        let stamp = odata::stamp(SagaId::of(&request.transaction).as_str());
        // What cannot be mapped is refused before SAP is called.
        let body = self.sales_order_body(request).map_err(port_error)?;
        let number = self
            .find_or_create(
                SALES_ORDER_SERVICE,
                "A_SalesOrder",
                "SalesOrder",
                &stamp,
                key,
                &body,
            )
            .await
            .map_err(port_error)?;
        document(number)
    }

    async fn cancel_order(
        &self,
        request: &ErpCancelRequest,
        key: &IdempotencyKey,
    ) -> Result<ErpDocument, Error> {
        let stamp = odata::stamp(key.as_str());
        let fact = format!("cancellation={}", request.cancellation_id);
        let number = self
            .change_quantities(
                &request.transaction,
                request.lines.as_deref(),
                -1,
                &stamp,
                &fact,
                request.occurred_at,
                key,
            )
            .await
            .map_err(port_error)?;
        document(number)
    }

    async fn post_return(
        &self,
        request: &ErpReturnRequest,
        key: &IdempotencyKey,
    ) -> Result<ErpDocument, Error> {
        let stamp = odata::stamp(key.as_str());
        // What cannot be mapped is refused before SAP is called.
        if self
            .mapping
            .sales_area(&request.original, request.store_id.as_ref())
            .is_none()
        {
            return Err(port_error(Self::area_refused(&request.original)));
        }
        let sales_order = async {
            let original = odata::stamp(SagaId::of(&request.original).as_str());
            self.caller
                .retrying("A_SalesOrder", Some(key.as_str()), || {
                    self.find(SALES_ORDER_SERVICE, "A_SalesOrder", "SalesOrder", &original)
                })
                .await?
                .ok_or_else(|| ConnectorError::Status {
                    status: 404,
                    code: "original_not_found".into(),
                    message: format!("no sales order carries {}", SagaId::of(&request.original)),
                    retry_after: None,
                })
        }
        .await
        .map_err(port_error)?;
        let body = self
            .customer_return_body(request, &sales_order, &stamp)
            .map_err(port_error)?;
        let number = self
            .find_or_create(
                CUSTOMER_RETURN_SERVICE,
                "A_CustomerReturn",
                "CustomerReturn",
                &stamp,
                key,
                &body,
            )
            .await
            .map_err(port_error)?;
        document(number)
    }

    async fn reinstate(
        &self,
        request: &ErpReinstateRequest,
        key: &IdempotencyKey,
    ) -> Result<ErpDocument, Error> {
        let stamp = odata::stamp(key.as_str());
        let fact = format!("reinstatement={}", request.shipment_id);
        let number = self
            .change_quantities(
                &request.transaction,
                Some(&request.lines),
                1,
                &stamp,
                &fact,
                request.occurred_at,
                key,
            )
            .await
            .map_err(port_error)?;
        document(number)
    }
}
