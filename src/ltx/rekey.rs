//! Giving an encrypted file to a new set of recipients.
//!
//! The recipient block is outside everything a page or the index is bound to, except
//! through the header, whose recipient count every page's AAD covers (via the header
//! hash). So:
//!
//! - **same number of recipients**: the content key is wrapped anew and both copies of
//!   the block replaced; pages, index and tag stay byte for byte. The file checksum of an
//!   encrypted file covers the bytes as written, so it is recomputed without opening a
//!   page. Cost: reading and writing the file once.
//! - **another number of recipients**: the header changes, and with it every page's AAD:
//!   the file is decoded and encoded again under a new content key (every page opened,
//!   decompressed, compressed and sealed again).
//!
//! Either way the old recipients' keys still open any copy of the old file they kept:
//! rekeying controls who can read the replica from now on, not who read it before.

use super::checksum::{Crc64, CHECKSUM_FLAG};
use super::crypto::{unwrap_content_key, wrap_content_key, Entropy, PrivateKey, PublicKey, TAG_SIZE};
use super::decoder::{decode_file_with, verify};
use super::encoder::Encoder;
use super::encoding::Encoding;
use super::error::{Error, Result};
use super::frame::Compression;
use super::header::{Header, HEADER_SIZE, TRAILER_SIZE};

/// How [`rekey`] rewrote a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rekeyed {
    /// Only the recipient blocks and the file checksum changed.
    Rewrapped,
    /// Every page was opened and sealed again under a new content key.
    Resealed,
}

/// The encrypted file `file`, opened with `key`, given to `recipients` instead. The
/// file's integrity is verified first (a corrupt file is refused, never re-checksummed).
pub fn rekey(
    file: &[u8],
    key: &PrivateKey,
    recipients: &[PublicKey],
    entropy: &mut dyn Entropy,
) -> Result<(Vec<u8>, Rekeyed)> {
    let header = Header::decode(file)?;
    if !header.is_encrypted() {
        return Err(Error::Usage("the file is not encrypted: nothing to rekey"));
    }
    if recipients.is_empty() {
        return Err(Error::Usage("rekey needs at least one recipient"));
    }
    // Structure and file checksum, without opening anything.
    verify(file)?;
    if recipients.len() != header.recipients as usize {
        return reseal(file, key, recipients).map(|f| (f, Rekeyed::Resealed));
    }
    let block_len = header.recipient_block_size();
    let front = HEADER_SIZE..HEADER_SIZE + block_len;
    let back_end = file.len() - TRAILER_SIZE;
    let back = back_end - block_len..back_end;
    let cek = unwrap_content_key(&file[front.clone()], key)?;
    // The index tag sits just before the trailing block: check it with the opened key,
    // so a block that does not belong to this file is not passed on.
    let keys = super::crypto::FileKeys::new(
        &cek,
        file[..HEADER_SIZE].try_into().map_err(|_| Error::Truncated("header"))?,
    );
    let tag_at = back.start - TAG_SIZE;
    let index = index_bytes(file, tag_at)?;
    keys.check_index_tag(index, &file[tag_at..back.start])?;
    let block = wrap_content_key(&cek, recipients, entropy)?;
    let mut out = file.to_vec();
    out[front].copy_from_slice(&block);
    out[back].copy_from_slice(&block);
    let mut crc = Crc64::new();
    crc.update(&out[..out.len() - 8]);
    let sum = CHECKSUM_FLAG | crc.finish();
    let at = out.len() - 8;
    out[at..].copy_from_slice(&sum.to_be_bytes());
    Ok((out, Rekeyed::Rewrapped))
}

/// The index bytes (entries, terminator, u64 length) that end at `end`.
fn index_bytes(file: &[u8], end: usize) -> Result<&[u8]> {
    let len_at = end.checked_sub(8).ok_or(Error::Truncated("page index"))?;
    let mut n = [0u8; 8];
    n.copy_from_slice(&file[len_at..end]);
    let len = usize::try_from(u64::from_be_bytes(n)).map_err(|_| Error::index("index length"))?;
    let start = len_at.checked_sub(len).ok_or_else(|| Error::index("index length"))?;
    Ok(&file[start..end])
}

/// Decodes `file` with `key` and encodes it again for `recipients` (LZ4, a new content
/// key). Pages are verified on the way: the output exists only if the input was whole.
fn reseal(file: &[u8], key: &PrivateKey, recipients: &[PublicKey]) -> Result<Vec<u8>> {
    let decoded = decode_file_with(file, Some(key))?;
    let encoding = Encoding::sealed(Compression::Lz4, recipients);
    let mut enc = Encoder::with_encoding(Vec::with_capacity(file.len()), decoded.header, &encoding)?;
    for (pgno, page) in &decoded.pages {
        enc.write_page(*pgno, page)?;
    }
    Ok(enc.finish(decoded.trailer.post_apply_checksum)?.0)
}
