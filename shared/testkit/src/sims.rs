//! The reference simulators over HTTP, and the connector authentication that opens them: what every test
//! that goes through the real connectors shares.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use retail_sync_connectors::{
    Auth, AuthMethod, ClientAuth, Credentials, HttpConfig, Secret, StaticCredentials,
};
use retail_sync_simulators::access::{Access, LOCAL_CLIENT_ID, LOCAL_CLIENT_SECRET, TOKEN_PATH};
use retail_sync_simulators::{Dialects, ErpSimulator, LoyaltySimulator};

/// Both simulators served on a free loopback port behind `access`: (base url, server task).
pub async fn serve(
    erp: ErpSimulator,
    loyalty: LoyaltySimulator,
    access: Access,
) -> (String, tokio::task::JoinHandle<()>) {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("a socket address");
    let (bound, handle) = retail_sync_simulators::serve(erp, loyalty, access, addr)
        .await
        .expect("a free loopback port");
    (format!("http://{bound}"), handle)
}

/// [`serve`] with dialects the caller keeps a handle on.
pub async fn serve_with(
    erp: ErpSimulator,
    loyalty: LoyaltySimulator,
    dialects: Dialects,
    access: Access,
) -> (String, tokio::task::JoinHandle<()>) {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("a socket address");
    let (bound, handle) = retail_sync_simulators::serve_with(erp, loyalty, dialects, access, addr)
        .await
        .expect("a free loopback port");
    (format!("http://{bound}"), handle)
}

/// OAuth 2.0 client credentials against the simulators at `base_url`, as the local client.
pub fn oauth(base_url: &str, client_auth: ClientAuth) -> Auth {
    oauth_at(
        &format!("{}{TOKEN_PATH}", base_url.trim_end_matches('/')),
        client_auth,
    )
}

/// OAuth 2.0 client credentials as the local client, at the token endpoint `token_url` (the
/// simulators serve one at `/oauth/token` and, as Salesforce does, at `/services/oauth2/token`).
pub fn oauth_at(token_url: &str, client_auth: ClientAuth) -> Auth {
    Auth {
        method: AuthMethod::OAuth2ClientCredentials {
            token_url: token_url.to_owned(),
            scope: None,
            client_auth,
        },
        credentials: Arc::new(StaticCredentials {
            credentials: Credentials {
                client_id: Some(LOCAL_CLIENT_ID.to_owned()),
                client_secret: Some(Secret::new(LOCAL_CLIENT_SECRET)),
                ..Credentials::default()
            },
            origin: "the simulators' local client".to_owned(),
        }),
    }
}

/// HTTP Basic against the simulators, as an SAP communication user (the local client's id and secret).
pub fn basic() -> Auth {
    Auth {
        method: AuthMethod::Basic,
        credentials: Arc::new(StaticCredentials {
            credentials: Credentials {
                username: Some(LOCAL_CLIENT_ID.to_owned()),
                password: Some(Secret::new(LOCAL_CLIENT_SECRET)),
                ..Credentials::default()
            },
            origin: "the simulators' local communication user".to_owned(),
        }),
    }
}

/// Connector settings for tests against the simulators: short timeouts (`request_timeout` per attempt)
/// and backoff, so that failure paths stay fast.
pub fn fast(base_url: impl Into<String>, request_timeout: Duration) -> HttpConfig {
    HttpConfig {
        connect_timeout: Duration::from_millis(300),
        request_timeout,
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        ..HttpConfig::new(base_url)
    }
}

/// An API key in `header` against the platform simulators (`retail_sync_simulators::LOCAL_PLATFORM_TOKEN`,
/// after `prefix`: `""` for Shopify's `X-Shopify-Access-Token`, `"Bearer "` for Adobe Commerce's
/// `Authorization`).
pub fn platform_token(header: &str, prefix: &str) -> Auth {
    Auth {
        method: AuthMethod::ApiKey {
            header: header.to_owned(),
        },
        credentials: Arc::new(StaticCredentials {
            credentials: Credentials {
                api_key: Some(Secret::new(format!(
                    "{prefix}{}",
                    retail_sync_simulators::LOCAL_PLATFORM_TOKEN
                ))),
                ..Credentials::default()
            },
            origin: "the platform simulators' token".to_owned(),
        }),
    }
}

/// A sale of 120 points accrued on `loyalty` for `member`, pending until `until` (its return window's
/// end), as the saga's ledger records it: what the tests of the points' confirmation start from.
pub fn pending_accrual(
    loyalty: &LoyaltySimulator,
    member: &str,
    receipt: &str,
    until: jiff::Timestamp,
) -> retail_sync_core::ledger::PendingEntry {
    let request = retail_sync_core::ports::AccrualRequest {
        pending_until: Some(until),
        ..retail_sync_simulators::samples::accrual(member, receipt, 12_000)
    };
    let accrued = loyalty
        .accrue(&request, &format!("k-{receipt}"))
        .expect("the simulator accrues a sample sale");
    assert!(accrued.pending, "an accrual with a window is pending");
    retail_sync_core::ledger::PendingEntry {
        loyalty_transaction_id: accrued.loyalty_transaction_id,
        points: accrued.points,
        until,
        confirmed_at: None,
        points_confirmed: None,
    }
}
