//! Protection of a downstream system (the ERP, the loyalty platform): a circuit breaker and a cap on
//! concurrent calls, wrapped around its port so that every step calling it shares them.
//!
//! Why a breaker: under a sustained outage every message would otherwise call, fail, and burn one of
//! its receives on the way to the DLQ. With the breaker open, calls fail at once without reaching the
//! system, with the breaker's remaining cool-down as `retry_after`: the runner keeps the message
//! invisible that long (and the embedded runner stops polling the queues of a step whose downstream is
//! open), and one probe call at the end of the cool-down decides whether traffic resumes. A 429 counts
//! as a failure like a 503; its `Retry-After` keeps that message away at least as long, and when the
//! breaker opens on a run of them, it stays open at least as long as the last one asked. (A single
//! 429 does not stop everyone: platforms throttle single requests too, and a random one among
//! thousands must not pause the whole flow.)
//!
//! The state is the process's own (one Lambda container, or the whole embedded runner): containers
//! learn of an outage independently, which costs a few calls each, never correctness.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Semaphore;

use retail_sync_contracts::values::{ExternalRef, HoldId, MemberId};

use crate::error::Error;
use crate::idempotency::IdempotencyKey;
use crate::ports::{
    Accrual, AccrualRequest, Adjustment, AdjustmentRequest, Balance, CommitRequest, Erp, ErpCancelRequest,
    ErpDocument, ErpReinstateRequest, ErpReturnRequest, ErpSaleRequest, Hold, HoldRequest, Loyalty,
};

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Consecutive unavailable answers that open the breaker.
    pub failures_to_open: u32,
    /// The first cool-down; each failed probe doubles it, up to `max_cool_down`.
    pub cool_down: Duration,
    pub max_cool_down: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures_to_open: 5,
            cool_down: Duration::from_secs(1),
            max_cool_down: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        cool_down: Duration,
    },
    /// The cool-down is over and one probe call is out; everyone else waits for its answer.
    Probing {
        cool_down: Duration,
    },
}

/// A breaker's state as operators and the runner see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    Probing,
}

/// One downstream system's breaker and call cap.
pub struct Downstream {
    name: &'static str,
    settings: BreakerSettings,
    state: Mutex<State>,
    /// `None`: no cap in this process (on Lambda, the event source's maximum concurrency is the cap).
    permits: Option<Semaphore>,
    opened: std::sync::atomic::AtomicU64,
}

/// How long a caller that meets a probe in flight waits before trying again.
const PROBE_WAIT: Duration = Duration::from_millis(250);

impl Downstream {
    pub fn new(
        name: &'static str,
        settings: BreakerSettings,
        max_concurrent_calls: Option<usize>,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            settings,
            state: Mutex::new(State::Closed { failures: 0 }),
            permits: max_concurrent_calls.map(|n| Semaphore::new(n.max(1))),
            opened: Default::default(),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// How many times the breaker opened (a probe that failed counts again).
    pub fn times_opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::Probing { .. } => BreakerState::Probing,
        }
    }

    /// While the breaker is open: how long until it lets a probe through. The embedded runner does
    /// not poll the queues of steps whose downstream says so.
    pub fn wait(&self) -> Option<Duration> {
        match *self.lock() {
            State::Open { until, .. } => until.checked_duration_since(Instant::now()),
            State::Probing { .. } => Some(PROBE_WAIT),
            State::Closed { .. } => None,
        }
    }

    /// The cool-down is over and the next call will be the probe: a poller takes one message, not a
    /// batch, so a failed probe costs one message one receive.
    pub fn probe_due(&self) -> bool {
        matches!(*self.lock(), State::Open { until, .. } if until <= Instant::now())
    }

    /// Lets a call through, or says how long to stay away.
    fn admit(&self) -> Result<(), Duration> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until, cool_down } => match until.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Err(left),
                _ => {
                    *state = State::Probing { cool_down };
                    tracing::info!(downstream = self.name, "circuit breaker probing");
                    Ok(())
                }
            },
            State::Probing { .. } => Err(PROBE_WAIT),
        }
    }

    fn record(&self, result: &Result<(), &Error>) {
        let mut state = self.lock();
        let unavailable = matches!(result, Err(Error::Unavailable { .. }));
        // A refusal is an answer: the system is up.
        if !unavailable {
            if !matches!(*state, State::Closed { failures: 0 }) {
                if !matches!(*state, State::Closed { .. }) {
                    tracing::info!(downstream = self.name, "circuit breaker closed");
                }
                *state = State::Closed { failures: 0 };
            }
            return;
        }
        let asked = result.as_ref().err().and_then(|e| e.retry_after());
        let next = match *state {
            State::Closed { failures } if failures + 1 < self.settings.failures_to_open => State::Closed {
                failures: failures + 1,
            },
            State::Closed { .. } | State::Open { .. } => self.open(self.settings.cool_down, asked),
            State::Probing { cool_down } => {
                let doubled = (cool_down * 2).min(self.settings.max_cool_down);
                self.open(doubled, asked)
            }
        };
        *state = next;
    }

    fn open(&self, cool_down: Duration, asked: Option<Duration>) -> State {
        // A Retry-After longer than our own cool-down wins; the cool-down's growth stays ours.
        let wait = asked.map_or(cool_down, |a| a.max(cool_down));
        self.opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            downstream = self.name,
            wait_ms = wait.as_millis() as u64,
            "circuit breaker open"
        );
        State::Open {
            until: Instant::now() + wait,
            cool_down,
        }
    }

    /// Runs one call of the downstream under the breaker and the cap.
    pub async fn call<T, F>(&self, call: F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>>,
    {
        if let Err(wait) = self.admit() {
            return Err(Error::unavailable_for(
                self.name,
                format!("circuit breaker open; retry in {} ms", wait.as_millis()),
                wait,
            ));
        }
        let _permit = match &self.permits {
            Some(permits) => Some(
                permits
                    .acquire()
                    .await
                    .map_err(|e| Error::unavailable(self.name, e))?,
            ),
            None => None,
        };
        let result = call.await;
        self.record(&result.as_ref().map(drop));
        result
    }
}

/// The ERP port behind its downstream guard.
pub struct GuardedErp {
    pub inner: Arc<dyn Erp>,
    pub guard: Arc<Downstream>,
}

#[async_trait]
impl Erp for GuardedErp {
    async fn post_sale(&self, request: &ErpSaleRequest, key: &IdempotencyKey) -> Result<ErpDocument, Error> {
        self.guard.call(self.inner.post_sale(request, key)).await
    }

    async fn cancel_order(
        &self,
        request: &ErpCancelRequest,
        key: &IdempotencyKey,
    ) -> Result<ErpDocument, Error> {
        self.guard.call(self.inner.cancel_order(request, key)).await
    }

    async fn post_return(
        &self,
        request: &ErpReturnRequest,
        key: &IdempotencyKey,
    ) -> Result<ErpDocument, Error> {
        self.guard.call(self.inner.post_return(request, key)).await
    }

    async fn reinstate(
        &self,
        request: &ErpReinstateRequest,
        key: &IdempotencyKey,
    ) -> Result<ErpDocument, Error> {
        self.guard.call(self.inner.reinstate(request, key)).await
    }
}

/// The loyalty port behind its downstream guard.
/// A member system's calls through its downstream's breaker and cap (the same `Downstream` as the
/// system's other calls: a member sync during an outage waits with the rest).
pub struct GuardedMembers<T: ?Sized> {
    pub inner: Arc<T>,
    pub guard: Arc<Downstream>,
}

#[async_trait]
impl<T: crate::ports::MemberSync + ?Sized> crate::ports::MemberSync for GuardedMembers<T> {
    async fn sync_member(
        &self,
        snapshot: &crate::ports::MemberSnapshot,
        key: &IdempotencyKey,
    ) -> Result<(), Error> {
        self.guard.call(self.inner.sync_member(snapshot, key)).await
    }
}

#[async_trait]
impl<T: crate::ports::LoyaltyMembers + ?Sized> crate::ports::LoyaltyMembers for GuardedMembers<T> {
    async fn enrol(&self, member_id: &MemberId, key: &IdempotencyKey) -> Result<(), Error> {
        self.guard.call(self.inner.enrol(member_id, key)).await
    }

    async fn merge(
        &self,
        duplicate: &MemberId,
        survivor: &MemberId,
        key: &IdempotencyKey,
    ) -> Result<retail_sync_contracts::values::Points, Error> {
        self.guard.call(self.inner.merge(duplicate, survivor, key)).await
    }
}

impl crate::ports::MemberSystems {
    /// The systems' calls through their breakers: the loyalty platform's with `loyalty`, the ERP's with
    /// `erp` (the CRM has none of its own: its calls are few and its outages dead-letter, for a redrive).
    pub fn guarded(self, loyalty: &Arc<Downstream>, erp: &Arc<Downstream>) -> Self {
        Self {
            loyalty: self.loyalty.map(|inner| {
                Arc::new(GuardedMembers {
                    inner,
                    guard: loyalty.clone(),
                }) as Arc<dyn crate::ports::LoyaltyMembers>
            }),
            erp: self.erp.map(|inner| {
                Arc::new(GuardedMembers {
                    inner,
                    guard: erp.clone(),
                }) as Arc<dyn crate::ports::MemberSync>
            }),
            crm: self.crm,
        }
    }
}

pub struct GuardedLoyalty {
    pub inner: Arc<dyn Loyalty>,
    pub guard: Arc<Downstream>,
}

#[async_trait]
impl Loyalty for GuardedLoyalty {
    async fn accrue(&self, request: &AccrualRequest, key: &IdempotencyKey) -> Result<Accrual, Error> {
        self.guard.call(self.inner.accrue(request, key)).await
    }

    async fn balance(&self, member_id: &MemberId) -> Result<Balance, Error> {
        self.guard.call(self.inner.balance(member_id)).await
    }

    async fn create_hold(&self, request: &HoldRequest, key: &IdempotencyKey) -> Result<Hold, Error> {
        self.guard.call(self.inner.create_hold(request, key)).await
    }

    async fn get_hold(&self, hold_id: &HoldId) -> Result<Hold, Error> {
        self.guard.call(self.inner.get_hold(hold_id)).await
    }

    async fn commit_hold(
        &self,
        hold_id: &HoldId,
        request: &CommitRequest,
        key: &IdempotencyKey,
    ) -> Result<Hold, Error> {
        self.guard
            .call(self.inner.commit_hold(hold_id, request, key))
            .await
    }

    async fn release_hold(&self, hold_id: &HoldId, key: &IdempotencyKey) -> Result<Hold, Error> {
        self.guard.call(self.inner.release_hold(hold_id, key)).await
    }

    async fn adjust(&self, request: &AdjustmentRequest, key: &IdempotencyKey) -> Result<Adjustment, Error> {
        self.guard.call(self.inner.adjust(request, key)).await
    }
    async fn confirm_accrual(
        &self,
        loyalty_transaction_id: &ExternalRef,
        key: &IdempotencyKey,
    ) -> Result<crate::ports::Confirmation, Error> {
        self.guard
            .call(self.inner.confirm_accrual(loyalty_transaction_id, key))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> Error {
        Error::unavailable("erp", "503")
    }

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failures_to_open: 3,
            cool_down: Duration::from_millis(40),
            max_cool_down: Duration::from_millis(100),
        }
    }

    #[tokio::test]
    async fn consecutive_outages_open_it_and_calls_then_fail_fast_without_reaching_the_system() {
        let guard = Downstream::new("erp", settings(), None);
        let calls = std::sync::atomic::AtomicU32::new(0);
        let failing = || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err::<(), _>(down())
        };
        for _ in 0..3 {
            assert!(guard.call(failing()).await.is_err());
        }
        assert_eq!(guard.state(), BreakerState::Open);
        let err = guard.call(failing()).await.unwrap_err();
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "the 4th call never left"
        );
        let wait = err.retry_after().expect("an open breaker says how long");
        assert!(wait <= Duration::from_millis(40) && !wait.is_zero(), "{wait:?}");
        assert!(guard.wait().is_some());
    }

    #[tokio::test]
    async fn a_refusal_is_an_answer_and_resets_the_count() {
        let guard = Downstream::new("erp", settings(), None);
        for _ in 0..2 {
            let _ = guard.call(async { Err::<(), _>(down()) }).await;
        }
        let refused = Error::rejected(
            retail_sync_contracts::events::ReasonCode::ErpRejected,
            "period_closed",
        );
        let _ = guard.call(async { Err::<(), _>(refused) }).await;
        let _ = guard.call(async { Err::<(), _>(down()) }).await;
        assert_eq!(guard.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn after_the_cool_down_one_probe_decides_and_a_failed_probe_doubles_the_wait() {
        let guard = Downstream::new("erp", settings(), None);
        for _ in 0..3 {
            let _ = guard.call(async { Err::<(), _>(down()) }).await;
        }
        tokio::time::sleep(Duration::from_millis(45)).await;
        // The probe fails: open again, for twice as long.
        let _ = guard.call(async { Err::<(), _>(down()) }).await;
        assert_eq!(guard.state(), BreakerState::Open);
        let wait = guard.wait().expect("open");
        assert!(wait > Duration::from_millis(45), "doubled: {wait:?}");
        tokio::time::sleep(wait + Duration::from_millis(5)).await;
        // The system is back: the probe succeeds and traffic resumes by itself.
        assert_eq!(guard.call(async { Ok::<_, Error>(7) }).await.unwrap(), 7);
        assert_eq!(guard.state(), BreakerState::Closed);
        assert_eq!(guard.times_opened(), 2);
    }

    #[tokio::test]
    async fn one_429_does_not_open_it_but_a_run_of_them_opens_it_for_at_least_their_retry_after() {
        let guard = Downstream::new("loyalty", settings(), None);
        let throttled = || Error::unavailable_for("loyalty", "429", Duration::from_millis(300));
        let _ = guard.call(async { Err::<(), _>(throttled()) }).await;
        assert_eq!(guard.state(), BreakerState::Closed);
        for _ in 0..2 {
            let _ = guard.call(async { Err::<(), _>(throttled()) }).await;
        }
        assert_eq!(guard.state(), BreakerState::Open);
        let wait = guard.wait().expect("open");
        assert!(
            wait > Duration::from_millis(200),
            "the Retry-After, not the 40 ms cool-down: {wait:?}"
        );
    }

    #[tokio::test]
    async fn the_cap_bounds_concurrent_calls() {
        let guard = Downstream::new("erp", BreakerSettings::default(), Some(2));
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let calls = (0..8).map(|_| {
            let (guard, in_flight, peak) = (guard.clone(), in_flight.clone(), peak.clone());
            tokio::spawn(async move {
                guard
                    .call(async {
                        let now = in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        Ok::<_, Error>(())
                    })
                    .await
            })
        });
        for call in calls.collect::<Vec<_>>() {
            call.await.unwrap().unwrap();
        }
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
