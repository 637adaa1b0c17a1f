//! The signed image: a POSIX ustar tar read as a stream, in constant memory.
//!
//! Members, in this order: `manifest`, `manifest.sig`, `signer.pem`, then the payloads in
//! the manifest's order; then two zero blocks and nothing but zeros to the end (tar's record
//! padding). See `docs/image-format.md`.
//!
//! [`BundleReader::new`] reads the three small signed-head members (bounded sizes). A payload
//! is only handed out against the [`VerifiedManifest`] of this very manifest, so nothing of a
//! payload can be read before the head verified. [`PayloadReader`] hashes while it is read;
//! the read that would return end-of-file returns an error instead if the size or SHA-256
//! differ from the manifest, and [`PayloadReader::finish`] is the only way to get a
//! [`PayloadDigest`] (and to move on to the next member).
//!
//! Strictness, so that no single-byte change anywhere is accepted: header checksums (the
//! checksum field itself must read `NNNNNN\0 `), POSIX `ustar\0` magic with version `00`,
//! zero padding, two zero end blocks, zeros only after them, `signer.pem` exactly as OpenSSL
//! writes PEM (64-column base64, LF), only regular files, no absolute names, no `..`.

use std::fmt;
use std::io::{self, Read};

use ring::digest::{Context, SHA256};

use super::manifest::{hex, Manifest, ManifestError, MAX_MANIFEST_LEN};
use super::pem;
use super::tar::{padding, parse_header, Header, HeaderError};
use super::verify::{verify_manifest, TrustPolicy, VerifiedManifest, VerifyError};

pub use super::pem::canonical_pem;
pub use super::tar::BLOCK;
/// The largest `manifest.sig` accepted (an RSA-8192 signature is 1024 bytes).
pub const MAX_SIGNATURE_LEN: usize = 2048;
/// The largest `signer.pem` accepted.
pub const MAX_CHAIN_LEN: usize = 64 * 1024;
/// The size of the stack buffer [`PayloadReader::finish`] drains unread payload bytes with.
/// The payload reader itself holds no buffer: it reads into the caller's.
pub const DRAIN_BUF: usize = 4096;

/// What a verified payload turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadDigest {
    pub name: String,
    pub target: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// Why an image was refused while reading it. `offset` is the byte offset in the image.
#[derive(Debug)]
pub enum BundleError {
    Io {
        offset: u64,
        what: String,
        source: io::Error,
    },
    /// The image ended early.
    Truncated {
        offset: u64,
        what: String,
    },
    BadChecksum {
        offset: u64,
        stored: String,
        computed: u32,
    },
    BadHeader {
        offset: u64,
        reason: String,
    },
    UnsafeName {
        offset: u64,
        name: String,
    },
    NotRegularFile {
        offset: u64,
        name: String,
        typeflag: char,
    },
    /// A member other than the one the format expects here (order, duplicates, extras).
    UnexpectedMember {
        offset: u64,
        expected: String,
        found: String,
    },
    MemberTooLarge {
        name: String,
        size: u64,
        max: usize,
    },
    /// Padding or end-of-archive bytes that are not zero.
    NonZeroPadding {
        offset: u64,
        what: String,
    },
    /// Non-zero data after the end-of-archive blocks.
    TrailingData {
        offset: u64,
    },
    /// `signer.pem` is not PEM as OpenSSL writes it.
    ChainNotCanonical {
        reason: String,
    },
    Manifest(ManifestError),
    /// The archive ended before this payload of the manifest.
    MissingPayload {
        name: String,
    },
    PayloadSizeMismatch {
        name: String,
        manifest: u64,
        tar: u64,
    },
    PayloadDigestMismatch {
        name: String,
        expected: String,
        found: String,
    },
    /// The [`VerifiedManifest`] given is not the one of this image.
    NotVerified,
    /// The previous payload was not [`PayloadReader::finish`]ed.
    PayloadNotFinished {
        name: String,
    },
    /// [`BundleReader::finish`] before every payload was read.
    PayloadsRemaining {
        next: String,
    },
    /// An earlier error left the stream at an unknown position.
    Poisoned,
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::Io {
                offset,
                what,
                source,
            } => write!(f, "image: reading {what} at byte {offset}: {source}"),
            BundleError::Truncated { offset, what } => {
                write!(f, "image: ends at byte {offset} inside {what}")
            }
            BundleError::BadChecksum {
                offset,
                stored,
                computed,
            } => write!(
                f,
                "image: tar header at byte {offset}: checksum field {stored:?}, computed {computed:06o}"
            ),
            BundleError::BadHeader { offset, reason } => {
                write!(f, "image: tar header at byte {offset}: {reason}")
            }
            BundleError::UnsafeName { offset, name } => write!(
                f,
                "image: member {name:?} at byte {offset}: absolute names and `..` are refused"
            ),
            BundleError::NotRegularFile {
                offset,
                name,
                typeflag,
            } => write!(
                f,
                "image: member {name:?} at byte {offset} has type {typeflag:?}; only regular \
                 files are allowed"
            ),
            BundleError::UnexpectedMember {
                offset,
                expected,
                found,
            } => write!(
                f,
                "image: member at byte {offset} is {found}, expected {expected}"
            ),
            BundleError::MemberTooLarge { name, size, max } => {
                write!(f, "image: {name} is {size} bytes, the limit is {max}")
            }
            BundleError::NonZeroPadding { offset, what } => {
                write!(f, "image: non-zero byte at {offset} in {what}")
            }
            BundleError::TrailingData { offset } => write!(
                f,
                "image: data after the end-of-archive blocks at byte {offset}"
            ),
            BundleError::ChainNotCanonical { reason } => write!(f, "image: signer.pem: {reason}"),
            BundleError::Manifest(e) => write!(f, "image: {e}"),
            BundleError::MissingPayload { name } => {
                write!(f, "image: archive ends before payload {name}")
            }
            BundleError::PayloadSizeMismatch {
                name,
                manifest,
                tar,
            } => write!(
                f,
                "image: payload {name} is {tar} bytes in the tar, the manifest says {manifest}"
            ),
            BundleError::PayloadDigestMismatch {
                name,
                expected,
                found,
            } => write!(
                f,
                "image: payload {name} SHA-256 {found}, the manifest says {expected}"
            ),
            BundleError::NotVerified => write!(
                f,
                "image: payloads are only read against the verified manifest of this image"
            ),
            BundleError::PayloadNotFinished { name } => {
                write!(f, "image: payload {name} was not finished (checked)")
            }
            BundleError::PayloadsRemaining { next } => {
                write!(f, "image: payload {next} and later were not read")
            }
            BundleError::Poisoned => write!(f, "image: reader unusable after an earlier error"),
        }
    }
}

impl std::error::Error for BundleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BundleError::Io { source, .. } => Some(source),
            BundleError::Manifest(e) => Some(e),
            _ => None,
        }
    }
}

impl BundleError {
    /// A refused tar header, at `offset`.
    pub(crate) fn header(offset: u64, e: HeaderError) -> Self {
        match e {
            HeaderError::BadChecksum { stored, computed } => BundleError::BadChecksum {
                offset,
                stored,
                computed,
            },
            HeaderError::BadHeader(reason) => BundleError::BadHeader { offset, reason },
            HeaderError::UnsafeName(name) => BundleError::UnsafeName { offset, name },
            HeaderError::NotRegularFile { name, typeflag } => BundleError::NotRegularFile {
                offset,
                name,
                typeflag,
            },
        }
    }
}

/// Reads a signed image from a stream. See the module documentation.
pub struct BundleReader<R> {
    inner: R,
    pos: u64,
    manifest_bytes: Vec<u8>,
    signature: Vec<u8>,
    chain_pem: Vec<u8>,
    manifest: Manifest,
    manifest_sha256: [u8; 32],
    /// Index of the next payload member.
    next: usize,
    /// A payload reader is out and not finished.
    open: bool,
    ended: bool,
    poisoned: bool,
}

impl<R: fmt::Debug> fmt::Debug for BundleReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BundleReader")
            .field("pos", &self.pos)
            .field("manifest", &self.manifest)
            .field("next", &self.next)
            .finish()
    }
}

impl<R: Read> BundleReader<R> {
    /// Reads and checks the tar framing of `manifest`, `manifest.sig` and `signer.pem` and
    /// parses the manifest. Nothing is verified cryptographically yet: call
    /// [`BundleReader::verify`] (or [`verify_manifest`]) next.
    pub fn new(inner: R) -> Result<Self, BundleError> {
        let mut r = BundleReader {
            inner,
            pos: 0,
            manifest_bytes: Vec::new(),
            signature: Vec::new(),
            chain_pem: Vec::new(),
            manifest: Manifest {
                format_version: 0,
                hardware_type: String::new(),
                version: String::new(),
                compatible_boards: Vec::new(),
                build_time: 0,
                signature_algorithm: Default::default(),
                payloads: Vec::new(),
            },
            manifest_sha256: [0; 32],
            next: 0,
            open: false,
            ended: false,
            poisoned: false,
        };
        r.manifest_bytes = r.small_member("manifest", MAX_MANIFEST_LEN)?;
        r.signature = r.small_member("manifest.sig", MAX_SIGNATURE_LEN)?;
        r.chain_pem = r.small_member("signer.pem", MAX_CHAIN_LEN)?;
        pem::check_canonical(&r.chain_pem)
            .map_err(|reason| BundleError::ChainNotCanonical { reason })?;
        r.manifest = Manifest::parse(&r.manifest_bytes).map_err(BundleError::Manifest)?;
        let d = ring::digest::digest(&SHA256, &r.manifest_bytes);
        r.manifest_sha256.copy_from_slice(d.as_ref());
        Ok(r)
    }

    /// The exact manifest bytes (what `manifest.sig` signs).
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }
    /// The parsed manifest: NOT verified until [`BundleReader::verify`] succeeded.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
    pub fn chain_pem(&self) -> &[u8] {
        &self.chain_pem
    }
    /// Bytes of the image consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// [`verify_manifest`] over this image's head.
    pub fn verify(&self, policy: &TrustPolicy) -> Result<VerifiedManifest, VerifyError> {
        verify_manifest(
            &self.manifest_bytes,
            &self.signature,
            &self.chain_pem,
            policy,
        )
    }

    fn read_full(&mut self, buf: &mut [u8], what: &str) -> Result<(), BundleError> {
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(&mut buf[done..]) {
                Ok(0) => {
                    self.poisoned = true;
                    return Err(BundleError::Truncated {
                        offset: self.pos,
                        what: what.to_string(),
                    });
                }
                Ok(n) => {
                    done += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    self.poisoned = true;
                    return Err(BundleError::Io {
                        offset: self.pos,
                        what: what.to_string(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    fn read_header(&mut self, what: &str) -> Result<Option<Header>, BundleError> {
        let mut b = [0u8; BLOCK];
        let offset = self.pos;
        self.read_full(&mut b, what)?;
        parse_header(&b)
            .map_err(|e| BundleError::header(offset, e))
            .inspect_err(|_| self.poisoned = true)
    }

    fn skip_padding(&mut self, size: u64, what: &str) -> Result<(), BundleError> {
        let n = padding(size);
        let mut b = [0u8; BLOCK];
        let offset = self.pos;
        self.read_full(&mut b[..n], what)?;
        if let Some(i) = b[..n].iter().position(|&x| x != 0) {
            self.poisoned = true;
            return Err(BundleError::NonZeroPadding {
                offset: offset + i as u64,
                what: what.to_string(),
            });
        }
        Ok(())
    }

    fn small_member(&mut self, name: &str, max: usize) -> Result<Vec<u8>, BundleError> {
        let offset = self.pos;
        let h = self
            .read_header(&format!("the tar header of {name}"))?
            .ok_or_else(|| BundleError::UnexpectedMember {
                offset,
                expected: name.to_string(),
                found: "the end of the archive".into(),
            })?;
        if h.name != name {
            self.poisoned = true;
            return Err(BundleError::UnexpectedMember {
                offset,
                expected: name.to_string(),
                found: h.name,
            });
        }
        if h.size > max as u64 {
            self.poisoned = true;
            return Err(BundleError::MemberTooLarge {
                name: name.to_string(),
                size: h.size,
                max,
            });
        }
        let mut data = vec![0u8; h.size as usize];
        self.read_full(&mut data, name)?;
        self.skip_padding(h.size, &format!("the padding of {name}"))?;
        Ok(data)
    }

    fn check_usable(&self) -> Result<(), BundleError> {
        if self.poisoned {
            return Err(BundleError::Poisoned);
        }
        if self.open {
            let name = self
                .manifest
                .payloads
                .get(self.next)
                .map(|p| p.name.clone())
                .unwrap_or_default();
            return Err(BundleError::PayloadNotFinished { name });
        }
        Ok(())
    }

    /// The next payload, in manifest order, or `None` after the last one (having checked the
    /// end of the archive). `verified` must be the result of verifying this image's manifest.
    pub fn next_payload(
        &mut self,
        verified: &VerifiedManifest,
    ) -> Result<Option<PayloadReader<'_, R>>, BundleError> {
        self.check_usable()?;
        if verified.manifest_sha256() != &self.manifest_sha256 {
            return Err(BundleError::NotVerified);
        }
        if self.next == self.manifest.payloads.len() {
            self.end_of_archive()?;
            return Ok(None);
        }
        let p = self.manifest.payloads[self.next].clone();
        let offset = self.pos;
        let h = self
            .read_header(&format!("the tar header of {}", p.name))?
            .ok_or_else(|| BundleError::MissingPayload {
                name: p.name.clone(),
            })
            .inspect_err(|_| self.poisoned = true)?;
        if h.name != p.name {
            self.poisoned = true;
            return Err(BundleError::UnexpectedMember {
                offset,
                expected: p.name,
                found: h.name,
            });
        }
        if h.size != p.size {
            self.poisoned = true;
            return Err(BundleError::PayloadSizeMismatch {
                name: p.name,
                manifest: p.size,
                tar: h.size,
            });
        }
        self.open = true;
        Ok(Some(PayloadReader {
            bundle: self,
            remaining: p.size,
            ctx: Some(Context::new(&SHA256)),
            digest: None,
            failed: false,
            payload: p,
        }))
    }

    fn end_of_archive(&mut self) -> Result<(), BundleError> {
        if self.ended {
            return Ok(());
        }
        for i in 0..2 {
            let offset = self.pos;
            match self.read_header("the end-of-archive blocks")? {
                None => {}
                Some(h) => {
                    self.poisoned = true;
                    return Err(if i == 0 {
                        BundleError::UnexpectedMember {
                            offset,
                            expected: "the end of the archive".into(),
                            found: h.name,
                        }
                    } else {
                        BundleError::NonZeroPadding {
                            offset,
                            what: "the second end-of-archive block".into(),
                        }
                    });
                }
            }
        }
        let mut b = [0u8; BLOCK];
        loop {
            let n = match self.inner.read(&mut b) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    self.poisoned = true;
                    return Err(BundleError::Io {
                        offset: self.pos,
                        what: "the record padding".into(),
                        source,
                    });
                }
            };
            if n == 0 {
                break;
            }
            if let Some(i) = b[..n].iter().position(|&x| x != 0) {
                self.poisoned = true;
                return Err(BundleError::TrailingData {
                    offset: self.pos + i as u64,
                });
            }
            self.pos += n as u64;
        }
        self.ended = true;
        Ok(())
    }

    /// Checks that every payload was read and finished, and the end of the archive.
    pub fn finish(mut self) -> Result<(), BundleError> {
        self.check_usable()?;
        if let Some(p) = self.manifest.payloads.get(self.next) {
            return Err(BundleError::PayloadsRemaining {
                next: p.name.clone(),
            });
        }
        self.end_of_archive()
    }
}

/// One payload, read in the caller's buffers and hashed on the way. Holds no buffer of its
/// own. Its bytes are only good once [`PayloadReader::finish`] returned `Ok`; a reader that
/// reaches the end of a payload that does not match the manifest returns an
/// `InvalidData` error instead of end-of-file.
pub struct PayloadReader<'a, R> {
    bundle: &'a mut BundleReader<R>,
    payload: super::manifest::Payload,
    remaining: u64,
    ctx: Option<Context>,
    digest: Option<[u8; 32]>,
    failed: bool,
}

impl<R> fmt::Debug for PayloadReader<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayloadReader")
            .field("name", &self.payload.name)
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl<R: Read> PayloadReader<'_, R> {
    pub fn name(&self) -> &str {
        &self.payload.name
    }
    pub fn target(&self) -> &str {
        &self.payload.target
    }
    /// The size the manifest (and the tar header) give.
    pub fn size(&self) -> u64 {
        self.payload.size
    }
    /// Bytes not read yet.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    fn mismatch(&self, found: &[u8; 32]) -> BundleError {
        BundleError::PayloadDigestMismatch {
            name: self.payload.name.clone(),
            expected: hex(&self.payload.sha256),
            found: hex(found),
        }
    }

    /// The digest of every byte read (computed once, when the payload was read to its end).
    fn complete(&mut self) -> [u8; 32] {
        if let Some(d) = self.digest {
            return d;
        }
        let mut d = [0u8; 32];
        if let Some(ctx) = self.ctx.take() {
            d.copy_from_slice(ctx.finish().as_ref());
        }
        self.digest = Some(d);
        d
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> Result<usize, BundleError> {
        if self.failed || self.bundle.poisoned {
            return Err(BundleError::Poisoned);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            let d = self.complete();
            if d != self.payload.sha256 {
                self.failed = true;
                return Err(self.mismatch(&d));
            }
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = loop {
            match self.bundle.inner.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    self.failed = true;
                    self.bundle.poisoned = true;
                    return Err(BundleError::Io {
                        offset: self.bundle.pos,
                        what: format!("payload {}", self.payload.name),
                        source,
                    });
                }
            }
        };
        if n == 0 {
            self.failed = true;
            self.bundle.poisoned = true;
            return Err(BundleError::Truncated {
                offset: self.bundle.pos,
                what: format!("payload {}", self.payload.name),
            });
        }
        let n = n.min(want);
        if let Some(ctx) = self.ctx.as_mut() {
            ctx.update(&buf[..n]);
        }
        self.remaining -= n as u64;
        self.bundle.pos += n as u64;
        Ok(n)
    }

    /// Reads what is left (hashing it), checks size and SHA-256 against the manifest, skips
    /// the tar padding, and releases the bundle for the next member.
    pub fn finish(mut self) -> Result<PayloadDigest, BundleError> {
        let mut buf = [0u8; DRAIN_BUF];
        while self.remaining > 0 {
            self.read_inner(&mut buf)?;
        }
        if self.failed {
            return Err(BundleError::Poisoned);
        }
        let d = self.complete();
        if d != self.payload.sha256 {
            self.failed = true;
            self.bundle.poisoned = true;
            return Err(self.mismatch(&d));
        }
        let what = format!("the padding of {}", self.payload.name);
        self.bundle.skip_padding(self.payload.size, &what)?;
        self.bundle.open = false;
        self.bundle.next += 1;
        Ok(PayloadDigest {
            name: self.payload.name.clone(),
            target: self.payload.target.clone(),
            size: self.payload.size,
            sha256: d,
        })
    }
}

impl<R: Read> Read for PayloadReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_inner(buf).map_err(|e| {
            let kind = match &e {
                BundleError::Truncated { .. } => io::ErrorKind::UnexpectedEof,
                BundleError::Io { source, .. } => source.kind(),
                _ => io::ErrorKind::InvalidData,
            };
            io::Error::new(kind, e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_never_panics() {
        // Headers made of arbitrary bytes: refused, never a panic.
        let mut seed = 0x1234_5678_u32;
        for _ in 0..2000 {
            let mut img = vec![0u8; 2048];
            for b in img.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                *b = seed as u8;
            }
            assert!(BundleReader::new(&img[..]).is_err());
        }
        assert!(BundleReader::new(&[][..]).is_err());
        assert!(BundleReader::new(&[0u8; 1024][..]).is_err());
    }
}
