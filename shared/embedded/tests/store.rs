//! The embedded backend keeps the AWS semantics the workflows rely on: the state ports' contract
//! (the shared conformance suite: conditional writes, versioned saves atomic with their completion record,
//! quarantine), visibility timeout, receive count → DLQ, TTL, routing by the template's patterns,
//! durability across reopen.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;

use retail_sync_contracts::{Event, EventType};
use retail_sync_core::idempotency::{Fingerprint, IdempotencyKey, IdempotencyPolicy, RecordState};
use retail_sync_core::memory::ManualClock;
use retail_sync_core::ports::{IdempotencyStore, QueueConsumer, SagaStore};
use retail_sync_core::saga::{Saga, SagaId};
use retail_sync_embedded::{Embedded, Topology};

const T0: &str = "2026-11-20T10:00:00Z";

fn open(dir: &Path, clock: Arc<ManualClock>) -> Embedded {
    let template = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
    Embedded::open(
        &dir.join("state.db"),
        Topology::load(Path::new(template)).unwrap(),
        clock,
    )
    .unwrap()
}

/// A store on a manual clock, inside a group when `grouped` (the directory holds its file).
fn opened(grouped: bool) -> (tempfile::TempDir, Arc<ManualClock>, Embedded) {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = open(dir.path(), clock.clone());
    if grouped {
        store.begin_group().unwrap();
    }
    (dir, clock, store)
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0.parse().unwrap()))
}

fn now(c: &ManualClock) -> Timestamp {
    retail_sync_core::ports::Clock::now(c)
}

fn saga() -> Saga {
    let raw = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/samples/SaleCompleted.json"
    ));
    let envelope: serde_json::Value = serde_json::from_str(&raw.unwrap()).unwrap();
    let event = Event::from_detail(EventType::SaleCompleted, envelope["detail"].clone()).unwrap();
    Saga::start(
        SagaId::from_stored("receipt:store-042:r-000123".into()),
        &event,
        T0.parse().unwrap(),
    )
}

/// The state ports' contract, as every backend keeps it (`retail_sync_core::conformance`).
mod conformance {
    async fn store() -> (retail_sync_embedded::Embedded, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (super::open(dir.path(), super::clock()), dir)
    }

    retail_sync_testkit::conformance_tests!(store);
}

/// The same contract inside a group commit, where the steps' saga and idempotency writes are kept in
/// memory until the group commits: every condition is checked against what the group wrote.
mod conformance_in_a_group {
    async fn store() -> (retail_sync_embedded::Embedded, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = super::open(dir.path(), super::clock());
        store.begin_group().unwrap();
        (store, dir)
    }

    retail_sync_testkit::conformance_tests!(store);
}

/// A group's saga and idempotency writes reach the file when it commits, all of them; a process that
/// ends before (a crash, a kill) leaves none, and the tables' own readers see them within the group.
#[tokio::test]
async fn a_groups_writes_reach_the_file_when_it_commits_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let policy = IdempotencyPolicy::default();
    let key = IdempotencyKey::for_step("receipt:store-042:r-000123", "post-sale-to-erp");
    let claim = policy.in_progress(key.clone(), Fingerprint::of(&1), now(&clock));
    let done = policy.completed(&claim, json!({"posted": true}), now(&clock));
    let write = async |store: Embedded| {
        store.begin_group().unwrap();
        assert_eq!(store.create(&saga()).await.unwrap(), None);
        let mut saga = store.load(&saga().id).await.unwrap().unwrap();
        assert_eq!(store.try_insert(&claim, now(&clock)).await.unwrap(), None);
        saga.version += 1;
        store.save(&saga, Some(&done)).await.unwrap();
        // The scanning readers see the group's writes.
        assert_eq!(store.sagas().unwrap(), vec![saga.clone()]);
        assert_eq!(store.idempotency_items().unwrap().len(), 1);
        (store, saga)
    };

    // Never committed: gone, as after a kill.
    let (store, _) = write(open(dir.path(), clock.clone())).await;
    drop(store);
    let store = open(dir.path(), clock.clone());
    assert_eq!(store.sagas().unwrap(), vec![]);
    assert_eq!(store.get(&key).await.unwrap(), None);

    let (store, saga) = write(store).await;
    store.commit_group().unwrap();
    drop(store);
    let store = open(dir.path(), clock.clone());
    assert_eq!(store.load(&saga.id).await.unwrap(), Some(saga.clone()));
    assert_eq!(store.sagas().unwrap(), vec![saga.clone()]);
    assert_eq!(store.get(&key).await.unwrap(), Some(done.clone()));
    // A second save over the committed version conflicts, in a group as outside one.
    store.begin_group().unwrap();
    let stale = saga.clone();
    assert!(store.save(&stale, None).await.is_err());
    store.commit_group().unwrap();
    assert_eq!(store.load(&saga.id).await.unwrap(), Some(saga));
}

/// Beyond the contract: the embedded store purges what expired, as DynamoDB's TTL does.
#[tokio::test]
async fn expired_records_are_purged() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = open(dir.path(), clock.clone());
    let policy = IdempotencyPolicy::default();
    let key = IdempotencyKey::for_step("receipt:s:r", "post-sale-to-erp");
    let claim = policy.in_progress(key.clone(), Fingerprint::of(&1), now(&clock));
    let done = policy.completed(&claim, json!({"ok": true}), now(&clock));
    store.try_insert(&done, now(&clock)).await.unwrap();
    let blocked = store.try_insert(&claim, now(&clock)).await.unwrap().unwrap();
    assert!(matches!(blocked.state, RecordState::Completed { .. }));
    clock.advance(Duration::from_secs(36 * 24 * 3600));
    assert_eq!(store.purge_expired().unwrap(), 1);
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert_eq!(store.try_insert(&claim, now(&clock)).await.unwrap(), None);
}

#[tokio::test]
async fn unacknowledged_messages_come_back_after_the_visibility_timeout_then_go_to_the_dlq() {
    come_back_then_dlq(false).await;
}

/// The same inside a group, where a message sent in the group is kept in memory until it commits.
#[tokio::test]
async fn in_a_group_unacknowledged_messages_come_back_after_the_visibility_timeout_then_go_to_the_dlq() {
    come_back_then_dlq(true).await;
}

async fn come_back_then_dlq(grouped: bool) {
    let (_dir, clock, store) = opened(grouped);
    store.send("IngestQueue", "hello").unwrap();

    for attempt in 1..=5 {
        let got = store.receive("IngestQueue", 10).await.unwrap();
        assert_eq!(got.len(), 1, "attempt {attempt}");
        assert_eq!(got[0].message.receive_count, attempt);
        assert!(
            store.receive("IngestQueue", 10).await.unwrap().is_empty(),
            "invisible while in flight"
        );
        clock.advance(Duration::from_secs(181)); // the template's 180 s
    }
    // maxReceiveCount (5) reached: the next receive moves it to the DLQ instead of handing it out.
    assert!(store.receive("IngestQueue", 10).await.unwrap().is_empty());
    let dead = store.messages("IngestDLQ").unwrap();
    assert_eq!(
        (dead.len(), dead[0].body.as_str(), dead[0].receive_count),
        (1, "hello", 5)
    );

    // An operator's redrive is a transaction of its own, between groups.
    store.commit_group().unwrap();
    assert_eq!(store.redrive("IngestDLQ", "IngestQueue").unwrap(), 1);
    if grouped {
        store.begin_group().unwrap();
    }
    let got = store.receive("IngestQueue", 10).await.unwrap();
    assert_eq!(got[0].message.receive_count, 1, "a redriven message starts over");
    store
        .delete("IngestQueue", &[got[0].receipt.clone()])
        .await
        .unwrap();
    clock.advance(Duration::from_secs(181));
    assert!(
        store.receive("IngestQueue", 10).await.unwrap().is_empty(),
        "deleted for good"
    );
}

#[tokio::test]
async fn a_deferred_receive_does_not_count_toward_the_dlq() {
    deferred_receive(false).await;
}

#[tokio::test]
async fn in_a_group_a_deferred_receive_does_not_count_toward_the_dlq() {
    deferred_receive(true).await;
}

/// `defer` hides a message like `change_visibility` and takes back the receive that handed it out: a
/// message deferred any number of times is handed out again with a receive count of 1, and still reaches
/// the DLQ after five counted receives. A stale receipt takes nothing back.
async fn deferred_receive(grouped: bool) {
    let (_dir, clock, store) = opened(grouped);
    store.send("IngestQueue", "waits").unwrap();
    for _ in 0..8 {
        let got = store.receive("IngestQueue", 10).await.unwrap().remove(0);
        assert_eq!(got.message.receive_count, 1);
        let wait = Duration::from_secs(30);
        store.defer("IngestQueue", &got.receipt, wait).await.unwrap();
        assert!(
            store.receive("IngestQueue", 10).await.unwrap().is_empty(),
            "hidden"
        );
        clock.advance(Duration::from_secs(31));
    }
    let first = store.receive("IngestQueue", 10).await.unwrap().remove(0);
    clock.advance(Duration::from_secs(181));
    let second = store.receive("IngestQueue", 10).await.unwrap().remove(0);
    assert_eq!(second.message.receive_count, 2);
    store
        .defer("IngestQueue", &first.receipt, Duration::ZERO)
        .await
        .unwrap();
    for attempt in 3..=5 {
        clock.advance(Duration::from_secs(181));
        let got = store.receive("IngestQueue", 10).await.unwrap();
        assert_eq!(
            got[0].message.receive_count, attempt,
            "the stale receipt took nothing back"
        );
    }
    clock.advance(Duration::from_secs(181));
    assert!(store.receive("IngestQueue", 10).await.unwrap().is_empty());
    assert_eq!(store.messages("IngestDLQ").unwrap().len(), 1);
}

#[tokio::test]
async fn a_stale_receipt_deletes_nothing() {
    stale_receipt(false).await;
}

#[tokio::test]
async fn in_a_group_a_stale_receipt_deletes_nothing() {
    stale_receipt(true).await;
}

async fn stale_receipt(grouped: bool) {
    let (_dir, clock, store) = opened(grouped);
    store.send("IngestQueue", "m").unwrap();
    let first = store.receive("IngestQueue", 1).await.unwrap().remove(0);
    clock.advance(Duration::from_secs(181));
    let second = store.receive("IngestQueue", 1).await.unwrap().remove(0);
    store
        .delete("IngestQueue", &[first.receipt, "garbage".into()])
        .await
        .unwrap();
    assert_eq!(
        store.depth("IngestQueue").unwrap(),
        (0, 1),
        "still there, in flight under the new receipt"
    );
    store.delete("IngestQueue", &[second.receipt]).await.unwrap();
    assert_eq!(store.depth("IngestQueue").unwrap(), (0, 0));
}

/// In a group the table's messages and the group's own are received as one queue, in the table's order;
/// a receipt stays good when the group's messages are written to the table part way (a scanning read) and
/// when it commits; and a group that never commits leaves none of its messages.
#[tokio::test]
async fn in_a_group_the_tables_messages_and_the_groups_are_one_queue() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = open(dir.path(), clock.clone());
    let bodies = |got: &[retail_sync_core::ports::Received]| -> Vec<String> {
        got.iter().map(|r| r.message.body.clone()).collect()
    };
    store.send("IngestQueue", "committed").unwrap();
    clock.advance(Duration::from_millis(5));

    store.begin_group().unwrap();
    store.send("IngestQueue", "sent in the group").unwrap();
    assert_eq!(store.depth("IngestQueue").unwrap(), (2, 0));
    let got = store.receive("IngestQueue", 10).await.unwrap();
    assert_eq!(bodies(&got), ["committed", "sent in the group"]);
    assert_eq!(store.depth("IngestQueue").unwrap(), (0, 2));

    // A failed message waits where it is, the group's as the table's.
    for r in &got {
        store
            .change_visibility("IngestQueue", &r.receipt, Duration::from_secs(10))
            .await
            .unwrap();
    }
    clock.advance(Duration::from_secs(9));
    assert!(store.receive("IngestQueue", 10).await.unwrap().is_empty());
    clock.advance(Duration::from_secs(2));
    let again = store.receive("IngestQueue", 1).await.unwrap();
    assert_eq!(bodies(&again), ["committed"], "one at a time, oldest first");
    let again = [again, store.receive("IngestQueue", 1).await.unwrap()].concat();
    assert_eq!(bodies(&again), ["committed", "sent in the group"]);
    assert!(again.iter().all(|r| r.message.receive_count == 2));

    // The first receipts are stale; the group's messages reach the table with their receipts.
    let stale: Vec<String> = got.iter().map(|r| r.receipt.clone()).collect();
    store.delete("IngestQueue", &stale).await.unwrap();
    assert_eq!(store.messages("IngestQueue").unwrap().len(), 2);
    store
        .delete("IngestQueue", &[again[1].receipt.clone()])
        .await
        .unwrap();
    assert_eq!(store.depth("IngestQueue").unwrap(), (0, 1));

    // Sent after the write-out, and never committed: gone, as after a kill; the rest is as committed
    // before the group.
    store.send("PostSaleToErpQueue", "lost").unwrap();
    drop(store);
    let store = open(dir.path(), clock.clone());
    assert_eq!(store.depth("PostSaleToErpQueue").unwrap(), (0, 0));
    assert_eq!(store.depth("IngestQueue").unwrap(), (1, 0));

    // Committed: kept, in flight under its receipt, which deletes it after the commit.
    store.begin_group().unwrap();
    store.send("PostSaleToErpQueue", "kept").unwrap();
    let got = store.receive("PostSaleToErpQueue", 10).await.unwrap();
    store.commit_group().unwrap();
    drop(store);
    let store = open(dir.path(), clock.clone());
    assert_eq!(store.depth("PostSaleToErpQueue").unwrap(), (0, 1));
    store
        .delete("PostSaleToErpQueue", &[got[0].receipt.clone()])
        .await
        .unwrap();
    assert_eq!(store.depth("PostSaleToErpQueue").unwrap(), (0, 0));
    // Seqs given out in a group are not given again: a message sent now is a new row.
    store.send("PostSaleToErpQueue", "next").unwrap();
    let next = store.receive("PostSaleToErpQueue", 10).await.unwrap();
    assert_ne!(
        next[0].receipt.split(':').next(),
        got[0].receipt.split(':').next()
    );
}

/// Rules match an event cut down to what their patterns look at, read back from the event's text; an
/// event nested deeper than the JSON reader goes (128 levels) is matched whole instead, and so routed
/// as any other: ingest is where it is refused, and kept.
#[tokio::test]
async fn an_event_nested_beyond_the_readers_limit_is_routed_as_any_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), clock());
    let mut deep = json!("receipt");
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let detail = json!({"data": {"transaction": {"kind": deep}}});
    let events = [
        (
            "retail.pos".to_owned(),
            "SaleCompleted".to_owned(),
            detail.clone(),
        ),
        (
            "retail-sync".to_owned(),
            "ErpSalePosted".to_owned(),
            detail.clone(),
        ),
    ];
    let routed = store.put_events(&events[..1]).unwrap();
    assert_eq!(routed[0].1, 1);
    // An array holding "receipt" somewhere deep is not "receipt": the rule to accrual does not match.
    let routed = store.put_internal_events(&events[1..]).unwrap();
    assert_eq!(routed[0].1, 0);
    let delivered = &store.messages("IngestQueue").unwrap()[0];
    assert!(
        delivered.body.contains(&"[".repeat(200)),
        "the event is delivered as sent"
    );
}

#[tokio::test]
async fn events_are_routed_by_their_bus_rules_and_state_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    {
        let store = open(dir.path(), clock.clone());
        let events: Vec<(String, String, serde_json::Value)> = vec![
            ("retail.pos".into(), "SaleCompleted".into(), json!({})),
            ("retail-sync.ingest".into(), "SaleCompleted".into(), json!({})),
            (
                "retail-sync".into(),
                "ErpSalePosted".into(),
                json!({"data": {"transaction": {"kind": "receipt"}}}),
            ),
            ("retail-sync".into(), "LoyaltyAccrued".into(), json!({})),
        ];
        let targets =
            |routed: Vec<(String, usize)>| -> Vec<usize> { routed.iter().map(|(_, n)| *n).collect() };
        // The channel bus routes channel sources to ingest and nothing else; the internal bus routes
        // workflow sources to the steps and never a channel's event to ingest.
        assert_eq!(targets(store.put_events(&events[1..]).unwrap()), [0, 0, 0]);
        assert_eq!(targets(store.put_internal_events(&events[..1]).unwrap()), [0]);
        assert_eq!(targets(store.put_events(&events[..1]).unwrap()), [1]);
        assert_eq!(
            targets(store.put_internal_events(&events[1..]).unwrap()),
            [1, 1, 0]
        );
        // A member event reaches ingest, but the archive's pattern does not keep it (personal data).
        let member = (
            "retail.crm".into(),
            "CustomerUpdated".into(),
            json!({"data": {"email": "a@x.io"}}),
        );
        assert_eq!(targets(store.put_events(&[member]).unwrap()), [1]);
        store.create(&saga()).await.unwrap();
    }
    let store = open(dir.path(), clock);
    assert_eq!(store.depth("IngestQueue").unwrap(), (2, 0));
    for q in ["PostSaleToErpQueue", "AccrueLoyaltyQueue"] {
        assert_eq!(store.depth(q).unwrap(), (1, 0), "{q}");
    }
    let delivered = &store.messages("PostSaleToErpQueue").unwrap()[0];
    let envelope: serde_json::Value = serde_json::from_str(&delivered.body).unwrap();
    assert_eq!(envelope["source"], "retail-sync.ingest");
    assert_eq!(envelope["detail-type"], "SaleCompleted");
    // As EventBridge archives: what the channel bus's archive pattern matches, the channels' sales alone.
    let archived: Vec<(serde_json::Value, serde_json::Value)> = store
        .archive()
        .unwrap()
        .into_iter()
        .map(|e| (e["source"].clone(), e["detail-type"].clone()))
        .collect();
    assert_eq!(archived, [(json!("retail.pos"), json!("SaleCompleted"))]);
    assert_eq!(store.sagas().unwrap().len(), 1);
}
