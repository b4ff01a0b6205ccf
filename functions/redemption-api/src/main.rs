//! The redemption experience API as a Lambda function behind an API Gateway HTTP API (JWT-authorized at
//! the edge). Wiring and the HTTP mapping live in `retail-sync-lambda`; the service in `retail-sync-redemption`.

fn main() -> Result<(), lambda_runtime::Error> {
    retail_sync_lambda::start(retail_sync_lambda::run_http("redemption-api"))
}
