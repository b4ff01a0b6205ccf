//! Shopify and Adobe Commerce in their own words end to end: the native twin of the canonical orders day
//! (`events/native/orders-day.jsonl`: web-1001/1003/1005 as Shopify webhooks from its partner event
//! source, web-1002/1006 as Adobe Commerce I/O events, the rest as the canonical day has it) through the
//! mappers, ingest and the workflow gives the canonical day's books — on the embedded backend, on moto
//! server, and with every event delivered twice in a shuffled order. What cannot be mapped is
//! quarantined with its native payload; a follow-up whose order never comes ends in the mapper's DLQ.

#[path = "books.rs"]
mod books;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use retail_sync_aws::ProvisionOptions;
use retail_sync_cli::backends::Backend;
use retail_sync_cli::input::{Input, read_inputs};
use retail_sync_cli::local::{LocalOptions, LocalSystem, Simulators, open_embedded};
use retail_sync_core::ports::QuarantineStore;
use retail_sync_testkit::moto::MotoServer;
use retail_sync_tests::workspace;
use retail_sync_topology::Topology;

use books::books;

fn canonical_day() -> Vec<Input> {
    read_inputs(&workspace().join("events/streams/orders-day.jsonl")).unwrap()
}

fn native_day() -> Vec<Input> {
    read_inputs(&workspace().join("events/native/orders-day.jsonl")).unwrap()
}

fn embedded(dir: &tempfile::TempDir) -> (LocalSystem<retail_sync_embedded::Embedded>, Simulators) {
    let mut options = LocalOptions::new(
        workspace().join("infra/template.yaml"),
        dir.path().join("state.db"),
    );
    options.visibility_timeout = Duration::from_millis(100);
    let sims = Simulators::with_sample_members();
    (open_embedded(&options, sims.clone()).unwrap(), sims)
}

async fn embedded_books(inputs: &[Input]) -> Value {
    embedded_run(inputs).await.0
}

/// The books and what the platforms heard back.
async fn embedded_run(inputs: &[Input]) -> (Value, Value) {
    let dir = tempfile::tempdir().unwrap();
    let (system, sims) = embedded(&dir);
    let books = books(&system, &sims, inputs).await;
    (books, outcomes(&sims))
}

/// Per platform order, the outcomes it holds: Shopify's `retail_sync` metafields, Adobe Commerce's
/// comments by their marker (sorted) — each listed as often as it is there.
fn outcomes(sims: &Simulators) -> Value {
    let shopify: std::collections::BTreeMap<String, Vec<String>> = sims
        .shopify
        .metafields()
        .into_iter()
        .map(|(order, fields)| (order, fields.into_keys().collect()))
        .collect();
    let adobe: std::collections::BTreeMap<String, Vec<String>> = sims
        .adobe_commerce
        .comments()
        .into_iter()
        .map(|(order, comments)| {
            // Sorted: comments come in the order they were posted, which the arrival order decides.
            let mut markers: Vec<String> = comments
                .iter()
                .filter_map(|c| Some(c.split_once("[retail-sync ")?.1.trim_end_matches(']').to_owned()))
                .collect();
            markers.sort();
            (order, markers)
        })
        .collect();
    serde_json::json!({"shopify": shopify, "adobe-commerce": adobe})
}

/// What the native day tells the platforms: per shipment the points earned, per refund the points
/// reversed, per cancellation the points given back — on the platform's own order ids.
fn expected_outcomes() -> Value {
    serde_json::json!({
        "shopify": {
            "1001": ["retail_sync.earned-5305427689701", "retail_sync.earned-5305427689702",
                     "retail_sync.returned-shopify-refund-890088186047801"],
            "1003": ["retail_sync.cancelled-order-cancelled"],
            "1005": ["retail_sync.cancelled-refund-890088186047805", "retail_sync.earned-5305427689705"]
        },
        "adobe-commerce": {
            "1002": ["earned-2002", "returned-adobe-creditmemo-3021", "returned-adobe-creditmemo-3022"],
            "1006": ["cancelled-order-cancelled", "earned-2006"]
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_day_gives_the_canonical_days_books() {
    let expected = embedded_books(&canonical_day()).await;
    assert_eq!(expected["sagas"].as_object().unwrap().len(), 7, "{expected}");
    let dir = tempfile::tempdir().unwrap();
    let (system, sims) = embedded(&dir);
    let got = books(&system, &sims, &native_day()).await;
    assert_eq!(got, expected);
    // Each outcome told once.
    assert_eq!(outcomes(&sims), expected_outcomes());
    let summary = &sims.shopify.metafields()["1001"]["retail_sync.returned-shopify-refund-890088186047801"];
    assert_eq!(summary["points"], 23, "{summary}");
    // What the return itself gave back depends on whether its refund (`rfd-1001`, 100 points) was decided
    // first; the books above, which count both, do not.
    let given_back = summary["points_given_back"].as_i64();
    assert!(matches!(given_back, Some(0 | 68)), "{summary}");
    // The platforms' orders went through their mappers, and ingest saw what they mapped.
    let metrics = system.metrics.snapshot();
    let mapped = |topic: &str| {
        metrics
            .iter()
            .filter(|(k, _)| k.starts_with("channel_events_mapped") && k.contains(topic))
            .map(|(_, v)| *v)
            .sum::<u64>()
    };
    assert!(
        mapped("orders/create") >= 3 && mapped("refunds/create") >= 2,
        "{metrics:?}"
    );
    assert!(
        mapped("com.adobe.commerce.observer.sales_order_creditmemo_save_after") >= 2,
        "{metrics:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_moto_too() {
    let expected = embedded_books(&canonical_day()).await;
    let topology = Topology::load(&workspace().join("infra/template.yaml")).unwrap();
    let options = ProvisionOptions::unique().with_visibility_timeout(Duration::from_secs(1));
    let backend = Arc::new(MotoServer::shared().backend(&topology, &options).await);
    let sims = Simulators::with_sample_members();
    let system = LocalSystem::new(backend, topology, sims.clone()).unwrap();
    assert_eq!(books(&system, &sims, &native_day()).await, expected);
}

/// Every native event twice, the lot shuffled (checkout calls kept before the orders that use their
/// holds, as a checkout precedes its order): the same books, and every outcome told once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_native_event_twice_in_any_order_gives_the_same_books() {
    let expected = embedded_books(&canonical_day()).await;
    let (api, events): (Vec<Input>, Vec<Input>) =
        native_day().into_iter().partition(|i| matches!(i, Input::Api(_)));
    for seed in [3_u64, 11] {
        let twice = retail_sync_tests::twice_shuffled(&events, seed);
        let inputs: Vec<Input> = api.iter().cloned().chain(twice).collect();
        let (books, told) = embedded_run(&inputs).await;
        assert_eq!(books, expected, "seed {seed}");
        assert_eq!(told, expected_outcomes(), "seed {seed}: every outcome told once");
    }
}

fn native(path: &str) -> Value {
    let text = std::fs::read_to_string(workspace().join("events/native").join(path)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn event(v: Value) -> Input {
    Input::Event {
        source: v["source"].as_str().unwrap().to_owned(),
        detail_type: v["detail-type"].as_str().unwrap().to_owned(),
        detail: v["detail"].clone(),
    }
}

/// An order whose product the mapping does not know is quarantined `unmappable` with the native event as
/// it came and the finding; nothing of it is booked. A refund of an order that never arrives waits, then
/// ends in the mapper's DLQ, where an operator finds and redrives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_mapped_is_kept_where_an_operator_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let (system, sims) = embedded(&dir);
    let mut unknown = native("shopify/orders-create.json");
    unknown["detail"]["payload"]["line_items"][0]["variant_id"] = 1.into();
    unknown["detail"]["payload"]["line_items"][0]["sku"] = "".into();
    let orphan = native("shopify/refunds-create.json");
    system.feed(&[event(unknown), event(orphan)]).await.unwrap();
    system.run_until_idle(|_| {}).await.unwrap();

    let quarantine = system.backend.list(usize::MAX).await.unwrap();
    assert_eq!(quarantine.len(), 1, "{quarantine:?}");
    let item = &quarantine[0];
    assert_eq!(item.step, "map-shopify");
    assert_eq!(item.rejection.reason.as_str(), "unmappable");
    assert_eq!(item.rejection.detail_type.as_deref(), Some("orders/create"));
    assert!(
        item.rejection.findings[0].contains("variant 1 has no SKU"),
        "{item:?}"
    );
    let kept: Value = serde_json::from_str(&item.body).unwrap();
    assert_eq!(
        kept["detail"]["payload"]["id"], 1001,
        "the native payload is kept"
    );
    assert!(sims.erp.postings().is_empty() && sims.loyalty.transactions().is_empty());

    let dlq = system
        .topology
        .queues
        .get("MapShopifyQueue")
        .and_then(|q| q.redrive.clone())
        .unwrap()
        .0;
    let dead = system.backend.dead_letters(&dlq).await.unwrap();
    assert_eq!(dead.len(), 1, "the orphan refund, after its receives");
    assert!(dead[0].body.contains("refunds/create"));
}

/// Every unmappable refusal names its problem as a finding, and one read before the event's shop was
/// known to be unmapped is still kept under the event's id: another shop's webhook delivered twice is one
/// entry, as an unknown topic's is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmapped_shop_or_topic_is_one_entry_with_its_finding_however_often_it_comes() {
    let dir = tempfile::tempdir().unwrap();
    let (system, _sims) = embedded(&dir);
    let mut other_shop = native("shopify/orders-create.json");
    other_shop["detail"]["metadata"]["X-Shopify-Shop-Domain"] = "other-shop.myshopify.com".into();
    other_shop["detail"]["metadata"]["X-Shopify-Event-Id"] = "ev-other-shop".into();
    let mut topic = native("shopify/orders-create.json");
    topic["detail"]["metadata"]["X-Shopify-Topic"] = "products/update".into();
    topic["detail"]["metadata"]["X-Shopify-Event-Id"] = "ev-products".into();
    let twice = [other_shop.clone(), other_shop, topic.clone(), topic].map(event);
    system.feed(&twice).await.unwrap();
    system.run_until_idle(|_| {}).await.unwrap();

    let mut kept: Vec<_> = system
        .backend
        .list(usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|q| {
            let r = q.rejection;
            (
                r.event_id.unwrap_or_default(),
                r.detail_type.unwrap_or_default(),
                r.findings,
            )
        })
        .collect();
    kept.sort();
    let ids: Vec<(&str, &str)> = kept.iter().map(|(id, t, _)| (id.as_str(), t.as_str())).collect();
    assert_eq!(
        ids,
        [
            ("orders-create-ev-other-shop", "orders/create"),
            ("products-update-ev-products", "products/update")
        ]
    );
    assert_eq!(
        kept[0].2,
        [
            "X-Shopify-Shop-Domain: shop other-shop.myshopify.com is not one of the mapping's shops \
          (retail-sync-demo.myshopify.com)"
        ]
    );
    assert_eq!(kept[1].2.len(), 1, "{:?}", kept[1].2);
}

/// A Shopify store without the partner source: its signed HTTPS deliveries go through the webhook
/// ingress (the Lambda handler, its secret in Secrets Manager, the channel bus on moto) to the mapper
/// and the workflow. A forged, an altered and a stale delivery are refused with 401 and put nothing on
/// the bus; a redelivery inside the window is absorbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_through_the_ingress_reach_the_books_and_forged_ones_do_not() {
    use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
    use retail_sync_channels::webhook::{DEFAULT_REPLAY_WINDOW, sign_shopify};
    use retail_sync_lambda::webhooks::{Ingress, SigningSecrets, handle};

    let topology = Topology::load(&workspace().join("infra/template.yaml")).unwrap();
    let options = ProvisionOptions::unique().with_visibility_timeout(Duration::from_secs(1));
    let moto = MotoServer::shared();
    let backend = Arc::new(moto.backend(&topology, &options).await);
    let sdk = moto.sdk_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let secret = secrets
        .create_secret()
        .name(format!("shopify-webhooks-{}", uuid::Uuid::now_v7()))
        .secret_string(r#"{"secrets": ["shpss_new", "shpss_old"]}"#)
        .send()
        .await
        .unwrap();
    let clients = moto.clients().await;
    let ingress = Ingress {
        bus: retail_sync_aws::EventBus::channels(clients.eventbridge.clone(), backend.settings()).unwrap(),
        secrets: SigningSecrets::new(secrets, secret.arn().unwrap().to_owned()),
        window: DEFAULT_REPLAY_WINDOW,
    };
    // A delivery as API Gateway hands it over: the sample's payload and headers, triggered now.
    let deliver = |name: &str, secret: &str, triggered: jiff::Timestamp, tamper: bool| {
        let sample = native(name);
        let body = sample["detail"]["payload"].to_string();
        let mut headers = serde_json::Map::new();
        for (k, v) in sample["detail"]["metadata"].as_object().unwrap() {
            headers.insert(k.to_lowercase(), v.clone());
        }
        headers.insert(
            "x-shopify-hmac-sha256".into(),
            sign_shopify(body.as_bytes(), secret).into(),
        );
        headers.insert("x-shopify-triggered-at".into(), triggered.to_string().into());
        let body = if tamper {
            body.replace("129.00", "1.00")
        } else {
            body
        };
        serde_json::from_value::<ApiGatewayV2httpRequest>(serde_json::json!({
            "version": "2.0", "routeKey": "POST /webhooks/shopify", "rawPath": "/webhooks/shopify",
            "headers": headers, "body": body, "isBase64Encoded": false,
            "requestContext": {"http": {"method": "POST", "path": "/webhooks/shopify"}, "stage": "$default"}
        }))
        .unwrap()
    };
    let now = jiff::Timestamp::now();
    let status = |r: aws_lambda_events::apigw::ApiGatewayV2httpResponse| r.status_code;
    let stale = now - jiff::SignedDuration::from_hours(6);
    // Forged (another secret), altered after signing, stale: refused, nothing put on the bus.
    for (secret, when, tamper) in [
        ("shpss_forged", now, false),
        ("shpss_new", now, true),
        ("shpss_new", stale, false),
    ] {
        let delivery = deliver("shopify/orders-create.json", secret, when, tamper);
        assert_eq!(
            status(handle(&ingress, delivery).await),
            401,
            "{secret} {when} {tamper}"
        );
    }
    // Signed with the previous secret during a rotation, delivered twice; then its fulfillment.
    for name in [
        "shopify/orders-create.json",
        "shopify/orders-create.json",
        "shopify/fulfillments-create.json",
    ] {
        assert_eq!(
            status(handle(&ingress, deliver(name, "shpss_old", now, false)).await),
            200,
            "{name}"
        );
    }

    let sims = Simulators::with_sample_members();
    // The order redeems hold H-00000001: make it, as the checkout did.
    let hold = retail_sync_cli::input::parse(
        r#"{"api": {"method": "POST", "path": "/v1/holds", "idempotency_key": "chk-web-1001", "body": {"member_id": "m-3001", "points": 500, "currency": "EUR", "basket_net_minor": 17800}}}"#,
        true,
    );
    let system = LocalSystem::new(backend, topology, sims.clone()).unwrap();
    system.feed(&hold).await.unwrap();
    system.run_until_idle(|_| {}).await.unwrap();
    let sagas = system.backend.all_sagas().await.unwrap();
    assert_eq!(sagas.len(), 1, "one order, whatever was refused or repeated");
    assert_eq!(sagas[0].id.as_str(), "order:web-1001");
    let sales: Vec<_> = sims
        .erp
        .postings()
        .into_iter()
        .filter(|p| p.net_minor.get() == 17800)
        .collect();
    assert_eq!(sales.len(), 1, "booked once, at the signed price");
    assert!(
        sims.loyalty
            .transactions()
            .iter()
            .any(|t| t.member_id.as_str() == "m-3001" && t.points > 0)
    );
}
