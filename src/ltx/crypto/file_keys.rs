//! The keys of one file, expanded from its content key, and what they seal: pages and the
//! page index.
//!
//! ChaCha20-Poly1305 here is ring's (BoringSSL's assembly): 1.66 GiB per CPU second on a
//! 4 KiB page on the development machine, against 0.75 for RustCrypto's
//! `chacha20poly1305` 0.11 (`cargo bench --bench encryption`): the difference between
//! meeting the ≥ 1 GiB/s goal or not, on the path every page of every file takes. RustCrypto's
//! `chacha20` with its AVX-512 backend does not close the gap: `poly1305` has no AVX-512
//! code, and alone runs slower than ring's whole AEAD (docs/encryption.md "Performance").
//! The known-answer test opens our pages with RustCrypto's implementation, so each checks the
//! other.

use hkdf::Hkdf;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::super::error::{Error, Result};
use super::super::frame::FRAME_HEADER_SIZE;
use super::super::header::HEADER_SIZE;
use super::entropy::Entropy;
use super::wrap::ContentKey;
use super::{CEK_SIZE, NONCE_SIZE, SEAL_OVERHEAD, TAG_SIZE};

const PAGE_KEY_INFO: &[u8] = b"ltx-page-key";
const INDEX_KEY_INFO: &[u8] = b"ltx-index-key";
/// The fixed nonce of the index tag: safe only because the index key is used once.
const INDEX_NONCE: &[u8; NONCE_SIZE] = b"ltx-idx-auth";
/// SHA-256(header) ‖ be32(pgno) ‖ frame header.
const PAGE_AAD_SIZE: usize = 32 + 4 + FRAME_HEADER_SIZE;

/// The page and index keys of one file and the hash of its header: everything needed to
/// open (or seal) its pages and check (or make) its index tag.
pub struct FileKeys {
    page: LessSafeKey,
    index: LessSafeKey,
    header_hash: [u8; 32],
}

impl std::fmt::Debug for FileKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKeys(<redacted>)")
    }
}

fn expand(prk: &Hkdf<Sha256>, info: &[u8]) -> LessSafeKey {
    let mut key = Zeroizing::new([0u8; CEK_SIZE]);
    // 32 bytes is far below HKDF-SHA256's limit of 255 × 32: this cannot fail.
    if prk.expand(info, &mut key[..]).is_err() {
        unreachable!("HKDF-Expand of 32 bytes");
    }
    match UnboundKey::new(&CHACHA20_POLY1305, &key[..]) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => unreachable!("a 32-byte ChaCha20-Poly1305 key"),
    }
}

impl FileKeys {
    /// The keys of the file whose content key is `cek` and whose 100 header bytes (as
    /// stored) are `header`.
    pub fn new(cek: &ContentKey, header: &[u8; HEADER_SIZE]) -> Self {
        // The CEK is used directly as HKDF's pseudorandom key: Expand only, no Extract.
        let prk = match Hkdf::<Sha256>::from_prk(cek.bytes()) {
            Ok(prk) => prk,
            Err(_) => unreachable!("a 32-byte PRK is long enough for HKDF-SHA256"),
        };
        FileKeys {
            page: expand(&prk, PAGE_KEY_INFO),
            index: expand(&prk, INDEX_KEY_INFO),
            header_hash: Sha256::digest(header).into(),
        }
    }

    fn page_aad(&self, frame_header: &[u8; FRAME_HEADER_SIZE]) -> [u8; PAGE_AAD_SIZE] {
        let mut aad = [0u8; PAGE_AAD_SIZE];
        aad[..32].copy_from_slice(&self.header_hash);
        // The page number again, although the frame header also holds it: the proposal's
        // layout, kept byte for byte.
        aad[32..36].copy_from_slice(&frame_header[..4]);
        aad[36..].copy_from_slice(frame_header);
        aad
    }

    /// Appends `nonce ‖ ciphertext ‖ tag` of the compressed page `compressed` to `out`,
    /// for the frame whose 6-byte header is `frame_header`.
    pub fn seal_page(
        &self,
        frame_header: &[u8; FRAME_HEADER_SIZE],
        compressed: &[u8],
        entropy: &mut dyn Entropy,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let mut nonce = [0u8; NONCE_SIZE];
        entropy.fill(&mut nonce)?;
        let start = out.len();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(compressed);
        let aad = self.page_aad(frame_header);
        // Unique per key: random 96-bit nonces under a key that seals one file's pages.
        let tag = self
            .page
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut out[start + NONCE_SIZE..],
            )
            .map_err(|_| Error::Crypto("sealing a page failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens a sealed payload (`nonce ‖ ciphertext ‖ tag`) in place and returns the
    /// compressed page inside it. [`Error::PageAuth`] if any byte of it, of the frame
    /// header or of the file's header changed.
    pub fn open_page<'a>(&self, frame_header: &[u8; FRAME_HEADER_SIZE], sealed: &'a mut [u8]) -> Result<&'a [u8]> {
        let pgno = u32::from_be_bytes([frame_header[0], frame_header[1], frame_header[2], frame_header[3]]);
        if sealed.len() < SEAL_OVERHEAD {
            return Err(Error::PageAuth { pgno });
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_SIZE);
        let nonce: [u8; NONCE_SIZE] = (&*nonce).try_into().map_err(|_| Error::PageAuth { pgno })?;
        let aad = self.page_aad(frame_header);
        let body = self
            .page
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), rest)
            .map_err(|_| Error::PageAuth { pgno })?;
        Ok(body)
    }

    /// The tag of the page index bytes `index` (entries, terminator and size field).
    pub fn index_tag(&self, index: &[u8]) -> Result<[u8; TAG_SIZE]> {
        let tag = self
            .index
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*INDEX_NONCE), Aad::from(index), &mut [])
            .map_err(|_| Error::Crypto("authenticating the page index failed".into()))?;
        let mut out = [0u8; TAG_SIZE];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Checks the tag of the page index bytes (constant time). [`Error::IndexAuth`] if it
    /// does not match.
    pub fn check_index_tag(&self, index: &[u8], tag: &[u8]) -> Result<()> {
        if tag.len() != TAG_SIZE {
            return Err(Error::IndexAuth);
        }
        // An empty ciphertext followed by its tag: opening it checks the tag over the
        // index bytes, the AAD.
        let mut buf = [0u8; TAG_SIZE];
        buf.copy_from_slice(tag);
        self.index
            .open_in_place(Nonce::assume_unique_for_key(*INDEX_NONCE), Aad::from(index), &mut buf)
            .map(|_| ())
            .map_err(|_| Error::IndexAuth)
    }
}
