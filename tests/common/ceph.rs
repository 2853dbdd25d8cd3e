//! Ceph's S3 gateway (RGW) on loopback, from Debian's packages (`ceph-mon`, `ceph-osd`,
//! `radosgw`: `tools/setup.sh --ceph`, which `make torture` runs): one monitor, one OSD
//! keeping objects in memory (memstore), one gateway, and a user with the tests'
//! credentials. About 10 s to start; `make torture` runs the S3 scenarios on it.
//!
//! Authentication inside the cluster is off (`auth ... required = none`, with `crc`
//! connections, which that needs): the cluster is a test fixture on loopback, and the
//! gateway still checks every S3 request's signature.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::http::request;
use super::s3::{S3Server, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use super::server::{free_port, Server};

/// Where Debian installs the daemons and tools.
const BIN: &str = "/usr/bin";

fn tool(name: &str) -> PathBuf {
    let path = Path::new(BIN).join(name);
    assert!(
        path.is_file(),
        "{} not found: Ceph RGW is installed by `tools/setup.sh --ceph` (make torture)",
        path.display()
    );
    path
}

/// Runs a one-off Ceph command; panics with its output if it fails.
fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A one-node Ceph cluster with its S3 gateway.
pub struct CephRgw {
    rgw: Server,
    osd: Server,
    mon: Server,
    /// The cluster's configuration, keyring, monitor and OSD data; dropped last.
    _data: tempfile::TempDir,
}

impl CephRgw {
    /// Bootstraps the cluster in a fresh directory and waits until the gateway answers.
    pub fn start() -> CephRgw {
        let started = Instant::now();
        let data = tempfile::tempdir().expect("ceph data dir");
        let d = data.path();
        for sub in ["mon", "osd/ceph-0", "run", "log"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let (mon_v2, mon_v1, rgw_port) = (free_port(), free_port(), free_port());
        let fsid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").expect("a uuid");
        let fsid = fsid.trim();
        let mon_addr = format!("[v2:127.0.0.1:{mon_v2},v1:127.0.0.1:{mon_v1}]");
        let conf = d.join("ceph.conf");
        let dir = d.display();
        std::fs::write(
            &conf,
            format!(
                "[global]\n\
                 fsid = {fsid}\n\
                 mon host = {mon_addr}\n\
                 public addr = 127.0.0.1\n\
                 auth cluster required = none\n\
                 auth service required = none\n\
                 auth client required = none\n\
                 ms mon client mode = crc\n\
                 ms client mode = crc\n\
                 ms bind ipv6 = false\n\
                 osd objectstore = memstore\n\
                 memstore device bytes = 1073741824\n\
                 osd pool default size = 1\n\
                 osd pool default min size = 1\n\
                 osd pool default pg num = 8\n\
                 osd pool default pgp num = 8\n\
                 osd pool default pg autoscale mode = off\n\
                 osd crush chooseleaf type = 0\n\
                 mon allow pool size one = true\n\
                 mon max pg per osd = 1000\n\
                 mon warn on pool no redundancy = false\n\
                 run dir = {dir}/run\n\
                 admin socket = {dir}/run/$name.asok\n\
                 log file = {dir}/log/$name.log\n\
                 mon data = {dir}/mon/$cluster-$id\n\
                 osd data = {dir}/osd/$cluster-$id\n\
                 keyring = {dir}/keyring\n\
                 [client.rgw.a]\n\
                 rgw frontends = beast endpoint=127.0.0.1:{rgw_port}\n\
                 rgw data = {dir}/rgw\n"
            ),
        )
        .unwrap();
        let keyring = d.join("keyring");
        run(
            "ceph-authtool",
            Command::new(tool("ceph-authtool"))
                .arg("--create-keyring")
                .arg(&keyring)
                .args(["--gen-key", "-n", "mon.", "--cap", "mon", "allow *"]),
        );
        let monmap = d.join("monmap");
        run(
            "monmaptool",
            Command::new(tool("monmaptool"))
                .args(["--create", "--fsid", fsid, "--addv", "a", &mon_addr])
                .arg(&monmap),
        );
        run(
            "ceph-mon --mkfs",
            Command::new(tool("ceph-mon"))
                .arg("-c")
                .arg(&conf)
                .args(["--mkfs", "-i", "a", "--monmap"])
                .arg(&monmap)
                .arg("--keyring")
                .arg(&keyring),
        );
        let daemon = |cmd: &mut Command, conf: &Path, args: &[&str]| {
            cmd.arg("-c").arg(conf).args(args);
        };
        let mon = Server::start_guarded(
            "ceph-mon",
            &tool("ceph-mon"),
            mon_v2,
            |cmd, _, _| daemon(cmd, &conf, &["-i", "a", "-d"]),
            |port| TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        let id = ceph(&conf, &["osd", "create"]);
        assert_eq!(id.trim(), "0", "the OSD's id");
        run(
            "ceph-osd --mkfs",
            Command::new(tool("ceph-osd"))
                .arg("-c")
                .arg(&conf)
                .args(["-i", "0", "--mkfs"]),
        );
        // The gateway answers only once it has written its pools: that is the OSD's check.
        let osd = Server::start_guarded(
            "ceph-osd",
            &tool("ceph-osd"),
            0,
            |cmd, _, _| daemon(cmd, &conf, &["-i", "0", "-d"]),
            |_| true,
        );
        let rgw = Server::start_guarded(
            "radosgw",
            &tool("radosgw"),
            rgw_port,
            |cmd, _, _| daemon(cmd, &conf, &["-n", "client.rgw.a", "-d"]),
            |port| request(port, "GET", "/", &[], b"").is_ok_and(|r| r.status == 200),
        );
        run(
            "radosgw-admin user create",
            Command::new(tool("radosgw-admin")).arg("-c").arg(&conf).args([
                "user",
                "create",
                "--uid=tester",
                "--display-name=tester",
                &format!("--access-key={ACCESS_KEY_ID}"),
                &format!("--secret-key={SECRET_ACCESS_KEY}"),
            ]),
        );
        eprintln!("Ceph RGW ready in {:.1} s", started.elapsed().as_secs_f64());
        CephRgw {
            rgw,
            osd,
            mon,
            _data: data,
        }
    }

    /// The one cluster of this test binary, started on first use; it dies with the binary.
    pub fn shared() -> &'static CephRgw {
        static SHARED: OnceLock<CephRgw> = OnceLock::new();
        SHARED.get_or_init(CephRgw::start)
    }
}

/// `ceph -c conf args...`, retried while the monitor is still forming its quorum.
fn ceph(conf: &Path, args: &[&str]) -> String {
    let started = Instant::now();
    loop {
        let out = Command::new(tool("ceph"))
            .arg("-c")
            .arg(conf)
            .args(["--connect-timeout", "10"])
            .args(args)
            .output()
            .expect("run ceph");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "ceph {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl S3Server for CephRgw {
    fn name(&self) -> &str {
        "Ceph RGW"
    }

    fn port(&self) -> u16 {
        self.rgw.port
    }

    fn log_tail(&self) -> String {
        format!(
            "--- radosgw\n{}\n--- ceph-osd\n{}\n--- ceph-mon\n{}",
            self.rgw.log_tail(),
            self.osd.log_tail(),
            self.mon.log_tail()
        )
    }
}
