//! `ERP_KIND=sap-s4hana` and `LOYALTY_KIND=salesforce-loyalty` end to end: the sample days (POS sales,
//! orders with redemptions, shipments, cancellations, returns, a compensated ERP rejection, bad input)
//! through the SAP and Salesforce connectors against the simulators' dialects — on the embedded backend,
//! on moto server, and under timeouts after commit — give the same books as through the system API.

#[path = "books.rs"]
mod books;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use retail_sync_aws::ProvisionOptions;
use retail_sync_cli::input::read_inputs;
use retail_sync_cli::local::{Kinds, LocalOptions, LocalSystem, Simulators, open_embedded};
use retail_sync_connectors::{ErpKind, LoyaltyKind};
use retail_sync_core::reconcile::{RepairMode, Settings, Window};
use retail_sync_simulators::Faults;
use retail_sync_testkit::moto::MotoServer;
use retail_sync_tests::workspace;

use books::books;
use retail_sync_topology::Topology;

const DIALECTS: Kinds = Kinds {
    erp: ErpKind::SapS4Hana,
    loyalty: LoyaltyKind::SalesforceLoyalty,
};

fn mappings() -> PathBuf {
    workspace().join("infra/connectors")
}

fn streams() -> Vec<retail_sync_cli::input::Input> {
    read_inputs(&workspace().join("events/streams")).unwrap()
}

fn embedded(dir: &tempfile::TempDir, sims: Simulators) -> LocalSystem<retail_sync_embedded::Embedded> {
    let mut options = LocalOptions::new(
        workspace().join("infra/template.yaml"),
        dir.path().join("state.db"),
    );
    options.visibility_timeout = Duration::from_millis(100);
    open_embedded(&options, sims).unwrap()
}

async fn system_api_books() -> Value {
    let dir = tempfile::tempdir().unwrap();
    let sims = Simulators::with_sample_members();
    books(&embedded(&dir, sims.clone()), &sims, &streams()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_days_through_sap_and_salesforce_give_the_system_api_s_books() {
    let expected = system_api_books().await;
    assert!(expected["erp"].as_object().unwrap().len() > 10, "{expected}");
    let dir = tempfile::tempdir().unwrap();
    let sims = Simulators::with_sample_members()
        .speaking(DIALECTS, &mappings())
        .await
        .unwrap();
    let system = embedded(&dir, sims.clone());
    let got = books(&system, &sims, &streams()).await;
    assert_eq!(got, expected);
    let dialects = sims.dialects().unwrap();
    assert!(
        dialects.sap.creates() > 10 && dialects.salesforce.posts() > 10,
        "the dialects were spoken"
    );

    // The reconciliation reads both systems' books back through the same connectors (SAP's sales
    // orders and customer returns, Salesforce's transaction journals): they agree with the sagas.
    let window = Window::new(
        "2026-11-01T00:00:00Z".parse().unwrap(),
        "2026-12-01T00:00:00Z".parse().unwrap(),
    )
    .unwrap();
    let report = system
        .reconcile(window, Settings::default(), RepairMode::Off, false)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    assert!(
        report.compared.erp_documents > 50 && report.compared.loyalty_movements > 40,
        "{:?}",
        report.compared
    );

    // A saga that says its sale earned 7 points more than Salesforce's journal holds: found through the
    // books the connector read, and nothing else.
    use retail_sync_core::ports::SagaStore;
    let id = retail_sync_core::saga::SagaId::from_stored("receipt:store-041:r-000012".into());
    let mut saga = system.backend.load(&id).await.unwrap().unwrap();
    let earned = saga.ledger.points_accrued.unwrap();
    saga.ledger.points_accrued =
        Some(earned.saturating_add(retail_sync_contracts::values::Points::new(7).unwrap()));
    saga.version += 1;
    system.backend.save(&saga, None).await.unwrap();
    let report = system
        .reconcile(window, Settings::default(), RepairMode::Off, false)
        .await
        .unwrap();
    let found: Vec<(&str, &str)> = report
        .findings
        .iter()
        .map(|f| {
            (
                f.difference.as_str(),
                f.transaction.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [("amount_mismatch", "receipt:store-041:r-000012")],
        "{:#?}",
        report.findings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_moto_too() {
    let expected = system_api_books().await;
    let topology = Topology::load(&workspace().join("infra/template.yaml")).unwrap();
    let options = ProvisionOptions::unique().with_visibility_timeout(Duration::from_secs(1));
    let backend = Arc::new(MotoServer::shared().backend(&topology, &options).await);
    let sims = Simulators::with_sample_members()
        .speaking(DIALECTS, &mappings())
        .await
        .unwrap();
    let system = LocalSystem::new(backend, topology, sims.clone()).unwrap();
    assert_eq!(books(&system, &sims, &streams()).await, expected);
}

/// Every tenth call to SAP and to Salesforce commits and then never answers: each is found by its stamp
/// on the retry, so nothing is booked twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_after_commit_book_nothing_twice() {
    let expected = system_api_books().await;
    let dir = tempfile::tempdir().unwrap();
    let sims = Simulators::with_sample_members()
        .speaking_with(DIALECTS, &mappings(), Duration::from_millis(300))
        .await
        .unwrap();
    let faults = Faults {
        timeout_after_commit_rate: 0.1,
        seed: Some(13),
        ..Faults::default()
    };
    sims.erp.set_faults(faults.clone());
    sims.loyalty.set_faults(faults);
    let got = books(&embedded(&dir, sims.clone()), &sims, &streams()).await;
    assert_eq!(got, expected);
}
