//! Errors of this crate's own operations (settings, provisioning, operator helpers' failed batch
//! entries). The ports return `retail_sync_core::Error`, with these as the cause where one applies.

use retail_sync_core::BoxError;

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("environment variable {0} is not set")]
    MissingEnv(&'static str),
    #[error("environment variable {0} is not a whole number of days from 0 to 3653")]
    BadEnv(&'static str),
    #[error("no url for queue {0}: provision it or add it to the settings")]
    UnknownQueue(String),
    #[error("the template declares no {0}")]
    MissingResource(&'static str),
    /// The process's TLS configuration could not be built (no root certificate could be read).
    #[error(transparent)]
    Tls(#[from] retail_sync_http::TlsError),
    /// A call failed; `source` is the SDK error, kept whole (service code, request id, HTTP status).
    #[error("{service} {operation} failed: {source}")]
    Sdk {
        service: &'static str,
        operation: &'static str,
        #[source]
        source: BoxError,
    },
    /// A call answered without a field it always sets (an emulator gap or an SDK mismatch).
    #[error("{operation} answered without {field}")]
    MissingField {
        operation: &'static str,
        field: &'static str,
    },
    /// A batch call (PutEvents, DeleteMessageBatch, SendMessageBatch, PutTargets) refused some entries.
    #[error("{operation}: {} of {total} entries failed{}", .failures.len(), first(.failures))]
    BatchEntries {
        operation: &'static str,
        total: usize,
        failures: Vec<EntryFailure>,
    },
}

/// One refused batch entry as the service reports it (a code and a message, not an error object).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct EntryFailure {
    pub code: String,
    pub message: String,
}

impl EntryFailure {
    pub fn new(code: Option<&str>, message: Option<&str>) -> Self {
        Self {
            code: code.unwrap_or("Unknown").to_owned(),
            message: message.unwrap_or_default().to_owned(),
        }
    }
}

fn first(failures: &[EntryFailure]) -> String {
    failures
        .first()
        .map(|f| format!("; first: {f}"))
        .unwrap_or_default()
}

impl AwsError {
    pub(crate) fn sdk(service: &'static str, operation: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Sdk {
            service,
            operation,
            source: source.into(),
        }
    }
}
