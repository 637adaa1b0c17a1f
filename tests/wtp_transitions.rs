//! One directed test per RFC 5415 §2.3.1 transition of the WTP, driven by hand through
//! tests/common/wtp.rs (no network, a virtual clock). Each test names its transition.

mod common;

use common::wtp::{ac, config, Driver};
use wtpd::capwap::{Element, MessageType, ResultCode};
use wtpd::wtp::{Action, Channel, DtlsFailure, State};

/// Idle to Discovery (1), then Discovery to Discovery (#) while nobody answers.
#[test]
fn idle_to_discovery_and_discovery_rounds() {
    let mut d = Driver::new(config(None));
    assert_eq!(d.state(), State::Discovery);
    let first = d.expect(MessageType::DiscoveryRequest);
    assert_eq!((first.to, first.channel), (ac(), Channel::ControlClear));
    d.at(5_000); // DiscoveryInterval (§4.7.5)
    assert_eq!(d.state(), State::Discovery);
    let second = d.expect(MessageType::DiscoveryRequest);
    assert_ne!(first.seq, second.seq, "a new round, a new sequence number");
}

/// Discovery to Sulking (!) after MaxDiscoveries (§4.8.5), then Sulking to Idle (@) and back
/// to Discovery after SilentInterval (§4.7.13).
#[test]
fn discovery_to_sulking_and_back() {
    let mut d = Driver::new(config(None));
    let mut rounds = d.sent().len();
    let mut t = 0;
    while d.state() != State::Sulking {
        t = d.w.poll_timeout().unwrap().as_duration().as_millis() as u64;
        d.at(t);
        rounds += d
            .sent()
            .iter()
            .filter(|s| s.is(MessageType::DiscoveryRequest))
            .count();
        assert!(t < 600_000, "never sulked");
    }
    assert_eq!(rounds, 10, "MaxDiscoveries");
    d.at(t + 29_999);
    assert_eq!(d.state(), State::Sulking);
    d.at(t + 30_000);
    assert_eq!(d.state(), State::Discovery);
    assert_eq!(d.actions(), vec![Action::FindControllers]);
}

/// Discovery to DTLS Setup (%): the AC that answered is chosen when DiscoveryInterval ends.
#[test]
fn discovery_to_dtls_setup() {
    let mut d = Driver::new(config(None));
    d.reach_dtls_setup();
    assert_eq!(d.w.controller().map(|c| c.0), Some(ac()));
}

/// DTLS Setup: WaitDTLS (§4.7.15) expires, the WTP tears down and starts over; after
/// MaxFailedDTLSSessionRetry (§4.8.6) failures it sulks (DTLS Setup to Sulking (*)).
#[test]
fn wait_dtls_expiry_and_dtls_setup_to_sulking() {
    let mut d = Driver::new(config(None));
    for attempt in 1..=3 {
        d.reach_dtls_setup();
        let t = d.w.poll_timeout().unwrap().as_duration().as_millis() as u64;
        assert_eq!(t, d.ms() + 60_000, "WaitDTLS");
        d.at(t);
        assert_eq!(d.state(), State::DtlsTeardown);
        assert_eq!(d.actions(), vec![Action::DtlsClose]);
        d.at(t + 5_000); // DTLSSessionDelete (§4.7.6)
        if attempt < 3 {
            assert_eq!(d.state(), State::Discovery, "attempt {attempt}");
            assert_eq!(d.actions(), vec![Action::FindControllers]);
            d.w.set_targets(
                vec![wtpd::wtp::Target {
                    addr: ac(),
                    kind: wtpd::wtp::TargetKind::Static,
                }],
                d.now,
            );
            d.now = common::wtp::at(0) + (d.now.as_duration());
        } else {
            assert_eq!(d.state(), State::Sulking);
        }
    }
}

/// Refused credentials count toward FailedDTLSAuthFailCount (§4.8.3) and end in Sulking too.
#[test]
fn refused_credentials_end_in_sulking() {
    let mut d = Driver::new(config(None));
    for attempt in 1..=3 {
        d.reach_dtls_setup();
        let failure = DtlsFailure {
            auth: true,
            reason: "certificate verify failed".into(),
        };
        d.w.dtls_failed(failure, d.now);
        assert_eq!(d.state(), State::DtlsTeardown);
        assert_eq!(d.actions(), vec![Action::DtlsClose]);
        d.at(d.ms() + 5_000);
        if attempt < 3 {
            assert_eq!(d.state(), State::Discovery);
            d.rediscover();
        }
    }
    assert_eq!(d.state(), State::Sulking);
}

/// DTLS Connect to Join (d): the session is up, the Join Request goes out through it.
#[test]
fn dtls_connect_to_join() {
    let mut d = Driver::new(config(None));
    let join = d.reach_join();
    assert_eq!((join.to, join.channel), (ac(), Channel::ControlSecure));
}

/// Join to DTLS Teardown (e): the AC refuses the Join.
#[test]
fn join_refused_to_teardown() {
    let mut d = Driver::new(config(None));
    let join = d.reach_join();
    d.ac_answers(&join, &[Element::ResultCode(3)]);
    assert_eq!(d.state(), State::DtlsTeardown);
    assert_eq!(d.actions(), vec![Action::DtlsClose]);
}

/// Join to Image Data (f): the AC runs another version.
#[test]
fn join_to_image_data() {
    let mut d = Driver::new(config(None));
    let after = d.join("2.0");
    assert_eq!(d.state(), State::ImageData);
    let req = after
        .iter()
        .find(|s| s.is(MessageType::ImageDataRequest))
        .expect("Image Data Request");
    assert_eq!(
        req.image_identifier.as_deref(),
        Some("sim"),
        "its image type"
    );
}

/// Join to Configure (g): same version.
#[test]
fn join_to_configure() {
    let mut d = Driver::new(config(None));
    let after = d.join("1.0");
    assert_eq!(d.state(), State::Configure);
    assert!(after
        .iter()
        .any(|s| s.is(MessageType::ConfigurationStatusRequest)));
}

/// Configure to DTLS Teardown (i): the AC refuses the configuration.
#[test]
fn configure_refused_to_teardown() {
    let mut d = Driver::new(config(None));
    let after = d.join("1.0");
    let req = after
        .into_iter()
        .find(|s| s.is(MessageType::ConfigurationStatusRequest))
        .unwrap();
    let code = ResultCode::ConfigurationFailureServiceNotProvided as u32;
    d.ac_answers(&req, &[Element::ResultCode(code)]);
    assert_eq!(d.state(), State::DtlsTeardown);
}

/// Configure to Data Check (m), and Data Check to DTLS Teardown (n) on a refusal.
#[test]
fn configure_to_data_check_and_refused_change_state() {
    let mut d = Driver::new(config(None));
    let req = d.reach_data_check();
    d.ac_answers(
        &req,
        &[Element::ResultCode(ResultCode::FailureAcList as u32)],
    );
    assert_eq!(d.state(), State::DtlsTeardown);
}

/// Data Check to Run (o): the data channel starts with a Keep-Alive to the data port.
#[test]
fn data_check_to_run_starts_the_data_channel() {
    let mut d = Driver::new(config(None));
    d.reach_run();
    let sent = d.sent();
    let ka: Vec<_> = sent.iter().filter(|s| s.channel == Channel::Data).collect();
    assert_eq!(ka.len(), 1, "{sent:?}");
    assert_eq!(ka[0].to.port(), ac().port() + 1, "the AC's data port");
}

/// Run to Run (q): an Echo Request every EchoInterval (§4.7.7), a Keep-Alive every
/// DataChannelKeepAlive (§4.7.2).
#[test]
fn run_to_run_echoes_and_keep_alives() {
    let mut d = Driver::new(config(None));
    d.reach_run();
    d.sent();
    let start = d.ms();
    d.at(start + 30_000);
    let sent = d.sent();
    assert!(
        sent.iter().any(|s| s.is(MessageType::EchoRequest)),
        "{sent:?}"
    );
    assert!(sent.iter().any(|s| s.channel == Channel::Data), "{sent:?}");
    assert_eq!(d.state(), State::Run);
}

/// Run to DTLS Teardown (p): no Keep-Alive back from the AC in DataChannelDeadInterval
/// (§4.7.3); and a close_notify from the AC (DTLSPeerDisconnect).
#[test]
fn run_to_teardown_on_a_dead_data_channel_or_a_peer_disconnect() {
    let mut d = Driver::new(config(None));
    d.reach_run();
    let start = d.ms();
    d.run_until(start + 59_000);
    assert_eq!(d.state(), State::Run);
    d.run_until(start + 60_000);
    assert_eq!(d.state(), State::DtlsTeardown);

    let mut d = Driver::new(config(None));
    d.reach_run();
    d.w.dtls_closed(d.now);
    assert_eq!(d.state(), State::DtlsTeardown);
}

/// Run to Reset (r): a Reset Request; the WTP answers, tears down, then reboots.
#[test]
fn run_to_reset_then_reboot() {
    let mut d = Driver::new(config(None));
    d.reach_run();
    d.sent();
    d.ac_sends(MessageType::ResetRequest, 77, &[]);
    let resp = d.expect(MessageType::ResetResponse);
    assert_eq!((resp.seq, resp.result), (77, Some(0)));
    assert_eq!(d.state(), State::DtlsTeardown, "Reset to DTLS Teardown (s)");
    assert_eq!(d.actions(), vec![Action::DtlsClose]);
    let t = d.ms() + 5_000;
    d.at(t);
    assert!(matches!(&d.actions()[..], [Action::Reboot { .. }]));
}

/// Image Data to Reset (k): the image verified and installed, the WTP resets.
#[test]
fn image_data_to_reset() {
    let mut d = Driver::new(config(None));
    let after = d.join("2.0");
    let req = after
        .iter()
        .find(|s| s.is(MessageType::ImageDataRequest))
        .unwrap()
        .clone();
    d.ac_answers(&req, &[Element::ResultCode(0)]);
    d.ac_sends(
        MessageType::ImageDataRequest,
        1,
        &[Element::ImageData {
            data_type: wtpd::capwap::element::image_data_type::LAST,
            data: b"image",
        }],
    );
    assert!(matches!(&d.actions()[..], [Action::VerifyImage { .. }]));
    d.w.image_verified(Ok(()), d.now);
    assert!(matches!(&d.actions()[..], [Action::InstallImage { .. }]));
    d.w.install_done(Ok(()), d.now);
    assert_eq!(d.state(), State::DtlsTeardown, "through Reset");
    let t = d.ms() + 5_000;
    d.actions();
    d.at(t);
    assert!(matches!(&d.actions()[..], [Action::Reboot { .. }]));
}

/// DTLS Teardown to Idle (t), then Discovery, after DTLSSessionDelete (§4.7.6).
#[test]
fn teardown_to_idle_and_discovery() {
    let mut d = Driver::new(config(None));
    let join = d.reach_join();
    d.ac_answers(&join, &[Element::ResultCode(3)]);
    d.actions();
    let t = d.ms();
    d.at(t + 4_999);
    assert_eq!(d.state(), State::DtlsTeardown);
    d.at(t + 5_000);
    assert_eq!(d.state(), State::Discovery);
    assert_eq!(d.actions(), vec![Action::FindControllers]);
}
