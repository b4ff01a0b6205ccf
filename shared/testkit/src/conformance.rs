//! One suite of the state ports' contract (idempotency records, sagas, quarantine), run against every
//! adapter — the in-memory one, the embedded one and DynamoDB on moto server — by each adapter's crate's
//! tests, through [`conformance_tests!`](crate::conformance_tests). The workflows are correct only if
//! every backend keeps these promises, so they are written once.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;

use retail_sync_contracts::events::ReasonCode;
use retail_sync_contracts::{Event, EventType, Rejection};

use retail_sync_core::Error;
use retail_sync_core::idempotency::{Fingerprint, IdempotencyKey, IdempotencyPolicy, RecordState};
use retail_sync_core::ports::{IdempotencyStore, QuarantineItem, QuarantineStore, SagaStore};
use retail_sync_core::saga::{Saga, SagaId, StepOutcome};

/// What a backend under test implements.
pub trait StateStore: IdempotencyStore + SagaStore + QuarantineStore {}
impl<T: IdempotencyStore + SagaStore + QuarantineStore> StateStore for T {}

/// Generates one `#[tokio::test]` per case for the store `$make().await` returns, as `(store, guard)`:
/// the guard (a temporary directory, say) lives as long as the test.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@cases $make;
            the_first_claim_proceeds_and_a_second_sees_it_in_progress,
            a_lapsed_lease_is_claimed_again_exactly_when_is_live_says_so,
            a_completed_record_is_returned_until_its_retention_ends,
            release_deletes_only_its_own_in_progress_claim,
            creating_a_saga_twice_returns_the_existing_one,
            a_save_over_a_stale_version_conflicts_and_writes_no_completion,
            a_saga_is_found_by_its_correlation_id,
            many_sagas_are_read_at_once_as_each_is_loaded,
            quarantine_lists_oldest_first_and_a_redelivery_overwrites,
            a_kept_quarantine_entry_stays_as_first_written
        );
    };
    (@cases $make:path; $($case:ident),+) => {$(
        #[tokio::test]
        async fn $case() {
            let (store, _guard) = $make().await;
            $crate::conformance::$case(&store).await;
        }
    )+};
}

/// With a sub-millisecond part, so adapters that store milliseconds show they keep exact conditions.
fn t0() -> Timestamp {
    "2026-11-20T10:00:00.000456789Z".parse().expect("a timestamp")
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn policy() -> IdempotencyPolicy {
    IdempotencyPolicy {
        lease: secs(60),
        retention: secs(35 * 24 * 3600),
    }
}

fn key(name: &str) -> IdempotencyKey {
    IdempotencyKey::for_step(&format!("receipt:store-1:{name}"), "post-sale-to-erp")
}

/// A saga of the sample sale under `id`, at version 1.
pub fn saga(id: &str, now: Timestamp) -> Saga {
    let envelope: serde_json::Value =
        serde_json::from_str(include_str!("../../../events/samples/SaleCompleted.json")).expect("the sample");
    let event = Event::from_detail(EventType::SaleCompleted, envelope["detail"].clone()).expect("the sample");
    Saga::start(SagaId::from_stored(id.to_owned()), &event, now)
}

pub async fn the_first_claim_proceeds_and_a_second_sees_it_in_progress(store: &impl StateStore) {
    let fp = Fingerprint::of(&json!({"sale": 1}));
    let first = policy().in_progress(key("r-1"), fp.clone(), t0());
    assert_eq!(store.try_insert(&first, t0()).await.unwrap(), None);

    let later = t0() + secs(1);
    let second = policy().in_progress(key("r-1"), fp, later);
    assert_eq!(
        store.try_insert(&second, later).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store.get(&key("r-1")).await.unwrap(),
        Some(first),
        "the blocked insert wrote nothing"
    );
    assert_eq!(store.get(&key("r-other")).await.unwrap(), None);
}

pub async fn a_lapsed_lease_is_claimed_again_exactly_when_is_live_says_so(store: &impl StateStore) {
    let fp = Fingerprint::of(&1);
    let crashed = policy().in_progress(key("r-2"), fp.clone(), t0());
    let RecordState::InProgress { lease_until } = crashed.state else {
        panic!("a claim is in progress");
    };
    store.try_insert(&crashed, t0()).await.unwrap();

    let just_before = lease_until - Duration::from_millis(1);
    assert!(crashed.is_live(just_before));
    let retry = policy().in_progress(key("r-2"), fp.clone(), just_before);
    assert_eq!(
        store.try_insert(&retry, just_before).await.unwrap(),
        Some(crashed.clone())
    );

    assert!(!crashed.is_live(lease_until));
    let takeover = policy().in_progress(key("r-2"), fp, lease_until);
    assert_eq!(store.try_insert(&takeover, lease_until).await.unwrap(), None);
    assert_eq!(store.get(&key("r-2")).await.unwrap(), Some(takeover));
}

pub async fn a_completed_record_is_returned_until_its_retention_ends(store: &impl StateStore) {
    let fp = Fingerprint::of(&2);
    let claim = policy().in_progress(key("r-3"), fp.clone(), t0());
    let done = policy().completed(&claim, json!({"document_id": "D-1"}), t0());
    assert_eq!(store.try_insert(&done, t0()).await.unwrap(), None);

    // Long after the lease, a completed record still blocks: the effect is done.
    let redelivery_at = t0() + secs(3600);
    let redelivery = policy().in_progress(key("r-3"), fp.clone(), redelivery_at);
    assert_eq!(
        store.try_insert(&redelivery, redelivery_at).await.unwrap(),
        Some(done.clone())
    );

    // Past retention the record no longer counts, whether or not a TTL sweep has deleted it yet.
    let expired_at = done.expires_at;
    assert!(!done.is_live(expired_at));
    let fresh = policy().in_progress(key("r-3"), fp, expired_at);
    assert_eq!(store.try_insert(&fresh, expired_at).await.unwrap(), None);
}

pub async fn release_deletes_only_its_own_in_progress_claim(store: &impl StateStore) {
    let fp = Fingerprint::of(&3);
    let mine = policy().in_progress(key("r-4"), fp.clone(), t0());
    store.try_insert(&mine, t0()).await.unwrap();
    let later = t0() + secs(61);
    let theirs = policy().in_progress(key("r-4"), fp.clone(), later);
    assert_eq!(
        store.try_insert(&theirs, later).await.unwrap(),
        None,
        "our lease lapsed; they took over"
    );

    store.release(&mine).await.unwrap();
    assert_eq!(
        store.get(&key("r-4")).await.unwrap(),
        Some(theirs.clone()),
        "their claim survives our release"
    );

    // Their completion is written with their saga update.
    let done = policy().completed(&theirs, json!(null), later);
    let mut s = saga("receipt:store-1:r-4", t0());
    assert_eq!(store.create(&s).await.unwrap(), None);
    s.version = 2;
    store.save(&s, Some(&done)).await.unwrap();
    store.release(&theirs).await.unwrap();
    assert_eq!(
        store.get(&key("r-4")).await.unwrap(),
        Some(done.clone()),
        "a completion survives a late release"
    );
    store.release(&done).await.unwrap();
    assert_eq!(
        store.get(&key("r-4")).await.unwrap(),
        Some(done),
        "releasing a completed record does nothing"
    );

    let other = policy().in_progress(key("r-5"), fp, t0());
    store.try_insert(&other, t0()).await.unwrap();
    store.release(&other).await.unwrap();
    assert_eq!(store.get(&key("r-5")).await.unwrap(), None);
}

pub async fn creating_a_saga_twice_returns_the_existing_one(store: &impl StateStore) {
    let original = saga("receipt:store-042:r-000123", t0());
    assert_eq!(store.create(&original).await.unwrap(), None);

    let mut duplicate = original.clone();
    duplicate.record("ingest", StepOutcome::Accepted, "again", t0() + secs(1));
    assert_eq!(store.create(&duplicate).await.unwrap(), Some(original.clone()));
    assert_eq!(store.load(&original.id).await.unwrap(), Some(original));
    assert_eq!(
        store
            .load(&SagaId::from_stored("order:none".into()))
            .await
            .unwrap(),
        None
    );
}

pub async fn a_save_over_a_stale_version_conflicts_and_writes_no_completion(store: &impl StateStore) {
    let id = SagaId::from_stored("receipt:store-042:r-000124".into());
    let v1 = saga(id.as_str(), t0());
    store.create(&v1).await.unwrap();

    let claim = policy().in_progress(key("erp"), Fingerprint::of(&4), t0());
    let done = policy().completed(&claim, json!({"document_id": "D-9"}), t0());
    let mut v2 = v1.clone();
    v2.record("post-sale-to-erp", StepOutcome::Done, "posted", t0());
    v2.version = 2;
    store.save(&v2, Some(&done)).await.unwrap();
    assert_eq!(store.get(&done.key).await.unwrap(), Some(done));

    // A concurrent delivery that also read version 1 loses, and its completion is not written.
    let rival_claim = policy().in_progress(key("loyalty"), Fingerprint::of(&5), t0());
    let rival_done = policy().completed(&rival_claim, json!({"points": 10}), t0());
    let mut rival = v1.clone();
    rival.record("accrue-loyalty", StepOutcome::Done, "accrued", t0());
    rival.version = 2;
    let e = store.save(&rival, Some(&rival_done)).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert_eq!(
        store.get(&rival_done.key).await.unwrap(),
        None,
        "the atomic write wrote nothing"
    );

    // Without a completion: a plain conditional write.
    let e = store.save(&rival, None).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    let mut v3 = v2.clone();
    v3.version = 3;
    store.save(&v3, None).await.unwrap();
    assert_eq!(store.load(&id).await.unwrap(), Some(v3));

    // Versions start at 1 by creation; "saving" a version 1 saga never overwrites one.
    let e = store.save(&v1, None).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    // Nor does saving a saga that was never created.
    let mut ghost = saga("receipt:store-042:never-created", t0());
    ghost.version = 2;
    let e = store.save(&ghost, None).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
}

pub async fn a_saga_is_found_by_its_correlation_id(store: &impl StateStore) {
    let s = saga("receipt:store-042:r-000125", t0());
    store.create(&s).await.unwrap();
    let mut later = s.clone();
    later.version = 2;
    store.save(&later, None).await.unwrap();
    let found = store.find_by_correlation(&s.correlation_id).await.unwrap();
    assert_eq!(found.map(|f| (f.id, f.version)), Some((s.id.clone(), 2)));
    let unknown = retail_sync_contracts::values::CorrelationId::parse("nobody").unwrap();
    assert_eq!(store.find_by_correlation(&unknown).await.unwrap(), None);
}

/// A batch read returns what single loads return, for more ids than DynamoDB takes in one request
/// (100): every saga that exists once, at its latest version, however often it was asked for; an id
/// that names no saga is left out.
pub async fn many_sagas_are_read_at_once_as_each_is_loaded(store: &impl StateStore) {
    let mut ids = Vec::new();
    for n in 0..120 {
        let s = saga(&format!("receipt:store-043:r-{n}"), t0());
        store.create(&s).await.unwrap();
        ids.push(s.id);
    }
    let mut later = store.load(&ids[7]).await.unwrap().unwrap();
    later.record("post-sale-to-erp", StepOutcome::Done, "posted", t0());
    later.version = 2;
    store.save(&later, None).await.unwrap();

    let mut asked = ids.clone();
    asked.push(SagaId::from_stored("receipt:store-043:never-created".into()));
    asked.push(ids[3].clone());
    let mut found = store.load_many(&asked).await.unwrap();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected = Vec::new();
    for id in &ids {
        expected.push(store.load(id).await.unwrap().unwrap());
    }
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(found.len(), 120);
    assert_eq!(found, expected);
    assert_eq!(found.iter().find(|s| s.id == ids[7]).map(|s| s.version), Some(2));
    assert_eq!(store.load_many(&[]).await.unwrap(), Vec::new());
}

fn quarantined(id: &str, received_at: Timestamp, message: &str) -> QuarantineItem {
    QuarantineItem {
        id: id.to_owned(),
        received_at,
        step: "ingest".into(),
        rejection: Rejection {
            reason: ReasonCode::InvalidJson,
            message: message.to_owned(),
            findings: vec!["/: expected value".into()],
            detail_type: None,
            event_id: None,
            correlation_id: None,
        },
        body: "{not json".into(),
        body_truncated: false,
    }
}

pub async fn quarantine_lists_oldest_first_and_a_redelivery_overwrites(store: &impl StateStore) {
    // Ids in the opposite order of arrival: the list follows arrival (then id).
    store
        .put(&quarantined("m-b", t0() + secs(2), "second"))
        .await
        .unwrap();
    store
        .put(&quarantined("m-z", t0() + secs(1), "first"))
        .await
        .unwrap();
    store
        .put(&quarantined("m-c", t0() + secs(2), "third"))
        .await
        .unwrap();
    store
        .put(&quarantined("m-z", t0() + secs(1), "first, redelivered"))
        .await
        .unwrap();

    let all = store.list(10).await.unwrap();
    let ids: Vec<_> = all.iter().map(|q| q.id.as_str()).collect();
    assert_eq!(ids, ["m-z", "m-b", "m-c"]);
    assert_eq!(all[0].rejection.message, "first, redelivered");
    assert_eq!(all[0], quarantined("m-z", t0() + secs(1), "first, redelivered"));
    assert_eq!(store.list(2).await.unwrap().len(), 2);
    // One entry by its id, beyond any listing's limit.
    assert_eq!(
        store.find("m-c").await.unwrap(),
        Some(quarantined("m-c", t0() + secs(2), "third"))
    );
    assert_eq!(store.find("m-nowhere").await.unwrap(), None);
}

/// `keep` writes a new entry, and leaves one with its id as it is (an erasure's scrub stands when the
/// same refusal is delivered again); `put` still replaces.
pub async fn a_kept_quarantine_entry_stays_as_first_written(store: &impl StateStore) {
    store
        .keep(&quarantined("k-1", t0() + secs(1), "first"))
        .await
        .unwrap();
    store
        .put(&quarantined("k-1", t0() + secs(1), "[erased]"))
        .await
        .unwrap();
    store
        .keep(&quarantined("k-1", t0() + secs(9), "first, delivered again"))
        .await
        .unwrap();
    assert_eq!(
        store.find("k-1").await.unwrap(),
        Some(quarantined("k-1", t0() + secs(1), "[erased]"))
    );
    assert_eq!(store.list(10).await.unwrap().len(), 1);
}
