//! SAP S/4HANA's OData v2 dialect in front of the reference ERP: `API_SALES_ORDER_SRV` and
//! `API_CUSTOMER_RETURN_SRV` as far as the SAP connector uses them, with SAP's manners — a CSRF token
//! per session (403 "CSRF token validation failed" with `x-csrf-token: Required` without one), ETags
//! and `If-Match` on item changes (412 when stale, 428 when missing), `$batch` change sets applied all
//! or nothing, OData error bodies, and **no idempotency key**: a create made twice is two documents.
//!
//! Each document becomes a posting of the reference ERP (its rules, faults and journal apply, and the
//! books are compared the same way), under a key of the sim's own (`sap:{nonce}:{stamp}`) that never
//! repeats. Everything the dialect shows (sales orders with their items, open quantities and texts,
//! customer returns) is read back from those postings, so a local run that replays the ERP's journal
//! gets its SAP documents back too.
//!
//! Shapes follow SAP's API reference for `API_SALES_ORDER_SRV` (SAP_COM_0109) and
//! `API_CUSTOMER_RETURN_SRV` (see `events/samples/sap/README.md` for the sources). What the simulator
//! needs beyond them, and a real tenant does not: the reference text retail-sync writes
//! (`retail-sync {stamp} transaction=…`) tells it which transaction a sales order is; condition types
//! are the connector's defaults (`PPR0` price, `DRV1` discount, `TTX1` tax, `ZRSR` points redeemed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use retail_sync_contracts::events::{LineQuantity, ReturnLine, TransactionRef};
use retail_sync_contracts::values::{
    Amount, CancellationId, Currency, HoldId, Points, ReturnId, ShipmentId, Sku, StoreId,
};
use retail_sync_contracts::{LineItem, Redemption, Totals};
use retail_sync_core::ports::{ErpCancelRequest, ErpReinstateRequest, ErpReturnRequest, ErpSaleRequest};
use retail_sync_core::proration::units_value;
use retail_sync_core::saga::SagaId;

use crate::dialect::{decimal, decimal_minor, parse_query, str_of};
use crate::erp::{ErpCall, ErpPosting, ErpPostingKind, ErpSimulator};
use crate::error::SimError;
use crate::http::{header_str, respond_as};

pub const SALES_ORDER_SERVICE: &str = "API_SALES_ORDER_SRV";
pub const CUSTOMER_RETURN_SERVICE: &str = "API_CUSTOMER_RETURN_SRV";

/// The tenant's customizing the simulator assumes (the SAP connector's defaults).
#[derive(Debug, Clone)]
pub struct SapSettings {
    pub stamp_field: String,
    pub price: String,
    pub discount: String,
    pub tax: String,
    pub redemption: String,
    pub refund: String,
}

impl Default for SapSettings {
    fn default() -> Self {
        Self {
            stamp_field: "PurchaseOrderByCustomer".into(),
            price: "PPR0".into(),
            discount: "DRV1".into(),
            tax: "TTX1".into(),
            redemption: "ZRSR".into(),
            refund: "PPR0".into(),
        }
    }
}

/// The SAP front. Cheap to clone; clones share the sessions.
#[derive(Clone)]
pub struct SapSimulator {
    erp: ErpSimulator,
    settings: Arc<SapSettings>,
    /// session cookie → CSRF token.
    sessions: Arc<Mutex<HashMap<String, String>>>,
    nonce: Arc<AtomicU64>,
    /// Creates received (every POST of a document, answered or not): what a test counts.
    creates: Arc<AtomicU64>,
    /// Change sets still to be answered 412 as if another user had just changed the order.
    edits_between: Arc<AtomicU64>,
    /// 412 answers given.
    stale: Arc<AtomicU64>,
}

const SESSION_COOKIE: &str = "SAP_SESSIONID_RS1_100";

/// Customer return numbers are their own number range.
const RETURN_RANGE: u64 = 60_000_000;

impl SapSimulator {
    pub fn new(erp: ErpSimulator) -> Self {
        Self::with_settings(erp, SapSettings::default())
    }

    pub fn with_settings(erp: ErpSimulator, settings: SapSettings) -> Self {
        Self {
            erp,
            settings: Arc::new(settings),
            sessions: Arc::default(),
            // Random, so that keys made after a replayed journal never meet the journal's.
            nonce: Arc::new(AtomicU64::new(rand::random::<u64>() >> 1)),
            creates: Arc::default(),
            edits_between: Arc::default(),
            stale: Arc::default(),
        }
    }

    /// The next `n` change sets find the order changed since their read (someone edited it in between):
    /// 412, whatever their ETag.
    pub fn edit_between_read_and_change(&self, n: u64) {
        self.edits_between.store(n, Ordering::Relaxed);
    }

    /// 412 answers given so far.
    pub fn stale_answers(&self) -> u64 {
        self.stale.load(Ordering::Relaxed)
    }

    /// Ends every session: the next change with an old token gets 403 "CSRF token validation failed".
    pub fn end_sessions(&self) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Creates and change sets received so far.
    pub fn creates(&self) -> u64 {
        self.creates.load(Ordering::Relaxed)
    }

    fn key(&self, stamp: &str) -> String {
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        format!("sap:{nonce:x}:{stamp}")
    }

    fn new_session(&self) -> (String, String) {
        let session = format!("{:032x}", rand::random::<u128>());
        let token = format!("{:032x}", rand::random::<u128>());
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session.clone(), token.clone());
        (session, token)
    }

    fn csrf_valid(&self, headers: &HeaderMap) -> bool {
        let Some(token) = header_str(headers, "x-csrf-token") else {
            return false;
        };
        let session = header_str(headers, header::COOKIE.as_str())
            .into_iter()
            .flat_map(|c| c.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, v)| v.to_owned());
        session.is_some_and(|s| {
            self.sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&s)
                .is_some_and(|t| t == token)
        })
    }

    // --- documents, read back from the ERP's postings --------------------------------------------

    fn sales_orders(&self) -> Vec<SalesOrder> {
        let documents = self.erp.documents();
        let mut orders: Vec<SalesOrder> = Vec::new();
        for (posting, call) in &documents {
            let Some(stamp) = stamp_of(&posting.idempotency_key) else {
                continue;
            };
            match (posting.kind, call) {
                (ErpPostingKind::Sale, ErpCall::Sale(sale)) => orders.push(SalesOrder {
                    number: number_of(posting),
                    stamp: stamp.to_owned(),
                    sale: sale.clone(),
                    open: sale.lines.iter().map(|l| (l.line_no, l.quantity)).collect(),
                    texts: vec![text_line(
                        stamp,
                        &format!("transaction={}", SagaId::of(&sale.transaction)),
                    )],
                    version: 1,
                }),
                (ErpPostingKind::Cancellation, ErpCall::Cancel(c)) => {
                    if let Some(o) = orders.iter_mut().find(|o| o.sale.transaction == c.transaction) {
                        o.apply(c.lines.as_deref().unwrap_or_default(), -1);
                        o.texts
                            .push(text_line(stamp, &format!("cancellation={}", c.cancellation_id)));
                    }
                }
                (ErpPostingKind::Reinstatement, ErpCall::Reinstate(r)) => {
                    if let Some(o) = orders.iter_mut().find(|o| o.sale.transaction == r.transaction) {
                        o.apply(&r.lines, 1);
                        o.texts
                            .push(text_line(stamp, &format!("reinstatement={}", r.shipment_id)));
                    }
                }
                _ => {}
            }
        }
        orders
    }

    fn customer_returns(&self) -> Vec<(String, String)> {
        self.erp
            .documents()
            .iter()
            .filter(|(p, _)| p.kind == ErpPostingKind::Return)
            .filter_map(|(p, _)| {
                let stamp = stamp_of(&p.idempotency_key)?;
                Some(((RETURN_RANGE + document_seq(p)).to_string(), stamp.to_owned()))
            })
            .collect()
    }

    // --- the routes --------------------------------------------------------------------------------

    async fn handle(
        &self,
        method: Method,
        service: &str,
        rest: &str,
        query: Option<String>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        let query = parse_query(query.as_deref().unwrap_or_default());
        if method == Method::GET && rest.is_empty() {
            return self.service_root(service, headers);
        }
        if method != Method::GET && !self.csrf_valid(headers) {
            let mut response = (StatusCode::FORBIDDEN, "CSRF token validation failed").into_response();
            response
                .headers_mut()
                .insert("x-csrf-token", header::HeaderValue::from_static("Required"));
            return response;
        }
        match (service, method.as_str(), rest) {
            (SALES_ORDER_SERVICE, "GET", "A_SalesOrder") => self.list_sales_orders(&query),
            (SALES_ORDER_SERVICE, "GET", entity) if entity.starts_with("A_SalesOrder(") => {
                self.read_sales_order(entity)
            }
            (SALES_ORDER_SERVICE, "POST", "A_SalesOrder") => self.create_sales_order(body).await,
            (SALES_ORDER_SERVICE, "POST", "$batch") => self.batch(headers, body).await,
            (CUSTOMER_RETURN_SERVICE, "GET", "A_CustomerReturn") => self.list_returns(&query),
            (CUSTOMER_RETURN_SERVICE, "POST", "A_CustomerReturn") => self.create_return(body).await,
            _ => odata_error(
                StatusCode::NOT_FOUND,
                "/IWBEP/CM_MGW_RT/020",
                format!("Resource not found for segment '{rest}'"),
            ),
        }
    }

    fn service_root(&self, service: &str, headers: &HeaderMap) -> Response {
        let sets = match service {
            SALES_ORDER_SERVICE => json!(["A_SalesOrder", "A_SalesOrderItem", "A_SalesOrderText"]),
            CUSTOMER_RETURN_SERVICE => json!(["A_CustomerReturn", "A_CustomerReturnItem"]),
            _ => return odata_error(StatusCode::NOT_FOUND, "/IWFND/MED/170", "No service found".into()),
        };
        let mut response = Json(json!({"d": {"EntitySets": sets}})).into_response();
        if header_str(headers, "x-csrf-token").is_some_and(|v| v.eq_ignore_ascii_case("fetch")) {
            let (session, token) = self.new_session();
            let h = response.headers_mut();
            if let Ok(v) = token.parse() {
                h.insert("x-csrf-token", v);
            }
            if let Ok(v) = format!("{SESSION_COOKIE}={session}; path=/; secure; HttpOnly").parse() {
                h.insert(header::SET_COOKIE, v);
            }
        }
        response
    }

    /// `$filter={stamp field} eq '…'`, the only filter the connector uses.
    fn stamp_filter(&self, query: &HashMap<String, String>) -> Result<String, Box<Response>> {
        let filter = query.get("$filter").map(String::as_str).unwrap_or_default();
        let prefix = format!("{} eq '", self.settings.stamp_field);
        filter
            .strip_prefix(&prefix)
            .and_then(|v| v.strip_suffix('\''))
            .map(|v| v.replace("''", "'"))
            .ok_or_else(|| {
                Box::new(odata_error(
                    StatusCode::BAD_REQUEST,
                    "/IWBEP/CM_MGW_RT/004",
                    format!("Invalid filter expression: '{filter}'"),
                ))
            })
    }

    fn list_sales_orders(&self, query: &HashMap<String, String>) -> Response {
        let stamp = match self.stamp_filter(query) {
            Ok(s) => s,
            Err(r) => return *r,
        };
        let results: Vec<Value> = self
            .sales_orders()
            .iter()
            .filter(|o| o.stamp == stamp)
            .map(|o| o.header(&self.settings))
            .collect();
        Json(json!({"d": {"results": results}})).into_response()
    }

    fn read_sales_order(&self, entity: &str) -> Response {
        let number = entity
            .strip_prefix("A_SalesOrder('")
            .and_then(|r| r.strip_suffix("')"))
            .unwrap_or_default();
        let orders = self.sales_orders();
        let Some(order) = orders.iter().find(|o| o.number == number) else {
            return odata_error(
                StatusCode::NOT_FOUND,
                "/IWBEP/CM_MGW_RT/020",
                format!("Resource not found for segment 'A_SalesOrder'; key {number}"),
            );
        };
        let mut d = order.header(&self.settings);
        d["to_Item"] = json!({"results": order.items()});
        d["to_Text"] = json!({"results": order.texts.iter().map(|t| json!({
            "SalesOrder": order.number, "Language": "EN", "LongTextID": "ZRS1", "LongText": t,
        })).collect::<Vec<_>>()});
        let mut response = Json(json!({"d": d})).into_response();
        if let Ok(v) = order.etag().parse() {
            response.headers_mut().insert(header::ETAG, v);
        }
        response
    }

    async fn create_sales_order(&self, body: &[u8]) -> Response {
        self.creates.fetch_add(1, Ordering::Relaxed);
        let parsed = serde_json::from_slice::<Value>(body)
            .map_err(|e| e.to_string())
            .and_then(|v| self.sale_of(&v));
        let (request, stamp) = match parsed {
            Ok(p) => p,
            Err(message) => return odata_error(StatusCode::BAD_REQUEST, "SD_SALESDOC/001", message),
        };
        let key = self.key(&stamp);
        let result = self.erp.post_sale(&request, &key).map_err(business).map(|doc| {
            let seq = seq_of(doc.document_id.as_str());
            json!({"d": {
                "__metadata": {"type": "API_SALES_ORDER_SRV.A_SalesOrderType", "etag": "W/\"1\""},
                "SalesOrder": seq.to_string(),
                self.settings.stamp_field.clone(): stamp,
                "TransactionCurrency": request.currency.as_str(),
                "TotalNetAmount": decimal(request.totals.net_minor.get() - request.redemption.as_ref().map_or(0, |r| r.value_minor.get()), request.currency),
            }})
        });
        respond_as(StatusCode::CREATED, result, odata_error).await
    }

    /// The reference ERP's request of a sales order deep insert, and its stamp.
    fn sale_of(&self, v: &Value) -> Result<(ErpSaleRequest, String), String> {
        let s = &self.settings;
        for field in [
            "SalesOrderType",
            "SalesOrganization",
            "DistributionChannel",
            "OrganizationDivision",
            "SoldToParty",
        ] {
            if str_of(v, field).is_empty() {
                return Err(format!("Property {field} is required"));
            }
        }
        let stamp = stamped(v, &s.stamp_field)?;
        let currency = Currency::parse(str_of(v, "TransactionCurrency"))
            .map_err(|e| format!("TransactionCurrency: {e}"))?;
        let transaction = transaction_of(v)?;
        let mut lines = Vec::new();
        for item in array_of(v, "to_Item") {
            let number: u32 = str_of(item, "SalesOrderItem")
                .parse()
                .map_err(|_| "SalesOrderItem is not a number".to_owned())?;
            let quantity: u32 = str_of(item, "RequestedQuantity")
                .parse()
                .map_err(|_| "RequestedQuantity is not a whole number".to_owned())?;
            let material = str_of(item, "Material");
            let conditions = array_of(item, "to_PricingElement");
            let amount = |kind: &str| -> Result<i64, String> {
                conditions
                    .iter()
                    .filter(|c| str_of(c, "ConditionType") == kind)
                    .map(|c| rate(c, currency))
                    .sum()
            };
            let unit = amount(&s.price)?;
            let discount = -amount(&s.discount)?;
            let tax = amount(&s.tax)?;
            let net = i64::from(quantity)
                .checked_mul(unit)
                .and_then(|n| n.checked_sub(discount))
                .ok_or_else(|| format!("item {number}: the amounts overflow"))?;
            let money = |m: i64| Amount::new(m).map_err(|e| format!("item {number}: {e}"));
            lines.push(LineItem {
                line_no: number / 10,
                sku: Sku::parse(material).map_err(|e| format!("Material {material:?}: {e}"))?,
                quantity,
                unit_price_minor: money(unit)?,
                discount_minor: money(discount)?,
                net_minor: money(net)?,
                tax_minor: money(tax)?,
                loyalty_eligible: true,
                channel_line_id: None,
            });
        }
        if lines.is_empty() {
            return Err("A sales order needs at least one item".into());
        }
        let net: i64 = lines.iter().map(|l| l.net_minor.get()).sum();
        let tax: i64 = lines.iter().map(|l| l.tax_minor.get()).sum();
        let redeemed: i64 = -array_of(v, "to_PricingElement")
            .iter()
            .filter(|c| str_of(c, "ConditionType") == s.redemption)
            .map(|c| rate(c, currency))
            .sum::<Result<i64, String>>()?;
        let money = |m: i64| Amount::new(m).map_err(|e| e.to_string());
        let redemption = if redeemed > 0 {
            Some(Redemption {
                hold_id: HoldId::parse("sap-condition").map_err(|e| e.to_string())?,
                points: Points::new(redeemed).map_err(|e| e.to_string())?,
                value_minor: money(redeemed)?,
            })
        } else {
            None
        };
        let request = ErpSaleRequest {
            transaction,
            member_id: None,
            currency,
            lines,
            totals: Totals {
                net_minor: money(net)?,
                tax_minor: money(tax)?,
                gross_minor: money(net + tax)?,
            },
            redemption,
            occurred_at: date_of(v, "CustomerPurchaseOrderDate")?,
        };
        Ok((request, stamp))
    }

    /// A change set of item updates and one reference text: a cancellation or a reinstatement.
    async fn batch(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        self.creates.fetch_add(1, Ordering::Relaxed);
        let content_type = header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or_default();
        let body = String::from_utf8_lossy(body);
        let changes = match parse_batch(content_type, &body) {
            Ok(c) => c,
            Err(message) => return odata_error(StatusCode::BAD_REQUEST, "/IWBEP/CM_MGW_RT/040", message),
        };
        let outcome = match self.change_set(&changes) {
            Ok(result) => result,
            Err((status, code, message)) => Err(SimError::Refused {
                status,
                code,
                message,
            }),
        };
        match outcome {
            Ok(()) => {
                let parts: String = changes
                    .iter()
                    .map(|c| {
                        let status = if c.method == "POST" { "201 Created" } else { "204 No Content" };
                        format!(
                            "--changeset_answer\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 {status}\r\n\r\n\r\n"
                        )
                    })
                    .collect();
                let body = format!(
                    "--batch_answer\r\nContent-Type: multipart/mixed; boundary=changeset_answer\r\n\r\n{parts}--changeset_answer--\r\n\r\n--batch_answer--\r\n"
                );
                batch_response(body)
            }
            Err(SimError::Refused {
                status,
                code,
                message,
            }) => {
                let error = json!({"error": {"code": code, "message": {"lang": "en", "value": message}}});
                let body = format!(
                    "--batch_answer\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 {status} Error\r\nContent-Type: application/json\r\n\r\n{error}\r\n--batch_answer--\r\n"
                );
                batch_response(body)
            }
            // Faults are the whole request's, as SAP's gateway answers them.
            Err(other) => respond_as::<Value>(StatusCode::ACCEPTED, Err(other), odata_error).await,
        }
    }

    /// Checks the change set against the order and applies it to the reference ERP as one posting.
    #[allow(clippy::type_complexity)]
    fn change_set(
        &self,
        changes: &[BatchChange],
    ) -> Result<Result<(), SimError>, (u16, &'static str, String)> {
        let refuse = |status: u16, code: &'static str, message: String| Err((status, code, message));
        let Some((text, number)) = changes.iter().find_map(|c| {
            let number = c
                .path
                .strip_prefix("A_SalesOrder('")?
                .strip_suffix("')/to_Text")?;
            (c.method == "POST").then_some((c, number))
        }) else {
            return refuse(400, "ZRS/001", "the change set carries no reference text".into());
        };
        let long_text = str_of(&text.body, "LongText");
        let mut words = long_text.split(' ');
        let (Some("retail-sync"), Some(stamp), Some(fact)) = (words.next(), words.next(), words.next())
        else {
            return refuse(
                400,
                "ZRS/002",
                format!("reference text {long_text:?} is not retail-sync's"),
            );
        };
        let orders = self.sales_orders();
        let Some(order) = orders.iter().find(|o| o.number == number) else {
            return refuse(
                404,
                "V1/302",
                format!("Sales document {number} is not in the database"),
            );
        };
        let mut lines = Vec::new();
        let mut direction = 0_i64;
        for change in changes.iter().filter(|c| c.method == "PATCH") {
            let Some(item) = change
                .path
                .strip_prefix(&format!(
                    "A_SalesOrderItem(SalesOrder='{number}',SalesOrderItem='"
                ))
                .and_then(|r| r.strip_suffix("')"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                return refuse(
                    400,
                    "ZRS/003",
                    format!("{} is not an item of {number}", change.path),
                );
            };
            match &change.if_match {
                None => return refuse(428, "/IWBEP/CM_MGW_RT/021", "Precondition required".into()),
                Some(etag) if *etag != order.etag() || self.edited_in_between() => {
                    self.stale.fetch_add(1, Ordering::Relaxed);
                    return refuse(412, "/IWBEP/CM_MGW_RT/022", "Precondition failed".into());
                }
                Some(_) => {}
            }
            let line_no = item / 10;
            let Some(&(_, open)) = order.open.iter().find(|(l, _)| *l == line_no) else {
                return refuse(400, "V1/405", format!("Item {item} does not exist in {number}"));
            };
            let after = if !str_of(&change.body, "SalesDocumentRjcnReason").is_empty() {
                0
            } else {
                match str_of(&change.body, "RequestedQuantity").parse::<u32>() {
                    Ok(q) => q,
                    Err(_) => {
                        return refuse(400, "ZRS/004", "RequestedQuantity is not a whole number".into());
                    }
                }
            };
            let delta = i64::from(after) - i64::from(open);
            if delta == 0 {
                continue;
            }
            if direction != 0 && delta.signum() != direction {
                return refuse(
                    400,
                    "ZRS/005",
                    "one change set both cancels and reinstates".into(),
                );
            }
            direction = delta.signum();
            lines.push((line_no, open, after));
        }
        let Some((_, reference)) = fact.split_once('=') else {
            return refuse(
                400,
                "ZRS/002",
                format!("reference text {long_text:?} names no fact"),
            );
        };
        let sale = &order.sale;
        let value: i64 = lines
            .iter()
            .map(|(line_no, open, after)| {
                let line = sale.lines.iter().find(|l| l.line_no == *line_no);
                line.map_or(0, |l| {
                    let (from, to) = (*open.min(after), *open.max(after));
                    units_value(l.net_minor.get(), l.quantity, from, to)
                })
            })
            .sum();
        let quantities: Vec<LineQuantity> = lines
            .iter()
            .map(|(line_no, open, after)| LineQuantity {
                line_no: *line_no,
                quantity: open.abs_diff(*after),
            })
            .collect();
        let key = self.key(stamp);
        let now = jiff::Timestamp::now();
        let amount = Amount::new(value).map_err(|e| (400, "ZRS/006", e.to_string()))?;
        let result = if fact.starts_with("cancellation=") {
            let request = ErpCancelRequest {
                transaction: sale.transaction.clone(),
                cancellation_id: CancellationId::parse(reference)
                    .map_err(|e| (400, "ZRS/002", e.to_string()))?,
                lines: Some(quantities),
                currency: sale.currency,
                value_minor: amount,
                reason: "rejected in SAP".into(),
                occurred_at: now,
            };
            self.erp.cancel_order(&request, &key).map(drop).map_err(business)
        } else if fact.starts_with("reinstatement=") {
            let request = ErpReinstateRequest {
                transaction: sale.transaction.clone(),
                shipment_id: ShipmentId::parse(reference).map_err(|e| (400, "ZRS/002", e.to_string()))?,
                cancellation_ids: Vec::new(),
                lines: quantities,
                currency: sale.currency,
                value_minor: amount,
                occurred_at: now,
            };
            self.erp.reinstate(&request, &key).map(drop).map_err(business)
        } else {
            return refuse(
                400,
                "ZRS/002",
                format!("reference text {long_text:?} names no known fact"),
            );
        };
        Ok(result)
    }

    fn edited_in_between(&self) -> bool {
        self.edits_between
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    fn list_returns(&self, query: &HashMap<String, String>) -> Response {
        let stamp = match self.stamp_filter(query) {
            Ok(s) => s,
            Err(r) => return *r,
        };
        let results: Vec<Value> = self
            .customer_returns()
            .into_iter()
            .filter(|(_, s)| *s == stamp)
            .map(|(number, s)| json!({"CustomerReturn": number, self.settings.stamp_field.clone(): s}))
            .collect();
        Json(json!({"d": {"results": results}})).into_response()
    }

    async fn create_return(&self, body: &[u8]) -> Response {
        self.creates.fetch_add(1, Ordering::Relaxed);
        let parsed = serde_json::from_slice::<Value>(body)
            .map_err(|e| e.to_string())
            .and_then(|v| self.return_of(&v));
        let (request, stamp) = match parsed {
            Ok(p) => p,
            Err(message) => return odata_error(StatusCode::BAD_REQUEST, "SD_SALESDOC/001", message),
        };
        let key = self.key(&stamp);
        let result = self.erp.post_return(&request, &key).map_err(business).map(|doc| {
            json!({"d": {
                "CustomerReturn": (RETURN_RANGE + seq_of(doc.document_id.as_str())).to_string(),
                self.settings.stamp_field.clone(): stamp,
            }})
        });
        respond_as(StatusCode::CREATED, result, odata_error).await
    }

    fn return_of(&self, v: &Value) -> Result<(ErpReturnRequest, String), String> {
        let stamp = stamped(v, &self.settings.stamp_field)?;
        let currency = Currency::parse(str_of(v, "TransactionCurrency"))
            .map_err(|e| format!("TransactionCurrency: {e}"))?;
        let text = reference_of(v)?;
        let fact = |name: &str| {
            text.split(' ')
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
        };
        let return_id = fact("return").ok_or("the reference text names no return")?;
        let original = fact("original").ok_or("the reference text names no original")?;
        let orders = self.sales_orders();
        let items = array_of(v, "to_Item");
        let reference = items
            .first()
            .map(|i| str_of(i, "ReferenceSDDocument"))
            .unwrap_or_default();
        let Some(order) = orders.iter().find(|o| o.number == reference) else {
            return Err(format!("Reference document {reference} does not exist"));
        };
        if SagaId::of(&order.sale.transaction).as_str() != original {
            return Err(format!("Reference document {reference} is not {original}"));
        }
        let mut lines = Vec::new();
        for item in items {
            let line_no: u32 = str_of(item, "ReferenceSDDocumentItem")
                .parse::<u32>()
                .map_err(|_| "ReferenceSDDocumentItem is not a number".to_owned())?
                / 10;
            let refund: i64 = array_of(item, "to_PricingElement")
                .iter()
                .filter(|c| str_of(c, "ConditionType") == self.settings.refund)
                .map(|c| rate(c, currency))
                .sum::<Result<i64, String>>()?;
            lines.push(ReturnLine {
                line_no,
                sku: Sku::parse(str_of(item, "Material")).map_err(|e| e.to_string())?,
                quantity: str_of(item, "RequestedQuantity")
                    .parse()
                    .map_err(|_| "RequestedQuantity is not a whole number".to_owned())?,
                refund_minor: Amount::new(refund).map_err(|e| e.to_string())?,
            });
        }
        let refund: i64 = lines.iter().map(|l| l.refund_minor.get()).sum();
        let request = ErpReturnRequest {
            return_id: ReturnId::parse(return_id).map_err(|e| e.to_string())?,
            original: order.sale.transaction.clone(),
            store_id: fact("store")
                .map(StoreId::parse)
                .transpose()
                .map_err(|e| e.to_string())?,
            currency,
            lines,
            refund_minor: Amount::new(refund).map_err(|e| e.to_string())?,
            occurred_at: date_of(v, "CustomerPurchaseOrderDate")?,
        };
        Ok((request, stamp))
    }
}

/// A sales order as the dialect shows it.
struct SalesOrder {
    number: String,
    stamp: String,
    sale: ErpSaleRequest,
    /// (line, open units).
    open: Vec<(u32, u32)>,
    texts: Vec<String>,
    version: u32,
}

impl SalesOrder {
    fn apply(&mut self, lines: &[LineQuantity], sign: i64) {
        for l in lines {
            if let Some((_, open)) = self.open.iter_mut().find(|(n, _)| *n == l.line_no) {
                let after = i64::from(*open) + sign * i64::from(l.quantity);
                *open = u32::try_from(after.max(0)).unwrap_or(0);
            }
        }
        self.version += 1;
    }

    fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }

    fn header(&self, s: &SapSettings) -> Value {
        json!({
            "__metadata": {"type": "API_SALES_ORDER_SRV.A_SalesOrderType", "etag": self.etag()},
            "SalesOrder": self.number,
            s.stamp_field.clone(): self.stamp,
            "TransactionCurrency": self.sale.currency.as_str(),
        })
    }

    fn items(&self) -> Vec<Value> {
        self.sale
            .lines
            .iter()
            .map(|l| {
                let open = self
                    .open
                    .iter()
                    .find(|(n, _)| *n == l.line_no)
                    .map_or(0, |(_, o)| *o);
                // A rejected item keeps its last quantity; SAP shows the rejection reason instead.
                let (quantity, rejection) = if open == 0 { (l.quantity, "10") } else { (open, "") };
                // Items have no ETag of their own in SAP's metadata: changes to them are checked
                // against the order's.
                json!({
                    "__metadata": {"type": "API_SALES_ORDER_SRV.A_SalesOrderItemType"},
                    "SalesOrder": self.number,
                    "SalesOrderItem": (l.line_no * 10).to_string(),
                    "Material": l.sku.as_str(),
                    "RequestedQuantity": quantity.to_string(),
                    "SalesDocumentRjcnReason": rejection,
                })
            })
            .collect()
    }
}

/// One operation of a received change set.
struct BatchChange {
    method: String,
    path: String,
    if_match: Option<String>,
    body: Value,
}

/// Reads the operations of the (one) change set of a `$batch` body.
fn parse_batch(content_type: &str, body: &str) -> Result<Vec<BatchChange>, String> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .ok_or("the $batch request names no boundary")?;
    let outer = format!("--{boundary}");
    let mut changes = Vec::new();
    for part in body.split(outer.as_str()) {
        let Some(inner) = part
            .lines()
            .find_map(|l| l.trim().strip_prefix("Content-Type: multipart/mixed; boundary="))
        else {
            continue;
        };
        let inner = format!("--{}", inner.trim());
        for operation in part.split(inner.as_str()) {
            let operation = operation.trim_start_matches(['\r', '\n']);
            let mut lines = operation.split('\n').map(|l| l.trim_end_matches('\r'));
            // The part's own headers, up to the blank line; then the request line.
            if !lines.by_ref().any(|l| l.is_empty()) {
                continue;
            }
            let Some(request_line) = lines.next().filter(|l| l.ends_with("HTTP/1.1")) else {
                continue;
            };
            let mut words = request_line.split(' ');
            let (Some(method), Some(path)) = (words.next(), words.next()) else {
                return Err(format!("bad request line {request_line:?}"));
            };
            let mut if_match = None;
            for h in lines.by_ref() {
                if h.is_empty() {
                    break;
                }
                if let Some((name, value)) = h.split_once(':')
                    && name.eq_ignore_ascii_case("if-match")
                {
                    if_match = Some(value.trim().to_owned());
                }
            }
            let json: String = lines.collect::<Vec<_>>().join("\n");
            let body = if json.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(json.trim()).map_err(|e| format!("{method} {path}: {e}"))?
            };
            changes.push(BatchChange {
                method: method.to_owned(),
                path: path.to_owned(),
                if_match,
                body,
            });
        }
    }
    if changes.is_empty() {
        return Err("the $batch request holds no change set".into());
    }
    Ok(changes)
}

fn batch_response(body: String) -> Response {
    let mut response = (StatusCode::ACCEPTED, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("multipart/mixed; boundary=batch_answer"),
    );
    response
}

/// The reference ERP's refusals as SAP answers its business errors: 400, whatever the reason (the
/// code tells them apart).
fn business(e: SimError) -> SimError {
    match e {
        SimError::Refused { code, message, .. } => SimError::Refused {
            status: 400,
            code,
            message,
        },
        other => other,
    }
}

/// An OData v2 error answer.
pub(crate) fn odata_error(status: StatusCode, code: &str, message: String) -> Response {
    let body = json!({"error": {
        "code": code,
        "message": {"lang": "en", "value": message},
        "innererror": {"errordetails": [{"code": code, "message": message, "severity": "error"}]},
    }});
    (status, Json(body)).into_response()
}

fn text_line(stamp: &str, fact: &str) -> String {
    format!("retail-sync {stamp} {fact}")
}

/// The stamp in one of our keys (`sap:{nonce}:{stamp}`).
fn stamp_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("sap:")?;
    rest.split_once(':').map(|(_, stamp)| stamp)
}

fn seq_of(document_id: &str) -> u64 {
    document_id.trim_start_matches("ERP-").parse().unwrap_or_default()
}

fn document_seq(p: &ErpPosting) -> u64 {
    seq_of(p.document_id.as_str())
}

fn number_of(p: &ErpPosting) -> String {
    document_seq(p).to_string()
}

/// A navigation property of a deep insert: `[…]` or `{"results": […]}` (both are OData v2 JSON).
fn array_of<'a>(v: &'a Value, field: &str) -> &'a [Value] {
    match v.get(field) {
        Some(Value::Array(a)) => a,
        Some(o) => o
            .get("results")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice),
        None => &[],
    }
}

fn rate(condition: &Value, currency: Currency) -> Result<i64, String> {
    let text = str_of(condition, "ConditionRateValue");
    decimal_minor(text, currency).ok_or_else(|| format!("ConditionRateValue {text:?} is not an amount"))
}

fn stamped(v: &Value, field: &str) -> Result<String, String> {
    let stamp = str_of(v, field);
    if stamp.is_empty() {
        return Err(format!("Property {field} is required"));
    }
    if stamp.len() > 35 {
        return Err(format!("Value of {field} is too long (maximum 35 characters)"));
    }
    Ok(stamp.to_owned())
}

/// The retail-sync reference text of a deep insert.
fn reference_of(v: &Value) -> Result<String, String> {
    array_of(v, "to_Text")
        .iter()
        .map(|t| str_of(t, "LongText"))
        .find(|t| t.starts_with("retail-sync "))
        .map(str::to_owned)
        .ok_or_else(|| "the document carries no retail-sync reference text".to_owned())
}

fn transaction_of(v: &Value) -> Result<TransactionRef, String> {
    let text = reference_of(v)?;
    let id = text
        .split(' ')
        .find_map(|w| w.strip_prefix("transaction="))
        .ok_or("the reference text names no transaction")?;
    SagaId::from_stored(id.to_owned())
        .transaction()
        .ok_or_else(|| format!("{id:?} is not a transaction"))
}

fn date_of(v: &Value, field: &str) -> Result<jiff::Timestamp, String> {
    let text = str_of(v, field);
    text.strip_prefix("/Date(")
        .and_then(|r| r.strip_suffix(")/"))
        .and_then(|ms| ms.parse::<i64>().ok())
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .ok_or_else(|| format!("{field} {text:?} is not an Edm.DateTime"))
}

/// The routes, for mounting under the simulators' server (behind its access rules).
pub fn router(sap: SapSimulator) -> axum::Router<()> {
    async fn route(
        State(sap): State<SapSimulator>,
        method: Method,
        Path((service, rest)): Path<(String, String)>,
        RawQuery(query): RawQuery,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        sap.handle(method, &service, &rest, query, &headers, &body).await
    }
    async fn root(
        State(sap): State<SapSimulator>,
        method: Method,
        Path(service): Path<String>,
        headers: HeaderMap,
    ) -> Response {
        sap.handle(method, &service, "", None, &headers, &[]).await
    }
    axum::Router::new()
        .route("/sap/opu/odata/sap/{service}/", axum::routing::any(root))
        .route("/sap/opu/odata/sap/{service}/{*rest}", axum::routing::any(route))
        .with_state(sap)
}
