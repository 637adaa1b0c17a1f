//! signer.pem and its X.509 chain, parsed before the manifest's signature is verified (the
//! chain is what the signature is checked with). Input: byte 0 picks the form: even, the rest
//! is signer.pem as text; odd, the rest is certificates as DER, each behind a 2-byte length,
//! written as canonical PEM (so mutations reach the DER and webpki's parser, not just base64).
//! The manifest and its signature are the first seed image's.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wtpd::image::bundle::{canonical_pem, BundleReader};
use wtpd::image::verify::{verify_manifest, TrustPolicy};
use wtpd_fuzz::image::policy;

struct Fixed {
    manifest: Vec<u8>,
    sig: Vec<u8>,
    policy: TrustPolicy,
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| {
        let img: &[u8] = include_bytes!("../corpus-seeds/bundle/one-payload.tar");
        let b = BundleReader::new(&img[1..]).expect("seed image reads");
        Fixed {
            manifest: b.manifest_bytes().to_vec(),
            sig: b.signature().to_vec(),
            policy: policy(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let pem = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut ders = Vec::new();
        let mut r = rest;
        while let [a, b, tail @ ..] = r {
            let n = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
            ders.push(&tail[..n]);
            r = &tail[n..];
        }
        canonical_pem(&ders)
    };
    let f = fixed();
    let _ = verify_manifest(&f.manifest, &f.sig, &pem, &f.policy);
});
