//! The connectors' error: what went wrong on the wire, classified the way the retry loop and the port
//! mapping need it.

use retail_sync_contracts::events::ReasonCode;
use retail_sync_core::Error;

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// Missing or malformed configuration; the adapter cannot be built.
    #[error("configuration {var}: {message}")]
    Config { var: String, message: String },
    /// The HTTP client could not be built (TLS setup).
    #[error("building the HTTP client: {0}")]
    Client(#[source] retail_sync_http::ClientError),
    /// No usable answer: connect error, timeout, connection reset.
    #[error("request failed: {0}")]
    Transport(#[source] reqwest::Error),
    /// A 2xx whose body could not be read or parsed.
    #[error("unreadable success response: {0}")]
    Body(#[source] reqwest::Error),
    /// A non-2xx answer, with the `{code, message}` of its error body (or the status text and the start
    /// of the body when it had none).
    #[error("HTTP {status}: {code}: {message}")]
    Status {
        status: u16,
        code: String,
        message: String,
        /// The answer's `Retry-After` (delta-seconds), on a 429 or a 503.
        retry_after: Option<std::time::Duration>,
    },
    /// No credential to present: the credentials could not be loaded, lack a field, or the token
    /// endpoint refused them or failed. Never a verdict on the business call, so never a rejection.
    #[error("authentication: {message}")]
    Auth { message: String, retryable: bool },
    /// The document is busy or changed under us: locked by another session, or the version we read
    /// is no longer current (412 on `If-Match`). Reading it again and retrying resolves it.
    #[error("document busy: HTTP {status}: {code}: {message}")]
    Busy {
        status: u16,
        code: String,
        message: String,
    },
    /// The system has no such resource where the configuration points (a wrong base URL, service,
    /// program or process name): a fault of the setup, not a verdict on the document, so the message
    /// waits for the fix like it would for an outage.
    #[error("no such resource at {path} (check the base URL and the mapping): HTTP {status}: {message}")]
    Misrouted {
        path: String,
        status: u16,
        message: String,
    },
    /// A create or change whose outcome this attempt cannot know (sent, and no readable answer), or
    /// whose result cannot be read back yet. In a system without idempotency keys it must not be sent
    /// again by this delivery: the lookup of the next delivery (after its backoff) settles it. Not
    /// retried in place; the message is redelivered.
    #[error("outcome not settled: {message}")]
    Unsettled { message: String },
    /// The last retryable failure, once the attempts ran out.
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp {
        attempts: u32,
        #[source]
        last: Box<ConnectorError>,
    },
}

impl ConnectorError {
    /// Worth another attempt with the same idempotency key. A 2xx with an unreadable body is included:
    /// the call was applied, and the contract makes the retry return the same answer without applying
    /// again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport(e) => !e.is_builder(),
            Self::Body(_) => true,
            Self::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            Self::Auth { retryable, .. } => *retryable,
            Self::Busy { .. } | Self::Misrouted { .. } => true,
            Self::Config { .. } | Self::Client(_) | Self::GaveUp { .. } | Self::Unsettled { .. } => false,
        }
    }

    /// Whether a create or change that failed with this error may have been applied all the same: sent,
    /// and no answer that says otherwise (a timeout, a reset, an unreadable 2xx, a 500/502/504).
    pub fn may_have_applied(&self) -> bool {
        match self {
            Self::Transport(e) => !e.is_builder() && !e.is_connect(),
            Self::Body(_) => true,
            Self::Status { status, .. } => matches!(status, 500 | 502 | 504),
            Self::GaveUp { last, .. } => last.may_have_applied(),
            _ => false,
        }
    }

    /// [`ConnectorError::Unsettled`] for a create or change that failed with `self` when it may have
    /// been applied; `self` otherwise.
    pub fn settle_later(self, what: &str) -> Self {
        if self.may_have_applied() {
            Self::Unsettled {
                message: format!("{what}: {self}; the next delivery looks it up before sending it again"),
            }
        } else {
            self
        }
    }

    /// A status answer turned [`ConnectorError::Busy`] when `busy(status, code)` says the dialect means
    /// contention or back-pressure by it (a lock, a stale version, a request limit), whatever its status.
    pub fn busy_when(self, busy: impl Fn(u16, &str) -> bool) -> Self {
        match self {
            Self::Status {
                status,
                code,
                message,
                ..
            } if busy(status, &code) => Self::Busy {
                status,
                code,
                message,
            },
            other => other,
        }
    }

    /// The wait the server asked for with `Retry-After`.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            Self::GaveUp { last, .. } => last.retry_after(),
            _ => None,
        }
    }

    /// The error body's code, when the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Status { code, .. } | Self::Busy { code, .. } => Some(code),
            Self::GaveUp { last, .. } => last.code(),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } | Self::Busy { status, .. } | Self::Misrouted { status, .. } => {
                Some(*status)
            }
            Self::GaveUp { last, .. } => last.status(),
            _ => None,
        }
    }

    /// The core's classes: a 4xx is the system's verdict on this request (`Rejected`, never retried);
    /// everything else is `Unavailable` (the message is redelivered, then dead-lettered). 401, 403 and
    /// 407 are kept out of the rejections on purpose: they say our credentials or proxy are wrong, not
    /// the sale, and rejecting every sale until someone notices would be far worse than redelivering.
    pub fn into_port_error(self, what: &'static str, reason: ReasonCode) -> Error {
        match self {
            Self::Status {
                status,
                code,
                message,
                ..
            } if (400..500).contains(&status) && !matches!(status, 401 | 403 | 407 | 408 | 429) => {
                Error::rejected(reason, format!("{code}: {message}"))
            }
            other => match other.retry_after() {
                Some(wait) => Error::unavailable_for(what, other, wait),
                None => Error::unavailable(what, other),
            },
        }
    }
}
