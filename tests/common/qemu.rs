//! A QEMU system board booted by the tests (tests/qemu_system.rs: the ARM virt image;
//! tests/malta_system.rs: the MIPS Malta board with flash): the lab folder, acsim on the host,
//! the image built by the board's script, QEMU started and its serial console watched.
#![allow(dead_code)] // each system test uses its own part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wtpd_harness::demo::{free_port_pair, write_lab, DemoDtls};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Extra top-level keys for the guest's wtpd.toml. None are needed: the lab's wtpd.toml already
/// names `board = "board.toml"` (the image carries /etc/wtpd/board.toml) and the image-signing
/// trust anchor `pki/image-root.pem`.
pub const INSTALL_TOML: &str = "";

pub fn acsim() -> &'static str {
    wtpd_harness::bins::acsim()
}

pub fn target_dir() -> PathBuf {
    Path::new(acsim())
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// A QEMU system board the tests boot: what differs between the ARM virt image and the MIPS
/// Malta board with flash.
pub struct System {
    /// The folder under the target dir that keeps each test's lab (`qemu-system`).
    pub dir: &'static str,
    /// The variable that names another agent binary for the image (`WTPD_QEMU_BIN`).
    pub bin_env: &'static str,
    /// The Rust target of the board-profile build used otherwise.
    pub triple: &'static str,
    /// The script that builds what the tests need and runs them.
    pub test_script: &'static str,
    /// The scripts that make the image and boot it.
    pub image_script: &'static str,
    pub run_script: &'static str,
    /// The agent's name in the guest (acsim's table shows it).
    pub wtp_name: &'static str,
    /// The file, in the lab folder, that the image script writes slot b's payload to.
    pub slot_file: &'static str,
    /// fw_env.config lines for the host's fw_printenv on the image in this folder.
    pub fw_env: fn(&Path) -> String,
}

/// The board's wtpd for the image: `$bin_env`, else the board-profile build.
pub fn wtpd_bin(sys: &System) -> PathBuf {
    let p = std::env::var_os(sys.bin_env)
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join(sys.triple).join("board").join("wtpd"));
    assert!(
        p.exists(),
        "{} missing: run {} (it builds it)",
        p.display(),
        sys.test_script
    );
    p
}

/// Children die with the test process, even when it is killed (no Drop runs then):
/// PR_SET_PDEATHSIG survives the exec of the run script into qemu-system.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
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
pub struct Killer(pub Child);
impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn read(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_default()
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Lab {
    sys: &'static System,
    name: &'static str,
    pub dir: PathBuf,
    pub port: u16,
    pub acsim: Option<Killer>,
    pub qemu: Option<Killer>,
    /// How far the serial log has been checked.
    seen: usize,
}

impl Lab {
    /// A lab folder with the PKI and both configurations (`acsim demo`'s), acsim listening on
    /// every address: acsim announces its listen address in Discovery Responses (CAPWAP Control
    /// IPv4 Address), and the agent joins the address announced, so 127.0.0.1 would send the
    /// guest to its own loopback. 0.0.0.0 announces none, and the agent joins 10.0.2.2.
    pub fn new(sys: &'static System, name: &'static str) -> Lab {
        let dir = target_dir().join(sys.dir).join(name);
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
            sys,
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
    pub fn guest_etc(&self, sub: &str, version: &str, extra: &[(&str, &str)]) -> PathBuf {
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
                format!("name = \"{}\"", self.sys.wtp_name)
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

    pub fn image_dir(&self) -> PathBuf {
        self.dir.join("image")
    }

    /// The board's image script with slot a and slot b.
    pub fn build_image(&self, etc_a: &Path, va: &str, etc_b: &Path, vb: &str) {
        let mut cmd = Command::new(Path::new(REPO).join(self.sys.image_script));
        cmd.arg("--etc").arg(etc_a).arg("--etc-b").arg(etc_b);
        cmd.args(["--version-a", va, "--version-b", vb]);
        cmd.arg("--wtpd").arg(wtpd_bin(self.sys));
        cmd.arg("--out").arg(self.image_dir());
        cmd.env("CARGO_TARGET_DIR", target_dir());
        run(&mut cmd);
    }

    pub fn start_acsim(&mut self) {
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

    pub fn serial(&self) -> PathBuf {
        self.dir.join("serial.log")
    }

    pub fn boot(&mut self) {
        let child = die_with_parent(&mut Command::new(Path::new(REPO).join(self.sys.run_script)))
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

    pub fn stop_qemu(&mut self) {
        self.qemu = None;
    }

    /// Like `expect`, and returns the rest of the console line after `needle`.
    pub fn expect_rest(&mut self, needle: &str, secs: u64) -> String {
        self.expect(needle, secs);
        let log = read(&self.serial());
        log.get(self.seen..)
            .and_then(|s| s.lines().next())
            .unwrap_or("")
            .to_string()
    }

    /// Waits for `needle` in the serial log after what was already matched.
    pub fn expect(&mut self, needle: &str, secs: u64) {
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

    /// Serves a signed image whose rootfs.img is slot b's file system (the image script's
    /// `--slot-image`, with `etc` as its /etc/wtpd and `version`), packed for every hardware
    /// type with the lab's image-signing chain, from acsim's image folder, offered at Join.
    pub fn serve_slot_image(&self, etc: &Path, version: &str) {
        let rootfs = self.dir.join(self.sys.slot_file);
        let mut cmd = Command::new(Path::new(REPO).join(self.sys.image_script));
        cmd.arg("--slot-image").arg(&rootfs).arg("--etc").arg(etc);
        cmd.args(["--version", version])
            .arg("--wtpd")
            .arg(wtpd_bin(self.sys));
        cmd.env("CARGO_TARGET_DIR", target_dir());
        run(&mut cmd);
        let pki = self.dir.join("pki");
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
            &self.dir.join("images"),
        )
        .unwrap();
        let ac = read(&self.dir.join("acsim.toml"));
        std::fs::write(
            self.dir.join("acsim.toml"),
            format!("image_dir = \"images\"\nimage_at_join = true\n{ac}"),
        )
        .unwrap();
    }

    /// fw_env.config for the host's fw_printenv/fw_setenv on the image.
    pub fn fw_config(&self) -> PathBuf {
        let p = self.dir.join("fw_env.config");
        std::fs::write(&p, (self.sys.fw_env)(&self.image_dir())).unwrap();
        p
    }

    pub fn printenv(&self) -> String {
        run(Command::new("fw_printenv").arg("-c").arg(self.fw_config()))
    }

    /// One environment write with the variables (fw_setenv -s), as the agent's switch is.
    pub fn setenv(&self, vars: &[(&str, &str)]) {
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

pub fn assert_env(env: &str, want: &[(&str, &str)]) {
    for (k, v) in want {
        assert!(
            env.lines().any(|l| l == format!("{k}={v}")),
            "{k}={v} not in the environment:\n{env}"
        );
    }
}
