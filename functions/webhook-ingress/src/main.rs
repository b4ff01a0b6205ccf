//! The webhook ingress as a Lambda function behind an API Gateway HTTP API: Shopify's signed HTTPS
//! deliveries, checked (HMAC, replay window) and put on the channel bus for `map-shopify`. The checks live
//! in `retail-sync-channels`, the wiring in `retail-sync-lambda`.

fn main() -> Result<(), lambda_runtime::Error> {
    retail_sync_lambda::start(retail_sync_lambda::run_webhooks("webhook-ingress"))
}
