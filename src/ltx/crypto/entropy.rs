//! Where content keys, nonces and HPKE's ephemeral keys come from.

use super::super::error::{Error, Result};

/// A source of random bytes for sealing. [`OsEntropy`] in production; [`FixedEntropy`]
/// makes encrypted files reproducible for known-answer tests.
pub trait Entropy: Send {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]) -> Result<()>;
}

/// The operating system's CSPRNG, drawn 4 KiB at a time: one `getrandom` call covers the
/// nonces of 341 pages instead of one call per page.
pub struct OsEntropy {
    pool: Box<[u8; 4096]>,
    used: usize,
}

impl Default for OsEntropy {
    fn default() -> Self {
        OsEntropy {
            pool: Box::new([0u8; 4096]),
            used: 4096,
        }
    }
}

impl std::fmt::Debug for OsEntropy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OsEntropy")
    }
}

impl Entropy for OsEntropy {
    fn fill(&mut self, mut buf: &mut [u8]) -> Result<()> {
        while !buf.is_empty() {
            if self.used == self.pool.len() {
                getrandom::fill(&mut self.pool[..])
                    .map_err(|e| Error::Crypto(format!("the operating system's random source failed: {e}")))?;
                self.used = 0;
            }
            let n = buf.len().min(self.pool.len() - self.used);
            buf[..n].copy_from_slice(&self.pool[self.used..self.used + n]);
            // Bytes handed out are not kept.
            self.pool[self.used..self.used + n].fill(0);
            self.used += n;
            buf = &mut buf[n..];
        }
        Ok(())
    }
}

/// Deterministic "randomness" for tests and known-answer vectors: the bytes given, then
/// a counter (byte `i` of the continuation is `i as u8`). Never use it to protect data.
#[derive(Clone, Debug, Default)]
pub struct FixedEntropy {
    prefix: Vec<u8>,
    drawn: usize,
}

impl FixedEntropy {
    /// Hands out `prefix` first, then counter bytes.
    pub fn new(prefix: &[u8]) -> Self {
        FixedEntropy {
            prefix: prefix.to_vec(),
            drawn: 0,
        }
    }

    /// How many bytes were drawn so far.
    pub fn drawn(&self) -> usize {
        self.drawn
    }
}

impl Entropy for FixedEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        for b in buf.iter_mut() {
            *b = match self.prefix.get(self.drawn) {
                Some(&p) => p,
                None => (self.drawn - self.prefix.len()) as u8,
            };
            self.drawn += 1;
        }
        Ok(())
    }
}
