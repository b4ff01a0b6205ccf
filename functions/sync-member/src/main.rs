//! The `sync-member` step as a Lambda function: member sign-ups, profile, contact, consent and tier
//! changes, erasures and merges, kept the same in the loyalty platform, the ERP and the CRM. Wiring and
//! handling live in `retail-sync-lambda`; the step in `retail-sync-core`.

use retail_sync_lambda::{run, start, steps};

fn main() -> Result<(), lambda_runtime::Error> {
    start(run::<steps::SyncMember>())
}
