//! Interop with the `openssl` command line as an independent DTLS peer over real UDP on
//! 127.0.0.1. `s_server`/`s_client` speak bare DTLS, so the relay here strips and adds the
//! 4-byte CAPWAP DTLS header on our side of the socket.
//!
//! Every test has a hard deadline of a few seconds and kills its child process on the way out.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wtpd::dtls::{
    Credentials, DtlsConfig, DtlsContext, DtlsEvent, DtlsListener, DtlsSession, Listened,
};
use wtpd_harness::pki::{self, LabPki};

const PREAMBLE: [u8; 4] = [1, 0, 0, 0];
const DEADLINE: Duration = Duration::from_secs(8);
const PSK_HEX: &str = "00112233445566778899aabbccddeeff";

fn lab() -> &'static LabPki {
    static LAB: OnceLock<LabPki> = OnceLock::new();
    LAB.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("wtpd-dtls-interop-{}", std::process::id()));
        pki::generate_lab_pki(&dir).expect("lab pki")
    })
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An `openssl` child whose stdout and stderr lines arrive on a channel; killed on drop.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Peer {
    fn spawn(args: &[&str]) -> Peer {
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl on PATH");
        let (tx, rx) = channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        Peer {
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits until a line contains `needle`; false at the deadline.
    fn wait_for(&mut self, needle: &str, until: Instant) -> bool {
        if self.seen.iter().any(|l| l.contains(needle)) {
            return true;
        }
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return false
                }
            }
        }
    }

    fn type_line(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(format!("{text}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    fn transcript(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        // After SIGKILL the wait is immediate.
        let _ = self.child.wait();
    }
}

/// Pumps `session` over `sock` (to `peer`, or to whoever sends first) until `done` says so.
/// Datagrams on the wire are bare DTLS; the session sees them with the CAPWAP header.
fn relay(
    sock: &UdpSocket,
    mut peer: Option<SocketAddr>,
    session: &mut DtlsSession,
    until: Instant,
    mut done: impl FnMut(&mut DtlsSession, Option<DtlsEvent>) -> bool,
) {
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    loop {
        assert!(Instant::now() < until, "deadline passed");
        if let Some(to) = peer {
            while let Some(d) = session.poll_transmit() {
                assert_eq!(
                    &d[..4],
                    &PREAMBLE,
                    "every datagram carries the CAPWAP DTLS header"
                );
                sock.send_to(&d[4..], to).unwrap();
            }
        }
        let mut stop = false;
        while let Some(ev) = session.poll_event() {
            stop |= done(session, Some(ev));
        }
        if stop || done(session, None) {
            // Flush what the callback queued.
            if let Some(to) = peer {
                while let Some(d) = session.poll_transmit() {
                    sock.send_to(&d[4..], to).unwrap();
                }
            }
            return;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                peer.get_or_insert(from);
                let mut d = PREAMBLE.to_vec();
                d.extend_from_slice(&buf[..n]);
                session.handle_datagram(&d);
            }
            // Timeout, or ICMP unreachable reported on the socket: drive the timer.
            Err(_) => session.handle_timeout(),
        }
    }
}

fn cert_config(cert: &Path, key: &Path, peer: Option<&str>) -> DtlsConfig {
    DtlsConfig {
        credentials: Credentials::Certificate {
            cert: cert.into(),
            key: key.into(),
            ca: lab().ca_cert.clone(),
            peer_name: peer.map(str::to_string),
        },
        ciphers: None,
        keylog: None,
        mtu: 1400,
    }
}

fn psk_config() -> DtlsConfig {
    let key = (0..PSK_HEX.len() / 2)
        .map(|i| u8::from_str_radix(&PSK_HEX[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    DtlsConfig {
        credentials: Credentials::Psk {
            identity: "wtp-sim-1".into(),
            key,
        },
        ciphers: None,
        keylog: None,
        mtu: 1400,
    }
}

/// Our client against `openssl s_server`; returns the Connected text.
fn client_against_s_server(extra: &[&str], ctx: &DtlsContext) -> String {
    let until = Instant::now() + DEADLINE;
    let port = free_udp_port();
    let accept = format!("127.0.0.1:{port}");
    let mut args = vec!["s_server", "-dtls1_2", "-accept", &accept, "-naccept", "1"];
    args.extend_from_slice(extra);
    let mut server = Peer::spawn(&args);
    assert!(
        server.wait_for("ACCEPT", until),
        "s_server did not start:\n{}",
        server.transcript()
    );

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to: SocketAddr = accept.parse().unwrap();
    let mut session = DtlsSession::connect(ctx).unwrap();
    let mut connected = None;
    relay(&sock, Some(to), &mut session, until, |sess, ev| match ev {
        Some(DtlsEvent::Connected(t)) => {
            connected = Some(t);
            sess.send(b"hello from wtp\n").unwrap();
            true
        }
        Some(other) => panic!("client: {other:?}"),
        None => false,
    });
    assert!(
        server.wait_for("hello from wtp", until),
        "s_server did not print our message:\n{}",
        server.transcript()
    );
    server.type_line("hello from ac");
    relay(&sock, Some(to), &mut session, until, |sess, ev| {
        if let Some(ev) = ev {
            panic!("client: {ev:?}");
        }
        match sess.recv() {
            Some(m) => {
                assert_eq!(m, b"hello from ac\n");
                true
            }
            None => false,
        }
    });
    session.close();
    while let Some(d) = session.poll_transmit() {
        sock.send_to(&d[4..], to).unwrap();
    }
    connected.unwrap()
}

/// Our server against `openssl s_client`; returns the Connected text.
fn server_against_s_client(extra: &[&str], ctx: &DtlsContext, expect_peer: &str) -> String {
    let until = Instant::now() + DEADLINE;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let connect = sock.local_addr().unwrap().to_string();
    let mut args = vec!["s_client", "-dtls1_2", "-connect", &connect];
    args.extend_from_slice(extra);
    let mut client = Peer::spawn(&args);

    // As acsim does: through the cookie exchange first.
    let (mut session, peer) = listen(&sock, ctx, until);
    let mut connected = None;
    relay(
        &sock,
        Some(peer),
        &mut session,
        until,
        |sess, ev| match ev {
            Some(DtlsEvent::Connected(t)) => {
                connected = Some(t);
                sess.send(b"hello from ac\n").unwrap();
                true
            }
            Some(other) => panic!("server: {other:?}"),
            None => false,
        },
    );
    let summary = session.peer_summary().unwrap();
    assert!(summary.contains(expect_peer), "{summary}");
    assert!(
        client.wait_for("hello from ac", until),
        "s_client did not print our message:\n{}",
        client.transcript()
    );
    client.type_line("hello from wtp");
    assert_eq!(recv_one(&sock, &mut session, until), b"hello from wtp\n");
    connected.unwrap()
}

/// Takes a client through [`DtlsListener`]: HelloVerifyRequests until a ClientHello brings a
/// good cookie back. Returns the session and the client's address.
fn listen(sock: &UdpSocket, ctx: &DtlsContext, until: Instant) -> (DtlsSession, SocketAddr) {
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut listener = DtlsListener::new(ctx).unwrap();
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    let mut verify_requests = 0;
    loop {
        assert!(Instant::now() < until, "no ClientHello with a cookie");
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let mut d = PREAMBLE.to_vec();
        d.extend_from_slice(&buf[..n]);
        let now = wtpd::time::Instant::from_duration(start.elapsed());
        match listener.handle(ctx, &d, from, now) {
            Listened::Reply(hvr) => {
                verify_requests += 1;
                sock.send_to(&hvr[4..], from).unwrap();
            }
            Listened::Accepted(s) => {
                assert!(verify_requests >= 1, "accepted without a cookie exchange");
                return (s, from);
            }
            Listened::Dropped(why) => panic!("listener dropped a datagram: {why}"),
        }
    }
}

/// Receives until one plaintext arrives (the session already knows the peer).
fn recv_one(sock: &UdpSocket, session: &mut DtlsSession, until: Instant) -> Vec<u8> {
    let mut got = None;
    relay(sock, None, session, until, |sess, ev| {
        if let Some(ev) = ev {
            panic!("server: {ev:?}");
        }
        got = sess.recv();
        got.is_some()
    });
    got.unwrap()
}

#[test]
fn our_client_with_s_server_aes128_sha() {
    let l = lab();
    let ctx =
        DtlsContext::client(&cert_config(&l.wtp_cert, &l.wtp_key, Some("127.0.0.1"))).unwrap();
    let text = client_against_s_server(
        &[
            "-cert",
            s(&l.controller_cert),
            "-key",
            s(&l.controller_key),
            "-CAfile",
            s(&l.ca_cert),
            "-Verify",
            "1",
            "-cipher",
            "AES128-SHA:@SECLEVEL=0",
        ],
        &ctx,
    );
    assert_eq!(text, "DTLSv1.2 AES128-SHA");
}

#[test]
fn our_client_with_s_server_ecdhe_rsa_gcm() {
    let l = lab();
    let ctx =
        DtlsContext::client(&cert_config(&l.wtp_cert, &l.wtp_key, Some("acsim.lab"))).unwrap();
    let text = client_against_s_server(
        &[
            "-cert",
            s(&l.controller_cert),
            "-key",
            s(&l.controller_key),
            "-CAfile",
            s(&l.ca_cert),
            "-Verify",
            "1",
            "-cipher",
            "ECDHE-RSA-AES128-GCM-SHA256",
        ],
        &ctx,
    );
    assert_eq!(text, "DTLSv1.2 ECDHE-RSA-AES128-GCM-SHA256");
}

#[test]
fn our_client_with_s_server_psk() {
    let ctx = DtlsContext::client(&psk_config()).unwrap();
    let text = client_against_s_server(
        &[
            "-nocert",
            "-psk",
            PSK_HEX,
            "-psk_hint",
            "capwap",
            "-cipher",
            "PSK-AES128-CBC-SHA",
        ],
        &ctx,
    );
    assert_eq!(text, "DTLSv1.2 PSK-AES128-CBC-SHA");
}

#[test]
fn our_server_with_s_client_certificates() {
    let l = lab();
    let ctx =
        DtlsContext::server(&cert_config(&l.controller_cert, &l.controller_key, None)).unwrap();
    let text = server_against_s_client(
        &[
            "-cert",
            s(&l.wtp_cert),
            "-key",
            s(&l.wtp_key),
            "-CAfile",
            s(&l.ca_cert),
            "-verify_return_error",
            "-verify_hostname",
            "acsim.lab",
        ],
        &ctx,
        "CN=wtp-sim-1",
    );
    assert_eq!(text, "DTLSv1.2 ECDHE-RSA-AES128-GCM-SHA256");
}

#[test]
fn our_server_with_s_client_psk() {
    let ctx = DtlsContext::server(&psk_config()).unwrap();
    let text = server_against_s_client(
        &[
            "-psk",
            PSK_HEX,
            "-psk_identity",
            "wtp-sim-1",
            "-cipher",
            "PSK-AES128-CBC-SHA",
        ],
        &ctx,
        "PSK identity 'wtp-sim-1'",
    );
    assert_eq!(text, "DTLSv1.2 PSK-AES128-CBC-SHA");
}

#[test]
fn s_client_with_untrusted_certificate_is_rejected_with_reason() {
    let l = lab();
    let dir: PathBuf = l.ca_cert.parent().unwrap().to_path_buf();
    let foreign_ca = pki::issue(&pki::CertSpec::ca("foreign", pki::KeyKind::EcP256), None).unwrap();
    let leaf = pki::issue(
        &pki::CertSpec::leaf("wtp-sim-1", pki::KeyKind::EcP256, &[pki::Eku::ClientAuth]),
        Some(&foreign_ca),
    )
    .unwrap();
    let (cert, key) = leaf.write(&dir, "foreign-wtp").unwrap();
    let until = Instant::now() + DEADLINE;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let connect = sock.local_addr().unwrap().to_string();
    let _client = Peer::spawn(&[
        "s_client",
        "-dtls1_2",
        "-connect",
        &connect,
        "-cert",
        s(&cert),
        "-key",
        s(&key),
        "-CAfile",
        s(&l.ca_cert),
    ]);
    let ctx =
        DtlsContext::server(&cert_config(&l.controller_cert, &l.controller_key, None)).unwrap();
    let mut session = DtlsSession::accept(&ctx).unwrap();
    let mut failed = None;
    relay(&sock, None, &mut session, until, |_, ev| match ev {
        Some(DtlsEvent::Failed(e)) => {
            failed = Some(e.to_string());
            true
        }
        Some(other) => panic!("{other:?}"),
        None => false,
    });
    assert_eq!(
        failed.unwrap(),
        "DTLS handshake failed: certificate verify failed: unable to get local issuer certificate"
    );
}
