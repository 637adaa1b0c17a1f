//! Bench (not a timed test; run on purpose):
//!
//!     cargo test --release --test fetch_bench -- --ignored --nocapture
//!
//! The image comes through acsim from tftpd-hpa to wtpd (TFTP into acsim's spool, CAPWAP
//! Image Data over DTLS to the AP, written to its download directory), beside atftp fetching
//! the same file from the same server with 1024-byte blocks, in the same run. Prints both
//! throughputs and their ratio (the issue's target: the AP's end-to-end throughput at least
//! 0.8 of atftp's). WTPD_BENCH_BYTES sets the image size (default 32 MiB + 601);
//! WTPD_BENCH_ROUNDS the rounds (default 5; medians are shown). Each round runs atftp, then
//! the AP through acsim with 1024-byte Image Data blocks (atftp's block size) and with 1377
//! (the block size of the seed's controller: 70,512,640 bytes in 51,208 messages).

mod common;
mod fetch_common;

use std::process::Command;
use std::time::{Duration, Instant};

use fetch_common::*;
use wtpd::fetch::spool::DownloadMode;
use wtpd_harness::demo::{free_port_pair, prepare_scenario, write_lab, DemoDtls, Scenario};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seconds since midnight of a log line's `[*MM/DD/YYYY HH:MM:SS.ffff]` stamp.
fn stamp(line: &str) -> Option<f64> {
    let t = line.split(' ').nth(1)?.trim_end_matches(']');
    let mut p = t.split(':');
    let h: f64 = p.next()?.parse().ok()?;
    let m: f64 = p.next()?.parse().ok()?;
    let s: f64 = p.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn line_time(log: &str, needle: &str) -> Option<f64> {
    log.lines().find(|l| l.contains(needle)).and_then(stamp)
}

fn atftp(port: u16, out: &std::path::Path) -> f64 {
    let _ = std::fs::remove_file(out);
    let t = Instant::now();
    let st = Command::new("atftp")
        .args([
            "--get",
            "-r",
            "/images/ap1g8",
            "-l",
            out.to_str().unwrap(),
            "--option",
            "blksize 1024",
            "127.0.0.1",
            &port.to_string(),
        ])
        .status()
        .expect("atftp must be installed (.ci/run installs it)");
    assert!(st.success(), "atftp failed");
    t.elapsed().as_secs_f64()
}

/// One upgrade through acsim with Image Data blocks of `block` bytes; the seconds from the
/// AP's Image Data Request to its last block stored (the AP's own log stamps).
fn through_acsim(dir: &std::path::Path, block: u64) -> f64 {
    for f in ["acsim.log", "wtpd.log", "acsim.status", "acsim.sock"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let _ = std::fs::remove_dir_all(dir.join("state"));
    let _ = std::fs::remove_dir_all(dir.join("tmp"));
    // The board back on the old version: the previous round installed the new one.
    wtpd_harness::demo::write_board_storage(
        dir,
        wtpd_harness::demo::AP_VERSION,
        wtpd_harness::demo::AP_BACKUP_VERSION,
    )
    .unwrap();
    let ac_toml = dir.join("acsim.toml");
    let text = read(&ac_toml);
    let body = text.split_once('\n').map(|(_, b)| b).unwrap_or("");
    std::fs::write(&ac_toml, format!("block_size = {block}\n{body}")).unwrap();
    let _ac = start(acsim(), &["run", "--config", "acsim.toml"], dir);
    assert!(wait_for(
        &dir.join("acsim.log"),
        "listening",
        Duration::from_secs(10)
    ));
    let _wtp = start(wtpd(), &["--config", "wtpd.toml"], dir);
    let wlog = dir.join("wtpd.log");
    assert!(
        wait_for(&wlog, "Image SHA-256", Duration::from_secs(600)),
        "{}",
        read(&wlog)
    );
    let log = read(&wlog);
    let t0 = line_time(&log, "Image Data Request sent to").unwrap();
    let t1 = line_time(&log, "Image transfer completed").unwrap();
    assert_eq!(
        sha256(&dir.join("tmp/part.tar")),
        sha256(&dir.join("images/ap1g8"))
    );
    let alog = read(&dir.join("acsim.log"));
    assert!(alog.contains("Image download complete"), "{alog}");
    (t1 - t0).max(1e-3)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[test]
#[ignore = "bench: cargo test --release --test fetch_bench -- --ignored --nocapture"]
fn bench_image_through_acsim_from_tftpd_hpa_beside_atftp() {
    let size = env_u64("WTPD_BENCH_BYTES", 32 * 1024 * 1024 + 601);
    let rounds = env_u64("WTPD_BENCH_ROUNDS", 5).max(1);
    let dir = lab("bench");
    let port = free_port_pair().unwrap();
    write_lab(&dir, DemoDtls::Certificate, port).unwrap();
    prepare_scenario(&dir, Scenario::Upgrade, size).unwrap();
    let (server, table) = wtpd_harness::lab::serve_lab_images(&dir, DownloadMode::Tftp).unwrap();
    let ac_toml = dir.join("acsim.toml");
    // No capture (it would write every block twice); the first line is block_size.
    let text = read(&ac_toml).replace("pcap = \"capwap.pcap\"\n", "");
    std::fs::write(
        &ac_toml,
        format!("block_size = 1024\n{text}\n{table}blksize = 1468\n"),
    )
    .unwrap();
    let w_toml = dir.join("wtpd.toml");
    std::fs::write(&w_toml, read(&w_toml).replace("image_data_start = 5\n", "")).unwrap();

    let (mut at, mut ap1024, mut ap1377) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        at.push(atftp(server.port, &dir.join("atftp.out")));
        assert_eq!(
            sha256(&dir.join("atftp.out")),
            sha256(&dir.join("images/ap1g8"))
        );
        ap1024.push(through_acsim(&dir, 1024));
        ap1377.push(through_acsim(&dir, 1377));
    }
    let mb = size as f64 / 1e6;
    let show = |v: &[f64]| {
        v.iter()
            .map(|t| format!("{t:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("\n===== fetch bench: {size} bytes from tftpd-hpa on 127.0.0.1, {rounds} rounds (median) =====");
    println!(
        "runs (s): atftp {} | AP 1024 {} | AP 1377 {}",
        show(&at),
        show(&ap1024),
        show(&ap1377)
    );
    let a = median(&mut at);
    let b = median(&mut ap1024);
    let c = median(&mut ap1377);
    println!(
        "atftp, blksize 1024                       : {a:.2} s  {:.2} MB/s",
        mb / a
    );
    println!(
        "AP via acsim, CAPWAP blocks 1024 over DTLS : {b:.2} s  {:.2} MB/s  ratio {:.2}",
        mb / b,
        a / b
    );
    println!(
        "AP via acsim, CAPWAP blocks 1377 over DTLS : {c:.2} s  {:.2} MB/s  ratio {:.2}",
        mb / c,
        a / c
    );
    let _ = std::fs::remove_dir_all(&dir);
}
