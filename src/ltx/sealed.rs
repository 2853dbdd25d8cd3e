//! Reading an encrypted file's pages sealed, to open them elsewhere: what a restore does,
//! reading each file in order on one thread ([`Decoder::next_sealed`](super::Decoder::next_sealed)) while a pool of
//! threads opens and decompresses the pages ([`PageOpener`]), most of the cost.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::BytesMut;

use super::crypto::FileKeys;
use super::error::{Error, Result};
use super::frame::{FrameHeader, PageDecompressor, FRAME_HEADER_SIZE};

/// One sealed page as [`Decoder::next_sealed`](super::Decoder::next_sealed) read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedFrame {
    /// The 6-byte frame header as stored (bound into the page's associated data).
    pub header: [u8; FRAME_HEADER_SIZE],
    /// The sealed payload (nonce ‖ ciphertext ‖ tag): a slice of the reader's own
    /// buffer when it has one ([`SharedRead`]), so reading a frame copies nothing; the
    /// frame's alone, so it is opened in place.
    pub payload: BytesMut,
}

impl SealedFrame {
    /// The page number.
    pub fn pgno(&self) -> u32 {
        FrameHeader::parse(&self.header).pgno
    }
}

/// A reader that can hand out its next bytes without copying them, when it holds them
/// in memory already (a restore's download, in chunks of several MiB). The default
/// copies them into a new buffer.
pub trait SharedRead: Read {
    /// The next `n` bytes, owned (disjoint from any other bytes handed out);
    /// [`io::ErrorKind::UnexpectedEof`] if the input ends first.
    fn read_shared(&mut self, n: usize) -> io::Result<BytesMut> {
        let mut buf = BytesMut::zeroed(n);
        self.read_exact(&mut buf)?;
        Ok(buf)
    }
}

impl SharedRead for &[u8] {}
impl<T: AsRef<[u8]>> SharedRead for io::Cursor<T> {}

/// Opens the sealed pages of one encrypted file on any thread.
#[derive(Clone, Debug)]
pub struct PageOpener {
    keys: Arc<FileKeys>,
    page_size: u32,
}

impl PageOpener {
    pub(super) fn new(keys: Arc<FileKeys>, page_size: u32) -> PageOpener {
        PageOpener { keys, page_size }
    }

    /// Opens `frame`'s payload in place (it is the plaintext afterwards, or garbage if
    /// authentication failed) and decompresses the page into `out` (one page); returns
    /// its page number. [`Error::PageAuth`] if any byte of it changed.
    ///
    /// In place rather than in a copy: the copy of each page into a scratch buffer was
    /// about 3 % of an encrypted restore's CPU (perf, 1 GiB restore), and the decryption
    /// reads the sealed bytes into the CPU's cache either way.
    pub fn open(&self, dec: &mut PageDecompressor, frame: &mut SealedFrame, out: &mut [u8]) -> Result<u32> {
        if out.len() != self.page_size as usize {
            return Err(Error::PageSizeMismatch {
                expected: self.page_size,
                actual: out.len(),
            });
        }
        let fh = FrameHeader::parse(&frame.header);
        let compressed = self.keys.open_page(&frame.header, &mut frame.payload)?;
        dec.decompress_sized(fh.pgno, fh.flags, compressed, out)?;
        Ok(fh.pgno)
    }
}
