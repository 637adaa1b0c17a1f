//! Certificates as PEM, exactly as OpenSSL writes them: what `signer.pem` must be, byte for
//! byte, so that no change to an image's signer chain goes unnoticed.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64, standard alphabet, padded.
fn base64(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(char::from(B64[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// PEM as OpenSSL writes it: `-----BEGIN CERTIFICATE-----\n`, base64 in 64-column lines,
/// `-----END CERTIFICATE-----\n`.
pub fn canonical_pem(ders: &[&[u8]]) -> Vec<u8> {
    let mut out = String::new();
    for der in ders {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b = base64(der);
        for line in b.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or(""));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out.into_bytes()
}

/// Checks that `pem` is one or more CERTIFICATE blocks and nothing else, written as
/// [`canonical_pem`] writes them; `Err` says what is off.
pub(crate) fn check_canonical(pem: &[u8]) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut ders = Vec::new();
    for c in CertificateDer::pem_slice_iter(pem) {
        ders.push(c.map_err(|e| format!("bad PEM: {e:?}"))?);
    }
    if ders.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    let refs: Vec<&[u8]> = ders.iter().map(|d| d.as_ref()).collect();
    if canonical_pem(&refs) != pem {
        return Err(
            "not exactly concatenated CERTIFICATE blocks as openssl writes them \
                    (64-column base64, LF line ends, nothing between or after)"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
