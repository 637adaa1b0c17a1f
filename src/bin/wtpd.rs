//! wtpd: the CAPWAP access-point agent. Argument parsing and wiring only.

use std::path::PathBuf;
use std::process::ExitCode;

use wtpd::config::WtpdConfig;

const HELP: &str = "\
wtpd - CAPWAP (RFC 5415) access-point agent

USAGE:
    wtpd --config FILE [--controller HOST:PORT]...   run the agent in the foreground
    wtpd status --config FILE [--json]              the AP's image status (show ap image)
    wtpd fetch URL --config FILE [FETCH OPTIONS]     download an image into the download
                                                    directory (tftp://, sftp://, https://)
    wtpd uci FILE                                   print the wtpd.toml an OpenWrt UCI file
                                                    (/etc/config/wtpd) says (docs/init.md)
    wtpd --help | --version

OPTIONS:
    -c, --config FILE          the agent's configuration (wtpd.toml)
        --controller HOST:PORT a controller to discover, before those in the file;
                               may be repeated; HOST may be a DNS name
        --json                 with status: one JSON object
    -h, --help                 this text
    -V, --version              the version

FETCH OPTIONS (override the [fetch] table of the configuration):
        --user NAME --password PW --key FILE          SFTP login
        --known-hosts FILE --host-key SHA256:...      SFTP host key check
        --ca FILE                                     HTTPS trust anchors (PEM)
        --pin-sha256 HEX                              HTTPS: trust only this server
                                                      certificate (SHA-256 of its DER)
        --timeout SECONDS --retries N                 per packet / connection
        --blksize N --windowsize N                    TFTP options (RFC 2348, 7440)

The agent runs until SIGTERM or SIGINT (DTLS close_notify, exit 0). After a Reset it
reboots the board as its configuration says (reboot = \"syscall\"), or exits with
status 75 for its supervisor to reboot or restart it (reboot = \"exit\": the init
scripts of board/ reboot in order; the simulated board restarts). Under systemd
(NOTIFY_SOCKET) it sends READY=1 once its configuration and state are read and
WATCHDOG=1 every half WATCHDOG_USEC.
";

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("wtpd: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<i32, Box<dyn std::error::Error>> {
    use lexopt::prelude::*;
    let mut config: Option<PathBuf> = None;
    let mut controllers = Vec::new();
    let mut json = false;
    let mut status = false;
    let mut fetch: Option<Option<String>> = None;
    let mut fetch_opts: Vec<(String, Option<String>)> = Vec::new();
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == "uci") {
        let file: PathBuf = args
            .next()
            .ok_or("uci needs a FILE (/etc/config/wtpd)")?
            .into();
        if args.next().is_some() {
            return Err("uci takes one FILE".into());
        }
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let toml = wtpd::uci::to_toml(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        print!("{toml}");
        return Ok(0);
    }
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Value(v) if v == "status" && !status && fetch.is_none() => status = true,
            Value(v) if v == "fetch" && !status && fetch.is_none() => fetch = Some(None),
            Value(v) if matches!(fetch, Some(None)) => fetch = Some(Some(v.string()?)),
            Long(
                name @ ("user" | "password" | "key" | "known-hosts" | "host-key" | "ca"
                | "pin-sha256" | "timeout" | "retries" | "blksize" | "windowsize"),
            ) if fetch.is_some() => {
                let name = name.to_string();
                fetch_opts.push((name, Some(parser.value()?.string()?)));
            }
            Long("json") => json = true,
            Short('c') | Long("config") => config = Some(parser.value()?.into()),
            Long("controller") => controllers.push(parser.value()?.string()?),
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(0);
            }
            Short('V') | Long("version") => {
                println!("wtpd {}", env!("CARGO_PKG_VERSION"));
                return Ok(0);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let path = config.ok_or("--config FILE is required (see --help)")?;
    let mut cfg = WtpdConfig::load(&path)?;
    if let Some(url) = fetch {
        let url = url.ok_or("fetch needs a URL (tftp://, sftp:// or https://)")?;
        for (name, value) in fetch_opts {
            cfg.fetch.set_option(&name, value)?;
        }
        let (_, level) = cfg.log.resolve("wtpd")?;
        wtpd::logging::init(wtpd::logging::LogTarget::Stderr, level)?;
        return Ok(match wtpd::runtime::wtp::fetch_and_install(cfg, &url) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("wtpd: {e}");
                1
            }
        });
    }
    if status {
        let dir = cfg
            .state_dir
            .as_ref()
            .ok_or("the configuration names no state_dir")?;
        let st = wtpd::status::WtpStatus::load(dir)
            .ok_or_else(|| format!("no status in {} (has wtpd run?)", dir.display()))?;
        if json {
            println!("{}", st.to_json());
        } else {
            print!("{}", st.table());
        }
        return Ok(0);
    }
    let (target, level) = cfg.log.resolve("wtpd")?;
    wtpd::logging::init(target, level)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let code = rt.block_on(wtpd::runtime::wtp::run(cfg, &path, controllers))?;
    Ok(code)
}
