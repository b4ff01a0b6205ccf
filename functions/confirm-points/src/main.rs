//! The scheduled confirmation of pending points as a Lambda function (EventBridge Scheduler). Wiring and
//! handling live in `retail-sync-lambda`; the rule itself in `retail-sync-core` (`settlement`).

fn main() -> Result<(), lambda_runtime::Error> {
    retail_sync_lambda::start(retail_sync_lambda::confirm::run_scheduled())
}
