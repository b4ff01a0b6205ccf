//! The order, return, redemption and compensation workflows end to end, each scenario on the embedded
//! backend and on moto server (the AWS backend, provisioned from the same template), against the
//! reference ERP and loyalty simulators. A scenario is written once, over any backend; the
//! `scenarios!` macro runs it on both.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use retail_sync_aws::ProvisionOptions;
use retail_sync_cli::backends::Backend;
use retail_sync_cli::input::Input;
use retail_sync_cli::local::{LocalOptions, LocalSystem, Protection, Simulators, open_embedded};
use retail_sync_cli::report::Report;
use retail_sync_contracts::values::{Amount, Currency, HoldId, MemberId, Points};
use retail_sync_core::idempotency::{IdempotencyKey, IdempotencyPolicy};
use retail_sync_core::ledger::ReturnStatus;
use retail_sync_core::memory::ManualClock;
use retail_sync_core::ports::{Clock, Hold, HoldRequest, HoldStatus, Loyalty};
use retail_sync_core::reconcile::{RepairMode, Settings, Window};
use retail_sync_core::saga::{Saga, SagaStatus};
use retail_sync_redemption::{
    ApiRequest, ApiResponse, Caller, OutagePolicy, RedemptionApi, RedemptionConfig,
};
use retail_sync_simulators::{
    ErpPosting, FaultKind, Faults, InProcessLoyalty, LoyaltyTransactionKind, Tamper,
};
use retail_sync_testkit::moto::MotoServer;
use retail_sync_tests::workspace;
use retail_sync_topology::Topology;

/// What a scenario gets: the system on one backend, the simulators behind it, the clock of the loyalty
/// platform (for hold expiry).
struct World<B: Backend> {
    system: LocalSystem<B>,
    sims: Simulators,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

fn topology() -> Topology {
    Topology::load(&workspace().join("infra/template.yaml")).unwrap()
}

fn simulators() -> (Simulators, Arc<ManualClock>) {
    let sims = Simulators::default();
    let clock = Arc::new(ManualClock::new(jiff::Timestamp::now()));
    sims.loyalty.set_clock(clock.clone());
    // Members start with points to redeem.
    for member in ["m-1", "m-2"] {
        sims.loyalty.seed_balance(member, Points::new(5_000).unwrap());
    }
    (sims, clock)
}

fn embedded() -> World<retail_sync_embedded::Embedded> {
    let dir = tempfile::tempdir().unwrap();
    let mut options = LocalOptions::new(
        workspace().join("infra/template.yaml"),
        dir.path().join("state.db"),
    );
    // Long enough for a waiting follow-up's sale to be processed between its deliveries.
    options.visibility_timeout = Duration::from_millis(300);
    let (sims, clock) = simulators();
    World {
        system: open_embedded(&options, sims.clone()).unwrap(),
        sims,
        clock,
        _dir: dir,
    }
}

async fn moto() -> World<retail_sync_aws::AwsBackend> {
    moto_with(Protection::default()).await
}

/// A moto world whose failed messages are retried as `protection` paces them.
async fn moto_with(protection: Protection) -> World<retail_sync_aws::AwsBackend> {
    let topology = topology();
    let options = ProvisionOptions::unique().with_visibility_timeout(Duration::from_secs(1));
    let backend = Arc::new(MotoServer::shared().backend(&topology, &options).await);
    let (sims, clock) = simulators();
    World {
        system: LocalSystem::protected(backend, topology, sims.clone(), protection).unwrap(),
        sims,
        clock,
        _dir: tempfile::tempdir().unwrap(),
    }
}

impl<B: Backend> World<B> {
    /// Puts the events on the bus and runs every step until nothing is left to do.
    async fn run(&self, inputs: Vec<Input>) {
        let fed = self.system.feed(&inputs).await.unwrap();
        assert_eq!(fed.unrouted, 0, "every event has a rule");
        self.system.run_until_idle(|_| {}).await.unwrap();
    }

    async fn saga(&self, id: &str) -> Saga {
        let sagas = self.system.backend.all_sagas().await.unwrap();
        sagas
            .into_iter()
            .find(|s| s.id.as_str() == id)
            .unwrap_or_else(|| panic!("no saga {id}"))
    }

    async fn report(&self) -> Report {
        self.system.report(Default::default()).await.unwrap()
    }

    fn balance(&self, member: &str) -> i64 {
        self.sims.loyalty.balance(member).map_or(0, Points::get)
    }

    fn loyalty(&self) -> InProcessLoyalty {
        InProcessLoyalty(self.sims.loyalty.clone())
    }

    /// The redemption API over this backend's idempotency table and the loyalty simulator.
    fn api(&self, outage_policy: OutagePolicy) -> RedemptionApi {
        RedemptionApi {
            loyalty: Arc::new(self.loyalty()),
            idempotency: self.system.backend.clone(),
            members: self.system.backend.clone(),
            clock: self.clock.clone(),
            policy: IdempotencyPolicy::default(),
            config: RedemptionConfig {
                outage_policy,
                ..RedemptionConfig::default()
            },
        }
    }

    /// A hold as the experience API creates it at checkout.
    async fn hold(&self, member: &str, points: i64, basket_net: i64, key: &str) -> Hold {
        let request = HoldRequest {
            member_id: MemberId::parse(member).unwrap(),
            points: Points::new(points).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            basket_net_minor: Amount::new(basket_net).unwrap(),
            expires_at: self.clock.now() + jiff::SignedDuration::from_secs(900),
        };
        self.loyalty()
            .create_hold(&request, &IdempotencyKey::for_step("api", key))
            .await
            .unwrap()
    }
}

// --- Events, as channels send them -------------------------------------------------------------------

fn envelope(
    source: &str,
    detail_type: &str,
    id: &str,
    correlation: &str,
    channel: &str,
    data: Value,
) -> Input {
    Input::Event {
        source: source.into(),
        detail_type: detail_type.into(),
        detail: json!({
            "metadata": {
                "event_id": format!("evt-{}-{id}", detail_type.to_lowercase()),
                "schema_version": 1,
                "correlation_id": correlation,
                "occurred_at": "2026-11-20T10:15:00Z",
                "channel": channel,
            },
            "data": data,
        }),
    }
}

/// Lines as (quantity, unit price); every line earns; 20 % tax.
fn lines(specs: &[(u32, i64)]) -> (Vec<Value>, Value) {
    let mut out = Vec::new();
    let (mut net, mut tax) = (0, 0);
    for (i, (q, unit)) in specs.iter().enumerate() {
        let line_net = i64::from(*q) * unit;
        out.push(json!({
            "line_no": i + 1, "sku": format!("SKU-{}", i + 1), "quantity": q, "unit_price_minor": unit,
            "discount_minor": 0, "net_minor": line_net, "tax_minor": line_net / 5, "loyalty_eligible": true,
        }));
        net += line_net;
        tax += line_net / 5;
    }
    (
        out,
        json!({"net_minor": net, "tax_minor": tax, "gross_minor": net + tax}),
    )
}

fn order(id: &str, member: &str, specs: &[(u32, i64)], redemption: Option<(&str, i64, i64)>) -> Input {
    let (lines, totals) = lines(specs);
    let mut data =
        json!({"order_id": id, "member_id": member, "currency": "EUR", "lines": lines, "totals": totals});
    if let Some((hold, points, value)) = redemption {
        data["redemption"] = json!({"hold_id": hold, "points": points, "value_minor": value});
    }
    envelope(
        "retail.ecommerce",
        "OrderPlaced",
        id,
        &format!("c-{id}"),
        "ecommerce",
        data,
    )
}

/// The `redemption` of an order that spends all of `hold` (see [`order`]).
fn redeeming(hold: &Hold) -> Option<(&str, i64, i64)> {
    Some((hold.hold_id.as_str(), hold.points.get(), hold.value_minor.get()))
}

fn shipped(order: &str, shipment: &str, lines: &[(u32, u32)]) -> Input {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(l, q)| json!({"line_no": l, "quantity": q}))
        .collect();
    envelope(
        "retail.oms",
        "OrderShipped",
        shipment,
        &format!("c-{order}"),
        "oms",
        json!({"order_id": order, "shipment_id": shipment, "lines": lines}),
    )
}

fn cancelled(order: &str, id: &str, lines: Option<&[(u32, u32)]>) -> Input {
    let mut data = json!({"order_id": order, "reason": "customer changed their mind"});
    if let Some(lines) = lines {
        data["lines"] = lines
            .iter()
            .map(|(l, q)| json!({"line_no": l, "quantity": q}))
            .collect();
    }
    envelope(
        "retail.oms",
        "OrderCancelled",
        id,
        &format!("c-{order}"),
        "oms",
        data,
    )
}

/// A return of (line, quantity, refund) against `original`, handed back in a store.
fn returned(id: &str, original: Value, lines: &[(u32, u32, i64)]) -> Input {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(l, q, r)| json!({"line_no": l, "sku": format!("SKU-{l}"), "quantity": q, "refund_minor": r}))
        .collect();
    envelope(
        "retail.pos",
        "ReturnReceived",
        id,
        &format!("c-{id}"),
        "pos",
        json!({"return_id": id, "original": original, "store_id": "store-042", "currency": "EUR", "lines": lines}),
    )
}

fn of_order(id: &str) -> Value {
    json!({"kind": "order", "order_id": id})
}

fn sale(store: &str, receipt: &str, member: &str, specs: &[(u32, i64)]) -> Input {
    let (lines, totals) = lines(specs);
    let gross = totals["gross_minor"].clone();
    envelope(
        "retail.pos",
        "SaleCompleted",
        receipt,
        &format!("c-{receipt}"),
        "pos",
        json!({"store_id": store, "receipt_id": receipt, "member_id": member, "currency": "EUR",
               "lines": lines, "totals": totals, "tenders": [{"method": "card", "amount_minor": gross}]}),
    )
}

fn steps(saga: &Saga) -> String {
    saga.steps
        .iter()
        .map(|s| format!("{}: {} — {}", s.step, s.outcome.as_str(), s.message))
        .collect::<Vec<_>>()
        .join("\n")
}

// --- Scenarios ---------------------------------------------------------------------------------------

/// Two lines shipped in two shipments; then one unit of the second line comes back.
async fn split_shipment_then_partial_return<B: Backend>(w: World<B>) {
    w.run(vec![order("o-1", "m-1", &[(1, 12_900), (2, 2_450)], None)])
        .await;
    let s = w.saga("order:o-1").await;
    assert!(s.ledger.erp_document_id.is_some(), "{}", steps(&s));
    assert_eq!(s.ledger.points_accrued, None, "no accrual at order time");

    w.run(vec![
        shipped("o-1", "s-1", &[(1, 1), (2, 1)]),
        shipped("o-1", "s-2", &[(2, 1)]),
    ])
    .await;
    let s = w.saga("order:o-1").await;
    // 153 points on the first shipment (15,350), 24 on the second (2,450).
    assert_eq!(
        s.ledger.points_accrued.map(Points::get),
        Some(153 + 24),
        "{}",
        steps(&s)
    );
    assert_eq!(s.status, SagaStatus::Completed);
    assert_eq!(w.balance("m-1"), 5_000 + 177);

    w.run(vec![returned("ret-1", of_order("o-1"), &[(2, 1, 2_450)])])
        .await;
    let s = w.saga("order:o-1").await;
    let r = &s.ledger.returns[0];
    assert_eq!(r.status, ReturnStatus::Posted, "{}", steps(&s));
    assert!(r.erp_document_id.is_some());
    // floor(177 × 2,450 / 17,800) = 24.
    assert_eq!(r.points_reversed.map(Points::get), Some(24));
    assert_eq!(w.balance("m-1"), 5_000 + 177 - 24);
    let kinds: Vec<String> = w
        .sims
        .erp
        .postings()
        .iter()
        .map(|p| p.kind.as_str().to_owned())
        .collect();
    assert_eq!(kinds, ["sale", "return"]);
}

/// Two partial returns that add up to the whole order reverse exactly what it earned, and give back
/// exactly the points it redeemed.
async fn two_partial_returns_make_a_full_return<B: Backend>(w: World<B>) {
    let hold = w.hold("m-1", 500, 17_800, "checkout-o-2").await;
    w.run(vec![
        order("o-2", "m-1", &[(1, 12_900), (2, 2_450)], redeeming(&hold)),
        shipped("o-2", "s-1", &[(1, 1), (2, 2)]),
    ])
    .await;
    let s = w.saga("order:o-2").await;
    let earned = s
        .ledger
        .points_accrued
        .map(Points::get)
        .unwrap_or_else(|| panic!("{}", steps(&s)));
    assert_eq!(s.ledger.redemption.as_ref().map(|r| r.points.get()), Some(500));
    assert_eq!(w.balance("m-1"), 5_000 - 500 + earned);

    w.run(vec![returned("ret-a", of_order("o-2"), &[(2, 1, 2_400)])])
        .await;
    w.run(vec![returned(
        "ret-b",
        of_order("o-2"),
        &[(1, 1, 12_500), (2, 1, 2_400)],
    )])
    .await;
    let s = w.saga("order:o-2").await;
    let reversed: i64 = s
        .ledger
        .returns
        .iter()
        .map(|r| r.points_reversed.unwrap().get())
        .sum();
    assert_eq!(reversed, earned, "reversed == earned, exactly\n{}", steps(&s));
    let recredited: i64 = s
        .ledger
        .returns
        .iter()
        .map(|r| r.points_recredited.unwrap().get())
        .sum();
    assert_eq!(recredited, 500);
    assert_eq!(w.balance("m-1"), 5_000, "back where the member started");
}

/// More units than bought, and the same units twice, are refused with a visible reason.
async fn over_return_refused<B: Backend>(w: World<B>) {
    w.run(vec![
        order("o-3", "m-2", &[(2, 1_000)], None),
        shipped("o-3", "s-1", &[(1, 2)]),
    ])
    .await;
    w.run(vec![
        returned("ret-3a", of_order("o-3"), &[(1, 3, 3_000)]),
        returned("ret-3b", of_order("o-3"), &[(1, 2, 2_000)]),
    ])
    .await;
    w.run(vec![returned("ret-3c", of_order("o-3"), &[(1, 1, 1_000)])])
        .await;
    let report = w.report().await;
    let refused: Vec<_> = report
        .quarantine
        .iter()
        .filter(|q| q.reason == "over_return")
        .collect();
    assert_eq!(refused.len(), 2, "{:#?}", report.quarantine);
    assert!(refused.iter().all(|q| q.step == "post-return-to-erp"));
    let s = w.saga("order:o-3").await;
    assert_eq!(s.ledger.returns.len(), 1, "{}", steps(&s));
    assert_eq!(s.ledger.returns[0].return_id.as_str(), "ret-3b");
    assert_eq!(
        s.ledger.points_reversed().get(),
        s.ledger.points_accrued.unwrap().get()
    );
    assert_eq!(
        w.sims
            .erp
            .postings()
            .iter()
            .filter(|p| p.kind.as_str() == "return")
            .count(),
        1
    );
    assert!(steps(&s).contains("refused"));
}

/// A return that arrives before its sale has been processed waits and is retried; it does not fail.
async fn return_before_sale<B: Backend>(w: World<B>) {
    // The return alone first: it finds no sale and waits; the sale arrives while the runner is still
    // retrying it (which step runs first is otherwise up to the scheduler).
    let ret = returned(
        "ret-4",
        json!({"kind": "receipt", "store_id": "store-7", "receipt_id": "r-4"}),
        &[(1, 1, 1_000)],
    );
    w.system.feed(&[ret]).await.unwrap();
    let late_sale = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        w.system
            .feed(&[sale("store-7", "r-4", "m-2", &[(2, 1_000)])])
            .await
            .unwrap();
    };
    let (ran, ()) = tokio::join!(w.system.run_until_idle(|_| {}), late_sale);
    ran.unwrap();
    // Whatever the runner drained before the sale came, finish.
    w.system.run_until_idle(|_| {}).await.unwrap();
    let s = w.saga("receipt:store-7:r-4").await;
    assert_eq!(s.ledger.returns.len(), 1, "{}", steps(&s));
    assert_eq!(s.ledger.returns[0].status, ReturnStatus::Posted);
    assert_eq!(s.ledger.points_reversed().get(), 10, "half of 20 points");
    let report = w.report().await;
    assert!(report.quarantine.is_empty(), "{:#?}", report.quarantine);
    assert!(report.dead_letter_queues.values().all(Vec::is_empty));
    assert!(
        report.metrics.get("retried{class=not_yet}").copied().unwrap_or(0) >= 1,
        "{:?}",
        report.metrics
    );
}

/// Cancelling an order after its points were redeemed gives them back and cancels in the ERP; the
/// cancelled lines never ship, hence never earn.
async fn cancellation_after_redemption<B: Backend>(w: World<B>) {
    let hold = w.hold("m-2", 800, 9_000, "checkout-o-5").await;
    w.run(vec![order(
        "o-5",
        "m-2",
        &[(1, 5_000), (2, 2_000)],
        redeeming(&hold),
    )])
    .await;
    assert_eq!(w.balance("m-2"), 5_000 - 800);
    w.run(vec![cancelled("o-5", "cx-1", None)]).await;
    let s = w.saga("order:o-5").await;
    assert_eq!(s.status, SagaStatus::Cancelled, "{}", steps(&s));
    assert_eq!(
        s.ledger.cancellations[0].points_recredited.map(Points::get),
        Some(800)
    );
    assert_eq!(w.balance("m-2"), 5_000);
    let kinds: Vec<String> = w
        .sims
        .erp
        .postings()
        .iter()
        .map(|p| p.kind.as_str().to_owned())
        .collect();
    assert_eq!(kinds, ["sale", "cancellation"]);

    // The OMS reports that line 1 had left after all: the shipment reinstates it (the ERP charges it
    // again, the 445 redeemed points its cancellation gave back — 800 less the share of the 4,000 still
    // cancelled, 355 — are taken back) and it earns on 5,000 less its 444 share of the redemption.
    w.run(vec![shipped("o-5", "s-late", &[(1, 1)])]).await;
    let s = w.saga("order:o-5").await;
    assert_eq!(s.status, SagaStatus::Completed, "{}", steps(&s));
    let r = s.ledger.shipments[0].reinstatement.clone().unwrap();
    assert_eq!(
        (r.net_minor().get(), r.points_taken_back.map(Points::get)),
        (5_000, Some(445))
    );
    assert_eq!(s.ledger.points_accrued.map(Points::get), Some(45));
    assert_eq!(w.balance("m-2"), 5_000 - 445 + 45);
    let net: i64 = w.sims.erp.postings().iter().map(|p| p.signed_net_minor()).sum();
    assert_eq!(net, 5_000, "the ERP books the shipped unit only");
    // Delivered again, and re-sent by the OMS under another event id: nothing moves.
    let late = shipped("o-5", "s-late", &[(1, 1)]);
    let resent = with(
        late.clone(),
        &["metadata", "event_id"],
        json!("evt-s-late-resent"),
    );
    w.run(vec![late, resent]).await;
    assert_eq!(w.balance("m-2"), 5_000 - 445 + 45);
    assert_eq!(
        w.sims.erp.postings().len(),
        3,
        "sale, cancellation, reinstatement"
    );
    assert!(w.report().await.quarantine.is_empty());
}

/// The ERP rejects an order after its points were committed: the points are re-credited, the saga ends
/// `compensated`, and a WorkflowException names the reason.
async fn erp_rejection_after_redemption_commit_is_compensated<B: Backend>(w: World<B>) {
    let hold = w.hold("m-1", 1_000, 20_000, "checkout-reject-6").await;
    w.run(vec![order("reject-6", "m-1", &[(1, 20_000)], redeeming(&hold))])
        .await;
    let s = w.saga("order:reject-6").await;
    assert_eq!(s.status, SagaStatus::Compensated, "{}", steps(&s));
    let t = steps(&s);
    let (commit, erp, compensate) = (
        t.find("commit-redemption: done").unwrap(),
        t.find("post-sale-to-erp: failed").unwrap(),
        t.find("compensate: done").unwrap(),
    );
    assert!(commit < erp && erp < compensate, "{t}");
    assert_eq!(
        s.ledger.redemption.as_ref().unwrap().points_recredited.get(),
        1_000
    );
    assert_eq!(w.balance("m-1"), 5_000);
    assert_eq!(
        w.report().await.metrics.get("compensated{reason=erp_rejected}"),
        Some(&1)
    );
    // Compensation is idempotent: the same order again changes nothing.
    w.run(vec![order("reject-6", "m-1", &[(1, 20_000)], redeeming(&hold))])
        .await;
    assert_eq!(w.balance("m-1"), 5_000);
}

/// A hold not used before its expiry is released by itself; an order that still names it fails before
/// anything is booked.
async fn hold_expiry<B: Backend>(w: World<B>) {
    let hold = w.hold("m-2", 700, 10_000, "checkout-o-7").await;
    let loyalty = w.loyalty();
    let member = MemberId::parse("m-2").unwrap();
    let available = || async { loyalty.balance(&member).await.unwrap().available.get() };
    assert_eq!(available().await, 5_000 - 700);
    w.clock.advance(Duration::from_secs(901));
    assert_eq!(
        available().await,
        5_000,
        "the expired hold no longer reserves points"
    );
    let held = w
        .loyalty()
        .get_hold(&HoldId::parse(hold.hold_id.as_str()).unwrap())
        .await
        .unwrap();
    assert_eq!(held.status, HoldStatus::Expired);

    w.run(vec![order("o-7", "m-2", &[(1, 10_000)], redeeming(&hold))])
        .await;
    let s = w.saga("order:o-7").await;
    assert_eq!(s.status, SagaStatus::Failed, "{}", steps(&s));
    assert!(steps(&s).contains("redemption refused"));
    assert!(s.ledger.erp_document_id.is_none(), "nothing booked in the ERP");
    assert_eq!(w.balance("m-2"), 5_000);
}

/// When loyalty is down, by default the redemption is refused with a clear error and the sale is
/// allowed (`block_checkout` tells the channel otherwise); the order is booked in the ERP, its accrual
/// waits in the DLQ and is posted once loyalty is back and the DLQ is redriven.
async fn loyalty_outage_policy<B: Backend>(w: World<B>) {
    w.sims.loyalty.set_faults(Faults {
        down: true,
        ..Faults::default()
    });
    let body = json!({"member_id": "m-1", "points": 300, "currency": "EUR", "basket_net_minor": 3_000});
    for (policy, sale_allowed) in [
        (OutagePolicy::RefuseRedemption, true),
        (OutagePolicy::BlockCheckout, false),
    ] {
        let (response, error) = post(
            &w.api(policy),
            "/v1/holds",
            &format!("chk-{sale_allowed}"),
            body.clone(),
        )
        .await;
        assert_eq!(response.status, 503, "{}", response.body);
        assert_eq!(error["code"], "loyalty_unavailable");
        assert_eq!(error["sale_allowed"], sale_allowed);
        assert!(response.header("retry-after").is_some());
    }
    w.run(vec![
        order("o-8", "m-1", &[(1, 3_000)], None),
        shipped("o-8", "s-1", &[(1, 1)]),
    ])
    .await;
    let s = w.saga("order:o-8").await;
    assert!(
        s.ledger.erp_document_id.is_some(),
        "the sale is allowed\n{}",
        steps(&s)
    );
    assert_eq!(s.status, SagaStatus::Running);
    // The accrual's last receives are paced by the backoff, and moto moves a message to the DLQ only in
    // a receive that finds it exhausted (and may keep it hidden there a moment): drain and look again
    // until it shows.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let letters = loop {
        w.system.run_until_idle(|_| {}).await.unwrap();
        let letters = w.report().await.dead_letter_queues["AccrueLoyaltyDLQ"].len();
        if letters >= 1 || std::time::Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(letters, 1);

    w.sims.loyalty.set_faults(Faults::default());
    let moved = w
        .system
        .backend
        .redrive("AccrueLoyaltyDLQ", "AccrueLoyaltyQueue")
        .await
        .unwrap();
    assert_eq!(moved, 1);
    w.system.run_until_idle(|_| {}).await.unwrap();
    let s = w.saga("order:o-8").await;
    assert_eq!(s.status, SagaStatus::Completed, "{}", steps(&s));
    assert_eq!(s.ledger.points_accrued.map(Points::get), Some(30));
}

async fn post(api: &RedemptionApi, path: &str, key: &str, body: Value) -> (ApiResponse, Value) {
    let response = api
        .handle(
            ApiRequest::new("POST", path)
                .with_caller(Caller::local("web"))
                .with_header("Idempotency-Key", key)
                .with_body(body.to_string()),
        )
        .await;
    let json = serde_json::from_str(&response.body).unwrap();
    (response, json)
}

/// The operator commands' work on each backend (`retail_sync_cli::ops`, what `retail-sync dlq …`,
/// `saga …` and `quarantine …` run): a loyalty outage dead-letters an accrual (`saga_running`) beside a
/// shipment whose order never came (`waiting_for_saga`); `dlq show` tells them apart; a redrive by reason
/// moves only the first, which completes once loyalty is back, and a second redrive moves nothing. A
/// sale the ERP refused (period closed) and one loyalty refused (unknown member) are retried after the
/// fix: each posts or accrues exactly once, and a retry of a completed saga is refused.
async fn operators_redrive_by_reason_and_retry_after_a_fix<B: Backend>(w: World<B>) {
    use retail_sync_cli::ops::{self, DlqFilter, OpsError, RedriveOptions};
    let now = || jiff::Timestamp::now();
    let (backend, topology): (&dyn Backend, _) = (&*w.system.backend, &w.system.topology);
    w.sims.loyalty.set_faults(Faults {
        down: true,
        ..Faults::default()
    });
    w.run(vec![
        sale("store-042", "r-op1", "m-1", &[(1, 2_000)]),
        shipped("o-ghost", "o-ghost-s1", &[(1, 1)]),
    ])
    .await;
    // moto moves a message to the DLQ in the receive that finds it exhausted, and keeps it hidden there
    // for the source queue's visibility timeout: look until both show.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let letters = loop {
        let letters = ops::dlq_show(backend, topology, "AccrueLoyaltyDLQ", now())
            .await
            .unwrap();
        if letters.len() >= 2 || std::time::Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut reasons: Vec<&str> = letters.iter().map(|(v, _, _)| v.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(reasons, ["saga_running", "waiting_for_saga"]);
    let listed = ops::dlq_list(backend, topology, now()).await.unwrap();
    let accrue = listed.iter().find(|d| d.dlq == "AccrueLoyaltyDLQ").unwrap();
    assert_eq!(
        (accrue.messages, accrue.source.as_str()),
        (2, "AccrueLoyaltyQueue")
    );

    w.sims.loyalty.set_faults(Faults::default());
    let running = DlqFilter {
        reason: Some("saga_running".into()),
        ..DlqFilter::default()
    };
    let dry_run = RedriveOptions {
        dry_run: true,
        ..RedriveOptions::default()
    };
    let dry = ops::dlq_redrive(backend, topology, "AccrueLoyaltyDLQ", &running, dry_run, now())
        .await
        .unwrap();
    assert_eq!((dry.selected.len(), dry.moved), (1, 0));
    // One a second: how an operator avoids flooding a system that just came back.
    let paced = RedriveOptions {
        rate: Some(1),
        ..RedriveOptions::default()
    };
    let moved = ops::dlq_redrive(backend, topology, "AccrueLoyaltyDLQ", &running, paced, now())
        .await
        .unwrap();
    assert_eq!(moved.moved, 1);
    w.system.run_until_idle(|_| {}).await.unwrap();
    assert_eq!(
        w.saga("receipt:store-042:r-op1").await.status,
        SagaStatus::Completed
    );
    let again = ops::dlq_redrive(
        backend,
        topology,
        "AccrueLoyaltyDLQ",
        &running,
        RedriveOptions::default(),
        now(),
    )
    .await
    .unwrap();
    assert_eq!(again.moved, 0, "a second redrive moves nothing");
    let left = ops::dlq_show(backend, topology, "AccrueLoyaltyDLQ", now())
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "the ghost shipment stays for a person");

    // Refused by the ERP, then by loyalty; both fixed there, then retried.
    w.run(vec![
        sale("closed-009", "r-op2", "m-1", &[(1, 1_000)]),
        sale("store-042", "r-op3", "unknown-77", &[(1, 4_000)]),
    ])
    .await;
    let closed = "receipt:closed-009:r-op2";
    let unknown = "receipt:store-042:r-op3";
    assert_eq!(w.saga(closed).await.status, SagaStatus::Failed);
    assert_eq!(w.saga(unknown).await.status, SagaStatus::Failed);
    w.sims.erp.reopen_period("closed-009");
    w.sims.loyalty.seed_balance("unknown-77", Points::new(0).unwrap());
    let r = ops::retry_saga(backend, topology, closed, None, now())
        .await
        .unwrap();
    assert_eq!((r.step.as_str(), r.attempt), ("post-sale-to-erp", 2));
    let r = ops::retry_saga(backend, topology, unknown, None, now())
        .await
        .unwrap();
    assert_eq!((r.step.as_str(), r.attempt), ("accrue-loyalty", 2));
    w.system.run_until_idle(|_| {}).await.unwrap();
    for id in [closed, unknown] {
        let s = w.saga(id).await;
        assert_eq!(s.status, SagaStatus::Completed, "{}", steps(&s));
    }
    let postings = w.sims.erp.postings();
    assert_eq!(
        postings
            .iter()
            .filter(|p| p.idempotency_key.starts_with(closed))
            .count(),
        1,
        "posted once, under the retry's key"
    );
    assert_eq!(w.balance("unknown-77"), 40);
    // A return the ERP refused (its store's period closed) is not retried: its units are free again for
    // other returns once refused, so the store sends it again after the fix.
    let mut refused_return = returned(
        "ret-op4",
        json!({"kind": "receipt", "store_id": "store-042", "receipt_id": "r-op1"}),
        &[(1, 1, 2_000)],
    );
    if let Input::Event { detail, .. } = &mut refused_return {
        detail["data"]["store_id"] = "closed-011".into();
    }
    w.run(vec![refused_return]).await;
    let sale_saga = "receipt:store-042:r-op1";
    assert!(steps(&w.saga(sale_saga).await).contains("return ret-op4: ERP refused"));
    let no = ops::retry_saga(backend, topology, sale_saga, Some("post-return-to-erp"), now()).await;
    assert!(matches!(no, Err(OpsError::Refused(_))), "{no:?}");
    // And a refused accrual whose sale was returned meanwhile is not retried either: the return was
    // decided against no points.
    // The sale first, then its return: fed together, a loaded machine can dead-letter the return while
    // it waits for the sale (a second per delivery on moto), and then nothing went on after the refusal.
    w.run(vec![sale("store-042", "r-op6", "unknown-66", &[(1, 1_000)])])
        .await;
    w.run(vec![returned(
        "ret-op6",
        json!({"kind": "receipt", "store_id": "store-042", "receipt_id": "r-op6"}),
        &[(1, 1, 1_000)],
    )])
    .await;
    w.sims.loyalty.seed_balance("unknown-66", Points::new(0).unwrap());
    let late = ops::retry_saga(backend, topology, "receipt:store-042:r-op6", None, now()).await;
    assert!(
        matches!(&late, Err(OpsError::Refused(m)) if m.contains("went on after the refusal")),
        "{late:?}"
    );

    // A shipment's accrual loyalty refused (the member was not enrolled yet): retried after the
    // enrolment, it earns once.
    w.run(vec![
        order("o-op5", "unknown-88", &[(1, 3_000)], None),
        shipped("o-op5", "o-op5-s1", &[(1, 1)]),
    ])
    .await;
    assert!(steps(&w.saga("order:o-op5").await).contains("loyalty refused"));
    w.sims.loyalty.seed_balance("unknown-88", Points::new(0).unwrap());
    let r = ops::retry_saga(backend, topology, "order:o-op5", None, now())
        .await
        .unwrap();
    assert_eq!((r.step.as_str(), r.attempt), ("accrue-loyalty", 2));
    w.system.run_until_idle(|_| {}).await.unwrap();
    assert_eq!(w.balance("unknown-88"), 30);
    assert_eq!(w.saga("order:o-op5").await.status, SagaStatus::Completed);

    let done = ops::retry_saga(backend, topology, unknown, None, now()).await;
    assert!(matches!(done, Err(OpsError::Refused(_))), "{done:?}");
    let missing = ops::retry_saga(backend, topology, "no-such-saga", None, now()).await;
    assert!(matches!(missing, Err(OpsError::NotFound(_))), "{missing:?}");
}

/// A replay of the archive after the day was processed changes nothing: the channels' transactions are put
/// on the channel bus again (on moto through EventBridge's own StartReplay of the archive the template
/// declares) and every step recognises what it did.
async fn a_replay_of_the_archive_changes_nothing<B: Backend>(w: World<B>) {
    let from = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    w.run(vec![
        sale("store-042", "r-rp1", "m-1", &[(1, 2_500)]),
        order("o-rp1", "m-2", &[(2, 1_000)], None),
        shipped("o-rp1", "o-rp1-s1", &[(1, 2)]),
    ])
    .await;
    let to = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1);
    let (postings, balances) = (w.sims.erp.postings(), w.sims.loyalty.balances());
    let sagas = w.system.backend.all_sagas().await.unwrap();
    let duplicates = |t: &str| w.system.metrics.get(&format!("duplicates{{event_type={t}}}"));
    let before = (duplicates("SaleCompleted"), duplicates("OrderPlaced"));
    let said = w.system.backend.replay(from, to, None).await.unwrap();
    w.system.run_until_idle(|_| {}).await.unwrap();
    // The replay reached ingest: each transaction came again and was recognised.
    assert_eq!(
        (duplicates("SaleCompleted"), duplicates("OrderPlaced")),
        (before.0 + 1, before.1 + 1),
        "{said}"
    );
    assert_eq!(w.sims.erp.postings(), postings, "{said}");
    assert_eq!(w.sims.loyalty.balances(), balances);
    let after = w.system.backend.all_sagas().await.unwrap();
    assert_eq!(after.len(), sagas.len());
    for s in &after {
        assert!(
            matches!(s.status, SagaStatus::Completed),
            "{}: {}",
            s.id,
            steps(s)
        );
    }
    assert!(w.report().await.quarantine.is_empty(), "a replay is no bad input");
}

/// A request as `client` (with every scope), or as `member`'s own token of that client.
fn as_caller(
    client: &str,
    member: Option<&str>,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Value,
) -> ApiRequest {
    let mut caller = Caller::local(client);
    caller.member = member.map(str::to_owned);
    let mut request = ApiRequest::new(method, path).with_caller(caller);
    if let Some(key) = key {
        request = request.with_header("Idempotency-Key", key);
    }
    if method == "POST" {
        request = request.with_body(body.to_string());
    }
    request
}

/// The redemption API's caller boundaries over this backend's own table (the stored answers and the
/// holds' owner records live there): the same key from two applications, or from two members of one
/// application, is two requests; another application cannot read, commit or release a hold; a member's
/// token acts on its own member only.
async fn the_redemption_api_keeps_callers_apart<B: Backend>(w: World<B>) {
    let api = w.api(OutagePolicy::RefuseRedemption);
    w.sims.loyalty.seed_balance("m-2", Points::new(5_000).unwrap());
    let hold = |member: &str| json!({"member_id": member, "points": 100, "currency": "EUR", "basket_net_minor": 4_000});
    let web = api
        .handle(as_caller(
            "web",
            None,
            "POST",
            "/v1/holds",
            Some("k-1"),
            hold("m-1"),
        ))
        .await;
    let app = api
        .handle(as_caller(
            "app",
            None,
            "POST",
            "/v1/holds",
            Some("k-1"),
            hold("m-2"),
        ))
        .await;
    let mine = api
        .handle(as_caller(
            "app",
            Some("m-1"),
            "POST",
            "/v1/holds",
            Some("k-2"),
            hold("m-1"),
        ))
        .await;
    let theirs = api
        .handle(as_caller(
            "app",
            Some("m-2"),
            "POST",
            "/v1/holds",
            Some("k-2"),
            hold("m-2"),
        ))
        .await;
    for r in [&web, &app, &mine, &theirs] {
        assert_eq!(r.status, 201, "{}", r.body);
    }
    assert_eq!(w.sims.loyalty.holds().len(), 4, "four requests, four holds");
    let web_hold = serde_json::from_str::<Value>(&web.body).unwrap()["hold_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let commit = json!({"transaction": {"kind": "order", "order_id": "o-c1"}, "points": 100});
    for (method, path, key) in [
        ("GET", format!("/v1/holds/{web_hold}"), None),
        ("POST", format!("/v1/holds/{web_hold}/commit"), Some("k-3")),
        ("POST", format!("/v1/holds/{web_hold}/release"), Some("k-4")),
    ] {
        let r = api
            .handle(as_caller("app", None, method, &path, key, commit.clone()))
            .await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
    }
    let other_member = api
        .handle(as_caller(
            "app",
            Some("m-2"),
            "GET",
            "/v1/members/m-1/balance",
            None,
            Value::Null,
        ))
        .await;
    assert_eq!(other_member.status, 403, "{}", other_member.body);
    let owner = api
        .handle(as_caller(
            "web",
            None,
            "POST",
            &format!("/v1/holds/{web_hold}/commit"),
            Some("k-5"),
            commit,
        ))
        .await;
    assert_eq!(owner.status, 200, "{}", owner.body);
}

/// The same checkout request sent twice under one `Idempotency-Key` creates one hold and gets the same
/// answer; the key with another request is refused; a release repeated is answered the same.
async fn redemption_api_duplicate_requests_with_the_same_key<B: Backend>(w: World<B>) {
    let api = w.api(OutagePolicy::RefuseRedemption);
    let body = json!({"member_id": "m-1", "points": 300, "currency": "EUR", "basket_net_minor": 4_000});
    let (first, hold) = post(&api, "/v1/holds", "chk-42", body.clone()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let (again, _) = post(&api, "/v1/holds", "chk-42", body.clone()).await;
    assert_eq!(
        (again.status, &again.body),
        (201, &first.body),
        "the first answer, again"
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(w.sims.loyalty.holds().len(), 1, "one hold, not two");
    assert_eq!(
        hold["value_minor"], 300,
        "300 points are worth 3.00 EUR, before tax"
    );

    let mut other = body.clone();
    other["points"] = json!(400);
    let (reused, error) = post(&api, "/v1/holds", "chk-42", other).await;
    assert_eq!(
        (reused.status, error["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );

    let release = format!("/v1/holds/{}/release", hold["hold_id"].as_str().unwrap());
    let (released, h) = post(&api, &release, "rel-42", json!({})).await;
    assert_eq!((released.status, h["status"].as_str()), (200, Some("released")));
    let (again, _) = post(&api, &release, "rel-42", json!({})).await;
    assert_eq!(again.body, released.body);
    let balance = w
        .loyalty()
        .balance(&MemberId::parse("m-1").unwrap())
        .await
        .unwrap();
    assert_eq!(balance.available.get(), 5_000);
}

// --- Same books whatever the order ---------------------------------------------------------------------

/// `input` with `detail.<path>` set to `value` (a re-sent event under another id, a field a helper
/// does not set).
fn with(mut input: Input, path: &[&str], value: Value) -> Input {
    if let Input::Event { detail, .. } = &mut input {
        let pointer: String = path.iter().map(|p| format!("/{p}")).collect();
        let (parent, last) = pointer.rsplit_once('/').unwrap();
        let parent = detail.pointer_mut(parent).unwrap();
        match parent {
            Value::Array(items) => items[last.parse::<usize>().unwrap()] = value,
            _ => parent[last] = value,
        }
    }
    input
}

/// `input` as sent by `source` instead of its own channel.
fn sent_by(mut input: Input, source: &str) -> Input {
    if let Input::Event { source: s, .. } = &mut input {
        *s = source.into();
    }
    input
}

/// What the ERP booked net for an order (sale − cancellations + reinstatements − returns).
fn erp_net(w: &World<impl Backend>, order_id: &str) -> i64 {
    w.sims
        .erp
        .postings()
        .iter()
        .filter(|p| serde_json::to_value(&p.transaction).unwrap()["order_id"] == order_id)
        .map(|p| p.signed_net_minor())
        .sum()
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

/// Two shipments and a whole-order cancellation of one order redeeming 600 points, processed in every
/// one of the six orders (each fact processed before the next arrives): one outcome. A shipment that
/// comes after the cancellation reinstates its units instead of being refused.
async fn shipments_and_cancellations_in_every_order_give_the_same_books<B: Backend>(w: World<B>) {
    let specs = [(3, 1_000), (2, 2_450)];
    let mut outcomes = Vec::new();
    for (i, processing) in permutations(3).into_iter().enumerate() {
        let (o, member) = (format!("o-perm-{i}"), format!("m-perm-{i}"));
        w.sims.loyalty.seed_balance(&member, Points::new(5_000).unwrap());
        let hold = w.hold(&member, 600, 7_900, &format!("checkout-{o}")).await;
        w.run(vec![order(&o, &member, &specs, redeeming(&hold))]).await;
        let facts = [
            shipped(&o, &format!("{o}-s1"), &[(1, 1)]),
            cancelled(&o, &format!("{o}-cx"), None),
            shipped(&o, &format!("{o}-s2"), &[(2, 1), (1, 1)]),
        ];
        for k in &processing {
            w.run(vec![facts[*k].clone()]).await;
        }
        let s = w.saga(&format!("order:{o}")).await;
        let per_line: Vec<(u32, u32)> = [1, 2]
            .iter()
            .map(|l| (s.ledger.shipped(*l), s.ledger.cancelled(*l)))
            .collect();
        outcomes.push((
            processing,
            json!({
                "status": s.status.as_str(),
                "earned": s.ledger.points_accrued.map(Points::get),
                "given_back": s.ledger.redemption.as_ref().map(|r| r.points_recredited.get()),
                "per_line": per_line,
                "erp_net": erp_net(&w, &o),
                "balance": w.balance(&member),
            }),
        ));
    }
    let (_, first) = &outcomes[0];
    // Shipped: 2 of line 1, 1 of line 2; cancelled: the rest. The ERP books 2 × 1,000 + 2,450.
    assert_eq!(first["per_line"], json!([[2, 1], [1, 1]]), "{first}");
    assert_eq!(first["erp_net"], 4_450);
    assert_eq!(first["status"], "completed");
    for (processing, outcome) in &outcomes {
        assert_eq!(outcome, first, "processed in the order {processing:?}");
    }
    assert!(w.report().await.quarantine.is_empty());
}

/// The README's example of a return decided before a later shipment: lines of 1,001 and 1,054, each
/// shipped on its own for 10 points, line 1 returned. Decided after both shipments the return reverses
/// floor(20 × 1,001 / 2,055) = 9; decided between them it reverses 10 and the second shipment gives 1
/// back (a `restore`, reference `correction:<shipment>`). Every order of processing ends at 9 reversed
/// and a balance of 11, every event delivered again changes nothing, and reconciliation finds the books
/// agreeing — and, once the restore is lost on the platform, finds it missing and makes it again.
async fn a_return_decided_before_a_later_shipment_reverses_the_same_points<B: Backend>(w: World<B>) {
    let specs = [(1, 1_001), (1, 1_054)];
    let mut outcomes = Vec::new();
    // The return waits for its units' shipment, so it comes after s1 in every order processed here.
    for (i, processing) in [[0, 1, 2], [0, 2, 1], [1, 0, 2]].into_iter().enumerate() {
        let (o, member) = (format!("o-late-{i}"), format!("m-late-{i}"));
        w.sims.loyalty.seed_balance(&member, Points::ZERO);
        w.run(vec![order(&o, &member, &specs, None)]).await;
        let facts = [
            shipped(&o, &format!("{o}-s1"), &[(1, 1)]),
            shipped(&o, &format!("{o}-s2"), &[(2, 1)]),
            returned(&format!("{o}-r1"), of_order(&o), &[(1, 1, 1_001)]),
        ];
        for k in processing {
            if (i, k) == (1, 1) {
                // The correcting shipment's accrual and its restore are both applied and their answers
                // lost: the redeliveries find them under their keys and nothing moves twice.
                w.sims.loyalty.set_faults(Faults {
                    fail_first: 2,
                    fail_first_with: FaultKind::TimeoutAfterCommit,
                    ..Faults::default()
                });
            }
            w.run(vec![facts[k].clone()]).await;
            assert_eq!(w.sims.loyalty.faults().fail_first, 0, "both faults met a call");
            w.sims.loyalty.set_faults(Faults::default());
        }
        // Every fact again: the same facts, nothing moves twice.
        w.run(facts.to_vec()).await;
        let s = w.saga(&format!("order:{o}")).await;
        let restores: Vec<(i64, Option<String>)> = w
            .sims
            .loyalty
            .transactions()
            .iter()
            .filter(|t| t.member_id.as_str() == member && t.kind == LoyaltyTransactionKind::Restore)
            .map(|t| (t.points, t.reference.clone()))
            .collect();
        outcomes.push((processing, s, w.balance(&member), restores));
    }
    for (processing, s, balance, restores) in &outcomes {
        let earned = s.ledger.points_accrued.map(Points::get);
        let reversed = s.ledger.points_reversed().get();
        assert_eq!(
            (earned, reversed, *balance),
            (Some(20), 9, 11),
            "{processing:?}: {}",
            steps(s)
        );
        if processing == &[0, 2, 1] {
            assert_eq!(restores, &[(1, Some("correction:o-late-1-s2".to_owned()))]);
            assert!(
                steps(s).contains("returns decided before it: gives back 1 earned points"),
                "{}",
                steps(s)
            );
        } else {
            assert!(restores.is_empty(), "{processing:?}: {restores:?}");
        }
    }
    let window = Window::new(
        "2026-11-01T00:00:00Z".parse().unwrap(),
        "2026-12-01T00:00:00Z".parse().unwrap(),
    )
    .unwrap();
    let reconcile = |mode| w.system.reconcile(window, Settings::default(), mode, false);
    let clean = reconcile(RepairMode::Off).await.unwrap();
    assert!(clean.is_clean(), "{:?}", clean.findings);
    assert!(w.report().await.quarantine.is_empty());

    let (_, corrected, _, _) = &outcomes[1];
    let restore = corrected.ledger.shipments[1].correction.clone().unwrap();
    let id = restore.loyalty_transaction_id.unwrap();
    assert!(w.sims.loyalty.tamper(id.as_str(), Tamper::Lose));
    assert_eq!(w.balance("m-late-1"), 10);
    let proposed = reconcile(RepairMode::DryRun).await.unwrap();
    let found: Vec<(&str, Option<&str>, &str)> = proposed
        .findings
        .iter()
        .map(|f| (f.difference.as_str(), f.reference.as_deref(), f.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [(
            "reversal_missing",
            Some(id.as_str()),
            "the restore of 1 points for correction:o-late-1-s2 is not on the loyalty ledger"
        )]
    );
    let applied = reconcile(RepairMode::Apply).await.unwrap();
    let repairs: Vec<(&str, &str)> = applied
        .repairs
        .iter()
        .map(|r| (r.status.as_str(), r.message.as_str()))
        .collect();
    assert_eq!(repairs.len(), 1, "{repairs:?}");
    assert_eq!(repairs[0].0, "applied", "{repairs:?}");
    assert_eq!(w.balance("m-late-1"), 11);
    let again = reconcile(RepairMode::Off).await.unwrap();
    assert!(again.is_clean(), "{:?}", again.findings);
}

/// The same one-unit cancellation sent twice under two event ids is applied once, with or without a
/// `cancellation_id`; two cancellations with their own ids are two.
async fn a_cancellation_resent_under_a_new_event_id_is_applied_once<B: Backend>(w: World<B>) {
    let hold = w.hold("m-1", 600, 3_000, "checkout-o-30").await;
    w.run(vec![order("o-30", "m-1", &[(3, 1_000)], redeeming(&hold))])
        .await;
    let one = cancelled("o-30", "e2", Some(&[(1, 1)]));
    let resent = with(one.clone(), &["metadata", "event_id"], json!("evt-e3"));
    w.run(vec![one, resent]).await;
    let identified = |event: &str, id: &str| {
        with(
            with(
                cancelled("o-30", event, Some(&[(1, 1)])),
                &["data", "cancellation_id"],
                json!(id),
            ),
            &["metadata", "occurred_at"],
            json!("2026-11-20T11:00:00Z"),
        )
    };
    w.run(vec![identified("e4", "cx-a"), identified("e5", "cx-a")])
        .await;
    let s = w.saga("order:o-30").await;
    let cancellations: Vec<(&str, u32)> = s
        .ledger
        .cancellations
        .iter()
        .map(|c| (c.cancellation_id.as_str(), s.ledger.held(c, 1)))
        .collect();
    assert_eq!(cancellations.len(), 2, "{cancellations:?}\n{}", steps(&s));
    assert!(cancellations.iter().all(|(_, units)| *units == 1));
    assert!(cancellations.iter().any(|(id, _)| *id == "cx-a"));
    assert_eq!(
        s.ledger.redemption.as_ref().unwrap().points_recredited.get(),
        400,
        "200 points for each of the two units"
    );
    assert_eq!(w.balance("m-1"), 5_000 - 600 + 400);
    assert_eq!(erp_net(&w, "o-30"), 1_000);
}

/// An over-return delivered twice with the same event id, before and after a valid return of the same
/// units: one refusal, with the same words, one quarantine entry.
async fn a_duplicate_of_a_refused_message_is_the_same_refusal<B: Backend>(w: World<B>) {
    w.run(vec![
        order("o-31", "m-1", &[(2, 1_000)], None),
        shipped("o-31", "s-31", &[(1, 2)]),
    ])
    .await;
    let over = returned("ret-31-over", of_order("o-31"), &[(1, 3, 3_000)]);
    w.run(vec![over.clone()]).await;
    w.run(vec![returned("ret-31-ok", of_order("o-31"), &[(1, 2, 2_000)])])
        .await;
    w.run(vec![over]).await;
    let report = w.report().await;
    let refused: Vec<&str> = report
        .quarantine
        .iter()
        .filter(|q| q.reason == "over_return")
        .map(|q| q.message.as_str())
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("only 2 of 2 bought"), "{refused:?}");
    let s = w.saga("order:o-31").await;
    assert_eq!(
        s.steps.iter().filter(|e| e.outcome.as_str() == "refused").count(),
        1,
        "{}",
        steps(&s)
    );
    assert_eq!(s.ledger.returns.len(), 1);
}

/// The README's worked example: a 5,000 line that earns, a 5,000 gift card that does not, 1,000 points
/// redeemed: each line carries 500 of the redemption, so the shipment earns on 4,500: 45 points.
async fn redeemed_points_are_shared_over_every_line_by_net<B: Backend>(w: World<B>) {
    let hold = w.hold("m-2", 1_000, 10_000, "checkout-o-32").await;
    let placed = order("o-32", "m-2", &[(1, 5_000), (1, 5_000)], redeeming(&hold));
    w.run(vec![with(
        placed,
        &["data", "lines", "1", "loyalty_eligible"],
        json!(false),
    )])
    .await;
    w.run(vec![shipped("o-32", "s-32", &[(1, 1), (2, 1)])]).await;
    let s = w.saga("order:o-32").await;
    assert_eq!(
        s.ledger.points_accrued.map(Points::get),
        Some(45),
        "{}",
        steps(&s)
    );
    assert_eq!(s.ledger.eligible_minor.map(Amount::get), Some(4_500));
}

/// A workflow event (`source` `retail-sync`, or `retail-sync.ingest` skipping ingest's checks) sent by
/// someone who is not the workflow.
fn forged(source: &str, detail_type: &str, id: &str, data: Value) -> Input {
    Input::Event {
        source: source.into(),
        detail_type: detail_type.into(),
        detail: json!({
            "metadata": {
                "event_id": format!("evt-forged-{id}"),
                "schema_version": 1,
                "correlation_id": format!("c-forged-{id}"),
                "occurred_at": "2026-11-20T11:00:00Z",
                "channel": "retail_sync",
            },
            "data": data,
        }),
    }
}

/// Every workflow event that makes a step act, forged for sagas that record no such thing: a
/// compensation for an order that completed, an ERP posting and a return posting the ERP never made, a
/// redemption commit the order never had, and a sale and an order that differ from what ingest accepted.
/// Put on the channel bus they reach no step; put on the internal bus, nothing reaches the ERP or the
/// loyalty platform: each is quarantined as `inconsistent_with_saga` and written on its saga's timeline.
async fn forged_workflow_events_are_never_applied<B: Backend>(w: World<B>) {
    let hold = w.hold("m-1", 600, 5_000, "checkout-f1").await;
    let redeemed = redeeming(&hold);
    // The order before its shipment: what is under test is the forgeries, not a shipment waiting for
    // its order (which, on a loaded machine, can outwait its receives on moto's 1 s visibility).
    w.run(vec![
        order("o-f1", "m-1", &[(2, 2_500)], redeemed),
        order("o-f3", "m-2", &[(1, 1_000)], None),
        sale("store-042", "r-f1", "m-2", &[(1, 3_000)]),
    ])
    .await;
    w.run(vec![shipped("o-f1", "o-f1-s1", &[(1, 2)])]).await;
    assert_eq!(w.saga("order:o-f1").await.status, SagaStatus::Completed);
    let postings = w.sims.erp.postings();
    let (transactions, balances) = (w.sims.loyalty.transactions(), w.sims.loyalty.balances());
    let internal = "retail-sync";
    let ingest = "retail-sync.ingest";
    let order_f1 = json!({"kind": "order", "order_id": "o-f1"});
    let receipt = json!({"kind": "receipt", "store_id": "store-042", "receipt_id": "r-f1"});
    let totals = json!({"net_minor": 3_000, "tax_minor": 600, "gross_minor": 3_600});
    let altered_sale = sent_by(sale("store-042", "r-f1", "m-2", &[(1, 30)]), ingest);
    let altered_order = sent_by(order("o-f1", "m-1", &[(2, 2_400)], redeemed), ingest);
    let forgeries = vec![
        forged(
            internal,
            "CompensationRequested",
            "1",
            json!({"transaction": order_f1, "failed_step": "post-sale-to-erp", "reason": "erp_rejected",
                   "message": "please re-credit"}),
        ),
        forged(
            internal,
            "ErpSalePosted",
            "2",
            json!({"transaction": receipt, "erp_document_id": "ERP-99999999", "currency": "EUR",
                   "totals": totals}),
        ),
        forged(
            internal,
            "ErpReturnPosted",
            "3",
            json!({"return_id": "ret-forged", "original": order_f1, "erp_document_id": "ERP-99999998",
                   "currency": "EUR", "refund_minor": 2_500}),
        ),
        forged(
            internal,
            "RedemptionCommitted",
            "4",
            json!({"order_id": "o-f3", "member_id": "m-2", "hold_id": "H-99999999", "points": 500,
                   "value_minor": 500, "currency": "EUR", "loyalty_transaction_id": "LT-99999999"}),
        ),
        altered_sale,
        altered_order,
    ];
    // On the channel bus (anyone a channel's credentials reach): no rule there routes a workflow
    // source, so nothing is delivered to any step (and the deployed bus's policy refuses the PutEvents).
    let fed = w.system.feed(&forgeries).await.unwrap();
    assert_eq!(fed.unrouted, forgeries.len());
    w.system.run_until_idle(|_| {}).await.unwrap();
    assert!(w.report().await.quarantine.is_empty());
    // On the internal bus (past its policy: a compromised function, an operator's mistake): every step
    // checks the event against its saga.
    let entries: Vec<(String, String, Value)> = forgeries
        .into_iter()
        .map(|f| match f {
            Input::Event {
                source,
                detail_type,
                detail,
            } => (source, detail_type, detail),
            other => panic!("not an event: {other:?}"),
        })
        .collect();
    w.system.backend.put_internal_events(&entries).await.unwrap();
    w.system.run_until_idle(|_| {}).await.unwrap();

    assert_eq!(w.sims.erp.postings(), postings, "nothing reached the ERP");
    assert_eq!(
        w.sims.loyalty.transactions(),
        transactions,
        "nothing reached loyalty"
    );
    assert_eq!(w.sims.loyalty.balances(), balances);
    let report = w.report().await;
    assert_eq!(
        report.summary.dead_lettered, 0,
        "{:#?}",
        report.dead_letter_queues
    );
    let mut refused: Vec<(String, String)> = report
        .quarantine
        .iter()
        .filter(|q| q.reason == "inconsistent_with_saga")
        .map(|q| (q.step.clone(), q.detail_type.clone().unwrap_or_default()))
        .collect();
    refused.sort();
    assert_eq!(
        refused,
        [
            ("accrue-loyalty", "ErpSalePosted"),
            ("commit-redemption", "OrderPlaced"),
            ("compensate", "CompensationRequested"),
            ("post-sale-to-erp", "RedemptionCommitted"),
            ("post-sale-to-erp", "SaleCompleted"),
            ("reverse-loyalty", "ErpReturnPosted"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned())),
        "{:#?}",
        report.quarantine
    );
    let s = w.saga("order:o-f1").await;
    assert_eq!(s.status, SagaStatus::Completed, "{}", steps(&s));
    assert!(
        steps(&s).contains("compensate: refused — CompensationRequested for order:o-f1"),
        "{}",
        steps(&s)
    );
}

/// The source policy on a deployed bus: the POS placing a web order and the CRM cancelling one are
/// refused at ingest as `source_not_allowed`; the order the web shop placed goes on untouched.
async fn a_channel_sends_only_what_the_source_policy_allows<B: Backend>(w: World<B>) {
    let from_pos = sent_by(order("o-s2", "m-1", &[(1, 1_000)], None), "retail.pos");
    let cancel_from_crm = sent_by(cancelled("o-s1", "cx-s1", None), "retail.crm");
    w.run(vec![
        order("o-s1", "m-1", &[(2, 1_000)], None),
        from_pos,
        cancel_from_crm,
    ])
    .await;
    let report = w.report().await;
    let mut refused: Vec<(&str, &str, Option<&str>)> = report
        .quarantine
        .iter()
        .map(|q| (q.step.as_str(), q.reason.as_str(), q.detail_type.as_deref()))
        .collect();
    refused.sort();
    assert_eq!(
        refused,
        [
            ("ingest", "source_not_allowed", Some("OrderCancelled")),
            ("ingest", "source_not_allowed", Some("OrderPlaced")),
        ]
    );
    assert_eq!(w.saga("order:o-s1").await.status, SagaStatus::Running);
    let sagas = w.system.backend.all_sagas().await.unwrap();
    assert!(
        sagas.iter().all(|s| s.id.as_str() != "order:o-s2"),
        "no saga from the POS order"
    );
    let kinds: Vec<String> = w
        .sims
        .erp
        .postings()
        .iter()
        .map(|p| p.kind.as_str().to_owned())
        .collect();
    assert_eq!(kinds, ["sale"], "the web order booked, nothing cancelled");
}

macro_rules! scenarios {
    ($($name:ident),+ $(,)?) => {
        mod embedded_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::embedded()).await;
            })+
        }
        mod moto_server {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::moto().await).await;
            })+
        }
    };
}

scenarios!(
    split_shipment_then_partial_return,
    two_partial_returns_make_a_full_return,
    over_return_refused,
    return_before_sale,
    cancellation_after_redemption,
    erp_rejection_after_redemption_commit_is_compensated,
    hold_expiry,
    loyalty_outage_policy,
    redemption_api_duplicate_requests_with_the_same_key,
    shipments_and_cancellations_in_every_order_give_the_same_books,
    a_return_decided_before_a_later_shipment_reverses_the_same_points,
    a_cancellation_resent_under_a_new_event_id_is_applied_once,
    a_duplicate_of_a_refused_message_is_the_same_refusal,
    redeemed_points_are_shared_over_every_line_by_net,
    forged_workflow_events_are_never_applied,
    a_channel_sends_only_what_the_source_policy_allows,
    the_redemption_api_keeps_callers_apart,
    operators_redrive_by_reason_and_retry_after_a_fix,
    a_replay_of_the_archive_changes_nothing,
);

/// The sample orders day (`events/streams/orders-day.jsonl`, what `retail-sync local run` shows): every
/// workflow above in one stream, checkout calls included, with the same outcome on both backends.
async fn orders_day<B: Backend>(system: &LocalSystem<B>) -> Report {
    let inputs =
        retail_sync_cli::input::read_inputs(&workspace().join("events/streams/orders-day.jsonl")).unwrap();
    let fed = system.feed(&inputs).await.unwrap();
    system.run_until_idle(|_| {}).await.unwrap();
    let report = system.report(fed).await.unwrap();
    let statuses: Vec<u16> = report.api.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 201, 201, 422, 201, 201, 422, 400]);
    assert_eq!(
        report.api[1].response, report.api[2].response,
        "same key, same answer"
    );
    let status = |id: &str| report.sagas[id].status.clone();
    assert_eq!(status("web-1001"), "completed");
    assert_eq!(status("web-1002"), "completed");
    assert_eq!(status("web-1003"), "cancelled");
    assert_eq!(status("reject-1004"), "compensated");
    assert_eq!(status("web-1005"), "completed");
    assert_eq!(status("pos-store-050-r-2001"), "completed");
    // Cancelled whole while its first unit was leaving, the cancellation re-sent under another event id:
    // processed in either order, 1 unit ships and earns 10 points, 2 are cancelled, once.
    assert_eq!(status("web-1006"), "completed");
    assert_eq!(report.sagas["web-1006"].points_accrued, Some(10));
    assert_eq!(erp_net_of(&report, "web-1006"), 1_000);
    // ret-1001's refund paid 100 points: 100 come back for the return, whichever was decided first.
    assert!(
        report.sagas["web-1001"]
            .steps
            .iter()
            .any(|s| s.contains("refund rfd-1001 of return ret-1001: 100 points paid")),
        "{:#?}",
        report.sagas["web-1001"].steps
    );
    // 10,000 − 500 redeemed + 149 + 23 earned − 23 reversed + 100 given back on web-1001, + 20 earned on
    // web-1005 (reject-1004's 1,000 points were redeemed and given back).
    assert_eq!(report.balances["m-3001"], 9_769, "{:?}", report.balances);
    // Everything that needs a person: the over-return, and the order the ERP rejected (compensated).
    let kept: Vec<(&str, Option<&str>)> = report
        .quarantine
        .iter()
        .map(|q| (q.reason.as_str(), q.correlation_id.as_deref()))
        .collect();
    assert_eq!(
        kept,
        [
            ("erp_rejected", Some("reject-1004")),
            ("over_return", Some("ret-ret-1002-c"))
        ]
    );
    assert_eq!(report.summary.dead_lettered, 0);
    report
}

/// What the ERP booked net for an order, from a report's journal.
fn erp_net_of(report: &Report, order_id: &str) -> i64 {
    report
        .erp_postings
        .iter()
        .filter(|p| p["transaction"]["order_id"] == order_id)
        .map(|p| {
            let document: ErpPosting = serde_json::from_value(p.clone()).unwrap();
            document.signed_net_minor()
        })
        .sum()
}

/// The books of a day: what must not depend on the backend nor on the order of processing. (The number
/// of ERP documents may: a reinstatement exists only where a cancellation was processed before the
/// shipment it crossed; the ERP's net per transaction does not.)
fn comparable(report: &Report) -> Value {
    let sagas: std::collections::BTreeMap<_, _> = report
        .sagas
        .iter()
        .map(|(c, s)| {
            let net = erp_net_of(report, c);
            (
                c.clone(),
                (s.status.clone(), s.points_accrued, s.eligible_minor, net),
            )
        })
        .collect();
    let mut summary = serde_json::to_value(&report.summary).unwrap();
    summary.as_object_mut().unwrap().remove("erp_postings");
    json!({"sagas": sagas, "balances": report.balances, "summary": summary, "api": report.api.len()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_day_has_the_same_outcome_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = LocalOptions::new(
        workspace().join("infra/template.yaml"),
        dir.path().join("state.db"),
    );
    options.visibility_timeout = Duration::from_millis(300);
    let embedded = open_embedded(&options, Simulators::with_sample_members()).unwrap();
    let local = orders_day(&embedded).await;
    // The compensated order is announced: a WorkflowException with the reason and its correlation id, kept
    // in the quarantine (the internal bus has no archive).
    let announced = local.quarantine.iter().any(|q| {
        q.step == "compensate"
            && q.correlation_id.as_deref() == Some("reject-1004")
            && q.reason == "erp_rejected"
            && q.message.contains("re-credited")
    });
    assert!(announced, "{:?}", local.quarantine);
    // Earned and reversed balance out on the fully returned order.
    let saga = |id: &str| local.sagas[id].clone();
    assert!(
        saga("web-1002")
            .steps
            .iter()
            .any(|s| s.contains("reversed (89 of 89 so far)")),
        "{:#?}",
        saga("web-1002").steps
    );

    let topology = topology();
    let provision = ProvisionOptions::unique().with_visibility_timeout(Duration::from_secs(1));
    let backend = Arc::new(MotoServer::shared().backend(&topology, &provision).await);
    let aws =
        orders_day(&LocalSystem::new(backend, topology, Simulators::with_sample_members()).unwrap()).await;
    assert_eq!(comparable(&aws), comparable(&local));
}

/// Day 1 (order 3, ship 1), the process ends; day 2 on the same state with new simulators (cancel 1,
/// return 1): the ERP still knows the order and the loyalty platform the accrual, because a local run
/// keeps the reference systems' journal with its state (embedded backend: that state is on disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_sees_the_erp_and_loyalty_platform_it_left() {
    let w = embedded();
    w.run(vec![
        order("o-40", "m-1", &[(3, 1_000)], None),
        shipped("o-40", "s-40", &[(1, 1)]),
    ])
    .await;
    let balance = w.balance("m-1");
    let postings = w.sims.erp.postings();
    let World { system, _dir, .. } = w;
    drop(system);

    let mut options = LocalOptions::new(
        workspace().join("infra/template.yaml"),
        _dir.path().join("state.db"),
    );
    options.visibility_timeout = Duration::from_millis(300);
    let (sims, _clock) = simulators();
    let resumed = open_embedded(&options, sims.clone()).unwrap();
    assert_eq!(sims.erp.postings(), postings, "the ERP's journal is back");
    assert_eq!(sims.loyalty.balance("m-1").map(Points::get), Some(balance));

    resumed
        .feed(&[
            cancelled("o-40", "cx-40", Some(&[(1, 1)])),
            returned("ret-40", of_order("o-40"), &[(1, 1, 1_000)]),
        ])
        .await
        .unwrap();
    resumed.run_until_idle(|_| {}).await.unwrap();
    let report = resumed.report(Default::default()).await.unwrap();
    assert!(report.quarantine.is_empty(), "{:#?}", report.quarantine);
    let mut kinds: Vec<&str> = sims.erp.postings().iter().map(|p| p.kind.as_str()).collect();
    kinds.sort();
    assert_eq!(kinds, ["cancellation", "return", "sale"]);
    assert_eq!(sims.loyalty.balance("m-1").map(Points::get), Some(5_000));
}

/// A tiny deterministic generator (LCG): the generated day and its shuffles are the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// A generated day of orders (some redeeming points) with split shipments, whole and partial
/// cancellations crossing them, and returns of shipped units — facts that never contradict each other,
/// so their books must not depend on arrival. Returns the orders' checkout holds to create first
/// (member, points, basket) and the events.
fn generated_orders_day(n: usize) -> (Vec<(String, i64, i64)>, Vec<Input>) {
    let mut rng = Lcg(42);
    let (mut holds, mut events) = (Vec::new(), Vec::new());
    for i in 0..n {
        let o = format!("o-gen-{i}");
        let member = format!("m-gen-{}", i % 5);
        let specs: Vec<(u32, i64)> = (0..=rng.next(2))
            .map(|_| {
                (
                    1 + rng.next(3) as u32,
                    [999, 1_000, 2_450, 12_900][rng.next(4) as usize],
                )
            })
            .collect();
        let net: i64 = specs.iter().map(|(q, u)| i64::from(*q) * u).sum();
        let redemption = (rng.next(2) == 0).then(|| {
            let points = 100 + rng.next(400) as i64;
            holds.push((member.clone(), points, net));
            (format!("H-{:08}", holds.len()), points, points)
        });
        events.push(order(
            &o,
            &member,
            &specs,
            redemption.as_ref().map(|(h, p, v)| (h.as_str(), *p, *v)),
        ));
        let mut shipped_units: Vec<(u32, u32)> = Vec::new();
        for (l, (q, _)) in specs.iter().enumerate() {
            let line_no = l as u32 + 1;
            let ship = rng.next(u64::from(*q) + 1) as u32;
            if ship > 0 {
                events.push(shipped(&o, &format!("{o}-s{line_no}"), &[(line_no, ship)]));
                shipped_units.push((line_no, ship));
            }
        }
        match rng.next(3) {
            0 => events.push(cancelled(&o, &format!("{o}-cx"), None)),
            1 => {
                let (q, _) = specs[0];
                events.push(cancelled(&o, &format!("{o}-cx"), Some(&[(1, q)])));
            }
            _ => {}
        }
        if let Some((line_no, _)) = shipped_units.first().filter(|_| rng.next(3) == 0) {
            let unit = specs[*line_no as usize - 1].1;
            events.push(returned(
                &format!("ret-gen-{i}"),
                of_order(&o),
                &[(*line_no, 1, unit)],
            ));
        }
    }
    (holds, events)
}

/// Runs the generated day on `w`: fed in order (`seed` None) or shuffled with every event delivered
/// twice. Returns its books and how many reinstatements the ERP posted.
async fn generated_day_books<B: Backend>(w: World<B>, seed: Option<u64>) -> (Value, usize) {
    let (holds, events) = generated_orders_day(24);
    for member in (0..5).map(|m| format!("m-gen-{m}")) {
        w.sims.loyalty.seed_balance(&member, Points::new(5_000).unwrap());
    }
    for (i, (member, points, basket)) in holds.iter().enumerate() {
        w.hold(member, *points, *basket, &format!("checkout-gen-{i}"))
            .await;
    }
    let mut day = events.clone();
    if let Some(seed) = seed {
        day.extend(events);
        let mut rng = Lcg(seed);
        for i in (1..day.len()).rev() {
            day.swap(i, rng.next(i as u64 + 1) as usize);
        }
    }
    w.run(day).await;
    let report = w.report().await;
    assert_eq!(
        report.summary.dead_lettered, 0,
        "{:#?}",
        report.dead_letter_queues
    );
    let kinds = |kind: &str| {
        w.sims
            .erp
            .postings()
            .iter()
            .filter(|p| p.kind.as_str() == kind)
            .count()
    };
    assert!(kinds("cancellation") > 0 && kinds("return") > 0);
    (comparable(&report), kinds("reinstatement"))
}

/// The generated day fed in order, then shuffled with every event delivered twice (two shuffles), on the
/// embedded backend and once on moto: the same books each time — sagas, points earned, ERP net per
/// order, member balances, quarantine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_day_shuffled_and_delivered_twice_gives_the_same_books() {
    let (in_order, r0) = generated_day_books(embedded(), None).await;
    let (shuffled, r1) = generated_day_books(embedded(), Some(7)).await;
    let (again, r2) = generated_day_books(embedded(), Some(13)).await;
    // The whole shuffled day is put on the bus at once and a local round takes one batch per queue, so
    // a shipment may be served long before its order leaves the ingest backlog. On moto a waiting
    // message's receives count toward its DLQ (SQS cannot take one back, see `runner::Patience`), and
    // the default retries (0.5 s, doubling) give it 12 to 16 s over five receives, which a loaded
    // machine (more tests at once than cores) has exceeded. Retries from 2 s give it four times that;
    // only waiting messages pay.
    let on_moto = moto_with(Protection::paced(Duration::from_secs(2))).await;
    let (on_moto, r3) = generated_day_books(on_moto, Some(21)).await;
    assert_eq!(shuffled, in_order);
    assert_eq!(again, in_order);
    assert_eq!(on_moto, in_order);
    // The day really crosses shipments and cancellations (the queues are served concurrently, so even
    // the run fed in order may), and the books did not notice.
    assert!(r0 + r1 + r2 + r3 > 0, "{:?}", [r0, r1, r2, r3]);
}
