//! The `cancel-order` step as a Lambda function (SQS event source, partial batch responses). Wiring and
//! handling live in `retail-sync-lambda`; the step itself in `retail-sync-core`.

use retail_sync_lambda::{run, start, steps};

fn main() -> Result<(), lambda_runtime::Error> {
    start(run::<steps::CancelOrder>())
}
