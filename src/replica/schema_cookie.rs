//! The schema cookie a replica connection is served (page 1, offset 40).
//!
//! SQLite reloads a connection's schema only when the cookie it reads differs from the
//! one it cached when it last loaded the schema. A replica cannot take the stored cookie
//! on trust: snapshots written through the backup API before the primary kept the
//! database's own cookie all stored cookie 1 whatever the database's was (so the empty
//! database's first snapshot and its first CREATE TABLE both read 1, and the replica
//! never saw the table), and a point-in-time view can move to any state of the history,
//! another generation's included, where equal cookies need not mean equal schemas.
//!
//! Each connection therefore maps what identifies a schema, the stored cookie and a
//! fingerprint of the rest of page 1 (the root of `sqlite_master` and the header fields
//! a schema change writes), to the cookie it serves: the stored one when this connection
//! has not served that value for another schema, else a value it has never served. A
//! schema change is then always a cookie change, and a return to a schema already seen
//! serves that schema's cookie again (no needless reload). Page 1 also changes when the
//! database grows or its freelist moves; those header bytes are left out of the
//! fingerprint so that ordinary commits do not reload the schema.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::Hasher;

/// Offset of the schema cookie in page 1.
pub const COOKIE_OFFSET: usize = 40;

/// What identifies a schema: the stored cookie and the fingerprint of page 1.
type SchemaKey = (u32, u64);

/// Per-connection map from schema identity to served cookie.
#[derive(Debug, Default)]
pub struct SchemaCookies {
    served: HashMap<SchemaKey, u32>,
    used: HashSet<u32>,
}

impl SchemaCookies {
    /// The cookie to serve for a state whose page 1 (as read, at least 100 bytes) is
    /// `page1`.
    pub fn serve(&mut self, page1: &[u8]) -> u32 {
        let stored = u32::from_be_bytes(page1[COOKIE_OFFSET..COOKIE_OFFSET + 4].try_into().expect("4 bytes"));
        let key = (stored, fingerprint(page1));
        if let Some(&cookie) = self.served.get(&key) {
            return cookie;
        }
        let mut cookie = stored;
        while self.used.contains(&cookie) {
            cookie = cookie.wrapping_add(1);
        }
        self.used.insert(cookie);
        self.served.insert(key, cookie);
        if cookie != stored {
            tracing::debug!(
                stored,
                served = cookie,
                "replica schema differs from one with the same stored cookie"
            );
        }
        cookie
    }
}

/// Hash of page 1 without the bytes that change when no schema does: change counter,
/// size in pages, freelist trunk and count (24..40), the cookie itself (40..44, keyed
/// separately), user version (60..64), application id (68..72), and version-valid-for
/// and the writer's SQLite version (92..100).
fn fingerprint(page1: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    for range in [0..24, 44..60, 64..68, 72..92, 100..page1.len().max(100)] {
        h.write(&page1[range]);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(cookie: u32, schema: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        p[..16].copy_from_slice(b"SQLite format 3\0");
        p[COOKIE_OFFSET..COOKIE_OFFSET + 4].copy_from_slice(&cookie.to_be_bytes());
        p[100..100 + schema.len()].copy_from_slice(schema);
        p
    }

    #[test]
    fn a_new_schema_with_the_stored_cookie_of_the_last_is_served_a_new_cookie() {
        let mut c = SchemaCookies::default();
        // The backup-made first snapshot of an empty database, then its first table.
        assert_eq!(c.serve(&page(1, b"")), 1);
        let with_table = c.serve(&page(1, b"CREATE TABLE u(y)"));
        assert_ne!(with_table, 1);
        assert_eq!(c.serve(&page(1, b"CREATE TABLE u(y)")), with_table);
    }

    #[test]
    fn the_stored_cookie_is_served_while_it_tells_schemas_apart() {
        let mut c = SchemaCookies::default();
        assert_eq!(c.serve(&page(0, b"")), 0);
        assert_eq!(c.serve(&page(1, b"t")), 1);
        assert_eq!(c.serve(&page(2, b"t u")), 2);
        // Growth and freelist bytes are not the schema.
        let mut grown = page(2, b"t u");
        grown[24..40].fill(7);
        grown[92..100].fill(9);
        grown[60..64].fill(3); // user_version
        assert_eq!(c.serve(&grown), 2);
        // Back in time: the schema seen before gets its cookie again.
        assert_eq!(c.serve(&page(1, b"t")), 1);
    }

    #[test]
    fn a_served_cookie_is_never_served_for_another_schema() {
        let mut c = SchemaCookies::default();
        let a = c.serve(&page(5, b"a"));
        let b = c.serve(&page(6, b"b"));
        let other = c.serve(&page(5, b"c"));
        let next = c.serve(&page(7, b"d"));
        let all = [a, b, other, next];
        let distinct: HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 4, "{all:?}");
    }
}
