//! wtpd under init systems (docs/init.md): the systemd unit (verified by `systemd-analyze`),
//! the agent's sd_notify datagrams (READY=1, WATCHDOG=1, STOPPING=1) to a socket the test
//! binds, OpenWrt's procd init script sourced against stub `procd_*` / `config_*` functions,
//! the exit-75 supervisor, and the UCI file translated to wtpd.toml.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::process::{read, Killer};
use wtpd_harness::demo::{free_port_pair, write_lab, DemoDtls};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
fn wtpd() -> &'static str {
    env!("CARGO_BIN_EXE_wtpd")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wtpd-init-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The unit as shipped, with ExecStart pointing at this build (systemd-analyze checks that
/// the program exists), verifies without a single warning.
#[test]
fn the_systemd_unit_verifies() {
    let unit = read(&repo().join("board/systemd/wtpd.service"));
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "ExecStart=/usr/sbin/wtpd --config /etc/wtpd/wtpd.toml",
        "SuccessExitStatus=75",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "{line}");
    }
    let dir = tmp("unit");
    let copy = dir.join("wtpd.service");
    std::fs::write(&copy, unit.replace("/usr/sbin/wtpd", wtpd())).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian: systemd) must be installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "warnings:\n{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The unit's ExecStopPost line, run by sh as systemd would (`$$` is systemd's escape for
/// `$`): exit status 75 asks systemd for a reboot, anything else does not.
#[test]
fn the_units_stop_hook_reboots_on_75_only() {
    let unit = read(&repo().join("board/systemd/wtpd.service"));
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStopPost=/bin/sh -c '"))
        .and_then(|l| l.strip_suffix('\''))
        .expect("ExecStopPost=/bin/sh -c '...'")
        .replace("$$", "$");
    let dir = tmp("stoppost");
    let stub = dir.join("systemctl");
    std::fs::write(
        &stub,
        format!("#!/bin/sh\necho \"$*\" >> {}/calls\n", dir.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    for status in ["0", "1", "75"] {
        let ok = Command::new("sh")
            .args(["-c", &line])
            .env("EXIT_STATUS", status)
            .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
            .status()
            .unwrap();
        assert!(ok.success());
    }
    assert_eq!(read(&dir.join("calls")), "--no-block reboot\n");
    let _ = std::fs::remove_dir_all(dir);
}

/// Receives one datagram within `limit`.
fn recv(sock: &UnixDatagram, limit: Duration) -> Option<String> {
    sock.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// wtpd with NOTIFY_SOCKET and WATCHDOG_USEC as systemd sets them: READY=1 first, once its
/// configuration, board and state are read; then WATCHDOG=1 every half interval from its
/// event loop; STOPPING=1 on SIGTERM, and exit 0.
#[test]
fn the_agent_notifies_ready_then_pings_the_watchdog() {
    let dir = tmp("notify");
    // A lab without a controller: the agent starts and keeps discovering.
    write_lab(&dir, DemoDtls::Certificate, free_port_pair().unwrap()).unwrap();
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let started = Instant::now();
    let mut w = Killer(
        Command::new(wtpd())
            .args(["--config", "wtpd.toml"])
            .current_dir(&dir)
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "400000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let log = dir.join("wtpd.log");
    let first = recv(&sock, Duration::from_secs(20)).unwrap_or_else(|| panic!("{}", read(&log)));
    assert!(
        first.starts_with("READY=1\nSTATUS=WTP wtp-sim-1 running 17.9.4.27"),
        "{first:?}"
    );
    // Ready means the board's environment and the state directory were read.
    let text = read(&log);
    assert!(text.contains("Booted slot a (17.9.4.27)"), "{text}");
    let mut pings = Vec::new();
    while pings.len() < 4 {
        let m = recv(&sock, Duration::from_secs(5)).unwrap_or_else(|| panic!("{}", read(&log)));
        assert_eq!(m, "WATCHDOG=1");
        pings.push(Instant::now());
    }
    // Every 0.2 s (half of 0.4 s); the first one comes at once.
    let span = pings[3] - pings[1];
    assert!(
        span >= Duration::from_millis(300) && span < Duration::from_millis(1500),
        "{span:?}"
    );
    assert!(read(&log).contains("systemd watchdog: WATCHDOG=1 every 0.2s"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(w.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = loop {
        let m = recv(&sock, Duration::from_secs(5)).expect("STOPPING=1");
        if m != "WATCHDOG=1" {
            break m;
        }
    };
    assert_eq!(stopping, "STOPPING=1");
    let status = w.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(60));
    let _ = std::fs::remove_dir_all(dir);
}
