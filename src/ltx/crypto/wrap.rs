//! The content key and its recipient block: one single-shot HPKE seal of the CEK per
//! recipient public key (RFC 9180 base mode, `info` "ltx-cek-wrap", empty AAD), each
//! entry `enc (32) ‖ sealed CEK (32) ‖ tag (16)` as Go's `hpke.Seal` lays it out.

use hpke::aead::{AeadTag, ChaCha20Poly1305};
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::rand_core::{TryCryptoRng, TryRng};
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

use super::super::error::{Error, Result};
use super::entropy::Entropy;
use super::keys::{PrivateKey, PublicKey};
use super::{CEK_SIZE, MAX_RECIPIENTS, RECIPIENT_ENTRY_SIZE, TAG_SIZE};

const WRAP_INFO: &[u8] = b"ltx-cek-wrap";
const ENC_SIZE: usize = 32;
/// Random bytes one X25519 encapsulation draws (the ephemeral key's IKM, RFC 9180 §4.1).
const ENCAP_RANDOMNESS: usize = 32;

/// A file's content encryption key: 32 random bytes, generated for one file and never
/// used for another. Wiped on drop; never printed.
pub struct ContentKey(Zeroizing<[u8; CEK_SIZE]>);

impl ContentKey {
    /// A fresh random key.
    pub fn generate(entropy: &mut dyn Entropy) -> Result<Self> {
        let mut k = Zeroizing::new([0u8; CEK_SIZE]);
        entropy.fill(&mut k[..])?;
        Ok(ContentKey(k))
    }

    pub(crate) fn bytes(&self) -> &[u8; CEK_SIZE] {
        &self.0
    }
}

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentKey(<redacted>)")
    }
}

/// Hands HPKE exactly the bytes drawn for it beforehand, so the encapsulation's
/// randomness goes through [`Entropy`] (and is reproducible in tests). Should HPKE ever
/// ask for more than was drawn, it gets zeros and the seal is refused afterwards.
struct Drawn {
    bytes: Zeroizing<[u8; ENCAP_RANDOMNESS]>,
    used: usize,
    overdrawn: bool,
}

impl TryRng for Drawn {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> std::result::Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> std::result::Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> std::result::Result<(), Self::Error> {
        for d in dst {
            match self.bytes.get(self.used) {
                Some(&b) => *d = b,
                None => {
                    *d = 0;
                    self.overdrawn = true;
                }
            }
            self.used += 1;
        }
        Ok(())
    }
}

impl TryCryptoRng for Drawn {}

/// Wraps `cek` to each of `recipients`: the recipient block, `80 × recipients` bytes.
pub fn wrap_content_key(cek: &ContentKey, recipients: &[PublicKey], entropy: &mut dyn Entropy) -> Result<Vec<u8>> {
    if recipients.is_empty() || recipients.len() > MAX_RECIPIENTS {
        return Err(Error::Crypto(format!(
            "an encrypted file needs 1 to {MAX_RECIPIENTS} recipients, not {}",
            recipients.len()
        )));
    }
    let mut block = Vec::with_capacity(recipients.len() * RECIPIENT_ENTRY_SIZE);
    for (i, recipient) in recipients.iter().enumerate() {
        let pk = recipient
            .to_kem()
            .map_err(|e| Error::Crypto(format!("recipient public key {} ({recipient}): {e}", i + 1)))?;
        let mut rng = Drawn {
            bytes: Zeroizing::new([0u8; ENCAP_RANDOMNESS]),
            used: 0,
            overdrawn: false,
        };
        entropy.fill(&mut rng.bytes[..])?;
        let mut sealed = Zeroizing::new(*cek.bytes());
        let (enc, tag) =
            hpke::single_shot_seal_inout_detached_with_rng::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
                &OpModeS::Base,
                &pk,
                WRAP_INFO,
                (&mut sealed[..]).into(),
                &[],
                &mut rng,
            )
            .map_err(|e| {
                Error::Crypto(format!(
                    "wrapping the content key to recipient {} ({recipient}): {e}",
                    i + 1
                ))
            })?;
        if rng.overdrawn {
            return Err(Error::Crypto("HPKE drew more randomness than X25519 needs".into()));
        }
        block.extend_from_slice(&enc.to_bytes());
        block.extend_from_slice(&sealed[..]);
        block.extend_from_slice(&tag.to_bytes());
    }
    Ok(block)
}

/// Finds the entry of `block` that `key` opens and returns the content key.
/// [`Error::NotARecipient`] when none does.
pub fn unwrap_content_key(block: &[u8], key: &PrivateKey) -> Result<ContentKey> {
    let count = block.len() / RECIPIENT_ENTRY_SIZE;
    if !block.len().is_multiple_of(RECIPIENT_ENTRY_SIZE) || count == 0 {
        return Err(Error::Truncated("recipient block"));
    }
    let sk = key
        .to_kem()
        .map_err(|e| Error::Crypto(format!("the private key: {e}")))?;
    for entry in block.chunks_exact(RECIPIENT_ENTRY_SIZE) {
        let (enc, rest) = entry.split_at(ENC_SIZE);
        let (sealed, tag) = rest.split_at(CEK_SIZE);
        let (Ok(enc), Ok(tag)) = (
            <X25519HkdfSha256 as Kem>::EncappedKey::from_bytes(enc),
            AeadTag::<ChaCha20Poly1305>::from_bytes(&tag[..TAG_SIZE]),
        ) else {
            continue;
        };
        let mut cek = Zeroizing::new([0u8; CEK_SIZE]);
        cek.copy_from_slice(sealed);
        let opened = hpke::single_shot_open_inout_detached::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &sk,
            &enc,
            WRAP_INFO,
            (&mut cek[..]).into(),
            &[],
            &tag,
        );
        if opened.is_ok() {
            return Ok(ContentKey(cek));
        }
    }
    Err(Error::NotARecipient {
        recipients: count.min(u16::MAX as usize) as u16,
    })
}
