//! Every HTTP call of a process over real TLS, with the process's one TLS configuration
//! (`retail_sync_http`): the AWS SDK's (through `retail_sync_aws::http`) and a connector's (a
//! `retail_sync_http::client`). A server whose certificate a CA in the bundle `SSL_CERT_FILE` names
//! issued is reached; one whose CA is not in it is refused, and the SDK reports it without retrying
//! forever. Every handshake leads with the hybrid post-quantum key exchange (X25519MLKEM768): a server
//! that prefers it gets it without asking again, one without it gets X25519. Its own test binary with
//! one test: `SSL_CERT_FILE` is read once per process, when the TLS configuration is first built, and
//! it is set here before anything else runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use retail_sync_aws::settings::{AwsSettings, sdk_config};
use rustls::crypto::SupportedKxGroup;
use rustls::crypto::aws_lc_rs::kx_group::{X25519, X25519MLKEM768};
use rustls::pki_types::PrivateKeyDer;
use rustls::{HandshakeKind, NamedGroup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// How each handshake a server completed went: the key exchange group and whether it had to ask the
/// client again (a HelloRetryRequest) for a share of the group it chose.
type Handshakes = Arc<Mutex<Vec<(NamedGroup, HandshakeKind)>>>;

/// A TLS server for `localhost`, its certificate issued by `ca`, answering every request with a JSON
/// `body` (as DynamoDB answers), choosing among `groups` in that order. Returns its port and its
/// handshakes.
async fn server(
    ca: &CertifiedIssuer<'static, KeyPair>,
    body: &'static str,
    groups: &[&'static dyn SupportedKxGroup],
) -> (u16, Handshakes) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = groups.to_vec();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Handshakes::default();
    let seen_by_server = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let handshakes = seen_by_server.clone();
            tokio::spawn(async move {
                // A client that does not trust the certificate ends the handshake here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let connection = tls.get_ref().1;
                if let (Some(group), Some(kind)) = (
                    connection.negotiated_key_exchange_group(),
                    connection.handshake_kind(),
                ) {
                    handshakes.lock().unwrap().push((group.name(), kind));
                }
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\nconnection: close\r\n\
                     content-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, handshakes)
}

#[test]
fn every_call_trusts_the_bundle_ssl_cert_file_names_and_nothing_else() {
    let trusted = ca("retail-sync test CA");
    let stranger = ca("another CA");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, trusted.pem()).unwrap();
    // SAFETY: the only test of this binary, before its runtime or any other thread exists.
    unsafe {
        std::env::set_var("SSL_CERT_FILE", &bundle);
        // Only the bundle: a certificate directory in the environment would be read as well.
        std::env::remove_var("SSL_CERT_DIR");
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    }

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            // Both servers prefer the hybrid exchange.
            let pq = [X25519MLKEM768, X25519];
            let (good, good_handshakes) = server(&trusted, r#"{"TableNames":["sagas"]}"#, &pq).await;
            let (bad, _) = server(&stranger, r#"{"TableNames":["forged"]}"#, &pq).await;
            // An ERP's server of an older TLS stack.
            let (classical, classical_handshakes) =
                server(&trusted, r#"{"TableNames":["sagas"]}"#, &[X25519]).await;
            let dynamodb = |port: u16| async move {
                let settings = AwsSettings {
                    endpoint_url: Some(format!("https://localhost:{port}")),
                    region: Some("us-east-1".into()),
                    ..Default::default()
                };
                // The real account's configuration (the one that builds the TLS configuration first),
                // with credentials from the environment as a function has them.
                aws_sdk_dynamodb::Client::new(&sdk_config(&settings).await.unwrap())
            };

            let tables = dynamodb(good).await.list_tables().send().await.unwrap();
            assert_eq!(tables.table_names(), ["sagas"]);

            let refused =
                tokio::time::timeout(Duration::from_secs(30), dynamodb(bad).await.list_tables().send())
                    .await
                    .expect("an untrusted certificate is reported, not retried until the test gives up")
                    .unwrap_err();
            let text = format!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(&refused));
            assert!(
                text.contains("UnknownIssuer") || text.contains("invalid peer certificate"),
                "{text}"
            );

            let connector = retail_sync_http::client(retail_sync_http::Timeouts {
                connect: Some(Duration::from_secs(5)),
                read: None,
                total: Some(Duration::from_secs(10)),
            })
            .unwrap();
            let answer = connector
                .get(format!("https://localhost:{good}/"))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.text().await.unwrap(), r#"{"TableNames":["sagas"]}"#);
            let refused = connector
                .get(format!("https://localhost:{bad}/"))
                .send()
                .await
                .unwrap_err();
            assert!(refused.is_connect(), "{refused:?}");

            // The SDK's call and the connector's: the client's first flight carried a hybrid share.
            let handshakes = good_handshakes.lock().unwrap().clone();
            assert_eq!(
                handshakes,
                [(NamedGroup::X25519MLKEM768, HandshakeKind::Full); 2],
                "each handshake post-quantum, and without a HelloRetryRequest"
            );
            let answer = connector
                .get(format!("https://localhost:{classical}/"))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200);
            assert_eq!(
                classical_handshakes.lock().unwrap().as_slice(),
                [(NamedGroup::X25519, HandshakeKind::Full)],
                "a server without the hybrid exchange gets the X25519 share sent beside it"
            );
        });
}
