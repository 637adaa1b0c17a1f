//! The WTP state machine (RFC 5415 §2.3): events and time in, packets, timers and actions out.
//!
//! [`Wtp`] owns no socket, no DTLS session and no clock. A driver (the tokio runtime, or the
//! deterministic simulation in tests) feeds it:
//! - [`Wtp::handle_control`] for every CAPWAP control packet (clear, or decrypted by DTLS),
//! - [`Wtp::handle_data`] for packets on the data channel,
//! - [`Wtp::dtls_established`], [`Wtp::dtls_failed`], [`Wtp::dtls_closed`] for DTLS news,
//! - [`Wtp::set_targets`] with the controllers to discover, when asked,
//! - [`Wtp::handle_timeout`] when [`Wtp::poll_timeout`] is reached,
//!
//! and drains [`Wtp::poll_transmit`] (packets to send) and [`Wtp::poll_action`] (DTLS sessions to
//! open or close, reboot, exit).

pub mod config;
pub mod discovery;
mod download;
pub mod fleet;
pub mod hook;
pub mod image;
pub mod messages;
pub mod state;
mod timer;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use log::{debug, info, warn};

use crate::capwap::fragment::{Reassembler, ReassemblyLimits};
use crate::capwap::msgtype::is_request;
use crate::capwap::{
    ControlMessage, Element, MessageType, Packet, PacketBuilder, ParseError, ResultCode,
};
use crate::image::store::ImageStore;
use crate::outq::OutQueue;
use crate::reliable::{Requester, Responder, RetransmitDecision, SeqOrder};
use crate::rng::Rng;
use crate::time::Instant;

pub use crate::capwap::Channel;
pub use config::{DownloadPolicy, Hold, RetryState};
pub use config::{Identity, Timers, Versions, WtpConfig};
pub use discovery::{Candidate, Target, TargetKind};
use download::Download;
pub use download::{DownloadState, DownloadStatus};
pub use hook::{HookCall, HookStage};
pub use state::State;
use timer::{Timer, TimerTable};

/// The most controllers one Discovery round remembers (RFC 5415 §3.3 chooses among them).
/// Responses arrive in clear from any source address, so the table is bounded; a fleet's
/// controller list is far shorter.
pub const MAX_CANDIDATES: usize = 16;

/// A packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub channel: Channel,
}

/// Something the driver must do besides sending packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Gather the discovery targets and call [`Wtp::set_targets`].
    FindControllers,
    /// Open a DTLS session with this controller (client side).
    DtlsConnect { peer: SocketAddr },
    /// Send close_notify and drop the DTLS session.
    DtlsClose,
    /// Restart the device (after the Reset state).
    Reboot { reason: String },
    /// The last block of an image is stored: verify the whole file (signature, every payload,
    /// this board's rules, the version the controller announced) without writing anything,
    /// then call [`Wtp::image_verified`]. The AC's last Image Data Request is answered with
    /// the verdict (RFC 5415 §9.1.2).
    VerifyImage {
        version: String,
        location: String,
        predownload: bool,
    },
    /// The image [`Action::VerifyImage`] accepted: install it (to the inactive partition), then
    /// call [`Wtp::install_done`]. A predownloaded image is installed without switching.
    InstallImage {
        version: String,
        location: String,
        predownload: bool,
    },
    /// Switch to the installed image `version` (a Reset Request named it); a reboot follows.
    ActivateImage { version: String },
    /// Run the board's upgrade hook (the seed's `upgrade.sh`, [`WtpConfig::hooks`]). For
    /// PRECHECK the download waits for [`Wtp::precheck_done`]; the other stages tell the
    /// script what happens and do not wait for its verdict.
    Hook(HookCall),
    /// The agent was asked to stop and has closed its session: exit.
    Exit,
    /// Fetch the image out of band (a fleet upgrade, `wtp::fleet`) into the download store's
    /// place, calling [`Wtp::fetch_begin`], [`Wtp::fetched`] for each piece and
    /// [`Wtp::fetch_done`] at the end. `pin`: the SHA-256 of the HTTPS server's certificate.
    FetchImage {
        url: String,
        pin: Option<[u8; 32]>,
        size: Option<u64>,
    },
    /// Stop the fetch under way; its end is not reported.
    CancelFetch,
    /// Serve this file under this name to subordinates over TFTP (`None`: serve nothing).
    ServeImage {
        file: Option<(String, std::path::PathBuf)>,
    },
}

/// Why a DTLS session failed to come up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtlsFailure {
    /// The peer's credentials were refused (DTLSAuthenticateFail), as opposed to an abort.
    pub auth: bool,
    pub reason: String,
}

/// Counters an operator (or a test) can read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Malformed packets dropped, by kind.
    pub malformed: BTreeMap<&'static str, u64>,
    pub retransmissions: u64,
    pub duplicate_requests: u64,
    pub unexpected_responses: u64,
    pub joins: u64,
    pub teardowns: u64,
    pub echoes_answered: u64,
}

/// What happens once DTLS Teardown has run its course.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AfterTeardown {
    Restart,
    Sulk,
    Reboot(String),
    /// Back to Discovery after a delay (a failed download's backoff).
    RetryAfter(Duration),
}

/// The controller the WTP is attached to.
#[derive(Debug, Clone)]
struct Peer {
    control: SocketAddr,
    name: String,
}

/// What the WTP keeps for Discovery (§5.1) and the choice of a controller (§3.3). The
/// targets and the AC Name with Priority list outlive a round; the rest is per round.
#[derive(Debug, Default)]
struct Discovery {
    /// The controllers to ask, gathered by the driver.
    targets: Vec<Target>,
    /// Entered Discovery and asked the driver for the targets.
    waiting_for_targets: bool,
    /// The sequence number of this round's Discovery Requests.
    seq: u8,
    /// DiscoveryCount (§4.8.2): rounds since the last choice or sulk.
    count: u32,
    /// The controllers that answered this round, at most [`MAX_CANDIDATES`].
    candidates: heapless::Vec<Candidate, MAX_CANDIDATES>,
    /// AC Name with Priority (§4.6.5) from the last Join Response.
    preferred: Vec<(u8, String)>,
    /// ACs that refused a Join for want of resources (Result Code 4): not chosen again before
    /// the time given while another candidate answers (§3.3), and how many times in a row.
    busy: Vec<BusyAc>,
}

/// An AC that refused the Join as full.
#[derive(Debug, Clone, Copy)]
struct BusyAc {
    control: SocketAddr,
    until: Instant,
    refusals: u32,
}

/// Longest wait before a WTP tries again an AC that said it was full.
const BUSY_HOLD_MAX: Duration = Duration::from_secs(300);

/// The WTP side of CAPWAP.
pub struct Wtp {
    cfg: WtpConfig,
    state: State,
    rng: Rng,
    builder: PacketBuilder,
    out: OutQueue<Transmit>,
    actions: VecDeque<Action>,
    requester: Requester,
    responder: Responder,
    reassembler: Reassembler,
    scratch: Vec<u8>,

    /// What Discovery keeps (§5.1, §3.3): targets, rounds, who answered, who is preferred.
    discovery: Discovery,

    peer: Option<Peer>,
    session_id: [u8; 16],
    local_ip: Option<IpAddr>,
    failed_dtls_session: u32,
    failed_dtls_auth: u32,

    /// The WTP's timers (§4.7); the download and the retransmission keep their own.
    timers: TimerTable,
    after_teardown: AfterTeardown,
    stopping: bool,
    stats: Stats,

    /// The image download sub-machine (§9.1): its state, file, retries and timers.
    download: Download,
}

impl Wtp {
    pub fn new(cfg: WtpConfig, store: Box<dyn ImageStore>) -> Self {
        let t = &cfg.timers;
        let mut rng = Rng::new(cfg.seed);
        let first_seq = rng.below(256) as u8;
        Wtp {
            requester: Requester::new(
                t.retransmit_interval,
                t.max_retransmit,
                t.echo_interval,
                first_seq,
            ),
            rng,
            state: State::Idle,
            builder: PacketBuilder::new(),
            out: OutQueue::default(),
            actions: VecDeque::new(),
            responder: Responder::new(),
            reassembler: Reassembler::new(ReassemblyLimits::default()),
            scratch: Vec::new(),
            discovery: Discovery::default(),
            peer: None,
            session_id: [0; 16],
            local_ip: None,
            failed_dtls_session: 0,
            failed_dtls_auth: 0,
            timers: TimerTable::default(),
            after_teardown: AfterTeardown::Restart,
            stopping: false,
            stats: Stats::default(),
            download: Download::new(store, &cfg.retry),
            cfg,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn config(&self) -> &WtpConfig {
        &self.cfg
    }

    /// The controller the WTP is joined to (or joining).
    pub fn controller(&self) -> Option<(SocketAddr, &str)> {
        self.peer.as_ref().map(|p| (p.control, p.name.as_str()))
    }

    /// The address the driver's socket has, for the Join Request's CAPWAP Local address.
    pub fn set_local_ip(&mut self, ip: IpAddr) {
        self.local_ip = Some(ip);
    }

    /// Leaves Idle for Discovery.
    pub fn start(&mut self, now: Instant) {
        if self.state != State::Idle || self.timers.is_set(Timer::State) {
            return;
        }
        match self.cfg.retry.wait.take() {
            Some(wait) if !wait.is_zero() => {
                info!(
                    "Image download retry {} in {}s (reason : {})",
                    self.download.retry_count,
                    wait.as_secs(),
                    self.download
                        .last_error
                        .as_deref()
                        .unwrap_or("earlier failure")
                );
                self.download.next_retry = Some(now + wait);
                self.timers.set(Timer::State, now + wait);
            }
            _ => self.enter_discovery(now),
        }
    }

    /// Stops the agent: tears the session down if there is one, then asks to exit.
    pub fn shutdown(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        info!("Shutting down CAPWAP (reason : agent stopped)");
        let prechecking = self.download.prechecking.take();
        if let Some(t) = self.download.transfer.take() {
            warn!("Aborting image download(agent stopped), {}", t.image);
            self.download.store.abort();
            self.download.state = DownloadState::Failed;
            self.download.last_error = Some("agent stopped during the download".into());
            self.hook(
                HookStage::Abort,
                Some(t.version.clone()),
                t.predownload,
                Some("agent stopped during the download"),
            );
        } else if let Some((version, predownload)) = prechecking {
            self.hook(
                HookStage::Abort,
                Some(version),
                predownload,
                Some("agent stopped before the download started"),
            );
        }
        if self.state.has_session() || self.state == State::DtlsSetup {
            self.actions.push_back(Action::DtlsClose);
        }
        self.clear_session_timers();
        self.requester.cancel();
        self.set_state(State::Idle, now);
        self.actions.push_back(Action::Exit);
    }

    /// The next packet to send, copied into `buf`.
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.out.pop_into(buf)
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.stopping {
            return None;
        }
        [
            self.timers.next_timeout(),
            self.download.poll_timeout(),
            self.requester.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- state changes -------------------------------------------------------------------

    fn set_state(&mut self, s: State, _now: Instant) {
        if self.state != s {
            info!("CAPWAP State: {}", s.name());
            self.state = s;
        }
    }

    fn clear_session_timers(&mut self) {
        self.timers.clear();
    }

    /// A random duration in `[d/2, d)`, so that a fleet does not act in lock-step.
    fn jitter(&mut self, d: Duration) -> Duration {
        let half = d / 2;
        let ms = half.as_millis() as u64;
        half + Duration::from_millis(if ms == 0 { 0 } else { self.rng.below(ms) })
    }

    /// The AC refused the Join as full (Result Code 4, Resource Depletion): it is not chosen
    /// again for MaxDiscoveryInterval (at least DTLSSessionDelete plus a round), doubling with each refusal in a row up to
    /// [`BUSY_HOLD_MAX`], with jitter, so that a fleet turned away does not come back at once.
    fn note_busy_ac(&mut self, now: Instant) {
        let Some(control) = self.peer.as_ref().map(|p| p.control) else {
            return;
        };
        let refusals = self
            .discovery
            .busy
            .iter()
            .find(|b| b.control == control)
            .map_or(0, |b| b.refusals)
            + 1;
        // From MaxDiscoveryInterval: longer than the teardown (DTLSSessionDelete) and a round.
        let t = &self.cfg.timers;
        let base = t
            .max_discovery_interval
            .max(t.dtls_session_delete + t.discovery_interval)
            .max(Duration::from_secs(1));
        let hold = self.jitter(
            base.saturating_mul(1 << (refusals - 1).min(16))
                .min(BUSY_HOLD_MAX)
                * 2,
        );
        info!(
            "AC {control} is full: not chosen again for {}s while other ACs answer",
            hold.as_secs()
        );
        self.discovery.busy.retain(|b| b.control != control);
        if self.discovery.busy.len() >= MAX_CANDIDATES {
            self.discovery.busy.remove(0);
        }
        self.discovery.busy.push(BusyAc {
            control,
            until: now + hold,
            refusals,
        });
    }

    /// §2.3.1 Idle to Discovery (1): DiscoveryInterval set (§4.7.5), what earlier ACs said
    /// cleared.
    fn enter_discovery(&mut self, now: Instant) {
        self.set_state(State::Discovery, now);
        self.peer = None;
        self.discovery.candidates.clear();
        self.responder.reset();
        self.discovery.waiting_for_targets = true;
        self.timers.stop(Timer::State);
        self.actions.push_back(Action::FindControllers);
    }

    /// The controllers to send Discovery Requests to, gathered by the driver.
    pub fn set_targets(&mut self, targets: Vec<Target>, now: Instant) {
        self.discovery.targets = targets;
        if self.state == State::Discovery && self.discovery.waiting_for_targets {
            self.discovery.waiting_for_targets = false;
            self.discovery_round(now);
        }
    }

    fn discovery_round(&mut self, now: Instant) {
        if self.discovery.count >= self.cfg.timers.max_discoveries {
            info!(
                "No controller answered {} Discovery rounds; sulking for {}s",
                self.discovery.count,
                self.cfg.timers.silent_interval.as_secs()
            );
            self.enter_sulking(now);
            return;
        }
        self.discovery.count += 1;
        self.discovery.seq = self.rng.below(256) as u8;
        let unicast = self
            .discovery
            .targets
            .iter()
            .any(|t| t.kind != TargetKind::Broadcast);
        let targets: Vec<Target> = self
            .discovery
            .targets
            .iter()
            .copied()
            // Limited broadcast is the last resort: only once unicast has had a round.
            .filter(|t| t.kind != TargetKind::Broadcast || !unicast || self.discovery.count > 1)
            .collect();
        if targets.is_empty() {
            warn!("No controller address known (static, DNS, DHCP or broadcast); waiting");
        }
        for t in &targets {
            let pkt = messages::discovery_request(
                &mut self.builder,
                self.discovery.seq,
                t.kind,
                &self.cfg.identity,
                &self.cfg.versions,
            );
            self.out.push(
                Transmit {
                    to: t.addr,
                    channel: Channel::ControlClear,
                },
                pkt,
            );
            // §2.3.1 Discovery to Discovery (#); §5.1.
            info!("Discovery Request sent to {} ({:?})", t.addr, t.kind);
        }
        // Wait DiscoveryInterval for answers; back off (up to MaxDiscoveryInterval) when none come.
        let t = self.cfg.timers.clone();
        let wait = if self.discovery.count == 1 {
            t.discovery_interval
        } else {
            let grown = t
                .discovery_interval
                .saturating_mul(1 << (self.discovery.count - 1).min(6));
            let capped = grown
                .min(t.max_discovery_interval)
                .max(t.discovery_interval);
            self.jitter(capped * 2).max(t.discovery_interval)
        };
        self.timers.set(Timer::State, now + wait);
    }

    /// §2.3.1 Discovery to Sulking (!), DTLS Setup to Sulking (*), DTLS Teardown to Sulking
    /// (u): SilentInterval (§4.7.13), the counters reset (§4.8.2, §4.8.4).
    fn enter_sulking(&mut self, now: Instant) {
        self.set_state(State::Sulking, now);
        self.discovery.count = 0;
        self.failed_dtls_session = 0;
        self.failed_dtls_auth = 0;
        self.timers
            .set(Timer::State, now + self.cfg.timers.silent_interval);
    }

    fn discovery_timer(&mut self, now: Instant) {
        // An AC that said it is full waits out its hold-off; meanwhile the others are chosen
        // among, and when only full ones answered, discovery goes on with its back-off.
        let busy = &self.discovery.busy;
        let free: heapless::Vec<Candidate, MAX_CANDIDATES> = self
            .discovery
            .candidates
            .iter()
            .filter(|c| !busy.iter().any(|b| b.control == c.control && b.until > now))
            .cloned()
            .collect();
        if free.len() < self.discovery.candidates.len() {
            info!(
                "{} of {} answering AC(s) refused a Join as full lately; choosing among the others",
                self.discovery.candidates.len() - free.len(),
                self.discovery.candidates.len()
            );
        }
        let chosen = discovery::select(&free, &self.discovery.preferred).cloned();
        match chosen {
            Some(c) => {
                info!(
                    "Selected AC {} at {} ({:?}, {} of {} WTPs)",
                    c.name, c.control, c.kind, c.active_wtps, c.max_wtps
                );
                self.discovery.count = 0;
                self.peer = Some(Peer {
                    control: c.control,
                    name: c.name,
                });
                // §2.3.1 Discovery to DTLS Setup (%): an AC chosen (§3.3); WaitDTLS (§4.7.15).
                self.set_state(State::DtlsSetup, now);
                self.timers
                    .set(Timer::State, now + self.cfg.timers.wait_dtls);
                self.actions
                    .push_back(Action::DtlsConnect { peer: c.control });
            }
            None => self.discovery_round(now),
        }
    }

    /// Moves to DTLS Teardown: closes the session, cancels what waits, and after
    /// DTLSSessionDelete goes on as `after` says.
    fn teardown(&mut self, reason: &str, after: AfterTeardown, now: Instant) {
        if self.state == State::DtlsTeardown || self.stopping {
            return;
        }
        match &after {
            AfterTeardown::Reboot(_) => info!("Resetting CAPWAP (reason : {reason})"),
            _ => info!("Going to restart CAPWAP (reason : {reason})"),
        }
        self.stats.teardowns += 1;
        self.download.pending_request = false;
        self.download.refusal = None;
        if let Some(v) = self.download.verifying.take() {
            debug!("verdict on {} no longer awaited: teardown", v.version);
        }
        self.stop_fetch();
        self.download.image_deadline = None;
        self.download.predownload_retry = None;
        self.requester.cancel();
        self.responder.reset();
        self.clear_session_timers();
        // §2.3.1 (e), (i), (l), (n), (p), (s): to DTLS Teardown; DTLSSessionDelete (§4.7.6).
        self.set_state(State::DtlsTeardown, now);
        let mut after = after;
        let prechecking = self.download.prechecking.take();
        if let Some(t) = self.download.transfer.take() {
            // The seed's order: the teardown first, then the download it cleans up.
            warn!("Aborting image download(0x0): Dtls cleanup, {}", t.image);
            self.hook(
                HookStage::Abort,
                Some(t.version.clone()),
                t.predownload,
                Some(reason),
            );
            let wait = self.record_failure(reason, now);
            if after == AfterTeardown::Restart {
                after = AfterTeardown::RetryAfter(wait);
            }
        } else if let Some((version, predownload)) = prechecking {
            // The script was told PRECHECK; the download it prepared for will not come.
            self.hook(HookStage::Abort, Some(version), predownload, Some(reason));
        }
        self.actions.push_back(Action::DtlsClose);
        self.after_teardown = after;
        self.timers
            .set(Timer::State, now + self.cfg.timers.dtls_session_delete);
    }

    fn teardown_done(&mut self, now: Instant) {
        self.timers.stop(Timer::State);
        self.peer = None;
        match std::mem::replace(&mut self.after_teardown, AfterTeardown::Restart) {
            AfterTeardown::Restart => {
                // §2.3.1 DTLS Teardown to Idle (t), then Idle to Discovery (1).
                info!("Restarting CAPWAP State Machine.");
                self.set_state(State::Idle, now);
                self.enter_discovery(now);
            }
            AfterTeardown::Sulk => self.enter_sulking(now),
            AfterTeardown::Reboot(reason) => {
                self.set_state(State::Idle, now);
                self.actions.push_back(Action::Reboot { reason });
            }
            AfterTeardown::RetryAfter(wait) => {
                info!("Restarting CAPWAP State Machine in {}s.", wait.as_secs());
                self.set_state(State::Idle, now);
                self.timers.set(Timer::State, now + wait);
            }
        }
    }

    // ----- DTLS news -----------------------------------------------------------------------

    /// The DTLS session with the selected AC is up: send the Join Request.
    pub fn dtls_established(&mut self, summary: &str, now: Instant) {
        if self.state != State::DtlsSetup {
            debug!("DTLS established outside DTLS Setup ignored");
            return;
        }
        let peer = match &self.peer {
            Some(p) => p.clone(),
            None => return,
        };
        info!("DTLS session established with {} ({summary})", peer.control);
        self.failed_dtls_session = 0;
        self.timers.stop(Timer::State);
        // §2.3.1 DTLS Connect to Join (d): the Join Request (§6.1).
        self.set_state(State::Join, now);
        self.rng.fill(&mut self.session_id);
        let seq = self.requester.next_seq();
        messages::join_request(
            &mut self.builder,
            seq,
            &self.cfg.identity,
            &self.cfg.versions,
            &self.session_id,
            self.local_ip,
        );
        // What this WTP can do in a fleet upgrade, for the AC's choice of primaries.
        self.put_fleet_offer();
        self.send_request(MessageType::JoinRequest, now);
        info!("Join Request sent to {}", peer.control);
    }

    /// The DTLS handshake failed (bad credentials, abort, timeout).
    pub fn dtls_failed(&mut self, failure: DtlsFailure, now: Instant) {
        if self.state != State::DtlsSetup && !self.state.has_session() {
            return;
        }
        warn!(
            "DTLS session with {} failed: {}",
            self.peer_addr_text(),
            failure.reason
        );
        if self.state == State::DtlsSetup {
            if failure.auth {
                self.failed_dtls_auth += 1;
            } else {
                self.failed_dtls_session += 1;
            }
        }
        let max = self.cfg.timers.max_failed_dtls_session_retry;
        let after = if self.failed_dtls_auth >= max || self.failed_dtls_session >= max {
            AfterTeardown::Sulk
        } else {
            AfterTeardown::Restart
        };
        let reason = format!("DTLS failure: {}", failure.reason);
        self.teardown(&reason, after, now);
    }

    /// The AC closed the DTLS session (close_notify: DTLSPeerDisconnect).
    pub fn dtls_closed(&mut self, now: Instant) {
        if self.state.has_session() || self.state == State::DtlsSetup {
            self.teardown("DTLS peer disconnect", AfterTeardown::Restart, now);
        }
    }

    fn peer_addr_text(&self) -> String {
        self.peer
            .as_ref()
            .map(|p| p.control.to_string())
            .unwrap_or_else(|| "?".into())
    }

    // ----- sending -------------------------------------------------------------------------

    /// Sends the packet just built in `self.builder` as the outstanding request.
    fn send_request(&mut self, mt: MessageType, now: Instant) {
        let Some(peer) = self.peer.as_ref().map(|p| p.control) else {
            return;
        };
        let pkt = self.builder.finish();
        match self.requester.send(mt as u32, pkt, now) {
            Some(bytes) => self.out.push(
                Transmit {
                    to: peer,
                    channel: Channel::ControlSecure,
                },
                bytes,
            ),
            None => debug!("{} not sent: a request is outstanding", mt.name()),
        }
    }

    fn send_response(&mut self, request_type: u32, seq: u8, result: Option<u32>) {
        self.send_built_response(seq, |b| messages::response(b, request_type, seq, result));
    }

    /// Sends the response `build` makes to the AC's request `seq`, and keeps it as the cached
    /// answer to a repeat of that request (§4.5.3).
    fn send_built_response(
        &mut self,
        seq: u8,
        build: impl for<'b> FnOnce(&'b mut PacketBuilder) -> &'b [u8],
    ) {
        let Some(peer) = self.peer.as_ref().map(|p| p.control) else {
            return;
        };
        let pkt = build(&mut self.builder);
        self.responder.record(seq, pkt);
        self.out.push(
            Transmit {
                to: peer,
                channel: Channel::ControlSecure,
            },
            pkt,
        );
    }

    fn send_keep_alive(&mut self, now: Instant) {
        let Some(peer) = self.peer.as_ref().map(|p| p.control) else {
            return;
        };
        let data = SocketAddr::new(peer.ip(), peer.port().wrapping_add(1));
        messages::keep_alive(&mut self.scratch, &self.session_id);
        self.out.push(
            Transmit {
                to: data,
                channel: Channel::Data,
            },
            &self.scratch,
        );
        self.timers.set(
            Timer::KeepAlive,
            now + self.cfg.timers.data_channel_keep_alive,
        );
    }

    // ----- timers --------------------------------------------------------------------------

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        // The order matters where several are due at once: the state's timer, the download's,
        // the retransmission, the data channel, a pending Image Data Request, then the Echo
        // (which waits when a request is outstanding).
        if self.timers.expire(Timer::State, now) {
            self.state_timer(now);
        }
        if self.download.expire_image_timer(now) {
            self.image_timer(now);
        }
        if self.state == State::Run {
            if let Some(version) = self.download.expire_predownload_retry(now) {
                info!("Retrying the predownload of {version}");
                self.start_download(&version, true, now);
            }
        }
        self.retransmit_timer(now);
        if self.state == State::Run {
            // §4.7.3: DataChannelDeadInterval without a Keep-Alive from the AC: §2.3.1 Run to
            // DTLS Teardown (p).
            if self.timers.expire(Timer::DataDead, now) {
                self.teardown("data channel dead", AfterTeardown::Restart, now);
                return;
            }
            if self.timers.expire(Timer::KeepAlive, now) {
                self.send_keep_alive(now);
            }
        }
        self.send_pending_image_request(now);
        if self.state == State::Run {
            self.fleet_timer(now);
        }
        self.send_pending_report(now);
        // §2.3.1(j) and (q): the EchoInterval timer runs in Image Data and Run.
        if matches!(self.state, State::Run | State::ImageData)
            && self.timers.expire(Timer::Echo, now)
        {
            if self.requester.busy() {
                // §4.5.3: one outstanding request; the Echo waits for the current one.
                self.timers
                    .set(Timer::Echo, now + self.cfg.timers.retransmit_interval);
            } else {
                let seq = self.requester.next_seq();
                messages::echo_request(&mut self.builder, seq);
                self.send_request(MessageType::EchoRequest, now);
                self.timers
                    .set(Timer::Echo, now + self.cfg.timers.echo_interval);
            }
        }
    }

    /// The current state's timer expired (see [`Timer::State`]).
    fn state_timer(&mut self, now: Instant) {
        match self.state {
            // §2.3.1 Discovery to Discovery (#) or to DTLS Setup (3).
            State::Discovery => self.discovery_timer(now),
            // §2.3.1 Sulking to Idle (7): SilentInterval over.
            State::Sulking => {
                // §2.3.1 Sulking to Idle (@).
                info!("Silent interval over");
                self.set_state(State::Idle, now);
                self.enter_discovery(now);
            }
            // §2.3.1 DTLS Setup to DTLS Teardown: WaitDTLS (§4.7.15) expired; §4.8.4.
            State::DtlsSetup => {
                self.failed_dtls_session += 1;
                let after =
                    if self.failed_dtls_session >= self.cfg.timers.max_failed_dtls_session_retry {
                        AfterTeardown::Sulk
                    } else {
                        AfterTeardown::Restart
                    };
                self.teardown("WaitDTLS expired: no DTLS session", after, now);
            }
            // §2.3.1 DTLS Teardown to Idle (t) or Sulking (u): DTLSSessionDelete (§4.7.6).
            State::DtlsTeardown => self.teardown_done(now),
            // A failed download's retry wait is over.
            State::Idle => {
                info!("Restarting CAPWAP State Machine.");
                self.enter_discovery(now);
            }
            State::ImageData => {
                self.teardown("image download cannot start", AfterTeardown::Restart, now);
            }
            _ => {}
        }
    }

    /// The outstanding request's retransmission timer (§4.5.3: RetransmitInterval §4.7.12,
    /// doubling; MaxRetransmit §4.8.7, then DTLS Teardown).
    fn retransmit_timer(&mut self, now: Instant) {
        let outstanding = self.requester.outstanding_type();
        match self.requester.on_timeout(now) {
            RetransmitDecision::Wait => {}
            RetransmitDecision::Retransmit { packet, count } => {
                self.stats.retransmissions += 1;
                if let Some(p) = &self.peer {
                    let name = MessageType::from_u32(outstanding.unwrap_or(0))
                        .map(|m| m.name())
                        .unwrap_or("request");
                    info!("Retransmitting {name} to {} (attempt {count})", p.control);
                    self.out.push(
                        Transmit {
                            to: p.control,
                            channel: Channel::ControlSecure,
                        },
                        packet,
                    );
                }
            }
            RetransmitDecision::GiveUp { msg_type } => {
                let name = MessageType::from_u32(msg_type)
                    .map(|m| m.name())
                    .unwrap_or("request");
                let reason = format!(
                    "no answer to {name} after {} retransmissions",
                    self.cfg.timers.max_retransmit
                );
                self.teardown(&reason, AfterTeardown::Restart, now);
            }
        }
    }

    // ----- receiving -----------------------------------------------------------------------

    fn malformed(&mut self, from: SocketAddr, what: &str, e: &ParseError) {
        let kind = e.kind();
        let n = self.stats.malformed.entry(kind).or_insert(0);
        *n += 1;
        if *n == 1 {
            warn!("Dropping malformed {what} from {from}: {e} (further '{kind}' drops are counted, not logged)");
        }
    }

    /// A CAPWAP packet on the data channel (keep-alives).
    pub fn handle_data(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        let pkt = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(e) => return self.malformed(from, "data packet", &e),
        };
        if !pkt.header.keep_alive {
            debug!("data packet without K flag from {from} ignored");
            return;
        }
        match messages::keep_alive_session(pkt.payload) {
            Some(id)
                if id == self.session_id && matches!(self.state, State::Run | State::DataCheck) =>
            {
                if self.state == State::DataCheck {
                    // Should not happen: Run is entered on the Change State Event Response.
                    return;
                }
                self.timers.set(
                    Timer::DataDead,
                    now + self.cfg.timers.data_channel_dead_interval,
                );
            }
            Some(_) => debug!("keep-alive for another session from {from} ignored"),
            None => self.malformed(
                from,
                "keep-alive",
                &ParseError::BadValue {
                    what: "keep-alive",
                    value: 0,
                },
            ),
        }
    }

    /// A CAPWAP control packet. `secure` says whether it came through the DTLS session.
    pub fn handle_control(&mut self, from: SocketAddr, bytes: &[u8], secure: bool, now: Instant) {
        let pkt = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(e) => return self.malformed(from, "control packet", &e),
        };
        let reassembled;
        let payload: &[u8] = if pkt.header.fragment {
            match self.reassembler.push(&pkt, now) {
                Ok(Some(p)) => {
                    reassembled = p;
                    &reassembled
                }
                Ok(None) => return,
                Err(e) => {
                    debug!("fragment from {from} dropped: {e:?}");
                    return;
                }
            }
        } else {
            pkt.payload
        };
        let msg = match ControlMessage::parse(payload) {
            Ok(m) => m,
            Err(e) => return self.malformed(from, "control message", &e),
        };
        if msg.message_type() == Some(MessageType::DiscoveryResponse) {
            return self.on_discovery_response(from, &msg);
        }
        let from_peer = self.peer.as_ref().is_some_and(|p| p.control == from);
        if !secure || !from_peer || !self.state.has_session() {
            debug!(
                "control message type {} from {from} ignored in state {} (secure {secure})",
                msg.msg_type, self.state
            );
            return;
        }
        if is_request(msg.msg_type) {
            self.on_request(&msg, now);
        } else {
            self.on_response(&msg, now);
            // The request that was outstanding is answered: what waited for it goes now.
            self.send_pending_image_request(now);
            self.send_pending_report(now);
        }
    }

    fn on_discovery_response(&mut self, from: SocketAddr, msg: &ControlMessage<'_>) {
        if self.state != State::Discovery || msg.seq != self.discovery.seq {
            debug!("Discovery Response from {from} outside a Discovery round ignored");
            return;
        }
        let kind_order = self
            .discovery
            .targets
            .iter()
            .enumerate()
            .find(|(_, t)| t.addr == from)
            .map(|(i, t)| (t.kind, i))
            .unwrap_or((TargetKind::Broadcast, usize::MAX));
        let mut cand = Candidate {
            from,
            control: from,
            name: String::new(),
            kind: kind_order.0,
            order: kind_order.1,
            active_wtps: 0,
            max_wtps: 0,
            supports_binding: false,
        };
        let mut have_descriptor = false;
        let mut best_control: Option<(u16, SocketAddr)> = None;
        for raw in msg.elements() {
            let el = match raw.and_then(Element::parse) {
                Ok(e) => e,
                Err(e) => return self.malformed(from, "Discovery Response", &e),
            };
            match el {
                Element::AcDescriptor(d) => {
                    have_descriptor = true;
                    cand.active_wtps = d.active_wtps;
                    cand.max_wtps = d.max_wtps;
                }
                Element::AcName(n) => cand.name = n.to_string(),
                Element::WtpRadioInformation { .. } => cand.supports_binding = true,
                Element::ControlIpv4 { addr, wtp_count } => {
                    let sa = SocketAddr::new(IpAddr::V4(addr), from.port());
                    if usable_control(sa, from) && best_control.is_none_or(|(n, _)| wtp_count < n) {
                        best_control = Some((wtp_count, sa));
                    }
                }
                Element::ControlIpv6 { addr, wtp_count } => {
                    let sa = SocketAddr::new(IpAddr::V6(addr), from.port());
                    if usable_control(sa, from) && best_control.is_none_or(|(n, _)| wtp_count < n) {
                        best_control = Some((wtp_count, sa));
                    }
                }
                _ => {}
            }
        }
        if !have_descriptor {
            let e = ParseError::BadValue {
                what: "Discovery Response without AC Descriptor",
                value: 1,
            };
            return self.malformed(from, "Discovery Response", &e);
        }
        // AC Name is mandatory too (RFC 5415 §5.2), and the WTP repeats it in its Configuration
        // Status Request, where an empty one is malformed (§4.6.4: found by the wtp fuzz target).
        if cand.name.is_empty() {
            let e = ParseError::BadValue {
                what: "Discovery Response without AC Name",
                value: 1,
            };
            return self.malformed(from, "Discovery Response", &e);
        }
        if let Some((_, sa)) = best_control {
            cand.control = sa;
        }
        info!(
            "Discovery Response from {from}: AC {} ({} of {} WTPs)",
            cand.name, cand.active_wtps, cand.max_wtps
        );
        self.discovery.candidates.retain(|c| c.from != from);
        if self.discovery.candidates.push(cand).is_err() {
            // A bounded table: Discovery Responses come in clear, from any source address,
            // so a flood of them must not grow the WTP's memory.
            debug!("Discovery Response from {from} ignored: {MAX_CANDIDATES} controllers already answered");
        }
    }

    fn on_response(&mut self, msg: &ControlMessage<'_>, now: Instant) {
        if !self.requester.on_response(msg.msg_type, msg.seq) {
            self.stats.unexpected_responses += 1;
            debug!(
                "unexpected response type {} seq {} dropped",
                msg.msg_type, msg.seq
            );
            return;
        }
        let mut result: Option<u32> = None;
        let mut image: Option<(u32, String)> = None;
        let mut timers: Option<(u8, u8)> = None;
        let mut preferred = Vec::new();
        let mut image_info: Option<(u32, [u8; 16])> = None;
        let mut direction = None;
        let vendor_id = self.cfg.identity.vendor_id;
        for raw in msg.elements() {
            match raw.and_then(Element::parse) {
                Ok(Element::ResultCode(c)) => result = Some(c),
                Ok(Element::ImageInformation { file_size, md5 }) => {
                    image_info = Some((file_size, md5))
                }
                Ok(Element::ImageIdentifier { vendor, name }) => {
                    image = Some((vendor, name.to_string()))
                }
                Ok(Element::CapwapTimers {
                    discovery,
                    echo_request,
                }) => timers = Some((discovery, echo_request)),
                Ok(Element::AcNameWithPriority { priority, name }) => {
                    preferred.push((priority, name.to_string()))
                }
                Ok(Element::VendorSpecific {
                    vendor,
                    element_id: crate::capwap::vendor::FLEET_DIRECTION,
                    data,
                }) if vendor == vendor_id => match crate::capwap::fleet::Direction::parse(data) {
                    Ok(d) => direction = Some(d),
                    Err(e) => warn!("fleet direction from the AC ignored: {e}"),
                },
                Ok(_) => {}
                Err(e) => {
                    let from = self.peer.as_ref().map(|p| p.control);
                    if let Some(from) = from {
                        self.malformed(from, "response", &e);
                    }
                    return;
                }
            }
        }
        let ok = result
            .map(|c| ResultCode::from_u32(c).is_some_and(|r| r.is_success()))
            .unwrap_or(true);
        match msg.message_type() {
            Some(MessageType::JoinResponse) => {
                let code = result.unwrap_or(0);
                if !ok || result.is_none() {
                    let why = ResultCode::from_u32(code)
                        .map(|r| r.describe())
                        .unwrap_or("unknown");
                    // §2.3.1 Join to DTLS Teardown (e).
                    warn!("AC refused join request with result code: {code} ({why})");
                    if code == ResultCode::JoinFailureResourceDepletion as u32 {
                        self.note_busy_ac(now);
                    }
                    return self.teardown("join refused", AfterTeardown::Restart, now);
                }
                info!("AC accepted join request with result code: {code}");
                if let Some(p) = &self.peer {
                    let control = p.control;
                    self.discovery.busy.retain(|b| b.control != control);
                }
                self.stats.joins += 1;
                if !preferred.is_empty() {
                    self.discovery.preferred = preferred;
                }
                self.after_join(image, now);
            }
            Some(MessageType::ConfigurationStatusResponse) if self.state == State::Configure => {
                if !ok {
                    // §2.3.1 Configure to DTLS Teardown (i).
                    return self.teardown("configuration refused", AfterTeardown::Restart, now);
                }
                if let Some((_, echo)) = timers {
                    if echo > 0 {
                        self.cfg.timers.echo_interval = Duration::from_secs(echo as u64);
                        self.requester
                            .set_echo_interval(self.cfg.timers.echo_interval);
                        info!("AC set EchoInterval to {echo}s");
                    }
                }
                // §2.3.1 Configure to Data Check (m): the Change State Event Request (§8.6).
                self.set_state(State::DataCheck, now);
                let seq = self.requester.next_seq();
                messages::change_state_event_request(&mut self.builder, seq, &self.cfg.identity);
                self.send_request(MessageType::ChangeStateEventRequest, now);
            }
            Some(MessageType::ChangeStateEventResponse) if self.state == State::DataCheck => {
                if !ok {
                    // §2.3.1 Data Check to DTLS Teardown (n).
                    return self.teardown("change state refused", AfterTeardown::Restart, now);
                }
                // §2.3.1 Data Check to Run (o): the data channel starts (§4.4.1).
                self.set_state(State::Run, now);
                self.send_keep_alive(now);
                self.timers.set(
                    Timer::DataDead,
                    now + self.cfg.timers.data_channel_dead_interval,
                );
                self.timers
                    .set(Timer::Echo, now + self.cfg.timers.echo_interval);
            }
            Some(MessageType::EchoResponse) => debug!("Echo Response from AC"),
            Some(MessageType::ImageDataResponse) if self.download.transfer.is_some() => {
                self.on_image_response(result, image_info, direction, now)
            }
            Some(other) => debug!("{} accepted", other.name()),
            None => {}
        }
    }

    fn after_join(&mut self, image: Option<(u32, String)>, now: Instant) {
        if self.decide_version(image.map(|(_, v)| v), now) {
            return;
        }
        // §2.3.1 Join to Configure (g): the Configuration Status Request (§8.2).
        self.set_state(State::Configure, now);
        let seq = self.requester.next_seq();
        let ac_name = self
            .peer
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let stats = self
            .cfg
            .timers
            .statistics_timer
            .as_secs()
            .min(u16::MAX as u64) as u16;
        messages::configuration_status_request(
            &mut self.builder,
            seq,
            &self.cfg.identity,
            &ac_name,
            stats,
        );
        self.send_request(MessageType::ConfigurationStatusRequest, now);
    }

    fn on_request(&mut self, msg: &ControlMessage<'_>, now: Instant) {
        match self.responder.classify(msg.seq) {
            SeqOrder::Duplicate => {
                self.stats.duplicate_requests += 1;
                if let Some(p) = &self.peer {
                    debug!("duplicate request seq {}: cached response resent", msg.seq);
                    self.out.push(
                        Transmit {
                            to: p.control,
                            channel: Channel::ControlSecure,
                        },
                        self.responder.cached(),
                    );
                }
                return;
            }
            SeqOrder::Old => {
                debug!("old request seq {} dropped", msg.seq);
                return;
            }
            SeqOrder::New => {}
        }
        if self
            .download
            .verifying
            .as_ref()
            .is_some_and(|v| v.answer == Some((msg.msg_type, msg.seq)))
        {
            // The AC repeats its last Image Data Request while the image is being verified:
            // its answer follows the verdict (the responder caches it then).
            debug!("last Image Data Request repeated while verifying: answered after the verdict");
            return;
        }
        let run = self.state == State::Run;
        match msg.message_type() {
            Some(MessageType::EchoRequest) => {
                self.stats.echoes_answered += 1;
                self.send_response(msg.msg_type, msg.seq, None);
            }
            Some(MessageType::ImageDataRequest) if self.download.transfer.is_some() => {
                self.on_image_block(msg, now)
            }
            Some(MessageType::ResetRequest) if run || self.state == State::ImageData => {
                if let Some(version) = image_identifier(msg) {
                    return self.on_activate(&version, msg, now);
                }
                // §2.3.1 Run to Reset (r) / Image Data to Reset (k); §9.2.
                info!("Reset Request from AC");
                self.send_response(msg.msg_type, msg.seq, Some(ResultCode::Success as u32));
                self.set_state(State::Reset, now);
                self.teardown(
                    "reset requested by the AC",
                    AfterTeardown::Reboot("AC reset request".into()),
                    now,
                );
            }
            Some(MessageType::ConfigurationUpdateRequest) if run => {
                if let Some(version) = image_identifier(msg) {
                    return self.on_predownload_request(&version, msg, now);
                }
                let mut echo = None;
                for raw in msg.elements() {
                    if let Ok(Element::CapwapTimers { echo_request, .. }) =
                        raw.and_then(Element::parse)
                    {
                        echo = Some(echo_request);
                    }
                }
                if let Some(e) = echo.filter(|e| *e > 0) {
                    self.cfg.timers.echo_interval = Duration::from_secs(e as u64);
                    self.requester
                        .set_echo_interval(self.cfg.timers.echo_interval);
                    info!("AC set EchoInterval to {e}s");
                }
                self.send_response(msg.msg_type, msg.seq, Some(ResultCode::Success as u32));
            }
            Some(MessageType::ClearConfigurationRequest) if run => {
                info!("Clear Configuration Request from AC: nothing configured by the AC to clear");
                self.send_response(msg.msg_type, msg.seq, Some(ResultCode::Success as u32));
            }
            Some(MessageType::StationConfigurationRequest) if run => {
                let code = ResultCode::ConfigurationFailureServiceProvided as u32;
                self.send_response(msg.msg_type, msg.seq, Some(code));
            }
            Some(MessageType::DataTransferRequest) if run => {
                let code = ResultCode::DataTransferErrorNoInformation as u32;
                self.send_response(msg.msg_type, msg.seq, Some(code));
            }
            Some(
                MessageType::ResetRequest
                | MessageType::ConfigurationUpdateRequest
                | MessageType::ClearConfigurationRequest
                | MessageType::StationConfigurationRequest
                | MessageType::DataTransferRequest
                | MessageType::ImageDataRequest,
            ) => {
                let name = msg.message_type().map(|m| m.name()).unwrap_or("request");
                info!(
                    "Discarding msg {name}(type {}) in CAPWAP state: {}",
                    msg.msg_type, self.state
                );
                let code = ResultCode::MessageUnexpectedInvalidInCurrentState as u32;
                self.send_response(msg.msg_type, msg.seq, Some(code));
            }
            _ => {
                info!("Unrecognized request type {} from AC", msg.msg_type);
                let code = ResultCode::MessageUnexpectedUnrecognizedRequest as u32;
                self.send_response(msg.msg_type, msg.seq, Some(code));
            }
        }
    }
}

/// The name of the Image Identifier element of a message, if it has one.
fn image_identifier(msg: &ControlMessage<'_>) -> Option<String> {
    msg.elements()
        .find_map(|raw| match raw.and_then(Element::parse) {
            Ok(Element::ImageIdentifier { name, .. }) => Some(name.to_string()),
            _ => None,
        })
}

/// An announced CAPWAP Control address is used unless it cannot be right: unspecified, or a
/// loopback address announced by an AC that answered from elsewhere (an AC behind NAT, such as
/// QEMU's user networking, announcing its own 127.0.0.1).
fn usable_control(announced: SocketAddr, from: SocketAddr) -> bool {
    let ip = announced.ip();
    !ip.is_unspecified() && (!ip.is_loopback() || from.ip().is_loopback())
}
