//! The `ingest` step as a Lambda function (SQS event source, partial batch responses). Wiring and
//! handling live in `retail-sync-lambda`; the step itself in `retail-sync-core`.

fn main() -> Result<(), lambda_runtime::Error> {
    retail_sync_lambda::start(retail_sync_lambda::run::<retail_sync_lambda::steps::Ingest>())
}
