//! The agent under a busy controller, as real processes on loopback: a full acsim (`max_wtps`
//! reached) refuses the Join with RFC 5415 Result Code 4, Join Failure (Resource Depletion);
//! the real wtpd then chooses the other controller among its Discovery candidates (§3.3)
//! rather than coming back to the full one at once; and acsim itself holds a Join storm of
//! simulated agents while a real wtpd joins.

mod common;

use common::process::{read, start, wait_for, wait_until};
use std::path::{Path, PathBuf};
use std::time::Duration;

use wtpd_harness::demo::{free_port_pair, write_lab, DemoDtls};

/// A certificate lab in a fresh folder; returns it and its acsim's address.
fn lab(name: &str) -> (PathBuf, std::net::SocketAddr) {
    let dir = std::env::temp_dir().join(format!("wtpd-busy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port_pair().unwrap();
    let addr = write_lab(&dir, DemoDtls::Certificate, port).unwrap();
    (dir, addr)
}

/// A second controller in the same lab (same PKI): `acsim-full.toml`, listening on its own
/// port, with `max_wtps = 0` (full from the start), logging to `acsim-full.log`.
fn full_controller(dir: &Path) -> std::net::SocketAddr {
    let port = free_port_pair().unwrap();
    let text = read(&dir.join("acsim.toml"));
    let listen = format!("127.0.0.1:{port}");
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("pcap") && !l.starts_with("status_file"))
        .map(|l| {
            if l.starts_with("listen") {
                format!("listen = \"{listen}\"\nmax_wtps = 0\n")
            } else if l.starts_with("name") {
                "name = \"acsim-full\"\n".to_string()
            } else if l.starts_with("keylog") {
                String::new()
            } else {
                format!("{}\n", l.replace("acsim.log", "acsim-full.log"))
            }
        })
        .collect();
    std::fs::write(dir.join("acsim-full.toml"), text).unwrap();
    listen.parse().unwrap()
}

#[test]
fn refused_as_full_the_wtp_joins_the_other_controller() {
    let (dir, _free) = lab("refused");
    let full = full_controller(&dir);
    let _ac_free = start(
        wtpd_harness::bins::acsim(),
        &["run", "--config", "acsim.toml"],
        &dir,
    );
    let _ac_full = start(
        wtpd_harness::bins::acsim(),
        &["run", "--config", "acsim-full.toml"],
        &dir,
    );
    for log in ["acsim.log", "acsim-full.log"] {
        assert!(
            wait_for(&dir.join(log), "listening", Duration::from_secs(10)),
            "{log}: acsim did not start"
        );
    }
    // The full controller comes first (an extra static address is listed before the
    // configured ones): the WTP chooses it, is refused, and must then choose the other.
    let full_arg = full.to_string();
    let _w = start(
        env!("CARGO_BIN_EXE_wtpd"),
        &["--config", "wtpd.toml", "--controller", &full_arg],
        &dir,
    );
    let wlog = dir.join("wtpd.log");
    assert!(
        wait_for(&wlog, "result code: 4", Duration::from_secs(30)),
        "the full acsim did not refuse the Join:\n{}",
        read(&wlog)
    );
    assert!(
        wait_for(
            &dir.join("acsim-full.log"),
            "refused with result code 4 (Join Failure (Resource Depletion))",
            Duration::from_secs(5)
        ),
        "acsim-full.log:\n{}",
        read(&dir.join("acsim-full.log"))
    );
    assert!(
        wait_for(&dir.join("acsim.log"), "is in Run", Duration::from_secs(40)),
        "the WTP did not reach Run on the free controller:\n{}",
        read(&wlog)
    );
    let w = read(&wlog);
    assert!(
        w.contains(&format!("AC {full} is full: not chosen again")),
        "no hold-off for the full AC:\n{w}"
    );
    // It was refused once: the hold-off kept it from choosing the full AC again.
    assert_eq!(
        read(&dir.join("acsim-full.log"))
            .matches("refused with result code 4")
            .count(),
        1,
        "the WTP went back to the full controller:\n{w}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_real_wtpd_joins_during_a_join_storm() {
    use wtpd_harness::load::{self, LoadDtls, LoadLab, LoadOptions};
    let dir = std::env::temp_dir().join(format!("wtpd-busy-storm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port_pair().unwrap();
    load::write_load_lab(
        &dir,
        &LoadLab {
            port,
            dtls: LoadDtls::Certificate,
            image_size: None,
            max_wtps: 1000,
            max_transfers: None,
            echo_interval: 1,
        },
    )
    .unwrap();
    let _ac = start(
        wtpd_harness::bins::acsim(),
        &["run", "--config", "acsim.toml"],
        &dir,
    );
    assert!(wait_for(
        &dir.join("acsim.log"),
        "listening",
        Duration::from_secs(10)
    ));
    let storm_dir = dir.clone();
    let storm = std::thread::spawn(move || {
        load::run(LoadOptions {
            dir: storm_dir,
            n: 200,
            hold: Duration::from_secs(4),
            limit: Duration::from_secs(60),
            progress: false,
            ..LoadOptions::default()
        })
        .unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    let _w = start(env!("CARGO_BIN_EXE_wtpd"), &["--config", "wtpd.toml"], &dir);
    assert!(
        wait_until(Duration::from_secs(30), || read(&dir.join("acsim.log"))
            .lines()
            .any(|l| l.contains("WTP wtp-sim-1 (") && l.contains("is in Run"))),
        "wtpd did not join during the storm:\n{}",
        read(&dir.join("wtpd.log"))
    );
    let report = storm.join().unwrap();
    assert_eq!(
        report.aps.iter().filter(|a| a.run.is_some()).count(),
        200,
        "{}",
        report.summary()
    );
    assert!(
        wait_for(
            &dir.join("wtpd.log"),
            "CAPWAP State: Run",
            Duration::from_secs(10)
        ),
        "{}",
        read(&dir.join("wtpd.log"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a download load against an acsim with `max_transfers = 1` showed.
struct QueueRun {
    summary: String,
    /// acsim's log.
    log: String,
    /// The most APs `acsim status` showed as Initiated at once (asked every 100 ms).
    most_initiated: u32,
    /// The longest an AP waited in the queue (acsim's log: from "queued" to "serving").
    longest_wait: f64,
}

/// The time of day of an acsim log line (`[*11/30/2026 07:58:05.2644] ...`), in seconds.
fn log_seconds(line: &str) -> Option<f64> {
    let t = line.split(']').next()?.split_whitespace().nth(1)?;
    let mut f = t.split(':');
    let (h, m, s): (f64, f64, f64) = (
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
    );
    Some(h * 3600.0 + m * 60.0 + s)
}

/// `n` agents download an image of `size` bytes at once from an acsim that allows one
/// transfer at a time; `acsim_timers` and `wtp_timers` are added to the `[timers]` of each.
fn queue_run(name: &str, size: u64, n: usize, acsim_timers: &str, wtp_timers: &str) -> QueueRun {
    use wtpd_harness::load::{self, LoadDtls, LoadLab, LoadOptions};
    let dir = std::env::temp_dir().join(format!("wtpd-busy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port_pair().unwrap();
    load::write_load_lab(
        &dir,
        &LoadLab {
            port,
            dtls: LoadDtls::Certificate,
            image_size: Some(size),
            max_wtps: 100,
            max_transfers: Some(1),
            echo_interval: 1,
        },
    )
    .unwrap();
    let cfg =
        read(&dir.join("acsim.toml")).replace("[timers]\n", &format!("[timers]\n{acsim_timers}"));
    std::fs::write(dir.join("acsim.toml"), cfg).unwrap();
    let _ac = start(
        wtpd_harness::bins::acsim(),
        &["run", "--config", "acsim.toml"],
        &dir,
    );
    let alog = dir.join("acsim.log");
    assert!(wait_for(&alog, "listening", Duration::from_secs(10)));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (done, sock) = (done.clone(), dir.join("acsim.sock"));
        std::thread::spawn(move || {
            let mut most = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(t) = wtpd::runtime::ac::control_request(&sock, "status") {
                    let k = t
                        .lines()
                        .find_map(|l| l.trim().strip_prefix("Initiated"))
                        .and_then(|v| v.trim().trim_start_matches(':').trim().parse().ok())
                        .unwrap_or(0);
                    most = most.max(k);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            most
        })
    };
    let report = load::run(LoadOptions {
        dir: dir.clone(),
        n,
        download: true,
        limit: Duration::from_secs(120),
        progress: false,
        wtp_timers: wtp_timers.into(),
        ..LoadOptions::default()
    })
    .unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let most_initiated = watcher.join().unwrap();
    let log = read(&alog);
    let longest_wait = (0..n)
        .filter_map(|i| {
            let ap = format!("load-{i:04}");
            let at = |what: &str| {
                log.lines()
                    .find(|l| l.contains(&ap) && l.contains(what))
                    .and_then(log_seconds)
            };
            Some(at(": serving")? - at("queued, its request unanswered")?)
        })
        .fold(0.0, f64::max);
    let run = QueueRun {
        summary: report.summary(),
        log,
        most_initiated,
        longest_wait,
    };
    eprintln!(
        "{name}: longest wait {:.2} s, at most {most_initiated} shown as Initiated, {} started over max_transfers",
        run.longest_wait,
        run.log.matches("starts over max_transfers").count()
    );
    let _ = std::fs::remove_dir_all(&dir);
    run
}

/// Every AP got its image, none failed, and the queue was used.
fn assert_all_downloaded(r: &QueueRun, n: usize) {
    assert!(
        r.summary.contains(&format!("load.downloaded {n}\n"))
            && r.summary.contains("load.errors 0\n"),
        "{}\n{}",
        r.summary,
        r.log
    );
    assert!(
        !r.log.contains("AP Image Download Failed"),
        "an AP's download failed:\n{}",
        r.log
    );
    assert!(
        r.log.contains("queued, its request unanswered"),
        "no transfer was queued:\n{}",
        r.log
    );
}

/// `max_transfers` below the number of APs downloading at once: the extra APs wait with their
/// Image Data Request unanswered, shown as Initiated, and are served one after the other as
/// the transfer before ends; all get their image.
#[test]
fn queued_transfers_wait_their_turn_and_all_finish() {
    let r = queue_run("queue", 2 << 20, 4, "", "");
    assert_all_downloaded(&r, 4);
    assert!(
        r.longest_wait > 0.0,
        "no AP waited in the queue:\n{}",
        r.log
    );
    assert!(
        r.most_initiated >= 2,
        "at most {} AP(s) shown as Initiated at once",
        r.most_initiated
    );
    assert!(
        !r.log.contains("starts over max_transfers"),
        "a transfer started over the limit within the WTPs' 600 s:\n{}",
        r.log
    );
    // Each AP was served once (none came back after a failure).
    let served = r
        .log
        .lines()
        .filter(|l| l.contains("Image Data Request from load-") && l.contains(": serving"))
        .count();
    assert_eq!(served, 4, "{}", r.log);
}

/// A queue longer than the WTPs' ImageDataStartTimer (2 s here; wtpd counts it from its
/// Image Data Request, so holding the answer back does not stop it): acsim, told the WTPs'
/// timer, starts a queued transfer over `max_transfers` before the WTP would give up, and
/// every AP gets its image without failing (the transfer of this image takes longer than the
/// timer, so without that the third AP would restart CAPWAP).
#[test]
fn a_queue_longer_than_the_wtps_image_data_start_timer_does_not_fail_them() {
    let r = queue_run(
        "queue-timer",
        16 << 20,
        3,
        "image_data_start = 2\n",
        "image_data_start = 2\n",
    );
    assert_all_downloaded(&r, 3);
    assert!(
        r.longest_wait < 2.0,
        "an AP waited {:.2} s, longer than its ImageDataStartTimer",
        r.longest_wait
    );
    assert!(
        r.log.contains("starts over max_transfers"),
        "no transfer started over the limit:\n{}",
        r.log
    );
}
