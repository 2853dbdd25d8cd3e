//! Log set-up: `tracing` to stderr, level from `LITESTREAM_LOG_LEVEL`
//! (off, error, warn, info, debug, trace, any case; default warn, and warn for a value it
//! does not know). Only this crate's events are shown. A host that installed its own
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
/// string as error; an empty variable is taken as unset instead).
fn level(value: Option<&str>) -> LevelFilter {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .and_then(|v| v.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::WARN)
}

/// The filter: this crate's events at `level`, no other crate's.
fn filter(level: LevelFilter) -> Targets {
    Targets::new().with_target("litestream_vfs", level)
}

/// Installs the subscriber once per process (the extension's entry point and the CLI).
pub fn init() {
    INIT.call_once(|| {
        let value = std::env::var("LITESTREAM_LOG_LEVEL").ok();
        let _ = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(|| crate::vfs::sys::stderr::Stderr)
                    .with_target(false),
            )
            .with(filter(level(value.as_deref())))
            .try_init();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_level_names_are_read_in_any_case_and_unknown_ones_fall_back_to_warn() {
        assert_eq!(level(None), LevelFilter::WARN);
        assert_eq!(level(Some("error")), LevelFilter::ERROR);
        assert_eq!(level(Some("INFO")), LevelFilter::INFO);
        assert_eq!(level(Some("Debug")), LevelFilter::DEBUG);
        assert_eq!(level(Some("trace")), LevelFilter::TRACE);
        assert_eq!(level(Some("off")), LevelFilter::OFF);
        assert_eq!(level(Some("loud")), LevelFilter::WARN);
        assert_eq!(level(Some("")), LevelFilter::WARN);
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
