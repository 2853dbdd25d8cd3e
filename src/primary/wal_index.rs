//! SQLite's wal-index (`-shm`) as the judge of which WAL frames are committed.
//!
//! A commit frame with a valid checksum is not yet a commit: SQLite counts it only once
//! its writer updated the wal-index header (`mxFrame`). A writer killed between the two
//! leaves a frame that passes every checksum but that SQLite never counted; the next
//! writer puts its own commit in that slot. Capture that took such a frame for committed
//! replicated a row the database never kept (found by multi_process_crash), and within
//! one process an engine turn that read a commit frame before its writer's thread had
//! updated the wal-index saw that writer "overwrite a committed frame" (bench-threads, four
//! threads on one database: a needless snapshot). So capture reads frames that other
//! writers wrote only up to the count the wal-index gives (`CountedWal`), and the count
//! comes from a mapping SQLite already holds (`WalIndexView`): never a descriptor of ours
//! on the `-shm` (closing one would drop SQLite's locks).

use super::capture::WalSource;
use crate::wal::{WalHeader, HEADER_SIZE};
use std::io;
use std::sync::Mutex;

/// The WAL as SQLite's wal-index header describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShmWal {
    /// Salts of the current generation, as the WAL header stores them.
    pub salt1: u32,
    pub salt2: u32,
    /// Frames SQLite counts committed in this generation (0: none yet).
    pub max_frame: u32,
    /// SQLite's count of commits (`iChange`): it grows by one at every commit, in any
    /// generation, and starts again at 0 only when a recovery rebuilds the wal-index.
    pub commits: u32,
}

/// Reads the wal-index header through one live mapping (the VFS layer's; it owns the
/// unsafe part). `None` while a writer is updating it.
pub type HeaderReader = Box<dyn Fn() -> Option<ShmWal> + Send>;

/// The wal-index mappings this process's connections hold for one database, and what
/// they said last.
#[derive(Default)]
pub struct WalIndexView {
    inner: Mutex<Views>,
}

#[derive(Default)]
struct Views {
    /// One reader per connection that mapped region 0, by the VFS's key for it. A reader
    /// is removed (under this mutex) before its mapping goes: a read never outlives it.
    mapped: Vec<(usize, HeaderReader)>,
    /// The last header read, kept when the last mapping went (the last connection
    /// checkpoints, unmaps, then deletes the WAL).
    last: Option<ShmWal>,
    /// While a writer of this process holds the write lock: the header when it took it
    /// (`None` inside when it could not be read). The exact end of the generation while
    /// the lock is held, even after SQLite wrote the next generation's salts into the
    /// wal-index for a restart.
    at_write_lock: Option<Option<ShmWal>>,
}

impl WalIndexView {
    pub fn map(&self, key: usize, reader: HeaderReader) {
        let mut views = self.lock();
        views.mapped.retain(|(k, _)| *k != key);
        views.mapped.push((key, reader));
    }

    /// Forgets the mapping `key` (before it is unmapped); reads the header one last time
    /// through it when it is the last.
    pub fn unmap(&self, key: usize) {
        let mut views = self.lock();
        let Some(at) = views.mapped.iter().position(|(k, _)| *k == key) else {
            return;
        };
        let (_, reader) = views.mapped.remove(at);
        if views.mapped.is_empty() {
            if let Some(header) = reader() {
                views.last = Some(header);
            }
        }
    }

    /// The wal-index header now, through any live mapping.
    pub fn read(&self) -> Option<ShmWal> {
        let mut views = self.lock();
        let header = views.mapped.iter().find_map(|(_, reader)| reader())?;
        views.last = Some(header);
        Some(header)
    }

    /// A writer of this process took the write lock, the wal-index then saying `header`.
    pub fn write_locked(&self, header: Option<ShmWal>) {
        let mut views = self.lock();
        views.at_write_lock = Some(header);
        if header.is_some() {
            views.last = header;
        }
    }

    /// Whether a writer of this process holds the WAL write lock (taken through the VFS).
    pub fn write_lock_held(&self) -> bool {
        self.lock().at_write_lock.is_some()
    }

    pub fn write_unlocked(&self) {
        self.lock().at_write_lock = None;
    }

    /// Runs `f` and returns true unless a writer of this process holds the write lock,
    /// under the mutex `write_locked` takes: a writer that takes the lock afterwards
    /// sees what `f` did.
    pub fn unless_write_locked(&self, f: impl FnOnce()) -> bool {
        let views = self.lock();
        if views.at_write_lock.is_some() {
            return false;
        }
        f();
        true
    }

    /// The header now, else the last one read: a count of frames that were committed,
    /// perhaps fewer than now (within a generation the count only grows), and `fresh`
    /// when read now.
    pub fn counted(&self) -> (Option<ShmWal>, bool) {
        match self.read() {
            Some(now) => (Some(now), true),
            None => (self.lock().last, false),
        }
    }

    /// What counts as committed in a generation this process is about to end (restart,
    /// truncate or delete): the header at the write lock when a writer of this process
    /// holds it (a restart has already put the next salts in the wal-index), else the
    /// header now, else the last one read (the last connection has unmapped already).
    pub fn before_generation_ends(&self) -> Option<ShmWal> {
        if let Some(held) = self.lock().at_write_lock {
            return held;
        }
        self.counted().0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Views> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The live WAL cut at what the wal-index counts committed: frames of the counted
/// generation past `mxFrame` read as the end of the file, and a file whose header is of
/// another generation than the count (a restart on its way) shows no frames at all.
/// The header itself always reads through.
pub struct CountedWal<'a> {
    wal: &'a mut dyn WalSource,
    /// Bytes of the file that may be read (header included).
    readable: u64,
    counted: Option<ShmWal>,
}

impl<'a> CountedWal<'a> {
    /// Frames up to `counted`; none when the count is unknown or names another generation
    /// than the file's. For reads that can wait for a later count (engine turns, a writer
    /// catching up under the write lock): what they miss is read next time.
    pub fn cut(wal: &'a mut dyn WalSource, counted: Option<ShmWal>) -> Self {
        let readable = counted
            .and_then(|counted| Self::counted_end(wal, counted))
            .unwrap_or(HEADER_SIZE as u64);
        CountedWal { wal, readable, counted }
    }

    /// Frames up to `counted` when it names the file's generation, else the file as it
    /// is. For moments that cannot wait: a generation about to end (its last commits are
    /// read now or never; a restart already put the next salts in the wal-index unless
    /// the count was taken at the write lock), a snapshot's position. Without a count
    /// (exclusive locking mode: a heap wal-index, no other writer) the file is the truth.
    pub fn cut_or_whole(wal: &'a mut dyn WalSource, counted: Option<ShmWal>) -> Self {
        let readable = counted
            .and_then(|counted| Self::counted_end(wal, counted))
            .unwrap_or(u64::MAX);
        CountedWal { wal, readable, counted }
    }

    /// Whether the count names another generation than the file's header: a restart
    /// on its way (SQLite puts the next salts in the wal-index before it writes the
    /// header), or one whose writer died in between.
    pub fn counts_another_generation(&mut self) -> bool {
        let Some(counted) = self.counted else {
            return false;
        };
        let mut raw = [0u8; HEADER_SIZE];
        match self.wal.read_exact_at(0, &mut raw) {
            Ok(true) => WalHeader::parse(&raw).is_ok_and(|h| (h.salt1, h.salt2) != (counted.salt1, counted.salt2)),
            _ => false,
        }
    }

    /// The file as it is, past the count: only for checking a frame capture already
    /// holds (by its running checksum), never for reading commits.
    pub fn uncut(&mut self) -> &mut dyn WalSource {
        &mut *self.wal
    }

    /// The file offset where `counted`'s frames end, when the file holds that generation
    /// (a header that cannot be read holds none: the reads that follow fail the same way).
    fn counted_end(wal: &mut dyn WalSource, counted: ShmWal) -> Option<u64> {
        let mut raw = [0u8; HEADER_SIZE];
        if !matches!(wal.read_exact_at(0, &mut raw), Ok(true)) {
            return None;
        }
        match WalHeader::parse(&raw) {
            Ok(h) if (h.salt1, h.salt2) == (counted.salt1, counted.salt2) => {
                Some(h.frame_offset(u64::from(counted.max_frame)))
            }
            _ => None,
        }
    }
}

impl WalSource for CountedWal<'_> {
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        let end = offset.saturating_add(buf.len() as u64);
        if offset >= HEADER_SIZE as u64 && end > self.readable {
            return Ok(false);
        }
        self.wal.read_exact_at(offset, buf)
    }

    /// The count was taken for the file read so far: of another file, nothing past the
    /// header is read (the next look, with a count of its own, reads it).
    fn look_again(&mut self) -> io::Result<bool> {
        let replaced = self.wal.look_again()?;
        if replaced && self.counted.is_some() {
            self.readable = HEADER_SIZE as u64;
            self.counted = None;
        }
        Ok(replaced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primary::capture::Capture;
    use crate::wal::testing::WalBuilder;

    fn counted(salt1: u32, max_frame: u32) -> ShmWal {
        ShmWal {
            salt1,
            salt2: 99,
            max_frame,
            commits: 0,
        }
    }

    #[test]
    fn frames_past_the_counted_end_read_as_the_end_of_the_file() {
        let mut wal = WalBuilder::new(512, 7, 99, false);
        wal.frame(1, 1, 1).frame(2, 2, 2).frame(3, 3, 3);
        let mut file = wal.bytes.clone();
        let mut capture = Capture::new();
        capture
            .skip_to_end(&mut CountedWal::cut(&mut file, Some(counted(7, 2))))
            .unwrap();
        assert_eq!(capture.next_frame(), 2, "the third commit frame is not counted yet");
        capture
            .skip_to_end(&mut CountedWal::cut(&mut file, Some(counted(7, 3))))
            .unwrap();
        assert_eq!(capture.next_frame(), 3);
    }

    #[test]
    fn a_file_of_another_generation_than_the_count_shows_no_frames() {
        let mut wal = WalBuilder::new(512, 7, 99, false);
        wal.frame(1, 1, 1).frame(2, 2, 2);
        let mut file = wal.bytes.clone();
        let mut capture = Capture::new();
        // A restart put salt 8 in the wal-index; the file still holds generation 7.
        capture
            .skip_to_end(&mut CountedWal::cut(&mut file, Some(counted(8, 0))))
            .unwrap();
        assert_eq!(capture.generation(), Some((7, 99)), "the header reads through");
        assert_eq!(capture.next_frame(), 0);
        capture.skip_to_end(&mut CountedWal::cut(&mut file, None)).unwrap();
        assert_eq!(capture.next_frame(), 0, "no count: nothing counted is known");
        capture
            .skip_to_end(&mut CountedWal::cut_or_whole(&mut file, Some(counted(8, 0))))
            .unwrap();
        assert_eq!(capture.next_frame(), 2, "a generation ending now: the file as it is");
        capture
            .skip_to_end(&mut CountedWal::cut_or_whole(&mut file, Some(counted(7, 1))))
            .unwrap();
        assert_eq!(capture.next_frame(), 1, "its own count still cuts it");
    }

    #[test]
    fn the_view_keeps_the_write_lock_header_and_the_last_one_read() {
        let view = WalIndexView::default();
        assert_eq!(view.read(), None);
        let now = std::sync::Arc::new(Mutex::new(Some(counted(7, 5))));
        let shared = now.clone();
        view.map(1, Box::new(move || *shared.lock().unwrap()));
        assert_eq!(view.read(), Some(counted(7, 5)));
        assert_eq!(view.counted(), (Some(counted(7, 5)), true));
        view.write_locked(Some(counted(7, 6)));
        // A restart writes the next salts into the wal-index while the lock is held.
        *now.lock().unwrap() = Some(counted(8, 0));
        assert_eq!(view.before_generation_ends(), Some(counted(7, 6)));
        view.write_unlocked();
        assert_eq!(view.before_generation_ends(), Some(counted(8, 0)));
        *now.lock().unwrap() = Some(counted(8, 3));
        view.unmap(1);
        assert_eq!(view.read(), None, "no mapping left");
        assert_eq!(view.counted(), (Some(counted(8, 3)), false), "stale, but counted");
        assert_eq!(
            view.before_generation_ends(),
            Some(counted(8, 3)),
            "read as the last mapping went"
        );
        view.write_locked(None);
        assert_eq!(
            view.before_generation_ends(),
            None,
            "locked without a count: the file decides"
        );
    }
}
