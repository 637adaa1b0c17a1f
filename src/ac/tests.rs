//! The AC core on a virtual clock: a WTP is walked to Run with hand-built packets, then its
//! Echo Requests are delivered or lost to check when the AC gives up on it.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Ac, AcAction, AcConfig, AcTimers, SessionState};
use crate::capwap::builder::build;
use crate::capwap::keepalive::keep_alive;
use crate::capwap::{Element, MessageType};
use crate::image::source::FolderSource;
use crate::time::Instant;

const SESSION_ID: [u8; 16] = [0x5a; 16];

fn peer() -> SocketAddr {
    "192.0.2.10:40000".parse().unwrap()
}

fn at(secs: u64) -> Instant {
    Instant::from_duration(Duration::from_secs(secs))
}

/// An AC with `echo_interval` and the RFC's other timers, and a WTP in Run at time 0.
fn ac_in_run(echo_interval: Duration) -> Ac {
    let cfg = AcConfig {
        timers: AcTimers {
            echo_interval,
            ..AcTimers::default()
        },
        ..AcConfig::default()
    };
    let mut ac = Ac::new(
        cfg,
        Box::new(FolderSource::new("/nonexistent-image-folder")),
    );
    let now = Instant::ZERO;
    ac.dtls_established(peer(), now);
    let join = build(
        MessageType::JoinRequest as u32,
        1,
        &[Element::WtpName("ap-1"), Element::SessionId(&SESSION_ID)],
    );
    ac.handle_control(peer(), &join, true, now);
    let status = build(MessageType::ConfigurationStatusRequest as u32, 2, &[]);
    ac.handle_control(peer(), &status, true, now);
    let change = build(MessageType::ChangeStateEventRequest as u32, 3, &[]);
    ac.handle_control(peer(), &change, true, now);
    let mut ka = Vec::new();
    keep_alive(&mut ka, &SESSION_ID);
    ac.handle_data(peer(), &ka, now);
    assert_eq!(ac.session(peer()).map(|s| s.state), Some(SessionState::Run));
    let mut out = Vec::new();
    while ac.poll_transmit(&mut out).is_some() {}
    ac
}

/// Runs the AC's timers second by second up to `until`; true while the WTP's session lives.
fn alive_until(ac: &mut Ac, from: u64, until: u64) -> bool {
    for t in from..=until {
        ac.handle_timeout(at(t));
    }
    let dropped =
        std::iter::from_fn(|| ac.poll_action()).any(|a| a == AcAction::DtlsClose { peer: peer() });
    !dropped && ac.session(peer()).is_some()
}

fn echo(ac: &mut Ac, seq: u8, t: u64) {
    let req = build(MessageType::EchoRequest as u32, seq, &[]);
    ac.handle_control(peer(), &req, true, at(t));
}

#[test]
fn one_lost_echo_does_not_drop_a_wtp_at_echo_interval_1() {
    let mut ac = ac_in_run(Duration::from_secs(1));
    echo(&mut ac, 10, 0);
    // The Echo due at 1 s is lost; the WTP retransmits it RetransmitInterval (3 s) later, at
    // 4 s, and that one gets through.
    assert!(
        alive_until(&mut ac, 0, 4),
        "dropped before the retransmission"
    );
    echo(&mut ac, 11, 4);
    assert!(alive_until(&mut ac, 4, 5));
}

#[test]
fn every_retransmission_of_a_lost_echo_is_waited_for() {
    let mut ac = ac_in_run(Duration::from_secs(1));
    echo(&mut ac, 10, 0);
    // Sent at 1 s, retransmitted at 4, 7, 10, 13 and 16 s (3 s apart: half the 1 s
    // EchoInterval is below the RetransmitInterval, §4.5.3; MaxRetransmit 5): only the last
    // gets through.
    assert!(alive_until(&mut ac, 0, 16));
    echo(&mut ac, 11, 16);
    assert!(alive_until(&mut ac, 16, 17));
}

#[test]
fn silence_beyond_the_whole_budget_drops_the_wtp() {
    let mut ac = ac_in_run(Duration::from_secs(1));
    echo(&mut ac, 10, 0);
    let budget = ac.config().timers.run_budget();
    // EchoInterval 1 s: half of it is below the 3 s RetransmitInterval, so every
    // retransmission waits 3 s (reliable::next_interval).
    assert_eq!(budget, Duration::from_secs(1 + 3 + 3 + 3 + 3 + 3 + 3));
    assert!(alive_until(&mut ac, 0, budget.as_secs() - 1));
    assert!(!alive_until(
        &mut ac,
        budget.as_secs(),
        budget.as_secs() + 1
    ));
    assert_eq!(ac.stats().teardowns, 1);
}

#[test]
fn budgets_follow_the_configured_timers() {
    let t = AcTimers::default();
    // 3 + 6 + 12, then no more than half the 30 s EchoInterval (§4.5.3), and 3 s of transit.
    assert_eq!(
        t.retransmit_span(t.echo_interval),
        Duration::from_secs(3 + 3 + 6 + 12 + 15 + 15)
    );
    assert_eq!(t.run_budget(), Duration::from_secs(30 + 54));
    assert_eq!(t.image_data_budget(), Duration::from_secs(30 + 54));
    // Without the cap in reach, the doubling runs its course: 3 + 6 + 12 + 24 + 48 + 3.
    assert_eq!(
        t.retransmit_span(Duration::from_secs(120)),
        Duration::from_secs(96)
    );
    let fast = AcTimers {
        retransmit_interval: Duration::from_millis(500),
        max_retransmit: 2,
        echo_interval: Duration::from_secs(60),
        ..AcTimers::default()
    };
    // 0.5 + 1 before the two retransmissions, 0.5 for the last one's transit.
    assert_eq!(
        fast.retransmit_span(fast.echo_interval),
        Duration::from_secs(2)
    );
    assert_eq!(fast.run_budget(), Duration::from_secs(62));
    let absurd = AcTimers {
        max_retransmit: u32::MAX,
        ..AcTimers::default()
    };
    assert!(
        absurd.run_budget() > Duration::from_secs(96),
        "no overflow panic"
    );
}

// ----- directed tests of the AC's paths (RFC 5415 §2.3.1, AC side) ----------------------

/// A message the AC sent: to, message type, seq, result code, image data type.
type AcSent = (SocketAddr, u32, u8, Option<u32>, Option<u8>);

/// What the AC sent.
fn sent(ac: &mut Ac) -> Vec<AcSent> {
    use crate::capwap::{ControlMessage, Packet};
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(t) = ac.poll_transmit(&mut buf) {
        let Ok(p) = Packet::parse(&buf) else { continue };
        if p.header.keep_alive {
            continue;
        }
        let m = ControlMessage::parse(p.payload).unwrap();
        let mut rc = None;
        let mut dt = None;
        for e in m.elements() {
            match Element::parse(e.unwrap()).unwrap() {
                Element::ResultCode(c) => rc = Some(c),
                Element::ImageData { data_type, .. } => dt = Some(data_type),
                _ => {}
            }
        }
        out.push((t.to, m.msg_type, m.seq, rc, dt));
    }
    out
}

/// An image folder with a 3000-byte `ap1g8` at version 2.0.
fn image_folder(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wtpd-ac-tests-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ap1g8"), vec![0xab; 3000]).unwrap();
    std::fs::write(dir.join("version.info"), "2.0\n").unwrap();
    dir
}

fn ac_serving(dir: &std::path::Path, image_at_join: bool) -> Ac {
    let cfg = AcConfig {
        image_version: Some("2.0".into()),
        image_at_join,
        ..AcConfig::default()
    };
    Ac::new(cfg, Box::new(FolderSource::new(dir)))
}

fn join(ac: &mut Ac, now: Instant) -> Vec<AcSent> {
    ac.dtls_established(peer(), now);
    let join = build(
        MessageType::JoinRequest as u32,
        1,
        &[Element::WtpName("ap-1"), Element::SessionId(&SESSION_ID)],
    );
    ac.handle_control(peer(), &join, true, now);
    sent(ac)
}

/// The WTP asks for `ap1g8` (Image Data Request with Initiate Download, §9.1.1).
fn request_image(ac: &mut Ac, now: Instant) {
    let req = build(
        MessageType::ImageDataRequest as u32,
        2,
        &[
            Element::ImageIdentifier {
                vendor: 32473,
                name: "ap1g8",
            },
            Element::InitiateDownload,
        ],
    );
    ac.handle_control(peer(), &req, true, now);
}

/// Discovery: a Discovery Request in clear is answered in clear, without any session.
#[test]
fn discovery_is_answered_without_a_session() {
    let mut ac = ac_serving(&image_folder("disc"), true);
    let from: SocketAddr = "192.0.2.77:5246".parse().unwrap();
    let req = build(MessageType::DiscoveryRequest as u32, 9, &[]);
    ac.handle_control(from, &req, false, at(0));
    let s = sent(&mut ac);
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].0, s[0].1, s[0].2),
        (from, MessageType::DiscoveryResponse as u32, 9)
    );
    assert!(ac.session(from).is_none(), "no state for a Discovery");
}

/// DTLS Connect to Join (d), then Join to Configure (g): the Join Response accepts and names
/// the served image; a request the AC does not expect in Join gets Result Code 18.
#[test]
fn join_is_accepted_and_out_of_state_requests_get_18() {
    let mut ac = ac_serving(&image_folder("join"), true);
    ac.dtls_established(peer(), at(0));
    assert_eq!(
        ac.session(peer()).map(|s| s.state),
        Some(SessionState::Join)
    );
    let early = build(MessageType::ChangeStateEventRequest as u32, 1, &[]);
    ac.handle_control(peer(), &early, true, at(0));
    let s = sent(&mut ac);
    assert_eq!(s[0].3, Some(18), "{s:?}");
    let join = build(
        MessageType::JoinRequest as u32,
        2,
        &[Element::WtpName("ap-1"), Element::SessionId(&SESSION_ID)],
    );
    ac.handle_control(peer(), &join, true, at(0));
    let s = sent(&mut ac);
    assert_eq!(
        (s[0].1, s[0].3),
        (MessageType::JoinResponse as u32, Some(0))
    );
    assert_eq!(
        ac.session(peer()).map(|s| s.state),
        Some(SessionState::Configure)
    );
}

/// Join to Image Data (f), AC side: the WTP's Image Data Request is answered, then the image
/// goes out block by block, each waiting for its answer, and the last block is marked.
#[test]
fn image_data_is_served_block_by_block() {
    let mut ac = ac_serving(&image_folder("serve"), true);
    join(&mut ac, at(0));
    request_image(&mut ac, at(1));
    let mut s = sent(&mut ac);
    assert_eq!(
        (s[0].1, s[0].3),
        (MessageType::ImageDataResponse as u32, Some(0))
    );
    assert_eq!(
        ac.session(peer()).map(|s| s.state),
        Some(SessionState::ImageData)
    );
    let mut blocks = 0;
    let mut last = false;
    for _ in 0..10 {
        let Some(b) = s
            .iter()
            .find(|x| x.1 == MessageType::ImageDataRequest as u32)
            .copied()
        else {
            break;
        };
        blocks += 1;
        last = b.4 == Some(crate::capwap::element::image_data_type::LAST);
        let resp = build(
            MessageType::ImageDataResponse as u32,
            b.2,
            &[Element::ResultCode(0)],
        );
        ac.handle_control(peer(), &resp, true, at(2));
        s = sent(&mut ac);
        if last {
            break;
        }
    }
    assert_eq!((blocks, last), (3, true), "3000 bytes in 1024-byte blocks");
    assert!(s.is_empty(), "nothing after the last block: {s:?}");
}

/// A WTP that refuses a block (Result Code 16, §9.1.2) ends the transfer: no more blocks.
#[test]
fn a_refused_block_ends_the_transfer() {
    let mut ac = ac_serving(&image_folder("refuse"), true);
    join(&mut ac, at(0));
    request_image(&mut ac, at(1));
    let s = sent(&mut ac);
    let b = s
        .iter()
        .find(|x| x.1 == MessageType::ImageDataRequest as u32)
        .copied()
        .expect("a first block");
    let resp = build(
        MessageType::ImageDataResponse as u32,
        b.2,
        &[Element::ResultCode(16)],
    );
    ac.handle_control(peer(), &resp, true, at(2));
    assert!(
        sent(&mut ac)
            .iter()
            .all(|x| x.1 != MessageType::ImageDataRequest as u32),
        "no block after a refusal"
    );
}

/// Run: predownload (Configuration Update Request naming the image, Figure 8) and activation
/// (Reset Request naming it, Figure 9, Run to Reset (r)); neither outside Run.
#[test]
fn predownload_and_activate_only_in_run() {
    let dir = image_folder("run");
    let mut ac = ac_serving(&dir, false);
    join(&mut ac, at(0));
    assert!(!ac.predownload(peer(), at(0)), "not in Configure");
    let status = build(MessageType::ConfigurationStatusRequest as u32, 2, &[]);
    ac.handle_control(peer(), &status, true, at(0));
    let change = build(MessageType::ChangeStateEventRequest as u32, 3, &[]);
    ac.handle_control(peer(), &change, true, at(0));
    let mut ka = Vec::new();
    keep_alive(&mut ka, &SESSION_ID);
    ac.handle_data(peer(), &ka, at(0));
    assert_eq!(ac.session(peer()).map(|s| s.state), Some(SessionState::Run));
    sent(&mut ac);
    assert!(ac.predownload(peer(), at(1)));
    let s = sent(&mut ac);
    assert_eq!(s[0].1, MessageType::ConfigurationUpdateRequest as u32);
    assert!(
        !ac.activate(peer(), at(1)),
        "one outstanding request (§4.5.3)"
    );
    let resp = build(
        MessageType::ConfigurationUpdateResponse as u32,
        s[0].2,
        &[Element::ResultCode(0)],
    );
    ac.handle_control(peer(), &resp, true, at(2));
    assert!(ac.activate(peer(), at(3)));
    let s = sent(&mut ac);
    assert_eq!(s[0].1, MessageType::ResetRequest as u32);
    assert_eq!(
        ac.session(peer()).map(|s| s.state),
        Some(SessionState::Reset)
    );
}
