//! Encrypted (LTX v4) files from arbitrary bytes, opened with a fixed key (the one the
//! seeds in tests/data/ltx-v4 are encrypted to): the streaming decoder with and without
//! the key, the same file read sealed and opened apart (as a restore does; both ways must
//! agree), the lazy reader (tail, index tag, single sealed frames) and rekey. Any input
//! must give a typed error or a verified file, never a panic or unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litestream_vfs::ltx::crypto::{unwrap_content_key, FileKeys, FixedEntropy, PrivateKey, PublicKey};
use litestream_vfs::ltx::{
    open_page_frame, parse_tail_of, rekey, verify, Decoder, Header, PageDecompressor, TailRead, HEADER_SIZE,
};

mod common;

/// RFC 9180 A.2's recipient key: the seeds are encrypted to its public key.
const KEY: [u8; 32] = [
    0x80, 0x57, 0x99, 0x1e, 0xef, 0x8f, 0x1f, 0x1a, 0xf1, 0x8f, 0x4a, 0x94, 0x91, 0xd1, 0x6a, 0x1c, 0xe3, 0x33, 0xf6,
    0x95, 0xd4, 0xdb, 0x8e, 0x38, 0xda, 0x75, 0x97, 0x5c, 0x44, 0x78, 0xe0, 0xfb,
];

fuzz_target!(|data: &[u8]| {
    let key = PrivateKey::from_bytes(KEY);
    // In line and sealed (a restore's way) must agree: the same pages, or both refuse.
    let in_line = common::decode_in_line(data, Some(&key));
    let sealed = common::decode_sealed(data, &key);
    let encrypted = Decoder::new(data).is_ok_and(|d| d.header().is_encrypted());
    if encrypted {
        assert_eq!(in_line, sealed, "in line and sealed reads disagree");
    }
    // Keyless: structure and file checksum only.
    let _ = verify(data);
    // What a lazy replica does: header, tail, recipient block, index tag, frames.
    if let Ok(header) = Header::decode(data) {
        if let Ok(TailRead::Complete(tail)) = parse_tail_of(&header, data.len() as u64, data) {
            if let Some(sealed) = &tail.sealed {
                if let Ok(cek) = unwrap_content_key(&sealed.recipient_block, &key) {
                    let mut head = [0u8; HEADER_SIZE];
                    head.copy_from_slice(&data[..HEADER_SIZE]);
                    let keys = FileKeys::new(&cek, &head);
                    if sealed.authenticate(&keys).is_ok() {
                        let mut dec = PageDecompressor::new();
                        let mut page = vec![0u8; header.page_size as usize];
                        for e in tail.index.entries() {
                            let (start, end) = (e.offset as usize, e.offset as usize + e.size as usize);
                            if let Some(frame) = data.get(start..end) {
                                let _ = open_page_frame(&mut dec, &keys, frame, e.pgno, header.page_size, &mut page);
                            }
                        }
                    }
                }
            }
        }
    }
    let to = [PublicKey::from_bytes([9; 32]), key.public_key()];
    let _ = rekey(data, &key, &to[..1], &mut FixedEntropy::new(&[]));
    let _ = rekey(data, &key, &to, &mut FixedEntropy::new(&[]));
});
