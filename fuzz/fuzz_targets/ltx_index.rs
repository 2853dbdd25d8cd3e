//! The lazy-replica path over arbitrary bytes: parse the page index from the tail of the
//! input (as a ranged GET would return it), then decode every frame the index points at,
//! as well as the whole input as one frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litestream_vfs::ltx::{parse_tail, read_page_frame_with, Header, PageDecompressor, TailRead};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, file)) = data.split_first() else {
        return;
    };
    let len = file.len() as u64;
    // The first byte picks how much tail the "GET" returned.
    let mut tail = &file[file.len().saturating_sub(sel as usize * 16)..];
    let mut rounds = 0;
    let parsed = loop {
        rounds += 1;
        match parse_tail(len, tail) {
            Ok(TailRead::Complete(t)) => break Some(t),
            Ok(TailRead::NeedFrom(o)) => {
                assert!(rounds < 4, "parse_tail keeps asking");
                assert!(o < len - tail.len() as u64, "parse_tail asked for no new bytes");
                tail = &file[o as usize..];
            }
            Err(_) => break None,
        }
    };
    let page_size = Header::decode(file).map(|h| h.page_size).unwrap_or(4096);
    let mut page = vec![0u8; page_size as usize];
    let mut dec = PageDecompressor::new();
    if let Some(t) = parsed {
        for e in t.index.entries() {
            let end = e.offset + e.size as u64;
            assert!(end <= len, "index entry outside the file");
            let frame = &file[e.offset as usize..end as usize];
            let _ = read_page_frame_with(&mut dec, frame, e.pgno, page_size, &mut page);
        }
    }
    let pgno = u32::from(sel).max(1);
    let _ = read_page_frame_with(&mut dec, file, pgno, page_size, &mut page);
});
