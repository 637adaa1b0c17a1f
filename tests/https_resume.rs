//! Out-of-band HTTPS image downloads (issue 14) survive a WAN drop: the agent's client
//! (`wtpd::fetch::fetch`) against acsim's HTTPS image server (`wtpd_harness::https`) and
//! against nginx, through a TCP proxy that cuts the connection after 90% of the first answer.
//! The download must resume with a Range request instead of starting again, end byte-identical,
//! and refuse to continue with a file that changed on the server. Also certificate pinning.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use openssl::hash::MessageDigest;
use wtpd::fetch::{fetch, FetchErrorKind, FetchOptions, FetchUrl, Sink};
use wtpd_harness::https::HttpsImageServer;
use wtpd_harness::pki::{issue, CertSpec, Eku, Issued, KeyKind};

/// The log lines of the whole test binary (the tests run in parallel; each looks for lines
/// with its own numbers).
static LINES: Mutex<String> = Mutex::new(String::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let line = format!("{} {}\n", r.level(), r.args());
            eprint!("{line}");
            LINES.lock().unwrap().push_str(&line);
        }
    }
    fn flush(&self) {}
}

fn logs() -> String {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = log::set_logger(&Capture);
        log::set_max_level(log::LevelFilter::Info);
    });
    LINES.lock().unwrap().clone()
}

fn lab(name: &str) -> PathBuf {
    logs();
    let d = std::env::temp_dir().join(format!("wtpd-https-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("images")).unwrap();
    d
}

fn random_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; size];
    wtpd::rng::Rng::new(seed).fill(&mut v);
    v
}

/// A lab CA and a server certificate for localhost and 127.0.0.1.
fn server_cert() -> (Issued, Issued) {
    let ca = issue(&CertSpec::ca("https resume test CA", KeyKind::EcP256), None).unwrap();
    let mut spec = CertSpec::leaf("localhost", KeyKind::EcP256, &[Eku::ServerAuth]);
    spec.ips = vec![std::net::IpAddr::from([127, 0, 0, 1])];
    let leaf = issue(&spec, Some(&ca)).unwrap();
    (ca, leaf)
}

fn start_server(root: &Path, leaf: &Issued) -> HttpsImageServer {
    HttpsImageServer::start(
        "127.0.0.1:0".parse().unwrap(),
        root.to_path_buf(),
        &leaf.cert.to_pem().unwrap(),
        &leaf.key.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap()
}

#[derive(Default)]
struct VecSink {
    size: Option<Option<u64>>,
    data: Vec<u8>,
}

impl Sink for VecSink {
    fn begin(&mut self, size: Option<u64>) -> Result<(), FetchErrorKind> {
        assert!(self.size.is_none(), "begin called twice");
        self.size = Some(size);
        Ok(())
    }
    fn data(&mut self, b: &[u8]) -> Result<(), FetchErrorKind> {
        self.data.extend_from_slice(b);
        Ok(())
    }
}

/// A TCP proxy standing in for the WAN: it forwards both ways and, on its first connection
/// only, cuts both sides after forwarding `cut_after` bytes from the server (running `on_cut`
/// first). With `down_after_cut`, later connections are closed as soon as they arrive (the
/// link stays down).
struct CutProxy {
    addr: SocketAddr,
    /// Bytes forwarded from the server, per connection.
    down: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

type Hook = Box<dyn FnOnce() + Send>;

fn cut_proxy(upstream: SocketAddr, cut_after: u64, on_cut: Hook, down_after_cut: bool) -> CutProxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let down = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (d, s) = (down.clone(), stop.clone());
    let hook = Arc::new(Mutex::new(Some(on_cut)));
    std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            let client = match listener.accept() {
                Ok((c, _)) => c,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            client.set_nonblocking(false).unwrap();
            let index = {
                let mut d = d.lock().unwrap();
                d.push(0);
                d.len() - 1
            };
            if index > 0 && down_after_cut {
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
            let server = TcpStream::connect(upstream).unwrap();
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            // Client to server, as it comes.
            std::thread::spawn(move || {
                let (mut from, mut to) = (c2, s2);
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(Shutdown::Write);
            });
            let (d, hook) = (d.clone(), hook.clone());
            std::thread::spawn(move || {
                let (mut from, mut to) = (server, client);
                let mut buf = vec![0u8; 16 * 1024];
                let mut sent = 0u64;
                loop {
                    let n = match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let n = if index == 0 {
                        (n as u64).min(cut_after - sent) as usize
                    } else {
                        n
                    };
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n as u64;
                    d.lock().unwrap()[index] = sent;
                    if index == 0 && sent >= cut_after {
                        if let Some(h) = hook.lock().unwrap().take() {
                            h();
                        }
                        break;
                    }
                }
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
            });
        }
    });
    CutProxy { addr, down, stop }
}

fn options(ca: &Path) -> FetchOptions {
    FetchOptions {
        ca_file: Some(ca.to_path_buf()),
        timeout: Duration::from_secs(5),
        retries: 3,
        ..FetchOptions::default()
    }
}

/// Waits until `f` holds (the server notes a response's end when its body is dropped).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(5), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn resumes_from_acsims_https_server_after_a_cut_at_90_percent() {
    let dir = lab("acsim");
    let size = 4 * 1024 * 1024 + 12_345;
    let image = random_bytes(size, 14);
    std::fs::write(dir.join("images/ap1g8"), &image).unwrap();
    let (ca, leaf) = server_cert();
    let ca_file = ca.write_cert(&dir, "ca").unwrap();
    let server = start_server(&dir.join("images"), &leaf);
    let cut = size as u64 * 9 / 10;
    let proxy = cut_proxy(server.local_addr(), cut, Box::new(|| {}), false);
    let url = FetchUrl::parse(&format!("https://127.0.0.1:{}/ap1g8", proxy.addr.port())).unwrap();

    let mut sink = VecSink::default();
    let n = fetch(&url, &options(&ca_file), &mut sink).unwrap();
    assert_eq!(n, size as u64);
    assert_eq!(sink.size, Some(Some(size as u64)));
    assert!(sink.data == image, "the download differs from the file");

    // The server saw the whole GET, then one for the rest.
    eventually("both responses end", || {
        server.requests().iter().filter(|r| r.done).count() == 2
    });
    let recs = server.requests();
    assert_eq!(recs.len(), 2, "{recs:#?}");
    assert_eq!((recs[0].status, recs[0].range.as_deref()), (200, None));
    let second = &recs[1];
    let from: u64 = second
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("{second:?}"));
    assert_eq!((second.method.as_str(), second.status), ("GET", 206));
    assert!(
        from > size as u64 * 85 / 100 && from <= cut,
        "resumed at {from} of {size}"
    );
    assert_eq!(second.bytes, size as u64 - from);
    // With the first answer's ETag.
    assert!(
        second
            .if_range
            .as_deref()
            .is_some_and(|v| v.starts_with('"')),
        "{second:?}"
    );
    // Not from zero: what the server sent, and what crossed the "WAN".
    assert!(
        server.bytes_sent() < size as u64 * 115 / 100,
        "server sent {} for {size}",
        server.bytes_sent()
    );
    let wan: u64 = proxy.down.lock().unwrap().iter().sum();
    assert!(wan < size as u64 * 105 / 100, "{wan} bytes for {size}");

    let log = logs();
    for want in [
        format!("HTTPS: connection lost at {from} of {size} bytes ("),
        format!("): resuming with Range bytes={from}-"),
        format!("HTTPS: resumed at {from} (206)"),
        "HTTPS: GET /ap1g8 from 127.0.0.1:".to_string(),
        format!(" range bytes={from}- -> 206 ({} bytes)", size as u64 - from),
    ] {
        assert!(log.contains(&want), "no '{want}' in:\n{log}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resumes_from_nginx_after_a_cut_at_90_percent() {
    let dir = lab("nginx");
    let size = 4 * 1024 * 1024 + 777;
    let image = random_bytes(size, 15);
    std::fs::write(dir.join("images/ap1g8"), &image).unwrap();
    let server = wtpd_harness::lab::nginx(&dir.join("images"), &dir.join("nginx")).expect("nginx");
    let cut = size as u64 * 9 / 10;
    let upstream: SocketAddr = ([127, 0, 0, 1], server.port).into();
    let proxy = cut_proxy(upstream, cut, Box::new(|| {}), false);
    let url = FetchUrl::parse(&format!("https://127.0.0.1:{}/ap1g8", proxy.addr.port())).unwrap();

    let mut sink = VecSink::default();
    let n = fetch(&url, &options(server.ca_file.as_ref().unwrap()), &mut sink).unwrap();
    assert_eq!(n, size as u64);
    assert!(sink.data == image, "the download differs from the file");
    assert_eq!(proxy.down.lock().unwrap().len(), 2, "two connections");

    // nginx's access log (combined format): the GET, then a 206 for the rest.
    let access = server.work.join("access.log");
    let gets = || -> Vec<(u16, u64)> {
        std::fs::read_to_string(&access)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let rest = l.split("\"GET /ap1g8 HTTP/1.1\" ").nth(1)?;
                let mut f = rest.split_whitespace();
                Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
            })
            .collect()
    };
    eventually("nginx logs both requests", || gets().len() == 2);
    let g = gets();
    assert_eq!(g[0].0, 200, "{g:?}");
    assert_eq!(g[1].0, 206, "{g:?}");
    let from = size as u64 - g[1].1;
    assert!(
        from > size as u64 * 85 / 100 && from <= cut,
        "resumed at {from} of {size}"
    );
    let wan: u64 = proxy.down.lock().unwrap().iter().sum();
    assert!(wan < size as u64 * 105 / 100, "{wan} bytes for {size}");
    let log = logs();
    for want in [
        format!("HTTPS: connection lost at {from} of {size} bytes ("),
        format!("HTTPS: resumed at {from} (206)"),
    ] {
        assert!(log.contains(&want), "no '{want}' in:\n{log}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_image_changed_before_the_resume_fails_instead_of_mixing_two_files() {
    let dir = lab("changed");
    let size = 2 * 1024 * 1024 + 99;
    let old = random_bytes(size, 16);
    let new = random_bytes(size, 17);
    let path = dir.join("images/ap1g8");
    std::fs::write(&path, &old).unwrap();
    let (ca, leaf) = server_cert();
    let ca_file = ca.write_cert(&dir, "ca").unwrap();
    let server = start_server(&dir.join("images"), &leaf);
    let cut = size as u64 * 9 / 10;
    // While the link is down, a new image of the same size replaces the old one.
    let (p, n2) = (path.clone(), new.clone());
    let replace = Box::new(move || {
        let tmp = p.with_extension("new");
        std::fs::write(&tmp, &n2).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
    });
    let proxy = cut_proxy(server.local_addr(), cut, replace, false);
    let url = FetchUrl::parse(&format!("https://127.0.0.1:{}/ap1g8", proxy.addr.port())).unwrap();

    let mut sink = VecSink::default();
    let e = fetch(&url, &options(&ca_file), &mut sink).unwrap_err();
    assert!(matches!(e.kind, FetchErrorKind::Refused(_)), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("HTTP 200 OK to the resume at")
            && text.contains("the image changed on the server"),
        "{text}"
    );
    // What reached the sink is the old file's start, nothing of the new one.
    let got = sink.data.len();
    assert!(got > size * 85 / 100 && got < size, "{got}");
    assert!(sink.data[..] == old[..got]);
    let recs = server.requests();
    assert_eq!(recs.len(), 2, "{recs:#?}");
    assert_eq!(recs[1].range, Some(format!("bytes={got}-")));
    assert_eq!(recs[1].status, 200, "a new ETag: the whole new file");
    assert_ne!(recs[1].if_range, None);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gives_up_after_the_retries_when_the_link_stays_down() {
    let dir = lab("down");
    let size = 1024 * 1024;
    std::fs::write(dir.join("images/ap1g8"), random_bytes(size, 18)).unwrap();
    let (ca, leaf) = server_cert();
    let ca_file = ca.write_cert(&dir, "ca").unwrap();
    let server = start_server(&dir.join("images"), &leaf);
    let proxy = cut_proxy(server.local_addr(), size as u64 / 2, Box::new(|| {}), true);
    let url = FetchUrl::parse(&format!("https://127.0.0.1:{}/ap1g8", proxy.addr.port())).unwrap();
    let mut sink = VecSink::default();
    let t = Instant::now();
    let e = fetch(&url, &options(&ca_file), &mut sink).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // The first connection, then `retries` = 3 attempts to resume.
    assert_eq!(proxy.down.lock().unwrap().len(), 4);
    assert!(matches!(e.kind, FetchErrorKind::Protocol(_)), "{e}");
    assert!(
        e.to_string()
            .contains("Protocol error: sending the request: connection closed early"),
        "{e}"
    );
    assert_eq!(server.requests().len(), 1);
    let got = sink.data.len();
    let log = logs();
    for want in [
        format!("HTTPS: connection lost at {got} of {size} bytes (connection closed)"),
        format!("HTTPS: resuming at {got} failed (connection closed): attempt 1 of 3"),
        format!("HTTPS: resuming at {got} failed (connection closed): attempt 2 of 3"),
    ] {
        assert!(log.contains(&want), "no '{want}' in:\n{log}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_pinned_certificate_needs_no_ca_and_a_wrong_pin_is_refused() {
    let dir = lab("pin");
    std::fs::write(dir.join("images/ap1g8"), random_bytes(100_000, 19)).unwrap();
    // Self-signed, for a name that is not the URL's: only the pin can vouch for it.
    let spec = CertSpec::leaf("elsewhere.example", KeyKind::EcP256, &[Eku::ServerAuth]);
    let leaf = issue(&spec, None).unwrap();
    let server = start_server(&dir.join("images"), &leaf);
    let url = FetchUrl::parse(&format!(
        "https://127.0.0.1:{}/ap1g8",
        server.local_addr().port()
    ))
    .unwrap();
    let digest = leaf.cert.digest(MessageDigest::sha256()).unwrap();
    let mut pin = [0u8; 32];
    pin.copy_from_slice(&digest);
    let opts = FetchOptions {
        pin_sha256: Some(pin),
        timeout: Duration::from_secs(5),
        ..FetchOptions::default()
    };
    let mut sink = VecSink::default();
    assert_eq!(fetch(&url, &opts, &mut sink).unwrap(), 100_000);
    assert!(sink.data == std::fs::read(dir.join("images/ap1g8")).unwrap());

    let mut wrong = pin;
    wrong[0] ^= 1;
    let e = fetch(
        &url,
        &FetchOptions {
            pin_sha256: Some(wrong),
            ..opts.clone()
        },
        &mut VecSink::default(),
    )
    .unwrap_err();
    let hex = wtpd::image::download::hex;
    assert!(matches!(e.kind, FetchErrorKind::Tls(_)), "{e}");
    let want = format!(
        "TLS: invalid peer certificate: certificate pin mismatch: the server's certificate has sha256 {}, pinned {}",
        hex(&pin),
        hex(&wrong)
    );
    assert!(e.to_string().contains(&want), "{e}");
    // Without the pin, the same server is refused (neither its CA nor its name fit).
    let (ca, _) = server_cert();
    let ca_file = ca.write_cert(&dir, "ca").unwrap();
    let e = fetch(&url, &options(&ca_file), &mut VecSink::default()).unwrap_err();
    assert!(matches!(e.kind, FetchErrorKind::Tls(_)), "{e}");
    // Only the server's certificate was ever accepted for a request.
    assert_eq!(server.requests().len(), 1);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
