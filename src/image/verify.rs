//! Checks the signed head of an image: the certificate chain (rustls-webpki, codeSigning EKU on
//! every certificate), the manifest signature (ring, through rustls-webpki's algorithm table),
//! and the install policy (hardware type, board, time floor, downgrade).
//!
//! Time on boards without a real-time clock: certificates are checked at
//! `max(now if known, not_before_floor, manifest build_time)`. The clock saying 1970 therefore
//! never makes an expired certificate good, and never makes every certificate "not yet valid"
//! once the floor has been raised. The build time is read before the signature is checked, but
//! taking a maximum means it can only move the time forward. The caller persists
//! [`VerifiedManifest::new_time_floor`] after a successful install, and should seed the floor
//! with the build time of the firmware it runs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::nid::Nid;
use openssl::x509::{X509ExtendedKeyUsage, X509};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use super::manifest::{Manifest, ManifestError, SignatureAlgorithm, Version};

/// What the AP logs when an image passed every check.
pub const VERIFY_SUCCESS: &str = "Image signing verify success.";

/// id-kp-codeSigning, 1.3.6.1.5.5.7.3.3, DER content octets.
pub const EKU_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// The most certificates accepted in `signer.pem` (signer + intermediates).
pub const MAX_CHAIN_CERTS: usize = 8;

/// Algorithms accepted for certificate signatures in the chain (no SHA-1, RSA >= 2048 bits).
static CHAIN_ALGS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// The ring verification algorithm for a manifest signature algorithm: ECDSA P-256 with
/// SHA-256 and an ASN.1 DER signature (ring `ECDSA_P256_SHA256_ASN1`), Ed25519, RSA-PSS
/// SHA-256 with salt length = 32 (ring `RSA_PSS_2048_8192_SHA256`, rsaEncryption keys).
fn manifest_alg(a: SignatureAlgorithm) -> &'static dyn SignatureVerificationAlgorithm {
    match a {
        SignatureAlgorithm::EcdsaP256Sha256 => webpki::ring::ECDSA_P256_SHA256,
        SignatureAlgorithm::Ed25519 => webpki::ring::ED25519,
        SignatureAlgorithm::RsaPssSha256 => webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    }
}

/// What an image must satisfy on this board.
#[derive(Debug, Clone)]
pub struct TrustPolicy {
    /// Trust anchors (DER); see [`TrustPolicy::anchors_from_pem`].
    pub anchors: Vec<CertificateDer<'static>>,
    /// This board's hardware type; the manifest's must be equal.
    pub hardware_type: String,
    /// This board's name; must be in the manifest's `compatible_boards` unless that is empty.
    pub board: String,
    /// Persisted lower bound for the time (unix seconds).
    pub not_before_floor: u64,
    /// The clock (unix seconds), `None` on a board without a real-time clock.
    pub now: Option<u64>,
    /// Accept a version lower than `current_version`.
    pub allow_downgrade: bool,
    /// The running version; `None` (e.g. unknown) skips the downgrade check.
    pub current_version: Option<String>,
    /// The version the controller announced for this download (Join Response, Image
    /// Identifier, predownload request): the signed manifest must say exactly this. `None`
    /// (`wtpd fetch`, no controller) skips the check.
    pub expected_version: Option<String>,
}

impl TrustPolicy {
    /// Reads every `CERTIFICATE` block of a PEM text.
    pub fn anchors_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, VerifyError> {
        let certs =
            parse_pem_certs(pem).map_err(|reason| VerifyError::Anchors { path: None, reason })?;
        if certs.is_empty() {
            return Err(VerifyError::Anchors {
                path: None,
                reason: "no CERTIFICATE block".into(),
            });
        }
        Ok(certs)
    }

    /// Reads the anchors from PEM files.
    pub fn anchors_from_files(
        paths: &[PathBuf],
    ) -> Result<Vec<CertificateDer<'static>>, VerifyError> {
        let mut out = Vec::new();
        for p in paths {
            let pem = std::fs::read(p).map_err(|e| VerifyError::Anchors {
                path: Some(p.clone()),
                reason: e.to_string(),
            })?;
            out.extend(Self::anchors_from_pem(&pem).map_err(|e| match e {
                VerifyError::Anchors { reason, .. } => VerifyError::Anchors {
                    path: Some(p.to_path_buf()),
                    reason,
                },
                e => e,
            })?);
        }
        Ok(out)
    }
}

/// A manifest that passed [`verify_manifest`]. Only that function makes one; the bundle reader
/// hands out payloads only against it.
#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    manifest: Manifest,
    manifest_sha256: [u8; 32],
    signer: String,
    verification_time: u64,
}

impl VerifiedManifest {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// SHA-256 of the exact manifest bytes that were verified.
    pub fn manifest_sha256(&self) -> &[u8; 32] {
        &self.manifest_sha256
    }
    /// The signer certificate's subject (`CN=...`).
    pub fn signer(&self) -> &str {
        &self.signer
    }
    /// The time the certificates were checked at (unix seconds).
    pub fn verification_time(&self) -> u64 {
        self.verification_time
    }
    /// The floor to persist once the image is installed (= [`Self::verification_time`]).
    pub fn new_time_floor(&self) -> u64 {
        self.verification_time
    }
}

/// Why an image's signed head was refused.
#[derive(Debug, Clone)]
pub enum VerifyError {
    /// The trust anchors could not be read.
    Anchors {
        path: Option<PathBuf>,
        reason: String,
    },
    /// The manifest text is malformed.
    Manifest(ManifestError),
    /// `signer.pem` holds no usable certificate.
    ChainPem {
        reason: String,
    },
    /// A certificate (named) is past its notAfter at `time`.
    CertExpired {
        cert: String,
        not_after: u64,
        time: u64,
    },
    /// A certificate (named) is before its notBefore at `time`.
    CertNotYetValid {
        cert: String,
        not_before: u64,
        time: u64,
    },
    /// A certificate (named) lacks the codeSigning extended key usage.
    MissingCodeSigning {
        cert: String,
    },
    /// No path from the signer to a trust anchor.
    UnknownIssuer {
        signer: String,
        last_issuer: String,
    },
    /// Another chain failure (rustls-webpki's reason).
    Chain {
        signer: String,
        reason: String,
    },
    /// The signature does not verify with the signer's key.
    BadSignature {
        algorithm: SignatureAlgorithm,
        signer: String,
    },
    /// The manifest's algorithm does not fit the signer's key type.
    AlgorithmKeyMismatch {
        algorithm: SignatureAlgorithm,
        signer: String,
    },
    HardwareType {
        expected: String,
        found: String,
    },
    BoardNotCompatible {
        board: String,
        compatible: Vec<String>,
    },
    Downgrade {
        current: String,
        offered: String,
    },
    /// The policy's current version is not a dotted numeric version.
    BadCurrentVersion {
        current: String,
    },
    /// The signed manifest names another version than the controller announced.
    NotAnnounced {
        announced: String,
        manifest: String,
    },
    /// The manifest's build time is later than any time the agent accepts (see
    /// [`effective_time`]).
    BuildTimeImplausible {
        build_time: u64,
        limit: u64,
    },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Anchors { path, reason } => match path {
                Some(p) => write!(f, "trust anchors {}: {reason}", p.display()),
                None => write!(f, "trust anchors: {reason}"),
            },
            VerifyError::Manifest(e) => write!(f, "{e}"),
            VerifyError::ChainPem { reason } => write!(f, "signer.pem: {reason}"),
            VerifyError::CertExpired {
                cert,
                not_after,
                time,
            } => write!(
                f,
                "certificate {cert} expired: notAfter {not_after} < time {time} (unix seconds)"
            ),
            VerifyError::CertNotYetValid {
                cert,
                not_before,
                time,
            } => write!(
                f,
                "certificate {cert} not yet valid: notBefore {not_before} > time {time} (unix \
                 seconds)"
            ),
            VerifyError::MissingCodeSigning { cert } => write!(
                f,
                "certificate {cert} lacks extendedKeyUsage codeSigning (1.3.6.1.5.5.7.3.3), \
                 needed on the signer and every intermediate"
            ),
            VerifyError::UnknownIssuer {
                signer,
                last_issuer,
            } => write!(
                f,
                "no chain from {signer} to a trusted root (last issuer in signer.pem: \
                 {last_issuer})"
            ),
            VerifyError::Chain { signer, reason } => {
                write!(f, "certificate chain of {signer} refused: {reason}")
            }
            VerifyError::BadSignature { algorithm, signer } => write!(
                f,
                "manifest signature ({algorithm}) does not verify with the key of {signer}"
            ),
            VerifyError::AlgorithmKeyMismatch { algorithm, signer } => write!(
                f,
                "manifest says {algorithm}, but the key of {signer} is of another type"
            ),
            VerifyError::HardwareType { expected, found } => write!(
                f,
                "image is for hardware type {found}, this board is {expected}"
            ),
            VerifyError::BoardNotCompatible { board, compatible } => write!(
                f,
                "board {board} is not in the image's compatible boards [{}]",
                compatible.join(", ")
            ),
            VerifyError::Downgrade { current, offered } => write!(
                f,
                "image version {offered} is older than the running {current} and downgrades \
                 are not allowed"
            ),
            VerifyError::BadCurrentVersion { current } => {
                write!(
                    f,
                    "current version {current:?} is not a dotted numeric version"
                )
            }
            VerifyError::NotAnnounced {
                announced,
                manifest,
            } => write!(
                f,
                "the signed manifest says version {manifest}, the controller announced \
                 {announced}"
            ),
            VerifyError::BuildTimeImplausible { build_time, limit } => write!(
                f,
                "manifest build_time {build_time} is later than the latest time accepted, \
                 {limit} (unix seconds)"
            ),
        }
    }
}

impl std::error::Error for VerifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VerifyError::Manifest(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ManifestError> for VerifyError {
    fn from(e: ManifestError) -> Self {
        VerifyError::Manifest(e)
    }
}

fn parse_pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut out = Vec::new();
    for c in CertificateDer::pem_slice_iter(pem) {
        out.push(c.map_err(|e| format!("bad PEM: {e:?}"))?);
    }
    Ok(out)
}

/// Facts about one certificate for error messages (parsed with OpenSSL, independently of
/// rustls-webpki).
struct CertFacts {
    label: String,
    not_before: Option<u64>,
    not_after: Option<u64>,
    issuer: String,
    /// `None`: no EKU extension.
    code_signing: Option<bool>,
}

fn name_text(name: &openssl::x509::X509NameRef) -> String {
    let cn: Vec<String> = name
        .entries_by_nid(Nid::COMMONNAME)
        .filter_map(|e| e.data().to_string().ok())
        .collect();
    if cn.is_empty() {
        "(no CN)".to_string()
    } else {
        format!("CN={}", cn.join(","))
    }
}

fn unix(t: &Asn1TimeRef) -> Option<u64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    let s = i64::from(d.days) * 86_400 + i64::from(d.secs);
    u64::try_from(s).ok()
}

fn facts(chain: &[CertificateDer<'_>]) -> Vec<CertFacts> {
    chain
        .iter()
        .enumerate()
        .map(|(i, der)| {
            let role = if i == 0 {
                "signer".to_string()
            } else {
                format!("intermediate #{i}")
            };
            match X509::from_der(der.as_ref()) {
                Ok(x) => CertFacts {
                    label: format!("{role} {}", name_text(x.subject_name())),
                    not_before: unix(x.not_before()),
                    not_after: unix(x.not_after()),
                    issuer: name_text(x.issuer_name()),
                    code_signing: x
                        .extended_key_usage()
                        .map(|u| u.contains(X509ExtendedKeyUsage::CODE_SIGN)),
                },
                Err(_) => CertFacts {
                    label: format!("{role} (unparsable)"),
                    not_before: None,
                    not_after: None,
                    issuer: "?".into(),
                    code_signing: None,
                },
            }
        })
        .collect()
}

#[allow(deprecated)]
fn chain_error(e: webpki::Error, chain: &[CertificateDer<'_>], time: u64) -> VerifyError {
    let f = facts(chain);
    let signer = f[0].label.clone();
    let pick = |pred: &dyn Fn(&CertFacts) -> bool| {
        f.iter()
            .find(|c| pred(c))
            .map(|c| c.label.clone())
            .unwrap_or_else(|| "in the chain".to_string())
    };
    match e {
        webpki::Error::CertExpired { time, not_after } => {
            let na = not_after.as_secs();
            VerifyError::CertExpired {
                cert: pick(&|c| c.not_after == Some(na)),
                not_after: na,
                time: time.as_secs(),
            }
        }
        webpki::Error::CertNotValidYet { time, not_before } => {
            let nb = not_before.as_secs();
            VerifyError::CertNotYetValid {
                cert: pick(&|c| c.not_before == Some(nb)),
                not_before: nb,
                time: time.as_secs(),
            }
        }
        webpki::Error::RequiredEkuNotFound | webpki::Error::RequiredEkuNotFoundContext(_) => {
            VerifyError::MissingCodeSigning {
                cert: pick(&|c| c.code_signing != Some(true)),
            }
        }
        webpki::Error::UnknownIssuer => {
            // webpki reports UnknownIssuer when every path failed; an intermediate that
            // OpenSSL sees as out of its validity is the likelier reason.
            if let Some(c) = f.iter().find(|c| {
                c.not_after.is_some_and(|na| na < time) || c.not_before.is_some_and(|nb| nb > time)
            }) {
                if c.not_after.is_some_and(|na| na < time) {
                    return VerifyError::CertExpired {
                        cert: c.label.clone(),
                        not_after: c.not_after.unwrap_or(0),
                        time,
                    };
                }
            }
            VerifyError::UnknownIssuer {
                signer,
                last_issuer: f.last().map(|c| c.issuer.clone()).unwrap_or_default(),
            }
        }
        other => VerifyError::Chain {
            signer,
            reason: format!("{other:?}"),
        },
    }
}

/// Checks `manifest.sig` over the exact `manifest_bytes` with the signer certificate of
/// `chain_pem`, the chain to `policy.anchors`, and the policy. On success, log
/// [`VERIFY_SUCCESS`] and, after installing, persist [`VerifiedManifest::new_time_floor`].
///
/// Order: manifest syntax, chain (at the policy time), signature, hardware type, board,
/// downgrade.
pub fn verify_manifest(
    manifest_bytes: &[u8],
    signature: &[u8],
    chain_pem: &[u8],
    policy: &TrustPolicy,
) -> Result<VerifiedManifest, VerifyError> {
    #[cfg(fuzzing)]
    return fuzz_memo::verify(manifest_bytes, signature, chain_pem, policy);
    #[cfg(not(fuzzing))]
    verify_manifest_uncached(manifest_bytes, signature, chain_pem, policy)
}

/// Fuzz builds only (`--cfg fuzzing`, which cargo-fuzz sets): [`verify_manifest`] memoized by
/// all of its inputs. It is a pure function of them, and the parsers that call it from inside
/// (the slot-mode stream) would otherwise spend nearly every execution on the same three ECDSA
/// verifications of an unchanged head. No other build has this code.
#[cfg(fuzzing)]
mod fuzz_memo {
    use super::{verify_manifest_uncached, TrustPolicy, VerifiedManifest, VerifyError};
    use std::cell::RefCell;
    use std::collections::HashMap;

    type Entry = Result<VerifiedManifest, VerifyError>;

    thread_local! {
        static CACHE: RefCell<HashMap<[u8; 32], Entry>> = RefCell::new(HashMap::new());
    }

    pub(super) fn verify(m: &[u8], s: &[u8], c: &[u8], policy: &TrustPolicy) -> Entry {
        let mut h = crate::image::sha256::Sha256::new();
        for part in [m, s, c, format!("{policy:?}").as_bytes()] {
            h.update(&(part.len() as u64).to_be_bytes());
            h.update(part);
        }
        let key = h.finish();
        if let Some(hit) = CACHE.with(|c| c.borrow().get(&key).cloned()) {
            return hit;
        }
        let r = verify_manifest_uncached(m, s, c, policy);
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.len() >= 4096 {
                cache.clear();
            }
            cache.insert(key, r.clone());
        });
        r
    }
}

fn verify_manifest_uncached(
    manifest_bytes: &[u8],
    signature: &[u8],
    chain_pem: &[u8],
    policy: &TrustPolicy,
) -> Result<VerifiedManifest, VerifyError> {
    let manifest = Manifest::parse(manifest_bytes)?;

    let chain = parse_pem_certs(chain_pem).map_err(|reason| VerifyError::ChainPem { reason })?;
    if chain.is_empty() {
        return Err(VerifyError::ChainPem {
            reason: "no CERTIFICATE block".into(),
        });
    }
    if chain.len() > MAX_CHAIN_CERTS {
        return Err(VerifyError::ChainPem {
            reason: format!("{} certificates, at most {MAX_CHAIN_CERTS}", chain.len()),
        });
    }
    let time = effective_time(policy, manifest.build_time)?;

    let mut anchors = Vec::with_capacity(policy.anchors.len());
    for (i, a) in policy.anchors.iter().enumerate() {
        anchors.push(
            webpki::anchor_from_trusted_cert(a).map_err(|e| VerifyError::Anchors {
                path: None,
                reason: format!("anchor #{i}: {e:?}"),
            })?,
        );
    }
    let ee = EndEntityCert::try_from(&chain[0]).map_err(|e| VerifyError::Chain {
        signer: "signer (first certificate of signer.pem)".into(),
        reason: format!("unparsable: {e:?}"),
    })?;
    ee.verify_for_usage(
        CHAIN_ALGS,
        &anchors,
        &chain[1..],
        UnixTime::since_unix_epoch(Duration::from_secs(time)),
        KeyUsage::required(EKU_CODE_SIGNING),
        None,
        None,
    )
    .map_err(|e| chain_error(e, &chain, time))?;

    let signer = facts(&chain[..1])
        .pop()
        .map(|f| f.label.trim_start_matches("signer ").to_string())
        .unwrap_or_default();
    let alg = manifest.signature_algorithm;
    ee.verify_signature(manifest_alg(alg), manifest_bytes, signature)
        .map_err(|e| match e {
            webpki::Error::InvalidSignatureForPublicKey => VerifyError::BadSignature {
                algorithm: alg,
                signer: signer.clone(),
            },
            _ => VerifyError::AlgorithmKeyMismatch {
                algorithm: alg,
                signer: signer.clone(),
            },
        })?;

    if manifest.hardware_type != policy.hardware_type {
        return Err(VerifyError::HardwareType {
            expected: policy.hardware_type.clone(),
            found: manifest.hardware_type.clone(),
        });
    }
    if !manifest.compatible_boards.is_empty() && !manifest.compatible_boards.contains(&policy.board)
    {
        return Err(VerifyError::BoardNotCompatible {
            board: policy.board.clone(),
            compatible: manifest.compatible_boards.clone(),
        });
    }
    if let (Some(current), false) = (&policy.current_version, policy.allow_downgrade) {
        let cur = Version::parse(current).ok_or_else(|| VerifyError::BadCurrentVersion {
            current: current.clone(),
        })?;
        let offered = manifest.parsed_version().ok_or_else(|| {
            VerifyError::Manifest(ManifestError::BadValue {
                line: 0,
                key: "version".into(),
                reason: "not a dotted numeric version".into(),
            })
        })?;
        if offered < cur {
            return Err(VerifyError::Downgrade {
                current: current.clone(),
                offered: manifest.version.clone(),
            });
        }
    }

    if let Some(announced) = &policy.expected_version {
        if announced != &manifest.version {
            return Err(VerifyError::NotAnnounced {
                announced: announced.clone(),
                manifest: manifest.version.clone(),
            });
        }
    }

    let digest = ring::digest::digest(&ring::digest::SHA256, manifest_bytes);
    let mut manifest_sha256 = [0u8; 32];
    manifest_sha256.copy_from_slice(digest.as_ref());
    Ok(VerifiedManifest {
        manifest,
        manifest_sha256,
        signer,
        verification_time: time,
    })
}

/// How far ahead of a set clock a time floor or a manifest's build time may be (clock skew
/// between the build host and the board).
pub const MAX_AHEAD_OF_CLOCK: u64 = 86_400;
/// The latest time accepted from a file or a manifest on a board without a real-time clock
/// (2100-01-01): a floor beyond it is garbage, and an image built beyond it is refused.
pub const LATEST_PLAUSIBLE_TIME: u64 = 4_102_444_800;

/// The time certificates are checked at: `max(clock, floor, build time)`, where nothing that
/// came from a file (the floor) or from the controller (the build time of the image it served)
/// may carry the time past what the agent accepts: a set clock plus [`MAX_AHEAD_OF_CLOCK`],
/// or without a clock [`LATEST_PLAUSIBLE_TIME`]. A floor beyond that is ignored (the caller
/// logs it, see [`plausible_floor`]); a build time beyond it refuses the image, so a lying
/// controller cannot raise the persisted floor and lock every later image out.
pub fn effective_time(policy: &TrustPolicy, build_time: u64) -> Result<u64, VerifyError> {
    let limit = latest_accepted_time(policy.now);
    if build_time > limit {
        return Err(VerifyError::BuildTimeImplausible { build_time, limit });
    }
    let floor = plausible_floor(policy.not_before_floor, policy.now).unwrap_or(0);
    Ok(policy.now.unwrap_or(0).max(floor).max(build_time))
}

/// A clock before 2020-01-01 is a board whose real-time clock was never set.
pub const CLOCK_SET_AFTER: u64 = 1_577_836_800;

/// The clock if it is set (see [`CLOCK_SET_AFTER`]).
pub fn set_clock(now: Option<u64>) -> Option<u64> {
    now.filter(|&n| n > CLOCK_SET_AFTER)
}

/// The latest time the agent accepts from a file or a manifest, given the clock.
pub fn latest_accepted_time(now: Option<u64>) -> u64 {
    match set_clock(now) {
        Some(now) => now.saturating_add(MAX_AHEAD_OF_CLOCK),
        None => LATEST_PLAUSIBLE_TIME,
    }
}

/// `Some(floor)` when a persisted time floor is plausible (see [`effective_time`]).
pub fn plausible_floor(floor: u64, now: Option<u64>) -> Option<u64> {
    (floor <= latest_accepted_time(now)).then_some(floor)
}

/// Convenience for callers holding anchor files.
pub fn load_anchors(paths: &[&Path]) -> Result<Vec<CertificateDer<'static>>, VerifyError> {
    let owned: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
    TrustPolicy::anchors_from_files(&owned)
}
