//! The Salesforce Loyalty Management connector against the Salesforce simulator (the reference loyalty
//! platform behind Salesforce's dialect): exactly once without an idempotency key, holds as debits,
//! back-pressure and refusals; the books read back (`LoyaltyBooks`) as the system API reads them.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use retail_sync_connectors::{ClientAuth, HttpConfig, HttpLoyalty, SalesforceLoyalty, SalesforceMapping};
use retail_sync_contracts::events::ReasonCode;
use retail_sync_contracts::values::{Amount, ExternalRef, MemberId, Points};
use retail_sync_core::Error;
use retail_sync_core::idempotency::IdempotencyKey;
use retail_sync_core::ports::{AdjustmentKind, BookedPoints, HoldStatus, Loyalty, LoyaltyBooks, PointsKind};
use retail_sync_simulators::access::Access;
use retail_sync_simulators::samples::{accrual, adjustment, commit, hold, order, receipt};
use retail_sync_simulators::{Dialects, ErpSimulator, FaultKind, Faults, LoyaltySimulator};
use retail_sync_testkit::sims;

struct Harness {
    loyalty: LoyaltySimulator,
    dialects: Dialects,
    sf: SalesforceLoyalty,
    base: String,
    access: Access,
}

/// The sample mapping with the optional field for what an adjustment asked (see `books`).
const REQUESTED: &str = "RetailSync_Requested_Points__c";

fn mapping() -> SalesforceMapping {
    let path = format!(
        "{}/../../infra/connectors/salesforce-loyalty.json",
        env!("CARGO_MANIFEST_DIR")
    );
    SalesforceMapping::parse(&std::fs::read_to_string(path).unwrap(), "sample").unwrap()
}

async fn start() -> Harness {
    let (erp, loyalty) = (ErpSimulator::new(), LoyaltySimulator::new());
    let dialects = Dialects::over(&erp, &loyalty);
    let access = Access::local();
    let (base, _server) = sims::serve_with(erp, loyalty.clone(), dialects.clone(), access.clone()).await;
    let config = fast(base.clone());
    // A connected app's client credentials, sent in the form body as Salesforce documents, to the
    // token endpoint where Salesforce serves it.
    let auth = sims::oauth_at(&format!("{base}/services/oauth2/token"), ClientAuth::Body);
    loyalty.seed_balance("m-1", Points::new(5_000).unwrap());
    let mapping = SalesforceMapping {
        requested_points_field: Some(REQUESTED.into()),
        ..mapping()
    };
    Harness {
        loyalty,
        dialects,
        sf: SalesforceLoyalty::new(&config, auth, mapping).unwrap(),
        base,
        access,
    }
}

fn fast(base: String) -> HttpConfig {
    sims::fast(base, Duration::from_millis(400))
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::for_step(k, "test")
}

fn once_after_commit() -> Faults {
    Faults {
        fail_first: 1,
        fail_first_with: FaultKind::TimeoutAfterCommit,
        ..Faults::default()
    }
}

#[tokio::test]
async fn an_accrual_timed_out_after_commit_is_found_by_its_external_transaction_number() {
    let h = start().await;
    h.loyalty.set_faults(once_after_commit());
    let long_key = IdempotencyKey::for_step("receipt:store-001:r-000001", "accrue-loyalty-with-a-long-name");
    // The answer is lost: the outcome is unknown, so this delivery does not post again.
    let lost =
        h.sf.accrue(&accrual("m-1", "r-1", 12_345), &long_key)
            .await
            .unwrap_err();
    assert!(lost.to_string().contains("outcome not settled"), "{lost}");
    // The next delivery finds the journal by its number.
    let first =
        h.sf.accrue(&accrual("m-1", "r-1", 12_345), &long_key)
            .await
            .unwrap();
    assert_eq!(first.points.get(), 123, "the program's rule: 1 point per 1.00");
    assert_eq!(first.balance.get(), 5_123);
    assert_eq!(
        h.loyalty.transactions().len(),
        1,
        "posted once, though the answer was lost"
    );
    assert_eq!(
        h.dialects.salesforce.posts(),
        1,
        "the redelivery found the journal instead of posting"
    );
    let again =
        h.sf.accrue(&accrual("m-1", "r-1", 12_345), &long_key)
            .await
            .unwrap();
    assert_eq!(again, first);
}

#[tokio::test]
async fn reversals_and_recredits_are_posted_once_through_the_points_processes() {
    let h = start().await;
    h.sf.accrue(&accrual("m-1", "r-2", 10_000), &key("acc"))
        .await
        .unwrap();
    h.loyalty.set_faults(once_after_commit());
    let reversal = adjustment("m-1", AdjustmentKind::Reversal, "o-1", "ret-1", 40);
    h.sf.adjust(&reversal, &key("rev")).await.unwrap_err();
    let first = h.sf.adjust(&reversal, &key("rev")).await.unwrap();
    assert_eq!((first.delta, first.balance.get()), (-40, 5_060));
    assert_eq!(h.sf.adjust(&reversal, &key("rev")).await.unwrap(), first);
    let recredit = adjustment("m-1", AdjustmentKind::Recredit, "o-1", "cx-1", 25);
    let back = h.sf.adjust(&recredit, &key("rec")).await.unwrap();
    assert_eq!((back.delta, back.balance.get()), (25, 5_085));
    assert_eq!(h.loyalty.balance("m-1").unwrap().get(), 5_085);
    assert_eq!(h.loyalty.transactions().len(), 3);
}

#[tokio::test]
async fn a_hold_is_a_debit_committed_once_to_one_order() {
    let h = start().await;
    let now = Timestamp::now();
    h.loyalty.set_faults(once_after_commit());
    let request = hold("m-1", 600, 7_900, now, SignedDuration::from_secs(900));
    h.sf.create_hold(&request, &key("h1")).await.unwrap_err();
    let held = h.sf.create_hold(&request, &key("h1")).await.unwrap();
    assert_eq!((held.status, held.value_minor.get()), (HoldStatus::Held, 600));
    assert_eq!(
        h.sf.create_hold(&request, &key("h1")).await.unwrap().hold_id,
        held.hold_id
    );
    assert_eq!(
        h.loyalty.holds().len(),
        1,
        "one hold, though the first answer was lost"
    );
    assert_eq!(
        h.sf.balance(&request.member_id).await.unwrap().available.get(),
        4_400,
        "debited"
    );

    let committed =
        h.sf.commit_hold(&held.hold_id, &commit("o-9", 600), &key("c1"))
            .await
            .unwrap();
    assert_eq!(committed.status, HoldStatus::Committed);
    assert_eq!(committed.transaction, Some(order("o-9")));
    // The same commit again is the same answer; another order's is refused as a redemption verdict.
    let again =
        h.sf.commit_hold(&held.hold_id, &commit("o-9", 600), &key("c1"))
            .await
            .unwrap();
    assert_eq!(again.status, HoldStatus::Committed);
    let e =
        h.sf.commit_hold(&held.hold_id, &commit("o-10", 600), &key("c2"))
            .await
            .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Rejected {
                reason: ReasonCode::RedemptionRefused,
                ..
            }
        ),
        "{e:?}"
    );
    let e = h.sf.release_hold(&held.hold_id, &key("r1")).await.unwrap_err();
    assert!(e.to_string().contains("hold_committed"), "{e}");
    assert_eq!(h.loyalty.balance("m-1").unwrap().get(), 4_400);
}

#[tokio::test]
async fn a_released_or_expired_hold_gives_the_points_back_and_cannot_be_committed() {
    let h = start().await;
    let now = Timestamp::now();
    let held =
        h.sf.create_hold(
            &hold("m-1", 300, 5_000, now, SignedDuration::from_secs(900)),
            &key("h2"),
        )
        .await
        .unwrap();
    let released = h.sf.release_hold(&held.hold_id, &key("r2")).await.unwrap();
    assert_eq!(released.status, HoldStatus::Released);
    assert_eq!(
        h.sf.release_hold(&held.hold_id, &key("r2")).await.unwrap().status,
        HoldStatus::Released
    );
    let e =
        h.sf.commit_hold(&held.hold_id, &commit("o-11", 300), &key("c3"))
            .await
            .unwrap_err();
    assert!(e.to_string().contains("hold_released"), "{e}");

    let short =
        h.sf.create_hold(
            &hold("m-1", 200, 5_000, now, SignedDuration::from_millis(1_500)),
            &key("h3"),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert_eq!(
        h.sf.get_hold(&short.hold_id).await.unwrap().status,
        HoldStatus::Expired
    );
    let e =
        h.sf.commit_hold(&short.hold_id, &commit("o-12", 200), &key("c4"))
            .await
            .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Rejected {
                reason: ReasonCode::RedemptionRefused,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("hold_expired"), "{e}");
    assert_eq!(
        h.sf.balance(&short.member_id).await.unwrap().available.get(),
        5_000
    );
}

#[tokio::test]
async fn the_request_limit_and_outages_are_back_pressure_and_refusals_are_verdicts() {
    let h = start().await;
    h.loyalty.set_faults(Faults {
        throttle_rate: 1.0,
        ..Faults::default()
    });
    let e =
        h.sf.accrue(&accrual("m-1", "r-3", 1_000), &key("t"))
            .await
            .unwrap_err();
    assert!(
        matches!(e, Error::Unavailable { .. }),
        "REQUEST_LIMIT_EXCEEDED: {e:?}"
    );
    h.loyalty.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let e =
        h.sf.accrue(&accrual("m-1", "r-3", 1_000), &key("t"))
            .await
            .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "503: {e:?}");
    h.loyalty.set_faults(Faults::default());
    let e =
        h.sf.accrue(&accrual("unknown-7", "r-4", 1_000), &key("u"))
            .await
            .unwrap_err();
    assert!(
        matches!(e, Error::Rejected { .. }) && e.to_string().contains("member_not_found"),
        "{e:?}"
    );
    assert!(h.loyalty.transactions().is_empty());
}

/// Salesforce keeps an abandoned checkout's debit past the hold's expiry: the member's next balance
/// read cancels it (Cancel Redemption), and only it.
#[tokio::test]
async fn an_abandoned_hold_is_cancelled_by_the_member_s_next_balance_read() {
    let h = start().await;
    let now = Timestamp::now();
    let member = retail_sync_contracts::values::MemberId::parse("m-1").unwrap();
    let abandoned =
        h.sf.create_hold(
            &hold("m-1", 400, 5_000, now, SignedDuration::from_millis(1_200)),
            &key("h4"),
        )
        .await
        .unwrap();
    let kept =
        h.sf.create_hold(
            &hold("m-1", 100, 5_000, now, SignedDuration::from_secs(900)),
            &key("h5"),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(h.sf.balance(&member).await.unwrap().available.get(), 4_900);
    // What reached the platform: the abandoned hold's debit cancelled, nothing else.
    let cancelled: Vec<_> = h
        .loyalty
        .applied()
        .into_iter()
        .filter_map(|(_, call, _)| match call {
            retail_sync_simulators::loyalty::LoyaltyCall::Release(hold) => Some(hold),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled, vec![abandoned.hold_id.clone()]);
    assert_eq!(
        h.sf.get_hold(&abandoned.hold_id).await.unwrap().status,
        HoldStatus::Expired
    );
    assert_eq!(
        h.sf.get_hold(&kept.hold_id).await.unwrap().status,
        HoldStatus::Held,
        "a live hold stays"
    );
}

/// A wrong instance URL (or API version) answers 404: the accrual waits for the fix, it is never
/// refused.
#[tokio::test]
async fn an_org_that_is_not_there_is_a_setup_fault_not_a_refusal() {
    let h = start().await;
    let base = h.base.clone();
    let auth = sims::oauth_at(&format!("{base}/services/oauth2/token"), ClientAuth::Body);
    let wrong = SalesforceLoyalty::new(&fast(format!("{base}/not-the-instance")), auth, mapping()).unwrap();
    let e = wrong
        .accrue(&accrual("m-1", "r-9", 1_000), &key("w"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().contains("check the base URL"), "{e}");
    assert!(h.loyalty.transactions().is_empty());
}

// --- the books read back ---------------------------------------------------------------------------

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// The samples' business time (`samples::accrual` and `samples::adjustment`).
fn sample_time() -> Timestamp {
    at("2026-05-28T20:26:40Z")
}

/// From the day before the samples to a day from now (the holds are taken now).
fn wide() -> (Timestamp, Timestamp) {
    (
        at("2026-05-27T00:00:00Z"),
        Timestamp::now() + SignedDuration::from_hours(24),
    )
}

/// The reference loyalty platform over its system API, `m-1` and `m-2` seeded as in [`start`] and
/// [`trade`]: what the system-API connector reads for the same calls.
async fn reference() -> (LoyaltySimulator, HttpLoyalty) {
    let loyalty = LoyaltySimulator::new();
    loyalty.seed_balance("m-1", Points::new(5_000).unwrap());
    loyalty.seed_balance("m-2", Points::ZERO);
    let (base, _server) = sims::serve(ErpSimulator::new(), loyalty.clone(), Access::local()).await;
    let http = HttpLoyalty::new(&fast(base.clone()), sims::oauth(&base, ClientAuth::Body)).unwrap();
    (loyalty, http)
}

/// The ids one run of [`trade`] was answered.
struct Traded {
    accrual: ExternalRef,
    redemption: ExternalRef,
    short_accrual: ExternalRef,
    reversal: ExternalRef,
    recredit: ExternalRef,
    refund: ExternalRef,
    restore: ExternalRef,
    /// When the committed hold was taken: before and after.
    held: (Timestamp, Timestamp),
}

/// The same calls through either connector: an accrual on a receipt; a hold committed to order `o-1`,
/// one released and one left open; `m-2` earning 10 points and a return asking 40 of them back (it
/// takes 10) and a later shipment's correction giving 2 back; re-credits of `o-1`'s redeemed points on its
/// cancellation and on a refund.
async fn trade(l: &dyn Loyalty) -> Traded {
    let accrued = l
        .accrue(&accrual("m-1", "r-1", 2_500), &key("receipt:store-1:r-1"))
        .await
        .unwrap();
    let before = Timestamp::now();
    let held = l
        .create_hold(
            &hold(
                "m-1",
                300,
                5_000,
                Timestamp::now(),
                SignedDuration::from_secs(900),
            ),
            &key("checkout-1"),
        )
        .await
        .unwrap();
    let after = Timestamp::now();
    let committed = l
        .commit_hold(&held.hold_id, &commit("o-1", 300), &key("order:o-1"))
        .await
        .unwrap();
    let released = l
        .create_hold(
            &hold(
                "m-1",
                100,
                5_000,
                Timestamp::now(),
                SignedDuration::from_secs(900),
            ),
            &key("checkout-2"),
        )
        .await
        .unwrap();
    l.release_hold(&released.hold_id, &key("checkout-2:release"))
        .await
        .unwrap();
    l.create_hold(
        &hold("m-1", 50, 5_000, Timestamp::now(), SignedDuration::from_secs(900)),
        &key("checkout-3"),
    )
    .await
    .unwrap();
    let short = l
        .accrue(&accrual("m-2", "r-2", 1_000), &key("receipt:store-1:r-2"))
        .await
        .unwrap();
    let reversal = l
        .adjust(
            &adjustment("m-2", AdjustmentKind::Reversal, "o-2", "return:ret-2", 40),
            &key("order:o-2:reverse"),
        )
        .await
        .unwrap();
    assert_eq!(reversal.delta, -10, "took what m-2 had");
    let restore = l
        .adjust(
            &adjustment("m-2", AdjustmentKind::Restore, "o-2", "correction:s-2", 2),
            &key("order:o-2:correction"),
        )
        .await
        .unwrap();
    assert_eq!(restore.delta, 2);
    let recredit = l
        .adjust(
            &adjustment("m-1", AdjustmentKind::Recredit, "o-1", "cancellation:cx-1", 200),
            &key("order:o-1:recredit"),
        )
        .await
        .unwrap();
    let refund = l
        .adjust(
            &adjustment("m-1", AdjustmentKind::Recredit, "o-1", "refund:rfd-1", 100),
            &key("order:o-1:refund"),
        )
        .await
        .unwrap();
    Traded {
        accrual: accrued.loyalty_transaction_id,
        redemption: committed.loyalty_transaction_id.unwrap(),
        short_accrual: short.loyalty_transaction_id,
        reversal: reversal.loyalty_transaction_id,
        recredit: recredit.loyalty_transaction_id,
        refund: refund.loyalty_transaction_id,
        restore: restore.loyalty_transaction_id,
        held: (before, after),
    }
}

fn member(id: &str) -> MemberId {
    MemberId::parse(id).unwrap()
}

/// A movement with what every kind has; the rest is set by the caller.
fn moved(id: &ExternalRef, kind: PointsKind, m: &str, points: i64) -> BookedPoints {
    BookedPoints {
        loyalty_transaction_id: id.clone(),
        kind,
        member_id: member(m),
        transaction: None,
        reference: None,
        points,
        requested_points: None,
        value_minor: None,
        pending_points: None,
        occurred_at: sample_time(),
    }
}

/// Movements in one order, without what tells the two platforms apart: the ledger ids, and the
/// redemption's instant (Salesforce debits when the hold is taken, the system API when it is committed).
fn comparable(mut movements: Vec<BookedPoints>) -> Vec<BookedPoints> {
    for m in &mut movements {
        m.loyalty_transaction_id = ExternalRef::parse("x".to_owned()).unwrap();
        if m.kind == PointsKind::Redemption {
            m.occurred_at = Timestamp::UNIX_EPOCH;
        }
    }
    movements.sort_by_key(|m| format!("{m:?}"));
    movements
}

/// Every kind of movement the connector makes, read back field for field: the ids it answered, the
/// business time it sent, a reversal that took less with what it asked, the redemption's value — and
/// the same movements, ids and the redemption's instant apart, as the system-API connector reads from
/// the reference platform for the same calls. Holds released or still open are no movement.
#[tokio::test]
async fn the_books_read_back_are_the_movements_the_connector_made() {
    let h = start().await;
    h.loyalty.seed_balance("m-2", Points::ZERO);
    let ids = trade(&h.sf).await;
    let (from, until) = wide();
    let mut books = h.sf.movements(from, until).await.unwrap();

    let redemption = books
        .iter()
        .position(|m| m.kind == PointsKind::Redemption)
        .expect("the committed hold");
    let redeemed = books.remove(redemption);
    let (before, after) = ids.held;
    let to_ms = |t: Timestamp| Timestamp::from_millisecond(t.as_millisecond()).unwrap();
    assert!(
        to_ms(before) <= redeemed.occurred_at && redeemed.occurred_at <= after,
        "the hold's ActivityDate: {redeemed:?}"
    );
    assert_eq!(
        redeemed,
        BookedPoints {
            transaction: Some(order("o-1")),
            value_minor: Some(Amount::new(300).unwrap()),
            occurred_at: redeemed.occurred_at,
            ..moved(&ids.redemption, PointsKind::Redemption, "m-1", -300)
        }
    );
    let expected = vec![
        BookedPoints {
            transaction: Some(receipt("store-1", "r-1")),
            ..moved(&ids.accrual, PointsKind::Accrual, "m-1", 25)
        },
        BookedPoints {
            transaction: Some(receipt("store-1", "r-2")),
            ..moved(&ids.short_accrual, PointsKind::Accrual, "m-2", 10)
        },
        BookedPoints {
            transaction: Some(order("o-2")),
            reference: Some("return:ret-2".into()),
            requested_points: Some(Points::new(40).unwrap()),
            ..moved(&ids.reversal, PointsKind::Reversal, "m-2", -10)
        },
        BookedPoints {
            transaction: Some(order("o-2")),
            reference: Some("correction:s-2".into()),
            ..moved(&ids.restore, PointsKind::Restore, "m-2", 2)
        },
        BookedPoints {
            transaction: Some(order("o-1")),
            reference: Some("cancellation:cx-1".into()),
            ..moved(&ids.recredit, PointsKind::Recredit, "m-1", 200)
        },
        BookedPoints {
            transaction: Some(order("o-1")),
            reference: Some("refund:rfd-1".into()),
            ..moved(&ids.refund, PointsKind::Recredit, "m-1", 100)
        },
    ];
    assert_eq!(books, expected, "in business time order, then by id");

    let (_platform, system_api) = reference().await;
    trade(&system_api).await;
    let theirs = system_api.movements(from, until).await.unwrap();
    let ours = h.sf.movements(from, until).await.unwrap();
    assert_eq!(comparable(ours), comparable(theirs));
}

/// Without the optional field for what an adjustment asked, a reversal that took less reads back with
/// what it took only; everything else is the same.
#[tokio::test]
async fn without_the_requested_points_field_a_short_reversal_reads_what_it_took() {
    let h = start().await;
    h.loyalty.seed_balance("m-2", Points::ZERO);
    let auth = sims::oauth_at(&format!("{}/services/oauth2/token", h.base), ClientAuth::Body);
    let plain = SalesforceLoyalty::new(&fast(h.base.clone()), auth, mapping()).unwrap();
    trade(&plain).await;
    let (from, until) = wide();
    let books = plain.movements(from, until).await.unwrap();
    let reversal = books.iter().find(|m| m.kind == PointsKind::Reversal).unwrap();
    assert_eq!((reversal.points, reversal.requested_points), (-10, None));
    assert_eq!(books.len(), 7);
}

/// The window is `[from, until)` to the millisecond, though SOQL's dateTimes are to the second: a
/// movement at `from` is in, one at `until` is out, and sub-second bounds cut where they say. The
/// system API agrees on every window.
#[tokio::test]
async fn a_window_keeps_what_is_at_from_and_leaves_what_is_at_until() {
    let h = start().await;
    let (_platform, system_api) = reference().await;
    let t = sample_time();
    let offsets = [0, 500, 999, 1_000];
    for (i, ms) in offsets.into_iter().enumerate() {
        let mut request = accrual("m-1", &format!("r-{i}"), 1_000 * (i as i64 + 1));
        request.occurred_at = t + SignedDuration::from_millis(ms);
        let k = key(&format!("receipt:store-1:r-{i}"));
        h.sf.accrue(&request, &k).await.unwrap();
        system_api.accrue(&request, &k).await.unwrap();
    }
    let ms = |n: i64| t + SignedDuration::from_millis(n);
    for (from, until, expected) in [
        (ms(0), ms(1_000), vec![10, 20, 30]),
        (ms(500), ms(1_000), vec![20, 30]),
        (ms(501), ms(2_000), vec![30, 40]),
        (ms(-1_000), ms(0), vec![]),
        (ms(999), ms(1_001), vec![30, 40]),
        (ms(1_000), ms(1_001), vec![40]),
    ] {
        let books = h.sf.movements(from, until).await.unwrap();
        let points: Vec<i64> = books.iter().map(|m| m.points).collect();
        assert_eq!(points, expected, "[{from}, {until})");
        assert!(
            books
                .iter()
                .all(|m| from <= m.occurred_at && m.occurred_at < until)
        );
        let theirs = system_api.movements(from, until).await.unwrap();
        assert_eq!(comparable(books), comparable(theirs), "[{from}, {until})");
    }
}

/// More journals than a batch: every batch is read, `nextRecordsUrl` after `nextRecordsUrl`, and the
/// books are the same as read in one batch; no query locator is left half read.
#[tokio::test]
async fn the_books_are_read_batch_after_batch() {
    let h = start().await;
    for i in 0..7 {
        h.sf.accrue(
            &accrual("m-1", &format!("r-{i}"), 100 * (i + 1)),
            &key(&format!("receipt:store-1:r-{i}")),
        )
        .await
        .unwrap();
    }
    let (from, until) = wide();
    let whole = h.sf.movements(from, until).await.unwrap();
    assert_eq!(whole.len(), 7);
    h.dialects.salesforce.set_page_size(2);
    let batched = h.sf.movements(from, until).await.unwrap();
    assert_eq!(batched, whole);
    assert_eq!(
        batched.iter().map(|m| m.points).sum::<i64>(),
        (1..=7).sum::<i64>()
    );
    assert_eq!(h.dialects.salesforce.open_cursors(), 0, "every batch read");
}

/// An org that is down (503) or too slow is the connector's usual `Unavailable` once its attempts are
/// used up, as for every other call; it reads again once the org answers.
#[tokio::test]
async fn an_org_that_is_down_or_slow_makes_the_books_unavailable() {
    let h = start().await;
    h.sf.accrue(&accrual("m-1", "r-1", 1_000), &key("receipt:store-1:r-1"))
        .await
        .unwrap();
    let (from, until) = wide();
    h.loyalty.set_down(true);
    let e = h.sf.movements(from, until).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { what: "loyalty", .. }), "{e:?}");
    assert!(e.to_string().contains("gave up after 4 attempts"), "{e}");
    assert!(e.to_string().contains("SERVER_UNAVAILABLE"), "{e}");
    h.loyalty.set_down(false);
    h.loyalty.set_faults(Faults {
        latency_ms: 2_000,
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    let e = h.sf.movements(from, until).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { what: "loyalty", .. }), "{e:?}");
    assert!(e.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "timed out, not waited out"
    );
    h.loyalty.set_faults(Faults::default());
    assert_eq!(h.sf.movements(from, until).await.unwrap().len(), 1);
}

/// A token the org stopped honouring (expired or revoked: Salesforce's tokens carry no expiry) is
/// replaced once, and the read goes through.
#[tokio::test]
async fn a_token_refused_during_a_read_is_replaced_once() {
    let h = start().await;
    h.sf.accrue(&accrual("m-1", "r-1", 1_000), &key("receipt:store-1:r-1"))
        .await
        .unwrap();
    let (from, until) = wide();
    assert_eq!(h.sf.movements(from, until).await.unwrap().len(), 1);
    let fetched = h.sf.tokens_fetched();
    h.access.revoke_tokens();
    assert_eq!(h.sf.movements(from, until).await.unwrap().len(), 1);
    assert_eq!(h.sf.tokens_fetched(), fetched + 1);
    assert_eq!(
        h.access.refused(),
        1,
        "refused once, then the fresh token served every query"
    );
}

/// An empty or inverted window is refused as the system API refuses it, without asking the org.
#[tokio::test]
async fn an_empty_window_is_refused_without_a_call() {
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", nobody.local_addr().unwrap());
    drop(nobody);
    let sf = SalesforceLoyalty::new(&fast(base.clone()), sims::basic(), mapping()).unwrap();
    let t = sample_time();
    for (from, until) in [(t, t), (t + SignedDuration::from_secs(1), t)] {
        match sf.movements(from, until).await.unwrap_err() {
            Error::Rejected { reason, message } => {
                assert_eq!(reason, ReasonCode::LoyaltyRejected);
                assert!(message.starts_with("invalid_window: "), "{message}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
}

/// An org answering `body` to every request (200, JSON): what a broken proxy or a changed API does.
fn answering(body: &'static str) -> String {
    answering_by(vec![("", body.to_owned())])
}

/// An org answering each request with the body of the first `(needle, body)` whose needle its request
/// line contains (200, JSON).
fn answering_by(routes: Vec<(&'static str, String)>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = Vec::new();
            let mut buf = [0_u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&request);
            let line = line.lines().next().unwrap_or_default();
            let body = routes
                .iter()
                .find(|(needle, _)| line.contains(needle))
                .map_or("", |(_, body)| body.as_str());
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    base
}

/// Answers the connector cannot read are a clear `Unavailable` (never a panic, never books short of
/// what the org holds): no records, more to read and no way to it, a way that leads elsewhere or in a
/// circle, a journal without a readable date or member, no JSON at all.
#[tokio::test]
async fn an_answer_that_cannot_be_read_is_a_clear_error() {
    let journal = |date: &str, member: &str| {
        format!(
            r#"{{"totalSize": 1, "done": true, "records": [{{"attributes": {{"type": "TransactionJournal"}},
            "Id": "0lVxx0000000001", "Status": "Processed", "ActivityDate": {date}, "MemberId": {member},
            "JournalType": {{"Name": "Accrual"}}, "JournalSubType": {{"Name": "Purchase"}},
            "RetailSync_Reference__c": "retail-sync transaction=receipt:store-1:r-1"}}]}}"#
        )
    };
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let cases: Vec<(&'static str, &str)> = vec![
        (
            r#"{"totalSize": 1, "done": true, "records": "none"}"#,
            "without records",
        ),
        (r#"{"totalSize": 1, "records": []}"#, "whose done is"),
        (
            r#"{"totalSize": 3, "done": false, "records": []}"#,
            "nextRecordsUrl",
        ),
        (
            r#"{"totalSize": 3, "done": false, "records": [], "nextRecordsUrl": "https://elsewhere.example/q"}"#,
            "nextRecordsUrl",
        ),
        (
            r#"{"totalSize": 3, "done": false, "records": [], "nextRecordsUrl": "/services/data/v62.0/query/01g-2"}"#,
            "came twice",
        ),
        (
            leak(journal(r#""yesterday""#, r#""0lMxx0000000001""#)),
            "no readable ActivityDate",
        ),
        (
            leak(journal(r#""2026-05-28T20:26:40.000+0000""#, "null")),
            "no usable MemberId",
        ),
        (
            leak(journal(
                r#""2026-05-28T20:26:40.000+0000""#,
                r#""0lM' OR Id != '""#,
            )),
            "no usable MemberId",
        ),
        ("<html>maintenance</html>", "unreadable success response"),
    ];
    let (from, until) = (at("2026-05-28T00:00:00Z"), at("2026-05-29T00:00:00Z"));
    for (body, says) in cases {
        let base = answering(body);
        let sf = SalesforceLoyalty::new(&fast(base), sims::basic(), mapping()).unwrap();
        let e = sf.movements(from, until).await.unwrap_err();
        assert!(
            matches!(e, Error::Unavailable { what: "loyalty", .. }),
            "{body}: {e:?}"
        );
        assert!(e.to_string().contains(says), "{body}: {e}");
    }
    // A journal whose member record is not found reads nothing rather than a movement of nobody's.
    let none = r#"{"totalSize": 0, "done": true, "records": []}"#.to_owned();
    let base = answering_by(vec![
        (
            "FROM%20TransactionJournal",
            journal(r#""2026-05-28T20:26:40.000+0000""#, r#""0lMxx0000000001""#),
        ),
        ("", none),
    ]);
    let sf = SalesforceLoyalty::new(&fast(base), sims::basic(), mapping()).unwrap();
    let e = sf.movements(from, until).await.unwrap_err();
    assert!(e.to_string().contains("member record"), "{e}");
}
