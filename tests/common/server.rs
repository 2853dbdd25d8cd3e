//! A server process on a free loopback port, for the fixtures (moto, Azurite, fake-gcs-server):
//! its output goes to a log in a fresh temporary directory, it is killed when dropped, and
//! starting it waits until it answers. Each fixture brings its own command line and probe.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server gets to start answering.
const READY_LIMIT: Duration = Duration::from_secs(60);

/// A port nothing listens on right now, for a server we are about to start.
///
/// Not port 0's answer: the kernel hands out the same ephemeral range (32768-60999 here) as
/// the local ports of outgoing connections, and with tests running in parallel a client of
/// another test took a port between our release and the server's bind (CI failure). So: a
/// random port below that range, checked by binding it, and never handed out twice in one
/// process.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    const LOW: u32 = 15_000;
    const HIGH: u32 = 32_000;
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    // Seeded per process and call so parallel test binaries do not walk the same sequence.
    let mut x = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    for _ in 0..1000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = (LOW + (x % u64::from(HIGH - LOW)) as u32) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    let l = TcpListener::bind(("127.0.0.1", 0)).expect("bind a loopback port");
    l.local_addr().expect("local addr").port()
}

/// A running server process, killed when dropped.
pub struct Server {
    name: String,
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `bin` (called `name` in messages) on a free port, with stdin closed and
    /// stdout/stderr in `<name>.log` in a fresh temporary directory. `args` adds the command
    /// line, given the port and that directory. Then polls `ready(port)` every 100 ms until it
    /// is true; panics with the end of the log if the process exits first or a minute passes.
    pub fn start(
        name: &str,
        bin: &Path,
        args: impl FnOnce(&mut Command, u16, &Path),
        ready: impl FnMut(u16) -> bool,
    ) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {name} log: {e}"));
        let port = free_port();
        let mut cmd = Command::new(bin);
        args(&mut cmd, port, dir.path());
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e} (run make setup)", bin.display()));
        let mut server = Server {
            name: name.to_string(),
            child,
            port,
            log,
            _dir: dir,
        };
        server.wait_ready(ready);
        server
    }

    fn wait_ready(&mut self, mut ready: impl FnMut(u16) -> bool) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited early ({status}):\n{}", self.name, self.log_tail());
            }
            if ready(self.port) {
                return;
            }
            if start.elapsed() > READY_LIMIT {
                panic!(
                    "{} did not answer on port {} within {READY_LIMIT:?}:\n{}",
                    self.name,
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
