//! The webhook ingress: Shopify's HTTPS deliveries for a store without the EventBridge partner source.
//! A delivery is checked before anything is read from it (the HMAC over the raw body, then the replay
//! window), then put on the channel bus in the partner source's shape (`detail-type` `shopifyWebhook`,
//! `detail.metadata` the `X-Shopify-*` headers, `detail.payload` the body) under the source
//! `retail-sync.webhooks`, where the `map-shopify` rule picks it up as it picks up the partner source's.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::shopify::DETAIL_TYPE;
use crate::webhook::{Refused, check_fresh, verify_shopify};

/// The source the ingress puts deliveries on the channel bus under.
pub const INGRESS_SOURCE: &str = "retail-sync.webhooks";
/// The path Shopify's webhook subscriptions point at.
pub const SHOPIFY_PATH: &str = "/webhooks/shopify";
/// PutEvents takes entries of at most 256 KB; a bigger delivery is refused rather than cut.
pub const MAX_BODY: usize = 240 * 1024;

/// One HTTPS delivery: its path, its headers (any case) and its body exactly as received.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl Delivery<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the ingress puts on the channel bus.
#[derive(Debug, Clone, PartialEq)]
pub struct BusEntry {
    pub source: &'static str,
    pub detail_type: &'static str,
    pub detail: Value,
}

/// Why a delivery is not put on the bus, with the HTTP status it is answered with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngressError {
    #[error("no webhook is received at {0}")]
    NotFound(String),
    #[error("webhooks are POSTed")]
    MethodNotAllowed,
    #[error("{0}")]
    Refused(#[from] Refused),
    #[error("the delivery is over {MAX_BODY} bytes, more than one bus event carries")]
    TooLarge,
    #[error("{0}")]
    BadRequest(String),
}

impl IngressError {
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::MethodNotAllowed => 405,
            Self::Refused(_) => 401,
            Self::TooLarge => 413,
            Self::BadRequest(_) => 400,
        }
    }

    /// A machine-readable code for the answer and the log.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Refused(Refused::Unsigned | Refused::BadSignature) => "bad_signature",
            Self::Refused(Refused::Undated | Refused::Stale(_)) => "replay_rejected",
            Self::TooLarge => "too_large",
            Self::BadRequest(_) => "invalid_request",
        }
    }
}

/// Checks a Shopify delivery under `secrets` (the app's client secret, and the previous one during a
/// rotation) and the replay `window`, and builds its bus entry.
pub fn shopify_delivery(
    delivery: Delivery<'_>,
    secrets: &[String],
    now: Timestamp,
    window: Duration,
) -> Result<BusEntry, IngressError> {
    if delivery.path.trim_end_matches('/') != SHOPIFY_PATH {
        return Err(IngressError::NotFound(delivery.path.to_owned()));
    }
    if !delivery.method.eq_ignore_ascii_case("POST") {
        return Err(IngressError::MethodNotAllowed);
    }
    if delivery.body.len() > MAX_BODY {
        return Err(IngressError::TooLarge);
    }
    verify_shopify(delivery.body, delivery.header("X-Shopify-Hmac-Sha256"), secrets)?;
    check_fresh(delivery.header("X-Shopify-Triggered-At"), now, window)?;
    let payload: Value = serde_json::from_slice(delivery.body)
        .map_err(|e| IngressError::BadRequest(format!("the body is not JSON: {e}")))?;
    if !payload.is_object() {
        return Err(IngressError::BadRequest("the body is not a JSON object".into()));
    }
    if delivery
        .header("X-Shopify-Topic")
        .is_none_or(|t| t.trim().is_empty())
    {
        return Err(IngressError::BadRequest(
            "the X-Shopify-Topic header is missing".into(),
        ));
    }
    // The Shopify headers as the partner source passes them; the signature has done its work.
    let metadata: Map<String, Value> = delivery
        .headers
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            k.starts_with("x-shopify-") && k != "x-shopify-hmac-sha256"
        })
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Ok(BusEntry {
        source: INGRESS_SOURCE,
        detail_type: DETAIL_TYPE,
        detail: json!({"metadata": metadata, "payload": payload}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::{DEFAULT_REPLAY_WINDOW, sign_shopify};

    const SECRET: &str = "shpss_test_secret";

    fn headers(body: &[u8], triggered: &str) -> Vec<(String, String)> {
        vec![
            ("x-shopify-topic".into(), "orders/create".into()),
            ("x-shopify-hmac-sha256".into(), sign_shopify(body, SECRET)),
            (
                "x-shopify-shop-domain".into(),
                "retail-sync-demo.myshopify.com".into(),
            ),
            (
                "x-shopify-event-id".into(),
                "59d6d79c-595f-4e7e-bc6f-72f5c3d0c66f".into(),
            ),
            ("x-shopify-triggered-at".into(), triggered.into()),
            ("content-type".into(), "application/json".into()),
        ]
    }

    fn deliver(body: &[u8], headers: &[(String, String)]) -> Result<BusEntry, IngressError> {
        let now: Timestamp = "2026-11-21T09:05:00Z".parse().unwrap();
        let delivery = Delivery {
            method: "POST",
            path: SHOPIFY_PATH,
            headers,
            body,
        };
        shopify_delivery(delivery, &[SECRET.to_owned()], now, DEFAULT_REPLAY_WINDOW)
    }

    #[test]
    fn a_signed_fresh_delivery_goes_on_the_bus_as_the_partner_source_would_put_it() {
        let body = br#"{"id": 1001, "line_items": []}"#;
        let entry = deliver(body, &headers(body, "2026-11-21T09:01:00Z")).unwrap();
        assert_eq!(entry.source, INGRESS_SOURCE);
        assert_eq!(entry.detail_type, "shopifyWebhook");
        assert_eq!(entry.detail["payload"]["id"], 1001);
        assert_eq!(entry.detail["metadata"]["x-shopify-topic"], "orders/create");
        assert!(entry.detail["metadata"].get("x-shopify-hmac-sha256").is_none());
        assert!(entry.detail["metadata"].get("content-type").is_none());
    }

    #[test]
    fn forged_altered_stale_and_malformed_deliveries_are_refused_with_their_status() {
        let body = br#"{"id": 1001}"#;
        let good = headers(body, "2026-11-21T09:01:00Z");
        let status = |r: Result<BusEntry, IngressError>| r.map(|_| 200).unwrap_or_else(|e| e.status());
        assert_eq!(status(deliver(br#"{"id": 1002}"#, &good)), 401, "a changed body");
        let mut forged = good.clone();
        forged[1].1 = sign_shopify(body, "another app's secret");
        assert_eq!(status(deliver(body, &forged)), 401);
        let unsigned: Vec<_> = good
            .iter()
            .filter(|(k, _)| k != "x-shopify-hmac-sha256")
            .cloned()
            .collect();
        assert_eq!(status(deliver(body, &unsigned)), 401);
        let stale = headers(body, "2026-11-20T09:01:00Z");
        let e = deliver(body, &stale).unwrap_err();
        assert_eq!((e.status(), e.code()), (401, "replay_rejected"));
        let not_json = b"id=1001";
        assert_eq!(
            status(deliver(not_json, &headers(not_json, "2026-11-21T09:01:00Z"))),
            400
        );
        let no_topic: Vec<_> = good
            .iter()
            .filter(|(k, _)| k != "x-shopify-topic")
            .cloned()
            .collect();
        assert_eq!(status(deliver(body, &no_topic)), 400);
        let big = vec![b' '; MAX_BODY + 1];
        assert_eq!(status(deliver(&big, &headers(&big, "2026-11-21T09:01:00Z"))), 413);
        let now: Timestamp = "2026-11-21T09:05:00Z".parse().unwrap();
        let elsewhere = Delivery {
            method: "POST",
            path: "/webhooks/other",
            headers: &good,
            body,
        };
        let e = shopify_delivery(elsewhere, &[SECRET.into()], now, DEFAULT_REPLAY_WINDOW).unwrap_err();
        assert_eq!(e.status(), 404);
        let get = Delivery {
            method: "GET",
            ..elsewhere
        };
        let get = Delivery {
            path: SHOPIFY_PATH,
            ..get
        };
        assert_eq!(
            shopify_delivery(get, &[SECRET.into()], now, DEFAULT_REPLAY_WINDOW)
                .unwrap_err()
                .status(),
            405
        );
    }
}
