//! The redemption API against a hand-written loyalty platform and the in-memory idempotency store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::Notify;

use retail_sync_contracts::events::ReasonCode;
use retail_sync_contracts::values::{ExternalRef, HoldId, MemberId};
use retail_sync_core::Error;
use retail_sync_core::idempotency::{IdempotencyKey, IdempotencyPolicy};
use retail_sync_core::memory::{ManualClock, MemoryState};
use retail_sync_core::ports::{
    Accrual, AccrualRequest, Adjustment, AdjustmentRequest, Balance, CommitRequest, Hold, HoldRequest,
    HoldStatus, Loyalty,
};
use retail_sync_core::redemption::{ApiRequest, ApiResponse, OutagePolicy, RedemptionApi, RedemptionConfig};

// --- A loyalty platform small enough to read ---------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Up,
    /// Every call fails as a dependency outage would.
    Down,
    /// Every call waits forever.
    Hang,
}

struct Platform {
    mode: Mode,
    /// Member → points owned.
    balances: HashMap<String, i64>,
    holds: HashMap<String, Hold>,
    /// Every call that reached the platform: (operation, key).
    calls: Vec<(&'static str, Option<String>)>,
    hold_requests: Vec<HoldRequest>,
    /// When set, create_hold signals `entered` and waits for `proceed`.
    gate: Option<(Arc<Notify>, Arc<Notify>)>,
}

struct FakeLoyalty(Mutex<Platform>);

impl FakeLoyalty {
    fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(Platform {
            mode: Mode::Up,
            balances: HashMap::from([("m-1".to_owned(), 1000)]),
            holds: HashMap::new(),
            calls: Vec::new(),
            hold_requests: Vec::new(),
            gate: None,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Platform> {
        self.0.lock().unwrap()
    }

    fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    fn calls(&self) -> Vec<(&'static str, Option<String>)> {
        self.lock().calls.clone()
    }

    /// Records the call and answers per the mode; `Ok(())` means: go on and answer.
    async fn enter(&self, op: &'static str, key: Option<&IdempotencyKey>) -> Result<(), Error> {
        let mode = {
            let mut p = self.lock();
            p.calls.push((op, key.map(|k| k.to_string())));
            p.mode
        };
        match mode {
            Mode::Up => Ok(()),
            Mode::Down => Err(Error::unavailable("loyalty", "503 from the platform")),
            Mode::Hang => std::future::pending().await,
        }
    }

    fn held(p: &Platform, member: &str) -> i64 {
        p.holds
            .values()
            .filter(|h| h.member_id.as_str() == member && h.status == HoldStatus::Held)
            .map(|h| h.points.get())
            .sum()
    }

    fn refused(message: &str) -> Error {
        Error::rejected(ReasonCode::LoyaltyRejected, message)
    }

    fn hold(&self, hold_id: &HoldId) -> Result<Hold, Error> {
        self.lock()
            .holds
            .get(hold_id.as_str())
            .cloned()
            .ok_or_else(|| Self::refused(&format!("hold_not_found: no hold {hold_id}")))
    }
}

#[async_trait]
impl Loyalty for FakeLoyalty {
    async fn accrue(&self, _: &AccrualRequest, _: &IdempotencyKey) -> Result<Accrual, Error> {
        unreachable!("the API never accrues")
    }

    async fn balance(&self, member_id: &MemberId) -> Result<Balance, Error> {
        self.enter("balance", None).await?;
        let p = self.lock();
        let balance = *p
            .balances
            .get(member_id.as_str())
            .ok_or_else(|| Self::refused(&format!("member_not_found: no member {member_id}")))?;
        let held = Self::held(&p, member_id.as_str());
        Ok(Balance {
            member_id: member_id.clone(),
            balance: points(balance),
            held: points(held),
            available: points(balance - held),
        })
    }

    async fn create_hold(&self, request: &HoldRequest, key: &IdempotencyKey) -> Result<Hold, Error> {
        self.enter("create_hold", Some(key)).await?;
        let gate = self.lock().gate.clone();
        if let Some((entered, proceed)) = gate {
            entered.notify_one();
            proceed.notified().await;
        }
        let mut p = self.lock();
        p.hold_requests.push(request.clone());
        let owned = *p.balances.get(request.member_id.as_str()).unwrap_or(&0);
        let available = owned - Self::held(&p, request.member_id.as_str());
        if request.points.get() > available {
            return Err(Self::refused(&format!(
                "insufficient_points: {} requested, {available} available",
                request.points
            )));
        }
        // One point is worth one minor unit.
        let value = request.points.get();
        if value > request.basket_net_minor.get() {
            return Err(Self::refused(
                "value_exceeds_basket: the points are worth more than the basket",
            ));
        }
        let hold = Hold {
            hold_id: HoldId::parse(format!("H-{}", p.holds.len() + 1)).unwrap(),
            member_id: request.member_id.clone(),
            points: request.points,
            currency: request.currency,
            value_minor: retail_sync_contracts::values::Amount::new(value).unwrap(),
            status: HoldStatus::Held,
            expires_at: request.expires_at,
            transaction: None,
            loyalty_transaction_id: None,
        };
        p.holds.insert(hold.hold_id.to_string(), hold.clone());
        Ok(hold)
    }

    async fn get_hold(&self, hold_id: &HoldId) -> Result<Hold, Error> {
        self.enter("get_hold", None).await?;
        self.hold(hold_id)
    }

    async fn commit_hold(
        &self,
        hold_id: &HoldId,
        request: &CommitRequest,
        key: &IdempotencyKey,
    ) -> Result<Hold, Error> {
        self.enter("commit_hold", Some(key)).await?;
        let mut hold = self.hold(hold_id)?;
        if hold.points != request.points {
            return Err(Self::refused("points_mismatch: the order names other points"));
        }
        hold.status = HoldStatus::Committed;
        hold.transaction = Some(request.transaction.clone());
        hold.loyalty_transaction_id = Some(ExternalRef::parse("LT-00000001").unwrap());
        self.lock().holds.insert(hold_id.to_string(), hold.clone());
        Ok(hold)
    }

    async fn release_hold(&self, hold_id: &HoldId, key: &IdempotencyKey) -> Result<Hold, Error> {
        self.enter("release_hold", Some(key)).await?;
        let mut hold = self.hold(hold_id)?;
        hold.status = HoldStatus::Released;
        self.lock().holds.insert(hold_id.to_string(), hold.clone());
        Ok(hold)
    }

    async fn adjust(&self, _: &AdjustmentRequest, _: &IdempotencyKey) -> Result<Adjustment, Error> {
        unreachable!("the API never adjusts")
    }
}

fn points(n: i64) -> retail_sync_contracts::values::Points {
    retail_sync_contracts::values::Points::new(n).unwrap()
}

// --- Harness --------------------------------------------------------------------------------------------

const START: &str = "2030-01-15T10:00:00Z";

struct World {
    api: Arc<RedemptionApi>,
    loyalty: Arc<FakeLoyalty>,
    clock: Arc<ManualClock>,
}

fn world(config: RedemptionConfig) -> World {
    let loyalty = FakeLoyalty::new();
    let clock = Arc::new(ManualClock::new(START.parse().unwrap()));
    let api = Arc::new(RedemptionApi {
        loyalty: loyalty.clone(),
        idempotency: Arc::new(MemoryState::default()),
        clock: clock.clone(),
        policy: IdempotencyPolicy::default(),
        config,
    });
    World { api, loyalty, clock }
}

fn post(path: &str, key: Option<&str>, body: &str) -> ApiRequest {
    let request = ApiRequest::new("POST", path).with_body(body);
    match key {
        Some(k) => request.with_header("Idempotency-Key", k),
        None => request,
    }
}

fn hold_body(points: i64) -> String {
    json!({"member_id": "m-1", "points": points, "currency": "EUR", "basket_net_minor": 5000}).to_string()
}

fn json_of(response: &ApiResponse) -> Value {
    serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("{}: {e}", response.body))
}

fn code(response: &ApiResponse) -> String {
    json_of(response)["code"].as_str().unwrap_or_default().to_owned()
}

// --- Tests ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_members_balance_is_read() {
    let w = world(RedemptionConfig::default());
    let r = w
        .api
        .handle(ApiRequest::new("GET", "/v1/members/m-1/balance"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        json_of(&r),
        json!({"member_id": "m-1", "balance": 1000, "held": 0, "available": 1000})
    );
}

#[tokio::test]
async fn a_hold_is_created_with_201_and_expires_after_the_default_ttl() {
    let w = world(RedemptionConfig::default());
    let r = w
        .api
        .handle(post("/v1/holds", Some("basket-1"), &hold_body(300)))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let hold = json_of(&r);
    assert_eq!(hold["status"], "held");
    assert_eq!(hold["value_minor"], 300);
    let expected: Timestamp = "2030-01-15T10:15:00Z".parse().unwrap();
    assert_eq!(hold["expires_at"], json!(expected));
    // The platform is given a key derived from the client's, so it dedupes too.
    assert_eq!(
        w.loyalty.calls(),
        vec![("create_hold", Some("api:basket-1:create-hold".to_owned()))]
    );

    let read = w.api.handle(ApiRequest::new("GET", "/v1/holds/H-1")).await;
    assert_eq!(read.status, 200);
    assert_eq!(json_of(&read), hold);
}

#[tokio::test]
async fn a_hold_takes_the_ttl_it_asks_for_up_to_a_day() {
    let w = world(RedemptionConfig {
        hold_ttl_seconds: 60,
        ..RedemptionConfig::default()
    });
    let body = json!({"member_id": "m-1", "points": 10, "currency": "EUR", "basket_net_minor": 5000,
                      "ttl_seconds": 86400})
    .to_string();
    let r = w.api.handle(post("/v1/holds", Some("k-day"), &body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(json_of(&r)["expires_at"], "2030-01-16T10:00:00Z");

    let r = w
        .api
        .handle(post("/v1/holds", Some("k-default"), &hold_body(10)))
        .await;
    assert_eq!(json_of(&r)["expires_at"], "2030-01-15T10:01:00Z");

    let too_long = json!({"member_id": "m-1", "points": 10, "currency": "EUR", "basket_net_minor": 5000,
                          "ttl_seconds": 86401})
    .to_string();
    let r = w.api.handle(post("/v1/holds", Some("k-long"), &too_long)).await;
    assert_eq!(r.status, 422);
    assert_eq!(code(&r), "invalid_request");
    assert_eq!(
        w.loyalty.calls().len(),
        2,
        "a refused ttl never reaches the platform"
    );
}

#[tokio::test]
async fn the_same_request_under_the_same_key_gets_the_first_answer_and_reaches_loyalty_once() {
    let w = world(RedemptionConfig::default());
    let first = w
        .api
        .handle(post("/v1/holds", Some("basket-2"), &hold_body(300)))
        .await;
    assert_eq!(first.status, 201);
    w.clock.advance(Duration::from_secs(5));
    // The same JSON with other whitespace and key order is the same request.
    let same = r#"{ "basket_net_minor": 5000, "currency": "EUR", "points": 300, "member_id": "m-1" }"#;
    let again = w.api.handle(post("/v1/holds", Some("basket-2"), same)).await;
    assert_eq!((again.status, &again.body), (first.status, &first.body));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(w.loyalty.calls().len(), 1);

    let balance = w
        .api
        .handle(ApiRequest::new("GET", "/v1/members/m-1/balance"))
        .await;
    assert_eq!(json_of(&balance)["held"], 300, "one hold, not two");
}

#[tokio::test]
async fn the_same_key_for_another_request_is_refused() {
    let w = world(RedemptionConfig::default());
    assert_eq!(
        w.api
            .handle(post("/v1/holds", Some("k"), &hold_body(300)))
            .await
            .status,
        201
    );
    let other = w.api.handle(post("/v1/holds", Some("k"), &hold_body(301))).await;
    assert_eq!(other.status, 422);
    assert_eq!(code(&other), "idempotency_key_reused");
    let elsewhere = w.api.handle(post("/v1/holds/H-1/release", Some("k"), "")).await;
    assert_eq!(code(&elsewhere), "idempotency_key_reused");
    assert_eq!(w.loyalty.calls().len(), 1);
}

#[tokio::test]
async fn a_post_needs_a_usable_idempotency_key() {
    let w = world(RedemptionConfig::default());
    for key in [None, Some(""), Some("has space"), Some(&*"k".repeat(201))] {
        let r = w.api.handle(post("/v1/holds", key, &hold_body(1))).await;
        assert_eq!(r.status, 400, "{key:?}");
        assert_eq!(code(&r), "idempotency_key_required");
    }
    let ok = "A-z0-9._:-".to_owned() + &"k".repeat(190);
    assert_eq!(
        w.api
            .handle(post("/v1/holds", Some(&ok), &hold_body(1)))
            .await
            .status,
        201
    );
    assert_eq!(w.loyalty.calls().len(), 1);
}

#[tokio::test]
async fn a_refusal_is_422_with_the_platforms_message_and_is_the_final_answer() {
    let w = world(RedemptionConfig::default());
    let r = w
        .api
        .handle(post("/v1/holds", Some("k-big"), &hold_body(5000)))
        .await;
    assert_eq!(r.status, 422);
    let body = json_of(&r);
    assert_eq!(body["code"], "redemption_refused");
    assert_eq!(
        body["message"],
        "insufficient_points: 5000 requested, 1000 available"
    );
    assert_eq!(body["reason"], "loyalty_rejected");

    let again = w
        .api
        .handle(post("/v1/holds", Some("k-big"), &hold_body(5000)))
        .await;
    assert_eq!((again.status, &again.body), (422, &r.body));
    assert_eq!(w.loyalty.calls().len(), 1, "a stored refusal is not asked again");

    let unknown = w
        .api
        .handle(ApiRequest::new("GET", "/v1/members/m-404/balance"))
        .await;
    assert_eq!(unknown.status, 422);
    assert_eq!(code(&unknown), "redemption_refused");
}

#[tokio::test]
async fn an_outage_lets_the_sale_go_on_without_points_by_default_and_is_not_stored() {
    let w = world(RedemptionConfig::default());
    w.loyalty.set_mode(Mode::Down);
    let r = w
        .api
        .handle(post("/v1/holds", Some("k-out"), &hold_body(300)))
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("30"));
    let body = json_of(&r);
    assert_eq!(body["code"], "loyalty_unavailable");
    assert_eq!(body["sale_allowed"], true);
    assert_eq!(body["policy"], "refuse_redemption");

    // Loyalty is back: the retry under the same key reaches it, with the very request the first
    // attempt sent (the platform may have acted on it), although time went by.
    w.loyalty.set_mode(Mode::Up);
    w.clock.advance(Duration::from_secs(40));
    let retry = w
        .api
        .handle(post("/v1/holds", Some("k-out"), &hold_body(300)))
        .await;
    assert_eq!(retry.status, 201, "{}", retry.body);
    assert_eq!(json_of(&retry)["expires_at"], "2030-01-15T10:15:00Z");
    let calls = w.loyalty.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0], calls[1], "the same platform key both times");

    let reads = w.api.handle(ApiRequest::new("GET", "/v1/holds/H-1")).await;
    assert_eq!(reads.status, 200);
    w.loyalty.set_mode(Mode::Down);
    let read_down = w
        .api
        .handle(ApiRequest::new("GET", "/v1/members/m-1/balance"))
        .await;
    assert_eq!(read_down.status, 503);
    assert_eq!(json_of(&read_down)["sale_allowed"], true);
}

#[tokio::test]
async fn an_outage_blocks_the_checkout_when_the_retailer_says_so() {
    let w = world(RedemptionConfig {
        outage_policy: OutagePolicy::BlockCheckout,
        ..RedemptionConfig::default()
    });
    w.loyalty.set_mode(Mode::Down);
    let r = w.api.handle(post("/v1/holds", Some("k"), &hold_body(300))).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("30"));
    let body = json_of(&r);
    assert_eq!(body["code"], "loyalty_unavailable");
    assert_eq!(body["sale_allowed"], false);
    assert_eq!(body["policy"], "block_checkout");
}

#[tokio::test]
async fn a_platform_slower_than_the_timeout_is_an_outage() {
    let w = world(RedemptionConfig {
        loyalty_timeout: Duration::from_millis(20),
        ..RedemptionConfig::default()
    });
    w.loyalty.set_mode(Mode::Hang);
    let r = w
        .api
        .handle(post("/v1/holds", Some("k-slow"), &hold_body(300)))
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(code(&r), "loyalty_unavailable");
    let r = w
        .api
        .handle(ApiRequest::new("GET", "/v1/members/m-1/balance"))
        .await;
    assert_eq!(r.status, 503);
}

#[tokio::test]
async fn a_request_still_in_progress_under_the_key_is_409_with_retry_after() {
    let w = world(RedemptionConfig::default());
    let (entered, proceed) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    w.loyalty.lock().gate = Some((entered.clone(), proceed.clone()));
    let api = w.api.clone();
    let first = tokio::spawn(async move {
        api.handle(post("/v1/holds", Some("k-slow"), &hold_body(300)))
            .await
    });
    entered.notified().await;

    let second = w
        .api
        .handle(post("/v1/holds", Some("k-slow"), &hold_body(300)))
        .await;
    assert_eq!(second.status, 409);
    assert_eq!(code(&second), "request_in_progress");
    assert_eq!(second.header("retry-after"), Some("60"));

    proceed.notify_one();
    let first = first.await.unwrap();
    assert_eq!(first.status, 201);
    let third = w
        .api
        .handle(post("/v1/holds", Some("k-slow"), &hold_body(300)))
        .await;
    assert_eq!(third.body, first.body);
}

#[tokio::test]
async fn a_hold_is_committed_or_released_through_its_routes() {
    let w = world(RedemptionConfig::default());
    w.api
        .handle(post("/v1/holds", Some("c-1"), &hold_body(100)))
        .await;
    w.api
        .handle(post("/v1/holds", Some("c-2"), &hold_body(200)))
        .await;

    let commit = json!({"transaction": {"kind": "order", "order_id": "o-1"}, "points": 100}).to_string();
    let r = w
        .api
        .handle(post("/v1/holds/H-1/commit", Some("c-3"), &commit))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json_of(&r)["status"], "committed");

    let r = w.api.handle(post("/v1/holds/H-2/release", Some("c-4"), "")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json_of(&r)["status"], "released");
    assert_eq!(
        w.loyalty.calls()[2..],
        [
            ("commit_hold", Some("api:c-3:commit-hold".to_owned())),
            ("release_hold", Some("api:c-4:release-hold".to_owned())),
        ]
    );
}

#[tokio::test]
async fn a_body_that_is_not_json_or_not_the_schema_is_400() {
    let w = world(RedemptionConfig::default());
    let r = w.api.handle(post("/v1/holds", Some("k-1"), "{not json")).await;
    assert_eq!(r.status, 400);
    assert_eq!(code(&r), "invalid_request");
    assert!(json_of(&r)["message"].as_str().unwrap().contains("not JSON"));

    let r = w
        .api
        .handle(post("/v1/holds", Some("k-2"), r#"{"member_id": "m-1"}"#))
        .await;
    assert_eq!(r.status, 400);
    assert!(
        json_of(&r)["message"]
            .as_str()
            .unwrap()
            .contains("missing field `points`"),
        "{}",
        r.body
    );

    let r = w.api.handle(post("/v1/holds", Some("k-3"), "")).await;
    assert_eq!(code(&r), "invalid_request");

    let r = w
        .api
        .handle(ApiRequest::new("GET", "/v1/members/bad:id/balance"))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(code(&r), "invalid_request");

    // Validation failures are not stored: the corrected request may use the same key.
    let r = w.api.handle(post("/v1/holds", Some("k-1"), &hold_body(1))).await;
    assert_eq!(r.status, 201);
    assert_eq!(w.loyalty.calls().len(), 1);
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let w = world(RedemptionConfig::default());
    for (method, path) in [
        ("GET", "/v1/members"),
        ("GET", "/v2/holds/H-1"),
        ("POST", "/v1/holds/H-1/refund"),
        ("GET", "/"),
    ] {
        let r = w.api.handle(ApiRequest::new(method, path)).await;
        assert_eq!(r.status, 404, "{method} {path}");
        assert_eq!(code(&r), "not_found");
    }
    let r = w.api.handle(ApiRequest::new("DELETE", "/v1/holds/H-1")).await;
    assert_eq!(r.status, 405);
    assert_eq!(code(&r), "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET"));
    let r = w.api.handle(ApiRequest::new("GET", "/v1/holds")).await;
    assert_eq!(r.header("allow"), Some("POST"));
    assert!(w.loyalty.calls().is_empty());
}

// --- The contract: openapi/redemption.yaml ----------------------------------------------------------------

fn openapi() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/redemption.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let doc: Value = yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")),
        "not OpenAPI 3.1"
    );
    doc
}

/// Follows a local `$ref`, if `v` is one.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.strip_prefix('#').unwrap())
            .unwrap_or_else(|| panic!("{r} does not resolve")),
        None => v,
    }
}

#[test]
fn the_openapi_lists_exactly_the_services_routes() {
    use retail_sync_core::redemption::Operation;
    let doc = openapi();
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                let id = op["operationId"].as_str().unwrap_or_default().to_owned();
                documented.push((method.to_uppercase(), path.clone(), id));
            }
        }
    }
    documented.sort();
    let mut served: Vec<_> = Operation::ALL
        .iter()
        .map(|op| {
            (
                op.method().to_owned(),
                op.path().to_owned(),
                op.operation_id().to_owned(),
            )
        })
        .collect();
    served.sort();
    assert_eq!(documented, served);

    // Every POST requires the Idempotency-Key header.
    for op in Operation::ALL.iter().filter(|op| op.method() == "POST") {
        let params = doc["paths"][op.path()]["post"]["parameters"].as_array().unwrap();
        assert!(
            params
                .iter()
                .map(|p| resolve(&doc, p))
                .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header" && p["required"] == true),
            "{} lacks Idempotency-Key",
            op.path()
        );
    }
}

#[test]
fn the_openapi_names_every_error_code_and_outage_policy_and_the_bearer_scheme() {
    use retail_sync_core::redemption::ErrorCode;
    let doc = openapi();
    let schemas = &doc["components"]["schemas"];
    let codes: Vec<&str> = schemas["Error"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let served: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(codes, served);
    let policies: Vec<&str> = schemas["OutagePolicy"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        policies,
        OutagePolicy::ALL.iter().map(|p| p.as_str()).collect::<Vec<_>>()
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["bearerFormat"],
        "JWT"
    );
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    // Every $ref resolves.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&doc, &mut found);
    for r in found {
        assert!(doc.pointer(r.strip_prefix('#').unwrap()).is_some(), "{r}");
    }
}

/// Checks `instance` against `#/components/schemas/{schema}`.
fn conforms(doc: &Value, schema: &str, instance: &Value) {
    let mut root = doc.clone();
    root["$ref"] = json!(format!("#/components/schemas/{schema}"));
    let validator = jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{schema}: {e}"));
    let errors: Vec<String> = validator.iter_errors(instance).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{schema}: {errors:?} in {instance}");
}

#[tokio::test]
async fn what_the_service_answers_is_what_the_openapi_describes() {
    let doc = openapi();
    let w = world(RedemptionConfig::default());
    let create = hold_body(100);
    conforms(&doc, "CreateHoldRequest", &serde_json::from_str(&create).unwrap());
    let commit = json!({"transaction": {"kind": "order", "order_id": "o-1"}, "points": 100});
    conforms(&doc, "CommitRequest", &commit);

    let balance = w
        .api
        .handle(ApiRequest::new("GET", "/v1/members/m-1/balance"))
        .await;
    conforms(&doc, "Balance", &json_of(&balance));
    let held = w.api.handle(post("/v1/holds", Some("o-1"), &create)).await;
    conforms(&doc, "Hold", &json_of(&held));
    let committed = w
        .api
        .handle(post("/v1/holds/H-1/commit", Some("o-2"), &commit.to_string()))
        .await;
    assert_eq!(committed.status, 200);
    conforms(&doc, "Hold", &json_of(&committed));

    let refused = w
        .api
        .handle(post("/v1/holds", Some("o-3"), &hold_body(9999)))
        .await;
    conforms(&doc, "Error", &json_of(&refused));
    w.loyalty.set_mode(Mode::Down);
    let outage = w.api.handle(post("/v1/holds", Some("o-4"), &create)).await;
    assert_eq!(outage.status, 503);
    conforms(&doc, "Error", &json_of(&outage));
    let examples = &doc["components"]["responses"]["Unavailable"]["content"]["application/json"]["examples"];
    assert_eq!(examples["refuse_redemption"]["value"], json_of(&outage));
}
