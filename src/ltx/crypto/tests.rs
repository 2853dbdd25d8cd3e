//! RFC 9180's vectors for the HPKE suite, and the key schedule's own properties.

use super::*;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, Serializable};

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

// RFC 9180, Appendix A.2.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305,
// base mode, and its first encryption (sequence number 0).
const IKM_E: &str = "909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b";
const PK_EM: &str = "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a";
const IKM_R: &str = "1ac01f181fdf9f352797655161c58b75c656a6cc2716dcb66372da835542e1df";
const PK_RM: &str = "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a";
const SK_RM: &str = "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb";
const INFO: &str = "4f6465206f6e2061204772656369616e2055726e";
const PT: &str = "4265617574792069732074727574682c20747275746820626561757479";
const AAD0: &str = "436f756e742d30";
const CT0: &str = "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28";

#[test]
fn rfc9180_a2_derive_key_pair() {
    let (sk, pk) = X25519HkdfSha256::derive_keypair(&unhex(IKM_R));
    assert_eq!(pk.to_bytes().to_vec(), unhex(PK_RM));
    // The private key of the vector maps to the same public key through our type.
    let ours = PrivateKey::from_bytes(unhex(SK_RM).try_into().unwrap());
    assert_eq!(ours.public_key().as_bytes().to_vec(), unhex(PK_RM));
    let _ = sk;
}

#[test]
fn rfc9180_a2_single_shot_seal_reproduces_enc_and_ciphertext() {
    // With the vector's ephemeral IKM as the randomness, the seal is the vector's.
    let pk = <X25519HkdfSha256 as Kem>::PublicKey::from_bytes(&unhex(PK_RM)).unwrap();
    let mut rng = FixedEntropy::new(&unhex(IKM_E));
    let mut drawn = [0u8; 32];
    rng.fill(&mut drawn).unwrap();
    struct R([u8; 32], usize);
    impl hpke::rand_core::TryRng for R {
        type Error = core::convert::Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            unreachable!()
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            unreachable!()
        }
        fn try_fill_bytes(&mut self, d: &mut [u8]) -> Result<(), Self::Error> {
            d.copy_from_slice(&self.0[self.1..self.1 + d.len()]);
            self.1 += d.len();
            Ok(())
        }
    }
    impl hpke::rand_core::TryCryptoRng for R {}
    let (enc, ct) = hpke::single_shot_seal_with_rng::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &hpke::OpModeS::Base,
        &pk,
        &unhex(INFO),
        &unhex(PT),
        &unhex(AAD0),
        &mut R(drawn, 0),
    )
    .unwrap();
    assert_eq!(enc.to_bytes().to_vec(), unhex(PK_EM));
    assert_eq!(ct, unhex(CT0));
}

#[test]
fn rfc9180_a2_open_with_the_recipient_key() {
    let sk = <X25519HkdfSha256 as Kem>::PrivateKey::from_bytes(&unhex(SK_RM)).unwrap();
    let enc = <X25519HkdfSha256 as Kem>::EncappedKey::from_bytes(&unhex(PK_EM)).unwrap();
    let pt = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &sk,
        &enc,
        &unhex(INFO),
        &unhex(CT0),
        &unhex(AAD0),
    )
    .unwrap();
    assert_eq!(pt, unhex(PT));
}

#[test]
fn wrap_uses_the_rfc_suite_byte_for_byte() {
    // Our recipient entry for the vector's recipient, with the vector's ephemeral IKM:
    // enc is the vector's; the rest is the CEK sealed with info "ltx-cek-wrap".
    let cek_bytes = [7u8; 32];
    let mut e = FixedEntropy::new(&cek_bytes);
    let cek = ContentKey::generate(&mut e).unwrap();
    let mut e = FixedEntropy::new(&unhex(IKM_E));
    let pk = PublicKey::from_hex(PK_RM).unwrap();
    let block = wrap_content_key(&cek, &[pk], &mut e).unwrap();
    assert_eq!(e.drawn(), 32, "one X25519 encapsulation draws 32 bytes");
    assert_eq!(block.len(), RECIPIENT_ENTRY_SIZE);
    assert_eq!(block[..32].to_vec(), unhex(PK_EM));
    let sk = PrivateKey::from_hex(SK_RM).unwrap();
    assert_eq!(unwrap_content_key(&block, &sk).unwrap().bytes(), &cek_bytes);
}

#[test]
fn wrap_to_several_recipients_and_refuse_others() {
    let mut e = OsEntropy::default();
    let keys: Vec<PrivateKey> = (0..3).map(|_| PrivateKey::generate(&mut e).unwrap()).collect();
    let cek = ContentKey::generate(&mut e).unwrap();
    let pubs: Vec<PublicKey> = keys.iter().map(PrivateKey::public_key).collect();
    let block = wrap_content_key(&cek, &pubs, &mut e).unwrap();
    assert_eq!(block.len(), 3 * RECIPIENT_ENTRY_SIZE);
    for k in &keys {
        assert_eq!(unwrap_content_key(&block, k).unwrap().bytes(), cek.bytes());
    }
    let stranger = PrivateKey::generate(&mut e).unwrap();
    assert!(matches!(
        unwrap_content_key(&block, &stranger),
        Err(crate::ltx::Error::NotARecipient { recipients: 3 })
    ));
    let mut bad = block.clone();
    bad[40] ^= 1; // the first entry's sealed CEK: that recipient can no longer open it
    assert!(unwrap_content_key(&bad, &keys[0]).is_err());
    assert!(unwrap_content_key(&bad, &keys[1]).is_ok());
}

#[test]
fn page_seal_binds_header_pgno_and_frame_header() {
    let mut e = FixedEntropy::new(&[]);
    let cek = ContentKey::generate(&mut e).unwrap();
    let header = [1u8; 100];
    let keys = FileKeys::new(&cek, &header);
    let fh = [0, 0, 0, 9, 0, 1];
    let mut sealed = Vec::new();
    keys.seal_page(&fh, b"compressed bytes", &mut e, &mut sealed).unwrap();
    assert_eq!(sealed.len(), 16 + SEAL_OVERHEAD);
    assert_eq!(keys.open_page(&fh, &mut sealed.clone()).unwrap(), b"compressed bytes");
    // Another page number, another flag, another header, a flipped byte: refused.
    let other_pgno = [0, 0, 0, 8, 0, 1];
    assert!(keys.open_page(&other_pgno, &mut sealed.clone()).is_err());
    assert!(keys.open_page(&[0, 0, 0, 9, 0, 3], &mut sealed.clone()).is_err());
    let other_file = FileKeys::new(&cek, &[2u8; 100]);
    assert!(matches!(
        other_file.open_page(&fh, &mut sealed.clone()),
        Err(crate::ltx::Error::PageAuth { pgno: 9 })
    ));
    for i in 0..sealed.len() {
        let mut t = sealed.clone();
        t[i] ^= 0x80;
        assert!(keys.open_page(&fh, &mut t).is_err(), "byte {i}");
    }
    assert!(keys.open_page(&fh, &mut [0u8; 27]).is_err());
}

#[test]
fn index_tag_detects_any_change() {
    let mut e = FixedEntropy::new(&[]);
    let keys = FileKeys::new(&ContentKey::generate(&mut e).unwrap(), &[0u8; 100]);
    let index = b"\x01\x64\x24\x00\x00\x00\x00\x00\x00\x00\x00\x04".to_vec();
    let tag = keys.index_tag(&index).unwrap();
    keys.check_index_tag(&index, &tag).unwrap();
    let mut changed = index.clone();
    changed[1] ^= 1;
    assert!(matches!(
        keys.check_index_tag(&changed, &tag),
        Err(crate::ltx::Error::IndexAuth)
    ));
    let mut bad_tag = tag;
    bad_tag[15] ^= 1;
    assert!(keys.check_index_tag(&index, &bad_tag).is_err());
    assert!(keys.check_index_tag(&index, &tag[..15]).is_err());
}

#[test]
fn keys_parse_and_never_print_the_private_half() {
    let k = PrivateKey::from_hex(&format!("  {SK_RM}\n")).unwrap();
    assert!(!format!("{k:?}").contains(&SK_RM[..16]));
    assert!(format!("{k:?}").contains(PK_RM));
    assert_eq!(k.to_hex().as_str(), SK_RM);
    assert!(matches!(PrivateKey::from_hex("zz"), Err(KeyError::NotHex { .. })));
    assert!(matches!(
        PrivateKey::from_hex(&SK_RM[..62]),
        Err(KeyError::WrongLength { digits: 62, .. })
    ));
    let e = PrivateKey::from_hex(&format!("{SK_RM}00")).unwrap_err().to_string();
    assert!(e.contains("66 hex digits") && !e.contains(SK_RM), "{e}");
    let list = PublicKey::parse_list(&format!("{PK_RM}, {PK_EM},")).unwrap();
    assert_eq!(list.len(), 2);
    assert!(PublicKey::parse_list(&format!("{PK_RM},nothex")).is_err());
    let enc = Encryption::new(k.clone(), &list);
    assert_eq!(enc.recipients().len(), 2, "own key first, duplicates dropped");
    assert_eq!(enc.recipients()[0], k.public_key());
}
