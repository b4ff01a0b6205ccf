//! JSON logs, one object per line on stdout (CloudWatch Logs keeps them as they are). The batch runner
//! opens a span per message with `step`, `message_id` and (once parsed) `correlation_id`; every line
//! logged inside it carries them, flattened at the top level where Logs Insights queries find them.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // `try_init`: a second call (tests) keeps the first subscriber instead of panicking.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .without_time()
        .try_init();
}
