//! Streaming decoder, compaction and apply over arbitrary bytes: any input must give a
//! typed error or a verified file, never a panic, and memory stays bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litestream_vfs::ltx::{compact, Applier, Compression};

mod common;

fuzz_target!(|data: &[u8]| {
    let _ = common::decode_in_line(data, None);
    // The same bytes through the merge and apply paths (each decodes and verifies).
    let _ = compact(vec![data], Vec::new(), Compression::Lz4);
    let _ = Applier::new(Vec::new()).apply(data);
});
