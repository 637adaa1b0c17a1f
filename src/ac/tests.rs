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
    // Sent at 1 s, retransmitted at 4, 10, 22, 46 and 94 s (3 s doubling, MaxRetransmit 5):
    // only the last gets through.
    assert!(alive_until(&mut ac, 0, 94));
    echo(&mut ac, 11, 94);
    assert!(alive_until(&mut ac, 94, 95));
}

#[test]
fn silence_beyond_the_whole_budget_drops_the_wtp() {
    let mut ac = ac_in_run(Duration::from_secs(1));
    echo(&mut ac, 10, 0);
    let budget = ac.config().timers.run_budget();
    assert_eq!(budget, Duration::from_secs(1 + 3 + 6 + 12 + 24 + 48 + 3));
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
    assert_eq!(t.retransmit_span(), Duration::from_secs(96));
    assert_eq!(t.run_budget(), Duration::from_secs(30 + 96));
    assert_eq!(t.image_data_budget(), Duration::from_secs(30 + 96));
    let fast = AcTimers {
        retransmit_interval: Duration::from_millis(500),
        max_retransmit: 2,
        echo_interval: Duration::from_secs(60),
        ..AcTimers::default()
    };
    // 0.5 + 1 before the two retransmissions, 0.5 for the last one's transit.
    assert_eq!(fast.retransmit_span(), Duration::from_secs(2));
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
