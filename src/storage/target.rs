//! A replica URL taken apart, plus the environment it is resolved against.

use super::error::{misread_userinfo, redact_url, Error, Result};

/// Reads an environment variable; injectable so tests need not touch the process env.
pub type EnvFn<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The first of `names` set to a non-empty value, with the name that supplied it.
pub(crate) fn first_env(env: EnvFn<'_>, names: &[&'static str]) -> Option<(&'static str, String)> {
    names
        .iter()
        .find_map(|n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)))
}

/// Query parameters of a replica URL, in order.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// The value of the first of `names` present (names are alternative spellings).
    pub(crate) fn get(&self, names: &[&str]) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| v.as_str())
    }

    /// Fails on the first parameter that is not in `known`, naming the accepted ones.
    pub(crate) fn check_known(&self, scheme: &str, known: &[&str], url: &str) -> Result<()> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some((k, _)) if known.is_empty() => Err(Error::config(format!(
                "unknown parameter {k:?} in replica URL {url}: {scheme}:// URLs take no parameters"
            ))),
            Some((k, _)) => Err(Error::config(format!(
                "unknown parameter {k:?} in replica URL {url}; {scheme}:// accepts: {}",
                known.join(", ")
            ))),
        }
    }
}

/// A parsed replica URL.
#[derive(Debug)]
pub(crate) struct Target {
    /// The URL with secrets removed, used in every message about this store.
    pub name: String,
    pub scheme: String,
    /// Bucket / container / memory store name.
    pub host: String,
    /// `account` in `abs://account@container/path`.
    pub user: Option<String>,
    pub has_password: bool,
    /// Path inside the bucket, percent-decoded, no leading '/'.
    pub path: String,
    pub params: Params,
    pub url: url::Url,
}

impl Target {
    pub(crate) fn parse(raw: &str) -> Result<Self> {
        let name = redact_url(raw);
        let url = url::Url::parse(raw.trim()).map_err(|e| match e {
            url::ParseError::RelativeUrlWithoutBase => Error::config(format!(
                "replica URL {name:?} has no scheme; use file:///path, s3://bucket/path, gs://bucket/path, \
                 abs://container/path or memory://name"
            )),
            e => Error::config(format!(
                "replica URL {name:?} is not a valid URL: {e}{}",
                userinfo_hint(raw)
            )),
        })?;
        let path = percent_decode(url.path()).ok_or_else(|| {
            Error::config(format!(
                "replica URL {name:?} has a path that is not valid percent-encoded UTF-8"
            ))
        })?;
        let params = Params(
            url.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        );
        let user = Some(url.username()).filter(|u| !u.is_empty()).and_then(percent_decode);
        Ok(Target {
            scheme: url.scheme().to_ascii_lowercase(),
            host: url.host_str().unwrap_or("").to_string(),
            user,
            has_password: url.password().is_some(),
            path: path.trim_start_matches('/').to_string(),
            params,
            name,
            url,
        })
    }

    pub(crate) fn no_credentials_in_url(&self, hint: &str) -> Result<()> {
        if self.has_password {
            return Err(Error::config(format!(
                "replica URL {} carries a password; credentials do not belong in URLs: {hint}",
                self.name
            )));
        }
        Ok(())
    }
}

/// What is probably wrong with a URL that does not parse and has an `@` after `://`: a
/// password holding `/`, `#`, `?` or `@` unencoded. The parser's own word for it ("invalid
/// port number": the password read as a port) sent people looking at ports (a security
/// tester).
fn userinfo_hint(raw: &str) -> &'static str {
    match misread_userinfo(raw) {
        Some(_) => {
            "; if the part before its last '@' is a user name and password, a '/', '#', '?' or '@' in the \
             password must be percent-encoded (%2F, %23, %3F, %40); only nats:// takes credentials in the URL"
        }
        None => "",
    }
}

/// `%XX` decoding (Go's `url.URL.Path` is decoded; the `url` crate keeps it encoded).
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_url() {
        let t = Target::parse("s3://my-bucket/some%20dir/db?endpoint=http://127.0.0.1:9000&region=x").unwrap();
        assert_eq!(
            (t.scheme.as_str(), t.host.as_str(), t.path.as_str()),
            ("s3", "my-bucket", "some dir/db")
        );
        assert_eq!(t.params.get(&["region"]), Some("x"));
        assert_eq!(t.params.get(&["endpoint"]), Some("http://127.0.0.1:9000"));
        let t = Target::parse("abs://acct@container/p").unwrap();
        assert_eq!(t.user.as_deref(), Some("acct"));
    }

    #[test]
    fn a_url_that_does_not_parse_is_shown_without_its_password_and_says_to_percent_encode_it() {
        for raw in [
            "s3://AKID:CanarySecret/withslash@bucket/app",
            "nats://u:CanaryPw@127.0.0.1:99999/b",
        ] {
            let e = Target::parse(raw).unwrap_err().to_string();
            assert!(!e.contains("Canary"), "{e}");
            assert!(
                e.contains("<redacted>@") && e.contains("must be percent-encoded (%2F, %23, %3F, %40)"),
                "{e}"
            );
        }
        // A URL that does not parse for another reason gets no such advice.
        let e = Target::parse("s3://bucket:99999/app").unwrap_err().to_string();
        assert!(
            e.contains("invalid port number") && !e.contains("percent-encoded"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_parameter_is_named_without_its_secret_value() {
        let key = "c96e91ea09c8ac8316a728ada796e7d579b28c2cc3c06ea8c350238b04c4203b";
        let t = Target::parse(&format!("file:///tmp/rep?encryption_key={key}")).unwrap();
        let e = t.params.check_known("file", &[], &t.name).unwrap_err().to_string();
        assert!(e.contains("\"encryption_key\"") && !e.contains(key), "{e}");
    }

    #[test]
    fn no_scheme_is_a_clear_error() {
        let e = Target::parse("/var/lib/db").unwrap_err();
        assert!(e.to_string().contains("no scheme"), "{e}");
    }
}
