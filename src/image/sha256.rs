//! The agent's one SHA-256: ring's, the crate that already checks image signatures through
//! rustls-webpki. OpenSSL stays for what only it offers here: DTLS, and the MD5 of CAPWAP's
//! Image Information element (RFC 5415 §4.6.28), which ring does not implement.

use ring::digest::{Context, SHA256};

/// A running SHA-256.
#[derive(Clone)]
pub struct Sha256(Context);

impl Sha256 {
    pub fn new() -> Self {
        Sha256(Context::new(&SHA256))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(data);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_openssl_and_the_fips_vector() {
        // FIPS 180-2, appendix B.1: "abc".
        assert_eq!(
            crate::image::download::hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut h = Sha256::new();
        for chunk in data.chunks(1000) {
            h.update(chunk);
        }
        assert_eq!(h.finish(), openssl::sha::sha256(&data));
    }
}
