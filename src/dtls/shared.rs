//! What the OpenSSL callbacks a context installs share with the session they run for, and
//! OpenSSL's error text: the pieces both [`super::context`] and [`super::session`] need, kept
//! here so that neither has to reach into the other (session uses context, never the reverse).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::Ssl;

use super::DtlsError;
use crate::time::Instant;

/// What a session's OpenSSL callbacks share with the session itself (kept in the `SSL`'s
/// ex-data): a reason that OpenSSL's error queue cannot express, and the retransmission base.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) reason: Mutex<Option<String>>,
    pub(crate) initial_timeout_us: std::sync::atomic::AtomicU32,
    /// Server: the address the datagram being handled came from, and when, for the cookie
    /// callbacks (OpenSSL knows no addresses here: the BIO is a queue).
    pub(crate) cookie_peer: Mutex<Option<(SocketAddr, Instant)>>,
}

impl Shared {
    pub(crate) fn set_reason(&self, r: String) {
        let mut g = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(r);
        }
    }
    pub(crate) fn set_cookie_peer(&self, peer: SocketAddr, now: Instant) {
        *self.cookie_peer.lock().unwrap_or_else(|e| e.into_inner()) = Some((peer, now));
    }
    pub(crate) fn cookie_peer(&self) -> Option<(SocketAddr, Instant)> {
        *self.cookie_peer.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The ex-data slot of [`Shared`] on every `SSL` we create.
pub(crate) fn shared_index() -> Result<Index<Ssl, Arc<Shared>>, DtlsError> {
    static INDEX: OnceLock<Option<Index<Ssl, Arc<Shared>>>> = OnceLock::new();
    INDEX
        .get_or_init(|| Ssl::new_ex_index::<Arc<Shared>>().ok())
        .ok_or_else(|| DtlsError::Config("OpenSSL: no ex-data index available".into()))
}

/// OpenSSL's error queue as one line for the operator.
pub(crate) fn stack_text(e: &ErrorStack) -> String {
    let parts: Vec<String> = e
        .errors()
        .iter()
        .map(|err| {
            let reason = err.reason().unwrap_or("unknown OpenSSL error");
            match err.data() {
                Some(d) if !d.is_empty() => format!("{reason} ({d})"),
                _ => reason.to_string(),
            }
        })
        .collect();
    if parts.is_empty() {
        "no OpenSSL error recorded".into()
    } else {
        parts.join("; ")
    }
}
