//! wtpd under init systems (docs/init.md): the systemd unit (verified by `systemd-analyze`),
//! the agent's sd_notify datagrams (READY=1, WATCHDOG=1, STOPPING=1) to a socket the test
//! binds, OpenWrt's procd init script sourced against stub `procd_*` / `config_*` functions,
//! the exit-75 supervisor, and the UCI file translated to wtpd.toml.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::process::{read, Killer};
use wtpd_harness::demo::{free_port_pair, write_lab, DemoDtls};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
fn wtpd() -> &'static str {
    env!("CARGO_BIN_EXE_wtpd")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wtpd-init-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The unit as shipped, with ExecStart pointing at this build (systemd-analyze checks that
/// the program exists), verifies without a single warning.
#[test]
fn the_systemd_unit_verifies() {
    let unit = read(&repo().join("board/systemd/wtpd.service"));
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "ExecStart=/usr/sbin/wtpd --config /etc/wtpd/wtpd.toml",
        "SuccessExitStatus=75",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "{line}");
    }
    let dir = tmp("unit");
    let copy = dir.join("wtpd.service");
    std::fs::write(&copy, unit.replace("/usr/sbin/wtpd", wtpd())).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian: systemd) must be installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "warnings:\n{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The unit's ExecStopPost line, run by sh as systemd would (`$$` is systemd's escape for
/// `$`): exit status 75 asks systemd for a reboot, anything else does not.
#[test]
fn the_units_stop_hook_reboots_on_75_only() {
    let unit = read(&repo().join("board/systemd/wtpd.service"));
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStopPost=/bin/sh -c '"))
        .and_then(|l| l.strip_suffix('\''))
        .expect("ExecStopPost=/bin/sh -c '...'")
        .replace("$$", "$");
    let dir = tmp("stoppost");
    let stub = dir.join("systemctl");
    std::fs::write(
        &stub,
        format!("#!/bin/sh\necho \"$*\" >> {}/calls\n", dir.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    for status in ["0", "1", "75"] {
        let ok = Command::new("sh")
            .args(["-c", &line])
            .env("EXIT_STATUS", status)
            .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
            .status()
            .unwrap();
        assert!(ok.success());
    }
    assert_eq!(read(&dir.join("calls")), "--no-block reboot\n");
    let _ = std::fs::remove_dir_all(dir);
}

/// Receives one datagram within `limit`.
fn recv(sock: &UnixDatagram, limit: Duration) -> Option<String> {
    sock.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// wtpd with NOTIFY_SOCKET and WATCHDOG_USEC as systemd sets them: READY=1 first, once its
/// configuration, board and state are read; then WATCHDOG=1 every half interval from its
/// event loop; STOPPING=1 on SIGTERM, and exit 0.
#[test]
fn the_agent_notifies_ready_then_pings_the_watchdog() {
    let dir = tmp("notify");
    // A lab without a controller: the agent starts and keeps discovering.
    write_lab(&dir, DemoDtls::Certificate, free_port_pair().unwrap()).unwrap();
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let started = Instant::now();
    let mut w = Killer(
        Command::new(wtpd())
            .args(["--config", "wtpd.toml"])
            .current_dir(&dir)
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "400000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let log = dir.join("wtpd.log");
    let first = recv(&sock, Duration::from_secs(20)).unwrap_or_else(|| panic!("{}", read(&log)));
    assert!(
        first.starts_with("READY=1\nSTATUS=WTP wtp-sim-1 running 17.9.4.27"),
        "{first:?}"
    );
    // Ready means the board's environment and the state directory were read.
    let text = read(&log);
    assert!(text.contains("Booted slot a (17.9.4.27)"), "{text}");
    let mut pings = Vec::new();
    while pings.len() < 4 {
        let m = recv(&sock, Duration::from_secs(5)).unwrap_or_else(|| panic!("{}", read(&log)));
        assert_eq!(m, "WATCHDOG=1");
        pings.push(Instant::now());
    }
    // Every 0.2 s (half of 0.4 s); the first one comes at once.
    let span = pings[3] - pings[1];
    assert!(
        span >= Duration::from_millis(300) && span < Duration::from_millis(1500),
        "{span:?}"
    );
    assert!(read(&log).contains("systemd watchdog: WATCHDOG=1 every 0.2s"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(w.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = loop {
        let m = recv(&sock, Duration::from_secs(5)).expect("STOPPING=1");
        if m != "WATCHDOG=1" {
            break m;
        }
    };
    assert_eq!(stopping, "STOPPING=1");
    let status = w.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(60));
    let _ = std::fs::remove_dir_all(dir);
}

fn executable(p: &Path, body: &str) {
    std::fs::write(p, body).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The procd init script, sourced by sh (dash: no bash extensions) against stub `config_*`
/// and `procd_*` functions that record their calls: enabled, it writes wtpd.toml with the real
/// `wtpd uci` and asks procd for one respawned instance under the exit-75 supervisor, restarted
/// when /etc/config/wtpd changes; disabled, it asks procd for nothing.
#[test]
fn the_procd_init_script_starts_the_supervised_agent_from_uci() {
    let script = repo().join("board/openwrt/etc/init.d/wtpd");
    let text = read(&script);
    assert!(text.starts_with("#!/bin/sh /etc/rc.common\n"));
    assert!(text.lines().any(|l| l == "USE_PROCD=1"));
    assert!(Command::new("sh")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap()
        .success());
    let dir = tmp("procd");
    let harness = format!(
        r#"calls="{dir}/calls"
rec() {{ echo "$*" >> "$calls"; }}
config_load() {{ rec config_load "$@"; }}
config_get_bool() {{ rec config_get_bool "$@"; eval "$1=\${{STUB_ENABLED:-0}}"; }}
config_get() {{ rec config_get "$@"; eval "$1=\"\$4\""; }}
procd_open_instance() {{ rec procd_open_instance "$@"; }}
procd_set_param() {{ rec procd_set_param "$@"; }}
procd_close_instance() {{ rec procd_close_instance "$@"; }}
procd_add_reload_trigger() {{ rec procd_add_reload_trigger "$@"; }}
. "{script}"
PROG="{wtpd}"
UCI_CONFIG="{uci}"
CONF="{dir}/var/etc/wtpd.toml"
start_service
rec "start_service returned $?"
service_triggers
"#,
        dir = dir.display(),
        script = script.display(),
        wtpd = wtpd(),
        uci = repo().join("board/openwrt/etc/config/wtpd").display(),
    );
    let run = |enabled: &str| {
        let _ = std::fs::remove_file(dir.join("calls"));
        let out = Command::new("sh")
            .args(["-c", &harness])
            .env("STUB_ENABLED", enabled)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        read(&dir.join("calls"))
    };
    let calls = run("1");
    let conf = dir.join("var/etc/wtpd.toml");
    let want = format!(
        "config_load wtpd\n\
         config_get_bool enabled main enabled 0\n\
         config_get respawn_threshold main respawn_threshold 3600\n\
         config_get respawn_timeout main respawn_timeout 5\n\
         config_get respawn_retry main respawn_retry 0\n\
         procd_open_instance\n\
         procd_set_param command /usr/libexec/wtpd/supervise {} --config {}\n\
         procd_set_param respawn 3600 5 0\n\
         procd_set_param file {}\n\
         procd_set_param stdout 1\n\
         procd_set_param stderr 1\n\
         procd_set_param term_timeout 45\n\
         procd_close_instance\n\
         start_service returned 0\n\
         procd_add_reload_trigger wtpd\n",
        wtpd(),
        conf.display(),
        repo().join("board/openwrt/etc/config/wtpd").display()
    );
    assert_eq!(calls, want);
    // The file it wrote is the agent's configuration.
    let c = wtpd::config::WtpdConfig::load(&conf).unwrap();
    assert_eq!(c.wtp.name, "ap-lobby");
    assert!(!dir.join("var/etc/wtpd.toml.tmp").exists());

    let calls = run("0");
    assert_eq!(
        calls,
        "config_load wtpd\nconfig_get_bool enabled main enabled 0\nstart_service returned 0\nprocd_add_reload_trigger wtpd\n"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The supervisor procd runs: exit 75 reboots the board (through `reboot`, here a stub),
/// another status goes back to procd unchanged, and procd's SIGTERM reaches the agent.
#[test]
fn the_supervisor_reboots_on_75_and_passes_sigterm_on() {
    let supervise = repo().join("board/openwrt/usr/libexec/wtpd/supervise");
    assert!(Command::new("sh")
        .arg("-n")
        .arg(&supervise)
        .status()
        .unwrap()
        .success());
    let dir = tmp("supervise");
    let agent = dir.join("agent");
    let log = dir.join("log");
    executable(
        &agent,
        &format!(
            "#!/bin/sh\ntrap 'echo agent got TERM >> {log}; exit 0' TERM\necho \"agent $*\" >> {log}\n\
             [ -n \"$STUB_LOOP\" ] && while :; do sleep 0.05; done\nexit \"$STUB_STATUS\"\n",
            log = log.display()
        ),
    );
    let reboot = dir.join("reboot");
    executable(
        &reboot,
        &format!("#!/bin/sh\necho reboot >> {}\n", log.display()),
    );
    let run = |status: &str| {
        let _ = std::fs::remove_file(&log);
        let s = Command::new("sh")
            .arg(&supervise)
            .arg(&agent)
            .args(["--config", "/var/etc/wtpd.toml"])
            .env("STUB_STATUS", status)
            .env("WTPD_REBOOT_COMMAND", &reboot)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        (s.code(), read(&log))
    };
    assert_eq!(
        run("75"),
        (
            Some(0),
            "agent --config /var/etc/wtpd.toml\nreboot\n".to_string()
        )
    );
    assert_eq!(
        run("3"),
        (Some(3), "agent --config /var/etc/wtpd.toml\n".to_string())
    );

    let _ = std::fs::remove_file(&log);
    let mut child = Command::new("sh")
        .arg(&supervise)
        .arg(&agent)
        .env("STUB_LOOP", "1")
        .env("WTPD_REBOOT_COMMAND", &reboot)
        .spawn()
        .unwrap();
    assert!(common::process::wait_for(
        &log,
        "agent",
        Duration::from_secs(5)
    ));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(read(&log), "agent \nagent got TERM\n");
    let _ = std::fs::remove_dir_all(dir);
}

/// `wtpd uci FILE` prints the translation; a mistake names the file and the option.
#[test]
fn wtpd_uci_translates_the_file_or_says_what_is_wrong() {
    let out = Command::new(wtpd())
        .arg("uci")
        .arg(repo().join("board/openwrt/etc/config/wtpd"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let toml = String::from_utf8_lossy(&out.stdout);
    assert!(
        toml.contains("[hooks]\nupgrade = \"/usr/libexec/wtpd/upgrade.sh\"\n"),
        "{toml}"
    );
    let dir = tmp("uci");
    let bad = dir.join("wtpd");
    std::fs::write(&bad, "config wtp\n\toption colour 'red'\n").unwrap();
    let out = Command::new(wtpd()).arg("uci").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wtp.colour: unknown option"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
