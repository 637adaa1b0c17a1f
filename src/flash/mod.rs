//! Raw flash, as access points have it: MTD partitions (NOR and NAND, `/dev/mtdN`) and UBI
//! volumes (`/dev/ubiX_Y`).
//!
//! Flash is not a disk. A bit can only be programmed from 1 to 0; only an erase, of a whole
//! erase block at a time, sets bits back to 1. NAND is written in whole pages, once per erase,
//! and comes with bad blocks that every writer must skip the same way (nandwrite's rule: a bad
//! block is skipped whole, and the data goes on in the next good one). The [`Flash`] trait is
//! that contract; [`mtd::MtdDevice`] is the real device (the MTD ioctls), [`sim::SimFlash`] a
//! file with the same semantics plus bad blocks and power cuts, for the tests and the bench (a
//! fake, named as one: no kernel MTD driver can run on the build machine).
//!
//! UBI volumes are different again: UBI does the erasing, wear levelling and bad-block handling
//! itself, and a volume update ([`ubi`]) is atomic: the kernel marks the volume corrupted until
//! the last of the announced bytes has arrived.

pub mod mtd;
pub mod sim;
pub mod ubi;
pub mod writer;

use std::fmt;
use std::io;

/// What an MTD device is (`mtd_info_user.type` in <mtd/mtd-abi.h>).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashType {
    Absent,
    Ram,
    Rom,
    /// NOR flash (CFI and SPI NOR): byte-writable, erase before write.
    Nor,
    /// SLC NAND: page writes, bad blocks.
    Nand,
    DataFlash,
    UbiVolume,
    /// MLC/TLC NAND.
    MlcNand,
    Other(u8),
}

impl FlashType {
    pub fn from_raw(v: u8) -> Self {
        match v {
            0 => FlashType::Absent,
            1 => FlashType::Ram,
            2 => FlashType::Rom,
            3 => FlashType::Nor,
            4 => FlashType::Nand,
            6 => FlashType::DataFlash,
            7 => FlashType::UbiVolume,
            8 => FlashType::MlcNand,
            n => FlashType::Other(n),
        }
    }

    pub fn raw(self) -> u8 {
        match self {
            FlashType::Absent => 0,
            FlashType::Ram => 1,
            FlashType::Rom => 2,
            FlashType::Nor => 3,
            FlashType::Nand => 4,
            FlashType::DataFlash => 6,
            FlashType::UbiVolume => 7,
            FlashType::MlcNand => 8,
            FlashType::Other(n) => n,
        }
    }

    /// NAND of either kind (`mtd_type_is_nand_user`): page writes and bad blocks.
    pub fn is_nand(self) -> bool {
        matches!(self, FlashType::Nand | FlashType::MlcNand)
    }
}

impl fmt::Display for FlashType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlashType::Nor => f.write_str("NOR"),
            FlashType::Nand => f.write_str("NAND"),
            FlashType::MlcNand => f.write_str("MLC NAND"),
            FlashType::Ram => f.write_str("RAM"),
            FlashType::Rom => f.write_str("ROM"),
            FlashType::DataFlash => f.write_str("DataFlash"),
            FlashType::UbiVolume => f.write_str("UBI volume"),
            FlashType::Absent => f.write_str("absent"),
            FlashType::Other(n) => write!(f, "type {n}"),
        }
    }
}

/// The geometry of a flash device (MEMGETINFO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashInfo {
    pub kind: FlashType,
    /// Bytes in the device (partition).
    pub size: u64,
    /// Bytes in one erase block.
    pub erase_size: u32,
    /// The smallest write: a NAND page (2048, 4096), 1 on CFI NOR.
    pub write_size: u32,
    /// Out-of-band bytes per page (NAND).
    pub oob_size: u32,
}

impl FlashInfo {
    /// Erase blocks in the device.
    pub fn blocks(&self) -> u64 {
        self.size / u64::from(self.erase_size.max(1))
    }

    /// Checks what the writers rely on: an erase size that is a non-zero multiple of the write
    /// size, and a size that is a whole number of erase blocks.
    pub fn validate(&self) -> Result<(), String> {
        if self.erase_size == 0 || self.write_size == 0 {
            return Err(format!(
                "erase size {} / write size {}: both must be non-zero",
                self.erase_size, self.write_size
            ));
        }
        if self.erase_size % self.write_size != 0 {
            return Err(format!(
                "erase size {:#x} is not a multiple of the write size {:#x}",
                self.erase_size, self.write_size
            ));
        }
        if self.size == 0 || self.size % u64::from(self.erase_size) != 0 {
            return Err(format!(
                "size {:#x} is not a whole number of {:#x}-byte erase blocks",
                self.size, self.erase_size
            ));
        }
        Ok(())
    }
}

/// A raw flash device: erase blocks, page writes that only clear bits, bad blocks.
///
/// Offsets and lengths follow the hardware's rules, which implementations check rather than
/// silently fix: `write_at` takes whole pages at page boundaries (`write_size`), `erase` whole
/// erase blocks. A write to flash that was not erased since its last write is a bug in the
/// caller ([`sim::SimFlash`] refuses it on NAND; real NAND corrupts the page).
pub trait Flash {
    fn info(&self) -> FlashInfo;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Programs `data` at `offset` (both multiples of the write size).
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Erases `len` bytes at `offset` (both multiples of the erase size): every byte 0xFF.
    fn erase(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// True when the erase block holding `offset` is marked bad (always false on NOR).
    fn is_bad(&mut self, offset: u64) -> io::Result<bool>;
}

impl<F: Flash + ?Sized> Flash for &mut F {
    fn info(&self) -> FlashInfo {
        (**self).info()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        (**self).write_at(offset, data)
    }
    fn erase(&mut self, offset: u64, len: u64) -> io::Result<()> {
        (**self).erase(offset, len)
    }
    fn is_bad(&mut self, offset: u64) -> io::Result<bool> {
        (**self).is_bad(offset)
    }
}

/// An `InvalidInput` error for a request that breaks the flash rules.
pub(crate) fn misaligned(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

/// Checks that `[offset, offset + len)` lies in a device of `size` bytes and is aligned to
/// `align`.
pub(crate) fn check_range(
    op: &str,
    offset: u64,
    len: u64,
    align: u32,
    size: u64,
) -> io::Result<()> {
    let align = u64::from(align.max(1));
    if offset % align != 0 || len % align != 0 {
        return Err(misaligned(format!(
            "{op} of {len:#x} bytes at {offset:#x}: not aligned to {align:#x}"
        )));
    }
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(misaligned(format!(
            "{op} of {len:#x} bytes at {offset:#x}: past the end of the {size:#x}-byte device"
        ))),
    }
}
