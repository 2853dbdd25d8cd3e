//! For the command-line tool only: a write to a closed pipe (`litestream-vfs ltx … |
//! head`) ends the process quietly, as it does for C tools, instead of Rust's default
//! (SIGPIPE ignored, then `println!` panicking with a backtrace). Never called by the
//! library: the host application's signal handling is its own.

/// Restores the default action of SIGPIPE (terminate) for this process.
pub fn terminate_on_broken_pipe() {
    // SAFETY: setting a standard signal's disposition to SIG_DFL installs no handler of
    // ours; it is done once at the start of `main`, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
