//! Encrypted (LTX v4) replicas: each file of a plan is opened once, when its index is
//! read — the content key from the recipient block at the end of the tail, the index
//! authenticated with it — and every page fetched later is opened with those keys.
//! Still one ranged GET per page: a sealed frame is 28 bytes longer, that is all.

use super::fetch::FetchError;
use super::state::PlanFile;
use crate::ltx::crypto::{FileKeys, PrivateKey};
use crate::ltx::{
    open_page_frame, open_tail, parse_tail_of, read_page_frame, Error, Header, PageDecompressor, TailRead, HEADER_SIZE,
};
use std::sync::Arc;

/// The tail of one planned file, parsed ([`crate::ltx::parse_tail_of`]); an encrypted
/// file is opened with `key` first and its index authenticated before it is parsed
/// ([`crate::ltx::open_tail`]). Errors: no key, or a key that is not a recipient
/// ([`FetchError::Key`]), anything else about the bytes ([`FetchError::Corrupt`]).
pub fn parse_tail(
    key: Option<&PrivateKey>,
    head: &[u8],
    header: &Header,
    file_len: u64,
    tail: &[u8],
) -> Result<(TailRead, Option<Arc<FileKeys>>), FetchError> {
    let corrupt = |e: Error| FetchError::Corrupt(e.to_string());
    if !header.is_encrypted() {
        return parse_tail_of(header, file_len, tail)
            .map(|t| (t, None))
            .map_err(corrupt);
    }
    let Some(key) = key else {
        return Err(FetchError::Key(format!(
            "the replica is encrypted (LTX v4, {} recipient(s)) and no encryption key was given: \
             open it with encryption_key=, encryption_key_file= or LITESTREAM_ENCRYPTION_KEY",
            header.recipients
        )));
    };
    let mut head100 = [0u8; HEADER_SIZE];
    head100.copy_from_slice(&head[..HEADER_SIZE]);
    match open_tail(header, &head100, file_len, tail, key) {
        Ok((read, keys)) => Ok((read, keys.map(Arc::new))),
        Err(Error::NotARecipient { recipients }) => Err(FetchError::Key(format!(
            "the encryption key given (public key {}) is not one of the replica's {recipients} recipient(s): wrong key",
            key.public_key()
        ))),
        Err(e) => Err(corrupt(e)),
    }
}

impl PlanFile {
    /// Decodes the page `pgno` (of `page_size` bytes) from its frame bytes (as listed in
    /// this file's index), opening it first when the file is encrypted.
    pub fn decode_page(&self, frame: &[u8], pgno: u32, page_size: u32, out: &mut [u8]) -> crate::ltx::Result<()> {
        match &self.keys {
            None => read_page_frame(frame, pgno, page_size, out),
            Some(keys) => open_page_frame(&mut PageDecompressor::new(), keys, frame, pgno, page_size, out),
        }
    }
}
