//! Outcomes told back to the ecommerce platforms (the `ChannelOutcomes` port).
//!
//! - **Shopify**: the Admin GraphQL API's `metafieldsSet` on the order (`gid://shopify/Order/<id>`),
//!   namespace `retail_sync`, one metafield per outcome keyed by the outcome id, of type `json`. Setting
//!   a metafield to the value it has changes nothing, so a repeated call records the outcome once.
//!   Throttling (HTTP 429, or `errors[].extensions.code` `THROTTLED` in a 200) is back-pressure;
//!   `userErrors` are a refusal. Source: shopify.dev, Admin GraphQL `metafieldsSet`, and "API rate
//!   limits".
//! - **Adobe Commerce**: a comment on the order (`POST /rest/V1/orders/{id}/comments`), ending with the
//!   marker `[retail-sync <outcome id>]`, with the order's current status (without it the post clears
//!   the status: magento/magento2#34180). Comments have no key, so every attempt first reads the order
//!   (`GET /rest/V1/orders/{id}`: its status and `status_histories`) and posts only when the marker is
//!   not there; a post whose answer is lost is not repeated by the same delivery (the next one's read
//!   settles it). Source: Adobe Commerce REST reference (`/V1/orders/{id}`, `/V1/orders/{id}/comments`).

use async_trait::async_trait;
use serde_json::{Value, json};

use retail_sync_contracts::events::ReasonCode;
use retail_sync_core::idempotency::IdempotencyKey;
use retail_sync_core::ports::{ChannelOutcome, ChannelOutcomes};
use retail_sync_core::{Error, ports::OutcomeKind};

use crate::api::{Auth, Caller, status_error};
use crate::config::HttpConfig;
use crate::error::ConnectorError;

/// The Admin API version the calls name, unless `SHOPIFY_API_VERSION` says otherwise.
pub const SHOPIFY_API_VERSION: &str = "2026-07";
/// The metafield namespace retail-sync writes under.
pub const SHOPIFY_NAMESPACE: &str = "retail_sync";

const METAFIELDS_SET: &str = "mutation RetailSyncOutcome($metafields: [MetafieldsSetInput!]!) { \
metafieldsSet(metafields: $metafields) { metafields { key namespace } userErrors { field message code } } }";

fn platform_error(what: &'static str) -> impl Fn(ConnectorError) -> Error {
    move |e| e.into_port_error(what, ReasonCode::ChannelRejected)
}

/// The outcome as the platforms keep it.
fn record(outcome: &ChannelOutcome) -> Value {
    let kind = match outcome.kind {
        OutcomeKind::PointsEarned => "points_earned",
        OutcomeKind::ReturnReversed => "return_reversed",
        OutcomeKind::Cancelled => "cancelled",
    };
    json!({
        "kind": kind,
        "order_id": outcome.order_id,
        "points": outcome.points,
        "points_given_back": outcome.points_given_back,
        "summary": outcome.summary(),
        "occurred_at": outcome.occurred_at,
    })
}

/// Shopify's Admin GraphQL API of one shop (`SHOPIFY_ADMIN_BASE_URL`, `https://<shop>.myshopify.com`).
pub struct ShopifyAdmin {
    caller: Caller,
    api_version: String,
}

impl ShopifyAdmin {
    /// From `SHOPIFY_ADMIN_BASE_URL` (and the other `SHOPIFY_ADMIN_*` HTTP settings) and
    /// `SHOPIFY_API_VERSION`; `None` when no base URL is set (outcomes to Shopify are off).
    pub fn from_lookup(
        auth: Auth,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConnectorError> {
        if lookup("SHOPIFY_ADMIN_BASE_URL").is_none_or(|u| u.trim().is_empty()) {
            return Ok(None);
        }
        let version = lookup("SHOPIFY_API_VERSION").filter(|v| !v.trim().is_empty());
        let config = HttpConfig::from_lookup("SHOPIFY_ADMIN", &lookup)?;
        Self::new(
            &config,
            auth,
            version.as_deref().unwrap_or(SHOPIFY_API_VERSION).trim(),
        )
        .map(Some)
    }

    pub fn new(config: &HttpConfig, auth: Auth, api_version: &str) -> Result<Self, ConnectorError> {
        let version_ok = api_version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if api_version.is_empty() || !version_ok {
            return Err(ConnectorError::Config {
                var: "SHOPIFY_API_VERSION".into(),
                message: format!("{api_version:?} is not an API version such as 2026-07"),
            });
        }
        Ok(Self {
            caller: Caller::new(config, auth, "shopify")?,
            api_version: api_version.to_owned(),
        })
    }

    /// One attempt: the answer read into done, refused, throttled or unavailable.
    async fn set(&self, body: &Value) -> Result<Result<(), String>, ConnectorError> {
        let url = self
            .caller
            .url(&format!("/admin/api/{}/graphql.json", self.api_version));
        let response = self
            .caller
            .authorized(|| self.caller.client().post(&url).json(body))
            .await?;
        if !response.status().is_success() {
            return Err(status_error(response, graphql_error).await);
        }
        let answer: Value = response.json().await.map_err(ConnectorError::Body)?;
        if let Some((code, message)) = graphql_error_of(&answer) {
            // A query-level error answered 200: throttling is back-pressure, anything else our mistake.
            let status = if code == "THROTTLED" { 429 } else { 400 };
            return Err(ConnectorError::Status {
                status,
                code,
                message,
                retry_after: None,
            });
        }
        let errors = answer
            .pointer("/data/metafieldsSet/userErrors")
            .and_then(Value::as_array)
            .ok_or_else(|| ConnectorError::Unsettled {
                message: "metafieldsSet answered without its userErrors".into(),
            })?;
        if errors.is_empty() {
            Ok(Ok(()))
        } else {
            let messages: Vec<&str> = errors.iter().filter_map(|e| e["message"].as_str()).collect();
            Ok(Err(messages.join("; ")))
        }
    }
}

/// `errors` of a GraphQL answer: an array of `{message, extensions.code}`, or (a bad token) a string.
fn graphql_error_of(answer: &Value) -> Option<(String, String)> {
    match answer.get("errors")? {
        Value::String(s) => Some(("ERROR".into(), s.clone())),
        Value::Array(errors) if !errors.is_empty() => {
            let code = errors
                .iter()
                .find_map(|e| e.pointer("/extensions/code").and_then(Value::as_str))
                .unwrap_or("ERROR");
            let message = errors[0]["message"].as_str().unwrap_or("GraphQL error");
            Some((code.to_owned(), message.to_owned()))
        }
        _ => None,
    }
}

fn graphql_error(bytes: &[u8]) -> Option<(String, String)> {
    graphql_error_of(&serde_json::from_slice(bytes).ok()?)
}

#[async_trait]
impl ChannelOutcomes for ShopifyAdmin {
    async fn tell(&self, outcome: &ChannelOutcome, key: &IdempotencyKey) -> Result<(), Error> {
        let order = outcome.platform_order()?;
        let body = json!({
            "query": METAFIELDS_SET,
            "variables": {"metafields": [{
                "ownerId": format!("gid://shopify/Order/{order}"),
                "namespace": SHOPIFY_NAMESPACE,
                // Outcome ids are identifiers (letters, digits, '.', '_', '-'); a metafield key takes
                // 2 to 64 of letters, digits, '_' and '-'.
                "key": outcome.record_key(),
                "type": "json",
                "value": record(outcome).to_string(),
            }]},
        });
        let answer = self
            .caller
            .retrying("metafieldsSet", Some(key.as_str()), || self.set(&body))
            .await
            .map_err(platform_error("shopify"))?;
        answer
            .map_err(|message| Error::rejected(ReasonCode::ChannelRejected, format!("userErrors: {message}")))
    }
}

/// Adobe Commerce's REST API (`ADOBE_COMMERCE_BASE_URL`, the store's root; calls go to `/rest/V1/…`).
pub struct AdobeCommerceRest {
    caller: Caller,
}

/// Adobe Commerce's error body: `{"message": "...", "parameters": [...]}`.
fn adobe_error(bytes: &[u8]) -> Option<(String, String)> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    Some(("error".into(), v.get("message")?.as_str()?.to_owned()))
}

impl AdobeCommerceRest {
    /// From `ADOBE_COMMERCE_BASE_URL` and the other `ADOBE_COMMERCE_*` HTTP settings; `None` when no base
    /// URL is set (outcomes to Adobe Commerce are off).
    pub fn from_lookup(
        auth: Auth,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConnectorError> {
        if lookup("ADOBE_COMMERCE_BASE_URL").is_none_or(|u| u.trim().is_empty()) {
            return Ok(None);
        }
        let config = HttpConfig::from_lookup("ADOBE_COMMERCE", &lookup)?;
        Self::new(&config, auth).map(Some)
    }

    pub fn new(config: &HttpConfig, auth: Auth) -> Result<Self, ConnectorError> {
        Ok(Self {
            caller: Caller::new(config, auth, "adobe-commerce")?,
        })
    }

    fn marker(outcome: &ChannelOutcome) -> String {
        format!("[retail-sync {}]", outcome.outcome_id)
    }

    /// The order as the comment needs it: its current status (a comment posted without it sets the
    /// order's status to none: magento/magento2#34180), and whether it already has the outcome's comment
    /// (`status_histories`). `GET /rest/V1/orders/{id}`, ACL `Magento_Sales::actions_view`.
    async fn order(&self, order: &str, marker: &str) -> Result<(Option<String>, bool), ConnectorError> {
        let url = self.caller.url(&format!("/rest/V1/orders/{order}"));
        let response = self.caller.get_json(&url).await?;
        if !response.status().is_success() {
            return Err(status_error(response, adobe_error).await);
        }
        let answer: Value = response.json().await.map_err(ConnectorError::Body)?;
        if !answer.is_object() {
            return Err(ConnectorError::Unsettled {
                message: "the order came back as something else than an object".into(),
            });
        }
        let status = answer["status"].as_str().map(str::to_owned);
        let told = answer["status_histories"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["comment"].as_str())
            .any(|c| c.contains(marker));
        Ok((status, told))
    }

    async fn post_comment(
        &self,
        order: &str,
        comment: &str,
        status: Option<&str>,
    ) -> Result<(), ConnectorError> {
        let url = self.caller.url(&format!("/rest/V1/orders/{order}/comments"));
        let parent: i64 = order.parse().unwrap_or_default();
        let mut history = json!({
            "comment": comment,
            "is_customer_notified": 0,
            "is_visible_on_front": 0,
            "parent_id": parent,
        });
        if let Some(status) = status {
            history["status"] = json!(status);
        }
        let body = json!({"statusHistory": history});
        let response = self
            .caller
            .authorized(|| self.caller.client().post(&url).json(&body))
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(status_error(response, adobe_error).await)
        }
    }
}

#[async_trait]
impl ChannelOutcomes for AdobeCommerceRest {
    async fn tell(&self, outcome: &ChannelOutcome, key: &IdempotencyKey) -> Result<(), Error> {
        let order = outcome.platform_order()?;
        let marker = Self::marker(outcome);
        let comment = format!("{} {marker}", outcome.summary());
        self.caller
            .retrying("order comment", Some(key.as_str()), || async {
                let (status, told) = self.order(order, &marker).await?;
                if told {
                    return Ok(());
                }
                // A post whose answer is lost may have been applied: not sent again by this delivery.
                self.post_comment(order, &comment, status.as_deref())
                    .await
                    .map_err(|e| e.settle_later("the order comment"))
            })
            .await
            .map_err(platform_error("adobe-commerce"))
    }
}
