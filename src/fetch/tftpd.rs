//! A read-only TFTP server for one file: the staged image, which subordinate APs of a site
//! fetch from their primary over the LAN instead of each downloading it from the controller
//! (issue 14, "efficient upgrade").
//!
//! RFC 1350 read requests in octet mode, with the options of RFC 2347 (OACK), 2348 (blksize),
//! 2349 (timeout, tsize) and 7440 (windowsize). Write requests, other file names, a request
//! while nothing is served, and more than `max_transfers` at once are refused with an ERROR
//! packet saying why.
//!
//! The protocol is sans-IO, as the rest of the agent: [`check_request`] decides about a
//! datagram on the listening port, [`negotiate`] the options, and a [`Transfer`] takes
//! datagrams and time and gives the datagrams to send, reading the file through any
//! [`Read`]. [`TftpServer`] is the driver: a listener thread and one thread per transfer,
//! each transfer on its own UDP socket (its transfer ID, RFC 1350 §4), on std sockets.
//!
//! Reliability: the window is sent again after `timeout` without progress, and the transfer
//! gives up after `retries` retransmissions. Only a timeout retransmits: a duplicate ACK is
//! ignored, so a delayed packet cannot double every later one (the Sorcerer's Apprentice
//! syndrome, RFC 1123 §4.2.3.1). An ACK inside the window slides it, and sending resumes after
//! the acknowledged block (RFC 7440 §4).

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use log::{debug, info, warn};

use super::tftp::{
    data_header, error_packet, oack, parse, Packet, Request, ERR_ACCESS, ERR_ILLEGAL,
    ERR_NOT_FOUND, ERR_UNDEFINED, ERR_UNKNOWN_TID,
};
use crate::time::Instant;

/// The largest blksize RFC 2348 allows.
pub const MAX_BLKSIZE: u16 = 65464;
/// The largest windowsize served: half the block-number space, so that an acknowledgement is
/// never ambiguous across the roll-over.
pub const MAX_WINDOWSIZE: u16 = 32767;
/// How often the threads look at the stop flag while they wait.
const TICK: Duration = Duration::from_millis(100);
/// The DATA header: opcode and block number.
const HDR: usize = 4;

/// What the server allows. [`TftpServer::start`] brings the limits into the protocol's ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TftpdConfig {
    /// The listening address (port 69 in the field; port 0 picks one).
    pub bind: SocketAddr,
    /// Transfers at once; a request beyond gets "server busy".
    pub max_transfers: usize,
    /// The wait for an acknowledgement before the window is sent again, unless the client asks
    /// for another (RFC 2349).
    pub timeout: Duration,
    /// Retransmissions without progress before a transfer is given up.
    pub retries: u32,
    /// The largest blksize granted (8..=65464).
    pub max_blksize: u16,
    /// The largest windowsize granted (1..=32767).
    pub max_windowsize: u16,
}

impl Default for TftpdConfig {
    fn default() -> Self {
        TftpdConfig {
            bind: ([0, 0, 0, 0], 69).into(),
            max_transfers: 3,
            timeout: Duration::from_secs(1),
            retries: 5,
            max_blksize: 1468,
            max_windowsize: 8,
        }
    }
}

impl TftpdConfig {
    /// The same limits, within what the protocol allows.
    pub fn sanitized(mut self) -> Self {
        self.max_blksize = self.max_blksize.clamp(8, MAX_BLKSIZE);
        self.max_windowsize = self.max_windowsize.clamp(1, MAX_WINDOWSIZE);
        self.timeout = self.timeout.max(Duration::from_millis(10));
        self
    }
}

/// Why a request is refused; [`Refusal::code`] and the text go to the client in an ERROR
/// packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a valid request (no file name, no mode, an option without value).
    Malformed,
    /// A datagram other than a request on the listening port (its opcode).
    NotARequest(u16),
    /// A write request: this server only reads.
    Write,
    /// A mode other than octet.
    Mode(String),
    /// Nothing is served yet (the image is not verified).
    NotReady,
    /// Not the served name.
    NotFound,
    /// `max_transfers` are running.
    Busy(usize),
    /// The served file cannot be opened (it was removed: `not_found`).
    Unreadable { not_found: bool, error: String },
    /// No socket or thread for the transfer.
    NoResources(String),
}

impl Refusal {
    /// The TFTP error code (RFC 1350 §5).
    pub fn code(&self) -> u16 {
        match self {
            Refusal::Malformed | Refusal::NotARequest(_) => ERR_ILLEGAL,
            Refusal::Write => ERR_ACCESS,
            Refusal::NotFound => ERR_NOT_FOUND,
            Refusal::Unreadable { not_found, .. } => {
                if *not_found {
                    ERR_NOT_FOUND
                } else {
                    ERR_UNDEFINED
                }
            }
            Refusal::Mode(_) | Refusal::NotReady | Refusal::Busy(_) | Refusal::NoResources(_) => {
                ERR_UNDEFINED
            }
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed => f.write_str("Illegal TFTP operation: malformed request"),
            Refusal::NotARequest(op) => write!(f, "Illegal TFTP operation: opcode {op}"),
            Refusal::Write => f.write_str("Access violation: read-only server"),
            Refusal::Mode(m) => write!(f, "only octet mode is served, not {m}"),
            Refusal::NotReady => f.write_str("image not ready"),
            Refusal::NotFound => f.write_str("File not found"),
            Refusal::Busy(n) => write!(f, "server busy ({n} transfers)"),
            Refusal::Unreadable { error, .. } => write!(f, "image not readable: {error}"),
            Refusal::NoResources(e) => write!(f, "no resources for a transfer: {e}"),
        }
    }
}

/// What to do with a datagram on the listening port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A read request for the served file, with room for it.
    Accept(Request),
    /// Answer with an error; `name` is the file asked for, when there is one.
    Refuse { name: Option<String>, why: Refusal },
    /// Say nothing: an ERROR packet, or a request repeated by a client being served.
    Ignore,
}

/// Whether `asked` names the served file: the same name, with or without one leading `/` (a
/// `tftp://host/ap1g8` URL asks for `/ap1g8`). Nothing else: no folders, no `..`.
pub fn names_served(asked: &str, served: &str) -> bool {
    !served.is_empty() && asked.strip_prefix('/').unwrap_or(asked) == served
}

/// Decides about `datagram` on the listening port. `served`: the name served, `None` when the
/// image is not ready; `active`: transfers running; `duplicate`: the sender already has a
/// transfer (its request was repeated before our first answer reached it).
pub fn check_request(
    datagram: &[u8],
    served: Option<&str>,
    active: usize,
    max_transfers: usize,
    duplicate: bool,
) -> Verdict {
    let req = match parse(datagram) {
        Some(Packet::Request(r)) => r,
        Some(Packet::Error { .. }) => return Verdict::Ignore,
        Some(Packet::Data { .. }) => return refuse(None, Refusal::NotARequest(3)),
        Some(Packet::Ack { .. }) => return refuse(None, Refusal::NotARequest(4)),
        Some(Packet::Oack(_)) => return refuse(None, Refusal::NotARequest(6)),
        Some(Packet::Other(op)) => return refuse(None, Refusal::NotARequest(op)),
        None => return refuse(None, Refusal::Malformed),
    };
    if duplicate {
        return Verdict::Ignore;
    }
    let name = Some(req.filename.clone());
    if req.write {
        return refuse(name, Refusal::Write);
    }
    if req.mode != "octet" {
        return refuse(name, Refusal::Mode(req.mode));
    }
    let Some(served) = served else {
        return refuse(name, Refusal::NotReady);
    };
    if !names_served(&req.filename, served) {
        return refuse(name, Refusal::NotFound);
    }
    if active >= max_transfers {
        return refuse(name, Refusal::Busy(max_transfers));
    }
    Verdict::Accept(req)
}

fn refuse(name: Option<String>, why: Refusal) -> Verdict {
    Verdict::Refuse { name, why }
}

/// The options agreed for a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    /// The retransmission timeout: the client's (RFC 2349) or the configured one.
    pub timeout: Duration,
    /// The options the OACK answers, in the order asked; empty: no OACK, DATA 1 at once.
    pub oack: Vec<(&'static str, String)>,
}

/// Agrees the options of a request for a file of `size` bytes (RFC 2347): blksize (8..=65464,
/// no more than `max_blksize`), windowsize (no more than `max_windowsize`), timeout (1..=255
/// seconds, used as asked), tsize (answered with `size`). Unknown options, invalid values and
/// repeated names are left out of the OACK, which is what refusing an option means.
pub fn negotiate(options: &[(String, String)], size: u64, cfg: &TftpdConfig) -> Negotiated {
    let mut n = Negotiated {
        blksize: 512,
        windowsize: 1,
        timeout: cfg.timeout,
        oack: Vec::new(),
    };
    for (name, value) in options {
        let Ok(v) = value.trim().parse::<u64>() else {
            continue;
        };
        let name: &'static str = match name.as_str() {
            "blksize" => "blksize",
            "windowsize" => "windowsize",
            "timeout" => "timeout",
            "tsize" => "tsize",
            _ => continue,
        };
        if n.oack.iter().any(|(k, _)| *k == name) {
            continue;
        }
        let answer = match name {
            "blksize" if v >= 8 => {
                n.blksize = v.min(u64::from(cfg.max_blksize.min(MAX_BLKSIZE))) as u16;
                n.blksize.to_string()
            }
            "windowsize" if v >= 1 => {
                n.windowsize = v.min(u64::from(cfg.max_windowsize.min(MAX_WINDOWSIZE))) as u16;
                n.windowsize.to_string()
            }
            "timeout" if (1..=255).contains(&v) => {
                n.timeout = Duration::from_secs(v);
                v.to_string()
            }
            "tsize" => size.to_string(),
            _ => continue,
        };
        n.oack.push((name, answer));
    }
    n
}

/// Why a transfer ended without the file delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferError {
    /// `retries` retransmissions went unanswered.
    TimedOut { retransmissions: u32 },
    /// The client sent an ERROR (it gave up, or refused the OACK with error 8).
    Peer { code: u16, message: String },
    /// Reading the file failed.
    Read(String),
    /// The server stopped.
    Stopped,
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::TimedOut { retransmissions } => {
                write!(f, "timed out after {retransmissions} retransmissions")
            }
            TransferError::Peer { code, message } => {
                write!(f, "ended by the client: error {code} ({message})")
            }
            TransferError::Read(e) => write!(f, "failed: read error: {e}"),
            TransferError::Stopped => f.write_str("stopped: server stopping"),
        }
    }
}

impl std::error::Error for TransferError {}

/// A datagram to send.
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    pub to: SocketAddr,
    pub payload: &'a [u8],
}

/// One transfer to one client, sans-IO: [`Transfer::handle`] the datagrams from it,
/// [`Transfer::handle_timeout`] when [`Transfer::poll_timeout`] is due, and send what
/// [`Transfer::poll_transmit`] gives until it gives nothing; [`Transfer::outcome`] says when it
/// is over.
///
/// The window is one buffer of `windowsize` slots, each a whole DATA datagram (header and up
/// to blksize bytes), allocated when the transfer starts. Blocks are counted from 1 without
/// wrapping; the block number on the wire is that count modulo 65536.
pub struct Transfer<R> {
    src: R,
    peer: SocketAddr,
    blksize: usize,
    window: u64,
    timeout: Duration,
    retries: u32,
    buf: Vec<u8>,
    /// Datagram length of each slot.
    lens: Vec<usize>,
    /// The OACK until ACK 0 arrives (`None`: no options agreed, or acknowledged).
    oack: Option<Vec<u8>>,
    oack_due: bool,
    /// The first block not acknowledged.
    base: u64,
    /// Blocks read into the window, from `base`.
    filled: u64,
    /// The next block to send.
    next: u64,
    /// The highest block sent (0: none).
    sent_hi: u64,
    /// The final (short) block, once read.
    last: Option<u64>,
    deadline: Instant,
    /// Retransmissions since the last progress, and in all.
    tries: u32,
    retransmissions: u32,
    acked_bytes: u64,
    bytes_sent: u64,
    /// An ERROR due to be sent (to the peer, or to a stranger using its port).
    reply_to: Option<SocketAddr>,
    reply: Vec<u8>,
    outcome: Option<Result<u64, TransferError>>,
}

impl<R: Read> Transfer<R> {
    /// Starts sending `src` to `peer`: the OACK first when options were agreed, else DATA 1.
    pub fn new(
        src: R,
        peer: SocketAddr,
        neg: &Negotiated,
        retries: u32,
        now: Instant,
    ) -> Transfer<R> {
        let blksize = usize::from(neg.blksize.clamp(8, MAX_BLKSIZE));
        let window = neg.windowsize.clamp(1, MAX_WINDOWSIZE);
        let oack = (!neg.oack.is_empty()).then(|| oack(&neg.oack));
        let mut t = Transfer {
            src,
            peer,
            blksize,
            window: u64::from(window),
            timeout: neg.timeout,
            retries,
            buf: vec![0; usize::from(window) * (HDR + blksize)],
            lens: vec![0; usize::from(window)],
            oack_due: oack.is_some(),
            oack,
            base: 1,
            filled: 0,
            next: 1,
            sent_hi: 0,
            last: None,
            deadline: now + neg.timeout,
            tries: 0,
            retransmissions: 0,
            acked_bytes: 0,
            bytes_sent: 0,
            reply_to: None,
            reply: Vec::new(),
            outcome: None,
        };
        t.fill();
        t
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
    pub fn blksize(&self) -> usize {
        self.blksize
    }
    pub fn windowsize(&self) -> u16 {
        self.window as u16
    }
    /// Data bytes sent, retransmissions included.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }
    /// Data bytes the client acknowledged.
    pub fn acked_bytes(&self) -> u64 {
        self.acked_bytes
    }
    /// Retransmissions (of the OACK or a window), in all.
    pub fn retransmissions(&self) -> u32 {
        self.retransmissions
    }
    /// `Some` once the transfer is over: the bytes delivered, or why not.
    pub fn outcome(&self) -> Option<&Result<u64, TransferError>> {
        self.outcome.as_ref()
    }
    /// When [`Transfer::handle_timeout`] is due; `None` once over.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outcome.is_none().then_some(self.deadline)
    }

    fn slot(&self, block: u64) -> usize {
        (block % self.window) as usize
    }

    /// Reads blocks into the free slots of the window.
    fn fill(&mut self) {
        let stride = HDR + self.blksize;
        while self.outcome.is_none() && self.last.is_none() && self.filled < self.window {
            let block = self.base + self.filled;
            let slot = self.slot(block);
            let dgram = &mut self.buf[slot * stride..(slot + 1) * stride];
            match read_full(&mut self.src, &mut dgram[HDR..]) {
                Ok(n) => {
                    dgram[..HDR].copy_from_slice(&data_header(block as u16));
                    self.lens[slot] = HDR + n;
                    self.filled += 1;
                    if n < self.blksize {
                        self.last = Some(block);
                    }
                }
                Err(e) => self.fail(
                    TransferError::Read(e.to_string()),
                    "read error on the server",
                ),
            }
        }
    }

    /// Ends the transfer, telling the client why (error 0).
    fn fail(&mut self, why: TransferError, message: &str) {
        self.reply_to = Some(self.peer);
        self.reply = error_packet(ERR_UNDEFINED, message);
        self.outcome = Some(Err(why));
    }

    /// Ends the transfer because the server stops; the client is told.
    pub fn abort(&mut self) {
        if self.outcome.is_none() {
            self.fail(TransferError::Stopped, "server stopping");
        }
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        if let Some(to) = self.reply_to.take() {
            return Some(Transmit {
                to,
                payload: &self.reply,
            });
        }
        if self.outcome.is_some() {
            return None;
        }
        if let Some(o) = &self.oack {
            if !self.oack_due {
                return None; // waiting for ACK 0
            }
            self.oack_due = false;
            return Some(Transmit {
                to: self.peer,
                payload: o,
            });
        }
        if self.next >= self.base + self.filled {
            return None;
        }
        let block = self.next;
        self.next += 1;
        self.sent_hi = self.sent_hi.max(block);
        let slot = self.slot(block);
        let start = slot * (HDR + self.blksize);
        let len = self.lens[slot];
        self.bytes_sent += (len - HDR) as u64;
        Some(Transmit {
            to: self.peer,
            payload: &self.buf[start..start + len],
        })
    }

    /// A datagram received on the transfer's socket from `from`.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let pkt = parse(datagram);
        if from != self.peer {
            // Another transfer ID (RFC 1350 §4): tell it, and go on. An ERROR is not answered.
            if !matches!(pkt, Some(Packet::Error { .. })) {
                self.reply_to = Some(from);
                self.reply = error_packet(ERR_UNKNOWN_TID, "Unknown transfer ID");
            }
            return;
        }
        if self.outcome.is_some() {
            return;
        }
        match pkt {
            Some(Packet::Ack { block }) => self.on_ack(now, block),
            Some(Packet::Error { code, message }) => {
                self.outcome = Some(Err(TransferError::Peer { code, message }));
            }
            // Anything else from the client is ignored, as tftpd-hpa does.
            _ => {}
        }
    }

    fn on_ack(&mut self, now: Instant, block: u16) {
        // How far past the last acknowledged block (base - 1) this one is, modulo 65536.
        let acked = self.base - 1;
        let ahead = u64::from(block.wrapping_sub(acked as u16));
        if self.oack.is_some() {
            // Only ACK 0 answers the OACK; data starts then.
            if ahead == 0 {
                self.oack = None;
                self.progress(now);
            }
            return;
        }
        if ahead == 0 || acked + ahead > self.sent_hi {
            // A duplicate (never answered: Sorcerer's Apprentice), an old one, or a block not
            // sent yet.
            return;
        }
        for b in self.base..self.base + ahead {
            self.acked_bytes += (self.lens[self.slot(b)] - HDR) as u64;
        }
        self.base += ahead;
        self.filled -= ahead;
        if self.last.is_some_and(|l| self.base > l) {
            self.outcome = Some(Ok(self.acked_bytes));
            return;
        }
        self.fill();
        self.progress(now);
    }

    /// Progress: send from the first unacknowledged block (the rest of the window again when
    /// the ACK was inside it, RFC 7440 §4), with a fresh timer and retry count.
    fn progress(&mut self, now: Instant) {
        self.next = self.base;
        self.tries = 0;
        self.deadline = now + self.timeout;
    }

    /// Retransmits (the OACK, or the window) when the timer is due, or gives up after
    /// `retries` retransmissions without progress.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.outcome.is_some() || now < self.deadline {
            return;
        }
        if self.tries >= self.retries {
            let why = TransferError::TimedOut {
                retransmissions: self.tries,
            };
            self.fail(why, "Timed out");
            return;
        }
        self.tries += 1;
        self.retransmissions += 1;
        if self.oack.is_some() {
            self.oack_due = true;
        } else {
            self.next = self.base;
        }
        self.deadline = now + self.timeout;
    }
}

/// Reads until `buf` is full or the end of the file; the number of bytes read.
fn read_full(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Counters since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TftpdStats {
    /// Transfers running now.
    pub active: usize,
    /// Transfers that delivered the whole file.
    pub completed: u64,
    /// Transfers that ended otherwise (timeout, client error, read error, stop).
    pub failed: u64,
    /// Requests refused because `max_transfers` were running.
    pub refused_busy: u64,
    /// Requests refused for another reason (name, write, mode, not ready, malformed).
    pub refused: u64,
    /// Data bytes sent, retransmissions included.
    pub bytes_sent: u64,
    /// Retransmissions (an OACK or a window), in all.
    pub retransmissions: u64,
}

/// What the threads share.
struct Shared {
    cfg: TftpdConfig,
    /// The served name and file; `None`: not ready.
    served: Mutex<Option<(String, PathBuf)>>,
    /// The clients with a transfer running.
    active: Mutex<HashSet<SocketAddr>>,
    stop: AtomicBool,
    /// The counters (`active` unused: that is `active.len()`). A lock, not atomics: 32-bit
    /// MIPS has no 64-bit atomics, and the counters change once a datagram at most.
    counters: Mutex<TftpdStats>,
}

/// A lock that a panicked holder did not poison for the others (the data stays consistent:
/// every holder only inserts, removes or replaces).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running server: a listener thread, and a thread per transfer.
pub struct TftpServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    listener: Option<JoinHandle<()>>,
}

impl TftpServer {
    /// Binds `cfg.bind` and starts serving; nothing is served until [`TftpServer::serve`].
    pub fn start(cfg: TftpdConfig) -> io::Result<TftpServer> {
        let cfg = cfg.sanitized();
        let sock = UdpSocket::bind(cfg.bind)?;
        let addr = sock.local_addr()?;
        sock.set_read_timeout(Some(TICK))?;
        let shared = Arc::new(Shared {
            cfg,
            served: Mutex::new(None),
            active: Mutex::new(HashSet::new()),
            stop: AtomicBool::new(false),
            counters: Mutex::new(TftpdStats::default()),
        });
        let s = Arc::clone(&shared);
        let listener = std::thread::Builder::new()
            .name("tftpd".into())
            .spawn(move || listen(&s, sock))?;
        info!(
            "TFTP: listening on {addr} (at most {} transfers, blksize up to {}, windowsize up to {})",
            shared.cfg.max_transfers, shared.cfg.max_blksize, shared.cfg.max_windowsize
        );
        Ok(TftpServer {
            shared,
            addr,
            listener: Some(listener),
        })
    }

    /// The listening address (with the port chosen when `bind` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What is served from now on: `(name, file)`, or `None` ("image not ready"). Transfers
    /// running go on with the file they opened.
    pub fn serve(&self, file: Option<(String, PathBuf)>) {
        match &file {
            Some((name, path)) => info!("TFTP: serving {name} from {}", path.display()),
            None => info!("TFTP: serving nothing (image not ready)"),
        }
        *lock(&self.shared.served) = file;
    }

    pub fn stats(&self) -> TftpdStats {
        let s = &self.shared;
        TftpdStats {
            active: lock(&s.active).len(),
            ..*lock(&s.counters)
        }
    }

    /// Stops: the transfers running end (their clients get "server stopping"), the sockets
    /// close and the threads are joined. Dropping the server does the same.
    pub fn stop(self) {}

    fn shutdown(&mut self) {
        if let Some(h) = self.listener.take() {
            self.shared.stop.store(true, Ordering::Relaxed);
            if h.join().is_err() {
                warn!("TFTP: the listener thread panicked");
            }
            info!("TFTP: stopped listening on {}", self.addr);
        }
    }
}

impl Drop for TftpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn is_wait(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// The listener thread: requests until stopped, then the transfers are joined.
fn listen(shared: &Arc<Shared>, sock: UdpSocket) {
    let mut buf = vec![0u8; 2048];
    let mut transfers: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, peer)) => on_request(shared, &sock, &buf[..n], peer, &mut transfers),
            Err(e) if is_wait(&e) => {}
            // An ICMP port unreachable after an error we sent to a client that left.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                warn!("TFTP: receive: {e}");
                std::thread::sleep(TICK);
            }
        }
        let (done, running) = transfers.drain(..).partition(|h| h.is_finished());
        transfers = running;
        join_all(done);
    }
    drop(sock);
    join_all(transfers);
}

fn join_all(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        if h.join().is_err() {
            warn!("TFTP: a transfer thread panicked");
        }
    }
}

fn on_request(
    shared: &Arc<Shared>,
    sock: &UdpSocket,
    datagram: &[u8],
    peer: SocketAddr,
    transfers: &mut Vec<JoinHandle<()>>,
) {
    let cfg = &shared.cfg;
    let served = lock(&shared.served).clone();
    let mut active = lock(&shared.active);
    let verdict = check_request(
        datagram,
        served.as_ref().map(|(n, _)| n.as_str()),
        active.len(),
        cfg.max_transfers,
        active.contains(&peer),
    );
    let req = match verdict {
        Verdict::Ignore => return,
        Verdict::Refuse { name, why } => {
            drop(active);
            return refuse_to(shared, sock, peer, name.as_deref(), &why);
        }
        Verdict::Accept(req) => req,
    };
    let Some((name, path)) = served else {
        return; // checked by check_request
    };
    let file = match File::open(&path).and_then(|f| f.metadata().map(|m| (f, m.len()))) {
        Ok(f) => f,
        Err(e) => {
            drop(active);
            let why = Refusal::Unreadable {
                not_found: e.kind() == io::ErrorKind::NotFound,
                error: e.to_string(),
            };
            return refuse_to(shared, sock, peer, Some(&name), &why);
        }
    };
    let (file, size) = file;
    let neg = negotiate(&req.options, size, cfg);
    // The transfer's own port on the listener's address: its transfer ID.
    let tsock = match UdpSocket::bind(SocketAddr::new(sock_ip(sock), 0)) {
        Ok(s) => s,
        Err(e) => {
            drop(active);
            let why = Refusal::NoResources(format!("socket: {e}"));
            return refuse_to(shared, sock, peer, Some(&name), &why);
        }
    };
    info!(
        "TFTP: sending {name} to {peer} (blksize {}, windowsize {}, {size} bytes)",
        neg.blksize, neg.windowsize
    );
    active.insert(peer);
    drop(active);
    let s = Arc::clone(shared);
    let n = name.clone();
    match std::thread::Builder::new()
        .name("tftpd-transfer".into())
        .spawn(move || run_transfer(&s, tsock, file, peer, &neg, &n, size))
    {
        Ok(h) => transfers.push(h),
        Err(e) => {
            lock(&shared.active).remove(&peer);
            let why = Refusal::NoResources(format!("thread: {e}"));
            refuse_to(shared, sock, peer, Some(&name), &why);
        }
    }
}

fn sock_ip(sock: &UdpSocket) -> std::net::IpAddr {
    match sock.local_addr() {
        Ok(a) => a.ip(),
        Err(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
    }
}

fn refuse_to(
    shared: &Shared,
    sock: &UdpSocket,
    peer: SocketAddr,
    name: Option<&str>,
    why: &Refusal,
) {
    match why {
        Refusal::Busy(_) => lock(&shared.counters).refused_busy += 1,
        _ => lock(&shared.counters).refused += 1,
    }
    match (name, why) {
        (_, Refusal::NotARequest(_) | Refusal::Malformed) => {
            debug!("TFTP: answered {peer}: {why}")
        }
        (Some(name), _) => info!("TFTP: refused {name} to {peer}: {why}"),
        (None, _) => info!("TFTP: refused a request from {peer}: {why}"),
    }
    if let Err(e) = sock.send_to(&error_packet(why.code(), &why.to_string()), peer) {
        debug!("TFTP: error to {peer}: {e}");
    }
}

/// A transfer thread: the sans-IO [`Transfer`] on its own socket, until it ends.
fn run_transfer(
    shared: &Shared,
    sock: UdpSocket,
    file: File,
    peer: SocketAddr,
    neg: &Negotiated,
    name: &str,
    size: u64,
) {
    let origin = std::time::Instant::now();
    let now = || Instant::from_duration(origin.elapsed());
    let mut t = Transfer::new(file, peer, neg, shared.cfg.retries, now());
    let mut buf = [0u8; 1024];
    let mut reported = (0u64, 0u32);
    loop {
        while let Some(tx) = t.poll_transmit() {
            if let Err(e) = sock.send_to(tx.payload, tx.to) {
                // As if lost: the timer sends it again.
                debug!("TFTP: send to {}: {e}", tx.to);
            }
        }
        if (t.bytes_sent(), t.retransmissions()) != reported {
            let mut c = lock(&shared.counters);
            c.bytes_sent += t.bytes_sent() - reported.0;
            c.retransmissions += u64::from(t.retransmissions() - reported.1);
        }
        reported = (t.bytes_sent(), t.retransmissions());
        if t.outcome().is_some() {
            break;
        }
        let wait = t
            .poll_timeout()
            .map_or(TICK, |d| d.saturating_since(now()))
            .clamp(Duration::from_millis(1), TICK);
        if let Err(e) = sock.set_read_timeout(Some(wait)) {
            debug!("TFTP: set_read_timeout: {e}");
        }
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => t.handle(now(), from, &buf[..n]),
            Err(e) if is_wait(&e) => {}
            // ICMP port unreachable: the client went away; its silence times the transfer out.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                debug!("TFTP: receive from {peer}: {e}");
                std::thread::sleep(wait);
            }
        }
        t.handle_timeout(now());
        // After what was already received: a final ACK is not lost to a stop.
        if shared.stop.load(Ordering::Relaxed) {
            t.abort();
        }
    }
    let secs = origin.elapsed().as_secs_f64();
    match t.outcome() {
        Some(Ok(bytes)) => {
            lock(&shared.counters).completed += 1;
            let again = match t.retransmissions() {
                0 => String::new(),
                n => format!(", {n} retransmissions"),
            };
            info!("TFTP: sent {name} to {peer}: {bytes} bytes in {secs:.1} s{again}");
        }
        Some(Err(e)) => {
            lock(&shared.counters).failed += 1;
            warn!(
                "TFTP: transfer of {name} to {peer} {e} ({} of {size} bytes acknowledged, {secs:.1} s)",
                t.acked_bytes()
            );
        }
        None => {}
    }
    lock(&shared.active).remove(&peer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::tftp::{ack, rrq};

    fn peer() -> SocketAddr {
        ([10, 0, 0, 2], 40001).into()
    }
    fn at(ms: u64) -> Instant {
        Instant::from_duration(Duration::from_millis(ms))
    }
    fn opts(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }
    fn neg(blksize: u16, windowsize: u16, oack: &[(&'static str, &str)]) -> Negotiated {
        Negotiated {
            blksize,
            windowsize,
            timeout: Duration::from_secs(1),
            oack: oack.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        }
    }
    fn file(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }
    /// Everything due to be sent: (to, packet).
    fn drain<R: Read>(t: &mut Transfer<R>) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(tx) = t.poll_transmit() {
            out.push((tx.to, tx.payload.to_vec()));
        }
        out
    }
    /// The DATA block numbers among `pkts`.
    fn blocks(pkts: &[(SocketAddr, Vec<u8>)]) -> Vec<u16> {
        pkts.iter()
            .filter_map(|(_, p)| match parse(p) {
                Some(Packet::Data { block, .. }) => Some(block),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn negotiation_caps_options_and_ignores_unknown_ones() {
        let cfg = TftpdConfig::default();
        let n = negotiate(
            &opts(&[
                ("multicast", "1"),
                ("blksize", "65464"),
                ("tsize", "0"),
                ("windowsize", "64"),
                ("timeout", "3"),
                ("utimeout", "5000"),
            ]),
            3_000_601,
            &cfg,
        );
        assert_eq!((n.blksize, n.windowsize), (1468, 8));
        assert_eq!(n.timeout, Duration::from_secs(3));
        let want: Vec<(&str, String)> = vec![
            ("blksize", "1468".into()),
            ("tsize", "3000601".into()),
            ("windowsize", "8".into()),
            ("timeout", "3".into()),
        ];
        assert_eq!(n.oack, want, "the OACK answers what was asked, in order");

        // Smaller than the caps: granted as asked.
        let n = negotiate(&opts(&[("BLKSIZE", "512"), ("windowsize", "4")]), 9, &cfg);
        assert_eq!((n.blksize, n.windowsize), (512, 4));

        // Invalid values are refused by leaving them out; repeated names count once.
        let n = negotiate(
            &opts(&[
                ("blksize", "7"),
                ("windowsize", "0"),
                ("timeout", "0"),
                ("timeout", "256"),
                ("tsize", "x"),
                ("tsize", "0"),
                ("tsize", "0"),
            ]),
            5,
            &cfg,
        );
        assert_eq!((n.blksize, n.windowsize), (512, 1));
        assert_eq!(n.timeout, cfg.timeout);
        assert_eq!(n.oack, vec![("tsize", "5".to_string())]);

        // No options, or only unknown ones: no OACK, plain 512-byte blocks.
        for o in [opts(&[]), opts(&[("rollover", "0")])] {
            let n = negotiate(&o, 5, &cfg);
            assert_eq!((n.blksize, n.windowsize, n.oack.len()), (512, 1, 0));
        }

        // The configured caps, within the protocol's ranges.
        let cfg = TftpdConfig {
            max_blksize: 65535,
            max_windowsize: 0,
            ..cfg
        }
        .sanitized();
        let n = negotiate(&opts(&[("blksize", "99999"), ("windowsize", "9")]), 0, &cfg);
        assert_eq!((n.blksize, n.windowsize), (65464, 1));
    }

    #[test]
    fn requests_are_checked_in_order() {
        let ok = rrq("ap1g8", &[]);
        let check = |d: &[u8], served, active| check_request(d, served, active, 3, false);
        assert!(matches!(check(&ok, Some("ap1g8"), 2), Verdict::Accept(_)));
        assert!(matches!(
            check(&rrq("/ap1g8", &[]), Some("ap1g8"), 0),
            Verdict::Accept(_)
        ));
        let why = |v: Verdict| match v {
            Verdict::Refuse { why, .. } => (why.code(), why.to_string()),
            other => panic!("{other:?}"),
        };
        assert_eq!(why(check(&ok, None, 0)), (0, "image not ready".into()));
        assert_eq!(
            why(check(&ok, Some("ap1g8"), 3)),
            (0, "server busy (3 transfers)".into())
        );
        for name in [
            "ap1g6", "../ap1g8", "x/ap1g8", "//ap1g8", "ap1g8/", "AP1G8", "/",
        ] {
            assert_eq!(
                why(check(&rrq(name, &[]), Some("ap1g8"), 0)),
                (1, "File not found".into()),
                "{name}"
            );
        }
        assert_eq!(why(check(&rrq("/", &[]), Some(""), 0)).0, 1);
        let wrq = b"\0\x02ap1g8\0octet\0";
        assert_eq!(why(check(wrq, Some("ap1g8"), 0)).0, 2);
        let ascii = b"\0\x01ap1g8\0netascii\0";
        assert_eq!(
            why(check(ascii, Some("ap1g8"), 0)),
            (0, "only octet mode is served, not netascii".into())
        );
        assert_eq!(why(check(b"\0\x01ap1g8\0", Some("ap1g8"), 0)).0, 4);
        assert_eq!(why(check(&ack(1), Some("ap1g8"), 0)).0, 4);
        assert_eq!(why(check(&[], Some("ap1g8"), 0)).0, 4);
        // An ERROR is never answered; a request repeated by a client being served neither.
        assert_eq!(check(b"\0\x05\0\0bye\0", Some("ap1g8"), 0), Verdict::Ignore);
        assert_eq!(
            check_request(&ok, Some("ap1g8"), 3, 3, true),
            Verdict::Ignore
        );
        // Junk never panics.
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(29) ^ n).collect();
            let _ = check(&junk, Some("ap1g8"), 0);
        }
    }

    /// A client like the project's: acknowledges every `window` blocks, the last block, and
    /// on a gap the last block in order. Returns the file.
    fn receive(t: &mut Transfer<&[u8]>, blksize: usize, window: u16) -> Vec<u8> {
        let mut got = Vec::new();
        let mut last: u16 = 0;
        let mut in_window = 0;
        let mut now = 0;
        while t.outcome().is_none() {
            let pkts = drain(t);
            assert!(!pkts.is_empty(), "stalled at block {last}");
            for (to, p) in pkts {
                assert_eq!(to, peer());
                let (block, data) = match parse(&p) {
                    Some(Packet::Oack(_)) if now == 0 => {
                        t.handle(at(now), peer(), &ack(0));
                        continue;
                    }
                    Some(Packet::Data { block, data }) => (block, data),
                    _ => panic!("not DATA: {p:?}"),
                };
                assert!(data.len() <= blksize);
                if block != last.wrapping_add(1) {
                    t.handle(at(now), peer(), &ack(last));
                    in_window = 0;
                    continue;
                }
                got.extend_from_slice(data);
                last = block;
                in_window += 1;
                if data.len() < blksize || in_window == window {
                    t.handle(at(now), peer(), &ack(block));
                    in_window = 0;
                }
            }
            now += 1;
        }
        assert_eq!(t.outcome(), Some(&Ok(got.len() as u64)));
        got
    }

    #[test]
    fn files_arrive_whole_with_a_short_final_block() {
        for (size, blk, win) in [
            (0, 512, 1),
            (1000, 512, 1),
            (1024, 512, 1), // a multiple: an empty final block
            (1024, 512, 4),
            (4096, 512, 8),
            (10_000, 1468, 4),
            (10_000, 8, 3),
        ] {
            let data = file(size);
            let o = if blk == 512 && win == 1 {
                vec![]
            } else {
                vec![("blksize", "x")]
            };
            let n = neg(blk, win, &o);
            let mut t = Transfer::new(&data[..], peer(), &n, 5, at(0));
            let got = receive(&mut t, usize::from(blk), win);
            assert_eq!(got, data, "size {size} blksize {blk} windowsize {win}");
            assert_eq!(t.bytes_sent(), size as u64, "each block sent once");
            assert_eq!(t.retransmissions(), 0);
        }
    }

    #[test]
    fn exact_multiple_ends_with_an_empty_block() {
        let data = file(1024);
        let mut t = Transfer::new(&data[..], peer(), &neg(512, 1, &[]), 5, at(0));
        let mut lens = Vec::new();
        for b in 1..=3u16 {
            let p = drain(&mut t);
            assert_eq!(blocks(&p), vec![b]);
            lens.push(p[0].1.len() - 4);
            t.handle(at(0), peer(), &ack(b));
        }
        assert_eq!(lens, vec![512, 512, 0]);
        assert_eq!(t.outcome(), Some(&Ok(1024)));
        assert!(drain(&mut t).is_empty());
    }

    #[test]
    fn oack_waits_for_ack_0() {
        let data = file(100);
        let n = neg(64, 1, &[("blksize", "64"), ("tsize", "100")]);
        let mut t = Transfer::new(&data[..], peer(), &n, 5, at(0));
        let p = drain(&mut t);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].1, b"\0\x06blksize\x0064\0tsize\x00100\0");
        // Nothing else until ACK 0; an ACK 1 is not one.
        t.handle(at(10), peer(), &ack(1));
        assert!(drain(&mut t).is_empty());
        // The OACK is sent again on the timeout.
        t.handle_timeout(at(1000));
        assert_eq!(drain(&mut t).len(), 1);
        t.handle(at(1100), peer(), &ack(0));
        assert_eq!(blocks(&drain(&mut t)), vec![1]);
        // A second ACK 0 (the client's retransmission) changes nothing.
        t.handle(at(1100), peer(), &ack(0));
        assert!(drain(&mut t).is_empty());
        t.handle(at(1200), peer(), &ack(1));
        let p = drain(&mut t);
        assert_eq!(blocks(&p), vec![2]);
        assert_eq!(p[0].1.len(), 4 + 36);
        t.handle(at(1300), peer(), &ack(2));
        assert_eq!(t.outcome(), Some(&Ok(100)));
    }

    #[test]
    fn window_slides_on_an_ack_inside_it() {
        let data = file(8 * 20);
        let n = neg(8, 4, &[]);
        let mut t = Transfer::new(&data[..], peer(), &n, 5, at(0));
        assert_eq!(blocks(&drain(&mut t)), vec![1, 2, 3, 4]);
        // Block 3 lost: the client acknowledges 2; sending resumes at 3.
        t.handle(at(5), peer(), &ack(2));
        assert_eq!(blocks(&drain(&mut t)), vec![3, 4, 5, 6]);
        // Its second ACK 2 (block 4 arrived too) is a duplicate: nothing.
        t.handle(at(5), peer(), &ack(2));
        assert!(drain(&mut t).is_empty());
        t.handle(at(6), peer(), &ack(6));
        assert_eq!(blocks(&drain(&mut t)), vec![7, 8, 9, 10]);
        // An ACK for a block not sent yet, or an old one, is ignored.
        t.handle(at(7), peer(), &ack(11));
        t.handle(at(7), peer(), &ack(1));
        assert!(drain(&mut t).is_empty());
        t.handle(at(8), peer(), &ack(10));
        assert_eq!(blocks(&drain(&mut t)), vec![11, 12, 13, 14]);
    }

    #[test]
    fn duplicate_acks_cause_no_retransmission_storm() {
        // Every ACK arrives twice (the delayed-packet case of the Sorcerer's Apprentice): every
        // block is still sent once.
        let data = file(512 * 50 + 3);
        let mut t = Transfer::new(&data[..], peer(), &neg(512, 1, &[]), 5, at(0));
        let mut sent = 0;
        let mut got = Vec::new();
        while t.outcome().is_none() {
            for (_, p) in drain(&mut t) {
                let Some(Packet::Data { block, data }) = parse(&p) else {
                    panic!()
                };
                sent += 1;
                got.extend_from_slice(data);
                t.handle(at(0), peer(), &ack(block));
                t.handle(at(0), peer(), &ack(block));
            }
        }
        assert_eq!(sent, 51);
        assert_eq!(got, data);
    }

    #[test]
    fn block_numbers_roll_over() {
        // 65,536 + 2 blocks of 8 bytes: 65535 -> 0 -> 1.
        let data = file(8 * 65_537 + 5);
        let mut t = Transfer::new(&data[..], peer(), &neg(8, 8, &[]), 5, at(0));
        let got = receive(&mut t, 8, 8);
        assert_eq!(got, data);

        // The wire numbers around the roll-over, with windowsize 1.
        let mut t = Transfer::new(&data[..], peer(), &neg(8, 1, &[]), 5, at(0));
        let mut seen = Vec::new();
        while t.outcome().is_none() {
            let p = drain(&mut t);
            let b = blocks(&p)[0];
            seen.push(b);
            t.handle(at(0), peer(), &ack(b));
        }
        assert_eq!(seen.len(), 65_538);
        assert_eq!(seen[65_533..], [65534, 65535, 0, 1, 2]);
    }

    #[test]
    fn retransmits_on_timeout_and_gives_up_after_the_retries() {
        let data = file(8 * 10);
        let mut t = Transfer::new(&data[..], peer(), &neg(8, 2, &[]), 3, at(0));
        assert_eq!(blocks(&drain(&mut t)), vec![1, 2]);
        assert_eq!(t.poll_timeout(), Some(at(1000)));
        t.handle_timeout(at(999));
        assert!(drain(&mut t).is_empty(), "not yet due");
        t.handle_timeout(at(1000));
        assert_eq!(blocks(&drain(&mut t)), vec![1, 2], "the window again");
        // Progress resets the count.
        t.handle(at(1500), peer(), &ack(1));
        assert_eq!(blocks(&drain(&mut t)), vec![2, 3]);
        assert_eq!(t.poll_timeout(), Some(at(2500)));
        for i in 1..=3 {
            t.handle_timeout(at(1500 + i * 1000));
            assert_eq!(blocks(&drain(&mut t)), vec![2, 3], "retransmission {i}");
        }
        t.handle_timeout(at(5500));
        assert_eq!(
            t.outcome(),
            Some(&Err(TransferError::TimedOut { retransmissions: 3 }))
        );
        assert_eq!(
            t.outcome().unwrap().as_ref().unwrap_err().to_string(),
            "timed out after 3 retransmissions"
        );
        let p = drain(&mut t);
        assert_eq!(p.len(), 1);
        assert!(matches!(
            parse(&p[0].1),
            Some(Packet::Error { code: 0, .. })
        ));
        assert_eq!(t.poll_timeout(), None);
        assert_eq!(t.retransmissions(), 4);
        assert_eq!(t.acked_bytes(), 8);
    }

    #[test]
    fn other_transfer_ids_get_error_5_and_change_nothing() {
        let data = file(100);
        let mut t = Transfer::new(&data[..], peer(), &neg(512, 1, &[]), 5, at(0));
        drain(&mut t);
        let stranger: SocketAddr = ([10, 0, 0, 2], 40002).into();
        t.handle(at(1), stranger, &ack(1));
        let p = drain(&mut t);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, stranger);
        assert_eq!(
            parse(&p[0].1),
            Some(Packet::Error {
                code: 5,
                message: "Unknown transfer ID".into()
            })
        );
        // An ERROR from a stranger is not answered.
        t.handle(at(1), stranger, b"\0\x05\0\0x\0");
        assert!(drain(&mut t).is_empty());
        assert!(t.outcome().is_none());
        t.handle(at(2), peer(), &ack(1));
        assert_eq!(t.outcome(), Some(&Ok(100)));
    }

    #[test]
    fn client_errors_end_the_transfer_and_junk_does_not() {
        let data = file(5000);
        let mut t = Transfer::new(&data[..], peer(), &neg(512, 4, &[]), 5, at(0));
        drain(&mut t);
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(31) ^ n).collect();
            if matches!(
                parse(&junk),
                Some(Packet::Error { .. } | Packet::Ack { .. })
            ) {
                continue;
            }
            t.handle(at(1), peer(), &junk);
        }
        assert!(t.outcome().is_none());
        t.handle(at(2), peer(), b"\0\x05\0\x03Disk full\0");
        assert_eq!(
            t.outcome().unwrap().as_ref().unwrap_err().to_string(),
            "ended by the client: error 3 (Disk full)"
        );
        assert!(drain(&mut t).is_empty(), "an ERROR is not answered");
    }

    #[test]
    fn read_errors_and_stop_tell_the_client() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("EIO"))
            }
        }
        let mut t = Transfer::new(Broken, peer(), &neg(512, 1, &[]), 5, at(0));
        assert_eq!(t.outcome(), Some(&Err(TransferError::Read("EIO".into()))));
        let p = drain(&mut t);
        assert_eq!(
            parse(&p[0].1),
            Some(Packet::Error {
                code: 0,
                message: "read error on the server".into()
            })
        );

        let data = file(5000);
        let mut t = Transfer::new(&data[..], peer(), &neg(512, 1, &[]), 5, at(0));
        drain(&mut t);
        t.abort();
        assert_eq!(t.outcome(), Some(&Err(TransferError::Stopped)));
        let p = drain(&mut t);
        assert_eq!(
            parse(&p[0].1),
            Some(Packet::Error {
                code: 0,
                message: "server stopping".into()
            })
        );
    }
}
