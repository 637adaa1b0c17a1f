//! Building the OpenSSL context for one role from a [`DtlsConfig`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslOptions, SslVerifyMode,
    SslVersion,
};

use super::cookie::CookieKey;
use super::shared::{shared_index, stack_text};
use super::{Credentials, DtlsConfig, DtlsError};

/// CAPWAP defaults with certificates (RFC 5415 §2.4.4: TLS_RSA_WITH_AES_128_CBC_SHA is
/// mandatory; current controllers prefer the ECDHE GCM suites).
pub const DEFAULT_CERT_CIPHERS: &str =
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256:AES128-SHA";
/// CAPWAP default with a pre-shared key (TLS_PSK_WITH_AES_128_CBC_SHA).
pub const DEFAULT_PSK_CIPHERS: &str = "PSK-AES128-CBC-SHA";

/// The CAPWAP DTLS header costs 4 bytes of every datagram.
const PREAMBLE_LEN: usize = 4;
/// The smallest `mtu` we accept: OpenSSL refuses DTLS MTUs below 256 bytes minus overhead.
const MIN_MTU: usize = 256 + PREAMBLE_LEN;
/// Initial handshake retransmission timeout (RFC 6347 §4.2.4.1), doubled up to 60 s.
const DEFAULT_RETRANSMIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

/// An OpenSSL context for one role, built once and shared by sessions (a clone shares the
/// same OpenSSL context: many agents in one process, as `acsim load` runs them, use one).
#[derive(Clone)]
pub struct DtlsContext {
    pub(crate) ctx: SslContext,
    pub(crate) role: Role,
    /// Client only: the name the controller certificate must carry.
    pub(crate) peer_name: Option<String>,
    /// Datagram payload budget for OpenSSL: the configured MTU minus the CAPWAP header.
    pub(crate) dtls_mtu: u32,
    pub(crate) initial_retransmit: Duration,
    /// Server only: the secret of the HelloVerifyRequest cookies.
    pub(crate) cookie_key: Option<Arc<CookieKey>>,
}

impl std::fmt::Debug for DtlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsContext")
            .field("role", &self.role)
            .field("peer_name", &self.peer_name)
            .field("dtls_mtu", &self.dtls_mtu)
            .field("initial_retransmit", &self.initial_retransmit)
            .finish()
    }
}

impl DtlsContext {
    /// A context for the WTP side: presents its certificate (or PSK identity) and checks the
    /// controller's chain against `ca` and, when set, its name against `peer_name`.
    pub fn client(cfg: &DtlsConfig) -> Result<Self, DtlsError> {
        Self::build(cfg, Role::Client)
    }

    /// A context for the controller side: requires and checks a client certificate, or accepts
    /// exactly the configured PSK identity.
    pub fn server(cfg: &DtlsConfig) -> Result<Self, DtlsError> {
        Self::build(cfg, Role::Server)
    }

    /// Sets the first handshake retransmission timeout (default 1 s, doubling to 60 s) for
    /// sessions created afterwards. Tests use a short one to exercise loss quickly. Values are
    /// kept within 20 ms..=60 s: OpenSSL treats a timer with less than 15 ms left as expired.
    pub fn set_retransmit_timeout(&mut self, initial: Duration) {
        self.initial_retransmit = initial.clamp(Duration::from_millis(20), Duration::from_secs(60));
    }

    fn build(cfg: &DtlsConfig, role: Role) -> Result<Self, DtlsError> {
        if cfg.mtu < MIN_MTU || cfg.mtu > 65535 {
            return Err(DtlsError::Config(format!(
                "mtu {} out of range {MIN_MTU}..=65535",
                cfg.mtu
            )));
        }
        let ossl = |what: &str, e: openssl::error::ErrorStack| {
            DtlsError::Config(format!("{what}: {}", stack_text(&e)))
        };
        let mut b =
            SslContextBuilder::new(SslMethod::dtls()).map_err(|e| ossl("SSL_CTX_new", e))?;
        // DTLS 1.2 preferred, 1.0 still accepted (older controllers).
        b.set_min_proto_version(Some(SslVersion::DTLS1))
            .map_err(|e| ossl("min version", e))?;
        b.set_max_proto_version(Some(SslVersion::DTLS1_2))
            .map_err(|e| ossl("max version", e))?;
        // OpenSSL 3 at its default security level 1 refuses SHA-1 handshake signatures, which
        // DTLS 1.0 needs, and may refuse plain RSA key exchange; RFC 5415 mandates
        // TLS_RSA_WITH_AES_128_CBC_SHA and controllers still speak DTLS 1.0, so level 0. The
        // cipher list below is what actually restricts the suites.
        b.set_security_level(0);
        // We set the MTU ourselves (there is no socket to query) so that handshake records fit
        // the configured path MTU minus the CAPWAP header.
        b.set_options(SslOptions::NO_QUERY_MTU);
        // Records are protected one plaintext at a time; no renegotiation, no tickets needed.
        b.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::NO_TICKET);

        let default_ciphers = match cfg.credentials {
            Credentials::Certificate { .. } => DEFAULT_CERT_CIPHERS,
            Credentials::Psk { .. } => DEFAULT_PSK_CIPHERS,
        };
        let ciphers = cfg.ciphers.as_deref().unwrap_or(default_ciphers);
        b.set_cipher_list(ciphers)
            .map_err(|e| ossl(&format!("cipher list '{ciphers}'"), e))?;

        let mut peer_name = None;
        match &cfg.credentials {
            Credentials::Certificate {
                cert,
                key,
                ca,
                peer_name: name,
            } => {
                b.set_certificate_chain_file(cert)
                    .map_err(|e| ossl(&format!("certificate {}", cert.display()), e))?;
                b.set_private_key_file(key, SslFiletype::PEM)
                    .map_err(|e| ossl(&format!("private key {}", key.display()), e))?;
                b.check_private_key().map_err(|e| {
                    ossl(
                        &format!("key {} does not match {}", key.display(), cert.display()),
                        e,
                    )
                })?;
                b.set_ca_file(ca)
                    .map_err(|e| ossl(&format!("CA file {}", ca.display()), e))?;
                b.set_verify(match role {
                    Role::Client => SslVerifyMode::PEER,
                    Role::Server => SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
                });
                if role == Role::Client {
                    peer_name = name.clone();
                }
            }
            Credentials::Psk { identity, key } => {
                if identity.is_empty() || identity.len() > 128 || identity.contains('\0') {
                    return Err(DtlsError::Config(format!(
                        "PSK identity '{identity}' must be 1..=128 bytes without NUL"
                    )));
                }
                if key.is_empty() || key.len() > 256 {
                    return Err(DtlsError::Config(format!(
                        "PSK key must be 1..=256 bytes, got {}",
                        key.len()
                    )));
                }
                b.set_verify(SslVerifyMode::NONE);
                install_psk(&mut b, role, identity.clone(), key.clone());
            }
        }

        if let Some(path) = &cfg.keylog {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| DtlsError::Config(format!("keylog {}: {e}", path.display())))?;
            install_keylog(&mut b, file);
        }

        // The server's cookie exchange (RFC 6347 §4.2.1): OpenSSL asks for and checks cookies
        // only in `DtlsListener` (DTLSv1_listen sets SSL_OP_COOKIE_EXCHANGE on the SSL it
        // accepts), with the peer's address in the SSL's ex-data. A plain `accept` session does
        // not use them.
        let cookie_key = match role {
            Role::Server => {
                let key = Arc::new(CookieKey::random()?);
                install_cookie_callbacks(&mut b, key.clone());
                Some(key)
            }
            Role::Client => None,
        };

        Ok(DtlsContext {
            ctx: b.build(),
            role,
            peer_name,
            dtls_mtu: (cfg.mtu - PREAMBLE_LEN) as u32,
            initial_retransmit: DEFAULT_RETRANSMIT,
            cookie_key,
        })
    }

    /// Applies the per-session settings to a fresh `SSL`.
    pub(crate) fn configure(&self, ssl: &mut Ssl) -> Result<(), DtlsError> {
        let ossl = |what: &str, e: openssl::error::ErrorStack| {
            DtlsError::Config(format!("{what}: {}", stack_text(&e)))
        };
        ssl.set_mtu(self.dtls_mtu)
            .map_err(|e| ossl("SSL_set_mtu", e))?;
        // OpenSSL frees a session's record buffers (about 16 KiB each way) while it has
        // nothing buffered: a controller's thousand idle sessions do not keep 32 MiB.
        const SSL_CTRL_MODE: i32 = 33;
        const SSL_MODE_RELEASE_BUFFERS: libc::c_long = 0x10;
        // SAFETY: a valid SSL; SSL_CTRL_MODE only sets mode bits.
        unsafe {
            openssl_sys::SSL_ctrl(
                super::session::ssl_ptr(ssl),
                SSL_CTRL_MODE,
                SSL_MODE_RELEASE_BUFFERS,
                std::ptr::null_mut(),
            )
        };
        if let Some(name) = &self.peer_name {
            let param = ssl.param_mut();
            match name.parse::<IpAddr>() {
                Ok(ip) => param.set_ip(ip),
                Err(_) => param.set_host(name),
            }
            .map_err(|e| ossl(&format!("peer name '{name}'"), e))?;
        }
        match self.role {
            Role::Client => ssl.set_connect_state(),
            Role::Server => ssl.set_accept_state(),
        }
        Ok(())
    }
}

fn install_psk(b: &mut SslContextBuilder, role: Role, identity: String, key: Vec<u8>) {
    match role {
        Role::Client => b.set_psk_client_callback(move |_ssl, _hint, id_buf, psk_buf| {
            // Lengths were checked when the context was built; check again, never panic.
            let id = identity.as_bytes();
            if id.len() + 1 > id_buf.len() || key.len() > psk_buf.len() {
                return Ok(0);
            }
            id_buf[..id.len()].copy_from_slice(id);
            id_buf[id.len()] = 0;
            psk_buf[..key.len()].copy_from_slice(&key);
            Ok(key.len())
        }),
        Role::Server => b.set_psk_server_callback(move |ssl, got, psk_buf| {
            if got == Some(identity.as_bytes()) && key.len() <= psk_buf.len() {
                psk_buf[..key.len()].copy_from_slice(&key);
                return Ok(key.len());
            }
            // Returning 0 makes OpenSSL send unknown_psk_identity; remember why for the log.
            let shown = got
                .map(|g| String::from_utf8_lossy(g).into_owned())
                .unwrap_or_default();
            if let Ok(idx) = shared_index() {
                if let Some(shared) = ssl.ex_data(idx) {
                    shared.set_reason(format!("unknown PSK identity '{shown}'"));
                }
            }
            Ok(0)
        }),
    }
}

/// The cookie OpenSSL puts in a HelloVerifyRequest, and its check of the one a ClientHello
/// brings back: the same HMAC the listener's pre-check uses ([`CookieKey`]).
fn install_cookie_callbacks(b: &mut SslContextBuilder, key: Arc<CookieKey>) {
    let peer_of = |ssl: &openssl::ssl::SslRef| {
        let idx = shared_index().ok()?;
        ssl.ex_data(idx)?.cookie_peer()
    };
    let k = key.clone();
    b.set_cookie_generate_cb(move |ssl, buf| {
        let Some((peer, now)) = peer_of(ssl) else {
            return Err(openssl::error::ErrorStack::get());
        };
        let c = k.cookie(peer, now);
        if buf.len() < c.len() {
            return Err(openssl::error::ErrorStack::get());
        }
        buf[..c.len()].copy_from_slice(&c);
        Ok(c.len())
    });
    b.set_cookie_verify_cb(move |ssl, cookie| {
        peer_of(ssl).is_some_and(|(peer, now)| key.verify(peer, now, cookie))
    });
}

fn install_keylog(b: &mut SslContextBuilder, file: File) {
    let file = Mutex::new(file);
    b.set_keylog_callback(move |_ssl, line| {
        let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
        // A failing key log must not break the session; there is nobody to tell.
        let _ = writeln!(f, "{line}");
        let _ = f.flush();
    });
}
