//! The board file: everything about a board the agent needs, so that a new board is a new
//! file, not new code (`board/*.toml`).
//!
//! ```toml
//! name = "armv7-ap"            # for logs
//! image_type = "ap1g8"         # the file name asked for in Image Data Requests
//! target = "armv7-unknown-linux-gnueabihf"   # the Rust target its wtpd is built for
//! byte_order = "little"        # of the U-Boot environment ("big" on MIPS boards)
//! reboot = "syscall"           # "syscall" (reboot(2)) or "exit" (status 75, simulated board)
//! radios = [{ id = 1, radio_type = 13 }]
//!
//! [download]                   # as [download] in wtpd.toml, which overrides it
//! dir = "/tmp"
//! file = "part.tar"
//!
//! [[slot]]                     # two slots, A/B; `device` is a file or a block device
//! name = "a"
//! device = "/dev/mmcblk0p2"
//! size = 67108864
//! [[slot]]
//! name = "b"
//! device = "/dev/mmcblk0p3"
//! size = 67108864
//!
//! [bootenv]
//! config = "/etc/fw_env.config" # fw_env.config lines: DEVICE OFFSET SIZE (two for redundant)
//! boot_limit = 3               # boot attempts of a new slot before U-Boot falls back
//!
//! [watchdog]                   # optional: the hardware watchdog of a trial boot
//! device = "/dev/watchdog"     # opened only while the booted slot is on trial
//! timeout = 30                 # seconds (WDIOC_SETTIMEOUT); default: the driver's
//! progress_window = 120        # seconds without progress toward joining: petting stops
//! nowayout = false             # true: the driver cannot be stopped, petted after mark-good too
//! ```
//!
//! Relative paths are relative to the board file.
//!
//! Slots on raw flash (docs/boards.md, "Slots on flash"):
//!
//! ```toml
//! [[slot]]
//! name = "a"
//! kind = "mtd"                 # a raw MTD partition, NOR or NAND
//! device = "mtd:rootfs_a"      # or "/dev/mtd4"; `mtd:NAME` is looked up in /proc/mtd
//! size = 33554432
//! [[slot]]
//! name = "b"
//! kind = "ubi"                 # a UBI volume, updated atomically (UBI_IOCVOLUP)
//! device = "ubi0:rootfs_b"     # or "/dev/ubi0_1"; `ubiX:NAME` is looked up in sysfs
//! size = 33554432
//! ```
//!
//! A simulated board may put an `mtd` slot on a regular file with flash semantics (a fake,
//! named as one: [`crate::flash::sim::SimFlash`]), never on a `/dev` path:
//! `sim = { type = "nand", page = 2048, bad_blocks = [3] }` (`type = "nor"` with an optional
//! `erase_size`, 64 KiB by default). The file is `size` bytes of flash.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{ConfigError, DownloadSection, RebootMethod};
use crate::image::bootenv::{ByteOrder, EnvConfig};
use crate::watchdog::WatchdogSection;
use crate::wtp::config::Radio;

/// Byte order as written in a board file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Endian {
    #[default]
    Little,
    Big,
}

impl From<Endian> for ByteOrder {
    fn from(e: Endian) -> ByteOrder {
        match e {
            Endian::Little => ByteOrder::Little,
            Endian::Big => ByteOrder::Big,
        }
    }
}

/// What a slot is stored on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SlotKind {
    /// A regular file or a block device, written with pwrite and fsync.
    #[default]
    File,
    /// A UBI volume (`/dev/ubiX_Y` or `ubiX:NAME`), written as one atomic volume update.
    Ubi,
    /// A raw MTD partition (`/dev/mtdN` or `mtd:NAME`), NOR or NAND, written as nandwrite does.
    Mtd,
}

/// The kind of flash a simulated slot stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimFlashType {
    Nor,
    Nand,
}

/// A slot on a regular file with flash semantics (`sim = { ... }`): the simulated board's
/// stand-in for an MTD partition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimFlashSpec {
    #[serde(rename = "type")]
    pub flash: SimFlashType,
    /// NAND page size (default 2048; 64 pages an erase block).
    #[serde(default)]
    pub page: Option<u32>,
    /// NOR erase block size (default 65536).
    #[serde(default)]
    pub erase_size: Option<u32>,
    /// Erase blocks marked bad (NAND).
    #[serde(default)]
    pub bad_blocks: Vec<u64>,
}

impl SimFlashSpec {
    /// The simulated device's geometry for a slot of `size` bytes.
    pub fn info(&self, size: u64) -> crate::flash::FlashInfo {
        use crate::flash::sim::SimFlash;
        match self.flash {
            SimFlashType::Nand => SimFlash::nand(size, self.page.unwrap_or(2048)),
            SimFlashType::Nor => SimFlash::nor(size, self.erase_size.unwrap_or(65536)),
        }
    }

    fn validate(&self, size: u64) -> Result<(), String> {
        let info = self.info(size);
        match self.flash {
            SimFlashType::Nand if self.erase_size.is_some() => {
                return Err("a simulated NAND's erase block is 64 pages: no erase_size".into())
            }
            SimFlashType::Nor if self.page.is_some() || !self.bad_blocks.is_empty() => {
                return Err("a simulated NOR has no pages and no bad blocks".into())
            }
            _ => {}
        }
        if self.page.is_some_and(|p| p == 0 || p > 65536) {
            return Err("page must be 1 to 65536 bytes".into());
        }
        info.validate()?;
        if let Some(b) = self.bad_blocks.iter().find(|&&b| b >= info.blocks()) {
            return Err(format!(
                "bad block {b}: the device has {} erase blocks",
                info.blocks()
            ));
        }
        Ok(())
    }
}

/// One A/B slot.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slot {
    pub name: String,
    pub device: PathBuf,
    /// Bytes available in the slot.
    pub size: u64,
    #[serde(default)]
    pub kind: SlotKind,
    /// A simulated MTD slot on a regular file (`kind = "mtd"` only).
    #[serde(default)]
    pub sim: Option<SimFlashSpec>,
}

impl Slot {
    /// True when `device` names the slot by partition or volume name (`mtd:NAME`,
    /// `ubiX:NAME`), resolved when the slot is opened.
    pub fn by_name(&self) -> bool {
        let d = self.device.to_string_lossy();
        match self.kind {
            SlotKind::Mtd => d.starts_with("mtd:"),
            SlotKind::Ubi => d.split_once(':').is_some_and(|(dev, _)| {
                dev.strip_prefix("ubi")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
            }),
            SlotKind::File => false,
        }
    }

    /// The board file's rules for the slot's kind, device and simulation.
    fn check_kind(&self) -> Result<(), String> {
        let dev = self.device.to_string_lossy();
        let in_dev = self.device.starts_with("/dev");
        match (self.kind, &self.sim) {
            (SlotKind::File, None) => Ok(()),
            (SlotKind::Mtd, Some(sim)) => {
                if in_dev || self.by_name() {
                    return Err(format!(
                        "a simulated flash slot is a regular file, not {dev}"
                    ));
                }
                sim.validate(self.size)
            }
            (SlotKind::Mtd | SlotKind::Ubi, None) => {
                if in_dev || self.by_name() {
                    Ok(())
                } else {
                    Err(format!(
                        "kind {:?} takes a /dev path or a {} name, not {dev}",
                        self.kind,
                        if self.kind == SlotKind::Mtd {
                            "mtd:NAME"
                        } else {
                            "ubiX:NAME"
                        }
                    ))
                }
            }
            (kind, Some(_)) => Err(format!(
                "`sim` simulates an MTD partition: not a slot of kind {kind:?}"
            )),
        }
    }
}

/// Where the U-Boot environment lives and the boot-attempt budget.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootEnvSection {
    /// A fw_env.config-style file.
    pub config: PathBuf,
    #[serde(default = "default_boot_limit")]
    pub boot_limit: u32,
}

fn default_boot_limit() -> u32 {
    3
}

/// A board file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub name: String,
    pub image_type: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub byte_order: Endian,
    #[serde(default)]
    pub reboot: RebootMethod,
    #[serde(default)]
    pub radios: Vec<Radio>,
    #[serde(default)]
    pub download: Option<DownloadSection>,
    #[serde(default, rename = "slot")]
    pub slots: Vec<Slot>,
    pub bootenv: Option<BootEnvSection>,
    /// The hardware watchdog of a trial boot ([`crate::watchdog`]).
    #[serde(default)]
    pub watchdog: Option<WatchdogSection>,
}

impl Board {
    pub fn load(path: &Path) -> Result<Board, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Board, ConfigError> {
        let invalid = |what: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            what,
        };
        let mut b: Board = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            error: e.to_string(),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let rel = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for s in &mut b.slots {
            if !s.by_name() {
                rel(&mut s.device);
            }
        }
        if let Some(e) = &mut b.bootenv {
            rel(&mut e.config);
        }
        if let Some(d) = &mut b.download {
            rel(&mut d.dir);
        }
        if let Some(w) = &mut b.watchdog {
            rel(&mut w.device);
            w.validate().map_err(invalid)?;
            if b.bootenv.is_none() {
                return Err(invalid(
                    "[watchdog] guards a trial boot: it needs a [bootenv] to know of one".into(),
                ));
            }
        }
        if b.image_type.is_empty() {
            return Err(invalid("image_type is empty".into()));
        }
        if !b.slots.is_empty() {
            if b.slots.len() != 2 {
                return Err(invalid(format!(
                    "{} slots: an A/B board has exactly two",
                    b.slots.len()
                )));
            }
            if b.slots[0].name == b.slots[1].name {
                return Err(invalid("the two slots have the same name".into()));
            }
            for s in &b.slots {
                s.check_kind()
                    .map_err(|e| invalid(format!("slot {}: {e}", s.name)))?;
                if s.name.is_empty() || !s.name.bytes().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(invalid(format!(
                        "slot name '{}' must be letters and digits",
                        s.name
                    )));
                }
            }
            if b.bootenv.is_none() {
                return Err(invalid(
                    "slots need a [bootenv] to switch between them".into(),
                ));
            }
        }
        Ok(b)
    }

    /// The environment's location, read from its fw_env.config.
    pub fn env_config(&self) -> Option<Result<EnvConfig, String>> {
        let e = self.bootenv.as_ref()?;
        Some(
            EnvConfig::from_file(&e.config, self.byte_order.into())
                .map_err(|err| format!("{}: {err}", e.config.display())),
        )
    }

    /// The slot with this name.
    pub fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.name == name)
    }

    /// The slot that is not `name`.
    pub fn other_slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.name != name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOARD: &str = r#"
name = "armv7-ap"
image_type = "ap1g8"
target = "armv7-unknown-linux-gnueabihf"
byte_order = "little"
reboot = "syscall"
radios = [{ id = 1, radio_type = 13 }]
[download]
dir = "/tmp"
file = "part.tar"
[[slot]]
name = "a"
device = "slots/a.img"
size = 1048576
[[slot]]
name = "b"
device = "/dev/mmcblk0p3"
size = 1048576
[bootenv]
config = "fw_env.config"
boot_limit = 3
"#;

    #[test]
    fn parses_and_resolves_paths() {
        let b = Board::parse(BOARD, Path::new("/etc/wtpd/board.toml")).unwrap();
        assert_eq!(
            b.slot("a").unwrap().device,
            Path::new("/etc/wtpd/slots/a.img")
        );
        assert_eq!(b.other_slot("a").unwrap().name, "b");
        assert_eq!(
            b.bootenv.as_ref().unwrap().config,
            Path::new("/etc/wtpd/fw_env.config")
        );
        assert_eq!(b.reboot, RebootMethod::Syscall);
    }

    #[test]
    fn refusals() {
        let one = BOARD.replace(
            "[[slot]]\nname = \"b\"\ndevice = \"/dev/mmcblk0p3\"\nsize = 1048576\n",
            "",
        );
        assert!(Board::parse(&one, Path::new("b.toml"))
            .unwrap_err()
            .to_string()
            .contains("exactly two"));
        let refused = |from: &str, to: &str, why: &str| {
            let text = BOARD.replace(from, to);
            assert_ne!(text, BOARD, "{from}");
            let e = Board::parse(&text, Path::new("b.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{to}: {e}");
        };
        let a = "device = \"slots/a.img\"\n";
        refused(
            a,
            "device = \"slots/a.img\"\nkind = \"ubi\"\n",
            "takes a /dev path or a ubiX:NAME name",
        );
        refused(a, "device = \"slots/a.img\"\nkind = \"mtd\"\n", "mtd:NAME");
        refused(
            a,
            "device = \"/dev/mtd3\"\nkind = \"mtd\"\nsim = { type = \"nand\" }\n",
            "a simulated flash slot is a regular file, not /dev/mtd3",
        );
        refused(
            a,
            "device = \"mtd:rootfs\"\nkind = \"mtd\"\nsim = { type = \"nand\" }\n",
            "not mtd:rootfs",
        );
        refused(
            a,
            "device = \"slots/a.img\"\nsim = { type = \"nor\" }\n",
            "not a slot of kind File",
        );
        refused(
            a,
            "device = \"a.img\"\nkind = \"mtd\"\nsim = { type = \"nand\", page = 2048, bad_blocks = [8] }\n",
            "bad block 8: the device has 8 erase blocks",
        );
        refused(
            a,
            "device = \"a.img\"\nkind = \"mtd\"\nsim = { type = \"nand\", page = 3000 }\n",
            "not a whole number",
        );
        refused(
            a,
            "device = \"a.img\"\nkind = \"mtd\"\nsim = { type = \"nor\", bad_blocks = [1] }\n",
            "no bad blocks",
        );
        let wd = |section: &str| format!("{BOARD}[watchdog]\n{section}\n");
        let b = Board::parse(&wd("timeout = 30"), Path::new("/etc/wtpd/b.toml")).unwrap();
        let w = b.watchdog.unwrap();
        assert_eq!(
            (w.device.as_path(), w.timeout),
            (Path::new("/dev/watchdog"), Some(30))
        );
        let e = Board::parse(&wd("progress_window = 0"), Path::new("b.toml")).unwrap_err();
        assert!(e.to_string().contains("progress_window 0"), "{e}");
        let no_env = wd("").replace(
            "[bootenv]\nconfig = \"fw_env.config\"\nboot_limit = 3\n",
            "",
        );
        let no_env = no_env.replace("[[slot]]\nname = \"a\"\ndevice = \"slots/a.img\"\nsize = 1048576\n[[slot]]\nname = \"b\"\ndevice = \"/dev/mmcblk0p3\"\nsize = 1048576\n", "");
        let e = Board::parse(&no_env, Path::new("b.toml")).unwrap_err();
        assert!(e.to_string().contains("needs a [bootenv]"), "{e}");
        let typo = BOARD.replace("boot_limit", "bootlimit");
        assert!(Board::parse(&typo, Path::new("b.toml")).is_err());
    }

    #[test]
    fn flash_slots_by_name_by_path_and_simulated() {
        let text = BOARD
            .replace(
                "device = \"slots/a.img\"\n",
                "device = \"mtd:rootfs_a\"\nkind = \"mtd\"\n",
            )
            .replace(
                "device = \"/dev/mmcblk0p3\"\n",
                "device = \"ubi0:rootfs_b\"\nkind = \"ubi\"\n",
            );
        let b = Board::parse(&text, Path::new("/etc/wtpd/board.toml")).unwrap();
        assert_eq!(b.slot("a").unwrap().device, Path::new("mtd:rootfs_a"));
        assert_eq!(b.slot("a").unwrap().kind, SlotKind::Mtd);
        assert_eq!(b.slot("b").unwrap().device, Path::new("ubi0:rootfs_b"));
        let text = BOARD
            .replace(
                "device = \"slots/a.img\"\n",
                "device = \"slots/a.img\"\nkind = \"mtd\"\nsim = { type = \"nand\", page = 2048, bad_blocks = [3] }\n",
            )
            .replace(
                "device = \"/dev/mmcblk0p3\"\n",
                "device = \"/dev/ubi0_1\"\nkind = \"ubi\"\n",
            );
        let b = Board::parse(&text, Path::new("/etc/wtpd/board.toml")).unwrap();
        let a = b.slot("a").unwrap();
        assert_eq!(a.device, Path::new("/etc/wtpd/slots/a.img"));
        let info = a.sim.as_ref().unwrap().info(a.size);
        assert_eq!(
            (info.write_size, info.erase_size, info.blocks()),
            (2048, 128 << 10, 8)
        );
    }

    #[test]
    fn the_shipped_board_files_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("board");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                Board::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 1, "no board files in {}", dir.display());
    }
}
