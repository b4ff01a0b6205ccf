//! The `notify-channel` step as a Lambda function: an order's outcomes (points earned, a return reversed,
//! a cancellation) told back to the ecommerce platform it came from. Wiring and handling live in
//! `retail-sync-lambda`; the step in `retail-sync-core`, the platforms' APIs in `retail-sync-connectors`.

use retail_sync_lambda::{run, start, steps};

fn main() -> Result<(), lambda_runtime::Error> {
    start(run::<steps::NotifyChannel>())
}
