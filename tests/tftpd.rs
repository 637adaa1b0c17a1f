//! The primary's TFTP server (src/fetch/tftpd.rs, issue 14) on loopback against real peers:
//! the project's own client at windowsize 1 and 4 and blksize 512 and 1468, Debian's atftp and
//! tftp-hpa clients, and raw sockets for what a well-behaved client never does (hold a
//! transfer without acknowledging, write, use another transfer ID). A missing client binary
//! fails the test.

mod common;
mod fetch_common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use fetch_common::*;
use wtpd::fetch::tftpd::{TftpServer, TftpdConfig};
use wtpd::fetch::{FetchErrorKind, FetchOptions, FetchUrl, Sink};

/// The server's log lines, to check what operators read.
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let line = r.args().to_string();
            eprintln!("{line}");
            self.0.lock().unwrap().push(line);
        }
    }
    fn flush(&self) {}
}

fn capture() -> &'static Capture {
    static C: OnceLock<&'static Capture> = OnceLock::new();
    C.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(c).unwrap();
        log::set_max_level(log::LevelFilter::Info);
        c
    })
}

/// Whether a log line contains `needle`, waiting a little for the thread that writes it.
fn logged(needle: &str) -> bool {
    common::process::wait_until(Duration::from_secs(3), || {
        capture()
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    })
}

fn config(max_transfers: usize, timeout_ms: u64, retries: u32) -> TftpdConfig {
    capture();
    TftpdConfig {
        bind: ([127, 0, 0, 1], 0).into(),
        max_transfers,
        timeout: Duration::from_millis(timeout_ms),
        retries,
        ..TftpdConfig::default()
    }
}

/// A server serving `image` as `ap1g8`.
fn serving(cfg: TftpdConfig, image: &Path) -> TftpServer {
    let s = TftpServer::start(cfg).expect("start");
    s.serve(Some(("ap1g8".into(), image.to_path_buf())));
    s
}

struct VecSink {
    size: Option<u64>,
    data: Vec<u8>,
    /// Run once, when the transfer starts.
    on_begin: Option<Box<dyn FnOnce()>>,
}

impl std::fmt::Debug for VecSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes (announced {:?})", self.data.len(), self.size)
    }
}

impl Sink for VecSink {
    fn begin(&mut self, size: Option<u64>) -> Result<(), FetchErrorKind> {
        self.size = size;
        if let Some(f) = self.on_begin.take() {
            f();
        }
        Ok(())
    }
    fn data(&mut self, bytes: &[u8]) -> Result<(), FetchErrorKind> {
        self.data.extend_from_slice(bytes);
        Ok(())
    }
}

fn sink() -> VecSink {
    VecSink {
        size: None,
        data: Vec::new(),
        on_begin: None,
    }
}

fn url(server: &TftpServer, path: &str) -> FetchUrl {
    FetchUrl::parse(&format!("tftp://{}{path}", server.local_addr())).unwrap()
}

fn opts(blksize: u16, windowsize: u16) -> FetchOptions {
    FetchOptions {
        blksize,
        windowsize,
        timeout: Duration::from_secs(1),
        retries: 3,
        ..FetchOptions::default()
    }
}

/// The project's client: the file, or the error.
fn own_fetch(
    server: &TftpServer,
    path: &str,
    blksize: u16,
    windowsize: u16,
) -> Result<VecSink, wtpd::fetch::FetchError> {
    let mut s = sink();
    wtpd::fetch::tftp::fetch(&url(server, path), &opts(blksize, windowsize), &mut s)?;
    Ok(s)
}

fn read_file(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A client on a raw socket.
struct Raw {
    sock: UdpSocket,
}

impl Raw {
    fn new() -> Raw {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        Raw { sock }
    }
    fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }
    fn send(&self, to: SocketAddr, p: &[u8]) {
        self.sock.send_to(p, to).unwrap();
    }
    /// A read request in octet mode without options.
    fn rrq(&self, server: &TftpServer, name: &str) {
        let mut p = vec![0, 1];
        p.extend_from_slice(name.as_bytes());
        p.extend_from_slice(b"\0octet\0");
        self.send(server.local_addr(), &p);
    }
    fn recv(&self) -> (SocketAddr, Vec<u8>) {
        let mut buf = vec![0u8; 70_000];
        let (n, from) = self.sock.recv_from(&mut buf).expect("an answer");
        buf.truncate(n);
        (from, buf)
    }
    /// Expects an ERROR: its code and text.
    fn error(&self) -> (u16, String) {
        let (_, p) = self.recv();
        assert_eq!(&p[..2], [0, 5], "not an ERROR: {p:?}");
        let code = u16::from_be_bytes([p[2], p[3]]);
        let text = String::from_utf8_lossy(&p[4..])
            .trim_end_matches('\0')
            .to_string();
        (code, text)
    }
    /// Expects DATA `block` from a transfer ID other than the listener's: the ID.
    fn data(&self, server: &TftpServer, block: u16) -> SocketAddr {
        let (from, p) = self.recv();
        assert_eq!(&p[..4], [0, 3, (block >> 8) as u8, block as u8], "{p:?}");
        assert_ne!(from, server.local_addr(), "the transfer has its own port");
        assert_eq!(from.ip(), server.local_addr().ip());
        from
    }
}

fn ack(block: u16) -> [u8; 4] {
    [0, 4, (block >> 8) as u8, block as u8]
}

/// 0 bytes, an exact multiple of both block sizes (512 × 367 = 1468 × 128), and ~3 MB, each
/// at windowsize 1 and 4 and blksize 512 and 1468: byte-identical, and the size announced.
#[test]
fn own_client_gets_identical_files_at_each_blksize_and_windowsize() {
    let dir = lab("tftpd-own");
    let server = TftpServer::start(config(3, 1000, 5)).unwrap();
    for (i, size) in [0u64, 2 * 187_904, 3_000_601].into_iter().enumerate() {
        let image = dir.join(format!("image{i}"));
        random_file(&image, size, i as u64 + 1);
        server.serve(Some(("ap1g8".into(), image.clone())));
        let want = read_file(&image);
        for blksize in [512, 1468] {
            for windowsize in [1, 4] {
                let t = Instant::now();
                let got = own_fetch(&server, "/ap1g8", blksize, windowsize).unwrap();
                assert!(
                    got.data == want,
                    "size {size}, blksize {blksize}, windowsize {windowsize}: {} bytes differ",
                    got.data.len()
                );
                assert_eq!(got.size, Some(size));
                assert!(t.elapsed() < Duration::from_secs(20));
                assert!(logged(&format!(
                    "(blksize {blksize}, windowsize {windowsize}, {size} bytes)"
                )));
            }
        }
    }
    assert!(common::process::wait_until(Duration::from_secs(3), || {
        server.stats().active == 0
    }));
    let st = server.stats();
    assert_eq!((st.completed, st.failed, st.active), (12, 0, 0), "{st:?}");
    assert!(st.bytes_sent >= 4 * (2 * 187_904 + 3_000_601), "{st:?}");
    assert!(logged("TFTP: sent ap1g8 to 127.0.0.1:"));
    assert!(logged(": 3000601 bytes in "));
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Debian's atftp, without options and with blksize, tsize and windowsize.
#[test]
fn atftp_gets_identical_files() {
    let dir = lab("tftpd-atftp");
    let image = dir.join("image");
    random_file(&image, 1_000_001, 7);
    let server = serving(config(3, 1000, 5), &image);
    let port = server.local_addr().port().to_string();
    let cases: [&[&str]; 3] = [
        &[],
        &["--option", "blksize 1024", "--option", "tsize"],
        &["--option", "blksize 1468", "--option", "windowsize 4"],
    ];
    for (i, extra) in cases.into_iter().enumerate() {
        let out = dir.join(format!("out{i}"));
        let mut args = vec!["--get", "-r", "ap1g8", "-l", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["127.0.0.1", &port]);
        let r = run("atftp", &args, &dir);
        assert!(r.status.success(), "atftp {args:?}: {r:?}");
        assert!(read_file(&out) == read_file(&image), "atftp {args:?}");
    }
    assert!(logged("(blksize 512, windowsize 1, 1000001 bytes)"));
    assert!(logged("(blksize 1024, windowsize 1, 1000001 bytes)"));
    assert!(logged("(blksize 1468, windowsize 4, 1000001 bytes)"));
    // A wrong name: atftp fails and says why.
    let out = dir.join("wrong");
    let args = [
        "--get",
        "-r",
        "ap1g6",
        "-l",
        out.to_str().unwrap(),
        "127.0.0.1",
        &port,
    ];
    let r = run("atftp", &args, &dir);
    assert!(!r.status.success(), "{r:?}");
    let text = String::from_utf8_lossy(&r.stderr).to_string() + &String::from_utf8_lossy(&r.stdout);
    assert!(text.contains("File not found"), "{text}");
    assert_eq!(server.stats().completed, 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// tftp-hpa's client (RFC 1350, no options): binary mode works, netascii is refused.
#[test]
fn tftp_hpa_gets_identical_files() {
    let dir = lab("tftpd-hpa-client");
    let image = dir.join("image");
    random_file(&image, 512 * 1000, 8); // a multiple of 512: the empty final block
    let server = serving(config(3, 1000, 5), &image);
    let port = server.local_addr().port().to_string();
    let out = dir.join("out");
    let tftp = |mode: &str, out: &Path| {
        let args = ["-m", mode, "127.0.0.1", &port, "-c", "get", "ap1g8"];
        let mut args = args.to_vec();
        args.push(out.to_str().unwrap());
        run("tftp", &args, &dir)
    };
    let r = tftp("binary", &out);
    assert!(r.status.success(), "{r:?}");
    assert!(read_file(&out) == read_file(&image));
    assert!(logged("(blksize 512, windowsize 1, 512000 bytes)"));

    let r = tftp("ascii", &dir.join("out2"));
    let text = String::from_utf8_lossy(&r.stderr).to_string() + &String::from_utf8_lossy(&r.stdout);
    assert!(text.contains("only octet mode is served"), "{r:?}");
    assert!(logged("only octet mode is served, not netascii"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Three transfers held open by clients that never acknowledge: a fourth request gets error 0
/// "server busy (3 transfers)"; once one of the three ends, it is served.
#[test]
fn a_fourth_transfer_is_refused_busy_until_one_ends() {
    let dir = lab("tftpd-busy");
    let image = dir.join("image");
    random_file(&image, 100_000, 9);
    let server = serving(config(3, 1000, 5), &image);
    let holders: Vec<(Raw, SocketAddr)> = (0..3)
        .map(|_| {
            let r = Raw::new();
            r.rrq(&server, "ap1g8");
            let tid = r.data(&server, 1);
            (r, tid)
        })
        .collect();
    assert_eq!(server.stats().active, 3);

    let fourth = Raw::new();
    fourth.rrq(&server, "ap1g8");
    assert_eq!(fourth.error(), (0, "server busy (3 transfers)".into()));
    assert!(logged(&format!(
        "TFTP: refused ap1g8 to 127.0.0.1:{}: server busy (3 transfers)",
        fourth.port()
    )));
    let e = own_fetch(&server, "/ap1g8", 1468, 4).unwrap_err();
    assert_eq!(
        e.kind,
        FetchErrorKind::Refused("server busy (3 transfers)".into())
    );

    // One holder gives up (its client sends an ERROR): room for one.
    let (r, tid) = &holders[0];
    r.send(*tid, b"\0\x05\0\0cancelled\0");
    assert!(common::process::wait_until(Duration::from_secs(3), || {
        server.stats().active == 2
    }));
    assert!(logged(&format!(
        "to 127.0.0.1:{} ended by the client: error 0 (cancelled)",
        r.port()
    )));
    let got = own_fetch(&server, "/ap1g8", 1468, 4).unwrap();
    assert!(got.data == read_file(&image));
    // The server counts it once the last ACK is in.
    assert!(common::process::wait_until(Duration::from_secs(3), || {
        server.stats().completed == 1
    }));
    let st = server.stats();
    assert_eq!(
        (st.refused_busy, st.completed, st.failed),
        (2, 1, 1),
        "{st:?}"
    );
    drop(holders);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Not ready, a wrong name, a path, and a write request: each refused with its error.
#[test]
fn refusals_say_why() {
    let dir = lab("tftpd-refusals");
    let image = dir.join("image");
    random_file(&image, 1000, 10);
    let server = TftpServer::start(config(3, 1000, 5)).unwrap();

    let e = own_fetch(&server, "/ap1g8", 1468, 1).unwrap_err();
    assert_eq!(e.kind, FetchErrorKind::Refused("image not ready".into()));
    assert!(logged("refused /ap1g8 to 127.0.0.1:"));
    assert!(logged(": image not ready"));

    server.serve(Some(("ap1g8".into(), image.clone())));
    for path in ["/Wrong-Path/ap1g8", "/ap1g6", "/../ap1g8"] {
        let e = own_fetch(&server, path, 1468, 1).unwrap_err();
        assert_eq!(e.kind, FetchErrorKind::NotFound, "{path}");
    }
    let raw = Raw::new();
    raw.rrq(&server, "../ap1g8");
    assert_eq!(raw.error(), (1, "File not found".into()));
    raw.send(server.local_addr(), b"\0\x02ap1g8\0octet\0");
    assert_eq!(raw.error().0, 2);
    assert!(logged(&format!(
        "TFTP: refused ap1g8 to 127.0.0.1:{}: Access violation",
        raw.port()
    )));
    // The name as given works, with or without the leading slash.
    raw.rrq(&server, "ap1g8");
    raw.data(&server, 1);
    assert!(own_fetch(&server, "/ap1g8", 1468, 1).unwrap().data == read_file(&image));

    // Served no longer: not ready again.
    server.serve(None);
    let e = own_fetch(&server, "/ap1g8", 1468, 1).unwrap_err();
    assert_eq!(e.kind, FetchErrorKind::Refused("image not ready".into()));
    assert_eq!(server.stats().refused, 7);
    let _ = std::fs::remove_dir_all(&dir);
}

/// stop() ends the transfers (their clients are told) and frees the port for a new server.
#[test]
fn stop_ends_transfers_and_frees_the_port() {
    let dir = lab("tftpd-stop");
    let image = dir.join("image");
    random_file(&image, 100_000, 11);
    let server = serving(config(3, 1000, 5), &image);
    let addr = server.local_addr();
    let raw = Raw::new();
    raw.rrq(&server, "ap1g8");
    let tid = raw.data(&server, 1);
    let t = Instant::now();
    server.stop();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The DATA 1 retransmission may come first; then the ERROR.
    let mut texts = Vec::new();
    loop {
        let (from, p) = raw.recv();
        assert_eq!(from, tid);
        if p[1] == 5 {
            texts.push(String::from_utf8_lossy(&p[4..p.len() - 1]).to_string());
            break;
        }
    }
    assert_eq!(texts, ["server stopping"]);
    assert!(logged(&format!(
        "TFTP: transfer of ap1g8 to 127.0.0.1:{} stopped: server stopping",
        raw.port()
    )));

    let again = serving(
        TftpdConfig {
            bind: addr,
            ..config(3, 1000, 5)
        },
        &image,
    );
    assert_eq!(again.local_addr(), addr);
    assert!(own_fetch(&again, "/ap1g8", 512, 1).unwrap().data == read_file(&image));
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The agent replaces the image while a transfer runs: the transfer finishes with the file it
/// opened; the next one gets the new file.
#[test]
fn a_file_replaced_mid_transfer_still_arrives_whole() {
    let dir = lab("tftpd-replaced");
    let image = dir.join("image");
    random_file(&image, 3_000_601, 12);
    let want = read_file(&image);
    let server = serving(config(3, 1000, 5), &image);
    let img = image.clone();
    let mut s = sink();
    s.on_begin = Some(Box::new(move || {
        std::fs::remove_file(&img).unwrap();
        random_file(&img, 1000, 13);
    }));
    let n = wtpd::fetch::tftp::fetch(&url(&server, "/ap1g8"), &opts(512, 1), &mut s).unwrap();
    assert_eq!(n, 3_000_601);
    assert!(s.data == want);
    // Removed and not replaced: the next request is refused, the running one unaffected.
    let got = own_fetch(&server, "/ap1g8", 512, 1).unwrap();
    assert_eq!(got.data.len(), 1000);
    let mut s = sink();
    let img = image.clone();
    s.on_begin = Some(Box::new(move || std::fs::remove_file(&img).unwrap()));
    wtpd::fetch::tftp::fetch(&url(&server, "/ap1g8"), &opts(1468, 4), &mut s).unwrap();
    assert_eq!(s.data.len(), 1000);
    let e = own_fetch(&server, "/ap1g8", 512, 1).unwrap_err();
    assert_eq!(e.kind, FetchErrorKind::NotFound);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that stops answering: the block is sent again after each timeout, then the
/// transfer gives up and says so.
#[test]
fn a_silent_client_times_out_after_the_retries() {
    let dir = lab("tftpd-silent");
    let image = dir.join("image");
    random_file(&image, 10_000, 14);
    let server = serving(config(3, 200, 2), &image);
    let raw = Raw::new();
    raw.rrq(&server, "ap1g8");
    let t = Instant::now();
    let tid = raw.data(&server, 1);
    assert_eq!(raw.data(&server, 1), tid);
    assert_eq!(raw.data(&server, 1), tid);
    assert_eq!(raw.error(), (0, "Timed out".into()));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(logged(&format!(
        "TFTP: transfer of ap1g8 to 127.0.0.1:{} timed out after 2 retransmissions",
        raw.port()
    )));
    assert!(common::process::wait_until(Duration::from_secs(2), || {
        server.stats().active == 0
    }));
    let st = server.stats();
    assert_eq!((st.failed, st.retransmissions), (1, 2), "{st:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A packet to a transfer's port from another port gets error 5; the transfer goes on.
#[test]
fn another_transfer_id_gets_error_5() {
    let dir = lab("tftpd-tid");
    let image = dir.join("image");
    random_file(&image, 700, 15);
    let server = serving(config(3, 1000, 5), &image);
    let raw = Raw::new();
    raw.rrq(&server, "ap1g8");
    let tid = raw.data(&server, 1);
    let stranger = Raw::new();
    stranger.send(tid, &ack(1));
    assert_eq!(stranger.error(), (5, "Unknown transfer ID".into()));
    raw.send(tid, &ack(1));
    raw.data(&server, 2);
    raw.send(tid, &ack(2));
    assert!(common::process::wait_until(Duration::from_secs(2), || {
        server.stats().completed == 1
    }));
    let _ = std::fs::remove_dir_all(&dir);
}
