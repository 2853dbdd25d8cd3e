//! The restore progress shown on stderr: a redrawn bar on a terminal, a plain line every
//! few seconds otherwise (logs, CI), read from `restore::progress_json()`, which the
//! restore updates as bytes arrive.

use std::io::{IsTerminal, Write};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::format;

/// Draws progress until dropped (which clears the bar).
pub struct Progress {
    /// Dropping it wakes the thread at once (a sleeping thread would hold up the exit).
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// One reading of a restore's progress.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub done: u64,
    pub total: u64,
    pub seconds: f64,
}

impl Progress {
    /// Starts watching the restore writing `dest` (as `restore` displays the path).
    pub fn start(dest: String) -> Progress {
        let (stop, stopped) = channel::<()>();
        let tty = std::io::stderr().is_terminal();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                watch(&dest, tty, || {
                    stopped.recv_timeout(tick(tty)) != Err(RecvTimeoutError::Timeout)
                })
            })
            .ok();
        Progress {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tick(tty: bool) -> Duration {
    Duration::from_millis(if tty { 100 } else { 250 })
}

/// Redraws every tick until `wait_stopped` (which waits up to one tick) says to stop.
fn watch(dest: &str, tty: bool, mut wait_stopped: impl FnMut() -> bool) {
    // Without a terminal, one line every 5 s: a restore that takes longer still shows
    // it is alive in a log, and a short one prints nothing.
    let every = Duration::from_secs(5);
    let mut last_line = Instant::now();
    let mut drawn = false;
    while !wait_stopped() {
        let Some(r) = read(dest) else { continue };
        let mut err = std::io::stderr().lock();
        if tty {
            let _ = write!(err, "\r{}\x1b[K", bar(r, 30));
            drawn = true;
        } else if last_line.elapsed() >= every {
            let _ = writeln!(err, "restoring: {}", summary(r));
            last_line = Instant::now();
        }
        let _ = err.flush();
    }
    if drawn {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
}

/// The progress of the restore into `dest`, if one is running in this process.
fn read(dest: &str) -> Option<Reading> {
    let all = litestream_vfs::restore::progress_json();
    let p = all.as_array()?.iter().find(|p| p["path"] == dest)?;
    Some(Reading {
        done: p["bytes_downloaded"].as_u64()?,
        total: p["bytes_total"].as_u64()?,
        seconds: p["elapsed_ms"].as_u64()? as f64 / 1e3,
    })
}

/// `[#########.....]  45%  512.00 MiB / 1.10 GiB  120.00 MiB/s  ETA 5 s`
pub fn bar(r: Reading, width: usize) -> String {
    let frac = if r.total == 0 {
        1.0
    } else {
        (r.done as f64 / r.total as f64).min(1.0)
    };
    let filled = (frac * width as f64).round() as usize;
    format!(
        "[{}{}] {:>3.0}%  {}",
        "#".repeat(filled),
        ".".repeat(width - filled),
        frac * 100.0,
        summary(r)
    )
}

fn summary(r: Reading) -> String {
    let rate = r.done as f64 / r.seconds.max(1e-3);
    let eta = if r.done > 0 && r.done < r.total {
        format!("  ETA {:.0} s", (r.total - r.done) as f64 / rate)
    } else {
        String::new()
    };
    format!(
        "{} / {}  {}{eta}",
        format::bytes(r.done),
        format::bytes(r.total),
        format::rate(r.done, r.seconds)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_bytes_downloaded() {
        let r = Reading {
            done: 50 << 20,
            total: 100 << 20,
            seconds: 2.0,
        };
        assert_eq!(
            bar(r, 10),
            "[#####.....]  50%  50.00 MiB / 100.00 MiB  25.00 MiB/s  ETA 2 s"
        );
        let full = Reading { done: 100, ..r };
        assert!(bar(Reading { total: 100, ..full }, 4).starts_with("[####] 100%"));
    }
}
