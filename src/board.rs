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
//! ```
//!
//! Relative paths are relative to the board file. The slot kinds `ubi` and `mtd` are named in
//! the format for boards that need them and refused until supported.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{ConfigError, DownloadSection, RebootMethod};
use crate::image::bootenv::{ByteOrder, EnvConfig};
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
    /// A UBI volume (not supported yet).
    Ubi,
    /// A raw MTD partition (not supported yet).
    Mtd,
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
            rel(&mut s.device);
        }
        if let Some(e) = &mut b.bootenv {
            rel(&mut e.config);
        }
        if let Some(d) = &mut b.download {
            rel(&mut d.dir);
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
                if s.kind != SlotKind::File {
                    return Err(invalid(format!(
                        "slot {}: kind {:?} is not supported yet",
                        s.name, s.kind
                    )));
                }
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
        let ubi = BOARD.replace(
            "size = 1048576\n[[slot]]",
            "size = 1048576\nkind = \"ubi\"\n[[slot]]",
        );
        assert!(Board::parse(&ubi, Path::new("b.toml"))
            .unwrap_err()
            .to_string()
            .contains("not supported yet"));
        let typo = BOARD.replace("boot_limit", "bootlimit");
        assert!(Board::parse(&typo, Path::new("b.toml")).is_err());
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
