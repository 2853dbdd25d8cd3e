//! Log set-up: `tracing` to stderr, level from `LITESTREAM_LOG_LEVEL`
//! (error, warn, info, debug, trace; default warn). A host that installed its own
//! global subscriber keeps it.

use std::sync::Once;

static INIT: Once = Once::new();

/// Installs the subscriber once per process (the extension's entry point and the CLI).
pub fn init() {
    INIT.call_once(|| {
        let level = std::env::var("LITESTREAM_LOG_LEVEL").unwrap_or_else(|_| "warn".into());
        let filter = tracing_subscriber::EnvFilter::try_new(format!("litestream_vfs={}", level.to_lowercase()))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("litestream_vfs=warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init();
    });
}
