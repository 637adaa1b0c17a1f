//! An emulated WAN link in user space, for benches on one host where netem is not available
//! (issue 14): a site's access points reach the controller through a [`Link`] that adds a
//! one-way delay, caps the rate and optionally loses packets.
//!
//! A [`Link`] is one site's access link: two directions, "up" (toward the controller) and
//! "down" (toward the APs), each with its own rate cap (`rate_bps` applies to each direction,
//! like a symmetric access line) and its own FIFO queue. Relays attach to a link and share it:
//! [`Link::udp`] (CAPWAP control or data, one relay per port) and [`Link::tcp`] (an HTTPS
//! download), so every flow of a site, UDP and TCP alike, competes for the same rate and queue.
//!
//! What is emulated, per direction:
//! - serialization at the rate: a packet of `b` counted bytes occupies the line `b × 8 / rate`
//!   seconds, after the packets before it (a FIFO, first come first served across flows);
//! - then the one-way `delay` (propagation), so a request/answer sees `2 × delay` plus the
//!   serialization times;
//! - a tail-drop queue of [`QUEUE_LIMIT`] bytes of link time (256 KiB, about 2.1 s at 1 Mbit/s)
//!   ahead of the line, like a router's; UDP packets that do not fit are dropped and counted,
//!   a TCP relay waits instead (it cannot lose bytes it has acknowledged to its sender);
//! - random loss with probability `loss` per UDP packet, from a PRNG seeded by `seed` (one
//!   stream per direction): the same packets in the same order lose the same ones.
//!
//! What is counted: the payload plus [`UDP_OVERHEAD`] (28: IPv4 + UDP header) per UDP datagram,
//! and the payload plus [`TCP_OVERHEAD`] (52: IPv4 + TCP header + timestamps option) per TCP
//! segment of at most [`TCP_SEGMENT`] (1448) bytes. Both go against the rate and into
//! [`DirStats::bytes`]; [`DirStats::payload_bytes`] counts the payload alone.
//!
//! What is not emulated: reordering and jitter (the delay is constant and each direction is a
//! FIFO), link-layer framing (Ethernet, PPP), loss or corruption of TCP segments, TCP handshakes
//! and ACKs (the relay terminates TCP on both sides: connecting is not delayed and ACKs cost no
//! link bytes), and MTU/fragmentation (a datagram is one packet whatever its size). A TCP flow
//! keeps at most [`TCP_WINDOW`] bytes in the link, like a receive window: with a rate cap it
//! queues at most 0.5 s (at 1 Mbit/s) ahead of other traffic; without one its throughput is
//! at most that window per one-way delay. A reset is passed on at once, not after the delay.
//!
//! Implementation: std threads and sockets. One scheduler thread per link delivers packets
//! when they are due: the due times of a direction never decrease (constant delay after a FIFO
//! line), so a queue per direction ordered by due time stands for the usual heap, and the
//! thread sleeps on a condition variable until the earliest one (no spinning; the wake-up is
//! within a fraction of a millisecond). Each UDP relay has one thread that polls its listening
//! socket and one upstream socket per client; each TCP connection has a reader and a writer
//! thread per direction. Memory is bounded: the queue limit, [`IN_FLIGHT_LIMIT`] bytes in the
//! delay line per direction, [`MAX_UDP_CLIENTS`], [`MAX_TCP_CONNECTIONS`] and the TCP window.
//! `stop()` or dropping the handles stops and joins every thread.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Bytes counted per UDP datagram beyond its payload: an IPv4 header and a UDP header.
pub const UDP_OVERHEAD: usize = 28;
/// Bytes counted per TCP segment beyond its payload: IPv4 and TCP headers with timestamps.
pub const TCP_OVERHEAD: usize = 52;
/// The largest TCP segment payload the relay sends (an MSS of 1460 less the timestamps).
pub const TCP_SEGMENT: usize = 1448;
/// The tail-drop queue ahead of the line, per direction, in counted bytes (as link time).
pub const QUEUE_LIMIT: usize = 256 * 1024;
/// Counted bytes per direction between the line and their delivery (the delay line), at most.
pub const IN_FLIGHT_LIMIT: usize = 16 * 1024 * 1024;
/// Payload bytes a TCP flow direction may have in the link and not yet written out.
pub const TCP_WINDOW: usize = 64 * 1024;
/// A UDP client mapping with no packet either way for this long is forgotten.
pub const UDP_IDLE: Duration = Duration::from_secs(120);
/// Client mappings per UDP relay; packets of further clients are dropped (counted).
pub const MAX_UDP_CLIENTS: usize = 4096;
/// Open connections per TCP relay; further ones are closed at once.
pub const MAX_TCP_CONNECTIONS: usize = 256;

/// The longest one-way delay accepted.
const MAX_DELAY: Duration = Duration::from_secs(3600);
/// How often blocked threads look at the stop flags.
const POLL: Duration = Duration::from_millis(50);
/// Datagrams read from one socket before the relay looks at the others.
const UDP_BURST: usize = 64;

/// One site's access link.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WanConfig {
    /// One-way delay, each direction (0 ..= 1 h).
    pub delay: Duration,
    /// Rate cap in bits per second, each direction on its own (a symmetric access line);
    /// `None` is no cap. Counted bytes: see the module documentation.
    pub rate_bps: Option<u64>,
    /// Probability (0 ..= 1) that a UDP packet is lost, each direction. TCP is never lost.
    pub loss: f64,
    /// Seed of the loss decisions.
    pub seed: u64,
}

impl WanConfig {
    fn check(&self) -> io::Result<()> {
        let bad = |what: &str| {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                what.to_string(),
            ))
        };
        if self.delay > MAX_DELAY {
            return bad("WAN delay above one hour");
        }
        if self.rate_bps == Some(0) {
            return bad("WAN rate of 0 bit/s");
        }
        if !(0.0..=1.0).contains(&self.loss) {
            return bad("WAN loss outside 0..=1");
        }
        Ok(())
    }
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirStats {
    /// Packets (UDP datagrams, TCP segments) delivered out of the link.
    pub packets: u64,
    /// Their counted bytes: payload plus [`UDP_OVERHEAD`] or [`TCP_OVERHEAD`] each.
    pub bytes: u64,
    /// Their payload bytes.
    pub payload_bytes: u64,
    /// UDP packets lost at random (`loss`).
    pub lost: u64,
    /// UDP packets dropped: queue full, delay line full, client table full, or the final send
    /// failed.
    pub dropped: u64,
}

/// Counters of a link: `up` toward the controller, `down` toward the APs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WanStats {
    pub up: DirStats,
    pub down: DirStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Up = 0,
    Down = 1,
}

/// splitmix64: small, seedable, good enough for loss decisions.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What happens to a packet when it is due.
enum Deliver {
    /// Sent on `sock`: to `to`, or on a connected socket.
    Udp {
        sock: Arc<UdpSocket>,
        to: Option<SocketAddr>,
        data: Vec<u8>,
    },
    /// Handed to a TCP flow's writer; `None` is the end of the stream (half-close).
    Tcp {
        flow: Arc<Flow>,
        data: Option<Vec<u8>>,
    },
}

struct Pending {
    due: Instant,
    wire: usize,
    payload: usize,
    what: Deliver,
}

struct Lane {
    /// When the line is free again.
    busy: Option<Instant>,
    /// Packets in the line or the delay, by due time (never decreasing).
    queue: VecDeque<Pending>,
    /// Counted bytes in `queue`.
    in_flight: usize,
    rng: Rng,
    stats: DirStats,
}

struct State {
    lanes: [Lane; 2],
}

struct Shared {
    cfg: WanConfig,
    /// The queue limit as link time (with a rate cap).
    queue_time: Option<Duration>,
    st: Mutex<State>,
    /// The scheduler waits here.
    wake: Condvar,
    /// TCP readers waiting for room wait here.
    room: Condvar,
    stop: AtomicBool,
    relays: Mutex<Vec<Weak<Relay>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wait_for<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>, d: Duration) -> MutexGuard<'a, T> {
    cv.wait_timeout(g, d).unwrap_or_else(|e| e.into_inner()).0
}

impl Shared {
    fn tx_time(rate: Option<u64>, bytes: usize) -> Duration {
        match rate {
            None | Some(0) => Duration::ZERO,
            Some(r) => {
                let ns = (bytes as u128).saturating_mul(8_000_000_000) / u128::from(r);
                Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
            }
        }
    }

    /// Where a packet of `wire` counted bytes arriving `now` goes: `(line free again, due)`,
    /// or no room (with, when the room comes with time alone, when to try again).
    fn slot(
        &self,
        lane: &Lane,
        now: Instant,
        wire: usize,
    ) -> Result<(Instant, Instant), Option<Instant>> {
        if lane.in_flight.saturating_add(wire) > IN_FLIGHT_LIMIT {
            return Err(None);
        }
        let start = match lane.busy {
            Some(b) if b > now => b,
            _ => now,
        };
        let end = start
            .checked_add(Self::tx_time(self.cfg.rate_bps, wire))
            .ok_or(None)?;
        if let Some(limit) = self.queue_time {
            let backlog = end.saturating_duration_since(now);
            if backlog > limit {
                return Err(now.checked_add(backlog - limit));
            }
        }
        let mut due = end.checked_add(self.cfg.delay).ok_or(None)?;
        if let Some(last) = lane.queue.back() {
            due = due.max(last.due);
        }
        Ok((end, due))
    }

    fn push(&self, lane: &mut Lane, end: Instant, due: Instant, p: (usize, usize, Deliver)) {
        let (wire, payload, what) = p;
        lane.busy = Some(end);
        lane.in_flight += wire;
        lane.queue.push_back(Pending {
            due,
            wire,
            payload,
            what,
        });
        self.wake.notify_one();
    }

    /// A UDP datagram into the link: lost, dropped, or queued.
    fn send_udp(&self, dir: Dir, sock: Arc<UdpSocket>, to: Option<SocketAddr>, data: Vec<u8>) {
        let mut st = lock(&self.st);
        let lane = &mut st.lanes[dir as usize];
        if self.cfg.loss > 0.0 && lane.rng.next_f64() < self.cfg.loss {
            lane.stats.lost += 1;
            return;
        }
        let payload = data.len();
        let wire = payload + UDP_OVERHEAD;
        match self.slot(lane, Instant::now(), wire) {
            Ok((end, due)) => {
                let what = Deliver::Udp { sock, to, data };
                self.push(lane, end, due, (wire, payload, what));
            }
            Err(_) => lane.stats.dropped += 1,
        }
    }

    fn drop_udp(&self, dir: Dir) {
        lock(&self.st).lanes[dir as usize].stats.dropped += 1;
    }

    /// A TCP segment (or the end of the stream) into the link, waiting for room. False once
    /// the link or the relay stops.
    fn send_tcp(&self, relay: &Relay, dir: Dir, flow: &Arc<Flow>, data: Option<Vec<u8>>) -> bool {
        let payload = data.as_ref().map_or(0, Vec::len);
        let wire = if data.is_some() {
            payload + TCP_OVERHEAD
        } else {
            0
        };
        let mut what = Some(Deliver::Tcp {
            flow: flow.clone(),
            data,
        });
        let mut st = lock(&self.st);
        loop {
            if self.stop.load(Ordering::SeqCst) || relay.stop.load(Ordering::SeqCst) {
                return false;
            }
            let now = Instant::now();
            let lane = &mut st.lanes[dir as usize];
            match self.slot(lane, now, wire) {
                Ok((end, due)) => {
                    if let Some(what) = what.take() {
                        self.push(lane, end, due, (wire, payload, what));
                    }
                    return true;
                }
                Err(retry) => {
                    let wait = retry
                        .map_or(POLL, |t| t.saturating_duration_since(now).min(POLL))
                        .max(Duration::from_micros(100));
                    st = wait_for(&self.room, st, wait);
                }
            }
        }
    }

    fn stopping(&self) {
        {
            let _g = lock(&self.st);
            self.stop.store(true, Ordering::SeqCst);
        }
        self.wake.notify_all();
        self.room.notify_all();
    }
}

/// The scheduler: delivers each packet when it is due.
fn run_scheduler(sh: Arc<Shared>) {
    let mut out: Vec<(Dir, usize, usize, Deliver)> = Vec::new();
    let mut st = lock(&sh.st);
    loop {
        if sh.stop.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for (i, dir) in [Dir::Up, Dir::Down].into_iter().enumerate() {
            let lane = &mut st.lanes[i];
            while let Some(due) = lane.queue.front().map(|p| p.due) {
                if due > now {
                    next = Some(next.map_or(due, |n| n.min(due)));
                    break;
                }
                if let Some(p) = lane.queue.pop_front() {
                    lane.in_flight -= p.wire;
                    if p.wire > 0 {
                        lane.stats.packets += 1;
                        lane.stats.bytes += p.wire as u64;
                        lane.stats.payload_bytes += p.payload as u64;
                    }
                    out.push((dir, p.wire, p.payload, p.what));
                }
            }
        }
        if out.is_empty() {
            let wait = next.map_or(Duration::from_secs(1), |t| t - now);
            st = wait_for(&sh.wake, st, wait);
            continue;
        }
        drop(st);
        sh.room.notify_all();
        let mut failures = Vec::new();
        for (dir, wire, payload, what) in out.drain(..) {
            match what {
                Deliver::Udp { sock, to, data } => {
                    let sent = match to {
                        Some(to) => sock.send_to(&data, to),
                        None => sock.send(&data),
                    };
                    if sent.is_err() {
                        failures.push((dir, wire, payload));
                    }
                }
                Deliver::Tcp { flow, data } => flow.arrive(data),
            }
        }
        st = lock(&sh.st);
        for (dir, wire, payload) in failures {
            let s = &mut st.lanes[dir as usize].stats;
            s.packets = s.packets.saturating_sub(1);
            s.bytes = s.bytes.saturating_sub(wire as u64);
            s.payload_bytes = s.payload_bytes.saturating_sub(payload as u64);
            s.dropped += 1;
        }
    }
}

/// The threads and connections of one relay.
struct Relay {
    stop: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    conns: Mutex<Vec<Weak<Conn>>>,
    clients: AtomicUsize,
}

impl Relay {
    fn new() -> Arc<Relay> {
        Arc::new(Relay {
            stop: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            conns: Mutex::new(Vec::new()),
            clients: AtomicUsize::new(0),
        })
    }

    fn stopped(&self, sh: &Shared) -> bool {
        self.stop.load(Ordering::SeqCst) || sh.stop.load(Ordering::SeqCst)
    }

    fn stop_and_join(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in lock(&self.conns).iter().filter_map(Weak::upgrade) {
            c.abort();
        }
        loop {
            let threads = std::mem::take(&mut *lock(&self.threads));
            if threads.is_empty() {
                return;
            }
            for t in threads {
                let _ = t.join();
            }
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name(name.to_string()).spawn(f)
}

/// `poll(2)` for input on `fds`.
fn poll_in(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    let n = libc::nfds_t::try_from(fds.len()).unwrap_or(0);
    // SAFETY: fds is a valid, exclusively borrowed array of n pollfd structures for the call.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), n, ms) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

fn pollfd(fd: libc::c_int) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// One site's emulated access link; relays attached to it share its rate, queue and counters.
/// Cloning gives another handle to the same link; it stops when `stop` is called or the last
/// handle (the relays' included) is dropped.
#[derive(Clone)]
pub struct Link {
    inner: Arc<LinkInner>,
}

struct LinkInner {
    shared: Arc<Shared>,
    scheduler: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for LinkInner {
    fn drop(&mut self) {
        self.stop();
    }
}

impl LinkInner {
    fn stop(&self) {
        self.shared.stopping();
        let relays = std::mem::take(&mut *lock(&self.shared.relays));
        for r in relays.iter().filter_map(Weak::upgrade) {
            r.stop_and_join();
        }
        if let Some(t) = lock(&self.scheduler).take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("config", &self.inner.shared.cfg)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A link with its scheduler thread. Fails on a delay above an hour, a rate of 0 or a loss
    /// outside 0..=1.
    pub fn new(cfg: WanConfig) -> io::Result<Link> {
        cfg.check()?;
        let lane = |salt: u64| Lane {
            busy: None,
            queue: VecDeque::new(),
            in_flight: 0,
            rng: Rng(cfg.seed ^ salt),
            stats: DirStats::default(),
        };
        let shared = Arc::new(Shared {
            cfg,
            queue_time: cfg.rate_bps.map(|r| Shared::tx_time(Some(r), QUEUE_LIMIT)),
            st: Mutex::new(State {
                lanes: [lane(0x7570), lane(0x646f_776e)],
            }),
            wake: Condvar::new(),
            room: Condvar::new(),
            stop: AtomicBool::new(false),
            relays: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let t = spawn("wan-scheduler", move || run_scheduler(sh))?;
        Ok(Link {
            inner: Arc::new(LinkInner {
                shared,
                scheduler: Mutex::new(Some(t)),
            }),
        })
    }

    pub fn config(&self) -> WanConfig {
        self.inner.shared.cfg
    }

    /// The counters so far.
    pub fn stats(&self) -> WanStats {
        let st = lock(&self.inner.shared.st);
        WanStats {
            up: st.lanes[0].stats,
            down: st.lanes[1].stats,
        }
    }

    /// Stops the link and every relay attached to it, joining their threads. Queued packets
    /// are dropped. Idempotent.
    pub fn stop(&self) {
        self.inner.stop();
    }

    fn attach(&self, relay: &Arc<Relay>) -> io::Result<()> {
        let sh = &self.inner.shared;
        let mut relays = lock(&sh.relays);
        if sh.stop.load(Ordering::SeqCst) {
            return Err(io::Error::other("WAN link stopped"));
        }
        relays.retain(|r| r.strong_count() > 0);
        relays.push(Arc::downgrade(relay));
        Ok(())
    }

    /// A UDP relay on `listen` (port 0 picks one) toward `upstream`, through this link. Each
    /// client address gets its own upstream socket, so the upstream sees distinct peers.
    pub fn udp(&self, listen: SocketAddr, upstream: SocketAddr) -> io::Result<WanUdp> {
        self.udp_idle(listen, upstream, UDP_IDLE)
    }

    fn udp_idle(
        &self,
        listen: SocketAddr,
        upstream: SocketAddr,
        idle: Duration,
    ) -> io::Result<WanUdp> {
        let sock = UdpSocket::bind(listen)?;
        sock.set_nonblocking(true)?;
        let addr = sock.local_addr()?;
        let relay = Relay::new();
        self.attach(&relay)?;
        let (sh, r) = (self.inner.shared.clone(), relay.clone());
        let sock = Arc::new(sock);
        let t = spawn("wan-udp", move || run_udp(sh, r, sock, upstream, idle))?;
        lock(&relay.threads).push(t);
        Ok(WanUdp {
            link: self.clone(),
            relay,
            addr,
        })
    }

    /// A TCP relay on `listen` toward `upstream`, through this link: each accepted connection
    /// gets its own upstream connection; bytes go as segments both ways, half-closes follow.
    pub fn tcp(&self, listen: SocketAddr, upstream: SocketAddr) -> io::Result<WanTcp> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let relay = Relay::new();
        self.attach(&relay)?;
        let (sh, r) = (self.inner.shared.clone(), relay.clone());
        let t = spawn("wan-tcp-accept", move || {
            run_accept(sh, r, listener, upstream)
        })?;
        lock(&relay.threads).push(t);
        Ok(WanTcp {
            link: self.clone(),
            relay,
            addr,
        })
    }
}

/// A UDP relay through a [`Link`]; stops when dropped.
pub struct WanUdp {
    link: Link,
    relay: Arc<Relay>,
    addr: SocketAddr,
}

impl WanUdp {
    /// A relay on a link of its own.
    pub fn start(cfg: WanConfig, listen: SocketAddr, upstream: SocketAddr) -> io::Result<WanUdp> {
        Link::new(cfg)?.udp(listen, upstream)
    }

    /// Where the clients send.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    pub fn stats(&self) -> WanStats {
        self.link.stats()
    }

    /// Client mappings now held.
    pub fn clients(&self) -> usize {
        self.relay.clients.load(Ordering::SeqCst)
    }

    /// Stops this relay (not the link) and joins its thread. Idempotent.
    pub fn stop(&self) {
        self.relay.stop_and_join();
    }
}

impl Drop for WanUdp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP relay through a [`Link`]; stops (closing its connections) when dropped.
pub struct WanTcp {
    link: Link,
    relay: Arc<Relay>,
    addr: SocketAddr,
}

impl WanTcp {
    /// Where the clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Stops this relay (not the link), closing its connections and joining its threads.
    pub fn stop(&self) {
        self.relay.stop_and_join();
    }
}

impl Drop for WanTcp {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Client {
    sock: Arc<UdpSocket>,
    last: Instant,
}

fn upstream_socket(upstream: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = if upstream.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(any)?;
    s.connect(upstream)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

fn run_udp(
    sh: Arc<Shared>,
    relay: Arc<Relay>,
    listen: Arc<UdpSocket>,
    upstream: SocketAddr,
    idle: Duration,
) {
    let sweep = idle.min(Duration::from_secs(1));
    let mut clients: HashMap<SocketAddr, Client> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let mut fds = Vec::new();
    let mut keys = Vec::new();
    let mut swept = Instant::now();
    while !relay.stopped(&sh) {
        fds.clear();
        keys.clear();
        fds.push(pollfd(listen.as_raw_fd()));
        for (k, c) in &clients {
            fds.push(pollfd(c.sock.as_raw_fd()));
            keys.push(*k);
        }
        if poll_in(&mut fds, POLL).is_err() {
            thread::sleep(Duration::from_millis(1));
            continue;
        }
        let now = Instant::now();
        if fds[0].revents != 0 {
            for _ in 0..UDP_BURST {
                let (n, src) = match listen.recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                if !clients.contains_key(&src) {
                    if clients.len() >= MAX_UDP_CLIENTS {
                        sh.drop_udp(Dir::Up);
                        continue;
                    }
                    match upstream_socket(upstream) {
                        Ok(s) => {
                            let c = Client {
                                sock: Arc::new(s),
                                last: now,
                            };
                            clients.insert(src, c);
                        }
                        Err(_) => {
                            sh.drop_udp(Dir::Up);
                            continue;
                        }
                    }
                }
                if let Some(c) = clients.get_mut(&src) {
                    c.last = now;
                    sh.send_udp(Dir::Up, c.sock.clone(), None, buf[..n].to_vec());
                }
            }
        }
        for (i, k) in keys.iter().enumerate() {
            if fds[i + 1].revents == 0 {
                continue;
            }
            let Some(c) = clients.get_mut(k) else {
                continue;
            };
            for _ in 0..UDP_BURST {
                match c.sock.recv(&mut buf) {
                    Ok(n) => {
                        c.last = now;
                        sh.send_udp(Dir::Down, listen.clone(), Some(*k), buf[..n].to_vec());
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // WouldBlock, or an ICMP error (port unreachable) reported once.
                    Err(_) => break,
                }
            }
        }
        if now.saturating_duration_since(swept) >= sweep {
            swept = now;
            clients.retain(|_, c| now.saturating_duration_since(c.last) < idle);
        }
        relay.clients.store(clients.len(), Ordering::SeqCst);
    }
}

/// One direction of a TCP connection, between the link and its writer.
struct Flow {
    st: Mutex<FlowState>,
    cv: Condvar,
}

struct FlowState {
    /// Segments out of the link, to write; `None` is the end of the stream.
    segs: VecDeque<Option<Vec<u8>>>,
    /// Payload read and not yet written out (the window).
    unwritten: usize,
    broken: bool,
}

impl Flow {
    fn new() -> Arc<Flow> {
        Arc::new(Flow {
            st: Mutex::new(FlowState {
                segs: VecDeque::new(),
                unwritten: 0,
                broken: false,
            }),
            cv: Condvar::new(),
        })
    }

    fn arrive(&self, data: Option<Vec<u8>>) {
        lock(&self.st).segs.push_back(data);
        self.cv.notify_all();
    }

    fn broken(&self) {
        lock(&self.st).broken = true;
        self.cv.notify_all();
    }

    /// Waits until `n` more bytes fit in the window and takes them; false when the flow
    /// breaks or `stopped` says so.
    fn reserve(&self, n: usize, stopped: impl Fn() -> bool) -> bool {
        let mut st = lock(&self.st);
        while st.unwritten + n > TCP_WINDOW {
            if st.broken || stopped() {
                return false;
            }
            st = wait_for(&self.cv, st, POLL);
        }
        st.unwritten += n;
        true
    }

    fn written(&self, n: usize) {
        let mut st = lock(&self.st);
        st.unwritten = st.unwritten.saturating_sub(n);
        self.cv.notify_all();
    }
}

/// A relayed connection: the client's side, the upstream side and the two flows.
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    /// Up (client to upstream), down.
    flows: [Arc<Flow>; 2],
}

impl Conn {
    fn abort(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
        for f in &self.flows {
            f.broken();
        }
    }

    /// (source, destination, flow) of a direction.
    fn ends(&self, dir: Dir) -> (&TcpStream, &TcpStream, &Arc<Flow>) {
        match dir {
            Dir::Up => (&self.client, &self.upstream, &self.flows[0]),
            Dir::Down => (&self.upstream, &self.client, &self.flows[1]),
        }
    }
}

fn run_accept(sh: Arc<Shared>, relay: Arc<Relay>, listener: TcpListener, upstream: SocketAddr) {
    while !relay.stopped(&sh) {
        let mut fds = [pollfd(listener.as_raw_fd())];
        if poll_in(&mut fds, POLL).is_err() {
            thread::sleep(Duration::from_millis(1));
            continue;
        }
        loop {
            match listener.accept() {
                Ok((client, _)) => start_conn(&sh, &relay, client, upstream),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // Out of descriptors and the like: do not spin on it.
                    thread::sleep(POLL);
                    break;
                }
            }
        }
    }
}

fn start_conn(sh: &Arc<Shared>, relay: &Arc<Relay>, client: TcpStream, upstream: SocketAddr) {
    lock(&relay.threads).retain(|t| !t.is_finished());
    let live = {
        let mut conns = lock(&relay.conns);
        conns.retain(|c| c.strong_count() > 0);
        conns.len()
    };
    if live >= MAX_TCP_CONNECTIONS {
        return;
    }
    let Ok(up) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
        return;
    };
    if client.set_nonblocking(false).is_err() {
        return;
    }
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let conn = Arc::new(Conn {
        client,
        upstream: up,
        flows: [Flow::new(), Flow::new()],
    });
    lock(&relay.conns).push(Arc::downgrade(&conn));
    if relay.stopped(sh) {
        conn.abort();
        return;
    }
    for dir in [Dir::Up, Dir::Down] {
        let (s, r, c) = (sh.clone(), relay.clone(), conn.clone());
        let reader = spawn("wan-tcp-read", move || run_reader(s, r, c, dir));
        let (s, r, c) = (sh.clone(), relay.clone(), conn.clone());
        let writer = spawn("wan-tcp-write", move || run_writer(s, r, c, dir));
        for t in [reader, writer] {
            match t {
                Ok(t) => lock(&relay.threads).push(t),
                Err(_) => conn.abort(),
            }
        }
    }
}

fn run_reader(sh: Arc<Shared>, relay: Arc<Relay>, conn: Arc<Conn>, dir: Dir) {
    let (mut src, _, flow) = conn.ends(dir);
    let mut buf = [0u8; TCP_SEGMENT];
    loop {
        let n = match src.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                conn.abort();
                return;
            }
        };
        if n == 0 {
            sh.send_tcp(&relay, dir, flow, None);
            return;
        }
        if !flow.reserve(n, || relay.stopped(&sh)) {
            return;
        }
        if !sh.send_tcp(&relay, dir, flow, Some(buf[..n].to_vec())) {
            return;
        }
    }
}

fn run_writer(sh: Arc<Shared>, relay: Arc<Relay>, conn: Arc<Conn>, dir: Dir) {
    let (_, mut dst, flow) = conn.ends(dir);
    loop {
        let seg = {
            let mut st = lock(&flow.st);
            loop {
                if st.broken || relay.stopped(&sh) {
                    return;
                }
                if let Some(seg) = st.segs.pop_front() {
                    break seg;
                }
                st = wait_for(&flow.cv, st, POLL);
            }
        };
        match seg {
            Some(data) => {
                if dst.write_all(&data).is_err() {
                    conn.abort();
                    return;
                }
                flow.written(data.len());
            }
            None => {
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY: &str = "127.0.0.1:0";

    fn any() -> SocketAddr {
        ANY.parse().unwrap()
    }

    fn site(delay_ms: u64, rate_bps: Option<u64>) -> WanConfig {
        WanConfig {
            delay: Duration::from_millis(delay_ms),
            rate_bps,
            loss: 0.0,
            seed: 1,
        }
    }

    /// Datagrams a sink received: (arrival, source, payload).
    type Received = Arc<Mutex<Vec<(Instant, SocketAddr, Vec<u8>)>>>;

    /// A UDP server on loopback calling `handle` for every datagram, until dropped.
    struct UdpServer {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl UdpServer {
        fn start(mut handle: impl FnMut(&UdpSocket, &[u8], SocketAddr) + Send + 'static) -> Self {
            let sock = UdpSocket::bind(ANY).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let addr = sock.local_addr().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let s = stop.clone();
            let thread = thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !s.load(Ordering::SeqCst) {
                    if let Ok((n, from)) = sock.recv_from(&mut buf) {
                        handle(&sock, &buf[..n], from);
                    }
                }
            });
            UdpServer {
                addr,
                stop,
                thread: Some(thread),
            }
        }

        fn echo() -> Self {
            Self::start(|s, d, from| {
                let _ = s.send_to(d, from);
            })
        }

        /// Records (arrival, source, payload) of every datagram.
        fn sink() -> (Self, Received) {
            let got = Arc::new(Mutex::new(Vec::new()));
            let g = got.clone();
            let server = Self::start(move |_, d, from| {
                g.lock().unwrap().push((Instant::now(), from, d.to_vec()));
            });
            (server, got)
        }
    }

    impl Drop for UdpServer {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(t) = self.thread.take() {
                t.join().unwrap();
            }
        }
    }

    fn client() -> UdpSocket {
        let s = UdpSocket::bind(ANY).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    /// Sends `count` datagrams of `size` bytes (the first four the sequence number), in
    /// bursts of 16 with a pause: far above 1 Mbit/s, but gentle on the socket buffers.
    fn blast(sock: &UdpSocket, to: SocketAddr, count: u32, size: usize) {
        let mut d = vec![0x5a; size];
        for i in 0..count {
            d[..4].copy_from_slice(&i.to_le_bytes());
            sock.send_to(&d, to).unwrap();
            if i % 16 == 15 {
                thread::sleep(Duration::from_millis(2));
            }
        }
    }

    /// Waits until `done` holds, for at most `limit`.
    fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if done() {
                return true;
            }
            thread::sleep(Duration::from_millis(1));
        }
        done()
    }

    /// A transfer took `e` seconds for `ideal` seconds of link time: not faster than the
    /// link allows (0.95 of it), nor slower than 1.3 times it plus `slack` seconds.
    fn assert_link_time(e: f64, ideal: f64, slack: f64) {
        eprintln!("{e:.3} s for {ideal:.3} s of link time");
        assert!(e >= 0.95 * ideal, "{e} s for {ideal} s of link time");
        assert!(
            e <= 1.3 * (ideal + slack),
            "{e} s for {ideal} s of link time"
        );
    }

    fn secs(bytes: u64, rate: u64) -> f64 {
        bytes as f64 * 8.0 / rate as f64
    }

    fn median(mut v: Vec<Duration>) -> Duration {
        v.sort();
        v[v.len() / 2]
    }

    #[test]
    fn udp_rtt_is_twice_the_delay() {
        let echo = UdpServer::echo();
        let wan = WanUdp::start(site(25, None), any(), echo.addr).unwrap();
        let c = client();
        let mut rtts = Vec::new();
        let mut buf = [0u8; 64];
        for i in 0..11u8 {
            let t = Instant::now();
            c.send_to(&[i; 20], wan.local_addr()).unwrap();
            let (n, from) = c.recv_from(&mut buf).unwrap();
            rtts.push(t.elapsed());
            assert_eq!((n, buf[0], from), (20, i, wan.local_addr()));
        }
        let min = *rtts.iter().min().unwrap();
        let med = median(rtts.clone());
        eprintln!("RTTs {rtts:?}");
        assert!(min >= Duration::from_millis(50), "{rtts:?}");
        assert!(med < Duration::from_millis(80), "{rtts:?}");
        let s = wan.stats();
        assert_eq!((s.up.packets, s.down.packets), (11, 11));
        assert_eq!(s.up.bytes, 11 * (20 + UDP_OVERHEAD as u64));
        assert_eq!(s.up.payload_bytes, 11 * 20);
    }

    #[test]
    fn udp_rate_cap_paces_a_burst() {
        let rate = 1_000_000;
        let (sink, got) = UdpServer::sink();
        let wan = WanUdp::start(site(25, Some(rate)), any(), sink.addr).unwrap();
        let c = client();
        let start = Instant::now();
        blast(&c, wan.local_addr(), 240, 1000);
        assert!(wait_until(Duration::from_secs(10), || got
            .lock()
            .unwrap()
            .len()
            == 240));
        let elapsed = got.lock().unwrap()[239].0 - start;
        let s = wan.stats();
        assert_eq!((s.up.packets, s.up.dropped), (240, 0));
        assert_eq!(s.up.bytes, 240 * 1028);
        let ideal = secs(s.up.bytes, rate);
        assert_link_time(elapsed.as_secs_f64(), ideal, 0.025);
        // In order.
        let seqs: Vec<u32> = got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, d)| u32::from_le_bytes([d[0], d[1], d[2], d[3]]))
            .collect();
        assert_eq!(seqs, (0..240).collect::<Vec<_>>());
    }

    #[test]
    fn udp_two_clients_share_the_cap() {
        let rate = 1_000_000;
        let (sink, got) = UdpServer::sink();
        let wan = WanUdp::start(site(25, Some(rate)), any(), sink.addr).unwrap();
        let to = wan.local_addr();
        let start = Instant::now();
        let senders: Vec<_> = (0..2)
            .map(|_| thread::spawn(move || blast(&client(), to, 120, 1000)))
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        assert!(wait_until(Duration::from_secs(10), || got
            .lock()
            .unwrap()
            .len()
            == 240));
        let got = got.lock().unwrap();
        let elapsed = got[239].0 - start;
        let sources: std::collections::HashSet<_> = got.iter().map(|g| g.1).collect();
        assert_eq!(sources.len(), 2);
        let s = wan.stats();
        assert_eq!((s.up.packets, s.up.dropped), (240, 0));
        let ideal = secs(s.up.bytes, rate);
        assert_link_time(elapsed.as_secs_f64(), ideal, 0.025);
        assert_eq!(wan.clients(), 2);
    }

    #[test]
    fn udp_clients_get_distinct_sources_and_their_answers() {
        // The server answers with the source it saw and the payload.
        let server = UdpServer::start(|s, d, from| {
            let answer = format!("{from}|{}", String::from_utf8_lossy(d));
            let _ = s.send_to(answer.as_bytes(), from);
        });
        let wan = WanUdp::start(site(1, None), any(), server.addr).unwrap();
        let (a, b) = (client(), client());
        let mut seen = Vec::new();
        for round in 0..3 {
            for (c, name) in [(&a, "a"), (&b, "b")] {
                let msg = format!("{name}{round}");
                c.send_to(msg.as_bytes(), wan.local_addr()).unwrap();
                let mut buf = [0u8; 256];
                let (n, from) = c.recv_from(&mut buf).unwrap();
                assert_eq!(from, wan.local_addr());
                let answer = String::from_utf8_lossy(&buf[..n]).to_string();
                let (src, echoed) = answer.split_once('|').unwrap();
                assert_eq!(echoed, msg);
                assert_ne!(src, c.local_addr().unwrap().to_string());
                seen.push((name, src.to_string()));
            }
        }
        let a_src: Vec<_> = seen.iter().filter(|s| s.0 == "a").map(|s| &s.1).collect();
        let b_src: Vec<_> = seen.iter().filter(|s| s.0 == "b").map(|s| &s.1).collect();
        assert!(a_src.iter().all(|s| *s == a_src[0]), "{seen:?}");
        assert!(b_src.iter().all(|s| *s == b_src[0]), "{seen:?}");
        assert_ne!(a_src[0], b_src[0]);
        assert_eq!(wan.clients(), 2);
    }

    #[test]
    fn udp_idle_clients_are_forgotten() {
        let server = UdpServer::start(|s, _, from| {
            let _ = s.send_to(from.to_string().as_bytes(), from);
        });
        let link = Link::new(site(1, None)).unwrap();
        let wan = link
            .udp_idle(any(), server.addr, Duration::from_millis(200))
            .unwrap();
        let c = client();
        let source = || {
            c.send_to(b"?", wan.local_addr()).unwrap();
            let mut buf = [0u8; 64];
            let (n, _) = c.recv_from(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).to_string()
        };
        let first = source();
        assert_eq!(first, source(), "an active client keeps its mapping");
        assert_eq!(wan.clients(), 1);
        assert!(wait_until(Duration::from_secs(3), || wan.clients() == 0));
        // Back after the expiry: a new mapping (its port is the kernel's pick and may by
        // chance be the old one, so only the count is checked), and the answers still arrive.
        assert!(!source().is_empty());
        assert_eq!(wan.clients(), 1);
    }

    /// Which of 2000 datagrams arrive through a link with loss 0.1 and `seed`.
    fn lossy_run(seed: u64) -> Vec<bool> {
        let (sink, got) = UdpServer::sink();
        let cfg = WanConfig {
            loss: 0.1,
            seed,
            ..site(2, None)
        };
        let wan = WanUdp::start(cfg, any(), sink.addr).unwrap();
        blast(&client(), wan.local_addr(), 2000, 32);
        let all_in = || {
            let s = wan.stats();
            s.up.packets + s.up.lost + s.up.dropped == 2000
                && got.lock().unwrap().len() as u64 == s.up.packets
        };
        assert!(wait_until(Duration::from_secs(10), all_in));
        thread::sleep(Duration::from_millis(50));
        let s = wan.stats();
        assert_eq!(s.up.dropped, 0);
        let mut arrived = vec![false; 2000];
        for (_, _, d) in got.lock().unwrap().iter() {
            arrived[u32::from_le_bytes([d[0], d[1], d[2], d[3]]) as usize] = true;
        }
        assert_eq!(arrived.iter().filter(|a| !**a).count() as u64, s.up.lost);
        arrived
    }

    #[test]
    fn udp_loss_is_about_the_rate_and_follows_the_seed() {
        let first = lossy_run(7);
        let lost = first.iter().filter(|a| !**a).count();
        eprintln!("{lost} of 2000 lost");
        assert!((100..=300).contains(&lost), "{lost} of 2000 lost");
        assert_eq!(lossy_run(7), first, "same seed, same losses");
        assert_ne!(lossy_run(8), first, "another seed, other losses");
    }

    #[test]
    fn udp_full_queue_drops_at_the_tail() {
        let (sink, _got) = UdpServer::sink();
        let wan = WanUdp::start(site(25, Some(1_000_000)), any(), sink.addr).unwrap();
        // 400 kB at once into a 256 KiB queue drained at 125 kB/s.
        blast(&client(), wan.local_addr(), 400, 1000);
        assert!(wait_until(Duration::from_secs(2), || wan
            .stats()
            .up
            .dropped
            > 0));
        let t = Instant::now();
        wan.link().stop();
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn udp_odd_datagrams_pass() {
        let (sink, got) = UdpServer::sink();
        let wan = WanUdp::start(site(1, None), any(), sink.addr).unwrap();
        let c = client();
        c.send_to(&[], wan.local_addr()).unwrap();
        c.send_to(&vec![7u8; 65507], wan.local_addr()).unwrap();
        assert!(wait_until(Duration::from_secs(2), || got
            .lock()
            .unwrap()
            .len()
            == 2));
        let got = got.lock().unwrap();
        assert_eq!((got[0].2.len(), got[1].2.len()), (0, 65507));
    }

    #[test]
    fn bad_configs_are_refused() {
        for cfg in [
            site(0, Some(0)),
            site(2 * 3600 * 1000, None),
            WanConfig {
                loss: 1.5,
                ..site(0, None)
            },
            WanConfig {
                loss: f64::NAN,
                ..site(0, None)
            },
        ] {
            assert!(Link::new(cfg).is_err(), "{cfg:?}");
        }
        assert!(Link::new(WanConfig::default()).is_ok());
    }

    /// A TCP server on loopback running `serve` on each connection in a thread of its own.
    fn tcp_server(serve: fn(TcpStream)) -> SocketAddr {
        let l = TcpListener::bind(ANY).unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                thread::spawn(move || serve(s));
            }
        });
        addr
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    /// Reads the request up to its end (the client's half-close), then sends 500 kB.
    fn serve_download(mut s: TcpStream) {
        let mut req = Vec::new();
        s.read_to_end(&mut req).unwrap();
        assert_eq!(req, b"GET /image");
        s.write_all(&pattern(500_000)).unwrap();
    }

    #[test]
    fn tcp_download_takes_bytes_over_rate() {
        let rate = 1_000_000;
        let server = tcp_server(serve_download);
        let link = Link::new(site(25, Some(rate))).unwrap();
        let wan = link.tcp(any(), server).unwrap();
        let start = Instant::now();
        let mut c = TcpStream::connect(wan.local_addr()).unwrap();
        c.write_all(b"GET /image").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut body = Vec::new();
        c.read_to_end(&mut body).unwrap();
        let e = start.elapsed().as_secs_f64();
        assert!(body == pattern(500_000), "{} bytes", body.len());
        let s = link.stats();
        assert_eq!(s.down.payload_bytes, 500_000);
        assert_eq!(s.down.bytes, 500_000 + s.down.packets * TCP_OVERHEAD as u64);
        assert_eq!(s.up.payload_bytes, 10);
        let payload = secs(500_000, rate);
        let ideal = secs(s.down.bytes, rate);
        eprintln!("{e:.3} s for {ideal:.3} s of link time");
        assert!(e >= 0.95 * payload, "{e} s for {payload} s of payload");
        assert!(e <= 1.3 * (ideal + 0.1), "{e} s for {ideal} s of link time");
    }

    fn serve_echo(mut s: TcpStream) {
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    }

    #[test]
    fn tcp_request_response_rtt() {
        let server = tcp_server(serve_echo);
        let link = Link::new(site(25, Some(1_000_000))).unwrap();
        let wan = link.tcp(any(), server).unwrap();
        let mut c = TcpStream::connect(wan.local_addr()).unwrap();
        c.set_nodelay(true).unwrap();
        let mut rtts = Vec::new();
        for i in 0..7u8 {
            let t = Instant::now();
            c.write_all(&[i; 10]).unwrap();
            let mut buf = [0u8; 10];
            c.read_exact(&mut buf).unwrap();
            rtts.push(t.elapsed());
            assert_eq!(buf, [i; 10]);
        }
        eprintln!("TCP RTTs {rtts:?}");
        assert!(
            *rtts.iter().min().unwrap() >= Duration::from_millis(50),
            "{rtts:?}"
        );
        assert!(median(rtts.clone()) < Duration::from_millis(80), "{rtts:?}");
        // Closing the client closes the upstream side: the echo server returns.
        drop(c);
        assert!(wait_until(Duration::from_secs(2), || lock(
            &wan.relay.conns
        )
        .iter()
        .all(|c| c.strong_count() == 0)));
    }

    /// Reads everything and answers with the byte count.
    fn serve_upload(mut s: TcpStream) {
        let mut n = 0u64;
        let mut buf = [0u8; 4096];
        while let Ok(k) = s.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        let _ = s.write_all(&n.to_le_bytes());
    }

    #[test]
    fn tcp_and_udp_share_the_cap() {
        let rate = 1_000_000;
        let server = tcp_server(serve_upload);
        let (sink, got) = UdpServer::sink();
        let link = Link::new(site(25, Some(rate))).unwrap();
        let tcp = link.tcp(any(), server).unwrap();
        let udp = link.udp(any(), sink.addr).unwrap();
        let start = Instant::now();
        let to = tcp.local_addr();
        let upload = thread::spawn(move || {
            let mut c = TcpStream::connect(to).unwrap();
            c.write_all(&pattern(200_000)).unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            let mut n = [0u8; 8];
            c.read_exact(&mut n).unwrap();
            (u64::from_le_bytes(n), Instant::now())
        });
        blast(&client(), udp.local_addr(), 100, 1000);
        let (n, tcp_done) = upload.join().unwrap();
        assert_eq!(n, 200_000);
        assert!(wait_until(Duration::from_secs(10), || got
            .lock()
            .unwrap()
            .len()
            == 100));
        let udp_done = got.lock().unwrap()[99].0;
        let e = (tcp_done.max(udp_done) - start).as_secs_f64();
        let s = link.stats();
        assert_eq!(s.up.dropped, 0);
        assert_eq!(s.up.payload_bytes, 200_000 + 100 * 1000);
        let ideal = secs(s.up.bytes, rate);
        assert_link_time(e, ideal, 0.1);
        // The UDP burst went out while TCP was sending: it waited behind TCP segments, so it
        // took longer than alone (0.82 s of link time).
        let udp_alone = secs(100 * 1028, rate);
        assert!(
            (udp_done - start).as_secs_f64() > udp_alone,
            "UDP was not slowed by TCP"
        );
    }

    #[test]
    fn stop_ends_relays_and_connections() {
        let server = tcp_server(serve_echo);
        let link = Link::new(site(25, Some(100_000))).unwrap();
        let tcp = link.tcp(any(), server).unwrap();
        let echo = UdpServer::echo();
        let udp = link.udp(any(), echo.addr).unwrap();
        let mut c = TcpStream::connect(tcp.local_addr()).unwrap();
        c.write_all(&pattern(100_000)).unwrap();
        client().send_to(b"x", udp.local_addr()).unwrap();
        thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        link.stop();
        assert!(t.elapsed() < Duration::from_secs(1));
        // The client sees its connection closed.
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut rest = Vec::new();
        if let Err(e) = c.read_to_end(&mut rest) {
            assert_ne!(e.kind(), io::ErrorKind::WouldBlock, "still open");
            assert_ne!(e.kind(), io::ErrorKind::TimedOut, "still open");
        }
        assert!(link.udp(any(), echo.addr).is_err());
        drop((tcp, udp));
    }
}
