//! The POS sale workflow over in-memory adapters: each step alone and the three chained, with the
//! failure paths that matter (duplicates, redelivery after a failed publish, permanent vs retryable).

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use retail_sync_contracts::events::ReasonCode;
use retail_sync_contracts::values::{ExternalRef, HoldId, MemberId, Points};
use retail_sync_contracts::{Event, IngestLimits};
use retail_sync_core::Error;
use retail_sync_core::batch::BatchRunner;
use retail_sync_core::idempotency::{IdempotencyKey, IdempotencyPolicy};
use retail_sync_core::memory::{CountingMetrics, ManualClock, MemoryBus, MemoryState};
use retail_sync_core::ports::*;
use retail_sync_core::saga::{SagaId, SagaStatus, StepOutcome};
use retail_sync_core::steps::{Base, Message, Step, Wiring, connected};

/// An ERP that counts calls and answers what the test scripted.
#[derive(Default)]
struct FakeErp {
    calls: AtomicU32,
    /// The idempotency key of every call.
    keys: Mutex<Vec<String>>,
    /// `Some(true)`: rejected for good; `Some(false)`: unavailable.
    fail: Mutex<Option<bool>>,
}

#[async_trait]
impl Erp for FakeErp {
    async fn post_sale(&self, _: &ErpSaleRequest, key: &IdempotencyKey) -> Result<ErpDocument, Error> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.keys.lock().unwrap().push(key.as_str().to_owned());
        match *self.fail.lock().unwrap() {
            Some(true) => Err(Error::rejected(ReasonCode::ErpRejected, "period_closed: closed")),
            Some(false) => Err(Error::unavailable("erp", "503")),
            None => Ok(ErpDocument {
                document_id: ExternalRef::parse(format!("ERP-{n}")).unwrap(),
            }),
        }
    }
    // The POS workflow never cancels or returns; the order and return workflows are tested end to end
    // against the simulators (tests/e2e).
    async fn cancel_order(&self, _: &ErpCancelRequest, _: &IdempotencyKey) -> Result<ErpDocument, Error> {
        unreachable!("not part of the POS workflow")
    }
    async fn post_return(&self, _: &ErpReturnRequest, _: &IdempotencyKey) -> Result<ErpDocument, Error> {
        unreachable!("not part of the POS workflow")
    }
    async fn reinstate(&self, _: &ErpReinstateRequest, _: &IdempotencyKey) -> Result<ErpDocument, Error> {
        unreachable!("not part of the POS workflow")
    }
}

#[derive(Default)]
struct FakeLoyalty {
    calls: AtomicU32,
    requests: Mutex<Vec<AccrualRequest>>,
}

#[async_trait]
impl Loyalty for FakeLoyalty {
    async fn accrue(&self, request: &AccrualRequest, _: &IdempotencyKey) -> Result<Accrual, Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.requests.lock().unwrap().push(request.clone());
        if request.member_id.as_str().starts_with("unknown-") {
            return Err(Error::rejected(ReasonCode::LoyaltyRejected, "member_not_found"));
        }
        let points = Points::new(request.eligible_minor.get() / 100).unwrap();
        Ok(Accrual {
            loyalty_transaction_id: ExternalRef::parse("LT-1").unwrap(),
            points,
            balance: points,
            pending: false,
        })
    }
    async fn balance(&self, _: &MemberId) -> Result<Balance, Error> {
        unreachable!("not part of the POS workflow")
    }
    async fn create_hold(&self, _: &HoldRequest, _: &IdempotencyKey) -> Result<Hold, Error> {
        unreachable!("not part of the POS workflow")
    }
    async fn get_hold(&self, _: &HoldId) -> Result<Hold, Error> {
        unreachable!("not part of the POS workflow")
    }
    async fn commit_hold(&self, _: &HoldId, _: &CommitRequest, _: &IdempotencyKey) -> Result<Hold, Error> {
        unreachable!("not part of the POS workflow")
    }
    async fn release_hold(&self, _: &HoldId, _: &IdempotencyKey) -> Result<Hold, Error> {
        unreachable!("not part of the POS workflow")
    }
    async fn adjust(&self, _: &AdjustmentRequest, _: &IdempotencyKey) -> Result<Adjustment, Error> {
        unreachable!("not part of the POS workflow")
    }
}

/// An ecommerce platform's order API that records what it is told, or refuses it.
#[derive(Default)]
struct FakePlatform {
    told: Mutex<Vec<ChannelOutcome>>,
    refuse: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl ChannelOutcomes for FakePlatform {
    async fn tell(&self, outcome: &ChannelOutcome, _: &IdempotencyKey) -> Result<(), Error> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(Error::rejected(
                ReasonCode::ChannelRejected,
                "Owner does not exist",
            ));
        }
        self.told.lock().unwrap().push(outcome.clone());
        Ok(())
    }
}

struct World {
    state: Arc<MemoryState>,
    bus: Arc<MemoryBus>,
    erp: Arc<FakeErp>,
    loyalty: Arc<FakeLoyalty>,
    platform: Arc<FakePlatform>,
    clock: Arc<ManualClock>,
    metrics: Arc<CountingMetrics>,
}

impl World {
    fn new() -> Self {
        Self {
            state: Arc::default(),
            bus: Arc::default(),
            erp: Arc::default(),
            loyalty: Arc::default(),
            platform: Arc::default(),
            clock: Arc::new(ManualClock::new("2026-11-20T10:00:00Z".parse().unwrap())),
            metrics: Arc::default(),
        }
    }

    fn wiring(&self) -> Wiring {
        Wiring {
            base: Base {
                idempotency: self.state.clone(),
                sagas: self.state.clone(),
                clock: self.clock.clone(),
                metrics: self.metrics.clone(),
                policy: IdempotencyPolicy::default(),
            },
            limits: IngestLimits::default(),
            erp: connected(self.erp.clone()),
            loyalty: connected(self.loyalty.clone()),
            publisher: self.bus.clone(),
            channel_bus: connected(self.bus.clone()),
            // Every field of a platform's mapping has a default.
            channel_mapping: Arc::new(|platform| {
                Ok(retail_sync_channels::mapper_from_lookup(platform, |_| {
                    Some("{}".into())
                })?)
            }),
            // Shopify is configured; Adobe Commerce is not.
            channel_outcomes: {
                let platform = self.platform.clone();
                Arc::new(move |p| {
                    (p == retail_sync_contracts::ChannelPlatform::Shopify)
                        .then(|| platform.clone() as Arc<dyn ChannelOutcomes>)
                })
            },
            member_systems: Arc::new(|| Ok(Default::default())),
            ownership: Arc::default(),
            enrolment: Default::default(),
            return_windows: Default::default(),
            quarantine: self.state.clone(),
        }
    }

    fn step(&self, name: &str) -> Arc<dyn Step> {
        self.wiring().step(name).unwrap()
    }

    fn runner(&self, name: &str) -> BatchRunner {
        self.wiring().runner(name).unwrap()
    }

    /// Runs the whole chain for one inbound body, routing published events as the template's rules do.
    async fn process(&self, body: &str) {
        self.process_from("ingest", body).await;
    }

    /// [`World::process`] from the queue of `step`.
    async fn process_from(&self, step: &'static str, body: &str) {
        let mut queue = vec![(step, body.to_owned())];
        let mut n = 0;
        while let Some((step, body)) = queue.pop() {
            let before = self.bus.published().len();
            n += 1;
            let outcome = self.runner(step).run(&[msg(&format!("m{n}"), &body)]).await;
            assert!(outcome.failed.is_empty(), "{step} failed: {outcome:?}");
            for out in &self.bus.published()[before..] {
                let next = match (out.source, out.detail_type()) {
                    ("retail-sync.ingest", "SaleCompleted") => "post-sale-to-erp",
                    ("retail-sync", "ErpSalePosted") => "accrue-loyalty",
                    _ => continue,
                };
                queue.push((next, envelope(out)));
            }
        }
    }

    /// The sample sale as ingest re-emits it, with the saga ingest would have started.
    async fn accepted_sale(&self) -> Value {
        let mut accepted = sample_sale();
        accepted["source"] = "retail-sync.ingest".into();
        self.state.create(&start_saga(&accepted)).await.unwrap();
        accepted
    }

    async fn saga(&self, id: &str) -> retail_sync_core::saga::Saga {
        self.state
            .load(&SagaId::from_stored(id.to_owned()))
            .await
            .unwrap()
            .expect("saga exists")
    }
}

fn msg(id: &str, body: &str) -> Message {
    Message {
        id: id.to_owned(),
        body: body.to_owned(),
        receive_count: 1,
    }
}

/// The EventBridge envelope the bus would deliver for an outgoing event.
fn envelope(out: &Outgoing) -> String {
    json!({
        "version": "0", "id": "b1", "detail-type": out.detail_type(), "source": out.source,
        "time": "2026-11-20T10:00:01Z", "resources": [], "detail": out.event,
    })
    .to_string()
}

/// `published` as a queue delivers them, one message each, with ids `<prefix>0`, `<prefix>1`, …
fn delivered(published: &[Outgoing], prefix: &str) -> Vec<Message> {
    published
        .iter()
        .enumerate()
        .map(|(i, o)| msg(&format!("{prefix}{i}"), &envelope(o)))
        .collect()
}

fn sample_sale() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/samples/SaleCompleted.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

const SAGA: &str = "receipt:store-042:r-000123";

/// Who wrote what on the saga's timeline, in order.
fn timeline(saga: &retail_sync_core::saga::Saga) -> Vec<(&str, StepOutcome)> {
    saga.steps.iter().map(|s| (s.step.as_str(), s.outcome)).collect()
}

fn types(bus: &MemoryBus) -> Vec<String> {
    bus.published()
        .iter()
        .map(|o| format!("{}/{}", o.source, o.detail_type()))
        .collect()
}

#[tokio::test]
async fn a_member_sale_is_posted_once_and_accrues_the_points_loyalty_computed() {
    let w = World::new();
    w.process(&sample_sale().to_string()).await;

    let saga = w.saga(SAGA).await;
    assert_eq!(saga.status, SagaStatus::Completed);
    assert_eq!(
        saga.ledger.erp_document_id.as_ref().map(|d| d.as_str()),
        Some("ERP-1")
    );
    // 2 × 19.99 + 45.00 − 5.00 eligible; the gift card line is not eligible.
    assert_eq!(saga.ledger.eligible_minor.map(|a| a.get()), Some(7998));
    assert_eq!(saga.ledger.points_accrued.map(|p| p.get()), Some(79));
    assert_eq!(
        timeline(&saga),
        [
            ("ingest", StepOutcome::Accepted),
            ("post-sale-to-erp", StepOutcome::Done),
            ("accrue-loyalty", StepOutcome::Done)
        ]
    );
    assert_eq!(
        types(&w.bus),
        [
            "retail-sync.ingest/SaleCompleted",
            "retail-sync/ErpSalePosted",
            "retail-sync/LoyaltyAccrued"
        ]
    );
    // Outbound events keep the sender's correlation id.
    for out in w.bus.published() {
        assert_eq!(
            out.event.metadata().correlation_id.as_str(),
            "pos-store-042-r-000123"
        );
    }
}

#[tokio::test]
async fn a_duplicate_delivery_repeats_no_effect_and_republishes_the_same_events() {
    let w = World::new();
    let body = sample_sale().to_string();
    w.process(&body).await;
    let first: Vec<_> = w
        .bus
        .published()
        .iter()
        .map(|o| o.event.metadata().event_id.clone())
        .collect();
    let events = |from: usize| -> Vec<Value> {
        w.bus.published()[from..]
            .iter()
            .map(|o| serde_json::to_value(&o.event).unwrap())
            .collect()
    };
    let first_events = events(0);
    // Redelivered an hour later: the republished events are the same in every field, their time too
    // (a step downstream dates its requests by them, under the same idempotency key).
    w.clock.advance(Duration::from_secs(3_600));
    w.process(&body).await;
    assert_eq!(events(3), first_events);
    assert_eq!(w.erp.calls.load(Ordering::SeqCst), 1);
    assert_eq!(w.loyalty.calls.load(Ordering::SeqCst), 1);
    let all: Vec<_> = w
        .bus
        .published()
        .iter()
        .map(|o| o.event.metadata().event_id.clone())
        .collect();
    // Ingest re-emits the channel's own event; our events get the ids derived from the step keys.
    assert_eq!(all[3..], first[..]);
    assert_eq!(w.metrics.get("duplicates"), 1);
    assert_eq!(
        w.saga(SAGA).await.steps.len(),
        3,
        "the timeline records each effect once"
    );
}

#[tokio::test]
async fn a_step_whose_publish_failed_publishes_again_on_redelivery_without_calling_the_erp_again() {
    let w = World::new();
    let post = w.runner("post-sale-to-erp");
    let accepted = w.accepted_sale().await;
    let body = accepted.to_string();

    w.bus.fail_next(1);
    let first = post.run(&[msg("m1", &body)]).await;
    assert_eq!(
        first.failed,
        ["m1"],
        "a message whose events did not reach the bus is redelivered"
    );
    assert!(w.bus.published().is_empty());

    let second = post
        .run(&[Message {
            receive_count: 2,
            ..msg("m1", &body)
        }])
        .await;
    assert!(second.failed.is_empty());
    assert_eq!(types(&w.bus), ["retail-sync/ErpSalePosted"]);
    assert_eq!(w.erp.calls.load(Ordering::SeqCst), 1, "the effect happened once");
}

fn start_saga(envelope: &Value) -> retail_sync_core::saga::Saga {
    let event = Event::from_detail(
        retail_sync_contracts::EventType::SaleCompleted,
        envelope["detail"].clone(),
    )
    .unwrap();
    retail_sync_core::saga::Saga::start(
        SagaId::from_stored(SAGA.to_owned()),
        &event,
        "2026-11-20T10:00:00Z".parse().unwrap(),
    )
}

#[tokio::test]
async fn an_erp_rejection_fails_the_saga_and_announces_it_without_retrying() {
    let w = World::new();
    *w.erp.fail.lock().unwrap() = Some(true);
    w.process(&sample_sale().to_string()).await;
    let saga = w.saga(SAGA).await;
    assert_eq!(saga.status, SagaStatus::Failed);
    assert!(saga.has_step("post-sale-to-erp", StepOutcome::Failed));
    assert_eq!(
        types(&w.bus),
        [
            "retail-sync.ingest/SaleCompleted",
            "retail-sync/WorkflowException"
        ]
    );
    let Event::WorkflowException(e) = &w.bus.published()[1].event else {
        panic!()
    };
    assert_eq!(e.data.reason, ReasonCode::ErpRejected);
    assert_eq!(e.metadata.correlation_id.as_str(), "pos-store-042-r-000123");
    assert_eq!(w.loyalty.calls.load(Ordering::SeqCst), 0);
    assert_eq!(w.metrics.get("failed{reason=erp_rejected}"), 1);
}

/// What operators filter by: each business counter also by the transaction's channel (counted once in
/// the step's total), and the completed saga with its end-to-end time from the channel's `occurred_at`.
#[tokio::test]
async fn business_metrics_are_split_by_channel_and_completion_is_timed() {
    let w = World::new();
    // The sale happened at 10:15; it is processed at 10:16:30.
    w.clock.advance(Duration::from_secs(16 * 60 + 30));
    w.process(&sample_sale().to_string()).await;
    assert_eq!(w.metrics.get("erp_posted"), 1);
    assert_eq!(w.metrics.get("erp_posted{channel=pos}"), 1);
    let points = w.metrics.get("points_accrued");
    assert!(points > 0);
    assert_eq!(w.metrics.get("points_accrued{channel=pos}"), points);
    assert_eq!(w.metrics.get("sagas_completed{channel=pos}"), 1);
    let occurred = jiff::Timestamp::from_str(
        sample_sale()["detail"]["metadata"]["occurred_at"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(w.clock.now().duration_since(occurred).as_secs(), 90);
    assert_eq!(w.metrics.get("saga_latency_ms{channel=pos}"), 90_000);
}

/// Fix and retry: the ERP refused the posting for good (period closed), so redeliveries get the stored
/// refusal; once the period is reopened, an operator's retry records a new attempt on the saga and the
/// quarantined message, sent again (twice here), is posted once under the new attempt's key, then
/// accrues. Asked again before it ran, the same attempt is resent; a retry of bad input and a retry of a
/// completed saga are refused and change nothing.
#[tokio::test]
async fn a_refused_posting_is_retried_once_the_cause_is_fixed() {
    use retail_sync_core::retry::{self, RetryError};
    let w = World::new();
    *w.erp.fail.lock().unwrap() = Some(true);
    w.process(&sample_sale().to_string()).await;
    let item = retry::find_refusal(&*w.state, &w.saga(SAGA).await, None)
        .await
        .unwrap()
        .expect("the refusal is quarantined");
    assert_eq!(item.step, "post-sale-to-erp");
    w.process_from("post-sale-to-erp", &item.body).await;
    assert_eq!(
        w.erp.calls.load(Ordering::SeqCst),
        1,
        "a redelivery gets the stored refusal"
    );

    *w.erp.fail.lock().unwrap() = None;
    let retried = retry::request(&*w.state, &*w.state, &item, w.clock.now())
        .await
        .unwrap();
    assert_eq!((retried.step.as_str(), retried.attempt), ("post-sale-to-erp", 2));
    let saga = w.saga(SAGA).await;
    assert_eq!(saga.status, SagaStatus::Running);
    assert!(saga.has_step(retry::OPERATOR, StepOutcome::Retried));
    // Asked again before the attempt ran (its send lost, say): the same attempt's message is sent
    // again, nothing new is recorded.
    let again = retry::request(&*w.state, &*w.state, &item, w.clock.now())
        .await
        .unwrap();
    assert_eq!((again.attempt, again.resent), (2, true));
    assert_eq!(w.saga(SAGA).await.retries.len(), 1);

    w.process_from("post-sale-to-erp", &retried.body).await;
    w.process_from("post-sale-to-erp", &retried.body).await;
    assert_eq!(
        *w.erp.keys.lock().unwrap(),
        [
            "receipt:store-042:r-000123:post-sale-to-erp",
            "receipt:store-042:r-000123:post-sale-to-erp:retry-1"
        ]
    );
    let saga = w.saga(SAGA).await;
    assert_eq!(saga.status, SagaStatus::Completed, "{:#?}", saga.steps);
    assert_eq!(saga.retries["receipt:store-042:r-000123:post-sale-to-erp"], 1);
    assert_eq!(w.loyalty.calls.load(Ordering::SeqCst), 1);
    let done = retry::request(&*w.state, &*w.state, &item, w.clock.now()).await;
    assert!(matches!(done, Err(RetryError::NotRetryable(m)) if m.contains("was not refused")));

    let mut bad = item.clone();
    bad.step = "ingest".into();
    bad.rejection.reason = ReasonCode::SchemaViolation;
    let refused = retry::request(&*w.state, &*w.state, &bad, w.clock.now()).await;
    assert!(matches!(refused, Err(RetryError::NotRetryable(m)) if m.contains("cannot be retried")));
}

#[tokio::test]
async fn an_unavailable_erp_leaves_the_message_for_redelivery_and_frees_the_claim() {
    let w = World::new();
    *w.erp.fail.lock().unwrap() = Some(false);
    let accepted = w.accepted_sale().await;
    let post = w.runner("post-sale-to-erp");
    let outcome = post.run(&[msg("m1", &accepted.to_string())]).await;
    assert_eq!(outcome.failed, ["m1"]);
    assert!(outcome.quarantined.is_empty());
    let key = IdempotencyKey::for_step(SAGA, "post-sale-to-erp");
    assert_eq!(
        w.state.get(&key).await.unwrap(),
        None,
        "the claim was released for the next delivery"
    );

    *w.erp.fail.lock().unwrap() = None;
    let outcome = post.run(&[msg("m1", &accepted.to_string())]).await;
    assert!(outcome.failed.is_empty());
    assert_eq!(
        w.saga(SAGA)
            .await
            .ledger
            .erp_document_id
            .as_ref()
            .map(|d| d.as_str()),
        Some("ERP-2")
    );
}

#[tokio::test]
async fn a_crashed_claim_blocks_until_its_lease_lapses_then_the_step_proceeds() {
    let w = World::new();
    let accepted = w.accepted_sale().await;
    // A delivery that claimed the step and died before finishing.
    let key = IdempotencyKey::for_step(SAGA, "post-sale-to-erp");
    let policy = IdempotencyPolicy::default();
    let claim = policy.in_progress(
        key,
        retail_sync_core::idempotency::Fingerprint::of(
            &serde_json::from_value::<retail_sync_contracts::SaleCompleted>(
                accepted["detail"]["data"].clone(),
            )
            .unwrap(),
        ),
        w.clock.now(),
    );
    w.state.try_insert(&claim, w.clock.now()).await.unwrap();

    let post = w.step("post-sale-to-erp");
    let err = post.handle(&msg("m1", &accepted.to_string())).await.unwrap_err();
    assert!(
        matches!(err, Error::InProgress { .. }) && err.is_retryable(),
        "{err}"
    );
    assert_eq!(w.erp.calls.load(Ordering::SeqCst), 0);

    w.clock.advance(Duration::from_secs(61));
    post.handle(&msg("m1", &accepted.to_string())).await.unwrap();
    assert_eq!(w.erp.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn accrual_before_its_saga_exists_waits_instead_of_failing() {
    let w = World::new();
    let erp_posted = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/samples/ErpSalePosted.json"
    ))
    .unwrap();
    let err = w
        .step("accrue-loyalty")
        .handle(&msg("m1", &erp_posted))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotYet { .. }) && err.is_retryable(), "{err}");
}

#[tokio::test]
async fn anonymous_sales_complete_without_accrual_and_unknown_members_fail_visibly() {
    let w = World::new();
    let mut anonymous = sample_sale();
    anonymous["detail"]["data"]
        .as_object_mut()
        .unwrap()
        .remove("member_id");
    w.process(&anonymous.to_string()).await;
    let saga = w.saga(SAGA).await;
    assert_eq!(saga.status, SagaStatus::Completed);
    assert!(saga.has_step("accrue-loyalty", StepOutcome::Skipped));
    assert_eq!(w.loyalty.calls.load(Ordering::SeqCst), 0);

    let mut unknown = sample_sale();
    unknown["detail"]["data"]["receipt_id"] = "r-2".into();
    unknown["detail"]["data"]["member_id"] = "unknown-1".into();
    w.process(&unknown.to_string()).await;
    let saga = w.saga("receipt:store-042:r-2").await;
    assert_eq!(saga.status, SagaStatus::Failed);
    assert!(types(&w.bus).last().unwrap().ends_with("WorkflowException"));
    // The failed sale needs a person: it is in the quarantine with the refusal, once, however often
    // its message is delivered.
    w.process(&unknown.to_string()).await;
    let items = w.state.list(10).await.unwrap();
    let kept: Vec<_> = items
        .iter()
        .map(|i| {
            (
                i.step.as_str(),
                i.rejection.reason,
                i.rejection.correlation_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        kept,
        [(
            "accrue-loyalty",
            ReasonCode::LoyaltyRejected,
            Some("pos-store-042-r-000123")
        )]
    );
}

#[tokio::test]
async fn points_paid_with_points_do_not_earn_points() {
    let w = World::new();
    let mut sale = sample_sale();
    let gross = sale["detail"]["data"]["totals"]["gross_minor"].as_i64().unwrap();
    sale["detail"]["data"]["tenders"] = json!([
        {"method": "points", "amount_minor": 998},
        {"method": "card", "amount_minor": gross - 998},
    ]);
    w.process(&sale.to_string()).await;
    // The 998 paid with points is spread over all three lines by net (3,998 / 4,000 / 5,000): the two
    // eligible lines carry 306 and 308 of it, the gift card the rest.
    assert_eq!(
        w.loyalty.requests.lock().unwrap()[0].eligible_minor.get(),
        3_998 - 306 + 4_000 - 308
    );
}

#[tokio::test]
async fn bad_input_is_quarantined_with_its_reason_and_announced_never_retried() {
    let w = World::new();
    let ingest = w.runner("ingest");
    let mut bad_totals = sample_sale();
    bad_totals["detail"]["data"]["totals"]["gross_minor"] = 1.into();
    let mut no_id = sample_sale();
    no_id["detail"]["data"]
        .as_object_mut()
        .unwrap()
        .remove("receipt_id");
    let batch = [
        msg("bad-json", "{not json"),
        msg("bad-totals", &bad_totals.to_string()),
        msg("no-id", &no_id.to_string()),
        msg("good", &sample_sale().to_string()),
    ];
    let outcome = ingest.run(&batch).await;
    assert!(outcome.failed.is_empty(), "permanent failures are not retried");
    assert_eq!(outcome.quarantined, ["bad-json", "bad-totals", "no-id"]);

    let mut items = w.state.list(10).await.unwrap();
    items.sort_by_key(|i| i.rejection.reason.as_str());
    let reasons: Vec<_> = items.iter().map(|i| i.rejection.reason).collect();
    assert_eq!(
        reasons,
        [
            ReasonCode::BusinessRuleViolation,
            ReasonCode::InvalidJson,
            ReasonCode::MissingIdentifier
        ]
    );
    // Named by the refused event and the refusal where the event id could be read (the two bad sales
    // share the sample's event id and stay two entries), else by the message.
    assert_eq!(items[1].id, "bad-json");
    assert_eq!(items[1].body, "{not json", "the input is kept as received");
    assert!(items[0].id.starts_with("ingest:evt-") && items[2].id.starts_with("ingest:evt-"));
    assert_ne!(items[0].id, items[2].id);
    assert_eq!(
        items[0].rejection.correlation_id.as_deref(),
        Some("pos-store-042-r-000123")
    );
    let exceptions = types(&w.bus)
        .iter()
        .filter(|t| t.ends_with("WorkflowException"))
        .count();
    assert_eq!(exceptions, 3);
    assert_eq!(w.metrics.get("quarantined{reason=invalid_json}"), 1);

    // An event id that is no id (far beyond a key's size) does not name the entry: the message does.
    let mut long_id = sample_sale();
    long_id["detail"]["metadata"]["event_id"] = "x".repeat(3_000).into();
    let outcome = ingest.run(&[msg("long-id", &long_id.to_string())]).await;
    assert_eq!(outcome.quarantined, ["long-id"]);
    let items = w.state.list(10).await.unwrap();
    assert!(items.iter().any(|i| i.id == "long-id"), "{items:?}");
}

#[tokio::test]
async fn the_same_receipt_with_different_content_is_refused_and_recorded_on_the_saga() {
    let w = World::new();
    w.process(&sample_sale().to_string()).await;
    let mut altered = sample_sale();
    altered["detail"]["metadata"]["event_id"] = "evt-other".into();
    altered["detail"]["data"]["lines"][0]["sku"] = "SKU-OTHER".into();
    let outcome = w.runner("ingest").run(&[msg("m9", &altered.to_string())]).await;
    assert_eq!(outcome.quarantined, ["m9"]);
    let item = &w.state.list(10).await.unwrap()[0];
    assert_eq!(item.rejection.reason, ReasonCode::IdempotencyKeyReused);
    let saga = w.saga(SAGA).await;
    assert!(saga.has_step("ingest", StepOutcome::Refused));
    assert_eq!(saga.status, SagaStatus::Completed, "the first sale stands");
    assert_eq!(w.erp.calls.load(Ordering::SeqCst), 1);

    // Delivered again (and as another message): one refusal on the timeline, one quarantine entry.
    for m in ["m9", "m10"] {
        let outcome = w.runner("ingest").run(&[msg(m, &altered.to_string())]).await;
        assert_eq!(outcome.quarantined, [m]);
    }
    let saga = w.saga(SAGA).await;
    let refusals = saga
        .steps
        .iter()
        .filter(|e| e.step == "ingest" && e.outcome == StepOutcome::Refused)
        .count();
    assert_eq!(refusals, 1, "{:#?}", saga.steps);
    assert_eq!(w.state.list(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_event_on_the_wrong_queue_is_quarantined_not_looped() {
    let w = World::new();
    let tier = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/samples/TierChanged.json"
    ))
    .unwrap();
    let outcome = w.runner("post-sale-to-erp").run(&[msg("m1", &tier)]).await;
    assert_eq!(outcome.quarantined, ["m1"]);
    assert_eq!(
        w.state.list(1).await.unwrap()[0].rejection.reason,
        ReasonCode::UnknownEventType
    );
}

/// A step is built with only the ports it uses: `ingest` starts where the ERP and loyalty settings are
/// missing, a step that calls the ERP (or the member systems) says which port it could not connect, an
/// unknown name is refused.
#[test]
fn a_step_connects_only_the_ports_it_uses() {
    let w = World::new();
    let mut wiring = w.wiring();
    wiring.erp = Arc::new(|| Err("ERP_BASE_URL is not set".into()));
    wiring.loyalty = Arc::new(|| Err("LOYALTY_BASE_URL is not set".into()));
    assert_eq!(wiring.step("ingest").unwrap().name(), "ingest");
    let Err(e) = wiring.step("post-sale-to-erp") else {
        panic!("post-sale-to-erp needs the ERP");
    };
    assert_eq!(
        e.to_string(),
        "post-sale-to-erp needs the ERP: ERP_BASE_URL is not set"
    );
    let Err(e) = wiring.step("reverse-loyalty") else {
        panic!("reverse-loyalty needs the loyalty platform");
    };
    assert!(e.to_string().contains("loyalty platform"), "{e}");
    wiring.member_systems = Arc::new(|| Err("CRM_AUTH is not set".into()));
    let Err(e) = wiring.step("sync-member") else {
        panic!("sync-member needs the member systems");
    };
    assert_eq!(
        e.to_string(),
        "sync-member needs the member systems: CRM_AUTH is not set"
    );
    assert!(wiring.step("no-such-step").is_err());
    // Every step the template may name can be built from a full wiring.
    for name in retail_sync_core::steps::STEPS {
        assert_eq!(w.wiring().step(name).unwrap().name(), name);
    }
}

/// A function binary connects only the ports its step declares (`Kind::PORTS`), so that it links only
/// those connectors: every step, with each port it does not declare replaced by one that fails the test
/// when touched, still builds under its batch runner, and by the name it declares.
#[test]
fn every_step_touches_only_the_ports_it_declares() {
    use retail_sync_core::steps::{Kind, WithKind, by_name};
    struct Check<'a>(&'a World);
    impl WithKind for Check<'_> {
        type Out = &'static str;
        fn with<K: Kind>(self) -> &'static str {
            let mut wiring = self.0.wiring();
            let ports = K::PORTS;
            let step = K::BINARY;
            if !ports.erp {
                wiring.erp = Arc::new(move || panic!("{step} connected the ERP"));
            }
            if !ports.loyalty {
                wiring.loyalty = Arc::new(move || panic!("{step} connected the loyalty platform"));
            }
            if !ports.member_systems {
                wiring.member_systems = Arc::new(move || panic!("{step} connected the member systems"));
            }
            if !ports.channel {
                wiring.channel_bus = Arc::new(move || panic!("{step} connected the channel bus"));
                wiring.channel_mapping = Arc::new(move |_| panic!("{step} read a platform mapping"));
            }
            if !ports.channel_outcomes {
                wiring.channel_outcomes = Arc::new(move |_| panic!("{step} asked for an order API"));
            }
            let runner = wiring.runner_of::<K>().unwrap();
            assert_eq!(runner.step.name(), step);
            step
        }
    }
    let w = World::new();
    for name in retail_sync_core::steps::STEPS {
        assert_eq!(by_name(name, Check(&w)), Some(name));
    }
    assert_eq!(by_name("no-such-step", Check(&w)), None);
}

/// The template lets exactly the functions whose step reads its batch's sagas ahead
/// (`Workflow::READS_ITS_SAGA`) batch-read the saga table: one without the grant would fail every
/// read-ahead (and fall back to a read per message), one with it and no use would hold a right it
/// does not need.
#[test]
fn the_template_grants_the_saga_batch_read_to_the_steps_that_read_ahead() {
    let path = format!("{}/../../infra/template.yaml", env!("CARGO_MANIFEST_DIR"));
    let t = retail_sync_topology::topology::template_json(&std::fs::read_to_string(path).unwrap()).unwrap();
    let resources = t["Resources"].as_object().unwrap();
    let grants_batch_read = |role: &str| {
        resources[role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .any(|st| {
                st["Action"] == "dynamodb:BatchGetItem" && st["Resource"]["Fn::GetAtt"] == "SagaTable.Arn"
            })
    };
    let w = World::new();
    let mut reading = Vec::new();
    for (id, f) in resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
    {
        let Some(binary) = f["Metadata"]["BuildProperties"]["Binary"].as_str() else {
            continue;
        };
        let Ok(step) = w.wiring().step(binary) else {
            continue;
        };
        let role = f["Properties"]["Role"]["Fn::GetAtt"]
            .as_str()
            .unwrap()
            .trim_end_matches(".Arn");
        assert_eq!(grants_batch_read(role), step.reads_ahead(), "{id} ({binary})");
        if step.reads_ahead() {
            reading.push(binary);
        }
    }
    reading.sort();
    assert_eq!(
        reading,
        [
            "accrue-loyalty",
            "cancel-order",
            "commit-redemption",
            "compensate",
            "post-return-to-erp",
            "post-sale-to-erp",
            "reverse-loyalty"
        ]
    );
}

/// The source policy: a POS may not place a web order, a CRM may not sell, and a source that is no
/// channel's sends nothing; each is quarantined `source_not_allowed` and nothing starts.
#[tokio::test]
async fn a_source_may_send_only_what_its_channel_sends() {
    let w = World::new();
    let ingest = w.runner("ingest");
    let sample = |name: &str| -> Value {
        let path = format!("{}/../../events/samples/{name}.json", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let mut order_from_pos = sample("OrderPlaced");
    order_from_pos["source"] = "retail.pos".into();
    let mut sale_from_crm = sample_sale();
    sale_from_crm["source"] = "retail.crm".into();
    let mut sale_from_nowhere = sample_sale();
    sale_from_nowhere["source"] = "retail.kiosk".into();
    // Sent by the web shop (a source that may send orders), claiming to be the mobile app.
    let mut posing = sample("OrderPlaced");
    posing["detail"]["metadata"]["channel"] = "mobile".into();
    let outcome = ingest
        .run(&[
            msg("order-from-pos", &order_from_pos.to_string()),
            msg("sale-from-crm", &sale_from_crm.to_string()),
            msg("sale-from-nowhere", &sale_from_nowhere.to_string()),
            msg("posing", &posing.to_string()),
            msg("good", &sample_sale().to_string()),
        ])
        .await;
    assert!(outcome.failed.is_empty());
    assert_eq!(
        outcome.quarantined,
        ["order-from-pos", "sale-from-crm", "sale-from-nowhere", "posing"]
    );
    let items = w.state.list(10).await.unwrap();
    assert!(
        items
            .iter()
            .all(|i| i.rejection.reason == ReasonCode::SourceNotAllowed),
        "{items:#?}"
    );
    let messages: Vec<&str> = items.iter().map(|i| i.rejection.message.as_str()).collect();
    assert!(
        messages.contains(
            &"source retail.pos may not send OrderPlaced; it may send SaleCompleted, ReturnReceived, \
              RefundSettled, CustomerUpdated, MemberEnrolled"
        ),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("\"retail.kiosk\" is not a channel's"))
    );
    assert!(
        messages.contains(&"metadata.channel \"mobile\" is not the channel of source \"retail.ecommerce\""),
        "{messages:#?}"
    );
    // Only the good sale started a saga.
    assert_eq!(w.metrics.get("accepted{event_type=SaleCompleted}"), 1);
    assert_eq!(w.metrics.get("accepted{event_type=OrderPlaced}"), 0);
}

/// An order mapped from a platform hears its outcomes back once each: points earned per shipment (a
/// redelivery tells nothing twice), a refusal recorded and announced `channel_rejected`; a POS receipt's
/// accrual, an order of no platform and a platform not configured hear nothing.
#[tokio::test]
async fn an_orders_outcomes_are_told_to_its_platform_once_each() {
    let w = World::new();
    let ingest = w.runner("ingest");
    let order = |order_id: &str, platform: Option<&str>| {
        let mut placed: Value = serde_json::from_str(
            &std::fs::read_to_string(format!(
                "{}/../../events/samples/OrderPlaced.json",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        )
        .unwrap();
        placed["detail"]["data"]["order_id"] = order_id.into();
        placed["detail"]["metadata"]["event_id"] = format!("evt-{order_id}").into();
        if let Some(platform) = platform {
            placed["detail"]["data"]["channel_order"] = json!({"platform": platform, "order_ref": "1001"});
        }
        placed.to_string()
    };
    for (id, platform) in [
        ("web-1", Some("shopify")),
        ("web-2", None),
        ("web-3", Some("adobe-commerce")),
    ] {
        assert!(
            ingest
                .run(&[msg(id, &order(id, platform))])
                .await
                .failed
                .is_empty()
        );
    }
    let accrued = |order_id: &str, shipment: &str, kind: &str| {
        let transaction = if kind == "order" {
            json!({"kind": "order", "order_id": order_id})
        } else {
            json!({"kind": "receipt", "store_id": "store-042", "receipt_id": "r-1"})
        };
        json!({
            "version": "0", "id": "x", "detail-type": "LoyaltyAccrued", "source": "retail-sync",
            "time": "2026-11-20T10:00:01Z", "resources": [],
            "detail": {
                "metadata": {"event_id": format!("acc-{order_id}-{shipment}"), "schema_version": 1,
                             "correlation_id": order_id, "occurred_at": "2026-11-20T10:00:00Z", "channel": "retail_sync"},
                "data": {"member_id": "m-1001", "transaction": transaction, "shipment_id": shipment, "points": 129,
                         "eligible_minor": 12900, "currency": "EUR", "loyalty_transaction_id": "LT-1"}
            }
        })
        .to_string()
    };
    let notify = w.runner("notify-channel");
    for body in [
        accrued("web-1", "shp-1", "order"),
        accrued("web-1", "shp-1", "order"),
        accrued("web-2", "shp-1", "order"),
        accrued("web-3", "shp-1", "order"),
        accrued("web-1", "shp-1", "receipt"),
    ] {
        let outcome = notify.run(&[msg("n", &body)]).await;
        assert!(
            outcome.failed.is_empty() && outcome.quarantined.is_empty(),
            "{outcome:?}"
        );
    }
    let told = w.platform.told.lock().unwrap().clone();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].outcome_id, "earned-shp-1");
    assert_eq!(told[0].order.order_ref.as_str(), "1001");
    assert_eq!(told[0].summary(), "Loyalty: 129 points earned");
    let saga = w.saga("order:web-1").await;
    assert!(
        saga.steps
            .iter()
            .any(|s| s.step == "notify-channel" && s.message.contains("129 points earned"))
    );

    w.platform.refuse.store(true, Ordering::SeqCst);
    let refused = notify.run(&[msg("n", &accrued("web-1", "shp-2", "order"))]).await;
    assert!(refused.failed.is_empty(), "{refused:?}");
    let kept = w.state.list(10).await.unwrap();
    assert!(
        kept.iter()
            .any(|q| q.step == "notify-channel" && q.rejection.reason == ReasonCode::ChannelRejected),
        "announced and kept for a person: {kept:?}"
    );
    let saga = w.saga("order:web-1").await;
    assert!(
        saga.steps.iter().any(|s| s.step == "notify-channel"
            && s.outcome == StepOutcome::Failed
            && s.message.contains("Owner does not exist")),
        "{:?}",
        saga.steps
    );
    assert!(types(&w.bus).contains(&"retail-sync/WorkflowException".to_owned()));
}

/// A saga store that counts single and batch reads, and can change sagas behind a batch read's back
/// (another delivery or an operator writing them between the read-ahead and the step).
struct ReadCounting {
    inner: Arc<MemoryState>,
    loads: AtomicU32,
    batch_reads: Mutex<Vec<usize>>,
    /// Saved right after the next batch read.
    meanwhile: Mutex<Vec<retail_sync_core::saga::Saga>>,
}

impl ReadCounting {
    fn over(state: &Arc<MemoryState>) -> Arc<Self> {
        Arc::new(Self {
            inner: state.clone(),
            loads: AtomicU32::new(0),
            batch_reads: Mutex::new(Vec::new()),
            meanwhile: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl SagaStore for ReadCounting {
    async fn create(
        &self,
        saga: &retail_sync_core::saga::Saga,
    ) -> Result<Option<retail_sync_core::saga::Saga>, Error> {
        self.inner.create(saga).await
    }

    async fn load(&self, id: &SagaId) -> Result<Option<retail_sync_core::saga::Saga>, Error> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(id).await
    }

    async fn load_many(&self, ids: &[SagaId]) -> Result<Vec<retail_sync_core::saga::Saga>, Error> {
        self.batch_reads.lock().unwrap().push(ids.len());
        let found = self.inner.load_many(ids).await?;
        let meanwhile = std::mem::take(&mut *self.meanwhile.lock().unwrap());
        for saga in meanwhile {
            self.inner.save(&saga, None).await?;
        }
        Ok(found)
    }

    async fn find_by_correlation(
        &self,
        correlation_id: &retail_sync_contracts::values::CorrelationId,
    ) -> Result<Option<retail_sync_core::saga::Saga>, Error> {
        self.inner.find_by_correlation(correlation_id).await
    }

    async fn save(
        &self,
        saga: &retail_sync_core::saga::Saga,
        completion: Option<&retail_sync_core::idempotency::IdempotencyRecord>,
    ) -> Result<(), Error> {
        self.inner.save(saga, completion).await
    }
}

/// The sample sale as receipt `r-{n}` of store-042, a transaction of its own.
fn numbered_sale(n: u32) -> Message {
    let mut sale = sample_sale();
    sale["detail"]["data"]["receipt_id"] = format!("r-{n}").into();
    sale["detail"]["metadata"]["event_id"] = format!("evt-sale-{n}").into();
    sale["detail"]["metadata"]["correlation_id"] = format!("pos-store-042-r-{n}").into();
    msg(&format!("sale-{n}"), &sale.to_string())
}

/// Runs `step` over `messages` with the sagas read through `store`; the events it published, as the
/// bus would deliver them.
async fn run_reading(w: &World, store: &Arc<ReadCounting>, step: &str, messages: &[Message]) -> Vec<String> {
    let before = w.bus.published().len();
    let mut wiring = w.wiring();
    wiring.base.sagas = store.clone();
    let outcome = wiring.runner(step).unwrap().run(messages).await;
    assert!(
        outcome.failed.is_empty() && outcome.quarantined.is_empty(),
        "{step}: {outcome:?}"
    );
    w.bus.published()[before..].iter().map(envelope).collect()
}

/// A batch's sagas are read ahead in one batch read (on DynamoDB one `BatchGetItem` instead of a
/// `GetItem` a message), each handed to the first delivery that loads it; a second delivery of the
/// same sale in the batch reads the store, sees the first one's write and posts nothing twice; a batch
/// of one reads as before.
#[tokio::test]
async fn a_batch_reads_its_sagas_ahead_in_one_read_and_a_duplicate_in_it_reads_the_store() {
    let w = World::new();
    let sales: Vec<Message> = (1..=3).map(numbered_sale).collect();
    let outcome = w.runner("ingest").run(&sales).await;
    assert!(outcome.failed.is_empty() && outcome.quarantined.is_empty());
    let accepted: Vec<String> = w.bus.published().iter().map(envelope).collect();
    assert_eq!(accepted.len(), 3);

    let store = ReadCounting::over(&w.state);
    let batch = [
        msg("a", &accepted[0]),
        msg("b", &accepted[1]),
        msg("a-again", &accepted[0]),
        msg("c", &accepted[2]),
    ];
    let posted = run_reading(&w, &store, "post-sale-to-erp", &batch).await;
    assert_eq!(*store.batch_reads.lock().unwrap(), [3]);
    assert_eq!(
        store.loads.load(Ordering::SeqCst),
        1,
        "only the duplicate reads on its own"
    );
    assert_eq!(w.erp.calls.load(Ordering::SeqCst), 3);
    // The duplicate announces the same fact again (same ids), as any redelivery does.
    assert_eq!(posted.len(), 4);

    let distinct: Vec<String> = posted
        .iter()
        .take(2)
        .chain(posted.iter().skip(3))
        .cloned()
        .collect();
    let batch: Vec<Message> = distinct
        .iter()
        .enumerate()
        .map(|(i, b)| msg(&format!("p{i}"), b))
        .collect();
    run_reading(&w, &store, "accrue-loyalty", &batch).await;
    assert_eq!(*store.batch_reads.lock().unwrap(), [3, 3]);
    assert_eq!(store.loads.load(Ordering::SeqCst), 1);
    assert_eq!(w.loyalty.calls.load(Ordering::SeqCst), 3);
    for n in 1..=3 {
        let saga = w.saga(&format!("receipt:store-042:r-{n}")).await;
        assert_eq!(saga.status, SagaStatus::Completed, "r-{n}");
        assert_eq!(
            timeline(&saga),
            [
                ("ingest", StepOutcome::Accepted),
                ("post-sale-to-erp", StepOutcome::Done),
                ("accrue-loyalty", StepOutcome::Done)
            ],
            "r-{n}"
        );
    }

    // A batch of one reads its saga on its own: a batch read would be one request as well.
    let fourth = numbered_sale(4);
    w.runner("ingest").run(std::slice::from_ref(&fourth)).await;
    let accepted = envelope(w.bus.published().last().unwrap());
    run_reading(&w, &store, "post-sale-to-erp", &[msg("d", &accepted)]).await;
    assert_eq!(*store.batch_reads.lock().unwrap(), [3, 3]);
    assert_eq!(store.loads.load(Ordering::SeqCst), 2);
}

/// A saga read ahead and changed before the step writes it (by another delivery) is not written over:
/// the versioned write fails, the step reads the saga again and applies its change to what is stored.
#[tokio::test]
async fn a_saga_changed_after_the_read_ahead_is_read_again_and_nothing_is_lost() {
    let w = World::new();
    let sales: Vec<Message> = (1..=2).map(numbered_sale).collect();
    w.runner("ingest").run(&sales).await;
    let accepted = delivered(&w.bus.published(), "s");
    let store = ReadCounting::over(&w.state);
    let mut meanwhile = w.saga("receipt:store-042:r-1").await;
    meanwhile.record(
        "operator",
        StepOutcome::Retried,
        "changed meanwhile",
        "2026-11-20T10:00:00Z".parse().unwrap(),
    );
    meanwhile.version += 1;
    store.meanwhile.lock().unwrap().push(meanwhile);
    run_reading(&w, &store, "post-sale-to-erp", &accepted).await;
    assert_eq!(*store.batch_reads.lock().unwrap(), [2]);
    assert_eq!(
        store.loads.load(Ordering::SeqCst),
        1,
        "the changed saga is read again"
    );
    assert_eq!(w.erp.calls.load(Ordering::SeqCst), 2);
    let changed = w.saga("receipt:store-042:r-1").await;
    assert_eq!(
        timeline(&changed),
        [
            ("ingest", StepOutcome::Accepted),
            ("operator", StepOutcome::Retried),
            ("post-sale-to-erp", StepOutcome::Done)
        ]
    );
    assert_eq!(changed.version, 3);
    assert!(changed.ledger.erp_document_id.is_some());
}

/// A batch's messages are parsed once, when the batch reads its sagas ahead, and each handling takes
/// its own message's input. Two messages under one id (no queue delivers so) are each parsed by their
/// own handling: the refused one is refused, not handed the other's input.
#[tokio::test]
async fn each_message_of_a_read_ahead_batch_is_handled_as_its_own_body() {
    let w = World::new();
    let sales: Vec<Message> = (1..=4).map(numbered_sale).collect();
    w.runner("ingest").run(&sales).await;
    let mut accepted = delivered(&w.bus.published(), "s");
    accepted[1].body = "{\"not\": \"an event\"}".into();
    accepted[2].id = accepted[1].id.clone();
    let store = ReadCounting::over(&w.state);
    let mut wiring = w.wiring();
    wiring.base.sagas = store.clone();
    let outcome = wiring.runner("post-sale-to-erp").unwrap().run(&accepted).await;
    assert_eq!(outcome.quarantined, ["s1"], "{outcome:?}");
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    assert_eq!(
        *store.batch_reads.lock().unwrap(),
        [2],
        "sales 1 and 4 are read ahead"
    );
    assert_eq!(
        w.erp.calls.load(Ordering::SeqCst),
        3,
        "sales 1, 3 and 4, once each"
    );
    for sale in [
        "receipt:store-042:r-1",
        "receipt:store-042:r-3",
        "receipt:store-042:r-4",
    ] {
        assert!(w.saga(sale).await.ledger.erp_document_id.is_some(), "{sale}");
    }
    assert!(
        w.saga("receipt:store-042:r-2")
            .await
            .ledger
            .erp_document_id
            .is_none()
    );
}

/// Two ecommerce orders refused by the ERP (failed, never booked), a follow-up (`name`: a sample event)
/// of each as ingest passes it on, and the outcome of `step` over both in one batch when an operator's
/// retry reopens the first order between the batch's read-ahead and its handling.
async fn follow_ups_of_closed_orders_one_reopened(
    w: &World,
    name: &str,
    step: &str,
) -> retail_sync_core::batch::BatchOutcome {
    let event = |name: &str, order: &str| {
        let path = format!("{}/../../events/samples/{name}.json", env!("CARGO_MANIFEST_DIR"));
        let mut e: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let data = &mut e["detail"]["data"];
        match name {
            "ReturnReceived" => data["original"]["order_id"] = order.into(),
            _ => data["order_id"] = order.into(),
        }
        if name == "OrderPlaced" {
            // Without a redemption: straight to the ERP, nothing to give back when it refuses.
            data.as_object_mut().unwrap().remove("redemption");
        }
        e["detail"]["metadata"]["event_id"] = format!("evt-{name}-{order}").into();
        e["detail"]["metadata"]["correlation_id"] = format!("web-{order}").into();
        msg(&format!("{name}-{order}"), &e.to_string())
    };
    let orders = [event("OrderPlaced", "ord-1"), event("OrderPlaced", "ord-2")];
    let outcome = w.runner("ingest").run(&orders).await;
    assert!(
        outcome.failed.is_empty() && outcome.quarantined.is_empty(),
        "{outcome:?}"
    );
    for order in ["order:ord-1", "order:ord-2"] {
        let mut failed = w.saga(order).await;
        failed.status = SagaStatus::Failed;
        failed.version += 1;
        w.state.save(&failed, None).await.unwrap();
    }
    let before = w.bus.published().len();
    let follow_ups = [event(name, "ord-1"), event(name, "ord-2")];
    let outcome = w.runner("ingest").run(&follow_ups).await;
    assert!(
        outcome.failed.is_empty() && outcome.quarantined.is_empty(),
        "{outcome:?}"
    );
    let accepted = delivered(&w.bus.published()[before..], "f");
    assert_eq!(accepted.len(), 2);

    let store = ReadCounting::over(&w.state);
    let mut reopened = w.saga("order:ord-1").await;
    reopened.status = SagaStatus::Running;
    reopened.version += 1;
    store.meanwhile.lock().unwrap().push(reopened);
    let mut wiring = w.wiring();
    wiring.base.sagas = store.clone();
    let outcome = wiring.runner(step).unwrap().run(&accepted).await;
    assert_eq!(*store.batch_reads.lock().unwrap(), [2]);
    outcome
}

/// A transaction closed when its batch read it ahead and reopened before its message is handled: its
/// cancellation is not dropped as "nothing to cancel" but waits for a delivery that reads the reopened
/// saga; the cancellation of the order still closed is dropped as before.
#[tokio::test]
async fn a_transaction_reopened_after_the_read_ahead_makes_its_cancellation_wait() {
    let w = World::new();
    let outcome = follow_ups_of_closed_orders_one_reopened(&w, "OrderCancelled", "cancel-order").await;
    assert_eq!(
        outcome.failed,
        ["f0"],
        "the reopened order's cancellation waits: {outcome:?}"
    );
    assert!(outcome.quarantined.is_empty(), "{outcome:?}");
    let skipped = |saga: &retail_sync_core::saga::Saga| {
        saga.steps
            .iter()
            .any(|s| s.step == "cancel-order" && s.outcome == StepOutcome::Skipped)
    };
    assert!(!skipped(&w.saga("order:ord-1").await));
    assert!(skipped(&w.saga("order:ord-2").await));
}

/// The same for a return: not refused as `transaction_closed` for a transaction reopened since the
/// read-ahead (it waits), refused for the one still closed.
#[tokio::test]
async fn a_transaction_reopened_after_the_read_ahead_makes_its_return_wait() {
    let w = World::new();
    let outcome = follow_ups_of_closed_orders_one_reopened(&w, "ReturnReceived", "post-return-to-erp").await;
    assert_eq!(
        outcome.failed,
        ["f0"],
        "the reopened order's return waits: {outcome:?}"
    );
    assert_eq!(outcome.quarantined, ["f1"], "{outcome:?}");
    let refused = w.state.list(10).await.unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].rejection.reason, ReasonCode::TransactionClosed);
    assert!(
        refused[0].rejection.message.contains("ret-9001"),
        "{}",
        refused[0].rejection.message
    );
}
