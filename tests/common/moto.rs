//! A real S3 API server for tests: moto's `moto_server` on a free loopback port.
//!
//! Found via `$MOTO_SERVER`, else `<CARGO_MANIFEST_DIR>/.venv/bin/moto_server` (installed by
//! `make setup`). Missing is a test failure, not a skip: a suite that silently skips its S3
//! tests proves nothing.

use std::net::TcpStream;
use std::path::PathBuf;

use super::http::request;
use super::s3::S3Server;
use super::server::{free_port, Server};
use super::tools::{env_or, in_repo, require};

/// A running moto server, killed when dropped.
pub struct Moto {
    server: Server,
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

/// Path of the moto_server executable.
pub fn moto_server_path() -> PathBuf {
    env_or("MOTO_SERVER", || in_repo(".venv/bin/moto_server"))
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
        let bin = require("moto_server", "MOTO_SERVER", moto_server_path());
        let started = std::time::Instant::now();
        let args = |cmd: &mut std::process::Command, port: u16, _: &std::path::Path| {
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
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
