//! The simulator's HTTP routes, through a real socket.

use std::net::SocketAddr;

use reqwest::StatusCode;
use serde_json::{Value, json};

use retail_sync_contracts::values::{MemberId, Points};
use retail_sync_core::ports::MemberSnapshot;
use retail_sync_core::ports::{AdjustmentKind, Hold, HoldStatus};
use retail_sync_simulators::access::{Access, LOCAL_API_KEY, LOCAL_CLIENT_ID, LOCAL_CLIENT_SECRET};
use retail_sync_simulators::samples::{
    accrual, adjustment, cancellation, commit, hold, order, order_sale, return_of, sale,
};
use retail_sync_simulators::samples::{erased_snapshot, member_snapshot};
use retail_sync_simulators::{
    Dialects, ErpSimulator, Faults, LoyaltySimulator, SimState, Systems, serve, serve_systems,
};

async fn start() -> (String, ErpSimulator, LoyaltySimulator) {
    let (erp, loyalty) = (ErpSimulator::new(), LoyaltySimulator::new());
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (bound, _handle) = serve(erp.clone(), loyalty.clone(), Access::local(), addr)
        .await
        .unwrap();
    (format!("http://{bound}"), erp, loyalty)
}

/// Every system served, the CRM included, with a handle on each.
async fn start_systems() -> (String, Systems) {
    let systems = Systems::default();
    let dialects = Dialects::over(&systems.erp, &systems.loyalty);
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (bound, _handle) = serve_systems(systems.clone(), dialects, Access::local(), addr)
        .await
        .unwrap();
    (format!("http://{bound}"), systems)
}

fn member(id: &str) -> MemberId {
    MemberId::parse(id).unwrap()
}

/// A client that presents the local API key on every call, as a connector would.
fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-api-key", LOCAL_API_KEY.parse().unwrap());
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Every system API route refuses a call without a credential (401 `unauthorized`, and nothing is
/// applied); the token endpoint gives the local client a bearer token that opens them.
#[tokio::test]
async fn system_routes_need_a_token_or_the_api_key() {
    let (base, erp, _) = start().await;
    let bare = reqwest::Client::new();
    let refused = bare
        .post(format!("{base}/erp/v1/sales"))
        .header("Idempotency-Key", "k-1")
        .json(&sale("store-1", "r-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refused.json::<Value>().await.unwrap()["code"], "unauthorized");
    let refused = bare
        .get(format!("{base}/loyalty/v1/members/m-1/balance"))
        .bearer_auth("made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(erp.postings().is_empty());

    let token: Value = bare
        .post(format!("{base}/oauth/token"))
        .basic_auth(LOCAL_CLIENT_ID, Some(LOCAL_CLIENT_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(token["token_type"], "Bearer");
    let accepted = bare
        .post(format!("{base}/erp/v1/sales"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .header("Idempotency-Key", "k-1")
        .json(&sale("store-1", "r-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::CREATED);
    let wrong = bare
        .post(format!("{base}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=retail-sync-local&client_secret=guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json::<Value>().await.unwrap()["error"], "invalid_client");
}

#[tokio::test]
async fn a_sale_is_posted_once_per_idempotency_key() {
    let (base, erp, _) = start().await;
    let client = client();
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
    let client = client();
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
    let client = client();
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
    let client = client();
    loyalty.seed_balance("m-1", Points::ZERO);
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
    assert_eq!(
        balance,
        json!({"member_id": "m-1", "balance": 42, "held": 0, "available": 42, "pending": 0})
    );
    for member in ["m-2", "unknown-2", "not%20an%20id"] {
        let missing = client
            .get(format!("{base}/loyalty/v1/members/{member}/balance"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND, "{member}");
        assert_eq!(missing.json::<Value>().await.unwrap()["code"], "member_not_found");
    }

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
        .get(format!("{base}/pos/_admin/faults"))
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
    let response = client()
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

#[tokio::test]
async fn cancellations_and_returns_are_posted_as_documents() {
    let (base, erp, _) = start().await;
    let client = client();
    let send = |path: &str, key: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let sale = serde_json::to_value(order_sale("o-1")).unwrap();
    assert_eq!(
        send("/erp/v1/sales", "s", sale).await.unwrap().status(),
        StatusCode::CREATED
    );

    let cancel = serde_json::to_value(cancellation("o-1", "cx-1")).unwrap();
    let response = send("/erp/v1/sales/cancellations", "c", cancel.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"document_id": "ERP-00000002"})
    );
    let again = send("/erp/v1/sales/cancellations", "c", cancel).await.unwrap();
    assert_eq!(
        again.json::<Value>().await.unwrap()["document_id"],
        "ERP-00000002"
    );

    let ret = serde_json::to_value(return_of("ret-1", order("o-1"), Some("store-3"))).unwrap();
    let response = send("/erp/v1/returns", "r", ret).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        response.json::<Value>().await.unwrap()["document_id"],
        "ERP-00000003"
    );

    let unknown = serde_json::to_value(return_of("ret-2", order("o-9"), None)).unwrap();
    let response = send("/erp/v1/returns", "r2", unknown).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "original_not_found"
    );
    let unknown = serde_json::to_value(cancellation("o-9", "cx-1")).unwrap();
    let response = send("/erp/v1/sales/cancellations", "c2", unknown).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "order_not_found");

    let without_key = client
        .post(format!("{base}/erp/v1/returns"))
        .json(&return_of("ret-3", order("o-1"), None))
        .send()
        .await
        .unwrap();
    assert_eq!(without_key.status(), StatusCode::BAD_REQUEST);

    let kinds: Vec<_> = erp.postings().iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(kinds, ["sale", "cancellation", "return"]);
}

#[tokio::test]
async fn a_hold_is_created_read_committed_and_its_points_readjusted() {
    let (base, _, loyalty) = start().await;
    loyalty.seed_balance("m-1", retail_sync_contracts::values::Points::new(1_000).unwrap());
    let client = client();
    let post = |path: String, key: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let request = hold(
        "m-1",
        600,
        5_000,
        jiff::Timestamp::now(),
        jiff::SignedDuration::from_secs(600),
    );
    let response = post(
        "/loyalty/v1/holds".into(),
        "h1",
        serde_json::to_value(&request).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Hold = response.json().await.unwrap();
    assert_eq!(
        (created.hold_id.as_str(), created.status),
        ("H-00000001", HoldStatus::Held)
    );
    assert_eq!(created.value_minor.get(), 600);

    let read = client
        .get(format!("{base}/loyalty/v1/holds/H-00000001"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.json::<Hold>().await.unwrap(), created);
    let balance: Value = client
        .get(format!("{base}/loyalty/v1/members/m-1/balance"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(balance["available"], 400);

    let commit_body = serde_json::to_value(commit("o-1", 600)).unwrap();
    let path = "/loyalty/v1/holds/H-00000001/commit".to_owned();
    let response = post(path.clone(), "c1", commit_body.clone()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let committed: Hold = response.json().await.unwrap();
    assert_eq!(committed.status, HoldStatus::Committed);
    assert_eq!(
        committed.loyalty_transaction_id.as_ref().map(|t| t.as_str()),
        Some("LT-00000001")
    );
    let again: Hold = post(path, "c2", commit_body).await.unwrap().json().await.unwrap();
    assert_eq!(again, committed, "the same commit under another key");

    let response = post("/loyalty/v1/holds/H-00000001/release".into(), "r1", json!({}))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "hold_committed");

    let recredit = adjustment("m-1", AdjustmentKind::Recredit, "o-1", "compensation", 600);
    let body = serde_json::to_value(&recredit).unwrap();
    let response = post("/loyalty/v1/adjustments".into(), "a1", body.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let adjusted: Value = response.json().await.unwrap();
    assert_eq!(
        adjusted,
        json!({"loyalty_transaction_id": "LT-00000002", "delta": 600, "balance": 1_000})
    );
    let again: Value = post("/loyalty/v1/adjustments".into(), "a1", body)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again, adjusted);
    assert_eq!(loyalty.balance("m-1").map(|p| p.get()), Some(1_000));

    let state: SimState = client
        .get(format!("{base}/_admin/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state.holds, [committed]);
    assert_eq!(state.loyalty_transactions.len(), 2);
}

#[tokio::test]
async fn a_hold_is_released_with_an_empty_body_and_unknown_holds_are_404() {
    let (base, _, loyalty) = start().await;
    loyalty.seed_balance("m-1", retail_sync_contracts::values::Points::new(1_000).unwrap());
    let request = hold(
        "m-1",
        100,
        5_000,
        jiff::Timestamp::now(),
        jiff::SignedDuration::from_secs(600),
    );
    let h = loyalty.create_hold(&request, "h1").unwrap();
    let client = client();
    let release = |hold_id: String, key: &'static str, body: &'static str| {
        client
            .post(format!("{base}/loyalty/v1/holds/{hold_id}/release"))
            .header("Idempotency-Key", key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let response = release(h.hold_id.to_string(), "r1", "{}").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Hold>().await.unwrap().status,
        HoldStatus::Released
    );
    let response = release(h.hold_id.to_string(), "r2", "").await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "an empty body is an empty object"
    );
    let response = release(h.hold_id.to_string(), "r3", "{\"x\": 1}").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let response = release("H-00000042".into(), "r4", "{}").await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "hold_not_found");
    let response = client
        .get(format!("{base}/loyalty/v1/holds/H-00000042"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = client
        .post(format!("{base}/loyalty/v1/holds/{}/commit", h.hold_id))
        .header("Idempotency-Key", "c1")
        .json(&commit("o-1", 100))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "hold_released");
}

/// A `PUT` of `snapshot` to `path` under `key`.
async fn put_snapshot(
    client: &reqwest::Client,
    url: String,
    key: &str,
    snapshot: &MemberSnapshot,
) -> reqwest::Response {
    client
        .put(url)
        .header("Idempotency-Key", key)
        .json(snapshot)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn members_are_enrolled_profiled_and_merged() {
    let (base, systems) = start_systems().await;
    let loyalty = &systems.loyalty;
    let client = client();
    let enrol = |member: &'static str, key: &'static str| {
        client
            .post(format!("{base}/loyalty/v1/members"))
            .header("Idempotency-Key", key)
            .json(&json!({"member_id": member}))
            .send()
    };
    let enrolled = enrol("m-1", "e1").await.unwrap();
    assert_eq!(enrolled.status(), StatusCode::CREATED);
    assert_eq!(
        enrolled.json::<Value>().await.unwrap(),
        json!({"member_id": "m-1"})
    );
    assert_eq!(
        enrol("m-1", "e1b").await.unwrap().status(),
        StatusCode::CREATED,
        "a no-op"
    );
    enrol("m-2", "e2").await.unwrap();
    let refused = enrol("unknown-1", "e3").await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["code"],
        "enrolment_refused"
    );

    let profile = |id: &str| format!("{base}/loyalty/v1/members/{id}/profile");
    let synced = put_snapshot(&client, profile("m-1"), "p1", &member_snapshot("m-1", 2)).await;
    assert_eq!(synced.status(), StatusCode::OK);
    assert_eq!(
        synced.json::<Value>().await.unwrap(),
        json!({"member_id": "m-1", "revision": 2})
    );
    let older = put_snapshot(&client, profile("m-1"), "p0", &member_snapshot("m-1", 1)).await;
    assert_eq!(older.json::<Value>().await.unwrap()["revision"], 2);
    let unknown = put_snapshot(&client, profile("m-9"), "p9", &member_snapshot("m-9", 1)).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(unknown.json::<Value>().await.unwrap()["code"], "member_not_found");
    let elsewhere = put_snapshot(&client, profile("m-2"), "p2", &member_snapshot("m-1", 3)).await;
    assert_eq!(elsewhere.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        elsewhere.json::<Value>().await.unwrap()["code"],
        "member_mismatch"
    );

    loyalty.accrue(&accrual("m-1", "r-1", 3_000), "a1").unwrap();
    let merge = |duplicate: &str, survivor: &str, key: &'static str| {
        client
            .post(format!("{base}/loyalty/v1/members/{duplicate}/merge"))
            .header("Idempotency-Key", key)
            .json(&json!({"survivor_id": survivor}))
            .send()
    };
    let merged = merge("m-1", "m-2", "m1").await.unwrap();
    assert_eq!(merged.status(), StatusCode::OK);
    assert_eq!(merged.json::<Value>().await.unwrap(), json!({"points_moved": 30}));
    let again = merge("m-1", "m-2", "m2").await.unwrap();
    assert_eq!(again.json::<Value>().await.unwrap(), json!({"points_moved": 30}));
    for (duplicate, survivor, status, code) in [
        ("m-2", "m-2", StatusCode::UNPROCESSABLE_ENTITY, "merge_refused"),
        ("m-9", "m-2", StatusCode::NOT_FOUND, "member_not_found"),
        ("not%20an%20id", "m-2", StatusCode::NOT_FOUND, "member_not_found"),
    ] {
        let response = merge(duplicate, survivor, "m3").await.unwrap();
        assert_eq!(response.status(), status, "{duplicate}");
        assert_eq!(response.json::<Value>().await.unwrap()["code"], code);
    }
    let after = client
        .post(format!("{base}/loyalty/v1/accruals"))
        .header("Idempotency-Key", "a2")
        .json(&accrual("m-1", "r-2", 1_000))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::CONFLICT);
    assert_eq!(after.json::<Value>().await.unwrap()["code"], "member_merged");

    let state: SimState = client
        .get(format!("{base}/_admin/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let members: Vec<_> = state
        .loyalty_members
        .iter()
        .map(|m| (m.member_id.as_str(), m.status.as_str(), m.balance.get()))
        .collect();
    assert_eq!(members, [("m-1", "merged", 0), ("m-2", "active", 30)]);
    assert_eq!(
        loyalty.member(&member("m-1")).unwrap().profile,
        Some(member_snapshot("m-1", 2))
    );
}

#[tokio::test]
async fn the_erp_and_the_crm_keep_accounts_and_contacts_at_their_latest_revision() {
    let (base, systems) = start_systems().await;
    let client = client();
    let customer = format!("{base}/erp/v1/customers/m-5");
    let contact = format!("{base}/crm/v1/contacts/m-5");
    for url in [&customer, &contact] {
        let first = put_snapshot(&client, url.clone(), "k2", &member_snapshot("m-5", 2)).await;
        assert_eq!(first.status(), StatusCode::OK, "{url}");
        let late = put_snapshot(&client, url.clone(), "k1", &member_snapshot("m-5", 1)).await;
        assert_eq!(late.json::<Value>().await.unwrap()["revision"], 2, "{url}");
        let erased = put_snapshot(&client, url.clone(), "k3", &erased_snapshot("m-5", 3)).await;
        assert_eq!(erased.json::<Value>().await.unwrap()["revision"], 3, "{url}");
        let reused = put_snapshot(&client, url.clone(), "k3", &member_snapshot("m-5", 4)).await;
        assert_eq!(reused.status(), StatusCode::CONFLICT, "{url}");
        let keyless = client
            .put(url.clone())
            .json(&member_snapshot("m-5", 4))
            .send()
            .await
            .unwrap();
        assert_eq!(keyless.status(), StatusCode::BAD_REQUEST, "{url}");
    }
    assert_eq!(
        systems.erp.customer(&member("m-5")),
        Some(erased_snapshot("m-5", 3))
    );
    assert!(systems.erp.postings().is_empty(), "an account is no document");

    let read: Value = client.get(&contact).send().await.unwrap().json().await.unwrap();
    assert_eq!(read["revision"], 3);
    assert_eq!(read["status"], "erased");
    for field in ["name", "email", "phone", "marketing_email"] {
        assert!(read.get(field).is_none(), "{field} survived the erasure: {read}");
    }
    assert!(read["updated_at"].is_string());
    for id in ["m-6", "not%20an%20id"] {
        let missing = client
            .get(format!("{base}/crm/v1/contacts/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            missing.json::<Value>().await.unwrap()["code"],
            "contact_not_found"
        );
    }
    let bare = reqwest::Client::new().get(&contact).send().await.unwrap();
    assert_eq!(
        bare.status(),
        StatusCode::UNAUTHORIZED,
        "the CRM needs a credential too"
    );

    let set = client
        .put(format!("{base}/crm/_admin/faults"))
        .json(&json!({"down": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    let down = client.get(&contact).send().await.unwrap();
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    let state: SimState = client
        .get(format!("{base}/_admin/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((state.crm_requests, state.crm_contacts.len()), (4, 1));
    assert_eq!(state.erp_customers, [erased_snapshot("m-5", 3)]);
}

/// The books read back: every document and ledger movement whose business time is in `[from, to)`, in
/// the order the system booked them, behind the same credential as the rest of the system's API; a
/// window that is missing, unreadable or empty is a 400 in the API's error shape, and a system that is
/// down answers 503.
#[tokio::test]
async fn the_books_are_read_back_over_a_window_of_business_time() {
    use retail_sync_core::ports::{DocumentKind, PointsKind};
    use retail_sync_simulators::http::{DocumentList, MovementList};

    let (base, erp, loyalty) = start().await;
    loyalty.seed_balance("m-1", Points::ZERO);
    let hour = |h: i64| jiff::Timestamp::from_second(1_780_000_000 + h * 3_600).unwrap();
    for h in 0..3 {
        let mut posted = sale("store-1", &format!("r-{h}"));
        posted.occurred_at = hour(h);
        erp.post_sale(&posted, &format!("s-{h}")).unwrap();
        let mut accrued = accrual("m-1", &format!("r-{h}"), 1_000 * (h + 1));
        accrued.occurred_at = hour(h);
        loyalty.accrue(&accrued, &format!("a-{h}")).unwrap();
    }
    let mut returned = return_of(
        "ret-1",
        retail_sync_simulators::samples::receipt("store-1", "r-0"),
        None,
    );
    returned.occurred_at = hour(1);
    erp.post_return(&returned, "ret-1").unwrap();

    let client = client();
    // `[hour 0, hour 2)`, the start written with an offset (its `+` percent-encoded).
    let window = "from=2026-05-28T21%3A26%3A40%2B01%3A00&to=2026-05-28T22:26:40Z";
    assert_eq!(hour(0).to_string(), "2026-05-28T20:26:40Z");
    let answer = client
        .get(format!("{base}/erp/v1/documents?{window}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let books: DocumentList = answer.json().await.unwrap();
    assert_eq!(books.documents, erp.documents_between(hour(0), hour(2)));
    let kinds: Vec<_> = books
        .documents
        .iter()
        .map(|d| (d.document_id.as_str(), d.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("ERP-00000001", DocumentKind::Sale),
            ("ERP-00000002", DocumentKind::Sale),
            ("ERP-00000004", DocumentKind::Return)
        ],
        "the journal's order, the sale at hour 2 left out"
    );
    assert_eq!(books.documents[2].reference.as_deref(), Some("ret-1"));

    let answer = client
        .get(format!("{base}/loyalty/v1/transactions?{window}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let ledger: MovementList = answer.json().await.unwrap();
    assert_eq!(ledger.movements, loyalty.movements(hour(0), hour(2)));
    let points: Vec<_> = ledger.movements.iter().map(|m| (m.kind, m.points)).collect();
    assert_eq!(points, [(PointsKind::Accrual, 10), (PointsKind::Accrual, 20)]);
    let raw: Value = client
        .get(format!(
            "{base}/loyalty/v1/transactions?from=2026-05-28T22:26:40Z&to=2026-05-29T00:00:00Z"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw["movements"][0]["transaction"]["receipt_id"], "r-2");
    assert_eq!(raw["movements"][0]["kind"], "accrual");

    for (path, query, code) in [
        ("/erp/v1/documents", "", "invalid_query"),
        ("/erp/v1/documents", "from=2026-05-28T20:26:40Z", "invalid_query"),
        (
            "/loyalty/v1/transactions",
            "from=last%20week&to=2026-05-28T20:26:40Z",
            "invalid_query",
        ),
        (
            "/loyalty/v1/transactions",
            "from=2026-05-28T20:26:40Z&to=2026-05-28T20:26:40Z",
            "invalid_window",
        ),
        (
            "/erp/v1/documents",
            "from=2026-05-29T00:00:00Z&to=2026-05-28T00:00:00Z",
            "invalid_window",
        ),
    ] {
        let refused = client.get(format!("{base}{path}?{query}")).send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{path}?{query}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["code"], code, "{path}?{query}: {body}");
        assert!(body["message"].is_string());
    }

    let bare = reqwest::Client::new();
    for path in ["/erp/v1/documents", "/loyalty/v1/transactions"] {
        let refused = bare.get(format!("{base}{path}?{window}")).send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(refused.json::<Value>().await.unwrap()["code"], "unauthorized");
    }

    let (erp_requests, loyalty_requests) = (erp.requests(), loyalty.requests());
    for system in ["erp", "loyalty"] {
        client
            .put(format!("{base}/{system}/_admin/faults"))
            .json(&json!({"down": true}))
            .send()
            .await
            .unwrap();
    }
    for path in ["/erp/v1/documents", "/loyalty/v1/transactions"] {
        let down = client.get(format!("{base}{path}?{window}")).send().await.unwrap();
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(down.json::<Value>().await.unwrap()["code"], "unavailable");
    }
    assert_eq!(
        (erp.requests(), loyalty.requests()),
        (erp_requests, loyalty_requests),
        "reads are not counted"
    );
}

/// Pending points over HTTP: `pending_until` on an accrual, `pending` in its answer and the balance's,
/// `pending_cancelled` in a reversal's, and the confirmation route with its refusals.
#[tokio::test]
async fn pending_points_are_accrued_cancelled_and_confirmed_over_http() {
    let (base, _, loyalty) = start().await;
    loyalty.seed_balance("m-1", Points::new(1_000).unwrap());
    let client = client();
    let post = |path: String, key: &'static str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let mut request = serde_json::to_value(accrual("m-1", "r-1", 12_345)).unwrap();
    request["pending_until"] = json!("2026-12-20T10:00:00Z");
    let response = post("/loyalty/v1/accruals".into(), "a1", request).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let accrued: Value = response.json().await.unwrap();
    assert_eq!(
        accrued,
        json!({"loyalty_transaction_id": "LT-00000001", "points": 123, "balance": 1_000, "pending": true})
    );
    let plain = post(
        "/loyalty/v1/accruals".into(),
        "a2",
        serde_json::to_value(accrual("m-1", "r-2", 1_000)).unwrap(),
    )
    .await
    .unwrap()
    .json::<Value>()
    .await
    .unwrap();
    assert_eq!(plain.get("pending"), None, "absent when not pending");
    let balance = |client: reqwest::Client| {
        let url = format!("{base}/loyalty/v1/members/m-1/balance");
        async move {
            client
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        balance(client.clone()).await,
        json!({"member_id": "m-1", "balance": 1_010, "held": 0, "available": 1_010, "pending": 123})
    );

    let mut reversal = serde_json::to_value(adjustment(
        "m-1",
        AdjustmentKind::Reversal,
        "o-1",
        "return:ret-1",
        100,
    ))
    .unwrap();
    reversal["transaction"] = json!({"kind": "receipt", "store_id": "store-1", "receipt_id": "r-1"});
    let adjusted: Value = post("/loyalty/v1/adjustments".into(), "x1", reversal)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        adjusted,
        json!({
            "loyalty_transaction_id": "LT-00000003",
            "delta": -100,
            "balance": 1_010,
            "pending_cancelled": 100
        })
    );

    let confirm = "/loyalty/v1/accruals/LT-00000001/confirm".to_owned();
    let response = post(confirm.clone(), "c1", json!({})).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let confirmed: Value = response.json().await.unwrap();
    assert_eq!(
        confirmed,
        json!({"loyalty_transaction_id": "LT-00000001", "points_confirmed": 23, "balance": 1_033})
    );
    // Again, under the key or another one, with an empty body too: the same figures, moved once.
    assert_eq!(
        post(confirm.clone(), "c1", json!({}))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap(),
        confirmed
    );
    let again = client
        .post(format!("{base}{confirm}"))
        .header("Idempotency-Key", "c2")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK, "an empty body is an empty object");
    assert_eq!(again.json::<Value>().await.unwrap(), confirmed);
    assert_eq!(
        balance(client.clone()).await,
        json!({"member_id": "m-1", "balance": 1_033, "held": 0, "available": 1_033, "pending": 0})
    );

    for (path, key, status, code) in [
        (
            "/loyalty/v1/accruals/LT-00000002/confirm",
            "c3",
            StatusCode::CONFLICT,
            "not_pending",
        ),
        (
            "/loyalty/v1/accruals/LT-00000099/confirm",
            "c4",
            StatusCode::NOT_FOUND,
            "transaction_not_found",
        ),
        (
            "/loyalty/v1/accruals/LT-00000003/confirm",
            "c5",
            StatusCode::NOT_FOUND,
            "transaction_not_found",
        ),
        (
            "/loyalty/v1/accruals/not%20an%20id/confirm",
            "c6",
            StatusCode::NOT_FOUND,
            "transaction_not_found",
        ),
    ] {
        let response = post(path.to_owned(), key, json!({})).await.unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(response.json::<Value>().await.unwrap()["code"], code, "{path}");
    }
    let response = client
        .post(format!("{base}{confirm}"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "missing_idempotency_key"
    );
    let response = post(confirm.clone(), "c7", json!({"points": 5})).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let bare = reqwest::Client::new()
        .post(format!("{base}{confirm}"))
        .header("Idempotency-Key", "c8")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(loyalty.balance("m-1").map(Points::get), Some(1_033));

    let state: SimState = client
        .get(format!("{base}/_admin/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let accrual = &state.loyalty_transactions[0];
    assert_eq!(
        (
            accrual.pending_points.map(Points::get),
            accrual.confirmed_points.map(Points::get)
        ),
        (Some(0), Some(23))
    );
    assert_eq!(state.loyalty_members[0].pending, Points::ZERO);
}
