//! LTX v4 (encrypted) files end to end through the codec: our known-answer file, each
//! key and each bad input the format must refuse, the lazy reader's path, compaction and
//! rekey. RFC 9180's own vectors are in `crypto/tests.rs`.

use super::crypto::{FixedEntropy, OsEntropy, PrivateKey, PublicKey, RECIPIENT_ENTRY_SIZE, TAG_SIZE};
use super::*;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use sha2::Digest;

/// RFC 9180 A.2's recipient: the known-answer file is encrypted to it.
const SK: &str = "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb";
const KAT_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ltx-v4/kat-snapshot-512.ltx");

fn key(hex: &str) -> PrivateKey {
    PrivateKey::from_hex(hex).unwrap()
}

fn random_key() -> PrivateKey {
    PrivateKey::generate(&mut OsEntropy::default()).unwrap()
}

fn header(min: u64, max: u64, commit: u32) -> Header {
    Header {
        flags: FLAG_NO_CHECKSUM,
        page_size: 512,
        commit,
        min_txid: min,
        max_txid: max,
        timestamp_ms: 1_700_000_000_000,
        ..Default::default()
    }
}

fn pages(commit: u32, salt: u8) -> Vec<(u32, Vec<u8>)> {
    (1..=commit)
        .map(|p| {
            let text = format!("secret row {p} salt {salt} SQLite format 3 ");
            (p, text.as_bytes().iter().copied().cycle().take(512).collect())
        })
        .collect()
}

fn encode(h: Header, pages: &[(u32, Vec<u8>)], to: &[PublicKey]) -> Vec<u8> {
    let mut enc = Encoder::with_encoding(Vec::new(), h, &Encoding::sealed(Compression::Lz4, to)).unwrap();
    for (p, d) in pages {
        enc.write_page(*p, d).unwrap();
    }
    enc.finish(0).unwrap().0
}

/// The known-answer file: a 2-page snapshot (pages of '2' and '3', as the v3 vector),
/// every random byte from `FixedEntropy::new(&[])` (a counter from 0).
fn kat_file() -> Vec<u8> {
    let h = Header {
        commit: 2,
        ..header(1, 1, 2)
    };
    let pages = [(1u32, vec![b'2'; 512]), (2, vec![b'3'; 512])];
    let to = [key(SK).public_key()];
    let mut enc = Encoder::with_entropy(
        Vec::new(),
        h,
        &Encoding::sealed(Compression::Lz4, &to),
        Box::new(FixedEntropy::new(&[])),
    )
    .unwrap();
    for (p, d) in &pages {
        enc.write_page(*p, d).unwrap();
    }
    enc.finish(0).unwrap().0
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

#[test]
fn known_answer_file_layout_byte_by_byte() {
    let f = kat_file();
    if std::env::var_os("LTX_V4_WRITE_FIXTURES").is_some() {
        std::fs::create_dir_all(std::path::Path::new(KAT_PATH).parent().unwrap()).unwrap();
        std::fs::write(KAT_PATH, &f).unwrap();
    }
    // Header: LTX4, flags NoChecksum|Encrypted, then the v3 fields, then 80..88.
    assert_eq!(&f[0..4], b"LTX4");
    assert_eq!(be32(&f[4..]), 0x0000_0006);
    assert_eq!(
        &f[80..88],
        &[0, 1, 0, 0x20, 0, 1, 0, 3],
        "1 recipient, KEM 0x20, KDF 1, AEAD 3"
    );
    assert!(f[88..100].iter().all(|&b| b == 0));
    // Recipient block: the CEK drew bytes 0..32, the encapsulation 32..64.
    let cek: Vec<u8> = (0u8..32).collect();
    let block = &f[100..180];
    // Frame 1 at 180: pgno, flags 0x0001, sealed size, nonce (counter bytes 64..76).
    assert_eq!(be32(&f[180..]), 1);
    assert_eq!(&f[184..186], &[0, 1]);
    let sealed1 = be32(&f[186..]) as usize;
    assert_eq!(&f[190..202], &(64u8..76).collect::<Vec<_>>()[..]);
    // Decrypt page 1 with the primitives directly: HKDF-Expand(CEK, "ltx-page-key"),
    // AAD = SHA-256(header) ‖ pgno ‖ frame header.
    let prk = hkdf::Hkdf::<sha2::Sha256>::from_prk(&cek).unwrap();
    let mut page_key = [0u8; 32];
    prk.expand(b"ltx-page-key", &mut page_key).unwrap();
    let mut aad = sha2::Sha256::digest(&f[..100]).to_vec();
    aad.extend_from_slice(&f[180..184]);
    aad.extend_from_slice(&f[180..186]);
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(&page_key.into());
    let mut body = f[202..190 + sealed1 - 16].to_vec();
    let tag = chacha20poly1305::Tag::try_from(&f[190 + sealed1 - 16..190 + sealed1]).unwrap();
    let nonce = chacha20poly1305::Nonce::try_from(&f[190..202]).unwrap();
    cipher
        .decrypt_inout_detached(&nonce, &aad, (&mut body[..]).into(), &tag)
        .unwrap();
    let mut page = vec![0u8; 512];
    lz4_flex::block::decompress_into(&body, &mut page).unwrap();
    assert_eq!(page, vec![b'2'; 512]);
    // The tail: index, u64 length, tag over the index bytes, the block again, trailer.
    let n = f.len();
    assert_eq!(&f[n - 16 - 80..n - 16], block);
    let tag_at = n - 16 - 80 - TAG_SIZE;
    let index_len = u64::from_be_bytes(f[tag_at - 8..tag_at].try_into().unwrap()) as usize;
    let index = &f[tag_at - 8 - index_len..tag_at];
    assert_eq!(index[0], 1, "first entry: page 1");
    let mut index_key = [0u8; 32];
    prk.expand(b"ltx-index-key", &mut index_key).unwrap();
    let idx = chacha20poly1305::ChaCha20Poly1305::new(&index_key.into());
    let tag = idx
        .encrypt_inout_detached(&(*b"ltx-idx-auth").into(), index, (&mut [][..]).into())
        .unwrap();
    assert_eq!(&f[tag_at..tag_at + 16], &tag[..]);
    // File checksum: CRC-64 of every byte before it, as written.
    assert_eq!(
        u64::from_be_bytes(f[n - 8..].try_into().unwrap()),
        CHECKSUM_FLAG | crc64(&f[..n - 8])
    );
    // The recipient key opens it; the committed vector is this very file.
    let d = decode_file_with(&f, Some(&key(SK))).unwrap();
    assert_eq!(d.pages[1].1, vec![b'3'; 512]);
    let committed = std::fs::read(KAT_PATH).expect("tests/data/ltx-v4 (LTX_V4_WRITE_FIXTURES=1 writes it)");
    assert_eq!(f, committed, "the encoder no longer writes the known-answer file");
}

#[test]
fn each_recipient_reads_others_are_refused() {
    let (a, b) = (random_key(), random_key());
    let f = encode(header(1, 3, 5), &pages(5, 1), &[a.public_key(), b.public_key()]);
    for k in [&a, &b] {
        assert_eq!(decode_file_with(&f, Some(k)).unwrap().pages, pages(5, 1));
    }
    let e = decode_file_with(&f, Some(&random_key())).unwrap_err();
    assert!(matches!(e, Error::NotARecipient { recipients: 2 }), "{e}");
    let e = decode_file(&f).unwrap_err();
    assert!(matches!(e, Error::KeyRequired { recipients: 2 }), "{e}");
    assert!(e.to_string().contains("encrypted"));
    // Without a key, structure and checksum still verify; the index is there.
    assert_eq!(verify(&f[..]).unwrap().index.len(), 5);
    // A plaintext file ignores a key.
    let plain = encode(header(1, 1, 2), &pages(2, 1), &[]);
    assert_eq!(&plain[..4], b"LTX1");
    decode_file_with(&plain, Some(&a)).unwrap();
}

#[test]
fn nothing_of_the_pages_is_in_the_file() {
    let k = random_key();
    let f = encode(header(1, 1, 20), &pages(20, 7), &[k.public_key()]);
    for needle in [&b"secret row"[..], b"SQLite format 3", b"salt 7"] {
        assert!(!f.windows(needle.len()).any(|w| w == needle));
    }
}

#[test]
fn a_flipped_byte_in_a_page_is_that_page_failing_authentication() {
    let k = random_key();
    let f = encode(header(1, 1, 3), &pages(3, 2), &[k.public_key()]);
    let idx = verify(&f[..]).unwrap().index;
    let e2 = idx.get(2).unwrap();
    // Every byte of page 2's sealed payload (nonce, ciphertext, tag).
    for at in e2.offset + 10..e2.offset + e2.size as u64 {
        let mut t = f.clone();
        t[at as usize] ^= 0x01;
        let e = decode_file_with(&t, Some(&k)).unwrap_err();
        assert!(matches!(e, Error::PageAuth { pgno: 2 }), "byte {at}: {e}");
    }
}

#[test]
fn a_changed_index_fails_its_tag() {
    let k = random_key();
    let f = encode(header(1, 1, 3), &pages(3, 2), &[k.public_key()]);
    let n = f.len();
    let tag_at = n - 16 - RECIPIENT_ENTRY_SIZE - TAG_SIZE;
    let len = u64::from_be_bytes(f[tag_at - 8..tag_at].try_into().unwrap()) as usize;
    let index_start = tag_at - 8 - len;
    let mut bad_tag = f.clone();
    bad_tag[tag_at] ^= 1;
    let e = decode_file_with(&bad_tag, Some(&k)).unwrap_err();
    assert!(matches!(e, Error::IndexAuth), "{e}");
    let mut bad_index = f.clone();
    bad_index[index_start] ^= 0x02; // page 1 → page 3 in the first entry
    let e = decode_file_with(&bad_index, Some(&k)).unwrap_err();
    assert!(matches!(e, Error::IndexAuth), "{e}");
    // The lazy path: the tag is checked before the (now out of order) index is parsed.
    let h = Header::decode(&bad_index).unwrap();
    assert!(matches!(
        parse_tail_of(&h, n as u64, &bad_index),
        Err(Error::BadIndex(_))
    ));
    let head: [u8; 100] = bad_index[..100].try_into().unwrap();
    assert!(matches!(
        open_tail(&h, &head, n as u64, &bad_index, &k),
        Err(Error::IndexAuth)
    ));
}

#[test]
fn a_recipient_block_from_another_file_is_refused() {
    let k = random_key();
    let f1 = encode(header(1, 1, 3), &pages(3, 1), &[k.public_key()]);
    let f2 = encode(header(1, 1, 3), &pages(3, 1), &[k.public_key()]);
    let n = f1.len();
    let back = n - 16 - 80..n - 16;
    // Both copies swapped: the key opens the other file's CEK, and page 1 fails.
    let mut both = f1.clone();
    both[100..180].copy_from_slice(&f2[100..180]);
    both[back.clone()].copy_from_slice(&f2[back.clone()]);
    assert!(matches!(
        decode_file_with(&both, Some(&k)),
        Err(Error::PageAuth { pgno: 1 })
    ));
    // The trailing copy only (what a lazy reader uses): the index tag fails there, and a
    // full decode sees the two copies differ.
    let mut tail_only = f1.clone();
    tail_only[back.clone()].copy_from_slice(&f2[back]);
    assert!(matches!(
        decode_file_with(&tail_only, Some(&k)),
        Err(Error::RecipientBlocksDiffer)
    ));
    let h = Header::decode(&tail_only).unwrap();
    let head: [u8; 100] = tail_only[..100].try_into().unwrap();
    assert!(matches!(
        open_tail(&h, &head, n as u64, &tail_only, &k),
        Err(Error::IndexAuth)
    ));
    // Another key: not a recipient, from the tail alone.
    assert!(matches!(
        open_tail(&h, &head, n as u64, &tail_only, &random_key()),
        Err(Error::NotARecipient { recipients: 1 })
    ));
}

#[test]
fn lazy_reader_opens_single_frames_and_refuses_misplaced_ones() {
    let k = random_key();
    let pg = pages(6, 3);
    let f = encode(header(1, 1, 6), &pg, &[k.public_key()]);
    let h = Header::decode(&f).unwrap();
    assert_eq!(h.frames_offset(), 180);
    // A small tail first: it asks for more, then completes.
    let TailRead::NeedFrom(from) = parse_tail_of(&h, f.len() as u64, &f[f.len() - 40..]).unwrap() else {
        panic!("40 bytes cannot hold an encrypted tail")
    };
    let tail = match parse_tail_of(&h, f.len() as u64, &f[from as usize..]).unwrap() {
        TailRead::Complete(t) => t,
        TailRead::NeedFrom(o) => match parse_tail_of(&h, f.len() as u64, &f[o as usize..]).unwrap() {
            TailRead::Complete(t) => t,
            other => panic!("{other:?}"),
        },
    };
    tail.index.check_header(&h).unwrap();
    let sealed = tail.sealed.as_ref().unwrap();
    let cek = crypto::unwrap_content_key(&sealed.recipient_block, &k).unwrap();
    let keys = crypto::FileKeys::new(&cek, f[..100].try_into().unwrap());
    sealed.authenticate(&keys).unwrap();
    let mut dec = PageDecompressor::new();
    let mut out = vec![0u8; 512];
    for e in tail.index.entries() {
        let frame = &f[e.offset as usize..(e.offset + e.size as u64) as usize];
        open_page_frame(&mut dec, &keys, frame, e.pgno, 512, &mut out).unwrap();
        assert_eq!(out, pg[e.pgno as usize - 1].1);
    }
    // Page 2's frame relabelled as page 3: the AAD binds the page number.
    let e2 = tail.index.get(2).unwrap();
    let mut frame = f[e2.offset as usize..(e2.offset + e2.size as u64) as usize].to_vec();
    frame[3] = 3;
    assert!(matches!(
        open_page_frame(&mut dec, &keys, &frame, 3, 512, &mut out),
        Err(Error::PageAuth { pgno: 3 })
    ));
    // The same page of another file (another header, another CEK): refused.
    let other = encode(header(1, 1, 6), &pg, &[k.public_key()]);
    let frame = &other[e2.offset as usize..(e2.offset + e2.size as u64) as usize];
    assert!(open_page_frame(&mut dec, &keys, frame, 2, 512, &mut out).is_err());
}

#[test]
fn compaction_reseals_under_a_new_content_key() {
    let k = random_key();
    let to = [k.public_key()];
    let snap = encode(header(1, 1, 4), &pages(4, 1), &to);
    let plain = encode(header(2, 2, 4), &pages(4, 2)[1..2], &[]);
    let incr = encode(header(3, 3, 5), &pages(5, 3)[2..], &to);
    let enc = Encoding::sealed(Compression::Lz4, &to);
    let out = compact_with(vec![&snap[..], &plain[..], &incr[..]], Vec::new(), &enc, Some(&k)).unwrap();
    let f = out.writer;
    assert!(out.header.is_encrypted());
    for input in [&snap, &incr] {
        assert_ne!(&f[100..180], &input[100..180], "a content key is never reused");
    }
    let d = decode_file_with(&f, Some(&k)).unwrap();
    let want: Vec<(u32, Vec<u8>)> = vec![
        pages(4, 1)[0].clone(),
        pages(4, 2)[1].clone(),
        pages(5, 3)[2].clone(),
        pages(5, 3)[3].clone(),
        pages(5, 3)[4].clone(),
    ];
    assert_eq!(d.pages, want);
    // Without the key the encrypted inputs cannot be merged.
    let e = compact_with(vec![&snap[..], &plain[..]], Vec::new(), &enc, None).unwrap_err();
    assert!(matches!(e, Error::KeyRequired { .. }), "{e}");
    // And plaintext output from encrypted inputs is v3.
    let out = compact_with(vec![&snap[..]], Vec::new(), &Compression::Lz4.into(), Some(&k)).unwrap();
    assert_eq!(&out.writer[..4], b"LTX1");
}

#[test]
fn rekey_rewraps_with_the_same_count_and_reseals_otherwise() {
    let (old, new1, new2) = (random_key(), random_key(), random_key());
    let f = encode(header(1, 2, 8), &pages(8, 4), &[old.public_key()]);
    let (same, how) = rekey(&f, &old, &[new1.public_key()], &mut OsEntropy::default()).unwrap();
    assert_eq!(how, Rekeyed::Rewrapped);
    assert_eq!(same.len(), f.len());
    assert_eq!(
        same[180..f.len() - 16 - 80],
        f[180..f.len() - 16 - 80],
        "pages, index and tag unchanged"
    );
    assert_eq!(decode_file_with(&same, Some(&new1)).unwrap().pages, pages(8, 4));
    assert!(matches!(
        decode_file_with(&same, Some(&old)),
        Err(Error::NotARecipient { .. })
    ));
    let (more, how) = rekey(
        &f,
        &old,
        &[new1.public_key(), new2.public_key()],
        &mut OsEntropy::default(),
    )
    .unwrap();
    assert_eq!(how, Rekeyed::Resealed);
    for k in [&new1, &new2] {
        assert_eq!(decode_file_with(&more, Some(k)).unwrap().pages, pages(8, 4));
    }
    // Wrong key, plaintext input, a corrupt input: refused, nothing produced.
    assert!(matches!(
        rekey(&f, &new2, &[new1.public_key()], &mut OsEntropy::default()),
        Err(Error::NotARecipient { .. })
    ));
    let plain = encode(header(1, 1, 1), &pages(1, 1), &[]);
    assert!(rekey(&plain, &old, &[new1.public_key()], &mut OsEntropy::default()).is_err());
    let mut corrupt = f.clone();
    corrupt[300] ^= 1;
    assert!(matches!(
        rekey(&corrupt, &old, &[new1.public_key()], &mut OsEntropy::default()),
        Err(Error::ChecksumMismatch { .. })
    ));
}

#[test]
fn v4_header_rules() {
    let k = random_key();
    let f = encode(header(1, 1, 1), &pages(1, 1), &[k.public_key()]);
    let mut h = [0u8; 100];
    h.copy_from_slice(&f[..100]);
    assert_eq!(Header::decode(&h).unwrap().recipients, 1);
    // The encrypted flag on an LTX1 file.
    let mut v3 = h;
    v3[..4].copy_from_slice(b"LTX1");
    assert!(matches!(
        Header::decode(&v3),
        Err(Error::InvalidHeader { field: "flags", .. })
    ));
    // Another HPKE suite.
    let mut suite = h;
    suite[87] = 1; // AES-128-GCM
    assert!(matches!(
        Header::decode(&suite),
        Err(Error::InvalidHeader {
            field: "encryption",
            ..
        })
    ));
    // No recipients.
    let mut none = h;
    none[80..82].copy_from_slice(&[0, 0]);
    assert!(matches!(
        Header::decode(&none),
        Err(Error::InvalidHeader {
            field: "recipients",
            ..
        })
    ));
    // LTX4 without the encrypted flag is a plaintext file (bytes 80..88 ignored).
    let mut plain = h;
    plain[7] = 2;
    let d = Header::decode(&plain).unwrap();
    assert!(!d.is_encrypted() && d.recipients == 0);
    // An unknown magic names both.
    let mut bad = h;
    bad[3] = b'5';
    assert!(Header::decode(&bad).unwrap_err().to_string().contains("LTX4"));
}

/// Reads `f`'s pages sealed and opens them afterwards, as a restore's reader and its
/// pool of opening threads do, then checks the snapshot checksum of what was opened.
type Pages = Vec<(u32, Vec<u8>)>;

fn decode_sealed(f: &[u8], k: &PrivateKey) -> Result<(Pages, DecodeSummary)> {
    let mut dec = Decoder::with_key(f, Some(k))?;
    let opener = dec.page_opener().expect("a keyed encrypted file has an opener");
    let mut frames = Vec::new();
    while let Some(frame) = dec.next_sealed()? {
        frames.push(frame);
    }
    let mut pd = PageDecompressor::new();
    let mut opened = DbChecksum::new();
    let mut pages = Vec::new();
    for frame in &mut frames {
        let mut page = vec![0u8; 512];
        let pgno = opener.open(&mut pd, frame, &mut page)?;
        assert_eq!(pgno, frame.pgno());
        opened.toggle_page(pgno, &page);
        pages.push((pgno, page));
    }
    Ok((pages, dec.finish_sealed()?.check(opened)?))
}

fn checksummed_snapshot(commit: u32, to: &[PublicKey]) -> Vec<u8> {
    let h = Header {
        flags: 0,
        ..header(1, 1, commit)
    };
    let ps = pages(commit, 4);
    let mut sum = DbChecksum::new();
    for (p, d) in &ps {
        sum.toggle_page(*p, d);
    }
    let mut enc = Encoder::with_encoding(Vec::new(), h, &Encoding::sealed(Compression::Lz4, to)).unwrap();
    for (p, d) in &ps {
        enc.write_page(*p, d).unwrap();
    }
    enc.finish(sum.value()).unwrap().0
}

#[test]
fn pages_read_sealed_and_opened_apart_are_the_pages_decoded_in_line() {
    let k = random_key();
    let snapshot = checksummed_snapshot(300, &[k.public_key()]);
    let later: Vec<_> = pages(300, 5).into_iter().filter(|(p, _)| p % 3 == 0).collect();
    let delta = encode(header(2, 2, 300), &later, &[k.public_key()]);
    for f in [&snapshot, &delta] {
        let in_line = decode_file_with(f, Some(&k)).unwrap();
        let (pages, summary) = decode_sealed(f, &k).unwrap();
        assert_eq!(pages, in_line.pages);
        assert_eq!(summary.trailer, in_line.trailer);
        assert_eq!(summary.index, in_line.index);
    }
}

#[test]
fn a_sealed_read_still_refuses_a_flipped_page_a_wrong_checksum_and_mixed_use() {
    let k = random_key();
    let f = checksummed_snapshot(3, &[k.public_key()]);
    let e2 = *verify(&f[..]).unwrap().index.get(2).unwrap();
    let mut t = f.clone();
    t[e2.offset as usize + 20] ^= 1;
    assert!(matches!(decode_sealed(&t, &k), Err(Error::PageAuth { pgno: 2 })));
    let mut t = f.clone();
    let n = t.len();
    t[n - 1] ^= 1; // the file checksum
    assert!(matches!(decode_sealed(&t, &k), Err(Error::ChecksumMismatch { .. })));

    // The snapshot's pages must add up to its checksum: one missing fails.
    let mut dec = Decoder::with_key(&f[..], Some(&k)).unwrap();
    while dec.next_sealed().unwrap().is_some() {}
    let e = dec.finish_sealed().unwrap().check(DbChecksum::new()).unwrap_err();
    assert!(matches!(e, Error::PostApplyChecksumMismatch { .. }), "{e}");

    // A file read sealed is not also read opened, nor finished as if it had been.
    let mut dec = Decoder::with_key(&f[..], Some(&k)).unwrap();
    dec.next_sealed().unwrap().unwrap();
    assert!(matches!(dec.next_page(&mut [0u8; 512]), Err(Error::Usage(_))));
    let mut dec = Decoder::with_key(&f[..], Some(&k)).unwrap();
    while dec.next_sealed().unwrap().is_some() {}
    assert!(matches!(dec.finish(), Err(Error::Usage(_))));
    let mut dec = Decoder::with_key(&f[..], Some(&k)).unwrap();
    dec.next_page(&mut [0u8; 512]).unwrap().unwrap();
    assert!(matches!(dec.next_sealed(), Err(Error::Usage(_))));
    // Nor a plaintext file, nor one read without its key.
    let plain = encode(header(1, 1, 2), &pages(2, 1), &[]);
    assert!(Decoder::new(&plain[..]).unwrap().page_opener().is_none());
    assert!(Decoder::new(&f[..]).unwrap().page_opener().is_none());
    let mut dec = Decoder::new(&plain[..]).unwrap();
    assert!(matches!(dec.next_sealed(), Err(Error::Usage(_))));
    let mut dec = Decoder::new(&f[..]).unwrap();
    assert!(matches!(dec.next_sealed(), Err(Error::KeyRequired { .. })));
}
