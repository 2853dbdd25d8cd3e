//! Reading hand-off records back: their names, their metadata, and a tail's frames at
//! the offsets they had in the WAL.

use super::*;

/// The sequence number in the name of a record (one `record_kind` accepts).
pub(super) fn named_seq(path: &Path) -> u64 {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.get(..16)
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .unwrap_or(0)
}

pub(super) fn record_kind(path: &Path) -> Option<&'static str> {
    let name = path.file_name()?.to_str()?;
    let (seq, kind) = name.split_once('.')?;
    if seq.len() != 16 || u64::from_str_radix(seq, 16).is_err() {
        return None;
    }
    match kind {
        "tail" => Some("tail"),
        "start" => Some("start"),
        "batch" => Some("batch"),
        _ => None,
    }
}

pub(super) fn read_record(path: &Path, kind: &str) -> io::Result<Record> {
    let file = crate::file_modes::open_read(path)?;
    let mut head = [0u8; 12];
    file.read_exact_at(&mut head, 0)?;
    if &head[..4] != MAGIC || u32::from_be_bytes(head[4..8].try_into().expect("4")) != VERSION {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a hand-off record"));
    }
    let len = u32::from_be_bytes(head[8..12].try_into().expect("4")) as usize;
    if len > META_ROOM {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "metadata too long"));
    }
    let mut json = vec![0u8; len];
    file.read_exact_at(&mut json, 12)?;
    let meta: Meta = serde_json::from_slice(&json).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut raw = [0u8; HEADER_SIZE];
    file.read_exact_at(&mut raw, 12 + META_ROOM as u64)?;
    let header = WalHeader::parse(&raw).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    if kind == "start" {
        return Ok(Record::Start {
            seq: meta.seq,
            header,
            database: meta.closed,
        });
    }
    if kind == "batch" {
        return batch_record::from_meta(path, &file, meta, header).map(Record::Batch);
    }
    let next = next_header(&meta)?;
    let expected = 12 + META_ROOM as u64 + HEADER_SIZE as u64 + meta.frames * header.frame_size();
    if file.metadata()?.len() != expected {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frames missing"));
    }
    Ok(Record::Tail(Tail {
        seq: meta.seq,
        path: path.to_path_buf(),
        header,
        start_frame: meta.start_frame,
        frames: meta.frames,
        next,
        closed: meta.closed,
    }))
}

/// The header of the generation that follows a record (a restart's), when it names one.
pub(super) fn next_header(meta: &Meta) -> io::Result<Option<WalHeader>> {
    match &meta.next_header {
        Some(text) => unhex(text)
            .and_then(|bytes| WalHeader::parse(&bytes).ok())
            .map(Some)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad next header")),
        None => Ok(None),
    }
}

/// A tail's frames at the offsets they had in the WAL: reads outside them come back
/// short, as past the end of a WAL file.
pub struct TailSource {
    pub(super) file: File,
    pub(super) frame_size: u64,
    pub(super) start_frame: u64,
    pub(super) frames: u64,
}

impl WalSource for TailSource {
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        let body = 12 + META_ROOM as u64;
        let at = if offset + buf.len() as u64 <= HEADER_SIZE as u64 {
            body + offset
        } else {
            let Some(rel) = offset.checked_sub(HEADER_SIZE as u64) else {
                return Ok(false);
            };
            let index = rel / self.frame_size;
            let end = rel + buf.len() as u64;
            let last = (end - 1) / self.frame_size;
            if index < self.start_frame || last >= self.start_frame + self.frames {
                return Ok(false);
            }
            body + HEADER_SIZE as u64 + rel - self.start_frame * self.frame_size
        };
        match self.file.read_exact_at(buf, at) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }
}
