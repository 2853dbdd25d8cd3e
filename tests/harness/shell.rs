//! A long-lived `sqlite3` shell with the extension loaded, driven one command at a time: one
//! connection across steps, so a test can change the world (stop a server) between them.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use super::extension;

/// Printed after each step so the reader knows where the step's output ends.
const DONE: &str = "__step_done__";

pub struct LiveShell {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr_path: PathBuf,
}

impl LiveShell {
    /// Starts the shell (stderr to a file in `dir`) and runs `first` in it.
    pub fn start(dir: &Path, label: &str, first: &str) -> LiveShell {
        Self::start_with(dir, label, &[], None, first)
    }

    /// Like [`LiveShell::start`], with environment variables and, if given, the umask
    /// (an octal string such as `"022"`) the shell runs under.
    pub fn start_with(dir: &Path, label: &str, envs: &[(&str, &str)], umask: Option<&str>, first: &str) -> LiveShell {
        let stderr_path = dir.join(format!("{label}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        // stdbuf: stdout is a pipe, which C stdio would otherwise buffer until exit.
        let mut command = match umask {
            Some(mask) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("umask {mask} && exec \"$@\""), "sh", "stdbuf"]);
                c
            }
            None => Command::new("stdbuf"),
        };
        let mut child = command
            .args(["-o0", "sqlite3", "-batch", "-cmd"])
            .arg(format!(".load {}", extension().display()))
            .arg(":memory:")
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("sqlite3 runs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut shell = LiveShell {
            child,
            stdin,
            stdout,
            stderr_path,
        };
        shell.run(first);
        shell
    }

    /// Runs SQL or dot-commands; returns what they printed on stdout.
    pub fn run(&mut self, sql: &str) -> String {
        writeln!(self.stdin, "{sql}\n.print {DONE}").expect("write to sqlite3");
        self.stdin.flush().expect("flush sqlite3 stdin");
        let mut out = String::new();
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("read sqlite3 stdout");
            assert!(n > 0, "sqlite3 exited; stderr:\n{}", self.stderr());
            if line.trim_end() == DONE {
                return out;
            }
            out.push_str(&line);
        }
    }

    /// The shell's process id (`stdbuf` execs `sqlite3` in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the shell (SIGKILL, SIGSTOP, SIGCONT, ...).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Kills the shell (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the shell wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for LiveShell {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, ".quit");
        let _ = self.child.wait();
    }
}
