//! The AWS adapters against moto server through the real SDK. Every test provisions the repository's
//! template under its own name prefix on one shared server, so tests run in parallel without meeting.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use retail_sync_aws::moto::MotoServer;
use retail_sync_aws::{AwsBackend, ProvisionOptions, provision};
use retail_sync_contracts::envelope::SOURCE_INGEST;
use retail_sync_contracts::events::ReasonCode;
use retail_sync_contracts::{Event, EventType};
use retail_sync_core::Error;
use retail_sync_core::idempotency::{Fingerprint, IdempotencyKey, IdempotencyPolicy, RecordState};
use retail_sync_core::ports::{
    IdempotencyStore, Outgoing, Publisher, QuarantineItem, QuarantineStore, QueueConsumer, SagaStore,
};
use retail_sync_core::saga::{Saga, SagaId, StepOutcome};
use retail_sync_topology::Topology;

fn template() -> Topology {
    Topology::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../infra/template.yaml"
    )))
    .unwrap()
}

async fn backend_with(options: ProvisionOptions) -> AwsBackend {
    MotoServer::shared().backend(&template(), &options).await
}

async fn backend() -> AwsBackend {
    backend_with(ProvisionOptions::unique()).await
}

fn sample(name: &str) -> Value {
    let path = format!("{}/../../events/samples/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn sale_event() -> Event {
    let detail = sample("SaleCompleted")["detail"].clone();
    Event::from_detail(EventType::from_name("SaleCompleted").unwrap(), detail).unwrap()
}

fn saga(id: &str, now: Timestamp) -> Saga {
    Saga::start(SagaId::from_stored(id.to_owned()), &sale_event(), now)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Now, with a sub-millisecond part, so the exact-millisecond conditions are exercised.
fn t0() -> Timestamp {
    Timestamp::from_nanosecond(Timestamp::now().as_millisecond() as i128 * 1_000_000 + 456_789).unwrap()
}

fn claim_policy() -> IdempotencyPolicy {
    IdempotencyPolicy {
        lease: secs(60),
        retention: secs(35 * 24 * 3600),
    }
}

fn key(name: &str) -> IdempotencyKey {
    IdempotencyKey::for_step(&format!("receipt:store-1:{name}"), "post-sale-to-erp")
}

#[tokio::test]
async fn the_first_claim_proceeds_and_a_second_sees_it_in_progress() {
    let aws = backend().await;
    let policy = claim_policy();
    let fp = Fingerprint::of(&json!({"sale": 1}));
    let first = policy.in_progress(key("r-1"), fp.clone(), t0());
    assert_eq!(aws.try_insert(&first, t0()).await.unwrap(), None);

    let later = t0() + secs(1);
    let second = policy.in_progress(key("r-1"), fp, later);
    assert_eq!(aws.try_insert(&second, later).await.unwrap(), Some(first.clone()));
    assert_eq!(
        aws.get(&key("r-1")).await.unwrap(),
        Some(first),
        "the blocked insert wrote nothing"
    );
    assert_eq!(aws.get(&key("r-other")).await.unwrap(), None);
}

#[tokio::test]
async fn a_lapsed_lease_is_claimed_again_exactly_when_is_live_says_so() {
    let aws = backend().await;
    let policy = claim_policy();
    let fp = Fingerprint::of(&1);
    let crashed = policy.in_progress(key("r-2"), fp.clone(), t0());
    let RecordState::InProgress { lease_until } = crashed.state else {
        unreachable!()
    };
    aws.try_insert(&crashed, t0()).await.unwrap();

    let just_before = lease_until - Duration::from_millis(1);
    assert!(crashed.is_live(just_before));
    let retry = policy.in_progress(key("r-2"), fp.clone(), just_before);
    assert_eq!(
        aws.try_insert(&retry, just_before).await.unwrap(),
        Some(crashed.clone())
    );

    assert!(!crashed.is_live(lease_until));
    let takeover = policy.in_progress(key("r-2"), fp, lease_until);
    assert_eq!(aws.try_insert(&takeover, lease_until).await.unwrap(), None);
    assert_eq!(aws.get(&key("r-2")).await.unwrap(), Some(takeover));
}

#[tokio::test]
async fn a_completed_record_is_returned_until_its_retention_ends() {
    let aws = backend().await;
    let policy = claim_policy();
    let fp = Fingerprint::of(&2);
    let claim = policy.in_progress(key("r-3"), fp.clone(), t0());
    let done = policy.completed(&claim, json!({"document_id": "D-1"}), t0());
    assert_eq!(aws.try_insert(&done, t0()).await.unwrap(), None);

    // Long after the lease, a completed record still blocks: the effect is done.
    let redelivery_at = t0() + secs(3600);
    let redelivery = policy.in_progress(key("r-3"), fp.clone(), redelivery_at);
    assert_eq!(
        aws.try_insert(&redelivery, redelivery_at).await.unwrap(),
        Some(done.clone())
    );

    // Past retention the record no longer counts, whether or not TTL has deleted it yet.
    let expired_at = done.expires_at;
    assert!(!done.is_live(expired_at));
    let fresh = policy.in_progress(key("r-3"), fp, expired_at);
    assert_eq!(aws.try_insert(&fresh, expired_at).await.unwrap(), None);
}

#[tokio::test]
async fn release_deletes_only_its_own_in_progress_claim() {
    let aws = backend().await;
    let policy = claim_policy();
    let fp = Fingerprint::of(&3);
    let mine = policy.in_progress(key("r-4"), fp.clone(), t0());
    aws.try_insert(&mine, t0()).await.unwrap();
    let later = t0() + secs(61);
    let theirs = policy.in_progress(key("r-4"), fp.clone(), later);
    assert_eq!(
        aws.try_insert(&theirs, later).await.unwrap(),
        None,
        "our lease lapsed; they took over"
    );

    aws.release(&mine).await.unwrap();
    assert_eq!(
        aws.get(&key("r-4")).await.unwrap(),
        Some(theirs.clone()),
        "their claim survives our release"
    );

    let done = policy.completed(&theirs, json!(null), later);
    aws.save(&saga_in(&aws, "receipt:store-1:r-4").await, Some(&done))
        .await
        .unwrap();
    aws.release(&theirs).await.unwrap();
    assert_eq!(
        aws.get(&key("r-4")).await.unwrap(),
        Some(done.clone()),
        "a completion survives a late release"
    );
    aws.release(&done).await.unwrap();
    assert_eq!(
        aws.get(&key("r-4")).await.unwrap(),
        Some(done),
        "releasing a completed record does nothing"
    );

    let other = policy.in_progress(key("r-5"), fp, t0());
    aws.try_insert(&other, t0()).await.unwrap();
    aws.release(&other).await.unwrap();
    assert_eq!(aws.get(&key("r-5")).await.unwrap(), None);
}

/// A saga created at version 1 and advanced to version 2, ready to be saved as the next version.
async fn saga_in(aws: &AwsBackend, id: &str) -> Saga {
    let mut s = saga(id, t0());
    assert_eq!(aws.create(&s).await.unwrap(), None);
    s.version = 2;
    s
}

#[tokio::test]
async fn creating_a_saga_twice_returns_the_existing_one() {
    let aws = backend().await;
    let original = saga("receipt:store-042:r-000123", t0());
    assert_eq!(aws.create(&original).await.unwrap(), None);

    let mut duplicate = original.clone();
    duplicate.record("ingest", StepOutcome::Accepted, "again", t0() + secs(1));
    assert_eq!(aws.create(&duplicate).await.unwrap(), Some(original.clone()));
    assert_eq!(aws.load(&original.id).await.unwrap(), Some(original));
    assert_eq!(
        aws.load(&SagaId::from_stored("order:none".into())).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn a_save_over_a_stale_version_conflicts_and_writes_no_completion() {
    let aws = backend().await;
    let policy = claim_policy();
    let id = SagaId::from_stored("receipt:store-042:r-000123".into());
    let v1 = saga(id.as_str(), t0());
    aws.create(&v1).await.unwrap();

    let claim = policy.in_progress(key("erp"), Fingerprint::of(&4), t0());
    let done = policy.completed(&claim, json!({"document_id": "D-9"}), t0());
    let mut v2 = v1.clone();
    v2.record("post-sale-to-erp", StepOutcome::Done, "posted", t0());
    v2.version = 2;
    aws.save(&v2, Some(&done)).await.unwrap();
    assert_eq!(aws.get(&done.key).await.unwrap(), Some(done));

    // A concurrent delivery that also read version 1 loses, and its completion is not written.
    let rival_claim = policy.in_progress(key("loyalty"), Fingerprint::of(&5), t0());
    let rival_done = policy.completed(&rival_claim, json!({"points": 10}), t0());
    let mut rival = v1.clone();
    rival.record("accrue-loyalty", StepOutcome::Done, "accrued", t0());
    rival.version = 2;
    let e = aws.save(&rival, Some(&rival_done)).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert_eq!(
        aws.get(&rival_done.key).await.unwrap(),
        None,
        "the transaction wrote nothing"
    );

    // Without a completion: a plain conditional write.
    let e = aws.save(&rival, None).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    let mut v3 = v2.clone();
    v3.version = 3;
    aws.save(&v3, None).await.unwrap();
    assert_eq!(aws.load(&id).await.unwrap(), Some(v3));

    // Versions start at 1 by creation; "saving" a version 1 saga never overwrites one.
    let e = aws.save(&v1, None).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
}

#[tokio::test]
async fn a_saga_is_found_by_its_correlation_id() {
    let aws = backend().await;
    let s = saga("receipt:store-042:r-000123", t0());
    aws.create(&s).await.unwrap();
    aws.create(&saga("order:o-1", t0())).await.ok();
    let found = aws.find_by_correlation(&s.correlation_id).await.unwrap();
    assert!(found.is_some_and(|f| f.correlation_id == s.correlation_id));
    let unknown = retail_sync_contracts::values::CorrelationId::parse("nobody").unwrap();
    assert_eq!(aws.find_by_correlation(&unknown).await.unwrap(), None);
}

fn quarantined(id: &str, received_at: Timestamp, message: &str) -> QuarantineItem {
    QuarantineItem {
        id: id.to_owned(),
        received_at,
        step: "ingest".into(),
        rejection: retail_sync_contracts::Rejection {
            reason: ReasonCode::InvalidJson,
            message: message.to_owned(),
            findings: vec![],
            detail_type: None,
            event_id: None,
            correlation_id: None,
        },
        body: "{not json".into(),
        body_truncated: false,
    }
}

#[tokio::test]
async fn quarantine_lists_oldest_first_and_a_redelivery_overwrites() {
    let aws = backend().await;
    let base = t0();
    aws.put(&quarantined("m-b", base + secs(2), "second"))
        .await
        .unwrap();
    aws.put(&quarantined("m-a", base + secs(1), "first"))
        .await
        .unwrap();
    aws.put(&quarantined("m-c", base + secs(2), "third"))
        .await
        .unwrap();
    aws.put(&quarantined("m-a", base + secs(1), "first, redelivered"))
        .await
        .unwrap();

    let all = aws.list(10).await.unwrap();
    let ids: Vec<_> = all.iter().map(|q| q.id.as_str()).collect();
    assert_eq!(ids, ["m-a", "m-b", "m-c"]);
    assert_eq!(all[0].rejection.message, "first, redelivered");
    assert_eq!(aws.list(2).await.unwrap().len(), 2);
}

fn envelope_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn the_template_rules_route_published_events_to_the_step_queues() {
    let aws = backend().await;
    let accepted = Outgoing {
        source: SOURCE_INGEST,
        event: sale_event(),
    };
    assert!(
        aws.publish(std::slice::from_ref(&accepted))
            .await
            .iter()
            .all(Result::is_ok)
    );

    let detail = sample("SaleCompleted")["detail"].clone();
    let channel = (
        "retail.pos".to_owned(),
        "SaleCompleted".to_owned(),
        detail.clone(),
    );
    let stranger = ("other.system".to_owned(), "SaleCompleted".to_owned(), detail);
    let ids = aws.put_channel_events(&[channel, stranger]).await.unwrap();
    assert_eq!(ids.len(), 2);

    let to_erp = aws.receive("PostSaleToErpQueue", 10).await.unwrap();
    assert_eq!(to_erp.len(), 1);
    let event = envelope_of(&to_erp[0].message.body);
    assert_eq!(
        (event["source"].as_str(), event["detail-type"].as_str()),
        (Some(SOURCE_INGEST), Some("SaleCompleted"))
    );
    assert_eq!(event["detail"], serde_json::to_value(&accepted.event).unwrap());

    let to_ingest = aws.receive("IngestQueue", 10).await.unwrap();
    assert_eq!(to_ingest.len(), 1, "only the retail.* event goes to ingest");
    assert_eq!(envelope_of(&to_ingest[0].message.body)["source"], "retail.pos");
    assert!(aws.receive("AccrueLoyaltyQueue", 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn messages_are_received_in_batches_of_at_most_ten_and_deleted() {
    let aws = backend().await;
    for i in 0..12 {
        aws.send_raw("IngestQueue", &format!("{{\"n\":{i}}}"))
            .await
            .unwrap();
    }
    assert_eq!(aws.queue_depth("IngestQueue").await.unwrap(), (12, 0));

    let mut received = aws.receive("IngestQueue", 25).await.unwrap();
    assert_eq!(received.len(), 10);
    received.extend(aws.receive("IngestQueue", 25).await.unwrap());
    assert_eq!(received.len(), 12);
    assert!(received.iter().all(|r| r.message.receive_count == 1));
    assert_eq!(aws.queue_depth("IngestQueue").await.unwrap(), (0, 12));

    let receipts: Vec<String> = received.iter().map(|r| r.receipt.clone()).collect();
    aws.delete("IngestQueue", &receipts).await.unwrap();
    assert_eq!(aws.queue_depth("IngestQueue").await.unwrap(), (0, 0));
    assert!(aws.receive("IngestQueue", 0).await.unwrap().is_empty());
    assert!(aws.receive("NoSuchQueue", 1).await.is_err());
}

#[tokio::test]
async fn a_message_received_more_than_max_receive_count_times_lands_in_the_dlq_and_redrives() {
    let aws = backend_with(ProvisionOptions::unique().with_visibility_timeout(Duration::ZERO)).await;
    let (_, max_receives) = template().queues["IngestQueue"].redrive.clone().unwrap();
    let id = aws.send_raw("IngestQueue", "poison").await.unwrap();

    for attempt in 1..=max_receives {
        let got = aws.receive("IngestQueue", 10).await.unwrap();
        assert_eq!(got.len(), 1, "delivery {attempt}");
        assert_eq!(
            (got[0].message.id.as_str(), got[0].message.receive_count),
            (id.as_str(), attempt)
        );
    }
    assert!(
        aws.receive("IngestQueue", 10).await.unwrap().is_empty(),
        "received maxReceiveCount times: dead-lettered"
    );

    let dead = aws.dlq_messages("IngestDLQ", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].body.as_str(), dead[0].queue.as_str()),
        ("poison", "IngestDLQ")
    );

    assert_eq!(aws.redrive("IngestDLQ", "IngestQueue").await.unwrap(), 1);
    assert_eq!(aws.queue_depth("IngestDLQ").await.unwrap(), (0, 0));
    let again = aws.receive("IngestQueue", 10).await.unwrap();
    assert_eq!(
        (again[0].message.body.as_str(), again[0].message.receive_count),
        ("poison", 1)
    );
}

#[tokio::test]
async fn provisioning_names_everything_by_prefix_and_can_run_again() {
    let server = MotoServer::shared();
    let clients = server.clients().await;
    let options = ProvisionOptions::unique();
    let first = provision(&clients, &template(), &options).await.unwrap();
    assert_eq!(first.saga_table, options.name("SagaTable"));
    assert_eq!(first.event_bus_name, options.name("EventBus"));
    assert_eq!(first.endpoint_url.as_deref(), Some(server.endpoint()));
    assert_eq!(
        first.queue_urls.keys().collect::<Vec<_>>(),
        template().queues.keys().collect::<Vec<_>>()
    );
    assert!(first.queue_urls["IngestDLQ"].ends_with(&options.name("IngestDLQ")));
    assert_eq!(provision(&clients, &template(), &options).await.unwrap(), first);
}

#[tokio::test]
async fn the_request_counter_counts_each_call_by_service_and_operation() {
    let aws = backend().await;
    let counter = aws.counter().clone();
    counter.reset();
    let policy = claim_policy();
    let claim = policy.in_progress(key("r-9"), Fingerprint::of(&9), t0());
    aws.try_insert(&claim, t0()).await.unwrap();
    aws.try_insert(&claim, t0()).await.unwrap();
    aws.get(&claim.key).await.unwrap();
    let s = saga_in(&aws, "receipt:store-1:r-9").await;
    aws.save(&s, Some(&policy.completed(&claim, json!(null), t0())))
        .await
        .unwrap();
    aws.find_by_correlation(&s.correlation_id).await.unwrap();
    let outgoing = vec![
        Outgoing {
            source: SOURCE_INGEST,
            event: sale_event()
        };
        12
    ];
    aws.publish(&outgoing).await;
    let received = aws.receive("PostSaleToErpQueue", 10).await.unwrap();
    let receipts: Vec<_> = received.iter().map(|r| r.receipt.clone()).collect();
    aws.delete("PostSaleToErpQueue", &receipts).await.unwrap();

    let snapshot = counter.snapshot();
    let expected = [
        ("dynamodb:PutItem", 3), // two claims (the second blocked, its record returned with the failure), one create
        ("dynamodb:GetItem", 2), // get, and the saga read after the index query
        ("dynamodb:TransactWriteItems", 1),
        ("dynamodb:Query", 1),
        ("eventbridge:PutEvents", 2), // 12 events in batches of 10
        ("sqs:ReceiveMessage", 1),
        ("sqs:DeleteMessageBatch", 1),
    ];
    let expected: std::collections::BTreeMap<String, u64> =
        expected.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    assert_eq!(snapshot, expected);
    assert_eq!(counter.total(), 11);
}

#[test]
fn a_started_server_stops_when_dropped() {
    if std::env::var(retail_sync_aws::moto::ENDPOINT_ENV).is_ok() {
        return; // an external server is not ours to stop
    }
    let server = MotoServer::start();
    let addr: std::net::SocketAddr = server.endpoint().trim_start_matches("http://").parse().unwrap();
    assert!(std::net::TcpStream::connect(addr).is_ok());
    drop(server);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "moto still listens on {addr}"
    );
}
