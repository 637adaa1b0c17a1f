//! Two real OpenSSL sessions pumped against each other through their queues.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use openssl::ssl::{SslContextBuilder, SslFiletype, SslMethod, SslVerifyMode, SslVersion};

use super::context::Role;
use super::*;
use crate::pki::{self, CertSpec, Eku, KeyKind, LabPki};

struct Lab {
    dir: PathBuf,
    pki: LabPki,
}

fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("wtpd-dtls-unit-{}", std::process::id()));
        let pki = pki::generate_lab_pki(&dir).expect("lab pki");
        Lab { dir, pki }
    })
}

/// Writes an extra certificate (issued by `issuer` or self-signed) into the lab dir.
fn extra(stem: &str, spec: &CertSpec, issuer: Option<&pki::Issued>) -> (PathBuf, PathBuf) {
    let issued = pki::issue(spec, issuer).expect("issue");
    issued.write(&lab().dir, stem).expect("write")
}

fn ca_issued() -> pki::Issued {
    let l = &lab().pki;
    let cert = openssl::x509::X509::from_pem(&std::fs::read(&l.ca_cert).unwrap()).unwrap();
    let key =
        openssl::pkey::PKey::private_key_from_pem(&std::fs::read(&l.ca_key).unwrap()).unwrap();
    pki::Issued { cert, key }
}

fn cert_cfg(cert: &Path, key: &Path, ca: &Path, peer: Option<&str>) -> DtlsConfig {
    DtlsConfig {
        credentials: Credentials::Certificate {
            cert: cert.into(),
            key: key.into(),
            ca: ca.into(),
            peer_name: peer.map(str::to_string),
        },
        ciphers: None,
        keylog: None,
        mtu: 1400,
    }
}

fn wtp_cfg(peer: Option<&str>) -> DtlsConfig {
    let l = &lab().pki;
    cert_cfg(&l.wtp_cert, &l.wtp_key, &l.ca_cert, peer)
}

fn ac_cfg() -> DtlsConfig {
    let l = &lab().pki;
    cert_cfg(&l.controller_cert, &l.controller_key, &l.ca_cert, None)
}

fn psk_cfg(identity: &str, key: &[u8]) -> DtlsConfig {
    DtlsConfig {
        credentials: Credentials::Psk {
            identity: identity.into(),
            key: key.to_vec(),
        },
        ciphers: None,
        keylog: None,
        mtu: 1400,
    }
}

/// Moves datagrams both ways until nothing is left; `drop` decides (by the datagram's index in
/// its direction, and the direction: true = client to server) which ones get lost. Returns how
/// many were moved.
fn pump(
    c: &mut DtlsSession,
    s: &mut DtlsSession,
    counter: &mut [usize; 2],
    drop: &dyn Fn(usize, bool) -> bool,
) -> usize {
    let mut moved = 0;
    loop {
        let mut any = false;
        while let Some(d) = c.poll_transmit() {
            any = true;
            if !drop(counter[0], true) {
                s.handle_datagram(&d);
            }
            counter[0] += 1;
            moved += 1;
        }
        while let Some(d) = s.poll_transmit() {
            any = true;
            if !drop(counter[1], false) {
                c.handle_datagram(&d);
            }
            counter[1] += 1;
            moved += 1;
        }
        if !any {
            return moved;
        }
    }
}

fn events(s: &mut DtlsSession) -> Vec<DtlsEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Runs a handshake to its end (or failure), driving timers, for at most 5 s.
fn handshake_with_loss(
    cctx: &DtlsContext,
    sctx: &DtlsContext,
    drop: &dyn Fn(usize, bool) -> bool,
) -> (DtlsSession, DtlsSession, Vec<DtlsEvent>, Vec<DtlsEvent>) {
    let mut c = DtlsSession::connect(cctx).expect("connect");
    let mut s = DtlsSession::accept(sctx).expect("accept");
    let (mut ce, mut se) = (Vec::new(), Vec::new());
    let mut n = [0; 2];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        pump(&mut c, &mut s, &mut n, drop);
        ce.extend(events(&mut c));
        se.extend(events(&mut s));
        let done = |ev: &[DtlsEvent]| {
            ev.iter()
                .any(|e| matches!(e, DtlsEvent::Connected(_) | DtlsEvent::Failed(_)))
        };
        if (done(&ce) && done(&se))
            || ce.iter().any(|e| matches!(e, DtlsEvent::Failed(_)))
            || se.iter().any(|e| matches!(e, DtlsEvent::Failed(_)))
        {
            // Let final alerts or flights through.
            pump(&mut c, &mut s, &mut n, drop);
            ce.extend(events(&mut c));
            se.extend(events(&mut s));
            return (c, s, ce, se);
        }
        assert!(Instant::now() < deadline, "handshake stuck: {ce:?} {se:?}");
        let wait = [c.timeout(), s.timeout()].into_iter().flatten().min();
        match wait {
            Some(w) => std::thread::sleep(w.min(Duration::from_millis(200))),
            None => std::thread::sleep(Duration::from_millis(5)),
        }
        c.handle_timeout();
        s.handle_timeout();
    }
}

fn handshake(
    cctx: &DtlsContext,
    sctx: &DtlsContext,
) -> (DtlsSession, DtlsSession, Vec<DtlsEvent>, Vec<DtlsEvent>) {
    handshake_with_loss(cctx, sctx, &|_, _| false)
}

fn connected(ev: &[DtlsEvent]) -> &str {
    match ev.first() {
        Some(DtlsEvent::Connected(t)) => t,
        other => panic!("expected Connected, got {other:?} (all: {ev:?})"),
    }
}

fn failure(ev: &[DtlsEvent]) -> DtlsError {
    ev.iter()
        .find_map(|e| match e {
            DtlsEvent::Failed(e) => Some(e.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("expected Failed, got {ev:?}"))
}

fn exchange(c: &mut DtlsSession, s: &mut DtlsSession) {
    let mut n = [0; 2];
    c.send(b"join request").unwrap();
    s.send(b"join response").unwrap();
    s.send(b"echo").unwrap();
    pump(c, s, &mut n, &|_, _| false);
    assert_eq!(s.recv().as_deref(), Some(&b"join request"[..]));
    assert_eq!(s.recv(), None);
    assert_eq!(c.recv().as_deref(), Some(&b"join response"[..]));
    assert_eq!(c.recv().as_deref(), Some(&b"echo"[..]));
    assert_eq!(c.recv(), None);
}

#[test]
fn certificate_mode_default_ciphers_prefers_dtls12_ecdhe_gcm() {
    let cctx = DtlsContext::client(&wtp_cfg(Some("acsim.lab"))).unwrap();
    let sctx = DtlsContext::server(&ac_cfg()).unwrap();
    let t0 = Instant::now();
    let (mut c, mut s, ce, se) = handshake(&cctx, &sctx);
    let took = t0.elapsed();
    eprintln!("in-process certificate handshake: {took:?}");
    assert_eq!(connected(&ce), "DTLSv1.2 ECDHE-RSA-AES128-GCM-SHA256");
    assert_eq!(connected(&se), "DTLSv1.2 ECDHE-RSA-AES128-GCM-SHA256");
    assert!(c.is_established() && s.is_established());
    assert_eq!(c.timeout(), None);
    let summary = c.peer_summary().unwrap();
    assert!(summary.contains("CN=acsim.lab"), "{summary}");
    assert!(s.peer_summary().unwrap().contains("CN=wtp-sim-1"));
    exchange(&mut c, &mut s);
}

#[test]
fn certificate_mode_each_capwap_cipher() {
    // ECDSA needs an EC server key: a second controller certificate from the same CA.
    let mut spec = CertSpec::leaf("acsim.lab", KeyKind::EcP256, &[Eku::ServerAuth]);
    spec.ips = vec!["127.0.0.1".parse().unwrap()];
    let (ec_cert, ec_key) = extra("controller-ec", &spec, Some(&ca_issued()));
    let l = &lab().pki;
    for (cipher, server_cert, server_key) in [
        (
            "ECDHE-RSA-AES128-GCM-SHA256",
            &l.controller_cert,
            &l.controller_key,
        ),
        ("ECDHE-ECDSA-AES128-GCM-SHA256", &ec_cert, &ec_key),
        ("AES128-SHA", &l.controller_cert, &l.controller_key),
    ] {
        let mut ccfg = wtp_cfg(Some("acsim.lab"));
        ccfg.ciphers = Some(cipher.into());
        let cctx = DtlsContext::client(&ccfg).unwrap();
        let sctx =
            DtlsContext::server(&cert_cfg(server_cert, server_key, &l.ca_cert, None)).unwrap();
        let (mut c, mut s, ce, se) = handshake(&cctx, &sctx);
        assert_eq!(connected(&ce), format!("DTLSv1.2 {cipher}"));
        assert_eq!(connected(&se), format!("DTLSv1.2 {cipher}"));
        exchange(&mut c, &mut s);
    }
}

#[test]
fn no_shared_cipher_is_not_a_credential_failure() {
    // An ECDSA-only client against an RSA-only server: nothing to agree on, nobody's
    // credentials refused (it must not count toward FailedDTLSAuthFailCount, §4.8.3).
    let mut ccfg = wtp_cfg(Some("acsim.lab"));
    ccfg.ciphers = Some("ECDHE-ECDSA-AES128-GCM-SHA256".into());
    let cctx = DtlsContext::client(&ccfg).unwrap();
    let sctx = DtlsContext::server(&ac_cfg()).unwrap();
    let (_, _, ce, se) = handshake(&cctx, &sctx);
    for e in [failure(&se), failure(&ce)] {
        assert!(matches!(e, DtlsError::Handshake(_)), "{e:?}");
    }
}

#[test]
fn peer_name_may_be_an_ip_address() {
    let cctx = DtlsContext::client(&wtp_cfg(Some("127.0.0.1"))).unwrap();
    let sctx = DtlsContext::server(&ac_cfg()).unwrap();
    let (_, _, ce, _) = handshake(&cctx, &sctx);
    connected(&ce);

    let cctx = DtlsContext::client(&wtp_cfg(Some("127.0.0.2"))).unwrap();
    let (_, _, ce, _) = handshake(&cctx, &sctx);
    assert_eq!(
        failure(&ce),
        DtlsError::Credentials("certificate verify failed: IP address mismatch".into())
    );
}

#[test]
fn psk_mode() {
    let key = b"0123456789abcdef";
    let cctx = DtlsContext::client(&psk_cfg("wtp-sim-1", key)).unwrap();
    let sctx = DtlsContext::server(&psk_cfg("wtp-sim-1", key)).unwrap();
    let (mut c, mut s, ce, se) = handshake(&cctx, &sctx);
    assert_eq!(connected(&ce), "DTLSv1.2 PSK-AES128-CBC-SHA");
    assert_eq!(connected(&se), "DTLSv1.2 PSK-AES128-CBC-SHA");
    assert!(s
        .peer_summary()
        .unwrap()
        .contains("PSK identity 'wtp-sim-1'"));
    exchange(&mut c, &mut s);
}

#[test]
fn unknown_psk_identity_fails_with_the_identity_named() {
    let cctx = DtlsContext::client(&psk_cfg("intruder", b"0123456789abcdef")).unwrap();
    let sctx = DtlsContext::server(&psk_cfg("wtp-sim-1", b"0123456789abcdef")).unwrap();
    let (c, s, ce, se) = handshake(&cctx, &sctx);
    assert_eq!(
        failure(&se),
        DtlsError::Credentials("unknown PSK identity 'intruder'".into())
    );
    match failure(&ce) {
        DtlsError::Credentials(r) => assert!(r.contains("unknown psk identity"), "{r}"),
        e => panic!("{e:?}"),
    }
    assert!(!c.is_established() && !s.is_established());
}

#[test]
fn wrong_psk_key_fails() {
    let cctx = DtlsContext::client(&psk_cfg("wtp-sim-1", b"0123456789abcdef")).unwrap();
    let sctx = DtlsContext::server(&psk_cfg("wtp-sim-1", b"fedcba9876543210")).unwrap();
    let (_, _, ce, se) = handshake(&cctx, &sctx);
    // The server cannot authenticate the client's Finished; the client hears the alert.
    let DtlsError::Credentials(sr) = failure(&se) else {
        panic!()
    };
    let DtlsError::Credentials(cr) = failure(&ce) else {
        panic!()
    };
    assert!(
        sr.contains("decrypt") || sr.contains("bad record mac"),
        "server: {sr}"
    );
    assert!(cr.contains("peer sent fatal alert"), "client: {cr}");
}

#[test]
fn untrusted_controller_certificate_names_the_verify_error() {
    let foreign_ca = pki::issue(&CertSpec::ca("foreign CA", KeyKind::Rsa2048), None).unwrap();
    let mut spec = CertSpec::leaf(
        "acsim.lab",
        KeyKind::Rsa2048,
        &[Eku::ServerAuth, Eku::ClientAuth],
    );
    spec.ips = vec!["127.0.0.1".parse().unwrap()];
    let (cert, key) = extra("foreign-controller", &spec, Some(&foreign_ca));
    let cctx = DtlsContext::client(&wtp_cfg(Some("acsim.lab"))).unwrap();
    let sctx = DtlsContext::server(&cert_cfg(&cert, &key, &lab().pki.ca_cert, None)).unwrap();
    let (_, _, ce, se) = handshake(&cctx, &sctx);
    assert_eq!(
        failure(&ce),
        DtlsError::Credentials(
            "certificate verify failed: unable to get local issuer certificate".into()
        )
    );
    let DtlsError::Credentials(sr) = failure(&se) else {
        panic!()
    };
    assert!(
        sr.contains("peer sent fatal alert") && sr.contains("unknown ca"),
        "{sr}"
    );
}

#[test]
fn server_rejects_untrusted_client_certificate() {
    let foreign_ca = pki::issue(&CertSpec::ca("foreign CA 2", KeyKind::EcP256), None).unwrap();
    let (cert, key) = extra(
        "foreign-wtp",
        &CertSpec::leaf("wtp-sim-1", KeyKind::EcP256, &[Eku::ClientAuth]),
        Some(&foreign_ca),
    );
    let cctx = DtlsContext::client(&cert_cfg(
        &cert,
        &key,
        &lab().pki.ca_cert,
        Some("acsim.lab"),
    ))
    .unwrap();
    let sctx = DtlsContext::server(&ac_cfg()).unwrap();
    let (_, _, _, se) = handshake(&cctx, &sctx);
    assert_eq!(
        failure(&se),
        DtlsError::Credentials(
            "certificate verify failed: unable to get local issuer certificate".into()
        )
    );
}

#[test]
fn expired_controller_certificate_fails() {
    let mut spec = CertSpec::leaf("acsim.lab", KeyKind::Rsa2048, &[Eku::ServerAuth]);
    spec.valid_from_days = -30;
    spec.valid_days = 10;
    let (cert, key) = extra("expired-controller", &spec, Some(&ca_issued()));
    let cctx = DtlsContext::client(&wtp_cfg(Some("acsim.lab"))).unwrap();
    let sctx = DtlsContext::server(&cert_cfg(&cert, &key, &lab().pki.ca_cert, None)).unwrap();
    let (_, _, ce, _) = handshake(&cctx, &sctx);
    assert_eq!(
        failure(&ce),
        DtlsError::Credentials("certificate verify failed: certificate has expired".into())
    );
}

#[test]
fn wrong_peer_name_is_a_hostname_mismatch() {
    let cctx = DtlsContext::client(&wtp_cfg(Some("other-ac.lab"))).unwrap();
    let sctx = DtlsContext::server(&ac_cfg()).unwrap();
    let (_, _, ce, _) = handshake(&cctx, &sctx);
    assert_eq!(
        failure(&ce),
        DtlsError::Credentials("certificate verify failed: hostname mismatch".into())
    );
}

#[test]
fn lost_flights_are_retransmitted() {
    let mut cctx = DtlsContext::client(&wtp_cfg(Some("acsim.lab"))).unwrap();
    let mut sctx = DtlsContext::server(&ac_cfg()).unwrap();
    cctx.set_retransmit_timeout(Duration::from_millis(20));
    sctx.set_retransmit_timeout(Duration::from_millis(20));
    // Each flight in turn, then the first three datagrams, then every other one early on.
    type Loss = Box<dyn Fn(usize, bool) -> bool>;
    let cases: Vec<(&str, Loss)> = vec![
        ("ClientHello", Box::new(|i, to_server| i == 0 && to_server)),
        (
            "server's first flight",
            Box::new(|i, to_server| i == 0 && !to_server),
        ),
        (
            "client's Finished flight",
            Box::new(|i, to_server| i == 1 && to_server),
        ),
        (
            "server's Finished flight",
            Box::new(|i, to_server| (1..=2).contains(&i) && !to_server),
        ),
        ("first two each way", Box::new(|i, _| i < 2)),
        (
            "every other early one",
            Box::new(|i, _| i < 6 && i % 2 == 0),
        ),
    ];
    for (name, drop) in cases {
        let dropped = std::cell::Cell::new(0u32);
        let counting = |i: usize, to_server: bool| {
            let d = drop(i, to_server);
            dropped.set(dropped.get() + d as u32);
            d
        };
        let (mut c, mut s, ce, se) = handshake_with_loss(&cctx, &sctx, &counting);
        assert!(
            matches!(ce.first(), Some(DtlsEvent::Connected(_))),
            "{name}: client {ce:?}"
        );
        assert!(
            matches!(se.first(), Some(DtlsEvent::Connected(_))),
            "{name}: server {se:?}"
        );
        // Datagrams were really lost, and the handshake still completed: the lost flight was
        // sent again. Which timer resent it (client or server, from handle_timeout or from
        // OpenSSL's own read path once the timer had expired) depends on timing, which differs
        // under qemu-user, so the per-session counter is not asserted here.
        assert!(dropped.get() >= 1, "{name}: nothing was dropped");
        exchange(&mut c, &mut s);
    }
}

#[test]
fn handshake_times_out_after_bounded_retransmissions() {
    let mut cctx = DtlsContext::client(&wtp_cfg(Some("acsim.lab"))).unwrap();
    cctx.set_retransmit_timeout(Duration::from_millis(20));
    let mut c = DtlsSession::connect(&cctx).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut sent = 0;
    let ev = loop {
        while let Some(d) = c.poll_transmit() {
            assert_eq!(&d[..5], &[1, 0, 0, 0, 22]);
            sent += 1;
        }
        if let Some(e) = c.poll_event() {
            break e;
        }
        assert!(Instant::now() < deadline, "no timeout reported");
        std::thread::sleep(c.timeout().expect("timer runs while handshaking"));
        c.handle_timeout();
    };
    assert_eq!(ev, DtlsEvent::Failed(DtlsError::HandshakeTimeout));
    assert_eq!(c.retransmissions(), MAX_RETRANSMITS);
    assert_eq!(sent, 1 + MAX_RETRANSMITS as usize);
    assert_eq!(c.timeout(), None);
}

#[test]
fn timeout_is_reported_only_while_handshaking() {
    let cctx = DtlsContext::client(&wtp_cfg(Some("acsim.lab"))).unwrap();
    let sctx = DtlsContext::server(&ac_cfg()).unwrap();
    let c = DtlsSession::connect(&cctx).unwrap();
    let t = c.timeout().expect("ClientHello timer");
    assert!(
        t > Duration::from_millis(500) && t <= Duration::from_secs(1),
        "{t:?}"
    );
    let s = DtlsSession::accept(&sctx).unwrap();
    assert_eq!(s.timeout(), None);
    // An early handle_timeout retransmits nothing.
    let mut c = c;
    while c.poll_transmit().is_some() {}
    c.handle_timeout();
    assert_eq!(c.poll_transmit(), None);
    assert_eq!(c.retransmissions(), 0);
}

#[test]
fn close_notify_reaches_the_peer() {
    let cctx = DtlsContext::client(&wtp_cfg(Some("acsim.lab"))).unwrap();
    let sctx = DtlsContext::server(&ac_cfg()).unwrap();
    let (mut c, mut s, _, _) = handshake(&cctx, &sctx);
    c.close();
    assert!(!c.is_established());
    let mut n = [0; 2];
    pump(&mut c, &mut s, &mut n, &|_, _| false);
    assert_eq!(events(&mut s), vec![DtlsEvent::Closed]);
    assert!(!s.is_established());
    assert!(s.send(b"late").is_err());
    assert!(events(&mut c).is_empty());
}

#[test]
fn forged_plaintext_alert_after_handshake_is_ignored() {
    let cctx = DtlsContext::client(&wtp_cfg(Some("acsim.lab"))).unwrap();
    let sctx = DtlsContext::server(&ac_cfg()).unwrap();
    let (mut c, mut s, _, _) = handshake(&cctx, &sctx);
    // An off-path attacker's epoch-0 fatal alert (handshake_failure): DTLS drops records of
    // the old epoch once the session is encrypted, so the association survives.
    let alert = [
        1, 0, 0, 0, 21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 9, 0, 2, 2, 40,
    ];
    s.handle_datagram(&alert);
    c.handle_datagram(&alert);
    assert!(events(&mut s).is_empty() && events(&mut c).is_empty());
    assert!(s.is_established() && c.is_established());
    exchange(&mut c, &mut s);
}

#[test]
fn dtls10_peer_is_accepted() {
    let l = &lab().pki;
    let mut b = SslContextBuilder::new(SslMethod::dtls()).unwrap();
    b.set_min_proto_version(Some(SslVersion::DTLS1)).unwrap();
    b.set_max_proto_version(Some(SslVersion::DTLS1)).unwrap();
    b.set_security_level(0);
    b.set_options(openssl::ssl::SslOptions::NO_QUERY_MTU);
    b.set_cipher_list("AES128-SHA").unwrap();
    b.set_certificate_chain_file(&l.controller_cert).unwrap();
    b.set_private_key_file(&l.controller_key, SslFiletype::PEM)
        .unwrap();
    b.set_ca_file(&l.ca_cert).unwrap();
    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    let sctx = DtlsContext {
        ctx: b.build(),
        role: Role::Server,
        peer_name: None,
        dtls_mtu: 1396,
        initial_retransmit: Duration::from_secs(1),
        cookie_key: None,
    };
    let cctx = DtlsContext::client(&wtp_cfg(Some("acsim.lab"))).unwrap();
    let (mut c, mut s, ce, se) = handshake(&cctx, &sctx);
    assert_eq!(connected(&ce), "DTLSv1 AES128-SHA");
    assert_eq!(connected(&se), "DTLSv1 AES128-SHA");
    exchange(&mut c, &mut s);
}

#[test]
fn handshake_datagrams_respect_the_mtu() {
    let mut ccfg = wtp_cfg(Some("acsim.lab"));
    ccfg.mtu = 300;
    let mut scfg = ac_cfg();
    scfg.mtu = 300;
    let cctx = DtlsContext::client(&ccfg).unwrap();
    let sctx = DtlsContext::server(&scfg).unwrap();
    let mut c = DtlsSession::connect(&cctx).unwrap();
    let mut s = DtlsSession::accept(&sctx).unwrap();
    let mut largest = 0;
    for _ in 0..20 {
        let mut any = false;
        while let Some(d) = c.poll_transmit() {
            largest = largest.max(d.len());
            s.handle_datagram(&d);
            any = true;
        }
        while let Some(d) = s.poll_transmit() {
            largest = largest.max(d.len());
            c.handle_datagram(&d);
            any = true;
        }
        if !any {
            break;
        }
    }
    assert!(c.is_established() && s.is_established());
    assert!(largest <= 300, "largest datagram {largest}");
    assert!(
        largest > 200,
        "fragments should fill the MTU, largest {largest}"
    );
}

#[test]
fn mtu_below_the_dtls_minimum_is_a_config_error() {
    let mut cfg = wtp_cfg(None);
    cfg.mtu = 100;
    assert!(matches!(
        DtlsContext::client(&cfg),
        Err(DtlsError::Config(_))
    ));
}

#[test]
fn missing_files_are_config_errors_naming_the_file() {
    let l = &lab().pki;
    let cfg = cert_cfg(
        Path::new("/nonexistent/wtp.pem"),
        &l.wtp_key,
        &l.ca_cert,
        None,
    );
    match DtlsContext::client(&cfg) {
        Err(DtlsError::Config(t)) => assert!(t.contains("/nonexistent/wtp.pem"), "{t}"),
        other => panic!("{other:?}"),
    }
    // Key of another certificate.
    let cfg = cert_cfg(&l.wtp_cert, &l.controller_key, &l.ca_cert, None);
    match DtlsContext::client(&cfg) {
        Err(DtlsError::Config(t)) => assert!(t.contains("does not match"), "{t}"),
        other => panic!("{other:?}"),
    }
    let mut cfg = wtp_cfg(None);
    cfg.ciphers = Some("NO-SUCH-CIPHER".into());
    assert!(matches!(
        DtlsContext::client(&cfg),
        Err(DtlsError::Config(_))
    ));
}

#[test]
fn keylog_lines_are_appended() {
    let path = lab().dir.join("keylog.txt");
    let _ = std::fs::remove_file(&path);
    let mut ccfg = wtp_cfg(Some("acsim.lab"));
    ccfg.keylog = Some(path.clone());
    let cctx = DtlsContext::client(&ccfg).unwrap();
    let sctx = DtlsContext::server(&ac_cfg()).unwrap();
    handshake(&cctx, &sctx);
    handshake(&cctx, &sctx);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for l in lines {
        assert!(
            l.starts_with("CLIENT_RANDOM ") && l.split(' ').count() == 3,
            "{l}"
        );
    }
}

#[test]
fn garbage_datagrams_do_not_panic_or_break_the_session() {
    let cctx = DtlsContext::client(&wtp_cfg(Some("acsim.lab"))).unwrap();
    let sctx = DtlsContext::server(&ac_cfg()).unwrap();
    let mut rng = 0x1234_5678_u32;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rng
    };
    let mut garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![1],
        vec![1, 0, 0, 0],
        vec![0, 0, 0, 0, 22, 0xfe, 0xfd],
        vec![1, 0, 0, 0, 22],
        vec![
            1, 0, 0, 0, 22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
        ],
        vec![
            1, 0, 0, 0, 23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 5, 0, 4, 1, 2, 3, 4,
        ],
    ];
    for _ in 0..200 {
        let len = (next() % 300) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if d.len() >= 5 && next() % 2 == 0 {
            d[..5].copy_from_slice(&[1, 0, 0, 0, [20, 21, 22, 23][(next() % 4) as usize]]);
            if d.len() >= 7 {
                d[5] = 0xfe;
                d[6] = 0xfd;
            }
        }
        garbage.push(d);
    }
    // Before the ClientHello, during the handshake and afterwards, on both sides.
    let mut s = DtlsSession::accept(&sctx).unwrap();
    for g in &garbage {
        s.handle_datagram(g);
    }
    let mut c = DtlsSession::connect(&cctx).unwrap();
    for g in &garbage {
        c.handle_datagram(g);
    }
    let mut n = [0; 2];
    pump(&mut c, &mut s, &mut n, &|_, _| false);
    // Garbage never kills an association (unauthenticated records are dropped), except that a
    // server that parsed a plausible ClientHello may have answered it; accept either outcome
    // for the pre-handshake part, but require an intact session afterwards.
    if c.is_established() && s.is_established() {
        for g in &garbage {
            c.handle_datagram(g);
            s.handle_datagram(g);
        }
        assert!(c.is_established() && s.is_established());
        exchange(&mut c, &mut s);
    }
    // A fresh pair, then bit flips of real handshake datagrams.
    let mut c = DtlsSession::connect(&cctx).unwrap();
    let mut s = DtlsSession::accept(&sctx).unwrap();
    for _ in 0..10 {
        let mut any = false;
        while let Some(d) = c.poll_transmit() {
            let mut bad = d.clone();
            let i = 4 + (next() as usize % (bad.len() - 4));
            bad[i] ^= 1 << (next() % 8);
            s.handle_datagram(&bad);
            s.handle_datagram(&d);
            any = true;
        }
        while let Some(d) = s.poll_transmit() {
            let mut bad = d.clone();
            let i = 4 + (next() as usize % (bad.len() - 4));
            bad[i] ^= 1 << (next() % 8);
            c.handle_datagram(&bad);
            c.handle_datagram(&d);
            any = true;
        }
        if !any {
            break;
        }
    }
    let _ = (events(&mut c), events(&mut s));
}

#[test]
fn send_before_handshake_is_an_error() {
    let cctx = DtlsContext::client(&wtp_cfg(None)).unwrap();
    let mut c = DtlsSession::connect(&cctx).unwrap();
    assert!(matches!(c.send(b"x"), Err(DtlsError::Protocol(_))));
    assert_eq!(c.recv(), None);
    assert_eq!(c.peer_summary(), None);
    let first = c.poll_transmit().unwrap();
    assert_eq!(&first[..4], &DTLS_PREAMBLE);
    assert_eq!(first[4], 22, "a handshake record follows the CAPWAP header");
}

/// What the runtime routes by: a new client's first datagram is an epoch-0 ClientHello; the
/// server's answer and the records of an established session are not. An established server
/// session drops a new ClientHello without a word (that is why acsim must give a restarted
/// WTP's handshake a session of its own, see runtime/ac.rs).
#[test]
fn client_hellos_are_told_from_other_records() {
    let cctx = DtlsContext::client(&wtp_cfg(Some("acsim.lab"))).unwrap();
    let sctx = DtlsContext::server(&ac_cfg()).unwrap();
    let (mut c, mut s, _, _) = handshake(&cctx, &sctx);

    let mut fresh = DtlsSession::connect(&cctx).unwrap();
    let hello = fresh.poll_transmit().expect("a ClientHello");
    assert!(super::is_client_hello(&hello));
    assert_eq!(super::record_epoch(&hello), Some(0));
    let mut other_server = DtlsSession::accept(&sctx).unwrap();
    other_server.handle_datagram(&hello);
    let answer = other_server.poll_transmit().expect("a ServerHello flight");
    assert_eq!(super::record_epoch(&answer), Some(0));
    assert!(!super::is_client_hello(&answer));

    c.send(b"echo request").unwrap();
    let record = c.poll_transmit().unwrap();
    assert!(super::record_epoch(&record).is_some_and(|e| e >= 1));
    assert!(!super::is_client_hello(&record));
    s.handle_datagram(&record);
    assert_eq!(s.recv().as_deref(), Some(&b"echo request"[..]));

    s.handle_datagram(&hello);
    assert!(events(&mut s).is_empty() && s.is_established());
    assert_eq!(
        s.poll_transmit(),
        None,
        "an established session ignores a new ClientHello"
    );
    exchange(&mut c, &mut s);

    for junk in [
        &[][..],
        &[1, 0, 0, 0, 22][..],
        &[0, 0, 0, 0, 22, 0xfe, 0xfd, 0, 0][..],
    ] {
        assert_eq!(super::record_epoch(junk), None);
        assert!(!super::is_client_hello(junk));
    }
}

/// A client through the listener: the first ClientHello gets a HelloVerifyRequest and leaves
/// nothing behind; the second, with the cookie, becomes a session whose handshake completes.
fn through_listener(cctx: &DtlsContext, sctx: &DtlsContext) -> (DtlsSession, DtlsSession) {
    use crate::time::Instant as At;
    let peer: std::net::SocketAddr = "192.0.2.7:5246".parse().unwrap();
    let mut l = DtlsListener::new(sctx).unwrap();
    let mut c = DtlsSession::connect(cctx).unwrap();
    let hello = c.poll_transmit().unwrap();
    assert_eq!(cookie::client_hello_cookie(&hello), Ok(&[][..]));
    let hvr = match l.handle(sctx, &hello, peer, At::ZERO) {
        Listened::Reply(d) => d,
        other => panic!("expected a HelloVerifyRequest, got {other:?}"),
    };
    c.handle_datagram(&hvr);
    let hello2 = c.poll_transmit().expect("a ClientHello with the cookie");
    let cookie = cookie::client_hello_cookie(&hello2).unwrap().to_vec();
    assert_eq!(cookie.len(), cookie::COOKIE_LEN);
    // The cookie is bound to the address: from another port it only earns a new cookie.
    let other: std::net::SocketAddr = "192.0.2.7:5247".parse().unwrap();
    assert!(matches!(
        l.handle(sctx, &hello2, other, At::ZERO),
        Listened::Reply(_)
    ));
    let mut s = match l.handle(sctx, &hello2, peer, At::ZERO) {
        Listened::Accepted(s) => s,
        other => panic!("expected a session, got {other:?}"),
    };
    let mut n = [0; 2];
    for _ in 0..10 {
        pump(&mut c, &mut s, &mut n, &|_, _| false);
        if c.is_established() && s.is_established() {
            break;
        }
    }
    assert!(connected(&events(&mut c)).starts_with("DTLSv1.2"));
    assert!(connected(&events(&mut s)).starts_with("DTLSv1.2"));
    (c, s)
}

#[test]
fn the_listener_takes_a_client_through_the_cookie_exchange() {
    let cctx = DtlsContext::client(&wtp_cfg(Some("acsim.lab"))).unwrap();
    let sctx = DtlsContext::server(&ac_cfg()).unwrap();
    let (mut c, mut s) = through_listener(&cctx, &sctx);
    exchange(&mut c, &mut s);
    // The listener serves the next peer with a fresh SSL.
    let (mut c, mut s) = through_listener(&cctx, &sctx);
    exchange(&mut c, &mut s);
}

#[test]
fn the_listener_works_with_psk() {
    let cctx = DtlsContext::client(&psk_cfg("wtp-1", b"0123456789abcdef")).unwrap();
    let sctx = DtlsContext::server(&psk_cfg("wtp-1", b"0123456789abcdef")).unwrap();
    let (mut c, mut s) = through_listener(&cctx, &sctx);
    exchange(&mut c, &mut s);
}

#[test]
fn the_listener_drops_what_is_not_a_client_hello() {
    let sctx = DtlsContext::server(&ac_cfg()).unwrap();
    let mut l = DtlsListener::new(&sctx).unwrap();
    let peer: std::net::SocketAddr = "192.0.2.7:5246".parse().unwrap();
    let now = crate::time::Instant::ZERO;
    for junk in [
        &[][..],
        &[1, 0, 0, 0][..],
        &[1, 0, 0, 0, 22, 0xfe, 0xfd, 0, 0][..],
        &[1, 0, 0, 0, 23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 9][..],
    ] {
        assert!(matches!(
            l.handle(&sctx, junk, peer, now),
            Listened::Dropped(ListenDrop::NotHello(_))
        ));
    }
    let cctx = DtlsContext::client(&wtp_cfg(None)).unwrap();
    assert!(
        DtlsListener::new(&cctx).is_err(),
        "a client has no listener"
    );
}
