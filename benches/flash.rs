//! Speed of a slot write and read-back on simulated flash (issue 13): `cargo bench --bench
//! flash`.
//!
//! For NOR (64 KiB erase blocks) and NAND (2 KiB pages, 128 KiB erase blocks), in this one
//! process and on the same temporary file system, warm page cache:
//!
//! - **ours**: the agent's path for an MTD slot, on a [`SimFlash`] file of the image's size
//!   (created erased beforehand, not timed): read the image file in `install::CHUNK` pieces,
//!   [`FlashSlot::begin`] (the good-block count), `write_at` each piece (the writer erases
//!   each block before writing it and writes whole pages), `finish`, then read the slot back
//!   through the bad-block-skipping reader and SHA-256 it (ring, as the install does);
//! - **dd**: `sh -c 'dd if=IMAGE of=FILE bs=128K conv=notrunc status=none && sha256sum FILE'`
//!   on a regular file of the same size filled with 0xFF (the same kind of file, the same
//!   bytes written and hashed).
//!
//! - **dd+openssl**: the same with `openssl dgst -sha256` instead of coreutils' `sha256sum`
//!   (which on Debian 12 does not use the CPU's SHA extensions, and is then the slower half
//!   of the baseline; OpenSSL, like ring, does).
//!
//! The figure is the ratio of the two times (ours / dd; the goal is at most 1.2). Two further
//! measurements say where our time goes: **sim floor**, the same erases and page writes made
//! straight on SimFlash (no writer), plus the same read-back and hash, which is what the
//! simulation itself costs (each erase is a write of 0xFF over the block; a page write into a
//! freshly erased page is one write, any other a read of the page, to check it, and a write);
//! and **writer alone**, the writer and
//! reader over a flash that keeps nothing (no I/O), which is our code's own cost.
//!
//! `WTPD_BENCH_FLASH_MIB` sets the image size (default 64), `WTPD_BENCH_REPEAT` the runs per
//! measurement (default 5; medians are reported with their range). Run by `cargo test` (no
//! `--bench` argument) it does nothing.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use wtpd::flash::sim::SimFlash;
use wtpd::flash::writer::FlashSlot;
use wtpd::flash::{Flash, FlashInfo};
use wtpd::image::install::CHUNK;
use wtpd::image::sha256::Sha256;

const MIB: u64 = 1024 * 1024;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("flash bench: skipped (run it with `cargo bench --bench flash`)");
        return;
    }
    let mib: u64 = std::env::var("WTPD_BENCH_FLASH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let repeat: usize = std::env::var("WTPD_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let size = mib * MIB;
    let dir = std::env::temp_dir().join(format!("wtpd-bench-flash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("image");
    let mut bytes = vec![0u8; size as usize];
    wtpd::rng::Rng::new(13).fill(&mut bytes);
    std::fs::write(&image, &bytes).unwrap();
    let want = openssl::sha::sha256(&bytes);
    drop(bytes);
    println!(
        "flash bench: {mib} MiB image, {repeat} runs each, in {}",
        dir.display()
    );
    let mut summary = Vec::new();
    for (name, info) in [
        ("NOR", SimFlash::nor(size, 65536)),
        ("NAND", SimFlash::nand(size, 2048)),
    ] {
        let dev = dir.join(format!("{name}.sim"));
        let plain = dir.join(format!("{name}.file"));
        let mut ours = Vec::new();
        let mut dd = Vec::new();
        let mut dd_ossl = Vec::new();
        let mut floor = Vec::new();
        let mut alone = Vec::new();
        for _ in 0..repeat {
            SimFlash::create(&dev, info).unwrap();
            let (t, got) = ours_once(&dev, info, &image, size);
            assert_eq!(got, want, "{name}: read-back differs");
            ours.push(t);

            std::fs::write(&plain, vec![0xFFu8; size as usize]).unwrap();
            dd.push(dd_once(&image, &plain, &want, "sha256sum"));
            std::fs::write(&plain, vec![0xFFu8; size as usize]).unwrap();
            dd_ossl.push(dd_once(&image, &plain, &want, "openssl dgst -sha256 -r"));

            SimFlash::create(&dev, info).unwrap();
            let (t, got) = floor_once(&dev, info, &image, size);
            assert_eq!(got, want, "{name}: floor read-back differs");
            floor.push(t);

            alone.push(alone_once(info, &image, size));
        }
        let ratios: Vec<f64> = ours
            .iter()
            .zip(&dd)
            .map(|(o, d)| o.as_secs_f64() / d.as_secs_f64())
            .collect();
        let ossl_ratios: Vec<f64> = ours
            .iter()
            .zip(&dd_ossl)
            .map(|(o, d)| o.as_secs_f64() / d.as_secs_f64())
            .collect();
        let floor_ratios: Vec<f64> = floor
            .iter()
            .zip(&dd)
            .map(|(o, d)| o.as_secs_f64() / d.as_secs_f64())
            .collect();
        let mbs = |d: &[Duration]| size as f64 / 1e6 / median_secs(d);
        println!(
            "{name:5} ours {:7.1} MB/s   dd+sha256sum {:7.1} MB/s   dd+openssl {:7.1} MB/s   sim floor {:7.1} MB/s   writer+reader+hash alone {:7.1} MB/s",
            mbs(&ours),
            mbs(&dd),
            mbs(&dd_ossl),
            mbs(&floor),
            mbs(&alone)
        );
        summary.push(format!(
            "{name:5} ours/(dd+sha256sum) {} (range {:.2}-{:.2}); ours/(dd+openssl) {} (range {:.2}-{:.2}); sim floor/(dd+sha256sum) {}; ours/sim floor {:.2}",
            fmt_ratio(&ratios),
            min(&ratios),
            max(&ratios),
            fmt_ratio(&ossl_ratios),
            min(&ossl_ratios),
            max(&ossl_ratios),
            fmt_ratio(&floor_ratios),
            median_secs(&ours) / median_secs(&floor),
        ));
    }
    println!("\nsummary (medians of {repeat} runs; goal ours/dd <= 1.2):");
    for s in summary {
        println!("  {s}");
    }
    if std::env::var_os("WTPD_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Reads the image in CHUNK pieces into `sink`.
fn stream(image: &Path, mut sink: impl FnMut(u64, &[u8])) {
    let mut f = File::open(image).unwrap();
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    loop {
        let n = read_full(&mut f, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        sink(off, &buf[..n]);
        off += n as u64;
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Hashes `len` bytes read through `read` in CHUNK pieces.
fn hash_back(len: u64, mut read: impl FnMut(u64, &mut [u8]) -> usize) -> [u8; 32] {
    let mut buf = vec![0u8; CHUNK];
    let mut h = Sha256::new();
    let mut off = 0;
    while off < len {
        let want = (len - off).min(CHUNK as u64) as usize;
        let n = read(off, &mut buf[..want]);
        assert!(n > 0);
        h.update(&buf[..n]);
        off += n as u64;
    }
    h.finish()
}

fn ours_once(dev: &Path, info: FlashInfo, image: &Path, len: u64) -> (Duration, [u8; 32]) {
    let t = Instant::now();
    let mut slot = FlashSlot::new(SimFlash::open(dev, info, &[]).unwrap());
    slot.begin(len).unwrap();
    stream(image, |off, data| slot.write_at(off, data).unwrap());
    slot.finish().unwrap();
    let got = hash_back(len, |off, buf| slot.read_at(off, buf).unwrap());
    (t.elapsed(), got)
}

/// The simulation's own cost: the same erases and whole-block page writes made directly.
fn floor_once(dev: &Path, info: FlashInfo, image: &Path, len: u64) -> (Duration, [u8; 32]) {
    let t = Instant::now();
    let mut f = SimFlash::open(dev, info, &[]).unwrap();
    let es = u64::from(info.erase_size);
    stream(image, |off, data| {
        // CHUNK is a multiple of both erase sizes here.
        let mut at = 0;
        while at < data.len() {
            let o = off + at as u64;
            f.erase(o, es).unwrap();
            f.write_at(o, &data[at..at + es as usize]).unwrap();
            at += es as usize;
        }
    });
    let got = hash_back(len, |off, buf| {
        f.read_at(off, buf).unwrap();
        buf.len()
    });
    (t.elapsed(), got)
}

/// A flash that keeps nothing: the writer's and reader's own cost, and the hash.
struct NullFlash(FlashInfo);

impl Flash for NullFlash {
    fn info(&self) -> FlashInfo {
        self.0
    }
    fn read_at(&mut self, _offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::hint::black_box(buf);
        Ok(())
    }
    fn write_at(&mut self, _offset: u64, data: &[u8]) -> io::Result<()> {
        std::hint::black_box(data);
        Ok(())
    }
    fn erase(&mut self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    fn is_bad(&mut self, _offset: u64) -> io::Result<bool> {
        Ok(false)
    }
}

fn alone_once(info: FlashInfo, image: &Path, len: u64) -> Duration {
    let t = Instant::now();
    let mut slot = FlashSlot::new(NullFlash(info));
    slot.begin(len).unwrap();
    stream(image, |off, data| slot.write_at(off, data).unwrap());
    slot.finish().unwrap();
    std::hint::black_box(hash_back(len, |off, buf| slot.read_at(off, buf).unwrap()));
    t.elapsed()
}

fn dd_once(image: &Path, file: &Path, want: &[u8; 32], hasher: &str) -> Duration {
    let script = format!(
        "dd if='{}' of='{}' bs=128K conv=notrunc status=none && {hasher} '{}'",
        image.display(),
        file.display(),
        file.display()
    );
    let t = Instant::now();
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let d = t.elapsed();
    assert!(out.status.success(), "{script}: {out:?}");
    let hex: String = want.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&hex),
        "{hasher} disagrees"
    );
    d
}

fn median_secs(d: &[Duration]) -> f64 {
    let mut v: Vec<f64> = d.iter().map(Duration::as_secs_f64).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

fn fmt_ratio(v: &[f64]) -> String {
    format!("{:.2}x", sorted(v)[v.len() / 2])
}

fn min(v: &[f64]) -> f64 {
    sorted(v)[0]
}

fn max(v: &[f64]) -> f64 {
    sorted(v)[v.len() - 1]
}
