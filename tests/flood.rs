//! acsim under attack, as real processes on loopback: a flood of ClientHellos from thousands
//! of source ports (as from spoofed addresses: nobody answers the HelloVerifyRequests) must not
//! grow its memory or keep a real AP out, and thousands of failing handshakes must not give
//! thousands of log lines.

mod common;

use common::process::{read, start, wait_for, Killer};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use wtpd_harness::demo::{free_port_pair, write_lab, DemoDtls};

/// A certificate lab with acsim running; returns (dir, acsim's address, acsim).
fn lab_with_acsim(name: &str) -> (PathBuf, SocketAddr, Killer) {
    let dir = std::env::temp_dir().join(format!("wtpd-flood-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port_pair().unwrap();
    let addr = write_lab(&dir, DemoDtls::Certificate, port).unwrap();
    let ac = start(
        wtpd_harness::bins::acsim(),
        &["run", "--config", "acsim.toml"],
        &dir,
    );
    assert!(
        wait_for(&dir.join("acsim.log"), "listening", Duration::from_secs(10)),
        "acsim did not start"
    );
    (dir, addr, ac)
}

/// Resident memory of a process in KiB (VmRSS).
fn rss_kib(pid: u32) -> u64 {
    let status = read(Path::new(&format!("/proc/{pid}/status")));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A DTLS 1.2 ClientHello as a WTP would send it (CAPWAP DTLS header, ECDHE-RSA-AES128-GCM and
/// AES128-SHA, the extensions ECDHE needs), offering `suites`, with `cookie`.
fn client_hello(suites: &[u16], cookie: &[u8], message_seq: u16, record_seq: u64) -> Vec<u8> {
    let mut body = vec![0xfe, 0xfd];
    body.extend_from_slice(&record_seq.to_be_bytes()); // a "random" that differs per hello
    body.extend_from_slice(&[0x5a; 24]);
    body.push(0); // session_id
    body.push(cookie.len() as u8);
    body.extend_from_slice(cookie);
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let ext: &[u8] = &[
        0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17, // supported_groups: secp256r1
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats: uncompressed
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x01, 0x04, 0x03, 0x08, 0x04, // sig algs
    ];
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(ext);
    let len = (body.len() as u32).to_be_bytes();
    let seq = message_seq.to_be_bytes();
    let mut hs = vec![1, len[1], len[2], len[3], seq[0], seq[1], 0, 0, 0];
    hs.extend_from_slice(&len[1..]);
    hs.extend_from_slice(&body);
    let mut d = vec![1, 0, 0, 0, 22, 0xfe, 0xfd, 0, 0];
    d.extend_from_slice(&record_seq.to_be_bytes()[2..]);
    d.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    d.extend_from_slice(&hs);
    d
}

const GOOD_SUITES: &[u16] = &[0xc02f, 0x002f];

/// The cookie of a HelloVerifyRequest datagram, if it is one.
fn hvr_cookie(d: &[u8]) -> Option<Vec<u8>> {
    // CAPWAP DTLS header (4), record header (13), handshake header (12), server_version (2).
    if d.len() < 4 + 13 + 12 + 3 || d[4] != 22 || d[4 + 13] != 3 {
        return None;
    }
    let n = d[4 + 13 + 12 + 2] as usize;
    d.get(4 + 13 + 12 + 3..4 + 13 + 12 + 3 + n)
        .map(<[u8]>::to_vec)
}

/// Sends a ClientHello from `sock` and waits for acsim's first answer.
fn hello_and_answer(sock: &UdpSocket, to: SocketAddr, hello: &[u8]) -> Option<Vec<u8>> {
    sock.send_to(hello, to).unwrap();
    let mut buf = [0u8; 4096];
    sock.recv_from(&mut buf)
        .ok()
        .map(|(n, _)| buf[..n].to_vec())
}

#[test]
fn spoofed_client_hello_flood_keeps_memory_flat_and_a_wtp_joins() {
    let (dir, ac_addr, ac) = lab_with_acsim("hello");
    let pid = ac.0.id();
    let flood = |n: usize| {
        // Each ClientHello from a port of its own, as from spoofed sources: the socket is gone
        // before any answer could be read. Paced, so that acsim's socket buffer holds them.
        for i in 0..n {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.send_to(&client_hello(GOOD_SUITES, &[], 0, 0), ac_addr)
                .unwrap();
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        // acsim answers a probe only after the flood ahead of it in its socket.
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        hello_and_answer(&probe, ac_addr, &client_hello(GOOD_SUITES, &[], 0, 0)).is_some()
    };
    assert!(flood(200), "acsim does not answer");
    let before = rss_kib(pid);
    let answered = flood(3000);
    let after = rss_kib(pid);
    eprintln!("acsim VmRSS: {before} KiB before a flood of 3000 ClientHellos, {after} KiB after");
    assert!(
        answered,
        "acsim does not answer a new client after the flood"
    );
    assert!(
        after < before + 2048,
        "acsim grew from {before} to {after} KiB under a ClientHello flood"
    );
    let _w = start(env!("CARGO_BIN_EXE_wtpd"), &["--config", "wtpd.toml"], &dir);
    // And while more spoofed ClientHellos arrive, the real AP joins.
    assert!(
        flood(1000),
        "acsim does not answer a new client during the join"
    );
    assert!(
        wait_for(
            &dir.join("wtpd.log"),
            "CAPWAP State: Run",
            Duration::from_secs(30)
        ),
        "wtpd did not reach Run:\n{}",
        read(&dir.join("wtpd.log"))
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn thousands_of_failing_handshakes_give_a_bounded_number_of_log_lines() {
    const ATTEMPTS: usize = 2000;
    let (dir, ac_addr, mut ac) = lab_with_acsim("logs");
    // Twenty clients whose ClientHellos offer only a suite acsim does not have
    // (TLS_RSA_WITH_NULL_MD5): each handshake fails at once with "no shared cipher". They
    // answer HelloVerifyRequests, as real clients do.
    let socks: Vec<UdpSocket> = (0..20)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            s
        })
        .collect();
    let mut failed = 0;
    for i in 0..ATTEMPTS {
        let s = &socks[i % socks.len()];
        let mut answer = hello_and_answer(s, ac_addr, &client_hello(&[0x0001], &[], 0, 0));
        if let Some(cookie) = answer.as_deref().and_then(hvr_cookie) {
            answer = hello_and_answer(s, ac_addr, &client_hello(&[0x0001], &cookie, 1, 1));
        }
        // A fatal alert (record type 21) says the handshake failed.
        if answer.is_some_and(|a| a.get(4) == Some(&21)) {
            failed += 1;
        }
    }
    assert!(
        failed > ATTEMPTS * 9 / 10,
        "only {failed} handshakes failed"
    );
    let log = dir.join("acsim.log");
    let count = |text: &str| {
        text.lines()
            .filter(|l| l.contains("DTLS handshake with") && l.contains("failed"))
            .count()
    };
    let lines = count(&read(&log));
    eprintln!("{failed} failed handshakes gave {lines} 'handshake failed' lines");
    assert!(lines <= 10, "{lines} lines for {failed} failed handshakes");
    // At exit acsim says how many it left out.
    let _ = Command::new("kill")
        .args(["-TERM", &ac.0.id().to_string()])
        .status();
    let _ = ac.0.wait();
    let text = read(&log);
    let suppressed: u64 = text
        .lines()
        .filter_map(|l| l.split("DTLS handshake failed: ").nth(1))
        .filter_map(|rest| rest.split(" more suppressed").next()?.parse::<u64>().ok())
        .sum();
    // At least the failures this client saw an alert for (one whose alert was lost is
    // counted by acsim too).
    let accounted = suppressed as usize + count(&text);
    assert!(
        (failed..=ATTEMPTS).contains(&accounted),
        "{accounted} failures logged or counted, {failed} seen:\n{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Clients at real addresses can still open handshakes and leave them half-open (each
/// answers the HelloVerifyRequest, then goes quiet); acsim drops them after 60 s and must give
/// their memory back (glibc keeps freed heap without the `malloc_trim` after the expiry:
/// 77 MB stayed). Ignored by default: it waits the 60 s out
/// (`cargo test --test flood -- --ignored --nocapture`).
#[test]
#[ignore]
fn half_open_handshakes_give_their_memory_back_when_they_expire() {
    const CLIENTS: usize = 1000;
    let (dir, ac_addr, ac) = lab_with_acsim("half-open");
    let pid = ac.0.id();
    let open = |n: usize| {
        let mut opened = 0;
        for _ in 0..n {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let answer = hello_and_answer(&s, ac_addr, &client_hello(GOOD_SUITES, &[], 0, 0));
            if let Some(cookie) = answer.as_deref().and_then(hvr_cookie) {
                let flight =
                    hello_and_answer(&s, ac_addr, &client_hello(GOOD_SUITES, &cookie, 1, 1));
                opened += usize::from(flight.is_some());
            }
        }
        opened
    };
    assert_eq!(open(10), 10);
    std::thread::sleep(Duration::from_secs(65));
    let before = rss_kib(pid);
    let opened = open(CLIENTS);
    let during = rss_kib(pid);
    // 60 s, and the loop wakes at least every 5 s to drop what expired.
    std::thread::sleep(Duration::from_secs(70));
    let after = rss_kib(pid);
    eprintln!(
        "acsim VmRSS: {before} KiB before {opened} half-open handshakes, {during} KiB with them, {after} KiB after they expired"
    );
    // A few ports come round again while their first handshake is still open; acsim then
    // treats the new ClientHello as a retransmission within that handshake.
    assert!(opened > CLIENTS * 9 / 10, "only {opened} handshakes opened");
    assert!(
        wait_for(
            &dir.join("acsim.log"),
            "did not finish in 60s",
            Duration::from_secs(1)
        ),
        "the handshakes did not expire"
    );
    assert!(
        after < before + 2048,
        "acsim kept {} KiB after the handshakes expired",
        after.saturating_sub(before)
    );
    let _ = std::fs::remove_dir_all(dir);
}
