//! What both simulated systems share: state behind one mutex, the latency setting outside it (read on
//! every call without locking), the request counter, faults and the idempotency record of each key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::error::SimError;
use crate::faults::{FaultKind, FaultState, Faults};

#[derive(Default)]
pub(crate) struct Shared<S> {
    state: Mutex<S>,
    latency_ms: AtomicU64,
}

impl<S> Shared<S> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, S> {
        // A panic while holding the lock leaves plain data behind; keep serving rather than poison
        // every later call.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_latency(&self, latency_ms: u64) {
        self.latency_ms.store(latency_ms, Ordering::Relaxed);
    }

    /// Sleeps for the latency fault. Only touches the timer when there is one.
    pub(crate) async fn delay(&self) {
        let ms = self.latency_ms.load(Ordering::Relaxed);
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
}

impl<Req, Resp> Default for Gate<Req, Resp> {
    fn default() -> Self {
        Self {
            faults: FaultState::default(),
            requests: 0,
            seen: HashMap::new(),
        }
    }
}

impl<Req: PartialEq + Clone, Resp: Clone> Gate<Req, Resp> {
    pub(crate) fn requests(&self) -> u64 {
        self.requests
    }

    pub(crate) fn faults(&self) -> &Faults {
        self.faults.get()
    }

    pub(crate) fn set_faults(&mut self, faults: Faults) {
        self.faults.set(faults);
    }

    /// Runs `apply` (the system's own rules and effect) unless a fault or the key's record decides.
    /// Only successes are recorded: a refusal is evaluated afresh when repeated, and the rules being
    /// deterministic, it is refused again.
    pub(crate) fn call(
        &mut self,
        request: &Req,
        key: &str,
        apply: impl FnOnce() -> Result<Resp, SimError>,
    ) -> Result<Resp, SimError> {
        self.requests += 1;
        let fault = self.faults.next();
        match fault {
            Some(FaultKind::Error) => {
                return Err(SimError::Unavailable {
                    message: "service unavailable (injected fault)",
                });
            }
            Some(FaultKind::Timeout) => return Err(SimError::TimedOut { committed: false }),
            Some(FaultKind::TimeoutAfterCommit) | None => {}
        }
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
                }
                result
            }
        };
        if fault == Some(FaultKind::TimeoutAfterCommit) {
            return Err(SimError::TimedOut {
                committed: result.is_ok(),
            });
        }
        result
    }
}
