//! Streaming decoder, compaction and apply over arbitrary bytes: any input must give a
//! typed error or a verified file, never a panic, and memory stays bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litestream_vfs::ltx::{compact, Applier, Compression, Decoder};

fuzz_target!(|data: &[u8]| {
    if let Ok(mut dec) = Decoder::new(data) {
        let mut page = vec![0u8; dec.header().page_size as usize];
        loop {
            match dec.next_page(&mut page) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    let _ = dec.finish();
                    break;
                }
                Err(_) => break,
            }
        }
    }
    // The same bytes through the merge and apply paths (each decodes and verifies).
    let _ = compact(vec![data], Vec::new(), Compression::Lz4);
    let _ = Applier::new(Vec::new()).apply(data);
});
