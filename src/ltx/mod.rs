//! LTX v3: the file format Litestream (≥ 0.5.2) stores replicas in, and LTX v4, the same
//! with every page sealed (superfly/ltx's proposed encryption, [`crypto`],
//! `docs/encryption.md`). Pure codec: no SQLite, no network, no filesystem; everything is
//! generic over `Read`/`Write` or works on byte slices, keys come in as values.
//!
//! File = header (100 bytes) | page frames | end marker | page index | index size |
//! trailer. See `shared/ltx-format.md` for the byte layout; each module documents its part:
//!
//! - [`checksum`]: CRC-64/GO-ISO, page and database checksums, lock page;
//! - [`header`]: header and trailer;
//! - [`frame`]: page frames and their compression (LZ4 block, legacy LZ4 frame, zstd);
//! - [`encoder`] / [`decoder`]: streaming writer and reader;
//! - [`sealed`]: an encrypted file's pages read sealed and opened on other threads;
//! - [`index`]: page index, reading a file from its tail and single frames (lazy replica);
//! - [`name`]: file names and key layouts;
//! - [`compact`](mod@compact): merging contiguous files;
//! - [`crypto`]: keys, the content key's HPKE wrapping, page and index sealing (v4);
//! - [`rekey`](mod@rekey): giving an encrypted file to new recipients;
//! - [`apply`]: applying files to a database image.

pub mod apply;
pub mod checksum;
pub mod compact;
pub mod crypto;
pub mod decoder;
pub mod encoder;
pub mod encoding;
pub mod error;
pub mod frame;
pub mod header;
pub mod index;
mod lz4frame;
pub mod name;
pub mod recipient_copies;
pub mod rekey;
pub mod sealed;
mod varint;
mod xxh32;

#[cfg(test)]
mod codec_tests;
#[cfg(test)]
mod compact_apply_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod test_files;
#[cfg(test)]
mod v4_tests;

pub use apply::{Applier, PageSink, Position};
pub use checksum::{crc64, lock_pgno, page_checksum, Crc64, DbChecksum, CHECKSUM_FLAG, EMPTY_DB_CHECKSUM};
pub use compact::{
    compact, compact_with, compacted_header, is_contiguous, Compacted, DecodedPages, Merge, MergeError, PageSource,
};
pub use decoder::{
    decode_file, decode_file_with, verify, verify_with, DecodeSummary, DecodedFile, Decoder, SealedSummary,
};
pub use encoder::Encoder;
pub use encoding::Encoding;
pub use error::{Error, Result};
pub use frame::{
    max_compressed_len, max_frame_len, Compression, FrameHeader, PageCompressor, PageDecompressor, END_MARKER,
    FRAME_FLAG_SIZE, FRAME_FLAG_ZSTD, FRAME_HEADER_SIZE, FRAME_SIZE_FIELD,
};
pub use header::{
    is_valid_page_size, Header, Trailer, FLAG_ENCRYPTED, FLAG_NO_CHECKSUM, HEADER_SIZE, MAGIC, MAGIC_V4, MAX_PAGE_SIZE,
    MIN_PAGE_SIZE, TRAILER_SIZE,
};
pub use index::{
    open_page_frame, open_tail, parse_tail, parse_tail_of, read_page_frame, read_page_frame_with, FileTail, PageIndex,
    PageIndexEntry, SealedTail, TailRead, DEFAULT_TAIL_GUESS, INDEX_FOOTER_SIZE, MIN_FILE_SIZE,
};
pub use name::{format_name, parse_key, parse_name, KeyLayout, Level};
pub use rekey::{rekey, Rekeyed};
pub use sealed::{PageOpener, SealedFrame, SharedRead};
