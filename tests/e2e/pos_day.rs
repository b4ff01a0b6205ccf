//! The sample POS day (`events/streams/pos-day.jsonl`) end to end: on the embedded backend, and the same
//! through the AWS backend on moto server (provisioned from the same template), with the same outcome.
//! The stream holds a duplicate delivery and eight kinds of bad input.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use retail_sync_aws::ProvisionOptions;
use retail_sync_cli::backends::Backend;
use retail_sync_cli::input::read_inputs;
use retail_sync_cli::local::{LocalOptions, LocalSystem, Protection, Simulators, open_embedded};
use retail_sync_cli::report::Report;
use retail_sync_simulators::ErpPosting;
use retail_sync_testkit::moto::MotoServer;
use retail_sync_tests::workspace;
use retail_sync_topology::Topology;

fn stream() -> Vec<retail_sync_cli::input::Input> {
    read_inputs(&workspace().join("events/streams/pos-day.jsonl")).unwrap()
}

fn topology() -> Topology {
    Topology::load(&workspace().join("infra/template.yaml")).unwrap()
}

async fn run<B: Backend>(system: &LocalSystem<B>) -> Report {
    let fed = system.feed(&stream()).await.unwrap();
    system.run_until_idle(|_| {}).await.unwrap();
    system.report(fed).await.unwrap()
}

fn embedded(dir: &tempfile::TempDir, simulators: Simulators) -> LocalSystem<retail_sync_embedded::Embedded> {
    let mut options = LocalOptions::new(
        workspace().join("infra/template.yaml"),
        dir.path().join("state.db"),
    );
    options.visibility_timeout = Duration::from_millis(50);
    open_embedded(&options, simulators).unwrap()
}

/// The outcome without what legitimately differs between runs (document numbers follow processing
/// order, quarantine items carry queue message ids).
fn outcome(report: &Report) -> serde_json::Value {
    let sagas: BTreeMap<_, _> = report
        .sagas
        .iter()
        .map(|(c, s)| {
            (
                c.clone(),
                (
                    s.status.clone(),
                    s.points_accrued,
                    s.eligible_minor,
                    s.erp_document_id.is_some(),
                ),
            )
        })
        .collect();
    let mut quarantine: Vec<_> = report
        .quarantine
        .iter()
        .map(|q| (q.step.clone(), q.reason.clone(), q.event_id.clone()))
        .collect();
    quarantine.sort();
    serde_json::json!({
        "summary": report.summary,
        "input": report.input,
        "sagas": sagas,
        "balances": report.balances,
        "quarantine": quarantine,
        "dead_lettered": report.summary.dead_lettered,
    })
}

fn assert_pos_day(report: &Report) {
    let s = &report.summary;
    assert_eq!(
        (report.input.events, report.input.raw, report.input.unrouted),
        (51, 1, 0)
    );
    // 40 sales + the closed-period sale + the unknown member's sale; the duplicate adds no saga.
    assert_eq!(s.sagas, 42);
    assert_eq!(
        s.sagas_by_status,
        BTreeMap::from([("completed".into(), 40), ("failed".into(), 2)])
    );
    assert_eq!(
        s.erp_postings, 41,
        "every accepted sale but the closed-period one, each once"
    );
    // Everything that needs a person, bad input and the two failed sales alike.
    let mut reasons: Vec<&str> = report.quarantine.iter().map(|q| q.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "business_rule_violation",
            "erp_rejected",
            "idempotency_key_reused",
            "invalid_json",
            "loyalty_rejected",
            "missing_identifier",
            "schema_violation",
            "unknown_event_type",
            "unknown_schema_version"
        ]
    );
    let failed_sales: Vec<(&str, Option<&str>)> = report
        .quarantine
        .iter()
        .filter(|q| q.reason.ends_with("_rejected"))
        .map(|q| (q.step.as_str(), q.correlation_id.as_deref()))
        .collect();
    assert!(failed_sales.contains(&("post-sale-to-erp", Some("pos-closed-007-r-000001"))));
    assert!(failed_sales.contains(&("accrue-loyalty", Some("pos-store-041-r-009001"))));
    assert_eq!(s.dead_lettered, 0);
    // Ledgers reconcile: what the sagas recorded is what loyalty holds.
    assert_eq!(report.balances.values().sum::<u64>(), s.points_accrued);
    assert!(s.points_accrued > 0);
    assert_eq!(
        report.metrics.get("duplicates"),
        Some(&1),
        "the duplicate delivery was recognised"
    );
    let failed = |c: &str| report.sagas[c].steps.last().unwrap().clone();
    assert!(failed("pos-closed-007-r-000001").contains("period_closed"));
    assert!(failed("pos-store-041-r-009001").contains("member_not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pos_day_on_the_embedded_backend() {
    let dir = tempfile::tempdir().unwrap();
    let system = embedded(&dir, Simulators::default());
    let report = run(&system).await;
    assert_pos_day(&report);

    // The whole day delivered again (a channel replaying its outbox): nothing is applied twice.
    let again = run(&system).await;
    assert_eq!(again.erp_postings, report.erp_postings);
    assert_eq!(again.balances, report.balances);
    assert_eq!(again.summary.sagas_by_status, report.summary.sagas_by_status);
}

/// What the ERP booked net per transaction (every document of it, each with its direction), from the
/// report's journal.
fn erp_net(report: &Report) -> BTreeMap<String, i64> {
    let mut net = BTreeMap::new();
    for posting in &report.erp_postings {
        let document: ErpPosting = serde_json::from_value(posting.clone()).unwrap();
        *net.entry(posting["transaction"].to_string()).or_default() += document.signed_net_minor();
    }
    net
}

/// The day backwards with every event twice. The books are the in-order run's, but for the one
/// transaction the day sends in two versions (`r-000002` at `store-043`: 1 unit under
/// `evt-salecompleted-0101`, 2 units under `evt-reused-0001`): the version that reaches ingest first
/// stands and the other is refused as `idempotency_key_reused` (README, "Same books whatever the order").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pos_day_backwards_and_twice_keeps_its_books_and_the_reused_receipt_follows_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let in_order = run(&embedded(&dir, Simulators::default())).await;

    let backwards: Vec<_> = stream().into_iter().rev().flat_map(|i| [i.clone(), i]).collect();
    let dir = tempfile::tempdir().unwrap();
    let system = embedded(&dir, Simulators::default());
    let fed = system.feed(&backwards).await.unwrap();
    system.run_until_idle(|_| {}).await.unwrap();
    let shuffled = system.report(fed).await.unwrap();

    let reused = "pos-store-043-r-000002";
    let refused_event = |r: &Report| -> Vec<Option<String>> {
        r.quarantine
            .iter()
            .filter(|q| q.reason == "idempotency_key_reused")
            .map(|q| q.event_id.clone())
            .collect()
    };
    assert_eq!(refused_event(&in_order), [Some("evt-reused-0001".to_owned())]);
    assert_eq!(
        refused_event(&shuffled),
        [Some("evt-salecompleted-0101".to_owned())]
    );
    let points = |r: &Report| r.sagas[reused].points_accrued;
    assert_eq!((points(&in_order), points(&shuffled)), (Some(3), Some(7)));

    // Everything else is the same: every saga's status and points, ERP net per transaction, balances.
    for (correlation, saga) in &in_order.sagas {
        let other = &shuffled.sagas[correlation];
        assert_eq!(saga.status, other.status, "{correlation}");
        if correlation != reused {
            assert_eq!(saga.points_accrued, other.points_accrued, "{correlation}");
        }
    }
    assert_eq!(in_order.sagas.len(), shuffled.sagas.len());
    let (mut net, mut net_shuffled) = (erp_net(&in_order), erp_net(&shuffled));
    let key = r#"{"kind":"receipt","receipt_id":"r-000002","store_id":"store-043"}"#;
    assert_eq!(
        (net.remove(key), net_shuffled.remove(key)),
        (Some(350), Some(700))
    );
    assert_eq!(net, net_shuffled);
    let (mut balances, mut balances_shuffled) = (in_order.balances.clone(), shuffled.balances.clone());
    let (m, m_shuffled) = (
        balances.remove("m-1003").unwrap(),
        balances_shuffled.remove("m-1003").unwrap(),
    );
    assert_eq!(m_shuffled, m + 4, "the member earned on 700 instead of 350");
    assert_eq!(balances, balances_shuffled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_run_resumes_from_its_state_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let first = embedded(&dir, Simulators::default());
    first.feed(&stream()).await.unwrap();
    // One round only, then "stop": the process state is dropped, the file stays.
    first.backend.begin_group().unwrap();
    drop(first);
    let resumed = embedded(&dir, Simulators::default());
    resumed.run_until_idle(|_| {}).await.unwrap();
    let report = resumed.report(Default::default()).await.unwrap();
    assert_eq!(report.summary.sagas, 42);
    assert_eq!(report.summary.quarantined, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_retries_pauses_the_accruals_and_they_resume_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let simulators = Simulators::default();
    simulators.loyalty.set_down(true);
    let system = embedded(&dir, simulators.clone());
    // Loyalty is down for 3 s: with a 50 ms visibility timeout, five receives would have sent every
    // accrual to the DLQ within a fraction of that.
    let recovery = {
        let loyalty = simulators.loyalty.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            loyalty.set_down(false);
        })
    };
    let report = run(&system).await;
    recovery.await.unwrap();
    assert!(system.guards.loyalty.times_opened() >= 1, "the breaker opened");
    assert!(
        report.dead_letter_queues["AccrueLoyaltyDLQ"].is_empty(),
        "the accruals waited instead of burning their receives: {:?}",
        report.dead_letter_queues["AccrueLoyaltyDLQ"]
    );
    assert_pos_day(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_the_breaker_cannot_see_dead_letters_then_a_redrive_completes() {
    // Without the breaker's pause (it opens only after 5 consecutive failures and the first ones
    // already burn receives), a system that fails every call still ends in the DLQ eventually: shown
    // here with a breaker that never opens, and the operators' redrive heals it.
    let dir = tempfile::tempdir().unwrap();
    let simulators = Simulators::default();
    simulators.loyalty.set_down(true);
    let mut options = LocalOptions::new(
        workspace().join("infra/template.yaml"),
        dir.path().join("state.db"),
    );
    options.visibility_timeout = Duration::from_millis(50);
    let topology = topology();
    let store = retail_sync_embedded::Embedded::open(
        &options.state,
        topology.clone(),
        Arc::new(retail_sync_core::ports::SystemClock),
    )
    .unwrap()
    .with_visibility_timeout(options.visibility_timeout);
    let mut protection = Protection::paced(options.visibility_timeout);
    protection.breaker.failures_to_open = u32::MAX;
    let system = LocalSystem::protected(Arc::new(store), topology, simulators.clone(), protection).unwrap();
    let report = run(&system).await;
    // Member sales stay running: their accrual messages were tried maxReceiveCount (5) times.
    let stuck = report
        .summary
        .sagas_by_status
        .get("running")
        .copied()
        .unwrap_or(0);
    assert!(stuck > 0);
    // One DLQ message per stuck saga, plus the duplicate delivery's second ErpSalePosted (same event
    // id, as the bus may deliver twice).
    assert_eq!(report.dead_letter_queues["AccrueLoyaltyDLQ"].len(), stuck + 1);
    assert!(
        report.dead_letter_queues["AccrueLoyaltyDLQ"]
            .iter()
            .all(|m| m.receive_count == 5)
    );
    assert!(report.balances.is_empty());

    // The day's member events (the CRM's consent for m-1002, the platform's tier for m-1003) could not
    // reach the loyalty platform either: the ERP and the CRM were told, the platform is behind.
    let members_parked = report.dead_letter_queues["SyncMemberDLQ"].len();
    assert!(members_parked >= 1, "{:?}", report.dead_letter_queues);

    simulators.loyalty.set_down(false);
    let moved = system
        .backend
        .redrive("AccrueLoyaltyDLQ", "AccrueLoyaltyQueue")
        .unwrap();
    assert_eq!(moved, stuck + 1);
    assert_eq!(
        system
            .backend
            .redrive("SyncMemberDLQ", "SyncMemberQueue")
            .unwrap(),
        members_parked
    );
    system.run_until_idle(|_| {}).await.unwrap();
    let healed = system.report(report.input).await.unwrap();
    assert_pos_day(&healed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pos_day_on_moto_has_the_same_outcome_as_on_the_embedded_backend() {
    let dir = tempfile::tempdir().unwrap();
    let local = run(&embedded(&dir, Simulators::default())).await;

    let topology = topology();
    let options = ProvisionOptions::unique().with_visibility_timeout(Duration::from_secs(1));
    let backend = Arc::new(MotoServer::shared().backend(&topology, &options).await);
    let system = LocalSystem::new(backend, topology, Simulators::default()).unwrap();
    let aws = run(&system).await;

    assert_pos_day(&aws);
    assert_eq!(outcome(&aws), outcome(&local));
}

/// A return far ahead of its sale in a day handed over at once waits for the sale however long the run
/// takes to reach it: while the run acknowledges other messages its receives are taken back. Here the
/// backoff is 1, 2, 4 and 8 ms, far less than 300 sales take, so its five receives would have run out (it
/// did, before). A return whose sale never comes still reaches the DLQ once nothing else is left to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_far_ahead_of_its_sale_waits_for_it_while_the_run_moves_on() {
    let sample = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(workspace().join(format!("events/samples/{name}.json"))).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let (sale, ret) = (sample("SaleCompleted"), sample("ReturnReceived"));
    let sale_of = |n: u32| {
        let mut e = sale.clone();
        e["detail"]["metadata"]["event_id"] = format!("evt-far-sale-{n}").into();
        e["detail"]["data"]["receipt_id"] = format!("r-far-{n}").into();
        e
    };
    let return_of = |receipt: &str| {
        let mut e = ret.clone();
        e["detail"]["metadata"]["event_id"] = format!("evt-far-return-{receipt}").into();
        let data = &mut e["detail"]["data"];
        data["return_id"] = format!("ret-{receipt}").into();
        data["original"] =
            serde_json::json!({"kind": "receipt", "store_id": "store-042", "receipt_id": receipt});
        data["lines"] =
            serde_json::json!([{"line_no": 1, "sku": "SKU-1001", "quantity": 1, "refund_minor": 1999}]);
        e
    };
    let mut day = vec![return_of("r-far-0"), return_of("r-far-never")];
    day.extend((1..=300).map(sale_of));
    day.push(sale_of(0));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("day.jsonl");
    let text: String = day.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&file, text).unwrap();

    let mut options = LocalOptions::new(
        workspace().join("infra/template.yaml"),
        dir.path().join("state.db"),
    );
    options.visibility_timeout = Duration::from_millis(1);
    let system = open_embedded(&options, Simulators::default()).unwrap();
    let fed = system.feed(&read_inputs(&file).unwrap()).await.unwrap();
    system.run_until_idle(|_| {}).await.unwrap();
    let report = system.report(fed).await.unwrap();

    let credit_notes: Vec<_> = report
        .erp_postings
        .iter()
        .filter(|p| p["kind"] == "return")
        .map(|p| p["transaction"]["receipt_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(credit_notes, ["r-far-0"]);
    let dead: Vec<(&str, usize)> = report
        .dead_letter_queues
        .iter()
        .filter(|(_, messages)| !messages.is_empty())
        .map(|(queue, messages)| (queue.as_str(), messages.len()))
        .collect();
    assert_eq!(dead, [("PostReturnToErpDLQ", 1)]);
    let never = &report.dead_letter_queues["PostReturnToErpDLQ"][0];
    assert!(never.body.contains("r-far-never"), "{}", never.body);
    assert_eq!(never.receive_count, 5);
}
