//! The ecommerce platforms' order APIs, as far as retail-sync's outcomes go, with fault injection:
//!
//! - [`ShopifyAdminSimulator`]: Shopify's Admin GraphQL endpoint (`POST /admin/api/{version}/graphql.json`,
//!   `X-Shopify-Access-Token`) answering the `metafieldsSet` mutation as Shopify does: `userErrors` for
//!   a bad owner, key or value, `errors` with `extensions.code: THROTTLED` in a 200 when throttled. A
//!   metafield set to the value it has stays one metafield. Source: shopify.dev, `metafieldsSet`,
//!   `MetafieldsSetInput`, "API rate limits".
//! - [`AdobeCommerceSimulator`]: Adobe Commerce's order and its comments (`GET /rest/V1/orders/{id}`
//!   with `status` and `status_histories`, `POST /rest/V1/orders/{id}/comments`, `Authorization:
//!   Bearer`), errors as `{"message": …}`. Comments have no key: posting twice is two comments, which is
//!   what the connector's read is for; and a comment sets the order's status to the one it carries, none
//!   when it carries none (magento/magento2#34180). Source: Adobe Commerce REST reference.
//!
//! Both also serve in-process (the local runner's fast path), recording the outcome the same way.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use retail_sync_contracts::events::ReasonCode;
use retail_sync_core::Error;
use retail_sync_core::idempotency::IdempotencyKey;
use retail_sync_core::ports::{ChannelOutcome, ChannelOutcomes};

use crate::error::SimError;
use crate::faults::{FaultState, Faults};

/// The access token the simulators admit unless told another (local runs and tests).
pub const LOCAL_PLATFORM_TOKEN: &str = "local-platform-token";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What both platforms' simulators keep: their records, the calls they took, their faults.
#[derive(Default)]
struct Shared<R> {
    records: R,
    calls: u64,
    faults: FaultState,
}

/// A platform's API, simulated: its records behind a lock, and the token it admits. Cheap to clone.
pub struct PlatformSimulator<R> {
    state: Arc<Mutex<Shared<R>>>,
    token: Arc<String>,
}

// By hand: a derive would ask the records to be `Clone`; the clones share them.
impl<R> Clone for PlatformSimulator<R> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            token: self.token.clone(),
        }
    }
}

impl<R: Default> Default for PlatformSimulator<R> {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            token: Arc::new(LOCAL_PLATFORM_TOKEN.to_owned()),
        }
    }
}

impl<R> PlatformSimulator<R> {
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.state).faults.set(faults);
    }

    /// Calls received (faulted ones included).
    pub fn calls(&self) -> u64 {
        lock(&self.state).calls
    }

    /// Counts a call and draws what its fault does to it (see `FaultState::before_call`).
    fn call(&self) -> Result<bool, SimError> {
        let mut state = lock(&self.state);
        state.calls += 1;
        state.faults.before_call()
    }
}

/// Shopify's records: order gid → "namespace.key" → value (JSON text).
#[derive(Default)]
pub struct Metafields(BTreeMap<String, BTreeMap<String, String>>);

/// Adobe Commerce's records: per order entity id, its status and its comments (oldest first).
#[derive(Default)]
pub struct Comments(BTreeMap<String, AdobeOrder>);

/// An order as far as comments go. Every order the simulator is asked about exists, `processing`.
pub struct AdobeOrder {
    pub status: Option<String>,
    pub comments: Vec<String>,
}

impl Default for AdobeOrder {
    fn default() -> Self {
        Self {
            status: Some("processing".into()),
            comments: Vec::new(),
        }
    }
}

/// Shopify's Admin GraphQL API, for outcomes.
pub type ShopifyAdminSimulator = PlatformSimulator<Metafields>;

/// Adobe Commerce's order comments, for outcomes.
pub type AdobeCommerceSimulator = PlatformSimulator<Comments>;

impl ShopifyAdminSimulator {
    /// Every order's metafields: order id (the number of its gid) → `namespace.key` → value.
    pub fn metafields(&self) -> BTreeMap<String, BTreeMap<String, Value>> {
        lock(&self.state)
            .records
            .0
            .iter()
            .map(|(gid, fields)| {
                let order = gid.trim_start_matches("gid://shopify/Order/").to_owned();
                let fields = fields
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            serde_json::from_str(v).unwrap_or(Value::String(v.clone())),
                        )
                    })
                    .collect();
                (order, fields)
            })
            .collect()
    }

    /// `metafieldsSet`'s effect and answer for `inputs`: all set, or none with their `userErrors`.
    fn metafields_set(&self, inputs: &[Value]) -> Value {
        let mut errors = Vec::new();
        if inputs.is_empty() || inputs.len() > 25 {
            errors.push(
                json!({"field": ["metafields"], "message": "between 1 and 25 metafields", "code": "INVALID"}),
            );
        }
        for (i, m) in inputs.iter().enumerate() {
            let owner = m["ownerId"].as_str().unwrap_or("");
            let order = owner.strip_prefix("gid://shopify/Order/").unwrap_or("");
            let key = m["key"].as_str().unwrap_or("");
            let namespace = m["namespace"].as_str().unwrap_or("");
            let mut bad = |field: &str, message: &str| {
                errors.push(json!({"field": ["metafields", i.to_string(), field], "message": message, "code": "INVALID", "elementIndex": i}));
            };
            if order.is_empty() || !order.bytes().all(|b| b.is_ascii_digit()) {
                bad("ownerId", "Owner does not exist");
            }
            if !(2..=64).contains(&key.len())
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                bad("key", "Key is invalid");
            }
            if !(3..=255).contains(&namespace.len()) {
                bad("namespace", "Namespace is invalid");
            }
            if m["type"] == "json"
                && m["value"]
                    .as_str()
                    .and_then(|v| serde_json::from_str::<Value>(v).ok())
                    .is_none()
            {
                bad("value", "Value must be valid JSON");
            }
        }
        if !errors.is_empty() {
            return json!({"data": {"metafieldsSet": {"metafields": null, "userErrors": errors}}});
        }
        let mut state = lock(&self.state);
        let mut set = Vec::new();
        for m in inputs {
            let owner = m["ownerId"].as_str().unwrap_or_default().to_owned();
            let key = format!(
                "{}.{}",
                m["namespace"].as_str().unwrap_or_default(),
                m["key"].as_str().unwrap_or_default()
            );
            state
                .records
                .0
                .entry(owner)
                .or_default()
                .insert(key, m["value"].as_str().unwrap_or_default().to_owned());
            set.push(json!({"key": m["key"], "namespace": m["namespace"]}));
        }
        json!({"data": {"metafieldsSet": {"metafields": set, "userErrors": []}}})
    }
}

impl AdobeCommerceSimulator {
    /// Every order's comments, oldest first.
    pub fn comments(&self) -> BTreeMap<String, Vec<String>> {
        lock(&self.state)
            .records
            .0
            .iter()
            .map(|(order, o)| (order.clone(), o.comments.clone()))
            .collect()
    }

    /// An order's status (`None`: a comment posted without one cleared it, as Adobe Commerce does).
    pub fn status(&self, order: &str) -> Option<String> {
        lock(&self.state)
            .records
            .0
            .get(order)
            .map_or(Some("processing".into()), |o| o.status.clone())
    }

    /// Adds a comment; the order takes `status` (Adobe Commerce sets it to what the comment says).
    fn add_comment(&self, order: &str, comment: &str, status: Option<String>) {
        let mut state = lock(&self.state);
        let o = state.records.0.entry(order.to_owned()).or_default();
        o.comments.push(comment.to_owned());
        o.status = status;
    }
}

/// Shopify's error body: GraphQL `errors` with the code in `extensions`.
fn shopify_error(status: StatusCode, code: &str, message: String) -> Response {
    let code = code.to_ascii_uppercase();
    (
        status,
        Json(json!({"errors": [{"message": message, "extensions": {"code": code}}]})),
    )
        .into_response()
}

/// Adobe Commerce's error body: `{"message": …}`.
fn adobe_error(status: StatusCode, _code: &str, message: String) -> Response {
    (status, Json(json!({"message": message}))).into_response()
}

/// A faulted call's answer in the platform's dialect, as every simulator answers faults (a timeout
/// hangs first).
async fn fault_answer(e: SimError, dialect: fn(StatusCode, &str, String) -> Response) -> Response {
    crate::http::respond_as(StatusCode::OK, Err::<(), _>(e), dialect).await
}

async fn shopify_graphql(
    State(sim): State<ShopifyAdminSimulator>,
    Path(_version): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if headers
        .get("x-shopify-access-token")
        .and_then(|v| v.to_str().ok())
        != Some(sim.token.as_str())
    {
        return (StatusCode::UNAUTHORIZED, Json(json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}))).into_response();
    }
    let answer_in_time = match sim.call() {
        Ok(answer) => answer,
        // Shopify answers a throttled query 200 with THROTTLED in `errors` as often as 429.
        Err(SimError::Throttled { .. }) if sim.calls() % 2 == 0 => {
            return shopify_error(StatusCode::OK, "throttled", "Throttled".into());
        }
        Err(e) => return fault_answer(e, shopify_error).await,
    };
    let query = body["query"].as_str().unwrap_or("");
    if !query.contains("metafieldsSet") {
        return Json(json!({"errors": [{"message": "this simulator answers metafieldsSet only", "extensions": {"code": "UNSUPPORTED"}}]})).into_response();
    }
    let inputs = body
        .pointer("/variables/metafields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let answer = sim.metafields_set(&inputs);
    if !answer_in_time {
        return fault_answer(SimError::TimedOut { committed: true }, shopify_error).await;
    }
    Json(answer).into_response()
}

fn adobe_authorized(sim: &AdobeCommerceSimulator, headers: &HeaderMap) -> bool {
    let expected = format!("Bearer {}", sim.token);
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
}

fn adobe_unauthorized() -> Response {
    let body = json!({"message": "The consumer isn't authorized to access %resources.", "parameters": {"resources": "Magento_Sales::comment"}});
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

async fn adobe_order(
    State(sim): State<AdobeCommerceSimulator>,
    Path(order): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !adobe_authorized(&sim, &headers) {
        return adobe_unauthorized();
    }
    // A read commits nothing: a timeout after commit drawn here passes (a test scripting one for the
    // post lets the read before it go through).
    if let Err(e) = sim.call() {
        return fault_answer(e, adobe_error).await;
    }
    let parent = order.parse::<i64>().unwrap_or(0);
    let histories: Vec<Value> = sim
        .comments()
        .get(&order)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| json!({"entity_id": i + 1, "parent_id": parent, "comment": c, "is_customer_notified": 0, "is_visible_on_front": 0}))
        .collect();
    Json(json!({"entity_id": parent, "status": sim.status(&order), "status_histories": histories}))
        .into_response()
}

async fn adobe_post(
    State(sim): State<AdobeCommerceSimulator>,
    Path(order): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !adobe_authorized(&sim, &headers) {
        return adobe_unauthorized();
    }
    let answer_in_time = match sim.call() {
        Ok(answer) => answer,
        Err(e) => return fault_answer(e, adobe_error).await,
    };
    let Some(comment) = body.pointer("/statusHistory/comment").and_then(Value::as_str) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"message": "\"%fieldName\" is required. Enter and try again.", "parameters": {"fieldName": "comment"}}))).into_response();
    };
    let status = body
        .pointer("/statusHistory/status")
        .and_then(Value::as_str)
        .map(str::to_owned);
    sim.add_comment(&order, comment, status);
    if !answer_in_time {
        return fault_answer(SimError::TimedOut { committed: true }, adobe_error).await;
    }
    Json(json!(true)).into_response()
}

/// Both platforms' routes, for a server of their own or merged into another.
pub fn router(shopify: ShopifyAdminSimulator, adobe: AdobeCommerceSimulator) -> Router {
    Router::new()
        .route("/admin/api/{version}/graphql.json", post(shopify_graphql))
        .with_state(shopify)
        .merge(
            Router::new()
                .route("/rest/V1/orders/{order}", get(adobe_order))
                .route("/rest/V1/orders/{order}/comments", post(adobe_post))
                .with_state(adobe),
        )
}

/// A fault in-process: what the connector would have seen, as every in-process simulator shows it.
fn in_process_error(e: SimError, what: &'static str) -> Error {
    crate::in_process::to_port_error(e, what, ReasonCode::ChannelRejected)
}

#[async_trait]
impl ChannelOutcomes for ShopifyAdminSimulator {
    async fn tell(&self, outcome: &ChannelOutcome, _: &IdempotencyKey) -> Result<(), Error> {
        let order = outcome.platform_order()?;
        let answered = self.call().map_err(|e| in_process_error(e, "shopify"))?;
        let value = serde_json::to_string(outcome).map_err(|e| Error::corrupt("outcome", e))?;
        let input = json!({"ownerId": format!("gid://shopify/Order/{order}"), "namespace": "retail_sync", "key": outcome.record_key(), "type": "json", "value": value});
        let answer = self.metafields_set(&[input]);
        if !answered {
            return Err(in_process_error(
                SimError::TimedOut { committed: true },
                "shopify",
            ));
        }
        match answer
            .pointer("/data/metafieldsSet/userErrors")
            .and_then(Value::as_array)
        {
            Some(errors) if !errors.is_empty() => Err(Error::rejected(
                ReasonCode::ChannelRejected,
                errors[0]["message"].to_string(),
            )),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl ChannelOutcomes for AdobeCommerceSimulator {
    async fn tell(&self, outcome: &ChannelOutcome, _: &IdempotencyKey) -> Result<(), Error> {
        let order = outcome.platform_order()?;
        let marker = format!("[retail-sync {}]", outcome.outcome_id);
        let answered = self.call().map_err(|e| in_process_error(e, "adobe-commerce"))?;
        // The connector's read before its post, in-process: the marker, and the status to keep.
        let known = self
            .comments()
            .get(order)
            .is_some_and(|cs| cs.iter().any(|c| c.contains(&marker)));
        if !known {
            let status = self.status(order);
            self.add_comment(order, &format!("{} {marker}", outcome.summary()), status);
        }
        if answered {
            Ok(())
        } else {
            Err(in_process_error(
                SimError::TimedOut { committed: true },
                "adobe-commerce",
            ))
        }
    }
}

/// Serves both platforms on `addr` (`127.0.0.1:0` for a free port) in a spawned task; abort the handle
/// to stop.
pub async fn serve(
    shopify: ShopifyAdminSimulator,
    adobe: AdobeCommerceSimulator,
    addr: std::net::SocketAddr,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(shopify, adobe);
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "platform simulator server stopped");
        }
    });
    Ok((bound, handle))
}
