//! The WTP's Image Data exchange where a download is refused or held, driven directly (no
//! network): failures reach the AC as the Result Code of an Image Data Response (RFC 5415
//! §9.1.2), never as a WTP Event Request outside Run (§9.4); the answer to the AC's last
//! Image Data Request waits for the verdict on the whole image; a board whose booted slot is
//! on trial does not download until it is marked good.

mod common;

use std::time::Duration;

use common::wtp::{ac, actions, at, config, sent, Driver, Sent};
use wtpd::capwap::builder::build;
use wtpd::capwap::element::image_data_type;
use wtpd::capwap::{Element, MessageType, ResultCode};
use wtpd::image::install::InstallError;
use wtpd::image::verify::VerifyError;
use wtpd::wtp::{Action, Hold, State, Wtp};

/// A WTP running 1.0 that joins an AC whose Join Response names `ac_version`. Returns it and
/// what it sent after the Join Response.
fn join(ac_version: &str, hold: Option<Hold>) -> (Wtp, Vec<Sent>) {
    let mut d = Driver::new(config(hold));
    let after = d.join(ac_version);
    (d.w, after)
}

fn drain(w: &mut Wtp) -> Vec<Sent> {
    sent(w)
}

/// Joined with a version mismatch, the Image Data Request answered: the AC's blocks follow.
fn downloading() -> Wtp {
    let (mut w, sent) = join("2.0", None);
    assert_eq!(w.state(), State::ImageData);
    let req = sent
        .iter()
        .find(|s| s.msg_type == MessageType::ImageDataRequest as u32)
        .expect("Image Data Request");
    let resp = build(
        MessageType::ImageDataResponse as u32,
        req.seq,
        &[Element::ResultCode(0)],
    );
    w.handle_control(ac(), &resp, true, at(5_100));
    assert!(drain(&mut w).is_empty());
    w
}

/// The AC sends Image Data block `seq` at `ms`.
fn send_block(w: &mut Wtp, seq: u8, data_type: u8, data: &[u8], ms: u64) {
    w.handle_control(ac(), &block(seq, data_type, data), true, at(ms));
}

fn block(seq: u8, data_type: u8, data: &[u8]) -> Vec<u8> {
    build(
        MessageType::ImageDataRequest as u32,
        seq,
        &[Element::ImageData { data_type, data }],
    )
}

fn no_event(sent: &[Sent]) {
    assert!(
        !sent
            .iter()
            .any(|s| s.msg_type == MessageType::WtpEventRequest as u32),
        "a WTP Event Request outside Run: {sent:?}"
    );
}

#[test]
fn the_last_block_is_answered_with_the_verdict_on_the_whole_image() {
    let mut w = downloading();
    send_block(&mut w, 1, image_data_type::DATA, &[7; 1024], 5_200);
    let s = drain(&mut w);
    assert_eq!((s.len(), s[0].result), (1, Some(0)));
    send_block(&mut w, 2, image_data_type::LAST, &[7; 100], 5_300);
    assert!(drain(&mut w).is_empty(), "no answer before the verdict");
    let a = actions(&mut w);
    assert!(
        matches!(&a[..], [Action::VerifyImage { version, predownload: false, .. }] if version == "2.0"),
        "{a:?}"
    );
    // The AC repeats its last request while the image is checked: still no answer.
    send_block(&mut w, 2, image_data_type::LAST, &[7; 100], 8_300);
    assert!(drain(&mut w).is_empty());
    assert!(
        actions(&mut w).is_empty(),
        "the repeat is not processed again"
    );

    let refusal = InstallError::Verify(VerifyError::NotAnnounced {
        announced: "2.0".into(),
        manifest: "2.1".into(),
    });
    w.image_verified(Err(refusal), at(8_400));
    let s = drain(&mut w);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].msg_type, MessageType::ImageDataResponse as u32);
    assert_eq!(s[0].seq, 2);
    assert_eq!(s[0].result, Some(ResultCode::ImageDataErrorOther as u32));
    assert!(
        s[0].vendor_text
            .as_deref()
            .unwrap()
            .contains("the signed manifest says version 2.1, the controller announced 2.0"),
        "{s:?}"
    );
    no_event(&s);
    assert_eq!(w.state(), State::DtlsTeardown);
    assert_eq!(actions(&mut w), vec![Action::DtlsClose]);
    // A repeat after the verdict gets the cached answer.
    send_block(&mut w, 2, image_data_type::LAST, &[7; 100], 8_500);
    assert!(
        drain(&mut w).is_empty(),
        "after teardown nothing is answered"
    );
}

#[test]
fn a_verified_image_is_installed_and_an_install_failure_sends_no_event_in_image_data() {
    let mut w = downloading();
    send_block(&mut w, 1, image_data_type::LAST, &[7; 100], 5_200);
    assert!(drain(&mut w).is_empty());
    assert!(matches!(&actions(&mut w)[..], [Action::VerifyImage { .. }]));
    w.image_verified(Ok(()), at(5_300));
    let s = drain(&mut w);
    assert_eq!((s.len(), s[0].seq, s[0].result), (1, 1, Some(0)));
    assert!(matches!(
        &actions(&mut w)[..],
        [Action::InstallImage { .. }]
    ));
    let failure = InstallError::Io {
        what: "write slot b".into(),
        error: std::io::Error::other("I/O error"),
    };
    w.install_done(Err(failure), at(5_400));
    let s = drain(&mut w);
    no_event(&s);
    assert_eq!(w.state(), State::DtlsTeardown);
    assert_eq!(actions(&mut w), vec![Action::DtlsClose]);
    assert!(w
        .download_status(at(5_400))
        .last_error
        .unwrap()
        .contains("I/O error"));
}

/// Slot mode writes the other slot as the image arrives, so a download that fails after its
/// first bytes leaves no backup there: the WTP stops announcing the old backup version (the
/// Join's image information, `wtpd status`) instead of offering an activation it would refuse.
#[test]
fn a_failed_download_that_overwrote_the_backup_slot_forgets_the_backup() {
    for slot_like in [false, true] {
        let mut store = wtpd::image::store::MemStore::new(1 << 20);
        store.writes_the_backup_slot = slot_like;
        let mut d = Driver::with_store(config(None), store);
        d.join("2.0");
        let mut w = d.w;
        let req = sent(&mut w);
        assert!(req.is_empty(), "{req:?}");
        assert_eq!(w.config().versions.backup.as_deref(), Some("0.9"));
        send_block(&mut w, 1, image_data_type::DATA, &[7; 1024], 5_200);
        drain(&mut w);
        send_block(&mut w, 2, image_data_type::LAST, &[7; 100], 5_300);
        assert!(matches!(&actions(&mut w)[..], [Action::VerifyImage { .. }]));
        let refusal = InstallError::Verify(VerifyError::NotAnnounced {
            announced: "2.0".into(),
            manifest: "2.1".into(),
        });
        w.image_verified(Err(refusal), at(5_400));
        assert_eq!(w.state(), State::DtlsTeardown);
        let expected = if slot_like { None } else { Some("0.9") };
        assert_eq!(
            w.config().versions.backup.as_deref(),
            expected,
            "slot-like store: {slot_like}"
        );
    }
}

#[test]
fn a_download_refused_early_answers_the_acs_next_request() {
    let mut w = downloading();
    send_block(&mut w, 1, image_data_type::DATA, &[7; 1024], 5_200);
    assert_eq!(drain(&mut w).len(), 1);
    // The driver found the head of the image refused (e.g. another hardware type).
    w.abort_download("image refused at byte 262144: hardware type ap3g3");
    assert!(
        drain(&mut w).is_empty(),
        "nothing unasked is sent in Image Data"
    );
    assert_eq!(w.state(), State::ImageData);
    send_block(&mut w, 2, image_data_type::DATA, &[7; 1024], 5_300);
    let s = drain(&mut w);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(
        (s[0].seq, s[0].result),
        (2, Some(ResultCode::ImageDataErrorOther as u32))
    );
    assert!(s[0].vendor_text.as_deref().unwrap().contains("ap3g3"));
    assert_eq!(w.state(), State::DtlsTeardown);
    assert_eq!(actions(&mut w), vec![Action::DtlsClose]);
}

#[test]
fn a_refused_download_with_no_further_request_ends_at_the_image_data_start_timer() {
    let mut w = downloading();
    w.abort_download("image refused");
    assert!(drain(&mut w).is_empty());
    // ImageDataStartTimer runs from the Image Data Response (the Echo timer fires first).
    let t = at(5_100) + Duration::from_secs(30);
    w.handle_timeout(t - Duration::from_millis(1));
    assert_eq!(w.state(), State::ImageData);
    w.handle_timeout(t);
    no_event(&drain(&mut w));
    assert_eq!(w.state(), State::DtlsTeardown);
    assert_eq!(
        w.download_status(t).last_error.as_deref(),
        Some("image refused")
    );
}

#[test]
fn on_trial_the_wtp_joins_without_downloading_and_comes_back_once_marked_good() {
    let hold = Hold::Trial("the booted slot is on trial".into());
    let (mut w, sent) = join("2.0", Some(hold));
    assert_eq!(w.state(), State::Configure, "no Image Data on trial");
    assert!(sent
        .iter()
        .all(|s| s.msg_type != MessageType::ImageDataRequest as u32));
    assert!(actions(&mut w).is_empty(), "no switch, no install");
    assert!(w
        .download_status(at(5_020))
        .last_error
        .unwrap()
        .contains("on trial"));
    // The driver marked the slot good (in Run): the WTP restarts to fetch 2.0.
    w.release_hold(at(6_000));
    assert_eq!(w.state(), State::DtlsTeardown);
    assert_eq!(actions(&mut w), vec![Action::DtlsClose]);
}

#[test]
fn on_trial_a_backup_that_matches_the_controller_is_not_switched_to() {
    let (mut w, _) = join("0.9", Some(Hold::Trial("on trial".into())));
    assert_eq!(w.state(), State::Configure);
    assert!(
        actions(&mut w).is_empty(),
        "no ActivateImage while on trial"
    );
}

#[test]
fn a_board_that_cannot_install_never_downloads_and_a_release_does_not_restart_it() {
    let hold = Hold::Refused("U-Boot environment unusable".into());
    let (mut w, sent) = join("2.0", Some(hold));
    assert_eq!(w.state(), State::Configure);
    assert!(sent
        .iter()
        .all(|s| s.msg_type != MessageType::ImageDataRequest as u32));
    w.release_hold(at(6_000));
    assert_eq!(w.state(), State::Configure, "not a trial: nothing released");
}

/// With an upgrade hook, the Image Data Request waits for PRECHECK's verdict: yes sends it, no
/// fails the download before a byte is asked for (ABORT follows, the teardown and retry as for
/// a full /tmp), and a teardown while the script runs calls ABORT too.
#[test]
fn an_upgrade_hook_gates_the_download_at_precheck() {
    use wtpd::wtp::HookStage;
    let hooked = || {
        let mut cfg = config(None);
        cfg.hooks = true;
        Driver::new(cfg)
    };
    let stages = |a: &[Action]| -> Vec<HookStage> {
        a.iter()
            .filter_map(|a| match a {
                Action::Hook(c) => Some(c.stage),
                _ => None,
            })
            .collect()
    };

    // Yes: the request goes out only after the verdict.
    let mut d = hooked();
    let after = d.join("2.0");
    assert!(after
        .iter()
        .all(|s| s.msg_type != MessageType::ImageDataRequest as u32));
    let a = d.actions();
    assert_eq!(stages(&a), [HookStage::Precheck]);
    match &a[0] {
        Action::Hook(c) => assert_eq!(c.version.as_deref(), Some("2.0")),
        other => panic!("{other:?}"),
    }
    d.w.precheck_done(Ok(()), at(5_050));
    d.expect(MessageType::ImageDataRequest);

    // No: no request, the reason recorded, ABORT, and the teardown.
    let mut d = hooked();
    d.join("2.0");
    d.actions();
    d.w.precheck_done(
        Err("upgrade.sh PRECHECK failed (exit status 1): busy".into()),
        at(5_050),
    );
    assert!(d
        .sent()
        .iter()
        .all(|s| s.msg_type != MessageType::ImageDataRequest as u32));
    assert_eq!(stages(&d.actions()), [HookStage::Abort]);
    assert_eq!(d.w.state(), State::DtlsTeardown);
    let st = d.w.download_status(at(5_050));
    assert_eq!(
        st.last_error.as_deref(),
        Some("image download cannot start: upgrade.sh PRECHECK failed (exit status 1): busy")
    );

    // A teardown while PRECHECK runs: ABORT, and a late verdict changes nothing.
    let mut d = hooked();
    d.join("2.0");
    d.actions();
    d.w.dtls_closed(at(5_050));
    assert_eq!(stages(&d.actions()), [HookStage::Abort]);
    d.w.precheck_done(Ok(()), at(5_060));
    assert!(d
        .sent()
        .iter()
        .all(|s| s.msg_type != MessageType::ImageDataRequest as u32));
}
