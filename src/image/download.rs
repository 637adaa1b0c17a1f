//! One image transfer on the AP side: counts, on-the-fly digests (MD5 for the controller's
//! Image Information, SHA-256 for the logs and the later signature check) and the checks at the
//! last block. Pure computation: the bytes themselves go to an [`ImageStore`](super::store).
//!
//! The digests may lag a little behind the count: a block is copied into a small fixed buffer
//! and hashed by [`Transfer::catch_up`], which the driver calls once the block's Image Data
//! Response is on its way. In a stop-and-wait transfer that takes the hashing (about 2 us a
//! 1 KiB block for MD5 and SHA-256) off the round trip: it runs while the controller reads the
//! next block. Without the call, the buffer is hashed when full and at [`Transfer::finish`], so
//! the digests never depend on it.

use std::time::Duration;

use openssl::hash::{Hasher, MessageDigest};

use crate::time::Instant;

/// What went wrong with the data itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadError {
    /// More bytes arrived, or fewer, than the Image Information announced.
    SizeMismatch { expected: u64, got: u64 },
    /// The MD5 of what arrived differs from the announced one.
    Md5Mismatch { expected: String, got: String },
}

impl std::fmt::Display for DownloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownloadError::SizeMismatch { expected, got } => {
                write!(
                    f,
                    "image size mismatch: announced {expected} bytes, received {got}"
                )
            }
            DownloadError::Md5Mismatch { expected, got } => {
                write!(
                    f,
                    "image MD5 mismatch: announced {expected}, computed {got}"
                )
            }
        }
    }
}

impl std::error::Error for DownloadError {}

/// The digests of a complete transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub size: u64,
    pub md5: [u8; 16],
    pub sha256: [u8; 32],
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bookkeeping of one transfer.
pub struct Transfer {
    /// The file name asked for (the board's image type, `ap1g8`).
    pub image: String,
    /// The version the controller wants the AP to run.
    pub version: String,
    /// Downloaded while in Run (RFC 5415 Figure 8): no reset at the end.
    pub predownload: bool,
    pub expected_size: Option<u64>,
    pub expected_md5: Option<[u8; 16]>,
    pub bytes: u64,
    pub msgs: u64,
    pub last_len: usize,
    pub started: Instant,
    md5: Hasher,
    sha256: crate::image::sha256::Sha256,
    /// Blocks counted but not hashed yet (at most [`PENDING`] bytes, allocated once).
    pending: Vec<u8>,
    next_progress: u8,
}

/// Room for blocks waiting to be hashed: a few blocks of the largest size an Image Data
/// element carries.
const PENDING: usize = 64 * 1024;

impl Transfer {
    pub fn new(image: &str, version: &str, predownload: bool, now: Instant) -> Self {
        Transfer {
            image: image.to_string(),
            version: version.to_string(),
            predownload,
            expected_size: None,
            expected_md5: None,
            bytes: 0,
            msgs: 0,
            last_len: 0,
            started: now,
            // MD5 is always available in OpenSSL's default provider.
            md5: Hasher::new(MessageDigest::md5()).expect("OpenSSL has MD5"),
            sha256: crate::image::sha256::Sha256::new(),
            pending: Vec::with_capacity(PENDING),
            next_progress: 10,
        }
    }

    /// Takes the controller's Image Information.
    pub fn set_info(&mut self, size: u32, md5: [u8; 16]) {
        self.expected_size = Some(size as u64);
        self.expected_md5 = Some(md5);
    }

    /// Counts and hashes one block. Fails once more bytes arrived than announced.
    pub fn block(&mut self, data: &[u8]) -> Result<(), DownloadError> {
        self.bytes += data.len() as u64;
        self.msgs += 1;
        self.last_len = data.len();
        if let Some(expected) = self.expected_size {
            if self.bytes > expected {
                return Err(DownloadError::SizeMismatch {
                    expected,
                    got: self.bytes,
                });
            }
        }
        if self.pending.len() + data.len() > self.pending.capacity() {
            self.catch_up();
        }
        if data.len() > self.pending.capacity() {
            self.hash(data);
        } else {
            self.pending.extend_from_slice(data);
        }
        Ok(())
    }

    /// Hashes the blocks counted so far. Cheap to call when there is nothing to do.
    pub fn catch_up(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        self.hash(&pending);
        self.pending = pending;
        self.pending.clear();
    }

    fn hash(&mut self, data: &[u8]) {
        // Hasher::update only fails on an OpenSSL internal error; the check at the end catches
        // a corrupted digest as a mismatch.
        let _ = self.md5.update(data);
        self.sha256.update(data);
    }

    /// The percentage reached when it crossed the next multiple of 10, for a progress line.
    pub fn progress_step(&mut self) -> Option<u8> {
        let pct = self.percent()?;
        if pct >= self.next_progress && self.next_progress <= 100 {
            let step = self.next_progress;
            self.next_progress = (pct / 10 + 1) * 10;
            Some(step.max(pct / 10 * 10))
        } else {
            None
        }
    }

    /// Percent done, when the size is known.
    pub fn percent(&self) -> Option<u8> {
        let total = self.expected_size?;
        if total == 0 {
            return Some(100);
        }
        Some(((self.bytes.min(total) * 100) / total) as u8)
    }

    /// Time left at the rate so far, when the size is known.
    pub fn eta(&self, now: Instant) -> Option<Duration> {
        let total = self.expected_size?;
        let elapsed = now.saturating_since(self.started);
        if self.bytes == 0 || elapsed.is_zero() {
            return None;
        }
        let left = total.saturating_sub(self.bytes) as f64;
        Some(Duration::from_secs_f64(
            left * elapsed.as_secs_f64() / self.bytes as f64,
        ))
    }

    /// Checks size and MD5 against the Image Information, and returns the digests.
    pub fn finish(&mut self) -> Result<Digests, DownloadError> {
        self.catch_up();
        let md5: [u8; 16] = self
            .md5
            .finish()
            .ok()
            .and_then(|d| d.as_ref().try_into().ok())
            .unwrap_or([0; 16]);
        let sha256 = std::mem::take(&mut self.sha256).finish();
        if let Some(expected) = self.expected_size {
            if expected != self.bytes {
                return Err(DownloadError::SizeMismatch {
                    expected,
                    got: self.bytes,
                });
            }
        }
        if let Some(expected) = self.expected_md5 {
            if expected != md5 {
                return Err(DownloadError::Md5Mismatch {
                    expected: hex(&expected),
                    got: hex(&md5),
                });
            }
        }
        Ok(Digests {
            size: self.bytes,
            md5,
            sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5_of(data: &[u8]) -> [u8; 16] {
        openssl::hash::hash(MessageDigest::md5(), data)
            .unwrap()
            .as_ref()
            .try_into()
            .unwrap()
    }

    #[test]
    fn digests_and_counts() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut t = Transfer::new("ap1g8", "17.9.4.27", false, Instant::ZERO);
        t.set_info(5000, md5_of(&data));
        for chunk in data.chunks(1377) {
            t.block(chunk).unwrap();
        }
        assert_eq!((t.bytes, t.msgs, t.last_len), (5000, 4, 5000 - 3 * 1377));
        let d = t.finish().unwrap();
        assert_eq!(d.md5, md5_of(&data));
        assert_eq!(d.sha256, openssl::sha::sha256(&data));
    }

    #[test]
    fn digests_do_not_depend_on_when_blocks_are_hashed() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let want = (md5_of(&data), openssl::sha::sha256(&data));
        // Never caught up (hashed when the buffer fills and at the end), caught up after every
        // block, and every third block; blocks small, odd-sized and larger than the buffer.
        for every in [0usize, 1, 3] {
            for size in [1024usize, 1377, 65_535, 100_000] {
                let mut t = Transfer::new("ap1g8", "v", false, Instant::ZERO);
                t.set_info(data.len() as u32, want.0);
                for (i, chunk) in data.chunks(size).enumerate() {
                    t.block(chunk).unwrap();
                    if every > 0 && i % every == 0 {
                        t.catch_up();
                    }
                }
                let d = t.finish().unwrap();
                assert_eq!(
                    (d.md5, d.sha256),
                    want,
                    "catch-up every {every}, blocks of {size}"
                );
            }
        }
    }

    #[test]
    fn mismatches_are_named() {
        let data = [7u8; 100];
        let mut t = Transfer::new("ap1g8", "v", false, Instant::ZERO);
        t.set_info(100, [0; 16]);
        t.block(&data).unwrap();
        let e = t.finish().unwrap_err();
        assert!(matches!(e, DownloadError::Md5Mismatch { .. }), "{e}");
        let mut t = Transfer::new("ap1g8", "v", false, Instant::ZERO);
        t.set_info(50, md5_of(&data));
        assert_eq!(
            t.block(&data),
            Err(DownloadError::SizeMismatch {
                expected: 50,
                got: 100
            })
        );
        let mut t = Transfer::new("ap1g8", "v", false, Instant::ZERO);
        t.set_info(200, md5_of(&data));
        t.block(&data).unwrap();
        assert_eq!(
            t.finish(),
            Err(DownloadError::SizeMismatch {
                expected: 200,
                got: 100
            })
        );
    }

    #[test]
    fn progress_steps_and_eta() {
        let mut t = Transfer::new("x", "v", false, Instant::ZERO);
        assert_eq!(t.percent(), None);
        t.set_info(1000, [0; 16]);
        let mut steps = Vec::new();
        for _ in 0..40 {
            t.block(&[0; 25]).unwrap();
            steps.extend(t.progress_step());
        }
        assert_eq!(steps, vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
        let mut t = Transfer::new("x", "v", false, Instant::ZERO);
        t.set_info(1000, [0; 16]);
        t.block(&[0; 250]).unwrap();
        let eta = t
            .eta(Instant::from_duration(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(eta.as_secs(), 30);
    }
}
