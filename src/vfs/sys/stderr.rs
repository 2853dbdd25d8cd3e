//! Log lines to descriptor 2 without Rust's stderr lock. `std::io::stderr()` takes a
//! process-wide reentrant lock for each write; a thread of a parent writing a warning
//! when a pre-fork server forks leaves it held in the child for good (only the forking
//! thread exists there), and the child's first log line would wait on it forever. The
//! log layer formats each event into one buffer first, so a line is still one `write(2)`
//! (lines of two threads do not interleave within a line up to `PIPE_BUF` on a pipe).

use std::io;

/// Writes straight to descriptor 2.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stderr;

impl io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for `buf.len()` bytes; descriptor 2 is only written,
        // never closed or replaced here (a closed one gives EBADF, which is returned).
        let written = unsafe { libc::write(2, buf.as_ptr().cast(), buf.len()) };
        if written < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(written as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::sys::fork::tests::finishes_in_a_child;
    use std::io::Write;

    #[test]
    fn a_child_of_fork_logs_while_a_parent_thread_held_rusts_stderr_lock() {
        let finished = finishes_in_a_child(
            || Box::new(io::stderr().lock()),
            || {
                let _ = Stderr.write_all(b"");
            },
        );
        assert!(finished, "the child's write waited on a lock copied held");
    }
}
