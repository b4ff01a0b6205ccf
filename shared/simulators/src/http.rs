//! The simulators over HTTP, as the "system APIs" the connectors talk to (contract:
//! `shared/connectors/openapi/{erp,loyalty,crm}.yaml`). One server carries every system under its own
//! path prefix, so one process and one port serve a whole local run.
//!
//! Every route under `/erp/v1`, `/loyalty/v1` and `/crm/v1` requires a credential the [`Access`] admits
//! (a bearer token from `POST /oauth/token`, or the API key in `x-api-key`); without one it answers 401
//! `unauthorized`. Routes (the mutating ones, every `POST` and `PUT`, require the `Idempotency-Key`
//! header):
//! - `POST /erp/v1/sales` (`ErpSaleRequest`) → 201 `ErpDocument`
//! - `POST /erp/v1/sales/cancellations` (`ErpCancelRequest`) → 201 `ErpDocument`
//! - `POST /erp/v1/sales/reinstatements` (`ErpReinstateRequest`) → 201 `ErpDocument`
//! - `POST /erp/v1/returns` (`ErpReturnRequest`) → 201 `ErpDocument`
//! - `PUT /erp/v1/customers/{member_id}` (`MemberSnapshot`) → 200 [`MemberSynced`]
//! - `POST /loyalty/v1/accruals` (`AccrualRequest`) → 201 `Accrual` (`pending` when `pending_until`
//!   held its points pending)
//! - `POST /loyalty/v1/accruals/{loyalty_transaction_id}/confirm` (`{}`) → 200 `Confirmation`: the
//!   accrual's pending points made spendable (404 `transaction_not_found`, 409 `not_pending`)
//! - `POST /loyalty/v1/members` (`{"member_id"}`) → 201 `{"member_id"}` (enrolled, now or before)
//! - `GET /erp/v1/documents?from=…&to=…` → 200 [`DocumentList`]: the ERP's books, every document whose
//!   business time is in `[from, to)`, in posting order
//! - `GET /loyalty/v1/members/{member_id}/balance` → 200 `Balance`
//! - `PUT /loyalty/v1/members/{member_id}/profile` (`MemberSnapshot`) → 200 [`MemberSynced`]
//! - `POST /loyalty/v1/members/{duplicate_id}/merge` (`{"survivor_id"}`) → 200 [`MergeOutcome`]
//! - `POST /loyalty/v1/holds` (`HoldRequest`) → 201 `Hold`
//! - `GET /loyalty/v1/holds/{hold_id}` → 200 `Hold`
//! - `POST /loyalty/v1/holds/{hold_id}/commit` (`CommitRequest`) → 200 `Hold`
//! - `POST /loyalty/v1/holds/{hold_id}/release` (`{}`) → 200 `Hold`
//! - `POST /loyalty/v1/adjustments` (`AdjustmentRequest`) → 201 `Adjustment`
//! - `GET /loyalty/v1/transactions?from=…&to=…` → 200 [`MovementList`]: the platform's ledger, every
//!   movement whose business time is in `[from, to)`, in booking order
//! - `PUT /crm/v1/contacts/{member_id}` (`MemberSnapshot`) → 200 [`MemberSynced`]
//! - `GET /crm/v1/contacts/{member_id}` → 200 [`CrmContact`]
//! - `POST /oauth/token` (also at `/services/oauth2/token`, where Salesforce serves it) → 200 token
//!   (see [`crate::access`])
//! - `/sap/opu/odata/sap/{API_SALES_ORDER_SRV|API_CUSTOMER_RETURN_SRV}/…`: SAP's dialect
//!   ([`crate::sap`]), and `/services/data/{version}/…`: Salesforce's ([`crate::salesforce`]), over the
//!   same two systems and behind the same credentials
//! - `GET|PUT /{erp|loyalty|crm}/_admin/faults` → 200 `Faults`
//! - `GET /_admin/state` → 200 [`SimState`]
//! - `GET /health` → 200 `{"status": "ok"}`
//!
//! Every error is `{"code", "message"}` with its status. An injected timeout holds the response for
//! [`HANG`], far beyond any client timeout. A member or hold id in a path that is not a valid id is
//! answered like an unknown one (404): no such member or hold can exist. A `PUT` of a snapshot names its
//! member twice (path and body): a body of another member is refused (400 `member_mismatch`).
//!
//! The reads of the books take `from` and `to` as RFC 3339 instants, percent-encoded (a `+` of an offset
//! as `%2B`: a bare `+` reads as a space); a missing, repeated, unknown or unreadable parameter is
//! refused (400 `invalid_query`), and so is an empty or inverted window (400 `invalid_window`). Like the
//! other reads they meet only the `down` fault (and the latency); they are not counted as requests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Form, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use jiff::Timestamp;

use retail_sync_contracts::values::{ExternalRef, HoldId, MemberId};
use retail_sync_core::ports::{
    AccrualRequest, AdjustmentRequest, BookedDocument, BookedPoints, CommitRequest, ErpCancelRequest,
    ErpReinstateRequest, ErpReturnRequest, ErpSaleRequest, Hold, HoldRequest, MemberSnapshot,
};

use crate::access::{Access, TOKEN_PATH};
use crate::crm::{CrmContact, CrmSimulator};
use crate::dialect::percent_decode;
use crate::erp::{ErpPosting, ErpSimulator};
use crate::error::SimError;
use crate::faults::Faults;
use crate::loyalty::{LoyaltyMemberView, LoyaltySimulator, LoyaltyTransaction, MergeOutcome};
use crate::members::MemberSynced;
use crate::salesforce::SalesforceSimulator;
use crate::sap::SapSimulator;

pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// How long an injected timeout keeps the client waiting.
pub const HANG: Duration = Duration::from_secs(60);

/// The error body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// What `GET /_admin/state` shows: every system's books, for tests and the CLI's reconciliation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimState {
    pub erp_requests: u64,
    pub erp_postings: Vec<ErpPosting>,
    pub loyalty_requests: u64,
    pub loyalty_transactions: Vec<LoyaltyTransaction>,
    pub balances: BTreeMap<String, u64>,
    /// Every hold, with its status as of the request (expiry applied).
    #[serde(default)]
    pub holds: Vec<Hold>,
    /// Every enrolled member, merged ones included.
    #[serde(default)]
    pub loyalty_members: Vec<LoyaltyMemberView>,
    /// The ERP's customer accounts.
    #[serde(default)]
    pub erp_customers: Vec<MemberSnapshot>,
    #[serde(default)]
    pub crm_requests: u64,
    #[serde(default)]
    pub crm_contacts: Vec<CrmContact>,
}

/// What `GET /erp/v1/documents` answers: the ERP's books over the window asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentList {
    pub documents: Vec<BookedDocument>,
}

/// What `GET /loyalty/v1/transactions` answers: the loyalty platform's ledger over the window asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MovementList {
    pub movements: Vec<BookedPoints>,
}

/// The reference systems one server carries. Clones share each system's state, so a caller keeps a
/// handle on what it serves.
#[derive(Clone, Default)]
pub struct Systems {
    pub erp: ErpSimulator,
    pub loyalty: LoyaltySimulator,
    pub crm: CrmSimulator,
}

/// The platforms' own dialects in front of the reference systems, served beside the system APIs.
#[derive(Clone)]
pub struct Dialects {
    pub sap: SapSimulator,
    pub salesforce: SalesforceSimulator,
}

impl Dialects {
    /// The dialects over these reference systems.
    pub fn over(erp: &ErpSimulator, loyalty: &LoyaltySimulator) -> Self {
        Self {
            sap: SapSimulator::new(erp.clone()),
            salesforce: SalesforceSimulator::new(loyalty.clone()),
        }
    }
}

/// The routes above, for callers that want to mount them in their own server. The CRM is a fresh one,
/// reachable over HTTP only: [`router_for`] serves one the caller keeps a handle on.
pub fn router(erp: ErpSimulator, loyalty: LoyaltySimulator, access: Access) -> Router {
    let dialects = Dialects::over(&erp, &loyalty);
    router_with(erp, loyalty, dialects, access)
}

/// [`router`] with dialects the caller keeps a handle on (to end SAP sessions, say).
pub fn router_with(
    erp: ErpSimulator,
    loyalty: LoyaltySimulator,
    dialects: Dialects,
    access: Access,
) -> Router {
    let systems = Systems {
        erp,
        loyalty,
        crm: CrmSimulator::new(),
    };
    router_for(systems, dialects, access)
}

/// The routes above over `systems`, with `dialects` in front of its ERP and loyalty platform.
pub fn router_for(systems: Systems, dialects: Dialects, access: Access) -> Router {
    let dialect_routes = crate::sap::router(dialects.sap)
        .merge(crate::salesforce::router(dialects.salesforce))
        .route_layer(middleware::from_fn_with_state(access.clone(), authorize));
    let routes = Router::new()
        .route("/erp/v1/sales", post(post_sale))
        .route("/erp/v1/sales/cancellations", post(cancel_order))
        .route("/erp/v1/sales/reinstatements", post(reinstate))
        .route("/erp/v1/returns", post(post_return))
        .route("/erp/v1/customers/{member_id}", put(sync_customer))
        .route("/erp/v1/documents", get(documents))
        .route("/loyalty/v1/accruals", post(accrue))
        .route(
            "/loyalty/v1/accruals/{loyalty_transaction_id}/confirm",
            post(confirm_accrual),
        )
        .route("/loyalty/v1/members", post(enrol))
        .route("/loyalty/v1/members/{member_id}/balance", get(balance))
        .route("/loyalty/v1/members/{member_id}/profile", put(sync_profile))
        .route("/loyalty/v1/members/{member_id}/merge", post(merge))
        .route("/loyalty/v1/holds", post(create_hold))
        .route("/loyalty/v1/holds/{hold_id}", get(get_hold))
        .route("/loyalty/v1/holds/{hold_id}/commit", post(commit_hold))
        .route("/loyalty/v1/holds/{hold_id}/release", post(release_hold))
        .route("/loyalty/v1/adjustments", post(adjust))
        .route("/loyalty/v1/transactions", get(movements))
        .route("/crm/v1/contacts/{member_id}", get(get_contact).put(sync_contact))
        .route_layer(middleware::from_fn_with_state(access.clone(), authorize));
    routes
        .route("/{system}/_admin/faults", get(get_faults).put(put_faults))
        .route("/_admin/state", get(state))
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, "route_not_found", "no such route".into()) })
        .with_state(systems)
        .merge(dialect_routes)
        .merge(
            Router::new()
                .route(TOKEN_PATH, post(token))
                // Where Salesforce serves it (My Domain); same grant, same answer.
                .route("/services/oauth2/token", post(token))
                .with_state(access),
        )
}

/// Binds `addr` (use `127.0.0.1:0` for a free port), serves the simulators on it in a spawned task and
/// returns the bound address. Abort the handle to stop serving. The CRM is a fresh one, reachable over
/// HTTP only: [`serve_systems`] serves one the caller keeps a handle on.
pub async fn serve(
    erp: ErpSimulator,
    loyalty: LoyaltySimulator,
    access: Access,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let dialects = Dialects::over(&erp, &loyalty);
    serve_with(erp, loyalty, dialects, access, addr).await
}

/// [`serve`] with dialects the caller keeps a handle on.
pub async fn serve_with(
    erp: ErpSimulator,
    loyalty: LoyaltySimulator,
    dialects: Dialects,
    access: Access,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let systems = Systems {
        erp,
        loyalty,
        crm: CrmSimulator::new(),
    };
    serve_systems(systems, dialects, access, addr).await
}

/// [`serve`] of `systems` (the CRM included), with `dialects` in front of its ERP and loyalty platform.
pub async fn serve_systems(
    systems: Systems,
    dialects: Dialects,
    access: Access,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router_for(systems, dialects, access);
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "simulator server stopped");
        }
    });
    Ok((bound, handle))
}

pub(crate) fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Lets a call through to a system API only with a credential the access rules admit.
pub(crate) async fn authorize(State(access): State<Access>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let admitted = access.admits(
        header_str(headers, header::AUTHORIZATION.as_str()),
        header_str(headers, "x-api-key"),
    );
    if !admitted {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token or API key is required".to_owned(),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    next.run(request).await
}

/// `POST /oauth/token`: RFC 6749's answers and error shape (`{"error": …}`), not the system APIs'.
async fn token(
    State(access): State<Access>,
    headers: HeaderMap,
    form: Result<Form<std::collections::HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        let body = serde_json::json!({"error": "invalid_request"});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    };
    match access.issue(header_str(&headers, header::AUTHORIZATION.as_str()), &form) {
        Ok(token) => Json(token).into_response(),
        Err((status, code)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            (status, Json(serde_json::json!({"error": code}))).into_response()
        }
    }
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody {
        code: code.to_owned(),
        message,
    };
    (status, Json(body)).into_response()
}

/// A 400 answered before the system is reached.
#[derive(Debug)]
struct BadRequest {
    code: &'static str,
    message: String,
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, self.code, self.message)
    }
}

/// The body is parsed here rather than by axum's `Json` so that its rejections have our error shape too.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, BadRequest> {
    serde_json::from_slice(body).map_err(|e| BadRequest {
        code: "invalid_body",
        message: e.to_string(),
    })
}

/// The idempotency key and the typed body of a mutating call.
fn parse<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<(String, T), BadRequest> {
    let key = match headers.get(IDEMPOTENCY_KEY_HEADER).map(|v| v.to_str()) {
        Some(Ok(key)) if !key.is_empty() => key.to_owned(),
        _ => {
            return Err(BadRequest {
                code: "missing_idempotency_key",
                message: "the Idempotency-Key header is required".to_owned(),
            });
        }
    };
    Ok((key, parse_body(body)?))
}

/// The body of `POST …/release` and `POST …/confirm`: an empty object (an empty body is let through
/// too).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// The idempotency key of a mutating call whose body carries nothing.
fn parse_empty(headers: &HeaderMap, body: &[u8]) -> Result<String, BadRequest> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let (key, Empty {}) = parse(headers, body)?;
    Ok(key)
}

/// `ok` is the status of a success: 201 for what creates a resource, 200 for reads and state changes.
async fn respond<T: Serialize>(ok: StatusCode, result: Result<T, SimError>) -> Response {
    respond_as(ok, result, error).await
}

/// [`respond`] with the error body of a dialect (`error` builds it from status, code and message).
pub(crate) async fn respond_as<T: Serialize>(
    ok: StatusCode,
    result: Result<T, SimError>,
    error: fn(StatusCode, &str, String) -> Response,
) -> Response {
    match result {
        Ok(value) => (ok, Json(value)).into_response(),
        Err(SimError::Refused {
            status,
            code,
            message,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            error(status, code, message)
        }
        Err(SimError::Unavailable { message }) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message.to_owned())
        }
        Err(SimError::Throttled { retry_after_ms }) => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                "rate limit exceeded (injected fault)".to_owned(),
            );
            // Whole seconds, as the header has them; at least 1 so a client always waits a little.
            let seconds = retry_after_ms.div_ceil(1000).max(1);
            if let Ok(value) = seconds.to_string().parse() {
                response.headers_mut().insert("retry-after", value);
            }
            response
        }
        Err(SimError::TimedOut { .. }) => {
            tokio::time::sleep(HANG).await;
            error(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "injected timeout".to_owned(),
            )
        }
    }
}

async fn post_sale(
    State(sims): State<Systems>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, BadRequest> {
    let (key, request) = parse::<ErpSaleRequest>(&headers, &body)?;
    sims.erp.delay().await;
    Ok(respond(StatusCode::CREATED, sims.erp.post_sale(&request, &key)).await)
}

async fn cancel_order(
    State(sims): State<Systems>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, BadRequest> {
    let (key, request) = parse::<ErpCancelRequest>(&headers, &body)?;
    sims.erp.delay().await;
    Ok(respond(StatusCode::CREATED, sims.erp.cancel_order(&request, &key)).await)
}

async fn reinstate(
    State(sims): State<Systems>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, BadRequest> {
    let (key, request) = parse::<ErpReinstateRequest>(&headers, &body)?;
    sims.erp.delay().await;
    Ok(respond(StatusCode::CREATED, sims.erp.reinstate(&request, &key)).await)
}

async fn post_return(
    State(sims): State<Systems>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, BadRequest> {
    let (key, request) = parse::<ErpReturnRequest>(&headers, &body)?;
    sims.erp.delay().await;
    Ok(respond(StatusCode::CREATED, sims.erp.post_return(&request, &key)).await)
}

async fn accrue(
    State(sims): State<Systems>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, BadRequest> {
    let (key, request) = parse::<AccrualRequest>(&headers, &body)?;
    sims.loyalty.delay().await;
    Ok(respond(StatusCode::CREATED, sims.loyalty.accrue(&request, &key)).await)
}

async fn confirm_accrual(
    State(sims): State<Systems>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, BadRequest> {
    let key = parse_empty(&headers, &body)?;
    // An id that is no valid id names no transaction.
    let Ok(id) = ExternalRef::parse(&raw) else {
        return Ok(error(
            StatusCode::NOT_FOUND,
            "transaction_not_found",
            format!("no accrual {}", shown(&raw)),
        ));
    };
    sims.loyalty.delay().await;
    Ok(respond(StatusCode::OK, sims.loyalty.confirm_accrual(&id, &key)).await)
}

/// The 404 of a member id that names no member (or is no member id at all).
fn no_member(raw: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "member_not_found",
        format!("no member {raw:?}"),
    )
}

async fn balance(State(sims): State<Systems>, Path(member_id): Path<String>) -> Response {
    let Ok(member_id) = MemberId::parse(&member_id) else {
        return no_member(&member_id);
    };
    sims.loyalty.delay().await;
    respond(StatusCode::OK, sims.loyalty.member_balance(&member_id)).await
}

/// The body of `POST /loyalty/v1/members`, and its answer.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Enrolment {
    member_id: MemberId,
}

async fn enrol(State(sims): State<Systems>, headers: HeaderMap, body: Bytes) -> Result<Response, BadRequest> {
    let (key, Enrolment { member_id }) = parse(&headers, &body)?;
    sims.loyalty.delay().await;
    let result = sims
        .loyalty
        .enrol(&member_id, &key)
        .map(|()| Enrolment { member_id });
    Ok(respond(StatusCode::CREATED, result).await)
}

/// The idempotency key and the snapshot of a `PUT` of a member, whose body must be the path's member.
fn parse_snapshot(
    headers: &HeaderMap,
    body: &[u8],
    path_member: &str,
) -> Result<(String, MemberSnapshot), BadRequest> {
    let (key, snapshot) = parse::<MemberSnapshot>(headers, body)?;
    if snapshot.member_id.as_str() != path_member {
        return Err(BadRequest {
            code: "member_mismatch",
            message: format!(
                "the body is member {}, the path names {path_member:?}",
                snapshot.member_id
            ),
        });
    }
    Ok((key, snapshot))
}

async fn sync_profile(
    State(sims): State<Systems>,
    Path(member_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, BadRequest> {
    let (key, snapshot) = parse_snapshot(&headers, &body, &member_id)?;
    sims.loyalty.delay().await;
    Ok(respond(StatusCode::OK, sims.loyalty.sync_member(&snapshot, &key)).await)
}

/// The body of `POST /loyalty/v1/members/{duplicate_id}/merge`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeBody {
    survivor_id: MemberId,
}

async fn merge(
    State(sims): State<Systems>,
    Path(duplicate_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, BadRequest> {
    let (key, MergeBody { survivor_id }) = parse(&headers, &body)?;
    let Ok(duplicate_id) = MemberId::parse(&duplicate_id) else {
        return Ok(no_member(&duplicate_id));
    };
    sims.loyalty.delay().await;
    let result: Result<MergeOutcome, SimError> = sims.loyalty.merge(&duplicate_id, &survivor_id, &key);
    Ok(respond(StatusCode::OK, result).await)
}

async fn sync_customer(
    State(sims): State<Systems>,
    Path(member_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, BadRequest> {
    let (key, snapshot) = parse_snapshot(&headers, &body, &member_id)?;
    sims.erp.delay().await;
    Ok(respond(StatusCode::OK, sims.erp.sync_member(&snapshot, &key)).await)
}

async fn sync_contact(
    State(sims): State<Systems>,
    Path(member_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, BadRequest> {
    let (key, snapshot) = parse_snapshot(&headers, &body, &member_id)?;
    sims.crm.delay().await;
    let result: Result<MemberSynced, SimError> = sims.crm.sync_member(&snapshot, &key);
    Ok(respond(StatusCode::OK, result).await)
}

async fn get_contact(State(sims): State<Systems>, Path(raw): Path<String>) -> Response {
    let Ok(member_id) = MemberId::parse(&raw) else {
        return error(
            StatusCode::NOT_FOUND,
            "contact_not_found",
            format!("no contact for {raw:?}"),
        );
    };
    sims.crm.delay().await;
    respond(StatusCode::OK, sims.crm.get_contact(&member_id)).await
}

async fn create_hold(
    State(sims): State<Systems>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, BadRequest> {
    let (key, request) = parse::<HoldRequest>(&headers, &body)?;
    sims.loyalty.delay().await;
    Ok(respond(StatusCode::CREATED, sims.loyalty.create_hold(&request, &key)).await)
}

/// The 404 of a hold id that names no hold (or is no hold id at all).
fn no_hold(raw: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "hold_not_found",
        format!("no hold {raw:?}"),
    )
}

async fn get_hold(State(sims): State<Systems>, Path(raw): Path<String>) -> Response {
    let Ok(hold_id) = HoldId::parse(&raw) else {
        return no_hold(&raw);
    };
    sims.loyalty.delay().await;
    respond(StatusCode::OK, sims.loyalty.get_hold(&hold_id)).await
}

async fn commit_hold(
    State(sims): State<Systems>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, BadRequest> {
    let (key, request) = parse::<CommitRequest>(&headers, &body)?;
    let Ok(hold_id) = HoldId::parse(&raw) else {
        return Ok(no_hold(&raw));
    };
    sims.loyalty.delay().await;
    Ok(respond(StatusCode::OK, sims.loyalty.commit_hold(&hold_id, &request, &key)).await)
}

async fn release_hold(
    State(sims): State<Systems>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, BadRequest> {
    let key = parse_empty(&headers, &body)?;
    let Ok(hold_id) = HoldId::parse(&raw) else {
        return Ok(no_hold(&raw));
    };
    sims.loyalty.delay().await;
    Ok(respond(StatusCode::OK, sims.loyalty.release_hold(&hold_id, &key)).await)
}

async fn adjust(
    State(sims): State<Systems>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, BadRequest> {
    let (key, request) = parse::<AdjustmentRequest>(&headers, &body)?;
    sims.loyalty.delay().await;
    Ok(respond(StatusCode::CREATED, sims.loyalty.adjust(&request, &key)).await)
}

/// The business-time window `[from, to)` a read of the books asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Window {
    from: Timestamp,
    to: Timestamp,
}

/// What of a refused query value is echoed back: enough to recognise it, never a whole large input.
fn shown(value: &str) -> String {
    let mut cut: String = value.chars().take(64).collect();
    if cut.len() < value.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// `from` and `to` of a query string, both required, once each, and nothing else; `from` before `to`.
fn parse_window(query: Option<&str>) -> Result<Window, BadRequest> {
    let invalid = |message: String| BadRequest {
        code: "invalid_query",
        message,
    };
    let (mut from, mut to) = (None, None);
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name);
        let slot = match name.as_str() {
            "from" => &mut from,
            "to" => &mut to,
            _ => {
                return Err(invalid(format!(
                    "unknown parameter {}: only from and to are read",
                    shown(&name)
                )));
            }
        };
        if slot.is_some() {
            return Err(invalid(format!("{name} is given more than once")));
        }
        let value = percent_decode(value);
        let at = value.parse::<Timestamp>().map_err(|_| {
            invalid(format!(
                "{name} {} is not an RFC 3339 instant (e.g. 2026-11-20T00:00:00Z)",
                shown(&value)
            ))
        })?;
        *slot = Some(at);
    }
    let required = |name: &str| invalid(format!("{name} is required (an RFC 3339 instant)"));
    let from = from.ok_or_else(|| required("from"))?;
    let to = to.ok_or_else(|| required("to"))?;
    if from >= to {
        return Err(BadRequest {
            code: "invalid_window",
            message: format!("from {from} is not before to {to}: the window [from, to) is empty"),
        });
    }
    Ok(Window { from, to })
}

async fn documents(State(sims): State<Systems>, RawQuery(query): RawQuery) -> Result<Response, BadRequest> {
    let window = parse_window(query.as_deref())?;
    sims.erp.delay().await;
    let result = if sims.erp.faults().down {
        Err(SimError::Unavailable {
            message: "the ERP is down (injected fault)",
        })
    } else {
        Ok(DocumentList {
            documents: sims.erp.documents_between(window.from, window.to),
        })
    };
    Ok(respond(StatusCode::OK, result).await)
}

async fn movements(State(sims): State<Systems>, RawQuery(query): RawQuery) -> Result<Response, BadRequest> {
    let window = parse_window(query.as_deref())?;
    sims.loyalty.delay().await;
    let result = if sims.loyalty.faults().down {
        Err(SimError::Unavailable {
            message: "the platform is down (injected fault)",
        })
    } else {
        Ok(MovementList {
            movements: sims.loyalty.movements(window.from, window.to),
        })
    };
    Ok(respond(StatusCode::OK, result).await)
}

fn unknown_system(system: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown_system",
        format!("{system:?} is not erp, loyalty or crm"),
    )
}

async fn get_faults(State(sims): State<Systems>, Path(system): Path<String>) -> Response {
    match system.as_str() {
        "erp" => Json(sims.erp.faults()).into_response(),
        "loyalty" => Json(sims.loyalty.faults()).into_response(),
        "crm" => Json(sims.crm.faults()).into_response(),
        _ => unknown_system(&system),
    }
}

async fn put_faults(
    State(sims): State<Systems>,
    Path(system): Path<String>,
    body: Bytes,
) -> Result<Response, BadRequest> {
    let faults: Faults = parse_body(&body)?;
    faults.validate().map_err(|message| BadRequest {
        code: "invalid_faults",
        message,
    })?;
    match system.as_str() {
        "erp" => sims.erp.set_faults(faults.clone()),
        "loyalty" => sims.loyalty.set_faults(faults.clone()),
        "crm" => sims.crm.set_faults(faults.clone()),
        _ => return Ok(unknown_system(&system)),
    }
    tracing::info!(%system, ?faults, "faults set");
    Ok(Json(faults).into_response())
}

async fn state(State(sims): State<Systems>) -> Json<SimState> {
    Json(SimState {
        erp_requests: sims.erp.requests(),
        erp_postings: sims.erp.postings(),
        loyalty_requests: sims.loyalty.requests(),
        loyalty_transactions: sims.loyalty.transactions(),
        balances: sims.loyalty.balances(),
        holds: sims.loyalty.holds(),
        loyalty_members: sims.loyalty.members(),
        erp_customers: sims.erp.customers(),
        crm_requests: sims.crm.requests(),
        crm_contacts: sims.crm.contacts(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn refused(query: Option<&str>) -> (&'static str, String) {
        match parse_window(query) {
            Ok(window) => panic!("{query:?} was read as {window:?}"),
            Err(BadRequest { code, message }) => (code, message),
        }
    }

    #[test]
    fn a_window_is_two_rfc3339_instants_percent_encoded_in_any_order() {
        let window = parse_window(Some("to=2026-11-21T00:00:00Z&from=2026-11-20T00:00:00Z")).unwrap();
        assert_eq!(window.from, at("2026-11-20T00:00:00Z"));
        assert_eq!(window.to, at("2026-11-21T00:00:00Z"));
        let encoded = parse_window(Some(
            "from=2026-11-20T01%3A00%3A00.5%2B01%3A00&to=2026-11-20T00%3A00%3A01Z",
        ))
        .unwrap();
        assert_eq!(encoded.from, at("2026-11-20T00:00:00.5Z"));
        assert_eq!(encoded.to, at("2026-11-20T00:00:01Z"));
    }

    #[test]
    fn a_missing_repeated_unknown_or_unreadable_parameter_is_an_invalid_query() {
        let from = "from=2026-11-20T00:00:00Z";
        let to = "to=2026-11-21T00:00:00Z";
        for (query, says) in [
            (None, "from is required"),
            (Some(""), "from is required"),
            (Some(from), "to is required"),
            (Some(to), "from is required"),
            (
                Some(&*format!("{from}&{to}&{from}")),
                "from is given more than once",
            ),
            (
                Some(&*format!("{from}&{to}&until=x")),
                "unknown parameter \"until\"",
            ),
            (
                Some("from=yesterday&to=today"),
                "from \"yesterday\" is not an RFC 3339 instant",
            ),
            (
                Some(&*format!("{from}&to=2026-11-21")),
                "to \"2026-11-21\" is not",
            ),
            (Some(&*format!("{from}&to")), "to \"\" is not"),
            // A bare `+` is a space in a query string: the offset must be sent as `%2B`.
            (
                Some(&*format!("{from}&to=2026-11-21T00:00:00+01:00")),
                "is not an RFC 3339",
            ),
            (Some(&*format!("{from}&to=%FF%FE")), "is not an RFC 3339"),
        ] {
            let (code, message) = refused(query);
            assert_eq!(code, "invalid_query", "{query:?}");
            assert!(message.contains(says), "{query:?}: {message}");
        }
        let long = format!("{from}&to={}", "9".repeat(10_000));
        let (_, message) = refused(Some(&long));
        assert!(message.len() < 200, "the value is not echoed whole: {message}");
    }

    #[test]
    fn an_empty_or_inverted_window_is_refused() {
        for query in [
            "from=2026-11-20T00:00:00Z&to=2026-11-20T00:00:00Z",
            "from=2026-11-21T00:00:00Z&to=2026-11-20T00:00:00Z",
            "from=2026-11-20T01:00:00%2B01:00&to=2026-11-20T00:00:00Z",
        ] {
            let (code, message) = refused(Some(query));
            assert_eq!(code, "invalid_window", "{query}");
            assert!(message.contains("is not before"), "{message}");
        }
    }
}
