//! The process's HTTP clients come from here: [`client`] hands out `reqwest` clients with the process's
//! one TLS configuration ([`tls`]), no redirects and our user agent; the AWS SDK's requests go through
//! them too (`retail_sync_aws::http`).
//!
//! Why one TLS configuration: building it loads the platform's root certificates (the bundle
//! `SSL_CERT_FILE` names, or the system's bundle and certificate directory) and parses every one of them,
//! about 1.4 ms with one bundle and more than twice that without. Each HTTP client used to build its own:
//! the AWS SDK's and the connectors', so a function with connectors paid it twice before its first poll.
//! Built once here, every client of the process shares it (it is reference-counted inside).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rustls_platform_verifier::BuilderVerifierExt;

/// Why the TLS configuration could not be built (no root certificate could be loaded, or the crypto
/// provider refused its protocol versions). Kept as text: the first failure is remembered, and every
/// client built after it reports the same.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot set up TLS: {0}")]
pub struct TlsError(pub String);

/// The process's TLS client configuration: aws-lc's provider, TLS 1.2 and 1.3, the hybrid post-quantum
/// key exchange X25519MLKEM768 first (rustls's `prefer-post-quantum`, set in the workspace), certificates
/// verified against the platform's roots (as `reqwest` and the AWS SDK verify them by default). Built on
/// first use, then shared.
pub fn tls() -> Result<rustls::ClientConfig, TlsError> {
    static TLS: OnceLock<Result<rustls::ClientConfig, TlsError>> = OnceLock::new();
    TLS.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_platform_verifier())
            .map(|b| b.with_no_client_auth())
            .map_err(|e| match std::env::var_os("SSL_CERT_FILE") {
                // The usual cause on Lambda: `CaBundleFile` names a file the image does not have.
                Some(file) => TlsError(format!("{e} (SSL_CERT_FILE is {})", file.to_string_lossy())),
                None => TlsError(e.to_string()),
            })
    })
    .clone()
}

/// How a client's calls are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// To open a connection (TCP and TLS).
    pub connect: Option<Duration>,
    /// Between two reads of an answer.
    pub read: Option<Duration>,
    /// A whole call, from sending to the last byte of the answer.
    pub total: Option<Duration>,
}

/// The process's client for `timeouts`, with the process's TLS configuration. Clients with the same
/// timeouts are the same client: one pool of connections per host. It never follows a redirect: a
/// redirect could lead a credential (an API key header, a signed AWS request, a form-encoded client
/// secret) to another host or to plain http, and would turn a POST into a GET; a system answers where it
/// was configured, or the call fails.
pub fn client(timeouts: Timeouts) -> Result<reqwest::Client, ClientError> {
    static CLIENTS: OnceLock<Mutex<HashMap<Timeouts, reqwest::Client>>> = OnceLock::new();
    let mut clients = CLIENTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(client) = clients.get(&timeouts) {
        return Ok(client.clone());
    }
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls()?)
        .user_agent(concat!("retail-sync/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(t) = timeouts.connect {
        builder = builder.connect_timeout(t);
    }
    if let Some(t) = timeouts.read {
        builder = builder.read_timeout(t);
    }
    if let Some(t) = timeouts.total {
        builder = builder.timeout(t);
    }
    let client = builder.build()?;
    clients.insert(timeouts, client.clone());
    Ok(client)
}

/// Why [`client`] could not build a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot build an HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}
