//! Image downloads from the servers of the seed's network: TFTP (RFC 1350 with the options of
//! RFC 2347-2349 and 7440), SFTP (libssh2) and HTTPS (rustls). Used by acsim, which fetches the
//! images of other hardware types and forwards them to the APs as they arrive
//! ([`spool::RemoteSource`]), and by `wtpd fetch`, the AP's own download into its download
//! directory ([`fetch_to_store`]). [`tftpd`] is the other side: the TFTP server through which
//! a site's primary AP passes its staged image on to the subordinate APs of its model.
//!
//! The clients are blocking (std sockets with timeouts) and push what arrives into a [`Sink`]:
//! nothing here holds an image in memory. acsim runs them in a thread; `wtpd fetch` runs one
//! in the foreground. Errors read as the seed's controller writes them:
//! `Failed to download file tftp://172.16.5.27/Wrong-Path/ap1g6: No such file or directory`.

#[cfg(feature = "https")]
pub mod https;
#[cfg(feature = "sftp")]
pub mod sftp;
pub mod spool;
pub mod tftp;
pub mod tftpd;
pub mod url;

use std::fmt;
#[cfg(any(feature = "sftp", feature = "https"))]
use std::net::TcpStream;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::image::download::hex;
use crate::image::store::{ImageStore, StoreError};
pub use url::{FetchUrl, Scheme};

/// What went wrong, without the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchErrorKind {
    /// The server says the file does not exist (TFTP error 1, SFTP NO_SUCH_FILE, HTTP 404).
    NotFound,
    /// The server did not answer (or accept a connection) within the timeout and retries.
    TimedOut,
    /// The server answered with a refusal other than "not found".
    Refused(String),
    /// SSH authentication failed.
    Auth(String),
    /// The server's SSH host key is unknown or differs from the pinned one.
    HostKey(String),
    /// TLS failed (certificate, name, handshake).
    Tls(String),
    /// The server broke the protocol.
    Protocol(String),
    /// The server announced one size and sent another.
    SizeMismatch { expected: u64, got: u64 },
    /// Where the bytes go refused them (download directory full, spool write failed).
    Store(StoreError),
    /// Local I/O (socket creation, name resolution, key files).
    Io(String),
    /// The transfer was stopped on purpose (its reader went away).
    Cancelled,
}

impl fmt::Display for FetchErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchErrorKind::NotFound => f.write_str("No such file or directory"),
            FetchErrorKind::TimedOut => f.write_str("Timed out"),
            FetchErrorKind::Refused(s) => f.write_str(s),
            FetchErrorKind::Auth(s) => write!(f, "Authentication failed: {s}"),
            FetchErrorKind::HostKey(s) => write!(f, "Host key verification failed: {s}"),
            FetchErrorKind::Tls(s) => write!(f, "TLS: {s}"),
            FetchErrorKind::Protocol(s) => write!(f, "Protocol error: {s}"),
            FetchErrorKind::SizeMismatch { expected, got } => {
                write!(
                    f,
                    "Size mismatch: announced {expected} bytes, received {got}"
                )
            }
            FetchErrorKind::Store(e) => write!(f, "{e}"),
            FetchErrorKind::Io(s) => f.write_str(s),
            FetchErrorKind::Cancelled => f.write_str("Cancelled"),
        }
    }
}

/// A failed download: the URL as the seed shows it (user masked) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub url: String,
    pub kind: FetchErrorKind,
}

impl FetchError {
    pub fn new(url: &FetchUrl, kind: FetchErrorKind) -> Self {
        FetchError {
            url: url.to_string(),
            kind,
        }
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Failed to download file {}: {}", self.url, self.kind)
    }
}

impl std::error::Error for FetchError {}

/// How to download: timeouts, TFTP options, credentials and trust.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// TFTP: the wait for each packet before a retransmission (also sent as the RFC 2349
    /// timeout option). SFTP/HTTPS: the wait for each read, and the time a server has to
    /// accept the connection.
    pub timeout: Duration,
    /// TFTP: retransmissions of one packet before giving up with `Timed out`.
    pub retries: u32,
    /// TFTP block size asked for (RFC 2348); the server may lower it.
    pub blksize: u16,
    /// TFTP window size asked for (RFC 7440); 1 asks for none.
    pub windowsize: u16,
    /// SFTP: the user when the URL names none.
    pub user: Option<String>,
    pub password: Option<String>,
    /// SFTP: private key file (OpenSSH format, unencrypted).
    pub key_file: Option<PathBuf>,
    /// SFTP: known_hosts file the server's host key must be listed in.
    pub known_hosts: Option<PathBuf>,
    /// SFTP: the server's host key SHA-256 fingerprint (`SHA256:base64`, as ssh-keygen -l shows).
    pub host_key_sha256: Option<String>,
    /// SFTP: lab only: accept any host key (logged as a warning with its fingerprint).
    pub accept_any_host_key: bool,
    /// HTTPS: the CA certificates (PEM) the server's chain must reach; the system bundle
    /// (/etc/ssl/certs/ca-certificates.crt) when not given.
    pub ca_file: Option<PathBuf>,
    /// HTTPS: the SHA-256 of the server's end-entity certificate (DER). When set, the server
    /// is trusted if and only if its certificate hashes to it: `ca_file`, the CA and the host
    /// name are not checked (the handshake signatures are). A mismatch is a `Tls` error with
    /// both hashes.
    pub pin_sha256: Option<[u8; 32]>,
    /// Bytes PRECHECK requires when the server does not say the size ([`fetch_to_store`]).
    pub required_bytes: u64,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            timeout: Duration::from_secs(5),
            retries: 5,
            blksize: 1468,
            windowsize: 1,
            user: None,
            password: None,
            key_file: None,
            known_hosts: None,
            host_key_sha256: None,
            accept_any_host_key: false,
            ca_file: None,
            pin_sha256: None,
            required_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Where the bytes of a download go, in order.
pub trait Sink {
    /// The server accepted the request; `size` when it said it (TFTP tsize, SFTP stat, HTTP
    /// Content-Length). Called once, before any data.
    fn begin(&mut self, size: Option<u64>) -> Result<(), FetchErrorKind>;
    /// The next bytes of the file.
    fn data(&mut self, bytes: &[u8]) -> Result<(), FetchErrorKind>;
}

/// Downloads `url` into `sink`; returns the number of bytes.
pub fn fetch(url: &FetchUrl, opts: &FetchOptions, sink: &mut dyn Sink) -> Result<u64, FetchError> {
    match url.scheme {
        Scheme::Tftp => tftp::fetch(url, opts, sink),
        #[cfg(feature = "sftp")]
        Scheme::Sftp => sftp::fetch(url, opts, sink),
        #[cfg(feature = "https")]
        Scheme::Https => https::fetch(url, opts, sink),
        #[allow(unreachable_patterns)]
        _ => Err(FetchError::new(
            url,
            FetchErrorKind::Refused(
                "this binary was built without support for this protocol".into(),
            ),
        )),
    }
}

/// Resolves `url`'s host.
pub(crate) fn resolve(url: &FetchUrl) -> Result<Vec<SocketAddr>, FetchError> {
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| {
            FetchError::new(
                url,
                FetchErrorKind::Io(format!("cannot resolve {}: {e}", url.host)),
            )
        })?
        .collect();
    if addrs.is_empty() {
        return Err(FetchError::new(
            url,
            FetchErrorKind::Io(format!("{} has no address", url.host)),
        ));
    }
    Ok(addrs)
}

/// Connects to the server within `opts.timeout`. A refused connection is tried again until
/// the time is up (a server being restarted), and ends as `Timed out` like a silent one.
#[cfg(any(feature = "sftp", feature = "https"))]
pub(crate) fn connect_tcp(url: &FetchUrl, opts: &FetchOptions) -> Result<TcpStream, FetchError> {
    let addrs = resolve(url)?;
    let limit = opts.timeout.max(Duration::from_millis(100));
    let start = Instant::now();
    let mut last = String::new();
    loop {
        for a in &addrs {
            let left = limit
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(50));
            match TcpStream::connect_timeout(a, left) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = format!("{a}: {e}"),
            }
        }
        if start.elapsed() >= limit {
            warn!("{url}: no connection within {:?} (last: {last})", limit);
            return Err(FetchError::new(url, FetchErrorKind::TimedOut));
        }
        std::thread::sleep(Duration::from_millis(200).min(limit));
    }
}

/// A finished download into the AP's download directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// The URL as logged (user masked).
    pub url: String,
    pub bytes: u64,
    pub sha256: [u8; 32],
    pub md5: [u8; 16],
    /// Where the file is ([`ImageStore::location`]).
    pub location: String,
    pub elapsed: Duration,
}

/// Streams into an [`ImageStore`], hashing as it goes.
struct StoreSink<'a> {
    store: &'a mut dyn ImageStore,
    required: u64,
    opened: bool,
    size: Option<u64>,
    bytes: u64,
    next_log: u64,
    sha256: crate::image::sha256::Sha256,
    md5: openssl::hash::Hasher,
}

const PROGRESS_STEP: u64 = 8 * 1024 * 1024;

impl Sink for StoreSink<'_> {
    fn begin(&mut self, size: Option<u64>) -> Result<(), FetchErrorKind> {
        let need = size.unwrap_or(self.required);
        let space = self.store.precheck(need).map_err(FetchErrorKind::Store)?;
        info!(
            "upgrade.sh: /tmp space: OK available {}, required {}",
            space.available_kib, space.required_kib
        );
        self.store.open().map_err(FetchErrorKind::Store)?;
        self.opened = true;
        self.size = size;
        match size {
            Some(n) => info!("Downloading {n} bytes to {}", self.store.location()),
            None => info!("Downloading (size not given) to {}", self.store.location()),
        }
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> Result<(), FetchErrorKind> {
        self.store.write(bytes).map_err(FetchErrorKind::Store)?;
        self.sha256.update(bytes);
        self.md5
            .update(bytes)
            .map_err(|e| FetchErrorKind::Io(e.to_string()))?;
        self.bytes += bytes.len() as u64;
        if self.bytes >= self.next_log {
            self.next_log += PROGRESS_STEP;
            match self.size {
                Some(n) if n > 0 => info!(
                    ".......... {}% ({} bytes)",
                    self.bytes.min(n) * 100 / n,
                    self.bytes
                ),
                _ => info!(".......... {} bytes", self.bytes),
            }
        }
        Ok(())
    }
}

/// Downloads `url` into the AP's download directory: PRECHECK (room for the size the server
/// says, or `opts.required_bytes`), streamed writes, fsync at the end; any failure removes the
/// partial file. Logs `fetched to PATH (sha256 ...)`. The verify/install step reads the file
/// from [`FetchReport::location`].
pub fn fetch_to_store(
    url: &FetchUrl,
    opts: &FetchOptions,
    store: &mut dyn ImageStore,
) -> Result<FetchReport, FetchError> {
    let start = Instant::now();
    info!("Image download started: {url}");
    let mut sink = StoreSink {
        store,
        required: opts.required_bytes,
        opened: false,
        size: None,
        bytes: 0,
        next_log: PROGRESS_STEP,
        sha256: crate::image::sha256::Sha256::new(),
        md5: openssl::hash::Hasher::new(openssl::hash::MessageDigest::md5())
            .map_err(|e| FetchError::new(url, FetchErrorKind::Io(e.to_string())))?,
    };
    let result = fetch(url, opts, &mut sink);
    let result = result.and_then(|n| {
        if !sink.opened {
            // A server that never called begin (cannot happen with the clients here).
            sink.begin(Some(0)).map_err(|k| FetchError::new(url, k))?;
        }
        sink.store
            .finish()
            .map_err(|e| FetchError::new(url, FetchErrorKind::Store(e)))?;
        Ok(n)
    });
    match result {
        Ok(bytes) => {
            let sha256 = sink.sha256.finish();
            let digest = sink
                .md5
                .finish()
                .map_err(|e| FetchError::new(url, FetchErrorKind::Io(e.to_string())))?;
            let mut md5 = [0u8; 16];
            md5.copy_from_slice(&digest);
            let report = FetchReport {
                url: url.to_string(),
                bytes,
                sha256,
                md5,
                location: sink.store.location(),
                elapsed: start.elapsed(),
            };
            let secs = report.elapsed.as_secs_f64().max(1e-6);
            info!(
                "{bytes} bytes in {:.1} s ({:.2} MB/s)",
                secs,
                bytes as f64 / secs / 1e6
            );
            info!(
                "fetched to {} (sha256 {})",
                report.location,
                hex(&report.sha256)
            );
            Ok(report)
        }
        Err(e) => {
            warn!("{e}");
            sink.store.abort();
            Err(e)
        }
    }
}

/// Base64 (standard alphabet, padded), for fingerprints.
#[cfg(any(feature = "sftp", feature = "https"))]
pub(crate) fn base64(bytes: &[u8]) -> String {
    openssl::base64::encode_block(bytes)
}

/// A certificate's SHA-256 as 64 hex digits, upper or lower case, colons allowed
/// (`AB:CD:...`, as `openssl x509 -fingerprint -sha256` prints it).
pub fn parse_sha256_pin(text: &str) -> Result<[u8; 32], String> {
    let digits: Vec<u8> = text.trim().bytes().filter(|b| *b != b':').collect();
    let nibble = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut pin = [0u8; 32];
    if digits.len() != 64 {
        return Err(format!("{text:.80}: not a SHA-256 (64 hex digits)"));
    }
    for (i, pair) in digits.chunks(2).enumerate() {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(h), Some(l)) => pin[i] = h << 4 | l,
            _ => return Err(format!("{text:.80}: not a SHA-256 (64 hex digits)")),
        }
    }
    Ok(pin)
}

fn de_pin<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    parse_sha256_pin(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// The `[fetch]` table of wtpd.toml: credentials, trust and timeouts for `wtpd fetch`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetchSection {
    /// SFTP user when the URL names none, password, private key file.
    pub user: Option<String>,
    pub password: Option<String>,
    pub key_file: Option<PathBuf>,
    /// SFTP host key check: a known_hosts file, or a pinned `SHA256:...` fingerprint.
    pub known_hosts: Option<PathBuf>,
    pub host_key_sha256: Option<String>,
    /// SFTP, lab only: accept any host key (logged as a warning).
    pub accept_any_host_key: bool,
    /// HTTPS: CA certificates (PEM); the system bundle when not given.
    pub ca_file: Option<PathBuf>,
    /// HTTPS: the server certificate's SHA-256 instead of a CA ([`FetchOptions::pin_sha256`]),
    /// 64 hex digits, colons allowed (`openssl x509 -noout -fingerprint -sha256` prints it).
    #[serde(deserialize_with = "de_pin")]
    pub pin_sha256: Option<[u8; 32]>,
    #[serde(with = "crate::time::secs")]
    pub timeout: Duration,
    pub retries: u32,
    pub blksize: u16,
    pub windowsize: u16,
}

impl Default for FetchSection {
    fn default() -> Self {
        let o = FetchOptions::default();
        FetchSection {
            user: None,
            password: None,
            key_file: None,
            known_hosts: None,
            host_key_sha256: None,
            accept_any_host_key: false,
            ca_file: None,
            pin_sha256: None,
            timeout: o.timeout,
            retries: o.retries,
            blksize: o.blksize,
            windowsize: o.windowsize,
        }
    }
}

impl FetchSection {
    /// Makes relative paths relative to the configuration file's folder.
    pub fn resolve(&mut self, base: &std::path::Path) {
        for p in [&mut self.key_file, &mut self.known_hosts, &mut self.ca_file]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// The options for a download into a store that PRECHECKs `required_bytes` when the
    /// server does not say the size.
    pub fn options(&self, required_bytes: u64) -> FetchOptions {
        FetchOptions {
            timeout: self.timeout,
            retries: self.retries,
            blksize: self.blksize.clamp(8, 65464),
            windowsize: self.windowsize.max(1),
            user: self.user.clone(),
            password: self.password.clone(),
            key_file: self.key_file.clone(),
            known_hosts: self.known_hosts.clone(),
            host_key_sha256: self.host_key_sha256.clone(),
            accept_any_host_key: self.accept_any_host_key,
            ca_file: self.ca_file.clone(),
            pin_sha256: self.pin_sha256,
            required_bytes,
        }
    }

    /// Applies a `wtpd fetch` command-line option (`--password`, `--key`, ...); false when the
    /// option is not one of them.
    pub fn set_option(&mut self, name: &str, value: Option<String>) -> Result<bool, String> {
        let v = || {
            value
                .clone()
                .ok_or_else(|| format!("--{name} needs a value"))
        };
        let num = |s: String| {
            s.parse::<u64>()
                .map_err(|_| format!("--{name} {s}: not a number"))
        };
        match name {
            "user" => self.user = Some(v()?),
            "password" => self.password = Some(v()?),
            "key" => self.key_file = Some(PathBuf::from(v()?)),
            "known-hosts" => self.known_hosts = Some(PathBuf::from(v()?)),
            "host-key" => self.host_key_sha256 = Some(v()?),
            "ca" => self.ca_file = Some(PathBuf::from(v()?)),
            "pin-sha256" => {
                self.pin_sha256 =
                    Some(parse_sha256_pin(&v()?).map_err(|e| format!("--{name}: {e}"))?)
            }
            "timeout" => {
                let s = v()?;
                let t: f64 = s
                    .parse()
                    .ok()
                    .filter(|t: &f64| (0.01..=3600.0).contains(t))
                    .ok_or_else(|| format!("--timeout {s}: seconds, 0.01 to 3600"))?;
                self.timeout = Duration::from_secs_f64(t);
            }
            "retries" => self.retries = num(v()?)?.min(100) as u32,
            "blksize" => self.blksize = num(v()?)?.clamp(8, 65464) as u16,
            "windowsize" => self.windowsize = num(v()?)?.clamp(1, 64) as u16,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_from_hex_with_or_without_colons() {
        let hex64: String = (0..32).map(|i| format!("{:02x}", i * 7)).collect();
        let want: Vec<u8> = (0..32).map(|i| (i * 7) as u8).collect();
        assert_eq!(parse_sha256_pin(&hex64).unwrap().to_vec(), want);
        let colons: Vec<String> = (0..32).map(|i| format!("{:02X}", i * 7)).collect();
        assert_eq!(parse_sha256_pin(&colons.join(":")).unwrap().to_vec(), want);
        for bad in [
            "",
            "abc",
            &hex64[..62],
            &format!("{hex64}00"),
            &hex64.replace('0', "g"),
        ] {
            assert!(parse_sha256_pin(bad).is_err(), "{bad}");
        }
        let mut f = FetchSection::default();
        assert!(f.set_option("pin-sha256", Some(hex64.clone())).unwrap());
        assert_eq!(f.options(0).pin_sha256.map(|p| p.to_vec()), Some(want));
        assert!(f.set_option("pin-sha256", Some("nope".into())).is_err());
        let t: FetchSection = toml::from_str(&format!("pin_sha256 = \"{hex64}\"\n")).unwrap();
        assert!(t.pin_sha256.is_some());
        assert!(toml::from_str::<FetchSection>("pin_sha256 = \"00\"\n").is_err());
    }
}
