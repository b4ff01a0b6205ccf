//! SAP's OData v2 dialect as the adapter speaks it: the `X-CSRF-Token` session, error bodies, decimals
//! and dates, the idempotency stamp, and `$batch` change sets.

use std::fmt::Write as _;

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;

use crate::error::ConnectorError;

/// The longest value `PurchaseOrderByCustomer` holds (CHAR 35); a custom stamp field is expected to be
/// at least as long.
pub const STAMP_MAX: usize = 35;

/// The stamp of `text` in a SAP document: see [`crate::wire::stamp`].
pub fn stamp(text: &str) -> String {
    crate::wire::stamp(text, STAMP_MAX)
}

/// An OData v2 error body: `{"error": {"code", "message": {"lang", "value"}}}`.
pub fn error_of(bytes: &[u8]) -> Option<(String, String)> {
    let body: Value = serde_json::from_slice(bytes).ok()?;
    let error = body.get("error")?;
    let code = error.get("code")?.as_str()?.to_owned();
    let message = error
        .pointer("/message/value")
        .or_else(|| error.get("message"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Some((code, message))
}

/// SAP's message codes that say a document is locked by someone else (`V1/042`: "… is currently being
/// processed"): busy, not refused.
const LOCKED: &[&str] = &["V1/042", "MC/601"];

/// A non-2xx OData answer as the connector's error: a lock, a stale version (412) or a missing one
/// (428) is [`ConnectorError::Busy`] (read again, retry; never a verdict on the document), anything else
/// a status error classified as usual (a 400 is SAP's verdict on the document, a 5xx or 429
/// back-pressure).
pub fn classify(error: ConnectorError) -> ConnectorError {
    error.busy_when(|status, code| matches!(status, 409 | 412 | 423 | 428) || LOCKED.contains(&code))
}

/// The CSRF session of one tenant: the token and the cookies it is bound to.
#[derive(Clone)]
pub struct Session {
    pub token: HeaderValue,
    pub cookies: Option<HeaderValue>,
}

impl Session {
    /// From the answer to a `X-CSRF-Token: Fetch` read.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ConnectorError> {
        let token = headers
            .get("x-csrf-token")
            .filter(|v| !v.as_bytes().eq_ignore_ascii_case(b"required"))
            .cloned()
            .ok_or_else(|| ConnectorError::Auth {
                message: "the service answered the CSRF token fetch without a token".into(),
                retryable: true,
            })?;
        let cookies: Vec<&str> = headers
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|c| c.split(';').next())
            .map(str::trim)
            .filter(|c| c.contains('='))
            .collect();
        let cookies = if cookies.is_empty() {
            None
        } else {
            let mut value = HeaderValue::from_str(&cookies.join("; ")).map_err(|_| ConnectorError::Auth {
                message: "the session cookies cannot be sent back".into(),
                retryable: false,
            })?;
            value.set_sensitive(true);
            Some(value)
        };
        let mut token = token;
        token.set_sensitive(true);
        Ok(Self { token, cookies })
    }

    pub fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let request = request.header("x-csrf-token", self.token.clone());
        match &self.cookies {
            Some(c) => request.header(reqwest::header::COOKIE, c.clone()),
            None => request,
        }
    }
}

/// Whether a 403 is SAP refusing the CSRF token (expired, or its session ended), which a fresh token
/// fixes, rather than an authorization the communication user lacks.
pub fn csrf_refused(status: reqwest::StatusCode, headers: &HeaderMap) -> bool {
    status == reqwest::StatusCode::FORBIDDEN
        && headers
            .get("x-csrf-token")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"required"))
}

/// One request of a `$batch` change set.
pub struct Change {
    pub method: &'static str,
    /// Relative to the service root, e.g. `A_SalesOrderItem(SalesOrder='1',SalesOrderItem='10')`.
    pub path: String,
    pub if_match: Option<String>,
    pub body: Value,
}

/// A `$batch` body holding one change set (applied by SAP all or nothing), and its content type.
pub fn batch(changes: &[Change], boundary: &str) -> (String, String) {
    let changeset = format!("changeset_{boundary}");
    let mut body = String::new();
    let _ = write!(
        body,
        "--batch_{boundary}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"
    );
    for change in changes {
        let json = change.body.to_string();
        let _ = write!(
            body,
            "--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
             {} {} HTTP/1.1\r\nContent-Type: application/json\r\nAccept: application/json\r\n",
            change.method, change.path
        );
        if let Some(etag) = &change.if_match {
            let _ = write!(body, "If-Match: {etag}\r\n");
        }
        let _ = write!(body, "Content-Length: {}\r\n\r\n{json}\r\n", json.len());
    }
    let _ = write!(body, "--{changeset}--\r\n\r\n--batch_{boundary}--\r\n");
    (body, format!("multipart/mixed; boundary=batch_{boundary}"))
}

/// What a `$batch` answer says of a change set of `changes` operations: `Ok` only when it shows that
/// many successes; the failed operation's error when SAP answered the change set with one (in its
/// place); [`ConnectorError::Unsettled`] when it cannot be read (the change set may have been applied:
/// the next delivery reads the order again).
pub fn batch_outcome(body: &str, changes: usize) -> Result<(), ConnectorError> {
    if let Some(e) = batch_failure(body) {
        return Err(e);
    }
    let successes = body
        .split('\n')
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("HTTP/1.1 "))
        .filter(|rest| rest.starts_with('2'))
        .count();
    if successes >= changes {
        Ok(())
    } else {
        Err(ConnectorError::Unsettled {
            message: format!("the $batch answer shows {successes} of {changes} changes applied"),
        })
    }
}

/// The first failed operation of a `$batch` answer (SAP answers a failed change set with that one
/// error in its place), as the connector's error; `None` when no operation failed (or none can be
/// read: see [`batch_outcome`]).
pub fn batch_failure(body: &str) -> Option<ConnectorError> {
    let mut lines = body.split('\n').map(|l| l.trim_end_matches('\r')).peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("HTTP/1.1 ") else {
            continue;
        };
        let status: u16 = rest.split(' ').next()?.parse().ok()?;
        if status < 400 {
            continue;
        }
        // The part's headers, a blank line, then its JSON body up to the next boundary.
        let mut retry_after = None;
        for header in lines.by_ref() {
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("retry-after")
            {
                retry_after = value
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .map(std::time::Duration::from_secs);
            }
        }
        let json: String = lines
            .by_ref()
            .take_while(|l| !l.starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        let (code, message) = error_of(json.as_bytes())
            .unwrap_or_else(|| (format!("HTTP {status}"), json.chars().take(200).collect()));
        return Some(classify(ConnectorError::Status {
            status,
            code,
            message,
            retry_after,
        }));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odata_errors_are_read_and_locks_are_busy() {
        let body = br#"{"error":{"code":"V1/042","message":{"lang":"en","value":"Sales document 1 is currently being processed"}}}"#;
        let (code, message) = error_of(body).unwrap();
        assert_eq!(code, "V1/042");
        let e = classify(ConnectorError::Status {
            status: 400,
            code,
            message,
            retry_after: None,
        });
        assert!(matches!(e, ConnectorError::Busy { .. }) && e.is_retryable());
        let refused = classify(ConnectorError::Status {
            status: 400,
            code: "V1/320".into(),
            message: "no".into(),
            retry_after: None,
        });
        assert!(!refused.is_retryable());
    }

    #[test]
    fn a_failed_change_set_is_found_in_the_batch_answer() {
        let ok = "--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\r\n--c--\r\n--b--\r\n";
        assert!(batch_failure(ok).is_none());
        let failed = "--b\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 412 Precondition Failed\r\nContent-Type: application/json\r\n\r\n{\"error\":{\"code\":\"/IWBEP/CM_MGW_RT/022\",\"message\":{\"lang\":\"en\",\"value\":\"stale\"}}}\r\n--b--\r\n";
        let e = batch_failure(failed).unwrap();
        assert!(matches!(e, ConnectorError::Busy { status: 412, .. }), "{e}");
        assert!(batch_outcome(ok, 1).is_ok());
        assert!(matches!(
            batch_outcome(failed, 1),
            Err(ConnectorError::Busy { .. })
        ));
        // An answer that shows fewer successes than changes, or none at all, is not a success.
        for unreadable in ["", "garbage", ok] {
            let e = batch_outcome(unreadable, 2).unwrap_err();
            assert!(matches!(e, ConnectorError::Unsettled { .. }), "{e}");
        }
    }
}
