//! Where copies are read from and written to: a trait, so that tests can cut power mid-write.
//!
//! [`DeviceStorage`] is the real one, and does what libubootenv does for each kind of device
//! ([`DeviceKind`], decided by the name as libubootenv decides it):
//! - files and block devices: positioned reads and writes, `fdatasync` ([`FileStorage`]);
//! - MTD devices: through [`Flash`], opened by a [`FlashOpener`] ([`MtdOpener`] on the board,
//!   [`SimOpener`] over simulated flash in the tests, so both run the same code): whole
//!   sectors erased before they are written, bad NAND blocks skipped, and on NOR the boolean
//!   flag scheme ([`FlagScheme::Boolean`]);
//! - UBI volumes: one volume update (`UBI_IOCVOLUP`) of the copy's size.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use super::config::DeviceKind;
use super::flash;
use super::EnvLocation;
use crate::flash::mtd::MtdDevice;
use crate::flash::sim::SimFlash;
use crate::flash::ubi::UbiVolume;
use crate::flash::Flash;

/// How the flag byte of a redundant environment says which copy is current (libubootenv's
/// `flagstype`, which the medium decides: common.c `check_env_device`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagScheme {
    /// A counter: a write stores the current copy's flag + 1 (wrapping). Of two valid copies
    /// the higher flag wins, except that 0 beats 255; equal flags: copy 0. Files, block
    /// devices, NAND and UBI volumes.
    Incremental,
    /// Active (1) and obsolete (0), NOR flash's scheme (U-Boot's `ENV_REDUND_ACTIVE` and
    /// `ENV_REDUND_OBSOLETE`): a write stores 1 in the new copy, then programs the old copy's
    /// flag byte to 0 in place, without an erase (NOR can clear bits one byte at a time). Of
    /// two valid copies, a flag of 0xFF (erased) wins, copy 1's first; else the higher flag;
    /// equal flags: copy 0.
    Boolean,
}

impl FlagScheme {
    /// The current one of two valid copies with these flags (libubootenv's `libuboot_load`).
    pub fn current(self, flag0: u8, flag1: u8) -> usize {
        match self {
            FlagScheme::Incremental => super::current_copy(flag0, flag1),
            FlagScheme::Boolean => {
                if flag1 == 0xFF {
                    1
                } else if flag0 == 0xFF {
                    0
                } else {
                    usize::from(flag1 > flag0)
                }
            }
        }
    }

    /// The flag a write stores, given the current copy's (libubootenv's `libuboot_env_store`).
    pub fn next(self, current: u8) -> u8 {
        match self {
            FlagScheme::Incremental => current.wrapping_add(1),
            FlagScheme::Boolean => 1,
        }
    }
}

/// What a copy is stored on, as far as writing it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Medium {
    pub scheme: FlagScheme,
    /// The bytes of the device a write of the copy may erase (whole sectors, flash only).
    pub erases: Option<Range<u64>>,
}

impl Medium {
    /// A file, a block device or a UBI volume: counter flags, nothing erased.
    pub const FILE: Medium = Medium {
        scheme: FlagScheme::Incremental,
        erases: None,
    };
}

/// Reads and writes whole environment copies. [`DeviceStorage`] is the real one; tests
/// implement it in memory to fail or tear the k-th write.
///
/// A wrapper must forward [`EnvStorage::medium`] and [`EnvStorage::mark_obsolete`] too: the
/// defaults describe a file, and on NOR flash they would pick the wrong copy.
pub trait EnvStorage {
    /// The `loc.size` bytes of the copy.
    fn read_at(&mut self, loc: &EnvLocation) -> io::Result<Vec<u8>>;
    /// Writes `data` (`loc.size` bytes) as the copy, durably: when this returns `Ok`, the bytes
    /// are on the medium. On flash this erases the copy's sectors first.
    fn write_at(&mut self, loc: &EnvLocation, data: &[u8]) -> io::Result<()>;
    /// The medium the copy is on (default: a file).
    fn medium(&mut self, _loc: &EnvLocation) -> io::Result<Medium> {
        Ok(Medium::FILE)
    }
    /// Programs the copy's flag byte to 0 (obsolete) in place, without an erase: the second
    /// step of a [`FlagScheme::Boolean`] write. Only media with that scheme support it.
    fn mark_obsolete(&mut self, loc: &EnvLocation) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{}: no boolean flags on this medium", loc.path.display()),
        ))
    }
}

/// Files and block devices, with positioned reads and writes (`pread`/`pwrite`) and
/// `fdatasync` after each write. A file is never created, truncated or extended: a regular
/// file shorter than `offset + size` is refused, as it means a wrong config.
///
/// Refuses to write to raw MTD (`/dev/mtd*`) and UBI (`/dev/ubi*`) devices, which must be
/// erased or updated instead: [`DeviceStorage`] does that. Reading them works.
#[derive(Debug, Default)]
pub struct FileStorage;

impl FileStorage {
    pub fn new() -> Self {
        FileStorage
    }
}

impl EnvStorage for FileStorage {
    fn read_at(&mut self, loc: &EnvLocation) -> io::Result<Vec<u8>> {
        let file = File::open(&loc.path)?;
        let mut buf = vec![0; loc.size];
        file.read_exact_at(&mut buf, loc.offset)?;
        Ok(buf)
    }

    fn write_at(&mut self, loc: &EnvLocation, data: &[u8]) -> io::Result<()> {
        refuse_flash(&loc.path)?;
        check_len(loc, data)?;
        let file = OpenOptions::new().write(true).open(&loc.path)?;
        let meta = file.metadata()?;
        let end = loc.offset + loc.size as u64;
        if meta.is_file() && meta.len() < end {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the file is {} bytes, the copy ends at byte {end}: wrong config?",
                    meta.len()
                ),
            ));
        }
        file.write_all_at(data, loc.offset)?;
        file.sync_data()
    }
}

fn check_len(loc: &EnvLocation, data: &[u8]) -> io::Result<()> {
    if data.len() != loc.size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} bytes for a {}-byte copy", data.len(), loc.size),
        ));
    }
    Ok(())
}

fn refuse_flash(path: &Path) -> io::Result<()> {
    if DeviceKind::of(path) != DeviceKind::File {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{}: MTD and UBI devices are written through DeviceStorage (erase or volume \
                 update), not as a file",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Opens the MTD devices that environment copies are on.
pub trait FlashOpener {
    /// The device at `path` (as the config names it), opened, when it is raw flash; `None`
    /// when it is a file, a block device or a UBI volume.
    fn open(&mut self, path: &Path) -> io::Result<Option<&mut dyn Flash>>;
}

/// The board's MTD character devices: a path that is `/dev/mtd*` once symlinks are resolved
/// (libubootenv's rule) and a character device, opened as an [`MtdDevice`] and kept open.
/// `/dev/mtdblockN` (a block device) is read as a file, and not written, as before.
#[derive(Default)]
pub struct MtdOpener {
    open: Vec<(PathBuf, MtdDevice)>,
}

impl FlashOpener for MtdOpener {
    fn open(&mut self, path: &Path) -> io::Result<Option<&mut dyn Flash>> {
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if DeviceKind::of(&real) != DeviceKind::Mtd {
            return Ok(None);
        }
        if !std::fs::metadata(&real)?.file_type().is_char_device() {
            return Ok(None);
        }
        let i = match self.open.iter().position(|(p, _)| *p == real) {
            Some(i) => i,
            None => {
                let dev = MtdDevice::open(&real)?;
                self.open.push((real, dev));
                self.open.len() - 1
            }
        };
        Ok(Some(&mut self.open[i].1))
    }
}

/// A simulation: [`SimFlash`] devices (regular files with flash semantics) standing in for the
/// MTD devices that the config's paths name, so that tests run [`DeviceStorage`]'s flash code
/// with power cuts and bad blocks. Paths it does not hold are files.
#[derive(Default)]
pub struct SimOpener {
    devices: Vec<(PathBuf, SimFlash)>,
}

impl SimOpener {
    pub fn new() -> Self {
        Self::default()
    }

    /// `path` is the simulated device `flash`.
    pub fn with(mut self, path: impl Into<PathBuf>, flash: SimFlash) -> Self {
        self.devices.push((path.into(), flash));
        self
    }

    /// The simulated device at `path` (to arm a power cut or read its counters).
    pub fn device(&mut self, path: &Path) -> Option<&mut SimFlash> {
        self.devices
            .iter_mut()
            .find(|(p, _)| p == path)
            .map(|(_, f)| f)
    }
}

impl FlashOpener for SimOpener {
    fn open(&mut self, path: &Path) -> io::Result<Option<&mut dyn Flash>> {
        Ok(self.device(path).map(|f| f as &mut dyn Flash))
    }
}

/// Files, block devices, MTD devices and UBI volumes, each as libubootenv reads and writes
/// it (module documentation). `O` opens the MTD devices: [`MtdOpener`] on the board.
#[derive(Default)]
pub struct DeviceStorage<O = MtdOpener> {
    opener: O,
    files: FileStorage,
}

impl DeviceStorage<MtdOpener> {
    /// The real devices.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<O: FlashOpener> DeviceStorage<O> {
    pub fn with_opener(opener: O) -> Self {
        DeviceStorage {
            opener,
            files: FileStorage,
        }
    }

    pub fn opener(&mut self) -> &mut O {
        &mut self.opener
    }
}

/// The volume of a UBI copy: `/dev/ubiX_Y`, or `/dev/ubiX:NAME` found by name in sysfs
/// (libubootenv's `libubootenv_ubi_update_name`). `None` when `path` is not UBI.
fn ubi_volume(path: &Path) -> io::Result<Option<PathBuf>> {
    if DeviceKind::of(path) != DeviceKind::Ubi {
        return Ok(None);
    }
    if path.to_string_lossy().starts_with("/dev/mtd") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{}: a UBI volume named by its MTD device (libubootenv then attaches UBI itself) \
                 is not supported: attach it and write /dev/ubiX:NAME",
                path.display()
            ),
        ));
    }
    crate::flash::ubi::resolve(path).map(Some)
}

impl<O: FlashOpener> EnvStorage for DeviceStorage<O> {
    fn read_at(&mut self, loc: &EnvLocation) -> io::Result<Vec<u8>> {
        if let Some(f) = self.opener.open(&loc.path)? {
            return flash::read_copy(f, loc);
        }
        if let Some(vol) = ubi_volume(&loc.path)? {
            // libubootenv_ubiread: the volume's first `size` bytes.
            let mut buf = vec![0; loc.size];
            File::open(&vol)?.read_exact_at(&mut buf, 0)?;
            return Ok(buf);
        }
        self.files.read_at(loc)
    }

    fn write_at(&mut self, loc: &EnvLocation, data: &[u8]) -> io::Result<()> {
        check_len(loc, data)?;
        if let Some(f) = self.opener.open(&loc.path)? {
            return flash::write_copy(f, loc, data);
        }
        if let Some(vol) = ubi_volume(&loc.path)? {
            // libubootenv_ubiwrite: UBI_IOCVOLUP with the copy's size, then the bytes. UBI
            // marks the volume as being updated until the last byte arrives.
            let mut v = UbiVolume::open(&vol)?;
            v.begin_update(data.len() as u64)?;
            return v.write_next(data);
        }
        self.files.write_at(loc, data)
    }

    fn medium(&mut self, loc: &EnvLocation) -> io::Result<Medium> {
        match self.opener.open(&loc.path)? {
            Some(f) => flash::medium(f, loc),
            None => Ok(Medium::FILE),
        }
    }

    fn mark_obsolete(&mut self, loc: &EnvLocation) -> io::Result<()> {
        match self.opener.open(&loc.path)? {
            Some(f) => flash::mark_obsolete(f, loc),
            None => self.files.mark_obsolete(loc),
        }
    }
}
