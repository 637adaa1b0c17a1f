//! Everything that happens to an image on the AP, as sans-IO as files allow:
//!
//! - [`bootenv`]: the U-Boot environment, read and written as libubootenv does.
//! - [`bundle`]: the signed image format (a tar: manifest, signature, chain, payloads).
//! - [`verify`]: signature and certificate-chain checks (ring, rustls-webpki).
//! - [`manifest`]: the manifest's fields and their text form.
//! - [`pack`]: building signed images and the image folder acsim serves.
//! - [`tar`], [`pem`]: the ustar headers and the PEM of those images.
//! - [`install`]: verify-then-write to the inactive slot, switch, mark good, the bootloader's rule.
//! - [`updater`]: one board's A/B policy: its environment at start, the trust policy, the
//!   early check, install, activation, mark-good (what the runtime used to decide).
//! - [`store`]: the download directory (PRECHECK, streaming writes, abort).
//! - [`stream`]: slot mode: an image streamed into the inactive slot as it arrives, checked
//!   by the same rules on the way.
//! - [`download`]: one transfer's bookkeeping: counts, digests, checks.
//! - [`source`]: the images acsim serves.
//! - [`sha256`]: the one SHA-256 (ring's); OpenSSL only for DTLS and CAPWAP's MD5.

pub mod bootenv;
pub mod bundle;
pub mod download;
pub mod install;
pub mod manifest;
pub mod pack;
pub mod pem;
pub mod sha256;
pub mod source;
pub mod store;
pub mod stream;
pub mod tar;
pub mod updater;
pub mod verify;

/// Reads until `buf` is full or the reader ends; returns how much was read.
pub(crate) fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
