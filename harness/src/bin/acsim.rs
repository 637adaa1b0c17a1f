//! acsim: the CAPWAP controller side, for tests and labs. Argument parsing and wiring only.

use std::path::PathBuf;
use std::process::ExitCode;

use wtpd::config::AcsimConfig;

const HELP: &str = "\
acsim - CAPWAP (RFC 5415) controller simulator and test harness

USAGE:
    acsim run --config FILE          run the controller in the foreground
    acsim status --config FILE       print the table of APs (show ap image) of a running acsim
    acsim predownload --config FILE [--ap NAME]
                                     ask APs in Run to predownload the served image
    acsim activate --config FILE [--ap NAME]
                                     reset APs into the predownloaded image
    acsim activate --config FILE --rolling [--wave-percent N] [--site S]
                                     rolling activation: N% (default 25) of each
                                     site at a time; the next wave when the last
                                     has rejoined on the new version; halts on the
                                     first AP that does not (docs/fleet.md)
    acsim reset --config FILE --ap NAME
                                     send a Reset Request
    acsim demo [--dir DIR] [--dtls certificate|psk] [--scenario NAME] [--hold SECONDS]
               [--image-size BYTES] [--source local|tftp|sftp|https]
               [--download-mode tmp|slot]
                                     build a lab in DIR (a new temporary folder when not
                                     given) and run a scenario with one wtpd over DTLS:
                                     upgrade (default): the AP runs 17.3.3.26, downloads
                                       17.9.4.27 at Join, checks it, resets
                                     join: reach Run, hold it with Echoes, SIGTERM
                                     predownload: download in Run, hold Run with
                                       Echoes, then activate
                                     missing-image, timeout, stall, teardown: the seed's
                                       failures, each aborted cleanly and retried
                                     fleet: 8 wtpd of two types at two sites, efficient
                                       predownload, rolling activation, WAN bytes
                                       (docs/fleet.md)
                                     --source tftp|sftp|https: acsim fetches the image
                                       from a real tftpd-hpa, sshd or nginx the demo
                                       starts on loopback (docs/image-servers.md)
                                     --download-mode slot: the AP streams the image
                                       into its inactive slot, no tmp/part.tar
                                       (docs/ab-update.md, Slot mode)
    acsim load --dir DIR [--n N] [--rate R] [--dtls certificate|psk|off] [--download]
               [--hold SECONDS] [--controller HOST:PORT]... [--limit SECONDS]
                                     N simulated APs in this process, each the real agent
                                     (state machine, runtime, own sockets, own DTLS
                                     session), against the lab in DIR: all at once (a
                                     power-outage storm) or R per second; prints when
                                     each joined (and downloaded), then stops them
    acsim load --write-lab --dir DIR [--dtls MODE] [--image-size BYTES] [--max-wtps N]
               [--max-transfers N] [--echo-interval S]
                                     write such a lab (PKI, images, acsim.toml) and exit;
                                     start its controller with `acsim run`
    acsim image pack --hardware-type TYPE --version V --rootfs FILE --key KEY
               --chain CERT [--chain CERT]... [--board NAME]... [--algorithm ALG] --out FILE
                                     build one signed image (docs/image-format.md)
    acsim image folder --version V --rootfs FILE --key KEY --chain CERT...
               [--types ap1g4,ap1g8,...] [--algorithm ALG] --dir DIR
                                     build an image folder like the seed's: one signed
                                     image per hardware type, plus version.info
    acsim --help | --version

DEMO FILES (in DIR):
    acsim.toml wtpd.toml             the two configurations
    images/                          the image folder acsim serves (one file per
                                     hardware type, version.info)
    tmp/ state/                      the AP's download directory and state directory
    pki/                             controller CA and certificates, AP certificate,
                                     image-signing chain
    acsim.log wtpd.log               both logs
    capwap.pcap                      decrypted CAPWAP control, as UDP 5246/5247
    dtls-keys.log                    DTLS secrets, NSS key log format
";

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("acsim: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<i32, Box<dyn std::error::Error>> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let cmd = match parser.next()? {
        Some(Value(v)) => v.string()?,
        Some(Short('h') | Long("help")) | None => {
            print!("{HELP}");
            return Ok(0);
        }
        Some(Short('V') | Long("version")) => {
            println!("acsim {}", env!("CARGO_PKG_VERSION"));
            return Ok(0);
        }
        Some(other) => return Err(other.unexpected().into()),
    };
    if cmd == "image" {
        return image_command(parser);
    }
    if cmd == "load" {
        return load_command(parser);
    }
    let mut config: Option<PathBuf> = None;
    let mut ap: Option<String> = None;
    let mut rolling = false;
    let mut wave_percent: u8 = 25;
    let mut site: Option<String> = None;
    let mut demo = wtpd_harness::demo::DemoOptions::default();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('c') | Long("config") => config = Some(parser.value()?.into()),
            Long("dir") => demo.dir = Some(parser.value()?.into()),
            Long("ap") => ap = Some(parser.value()?.string()?),
            Long("rolling") => rolling = true,
            Long("wave-percent") => wave_percent = parser.value()?.parse()?,
            Long("site") => site = Some(parser.value()?.string()?),
            Long("scenario") => demo.scenario = parser.value()?.string()?.parse()?,
            Long("dtls") => demo.dtls = parser.value()?.string()?.parse()?,
            Long("hold") => demo.hold_secs = parser.value()?.parse()?,
            Long("image-size") => demo.image_size = parser.value()?.parse()?,
            Long("source") => demo.source = parser.value()?.string()?.parse()?,
            Long("download-mode") => {
                demo.download_mode = match parser.value()?.string()?.as_str() {
                    "tmp" => wtpd::config::DownloadMode::Tmp,
                    "slot" => wtpd::config::DownloadMode::Slot,
                    other => return Err(format!("--download-mode {other}: use tmp or slot").into()),
                }
            }
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(0);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    match cmd.as_str() {
        "run" => {
            let path = config.ok_or("run needs --config FILE")?;
            let cfg = AcsimConfig::load(&path)?;
            let (target, level) = cfg.log.resolve("acsim")?;
            wtpd::logging::init(target, level)?;
            // Out-of-band HTTPS downloads: the image folder over HTTPS (docs/fleet.md).
            let _https = match (cfg.fleet.https_listen, &cfg.image_dir) {
                (Some(listen), Some(dir)) => {
                    let read = |p: &Option<PathBuf>, what: &str| {
                        let p = p.as_ref().ok_or(format!("fleet.{what} is not set"))?;
                        std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
                    };
                    let cert = read(&cfg.fleet.https_cert, "https_cert")?;
                    let key = read(&cfg.fleet.https_key, "https_key")?;
                    Some(wtpd_harness::https::HttpsImageServer::start(
                        listen,
                        dir.clone(),
                        &cert,
                        &key,
                    )?)
                }
                (Some(_), None) => return Err("fleet.https_listen needs image_dir".into()),
                _ => None,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(wtpd::runtime::ac::run(cfg, &path))?)
        }
        "status" => {
            let path = config.ok_or("status needs --config FILE")?;
            let cfg = AcsimConfig::load(&path)?;
            if cfg.control_socket.is_some() {
                print!("{}", control(&cfg, "status")?);
                return Ok(0);
            }
            let file = cfg
                .status_file
                .ok_or("the configuration names neither control_socket nor status_file")?;
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("{}: {e} (is acsim running?)", file.display()))?;
            print!("{text}");
            Ok(0)
        }
        "activate" if rolling => {
            let path = config.ok_or("activate needs --config FILE")?;
            let cfg = AcsimConfig::load(&path)?;
            let line = format!(
                "activate-rolling {wave_percent} {}",
                site.as_deref().unwrap_or("")
            );
            let answer = control(&cfg, line.trim_end())?;
            print!("{answer}");
            Ok(if answer.contains(": started") { 0 } else { 1 })
        }
        "predownload" | "activate" | "reset" => {
            let path = config.ok_or_else(|| format!("{cmd} needs --config FILE"))?;
            let cfg = AcsimConfig::load(&path)?;
            let who = match (cmd.as_str(), ap) {
                ("reset", None) => return Err("reset needs --ap NAME".into()),
                (_, Some(a)) => a,
                (_, None) => "all".into(),
            };
            let answer = control(&cfg, &format!("{cmd} {who}"))?;
            print!("{answer}");
            Ok(
                if answer.contains(": sent") || answer.contains(": predownload queued") {
                    0
                } else {
                    1
                },
            )
        }
        "demo" => Ok(wtpd_harness::demo::run(demo)?),
        other => Err(format!("unknown command '{other}' (see --help)").into()),
    }
}

/// Sends one command to a running acsim over its control socket and returns the answer.
fn control(cfg: &AcsimConfig, line: &str) -> Result<String, Box<dyn std::error::Error>> {
    let path = cfg
        .control_socket
        .as_ref()
        .ok_or("the configuration names no control_socket")?;
    Ok(wtpd::runtime::ac::control_request(path, line)?)
}

/// `acsim image pack|folder ...`: signed images for acsim to serve.
fn image_command(mut parser: lexopt::Parser) -> Result<i32, Box<dyn std::error::Error>> {
    use lexopt::prelude::*;
    use wtpd::image::manifest::SignatureAlgorithm;
    use wtpd::image::pack::{
        pack_folder, pack_image, FolderSpec, PackSpec, DEFAULT_HARDWARE_TYPES,
    };
    let sub = match parser.next()? {
        Some(Value(v)) => v.string()?,
        _ => return Err("image needs pack or folder (see --help)".into()),
    };
    let (mut hw, mut version, mut rootfs, mut key, mut out, mut dir) =
        (None, None, None, None, None, None);
    let mut chain: Vec<PathBuf> = Vec::new();
    let mut boards: Vec<String> = Vec::new();
    let mut types: Option<Vec<String>> = None;
    let mut algorithm = SignatureAlgorithm::default();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("hardware-type") => hw = Some(parser.value()?.string()?),
            Long("version") => version = Some(parser.value()?.string()?),
            Long("rootfs") => rootfs = Some(PathBuf::from(parser.value()?)),
            Long("key") => key = Some(PathBuf::from(parser.value()?)),
            Long("chain") => chain.push(parser.value()?.into()),
            Long("board") => boards.push(parser.value()?.string()?),
            Long("types") => {
                types = Some(
                    parser
                        .value()?
                        .string()?
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                )
            }
            Long("algorithm") => {
                let a = parser.value()?.string()?;
                algorithm = SignatureAlgorithm::from_name(&a).ok_or_else(|| {
                    format!("--algorithm {a}: use ecdsa-p256-sha256, ed25519 or rsa-pss-sha256")
                })?;
            }
            Long("out") => out = Some(PathBuf::from(parser.value()?)),
            Long("dir") => dir = Some(PathBuf::from(parser.value()?)),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let version = version.ok_or("--version is required")?;
    let rootfs = rootfs.ok_or("--rootfs is required")?;
    let key = key.ok_or("--key is required")?;
    if chain.is_empty() {
        return Err("--chain (the signer certificate, then intermediates) is required".into());
    }
    let mut spec = PackSpec::new(
        hw.as_deref().unwrap_or("ap1g8"),
        &version,
        &rootfs,
        &key,
        &chain,
    );
    spec.boards = boards;
    spec.algorithm = algorithm;
    match sub.as_str() {
        "pack" => {
            hw.ok_or("--hardware-type is required")?;
            let out = out.ok_or("--out is required")?;
            let p = pack_image(&spec, &out)?;
            println!(
                "{}: {} {} ({} bytes)",
                p.path.display(),
                p.manifest.hardware_type,
                p.manifest.version,
                std::fs::metadata(&p.path)?.len()
            );
            Ok(0)
        }
        "folder" => {
            let dir = dir.ok_or("--dir is required")?;
            let hardware_types = types.unwrap_or_else(|| {
                DEFAULT_HARDWARE_TYPES
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            });
            let packed = pack_folder(
                &FolderSpec {
                    image: spec,
                    hardware_types,
                },
                &dir,
            )?;
            for p in &packed {
                println!(
                    "{}: {} {}",
                    p.path.display(),
                    p.manifest.hardware_type,
                    p.manifest.version
                );
            }
            println!("{}: {version}", dir.join("version.info").display());
            Ok(0)
        }
        other => Err(format!("image {other}: use pack or folder").into()),
    }
}

/// `acsim load`: the load generator (harness/src/load.rs), or `--write-lab` its lab.
fn load_command(mut parser: lexopt::Parser) -> Result<i32, Box<dyn std::error::Error>> {
    use lexopt::prelude::*;
    use std::time::Duration;
    use wtpd_harness::load::{self, LoadDtls, LoadLab, LoadOptions};
    let mut opts = LoadOptions::default();
    let mut write = false;
    let mut lab = LoadLab {
        port: 0,
        dtls: LoadDtls::Certificate,
        image_size: None,
        max_wtps: 1000,
        max_transfers: None,
        echo_interval: 1,
    };
    let mut dir = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("dir") => dir = Some(PathBuf::from(parser.value()?)),
            Long("n") => opts.n = parser.value()?.parse()?,
            Long("rate") => opts.rate = Some(parser.value()?.parse()?),
            Long("dtls") => {
                opts.dtls = parser.value()?.string()?.parse()?;
                lab.dtls = opts.dtls;
            }
            Long("download") => opts.download = true,
            Long("hold") => opts.hold = Duration::from_secs_f64(parser.value()?.parse()?),
            Long("limit") => opts.limit = Duration::from_secs_f64(parser.value()?.parse()?),
            Long("controller") => opts.controllers.push(parser.value()?.parse()?),
            Long("quiet") => opts.progress = false,
            Long("write-lab") => write = true,
            Long("image-size") => lab.image_size = Some(parser.value()?.parse()?),
            Long("max-wtps") => lab.max_wtps = parser.value()?.parse()?,
            Long("max-transfers") => lab.max_transfers = Some(parser.value()?.parse()?),
            Long("echo-interval") => lab.echo_interval = parser.value()?.parse()?,
            Long("port") => lab.port = parser.value()?.parse()?,
            _ => return Err(arg.unexpected().into()),
        }
    }
    let dir = dir.ok_or("load needs --dir DIR")?;
    if write {
        if lab.port == 0 {
            lab.port = wtpd_harness::demo::free_port_pair()?;
        }
        let addr = load::write_load_lab(&dir, &lab)?;
        println!(
            "lab written to {}: controller {addr}; start it with `acsim run --config {}`",
            dir.display(),
            dir.join("acsim.toml").display()
        );
        return Ok(0);
    }
    opts.dir = dir;
    // The agents' own warnings only: a thousand agents' info lines would be the load.
    wtpd::logging::init(wtpd::logging::LogTarget::Stderr, log::LevelFilter::Warn)?;
    let report = load::run(opts)?;
    print!("{}", report.summary());
    Ok(if report.all_done.is_some() { 0 } else { 1 })
}
