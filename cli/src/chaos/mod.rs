//! The chaos harness: a generated day run through the whole system while faults are injected, then the
//! books checked against a model recomputed from the day alone.
//!
//! Phases: feed the day (checkout API calls, then every event, duplicated and shuffled) → run with the
//! faults on (downstream 5xx, 429 with `Retry-After`, timeouts, timeouts after commit, latency spikes,
//! one outage window per downstream, lost acknowledgements) until the queues drain → faults off, every
//! DLQ redriven once, run until drained → check.
//!
//! A run keeps its state like `local run`: killed (even `kill -9`) and started again without `--fresh`,
//! it resumes where its last commit left it, feeding the day again only if the first feed did not
//! finish (a re-fed event is a duplicate, which the system must absorb anyway).

pub mod check;
pub mod day;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use retail_sync_contracts::values::Points;
use retail_sync_core::Error;
use retail_sync_core::ports::{QueueConsumer, Received};
use retail_sync_simulators::Faults;

use crate::backends::Backend;
use crate::local::{LocalSystem, Progress, Simulators};
use crate::ops::source_of;

pub use check::{Observed, Verdict, check};
pub use day::{Day, Mix, Plan, generate};

/// The fault mix. The defaults are the README's "default fault mix".
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FaultMix {
    pub error_rate: f64,
    pub throttle_rate: f64,
    pub retry_after_ms: u64,
    pub timeout_rate: f64,
    pub timeout_after_commit_rate: f64,
    pub spike_rate: f64,
    pub spike_ms: u64,
    /// Share of processed messages whose acknowledgement is lost: the process "crashed" after the
    /// step's effect and records, before the delete; the message comes back after its visibility timeout.
    pub ack_loss_rate: f64,
    /// One outage of each downstream this long (0: none): the ERP's starts `outage_at` into the run,
    /// loyalty's half an outage later, so for a while both are down.
    pub outage: Duration,
    pub outage_at: Duration,
}

impl Default for FaultMix {
    fn default() -> Self {
        Self {
            error_rate: 0.05,
            throttle_rate: 0.005,
            retry_after_ms: 2_000,
            timeout_rate: 0.005,
            timeout_after_commit_rate: 0.01,
            spike_rate: 0.01,
            spike_ms: 20,
            ack_loss_rate: 0.01,
            outage: Duration::from_secs(60),
            outage_at: Duration::from_secs(2),
        }
    }
}

impl FaultMix {
    /// No faults at all (the control run).
    pub fn none() -> Self {
        Self {
            error_rate: 0.0,
            throttle_rate: 0.0,
            retry_after_ms: 0,
            timeout_rate: 0.0,
            timeout_after_commit_rate: 0.0,
            spike_rate: 0.0,
            spike_ms: 0,
            ack_loss_rate: 0.0,
            outage: Duration::ZERO,
            outage_at: Duration::ZERO,
        }
    }

    fn faults(&self, seed: u64) -> Faults {
        Faults {
            error_rate: self.error_rate,
            throttle_rate: self.throttle_rate,
            retry_after_ms: self.retry_after_ms,
            timeout_rate: self.timeout_rate,
            timeout_after_commit_rate: self.timeout_after_commit_rate,
            spike_rate: self.spike_rate,
            spike_ms: self.spike_ms,
            seed: Some(seed),
            ..Faults::default()
        }
    }
}

/// What a chaos run did and found.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub seed: u64,
    pub events: usize,
    pub duplicate_deliveries: usize,
    pub api_calls: usize,
    pub transactions: usize,
    pub faults: FaultMix,
    /// Messages handled by the steps (every delivery counts), in the faulty phase and after the redrive.
    pub handled: u64,
    pub acks_lost: u64,
    pub erp_calls: u64,
    pub loyalty_calls: u64,
    pub breaker_opened: u64,
    pub dead_lettered_before_redrive: usize,
    pub redriven: usize,
    pub quarantined: usize,
    pub wall_seconds: f64,
    pub verdict: Verdict,
}

/// The simulators a chaos day needs: every member of the day with the opening balance.
pub fn simulators(plan: &Plan) -> Simulators {
    let sims = Simulators::default();
    let opening = Points::new(day::OPENING_BALANCE).expect("a positive balance");
    for member in &plan.members {
        sims.loyalty.seed_balance(member, opening);
    }
    sims
}

/// Loses a share of acknowledgements on their way to the queue.
struct LossyAcks {
    inner: Arc<dyn QueueConsumer>,
    rate: f64,
    on: AtomicBool,
    rng: std::sync::Mutex<StdRng>,
    lost: AtomicU64,
}

#[async_trait]
impl QueueConsumer for LossyAcks {
    async fn receive(&self, queue: &str, max: usize) -> Result<Vec<Received>, Error> {
        self.inner.receive(queue, max).await
    }

    async fn delete(&self, queue: &str, receipts: &[String]) -> Result<(), Error> {
        let kept: Vec<String> = if self.on.load(Ordering::Relaxed) && self.rate > 0.0 {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            receipts
                .iter()
                .filter(|_| {
                    let lose = rng.random_bool(self.rate.clamp(0.0, 1.0));
                    if lose {
                        self.lost.fetch_add(1, Ordering::Relaxed);
                    }
                    !lose
                })
                .cloned()
                .collect()
        } else {
            receipts.to_vec()
        };
        self.inner.delete(queue, &kept).await
    }

    async fn change_visibility(&self, queue: &str, receipt: &str, wait: Duration) -> Result<(), Error> {
        self.inner.change_visibility(queue, receipt, wait).await
    }

    async fn defer(&self, queue: &str, receipt: &str, wait: Duration) -> Result<(), Error> {
        self.inner.defer(queue, receipt, wait).await
    }
}

/// What the system and its simulators hold now: the checker's input.
pub async fn observe<B: Backend>(system: &LocalSystem<B>) -> anyhow::Result<Observed> {
    let dead_letters = system
        .backend
        .dead_letters_of(&system.topology.dead_letter_queues())
        .await?
        .iter()
        .map(Vec::len)
        .sum();
    let sims = &system.simulators;
    Ok(Observed {
        sagas: system.backend.all_sagas().await?,
        postings: sims.erp.postings(),
        transactions: sims.loyalty.transactions(),
        // What each member owns: spendable and, under return windows, pending (the ledger holds both).
        balances: {
            let mut owned = sims.loyalty.balances();
            for m in sims.loyalty.members() {
                if let Some(b) = owned.get_mut(m.member_id.as_str()) {
                    *b += m.pending.get().unsigned_abs();
                }
            }
            owned
        },
        holds: sims.loyalty.holds(),
        quarantine: system.backend.list(usize::MAX).await?,
        dead_letters,
        now: jiff::Timestamp::now(),
    })
}

/// The file beside the state that says the day was fed whole.
pub fn fed_marker(state: &Path) -> PathBuf {
    let mut path = state.as_os_str().to_owned();
    path.push(".chaos-fed");
    PathBuf::from(path)
}

/// Runs `day` through `system` under `faults`, then checks the books. `state` (embedded runs) keeps
/// the marker that lets a resumed run skip feeding again.
pub async fn run<B: Backend>(
    mut system: LocalSystem<B>,
    day: &Day,
    seed: u64,
    faults: FaultMix,
    state: Option<&Path>,
    mut on_progress: impl FnMut(&str, Progress),
) -> anyhow::Result<ChaosReport> {
    let started = Instant::now();
    let mut lossy = None;
    system.wrap_queues(|inner| {
        let wrapper = Arc::new(LossyAcks {
            inner,
            rate: faults.ack_loss_rate,
            on: AtomicBool::new(true),
            rng: std::sync::Mutex::new(StdRng::seed_from_u64(seed ^ 0xac4)),
            lost: AtomicU64::new(0),
        });
        lossy = Some(wrapper.clone());
        wrapper
    });
    let lossy = lossy.expect("wrap_queues calls its wrapper");

    let marker = state.map(fed_marker);
    let stamp = format!("{seed} {}", day.inputs.len());
    let fed_already = marker
        .as_ref()
        .and_then(|m| std::fs::read_to_string(m).ok())
        .is_some_and(|s| s == stamp);
    if !fed_already {
        on_progress("feeding", Progress::default());
        system.feed(&day.inputs).await?;
        if let Some(marker) = &marker {
            std::fs::write(marker, &stamp)?;
        }
    }

    // Faults on.
    let sims = system.simulators.clone();
    sims.erp.set_faults(faults.faults(seed ^ 0xe59));
    sims.loyalty.set_faults(faults.faults(seed ^ 0x10a));
    let outage = (!faults.outage.is_zero()).then(|| {
        let sims = sims.clone();
        tokio::spawn(async move {
            let half = faults.outage / 2;
            tokio::time::sleep(faults.outage_at).await;
            sims.erp.set_down(true);
            tokio::time::sleep(half).await;
            sims.loyalty.set_down(true);
            tokio::time::sleep(faults.outage - half).await;
            sims.erp.set_down(false);
            tokio::time::sleep(half).await;
            sims.loyalty.set_down(false);
        })
    });
    let mut handled = system
        .run_until_idle(|p| on_progress("running with faults", p))
        .await?
        .handled;
    // The queues may drain before the outages end (a small day): wait them out, then drain again, so
    // that what the outage sent to a DLQ or left waiting is part of the run.
    if let Some(outage) = outage {
        outage.await?;
        handled += system
            .run_until_idle(|p| on_progress("running with faults", p))
            .await?
            .handled;
    }

    // Faults off, every DLQ redriven once.
    sims.erp.set_faults(Faults::default());
    sims.loyalty.set_faults(Faults::default());
    lossy.on.store(false, Ordering::Relaxed);
    let mut dead_lettered = 0;
    let mut redriven = 0;
    let dlqs = system.topology.dead_letter_queues();
    for (dlq, dead) in dlqs.iter().zip(system.backend.dead_letters_of(&dlqs).await?) {
        // The run is idle: a DLQ with nothing in it has nothing to redrive (on SQS, a redrive of an
        // empty queue waits out a long poll).
        if dead.is_empty() {
            continue;
        }
        dead_lettered += dead.len();
        let source = source_of(&system.topology, dlq)?;
        redriven += system.backend.redrive(dlq, &source).await?;
    }
    handled += system
        .run_until_idle(|p| on_progress("after the redrive", p))
        .await?
        .handled;

    let observed = observe(&system).await?;
    let verdict = check(&day.plan, &observed);
    Ok(ChaosReport {
        seed,
        events: day.events,
        duplicate_deliveries: day.duplicates,
        api_calls: day.inputs.len() - day.events,
        transactions: verdict.transactions,
        faults,
        handled,
        acks_lost: lossy.lost.load(Ordering::Relaxed),
        erp_calls: sims.erp.requests(),
        loyalty_calls: sims.loyalty.requests(),
        breaker_opened: system.guards.erp.times_opened() + system.guards.loyalty.times_opened(),
        dead_lettered_before_redrive: dead_lettered,
        redriven,
        quarantined: observed.quarantine.len(),
        wall_seconds: started.elapsed().as_secs_f64(),
        verdict,
    })
}

impl ChaosReport {
    /// The summary a person reads.
    pub fn summary(&self) -> String {
        let v = &self.verdict;
        let f = &self.faults;
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "day        seed {}: {} events ({} duplicate deliveries), {} checkout API calls, {} transactions, {} follow-ups, {} poison",
            self.seed,
            self.events,
            self.duplicate_deliveries,
            self.api_calls,
            v.transactions,
            v.follow_ups,
            v.poison
        ));
        line(format!(
            "faults     5xx {:.1}%, 429 {:.1}% (Retry-After {} ms), timeout {:.1}%, timeout after commit {:.1}%, spikes {:.1}% (+{} ms), acks lost {:.1}%, outage {} s per downstream",
            f.error_rate * 100.0,
            f.throttle_rate * 100.0,
            f.retry_after_ms,
            f.timeout_rate * 100.0,
            f.timeout_after_commit_rate * 100.0,
            f.spike_rate * 100.0,
            f.spike_ms,
            f.ack_loss_rate * 100.0,
            f.outage.as_secs()
        ));
        line(format!(
            "run        {} deliveries handled, {} acks lost, {} ERP and {} loyalty calls, breakers opened {} times",
            self.handled, self.acks_lost, self.erp_calls, self.loyalty_calls, self.breaker_opened
        ));
        line(format!(
            "redrive    {} dead-lettered under faults, {} redriven, {} left in the DLQs",
            self.dead_lettered_before_redrive, self.redriven, v.dead_letters
        ));
        line(format!(
            "books      ERP net {} · points earned {} reversed {} redeemed {} given back {} (expected from the day)",
            v.expected.erp_net_minor,
            v.expected.points_earned,
            v.expected.points_reversed,
            v.expected.points_redeemed,
            v.expected.points_given_back
        ));
        line(format!(
            "check      lost {} · doubles {} · mismatched {} · members {} checked, {} unbalanced · over-reversed {} · holds past expiry {} · quarantined {}",
            v.lost,
            v.doubles,
            v.mismatched,
            v.members_checked,
            v.members_unbalanced,
            v.over_reversed,
            v.holds_past_expiry,
            self.quarantined
        ));
        for p in &v.problems {
            line(format!("           {p}"));
        }
        line(format!(
            "verdict    {} in {:.1} s",
            if v.balanced() { "BALANCED" } else { "NOT BALANCED" },
            self.wall_seconds
        ));
        out
    }
}
