//! Helpers shared by the tests that run the real image servers (tests/fetch_*.rs).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn acsim() -> &'static str {
    wtpd_harness::bins::acsim()
}
pub fn wtpd() -> &'static str {
    env!("CARGO_BIN_EXE_wtpd")
}

/// A fresh folder for one test.
pub fn lab(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wtpd-fetch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

pub fn wait_for(p: &Path, needle: &str, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if read(p).contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn wait_count(p: &Path, needle: &str, n: usize, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if read(p).matches(needle).count() >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[allow(unused_imports)] // not every fetch test starts a server of its own
pub use crate::common::process::{start, Killer};

pub fn run(bin: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run")
}

pub fn sha256(p: &Path) -> [u8; 32] {
    wtpd_harness::demo::sha256_file(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Writes a file of `size` pseudo-random bytes.
pub fn random_file(p: &Path, size: u64, seed: u64) {
    use std::io::Write;
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut rng = wtpd::rng::Rng::new(seed);
    let mut f = std::io::BufWriter::new(std::fs::File::create(p).unwrap());
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..k]);
        f.write_all(&buf[..k]).unwrap();
        left -= k as u64;
    }
    f.flush().unwrap();
}
