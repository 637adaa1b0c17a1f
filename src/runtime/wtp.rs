//! Drives the WTP state machine with real sockets, DTLS and signals.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use log::{error, info, warn};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::hooks::{env_for, BoardFacts, HookResult, Hooks};
use super::udp::Udp;
use super::{earliest, io_err, Clock, RuntimeError};
use crate::board::Board;
use crate::capwap::header::{preamble, Preamble};
use crate::capwap::CONTROL_PORT;
use crate::config::{DownloadMode, DownloadSection};
use crate::config::{InstallMethod, RebootMethod, WtpdConfig};
use crate::dtls::{DtlsContext, DtlsError, DtlsEvent, DtlsSession};
use crate::image::install::InstallError;
use crate::image::store::{FileStore, ImageStore};
use crate::image::updater::{HeadCheck, UpdatePolicy, Updater};
use crate::status::WtpStatus;
use crate::wtp::image::StatusKey;
use crate::wtp::{
    Action, Channel, DtlsFailure, Hold, HookCall, HookStage, RetryState, Target, TargetKind,
    Versions, Wtp, WtpConfig,
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

/// Why this board may not download, install or switch now, for the WTP core.
fn hold(u: &Updater) -> Option<Hold> {
    if let Some(r) = u.refused() {
        return Some(Hold::Refused(r.to_string()));
    }
    u.on_trial().then(|| {
        Hold::Trial(
            "the booted slot is on trial: it is marked good in Run before the other slot \
             (the last known-good image) may be written"
                .into(),
        )
    })
}

fn env_error(what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Io {
        what: what.into(),
        error: std::io::Error::other(e.to_string()),
    }
}

/// Applies the board file to the configuration and reads the versions: from the U-Boot
/// environment on an A/B board, else from [software].
fn prepare(
    cfg: &mut WtpdConfig,
) -> Result<(Versions, Option<Updater>, DownloadSection), RuntimeError> {
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
    let policy = UpdatePolicy {
        trust: cfg.image.trust.clone(),
        state_dir: cfg.state_dir.clone(),
        allow_downgrade: cfg.image.allow_downgrade,
    };
    let Some((updater, running)) =
        Updater::open(board, policy).map_err(|e| env_error("U-Boot environment", e))?
    else {
        return Ok((versions, None, download));
    };
    if updater.refused().is_some() {
        versions.backup = None;
        if versions.primary.is_empty() {
            versions.primary = "unknown".into();
        }
    } else {
        versions = Versions {
            primary: running.primary.unwrap_or(versions.primary),
            backup: running.backup.or(versions.backup),
        };
    }
    Ok((versions, Some(updater), download))
}

/// Checks the head of the download under way once it is on disk, and aborts a download this
/// board would refuse (the policy is [`Updater::early_check`]).
fn early_check(u: &mut Updater, wtp: &mut Wtp) {
    let bytes = wtp.download_bytes();
    let current = wtp.config().versions.primary.clone();
    let announced = wtp.download_version().map(str::to_string);
    let location = wtp.download_location();
    let Some(check) = u.early_check(bytes, &location, &current, announced.as_deref()) else {
        return;
    };
    let bytes = bytes.unwrap_or(0);
    match check {
        HeadCheck::Accepted(what) => info!("Image manifest checked at byte {bytes}: {what}"),
        HeadCheck::Refused(refusal) => {
            wtp.abort_download(&format!("image refused at byte {bytes}: {refusal}"))
        }
        HeadCheck::Unchecked(e) => log::debug!("image head not checked at byte {bytes}: {e}"),
    }
}

/// `wtpd fetch URL`: an AP without a controller downloads an image directly, then runs the
/// same verify, install and switch as after a CAPWAP download, and reboots into it. On a board
/// without A/B slots the image stays in the download directory.
pub fn fetch_and_install(cfg: WtpdConfig, url: &str) -> Result<i32, Box<dyn std::error::Error>> {
    let mut cfg = cfg;
    let (versions, updater, download) = prepare(&mut cfg)?;
    if let Some(u) = &updater {
        if let Some(r) = u.refused() {
            return Err(r.to_string().into());
        }
        u.anchors()?;
    }
    let report = super::fetch::fetch_command(&cfg, &download, url)?;
    let Some(mut updater) = updater else {
        info!(
            "No A/B slots on this board: the image stays at {}",
            report.location
        );
        return Ok(0);
    };
    updater.install_file(&report.location, &versions.primary, true)?;
    Ok(reboot(&cfg.reboot, "fetched image installed")?)
}

/// Runs the agent until it is stopped (exit 0) or reboots (75, or reboot(2)).
pub async fn run(
    cfg: WtpdConfig,
    config_path: &Path,
    extra_controllers: Vec<String>,
) -> Result<i32, RuntimeError> {
    run_embedded(cfg, config_path, extra_controllers, Embedding::default()).await
}

/// What a process that runs many agents in one runtime (`acsim load`) gives each of them in
/// place of what wtpd owns alone: a stop notice instead of SIGTERM and SIGINT, one DTLS
/// context for all, and a channel that reports the agent's CAPWAP state as it changes.
#[derive(Default)]
pub struct Embedding {
    /// The agent stops (as on SIGTERM) when this turns true; `None`: the process's signals.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// Used instead of a context built from `[dtls]` (DTLS on only).
    pub ctx: Option<DtlsContext>,
    /// Receives the state after every turn that changed it.
    pub state: Option<tokio::sync::watch::Sender<crate::wtp::State>>,
}

/// [`run`] with an [`Embedding`].
pub async fn run_embedded(
    cfg: WtpdConfig,
    config_path: &Path,
    extra_controllers: Vec<String>,
    mut embedding: Embedding,
) -> Result<i32, RuntimeError> {
    let ctx = embedding.ctx.take();
    Agent::start(cfg, config_path, extra_controllers, ctx)?
        .run(embedding)
        .await
}

/// Waits for the stop notice, or for SIGTERM or SIGINT when there is none.
async fn stop_requested(
    notice: &mut Option<tokio::sync::watch::Receiver<bool>>,
    signals: &mut Option<(Signal, Signal)>,
) {
    match (notice, signals) {
        (Some(rx), _) => {
            // A sender gone without a word stops nothing.
            if rx.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        (None, Some((term, int))) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        (None, None) => std::future::pending().await,
    }
}

/// The next event of the fetch under way; never, when there is none.
async fn next_fetch(f: &mut Option<super::fetch::Fetcher>) -> super::fetch::FetchEvent {
    match f {
        Some(f) => f.next().await,
        None => std::future::pending().await,
    }
}

/// What woke the event loop.
enum Wake {
    Control(std::io::Result<(usize, SocketAddr)>),
    Data(std::io::Result<(usize, SocketAddr)>),
    Timer,
    Hook(HookResult),
    Fetch(super::fetch::FetchEvent),
    Watchdog,
    Stop,
}

/// Everything the running agent holds: the state machine, its sockets and DTLS session, the
/// board's updater, and the status file. Each step of the event loop is one method.
struct Agent {
    cfg: WtpdConfig,
    extra_controllers: Vec<String>,
    ctx: Option<DtlsContext>,
    sock: Udp,
    data: Udp,
    clock: Clock,
    wtp: Wtp,
    updater: Option<Updater>,
    install: InstallMethod,
    link: Link,
    last_status: WtpStatus,
    status_key: Option<StatusKey>,
    /// The packet being sent (the state machine copies each one here).
    out: Vec<u8>,
    /// The board's upgrade hook (`[hooks] upgrade`), and what its environment says of the
    /// board.
    hooks: Hooks,
    facts: BoardFacts,
    /// systemd's notification socket (`$NOTIFY_SOCKET`), and the watchdog's ping interval.
    notifier: Option<super::notify::Notifier>,
    watchdog: Option<Duration>,
    /// The out-of-band fetch under way (a fleet upgrade).
    fetcher: Option<super::fetch::Fetcher>,
    /// The TFTP server that serves the staged image to subordinates (`[fleet] serve`).
    tftpd: Option<crate::fetch::tftpd::TftpServer>,
    /// The board's hardware watchdog, open while the booted slot is on trial.
    hw_watchdog: Option<super::hw_watchdog::Guard>,
}

impl Agent {
    /// Reads the board and the configuration, binds the sockets, builds the state machine.
    fn start(
        cfg: WtpdConfig,
        config_path: &Path,
        extra_controllers: Vec<String>,
        ctx: Option<DtlsContext>,
    ) -> Result<Agent, RuntimeError> {
        let mut cfg = cfg;
        let (versions, updater, download) = prepare(&mut cfg)?;
        if let Some(u) = &updater {
            // Refuse to start rather than fail after every download.
            let anchors = u
                .anchors()
                .map_err(|e| env_error("image trust anchors", e))?;
            info!("Image trust anchors: {} certificate(s)", anchors.len());
        }
        let ctx = match cfg.dtls.to_dtls(config_path)? {
            Some(_) if ctx.is_some() => ctx,
            Some(c) => Some(DtlsContext::client(&c)?),
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
        let saved = cfg.state_dir.as_deref().and_then(WtpStatus::load);
        let retry = restored_retry(saved.as_ref());
        if retry.retry_count > 0 {
            info!(
                "Restored from the state directory: retry count {}, last error: {}",
                retry.retry_count,
                retry.last_error.as_deref().unwrap_or("-")
            );
        }
        if let Some(script) = &mut cfg.hooks.upgrade {
            // A bare file name would be looked up on PATH: the configuration means this one.
            *script = std::path::absolute(&*script)
                .map_err(io_err(format!("upgrade hook {}", script.display())))?;
            check_hook(script)?;
            info!(
                "Upgrade hook: {} (timeout {}s)",
                script.display(),
                cfg.hooks.timeout.as_secs_f64()
            );
        }
        let (slot_booted, slot_target) = updater
            .as_ref()
            .and_then(|u| u.slots())
            .map(|(b, t)| (b.to_string(), t.to_string()))
            .unwrap_or_default();
        let facts = BoardFacts {
            running_version: versions.primary.clone(),
            image_type: cfg.wtp.image_type.clone(),
            board: updater
                .as_ref()
                .map(|u| u.board().name.clone())
                .unwrap_or_else(|| cfg.wtp.model.clone()),
            slot_booted,
            slot_target,
            download_dir: std::path::absolute(&download.dir)
                .unwrap_or_else(|_| download.dir.clone())
                .display()
                .to_string(),
            required_kib: download.required_bytes.div_ceil(1024),
        };
        let mut updater = updater;
        let store: Box<dyn ImageStore> = match (download.mode, updater.as_mut()) {
            (DownloadMode::Tmp, _) => Box::new(FileStore::new(
                &download.dir,
                download.file.clone(),
                download.margin,
            )),
            (DownloadMode::Slot, Some(u)) => {
                info!("Download mode slot: images stream into the inactive slot, no /tmp file");
                Box::new(u.slot_store())
            }
            (DownloadMode::Slot, None) => {
                return Err(env_error(
                    "[download] mode",
                    "\"slot\" needs a board with A/B slots and a U-Boot environment",
                ))
            }
        };
        let mut wtp = Wtp::new(
            WtpConfig {
                identity: cfg.wtp.clone(),
                can_switch: updater.is_some(),
                hold: updater.as_ref().and_then(hold),
                versions,
                timers: cfg.timers.clone(),
                download: download.policy(),
                retry,
                seed: crate::rng::Rng::from_entropy().next_u64(),
                hooks: cfg.hooks.upgrade.is_some(),
                fleet: cfg.fleet.policy(),
            },
            store,
        );
        let tftpd = match cfg.fleet.serve.filter(|_| cfg.fleet.enabled) {
            Some(bind) => {
                let server =
                    crate::fetch::tftpd::TftpServer::start(crate::fetch::tftpd::TftpdConfig {
                        bind,
                        max_transfers: cfg.fleet.max_transfers.max(1),
                        ..crate::fetch::tftpd::TftpdConfig::default()
                    })
                    .map_err(io_err(format!("TFTP server on {bind}")))?;
                let at = server.local_addr();
                // An unspecified address is advertised as the one towards the controller,
                // once there is one (`connect`).
                if !at.ip().is_unspecified() {
                    wtp.set_fleet_endpoint(Some(at));
                }
                Some(server)
            }
            None => None,
        };
        let hooks = Hooks::new(cfg.hooks.upgrade.clone(), cfg.hooks.timeout);
        let notifier = super::notify::Notifier::from_env().unwrap_or_else(|e| {
            warn!("{e}: no notifications to the init system");
            None
        });
        let watchdog = notifier
            .as_ref()
            .and_then(|_| super::notify::watchdog_interval());
        let clock = Clock::new();
        let hw_watchdog = updater.as_ref().and_then(|u| {
            let w = u.board().watchdog.as_ref()?;
            if u.on_trial() {
                super::hw_watchdog::Guard::arm(w, clock.now())
            } else {
                info!(
                    "Watchdog {} not opened: the booted slot is not on trial",
                    w.device.display()
                );
                None
            }
        });
        Ok(Agent {
            hw_watchdog,
            notifier,
            watchdog,
            hooks,
            facts,
            cfg,
            extra_controllers,
            ctx,
            sock,
            data,
            clock,
            wtp,
            updater,
            install: download.install,
            link: Link::None,
            last_status: WtpStatus::default(),
            status_key: None,
            out: Vec::with_capacity(2048),
            fetcher: None,
            tftpd,
        })
    }

    /// The event loop: carry out what was decided, do the work that may wait, sleep until a
    /// datagram, the next deadline or a signal.
    async fn run(mut self, embedding: Embedding) -> Result<i32, RuntimeError> {
        let mut notice = embedding.stop;
        let mut signals = match notice {
            Some(_) => None,
            None => Some((
                signal(SignalKind::terminate()).map_err(io_err("SIGTERM handler"))?,
                signal(SignalKind::interrupt()).map_err(io_err("SIGINT handler"))?,
            )),
        };
        let state_tx = embedding.state;
        // One timer for the loop, moved when the deadline moves (cheaper than a new one per
        // turn).
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut buf = vec![0u8; 65536];
        let mut dbuf = vec![0u8; 2048];
        // Configuration, board, environment and state are read, the sockets bound: ready.
        self.notify(&format!(
            "READY=1\nSTATUS=WTP {} running {}",
            self.cfg.wtp.name,
            self.wtp.config().versions.primary
        ));
        // WATCHDOG=1 from this loop: a loop that hangs stops the pings, and systemd restarts
        // the agent.
        let mut watchdog = self.watchdog.map(|every| {
            info!(
                "systemd watchdog: WATCHDOG=1 every {}s",
                every.as_secs_f64()
            );
            let mut i = tokio::time::interval(every);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        self.wtp.start(self.clock.now());
        // The last wake was a datagram on the control socket (for the trial's watchdog).
        let mut answered = false;
        loop {
            // An image this board would refuse stops as soon as its manifest is on disk.
            if let Some(u) = self.updater.as_mut() {
                early_check(u, &mut self.wtp);
            }
            if let Some(code) = self.carry_out_turn().await? {
                return Ok(code);
            }
            self.after_turn(answered);
            if let Some(tx) = &state_tx {
                let state = self.wtp.state();
                tx.send_if_modified(|s| std::mem::replace(s, state) != state);
            }
            let deadline = self.deadline();
            if timer.is_elapsed() || timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            let wake = tokio::select! {
                r = self.sock.recv_from(&mut buf) => Wake::Control(r),
                r = self.data.recv_from(&mut dbuf) => Wake::Data(r),
                _ = &mut timer => Wake::Timer,
                r = self.hooks.next_done() => Wake::Hook(r),
                ev = next_fetch(&mut self.fetcher) => Wake::Fetch(ev),
                _ = tick(&mut watchdog) => Wake::Watchdog,
                _ = stop_requested(&mut notice, &mut signals) => Wake::Stop,
            };
            let now = self.clock.now();
            answered = matches!(wake, Wake::Control(Ok(_)));
            match wake {
                Wake::Control(Ok((n, from))) => {
                    on_control(&mut self.wtp, &mut self.link, &buf[..n], from, &self.clock)
                }
                Wake::Control(Err(e)) => {
                    limited_warn!("control socket error", None, "control socket: {e}")
                }
                Wake::Data(Ok((n, from))) => self.wtp.handle_data(from, &dbuf[..n], now),
                Wake::Data(Err(e)) => limited_warn!("data socket error", None, "data socket: {e}"),
                Wake::Timer => {
                    if let Link::Dtls {
                        session, up: false, ..
                    } = &mut self.link
                    {
                        session.handle_timeout();
                    }
                    self.wtp.handle_timeout(now);
                }
                Wake::Hook(r) => {
                    if r.stage == HookStage::Precheck {
                        self.wtp.precheck_done(r.outcome, now);
                    }
                }
                Wake::Fetch(ev) => self.on_fetch(ev, now),
                Wake::Watchdog => self.notify("WATCHDOG=1"),
                Wake::Stop => {
                    self.notify("STOPPING=1");
                    // A stop notice is told once; signals may come again.
                    notice = None;
                    self.wtp.shutdown(now)
                }
            }
        }
    }

    /// Carries out everything the state machine and DTLS have decided, until neither has
    /// more. `Some(exit status)` when the agent stops or reboots.
    async fn carry_out_turn(&mut self) -> Result<Option<i32>, RuntimeError> {
        loop {
            // Packets first: a teardown's last messages go out before its close_notify.
            let mut busy = self.send_packets().await;
            // One action a turn: what it makes the state machine send (the answer to the AC's
            // last Image Data Request, a failure report) goes out before the next action (a
            // DTLS close) runs. An action after a hook call that holds it (PREDOWNLOAD before
            // the verification, UPGRADE before the write, ACTIVATE before the reboot) waits
            // for the script; the loop goes on meanwhile.
            let next = if self.hooks.holding() {
                None
            } else {
                self.wtp.poll_action()
            };
            if let Some(a) = next {
                busy = true;
                if let Some(code) = self.carry_out(a).await? {
                    return Ok(Some(code));
                }
            }
            busy |= self.drive_dtls().await;
            if !busy {
                return Ok(None);
            }
        }
    }

    /// Sends what the state machine queued. True when there was anything.
    async fn send_packets(&mut self) -> bool {
        let mut any = false;
        while let Some(t) = self.wtp.poll_transmit(&mut self.out) {
            any = true;
            match (t.channel, &mut self.link) {
                (
                    Channel::ControlSecure,
                    Link::Dtls {
                        session, up: true, ..
                    },
                ) => {
                    if let Err(e) = session.send(&self.out) {
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
                (Channel::Data, _) => send(&self.data, &self.out, t.to).await,
                _ => send(&self.sock, &self.out, t.to).await,
            }
        }
        any
    }

    /// One action of the state machine. `Some(exit status)` when the agent stops or reboots.
    async fn carry_out(&mut self, action: Action) -> Result<Option<i32>, RuntimeError> {
        let now = self.clock.now();
        match action {
            Action::FindControllers => {
                let targets = find_controllers(&self.cfg, &self.extra_controllers).await;
                self.wtp.set_targets(targets, self.clock.now());
            }
            Action::DtlsConnect { peer } => self.connect(peer),
            Action::DtlsClose => self.close().await,
            Action::VerifyImage {
                version, location, ..
            } => {
                let result = self.verify_image(&version, &location);
                self.wtp.image_verified(result, now);
            }
            Action::InstallImage {
                version,
                location,
                predownload,
            } => {
                let result = self.install_image(&version, &location, predownload);
                if result.is_ok() && !predownload && self.updater.is_some() {
                    // The install switched the boot slot: the reboot follows.
                    self.runtime_hook(HookStage::Activate, &version);
                }
                self.wtp.install_done(result, now);
            }
            Action::ActivateImage { version } => match &mut self.updater {
                Some(u) => match u.activate(&version) {
                    Ok(_) => self.runtime_hook(HookStage::Activate, &version),
                    Err(e) => warn!("Activation of {version} failed: {e}"),
                },
                None => info!("Activating {version}: this board has no slots to switch"),
            },
            Action::Hook(call) => self.hook(call),
            Action::FetchImage { url, pin, .. } => self.start_fetch(&url, pin, now),
            Action::CancelFetch => {
                if self.fetcher.take().is_some() {
                    info!("Out-of-band fetch stopped");
                }
            }
            Action::ServeImage { file } => self.serve(file),
            Action::Reboot { reason } => {
                self.save_status();
                self.hooks.drain().await;
                return Ok(Some(reboot(&self.cfg.reboot, &reason)?));
            }
            Action::Exit => {
                self.save_status();
                self.hooks.drain().await;
                log_peak_memory();
                info!("wtpd stopped");
                return Ok(Some(0));
            }
        }
        Ok(None)
    }

    /// Starts the out-of-band fetch the WTP core asked for ([`Action::FetchImage`]).
    fn start_fetch(&mut self, url: &str, pin: Option<[u8; 32]>, now: crate::time::Instant) {
        let url = match crate::fetch::FetchUrl::parse(url) {
            Ok(u) => u,
            Err(e) => return self.wtp.fetch_done(Err(e.to_string()), now),
        };
        let required = self.wtp.config().download.required_bytes;
        let mut opts = self.cfg.fetch.options(required);
        if pin.is_some() {
            opts.pin_sha256 = pin;
        }
        self.fetcher = Some(super::fetch::Fetcher::start(url, opts));
    }

    /// What the fetch thread said.
    fn on_fetch(&mut self, ev: super::fetch::FetchEvent, now: crate::time::Instant) {
        use super::fetch::FetchEvent;
        match ev {
            FetchEvent::Begin(size) => self.wtp.fetch_begin(size, now),
            FetchEvent::Data(buf) => {
                let wanted = self.wtp.fetched(&buf, now);
                match (&self.fetcher, wanted) {
                    (Some(f), true) => f.recycle(buf),
                    _ => self.fetcher = None,
                }
            }
            FetchEvent::Done(result) => {
                self.fetcher = None;
                self.wtp.fetch_done(result, now);
            }
        }
    }

    /// What the TFTP server for subordinates serves ([`Action::ServeImage`]).
    fn serve(&mut self, file: Option<(String, std::path::PathBuf)>) {
        match &self.tftpd {
            Some(t) => t.serve(file),
            None if file.is_some() => {
                warn!("asked to serve the image, but no [fleet] serve address is set")
            }
            None => {}
        }
    }

    /// Tells the init system (sd_notify), if one listens.
    fn notify(&self, state: &str) {
        if let Some(n) = &self.notifier {
            if let Err(e) = n.notify(state) {
                limited_warn!("sd_notify failed", None, "sd_notify {state:?}: {e}");
            }
        }
    }

    /// Runs the upgrade hook for a call of the WTP core ([`Action::Hook`]).
    fn hook(&mut self, call: HookCall) {
        let mut facts = self.facts.clone();
        facts.running_version = self.wtp.config().versions.primary.clone();
        self.hooks.call(call.stage, env_for(&call, &facts));
    }

    /// One of the moments only the runtime sees (the switch written, the slot marked good):
    /// its line in the log, and the hook when there is one.
    fn runtime_hook(&mut self, stage: HookStage, version: &str) {
        info!("{}", crate::wtp::hook::called_line(stage));
        let call = HookCall {
            stage,
            version: Some(version.to_string()),
            location: self.wtp.download_location(),
            predownload: false,
            reason: None,
        };
        self.hook(call);
    }

    /// Opens the DTLS session (or the lab's clear channel) with the selected controller.
    fn connect(&mut self, peer: SocketAddr) {
        if let Some(ip) = local_ip_towards(peer) {
            self.wtp.set_local_ip(ip);
            if let Some(t) = &self.tftpd {
                let at = t.local_addr();
                if at.ip().is_unspecified() {
                    self.wtp
                        .set_fleet_endpoint(Some(SocketAddr::new(ip, at.port())));
                }
            }
        }
        let now = self.clock.now();
        self.link = match &self.ctx {
            None => {
                self.wtp.dtls_established("DTLS off", now);
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
                    let failure = DtlsFailure {
                        auth: false,
                        reason: e.to_string(),
                    };
                    self.wtp.dtls_failed(failure, now);
                    Link::None
                }
            },
        };
    }

    /// Sends close_notify and drops the session.
    async fn close(&mut self) {
        if let Link::Dtls { peer, session, .. } = &mut self.link {
            session.close();
            flush_dtls(&self.sock, *peer, session).await;
            info!("DTLS session with {peer} closed");
        }
        self.link = Link::None;
    }

    /// Verifies the whole downloaded image ([`Action::VerifyImage`]).
    fn verify_image(&mut self, version: &str, location: &str) -> Result<(), InstallError> {
        let current = self.wtp.config().versions.primary.clone();
        let result = match (&mut self.updater, self.install) {
            (Some(u), _) => u.verify(location, &current, Some(version)),
            (None, InstallMethod::None) => Ok(()),
            (None, InstallMethod::Refuse) => Err(refuse_install()),
        };
        if let Err(e) = &result {
            warn!("{e}");
        }
        result
    }

    /// Installs the image [`Agent::verify_image`] accepted ([`Action::InstallImage`]).
    fn install_image(
        &mut self,
        version: &str,
        location: &str,
        predownload: bool,
    ) -> Result<(), InstallError> {
        let result = match (&mut self.updater, self.install) {
            (Some(u), _) => u.install_checked(!predownload).map(|_| ()),
            (None, InstallMethod::None) => {
                info!(
                    "Image {version} kept at {location} (install = \"none\": nothing is written to a partition){}",
                    if predownload { "" } else { "; resetting" }
                );
                Ok(())
            }
            (None, InstallMethod::Refuse) => Err(refuse_install()),
        };
        if let Err(e) = &result {
            warn!("{e}");
        }
        result
    }

    /// Moves the DTLS session along and hands what it decrypted to the state machine. True
    /// when there was anything.
    async fn drive_dtls(&mut self) -> bool {
        let Link::Dtls { peer, session, up } = &mut self.link else {
            return false;
        };
        let peer = *peer;
        let mut any = false;
        flush_dtls(&self.sock, peer, session).await;
        while let Some(ev) = session.poll_event() {
            any = true;
            let now = self.clock.now();
            match ev {
                DtlsEvent::Connected(summary) => {
                    *up = true;
                    self.wtp.dtls_established(&summary, now);
                }
                DtlsEvent::Closed => self.wtp.dtls_closed(now),
                DtlsEvent::Failed(e) => {
                    let failure = DtlsFailure {
                        auth: matches!(&e, DtlsError::Credentials(_)),
                        reason: e.to_string(),
                    };
                    self.wtp.dtls_failed(failure, now);
                }
            }
        }
        while let Some(p) = session.recv() {
            any = true;
            self.wtp.handle_control(peer, &p, true, self.clock.now());
            session.recycle(p);
        }
        any
    }

    /// Everything of this turn is sent: now the work that may wait (hashing, file writes),
    /// the status file, and marking a slot on trial good once in Run.
    /// `answered`: the loop's last wake was a datagram on the control socket (progress for
    /// the trial's watchdog).
    fn after_turn(&mut self, answered: bool) {
        self.wtp.idle_work();
        self.save_status();
        if self.wtp.state() == crate::wtp::State::Run {
            self.mark_good();
        }
        if let Some(g) = &mut self.hw_watchdog {
            g.turn(self.wtp.state(), answered, self.clock.now());
        }
    }

    /// The booted slot on trial reached Run: mark it good, and end the WTP's trial hold.
    fn mark_good(&mut self) {
        let Some(u) = self.updater.as_mut().filter(|u| u.on_trial()) else {
            return;
        };
        match u.mark_good_once() {
            Ok(marked) => {
                if let Some(slot) = marked {
                    let running = self.wtp.config().versions.primary.clone();
                    info!("Slot {slot} ({running}) marked good");
                    if let Some(g) = &mut self.hw_watchdog {
                        g.trial_ended();
                    }
                    self.runtime_hook(HookStage::MarkGood, &running);
                }
                self.wtp.release_hold(self.clock.now());
            }
            Err(e) => warn!("Marking the slot good failed: {e}"),
        }
    }

    /// The next time the loop must wake without a datagram.
    fn deadline(&self) -> tokio::time::Instant {
        let dtls_deadline = match &self.link {
            Link::Dtls { session, .. } => session.timeout().map(|d| self.clock.now() + d),
            _ => None,
        };
        let watchdog = self.hw_watchdog.as_ref().and_then(|g| g.next_wake());
        earliest(
            &self.clock,
            &[self.wtp.poll_timeout(), dtls_deadline, watchdog],
        )
    }

    fn save_status(&mut self) {
        save_status(
            &self.cfg,
            &self.wtp,
            &self.clock,
            &mut self.last_status,
            &mut self.status_key,
        );
    }
}

/// The next watchdog tick; never without a watchdog.
async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The upgrade hook must be there and executable: a script that cannot run would refuse every
/// download at PRECHECK, so the agent refuses to start instead.
fn check_hook(script: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(script).map_err(io_err(format!("upgrade hook {}", script.display())))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(RuntimeError::Io {
            what: format!("upgrade hook {}", script.display()),
            error: std::io::Error::other("not an executable file"),
        });
    }
    Ok(())
}

fn refuse_install() -> InstallError {
    InstallError::Refused("this board does not install images (install = \"refuse\")".into())
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
