//! Dialing a NATS server: TCP, the server's INFO, TLS when either side asks for it, then
//! CONNECT with our credentials and a PING whose PONG says we are in (an `-ERR` instead
//! says why not). Also where the settings become what dialing needs: server addresses,
//! credentials read from their files, and the rustls configuration.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::Io;
use super::nkey::{parse_creds, KeyPairSeed};
use super::proto::{self, ServerOp};
use super::settings::{Auth, Settings};

/// How long dialing one server may take, handshake included.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong connecting, by what can be done about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectKind {
    /// The network: worth retrying.
    Io,
    /// TLS setup or the server's certificate: retrying will not help.
    Tls,
    /// The server refused our credentials.
    Auth,
    /// The server said something we do not understand.
    Protocol,
}

#[derive(Debug, Clone)]
pub(crate) struct ConnectError {
    pub kind: ConnectKind,
    pub message: String,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn fail(kind: ConnectKind, message: impl Into<String>) -> ConnectError {
    ConnectError {
        kind,
        message: message.into(),
    }
}

#[derive(Debug, Clone)]
struct Server {
    host: String,
    port: u16,
    /// `tls://` in the address: TLS even if the server does not require it.
    tls: bool,
}

impl Server {
    /// `host:port`, an IPv6 host in brackets.
    fn address(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }
}

enum Credentials {
    None,
    UserPassword(String, String),
    Token(String),
    Nkey(KeyPairSeed),
    Jwt(String, KeyPairSeed),
}

/// Everything needed to dial, resolved once (files read, TLS configured).
#[derive(Clone)]
pub(crate) struct ConnectOptions {
    servers: Vec<Server>,
    credentials: Arc<Credentials>,
    require_tls: bool,
    /// Built up front when TLS is asked for; otherwise when a server first requires it.
    tls: Option<Arc<rustls::ClientConfig>>,
    ca: Option<std::path::PathBuf>,
    client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl ConnectOptions {
    /// Reads the credential files and the TLS files the settings name. Errors are about
    /// the configuration (a missing or malformed file).
    pub fn from_settings(s: &Settings) -> Result<ConnectOptions, String> {
        let mut servers = Vec::new();
        let mut url_credentials = None;
        for address in s.servers.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let with_scheme = if address.contains("://") {
                address.to_string()
            } else {
                format!("nats://{address}")
            };
            let url = url::Url::parse(&with_scheme).map_err(|e| format!("bad NATS server address {address:?}: {e}"))?;
            let host = match url.host() {
                Some(url::Host::Ipv6(a)) => a.to_string(),
                Some(h) => h.to_string(),
                None => return Err(format!("NATS server address {address:?} names no host")),
            };
            if !url.username().is_empty() && url_credentials.is_none() {
                url_credentials = Some(match url.password() {
                    Some(p) => Credentials::UserPassword(url.username().to_string(), p.to_string()),
                    None => Credentials::Token(url.username().to_string()),
                });
            }
            servers.push(Server {
                host,
                port: url.port().unwrap_or(4222),
                tls: url.scheme() == "tls",
            });
        }
        if servers.is_empty() {
            return Err("no NATS server address".into());
        }
        let read = |what: &str, p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| format!("reading the {what} {}: {e}", p.display()))
        };
        let credentials = match &s.auth {
            Auth::None => url_credentials.unwrap_or(Credentials::None),
            Auth::CredsFile(p) => {
                let (jwt, seed) = parse_creds(&read("NATS credentials file", p)?)?;
                Credentials::Jwt(jwt, KeyPairSeed::from_seed(&seed)?)
            }
            Auth::NkeyFile(p) => Credentials::Nkey(KeyPairSeed::from_seed(&read("nkey seed file", p)?)?),
            Auth::UserPassword(u, p) => Credentials::UserPassword(u.clone(), p.clone()),
            Auth::Token(t) => Credentials::Token(t.clone()),
        };
        let require_tls = s.tls.required || servers.iter().any(|s| s.tls);
        let mut o = ConnectOptions {
            servers,
            credentials: Arc::new(credentials),
            require_tls,
            tls: None,
            ca: s.tls.ca.clone(),
            client_cert: s.tls.client_cert.clone(),
        };
        if require_tls {
            o.tls = Some(o.tls_config().map_err(|e| e.message)?);
        }
        Ok(o)
    }

    /// A plain connection to one server without credentials (the client's tests).
    #[cfg(test)]
    pub fn plain(host: &str, port: u16) -> ConnectOptions {
        ConnectOptions {
            servers: vec![Server {
                host: host.to_string(),
                port,
                tls: false,
            }],
            credentials: Arc::new(Credentials::None),
            require_tls: false,
            tls: None,
            ca: None,
            client_cert: None,
        }
    }

    /// Adds servers a cluster advertised (`host:port`) to those reconnects try; the TLS
    /// choice of the configured servers carries over.
    pub fn learn(&mut self, urls: &[String]) {
        let tls = self.servers[0].tls;
        for u in urls {
            let Ok(url) = url::Url::parse(&format!("nats://{u}")) else {
                continue;
            };
            let host = match url.host() {
                Some(url::Host::Ipv6(a)) => a.to_string(),
                Some(h) => h.to_string(),
                None => continue,
            };
            let port = url.port().unwrap_or(4222);
            if !self.servers.iter().any(|s| s.host == host && s.port == port) {
                tracing::debug!(server = %u, "NATS cluster advertised a server");
                self.servers.push(Server { host, port, tls });
            }
        }
    }

    /// The first server, for messages.
    pub fn describe(&self) -> String {
        let s = &self.servers[0];
        format!("{}:{}", s.host, s.port)
    }

    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, ConnectError> {
        let tls = |m: String| fail(ConnectKind::Tls, m);
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if let Some(ca) = &self.ca {
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| tls(format!("reading {}: {e}", ca.display())))? {
                let cert = cert.map_err(|e| tls(format!("reading {}: {e}", ca.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| tls(format!("bad CA certificate in {}: {e}", ca.display())))?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(e.to_string()))?
            .with_root_certificates(roots);
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let certs = CertificateDer::pem_file_iter(cert)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| tls(format!("reading {}: {e}", cert.display())))?;
                let key =
                    PrivateKeyDer::from_pem_file(key).map_err(|e| tls(format!("reading {}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| tls(format!("the TLS client certificate: {e}")))?
            }
        };
        Ok(Arc::new(config))
    }
}

/// Dials each server in turn; the last failure if none answers.
/// A connection ready for traffic: the stream, bytes read past the handshake, and the
/// servers the cluster advertised.
pub(crate) type Dialed = (Box<dyn Io>, BytesMut, Vec<String>);

pub(crate) async fn dial_any(o: &ConnectOptions) -> Result<Dialed, ConnectError> {
    let mut last = None;
    for server in &o.servers {
        let e = match tokio::time::timeout(DIAL_TIMEOUT, dial(o, server)).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) => e,
            Err(_) => fail(ConnectKind::Io, format!("connection timed out after {DIAL_TIMEOUT:?}")),
        };
        // The address tried, in every failure: `nats:///bucket` without NATS_URL said only
        // "Connection refused" beside the bucket's name, not that 127.0.0.1:4222 was where
        // (a documentation tester).
        last = Some(ConnectError {
            kind: e.kind,
            message: format!("NATS server {}: {}", server.address(), e.message),
        });
    }
    Err(last.expect("at least one server"))
}

#[derive(Deserialize, Default)]
struct ServerInfo {
    #[serde(default)]
    tls_required: bool,
    #[serde(default)]
    tls_available: bool,
    #[serde(default)]
    nonce: Option<String>,
    /// Other servers of the cluster, `host:port`: where to reconnect if this one goes.
    #[serde(default)]
    connect_urls: Vec<String>,
}

/// The servers a cluster advertises in an INFO (at connect and when its members change).
pub(crate) fn advertised(info_json: &str) -> Vec<String> {
    serde_json::from_str::<ServerInfo>(info_json)
        .map(|i| i.connect_urls)
        .unwrap_or_default()
}

/// Reads until one whole operation is buffered.
async fn next_op(io: &mut (impl tokio::io::AsyncRead + Unpin), buf: &mut BytesMut) -> Result<ServerOp, ConnectError> {
    loop {
        match proto::parse(buf) {
            Ok(Some(op)) => return Ok(op),
            Ok(None) => {}
            Err(e) => return Err(fail(ConnectKind::Protocol, e.to_string())),
        }
        match io.read_buf(buf).await {
            Ok(0) => return Err(fail(ConnectKind::Io, "connection closed during the NATS handshake")),
            Ok(_) => {}
            Err(e) => return Err(io_error(e)),
        }
    }
}

fn io_error(e: std::io::Error) -> ConnectError {
    // tokio-rustls reports handshake failures (an untrusted certificate) as I/O errors
    // wrapping rustls' own: those are configuration, not the network.
    let is_tls = e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
    fail(
        if is_tls { ConnectKind::Tls } else { ConnectKind::Io },
        format!("connection error: {e}"),
    )
}

async fn dial(o: &ConnectOptions, server: &Server) -> Result<Dialed, ConnectError> {
    let tcp = TcpStream::connect((server.host.as_str(), server.port))
        .await
        .map_err(io_error)?;
    let _ = tcp.set_nodelay(true);
    let mut tcp = tcp;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let info = match next_op(&mut tcp, &mut buf).await? {
        ServerOp::Info(json) => serde_json::from_str::<ServerInfo>(&json)
            .map_err(|e| fail(ConnectKind::Protocol, format!("bad INFO from the server: {e}")))?,
        other => return Err(fail(ConnectKind::Protocol, format!("expected INFO, got {other:?}"))),
    };
    let use_tls = o.require_tls || server.tls || info.tls_required;
    if use_tls && !(info.tls_required || info.tls_available) {
        return Err(fail(
            ConnectKind::Tls,
            "TLS is required but the NATS server does not offer it",
        ));
    }
    let mut io: Box<dyn Io> = if use_tls {
        let config = match &o.tls {
            Some(c) => Arc::clone(c),
            None => o.tls_config()?,
        };
        let name = ServerName::try_from(server.host.clone())
            .map_err(|e| fail(ConnectKind::Tls, format!("bad TLS server name {}: {e}", server.host)))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(io_error)?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let connect = connect_json(&o.credentials, use_tls, info.nonce.as_deref());
    io.write_all(format!("CONNECT {connect}\r\nPING\r\n").as_bytes())
        .await
        .map_err(io_error)?;
    io.flush().await.map_err(io_error)?;
    loop {
        match next_op(&mut io, &mut buf).await? {
            ServerOp::Pong => return Ok((io, buf, info.connect_urls)),
            ServerOp::Err(text) => {
                let lower = text.to_ascii_lowercase();
                let kind = if lower.contains("authorization") || lower.contains("authentication") {
                    ConnectKind::Auth
                } else {
                    ConnectKind::Protocol
                };
                return Err(fail(kind, format!("the NATS server refused the connection: {text}")));
            }
            ServerOp::Ping => io.write_all(b"PONG\r\n").await.map_err(io_error)?,
            ServerOp::Ok | ServerOp::Info(_) | ServerOp::Msg(_) => {}
        }
    }
}

fn connect_json(credentials: &Credentials, tls: bool, nonce: Option<&str>) -> String {
    let mut c = serde_json::json!({
        "verbose": false,
        "pedantic": false,
        "tls_required": tls,
        "name": "litestream-vfs",
        "lang": "rust",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": 1,
        "headers": true,
        "no_responders": true,
        "echo": true,
    });
    let nonce = nonce.unwrap_or_default();
    match credentials {
        Credentials::None => {}
        Credentials::UserPassword(u, p) => {
            c["user"] = u.as_str().into();
            c["pass"] = p.as_str().into();
        }
        Credentials::Token(t) => c["auth_token"] = t.as_str().into(),
        Credentials::Nkey(k) => {
            c["nkey"] = k.public_key().into();
            c["sig"] = k.sign_nonce(nonce).into();
        }
        Credentials::Jwt(jwt, k) => {
            c["jwt"] = jwt.as_str().into();
            c["sig"] = k.sign_nonce(nonce).into();
        }
    }
    c.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_a_cluster_advertises_are_added_once_for_reconnects() {
        let mut o = ConnectOptions::plain("127.0.0.1", 4222);
        let urls =
            advertised(r#"{"server_id":"a","connect_urls":["10.0.0.2:4222","[fd00::3]:4223","127.0.0.1:4222"]}"#);
        assert_eq!(urls.len(), 3);
        o.learn(&urls);
        o.learn(&urls);
        let found: Vec<(String, u16)> = o.servers.iter().map(|s| (s.host.clone(), s.port)).collect();
        assert_eq!(
            found,
            [
                ("127.0.0.1".into(), 4222),
                ("10.0.0.2".into(), 4222),
                ("fd00::3".into(), 4223)
            ]
        );
        assert!(advertised("{}").is_empty() && advertised("not json").is_empty());
    }

    #[test]
    fn a_failed_connection_names_the_address_it_tried() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let o = ConnectOptions::plain("127.0.0.1", port);
        let Err(e) = crate::runtime::block_on(dial_any(&o)) else {
            panic!("nothing listens on port {port}")
        };
        assert!(matches!(e.kind, ConnectKind::Io));
        assert!(
            e.message
                .starts_with(&format!("NATS server 127.0.0.1:{port}: connection error: ")),
            "{}",
            e.message
        );
        let v6 = Server {
            host: "fd00::3".into(),
            port: 4223,
            tls: false,
        };
        assert_eq!(v6.address(), "[fd00::3]:4223");
    }
}
