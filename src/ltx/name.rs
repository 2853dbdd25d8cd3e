//! File names (`%016x-%016x.ltx`) and the replica key layouts.
//!
//! Names come back from LIST calls on storage we do not control, so parsing is strict:
//! exactly 16 lowercase hex digits, a dash, 16 more, `.ltx`; nothing else (no path
//! separators, no `..`, no uppercase, no signs) gets through.

use super::error::{Error, Result};

/// Length of a file name: 16 + 1 + 16 + 4.
pub const NAME_LEN: usize = 37;

/// Formats the name of the file covering `min_txid..=max_txid`.
pub fn format_name(min_txid: u64, max_txid: u64) -> String {
    format!("{min_txid:016x}-{max_txid:016x}.ltx")
}

fn parse_hex16(s: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

/// Parses a file name into `(min_txid, max_txid)`; requires `1 <= min <= max`.
pub fn parse_name(name: &str) -> Result<(u64, u64)> {
    let b = name.as_bytes();
    let bad = || Error::BadFileName(name.to_string());
    if b.len() != NAME_LEN || b[16] != b'-' || &b[33..] != b".ltx" {
        return Err(bad());
    }
    let min = parse_hex16(&b[..16]).ok_or_else(bad)?;
    let max = parse_hex16(&b[17..33]).ok_or_else(bad)?;
    if min == 0 || min > max {
        return Err(bad());
    }
    Ok((min, max))
}

/// How a replica lays out its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyLayout {
    /// `ltx/<level in decimal>/<name>`: file, gcs, azure, nats, sftp, webdav replicas.
    Ltx,
    /// `<level as %04x>/<name>`: S3 and S3-compatible replicas.
    S3,
}

/// A compaction level: 0 = raw per-sync files, 1..=8 = compactions, 9 = snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Level(u8);

impl Level {
    /// Level 0: one file per sync.
    pub const L0: Level = Level(0);
    /// The snapshot level (9).
    pub const SNAPSHOT: Level = Level(9);
    /// Highest level.
    pub const MAX: u8 = 9;

    /// A level in `0..=9`.
    pub fn new(level: u8) -> Result<Level> {
        if level <= Self::MAX {
            Ok(Level(level))
        } else {
            Err(Error::BadFileName(format!("level {level}")))
        }
    }

    /// The level number.
    pub fn get(self) -> u8 {
        self.0
    }

    /// True for the snapshot level.
    pub fn is_snapshot(self) -> bool {
        self == Self::SNAPSHOT
    }

    /// The directory of this level relative to the replica path (no trailing slash).
    pub fn dir(self, layout: KeyLayout) -> String {
        match layout {
            KeyLayout::Ltx => format!("ltx/{}", self.0),
            KeyLayout::S3 => format!("{:04x}", self.0),
        }
    }

    /// The key of a file relative to the replica path.
    pub fn key(self, layout: KeyLayout, min_txid: u64, max_txid: u64) -> String {
        format!("{}/{}", self.dir(layout), format_name(min_txid, max_txid))
    }

    /// Parses a level directory component (`"3"` for [`KeyLayout::Ltx`], `"0003"` for
    /// [`KeyLayout::S3`]); exact spelling only.
    pub fn parse_dir(layout: KeyLayout, s: &str) -> Result<Level> {
        let bad = || Error::BadFileName(s.to_string());
        let digits = match layout {
            KeyLayout::Ltx if s.len() == 1 => s,
            KeyLayout::S3 if s.len() == 4 && s.starts_with("000") => &s[3..],
            _ => return Err(bad()),
        };
        match digits.as_bytes()[0] {
            c @ b'0'..=b'9' => Level::new(c - b'0'),
            _ => Err(bad()),
        }
    }
}

/// Parses a key relative to the replica path (`ltx/3/<name>` or `0003/<name>`) into
/// `(level, min_txid, max_txid)`.
pub fn parse_key(layout: KeyLayout, key: &str) -> Result<(Level, u64, u64)> {
    let bad = || Error::BadFileName(key.to_string());
    let rest = match layout {
        KeyLayout::Ltx => key.strip_prefix("ltx/").ok_or_else(bad)?,
        KeyLayout::S3 => key,
    };
    let (dir, name) = rest.split_once('/').ok_or_else(bad)?;
    let level = Level::parse_dir(layout, dir).map_err(|_| bad())?;
    let (min, max) = parse_name(name)?;
    Ok((level, min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(format_name(1, 1000), "0000000000000001-00000000000003e8.ltx");
        for (a, b) in [(1, 1), (1, 1000), (5, u64::MAX), (u64::MAX, u64::MAX)] {
            assert_eq!(parse_name(&format_name(a, b)).unwrap(), (a, b));
        }
    }

    #[test]
    fn names_rejected() {
        for s in [
            "",
            "0000000000000001-00000000000003E8.ltx",
            "0000000000000001-00000000000003e8.LTX",
            "0000000000000001_00000000000003e8.ltx",
            "0000000000000001-00000000000003e8.ltx.tmp",
            "000000000000001-00000000000003e8.ltx",
            "0000000000000002-0000000000000001.ltx",
            "0000000000000000-0000000000000001.ltx",
            "../000000000001-00000000000003e8.ltx",
            "0000000000000001-000000000003e8/..ltx",
            "+000000000000001-00000000000003e8.ltx",
            " 000000000000001-00000000000003e8.ltx",
            "０000000000000001-00000000000003e8.ltx",
        ] {
            assert!(matches!(parse_name(s), Err(Error::BadFileName(_))), "{s:?}");
        }
    }

    #[test]
    fn levels_and_keys() {
        assert!(Level::new(10).is_err());
        let l3 = Level::new(3).unwrap();
        assert_eq!(
            l3.key(KeyLayout::Ltx, 1, 2),
            "ltx/3/0000000000000001-0000000000000002.ltx"
        );
        assert_eq!(
            Level::SNAPSHOT.key(KeyLayout::S3, 1, 0x3e8),
            "0009/0000000000000001-00000000000003e8.ltx"
        );
        for layout in [KeyLayout::Ltx, KeyLayout::S3] {
            for l in 0..=9 {
                let lv = Level::new(l).unwrap();
                let k = lv.key(layout, 7, 9);
                assert_eq!(parse_key(layout, &k).unwrap(), (lv, 7, 9));
                assert_eq!(
                    Level::parse_dir(layout, lv.dir(layout).rsplit('/').next().unwrap()).unwrap(),
                    lv
                );
            }
        }
        for (layout, k) in [
            (KeyLayout::Ltx, "ltx/10/0000000000000001-0000000000000002.ltx"),
            (KeyLayout::Ltx, "ltx/a/0000000000000001-0000000000000002.ltx"),
            (KeyLayout::Ltx, "0003/0000000000000001-0000000000000002.ltx"),
            (KeyLayout::Ltx, "ltx/3/x/0000000000000001-0000000000000002.ltx"),
            (KeyLayout::S3, "000a/0000000000000001-0000000000000002.ltx"),
            (KeyLayout::S3, "3/0000000000000001-0000000000000002.ltx"),
            (KeyLayout::S3, "0003/../0000000000000001-0000000000000002.ltx"),
        ] {
            assert!(parse_key(layout, k).is_err(), "{k}");
        }
        assert!(Level::SNAPSHOT.is_snapshot());
        assert_eq!(Level::L0.get(), 0);
    }
}
