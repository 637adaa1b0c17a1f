//! HTTPS GET over rustls (ring provider): TLS 1.2/1.3, the server's chain checked against a
//! configured CA file (or the system bundle) and its certificate against the URL's host name
//! or IP address. HTTP/1.1 with `Connection: close`; the body is read by Content-Length,
//! chunked transfer coding, or to the end of the connection. Redirects are not followed (an
//! image URL names the file).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::{connect_tcp, FetchError, FetchErrorKind, FetchOptions, FetchUrl, Sink};

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

fn io_kind(e: std::io::Error, what: &str) -> FetchErrorKind {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::WouldBlock | K::TimedOut => FetchErrorKind::TimedOut,
        K::InvalidData => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(t) => FetchErrorKind::Tls(t.to_string()),
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
    loop {
        let want = match head.length {
            Some(n) if total >= n => return Ok(total),
            Some(n) => (n - total).min(buf.len() as u64) as usize,
            None => buf.len(),
        };
        let k = match r.read(&mut buf[..want]) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // Without a length, the end of the connection ends the body; rustls reports a
            // close without close_notify as UnexpectedEof, which is a truncation.
            Err(e) => return Err(io_kind(e, "reading the body")),
        };
        if k == 0 {
            return match head.length {
                Some(n) => Err(FetchErrorKind::SizeMismatch {
                    expected: n,
                    got: total,
                }),
                None => Ok(total),
            };
        }
        sink.data(&buf[..k])?;
        total += k as u64;
    }
}

/// Downloads `url` (an `https://` URL) into `sink`.
pub fn fetch(url: &FetchUrl, opts: &FetchOptions, sink: &mut dyn Sink) -> Result<u64, FetchError> {
    let err = |k: FetchErrorKind| FetchError::new(url, k);
    let cfg = client_config(opts.ca_file.as_deref()).map_err(err)?;
    let name = ServerName::try_from(url.host.clone()).map_err(|e| {
        err(FetchErrorKind::Tls(format!(
            "server name {}: {e}",
            url.host
        )))
    })?;
    let conn =
        ClientConnection::new(cfg, name).map_err(|e| err(FetchErrorKind::Tls(e.to_string())))?;
    let tcp: TcpStream = connect_tcp(url, opts)?;
    let t = Some(opts.timeout.max(std::time::Duration::from_millis(10)));
    tcp.set_read_timeout(t)
        .and_then(|_| tcp.set_write_timeout(t))
        .map_err(|e| err(FetchErrorKind::Io(e.to_string())))?;
    let mut tls = StreamOwned::new(conn, tcp);
    let host = if url.port == 443 {
        url.authority().trim_end_matches(":443").to_string()
    } else {
        url.authority()
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: wtpd/{}\r\nAccept: */*\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        url.path,
        env!("CARGO_PKG_VERSION")
    );
    tls.write_all(request.as_bytes())
        .and_then(|_| tls.flush())
        .map_err(|e| err(io_kind(e, "sending the request")))?;
    let mut r = BufReader::with_capacity(64 * 1024, tls);
    read_response(&mut r, sink).map_err(err)
}

/// Reads an HTTP/1.1 response to the GET: the head (status 200 or a refusal), then the body
/// into `sink` by Content-Length, chunked coding, or to the end of the stream. Everything in it
/// comes from the server; public for the fuzz target (fuzz/fuzz_targets/http.rs).
pub fn read_response(r: &mut impl BufRead, sink: &mut dyn Sink) -> Result<u64, FetchErrorKind> {
    let head = read_head(r)?;
    match head.status {
        200 => {}
        404 | 410 => return Err(FetchErrorKind::NotFound),
        300..=399 => {
            return Err(FetchErrorKind::Refused(format!(
                "HTTP {} {} to {} (redirects are not followed)",
                head.status,
                head.reason,
                head.location.as_deref().unwrap_or("?")
            )))
        }
        s => return Err(FetchErrorKind::Refused(format!("HTTP {s} {}", head.reason))),
    }
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
