//! The AWS adapters against moto server through the real SDK. Every test provisions the repository's
//! template under its own name prefix on one shared server, so tests run in parallel without meeting.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use retail_sync_aws::{AwsBackend, ProvisionOptions, provision};
use retail_sync_contracts::envelope::SOURCE_INGEST;
use retail_sync_contracts::{Event, EventType};
use retail_sync_core::idempotency::{Fingerprint, IdempotencyKey, IdempotencyPolicy};
use retail_sync_core::ports::{IdempotencyStore, Outgoing, Publisher, QueueConsumer, SagaStore};
use retail_sync_core::saga::{Saga, SagaId};
use retail_sync_testkit::moto::MotoServer;
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

/// The state ports' contract, as every backend keeps it (`retail_sync_core::conformance`), on DynamoDB.
mod conformance {
    async fn store() -> (retail_sync_aws::AwsBackend, ()) {
        (super::backend().await, ())
    }

    retail_sync_testkit::conformance_tests!(store);
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
    let stranger = (
        "other.system".to_owned(),
        "SaleCompleted".to_owned(),
        detail.clone(),
    );
    // A workflow source on the channel bus reaches no step: the two zones are two buses.
    let posing = (
        SOURCE_INGEST.to_owned(),
        "SaleCompleted".to_owned(),
        detail.clone(),
    );
    let ids = aws
        .put_channel_events(&[channel.clone(), stranger, posing])
        .await
        .unwrap();
    assert_eq!(ids.len(), 3);
    // And a channel's event on the internal bus does not reach ingest.
    aws.put_internal_events(&[channel]).await.unwrap();

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

/// Every DLQ of a report is peeked at once: each answer lands with its own queue, in the order asked,
/// the empty ones included; and a peek that fails fails the whole read.
#[tokio::test]
async fn dead_letter_queues_peeked_at_once_keep_each_queues_messages() {
    let aws = backend().await;
    for (queue, body) in [
        ("AccrueLoyaltyDLQ", "a1"),
        ("IngestDLQ", "i1"),
        ("AccrueLoyaltyDLQ", "a2"),
    ] {
        aws.send_raw(queue, body).await.unwrap();
    }
    let peeked = aws
        .dlqs_messages(&["IngestDLQ", "CompensateDLQ", "AccrueLoyaltyDLQ"], 1000)
        .await
        .unwrap();
    let bodies: Vec<Vec<&str>> = peeked
        .iter()
        .map(|messages| {
            let mut bodies: Vec<&str> = messages.iter().map(|m| m.body.as_str()).collect();
            bodies.sort_unstable();
            bodies
        })
        .collect();
    assert_eq!(bodies, [vec!["i1"], vec![], vec!["a1", "a2"]]);
    assert!(peeked[2].iter().all(|m| m.queue == "AccrueLoyaltyDLQ"));
    // Peeked, not taken.
    assert_eq!(aws.queue_depth("AccrueLoyaltyDLQ").await.unwrap(), (2, 0));
    assert!(
        aws.dlqs_messages(&["IngestDLQ", "NoSuchDLQ"], 1000)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn provisioning_names_everything_by_prefix_and_can_run_again() {
    let server = MotoServer::shared();
    let clients = server.clients().await;
    let options = ProvisionOptions::unique();
    let first = provision(&clients, &template(), &options).await.unwrap();
    assert_eq!(first.saga_table, options.name("SagaTable"));
    assert_eq!(first.event_bus_name, options.name("InternalBus"));
    assert_eq!(
        first.channel_bus_name.as_deref(),
        Some(options.name("ChannelBus").as_str())
    );
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
    let mut s = saga("receipt:store-1:r-9", t0());
    assert_eq!(aws.create(&s).await.unwrap(), None);
    s.version = 2;
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
    if std::env::var(retail_sync_testkit::moto::ENDPOINT_ENV).is_ok() {
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

/// The reconciliation's reports: written and read back in a bucket (path-style on the emulator); a
/// key never written is `None`, and a bucket that does not exist is an error that names S3.
#[tokio::test]
async fn reports_are_kept_in_the_report_bucket() {
    use retail_sync_aws::ReportBucket;
    let moto = MotoServer::shared();
    let sdk = moto.sdk_config().await;
    let name = format!("reports-{}", jiff::Timestamp::now().as_nanosecond());
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket().bucket(&name).send().await.unwrap();
    let bucket = ReportBucket::new(&sdk, name.clone(), true);
    let key = "reconciliation/2026-11-21T00:00:00Z_2026-11-22T00:00:00Z.json";
    bucket
        .put(key, br#"{"report_version":1}"#.to_vec(), "application/json")
        .await
        .unwrap();
    assert_eq!(
        bucket.get(key).await.unwrap().unwrap(),
        br#"{"report_version":1}"#.to_vec()
    );
    assert_eq!(bucket.get("reconciliation/none.json").await.unwrap(), None);
    let missing = ReportBucket::new(&sdk, format!("{name}-missing"), true);
    let e = missing
        .put(key, b"{}".to_vec(), "application/json")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("s3"), "{e}");
}

/// A batch read of sagas is one `BatchGetItem` (strongly consistent) for up to 100 ids, billed as the
/// same consistent reads one by one would be: a unit per key asked for, a missing one too.
#[tokio::test]
async fn a_batch_read_of_sagas_is_one_request_billed_as_consistent_reads() {
    let moto = MotoServer::shared();
    let meter = retail_sync_aws::BillingMeter::new();
    let clients = retail_sync_aws::AwsClients::metered(&moto.sdk_config().await, &meter);
    let settings = provision(&clients, &template(), &ProvisionOptions::unique())
        .await
        .unwrap();
    let backend = AwsBackend::new(&clients, settings);
    let mut ids = Vec::new();
    for n in 0..3 {
        let s = saga(&format!("receipt:store-044:r-{n}"), t0());
        backend.create(&s).await.unwrap();
        ids.push(s.id);
    }
    ids.push(SagaId::from_stored("receipt:store-044:never-created".into()));
    clients.counter.reset();
    let reads_before = meter.snapshot().read_units;

    let found = backend.load_many(&ids).await.unwrap();
    assert_eq!(found.len(), 3);
    assert_eq!(
        clients.counter.snapshot(),
        std::collections::BTreeMap::from([("dynamodb:BatchGetItem".to_owned(), 1)])
    );
    assert_eq!(meter.snapshot().read_units - reads_before, 4.0);
    // The same reads one by one: as many units, four requests.
    for id in &ids {
        backend.load(id).await.unwrap();
    }
    assert_eq!(meter.snapshot().read_units - reads_before, 8.0);
    assert_eq!(clients.counter.snapshot()["dynamodb:GetItem"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_call_reads_as_the_services_answer_not_the_sdks_service_error() {
    let moto = MotoServer::shared();
    let clients = retail_sync_aws::AwsClients::new(&moto.sdk_config().await);
    let mut settings = provision(&clients, &template(), &ProvisionOptions::unique())
        .await
        .unwrap();
    settings.saga_table = "no-such-table".to_owned();
    let backend = AwsBackend::new(&clients, settings);
    let e = backend
        .load(&SagaId::from_stored("receipt:store-044:r-1".into()))
        .await
        .unwrap_err();
    assert!(e.is_retryable());
    let text = e.to_string();
    assert!(
        text.starts_with("dynamodb unavailable: ResourceNotFoundException: "),
        "{text}"
    );
    assert!(text.contains("(request id "), "{text}");
}

/// The emulator keeps DynamoDB's atomicity: a transaction that is cancelled erases nothing that other
/// requests wrote meanwhile. Plain `moto_server` restores, on a cancelled TransactWriteItems, a copy of
/// each table taken when the transaction began, so acknowledged saga writes made concurrently vanish
/// (`scripts/moto_server.py`, which the test kit starts, applies DynamoDB requests one at a time). Here
/// writers append to one saga under its version while transactions at a stale version keep being
/// cancelled; every acknowledged write must be in the saga at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_transactions_erase_no_concurrent_saga_write() {
    use retail_sync_core::error::Error;
    use retail_sync_core::saga::StepOutcome;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let aws = Arc::new(backend().await);
    // Other sagas in the table: moto copies the whole table when a transaction begins, so the copy
    // takes long enough for concurrent writes to land in it.
    for i in 0..300 {
        aws.create(&saga(&format!("receipt:store-1:r-other-{i}"), t0()))
            .await
            .unwrap();
    }
    let id = "receipt:store-1:r-atomic";
    aws.create(&saga(id, t0())).await.unwrap();
    let done = Arc::new(AtomicBool::new(false));

    let cancelling: Vec<_> = (0..2)
        .map(|_| {
            let (aws, done) = (aws.clone(), done.clone());
            tokio::spawn(async move {
                let policy = claim_policy();
                let claim = policy.in_progress(key("r-atomic"), Fingerprint::of(&1), t0());
                let mut stale = saga(id, t0());
                stale.version = 1_000;
                let mut n = 0;
                while !done.load(Ordering::Relaxed) {
                    let completion = policy.completed(&claim, json!(null), t0());
                    match aws.save(&stale, Some(&completion)).await {
                        Err(Error::Conflict { .. }) => n += 1,
                        other => panic!("a save at a stale version must conflict: {other:?}"),
                    }
                }
                n
            })
        })
        .collect();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let aws = aws.clone();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..40 {
                    let text = format!("writer {w} write {i}");
                    // The steps' versioned write; its own attempts can all meet a writer, so again.
                    let sid = SagaId::from_stored(id.to_owned());
                    loop {
                        let record = |s: &mut Saga| s.record("test", StepOutcome::Done, text.clone(), t0());
                        match retail_sync_core::saga::update(&*aws, &sid, None, record).await {
                            Ok(_) => break,
                            Err(Error::Conflict { .. }) => continue,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    acknowledged.push(text);
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    done.store(true, Ordering::Relaxed);
    let mut cancellations = 0;
    for c in cancelling {
        cancellations += c.await.unwrap();
    }
    assert!(cancellations > 0, "no transaction was cancelled meanwhile");

    let stored = aws
        .load(&SagaId::from_stored(id.to_owned()))
        .await
        .unwrap()
        .unwrap();
    let kept: std::collections::BTreeSet<&str> = stored.steps.iter().map(|e| e.message.as_str()).collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|t| !kept.contains(t.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost across {cancellations} cancelled transactions: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
    assert_eq!(stored.version, 1 + acknowledged.len() as u64);
}
