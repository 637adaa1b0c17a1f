//! The WTP's answers to what it does not act on, and its handling of duplicates and garbage,
//! driven directly (no network): every request gets a response with the RFC's Result Code.

mod common;

use std::net::SocketAddr;

use wtpd::capwap::builder::build;
use wtpd::capwap::element::AcDescriptor;
use wtpd::capwap::{ControlMessage, Element, MessageType, Packet, ResultCode};
use wtpd::wtp::{Action, State, Wtp};

use common::wtp::{ac, at, config, Driver};

/// Sent packets, parsed: (type, seq, result code).
fn drain(w: &mut Wtp) -> Vec<(u32, u8, Option<u32>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while w.poll_transmit(&mut buf).is_some() {
        let p = Packet::parse(&buf).unwrap();
        let m = ControlMessage::parse(p.payload).unwrap();
        let rc = m
            .elements()
            .find_map(|e| match Element::parse(e.unwrap()).unwrap() {
                Element::ResultCode(c) => Some(c),
                _ => None,
            });
        out.push((m.msg_type, m.seq, rc, buf.clone()));
    }
    out
}

/// A WTP that has joined (at 5 s) and sent its Configuration Status Request (state
/// Configure).
fn joined() -> (Wtp, u8) {
    let mut d = Driver::new(config(None));
    let after = d.join("1.0");
    assert_eq!(d.state(), State::Configure);
    let cfg = after
        .iter()
        .find(|s| s.is(MessageType::ConfigurationStatusRequest))
        .expect("Configuration Status Request");
    (d.w, cfg.seq)
}

#[test]
fn known_request_in_the_wrong_state_gets_result_code_18() {
    let (mut w, _) = joined();
    let req = build(MessageType::ResetRequest as u32, 40, &[]);
    w.handle_control(ac(), &req, true, at(6_000));
    let out = drain(&mut w);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, MessageType::ResetResponse as u32);
    assert_eq!(out[0].1, 40);
    assert_eq!(
        out[0].2,
        Some(ResultCode::MessageUnexpectedInvalidInCurrentState as u32)
    );
    assert_eq!(w.state(), State::Configure, "nothing else happened");
}

#[test]
fn unknown_request_gets_result_code_19_and_duplicates_get_the_cached_response() {
    let (mut w, _) = joined();
    // A vendor's request: enterprise 32473, type 1 (odd: a request).
    let vendor_type = (32473u32 << 8) | 1;
    let req = build(
        vendor_type,
        41,
        &[Element::VendorSpecific {
            vendor: 32473,
            element_id: 1,
            data: b"x",
        }],
    );
    w.handle_control(ac(), &req, true, at(6_000));
    let first = drain(&mut w);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, vendor_type + 1);
    assert_eq!(
        first[0].2,
        Some(ResultCode::MessageUnexpectedUnrecognizedRequest as u32)
    );
    // The same sequence number again: the same bytes, not processed again.
    w.handle_control(ac(), &req, true, at(6_100));
    let again = drain(&mut w);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].3, first[0].3, "byte-identical cached response");
    assert_eq!(w.stats().duplicate_requests, 1);
    // An older sequence number is dropped silently.
    let old = build(vendor_type, 30, &[]);
    w.handle_control(ac(), &old, true, at(6_200));
    assert!(drain(&mut w).is_empty());
}

#[test]
fn garbage_is_counted_not_answered() {
    let (mut w, _) = joined();
    for bad in [
        &[][..],
        &[0x00][..],
        &[0x00, 0x10, 0x42, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00][..],
        &[0x30; 40][..],
    ] {
        w.handle_control(ac(), bad, true, at(6_000));
    }
    assert!(drain(&mut w).is_empty());
    let total: u64 = w.stats().malformed.values().sum();
    assert_eq!(total, 4, "{:?}", w.stats().malformed);
    assert_eq!(w.state(), State::Configure);
}

#[test]
fn clear_packets_after_discovery_are_ignored() {
    let (mut w, _) = joined();
    // An Echo Request that did not come through DTLS must not be answered.
    let req = build(MessageType::EchoRequest as u32, 50, &[]);
    w.handle_control(ac(), &req, false, at(6_000));
    assert!(drain(&mut w).is_empty());
}

#[test]
fn configuration_status_is_retransmitted_then_the_session_is_torn_down() {
    let (mut w, _) = joined();
    let mut t = 5_000;
    let mut retransmits = 0;
    while w.state() == State::Configure {
        let next = w.poll_timeout().unwrap();
        t = next.as_duration().as_millis() as u64;
        w.handle_timeout(next);
        retransmits += drain(&mut w)
            .iter()
            .filter(|p| p.0 == MessageType::ConfigurationStatusRequest as u32)
            .count();
    }
    assert_eq!(retransmits, 5, "MaxRetransmit");
    assert_eq!(w.state(), State::DtlsTeardown);
    assert_eq!(w.poll_action(), Some(Action::DtlsClose));
    // 3 + 6 + 12 seconds of doubling, then no more than half the 30 s EchoInterval (RFC 5415
    // §4.5.3): 15 + 15 + 15, from 5 s.
    assert_eq!(t, 5_000 + 66_000);
}

/// Discovery Responses come in clear from any address: the WTP remembers a bounded number of
/// controllers per round (a flood cannot grow its memory), and chooses among those.
#[test]
fn a_flood_of_discovery_responses_is_bounded() {
    let mut d = Driver::new(config(None));
    let req = d.expect(MessageType::DiscoveryRequest);
    let n = wtpd::wtp::MAX_CANDIDATES + 10;
    for i in 0..n {
        // The later responders are the least loaded: they would win if they were kept.
        let active = if i < wtpd::wtp::MAX_CANDIDATES { 5 } else { 0 };
        let from: SocketAddr = format!("198.51.100.{}:5246", i + 1).parse().unwrap();
        d.discovery_response(&req, from, active);
    }
    d.at(5_000);
    match d.w.poll_action() {
        Some(Action::DtlsConnect { peer }) => {
            let last = peer.ip().to_string();
            let i: usize = last.rsplit('.').next().unwrap().parse().unwrap();
            assert!(
                i <= wtpd::wtp::MAX_CANDIDATES,
                "chose {peer}, which should not have been kept"
            );
        }
        a => panic!("{a:?}"),
    }
}

#[test]
fn discovery_response_without_ac_name_is_refused() {
    // Regression (fuzz target `wtp`): a Discovery Response with an AC Descriptor but no AC Name
    // was taken, and the Configuration Status Request after the join then carried an empty AC
    // Name, which RFC 5415 §4.6.4 does not allow (and which the AC's parser refuses).
    let mut d = Driver::new(config(None));
    let req = d.expect(MessageType::DiscoveryRequest);
    let desc = AcDescriptor {
        stations: 0,
        station_limit: 10,
        active_wtps: 0,
        max_wtps: 10,
        security: 0x02,
        r_mac: 2,
        dtls_policy: 2,
        info: vec![],
    };
    let resp = build(
        MessageType::DiscoveryResponse as u32,
        req.seq,
        &[Element::AcDescriptor(desc)],
    );
    d.w.handle_control(ac(), &resp, false, at(10));
    assert_eq!(
        d.w.stats().malformed.values().sum::<u64>(),
        1,
        "{:?}",
        d.w.stats().malformed
    );
    d.at(5_000);
    assert_ne!(d.state(), State::DtlsSetup, "no controller was chosen");
    assert_eq!(d.w.poll_action(), None);
}
