//! Fault injection shared by both simulators: settings an operator or a test puts in, and the per-call
//! draw that turns them into a fault.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::SimError;

/// Fault settings of one simulated system. The default injects nothing. Rates are probabilities in
/// `0.0..=1.0` per call, drawn once per call from one random number, so at most one fault hits a call.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added before every call (in-process and HTTP).
    pub latency_ms: u64,
    /// Answer 503 without applying.
    pub error_rate: f64,
    /// Answer 429 with `Retry-After: retry_after_ms` (rounded up to whole seconds over HTTP) without
    /// applying: the platform's rate limit.
    pub throttle_rate: f64,
    pub retry_after_ms: u64,
    /// A latency spike: this share of calls waits `spike_ms` more (on top of `latency_ms`).
    pub spike_rate: f64,
    pub spike_ms: u64,
    /// Do not apply, and never answer in time.
    pub timeout_rate: f64,
    /// Apply, then never answer in time: the case idempotency keys exist for.
    pub timeout_after_commit_rate: f64,
    /// 503 for every call.
    pub down: bool,
    /// Seeds the random draws so a run with the same calls in the same order meets the same faults.
    pub seed: Option<u64>,
    /// A script for deterministic tests: the next `fail_first` calls after these faults are set fail with
    /// `fail_first_with`, before any rate applies. Counts down as calls arrive (reading the faults back
    /// shows how many are left).
    pub fail_first: u32,
    pub fail_first_with: FaultKind,
}

/// How an injected fault shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// 503, nothing applied.
    #[default]
    Error,
    /// 429 with `Retry-After`, nothing applied.
    Throttle,
    /// No answer, nothing applied.
    Timeout,
    /// No answer, but applied.
    TimeoutAfterCommit,
}

impl Faults {
    /// Refuses rates that are not probabilities; the HTTP admin endpoint answers 400 with this message.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("error_rate", self.error_rate),
            ("throttle_rate", self.throttle_rate),
            ("timeout_rate", self.timeout_rate),
            ("timeout_after_commit_rate", self.timeout_after_commit_rate),
        ];
        for (name, rate) in rates.iter().chain([&("spike_rate", self.spike_rate)]) {
            if !(0.0..=1.0).contains(rate) {
                return Err(format!("{name} must be within 0.0..=1.0, got {rate}"));
            }
        }
        let total: f64 = rates.iter().map(|(_, r)| r).sum();
        // A little slack so 0.1 + 0.2 + 0.7 is not refused for floating-point rounding.
        if total > 1.0 + 1e-9 {
            return Err(format!("the rates add up to {total}, more than 1.0"));
        }
        Ok(())
    }
}

/// The settings plus the random source they are drawn from.
pub(crate) struct FaultState {
    faults: Faults,
    rng: StdRng,
}

impl Default for FaultState {
    fn default() -> Self {
        Self::new(Faults::default())
    }
}

impl FaultState {
    fn new(faults: Faults) -> Self {
        let rng = match faults.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self { faults, rng }
    }

    pub(crate) fn set(&mut self, faults: Faults) {
        *self = Self::new(faults);
    }

    pub(crate) fn get(&self) -> &Faults {
        &self.faults
    }

    /// Starts or ends an outage, leaving the other settings and the random sequence as they are.
    pub(crate) fn set_down(&mut self, down: bool) {
        self.faults.down = down;
    }

    /// What the fault this call meets does to it: `Err` answers the call instead of applying it (503,
    /// 429 with the configured wait, a timeout); `Ok(true)` applies it and answers; `Ok(false)` applies it
    /// and never answers in time (the caller then sees `SimError::TimedOut { committed }`).
    pub(crate) fn before_call(&mut self) -> Result<bool, SimError> {
        match self.next() {
            Some(FaultKind::Error) => Err(SimError::Unavailable {
                message: "service unavailable (injected fault)",
            }),
            Some(FaultKind::Throttle) => Err(SimError::Throttled {
                retry_after_ms: self.faults.retry_after_ms,
            }),
            Some(FaultKind::Timeout) => Err(SimError::TimedOut { committed: false }),
            Some(FaultKind::TimeoutAfterCommit) => Ok(false),
            None => Ok(true),
        }
    }

    /// The fault this call meets, if any.
    pub(crate) fn next(&mut self) -> Option<FaultKind> {
        let f = &mut self.faults;
        if f.down {
            return Some(FaultKind::Error);
        }
        if f.fail_first > 0 {
            f.fail_first -= 1;
            return Some(f.fail_first_with);
        }
        // Out-of-range rates (set in-process without `validate`) behave as if clamped, never as garbage.
        let p = |r: f64| if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) };
        let error = p(f.error_rate);
        let throttle = error + p(f.throttle_rate);
        let timeout = throttle + p(f.timeout_rate);
        let after_commit = timeout + p(f.timeout_after_commit_rate);
        // No draw when nothing can happen: keeps the fault-free path cheap.
        if after_commit == 0.0 {
            return None;
        }
        let r: f64 = self.rng.random();
        if r < error {
            Some(FaultKind::Error)
        } else if r < throttle {
            Some(FaultKind::Throttle)
        } else if r < timeout {
            Some(FaultKind::Timeout)
        } else if r < after_commit {
            Some(FaultKind::TimeoutAfterCommit)
        } else {
            None
        }
    }
}

/// Latency faults, read before every call (outside the system's lock): the fixed `latency_ms` and the
/// random spikes.
pub(crate) struct Latency {
    fixed_ms: u64,
    spike_rate: f64,
    spike_ms: u64,
    rng: StdRng,
}

impl Latency {
    pub(crate) fn new(faults: &Faults) -> Option<Self> {
        let spikes = faults.spike_rate > 0.0 && faults.spike_ms > 0;
        (faults.latency_ms > 0 || spikes).then(|| Self {
            fixed_ms: faults.latency_ms,
            spike_rate: if spikes { faults.spike_rate } else { 0.0 },
            spike_ms: faults.spike_ms,
            // Its own stream, so spikes do not shift the draws of the other faults.
            rng: match faults.seed {
                Some(seed) => StdRng::seed_from_u64(seed ^ 0x5eed_5bac_e000_0001),
                None => StdRng::from_os_rng(),
            },
        })
    }

    /// How long this call waits.
    pub(crate) fn draw(&mut self) -> u64 {
        let spike = self.spike_rate > 0.0 && self.rng.random::<f64>() < self.spike_rate;
        self.fixed_ms + if spike { self.spike_ms } else { 0 }
    }
}
