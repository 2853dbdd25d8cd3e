//! A server process on a free loopback port, for the fixtures (moto, Azurite, fake-gcs-server):
//! its output goes to a log in a fresh temporary directory, it is killed when dropped, and
//! starting it waits until it answers. Each fixture brings its own command line and probe.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
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
    /// Guarded servers (see [`Server::start_guarded`]): closing this pipe kills the server.
    guard: Option<ChildStdin>,
    _dir: tempfile::TempDir,
}

/// Runs a server as `sh`'s child with a watchdog on `sh`'s stdin, a pipe from the test
/// process: when the test closes it, or exits in any way (a panic, SIGKILL), the watchdog
/// SIGKILLs the server and then removes the server's directory (a `static` is never
/// dropped, nor is its `TempDir`). `sh` exits with the server, so an early exit is still
/// seen, its log still there. Arguments: the directory, then the server's command line.
const GUARD_SCRIPT: &str = r#"dir=$1; shift
exec 3<&0
"$@" </dev/null 3<&- &
server=$!
( read -r _ <&3; kill -KILL "$server" 2>/dev/null
  while kill -0 "$server" 2>/dev/null; do sleep 0.1; done
  rm -rf "$dir" ) &
wait "$server""#;

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
        Server::launch(name, bin, free_port(), false, args, ready)
    }

    /// Like [`Server::start`], on `port`, and killed (SIGKILL) even when the test process
    /// never drops it: a server shared by a whole test binary lives in a `static`, which is
    /// never dropped, and must not outlive the binary (see `GUARD_SCRIPT`).
    pub fn start_guarded(
        name: &str,
        bin: &Path,
        port: u16,
        args: impl FnOnce(&mut Command, u16, &Path),
        ready: impl FnMut(u16) -> bool,
    ) -> Server {
        Server::launch(name, bin, port, true, args, ready)
    }

    fn launch(
        name: &str,
        bin: &Path,
        port: u16,
        guarded: bool,
        args: impl FnOnce(&mut Command, u16, &Path),
        ready: impl FnMut(u16) -> bool,
    ) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {name} log: {e}"));
        let mut cmd = Command::new(bin);
        args(&mut cmd, port, dir.path());
        if guarded {
            let mut sh = Command::new("sh");
            sh.args(["-c", GUARD_SCRIPT, "sh"])
                .arg(dir.path())
                .arg(cmd.get_program())
                .args(cmd.get_args());
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => sh.env(k, v),
                    None => sh.env_remove(k),
                };
            }
            if let Some(cwd) = cmd.get_current_dir() {
                sh.current_dir(cwd);
            }
            cmd = sh;
        }
        let mut child = cmd
            .stdin(if guarded { Stdio::piped() } else { Stdio::null() })
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e} (run make setup)", bin.display()));
        let mut server = Server {
            name: name.to_string(),
            guard: child.stdin.take(),
            child,
            port,
            log,
            _dir: dir,
        };
        server.wait_ready(ready);
        server
    }

    /// Kills the server now (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        match self.guard.take() {
            Some(pipe) => drop(pipe), // the watchdog kills it
            None => {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
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
        self.kill();
    }
}
