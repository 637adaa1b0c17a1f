//! Drives the WTP state machine with real sockets, DTLS and signals.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use log::{error, info, warn};
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};

use super::{earliest, io_err, Clock, RuntimeError};
use crate::capwap::header::{preamble, Preamble};
use crate::capwap::CONTROL_PORT;
use crate::config::{RebootMethod, WtpdConfig};
use crate::dtls::{DtlsContext, DtlsError, DtlsEvent, DtlsSession};
use crate::wtp::{Action, Channel, DtlsFailure, Target, TargetKind, Versions, Wtp, WtpConfig};

/// Exit status that asks a supervisor to restart the agent (the simulated board's reboot).
pub const EXIT_REBOOT: i32 = 75;

/// The DTLS session with the controller, or the lab's clear channel.
enum Link {
    None,
    Clear(SocketAddr),
    Dtls {
        peer: SocketAddr,
        session: Box<DtlsSession>,
        up: bool,
    },
}

/// Runs the agent until it is stopped (exit 0) or reboots (75, or reboot(2)).
pub async fn run(
    cfg: WtpdConfig,
    config_path: &Path,
    extra_controllers: Vec<String>,
) -> Result<i32, RuntimeError> {
    let dtls_cfg = cfg.dtls.to_dtls(config_path)?;
    let ctx = match &dtls_cfg {
        Some(c) => Some(DtlsContext::client(c)?),
        None => {
            warn!("DTLS is OFF: CAPWAP control messages travel in clear. Lab use only.");
            None
        }
    };
    let sock = UdpSocket::bind(cfg.bind)
        .await
        .map_err(io_err(format!("bind {}", cfg.bind)))?;
    sock.set_broadcast(true).map_err(io_err("SO_BROADCAST"))?;
    let data_bind = SocketAddr::new(cfg.bind.ip(), 0);
    let data = UdpSocket::bind(data_bind)
        .await
        .map_err(io_err(format!("bind {data_bind}")))?;
    info!(
        "wtpd {} starting: WTP {} ({}), software {}, control socket {}",
        env!("CARGO_PKG_VERSION"),
        cfg.wtp.name,
        cfg.wtp.image_type,
        cfg.software.version,
        sock.local_addr().map(|a| a.to_string()).unwrap_or_default()
    );

    let clock = Clock::new();
    let mut wtp = Wtp::new(WtpConfig {
        identity: cfg.wtp.clone(),
        versions: Versions {
            primary: cfg.software.version.clone(),
            backup: cfg.software.backup.clone(),
        },
        timers: cfg.timers.clone(),
        seed: crate::rng::Rng::from_entropy().next_u64(),
    });
    let mut sigterm = signal(SignalKind::terminate()).map_err(io_err("SIGTERM handler"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(io_err("SIGINT handler"))?;
    let mut link = Link::None;
    let mut buf = vec![0u8; 65536];
    let mut dbuf = vec![0u8; 2048];
    let mut out = Vec::with_capacity(2048);
    wtp.start(clock.now());

    loop {
        // Carry out everything the state machine and DTLS have decided.
        loop {
            let mut busy = false;
            while let Some(a) = wtp.poll_action() {
                busy = true;
                match a {
                    Action::FindControllers => {
                        let targets = find_controllers(&cfg, &extra_controllers).await;
                        wtp.set_targets(targets, clock.now());
                    }
                    Action::DtlsConnect { peer } => {
                        if let Some(ip) = local_ip_towards(peer) {
                            wtp.set_local_ip(ip);
                        }
                        link = match &ctx {
                            None => {
                                wtp.dtls_established("DTLS off", clock.now());
                                Link::Clear(peer)
                            }
                            Some(ctx) => match DtlsSession::connect(ctx) {
                                Ok(s) => {
                                    info!("DTLS handshake started with {peer}");
                                    Link::Dtls {
                                        peer,
                                        session: Box::new(s),
                                        up: false,
                                    }
                                }
                                Err(e) => {
                                    wtp.dtls_failed(
                                        DtlsFailure {
                                            auth: false,
                                            reason: e.to_string(),
                                        },
                                        clock.now(),
                                    );
                                    Link::None
                                }
                            },
                        };
                    }
                    Action::DtlsClose => {
                        if let Link::Dtls { peer, session, .. } = &mut link {
                            session.close();
                            flush_dtls(&sock, *peer, session).await;
                            info!("DTLS session with {peer} closed");
                        }
                        link = Link::None;
                    }
                    Action::Reboot { reason } => {
                        return reboot(&cfg.reboot, &reason);
                    }
                    Action::Exit => {
                        info!("wtpd stopped");
                        return Ok(0);
                    }
                }
            }
            while let Some(t) = wtp.poll_transmit(&mut out) {
                busy = true;
                match (t.channel, &mut link) {
                    (
                        Channel::ControlSecure,
                        Link::Dtls {
                            session, up: true, ..
                        },
                    ) => {
                        if let Err(e) = session.send(&out) {
                            warn!("DTLS send failed: {e}");
                        }
                    }
                    (Channel::ControlSecure, Link::Dtls { .. } | Link::None) => {
                        warn!("no DTLS session: control message to {} dropped", t.to);
                    }
                    (Channel::Data, _) => send(&data, &out, t.to).await,
                    _ => send(&sock, &out, t.to).await,
                }
            }
            if let Link::Dtls { peer, session, up } = &mut link {
                let peer = *peer;
                flush_dtls(&sock, peer, session).await;
                while let Some(ev) = session.poll_event() {
                    busy = true;
                    match ev {
                        DtlsEvent::Connected(summary) => {
                            *up = true;
                            wtp.dtls_established(&summary, clock.now());
                        }
                        DtlsEvent::Closed => wtp.dtls_closed(clock.now()),
                        DtlsEvent::Failed(e) => {
                            let auth = matches!(&e, DtlsError::Handshake(r) if is_auth_failure(r));
                            wtp.dtls_failed(
                                DtlsFailure {
                                    auth,
                                    reason: e.to_string(),
                                },
                                clock.now(),
                            );
                        }
                    }
                }
                while let Some(p) = session.recv() {
                    busy = true;
                    wtp.handle_control(peer, &p, true, clock.now());
                }
            }
            if !busy {
                break;
            }
        }

        let dtls_deadline = match &link {
            Link::Dtls { session, .. } => session.timeout().map(|d| clock.now() + d),
            _ => None,
        };
        let deadline = earliest(&clock, &[wtp.poll_timeout(), dtls_deadline]);
        tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok((n, from)) => on_control(&mut wtp, &mut link, &buf[..n], from, &clock),
                Err(e) => warn!("control socket: {e}"),
            },
            r = data.recv_from(&mut dbuf) => match r {
                Ok((n, from)) => wtp.handle_data(from, &dbuf[..n], clock.now()),
                Err(e) => warn!("data socket: {e}"),
            },
            _ = tokio::time::sleep_until(deadline) => {
                if let Link::Dtls { session, up: false, .. } = &mut link {
                    session.handle_timeout();
                }
                wtp.handle_timeout(clock.now());
            },
            _ = sigterm.recv() => wtp.shutdown(clock.now()),
            _ = sigint.recv() => wtp.shutdown(clock.now()),
        }
    }
}

fn on_control(wtp: &mut Wtp, link: &mut Link, bytes: &[u8], from: SocketAddr, clock: &Clock) {
    match preamble(bytes) {
        Ok(Preamble::Dtls) => match link {
            Link::Dtls { peer, session, .. } if *peer == from => session.handle_datagram(bytes),
            _ => log::debug!("DTLS datagram from {from} outside a session dropped"),
        },
        Ok(Preamble::Capwap) => {
            let secure = matches!(link, Link::Clear(peer) if *peer == from);
            wtp.handle_control(from, bytes, secure, clock.now());
        }
        Err(_) => wtp.handle_control(from, bytes, false, clock.now()),
    }
}

/// True when OpenSSL's reason is about credentials rather than transport.
fn is_auth_failure(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    [
        "certificate",
        "verify",
        "psk",
        "hostname",
        "unknown ca",
        "bad record mac",
        "decrypt",
    ]
    .iter()
    .any(|k| r.contains(k))
}

async fn send(sock: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    if let Err(e) = sock.send_to(bytes, to).await {
        warn!("send to {to} failed: {e}");
    }
}

async fn flush_dtls(sock: &UdpSocket, peer: SocketAddr, session: &mut DtlsSession) {
    while let Some(d) = session.poll_transmit() {
        send(sock, &d, peer).await;
    }
}

/// The local address the kernel would use towards `peer`.
fn local_ip_towards(peer: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if peer.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        "[::]:0".parse().ok()?
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(peer).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// Gathers the Discovery targets (RFC 5415 §3.3): static addresses, DNS names, the DHCP hook's
/// file, and limited broadcast.
async fn find_controllers(cfg: &WtpdConfig, extra: &[String]) -> Vec<Target> {
    let mut targets = Vec::new();
    for entry in extra.iter().chain(cfg.discovery.controllers.iter()) {
        if let Ok(sa) = entry.parse::<SocketAddr>() {
            targets.push(Target {
                addr: sa,
                kind: TargetKind::Static,
            });
            continue;
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            targets.push(Target {
                addr: SocketAddr::new(ip, CONTROL_PORT),
                kind: TargetKind::Static,
            });
            continue;
        }
        let name = if entry.contains(':') {
            entry.clone()
        } else {
            format!("{entry}:{CONTROL_PORT}")
        };
        match tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host(name.clone()),
        )
        .await
        {
            Ok(Ok(addrs)) => {
                let before = targets.len();
                targets.extend(addrs.map(|addr| Target {
                    addr,
                    kind: TargetKind::Dns,
                }));
                info!("DNS: {name} -> {} address(es)", targets.len() - before);
            }
            Ok(Err(e)) => warn!("DNS lookup of {name} failed: {e}"),
            Err(_) => warn!("DNS lookup of {name} timed out"),
        }
    }
    if let Some(path) = &cfg.discovery.dhcp_file {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let (addrs, bad) =
                    crate::wtp::discovery::parse_dhcp_controllers(&text, CONTROL_PORT);
                for b in bad {
                    warn!(
                        "{}: line '{b}' is neither an address nor option 43",
                        path.display()
                    );
                }
                targets.extend(addrs.into_iter().map(|addr| Target {
                    addr,
                    kind: TargetKind::Dhcp,
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!("cannot read {}: {e}", path.display()),
        }
    }
    if cfg.discovery.broadcast {
        targets.push(Target {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::BROADCAST), CONTROL_PORT),
            kind: TargetKind::Broadcast,
        });
    }
    targets
}

fn reboot(method: &RebootMethod, reason: &str) -> Result<i32, RuntimeError> {
    match method {
        RebootMethod::Exit => {
            info!("Rebooting ({reason}): exiting with status {EXIT_REBOOT} for the supervisor");
            Ok(EXIT_REBOOT)
        }
        RebootMethod::Syscall => {
            info!("Rebooting ({reason})");
            nix::unistd::sync();
            match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT) {
                Ok(never) => match never {},
                Err(e) => {
                    error!("reboot(2) failed: {e}");
                    Err(RuntimeError::Io {
                        what: "reboot".into(),
                        error: e.into(),
                    })
                }
            }
        }
    }
}
