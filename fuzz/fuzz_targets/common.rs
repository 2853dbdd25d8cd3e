//! What the LTX targets share: the streaming decoder over arbitrary bytes, page by page
//! then `finish`, and (for encrypted files) the same file read sealed and opened apart,
//! as a restore reads it. Included by each target with `mod common;`.

use litestream_vfs::ltx::crypto::PrivateKey;
use litestream_vfs::ltx::{DbChecksum, Decoder, PageDecompressor};

/// The pages of a file, in file order.
pub type Pages = Vec<(u32, Vec<u8>)>;

/// Decodes `data` with `next_page` and `finish`: its pages if it verified.
pub fn decode_in_line(data: &[u8], key: Option<&PrivateKey>) -> Option<Pages> {
    let mut dec = Decoder::with_key(data, key).ok()?;
    let mut page = vec![0u8; dec.header().page_size as usize];
    let mut pages = Vec::new();
    while let Some(pgno) = dec.next_page(&mut page).ok()? {
        pages.push((pgno, page.clone()));
    }
    dec.finish().ok()?;
    Some(pages)
}

/// Reads `data`'s frames sealed (`next_sealed`), opens them with the file's
/// `PageOpener`, then `finish_sealed` and the opened pages' checksum: its pages if it
/// verified. `None` too for a file that is not encrypted or not to `key`.
// Only the encrypted target reads sealed; each target compiles this file on its own.
#[allow(dead_code)]
pub fn decode_sealed(data: &[u8], key: &PrivateKey) -> Option<Pages> {
    let mut dec = Decoder::with_key(data, Some(key)).ok()?;
    let opener = dec.page_opener()?;
    let page_size = dec.header().page_size as usize;
    let mut frames = Vec::new();
    while let Some(frame) = dec.next_sealed().ok()? {
        frames.push(frame);
    }
    let mut pd = PageDecompressor::new();
    let mut opened = DbChecksum::new();
    let mut pages = Vec::new();
    for frame in &mut frames {
        let mut page = vec![0u8; page_size];
        let pgno = opener.open(&mut pd, frame, &mut page).ok()?;
        assert_eq!(pgno, frame.pgno(), "the opener names the frame's page");
        opened.toggle_page(pgno, &page);
        pages.push((pgno, page));
    }
    dec.finish_sealed().ok()?.check(opened).ok()?;
    Some(pages)
}
