//! Reading committed frames back from the file, checksums verified: where capture
//! attached late, where another process committed, and where a restart or takeover
//! resumes from a saved position.

use super::{frame_reader, read_header, Capture, CapturedTxn, Discontinuity, PageBuf, WalPosition, WalSource};
use crate::wal::{scan_committed, walk_frames, FrameHeader, WalHeader, FRAME_HEADER_SIZE};
use std::collections::BTreeMap;
use std::io;

impl Capture {
    /// Positions capture after the last valid commit in the WAL without returning the
    /// transactions: used when a snapshot already contains them. With no WAL (or no
    /// valid header) the generation counts as ended: whatever comes next must be proven
    /// to start afresh (`follow.rs`). Reads one frame at a time, never the WAL whole.
    pub fn skip_to_end(&mut self, wal: &mut dyn WalSource) -> io::Result<()> {
        self.drop_pending();
        let header = read_header(wal)?;
        self.database_left = None;
        self.commits_left = None;
        self.next_frame = 0;
        self.ended = header.is_none();
        self.header = header;
        if let Some(header) = header {
            self.chain = header.checksum;
            let last = walk_frames(&header, 0, header.checksum, frame_reader(&header, wal), |_, _, _, _| {
                true
            });
            if let Some((frame, sum)) = last {
                self.next_frame = frame + 1;
                self.chain = sum;
            }
        }
        Ok(())
    }

    /// True when the live WAL still holds our position: frame `next_frame - 1` is in
    /// our generation and its running checksum is ours. A chain of zeros (a position
    /// taken between a commit written with deferred checksums and their rewrite) is
    /// first repaired from the file.
    pub fn verify_position(&mut self, wal: &mut dyn WalSource) -> io::Result<bool> {
        let Some(header) = self.header.filter(|_| !self.ended) else {
            return Ok(false);
        };
        if self.next_frame == 0 {
            return Ok(self.chain == header.checksum);
        }
        if self.chain == (0, 0) {
            let target = self.next_frame - 1;
            let mut at_target = None;
            walk_frames(
                &header,
                0,
                header.checksum,
                frame_reader(&header, wal),
                |index, fh, _, sum| {
                    if index == target && fh.is_commit() {
                        at_target = Some(sum);
                    }
                    index < target
                },
            );
            match at_target {
                Some(sum) => self.chain = sum,
                None => return Ok(false),
            }
        }
        self.frame_ends_chain(self.next_frame - 1, self.chain, wal)
    }

    /// Whether the live WAL holds a commit after capture's position: `None` when the
    /// position cannot answer (another generation in the file, its last frame gone, a
    /// chain not known yet) and the caller must walk the WAL from its start. Reads from
    /// the position on: usually one frame, where walking from the start reads them all.
    pub fn commits_after(&self, live: &mut dyn WalSource) -> io::Result<Option<bool>> {
        let Some(header) = self.header.filter(|_| !self.ended && self.chain != (0, 0)) else {
            return Ok(None);
        };
        if read_header(live)? != Some(header) {
            return Ok(None);
        }
        if self.next_frame > 0 && !self.frame_ends_chain(self.next_frame - 1, self.chain, live)? {
            return Ok(None);
        }
        let last = walk_frames(
            &header,
            self.next_frame,
            self.chain,
            frame_reader(&header, live),
            |_, _, _, _| true,
        );
        Ok(Some(last.is_some()))
    }

    /// Reads the commits after our position from `wal`, a source holding the current
    /// generation's frames (the live WAL or a hand-off), verified against the chain.
    /// Whether the source was read to its end shows in [`Capture::next_frame`].
    ///
    /// Reads nothing while a transaction of this process is writing frames from our
    /// position on: its writer holds the write lock, so nobody else can have committed
    /// after us, and capture gets those frames from the writes themselves. An engine turn
    /// that read the file between the write of a commit frame and its `on_write` took the
    /// transaction from the file, and the write that followed looked like a commit written
    /// over a captured frame: a needless snapshot (seen in bench-threads and
    /// bench_idle_memory.py, a few per run).
    pub fn scan_live(&mut self, wal: &mut dyn WalSource) -> Vec<CapturedTxn> {
        if self.ended || self.pending_frame(self.next_frame).is_some() {
            return Vec::new();
        }
        self.scan_from_file(wal)
    }

    /// Resumes from a persisted position: returns the transactions committed in the
    /// WAL since then, or a [`Discontinuity`] when the WAL no longer continues it.
    pub fn resume(
        &mut self,
        from: WalPosition,
        wal: &mut dyn WalSource,
    ) -> io::Result<Result<Vec<CapturedTxn>, Discontinuity>> {
        self.drop_pending();
        let header = read_header(wal)?;
        let Some(header) = header else {
            self.header = None;
            self.next_frame = 0;
            self.ended = true;
            return Ok(Err(Discontinuity("the WAL is gone or empty".into())));
        };
        if (header.salt1, header.salt2, header.page_size) != (from.salt1, from.salt2, from.page_size) {
            self.header = Some(header);
            self.next_frame = 0;
            self.chain = header.checksum;
            self.ended = false;
            return Ok(Err(Discontinuity(
                "the WAL was restarted since the last capture".into(),
            )));
        }
        self.header = Some(header);
        self.next_frame = from.next_frame;
        self.chain = from.checksum;
        self.ended = false;
        if from.next_frame > 0 && !self.frame_ends_chain(from.next_frame - 1, from.checksum, wal)? {
            return Ok(Err(Discontinuity(
                "the WAL no longer holds the last captured frame".into(),
            )));
        }
        Ok(Ok(self.scan_from_file(wal)))
    }

    pub(super) fn scan_from_file(&mut self, wal: &mut dyn WalSource) -> Vec<CapturedTxn> {
        match self.header {
            Some(header) => self.scan_frames_with(header, wal),
            None => Vec::new(),
        }
    }

    /// Reads committed transactions after our position from the file.
    pub(super) fn scan_frames_with(&mut self, header: WalHeader, wal: &mut dyn WalSource) -> Vec<CapturedTxn> {
        let start = self.next_frame;
        let commits = scan_committed(&header, start, self.chain, frame_reader(&header, wal));
        let mut out = Vec::with_capacity(commits.len());
        let mut first = start;
        for commit in commits {
            let mut latest: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
            for (pgno, page) in commit.pages {
                latest.insert(pgno, page);
            }
            self.next_frame = commit.commit_frame + 1;
            self.chain = commit.checksum;
            out.push(CapturedTxn {
                page_size: header.page_size,
                commit: commit.commit,
                pages: latest
                    .into_iter()
                    .filter(|(pgno, _)| *pgno <= commit.commit)
                    .map(|(pgno, page)| (pgno, PageBuf::copy_of(&page)))
                    .collect(),
                wal_offset: header.frame_offset(first),
                wal_size: (commit.commit_frame + 1 - first) * header.frame_size(),
                position: WalPosition {
                    salt1: header.salt1,
                    salt2: header.salt2,
                    page_size: header.page_size,
                    next_frame: self.next_frame,
                    checksum: self.chain,
                    ended: false,
                },
            });
            first = self.next_frame;
        }
        self.rebase_pending(start);
        out
    }

    /// True when frame `index` in the file is valid and its running checksum is `sum`.
    fn frame_ends_chain(&self, index: u64, sum: (u32, u32), wal: &mut dyn WalSource) -> io::Result<bool> {
        let header = self.header.expect("header known");
        let mut raw = [0u8; FRAME_HEADER_SIZE];
        if !wal.read_exact_at(header.frame_offset(index), &mut raw)? {
            return Ok(false);
        }
        let fh = FrameHeader::parse(&raw);
        Ok(fh.salt1 == header.salt1 && fh.salt2 == header.salt2 && fh.checksum == sum)
    }
}
