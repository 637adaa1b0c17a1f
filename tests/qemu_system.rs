//! The agent on a QEMU ARM system image (docs/qemu.md): u-boot-qemu runs the A/B boot script
//! (board/uboot/), Linux (Debian's armmp kernel) starts busybox init and wtpd, and the agent
//! joins the host's acsim through QEMU's user networking (the host is 10.0.2.2).
//!
//! All `#[ignore]`d (a few minutes each, and they need the armv7 board build): run them with
//! `scripts/qemu-system-test`, which builds what they need first. Each test keeps its folder,
//! `<target>/qemu-system/<test>/`: `serial.log` (the whole serial console: U-Boot, kernel,
//! init, wtpd), `acsim.log`, the lab and the image.
//!
//! - `boots_slot_a_and_joins`: U-Boot reads the environment from the disk, boots slot a, wtpd
//!   joins and reaches Run.
//! - `rolls_back_after_bootlimit_failed_boots`: the A/B switch is written into the disk's
//!   environment with `fw_setenv -s` (one write, as the agent makes it); slot b's image never
//!   commits (its agent does not start), its trial watchdog reboots, U-Boot counts three trial
//!   boots, then falls back to slot a, marks b invalid, and slot a's agent joins.
//! - `upgrade_installs_slot_b_and_rejoins` and `upgrade_that_never_commits_rolls_back`: the
//!   same through the agent: download of a signed image of slot b, install, switch, reboot.
//!   The agent's own install pipeline does the upgrade (board file and trust anchor come from the
//!   lab's wtpd.toml: `board`, `[image] trust`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wtpd_harness::demo::{free_port_pair, write_lab, DemoDtls, AP_VERSION, CONTROLLER_VERSION};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Extra top-level keys for the guest's wtpd.toml. None are needed: the lab's wtpd.toml already
/// names `board = "board.toml"` (the image carries /etc/wtpd/board.toml) and the image-signing
/// trust anchor `pki/image-root.pem`.
const INSTALL_TOML: &str = "";

fn acsim() -> &'static str {
    wtpd_harness::bins::acsim()
}

fn target_dir() -> PathBuf {
    Path::new(acsim())
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// The armv7 wtpd for the image: `WTPD_QEMU_BIN`, else the board-profile build.
fn wtpd_armv7() -> PathBuf {
    let p = std::env::var_os("WTPD_QEMU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            target_dir()
                .join("armv7-unknown-linux-gnueabihf")
                .join("board")
                .join("wtpd")
        });
    assert!(
        p.exists(),
        "{} missing: run scripts/qemu-system-test (it builds it)",
        p.display()
    );
    p
}

/// Children die with the test process, even when it is killed (no Drop runs then):
/// PR_SET_PDEATHSIG survives the exec of scripts/qemu-run into qemu-system-arm.
fn die_with_parent(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Stops a child when the test ends, whatever happens.
struct Killer(Child);
impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_default()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Lab {
    name: &'static str,
    dir: PathBuf,
    port: u16,
    acsim: Option<Killer>,
    qemu: Option<Killer>,
    /// How far the serial log has been checked.
    seen: usize,
}

impl Lab {
    /// A lab folder with the PKI and both configurations (`acsim demo`'s), acsim listening on
    /// every address: acsim announces its listen address in Discovery Responses (CAPWAP Control
    /// IPv4 Address), and the agent joins the address announced, so 127.0.0.1 would send the
    /// guest to its own loopback. 0.0.0.0 announces none, and the agent joins 10.0.2.2.
    fn new(name: &'static str) -> Lab {
        let dir = target_dir().join("qemu-system").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        let port = free_port_pair().unwrap();
        write_lab(&dir, DemoDtls::Certificate, port).unwrap();
        let ac = read(&dir.join("acsim.toml")).replace(
            &format!("listen = \"127.0.0.1:{port}\""),
            &format!("listen = \"0.0.0.0:{port}\""),
        );
        std::fs::write(dir.join("acsim.toml"), ac).unwrap();
        eprintln!("{name}: lab {}", dir.display());
        Lab {
            name,
            dir,
            port,
            acsim: None,
            qemu: None,
            seen: 0,
        }
    }

    /// /etc/wtpd for the guest: the lab's wtpd.toml made for the board (controller at
    /// 10.0.2.2, reboot(2), log on the console), the AP's PKI, and `extra` files.
    fn guest_etc(&self, sub: &str, version: &str, extra: &[(&str, &str)]) -> PathBuf {
        let etc = self.dir.join(sub);
        std::fs::create_dir_all(etc.join("pki")).unwrap();
        for f in ["wtp.pem", "wtp.key", "ca.pem", "image-root.pem"] {
            std::fs::copy(self.dir.join("pki").join(f), etc.join("pki").join(f)).unwrap();
        }
        let w = read(&self.dir.join("wtpd.toml"));
        let mut out = String::new();
        out.push_str(INSTALL_TOML);
        let mut in_software = false;
        for line in w.lines() {
            let l = if line.starts_with("bind = ") {
                "bind = \"0.0.0.0:0\"".to_string()
            } else if line.starts_with("reboot = ") {
                "reboot = \"syscall\"".to_string()
            } else if line.starts_with("target = ") {
                "target = \"stderr\"".to_string()
            } else if line.starts_with("name = \"wtp-sim-1\"") {
                "name = \"wtp-qemu-1\"".to_string()
            } else if line.starts_with("controllers = ") {
                format!("controllers = [\"10.0.2.2:{}\"]", self.port)
            } else if in_software && line.starts_with("version = ") {
                format!("version = \"{version}\"")
            } else {
                line.to_string()
            };
            if line.starts_with('[') {
                in_software = line == "[software]";
            }
            out.push_str(&l);
            out.push('\n');
        }
        std::fs::write(etc.join("wtpd.toml"), out).unwrap();
        for (name, text) in extra {
            std::fs::write(etc.join(name), text).unwrap();
        }
        etc
    }

    fn image_dir(&self) -> PathBuf {
        self.dir.join("image")
    }

    /// scripts/qemu-image with slot a and slot b.
    fn build_image(&self, etc_a: &Path, va: &str, etc_b: &Path, vb: &str) {
        let mut cmd = Command::new(Path::new(REPO).join("scripts/qemu-image"));
        cmd.arg("--etc").arg(etc_a).arg("--etc-b").arg(etc_b);
        cmd.args(["--version-a", va, "--version-b", vb]);
        cmd.arg("--wtpd").arg(wtpd_armv7());
        cmd.arg("--out").arg(self.image_dir());
        cmd.env("CARGO_TARGET_DIR", target_dir());
        run(&mut cmd);
    }

    fn start_acsim(&mut self) {
        let child = die_with_parent(&mut Command::new(acsim()))
            .args(["run", "--config", "acsim.toml"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.acsim = Some(Killer(child));
        let t = Instant::now();
        while !read(&self.dir.join("acsim.log")).contains("listening") {
            assert!(t.elapsed() < Duration::from_secs(10), "acsim did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn serial(&self) -> PathBuf {
        self.dir.join("serial.log")
    }

    fn boot(&mut self) {
        let child = die_with_parent(&mut Command::new(Path::new(REPO).join("scripts/qemu-run")))
            .arg(self.image_dir())
            .arg("--serial")
            .arg(self.serial())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.qemu = Some(Killer(child));
    }

    fn stop_qemu(&mut self) {
        self.qemu = None;
    }

    /// Like `expect`, and returns the rest of the console line after `needle`.
    fn expect_rest(&mut self, needle: &str, secs: u64) -> String {
        self.expect(needle, secs);
        let log = read(&self.serial());
        log.get(self.seen..)
            .and_then(|s| s.lines().next())
            .unwrap_or("")
            .to_string()
    }

    /// Waits for `needle` in the serial log after what was already matched.
    fn expect(&mut self, needle: &str, secs: u64) {
        let t = Instant::now();
        loop {
            let log = read(&self.serial());
            if let Some(i) = log.get(self.seen..).and_then(|s| s.find(needle)) {
                self.seen += i + needle.len();
                eprintln!("{}: [{:>3} s] {needle}", self.name, t.elapsed().as_secs());
                return;
            }
            if let Some(q) = &mut self.qemu {
                if let Ok(Some(st)) = q.0.try_wait() {
                    panic!(
                        "qemu exited ({st}) before '{needle}'; console: {}",
                        self.serial().display()
                    );
                }
            }
            if t.elapsed() > Duration::from_secs(secs) {
                let tail: String = log[self.seen.min(log.len())..]
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!(
                    "no '{needle}' on the console within {secs} s ({}); last lines:\n{tail}",
                    self.serial().display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// fw_env.config for the host's fw_printenv/fw_setenv on the disk image.
    fn fw_config(&self) -> PathBuf {
        let p = self.dir.join("fw_env.config");
        let disk = self.image_dir().join("disk.img");
        std::fs::write(
            &p,
            format!("{0} 0x100000 0x4000\n{0} 0x104000 0x4000\n", disk.display()),
        )
        .unwrap();
        p
    }

    fn printenv(&self) -> String {
        run(Command::new("fw_printenv").arg("-c").arg(self.fw_config()))
    }

    /// One environment write with the variables (fw_setenv -s), as the agent's switch is.
    fn setenv(&self, vars: &[(&str, &str)]) {
        let script = self.dir.join("switch.txt");
        // libubootenv's -s reads `name=value` lines; it silently skips U-Boot's `name value`.
        let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(&script, text).unwrap();
        run(Command::new("fw_setenv")
            .arg("-c")
            .arg(self.fw_config())
            .arg("-s")
            .arg(&script));
        let env = self.printenv();
        assert_env(&env, vars);
    }
}

fn assert_env(env: &str, want: &[(&str, &str)]) {
    for (k, v) in want {
        assert!(
            env.lines().any(|l| l == format!("{k}={v}")),
            "{k}={v} not in the environment:\n{env}"
        );
    }
}

#[test]
#[ignore = "qemu-system-arm, minutes: scripts/qemu-system-test"]
fn boots_slot_a_and_joins() {
    let mut lab = Lab::new("join");
    let etc = lab.guest_etc("etc-a", CONTROLLER_VERSION, &[]);
    lab.build_image(&etc, CONTROLLER_VERSION, &etc, AP_VERSION);
    lab.start_acsim();
    lab.boot();
    lab.expect("Found U-Boot script /boot.scr", 60);
    lab.expect("A/B: environment copy 0", 20);
    lab.expect("A/B: booting slot a (upgrade_available=0", 10);
    lab.expect("Starting kernel", 30);
    lab.expect("wtpd-image: booted slot a (trial 0)", 120);
    lab.expect(
        &format!("software {CONTROLLER_VERSION}, control socket 0.0.0.0:"),
        60,
    );
    lab.expect(
        &format!("DTLS session established with 10.0.2.2:{}", lab.port),
        60,
    );
    lab.expect("CAPWAP State: Run", 60);
    // acsim's own table says so too.
    let t = Instant::now();
    loop {
        let st = read(&lab.dir.join("acsim.status"));
        if st
            .lines()
            .any(|l| l.starts_with("wtp-qemu-1") && l.contains(" Run "))
        {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "acsim status:\n{st}");
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.stop_qemu();
    assert_env(
        &lab.printenv(),
        &[("boot_slot", "a"), ("upgrade_available", "0")],
    );
}

#[test]
#[ignore = "qemu-system-arm, minutes: scripts/qemu-system-test"]
fn rolls_back_after_bootlimit_failed_boots() {
    let mut lab = Lab::new("rollback");
    let never = "99.0.0.1";
    let etc_a = lab.guest_etc("etc-a", CONTROLLER_VERSION, &[]);
    let etc_b = lab.guest_etc(
        "etc-b",
        never,
        &[("no-start", ""), ("trial_timeout", "5\n")],
    );
    lab.build_image(&etc_a, CONTROLLER_VERSION, &etc_b, never);
    // The agent's switch, in one write.
    lab.setenv(&[
        ("boot_slot", "b"),
        ("upgrade_available", "1"),
        ("bootcount", "0"),
        ("slot_b_version", never),
        ("slot_b_state", "new"),
    ]);
    lab.start_acsim();
    lab.boot();
    for n in 1..=3 {
        lab.expect(&format!("A/B: trial boot {n} of 3 of slot b"), 120);
        lab.expect("A/B: environment saved to block", 20);
        lab.expect("A/B: booting slot b (upgrade_available=1", 10);
        lab.expect("wtpd-image: booted slot b (trial 1)", 120);
        lab.expect("not starting wtpd", 20);
        lab.expect("not marked good, rebooting", 60);
    }
    lab.expect(
        "A/B: slot b was not marked good after 3 boots: rolling back",
        120,
    );
    lab.expect("A/B: environment saved to block", 20);
    lab.expect("A/B: booting slot a (upgrade_available=0", 10);
    lab.expect("wtpd-image: booted slot a (trial 0)", 120);
    lab.expect(&format!("software {CONTROLLER_VERSION}"), 60);
    lab.expect("CAPWAP State: Run", 90);
    lab.stop_qemu();
    assert_env(
        &lab.printenv(),
        &[
            ("boot_slot", "a"),
            ("upgrade_available", "0"),
            ("bootcount", "0"),
            ("slot_a_state", "good"),
            ("slot_b_state", "invalid"),
            ("slot_b_version", never),
        ],
    );
}

/// Serves a signed image whose rootfs.img is slot b's file system (scripts/qemu-image
/// --slot-image), packed for every hardware type with the lab's image-signing chain.
fn serve_slot_image(lab: &Lab, etc: &Path, version: &str) {
    let rootfs = lab.dir.join("rootfs-b.img");
    let mut cmd = Command::new(Path::new(REPO).join("scripts/qemu-image"));
    cmd.arg("--slot-image").arg(&rootfs).arg("--etc").arg(etc);
    cmd.args(["--version", version])
        .arg("--wtpd")
        .arg(wtpd_armv7());
    cmd.env("CARGO_TARGET_DIR", target_dir());
    run(&mut cmd);
    let pki = lab.dir.join("pki");
    let spec = wtpd::image::pack::PackSpec::new(
        "ap1g8",
        version,
        &rootfs,
        &pki.join("image-signer.key"),
        &[
            pki.join("image-signer.pem"),
            pki.join("image-intermediate.pem"),
        ],
    );
    wtpd::image::pack::pack_folder(
        &wtpd::image::pack::FolderSpec::all_types(spec),
        &lab.dir.join("images"),
    )
    .unwrap();
    let ac = read(&lab.dir.join("acsim.toml"));
    std::fs::write(
        lab.dir.join("acsim.toml"),
        format!("image_dir = \"images\"\nimage_at_join = true\n{ac}"),
    )
    .unwrap();
}

#[test]
#[ignore = "qemu-system-arm, minutes: scripts/qemu-system-test all"]
fn upgrade_installs_slot_b_and_rejoins() {
    let mut lab = Lab::new("upgrade");
    let etc_a = lab.guest_etc("etc-a", AP_VERSION, &[]);
    let etc_new = lab.guest_etc("etc-new", CONTROLLER_VERSION, &[("trial_timeout", "90\n")]);
    lab.build_image(&etc_a, AP_VERSION, &etc_a, AP_VERSION);
    serve_slot_image(&lab, &etc_new, CONTROLLER_VERSION);
    lab.start_acsim();
    lab.boot();
    lab.expect("A/B: booting slot a (upgrade_available=0", 60);
    lab.expect(&format!("software {AP_VERSION}"), 120);
    lab.expect("CAPWAP State: Join", 60);
    lab.expect("Image transfer completed", 300);
    // The install: slot b written and verified, ONE environment write, reboot. Before it the
    // agent says how much memory it needed at most, on this ARM kernel.
    let peak = lab.expect_rest("Peak memory of this run: ", 120);
    let kib: u64 = peak
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no figure in 'Peak memory of this run: {peak}'"));
    assert!(kib > 0, "{peak}");
    eprintln!("upgrade: wtpd's peak RSS on the ARM board: {kib} KiB");
    lab.expect("A/B: trial boot 1 of 3 of slot b", 120);
    lab.expect("wtpd-image: booted slot b (trial 1)", 120);
    lab.expect(&format!("software {CONTROLLER_VERSION}"), 60);
    lab.expect("CAPWAP State: Run", 90);
    lab.expect("trial-watchdog: slot b was marked good", 120);
    lab.stop_qemu();
    assert_env(
        &lab.printenv(),
        &[
            ("boot_slot", "b"),
            ("upgrade_available", "0"),
            ("slot_b_state", "good"),
            ("slot_b_version", CONTROLLER_VERSION),
            ("slot_a_version", AP_VERSION),
        ],
    );
}

#[test]
#[ignore = "qemu-system-arm, minutes: scripts/qemu-system-test all"]
fn upgrade_that_never_commits_rolls_back() {
    let mut lab = Lab::new("upgrade-rollback");
    let etc_a = lab.guest_etc("etc-a", AP_VERSION, &[]);
    let etc_bad = lab.guest_etc(
        "etc-bad",
        CONTROLLER_VERSION,
        &[("no-start", ""), ("trial_timeout", "5\n")],
    );
    lab.build_image(&etc_a, AP_VERSION, &etc_a, AP_VERSION);
    serve_slot_image(&lab, &etc_bad, CONTROLLER_VERSION);
    lab.start_acsim();
    lab.boot();
    lab.expect("A/B: booting slot a (upgrade_available=0", 60);
    lab.expect("Image transfer completed", 300);
    for n in 1..=3 {
        lab.expect(&format!("A/B: trial boot {n} of 3 of slot b"), 120);
        lab.expect("not marked good, rebooting", 180);
    }
    lab.expect(
        "A/B: slot b was not marked good after 3 boots: rolling back",
        120,
    );
    lab.expect("wtpd-image: booted slot a (trial 0)", 120);
    lab.expect(&format!("software {AP_VERSION}"), 60);
    lab.expect("CAPWAP State: Join", 90);
    lab.stop_qemu();
    assert_env(
        &lab.printenv(),
        &[
            ("boot_slot", "a"),
            ("upgrade_available", "0"),
            ("slot_b_state", "invalid"),
        ],
    );
}
