//! `wtpd fetch URL` against the real servers on loopback: Debian's tftpd-hpa, OpenSSH's sshd
//! (internal-sftp in a chroot) and nginx over HTTPS. For each: the image lands in the AP's
//! download directory identical to the server's file; a wrong path gives the seed's
//! `No such file or directory` and leaves no partial file; a stopped server gives `Timed out`.
//! Then the client details: TFTP block-number roll-over, a windowsize the server does not
//! offer, TLS and SSH trust refusals. A missing server binary fails the test.

mod common;
mod fetch_common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use fetch_common::*;
use wtpd::fetch::{fetch_to_store, FetchErrorKind, FetchOptions, FetchUrl};
use wtpd::image::store::FileStore;
use wtpd_harness::lab::{self, LabServer};

const IMAGE_SIZE: u64 = 2 * 1024 * 1024 + 601;

/// A wtpd.toml whose download directory is DIR/tmp, for a board without A/B slots.
fn wtpd_config(dir: &Path) -> PathBuf {
    let port = wtpd_harness::demo::free_port_pair().unwrap();
    wtpd_harness::demo::write_lab(dir, wtpd_harness::demo::DemoDtls::Certificate, port).unwrap();
    let p = dir.join("wtpd.toml");
    // A board without A/B slots: `wtpd fetch` then leaves the image in the download directory
    // (these tests are about the fetch; the install after it is tested by the demo).
    let text = read(&p).replace("board = \"board.toml\"\n", "");
    std::fs::write(
        &p,
        format!("{text}\n[software]\nversion = \"17.3.3.26\"\n\n[download]\ndir = \"tmp\"\nrequired_bytes = 1000000\n\n[fetch]\ntimeout = 1\nretries = 2\n"),
    )
    .unwrap();
    p
}

struct Case {
    dir: PathBuf,
    config: PathBuf,
    image: PathBuf,
    server: LabServer,
    good: String,
    wrong: String,
    extra: Vec<String>,
}

fn fetch(c: &Case, url: &str) -> (bool, String) {
    let mut args = vec!["fetch", url, "--config", c.config.to_str().unwrap()];
    args.extend(c.extra.iter().map(String::as_str));
    let out = run(wtpd(), &args, &c.dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The three cases of the issue, in the seed's words.
fn correct_wrong_stopped(mut c: Case, scheme_shown: &str) {
    let part = c.dir.join("tmp").join("part.tar");
    let (ok, log) = fetch(&c, &c.good.clone());
    assert!(ok, "{log}");
    assert_eq!(sha256(&part), sha256(&c.image), "{log}");
    let want = format!(
        "fetched to {} (sha256 {})",
        part.display(),
        wtpd::image::download::hex(&sha256(&c.image))
    );
    assert!(log.contains(&want), "no '{want}' in:\n{log}");
    assert!(log.contains("upgrade.sh: /tmp space: OK"), "{log}");

    let (ok, log) = fetch(&c, &c.wrong.clone());
    assert!(!ok, "{log}");
    let want = format!(
        "Failed to download file {scheme_shown}/Wrong-Path/ap1g8: No such file or directory"
    );
    assert!(log.contains(&want), "no '{want}' in:\n{log}");
    assert!(!part.exists(), "a failed fetch left {}", part.display());

    c.server.stop();
    let t = Instant::now();
    let (ok, log) = fetch(&c, &c.good.clone());
    assert!(!ok, "{log}");
    let url = c.good.replace(
        &format!("{}@", c.server.user.clone().unwrap_or_default()),
        "*****@",
    );
    let want = format!("Failed to download file {url}: Timed out");
    assert!(log.contains(&want), "no '{want}' in:\n{log}");
    assert!(
        t.elapsed().as_secs() < 20,
        "gave up after {:?}",
        t.elapsed()
    );
    assert!(!part.exists());
    let _ = std::fs::remove_dir_all(&c.dir);
}

#[test]
fn wtpd_fetch_from_tftpd_hpa() {
    let dir = lab("wtpd-tftp");
    let config = wtpd_config(&dir);
    let root = dir.join("srv");
    let image = root.join("EWC/17_9_4a/ap1g8");
    random_file(&image, IMAGE_SIZE, 1);
    let server = lab::tftpd(&root, &dir.join("tftpd")).expect("tftpd-hpa");
    let base = format!("tftp://127.0.0.1:{}", server.port);
    let c = Case {
        good: format!("{base}/EWC/17_9_4a/ap1g8"),
        wrong: format!("{base}/Wrong-Path/ap1g8"),
        dir,
        config,
        image,
        server,
        extra: vec![],
    };
    correct_wrong_stopped(c, &base);
}

#[test]
fn wtpd_fetch_from_sshd_sftp() {
    let dir = lab("wtpd-sftp");
    let config = wtpd_config(&dir);
    let images = dir.join("images");
    random_file(&images.join("ap1g8"), IMAGE_SIZE, 2);
    let server = lab::sshd(&images, "images", &dir.join("sshd")).expect("sshd");
    let image = server.root.join("images/ap1g8");
    let user = server.user.clone().unwrap();
    let base = format!("sftp://{user}@127.0.0.1:{}", server.port);
    let c = Case {
        good: format!("{base}/images/ap1g8"),
        wrong: format!("{base}/Wrong-Path/ap1g8"),
        extra: vec![
            "--key".into(),
            server.client_key.clone().unwrap().display().to_string(),
            "--known-hosts".into(),
            server.known_hosts.clone().unwrap().display().to_string(),
        ],
        dir,
        config,
        image,
        server,
    };
    let shown = format!("sftp://*****@127.0.0.1:{}", c.server.port);
    correct_wrong_stopped(c, &shown);
}

/// Password login, as the seed's controller profile has it (`user` and `password`): sshd runs
/// with a lab account that has a password, then the correct password fetches the image, a wrong
/// one is refused with the reason and leaves nothing behind.
#[test]
fn wtpd_fetch_from_sshd_sftp_with_a_password() {
    let dir = lab("wtpd-sftp-password");
    let config = wtpd_config(&dir);
    let images = dir.join("images");
    random_file(&images.join("ap1g8"), IMAGE_SIZE, 4);
    let password = "Lab-Passw0rd";
    let server = lab::sshd_password(&images, "images", &dir.join("sshd"), password)
        .expect("sshd with a password account");
    let user = server.user.clone().unwrap();
    let url = format!("sftp://{user}@127.0.0.1:{}/images/ap1g8", server.port);
    let kh = server.known_hosts.clone().unwrap().display().to_string();
    let cfg = config.to_str().unwrap();
    let part = dir.join("tmp").join("part.tar");

    let fetch_with = |pw: &str| {
        let args = [
            "fetch",
            &url,
            "--config",
            cfg,
            "--password",
            pw,
            "--known-hosts",
            &kh,
        ];
        let out = run(wtpd(), &args, &dir);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), log)
    };

    let (ok, log) = fetch_with(password);
    assert!(ok, "{log}");
    assert_eq!(
        sha256(&part),
        sha256(&server.root.join("images/ap1g8")),
        "{log}"
    );
    assert!(
        !log.contains(password),
        "the password must never be logged:\n{log}"
    );
    let sshd_log = read(&server.work.join("sshd.log"));
    assert!(
        sshd_log.contains(&format!("Accepted password for {user}")),
        "sshd did not log a password login:\n{sshd_log}"
    );

    std::fs::remove_file(&part).unwrap();
    let (ok, log) = fetch_with("wrong");
    assert!(!ok, "{log}");
    assert!(
        log.contains("Authentication failed: the server refused the login (tried password)"),
        "no clear refusal in:\n{log}"
    );
    assert!(!part.exists(), "a refused login left {}", part.display());
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wtpd_fetch_from_nginx_https() {
    let dir = lab("wtpd-https");
    let config = wtpd_config(&dir);
    let root = dir.join("www");
    let image = root.join("EWC/17_9_4a/ap1g8");
    random_file(&image, IMAGE_SIZE, 3);
    let server = lab::nginx(&root, &dir.join("nginx")).expect("nginx");
    let base = format!("https://127.0.0.1:{}", server.port);
    let c = Case {
        good: format!("{base}/EWC/17_9_4a/ap1g8"),
        wrong: format!("{base}/Wrong-Path/ap1g8"),
        extra: vec![
            "--ca".into(),
            server.ca_file.clone().unwrap().display().to_string(),
        ],
        dir,
        config,
        image,
        server,
    };
    correct_wrong_stopped(c, &base);
}

fn store(dir: &Path) -> FileStore {
    FileStore::new(dir.join("tmp"), "part.tar", 0)
}

/// Block numbers wrap after 65535 (a 70 MB image at 1024-byte blocks passes them), and a
/// windowsize tftpd-hpa does not offer falls back to lock-step.
#[test]
fn tftp_block_numbers_roll_over_and_windowsize_falls_back() {
    let dir = lab("tftp-rollover");
    let root = dir.join("srv");
    // 65,536 blocks of 64 bytes and a bit: block numbers 65535 -> 0 -> 1 -> 2.
    let size = 64 * 65_536 + 100;
    random_file(&root.join("big"), size, 4);
    let server = lab::tftpd(&root, &dir.join("tftpd")).expect("tftpd-hpa");
    let url = FetchUrl::parse(&format!("tftp://127.0.0.1:{}/big", server.port)).unwrap();
    let opts = FetchOptions {
        blksize: 64,
        windowsize: 8,
        timeout: std::time::Duration::from_secs(1),
        ..FetchOptions::default()
    };
    let mut s = store(&dir);
    let r = fetch_to_store(&url, &opts, &mut s).unwrap();
    assert_eq!(r.bytes, size);
    assert_eq!(r.sha256, sha256(&root.join("big")));
    assert_eq!(sha256(&dir.join("tmp/part.tar")), r.sha256);
    let _ = std::fs::remove_dir_all(&dir);
}

/// HTTPS refuses a server whose chain does not reach the configured CA, and says so.
#[test]
fn https_refuses_an_unknown_certificate_authority() {
    let dir = lab("https-ca");
    let root = dir.join("www");
    random_file(&root.join("ap1g8"), 1000, 5);
    let server = lab::nginx(&root, &dir.join("nginx")).expect("nginx");
    // A second server brings a different lab CA.
    let other = lab::nginx(&root, &dir.join("nginx2")).expect("nginx");
    let url = FetchUrl::parse(&format!("https://127.0.0.1:{}/ap1g8", server.port)).unwrap();
    let opts = FetchOptions {
        ca_file: other.ca_file.clone(),
        timeout: std::time::Duration::from_secs(2),
        ..FetchOptions::default()
    };
    let e = fetch_to_store(&url, &opts, &mut store(&dir)).unwrap_err();
    assert!(matches!(e.kind, FetchErrorKind::Tls(_)), "{e}");
    // Both lab CAs carry the same name: webpki finds the other CA and its signature fails.
    assert!(
        e.to_string().contains("TLS: invalid peer certificate"),
        "{e}"
    );
    assert!(!dir.join("tmp/part.tar").exists());
    // With its own CA, the same URL works.
    let opts = FetchOptions {
        ca_file: server.ca_file.clone(),
        ..opts
    };
    let r = fetch_to_store(&url, &opts, &mut store(&dir)).unwrap();
    assert_eq!(r.bytes, 1000);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SFTP refuses a host key that is not the known one, and a client key the server does not
/// know.
#[test]
fn sftp_checks_the_host_key_and_the_login() {
    let dir = lab("sftp-trust");
    let images = dir.join("images");
    random_file(&images.join("ap1g8"), 1000, 6);
    let server = lab::sshd(&images, "images", &dir.join("sshd")).expect("sshd");
    let other = lab::sshd(&images, "images", &dir.join("sshd2")).expect("sshd");
    let url = FetchUrl::parse(&format!(
        "sftp://{}@127.0.0.1:{}/images/ap1g8",
        server.user.clone().unwrap(),
        server.port
    ))
    .unwrap();
    let good = FetchOptions {
        key_file: server.client_key.clone(),
        known_hosts: server.known_hosts.clone(),
        timeout: std::time::Duration::from_secs(3),
        ..FetchOptions::default()
    };
    let r = fetch_to_store(&url, &good, &mut store(&dir)).unwrap();
    assert_eq!(r.bytes, 1000);

    // The other server's known_hosts lists another key for another port.
    let e = fetch_to_store(
        &url,
        &FetchOptions {
            known_hosts: other.known_hosts.clone(),
            ..good.clone()
        },
        &mut store(&dir),
    )
    .unwrap_err();
    assert!(matches!(e.kind, FetchErrorKind::HostKey(_)), "{e}");
    // A pinned fingerprint that differs.
    let e = fetch_to_store(
        &url,
        &FetchOptions {
            known_hosts: None,
            host_key_sha256: Some("SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
            ..good.clone()
        },
        &mut store(&dir),
    )
    .unwrap_err();
    assert!(matches!(e.kind, FetchErrorKind::HostKey(_)), "{e}");
    // The other server's client key is not authorized here.
    let e = fetch_to_store(
        &url,
        &FetchOptions {
            key_file: other.client_key.clone(),
            ..good.clone()
        },
        &mut store(&dir),
    )
    .unwrap_err();
    assert!(matches!(e.kind, FetchErrorKind::Auth(_)), "{e}");
    assert!(!dir.join("tmp/part.tar").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
