//! A long-lived `sqlite3` shell with the extension loaded: one connection across many
//! commands, as an application holds it, so a test can change the world (switch faults on,
//! stop a server) between two statements of the same connection.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// Printed after each batch so [`Shell::run`] knows where its output ends.
const END: &str = "__litestream_shell_end__";

pub struct Shell {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr_path: PathBuf,
}

impl Shell {
    /// Starts `sqlite3` with `extension` loaded, stderr into `stderr_path`, and runs `open`.
    pub fn start(extension: &Path, stderr_path: &Path, envs: &[(&str, &str)], open: &str) -> Shell {
        let stderr = std::fs::File::create(stderr_path).expect("shell stderr file");
        // stdbuf: the shell's stdout is a pipe, which C stdio would otherwise buffer.
        let mut child = Command::new("stdbuf")
            .args(["-o0", "sqlite3", "-batch", "-cmd"])
            .arg(format!(".load {}", extension.display()))
            .arg(":memory:")
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("sqlite3 runs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut shell = Shell {
            child,
            stdin,
            stdout,
            stderr_path: stderr_path.to_path_buf(),
        };
        shell.run(open);
        shell
    }

    /// Runs SQL or dot-commands; returns what they printed on stdout.
    pub fn run(&mut self, sql: &str) -> String {
        writeln!(self.stdin, "{sql}\n.print {END}").expect("write to sqlite3");
        self.stdin.flush().expect("flush to sqlite3");
        let mut out = String::new();
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("read from sqlite3");
            assert!(n > 0, "sqlite3 exited; stderr:\n{}", self.stderr());
            if line.trim_end() == END {
                return out;
            }
            out.push_str(&line);
        }
    }

    /// Everything the shell wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, ".quit");
        let _ = self.child.wait();
    }
}

/// Runs `script` (SQL and dot-commands) in a fresh `sqlite3` process with `extension`
/// loaded and `envs` set (and no `AWS_CA_BUNDLE`, which breaks plain-http S3 servers);
/// returns stdout, panics with stderr if the shell fails.
pub fn run_script(extension: &Path, envs: &[(&str, &str)], script: &str) -> String {
    let mut child = Command::new("sqlite3")
        .args(["-batch", "-bail", "-cmd"])
        .arg(format!(".load {}", extension.display()))
        .arg(":memory:")
        .envs(envs.iter().copied())
        .env_remove("AWS_CA_BUNDLE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sqlite3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write to sqlite3");
    let out = child.wait_with_output().expect("sqlite3 ends");
    assert!(
        out.status.success(),
        "sqlite3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
