//! A driver for directed tests of the WTP state machine: no network, no DTLS, a virtual clock.
//! It plays the AC by hand: builds its packets, reads what the WTP sends, and walks the WTP to
//! the state a test starts from (as quinn-proto's `tests/util.rs` does for a connection).

#![allow(dead_code)] // each test file uses its own part

use std::net::SocketAddr;
use std::time::Duration;

use wtpd::capwap::builder::build;
use wtpd::capwap::element::AcDescriptor;
use wtpd::capwap::{ControlMessage, Element, MessageType, Packet};
use wtpd::image::store::MemStore;
use wtpd::time::Instant;
use wtpd::wtp::{
    Action, Channel, DownloadPolicy, Hold, Identity, State, Target, TargetKind, Timers, Versions,
    Wtp, WtpConfig,
};

/// The AC's control address.
pub fn ac() -> SocketAddr {
    "192.0.2.1:5246".parse().unwrap()
}

pub fn at(ms: u64) -> Instant {
    Instant::from_duration(Duration::from_millis(ms))
}

/// A packet the WTP sent, parsed.
#[derive(Debug, Clone)]
pub struct Sent {
    pub to: SocketAddr,
    pub channel: Channel,
    /// The message type (0 for a Data Channel Keep-Alive).
    pub msg_type: u32,
    pub seq: u8,
    pub result: Option<u32>,
    pub vendor_text: Option<String>,
    pub image_identifier: Option<String>,
}

impl Sent {
    pub fn is(&self, mt: MessageType) -> bool {
        self.msg_type == mt as u32
    }
}

/// The configuration directed tests start from: running 1.0, backup 0.9, RFC timers.
pub fn config(hold: Option<Hold>) -> WtpConfig {
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
        can_switch: true,
        hold,
        seed: 11,
        hooks: false,
        fleet: Default::default(),
    }
}

/// What `w` sent, parsed.
pub fn sent(w: &mut Wtp) -> Vec<Sent> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(t) = w.poll_transmit(&mut buf) {
        let mut s = Sent {
            to: t.to,
            channel: t.channel,
            msg_type: 0,
            seq: 0,
            result: None,
            vendor_text: None,
            image_identifier: None,
        };
        if t.channel != Channel::Data {
            let p = Packet::parse(&buf).unwrap();
            let m = ControlMessage::parse(p.payload).unwrap();
            s.msg_type = m.msg_type;
            s.seq = m.seq;
            for e in m.elements() {
                match Element::parse(e.unwrap()).unwrap() {
                    Element::ResultCode(c) => s.result = Some(c),
                    Element::VendorSpecific { data, .. } => {
                        s.vendor_text = Some(String::from_utf8_lossy(data).into_owned())
                    }
                    Element::ImageIdentifier { name, .. } => {
                        s.image_identifier = Some(name.to_string())
                    }
                    _ => {}
                }
            }
        }
        out.push(s);
    }
    out
}

/// The actions `w` asks for.
pub fn actions(w: &mut Wtp) -> Vec<Action> {
    std::iter::from_fn(|| w.poll_action()).collect()
}

/// A WTP, the virtual time, and everything it sent since the last look.
pub struct Driver {
    pub w: Wtp,
    pub now: Instant,
}

impl Driver {
    /// A WTP started in Discovery with the AC as its one static target.
    pub fn new(cfg: WtpConfig) -> Driver {
        Self::with_store(cfg, MemStore::new(1 << 20))
    }

    pub fn with_store(cfg: WtpConfig, store: MemStore) -> Driver {
        let mut w = Wtp::new(cfg, Box::new(store));
        let now = at(0);
        w.start(now);
        assert_eq!(w.poll_action(), Some(Action::FindControllers));
        w.set_targets(
            vec![Target {
                addr: ac(),
                kind: TargetKind::Static,
            }],
            now,
        );
        Driver { w, now }
    }

    pub fn state(&self) -> State {
        self.w.state()
    }

    /// The virtual time, in milliseconds.
    pub fn ms(&self) -> u64 {
        self.now.as_duration().as_millis() as u64
    }

    /// After a teardown: gives the WTP its targets again when it asks (Idle to Discovery).
    pub fn rediscover(&mut self) {
        assert_eq!(self.actions(), vec![Action::FindControllers]);
        self.w.set_targets(
            vec![Target {
                addr: ac(),
                kind: TargetKind::Static,
            }],
            self.now,
        );
    }

    /// Moves the clock to `ms` and lets the WTP's timers run.
    pub fn at(&mut self, ms: u64) {
        self.now = at(ms);
        self.w.handle_timeout(self.now);
    }

    /// Runs the WTP's timers until `ms`, one deadline at a time.
    pub fn run_until(&mut self, ms: u64) {
        while let Some(t) = self.w.poll_timeout() {
            if t > at(ms) {
                break;
            }
            self.now = t;
            self.w.handle_timeout(t);
        }
        self.now = at(ms);
    }

    /// What the WTP sent, parsed.
    pub fn sent(&mut self) -> Vec<Sent> {
        sent(&mut self.w)
    }

    /// The one message of type `mt` among what the WTP sent.
    pub fn expect(&mut self, mt: MessageType) -> Sent {
        let sent = self.sent();
        let found: Vec<&Sent> = sent.iter().filter(|s| s.is(mt)).collect();
        assert_eq!(found.len(), 1, "one {}: {sent:?}", mt.name());
        found[0].clone()
    }

    pub fn actions(&mut self) -> Vec<Action> {
        actions(&mut self.w)
    }

    /// The AC sends a control message through the session.
    pub fn ac_sends(&mut self, mt: MessageType, seq: u8, elements: &[Element<'_>]) {
        let p = build(mt as u32, seq, elements);
        self.w.handle_control(ac(), &p, true, self.now);
    }

    /// The AC answers the WTP's request `req` with these elements.
    pub fn ac_answers(&mut self, req: &Sent, elements: &[Element<'_>]) {
        let p = build(req.msg_type + 1, req.seq, elements);
        self.w.handle_control(ac(), &p, true, self.now);
    }

    /// Answers the Discovery Request (in clear) as an AC with `active` of 10 WTPs.
    pub fn discovery_response(&mut self, req: &Sent, from: SocketAddr, active: u16) {
        let desc = AcDescriptor {
            stations: 0,
            station_limit: 10,
            active_wtps: active,
            max_wtps: 10,
            security: 0x02,
            r_mac: 2,
            dtls_policy: 2,
            info: vec![],
        };
        let p = build(
            MessageType::DiscoveryResponse as u32,
            req.seq,
            &[Element::AcDescriptor(desc), Element::AcName("ac-1")],
        );
        self.w.handle_control(from, &p, false, self.now);
    }

    /// Discovery answered and DiscoveryInterval over: the WTP is in DTLS Setup.
    pub fn reach_dtls_setup(&mut self) {
        let req = self.expect(MessageType::DiscoveryRequest);
        self.discovery_response(&req, ac(), 0);
        self.at(self.ms() + 5_000); // DiscoveryInterval (§4.7.5)
        assert_eq!(self.state(), State::DtlsSetup);
        assert_eq!(self.actions(), vec![Action::DtlsConnect { peer: ac() }]);
    }

    /// DTLS up: the WTP is in Join and has sent its Join Request.
    pub fn reach_join(&mut self) -> Sent {
        self.reach_dtls_setup();
        self.w.dtls_established("test", self.now);
        assert_eq!(self.state(), State::Join);
        self.expect(MessageType::JoinRequest)
    }

    /// Joined with an AC whose Join Response names `ac_version`; returns what followed.
    pub fn join(&mut self, ac_version: &str) -> Vec<Sent> {
        let join = self.reach_join();
        self.ac_answers(
            &join,
            &[
                Element::ResultCode(0),
                Element::ImageIdentifier {
                    vendor: 32473,
                    name: ac_version,
                },
            ],
        );
        self.sent()
    }

    /// Joined on the same version and configured: the WTP is in Data Check.
    pub fn reach_data_check(&mut self) -> Sent {
        let after = self.join("1.0");
        assert_eq!(self.state(), State::Configure);
        let req = after
            .into_iter()
            .find(|s| s.is(MessageType::ConfigurationStatusRequest))
            .expect("Configuration Status Request");
        self.ac_answers(&req, &[Element::ResultCode(0)]);
        assert_eq!(self.state(), State::DataCheck);
        self.expect(MessageType::ChangeStateEventRequest)
    }

    /// The WTP is in Run.
    pub fn reach_run(&mut self) {
        let req = self.reach_data_check();
        self.ac_answers(&req, &[Element::ResultCode(0)]);
        assert_eq!(self.state(), State::Run);
    }
}
