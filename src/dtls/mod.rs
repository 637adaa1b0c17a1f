//! DTLS (RFC 5415 §2.4) with OpenSSL, driven through in-memory datagram queues: no sockets.
//!
//! A [`DtlsSession`] takes the datagrams that arrived for it ([`DtlsSession::handle_datagram`],
//! CAPWAP DTLS header included), hands out the datagrams to send ([`DtlsSession::poll_transmit`],
//! each with the 4-byte CAPWAP DTLS header in front), takes plaintext to protect
//! ([`DtlsSession::send`]) and gives back what it decrypted ([`DtlsSession::recv`]).
//! Handshake retransmission is driven by [`DtlsSession::timeout`] and
//! [`DtlsSession::handle_timeout`], so a lost flight is sent again.
//!
//! DTLS 1.2 is preferred and 1.0 accepted. Certificate mode verifies the peer chain against
//! `ca` (the client also checks `peer_name` with OpenSSL's host/IP matching; the server
//! requires a client certificate); PSK mode accepts exactly the configured identity. Failure
//! reasons carry OpenSSL's verify result or error text ("certificate verify failed: hostname
//! mismatch", "unknown PSK identity 'x'", "peer sent fatal alert: tlsv1 alert unknown ca").
//!
//! A server takes new peers through a [`DtlsListener`]: the HelloVerifyRequest cookie exchange
//! (RFC 6347 §4.2.1, cookies from [`cookie`]), so that nothing is kept for a client until it has
//! shown that it receives at its source address.

mod context;
pub mod cookie;
mod listen;
mod queue;
mod session;
mod shared;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

/// How the two ends authenticate.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// X.509: our certificate chain and key (PEM files), the trust anchors that the peer's
    /// chain must reach, and, on the client, the name the controller's certificate must carry
    /// (subjectAltName DNS or IP); `None` checks the chain only.
    Certificate {
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
        peer_name: Option<String>,
    },
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
    /// The handshake failed because credentials were refused, by us or by the peer: a
    /// certificate not trusted, expired or for another name, an unknown PSK identity or a
    /// wrong key (RFC 5415 §2.3.2 DTLSAuthenticateFail; counted by FailedDTLSAuthFailCount,
    /// §4.8.3). Classified where it happens, from OpenSSL's verify result and error codes.
    Credentials(String),
    /// The handshake failed for another reason (no shared cipher or version, a protocol
    /// error), with OpenSSL's reason.
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
            DtlsError::Credentials(s) | DtlsError::Handshake(s) => {
                write!(f, "DTLS handshake failed: {s}")
            }
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

pub use context::{DtlsContext, DEFAULT_CERT_CIPHERS, DEFAULT_PSK_CIPHERS};
pub use listen::{DtlsListener, ListenDrop, Listened};
pub use session::{DtlsSession, DTLS_PREAMBLE, MAX_RETRANSMITS};

/// The epoch of the first DTLS record in a datagram (CAPWAP DTLS header included): 0 for the
/// records of a handshake before its ChangeCipherSpec, 1 and up for protected records.
/// `None` for anything else.
pub fn record_epoch(datagram: &[u8]) -> Option<u16> {
    match datagram {
        // CAPWAP DTLS header, then type, version (2 bytes), epoch (2 bytes), sequence (6),
        // length (2).
        [0x01, 0, 0, 0, _ty, _v0, _v1, e0, e1, rest @ ..] if rest.len() >= 8 => {
            Some(u16::from_be_bytes([*e0, *e1]))
        }
        _ => None,
    }
}

/// Whether a datagram starts a new DTLS handshake: its first record is an unprotected
/// (epoch 0) handshake record holding a ClientHello. A peer that sends one on an address
/// with an established session has started over (a WTP that restarted and happens to send
/// from the same port); no DTLS peer sends one inside a live session.
pub fn is_client_hello(datagram: &[u8]) -> bool {
    const HANDSHAKE: u8 = 22;
    const CLIENT_HELLO: u8 = 1;
    record_epoch(datagram) == Some(0)
        && datagram.get(4) == Some(&HANDSHAKE)
        && datagram.get(4 + 13) == Some(&CLIENT_HELLO)
}
