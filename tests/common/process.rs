//! Real processes for the loopback tests: start one, kill it when the test ends, and wait for
//! what it says: its status file where it has one (the agent's `state/status.toml`), its log
//! where nothing else says it.

#![allow(dead_code)] // each test file uses its own part

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wtpd::status::WtpStatus;

/// Kills the process when the test ends, whatever happens.
pub struct Killer(pub Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bin` in `dir`, its output discarded (the programs under test log to files).
pub fn start(bin: &str, args: &[&str], dir: &Path) -> Killer {
    Killer(
        Command::new(bin)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    )
}

/// A file's text, or nothing while it does not exist.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Polls `done` every 50 ms for at most `limit`.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

/// Waits until the file at `p` contains `needle` (for what only a log says).
pub fn wait_for(p: &Path, needle: &str, limit: Duration) -> bool {
    wait_until(limit, || read(p).contains(needle))
}

/// The agent's status in a lab folder (`state/status.toml`, written atomically).
pub fn agent_status(dir: &Path) -> Option<WtpStatus> {
    WtpStatus::load(&dir.join("state"))
}

/// Waits until the agent of the lab in `dir` says it is in `state` (a CAPWAP state name).
pub fn wait_for_state(dir: &Path, state: &str, limit: Duration) -> bool {
    wait_until(limit, || {
        agent_status(dir).is_some_and(|s| s.state == state)
    })
}

/// Waits until the agent has counted `n` failed downloads.
pub fn wait_for_retries(dir: &Path, n: u32, limit: Duration) -> bool {
    wait_until(limit, || {
        agent_status(dir).is_some_and(|s| s.retry_count >= n)
    })
}
