//! The AWS SDK's HTTP client: the SDK's requests go through the process's `reqwest` client
//! (`retail_sync_http`), so the SDK and the connectors share one TLS configuration and the root
//! certificates are loaded once per process, not once per client. The SDK still signs, retries, times
//! out and parses; this only carries a request there and its answer back, and says which failures are
//! timeouts and which are I/O (what the SDK's retry classification reads).
//!
//! What this client does not do, and the SDK's own would: HTTP/2 (DynamoDB, SQS, EventBridge, S3,
//! Secrets Manager and CloudFormation all answer HTTP/1.1), and streaming request bodies (every request
//! retail-sync makes has its body in memory; a streaming one is refused as a user error, never sent
//! half).

use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::{Headers, StatusCode};
use aws_smithy_types::body::SdkBody;
use retail_sync_http::Timeouts;

/// The SDK's HTTP client (set on every SDK configuration this crate loads).
#[derive(Debug, Clone, Copy, Default)]
pub struct SdkHttp;

impl HttpClient for SdkHttp {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        // The SDK bounds whole operations and attempts itself; the connection and each read are ours.
        let timeouts = Timeouts {
            connect: settings.connect_timeout(),
            read: settings.read_timeout(),
            total: None,
        };
        SharedHttpConnector::new(Connector {
            client: retail_sync_http::client(timeouts).map_err(|e| e.to_string()),
        })
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        Some(ConnectorMetadata::new("reqwest", None))
    }
}

#[derive(Debug)]
struct Connector {
    /// The client, or why it could not be built: then every call fails with that, not retried.
    client: Result<reqwest::Client, String>,
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        match &self.client {
            Ok(client) => HttpConnectorFuture::new(send(client.clone(), request)),
            Err(e) => HttpConnectorFuture::ready(Err(ConnectorError::user(e.clone().into()))),
        }
    }
}

async fn send(client: reqwest::Client, request: HttpRequest) -> Result<HttpResponse, ConnectorError> {
    let method = reqwest::Method::from_bytes(request.method().as_bytes())
        .map_err(|e| ConnectorError::user(e.into()))?;
    let body = request.body().bytes().ok_or_else(|| {
        ConnectorError::user("a streaming request body (this client sends bodies held in memory)".into())
    })?;
    let mut outgoing = client.request(method, request.uri()).body(body.to_vec());
    for (name, value) in request.headers() {
        outgoing = outgoing.header(name, value);
    }
    let answer = outgoing.send().await.map_err(classify)?;
    let status =
        StatusCode::try_from(answer.status().as_u16()).map_err(|e| ConnectorError::other(e.into(), None))?;
    let mut headers = Headers::new();
    for (name, value) in answer.headers() {
        // The SDK's headers are text; its own client refuses an answer with a header that is not.
        let value = value
            .to_str()
            .map_err(|_| ConnectorError::other(format!("response header {name} is not text").into(), None))?;
        headers
            .try_append(name.as_str().to_owned(), value.to_owned())
            .map_err(|e| ConnectorError::other(e.into(), None))?;
    }
    let body = answer.bytes().await.map_err(classify)?;
    let mut response = HttpResponse::new(status, SdkBody::from(body));
    *response.headers_mut() = headers;
    Ok(response)
}

/// What the SDK's retry classification needs to know of a failure: a timeout or an I/O failure
/// (connection refused or reset, a pooled connection the other side closed while the function was
/// frozen) is transient and retried; a request that could not be built is the caller's.
fn classify(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else if e.is_builder() {
        ConnectorError::user(e.into())
    } else if e.is_connect() || e.is_request() || e.is_body() {
        ConnectorError::io(e.into())
    } else {
        ConnectorError::other(e.into(), None)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn connector(read: Option<Duration>) -> Connector {
        let timeouts = Timeouts {
            connect: Some(Duration::from_secs(2)),
            read,
            total: None,
        };
        Connector {
            client: retail_sync_http::client(timeouts).map_err(|e| e.to_string()),
        }
    }

    fn request(port: u16, body: SdkBody) -> HttpRequest {
        let mut request = HttpRequest::new(body);
        request.set_method("POST").unwrap();
        request
            .set_uri(format!("http://127.0.0.1:{port}/path?q=1"))
            .unwrap();
        request
            .headers_mut()
            .insert("x-amz-target", "DynamoDB_20120810.ListTables");
        request
    }

    /// A listener on a free loopback port, and the port.
    async fn listen() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    /// Reads one request (head and `content-length` body) off `stream`, as text.
    async fn read_request(stream: &mut TcpStream) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if seen.len() >= end + 4 + length {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&seen).to_string()
    }

    #[tokio::test]
    async fn a_request_goes_out_whole_and_its_answer_comes_back_as_is() {
        let (listener, port) = listen().await;
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let seen = read_request(&mut stream).await;
            // A redirect is handed to the SDK as an answer, never followed.
            let answer = "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://elsewhere.invalid/\r\n\
                          x-amzn-requestid: r-1\r\nset-cookie: a\r\nset-cookie: b\r\ncontent-length: 5\r\n\r\nbusy!";
            stream.write_all(answer.as_bytes()).await.unwrap();
            seen
        });
        let response = connector(None)
            .call(request(port, SdkBody::from("{\"Limit\":1}")))
            .await
            .unwrap();
        let seen = server.await.unwrap();
        assert!(seen.starts_with("POST /path?q=1 HTTP/1.1\r\n"), "{seen}");
        assert!(
            seen.contains("x-amz-target: DynamoDB_20120810.ListTables\r\n"),
            "{seen}"
        );
        assert!(seen.ends_with("\r\n\r\n{\"Limit\":1}"), "{seen}");
        assert_eq!(response.status().as_u16(), 307);
        assert_eq!(response.headers().get("x-amzn-requestid"), Some("r-1"));
        assert_eq!(
            response.headers().get_all("set-cookie").collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(response.body().bytes(), Some(&b"busy!"[..]));
    }

    #[tokio::test]
    async fn a_refused_connection_is_io_and_a_silent_server_a_timeout() {
        let (listener, closed) = listen().await;
        drop(listener);
        let refused = connector(None)
            .call(request(closed, SdkBody::from("{}")))
            .await
            .unwrap_err();
        assert!(refused.is_io(), "{refused:?}");

        let (listener, port) = listen().await;
        let held = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(stream);
        });
        let silent = connector(Some(Duration::from_millis(200)))
            .call(request(port, SdkBody::from("{}")))
            .await
            .unwrap_err();
        assert!(silent.is_timeout(), "{silent:?}");
        held.abort();
    }

    #[tokio::test]
    async fn a_streaming_body_is_refused_before_anything_is_sent() {
        let (listener, port) = listen().await;
        let refused = connector(None)
            .call(request(port, SdkBody::taken()))
            .await
            .unwrap_err();
        assert!(refused.is_user(), "{refused:?}");
        let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(accepted.is_err(), "nothing may be sent");
    }

    /// An answer in DynamoDB's JSON protocol.
    fn json_answer(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// `ListTables` through a real SDK client (the emulator configuration, as the tests' backends use)
    /// at the loopback `port`: the table names it answers.
    async fn list_tables_at(port: u16) -> Vec<String> {
        let settings = crate::settings::AwsSettings {
            endpoint_url: Some(format!("http://127.0.0.1:{port}")),
            ..Default::default()
        };
        let sdk = crate::settings::emulator_sdk_config(&settings).await;
        let tables = aws_sdk_dynamodb::Client::new(&sdk)
            .list_tables()
            .send()
            .await
            .unwrap();
        tables.table_names().to_vec()
    }

    /// A pooled connection the other side closed (a function thawed after minutes) fails as I/O, which
    /// the SDK retries: the call succeeds on the next connection.
    #[tokio::test]
    async fn the_sdk_retries_a_request_whose_connection_was_closed_under_it() {
        let (listener, port) = listen().await;
        let server = tokio::spawn(async move {
            let (mut first, _) = listener.accept().await.unwrap();
            read_request(&mut first).await;
            drop(first);
            let (mut second, _) = listener.accept().await.unwrap();
            read_request(&mut second).await;
            let answer = json_answer("200 OK", "{\"TableNames\":[\"sagas\"]}");
            second.write_all(answer.as_bytes()).await.unwrap();
        });
        assert_eq!(list_tables_at(port).await, ["sagas"]);
        server.await.unwrap();
    }

    /// What the process logs, captured (a test's own subscriber, on this test's thread).
    #[derive(Clone, Default)]
    struct Logged(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logged {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A transient answer (a 500) is retried on the next attempt, and quietly: the SDK is not asked to
    /// drop a pooled connection this client cannot drop, which it would log as an error every time.
    #[tokio::test]
    async fn a_transient_answer_is_retried_without_an_error_in_the_log() {
        let (listener, port) = listen().await;
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let answers = [
                (
                    "500 Internal Server Error",
                    "{\"__type\":\"com.amazonaws.dynamodb.v20120810#InternalServerError\",\"message\":\"busy\"}",
                ),
                ("200 OK", "{\"TableNames\":[\"sagas\"]}"),
            ];
            for (status, body) in answers {
                read_request(&mut stream).await;
                stream
                    .write_all(json_answer(status, body).as_bytes())
                    .await
                    .unwrap();
            }
        });
        let logged = Logged::default();
        let writer = logged.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        assert_eq!(list_tables_at(port).await, ["sagas"]);
        server.await.unwrap();
        let logged = String::from_utf8_lossy(&logged.0.lock().unwrap()).to_string();
        assert!(logged.is_empty(), "{logged}");
    }
}
