//! The manifest: the signed description of an image (what it is for, what it contains).
//!
//! The text form is a small, strict subset of TOML that `printf` can write (see
//! `docs/image-format.md`):
//!
//! ```text
//! format_version = 1
//! hardware_type = "ap1g8"
//! version = "17.12.1.5"
//! compatible_boards = ["ap1g8-a", "ap1g8-b"]
//! build_time = 1700000000
//! signature_algorithm = "ecdsa-p256-sha256"
//!
//! [[payload]]
//! name = "rootfs.img"
//! size = 12345
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! target = "rootfs"
//! ```
//!
//! Rules: one `key = value` per line; values are `"strings"` (printable ASCII without `"` or
//! `\`), decimal integers or one-line arrays of strings; blank lines and lines starting with
//! `#` are ignored; every key must be known, appear once and be present; the top-level keys come
//! before the first `[[payload]]`. Anything else is refused with the line number.
//!
//! Versions are dotted decimal numbers (`17.9.4.27`) compared component by component as
//! integers; a missing trailing component counts as 0, so `17.9` == `17.9.0` < `17.9.4.27` <
//! `17.12.1.5`.

use std::cmp::Ordering;
use std::fmt;

/// The only manifest format this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The largest manifest accepted (bytes).
pub const MAX_MANIFEST_LEN: usize = 64 * 1024;
/// The most payloads one image may carry.
pub const MAX_PAYLOADS: usize = 16;
/// The most entries in `compatible_boards`.
pub const MAX_BOARDS: usize = 256;
/// Member names reserved for the signed header of the image.
pub const RESERVED_NAMES: [&str; 3] = ["manifest", "manifest.sig", "signer.pem"];

/// How `manifest.sig` was made over the manifest bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SignatureAlgorithm {
    /// The default. ECDSA on P-256 with SHA-256, DER (ASN.1) signature: `openssl dgst -sha256 -sign`.
    #[default]
    EcdsaP256Sha256,
    /// Ed25519 (pure): `openssl pkeyutl -sign -rawin`.
    Ed25519,
    /// RSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt, RSA 2048..8192 bits:
    /// `openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest`.
    RsaPssSha256,
}

impl SignatureAlgorithm {
    pub const ALL: [SignatureAlgorithm; 3] = [
        SignatureAlgorithm::EcdsaP256Sha256,
        SignatureAlgorithm::Ed25519,
        SignatureAlgorithm::RsaPssSha256,
    ];

    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureAlgorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            SignatureAlgorithm::Ed25519 => "ed25519",
            SignatureAlgorithm::RsaPssSha256 => "rsa-pss-sha256",
        }
    }

    /// Parses the manifest spelling.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dotted numeric version (`17.12.1.5`). Ordering: numeric, component by component; missing
/// trailing components are 0 (`17.9` == `17.9.0`).
#[derive(Debug, Clone)]
pub struct Version(Vec<u32>);

impl Version {
    /// Parses 1 to 8 dot-separated decimal components, each fitting in u32 (no signs, no spaces,
    /// no empty components).
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = Vec::new();
        for p in s.split('.') {
            if p.is_empty() || p.len() > 10 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            parts.push(p.parse::<u32>().ok()?);
        }
        if parts.is_empty() || parts.len() > 8 {
            return None;
        }
        Some(Version(parts))
    }

    pub fn components(&self) -> &[u32] {
        &self.0
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.0.len().max(other.0.len());
        for i in 0..n {
            let a = self.0.get(i).copied().unwrap_or(0);
            let b = other.0.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// One payload member of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The tar member name (a plain file name, e.g. `rootfs.img`).
    pub name: String,
    /// Its exact size in bytes.
    pub size: u64,
    /// SHA-256 of its bytes.
    pub sha256: [u8; 32],
    /// Where it is installed (e.g. `rootfs`).
    pub target: String,
}

/// The parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub format_version: u32,
    /// AP hardware type this image is for (`ap1g8`).
    pub hardware_type: String,
    /// Software version (`17.12.1.5`), a valid [`Version`].
    pub version: String,
    /// Boards allowed to install it; empty means every board of the hardware type.
    pub compatible_boards: Vec<String>,
    /// Build time, unix seconds (UTC).
    pub build_time: u64,
    pub signature_algorithm: SignatureAlgorithm,
    /// In tar order.
    pub payloads: Vec<Payload>,
}

/// Why a manifest was refused. `line` is 1-based; 0 means the manifest as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestError {
    TooLarge {
        len: usize,
        max: usize,
    },
    NotUtf8,
    Syntax {
        line: usize,
        reason: String,
    },
    UnknownKey {
        line: usize,
        key: String,
    },
    DuplicateKey {
        line: usize,
        key: String,
    },
    MissingKey {
        section: String,
        key: &'static str,
    },
    BadValue {
        line: usize,
        key: String,
        reason: String,
    },
    UnsupportedFormat {
        found: u32,
    },
    NoPayload,
    TooManyPayloads {
        max: usize,
    },
    DuplicatePayload {
        name: String,
    },
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::TooLarge { len, max } => {
                write!(f, "manifest is {len} bytes, the limit is {max}")
            }
            ManifestError::NotUtf8 => write!(f, "manifest is not UTF-8 text"),
            ManifestError::Syntax { line, reason } => {
                write!(f, "manifest line {line}: {reason}")
            }
            ManifestError::UnknownKey { line, key } => {
                write!(f, "manifest line {line}: unknown key `{key}`")
            }
            ManifestError::DuplicateKey { line, key } => {
                write!(f, "manifest line {line}: key `{key}` given twice")
            }
            ManifestError::MissingKey { section, key } => {
                write!(f, "manifest: {section} lacks `{key}`")
            }
            ManifestError::BadValue { line, key, reason } => {
                write!(f, "manifest line {line}: `{key}`: {reason}")
            }
            ManifestError::UnsupportedFormat { found } => write!(
                f,
                "manifest format_version {found} is not supported (expected {FORMAT_VERSION})"
            ),
            ManifestError::NoPayload => write!(f, "manifest lists no [[payload]]"),
            ManifestError::TooManyPayloads { max } => {
                write!(f, "manifest lists more than {max} payloads")
            }
            ManifestError::DuplicatePayload { name } => {
                write!(f, "manifest lists payload `{name}` twice")
            }
        }
    }
}

impl std::error::Error for ManifestError {}

enum Value {
    Str(String),
    Int(u64),
    List(Vec<String>),
}

fn bad(line: usize, key: &str, reason: impl Into<String>) -> ManifestError {
    ManifestError::BadValue {
        line,
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn syntax(line: usize, reason: impl Into<String>) -> ManifestError {
    ManifestError::Syntax {
        line,
        reason: reason.into(),
    }
}

fn is_string_char(c: char) -> bool {
    (' '..='~').contains(&c) && c != '"' && c != '\\'
}

/// Parses `"..."` at the start of `s`; returns the string and the rest.
fn parse_string(s: &str, line: usize) -> Result<(String, &str), ManifestError> {
    let rest = s
        .strip_prefix('"')
        .ok_or_else(|| syntax(line, "expected a \"string\""))?;
    let end = rest
        .find('"')
        .ok_or_else(|| syntax(line, "unterminated string"))?;
    let body = &rest[..end];
    if let Some(c) = body.chars().find(|c| !is_string_char(*c)) {
        return Err(syntax(
            line,
            format!(
                "character {c:?} is not allowed in a string (printable ASCII without \" and \\)"
            ),
        ));
    }
    Ok((body.to_string(), &rest[end + 1..]))
}

fn parse_value(s: &str, line: usize) -> Result<Value, ManifestError> {
    if s.starts_with('"') {
        let (v, rest) = parse_string(s, line)?;
        if !rest.trim().is_empty() {
            return Err(syntax(line, "text after the string"));
        }
        Ok(Value::Str(v))
    } else if let Some(mut rest) = s.strip_prefix('[') {
        let mut items = Vec::new();
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(']') {
            rest = r;
        } else {
            loop {
                let (v, r) = parse_string(rest, line)?;
                items.push(v);
                if items.len() > MAX_BOARDS {
                    return Err(syntax(line, format!("more than {MAX_BOARDS} list items")));
                }
                let r = r.trim_start();
                if let Some(r) = r.strip_prefix(',') {
                    rest = r.trim_start();
                    // A trailing comma before `]` is allowed, as in TOML.
                    if let Some(r) = rest.strip_prefix(']') {
                        rest = r;
                        break;
                    }
                } else if let Some(r) = r.strip_prefix(']') {
                    rest = r;
                    break;
                } else {
                    return Err(syntax(line, "expected `,` or `]` in the list"));
                }
            }
        }
        if !rest.trim().is_empty() {
            return Err(syntax(line, "text after the list"));
        }
        Ok(Value::List(items))
    } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        if s.len() > 1 && s.starts_with('0') {
            return Err(syntax(line, "integers have no leading zeros"));
        }
        s.parse::<u64>()
            .map(Value::Int)
            .map_err(|_| syntax(line, "integer out of range"))
    } else {
        Err(syntax(
            line,
            "a value is a \"string\", a decimal integer or a [\"list\"]",
        ))
    }
}

/// A name made of `[a-z0-9_-]` (hardware types, boards, targets).
fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A payload member name: a plain file name of `[A-Za-z0-9._-]`, not starting with `.`, at
/// most 100 bytes (ustar's name field), not a reserved name.
pub fn is_valid_payload_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        && !RESERVED_NAMES.contains(&s)
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = hexval(b[2 * i])?;
        let lo = hexval(b[2 * i + 1])?;
        *o = hi << 4 | lo;
    }
    Some(out)
}

fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Lower-case hex (one implementation for the whole crate).
pub use super::download::hex;

#[derive(Default)]
struct Section {
    /// (key, line, value)
    entries: Vec<(String, usize, Value)>,
    header_line: usize,
}

impl Section {
    fn take(&mut self, key: &'static str, what: &str) -> Result<(usize, Value), ManifestError> {
        let i = self
            .entries
            .iter()
            .position(|(k, _, _)| k == key)
            .ok_or_else(|| ManifestError::MissingKey {
                section: what.to_string(),
                key,
            })?;
        let (_, line, v) = self.entries.swap_remove(i);
        Ok((line, v))
    }
    fn string(&mut self, key: &'static str, what: &str) -> Result<(usize, String), ManifestError> {
        match self.take(key, what)? {
            (line, Value::Str(s)) => Ok((line, s)),
            (line, _) => Err(bad(line, key, "expected a \"string\"")),
        }
    }
    fn int(&mut self, key: &'static str, what: &str) -> Result<(usize, u64), ManifestError> {
        match self.take(key, what)? {
            (line, Value::Int(n)) => Ok((line, n)),
            (line, _) => Err(bad(line, key, "expected a decimal integer")),
        }
    }
}

const TOP_KEYS: [&str; 6] = [
    "format_version",
    "hardware_type",
    "version",
    "compatible_boards",
    "build_time",
    "signature_algorithm",
];
const PAYLOAD_KEYS: [&str; 4] = ["name", "size", "sha256", "target"];

impl Manifest {
    /// Parses and checks a manifest (see the module documentation for the rules).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLarge {
                len: bytes.len(),
                max: MAX_MANIFEST_LEN,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8)?;
        let mut top = Section::default();
        let mut payload_sections: Vec<Section> = Vec::new();
        for (i, raw) in text.split('\n').enumerate() {
            let line = i + 1;
            let l = raw
                .strip_suffix('\r')
                .unwrap_or(raw)
                .trim_matches([' ', '\t']);
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if l.starts_with('[') && !l.contains('=') {
                if l != "[[payload]]" {
                    return Err(syntax(
                        line,
                        format!("unknown table `{l}` (only [[payload]])"),
                    ));
                }
                if payload_sections.len() == MAX_PAYLOADS {
                    return Err(ManifestError::TooManyPayloads { max: MAX_PAYLOADS });
                }
                payload_sections.push(Section {
                    entries: Vec::new(),
                    header_line: line,
                });
                continue;
            }
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| syntax(line, "expected `key = value`"))?;
            let key = k.trim_matches([' ', '\t']);
            let known: &[&str] = if payload_sections.is_empty() {
                &TOP_KEYS
            } else {
                &PAYLOAD_KEYS
            };
            if !known.contains(&key) {
                return Err(ManifestError::UnknownKey {
                    line,
                    key: key.chars().take(64).collect(),
                });
            }
            let section = payload_sections.last_mut().unwrap_or(&mut top);
            if section.entries.iter().any(|(k2, _, _)| k2 == key) {
                return Err(ManifestError::DuplicateKey {
                    line,
                    key: key.to_string(),
                });
            }
            let value = parse_value(v.trim_matches([' ', '\t']), line)?;
            section.entries.push((key.to_string(), line, value));
        }

        let what = "the top level";
        let (line, format_version) = top.int("format_version", what)?;
        let format_version = u32::try_from(format_version)
            .map_err(|_| bad(line, "format_version", "out of range"))?;
        if format_version != FORMAT_VERSION {
            return Err(ManifestError::UnsupportedFormat {
                found: format_version,
            });
        }
        let (line, hardware_type) = top.string("hardware_type", what)?;
        if !is_ident(&hardware_type) {
            return Err(bad(line, "hardware_type", "expected 1-64 of [a-z0-9_-]"));
        }
        let (line, version) = top.string("version", what)?;
        if Version::parse(&version).is_none() {
            return Err(bad(
                line,
                "version",
                "expected dotted decimal numbers such as 17.12.1.5",
            ));
        }
        let compatible_boards = match top.take("compatible_boards", what)? {
            (line, Value::List(l)) => {
                for b in &l {
                    if !is_ident(b) {
                        return Err(bad(
                            line,
                            "compatible_boards",
                            format!("board `{b}` is not 1-64 of [a-z0-9_-]"),
                        ));
                    }
                }
                l
            }
            (line, _) => {
                return Err(bad(line, "compatible_boards", "expected a [\"list\"]"));
            }
        };
        let (_, build_time) = top.int("build_time", what)?;
        let (line, alg) = top.string("signature_algorithm", what)?;
        let signature_algorithm = SignatureAlgorithm::from_name(&alg).ok_or_else(|| {
            bad(
                line,
                "signature_algorithm",
                format!("`{alg}` is not one of ecdsa-p256-sha256, ed25519, rsa-pss-sha256"),
            )
        })?;

        if payload_sections.is_empty() {
            return Err(ManifestError::NoPayload);
        }
        let mut payloads: Vec<Payload> = Vec::new();
        for mut s in payload_sections {
            let what = format!("the [[payload]] at line {}", s.header_line);
            let (line, name) = s.string("name", &what)?;
            if !is_valid_payload_name(&name) {
                return Err(bad(
                    line,
                    "name",
                    "expected a plain file name of [A-Za-z0-9._-], at most 100 bytes, not \
                     starting with `.`, not manifest/manifest.sig/signer.pem",
                ));
            }
            if payloads.iter().any(|p| p.name == name) {
                return Err(ManifestError::DuplicatePayload { name });
            }
            let (_, size) = s.int("size", &what)?;
            let (line, sha) = s.string("sha256", &what)?;
            let sha256 = parse_hex32(&sha)
                .ok_or_else(|| bad(line, "sha256", "expected 64 lower-case hex digits"))?;
            let (line, target) = s.string("target", &what)?;
            if !is_ident(&target) {
                return Err(bad(line, "target", "expected 1-64 of [a-z0-9_-]"));
            }
            payloads.push(Payload {
                name,
                size,
                sha256,
                target,
            });
        }
        Ok(Manifest {
            format_version,
            hardware_type,
            version,
            compatible_boards,
            build_time,
            signature_algorithm,
            payloads,
        })
    }

    /// The canonical text form (what [`crate::image::pack`] signs); [`Manifest::parse`] reads it
    /// back unchanged.
    pub fn to_text(&self) -> String {
        let boards: Vec<String> = self
            .compatible_boards
            .iter()
            .map(|b| format!("\"{b}\""))
            .collect();
        let mut s = format!(
            "format_version = {}\nhardware_type = \"{}\"\nversion = \"{}\"\n\
             compatible_boards = [{}]\nbuild_time = {}\nsignature_algorithm = \"{}\"\n",
            self.format_version,
            self.hardware_type,
            self.version,
            boards.join(", "),
            self.build_time,
            self.signature_algorithm,
        );
        for p in &self.payloads {
            s.push_str(&format!(
                "\n[[payload]]\nname = \"{}\"\nsize = {}\nsha256 = \"{}\"\ntarget = \"{}\"\n",
                p.name,
                p.size,
                hex(&p.sha256),
                p.target
            ));
        }
        s
    }

    /// The version as a [`Version`] (always valid in a parsed manifest).
    pub fn parsed_version(&self) -> Option<Version> {
        Version::parse(&self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format_version: 1,
            hardware_type: "ap1g8".into(),
            version: "17.12.1.5".into(),
            compatible_boards: vec!["ap1g8-a".into(), "ap1g8-b".into()],
            build_time: 1_700_000_000,
            signature_algorithm: SignatureAlgorithm::EcdsaP256Sha256,
            payloads: vec![Payload {
                name: "rootfs.img".into(),
                size: 3,
                sha256: [0xab; 32],
                target: "rootfs".into(),
            }],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Manifest::parse(m.to_text().as_bytes()).unwrap(), m);
        let mut e = sample();
        e.compatible_boards.clear();
        assert_eq!(Manifest::parse(e.to_text().as_bytes()).unwrap(), e);
    }

    #[test]
    fn toml_crate_agrees() {
        // The format is a TOML subset: the toml crate reads the same fields.
        let v: toml::Table = toml::from_str(&sample().to_text()).unwrap();
        assert_eq!(v["hardware_type"].as_str(), Some("ap1g8"));
        assert_eq!(v["payload"][0]["size"].as_integer(), Some(3));
    }

    #[test]
    fn refusals() {
        let t = sample().to_text();
        let cases: Vec<(String, &str)> = vec![
            (t.replace("format_version = 1", "format_version = 2"), "format_version 2"),
            (t.replace("version = \"17", "version = \"x17"), "dotted"),
            (t.replace("build_time", "built"), "unknown key"),
            (format!("{t}name = \"x\"\n"), "twice"),
            (t.replace("target = \"rootfs\"\n", ""), "lacks `target`"),
            (t.replace("\"ap1g8\"", "\"ap1g8\" x"), "text after"),
            (t.replace("[[payload]]", "[payload]"), "unknown table"),
            (t.replace("rootfs.img", "../x"), "plain file name"),
            (t.replace("rootfs.img", "manifest"), "plain file name"),
            (t.replace("ecdsa-p256-sha256", "md5"), "not one of"),
            (t.replace("size = 3", "size = 03"), "leading zeros"),
            (t.replace("size = 3", "size = -3"), "a value is"),
            (t.split("[[payload]]").next().unwrap().to_string(), "no [[payload]]"),
            (format!("{t}\n[[payload]]\nname = \"rootfs.img\"\nsize = 1\nsha256 = \"{}\"\ntarget = \"rootfs\"\n", "ab".repeat(32)), "twice"),
        ];
        for (text, want) in cases {
            let e = Manifest::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?} for\n{text}");
        }
        let big = vec![b'#'; MAX_MANIFEST_LEN + 1];
        assert!(matches!(
            Manifest::parse(&big),
            Err(ManifestError::TooLarge { .. })
        ));
        assert_eq!(Manifest::parse(&[0xff]), Err(ManifestError::NotUtf8));
    }

    #[test]
    fn version_order() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("17.9.4.27") < v("17.12.1.5"));
        assert!(v("17.9") == v("17.9.0.0"));
        assert!(v("17.10") > v("17.9.99"));
        for s in [
            "",
            "1..2",
            "1.a",
            "-1",
            "1.2 ",
            "99999999999",
            "1.2.3.4.5.6.7.8.9",
        ] {
            assert!(Version::parse(s).is_none(), "{s}");
        }
    }
}
