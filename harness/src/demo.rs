//! `acsim demo`: a complete lab on loopback, built and run in one command.
//!
//! It writes a PKI, an image folder like the seed's controller (`ap1g4 ... ap3g3` and
//! `version.info`), `acsim.toml` and `wtpd.toml` into a folder, starts `acsim run` and one
//! `wtpd` as separate processes (so that signals and exit codes are real), prints both logs as
//! they grow, and checks the scenario ([`Scenario`]).

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
    pub scenario: Scenario,
    /// Size of the lab board's image.
    pub image_size: u64,
    /// Where acsim takes the image from: its folder, or a real TFTP, SFTP or HTTPS server
    /// that the demo starts on loopback (`--source`).
    pub source: wtpd::fetch::spool::DownloadMode,
    /// Where the AP puts the image while it arrives (`--download-mode`): tmp/part.tar, or
    /// straight into its inactive slot.
    pub download_mode: wtpd::config::DownloadMode,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            dir: None,
            dtls: DemoDtls::Certificate,
            hold_secs: 5,
            scenario: Scenario::Upgrade,
            image_size: 8 * 1024 * 1024 + 601,
            source: wtpd::fetch::spool::DownloadMode::Local,
            download_mode: wtpd::config::DownloadMode::Tmp,
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

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |error| DemoError::Io { what, error }
}

/// A PSK for the lab (not a secret: it is written in the lab's files).
pub const LAB_PSK_HEX: &str = "6c61622d6f6e6c792d7073b02d6b6579";

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
         board = \"board.toml\"\n\
         state_dir = \"state\"\n\n\
         [image]\n\
         trust = [\"pki/image-root.pem\"]\n\n\
         [wtp]\n\
         name = \"wtp-sim-1\"\n\
         location = \"lab bench\"\n\
         model = \"sim\"\n\
         serial = \"SIM0001\"\n\
         base_mac = \"02:00:00:00:00:01\"\n\
         image_type = \"ap1g8\"\n\
         radios = [{{ id = 1, radio_type = 13 }}, {{ id = 2, radio_type = 10 }}]\n\n\
         [discovery]\n\
         controllers = [\"{listen}\"]\n\
         broadcast = false\n\n\
         [dtls]\n{wtp_dtls}\n\
         [timers]\n\
         discovery_interval = 1\n\
         data_channel_keep_alive = 2\n\
         data_channel_dead_interval = 6\n\n\
         # The board's upgrade hook, the seed's upgrade.sh (docs/configuration.md):\n\
         # [hooks]\n\
         # upgrade = \"/usr/libexec/wtpd/upgrade.sh\"\n\
         # timeout = 30\n\n\
         [log]\ntarget = \"{}\"\n",
        dir.join("wtpd.log").display()
    );
    for (name, text) in [("acsim.toml", acsim), ("wtpd.toml", wtpd)] {
        std::fs::write(dir.join(name), text).map_err(io(format!("write {name}")))?;
    }
    // A lab prepared for another board (the qemu-user tests put one in) keeps it.
    if !dir.join("board.toml").exists() {
        std::fs::write(dir.join("board.toml"), SIM_BOARD).map_err(io("write board.toml"))?;
    }
    write_board_storage(dir, CONTROLLER_VERSION, AP_VERSION)?;
    Ok(listen)
}

/// The simulated board's file (board/sim.toml).
pub const SIM_BOARD: &str = include_str!("../../board/sim.toml");

/// Creates the lab board's slots and U-Boot environment (for the simulated board, two redundant
/// copies in `env.bin`) with slot a booted at `running` and slot b holding `backup`.
pub fn write_board_storage(dir: &Path, running: &str, backup: &str) -> Result<(), DemoError> {
    use wtpd::image::bootenv;
    let board = wtpd::board::Board::load(&dir.join("board.toml"))
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    for s in &board.slots {
        if let Some(parent) = s.device.parent() {
            std::fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
        }
        if let Some(sim) = &s.sim {
            // A simulated flash slot: erased flash, all 0xFF.
            wtpd::flash::sim::SimFlash::create(&s.device, sim.info(s.size))
                .map_err(io(format!("create {}", s.device.display())))?;
            continue;
        }
        let f = std::fs::File::create(&s.device)
            .map_err(io(format!("create {}", s.device.display())))?;
        f.set_len(s.size)
            .map_err(io(format!("size {}", s.device.display())))?;
    }
    if !dir.join("fw_env.config").exists() {
        // fw_env.config paths are taken as they are (as libubootenv does): write absolute ones.
        let env_bin = std::fs::canonicalize(dir)
            .map_err(io(format!("resolve {}", dir.display())))?
            .join("env.bin");
        std::fs::write(
            dir.join("fw_env.config"),
            format!(
                "# DEVICE OFFSET SIZE (redundant copies)\n{0} 0x0000 0x2000\n{0} 0x2000 0x2000\n",
                env_bin.display()
            ),
        )
        .map_err(io("write fw_env.config"))?;
    }
    let cfg = board
        .env_config()
        .ok_or_else(|| DemoError::Setup(format!("board {} has no environment", board.name)))?
        .map_err(DemoError::Setup)?;
    // Fresh, erased environment storage, then the factory environment in both copies (in the
    // board's byte order).
    for c in &cfg.copies {
        let end = c.offset + c.size as u64;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&c.path)
            .map_err(io(format!("create {}", c.path.display())))?;
        if f.metadata().map(|m| m.len()).unwrap_or(0) < end {
            f.set_len(end)
                .map_err(io(format!("size {}", c.path.display())))?;
        }
        std::os::unix::fs::FileExt::write_all_at(&f, &vec![0xffu8; c.size], c.offset)
            .map_err(io(format!("erase {}", c.path.display())))?;
    }
    let env = bootenv::Env::from_pairs([
        ("boot_slot", "a"),
        ("slot_a_version", running),
        ("slot_a_state", "good"),
        ("slot_b_version", backup),
        ("slot_b_state", "good"),
    ])
    .map_err(|e| DemoError::Setup(e.to_string()))?;
    for _ in 0..2 {
        bootenv::write(&cfg, &env).map_err(|e| DemoError::Setup(format!("environment: {e}")))?;
    }
    Ok(())
}

/// The simulated board's bootloader: the rules of board/uboot/boot.cmd applied to env.bin.
pub fn boot_sim_board(dir: &Path) -> Result<String, DemoError> {
    use crate::bootloader::{self, Boot};
    use wtpd::image::bootenv;
    let board = wtpd::board::Board::load(&dir.join("board.toml"))
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let cfg = board
        .env_config()
        .ok_or_else(|| DemoError::Setup("no environment".into()))?
        .map_err(DemoError::Setup)?;
    let (mut env, _) =
        bootenv::read(&cfg).map_err(|e| DemoError::Setup(format!("environment: {e}")))?;
    let before = env.clone();
    let boot =
        bootloader::boot_step(&board, &mut env).map_err(|e| DemoError::Setup(e.to_string()))?;
    if env != before {
        bootenv::write(&cfg, &env).map_err(|e| DemoError::Setup(format!("environment: {e}")))?;
    }
    Ok(match boot {
        Boot::Slot { name, trial: true } => {
            format!("bootloader: booting slot {name} (trial)")
        }
        Boot::Slot { name, trial: false } => format!("bootloader: booting slot {name}"),
        Boot::RolledBack { failed, to } => {
            format!("bootloader: slot {failed} never became good: rolled back to {to}")
        }
    })
}

/// Follows a log file and prints new lines with a prefix.
pub(crate) struct Tail {
    pub(crate) path: PathBuf,
    pub(crate) prefix: String,
    pub(crate) pos: u64,
}

impl Tail {
    pub(crate) fn new(path: PathBuf, prefix: impl Into<String>) -> Tail {
        Tail {
            path,
            prefix: prefix.into(),
            pos: 0,
        }
    }

    pub(crate) fn pump(&mut self) {
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
pub(crate) struct Proc(pub(crate) Option<Child>);

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

pub(crate) fn sibling_binary(name: &str) -> Result<PathBuf, DemoError> {
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

pub(crate) fn spawn(bin: &Path, args: &[&str], dir: &Path) -> Result<Proc, DemoError> {
    let child = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .spawn()
        .map_err(io(format!("start {}", bin.display())))?;
    Ok(Proc(Some(child)))
}

pub(crate) fn log_has(path: &Path, needle: &str) -> bool {
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
        "acsim.sock",
    ] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let _ = std::fs::remove_dir_all(dir.join("state"));
    let _ = std::fs::remove_dir_all(dir.join("tmp"));
    if opts.scenario == Scenario::Fleet {
        return crate::fleet::demo(dir, opts.image_size);
    }
    let port = free_port_pair().map_err(io("pick a UDP port"))?;
    let listen = write_lab(&dir, opts.dtls, port)?;
    prepare_scenario(&dir, opts.scenario, opts.image_size)?;
    if opts.download_mode == wtpd::config::DownloadMode::Slot && opts.scenario != Scenario::Join {
        // [download] is the last table prepare_scenario wrote.
        let p = dir.join("wtpd.toml");
        let w = std::fs::read_to_string(&p).map_err(io("read wtpd.toml"))?;
        std::fs::write(&p, format!("{w}mode = \"slot\"\n")).map_err(io("write wtpd.toml"))?;
    }
    // The image server, when the image comes from one; it stops when the demo ends.
    let _server = match opts.source {
        wtpd::fetch::spool::DownloadMode::Local => None,
        mode => {
            let (server, table) = crate::lab::serve_lab_images(&dir, mode)
                .map_err(|e| DemoError::Setup(format!("image server: {e}")))?;
            let p = dir.join("acsim.toml");
            let text = std::fs::read_to_string(&p).map_err(io("read acsim.toml"))?;
            std::fs::write(&p, format!("{text}\n{table}")).map_err(io("write acsim.toml"))?;
            println!(
                "acsim demo: {mode:?} image server on 127.0.0.1:{} (pid {})",
                server.port,
                server.pid().unwrap_or(0)
            );
            Some(server)
        }
    };
    println!("acsim demo: lab in {}", dir.display());
    println!(
        "acsim demo: controller on {listen}, DTLS {:?}, scenario {:?}",
        opts.dtls, opts.scenario
    );

    let acsim_bin = std::env::current_exe().map_err(io("current executable"))?;
    let wtpd_bin = sibling_binary("wtpd")?;
    let mut tails = vec![
        Tail::new(dir.join("acsim.log"), "acsim"),
        Tail::new(dir.join("wtpd.log"), "wtpd "),
    ];
    let wlog = dir.join("wtpd.log");
    let alog = dir.join("acsim.log");
    let mut ac = spawn(&acsim_bin, &["run", "--config", "acsim.toml"], &dir)?;
    let mut notes: Vec<String> = Vec::new();
    let mut wtp_code = None;
    let mut status = String::new();
    let mut extra = String::new();
    if !wait_until(Duration::from_secs(10), &mut tails, || {
        log_has(&alog, "listening")
    }) {
        notes.push("acsim did not start listening".into());
    } else {
        let mut wtp = spawn(&wtpd_bin, &["--config", "wtpd.toml"], &dir)?;
        let sc = opts.scenario;
        let expect =
            |notes: &mut Vec<String>, tails: &mut [Tail], path: &Path, needle: &str, secs: u64| {
                let ok = wait_until(Duration::from_secs(secs), tails, || log_has(path, needle));
                if !ok {
                    notes.push(format!(
                        "no '{needle}' in {} within {secs} s",
                        path.display()
                    ));
                }
                ok
            };
        match sc {
            // Run by `fleet::demo` above.
            Scenario::Fleet => {}
            Scenario::Join => {
                if expect(&mut notes, &mut tails, &wlog, "CAPWAP State: Run", 60) {
                    wait_until(Duration::from_secs(opts.hold_secs), &mut tails, || false);
                    status = std::fs::read_to_string(dir.join("acsim.status")).unwrap_or_default();
                }
            }
            Scenario::Upgrade => {
                if expect(
                    &mut notes,
                    &mut tails,
                    &wlog,
                    "Image transfer completed",
                    300,
                ) {
                    extra = compare_download(&dir, &mut notes);
                    let code = wtp.wait_for(Duration::from_secs(30), &mut tails);
                    wtp = reboot_into_new_slot(
                        &dir, &wtpd_bin, code, &mut notes, &mut tails, &mut extra,
                    )?;
                }
            }
            Scenario::Predownload => {
                if expect(&mut notes, &mut tails, &wlog, "CAPWAP State: Run", 60) {
                    let echoes_before = echo_count(&dir);
                    let asked = Instant::now();
                    print!("{}", control(&dir, "predownload all")?);
                    if expect(
                        &mut notes,
                        &mut tails,
                        &wlog,
                        "Image 17.9.4.27 staged for activation",
                        300,
                    ) {
                        let took = asked.elapsed();
                        let during = echo_count(&dir).saturating_sub(echoes_before);
                        // Run goes on with the image staged: Echoes keep being answered.
                        let mut total = during;
                        for _ in 0..10 {
                            if total >= during + HELD_ECHOES {
                                break;
                            }
                            wait_until(Duration::from_secs(1), &mut tails, || false);
                            total = echo_count(&dir).saturating_sub(echoes_before);
                        }
                        extra = format!(
                            "Predownload    : downloaded and staged in {:.1} s in Run; Echoes answered \
                             meanwhile {during}, from the request to the activation {total}\n",
                            took.as_secs_f64()
                        );
                        if total < during + HELD_ECHOES {
                            notes.push(format!(
                                "fewer than {HELD_ECHOES} Echoes answered in Run after the predownload"
                            ));
                        }
                        if let Some(line) = state_change_after(
                            &wlog,
                            "Predownload of 17.9.4.27 requested by the AC",
                        ) {
                            notes.push(format!("the AP left Run during the predownload: {line}"));
                        }
                        extra.push_str(&compare_download(&dir, &mut notes));
                        // The controller must have the last block's answer before it can ask.
                        expect(
                            &mut notes,
                            &mut tails,
                            &alog,
                            "AP Image Download Success",
                            30,
                        );
                        status = control(&dir, "status").unwrap_or_default();
                        print!("{}", control(&dir, "activate all")?);
                        expect(
                            &mut notes,
                            &mut tails,
                            &wlog,
                            "Reset Request activates 17.9.4.27",
                            30,
                        );
                        let code = wtp.wait_for(Duration::from_secs(30), &mut tails);
                        wtp = reboot_into_new_slot(
                            &dir, &wtpd_bin, code, &mut notes, &mut tails, &mut extra,
                        )?;
                    }
                }
            }
            Scenario::MissingImage | Scenario::Timeout | Scenario::Stall | Scenario::Teardown => {
                let (ac_line, ap_line) = match sc {
                    Scenario::MissingImage => (
                        "No such file or directory",
                        "Aborting image download(controller refused the image",
                    ),
                    Scenario::Timeout => (
                        "after 0 blocks (fault switch)",
                        "Going to restart CAPWAP (reason : image download cannot start)",
                    ),
                    Scenario::Stall => (
                        "after 2000 blocks (fault switch)",
                        "Going to restart CAPWAP (reason : image download stalled)",
                    ),
                    _ => (
                        "Tearing DTLS down at byte",
                        "Aborting image download(0x0): Dtls cleanup, ap1g8",
                    ),
                };
                expect(&mut notes, &mut tails, &alog, ac_line, 60);
                expect(&mut notes, &mut tails, &wlog, ap_line, 60);
                // The retry: a second Image Data Request after the backoff.
                let retried = wait_until(Duration::from_secs(60), &mut tails, || {
                    std::fs::read_to_string(&wlog)
                        .is_ok_and(|t| t.matches("Image Data Request sent to").count() >= 2)
                });
                if !retried {
                    notes.push("no retry within 60 s".into());
                }
                status = control(&dir, "status").unwrap_or_default();
            }
        }
        if wtp_code.is_none() {
            wtp.signal(nix::sys::signal::Signal::SIGTERM);
            wtp_code = wtp.wait_for(Duration::from_secs(10), &mut tails);
        }
        let failure = matches!(
            sc,
            Scenario::MissingImage | Scenario::Timeout | Scenario::Stall | Scenario::Teardown
        );
        if failure && dir.join("tmp").join("part.tar").exists() {
            notes.push("a partial download was left in tmp/part.tar".into());
        }
        let want = 0;
        if wtp_code != Some(want) {
            notes.push(format!("wtpd exit status {wtp_code:?}, expected {want}"));
        }
        if status.is_empty() {
            status = control(&dir, "status").unwrap_or_default();
        }
        wait_until(Duration::from_millis(500), &mut tails, || false);
    }
    ac.signal(nix::sys::signal::Signal::SIGTERM);
    let ac_code = ac.wait_for(Duration::from_secs(10), &mut tails);
    if ac_code != Some(0) {
        notes.push(format!("acsim exit status {ac_code:?}, expected 0"));
    }
    let ok = notes.is_empty();
    let ap_status = wtpd::status::WtpStatus::load(&dir.join("state"))
        .map(|s| s.table())
        .unwrap_or_default();
    print!(
        "{}",
        summary(&dir, wtp_code, ac_code, &status, &ap_status, &extra, ok, &notes)
    );
    Ok(if ok { 0 } else { 1 })
}

/// After the agent's reset (exit 75): run the bootloader, start the agent again, and wait for
/// it to rejoin on the new slot and mark it good.
fn reboot_into_new_slot(
    dir: &Path,
    wtpd_bin: &Path,
    code: Option<i32>,
    notes: &mut Vec<String>,
    tails: &mut [Tail],
    extra: &mut String,
) -> Result<Proc, DemoError> {
    if code != Some(wtpd::runtime::wtp::EXIT_REBOOT) {
        notes.push(format!(
            "wtpd exit status {code:?} at the reset, expected {}",
            wtpd::runtime::wtp::EXIT_REBOOT
        ));
    }
    let line = boot_sim_board(dir)?;
    println!("board | {line}");
    extra.push_str(&format!("Reboot         : {line}\n"));
    let wtp = spawn(wtpd_bin, &["--config", "wtpd.toml"], dir)?;
    let wlog = dir.join("wtpd.log");
    let good = "(17.9.4.27) marked good";
    if !wait_until(Duration::from_secs(60), tails, || log_has(&wlog, good)) {
        notes.push(format!("no '{good}' after the reboot"));
    }
    wait_until(Duration::from_secs(2), tails, || false);
    Ok(wtp)
}

/// Echoes the AC has answered, from its status table (the last column of the rows below the
/// dashed line; the lines under a row that start with blanks carry its last error).
fn echo_count(dir: &Path) -> u64 {
    let table = control(dir, "status").unwrap_or_default();
    table
        .lines()
        .skip_while(|l| !l.starts_with("---"))
        .skip(1)
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

/// Echo intervals the predownload scenario holds Run with the image staged before it
/// activates it. The default 8 MiB image downloads in well under the lab's 1 s Echo interval
/// (the shortest the CAPWAP Timers element can say) on a fast machine, so Echoes answered
/// during the transfer alone cannot show that the AP stays in Run; Echoes answered from the
/// request through the staging and beyond, with no state change in the AP's log, do.
const HELD_ECHOES: u64 = 2;

/// The first `CAPWAP State:` line of the AP's log after the line containing `mark`.
fn state_change_after(log: &Path, mark: &str) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .skip_while(|l| !l.contains(mark))
        .find(|l| l.contains("CAPWAP State: "))
        .map(str::to_string)
}

/// Compares the AP's download with the served image.
fn compare_download(dir: &Path, notes: &mut Vec<String>) -> String {
    let image_type = wtpd::board::Board::load(&dir.join("board.toml"))
        .map(|b| b.image_type)
        .unwrap_or_else(|_| LAB_IMAGE_TYPE.to_string());
    let part = dir.join("tmp").join("part.tar");
    let slot_mode = std::fs::read_to_string(dir.join("wtpd.toml"))
        .is_ok_and(|w| w.lines().any(|l| l.trim() == "mode = \"slot\""));
    if slot_mode {
        if part.exists() {
            notes.push("slot mode, yet tmp/part.tar was created".into());
            return String::new();
        }
        return "Download check : streamed into the inactive slot (read back by the AP); no \
                tmp/part.tar\n"
            .into();
    }
    let got = sha256_file(&part);
    let want = sha256_file(&dir.join("images").join(&image_type));
    match (got, want) {
        (Ok(g), Ok(w)) if g == w => format!(
            "Download check : tmp/part.tar SHA-256 {} equals images/{image_type}\n",
            wtpd::image::download::hex(&g)
        ),
        (Ok(_), Ok(_)) => {
            notes.push("tmp/part.tar differs from the served image".into());
            String::new()
        }
        (g, w) => {
            notes.push(format!(
                "cannot compare the download: {:?} / {:?}",
                g.err(),
                w.err()
            ));
            String::new()
        }
    }
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

#[allow(clippy::too_many_arguments)]
fn summary(
    dir: &Path,
    wtp: Option<i32>,
    ac: Option<i32>,
    status: &str,
    ap_status: &str,
    extra: &str,
    ok: bool,
    notes: &[String],
) -> String {
    let log = std::fs::read_to_string(dir.join("wtpd.log")).unwrap_or_default();
    let states: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("CAPWAP State: ").nth(1))
        .collect();
    let mut s = String::new();
    let _ = writeln!(s, "\n===== acsim demo summary =====");
    let _ = writeln!(s, "AP states      : {}", states.join(" -> "));
    s.push_str(extra);
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
    if !ap_status.is_empty() {
        let _ = writeln!(s, "\n--- wtpd status ---\n{ap_status}");
    }
    if !status.is_empty() {
        let _ = writeln!(s, "--- acsim status ---\n{status}");
    }
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

/// What the demo shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scenario {
    /// Join, reach Run, hold it with Echoes, stop with SIGTERM.
    Join,
    /// The AP runs an older version: download at Join, checked, then Reset.
    #[default]
    Upgrade,
    /// The AP joins as it is; acsim asks it to predownload in Run, and once the image is
    /// staged and the AP has answered [`HELD_ECHOES`] more Echoes in Run, activates it.
    Predownload,
    /// The image folder lacks the AP's hardware type (the seed's wrong path).
    MissingImage,
    /// acsim never sends the first block (the seed's "image download cannot start").
    Timeout,
    /// acsim stops sending in the middle.
    Stall,
    /// acsim tears DTLS down in the middle of the transfer.
    Teardown,
    /// A fleet at two sites, predownloaded efficiently, activated in waves (`fleet::demo`).
    Fleet,
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "join" => Scenario::Join,
            "upgrade" => Scenario::Upgrade,
            "predownload" => Scenario::Predownload,
            "missing-image" => Scenario::MissingImage,
            "timeout" => Scenario::Timeout,
            "stall" => Scenario::Stall,
            "teardown" => Scenario::Teardown,
            "fleet" => Scenario::Fleet,
            other => {
                return Err(format!(
                    "--scenario {other}: use join, upgrade, predownload, missing-image, timeout, stall, teardown or fleet"
                ))
            }
        })
    }
}

/// The AP hardware types of the seed's image folder (the packer's default list).
pub use wtpd::image::pack::DEFAULT_HARDWARE_TYPES as HARDWARE_TYPES;
/// The lab board's hardware type.
pub const LAB_IMAGE_TYPE: &str = "ap1g8";
/// The versions of the seed: the controller's, the AP's, and the AP's backup.
pub const CONTROLLER_VERSION: &str = "17.9.4.27";
pub const AP_VERSION: &str = "17.3.3.26";
pub const AP_BACKUP_VERSION: &str = "8.10.130.0";

/// Writes an image folder like the seed's: one signed image per hardware type (a random
/// rootfs of `size` bytes, signed with the lab's image-signing chain) and `version.info`.
pub fn write_image_folder(
    dir: &Path,
    pki: &Path,
    version: &str,
    size: u64,
    omit: Option<&str>,
) -> Result<(), DemoError> {
    use std::io::Write;
    use wtpd::image::pack::{pack_folder, FolderSpec, PackSpec};
    std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    let rootfs = dir.with_file_name("rootfs.img");
    {
        let mut rng = wtpd::rng::Rng::new(size ^ 0xa5a5);
        let mut buf = vec![0u8; 64 * 1024];
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&rootfs).map_err(io(format!("create {}", rootfs.display())))?,
        );
        let mut left = size;
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            rng.fill(&mut buf[..k]);
            f.write_all(&buf[..k])
                .map_err(io(format!("write {}", rootfs.display())))?;
            left -= k as u64;
        }
        f.flush()
            .map_err(io(format!("write {}", rootfs.display())))?;
    }
    let spec = PackSpec::new(
        LAB_IMAGE_TYPE,
        version,
        &rootfs,
        &pki.join("image-signer.key"),
        &[
            pki.join("image-signer.pem"),
            pki.join("image-intermediate.pem"),
        ],
    );
    let types: Vec<String> = HARDWARE_TYPES
        .iter()
        .filter(|t| Some(**t) != omit)
        .map(|t| t.to_string())
        .collect();
    for t in HARDWARE_TYPES {
        let _ = std::fs::remove_file(dir.join(t));
    }
    pack_folder(
        &FolderSpec {
            image: spec,
            hardware_types: types,
        },
        dir,
    )
    .map_err(|e| DemoError::Setup(format!("image folder: {e}")))?;
    let _ = std::fs::remove_file(&rootfs);
    Ok(())
}

/// Adds a scenario's image folder and settings to a lab written by [`write_lab`].
pub fn prepare_scenario(dir: &Path, scenario: Scenario, image_size: u64) -> Result<(), DemoError> {
    if scenario == Scenario::Join {
        return Ok(());
    }
    let omit = (scenario == Scenario::MissingImage).then_some(LAB_IMAGE_TYPE);
    write_image_folder(
        &dir.join("images"),
        &dir.join("pki"),
        CONTROLLER_VERSION,
        image_size,
        omit,
    )?;
    write_board_storage(dir, AP_VERSION, AP_BACKUP_VERSION)?;
    let ac_path = dir.join("acsim.toml");
    let mut ac = std::fs::read_to_string(&ac_path).map_err(io("read acsim.toml"))?;
    let faults = match scenario {
        Scenario::Timeout => "[faults]\nstall_after_blocks = 0\n",
        Scenario::Stall => "[faults]\nstall_after_blocks = 2000\n",
        Scenario::Teardown => "[faults]\nteardown_at_byte = 2097152\n",
        _ => "",
    };
    let top = format!(
        "image_dir = \"images\"\ncontrol_socket = \"acsim.sock\"\nimage_at_join = {}\n",
        scenario != Scenario::Predownload
    );
    ac = format!("{top}{ac}\n{faults}");
    std::fs::write(&ac_path, ac).map_err(io("write acsim.toml"))?;
    let wtp_path = dir.join("wtpd.toml");
    let mut w = std::fs::read_to_string(&wtp_path).map_err(io("read wtpd.toml"))?;
    w = w.replace(
        "discovery_interval = 1\n",
        "discovery_interval = 1\nimage_data_start = 5\n",
    );
    w = format!(
        "{w}\n[download]\ndir = \"tmp\"\nretry_base = 3\nretry_max = 30\nrequired_bytes = {}\n",
        image_size
    );
    std::fs::write(&wtp_path, w).map_err(io("write wtpd.toml"))?;
    Ok(())
}

/// Sends one command to the lab acsim's control socket.
pub fn control(dir: &Path, line: &str) -> Result<String, DemoError> {
    wtpd::runtime::ac::control_request(&dir.join("acsim.sock"), line).map_err(io("control socket"))
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    wtpd::image::pack::hash_file(path)
        .map(|(_, sha)| sha)
        .map_err(|e| std::io::Error::other(e.to_string()))
}
