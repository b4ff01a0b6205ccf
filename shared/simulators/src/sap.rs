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
//! The business time of a change set is the `at=` of its text (the time of the simulator's clock
//! without one), and an `items=` that does not name the items the change set changes is refused (400
//! `ZRS/007`): the texts the simulator shows are rebuilt from the postings, so they must agree.
//!
//! # Reads
//! - `GET A_SalesOrder` and `GET A_CustomerReturn`: collections, in document number order. `$filter`
//!   takes `{stamp field} eq '…'` and `LastChangeDateTime {eq|ge|gt|le|lt} datetimeoffset'…'` (or
//!   `datetime'…'`, UTC) joined by ` and `; `$expand` takes `to_Item`, `to_Text`, `to_PricingElement`
//!   and `to_Item/to_PricingElement` (navigation not expanded is `{"__deferred": …}`); `$top`, `$skip`,
//!   `$inlinecount=allpages` (`__count`), `$format=json`, `$select` (accepted, not applied). Pages hold
//!   at most [`SapSimulator::set_page_size`] entities (100 unless set); a page with more after it has a
//!   `__next` link, absolute on the request's `Host`, carrying the query and a `$skiptoken`. Any other
//!   system query option, a repeated one, or a filter, expand or value it does not understand is 400.
//!   Reads other than a lookup by stamp (the books) meet the ERP's `down` fault (503) and latency.
//! - `GET A_SalesOrder('…')`: one order with its items and texts (and what `$expand` adds).
//!
//! What a document shows: `CustomerPurchaseOrderDate` as a date (midnight UTC, as SAP keeps it), decimals
//! with SAP's scales (`ConditionRateValue` 9 places, quantities 3), and `LastChangeDateTime`, for which
//! the simulator has no clock of its own: it is the latest business time among the document's postings,
//! the earliest a real tenant's clock could show (a document is posted after its business time).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{Value, json};

use retail_sync_contracts::events::{LineQuantity, ReturnLine, TransactionRef};
use retail_sync_contracts::values::{
    Amount, CancellationId, Currency, HoldId, Points, ReturnId, ShipmentId, Sku, StoreId,
};
use retail_sync_contracts::{LineItem, Redemption, Totals};
use retail_sync_core::ports::{ErpCancelRequest, ErpReinstateRequest, ErpReturnRequest, ErpSaleRequest};
use retail_sync_core::proration::units_value;
use retail_sync_core::saga::SagaId;

use crate::dialect::{decimal, decimal_minor, percent_decode, str_of};
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
    /// The most entities one page of a collection read holds (SAP's server-side paging).
    page_size: Arc<AtomicUsize>,
    /// Collection pages answered (every read of `A_SalesOrder` or `A_CustomerReturn` that succeeded).
    pages: Arc<AtomicU64>,
}

const SESSION_COOKIE: &str = "SAP_SESSIONID_RS1_100";

/// Customer return numbers are their own number range.
const RETURN_RANGE: u64 = 60_000_000;

/// Entities per page of a collection read, unless a test sets another size.
const DEFAULT_PAGE_SIZE: usize = 100;

/// The header text id of retail-sync's reference texts (the SAP connector's default).
const TEXT_ID: &str = "ZRS1";

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
            page_size: Arc::new(AtomicUsize::new(DEFAULT_PAGE_SIZE)),
            pages: Arc::default(),
        }
    }

    /// Collection reads answer at most `n` entities a page (at least 1), with a `__next` link to the
    /// rest.
    pub fn set_page_size(&self, n: usize) {
        self.page_size.store(n.max(1), Ordering::Relaxed);
    }

    /// Collection pages answered so far.
    pub fn pages_served(&self) -> u64 {
        self.pages.load(Ordering::Relaxed)
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
                        &format!(
                            "transaction={} at={}",
                            SagaId::of(&sale.transaction),
                            sale.occurred_at
                        ),
                    )],
                    version: 1,
                    last_change: sale.occurred_at,
                }),
                (ErpPostingKind::Cancellation, ErpCall::Cancel(c)) => {
                    if let Some(o) = orders.iter_mut().find(|o| o.sale.transaction == c.transaction) {
                        let items = o.apply(c.lines.as_deref().unwrap_or_default(), -1);
                        o.texts.push(text_line(
                            stamp,
                            &format!(
                                "cancellation={} at={} items={items}",
                                c.cancellation_id, c.occurred_at
                            ),
                        ));
                        o.last_change = o.last_change.max(c.occurred_at);
                    }
                }
                (ErpPostingKind::Reinstatement, ErpCall::Reinstate(r)) => {
                    if let Some(o) = orders.iter_mut().find(|o| o.sale.transaction == r.transaction) {
                        let items = o.apply(&r.lines, 1);
                        o.texts.push(text_line(
                            stamp,
                            &format!(
                                "reinstatement={} at={} items={items}",
                                r.shipment_id, r.occurred_at
                            ),
                        ));
                        o.last_change = o.last_change.max(r.occurred_at);
                    }
                }
                _ => {}
            }
        }
        orders
    }

    fn customer_returns(&self) -> Vec<CustomerReturn> {
        let orders = self.sales_orders();
        self.erp
            .documents()
            .into_iter()
            .filter_map(|(p, call)| {
                let stamp = stamp_of(&p.idempotency_key)?.to_owned();
                let ErpCall::Return(request) = call else {
                    return None;
                };
                let order = orders
                    .iter()
                    .find(|o| o.sale.transaction == request.original)
                    .map(|o| o.number.clone())
                    .unwrap_or_default();
                Some(CustomerReturn {
                    number: (RETURN_RANGE + document_seq(&p)).to_string(),
                    stamp,
                    order,
                    request,
                })
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
        let raw = query.as_deref().unwrap_or_default();
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
            (SALES_ORDER_SERVICE, "GET", "A_SalesOrder") => self.list_sales_orders(raw, headers).await,
            (SALES_ORDER_SERVICE, "GET", entity) if entity.starts_with("A_SalesOrder(") => {
                self.read_sales_order(entity, raw)
            }
            (SALES_ORDER_SERVICE, "POST", "A_SalesOrder") => self.create_sales_order(body).await,
            (SALES_ORDER_SERVICE, "POST", "$batch") => self.batch(headers, body).await,
            (CUSTOMER_RETURN_SERVICE, "GET", "A_CustomerReturn") => self.list_returns(raw, headers).await,
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

    /// A collection read of `documents` (in number order): the query checked (see [`ListQuery`]), the
    /// documents it selects, a page of them. Reads that are not a lookup by stamp (the books) meet the
    /// ERP's `down` fault and its latency, like the system API's reads of the books.
    async fn list<T: Listed>(
        &self,
        service: &str,
        set: &str,
        raw: &str,
        headers: &HeaderMap,
        documents: impl FnOnce() -> Vec<T>,
    ) -> Response {
        let query = match ListQuery::parse(raw, &self.settings.stamp_field, NAVIGATION) {
            Ok(q) => q,
            Err(message) => {
                return odata_error(StatusCode::BAD_REQUEST, "/IWBEP/CM_MGW_RT/004", message);
            }
        };
        if !query.filter.iter().any(|t| matches!(t, Term::Stamp(_))) {
            self.erp.delay().await;
            if self.erp.faults().down {
                return odata_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "SAP is down (injected fault)".into(),
                );
            }
        }
        let selected: Vec<Value> = documents()
            .iter()
            .filter(|d| {
                query.filter.iter().all(|t| match t {
                    Term::Stamp(stamp) => d.stamp() == stamp,
                    Term::Changed(op, at) => op.holds(d.last_change(), *at),
                })
            })
            .map(|d| d.entity(&self.settings, &query.expand))
            .collect();
        self.pages.fetch_add(1, Ordering::Relaxed);
        let size = self.page_size.load(Ordering::Relaxed);
        let d = query.page(selected, size, &next_base(headers, service, set));
        Json(json!({ "d": d })).into_response()
    }

    async fn list_sales_orders(&self, raw: &str, headers: &HeaderMap) -> Response {
        self.list(SALES_ORDER_SERVICE, "A_SalesOrder", raw, headers, || {
            self.sales_orders()
        })
        .await
    }

    async fn list_returns(&self, raw: &str, headers: &HeaderMap) -> Response {
        self.list(CUSTOMER_RETURN_SERVICE, "A_CustomerReturn", raw, headers, || {
            self.customer_returns()
        })
        .await
    }

    /// One sales order with its items and texts (and what else `$expand` names).
    fn read_sales_order(&self, entity: &str, raw: &str) -> Response {
        let number = entity
            .strip_prefix("A_SalesOrder('")
            .and_then(|r| r.strip_suffix("')"))
            .unwrap_or_default();
        let mut expand = match ListQuery::parse(raw, &self.settings.stamp_field, NAVIGATION) {
            Ok(q) => q.expand,
            Err(message) => {
                return odata_error(StatusCode::BAD_REQUEST, "/IWBEP/CM_MGW_RT/004", message);
            }
        };
        expand.0.extend(["to_Item".to_owned(), "to_Text".to_owned()]);
        let orders = self.sales_orders();
        let Some(order) = orders.iter().find(|o| o.number == number) else {
            return odata_error(
                StatusCode::NOT_FOUND,
                "/IWBEP/CM_MGW_RT/020",
                format!("Resource not found for segment 'A_SalesOrder'; key {number}"),
            );
        };
        let d = order.entity(&self.settings, &expand);
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
            occurred_at: match reference_word(v, "at")? {
                Some(at) => parse_at(&at)?,
                None => date_of(v, "CustomerPurchaseOrderDate")?,
            },
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
        // What the reference text records of the change (see the SAP connector's `reference`): its
        // business time, and the items it changed, which must be the change set's.
        let word = |name: &str| {
            long_text
                .split(' ')
                .skip(2)
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        };
        let occurred_at = match word("at") {
            Some(at) => at.parse::<Timestamp>().map_err(|_| {
                (
                    400,
                    "ZRS/008",
                    format!("reference text {long_text:?}: at={at:?} is not an RFC 3339 instant"),
                )
            })?,
            None => Timestamp::now(),
        };
        if let Some(items) = word("items") {
            let changed: Vec<String> = lines
                .iter()
                .map(|(line_no, open, after)| {
                    let ordered = sale
                        .lines
                        .iter()
                        .find(|l| l.line_no == *line_no)
                        .map_or(0, |l| l.quantity);
                    item_change(*line_no, ordered, *open, *after)
                })
                .collect();
            if items != changed.join(",") {
                return refuse(
                    400,
                    "ZRS/007",
                    format!(
                        "reference text {long_text:?} names items {items:?}, the change set changes {:?}",
                        changed.join(",")
                    ),
                );
            }
        }
        let key = self.key(stamp);
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
                occurred_at,
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
                occurred_at,
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
            occurred_at: match fact("at") {
                Some(at) => parse_at(&at)?,
                None => date_of(v, "CustomerPurchaseOrderDate")?,
            },
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
    /// `LastChangeDateTime`: see the module's documentation.
    last_change: Timestamp,
}

/// What a collection read needs of a document.
trait Listed {
    /// Its stamp (the mapping's stamp field).
    fn stamp(&self) -> &str;
    /// Its `LastChangeDateTime`.
    fn last_change(&self) -> Timestamp;
    /// The entity, with the navigation properties `expand` names.
    fn entity(&self, s: &SapSettings, expand: &Expand) -> Value;
}

impl Listed for SalesOrder {
    fn stamp(&self) -> &str {
        &self.stamp
    }
    fn last_change(&self) -> Timestamp {
        self.last_change
    }
    fn entity(&self, s: &SapSettings, expand: &Expand) -> Value {
        SalesOrder::entity(self, s, expand)
    }
}

impl Listed for CustomerReturn {
    fn stamp(&self) -> &str {
        &self.stamp
    }
    fn last_change(&self) -> Timestamp {
        self.request.occurred_at
    }
    fn entity(&self, s: &SapSettings, expand: &Expand) -> Value {
        CustomerReturn::entity(self, s, expand)
    }
}

/// The navigation properties reads expand (of `A_SalesOrder` and `A_CustomerReturn` alike).
const NAVIGATION: &[&str] = &[
    "to_Item",
    "to_Text",
    "to_PricingElement",
    "to_Item/to_PricingElement",
];

/// A customer return as the dialect shows it.
struct CustomerReturn {
    number: String,
    stamp: String,
    /// The sales order it refers to.
    order: String,
    request: ErpReturnRequest,
}

/// One item of a change as the reference text records it (see the SAP connector's `reference`).
fn item_change(line_no: u32, ordered: u32, before: u32, after: u32) -> String {
    format!("{}/{ordered}:{before}>{after}", line_no * 10)
}

impl SalesOrder {
    /// Applies a change of `lines` (`sign` −1 cancels, +1 reinstates) and answers what the reference
    /// text records of it: `<item>/<ordered>:<before>><after>` for each item, comma-separated.
    fn apply(&mut self, lines: &[LineQuantity], sign: i64) -> String {
        let mut items = Vec::new();
        for l in lines {
            let ordered = self
                .sale
                .lines
                .iter()
                .find(|s| s.line_no == l.line_no)
                .map_or(0, |s| s.quantity);
            if let Some((_, open)) = self.open.iter_mut().find(|(n, _)| *n == l.line_no) {
                let before = *open;
                let after = i64::from(*open) + sign * i64::from(l.quantity);
                *open = u32::try_from(after.max(0)).unwrap_or(0);
                items.push(item_change(l.line_no, ordered, before, *open));
            }
        }
        self.version += 1;
        items.join(",")
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
            "CustomerPurchaseOrderDate": day_of(self.sale.occurred_at),
            "LastChangeDateTime": date_time_offset(self.last_change),
        })
    }

    /// The header with the navigation properties `expand` names; the others deferred.
    fn entity(&self, s: &SapSettings, expand: &Expand) -> Value {
        let mut d = self.header(s);
        let uri = format!("A_SalesOrder('{}')", self.number);
        d["to_Item"] = if expand.has("to_Item") {
            json!({"results": self.items(s, expand.has("to_Item/to_PricingElement"))})
        } else {
            deferred(&format!("{uri}/to_Item"))
        };
        d["to_Text"] = if expand.has("to_Text") {
            json!({"results": self.text_entities()})
        } else {
            deferred(&format!("{uri}/to_Text"))
        };
        d["to_PricingElement"] = if expand.has("to_PricingElement") {
            let currency = self.sale.currency;
            let conditions: Vec<Value> = self
                .sale
                .redemption
                .iter()
                .map(|r| {
                    json!({
                        "SalesOrder": self.number,
                        "ConditionType": s.redemption,
                        "ConditionRateValue": rate_text(-r.value_minor.get(), currency),
                        "ConditionCurrency": currency.as_str(),
                    })
                })
                .collect();
            json!({"results": conditions})
        } else {
            deferred(&format!("{uri}/to_PricingElement"))
        };
        d
    }

    fn text_entities(&self) -> Vec<Value> {
        self.texts
            .iter()
            .map(|t| json!({"SalesOrder": self.number, "Language": "EN", "LongTextID": TEXT_ID, "LongText": t}))
            .collect()
    }

    /// The items, with their pricing elements when `pricing` (else deferred).
    fn items(&self, s: &SapSettings, pricing: bool) -> Vec<Value> {
        let currency = self.sale.currency;
        self.sale
            .lines
            .iter()
            .map(|l| {
                let open = self
                    .open
                    .iter()
                    .find(|(n, _)| *n == l.line_no)
                    .map_or(0, |(_, o)| *o);
                let item = (l.line_no * 10).to_string();
                // A rejected item keeps its last quantity; SAP shows the rejection reason instead.
                let (quantity, rejection) = if open == 0 { (l.quantity, "10") } else { (open, "") };
                let condition = |kind: &str, minor: i64| {
                    json!({
                        "SalesOrder": self.number,
                        "SalesOrderItem": item,
                        "ConditionType": kind,
                        "ConditionRateValue": rate_text(minor, currency),
                        "ConditionCurrency": currency.as_str(),
                    })
                };
                let pricing = if pricing {
                    let mut conditions = vec![condition(&s.price, l.unit_price_minor.get())];
                    if l.discount_minor.get() > 0 {
                        conditions.push(condition(&s.discount, -l.discount_minor.get()));
                    }
                    conditions.push(condition(&s.tax, l.tax_minor.get()));
                    json!({"results": conditions})
                } else {
                    deferred(&format!(
                        "A_SalesOrderItem(SalesOrder='{}',SalesOrderItem='{item}')/to_PricingElement",
                        self.number
                    ))
                };
                // Items have no ETag of their own in SAP's metadata: changes to them are checked
                // against the order's.
                json!({
                    "__metadata": {"type": "API_SALES_ORDER_SRV.A_SalesOrderItemType"},
                    "SalesOrder": self.number,
                    "SalesOrderItem": item,
                    "Material": l.sku.as_str(),
                    "RequestedQuantity": format!("{quantity}.000"),
                    "SalesDocumentRjcnReason": rejection,
                    "to_PricingElement": pricing,
                })
            })
            .collect()
    }
}

impl CustomerReturn {
    fn entity(&self, s: &SapSettings, expand: &Expand) -> Value {
        let r = &self.request;
        let currency = r.currency;
        let uri = format!("A_CustomerReturn('{}')", self.number);
        let mut fact = format!("return={} original={}", r.return_id, SagaId::of(&r.original));
        if let Some(store) = &r.store_id {
            fact.push_str(&format!(" store={store}"));
        }
        fact.push_str(&format!(" at={}", r.occurred_at));
        let mut d = json!({
            "__metadata": {"type": "API_CUSTOMER_RETURN_SRV.A_CustomerReturnType"},
            "CustomerReturn": self.number,
            s.stamp_field.clone(): self.stamp,
            "TransactionCurrency": currency.as_str(),
            "CustomerPurchaseOrderDate": day_of(r.occurred_at),
            "LastChangeDateTime": date_time_offset(r.occurred_at),
        });
        d["to_Item"] = if expand.has("to_Item") {
            let items: Vec<Value> = r
                .lines
                .iter()
                .map(|l| {
                    let item = (l.line_no * 10).to_string();
                    let pricing = if expand.has("to_Item/to_PricingElement") {
                        json!({"results": [{
                            "CustomerReturn": self.number,
                            "CustomerReturnItem": item,
                            "ConditionType": s.refund,
                            "ConditionRateValue": rate_text(l.refund_minor.get(), currency),
                            "ConditionCurrency": currency.as_str(),
                        }]})
                    } else {
                        deferred(&format!(
                            "A_CustomerReturnItem(CustomerReturn='{}',CustomerReturnItem='{item}')/to_PricingElement",
                            self.number
                        ))
                    };
                    json!({
                        "CustomerReturn": self.number,
                        "CustomerReturnItem": item,
                        "Material": l.sku.as_str(),
                        "RequestedQuantity": format!("{}.000", l.quantity),
                        "ReferenceSDDocument": self.order,
                        "ReferenceSDDocumentItem": item,
                        "to_PricingElement": pricing,
                    })
                })
                .collect();
            json!({"results": items})
        } else {
            deferred(&format!("{uri}/to_Item"))
        };
        d["to_Text"] = if expand.has("to_Text") {
            json!({"results": [{
                "CustomerReturn": self.number,
                "Language": "EN",
                "LongTextID": TEXT_ID,
                "LongText": text_line(&self.stamp, &fact),
            }]})
        } else {
            deferred(&format!("{uri}/to_Text"))
        };
        d["to_PricingElement"] = if expand.has("to_PricingElement") {
            json!({"results": []})
        } else {
            deferred(&format!("{uri}/to_PricingElement"))
        };
        d
    }
}

/// One operation of a received change set.
#[derive(Clone)]
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

/// The value of the `name=` word of the retail-sync reference text of a deep insert.
fn reference_word(v: &Value, name: &str) -> Result<Option<String>, String> {
    let text = reference_of(v)?;
    Ok(text
        .split(' ')
        .skip(2)
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned))
}

/// A business time a reference text records (`at=`).
fn parse_at(at: &str) -> Result<Timestamp, String> {
    at.parse()
        .map_err(|_| format!("the reference text's at={at:?} is not an RFC 3339 instant"))
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

// --- collection reads: query options, filters, paging ------------------------------------------------

/// The navigation properties a read expands (`$expand`).
#[derive(Debug, Default)]
struct Expand(Vec<String>);

impl Expand {
    /// Whether `path` is expanded, itself or through a longer path (`to_Item/to_PricingElement` expands
    /// `to_Item`).
    fn has(&self, path: &str) -> bool {
        self.0
            .iter()
            .any(|p| p == path || p.strip_prefix(path).is_some_and(|r| r.starts_with('/')))
    }
}

/// A comparison of `$filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ge,
    Gt,
    Le,
    Lt,
}

impl Cmp {
    fn parse(op: &str) -> Option<Self> {
        Some(match op {
            "eq" => Self::Eq,
            "ge" => Self::Ge,
            "gt" => Self::Gt,
            "le" => Self::Le,
            "lt" => Self::Lt,
            _ => return None,
        })
    }

    fn holds(self, value: Timestamp, literal: Timestamp) -> bool {
        match self {
            Self::Eq => value == literal,
            Self::Ge => value >= literal,
            Self::Gt => value > literal,
            Self::Le => value <= literal,
            Self::Lt => value < literal,
        }
    }
}

/// One condition of `$filter` (they are joined by `and`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    /// `{stamp field} eq '…'`.
    Stamp(String),
    /// `LastChangeDateTime {op} datetimeoffset'…'` (or `datetime'…'`, read as UTC).
    Changed(Cmp, Timestamp),
}

/// A collection read's query options, checked: `$filter` (terms of [`Term`] joined by ` and `),
/// `$expand` (the set's navigation properties), `$top`, `$skip`, `$skiptoken` (where the page starts in
/// what `$skip` and `$top` leave, as this simulator's `__next` links give it), `$inlinecount`,
/// `$format=json` and `$select` (accepted, not applied). Any other system query option, or one given
/// twice, is refused; parameters without `$` (`sap-client`) are ignored.
#[derive(Debug)]
struct ListQuery {
    filter: Vec<Term>,
    expand: Expand,
    skip: usize,
    top: Option<usize>,
    skiptoken: usize,
    count: bool,
    /// The system query options as received (decoded), for the `__next` link.
    options: BTreeMap<String, String>,
}

impl ListQuery {
    fn parse(raw: &str, stamp_field: &str, navigation: &[&str]) -> Result<Self, String> {
        let mut options = BTreeMap::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (name, value) = (percent_decode(name), percent_decode(value));
            if !name.starts_with('$') {
                continue;
            }
            if !matches!(
                name.as_str(),
                "$filter"
                    | "$expand"
                    | "$select"
                    | "$top"
                    | "$skip"
                    | "$skiptoken"
                    | "$format"
                    | "$inlinecount"
            ) {
                return Err(format!("System query option '{name}' is not supported"));
            }
            if options.insert(name.clone(), value).is_some() {
                return Err(format!("System query option '{name}' is given more than once"));
            }
        }
        let number = |name: &str| -> Result<Option<usize>, String> {
            options
                .get(name)
                .map(|v| {
                    v.parse::<usize>()
                        .map_err(|_| format!("Invalid value '{v}' of system query option '{name}'"))
                })
                .transpose()
        };
        let (top, skip, skiptoken) = (number("$top")?, number("$skip")?, number("$skiptoken")?);
        match options.get("$format").map(String::as_str) {
            None | Some("json") => {}
            Some(other) => {
                return Err(format!(
                    "Format '{other}' is not supported: the simulator answers json"
                ));
            }
        }
        let count = match options.get("$inlinecount").map(String::as_str) {
            None | Some("none") => false,
            Some("allpages") => true,
            Some(other) => {
                return Err(format!(
                    "Invalid value '{other}' of system query option '$inlinecount'"
                ));
            }
        };
        let mut expand = Expand::default();
        for path in options
            .get("$expand")
            .map(String::as_str)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            if !navigation.contains(&path) {
                return Err(format!("Navigation property '{path}' is not supported"));
            }
            expand.0.push(path.to_owned());
        }
        let filter = match options.get("$filter") {
            Some(f) => parse_filter(f, stamp_field)?,
            None => Vec::new(),
        };
        Ok(Self {
            filter,
            expand,
            skip: skip.unwrap_or(0),
            top,
            skiptoken: skiptoken.unwrap_or(0),
            count,
            options,
        })
    }

    /// The `d` of the answer: the page of `selected` this read asks for, at most `size` entities, with
    /// `__next` (`base` and the options, `$skiptoken` moved on) when more follow, and `__count` when
    /// asked.
    fn page(&self, selected: Vec<Value>, size: usize, base: &str) -> Value {
        let total = selected.len();
        let window: Vec<Value> = selected
            .into_iter()
            .skip(self.skip)
            .take(self.top.unwrap_or(usize::MAX))
            .collect();
        let start = self.skiptoken.min(window.len());
        let end = start.saturating_add(size).min(window.len());
        let mut d = json!({"results": window[start..end]});
        if self.count {
            d["__count"] = Value::String(total.to_string());
        }
        if end < window.len() {
            let mut options = self.options.clone();
            options.insert("$skiptoken".into(), end.to_string());
            let query: Vec<String> = options
                .iter()
                .map(|(name, value)| format!("{name}={}", percent_encode(value)))
                .collect();
            d["__next"] = Value::String(format!("{base}?{}", query.join("&")));
        }
        d
    }
}

fn parse_filter(filter: &str, stamp_field: &str) -> Result<Vec<Term>, String> {
    let invalid = || format!("Invalid filter expression: '{filter}'");
    let stamp_prefix = format!("{stamp_field} eq '");
    filter
        .split(" and ")
        .map(|term| {
            let term = term.trim();
            if let Some(value) = term
                .strip_prefix(&stamp_prefix)
                .and_then(|v| v.strip_suffix('\''))
            {
                return Ok(Term::Stamp(value.replace("''", "'")));
            }
            let rest = term.strip_prefix("LastChangeDateTime ").ok_or_else(invalid)?;
            let (op, literal) = rest.split_once(' ').ok_or_else(invalid)?;
            let op = Cmp::parse(op).ok_or_else(invalid)?;
            let text = literal
                .strip_prefix("datetimeoffset'")
                .or_else(|| literal.strip_prefix("datetime'"))
                .and_then(|l| l.strip_suffix('\''))
                .ok_or_else(invalid)?;
            let at = text
                .parse::<Timestamp>()
                .ok()
                .or_else(|| {
                    text.parse::<jiff::civil::DateTime>()
                        .ok()
                        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
                        .map(|z| z.timestamp())
                })
                .ok_or_else(|| format!("'{text}' is not a valid date and time literal"))?;
            Ok(Term::Changed(op, at))
        })
        .collect()
}

/// Where `__next` links of `set` point: the host the request named (as SAP builds absolute links from
/// the `Host` header), over http (the simulators serve no TLS).
fn next_base(headers: &HeaderMap, service: &str, set: &str) -> String {
    let host = header_str(headers, header::HOST.as_str()).unwrap_or("localhost");
    format!("http://{host}/sap/opu/odata/sap/{service}/{set}")
}

/// A query option's value percent-encoded (everything but RFC 3986's unreserved characters).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A navigation property not expanded, as OData v2 JSON shows it.
fn deferred(uri: &str) -> Value {
    json!({"__deferred": {"uri": uri}})
}

/// `Edm.DateTime` of the day of `at` (a date property: midnight UTC), as OData v2 JSON writes it.
fn day_of(at: Timestamp) -> String {
    let ms = at.as_millisecond();
    format!("/Date({})/", ms - ms.rem_euclid(86_400_000))
}

/// `Edm.DateTimeOffset` as SAP's OData v2 JSON writes it (`/Date(<ms>+0000)/`).
fn date_time_offset(at: Timestamp) -> String {
    format!("/Date({}+0000)/", at.as_millisecond())
}

/// A condition amount as SAP answers it: `ConditionRateValue` has 9 decimal places.
fn rate_text(minor: i64, currency: Currency) -> String {
    let text = decimal(minor, currency);
    let places = currency.minor_exponent() as usize;
    if places == 0 {
        format!("{text}.000000000")
    } else {
        format!("{text}{}", "0".repeat(9usize.saturating_sub(places)))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::{order_sale, return_of, sale};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// A SAP front over a fresh ERP holding, as the SAP connector would have posted them: the sales
    /// order of `o-1` (2 units of line 1, 10.00 net, 2.00 of points redeemed) on 2026-05-28 at 10:00,
    /// one unit of it cancelled at 11:00, the receipt `r-1` at 12:00 and its return at 13:00.
    fn sap() -> SapSimulator {
        let sap = SapSimulator::new(ErpSimulator::new());
        let mut o1 = order_sale("o-1");
        o1.occurred_at = at("2026-05-28T10:00:00Z");
        o1.redemption = Some(Redemption {
            hold_id: HoldId::parse("sap-condition").unwrap(),
            points: Points::new(200).unwrap(),
            value_minor: Amount::new(200).unwrap(),
        });
        sap.erp.post_sale(&o1, "sap:1:order:o-1").unwrap();
        let cancel = ErpCancelRequest {
            lines: Some(vec![LineQuantity {
                line_no: 1,
                quantity: 1,
            }]),
            value_minor: Amount::new(500).unwrap(),
            occurred_at: at("2026-05-28T11:00:00Z"),
            ..crate::samples::cancellation("o-1", "cx-1")
        };
        sap.erp.cancel_order(&cancel, "sap:2:cx-1-stamp").unwrap();
        let mut r1 = sale("store-1", "r-1");
        r1.occurred_at = at("2026-05-28T12:00:00Z");
        sap.erp.post_sale(&r1, "sap:3:receipt:store-1:r-1").unwrap();
        let mut ret = return_of("ret-1", r1.transaction.clone(), None);
        ret.occurred_at = at("2026-05-28T13:00:00Z");
        sap.erp.post_return(&ret, "sap:4:ret-1-stamp").unwrap();
        sap
    }

    fn host() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "sap.test:8443".parse().unwrap());
        headers
    }

    async fn get(sap: &SapSimulator, service: &str, rest: &str, query: &str) -> (StatusCode, Value) {
        let response = sap
            .handle(Method::GET, service, rest, Some(query.to_owned()), &host(), &[])
            .await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn numbers(d: &Value, key: &str) -> Vec<String> {
        d["d"]["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[key].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn sales_orders_are_read_changed_since_with_items_pricing_and_texts() {
        let sap = sap();
        let (status, d) = get(
            &sap,
            SALES_ORDER_SERVICE,
            "A_SalesOrder",
            "$filter=LastChangeDateTime%20ge%20datetimeoffset'2026-05-28T11:00:00Z'\
             &$expand=to_Item,to_Item/to_PricingElement,to_Text,to_PricingElement&$format=json",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{d}");
        // o-1 was last changed by its cancellation at 11:00; r-1 at 12:00.
        assert_eq!(numbers(&d, "SalesOrder"), ["1", "3"]);
        let o1 = &d["d"]["results"][0];
        assert_eq!(o1["LastChangeDateTime"], "/Date(1779966000000+0000)/");
        assert_eq!(o1["CustomerPurchaseOrderDate"], "/Date(1779926400000)/", "a date");
        assert_eq!(o1["TransactionCurrency"], "EUR");
        let item = &o1["to_Item"]["results"][0];
        assert_eq!(item["RequestedQuantity"], "1.000");
        let price = &item["to_PricingElement"]["results"][0];
        assert_eq!(
            (&price["ConditionType"], &price["ConditionRateValue"]),
            (&json!("PPR0"), &json!("5.000000000"))
        );
        assert_eq!(
            o1["to_PricingElement"]["results"][0]["ConditionRateValue"],
            "-2.000000000"
        );
        let texts: Vec<&str> = o1["to_Text"]["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["LongText"].as_str().unwrap())
            .collect();
        assert_eq!(
            texts,
            [
                "retail-sync order:o-1 transaction=order:o-1 at=2026-05-28T10:00:00Z",
                "retail-sync cx-1-stamp cancellation=cx-1 at=2026-05-28T11:00:00Z items=10/2:2>1",
            ]
        );
        assert!(d["d"].get("__next").is_none(), "one page");

        // Not expanded, navigation is deferred; a later bound leaves o-1 out.
        let (_, d) = get(
            &sap,
            SALES_ORDER_SERVICE,
            "A_SalesOrder",
            "$filter=LastChangeDateTime gt datetimeoffset'2026-05-28T11:00:00Z'",
        )
        .await;
        assert_eq!(numbers(&d, "SalesOrder"), ["3"]);
        assert!(d["d"]["results"][0]["to_Item"]["__deferred"].is_object());
        let (_, d) = get(
            &sap,
            SALES_ORDER_SERVICE,
            "A_SalesOrder",
            "$filter=LastChangeDateTime ge datetime'2026-05-28T10:00:00' and LastChangeDateTime lt datetimeoffset'2026-05-28T12:00:00Z'",
        )
        .await;
        assert_eq!(numbers(&d, "SalesOrder"), ["1"]);
    }

    #[tokio::test]
    async fn customer_returns_show_their_items_refunds_and_text() {
        let sap = sap();
        let (status, d) = get(
            &sap,
            CUSTOMER_RETURN_SERVICE,
            "A_CustomerReturn",
            "$filter=LastChangeDateTime ge datetimeoffset'2026-05-28T00:00:00Z'&$expand=to_Item,to_Item/to_PricingElement,to_Text",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{d}");
        assert_eq!(numbers(&d, "CustomerReturn"), ["60000004"]);
        let r = &d["d"]["results"][0];
        assert_eq!(
            r["to_Text"]["results"][0]["LongText"],
            "retail-sync ret-1-stamp return=ret-1 original=receipt:store-1:r-1 at=2026-05-28T13:00:00Z"
        );
        let item = &r["to_Item"]["results"][0];
        assert_eq!(item["ReferenceSDDocument"], "3");
        assert_eq!(
            item["to_PricingElement"]["results"][0]["ConditionRateValue"],
            "5.000000000"
        );
        let (_, d) = get(
            &sap,
            CUSTOMER_RETURN_SERVICE,
            "A_CustomerReturn",
            "$filter=LastChangeDateTime ge datetimeoffset'2026-05-28T13:00:00.001Z'",
        )
        .await;
        assert_eq!(numbers(&d, "CustomerReturn"), Vec::<String>::new());
        // The lookup by stamp answers the same entity.
        let (_, d) = get(
            &sap,
            CUSTOMER_RETURN_SERVICE,
            "A_CustomerReturn",
            "$filter=PurchaseOrderByCustomer eq 'ret-1-stamp'&$top=2",
        )
        .await;
        assert_eq!(numbers(&d, "CustomerReturn"), ["60000004"]);
    }

    #[tokio::test]
    async fn pages_follow_each_other_by_their_next_links() {
        let sap = SapSimulator::new(ErpSimulator::new());
        for i in 1..=5 {
            sap.erp
                .post_sale(&order_sale(&format!("o-{i}")), &format!("sap:{i}:s-{i}"))
                .unwrap();
        }
        sap.set_page_size(2);
        let query =
            "$filter=LastChangeDateTime ge datetimeoffset'2026-01-01T00:00:00Z'&$inlinecount=allpages";
        let (_, first) = get(&sap, SALES_ORDER_SERVICE, "A_SalesOrder", query).await;
        assert_eq!(numbers(&first, "SalesOrder"), ["1", "2"]);
        assert_eq!(first["d"]["__count"], "5");
        let next = first["d"]["__next"].as_str().unwrap();
        let prefix = "http://sap.test:8443/sap/opu/odata/sap/API_SALES_ORDER_SRV/A_SalesOrder?";
        assert!(next.starts_with(prefix), "{next}");
        assert!(next.contains("$skiptoken=2"), "{next}");
        let (_, second) = get(&sap, SALES_ORDER_SERVICE, "A_SalesOrder", &next[prefix.len()..]).await;
        assert_eq!(numbers(&second, "SalesOrder"), ["3", "4"]);
        let next = second["d"]["__next"].as_str().unwrap();
        let (_, last) = get(&sap, SALES_ORDER_SERVICE, "A_SalesOrder", &next[prefix.len()..]).await;
        assert_eq!(numbers(&last, "SalesOrder"), ["5"]);
        assert!(last["d"].get("__next").is_none());
        assert_eq!(sap.pages_served(), 3);

        // Client paging: $skip and $top, paged within what they leave.
        let (_, d) = get(&sap, SALES_ORDER_SERVICE, "A_SalesOrder", "$skip=1&$top=3").await;
        assert_eq!(numbers(&d, "SalesOrder"), ["2", "3"]);
        let next = d["d"]["__next"].as_str().unwrap();
        let (_, d) = get(&sap, SALES_ORDER_SERVICE, "A_SalesOrder", &next[prefix.len()..]).await;
        assert_eq!(numbers(&d, "SalesOrder"), ["4"], "$top=3 ends it");
        assert!(d["d"].get("__next").is_none());
    }

    #[tokio::test]
    async fn queries_it_does_not_understand_are_400s() {
        let sap = sap();
        for query in [
            "$filter=CreationDate ge datetime'2026-05-28T00:00:00'",
            "$filter=LastChangeDateTime ge '2026-05-28'",
            "$filter=LastChangeDateTime ge datetimeoffset'yesterday'",
            "$filter=LastChangeDateTime near datetimeoffset'2026-05-28T00:00:00Z'",
            "$filter=LastChangeDateTime ge datetimeoffset'2026-05-28T00:00:00Z' or SalesOrder eq '1'",
            "$expand=to_Partner",
            "$expand=to_Item/to_ScheduleLine",
            "$top=-1",
            "$skip=many",
            "$skiptoken=abc",
            "$format=xml",
            "$inlinecount=some",
            "$orderby=SalesOrder desc",
            "$top=1&$top=2",
        ] {
            let (status, d) = get(&sap, SALES_ORDER_SERVICE, "A_SalesOrder", query).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {d}");
            assert!(d["error"]["message"]["value"].is_string(), "{query}: {d}");
        }
        // Parameters that are not system query options are not the simulator's business.
        let (status, _) = get(&sap, SALES_ORDER_SERVICE, "A_SalesOrder", "sap-client=100").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_books_read_meets_the_erp_s_outage_and_the_lookup_by_stamp_does_not() {
        let sap = sap();
        sap.erp.set_down(true);
        let (status, d) = get(
            &sap,
            SALES_ORDER_SERVICE,
            "A_SalesOrder",
            "$filter=LastChangeDateTime ge datetimeoffset'2026-05-28T00:00:00Z'",
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{d}");
        let (status, _) = get(
            &sap,
            SALES_ORDER_SERVICE,
            "A_SalesOrder",
            "$filter=PurchaseOrderByCustomer eq 'order:o-1'",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }

    fn change(method: &str, path: &str, if_match: Option<&str>, body: Value) -> BatchChange {
        BatchChange {
            method: method.into(),
            path: path.into(),
            if_match: if_match.map(str::to_owned),
            body,
        }
    }

    #[test]
    fn a_change_set_takes_its_business_time_from_its_text_and_must_name_its_items() {
        let sap = SapSimulator::new(ErpSimulator::new());
        sap.erp.post_sale(&order_sale("o-1"), "sap:1:order:o-1").unwrap();
        let etag = "W/\"1\"";
        let patch = change(
            "PATCH",
            "A_SalesOrderItem(SalesOrder='1',SalesOrderItem='10')",
            Some(etag),
            json!({"RequestedQuantity": "1", "SalesDocumentRjcnReason": ""}),
        );
        let text = |t: &str| {
            change(
                "POST",
                "A_SalesOrder('1')/to_Text",
                None,
                json!({"Language": "EN", "LongTextID": "ZRS1", "LongText": t}),
            )
        };
        let refused = sap
            .change_set(&[
                patch.clone(),
                text("retail-sync s1 cancellation=cx-1 at=2026-05-29T08:00:00Z items=10/2:2>0"),
            ])
            .unwrap_err();
        assert_eq!((refused.0, refused.1), (400, "ZRS/007"), "{}", refused.2);
        let refused = sap
            .change_set(&[
                patch.clone(),
                text("retail-sync s1 cancellation=cx-1 at=soon items=10/2:2>1"),
            ])
            .unwrap_err();
        assert_eq!(refused.1, "ZRS/008");
        assert_eq!(sap.erp.postings().len(), 1, "nothing applied");
        sap.change_set(&[
            patch,
            text("retail-sync s1 cancellation=cx-1 at=2026-05-29T08:00:00Z items=10/2:2>1"),
        ])
        .unwrap()
        .unwrap();
        let posted = &sap.erp.postings()[1];
        assert_eq!(posted.occurred_at, at("2026-05-29T08:00:00Z"));
        assert_eq!(posted.net_minor.get(), 500);
        let orders = sap.sales_orders();
        assert_eq!(
            orders[0].texts[1],
            "retail-sync s1 cancellation=cx-1 at=2026-05-29T08:00:00Z items=10/2:2>1"
        );
        assert_eq!(orders[0].last_change, at("2026-05-29T08:00:00Z"));
    }
}
