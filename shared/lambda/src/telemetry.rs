//! JSON logs, one object per line on stdout (CloudWatch Logs keeps them as they are). The batch runner
//! opens a span per message with `step`, `message_id` and (once parsed) `correlation_id`; every line
//! logged inside it carries them, flattened at the top level where Logs Insights queries find them.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The level when `RUST_LOG` is unset, empty or not understood.
const DEFAULT: LevelFilter = LevelFilter::INFO;

pub fn init() {
    let (filter, refused) = filter(std::env::var("RUST_LOG").ok().as_deref());
    // `try_init`: a second call (tests) keeps the first subscriber instead of panicking.
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .without_time()
        .finish()
        .with(filter)
        .try_init();
    if let Some(problem) = refused {
        tracing::warn!(problem, "RUST_LOG not understood: logging at {DEFAULT}");
    }
}

/// The filter `RUST_LOG` asks for: a level (the template's `LogLevel`), or levels per target
/// (`info,retail_sync_core=debug`; a bare name is a target logged at every level, as with `EnvFilter`).
/// A `Targets` filter, not `EnvFilter`: the functions need no span or field filters, and `EnvFilter`
/// links a regular expression engine that every function carried for nothing. A value that cannot be
/// read is refused (the reason is returned, to be logged) and the default kept, rather than leaving the
/// function silent or unfiltered.
fn filter(value: Option<&str>) -> (Targets, Option<String>) {
    let default = || Targets::new().with_default(DEFAULT);
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => (default(), None),
        Some(v) => match v.parse::<Targets>() {
            Ok(targets) => (targets, None),
            Err(e) => (default(), Some(e.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    fn enabled(targets: &Targets, target: &str, level: Level) -> bool {
        targets.would_enable(target, &level)
    }

    #[test]
    fn a_level_sets_every_target_and_none_or_nothing_means_info() {
        for value in [None, Some(""), Some("  ")] {
            let (targets, refused) = filter(value);
            assert_eq!(refused, None);
            assert_eq!(targets.default_level(), Some(LevelFilter::INFO), "{value:?}");
        }
        let (debug, refused) = filter(Some("debug"));
        assert_eq!(refused, None);
        assert!(enabled(&debug, "retail_sync_core::batch", Level::DEBUG));
        assert!(!enabled(&debug, "retail_sync_core::batch", Level::TRACE));
        let (error, _) = filter(Some("error"));
        assert!(!enabled(&error, "retail_sync_core::batch", Level::WARN));
    }

    #[test]
    fn levels_per_target_are_kept() {
        let (targets, refused) = filter(Some("warn,retail_sync_core=debug"));
        assert_eq!(refused, None);
        assert!(enabled(&targets, "retail_sync_core::steps", Level::DEBUG));
        assert!(!enabled(&targets, "aws_smithy_runtime", Level::INFO));
        assert!(enabled(&targets, "aws_smithy_runtime", Level::WARN));
    }

    #[test]
    fn a_setting_not_understood_is_refused_and_info_kept() {
        for value in ["retail_sync_core=shout", "info,retail_sync_core=loudest"] {
            let (targets, refused) = filter(Some(value));
            assert!(refused.is_some(), "{value} accepted");
            assert_eq!(targets.default_level(), Some(LevelFilter::INFO), "{value}");
        }
    }
}
