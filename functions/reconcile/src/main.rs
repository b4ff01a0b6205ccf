//! The scheduled reconciliation as a Lambda function (EventBridge Scheduler, daily). Wiring and handling
//! live in `retail-sync-lambda`; the comparison itself in `retail-sync-core`.

fn main() -> Result<(), lambda_runtime::Error> {
    retail_sync_lambda::start(retail_sync_lambda::reconcile::run_scheduled())
}
