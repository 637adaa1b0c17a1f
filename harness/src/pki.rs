//! A lab PKI for tests and demos: the controller CA with controller and AP certificates for
//! DTLS, and an image-signing chain (root, intermediate, signer) for firmware images.
//!
//! Everything is made with the `openssl` crate; files are PEM, keys are written mode 0600.
//! [`generate_lab_pki`] makes the whole set; [`CertSpec`] and [`issue`] make single
//! certificates (expired, foreign, odd names) for negative tests.
//!
//! wtpd's own unit tests (the DTLS ones, which also run for armv7) compile this file in by
//! path, so it uses std and openssl only, nothing of either crate.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

/// Why generating or writing the PKI failed.
#[derive(Debug)]
pub enum PkiError {
    /// OpenSSL refused a step; `what` names the step.
    Openssl { what: String, source: ErrorStack },
    /// A file could not be written.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl std::fmt::Display for PkiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PkiError::Openssl { what, source } => write!(f, "PKI: {what}: {source}"),
            PkiError::Io { path, source } => write!(f, "PKI: {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for PkiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PkiError::Openssl { source, .. } => Some(source),
            PkiError::Io { source, .. } => Some(source),
        }
    }
}

fn ossl<T>(what: &str, r: Result<T, ErrorStack>) -> Result<T, PkiError> {
    r.map_err(|source| PkiError::Openssl {
        what: what.to_string(),
        source,
    })
}

/// Key algorithm of a new certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa2048,
    EcP256,
}

/// Extended key usages the lab needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eku {
    ServerAuth,
    ClientAuth,
    CodeSigning,
}

/// What to put in one certificate. Start from [`CertSpec::ca`] or [`CertSpec::leaf`] and adjust
/// the fields.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// Subject commonName (the subject also carries O=wtpd lab).
    pub common_name: String,
    pub key: KeyKind,
    /// CA:TRUE with keyCertSign+cRLSign, else a leaf with digitalSignature(+keyEncipherment
    /// for RSA).
    pub is_ca: bool,
    pub eku: Vec<Eku>,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// Start of validity in days relative to now (default -1: yesterday, to tolerate skew).
    pub valid_from_days: i64,
    /// Length of validity in days (default 3650).
    pub valid_days: u32,
}

impl CertSpec {
    /// A CA certificate: no EKU, no SAN, valid from yesterday for 10 years.
    pub fn ca(common_name: &str, key: KeyKind) -> Self {
        CertSpec {
            common_name: common_name.to_string(),
            key,
            is_ca: true,
            eku: Vec::new(),
            dns: Vec::new(),
            ips: Vec::new(),
            valid_from_days: -1,
            valid_days: 3650,
        }
    }
    /// An end-entity certificate with subjectAltName DNS = `common_name`.
    pub fn leaf(common_name: &str, key: KeyKind, eku: &[Eku]) -> Self {
        CertSpec {
            is_ca: false,
            eku: eku.to_vec(),
            dns: vec![common_name.to_string()],
            ..CertSpec::ca(common_name, key)
        }
    }
}

/// A certificate with its private key.
#[derive(Clone)]
pub struct Issued {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("subject", self.cert.subject_name())
            .finish()
    }
}

impl Issued {
    /// Writes `<stem>.pem` (the certificate) and `<stem>.key` (PKCS#8 key, mode 0600) into
    /// `dir` and returns both paths.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), PkiError> {
        let cert = self.write_cert(dir, stem)?;
        let key_path = dir.join(format!("{stem}.key"));
        let pem = ossl("encode key", self.key.private_key_to_pem_pkcs8())?;
        write_file(&key_path, &pem, true)?;
        Ok((cert, key_path))
    }

    /// Writes only `<stem>.pem`.
    pub fn write_cert(&self, dir: &Path, stem: &str) -> Result<PathBuf, PkiError> {
        let path = dir.join(format!("{stem}.pem"));
        let pem = ossl("encode certificate", self.cert.to_pem())?;
        write_file(&path, &pem, false)?;
        Ok(path)
    }
}

fn write_file(path: &Path, data: &[u8], secret: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(data).map_err(io)?;
    // The mode above only applies to new files; an existing key file is tightened too.
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

fn new_key(kind: KeyKind) -> Result<PKey<Private>, PkiError> {
    match kind {
        KeyKind::Rsa2048 => {
            let rsa = ossl("RSA 2048 key", Rsa::generate(2048))?;
            ossl("RSA key", PKey::from_rsa(rsa))
        }
        KeyKind::EcP256 => {
            let group = ossl("P-256", EcGroup::from_curve_name(Nid::X9_62_PRIME256V1))?;
            let ec = ossl("P-256 key", EcKey::generate(&group))?;
            ossl("EC key", PKey::from_ec_key(ec))
        }
    }
}

fn time_at(days_from_now: i64) -> Result<Asn1Time, PkiError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let t = now.saturating_add(days_from_now.saturating_mul(86_400));
    ossl("validity time", Asn1Time::from_unix(t as _))
}

/// Makes a certificate for `spec` with a fresh key, signed with SHA-256 by `issuer`, or
/// self-signed when `issuer` is `None`.
pub fn issue(spec: &CertSpec, issuer: Option<&Issued>) -> Result<Issued, PkiError> {
    let key = new_key(spec.key)?;
    let mut b = ossl("X509 builder", X509Builder::new())?;
    ossl("version", b.set_version(2))?;

    let mut serial = ossl("serial", BigNum::new())?;
    ossl("serial", serial.rand(127, MsbOption::MAYBE_ZERO, false))?;
    let serial: Asn1Integer = ossl("serial", serial.to_asn1_integer())?;
    ossl("serial", b.set_serial_number(&serial))?;

    let mut name = ossl("name", X509NameBuilder::new())?;
    ossl(
        "name O",
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "wtpd lab"),
    )?;
    ossl(
        "name CN",
        name.append_entry_by_nid(Nid::COMMONNAME, &spec.common_name),
    )?;
    let name = name.build();
    ossl("subject", b.set_subject_name(&name))?;
    match issuer {
        Some(i) => ossl("issuer", b.set_issuer_name(i.cert.subject_name()))?,
        None => ossl("issuer", b.set_issuer_name(&name))?,
    }
    ossl("public key", b.set_pubkey(&key))?;
    let from = time_at(spec.valid_from_days)?;
    let until = time_at(
        spec.valid_from_days
            .saturating_add(i64::from(spec.valid_days)),
    )?;
    ossl("notBefore", b.set_not_before(&from))?;
    ossl("notAfter", b.set_not_after(&until))?;

    let mut bc = BasicConstraints::new();
    bc.critical();
    if spec.is_ca {
        bc.ca();
    }
    ossl(
        "basicConstraints",
        bc.build().and_then(|e| b.append_extension(e)),
    )?;

    let mut ku = KeyUsage::new();
    ku.critical();
    if spec.is_ca {
        ku.key_cert_sign().crl_sign();
    } else {
        ku.digital_signature();
        if spec.key == KeyKind::Rsa2048 {
            // Needed for TLS_RSA_WITH_AES_128_CBC_SHA (RSA key transport).
            ku.key_encipherment();
        }
    }
    ossl("keyUsage", ku.build().and_then(|e| b.append_extension(e)))?;

    if !spec.eku.is_empty() {
        let mut eku = ExtendedKeyUsage::new();
        for u in &spec.eku {
            match u {
                Eku::ServerAuth => eku.server_auth(),
                Eku::ClientAuth => eku.client_auth(),
                Eku::CodeSigning => eku.code_signing(),
            };
        }
        ossl(
            "extendedKeyUsage",
            eku.build().and_then(|e| b.append_extension(e)),
        )?;
    }

    if !spec.dns.is_empty() || !spec.ips.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for d in &spec.dns {
            san.dns(d);
        }
        for ip in &spec.ips {
            san.ip(&ip.to_string());
        }
        let ext = ossl(
            "subjectAltName",
            san.build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None)),
        )?;
        ossl("subjectAltName", b.append_extension(ext))?;
    }

    let skid = ossl(
        "subjectKeyIdentifier",
        SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None)),
    )?;
    ossl("subjectKeyIdentifier", b.append_extension(skid))?;
    let akid = ossl(
        "authorityKeyIdentifier",
        AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None)),
    )?;
    ossl("authorityKeyIdentifier", b.append_extension(akid))?;

    let signer = issuer.map(|i| &i.key).unwrap_or(&key);
    ossl("sign", b.sign(signer, MessageDigest::sha256()))?;
    Ok(Issued {
        cert: b.build(),
        key,
    })
}

/// Paths of everything [`generate_lab_pki`] wrote.
#[derive(Debug, Clone)]
pub struct LabPki {
    /// Controller CA (RSA 2048): trust anchor for both DTLS ends.
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// Controller (RSA 2048, SAN DNS:acsim.lab + IP:127.0.0.1, serverAuth+clientAuth).
    pub controller_cert: PathBuf,
    pub controller_key: PathBuf,
    /// The AP (EC P-256, SAN DNS:wtp-sim-1, clientAuth).
    pub wtp_cert: PathBuf,
    pub wtp_key: PathBuf,
    /// Image-signing root (EC P-256): trust anchor for firmware images.
    pub image_root_cert: PathBuf,
    pub image_root_key: PathBuf,
    /// Image-signing intermediate (EC P-256, CA, EKU codeSigning).
    pub image_intermediate_cert: PathBuf,
    pub image_intermediate_key: PathBuf,
    /// Image signer (EC P-256, digitalSignature, EKU codeSigning, SAN DNS:image-signer.lab).
    pub image_signer_cert: PathBuf,
    pub image_signer_key: PathBuf,
}

/// The AP name in the lab AP certificate.
pub const LAB_WTP_NAME: &str = "wtp-sim-1";
/// The controller's DNS name in the lab controller certificate.
pub const LAB_CONTROLLER_NAME: &str = "acsim.lab";

/// Generates the lab PKI into `dir` (created if missing; existing files are replaced):
/// `ca.pem/.key`, `controller.pem/.key`, `wtp.pem/.key`, `image-root.pem/.key`,
/// `image-intermediate.pem/.key`, `image-signer.pem/.key`. All SHA-256, valid from yesterday
/// for 10 years.
pub fn generate_lab_pki(dir: &Path) -> Result<LabPki, PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_path_buf(),
        source,
    })?;

    let ca = issue(
        &CertSpec::ca("wtpd lab controller CA", KeyKind::Rsa2048),
        None,
    )?;
    let mut controller_spec = CertSpec::leaf(
        LAB_CONTROLLER_NAME,
        KeyKind::Rsa2048,
        &[Eku::ServerAuth, Eku::ClientAuth],
    );
    controller_spec.ips = vec![IpAddr::from([127, 0, 0, 1])];
    let controller = issue(&controller_spec, Some(&ca))?;
    let wtp = issue(
        &CertSpec::leaf(LAB_WTP_NAME, KeyKind::EcP256, &[Eku::ClientAuth]),
        Some(&ca),
    )?;

    let root = issue(&CertSpec::ca("wtpd lab image root", KeyKind::EcP256), None)?;
    let mut inter_spec = CertSpec::ca("wtpd lab image intermediate", KeyKind::EcP256);
    // rustls-webpki also checks the EKU of intermediates.
    inter_spec.eku = vec![Eku::CodeSigning];
    let inter = issue(&inter_spec, Some(&root))?;
    let signer = issue(
        &CertSpec::leaf("image-signer.lab", KeyKind::EcP256, &[Eku::CodeSigning]),
        Some(&inter),
    )?;

    let (ca_cert, ca_key) = ca.write(dir, "ca")?;
    let (controller_cert, controller_key) = controller.write(dir, "controller")?;
    let (wtp_cert, wtp_key) = wtp.write(dir, "wtp")?;
    let (image_root_cert, image_root_key) = root.write(dir, "image-root")?;
    let (image_intermediate_cert, image_intermediate_key) =
        inter.write(dir, "image-intermediate")?;
    let (image_signer_cert, image_signer_key) = signer.write(dir, "image-signer")?;
    Ok(LabPki {
        ca_cert,
        ca_key,
        controller_cert,
        controller_key,
        wtp_cert,
        wtp_key,
        image_root_cert,
        image_root_key,
        image_intermediate_cert,
        image_intermediate_key,
        image_signer_cert,
        image_signer_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn openssl(args: &[&str]) -> (bool, String) {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl on PATH");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    fn p(path: &Path) -> &str {
        path.to_str().unwrap()
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        std::env::temp_dir().join(format!("wtpd-pki-{tag}-{}-{nanos}", std::process::id()))
    }

    #[test]
    fn lab_pki_verifies_with_the_openssl_command() {
        let dir = temp_dir("lab");
        let l = generate_lab_pki(&dir).unwrap();
        for f in [
            "ca",
            "controller",
            "wtp",
            "image-root",
            "image-intermediate",
            "image-signer",
        ] {
            assert!(dir.join(format!("{f}.pem")).is_file(), "{f}.pem");
            assert!(dir.join(format!("{f}.key")).is_file(), "{f}.key");
        }
        for cert in [&l.controller_cert, &l.wtp_cert] {
            let (ok, out) = openssl(&["verify", "-CAfile", p(&l.ca_cert), p(cert)]);
            assert!(ok && out.contains(": OK"), "{out}");
        }
        let (ok, out) = openssl(&[
            "verify",
            "-CAfile",
            p(&l.image_root_cert),
            "-untrusted",
            p(&l.image_intermediate_cert),
            p(&l.image_signer_cert),
        ]);
        assert!(ok && out.contains(": OK"), "{out}");
        // The signer does not chain to the controller CA.
        let (ok, _) = openssl(&["verify", "-CAfile", p(&l.ca_cert), p(&l.image_signer_cert)]);
        assert!(!ok);
        let (ok, out) = openssl(&[
            "verify",
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "acsim.lab",
            "-verify_ip",
            "127.0.0.1",
            "-CAfile",
            p(&l.ca_cert),
            p(&l.controller_cert),
        ]);
        assert!(ok, "{out}");
        let (ok, out) = openssl(&[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            p(&l.ca_cert),
            p(&l.wtp_cert),
        ]);
        assert!(ok, "{out}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn extensions_are_what_the_verifiers_need() {
        let dir = temp_dir("ext");
        let l = generate_lab_pki(&dir).unwrap();
        let ext = |cert: &Path, name: &str| {
            let (ok, out) = openssl(&["x509", "-in", p(cert), "-noout", "-ext", name]);
            assert!(ok, "{out}");
            out
        };
        for cert in [&l.image_intermediate_cert, &l.image_signer_cert] {
            assert!(
                ext(cert, "extendedKeyUsage").contains("Code Signing"),
                "{}",
                cert.display()
            );
        }
        let inter = ext(&l.image_intermediate_cert, "basicConstraints");
        assert!(
            inter.contains("CA:TRUE") && inter.contains("critical"),
            "{inter}"
        );
        let san = ext(&l.controller_cert, "subjectAltName");
        assert!(
            san.contains("DNS:acsim.lab") && san.contains("IP Address:127.0.0.1"),
            "{san}"
        );
        let eku = ext(&l.controller_cert, "extendedKeyUsage");
        assert!(eku.contains("TLS Web Server Authentication"), "{eku}");
        assert!(eku.contains("TLS Web Client Authentication"), "{eku}");
        assert!(ext(&l.wtp_cert, "subjectAltName").contains("DNS:wtp-sim-1"));
        assert!(ext(&l.image_signer_cert, "subjectAltName").contains("DNS:image-signer.lab"));
        let ku = ext(&l.image_signer_cert, "keyUsage");
        assert!(ku.contains("Digital Signature"), "{ku}");
        assert!(ext(&l.ca_cert, "keyUsage").contains("Certificate Sign"));
        let (_, text) = openssl(&["x509", "-in", p(&l.controller_cert), "-noout", "-text"]);
        assert!(text.contains("sha256WithRSAEncryption"), "{text}");
        assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
        let (_, text) = openssl(&["x509", "-in", p(&l.image_signer_cert), "-noout", "-text"]);
        assert!(
            text.contains("ecdsa-with-SHA256") && text.contains("prime256v1"),
            "{text}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [
                &l.ca_key,
                &l.controller_key,
                &l.wtp_key,
                &l.image_signer_key,
            ] {
                let mode = fs::metadata(key).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", key.display());
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn expired_and_foreign_certificates_fail_verification() {
        let dir = temp_dir("neg");
        let l = generate_lab_pki(&dir).unwrap();
        let ca = Issued {
            cert: X509::from_pem(&fs::read(&l.ca_cert).unwrap()).unwrap(),
            key: PKey::private_key_from_pem(&fs::read(&l.ca_key).unwrap()).unwrap(),
        };
        let mut spec = CertSpec::leaf("old-wtp", KeyKind::EcP256, &[Eku::ClientAuth]);
        spec.valid_from_days = -400;
        spec.valid_days = 365;
        let (expired, _) = issue(&spec, Some(&ca))
            .unwrap()
            .write(&dir, "expired")
            .unwrap();
        let (ok, out) = openssl(&["verify", "-CAfile", p(&l.ca_cert), p(&expired)]);
        assert!(!ok && out.contains("certificate has expired"), "{out}");

        let other = issue(&CertSpec::ca("other CA", KeyKind::EcP256), None).unwrap();
        let foreign = issue(
            &CertSpec::leaf("wtp-sim-1", KeyKind::EcP256, &[]),
            Some(&other),
        )
        .unwrap()
        .write_cert(&dir, "foreign")
        .unwrap();
        let (ok, out) = openssl(&["verify", "-CAfile", p(&l.ca_cert), p(&foreign)]);
        assert!(
            !ok && out.contains("unable to get local issuer certificate"),
            "{out}"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
