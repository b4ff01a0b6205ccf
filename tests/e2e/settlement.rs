//! Pending points end to end: with return windows (POS 14 days, ecommerce 30), the sample days' points
//! are held pending on the loyalty platform instead of becoming spendable; a return inside the window
//! cancels pending points, not spendable ones; `confirm-points` makes each accrual spendable once its
//! window has ended, once however often it runs; and once every window has passed, the members hold
//! exactly what they hold without windows — also with the day's events shuffled, each delivered twice.
//! The books reconcile throughout.

use std::collections::BTreeMap;
use std::time::Duration;

use retail_sync_cli::backends::Backend;
use retail_sync_cli::input::{Input, read_inputs};
use retail_sync_cli::local::{LocalOptions, LocalSystem, Simulators, open_embedded};
use retail_sync_contracts::Channel;
use retail_sync_contracts::values::MemberId;
use retail_sync_core::reconcile::{RepairMode, Settings, Window};
use retail_sync_core::settlement::ReturnWindows;
use retail_sync_embedded::Embedded;
use retail_sync_simulators::Tamper;
use retail_sync_tests::workspace;

fn days() -> Vec<Input> {
    read_inputs(&workspace().join("events/streams")).unwrap()
}

fn windows() -> ReturnWindows {
    ReturnWindows::of([(Channel::Pos, 14), (Channel::Ecommerce, 30)])
}

fn system(dir: &tempfile::TempDir, windows: ReturnWindows) -> (LocalSystem<Embedded>, Simulators) {
    let mut options = LocalOptions::new(
        workspace().join("infra/template.yaml"),
        dir.path().join("state.db"),
    );
    options.visibility_timeout = Duration::from_millis(100);
    options.return_windows = Some(windows);
    let sims = Simulators::with_sample_members();
    (open_embedded(&options, sims.clone()).unwrap(), sims)
}

async fn run(system: &LocalSystem<Embedded>, inputs: &[Input]) {
    system.feed(inputs).await.unwrap();
    system.run_until_idle(|_| {}).await.unwrap();
}

/// Per member holding anything: (balance, pending).
fn holdings(sims: &Simulators) -> BTreeMap<String, (i64, i64)> {
    sims.loyalty
        .balances()
        .keys()
        .filter_map(|m| {
            let b = sims
                .loyalty
                .member_balance(&MemberId::parse(m.as_str()).unwrap())
                .ok()?;
            Some((m.clone(), (b.balance.get(), b.pending.get())))
        })
        .filter(|(_, (b, p))| *b != 0 || *p != 0)
        .collect()
}

/// The day with every event twice, shuffled by `seed` (checkouts first: a checkout precedes its order).
fn shuffled_twice(seed: u64) -> Vec<Input> {
    let (api, events): (Vec<Input>, Vec<Input>) =
        days().into_iter().partition(|i| matches!(i, Input::Api(_)));
    let twice = retail_sync_tests::twice_shuffled(&events, seed);
    api.into_iter().chain(twice).collect()
}

/// The sample envelope of `name` (`events/samples/<name>.json`), to be edited into a test's event.
fn sample(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(workspace().join(format!("events/samples/{name}.json"))).unwrap())
        .unwrap()
}

/// An envelope as an input of a local run.
fn event(v: &serde_json::Value) -> Input {
    Input::Event {
        source: v["source"].as_str().unwrap().to_owned(),
        detail_type: v["detail-type"].as_str().unwrap().to_owned(),
        detail: v["detail"].clone(),
    }
}

/// A POS sale of the sample basket (12,998 net, 14,597 gross) at `store-042`, paid 1,000 points and the
/// rest by card, with its returns and refunds, as the till sends them (edited sample envelopes).
struct PaidWithPoints {
    original: serde_json::Value,
}

impl PaidWithPoints {
    fn new(receipt: &str) -> Self {
        let original = serde_json::json!({"kind": "receipt", "store_id": "store-042", "receipt_id": receipt});
        Self { original }
    }

    fn sale(&self, event_id: &str, member: &str) -> serde_json::Value {
        let receipt = self.original["receipt_id"].as_str().unwrap_or_default();
        let mut sale = sample("SaleCompleted");
        sale["detail"]["metadata"]["event_id"] = event_id.into();
        sale["detail"]["metadata"]["correlation_id"] = format!("pos-store-042-{receipt}").into();
        sale["detail"]["data"]["receipt_id"] = receipt.into();
        sale["detail"]["data"]["member_id"] = member.into();
        sale["detail"]["data"]["tenders"] = serde_json::json!([
            {"method": "card", "amount_minor": 13597},
            {"method": "points", "amount_minor": 1000, "points": 1000}
        ]);
        sale
    }

    /// A return of one `line` (`{line_no, sku, quantity, refund_minor}`).
    fn ret(&self, id: &str, line: serde_json::Value) -> serde_json::Value {
        let mut r = sample("ReturnReceived");
        r["detail"]["metadata"]["event_id"] = format!("evt-{id}").into();
        r["detail"]["data"]["return_id"] = id.into();
        r["detail"]["data"]["original"] = self.original.clone();
        r["detail"]["data"]["lines"] = serde_json::json!([line]);
        r
    }

    fn refund(&self, id: &str, return_id: &str, tenders: serde_json::Value) -> serde_json::Value {
        let mut r = sample("RefundSettled");
        r["detail"]["metadata"]["event_id"] = format!("evt-{id}").into();
        r["detail"]["data"]["refund_id"] = id.into();
        r["detail"]["data"]["return_id"] = return_id.into();
        r["detail"]["data"]["original"] = self.original.clone();
        r["detail"]["data"]["tenders"] = tenders;
        r
    }
}

/// The saga `id` of a run.
async fn saga_of(system: &LocalSystem<Embedded>, id: &str) -> retail_sync_core::saga::Saga {
    use retail_sync_core::ports::SagaStore;
    let id = retail_sync_core::saga::SagaId::from_stored(id.into());
    system.backend.load(&id).await.unwrap().unwrap()
}

fn november() -> Window {
    Window::new(at("2026-11-01T00:00:00Z"), at("2026-12-01T00:00:00Z")).unwrap()
}

/// The books of November reconcile clean.
async fn assert_reconciles(system: &LocalSystem<Embedded>, label: &str) {
    let report = system
        .reconcile(november(), Settings::default(), RepairMode::Off, false)
        .await
        .unwrap();
    assert!(report.is_clean(), "{label}: {:#?}", report.findings);
}

fn at(t: &str) -> jiff::Timestamp {
    t.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_wait_for_the_return_window_and_settle_to_the_same_books() {
    // Without windows: what every member ends up with.
    let dir = tempfile::tempdir().unwrap();
    let (plain, plain_sims) = system(&dir, ReturnWindows::none());
    run(&plain, &days()).await;
    let settled = holdings(&plain_sims);
    assert!(settled.values().all(|(_, pending)| *pending == 0));

    let dir = tempfile::tempdir().unwrap();
    let (system, sims) = system(&dir, windows());
    run(&system, &days()).await;
    let held = holdings(&sims);
    // Nothing earned is spendable yet: each member's balance and pending add up to the settled balance
    // (less what pending returns cancelled, which the settled run reversed from the balance).
    for (member, (balance, pending)) in &held {
        let (settled_balance, _) = settled.get(member).copied().unwrap_or_default();
        assert_eq!(balance + pending, settled_balance, "{member}");
    }
    let pending_total: i64 = held.values().map(|(_, p)| p).sum();
    assert!(pending_total > 0, "the day's points are pending");
    // m-1001 earns only at the tills of 2026-11-20 and holds no opening balance: all pending.
    assert_eq!(held["m-1001"].0, 0);

    // A POS return inside its window cancelled pending points, and the saga says so.
    let sagas = system.backend.all_sagas().await.unwrap();
    let returned = sagas
        .iter()
        .flat_map(|s| s.ledger.returns.iter())
        .find(|r| r.points_pending_cancelled.is_some())
        .expect("a return inside the window cancels pending points");
    assert_eq!(returned.points_pending_cancelled, returned.points_reversed);
    let pending_accruals = sagas.iter().map(|s| s.ledger.pending.len()).sum::<usize>();
    assert!(pending_accruals > 0);

    // The books agree while points are pending.
    assert_reconciles(&system, "in order").await;
    let window = november();

    // A pending accrual the platform lost is made again, pending until the same instant, and the saga's
    // pending entry follows it (so its confirmation below finds it).
    let lost = sagas
        .iter()
        .filter(|s| s.ledger.returns.is_empty())
        .find_map(|s| s.ledger.pending.first())
        .unwrap()
        .clone();
    assert!(
        sims.loyalty
            .tamper(lost.loyalty_transaction_id.as_str(), Tamper::Lose)
    );
    let repaired = system
        .reconcile(window, Settings::default(), RepairMode::Apply, false)
        .await
        .unwrap();
    assert_eq!(repaired.repairs.len(), 1, "{:?}", repaired.repairs);
    assert!(repaired.is_clean(), "{:#?}", repaired.findings);
    assert_eq!(holdings(&sims), held);
    let sagas = system.backend.all_sagas().await.unwrap();
    let again = sagas.iter().flat_map(|s| s.ledger.pending.iter()).find(|p| {
        p.until == lost.until
            && p.points == lost.points
            && p.loyalty_transaction_id != lost.loyalty_transaction_id
    });
    assert!(again.is_some(), "the pending entry names the new accrual");

    // Before any window ends: nothing to confirm.
    let early = system.confirm_points(at("2026-11-25T00:00:00Z")).await.unwrap();
    assert_eq!((early.accruals, early.waiting), (0, pending_accruals));
    assert_eq!(holdings(&sims), held);

    // The POS windows (14 days) have ended, the ecommerce ones (30 days, from the shipment) have not.
    let pos_due = system.confirm_points(at("2026-12-10T00:00:00Z")).await.unwrap();
    assert!(pos_due.accruals > 0 && pos_due.waiting > 0, "{pos_due:?}");
    assert!(pos_due.failed.is_empty(), "{:?}", pos_due.failed);
    assert_eq!(holdings(&sims)["m-1001"], (settled["m-1001"].0, 0));
    let ledger = sims.loyalty.transactions().len();
    let again = system.confirm_points(at("2026-12-10T00:00:00Z")).await.unwrap();
    assert_eq!(again.accruals, 0, "confirmed once");
    assert_eq!(sims.loyalty.transactions().len(), ledger);

    // Every window has ended: the members hold what they hold without windows.
    let last = system.confirm_points(at("2027-01-31T00:00:00Z")).await.unwrap();
    assert_eq!(last.waiting, 0);
    assert_eq!(pos_due.accruals + last.accruals, pending_accruals);
    assert_eq!(holdings(&sims), settled);
    let report = system
        .reconcile(window, Settings::default(), RepairMode::Off, false)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    let confirmed = system.backend.all_sagas().await.unwrap();
    assert!(
        confirmed
            .iter()
            .flat_map(|s| s.ledger.pending.iter())
            .all(|p| p.confirmed_at.is_some())
    );

    // In any order, every event twice: settled, the same holdings as the same shuffle without windows.
    // (Not always the in-order day's: the sample day reuses a receipt's event id with another payload,
    // and the first of the two to arrive is the one accepted.)
    for seed in [7_u64, 19] {
        let dir = tempfile::tempdir().unwrap();
        let (plain, plain_sims) = self::system(&dir, ReturnWindows::none());
        run(&plain, &shuffled_twice(seed)).await;
        let dir = tempfile::tempdir().unwrap();
        let (shuffled, shuffled_sims) = self::system(&dir, windows());
        run(&shuffled, &shuffled_twice(seed)).await;
        let pending = holdings(&shuffled_sims);
        for (member, (balance, _)) in &holdings(&plain_sims) {
            let (b, p) = pending.get(member).copied().unwrap_or_default();
            assert_eq!(b + p, *balance, "seed {seed}: {member} pending");
        }
        shuffled.confirm_points(at("2027-01-31T00:00:00Z")).await.unwrap();
        assert_eq!(
            holdings(&shuffled_sims),
            holdings(&plain_sims),
            "seed {seed}: settled"
        );
    }
}

/// A POS sale paid partly with points (a `points` tender that says how many) gives them back on its
/// return, in proportion to the net returned — in any order of the sale and the return, each delivered
/// twice — as an order's redeemed points are; the ERP and the loyalty platform agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_tendered_at_the_till_are_given_back_on_a_return() {
    let mut sale = sample("SaleCompleted");
    sale["detail"]["metadata"]["event_id"] = "evt-tender-sale".into();
    sale["detail"]["metadata"]["correlation_id"] = "pos-store-042-r-tender-1".into();
    let data = &mut sale["detail"]["data"];
    data["receipt_id"] = "r-tender-1".into();
    data["member_id"] = "m-3001".into();
    // 14,597 gross: 13,597 by card, 10.00 EUR in 1,000 points.
    data["tenders"] = serde_json::json!([
        {"method": "card", "amount_minor": 13597},
        {"method": "points", "amount_minor": 1000, "points": 1000}
    ]);
    let mut ret = sample("ReturnReceived");
    ret["detail"]["metadata"]["event_id"] = "evt-tender-return".into();
    ret["detail"]["metadata"]["correlation_id"] = "pos-store-042-r-tender-1".into();
    ret["detail"]["data"]["return_id"] = "ret-tender-1".into();
    ret["detail"]["data"]["original"] =
        serde_json::json!({"kind": "receipt", "store_id": "store-042", "receipt_id": "r-tender-1"});
    // Line 2 (4,000 of the 12,998 net) comes back: floor(1,000 × 4,000 / 12,998) = 307 points.
    ret["detail"]["data"]["lines"] =
        serde_json::json!([{"line_no": 2, "sku": "SKU-2002", "quantity": 1, "refund_minor": 4000}]);
    let given_back = |sims: &Simulators| -> Vec<i64> {
        sims.loyalty
            .transactions()
            .iter()
            .filter(|t| t.reference.as_deref() == Some("return:ret-tender-1"))
            .filter(|t| t.kind == retail_sync_simulators::LoyaltyTransactionKind::Recredit)
            .map(|t| t.points)
            .collect()
    };
    for (label, inputs) in [
        ("in order", vec![event(&sale), event(&ret)]),
        (
            "return first, each twice",
            vec![event(&ret), event(&sale), event(&ret), event(&sale)],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (system, sims) = system(&dir, ReturnWindows::none());
        run(&system, &inputs).await;
        assert_eq!(given_back(&sims), vec![307], "{label}");
        let saga = saga_of(&system, "receipt:store-042:r-tender-1").await;
        assert_eq!(saga.ledger.tender_recredited.get(), 307, "{label}");
        assert_eq!(
            saga.ledger.returns[0].points_recredited.map(|p| p.get()),
            Some(307),
            "{label}"
        );
        assert_reconciles(&system, label).await;
    }
}

/// Refunds the payment side settled (`RefundSettled`) decide the points given back for their returns: a
/// POS sale of 12,998 net paid 1,000 points has three returns — line 2 (4,000) refunded with 100 points
/// and the rest by card, line 3 (the gift card, 5,000) refunded by card only, line 1 (3,998) with no
/// settlement — so 100 + floor(1,000 × 3,998 / 12,998) = 407 points come back in all. The same in order
/// and shuffled with every event twice (a refund before its return, or before the sale, waits or is
/// taken as it comes); a refund claiming more points than the sale was paid with is refused and kept in
/// quarantine; the books reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_refunds_decide_the_points_given_back_in_any_order() {
    use serde_json::json;
    let day = PaidWithPoints::new("r-refund-1");
    let facts: Vec<Input> = [
        day.sale("evt-refund-sale", "m-3001"),
        day.ret("ret-a", json!({"line_no": 2, "sku": "SKU-2002", "quantity": 1, "refund_minor": 4000})),
        day.ret("ret-b", json!({"line_no": 1, "sku": "SKU-1001", "quantity": 2, "refund_minor": 3998})),
        day.ret("ret-c", json!({"line_no": 3, "sku": "GIFT-CARD-50", "quantity": 1, "refund_minor": 5000})),
        day.refund(
            "rfd-a",
            "ret-a",
            json!([{"method": "card", "amount_minor": 3900}, {"method": "points", "amount_minor": 100, "points": 100}]),
        ),
        day.refund("rfd-c", "ret-c", json!([{"method": "card", "amount_minor": 5000}])),
        day.refund(
            "rfd-x",
            "ret-b",
            json!([{"method": "points", "amount_minor": 5000, "points": 5000}]),
        ),
    ]
    .iter()
    .map(event)
    .collect();
    let mut runs = vec![("in order".to_owned(), facts.clone())];
    for seed in [3, 11, 29, 47] {
        runs.push((
            format!("seed {seed}, twice"),
            retail_sync_tests::twice_shuffled(&facts, seed),
        ));
    }
    let mut balances = Vec::new();
    for (label, inputs) in runs {
        let dir = tempfile::tempdir().unwrap();
        let (system, sims) = system(&dir, ReturnWindows::none());
        run(&system, &inputs).await;
        let saga = saga_of(&system, "receipt:store-042:r-refund-1").await;
        assert_eq!(saga.ledger.tender_recredited.get(), 407, "{label}");
        assert_eq!(saga.ledger.refunds.len(), 2, "{label}: rfd-x is refused");
        // On the platform: every re-credit less every take-back for the sale's returns and refunds.
        let moved: i64 = sims
            .loyalty
            .transactions()
            .iter()
            .filter(|t| {
                t.reference
                    .as_deref()
                    .is_some_and(|r| r.starts_with("refund:") || r.starts_with("return:"))
            })
            .map(|t| match t.kind {
                retail_sync_simulators::LoyaltyTransactionKind::Recredit => t.points,
                retail_sync_simulators::LoyaltyTransactionKind::Reversal
                    if t.reference.as_deref().is_some_and(|r| r.starts_with("refund:")) =>
                {
                    -t.points.abs()
                }
                _ => 0,
            })
            .sum();
        assert_eq!(moved, 407, "{label}");
        let quarantined = retail_sync_core::ports::QuarantineStore::list(&*system.backend, usize::MAX)
            .await
            .unwrap();
        let refused: Vec<_> = quarantined
            .iter()
            .filter(|q| q.rejection.message.contains("refund rfd-x"))
            .collect();
        assert!(!refused.is_empty(), "{label}: {quarantined:#?}");
        assert!(
            refused
                .iter()
                .all(|q| q.rejection.reason.as_str() == "business_rule_violation"
                    && q.rejection.message.contains("more than the 1000")),
            "{label}: {refused:#?}"
        );
        assert_reconciles(&system, &label).await;
        balances.push((label, holdings(&sims).get("m-3001").copied()));
    }
    let first = balances[0].1;
    assert!(balances.iter().all(|(_, b)| *b == first), "{balances:?}");
}

/// What the member spent or holds cannot be taken back: the platform takes what is available, the ledger
/// keeps what it took, and each shortfall is a `loyalty_rejected` entry for a person to settle with the
/// member — a card-only refund's take-back of a share a return gave back, and a later return's reversal
/// of earned points. Delivered again, nothing moves and no entry is added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_the_member_spent_are_kept_for_a_person_when_a_return_or_refund_takes_them_back() {
    use retail_sync_contracts::values::{Amount, Currency, Points};
    use retail_sync_core::idempotency::IdempotencyKey;
    use retail_sync_core::ports::{HoldRequest, Loyalty, QuarantineStore};
    use serde_json::json;

    let day = PaidWithPoints::new("r-spent-1");
    let sale = event(&day.sale("evt-spent-sale", "m-spent"));
    let refund = event(&day.refund(
        "rfd-spent",
        "ret-spent-a",
        json!([{"method": "card", "amount_minor": 4000}]),
    ));
    let ret_a = event(&day.ret(
        "ret-spent-a",
        json!({"line_no": 2, "sku": "SKU-2002", "quantity": 1, "refund_minor": 4000}),
    ));
    let ret_b = event(&day.ret(
        "ret-spent-b",
        json!({"line_no": 1, "sku": "SKU-1001", "quantity": 2, "refund_minor": 3998}),
    ));

    let dir = tempfile::tempdir().unwrap();
    let (system, sims) = system(&dir, ReturnWindows::none());
    let member = MemberId::parse("m-spent").unwrap();
    let balance = || sims.loyalty.member_balance(&member).unwrap();
    let id = "receipt:store-042:r-spent-1";

    // The sale earns; its first return reverses line 2's share and gives back floor(1,000 × 4,000 /
    // 12,998) = 307 of the points paid.
    run(&system, &[sale.clone(), ret_a.clone()]).await;
    let saga = saga_of(&system, id).await;
    assert_eq!(
        saga.ledger.returns[0].points_recredited.map(Points::get),
        Some(307)
    );
    let available = balance().balance.get();
    assert!(available > 307, "{available}");

    // The member holds everything at a checkout.
    let hold = HoldRequest {
        member_id: member.clone(),
        points: Points::new(available).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        basket_net_minor: Amount::new(100_000).unwrap(),
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3_600),
    };
    retail_sync_simulators::InProcessLoyalty(sims.loyalty.clone())
        .create_hold(&hold, &IdempotencyKey::for_step("api", "checkout-spent"))
        .await
        .unwrap();

    // A card-only refund of the first return takes back its 307: nothing is available.
    run(&system, std::slice::from_ref(&refund)).await;
    let saga = saga_of(&system, id).await;
    assert_eq!(saga.ledger.refunds[0].applied, Some(Points::ZERO));
    assert_eq!(saga.ledger.tender_recredited.get(), 307, "still with the member");
    // The second return's reversal of earned points finds nothing either. It gives nothing back: the
    // 307 the member kept are its share, floor(1,000 × 3,998 / 12,998), already with them.
    run(&system, std::slice::from_ref(&ret_b)).await;
    let saga = saga_of(&system, id).await;
    let b = retail_sync_contracts::values::ReturnId::parse("ret-spent-b").unwrap();
    let b = saga.ledger.return_entry(&b).unwrap();
    assert_eq!(b.points_reversed, Some(Points::ZERO));
    assert_eq!(b.points_recredited, Some(Points::ZERO));
    assert_eq!(saga.ledger.tender_recredited.get(), 307);
    assert_eq!(balance().balance.get(), available);

    let shortfalls = || async {
        let mut found: Vec<String> = QuarantineStore::list(&*system.backend, usize::MAX)
            .await
            .unwrap()
            .into_iter()
            .filter(|q| q.rejection.reason.as_str() == "loyalty_rejected")
            .map(|q| format!("{}: {}", q.step, q.rejection.message))
            .collect();
        found.sort();
        found
    };
    let found = shortfalls().await;
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("reverse-loyalty: refund rfd-spent: only 0 of 307 points could be taken back"),
        "{found:#?}"
    );
    assert!(
        found[1].starts_with("reverse-loyalty: return ret-spent-b: only 0 of ")
            && found[1].contains("earned points could be reversed"),
        "{found:#?}"
    );

    // Every event again: the same books, the same two entries.
    let before = balance();
    run(&system, &[sale, ret_a, refund, ret_b]).await;
    assert_eq!(balance(), before);
    assert_eq!(shortfalls().await, found);
}
