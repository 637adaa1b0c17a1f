//! Drives the AC state machine (acsim) with real sockets, one DTLS server session per WTP.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use log::{info, warn};
use tokio::signal::unix::{signal, SignalKind};

use super::udp::Udp;
use super::{earliest, io_err, warnings, write_atomic, Clock, RuntimeError};
use crate::ac::{Ac, AcAction};
use crate::capwap::header::{preamble, Preamble};
use crate::capwap::{Channel, CONTROL_PORT, DATA_PORT};
use crate::config::AcsimConfig;
use crate::dtls::{self, DtlsContext, DtlsEvent, DtlsListener, DtlsSession, Listened};
use crate::fetch::spool::{DownloadMode, RemoteSource};
use crate::pcap::PcapWriter;
use crate::time::Instant;

/// A handshake that has not finished after this long is dropped (WaitDTLS).
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(60);

/// A peer map whose capacity is this many times its length (and more than a few entries) is
/// shrunk, so that the memory a burst of handshakes took comes back when they expire.
const SHRINK_FACTOR: usize = 4;

struct Peer {
    session: DtlsSession,
    up: bool,
    started: Instant,
}

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
    let mut listener = match &ctx {
        Some(c) => Some(DtlsListener::new(c)?),
        None => None,
    };
    let ctl = Udp::bind(cfg.listen).map_err(io_err(format!("bind {}", cfg.listen)))?;
    let listen = ctl.local_addr().map_err(io_err("local address"))?;
    let data_addr = SocketAddr::new(listen.ip(), listen.port().wrapping_add(1));
    let data = Udp::bind(data_addr).map_err(io_err(format!("bind {data_addr}")))?;
    let writer = match &cfg.pcap {
        Some(p) => Some(PcapWriter::create(p).map_err(io_err(format!("create {}", p.display())))?),
        None => None,
    };
    let mut capture = Capture { writer, listen };
    info!(
        "acsim {} listening on {listen} (data {data_addr}), DTLS {:?}, controller version {}",
        cfg.name, cfg.dtls.mode, cfg.version
    );

    let clock = Clock::new();
    let mut ac_cfg = cfg.ac_config();
    // Download threads of a remote image source wake the loop through this.
    let progress = std::sync::Arc::new(tokio::sync::Notify::new());
    let source: Box<dyn crate::image::source::ImageSource> = match cfg.image_download.mode {
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
                    Box::new(crate::image::source::FolderSource::new(dir))
                }
                None => Box::new(crate::image::source::FolderSource::new(
                    "/nonexistent-image-folder",
                )),
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
                std::sync::Arc::new(move || notify.notify_one()),
            ))
        }
    };
    let mut ac = Ac::new(ac_cfg, source);
    let mut peers: HashMap<SocketAddr, Peer> = HashMap::new();
    // New handshakes from addresses that still have an established session: a WTP that
    // restarted without a close_notify (power cut, kill -9) and sends from the same port. The
    // old session stays until the new handshake completes (RFC 6347 §4.2.8), so a forged
    // ClientHello cannot tear a live WTP down.
    let mut restarts: HashMap<SocketAddr, Peer> = HashMap::new();
    let mut sigterm = signal(SignalKind::terminate()).map_err(io_err("SIGTERM handler"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(io_err("SIGINT handler"))?;
    // One timer for the loop, moved when the deadline moves (cheaper than a new one per turn).
    let timer = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(timer);
    let mut buf = vec![0u8; 65536];
    let mut dbuf = vec![0u8; 2048];
    let mut out = Vec::with_capacity(2048);
    let mut last_status = String::new();
    let mut last_status_at: Option<Instant> = None;
    let control = match &cfg.control_socket {
        Some(p) => {
            let _ = std::fs::remove_file(p);
            Some(
                tokio::net::UnixListener::bind(p)
                    .map_err(io_err(format!("bind {}", p.display())))?,
            )
        }
        None => None,
    };

    loop {
        loop {
            let mut busy = false;
            while let Some(a) = ac.poll_action() {
                busy = true;
                match a {
                    AcAction::DtlsClose { peer } => {
                        if let Some(mut p) = peers.remove(&peer) {
                            p.session.close();
                            flush(&ctl, peer, &mut p.session).await;
                        }
                    }
                }
            }
            while let Some(t) = ac.poll_transmit(&mut out) {
                busy = true;
                match t.channel {
                    Channel::Data => {
                        capture.record(data_addr, t.to, &out, true);
                        send(&data, &out, t.to).await;
                    }
                    Channel::ControlClear => {
                        capture.record(listen, t.to, &out, false);
                        send(&ctl, &out, t.to).await;
                    }
                    Channel::ControlSecure => {
                        capture.record(listen, t.to, &out, false);
                        match peers.get_mut(&t.to) {
                            Some(p) if p.up => {
                                if let Err(e) = p.session.send(&out) {
                                    limited_warn!(
                                        "DTLS send failed",
                                        Some(t.to),
                                        "DTLS send to {} failed: {e}",
                                        t.to
                                    );
                                }
                            }
                            _ if ctx.is_none() => send(&ctl, &out, t.to).await,
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
            let mut gone = Vec::new();
            for (addr, p) in peers.iter_mut() {
                flush(&ctl, *addr, &mut p.session).await;
                while let Some(ev) = p.session.poll_event() {
                    busy = true;
                    match ev {
                        DtlsEvent::Connected(summary) => {
                            p.up = true;
                            info!("DTLS session established with {addr} ({summary})");
                            ac.dtls_established(*addr, clock.now());
                        }
                        DtlsEvent::Closed => gone.push((*addr, "DTLS close_notify".to_string())),
                        DtlsEvent::Failed(e) => gone.push((*addr, e.to_string())),
                    }
                }
                while let Some(pkt) = p.session.recv() {
                    busy = true;
                    capture.record(*addr, listen, &pkt, false);
                    ac.handle_control(*addr, &pkt, true, clock.now());
                    p.session.recycle(pkt);
                }
            }
            let mut replaced = Vec::new();
            for (addr, p) in restarts.iter_mut() {
                flush(&ctl, *addr, &mut p.session).await;
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
                let Some(mut p) = restarts.remove(&addr) else {
                    continue;
                };
                match outcome {
                    Ok(summary) => {
                        p.up = true;
                        if let Some(old) = peers.insert(addr, p) {
                            if old.up {
                                ac.dtls_closed(
                                    addr,
                                    "a new DTLS session from the same address replaces it",
                                );
                            }
                        }
                        info!("DTLS session established with {addr} ({summary}), replacing the earlier one");
                        ac.dtls_established(addr, clock.now());
                    }
                    Err(reason) => limited_warn!(
                        "New DTLS handshake failed",
                        Some(addr),
                        "New DTLS handshake with {addr} (which has a session) failed: {reason}"
                    ),
                }
            }
            // The old session ended first: the new handshake simply takes its place.
            let orphans: Vec<SocketAddr> = restarts
                .keys()
                .filter(|a| !peers.contains_key(a))
                .copied()
                .collect();
            for addr in orphans {
                if let Some(p) = restarts.remove(&addr) {
                    peers.insert(addr, p);
                    busy = true;
                }
            }
            for (addr, reason) in gone {
                if let Some(mut p) = peers.remove(&addr) {
                    flush(&ctl, addr, &mut p.session).await;
                    if p.up {
                        ac.dtls_closed(addr, &reason);
                    } else {
                        limited_warn!(
                            "DTLS handshake failed",
                            Some(addr),
                            "DTLS handshake with {addr} failed: {reason}"
                        );
                    }
                }
            }
            if !busy {
                break;
            }
        }
        let due = last_status_at
            .is_none_or(|t| clock.now().saturating_since(t) >= Duration::from_secs(1));
        // Rendered at most once a second (not once per datagram of an image transfer), written
        // when it changed.
        let status = if due {
            warnings::flush();
            last_status_at = Some(clock.now());
            status_table(&ac, clock.now())
        } else {
            String::new()
        };
        if due && status != last_status {
            if let Some(p) = &cfg.status_file {
                if let Err(e) = write_atomic(p, status.as_bytes()) {
                    warn!("cannot write {}: {e}", p.display());
                }
            }
            last_status = status;
        }

        let now = clock.now();
        let (restarts_before, peers_before) = (restarts.len(), peers.len());
        restarts.retain(|addr, p| {
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
        peers.retain(|addr, p| {
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
        if restarts.len() < restarts_before || peers.len() < peers_before {
            shrink(&mut restarts);
            shrink(&mut peers);
            release_freed_memory();
        }
        let dtls_deadline = peers
            .values()
            .chain(restarts.values())
            .filter(|p| !p.up)
            .filter_map(|p| p.session.timeout())
            .min()
            .map(|d| now + d);
        let deadline = earliest(
            &clock,
            &[
                ac.poll_timeout(),
                dtls_deadline,
                Some(now + Duration::from_secs(5)),
            ],
        );
        if timer.is_elapsed() || timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            r = ctl.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    let bytes = &buf[..n];
                    match preamble(bytes) {
                        Ok(Preamble::Dtls) => match (&ctx, &mut listener) {
                            (Some(ctx), Some(listener)) => {
                                let now = clock.now();
                                // None: a stranger; Some(false): handshaking; Some(true): up.
                                let known = peers.get(&from).map(|p| p.up);
                                // A ClientHello from a stranger, or from an address whose
                                // session is up (a WTP that restarted on the same port), starts
                                // over through the cookie exchange. One from an address in the
                                // middle of a handshake is a retransmission for that handshake.
                                if dtls::is_client_hello(bytes)
                                    && known != Some(false)
                                    && !restarts.contains_key(&from)
                                {
                                    match listener.handle(ctx, bytes, from, now) {
                                        Listened::Reply(hvr) => send(&ctl, &hvr, from).await,
                                        Listened::Dropped(why) => {
                                            log::debug!("DTLS datagram from {from} dropped: {why}")
                                        }
                                        Listened::Accepted(session) => {
                                            let p = Peer { session, up: false, started: now };
                                            if known == Some(true) {
                                                limited!(
                                                    log::Level::Info,
                                                    "New DTLS handshake while the session is up",
                                                    Some(from),
                                                    "New DTLS handshake from {from} while its session is up (the WTP restarted?): the old session stays until the new one completes"
                                                );
                                                restarts.insert(from, p);
                                            } else if peers.len() >= 2 * ac.config().max_wtps as usize {
                                                limited_warn!(
                                                    "too many DTLS sessions",
                                                    Some(from),
                                                    "too many DTLS sessions: {from} refused"
                                                );
                                            } else {
                                                peers.insert(from, p);
                                            }
                                        }
                                    }
                                    continue;
                                }
                                if let Some(p) = restarts.get_mut(&from) {
                                    p.session.handle_datagram(bytes);
                                    // Its handshake records are epoch 0; protected records go
                                    // to both sessions, and each drops what it cannot
                                    // authenticate (RFC 6347 §4.1.2.7).
                                    if dtls::record_epoch(bytes) == Some(0) {
                                        continue;
                                    }
                                }
                                match peers.get_mut(&from) {
                                    Some(p) => p.session.handle_datagram(bytes),
                                    None => log::debug!(
                                        "DTLS datagram from {from} without a session dropped"
                                    ),
                                }
                            }
                            _ => log::debug!("DTLS datagram from {from} while DTLS is off"),
                        },
                        _ => {
                            capture.record(from, listen, bytes, false);
                            let secure = ctx.is_none();
                            if secure && ac.session(from).is_none() && is_join_start(bytes) {
                                ac.dtls_established(from, clock.now());
                            }
                            ac.handle_control(from, bytes, secure, clock.now());
                        }
                    }
                }
                Err(e) => limited_warn!("control socket error", None, "control socket: {e}"),
            },
            r = data.recv_from(&mut dbuf) => match r {
                Ok((n, from)) => {
                    capture.record(from, data_addr, &dbuf[..n], true);
                    ac.handle_data(from, &dbuf[..n], clock.now());
                }
                Err(e) => limited_warn!("data socket error", None, "data socket: {e}"),
            },
            _ = &mut timer => {
                for p in peers.values_mut().chain(restarts.values_mut()).filter(|p| !p.up) {
                    p.session.handle_timeout();
                }
                ac.handle_timeout(clock.now());
            },
            conn = async {
                match &control {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Ok((stream, _)) = conn {
                    serve_control(stream, &mut ac, &clock).await;
                }
            },
            _ = progress.notified() => ac.source_progress(clock.now()),
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    info!("acsim stopping: closing {} DTLS session(s)", peers.len());
    for (addr, p) in peers.iter_mut() {
        p.session.close();
        flush(&ctl, *addr, &mut p.session).await;
    }
    warnings::finish();
    Ok(0)
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

/// Reads one command line from a control connection, runs it, writes the answer.
async fn serve_control(stream: tokio::net::UnixStream, ac: &mut Ac, clock: &Clock) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(r);
    match tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line)).await {
        Ok(Ok(_)) => {
            info!("control: {}", line.trim());
            let answer = control_command(ac, line.trim(), clock.now());
            let _ = w.write_all(answer.as_bytes()).await;
        }
        _ => warn!("control connection sent no command"),
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
                return format!("unknown command '{cmd}' (predownload, activate, reset, status)\n")
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
