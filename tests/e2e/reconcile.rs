//! Reconciliation end to end: the sample days (POS, orders, members) leave books that agree; then one
//! difference of each kind is planted in the reference systems and the saga store — the way a lost
//! write, a double booking, a manual entry or a dead step would leave them — and the reconciliation
//! finds every one of them and nothing else, proposes the safe repairs without applying them on a dry
//! run, applies them exactly once when asked (a second repair changes nothing), and announces what is
//! left. On the embedded backend and on moto server (the sagas in DynamoDB).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use retail_sync_aws::ProvisionOptions;
use retail_sync_cli::backends::Backend;
use retail_sync_cli::input::{Input, read_inputs};
use retail_sync_cli::local::{LocalOptions, LocalSystem, Simulators, open_embedded};
use retail_sync_contracts::events::TransactionRef;
use retail_sync_contracts::values::{Amount, Currency, ReceiptId, StoreId};
use retail_sync_contracts::{Event, EventType};
use retail_sync_core::reconcile::{Reconciliation, RepairMode, Settings, Window};
use retail_sync_core::saga::{Saga, SagaId, SagaStatus};
use retail_sync_simulators::Tamper;
use retail_sync_testkit::moto::MotoServer;
use retail_sync_tests::workspace;
use retail_sync_topology::Topology;

fn days() -> Vec<Input> {
    read_inputs(&workspace().join("events/streams")).unwrap()
}

fn window() -> Window {
    Window::new(
        "2026-11-01T00:00:00Z".parse().unwrap(),
        "2026-12-01T00:00:00Z".parse().unwrap(),
    )
    .unwrap()
}

async fn run_days<B: Backend>(system: &LocalSystem<B>) {
    system.feed(&days()).await.unwrap();
    system.run_until_idle(|_| {}).await.unwrap();
}

async fn reconcile<B: Backend>(system: &LocalSystem<B>, mode: RepairMode, announce: bool) -> Reconciliation {
    system
        .reconcile(window(), Settings::default(), mode, announce)
        .await
        .unwrap()
}

/// `(difference, transaction)` of every finding.
fn found(r: &Reconciliation) -> BTreeSet<(String, String)> {
    r.findings
        .iter()
        .map(|f| {
            (
                f.difference.as_str().to_owned(),
                f.transaction.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// Plants one difference of each kind; returns what the reconciliation must find, and the member and
/// balance the lost accrual is to be given back to.
async fn plant<B: Backend>(
    system: &LocalSystem<B>,
    sims: &Simulators,
) -> (BTreeSet<(String, String)>, String, u64) {
    let mut sagas: Vec<Saga> = system.backend.all_sagas().await.unwrap();
    sagas.sort_by_key(|s| s.id.to_string());
    let mut planted = BTreeSet::new();
    let mut plant = |difference: &str, saga: &SagaId| {
        planted.insert((difference.to_owned(), saga.to_string()));
    };

    // Three POS sales with points: one accrual lost, one booked twice, one for other points.
    let accrued: Vec<&Saga> = sagas
        .iter()
        .filter(|s| s.origin_type == "SaleCompleted" && s.status == SagaStatus::Completed)
        .filter(|s| s.ledger.returns.is_empty() && s.ledger.points_accrued.is_some_and(|p| p.get() > 0))
        .collect();
    assert!(accrued.len() >= 3, "the sample days have POS sales with points");
    let lost = accrued[0].ledger.loyalty_transaction_id.clone().unwrap();
    let member = sims
        .loyalty
        .transactions()
        .into_iter()
        .find(|t| t.loyalty_transaction_id == lost)
        .unwrap()
        .member_id
        .to_string();
    let balance_before = sims.loyalty.balances()[&member];
    assert!(sims.loyalty.tamper(lost.as_str(), Tamper::Lose));
    plant("missing_accrual", &accrued[0].id);
    let twice = accrued[1].ledger.loyalty_transaction_id.clone().unwrap();
    assert!(sims.loyalty.tamper(twice.as_str(), Tamper::Duplicate));
    plant("double_accrual", &accrued[1].id);
    let other = accrued[2].ledger.loyalty_transaction_id.clone().unwrap();
    let points = accrued[2].ledger.points_accrued.unwrap().get();
    assert!(sims.loyalty.tamper(other.as_str(), Tamper::SetPoints(points + 7)));
    plant("amount_mismatch", &accrued[2].id);

    // A return whose reversal the platform lost.
    let returned = sagas
        .iter()
        .find(|s| {
            s.ledger
                .returns
                .iter()
                .any(|r| r.loyalty_transaction_id.is_some())
        })
        .expect("the sample days have a return with points reversed");
    let reversal = returned
        .ledger
        .returns
        .iter()
        .find_map(|r| r.loyalty_transaction_id.clone())
        .unwrap();
    assert!(sims.loyalty.tamper(reversal.as_str(), Tamper::Lose));
    plant("reversal_missing", &returned.id);

    // The compensated order (the ERP refused it after its points were spent): the platform lost the
    // compensation's re-credit.
    let compensated = sagas
        .iter()
        .find(|s| s.status == SagaStatus::Compensated && s.ledger.redemption.is_some())
        .expect("the sample days have a compensated order");
    let recredit = sims
        .loyalty
        .transactions()
        .into_iter()
        .find(|t| {
            t.reference
                .as_deref()
                .is_some_and(|r| r.starts_with("compensation:hold:"))
        })
        .expect("its re-credit is on the ledger")
        .loyalty_transaction_id;
    assert!(sims.loyalty.tamper(recredit.as_str(), Tamper::Lose));
    plant("reversal_missing", &compensated.id);

    // An order paid partly with points whose sales document lost its redemption.
    let redeemed = sagas
        .iter()
        .find(|s| s.ledger.redemption.is_some() && s.ledger.erp_document_id.is_some())
        .expect("the sample days have an order with a redemption");
    let document = redeemed.ledger.erp_document_id.clone().unwrap();
    assert!(sims.erp.tamper(document.as_str(), |p| p.redemption_minor = None));
    plant("redemption_not_booked", &redeemed.id);

    // A sale booked by hand in the ERP for a receipt retail-sync never saw.
    let unknown = TransactionRef::Receipt {
        store_id: StoreId::parse("store-099").unwrap(),
        receipt_id: ReceiptId::parse("r-900001").unwrap(),
    };
    sims.erp.book_by_hand(
        unknown.clone(),
        Currency::parse("EUR").unwrap(),
        Amount::new(4_990).unwrap(),
        "2026-11-21T12:00:00Z".parse().unwrap(),
    );
    plant("orphan_document", &SagaId::of(&unknown));

    // A sale whose saga started a week ago and never got further.
    let sample: serde_json::Value = serde_json::from_slice(
        &std::fs::read(workspace().join("events/samples/SaleCompleted.json")).unwrap(),
    )
    .unwrap();
    let mut detail = sample["detail"].clone();
    detail["data"]["receipt_id"] = "r-stuck-1".into();
    detail["metadata"]["correlation_id"] = "corr-stuck-1".into();
    let event = Event::from_detail(EventType::SaleCompleted, detail).unwrap();
    let Event::SaleCompleted(sale) = &event else {
        unreachable!()
    };
    let id = SagaId::of(&TransactionRef::Receipt {
        store_id: sale.data.store_id.clone(),
        receipt_id: sale.data.receipt_id.clone(),
    });
    let saga = Saga::start(id.clone(), &event, sale.metadata.occurred_at);
    assert!(system.backend.create(&saga).await.unwrap().is_none());
    plant("stuck_saga", &id);

    (planted, member, balance_before)
}

/// The whole story on one backend.
async fn planted_differences_are_all_found_and_the_safe_ones_repaired_once<B: Backend>(
    system: &LocalSystem<B>,
    sims: &Simulators,
) {
    run_days(system).await;
    let clean = reconcile(system, RepairMode::Off, false).await;
    assert!(
        clean.is_clean(),
        "the sample days' books agree: {:#?}",
        clean.findings
    );
    assert!(clean.compared.sagas >= 40 && clean.compared.loyalty_movements > 0);
    let issued: i64 = clean.total.values().map(|t| t.points_issued).sum();
    assert_eq!(
        issued,
        sims.loyalty
            .transactions()
            .iter()
            .filter(|t| t.kind == retail_sync_simulators::LoyaltyTransactionKind::Accrual)
            .map(|t| t.points)
            .sum::<i64>(),
        "the totals count every accrual once"
    );

    let (planted, member, balance_before) = plant(system, sims).await;
    let report = reconcile(system, RepairMode::Off, false).await;
    assert_eq!(
        found(&report),
        planted,
        "every planted difference, and nothing else"
    );
    assert_eq!(report.findings.len(), planted.len());

    // The comparison itself: the same books in another order are the same report; a stuck saga is
    // only stuck once its deadline has passed.
    let sagas = system.backend.all_sagas().await.unwrap();
    let (from, until) = (window().from, "2027-01-01T00:00:00Z".parse().unwrap());
    let documents = sims.erp.documents_between(from, until);
    let movements = sims.loyalty.movements(from, until);
    let now = report.generated_at;
    let compare = |s: &[Saga], d: &[_], m: &[_], now| {
        retail_sync_core::reconcile::reconcile(window(), now, Settings::default(), s, d, m)
    };
    let forward = compare(&sagas, &documents, &movements, now);
    let (mut s, mut d, mut m) = (sagas.clone(), documents.clone(), movements.clone());
    s.reverse();
    d.reverse();
    m.reverse();
    let backward = compare(&s, &d, &m, now);
    assert_eq!(forward, backward);
    assert_eq!(found(&forward), planted);
    let stuck = sagas.iter().find(|s| s.status == SagaStatus::Running).unwrap();
    let early = compare(
        &sagas,
        &documents,
        &movements,
        stuck.updated_at + jiff::SignedDuration::from_mins(119),
    );
    assert!(
        !found(&early).iter().any(|(d, _)| d == "stuck_saga"),
        "not before its deadline"
    );
    let repairable: BTreeSet<&str> = report
        .findings
        .iter()
        .filter(|f| f.repair.is_some())
        .map(|f| f.difference.as_str())
        .collect();
    assert_eq!(
        repairable,
        BTreeSet::from(["missing_accrual", "reversal_missing"])
    );

    // A dry run proposes and changes nothing.
    let ledger = sims.loyalty.transactions().len();
    let dry = reconcile(system, RepairMode::DryRun, false).await;
    assert_eq!(dry.repairs.len(), 3);
    assert!(
        dry.repairs.iter().all(|r| r.status == "proposed"),
        "{:?}",
        dry.repairs
    );
    assert_eq!(sims.loyalty.transactions().len(), ledger);
    assert_eq!(found(&dry), planted);

    // Applied: the three safe differences are gone, the member has their points back.
    let applied = reconcile(system, RepairMode::Apply, false).await;
    assert!(
        applied.repairs.iter().all(|r| r.status == "applied"),
        "{:?}",
        applied.repairs
    );
    assert_eq!(applied.repairs.len(), 3);
    assert_eq!(sims.loyalty.transactions().len(), ledger + 3);
    assert_eq!(sims.loyalty.balances()[&member], balance_before);
    let left: BTreeSet<(String, String)> = planted
        .iter()
        .filter(|(d, _)| d != "missing_accrual" && d != "reversal_missing")
        .cloned()
        .collect();
    assert_eq!(found(&applied), left);

    // Again: nothing left to repair, nothing applied twice; what is left is announced.
    let again = reconcile(system, RepairMode::Apply, true).await;
    assert!(again.repairs.is_empty());
    assert_eq!(sims.loyalty.transactions().len(), ledger + 3);
    assert_eq!(found(&again), left);
    assert_eq!(
        system.metrics.get("reconciliation_mismatches"),
        (planted.len() * 2 + left.len() * 2) as u64
    );
    assert_eq!(system.metrics.get("reconciliation_repairs"), 3);
}

/// The embedded backend in `dir`, with the reference systems and the sample members.
fn embedded(dir: &tempfile::TempDir) -> (LocalSystem<retail_sync_embedded::Embedded>, Simulators) {
    let mut options = LocalOptions::new(
        workspace().join("infra/template.yaml"),
        dir.path().join("state.db"),
    );
    options.visibility_timeout = Duration::from_millis(100);
    let sims = Simulators::with_sample_members();
    (open_embedded(&options, sims.clone()).unwrap(), sims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_backend() {
    let dir = tempfile::tempdir().unwrap();
    let (system, sims) = embedded(&dir);
    planted_differences_are_all_found_and_the_safe_ones_repaired_once(&system, &sims).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_moto_too() {
    let topology = Topology::load(&workspace().join("infra/template.yaml")).unwrap();
    let options = ProvisionOptions::unique().with_visibility_timeout(Duration::from_secs(1));
    let backend = Arc::new(MotoServer::shared().backend(&topology, &options).await);
    let sims = Simulators::with_sample_members();
    let system = LocalSystem::new(backend, topology, sims.clone()).unwrap();
    planted_differences_are_all_found_and_the_safe_ones_repaired_once(&system, &sims).await;
}

/// A day whose business times lie ahead of the machine's clock (the sample days a year later): the
/// loyalty platform dates each redemption when the hold is committed, today, before the window starts.
/// The reconciliation still finds them with their orders, and the books agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_processed_before_its_business_times_reconciles() {
    let ahead = |t: &str| {
        let t: jiff::Timestamp = t.parse().unwrap();
        t.checked_add(jiff::SignedDuration::from_hours(24 * 365)).unwrap()
    };
    let inputs: Vec<Input> = days()
        .into_iter()
        .map(|mut input| {
            if let Input::Event { detail, .. } = &mut input
                && let Some(at) = detail["metadata"]["occurred_at"].as_str()
            {
                detail["metadata"]["occurred_at"] = ahead(at).to_string().into();
            }
            input
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (system, _sims) = embedded(&dir);
    system.feed(&inputs).await.unwrap();
    system.run_until_idle(|_| {}).await.unwrap();
    let window = Window::new(ahead("2026-11-01T00:00:00Z"), ahead("2026-12-01T00:00:00Z")).unwrap();
    let report = system
        .reconcile(window, Settings::default(), RepairMode::Off, false)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    let redeemed: i64 = report.totals.iter().map(|t| t.totals.points_redeemed).sum();
    assert!(
        redeemed > 0,
        "the orders day redeems points: {:#?}",
        report.totals
    );
}
