//! The WTP state machine (src/wtp/) fed arbitrary sequences of well-formed control messages
//! from its controller (every message type, any sequence number or the one it waits for, a
//! choice of elements), interleaved with time, DTLS events and the verdicts of the image
//! actions. Structure-aware (`arbitrary`): random bytes would almost never get past the
//! Discovery Response. A case may start already joined (the Join Request sent) or in Run, to
//! reach the later states sooner.
//!
//! Property (RFC 5415 §2.3.1, §4.5): every packet the WTP sends is valid where it is sent:
//! - a clear control packet is a Discovery Request, in Discovery;
//! - a request through DTLS is one the WTP may send in its state (Join Request in Join,
//!   Configuration Status Request in Configure, Change State Event Request in Data Check or
//!   Run, Image Data Request in Image Data or Run, Echo Request in Run or Image Data, WTP Event
//!   / Data Transfer / Primary Discovery Request in Run), and only in a state with a session;
//! - a response answers a request the AC sent (same sequence number, type + 1; for a type
//!   the RFC does not define, with Result Code 19, Unrecognized Request, §4.5.3), and says
//!   success only for a request the AC may send in that state (§9.1, §8, §7: Image Data and
//!   Reset in Image Data; the Run-state requests in Run);
//! - a data channel packet (keep-alive) is sent in Run only.
//!
//! A state is "where it is sent" when it is the state before or after the call that sent it
//! (a Join Response both ends Join and starts Configure with a request).

#![no_main]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use wtpd::capwap::builder::build;
use wtpd::capwap::element::AcDescriptor;
use wtpd::capwap::fragment::{Reassembler, ReassemblyLimits};
use wtpd::capwap::{ControlMessage, Element, MessageType, Packet, ResultCode};
use wtpd::image::store::MemStore;
use wtpd::time::Instant;
use wtpd::wtp::{
    Action, Channel, DownloadPolicy, DtlsFailure, Hold, Identity, State, Target, TargetKind,
    Timers, Versions, Wtp, WtpConfig,
};

const VERSIONS: [&str; 4] = ["1.0", "2.0", "0.9", "1.0.0.1"];

#[derive(Arbitrary, Debug, Clone)]
enum El {
    ResultCode(u8),
    ResultCodeRaw(u32),
    ImageIdentifier(u8),
    ImageInformation { size: u16, md5: [u8; 16] },
    ImageData { data_type: u8, len: u16 },
    CapwapTimers { discovery: u8, echo: u8 },
    AcDescriptor,
    AcName,
    AcNameWithPriority(u8),
    InitiateDownload,
    IdleTimeout(u32),
    VendorSpecific(Vec<u8>),
    Raw { typ: u16, value: Vec<u8> },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Seq {
    /// The sequence number of the last request the WTP sent (what a response must carry).
    Expected,
    /// The next sequence number after the last request the AC sent (a fresh request).
    Fresh,
    /// The AC's last request's number again (a retransmission).
    Repeat,
    Raw(u8),
}

#[derive(Arbitrary, Debug)]
enum Step {
    Control {
        msg_type: u8,
        seq: Seq,
        elements: Vec<El>,
        insecure: bool,
        stranger: bool,
    },
    /// Arbitrary bytes on the control port.
    Garbage(Vec<u8>),
    /// Time passes by 2^n milliseconds.
    Wait(u8),
    DtlsUp,
    DtlsFailed(bool),
    DtlsClosed,
    Verdict(bool),
    Installed(bool),
    ReleaseHold,
    Shutdown,
}

/// Where a case starts: the steps then take over.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Idle,
    /// The Join Request is out.
    Joined,
    /// Joined, configured, in Run (the AC answered each request with success).
    Running,
}

#[derive(Arbitrary, Debug)]
struct Case {
    start: Start,
    hold: Option<bool>,
    can_switch: bool,
    steps: Vec<Step>,
}

fn ac() -> SocketAddr {
    "192.0.2.1:5246".parse().unwrap()
}

/// Requests the WTP may send, by state.
fn wtp_may_request(t: MessageType, s: State) -> bool {
    use MessageType as M;
    match t {
        M::JoinRequest => s == State::Join,
        M::ConfigurationStatusRequest => s == State::Configure,
        M::ChangeStateEventRequest => matches!(s, State::DataCheck | State::Run),
        M::ImageDataRequest => matches!(s, State::ImageData | State::Run),
        // RFC 5415 §7.1 has Echo Requests in Run; this WTP also sends them in Image Data
        // (src/wtp/image.rs arms the timer there), and acsim expects them during a download
        // (its echo budget). Left as designed: docs/fuzzing.md.
        M::EchoRequest => matches!(s, State::Run | State::ImageData),
        M::WtpEventRequest | M::DataTransferRequest => s == State::Run,
        M::PrimaryDiscoveryRequest => s == State::Run,
        _ => false,
    }
}

/// Requests the AC may send, by state: what the WTP may answer with success.
fn ac_may_request(t: MessageType, s: State) -> bool {
    use MessageType as M;
    match t {
        M::ImageDataRequest | M::ResetRequest => matches!(s, State::ImageData | State::Run),
        M::ConfigurationUpdateRequest
        | M::ClearConfigurationRequest
        | M::StationConfigurationRequest
        | M::DataTransferRequest => s == State::Run,
        _ => false,
    }
}

struct Harness {
    w: Wtp,
    now: Instant,
    /// Sequence number of the WTP's last request, of the AC's last request.
    wtp_seq: u8,
    ac_seq: u8,
    /// (type, seq) of every request delivered to the WTP (a superset of those it may answer).
    asked: HashSet<(u32, u8)>,
    /// Reassembles what the WTP is sent, as its own reassembler does, so that a request made
    /// of garbage or fragments is in `asked` too.
    mirror: Reassembler,
    dtls_pending: bool,
    verify_pending: bool,
    install_pending: bool,
    stopped: bool,
    /// States seen after a call (printed with WTPD_FUZZ_STATES=1, to see how deep a corpus
    /// goes: `cargo fuzz run wtp CORPUS -- -runs=0`).
    seen: HashSet<State>,
}

impl Harness {
    fn new(case: &Case) -> Self {
        let hold = case.hold.map(|trial| {
            if trial {
                Hold::Trial("booted slot on trial".into())
            } else {
                Hold::Refused("environment unreadable".into())
            }
        });
        let w = Wtp::new(
            WtpConfig {
                identity: Identity::default(),
                versions: Versions {
                    primary: "1.0".into(),
                    backup: Some("0.9".into()),
                },
                timers: Timers::default(),
                download: DownloadPolicy {
                    required_bytes: 1024,
                    ..DownloadPolicy::default()
                },
                retry: Default::default(),
                can_switch: case.can_switch,
                hold,
                seed: 7,
                hooks: false,
                fleet: Default::default(),
            },
            Box::new(MemStore::new(1 << 20)),
        );
        Harness {
            w,
            now: Instant::from_duration(Duration::from_secs(1)),
            wtp_seq: 0,
            ac_seq: 100,
            asked: HashSet::new(),
            mirror: Reassembler::new(ReassemblyLimits::default()),
            dtls_pending: false,
            verify_pending: false,
            install_pending: false,
            stopped: false,
            seen: HashSet::new(),
        }
    }

    /// Runs one call, then checks everything it sent against the states around it.
    fn step(&mut self, f: impl FnOnce(&mut Wtp, Instant)) {
        let before = self.w.state();
        f(&mut self.w, self.now);
        self.check(before);
    }

    /// Not generic: the actions it carries out call `step` again with closures of their own.
    fn check(&mut self, before: State) {
        let after = self.w.state();
        self.seen.insert(after);
        let in_state = |p: &dyn Fn(State) -> bool| p(before) || p(after);
        let mut buf = Vec::new();
        while let Some(t) = self.w.poll_transmit(&mut buf) {
            if t.channel == Channel::Data {
                assert!(
                    in_state(&|s| s == State::Run),
                    "data packet in {before:?}/{after:?}"
                );
                continue;
            }
            let p = Packet::parse(&buf).expect("the WTP's packets parse");
            let m = ControlMessage::parse(p.payload).expect("the WTP's messages parse");
            let mut result = None;
            for e in m.elements() {
                let e = Element::parse(e.expect("the WTP's elements read"))
                    .expect("the WTP's elements parse");
                if let Element::ResultCode(c) = e {
                    result = Some(c);
                }
            }
            let Some(typ) = m.message_type() else {
                // §4.5.3: an unrecognized request is answered with type + 1 and Result Code
                // 19, and that is the only message of an unknown type the WTP may send.
                assert!(
                    self.asked.contains(&(m.msg_type.wrapping_sub(1), m.seq)),
                    "unknown type {} answers no request",
                    m.msg_type
                );
                assert_eq!(
                    result,
                    Some(ResultCode::MessageUnexpectedUnrecognizedRequest as u32)
                );
                continue;
            };
            if t.channel == Channel::ControlClear {
                assert_eq!(typ, MessageType::DiscoveryRequest, "clear {typ:?}");
                assert!(
                    in_state(&|s| s == State::Discovery),
                    "Discovery Request in {before:?}/{after:?}"
                );
                self.wtp_seq = m.seq;
                continue;
            }
            assert!(
                in_state(&|s| s.has_session()),
                "{typ:?} through DTLS in {before:?}/{after:?}"
            );
            if typ.is_request() {
                assert!(
                    in_state(&|s| wtp_may_request(typ, s)),
                    "WTP sent {typ:?} in {before:?}/{after:?}"
                );
                self.wtp_seq = m.seq;
            } else {
                assert!(
                    self.asked.contains(&(m.msg_type.wrapping_sub(1), m.seq)),
                    "{typ:?} seq {} answers no request the AC sent",
                    m.seq
                );
                let success =
                    result.is_none_or(|c| ResultCode::from_u32(c).is_some_and(|r| r.is_success()));
                // An Echo Response carries no Result Code, so it cannot say "invalid in the
                // current state"; the WTP answers an AC's Echo Request in every state with a
                // session (src/wtp/mod.rs, on_request). Left as it is: see docs/fuzzing.md.
                if success && typ != MessageType::EchoResponse {
                    let req = MessageType::from_u32(m.msg_type - 1).expect("a known request");
                    assert!(
                        in_state(&|s| ac_may_request(req, s)),
                        "success answer to {req:?} in {before:?}/{after:?}"
                    );
                }
            }
        }
        while let Some(a) = self.w.poll_action() {
            match a {
                Action::FindControllers => self.step(|w, now| {
                    let t = Target {
                        addr: ac(),
                        kind: TargetKind::Static,
                    };
                    w.set_targets(vec![t], now)
                }),
                Action::DtlsConnect { .. } => self.dtls_pending = true,
                Action::DtlsClose => {
                    self.dtls_pending = false;
                    self.step(|w, now| w.dtls_closed(now));
                }
                Action::VerifyImage { .. } => self.verify_pending = true,
                Action::InstallImage { .. } => self.install_pending = true,
                Action::ActivateImage { .. } | Action::Hook(_) => {}
                // Fleet upgrades are off in this target: nothing is fetched or served.
                Action::FetchImage { .. } | Action::CancelFetch | Action::ServeImage { .. } => {}
                Action::Reboot { .. } | Action::Exit => self.stopped = true,
            }
        }
    }

    /// Notes a request among the bytes sent to the WTP's control port.
    fn deliver(&mut self, from: SocketAddr, bytes: &[u8], secure: bool) {
        if let Ok(p) = Packet::parse(bytes) {
            let payload = match self.mirror.push(&p, self.now) {
                Ok(Some(payload)) => payload,
                _ => Vec::new(),
            };
            if let Ok(m) = ControlMessage::parse(&payload) {
                if m.msg_type % 2 == 1 {
                    self.asked.insert((m.msg_type, m.seq));
                }
            }
        }
        self.step(|w, now| w.handle_control(from, bytes, secure, now));
    }

    fn control(&mut self, msg_type: u8, seq: Seq, els: &[El], insecure: bool, stranger: bool) {
        // Types 1..=26 (RFC 5415), sometimes an unknown one.
        let msg_type = u32::from(msg_type % 28) + 1;
        let seq = match seq {
            Seq::Expected => self.wtp_seq,
            Seq::Fresh => self.ac_seq.wrapping_add(1),
            Seq::Repeat => self.ac_seq,
            Seq::Raw(s) => s,
        };
        let data = vec![0x5au8; 4096];
        let elements: Vec<Element<'_>> = els
            .iter()
            .take(8)
            .map(|e| match e {
                El::ResultCode(c) => Element::ResultCode(u32::from(*c % 34)),
                El::ResultCodeRaw(c) => Element::ResultCode(*c),
                El::ImageIdentifier(v) => Element::ImageIdentifier {
                    vendor: 32473,
                    name: VERSIONS[usize::from(*v) % VERSIONS.len()],
                },
                El::ImageInformation { size, md5 } => Element::ImageInformation {
                    file_size: u32::from(*size),
                    md5: *md5,
                },
                El::ImageData { data_type, len } => Element::ImageData {
                    data_type: data_type % 6,
                    data: &data[..usize::from(*len) % data.len()],
                },
                El::CapwapTimers { discovery, echo } => Element::CapwapTimers {
                    discovery: *discovery,
                    echo_request: *echo,
                },
                El::AcDescriptor => Element::AcDescriptor(AcDescriptor {
                    stations: 0,
                    station_limit: 10,
                    active_wtps: 0,
                    max_wtps: 10,
                    security: 0x02,
                    r_mac: 2,
                    dtls_policy: 2,
                    info: vec![],
                }),
                El::AcName => Element::AcName("ac-1"),
                El::AcNameWithPriority(p) => Element::AcNameWithPriority {
                    priority: *p,
                    name: "ac-1",
                },
                El::InitiateDownload => Element::InitiateDownload,
                El::IdleTimeout(t) => Element::IdleTimeout(*t),
                El::VendorSpecific(d) => Element::VendorSpecific {
                    vendor: 32473,
                    element_id: 1,
                    data: d,
                },
                El::Raw { typ, value } => Element::Unknown { typ: *typ, value },
            })
            .collect();
        let bytes = build(msg_type, seq, &elements);
        let from: SocketAddr = if stranger {
            "198.51.100.9:5246".parse().unwrap()
        } else {
            ac()
        };
        if msg_type % 2 == 1 {
            self.ac_seq = seq;
        }
        self.deliver(from, &bytes, !insecure);
    }
}

fuzz_target!(|case: Case| {
    let mut h = Harness::new(&case);
    h.step(|w, now| w.start(now));
    if case.start != Start::Idle {
        // Discovery Response, the discovery interval, DTLS up: the Join Request is out.
        let resp = build(
            MessageType::DiscoveryResponse as u32,
            h.wtp_seq,
            &[
                Element::AcDescriptor(AcDescriptor {
                    stations: 0,
                    station_limit: 10,
                    active_wtps: 0,
                    max_wtps: 10,
                    security: 0x02,
                    r_mac: 2,
                    dtls_policy: 2,
                    info: vec![],
                }),
                Element::AcName("ac-1"),
            ],
        );
        h.step(|w, now| w.handle_control(ac(), &resp, false, now));
        h.now = h.now + Duration::from_secs(5);
        h.step(|w, now| w.handle_timeout(now));
        if h.dtls_pending {
            h.dtls_pending = false;
            h.step(|w, now| w.dtls_established("fuzz", now));
        }
    }
    if case.start == Start::Running {
        // Join Response, Configuration Status Response, Change State Event Response.
        for t in [
            MessageType::JoinResponse,
            MessageType::ConfigurationStatusResponse,
            MessageType::ChangeStateEventResponse,
        ] {
            let resp = build(t as u32, h.wtp_seq, &[Element::ResultCode(0)]);
            h.step(|w, now| w.handle_control(ac(), &resp, true, now));
        }
    }
    for s in case.steps.iter().take(64) {
        if h.stopped {
            break;
        }
        match s {
            Step::Control {
                msg_type,
                seq,
                elements,
                insecure,
                stranger,
            } => h.control(*msg_type, *seq, elements, *insecure, *stranger),
            Step::Garbage(b) => h.deliver(ac(), b, true),
            Step::Wait(n) => {
                h.now = h.now + Duration::from_millis(1 << (n % 20));
                h.step(|w, now| w.handle_timeout(now));
            }
            Step::DtlsUp if h.dtls_pending => {
                h.dtls_pending = false;
                h.step(|w, now| w.dtls_established("fuzz", now));
            }
            Step::DtlsFailed(auth) if h.dtls_pending => {
                h.dtls_pending = false;
                let f = DtlsFailure {
                    auth: *auth,
                    reason: "fuzz".into(),
                };
                h.step(|w, now| w.dtls_failed(f, now));
            }
            Step::DtlsClosed => h.step(|w, now| w.dtls_closed(now)),
            Step::Verdict(ok) if h.verify_pending => {
                h.verify_pending = false;
                let r = outcome(*ok, "bad signature");
                h.step(|w, now| w.image_verified(r, now));
            }
            Step::Installed(ok) if h.install_pending => {
                h.install_pending = false;
                let r = outcome(*ok, "write failed");
                h.step(|w, now| w.install_done(r, now));
            }
            Step::ReleaseHold => h.step(|w, now| w.release_hold(now)),
            Step::Shutdown => h.step(|w, now| w.shutdown(now)),
            _ => {}
        }
    }
    static TRACE: OnceLock<bool> = OnceLock::new();
    if *TRACE.get_or_init(|| std::env::var_os("WTPD_FUZZ_STATES").is_some()) {
        let mut seen: Vec<_> = h.seen.iter().map(|s| s.name()).collect();
        seen.sort();
        eprintln!("states: {}", seen.join(", "));
    }
});

/// The driver's answer to a verify or install action: done, or refused for `why`.
fn outcome(ok: bool, why: &str) -> Result<(), wtpd::image::install::InstallError> {
    if ok {
        Ok(())
    } else {
        Err(wtpd::image::install::InstallError::Refused(why.into()))
    }
}
