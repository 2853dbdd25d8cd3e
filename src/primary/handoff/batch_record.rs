//! Batch records: how the replicating process hands off its own commits when it
//! restarts the WAL.
//!
//! A tail copies every committed frame of the generation from the staged position: at
//! each WAL restart (every ~1,000 frames at the default autocheckpoint) that was the
//! whole ~4 MB generation, read back and written again on the writer's thread, a third
//! of a small commit's CPU (issue 15). The replicating process already holds those
//! commits in memory, merged page by page. A batch record writes that merge instead:
//! the pages the generation's commits changed (each once, as of the last commit), how
//! many commits they were, and the WAL positions they lie between. It serves what a
//! tail serves — a restart or a takeover after a crash reads it and gives its commits
//! the same TXIDs — and, like a tail, is not fsynced (see `write_record`).
//!
//! Layout after the common head and the generation's 32-byte header: `pages` entries of
//! a big-endian u32 page number followed by the page, ascending.

use super::{HandoffDir, Meta, HEADER_SIZE, META_ROOM};
use crate::primary::batch::Batch;
use crate::primary::capture::{CapturedTxn, TxnPages, WalPosition};
use crate::primary::page_pool::PageBuf;
use crate::wal::WalHeader;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A batch record's own metadata. Positions are in the record's generation: the frame
/// index and the running checksum after the frame before it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct BatchMeta {
    from_frame: u64,
    from_checksum: (u32, u32),
    to_frame: u64,
    to_checksum: (u32, u32),
    commits: u64,
    /// Database size in pages after the last commit.
    commit: u32,
    pages: u64,
    /// The TXID of the last commit before `from`: the stage whose cut `from` is (or the
    /// record or snapshot it follows) staged everything up to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after_txid: Option<u64>,
}

/// The commits of a generation from `from` to `to`, merged: what the replicating
/// process had captured between those positions when it restarted the WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    pub seq: u64,
    pub path: PathBuf,
    /// The generation the commits were written in.
    pub header: WalHeader,
    pub from: WalPosition,
    pub to: WalPosition,
    pub commits: u64,
    commit: u32,
    pages: u64,
    /// The generation that follows (the restart's new header).
    pub next: Option<WalHeader>,
    /// The TXID of the last commit before `from` (None in a record of an older build).
    pub after_txid: Option<u64>,
}

impl HandoffDir {
    /// Hands off `batch`, the commits captured in the generation whose 32-byte header is
    /// `header` between `from` and `to` (its end), before the restart writes `next`;
    /// `after_txid` is the TXID of the last commit before `from`. Page numbers and pages
    /// go out in one write.
    pub fn write_batch(
        &self,
        header: &[u8],
        (from, after_txid): (WalPosition, u64),
        to: WalPosition,
        next: &[u8],
        batch: &Batch,
    ) -> io::Result<u64> {
        let parsed = WalHeader::parse(&header[..HEADER_SIZE]).map_err(|e| io::Error::other(e.to_string()))?;
        let same_generation = |p: &WalPosition| (p.salt1, p.salt2) == (parsed.salt1, parsed.salt2) && !p.ended;
        if !same_generation(&from) || !same_generation(&to) || to.next_frame < from.next_frame {
            return Err(io::Error::other("a batch record spans one generation"));
        }
        if !batch.is_empty() && batch.page_size() != parsed.page_size {
            return Err(io::Error::other("a batch record holds pages of its generation's size"));
        }
        let pages = batch.sorted_pages();
        let mut body = Vec::with_capacity(HEADER_SIZE + pages.len() * (4 + parsed.page_size as usize));
        body.extend_from_slice(&header[..HEADER_SIZE]);
        for (pgno, page) in &pages {
            body.extend_from_slice(&pgno.to_be_bytes());
            body.extend_from_slice(page);
        }
        let next_header = super::hex(&next[..HEADER_SIZE]);
        self.write_record("batch", |seq, file| {
            file.write_all_at(&body, 12 + META_ROOM as u64)?;
            tracing::debug!(
                seq,
                generation = format!("{:08x}{:08x}", parsed.salt1, parsed.salt2),
                from = from.next_frame,
                to = to.next_frame,
                commits = batch.commits(),
                pages = pages.len(),
                "hand-off: batch"
            );
            Ok(Meta {
                seq,
                start_frame: 0,
                frames: 0,
                next_header: Some(next_header.clone()),
                closed: None,
                batch: Some(BatchMeta {
                    from_frame: from.next_frame,
                    from_checksum: from.checksum,
                    to_frame: to.next_frame,
                    to_checksum: to.checksum,
                    commits: batch.commits(),
                    commit: batch.commit(),
                    pages: pages.len() as u64,
                    after_txid: Some(after_txid),
                }),
            })
        })
    }

    /// The commits of a batch record, as capture would have returned them: as many as
    /// were made, every page in the last (the earlier ones empty, with the final
    /// database size), so that queueing them gives each its TXID and the queue the same
    /// pages as capturing them did.
    pub fn batch_txns(&self, record: &BatchRecord) -> io::Result<Vec<CapturedTxn>> {
        let bytes = crate::file_modes::read(&record.path)?;
        let page_size = record.header.page_size as usize;
        let start = 12 + META_ROOM + HEADER_SIZE;
        let entry = 4 + page_size;
        if bytes.len() != start + record.pages as usize * entry {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "batch record pages missing"));
        }
        let mut pages = TxnPages::new();
        for raw in bytes[start..].chunks_exact(entry) {
            let pgno = u32::from_be_bytes(raw[..4].try_into().expect("4"));
            pages.push((pgno, PageBuf::copy_of(&raw[4..])));
        }
        let frame_size = record.header.frame_size();
        let txn = |pages: TxnPages, last: bool| CapturedTxn {
            page_size: record.header.page_size,
            commit: record.commit,
            pages,
            wal_offset: record.header.frame_offset(record.from.next_frame),
            wal_size: if last {
                (record.to.next_frame - record.from.next_frame) * frame_size
            } else {
                0
            },
            position: record.to,
        };
        let mut txns: Vec<CapturedTxn> = (1..record.commits).map(|_| txn(TxnPages::new(), false)).collect();
        if record.commits > 0 {
            txns.push(txn(pages, true));
        }
        Ok(txns)
    }
}

/// A batch record read back: its metadata checked against its length.
pub(super) fn from_meta(path: &Path, file: &File, meta: Meta, header: WalHeader) -> io::Result<BatchRecord> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let next = super::next_header(&meta)?;
    let batch = meta
        .batch
        .ok_or_else(|| invalid("a batch record without its metadata"))?;
    let expected = (12 + META_ROOM + HEADER_SIZE) as u64 + batch.pages * (4 + header.page_size as u64);
    if file.metadata()?.len() != expected {
        return Err(invalid("batch record pages missing"));
    }
    let empty = batch.pages == 0 && batch.to_frame == batch.from_frame;
    if batch.to_frame < batch.from_frame || (batch.commits == 0 && !empty) || (batch.commits > 0 && empty) {
        return Err(invalid("batch record metadata does not add up"));
    }
    let position = |next_frame, checksum| WalPosition {
        salt1: header.salt1,
        salt2: header.salt2,
        page_size: header.page_size,
        next_frame,
        checksum,
        ended: false,
    };
    Ok(BatchRecord {
        seq: meta.seq,
        path: path.to_path_buf(),
        header,
        from: position(batch.from_frame, batch.from_checksum),
        to: position(batch.to_frame, batch.to_checksum),
        commits: batch.commits,
        commit: batch.commit,
        pages: batch.pages,
        next,
        after_txid: batch.after_txid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_modes::FileModes;
    use crate::primary::capture::Capture;
    use crate::primary::follow::tests::follow_from;
    use crate::primary::handoff::Record;
    use crate::wal::testing::WalBuilder;

    /// A capture positioned after the first `frames` frames of `wal`.
    use crate::primary::follow::tests::captured_through as at;

    /// Generation 1: one commit staged, then three commits (page 2 twice, page 3) the
    /// replicating process captured, merged and handed off when it restarted into
    /// generation 2. Returns the records, the capture that staged, and generation 2.
    fn restarted() -> (tempfile::TempDir, HandoffDir, Capture, WalBuilder) {
        let dir = tempfile::tempdir().unwrap();
        let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
        let mut g1 = WalBuilder::new(512, 10, 1, false);
        g1.frame(1, 1, 1);
        let staged = at(&g1, 1, g1.running_checksum());
        let from = staged.position().unwrap();
        g1.frame(2, 2, 2).frame(2, 2, 5).frame(3, 3, 6);
        let mut writer = at(&g1, 1, g1.running_checksum());
        writer.set_position(&from, g1.header);
        let mut batch = Batch::default();
        for (i, txn) in writer.scan_live(&mut g1.bytes.clone()).into_iter().enumerate() {
            batch.push(2 + i as u64, txn, &mut drop);
        }
        let g2 = WalBuilder::new(512, 11, 77, false);
        let to = writer.position().unwrap();
        let seq = records
            .write_batch(&g1.bytes[..32], (from, 1), to, &g2.bytes[..32], &batch)
            .unwrap();
        assert_eq!(seq, 1);
        (dir, records, staged, g2)
    }

    #[test]
    fn a_batch_record_holds_each_page_once_and_gives_back_every_commit() {
        let (_dir, records, _, _) = restarted();
        let [Record::Batch(record)] = &records.list().unwrap()[..] else {
            panic!("one batch record")
        };
        assert_eq!(
            (
                record.from.next_frame,
                record.to.next_frame,
                record.commits,
                record.after_txid
            ),
            (1, 4, 3, Some(1))
        );
        let txns = records.batch_txns(record).unwrap();
        assert_eq!(txns.len(), 3, "one per commit, so each keeps its TXID");
        assert!(txns[..2].iter().all(|t| t.pages.is_empty() && t.commit == 3));
        let pages: Vec<(u32, u8)> = txns[2].pages.iter().map(|(p, page)| (*p, page[0])).collect();
        assert_eq!(pages, vec![(2, 5), (3, 6)], "page 2 as its last commit left it");
        let len = std::fs::metadata(&record.path).unwrap().len();
        assert_eq!(
            len,
            (12 + META_ROOM + HEADER_SIZE + 2 * (4 + 512)) as u64,
            "not the three frames"
        );
    }

    #[test]
    fn a_restart_after_a_crash_follows_a_batch_record_into_the_next_generation() {
        let (_dir, records, mut capture, mut g2) = restarted();
        g2.frame(4, 4, 7);
        let mut consumed = 0;
        let found = follow_from(&mut capture, &mut consumed, &records, &mut g2.bytes.clone()).unwrap();
        assert_eq!(found.len(), 4, "the batch's three commits, then generation 2's");
        let pgnos: Vec<u32> = found.iter().flat_map(|t| t.pages.iter().map(|(p, _)| *p)).collect();
        assert_eq!(pgnos, vec![2, 3, 4]);
        assert_eq!((consumed, capture.generation()), (1, Some((11, 77))));
    }

    #[test]
    fn a_batch_record_that_does_not_begin_where_capture_stands_is_a_discontinuity() {
        let (_dir, records, _, g2) = restarted();
        let g1 = WalBuilder::new(512, 10, 1, false);
        // Capture at frame 0 of generation 1: the batch begins after frame 1.
        let mut behind = at(&g1, 0, g1.header.checksum);
        let followed = follow_from(&mut behind, &mut 0, &records, &mut g2.bytes.clone());
        assert!(followed.is_err(), "commits between would be lost");
    }
}
