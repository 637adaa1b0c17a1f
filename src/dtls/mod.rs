//! DTLS (RFC 5415 §2.4) with OpenSSL, driven through in-memory datagram queues: no sockets.
//!
//! A [`DtlsSession`] takes the datagrams that arrived for it ([`DtlsSession::handle_datagram`],
//! CAPWAP DTLS header included), hands out the datagrams to send ([`DtlsSession::poll_transmit`],
//! each with the 4-byte CAPWAP DTLS header in front), takes plaintext to protect
//! ([`DtlsSession::send`]) and gives back what it decrypted ([`DtlsSession::recv`]).
//! Handshake retransmission is driven by [`DtlsSession::timeout`] and
//! [`DtlsSession::handle_timeout`], so a lost flight is sent again.

use std::path::PathBuf;
use std::time::Duration;

/// How the two ends authenticate.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// X.509: our certificate chain and key (PEM files), the trust anchors that the peer's
    /// chain must reach, and, on the client, the name the controller's certificate must carry
    /// (subjectAltName DNS or IP); `None` checks the chain only.
    Certificate { cert: PathBuf, key: PathBuf, ca: PathBuf, peer_name: Option<String> },
    /// Pre-shared key. On a server, `identity` is the one identity it accepts.
    Psk { identity: String, key: Vec<u8> },
}

/// Everything a DTLS context needs.
#[derive(Debug, Clone)]
pub struct DtlsConfig {
    pub credentials: Credentials,
    /// OpenSSL cipher list; `None` gives the CAPWAP defaults for the credential kind.
    pub ciphers: Option<String>,
    /// Append session secrets in NSS key log format to this file.
    pub keylog: Option<PathBuf>,
    /// Path MTU for handshake records.
    pub mtu: usize,
}

/// Why a context or a session failed. The text says exactly why, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtlsError {
    /// A file could not be read or parsed (certificate, key, CA).
    Config(String),
    /// The handshake failed: peer certificate not trusted, unknown PSK identity, no shared
    /// cipher, ... with OpenSSL's reason.
    Handshake(String),
    /// The handshake did not finish after all retransmissions.
    HandshakeTimeout,
    /// A fatal alert or a protocol error after the handshake.
    Protocol(String),
}

impl std::fmt::Display for DtlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DtlsError::Config(s) => write!(f, "DTLS configuration: {s}"),
            DtlsError::Handshake(s) => write!(f, "DTLS handshake failed: {s}"),
            DtlsError::HandshakeTimeout => write!(f, "DTLS handshake timed out"),
            DtlsError::Protocol(s) => write!(f, "DTLS error: {s}"),
        }
    }
}

impl std::error::Error for DtlsError {}

/// What a session reports after it was fed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtlsEvent {
    /// The handshake finished; the text names version and cipher for the log.
    Connected(String),
    /// The peer sent close_notify.
    Closed,
    /// The session is dead.
    Failed(DtlsError),
}

/// An OpenSSL context for one role, built once and shared by sessions.
pub struct DtlsContext {
    _private: (),
}

impl DtlsContext {
    pub fn client(cfg: &DtlsConfig) -> Result<Self, DtlsError> {
        let _ = cfg;
        todo!()
    }
    pub fn server(cfg: &DtlsConfig) -> Result<Self, DtlsError> {
        let _ = cfg;
        todo!()
    }
}

/// One DTLS association with one peer.
pub struct DtlsSession {
    _private: (),
}

impl DtlsSession {
    /// Starts a client handshake; the first flight is ready in `poll_transmit`.
    pub fn connect(ctx: &DtlsContext) -> Result<Self, DtlsError> {
        let _ = ctx;
        todo!()
    }
    /// A server session waiting for a ClientHello.
    pub fn accept(ctx: &DtlsContext) -> Result<Self, DtlsError> {
        let _ = ctx;
        todo!()
    }
    /// Feeds one received datagram (starting with the CAPWAP DTLS header).
    pub fn handle_datagram(&mut self, datagram: &[u8]) {
        let _ = datagram;
        todo!()
    }
    /// The next datagram to send, CAPWAP DTLS header included.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        todo!()
    }
    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        todo!()
    }
    /// Encrypts one CAPWAP packet into one record (a datagram in `poll_transmit`).
    pub fn send(&mut self, plaintext: &[u8]) -> Result<(), DtlsError> {
        let _ = plaintext;
        todo!()
    }
    /// The next decrypted CAPWAP packet.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        todo!()
    }
    /// Time until the handshake retransmission timer fires, while handshaking.
    pub fn timeout(&self) -> Option<Duration> {
        todo!()
    }
    /// Retransmits the last flight when its timer has fired.
    pub fn handle_timeout(&mut self) {
        todo!()
    }
    pub fn is_established(&self) -> bool {
        todo!()
    }
    /// Sends close_notify (a datagram in `poll_transmit`).
    pub fn close(&mut self) {
        todo!()
    }
}
