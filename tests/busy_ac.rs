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
