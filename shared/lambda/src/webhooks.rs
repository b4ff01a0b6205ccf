//! The webhook ingress on AWS: an API Gateway HTTP API route (no authorizer: the platform signs each
//! delivery, see `retail_sync_channels::ingress`) to this function, which checks the delivery and puts it
//! on the channel bus. The signing secrets come from Secrets Manager (`SHOPIFY_WEBHOOK_SECRET_ARN`: a JSON
//! object `{"secrets": ["<current>", "<previous>"]}`), read once per container and again, at most once a
//! minute, when a signature matches none of them (a rotated secret).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use retail_sync_aws::EventBus;
use retail_sync_channels::ingress::{Delivery, IngressError, shopify_delivery};
use retail_sync_channels::webhook::{DEFAULT_REPLAY_WINDOW, Refused};
use retail_sync_redemption::ApiResponse;

use crate::http::to_lambda_response;

/// The ingress function's state: where deliveries go and what they are checked with.
pub struct Ingress {
    pub bus: EventBus,
    pub secrets: SigningSecrets,
    pub window: Duration,
}

/// The app's signing secrets, cached.
pub struct SigningSecrets {
    pub client: aws_sdk_secretsmanager::Client,
    pub arn: String,
    cached: Mutex<Option<(Vec<String>, Instant)>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretValue {
    secrets: Vec<String>,
}

impl SigningSecrets {
    pub fn new(client: aws_sdk_secretsmanager::Client, arn: String) -> Self {
        Self {
            client,
            arn,
            cached: Mutex::new(None),
        }
    }

    async fn fetch(&self) -> Result<Vec<String>, String> {
        let text = crate::secrets::secret_string(&self.client, &self.arn).await?;
        // Only the position of a parse error: serde's message can quote the value.
        let value: SecretValue = serde_json::from_str(&text).map_err(|e| {
            format!(
                "the secret is not {{\"secrets\": [...]}} (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        Ok(value.secrets)
    }

    /// The cached secrets, or freshly read ones when there are none yet or `refresh` asks and the last
    /// read is over a minute old (so forged deliveries cannot make every request a Secrets Manager call).
    async fn get(&self, refresh: bool) -> Result<Vec<String>, String> {
        let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((secrets, at)) = &cached
            && (!refresh || at.elapsed() < Duration::from_secs(60))
        {
            return Ok(secrets.clone());
        }
        let secrets = self.fetch().await?;
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some((secrets.clone(), Instant::now()));
        Ok(secrets)
    }
}

fn answer(status: u16, body: serde_json::Value) -> ApiGatewayV2httpResponse {
    to_lambda_response(ApiResponse::json(status, &body))
}

/// One delivery: 200 once it is on the bus, 4xx for what the platform must not send again as it is, 503
/// when the bus or the secret is unavailable (the platform retries).
pub async fn handle(ingress: &Ingress, event: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let method = event.request_context.http.method.as_str().to_owned();
    let path = event
        .raw_path
        .clone()
        .or(event.request_context.http.path.clone())
        .unwrap_or_default();
    let headers: Vec<(String, String)> = event
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let body = match event.body {
        Some(b) if event.is_base64_encoded => match base64::engine::general_purpose::STANDARD.decode(&b) {
            Ok(bytes) => bytes,
            Err(_) => {
                return answer(
                    400,
                    json!({"error": "invalid_request", "message": "the body is not base64"}),
                );
            }
        },
        Some(b) => b.into_bytes(),
        None => Vec::new(),
    };
    let event_id = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-shopify-event-id"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let delivery = Delivery {
        method: &method,
        path: &path,
        headers: &headers,
        body: &body,
    };
    let now = jiff::Timestamp::now();
    let mut outcome = Err(IngressError::Refused(Refused::BadSignature));
    for refresh in [false, true] {
        let secrets = match ingress.secrets.get(refresh).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the webhook signing secrets");
                return answer(503, json!({"error": "unavailable", "message": "try again later"}));
            }
        };
        outcome = shopify_delivery(delivery, &secrets, now, ingress.window);
        if !matches!(outcome, Err(IngressError::Refused(Refused::BadSignature))) {
            break;
        }
    }
    match outcome {
        Ok(entry) => {
            let entries = [(
                entry.source.to_owned(),
                entry.detail_type.to_owned(),
                entry.detail,
            )];
            match ingress.bus.put_raw_events(&entries).await {
                Ok(_) => {
                    tracing::info!(%event_id, "webhook accepted");
                    answer(200, json!({"accepted": true}))
                }
                Err(e) => {
                    tracing::error!(%event_id, error = %retail_sync_core::error::describe(&e), "the channel bus refused the webhook");
                    answer(503, json!({"error": "unavailable", "message": "try again later"}))
                }
            }
        }
        Err(e) => {
            // The code and the event id only: the body holds customers' personal data.
            tracing::warn!(%event_id, code = e.code(), reason = %e, "webhook refused");
            answer(e.status(), json!({"error": e.code(), "message": e.to_string()}))
        }
    }
}

/// The ingress from the environment: `CHANNEL_BUS_NAME`, `SHOPIFY_WEBHOOK_SECRET_ARN` and, optionally,
/// `WEBHOOK_REPLAY_WINDOW_SECS`.
pub fn window_from_env() -> anyhow::Result<Duration> {
    match std::env::var("WEBHOOK_REPLAY_WINDOW_SECS") {
        Ok(v) if !v.trim().is_empty() => Ok(Duration::from_secs(v.trim().parse().map_err(|e| {
            anyhow::anyhow!("WEBHOOK_REPLAY_WINDOW_SECS {v:?} is not a number of seconds: {e}")
        })?)),
        _ => Ok(DEFAULT_REPLAY_WINDOW),
    }
}
