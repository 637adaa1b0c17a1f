//! Where the environment lives: the `fw_env.config` file of libubootenv and U-Boot's tools.

use std::path::{Path, PathBuf};

use super::{ByteOrder, EnvError};

/// The largest environment copy accepted (16 MiB): a config line with a larger size is refused,
/// so that a wrong config cannot make the agent allocate gigabytes. Real environments are
/// 4 KiB to 256 KiB.
pub const MAX_ENV_SIZE: usize = 16 << 20;

/// One copy of the environment: `size` bytes at byte `offset` of `path` (a file, a partition's
/// block device, an eMMC boot area, an MTD device `/dev/mtdN`, or a UBI volume `/dev/ubiX_Y`
/// or `/dev/ubiX:NAME`).
///
/// The sector fields are libubootenv's (`struct uboot_flash_env`: `sectorsize`, `envsectors`)
/// and only matter on MTD devices; files, block devices and UBI volumes ignore them, as
/// libubootenv does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvLocation {
    pub path: PathBuf,
    pub offset: u64,
    /// The whole copy, header included (the config file's third column).
    pub size: usize,
    /// SECTORSIZE: the bytes erased at a time, a multiple of the device's erase size. 0 when
    /// not given: the device's erase size (MEMGETINFO), as libubootenv does.
    pub sector_size: u64,
    /// SECTORS: how many sectors the copy may occupy, bad ones (NAND) included. 0 when not
    /// given: as many as the copy needs, with no room for a bad block.
    pub sectors: u64,
}

/// What a device path is, by libubootenv's rule (common.c, `get_device_type`): the name
/// decides, after symlinks are resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A regular file or a block device: read and written in place.
    File,
    /// `/dev/mtd*`: raw flash, erased before it is written.
    Mtd,
    /// `/dev/ubi*`, or `/dev/mtdN:VOLUME`: a UBI volume, replaced by a volume update.
    Ubi,
}

impl DeviceKind {
    pub fn of(path: &Path) -> DeviceKind {
        let s = path.to_string_lossy();
        if s.starts_with("/dev/mtd") {
            if s.contains(':') {
                DeviceKind::Ubi
            } else {
                DeviceKind::Mtd
            }
        } else if s.starts_with("/dev/ubi") {
            DeviceKind::Ubi
        } else {
            DeviceKind::File
        }
    }
}

impl EnvLocation {
    /// The sectors a write of this copy may erase on flash whose erase blocks are
    /// `erase_size` bytes: `[offset, offset + count × sector)`, where the sector is
    /// [`EnvLocation::sector_size`] (or `erase_size` when not given) and the count is
    /// [`EnvLocation::sectors`] (or the sectors the copy needs). Refused: a sector that is not
    /// a multiple of the erase size, an offset that is not on an erase block (the kernel's
    /// MEMERASE refuses both, so libubootenv cannot write there either), and a copy larger
    /// than its sectors.
    pub fn sector_area(&self, erase_size: u64) -> Result<SectorArea, String> {
        let erase_size = erase_size.max(1);
        let sector = if self.sector_size == 0 {
            erase_size
        } else {
            self.sector_size
        };
        if sector % erase_size != 0 {
            return Err(format!(
                "sector size {sector:#x} is not a multiple of the erase size {erase_size:#x}"
            ));
        }
        if self.offset % erase_size != 0 {
            return Err(format!(
                "offset {:#x} does not start an erase block ({erase_size:#x} bytes): the \
                 erase before a write would take bytes before the copy",
                self.offset
            ));
        }
        let needed = (self.size as u64).div_ceil(sector);
        let count = if self.sectors == 0 {
            needed
        } else {
            self.sectors
        };
        if needed > count {
            return Err(format!(
                "the copy ({:#x} bytes) needs {needed} sectors of {sector:#x}, {count} given",
                self.size
            ));
        }
        let end = count
            .checked_mul(sector)
            .and_then(|len| self.offset.checked_add(len))
            .ok_or_else(|| format!("{count} sectors of {sector:#x} overflow"))?;
        Ok(SectorArea {
            start: self.offset,
            end,
            sector,
        })
    }
}

/// The sectors of one copy on flash (see [`EnvLocation::sector_area`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectorArea {
    /// The first byte, the end (exclusive), and the sector size: a write erases whole sectors
    /// in `start..end`, skipping bad ones on NAND.
    pub start: u64,
    pub end: u64,
    pub sector: u64,
}

/// The environment's copies (one, or two for a redundant environment) and the byte order of
/// the CRC (the byte order of the CPU U-Boot runs on: big-endian on MIPS boards).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvConfig {
    /// One copy, or two (redundant: each copy has a flag byte after its CRC).
    pub copies: Vec<EnvLocation>,
    pub byte_order: ByteOrder,
}

impl EnvConfig {
    /// A checked config (see [`EnvConfig::validate`]).
    pub fn new(copies: Vec<EnvLocation>, byte_order: ByteOrder) -> Result<Self, EnvError> {
        let cfg = EnvConfig { copies, byte_order };
        cfg.validate()?;
        Ok(cfg)
    }

    /// True when there are two copies, each with a flag byte.
    pub fn is_redundant(&self) -> bool {
        self.copies.len() == 2
    }

    /// The header's length: 4 (CRC), or 5 (CRC and flag) for a redundant environment.
    pub fn header_len(&self) -> usize {
        if self.is_redundant() {
            5
        } else {
            4
        }
    }

    /// Checks what [`read`](super::read) and [`write`](super::write) rely on: one or two
    /// copies, each larger than its header and at most [`MAX_ENV_SIZE`], two copies of the same
    /// size (U-Boot requires it) that do not overlap when they share a file.
    ///
    /// On an MTD device (`/dev/mtd*`) with a SECTORSIZE: the copy fits its sectors and starts
    /// an erase block, and two copies on one device do not share a sector (erasing one would
    /// erase the other). Without a SECTORSIZE the device's erase size decides, which only the
    /// storage knows: [`write_with`](super::write_with) checks it there. UBI volumes: offset 0
    /// (libubootenv reads and updates a volume from its start, whatever the offset says).
    pub fn validate(&self) -> Result<(), EnvError> {
        let bad = |reason: String| Err(EnvError::Config { line: None, reason });
        match self.copies.len() {
            1 | 2 => {}
            n => return bad(format!("{n} environment copies; 1 or 2 are supported")),
        }
        let header = self.header_len();
        for (i, c) in self.copies.iter().enumerate() {
            if c.size <= header {
                return bad(format!(
                    "copy {i}: size {:#x} leaves no room after the {header}-byte header",
                    c.size
                ));
            }
            if c.size > MAX_ENV_SIZE {
                return bad(format!(
                    "copy {i}: size {:#x} is larger than the {MAX_ENV_SIZE:#x} accepted",
                    c.size
                ));
            }
            if c.offset.checked_add(c.size as u64).is_none() {
                return bad(format!("copy {i}: offset {:#x} + size overflows", c.offset));
            }
        }
        for (i, c) in self.copies.iter().enumerate() {
            match DeviceKind::of(&c.path) {
                DeviceKind::Mtd if c.sector_size != 0 => {
                    if let Err(r) = c.sector_area(c.sector_size) {
                        return bad(format!("copy {i}: {r}"));
                    }
                }
                DeviceKind::Ubi if c.offset != 0 => {
                    return bad(format!(
                        "copy {i}: offset {:#x} in UBI volume {}: libubootenv ignores it and \
                         uses the volume from its start; write 0",
                        c.offset,
                        c.path.display()
                    ));
                }
                _ => {}
            }
        }
        if let [a, b] = &self.copies[..] {
            if a.path == b.path
                && DeviceKind::of(&a.path) == DeviceKind::Mtd
                && a.sector_size != 0
                && b.sector_size != 0
            {
                if let (Ok(x), Ok(y)) = (a.sector_area(a.sector_size), b.sector_area(b.sector_size))
                {
                    if x.start < y.end && y.start < x.end {
                        return bad(format!(
                            "the two copies share erase sectors of {} ({:#x}..{:#x} and \
                             {:#x}..{:#x}): writing one would erase the other",
                            a.path.display(),
                            x.start,
                            x.end,
                            y.start,
                            y.end
                        ));
                    }
                }
            }
            if a.size != b.size {
                return bad(format!(
                    "the two copies differ in size ({:#x} and {:#x})",
                    a.size, b.size
                ));
            }
            let (a_end, b_end) = (a.offset + a.size as u64, b.offset + b.size as u64);
            if a.path == b.path && a.offset < b_end && b.offset < a_end {
                return bad(format!(
                    "the two copies overlap in {} ({:#x}..{a_end:#x} and {:#x}..{b_end:#x})",
                    a.path.display(),
                    a.offset,
                    b.offset
                ));
            }
        }
        Ok(())
    }

    /// Parses a `fw_env.config` as libubootenv reads it (uboot_env.c,
    /// `libuboot_read_config_ext`): one line per copy,
    /// `DEVICE OFFSET SIZE [SECTORSIZE [SECTORS [DISABLE_LOCK]]]`, blank lines and lines
    /// starting with `#` skipped, anything from a `#` field on ignored.
    ///
    /// Numbers are read as its `sscanf("%ms %lli %zx %zx %lx %d")` does: OFFSET like C's
    /// `strtoll(s, 0)` (`0x` hex, leading `0` octal, else decimal), SIZE, SECTORSIZE and
    /// SECTORS always hexadecimal, with or without `0x` (`2000` means 0x2000 bytes), and
    /// DISABLE_LOCK decimal. SECTORSIZE and SECTORS are kept ([`EnvLocation::sector_size`],
    /// [`EnvLocation::sectors`]): they say what an MTD write erases. DISABLE_LOCK is checked
    /// and ignored: this module never calls MEMLOCK/MEMUNLOCK (see `docs/bootenv.md`).
    ///
    /// Refused (not supported): negative offsets (counted from the device's end), more than two
    /// copies, and libubootenv's newer YAML config format.
    pub fn parse_fw_env_config(text: &str, byte_order: ByteOrder) -> Result<Self, EnvError> {
        let mut copies = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |reason: String| EnvError::Config {
                line: Some(line),
                reason,
            };
            let fields: Vec<&str> = raw
                .split_whitespace()
                .take_while(|f| !f.starts_with('#'))
                .collect();
            if fields.is_empty() {
                continue;
            }
            if fields.len() < 3 {
                return Err(err(format!(
                    "expected `DEVICE OFFSET SIZE`, found {} field(s)",
                    fields.len()
                )));
            }
            if fields.len() > 6 {
                return Err(err(format!(
                    "expected at most 6 fields, found {}",
                    fields.len()
                )));
            }
            let offset = parse_offset(fields[1]).map_err(|r| err(format!("OFFSET: {r}")))?;
            let size = parse_hex(fields[2]).map_err(|r| err(format!("SIZE: {r}")))?;
            let sector_size = match fields.get(3) {
                Some(f) => parse_hex(f).map_err(|r| err(format!("SECTORSIZE: {r}")))?,
                None => 0,
            };
            let sectors = match fields.get(4) {
                Some(f) => parse_hex(f).map_err(|r| err(format!("SECTORS: {r}")))?,
                None => 0,
            };
            if let Some(f) = fields.get(5) {
                parse_digits(f.strip_prefix('-').unwrap_or(f), 10)
                    .ok_or_else(|| err(format!("DISABLE_LOCK: `{f}` is not a number")))?;
            }
            if copies.len() == 2 {
                return Err(err("a third environment copy; 1 or 2 are supported".into()));
            }
            let size = usize::try_from(size)
                .ok()
                .filter(|&s| s <= MAX_ENV_SIZE)
                .ok_or_else(|| {
                    err(format!(
                        "SIZE {size:#x} is larger than the {MAX_ENV_SIZE:#x} accepted"
                    ))
                })?;
            copies.push(EnvLocation {
                path: PathBuf::from(fields[0]),
                offset,
                size,
                sector_size,
                sectors,
            });
        }
        if copies.is_empty() {
            return Err(EnvError::Config {
                line: None,
                reason: "no environment copy configured".into(),
            });
        }
        EnvConfig::new(copies, byte_order)
    }

    /// Reads and parses a `fw_env.config` file (see [`EnvConfig::parse_fw_env_config`]).
    pub fn from_file(path: impl AsRef<Path>, byte_order: ByteOrder) -> Result<Self, EnvError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| EnvError::Io {
            path: path.to_path_buf(),
            op: "read config",
            error,
        })?;
        Self::parse_fw_env_config(&text, byte_order).map_err(|e| match e {
            EnvError::Config { line, reason } => EnvError::Config {
                line,
                reason: format!("{}: {reason}", path.display()),
            },
            other => other,
        })
    }
}

/// C's `strtoll(s, NULL, 0)` for the whole field, refusing negative values.
fn parse_offset(s: &str) -> Result<u64, String> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (digits, radix) = if let Some(h) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
        (h, 16)
    } else if body.len() > 1 && body.starts_with('0') {
        (&body[1..], 8)
    } else {
        (body, 10)
    };
    let v = parse_digits(digits, radix).ok_or_else(|| format!("`{s}` is not a number"))?;
    if neg && v != 0 {
        return Err(format!(
            "negative offset `{s}` (counted from the device's end) is not supported"
        ));
    }
    Ok(v)
}

/// `%lx`: hexadecimal with an optional `0x`.
fn parse_hex(s: &str) -> Result<u64, String> {
    let digits = s.strip_prefix("0x").or(s.strip_prefix("0X")).unwrap_or(s);
    parse_digits(digits, 16).ok_or_else(|| format!("`{s}` is not a hexadecimal number"))
}

fn parse_digits(digits: &str, radix: u32) -> Option<u64> {
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}
