//! Accepting DTLS clients without keeping anything per client until its cookie comes back
//! (RFC 6347 §4.2.1).
//!
//! A server that made a session for every ClientHello could be made to hold thousands of
//! half-open handshakes by anyone who can send UDP with forged source addresses (a flood from
//! 3,000 spoofed ports took acsim from 10 to 133 MB). [`DtlsListener`] answers a ClientHello
//! that has no valid cookie with a HelloVerifyRequest and forgets it; only a ClientHello whose
//! cookie was made for its source address and port becomes a [`DtlsSession`].
//!
//! The listener owns one `SSL` and reuses it for every unknown peer: OpenSSL's
//! `DTLSv1_listen` clears it, reads the ClientHello, writes the HelloVerifyRequest, and when a
//! cookie verifies it leaves the `SSL` in the state a handshake continues from (the server's
//! message sequence numbers after a HelloVerifyRequest, the ClientHello buffered), which a
//! fresh `SSL` fed the second ClientHello would not be. The cookie is [`CookieKey`]'s HMAC,
//! which the listener also checks itself first, so junk never reaches OpenSSL.

use std::net::SocketAddr;
use std::os::raw::{c_int, c_void};
use std::sync::Arc;

use openssl::error::ErrorStack;
use openssl::ssl::SslStream;

use super::context::{DtlsContext, Role};
use super::cookie::{client_hello_cookie, CookieKey, HelloError};
use super::queue::DatagramQueue;
use super::session::{new_stream, ssl_ptr};
use super::shared::{stack_text, Shared};
use super::{DtlsError, DtlsSession};
use crate::time::Instant;

extern "C" {
    // libssl since 1.1.0 (openssl-sys does not declare it) and libcrypto's BIO_ADDR, which
    // DTLSv1_listen writes the client's address into (it clears it: our BIO has none).
    fn DTLSv1_listen(s: *mut openssl_sys::SSL, client: *mut c_void) -> c_int;
    fn BIO_ADDR_new() -> *mut c_void;
    fn BIO_ADDR_free(a: *mut c_void);
}

/// What the listener made of a datagram from a peer without a session.
#[derive(Debug)]
pub enum Listened {
    /// Send this HelloVerifyRequest (CAPWAP DTLS header included) back; nothing was kept.
    Reply(Vec<u8>),
    /// The cookie was good: a session whose handshake goes on (its ServerHello flight is
    /// ready in `poll_transmit`).
    Accepted(DtlsSession),
    /// Not a ClientHello, or one OpenSSL refused: dropped, nothing kept.
    Dropped(ListenDrop),
}

/// Why a datagram was dropped by the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenDrop {
    /// Not a whole, unfragmented ClientHello.
    NotHello(HelloError),
    /// OpenSSL refused the ClientHello (the text says why).
    Refused(String),
}

impl std::fmt::Display for ListenDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenDrop::NotHello(e) => write!(f, "{e}"),
            ListenDrop::Refused(s) => write!(f, "ClientHello refused: {s}"),
        }
    }
}

/// The server's stateless front door; one per server, shared by all peers.
pub struct DtlsListener {
    stream: SslStream<DatagramQueue>,
    shared: Arc<Shared>,
    key: Arc<CookieKey>,
}

impl std::fmt::Debug for DtlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsListener").finish_non_exhaustive()
    }
}

impl DtlsListener {
    /// A listener for a server context.
    pub fn new(ctx: &DtlsContext) -> Result<Self, DtlsError> {
        let key = match (&ctx.cookie_key, ctx.role) {
            (Some(k), Role::Server) => k.clone(),
            _ => {
                return Err(DtlsError::Config(
                    "a DTLS listener needs a server context".into(),
                ))
            }
        };
        let (stream, shared) = new_stream(ctx)?;
        Ok(DtlsListener {
            stream,
            shared,
            key,
        })
    }

    /// Handles one datagram (CAPWAP DTLS header included) from `peer`, which has no session.
    pub fn handle(
        &mut self,
        ctx: &DtlsContext,
        datagram: &[u8],
        peer: SocketAddr,
        now: Instant,
    ) -> Listened {
        let cookie = match client_hello_cookie(datagram) {
            Ok(c) => c,
            Err(e) => return Listened::Dropped(ListenDrop::NotHello(e)),
        };
        let good = !cookie.is_empty() && self.key.verify(peer, now, cookie);
        if !good {
            // Answer without OpenSSL: the HelloVerifyRequest is a few fixed bytes around the
            // cookie, and nothing of the ClientHello is needed but its record sequence number.
            return Listened::Reply(hello_verify_request(datagram, &self.key.cookie(peer, now)));
        }
        self.shared.set_cookie_peer(peer, now);
        let q = self.stream.get_mut();
        q.clear_incoming();
        q.push_incoming(&datagram[4..]);
        // SAFETY: a valid SSL owned by our stream; the BIO_ADDR is ours and freed below.
        let r = unsafe {
            let addr = BIO_ADDR_new();
            if addr.is_null() {
                return Listened::Dropped(ListenDrop::Refused("out of memory".into()));
            }
            let r = DTLSv1_listen(ssl_ptr(self.stream.ssl()), addr);
            BIO_ADDR_free(addr);
            r
        };
        if r <= 0 {
            let text = stack_text(&ErrorStack::get());
            let q = self.stream.get_mut();
            q.clear_incoming();
            while q.pop_outgoing().is_some() {}
            return Listened::Dropped(ListenDrop::Refused(text));
        }
        // The SSL now belongs to this peer; the next unknown peer gets a fresh one.
        match new_stream(ctx) {
            Ok((stream, shared)) => {
                let mine = std::mem::replace(&mut self.stream, stream);
                let mine_shared = std::mem::replace(&mut self.shared, shared);
                Listened::Accepted(DtlsSession::from_stream(mine, mine_shared).resume())
            }
            Err(e) => Listened::Dropped(ListenDrop::Refused(e.to_string())),
        }
    }
}

/// The HelloVerifyRequest answering the ClientHello in `hello` (RFC 6347 §4.2.1, §4.3.2),
/// CAPWAP DTLS header included: record version DTLS 1.0 and server_version DTLS 1.0 (the
/// RFC's advice for a server that may speak either), epoch 0, the ClientHello's record
/// sequence number (as OpenSSL does, §4.2.1), message_seq 0.
fn hello_verify_request(hello: &[u8], cookie: &[u8]) -> Vec<u8> {
    const HANDSHAKE: u8 = 22;
    const HELLO_VERIFY_REQUEST: u8 = 3;
    const DTLS1_0: [u8; 2] = [0xfe, 0xff];
    // The ClientHello's 6-byte record sequence number (the parser checked the header).
    let seq = hello.get(4 + 5..4 + 11).unwrap_or(&[0; 6]);
    let body_len = 2 + 1 + cookie.len();
    let mut d = Vec::with_capacity(4 + 13 + 12 + body_len);
    d.extend_from_slice(&super::DTLS_PREAMBLE);
    d.push(HANDSHAKE);
    d.extend_from_slice(&DTLS1_0);
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(seq);
    d.extend_from_slice(&((12 + body_len) as u16).to_be_bytes());
    let len = (body_len as u32).to_be_bytes();
    d.push(HELLO_VERIFY_REQUEST);
    d.extend_from_slice(&len[1..]);
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(&[0, 0, 0]);
    d.extend_from_slice(&len[1..]);
    d.extend_from_slice(&DTLS1_0);
    d.push(cookie.len() as u8);
    d.extend_from_slice(cookie);
    d
}
