//! The redemption API against the reference loyalty simulator (in-process, with its fault injection)
//! and the in-memory idempotency store.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use retail_sync_contracts::values::Points;
use retail_sync_core::idempotency::IdempotencyPolicy;
use retail_sync_core::memory::{ManualClock, MemoryState};
use retail_sync_redemption::{
    ApiRequest, ApiResponse, Caller, OutagePolicy, RedemptionApi, RedemptionConfig,
};
use retail_sync_simulators::{FaultKind, Faults, InProcessLoyalty, LoyaltySimulator};

// --- Harness --------------------------------------------------------------------------------------------

const START: &str = "2030-01-15T10:00:00Z";

struct World {
    api: Arc<RedemptionApi>,
    loyalty: LoyaltySimulator,
    clock: Arc<ManualClock>,
}

fn world(config: RedemptionConfig) -> World {
    let clock = Arc::new(ManualClock::new(START.parse().unwrap()));
    let loyalty = LoyaltySimulator::new();
    loyalty.set_clock(clock.clone());
    loyalty.seed_balance("m-1", Points::new(1000).unwrap());
    // Applied calls are journalled from here on: what reached the platform, under which key.
    loyalty.keep_journal();
    let api = Arc::new(RedemptionApi {
        loyalty: Arc::new(InProcessLoyalty(loyalty.clone())),
        idempotency: Arc::new(MemoryState::default()),
        members: Arc::new(MemoryState::default()),
        clock: clock.clone(),
        policy: IdempotencyPolicy::default(),
        config,
    });
    World { api, loyalty, clock }
}

impl World {
    /// Mutating calls that reached the platform, applied or not (refused, faulted).
    fn requests(&self) -> u64 {
        self.loyalty.requests()
    }

    /// (operation, platform key) of each call the platform applied since the last look.
    fn applied(&self) -> Vec<(String, String)> {
        self.loyalty
            .take_journal()
            .iter()
            .map(|entry| {
                let e: Value = serde_json::from_str(entry).unwrap();
                (
                    e["call"]["op"].as_str().unwrap().to_owned(),
                    e["key"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn down(&self) {
        self.loyalty.set_faults(Faults {
            down: true,
            ..Faults::default()
        });
    }

    fn up(&self) {
        self.loyalty.set_faults(Faults::default());
    }

    /// Every call waits `latency` before the platform looks at it.
    fn slow(&self, latency: Duration) {
        self.loyalty.set_faults(Faults {
            latency_ms: latency.as_millis() as u64,
            ..Faults::default()
        });
    }
}

/// A request from the web shop's application, with every scope.
fn req(method: &str, path: &str) -> ApiRequest {
    ApiRequest::new(method, path).with_caller(Caller::local("web"))
}

fn post(path: &str, key: Option<&str>, body: &str) -> ApiRequest {
    let request = req("POST", path).with_body(body);
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

fn hold_id(response: &ApiResponse) -> String {
    json_of(response)["hold_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no hold in {}", response.body))
        .to_owned()
}

// --- Tests ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_members_balance_is_read() {
    let w = world(RedemptionConfig::default());
    let r = w.api.handle(req("GET", "/v1/members/m-1/balance")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        json_of(&r),
        json!({"member_id": "m-1", "balance": 1000, "held": 0, "available": 1000, "pending": 0})
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
        w.applied(),
        [(
            "create_hold".to_owned(),
            "api:web:basket-1:create-hold".to_owned()
        )]
    );

    let read = w
        .api
        .handle(req("GET", &format!("/v1/holds/{}", hold_id(&r))))
        .await;
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
    assert_eq!(w.requests(), 2, "a refused ttl never reaches the platform");
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
    assert_eq!(w.requests(), 1);

    let balance = w.api.handle(req("GET", "/v1/members/m-1/balance")).await;
    assert_eq!(json_of(&balance)["held"], 300, "one hold, not two");
}

#[tokio::test]
async fn the_same_key_for_another_request_is_refused() {
    let w = world(RedemptionConfig::default());
    let first = w.api.handle(post("/v1/holds", Some("k"), &hold_body(300))).await;
    assert_eq!(first.status, 201);
    let other = w.api.handle(post("/v1/holds", Some("k"), &hold_body(301))).await;
    assert_eq!(other.status, 422);
    assert_eq!(code(&other), "idempotency_key_reused");
    let release = format!("/v1/holds/{}/release", hold_id(&first));
    let elsewhere = w.api.handle(post(&release, Some("k"), "")).await;
    assert_eq!(code(&elsewhere), "idempotency_key_reused");
    assert_eq!(w.requests(), 1);
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
    assert_eq!(w.requests(), 1);
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
        "insufficient_points: member m-1 has 1000 points available, the hold needs 5000"
    );
    assert_eq!(body["reason"], "loyalty_rejected");

    let again = w
        .api
        .handle(post("/v1/holds", Some("k-big"), &hold_body(5000)))
        .await;
    assert_eq!((again.status, &again.body), (422, &r.body));
    assert_eq!(w.requests(), 1, "a stored refusal is not asked again");

    let unknown = w.api.handle(req("GET", "/v1/members/unknown-404/balance")).await;
    assert_eq!(unknown.status, 422);
    assert_eq!(code(&unknown), "redemption_refused");
}

#[tokio::test]
async fn an_outage_lets_the_sale_go_on_without_points_by_default_and_is_not_stored() {
    let w = world(RedemptionConfig::default());
    w.down();
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

    // The retry reaches the platform, which creates the hold but whose answer is lost: an outage again.
    w.loyalty.set_faults(Faults {
        fail_first: 1,
        fail_first_with: FaultKind::TimeoutAfterCommit,
        ..Faults::default()
    });
    w.clock.advance(Duration::from_secs(40));
    let lost = w
        .api
        .handle(post("/v1/holds", Some("k-out"), &hold_body(300)))
        .await;
    assert_eq!(lost.status, 503, "{}", lost.body);
    assert_eq!(w.loyalty.holds().len(), 1, "the platform acted");

    // Loyalty answers again: the next retry sends the very request of the first attempt under the same
    // platform key, although time went by, so the platform answers with the hold it made instead of
    // refusing a reused key or making a second one.
    w.up();
    w.clock.advance(Duration::from_secs(40));
    let retry = w
        .api
        .handle(post("/v1/holds", Some("k-out"), &hold_body(300)))
        .await;
    assert_eq!(retry.status, 201, "{}", retry.body);
    assert_eq!(json_of(&retry)["expires_at"], "2030-01-15T10:15:00Z");
    assert_eq!(w.loyalty.holds().len(), 1, "one hold, not two");
    assert_eq!(
        w.applied(),
        [("create_hold".to_owned(), "api:web:k-out:create-hold".to_owned())]
    );
    assert_eq!(w.requests(), 3, "down, lost answer, replayed answer");

    let path = format!("/v1/holds/{}", hold_id(&retry));
    let reads = w.api.handle(req("GET", &path)).await;
    assert_eq!(reads.status, 200);
    w.down();
    let read_down = w.api.handle(req("GET", "/v1/members/m-1/balance")).await;
    assert_eq!(read_down.status, 503);
    assert_eq!(json_of(&read_down)["sale_allowed"], true);
}

#[tokio::test]
async fn an_outage_blocks_the_checkout_when_the_retailer_says_so() {
    let w = world(RedemptionConfig {
        outage_policy: OutagePolicy::BlockCheckout,
        ..RedemptionConfig::default()
    });
    w.down();
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
    w.slow(Duration::from_secs(60));
    let r = w
        .api
        .handle(post("/v1/holds", Some("k-slow"), &hold_body(300)))
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(code(&r), "loyalty_unavailable");
    let r = w.api.handle(req("GET", "/v1/members/m-1/balance")).await;
    assert_eq!(r.status, 503);
}

#[tokio::test]
async fn a_request_still_in_progress_under_the_key_is_409_with_retry_after() {
    let w = world(RedemptionConfig::default());
    // The first request is still waiting for the platform when the second arrives: it is claimed under
    // the key before the platform is called, and the platform takes 500 ms to answer.
    w.slow(Duration::from_millis(500));
    let api = w.api.clone();
    let first = tokio::spawn(async move {
        api.handle(post("/v1/holds", Some("k-slow"), &hold_body(300)))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let second = w
        .api
        .handle(post("/v1/holds", Some("k-slow"), &hold_body(300)))
        .await;
    assert_eq!(second.status, 409);
    assert_eq!(code(&second), "request_in_progress");
    assert_eq!(second.header("retry-after"), Some("60"));

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
    let first = w
        .api
        .handle(post("/v1/holds", Some("c-1"), &hold_body(100)))
        .await;
    let second = w
        .api
        .handle(post("/v1/holds", Some("c-2"), &hold_body(200)))
        .await;
    w.applied();

    let commit = json!({"transaction": {"kind": "order", "order_id": "o-1"}, "points": 100}).to_string();
    let path = format!("/v1/holds/{}/commit", hold_id(&first));
    let r = w.api.handle(post(&path, Some("c-3"), &commit)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json_of(&r)["status"], "committed");

    let path = format!("/v1/holds/{}/release", hold_id(&second));
    let r = w.api.handle(post(&path, Some("c-4"), "")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json_of(&r)["status"], "released");
    assert_eq!(
        w.applied(),
        [
            ("commit".to_owned(), "api:web:c-3:commit-hold".to_owned()),
            ("release".to_owned(), "api:web:c-4:release-hold".to_owned()),
        ]
    );
    assert_eq!(w.loyalty.balance("m-1"), Some(Points::new(900).unwrap()));
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

    let r = w.api.handle(req("GET", "/v1/members/bad:id/balance")).await;
    assert_eq!(r.status, 400);
    assert_eq!(code(&r), "invalid_request");

    // Validation failures are not stored: the corrected request may use the same key.
    let r = w.api.handle(post("/v1/holds", Some("k-1"), &hold_body(1))).await;
    assert_eq!(r.status, 201);
    assert_eq!(w.requests(), 1);
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
        let r = w.api.handle(req(method, path)).await;
        assert_eq!(r.status, 404, "{method} {path}");
        assert_eq!(code(&r), "not_found");
    }
    let r = w.api.handle(req("DELETE", "/v1/holds/H-1")).await;
    assert_eq!(r.status, 405);
    assert_eq!(code(&r), "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET"));
    let r = w.api.handle(req("GET", "/v1/holds")).await;
    assert_eq!(r.header("allow"), Some("POST"));
    assert_eq!(w.requests(), 0);
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
    use retail_sync_redemption::Operation;
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
    use retail_sync_redemption::ErrorCode;
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

    let balance = w.api.handle(req("GET", "/v1/members/m-1/balance")).await;
    conforms(&doc, "Balance", &json_of(&balance));
    let held = w.api.handle(post("/v1/holds", Some("o-1"), &create)).await;
    conforms(&doc, "Hold", &json_of(&held));
    let path = format!("/v1/holds/{}/commit", hold_id(&held));
    let committed = w.api.handle(post(&path, Some("o-2"), &commit.to_string())).await;
    assert_eq!(committed.status, 200);
    conforms(&doc, "Hold", &json_of(&committed));

    let refused = w
        .api
        .handle(post("/v1/holds", Some("o-3"), &hold_body(9999)))
        .await;
    conforms(&doc, "Error", &json_of(&refused));
    w.down();
    let outage = w.api.handle(post("/v1/holds", Some("o-4"), &create)).await;
    assert_eq!(outage.status, 503);
    conforms(&doc, "Error", &json_of(&outage));
    let examples = &doc["components"]["responses"]["Unavailable"]["content"]["application/json"]["examples"];
    assert_eq!(examples["refuse_redemption"]["value"], json_of(&outage));
}

// --- Callers ----------------------------------------------------------------------------------------------

fn as_caller(mut request: ApiRequest, client: &str, scopes: &[&str], member: Option<&str>) -> ApiRequest {
    request.caller = Some(Caller {
        client: client.to_owned(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        member: member.map(str::to_owned),
    });
    request
}

#[tokio::test]
async fn a_request_without_a_caller_or_the_routes_scope_is_refused() {
    use retail_sync_redemption::{SCOPE_BALANCE_READ, SCOPE_HOLDS_WRITE};
    let w = world(RedemptionConfig::default());
    let anonymous = ApiRequest::new("GET", "/v1/members/m-1/balance");
    let r = w.api.handle(anonymous).await;
    assert_eq!((r.status, code(&r)), (401, "unauthenticated".to_owned()));

    let read_only = |req: ApiRequest| as_caller(req, "kiosk", &[SCOPE_BALANCE_READ], None);
    let r = w
        .api
        .handle(read_only(req("GET", "/v1/members/m-1/balance")))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = w
        .api
        .handle(read_only(post("/v1/holds", Some("k-1"), &hold_body(10))))
        .await;
    assert_eq!((r.status, code(&r)), (403, "forbidden".to_owned()));
    assert!(
        json_of(&r)["message"]
            .as_str()
            .unwrap()
            .contains(SCOPE_HOLDS_WRITE)
    );

    let bad_client = as_caller(
        req("GET", "/v1/members/m-1/balance"),
        "a:b",
        &[SCOPE_BALANCE_READ],
        None,
    );
    assert_eq!(w.api.handle(bad_client).await.status, 403);
    assert_eq!(w.requests(), 0, "nothing reached the platform");
    // Identity providers' usual client ids are fine.
    for client in ["abc123@clients", "auth0|abc123"] {
        let ok = as_caller(
            req("GET", "/v1/members/m-1/balance"),
            client,
            &[SCOPE_BALANCE_READ],
            None,
        );
        assert_eq!(w.api.handle(ok).await.status, 200, "{client}");
    }
}

#[tokio::test]
async fn the_same_key_from_two_callers_is_two_requests() {
    let w = world(RedemptionConfig::default());
    let web = w
        .api
        .handle(post("/v1/holds", Some("k-same"), &hold_body(100)))
        .await;
    let app = as_caller(
        post("/v1/holds", Some("k-same"), &hold_body(200)),
        "app",
        &["redemption/holds.write"],
        None,
    );
    let app = w.api.handle(app).await;
    assert_eq!((web.status, app.status), (201, 201), "{} {}", web.body, app.body);
    assert_ne!(hold_id(&web), hold_id(&app));
    assert_eq!(
        w.applied(),
        [
            ("create_hold".to_owned(), "api:web:k-same:create-hold".to_owned()),
            ("create_hold".to_owned(), "api:app:k-same:create-hold".to_owned()),
        ]
    );
}

/// Two members of one application (a loyalty app's member tokens) sending the same key make two
/// requests: a member can neither replay another's stored answer nor block its key. A member claim that
/// is no member id is refused before anything happens.
#[tokio::test]
async fn the_same_key_from_two_members_of_one_app_is_two_requests() {
    let write = ["redemption/holds.write"];
    let w = world(RedemptionConfig::default());
    w.loyalty.seed_balance("m-2", Points::new(500).unwrap());
    let body = |member: &str| {
        json!({"member_id": member, "points": 10, "currency": "EUR", "basket_net_minor": 5000}).to_string()
    };
    let first = as_caller(
        post("/v1/holds", Some("k-same"), &body("m-1")),
        "app",
        &write,
        Some("m-1"),
    );
    let second = as_caller(
        post("/v1/holds", Some("k-same"), &body("m-2")),
        "app",
        &write,
        Some("m-2"),
    );
    let (first, second) = (w.api.handle(first).await, w.api.handle(second).await);
    assert_eq!(
        (first.status, second.status),
        (201, 201),
        "{} {}",
        first.body,
        second.body
    );
    assert_ne!(hold_id(&first), hold_id(&second));
    assert_eq!(
        w.applied(),
        [
            (
                "create_hold".to_owned(),
                "api:app/m-1:k-same:create-hold".to_owned()
            ),
            (
                "create_hold".to_owned(),
                "api:app/m-2:k-same:create-hold".to_owned()
            ),
        ]
    );
    let forged = as_caller(
        post("/v1/holds", Some("k-x"), &body("m-1")),
        "app",
        &write,
        Some("m-1/x"),
    );
    let before = w.requests();
    let r = w.api.handle(forged).await;
    assert_eq!((r.status, code(&r)), (403, "forbidden".to_owned()), "{}", r.body);
    assert_eq!(w.requests(), before, "nothing reached the platform");
}

#[tokio::test]
async fn another_callers_hold_and_another_member_are_refused() {
    let all = [
        "redemption/balance.read",
        "redemption/holds.read",
        "redemption/holds.write",
    ];
    let w = world(RedemptionConfig::default());
    w.loyalty.seed_balance("m-2", Points::new(500).unwrap());
    let created = w
        .api
        .handle(post("/v1/holds", Some("k-web"), &hold_body(100)))
        .await;
    let hold = hold_id(&created);

    // Another application may not read, commit or release the web shop's hold.
    let commit = json!({"transaction": {"kind": "order", "order_id": "o-1"}, "points": 100}).to_string();
    for request in [
        req("GET", &format!("/v1/holds/{hold}")),
        post(&format!("/v1/holds/{hold}/commit"), Some("k-app-1"), &commit),
        post(&format!("/v1/holds/{hold}/release"), Some("k-app-2"), ""),
    ] {
        let r = w.api.handle(as_caller(request, "app", &all, None)).await;
        assert_eq!((r.status, code(&r)), (403, "forbidden".to_owned()), "{}", r.body);
    }
    assert_eq!(
        w.loyalty.holds()[0].status,
        retail_sync_core::ports::HoldStatus::Held
    );

    // A member's token reads and holds for that member only.
    let member = |request: ApiRequest| as_caller(request, "app", &all, Some("m-2"));
    let own = w.api.handle(member(req("GET", "/v1/members/m-2/balance"))).await;
    assert_eq!(own.status, 200, "{}", own.body);
    let other = w.api.handle(member(req("GET", "/v1/members/m-1/balance"))).await;
    assert_eq!((other.status, code(&other)), (403, "forbidden".to_owned()));
    let for_other = w
        .api
        .handle(member(post("/v1/holds", Some("k-m"), &hold_body(10))))
        .await;
    assert_eq!(for_other.status, 403, "hold_body is for m-1");

    // The web shop itself still commits its hold.
    let r = w
        .api
        .handle(post(
            &format!("/v1/holds/{hold}/commit"),
            Some("k-web-2"),
            &commit,
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn the_openapi_gives_each_operation_the_scope_the_service_checks() {
    use retail_sync_redemption::Operation;
    let doc = openapi();
    for op in Operation::ALL {
        let operation = &doc["paths"][op.path()][op.method().to_lowercase()];
        assert_eq!(
            operation["security"],
            json!([{"bearer": [op.scope()]}]),
            "{}",
            op.operation_id()
        );
    }
}

/// The deployed edge asks for the same scope per route as the service checks, logs access and throttles.
#[test]
fn the_template_routes_need_the_services_scopes_and_are_logged_and_throttled() {
    use retail_sync_redemption::Operation;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
    let t = retail_sync_topology::topology::template_json(&std::fs::read_to_string(path).unwrap()).unwrap();
    let events = t["Resources"]["RedemptionApiFunction"]["Properties"]["Events"]
        .as_object()
        .unwrap();
    assert_eq!(events.len(), Operation::ALL.len());
    for op in Operation::ALL {
        let (name, event) = events
            .iter()
            .find(|(_, e)| e["Properties"]["Method"] == op.method() && e["Properties"]["Path"] == op.path())
            .unwrap_or_else(|| panic!("no route for {}", op.operation_id()));
        assert_eq!(
            event["Properties"]["Auth"]["AuthorizationScopes"],
            json!([op.scope()]),
            "{name}"
        );
    }
    let api = &t["Resources"]["RedemptionHttpApi"]["Properties"];
    assert!(api["AccessLogSettings"]["DestinationArn"].is_object());
    let format = api["AccessLogSettings"]["Format"].as_str().unwrap();
    assert!(
        !format.contains("member") && !format.contains("sourceIp"),
        "no personal data: {format}"
    );
    assert!(api["DefaultRouteSettings"]["ThrottlingRateLimit"].is_object());
    assert!(api["DefaultRouteSettings"]["ThrottlingBurstLimit"].is_object());
}
