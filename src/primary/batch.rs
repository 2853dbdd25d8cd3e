//! Encodes captured transactions, or a whole database, as one LTX file in the form
//! Litestream writes: NoChecksum flag, database checksums 0.

use super::capture::CapturedTxn;
use crate::ltx::{lock_pgno, Compression, Encoder, Header, FLAG_NO_CHECKSUM};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One LTX file covering `min_txid..min_txid + txns.len() - 1`: pages merged, the
/// newest version of each page wins, pages above the final database size dropped.
pub fn encode_batch(
    txns: &[CapturedTxn],
    min_txid: u64,
    node_id: u64,
    compression: Compression,
) -> crate::ltx::Result<Vec<u8>> {
    let last = txns.last().expect("a batch has at least one transaction");
    let mut pages: BTreeMap<u32, &[u8]> = BTreeMap::new();
    for txn in txns {
        for (pgno, data) in &txn.pages {
            pages.insert(*pgno, data);
        }
    }
    // The WAL fields describe the last contiguous run of frames in one WAL generation.
    let same_generation =
        |t: &&CapturedTxn| (t.position.salt1, t.position.salt2) == (last.position.salt1, last.position.salt2);
    let run: Vec<&CapturedTxn> = txns.iter().rev().take_while(same_generation).collect();
    let first_of_run = run.last().expect("the last txn is in its own run");
    let wal_size: u64 = run.iter().map(|t| t.wal_size).sum();
    let header = Header {
        flags: FLAG_NO_CHECKSUM,
        page_size: last.page_size,
        commit: last.commit,
        min_txid,
        max_txid: min_txid + txns.len() as u64 - 1,
        timestamp_ms: now_ms(),
        pre_apply_checksum: 0,
        wal_offset: first_of_run.wal_offset as i64,
        wal_size: wal_size as i64,
        wal_salt1: last.position.salt1,
        wal_salt2: last.position.salt2,
        node_id,
    };
    let mut encoder = Encoder::new(Vec::new(), header, compression)?;
    for (pgno, data) in pages.range(..=last.commit) {
        encoder.write_page(*pgno, data)?;
    }
    Ok(encoder.finish(0)?.0)
}

/// A full-database file at TXID `txid`. With `min_txid` 1 it is a snapshot proper;
/// a later `min_txid` gives a full image that continues an existing TXID sequence.
pub fn encode_full(
    page_size: u32,
    commit: u32,
    min_txid: u64,
    max_txid: u64,
    node_id: u64,
    compression: Compression,
    mut read_page: impl FnMut(u32, &mut [u8]) -> std::io::Result<()>,
) -> Result<Vec<u8>, String> {
    let header = Header {
        flags: FLAG_NO_CHECKSUM,
        page_size,
        commit,
        min_txid,
        max_txid,
        timestamp_ms: now_ms(),
        pre_apply_checksum: 0,
        wal_offset: 0,
        wal_size: 0,
        wal_salt1: 0,
        wal_salt2: 0,
        node_id,
    };
    let mut encoder = Encoder::new(Vec::new(), header, compression).map_err(|e| e.to_string())?;
    let mut page = vec![0u8; page_size as usize];
    let lock = lock_pgno(page_size);
    for pgno in 1..=commit {
        if pgno == lock {
            continue;
        }
        read_page(pgno, &mut page).map_err(|e| format!("reading page {pgno}: {e}"))?;
        encoder.write_page(pgno, &page).map_err(|e| e.to_string())?;
    }
    Ok(encoder.finish(0).map_err(|e| e.to_string())?.0)
}
