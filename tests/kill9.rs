//! kill -9 of the real agent at random moments of a real upgrade (download, verify, install,
//! switch), at least 100 times: after each kill the simulated board's bootloader runs, the
//! environment is valid and boots a slot whose contents verify, and the agent, started again,
//! finishes the upgrade (or it was finished) and rejoins on the new version.

mod common;

use common::process::{read, start};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wtpd::board::Board;
use wtpd::image::bootenv;
use wtpd::image::install::{hash_slot, AbState, Disk};
use wtpd::rng::Rng;
use wtpd_harness::demo::{
    boot_sim_board, free_port_pair, prepare_scenario, write_board_storage, write_lab, DemoDtls,
    Scenario,
};

const ROUNDS: u32 = 100;

/// The booted slot's contents verify: slot b holds the signed payload whenever the environment
/// boots it; slot a, never written, still holds what it held.
fn check_boot(dir: &Path, board: &Board, payload: ([u8; 32], u64), round: u32) -> String {
    let cfg = board.env_config().unwrap().unwrap();
    let mut disk = Disk::new();
    let (env, _) = bootenv::read_with(&mut disk, &cfg)
        .unwrap_or_else(|e| panic!("round {round}: no valid environment: {e}"));
    let ab = AbState::read(board, &env).unwrap();
    let slot = board.slot(&ab.boot_slot).unwrap().clone();
    let mut buf = vec![0u8; 1 << 20];
    if ab.boot_slot == "b" {
        let sha = hash_slot(&mut disk, &slot, payload.1, &mut buf).unwrap();
        assert_eq!(
            sha, payload.0,
            "round {round}: slot b boots without the verified payload"
        );
        assert_eq!(ab.primary().as_deref(), Some("17.9.4.27"), "round {round}");
    } else {
        let n = wtpd::image::install::SlotStorage::read_at(&mut disk, &slot, 0, &mut buf).unwrap();
        assert!(
            buf[..n].iter().all(|b| *b == 0),
            "round {round}: slot a was written"
        );
        assert_eq!(ab.primary().as_deref(), Some("17.3.3.26"), "round {round}");
    }
    let _ = dir;
    ab.boot_slot
}

#[test]
fn kill_9_at_random_moments_of_an_upgrade_never_bricks() {
    let acsim = wtpd_harness::bins::acsim();
    let wtpd = env!("CARGO_BIN_EXE_wtpd");
    let dir: PathBuf = std::env::temp_dir().join(format!("wtpd-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port_pair().unwrap();
    write_lab(&dir, DemoDtls::Certificate, port).unwrap();
    prepare_scenario(&dir, Scenario::Upgrade, 1 << 20).unwrap();
    // Quicker Discovery for many rounds.
    let w = read(&dir.join("wtpd.toml")).replace(
        "discovery_interval = 1\n",
        "discovery_interval = 0.1\ndtls_session_delete = 0.2\n",
    );
    std::fs::write(dir.join("wtpd.toml"), w).unwrap();
    let board = Board::load(&dir.join("board.toml")).unwrap();
    let payload = {
        let f = std::fs::File::open(dir.join("images/ap1g8")).unwrap();
        let b = wtpd::image::bundle::BundleReader::new(f).unwrap();
        let p = &b.manifest().payloads[0];
        (p.sha256, p.size)
    };
    let _ac = start(acsim, &["run", "--config", "acsim.toml"], &dir);
    let t = Instant::now();
    while !read(&dir.join("acsim.log")).contains("listening") {
        assert!(t.elapsed() < Duration::from_secs(10), "acsim did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut rng = Rng::new(0x9e11);
    let (mut on_a, mut on_b) = (0, 0);
    for round in 1..=ROUNDS {
        write_board_storage(&dir, "17.3.3.26", "8.10.130.0").unwrap();
        let _ = std::fs::remove_dir_all(dir.join("state"));
        let _ = std::fs::remove_dir_all(dir.join("tmp"));
        let log = dir.join("wtpd.log");
        let _ = std::fs::remove_file(&log);
        // Kill at a random moment of the first 1.5 s: discovery, DTLS, download, install, switch.
        let mut w = start(wtpd, &["--config", "wtpd.toml"], &dir);
        std::thread::sleep(Duration::from_millis(rng.below(1500)));
        let _ = w.0.kill(); // SIGKILL
        let _ = w.0.wait();
        boot_sim_board(&dir).unwrap();
        match check_boot(&dir, &board, payload, round).as_str() {
            "a" => on_a += 1,
            _ => on_b += 1,
        }
        // Restarted, the agent finishes: (download, install, reset, boot) until it runs the
        // new version and marks it good.
        let t = Instant::now();
        loop {
            let mut w = start(wtpd, &["--config", "wtpd.toml"], &dir);
            let started = Instant::now();
            let code = loop {
                if let Ok(Some(s)) = w.0.try_wait() {
                    break s.code();
                }
                if read(&log).contains("(17.9.4.27) marked good")
                    || read(&log).contains("Version matches the controller.")
                        && read(&log).contains("CAPWAP State: Run")
                {
                    break None;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "round {round}: agent stuck:\n{}",
                    read(&log)
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            if code.is_none() {
                break;
            }
            assert_eq!(
                code,
                Some(75),
                "round {round}: the agent exits only to reboot:\n{}",
                read(&log)
            );
            boot_sim_board(&dir).unwrap();
            check_boot(&dir, &board, payload, round);
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "round {round}: no convergence"
            );
        }
        assert_eq!(
            check_boot(&dir, &board, payload, round),
            "b",
            "round {round}: ends on the new slot"
        );
    }
    eprintln!("{ROUNDS} kill -9 rounds: after the kill {on_a} booted the old slot, {on_b} the new one; all converged on 17.9.4.27");
    let _ = std::fs::remove_dir_all(&dir);
}
