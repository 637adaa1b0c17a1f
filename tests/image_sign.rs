//! Signed images end to end, with the real `openssl` and `tar` commands (no mocks): packing,
//! the shell-only recipe of docs/image-format.md, tampering at every position, the chain and
//! policy refusals, and constant memory for a 64 MiB payload.
//!
//! `openssl` and `tar` must be on PATH: their absence fails the tests.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::pkey::PKey;
use openssl::x509::X509;
use wtpd::image::bundle::{BundleError, BundleReader, PayloadDigest};
use wtpd::image::manifest::{Manifest, SignatureAlgorithm};
use wtpd::image::pack::{
    hash_file, pack_folder, pack_image, ustar_header, FolderSpec, PackSpec, PayloadSpec,
    DEFAULT_HARDWARE_TYPES,
};
use wtpd::image::verify::{TrustPolicy, VerifyError, VERIFY_SUCCESS};
use wtpd_harness::pki::{self, CertSpec, Eku, Issued, KeyKind, LabPki};

// ---------------------------------------------------------------- helpers

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("image_sign")
        .join(format!("{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Runs a command in `dir`; a missing program or a failure fails the test.
fn run(dir: &Path, prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{prog} must be installed and on PATH: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a bash script in `dir` with `set -eu`.
fn sh(dir: &Path, script: &str) {
    run(dir, "bash", &["-euc", script]);
}

fn write_payload(path: &Path, len: usize, seed: u8) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    fs::write(path, data).unwrap();
}

fn lab(dir: &Path) -> LabPki {
    pki::generate_lab_pki(&dir.join("pki")).unwrap()
}

fn load_issued(cert: &Path, key: &Path) -> Issued {
    Issued {
        cert: X509::from_pem(&fs::read(cert).unwrap()).unwrap(),
        key: PKey::private_key_from_pem(&fs::read(key).unwrap()).unwrap(),
    }
}

fn policy(anchor_pem: &Path) -> TrustPolicy {
    TrustPolicy {
        anchors: TrustPolicy::anchors_from_pem(&fs::read(anchor_pem).unwrap()).unwrap(),
        hardware_type: "ap1g8".into(),
        board: "ap1g8-a".into(),
        not_before_floor: 0,
        now: Some(now()),
        allow_downgrade: false,
        current_version: Some("17.9.4.27".into()),
        expected_version: None,
    }
}

fn spec(dir: &Path, signer_key: &Path, chain: &[PathBuf], alg: SignatureAlgorithm) -> PackSpec {
    let rootfs = dir.join("rootfs.img");
    if !rootfs.exists() {
        write_payload(&rootfs, 3000, 7);
    }
    let mut s = PackSpec::new("ap1g8", "17.12.1.5", &rootfs, signer_key, chain);
    s.boards = vec!["ap1g8-a".into(), "ap1g8-b".into()];
    s.algorithm = alg;
    s
}

fn lab_spec(dir: &Path, l: &LabPki) -> PackSpec {
    spec(
        dir,
        &l.image_signer_key,
        &[
            l.image_signer_cert.clone(),
            l.image_intermediate_cert.clone(),
        ],
        SignatureAlgorithm::EcdsaP256Sha256,
    )
}

#[derive(Debug)]
enum Failure {
    Bundle(BundleError),
    Verify(VerifyError),
}

impl From<BundleError> for Failure {
    fn from(e: BundleError) -> Self {
        Failure::Bundle(e)
    }
}
impl From<VerifyError> for Failure {
    fn from(e: VerifyError) -> Self {
        Failure::Verify(e)
    }
}

fn io_to_bundle(e: io::Error) -> BundleError {
    match e.into_inner().map(|b| b.downcast::<BundleError>()) {
        Some(Ok(b)) => *b,
        other => panic!("payload read error that is not a BundleError: {other:?}"),
    }
}

/// Reads, verifies and streams every payload of an image, the way the installer does:
/// payloads are read with `io::copy` (so a bad digest shows as a read error) and finished.
fn read_image(r: impl Read, p: &TrustPolicy) -> Result<(u64, Vec<PayloadDigest>), Failure> {
    let mut b = BundleReader::new(r)?;
    let v = b.verify(p)?;
    let mut out = Vec::new();
    while let Some(mut pr) = b.next_payload(&v)? {
        io::copy(&mut pr, &mut io::sink()).map_err(io_to_bundle)?;
        out.push(pr.finish()?);
    }
    b.finish()?;
    Ok((v.new_time_floor(), out))
}

fn read_file(path: &Path, p: &TrustPolicy) -> Result<(u64, Vec<PayloadDigest>), Failure> {
    read_image(BufReader::new(File::open(path).unwrap()), p)
}

/// A chain made with pki::issue: root -> intermediate -> signer, each adjustable.
struct Chain {
    root: PathBuf,
    key: PathBuf,
    certs: Vec<PathBuf>,
}

fn make_chain(dir: &Path, tag: &str, inter: CertSpec, leaf: CertSpec) -> Chain {
    let root = pki::issue(&CertSpec::ca(&format!("{tag} root"), KeyKind::EcP256), None).unwrap();
    let i = pki::issue(&inter, Some(&root)).unwrap();
    let l = pki::issue(&leaf, Some(&i)).unwrap();
    let root = root.write_cert(dir, &format!("{tag}-root")).unwrap();
    let ip = i.write_cert(dir, &format!("{tag}-inter")).unwrap();
    let (lp, key) = l.write(dir, &format!("{tag}-signer")).unwrap();
    Chain {
        root,
        key,
        certs: vec![lp, ip],
    }
}

fn good_inter(tag: &str) -> CertSpec {
    let mut s = CertSpec::ca(&format!("{tag} intermediate"), KeyKind::EcP256);
    s.eku = vec![Eku::CodeSigning];
    s
}

fn good_leaf(tag: &str) -> CertSpec {
    CertSpec::leaf(
        &format!("{tag}-signer.lab"),
        KeyKind::EcP256,
        &[Eku::CodeSigning],
    )
}

fn pack_chain(dir: &Path, c: &Chain, name: &str) -> PathBuf {
    let s = spec(dir, &c.key, &c.certs, SignatureAlgorithm::EcdsaP256Sha256);
    let out = dir.join(name);
    pack_image(&s, &out).unwrap();
    out
}

// ---------------------------------------------------------------- round trips

#[test]
fn round_trip_each_algorithm_and_gnu_tar_reads_it() {
    let dir = tmpdir("roundtrip");
    let l = lab(&dir);
    let inter = load_issued(&l.image_intermediate_cert, &l.image_intermediate_key);
    // An RSA-2048 and an Ed25519 signer under the lab intermediate; Ed25519 via the openssl
    // command (pki.rs makes RSA and P-256 keys only).
    let rsa = pki::issue(
        &CertSpec::leaf("rsa-signer.lab", KeyKind::Rsa2048, &[Eku::CodeSigning]),
        Some(&inter),
    )
    .unwrap();
    let (rsa_cert, rsa_key) = rsa.write(&dir, "rsa-signer").unwrap();
    let (ed_cert, ed_key) = ed25519_signer(&dir, &l);

    write_payload(&dir.join("kernel.img"), 1025, 3);
    let cases = [
        (
            SignatureAlgorithm::EcdsaP256Sha256,
            l.image_signer_cert.clone(),
            l.image_signer_key.clone(),
        ),
        (SignatureAlgorithm::Ed25519, ed_cert, ed_key),
        (SignatureAlgorithm::RsaPssSha256, rsa_cert, rsa_key),
    ];
    let p = policy(&l.image_root_cert);
    for (alg, cert, key) in cases {
        let mut s = spec(&dir, &key, &[cert, l.image_intermediate_cert.clone()], alg);
        s.payloads.push(PayloadSpec {
            name: "kernel.img".into(),
            path: dir.join("kernel.img"),
            target: "kernel".into(),
        });
        let out = dir.join(format!("img-{alg}"));
        let packed = pack_image(&s, &out).unwrap();
        assert_eq!(packed.manifest.signature_algorithm, alg);
        assert_eq!(packed.size, fs::metadata(&out).unwrap().len());

        let (floor, digests) = read_file(&out, &p).unwrap_or_else(|e| panic!("{alg}: {e:?}"));
        assert!(floor >= s.build_time);
        assert_eq!(digests.len(), 2);
        for (d, ps) in digests.iter().zip(&s.payloads) {
            let (size, sha) = hash_file(&ps.path).unwrap();
            assert_eq!(
                (d.name.as_str(), d.size, d.sha256),
                (ps.name.as_str(), size, sha)
            );
            assert_eq!(d.target, ps.target);
        }
        println!("{alg}: {VERIFY_SUCCESS}");

        // GNU tar lists the members in format order and extracts the same bytes.
        let list = run(&dir, "tar", &["-tf", out.to_str().unwrap()]);
        assert_eq!(
            list.lines().collect::<Vec<_>>(),
            [
                "manifest",
                "manifest.sig",
                "signer.pem",
                "rootfs.img",
                "kernel.img"
            ]
        );
        let x = dir.join(format!("x-{alg}"));
        fs::create_dir_all(&x).unwrap();
        run(&x, "tar", &["-xf", out.to_str().unwrap()]);
        assert_eq!(
            fs::read(x.join("rootfs.img")).unwrap(),
            fs::read(dir.join("rootfs.img")).unwrap()
        );
        // And openssl verifies the signature over the extracted manifest.
        let pubkey = run(
            &x,
            "openssl",
            &["x509", "-in", "signer.pem", "-noout", "-pubkey"],
        );
        fs::write(x.join("pub.pem"), pubkey).unwrap();
        match alg {
            SignatureAlgorithm::EcdsaP256Sha256 => run(
                &x,
                "openssl",
                &[
                    "dgst",
                    "-sha256",
                    "-verify",
                    "pub.pem",
                    "-signature",
                    "manifest.sig",
                    "manifest",
                ],
            ),
            SignatureAlgorithm::Ed25519 => run(
                &x,
                "openssl",
                &[
                    "pkeyutl",
                    "-verify",
                    "-rawin",
                    "-pubin",
                    "-inkey",
                    "pub.pem",
                    "-sigfile",
                    "manifest.sig",
                    "-in",
                    "manifest",
                ],
            ),
            SignatureAlgorithm::RsaPssSha256 => run(
                &x,
                "openssl",
                &[
                    "dgst",
                    "-sha256",
                    "-sigopt",
                    "rsa_padding_mode:pss",
                    "-sigopt",
                    "rsa_pss_saltlen:digest",
                    "-verify",
                    "pub.pem",
                    "-signature",
                    "manifest.sig",
                    "manifest",
                ],
            ),
        };
    }
    assert_eq!(VERIFY_SUCCESS, "Image signing verify success.");
}

/// An Ed25519 code-signing certificate under the lab intermediate, made with the openssl
/// command only (the recipe of docs/image-format.md).
fn ed25519_signer(dir: &Path, l: &LabPki) -> (PathBuf, PathBuf) {
    fs::copy(
        &l.image_intermediate_cert,
        dir.join("image-intermediate.pem"),
    )
    .unwrap();
    fs::copy(
        &l.image_intermediate_key,
        dir.join("image-intermediate.key"),
    )
    .unwrap();
    sh(dir, ED25519_SIGNER_RECIPE);
    (dir.join("ed-signer.pem"), dir.join("ed-signer.key"))
}

/// Kept identical to docs/image-format.md, "An Ed25519 signer".
const ED25519_SIGNER_RECIPE: &str = r#"
openssl genpkey -algorithm ED25519 -out ed-signer.key
openssl req -new -key ed-signer.key -subj "/O=wtpd lab/CN=ed-signer.lab" -out ed-signer.csr
printf '%s\n' 'basicConstraints = critical, CA:FALSE' \
  'keyUsage = critical, digitalSignature' 'extendedKeyUsage = codeSigning' \
  'subjectAltName = DNS:ed-signer.lab' 'subjectKeyIdentifier = hash' \
  'authorityKeyIdentifier = keyid' > ed-signer.ext
openssl x509 -req -in ed-signer.csr -CA image-intermediate.pem -CAkey image-intermediate.key \
  -CAcreateserial -days 3650 -sha256 -extfile ed-signer.ext -out ed-signer.pem
"#;

/// Kept identical to docs/image-format.md, "Building an image with tar and openssl".
/// Inputs: rootfs.img, $KEY, $CERT, image-intermediate.pem, $ALG, $BUILD_TIME.
const SHELL_RECIPE: &str = r#"
size=$(wc -c < rootfs.img | tr -d ' ')
sha=$(openssl dgst -sha256 -r rootfs.img | cut -d' ' -f1)
printf 'format_version = 1\nhardware_type = "%s"\nversion = "%s"\ncompatible_boards = [%s]\nbuild_time = %s\nsignature_algorithm = "%s"\n\n[[payload]]\nname = "rootfs.img"\nsize = %s\nsha256 = "%s"\ntarget = "rootfs"\n' \
  ap1g8 17.12.1.5 '"ap1g8-a", "ap1g8-b"' "$BUILD_TIME" "$ALG" "$size" "$sha" > manifest
case "$ALG" in
  ecdsa-p256-sha256) openssl dgst -sha256 -sign "$KEY" -out manifest.sig manifest ;;
  ed25519) openssl pkeyutl -sign -rawin -inkey "$KEY" -in manifest -out manifest.sig ;;
  rsa-pss-sha256) openssl dgst -sha256 -sigopt rsa_padding_mode:pss \
      -sigopt rsa_pss_saltlen:digest -sign "$KEY" -out manifest.sig manifest ;;
esac
cat "$CERT" image-intermediate.pem > signer.pem
tar --format=ustar -cf ap1g8 manifest manifest.sig signer.pem rootfs.img
"#;

#[test]
fn image_made_with_only_tar_and_openssl_verifies() {
    let dir = tmpdir("shell");
    let l = lab(&dir);
    let (ed_cert, ed_key) = ed25519_signer(&dir, &l);
    let inter = load_issued(&l.image_intermediate_cert, &l.image_intermediate_key);
    let rsa = pki::issue(
        &CertSpec::leaf("rsa-signer.lab", KeyKind::Rsa2048, &[Eku::CodeSigning]),
        Some(&inter),
    )
    .unwrap();
    let (rsa_cert, rsa_key) = rsa.write(&dir, "rsa-signer").unwrap();
    write_payload(&dir.join("rootfs.img"), 70_000, 9);
    let p = policy(&l.image_root_cert);
    for (alg, cert, key) in [
        (
            "ecdsa-p256-sha256",
            l.image_signer_cert.clone(),
            l.image_signer_key.clone(),
        ),
        ("ed25519", ed_cert, ed_key),
        ("rsa-pss-sha256", rsa_cert, rsa_key),
    ] {
        let script = format!(
            "KEY='{}' CERT='{}' ALG={alg} BUILD_TIME=$(date +%s)\n{SHELL_RECIPE}",
            key.display(),
            cert.display()
        );
        sh(&dir, &script);
        let img = dir.join("ap1g8");
        let list = run(&dir, "tar", &["-tf", "ap1g8"]);
        assert_eq!(
            list.lines().collect::<Vec<_>>(),
            ["manifest", "manifest.sig", "signer.pem", "rootfs.img"],
            "GNU tar keeps the order given"
        );
        let (_, d) = read_file(&img, &p).unwrap_or_else(|e| panic!("{alg}: {e:?}"));
        assert_eq!(d[0].sha256, hash_file(&dir.join("rootfs.img")).unwrap().1);
        // The manifest printf wrote is the canonical text our packer writes.
        let m = fs::read(dir.join("manifest")).unwrap();
        assert_eq!(Manifest::parse(&m).unwrap().to_text().as_bytes(), &m[..]);
    }
}

#[test]
fn gnu_format_wrong_order_symlink_and_dotdot_are_refused() {
    let dir = tmpdir("tarshape");
    let l = lab(&dir);
    let img = dir.join("good");
    pack_image(&lab_spec(&dir, &l), &img).unwrap();
    let x = dir.join("x");
    fs::create_dir_all(&x).unwrap();
    run(&x, "tar", &["-xf", img.to_str().unwrap()]);
    let p = policy(&l.image_root_cert);

    run(
        &x,
        "tar",
        &[
            "--format=gnu",
            "-cf",
            "gnu.tar",
            "manifest",
            "manifest.sig",
            "signer.pem",
            "rootfs.img",
        ],
    );
    let e = read_file(&x.join("gnu.tar"), &p).unwrap_err();
    assert!(format!("{e:?}").contains("not POSIX ustar"), "{e:?}");

    run(
        &x,
        "tar",
        &[
            "--format=ustar",
            "-cf",
            "order.tar",
            "manifest",
            "signer.pem",
            "manifest.sig",
            "rootfs.img",
        ],
    );
    match read_file(&x.join("order.tar"), &p).unwrap_err() {
        Failure::Bundle(BundleError::UnexpectedMember {
            expected, found, ..
        }) => {
            assert_eq!(
                (expected.as_str(), found.as_str()),
                ("manifest.sig", "signer.pem")
            )
        }
        e => panic!("{e:?}"),
    }

    run(
        &x,
        "tar",
        &[
            "--format=ustar",
            // Else GNU tar stores the second copy as a hard link (type '1').
            "--hard-dereference",
            "-cf",
            "dup.tar",
            "manifest",
            "manifest.sig",
            "signer.pem",
            "rootfs.img",
            "rootfs.img",
        ],
    );
    match read_file(&x.join("dup.tar"), &p).unwrap_err() {
        Failure::Bundle(BundleError::UnexpectedMember { found, .. }) => {
            assert_eq!(found, "rootfs.img")
        }
        e => panic!("{e:?}"),
    }

    std::os::unix::fs::symlink("rootfs.img", x.join("link.img")).unwrap();
    run(
        &x,
        "tar",
        &["--format=ustar", "-cf", "link.tar", "link.img"],
    );
    match BundleReader::new(File::open(x.join("link.tar")).unwrap()).unwrap_err() {
        BundleError::NotRegularFile { typeflag, .. } => assert_eq!(typeflag, '2'),
        e => panic!("{e:?}"),
    }

    let mut evil = ustar_header("../manifest", 0, 0).unwrap().to_vec();
    evil.extend_from_slice(&[0u8; 1024]);
    assert!(matches!(
        BundleReader::new(&evil[..]).unwrap_err(),
        BundleError::UnsafeName { .. }
    ));
    let mut abs = ustar_header("/manifest", 0, 0).unwrap().to_vec();
    abs.extend_from_slice(&[0u8; 1024]);
    assert!(matches!(
        BundleReader::new(&abs[..]).unwrap_err(),
        BundleError::UnsafeName { .. }
    ));

    // Trailing garbage after the end-of-archive blocks.
    let mut bytes = fs::read(&img).unwrap();
    bytes.extend_from_slice(b"junk");
    assert!(matches!(
        read_image(&bytes[..], &p).unwrap_err(),
        Failure::Bundle(BundleError::TrailingData { .. })
    ));
}

// ---------------------------------------------------------------- tampering

#[test]
fn every_single_byte_change_is_refused() {
    let dir = tmpdir("tamper");
    let l = lab(&dir);
    let img = dir.join("img");
    pack_image(&lab_spec(&dir, &l), &img).unwrap();
    let good = fs::read(&img).unwrap();
    let p = policy(&l.image_root_cert);
    read_image(&good[..], &p).unwrap();

    // Member layout: header, data, padding.
    let b = BundleReader::new(&good[..]).unwrap();
    let lens = [
        b.manifest_bytes().len(),
        b.signature().len(),
        b.chain_pem().len(),
        3000,
    ];
    let mut regions = Vec::new(); // (name, header offset, data offset, len)
    let mut off = 0;
    for (name, len) in ["manifest", "manifest.sig", "signer.pem", "rootfs.img"]
        .iter()
        .zip(lens)
    {
        regions.push((*name, off, off + 512, len));
        off += 512 + len.div_ceil(512) * 512;
    }
    let flip = |pos: usize| {
        let mut t = good.clone();
        t[pos] ^= 0x01;
        read_image(&t[..], &p)
    };

    // The right error for a change in each part.
    for &(name, hdr, data, len) in &regions {
        for pos in [hdr, hdr + 124 + 5, hdr + 148 + 2] {
            match flip(pos) {
                Err(Failure::Bundle(BundleError::BadChecksum { .. })) => {}
                r => panic!("header of {name} at {pos}: {r:?}"),
            }
        }
        for pos in [data, data + len / 2, data + len - 1] {
            let r = flip(pos);
            match (name, &r) {
                ("manifest", Err(Failure::Verify(VerifyError::BadSignature { .. })))
                | ("manifest", Err(Failure::Bundle(BundleError::Manifest(_))))
                | ("manifest.sig", Err(Failure::Verify(VerifyError::BadSignature { .. })))
                | ("signer.pem", Err(Failure::Bundle(BundleError::ChainNotCanonical { .. })))
                | ("signer.pem", Err(Failure::Verify(_)))
                | ("rootfs.img", Err(Failure::Bundle(BundleError::PayloadDigestMismatch { .. }))) =>
                    {}
                _ => panic!("{name} byte {pos}: {r:?}"),
            }
        }
        if len % 512 != 0 {
            assert!(matches!(
                flip(data + len),
                Err(Failure::Bundle(BundleError::NonZeroPadding { .. }))
            ));
        }
    }
    // A payload change is caught at finish() too, without reading through `Read`.
    let mut t = good.clone();
    t[regions[3].2 + 10] ^= 0x80;
    let mut br = BundleReader::new(&t[..]).unwrap();
    let v = br.verify(&p).unwrap();
    let pr = br.next_payload(&v).unwrap().unwrap();
    assert!(matches!(
        pr.finish(),
        Err(BundleError::PayloadDigestMismatch { .. })
    ));
    // ... and a reader never sees end-of-file on it: the last read is an error.
    let mut br = BundleReader::new(&t[..]).unwrap();
    let v = br.verify(&p).unwrap();
    let mut pr = br.next_payload(&v).unwrap().unwrap();
    let mut sink = Vec::new();
    let e = pr.read_to_end(&mut sink).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert_eq!(sink.len(), 3000);

    // Every 97th byte, and every 97th truncation, are refused.
    let mut n = 0;
    for pos in (0..good.len()).step_by(97) {
        assert!(
            flip(pos).is_err(),
            "change at byte {pos} of {} accepted",
            good.len()
        );
        assert!(
            read_image(&good[..pos], &p).is_err(),
            "truncation at {pos} accepted"
        );
        n += 1;
    }
    assert!(n > 50, "{n}");
}

#[test]
fn payloads_need_this_images_verified_manifest_and_a_finish() {
    let dir = tmpdir("misuse");
    let l = lab(&dir);
    let a = dir.join("a");
    pack_image(&lab_spec(&dir, &l), &a).unwrap();
    let mut s2 = lab_spec(&dir, &l);
    s2.version = "17.12.2.0".into();
    let b = dir.join("b");
    pack_image(&s2, &b).unwrap();
    let p = policy(&l.image_root_cert);

    let ra = BundleReader::new(File::open(&a).unwrap()).unwrap();
    let va = ra.verify(&p).unwrap();
    let mut rb = BundleReader::new(File::open(&b).unwrap()).unwrap();
    assert!(matches!(
        rb.next_payload(&va),
        Err(BundleError::NotVerified)
    ));

    let vb = rb.verify(&p).unwrap();
    let pr = rb.next_payload(&vb).unwrap().unwrap();
    drop(pr); // not finished
    assert!(matches!(
        rb.next_payload(&vb),
        Err(BundleError::PayloadNotFinished { .. })
    ));
    let rb = BundleReader::new(File::open(&b).unwrap()).unwrap();
    rb.verify(&p).unwrap();
    assert!(matches!(
        rb.finish(),
        Err(BundleError::PayloadsRemaining { .. })
    ));
}

// ---------------------------------------------------------------- policy and chains

#[test]
fn hardware_type_and_board_must_match() {
    let dir = tmpdir("board");
    let l = lab(&dir);
    let img = dir.join("img");
    pack_image(&lab_spec(&dir, &l), &img).unwrap();
    let mut p = policy(&l.image_root_cert);
    p.hardware_type = "ap1g7".into();
    match read_file(&img, &p).unwrap_err() {
        Failure::Verify(VerifyError::HardwareType { expected, found }) => {
            assert_eq!((expected.as_str(), found.as_str()), ("ap1g7", "ap1g8"))
        }
        e => panic!("{e:?}"),
    }
    let mut p = policy(&l.image_root_cert);
    p.board = "ap1g8-z".into();
    match read_file(&img, &p).unwrap_err() {
        Failure::Verify(e @ VerifyError::BoardNotCompatible { .. }) => {
            assert!(e.to_string().contains("ap1g8-z"), "{e}")
        }
        e => panic!("{e:?}"),
    }
    // An empty list admits every board of the type.
    let mut s = lab_spec(&dir, &l);
    s.boards.clear();
    pack_image(&s, &img).unwrap();
    read_file(&img, &p).unwrap();
}

#[test]
fn expired_chains_are_refused_naming_the_certificate() {
    let dir = tmpdir("expired");
    let mut leaf = good_leaf("old");
    leaf.valid_from_days = -400;
    leaf.valid_days = 30;
    let c = make_chain(&dir, "old", good_inter("old"), leaf);
    let img = pack_chain(&dir, &c, "img");
    match read_file(&img, &policy(&c.root)).unwrap_err() {
        Failure::Verify(VerifyError::CertExpired {
            cert,
            not_after,
            time,
        }) => {
            assert!(cert.starts_with("signer CN=old-signer.lab"), "{cert}");
            assert!(not_after < time);
        }
        e => panic!("{e:?}"),
    }

    let mut inter = good_inter("oldi");
    inter.valid_from_days = -400;
    inter.valid_days = 30;
    let c = make_chain(&dir, "oldi", inter, good_leaf("oldi"));
    let img = pack_chain(&dir, &c, "img2");
    match read_file(&img, &policy(&c.root)).unwrap_err() {
        Failure::Verify(VerifyError::CertExpired { cert, .. }) => {
            assert!(cert.starts_with("intermediate #1"), "{cert}")
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn foreign_root_is_refused() {
    let dir = tmpdir("foreign");
    let l = lab(&dir);
    let c = make_chain(&dir, "foreign", good_inter("foreign"), good_leaf("foreign"));
    let img = pack_chain(&dir, &c, "img");
    read_file(&img, &policy(&c.root)).unwrap();
    match read_file(&img, &policy(&l.image_root_cert)).unwrap_err() {
        Failure::Verify(e @ VerifyError::UnknownIssuer { .. }) => {
            let t = e.to_string();
            assert!(
                t.contains("foreign-signer.lab") && t.contains("foreign root"),
                "{t}"
            )
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn code_signing_eku_is_required_on_leaf_and_intermediate() {
    let dir = tmpdir("eku");
    let c = make_chain(
        &dir,
        "noleaf",
        good_inter("noleaf"),
        CertSpec::leaf("noleaf-signer.lab", KeyKind::EcP256, &[Eku::ServerAuth]),
    );
    let img = pack_chain(&dir, &c, "leaf");
    match read_file(&img, &policy(&c.root)).unwrap_err() {
        Failure::Verify(VerifyError::MissingCodeSigning { cert }) => {
            assert!(cert.starts_with("signer CN=noleaf-signer.lab"), "{cert}")
        }
        e => panic!("{e:?}"),
    }
    for (tag, eku) in [("noint", vec![]), ("srvint", vec![Eku::ServerAuth])] {
        let mut inter = CertSpec::ca(&format!("{tag} intermediate"), KeyKind::EcP256);
        inter.eku = eku;
        let c = make_chain(&dir, tag, inter, good_leaf(tag));
        let img = pack_chain(&dir, &c, tag);
        match read_file(&img, &policy(&c.root)).unwrap_err() {
            Failure::Verify(VerifyError::MissingCodeSigning { cert }) => {
                assert!(cert.starts_with("intermediate #1"), "{tag}: {cert}")
            }
            e => panic!("{tag}: {e:?}"),
        }
    }
}

#[test]
fn clock_at_1970_uses_floor_and_build_time() {
    let dir = tmpdir("clock");
    let l = lab(&dir);
    let img = dir.join("img");
    let s = lab_spec(&dir, &l);
    pack_image(&s, &img).unwrap();
    let mut expired_leaf = good_leaf("exp");
    expired_leaf.valid_from_days = -400;
    expired_leaf.valid_days = 30;
    let c = make_chain(&dir, "exp", good_inter("exp"), expired_leaf);

    for now in [Some(0), None] {
        // Valid cert, clock at 1970, no floor: the build time (now-ish) is used.
        let mut p = policy(&l.image_root_cert);
        p.now = now;
        let (floor, _) = read_file(&img, &p).unwrap();
        assert_eq!(floor, s.build_time, "the new floor is the time used");
        // With a floor later than the build time, the floor is used (and returned).
        p.not_before_floor = s.build_time + 3600;
        let (floor, _) = read_file(&img, &p).unwrap();
        assert_eq!(floor, s.build_time + 3600);

        // Expired cert, clock at 1970: the floor / build time still say expired.
        let exp = pack_chain(&dir, &c, "exp");
        let mut p = policy(&c.root);
        p.now = now;
        assert!(matches!(
            read_file(&exp, &p).unwrap_err(),
            Failure::Verify(VerifyError::CertExpired { .. })
        ));
        // Even an image claiming a 1970 build time is not checked at 1970: the floor holds.
        let mut s70 = spec(&dir, &c.key, &c.certs, SignatureAlgorithm::EcdsaP256Sha256);
        s70.build_time = 0;
        pack_image(&s70, &exp).unwrap();
        p.not_before_floor = now_floor();
        assert!(matches!(
            read_file(&exp, &p).unwrap_err(),
            Failure::Verify(VerifyError::CertExpired { .. })
        ));
        // Without any floor, 1970 is before every certificate: refused, never accepted.
        p.not_before_floor = 0;
        assert!(matches!(
            read_file(&exp, &p).unwrap_err(),
            Failure::Verify(VerifyError::CertNotYetValid { .. })
        ));
    }
}

fn now_floor() -> u64 {
    now() - 86_400
}

#[test]
fn downgrade_is_refused_unless_allowed() {
    let dir = tmpdir("downgrade");
    let l = lab(&dir);
    let img = dir.join("img");
    let mut s = lab_spec(&dir, &l);
    s.version = "17.9.4.27".into();
    pack_image(&s, &img).unwrap();
    let mut p = policy(&l.image_root_cert);
    p.current_version = Some("17.12.1.5".into());
    match read_file(&img, &p).unwrap_err() {
        Failure::Verify(VerifyError::Downgrade { current, offered }) => {
            assert_eq!(
                (current.as_str(), offered.as_str()),
                ("17.12.1.5", "17.9.4.27")
            )
        }
        e => panic!("{e:?}"),
    }
    p.allow_downgrade = true;
    read_file(&img, &p).unwrap();
    p.allow_downgrade = false;
    for cur in ["17.9.4.27", "17.9.4", "17.9.4.26", "9.99"] {
        p.current_version = Some(cur.into());
        read_file(&img, &p).unwrap_or_else(|e| panic!("{cur}: {e:?}"));
    }
}

#[test]
fn image_folder_has_one_image_per_hardware_type() {
    let dir = tmpdir("folder");
    let l = lab(&dir);
    let folder = dir.join("17_12_1_5");
    let packed = pack_folder(&FolderSpec::all_types(lab_spec(&dir, &l)), &folder).unwrap();
    assert_eq!(packed.len(), DEFAULT_HARDWARE_TYPES.len());
    assert_eq!(
        fs::read_to_string(folder.join("version.info")).unwrap(),
        "17.12.1.5\n"
    );
    let mut names: Vec<String> = fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<&str> = DEFAULT_HARDWARE_TYPES.to_vec();
    want.push("version.info");
    want.sort();
    assert_eq!(names, want);
    for hw in DEFAULT_HARDWARE_TYPES {
        let mut p = policy(&l.image_root_cert);
        p.hardware_type = hw.into();
        read_file(&folder.join(hw), &p).unwrap_or_else(|e| panic!("{hw}: {e:?}"));
        p.hardware_type = if hw == "ap1g8" { "ap1g7" } else { "ap1g8" }.into();
        assert!(matches!(
            read_file(&folder.join(hw), &p).unwrap_err(),
            Failure::Verify(VerifyError::HardwareType { .. })
        ));
    }
}

// ---------------------------------------------------------------- memory

const MEMORY_CHILD_ENV: &str = "IMAGE_SIGN_MEMORY_CHILD_DIR";

fn vm_hwm_kib() -> u64 {
    let s = fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Runs the 64 MiB case in a child process of its own, so that other tests running in
/// parallel threads cannot move the peak RSS it measures.
#[test]
fn streaming_64_mib_in_constant_memory() {
    let dir = tmpdir("memory");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "streaming_memory_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MEMORY_CHILD_ENV, &dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("1 passed") && text.contains("peak RSS grew"),
        "{text}"
    );
    println!("{text}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "run by streaming_64_mib_in_constant_memory in a process of its own"]
fn streaming_memory_child() {
    let Some(dir) = std::env::var_os(MEMORY_CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let l = lab(&dir);
    const SIZE: usize = 64 << 20;
    {
        let mut f = io::BufWriter::new(File::create(dir.join("rootfs.img")).unwrap());
        let mut chunk = vec![0u8; 64 * 1024];
        for i in 0..SIZE / chunk.len() {
            for (j, b) in chunk.iter_mut().enumerate() {
                *b = (i ^ j) as u8;
            }
            f.write_all(&chunk).unwrap();
        }
    }
    let p = policy(&l.image_root_cert);
    // Warm up every code path on a small image so one-time allocations are not counted.
    let small = tmpdir("memory-warm");
    let warm = small.join("img");
    pack_image(&lab_spec(&small, &l), &warm).unwrap();
    read_file(&warm, &p).unwrap();

    let before = vm_hwm_kib();
    let img = dir.join("big");
    let packed = pack_image(&lab_spec(&dir, &l), &img).unwrap();
    assert!(packed.size > SIZE as u64);
    let (_, d) = read_file(&img, &p).unwrap();
    assert_eq!(d[0].size, SIZE as u64);
    let after = vm_hwm_kib();
    let grew = after.saturating_sub(before);
    println!(
        "peak RSS grew {grew} KiB (before {before} KiB, after {after} KiB) for a 64 MiB payload"
    );
    assert!(
        grew < 4 * 1024,
        "peak RSS grew {grew} KiB packing and reading 64 MiB"
    );
    let _ = fs::remove_dir_all(&small);
}

#[test]
fn documented_recipes_are_the_tested_ones() {
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/image-format.md"))
            .unwrap();
    assert!(
        doc.contains(SHELL_RECIPE.trim()),
        "docs/image-format.md lacks SHELL_RECIPE"
    );
    assert!(
        doc.contains(ED25519_SIGNER_RECIPE.trim()),
        "docs/image-format.md lacks ED25519_SIGNER_RECIPE"
    );
    assert!(doc.contains(VERIFY_SUCCESS));
}
