//! HTTPS GET over rustls (ring provider): TLS 1.2/1.3, the server's chain checked against a
//! configured CA file (or the system bundle) and its certificate against the URL's host name
//! or IP address, or else the server's certificate pinned by its SHA-256
//! ([`FetchOptions::pin_sha256`]). HTTP/1.1 with `Connection: close`; the body is read by
//! Content-Length, chunked transfer coding, or to the end of the connection. Redirects are not
//! followed (an image URL names the file).
//!
//! A download with a Content-Length survives a broken connection: it reconnects and asks for
//! the rest with `Range` and `If-Range` (RFC 9110 §14), logging
//! `HTTPS: connection lost at 943718 of 1048576 bytes (...): resuming with Range bytes=943718-`
//! and `HTTPS: resumed at 943718 (206)`; see [`fetch`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use log::{info, warn};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    SignatureScheme, StreamOwned,
};

use super::{connect_tcp, FetchError, FetchErrorKind, FetchOptions, FetchUrl, Sink};
use crate::image::download::hex;

const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Longest status line or header line accepted, and most header lines.
const MAX_LINE: usize = 8192;
const MAX_HEADERS: usize = 100;

fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, FetchErrorKind> {
    let path = ca_file.unwrap_or(Path::new(SYSTEM_BUNDLE));
    let mut store = RootCertStore::empty();
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| FetchErrorKind::Io(format!("CA file {}: {e}", path.display())))?;
    for c in iter {
        let c = c.map_err(|e| FetchErrorKind::Io(format!("CA file {}: {e}", path.display())))?;
        // A certificate webpki cannot use as an anchor is skipped, as a system bundle may
        // hold some; an empty store is refused below.
        let _ = store.add(c);
    }
    if store.is_empty() {
        return Err(FetchErrorKind::Io(format!(
            "CA file {}: no usable certificate",
            path.display()
        )));
    }
    Ok(store)
}

/// The TLS client configuration: ring, safe defaults, the given trust anchors.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, FetchErrorKind> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchErrorKind::Tls(e.to_string()))?
        .with_root_certificates(roots(ca_file)?)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Trusts the server whose end-entity certificate hashes (SHA-256 of its DER) to a pin,
/// whatever signed it and whatever names it carries: an AP told the certificate by its
/// controller needs no CA. The handshake signatures are still checked, with the ring
/// provider's algorithms, so the server must hold the certificate's private key.
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

/// A certificate that is not the pinned one.
#[derive(Debug)]
struct PinMismatch {
    got: [u8; 32],
    pin: [u8; 32],
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "certificate pin mismatch: the server's certificate has sha256 {}, pinned {}",
            hex(&self.got),
            hex(&self.pin)
        )
    }
}

impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let d = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        let mut got = [0u8; 32];
        got.copy_from_slice(d.as_ref());
        // Not secret: a plain comparison.
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(PinMismatch { got, pin: self.pin })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The TLS client configuration for a pinned server certificate (see `PinVerifier`): ring,
/// safe defaults, no CA.
pub fn client_config_pinned(pin: [u8; 32]) -> Result<Arc<ClientConfig>, FetchErrorKind> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinVerifier {
        pin,
        algorithms: provider.signature_verification_algorithms,
    });
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchErrorKind::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// rustls's words for a TLS failure; a pin mismatch in its own.
fn tls_text(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(o)) => {
            format!("invalid peer certificate: {o}")
        }
        e => e.to_string(),
    }
}

fn io_kind(e: std::io::Error, what: &str) -> FetchErrorKind {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::WouldBlock | K::TimedOut => FetchErrorKind::TimedOut,
        K::InvalidData => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(t) => FetchErrorKind::Tls(tls_text(t)),
            None => FetchErrorKind::Protocol(format!("{what}: {e}")),
        },
        K::UnexpectedEof => FetchErrorKind::Protocol(format!("{what}: connection closed early")),
        _ => FetchErrorKind::Protocol(format!("{what}: {e}")),
    }
}

/// Reads one CRLF-terminated line, bounded.
fn read_line(r: &mut impl BufRead, line: &mut Vec<u8>) -> Result<(), FetchErrorKind> {
    line.clear();
    let n = r
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', line)
        .map_err(|e| io_kind(e, "reading the response head"))?;
    if n == 0 {
        return Err(FetchErrorKind::Protocol(
            "connection closed before the response".into(),
        ));
    }
    if !line.ends_with(b"\n") {
        return Err(FetchErrorKind::Protocol("response line too long".into()));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(())
}

/// The parts of the response head that matter.
#[derive(Debug, Default, PartialEq, Eq)]
struct Head {
    status: u16,
    reason: String,
    length: Option<u64>,
    chunked: bool,
    location: Option<String>,
    /// The validators of the answer, and the part of the file it carries (a 206).
    etag: Option<String>,
    last_modified: Option<String>,
    content_range: Option<String>,
}

fn read_head(r: &mut impl BufRead) -> Result<Head, FetchErrorKind> {
    let mut line = Vec::with_capacity(256);
    read_line(r, &mut line)?;
    let text = String::from_utf8_lossy(&line).into_owned();
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(FetchErrorKind::Protocol(format!(
            "not an HTTP/1.x response: {:.60}",
            text
        )));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| FetchErrorKind::Protocol(format!("bad status line: {:.60}", text)))?;
    let mut head = Head {
        status,
        reason: parts.next().unwrap_or("").trim().to_string(),
        ..Head::default()
    };
    for _ in 0..MAX_HEADERS {
        read_line(r, &mut line)?;
        if line.is_empty() {
            return Ok(head);
        }
        let text = String::from_utf8_lossy(&line);
        let Some((k, v)) = text.split_once(':') else {
            return Err(FetchErrorKind::Protocol(format!(
                "bad header line: {:.60}",
                text
            )));
        };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                let n = v
                    .parse::<u64>()
                    .map_err(|_| FetchErrorKind::Protocol(format!("Content-Length {v:.30}")))?;
                if head.length.is_some_and(|m| m != n) {
                    return Err(FetchErrorKind::Protocol("two Content-Lengths".into()));
                }
                head.length = Some(n);
            }
            "transfer-encoding" => {
                head.chunked = v
                    .rsplit(',')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"))
            }
            "location" => head.location = Some(v.to_string()),
            "etag" => head.etag = Some(v.to_string()),
            "last-modified" => head.last_modified = Some(v.to_string()),
            "content-range" => head.content_range = Some(v.to_string()),
            _ => {}
        }
    }
    Err(FetchErrorKind::Protocol("too many header lines".into()))
}

/// Copies the body into the sink.
fn read_body(
    r: &mut impl BufRead,
    head: &Head,
    sink: &mut dyn Sink,
) -> Result<u64, FetchErrorKind> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    if head.chunked {
        let mut line = Vec::with_capacity(64);
        loop {
            read_line(r, &mut line)?;
            let text = String::from_utf8_lossy(&line);
            let size_text = text.split(';').next().unwrap_or("").trim();
            let mut left = u64::from_str_radix(size_text, 16)
                .map_err(|_| FetchErrorKind::Protocol(format!("bad chunk size {size_text:.20}")))?;
            if left == 0 {
                // Trailers, up to the empty line.
                for _ in 0..MAX_HEADERS {
                    read_line(r, &mut line)?;
                    if line.is_empty() {
                        return Ok(total);
                    }
                }
                return Err(FetchErrorKind::Protocol("too many trailer lines".into()));
            }
            while left > 0 {
                let k = left.min(buf.len() as u64) as usize;
                r.read_exact(&mut buf[..k])
                    .map_err(|e| io_kind(e, "reading a chunk"))?;
                sink.data(&buf[..k])?;
                total += k as u64;
                left -= k as u64;
            }
            read_line(r, &mut line)?;
            if !line.is_empty() {
                return Err(FetchErrorKind::Protocol(
                    "chunk not followed by CRLF".into(),
                ));
            }
        }
    }
    let Some(n) = head.length else {
        // No length: the body ends with the connection.
        loop {
            let k = match r.read(&mut buf) {
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // rustls reports a close without close_notify as UnexpectedEof, which is a
                // truncation.
                Err(e) => return Err(io_kind(e, "reading the body")),
            };
            if k == 0 {
                return Ok(total);
            }
            sink.data(&buf[..k])?;
            total += k as u64;
        }
    };
    copy_body(r, n, &mut total, &mut buf, sink).map_err(Failure::kind)?;
    Ok(total)
}

/// Copies body bytes into the sink until `*received` reaches `total`. A connection that ends
/// or fails first is [`Failure::Lost`] (reported as a size mismatch, or as its I/O error);
/// TLS refusing a record, or the sink refusing the bytes, is final.
fn copy_body(
    r: &mut impl BufRead,
    total: u64,
    received: &mut u64,
    buf: &mut [u8],
    sink: &mut dyn Sink,
) -> Result<(), Failure> {
    while *received < total {
        let want = (total - *received).min(buf.len() as u64) as usize;
        match r.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(Failure::Lost(
                    "closed by the server before the end".into(),
                    FetchErrorKind::SizeMismatch {
                        expected: total,
                        got: *received,
                    },
                ))
            }
            Ok(k) => {
                sink.data(&buf[..k]).map_err(Failure::Final)?;
                *received += k as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if is_tls(&e) => return Err(Failure::Final(io_kind(e, "reading the body"))),
            Err(e) => return Err(Failure::Lost(lost_why(&e), io_kind(e, "reading the body"))),
        }
    }
    Ok(())
}

/// Reads through to the TLS stream and remembers when the connection itself failed (its end,
/// or an I/O error that is not TLS's), as opposed to a bad answer: the first is worth a
/// reconnection, the second is not.
struct Watch<S> {
    inner: S,
    lost: Option<String>,
}

impl<S: Read> Read for Watch<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if !buf.is_empty() => {
                self.lost
                    .get_or_insert_with(|| "closed by the server".into());
                Ok(0)
            }
            Err(e) if e.kind() != std::io::ErrorKind::Interrupted && !is_tls(&e) => {
                self.lost.get_or_insert_with(|| lost_why(&e));
                Err(e)
            }
            r => r,
        }
    }
}

type Conn = BufReader<Watch<StreamOwned<ClientConnection, TcpStream>>>;

/// Whether an I/O error of the TLS stream is TLS refusing something (certificate, alert,
/// corrupt record), which a new connection would not fix.
fn is_tls(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some())
}

/// A connection's loss in a few words, for the log.
fn lost_why(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::UnexpectedEof => "connection closed".into(),
        K::WouldBlock | K::TimedOut => "no data within the timeout".into(),
        _ => e.to_string(),
    }
}

/// Why one request failed.
enum Failure {
    /// The connection could not be made or broke: what happened (for the log), and the error
    /// to report when no retry is left.
    Lost(String, FetchErrorKind),
    /// The server, TLS or the sink refused: no retry helps.
    Final(FetchErrorKind),
}

impl Failure {
    fn kind(self) -> FetchErrorKind {
        match self {
            Failure::Lost(_, k) | Failure::Final(k) => k,
        }
    }
}

/// Where to resume: the first byte wanted and the validator of the first answer.
struct Resume<'a> {
    from: u64,
    if_range: Option<&'a str>,
}

/// Connects, sends the GET (with `Range` and `If-Range` when resuming) and reads the head.
fn request(
    url: &FetchUrl,
    opts: &FetchOptions,
    cfg: &Arc<ClientConfig>,
    name: &ServerName<'static>,
    resume: Option<&Resume>,
) -> Result<(Conn, Head), Failure> {
    let conn = ClientConnection::new(cfg.clone(), name.clone())
        .map_err(|e| Failure::Final(FetchErrorKind::Tls(e.to_string())))?;
    let tcp: TcpStream =
        connect_tcp(url, opts).map_err(|e| Failure::Lost(e.kind.to_string(), e.kind))?;
    let t = Some(opts.timeout.max(std::time::Duration::from_millis(10)));
    tcp.set_read_timeout(t)
        .and_then(|_| tcp.set_write_timeout(t))
        .map_err(|e| Failure::Final(FetchErrorKind::Io(e.to_string())))?;
    let mut tls = StreamOwned::new(conn, tcp);
    let host = if url.port == 443 {
        url.authority().trim_end_matches(":443").to_string()
    } else {
        url.authority()
    };
    let mut range = String::new();
    if let Some(r) = resume {
        range = format!("Range: bytes={}-\r\n", r.from);
        if let Some(v) = r.if_range {
            range.push_str(&format!("If-Range: {v}\r\n"));
        }
    }
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: wtpd/{}\r\nAccept: */*\r\nAccept-Encoding: identity\r\n{range}Connection: close\r\n\r\n",
        url.path,
        env!("CARGO_PKG_VERSION")
    );
    // The TLS handshake happens here.
    if let Err(e) = tls.write_all(request.as_bytes()).and_then(|_| tls.flush()) {
        return Err(if is_tls(&e) {
            Failure::Final(io_kind(e, "sending the request"))
        } else {
            Failure::Lost(lost_why(&e), io_kind(e, "sending the request"))
        });
    }
    let mut r = BufReader::with_capacity(
        64 * 1024,
        Watch {
            inner: tls,
            lost: None,
        },
    );
    match read_head(&mut r) {
        Ok(head) => Ok((r, head)),
        Err(k) => Err(match r.get_mut().lost.take() {
            Some(why) => Failure::Lost(why, k),
            None => Failure::Final(k),
        }),
    }
}

/// The answer to the first GET: 200, or the error it stands for.
fn check_status(head: &Head) -> Result<(), FetchErrorKind> {
    match head.status {
        200 => Ok(()),
        404 | 410 => Err(FetchErrorKind::NotFound),
        300..=399 => Err(FetchErrorKind::Refused(format!(
            "HTTP {} {} to {} (redirects are not followed)",
            head.status,
            head.reason,
            head.location.as_deref().unwrap_or("?")
        ))),
        s => Err(FetchErrorKind::Refused(format!("HTTP {s} {}", head.reason))),
    }
}

/// The answer to a resuming GET: only a 206 with the rest of the same `total` bytes, from
/// `from` on, continues the download; the sink cannot rewind, so anything else ends it.
fn check_resumed(head: &Head, from: u64, total: u64) -> Result<(), FetchErrorKind> {
    let changed = |what: String| {
        FetchErrorKind::Refused(format!(
            "{what} to the resume at {from} of {total} bytes: the image changed on the server \
             (or the server does not serve byte ranges); the download must start again"
        ))
    };
    match head.status {
        206 => {}
        200 => return Err(changed(format!("HTTP 200 {}", head.reason))),
        416 => return Err(changed(format!("HTTP 416 {}", head.reason))),
        s => {
            return Err(match check_status(head) {
                Err(k) => k,
                Ok(()) => FetchErrorKind::Refused(format!("HTTP {s}")),
            })
        }
    }
    let range = head.content_range.as_deref().unwrap_or("");
    let parsed = range
        .strip_prefix("bytes ")
        .and_then(|r| r.split_once('/'))
        .and_then(|(span, size)| {
            let (a, b) = span.trim().split_once('-')?;
            Some((
                a.trim().parse::<u64>().ok()?,
                b.trim().parse::<u64>().ok()?,
                size.trim().parse::<u64>().ok()?,
            ))
        });
    match parsed {
        Some((a, b, t)) if a == from && b + 1 == total && t == total => {}
        Some((_, _, t)) if t != total => {
            return Err(changed(format!(
                "HTTP 206 for {t} bytes (Content-Range {range:.60})"
            )))
        }
        _ => {
            return Err(FetchErrorKind::Protocol(format!(
                "HTTP 206 to Range bytes={from}- with Content-Range {range:.60}"
            )))
        }
    }
    if head.chunked || head.length.is_some_and(|n| n != total - from) {
        return Err(FetchErrorKind::Protocol(format!(
            "HTTP 206 for bytes {from}-{} with a body of another length",
            total - 1
        )));
    }
    Ok(())
}

/// The TLS configuration `opts` ask for: the pinned certificate, or the CA file (or the
/// system bundle).
pub fn client_config_for(opts: &FetchOptions) -> Result<Arc<ClientConfig>, FetchErrorKind> {
    match opts.pin_sha256 {
        Some(pin) => client_config_pinned(pin),
        None => client_config(opts.ca_file.as_deref()),
    }
}

/// Downloads `url` (an `https://` URL) into `sink`.
///
/// When the connection breaks in the body of an answer with a Content-Length (an I/O error,
/// no data within `opts.timeout`, its end before the last byte), it connects again and asks
/// for the rest (`Range: bytes=N-`, with `If-Range` and the first answer's strong ETag, else
/// its Last-Modified, else none and only the size is checked). Up to `opts.retries` attempts
/// in a row may fail without a new byte arriving; each has `opts.timeout` to connect and for
/// each read. Only a 206 for exactly the missing bytes of the same size continues; a 200 (the
/// file changed, or the server ignores ranges) ends the download with an error, as bytes
/// already in the sink cannot be taken back. A chunked answer (no size) is not resumed.
pub fn fetch(url: &FetchUrl, opts: &FetchOptions, sink: &mut dyn Sink) -> Result<u64, FetchError> {
    let err = |k: FetchErrorKind| FetchError::new(url, k);
    let cfg = client_config_for(opts).map_err(err)?;
    let name = ServerName::try_from(url.host.clone()).map_err(|e| {
        err(FetchErrorKind::Tls(format!(
            "server name {}: {e}",
            url.host
        )))
    })?;
    let (mut conn, head) = request(url, opts, &cfg, &name, None).map_err(|f| err(f.kind()))?;
    check_status(&head).map_err(err)?;
    let total = match head.length {
        Some(n) if !head.chunked => n,
        _ => {
            sink.begin(None).map_err(err)?;
            return read_body(&mut conn, &head, sink).map_err(err);
        }
    };
    sink.begin(Some(total)).map_err(err)?;
    let validator = head
        .etag
        .as_deref()
        .filter(|t| t.starts_with('"'))
        .or(head.last_modified.as_deref());
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0u64;
    // Failed attempts since the last byte arrived.
    let mut fails = 0u32;
    loop {
        let before = received;
        let (why, last) = match copy_body(&mut conn, total, &mut received, &mut buf, sink) {
            Ok(()) => return Ok(total),
            Err(Failure::Final(k)) => return Err(err(k)),
            Err(Failure::Lost(why, k)) => (why, k),
        };
        if received > before {
            fails = 0;
        }
        if fails >= opts.retries {
            return Err(err(last));
        }
        info!(
            "HTTPS: connection lost at {received} of {total} bytes ({why}): resuming with Range bytes={received}-"
        );
        let resume = Resume {
            from: received,
            if_range: validator,
        };
        conn = loop {
            fails += 1;
            // A moment for the link to come back, longer after each failure.
            let pause = std::time::Duration::from_millis(250 * u64::from(fails.min(8)));
            std::thread::sleep(pause.min(opts.timeout));
            match request(url, opts, &cfg, &name, Some(&resume)) {
                Ok((c, h)) => {
                    check_resumed(&h, received, total).map_err(err)?;
                    info!("HTTPS: resumed at {received} ({})", h.status);
                    break c;
                }
                Err(Failure::Final(k)) => return Err(err(k)),
                Err(Failure::Lost(why, k)) => {
                    if fails >= opts.retries {
                        return Err(err(k));
                    }
                    warn!(
                        "HTTPS: resuming at {received} failed ({why}): attempt {fails} of {}",
                        opts.retries
                    );
                }
            }
        };
    }
}

/// Reads an HTTP/1.1 response to the GET: the head (status 200 or a refusal), then the body
/// into `sink` by Content-Length, chunked coding, or to the end of the stream. Everything in it
/// comes from the server; public for the fuzz target (fuzz/fuzz_targets/http.rs).
pub fn read_response(r: &mut impl BufRead, sink: &mut dyn Sink) -> Result<u64, FetchErrorKind> {
    let head = read_head(r)?;
    check_status(&head)?;
    sink.begin(if head.chunked { None } else { head.length })?;
    read_body(r, &head, sink)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct VecSink(Vec<u8>);
    impl Sink for VecSink {
        fn begin(&mut self, _: Option<u64>) -> Result<(), FetchErrorKind> {
            Ok(())
        }
        fn data(&mut self, b: &[u8]) -> Result<(), FetchErrorKind> {
            self.0.extend_from_slice(b);
            Ok(())
        }
    }

    #[test]
    fn reads_heads_and_bodies() {
        let mut r: &[u8] =
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: nginx\r\n\r\nhelloEXTRA";
        let h = read_head(&mut r).unwrap();
        assert_eq!((h.status, h.length, h.chunked), (200, Some(5), false));
        let mut s = VecSink(Vec::new());
        assert_eq!(read_body(&mut r, &h, &mut s).unwrap(), 5);
        assert_eq!(s.0, b"hello");

        let mut r: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n";
        let h = read_head(&mut r).unwrap();
        assert!(h.chunked);
        let mut s = VecSink(Vec::new());
        assert_eq!(read_body(&mut r, &h, &mut s).unwrap(), 5);
        assert_eq!(s.0, b"abcde");

        let mut r: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort";
        let h = read_head(&mut r).unwrap();
        let mut s = VecSink(Vec::new());
        assert_eq!(
            read_body(&mut r, &h, &mut s),
            Err(FetchErrorKind::SizeMismatch {
                expected: 9,
                got: 5
            })
        );
    }

    #[test]
    fn a_resume_continues_only_with_the_rest_of_the_same_file() {
        let head = |text: &str| read_head(&mut text.as_bytes()).unwrap();
        let h = head("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 900-999/1000\r\nContent-Length: 100\r\nETag: \"a\"\r\nLast-Modified: x\r\n\r\n");
        assert_eq!(h.content_range.as_deref(), Some("bytes 900-999/1000"));
        assert_eq!(
            (h.etag.as_deref(), h.last_modified.as_deref()),
            (Some("\"a\""), Some("x"))
        );
        assert_eq!(check_resumed(&h, 900, 1000), Ok(()));
        // Another start, another size, another length: refused.
        assert!(matches!(
            check_resumed(&h, 800, 1000),
            Err(FetchErrorKind::Protocol(_))
        ));
        let e = check_resumed(&h, 900, 2000).unwrap_err();
        assert!(e.to_string().contains("image changed on the server"), "{e}");
        let h = head("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 900-999/1000\r\nContent-Length: 99\r\n\r\n");
        assert!(check_resumed(&h, 900, 1000).is_err());
        let h = head("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 900-949/1000\r\n\r\n");
        assert!(check_resumed(&h, 900, 1000).is_err());
        let h = head("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes */1000\r\n\r\n");
        assert!(check_resumed(&h, 900, 1000).is_err());
        // The server sent the whole (maybe new) file: the sink cannot rewind.
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        let e = check_resumed(&h, 900, 1000).unwrap_err();
        assert!(
            e.to_string().contains(
                "HTTP 200 OK to the resume at 900 of 1000 bytes: the image changed on the server"
            ),
            "{e}"
        );
        let h = head("HTTP/1.1 416 Range Not Satisfiable\r\n\r\n");
        assert!(check_resumed(&h, 900, 1000).is_err());
        let h = head("HTTP/1.1 404 Not Found\r\n\r\n");
        assert_eq!(check_resumed(&h, 900, 1000), Err(FetchErrorKind::NotFound));
    }

    #[test]
    fn refuses_malformed_heads() {
        for bad in [
            &b""[..],
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: y",
        ] {
            let mut r = bad;
            assert!(
                read_head(&mut r).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_LINE * 2));
        let mut r = long.as_bytes();
        assert!(read_head(&mut r).is_err());
        let mut r: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        let h = read_head(&mut r).unwrap();
        let mut s = VecSink(Vec::new());
        assert!(read_body(&mut r, &h, &mut s).is_err());
    }
}
