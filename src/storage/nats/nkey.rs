//! NATS nkeys, as far as a client needs them: decoding a seed (`SU...`), its public key
//! (`U...`) for the CONNECT's `nkey` field, and the Ed25519 signature of the server's nonce.
//! Ed25519 is ring's, already linked for TLS; the encoding (base32 without padding of a
//! prefix byte, the key and a CRC-16/XMODEM, little-endian) is the nkeys format.
//! Also reads `.creds` files: a user JWT and the user's seed between armour lines.

use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// The first five bits of every seed ('S').
const PREFIX_SEED: u8 = 18 << 3;

/// A decoded seed: the key pair and the public key's type prefix (user, account, ...).
pub(crate) struct KeyPairSeed {
    pair: Ed25519KeyPair,
    prefix: u8,
}

/// Shows the public key only: the seed is a secret.
impl std::fmt::Debug for KeyPairSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "nkey {}", self.public_key())
    }
}

impl KeyPairSeed {
    pub fn from_seed(seed: &str) -> Result<KeyPairSeed, String> {
        let raw = base32_decode(seed.trim()).ok_or("the nkey seed is not base32")?;
        if raw.len() != 36 {
            return Err(format!("the nkey seed decodes to {} bytes, not 36", raw.len()));
        }
        let crc = u16::from_le_bytes([raw[34], raw[35]]);
        if crc != crc16(&raw[..34]) {
            return Err("the nkey seed's checksum does not match".into());
        }
        if raw[0] & 0xf8 != PREFIX_SEED {
            return Err("not an nkey seed (seeds start with S)".into());
        }
        let prefix = ((raw[0] & 7) << 5) | ((raw[1] & 0xf8) >> 3);
        let pair = Ed25519KeyPair::from_seed_unchecked(&raw[2..34]).map_err(|_| "bad Ed25519 seed".to_string())?;
        Ok(KeyPairSeed { pair, prefix })
    }

    /// The public key as nkeys print it (`U...` for a user).
    pub fn public_key(&self) -> String {
        let mut raw = Vec::with_capacity(35);
        raw.push(self.prefix);
        raw.extend_from_slice(self.pair.public_key().as_ref());
        raw.extend_from_slice(&crc16(&raw).to_le_bytes());
        base32_encode(&raw)
    }

    /// The CONNECT's `sig`: the signature of the nonce, base64url without padding.
    pub fn sign_nonce(&self, nonce: &str) -> String {
        let sig = self.pair.sign(nonce.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig.as_ref())
    }
}

/// A `.creds` file's user JWT and seed: the first line after each `-----BEGIN ...-----`.
pub(crate) fn parse_creds(text: &str) -> Result<(String, String), String> {
    let after = |marker: &str| {
        let mut lines = text.lines().map(str::trim);
        lines.find(|l| l.starts_with("---") && l.contains(marker))?;
        lines.find(|l| !l.is_empty()).map(str::to_string)
    };
    let jwt = after("BEGIN NATS USER JWT").ok_or("no user JWT in the credentials file")?;
    let seed = after("BEGIN USER NKEY SEED").ok_or("no nkey seed in the credentials file")?;
    Ok((jwt, seed))
}

/// CRC-16/XMODEM (polynomial 0x1021, initial 0), as nkeys checksum their encodings.
fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0);
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_public_key_and_signatures_the_nkeys_crate_gives() {
        let theirs = nkeys::KeyPair::new_user();
        let ours = KeyPairSeed::from_seed(&theirs.seed().unwrap()).unwrap();
        assert_eq!(ours.public_key(), theirs.public_key());
        let sig = ours.sign_nonce("nonce-from-the-server");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).unwrap();
        theirs.verify(b"nonce-from-the-server", &raw).unwrap();
    }

    #[test]
    fn corrupt_or_non_seed_keys_are_refused() {
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        let mut flipped = seed.clone().into_bytes();
        flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(KeyPairSeed::from_seed(&flipped).unwrap_err().contains("checksum"));
        let public = nkeys::KeyPair::new_user().public_key();
        assert!(KeyPairSeed::from_seed(&public).is_err());
        assert!(KeyPairSeed::from_seed("not base32!").is_err());
    }

    #[test]
    fn creds_files_yield_their_jwt_and_seed() {
        let text = "-----BEGIN NATS USER JWT-----\neyJhbGciOi.x.y\n------END NATS USER JWT------\n\n\
                    ************************* IMPORTANT *************************\n\
                    NKEY Seed printed below can be used to sign and prove identity.\n\n\
                    -----BEGIN USER NKEY SEED-----\nSUAKYRHVIOREXV7EUZTBHUHL7NUMHPMAS7QMDU3GTVUKHMP2HYQGY3QMXM\n\
                    ------END USER NKEY SEED------\n";
        let (jwt, seed) = parse_creds(text).unwrap();
        assert_eq!(jwt, "eyJhbGciOi.x.y");
        assert!(seed.starts_with("SUAKYRHV"));
        assert!(parse_creds("just a jwt").is_err());
    }
}
