//! The keys of one file, expanded from its content key, and what they seal: pages and the
//! page index.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use hkdf::Hkdf;
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
    page: ChaCha20Poly1305,
    index: ChaCha20Poly1305,
    header_hash: [u8; 32],
}

impl std::fmt::Debug for FileKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKeys(<redacted>)")
    }
}

fn expand(prk: &Hkdf<Sha256>, info: &[u8]) -> ChaCha20Poly1305 {
    let mut key = Zeroizing::new([0u8; CEK_SIZE]);
    // 32 bytes is far below HKDF-SHA256's limit of 255 × 32: this cannot fail.
    if prk.expand(info, &mut key[..]).is_err() {
        unreachable!("HKDF-Expand of 32 bytes");
    }
    ChaCha20Poly1305::new(&(*key).into())
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
        let tag = self
            .page
            .encrypt_inout_detached(&Nonce::from(nonce), &aad, (&mut out[start + NONCE_SIZE..]).into())
            .map_err(|_| Error::Crypto("sealing a page failed".into()))?;
        out.extend_from_slice(&tag);
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
        let split = rest.len() - TAG_SIZE;
        let (body, tag) = rest.split_at_mut(split);
        let nonce: [u8; NONCE_SIZE] = (&*nonce).try_into().map_err(|_| Error::PageAuth { pgno })?;
        let tag = Tag::try_from(&*tag).map_err(|_| Error::PageAuth { pgno })?;
        self.page
            .decrypt_inout_detached(&Nonce::from(nonce), &self.page_aad(frame_header), body.into(), &tag)
            .map_err(|_| Error::PageAuth { pgno })?;
        Ok(body)
    }

    /// The tag of the page index bytes `index` (entries, terminator and size field).
    pub fn index_tag(&self, index: &[u8]) -> Result<[u8; TAG_SIZE]> {
        let tag = self
            .index
            .encrypt_inout_detached(&Nonce::from(*INDEX_NONCE), index, (&mut [][..]).into())
            .map_err(|_| Error::Crypto("authenticating the page index failed".into()))?;
        let mut out = [0u8; TAG_SIZE];
        out.copy_from_slice(&tag);
        Ok(out)
    }

    /// Checks the tag of the page index bytes (constant time). [`Error::IndexAuth`] if it
    /// does not match.
    pub fn check_index_tag(&self, index: &[u8], tag: &[u8]) -> Result<()> {
        let tag = Tag::try_from(tag).map_err(|_| Error::IndexAuth)?;
        self.index
            .decrypt_inout_detached(&Nonce::from(*INDEX_NONCE), index, (&mut [][..]).into(), &tag)
            .map_err(|_| Error::IndexAuth)
    }
}
