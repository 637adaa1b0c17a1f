//! `acsim load`: many simulated access points in one process, to see what a controller holds.
//!
//! Each simulated WTP is the agent itself: the real state machine (`wtpd::wtp`) driven by the
//! real runtime (`wtpd::runtime::wtp`, the code the `wtpd` binary runs), with its own control
//! and data UDP sockets and its own DTLS client session. Only what a process owns alone is
//! shared ([`wtpd::runtime::wtp::Embedding`]): one DTLS context (the lab PKI's AP certificate,
//! or its PSK), one tokio runtime on one thread, and a stop notice instead of SIGTERM. Hardware
//! types go round the image folder's (`ap1g4` ... `ap3g3`), so that downloads read every image.
//!
//! The lab (PKI, image folder, `acsim.toml` without capture or key log) is written by
//! [`write_load_lab`]; the agents start all at once (a power-outage storm) or at a rate, and
//! the run ends once every agent is in Run and held it (`hold`), or, when they download, once
//! every agent has its image (an agent without A/B slots keeps the file and "reboots": its
//! runtime returns [`EXIT_REBOOT`]).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use wtpd::config::WtpdConfig;
use wtpd::dtls::DtlsContext;
use wtpd::runtime::wtp::{run_embedded, Embedding, EXIT_REBOOT};
use wtpd::wtp::State;

use crate::demo::{DemoDtls, DemoError, AP_VERSION, CONTROLLER_VERSION, HARDWARE_TYPES};

/// DTLS of the simulated APs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadDtls {
    Certificate,
    Psk,
    Off,
}

impl std::str::FromStr for LoadDtls {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "certificate" | "cert" => Ok(LoadDtls::Certificate),
            "psk" => Ok(LoadDtls::Psk),
            "off" => Ok(LoadDtls::Off),
            other => Err(format!("--dtls {other}: use certificate, psk or off")),
        }
    }
}

/// `acsim load` options.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The lab folder ([`write_load_lab`], or `acsim demo`'s): `pki/`, `acsim.toml`.
    pub dir: PathBuf,
    /// The controller(s) the APs discover; by default the `listen` of the lab's acsim.toml.
    pub controllers: Vec<SocketAddr>,
    pub n: usize,
    /// APs started per second; `None`: all at once.
    pub rate: Option<f64>,
    pub dtls: LoadDtls,
    /// Run an older version than the lab serves, so that every AP downloads at Join.
    pub download: bool,
    /// How long the APs stay in Run once all are there (no download), before they stop.
    pub hold: Duration,
    /// Give up after this long.
    pub limit: Duration,
    /// Print a progress line every second.
    pub progress: bool,
    /// Lines added to the agents' `[timers]` (by default they wait 600 s for a transfer to
    /// start, `image_data_start`, rather than the RFC's 30 s).
    pub wtp_timers: String,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            dir: PathBuf::from("."),
            controllers: Vec::new(),
            n: 100,
            rate: None,
            dtls: LoadDtls::Certificate,
            download: false,
            hold: Duration::ZERO,
            limit: Duration::from_secs(600),
            progress: true,
            wtp_timers: String::new(),
        }
    }
}

/// What one simulated AP did, in seconds since the load started.
#[derive(Debug, Clone, Default)]
pub struct ApRecord {
    pub started: Option<f64>,
    /// First time in Run.
    pub run: Option<f64>,
    /// First time in Image Data.
    pub image_data: Option<f64>,
    /// First time out of Image Data again (the last block acknowledged, or the transfer
    /// failed). A downloaded image's time ends here, not at the exit: the agent then waits
    /// DTLSSessionDelete (5 s, RFC 5415 §4.7) in DTLS Teardown before it reboots, and that
    /// wait is the agent's, not the controller's transfer.
    pub image_done: Option<f64>,
    /// When its runtime returned, and with what.
    pub exited: Option<(f64, i32)>,
    pub error: Option<String>,
}

/// What a load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub aps: Vec<ApRecord>,
    /// Seconds until every AP was in Run (no download) or had its image (download).
    pub all_done: Option<f64>,
}

impl LoadReport {
    fn sorted(&self, f: impl Fn(&ApRecord) -> Option<f64>) -> Vec<f64> {
        let mut v: Vec<f64> = self.aps.iter().filter_map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// One line per figure, `key value` (the bench reads them).
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let pct = |v: &[f64], p: f64| -> f64 {
            if v.is_empty() {
                f64::NAN
            } else {
                v[((v.len() - 1) as f64 * p).round() as usize]
            }
        };
        let mut out = String::new();
        let n = self.aps.len();
        let joins = self.sorted(|a| Some(a.run? - a.started?));
        let _ = writeln!(out, "load.aps {n}");
        let _ = writeln!(out, "load.in_run {}", joins.len());
        let _ = writeln!(
            out,
            "load.join_s p50 {:.3} p90 {:.3} max {:.3}",
            pct(&joins, 0.5),
            pct(&joins, 0.9),
            pct(&joins, 1.0)
        );
        let downloads: Vec<(f64, f64)> = self
            .aps
            .iter()
            .filter_map(|a| match (a.image_data, a.image_done, a.exited) {
                (Some(s), Some(e), Some((_, code))) if code == EXIT_REBOOT => Some((s, e)),
                _ => None,
            })
            .collect();
        if !downloads.is_empty() {
            let first = downloads.iter().map(|d| d.0).fold(f64::MAX, f64::min);
            let last = downloads.iter().map(|d| d.1).fold(0.0, f64::max);
            let mut took: Vec<f64> = downloads.iter().map(|(s, e)| e - s).collect();
            took.sort_by(f64::total_cmp);
            let _ = writeln!(out, "load.downloaded {}", downloads.len());
            let _ = writeln!(out, "load.download_span_s {:.3}", last - first);
            let _ = writeln!(
                out,
                "load.download_s min {:.3} p50 {:.3} max {:.3}",
                took[0],
                pct(&took, 0.5),
                took[took.len() - 1]
            );
        }
        let errors = self.aps.iter().filter(|a| a.error.is_some()).count();
        let _ = writeln!(out, "load.errors {errors}");
        if let Some(e) = self.aps.iter().find_map(|a| a.error.as_ref()) {
            let _ = writeln!(out, "load.first_error {e}");
        }
        match self.all_done {
            Some(t) => {
                let _ = writeln!(out, "load.all_done_s {t:.3}");
            }
            None => {
                let _ = writeln!(out, "load.all_done_s none");
            }
        }
        out
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |error| DemoError::Io { what, error }
}

/// Settings of the lab's controller for a load run.
#[derive(Debug, Clone)]
pub struct LoadLab {
    pub port: u16,
    pub dtls: LoadDtls,
    /// Write an image folder with images of this size (for downloads).
    pub image_size: Option<u64>,
    pub max_wtps: u16,
    /// Concurrent Image Data transfers (`max_transfers`).
    pub max_transfers: Option<u32>,
    pub echo_interval: u64,
}

/// Writes a lab for `acsim load` into `dir`: the demo's PKI and configurations, an image folder
/// when asked for, and an acsim.toml without capture or key log (their cost is per packet, and
/// no controller under load writes them). Returns the controller's address.
pub fn write_load_lab(dir: &Path, lab: &LoadLab) -> Result<SocketAddr, DemoError> {
    let demo_dtls = match lab.dtls {
        LoadDtls::Psk => DemoDtls::Psk,
        _ => DemoDtls::Certificate,
    };
    let listen = crate::demo::write_lab(dir, demo_dtls, lab.port)?;
    if let Some(size) = lab.image_size {
        crate::demo::write_image_folder(
            &dir.join("images"),
            &dir.join("pki"),
            CONTROLLER_VERSION,
            size,
            None,
        )?;
    }
    let dtls = match lab.dtls {
        LoadDtls::Certificate => "mode = \"certificate\"\ncert = \"pki/controller.pem\"\nkey = \"pki/controller.key\"\nca = \"pki/ca.pem\"\n".to_string(),
        LoadDtls::Psk => format!(
            "mode = \"psk\"\npsk_identity = \"{}\"\npsk_key = \"{}\"\n",
            crate::pki::LAB_WTP_NAME,
            crate::demo::LAB_PSK_HEX
        ),
        LoadDtls::Off => "mode = \"off\"\n".to_string(),
    };
    let mut top = format!(
        "# acsim configuration written by `acsim load --write-lab`.\n\
         name = \"acsim-load\"\n\
         listen = \"{listen}\"\n\
         version = \"{CONTROLLER_VERSION}\"\n\
         control_socket = \"acsim.sock\"\n\
         max_wtps = {}\n",
        lab.max_wtps
    );
    if lab.image_size.is_some() {
        top.push_str("image_dir = \"images\"\n");
    }
    if let Some(m) = lab.max_transfers {
        top.push_str(&format!("max_transfers = {m}\n"));
    }
    let text = format!(
        "{top}\n[dtls]\n{dtls}\n[timers]\necho_interval = {}\n\n[log]\ntarget = \"{}\"\n",
        lab.echo_interval,
        dir.join("acsim.log").display()
    );
    std::fs::write(dir.join("acsim.toml"), text).map_err(io("write acsim.toml"))?;
    Ok(listen)
}

/// The agents' configuration: the lab's AP, renamed and given its hardware type per AP.
fn agent_template(opts: &LoadOptions) -> Result<(WtpdConfig, PathBuf), DemoError> {
    let dtls = match opts.dtls {
        LoadDtls::Certificate => "mode = \"certificate\"\ncert = \"pki/wtp.pem\"\nkey = \"pki/wtp.key\"\nca = \"pki/ca.pem\"\npeer_name = \"acsim.lab\"\n".to_string(),
        LoadDtls::Psk => format!(
            "mode = \"psk\"\npsk_identity = \"{}\"\npsk_key = \"{}\"\n",
            crate::pki::LAB_WTP_NAME,
            crate::demo::LAB_PSK_HEX
        ),
        LoadDtls::Off => "mode = \"off\"\n".to_string(),
    };
    let version = if opts.download {
        AP_VERSION
    } else {
        CONTROLLER_VERSION
    };
    let text = format!(
        "bind = \"127.0.0.1:0\"\n\
         [wtp]\nname = \"load\"\nmodel = \"sim\"\nserial = \"LOAD\"\nbase_mac = \"02:00:00:00:00:00\"\n\
         image_type = \"ap1g8\"\nradios = [{{ id = 1, radio_type = 13 }}]\n\
         [software]\nversion = \"{version}\"\nbackup = \"{}\"\n\
         [discovery]\ncontrollers = []\nbroadcast = false\n\
         [dtls]\n{dtls}\
         [timers]\ndiscovery_interval = 1\n{}\n\
         [download]\ndir = \"load-tmp\"\nretry_base = 3\nretry_max = 30\n\
         [log]\nlevel = \"warn\"\n",
        crate::demo::AP_BACKUP_VERSION,
        if opts.wtp_timers.contains("image_data_start") {
            opts.wtp_timers.clone()
        } else {
            format!("image_data_start = 600\n{}", opts.wtp_timers)
        }
    );
    let path = opts.dir.join("load-wtpd.toml");
    std::fs::write(&path, &text).map_err(io("write load-wtpd.toml"))?;
    let cfg = WtpdConfig::load(&path).map_err(|e| DemoError::Setup(e.to_string()))?;
    Ok((cfg, path))
}

/// The controller address of the lab's acsim.toml.
pub fn lab_controller(dir: &Path) -> Result<SocketAddr, DemoError> {
    let cfg = wtpd::config::AcsimConfig::load(&dir.join("acsim.toml"))
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    Ok(cfg.listen)
}

/// Runs the load: builds a current-thread runtime and drives every agent on it.
pub fn run(opts: LoadOptions) -> Result<LoadReport, DemoError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("tokio runtime"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, drive(opts))
}

async fn drive(mut opts: LoadOptions) -> Result<LoadReport, DemoError> {
    if opts.controllers.is_empty() {
        opts.controllers.push(lab_controller(&opts.dir)?);
    }
    let (template, cfg_path) = agent_template(&opts)?;
    let ctx = match template
        .dtls
        .to_dtls(&cfg_path)
        .map_err(|e| DemoError::Setup(e.to_string()))?
    {
        Some(c) => Some(DtlsContext::client(&c).map_err(|e| DemoError::Setup(e.to_string()))?),
        None => None,
    };
    let tmp = opts.dir.join("load-tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let records = Rc::new(RefCell::new(vec![ApRecord::default(); opts.n]));
    let t0 = Instant::now();
    let secs = move || t0.elapsed().as_secs_f64();
    let extra: Vec<String> = opts.controllers.iter().map(|a| a.to_string()).collect();
    let mut handles = Vec::new();
    let mut all_done: Option<f64> = None;
    let mut next_progress = 1.0;
    let mut started = 0usize;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io("SIGTERM handler"))?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(io("SIGINT handler"))?;
    let mut stopping = false;
    let mut all_done_at: Option<Instant> = None;
    loop {
        // Start the agents that are due.
        let due = match opts.rate {
            None => opts.n,
            Some(r) => ((secs() * r) as usize + 1).min(opts.n),
        };
        while started < due && !stopping {
            let i = started;
            started += 1;
            let mut cfg = template.clone();
            let hw = HARDWARE_TYPES[i % HARDWARE_TYPES.len()];
            cfg.wtp.name = format!("load-{i:04}");
            cfg.wtp.serial = format!("LOAD{i:06}");
            cfg.wtp.base_mac = format!(
                "02:00:00:{:02x}:{:02x}:{:02x}",
                i >> 16,
                (i >> 8) & 0xff,
                i & 0xff
            );
            cfg.wtp.image_type = hw.to_string();
            if let Some(d) = cfg.download.as_mut() {
                d.dir = tmp.join(format!("{i:04}"));
                let _ = std::fs::create_dir_all(&d.dir);
            }
            let (state_tx, mut state_rx) = tokio::sync::watch::channel(State::Idle);
            let embedding = Embedding {
                stop: Some(stop_rx.clone()),
                ctx: ctx.clone(),
                state: Some(state_tx),
            };
            records.borrow_mut()[i].started = Some(secs());
            let recs = records.clone();
            let path = cfg_path.clone();
            let extra = extra.clone();
            // Watches the agent's state: the first Run, the first Image Data and the state after it.
            let recs_w = records.clone();
            tokio::task::spawn_local(async move {
                while state_rx.changed().await.is_ok() {
                    let s = *state_rx.borrow_and_update();
                    let mut r = recs_w.borrow_mut();
                    let now = secs();
                    match s {
                        State::Run if r[i].run.is_none() => r[i].run = Some(now),
                        State::ImageData if r[i].image_data.is_none() => {
                            r[i].image_data = Some(now)
                        }
                        State::ImageData => {}
                        _ if r[i].image_data.is_some() && r[i].image_done.is_none() => {
                            r[i].image_done = Some(now)
                        }
                        _ => {}
                    }
                }
            });
            let dl_dir = cfg.download.as_ref().map(|d| d.dir.clone());
            handles.push(tokio::task::spawn_local(async move {
                let result = run_embedded(cfg, &path, extra, embedding).await;
                let mut r = recs.borrow_mut();
                match result {
                    Ok(code) => r[i].exited = Some((secs(), code)),
                    Err(e) => {
                        r[i].exited = Some((secs(), -1));
                        r[i].error = Some(e.to_string());
                    }
                }
                // The image is not kept: a hundred of them would fill the disk.
                if let Some(d) = dl_dir {
                    let _ = std::fs::remove_dir_all(d);
                }
            }));
        }
        // Done?
        let (in_run, exited, downloaded) = {
            let r = records.borrow();
            (
                r.iter().filter(|a| a.run.is_some()).count(),
                r.iter().filter(|a| a.exited.is_some()).count(),
                r.iter()
                    .filter(|a| matches!(a.exited, Some((_, c)) if c == EXIT_REBOOT))
                    .count(),
            )
        };
        let now = secs();
        if opts.progress && now >= next_progress {
            next_progress = now.floor() + 1.0;
            eprintln!(
                "load: {now:6.1} s  started {started}  in Run {in_run}  downloaded {downloaded}  exited {exited}"
            );
        }
        if all_done.is_none() {
            let done = if opts.download {
                downloaded == opts.n
            } else {
                in_run == opts.n
            };
            if done {
                all_done = Some(now);
                all_done_at = Some(Instant::now());
                if opts.progress {
                    eprintln!("load: all {} done at {now:.3} s", opts.n);
                }
            }
        }
        let held = all_done_at.is_some_and(|t| t.elapsed() >= opts.hold);
        if !stopping && (held || t0.elapsed() >= opts.limit) {
            stopping = true;
            let _ = stop_tx.send(true);
        }
        if stopping && exited == started {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(if opts.rate.is_some() { 10 } else { 50 })) => {}
            _ = sigterm.recv() => { stopping = true; let _ = stop_tx.send(true); }
            _ = sigint.recv() => { stopping = true; let _ = stop_tx.send(true); }
        }
    }
    for h in handles {
        let _ = h.await;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let aps = records.borrow().clone();
    Ok(LoadReport { aps, all_done })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ap(image_data: f64, image_done: Option<f64>, exited: f64, code: i32) -> ApRecord {
        ApRecord {
            started: Some(0.0),
            run: Some(0.5),
            image_data: Some(image_data),
            image_done,
            exited: Some((exited, code)),
            error: None,
        }
    }

    #[test]
    fn a_download_ends_when_image_data_does_not_at_the_reboot() {
        let report = LoadReport {
            // Out of Image Data at 1.5 and 2.0; both reboot 5 s later (DTLSSessionDelete).
            aps: vec![
                ap(1.0, Some(1.5), 6.5, EXIT_REBOOT),
                ap(1.0, Some(2.0), 7.0, EXIT_REBOOT),
                // Failed: out of Image Data, but no reboot into an image.
                ap(1.0, Some(1.2), 9.0, 0),
            ],
            all_done: Some(7.0),
        };
        let s = report.summary();
        assert!(s.contains("load.downloaded 2\n"), "{s}");
        assert!(s.contains("load.download_span_s 1.000\n"), "{s}");
        assert!(
            s.contains("load.download_s min 0.500 p50 1.000 max 1.000\n"),
            "{s}"
        );
    }
}
