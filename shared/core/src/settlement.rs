//! Settlement of earned points. A sale's points can wait for its return window: the accrual asks the
//! loyalty platform to hold them **pending** until the window's end (`AccrualRequest.pending_until`), a
//! return inside the window cancels pending points before it reverses spendable ones (the platform's
//! rule, `Adjustment.pending_cancelled`), and once the window has passed, [`confirm_due`] — the scheduled
//! `confirm-points` step — makes what is left spendable, once per accrual.
//!
//! Windows are configured per channel ([`ReturnWindows`], `RETURN_WINDOWS`); a channel without one
//! earns spendable points at once, as before. The window runs from the transaction's business time (a
//! POS sale's, an order shipment's: the goods the customer has), never from its arrival.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use retail_sync_contracts::{Channel, EventType, SOURCE_POLICY};

use crate::error::Error;
use crate::idempotency::IdempotencyKey;
use crate::ports::{Loyalty, Metrics, SagaStore};
use crate::saga::{self, Saga, StepOutcome};

/// The scheduled step's name (its timeline entries, its keys, its function's binary).
pub const CONFIRM_POINTS: &str = "confirm-points";

/// The environment variable (and template parameter `ReturnWindowDays`) holding the windows.
pub const RETURN_WINDOWS: &str = "RETURN_WINDOWS";

/// The longest window accepted, in days.
pub const MAX_WINDOW_DAYS: u32 = 365;

/// Return windows in days, per channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReturnWindows(BTreeMap<Channel, u32>);

impl ReturnWindows {
    /// No window anywhere: every point is spendable at once.
    pub fn none() -> Self {
        Self::default()
    }

    pub fn of(windows: impl IntoIterator<Item = (Channel, u32)>) -> Self {
        Self(windows.into_iter().filter(|(_, d)| *d > 0).collect())
    }

    /// From `RETURN_WINDOWS`: a JSON object of selling channel name (`pos`, `ecommerce`, `mobile`,
    /// `marketplace`: those that may send a sale or an order) to whole days (0–365; 0 or absent: none).
    /// Unset or empty: none.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let Some(text) = lookup(RETURN_WINDOWS).filter(|t| !t.trim().is_empty()) else {
            return Ok(Self::none());
        };
        let map: BTreeMap<String, serde_json::Value> = serde_json::from_str(&text).map_err(|e| {
            format!("{RETURN_WINDOWS} is a JSON object of channel to days, e.g. {{\"ecommerce\": 30}} ({e})")
        })?;
        let mut windows = BTreeMap::new();
        for (name, days) in map {
            let sells = |c: &Channel| {
                c.may_send()
                    .iter()
                    .any(|t| matches!(t, EventType::SaleCompleted | EventType::OrderPlaced))
            };
            let selling = || SOURCE_POLICY.iter().map(|(c, _)| *c).filter(sells);
            let channel = selling().find(|c| c.as_str() == name).ok_or_else(|| {
                let names: Vec<&str> = selling().map(|c| c.as_str()).collect();
                format!(
                    "{RETURN_WINDOWS}: {name:?} is not a channel that sells ({})",
                    names.join(", ")
                )
            })?;
            let days = days
                .as_u64()
                .and_then(|d| u32::try_from(d).ok())
                .filter(|d| *d <= MAX_WINDOW_DAYS)
                .ok_or_else(|| {
                    format!("{RETURN_WINDOWS}: {name}: days are a whole number from 0 to {MAX_WINDOW_DAYS}")
                })?;
            windows.insert(channel, days);
        }
        Ok(Self::of(windows))
    }

    /// When the points of a transaction of `channel` that happened at `occurred_at` stop being pending;
    /// `None` when the channel has no window (spendable at once).
    pub fn pending_until(&self, channel: Option<Channel>, occurred_at: Timestamp) -> Option<Timestamp> {
        let days = *self.0.get(&channel?)?;
        occurred_at
            .checked_add(SignedDuration::from_hours(24 * i64::from(days)))
            .ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a confirmation run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Confirmed {
    /// Accruals confirmed by this run.
    pub accruals: usize,
    pub points: i64,
    /// Accruals still pending (their window has not ended).
    pub waiting: usize,
    /// `(saga, message)` of the confirmations that failed this time (the next run tries again).
    pub failed: Vec<(String, String)>,
}

/// Confirms every pending accrual of `sagas` whose window ended by `now`: the platform makes what a
/// return has not cancelled spendable (key `<saga>:confirm-points:<accrual>`, so a rerun or a concurrent
/// run confirms once), then the saga records it (`confirmed_at`, the points) and says so on its timeline,
/// in one versioned write. A failure is counted and left for the next run.
pub async fn confirm_due(
    sagas: &[Saga],
    loyalty: &dyn Loyalty,
    store: &dyn SagaStore,
    metrics: &dyn Metrics,
    now: Timestamp,
) -> Confirmed {
    let mut done = Confirmed::default();
    for s in sagas.iter().filter(|s| s.member.is_none()) {
        for p in s.ledger.pending.iter().filter(|p| p.confirmed_at.is_none()) {
            if p.until > now {
                done.waiting += 1;
                continue;
            }
            match confirm_one(s, &p.loyalty_transaction_id, loyalty, store, now).await {
                Ok(points) => {
                    done.accruals += 1;
                    done.points += points;
                    metrics.add("points_confirmed", points.unsigned_abs(), None);
                }
                Err(e) => {
                    metrics.add("confirmations_failed", 1, Some(("class", e.class())));
                    done.failed.push((s.id.to_string(), e.to_string()));
                }
            }
        }
    }
    done
}

async fn confirm_one(
    saga: &Saga,
    accrual: &retail_sync_contracts::values::ExternalRef,
    loyalty: &dyn Loyalty,
    store: &dyn SagaStore,
    now: Timestamp,
) -> Result<i64, Error> {
    let key = IdempotencyKey::for_step(&format!("{}:{CONFIRM_POINTS}", saga.id), accrual.as_str());
    let c = loyalty.confirm_accrual(accrual, &key).await?;
    let confirmed = c.points_confirmed;
    // From the saga as scanned: a write over a stale copy (an earlier confirmation of the same saga in
    // this run, a step meanwhile) conflicts and is applied again over a fresh read.
    saga::update_from(store, saga.clone(), None, |s| {
        let entry = s
            .ledger
            .pending
            .iter_mut()
            .find(|p| &p.loyalty_transaction_id == accrual && p.confirmed_at.is_none());
        if let Some(p) = entry {
            p.confirmed_at = Some(now);
            p.points_confirmed = Some(confirmed);
            let until = p.until;
            s.record(
                CONFIRM_POINTS,
                StepOutcome::Done,
                format!("{confirmed} points of {accrual} confirmed: the return window ended {until}"),
                now,
            );
        }
    })
    .await?;
    Ok(confirmed.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(value: &'static str) -> impl Fn(&str) -> Option<String> {
        move |name| (name == RETURN_WINDOWS).then(|| value.to_owned())
    }

    #[test]
    fn windows_are_days_per_selling_channel() {
        let w = ReturnWindows::from_lookup(env(r#"{"ecommerce": 30, "pos": 0}"#)).unwrap();
        let at: Timestamp = "2026-11-21T10:00:00Z".parse().unwrap();
        assert_eq!(
            w.pending_until(Some(Channel::Ecommerce), at),
            Some("2026-12-21T10:00:00Z".parse().unwrap())
        );
        assert_eq!(w.pending_until(Some(Channel::Pos), at), None, "0 days: none");
        assert_eq!(w.pending_until(Some(Channel::Mobile), at), None, "absent: none");
        assert_eq!(w.pending_until(None, at), None);
        assert!(ReturnWindows::from_lookup(|_| None).unwrap().is_empty());
        assert!(ReturnWindows::from_lookup(env(" ")).unwrap().is_empty());
        for bad in [
            r#"{"crm": 30}"#,
            r#"{"ecommerce": -1}"#,
            r#"{"ecommerce": 400}"#,
            r#"{"ecommerce": 1.5}"#,
            "[30]",
            "30",
        ] {
            let e = ReturnWindows::from_lookup(env(bad)).unwrap_err();
            assert!(e.contains(RETURN_WINDOWS), "{bad}: {e}");
        }
        // An OMS ships, cancels and returns but sells nothing: an order's window is its selling
        // channel's. The refusal lists exactly the channels it takes.
        let e = ReturnWindows::from_lookup(env(r#"{"oms": 5}"#)).unwrap_err();
        assert_eq!(
            e,
            r#"RETURN_WINDOWS: "oms" is not a channel that sells (pos, ecommerce, mobile, marketplace)"#
        );
    }
}
