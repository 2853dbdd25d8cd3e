//! The clock the kernel stamps file modification times from. Before Linux 6.13 (and on
//! filesystems without multigrain timestamps since) a write's mtime is the *coarse*
//! realtime clock, which moves once a scheduler tick (1–10 ms): two writes within one
//! tick get the same mtime, and a same-size change within that tick leaves a file's
//! size and mtime as they were. Capture compares those to notice a database changed
//! without the VFS (`primary::state::FileIdentity::pinned`), so it waits for this clock
//! to move past the mtime it recorded before SQLite's lock is released.

/// The coarse realtime clock in nanoseconds since the epoch (the realtime clock where
/// there is no coarse one: there, file times come from a fine clock).
pub fn coarse_now_ns() -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    #[cfg(target_os = "linux")]
    let clock = libc::CLOCK_REALTIME_COARSE;
    #[cfg(not(target_os = "linux"))]
    let clock = libc::CLOCK_REALTIME;
    // SAFETY: `ts` is a valid, writable timespec for the call's duration; the clock id
    // is a constant the platform defines.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}
