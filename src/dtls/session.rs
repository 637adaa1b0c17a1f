//! One DTLS association driven through a [`DatagramQueue`]: the handshake, retransmission,
//! record protection and shutdown.

use std::collections::VecDeque;
use std::os::raw::{c_long, c_uint, c_void};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use openssl::error::ErrorStack;
use openssl::ssl::{ErrorCode, Ssl, SslRef, SslStream};
use openssl::x509::X509VerifyResult;
use openssl_sys as ffi;

use super::context::DtlsContext;
use super::queue::DatagramQueue;
use super::shared::{shared_index, stack_text, Shared};
use super::{DtlsError, DtlsEvent};

/// The CAPWAP DTLS header (RFC 5415 §4.2): version 0, type 1 (DTLS payload), 3 reserved bytes.
pub const DTLS_PREAMBLE: [u8; 4] = [0x01, 0, 0, 0];

/// `SSL_ctrl` commands behind the `DTLSv1_get_timeout` / `DTLSv1_handle_timeout` macros, which
/// openssl-sys does not wrap (values from OpenSSL's ssl.h, identical in 1.1.1 and 3.x).
const DTLS_CTRL_GET_TIMEOUT: i32 = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: i32 = 74;

/// Handshake flights are retransmitted this many times; when the timer fires again the
/// handshake has timed out (1+2+4+8+16+32+60 s with the default base).
pub const MAX_RETRANSMITS: u32 = 6;

/// Largest DTLS record plaintext (2^14) plus slack.
const READ_BUF: usize = 16 * 1024 + 256;

extern "C" {
    // In libssl since 1.1.1; openssl-sys does not declare it.
    fn DTLS_set_timer_cb(
        s: *mut ffi::SSL,
        cb: Option<unsafe extern "C" fn(*mut ffi::SSL, c_uint) -> c_uint>,
    );
}

/// OpenSSL asks for the next retransmission timeout: the configured base first, then doubling
/// up to 60 s (RFC 6347 §4.2.4.1), like its built-in timer but with a settable base.
unsafe extern "C" fn timer_cb(s: *mut ffi::SSL, previous_us: c_uint) -> c_uint {
    const MAX_US: c_uint = 60_000_000;
    if previous_us != 0 {
        return previous_us.saturating_mul(2).min(MAX_US);
    }
    let mut initial = 1_000_000;
    if let Ok(idx) = shared_index() {
        // SAFETY: the slot holds an `Arc<Shared>` set by `DtlsSession::new` (the openssl crate
        // stores ex-data as a boxed value), alive as long as the SSL.
        let p = ffi::SSL_get_ex_data(s, idx.as_raw()) as *const Arc<Shared>;
        if let Some(shared) = p.as_ref() {
            initial = shared.initial_timeout_us.load(Ordering::Relaxed).max(1);
        }
    }
    initial
}

/// The raw `SSL*` behind a reference. `SslRef` is an opaque type whose references *are* the
/// pointers (that is what foreign-types' `as_ptr` does); we avoid a dependency for this cast.
pub(crate) fn ssl_ptr(ssl: &SslRef) -> *mut ffi::SSL {
    ssl as *const SslRef as *mut ffi::SSL
}

/// OpenSSL reasons that mean credentials were refused. Alerts from the peer arrive as
/// SSL_AD_REASON_OFFSET + the TLS alert number (RFC 8446 §6): bad_record_mac 20 (a wrong PSK
/// shows as the peer failing to read our Finished), bad_certificate 42, unsupported 43,
/// revoked 44, expired 45, certificate_unknown 46, unknown_ca 48, access_denied 49,
/// decrypt_error 51, unknown_psk_identity 115. Local ones from <openssl/sslerr.h>:
/// SSL_R_BAD_SIGNATURE 123, SSL_R_CERTIFICATE_VERIFY_FAILED 134, SSL_R_PSK_IDENTITY_NOT_FOUND
/// 223, SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC 281.
fn is_credential_error(e: &openssl::error::Error) -> bool {
    const ALERTS: [i32; 10] = [20, 42, 43, 44, 45, 46, 48, 49, 51, 115];
    const LOCAL: [i32; 4] = [123, 134, 223, 281];
    let r = e.reason_code();
    let offset = openssl_sys::SSL_AD_REASON_OFFSET;
    LOCAL.contains(&r) || (r > offset && ALERTS.contains(&(r - offset)))
}

fn error_text(e: &openssl::ssl::Error) -> String {
    if let Some(stack) = e.ssl_error() {
        let text = stack_text(stack);
        // Alerts the peer sent arrive as "tlsv1 alert unknown ca" and the like.
        if text.contains(" alert ") {
            return format!("peer sent fatal alert: {text}");
        }
        return text;
    }
    if let Some(io) = e.io_error() {
        return format!("I/O: {io}");
    }
    format!("{e}")
}

/// A configured `SSL` over a fresh queue, with its [`Shared`] ex-data and our retransmission
/// timer.
pub(crate) fn new_stream(
    ctx: &DtlsContext,
) -> Result<(SslStream<DatagramQueue>, Arc<Shared>), DtlsError> {
    let cfg = |what: &str, e: ErrorStack| DtlsError::Config(format!("{what}: {}", stack_text(&e)));
    let mut ssl = Ssl::new(&ctx.ctx).map_err(|e| cfg("SSL_new", e))?;
    ctx.configure(&mut ssl)?;
    let shared = Arc::new(Shared::default());
    let us = ctx.initial_retransmit.as_micros().clamp(1, 60_000_000) as u32;
    shared.initial_timeout_us.store(us, Ordering::Relaxed);
    ssl.set_ex_data(shared_index()?, shared.clone());
    // SAFETY: a valid SSL; the callback only reads ex-data that lives as long as the SSL.
    unsafe { DTLS_set_timer_cb(ssl_ptr(&ssl), Some(timer_cb)) };
    let stream = SslStream::new(ssl, DatagramQueue::with_prefix(&DTLS_PREAMBLE))
        .map_err(|e| cfg("SSL BIO", e))?;
    Ok((stream, shared))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    Established,
    Closed,
    Failed,
}

/// One DTLS association with one peer.
pub struct DtlsSession {
    stream: SslStream<DatagramQueue>,
    shared: Arc<Shared>,
    state: State,
    events: VecDeque<DtlsEvent>,
    plaintext: VecDeque<Vec<u8>>,
    retransmits: u32,
}

impl std::fmt::Debug for DtlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsSession")
            .field("state", &self.state)
            .field("retransmits", &self.retransmits)
            .finish_non_exhaustive()
    }
}

impl DtlsSession {
    fn new(ctx: &DtlsContext) -> Result<Self, DtlsError> {
        let (stream, shared) = new_stream(ctx)?;
        Ok(Self::from_stream(stream, shared))
    }

    /// A session around an `SSL` that is ready to go on (a fresh one, or the one
    /// [`DtlsListener`](super::DtlsListener) accepted a cookie on).
    pub(crate) fn from_stream(stream: SslStream<DatagramQueue>, shared: Arc<Shared>) -> Self {
        DtlsSession {
            stream,
            shared,
            state: State::Handshaking,
            events: VecDeque::new(),
            plaintext: VecDeque::new(),
            retransmits: 0,
        }
    }

    /// Continues the handshake the listener started (its ClientHello is buffered in OpenSSL).
    pub(crate) fn resume(mut self) -> Self {
        self.drive();
        self
    }

    /// Starts a client handshake; the first flight is ready in `poll_transmit`.
    pub fn connect(ctx: &DtlsContext) -> Result<Self, DtlsError> {
        let mut s = Self::new(ctx)?;
        s.drive();
        Ok(s)
    }

    /// A server session waiting for a ClientHello.
    pub fn accept(ctx: &DtlsContext) -> Result<Self, DtlsError> {
        Self::new(ctx)
    }

    /// Feeds one received datagram (starting with the CAPWAP DTLS header). Datagrams without
    /// the DTLS header (type 1), empty ones, and any arriving after the session ended are
    /// dropped; records OpenSSL cannot authenticate are dropped by OpenSSL (RFC 6347 §4.1.2.7).
    pub fn handle_datagram(&mut self, datagram: &[u8]) {
        if matches!(self.state, State::Closed | State::Failed) {
            return;
        }
        match datagram {
            [0x01, 0, 0, 0, payload @ ..] if !payload.is_empty() => {
                self.stream.get_mut().push_incoming(payload);
                self.drive();
            }
            _ => {}
        }
    }

    /// The next datagram to send, CAPWAP DTLS header included.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.stream.get_mut().pop_outgoing()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        self.events.pop_front()
    }

    /// Encrypts one CAPWAP packet into one record (a datagram in `poll_transmit`).
    pub fn send(&mut self, plaintext: &[u8]) -> Result<(), DtlsError> {
        if self.state != State::Established {
            return Err(DtlsError::Protocol(format!(
                "cannot send: session is {:?}",
                self.state
            )));
        }
        if plaintext.is_empty() {
            return Err(DtlsError::Protocol("cannot send an empty record".into()));
        }
        match self.stream.ssl_write(plaintext) {
            Ok(n) if n == plaintext.len() => Ok(()),
            Ok(n) => Err(DtlsError::Protocol(format!(
                "short write: {n} of {} bytes",
                plaintext.len()
            ))),
            Err(e) => Err(DtlsError::Protocol(format!(
                "sending {} bytes: {}",
                plaintext.len(),
                error_text(&e)
            ))),
        }
    }

    /// The next decrypted CAPWAP packet.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        self.plaintext.pop_front()
    }

    /// Gives back a buffer that [`poll_transmit`](Self::poll_transmit) or
    /// [`recv`](Self::recv) handed out, once sent or handled, so that the next datagram or
    /// packet reuses it: a steady exchange then does not allocate.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.stream.get_mut().recycle(buf);
    }

    /// Time until the handshake retransmission timer fires, while handshaking.
    pub fn timeout(&self) -> Option<Duration> {
        if self.state != State::Handshaking {
            return None;
        }
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        // SAFETY: DTLSv1_get_timeout only reads the SSL and writes the timeval.
        let r = unsafe {
            ffi::SSL_ctrl(
                ssl_ptr(self.stream.ssl()),
                DTLS_CTRL_GET_TIMEOUT,
                0,
                &mut tv as *mut libc::timeval as *mut c_void,
            )
        };
        if r <= 0 {
            return None;
        }
        let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
        let micros = u32::try_from(tv.tv_usec).unwrap_or(0).min(999_999);
        Some(Duration::new(secs, micros * 1000))
    }

    /// Retransmits the last flight when its timer has fired (OpenSSL checks this against the
    /// real clock; an early call does nothing). After [`MAX_RETRANSMITS`] retransmissions the
    /// next expiry fails the session with [`DtlsError::HandshakeTimeout`].
    pub fn handle_timeout(&mut self) {
        if self.state != State::Handshaking || self.timeout() != Some(Duration::ZERO) {
            return;
        }
        if self.retransmits >= MAX_RETRANSMITS {
            self.fail(DtlsError::HandshakeTimeout);
            return;
        }
        // SAFETY: a valid SSL owned by our stream.
        let r: c_long = unsafe {
            ffi::SSL_ctrl(
                ssl_ptr(self.stream.ssl()),
                DTLS_CTRL_HANDLE_TIMEOUT,
                0,
                std::ptr::null_mut(),
            )
        };
        if r > 0 {
            self.retransmits += 1;
        } else if r < 0 {
            // OpenSSL's own limit (too many timeouts) or a write failure.
            let _ = ErrorStack::get();
            self.fail(DtlsError::HandshakeTimeout);
        }
    }

    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Sends close_notify (a datagram in `poll_transmit`).
    pub fn close(&mut self) {
        if self.state == State::Established {
            let _ = self.stream.shutdown();
        }
        if matches!(self.state, State::Established | State::Handshaking) {
            self.state = State::Closed;
        }
        self.stream.get_mut().clear_incoming();
    }

    /// Negotiated version, cipher and the peer's certificate subject (or PSK identity), for
    /// the log; `None` before the handshake finished.
    pub fn peer_summary(&self) -> Option<String> {
        if self.state != State::Established {
            return None;
        }
        let ssl = self.stream.ssl();
        let mut s = self.description();
        if let Some(cert) = ssl.peer_certificate() {
            let subject: Vec<String> = cert
                .subject_name()
                .entries()
                .map(|e| {
                    let key = e.object().nid().short_name().unwrap_or("?");
                    let val = e.data().to_string().unwrap_or_else(|_| "?".into());
                    format!("{key}={val}")
                })
                .collect();
            s.push_str(&format!(", peer {}", subject.join(",")));
        } else if let Some(id) = ssl.psk_identity() {
            s.push_str(&format!(", PSK identity '{}'", String::from_utf8_lossy(id)));
        }
        Some(s)
    }

    /// Handshake retransmissions done by [`DtlsSession::handle_timeout`] so far.
    pub fn retransmissions(&self) -> u32 {
        self.retransmits
    }

    fn description(&self) -> String {
        let ssl = self.stream.ssl();
        let cipher = ssl
            .current_cipher()
            .map(|c| c.name())
            .unwrap_or("(no cipher)");
        format!("{} {}", ssl.version_str(), cipher)
    }

    fn fail(&mut self, e: DtlsError) {
        self.state = State::Failed;
        self.events.push_back(DtlsEvent::Failed(e));
        self.stream.get_mut().clear_incoming();
    }

    /// Advances the handshake, then decrypts whatever records are waiting.
    fn drive(&mut self) {
        if self.state == State::Handshaking {
            match self.stream.do_handshake() {
                Ok(()) => {
                    self.state = State::Established;
                    let d = self.description();
                    self.events.push_back(DtlsEvent::Connected(d));
                }
                Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                    return
                }
                Err(e) => {
                    let failure = self.handshake_failure(&e);
                    self.fail(failure);
                    return;
                }
            }
        }
        if self.state == State::Established {
            self.read_records();
        }
    }

    fn read_records(&mut self) {
        // One decryption buffer per thread, not per session: a controller holds a thousand
        // sessions, and 16 KiB each was a quarter of its memory per AP.
        thread_local! {
            static READ: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        READ.with(|b| {
            let mut b = b.borrow_mut();
            if b.len() < READ_BUF {
                *b = vec![0u8; READ_BUF];
            }
            self.read_records_into(&mut b)
        })
    }

    fn read_records_into(&mut self, read_buf: &mut [u8]) {
        loop {
            match self.stream.ssl_read(read_buf) {
                Ok(0) => break,
                Ok(n) => {
                    let mut p = self.stream.get_mut().take_buf();
                    p.extend_from_slice(&read_buf[..n]);
                    self.plaintext.push_back(p);
                }
                Err(e) => {
                    match e.code() {
                        ErrorCode::WANT_READ | ErrorCode::WANT_WRITE => {}
                        ErrorCode::ZERO_RETURN => {
                            // The peer closed; answer with our close_notify (TLS 1.2 §7.2.1).
                            let _ = self.stream.shutdown();
                            self.state = State::Closed;
                            self.events.push_back(DtlsEvent::Closed);
                            self.stream.get_mut().clear_incoming();
                        }
                        _ => {
                            let text = error_text(&e);
                            self.fail(DtlsError::Protocol(text));
                        }
                    }
                    break;
                }
            }
        }
    }

    /// Why the handshake failed, as precisely as OpenSSL lets us tell.
    /// Why the handshake failed, classified at the source: credentials refused (ours or the
    /// peer's) or another failure.
    fn handshake_failure(&self, e: &openssl::ssl::Error) -> DtlsError {
        // Our callbacks' own reasons (an unknown PSK identity, ...) are credential refusals.
        if let Some(r) = self.shared.reason() {
            return DtlsError::Credentials(r);
        }
        let verify = self.stream.ssl().verify_result();
        if verify != X509VerifyResult::OK {
            return DtlsError::Credentials(format!(
                "certificate verify failed: {}",
                verify.error_string()
            ));
        }
        let text = error_text(e);
        let credentials = e
            .ssl_error()
            .is_some_and(|stack| stack.errors().iter().any(is_credential_error));
        if credentials {
            DtlsError::Credentials(text)
        } else {
            DtlsError::Handshake(text)
        }
    }
}
