//! The signed image (tar framing, manifest, signer.pem, payload digests), read as the agent
//! reads it: BundleReader over a stream that returns short reads, against the in-memory
//! reference verifier of fuzz/src/image.rs (a differential check).
//!
//! Input: one byte `k`, then `k % 8` read-size bytes for the stream (see ChunkedReader), then
//! the image. The seeds are small images signed by the lab PKI (fuzz/corpus-seeds/bundle/), so
//! mutations land in a real image: headers, padding, the end blocks, payload bytes.
//!
//! Properties, beyond "never panics":
//! 1. Before the signature verified, the reader has consumed nothing past the head (the three
//!    signed-head members), and a payload is refused against another image's VerifiedManifest.
//! 2. While a payload is read, the stream is never read past that payload's declared size.
//! 3. The bytes a payload reader yields are the image's bytes at that place.
//! 4. The streaming reader accepts exactly the images the reference accepts, with the same
//!    payloads.

#![no_main]

use std::cell::Cell;
use std::io::Read;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wtpd::image::bundle::{BundleError, BundleReader, BLOCK};
use wtpd::image::verify::VerifiedManifest;
use wtpd_fuzz::image::{reference_verify, verify_cached};
use wtpd_fuzz::ChunkedReader;

/// A VerifiedManifest of another image (the first seed), to check that the reader refuses to
/// hand out a payload against it.
fn foreign() -> &'static (Vec<u8>, VerifiedManifest) {
    static F: OnceLock<(Vec<u8>, VerifiedManifest)> = OnceLock::new();
    F.get_or_init(|| {
        let img: &[u8] = include_bytes!("../corpus-seeds/bundle/one-payload.tar");
        let b = BundleReader::new(&img[1..]).expect("seed image reads");
        let v = verify_cached(b.manifest_bytes(), b.signature(), b.chain_pem())
            .expect("seed image verifies");
        (b.manifest_bytes().to_vec(), v)
    })
}

/// The streaming path: `Ok` with the payloads when every check passed.
fn stream(
    img: &[u8],
    sizes: &[u8],
    head_end: Option<usize>,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let consumed = Cell::new(0);
    let mut bundle =
        BundleReader::new(ChunkedReader::new(img, sizes, &consumed)).map_err(|e| e.to_string())?;
    // Property 1: nothing past the head yet (the reference found the same head).
    let consumed_at_head = consumed.get();
    assert_eq!(
        Some(consumed_at_head),
        head_end,
        "head ends where the reference says"
    );
    assert_eq!(bundle.position() as usize, consumed_at_head);
    let (foreign_manifest, foreign_verified) = foreign();
    if bundle.manifest_bytes() != foreign_manifest.as_slice() {
        match bundle.next_payload(foreign_verified) {
            Err(BundleError::NotVerified) => {}
            other => panic!("payload handed out against another image's manifest: {other:?}"),
        }
    }
    assert_eq!(
        consumed.get(),
        consumed_at_head,
        "a refused payload read nothing"
    );
    let verified = verify_cached(
        bundle.manifest_bytes(),
        bundle.signature(),
        bundle.chain_pem(),
    )
    .ok_or("head does not verify")?;
    let mut out = Vec::new();
    let mut turn = 0usize;
    loop {
        let start = bundle.position() as usize;
        let Some(mut p) = bundle.next_payload(&verified).map_err(|e| e.to_string())? else {
            break;
        };
        let (name, size) = (p.name().to_string(), p.size() as usize);
        let data_start = start + BLOCK;
        let mut data = Vec::new();
        // Read part of the payload (or all of it) in caller buffers of varying size, then let
        // finish() drain the rest, as install does.
        let mut buf = [0u8; 1500];
        let mut failed = None;
        loop {
            let len = sizes
                .get(turn % sizes.len().max(1))
                .map_or(1500, |&s| usize::from(s) * 6 + 1);
            turn += 1;
            let r = p.read(&mut buf[..len.min(1500)]);
            // Property 2: never past the declared size (the padding is read by finish()).
            assert!(
                consumed.get() <= data_start + size,
                "read past the payload's size"
            );
            match r {
                Ok(0) => break,
                Ok(n) => data.extend_from_slice(&buf[..n]),
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        // Property 3.
        let pos = data_start + data.len();
        assert!(
            data.len() <= size,
            "payload reader yielded more than the declared size"
        );
        assert_eq!(
            data,
            img[data_start..pos],
            "payload bytes are the image's bytes"
        );
        if let Some(e) = failed {
            return Err(e);
        }
        p.finish().map_err(|e| e.to_string())?;
        out.push((name, data));
    }
    bundle.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

fuzz_target!(|input: &[u8]| {
    let Some((&k, rest)) = input.split_first() else {
        return;
    };
    let k = usize::from(k % 8).min(rest.len());
    let (sizes, img) = rest.split_at(k);
    let (head_end, reference) = reference_verify(img);
    let streamed = stream(img, sizes, head_end.map(|h| h.0));
    match (&streamed, &reference) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "same payloads"),
        (Err(_), Err(_)) => {}
        _ => {
            panic!("streaming and reference disagree: stream {streamed:?}, reference {reference:?}")
        }
    }
});
