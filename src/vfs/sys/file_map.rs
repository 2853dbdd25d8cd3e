//! Read-only mappings of files nothing changes any more (`primary::level_cache::file_bytes`:
//! staged files and merge outputs on their way to a PUT).
//!
//! memmap2's `Mmap::map` is `unsafe` because a mapped file truncated (SIGBUS) or written
//! (bytes changing under a `&[u8]`) while mapped is undefined behaviour; no type can
//! promise that, so [`map_unchanging`] is safe on the caller's word, given in its docs.

use memmap2::Mmap;
use std::fs::File;
use std::io;

/// The bytes of `file`, mapped read-only. Only for a file that no one writes or
/// truncates again while the mapping lives: one this process wrote under a name of its
/// own and closed, which is replaced, if ever, by a new inode (remove and create, or
/// rename), never written in place.
pub fn map_unchanging(file: &File) -> io::Result<Mmap> {
    // SAFETY: the files mapped here are immutable once named: staged files and merge
    // outputs are written under a temp name and renamed, a reseed's `TempOutput` is
    // written and closed before it is mapped, and nothing opens them for writing again:
    // `Staging::stage`, `LevelCache::write` and `FileModes::create_file` remove any old
    // file and create a new inode, `adopt` renames, removal and `prune` unlink, all of
    // which leave a mapping whole. Only the process that holds the database's leader
    // lock writes them. (`file_bytes` is the one caller.)
    unsafe { Mmap::map(file) }
}
