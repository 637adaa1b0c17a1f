//! The agent cross-built for a board, run under qemu-user and driven by the host's acsim.
//!
//! `acsim demo --scenario upgrade` starts `$WTPD_BIN`, here `scripts/qemu-wtpd-<arch>`, which
//! execs the foreign wtpd under qemu-arm / qemu-mips: join over DTLS, download, SHA-256 check,
//! Reset (exit 75). The lab also holds the board's qemu-user variant (`board/qemu-user/`): its
//! slot files and its U-Boot environment (`bootenv.img`, made with `mkenvimage`, big-endian for
//! MIPS), ready for the install step.
//!
//! The runs are `#[ignore]`d because they need a cross build first:
//! - armv7: `cargo build --target armv7-unknown-linux-gnueabihf --bins` (scripts/test-all does it,
//!   then runs `cargo test --test cross_qemu_user -- --ignored --exact armv7_upgrade_under_qemu_arm`;
//!   a bare `armv7` filter would take the musl run too);
//! - mips: `scripts/build-boards mips`, then `cargo test --test cross_qemu_user -- --ignored
//!   mips_upgrade`;
//!   aarch64 (static musl) likewise;
//! - the static musl builds of OpenWrt-class boards: `scripts/build-boards armv7-musl mips-musl
//!   mipsel-musl`, then `cargo test --test cross_qemu_user -- --ignored musl` (scripts/test-musl
//!   does both, and the unit tests of each under qemu-user).
//!
//! `WTPD_CROSS_BIN_ARMV7`, `_AARCH64`, `_MIPS`, `_ARMV7_MUSL`, `_MIPS_MUSL` and `_MIPSEL_MUSL`
//! name another binary. Each run also checks the
//! environment the agent wrote after installing, rebooting into slot b and marking it good:
//! `boot_slot`, `upgrade_available`, `bootcount`, the slots' versions and states, and, byte for
//! byte, that the current copy equals what `mkenvimage [-b] -r` makes of the same variables.

use std::path::{Path, PathBuf};
use std::process::Command;

use wtpd::board::Board;
use wtpd::image::bootenv::{self, ByteOrder, EnvConfig};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const ENV_SIZE: usize = 0x4000;

struct Arch {
    name: &'static str,
    triple: &'static str,
    /// What file(1) says of the binary.
    file_says: &'static [&'static str],
    byte_order: ByteOrder,
}

const ARMV7: Arch = Arch {
    name: "armv7",
    triple: "armv7-unknown-linux-gnueabihf",
    file_says: &["ELF 32-bit LSB", "ARM, EABI5"],
    byte_order: ByteOrder::Little,
};

const AARCH64: Arch = Arch {
    name: "aarch64",
    triple: "aarch64-unknown-linux-musl",
    file_says: &["ELF 64-bit LSB", "ARM aarch64", "statically linked"],
    byte_order: ByteOrder::Little,
};

const MIPS: Arch = Arch {
    name: "mips",
    triple: "mips-unknown-linux-gnu",
    file_says: &["ELF 32-bit MSB", "MIPS"],
    byte_order: ByteOrder::Big,
};

/// The static musl builds: the board each stands for is `real` (its image type and byte order).
const ARMV7_MUSL: Arch = Arch {
    name: "armv7-musl",
    triple: "armv7-unknown-linux-musleabihf",
    file_says: &["ELF 32-bit LSB", "ARM, EABI5", "statically linked"],
    byte_order: ByteOrder::Little,
};

const MIPS_MUSL: Arch = Arch {
    name: "mips-musl",
    triple: "mips-unknown-linux-musl",
    file_says: &["ELF 32-bit MSB", "MIPS", "statically linked"],
    byte_order: ByteOrder::Big,
};

const MIPSEL_MUSL: Arch = Arch {
    name: "mipsel-musl",
    triple: "mipsel-unknown-linux-musl",
    file_says: &["ELF 32-bit LSB", "MIPS", "statically linked"],
    byte_order: ByteOrder::Little,
};

fn acsim() -> &'static str {
    wtpd_harness::bins::acsim()
}

/// The cargo target directory this test was built in (.../target/debug/acsim -> .../target).
fn target_dir() -> PathBuf {
    Path::new(acsim())
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// The cross-built wtpd: `WTPD_CROSS_BIN_<ARCH>`, else the debug build, else
/// scripts/build-boards' copy, else the board-profile build.
fn cross_bin(a: &Arch) -> PathBuf {
    let var = format!(
        "WTPD_CROSS_BIN_{}",
        a.name.to_ascii_uppercase().replace('-', "_")
    );
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    let t = target_dir();
    let candidates = [
        t.join(a.triple).join("debug").join("wtpd"),
        t.join("boards").join(format!("wtpd-{}", a.name)),
        t.join(a.triple).join("board").join("wtpd"),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no {} wtpd in {candidates:?}: build it first (scripts/build-boards {}) or set {var}",
                a.name, a.name
            )
        })
}

fn lab(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wtpd-cross-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
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

/// The environment a board leaves the factory with: slot a, good, no trial in progress.
fn factory_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("boot_slot", "a"),
        ("bootcount", "0"),
        ("bootlimit", "3"),
        ("slot_a_state", "good"),
        ("slot_a_version", wtpd_harness::demo::AP_VERSION),
        ("slot_b_state", "good"),
        ("slot_b_version", wtpd_harness::demo::AP_BACKUP_VERSION),
        ("upgrade_available", "0"),
    ]
}

/// `mkenvimage -r -s 0x4000 [-b]` of the variables (sorted, as the agent writes them).
fn mkenvimage(dir: &Path, vars: &[(&str, &str)], order: ByteOrder) -> Vec<u8> {
    let mut sorted = vars.to_vec();
    sorted.sort();
    let text: String = sorted.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let (txt, out) = (dir.join("env.txt"), dir.join("env.bin"));
    std::fs::write(&txt, text).unwrap();
    let mut cmd = Command::new("mkenvimage");
    cmd.args(["-r", "-s", &format!("{ENV_SIZE:#x}")]);
    if order == ByteOrder::Big {
        cmd.arg("-b");
    }
    cmd.arg("-o").arg(&out).arg(&txt);
    run(&mut cmd);
    let img = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&txt);
    let _ = std::fs::remove_file(&out);
    img
}

/// Puts the board's qemu-user variant into the lab: board.toml, fw_env.config (absolute
/// paths), two sparse slot files and bootenv.img (copy 0 from mkenvimage, copy 1 erased).
/// Returns the board and its environment location.
fn install_board(dir: &Path, a: &Arch) -> (Board, EnvConfig) {
    let src = Path::new(REPO)
        .join("board/qemu-user")
        .join(format!("{}-ap.toml", a.name));
    std::fs::copy(&src, dir.join("board.toml")).unwrap();
    let envimg = dir.join("bootenv.img");
    std::fs::write(
        dir.join("fw_env.config"),
        format!(
            "# written by tests/cross_qemu_user.rs from board/qemu-user/fw_env.config\n\
             {0}\t0x0\t{ENV_SIZE:#x}\n{0}\t{ENV_SIZE:#x}\t{ENV_SIZE:#x}\n",
            envimg.display()
        ),
    )
    .unwrap();
    let board = Board::load(&dir.join("board.toml")).unwrap();
    assert_eq!(board.target.as_deref(), Some(a.triple));
    std::fs::create_dir_all(dir.join("slots")).unwrap();
    for s in &board.slots {
        let f = std::fs::File::create(&s.device).unwrap();
        f.set_len(s.size).unwrap();
    }
    let mut img = mkenvimage(dir, &factory_env(), a.byte_order);
    img.resize(2 * ENV_SIZE, 0xFF);
    std::fs::write(&envimg, img).unwrap();
    let cfg = board.env_config().expect("[bootenv]").unwrap();
    // The board's byte order, its fw_env.config and mkenvimage agree.
    let (env, info) = bootenv::read(&cfg).unwrap();
    assert_eq!(info.current, 0);
    for (k, v) in factory_env() {
        assert_eq!(env.get(k), Some(v), "{k}");
    }
    (board, cfg)
}

/// Runs `acsim demo --scenario upgrade` with the agent under qemu-user.
fn upgrade_under_qemu(a: &Arch) {
    let bin = cross_bin(a);
    let file = run(Command::new("file").arg("-L").arg(&bin));
    for want in a.file_says {
        assert!(file.contains(want), "{}: {file}", bin.display());
    }
    let dir = lab(a.name);
    let (board, cfg) = install_board(&dir, a);
    let wrapper = Path::new(REPO)
        .join("scripts")
        .join(format!("qemu-wtpd-{}", a.name));
    let out = Command::new(acsim())
        .args(["demo", "--dir", dir.to_str().unwrap()])
        .args(["--scenario", "upgrade", "--image-size", "2000000"])
        .env("WTPD_BIN", &wrapper)
        .env("WTPD_CROSS_BIN", &bin)
        .output()
        .expect("run acsim demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(dir.join("wtpd.log")).unwrap_or_default();
    assert!(
        out.status.success() && stdout.contains("Result         : OK"),
        "demo with {} under qemu failed:\n{stdout}\n{}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "CAPWAP State: Join",
        "Image transfer completed",
        "DTLS session with 127.0.0.1:",
    ] {
        assert!(log.contains(want), "no '{want}' in wtpd.log:\n{log}");
    }
    assert!(
        stdout.contains("SHA-256")
            && stdout.contains(&format!("equals images/{}", board.image_type)),
        "{stdout}"
    );
    check_switch(&dir, &board, &cfg, a);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The agent switched to slot b, rebooted into it and marked it good; the copy it wrote last is
/// what mkenvimage makes of the same variables in the board's byte order (big-endian on MIPS).
fn check_switch(dir: &Path, board: &Board, cfg: &EnvConfig, a: &Arch) {
    let (env, info) = bootenv::read(cfg).unwrap();
    let want = [
        ("boot_slot", "b"),
        ("upgrade_available", "0"),
        ("bootcount", "0"),
        ("slot_b_version", wtpd_harness::demo::CONTROLLER_VERSION),
        ("slot_b_state", "good"),
        ("slot_a_state", "good"),
        ("slot_a_version", wtpd_harness::demo::AP_VERSION),
    ];
    for (k, v) in want {
        assert_eq!(
            env.get(k),
            Some(v),
            "{k} after the install, reboot and mark-good"
        );
    }
    let vars: Vec<(&str, &str)> = env.iter().collect();
    let tool = mkenvimage(dir, &vars, a.byte_order);
    let img = std::fs::read(dir.join("bootenv.img")).unwrap();
    let copy = &img[info.current * ENV_SIZE..(info.current + 1) * ENV_SIZE];
    // [CRC][flag][data]: all but the flag (mkenvimage -r writes 1, the agent current + 1).
    assert_eq!(copy[..4], tool[..4], "CRC ({:?})", board.byte_order);
    assert_eq!(copy[5..], tool[5..], "data");
}

#[test]
#[ignore = "needs the armv7 build: scripts/test-all runs it"]
fn armv7_upgrade_under_qemu_arm() {
    upgrade_under_qemu(&ARMV7);
}

#[test]
#[ignore = "needs scripts/build-boards aarch64"]
fn aarch64_upgrade_under_qemu_aarch64() {
    upgrade_under_qemu(&AARCH64);
}

#[test]
#[ignore = "needs scripts/build-boards mips (nightly, build-std)"]
fn mips_upgrade_under_qemu_mips() {
    upgrade_under_qemu(&MIPS);
}

#[test]
#[ignore = "needs scripts/build-boards armv7-musl (nightly, build-std)"]
fn armv7_musl_upgrade_under_qemu_arm() {
    upgrade_under_qemu(&ARMV7_MUSL);
}

#[test]
#[ignore = "needs scripts/build-boards mips-musl (nightly, build-std, scripts/musl-libc)"]
fn mips_musl_upgrade_under_qemu_mips() {
    upgrade_under_qemu(&MIPS_MUSL);
}

#[test]
#[ignore = "needs scripts/build-boards mipsel-musl (nightly, build-std, scripts/musl-libc)"]
fn mipsel_musl_upgrade_under_qemu_mipsel() {
    upgrade_under_qemu(&MIPSEL_MUSL);
}

/// Host-only, always run: every qemu-user variant and every shipped fw_env.config parses, and
/// each variant keeps the image type, target and byte order of the board it stands for.
#[test]
fn qemu_user_boards_match_their_boards() {
    let dir = Path::new(REPO).join("board");
    for (a, real, triple) in [
        ("armv7", "armv7-ap", None),
        ("aarch64", "aarch64-ap", None),
        ("mips", "mips-ap", None),
        // The musl builds stand for the same boards with another C library.
        ("armv7-musl", "armv7-ap", Some(ARMV7_MUSL.triple)),
        ("mips-musl", "mips-ap", Some(MIPS_MUSL.triple)),
        ("mipsel-musl", "malta", Some(MIPSEL_MUSL.triple)),
    ] {
        let real = Board::load(&dir.join(format!("{real}.toml"))).unwrap();
        let user = Board::load(&dir.join(format!("qemu-user/{a}-ap.toml"))).unwrap();
        assert_eq!(real.image_type, user.image_type, "{a}");
        match triple {
            None => assert_eq!(real.target, user.target, "{a}"),
            Some(t) => assert_eq!(user.target.as_deref(), Some(t), "{a}"),
        }
        assert_eq!(real.byte_order, user.byte_order, "{a}");
        assert_eq!(
            real.bootenv.as_ref().unwrap().boot_limit,
            user.bootenv.as_ref().unwrap().boot_limit
        );
    }
    let mut n = 0;
    for e in std::fs::read_dir(dir.join("fw_env")).unwrap() {
        let p = e.unwrap().path();
        let cfg = EnvConfig::from_file(&p, ByteOrder::Little)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(cfg.is_redundant(), "{}: boards use two copies", p.display());
        n += 1;
    }
    assert!(n >= 4);
}

/// Host-only, always run: the switch check of the qemu-user runs accepts the one write the
/// agent will make (done here with the library's bootenv::write, in each board's byte order)
/// and would catch a wrong byte order.
#[test]
fn the_switch_check_accepts_the_agents_write() {
    for a in [&ARMV7, &MIPS, &MIPS_MUSL, &MIPSEL_MUSL] {
        let dir = lab(&format!("switch-{}", a.name));
        let (board, cfg) = install_board(&dir, a);
        let (mut env, _) = bootenv::read(&cfg).unwrap();
        for (k, v) in [
            ("boot_slot", "b"),
            ("upgrade_available", "1"),
            ("bootcount", "0"),
            ("slot_b_version", wtpd_harness::demo::CONTROLLER_VERSION),
            ("slot_b_state", "new"),
        ] {
            env.set(k, v).unwrap();
        }
        bootenv::write(&cfg, &env).unwrap();
        // Then the mark-good write on the new slot, as the agent does once joined.
        for (k, v) in [
            ("upgrade_available", "0"),
            ("bootcount", "0"),
            ("slot_b_state", "good"),
        ] {
            env.set(k, v).unwrap();
        }
        bootenv::write(&cfg, &env).unwrap();
        check_switch(&dir, &board, &cfg, a);
        // The same bytes read in the other byte order are refused.
        let other = match a.byte_order {
            ByteOrder::Big => ByteOrder::Little,
            ByteOrder::Little => ByteOrder::Big,
        };
        let wrong = EnvConfig::new(cfg.copies.clone(), other).unwrap();
        assert!(bootenv::read(&wrong).is_err(), "{}", a.name);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
