//! A stage the replicating process did not finish. The stage cuts the queue, stages it
//! as one LTX file (fsynced under its final name) and then saves the state. A WAL
//! restart in between hands off the commits after the cut as a batch record beginning
//! at the cut (`hand_off_batch`, so that the restart does not copy the generation under
//! the write lock). Killed before the state is saved, the process leaves a state at the
//! position before the stage, a WAL that no longer holds the frames after it, and a
//! batch beginning at the cut: what connects them is the staged file. Without this the
//! next open took a snapshot (3 in 1,200 SIGKILLs of `multi_process_crash` on a loaded
//! machine, where stages take longest). The batch names the TXID it begins after, and
//! the staged file's header the WAL frames its commits end at: both must meet.

use super::*;
use crate::ltx::{Header, HEADER_SIZE};
use crate::primary::handoff::BatchRecord;

/// The state the unfinished stage would have saved: the TXID and WAL position a batch
/// record begins after, when the files staged after `saved.txid` hold every TXID up to
/// it and the last one ends where the batch begins. The latest such batch among the
/// records after `saved`'s; `saved` when there is none.
///
/// Why that state is sound: a batch record begins where the queue it hands off begins,
/// and its writer had followed every record numbered before it (`hand_off_batch`
/// writes one only then, in the generation of that position), so the commits before
/// `from`, and those of every earlier record, are the ones numbered up to `after_txid`.
/// The files staged after `saved.txid` are the last replicating process's, numbered as
/// it numbered its commits (every open removes the others, and one that snapshots saves
/// a state past every record first); the last one's WAL range ends at the batch's first
/// frame, which ties it to that batch: a snapshot, or a file of another history, holds
/// no such range.
pub(super) fn finished_by_its_staged_files(
    saved: SavedState,
    records: &HandoffDir,
    staging: &Staging,
    db_path: &Path,
) -> SavedState {
    let (Ok(unconsumed), Ok(files)) = (records.list_after(saved.handoff_seq), staging.list()) else {
        return saved;
    };
    let finished = unconsumed.iter().rev().find_map(|record| match record {
        Record::Batch(batch) if staged_up_to(&files, saved.txid, batch) => Some(batch),
        _ => None,
    });
    let Some(batch) = finished else {
        if let Some(Record::Batch(batch)) = unconsumed
            .iter()
            .find(|r| matches!(r, Record::Batch(b) if b.after_txid > Some(saved.txid)))
        {
            let beyond: Vec<(u64, u64)> = files
                .iter()
                .filter(|f| f.max_txid > saved.txid)
                .map(|f| (f.min_txid, f.max_txid))
                .collect();
            tracing::debug!(
                saved = saved.txid,
                handoff = batch.seq,
                after = ?batch.after_txid,
                ?beyond,
                "no unfinished stage reaches the hand-off"
            );
        }
        return saved;
    };
    let after_txid = batch.after_txid.expect("staged_up_to checks it");
    tracing::info!(
        db = %db_path.display(),
        saved = saved.txid,
        staged = after_txid,
        handoff = batch.seq,
        "a stage the last replicating process did not finish continues the saved state up to its hand-off"
    );
    SavedState {
        txid: after_txid,
        wal: Some(batch.from.into()),
        closed_clean: None,
        handoff_seq: batch.seq - 1,
        ended_before: None,
        database_left: None,
        ..saved
    }
}

/// Whether `files` hold every TXID after `saved_txid` up to the one `batch` begins
/// after, one file after the next, the last ending where the batch begins.
fn staged_up_to(files: &[StagedFile], saved_txid: u64, batch: &BatchRecord) -> bool {
    let Some(through) = batch.after_txid.filter(|t| *t > saved_txid) else {
        return false;
    };
    let mut next = saved_txid + 1;
    let mut last = None;
    for file in files
        .iter()
        .filter(|f| f.max_txid > saved_txid && f.max_txid <= through)
    {
        if file.min_txid != next {
            return false;
        }
        next = file.max_txid + 1;
        last = Some(file);
    }
    next == through + 1 && last.is_some_and(|file| ends_where_it_begins(file, batch))
}

/// Whether the commits of `file` end at the frame `batch` begins at, in its generation
/// (the WAL range an LTX header names: offset and size of the last run of frames).
fn ends_where_it_begins(file: &StagedFile, batch: &BatchRecord) -> bool {
    let mut head = [0u8; HEADER_SIZE];
    let read = crate::file_modes::open_read(&file.path).and_then(|f| f.read_exact_at(&mut head, 0));
    let Some(header) = read.ok().and_then(|()| Header::decode(&head).ok()) else {
        return false;
    };
    let begins = batch.header.frame_offset(batch.from.next_frame);
    header.wal_size > 0
        && (header.wal_salt1, header.wal_salt2) == (batch.from.salt1, batch.from.salt2)
        && header.wal_offset.checked_add(header.wal_size) == i64::try_from(begins).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_modes::FileModes;
    use crate::ltx::FLAG_NO_CHECKSUM;
    use crate::wal::testing::WalBuilder;

    /// The state before the stage: TXID 10 at frame 3 of generation (10, 1), after
    /// hand-off record 4.
    fn saved() -> SavedState {
        SavedState {
            node_id: 7,
            txid: 10,
            wal: Some(position(3).into()),
            closed_clean: None,
            handoff_seq: 4,
            ended_before: None,
            database_left: None,
            stored_for: None,
            numbered_txid: 0,
        }
    }

    fn generation() -> WalBuilder {
        WalBuilder::new(512, 10, 1, false)
    }

    fn position(next_frame: u64) -> WalPosition {
        let g = generation();
        WalPosition {
            salt1: g.header.salt1,
            salt2: g.header.salt2,
            page_size: g.header.page_size,
            next_frame,
            checksum: (1, 2),
            ended: false,
        }
    }

    /// TXIDs `min..=max` and the frames their commits span (none: a snapshot).
    type StagedRange = ((u64, u64), Option<(u64, u64)>);

    /// A staged file of TXIDs `min..=max` whose commits span frames `frames` of the
    /// generation (none: a snapshot).
    fn staged(staging: &Staging, (min, max): (u64, u64), frames: Option<(u64, u64)>) {
        let g = generation();
        let (offset, size) = frames.map_or((0, 0), |(from, to)| {
            (g.header.frame_offset(from), (to - from) * g.header.frame_size())
        });
        let header = Header {
            flags: FLAG_NO_CHECKSUM,
            page_size: 512,
            commit: 3,
            min_txid: min,
            max_txid: max,
            timestamp_ms: 1,
            wal_offset: offset as i64,
            wal_size: size as i64,
            wal_salt1: if frames.is_some() { g.header.salt1 } else { 0 },
            wal_salt2: if frames.is_some() { g.header.salt2 } else { 0 },
            node_id: 7,
            ..Header::default()
        };
        staging.stage(min, max, &header.encode()).unwrap();
    }

    /// A staging directory whose records 1-4 are start records and record 5 a batch
    /// beginning at frame 9 after TXID `after_txid`.
    fn left_behind(after_txid: u64) -> (tempfile::TempDir, HandoffDir, Staging) {
        let dir = tempfile::tempdir().unwrap();
        let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
        let staging = Staging::open(dir.path(), FileModes::NewDatabase).unwrap();
        let g = generation();
        for _ in 1..=4 {
            records.write_start(&g.bytes[..32], None).unwrap();
        }
        let next = WalBuilder::new(512, 11, 5, false);
        let from = position(9);
        let seq = records
            .write_batch(
                &g.bytes[..32],
                (from, after_txid),
                from,
                &next.bytes[..32],
                &Batch::default(),
            )
            .unwrap();
        assert_eq!(seq, 5);
        (dir, records, staging)
    }

    fn finished(saved: SavedState, (dir, records, staging): &(tempfile::TempDir, HandoffDir, Staging)) -> SavedState {
        finished_by_its_staged_files(saved, records, staging, dir.path())
    }

    #[test]
    fn files_staged_up_to_where_a_batch_begins_carry_the_state_there() {
        let left = left_behind(14);
        staged(&left.2, (11, 12), Some((3, 5)));
        staged(&left.2, (13, 14), Some((5, 9)));
        staged(&left.2, (15, 15), Some((9, 10)));
        let state = finished(saved(), &left);
        assert_eq!(state.txid, 14);
        let at: WalPosition = state.wal.as_ref().unwrap().into();
        assert_eq!((at.salt1, at.next_frame), (10, 9));
        assert_eq!(
            (state.node_id, state.handoff_seq),
            (7, 4),
            "the batch is still to follow"
        );
        // Records before the batch were followed before its writer began it.
        let earlier = SavedState {
            handoff_seq: 2,
            ..saved()
        };
        assert_eq!(finished(earlier, &left).handoff_seq, 4);
    }

    #[test]
    fn missing_partial_or_unrelated_staged_files_leave_the_saved_state() {
        let cases: [&[StagedRange]; 7] = [
            &[],
            &[((11, 12), Some((3, 5)))],
            &[((12, 14), Some((3, 9)))],
            &[((11, 12), Some((3, 5))), ((14, 14), Some((5, 9)))],
            &[((11, 15), Some((3, 10)))],
            // Not ending where the batch begins: another cut, or a snapshot.
            &[((11, 14), Some((3, 8)))],
            &[((11, 14), None)],
        ];
        for files in cases {
            let left = left_behind(14);
            for &(range, frames) in files {
                staged(&left.2, range, frames);
            }
            assert_eq!(finished(saved(), &left), saved(), "{files:?}");
        }
    }

    #[test]
    fn a_batch_that_begins_at_or_before_the_saved_txid_leaves_it() {
        let left = left_behind(10);
        staged(&left.2, (11, 11), Some((9, 10)));
        assert_eq!(finished(saved(), &left), saved());
    }
}
