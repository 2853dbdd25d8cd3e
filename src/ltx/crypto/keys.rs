//! X25519 key pairs as `ltx keygen` prints them (64 hex digits each), and the
//! [`Encryption`] a keyed database carries: its private key and the recipients it
//! encrypts new files to.

use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, Serializable};
use zeroize::Zeroizing;

use super::super::error::Result;
use super::entropy::Entropy;

type KemPrivate = <X25519HkdfSha256 as Kem>::PrivateKey;
type KemPublic = <X25519HkdfSha256 as Kem>::PublicKey;

/// Why a key was refused. Messages never contain the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not hexadecimal.
    #[error("{what} is not hexadecimal (expected 64 hex digits, as `litestream-vfs keygen` prints)")]
    NotHex {
        /// Which key ("encryption key", "public key 2", ...).
        what: String,
    },
    /// Hex of the wrong length.
    #[error("{what} is {digits} hex digits long, expected 64 (a 32-byte X25519 key)")]
    WrongLength {
        /// Which key.
        what: String,
        /// Hex digits given.
        digits: usize,
    },
}

fn parse_hex32(text: &str, what: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    if !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(KeyError::NotHex { what: what.into() });
    }
    if text.len() != 64 {
        return Err(KeyError::WrongLength {
            what: what.into(),
            digits: text.len(),
        });
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|_| KeyError::NotHex { what: what.into() })?;
    Ok(out)
}

/// A recipient's X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }

    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        parse_hex32(text, "public key").map(PublicKey)
    }

    /// Parses a comma-separated list of hex public keys (`encrypt_to=`); empty items are
    /// skipped.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, KeyError> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
            .map(|(i, s)| parse_hex32(s, &format!("public key {} of the list", i + 1)).map(PublicKey))
            .collect()
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, as `keygen` prints it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub(crate) fn to_kem(self) -> std::result::Result<KemPublic, hpke::HpkeError> {
        KemPublic::from_bytes(&self.0)
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An X25519 private key. Wiped from memory on drop; `Debug` shows only its public key,
/// so it cannot reach a log line or an error message by accident.
#[derive(Clone)]
pub struct PrivateKey {
    bytes: Zeroizing<[u8; 32]>,
    public: PublicKey,
}

impl PrivateKey {
    /// The key from its 32 bytes (any 32 bytes are a valid X25519 private key).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let bytes = Zeroizing::new(bytes);
        let public = match KemPrivate::from_bytes(&bytes[..]) {
            Ok(sk) => {
                let pk = X25519HkdfSha256::sk_to_pk(&sk).to_bytes();
                let mut b = [0u8; 32];
                b.copy_from_slice(&pk);
                PublicKey(b)
            }
            // X25519 accepts every 32-byte string; keep a well-defined value regardless.
            Err(_) => PublicKey([0u8; 32]),
        };
        PrivateKey { bytes, public }
    }

    /// Parses 64 hex digits (surrounding whitespace, e.g. a key file's newline, ignored).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        parse_hex32(text, "encryption key").map(Self::from_bytes)
    }

    /// A new random key pair's private half.
    pub fn generate(entropy: &mut dyn Entropy) -> Result<Self> {
        let mut b = Zeroizing::new([0u8; 32]);
        entropy.fill(&mut b[..])?;
        Ok(Self::from_bytes(*b))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Lowercase hex, for `keygen` only.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(&self.bytes[..]))
    }

    pub(crate) fn to_kem(&self) -> std::result::Result<KemPrivate, hpke::HpkeError> {
        KemPrivate::from_bytes(&self.bytes[..])
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey(<redacted>, public {})", self.public)
    }
}

/// What a keyed database uses: its private key (to read the replica) and the public keys
/// every new file is wrapped to (the key's own first, then any `encrypt_to=` extras).
#[derive(Clone, Debug)]
pub struct Encryption {
    key: PrivateKey,
    recipients: Vec<PublicKey>,
}

impl Encryption {
    /// Encrypts to `key`'s public key and then to `extra` (duplicates dropped).
    pub fn new(key: PrivateKey, extra: &[PublicKey]) -> Self {
        let mut recipients = vec![key.public_key()];
        // A set, not `recipients.contains`: quadratic in the list, 65,535 keys took
        // billions of comparisons before the count could even be refused.
        let mut seen: std::collections::HashSet<PublicKey> = recipients.iter().copied().collect();
        for p in extra {
            if seen.insert(*p) {
                recipients.push(*p);
            }
        }
        Encryption { key, recipients }
    }

    /// The private key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// Every public key new files are wrapped to.
    pub fn recipients(&self) -> &[PublicKey] {
        &self.recipients
    }
}
