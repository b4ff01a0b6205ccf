//! The loyalty simulator. Rules:
//! - a member is enrolled by their first accrual; member ids starting with `unknown-` do not exist
//!   (404 `member_not_found`);
//! - points = eligible net amount in whole currency units, rounded down: `eligible_minor /
//!   minor_per_major` (1 point per 1.00 EUR, per 1 JPY, per 1.000 KWD);
//! - transactions are numbered `LT-00000001`, … and each member has a balance;
//! - the idempotency contract is the ERP's: first answer again for a repeated key, 409 if the key comes
//!   with another request.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use retail_sync_contracts::events::TransactionRef;
use retail_sync_contracts::values::{Amount, Currency, ExternalRef, MemberId, Points};
use retail_sync_core::ports::{Accrual, AccrualRequest};

use crate::error::SimError;
use crate::faults::Faults;
use crate::system::{Gate, Shared};

/// One accrual, as the loyalty platform's ledger shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoyaltyTransaction {
    pub loyalty_transaction_id: ExternalRef,
    pub idempotency_key: String,
    pub member_id: MemberId,
    pub transaction: TransactionRef,
    pub currency: Currency,
    pub eligible_minor: Amount,
    pub points: Points,
    pub balance_after: Points,
    pub occurred_at: Timestamp,
}

#[derive(Default)]
struct LoyaltyState {
    gate: Gate<AccrualRequest, Accrual>,
    transactions: Vec<LoyaltyTransaction>,
    balances: BTreeMap<String, Points>,
}

/// The simulated loyalty platform. Clones share one state.
#[derive(Clone, Default)]
pub struct LoyaltySimulator {
    shared: Arc<Shared<LoyaltyState>>,
}

/// The earning rule: whole currency units of the eligible amount, rounded down.
pub fn points_for(eligible_minor: Amount, currency: Currency) -> Points {
    Points::new(eligible_minor.get() / currency.minor_per_major())
        .expect("a non-negative amount divided by a positive number stays in range")
}

impl LoyaltySimulator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_faults(faults: Faults) -> Self {
        let sim = Self::new();
        sim.set_faults(faults);
        sim
    }

    /// Accrues points under the rules above; `key` is the caller's idempotency key.
    pub fn accrue(&self, request: &AccrualRequest, key: &str) -> Result<Accrual, SimError> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        state.gate.call(request, key, || {
            let member = request.member_id.as_str();
            if member.starts_with("unknown-") {
                return Err(SimError::refused(
                    404,
                    "member_not_found",
                    format!("no member {member}"),
                ));
            }
            let points = points_for(request.eligible_minor, request.currency);
            let before = state.balances.get(member).copied().unwrap_or(Points::ZERO);
            let balance = Points::new(before.get() + points.get())
                .map_err(|e| SimError::refused(422, "balance_limit", format!("member {member}: {e}")))?;
            let loyalty_transaction_id =
                ExternalRef::parse(format!("LT-{:08}", state.transactions.len() + 1))
                    .expect("LT- followed by digits is a valid ExternalRef");
            state.balances.insert(member.to_owned(), balance);
            state.transactions.push(LoyaltyTransaction {
                loyalty_transaction_id: loyalty_transaction_id.clone(),
                idempotency_key: key.to_owned(),
                member_id: request.member_id.clone(),
                transaction: request.transaction.clone(),
                currency: request.currency,
                eligible_minor: request.eligible_minor,
                points,
                balance_after: balance,
                occurred_at: request.occurred_at,
            });
            Ok(Accrual {
                loyalty_transaction_id,
                points,
                balance,
            })
        })
    }

    /// The member's balance; `None` for a member never enrolled.
    pub fn balance(&self, member_id: &str) -> Option<Points> {
        self.shared.lock().balances.get(member_id).copied()
    }

    /// Every member's balance, by member id.
    pub fn balances(&self) -> BTreeMap<String, u64> {
        self.shared
            .lock()
            .balances
            .iter()
            .map(|(member, points)| (member.clone(), points.get().unsigned_abs()))
            .collect()
    }

    /// Every accrual, in order.
    pub fn transactions(&self) -> Vec<LoyaltyTransaction> {
        self.shared.lock().transactions.clone()
    }

    /// How many `accrue` calls reached the platform, faulted and refused ones included.
    pub fn requests(&self) -> u64 {
        self.shared.lock().gate.requests()
    }

    pub fn faults(&self) -> Faults {
        self.shared.lock().gate.faults().clone()
    }

    /// Replaces the faults (and restarts the seeded random sequence and the `fail_first` script).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_latency(faults.latency_ms);
        self.shared.lock().gate.set_faults(faults);
    }

    /// Waits out the latency fault; the adapters call it before `accrue`.
    pub async fn delay(&self) {
        self.shared.delay().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::FaultKind;
    use crate::samples::accrual;

    fn amount(minor: i64) -> Amount {
        Amount::new(minor).unwrap()
    }

    fn currency(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    #[test]
    fn one_point_is_earned_per_whole_currency_unit_rounded_down() {
        assert_eq!(points_for(amount(12_345), currency("EUR")).get(), 123);
        assert_eq!(points_for(amount(99), currency("EUR")).get(), 0);
        assert_eq!(
            points_for(amount(1_234), currency("JPY")).get(),
            1_234,
            "JPY has no minor unit"
        );
        assert_eq!(
            points_for(amount(12_999), currency("KWD")).get(),
            12,
            "KWD has 1000 fils"
        );
    }

    #[test]
    fn the_first_accrual_enrols_the_member_and_balances_add_up() {
        let loyalty = LoyaltySimulator::new();
        assert_eq!(loyalty.balance("m-1"), None);
        let a = loyalty.accrue(&accrual("m-1", "r-1", 12_345), "k1").unwrap();
        assert_eq!((a.points.get(), a.balance.get()), (123, 123));
        assert_eq!(a.loyalty_transaction_id.as_str(), "LT-00000001");
        let b = loyalty.accrue(&accrual("m-1", "r-2", 1_000), "k2").unwrap();
        assert_eq!((b.points.get(), b.balance.get()), (10, 133));
        assert_eq!(b.loyalty_transaction_id.as_str(), "LT-00000002");
        assert_eq!(loyalty.balance("m-1").map(Points::get), Some(133));
        assert_eq!(loyalty.balances(), BTreeMap::from([("m-1".to_owned(), 133)]));
        assert_eq!(loyalty.transactions()[1].balance_after.get(), 133);
    }

    #[test]
    fn an_unknown_member_is_refused_with_404_and_not_enrolled() {
        let loyalty = LoyaltySimulator::new();
        let err = loyalty
            .accrue(&accrual("unknown-9", "r-1", 500), "k")
            .unwrap_err();
        assert!(matches!(
            err,
            SimError::Refused {
                status: 404,
                code: "member_not_found",
                ..
            }
        ));
        assert_eq!(loyalty.balance("unknown-9"), None);
        assert!(loyalty.transactions().is_empty());
    }

    #[test]
    fn a_repeated_key_returns_the_first_accrual_and_earns_once() {
        let loyalty = LoyaltySimulator::new();
        let first = loyalty.accrue(&accrual("m-1", "r-1", 5_000), "k").unwrap();
        let again = loyalty.accrue(&accrual("m-1", "r-1", 5_000), "k").unwrap();
        assert_eq!(first, again);
        assert_eq!(loyalty.balance("m-1").map(Points::get), Some(50));
        let err = loyalty.accrue(&accrual("m-1", "r-1", 6_000), "k").unwrap_err();
        assert!(matches!(
            err,
            SimError::Refused {
                status: 409,
                code: "idempotency_key_reused",
                ..
            }
        ));
        assert_eq!(loyalty.transactions().len(), 1);
    }

    #[test]
    fn a_timeout_after_commit_earns_once_across_the_retry() {
        let loyalty = LoyaltySimulator::with_faults(Faults {
            fail_first: 1,
            fail_first_with: FaultKind::TimeoutAfterCommit,
            ..Faults::default()
        });
        let req = accrual("m-1", "r-1", 2_000);
        assert_eq!(
            loyalty.accrue(&req, "k").unwrap_err(),
            SimError::TimedOut { committed: true }
        );
        assert_eq!(loyalty.accrue(&req, "k").unwrap().balance.get(), 20);
        assert_eq!(loyalty.balance("m-1").map(Points::get), Some(20));
    }

    #[test]
    fn seeded_timeouts_after_commit_never_earn_twice() {
        let loyalty = LoyaltySimulator::with_faults(Faults {
            timeout_after_commit_rate: 0.5,
            seed: Some(7),
            ..Faults::default()
        });
        // Retry each accrual with its key until it answers, as a client would.
        for i in 0..50 {
            let req = accrual("m-1", &format!("r-{i}"), 100);
            let key = format!("k{i}");
            while loyalty.accrue(&req, &key).is_err() {}
        }
        assert_eq!(loyalty.balance("m-1").map(Points::get), Some(50));
        assert_eq!(loyalty.transactions().len(), 50);
        assert!(loyalty.requests() > 50, "some calls timed out");
    }
}
