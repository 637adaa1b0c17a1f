//! The controller (AC) side of CAPWAP, as acsim drives it: events and time in, packets and
//! actions out, for many WTPs at once. Like [`crate::wtp`], it owns no socket, DTLS session or
//! clock.
//!
//! One [`WtpSession`] per DTLS peer walks Join → Configure → Data Check → Run, answering the
//! WTP's requests; the AC's own requests (Reset) go through the same one-outstanding-request rule.

pub mod config;
pub mod fleet;
pub mod image;
mod rollout;
pub mod status;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use log::{debug, info, warn};

use crate::capwap::element::{AcDescriptor, DescriptorInfo};
use crate::capwap::header::Header;
use crate::capwap::keepalive::keep_alive_session;
use crate::capwap::msgtype::is_request;
use crate::capwap::{
    Channel, ControlMessage, Element, MessageType, Packet, PacketBuilder, ParseError, ResultCode,
};
use crate::image::source::ImageSource;
use crate::outq::OutQueue;
use crate::reliable::{Requester, Responder, RetransmitDecision, SeqOrder};
use crate::time::Instant;

pub use config::{AcConfig, AcTimers};
pub use fleet::{FleetConfig, FleetSession, HttpsSource, Site};
pub use image::{AcDownload, Faults};

/// A packet the AC sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcTransmit {
    pub to: SocketAddr,
    pub channel: Channel,
}

/// Something the driver must do besides sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcAction {
    /// Close (close_notify) and forget the DTLS session with this WTP.
    DtlsClose { peer: SocketAddr },
}

/// Where one WTP stands, seen from the AC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// DTLS is up; waiting for the Join Request (WaitJoin).
    Join,
    /// Joined; waiting for the Configuration Status Request.
    Configure,
    /// Configured; waiting for the Change State Event Request and the data keep-alive.
    DataCheck,
    /// Serving the image the WTP asked for after its Join.
    ImageData,
    Run,
    /// A Reset Request was sent.
    Reset,
}

impl SessionState {
    pub fn name(self) -> &'static str {
        match self {
            SessionState::Join => "Join",
            SessionState::Configure => "Configure",
            SessionState::DataCheck => "Data Check",
            SessionState::ImageData => "Image Data",
            SessionState::Run => "Run",
            SessionState::Reset => "Reset",
        }
    }
}

/// What the AC knows of one WTP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WtpInfo {
    pub name: String,
    pub model: String,
    pub serial: String,
    pub primary_version: String,
    pub backup_version: String,
    pub session_id: Vec<u8>,
    pub echoes: u64,
}

/// One WTP's session.
#[derive(Debug)]
pub struct WtpSession {
    pub peer: SocketAddr,
    pub state: SessionState,
    pub info: WtpInfo,
    requester: Requester,
    responder: Responder,
    deadline: Option<Instant>,
    data_addr: Option<SocketAddr>,
    /// The image transfer to this WTP, if one was asked for.
    pub download: Option<AcDownload>,
    /// Its part in a fleet upgrade (`ac::fleet`).
    pub fleet: FleetSession,
}

/// Counters for tests and the status table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcStats {
    pub malformed: BTreeMap<&'static str, u64>,
    pub discovery_responses: u64,
    pub joins_accepted: u64,
    pub joins_refused: u64,
    /// Requests processed (duplicates answered from the cache are not counted).
    pub requests_processed: u64,
    pub duplicate_requests: u64,
    pub runs: u64,
    pub teardowns: u64,
    /// Queued transfers started over `max_transfers` because the WTP was about to give its
    /// Image Data Request up (`ac::image`, `take_transfer_slot`).
    pub transfers_over_limit: u64,
}

/// The controller.
pub struct Ac {
    cfg: AcConfig,
    sessions: BTreeMap<SocketAddr, WtpSession>,
    builder: PacketBuilder,
    out: OutQueue<AcTransmit>,
    actions: VecDeque<AcAction>,
    stats: AcStats,
    seq_seed: u8,
    source: Box<dyn ImageSource>,
    /// One block's worth of image, reused for every block.
    block_buf: Vec<u8>,
    /// WTPs whose session ended, by name: what they last did, for the status table.
    departed: BTreeMap<String, WtpSession>,
    /// Some transfer waits for one of the `max_transfers` to end.
    queued_transfers: bool,
    /// A transfer ended (or a session left) since queued transfers were last looked at.
    transfer_ended: bool,
    /// The primary AP of each (site, image type), by name (`ac::fleet`).
    primaries: BTreeMap<(String, String), String>,
    /// When to look at the fleet's waiting predownloads and the rolling activation again.
    fleet_tick: Option<Instant>,
    /// The rolling activation, running or last run (`ac::rollout`).
    rollout: Option<rollout::Rollout>,
}

impl Ac {
    pub fn new(cfg: AcConfig, source: Box<dyn ImageSource>) -> Self {
        Ac {
            source,
            block_buf: Vec::new(),
            departed: BTreeMap::new(),
            queued_transfers: false,
            transfer_ended: false,
            primaries: BTreeMap::new(),
            fleet_tick: None,
            rollout: None,
            cfg,
            sessions: BTreeMap::new(),
            builder: PacketBuilder::new(),
            out: OutQueue::default(),
            actions: VecDeque::new(),
            stats: AcStats::default(),
            seq_seed: 0,
        }
    }

    pub fn config(&self) -> &AcConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &AcStats {
        &self.stats
    }

    pub fn sessions(&self) -> impl Iterator<Item = &WtpSession> {
        self.sessions.values()
    }

    pub fn session(&self, peer: SocketAddr) -> Option<&WtpSession> {
        self.sessions.get(&peer)
    }

    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<AcTransmit> {
        self.out.pop_into(buf)
    }

    pub fn poll_action(&mut self) -> Option<AcAction> {
        self.actions.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .flat_map(|s| [s.deadline, s.requester.poll_timeout()])
            .flatten()
            .chain(self.queued_start_by())
            .chain(self.fleet_tick)
            .min()
    }

    fn descriptor(&self) -> AcDescriptor<'_> {
        let security = if self.cfg.psk {
            crate::capwap::element::ac_security::PRE_SHARED
        } else {
            crate::capwap::element::ac_security::X509
        };
        AcDescriptor {
            stations: 0,
            station_limit: 1000,
            active_wtps: self.sessions.len().min(u16::MAX as usize) as u16,
            max_wtps: self.cfg.max_wtps,
            security,
            r_mac: 2,
            dtls_policy: 0x02,
            info: vec![
                DescriptorInfo {
                    vendor: self.cfg.vendor_id,
                    typ: 4,
                    data: b"acsim",
                },
                DescriptorInfo {
                    vendor: self.cfg.vendor_id,
                    typ: 5,
                    data: self.cfg.version.as_bytes(),
                },
            ],
        }
    }

    fn malformed(&mut self, from: SocketAddr, what: &str, e: &ParseError) {
        let kind = e.kind();
        let n = self.stats.malformed.entry(kind).or_insert(0);
        *n += 1;
        if *n == 1 {
            warn!("Dropping malformed {what} from {from}: {e} (further '{kind}' drops are counted, not logged)");
        }
    }

    // ----- DTLS news -----------------------------------------------------------------------

    /// A WTP completed the DTLS handshake: start WaitJoin (§4.7.16); §2.3.1 DTLS Connect to
    /// Join (d), AC side.
    pub fn dtls_established(&mut self, peer: SocketAddr, now: Instant) {
        let t = &self.cfg.timers;
        self.seq_seed = self.seq_seed.wrapping_add(37);
        let s = WtpSession {
            peer,
            state: SessionState::Join,
            info: WtpInfo::default(),
            requester: Requester::new(
                t.retransmit_interval,
                t.max_retransmit,
                t.echo_interval,
                self.seq_seed,
            ),
            responder: Responder::new(),
            deadline: Some(now + t.wait_join),
            data_addr: None,
            download: None,
            fleet: FleetSession::default(),
        };
        info!("DTLS session up with {peer}; waiting for its Join Request");
        self.sessions.insert(peer, s);
    }

    /// The WTP closed its DTLS session, or it failed.
    pub fn dtls_closed(&mut self, peer: SocketAddr, reason: &str) {
        if let Some(s) = self.sessions.remove(&peer) {
            info!("WTP {} ({peer}) left: {reason}", display_name(&s));
            self.depart(s, reason);
        }
    }

    fn drop_session(&mut self, peer: SocketAddr, reason: &str) {
        if let Some(s) = self.sessions.remove(&peer) {
            info!("Tearing down WTP {} ({peer}): {reason}", display_name(&s));
            self.actions.push_back(AcAction::DtlsClose { peer });
            self.depart(s, reason);
        }
    }

    /// Keeps what a WTP whose session ended last did, for the status table.
    fn depart(&mut self, mut s: WtpSession, reason: &str) {
        self.stats.teardowns += 1;
        self.transfer_ended = true;
        Self::abandon_download(&mut s, reason);
        // What the status table shows stays; the copies of the last request and response go.
        let t = &self.cfg.timers;
        s.requester = Requester::new(t.retransmit_interval, t.max_retransmit, t.echo_interval, 0);
        s.responder = Responder::new();
        s.info.session_id = Vec::new();
        if !s.info.name.is_empty() {
            if self.departed.len() >= 4 * self.cfg.max_wtps as usize {
                self.departed.pop_first();
            }
            self.departed.insert(s.info.name.clone(), s);
        }
    }

    /// WTPs whose session ended and that have not come back.
    pub fn departed(&self) -> impl Iterator<Item = &WtpSession> {
        let live: Vec<&str> = self
            .sessions
            .values()
            .map(|s| s.info.name.as_str())
            .collect();
        self.departed
            .values()
            .filter(move |s| !live.contains(&s.info.name.as_str()))
    }

    /// The live session of the WTP with this name (or address).
    pub fn find(&self, who: &str) -> Option<SocketAddr> {
        self.sessions
            .values()
            .find(|s| s.info.name == who || s.peer.to_string() == who)
            .map(|s| s.peer)
    }

    // ----- admin ---------------------------------------------------------------------------

    /// Sends a Reset Request to a WTP in Run. Returns false when it is not in Run or busy.
    pub fn reset(&mut self, peer: SocketAddr, now: Instant) -> bool {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return false;
        };
        if s.state != SessionState::Run || s.requester.busy() {
            return false;
        }
        let seq = s.requester.next_seq();
        self.builder
            .start(&Header::control(), MessageType::ResetRequest as u32, seq);
        let pkt = self.builder.finish();
        if let Some(bytes) = s.requester.send(MessageType::ResetRequest as u32, pkt, now) {
            self.out.push(
                AcTransmit {
                    to: peer,
                    channel: Channel::ControlSecure,
                },
                bytes,
            );
        }
        // §2.3.1 Run to Reset (r): the Reset Request (§9.2).
        s.state = SessionState::Reset;
        info!("Reset Request sent to WTP {} ({peer})", display_name(s));
        true
    }

    // ----- timers --------------------------------------------------------------------------

    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
        self.start_queued(now);
        self.start_overdue(now);
        if self.fleet_tick.is_some_and(|t| t <= now) {
            self.fleet_tick = None;
        }
        self.advance_fleet(now);
        self.advance_rollout(now);
        if self.fleet_tick.is_none() && (self.fleet_waiting() || self.rollout_running()) {
            self.fleet_tick = Some(now + Duration::from_secs(1));
        }
    }

    fn expire(&mut self, now: Instant) {
        let peers: Vec<SocketAddr> = self.sessions.keys().copied().collect();
        for peer in peers {
            let mut expire: Option<String> = None;
            if let Some(s) = self.sessions.get_mut(&peer) {
                if s.deadline.is_some_and(|d| d <= now) {
                    s.deadline = None;
                    expire = Some(match s.state {
                        SessionState::Join => "WaitJoin expired".into(),
                        SessionState::Configure | SessionState::DataCheck => {
                            "ChangeStatePendingTimer/DataCheckTimer expired".into()
                        }
                        SessionState::Run | SessionState::Reset | SessionState::ImageData => {
                            "no Echo Request within the echo budget".into()
                        }
                    });
                }
                match s.requester.on_timeout(now) {
                    RetransmitDecision::Wait => {}
                    RetransmitDecision::Retransmit { packet, count } => {
                        info!("Retransmitting request to {peer} (attempt {count})");
                        self.out.push(
                            AcTransmit {
                                to: peer,
                                channel: Channel::ControlSecure,
                            },
                            packet,
                        );
                    }
                    RetransmitDecision::GiveUp { .. } => {
                        expire = Some("no answer after MaxRetransmit retransmissions".into());
                    }
                }
            }
            if let Some(reason) = expire {
                self.drop_session(peer, &reason);
            }
        }
    }

    // ----- receiving -----------------------------------------------------------------------

    /// A data channel packet: keep-alives are echoed back (§4.4.1).
    pub fn handle_data(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        let pkt = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(e) => return self.malformed(from, "data packet", &e),
        };
        if !pkt.header.keep_alive {
            return;
        }
        let Some(id) = keep_alive_session(pkt.payload) else {
            let e = ParseError::BadValue {
                what: "keep-alive without Session ID",
                value: 0,
            };
            return self.malformed(from, "keep-alive", &e);
        };
        let echo_budget = self.cfg.timers.run_budget();
        let Some(s) = self
            .sessions
            .values_mut()
            .find(|s| s.info.session_id == id && s.peer.ip() == from.ip())
        else {
            debug!("keep-alive for an unknown session from {from}");
            return;
        };
        s.data_addr = Some(from);
        if s.state == SessionState::DataCheck {
            // §2.3.1 Data Check to Run (o), AC side: the first Data Channel Keep-Alive.
            s.state = SessionState::Run;
            s.deadline = Some(now + echo_budget);
            self.stats.runs += 1;
            info!("WTP {} ({}) is in Run", display_name(s), s.peer);
        }
        self.out.push(
            AcTransmit {
                to: from,
                channel: Channel::Data,
            },
            bytes,
        );
    }

    /// A control packet; `secure` says whether it came through DTLS.
    pub fn handle_control(&mut self, from: SocketAddr, bytes: &[u8], secure: bool, now: Instant) {
        self.control(from, bytes, secure, now);
        self.start_queued(now);
    }

    fn control(&mut self, from: SocketAddr, bytes: &[u8], secure: bool, now: Instant) {
        let pkt = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(e) => return self.malformed(from, "control packet", &e),
        };
        if pkt.header.fragment {
            debug!("fragmented control packet from {from} dropped: acsim sends and expects whole packets");
            return;
        }
        let msg = match ControlMessage::parse(pkt.payload) {
            Ok(m) => m,
            Err(e) => return self.malformed(from, "control message", &e),
        };
        if msg.message_type() == Some(MessageType::DiscoveryRequest) {
            return self.on_discovery(from, &msg);
        }
        if !secure || !self.sessions.contains_key(&from) {
            debug!(
                "control message type {} from {from} without a session ignored",
                msg.msg_type
            );
            return;
        }
        if is_request(msg.msg_type) {
            self.on_request(from, &msg, now);
        } else {
            self.on_response(from, &msg, now);
        }
    }

    fn on_discovery(&mut self, from: SocketAddr, msg: &ControlMessage<'_>) {
        let mut radios = Vec::new();
        for raw in msg.elements() {
            match raw.and_then(Element::parse) {
                Ok(Element::WtpRadioInformation {
                    radio_id,
                    radio_type,
                }) => radios.push((radio_id, radio_type)),
                Ok(_) => {}
                Err(e) => return self.malformed(from, "Discovery Request", &e),
            }
        }
        self.stats.discovery_responses += 1;
        let mut b = std::mem::take(&mut self.builder);
        b.start(
            &Header::control(),
            MessageType::DiscoveryResponse as u32,
            msg.seq,
        );
        self.describe_ac(&mut b, &radios);
        self.control_addresses(&mut b);
        self.out.push(
            AcTransmit {
                to: from,
                channel: Channel::ControlClear,
            },
            b.finish(),
        );
        self.builder = b;
        debug!("Discovery Response sent to {from}");
    }

    /// The elements that describe the AC in Discovery and Join Responses (RFC 5415 §5.2,
    /// §6.2): AC Descriptor, AC Name, and the WTP's radios echoed back as the bindings served.
    fn describe_ac(&self, b: &mut PacketBuilder, radios: &[(u8, u32)]) {
        b.element(&Element::AcDescriptor(self.descriptor()));
        b.element(&Element::AcName(&self.cfg.name));
        for &(radio_id, radio_type) in radios {
            b.element(&Element::WtpRadioInformation {
                radio_id,
                radio_type,
            });
        }
    }

    fn control_addresses(&self, b: &mut PacketBuilder) {
        let n = self.sessions.len().min(u16::MAX as usize) as u16;
        match self.cfg.control_address {
            Some(IpAddr::V4(a)) => {
                b.element(&Element::ControlIpv4 {
                    addr: a,
                    wtp_count: n,
                });
            }
            Some(IpAddr::V6(a)) => {
                b.element(&Element::ControlIpv6 {
                    addr: a,
                    wtp_count: n,
                });
            }
            None => {}
        }
    }

    fn respond(&mut self, peer: SocketAddr, request_type: u32, seq: u8, elements: &[Element<'_>]) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        self.builder
            .start(&Header::control(), request_type.wrapping_add(1), seq);
        for e in elements {
            self.builder.element(e);
        }
        let pkt = self.builder.finish();
        s.responder.record(seq, pkt);
        self.out.push(
            AcTransmit {
                to: peer,
                channel: Channel::ControlSecure,
            },
            pkt,
        );
    }

    fn on_request(&mut self, peer: SocketAddr, msg: &ControlMessage<'_>, now: Instant) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        match s.responder.classify(msg.seq) {
            SeqOrder::Duplicate => {
                self.stats.duplicate_requests += 1;
                self.out.push(
                    AcTransmit {
                        to: peer,
                        channel: Channel::ControlSecure,
                    },
                    s.responder.cached(),
                );
                return;
            }
            SeqOrder::Old => return,
            SeqOrder::New => {}
        }
        self.stats.requests_processed += 1;
        let state = s.state;
        let t = self.cfg.timers.clone();
        match (msg.message_type(), state) {
            (Some(MessageType::JoinRequest), SessionState::Join) => self.on_join(peer, msg, now),
            (Some(MessageType::ConfigurationStatusRequest), SessionState::Configure) => {
                let echo = t.echo_interval.as_secs().clamp(1, 255) as u8;
                let disc = t.discovery_interval.as_secs().clamp(1, 255) as u8;
                self.respond(
                    peer,
                    msg.msg_type,
                    msg.seq,
                    &[
                        Element::CapwapTimers {
                            discovery: disc,
                            echo_request: echo,
                        },
                        Element::IdleTimeout(300),
                        Element::WtpFallback(1),
                    ],
                );
                if let Some(s) = self.sessions.get_mut(&peer) {
                    // §2.3.1 Configure to Data Check (m), AC side.
                    s.state = SessionState::DataCheck;
                    s.deadline = Some(now + t.change_state_pending);
                }
            }
            (Some(MessageType::ChangeStateEventRequest), SessionState::DataCheck) => {
                self.respond(peer, msg.msg_type, msg.seq, &[]);
                if let Some(s) = self.sessions.get_mut(&peer) {
                    s.deadline = Some(now + t.data_check);
                }
            }
            (Some(MessageType::ImageDataRequest), SessionState::Configure | SessionState::Run) => {
                self.on_image_request(peer, msg, now)
            }
            (
                Some(MessageType::EchoRequest),
                SessionState::Run | SessionState::Reset | SessionState::ImageData,
            ) => {
                if let Some(s) = self.sessions.get_mut(&peer) {
                    s.info.echoes += 1;
                    if matches!(s.state, SessionState::Run | SessionState::ImageData) {
                        s.deadline = Some(
                            now + if s.state == SessionState::ImageData {
                                t.image_data_budget()
                            } else {
                                t.run_budget()
                            },
                        );
                    }
                }
                self.respond(peer, msg.msg_type, msg.seq, &[]);
            }
            (Some(MessageType::WtpEventRequest), _) => {
                for raw in msg.elements() {
                    if let Ok(Element::VendorSpecific {
                        element_id, data, ..
                    }) = raw.and_then(Element::parse)
                    {
                        if element_id == crate::capwap::vendor::FLEET_REPORT {
                            match crate::capwap::fleet::Report::parse(data) {
                                Ok(r) => self.on_fleet_report(peer, r, now),
                                Err(e) => info!("fleet report from {peer} ignored: {e}"),
                            }
                        }
                        if element_id == crate::capwap::vendor::DOWNLOAD_FAILURE {
                            let name = self
                                .sessions
                                .get(&peer)
                                .map(display_name)
                                .unwrap_or_default();
                            let reason = String::from_utf8_lossy(data).into_owned();
                            info!("AP Event: {name} AP Image Download Failed: {reason}");
                            self.on_download_failure_event(peer, &reason, now);
                        }
                    }
                }
                self.respond(peer, msg.msg_type, msg.seq, &[]);
            }
            (Some(MessageType::JoinRequest | MessageType::ConfigurationStatusRequest), _)
            | (Some(MessageType::ChangeStateEventRequest | MessageType::EchoRequest), _) => {
                let code = ResultCode::MessageUnexpectedInvalidInCurrentState as u32;
                info!(
                    "Request type {} from {peer} unexpected in state {}",
                    msg.msg_type,
                    state.name()
                );
                self.respond(peer, msg.msg_type, msg.seq, &[Element::ResultCode(code)]);
            }
            _ => {
                let code = ResultCode::MessageUnexpectedUnrecognizedRequest as u32;
                self.respond(peer, msg.msg_type, msg.seq, &[Element::ResultCode(code)]);
            }
        }
    }

    fn on_join(&mut self, peer: SocketAddr, msg: &ControlMessage<'_>, now: Instant) {
        let mut info = WtpInfo::default();
        let mut base_mac: Option<[u8; 6]> = None;
        let mut offer = None;
        let mut radios = Vec::new();
        for raw in msg.elements() {
            match raw.and_then(Element::parse) {
                Ok(Element::WtpName(n)) => info.name = n.to_string(),
                Ok(Element::SessionId(id)) => info.session_id = id.to_vec(),
                Ok(Element::WtpRadioInformation {
                    radio_id,
                    radio_type,
                }) => radios.push((radio_id, radio_type)),
                Ok(Element::WtpBoardData { items, .. }) => {
                    for it in items {
                        let text = String::from_utf8_lossy(it.data).into_owned();
                        match it.typ {
                            0 => info.model = text,
                            1 => info.serial = text,
                            4 => base_mac = it.data.try_into().ok(),
                            _ => {}
                        }
                    }
                }
                Ok(Element::VendorSpecific {
                    vendor,
                    element_id: crate::capwap::vendor::FLEET_OFFER,
                    data,
                }) if vendor == self.cfg.vendor_id => {
                    match crate::capwap::fleet::Offer::parse(data) {
                        Ok(o) => offer = Some(o),
                        Err(e) => info!("fleet offer from {peer} ignored: {e}"),
                    }
                }
                Ok(Element::WtpDescriptor(d)) => {
                    for i in d.info {
                        let text = String::from_utf8_lossy(i.data).into_owned();
                        match i.typ {
                            1 => info.primary_version = text,
                            3 => info.backup_version = text,
                            _ => {}
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => return self.malformed(peer, "Join Request", &e),
            }
        }
        let refuse = self.cfg.join_result;
        let joined = self
            .sessions
            .values()
            .filter(|s| s.state != SessionState::Join)
            .count();
        let code = if info.session_id.len() != 16 {
            ResultCode::FailureMissingMandatoryElement as u32
        } else if refuse == 0 && joined >= self.cfg.max_wtps as usize {
            // Full: RFC 5415 §4.6.35 has no "too many WTPs"; Resource Depletion is the AC's
            // way to say it cannot take one more.
            ResultCode::JoinFailureResourceDepletion as u32
        } else {
            refuse
        };
        let accepted = ResultCode::from_u32(code).is_some_and(|r| r.is_success());
        let mut b = std::mem::take(&mut self.builder);
        b.start(
            &Header::control(),
            MessageType::JoinResponse as u32,
            msg.seq,
        );
        b.element(&Element::ResultCode(code));
        self.describe_ac(&mut b, &radios);
        b.element(&Element::EcnSupport(0));
        self.control_addresses(&mut b);
        if let Some(img) = self
            .cfg
            .image_version
            .as_ref()
            .filter(|_| self.cfg.image_at_join)
        {
            b.element(&Element::ImageIdentifier {
                vendor: self.cfg.vendor_id,
                name: img,
            });
        }
        let pkt = b.finish();
        if let Some(s) = self.sessions.get_mut(&peer) {
            s.responder.record(msg.seq, pkt);
            if accepted {
                // §2.3.1 Join to Configure (g), AC side: the Join Response (§6.2).
                s.state = SessionState::Configure;
                s.deadline = Some(now + self.cfg.timers.change_state_pending);
            }
            s.info = info;
            s.fleet.base_mac = base_mac;
            s.fleet.offer = offer;
        }
        self.out.push(
            AcTransmit {
                to: peer,
                channel: Channel::ControlSecure,
            },
            pkt,
        );
        self.builder = b;
        let name = self
            .sessions
            .get(&peer)
            .map(display_name)
            .unwrap_or_default();
        if accepted {
            self.stats.joins_accepted += 1;
            info!("WTP {name} ({peer}) joined");
        } else {
            self.stats.joins_refused += 1;
            let why = ResultCode::from_u32(code)
                .map(|r| r.describe())
                .unwrap_or("refused");
            info!("Join of WTP {name} ({peer}) refused with result code {code} ({why})");
            // The WTP tears down when it reads the refusal; give the response time to arrive.
            if let Some(s) = self.sessions.get_mut(&peer) {
                s.deadline = Some(now + Duration::from_secs(5));
            }
        }
    }

    fn on_response(&mut self, peer: SocketAddr, msg: &ControlMessage<'_>, now: Instant) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        if !s.requester.on_response(msg.msg_type, msg.seq) {
            debug!("unexpected response type {} from {peer}", msg.msg_type);
            return;
        }
        let result = msg
            .elements()
            .find_map(|raw| match raw.and_then(Element::parse) {
                Ok(Element::ResultCode(c)) => Some(c),
                _ => None,
            });
        match msg.message_type() {
            Some(MessageType::ResetResponse) => {
                info!(
                    "WTP {} ({peer}) answered the reset with result code {}",
                    display_name(s),
                    result.unwrap_or(0)
                )
            }
            Some(MessageType::ImageDataResponse) => {
                // A refusal may say why in our Vendor Specific Payload (RFC 5415 §9.1.2).
                let why = msg
                    .elements()
                    .find_map(|raw| match raw.and_then(Element::parse) {
                        Ok(Element::VendorSpecific {
                            element_id, data, ..
                        }) if element_id == crate::capwap::vendor::DOWNLOAD_FAILURE => {
                            Some(String::from_utf8_lossy(data).into_owned())
                        }
                        _ => None,
                    });
                self.on_image_block_response(peer, result, why.as_deref(), now)
            }
            Some(MessageType::ConfigurationUpdateResponse) => self.on_update_response(peer, result),
            _ => {}
        }
    }
}

/// The WTP's name, or its address while it has not said.
fn display_name(s: &WtpSession) -> String {
    if s.info.name.is_empty() {
        s.peer.to_string()
    } else {
        s.info.name.clone()
    }
}

#[cfg(test)]
mod tests;
