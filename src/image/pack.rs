//! Building signed images (the controller side, and tests): the manifest from the payload
//! files, the signature with OpenSSL, the tar written in a stream (payloads are never held in
//! memory), and the image folder a controller serves: one file per AP hardware type plus
//! `version.info`.
//!
//! The result is byte-for-byte what `docs/image-format.md`'s shell recipe makes with `tar
//! --format=ustar`, apart from tar header fields nobody reads (owner names, mode, mtime).

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private};
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Signer};
use openssl::x509::X509;
use ring::digest::{Context, SHA256};

use super::manifest::{
    is_valid_payload_name, Manifest, ManifestError, Payload, SignatureAlgorithm, FORMAT_VERSION,
};
use super::pem::canonical_pem;
use super::tar::{self, BLOCK};

/// The hardware types a controller's image folder holds by default.
pub const DEFAULT_HARDWARE_TYPES: [&str; 7] = [
    "ap1g4", "ap1g5", "ap1g6", "ap1g6a", "ap1g7", "ap1g8", "ap3g3",
];
/// The file in an image folder that names the version.
pub const VERSION_INFO: &str = "version.info";
pub use super::tar::MAX_MEMBER_SIZE;

const COPY_BUF: usize = 64 * 1024;

/// One payload to put in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadSpec {
    /// Member name (a plain file name, e.g. `rootfs.img`).
    pub name: String,
    /// The file to read it from.
    pub path: PathBuf,
    /// Install target (e.g. `rootfs`).
    pub target: String,
}

/// Everything one signed image needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackSpec {
    pub hardware_type: String,
    pub version: String,
    /// Compatible boards; empty: every board of the hardware type.
    pub boards: Vec<String>,
    /// Unix seconds (UTC).
    pub build_time: u64,
    pub payloads: Vec<PayloadSpec>,
    /// The signer's private key (PEM, PKCS#8 or traditional).
    pub signer_key: PathBuf,
    /// PEM files concatenated into `signer.pem`: the signer certificate first, then the
    /// intermediates (not the root).
    pub signer_chain: Vec<PathBuf>,
    pub algorithm: SignatureAlgorithm,
}

impl PackSpec {
    /// One `rootfs.img` payload (target `rootfs`), no board list, built now, ECDSA P-256.
    pub fn new(
        hardware_type: &str,
        version: &str,
        rootfs: &Path,
        signer_key: &Path,
        signer_chain: &[PathBuf],
    ) -> PackSpec {
        PackSpec {
            hardware_type: hardware_type.to_string(),
            version: version.to_string(),
            boards: Vec::new(),
            build_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            payloads: vec![PayloadSpec {
                name: "rootfs.img".into(),
                path: rootfs.to_path_buf(),
                target: "rootfs".into(),
            }],
            signer_key: signer_key.to_path_buf(),
            signer_chain: signer_chain.to_vec(),
            algorithm: SignatureAlgorithm::default(),
        }
    }
}

/// An image folder: [`FolderSpec::image`] packed once per hardware type (its own
/// `hardware_type` is ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderSpec {
    pub image: PackSpec,
    pub hardware_types: Vec<String>,
}

impl FolderSpec {
    /// Every type of [`DEFAULT_HARDWARE_TYPES`].
    pub fn all_types(image: PackSpec) -> FolderSpec {
        FolderSpec {
            image,
            hardware_types: DEFAULT_HARDWARE_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// One image written.
#[derive(Debug, Clone)]
pub struct PackedImage {
    pub path: PathBuf,
    pub manifest: Manifest,
    /// Bytes written.
    pub size: u64,
}

/// Why packing failed.
#[derive(Debug)]
pub enum PackError {
    Io {
        path: PathBuf,
        source: io::Error,
    },
    Openssl {
        what: String,
        source: ErrorStack,
    },
    /// The spec makes an invalid manifest.
    Manifest(ManifestError),
    /// Something else wrong with the spec.
    Spec(String),
    /// The key cannot make the requested signature.
    KeyAlgorithm {
        algorithm: SignatureAlgorithm,
        key: String,
    },
    /// The key is not the first certificate's.
    KeyCertMismatch {
        key: PathBuf,
        cert: String,
    },
    /// A payload file changed between hashing and writing it.
    PayloadChanged {
        path: PathBuf,
    },
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackError::Io { path, source } => write!(f, "pack: {}: {source}", path.display()),
            PackError::Openssl { what, source } => write!(f, "pack: {what}: {source}"),
            PackError::Manifest(e) => write!(f, "pack: {e}"),
            PackError::Spec(s) => write!(f, "pack: {s}"),
            PackError::KeyAlgorithm { algorithm, key } => {
                write!(f, "pack: a {key} key cannot sign {algorithm}")
            }
            PackError::KeyCertMismatch { key, cert } => write!(
                f,
                "pack: key {} does not belong to the first certificate of the chain ({cert})",
                key.display()
            ),
            PackError::PayloadChanged { path } => {
                write!(f, "pack: {} changed while packing", path.display())
            }
        }
    }
}

impl std::error::Error for PackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PackError::Io { source, .. } => Some(source),
            PackError::Openssl { source, .. } => Some(source),
            PackError::Manifest(e) => Some(e),
            _ => None,
        }
    }
}

fn ossl<T>(what: &str, r: Result<T, ErrorStack>) -> Result<T, PackError> {
    r.map_err(|source| PackError::Openssl {
        what: what.to_string(),
        source,
    })
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> PackError + '_ {
    move |source| PackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Signs `message` as `manifest.sig` is made: ECDSA P-256/SHA-256 DER, Ed25519, or RSA-PSS
/// SHA-256 (MGF1-SHA-256, salt = 32 bytes).
pub fn sign_manifest(
    message: &[u8],
    key: &PKey<Private>,
    algorithm: SignatureAlgorithm,
) -> Result<Vec<u8>, PackError> {
    let kind = match key.id() {
        Id::EC => "EC",
        Id::ED25519 => "Ed25519",
        Id::RSA => "RSA",
        _ => "unsupported",
    };
    let wrong = || PackError::KeyAlgorithm {
        algorithm,
        key: kind.to_string(),
    };
    match algorithm {
        SignatureAlgorithm::EcdsaP256Sha256 => {
            let ec = key.ec_key().map_err(|_| wrong())?;
            if ec.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
                return Err(PackError::KeyAlgorithm {
                    algorithm,
                    key: "EC (not P-256)".into(),
                });
            }
            let mut s = ossl("ECDSA signer", Signer::new(MessageDigest::sha256(), key))?;
            ossl("ECDSA sign", s.update(message))?;
            ossl("ECDSA sign", s.sign_to_vec())
        }
        SignatureAlgorithm::Ed25519 => {
            if key.id() != Id::ED25519 {
                return Err(wrong());
            }
            let mut s = ossl("Ed25519 signer", Signer::new_without_digest(key))?;
            ossl("Ed25519 sign", s.sign_oneshot_to_vec(message))
        }
        SignatureAlgorithm::RsaPssSha256 => {
            if key.id() != Id::RSA {
                return Err(wrong());
            }
            if key.bits() < 2048 {
                return Err(PackError::KeyAlgorithm {
                    algorithm,
                    key: format!("RSA {}-bit (under 2048)", key.bits()),
                });
            }
            let mut s = ossl("RSA-PSS signer", Signer::new(MessageDigest::sha256(), key))?;
            ossl("RSA-PSS padding", s.set_rsa_padding(Padding::PKCS1_PSS))?;
            ossl(
                "RSA-PSS salt",
                s.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH),
            )?;
            ossl("RSA-PSS MGF1", s.set_rsa_mgf1_md(MessageDigest::sha256()))?;
            ossl("RSA-PSS sign", s.update(message))?;
            ossl("RSA-PSS sign", s.sign_to_vec())
        }
    }
}

/// A ustar header for a regular file (mode 0644, owner root).
pub fn ustar_header(name: &str, size: u64, mtime: u64) -> Result<[u8; BLOCK], PackError> {
    tar::write_header(name, size, mtime).map_err(PackError::Spec)
}

fn pad(out: &mut impl Write, size: u64) -> io::Result<()> {
    out.write_all(&[0u8; BLOCK][..tar::padding(size)])
}

fn member(out: &mut impl Write, name: &str, data: &[u8], mtime: u64) -> Result<(), PackError> {
    let h = ustar_header(name, data.len() as u64, mtime)?;
    let w = |e| PackError::Io {
        path: PathBuf::from(name),
        source: e,
    };
    out.write_all(&h).map_err(w)?;
    out.write_all(data).map_err(w)?;
    pad(out, data.len() as u64).map_err(w)
}

/// Size and SHA-256 of a file, read in a stream.
pub fn hash_file(path: &Path) -> Result<(u64, [u8; 32]), PackError> {
    let mut f = File::open(path).map_err(io_at(path))?;
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; COPY_BUF];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_at(path)(e)),
        };
        ctx.update(&buf[..n]);
        size += n as u64;
    }
    let mut d = [0u8; 32];
    d.copy_from_slice(ctx.finish().as_ref());
    Ok((size, d))
}

/// Hashes the payload files into manifest entries.
pub fn hash_payloads(payloads: &[PayloadSpec]) -> Result<Vec<Payload>, PackError> {
    if payloads.is_empty() {
        return Err(PackError::Spec(
            "an image needs at least one payload".into(),
        ));
    }
    let mut out = Vec::with_capacity(payloads.len());
    for p in payloads {
        if !is_valid_payload_name(&p.name) {
            return Err(PackError::Spec(format!(
                "payload name {:?}: a plain file name of [A-Za-z0-9._-], at most 100 bytes, \
                 not starting with `.`, not manifest/manifest.sig/signer.pem",
                p.name
            )));
        }
        let (size, sha256) = hash_file(&p.path)?;
        if size > MAX_MEMBER_SIZE {
            return Err(PackError::Spec(format!(
                "{} is {size} bytes; ustar members stop at {MAX_MEMBER_SIZE}",
                p.path.display()
            )));
        }
        out.push(Payload {
            name: p.name.clone(),
            size,
            sha256,
            target: p.target.clone(),
        });
    }
    Ok(out)
}

/// The signer key and the canonical `signer.pem` for a spec, checked to belong together.
pub fn load_signer(spec: &PackSpec) -> Result<(PKey<Private>, Vec<u8>), PackError> {
    let key_pem = fs::read(&spec.signer_key).map_err(io_at(&spec.signer_key))?;
    let key = ossl(
        &format!("read key {}", spec.signer_key.display()),
        PKey::private_key_from_pem(&key_pem),
    )?;
    let mut ders = Vec::new();
    let mut first: Option<X509> = None;
    for p in &spec.signer_chain {
        let pem = fs::read(p).map_err(io_at(p))?;
        let certs = ossl(
            &format!("read certificates {}", p.display()),
            X509::stack_from_pem(&pem),
        )?;
        for c in certs {
            ders.push(ossl("encode certificate", c.to_der())?);
            first.get_or_insert(c);
        }
    }
    let first =
        first.ok_or_else(|| PackError::Spec("the signer chain holds no certificate".into()))?;
    let cert_key = ossl("certificate key", first.public_key())?;
    if !cert_key.public_eq(&key) {
        let cn = first
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .filter_map(|e| e.data().to_string().ok())
            .collect::<Vec<_>>()
            .join(",");
        return Err(PackError::KeyCertMismatch {
            key: spec.signer_key.clone(),
            cert: format!("CN={cn}"),
        });
    }
    let refs: Vec<&[u8]> = ders.iter().map(|d| d.as_slice()).collect();
    Ok((key, canonical_pem(&refs)))
}

fn manifest_for(
    spec: &PackSpec,
    hardware_type: &str,
    payloads: Vec<Payload>,
) -> Result<(Manifest, Vec<u8>), PackError> {
    let m = Manifest {
        format_version: FORMAT_VERSION,
        hardware_type: hardware_type.to_string(),
        version: spec.version.clone(),
        compatible_boards: spec.boards.clone(),
        build_time: spec.build_time,
        signature_algorithm: spec.algorithm,
        payloads,
    };
    let text = m.to_text().into_bytes();
    // The parser is the validator: what we sign must read back as exactly this.
    let back = Manifest::parse(&text).map_err(PackError::Manifest)?;
    if back != m {
        return Err(PackError::Spec(
            "the manifest does not read back unchanged".into(),
        ));
    }
    Ok((m, text))
}

/// Copies one payload file into the tar, checking it still has the size and digest hashed.
fn copy_payload(
    out: &mut impl Write,
    out_path: &Path,
    spec: &PayloadSpec,
    p: &Payload,
    mtime: u64,
) -> Result<(), PackError> {
    let h = ustar_header(&p.name, p.size, mtime)?;
    let w = |e| PackError::Io {
        path: out_path.to_path_buf(),
        source: e,
    };
    out.write_all(&h).map_err(w)?;
    let f = File::open(&spec.path).map_err(io_at(&spec.path))?;
    let mut f = f.take(p.size + 1);
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; COPY_BUF];
    let mut n_total = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_at(&spec.path)(e)),
        };
        n_total += n as u64;
        if n_total > p.size {
            return Err(PackError::PayloadChanged {
                path: spec.path.clone(),
            });
        }
        ctx.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(w)?;
    }
    if n_total != p.size || ctx.finish().as_ref() != p.sha256 {
        return Err(PackError::PayloadChanged {
            path: spec.path.clone(),
        });
    }
    pad(out, p.size).map_err(w)
}

fn write_image(
    out: &Path,
    spec: &PackSpec,
    manifest_text: &[u8],
    sig: &[u8],
    chain_pem: &[u8],
    payloads: &[Payload],
) -> Result<u64, PackError> {
    let mut tmp_name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    tmp_name.push(".part");
    let tmp = out.with_file_name(tmp_name);
    let result = (|| {
        let f = File::create(&tmp).map_err(io_at(&tmp))?;
        let mut w = BufWriter::with_capacity(COPY_BUF, f);
        let t = spec.build_time;
        member(&mut w, "manifest", manifest_text, t)?;
        member(&mut w, "manifest.sig", sig, t)?;
        member(&mut w, "signer.pem", chain_pem, t)?;
        for (ps, p) in spec.payloads.iter().zip(payloads) {
            copy_payload(&mut w, &tmp, ps, p, t)?;
        }
        w.write_all(&[0u8; 2 * BLOCK]).map_err(io_at(&tmp))?;
        let f = w.into_inner().map_err(|e| io_at(&tmp)(e.into_error()))?;
        f.sync_all().map_err(io_at(&tmp))?;
        let size = f.metadata().map_err(io_at(&tmp))?.len();
        fs::rename(&tmp, out).map_err(io_at(out))?;
        Ok(size)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Builds one signed image at `out` (written to `out.part`, then renamed).
pub fn pack_image(spec: &PackSpec, out: &Path) -> Result<PackedImage, PackError> {
    let (key, chain_pem) = load_signer(spec)?;
    let payloads = hash_payloads(&spec.payloads)?;
    pack_with(spec, &spec.hardware_type, &key, &chain_pem, payloads, out)
}

fn pack_with(
    spec: &PackSpec,
    hardware_type: &str,
    key: &PKey<Private>,
    chain_pem: &[u8],
    payloads: Vec<Payload>,
    out: &Path,
) -> Result<PackedImage, PackError> {
    let (manifest, text) = manifest_for(spec, hardware_type, payloads)?;
    let sig = sign_manifest(&text, key, spec.algorithm)?;
    let size = write_image(out, spec, &text, &sig, chain_pem, &manifest.payloads)?;
    Ok(PackedImage {
        path: out.to_path_buf(),
        manifest,
        size,
    })
}

/// Builds an image folder in `dir` (created if missing): one signed image per hardware type,
/// named as the type (`ap1g8`), and `version.info` holding the version and a newline. The
/// payloads are hashed once.
pub fn pack_folder(spec: &FolderSpec, dir: &Path) -> Result<Vec<PackedImage>, PackError> {
    if spec.hardware_types.is_empty() {
        return Err(PackError::Spec("no hardware types for the folder".into()));
    }
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    let (key, chain_pem) = load_signer(&spec.image)?;
    let payloads = hash_payloads(&spec.image.payloads)?;
    let mut out = Vec::with_capacity(spec.hardware_types.len());
    for hw in &spec.hardware_types {
        if hw == VERSION_INFO || hw.contains('/') {
            return Err(PackError::Spec(format!(
                "hardware type {hw:?} is not a file name"
            )));
        }
        out.push(pack_with(
            &spec.image,
            hw,
            &key,
            &chain_pem,
            payloads.clone(),
            &dir.join(hw),
        )?);
    }
    let vi = dir.join(VERSION_INFO);
    fs::write(&vi, format!("{}\n", spec.image.version)).map_err(io_at(&vi))?;
    Ok(out)
}
