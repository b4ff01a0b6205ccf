//! The `map-shopify` step as a Lambda function: Shopify's webhooks (its EventBridge partner source, or the
//! webhook ingress) to canonical events on the channel bus. The mapping lives in `retail-sync-channels`,
//! the step in `retail-sync-core`, the wiring in `retail-sync-lambda`.

use retail_sync_lambda::{run, start, steps};

fn main() -> Result<(), lambda_runtime::Error> {
    start(run::<steps::MapShopify>())
}
