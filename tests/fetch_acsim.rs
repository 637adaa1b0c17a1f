//! The seed's non-homogeneous network on loopback: acsim fetches the AP's image from a real
//! tftpd-hpa, sshd (internal-sftp) or nginx (HTTPS) and forwards it to wtpd over CAPWAP/DTLS
//! as it arrives. For each server: the upgrade ends with the AP's file identical to the
//! server's (`acsim demo --source ...`); a wrong path gives the seed's
//! `Failed to download file ...: No such file or directory`, `AP Image Download Failed`, the
//! controller's error Result Code at the AP and its retry; a stopped server gives `Timed out`.

mod common;
mod fetch_common;

use std::path::Path;
use std::time::Duration;

use fetch_common::*;
use wtpd::fetch::spool::DownloadMode;
use wtpd_harness::demo::{free_port_pair, prepare_scenario, write_lab, DemoDtls, Scenario};

fn demo_upgrade(source: &str) {
    let dir = lab(&format!("demo-{source}"));
    let out = std::process::Command::new(acsim())
        .args([
            "demo",
            "--dir",
            dir.to_str().unwrap(),
            "--source",
            source,
            "--image-size",
            "3000601",
        ])
        .env("WTPD_BIN", wtpd())
        .output()
        .expect("run acsim demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Result         : OK"), "{stdout}");
    // The AP's file is the server's file (the server's copy is a hard link or copy of it).
    let served = dir.join("server");
    let part = dir.join("tmp/part.tar");
    let server_copy = ["root/images/ap1g8"]
        .iter()
        .map(|p| served.join(p))
        .find(|p| p.exists())
        .unwrap_or_else(|| dir.join("images/ap1g8"));
    assert_eq!(sha256(&part), sha256(&server_copy));
    let alog = read(&dir.join("acsim.log"));
    assert!(
        alog.contains(&format!("Image download started: {source}://")),
        "{alog}"
    );
    // The demo's images are signed bundles around a 3000601-byte rootfs.
    let size = std::fs::metadata(&server_copy).unwrap().len();
    assert!(
        alog.contains(&format!(
            "serving ap1g8 as it arrives ({size} bytes; no Image Information)"
        )),
        "{alog}"
    );
    assert!(
        alog.contains("AP Event: wtp-sim-1 AP Image Download Success"),
        "{alog}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn upgrade_through_tftpd_hpa() {
    demo_upgrade("tftp");
}

#[test]
fn upgrade_through_sshd_sftp() {
    demo_upgrade("sftp");
}

#[test]
fn upgrade_through_nginx_https() {
    demo_upgrade("https");
}

/// A lab whose acsim fetches from a server of `mode`, with `path` as the image folder; the
/// server is stopped first when `stop`. Runs acsim and wtpd and checks the seed's error.
fn failing_fetch(mode: DownloadMode, name: &str, path: &str, stop: bool, error: &str) {
    let dir = lab(name);
    let port = free_port_pair().unwrap();
    write_lab(&dir, DemoDtls::Certificate, port).unwrap();
    prepare_scenario(&dir, Scenario::Upgrade, 200_000).unwrap();
    let (mut server, table) =
        wtpd_harness::lab::serve_lab_images(&dir, mode).expect("image server");
    let table = table.replace("path = \"/images\"", &format!("path = \"{path}\""));
    let ac_toml = dir.join("acsim.toml");
    std::fs::write(
        &ac_toml,
        format!("{}\n{table}version = \"17.9.4.27\"\n", read(&ac_toml)),
    )
    .unwrap();
    if stop {
        server.stop();
    }
    let user = server.user.clone().map(|_| "*****@").unwrap_or("");
    let url = format!(
        "{}://{user}127.0.0.1:{}{path}/ap1g8",
        match mode {
            DownloadMode::Tftp => "tftp",
            DownloadMode::Sftp => "sftp",
            _ => "https",
        },
        server.port
    );
    let want = format!("Failed to download file {url}: {error}");
    let _ac = start(acsim(), &["run", "--config", "acsim.toml"], &dir);
    let alog = dir.join("acsim.log");
    let wlog = dir.join("wtpd.log");
    assert!(
        wait_for(&alog, "listening", Duration::from_secs(10)),
        "{}",
        read(&alog)
    );
    let _wtp = start(wtpd(), &["--config", "wtpd.toml"], &dir);
    assert!(
        wait_for(&alog, &want, Duration::from_secs(60)),
        "no '{want}' in acsim.log:\n{}",
        read(&alog)
    );
    assert!(
        wait_for(
            &alog,
            "AP Event: wtp-sim-1 AP Image Download Failed",
            Duration::from_secs(5)
        ),
        "{}",
        read(&alog)
    );
    // The AP reads the controller's error Result Code, aborts cleanly and tries again.
    assert!(
        wait_for(
            &wlog,
            "AC refused the image request with result code",
            Duration::from_secs(10)
        ),
        "{}",
        read(&wlog)
    );
    assert!(
        wait_count(
            &wlog,
            "Image Data Request sent to",
            2,
            Duration::from_secs(60)
        ),
        "no retry:\n{}",
        read(&wlog)
    );
    // acsim's status names the error.
    let out = run(acsim(), &["status", "--config", "acsim.toml"], &dir);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains(&format!("last error: {want}")), "{status}");
    // Stopped in the middle of its retry, the AP leaves no partial download behind.
    let mut wtp = _wtp;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(wtp.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(10) && wtp.0.try_wait().ok().flatten().is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!dir.join("tmp/part.tar").exists(), "partial download left");
    drop(wtp);
    drop(_ac);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wrong_path_on_tftpd_hpa() {
    failing_fetch(
        DownloadMode::Tftp,
        "wrong-tftp",
        "/Wrong-Path",
        false,
        "No such file or directory",
    );
}

#[test]
fn wrong_path_on_sshd_sftp() {
    failing_fetch(
        DownloadMode::Sftp,
        "wrong-sftp",
        "/Wrong-Path",
        false,
        "No such file or directory",
    );
}

#[test]
fn wrong_path_on_nginx_https() {
    failing_fetch(
        DownloadMode::Https,
        "wrong-https",
        "/Wrong-Path",
        false,
        "No such file or directory",
    );
}

#[test]
fn stopped_tftpd_hpa_times_out() {
    failing_fetch(
        DownloadMode::Tftp,
        "down-tftp",
        "/images",
        true,
        "Timed out",
    );
}

#[test]
fn stopped_sshd_times_out() {
    failing_fetch(
        DownloadMode::Sftp,
        "down-sftp",
        "/images",
        true,
        "Timed out",
    );
}

#[test]
fn stopped_nginx_times_out() {
    failing_fetch(
        DownloadMode::Https,
        "down-https",
        "/images",
        true,
        "Timed out",
    );
}

/// acsim.toml refuses an incomplete profile with a reason.
#[test]
fn profile_refusals_say_why() {
    let dir = lab("profile");
    let port = free_port_pair().unwrap();
    write_lab(&dir, DemoDtls::Psk, port).unwrap();
    let p = dir.join("acsim.toml");
    let base = read(&p);
    for (table, why) in [
        ("[image_download]\nmode = \"tftp\"\n", "server is required"),
        (
            "[image_download]\nmode = \"sftp\"\nserver = \"127.0.0.1\"\n",
            "user is required",
        ),
        (
            "[image_download]\nmode = \"sftp\"\nserver = \"127.0.0.1\"\nuser = \"u\"\n",
            "password or key_file",
        ),
        (
            "[image_download]\nmode = \"ftp\"\nserver = \"127.0.0.1\"\n",
            "unknown variant",
        ),
        (
            "[image_download]\nmode = \"tftp\"\nserver = \"127.0.0.1\"\nblksize = 4\n",
            "blksize",
        ),
    ] {
        std::fs::write(&p, format!("{base}\n{table}")).unwrap();
        let e = wtpd::config::AcsimConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains(why), "{table}: {e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = Path::new("");
}

/// With `announce_md5`, acsim downloads the whole image first and announces Image Information
/// (size and MD5), which the AP checks.
#[test]
fn announce_md5_sends_image_information() {
    let dir = lab("announce-md5");
    let port = free_port_pair().unwrap();
    write_lab(&dir, DemoDtls::Psk, port).unwrap();
    prepare_scenario(&dir, Scenario::Upgrade, 500_000).unwrap();
    let (server, table) =
        wtpd_harness::lab::serve_lab_images(&dir, DownloadMode::Tftp).expect("image server");
    let ac_toml = dir.join("acsim.toml");
    std::fs::write(
        &ac_toml,
        format!("{}\n{table}announce_md5 = true\n", read(&ac_toml)),
    )
    .unwrap();
    let _ac = start(acsim(), &["run", "--config", "acsim.toml"], &dir);
    let alog = dir.join("acsim.log");
    let wlog = dir.join("wtpd.log");
    assert!(wait_for(&alog, "listening", Duration::from_secs(10)));
    let _wtp = start(wtpd(), &["--config", "wtpd.toml"], &dir);
    assert!(
        wait_for(&wlog, "Image SHA-256", Duration::from_secs(60)),
        "{}",
        read(&wlog)
    );
    let md5 = {
        let data = std::fs::read(dir.join("images/ap1g8")).unwrap();
        wtpd::image::download::hex(
            &openssl::hash::hash(openssl::hash::MessageDigest::md5(), &data).unwrap(),
        )
    };
    let size = std::fs::metadata(dir.join("images/ap1g8")).unwrap().len();
    let want = format!("Image Information: {size} bytes, MD5 {md5}");
    assert!(read(&wlog).contains(&want), "{}", read(&wlog));
    assert!(
        read(&alog).contains(&format!("serving ap1g8, {size} bytes, MD5 {md5}")),
        "{}",
        read(&alog)
    );
    assert_eq!(
        sha256(&dir.join("tmp/part.tar")),
        sha256(&dir.join("images/ap1g8"))
    );
    drop(_wtp);
    drop(_ac);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
