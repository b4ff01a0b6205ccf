//! One error type for the business layer. What matters to a caller is the class: a retryable error
//! leaves the message on its queue (redelivered after the visibility timeout, then dead-lettered after
//! maxReceiveCount); a permanent one is recorded on the saga and announced, never retried.

use std::time::Duration;

use retail_sync_contracts::Rejection;
use retail_sync_contracts::events::ReasonCode;

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A dependency (table, queue, bus, ERP, loyalty) did not answer usefully: I/O, timeout, 5xx,
    /// throttling. Retryable.
    #[error("{what} unavailable: {source}")]
    Unavailable {
        what: &'static str,
        #[source]
        source: BoxError,
        /// How long the dependency asked us to stay away (a 429's or 503's `Retry-After`, or an open
        /// circuit breaker's remaining cool-down); the runner keeps the message invisible that long.
        retry_after: Option<Duration>,
    },
    /// A versioned record changed under us. Retryable: reload and apply again.
    #[error("concurrent update of {what}")]
    Conflict { what: String },
    /// Another delivery of the same step holds the claim. Retryable after `retry_after`.
    #[error("step {key} is in progress elsewhere; retry after {retry_after:?}")]
    InProgress { key: String, retry_after: Duration },
    /// Something this step needs has not happened yet (out-of-order arrival). Retryable: park and retry.
    #[error("waiting for {what}")]
    NotYet { what: String },
    /// The input or a remote system refused the operation for good. Permanent.
    #[error("{reason:?}: {message}")]
    Rejected { reason: ReasonCode, message: String },
    /// The message itself is bad input (the ingest parser's verdict, or an unroutable internal event).
    /// Permanent: the runner quarantines it with the rejection's reason.
    #[error("bad input: {0}")]
    BadInput(Box<Rejection>),
    /// A stored record could not be read back, or holds what the rules never write: a bug or a manual
    /// edit. Permanent for this message. `source` is the cause (a parse error, or what is wrong).
    #[error("corrupt record {what}: {source}")]
    Corrupt {
        what: String,
        #[source]
        source: BoxError,
    },
}

/// An error and its causes on one line, `outer: cause: its cause`, each written once. Most of our error
/// types put their cause in their own message, so that a log line showing only the message is whole;
/// listing the chain after such a message (as `{:#}` does) repeated every cause. A cause whose text the
/// line already holds is left out, so the line is the same whether an error names its cause or only
/// chains it. This is how the CLI and the functions write an error that ends a command or a start.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

impl Error {
    pub fn unavailable(what: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            what,
            source: source.into(),
            retry_after: None,
        }
    }

    /// [`Error::unavailable`] with the wait the dependency asked for.
    pub fn unavailable_for(what: &'static str, source: impl Into<BoxError>, retry_after: Duration) -> Self {
        Self::Unavailable {
            what,
            source: source.into(),
            retry_after: Some(retry_after),
        }
    }

    /// The wait the error itself names: a dependency's `Retry-After`, an open breaker's cool-down, or
    /// another delivery's claim. `None` leaves the delay to the runner's backoff.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => *retry_after,
            Self::InProgress { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    pub fn corrupt(what: impl Into<String>, cause: impl Into<BoxError>) -> Self {
        Self::Corrupt {
            what: what.into(),
            source: cause.into(),
        }
    }

    pub fn rejected(reason: ReasonCode, message: impl Into<String>) -> Self {
        Self::Rejected {
            reason,
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::Conflict { .. } | Self::InProgress { .. } | Self::NotYet { .. }
        )
    }

    /// A stable label for metrics and logs.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "unavailable",
            Self::Conflict { .. } => "conflict",
            Self::InProgress { .. } => "in_progress",
            Self::NotYet { .. } => "not_yet",
            Self::Rejected { .. } => "rejected",
            Self::BadInput(_) => "bad_input",
            Self::Corrupt { .. } => "corrupt",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("disk: {0}")]
    struct Disk(#[from] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open the store")]
    struct Quiet(#[source] Disk);

    #[test]
    fn a_cause_already_in_the_message_is_written_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Error::unavailable("store", Disk(io));
        assert_eq!(describe(&e), "store unavailable: disk: no such file");
    }

    #[test]
    fn a_cause_only_chained_is_appended_with_its_own_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Quiet(Disk(io));
        assert_eq!(describe(&e), "cannot open the store: disk: no such file");
        let plain = std::io::Error::other("refused");
        assert_eq!(describe(&plain), "refused");
    }
}
