//! The simulator's HTTP routes, through a real socket.

use std::net::SocketAddr;

use reqwest::StatusCode;
use serde_json::{Value, json};

use retail_sync_simulators::samples::{accrual, sale};
use retail_sync_simulators::{ErpSimulator, Faults, LoyaltySimulator, SimState, serve};

async fn start() -> (String, ErpSimulator, LoyaltySimulator) {
    let (erp, loyalty) = (ErpSimulator::new(), LoyaltySimulator::new());
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (bound, _handle) = serve(erp.clone(), loyalty.clone(), addr).await.unwrap();
    (format!("http://{bound}"), erp, loyalty)
}

#[tokio::test]
async fn a_sale_is_posted_once_per_idempotency_key() {
    let (base, erp, _) = start().await;
    let client = reqwest::Client::new();
    let post = || {
        client
            .post(format!("{base}/erp/v1/sales"))
            .header("Idempotency-Key", "k-1")
            .json(&sale("store-1", "r-1"))
            .send()
    };
    let first = post().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let again: Value = post().await.unwrap().json().await.unwrap();
    assert_eq!(first, json!({"document_id": "ERP-00000001"}));
    assert_eq!(again, first);
    assert_eq!(erp.postings().len(), 1);
}

#[tokio::test]
async fn a_call_without_idempotency_key_or_with_a_bad_body_is_a_400_with_a_code() {
    let (base, erp, _) = start().await;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{base}/erp/v1/sales"))
        .json(&sale("store-1", "r-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "missing_idempotency_key"
    );

    let response = client
        .post(format!("{base}/loyalty/v1/accruals"))
        .header("Idempotency-Key", "k")
        .body("{\"member_id\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "invalid_body");
    assert_eq!(erp.requests(), 0, "refused before reaching the system");
}

#[tokio::test]
async fn refusals_carry_their_status_and_code() {
    let (base, _, _) = start().await;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{base}/erp/v1/sales"))
        .header("Idempotency-Key", "k")
        .json(&sale("closed-1", "r-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "period_closed");

    let response = client
        .post(format!("{base}/loyalty/v1/accruals"))
        .header("Idempotency-Key", "k")
        .json(&accrual("unknown-1", "r-1", 100))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "member_not_found"
    );
}

#[tokio::test]
async fn balances_faults_state_and_health_are_readable() {
    let (base, erp, loyalty) = start().await;
    let client = reqwest::Client::new();
    loyalty.accrue(&accrual("m-1", "r-1", 4_250), "k").unwrap();
    erp.post_sale(&sale("store-1", "r-1"), "k").unwrap();

    let balance: Value = client
        .get(format!("{base}/loyalty/v1/members/m-1/balance"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(balance, json!({"member_id": "m-1", "balance": 42}));
    let missing = client
        .get(format!("{base}/loyalty/v1/members/m-2/balance"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let set = client
        .put(format!("{base}/erp/_admin/faults"))
        .json(&json!({"error_rate": 0.25, "seed": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    assert_eq!(erp.faults().error_rate, 0.25);
    let read: Faults = client
        .get(format!("{base}/erp/_admin/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read.seed, Some(3));
    let bad = client
        .put(format!("{base}/loyalty/_admin/faults"))
        .json(&json!({"error_rate": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let typo = client
        .put(format!("{base}/loyalty/_admin/faults"))
        .json(&json!({"eror_rate": 0.1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        typo.status(),
        StatusCode::BAD_REQUEST,
        "unknown fields are refused, not ignored"
    );
    let other = client
        .get(format!("{base}/crm/_admin/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);

    let state: SimState = client
        .get(format!("{base}/_admin/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state.erp_postings.len(), 1);
    assert_eq!(state.loyalty_transactions.len(), 1);
    assert_eq!(state.balances.get("m-1"), Some(&42));
    assert_eq!((state.erp_requests, state.loyalty_requests), (1, 1));

    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let nowhere = client.get(format!("{base}/nowhere")).send().await.unwrap();
    assert_eq!(nowhere.status(), StatusCode::NOT_FOUND);
    assert_eq!(nowhere.json::<Value>().await.unwrap()["code"], "route_not_found");
}

#[tokio::test]
async fn a_down_system_answers_503() {
    let (base, _, loyalty) = start().await;
    loyalty.set_faults(Faults {
        down: true,
        ..Faults::default()
    });
    let response = reqwest::Client::new()
        .post(format!("{base}/loyalty/v1/accruals"))
        .header("Idempotency-Key", "k")
        .json(&accrual("m-1", "r-1", 100))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "unavailable");
    assert!(loyalty.transactions().is_empty());
}
