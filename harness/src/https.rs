//! acsim's HTTPS image server: the files of one folder (acsim's image folder, files named by
//! hardware type such as `ap1g8`, and `version.info`) over HTTPS, for APs told to fetch their
//! image out of band instead of through CAPWAP Image Data.
//!
//! hyper's HTTP/1.1 server over tokio-rustls (rustls on the ring provider, as the agent's
//! client), on a thread of its own with a current-thread tokio runtime, so that it runs the
//! same under acsim's runtime, a test's, or none. Files are streamed in 64 KiB chunks, never
//! held whole in memory.
//!
//! What it serves (RFC 9110):
//! - `GET` and `HEAD` of regular files directly in the folder; anything else there (a
//!   subfolder, `..`, a name starting with `.`, a percent-escape, a symlink leading out of the
//!   folder, a missing file) is `404`; other methods are `405` with `Allow: GET, HEAD`.
//! - `Accept-Ranges: bytes`, `Content-Length`, `Last-Modified` and a strong `ETag` made of the
//!   file's size, modification time (nanoseconds) and inode: a file replaced or rewritten gets
//!   a new one.
//! - One byte range per request (§14.1.2: `bytes=N-`, `bytes=N-M`, `bytes=-N`) is answered
//!   `206` with `Content-Range: bytes N-M/TOTAL`; a range that starts past the end is `416`
//!   with `Content-Range: bytes */TOTAL`; several ranges, or a Range header that does not
//!   parse, get the whole file (`200`), as §14.2 allows. `If-Range` with the current ETag (or
//!   the exact Last-Modified date) keeps the range; any other validator gets the whole file.
//!
//! One log line per request, when its response ends (so with the bytes actually sent):
//! `HTTPS: GET /ap1g8 from 127.0.0.1:53000 range bytes=943718- -> 206 (104858 bytes)`, or
//! `... -> 200 (943718 of 1048576 bytes, connection closed)` when the client went away early.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, info, warn};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncSeekExt, ReadBuf};

/// Bytes read from the file per body frame.
const CHUNK: usize = 64 * 1024;
/// Time a client has for the TLS handshake, and for each request head.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// One request as the server saw and answered it (for tests and benches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    /// The request target's path, as sent.
    pub path: String,
    pub peer: SocketAddr,
    /// The `Range` and `If-Range` headers, as sent.
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub status: u16,
    /// The body length the response announced (`Content-Length`; 0 for HEAD).
    pub length: u64,
    /// The body bytes handed to the connection so far.
    pub bytes: u64,
    /// The response ended (fully sent, or its connection closed).
    pub done: bool,
}

struct Shared {
    root: PathBuf,
    /// A lock, not an AtomicU64: 32-bit MIPS has no 64-bit atomics.
    bytes_sent: std::sync::Mutex<u64>,
    records: Mutex<Vec<RequestRecord>>,
}

/// The HTTPS image server; stopped by [`HttpsImageServer::stop`] or on drop.
pub struct HttpsImageServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HttpsImageServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsImageServer")
            .field("addr", &self.addr)
            .field("root", &self.shared.root)
            .finish()
    }
}

/// The server's TLS configuration: ring, TLS 1.2 and 1.3, ALPN `http/1.1`.
fn tls_config(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<rustls::ServerConfig, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("HTTPS certificate chain: {e}"))?;
    if certs.is_empty() {
        return Err("HTTPS certificate chain: no certificate in the PEM".into());
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("HTTPS private key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("HTTPS TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("HTTPS certificate and key: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

impl HttpsImageServer {
    /// Listens on `bind` (port 0 for any) and serves the files directly in `root` with the
    /// given certificate chain (leaf first) and private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub fn start(
        bind: SocketAddr,
        root: PathBuf,
        cert_chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, String> {
        let tls = tls_config(cert_chain_pem, key_pem)?;
        let root = root
            .canonicalize()
            .map_err(|e| format!("HTTPS image folder {}: {e}", root.display()))?;
        if !root.is_dir() {
            return Err(format!(
                "HTTPS image folder {}: not a folder",
                root.display()
            ));
        }
        let listener =
            std::net::TcpListener::bind(bind).map_err(|e| format!("HTTPS bind {bind}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("HTTPS bind {bind}: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("HTTPS bind {bind}: {e}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("HTTPS runtime: {e}"))?;
        let shared = Arc::new(Shared {
            root,
            bytes_sent: std::sync::Mutex::new(0),
            records: Mutex::new(Vec::new()),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("https-images".into())
            .spawn(move || {
                runtime.block_on(serve(listener, acceptor, s, stop_rx));
                // Connections still open are dropped with their tasks.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| format!("HTTPS server thread: {e}"))?;
        info!(
            "HTTPS: serving {} on https://{addr}/",
            shared.root.display()
        );
        Ok(HttpsImageServer {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The folder it serves (canonical).
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// Body bytes handed to the connections so far, over all requests (what a WAN link
    /// carries, less the HTTP heads and the TLS overhead).
    pub fn bytes_sent(&self) -> u64 {
        *self
            .shared
            .bytes_sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The requests so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared
            .records
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Stops listening and closes the open connections; returns when the server's thread
    /// has ended.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            info!("HTTPS: stopped serving on {}", self.addr);
        }
    }
}

impl Drop for HttpsImageServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    listener: std::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!("HTTPS: listener: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => match r {
                Ok((tcp, peer)) => {
                    tokio::spawn(connection(tcp, peer, acceptor.clone(), shared.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    warn!("HTTPS: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            info!("HTTPS: TLS handshake with {peer} failed: {e}");
            return;
        }
        Err(_) => {
            info!("HTTPS: TLS handshake with {peer} timed out");
            return;
        }
    };
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(respond(&shared, peer, req).await) }
    });
    let r = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tls), svc)
        .await;
    if let Err(e) = r {
        debug!("HTTPS: connection from {peer}: {e}");
    }
}

/// What a Range header asks of a file of a given size (RFC 9110 §14.1.2, §14.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// The whole file: no range, one that does not parse, or several.
    Full,
    /// Bytes `start..=end` (both within the file).
    Part { start: u64, end: u64 },
    /// No byte of the range is in the file: 416.
    Unsatisfiable,
}

/// Reads a `Range` header value for a file of `size` bytes.
pub fn parse_range(value: &str, size: u64) -> RangeAnswer {
    let v = value.trim();
    let Some((unit, set)) = v.split_once('=') else {
        return RangeAnswer::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeAnswer::Full;
    }
    let specs: Vec<&str> = set
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let [spec] = specs[..] else {
        // None (malformed) or several: the whole file.
        return RangeAnswer::Full;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return RangeAnswer::Full;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // A suffix: the last N bytes.
        return match num(last) {
            None => RangeAnswer::Full,
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(_) if size == 0 => RangeAnswer::Unsatisfiable,
            Some(n) => RangeAnswer::Part {
                start: size - n.min(size),
                end: size - 1,
            },
        };
    }
    let Some(start) = num(first) else {
        return RangeAnswer::Full;
    };
    let end = if last.is_empty() {
        None
    } else {
        match num(last) {
            Some(e) if e >= start => Some(e),
            // last < first, or junk: not a valid range, so ignored.
            _ => return RangeAnswer::Full,
        }
    };
    if start >= size {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Part {
        start,
        end: end.map_or(size - 1, |e| e.min(size - 1)),
    }
}

/// The file `path` names directly in `root` (canonical), or None: a name only, not starting
/// with `.`, without `/`, `\` or `%`, a regular file whose real path is directly in `root`.
pub async fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let name = path.strip_prefix('/')?;
    if name.is_empty()
        || name.starts_with('.')
        || name.contains(['/', '\\', '%'])
        || name.chars().any(char::is_control)
    {
        return None;
    }
    let real = tokio::fs::canonicalize(root.join(name)).await.ok()?;
    if real.parent()? != root {
        return None;
    }
    tokio::fs::metadata(&real)
        .await
        .ok()
        .filter(|m| m.is_file())
        .map(|_| real)
}

/// The strong entity tag of a file: size, modification time in nanoseconds, inode.
pub fn etag(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    format!("\"{:x}-{:x}-{:x}\"", meta.len(), ns, meta.ino())
}

/// Whether an `If-Range` value still names the file (§13.1.5): the same strong ETag, or
/// exactly its Last-Modified date.
fn if_range_holds(value: &str, etag: &str, last_modified: &str) -> bool {
    let v = value.trim();
    if v.starts_with('"') {
        return v == etag;
    }
    if v.starts_with("W/") {
        return false;
    }
    httpdate::parse_http_date(v).is_ok_and(|t| httpdate::fmt_http_date(t) == last_modified)
}

/// A response body: a few fixed bytes, or a part of a file read as it is sent. Counts what it
/// hands out and logs the request's line when dropped.
struct Body {
    fixed: Option<Bytes>,
    file: Option<tokio::fs::File>,
    left: u64,
    buf: Vec<u8>,
    track: Track,
}

struct Track {
    shared: Arc<Shared>,
    index: usize,
    line: String,
    length: u64,
    sent: u64,
}

impl Track {
    fn add(&mut self, n: usize) {
        self.sent += n as u64;
        *self
            .shared
            .bytes_sent
            .lock()
            .unwrap_or_else(|e| e.into_inner()) += n as u64;
        if let Ok(mut r) = self.shared.records.lock() {
            if let Some(r) = r.get_mut(self.index) {
                r.bytes = self.sent;
            }
        }
    }
}

impl Drop for Track {
    fn drop(&mut self) {
        if let Ok(mut r) = self.shared.records.lock() {
            if let Some(r) = r.get_mut(self.index) {
                r.done = true;
            }
        }
        if self.sent >= self.length {
            info!("{} ({} bytes)", self.line, self.sent);
        } else {
            info!(
                "{} ({} of {} bytes, connection closed)",
                self.line, self.sent, self.length
            );
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some(b) = this.fixed.take() {
            this.track.add(b.len());
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let Some(file) = this.file.as_mut() else {
            return Poll::Ready(None);
        };
        let want = this.left.min(this.buf.len() as u64) as usize;
        let mut rb = ReadBuf::new(&mut this.buf[..want]);
        match Pin::new(file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    // The file shrank under us: break the connection rather than send less
                    // than Content-Length says.
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was being served",
                    ))));
                }
                let data = Bytes::copy_from_slice(rb.filled());
                this.left -= n as u64;
                this.track.add(n);
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.fixed.is_none() && self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left + self.fixed.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// The answer before it gets its body.
struct Plan {
    status: StatusCode,
    headers: Vec<(header::HeaderName, String)>,
    /// A file part to send, or fixed bytes.
    file: Option<(tokio::fs::File, u64, u64)>,
    fixed: &'static [u8],
}

impl Plan {
    fn fixed(status: StatusCode, text: &'static [u8]) -> Plan {
        Plan {
            status,
            headers: vec![(header::CONTENT_TYPE, "text/plain".into())],
            file: None,
            fixed: text,
        }
    }
}

async fn plan(
    root: &Path,
    method: &Method,
    path: &str,
    range: Option<&str>,
    if_range: Option<&str>,
) -> Plan {
    let head = *method == Method::HEAD;
    if *method != Method::GET && !head {
        let mut p = Plan::fixed(StatusCode::METHOD_NOT_ALLOWED, b"method not allowed\n");
        p.headers.push((header::ALLOW, "GET, HEAD".into()));
        return p;
    }
    let not_found = || Plan::fixed(StatusCode::NOT_FOUND, b"not found\n");
    let Some(real) = resolve(root, path).await else {
        return not_found();
    };
    let Ok(mut file) = tokio::fs::File::open(&real).await else {
        return not_found();
    };
    let Ok(meta) = file.metadata().await else {
        return not_found();
    };
    if !meta.is_file() {
        return not_found();
    }
    let size = meta.len();
    let tag = etag(&meta);
    let modified = meta
        .modified()
        .map(httpdate::fmt_http_date)
        .unwrap_or_default();
    let mut headers = vec![
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (header::ACCEPT_RANGES, "bytes".into()),
        (header::ETAG, tag.clone()),
    ];
    if !modified.is_empty() {
        headers.push((header::LAST_MODIFIED, modified.clone()));
    }
    // Ranges only for GET (§14.2), and only while If-Range, when sent, still holds.
    let answer = match range {
        Some(r) if !head && if_range.is_none_or(|v| if_range_holds(v, &tag, &modified)) => {
            parse_range(r, size)
        }
        _ => RangeAnswer::Full,
    };
    let (status, start, len) = match answer {
        RangeAnswer::Full => (StatusCode::OK, 0, size),
        RangeAnswer::Part { start, end } => {
            headers.push((header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeAnswer::Unsatisfiable => {
            headers.push((header::CONTENT_RANGE, format!("bytes */{size}")));
            return Plan {
                status: StatusCode::RANGE_NOT_SATISFIABLE,
                headers,
                file: None,
                fixed: b"",
            };
        }
    };
    if start > 0 && file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return not_found();
    }
    headers.push((header::CONTENT_LENGTH, len.to_string()));
    Plan {
        status,
        headers,
        file: (!head).then_some((file, start, len)),
        fixed: b"",
    }
}

async fn respond(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let text = |n: header::HeaderName| {
        req.headers()
            .get(n)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let range = text(header::RANGE);
    let if_range = text(header::IF_RANGE);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let p = plan(
        &shared.root,
        &method,
        &path,
        range.as_deref(),
        if_range.as_deref(),
    )
    .await;
    let length = match &p.file {
        Some((_, _, len)) => *len,
        None => p.fixed.len() as u64,
    };
    let index = match shared.records.lock() {
        Ok(mut r) => {
            r.push(RequestRecord {
                method: method.to_string(),
                path: path.clone(),
                peer,
                range: range.clone(),
                if_range: if_range.clone(),
                status: p.status.as_u16(),
                length,
                bytes: 0,
                done: false,
            });
            r.len() - 1
        }
        Err(_) => usize::MAX,
    };
    let shown: String = path.chars().take(200).collect();
    let mut line = format!("HTTPS: {method} {shown} from {peer}");
    if let Some(r) = &range {
        let r: String = r.chars().take(100).collect();
        line.push_str(&format!(" range {r}"));
    }
    line.push_str(&format!(" -> {}", p.status.as_u16()));
    let (file, left) = match p.file {
        Some((f, _, len)) => (Some(f), len),
        None => (None, 0),
    };
    let body = Body {
        fixed: (!p.fixed.is_empty()).then(|| Bytes::from_static(p.fixed)),
        file,
        left,
        buf: if left > 0 { vec![0; CHUNK] } else { Vec::new() },
        track: Track {
            shared: shared.clone(),
            index,
            line,
            length,
            sent: 0,
        },
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = p.status;
    for (k, v) in p.headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{issue, CertSpec, Eku, KeyKind};
    use std::io::{Read, Write};

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        use RangeAnswer::*;
        let part = |start, end| Part { start, end };
        for (v, size, want) in [
            ("bytes=0-", 100, part(0, 99)),
            ("bytes=10-19", 100, part(10, 19)),
            ("bytes=10-1000", 100, part(10, 99)),
            ("bytes=99-", 100, part(99, 99)),
            ("bytes=-10", 100, part(90, 99)),
            ("bytes=-1000", 100, part(0, 99)),
            ("BYTES = 5-5", 100, part(5, 5)),
            ("bytes=100-", 100, Unsatisfiable),
            ("bytes=200-300", 100, Unsatisfiable),
            ("bytes=-0", 100, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-5", 0, Unsatisfiable),
            ("bytes=20-10", 100, Full),
            ("bytes=0-1,5-6", 100, Full),
            ("bytes=", 100, Full),
            ("bytes=abc-", 100, Full),
            ("bytes=+1-2", 100, Full),
            ("bytes=1-2x", 100, Full),
            ("bytes=-", 100, Full),
            ("items=0-1", 100, Full),
            ("0-1", 100, Full),
            ("bytes=99999999999999999999999-", 100, Full),
        ] {
            assert_eq!(parse_range(v, size), want, "{v} of {size}");
        }
    }

    #[test]
    fn if_range_needs_the_same_validator() {
        let lm = "Tue, 15 Nov 1994 08:12:31 GMT";
        assert!(if_range_holds("\"a-b-c\"", "\"a-b-c\"", lm));
        assert!(!if_range_holds("\"a-b-d\"", "\"a-b-c\"", lm));
        assert!(!if_range_holds("W/\"a-b-c\"", "\"a-b-c\"", lm));
        assert!(if_range_holds(lm, "\"x\"", lm));
        assert!(!if_range_holds(
            "Tue, 15 Nov 1994 08:12:32 GMT",
            "\"x\"",
            lm
        ));
        assert!(!if_range_holds("yesterday", "\"x\"", lm));
    }

    struct Lab {
        dir: PathBuf,
        ca: Vec<u8>,
        server: HttpsImageServer,
    }

    impl Drop for Lab {
        fn drop(&mut self) {
            self.server.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn lab(name: &str) -> Lab {
        let dir =
            std::env::temp_dir().join(format!("wtpd-harness-https-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("images");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let image: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        std::fs::write(root.join("ap1g8"), &image).unwrap();
        std::fs::write(root.join("version.info"), b"17.3.3.26\n").unwrap();
        std::fs::write(root.join("sub/ap1g6"), b"in a subfolder").unwrap();
        std::fs::write(root.join(".hidden"), b"dot file").unwrap();
        std::fs::write(dir.join("secret"), b"outside the folder").unwrap();
        std::os::unix::fs::symlink(dir.join("secret"), root.join("escape")).unwrap();
        std::os::unix::fs::symlink(root.join("version.info"), root.join("alias")).unwrap();
        let ca = issue(&CertSpec::ca("https test CA", KeyKind::EcP256), None).unwrap();
        let mut spec = CertSpec::leaf("localhost", KeyKind::EcP256, &[Eku::ServerAuth]);
        spec.ips = vec![std::net::IpAddr::from([127, 0, 0, 1])];
        let leaf = issue(&spec, Some(&ca)).unwrap();
        let server = HttpsImageServer::start(
            "127.0.0.1:0".parse().unwrap(),
            root,
            &leaf.cert.to_pem().unwrap(),
            &leaf.key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        Lab {
            dir,
            ca: ca.cert.to_pem().unwrap(),
            server,
        }
    }

    /// A raw HTTP/1.1 exchange over rustls: the request as written, the response read to
    /// the end of the connection (`Connection: close`).
    struct Answer {
        status: u16,
        head: String,
        body: Vec<u8>,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<String> {
            self.head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        }
    }

    fn exchange(lab: &Lab, method: &str, path: &str, extra: &str) -> Answer {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&lab.ca) {
            roots.add(c.unwrap()).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let conn = rustls::ClientConnection::new(
            Arc::new(cfg),
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
        )
        .unwrap();
        let tcp = std::net::TcpStream::connect(lab.server.local_addr()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        write!(
            tls,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut all = Vec::new();
        match tls.read_to_end(&mut all) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
            Err(e) => panic!("{e}"),
        }
        let split = all
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        let head = String::from_utf8_lossy(&all[..split]).into_owned();
        let status = head[9..12].parse().unwrap();
        Answer {
            status,
            head,
            body: all[split + 4..].to_vec(),
        }
    }

    #[test]
    fn serves_files_ranges_and_refusals() {
        let lab = lab("serve");
        let image = std::fs::read(lab.server.root().join("ap1g8")).unwrap();
        let size = image.len();

        let a = exchange(&lab, "GET", "/ap1g8", "");
        assert_eq!(a.status, 200, "{}", a.head);
        assert_eq!(a.body, image);
        assert_eq!(a.header("content-length"), Some(size.to_string()));
        assert_eq!(a.header("accept-ranges").as_deref(), Some("bytes"));
        let tag = a.header("etag").unwrap();
        assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
        let modified = a.header("last-modified").unwrap();
        assert!(modified.ends_with(" GMT"), "{modified}");

        let a = exchange(&lab, "GET", "/ap1g8", "Range: bytes=1000-1999\r\n");
        assert_eq!(a.status, 206, "{}", a.head);
        assert_eq!(a.body, &image[1000..2000]);
        assert_eq!(
            a.header("content-range"),
            Some(format!("bytes 1000-1999/{size}"))
        );
        let a = exchange(&lab, "GET", "/ap1g8", "Range: bytes=-10\r\n");
        assert_eq!((a.status, &a.body[..]), (206, &image[size - 10..]));
        let from = size * 9 / 10;
        let a = exchange(
            &lab,
            "GET",
            "/ap1g8",
            &format!("Range: bytes={from}-\r\nIf-Range: {tag}\r\n"),
        );
        assert_eq!((a.status, &a.body[..]), (206, &image[from..]));
        let a = exchange(
            &lab,
            "GET",
            "/ap1g8",
            &format!("Range: bytes={from}-\r\nIf-Range: {modified}\r\n"),
        );
        assert_eq!(a.status, 206, "{}", a.head);
        // Another validator: the whole (current) file.
        let a = exchange(
            &lab,
            "GET",
            "/ap1g8",
            &format!("Range: bytes={from}-\r\nIf-Range: \"other\"\r\n"),
        );
        assert_eq!((a.status, a.body.len()), (200, size));
        let a = exchange(&lab, "GET", "/ap1g8", "Range: bytes=0-1,5-6\r\n");
        assert_eq!((a.status, a.body.len()), (200, size));
        let a = exchange(&lab, "GET", "/ap1g8", &format!("Range: bytes={size}-\r\n"));
        assert_eq!(a.status, 416, "{}", a.head);
        assert_eq!(a.header("content-range"), Some(format!("bytes */{size}")));
        assert!(a.body.is_empty());

        let a = exchange(&lab, "HEAD", "/ap1g8", "Range: bytes=0-9\r\n");
        assert_eq!(a.status, 200, "{}", a.head);
        assert_eq!(a.header("content-length"), Some(size.to_string()));
        assert!(a.body.is_empty());

        let a = exchange(&lab, "POST", "/ap1g8", "Content-Length: 0\r\n");
        assert_eq!(a.status, 405, "{}", a.head);
        assert_eq!(a.header("allow").as_deref(), Some("GET, HEAD"));
        let a = exchange(&lab, "PUT", "/new", "Content-Length: 0\r\n");
        assert_eq!(a.status, 405, "{}", a.head);

        let a = exchange(&lab, "GET", "/version.info", "");
        assert_eq!((a.status, &a.body[..]), (200, &b"17.3.3.26\n"[..]));
        // A symlink to a file of the folder is that file.
        let a = exchange(&lab, "GET", "/alias", "");
        assert_eq!((a.status, &a.body[..]), (200, &b"17.3.3.26\n"[..]));

        for bad in [
            "/",
            "/missing",
            "/sub",
            "/sub/ap1g6",
            "/../secret",
            "/sub/../ap1g8",
            "/%2e%2e/secret",
            "/.hidden",
            "/escape",
            "//etc/passwd",
            "/..",
        ] {
            let a = exchange(&lab, "GET", bad, "");
            assert_eq!(a.status, 404, "{bad}: {}", a.head);
            assert!(!a.body.starts_with(b"outside"), "{bad}");
        }

        let recs = lab.server.requests();
        let r = &recs[1];
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.status),
            ("GET", "/ap1g8", 206)
        );
        assert_eq!(r.range.as_deref(), Some("bytes=1000-1999"));
        assert_eq!((r.length, r.bytes, r.done), (1000, 1000, true));
        let sent: u64 = recs.iter().map(|r| r.bytes).sum();
        assert_eq!(lab.server.bytes_sent(), sent);
    }

    #[test]
    fn refuses_a_bad_key_or_folder() {
        let dir =
            std::env::temp_dir().join(format!("wtpd-harness-https-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let e = HttpsImageServer::start(any, dir.clone(), b"", b"").unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
        let ca = issue(&CertSpec::ca("x", KeyKind::EcP256), None).unwrap();
        let pem = ca.cert.to_pem().unwrap();
        let key = ca.key.private_key_to_pem_pkcs8().unwrap();
        let e = HttpsImageServer::start(any, dir.join("missing"), &pem, &key).unwrap_err();
        assert!(e.contains("image folder"), "{e}");
        let mut s = HttpsImageServer::start(any, dir.clone(), &pem, &key).unwrap();
        let addr = s.local_addr();
        s.stop();
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "still listening"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
