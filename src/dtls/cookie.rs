//! The stateless half of the DTLS cookie exchange (RFC 6347 §4.2.1): the cookie a server puts
//! in its HelloVerifyRequest, and the cookie a ClientHello carries back.
//!
//! The cookie is an HMAC of the client's address and port and a time bucket under a secret
//! drawn at start, so the server keeps nothing per client until one comes back with a cookie
//! that proves it receives at the address it claims. A flood of ClientHellos from spoofed
//! addresses then costs one HMAC and one small reply each, and no memory.
//!
//! [`client_hello_cookie`] reads the cookie out of a datagram (CAPWAP DTLS header included)
//! without trusting any length in it: a truncated or lying datagram is an error, never a panic.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ring::hmac;

use crate::time::Instant;

/// Bytes of HMAC-SHA256 kept in a cookie (RFC 6347 allows up to 255; 16 cannot be guessed).
pub const COOKIE_LEN: usize = 16;

/// A cookie is accepted in the bucket it was made in and the next one: 30 to 60 s, longer than
/// a client takes to answer a HelloVerifyRequest even after retransmitting.
pub const BUCKET: Duration = Duration::from_secs(30);

/// The server's cookie secret.
pub struct CookieKey(hmac::Key);

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(..)")
    }
}

impl CookieKey {
    /// A key from a random secret.
    pub fn random() -> Result<Self, super::DtlsError> {
        let mut secret = [0u8; 32];
        openssl::rand::rand_bytes(&mut secret)
            .map_err(|e| super::DtlsError::Config(format!("cookie secret: {e}")))?;
        Ok(Self::from_secret(&secret))
    }

    pub fn from_secret(secret: &[u8]) -> Self {
        CookieKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The cookie for `peer` at `now`.
    pub fn cookie(&self, peer: SocketAddr, now: Instant) -> [u8; COOKIE_LEN] {
        self.cookie_in(peer, bucket(now))
    }

    /// Whether `cookie` was made for `peer` in this bucket or the one before.
    pub fn verify(&self, peer: SocketAddr, now: Instant, cookie: &[u8]) -> bool {
        let b = bucket(now);
        [Some(b), b.checked_sub(1)].into_iter().flatten().any(|b| {
            // ring's verify compares in constant time; it wants the whole tag, so compare the
            // truncated one with OpenSSL's constant-time memcmp instead.
            let want = self.cookie_in(peer, b);
            cookie.len() == COOKIE_LEN && openssl::memcmp::eq(&want, cookie)
        })
    }

    fn cookie_in(&self, peer: SocketAddr, bucket: u64) -> [u8; COOKIE_LEN] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(&bucket.to_be_bytes());
        match peer.ip() {
            IpAddr::V4(a) => ctx.update(&a.octets()),
            IpAddr::V6(a) => ctx.update(&a.octets()),
        }
        ctx.update(&peer.port().to_be_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; COOKIE_LEN];
        out.copy_from_slice(&tag.as_ref()[..COOKIE_LEN]);
        out
    }
}

fn bucket(now: Instant) -> u64 {
    now.as_duration().as_secs() / BUCKET.as_secs()
}

/// Why a datagram is not a ClientHello whose cookie can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloError {
    /// No CAPWAP DTLS header, or not an epoch-0 handshake record holding a ClientHello.
    NotClientHello,
    /// The datagram ends before the field named.
    Truncated(&'static str),
    /// A ClientHello split over fragments: its cookie may not be in this one.
    Fragmented,
}

impl std::fmt::Display for HelloError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HelloError::NotClientHello => write!(f, "not a ClientHello"),
            HelloError::Truncated(what) => write!(f, "ClientHello truncated in {what}"),
            HelloError::Fragmented => write!(f, "fragmented ClientHello"),
        }
    }
}

/// The cookie of the ClientHello in `datagram` (CAPWAP DTLS header, then the first record):
/// empty for a first ClientHello.
pub fn client_hello_cookie(datagram: &[u8]) -> Result<&[u8], HelloError> {
    const HANDSHAKE: u8 = 22;
    const CLIENT_HELLO: u8 = 1;
    let rest = match datagram {
        [0x01, 0, 0, 0, rest @ ..] => rest,
        _ => return Err(HelloError::NotClientHello),
    };
    let mut r = Reader(rest);
    // Record header: type, version, epoch, sequence number (6), length.
    let record = r.take(13, "record header")?;
    if record[0] != HANDSHAKE || record[3..5] != [0, 0] {
        return Err(HelloError::NotClientHello);
    }
    let record_len = u16::from_be_bytes([record[11], record[12]]) as usize;
    let mut r = Reader(r.take(record_len, "record")?);
    // Handshake header: type, length (3), message_seq (2), fragment_offset (3),
    // fragment_length (3).
    let hs = r.take(12, "handshake header")?;
    if hs[0] != CLIENT_HELLO {
        return Err(HelloError::NotClientHello);
    }
    let length = u32::from_be_bytes([0, hs[1], hs[2], hs[3]]);
    let offset = u32::from_be_bytes([0, hs[6], hs[7], hs[8]]);
    let frag_len = u32::from_be_bytes([0, hs[9], hs[10], hs[11]]);
    if offset != 0 || frag_len != length {
        return Err(HelloError::Fragmented);
    }
    r.take(2, "client_version")?;
    r.take(32, "random")?;
    let sid = r.take(1, "session_id length")?[0] as usize;
    r.take(sid, "session_id")?;
    let n = r.take(1, "cookie length")?[0] as usize;
    r.take(n, "cookie")
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        if self.0.len() < n {
            return Err(HelloError::Truncated(what));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn at(secs: u64) -> Instant {
        Instant::from_duration(Duration::from_secs(secs))
    }

    #[test]
    fn a_cookie_binds_address_port_and_time() {
        let k = CookieKey::from_secret(b"secret");
        let a = peer("192.0.2.1:5000");
        let c = k.cookie(a, at(100));
        assert!(k.verify(a, at(100), &c));
        assert!(
            k.verify(a, at(100 + 30), &c),
            "the next bucket still accepts it"
        );
        assert!(
            !k.verify(a, at(100 + 60), &c),
            "two buckets later it is stale"
        );
        assert!(
            !k.verify(peer("192.0.2.1:5001"), at(100), &c),
            "another port"
        );
        assert!(
            !k.verify(peer("192.0.2.2:5000"), at(100), &c),
            "another address"
        );
        assert!(!k.verify(peer("[::1]:5000"), at(100), &c));
        assert!(!k.verify(a, at(100), &c[..15]), "a shortened cookie");
        assert!(!k.verify(a, at(100), &[]), "no cookie");
        let other = CookieKey::from_secret(b"other secret");
        assert!(!other.verify(a, at(100), &c), "another server's secret");
        assert!(
            k.verify(a, at(0), &k.cookie(a, at(0))),
            "bucket 0 has no previous"
        );
    }

    #[test]
    fn random_keys_differ() {
        let a = peer("192.0.2.1:5000");
        let (k1, k2) = (CookieKey::random().unwrap(), CookieKey::random().unwrap());
        assert_ne!(k1.cookie(a, at(0)), k2.cookie(a, at(0)));
    }

    /// A DTLS 1.2 ClientHello datagram with this cookie, CAPWAP DTLS header in front.
    pub(crate) fn hello(session_id: &[u8], cookie: &[u8]) -> Vec<u8> {
        let mut body = vec![0xfe, 0xfd];
        body.extend_from_slice(&[7; 32]);
        body.push(session_id.len() as u8);
        body.extend_from_slice(session_id);
        body.push(cookie.len() as u8);
        body.extend_from_slice(cookie);
        body.extend_from_slice(&[0, 2, 0xc0, 0x2f, 1, 0]);
        let len = (body.len() as u32).to_be_bytes();
        let mut hs = vec![
            1, len[1], len[2], len[3], 0, 0, 0, 0, 0, len[1], len[2], len[3],
        ];
        hs.extend_from_slice(&body);
        let mut d = vec![1, 0, 0, 0, 22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0];
        d.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        d.extend_from_slice(&hs);
        d
    }

    #[test]
    fn reads_the_cookie_of_a_client_hello() {
        assert_eq!(client_hello_cookie(&hello(&[], &[])), Ok(&[][..]));
        assert_eq!(
            client_hello_cookie(&hello(&[9; 32], &[1, 2, 3])),
            Ok(&[1, 2, 3][..])
        );
    }

    #[test]
    fn truncated_and_lying_hellos_are_errors_not_panics() {
        let d = hello(&[9; 32], &[5; 20]);
        for n in 0..d.len() {
            assert!(client_hello_cookie(&d[..n]).is_err(), "cut at {n}");
        }
        // A record length beyond the datagram.
        let mut long = d.clone();
        long[15] = 0xff;
        assert_eq!(
            client_hello_cookie(&long),
            Err(HelloError::Truncated("record"))
        );
        // A session_id or cookie length beyond the record.
        let mut sid = d.clone();
        sid[4 + 13 + 12 + 34] = 0xff;
        assert!(client_hello_cookie(&sid).is_err());
        let mut frag = d.clone();
        frag[4 + 13 + 11] = 1;
        assert_eq!(client_hello_cookie(&frag), Err(HelloError::Fragmented));
        let mut epoch1 = d.clone();
        epoch1[4 + 4] = 1;
        assert_eq!(
            client_hello_cookie(&epoch1),
            Err(HelloError::NotClientHello)
        );
        let mut server_hello = d;
        server_hello[4 + 13] = 2;
        assert_eq!(
            client_hello_cookie(&server_hello),
            Err(HelloError::NotClientHello)
        );
        assert_eq!(
            client_hello_cookie(&[0, 0, 0, 0, 22]),
            Err(HelloError::NotClientHello)
        );
        let mut rng = crate::rng::Rng::new(7);
        for _ in 0..10_000 {
            let n = (rng.next_u64() % 200) as usize;
            let mut d: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            if d.len() > 4 {
                d[..4].copy_from_slice(&[1, 0, 0, 0]);
            }
            let _ = client_hello_cookie(&d);
        }
    }
}
