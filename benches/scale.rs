//! acsim at controller scale (issue 15): `cargo build --release --bins && cargo bench --bench
//! scale`.
//!
//! Two processes on loopback: the release `acsim run` (the controller measured) and `acsim load`
//! (N simulated APs, each the real agent with its own sockets and DTLS session,
//! harness/src/load.rs). A sampler reads acsim's VmRSS and CPU time (/proc/PID/stat, utime +
//! stime) every 50 ms and asks `acsim status` over the control socket every 250 ms (the slowest
//! answer is reported). acsim's own figures are differences against its baseline right before
//! each run (RSS of the idle controller, CPU time so far), so they are per AP and per join.
//!
//! 1. Join storm, certificate DTLS, all APs at once, for each N of `WTPD_SCALE_NS` (default
//!    `100,300,1000`): seconds until all are in Run, acsim's peak RSS over its baseline per AP,
//!    its RSS per AP in Run, its CPU seconds per join (from the start to all in Run), and its
//!    RSS once every AP has closed its session (a second after the load ends).
//! 2. Steady state (the largest N): the APs hold Run for `WTPD_SCALE_HOLD` seconds (default
//!    30) with Echo every second; acsim's CPU per AP per minute over that window.
//! 3. Concurrent downloads: `WTPD_SCALE_DL` APs (default 100) download an image of
//!    `WTPD_SCALE_IMAGE_MIB` MiB (default 16) at once, with acsim's `max_transfers` at
//!    `WTPD_SCALE_DL_LIMIT` (default: as many as there are APs). Aggregate MB/s (all bytes over
//!    the time from the first AP in Image Data to the last AP out of it: the last block
//!    acknowledged, before the agent's 5 s DTLSSessionDelete wait) against the machine's
//!    limit for this work: its cores divided by the CPU seconds per MB of both ends together
//!    (acsim's and the load process's CPU time over the bytes), measured in the same run; and
//!    fairness: the fastest AP's download time over the slowest's.
//!
//! `WTPD_SCALE_PARTS` (default `storm,download`) picks the parts. MB is 10^6 bytes. Run by
//! `cargo test` (no `--bench` argument) it does nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wtpd_harness::load::{write_load_lab, LoadDtls, LoadLab};

const MB: f64 = 1e6;

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: f64,
    rss_kib: u64,
    cpu_s: f64,
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU seconds (user + system) of a process so far.
fn cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let u: f64 = f.get(11)?.parse().ok()?;
    let s: f64 = f.get(12)?.parse().ok()?;
    Some((u + s) / ticks_per_sec())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

struct Acsim {
    child: std::process::Child,
    dir: PathBuf,
}

impl Acsim {
    fn start(dir: &Path) -> Acsim {
        let child = Command::new(wtpd_harness::bins::acsim())
            .args(["run", "--config", "acsim.toml"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start acsim");
        let sock = dir.join("acsim.sock");
        let t = Instant::now();
        while !sock.exists() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        Acsim {
            child,
            dir: dir.to_path_buf(),
        }
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Acsim {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.join("acsim.sock"));
    }
}

/// What one load run measured.
struct Run {
    samples: Vec<Sample>,
    /// Slowest `acsim status` answer, seconds.
    status_max: f64,
    status_count: usize,
    summary: String,
    /// The load process's CPU seconds (wait4).
    load_cpu: f64,
    /// When the load process started, on the samples' clock.
    load_start: f64,
    load_end: f64,
}

impl Run {
    fn value(&self, key: &str) -> Option<f64> {
        self.summary.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.trim();
            rest.split_whitespace().next()?.parse().ok()
        })
    }
    fn field(&self, key: &str, name: &str) -> Option<f64> {
        self.summary.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?;
            let w: Vec<&str> = rest.split_whitespace().collect();
            let i = w.iter().position(|x| *x == name)?;
            w.get(i + 1)?.parse().ok()
        })
    }
    /// The sample closest after `t`.
    fn at(&self, t: f64) -> Sample {
        *self
            .samples
            .iter()
            .find(|s| s.at >= t)
            .unwrap_or_else(|| self.samples.last().expect("samples"))
    }
}

/// Runs `acsim load` with `args` against the lab in `dir` while sampling acsim.
fn load(acsim: &Acsim, dir: &Path, args: &[&str], linger: Duration) -> Run {
    let pid = acsim.pid();
    let t0 = Instant::now();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let status = Arc::new(Mutex::new((0.0f64, 0usize)));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, done) = (samples.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let (Some(r), Some(c)) = (rss_kib(pid), cpu_s(pid)) {
                    samples.lock().unwrap().push(Sample {
                        at: t0.elapsed().as_secs_f64(),
                        rss_kib: r,
                        cpu_s: c,
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let asker = {
        let (status, done, sock) = (status.clone(), done.clone(), dir.join("acsim.sock"));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = wtpd::runtime::ac::control_request(&sock, "status").is_ok();
                let took = t.elapsed().as_secs_f64();
                if ok {
                    let mut s = status.lock().unwrap();
                    s.0 = s.0.max(took);
                    s.1 += 1;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let load_start = t0.elapsed().as_secs_f64();
    #[allow(clippy::zombie_processes)] // reaped by wait4 below, for its rusage
    let mut child = Command::new(wtpd_harness::bins::acsim())
        .arg("load")
        .args(["--dir", dir.to_str().unwrap(), "--quiet"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start acsim load");
    let mut summary = String::new();
    {
        use std::io::Read;
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut summary)
            .unwrap();
    }
    // wait4 for the load process's CPU time.
    let mut st = 0;
    // SAFETY: an rusage we own; the pid is our child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(child.id() as i32, &mut st, 0, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let load_cpu = tv(ru.ru_utime) + tv(ru.ru_stime);
    let load_end = t0.elapsed().as_secs_f64();
    std::thread::sleep(linger);
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let _ = asker.join();
    let samples = samples.lock().unwrap().clone();
    let (status_max, status_count) = *status.lock().unwrap();
    Run {
        samples,
        status_max,
        status_count,
        summary,
        load_cpu,
        load_start,
        load_end,
    }
}

fn lab(name: &str, lab: &LoadLab) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wtpd-scale-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_load_lab(&dir, lab).expect("write the lab");
    dir
}

fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn storm(ns: &[usize], hold: u64) {
    let largest = ns.iter().copied().max().unwrap_or(0);
    let dir = lab(
        "storm",
        &LoadLab {
            port: wtpd_harness::demo::free_port_pair().unwrap(),
            dtls: LoadDtls::Certificate,
            image_size: None,
            max_wtps: 2000,
            max_transfers: None,
            echo_interval: 1,
        },
    );
    let acsim = Acsim::start(&dir);
    let mut rows = Vec::new();
    for &n in ns {
        let h = if n == largest { hold } else { 3 };
        println!("\n--- join storm: {n} APs at once, certificate DTLS, Run held {h} s ---");
        let base_rss = rss_kib(acsim.pid()).unwrap_or(0);
        let base_cpu = cpu_s(acsim.pid()).unwrap_or(0.0);
        let r = load(
            &acsim,
            &dir,
            &["--n", &n.to_string(), "--hold", &h.to_string()],
            Duration::from_secs(2),
        );
        print!("{}", r.summary);
        let all = r.value("load.all_done_s").unwrap_or(f64::NAN);
        let done_at = r.load_start + all;
        let peak = r.samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        let in_run = r.at(done_at + 1.0);
        let join_cpu = r.at(done_at).cpu_s - base_cpu;
        // The steady window: from 2 s after all are in Run to 1 s before the hold ends.
        let (w0, w1) = (done_at + 2.0, done_at + h as f64 - 1.0);
        let steady = if w1 - w0 >= 1.0 {
            let (a, b) = (r.at(w0), r.at(w1));
            Some((b.cpu_s - a.cpu_s) / (b.at - a.at) * 60.0 / n as f64)
        } else {
            None
        };
        let after = r.samples.last().map(|s| s.rss_kib).unwrap_or(0);
        println!(
            "acsim: baseline {base_rss} KiB; peak {peak} KiB ({:.1} KiB/AP over baseline); in Run {} KiB ({:.1} KiB/AP); after the APs left {after} KiB ({:+} KiB over baseline)",
            (peak.saturating_sub(base_rss)) as f64 / n as f64,
            in_run.rss_kib,
            (in_run.rss_kib.saturating_sub(base_rss)) as f64 / n as f64,
            after as i64 - base_rss as i64
        );
        println!(
            "acsim: {join_cpu:.2} CPU s until all in Run = {:.2} ms per join; `acsim status` slowest answer {:.0} ms of {}; load process CPU {:.2} s",
            join_cpu * 1000.0 / n as f64,
            r.status_max * 1000.0,
            r.status_count,
            r.load_cpu
        );
        if let Some(s) = steady {
            println!(
                "acsim steady state (Echo every 1 s): {:.2} CPU ms per AP per minute ({:.1} % of a CPU for {n} APs)",
                s * 1000.0,
                s * n as f64 / 60.0 * 100.0
            );
        }
        rows.push((
            n,
            all,
            (peak.saturating_sub(base_rss)) as f64 / n as f64,
            (in_run.rss_kib.saturating_sub(base_rss)) as f64 / n as f64,
            join_cpu * 1000.0 / n as f64,
            after as i64 - base_rss as i64,
            r.status_max * 1000.0,
            steady,
        ));
        let _ = r.load_end;
    }
    println!("\nsummary: join storm (certificate DTLS, all at once)");
    println!("   APs  all in Run s  peak KiB/AP  Run KiB/AP  CPU ms/join  RSS after-before KiB  status max ms  steady CPU ms/AP/min");
    for (n, all, peak, run, cpu, after, st, steady) in rows {
        println!(
            "{n:6}  {all:12.2}  {peak:11.1}  {run:10.1}  {cpu:11.2}  {after:20}  {st:13.0}  {}",
            steady
                .map(|s| format!("{:.2}", s * 1000.0))
                .unwrap_or_else(|| "-".into())
        );
    }
    drop(acsim);
    let _ = std::fs::remove_dir_all(&dir);
}

fn downloads(n: usize, mib: u64, limit: usize) {
    let size = mib * 1024 * 1024;
    let dir = lab(
        "download",
        &LoadLab {
            port: wtpd_harness::demo::free_port_pair().unwrap(),
            dtls: LoadDtls::Certificate,
            image_size: Some(size),
            max_wtps: 2000,
            max_transfers: Some(limit as u32),
            echo_interval: 1,
        },
    );
    let acsim = Acsim::start(&dir);
    println!(
        "\n--- downloads: {n} APs at once, {mib} MiB image, max_transfers {limit}, certificate DTLS ---"
    );
    let base_cpu = cpu_s(acsim.pid()).unwrap_or(0.0);
    let r = load(
        &acsim,
        &dir,
        &["--n", &n.to_string(), "--download", "--limit", "900"],
        Duration::from_millis(500),
    );
    print!("{}", r.summary);
    let acsim_cpu = r.samples.last().map(|s| s.cpu_s).unwrap_or(0.0) - base_cpu;
    let done = r.value("load.downloaded").unwrap_or(0.0) as usize;
    let span = r.value("load.download_span_s").unwrap_or(f64::NAN);
    let fastest = r.field("load.download_s", "min").unwrap_or(f64::NAN);
    let slowest = r.field("load.download_s", "max").unwrap_or(f64::NAN);
    // The served file is a little larger than the rootfs (manifest, signature).
    let file = std::fs::metadata(dir.join("images").join("ap1g8"))
        .map(|m| m.len())
        .unwrap_or(size);
    let mb = (done as u64 * file) as f64 / MB;
    let aggregate = mb / span;
    let cpu_per_mb = (acsim_cpu + r.load_cpu) / mb;
    let cores = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1) as f64;
    let limit_mbs = cores / cpu_per_mb;
    println!(
        "downloads: {done} of {n} APs, {mb:.1} MB in {span:.2} s = {aggregate:.2} MB/s aggregate"
    );
    println!(
        "CPU: acsim {acsim_cpu:.2} s + load {:.2} s = {:.4} CPU s/MB for both ends; limit {cores} cores / that = {limit_mbs:.2} MB/s; ratio {:.2}",
        r.load_cpu,
        cpu_per_mb,
        aggregate / limit_mbs
    );
    println!(
        "fairness: fastest AP {fastest:.2} s, slowest {slowest:.2} s: slowest/fastest speed {:.2}; `acsim status` slowest answer {:.0} ms",
        fastest / slowest,
        r.status_max * 1000.0
    );
    drop(acsim);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale bench: skipped (run it with `cargo bench --bench scale`)");
        return;
    }
    let ns: Vec<usize> = std::env::var("WTPD_SCALE_NS")
        .unwrap_or_else(|_| "100,300,1000".into())
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    let parts = std::env::var("WTPD_SCALE_PARTS").unwrap_or_else(|_| "storm,download".into());
    println!("scale bench: acsim {}", wtpd_harness::bins::acsim());
    if parts.contains("storm") {
        storm(&ns, env_or("WTPD_SCALE_HOLD", 30));
    }
    if parts.contains("download") {
        let n = env_or("WTPD_SCALE_DL", 100);
        downloads(
            n,
            env_or("WTPD_SCALE_IMAGE_MIB", 16),
            env_or("WTPD_SCALE_DL_LIMIT", n),
        );
    }
}
