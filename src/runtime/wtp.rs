//! Drives the WTP state machine with real sockets, DTLS and signals.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use log::{error, info, warn};
use tokio::signal::unix::{signal, SignalKind};

use super::udp::Udp;
use super::{earliest, io_err, Clock, RuntimeError};
use crate::board::Board;
use crate::capwap::header::{preamble, Preamble};
use crate::capwap::CONTROL_PORT;
use crate::config::DownloadSection;
use crate::config::{InstallMethod, RebootMethod, WtpdConfig};
use crate::dtls::{DtlsContext, DtlsError, DtlsEvent, DtlsSession};
use crate::image::bootenv::{self, EnvConfig};
use crate::image::install::{self, AbState, Disk};
use crate::image::store::FileStore;
use crate::image::verify::TrustPolicy;
use crate::status::WtpStatus;
use crate::wtp::image::StatusKey;
use crate::wtp::{
    Action, Channel, DtlsFailure, RetryState, Target, TargetKind, Versions, Wtp, WtpConfig,
};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// The board's A/B machinery, when the agent has a board file with slots.
struct Ab {
    board: Board,
    env_cfg: EnvConfig,
    disk: Disk,
    /// The booted slot was on trial and still needs marking good.
    trial: bool,
    /// Why nothing may be installed on this board at all (no valid U-Boot environment).
    refused: Option<String>,
    /// The image [`Action::VerifyImage`] accepted, kept open for its install.
    checked: Option<(install::CheckedImage, std::fs::File)>,
}

impl Ab {
    /// Why this board may not download, install or switch now, for the WTP core.
    fn hold(&self) -> Option<crate::wtp::Hold> {
        if let Some(r) = &self.refused {
            return Some(crate::wtp::Hold::Refused(r.clone()));
        }
        self.trial.then(|| {
            crate::wtp::Hold::Trial(
                "the booted slot is on trial: it is marked good in Run before the other slot \
                 (the last known-good image) may be written"
                    .into(),
            )
        })
    }
}

fn env_error(what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Io {
        what: what.into(),
        error: std::io::Error::other(e.to_string()),
    }
}

/// Applies the board file to the configuration and reads the versions: from the U-Boot
/// environment on an A/B board, else from [software].
fn prepare(cfg: &mut WtpdConfig) -> Result<(Versions, Option<Ab>, DownloadSection), RuntimeError> {
    let board = match &cfg.board {
        Some(p) => Some(Board::load(p)?),
        None => None,
    };
    let download = cfg
        .download
        .clone()
        .or_else(|| board.as_ref().and_then(|b| b.download.clone()))
        .unwrap_or_default();
    let mut versions = cfg
        .software
        .as_ref()
        .map(|s| Versions {
            primary: s.version.clone(),
            backup: s.backup.clone(),
        })
        .unwrap_or_default();
    let Some(board) = board else {
        return Ok((versions, None, download));
    };
    info!(
        "Board {} ({}), {} slots",
        board.name,
        board.image_type,
        board.slots.len()
    );
    cfg.wtp.image_type = board.image_type.clone();
    if !board.radios.is_empty() {
        cfg.wtp.radios = board.radios.clone();
    }
    cfg.reboot = board.reboot.clone();
    let env_cfg = match board.env_config() {
        Some(r) => r.map_err(|e| env_error("U-Boot environment", e))?,
        None => return Ok((versions, None, download)),
    };
    if board.slots.is_empty() {
        return Ok((versions, None, download));
    }
    let mut disk = Disk::new();
    let mut refused = None;
    let env = match bootenv::read_with(&mut disk, &env_cfg) {
        Ok((env, read)) => {
            if let Some(e) = read.other_invalid() {
                warn!(
                    "U-Boot environment: copy {} is invalid ({e}); using copy {}",
                    1 - read.current,
                    read.current
                );
            }
            env
        }
        // No valid copy (erased, zeroed, truncated, CRC wrong): U-Boot boots its built-in
        // default environment, which the agent cannot read. Which slot runs and which one is
        // good are unknown, so nothing is downloaded, installed or switched, and no fresh
        // environment is written that could point the bootloader at an unknown slot. The
        // agent still joins and answers the controller (docs/ab-update.md).
        Err(e) => {
            let why = format!(
                "U-Boot environment unusable ({e}): the booted slot is unknown; images are \
                 neither downloaded nor installed until a valid environment is restored"
            );
            error!("{why}");
            refused = Some(why);
            bootenv::Env::new()
        }
    };
    let ab = AbState::read(&board, &env).map_err(|e| env_error("A/B state", e))?;
    if refused.is_some() {
        versions.backup = None;
        if versions.primary.is_empty() {
            versions.primary = "unknown".into();
        }
        return Ok((
            versions,
            Some(Ab {
                board,
                env_cfg,
                disk,
                trial: false,
                refused,
                checked: None,
            }),
            download,
        ));
    }
    versions = Versions {
        primary: ab.primary().unwrap_or_else(|| versions.primary.clone()),
        backup: ab.backup().or(versions.backup),
    };
    info!(
        "Booted slot {} ({}){}",
        ab.boot_slot,
        versions.primary,
        if ab.upgrade_available {
            format!(
                ", on trial: attempt {} of {}; marked good once joined",
                ab.bootcount, ab.bootlimit
            )
        } else {
            String::new()
        }
    );
    let trial = ab.upgrade_available;
    Ok((
        versions,
        Some(Ab {
            board,
            env_cfg,
            disk,
            trial,
            refused: None,
            checked: None,
        }),
        download,
    ))
}

/// The trust policy for an image, from the configuration, the board and the state directory.
/// The image trust anchors, read at start too: an agent that could never verify an image
/// refuses to start rather than fail after every download.
fn load_anchors(
    cfg: &WtpdConfig,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    let anchors = TrustPolicy::anchors_from_files(&cfg.image.trust).map_err(|e| e.to_string())?;
    if anchors.is_empty() {
        return Err("no image trust anchors configured ([image] trust)".into());
    }
    Ok(anchors)
}

/// The clock, or `None` on a board without a set real-time clock: a clock before 2020 stands
/// for that, and the persisted floor and the manifest's build time stand in for it (never
/// "anything goes in 1970").
fn clock_now() -> Option<u64> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    crate::image::verify::set_clock(Some(now))
}

/// The trust policy for an image the controller announced as `announced` (`None`: no
/// controller, as `wtpd fetch`), from the configuration, the board and the state directory.
fn trust_policy(
    cfg: &WtpdConfig,
    ab: &Ab,
    current: &str,
    announced: Option<&str>,
) -> Result<TrustPolicy, String> {
    if let Some(r) = &ab.refused {
        return Err(r.clone());
    }
    let anchors = load_anchors(cfg)?;
    let now = clock_now();
    Ok(TrustPolicy {
        anchors,
        hardware_type: ab.board.image_type.clone(),
        board: ab.board.name.clone(),
        not_before_floor: read_time_floor(cfg, now),
        now,
        allow_downgrade: cfg.image.allow_downgrade,
        current_version: Some(current.to_string()),
        expected_version: announced.map(str::to_string),
    })
}

/// The persisted time floor; garbage or a floor beyond what the agent accepts
/// (`verify::plausible_floor`) is logged, naming the file, and ignored.
fn read_time_floor(cfg: &WtpdConfig, now: Option<u64>) -> u64 {
    let Some(path) = cfg.state_dir.as_ref().map(|d| d.join("time_floor")) else {
        return 0;
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
        Err(e) => {
            warn!("{}: unreadable ({e}); time floor ignored", path.display());
            return 0;
        }
    };
    let Ok(floor) = text.trim().parse::<u64>() else {
        warn!(
            "{}: {:?} is not unix seconds; time floor ignored",
            path.display(),
            text.trim().chars().take(40).collect::<String>()
        );
        return 0;
    };
    match crate::image::verify::plausible_floor(floor, now) {
        Some(f) => f,
        None => {
            warn!(
                "{}: time floor {floor} is later than the latest time accepted ({}); ignored",
                path.display(),
                crate::image::verify::latest_accepted_time(now)
            );
            0
        }
    }
}

fn save_time_floor(cfg: &WtpdConfig, floor: u64) {
    let Some(d) = &cfg.state_dir else { return };
    if floor > read_time_floor(cfg, clock_now()) {
        let _ = std::fs::create_dir_all(d);
        if let Err(e) = super::write_atomic(&d.join("time_floor"), format!("{floor}\n").as_bytes())
        {
            warn!("cannot persist the time floor: {e}");
        }
    }
}

/// Verifies the whole downloaded image without writing anything, and keeps it open for
/// [`install_checked`].
fn verify_image(
    cfg: &WtpdConfig,
    ab: &mut Ab,
    location: &str,
    current: &str,
    announced: Option<&str>,
) -> Result<(), String> {
    ab.checked = None;
    let policy = trust_policy(cfg, ab, current, announced)?;
    let mut file = std::fs::File::open(location).map_err(|e| format!("{location}: {e}"))?;
    info!(
        "upgrade.sh: Using image {location} on {} ... ",
        ab.board.name
    );
    let checked = install::verify_image(
        &ab.board,
        &ab.env_cfg,
        &mut ab.disk,
        std::io::BufReader::new(&mut file),
        &policy,
    )
    .map_err(|e| e.to_string())?;
    ab.checked = Some((checked, file));
    Ok(())
}

/// Writes the image [`verify_image`] accepted.
fn install_checked(cfg: &WtpdConfig, ab: &mut Ab, activate: bool) -> Result<(), String> {
    let (checked, file) = ab
        .checked
        .take()
        .ok_or_else(|| "no verified image to install".to_string())?;
    let report = install::write_image(
        &ab.board,
        &ab.env_cfg,
        &mut ab.disk,
        std::io::BufReader::new(file),
        &checked,
        activate,
        install::CHUNK,
    )
    .map_err(|e| e.to_string())?;
    save_time_floor(cfg, report.new_time_floor);
    Ok(())
}

/// Verifies and installs an image in one go (`wtpd fetch`).
fn install_image(
    cfg: &WtpdConfig,
    ab: &mut Ab,
    location: &str,
    current: &str,
    activate: bool,
) -> Result<(), String> {
    verify_image(cfg, ab, location, current, None)?;
    install_checked(cfg, ab, activate)
}

/// Bytes of a download after which its head is surely on disk: the manifest, its signature
/// and the signer's chain take at most about 133 KiB (`image::bundle`'s limits), and the file
/// store holds less than 32 KiB back after `idle_work`.
const EARLY_CHECK_AT: u64 = 256 * 1024;

/// Checks the head of the download under way, once, as soon as it is on disk: an image this
/// board would refuse after the download (signature, hardware type, board, version, a payload
/// larger than the slot) is aborted there, after a few hundred KiB instead of all of it.
/// Only a definite refusal aborts; what cannot be checked now is left to the install.
fn early_check(
    cfg: &WtpdConfig,
    ab: &mut Ab,
    wtp: &mut Wtp,
    checked: &mut bool,
    now: crate::time::Instant,
) {
    let bytes = match wtp.download_bytes() {
        Some(b) if b >= EARLY_CHECK_AT => b,
        _ => {
            *checked = false;
            return;
        }
    };
    if *checked {
        return;
    }
    *checked = true;
    let current = wtp.config().versions.primary.clone();
    let announced = wtp.download_version().map(str::to_string);
    match check_head(
        cfg,
        ab,
        &wtp.download_location(),
        &current,
        announced.as_deref(),
    ) {
        Ok(Ok(what)) => info!("Image manifest checked at byte {bytes}: {what}"),
        Ok(Err(refusal)) => {
            wtp.abort_download(&format!("image refused at byte {bytes}: {refusal}"), now)
        }
        Err(e) => log::debug!("image head not checked at byte {bytes}: {e}"),
    }
}

/// `Ok(Ok(summary))`: the image would be installed; `Ok(Err(why))`: it would be refused;
/// `Err(_)`: it could not be checked now (no trust anchors, environment unreadable, ...).
fn check_head(
    cfg: &WtpdConfig,
    ab: &mut Ab,
    location: &str,
    current: &str,
    announced: Option<&str>,
) -> Result<Result<String, String>, String> {
    use crate::image::bundle::BundleReader;
    let policy = trust_policy(cfg, ab, current, announced)?;
    let file = std::fs::File::open(location).map_err(|e| format!("{location}: {e}"))?;
    let bundle = match BundleReader::new(std::io::BufReader::new(file)) {
        Ok(b) => b,
        Err(e) => return Ok(Err(install::InstallError::Bundle(e).to_string())),
    };
    let verified = match bundle.verify(&policy) {
        Ok(v) => v,
        Err(e) => return Ok(Err(install::InstallError::Verify(e).to_string())),
    };
    let (env, _) = bootenv::read_with(&mut ab.disk, &ab.env_cfg).map_err(|e| e.to_string())?;
    let state = AbState::read(&ab.board, &env).map_err(|e| e.to_string())?;
    let manifest = verified.manifest();
    Ok(match install::check_manifest(&ab.board, &state, manifest) {
        Ok((slot, rootfs)) => Ok(format!(
            "{} signed by {}, {} bytes for slot {}",
            manifest.version,
            verified.signer(),
            rootfs.size,
            slot.name
        )),
        Err(e) => Err(e.to_string()),
    })
}

/// `wtpd fetch URL`: an AP without a controller downloads an image directly, then runs the
/// same verify, install and switch as after a CAPWAP download, and reboots into it. On a board
/// without A/B slots the image stays in the download directory.
pub fn fetch_and_install(cfg: WtpdConfig, url: &str) -> Result<i32, Box<dyn std::error::Error>> {
    let mut cfg = cfg;
    let (versions, ab, download) = prepare(&mut cfg)?;
    if let Some(ab) = &ab {
        if let Some(r) = &ab.refused {
            return Err(r.clone().into());
        }
        load_anchors(&cfg)?;
    }
    let report = super::fetch::fetch_command(&cfg, &download, url)?;
    let Some(mut ab) = ab else {
        info!(
            "No A/B slots on this board: the image stays at {}",
            report.location
        );
        return Ok(0);
    };
    install_image(&cfg, &mut ab, &report.location, &versions.primary, true)?;
    Ok(reboot(&cfg.reboot, "fetched image installed")?)
}

/// Runs the agent until it is stopped (exit 0) or reboots (75, or reboot(2)).
pub async fn run(
    cfg: WtpdConfig,
    config_path: &Path,
    extra_controllers: Vec<String>,
) -> Result<i32, RuntimeError> {
    let mut cfg = cfg;
    let (versions, mut ab, download) = prepare(&mut cfg)?;
    let cfg = cfg;
    if ab.is_some() {
        // Refuse to start rather than fail after every download.
        let anchors = load_anchors(&cfg).map_err(|e| env_error("image trust anchors", e))?;
        info!("Image trust anchors: {} certificate(s)", anchors.len());
    }
    let dtls_cfg = cfg.dtls.to_dtls(config_path)?;
    let ctx = match &dtls_cfg {
        Some(c) => Some(DtlsContext::client(c)?),
        None => {
            warn!("DTLS is OFF: CAPWAP control messages travel in clear. Lab use only.");
            None
        }
    };
    let sock = Udp::bind(cfg.bind).map_err(io_err(format!("bind {}", cfg.bind)))?;
    sock.set_broadcast(true).map_err(io_err("SO_BROADCAST"))?;
    let data_bind = SocketAddr::new(cfg.bind.ip(), 0);
    let data = Udp::bind(data_bind).map_err(io_err(format!("bind {data_bind}")))?;
    info!(
        "wtpd {} starting: WTP {} ({}), software {}, control socket {}",
        env!("CARGO_PKG_VERSION"),
        cfg.wtp.name,
        cfg.wtp.image_type,
        versions.primary,
        sock.local_addr().map(|a| a.to_string()).unwrap_or_default()
    );

    let clock = Clock::new();
    let saved = cfg.state_dir.as_deref().and_then(WtpStatus::load);
    let retry = restored_retry(saved.as_ref());
    if retry.retry_count > 0 {
        info!(
            "Restored from the state directory: retry count {}, last error: {}",
            retry.retry_count,
            retry.last_error.as_deref().unwrap_or("-")
        );
    }
    let store = FileStore::new(&download.dir, download.file.clone(), download.margin);
    let mut wtp = Wtp::new(
        WtpConfig {
            identity: cfg.wtp.clone(),
            can_switch: ab.is_some(),
            hold: ab.as_ref().and_then(Ab::hold),
            versions: versions.clone(),
            timers: cfg.timers.clone(),
            download: download.policy(),
            retry,
            seed: crate::rng::Rng::from_entropy().next_u64(),
        },
        Box::new(store),
    );
    let mut last_status = WtpStatus::default();
    let mut status_key: Option<StatusKey> = None;
    let mut sigterm = signal(SignalKind::terminate()).map_err(io_err("SIGTERM handler"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(io_err("SIGINT handler"))?;
    // One timer for the loop, moved when the deadline moves (cheaper than a new one per turn).
    let timer = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(timer);
    let mut link = Link::None;
    let mut head_checked = false;
    let mut buf = vec![0u8; 65536];
    let mut dbuf = vec![0u8; 2048];
    let mut out = Vec::with_capacity(2048);
    wtp.start(clock.now());

    loop {
        // An image this board would refuse stops as soon as its manifest is on disk.
        if let Some(ab) = ab.as_mut() {
            early_check(&cfg, ab, &mut wtp, &mut head_checked, clock.now());
        }
        // Carry out everything the state machine and DTLS have decided.
        loop {
            let mut busy = false;
            // Packets first: a teardown's last messages go out before its close_notify.
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
                            limited_warn!("DTLS send failed", None, "DTLS send failed: {e}");
                        }
                    }
                    (Channel::ControlSecure, Link::Dtls { .. } | Link::None) => {
                        limited_warn!(
                            "no DTLS session: message dropped",
                            Some(t.to),
                            "no DTLS session: control message to {} dropped",
                            t.to
                        );
                    }
                    (Channel::Data, _) => send(&data, &out, t.to).await,
                    _ => send(&sock, &out, t.to).await,
                }
            }
            // One action a turn: what it makes the state machine send (the answer to the AC's
            // last Image Data Request, a failure report) goes out before the next action (a
            // DTLS close) runs.
            if let Some(a) = wtp.poll_action() {
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
                    Action::VerifyImage {
                        version,
                        location,
                        predownload: _,
                    } => {
                        let current = wtp.config().versions.primary.clone();
                        let result = match (&mut ab, download.install) {
                            (Some(ab), _) => {
                                verify_image(&cfg, ab, &location, &current, Some(&version))
                            }
                            (None, InstallMethod::None) => Ok(()),
                            (None, InstallMethod::Refuse) => {
                                Err("this board does not install images (install = \"refuse\")"
                                    .to_string())
                            }
                        };
                        if let Err(e) = &result {
                            warn!("{e}");
                        }
                        wtp.image_verified(result, clock.now());
                    }
                    Action::InstallImage {
                        version,
                        location,
                        predownload,
                    } => {
                        let result = match (&mut ab, download.install) {
                            (Some(ab), _) => install_checked(&cfg, ab, !predownload),
                            (None, InstallMethod::None) => {
                                info!(
                                    "Image {version} kept at {location} (install = \"none\": nothing is written to a partition){}",
                                    if predownload { "" } else { "; resetting" }
                                );
                                Ok(())
                            }
                            (None, InstallMethod::Refuse) => {
                                Err("this board does not install images (install = \"refuse\")"
                                    .to_string())
                            }
                        };
                        if let Err(e) = &result {
                            warn!("{e}");
                        }
                        wtp.install_done(result, clock.now());
                    }
                    Action::ActivateImage { version } => match &mut ab {
                        Some(ab) => {
                            if let Err(e) =
                                install::activate(&ab.board, &ab.env_cfg, &mut ab.disk, &version)
                            {
                                warn!("Activation of {version} failed: {e}");
                            }
                        }
                        None => info!("Activating {version}: this board has no slots to switch"),
                    },
                    Action::Reboot { reason } => {
                        save_status(&cfg, &wtp, &clock, &mut last_status, &mut status_key);
                        return reboot(&cfg.reboot, &reason);
                    }
                    Action::Exit => {
                        save_status(&cfg, &wtp, &clock, &mut last_status, &mut status_key);
                        log_peak_memory();
                        info!("wtpd stopped");
                        return Ok(0);
                    }
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
                    session.recycle(p);
                }
            }
            if !busy {
                break;
            }
        }

        // Everything of this turn is sent: now the work that may wait (hashing, file writes).
        wtp.idle_work();
        save_status(&cfg, &wtp, &clock, &mut last_status, &mut status_key);
        if wtp.state() == crate::wtp::State::Run {
            if let Some(ab) = ab.as_mut().filter(|a| a.trial) {
                ab.trial = false;
                match install::mark_good(&ab.board, &ab.env_cfg, &mut ab.disk) {
                    Ok(marked) => {
                        if let Some(slot) = marked {
                            info!(
                                "Slot {slot} ({}) marked good",
                                wtp.config().versions.primary
                            );
                        }
                        wtp.release_hold(clock.now());
                    }
                    Err(e) => warn!("Marking the slot good failed: {e}"),
                }
            }
        }
        let dtls_deadline = match &link {
            Link::Dtls { session, .. } => session.timeout().map(|d| clock.now() + d),
            _ => None,
        };
        let deadline = earliest(&clock, &[wtp.poll_timeout(), dtls_deadline]);
        if timer.is_elapsed() || timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok((n, from)) => on_control(&mut wtp, &mut link, &buf[..n], from, &clock),
                Err(e) => limited_warn!("control socket error", None, "control socket: {e}"),
            },
            r = data.recv_from(&mut dbuf) => match r {
                Ok((n, from)) => wtp.handle_data(from, &dbuf[..n], clock.now()),
                Err(e) => limited_warn!("data socket error", None, "data socket: {e}"),
            },
            _ = &mut timer => {
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

/// The retry state saved by an earlier run.
fn restored_retry(saved: Option<&WtpStatus>) -> RetryState {
    let Some(s) = saved else {
        return RetryState::default();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    RetryState {
        retry_count: s.retry_count,
        last_error: Some(s.last_error.clone()).filter(|e| !e.is_empty()),
        wait: s
            .next_retry_unix
            .filter(|t| *t > now)
            .map(|t| Duration::from_secs(t - now)),
    }
}

/// Writes the state file when something an operator would see has changed.
fn save_status(
    cfg: &WtpdConfig,
    wtp: &Wtp,
    clock: &Clock,
    last: &mut WtpStatus,
    key: &mut Option<StatusKey>,
) {
    let Some(dir) = &cfg.state_dir else { return };
    // Called for every datagram: compare a cheap key before building the whole status.
    let k = wtp.status_key();
    if key.as_ref() == Some(&k) {
        return;
    }
    *key = Some(k);
    let now = clock.now();
    let d = wtp.download_status(now);
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let v = &wtp.config().versions;
    let mut s = WtpStatus {
        name: cfg.wtp.name.clone(),
        state: wtp.state().name().to_string(),
        controller: wtp
            .controller()
            .map(|(a, n)| format!("{n} ({a})"))
            .unwrap_or_default(),
        primary: v.primary.clone(),
        backup: v.backup.clone().unwrap_or_default(),
        download_state: d.state.name().to_string(),
        download_version: d.version.unwrap_or_default(),
        percent: d.percent,
        bytes: d.bytes,
        size: d.size,
        eta_secs: None,
        retry_count: d.retry_count,
        next_retry_unix: d
            .next_retry
            .map(|r| wall + r.saturating_since(now).as_secs()),
        last_error: d.last_error.unwrap_or_default(),
        method: "CAPWAP".into(),
    };
    // Bytes and the retry time drift every moment: write on a new percent or state only.
    let same = WtpStatus {
        bytes: last.bytes,
        next_retry_unix: last.next_retry_unix,
        ..s.clone()
    } == *last;
    if same {
        return;
    }
    s.eta_secs = d.eta.map(|e| e.as_secs());
    if let Err(e) = s.save(dir) {
        warn!("cannot write the state file in {}: {e}", dir.display());
    }
    *last = WtpStatus {
        eta_secs: None,
        ..s
    };
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

async fn send(sock: &Udp, bytes: &[u8], to: SocketAddr) {
    if let Err(e) = sock.send_to(bytes, to).await {
        limited_warn!("send failed", Some(to), "send to {to} failed: {e}");
    }
}

async fn flush_dtls(sock: &Udp, peer: SocketAddr, session: &mut DtlsSession) {
    while let Some(d) = session.poll_transmit() {
        send(sock, &d, peer).await;
        session.recycle(d);
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

/// One line for the operator (and the memory budget): how much RAM this run needed at most.
fn log_peak_memory() {
    if let Some(kib) = super::peak_rss_kib() {
        info!("Peak memory of this run: {kib} KiB resident (VmHWM)");
    }
}

fn reboot(method: &RebootMethod, reason: &str) -> Result<i32, RuntimeError> {
    log_peak_memory();
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
