//! What both simulated systems share: state behind one mutex, the latency setting outside it (read on
//! every call without locking), the request counter, faults, the idempotency record of each key, and
//! (when asked) the journal of applied calls.
//!
//! The journal is how a local run keeps the reference systems with its own state: the simulators are
//! deterministic, so the calls they applied, replayed in order at the instants they were applied, give
//! back the same documents, balances and holds. The local runner takes the new entries before each of
//! its commits and stores them in the same transaction as the steps' results, so a resumed run sees the
//! world it left, never one that is behind or ahead of its sagas.

use std::collections::HashMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::error::SimError;
use crate::faults::{FaultState, Faults, Latency};

#[derive(Default)]
pub(crate) struct Shared<S> {
    state: Mutex<S>,
    /// Set when any latency fault is: the fault-free path reads one flag and takes no lock.
    has_latency: AtomicBool,
    latency: Mutex<Option<Latency>>,
}

/// The request counter and fault controls every simulated system offers, over its `shared` state's
/// `gate` (the ERP's, the loyalty platform's and the CRM's are the same five methods): written once here
/// and stated in each simulator's `impl` as `crate::system::fault_controls!("the ERP");`.
macro_rules! fault_controls {
    ($system:literal) => {
        #[doc = concat!(
                    "How many mutating calls reached ", $system, ", faulted and refused ones included."
                )]
        pub fn requests(&self) -> u64 {
            self.shared.lock().gate.requests()
        }

        pub fn faults(&self) -> crate::faults::Faults {
            self.shared.lock().gate.faults().clone()
        }

        /// Starts (`true`) or ends an outage: every call answers 503 meanwhile. The other fault
        /// settings and their random sequence carry on.
        pub fn set_down(&self, down: bool) {
            self.shared.lock().gate.set_down(down);
        }

        /// Replaces the faults (and restarts the seeded random sequence and the `fail_first` script).
        pub fn set_faults(&self, faults: crate::faults::Faults) {
            self.shared.set_latency(&faults);
            self.shared.lock().gate.set_faults(faults);
        }

        /// Waits out the latency fault; the adapters call it before every call.
        pub async fn delay(&self) {
            self.shared.delay().await;
        }
    };
}
pub(crate) use fault_controls;

impl<S> Shared<S> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, S> {
        // A panic while holding the lock leaves plain data behind; keep serving rather than poison
        // every later call.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_latency(&self, faults: &Faults) {
        let latency = Latency::new(faults);
        self.has_latency.store(latency.is_some(), Ordering::Relaxed);
        *self.latency.lock().unwrap_or_else(|p| p.into_inner()) = latency;
    }

    /// Sleeps for the latency faults (fixed, and a spike when one is drawn). Only touches the timer when
    /// there is one.
    pub(crate) async fn delay(&self) {
        if !self.has_latency.load(Ordering::Relaxed) {
            return;
        }
        let ms = self
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .map_or(0, Latency::draw);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

/// The gate every mutating call passes: counts it, injects faults, and keeps the idempotency contract
/// (first response again for a repeated key, 409 for a repeated key with another request).
pub(crate) struct Gate<Req, Resp> {
    faults: FaultState,
    requests: u64,
    seen: HashMap<String, (Req, Resp)>,
    /// Calls applied since the journal was last taken; `None` while nobody keeps a journal.
    journal: Option<Vec<Applied<Req>>>,
}

/// One applied call, as the journal keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Applied<Req> {
    pub key: String,
    /// The system's clock when it applied the call (hold expiry depends on it).
    pub at: Timestamp,
    pub call: Req,
}

impl<Req, Resp> Default for Gate<Req, Resp> {
    fn default() -> Self {
        Self {
            faults: FaultState::default(),
            requests: 0,
            seen: HashMap::new(),
            journal: None,
        }
    }
}

impl<Req: PartialEq + Clone, Resp: Clone> Gate<Req, Resp> {
    /// Every applied call: key, request, answer.
    pub(crate) fn entries(&self) -> Vec<(String, Req, Resp)> {
        self.seen
            .iter()
            .map(|(key, (request, response))| (key.clone(), request.clone(), response.clone()))
            .collect()
    }

    /// The request first applied under `key`.
    pub(crate) fn request_of(&self, key: &str) -> Option<&Req> {
        self.seen.get(key).map(|(request, _)| request)
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests
    }

    pub(crate) fn faults(&self) -> &Faults {
        self.faults.get()
    }

    pub(crate) fn set_faults(&mut self, faults: Faults) {
        self.faults.set(faults);
    }

    pub(crate) fn set_down(&mut self, down: bool) {
        self.faults.set_down(down);
    }

    /// Starts keeping the journal of applied calls (from now on).
    pub(crate) fn keep_journal(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// The calls applied since the last take, oldest first.
    pub(crate) fn take_journal(&mut self) -> Vec<Applied<Req>> {
        self.journal.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Runs `apply` (the system's own rules and effect) unless a fault or the key's record decides.
    /// Only successes are recorded: a refusal is evaluated afresh when repeated, and the rules being
    /// deterministic, it is refused again.
    /// `at` is the system's clock, kept in the journal.
    pub(crate) fn call(
        &mut self,
        request: &Req,
        key: &str,
        at: Timestamp,
        apply: impl FnOnce() -> Result<Resp, SimError>,
    ) -> Result<Resp, SimError> {
        self.requests += 1;
        let answered = self.faults.before_call()?;
        let result = match self.seen.get(key) {
            Some((first, response)) if first == request => Ok(response.clone()),
            Some(_) => Err(SimError::refused(
                409,
                "idempotency_key_reused",
                format!("idempotency key {key:?} was first used for a different request"),
            )),
            None => {
                let result = apply();
                if let Ok(response) = &result {
                    self.seen
                        .insert(key.to_owned(), (request.clone(), response.clone()));
                    if let Some(journal) = &mut self.journal {
                        journal.push(Applied {
                            key: key.to_owned(),
                            at,
                            call: request.clone(),
                        });
                    }
                }
                result
            }
        };
        if !answered {
            return Err(SimError::TimedOut {
                committed: result.is_ok(),
            });
        }
        result
    }
}

/// Reads journal entries back; a line that does not parse is an error naming it (a state file written by
/// another version, or damaged).
pub(crate) fn parse_journal<Req: for<'de> Deserialize<'de>>(
    system: &str,
    entries: &[String],
) -> Result<Vec<Applied<Req>>, String> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::from_str(e).map_err(|err| format!("{system} journal entry {i}: {err}")))
        .collect()
}

/// Serializes taken journal entries, one JSON text each.
pub(crate) fn write_journal<Req: Serialize>(entries: Vec<Applied<Req>>) -> Vec<String> {
    entries
        .iter()
        .map(|e| serde_json::to_string(e).expect("journal entries serialize"))
        .collect()
}
