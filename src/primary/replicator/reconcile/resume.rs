//! Where capture goes on at open from a saved position: through the hand-off records
//! and the live WAL, or a discontinuity when that cannot be proven to miss nothing.

use super::*;

/// Where capture ended the generation the WAL still shows, when the saved position is
/// the one a hand-off record moved capture to and that record's writer died before the
/// WAL write it announced (`SavedState::ended_before`): the live header is that
/// generation's and its frame before that end carries the same running checksum.
fn went_on_before(
    saved: &SavedState,
    position: &WalPosition,
    live: Option<&WalHeader>,
    wal: &mut CountedWal,
) -> io::Result<Option<WalPosition>> {
    let (Some(before), Some(live)) = (saved.ended_before.as_ref(), live) else {
        return Ok(None);
    };
    let before: WalPosition = before.into();
    let moved_by_a_record = position.ended || position.next_frame == 0;
    if !moved_by_a_record || (live.salt1, live.salt2) != (before.salt1, before.salt2) {
        return Ok(None);
    }
    if !position.ended && (live.salt1, live.salt2) == (position.salt1, position.salt2) {
        return Ok(None); // the next generation did reach the file
    }
    let mut probe = Capture::new();
    probe.set_position(&before, *live);
    Ok(probe.verify_position(wal)?.then_some(before))
}

/// Decides how capture continues from saved state at open (a restart or a takeover):
/// from the saved position through the hand-off records and the live WAL, or a
/// [`Discontinuity`] when that cannot be proven to miss nothing.
pub(super) fn resume_capture(
    capture: &mut Capture,
    consumed: &mut u64,
    saved: &SavedState,
    db_path: &Path,
    wal: &mut CountedWal,
    records: &HandoffDir,
) -> io::Result<Result<Vec<CapturedTxn>, Discontinuity>> {
    *consumed = saved.handoff_seq;
    let position: WalPosition = match (&saved.wal, saved.closed_clean.as_ref().or(saved.database_left.as_ref())) {
        (Some(position), _) => position.into(),
        // A clean close: the WAL was checkpointed and deleted with everything staged. Or
        // a snapshot of the database without a WAL, the last thing staged: the file it
        // copied is known (`database_left`), and the follow below checks it is unchanged.
        (None, Some(_)) => WalPosition {
            salt1: 0,
            salt2: 0,
            page_size: 0,
            next_frame: 0,
            checksum: (0, 0),
            ended: true,
        },
        (None, None) => {
            capture.skip_to_end(wal)?;
            // `save_state` leaves the position out exactly while a snapshot is owed.
            return Ok(Err(Discontinuity(SNAPSHOT_OWED.into())));
        }
    };
    let live = read_wal_header(wal)?;
    let salts = (position.salt1, position.salt2);
    if let Some(before) = went_on_before(saved, &position, live.as_ref(), wal)? {
        // The saved position is where a record moved capture (the start of the next
        // generation, or past a truncation), and the WAL still shows the generation
        // before, as capture had ended it or longer: the record's writer died before the
        // WAL write it announced. Capture goes on in that generation from its end.
        capture.set_position(&before, live.expect("went_on_before reads the live header"));
    } else if position.ended {
        capture.set_position(&position, placeholder_header(&position));
        capture.left_database(saved.closed_clean.clone().or_else(|| saved.database_left.clone()));
    } else {
        let header = match live.filter(|h| (h.salt1, h.salt2) == salts) {
            Some(h) => Some(h),
            None => recorded_header(records, *consumed, salts)?,
        };
        let Some(header) = header else {
            capture.skip_to_end(wal)?;
            return Ok(Err(Discontinuity(
                "the WAL no longer continues the last captured position".into(),
            )));
        };
        capture.set_position(&position, header);
        // With the wal-index already naming the next generation (a restart whose writer
        // died before the header, under a process that kept the wal-index alive), the
        // cut hides every frame: the saved frame is checked in the file itself.
        let holds = |capture: &mut Capture, wal: &mut CountedWal| -> io::Result<bool> {
            Ok(capture.verify_position(wal)?
                || (wal.counts_another_generation() && capture.verify_position(wal.uncut())?))
        };
        if live.is_some_and(|h| (h.salt1, h.salt2) == salts) && !holds(capture, wal)? {
            // The same salts are not always the same generation: a writer that rewrites
            // the header of a WAL none of whose frames were committed (its last writer
            // died inside a transaction) keeps the salts and may change the checksum
            // seed. Its record, after the saved state, has the generation as it was; the
            // records then carry capture into the live one (multi_process_crash, a
            // takeover right after following such a record).
            let Some(recorded) = recorded_header(records, *consumed, salts)?.filter(|h| Some(*h) != live) else {
                capture.skip_to_end(wal)?;
                // Frames of this generation were captured and are gone: lost commits
                // (`lost_commits.rs`). With none captured, the header may be a rewrite
                // with the same salts whose new frames nobody captured: a snapshot.
                let reason = match position.next_frame {
                    0 => "the WAL's header changed before any of its frames was captured",
                    _ => super::super::lost_commits::LOST_FRAMES,
                };
                return Ok(Err(Discontinuity(reason.into())));
            };
            capture.set_position(&position, recorded);
        }
    }
    let identity = || FileIdentity::of(db_path).ok();
    let followed = follow(capture, consumed, records, wal, &identity)?;
    if let Err(Discontinuity(reason)) = &followed {
        capture.skip_to_end(wal)?;
        if saved.closed_clean.is_some() && saved.wal.is_none() {
            return Ok(Err(Discontinuity(format!(
                "the database changed while it was not open through the litestream VFS ({reason})"
            ))));
        }
    }
    Ok(followed)
}

/// The header of generation `salts` as the first record after `consumed` that is a
/// tail or a batch of it holds it.
fn recorded_header(records: &HandoffDir, consumed: u64, salts: (u32, u32)) -> io::Result<Option<WalHeader>> {
    Ok(records.list_after(consumed)?.into_iter().find_map(|r| match r {
        Record::Tail(t) if (t.header.salt1, t.header.salt2) == salts => Some(t.header),
        Record::Batch(b) if (b.header.salt1, b.header.salt2) == salts => Some(b.header),
        _ => None,
    }))
}

/// What capture may take for committed in the live WAL at open: what SQLite's wal-index
/// counts, read through a connection of this process that maps it (a takeover), else
/// through one of our own (the application's connection is still in its open: nothing of
/// ours competes with it), else only up to the saved position. Frames past the count can be
/// a commit whose writer died before SQLite counted it (the next writer reuses the slot).
///
/// A WAL without a header (none, or empty: what a clean close leaves) has nothing to count,
/// and our own connection is not opened for it: that connection is a third of what an open
/// after a clean close costs (a connection per request opens so every time). A header
/// written after this look is a generation neither count names, so `CountedWal::cut`
/// reads none of it either way; the next engine turn reads it with SQLite's count.
pub(super) fn counted_at_open(
    wal_index: &WalIndexView,
    snapshotter: &dyn Snapshotter,
    db_path: &Path,
    saved: &SavedState,
    live: &mut dyn WalSource,
) -> Option<ShmWal> {
    let counted = wal_index.counted().0.or_else(|| {
        // A failed read is not proof of an empty WAL: ask SQLite as before.
        let has_header = live
            .read_exact_at(0, &mut [0u8; crate::wal::HEADER_SIZE])
            .unwrap_or(true);
        has_header.then(|| snapshotter.wal_index(db_path)).flatten()
    });
    if let Some(counted) = counted {
        return Some(counted);
    }
    saved.wal.as_ref().map(|p| {
        let p: WalPosition = p.into();
        ShmWal {
            salt1: p.salt1,
            salt2: p.salt2,
            max_frame: u32::try_from(p.next_frame).unwrap_or(u32::MAX),
            // Not known, and not asked of a count that stands in for the wal-index.
            commits: 0,
        }
    })
}

/// A header standing for a generation that ended: only its salts are ever looked at.
fn placeholder_header(position: &WalPosition) -> crate::wal::WalHeader {
    crate::wal::WalHeader {
        big_endian: false,
        page_size: position.page_size.max(512),
        checkpoint_seq: 0,
        salt1: position.salt1,
        salt2: position.salt2,
        checksum: (0, 0),
    }
}

pub(in super::super) fn read_wal_header(wal: &mut dyn WalSource) -> io::Result<Option<crate::wal::WalHeader>> {
    let mut raw = [0u8; crate::wal::HEADER_SIZE];
    if !wal.read_exact_at(0, &mut raw)? {
        return Ok(None);
    }
    Ok(crate::wal::WalHeader::parse(&raw).ok())
}
