//! The agent on the QEMU MIPS Malta board with real flash (docs/qemu.md, "The MIPS Malta
//! board with flash"): Debian's maltael U-Boot runs from the Malta's CFI NOR flash, reads the A/B
//! environment from the flash (board/uboot/malta.cmd), counts trial boots and boots the common
//! kernel in flash with the slot's squashfs root, a UBI volume on block2mtd over the IDE disk;
//! busybox init starts wtpd, which joins the host's acsim through QEMU's user networking.
//!
//! All `#[ignore]`d (minutes each; they need the mipsel board build and the Malta kernel): run
//! them with `scripts/malta-system-test`, which builds what they need first. Each test keeps its
//! folder, `<target>/malta-system/<test>/`: `serial.log` (the whole serial console), `acsim.log`,
//! the lab and the image (`image/flash.img`, `image/slots.img`).
//!
//! - `malta_boots_slot_a_and_joins`: U-Boot reads the environment from the flash, boots slot a
//!   (squashfs on ubiblock0_0), Linux lists the flash partitions, wtpd joins and reaches Run.
//! - `malta_rolls_back_after_bootlimit_failed_boots`: slot a's boot hook writes the A/B switch
//!   with the board's own fw_setenv -s into /dev/mtd2 (Linux's CFI driver; one write, as the
//!   agent makes it) and reboots; slot b's image never commits (its agent does not start), its
//!   trial watchdog reboots, U-Boot counts three trial boots on the flash, then falls back to
//!   slot a, marks b invalid, and slot a's agent joins.
//! - `malta_upgrade_installs_slot_b_and_rejoins` and `malta_upgrade_that_never_commits_rolls_back`:
//!   the same through the agent: download of a signed image whose payload is slot b's squashfs,
//!   install into UBI volume rootfs_b (UBI_IOCVOLUP), the switch written to the NOR flash's
//!   environment, reboot; U-Boot boots b, whose agent marks it good, or rolls back.
//! - `malta_slot_write_speed_against_ubiupdatevol`: the same upgrade's slot write and read-back
//!   timed against the reference tools in the same boot: slot a's boot hook fetches the payload
//!   and Debian's mipsel `ubiupdatevol` over QEMU's TFTP into /tmp, times `ubiupdatevol
//!   /dev/ubi0_1` + `dd ... iflag=count_bytes | sha256sum` three times, then the agent upgrades;
//!   the test prints both times and the ratio (README, "Slot writes on flash").
//!
//! The plumbing (Lab) is tests/qemu_system.rs's, with this board's scripts and files.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use wtpd_harness::demo::{AP_VERSION, CONTROLLER_VERSION};

mod common;
use common::qemu::{assert_env, read, run, target_dir, Lab, System};

/// The Malta board: for the host's fw_printenv, the two copies of board/fw_env/malta.config as
/// offsets of flash.img (partition "env" is at 0x3e0000).
static SYSTEM: System = System {
    dir: "malta-system",
    bin_env: "WTPD_MALTA_BIN",
    triple: "mipsel-unknown-linux-gnu",
    test_script: "scripts/malta-system-test",
    image_script: "scripts/malta-image",
    run_script: "scripts/malta-run",
    slot_file: "rootfs-b.squashfs",
    wtp_name: "wtp-malta-1",
    fw_env: |image| {
        let flash = image.join("flash.img");
        format!("{0} 0x3e0000 0x800\n{0} 0x3f0000 0x800\n", flash.display())
    },
};

/// Slot a's boot hook (rcS runs /etc/wtpd/boot-hook before the agent): while slot b is still
/// `good`, write the agent's A/B switch in ONE fw_setenv -s on the board's /dev/mtd2, then
/// reboot. After the rollback slot b is `invalid` and the hook does nothing.
fn switch_hook(version_b: &str) -> String {
    format!(
        "#!/bin/sh\n\
         [ \"$(fw_printenv -n slot_b_state)\" = good ] || exit 0\n\
         printf 'boot_slot=b\\nupgrade_available=1\\nbootcount=0\\nslot_b_version={version_b}\\nslot_b_state=new\\n' >/tmp/switch.txt\n\
         fw_setenv -s /tmp/switch.txt || exit 1\n\
         echo \"boot-hook: switched to slot b: $(fw_printenv boot_slot upgrade_available bootcount | tr '\\n' ' ')\"\n\
         sync\n\
         reboot -f\n"
    )
}

#[test]
#[ignore = "qemu-system-mipsel, minutes: scripts/malta-system-test"]
fn malta_boots_slot_a_and_joins() {
    let mut lab = Lab::new(&SYSTEM, "join");
    let etc = lab.guest_etc("etc-a", CONTROLLER_VERSION, &[]);
    lab.build_image(&etc, CONTROLLER_VERSION, &etc, AP_VERSION);
    lab.start_acsim();
    lab.boot();
    lab.expect("Flash: 4 MiB", 60);
    lab.expect("A/B: environment copy 0", 30);
    lab.expect("A/B: booting slot a (upgrade_available=0", 10);
    lab.expect("Bytes transferred", 60);
    lab.expect("Linux version 6.1", 60);
    lab.expect("wtpd-image: booted slot a (trial 0)", 180);
    lab.expect("\"env\"", 10);
    lab.expect("\"slots\"", 10);
    lab.expect("wtpd-image: root /dev/ubiblock0_0", 10);
    lab.expect(
        &format!("software {CONTROLLER_VERSION}, control socket 0.0.0.0:"),
        90,
    );
    lab.expect(
        &format!("DTLS session established with 10.0.2.2:{}", lab.port),
        120,
    );
    lab.expect("CAPWAP State: Run", 90);
    let t = Instant::now();
    loop {
        let st = read(&lab.dir.join("acsim.status"));
        if st
            .lines()
            .any(|l| l.starts_with("wtp-malta-1") && l.contains(" Run "))
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
#[ignore = "qemu-system-mipsel, minutes: scripts/malta-system-test"]
fn malta_rolls_back_after_bootlimit_failed_boots() {
    let mut lab = Lab::new(&SYSTEM, "rollback");
    let never = "99.0.0.1";
    let hook = switch_hook(never);
    let etc_a = lab.guest_etc("etc-a", CONTROLLER_VERSION, &[("boot-hook", &hook)]);
    std::fs::set_permissions(
        etc_a.join("boot-hook"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let etc_b = lab.guest_etc(
        "etc-b",
        never,
        &[("no-start", ""), ("trial_timeout", "5\n")],
    );
    lab.build_image(&etc_a, CONTROLLER_VERSION, &etc_b, never);
    lab.start_acsim();
    lab.boot();
    lab.expect("A/B: booting slot a (upgrade_available=0", 60);
    lab.expect("wtpd-image: booted slot a (trial 0)", 180);
    lab.expect(
        "boot-hook: switched to slot b: boot_slot=b upgrade_available=1 bootcount=0",
        60,
    );
    for n in 1..=3 {
        lab.expect(&format!("A/B: trial boot {n} of 3 of slot b"), 120);
        lab.expect("A/B: environment saved to be3", 30);
        lab.expect("A/B: booting slot b (upgrade_available=1", 10);
        lab.expect("wtpd-image: booted slot b (trial 1)", 180);
        lab.expect("wtpd-image: root /dev/ubiblock0_1", 10);
        lab.expect("not starting wtpd", 30);
        lab.expect("not marked good, rebooting", 60);
    }
    lab.expect(
        "A/B: slot b was not marked good after 3 boots: rolling back",
        120,
    );
    lab.expect("A/B: environment saved to be3", 30);
    lab.expect("A/B: booting slot a (upgrade_available=0", 10);
    lab.expect("wtpd-image: booted slot a (trial 0)", 180);
    lab.expect(&format!("software {CONTROLLER_VERSION}"), 90);
    lab.expect("CAPWAP State: Run", 120);
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

#[test]
#[ignore = "qemu-system-mipsel, minutes: scripts/malta-system-test all"]
fn malta_upgrade_installs_slot_b_and_rejoins() {
    let mut lab = Lab::new(&SYSTEM, "upgrade");
    let etc_a = lab.guest_etc("etc-a", AP_VERSION, &[]);
    let etc_new = lab.guest_etc("etc-new", CONTROLLER_VERSION, &[("trial_timeout", "90\n")]);
    lab.build_image(&etc_a, AP_VERSION, &etc_a, AP_VERSION);
    lab.serve_slot_image(&etc_new, CONTROLLER_VERSION);
    lab.start_acsim();
    lab.boot();
    lab.expect("A/B: booting slot a (upgrade_available=0", 60);
    lab.expect(&format!("software {AP_VERSION}"), 120);
    lab.expect("CAPWAP State: Join", 60);
    lab.expect("Image transfer completed", 300);
    // The install: UBI volume rootfs_b updated and verified, ONE environment write on the NOR
    // flash (/dev/mtd2), reboot. Before it the agent says how much memory it needed at most.
    let peak = lab.expect_rest("Peak memory of this run: ", 120);
    let kib: u64 = peak
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no figure in 'Peak memory of this run: {peak}'"));
    assert!(kib > 0, "{peak}");
    eprintln!("upgrade: wtpd's peak RSS on the Malta board: {kib} KiB");
    lab.expect("A/B: trial boot 1 of 3 of slot b", 120);
    lab.expect("wtpd-image: booted slot b (trial 1)", 180);
    lab.expect("wtpd-image: root /dev/ubiblock0_1", 10);
    lab.expect(&format!("software {CONTROLLER_VERSION}"), 90);
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
#[ignore = "qemu-system-mipsel, minutes: scripts/malta-system-test all"]
fn malta_upgrade_that_never_commits_rolls_back() {
    let mut lab = Lab::new(&SYSTEM, "upgrade-rollback");
    let etc_a = lab.guest_etc("etc-a", AP_VERSION, &[]);
    let etc_bad = lab.guest_etc(
        "etc-bad",
        CONTROLLER_VERSION,
        &[("no-start", ""), ("trial_timeout", "5\n")],
    );
    lab.build_image(&etc_a, AP_VERSION, &etc_a, AP_VERSION);
    lab.serve_slot_image(&etc_bad, CONTROLLER_VERSION);
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

/// Debian's mtd-utils:mipsel `ubiupdatevol` (libc only), fetched once into
/// `<target>/malta-cache` the way scripts/malta-image fetches its packages.
fn ubiupdatevol_mipsel() -> PathBuf {
    let cache = target_dir().join("malta-cache");
    let bin = cache.join("mtd-utils/usr/sbin/ubiupdatevol");
    if !bin.exists() {
        run(Command::new("bash")
            .arg("-ec")
            .arg(
                "cd \"$1\"; ls mtd-utils_*_mipsel.deb >/dev/null 2>&1 \
             || apt-get download -q mtd-utils:mipsel >&2; rm -rf mtd-utils; \
             dpkg-deb -x \"$(ls mtd-utils_*_mipsel.deb | head -1)\" mtd-utils",
            )
            .arg("bash")
            .arg(&cache));
    }
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

/// Slot a's boot hook for the speed comparison: fetch the payload and ubiupdatevol from QEMU's
/// TFTP server (the image folder) into /tmp, then three times: `ubiupdatevol /dev/ubi0_1`
/// (rootfs_b) and busybox's `sha256sum` of exactly the payload's bytes read back (busybox dd,
/// 128 KiB reads), timed with adjtimex (microseconds; busybox date has no %N), and the same
/// read without the hash. Then the agent starts and upgrades slot b itself.
const SPEED_HOOK: &str = r#"#!/bin/sh
[ "$(cat /run/boot_slot)" = a ] || exit 0
now() { adjtimex | awk '/tv_sec/ { s = $2 } /tv_usec/ { u = $2 } END { printf "%d.%06d\n", s, u }'; }
get() { tftp -g -b 1428 -r "$1" -l "/tmp/$1" 10.0.2.2 || tftp -g -r "$1" -l "/tmp/$1" 10.0.2.2; }
get ubiupdatevol && get rootfs.img || { echo "slot-bench: tftp failed"; exit 0; }
chmod +x /tmp/ubiupdatevol
n=$(stat -c %s /tmp/rootfs.img)
t0=$(now); want=$(sha256sum </tmp/rootfs.img | cut -d' ' -f1); t1=$(now)
echo "slot-bench: file $n bytes sha256 $want; sha256sum of the tmpfs file $(echo "$t0 $t1" | awk '{ printf "%.4f", $2 - $1 }') s"
t0=$(now); t1=$(now)
echo "slot-bench: timer overhead $(echo "$t0 $t1" | awk '{ printf "%.4f", $2 - $1 }') s"
for run in 1 2 3; do
    t0=$(now)
    /tmp/ubiupdatevol /dev/ubi0_1 /tmp/rootfs.img || { echo "slot-bench: ubiupdatevol failed"; exit 0; }
    t1=$(now)
    got=$(dd if=/dev/ubi0_1 bs=128k count="$n" iflag=count_bytes 2>/dev/null | sha256sum | cut -d' ' -f1)
    t2=$(now)
    dd if=/dev/ubi0_1 of=/dev/null bs=128k count="$n" iflag=count_bytes 2>/dev/null
    t3=$(now)
    echo "slot-bench: run $run: $(echo "$t0 $t1 $t2 $t3" | awk '{ printf "ubiupdatevol %.4f s + sha256sum %.4f s = %.4f s (read alone %.4f s)", $2 - $1, $3 - $2, $3 - $1, $4 - $3 }') sha256 $got end"
done
"#;

/// Seconds of the day of a console line's agent timestamp `[*MM/DD/YYYY HH:MM:SS.ffff] ...`.
fn log_time(line: &str) -> f64 {
    let ts = line
        .split_once("[*")
        .and_then(|(_, r)| r.split_once(']'))
        .and_then(|(t, _)| t.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no timestamp in '{line}'"));
    let f: Vec<f64> = ts.split(':').map(|x| x.parse().unwrap()).collect();
    f[0] * 3600.0 + f[1] * 60.0 + f[2]
}

#[test]
#[ignore = "qemu-system-mipsel, a minute: scripts/malta-system-test <this test's name>"]
fn malta_slot_write_speed_against_ubiupdatevol() {
    let mut lab = Lab::new(&SYSTEM, "slot-speed");
    let etc_a = lab.guest_etc("etc-a", AP_VERSION, &[("boot-hook", SPEED_HOOK)]);
    std::fs::set_permissions(
        etc_a.join("boot-hook"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let etc_new = lab.guest_etc("etc-new", CONTROLLER_VERSION, &[]);
    lab.build_image(&etc_a, AP_VERSION, &etc_a, AP_VERSION);
    lab.serve_slot_image(&etc_new, CONTROLLER_VERSION);
    // What the hook fetches by TFTP: the image folder is QEMU's TFTP root.
    let payload = lab.dir.join("rootfs-b.squashfs");
    let bytes = std::fs::metadata(&payload).unwrap().len();
    std::fs::copy(&payload, lab.image_dir().join("rootfs.img")).unwrap();
    std::fs::copy(ubiupdatevol_mipsel(), lab.image_dir().join("ubiupdatevol")).unwrap();
    lab.start_acsim();
    lab.boot();
    lab.expect("A/B: booting slot a (upgrade_available=0", 60);
    lab.expect("wtpd-image: booted slot a (trial 0)", 180);
    let file = lab.expect_rest("slot-bench: file ", 300);
    eprintln!("slot-speed: file {file}");
    let overhead = lab.expect_rest("slot-bench: timer overhead ", 30);
    eprintln!("slot-speed: timer overhead {overhead}");
    let want = file
        .split_whitespace()
        .nth(3)
        .expect("the file's SHA-256")
        .trim_end_matches(';')
        .to_string();
    // (ubiupdatevol + sha256sum, ubiupdatevol + read alone) per run.
    let mut tools = Vec::new();
    for n in 1..=3 {
        let r = lab.expect_rest(&format!("slot-bench: run {n}: "), 120);
        assert!(r.contains(&format!("sha256 {want} end")), "run {n}: {r}");
        let secs = |key: &str| -> f64 {
            r.split_once(key)
                .and_then(|(_, t)| t.split_whitespace().next())
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("no '{key}' figure in '{r}'"))
        };
        eprintln!("slot-speed: tools, run {n}: {r}");
        tools.push((secs("= "), secs("ubiupdatevol ") + secs("(read alone ")));
    }
    lab.expect(&format!("software {AP_VERSION}"), 120);
    lab.expect("Image transfer completed", 300);
    lab.expect(
        &format!("Writing rootfs.img ({bytes} bytes) to slot b (ubi0:rootfs_b)"),
        60,
    );
    lab.expect("Slot b read back: SHA-256 ", 120);
    lab.expect("Switched to slot b", 30);
    lab.stop_qemu();
    let log = read(&lab.serial());
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no '{needle}' line"))
            .to_string()
    };
    let agent =
        log_time(&line("Slot b read back: SHA-256 ")) - log_time(&line("Writing rootfs.img ("));
    let best = tools.iter().map(|t| t.0).fold(f64::INFINITY, f64::min);
    let best_io = tools.iter().map(|t| t.1).fold(f64::INFINITY, f64::min);
    let mb = bytes as f64 / 1e6;
    let list = |f: fn(&(f64, f64)) -> f64| {
        tools
            .iter()
            .map(|t| format!("{:.4}", f(t)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!(
        "slot-speed: {bytes} bytes into ubi0:rootfs_b (block2mtd) and read back: agent {agent:.4} s \
         ({:.1} MB/s); ubiupdatevol + sha256sum {} s (best {best:.4} s, {:.1} MB/s): agent/tools \
         {:.2}; ubiupdatevol + read without a hash {} s (best {best_io:.4} s, {:.1} MB/s): \
         agent/that {:.2}",
        mb / agent,
        list(|t| t.0),
        mb / best,
        agent / best,
        list(|t| t.1),
        mb / best_io,
        agent / best_io
    );
}
