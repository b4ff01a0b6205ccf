//! The redemption API as the Lambda function runs it (HTTP API event → `retail_sync_lambda::http` →
//! `RedemptionApi` → `HttpLoyalty`), against the loyalty simulator over HTTP: a hold the platform made
//! during a call that timed out is found again by the retry instead of being made twice.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use retail_sync_connectors::{ClientAuth, HttpConfig, HttpLoyalty};
use retail_sync_contracts::values::Points;
use retail_sync_core::idempotency::IdempotencyPolicy;
use retail_sync_core::memory::MemoryState;
use retail_sync_core::ports::SystemClock;
use retail_sync_redemption::{RedemptionApi, RedemptionConfig};
use retail_sync_simulators::access::Access;
use retail_sync_simulators::{ErpSimulator, FaultKind, Faults, LoyaltySimulator};
use retail_sync_testkit::sims;
use retail_sync_tests::workspace;

/// The API Gateway event in `events/http/create-hold.json`, optionally changed.
fn event(change: impl FnOnce(&mut Value)) -> Value {
    let path = workspace().join("events/http/create-hold.json");
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    change(&mut event);
    event
}

/// One invocation, answered as the Lambda runtime would serialize it for API Gateway.
async fn invoke(api: &RedemptionApi, event: Value) -> Value {
    let response = retail_sync_lambda::http::handle(api, serde_json::from_value(event).unwrap()).await;
    serde_json::to_value(response).unwrap()
}

fn body(response: &Value) -> Value {
    serde_json::from_str(response["body"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn a_hold_the_platform_made_before_timing_out_is_found_by_the_retry_not_made_twice() {
    let loyalty = LoyaltySimulator::new();
    loyalty.seed_balance("m-1001", Points::new(2000).unwrap());
    let (base, _server) = sims::serve(ErpSimulator::new(), loyalty.clone(), Access::local()).await;
    let api = RedemptionApi {
        loyalty: Arc::new(
            HttpLoyalty::new(&HttpConfig::new(&base), sims::oauth(&base, ClientAuth::Basic)).unwrap(),
        ),
        idempotency: Arc::new(MemoryState::default()),
        members: Arc::new(MemoryState::default()),
        clock: Arc::new(SystemClock),
        policy: IdempotencyPolicy::default(),
        config: RedemptionConfig {
            loyalty_timeout: Duration::from_millis(500),
            ..RedemptionConfig::default()
        },
    };

    // The platform makes the hold, then never answers.
    loyalty.set_faults(Faults {
        fail_first: 1,
        fail_first_with: FaultKind::TimeoutAfterCommit,
        ..Faults::default()
    });
    let first = invoke(&api, event(|_| {})).await;
    assert_eq!(first["statusCode"], 503, "{first}");
    assert_eq!(first["headers"]["retry-after"], "30");
    assert_eq!(body(&first)["sale_allowed"], true);
    assert_eq!(loyalty.holds().len(), 1, "the platform acted");

    // A moment later the channel retries with the same key: the platform recognises its own hold.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let retry = invoke(&api, event(|_| {})).await;
    assert_eq!(retry["statusCode"], 201, "{retry}");
    let hold = body(&retry);
    assert_eq!(hold["hold_id"], json!(loyalty.holds()[0].hold_id));
    assert_eq!(
        hold["value_minor"], 500,
        "500 points are worth 5.00 EUR, applied before tax"
    );
    assert_eq!(loyalty.holds().len(), 1, "one hold, not two");

    // And once answered, the answer is ours to repeat.
    let requests = loyalty.requests();
    let again = invoke(&api, event(|_| {})).await;
    assert_eq!(
        (&again["statusCode"], &again["body"]),
        (&retry["statusCode"], &retry["body"])
    );
    assert_eq!(again["headers"]["idempotent-replayed"], "true");
    assert_eq!(loyalty.requests(), requests);

    // The basket is abandoned: release the hold (a base64 body on the way, as API Gateway may send).
    let hold_id = hold["hold_id"].as_str().unwrap().to_owned();
    let released = invoke(
        &api,
        event(|e| {
            e["rawPath"] = json!(format!("/v1/holds/{hold_id}/release"));
            e["headers"]["idempotency-key"] = json!("pos-017:basket-8812:release");
            e["body"] = json!("e30="); // `{}`
            e["isBase64Encoded"] = json!(true);
        }),
    )
    .await;
    assert_eq!(released["statusCode"], 200, "{released}");
    assert_eq!(body(&released)["status"], "released");

    let balance = invoke(
        &api,
        event(|e| {
            e["rawPath"] = json!("/v1/members/m-1001/balance");
            e["requestContext"]["http"]["method"] = json!("GET");
            e.as_object_mut().unwrap().remove("body");
        }),
    )
    .await;
    assert_eq!(
        body(&balance),
        json!({"member_id": "m-1001", "balance": 2000, "held": 0, "available": 2000, "pending": 0})
    );
}
