//! `acsim demo`: a complete lab on loopback, built and run in one command.
//!
//! It writes a PKI, `acsim.toml` and `wtpd.toml` into a folder, starts `acsim run` and one
//! `wtpd` as separate processes (so that signals and exit codes are real), prints both logs as
//! they grow, and checks the scenario: Discovery → DTLS → Join → Configure → Data Check → Run,
//! Echoes for a few seconds, then SIGTERM to wtpd (DTLS close_notify, exit 0).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Which DTLS credentials the lab uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DemoDtls {
    #[default]
    Certificate,
    Psk,
}

impl FromStr for DemoDtls {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "certificate" | "cert" => Ok(DemoDtls::Certificate),
            "psk" => Ok(DemoDtls::Psk),
            other => Err(format!("--dtls {other}: use certificate or psk")),
        }
    }
}

/// `acsim demo` options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub dir: Option<PathBuf>,
    pub dtls: DemoDtls,
    /// Seconds to hold Run before stopping wtpd.
    pub hold_secs: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            dir: None,
            dtls: DemoDtls::Certificate,
            hold_secs: 5,
        }
    }
}

/// Why the demo could not run.
#[derive(Debug)]
pub enum DemoError {
    Setup(String),
    Io { what: String, error: std::io::Error },
}

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DemoError::Setup(s) => write!(f, "{s}"),
            DemoError::Io { what, error } => write!(f, "{what}: {error}"),
        }
    }
}

impl std::error::Error for DemoError {}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |error| DemoError::Io { what, error }
}

/// A PSK for the lab (not a secret: it is written in the lab's files).
const LAB_PSK_HEX: &str = "6c61622d6f6e6c792d7073b02d6b6579";

/// A UDP port P on 127.0.0.1 with P + 1 free too (control and data channel).
pub fn free_port_pair() -> std::io::Result<u16> {
    for _ in 0..50 {
        let a = UdpSocket::bind("127.0.0.1:0")?;
        let p = a.local_addr()?.port();
        if p < u16::MAX && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return Ok(p);
        }
    }
    Err(std::io::Error::other("no free pair of UDP ports"))
}

/// Writes the lab into `dir`: PKI and both configurations. Returns the controller address.
pub fn write_lab(dir: &Path, dtls: DemoDtls, port: u16) -> Result<SocketAddr, DemoError> {
    std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    crate::pki::generate_lab_pki(&dir.join("pki"))
        .map_err(|e| DemoError::Setup(format!("PKI: {e}")))?;
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let (ac_dtls, wtp_dtls) = match dtls {
        DemoDtls::Certificate => (
            "mode = \"certificate\"\ncert = \"pki/controller.pem\"\nkey = \"pki/controller.key\"\nca = \"pki/ca.pem\"\nkeylog = \"dtls-keys.log\"\n".to_string(),
            "mode = \"certificate\"\ncert = \"pki/wtp.pem\"\nkey = \"pki/wtp.key\"\nca = \"pki/ca.pem\"\npeer_name = \"acsim.lab\"\n".to_string(),
        ),
        DemoDtls::Psk => (
            format!("mode = \"psk\"\npsk_identity = \"wtp-sim-1\"\npsk_key = \"{LAB_PSK_HEX}\"\nkeylog = \"dtls-keys.log\"\n"),
            format!("mode = \"psk\"\npsk_identity = \"wtp-sim-1\"\npsk_key = \"{LAB_PSK_HEX}\"\n"),
        ),
    };
    let acsim = format!(
        "# acsim configuration written by `acsim demo`.\n\
         name = \"acsim-lab\"\n\
         listen = \"{listen}\"\n\
         version = \"17.9.4.27\"\n\
         pcap = \"capwap.pcap\"\n\
         status_file = \"acsim.status\"\n\n\
         [dtls]\n{ac_dtls}\n\
         [timers]\n\
         # Told to the AP in the CAPWAP Timers element: Echoes every second in the lab.\n\
         echo_interval = 1\n\n\
         [log]\ntarget = \"{}\"\n",
        dir.join("acsim.log").display()
    );
    let wtpd = format!(
        "# wtpd configuration written by `acsim demo`: a simulated board on loopback.\n\
         bind = \"127.0.0.1:0\"\n\
         reboot = \"exit\"\n\n\
         [wtp]\n\
         name = \"wtp-sim-1\"\n\
         location = \"lab bench\"\n\
         model = \"sim\"\n\
         serial = \"SIM0001\"\n\
         base_mac = \"02:00:00:00:00:01\"\n\
         image_type = \"ap1g8\"\n\
         radios = [{{ id = 1, radio_type = 13 }}, {{ id = 2, radio_type = 10 }}]\n\n\
         [software]\n\
         version = \"17.9.4.27\"\n\
         backup = \"17.3.3.26\"\n\n\
         [discovery]\n\
         controllers = [\"{listen}\"]\n\
         broadcast = false\n\n\
         [dtls]\n{wtp_dtls}\n\
         [timers]\n\
         discovery_interval = 1\n\
         data_channel_keep_alive = 2\n\
         data_channel_dead_interval = 6\n\n\
         [log]\ntarget = \"{}\"\n",
        dir.join("wtpd.log").display()
    );
    for (name, text) in [("acsim.toml", acsim), ("wtpd.toml", wtpd)] {
        std::fs::write(dir.join(name), text).map_err(io(format!("write {name}")))?;
    }
    Ok(listen)
}

/// Follows a log file and prints new lines with a prefix.
struct Tail {
    path: PathBuf,
    prefix: &'static str,
    pos: u64,
}

impl Tail {
    fn pump(&mut self) {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.pos)).is_err() {
            return;
        }
        let mut r = BufReader::new(f);
        let mut line = String::new();
        while let Ok(n) = r.read_line(&mut line) {
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            self.pos += n as u64;
            print!("{} | {line}", self.prefix);
            line.clear();
        }
    }
}

/// A child process that is killed if the demo ends early.
struct Proc(Option<Child>);

impl Proc {
    fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    fn wait_for(&mut self, limit: Duration, tails: &mut [Tail]) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            for t in tails.iter_mut() {
                t.pump();
            }
            if let Some(c) = &mut self.0 {
                if let Ok(Some(status)) = c.try_wait() {
                    self.0 = None;
                    return Some(status.code().unwrap_or(-1));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
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

fn sibling_binary(name: &str) -> Result<PathBuf, DemoError> {
    if let Some(p) = std::env::var_os(format!("{}_BIN", name.to_ascii_uppercase())) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(io("current executable"))?;
    let p = exe.with_file_name(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(DemoError::Setup(format!(
            "{} not found next to {} (build both binaries: cargo build --bins)",
            name,
            exe.display()
        )))
    }
}

fn spawn(bin: &Path, args: &[&str], dir: &Path) -> Result<Proc, DemoError> {
    let child = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .spawn()
        .map_err(io(format!("start {}", bin.display())))?;
    Ok(Proc(Some(child)))
}

fn log_has(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle))
}

/// Runs the demo; returns 0 when the scenario passed.
pub fn run(opts: DemoOptions) -> Result<i32, DemoError> {
    let dir = match opts.dir.clone() {
        Some(d) => d,
        None => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            std::env::temp_dir().join(format!("acsim-demo-{}-{stamp}", std::process::id()))
        }
    };
    for f in [
        "acsim.log",
        "wtpd.log",
        "capwap.pcap",
        "dtls-keys.log",
        "acsim.status",
    ] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let port = free_port_pair().map_err(io("pick a UDP port"))?;
    let listen = write_lab(&dir, opts.dtls, port)?;
    println!("acsim demo: lab in {}", dir.display());
    println!("acsim demo: controller on {listen}, DTLS {:?}", opts.dtls);

    let acsim_bin = std::env::current_exe().map_err(io("current executable"))?;
    let wtpd_bin = sibling_binary("wtpd")?;
    let mut tails = vec![
        Tail {
            path: dir.join("acsim.log"),
            prefix: "acsim",
            pos: 0,
        },
        Tail {
            path: dir.join("wtpd.log"),
            prefix: "wtpd ",
            pos: 0,
        },
    ];
    let mut ac = spawn(&acsim_bin, &["run", "--config", "acsim.toml"], &dir)?;
    let mut ok = true;
    let mut notes = Vec::new();
    let listening = wait_until(Duration::from_secs(10), &mut tails, || {
        log_has(&dir.join("acsim.log"), "listening")
    });
    if !listening {
        notes.push("acsim did not start listening".to_string());
        ok = false;
    }
    let mut wtp_code = None;
    let mut status = String::new();
    if ok {
        let mut wtp = spawn(&wtpd_bin, &["--config", "wtpd.toml"], &dir)?;
        let run = wait_until(Duration::from_secs(60), &mut tails, || {
            log_has(&dir.join("wtpd.log"), "CAPWAP State: Run")
        });
        if run {
            let hold = Duration::from_secs(opts.hold_secs);
            wait_until(hold, &mut tails, || false);
            status = std::fs::read_to_string(dir.join("acsim.status")).unwrap_or_default();
        } else {
            notes.push("wtpd did not reach Run within 60 s".into());
            ok = false;
        }
        wtp.signal(nix::sys::signal::Signal::SIGTERM);
        wtp_code = wtp.wait_for(Duration::from_secs(10), &mut tails);
        if wtp_code != Some(0) {
            notes.push(format!("wtpd exit status {wtp_code:?}, expected 0"));
            ok = false;
        }
        // Let acsim log the close_notify before it stops.
        wait_until(Duration::from_millis(500), &mut tails, || false);
    }
    ac.signal(nix::sys::signal::Signal::SIGTERM);
    let ac_code = ac.wait_for(Duration::from_secs(10), &mut tails);
    if ac_code != Some(0) {
        notes.push(format!("acsim exit status {ac_code:?}, expected 0"));
        ok = false;
    }
    print!("{}", summary(&dir, wtp_code, ac_code, &status, ok, &notes));
    Ok(if ok { 0 } else { 1 })
}

fn wait_until(limit: Duration, tails: &mut [Tail], mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for t in tails.iter_mut() {
            t.pump();
        }
        if done() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn summary(
    dir: &Path,
    wtp: Option<i32>,
    ac: Option<i32>,
    status: &str,
    ok: bool,
    notes: &[String],
) -> String {
    let log = std::fs::read_to_string(dir.join("wtpd.log")).unwrap_or_default();
    let states: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("CAPWAP State: ").nth(1))
        .collect();
    let echoes = status
        .lines()
        .filter(|l| !l.starts_with("Total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let mut s = String::new();
    let _ = writeln!(s, "\n===== acsim demo summary =====");
    let _ = writeln!(s, "AP states      : {}", states.join(" -> "));
    let _ = writeln!(s, "Echoes answered: {echoes} (last status before stop)");
    let _ = writeln!(
        s,
        "wtpd exit      : {}",
        wtp.map(|c| c.to_string()).unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(
        s,
        "acsim exit     : {}",
        ac.map(|c| c.to_string()).unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(s, "Files          : {}", dir.display());
    for f in [
        "acsim.toml",
        "wtpd.toml",
        "acsim.log",
        "wtpd.log",
        "capwap.pcap",
        "dtls-keys.log",
    ] {
        let p = dir.join(f);
        let size = std::fs::metadata(&p).map(|m| m.len()).ok();
        let _ = writeln!(
            s,
            "  {f:<14} {}",
            size.map(|n| format!("{n} bytes"))
                .unwrap_or_else(|| "(none)".into())
        );
    }
    for n in notes {
        let _ = writeln!(s, "PROBLEM: {n}");
    }
    let _ = writeln!(s, "Result         : {}", if ok { "OK" } else { "FAILED" });
    s
}
