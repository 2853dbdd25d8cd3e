//! Where each LTX file lives in a bucket, exactly as Litestream 0.5 lays it out.
//!
//! - file, gcs, azure (and nats, sftp, webdav): `<path>/ltx/<level decimal>/<name>`
//!   (`litestream.LTXFilePath` = `path.Join(root, "ltx", strconv.Itoa(level), name)`).
//! - s3 and s3-compatible: `<path>/<level %04x>/<name>`, e.g. `db/0000/…`, `db/0009/…`
//!   (`s3.ReplicaClient.WriteLTXFile` builds `c.Path + "/" + fmt.Sprintf("%04x/%s", ...)`).

use object_store::path::Path;

use super::error::{Error, Result};
use super::name::format_name;

/// How a level becomes a directory name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelStyle {
    /// `ltx/<level decimal>`: file, gcs, azure, memory.
    LtxDecimal,
    /// `<level %04x>`: s3.
    S3Hex,
}

/// The key layout of one replica: a base path inside the store plus a level style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    base: Path,
    style: LevelStyle,
}

impl Layout {
    /// A layout rooted at `base` (already a valid object_store path).
    pub fn new(base: Path, style: LevelStyle) -> Self {
        Layout { base, style }
    }

    /// A layout rooted at a user-supplied path such as `db` or `/backups//app/`.
    ///
    /// Empty segments are dropped, as Go's `path.Clean` does. `.` and `..` segments and control
    /// characters are configuration errors rather than something to resolve: a replica path
    /// should name one place unambiguously.
    pub fn from_user_path(raw: &str, style: LevelStyle) -> Result<Self> {
        let parts: Vec<&str> = raw.split('/').filter(|s| !s.is_empty()).collect();
        if let Some(bad) = parts.iter().find(|s| **s == "." || **s == "..") {
            return Err(Error::config(format!(
                "replica path {raw:?} contains a {bad:?} segment"
            )));
        }
        let base = Path::parse(parts.join("/"))
            .map_err(|e| Error::config(format!("replica path {raw:?} is not a valid object key prefix: {e}")))?;
        Ok(Layout { base, style })
    }

    /// The level style of this layout.
    pub fn style(&self) -> LevelStyle {
        self.style
    }

    /// The base path under which the levels live.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The directory holding the files of one level.
    pub fn level_dir(&self, level: u8) -> Path {
        match self.style {
            LevelStyle::LtxDecimal => self.base.child("ltx").child(level.to_string()),
            LevelStyle::S3Hex => self.base.child(format!("{level:04x}")),
        }
    }

    /// The key of one LTX file.
    pub fn key(&self, level: u8, min_txid: u64, max_txid: u64) -> Path {
        self.level_dir(level).child(format_name(min_txid, max_txid))
    }

    /// The key of an object that is not an LTX file, directly under the base path (the
    /// fencing probe's markers): outside every level directory, so no listing of ours or
    /// Litestream's ever sees it.
    pub fn marker(&self, name: &str) -> Path {
        self.base.child(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_uses_hex_level_without_ltx_dir() {
        let l = Layout::from_user_path("db", LevelStyle::S3Hex).unwrap();
        assert_eq!(l.key(0, 1, 1).as_ref(), "db/0000/0000000000000001-0000000000000001.ltx");
        assert_eq!(
            l.key(9, 1, 0x3e8).as_ref(),
            "db/0009/0000000000000001-00000000000003e8.ltx"
        );
        assert_eq!(l.level_dir(10).as_ref(), "db/000a");
        assert_eq!(l.marker(".probe").as_ref(), "db/.probe");
    }

    #[test]
    fn others_use_ltx_decimal() {
        let l = Layout::from_user_path("/a//b/", LevelStyle::LtxDecimal).unwrap();
        assert_eq!(
            l.key(0, 2, 3).as_ref(),
            "a/b/ltx/0/0000000000000002-0000000000000003.ltx"
        );
        assert_eq!(l.level_dir(10).as_ref(), "a/b/ltx/10");
    }

    #[test]
    fn empty_path_is_the_bucket_root() {
        let l = Layout::from_user_path("", LevelStyle::S3Hex).unwrap();
        assert_eq!(l.level_dir(0).as_ref(), "0000");
        assert_eq!(l.marker(".probe").as_ref(), ".probe");
    }

    #[test]
    fn rejects_dot_segments() {
        assert!(matches!(
            Layout::from_user_path("a/../b", LevelStyle::S3Hex),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Layout::from_user_path("./b", LevelStyle::LtxDecimal),
            Err(Error::Config(_))
        ));
    }
}
