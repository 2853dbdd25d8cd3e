//! How an encoder writes pages: compression, and whether (and to whom) they are sealed.

use std::sync::Arc;

use super::crypto::{Encryption, PublicKey};
use super::frame::Compression;

/// Compression plus the recipients of encrypted files: empty recipients write plaintext
/// LTX v3 (`LTX1`), any recipient writes encrypted LTX v4 (`LTX4`) under a fresh content
/// key per file. Cheap to clone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoding {
    /// How pages are compressed before they are (maybe) sealed.
    pub compression: Compression,
    recipients: Arc<[PublicKey]>,
}

impl Encoding {
    /// Plaintext files.
    pub fn plain(compression: Compression) -> Self {
        Encoding {
            compression,
            recipients: Arc::new([]),
        }
    }

    /// Encrypted files, the content key wrapped to each of `recipients` (in order).
    pub fn sealed(compression: Compression, recipients: &[PublicKey]) -> Self {
        Encoding {
            compression,
            recipients: recipients.into(),
        }
    }

    /// Encrypted to `encryption`'s recipients when given, else plaintext.
    pub fn new(compression: Compression, encryption: Option<&Encryption>) -> Self {
        match encryption {
            Some(e) => Encoding::sealed(compression, e.recipients()),
            None => Encoding::plain(compression),
        }
    }

    /// True when files are encrypted.
    pub fn is_encrypted(&self) -> bool {
        !self.recipients.is_empty()
    }

    /// The recipients (empty for plaintext).
    pub fn recipients(&self) -> &[PublicKey] {
        &self.recipients
    }
}

impl From<Compression> for Encoding {
    fn from(compression: Compression) -> Self {
        Encoding::plain(compression)
    }
}
