//! The fleet payloads: how a controller tells an AP where to get an image from, and how the AP
//! says what it can do and how its download goes (docs/fleet.md). Each is the value of one
//! Vendor Specific Payload (RFC 5415 §4.6.39) under the configured vendor id, with the element
//! ids of [`super::vendor`]; its value is a list of small TLVs (type u8, length u16, value), so
//! that a later version can add fields an older one skips.
//!
//! A peer that does not know the vendor id or the element id ignores the element (RFC 5415
//! §4.6.39 leaves vendor elements to the vendor; wtpd and acsim skip unknown ones), so an AP
//! that does not understand a [`Direction`] waits for CAPWAP Image Data as before, and the
//! controller only sends one to an AP whose [`Offer`] asked for it.
//!
//! Parsing never panics: a truncated TLV, a field of the wrong length, text that is not UTF-8
//! or a URL longer than [`MAX_TEXT`] is a [`FleetError`], and the element is ignored as a
//! whole.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest text field (an image name, a URL) accepted or written.
pub const MAX_TEXT: usize = 1024;

/// [`Offer::caps`]: fetches an image from a primary AP over TFTP.
pub const CAP_TFTP_FETCH: u8 = 0x01;
/// [`Offer::caps`]: fetches an image over HTTPS.
pub const CAP_HTTPS_FETCH: u8 = 0x02;
/// [`Offer::caps`]: serves its staged image over TFTP to subordinates.
pub const CAP_TFTP_SERVE: u8 = 0x04;

/// A fleet payload that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetError {
    /// A TLV's header or value runs past the end.
    Truncated { field: u8 },
    /// A field whose length is fixed has another.
    BadLength { field: u8, len: usize },
    /// A text field that is not UTF-8 or is too long.
    BadText { field: u8 },
    /// A value out of its range (a role or method number this version does not know).
    BadValue { field: u8, value: u8 },
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FleetError::Truncated { field } => write!(f, "fleet field {field} truncated"),
            FleetError::BadLength { field, len } => {
                write!(f, "fleet field {field} has length {len}")
            }
            FleetError::BadText { field } => {
                write!(f, "fleet field {field}: text not UTF-8 or too long")
            }
            FleetError::BadValue { field, value } => {
                write!(f, "fleet field {field}: unknown value {value}")
            }
        }
    }
}

impl std::error::Error for FleetError {}

/// An AP's part in the efficient upgrade of its site and model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    None,
    /// Downloads from the controller and serves the subordinates (the seed's "Master").
    Primary,
    /// Downloads from the primary (the seed's "Slave").
    Subordinate,
}

impl Role {
    fn from_u8(v: u8) -> Option<Role> {
        Some(match v {
            0 => Role::None,
            1 => Role::Primary,
            2 => Role::Subordinate,
            _ => return None,
        })
    }

    fn to_u8(self) -> u8 {
        match self {
            Role::None => 0,
            Role::Primary => 1,
            Role::Subordinate => 2,
        }
    }

    /// The word of the seed's Role column.
    pub fn column(self) -> &'static str {
        match self {
            Role::None => "-",
            Role::Primary => "Master",
            Role::Subordinate => "Slave",
        }
    }
}

/// How the image reaches an AP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// CAPWAP Image Data from the controller (RFC 5415 §9.1).
    #[default]
    Capwap,
    /// TFTP from the site's primary AP.
    Tftp,
    /// HTTPS, out of band, from the controller's image server.
    Https,
}

impl Method {
    fn from_u8(v: u8) -> Option<Method> {
        Some(match v {
            0 => Method::Capwap,
            1 => Method::Tftp,
            2 => Method::Https,
            _ => return None,
        })
    }

    fn to_u8(self) -> u8 {
        match self {
            Method::Capwap => 0,
            Method::Tftp => 1,
            Method::Https => 2,
        }
    }

    /// The word of the status tables' Method column.
    pub fn column(self) -> &'static str {
        match self {
            Method::Capwap => "CAPWAP",
            Method::Tftp => "TFTP from primary",
            Method::Https => "HTTPS",
        }
    }
}

/// WTP to AC, in the Join Request and in each Image Data Request: what the AP can do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Offer {
    /// The AP's hardware type, the image name it asks for (`ap1g8`).
    pub image_type: Option<String>,
    /// [`CAP_TFTP_FETCH`], [`CAP_HTTPS_FETCH`], [`CAP_TFTP_SERVE`].
    pub caps: u8,
    /// Where its TFTP server listens, when it serves.
    pub server: Option<SocketAddr>,
    /// Out-of-band attempts of this download that failed so far.
    pub retry: u16,
    /// It gave up on out-of-band sources: it asks for CAPWAP Image Data.
    pub fallback: bool,
}

/// AC to WTP, in a successful Image Data Response: where to get the image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Direction {
    pub role: Role,
    pub method: Method,
    /// [`Method::Tftp`]: the primary's TFTP server.
    pub server: Option<SocketAddr>,
    /// [`Method::Tftp`]: the file name on it.
    pub file: Option<String>,
    /// [`Method::Https`]: the image's URL.
    pub url: Option<String>,
    /// [`Method::Https`]: SHA-256 of the server's certificate (DER): the trust anchor.
    pub pin: Option<[u8; 32]>,
    /// The image's size, when the controller knows it (for PRECHECK).
    pub size: Option<u64>,
}

impl Direction {
    /// The URL an out-of-band direction points at, or why it cannot be followed. `None` for
    /// CAPWAP.
    pub fn source_url(&self) -> Result<Option<String>, &'static str> {
        match self.method {
            Method::Capwap => Ok(None),
            Method::Tftp => {
                let (Some(server), Some(file)) = (self.server, self.file.as_deref()) else {
                    return Err("TFTP direction without a server or a file name");
                };
                if file.is_empty() || file.contains(['/', '\\']) {
                    return Err("TFTP direction with a file name that is a path");
                }
                Ok(Some(format!("tftp://{server}/{file}")))
            }
            Method::Https => match self.url.as_deref() {
                Some(u) if u.starts_with("https://") => Ok(Some(u.to_string())),
                _ => Err("HTTPS direction without an https:// URL"),
            },
        }
    }
}

/// What a [`Report`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportState {
    /// Bytes are arriving.
    Fetching,
    /// The image is verified and staged (and, on a primary, served).
    Done,
    /// The download failed (the reason is in a Download Failure element beside it).
    Failed,
}

/// WTP to AC, in a WTP Event Request in Run: how a download the AC does not carry goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub state: ReportState,
    pub bytes: u64,
    pub total: Option<u64>,
    pub method: Method,
    pub retry: u16,
}

// Field numbers.
const F_IMAGE_TYPE: u8 = 1;
const F_CAPS: u8 = 2;
const F_SERVER: u8 = 3;
const F_RETRY: u8 = 4;
const F_FALLBACK: u8 = 5;

const D_ROLE: u8 = 1;
const D_METHOD: u8 = 2;
const D_SERVER: u8 = 3;
const D_FILE: u8 = 4;
const D_URL: u8 = 5;
const D_PIN: u8 = 6;
const D_SIZE: u8 = 7;

const R_STATE: u8 = 1;
const R_BYTES: u8 = 2;
const R_TOTAL: u8 = 3;
const R_METHOD: u8 = 4;
const R_RETRY: u8 = 5;

/// Walks the TLVs of a payload.
fn fields(mut b: &[u8]) -> impl Iterator<Item = Result<(u8, &[u8]), FleetError>> {
    std::iter::from_fn(move || {
        if b.is_empty() {
            return None;
        }
        if b.len() < 3 {
            let field = b[0];
            b = &[];
            return Some(Err(FleetError::Truncated { field }));
        }
        let field = b[0];
        let len = u16::from_be_bytes([b[1], b[2]]) as usize;
        if b.len() < 3 + len {
            b = &[];
            return Some(Err(FleetError::Truncated { field }));
        }
        let v = &b[3..3 + len];
        b = &b[3 + len..];
        Some(Ok((field, v)))
    })
}

fn fixed<const N: usize>(field: u8, v: &[u8]) -> Result<[u8; N], FleetError> {
    v.try_into().map_err(|_| FleetError::BadLength {
        field,
        len: v.len(),
    })
}

fn text(field: u8, v: &[u8]) -> Result<String, FleetError> {
    if v.len() > MAX_TEXT {
        return Err(FleetError::BadText { field });
    }
    std::str::from_utf8(v)
        .map(str::to_string)
        .map_err(|_| FleetError::BadText { field })
}

fn addr(field: u8, v: &[u8]) -> Result<SocketAddr, FleetError> {
    let ip = match v.len() {
        6 => IpAddr::V4(Ipv4Addr::from(fixed::<4>(field, &v[..4])?)),
        18 => IpAddr::V6(Ipv6Addr::from(fixed::<16>(field, &v[..16])?)),
        len => return Err(FleetError::BadLength { field, len }),
    };
    let port = u16::from_be_bytes(fixed::<2>(field, &v[v.len() - 2..])?);
    Ok(SocketAddr::new(ip, port))
}

fn put(out: &mut Vec<u8>, field: u8, v: &[u8]) {
    let len = v.len().min(u16::MAX as usize);
    out.push(field);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&v[..len]);
}

fn put_text(out: &mut Vec<u8>, field: u8, s: &str) {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    put(out, field, &s.as_bytes()[..end]);
}

fn put_addr(out: &mut Vec<u8>, field: u8, a: SocketAddr) {
    let mut v = Vec::with_capacity(18);
    match a.ip() {
        IpAddr::V4(ip) => v.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => v.extend_from_slice(&ip.octets()),
    }
    v.extend_from_slice(&a.port().to_be_bytes());
    put(out, field, &v);
}

impl Offer {
    pub fn parse(b: &[u8]) -> Result<Offer, FleetError> {
        let mut o = Offer::default();
        for f in fields(b) {
            let (field, v) = f?;
            match field {
                F_IMAGE_TYPE => o.image_type = Some(text(field, v)?),
                F_CAPS => o.caps = fixed::<1>(field, v)?[0],
                F_SERVER => o.server = Some(addr(field, v)?),
                F_RETRY => o.retry = u16::from_be_bytes(fixed(field, v)?),
                F_FALLBACK => o.fallback = true,
                _ => {}
            }
        }
        Ok(o)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        if let Some(t) = &self.image_type {
            put_text(out, F_IMAGE_TYPE, t);
        }
        put(out, F_CAPS, &[self.caps]);
        if let Some(a) = self.server {
            put_addr(out, F_SERVER, a);
        }
        put(out, F_RETRY, &self.retry.to_be_bytes());
        if self.fallback {
            put(out, F_FALLBACK, &[]);
        }
    }

    pub fn can(&self, cap: u8) -> bool {
        self.caps & cap == cap
    }
}

impl Direction {
    pub fn parse(b: &[u8]) -> Result<Direction, FleetError> {
        let mut d = Direction::default();
        for f in fields(b) {
            let (field, v) = f?;
            match field {
                D_ROLE => {
                    let x = fixed::<1>(field, v)?[0];
                    d.role = Role::from_u8(x).ok_or(FleetError::BadValue { field, value: x })?;
                }
                D_METHOD => {
                    let x = fixed::<1>(field, v)?[0];
                    d.method =
                        Method::from_u8(x).ok_or(FleetError::BadValue { field, value: x })?;
                }
                D_SERVER => d.server = Some(addr(field, v)?),
                D_FILE => d.file = Some(text(field, v)?),
                D_URL => d.url = Some(text(field, v)?),
                D_PIN => d.pin = Some(fixed(field, v)?),
                D_SIZE => d.size = Some(u64::from_be_bytes(fixed(field, v)?)),
                _ => {}
            }
        }
        Ok(d)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put(out, D_ROLE, &[self.role.to_u8()]);
        put(out, D_METHOD, &[self.method.to_u8()]);
        if let Some(a) = self.server {
            put_addr(out, D_SERVER, a);
        }
        if let Some(f) = &self.file {
            put_text(out, D_FILE, f);
        }
        if let Some(u) = &self.url {
            put_text(out, D_URL, u);
        }
        if let Some(p) = &self.pin {
            put(out, D_PIN, p);
        }
        if let Some(s) = self.size {
            put(out, D_SIZE, &s.to_be_bytes());
        }
    }
}

impl Report {
    pub fn parse(b: &[u8]) -> Result<Report, FleetError> {
        let mut state = None;
        let mut r = Report {
            state: ReportState::Fetching,
            bytes: 0,
            total: None,
            method: Method::Capwap,
            retry: 0,
        };
        for f in fields(b) {
            let (field, v) = f?;
            match field {
                R_STATE => {
                    let x = fixed::<1>(field, v)?[0];
                    state = Some(match x {
                        1 => ReportState::Fetching,
                        2 => ReportState::Done,
                        3 => ReportState::Failed,
                        _ => return Err(FleetError::BadValue { field, value: x }),
                    });
                }
                R_BYTES => r.bytes = u64::from_be_bytes(fixed(field, v)?),
                R_TOTAL => r.total = Some(u64::from_be_bytes(fixed(field, v)?)),
                R_METHOD => {
                    let x = fixed::<1>(field, v)?[0];
                    r.method =
                        Method::from_u8(x).ok_or(FleetError::BadValue { field, value: x })?;
                }
                R_RETRY => r.retry = u16::from_be_bytes(fixed(field, v)?),
                _ => {}
            }
        }
        r.state = state.ok_or(FleetError::Truncated { field: R_STATE })?;
        Ok(r)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let s = match self.state {
            ReportState::Fetching => 1,
            ReportState::Done => 2,
            ReportState::Failed => 3,
        };
        put(out, R_STATE, &[s]);
        put(out, R_BYTES, &self.bytes.to_be_bytes());
        if let Some(t) = self.total {
            put(out, R_TOTAL, &t.to_be_bytes());
        }
        put(out, R_METHOD, &[self.method.to_u8()]);
        put(out, R_RETRY, &self.retry.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
        let mut v = Vec::new();
        f(&mut v);
        v
    }

    #[test]
    fn offers_round_trip() {
        let o = Offer {
            image_type: Some("ap1g8".into()),
            caps: CAP_TFTP_FETCH | CAP_TFTP_SERVE,
            server: Some("192.0.2.7:6969".parse().unwrap()),
            retry: 44,
            fallback: true,
        };
        assert_eq!(Offer::parse(&enc(|v| o.encode(v))).unwrap(), o);
        let o6 = Offer {
            server: Some("[2001:db8::1]:69".parse().unwrap()),
            ..Offer::default()
        };
        assert_eq!(Offer::parse(&enc(|v| o6.encode(v))).unwrap(), o6);
        assert!(o.can(CAP_TFTP_SERVE) && !o.can(CAP_HTTPS_FETCH));
    }

    #[test]
    fn directions_round_trip_and_name_their_source() {
        let d = Direction {
            role: Role::Subordinate,
            method: Method::Tftp,
            server: Some("192.0.2.7:69".parse().unwrap()),
            file: Some("ap1g8".into()),
            ..Direction::default()
        };
        let back = Direction::parse(&enc(|v| d.encode(v))).unwrap();
        assert_eq!(back, d);
        assert_eq!(
            back.source_url().unwrap().as_deref(),
            Some("tftp://192.0.2.7:69/ap1g8")
        );
        let h = Direction {
            role: Role::Primary,
            method: Method::Https,
            url: Some("https://ac.lab:8443/ap1g8".into()),
            pin: Some([7; 32]),
            size: Some(3_000_601),
            ..Direction::default()
        };
        assert_eq!(Direction::parse(&enc(|v| h.encode(v))).unwrap(), h);
        let bad = Direction {
            method: Method::Tftp,
            server: Some("192.0.2.7:69".parse().unwrap()),
            file: Some("../etc/passwd".into()),
            ..Direction::default()
        };
        assert!(bad.source_url().is_err());
        let no_url = Direction {
            method: Method::Https,
            url: Some("http://plain".into()),
            ..Direction::default()
        };
        assert!(no_url.source_url().is_err());
        assert_eq!(Direction::default().source_url(), Ok(None));
    }

    #[test]
    fn reports_round_trip() {
        let r = Report {
            state: ReportState::Done,
            bytes: 5 << 30,
            total: Some(5 << 30),
            method: Method::Https,
            retry: 2,
        };
        assert_eq!(Report::parse(&enc(|v| r.encode(v))).unwrap(), r);
        // The state is required.
        assert!(Report::parse(&[]).is_err());
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut v = vec![99, 0, 2, 1, 2];
        Offer {
            caps: 3,
            ..Offer::default()
        }
        .encode(&mut v);
        assert_eq!(Offer::parse(&v).unwrap().caps, 3);
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        assert_eq!(Offer::parse(&[2]), Err(FleetError::Truncated { field: 2 }));
        assert_eq!(
            Offer::parse(&[2, 0, 5, 1]),
            Err(FleetError::Truncated { field: 2 })
        );
        assert_eq!(
            Offer::parse(&[2, 0, 2, 1, 1]),
            Err(FleetError::BadLength { field: 2, len: 2 })
        );
        assert_eq!(
            Offer::parse(&[3, 0, 5, 1, 2, 3, 4, 5]),
            Err(FleetError::BadLength { field: 3, len: 5 })
        );
        assert_eq!(
            Direction::parse(&[1, 0, 1, 9]),
            Err(FleetError::BadValue { field: 1, value: 9 })
        );
        assert_eq!(
            Direction::parse(&[5, 0, 2, 0xff, 0xfe]),
            Err(FleetError::BadText { field: 5 })
        );
        let long = enc(|v| put(v, D_URL, &vec![b'a'; MAX_TEXT + 1]));
        assert_eq!(
            Direction::parse(&long),
            Err(FleetError::BadText { field: 5 })
        );
        // Every prefix of a valid payload parses or fails cleanly.
        let full = enc(|v| {
            Direction {
                role: Role::Primary,
                method: Method::Https,
                url: Some("https://x/y".into()),
                pin: Some([1; 32]),
                size: Some(9),
                ..Direction::default()
            }
            .encode(v)
        });
        for n in 0..full.len() {
            let _ = Direction::parse(&full[..n]);
            let _ = Offer::parse(&full[..n]);
            let _ = Report::parse(&full[..n]);
        }
    }
}
