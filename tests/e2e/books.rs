//! The books of a run, as the end-to-end tests compare them (included by the tests that need it).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use retail_sync_cli::backends::Backend;
use retail_sync_cli::input::Input;
use retail_sync_cli::local::{LocalSystem, Simulators};

/// Runs `inputs` and answers the books: per transaction its saga's status and points and what
/// the ERP booked net (sale − cancellations + reinstatements − returns: how many documents make it up
/// depends on arrival order, a cancellation undone by a later shipment being two); per member the
/// balance and the ledger's sum per kind; the quarantine's reasons.
pub async fn books<B: Backend>(system: &LocalSystem<B>, sims: &Simulators, inputs: &[Input]) -> Value {
    let fed = system.feed(inputs).await.unwrap();
    system.run_until_idle(|_| {}).await.unwrap();
    let report = system.report(fed).await.unwrap();
    let mut erp: BTreeMap<String, i64> = BTreeMap::new();
    for p in sims.erp.postings() {
        *erp.entry(serde_json::to_string(&p.transaction).unwrap())
            .or_default() += p.signed_net_minor();
    }
    let mut ledger: BTreeMap<String, i64> = BTreeMap::new();
    for t in sims.loyalty.transactions() {
        *ledger
            .entry(format!("{} {}", t.member_id, t.kind.as_str()))
            .or_default() += t.points;
    }
    let sagas: BTreeMap<_, _> = report
        .sagas
        .iter()
        .map(|(c, s)| (c.clone(), (s.status.clone(), s.points_accrued)))
        .collect();
    let mut reasons: Vec<String> = report.quarantine.iter().map(|q| q.reason.clone()).collect();
    reasons.sort();
    json!({
        "sagas": sagas,
        "erp": erp,
        // Members holding points: one enrolled with none has no books (and only the system API's
        // connector enrols the day's sign-ups; with Salesforce they are the org's to enrol).
        "balances": sims.loyalty.balances().into_iter().filter(|(_, p)| *p > 0).collect::<BTreeMap<_, _>>(),
        "ledger": ledger,
        "quarantine": reasons,
        "dead_lettered": report.summary.dead_lettered,
    })
}
