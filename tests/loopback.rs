//! Real processes on loopback: `acsim` and `wtpd` binaries, real DTLS (OpenSSL), real sockets.
//! The demo is the main scenario; the refusals and a vanished controller follow, each reading
//! the logs the operator would read.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::process::{read, start, wait_for, wait_for_retries, wait_for_state, Killer};
use wtpd_harness::demo::{free_port_pair, prepare_scenario, write_lab, DemoDtls, Scenario};

fn acsim() -> &'static str {
    wtpd_harness::bins::acsim()
}
fn wtpd() -> &'static str {
    env!("CARGO_BIN_EXE_wtpd")
}

fn lab(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wtpd-loopback-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn edit(p: &Path, from: &str, to: &str) {
    let text = read(p);
    assert!(text.contains(from), "{} has no '{from}'", p.display());
    std::fs::write(p, text.replace(from, to)).unwrap();
}

/// `acsim demo --dir DIR ARGS...` in a lab folder that may hold files the demo keeps (a
/// board.toml); checks that it succeeded with `Result : OK` and returns its output.
fn demo_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(acsim())
        .args(["demo", "--dir", dir.to_str().unwrap()])
        .args(args)
        .env("WTPD_BIN", wtpd())
        .output()
        .expect("run acsim demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "demo {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Result         : OK"), "{stdout}");
    stdout
}

/// `acsim demo --scenario join`, with `extra` options (none: the demo's defaults).
fn run_demo(extra: &[&str], name: &str) -> PathBuf {
    let dir = lab(name);
    let mut args = vec!["--scenario", "join"];
    args.extend_from_slice(extra);
    let stdout = demo_in(&dir, &args);
    assert_status_agrees(&stdout);
    dir
}

/// The `acsim status` table at the end of a demo's summary (or any `acsim status` output).
fn acsim_status(text: &str) -> &str {
    let at = text
        .find("Total number of APs")
        .unwrap_or_else(|| panic!("no acsim status in\n{text}"));
    let rest = &text[at..];
    rest.find("\nFiles").map_or(rest, |e| &rest[..e])
}

/// The rows of an `acsim status` table: the lines below the dashed line that name an AP, as
/// (column title, value) pairs cut at the header's column starts (the table is fixed-width).
fn status_rows(status: &str) -> Vec<Vec<(String, String)>> {
    let header = status
        .lines()
        .find(|l| l.starts_with("AP Name"))
        .unwrap_or_else(|| panic!("no header in\n{status}"));
    let titles = wtpd::ac::status::COLUMNS;
    let starts: Vec<usize> = titles
        .iter()
        .map(|t| {
            header
                .find(t)
                .unwrap_or_else(|| panic!("no {t} in {header}"))
        })
        .collect();
    status
        .lines()
        .skip_while(|l| !l.starts_with("---"))
        .skip(1)
        .filter(|l| !l.trim().is_empty() && !l.starts_with(' '))
        .map(|l| {
            titles
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let from = starts[i].min(l.len());
                    let to = starts.get(i + 1).map_or(l.len(), |&e| e.min(l.len()));
                    (t.to_string(), l[from..to].trim().to_string())
                })
                .collect()
        })
        .collect()
}

/// The value of column `title` in a row of [`status_rows`].
fn cell<'a>(row: &'a [(String, String)], title: &str) -> &'a str {
    &row.iter().find(|(t, _)| t == title).unwrap().1
}

/// A number (or word) of the counter block: `name : value`.
fn status_counter<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim())
        })
        .unwrap_or_else(|| panic!("no counter '{name}' in\n{status}"))
}

/// The Image Status column's words, by counter (src/ac/status.rs).
const IMAGE_STATUS_COUNTERS: [(&str, &str); 8] = [
    ("Initiated", "Initiated"),
    ("Downloading", "Downloading"),
    ("Predownloading", "Predownloading"),
    ("Completed downloading", "Downloaded"),
    ("Completed predownloading", "Predownloaded"),
    ("Not Supported", "Not Supported"),
    ("Failed to Download", "Failed"),
    ("Failed to Predownload", "Predl. Failed"),
];

/// The counters above acsim's table agree with its rows: the total counts every row listed,
/// and each transfer counter the rows with that Image Status.
fn assert_status_agrees(text: &str) {
    let status = acsim_status(text);
    let rows = status_rows(status);
    assert_eq!(
        status_counter(status, "Total number of APs"),
        rows.len().to_string(),
        "total vs rows:\n{status}"
    );
    for (counter, word) in IMAGE_STATUS_COUNTERS {
        let n = rows
            .iter()
            .filter(|r| cell(r, "Image Status") == word)
            .count();
        assert_eq!(
            status_counter(status, counter),
            n.to_string(),
            "counter '{counter}' vs rows with '{word}':\n{status}"
        );
    }
}

fn assert_whole_path(log: &str) {
    let states: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("CAPWAP State: ").nth(1))
        .collect();
    assert_eq!(
        states,
        [
            "Discovery",
            "DTLS Setup",
            "Join",
            "Configure",
            "Data Check",
            "Run",
            "Idle"
        ],
        "{log}"
    );
    assert!(
        log.contains("Shutting down CAPWAP (reason : agent stopped)"),
        "{log}"
    );
    assert!(log.contains("DTLS session with 127.0.0.1:"), "{log}");
    assert!(log.contains("wtpd stopped"), "{log}");
}

/// tshark decodes every frame of the capture as CAPWAP with no warning or error.
fn assert_pcap_clean(pcap: &Path) {
    let out = Command::new("tshark")
        .args(["-r", pcap.to_str().unwrap(), "-q", "-z", "expert"])
        .output()
        .expect("tshark must be installed (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for bad in ["Errors", "Warns", "Malformed"] {
        assert!(!text.contains(bad), "tshark reports {bad}:\n{text}");
    }
    let out = Command::new("tshark")
        .args([
            "-r",
            pcap.to_str().unwrap(),
            "-Y",
            "capwap.control.header.message_type",
            "-T",
            "fields",
            "-e",
            "capwap.control.header.message_type",
        ])
        .output()
        .unwrap();
    let types: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for t in [1, 2, 3, 4, 5, 6, 11, 12, 13, 14] {
        assert!(
            types.contains(&t),
            "message type {t} missing from the capture: {types:?}"
        );
    }
}

#[test]
fn demo_with_certificates() {
    // The join scenario at the demo's defaults (certificates, 5 s in Run).
    let dir = run_demo(&[], "cert");
    let log = read(&dir.join("wtpd.log"));
    assert_whole_path(&log);
    assert!(
        log.contains("DTLSv1.2 ECDHE-RSA-AES128-GCM-SHA256"),
        "{log}"
    );
    assert_pcap_clean(&dir.join("capwap.pcap"));
    let keys = read(&dir.join("dtls-keys.log"));
    assert!(
        keys.lines().any(|l| l.starts_with("CLIENT_RANDOM ")),
        "NSS key log: {keys}"
    );
    assert!(read(&dir.join("acsim.log")).contains("left: DTLS close_notify"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn demo_with_psk() {
    let dir = run_demo(&["--dtls", "psk", "--hold", "3"], "psk");
    let log = read(&dir.join("wtpd.log"));
    assert_whole_path(&log);
    assert!(log.contains("PSK-AES128-CBC-SHA"), "{log}");
    assert_pcap_clean(&dir.join("capwap.pcap"));
    let _ = std::fs::remove_dir_all(dir);
}

/// Writes a lab with fast timers and starts acsim; returns (dir, acsim).
fn lab_with_acsim(name: &str, dtls: DemoDtls, tweak: impl FnOnce(&Path)) -> (PathBuf, Killer) {
    let dir = lab(name);
    let port = free_port_pair().unwrap();
    write_lab(&dir, dtls, port).unwrap();
    edit(&dir.join("wtpd.toml"), "discovery_interval = 1\n", "discovery_interval = 1\nretransmit_interval = 0.2\nmax_retransmit = 2\ndtls_session_delete = 0.5\nwait_dtls = 31\n");
    tweak(&dir);
    let ac = start(acsim(), &["run", "--config", "acsim.toml"], &dir);
    assert!(
        wait_for(&dir.join("acsim.log"), "listening", Duration::from_secs(10)),
        "acsim did not start"
    );
    (dir, ac)
}

#[test]
fn controller_certificate_from_a_foreign_ca_is_refused() {
    let (dir, _ac) = lab_with_acsim("foreign-ca", DemoDtls::Certificate, |dir| {
        // The AP trusts a CA that did not sign the controller's certificate.
        let foreign = dir.join("foreign");
        wtpd_harness::pki::generate_lab_pki(&foreign).unwrap();
        edit(
            &dir.join("wtpd.toml"),
            "ca = \"pki/ca.pem\"",
            "ca = \"foreign/ca.pem\"",
        );
    });
    let _w = start(wtpd(), &["--config", "wtpd.toml"], &dir);
    let log = dir.join("wtpd.log");
    // OpenSSL names the exact verify error: here the controller's chain ends in a root the AP
    // does not trust.
    assert!(
        wait_for(&log, "DTLS handshake failed: certificate verify failed: self-signed certificate in certificate chain", Duration::from_secs(15)),
        "{}",
        read(&log)
    );
    assert!(
        !read(&log).contains("CAPWAP State: Join"),
        "no session may come up"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn wrong_controller_name_is_refused() {
    let (dir, _ac) = lab_with_acsim("wrong-name", DemoDtls::Certificate, |dir| {
        edit(
            &dir.join("wtpd.toml"),
            "peer_name = \"acsim.lab\"",
            "peer_name = \"other-controller.lab\"",
        );
    });
    let _w = start(wtpd(), &["--config", "wtpd.toml"], &dir);
    let log = dir.join("wtpd.log");
    assert!(
        wait_for(&log, "hostname mismatch", Duration::from_secs(15)),
        "{}",
        read(&log)
    );
    assert!(!read(&log).contains("CAPWAP State: Join"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unknown_psk_identity_is_refused_by_the_controller() {
    let (dir, _ac) = lab_with_acsim("psk-id", DemoDtls::Psk, |dir| {
        edit(
            &dir.join("wtpd.toml"),
            "psk_identity = \"wtp-sim-1\"",
            "psk_identity = \"intruder\"",
        );
    });
    let _w = start(wtpd(), &["--config", "wtpd.toml"], &dir);
    let ac_log = dir.join("acsim.log");
    assert!(
        wait_for(
            &ac_log,
            "unknown PSK identity 'intruder'",
            Duration::from_secs(15)
        ),
        "{}",
        read(&ac_log)
    );
    assert!(!read(&dir.join("wtpd.log")).contains("CAPWAP State: Join"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn refused_join_is_logged_with_its_result_code_and_retried() {
    let (dir, _ac) = lab_with_acsim("refused", DemoDtls::Certificate, |dir| {
        edit(
            &dir.join("acsim.toml"),
            "version = \"17.9.4.27\"\n",
            "version = \"17.9.4.27\"\njoin_result = 8\n",
        );
    });
    let _w = start(wtpd(), &["--config", "wtpd.toml"], &dir);
    let log = dir.join("wtpd.log");
    assert!(
        wait_for(&log, "AC refused join request with result code: 8 (Join Failure (WTP Hardware Not Supported))", Duration::from_secs(15)),
        "{}",
        read(&log)
    );
    assert!(
        wait_for(
            &log,
            "Restarting CAPWAP State Machine.",
            Duration::from_secs(10)
        ),
        "{}",
        read(&log)
    );
    let text = read(&log);
    assert!(!text.contains("CAPWAP State: Configure"), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn vanished_controller_ends_in_teardown_and_rediscovery() {
    let (dir, mut ac) = lab_with_acsim("vanish", DemoDtls::Certificate, |_| {});
    let _w = start(wtpd(), &["--config", "wtpd.toml"], &dir);
    let log = dir.join("wtpd.log");
    assert!(
        wait_for_state(&dir, "Run", Duration::from_secs(20)),
        "{}",
        read(&log)
    );
    // The controller dies without a word (no close_notify).
    ac.0.kill().unwrap();
    ac.0.wait().unwrap();
    assert!(
        wait_for(
            &log,
            "Going to restart CAPWAP (reason : no answer to Echo Request after 2 retransmissions)",
            Duration::from_secs(20)
        ),
        "{}",
        read(&log)
    );
    assert!(wait_for(
        &log,
        "Retransmitting Echo Request",
        Duration::from_secs(1)
    ));
    let text = read(&log);
    let after_run = &text[text.find("CAPWAP State: Run").unwrap()..];
    assert!(
        after_run.contains("CAPWAP State: DTLS Teardown"),
        "{after_run}"
    );
    assert!(wait_for(
        &log,
        "Restarting CAPWAP State Machine.",
        Duration::from_secs(10)
    ));
    let text = read(&log);
    let after_teardown = &text[text.rfind("CAPWAP State: DTLS Teardown").unwrap()..];
    assert!(
        after_teardown.contains("CAPWAP State: Discovery"),
        "{after_teardown}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A WTP that dies without a close_notify (kill -9 here; a power cut on a board) and comes
/// back from the same address and port (a fixed source port, or the kernel handing out the
/// same ephemeral one: the kill -9 test met it) joins again at once. acsim runs the new
/// handshake beside the stale session and replaces that when it completes; fed to the stale
/// session, the ClientHello would be dropped and the WTP would wait out WaitDTLS (31 s here).
#[test]
fn a_wtp_restarted_on_the_same_port_replaces_its_stale_session() {
    let (dir, _ac) = lab_with_acsim("same-port", DemoDtls::Certificate, |dir| {
        // Echoes every 30 s: the stale session outlives this test unless it is replaced.
        edit(
            &dir.join("acsim.toml"),
            "echo_interval = 1\n",
            "echo_interval = 30\n",
        );
    });
    let port = wtpd_harness::lab::free_port(true).unwrap();
    edit(
        &dir.join("wtpd.toml"),
        "bind = \"127.0.0.1:0\"",
        &format!("bind = \"127.0.0.1:{port}\""),
    );
    let log = dir.join("wtpd.log");
    let mut first = start(wtpd(), &["--config", "wtpd.toml"], &dir);
    assert!(
        wait_for_state(&dir, "Run", Duration::from_secs(20)),
        "{}",
        read(&log)
    );
    first.0.kill().unwrap(); // SIGKILL: no close_notify
    first.0.wait().unwrap();
    std::fs::remove_file(&log).unwrap();
    let _second = start(wtpd(), &["--config", "wtpd.toml"], &dir);
    assert!(
        wait_for(&log, "CAPWAP State: Run", Duration::from_secs(20)),
        "{}\n--- acsim ---\n{}",
        read(&log),
        read(&dir.join("acsim.log"))
    );
    let ac_log = read(&dir.join("acsim.log"));
    let peer = format!("127.0.0.1:{port}");
    assert_in_order(
        &ac_log,
        &[
            &format!("WTP wtp-sim-1 ({peer}) joined"),
            &format!("New DTLS handshake from {peer} while its session is up"),
            &format!(
                "WTP wtp-sim-1 ({peer}) left: a new DTLS session from the same address replaces it"
            ),
            &format!("DTLS session established with {peer} ("),
            &format!("WTP wtp-sim-1 ({peer}) joined"),
        ],
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `acsim demo --scenario NAME --dir DIR` as README documents it, at the demo's defaults
/// (the 8 MiB image among them); returns the lab folder and the demo's output.
fn run_scenario(scenario: &str) -> (PathBuf, String) {
    let dir = lab(scenario);
    let stdout = demo_in(&dir, &["--scenario", scenario]);
    assert_status_agrees(&stdout);
    (dir, stdout)
}

/// Starts the lab's agent and waits until it counted its first failed download; returns the
/// running agent and its log.
fn first_failed_download(dir: &Path) -> (Killer, String) {
    let w = start(wtpd(), &["--config", "wtpd.toml"], dir);
    let log = dir.join("wtpd.log");
    assert!(
        wait_for_retries(dir, 1, Duration::from_secs(60)),
        "{}",
        read(&log)
    );
    (w, read(&log))
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

#[test]
fn upgrade_downloads_verifies_installs_and_rejoins_with_the_new_version() {
    let (dir, _) = run_scenario("upgrade");
    let log = read(&dir.join("wtpd.log"));
    // The seed's closing line: bytes, messages of 1024 bytes, bytes in the last one.
    let size = std::fs::metadata(dir.join("images/ap1g8")).unwrap().len();
    let msgs = size.div_ceil(1024);
    let closing = format!(
        "> {size} bytes, {msgs} msgs, {} last",
        size - (msgs - 1) * 1024
    );
    assert_in_order(
        &log,
        &[
            "CAPWAP State: Image Data",
            "AP image version 17.3.3.26 backup 8.10.130.0, Controller 17.9.4.27",
            "Version does not match.",
            "upgrade.sh: Script called with args:[PRECHECK]",
            "upgrade.sh: /tmp space: OK available",
            "wtpOpenImgFile: request ap1g8, local",
            "Image Data Request sent to 127.0.0.1, fileName [ap1g8]",
            "Image Data Response from 127.0.0.1",
            "AC accepted previous sent request with result code: 0",
            // The head of the image checked while the rest still arrives.
            "Image manifest checked at byte 262144: 17.9.4.27 signed by",
            &closing,
            "Image transfer completed",
            "Image signing verify success.",
            "Slot b read back: SHA-256",
            "Switched to slot b (17.9.4.27) in one environment write",
            "CAPWAP State: Reset",
            "Booted slot b (17.9.4.27), on trial",
            "AP image version 17.9.4.27 backup 17.3.3.26, Controller 17.9.4.27",
            "CAPWAP State: Run",
            "Slot b (17.9.4.27) marked good",
        ],
    );
    // Debian's fw_printenv reads the environment the agent wrote.
    let out = Command::new("fw_printenv")
        .args(["-c", dir.join("fw_env.config").to_str().unwrap()])
        .output()
        .expect("fw_printenv (libubootenv-tool) must be installed");
    let env = String::from_utf8_lossy(&out.stdout);
    for line in [
        "boot_slot=b",
        "upgrade_available=0",
        "bootcount=0",
        "slot_b_state=good",
        "slot_b_version=17.9.4.27",
        "slot_a_version=17.3.3.26",
    ] {
        assert!(
            env.lines().any(|l| l == line),
            "{line} missing from fw_printenv:\n{env}"
        );
    }
    let served = wtpd_harness::demo::sha256_file(&dir.join("images/ap1g8")).unwrap();
    let got = wtpd_harness::demo::sha256_file(&dir.join("tmp/part.tar")).unwrap();
    assert_eq!(got, served);
    assert!(read(&dir.join("acsim.log")).contains("AP Image Download Success"));
    let json = Command::new(wtpd())
        .args([
            "status",
            "--config",
            dir.join("wtpd.toml").to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&json.stdout);
    assert!(
        json.contains("\"primary_image\":\"17.9.4.27\"")
            && json.contains("\"backup_image\":\"17.3.3.26\""),
        "{json}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn predownload_in_run_keeps_answering_echoes_then_activates() {
    // At its default 8 MiB the image can come in less than one 1 s Echo interval: the demo
    // holds Run with the image staged and counts the Echoes from the request to the activation.
    let (dir, out) = run_scenario("predownload");
    let line = out
        .lines()
        .find(|l| l.starts_with("Predownload    : downloaded and staged in "))
        .unwrap_or_else(|| panic!("no predownload line in the summary:\n{out}"));
    let echoes: u64 = line
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(echoes >= 2, "{line}");
    // acsim's table, read between the predownload and the activation: the AP is still in
    // Run on its old image, with the predownloaded one as its backup.
    let status = acsim_status(&out);
    let rows = status_rows(status);
    assert_eq!(rows.len(), 1, "{status}");
    for (title, want) in [
        ("AP Name", "wtp-sim-1"),
        ("State", "Run"),
        ("Primary", "17.3.3.26"),
        ("Backup", "17.9.4.27"),
        ("Image Status", "Predownloaded"),
        ("Version", "17.9.4.27"),
    ] {
        assert_eq!(cell(&rows[0], title), want, "{title}:\n{status}");
    }
    assert_eq!(
        status_counter(status, "Completed predownloading"),
        "1",
        "{status}"
    );
    let log = read(&dir.join("wtpd.log"));
    assert_in_order(
        &log,
        &[
            "CAPWAP State: Run",
            "Predownload of 17.9.4.27 requested by the AC",
            "Image Data Request sent to",
            "Last block stored, IsPre 1",
            "Predownload of 17.9.4.27 complete",
            "Slot b holds 17.9.4.27 as a good backup",
            "Reset Request activates 17.9.4.27",
            "Switched to slot b (17.9.4.27) in one environment write",
            "Booted slot b (17.9.4.27), on trial",
            "Slot b (17.9.4.27) marked good",
        ],
    );
    assert!(
        !log.contains("CAPWAP State: Image Data"),
        "a predownload stays in Run"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn assert_failure_retried(scenario: &str, ap_line: &str, ac_line: &str) {
    let (dir, _) = run_scenario(scenario);
    let log = read(&dir.join("wtpd.log"));
    assert_in_order(
        &log,
        &[
            ap_line,
            "upgrade.sh: Script called with args:[ABORT]",
            "Image Data Request sent to",
        ],
    );
    assert!(log.contains("CAPWAP State: DTLS Teardown"), "{log}");
    assert!(
        read(&dir.join("acsim.log")).contains(ac_line),
        "{}",
        read(&dir.join("acsim.log"))
    );
    assert!(
        !dir.join("tmp/part.tar").exists(),
        "no stray file after the stop"
    );
    let status = read(&dir.join("state/status.toml"));
    assert!(status.contains("retry_count = "), "{status}");
    assert!(!status.contains("retry_count = 0"), "{status}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn missing_image_is_refused_and_retried() {
    assert_failure_retried(
        "missing-image",
        "Aborting image download(controller refused the image: result code 16",
        "ap1g8: No such file or directory",
    );
}

#[test]
fn image_download_that_cannot_start_restarts_capwap_and_retries() {
    assert_failure_retried(
        "timeout",
        "Going to restart CAPWAP (reason : image download cannot start)",
        "Stalling the transfer",
    );
}

#[test]
fn image_download_that_stalls_restarts_capwap_and_retries() {
    assert_failure_retried(
        "stall",
        "Going to restart CAPWAP (reason : image download stalled)",
        "after 2000 blocks (fault switch)",
    );
}

#[test]
fn teardown_mid_transfer_aborts_as_dtls_cleanup_and_retries() {
    assert_failure_retried(
        "teardown",
        "Aborting image download(0x0): Dtls cleanup, ap1g8",
        "Tearing DTLS down at byte",
    );
}

/// `acsim status --config DIR/acsim.toml`, run from elsewhere as an operator would.
fn acsim_status_command(dir: &Path) -> String {
    let out = Command::new(acsim())
        .args([
            "status",
            "--config",
            dir.join("acsim.toml").to_str().unwrap(),
        ])
        .output()
        .expect("run acsim status");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "acsim status failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// After a predownload, `acsim status` shows the predownloaded version as the AP's backup (the
/// AP staged it in its inactive slot), and its counters agree with its rows, also once the AP
/// has left and is listed as gone.
#[test]
fn acsim_status_after_a_predownload_shows_the_new_backup_and_adds_up() {
    let (dir, _ac) = lab_with_acsim("status-predownload", DemoDtls::Certificate, |dir| {
        prepare_scenario(dir, Scenario::Predownload, 1 << 20).unwrap();
    });
    let wtp = start(wtpd(), &["--config", "wtpd.toml"], &dir);
    let (wlog, alog) = (dir.join("wtpd.log"), dir.join("acsim.log"));
    assert!(
        wait_for_state(&dir, "Run", Duration::from_secs(60)),
        "{}",
        read(&wlog)
    );
    let asked = Command::new(acsim())
        .args([
            "predownload",
            "--config",
            dir.join("acsim.toml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(asked.status.success(), "{asked:?}");
    assert!(
        wait_for(
            &wlog,
            "Image 17.9.4.27 staged for activation",
            Duration::from_secs(60)
        ),
        "{}",
        read(&wlog)
    );
    assert!(wait_for(
        &alog,
        "AP Image Download Success",
        Duration::from_secs(10)
    ));
    // The AP's own status names the staged image as its backup.
    let own = Command::new(wtpd())
        .args(["status", "--config", "wtpd.toml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let own = String::from_utf8_lossy(&own.stdout);
    assert!(
        own.lines()
            .any(|l| l.starts_with("Backup Image") && l.ends_with(": 17.9.4.27")),
        "{own}"
    );

    let status = acsim_status_command(&dir);
    assert_status_agrees(&status);
    let rows = status_rows(&status);
    assert_eq!(rows.len(), 1, "{status}");
    for (title, want) in [
        ("State", "Run"),
        ("Primary", "17.3.3.26"),
        ("Backup", "17.9.4.27"),
        ("Image Status", "Predownloaded"),
    ] {
        assert_eq!(cell(&rows[0], title), want, "{title}:\n{status}");
    }
    assert_eq!(
        status_counter(&status, "Completed predownloading"),
        "1",
        "{status}"
    );

    // The AP stops: acsim lists it as gone, and still counts it.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(wtp.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    assert!(wait_for(
        &alog,
        "left: DTLS close_notify",
        Duration::from_secs(10)
    ));
    let status = acsim_status_command(&dir);
    assert_status_agrees(&status);
    let rows = status_rows(&status);
    assert_eq!(
        status_counter(&status, "Total number of APs"),
        "1",
        "{status}"
    );
    assert_eq!(cell(&rows[0], "State"), "Gone", "{status}");
    assert_eq!(cell(&rows[0], "Backup"), "17.9.4.27", "{status}");
    drop(wtp);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An image this board would refuse (here: signed for another hardware type) stops as soon as
/// its manifest is on disk, long before its last block; the partial file goes, the controller
/// hears of it, and the AP retries after its backoff.
#[test]
fn an_image_for_another_hardware_type_is_refused_early_and_retried() {
    let size: u64 = 8 << 20;
    let (dir, _ac) = lab_with_acsim("early-refusal", DemoDtls::Certificate, |dir| {
        prepare_scenario(dir, Scenario::Upgrade, size).unwrap();
        // The controller serves ap3g3's signed image under ap1g8, the lab board's type.
        std::fs::copy(dir.join("images/ap3g3"), dir.join("images/ap1g8")).unwrap();
    });
    let (_wtp, log) = first_failed_download(&dir);
    assert_in_order(
        &log,
        &[
            "Image Data Request sent to",
            "Aborting image download(image refused at byte ",
            "Image signing verify failed: image is for hardware type ap3g3, this board is ap1g8), ap1g8",
            "upgrade.sh: Script called with args:[ABORT]",
            "upgrade.sh: Cleanup tmp files ... removed tmp/part.tar",
            "Image download retry 1 in",
        ],
    );
    let at: u64 = log
        .split("image refused at byte ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .expect("the byte of the refusal");
    assert!(at < size / 8, "refused only at byte {at} of {size}");
    assert!(!log.contains("Image transfer completed"), "{log}");
    // The answer is on its way when the agent logs the refusal: give acsim time to log it
    // (a loaded machine delays it by more than a read right away allows).
    let alog = dir.join("acsim.log");
    assert!(
        wait_for(&alog, "image refused at byte", Duration::from_secs(20)),
        "the controller was not told:\n{}",
        read(&alog)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn acsim_image_folder_builds_signed_images_that_verify() {
    let dir = lab("image-folder");
    std::fs::create_dir_all(&dir).unwrap();
    let pki = wtpd_harness::pki::generate_lab_pki(&dir.join("pki")).unwrap();
    std::fs::write(dir.join("rootfs.img"), vec![7u8; 100_000]).unwrap();
    let out = Command::new(acsim())
        .args([
            "image",
            "folder",
            "--version",
            "17.12.1.5",
            "--types",
            "ap1g8,ap3g3",
        ])
        .arg("--rootfs")
        .arg(dir.join("rootfs.img"))
        .arg("--key")
        .arg(&pki.image_signer_key)
        .arg("--chain")
        .arg(&pki.image_signer_cert)
        .arg("--chain")
        .arg(&pki.image_intermediate_cert)
        .arg("--dir")
        .arg(dir.join("images"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&dir.join("images/version.info")), "17.12.1.5\n");
    for (t, other) in [("ap1g8", "ap3g3"), ("ap3g3", "ap1g8")] {
        let f = std::fs::File::open(dir.join("images").join(t)).unwrap();
        let bundle = wtpd::image::bundle::BundleReader::new(f).unwrap();
        let policy = wtpd::image::verify::TrustPolicy {
            anchors: wtpd::image::verify::TrustPolicy::anchors_from_files(std::slice::from_ref(
                &pki.image_root_cert,
            ))
            .unwrap(),
            hardware_type: t.into(),
            board: "any".into(),
            not_before_floor: 0,
            now: None,
            allow_downgrade: false,
            current_version: Some("17.9.4.27".into()),
            expected_version: None,
        };
        bundle.verify(&policy).unwrap();
        let wrong = wtpd::image::verify::TrustPolicy {
            hardware_type: other.into(),
            ..policy
        };
        assert!(
            bundle.verify(&wrong).is_err(),
            "{t} must not verify as {other}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// SHA-256 of the board's environment and both slot files: what a refused image must leave
/// exactly as it was.
fn board_digest(dir: &Path) -> Vec<(String, [u8; 32])> {
    ["env.bin", "slots/a.img", "slots/b.img"]
        .iter()
        .map(|f| {
            let bytes = std::fs::read(dir.join(f)).unwrap();
            (f.to_string(), openssl::sha::sha256(&bytes))
        })
        .collect()
}

fn set_env(dir: &Path, vars: &[(&str, &str)]) {
    use wtpd::image::bootenv;
    let cfg = bootenv::EnvConfig::from_file(dir.join("fw_env.config"), bootenv::ByteOrder::Little)
        .unwrap();
    let (mut env, _) = bootenv::read(&cfg).unwrap();
    for (k, v) in vars {
        env.set(*k, *v).unwrap();
    }
    bootenv::write(&cfg, &env).unwrap();
}

fn get_env(dir: &Path) -> wtpd::image::bootenv::Env {
    use wtpd::image::bootenv;
    let cfg = bootenv::EnvConfig::from_file(dir.join("fw_env.config"), bootenv::ByteOrder::Little)
        .unwrap();
    bootenv::read(&cfg).unwrap().0
}

/// Both environment copies unusable (zeroed: a CRC that cannot match): the agent cannot know
/// which slot U-Boot boots, so it joins and serves the controller but downloads and writes
/// nothing, and says so once.
#[test]
fn an_unusable_environment_stops_upgrades_but_not_the_agent() {
    for (name, bytes) in [
        ("zeroed", vec![0u8; 0x4000]),
        ("erased", vec![0xffu8; 0x4000]),
        ("truncated", vec![0u8; 100]),
    ] {
        let (dir, _ac) = lab_with_acsim(&format!("bad-env-{name}"), DemoDtls::Certificate, |dir| {
            prepare_scenario(dir, Scenario::Upgrade, 1 << 20).unwrap();
            std::fs::write(dir.join("env.bin"), &bytes).unwrap();
        });
        let before = board_digest(&dir);
        let _w = start(wtpd(), &["--config", "wtpd.toml"], &dir);
        let log = dir.join("wtpd.log");
        assert!(
            wait_for_state(&dir, "Run", Duration::from_secs(20)),
            "{name}: {}",
            read(&log)
        );
        std::thread::sleep(Duration::from_millis(500));
        let text = read(&log);
        assert_eq!(
            text.matches("U-Boot environment unusable").count(),
            2,
            "{name}: one error at start, one refusal of the controller's version:\n{text}"
        );
        assert!(text.contains("Not downloading 17.9.4.27"), "{name}: {text}");
        assert!(!text.contains("Image Data Request sent"), "{name}: {text}");
        assert_eq!(board_digest(&dir), before, "{name}: nothing written");
        let status = read(&dir.join("state/status.toml"));
        assert!(
            status.contains("U-Boot environment unusable"),
            "{name}: {status}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The controller's image says 17.9.4.28 inside its signed manifest while version.info (what
/// the controller announces) says 17.9.4.27: refused as soon as the manifest is on disk, the
/// AC told in the Result Code of its next Image Data Request, nothing written. Before, the
/// AP installed it, rebooted, saw "Version does not match" again and wrote its good slot.
#[test]
fn an_image_whose_manifest_is_not_the_announced_version_is_refused() {
    let (dir, _ac) = lab_with_acsim("not-announced", DemoDtls::Certificate, |dir| {
        prepare_scenario(dir, Scenario::Upgrade, 1 << 20).unwrap();
        wtpd_harness::demo::write_image_folder(
            &dir.join("images"),
            &dir.join("pki"),
            "17.9.4.28",
            1 << 20,
            None,
        )
        .unwrap();
        std::fs::write(dir.join("images/version.info"), "17.9.4.27\n").unwrap();
    });
    let before = board_digest(&dir);
    let (_w, text) = first_failed_download(&dir);
    assert!(
        text.contains(
            "the signed manifest says version 17.9.4.28, the controller announced 17.9.4.27"
        ),
        "{text}"
    );
    assert!(!text.contains("Image signing verify success"), "{text}");
    assert!(!text.contains("no DTLS session"), "{text}");
    assert_eq!(board_digest(&dir), before, "nothing written");
    let alog = read(&dir.join("acsim.log"));
    assert!(alog.contains("WTP result code 16"), "{alog}");
    assert!(
        alog.contains("the controller announced 17.9.4.27"),
        "{alog}"
    );
    assert!(!alog.contains("result code 18"), "{alog}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A signed head with a bad body (one payload byte flipped near its end, so the head check at
/// 256 KiB passes): refused when the whole image is verified after the last block, and that
/// refusal is the answer to the AC's last Image Data Request, sent before the DTLS close.
#[test]
fn a_bad_body_is_refused_in_the_answer_to_the_last_block() {
    let size: u64 = 1 << 20;
    let (dir, _ac) = lab_with_acsim("bad-body", DemoDtls::Certificate, |dir| {
        prepare_scenario(dir, Scenario::Upgrade, size).unwrap();
        let p = dir.join("images/ap1g8");
        let mut image = std::fs::read(&p).unwrap();
        let end_of_payload = image.len() - 1024 - 512; // end blocks and the payload's padding
        image[end_of_payload - 10] ^= 1;
        std::fs::write(&p, image).unwrap();
    });
    let before = board_digest(&dir);
    let (_w, text) = first_failed_download(&dir);
    assert_in_order(
        &text,
        &[
            "Image Data Request sent to",
            "Image manifest checked at byte",
            "Image transfer completed from WLC",
            "payload rootfs.img SHA-256",
            "Aborting image download(image: payload rootfs.img SHA-256 ",
            "Image download retry 1 in",
            "CAPWAP State: DTLS Teardown",
            "DTLS session with",
        ],
    );
    assert!(!text.contains("Image signing verify success"), "{text}");
    assert!(!text.contains("no DTLS session"), "{text}");
    assert_eq!(board_digest(&dir), before, "nothing written");
    let alog = read(&dir.join("acsim.log"));
    assert!(alog.contains("WTP result code 16"), "{alog}");
    assert!(alog.contains("payload rootfs.img SHA-256"), "{alog}");
    assert!(!alog.contains("AP Image Download Success"), "{alog}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A booted slot still on trial keeps the other (the last known-good) slot untouched: the agent
/// joins without downloading, reaches Run, marks its slot good, and only then downloads the
/// controller's version into the other slot.
///
/// The board guards the trial with a watchdog (`[watchdog]`), here a stand-in: a FIFO where
/// /dev/watchdog would be (no watchdog driver on the build machine; the real i6300esb is
/// tests/qemu_system.rs's aarch64 board). The agent opens it on trial, pets it (its writes come
/// out of the FIFO) and disarms it with the magic close once the slot is marked good.
#[test]
fn on_trial_the_agent_is_marked_good_before_it_writes_the_other_slot() {
    let (dir, _ac) = lab_with_acsim("on-trial", DemoDtls::Certificate, |dir| {
        prepare_scenario(dir, Scenario::Upgrade, 1 << 20).unwrap();
        set_env(
            dir,
            &[
                ("boot_slot", "b"),
                ("slot_b_version", "17.9.4.26"),
                ("slot_b_state", "new"),
                ("upgrade_available", "1"),
                ("bootcount", "1"),
                ("bootlimit", "3"),
            ],
        );
        let board = dir.join("board.toml");
        let text = read(&board);
        std::fs::write(
            &board,
            format!("{text}\n[watchdog]\ndevice = \"watchdog-stand-in\"\ntimeout = 3\n"),
        )
        .unwrap();
    });
    let fifo = dir.join("watchdog-stand-in");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    // Opens when the agent does, and ends when it closes the device.
    let petted = std::thread::spawn(move || std::fs::read(&fifo).unwrap());
    let mut w = Command::new(wtpd())
        .args(["--config", "wtpd.toml"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = w.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(90) {
            let _ = w.kill();
            panic!("no reboot:\n{}", read(&dir.join("wtpd.log")));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = read(&dir.join("wtpd.log"));
    assert_eq!(status.code(), Some(75), "the simulated reboot:\n{log}");
    assert_in_order(
        &log,
        &[
            "Booted slot b (17.9.4.26), on trial",
            "watchdog-stand-in opened (driver unknown): the slot is on trial",
            "WDIOC_SETTIMEOUT: ENOTTY",
            "watchdog-stand-in: timeout unknown; petting as for 3 s",
            "Not downloading 17.9.4.27: the booted slot is on trial",
            "CAPWAP State: Run",
            "Slot b (17.9.4.26) marked good",
            "watchdog-stand-in: slot marked good: disarmed (magic close)",
            "Trial over; the controller runs 17.9.4.27: restarting CAPWAP to download it",
            "Image Data Request sent to",
            "Image signing verify success.",
            "Writing rootfs.img",
            "to slot a",
            "Switched to slot a (17.9.4.27)",
        ],
    );
    let env = get_env(&dir);
    assert_eq!(env.get("boot_slot"), Some("a"));
    assert_eq!(
        env.get("slot_b_state"),
        Some("good"),
        "the fallback is proven good"
    );
    assert_eq!(env.get("upgrade_available"), Some("1"));
    // Petted at least once (a '.'), then the magic close and the close (the read ended).
    let petted = petted.join().unwrap();
    assert!(
        petted.len() >= 2
            && petted.ends_with(b"V")
            && petted[..petted.len() - 1].iter().all(|&b| b == b'.'),
        "{:?}",
        String::from_utf8_lossy(&petted)
    );
    assert!(!log.contains("stopped petting"), "{log}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Trust anchors that are missing or not certificates are refused at start, not after every
/// download.
#[test]
fn unusable_trust_anchors_refuse_to_start() {
    let dir = lab("bad-anchors");
    let port = free_port_pair().unwrap();
    write_lab(&dir, DemoDtls::Certificate, port).unwrap();
    std::fs::write(dir.join("not-a-cert.pem"), "hello\n").unwrap();
    for (trust, why) in [
        ("missing.pem", "missing.pem"),
        ("not-a-cert.pem", "no CERTIFICATE block"),
    ] {
        edit(&dir.join("wtpd.toml"), "pki/image-root.pem", trust);
        let out = Command::new(wtpd())
            .args(["--config", "wtpd.toml"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned() + &read(&dir.join("wtpd.log"));
        assert!(!out.status.success(), "{trust}: started anyway");
        assert!(
            err.contains("image trust anchors") && err.contains(why),
            "{trust}: {err}"
        );
        assert!(!err.contains("Discovery"), "{trust}: {err}");
        edit(&dir.join("wtpd.toml"), trust, "pki/image-root.pem");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Garbage in the state files is logged, naming the file, and ignored; a time floor far in
/// the future does not lock every image out.
#[test]
fn garbage_state_files_are_named_and_ignored() {
    let (dir, _ac) = lab_with_acsim("bad-state", DemoDtls::Certificate, |dir| {
        prepare_scenario(dir, Scenario::Upgrade, 1 << 20).unwrap();
        std::fs::create_dir_all(dir.join("state")).unwrap();
        std::fs::write(dir.join("state/status.toml"), "retry_count = [oops\n").unwrap();
        std::fs::write(dir.join("state/time_floor"), "99999999999\n").unwrap();
    });
    let mut w = start(wtpd(), &["--config", "wtpd.toml"], &dir);
    let log = dir.join("wtpd.log");
    assert!(
        wait_for(&log, "Switched to slot b", Duration::from_secs(60)),
        "{}",
        read(&log)
    );
    let _ = w.0.wait();
    let text = read(&log);
    assert!(
        text.contains("state/status.toml: not a status file"),
        "{text}"
    );
    assert!(
        text.contains(
            "state/time_floor: time floor 99999999999 is later than the latest time accepted"
        ),
        "{text}"
    );
    let floor: u64 = read(&dir.join("state/time_floor")).trim().parse().unwrap();
    assert!(
        floor < 99999999999,
        "the persisted floor is a real time now: {floor}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The upgrade with the real binaries onto a board whose slots are simulated NAND partitions
/// (`kind = "mtd"` with `sim = { ... }`: SimFlash, a file with flash semantics, a fake named
/// as one) with a bad block inside the image: wtpd erases and writes around it, reads the slot
/// back through the same bad-block rule, switches, reboots into slot b and marks it good.
#[test]
fn upgrade_onto_a_simulated_nand_slot_skips_its_bad_block() {
    let dir = lab("nand-slots");
    std::fs::create_dir_all(&dir).unwrap();
    let board = wtpd_harness::demo::SIM_BOARD
        .replace(
            "device = \"slots/a.img\"\nsize = 67108864\n",
            "device = \"slots/a.img\"\nsize = 16777216\nkind = \"mtd\"\nsim = { type = \"nand\", page = 2048, bad_blocks = [3] }\n",
        )
        .replace(
            "device = \"slots/b.img\"\nsize = 67108864\n",
            "device = \"slots/b.img\"\nsize = 16777216\nkind = \"mtd\"\nsim = { type = \"nand\", page = 2048, bad_blocks = [3] }\n",
        );
    assert_eq!(board.matches("kind = \"mtd\"").count(), 2, "{board}");
    std::fs::write(dir.join("board.toml"), board).unwrap();
    demo_in(&dir, &["--scenario", "upgrade"]);
    let log = read(&dir.join("wtpd.log"));
    assert_in_order(
        &log,
        &[
            "Image signing verify success.",
            "Writing rootfs.img",
            "on NAND flash; bad blocks skipped: 1",
            "Slot b read back: SHA-256",
            "Switched to slot b (17.9.4.27) in one environment write",
            "Booted slot b (17.9.4.27), on trial",
            "Slot b (17.9.4.27) marked good",
        ],
    );
    // The bad block was never erased nor written: still the 0xFF of a fresh device, while the
    // blocks on either side hold the image.
    let b = std::fs::read(dir.join("slots/b.img")).unwrap();
    let es = 128 * 1024;
    assert!(b[3 * es..4 * es].iter().all(|&x| x == 0xFF));
    assert!(b[2 * es..3 * es].iter().any(|&x| x != 0xFF));
    assert!(b[4 * es..5 * es].iter().any(|&x| x != 0xFF));
    let _ = std::fs::remove_dir_all(dir);
}

/// Slot mode with the real binaries: a board whose download directory is far smaller than the
/// image (a 1 MiB tmpfs when this runs as root; else a directory that cannot even be created:
/// `tmp` is a regular file) upgrades anyway, the image streamed into slot b as it arrives,
/// read back, switched in one write; tmp/part.tar never exists.
#[test]
fn slot_mode_upgrades_a_board_whose_download_dir_is_too_small_for_the_image() {
    let dir = lab("slot-mode");
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let tmp = dir.join("tmp");
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "tmpfs",
            tmp.to_str().unwrap(),
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        std::fs::remove_dir(&tmp).unwrap();
        std::fs::write(&tmp, b"not a directory").unwrap();
    }
    struct Unmount(PathBuf, bool);
    impl Drop for Unmount {
        fn drop(&mut self) {
            if self.1 {
                let _ = Command::new("umount").arg(&self.0).status();
            }
        }
    }
    let _unmount = Unmount(tmp.clone(), mounted);
    let stdout = demo_in(&dir, &["--scenario", "upgrade", "--download-mode", "slot"]);
    assert!(stdout.contains("no tmp/part.tar"), "{stdout}");
    let log = read(&dir.join("wtpd.log"));
    let size = std::fs::metadata(dir.join("images/ap1g8")).unwrap().len();
    assert!(
        size > 8 << 20,
        "the image ({size} bytes) is larger than the 1 MiB tmpfs"
    );
    assert_in_order(
        &log,
        &[
            "Download mode slot: images stream into the inactive slot",
            "upgrade.sh: Script called with args:[PRECHECK]",
            "upgrade.sh: slot b size: OK available 65536",
            "wtpOpenImgFile: request ap1g8, local slot b (",
            "Image manifest verified at byte",
            "Streaming rootfs.img",
            "Slot b read back: SHA-256",
            "Image transfer completed",
            "Image signing verify success. (17.9.4.27",
            "Switched to slot b (17.9.4.27) in one environment write",
            "Booted slot b (17.9.4.27), on trial",
            "Slot b (17.9.4.27) marked good",
        ],
    );
    assert!(!log.contains("part.tar"), "{log}");
    assert!(
        !log.contains("Image manifest checked at byte 262144"),
        "{log}"
    );
    if mounted {
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            0,
            "tmp holds nothing"
        );
    }
    let env = get_env(&dir);
    assert_eq!(env.get("boot_slot"), Some("b"));
    assert_eq!(env.get("slot_b_state"), Some("good"));
    drop(_unmount);
    let _ = std::fs::remove_dir_all(dir);
}
