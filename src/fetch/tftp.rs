//! TFTP read client: RFC 1350 (octet mode), option extension RFC 2347, blksize RFC 2348,
//! timeout and tsize RFC 2349, windowsize RFC 7440 when the server accepts it.
//!
//! One UDP socket; the first answer fixes the server's transfer ID (its port), and packets from
//! any other source get an "Unknown transfer ID" error and are otherwise ignored (RFC 1350 §4).
//! Every wait is bounded: a packet is retransmitted after `timeout`, and after `retries`
//! retransmissions without progress the download ends with `Timed out`. Block numbers roll
//! over from 65535 to 0, as tftpd-hpa and atftp do for files above 32 MiB at 512 bytes.
//!
//! The packet codec ([`parse`] and the encoders) reads and writes both directions: the server
//! of [`super::tftpd`] uses it for the requests and acknowledgements it receives.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use log::{debug, info};

use super::{resolve, FetchError, FetchErrorKind, FetchOptions, FetchUrl, Sink};

const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// Error codes (RFC 1350 §5, RFC 2347).
pub(crate) const ERR_UNDEFINED: u16 = 0;
pub(crate) const ERR_NOT_FOUND: u16 = 1;
pub(crate) const ERR_ACCESS: u16 = 2;
pub(crate) const ERR_ILLEGAL: u16 = 4;
pub(crate) const ERR_UNKNOWN_TID: u16 = 5;
pub(crate) const ERR_OPTIONS: u16 = 8;

/// What a received datagram says. Public, with [`parse`] and [`agree`], for the fuzz target
/// (fuzz/fuzz_targets/tftp.rs): these are the server-controlled inputs of a download, and the
/// client-controlled inputs of the server ([`Packet::Request`], [`Packet::Ack`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// RRQ or WRQ.
    Request(Request),
    Data {
        block: u16,
        data: &'a [u8],
    },
    Ack {
        block: u16,
    },
    Error {
        code: u16,
        message: String,
    },
    Oack(Vec<(String, String)>),
    Other(u16),
}

/// A read or write request (RFC 1350 §5) with its options (RFC 2347), names lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub write: bool,
    pub filename: String,
    /// Lowercased: `octet`, `netascii`, `mail`.
    pub mode: String,
    pub options: Vec<(String, String)>,
}

/// `name\0value\0` pairs, every field NUL-terminated (OACK, and the options of a request);
/// `None` when a value is missing, a name is empty or the last NUL is.
fn option_pairs<'a>(mut fields: impl Iterator<Item = &'a [u8]>) -> Option<Vec<(String, String)>> {
    let mut opts = Vec::new();
    while let Some(name) = fields.next() {
        let value = fields.next()?;
        if name.is_empty() {
            return None;
        }
        opts.push((
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Some(opts)
}

/// Reads one datagram; `None` when it is too short or a malformed OACK or request.
pub fn parse(buf: &[u8]) -> Option<Packet<'_>> {
    if buf.len() < 2 {
        return None;
    }
    let op = u16::from_be_bytes([buf[0], buf[1]]);
    match op {
        RRQ | WRQ => {
            // filename\0mode\0, then option pairs.
            let body = buf[2..].strip_suffix(&[0])?;
            let mut fields = body.split(|&b| b == 0);
            let filename = fields.next()?;
            let mode = fields.next()?;
            if filename.is_empty() || mode.is_empty() {
                return None;
            }
            Some(Packet::Request(Request {
                write: op == WRQ,
                filename: String::from_utf8_lossy(filename).into_owned(),
                mode: String::from_utf8_lossy(mode).to_ascii_lowercase(),
                options: option_pairs(fields)?,
            }))
        }
        ACK => {
            if buf.len() < 4 {
                return None;
            }
            Some(Packet::Ack {
                block: u16::from_be_bytes([buf[2], buf[3]]),
            })
        }
        DATA => {
            if buf.len() < 4 {
                return None;
            }
            Some(Packet::Data {
                block: u16::from_be_bytes([buf[2], buf[3]]),
                data: &buf[4..],
            })
        }
        ERROR => {
            if buf.len() < 4 {
                return None;
            }
            let code = u16::from_be_bytes([buf[2], buf[3]]);
            let text = &buf[4..];
            let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
            Some(Packet::Error {
                code,
                message: String::from_utf8_lossy(&text[..end]).into_owned(),
            })
        }
        OACK => {
            let body = &buf[2..];
            if body.is_empty() {
                return Some(Packet::Oack(Vec::new()));
            }
            let body = body.strip_suffix(&[0])?;
            option_pairs(body.split(|&b| b == 0)).map(Packet::Oack)
        }
        other => Some(Packet::Other(other)),
    }
}

fn push_options(p: &mut Vec<u8>, options: &[(&str, String)]) {
    for (k, v) in options {
        p.extend_from_slice(k.as_bytes());
        p.push(0);
        p.extend_from_slice(v.as_bytes());
        p.push(0);
    }
}

pub(crate) fn rrq(path: &str, options: &[(&str, String)]) -> Vec<u8> {
    let mut p = Vec::with_capacity(64 + path.len());
    p.extend_from_slice(&RRQ.to_be_bytes());
    p.extend_from_slice(path.as_bytes());
    p.push(0);
    p.extend_from_slice(b"octet\0");
    push_options(&mut p, options);
    p
}

/// An OACK with `options` (RFC 2347).
pub(crate) fn oack(options: &[(&str, String)]) -> Vec<u8> {
    let mut p = OACK.to_be_bytes().to_vec();
    push_options(&mut p, options);
    p
}

/// The 4-byte header of DATA `block`; the data follows it in the same datagram.
pub(crate) fn data_header(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, DATA as u8, b[0], b[1]]
}

pub(crate) fn ack(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, ACK as u8, b[0], b[1]]
}

pub(crate) fn error_packet(code: u16, msg: &str) -> Vec<u8> {
    let mut p = vec![0, ERROR as u8];
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(msg.as_bytes());
    p.push(0);
    p
}

/// What the server agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    pub blksize: usize,
    pub windowsize: u16,
    pub tsize: Option<u64>,
}

/// Reads the OACK: only options we asked for, within what we asked (RFC 2347: the server may
/// only lower blksize; a windowsize above ours is refused).
pub fn agree(opts: &[(String, String)], asked_blk: u16, asked_win: u16) -> Result<Agreed, String> {
    let mut a = Agreed {
        blksize: 512,
        windowsize: 1,
        tsize: None,
    };
    for (k, v) in opts {
        let num = || {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("option {k}={v} is not a number"))
        };
        match k.as_str() {
            "blksize" => {
                let n = num()?;
                if !(8..=asked_blk as u64).contains(&n) {
                    return Err(format!("server chose blksize {n}, asked {asked_blk}"));
                }
                a.blksize = n as usize;
            }
            "windowsize" => {
                let n = num()?;
                if !(1..=asked_win as u64).contains(&n) {
                    return Err(format!("server chose windowsize {n}, asked {asked_win}"));
                }
                a.windowsize = n as u16;
            }
            "tsize" => a.tsize = Some(num()?),
            "timeout" | "utimeout" => {}
            other => {
                return Err(format!(
                    "server acknowledged an option not asked for: {other}"
                ))
            }
        }
    }
    Ok(a)
}

/// Downloads `url` (a `tftp://` URL) into `sink`.
pub fn fetch(url: &FetchUrl, opts: &FetchOptions, sink: &mut dyn Sink) -> Result<u64, FetchError> {
    let err = |k: FetchErrorKind| FetchError::new(url, k);
    let server = *resolve(url)?
        .first()
        .ok_or_else(|| err(FetchErrorKind::Io("no address".into())))?;
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).map_err(|e| err(FetchErrorKind::Io(format!("bind: {e}"))))?;
    let timeout = opts.timeout.max(Duration::from_millis(10));
    let blk = opts.blksize.clamp(8, 65464);
    let win = opts.windowsize.max(1);
    let mut options: Vec<(&str, String)> = vec![
        ("tsize", "0".into()),
        ("blksize", blk.to_string()),
        ("timeout", timeout.as_secs().clamp(1, 255).to_string()),
    ];
    if win > 1 {
        options.push(("windowsize", win.to_string()));
    }
    let mut c = Client {
        sock,
        server,
        tid: None,
        timeout,
        retries: opts.retries,
        buf: vec![0u8; blk as usize + 4 + 64],
        last_recv_len: 0,
        last: rrq(&url.path, &options),
        url,
    };
    c.send_last()?;
    // The first answer: OACK, DATA 1 (options ignored), or ERROR.
    let (agreed, first_data) = loop {
        let (n, from) = c.recv()?;
        let Some(pkt) = parse(&c.buf[..n]) else {
            continue;
        };
        match pkt {
            Packet::Oack(o) => match agree(&o, blk, win) {
                Ok(a) => break (a, false),
                Err(why) => {
                    let _ = c.sock.send_to(&error_packet(ERR_OPTIONS, &why), from);
                    return Err(err(FetchErrorKind::Protocol(why)));
                }
            },
            Packet::Data { block: 1, .. } => {
                // Options ignored: RFC 1350 with 512-byte blocks. Handled below.
                break (
                    Agreed {
                        blksize: 512,
                        windowsize: 1,
                        tsize: None,
                    },
                    true,
                );
            }
            Packet::Error { code, message } if code == ERR_OPTIONS && !options.is_empty() => {
                debug!("{url}: server refused the options ({message}); asking again without");
                options.clear();
                c.tid = None;
                c.last = rrq(&url.path, &options);
                c.send_last()?;
                continue;
            }
            Packet::Error { code, message } => return Err(err(error_kind(code, message))),
            other => {
                return Err(err(FetchErrorKind::Protocol(format!(
                    "unexpected first answer {other:?}"
                ))))
            }
        }
    };
    debug!(
        "{url}: blksize {} windowsize {} tsize {:?}",
        agreed.blksize, agreed.windowsize, agreed.tsize
    );
    if agreed.blksize != blk as usize || agreed.windowsize != win {
        info!(
            "{url}: server agreed to blksize {}, windowsize {}",
            agreed.blksize, agreed.windowsize
        );
    }
    sink.begin(agreed.tsize).map_err(|k| c.abort(k))?;
    let total = c.receive(sink, agreed, first_data)?;
    if let Some(t) = agreed.tsize {
        if t != total {
            return Err(err(FetchErrorKind::SizeMismatch {
                expected: t,
                got: total,
            }));
        }
    }
    Ok(total)
}

fn error_kind(code: u16, message: String) -> FetchErrorKind {
    if code == ERR_NOT_FOUND {
        FetchErrorKind::NotFound
    } else if message.is_empty() {
        FetchErrorKind::Refused(format!("TFTP error {code}"))
    } else {
        FetchErrorKind::Refused(message)
    }
}

struct Client<'a> {
    sock: UdpSocket,
    server: SocketAddr,
    /// The server's transfer port, once it answered.
    tid: Option<SocketAddr>,
    timeout: Duration,
    retries: u32,
    buf: Vec<u8>,
    /// Length of the datagram in `buf`.
    last_recv_len: usize,
    /// The last packet sent (RRQ or ACK), resent on a timeout.
    last: Vec<u8>,
    url: &'a FetchUrl,
}

impl Client<'_> {
    fn err(&self, k: FetchErrorKind) -> FetchError {
        FetchError::new(self.url, k)
    }

    fn send_last(&mut self) -> Result<(), FetchError> {
        let to = self.tid.unwrap_or(self.server);
        self.sock
            .send_to(&self.last, to)
            .map_err(|e| self.err(FetchErrorKind::Io(format!("send to {to}: {e}"))))?;
        Ok(())
    }

    /// Tells the server we stop, and returns the error.
    fn abort(&self, k: FetchErrorKind) -> FetchError {
        if let Some(t) = self.tid {
            let _ = self.sock.send_to(&error_packet(0, &k.to_string()), t);
        }
        self.err(k)
    }

    /// The next datagram from the server's transfer ID, retransmitting the last packet after
    /// each timeout; `Timed out` after `retries` retransmissions.
    fn recv(&mut self) -> Result<(usize, SocketAddr), FetchError> {
        let mut tries = 0u32;
        let mut deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if tries >= self.retries {
                    return Err(self.err(FetchErrorKind::TimedOut));
                }
                tries += 1;
                debug!("{}: timeout, retransmission {tries}", self.url);
                self.send_last()?;
                deadline = Instant::now() + self.timeout;
                continue;
            }
            self.sock
                .set_read_timeout(Some(left))
                .map_err(|e| self.err(FetchErrorKind::Io(e.to_string())))?;
            match self.sock.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    if from.ip() != self.server.ip() {
                        continue;
                    }
                    match self.tid {
                        None => self.tid = Some(from),
                        Some(t) if t != from => {
                            let _ = self.sock.send_to(
                                &error_packet(ERR_UNKNOWN_TID, "Unknown transfer ID"),
                                from,
                            );
                            continue;
                        }
                        Some(_) => {}
                    }
                    self.last_recv_len = n;
                    return Ok((n, from));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                // An ICMP port unreachable from an earlier send shows up here on Linux: the
                // server is not there (yet); keep waiting, as for silence.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    std::thread::sleep(left.min(Duration::from_millis(20)));
                }
                Err(e) => return Err(self.err(FetchErrorKind::Io(format!("receive: {e}")))),
            }
        }
    }

    /// The data phase. `first_data`: the buffer already holds DATA 1 (options ignored).
    fn receive(
        &mut self,
        sink: &mut dyn Sink,
        agreed: Agreed,
        first_data: bool,
    ) -> Result<u64, FetchError> {
        let blksize = agreed.blksize;
        let window = agreed.windowsize;
        let mut total: u64 = 0;
        // The last block received in order (0: none yet; block numbers wrap after 65535).
        let mut last_in_order: u16 = 0;
        let mut in_window: u16 = 0;
        if !first_data {
            // Acknowledge the OACK with block 0.
            self.last = ack(0).to_vec();
            self.send_last()?;
        }
        let mut pending = first_data;
        loop {
            let n = if pending {
                pending = false;
                self.last_recv_len
            } else {
                self.recv()?.0
            };
            let (block, len) = match parse(&self.buf[..n]) {
                Some(Packet::Data { block, data }) => (block, data.len()),
                Some(Packet::Error { code, message }) => {
                    return Err(self.err(error_kind(code, message)))
                }
                Some(Packet::Oack(_)) => continue, // a late duplicate OACK: our ACK 0 went out
                Some(other) => {
                    debug!("{}: ignoring {other:?}", self.url);
                    continue;
                }
                None => continue,
            };
            if len > blksize {
                return Err(self.abort(FetchErrorKind::Protocol(format!(
                    "block {block} has {len} bytes, blksize {blksize}"
                ))));
            }
            if block != last_in_order.wrapping_add(1) {
                // A duplicate or a gap: acknowledge what we have so the server goes on from
                // there (RFC 7440 §4; with windowsize 1, the RFC 1350 duplicate ACK).
                if block == last_in_order || window > 1 {
                    self.last = ack(last_in_order).to_vec();
                    self.send_last()?;
                    in_window = 0;
                }
                continue;
            }
            let data_start = 4;
            {
                let data = &self.buf[data_start..data_start + len];
                if let Err(k) = sink.data(data) {
                    return Err(self.abort(k));
                }
            }
            total += len as u64;
            last_in_order = block;
            in_window += 1;
            let end = len < blksize;
            if end || in_window >= window {
                self.last = ack(block).to_vec();
                self.send_last()?;
                in_window = 0;
            }
            if end {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_packets_without_panicking_on_junk() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0]), None);
        assert_eq!(parse(&[0, 3, 0]), None);
        assert_eq!(
            parse(&[0, 3, 0, 7, 1, 2]),
            Some(Packet::Data {
                block: 7,
                data: &[1, 2]
            })
        );
        assert_eq!(
            parse(b"\0\x05\0\x01File not found\0"),
            Some(Packet::Error {
                code: 1,
                message: "File not found".into()
            })
        );
        assert_eq!(
            parse(b"\0\x05\0\x02no nul"),
            Some(Packet::Error {
                code: 2,
                message: "no nul".into()
            })
        );
        assert_eq!(
            parse(b"\0\x06tsize\x00123\0BLKSIZE\x001468\0"),
            Some(Packet::Oack(vec![
                ("tsize".into(), "123".into()),
                ("blksize".into(), "1468".into())
            ]))
        );
        assert_eq!(parse(b"\0\x06tsize\0"), None, "option without value");
        assert_eq!(parse(&[0, 4, 1, 2]), Some(Packet::Ack { block: 258 }));
        assert_eq!(parse(&[0, 4, 1]), None);
        assert_eq!(
            parse(b"\0\x01ap1g8\0OCTET\0BlkSize\x001468\0tsize\x000\0"),
            Some(Packet::Request(Request {
                write: false,
                filename: "ap1g8".into(),
                mode: "octet".into(),
                options: vec![
                    ("blksize".into(), "1468".into()),
                    ("tsize".into(), "0".into())
                ],
            }))
        );
        assert!(matches!(
            parse(b"\0\x02ap1g8\0octet\0"),
            Some(Packet::Request(Request { write: true, .. }))
        ));
        assert_eq!(parse(b"\0\x01ap1g8\0octet"), None, "no final NUL");
        assert_eq!(parse(b"\0\x01ap1g8\0"), None, "no mode");
        assert_eq!(parse(b"\0\x01\0octet\0"), None, "no file name");
        assert_eq!(
            parse(b"\0\x01a\0octet\0blksize\0"),
            None,
            "option without value"
        );
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ n).collect();
            let _ = parse(&junk);
        }
    }

    #[test]
    fn builds_requests_with_options() {
        let p = rrq("/EWC/ap1g8", &[("blksize", "1468".into())]);
        assert_eq!(p, b"\0\x01/EWC/ap1g8\0octet\0blksize\x001468\0");
        assert_eq!(ack(258), [0, 4, 1, 2]);
        assert_eq!(data_header(65535), [0, 3, 255, 255]);
        assert_eq!(
            oack(&[("blksize", "1024".into()), ("tsize", "7".into())]),
            b"\0\x06blksize\x001024\0tsize\x007\0"
        );
        assert_eq!(parse(&oack(&[])), Some(Packet::Oack(vec![])));
    }

    #[test]
    fn option_agreement_follows_rfc_2347() {
        let o = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let a = agree(&o(&[("blksize", "1024"), ("tsize", "70512640")]), 1468, 1).unwrap();
        assert_eq!(a.blksize, 1024);
        assert_eq!(a.tsize, Some(70512640));
        assert_eq!(a.windowsize, 1);
        assert!(agree(&o(&[("blksize", "9000")]), 1468, 1).is_err());
        assert!(agree(&o(&[("windowsize", "8")]), 1468, 4).is_err());
        assert!(agree(&o(&[("multicast", "1")]), 1468, 1).is_err());
        assert!(agree(&o(&[("tsize", "x")]), 1468, 1).is_err());
    }
}
