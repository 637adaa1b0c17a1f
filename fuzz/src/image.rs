//! Signed images for the `bundle` and `chain` targets.
//!
//! The seed images (fuzz/corpus-seeds/bundle/, written by `tests/fuzz_seeds.rs`) are signed by
//! the lab PKI whose root is fuzz/data/image-root.pem. The policy verifies at the manifest's
//! own build time (`now: None`, no floor), so the seeds stay valid whenever the fuzzer runs.
//!
//! [`verify_cached`] memoizes `verify_manifest` by the SHA-256 of the signed head: almost every
//! mutation leaves the head alone, and three ECDSA verifications per input would cut the
//! executions per second a hundredfold. The cache changes no outcome: `verify_manifest` is a
//! pure function of its inputs and the fixed policy.

use std::cell::RefCell;
use std::collections::HashMap;

use ring::digest::{digest, SHA256};
use wtpd::image::bundle::{canonical_pem, BLOCK, MAX_CHAIN_LEN, MAX_SIGNATURE_LEN};
use wtpd::image::manifest::{Manifest, MAX_MANIFEST_LEN};
use wtpd::image::verify::{verify_manifest, TrustPolicy, VerifiedManifest};

/// The root of the lab PKI that signed the seed images.
pub const ANCHOR_PEM: &[u8] = include_bytes!("../data/image-root.pem");

/// What the seed images satisfy: hardware type `ap1g8`, board `ap1g8-a`, checked at the
/// manifest's build time, any version.
pub fn policy() -> TrustPolicy {
    TrustPolicy {
        anchors: TrustPolicy::anchors_from_pem(ANCHOR_PEM).expect("fuzz/data/image-root.pem"),
        hardware_type: "ap1g8".into(),
        board: "ap1g8-a".into(),
        not_before_floor: 0,
        now: None,
        allow_downgrade: true,
        current_version: None,
        expected_version: None,
    }
}

/// Entries kept before the cache is emptied (a bound on the fuzzer's memory).
const CACHE_MAX: usize = 4096;

thread_local! {
    static POLICY: TrustPolicy = policy();
    static CACHE: RefCell<HashMap<[u8; 32], Option<VerifiedManifest>>> =
        RefCell::new(HashMap::new());
}

/// `verify_manifest(manifest, sig, chain, &policy())`, memoized; `None` when it refuses.
pub fn verify_cached(manifest: &[u8], sig: &[u8], chain: &[u8]) -> Option<VerifiedManifest> {
    // Lengths go into the key so that moving bytes between the three fields changes it.
    let mut key_input = Vec::with_capacity(24 + manifest.len() + sig.len() + chain.len());
    for part in [manifest, sig, chain] {
        key_input.extend_from_slice(&(part.len() as u64).to_be_bytes());
        key_input.extend_from_slice(part);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(digest(&SHA256, &key_input).as_ref());
    if let Some(hit) = CACHE.with(|c| c.borrow().get(&key).cloned()) {
        return hit;
    }
    let result = POLICY.with(|p| verify_manifest(manifest, sig, chain, p).ok());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CACHE_MAX {
            c.clear();
        }
        c.insert(key, result.clone());
    });
    result
}

/// The payloads of a good image, as (name, bytes), or why the image is refused.
pub type Verdict = Result<Vec<(String, Vec<u8>)>, String>;

/// Where the reference verifier found the head to end: the byte after `signer.pem`'s padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadEnd(pub usize);

/// The whole-image verifier the streaming [`wtpd::image::bundle::BundleReader`] is compared
/// with: the image in memory, walked as docs/image-format.md describes it, written without
/// looking at bundle.rs's code. `Ok` with the payloads' (name, bytes) when the image is good.
///
/// It returns where the head ended even when it refuses, once the head was found, so that the
/// target can check that the streaming reader read no further before the signature verified.
pub fn reference_verify(img: &[u8]) -> (Option<HeadEnd>, Verdict) {
    let mut pos = 0usize;
    let mut head = Vec::new();
    for (name, max) in [
        ("manifest", MAX_MANIFEST_LEN),
        ("manifest.sig", MAX_SIGNATURE_LEN),
        ("signer.pem", MAX_CHAIN_LEN),
    ] {
        match member(img, &mut pos, name, max as u64) {
            Ok(data) => head.push(data),
            Err(e) => return (None, Err(e)),
        }
    }
    let head_end = Some(HeadEnd(pos));
    let (manifest_bytes, sig, chain) = (head[0], head[1], head[2]);
    let result = (|| {
        if !pem_is_canonical(chain) {
            return Err("signer.pem is not canonical PEM".to_string());
        }
        let manifest = Manifest::parse(manifest_bytes).map_err(|e| e.to_string())?;
        verify_cached(manifest_bytes, sig, chain).ok_or("head does not verify")?;
        let mut out = Vec::new();
        for p in &manifest.payloads {
            let data = member(img, &mut pos, &p.name, u64::MAX)?;
            if data.len() as u64 != p.size {
                return Err(format!("{}: size", p.name));
            }
            if digest(&SHA256, data).as_ref() != p.sha256 {
                return Err(format!("{}: sha256", p.name));
            }
            out.push((p.name.clone(), data.to_vec()));
        }
        // Two zero blocks, then zeros only (any amount, tar's record padding).
        let end = img
            .get(pos..pos + 2 * BLOCK)
            .ok_or("no end-of-archive blocks")?;
        if end.iter().any(|&b| b != 0) || img[pos + 2 * BLOCK..].iter().any(|&b| b != 0) {
            return Err("non-zero bytes at or after the end of the archive".into());
        }
        Ok(out)
    })();
    (head_end, result)
}

/// One member named `name` at `*pos`: header, at most `max` bytes of data, zero padding.
fn member<'a>(img: &'a [u8], pos: &mut usize, name: &str, max: u64) -> Result<&'a [u8], String> {
    let h = img.get(*pos..*pos + BLOCK).ok_or("truncated header")?;
    let size = header(h, name)?;
    if size > max {
        return Err(format!("{name}: too large"));
    }
    let start = *pos + BLOCK;
    let size = usize::try_from(size).map_err(|_| "size")?;
    let end = start.checked_add(size).ok_or("size")?;
    let data = img.get(start..end).ok_or("truncated data")?;
    let padded = end.div_ceil(BLOCK) * BLOCK;
    let pad = img.get(end..padded).ok_or("truncated padding")?;
    if pad.iter().any(|&b| b != 0) {
        return Err(format!("{name}: non-zero padding"));
    }
    *pos = padded;
    Ok(data)
}

/// Checks one ustar header block for a regular file called exactly `name`; returns its size.
fn header(h: &[u8], name: &str) -> Result<u64, String> {
    if h.iter().all(|&b| b == 0) {
        return Err(format!("end of archive where {name} was expected"));
    }
    // Checksum: the sum of all bytes with the checksum field counted as spaces, stored as six
    // octal digits, NUL, space.
    let ck = &h[148..156];
    if !(ck[..6].iter().all(|b| (b'0'..=b'7').contains(b)) && ck[6] == 0 && ck[7] == b' ') {
        return Err("checksum field format".into());
    }
    let stored = ck[..6]
        .iter()
        .fold(0u32, |v, &d| v * 8 + u32::from(d - b'0'));
    let sum: u32 = h[..148]
        .iter()
        .chain(&h[156..])
        .map(|&b| u32::from(b))
        .sum::<u32>()
        + 8 * 32;
    if stored != sum {
        return Err("checksum".into());
    }
    if &h[257..265] != b"ustar\x0000" {
        return Err("magic".into());
    }
    if h[156] != b'0' && h[156] != 0 {
        return Err("not a regular file".into());
    }
    // The name is the prefix (when there is one), a slash, and the name field, each up to its
    // first NUL. Expected names have no slash, so the prefix must be empty.
    let field = |f: &[u8]| f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())].to_vec();
    let (prefix, short) = (field(&h[345..500]), field(&h[0..100]));
    let full = if prefix.is_empty() {
        short
    } else {
        [prefix, b"/".to_vec(), short].concat()
    };
    if full != name.as_bytes() {
        return Err(format!(
            "member {:?}, expected {name}",
            String::from_utf8_lossy(&full)
        ));
    }
    size_field(&h[124..136]).ok_or_else(|| "size field".to_string())
}

/// Octal digits, then only NULs and spaces (at least one digit).
fn size_field(f: &[u8]) -> Option<u64> {
    let n = f.iter().take_while(|b| (b'0'..=b'7').contains(b)).count();
    if n == 0 || !f[n..].iter().all(|&b| b == 0 || b == b' ') {
        return None;
    }
    f[..n].iter().try_fold(0u64, |v, &d| {
        v.checked_mul(8)?.checked_add(u64::from(d - b'0'))
    })
}

/// Concatenated CERTIFICATE blocks exactly as OpenSSL writes them, checked by decoding each
/// block and comparing the text with its canonical re-encoding.
fn pem_is_canonical(pem: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(pem) else {
        return false;
    };
    let mut ders = Vec::new();
    let mut lines = text.split_inclusive('\n');
    while let Some(begin) = lines.next() {
        if begin != "-----BEGIN CERTIFICATE-----\n" {
            return false;
        }
        let mut b64 = String::new();
        loop {
            match lines.next() {
                Some("-----END CERTIFICATE-----\n") => break,
                Some(l) => b64.push_str(l.trim_end_matches('\n')),
                None => return false,
            }
        }
        match base64_decode(&b64) {
            Some(d) => ders.push(d),
            None => return false,
        }
    }
    if ders.is_empty() {
        return false;
    }
    let refs: Vec<&[u8]> = ders.iter().map(Vec::as_slice).collect();
    canonical_pem(&refs) == pem
}

/// Standard base64 with padding; `None` for anything else.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (i, q) in b.chunks(4).enumerate() {
        let last = i == b.len() / 4 - 1;
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = n << 6 | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}
