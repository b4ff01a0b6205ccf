//! The `notify-channel` step as a Lambda function: an order's outcomes (points earned, a return reversed,
//! a cancellation) told back to the ecommerce platform it came from. Wiring and handling live in
//! `retail-sync-lambda`; the step in `retail-sync-core`, the platforms' APIs in `retail-sync-connectors`.

fn main() -> Result<(), lambda_runtime::Error> {
    retail_sync_lambda::start(retail_sync_lambda::run::<retail_sync_lambda::steps::NotifyChannel>())
}
