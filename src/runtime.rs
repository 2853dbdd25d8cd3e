//! One tokio runtime per process for all storage I/O, started on first use. Two
//! worker threads (`LITESTREAM_IO_THREADS`): uploads and page fetches are I/O-bound
//! and SQLite threads only block on them. The blocking pool, where the local store does
//! its file I/O, is bounded too (`LITESTREAM_BLOCKING_THREADS`, default 2): unbounded,
//! it grew to hundreds of threads with a thousand databases. Nothing that runs there
//! may wait for other blocking work (that would deadlock a bounded pool).

use crate::vfs::sys::fork::PerProcess;
use std::future::Future;
use std::pin::{pin, Pin};
use tokio::runtime::Runtime;

/// Made again in a child of `fork()`, whose copy of the parent's has no threads.
static RUNTIME: PerProcess<Runtime> = PerProcess::new();

pub fn runtime() -> &'static Runtime {
    RUNTIME.get(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(crate::engine::env_count("LITESTREAM_IO_THREADS", 2))
            .max_blocking_threads(crate::engine::env_count("LITESTREAM_BLOCKING_THREADS", 2))
            .thread_name("litestream-io")
            .enable_all()
            .build()
            .expect("cannot start the litestream I/O runtime")
    })
}

/// Runs `future` to completion from a non-async thread (a SQLite thread or our worker).
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut output = None;
    block_on_unit(pin!(async { output = Some(future.await) }));
    output.expect("the future ran to completion")
}

/// Not generic: tokio's `block_on` (entering the runtime, parking the thread) is compiled
/// once, not once per future type, which was about 10 KB of the library for each.
#[inline(never)]
fn block_on_unit(future: Pin<&mut dyn Future<Output = ()>>) {
    runtime().block_on(future)
}
