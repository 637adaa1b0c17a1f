//! The upgrade hook (`[hooks] upgrade`, the seed's `upgrade.sh`) with the real binaries on
//! loopback: which arguments, in which order, with which environment, and PRECHECK refusing a
//! download. The hook is a recorder that then runs the shipped example, board/upgrade.sh.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::process::{agent_status, read, start, wait_for, wait_for_retries, wait_for_state};
use wtpd_harness::demo::{free_port_pair, prepare_scenario, write_lab, DemoDtls, Scenario};

fn acsim() -> &'static str {
    wtpd_harness::bins::acsim()
}
fn wtpd() -> &'static str {
    env!("CARGO_BIN_EXE_wtpd")
}

/// A lab with fast timers, the scenario's image folder, and the recording hook; acsim runs.
fn lab(name: &str, scenario: Scenario, extra_hook: &str) -> (PathBuf, common::process::Killer) {
    let dir = std::env::temp_dir().join(format!("wtpd-hooks-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port_pair().unwrap();
    write_lab(&dir, DemoDtls::Certificate, port).unwrap();
    prepare_scenario(&dir, scenario, 1 << 20).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("board/upgrade.sh");
    let hook = dir.join("upgrade.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\n\
             {{ printf '%s' \"$#\"; for a in \"$@\"; do printf ' [%s]' \"$a\"; done; echo; \
             env | grep '^WTPD_' | sort; echo ---; }} >> \"$(dirname \"$0\")/hook-calls.log\"\n\
             {extra_hook}\n\
             WTPD_NO_UPGRADE_FILE=\"$(dirname \"$0\")/no-upgrade\" exec sh {} \"$@\"\n",
            example.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let toml = dir.join("wtpd.toml");
    let text = read(&toml).replace(
        "discovery_interval = 1\n",
        "discovery_interval = 1\nretransmit_interval = 0.2\nmax_retransmit = 2\ndtls_session_delete = 0.5\n",
    );
    std::fs::write(
        &toml,
        format!("{text}\n[hooks]\nupgrade = \"upgrade.sh\"\ntimeout = 10\n"),
    )
    .unwrap();
    let ac = start(acsim(), &["run", "--config", "acsim.toml"], &dir);
    assert!(
        wait_for(&dir.join("acsim.log"), "listening", Duration::from_secs(10)),
        "acsim did not start"
    );
    (dir, ac)
}

/// The calls the recorder saw: (argc and argv line, WTPD_ variables).
fn calls(dir: &Path) -> Vec<(String, Vec<String>)> {
    read(&dir.join("hook-calls.log"))
        .split("---\n")
        .filter(|c| !c.trim().is_empty())
        .map(|c| {
            let mut lines = c.lines().map(str::to_string);
            let argv = lines.next().unwrap();
            (argv, lines.collect())
        })
        .collect()
}

fn var<'a>(call: &'a (String, Vec<String>), name: &str) -> &'a str {
    let prefix = format!("{name}=");
    call.1
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{name} missing from {call:?}"))
}

fn assert_in_order(log: &str, lines: &[&str]) {
    let mut at = 0;
    for l in lines {
        match log[at..].find(l) {
            Some(i) => at += i + l.len(),
            None => panic!("'{l}' missing (or out of order) in:\n{log}"),
        }
    }
}

fn acsim_command(dir: &Path, what: &str) {
    let out = Command::new(acsim())
        .args([what, "--config", dir.join("acsim.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "acsim {what}: {out:?}");
}

/// Waits for the agent to exit; its status.
fn exit_status(w: &mut common::process::Killer, log: &Path) -> Option<i32> {
    let t = Instant::now();
    loop {
        if let Some(s) = w.0.try_wait().unwrap() {
            return s.code();
        }
        if t.elapsed() > Duration::from_secs(60) {
            panic!("the agent did not exit:\n{}", read(log));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A predownload in Run, its activation, the reboot and the mark-good on the new slot: the
/// script is called with one argument each time, PRECHECK, PREDOWNLOAD, UPGRADE, ACTIVATE,
/// then (the new run) MARK_GOOD, at the seed's moments in the log, with the slots, the image
/// and the versions in its environment, and its output in the agent's log.
#[test]
fn the_hook_gets_the_seeds_arguments_in_the_seeds_order() {
    let (dir, _ac) = lab("order", Scenario::Predownload, "");
    let log = dir.join("wtpd.log");
    let mut w = start(wtpd(), &["--config", "wtpd.toml"], &dir);
    assert!(
        wait_for_state(&dir, "Run", Duration::from_secs(60)),
        "{}",
        read(&log)
    );
    acsim_command(&dir, "predownload");
    assert!(
        wait_for(
            &log,
            "Image 17.9.4.27 staged for activation",
            Duration::from_secs(60)
        ),
        "{}",
        read(&log)
    );
    acsim_command(&dir, "activate");
    assert_eq!(exit_status(&mut w, &log), Some(75), "{}", read(&log));
    let first = read(&log);
    assert_in_order(
        &first,
        &[
            "Predownload of 17.9.4.27 requested by the AC",
            "upgrade.sh: Script called with args:[PRECHECK]",
            "upgrade.sh: do PRECHECK, part a is active part",
            "upgrade.sh: Cleanup tmp files ...",
            "upgrade.sh: /tmp space: OK available",
            "wtpOpenImgFile: request ap1g8",
            "Image Data Request sent to",
            "Last block stored, IsPre 1",
            "upgrade.sh: Script called with args:[PREDOWNLOAD]",
            "upgrade.sh: Creating before-upgrade.log",
            "upgrade.sh: Start doing upgrade arg1=PREDOWNLOAD arg2= arg3= ... ",
            "upgrade.sh: Using image ",
            "Image signing verify success.",
            "upgrade.sh: Script called with args:[UPGRADE]",
            "upgrade.sh: Writing 17.9.4.27 to slot b",
            "Slot b holds 17.9.4.27 as a good backup",
            "Reset Request activates 17.9.4.27",
            "Switched to slot b (17.9.4.27) in one environment write",
            "upgrade.sh: Script called with args:[ACTIVATE]",
            "upgrade.sh: Slot b activated: rebooting into 17.9.4.27",
            "Rebooting (activate 17.9.4.27)",
        ],
    );
    // The simulated bootloader, then the new slot's agent joins and marks it good.
    wtpd_harness::demo::boot_sim_board(&dir).unwrap();
    let _w2 = start(wtpd(), &["--config", "wtpd.toml"], &dir);
    assert!(
        wait_for(
            &log,
            "upgrade.sh: Slot b (17.9.4.27) is good",
            Duration::from_secs(60)
        ),
        "{}",
        read(&log)
    );
    let calls = calls(&dir);
    let argv: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        argv,
        [
            "1 [PRECHECK]",
            "1 [PREDOWNLOAD]",
            "1 [UPGRADE]",
            "1 [ACTIVATE]",
            "1 [MARK_GOOD]"
        ],
        "{calls:#?}"
    );
    let image = dir.join("tmp/part.tar").display().to_string();
    for (i, c) in calls.iter().enumerate() {
        let stage = [
            "PRECHECK",
            "PREDOWNLOAD",
            "UPGRADE",
            "ACTIVATE",
            "MARK_GOOD",
        ][i];
        assert_eq!(var(c, "WTPD_STAGE"), stage);
        assert_eq!(var(c, "WTPD_VERSION"), "17.9.4.27", "{c:?}");
        assert_eq!(var(c, "WTPD_IMAGE"), image, "{c:?}");
        assert_eq!(var(c, "WTPD_IMAGE_TYPE"), "ap1g8", "{c:?}");
        assert_eq!(var(c, "WTPD_BOARD"), "sim", "{c:?}");
        // The first run booted slot a; the second, slot b.
        let (booted, target, running) = if i < 4 {
            ("a", "b", "17.3.3.26")
        } else {
            ("b", "a", "17.9.4.27")
        };
        assert_eq!(var(c, "WTPD_SLOT_BOOTED"), booted, "{c:?}");
        assert_eq!(var(c, "WTPD_SLOT_TARGET"), target, "{c:?}");
        assert_eq!(var(c, "WTPD_RUNNING_VERSION"), running, "{c:?}");
        assert_eq!(var(c, "WTPD_REQUIRED_KIB"), "1024", "{c:?}");
    }
    assert_eq!(var(&calls[1], "WTPD_PREDOWNLOAD"), "1");
    let _ = std::fs::remove_dir_all(dir);
}

/// A PRECHECK that exits non-zero refuses the download before the Image Data Request: its
/// last line is the reason in the log and in `wtpd status`, ABORT follows, and the download
/// is retried with backoff; a predownload refused so reaches the controller in a WTP Event
/// Request.
#[test]
fn a_failing_precheck_refuses_the_download_with_the_scripts_reason() {
    let (dir, _ac) = lab(
        "refused",
        Scenario::Predownload,
        "[ \"$1\" = PRECHECK ] && echo 'checking the radio calibration' && echo 'calibration busy: try later' >&2 && exit 4",
    );
    let log = dir.join("wtpd.log");
    let _w = start(wtpd(), &["--config", "wtpd.toml"], &dir);
    assert!(
        wait_for_state(&dir, "Run", Duration::from_secs(60)),
        "{}",
        read(&log)
    );
    acsim_command(&dir, "predownload");
    assert!(
        wait_for_retries(&dir, 1, Duration::from_secs(60)),
        "{}",
        read(&log)
    );
    let reason = "upgrade.sh PRECHECK failed (exit status 4): calibration busy: try later";
    assert!(
        wait_for(
            &log,
            "upgrade.sh: aborted: image download cannot start: ",
            Duration::from_secs(10)
        ),
        "{}",
        read(&log)
    );
    let text = read(&log);
    assert_in_order(
        &text,
        &[
            "upgrade.sh: Script called with args:[PRECHECK]",
            "upgrade.sh: checking the radio calibration",
            "upgrade.sh: calibration busy: try later",
            &format!("Aborting image download(image download cannot start: {reason}), ap1g8"),
            "upgrade.sh: Script called with args:[ABORT]",
            "upgrade.sh: aborted: image download cannot start: ",
        ],
    );
    assert!(!text.contains("Image Data Request sent"), "{text}");
    assert!(!dir.join("tmp/part.tar").exists());
    let status = agent_status(&dir).unwrap();
    assert!(status.last_error.contains(reason), "{status:?}");
    assert_eq!(status.state, "Run", "a refused predownload stays in Run");
    assert!(
        wait_for(
            &dir.join("acsim.log"),
            &format!("AP Image Download Failed: image download cannot start: {reason}"),
            Duration::from_secs(10)
        ),
        "{}",
        read(&dir.join("acsim.log"))
    );
    let argv: Vec<String> = calls(&dir).into_iter().map(|c| c.0).collect();
    assert_eq!(argv[..2], ["1 [PRECHECK]", "1 [ABORT]"]);
    let _ = std::fs::remove_dir_all(dir);
}

/// The shipped example: busybox-compatible POSIX sh (checked with dash, which has no bash
/// extensions), refusing at PRECHECK while the operator's file exists or the room is short.
#[test]
fn the_example_script_checks_room_and_the_operators_switch() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("board/upgrade.sh");
    let syntax = Command::new("dash")
        .arg("-n")
        .arg(&example)
        .status()
        .unwrap();
    assert!(syntax.success());
    let dir = std::env::temp_dir().join(format!("wtpd-hooks-example-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let run = |stage: &str, required: &str| {
        let out = Command::new("dash")
            .arg(&example)
            .arg(stage)
            .env("WTPD_DOWNLOAD_DIR", &dir)
            .env("WTPD_REQUIRED_KIB", required)
            .env("WTPD_NO_UPGRADE_FILE", dir.join("no-upgrade"))
            .env("WTPD_SLOT_BOOTED", "a")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run("PRECHECK", "1");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(
            "do PRECHECK, part a is active part\nCleanup tmp files ...\n/tmp space: OK available "
        ),
        "{out}"
    );
    let (code, out) = run("PRECHECK", "999999999999");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.trim_end().ends_with("required 999999999999"), "{out}");
    assert!(out.contains("/tmp space: NOT OK available "), "{out}");
    std::fs::write(dir.join("no-upgrade"), "").unwrap();
    let (code, out) = run("PRECHECK", "1");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("upgrades are disabled"), "{out}");
    let (code, out) = run("SOMETHING_NEW", "1");
    assert_eq!(code, Some(0), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}
