//! What a simulated system answers instead of a result.

/// A simulator's refusal or failure. `Refused` is the system's considered answer (the HTTP layer sends
/// `status` with `{"code", "message"}`); the other two are what faults look like to a caller.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// The system refused the request for good (closed period, unknown member, reused key).
    #[error("refused with {status} {code}: {message}")]
    Refused {
        status: u16,
        code: &'static str,
        message: String,
    },
    /// Injected 503: nothing was applied.
    #[error("unavailable: {message}")]
    Unavailable { message: &'static str },
    /// Injected 429: nothing was applied; come back after `retry_after_ms`.
    #[error("throttled: retry after {retry_after_ms} ms")]
    Throttled { retry_after_ms: u64 },
    /// Injected timeout: the caller never hears back. `committed` says whether the effect was applied
    /// anyway, which only a retry with the same idempotency key can reveal safely.
    #[error("timed out (effect applied: {committed})")]
    TimedOut { committed: bool },
}

impl SimError {
    pub(crate) fn refused(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self::Refused {
            status,
            code,
            message: message.into(),
        }
    }
}
