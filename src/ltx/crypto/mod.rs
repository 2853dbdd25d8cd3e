//! LTX v4: per-page encryption, as superfly/ltx proposes it (issue #77, PR #78), so that a
//! lazy replica still reads one page with one ranged GET. Byte layout and the choices we
//! made where the proposal is silent: `docs/encryption.md`.
//!
//! - a fresh random 32-byte content key (CEK) per file ([`ContentKey`]), never reused;
//! - the CEK wrapped to every recipient public key with single-shot RFC 9180 HPKE, base
//!   mode, DHKEM(X25519, HKDF-SHA256) + HKDF-SHA256 + ChaCha20-Poly1305, `info`
//!   `"ltx-cek-wrap"`, empty AAD: 80 bytes per recipient ([`wrap_content_key`]);
//! - a page key and an index key expanded from the CEK with HKDF-Expand-SHA256
//!   (`"ltx-page-key"`, `"ltx-index-key"`), used as ChaCha20-Poly1305 keys ([`FileKeys`]);
//! - every compressed page sealed under a random 96-bit nonce with
//!   AAD = SHA-256(header) ‖ be32(pgno) ‖ the 6-byte frame header;
//! - the page index authenticated by a Poly1305 tag (ChaCha20-Poly1305 over an empty
//!   plaintext, the index bytes as AAD, the fixed nonce `"ltx-idx-auth"`).
//!
//! Keys come in as values; randomness comes from an [`Entropy`] the caller may replace
//! (known-answer tests use a fixed one), so the codec still does no I/O of its own.

mod entropy;
mod file_keys;
mod keys;
mod wrap;

#[cfg(test)]
mod tests;

pub use entropy::{Entropy, FixedEntropy, OsEntropy};
pub use file_keys::FileKeys;
pub use keys::{Encryption, KeyError, PrivateKey, PublicKey};
pub use wrap::{unwrap_content_key, wrap_content_key, ContentKey};

/// HPKE KEM id of DHKEM(X25519, HKDF-SHA256) (RFC 9180 §7.1), header bytes 82..84.
pub const KEM_X25519_HKDF_SHA256: u16 = 0x0020;
/// HPKE KDF id of HKDF-SHA256 (RFC 9180 §7.2), header bytes 84..86.
pub const KDF_HKDF_SHA256: u16 = 0x0001;
/// HPKE AEAD id of ChaCha20-Poly1305 (RFC 9180 §7.3), header bytes 86..88.
pub const AEAD_CHACHA20_POLY1305: u16 = 0x0003;

/// Size of a content key, and of every key derived from it.
pub const CEK_SIZE: usize = 32;
/// One recipient entry: encapsulated key (32) ‖ wrapped CEK (32) ‖ tag (16).
pub const RECIPIENT_ENTRY_SIZE: usize = 80;
/// The random nonce in front of every sealed page.
pub const NONCE_SIZE: usize = 12;
/// The Poly1305 tag after every sealed page, and after the page index.
pub const TAG_SIZE: usize = 16;
/// Bytes sealing adds to a compressed page: nonce and tag.
pub const SEAL_OVERHEAD: usize = NONCE_SIZE + TAG_SIZE;
/// Most recipients a file can name (the header field is a u16).
pub const MAX_RECIPIENTS: usize = u16::MAX as usize;
