//! A fleet of simulated APs against acsim (docs/fleet.md): real `wtpd` processes, each a
//! simulated board of its own (slots, U-Boot environment, state, download folder) of one of
//! several hardware types, at several sites, optionally each site behind an emulated WAN link
//! ([`crate::wan`]). [`FleetLab`] starts and supervises them (an agent's exit 75 is its
//! board's reboot: the simulated bootloader runs and the agent starts again); the fleet demo,
//! the fleet tests and the fleet bench drive it.
//!
//! An AP listed in `never_commit` plays a new image whose agent never reaches the controller:
//! after a reboot onto a slot on trial, its agent runs with a configuration that points at no
//! controller and is reset after [`TRIAL_WATCHDOG`] (a stand-in for the board's watchdog), so
//! the bootloader counts the trial boots and rolls the slot back, as the real rules do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::demo::{
    free_port_pair, io, sibling_binary, spawn, write_board_storage, write_image_folder, DemoError,
    Proc, Tail, AP_BACKUP_VERSION, AP_VERSION, CONTROLLER_VERSION, SIM_BOARD,
};
use crate::wan::{Link, WanConfig, WanTcp, WanUdp};

/// How long a never-committing image's agent runs before the stand-in watchdog resets it.
pub const TRIAL_WATCHDOG: Duration = Duration::from_secs(3);

/// How the fleet gets its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FleetMethod {
    /// Every AP by CAPWAP from the controller (the baseline).
    Capwap,
    /// Efficient upgrade: primaries by CAPWAP, subordinates by TFTP from them.
    #[default]
    Efficient,
    /// Efficient upgrade whose primaries fetch over HTTPS.
    EfficientHttps,
    /// Every AP over HTTPS, no primaries.
    Https,
}

impl std::str::FromStr for FleetMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "capwap" => FleetMethod::Capwap,
            "efficient" => FleetMethod::Efficient,
            "efficient-https" => FleetMethod::EfficientHttps,
            "https" => FleetMethod::Https,
            o => {
                return Err(format!(
                    "{o}: use capwap, efficient, efficient-https or https"
                ))
            }
        })
    }
}

/// What the lab is made of.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub dir: PathBuf,
    pub sites: Vec<String>,
    /// Hardware types; each site has `per_model` APs of each.
    pub models: Vec<String>,
    pub per_model: usize,
    pub image_size: u64,
    pub method: FleetMethod,
    /// Each site's link to the controller; `None`: straight to it.
    pub wan: Option<WanConfig>,
    /// APs whose new image never commits.
    pub never_commit: Vec<String>,
    /// The subordinates' random wait between attempts, seconds.
    pub backoff: (f64, f64),
    /// Print the agents' and acsim's logs as they come (the demo).
    pub echo_logs: bool,
    /// The agents' out-of-band attempts before CAPWAP (`[fleet] max_retries`).
    pub max_retries: u16,
    /// One TFTP/HTTPS attempt's wait per packet and its retransmissions (`[fetch]`).
    pub fetch_timeout: f64,
    pub fetch_retries: u32,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            dir: std::env::temp_dir().join(format!("acsim-fleet-{}", std::process::id())),
            sites: vec!["branch-1".into(), "branch-2".into()],
            models: vec!["ap1g8".into(), "ap3g3".into()],
            per_model: 2,
            image_size: 1 << 20,
            method: FleetMethod::Efficient,
            wan: None,
            never_commit: Vec::new(),
            backoff: (0.3, 1.5),
            echo_logs: false,
            max_retries: 44,
            fetch_timeout: 3.0,
            fetch_retries: 4,
        }
    }
}

/// One AP of the lab.
pub struct FleetAp {
    pub name: String,
    pub site: String,
    pub model: String,
    pub dir: PathBuf,
    proc: Option<Proc>,
    /// Stopped on purpose (not restarted).
    down: bool,
    /// The stand-in watchdog's deadline for a never-committing trial boot.
    trial_reset: Option<Instant>,
    pub reboots: u32,
}

/// One row of acsim's fleet table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetRow {
    pub name: String,
    pub site: String,
    pub primary: String,
    pub backup: String,
    pub status: String,
    pub image_type: String,
    pub role: String,
    pub eta: String,
    pub retry: u32,
    pub method: String,
}

/// A site's WAN link and its relays.
struct SiteLink {
    name: String,
    link: Link,
    _control: WanUdp,
    _data: WanUdp,
    _https: Option<WanTcp>,
}

/// The running fleet.
pub struct FleetLab {
    pub opts: FleetOptions,
    pub aps: Vec<FleetAp>,
    /// Held so that acsim is stopped when the lab is dropped.
    _acsim: Proc,
    wtpd_bin: PathBuf,
    links: Vec<SiteLink>,
    tails: Vec<Tail>,
}

/// The binary next to this one (acsim running the demo), else the tests' and benches'.
fn binary(name: &str) -> PathBuf {
    sibling_binary(name).unwrap_or_else(|_| crate::bins::path(name))
}

fn write(path: &Path, text: &str) -> Result<(), DemoError> {
    std::fs::write(path, text).map_err(io(format!("write {}", path.display())))
}

fn abs(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

impl FleetLab {
    /// Writes the lab, starts acsim (and the WAN links) and every AP; returns once acsim
    /// listens. The APs join by themselves ([`FleetLab::wait_joined`]).
    pub fn start(opts: FleetOptions) -> Result<FleetLab, DemoError> {
        let dir = opts.dir.clone();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        crate::pki::generate_lab_pki(&dir.join("pki"))
            .map_err(|e| DemoError::Setup(format!("PKI: {e}")))?;
        write_image_folder(
            &dir.join("images"),
            &dir.join("pki"),
            CONTROLLER_VERSION,
            opts.image_size,
            None,
        )?;
        let port = free_port_pair().map_err(io("pick UDP ports"))?;
        let ac: SocketAddr = ([127, 0, 0, 1], port).into();
        let https_port = crate::lab::free_port(false).map_err(DemoError::Setup)?;
        let https: SocketAddr = ([127, 0, 0, 1], https_port).into();
        let uses_https = matches!(
            opts.method,
            FleetMethod::EfficientHttps | FleetMethod::Https
        );

        // The APs, and each site's way to the controller.
        let mut aps = Vec::new();
        let mut links = Vec::new();
        let mut site_tables = String::new();
        for (si, site) in opts.sites.iter().enumerate() {
            let (controller, https_url) = match opts.wan {
                None => (ac, None),
                Some(cfg) => {
                    let link = Link::new(cfg).map_err(io("WAN link"))?;
                    let p = free_port_pair().map_err(io("pick UDP ports"))?;
                    let control = link
                        .udp(([127, 0, 0, 1], p).into(), ac)
                        .map_err(io("WAN relay"))?;
                    let data = link
                        .udp(
                            ([127, 0, 0, 1], p + 1).into(),
                            ([127, 0, 0, 1], port + 1).into(),
                        )
                        .map_err(io("WAN relay"))?;
                    let tcp = if uses_https {
                        Some(
                            link.tcp(([127, 0, 0, 1], 0).into(), https)
                                .map_err(io("WAN relay"))?,
                        )
                    } else {
                        None
                    };
                    let url = tcp.as_ref().map(|t| format!("https://{}", t.local_addr()));
                    links.push(SiteLink {
                        name: site.clone(),
                        link,
                        _control: control,
                        _data: data,
                        _https: tcp,
                    });
                    (SocketAddr::from(([127, 0, 0, 1], p)), url)
                }
            };
            let mut names = Vec::new();
            for (mi, model) in opts.models.iter().enumerate() {
                for i in 0..opts.per_model {
                    let name = format!("{site}-{model}-{}", i + 1);
                    let mac = format!("02:00:00:{:02x}:{:02x}:{:02x}", si + 1, mi + 1, i + 1);
                    let ap_dir = dir.join("aps").join(&name);
                    write_ap(&ap_dir, &dir, &name, site, model, &mac, controller, &opts)?;
                    names.push(format!("\"{name}\""));
                    aps.push(FleetAp {
                        name,
                        site: site.clone(),
                        model: model.clone(),
                        dir: ap_dir,
                        proc: None,
                        down: false,
                        trial_reset: None,
                        reboots: 0,
                    });
                }
            }
            site_tables.push_str(&format!(
                "\n[[fleet.site]]\nname = \"{site}\"\naps = [{}]\n{}",
                names.join(", "),
                https_url
                    .map(|u| format!("https_url = \"{u}\"\n"))
                    .unwrap_or_default()
            ));
        }
        let fleet = match opts.method {
            FleetMethod::Capwap => String::new(),
            FleetMethod::Efficient => "[fleet]\nefficient = true\n".to_string(),
            FleetMethod::EfficientHttps | FleetMethod::Https => format!(
                "[fleet]\nefficient = {}\nhttps_listen = \"{https}\"\nhttps_cert = \"pki/controller.pem\"\nhttps_key = \"pki/controller.key\"\n",
                opts.method == FleetMethod::EfficientHttps
            ),
        };
        let acsim = format!(
            "# acsim for a fleet, written by the fleet lab (harness/src/fleet.rs).\n\
             name = \"acsim-fleet\"\n\
             listen = \"{ac}\"\n\
             version = \"{CONTROLLER_VERSION}\"\n\
             image_dir = \"images\"\n\
             image_at_join = false\n\
             control_socket = \"acsim.sock\"\n\
             max_transfers = 100\n\n\
             [dtls]\nmode = \"certificate\"\ncert = \"pki/controller.pem\"\nkey = \"pki/controller.key\"\nca = \"pki/ca.pem\"\n\n\
             [timers]\necho_interval = 1\n\n\
             [log]\ntarget = \"{}\"\n\n{fleet}{}",
            abs(&dir.join("acsim.log")),
            if opts.method == FleetMethod::Capwap {
                String::new()
            } else {
                site_tables
            }
        );
        write(&dir.join("acsim.toml"), &acsim)?;
        let acsim_bin = binary("acsim");
        let wtpd_bin = binary("wtpd");
        let acsim = spawn(&acsim_bin, &["run", "--config", "acsim.toml"], &dir)?;
        let mut tails = vec![Tail::new(dir.join("acsim.log"), format!("{:>16}", "acsim"))];
        for ap in &aps {
            tails.push(Tail::new(
                ap.dir.join("wtpd.log"),
                format!("{:>16}", ap.name),
            ));
        }
        let mut lab = FleetLab {
            opts,
            aps,
            _acsim: acsim,
            wtpd_bin,
            links,
            tails,
        };
        let alog = dir.join("acsim.log");
        if !lab.wait(Duration::from_secs(15), |_| {
            crate::demo::log_has(&alog, "listening")
        }) {
            return Err(DemoError::Setup("acsim did not start listening".into()));
        }
        for i in 0..lab.aps.len() {
            lab.start_ap(i, "wtpd.toml")?;
        }
        Ok(lab)
    }

    fn start_ap(&mut self, i: usize, config: &str) -> Result<(), DemoError> {
        let ap = &mut self.aps[i];
        ap.proc = Some(spawn(&self.wtpd_bin, &["--config", config], &ap.dir)?);
        Ok(())
    }

    /// Supervises the agents (reboots, the stand-in watchdog) and prints logs when asked.
    pub fn pump(&mut self) {
        if self.opts.echo_logs {
            for t in &mut self.tails {
                t.pump();
            }
        }
        let now = Instant::now();
        for i in 0..self.aps.len() {
            if self.aps[i].down {
                continue;
            }
            if self.aps[i].trial_reset.is_some_and(|t| t <= now) {
                self.aps[i].trial_reset = None;
                if let Some(mut p) = self.aps[i].proc.take() {
                    if let Some(c) = &mut p.0 {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    p.0 = None;
                }
                println!(
                    "{}: watchdog: the trial image's agent never joined; reset",
                    self.aps[i].name
                );
                let _ = self.reboot(i);
                continue;
            }
            let exited = self.aps[i]
                .proc
                .as_mut()
                .and_then(|p| p.0.as_mut())
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.aps[i].proc = None;
                if status.code() == Some(wtpd::runtime::wtp::EXIT_REBOOT) {
                    let _ = self.reboot(i);
                } else {
                    println!("{}: wtpd exited with {status}", self.aps[i].name);
                    self.aps[i].down = true;
                }
            }
        }
    }

    /// The simulated board reboots: its bootloader, then its agent.
    fn reboot(&mut self, i: usize) -> Result<(), DemoError> {
        let line = crate::demo::boot_sim_board(&self.aps[i].dir)?;
        self.aps[i].reboots += 1;
        println!("{}: {line}", self.aps[i].name);
        let broken = line.contains("(trial)") && self.opts.never_commit.contains(&self.aps[i].name);
        if broken {
            self.aps[i].trial_reset = Some(Instant::now() + TRIAL_WATCHDOG);
            self.start_ap(i, "wtpd-broken.toml")
        } else {
            self.start_ap(i, "wtpd.toml")
        }
    }

    /// Pumps until `done` or `limit`; true when done.
    pub fn wait(&mut self, limit: Duration, mut done: impl FnMut(&mut FleetLab) -> bool) -> bool {
        let start = Instant::now();
        loop {
            self.pump();
            if done(self) {
                return true;
            }
            if start.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A command to acsim's control socket.
    pub fn control(&self, line: &str) -> Result<String, DemoError> {
        crate::demo::control(&self.opts.dir, line)
    }

    /// acsim's status table.
    pub fn status(&self) -> String {
        self.control("status").unwrap_or_default()
    }

    /// The names of the APs in Run, from the status table.
    pub fn in_run(&self) -> Vec<String> {
        let t = self.status();
        t.lines()
            .skip_while(|l| !l.starts_with("---"))
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter(|l| !l.starts_with(' '))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&"Run")).then(|| f[0].to_string())
            })
            .collect()
    }

    /// Waits until every AP not stopped on purpose is in Run.
    pub fn wait_joined(&mut self, limit: Duration) -> bool {
        let want = self.aps.iter().filter(|a| !a.down).count();
        self.wait(limit, |lab| lab.in_run().len() >= want)
    }

    /// The fleet table's rows.
    pub fn rows(&self) -> Vec<FleetRow> {
        parse_fleet_table(&self.status())
    }

    /// A counter of the status table's block.
    pub fn counter(&self, name: &str) -> Option<u32> {
        counter(&self.status(), name)
    }

    /// Stops an AP's agent with SIGKILL and does not restart it (a primary that dies).
    pub fn kill(&mut self, name: &str) {
        if let Some(ap) = self.aps.iter_mut().find(|a| a.name == name) {
            ap.down = true;
            if let Some(mut p) = ap.proc.take() {
                if let Some(c) = &mut p.0 {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                p.0 = None;
            }
        }
    }

    /// Freezes an AP's agent (SIGSTOP): it stays joined at the controller until its Echoes are
    /// missed, and answers nothing meanwhile (a primary that hangs).
    pub fn freeze(&mut self, name: &str) {
        if let Some(ap) = self.aps.iter().find(|a| a.name == name) {
            if let Some(c) = ap.proc.as_ref().and_then(|p| p.0.as_ref()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.id() as i32),
                    nix::sys::signal::Signal::SIGSTOP,
                );
            }
        }
    }

    /// The WAN bytes toward the APs of each site so far (payload and headers), and toward
    /// the controller.
    pub fn wan_bytes(&self) -> Vec<(String, u64, u64)> {
        self.links
            .iter()
            .map(|l| {
                let s = l.link.stats();
                (l.name.clone(), s.down.bytes, s.up.bytes)
            })
            .collect()
    }
}

impl Drop for FleetLab {
    fn drop(&mut self) {
        for ap in &mut self.aps {
            ap.proc = None;
        }
        for l in &self.links {
            l.link.stop();
        }
    }
}

/// Reads the fleet table of `acsim status`.
pub fn parse_fleet_table(table: &str) -> Vec<FleetRow> {
    table
        .lines()
        .skip_while(|l| !l.starts_with("AP Name\tSite"))
        .skip(1)
        .take_while(|l| l.contains('\t'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() < 11 {
                return None;
            }
            let half = |s: &str| s.split(" / ").next().unwrap_or("").to_string();
            Some(FleetRow {
                name: f[0].into(),
                site: f[1].into(),
                primary: half(f[2]),
                backup: half(f[3]),
                status: f[4].into(),
                image_type: f[5].into(),
                role: f[6].into(),
                eta: f[7].into(),
                retry: f[9].parse().unwrap_or(0),
                method: f[10].into(),
            })
        })
        .collect()
}

/// A counter of the status table's block (`  Completed predownloading  : 3`).
pub fn counter(table: &str, name: &str) -> Option<u32> {
    table.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim().parse().ok())?
    })
}

#[allow(clippy::too_many_arguments)]
fn write_ap(
    ap_dir: &Path,
    lab: &Path,
    name: &str,
    site: &str,
    model: &str,
    mac: &str,
    controller: SocketAddr,
    opts: &FleetOptions,
) -> Result<(), DemoError> {
    std::fs::create_dir_all(ap_dir).map_err(io(format!("create {}", ap_dir.display())))?;
    let board = SIM_BOARD.replace(
        "image_type = \"ap1g8\"",
        &format!("image_type = \"{model}\""),
    );
    write(&ap_dir.join("board.toml"), &board)?;
    write_board_storage(ap_dir, AP_VERSION, AP_BACKUP_VERSION)?;
    let pki = lab.join("pki");
    let fleet = if opts.method == FleetMethod::Capwap {
        String::new()
    } else {
        format!(
            "[fleet]\nenabled = true\nserve = \"127.0.0.1:0\"\nbackoff_min = {}\nbackoff_max = {}\nmax_retries = {}\n",
            opts.backoff.0, opts.backoff.1, opts.max_retries
        )
    };
    let config = |controller: SocketAddr| {
        format!(
            "# A fleet AP, written by the fleet lab (harness/src/fleet.rs).\n\
             bind = \"127.0.0.1:0\"\n\
             board = \"board.toml\"\n\
             state_dir = \"state\"\n\n\
             [image]\ntrust = [\"{}\"]\n\n\
             [wtp]\nname = \"{name}\"\nlocation = \"{site}\"\nmodel = \"sim\"\nserial = \"{name}\"\n\
             base_mac = \"{mac}\"\nimage_type = \"{model}\"\n\
             radios = [{{ id = 1, radio_type = 13 }}]\n\n\
             [discovery]\ncontrollers = [\"{controller}\"]\nbroadcast = false\n\n\
             [dtls]\nmode = \"certificate\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\npeer_name = \"acsim.lab\"\n\n\
             [timers]\ndiscovery_interval = 1\ndata_channel_keep_alive = 2\ndata_channel_dead_interval = 10\nimage_data_start = 15\n\n\
             [download]\ndir = \"tmp\"\nretry_base = 2\nretry_max = 10\nrequired_bytes = {}\n\n\
             [fetch]\ntimeout = {}\nretries = {}\nblksize = 1468\nwindowsize = 8\n\n\
             {fleet}\n\
             [log]\ntarget = \"{}\"\n",
            abs(&pki.join("image-root.pem")),
            abs(&pki.join("wtp.pem")),
            abs(&pki.join("wtp.key")),
            abs(&pki.join("ca.pem")),
            opts.image_size,
            opts.fetch_timeout,
            opts.fetch_retries,
            abs(&ap_dir.join("wtpd.log")),
        )
    };
    write(&ap_dir.join("wtpd.toml"), &config(controller))?;
    // The never-committing image's agent: it looks for a controller where there is none.
    write(
        &ap_dir.join("wtpd-broken.toml"),
        &config(([127, 0, 0, 1], 9).into()),
    )?;
    Ok(())
}

/// `acsim demo --scenario fleet`: two sites with two APs of each of two hardware types, each
/// site behind its own (unthrottled) WAN link, predownloaded efficiently while the fleet
/// table fills, activated in waves of 50 %, and the bytes that crossed each site's WAN
/// against the naive total. Returns 0 when every AP ends on the new version.
pub fn demo(dir: PathBuf, image_size: u64) -> Result<i32, DemoError> {
    let opts = FleetOptions {
        dir,
        image_size,
        wan: Some(WanConfig {
            delay: Duration::from_millis(2),
            ..WanConfig::default()
        }),
        ..FleetOptions::default()
    };
    println!(
        "acsim demo fleet: {} sites x {} types x {} APs, {} byte images, lab in {}",
        opts.sites.len(),
        opts.models.len(),
        opts.per_model,
        opts.image_size,
        opts.dir.display()
    );
    let mut lab = FleetLab::start(opts)?;
    let n = lab.aps.len();
    if !lab.wait_joined(Duration::from_secs(90)) {
        println!("{}", lab.status());
        return Ok(1);
    }
    println!("acsim demo fleet: {n} APs in Run; predownload");
    let base = lab.wan_bytes();
    print!("{}", lab.control("predownload all")?);
    let start = Instant::now();
    let mut shown = Instant::now() - Duration::from_secs(10);
    let done = lab.wait(Duration::from_secs(300), |lab| {
        let t = lab.status();
        if shown.elapsed() >= Duration::from_secs(2) {
            shown = Instant::now();
            println!("\n{t}");
        }
        counter(&t, "Completed predownloading") == Some(n as u32)
    });
    let took = start.elapsed();
    let wan: Vec<(String, u64)> = lab
        .wan_bytes()
        .iter()
        .zip(&base)
        .map(|((s, d, _), (_, d0, _))| (s.clone(), d - d0))
        .collect();
    println!("\n{}", lab.status());
    // How each AP got its image (the rows lose it when the AP resets into it).
    let predownloaded = lab.rows();
    if !done {
        println!("acsim demo fleet: FAILED: not every AP predownloaded");
        return Ok(1);
    }
    println!(
        "acsim demo fleet: predownloaded in {:.1}s; rolling activation, 50% of each site per wave",
        took.as_secs_f64()
    );
    print!("{}", lab.control("activate-rolling 50")?);
    let finished = lab.wait(Duration::from_secs(300), |lab| {
        let t = lab.status();
        t.contains("Rolling activation: complete") || t.contains("Rolling activation: HALTED")
    });
    let status = lab.status();
    println!("\n{status}");
    let rows = lab.rows();
    let size = lab.opts.image_size;
    println!("Bytes over each site's WAN link (acsim -> APs) against the naive total:");
    for (site, bytes) in &wan {
        let aps = rows.iter().filter(|r| &r.site == site).count() as u64;
        println!(
            "  {site}: {bytes} bytes on the link; naive {} ({aps} APs x {size}): {:.2}x",
            aps * size,
            *bytes as f64 / (aps * size) as f64
        );
        for model in &lab.opts.models {
            let g: Vec<&FleetRow> = predownloaded
                .iter()
                .filter(|r| &r.site == site && &r.image_type == model)
                .collect();
            let from_ac = g
                .iter()
                .filter(|r| r.method == "CAPWAP" || r.method == "HTTPS")
                .count();
            println!(
                "    {model}: {from_ac} of {} APs took the image from the controller ({} bytes; naive {})",
                g.len(),
                from_ac as u64 * size,
                g.len() as u64 * size
            );
        }
    }
    let all_new = rows.len() == n && rows.iter().all(|r| r.primary == CONTROLLER_VERSION);
    let ok = finished && status.contains("Rolling activation: complete") && all_new;
    println!(
        "acsim demo fleet: {}",
        if ok {
            format!("PASSED: all {n} APs run {CONTROLLER_VERSION}")
        } else {
            "FAILED".to_string()
        }
    );
    Ok(if ok { 0 } else { 1 })
}
