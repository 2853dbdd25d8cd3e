//! The CRC-64 folding kernels (`ltx::checksum::kernel::clmul`) are compiled for CPU
//! features the build does not assume (`#[target_feature]`: PCLMULQDQ, or AVX-512 with
//! VPCLMULQDQ); calling one on a CPU without them is undefined behaviour, so the call is
//! `unsafe`. These wrappers make it only after asking the CPU (`is_x86_feature_detected!`
//! caches the answer: a load and a test per call). The kernels themselves are safe code
//! and stay with the codec, which has no I/O and no SQLite; this is the only part that
//! needs `unsafe`.

#[cfg(target_arch = "x86_64")]
use crate::ltx::checksum::kernel::clmul as kernel;
#[cfg(target_arch = "x86_64")]
use std::arch::is_x86_feature_detected as has;

/// The register after folding every whole 16 bytes of `data` (at least
/// `kernel::MIN_LEN_WIDE`) four lanes at a time, and the bytes left; `None` when the CPU
/// lacks AVX-512F or VPCLMULQDQ.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn fold_wide(crc: u64, data: &[u8]) -> Option<(u64, &[u8])> {
    if has!("avx512f") && has!("vpclmulqdq") {
        // SAFETY: the CPU has the features the function is compiled for (checked just
        // above). It reads `data` only through safe slices.
        Some(unsafe { kernel::fold_wide(crc, data) })
    } else {
        None
    }
}

/// [`fold_wide`] one 16-byte lane at a time, for `data` of at least `kernel::MIN_LEN`
/// bytes; `None` when the CPU lacks PCLMULQDQ.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn fold(crc: u64, data: &[u8]) -> Option<(u64, &[u8])> {
    if has!("pclmulqdq") {
        // SAFETY: as in `fold_wide`, for PCLMULQDQ.
        Some(unsafe { kernel::fold(crc, data) })
    } else {
        None
    }
}
