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

use std::time::{Duration, Instant};

use wtpd_harness::demo::{AP_VERSION, CONTROLLER_VERSION};

mod common;
use common::qemu::{assert_env, read, Lab, System};

/// For the host's fw_printenv: the two copies of the environment at raw offsets of the image's
/// virtio disk (board/qemu-virt.toml; the aarch64 board keeps them where the ARM one does).
fn disk_env(image: &std::path::Path) -> String {
    let disk = image.join("disk.img");
    format!("{0} 0x100000 0x4000\n{0} 0x104000 0x4000\n", disk.display())
}

/// The ARM virt image: the environment at raw offsets of the virtio disk (board/qemu-virt.toml).
static SYSTEM: System = System {
    dir: "qemu-system",
    bin_env: "WTPD_QEMU_BIN",
    triple: "armv7-unknown-linux-gnueabihf",
    test_script: "scripts/qemu-system-test",
    image_script: "scripts/qemu-image",
    run_script: "scripts/qemu-run",
    slot_file: "rootfs-b.img",
    wtp_name: "wtp-qemu-1",
    fw_env: disk_env,
};

#[test]
#[ignore = "qemu-system-arm, minutes: scripts/qemu-system-test"]
fn boots_slot_a_and_joins() {
    let mut lab = Lab::new(&SYSTEM, "join");
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
    let mut lab = Lab::new(&SYSTEM, "rollback");
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

#[test]
#[ignore = "qemu-system-arm, minutes: scripts/qemu-system-test all"]
fn upgrade_installs_slot_b_and_rejoins() {
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

/// The aarch64 board with a hardware watchdog (board/qemu-arm64.toml): qemu-system-aarch64
/// with an Intel 6300ESB on the PCIe bus, Debian's arm64 kernel with its i6300esb module, the
/// static musl agent.
static ARM64: System = System {
    dir: "qemu-system",
    bin_env: "WTPD_QEMU_ARM64_BIN",
    triple: "aarch64-unknown-linux-musl",
    test_script: "scripts/qemu-system-test watchdog",
    image_script: "scripts/qemu-image-arm64",
    run_script: "scripts/qemu-run",
    slot_file: "rootfs-b.img",
    wtp_name: "wtp-qemu-1",
    fw_env: disk_env,
};

/// The watchdog rollback: acsim upgrades the aarch64 board to an image whose agent hangs on
/// its trial boot (the image carries /etc/wtpd/hang: its init freezes wtpd with SIGSTOP once
/// wtpd holds /dev/watchdog open). Nothing in the guest reboots it: the i6300esb, armed by the
/// agent for the trial and no longer petted, resets the machine; U-Boot counts the trial boots
/// (boot_limit 2) and rolls back to slot a, whose agent rejoins on the old version.
#[test]
#[ignore = "qemu-system-aarch64, minutes: scripts/qemu-system-test watchdog"]
fn watchdog_resets_a_hung_trial_boot_and_uboot_rolls_back() {
    let mut lab = Lab::new(&ARM64, "watchdog-rollback");
    let etc_a = lab.guest_etc("etc-a", AP_VERSION, &[]);
    let etc_bad = lab.guest_etc("etc-hang", CONTROLLER_VERSION, &[("hang", "")]);
    lab.build_image(&etc_a, AP_VERSION, &etc_a, AP_VERSION);
    lab.serve_slot_image(&etc_bad, CONTROLLER_VERSION);
    lab.start_acsim();
    lab.boot();
    lab.expect("A/B: booting slot a (upgrade_available=0", 90);
    lab.expect("i6300ESB timer", 120);
    lab.expect("initialized. heartbeat=30 sec (nowayout=0)", 10);
    lab.expect("wtpd-image: booted slot a (trial 0)", 60);
    lab.expect(&format!("software {AP_VERSION}"), 60);
    // Not on trial: the agent leaves the watchdog alone.
    lab.expect(
        "Watchdog /dev/watchdog not opened: the booted slot is not on trial",
        60,
    );
    lab.expect("Image transfer completed", 600);
    lab.expect("Switched to slot b", 120);
    let mut resets = Vec::new();
    for n in 1..=2 {
        lab.expect(&format!("A/B: trial boot {n} of 2 of slot b"), 180);
        lab.expect("wtpd-image: booted slot b (trial 1)", 180);
        lab.expect(
            "Watchdog /dev/watchdog opened (i6300ESB timer): the slot is on trial",
            90,
        );
        lab.expect("Watchdog /dev/watchdog: timeout set to 15 s", 10);
        lab.expect("wtpd-image: /etc/wtpd/hang present: wtpd (pid", 60);
        lab.expect("holding /dev/watchdog open: 1", 5);
        let hung = Instant::now();
        // Nothing in the guest reboots: the next U-Boot banner is the watchdog's reset.
        lab.expect("U-Boot 20", 120);
        let reset = hung.elapsed();
        eprintln!(
            "watchdog: trial boot {n}: reset {:.1} s after the agent was frozen",
            reset.as_secs_f64()
        );
        assert!(
            reset >= Duration::from_secs(5),
            "reset {reset:?} after the hang: too early for a 15 s watchdog"
        );
        resets.push((hung, reset));
    }
    lab.expect(
        "A/B: slot b was not marked good after 2 boots: rolling back",
        120,
    );
    let rollback = resets[0].0.elapsed();
    lab.expect("A/B: booting slot a (upgrade_available=0", 30);
    lab.expect("wtpd-image: booted slot a (trial 0)", 180);
    lab.expect(&format!("software {AP_VERSION}"), 60);
    lab.expect("CAPWAP State: Join", 120);
    let rejoined = resets[0].0.elapsed();
    eprintln!(
        "watchdog: from the first hang: rollback decided by U-Boot after {:.1} s, old version \
         joining after {:.1} s",
        rollback.as_secs_f64(),
        rejoined.as_secs_f64()
    );
    lab.stop_qemu();
    let console = read(&lab.serial());
    // The guest never rebooted itself: every reset after the switch was the watchdog's.
    assert_eq!(
        console.matches("reboot: Restarting system").count(),
        1,
        "only the agent's reboot into slot b"
    );
    assert_env(
        &lab.printenv(),
        &[
            ("boot_slot", "a"),
            ("upgrade_available", "0"),
            ("bootcount", "0"),
            ("bootlimit", "2"),
            ("slot_a_state", "good"),
            ("slot_b_state", "invalid"),
            ("slot_b_version", CONTROLLER_VERSION),
        ],
    );
}

/// The agent's own decision on the same board: slot b's agent runs but never makes progress
/// toward joining (its wtpd.toml names a controller port where nothing answers, so it stays
/// in Discovery and Sulking). After the board's progress window (60 s) it stops petting, says
/// so, and the i6300esb resets the machine one timeout (15 s) later. The switch is written
/// with `fw_setenv -s` with `bootlimit=1`: one trial boot, then U-Boot rolls back.
#[test]
#[ignore = "qemu-system-aarch64, minutes: scripts/qemu-system-test watchdog"]
fn watchdog_stops_petting_an_agent_that_makes_no_progress() {
    let mut lab = Lab::new(&ARM64, "watchdog-no-progress");
    let never = "99.0.0.2";
    let etc_a = lab.guest_etc("etc-a", CONTROLLER_VERSION, &[]);
    let etc_b = lab.guest_etc("etc-b", never, &[]);
    let toml = etc_b.join("wtpd.toml");
    let text = read(&toml);
    let lost = text.replace(&format!("\"10.0.2.2:{}\"", lab.port), "\"10.0.2.2:9\"");
    assert_ne!(lost, text, "the controller line of slot b's wtpd.toml");
    std::fs::write(&toml, lost).unwrap();
    lab.build_image(&etc_a, CONTROLLER_VERSION, &etc_b, never);
    lab.setenv(&[
        ("boot_slot", "b"),
        ("upgrade_available", "1"),
        ("bootcount", "0"),
        ("bootlimit", "1"),
        ("slot_b_version", never),
        ("slot_b_state", "new"),
    ]);
    lab.start_acsim();
    lab.boot();
    lab.expect("A/B: trial boot 1 of 1 of slot b", 90);
    lab.expect("i6300ESB timer", 120);
    lab.expect("wtpd-image: booted slot b (trial 1)", 60);
    lab.expect(
        "Watchdog /dev/watchdog opened (i6300ESB timer): the slot is on trial",
        90,
    );
    lab.expect("Watchdog /dev/watchdog: timeout set to 15 s", 10);
    let opened = Instant::now();
    lab.expect("CAPWAP State: Discovery", 30);
    let rest = lab.expect_rest(
        "Watchdog /dev/watchdog: no progress toward joining for ",
        180,
    );
    let starved = Instant::now();
    let idle: u64 = rest
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no figure in '{rest}'"));
    assert!((60..=63).contains(&idle), "{rest}");
    assert!(
        rest.contains("stopped petting; the board resets within 15 s"),
        "{rest}"
    );
    lab.expect("U-Boot 20", 60);
    let reset = starved.elapsed();
    eprintln!(
        "watchdog: stopped petting {:.1} s after the watchdog was opened; reset {:.1} s later",
        (starved - opened).as_secs_f64(),
        reset.as_secs_f64()
    );
    assert!(
        reset >= Duration::from_secs(5),
        "reset {reset:?}: too early"
    );
    lab.expect(
        "A/B: slot b was not marked good after 1 boots: rolling back",
        60,
    );
    lab.expect("wtpd-image: booted slot a (trial 0)", 120);
    lab.expect(
        "Watchdog /dev/watchdog not opened: the booted slot is not on trial",
        60,
    );
    lab.expect("CAPWAP State: Run", 90);
    lab.stop_qemu();
    let console = read(&lab.serial());
    assert!(
        !console.contains("reboot: Restarting system"),
        "the guest rebooted itself"
    );
    assert_env(
        &lab.printenv(),
        &[
            ("boot_slot", "a"),
            ("upgrade_available", "0"),
            ("bootcount", "0"),
            ("slot_b_state", "invalid"),
        ],
    );
}
