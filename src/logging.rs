//! Log set-up: `tracing` to stderr, level from `LITESTREAM_LOG_LEVEL`
//! (off, error, warn, info, debug, trace, any case; default warn, and warn for a value it
//! does not know, with a warning naming the accepted values). Only this crate's events are shown. A host that installed its own
//! global subscriber keeps it.
//!
//! A per-target level filter rather than `EnvFilter`: the one directive we build needs no
//! regular expressions, and `EnvFilter` brought its own regex engine into the extension.

use std::sync::Once;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

static INIT: Once = Once::new();

/// The level `LITESTREAM_LOG_LEVEL` asks for: `value` parsed as `tracing` spells levels
/// (case-insensitive), warn when unset, empty or unknown (`tracing` reads an empty
/// string as error; an empty variable is taken as unset instead). With a warning to log
/// for an unknown value: `verbose` was ignored in silence, and whoever set it saw no
/// more than before with nothing to say why (a documentation tester).
fn level(value: Option<&str>) -> (LevelFilter, Option<String>) {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => (LevelFilter::WARN, None),
        Some(v) => match v.parse::<LevelFilter>() {
            Ok(level) => (level, None),
            Err(_) => (
                LevelFilter::WARN,
                Some(format!(
                    "LITESTREAM_LOG_LEVEL={v:?} is not a log level; logging at warn. Accepted: \
                     off, error, warn, info, debug, trace (any case)"
                )),
            ),
        },
    }
}

/// The filter: this crate's events at `level`, no other crate's.
fn filter(level: LevelFilter) -> Targets {
    Targets::new().with_target("litestream_vfs", level)
}

/// Installs the subscriber once per process (the extension's entry point and the CLI).
pub fn init() {
    INIT.call_once(|| {
        let value = std::env::var("LITESTREAM_LOG_LEVEL").ok();
        let (level, unknown) = level(value.as_deref());
        let _ = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(|| crate::vfs::sys::stderr::Stderr)
                    .with_target(false),
            )
            .with(filter(level))
            .try_init();
        // Once per process (this runs once), to whichever subscriber is installed: ours
        // is at warn for an unknown value, so it shows.
        if let Some(warning) = unknown {
            tracing::warn!("{warning}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_level_names_are_read_in_any_case_and_unknown_ones_fall_back_to_warn_with_a_warning() {
        assert_eq!(level(None), (LevelFilter::WARN, None));
        assert_eq!(level(Some("error")), (LevelFilter::ERROR, None));
        assert_eq!(level(Some("INFO")), (LevelFilter::INFO, None));
        assert_eq!(level(Some("Debug")), (LevelFilter::DEBUG, None));
        assert_eq!(level(Some("trace")), (LevelFilter::TRACE, None));
        assert_eq!(level(Some("off")), (LevelFilter::OFF, None));
        assert_eq!(level(Some("")), (LevelFilter::WARN, None), "empty is unset");
        let (fallback, warning) = level(Some("verbose"));
        assert_eq!(fallback, LevelFilter::WARN);
        let warning = warning.expect("an unknown value is warned about");
        assert!(
            warning.contains("LITESTREAM_LOG_LEVEL=\"verbose\" is not a log level")
                && warning.contains("off, error, warn, info, debug, trace"),
            "{warning}"
        );
    }

    #[test]
    fn only_this_crates_events_pass_the_filter() {
        let f = filter(LevelFilter::DEBUG);
        assert!(f.would_enable("litestream_vfs::storage", &tracing::Level::DEBUG));
        assert!(!f.would_enable("litestream_vfs::storage", &tracing::Level::TRACE));
        assert!(!f.would_enable("object_store::aws", &tracing::Level::ERROR));
        assert!(!f.would_enable("async_nats", &tracing::Level::WARN));
    }
}
