//! `nats://[user:pass@ | token@]host[:port]/bucket[/path]` plus options → how to connect.
//!
//! Each setting comes from [`StoreOptions::nats`] first, then the URL (its userinfo, or a
//! `nats_*` query parameter), then the `NATS_*` environment variables the `nats` CLI reads.
//! Authentication, in Litestream's order of preference: credentials file, nkey seed file,
//! user and password, token. Files are checked at open so that a typo is an error there,
//! not a reconnect loop later.

use std::path::PathBuf;

use super::super::error::{Error, Redactor, Result};
use super::super::layout::{Layout, LevelStyle};
use super::super::options::{parse_bool, NatsOptions, StoreOptions};
use super::super::target::{first_env, percent_decode, EnvFn, Target};

/// The NATS client port when the URL names none.
const DEFAULT_PORT: u16 = 4222;
/// Chunk size of the objects we write unless told otherwise: the NATS clients' default.
const DEFAULT_CHUNK_SIZE: usize = 128 * 1024;

/// How the client proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Auth {
    None,
    CredsFile(PathBuf),
    NkeyFile(PathBuf),
    UserPassword(String, String),
    Token(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => write!(f, "none"),
            Auth::CredsFile(p) => write!(f, "creds file {}", p.display()),
            Auth::NkeyFile(p) => write!(f, "nkey file {}", p.display()),
            Auth::UserPassword(u, _) => write!(f, "user {u} with a password"),
            Auth::Token(_) => write!(f, "token"),
        }
    }
}

/// TLS beyond what the server itself asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tls {
    pub required: bool,
    pub ca: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Everything needed to reach one replica in a NATS object store bucket.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Server address(es): `nats://host:port` (or `NATS_URL`'s comma-separated list).
    pub servers: String,
    /// Object store bucket (the JetStream stream is `OBJ_<bucket>`).
    pub bucket: String,
    /// Where the LTX files live inside the bucket: `<path>/ltx/<level>/<name>`.
    pub layout: Layout,
    pub auth: Auth,
    pub tls: Tls,
    /// Chunk size of the objects we write.
    pub chunk_size: usize,
    /// The URL with credentials replaced, for every message about this store.
    pub name: String,
    pub redactor: Redactor,
}

const KNOWN_PARAMS: &[&str] = &[
    "nats_creds",
    "nats-creds",
    "nats_nkey",
    "nats-nkey",
    "nats_token",
    "nats-token",
    "nats_user",
    "nats-user",
    "nats_password",
    "nats-password",
    "nats_tls",
    "nats-tls",
    "nats_tls_ca",
    "nats-tls-ca",
    "nats_tls_cert",
    "nats-tls-cert",
    "nats_tls_key",
    "nats-tls-key",
    "nats_chunk_size",
    "nats-chunk-size",
];

/// JetStream stream names, hence bucket names: letters, digits, `-` and `_`.
fn valid_bucket(b: &str) -> bool {
    !b.is_empty() && b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

impl Settings {
    pub(crate) fn parse(t: &Target, opts: &StoreOptions, env: EnvFn<'_>) -> Result<Settings> {
        t.params.check_known("nats", KNOWN_PARAMS, &t.name)?;
        // The URL's query parameters, through the same setter as the options.
        let mut from_url = NatsOptions::default();
        for name in KNOWN_PARAMS {
            if let Some(v) = t.params.get(&[name]) {
                from_url.set(name, v)?;
            }
        }
        let o = &opts.nats;
        let pick = |opt: &Option<String>, url: &Option<String>, env_name: &'static str| {
            opt.clone()
                .or_else(|| url.clone())
                .or_else(|| first_env(env, &[env_name]).map(|e| e.1))
                .filter(|v| !v.trim().is_empty())
        };

        let (bucket, path) = t.path.split_once('/').unwrap_or((t.path.as_str(), ""));
        if !valid_bucket(bucket) {
            return Err(Error::config(format!(
                "replica URL {} names no valid object store bucket: use nats://host:port/BUCKET[/path], \
                 where BUCKET has only letters, digits, '-' and '_'",
                t.name
            )));
        }
        let layout = Layout::from_user_path(path, LevelStyle::LtxDecimal)?;

        let servers = if t.host.is_empty() {
            // `nats:///bucket`: the servers the nats CLI would use.
            first_env(env, &["NATS_URL"])
                .map(|e| e.1)
                .unwrap_or_else(|| format!("nats://127.0.0.1:{DEFAULT_PORT}"))
        } else {
            let host = match t.url.host() {
                Some(url::Host::Ipv6(a)) => format!("[{a}]"),
                _ => t.host.clone(),
            };
            format!("nats://{host}:{}", t.url.port().unwrap_or(DEFAULT_PORT))
        };

        // URL userinfo: `user:password@` or `token@`, as NATS URLs have it.
        let url_password = t
            .url
            .password()
            .map(|p| percent_decode(p).unwrap_or_else(|| p.to_string()));
        let (url_user, url_token) = match (&t.user, &url_password) {
            (Some(u), Some(_)) => (Some(u.clone()), None),
            (Some(token), None) => (None, Some(token.clone())),
            _ => (None, None),
        };
        let creds = pick(&o.creds, &from_url.creds, "NATS_CREDS");
        let nkey = pick(&o.nkey, &from_url.nkey, "NATS_NKEY");
        let user = pick(&o.user, &from_url.user.clone().or(url_user), "NATS_USER");
        let password = pick(
            &o.password,
            &from_url.password.clone().or(url_password),
            "NATS_PASSWORD",
        );
        let token = pick(&o.token, &from_url.token.clone().or(url_token), "NATS_TOKEN");

        let mut redactor = Redactor::default();
        for secret in [&password, &token].into_iter().flatten() {
            redactor.add(secret);
        }
        let existing_file = |what: &str, p: &str| -> Result<PathBuf> {
            let path = PathBuf::from(p);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::config(format!(
                    "{what} {p:?} for {} is not a readable file",
                    t.name
                )))
            }
        };
        let auth = if let Some(c) = creds {
            Auth::CredsFile(existing_file("NATS credentials file", &c)?)
        } else if let Some(n) = nkey {
            Auth::NkeyFile(existing_file("NATS nkey seed file", &n)?)
        } else if let Some(u) = user {
            let p = password.ok_or_else(|| {
                Error::config(format!(
                    "NATS user {u:?} for {} has no password: set nats_password or NATS_PASSWORD",
                    t.name
                ))
            })?;
            Auth::UserPassword(u, p)
        } else if let Some(tok) = token {
            Auth::Token(tok)
        } else {
            Auth::None
        };

        let tls_required = match o.tls.or(from_url.tls) {
            Some(v) => v,
            None => first_env(env, &["NATS_TLS"])
                .map(|(_, v)| parse_bool("NATS_TLS", &v))
                .transpose()?
                .unwrap_or(false),
        };
        let ca = pick(&o.tls_ca, &from_url.tls_ca, "NATS_CA")
            .map(|p| existing_file("TLS CA file", &p))
            .transpose()?;
        let cert = pick(&o.tls_cert, &from_url.tls_cert, "NATS_CERT");
        let key = pick(&o.tls_key, &from_url.tls_key, "NATS_KEY");
        let client_cert = match (cert, key) {
            (Some(c), Some(k)) => Some((
                existing_file("TLS client certificate", &c)?,
                existing_file("TLS client key", &k)?,
            )),
            (None, None) => None,
            _ => {
                return Err(Error::config(format!(
                    "{}: a TLS client certificate needs both nats_tls_cert and nats_tls_key",
                    t.name
                )))
            }
        };
        let tls = Tls {
            // A CA or a client certificate only makes sense over TLS: insist on it.
            required: tls_required || ca.is_some() || client_cert.is_some(),
            ca,
            client_cert,
        };

        Ok(Settings {
            servers,
            bucket: bucket.to_string(),
            layout,
            auth,
            tls,
            chunk_size: o.chunk_size.or(from_url.chunk_size).unwrap_or(DEFAULT_CHUNK_SIZE),
            name: redactor.clean(&t.name),
            redactor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse_with(url: &str, opts: &StoreOptions, env: &[(&str, &str)]) -> Result<Settings> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::parse(&Target::parse(url)?, opts, &|k| env.get(k).cloned())
    }

    fn parse(url: &str) -> Result<Settings> {
        parse_with(url, &StoreOptions::default(), &[])
    }

    #[test]
    fn host_port_bucket_and_path() {
        let s = parse("nats://127.0.0.1:4333/backups/app/db").unwrap();
        assert_eq!(s.servers, "nats://127.0.0.1:4333");
        assert_eq!(s.bucket, "backups");
        assert_eq!(
            s.layout.key(0, 1, 2).as_ref(),
            "app/db/ltx/0/0000000000000001-0000000000000002.ltx"
        );
        assert_eq!(s.auth, Auth::None);
        assert!(!s.tls.required);
        let s = parse("nats://nats.internal/litestream").unwrap();
        assert_eq!(s.servers, "nats://nats.internal:4222");
        // No path: Litestream's own layout, `ltx/<level>/<name>` at the bucket root.
        assert_eq!(
            s.layout.key(9, 1, 1).as_ref(),
            "ltx/9/0000000000000001-0000000000000001.ltx"
        );
    }

    #[test]
    fn empty_host_uses_nats_url() {
        let s = parse_with(
            "nats:///b",
            &StoreOptions::default(),
            &[("NATS_URL", "nats://10.1.2.3:4555")],
        )
        .unwrap();
        assert_eq!(s.servers, "nats://10.1.2.3:4555");
        assert_eq!(parse("nats:///b").unwrap().servers, "nats://127.0.0.1:4222");
    }

    #[test]
    fn bad_buckets_are_config_errors() {
        for url in ["nats://h:4222", "nats://h:4222/", "nats://h/a.b", "nats://h/a*"] {
            assert!(matches!(parse(url), Err(Error::Config(_))), "{url}");
        }
        assert!(matches!(parse("nats://h/b?region=x"), Err(Error::Config(_))));
    }

    #[test]
    fn userinfo_is_user_password_or_token_and_never_printed() {
        let s = parse("nats://alice:pa%40ss@h/b").unwrap();
        assert_eq!(s.auth, Auth::UserPassword("alice".into(), "pa@ss".into()));
        assert!(!s.name.contains("pa%40ss") && !s.name.contains("pa@ss"), "{}", s.name);
        let s = parse("nats://s3cr3t-token@h/b").unwrap();
        assert_eq!(s.auth, Auth::Token("s3cr3t-token".into()));
        assert!(!s.name.contains("s3cr3t-token"), "{}", s.name);
        let s = parse("nats://h/b?nats_token=qu3ry-token").unwrap();
        assert_eq!(s.auth, Auth::Token("qu3ry-token".into()));
        assert!(!s.name.contains("qu3ry-token"), "{}", s.name);
    }

    #[test]
    fn options_then_url_then_environment() {
        let mut o = StoreOptions::default();
        let env = [
            ("NATS_USER", "env-user"),
            ("NATS_PASSWORD", "env-pass"),
            ("NATS_TOKEN", "env-token"),
        ];
        let s = parse_with("nats://h/b", &o, &env).unwrap();
        assert_eq!(s.auth, Auth::UserPassword("env-user".into(), "env-pass".into()));
        o.nats.user = Some("opt-user".into());
        o.nats.password = Some("opt-pass".into());
        let s = parse_with("nats://url-user:url-pass@h/b", &o, &env).unwrap();
        assert_eq!(s.auth, Auth::UserPassword("opt-user".into(), "opt-pass".into()));
        let s = parse_with("nats://h/b", &StoreOptions::default(), &[("NATS_TOKEN", "env-token")]).unwrap();
        assert_eq!(s.auth, Auth::Token("env-token".into()));
        let err = parse_with("nats://h/b", &StoreOptions::default(), &[("NATS_USER", "u")]).unwrap_err();
        assert!(err.to_string().contains("no password"), "{err}");
    }

    #[test]
    fn files_must_exist_and_tls_files_require_tls() {
        let err = parse("nats://h/b?nats_creds=/nonexistent/user.creds").unwrap_err();
        assert!(
            matches!(err, Error::Config(_)) && err.to_string().contains("user.creds"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "pem").unwrap();
        let s = parse(&format!("nats://h/b?nats_tls_ca={}", ca.display())).unwrap();
        assert!(s.tls.required);
        assert_eq!(s.tls.ca.as_deref(), Some(ca.as_path()));
        let err = parse(&format!("nats://h/b?nats_tls_cert={}", ca.display())).unwrap_err();
        assert!(err.to_string().contains("nats_tls_key"), "{err}");
        let s = parse("nats://h/b?nats_tls=true").unwrap();
        assert!(s.tls.required && s.tls.ca.is_none());
        assert_eq!(s.chunk_size, 128 * 1024);
        assert_eq!(parse("nats://h/b?nats_chunk_size=16k").unwrap().chunk_size, 16 * 1024);
    }
}
