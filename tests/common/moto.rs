//! A real S3 API server for tests: moto's `moto_server` on a free loopback port.
//!
//! Found via `$MOTO_SERVER` (run as it is), else `tests/scripts/moto_atomic.py` run by
//! `<CARGO_MANIFEST_DIR>/.venv/bin/python` (installed by `make setup`): moto_server with
//! its conditional writes made atomic, as real S3's are (the script says why). Missing is
//! a test failure, not a skip: a suite that silently skips its S3 tests proves nothing.

use std::net::TcpStream;
use std::path::PathBuf;

use super::http::request;
use super::s3::S3Server;
use super::server::{free_port, Server};
use super::tools::{in_repo, require};

/// A running moto server, killed when dropped.
pub struct Moto {
    server: Server,
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

/// The program to run and the arguments before moto_server's own.
fn moto_server_command() -> (PathBuf, Vec<String>) {
    match std::env::var_os("MOTO_SERVER") {
        Some(bin) => (PathBuf::from(bin), Vec::new()),
        None => {
            let script = in_repo("tests/scripts/moto_atomic.py");
            // -P: the script's directory holds test scripts named like stdlib modules.
            let args = vec!["-P".to_string(), script.display().to_string()];
            (in_repo(".venv/bin/python"), args)
        }
    }
}

impl Moto {
    /// Starts moto_server and waits until it answers HTTP.
    pub fn start() -> Moto {
        Moto::launch(false)
    }

    /// Like [`Moto::start`], for a server shared by a whole test binary (kept in a
    /// `static`): it dies with the binary ([`Server::start_guarded`]).
    pub fn start_guarded() -> Moto {
        Moto::launch(true)
    }

    fn launch(guarded: bool) -> Moto {
        let (bin, before) = moto_server_command();
        let bin = require("moto_server", "MOTO_SERVER", bin);
        let started = std::time::Instant::now();
        let args = |cmd: &mut std::process::Command, port: u16, _: &std::path::Path| {
            cmd.args(&before)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env_remove("AWS_CA_BUNDLE");
        };
        let ready = |port| {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
                && request(port, "GET", "/", &[], b"").is_ok_and(|r| r.status < 500)
        };
        let server = if guarded {
            Server::start_guarded("moto_server", &bin, free_port(), args, ready)
        } else {
            Server::start("moto_server", &bin, args, ready)
        };
        eprintln!("moto ready in {:.1} s", started.elapsed().as_secs_f64());
        Moto {
            port: server.port,
            endpoint: format!("http://127.0.0.1:{}", server.port),
            server,
        }
    }
}

impl S3Server for Moto {
    fn name(&self) -> &str {
        "moto"
    }

    fn port(&self) -> u16 {
        self.port
    }

    fn log_tail(&self) -> String {
        self.server.log_tail()
    }
}
