//! Speed and memory of an image transfer (issue 3): `cargo build --release --bins && cargo bench
//! --bench transfer` (acsim is a binary of the harness package, which `cargo bench` here does not
//! build; `wtpd_harness::bins` refuses a missing or stale one).
//!
//! For each image size (64 MiB and 512 MiB by default; `WTPD_BENCH_SIZES=64,512` in MiB) and
//! placement of the two ends (below):
//!
//! 1. the ceiling: a raw UDP stop-and-wait ping-pong of 1024-byte datagrams between this
//!    process and a copy of itself (re-executed with `WTPD_BENCH_ECHO=1`) on loopback, as many
//!    round trips as a 64 MiB image has blocks (65,536), measured right before the transfer;
//! 2. the transfer: the demo's lab (certificate DTLS, 1024-byte blocks, no pcap) with the
//!    release `acsim` and `wtpd`; wtpd downloads the signed image at Join into `tmp/part.tar`
//!    (checked byte for byte against the served file), verifies and installs it into the
//!    simulated board's other slot and exits 75 (its reboot). Peak RSS covers all of that. The
//!    time is taken from wtpd's own log (0.1 ms timestamps),
//!    from `Image Data Response from` (the controller has opened the image and computed its
//!    MD5) to `Image transfer completed` (last block written, digests checked, file fsync'ed);
//!    the setup before it and the final flush and fsync are shown apart. CPU time and peak RSS
//!    come from `wait4(2)`'s rusage of the wtpd child; VmRSS is also sampled from /proc while
//!    the image file is being written, and /proc/PID/maps tells whether wtpd maps a shared
//!    libcrypto (its pages count in the RSS) or has OpenSSL linked in; the summary says which.
//!
//! Placements (`WTPD_BENCH_PLACEMENTS`, default `one,two`): `one` pins both ends to one CPU,
//! `two` the controller end (acsim, echo peer) to one CPU and the AP end (wtpd, pinger) to
//! another, `free` leaves them to the scheduler. The first size runs in every placement, the
//! others in the first placement only (they are there for memory). Each is repeated
//! (`WTPD_BENCH_REPEAT`, default 3), with its own ceiling right before it; the summary gives
//! the median ratio and its range.
//!
//! `WTPD_BENCH_WTPD` and `WTPD_BENCH_ACSIM` replace the binaries (for instance with
//! `target/board/wtpd`, built with `cargo build --profile board --no-default-features --bin
//! wtpd`; README.md gives the build with OpenSSL linked in).
//!
//! MB here is 10^6 bytes. The lab lives in a temporary folder that is removed at the end
//! (`WTPD_BENCH_KEEP=1` keeps it). Run by `cargo test` (no `--bench` argument) it does nothing.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BLOCK: usize = 1024;
const MIB: u64 = 1024 * 1024;
const MB: f64 = 1e6;
/// Round trips of the ceiling measurement: the blocks of a 64 MiB image.
const PING_PONGS: u64 = 64 * MIB / BLOCK as u64;

fn main() {
    if std::env::var_os("WTPD_BENCH_ECHO").is_some() {
        echo_peer();
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("transfer bench: skipped (run it with `cargo bench --bench transfer`)");
        return;
    }
    let list = |var: &str, default: &str| -> Vec<String> {
        std::env::var(var)
            .unwrap_or_else(|_| default.to_string())
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()
    };
    let sizes: Vec<u64> = list("WTPD_BENCH_SIZES", "64,512")
        .iter()
        .filter_map(|x| x.parse().ok())
        .collect();
    let cpus = allowed_cpus();
    let placements: Vec<Placement> = list("WTPD_BENCH_PLACEMENTS", "one,two")
        .iter()
        .filter_map(|p| Placement::parse(p, &cpus))
        .collect();
    let Some(&first_placement) = placements.first() else {
        eprintln!("transfer bench: no usable placement (one, two, free) on CPUs {cpus:?}");
        std::process::exit(2);
    };
    // Other builds of the programs (the board profile, an older commit) can be measured too.
    let acsim = std::env::var_os("WTPD_BENCH_ACSIM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(wtpd_harness::bins::acsim()));
    let wtpd = std::env::var_os("WTPD_BENCH_WTPD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wtpd")));
    println!("transfer bench: acsim {}", acsim.display());
    println!("transfer bench: wtpd  {}", wtpd.display());
    println!("transfer bench: CPUs {cpus:?}, placements {placements:?}");

    // The VM this runs on has noisy neighbours: one ceiling and one transfer can be off by a
    // third. Each measurement is repeated; a repetition measures its own ceiling right before
    // its transfer, and the summary shows the median ratio with the range.
    let repeat: usize = std::env::var("WTPD_BENCH_REPEAT")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(3);
    let mut results = Vec::new();
    for (i, &mib) in sizes.iter().enumerate() {
        // The first size in every placement, the larger ones (memory) in the first only.
        let here = if i == 0 {
            placements.clone()
        } else {
            vec![first_placement]
        };
        for placement in here {
            for rep in 1..=repeat {
                println!(
                    "\n--- {mib} MiB, {}, run {rep} of {repeat} ---",
                    placement.describe()
                );
                let rtt = ping_pong(PING_PONGS, placement);
                let ceiling = (PING_PONGS * BLOCK as u64) as f64 / rtt.as_secs_f64() / MB;
                println!(
                    "ceiling : {PING_PONGS} round trips of {BLOCK}-byte UDP datagrams in {:.3} s: {ceiling:.2} MB/s ({:.1} us a round trip)",
                    rtt.as_secs_f64(),
                    rtt.as_secs_f64() * 1e6 / PING_PONGS as f64
                );
                let r = match transfer(&acsim, &wtpd, mib * MIB, placement) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("transfer bench: {mib} MiB transfer failed: {e}");
                        std::process::exit(1);
                    }
                };
                r.print(ceiling);
                results.push((mib, placement, ceiling, r));
            }
        }
    }

    println!(
        "\n===== transfer bench summary (targets: ratio >= 0.85, wtpd peak RSS < 8 MiB and flat) ====="
    );
    println!("{repeat} run(s) each; MB/s and ratio are medians, [min-max] the range of the ratio.");
    println!(
        "{:>8} {:<10} {:>12} {:>10} {:>7} {:>13} {:>9} {:>13} {:>11}",
        "image",
        "placement",
        "ceiling MB/s",
        "wtpd MB/s",
        "ratio",
        "ratio range",
        "CPU s/MB",
        "peak RSS KiB",
        "acsim s/MB"
    );
    let mut groups: Vec<(u64, Placement)> = Vec::new();
    for (mib, p, _, _) in &results {
        if !groups.contains(&(*mib, *p)) {
            groups.push((*mib, *p));
        }
    }
    let median = |mut v: Vec<f64>| -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let mut peak_by_size = Vec::new();
    for (mib, placement) in groups {
        let runs: Vec<_> = results
            .iter()
            .filter(|(m, p, _, _)| *m == mib && *p == placement)
            .collect();
        let ratios: Vec<f64> = runs.iter().map(|(_, _, c, r)| r.mbs() / c).collect();
        let lo = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().cloned().fold(0.0, f64::max);
        let peak = runs
            .iter()
            .map(|(_, _, _, r)| r.wtpd_maxrss_kib)
            .max()
            .unwrap_or(0);
        if placement == first_placement {
            peak_by_size.push((mib, peak));
        }
        println!(
            "{:>5}MiB {:<10} {:>12.2} {:>10.2} {:>7.3} {:>13} {:>9.4} {:>13} {:>11.4}",
            mib,
            placement.name(),
            median(runs.iter().map(|(_, _, c, _)| *c).collect()),
            median(runs.iter().map(|(_, _, _, r)| r.mbs()).collect()),
            median(ratios.clone()),
            format!("[{lo:.3}-{hi:.3}]"),
            median(
                runs.iter()
                    .map(|(_, _, _, r)| r.wtpd_cpu / (r.size as f64 / MB))
                    .collect()
            ),
            peak,
            median(
                runs.iter()
                    .map(|(_, _, _, r)| r.acsim_cpu / (r.size as f64 / MB))
                    .collect()
            ),
        );
    }
    let linkage: Vec<Option<bool>> = results.iter().map(|r| r.3.openssl_shared).collect();
    println!(
        "wtpd's OpenSSL: {}",
        if linkage.iter().all(|l| *l == Some(true)) {
            "shared libraries (libcrypto.so mapped; its pages count in the peak RSS)"
        } else if linkage.iter().all(|l| *l == Some(false)) {
            "linked into the binary (the measured process maps no libcrypto.so)"
        } else {
            "not known (no /proc/PID/maps seen)"
        }
    );
    if let (Some(a), Some(b)) = (peak_by_size.first(), peak_by_size.last()) {
        if a.0 != b.0 {
            println!(
                "peak RSS of wtpd, {} MiB image / {} MiB image ({}): {:.3} ({} KiB / {} KiB)",
                b.0,
                a.0,
                first_placement.name(),
                b.1 as f64 / a.1 as f64,
                b.1,
                a.1
            );
        }
    }
}

/// Where the two ends run. On a virtual machine, a wake-up across CPUs costs far more than a
/// switch on one CPU, so the ceiling (and a stop-and-wait transfer) differ by several times
/// between the two; "free" leaves it to the scheduler, which mixes both from run to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Both ends on this CPU.
    One(usize),
    /// The controller end (acsim, the echo peer) on the first, the AP end (wtpd, the pinger)
    /// on the second.
    Two(usize, usize),
    Free,
}

impl Placement {
    fn parse(s: &str, cpus: &[usize]) -> Option<Placement> {
        match s {
            "one" => cpus.first().map(|&c| Placement::One(c)),
            "two" if cpus.len() >= 2 => Some(Placement::Two(cpus[0], cpus[1])),
            "two" => {
                eprintln!("transfer bench: placement two needs two CPUs, skipped");
                None
            }
            "free" => Some(Placement::Free),
            other => {
                eprintln!("transfer bench: unknown placement {other} (one, two, free)");
                None
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Placement::One(_) => "one CPU",
            Placement::Two(..) => "two CPUs",
            Placement::Free => "free",
        }
    }

    fn describe(self) -> String {
        match self {
            Placement::One(c) => format!("both ends on CPU {c}"),
            Placement::Two(a, b) => format!("controller end on CPU {a}, AP end on CPU {b}"),
            Placement::Free => "placed by the scheduler".into(),
        }
    }

    /// (controller end, AP end).
    fn cpus(self) -> (Option<usize>, Option<usize>) {
        match self {
            Placement::One(c) => (Some(c), Some(c)),
            Placement::Two(a, b) => (Some(a), Some(b)),
            Placement::Free => (None, None),
        }
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills the set we own.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if r != 0 {
        return vec![0];
    }
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins the calling thread (and what it later forks) to `cpu`, or to all `cpus` for `None`.
fn pin(cpu: Option<usize>, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: a cpu_set_t we own, passed to sched_setaffinity for this thread.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpu
        .as_slice()
        .iter()
        .chain(if cpu.is_none() { cpus } else { &[] })
    {
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A command that starts pinned to `cpu`.
fn pinned(cmd: &mut Command, cpu: Option<usize>) -> &mut Command {
    use std::os::unix::process::CommandExt;
    if let Some(c) = cpu {
        // SAFETY: only sched_setaffinity, async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(c, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd
}

/// The echo end of the ping-pong: prints its port, returns each datagram to its sender until
/// an empty one arrives.
fn echo_peer() {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind echo socket");
    println!("{}", s.local_addr().expect("local address").port());
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, from)) = s.recv_from(&mut buf) else {
            return;
        };
        if n == 0 {
            return;
        }
        let _ = s.send_to(&buf[..n], from);
    }
}

/// `rounds` stop-and-wait round trips of 1024-byte datagrams with a second process.
fn ping_pong(rounds: u64, placement: Placement) -> Duration {
    use std::io::BufRead;
    let (echo_cpu, ping_cpu) = placement.cpus();
    let mut child = pinned(
        &mut Command::new(std::env::current_exe().expect("current executable")),
        echo_cpu,
    )
    .env("WTPD_BENCH_ECHO", "1")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .spawn()
    .expect("start the echo peer");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("echo stdout"))
        .read_line(&mut line)
        .expect("echo port");
    let port: u16 = line.trim().parse().expect("echo port number");
    let cpus = allowed_cpus();
    pin(ping_cpu, &cpus).expect("pin the pinger");
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let out = [0x5au8; BLOCK];
    let mut back = [0u8; 2048];
    let mut round = |s: &UdpSocket| {
        s.send(&out).expect("send");
        let n = s.recv(&mut back).expect("echo answered");
        assert_eq!(n, BLOCK);
    };
    for _ in 0..2000 {
        round(&s);
    }
    let t = Instant::now();
    for _ in 0..rounds {
        round(&s);
    }
    let d = t.elapsed();
    pin(None, &cpus).expect("unpin");
    let _ = s.send(&[]);
    let _ = child.wait();
    d
}

/// What one transfer measured.
struct Transfer {
    size: u64,
    /// `Image Data Request sent` -> `Image Data Response from`.
    setup: Duration,
    /// `Image Data Response from` -> `Image transfer completed`.
    data: Duration,
    /// The closing `> N bytes` line -> `Image transfer completed` (digests, flush, fsync).
    finish: Duration,
    wtpd_cpu: f64,
    wtpd_user: f64,
    wtpd_sys: f64,
    wtpd_maxrss_kib: i64,
    /// VmRSS samples while the transfer ran (KiB).
    rss_samples: Vec<u64>,
    /// Private_Clean + Private_Dirty of /proc/PID/smaps_rollup, sampled with VmRSS (KiB): the
    /// part of RSS no other process shares (VmRSS also counts the pages of libcrypto, libssl
    /// and libc that every process using them shares).
    private_samples: Vec<u64>,
    acsim_cpu: f64,
    wall: Duration,
    /// Whether wtpd had a shared libcrypto mapped (false: OpenSSL linked into the binary), as
    /// seen in /proc/PID/maps during the transfer; peak RSS depends on it.
    openssl_shared: Option<bool>,
}

impl Transfer {
    fn mbs(&self) -> f64 {
        self.size as f64 / self.data.as_secs_f64() / MB
    }

    fn print(&self, ceiling: f64) {
        let mb = self.size as f64 / MB;
        println!(
            "transfer: {} MiB ({} blocks of {BLOCK}) in {:.3} s (setup before it {:.3} s, of it the final flush+fsync {:.3} s; wtpd ran {:.1} s)",
            self.size / MIB,
            self.size.div_ceil(BLOCK as u64),
            self.data.as_secs_f64(),
            self.setup.as_secs_f64(),
            self.finish.as_secs_f64(),
            self.wall.as_secs_f64()
        );
        println!(
            "          {:.2} MB/s = {:.3} of the ceiling ({:.2} MB/s); {:.1} us a block",
            self.mbs(),
            self.mbs() / ceiling,
            ceiling,
            self.data.as_secs_f64() * 1e6 / self.size.div_ceil(BLOCK as u64) as f64
        );
        println!(
            "wtpd    : CPU {:.3} s (user {:.3} + sys {:.3}) = {:.4} s/MB; peak RSS {} KiB ({:.2} MiB)",
            self.wtpd_cpu,
            self.wtpd_user,
            self.wtpd_sys,
            self.wtpd_cpu / mb,
            self.wtpd_maxrss_kib,
            self.wtpd_maxrss_kib as f64 / 1024.0
        );
        if let (Some(first), Some(last)) = (self.rss_samples.first(), self.rss_samples.last()) {
            println!(
                "          VmRSS during the transfer: {} samples, first {first} KiB, min {} KiB, max {} KiB, last {last} KiB",
                self.rss_samples.len(),
                self.rss_samples.iter().min().unwrap(),
                self.rss_samples.iter().max().unwrap()
            );
        }
        if let (Some(first), Some(max)) = (
            self.private_samples.first(),
            self.private_samples.iter().max(),
        ) {
            println!(
                "          private (unshared) memory during the transfer: first {first} KiB, max {max} KiB"
            );
        }
        println!(
            "acsim   : CPU {:.3} s = {:.4} s/MB",
            self.acsim_cpu,
            self.acsim_cpu / mb
        );
    }
}

/// A child that is killed and reaped if the bench gives up.
struct Proc(Option<Child>);

impl Proc {
    fn pid(&self) -> i32 {
        self.0.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Reaps the child with wait4(2): exit code, CPU seconds (user, sys), ru_maxrss (KiB).
    /// Calls `tick` while it waits; kills it after `limit`.
    fn wait4(
        &mut self,
        limit: Duration,
        mut tick: impl FnMut(i32),
    ) -> Result<(i32, f64, f64, i64), String> {
        let pid = self.pid();
        let start = Instant::now();
        loop {
            let mut status = 0;
            // SAFETY: plain wait4 on our own child; rusage is written by the kernel.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
            if r == pid {
                // The Child must not be waited for again.
                if let Some(c) = self.0.take() {
                    std::mem::forget(c);
                }
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    -libc::WTERMSIG(status)
                };
                let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                return Ok((code, secs(ru.ru_utime), secs(ru.ru_stime), ru.ru_maxrss));
            }
            if r < 0 {
                return Err(format!("wait4: {}", std::io::Error::last_os_error()));
            }
            if start.elapsed() > limit {
                return Err(format!("still running after {} s", limit.as_secs()));
            }
            tick(pid);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.0 {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(bin: &Path, args: &[&str], dir: &Path, cpu: Option<usize>) -> Result<Proc, String> {
    pinned(&mut Command::new(bin), cpu)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .spawn()
        .map(|c| Proc(Some(c)))
        .map_err(|e| format!("start {}: {e}", bin.display()))
}

fn private_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(field("Private_Clean:")? + field("Private_Dirty:")?)
}

fn vm_rss_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Seconds since the epoch of a `[*MM/DD/YYYY HH:MM:SS.ffff]` log line.
fn log_time(line: &str) -> Option<f64> {
    let t = line.strip_prefix("[*")?.get(..24)?;
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<u32>().ok();
    let (mo, d, y) = (num(0..2)?, num(3..5)?, num(6..10)?);
    let (h, mi, s, f) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..24)?);
    // Days from the civil date (H. Hinnant's days_from_civil).
    let y = if mo <= 2 { y as i64 - 1 } else { y as i64 };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + (h * 3600 + mi * 60 + s) as f64 + f as f64 / 1e4)
}

/// The time of the first log line that contains `needle`.
fn when(log: &str, needle: &str) -> Result<f64, String> {
    log.lines()
        .find(|l| l.contains(needle))
        .and_then(log_time)
        .ok_or_else(|| format!("no '{needle}' in wtpd.log"))
}

fn wait_for_log(path: &Path, needle: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn transfer(
    acsim: &Path,
    wtpd: &Path,
    size: u64,
    placement: Placement,
) -> Result<Transfer, String> {
    let dir =
        std::env::temp_dir().join(format!("wtpd-bench-{}-{}", std::process::id(), size / MIB));
    let _ = std::fs::remove_dir_all(&dir);
    let r = transfer_in(&dir, acsim, wtpd, size, placement);
    if std::env::var_os("WTPD_BENCH_KEEP").is_some() {
        println!("transfer bench: lab kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    r
}

fn transfer_in(
    dir: &Path,
    acsim: &Path,
    wtpd: &Path,
    size: u64,
    placement: Placement,
) -> Result<Transfer, String> {
    let (ac_cpu, wtp_cpu) = placement.cpus();
    use wtpd_harness::demo::{self, DemoDtls, Scenario};
    let port = demo::free_port_pair().map_err(|e| format!("UDP ports: {e}"))?;
    demo::write_lab(dir, DemoDtls::Certificate, port).map_err(|e| e.to_string())?;
    // The simulated board's slots (64 MiB) must hold the payload: the install after the
    // transfer is part of the run (and of wtpd's peak RSS).
    let board = dir.join("board.toml");
    let text = std::fs::read_to_string(&board).map_err(|e| e.to_string())?;
    let slot = format!("size = {}", (size + MIB).max(64 * MIB));
    let resized = text.replace("size = 67108864", &slot);
    if resized.matches(&slot).count() != 2 {
        return Err(format!("{}: expected two 64 MiB slots", board.display()));
    }
    std::fs::write(&board, resized).map_err(|e| e.to_string())?;
    demo::prepare_scenario(dir, Scenario::Upgrade, size).map_err(|e| e.to_string())?;
    // No decrypted capture: it would copy every block to disk in acsim and double the disk use.
    let ac_toml = dir.join("acsim.toml");
    let text = std::fs::read_to_string(&ac_toml).map_err(|e| e.to_string())?;
    std::fs::write(&ac_toml, text.replace("pcap = \"capwap.pcap\"\n", ""))
        .map_err(|e| e.to_string())?;

    let alog = dir.join("acsim.log");
    let wlog = dir.join("wtpd.log");
    let mut ac = spawn(acsim, &["run", "--config", "acsim.toml"], dir, ac_cpu)?;
    if !wait_for_log(&alog, "listening", Duration::from_secs(10)) {
        return Err("acsim did not start listening".into());
    }
    let started = Instant::now();
    let mut wtp = spawn(wtpd, &["--config", "wtpd.toml"], dir, wtp_cpu)?;
    let mut rss_samples = Vec::new();
    let mut private_samples = Vec::new();
    let mut openssl_shared = None;
    let part = dir.join("tmp").join("part.tar");
    let (code, user, sys, maxrss) = wtp.wait4(Duration::from_secs(600), |pid| {
        // Samples while the image is being written, not before wtpd is loaded.
        if part.exists() {
            if let Some(k) = vm_rss_kib(pid) {
                rss_samples.push(k);
            }
            if let Some(k) = private_kib(pid) {
                private_samples.push(k);
            }
            if openssl_shared.is_none() {
                openssl_shared = std::fs::read_to_string(format!("/proc/{pid}/maps"))
                    .ok()
                    .map(|m| m.contains("/libcrypto.so"));
            }
        }
    })?;
    let wall = started.elapsed();
    ac.signal(libc::SIGTERM);
    let (_, ac_user, ac_sys, _) = ac.wait4(Duration::from_secs(20), |_| {})?;
    let log = std::fs::read_to_string(&wlog).map_err(|e| format!("wtpd.log: {e}"))?;
    if code != 75 {
        return Err(format!(
            "wtpd exited with {code}, expected 75 (see {})",
            wlog.display()
        ));
    }
    // The served file is the signed bundle: the payload of `size` bytes plus its manifest and
    // signature. The AP's copy must be that file, byte for byte.
    let served_path = dir.join("images").join(demo::LAB_IMAGE_TYPE);
    let served = std::fs::metadata(&served_path)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", served_path.display()))?;
    let got = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if got != served {
        return Err(format!(
            "tmp/part.tar has {got} bytes, the served image {served}"
        ));
    }
    let digest = |p: &Path| demo::sha256_file(p).map_err(|e| format!("{}: {e}", p.display()));
    if digest(&part)? != digest(&served_path)? {
        return Err("tmp/part.tar differs from the served image".into());
    }
    let size = served;
    let t_req = when(&log, "Image Data Request sent")?;
    let t_resp = when(&log, "Image Data Response from")?;
    let t_last = when(&log, "] > ")?;
    let t_done = when(&log, "Image transfer completed")?;
    let secs = |d: f64| Duration::from_secs_f64(d.max(0.0));
    Ok(Transfer {
        size,
        setup: secs(t_resp - t_req),
        data: secs(t_done - t_resp),
        finish: secs(t_done - t_last),
        wtpd_cpu: user + sys,
        wtpd_user: user,
        wtpd_sys: sys,
        wtpd_maxrss_kib: maxrss,
        rss_samples,
        private_samples,
        acsim_cpu: ac_user + ac_sys,
        wall,
        openssl_shared,
    })
}
