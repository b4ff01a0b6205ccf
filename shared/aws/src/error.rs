//! Errors of this crate's own operations (settings, provisioning, operator helpers' failed batch
//! entries). The ports return `retail_sync_core::Error`, with these as the cause where one applies.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use retail_sync_core::BoxError;
use retail_sync_core::error::describe;

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
    /// A call failed; `source` is its cause: the service's answer as [`sdk_text`] puts it (code,
    /// message, request id) or the failure before an answer (see the `Cause` trait).
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
    pub(crate) fn sdk(service: &'static str, operation: &'static str, source: impl Cause) -> Self {
        Self::Sdk {
            service,
            operation,
            source: source.into_cause(),
        }
    }
}

/// An AWS call's failure in one line for people: `<code>: <message> (request id <id>)` when the service
/// answered, else its chain of causes (a dispatch failure, a timeout, missing credentials). The SDK's own
/// `Display` says only "service error", and its `DisplayErrorContext` appends a `Debug` dump of the raw
/// response (headers, body); neither is what an operator should have to read.
pub fn sdk_text<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    answered(e).unwrap_or_else(|| describe(e))
}

/// The service's own answer, when it gave one: its code, message and request id.
fn answered(e: &impl ProvideErrorMetadata) -> Option<String> {
    let code = e.code()?;
    let mut text = format!("{code}: {}", e.message().unwrap_or("no message"));
    if let Some(id) = e.meta().extra("aws_request_id") {
        text.push_str(&format!(" (request id {id})"));
    }
    Some(text)
}

/// An SDK failure as [`sdk_text`] puts it. The adapters hand this to `Error::unavailable` instead of the
/// SDK error itself, whose `Display` ("service error") is all a function's log line would otherwise show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SdkFailure(pub String);

impl<E, R> From<SdkError<E, R>> for SdkFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    fn from(e: SdkError<E, R>) -> Self {
        Self(sdk_text(&e))
    }
}

/// What the adapters' failures are made of: an SDK error (as its [`SdkFailure`] line) or one of this
/// crate's own.
pub(crate) trait Cause {
    fn into_cause(self) -> BoxError;
}

impl<E, R> Cause for SdkError<E, R>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    fn into_cause(self) -> BoxError {
        Box::new(SdkFailure::from(self))
    }
}

macro_rules! own_causes {
    ($($t:ty),+) => {$(
        impl Cause for $t {
            fn into_cause(self) -> BoxError {
                Box::new(self)
            }
        }
    )+};
}
own_causes!(
    AwsError,
    EntryFailure,
    SdkFailure,
    std::sync::Arc<SdkFailure>,
    aws_smithy_types::error::operation::BuildError
);

/// A service's answer already taken out of its `SdkError` (to look at its kind first).
impl Cause for aws_sdk_dynamodb::operation::put_item::PutItemError {
    fn into_cause(self) -> BoxError {
        Box::new(SdkFailure(answered(&self).unwrap_or_else(|| describe(&self))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::get_item::GetItemError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn refused(meta: ErrorMetadata) -> SdkError<GetItemError, Response> {
        let raw = Response::new(
            StatusCode::try_from(400).unwrap(),
            SdkBody::from("{\"secret\":1}"),
        );
        SdkError::service_error(GetItemError::generic(meta), raw)
    }

    #[test]
    fn a_service_answer_is_its_code_message_and_request_id_without_the_raw_response() {
        let meta = ErrorMetadata::builder()
            .code("ThrottlingException")
            .message("Rate exceeded")
            .custom("aws_request_id", "R-1")
            .build();
        assert_eq!(
            sdk_text(&refused(meta)),
            "ThrottlingException: Rate exceeded (request id R-1)"
        );
        let bare = ErrorMetadata::builder().code("ValidationError").build();
        assert_eq!(sdk_text(&refused(bare)), "ValidationError: no message");
    }

    #[test]
    fn a_call_that_never_got_an_answer_is_its_chain_of_causes() {
        let e: SdkError<GetItemError, Response> =
            SdkError::timeout_error(std::io::Error::other("no answer in 3 s"));
        assert_eq!(sdk_text(&e), "request has timed out: no answer in 3 s");
    }

    #[test]
    fn a_provisioning_call_that_failed_reads_as_the_services_answer_once() {
        let meta = ErrorMetadata::builder()
            .code("ResourceInUseException")
            .message("Table already exists: t-Sagas")
            .custom("aws_request_id", "R-2")
            .build();
        let e = AwsError::sdk("dynamodb", "CreateTable", refused(meta));
        assert_eq!(
            describe(&e),
            "dynamodb CreateTable failed: ResourceInUseException: Table already exists: t-Sagas (request id R-2)"
        );
    }
}
