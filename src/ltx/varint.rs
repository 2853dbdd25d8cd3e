//! Unsigned LEB128 varints, as Go's `binary.AppendUvarint`/`ReadUvarint` write and read
//! them (the page index is made of these).

/// Longest encoding of a u64.
pub(crate) const MAX_LEN: usize = 10;

/// Appends `v` to `out`.
pub(crate) fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Why a varint could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The input ended inside the varint.
    Truncated,
    /// More than 64 bits, or more than ten bytes.
    Overflow,
}

/// Reads one varint from the front of `b`; returns the value and the bytes used.
///
/// Like Go, a tenth byte above 1 is an overflow. Non-minimal encodings (trailing 0x80s)
/// are accepted as Go does.
pub(crate) fn get(b: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate() {
        if i == MAX_LEN {
            return Err(VarintError::Overflow);
        }
        if byte < 0x80 {
            if i == MAX_LEN - 1 && byte > 1 {
                return Err(VarintError::Overflow);
            }
            return Ok((v | (byte as u64) << (7 * i), i + 1));
        }
        v |= ((byte & 0x7f) as u64) << (7 * i);
    }
    if b.len() >= MAX_LEN {
        Err(VarintError::Overflow)
    } else {
        Err(VarintError::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put(&mut b, v);
            assert!(b.len() <= MAX_LEN);
            assert_eq!(get(&b), Ok((v, b.len())), "{v}");
            b.push(0x55);
            assert_eq!(get(&b), Ok((v, b.len() - 1)), "{v}");
        }
    }

    #[test]
    fn known_encodings() {
        let mut b = Vec::new();
        put(&mut b, 300);
        assert_eq!(b, [0xac, 0x02]);
    }

    #[test]
    fn errors() {
        assert_eq!(get(&[]), Err(VarintError::Truncated));
        assert_eq!(get(&[0x80, 0x80]), Err(VarintError::Truncated));
        assert_eq!(get(&[0xff; 10]), Err(VarintError::Overflow));
        assert_eq!(get(&[0xff; 11]), Err(VarintError::Overflow));
        let mut b = vec![0xff; 9];
        b.push(0x02);
        assert_eq!(get(&b), Err(VarintError::Overflow));
    }
}
