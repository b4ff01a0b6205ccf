//! The chaos harness in the test command: small generated days under the default fault mix (shorter
//! outages) on the embedded backend and on moto through the AWS backend, each ending with balanced
//! books; and the checker itself, shown to find every kind of difference planted in balanced books.

use std::sync::Arc;
use std::time::Duration;

use retail_sync_aws::ProvisionOptions;
use retail_sync_cli::chaos::{self, ChaosReport, FaultMix, Mix};
use retail_sync_cli::local::{LocalOptions, LocalSystem, Protection, open_embedded};
use retail_sync_core::guard::BreakerSettings;
use retail_sync_core::runner::Backoff;
use retail_sync_testkit::moto::MotoServer;
use retail_sync_tests::workspace;
use retail_sync_topology::Topology;

fn faults(outage: Duration) -> FaultMix {
    FaultMix {
        outage,
        outage_at: Duration::from_millis(500),
        ..FaultMix::default()
    }
}

fn assert_balanced(report: &ChaosReport) {
    let v = &report.verdict;
    assert!(v.balanced(), "{}", report.summary());
    assert_eq!((v.lost, v.doubles, v.dead_letters), (0, 0, 0));
    assert!(v.transactions > 0 && v.follow_ups > 0 && v.members_checked > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_under_the_default_fault_mix_ends_with_balanced_books_on_the_embedded_backend() {
    let dir = tempfile::tempdir().unwrap();
    let day = chaos::generate(1_500, 12, Mix::default());
    let mut options = LocalOptions::new(
        workspace().join("infra/template.yaml"),
        dir.path().join("chaos.db"),
    );
    options.visibility_timeout = Duration::from_millis(200);
    let system = open_embedded(&options, chaos::simulators(&day.plan)).unwrap();
    let report = chaos::run(
        system,
        &day,
        12,
        faults(Duration::from_secs(2)),
        Some(&options.state),
        |_, _| {},
    )
    .await
    .unwrap();
    assert_balanced(&report);
    // The faults really happened.
    assert!(report.acks_lost > 0, "acks were lost");
    assert!(report.breaker_opened > 0, "the outages opened the breakers");
    assert!(
        report.erp_calls > report.verdict.transactions as u64,
        "failed calls were retried"
    );
    assert!(report.verdict.poison > 0 && report.duplicate_deliveries > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_day_under_faults_ends_with_balanced_books_on_moto() {
    // More poison than the default mix, so that a day this small has some.
    let mix = Mix {
        poison_rate: 0.03,
        ..Mix::default()
    };
    let day = chaos::generate(150, 21, mix);
    let topology = Topology::load(&workspace().join("infra/template.yaml")).unwrap();
    let options = ProvisionOptions::unique().with_visibility_timeout(Duration::from_secs(1));
    let backend = Arc::new(MotoServer::shared().backend(&topology, &options).await);
    // Retries paced for a short test: moto's visibility changes are whole seconds.
    let protection = Protection {
        breaker: BreakerSettings {
            cool_down: Duration::from_millis(500),
            max_cool_down: Duration::from_secs(2),
            ..BreakerSettings::default()
        },
        backoff: Backoff {
            first: Duration::from_secs(1),
            factor: 2,
            max: Duration::from_secs(2),
        },
    };
    let system = LocalSystem::protected(backend, topology, chaos::simulators(&day.plan), protection).unwrap();
    let faults = FaultMix {
        // moto's receives are slower: fewer lost acks keep the run short; every fault kind still occurs.
        ack_loss_rate: 0.02,
        ..faults(Duration::from_secs(1))
    };
    let report = chaos::run(system, &day, 21, faults, None, |_, _| {})
        .await
        .unwrap();
    assert_balanced(&report);
}

/// The checker finds each kind of difference planted in the books of a clean run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_finds_every_planted_difference() {
    let dir = tempfile::tempdir().unwrap();
    let day = chaos::generate(600, 3, Mix::default());
    let mut options = LocalOptions::new(workspace().join("infra/template.yaml"), dir.path().join("c.db"));
    options.visibility_timeout = Duration::from_millis(100);
    let sims = chaos::simulators(&day.plan);
    let system = open_embedded(&options, sims.clone()).unwrap();
    let clean = chaos::run(system, &day, 3, FaultMix::none(), None, |_, _| {})
        .await
        .unwrap();
    assert_balanced(&clean);

    // Read the books back the way the harness does, from a reopened state.
    let system = open_embedded(&options, chaos::simulators(&day.plan)).unwrap();
    let base = chaos::observe(&system).await.unwrap();
    assert!(
        chaos::check(&day.plan, &base).balanced(),
        "the reopened state balances too"
    );

    // A loyalty accrual booked twice: a double, and its member no longer balances.
    let mut doubled = chaos::observe(&system).await.unwrap();
    let accrual = doubled
        .transactions
        .iter()
        .find(|t| t.kind == retail_sync_simulators::LoyaltyTransactionKind::Accrual)
        .unwrap()
        .clone();
    let accrued = format!("accrual {} (", accrual.points);
    doubled.transactions.push(accrual);
    let v = chaos::check(&day.plan, &doubled);
    assert!(v.doubles >= 1 && v.members_unbalanced >= 1, "{v:?}");
    // Its line shows what was booked (the accrual twice) and the saga's timeline.
    let line = v.problems.iter().find(|p| p.contains("booked erp")).unwrap();
    assert!(line.matches(&accrued).count() >= 2, "{line}");
    assert!(line.contains("; timeline: ingest accepted:"), "{line}");

    // A second ERP document for one sale: a double.
    let mut doubled = chaos::observe(&system).await.unwrap();
    let sale = doubled.postings[0].clone();
    doubled.postings.push(sale);
    assert!(chaos::check(&day.plan, &doubled).doubles >= 1);

    // A credit note lost: the return is lost and the transaction's books differ.
    let mut lost = chaos::observe(&system).await.unwrap();
    let at = lost
        .postings
        .iter()
        .position(|p| p.kind == retail_sync_simulators::ErpPostingKind::Return)
        .unwrap();
    lost.postings.remove(at);
    let v = chaos::check(&day.plan, &lost);
    assert!(v.lost >= 1 && v.mismatched >= 1, "{v:?}");

    // A saga gone, a poison message not quarantined, a message left in a DLQ.
    let mut gone = chaos::observe(&system).await.unwrap();
    gone.sagas.pop();
    gone.quarantine.retain(|q| !q.body.contains("poison-"));
    gone.dead_letters = 1;
    let v = chaos::check(&day.plan, &gone);
    assert!(v.lost >= 2 && v.dead_letters == 1 && !v.balanced(), "{v:?}");

    // A member's balance off by one point.
    let mut off = chaos::observe(&system).await.unwrap();
    let member = off.balances.keys().next().unwrap().clone();
    *off.balances.get_mut(&member).unwrap() += 1;
    assert_eq!(chaos::check(&day.plan, &off).members_unbalanced, 1);
}
