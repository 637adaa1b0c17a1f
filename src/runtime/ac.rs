//! Drives the AC state machine (acsim) with real sockets, one DTLS server session per WTP.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use log::{info, warn};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Notify;

use super::udp::{RecvBatch, Udp};
use super::{earliest, io_err, warnings, write_atomic, Clock, RuntimeError};
use crate::ac::{Ac, AcAction, AcConfig};
use crate::capwap::header::{preamble, Preamble};
use crate::capwap::{Channel, CONTROL_PORT, DATA_PORT};
use crate::config::AcsimConfig;
use crate::dtls::{self, DtlsContext, DtlsEvent, DtlsListener, DtlsSession, Listened};
use crate::fetch::spool::{DownloadMode, RemoteSource};
use crate::image::source::{FolderSource, ImageSource};
use crate::pcap::PcapWriter;
use crate::time::Instant;

/// Receive buffer of the controller's sockets: a join storm of a thousand APs sends a
/// ClientHello each at once (the kernel caps it at net.core.rmem_max; the default 208 KiB held
/// about a hundred).
const RECV_BUFFER: usize = 4 << 20;

/// Datagrams taken from the control socket per wake-up.
const RECV_BATCH: usize = 32;

/// A handshake that has not finished after this long is dropped (WaitDTLS).
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(60);

/// A peer map whose capacity is this many times its length (and more than a few entries) is
/// shrunk, so that the memory a burst of handshakes took comes back when they expire.
const SHRINK_FACTOR: usize = 4;

struct Peer {
    session: DtlsSession,
    up: bool,
    /// When its handshake started; also what tells two sessions of one address apart.
    started: Instant,
}

/// A session that ended this turn: its address, its `started` (so that a new session that
/// replaced it in the same turn is not dropped in its place), and why.
type Ended = (SocketAddr, Instant, String);

/// Copies of the decrypted control traffic, as UDP frames on the standard ports.
struct Capture {
    writer: Option<PcapWriter>,
    listen: SocketAddr,
}

impl Capture {
    fn record(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8], data: bool) {
        let Some(w) = &mut self.writer else { return };
        // The AC end is shown on 5246/5247 whatever port acsim listens on, so that Wireshark
        // dissects the frames as CAPWAP.
        let std_port = if data { DATA_PORT } else { CONTROL_PORT };
        let fix = |a: SocketAddr| {
            if a.ip() == self.listen.ip()
                && (a.port() == self.listen.port() || a.port() == self.listen.port() + 1)
            {
                SocketAddr::new(a.ip(), std_port)
            } else {
                a
            }
        };
        if let Err(e) = w.write_udp(SystemTime::now(), fix(from), fix(to), bytes) {
            warn!("pcap write failed, capture stopped: {e}");
            self.writer = None;
        }
    }
}

/// Runs acsim's controller until SIGTERM or SIGINT.
pub async fn run(cfg: AcsimConfig, config_path: &Path) -> Result<i32, RuntimeError> {
    Controller::start(cfg, config_path).await?.run().await
}

/// What woke the event loop.
enum Wake {
    /// Datagrams on the control port: how many are in the batch.
    Control(std::io::Result<usize>),
    Data(std::io::Result<(usize, SocketAddr)>),
    Timer,
    /// A command other than `status` from the control socket's thread.
    Command(Option<ControlCommand>),
    /// `acsim status` asks for a fresh table.
    StatusWanted,
    Progress,
    Stop,
}

/// Everything the running controller holds: the AC state machine, its sockets, the DTLS
/// sessions and listener, the capture and the status file. Each step of the event loop is one
/// method.
struct Controller {
    cfg: AcsimConfig,
    ctx: Option<DtlsContext>,
    listener: Option<DtlsListener>,
    ctl: Udp,
    data: Udp,
    /// The control socket's address, and the data socket's (the next port).
    listen: SocketAddr,
    data_addr: SocketAddr,
    capture: Capture,
    clock: Clock,
    ac: Ac,
    /// Download threads of a remote image source wake the loop through this.
    progress: Arc<Notify>,
    peers: HashMap<SocketAddr, Peer>,
    /// New handshakes from addresses that still have an established session: a WTP that
    /// restarted without a close_notify (power cut, kill -9) and sends from the same port. The
    /// old session stays until the new handshake completes (RFC 6347 §4.2.8), so a forged
    /// ClientHello cannot tear a live WTP down.
    restarts: HashMap<SocketAddr, Peer>,
    sigterm: Signal,
    sigint: Signal,
    /// What the thread that serves the Unix socket `acsim status|predownload|activate|reset`
    /// talk to shares with the loop ([`ControlShared`]), and the commands it hands over.
    control: Arc<ControlShared>,
    commands: tokio::sync::mpsc::UnboundedReceiver<ControlCommand>,
    /// The packet being sent (the state machine copies each one here).
    out: Vec<u8>,
    last_status: Arc<String>,
    last_status_at: Option<Instant>,
    /// Peers whose session may have something to send or report: only they are driven after
    /// a datagram (driving every session per datagram made each datagram cost O(APs)).
    touched: Vec<SocketAddr>,
    /// Sessions dropped since the memory was last handed back.
    dropped: usize,
    /// The loop's deadline and when it was computed: the scan over every session and
    /// handshake runs at most every [`DEADLINE_REUSE`] while the loop is busy.
    deadline_cache: Option<(Instant, tokio::time::Instant)>,
}

/// How long a computed deadline is reused while datagrams keep the loop busy; timers fire at
/// most this late.
const DEADLINE_REUSE: Duration = Duration::from_millis(50);

impl Controller {
    /// Builds the DTLS context and listener, binds the sockets, opens the capture, picks the
    /// image source and builds the AC state machine.
    async fn start(cfg: AcsimConfig, config_path: &Path) -> Result<Controller, RuntimeError> {
        let dtls_cfg = cfg.dtls.to_dtls(config_path)?;
        let ctx = match &dtls_cfg {
            Some(c) => Some(DtlsContext::server(c)?),
            None => {
                warn!("DTLS is OFF: CAPWAP control messages travel in clear. Lab use only.");
                None
            }
        };
        // New peers go through the cookie exchange: nothing is kept for a ClientHello until it
        // comes back with a cookie for its source address (RFC 6347 §4.2.1).
        let listener = match &ctx {
            Some(c) => Some(DtlsListener::new(c)?),
            None => None,
        };
        let ctl = Udp::bind(cfg.listen).map_err(io_err(format!("bind {}", cfg.listen)))?;
        let listen = ctl.local_addr().map_err(io_err("local address"))?;
        let data_addr = SocketAddr::new(listen.ip(), listen.port().wrapping_add(1));
        let data = Udp::bind(data_addr).map_err(io_err(format!("bind {data_addr}")))?;
        for s in [&ctl, &data] {
            if let Err(e) = s
                .set_recv_buffer(RECV_BUFFER)
                .and_then(|_| s.set_send_buffer(RECV_BUFFER))
            {
                warn!("cannot enlarge the socket buffers: {e}");
            }
        }
        let writer = match &cfg.pcap {
            Some(p) => {
                Some(PcapWriter::create(p).map_err(io_err(format!("create {}", p.display())))?)
            }
            None => None,
        };
        let capture = Capture { writer, listen };
        info!(
            "acsim {} listening on {listen} (data {data_addr}), DTLS {:?}, controller version {}",
            cfg.name, cfg.dtls.mode, cfg.version
        );

        let clock = Clock::new();
        let mut ac_cfg = cfg.ac_config();
        let progress = Arc::new(Notify::new());
        let source = image_source(&cfg, &mut ac_cfg, &progress).await?;
        let ac = Ac::new(ac_cfg, source);
        let sigterm = signal(SignalKind::terminate()).map_err(io_err("SIGTERM handler"))?;
        let sigint = signal(SignalKind::interrupt()).map_err(io_err("SIGINT handler"))?;
        let control = Arc::new(ControlShared::default());
        let (command_tx, commands) = tokio::sync::mpsc::unbounded_channel();
        if let Some(p) = &cfg.control_socket {
            let _ = std::fs::remove_file(p);
            let listener = std::os::unix::net::UnixListener::bind(p)
                .map_err(io_err(format!("bind {}", p.display())))?;
            let shared = control.clone();
            std::thread::Builder::new()
                .name("acsim-control".into())
                .spawn(move || serve_control_socket(listener, shared, command_tx))
                .map_err(io_err("control socket thread"))?;
        }
        Ok(Controller {
            cfg,
            ctx,
            listener,
            ctl,
            data,
            listen,
            data_addr,
            capture,
            clock,
            ac,
            progress,
            peers: HashMap::new(),
            restarts: HashMap::new(),
            sigterm,
            sigint,
            control,
            commands,
            out: Vec::with_capacity(2048),
            last_status: Arc::new(String::new()),
            last_status_at: None,
            touched: Vec::new(),
            dropped: 0,
            deadline_cache: None,
        })
    }

    /// The event loop: carry out what was decided, write the status, drop handshakes that
    /// took too long, sleep until a datagram, a command, the next deadline or a signal.
    async fn run(mut self) -> Result<i32, RuntimeError> {
        // One timer for the loop, moved when the deadline moves (cheaper than a new one per
        // turn).
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        // Up to RECV_BATCH datagrams a wake-up (one recvmmsg), handled before the turn that
        // carries out what they decided; each slot holds a datagram of any size (the pages
        // are only touched as far as datagrams reach).
        let mut batch = RecvBatch::new(RECV_BATCH, 65536);
        let mut dbuf = vec![0u8; 2048];
        loop {
            self.carry_out_turn().await;
            self.write_status();
            let now = self.clock.now();
            let deadline = match self.deadline_cache {
                Some((at, d))
                    if !timer.is_elapsed() && now.saturating_since(at) < DEADLINE_REUSE =>
                {
                    d.min(self.clock.to_tokio(at + DEADLINE_REUSE))
                }
                _ => {
                    self.expire_handshakes(now);
                    let d = self.deadline(now);
                    self.deadline_cache = Some((now, d));
                    d
                }
            };
            if timer.is_elapsed() || timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            let wake = tokio::select! {
                r = self.ctl.recv_batch(&mut batch) => Wake::Control(r),
                r = self.data.recv_from(&mut dbuf) => Wake::Data(r),
                _ = &mut timer => Wake::Timer,
                cmd = self.commands.recv() => Wake::Command(cmd),
                _ = self.control.wanted.notified() => Wake::StatusWanted,
                _ = self.progress.notified() => Wake::Progress,
                _ = self.sigterm.recv() => Wake::Stop,
                _ = self.sigint.recv() => Wake::Stop,
            };
            match wake {
                Wake::Control(Ok(n)) => {
                    for i in 0..n {
                        let (bytes, from) = batch.datagram(i);
                        self.on_datagram(bytes, from).await;
                    }
                }
                Wake::Control(Err(e)) => {
                    limited_warn!("control socket error", None, "control socket: {e}")
                }
                Wake::Data(Ok((n, from))) => {
                    self.capture.record(from, self.data_addr, &dbuf[..n], true);
                    self.ac.handle_data(from, &dbuf[..n], self.clock.now());
                }
                Wake::Data(Err(e)) => limited_warn!("data socket error", None, "data socket: {e}"),
                Wake::Timer => {
                    for (addr, p) in self
                        .peers
                        .iter_mut()
                        .chain(self.restarts.iter_mut())
                        .filter(|(_, p)| !p.up)
                    {
                        p.session.handle_timeout();
                        self.touched.push(*addr);
                    }
                    self.ac.handle_timeout(self.clock.now());
                }
                Wake::Command(Some(cmd)) => self.on_command(cmd),
                Wake::Command(None) => {}
                Wake::StatusWanted => {
                    let table = status_table(&self.ac, self.clock.now());
                    self.control.publish(Arc::new(table));
                }
                Wake::Progress => self.ac.source_progress(self.clock.now()),
                Wake::Stop => break,
            }
        }
        self.close().await;
        Ok(0)
    }

    /// Carries out everything the state machine and the DTLS sessions have decided, until
    /// neither has more.
    async fn carry_out_turn(&mut self) {
        loop {
            // A session that left may have freed one of the max_transfers.
            self.ac.start_queued(self.clock.now());
            let mut busy = self.carry_out_actions().await;
            busy |= self.send_packets().await;
            let (driven, gone) = self.drive_sessions().await;
            busy |= driven;
            busy |= self.drive_restarts().await;
            self.drop_sessions(gone).await;
            if !busy {
                break;
            }
        }
    }

    /// Carries out the state machine's actions. True when there was any.
    async fn carry_out_actions(&mut self) -> bool {
        let mut any = false;
        while let Some(a) = self.ac.poll_action() {
            any = true;
            match a {
                AcAction::DtlsClose { peer } => {
                    if let Some(mut p) = self.peers.remove(&peer) {
                        self.dropped += 1;
                        p.session.close();
                        flush(&self.ctl, peer, &mut p.session).await;
                    }
                }
            }
        }
        any
    }

    /// Sends what the state machine queued, each on its channel. True when there was anything.
    async fn send_packets(&mut self) -> bool {
        let mut any = false;
        while let Some(t) = self.ac.poll_transmit(&mut self.out) {
            any = true;
            match t.channel {
                Channel::Data => {
                    self.capture.record(self.data_addr, t.to, &self.out, true);
                    send(&self.data, &self.out, t.to).await;
                }
                Channel::ControlClear => {
                    self.capture.record(self.listen, t.to, &self.out, false);
                    send(&self.ctl, &self.out, t.to).await;
                }
                Channel::ControlSecure => {
                    self.capture.record(self.listen, t.to, &self.out, false);
                    match self.peers.get_mut(&t.to) {
                        Some(p) if p.up => {
                            self.touched.push(t.to);
                            if let Err(e) = p.session.send(&self.out) {
                                limited_warn!(
                                    "DTLS send failed",
                                    Some(t.to),
                                    "DTLS send to {} failed: {e}",
                                    t.to
                                );
                            }
                        }
                        _ if self.ctx.is_none() => send(&self.ctl, &self.out, t.to).await,
                        _ => limited_warn!(
                            "no DTLS session: message dropped",
                            Some(t.to),
                            "no DTLS session with {}: message dropped",
                            t.to
                        ),
                    }
                }
            }
        }
        any
    }

    /// Sends what each session has to send, reports the sessions that came up to the state
    /// machine and hands it what they decrypted. Returns whether there was anything, and the
    /// sessions that ended (dropped by [`Self::drop_sessions`], after the restarts are
    /// driven).
    async fn drive_sessions(&mut self) -> (bool, Vec<Ended>) {
        let mut busy = false;
        let mut gone = Vec::new();
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for addr in &touched {
            let Some(p) = self.peers.get_mut(addr) else {
                continue;
            };
            flush(&self.ctl, *addr, &mut p.session).await;
            while let Some(ev) = p.session.poll_event() {
                busy = true;
                match ev {
                    DtlsEvent::Connected(summary) => {
                        p.up = true;
                        info!("DTLS session established with {addr} ({summary})");
                        self.ac.dtls_established(*addr, self.clock.now());
                    }
                    DtlsEvent::Closed => {
                        gone.push((*addr, p.started, "DTLS close_notify".to_string()))
                    }
                    DtlsEvent::Failed(e) => gone.push((*addr, p.started, e.to_string())),
                }
            }
            while let Some(pkt) = p.session.recv() {
                busy = true;
                self.capture.record(*addr, self.listen, &pkt, false);
                self.ac.handle_control(*addr, &pkt, true, self.clock.now());
                p.session.recycle(pkt);
            }
        }
        (busy, gone)
    }

    /// Drives the new handshakes of addresses that have a session: one that completes
    /// replaces the old session, one whose old session ended takes its place. True when there
    /// was anything.
    async fn drive_restarts(&mut self) -> bool {
        let mut busy = false;
        let mut replaced = Vec::new();
        for (addr, p) in self.restarts.iter_mut() {
            flush(&self.ctl, *addr, &mut p.session).await;
            while let Some(ev) = p.session.poll_event() {
                busy = true;
                match ev {
                    DtlsEvent::Connected(summary) => replaced.push((*addr, Ok(summary))),
                    DtlsEvent::Closed => {
                        replaced.push((*addr, Err("DTLS close_notify".to_string())))
                    }
                    DtlsEvent::Failed(e) => replaced.push((*addr, Err(e.to_string()))),
                }
            }
        }
        for (addr, outcome) in replaced {
            self.end_restart(addr, outcome);
        }
        busy |= self.adopt_orphans();
        busy
    }

    /// A new handshake from an address with a session ended: when it completed, its session
    /// replaces the old one.
    fn end_restart(&mut self, addr: SocketAddr, outcome: Result<String, String>) {
        let Some(mut p) = self.restarts.remove(&addr) else {
            return;
        };
        match outcome {
            Ok(summary) => {
                p.up = true;
                self.touched.push(addr);
                if let Some(old) = self.peers.insert(addr, p) {
                    if old.up {
                        self.ac.dtls_closed(
                            addr,
                            "a new DTLS session from the same address replaces it",
                        );
                    }
                }
                info!(
                    "DTLS session established with {addr} ({summary}), replacing the earlier one"
                );
                self.ac.dtls_established(addr, self.clock.now());
            }
            Err(reason) => limited_warn!(
                "New DTLS handshake failed",
                Some(addr),
                "New DTLS handshake with {addr} (which has a session) failed: {reason}"
            ),
        }
    }

    /// The old session ended first: the new handshake simply takes its place. True when one
    /// did.
    fn adopt_orphans(&mut self) -> bool {
        let mut any = false;
        let orphans: Vec<SocketAddr> = self
            .restarts
            .keys()
            .filter(|a| !self.peers.contains_key(a))
            .copied()
            .collect();
        for addr in orphans {
            if let Some(p) = self.restarts.remove(&addr) {
                self.peers.insert(addr, p);
                self.touched.push(addr);
                any = true;
            }
        }
        any
    }

    /// Drops the sessions that closed or failed: the state machine hears of the ones that
    /// were up, the log of the handshakes that failed.
    async fn drop_sessions(&mut self, gone: Vec<Ended>) {
        for (addr, started, reason) in gone {
            // A new session from the same address may have replaced the one that ended
            // (end_restart, in this same turn): that one stays.
            if self.peers.get(&addr).is_some_and(|p| p.started != started) {
                continue;
            }
            if let Some(mut p) = self.peers.remove(&addr) {
                self.dropped += 1;
                flush(&self.ctl, addr, &mut p.session).await;
                if p.up {
                    self.ac.dtls_closed(addr, &reason);
                } else {
                    limited_warn!(
                        "DTLS handshake failed",
                        Some(addr),
                        "DTLS handshake with {addr} failed: {reason}"
                    );
                }
            }
        }
    }

    /// The status table: rendered at most once a second (not once per datagram of an image
    /// transfer), written to the status file when it changed, and handed to the control
    /// socket's thread (which answers `acsim status` from it when the loop is too busy to
    /// render a fresh one).
    fn write_status(&mut self) {
        let due = self
            .last_status_at
            .is_none_or(|t| self.clock.now().saturating_since(t) >= Duration::from_secs(1));
        if !due {
            return;
        }
        warnings::flush();
        self.last_status_at = Some(self.clock.now());
        if self.dropped > 0 {
            // Sessions that left give their memory back (at most once a second).
            self.dropped = 0;
            shrink(&mut self.peers);
            release_freed_memory();
        }
        let status = status_table(&self.ac, self.clock.now());
        if status != *self.last_status {
            if let Some(p) = &self.cfg.status_file {
                if let Err(e) = write_atomic(p, status.as_bytes()) {
                    warn!("cannot write {}: {e}", p.display());
                }
            }
            self.last_status = Arc::new(status);
        }
        self.control.publish(self.last_status.clone());
    }

    /// Drops the handshakes that did not finish in [`HANDSHAKE_LIMIT`], and gives the memory
    /// they held back.
    fn expire_handshakes(&mut self, now: Instant) {
        let (restarts_before, peers_before) = (self.restarts.len(), self.peers.len());
        self.restarts.retain(|addr, p| {
            let keep = now.saturating_since(p.started) < HANDSHAKE_LIMIT;
            if !keep {
                limited_warn!(
                    "New DTLS handshake did not finish",
                    Some(*addr),
                    "New DTLS handshake with {addr} did not finish in {}s: dropped",
                    HANDSHAKE_LIMIT.as_secs()
                );
            }
            keep
        });
        self.peers.retain(|addr, p| {
            let keep = p.up || now.saturating_since(p.started) < HANDSHAKE_LIMIT;
            if !keep {
                limited_warn!(
                    "DTLS handshake did not finish",
                    Some(*addr),
                    "DTLS handshake with {addr} did not finish in {}s: dropped",
                    HANDSHAKE_LIMIT.as_secs()
                );
            }
            keep
        });
        if self.restarts.len() < restarts_before || self.peers.len() < peers_before {
            shrink(&mut self.restarts);
            shrink(&mut self.peers);
            release_freed_memory();
        }
    }

    /// When the loop must wake at the latest: the state machine's next timer, the next
    /// handshake retransmission, and in any case within 5 s.
    fn deadline(&self, now: Instant) -> tokio::time::Instant {
        let dtls_deadline = self
            .peers
            .values()
            .chain(self.restarts.values())
            .filter(|p| !p.up)
            .filter_map(|p| p.session.timeout())
            .min()
            .map(|d| now + d);
        earliest(
            &self.clock,
            &[
                self.ac.poll_timeout(),
                dtls_deadline,
                Some(now + Duration::from_secs(5)),
            ],
        )
    }

    /// A datagram on the control port: DTLS goes to its session (or, from a peer without
    /// one, through the cookie exchange); clear CAPWAP goes to the state machine.
    async fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        match preamble(bytes) {
            Ok(Preamble::Dtls) => self.on_dtls_datagram(bytes, from).await,
            _ => {
                self.capture.record(from, self.listen, bytes, false);
                let secure = self.ctx.is_none();
                if secure && self.ac.session(from).is_none() && is_join_start(bytes) {
                    self.ac.dtls_established(from, self.clock.now());
                }
                self.ac
                    .handle_control(from, bytes, secure, self.clock.now());
            }
        }
    }

    /// A DTLS datagram: a ClientHello that starts over goes to the listener, anything else to
    /// the session (or the new handshake) of its address.
    async fn on_dtls_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        if self.ctx.is_none() || self.listener.is_none() {
            log::debug!("DTLS datagram from {from} while DTLS is off");
            return;
        }
        let now = self.clock.now();
        // None: a stranger; Some(false): handshaking; Some(true): up.
        let known = self.peers.get(&from).map(|p| p.up);
        // A ClientHello from a stranger, or from an address whose session is up (a WTP that
        // restarted on the same port), starts over through the cookie exchange. One from an
        // address in the middle of a handshake is a retransmission for that handshake.
        if dtls::is_client_hello(bytes)
            && known != Some(false)
            && !self.restarts.contains_key(&from)
        {
            self.on_client_hello(bytes, from, known, now).await;
            return;
        }
        if let Some(p) = self.restarts.get_mut(&from) {
            p.session.handle_datagram(bytes);
            // Its handshake records are epoch 0; protected records go to both sessions, and
            // each drops what it cannot authenticate (RFC 6347 §4.1.2.7).
            if dtls::record_epoch(bytes) == Some(0) {
                return;
            }
        }
        match self.peers.get_mut(&from) {
            Some(p) => {
                p.session.handle_datagram(bytes);
                self.touched.push(from);
            }
            None => log::debug!("DTLS datagram from {from} without a session dropped"),
        }
    }

    /// A ClientHello that starts a handshake: the listener answers it with a
    /// HelloVerifyRequest, or, when its cookie is good, makes the session, which is kept
    /// as a restart of an address whose session is up, or as a new peer while the table has
    /// room.
    async fn on_client_hello(
        &mut self,
        bytes: &[u8],
        from: SocketAddr,
        known: Option<bool>,
        now: Instant,
    ) {
        let (Some(ctx), Some(listener)) = (&self.ctx, &mut self.listener) else {
            return;
        };
        match listener.handle(ctx, bytes, from, now) {
            Listened::Reply(hvr) => send(&self.ctl, &hvr, from).await,
            Listened::Dropped(why) => {
                log::debug!("DTLS datagram from {from} dropped: {why}")
            }
            Listened::Accepted(session) => {
                let p = Peer {
                    session,
                    up: false,
                    started: now,
                };
                if known == Some(true) {
                    limited!(
                        log::Level::Info,
                        "New DTLS handshake while the session is up",
                        Some(from),
                        "New DTLS handshake from {from} while its session is up (the WTP restarted?): the old session stays until the new one completes"
                    );
                    self.restarts.insert(from, p);
                } else if self.peers.len() >= 2 * self.ac.config().max_wtps as usize + 16 {
                    limited_warn!(
                        "too many DTLS sessions",
                        Some(from),
                        "too many DTLS sessions: {from} refused"
                    );
                } else {
                    self.peers.insert(from, p);
                    self.touched.push(from);
                }
            }
        }
    }

    /// A command from the control socket: carried out, and its answer handed back to the
    /// thread that waits for it.
    fn on_command(&mut self, cmd: ControlCommand) {
        info!("control: {}", cmd.line);
        let answer = control_command(&mut self.ac, &cmd.line, self.clock.now());
        let _ = cmd.answer.send(answer);
    }

    /// SIGTERM or SIGINT: every session gets its close_notify.
    async fn close(&mut self) {
        info!(
            "acsim stopping: closing {} DTLS session(s)",
            self.peers.len()
        );
        for (addr, p) in self.peers.iter_mut() {
            p.session.close();
            flush(&self.ctl, *addr, &mut p.session).await;
        }
        warnings::finish();
    }
}

/// The source of the images acsim serves: its own folder, or a remote server it downloads
/// from as APs ask (whose download threads wake the loop through `progress`). Sets the
/// version named to the APs in `ac_cfg`.
async fn image_source(
    cfg: &AcsimConfig,
    ac_cfg: &mut AcConfig,
    progress: &Arc<Notify>,
) -> Result<Box<dyn ImageSource>, RuntimeError> {
    Ok(match cfg.image_download.mode {
        DownloadMode::Local => {
            ac_cfg.image_version = cfg.served_version().map_err(|e| RuntimeError::Io {
                what: "image folder".into(),
                error: std::io::Error::other(e.to_string()),
            })?;
            match &cfg.image_dir {
                Some(dir) => {
                    info!(
                        "Serving images from {} (version {})",
                        dir.display(),
                        ac_cfg.image_version.as_deref().unwrap_or("-")
                    );
                    Box::new(FolderSource::new(dir))
                }
                None => Box::new(FolderSource::new("/nonexistent-image-folder")),
            }
        }
        _ => {
            let profile = cfg.image_download.clone();
            ac_cfg.image_version = match (&cfg.image_version, &profile.version) {
                (Some(v), _) | (None, Some(v)) => Some(v.clone()),
                (None, None) => {
                    // Like the seed's controller, read the folder's version.info.
                    let p = profile.clone();
                    match tokio::task::spawn_blocking(move || p.fetch_small("version.info")).await {
                        Ok(Ok(v)) if !v.is_empty() => Some(v),
                        Ok(Ok(_)) => {
                            warn!(
                                "version.info on the image server is empty: no image named to APs"
                            );
                            None
                        }
                        Ok(Err(e)) => {
                            warn!("{e}: no image named to APs");
                            None
                        }
                        Err(e) => {
                            warn!("version.info: {e}");
                            None
                        }
                    }
                }
            };
            info!(
                "Image download profile: {:?} from {} (version {})",
                profile.mode,
                profile
                    .url("<hardware type>")
                    .map(|u| u.to_string())
                    .unwrap_or_default(),
                ac_cfg.image_version.as_deref().unwrap_or("-")
            );
            let notify = progress.clone();
            Box::new(RemoteSource::new(
                profile,
                Arc::new(move || notify.notify_one()),
            ))
        }
    })
}

/// Gives a map's spare capacity back once most of its entries are gone: a burst of handshakes
/// must not leave a table sized for it behind.
fn shrink<V>(map: &mut HashMap<SocketAddr, V>) {
    if map.capacity() > 16 && map.capacity() > SHRINK_FACTOR * map.len() {
        map.shrink_to_fit();
    }
}

/// Hands the heap's free memory back to the system after sessions were dropped: glibc keeps
/// freed chunks in its arenas, so the resident size of a burst of OpenSSL sessions would stay.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The client side of the control socket: sends one command line to a running acsim and
/// returns its answer (used by `acsim status|predownload|activate|reset` and the demo).
pub fn control_request(socket: &Path, line: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("{}: {e} (is acsim running?)", socket.display()),
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer)
}

/// A command of the control socket for the loop, and where its answer goes.
struct ControlCommand {
    line: String,
    answer: std::sync::mpsc::Sender<String>,
}

/// How long `acsim status` waits for the loop to render a fresh table before it answers with
/// the last one (rendered at most a second before, by [`Controller::write_status`]).
const STATUS_FRESH_WAIT: Duration = Duration::from_millis(200);

/// How long a command other than `status` waits for the loop to carry it out.
const COMMAND_WAIT: Duration = Duration::from_secs(10);

/// What the control socket's thread shares with the event loop: the last status table the
/// loop rendered (with a count that tells a newer one apart), and the wake-up that asks it
/// for a fresh one.
///
/// Why a thread: answered from the loop, `acsim status` waited behind whatever the loop was
/// doing when it connected; in a join storm of a thousand certificate handshakes that was
/// 1.7 s. The thread answers from the table; the loop only renders it.
#[derive(Default)]
struct ControlShared {
    table: Mutex<(u64, Arc<String>)>,
    rendered: Condvar,
    wanted: Notify,
}

impl ControlShared {
    /// A table the loop rendered now.
    fn publish(&self, table: Arc<String>) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.0 += 1;
        t.1 = table;
        self.rendered.notify_all();
    }

    /// A fresh table when the loop renders one within [`STATUS_FRESH_WAIT`], the last one
    /// otherwise.
    fn status(&self) -> Arc<String> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let seen = t.0;
        self.wanted.notify_one();
        let deadline = std::time::Instant::now() + STATUS_FRESH_WAIT;
        while t.0 == seen {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            t = self
                .rendered
                .wait_timeout(t, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        t.1.clone()
    }
}

/// The control socket's thread: one connection at a time, one command line each. `status` is
/// answered here ([`ControlShared::status`]); the other commands change the state machine, so
/// the loop carries them out and this thread writes its answer.
fn serve_control_socket(
    listener: std::os::unix::net::UnixListener,
    shared: Arc<ControlShared>,
    commands: tokio::sync::mpsc::UnboundedSender<ControlCommand>,
) {
    use std::io::{BufRead, BufReader, Write};
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        let mut w = match stream.try_clone() {
            Ok(w) => w,
            Err(_) => continue,
        };
        if BufReader::new(stream).read_line(&mut line).is_err() || line.trim().is_empty() {
            warn!("control connection sent no command");
            continue;
        }
        let line = line.trim().to_string();
        let answer = if line.split_whitespace().next() == Some("status") {
            shared.status()
        } else {
            let (tx, rx) = std::sync::mpsc::channel();
            let cmd = ControlCommand {
                line: line.clone(),
                answer: tx,
            };
            if commands.send(cmd).is_err() {
                return;
            }
            Arc::new(
                rx.recv_timeout(COMMAND_WAIT)
                    .unwrap_or_else(|_| format!("acsim did not carry out '{line}' in time\n")),
            )
        };
        let _ = w.write_all(answer.as_bytes());
    }
}

/// With DTLS off, a clear Join Request opens the session that DTLS would have opened.
fn is_join_start(bytes: &[u8]) -> bool {
    use crate::capwap::{ControlMessage, MessageType, Packet};
    Packet::parse(bytes)
        .ok()
        .and_then(|p| ControlMessage::parse(p.payload).ok())
        .is_some_and(|m| m.message_type() == Some(MessageType::JoinRequest))
}

async fn send(sock: &Udp, bytes: &[u8], to: SocketAddr) {
    if let Err(e) = sock.send_to(bytes, to).await {
        limited_warn!("send failed", Some(to), "send to {to} failed: {e}");
    }
}

async fn flush(sock: &Udp, peer: SocketAddr, session: &mut DtlsSession) {
    while let Some(d) = session.poll_transmit() {
        send(sock, &d, peer).await;
        session.recycle(d);
    }
}

/// The table `acsim status` prints (the seed's `show ap image`).
pub use crate::ac::status::table as status_table;

/// Carries out one command from the control socket and says how it went.
fn control_command(ac: &mut Ac, line: &str, now: Instant) -> String {
    let mut words = line.split_whitespace();
    let cmd = words.next().unwrap_or("");
    let who = words.next().unwrap_or("all");
    if cmd == "status" {
        return status_table(ac, now);
    }
    if cmd == "activate-rolling" {
        // activate-rolling PERCENT [SITE]
        let percent = who.parse::<u8>().unwrap_or(25);
        let site = words.next();
        return match ac.start_rollout(percent, site, now) {
            Ok(line) => format!("{line}: started\n"),
            Err(why) => format!("rolling activation refused: {why}\n"),
        };
    }
    if cmd == "predownload" && who == "all" && ac.config().fleet.active() {
        // A fleet: primaries first, the others once their primary serves (`ac::fleet`).
        let mut out = String::new();
        for line in ac.predownload_fleet(now) {
            let _ = writeln!(out, "predownload {line}");
        }
        return out;
    }
    let targets: Vec<SocketAddr> = if who == "all" {
        ac.sessions().map(|s| s.peer).collect()
    } else {
        ac.find(who).into_iter().collect()
    };
    if targets.is_empty() {
        return format!("no AP matches '{who}'\n");
    }
    let mut out = String::new();
    for peer in targets {
        let ok = match cmd {
            "predownload" => ac.predownload(peer, now),
            "activate" => ac.activate(peer, now),
            "reset" => ac.reset(peer, now),
            _ => {
                return format!(
                    "unknown command '{cmd}' (predownload, activate, activate-rolling, reset, status)\n"
                )
            }
        };
        let name = ac
            .session(peer)
            .map(|s| s.info.name.clone())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{cmd} {name} ({peer}): {}",
            if ok {
                "sent"
            } else {
                "refused: the AP is not in Run, is busy, or no image is configured"
            }
        );
    }
    out
}
