//! Environment copies on raw flash (MTD), as libubootenv reads and writes them
//! (uboot_mtd.c: `libubootenv_mtdread`, `libubootenv_mtdwrite`,
//! `libubootenv_set_obsolete_flag`):
//!
//! - a copy occupies sectors from its offset: SECTORSIZE bytes each (the erase size when the
//!   config gives none), up to SECTORS of them ([`EnvLocation::sector_area`]);
//! - on NAND a bad sector is skipped whole and the copy goes on in the next one; on NOR there
//!   are no bad blocks and the copy is read as one run of bytes;
//! - a write erases each sector it uses, whole, then programs the copy's bytes into it: what
//!   else the sector held is not preserved (libubootenv does not preserve it either: the rest
//!   reads 0xFF afterwards). A NAND write is padded with 0xFF to whole pages, as the kernel
//!   pads libubootenv's `write()`;
//! - on NOR the old copy is then marked obsolete: its flag byte programmed to 0, in place.
//!
//! Where libubootenv's bad-block budget would let a copy run past its SECTORS (it counts only
//! the bad sectors against SECTORS, not the used ones), this refuses instead: a copy never
//! touches a sector outside its area.

use std::io;

use super::config::SectorArea;
use super::storage::{FlagScheme, Medium};
use super::EnvLocation;
use crate::flash::{Flash, FlashType};

fn invalid(loc: &EnvLocation, what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{} at {:#x}: {what}", loc.path.display(), loc.offset),
    )
}

/// The copy's sectors on this device, refusing what libubootenv refuses (devices other than
/// NOR and SLC NAND: common.c `check_env_device`) or cannot write.
fn area(flash: &dyn Flash, loc: &EnvLocation) -> io::Result<SectorArea> {
    let info = flash.info();
    if !matches!(info.kind, FlashType::Nor | FlashType::Nand) {
        return Err(invalid(
            loc,
            format!(
                "a {} device; libubootenv keeps environments on NOR and NAND only",
                info.kind
            ),
        ));
    }
    let area = loc
        .sector_area(u64::from(info.erase_size))
        .map_err(|r| invalid(loc, r))?;
    if area.end > info.size {
        return Err(invalid(
            loc,
            format!(
                "its sectors end at {:#x}, past the {:#x}-byte device",
                area.end, info.size
            ),
        ));
    }
    Ok(area)
}

/// Where the copy's bytes go: `(device offset, length)` for each sector used, bad NAND sectors
/// skipped (a bad sector is one whose first erase block is bad, as libubootenv checks).
fn extents(
    flash: &mut dyn Flash,
    loc: &EnvLocation,
) -> io::Result<(SectorArea, Vec<(u64, usize)>)> {
    let area = area(flash, loc)?;
    let nand = flash.info().kind.is_nand();
    let mut out = Vec::new();
    let (mut at, mut left) = (area.start, loc.size);
    while left > 0 {
        if at + area.sector > area.end {
            return Err(invalid(
                loc,
                format!(
                    "too many bad sectors: the copy does not fit in {:#x}..{:#x}",
                    area.start, area.end
                ),
            ));
        }
        if nand && flash.is_bad(at)? {
            at += area.sector;
            continue;
        }
        let n = left.min(area.sector as usize);
        out.push((at, n));
        left -= n;
        at += area.sector;
    }
    Ok((area, out))
}

pub(super) fn read_copy(flash: &mut dyn Flash, loc: &EnvLocation) -> io::Result<Vec<u8>> {
    let (_, parts) = extents(flash, loc)?;
    let mut buf = vec![0; loc.size];
    let mut done = 0;
    for (at, n) in parts {
        flash.read_at(at, &mut buf[done..done + n])?;
        done += n;
    }
    Ok(buf)
}

/// Erases each sector the copy uses and programs its part: sector by sector, in order, as
/// `libubootenv_mtdwrite` does. The first sector holds the CRC and the flag, so until the last
/// sector is programmed the copy's CRC does not match.
pub(super) fn write_copy(flash: &mut dyn Flash, loc: &EnvLocation, data: &[u8]) -> io::Result<()> {
    let (area, parts) = extents(flash, loc)?;
    let page = flash.info().write_size.max(1) as usize;
    let mut done = 0;
    let mut buf = Vec::new();
    for (at, n) in parts {
        flash.erase(at, area.sector)?;
        buf.clear();
        buf.extend_from_slice(&data[done..done + n]);
        buf.resize(n.div_ceil(page) * page, 0xFF);
        flash.write_at(at, &buf)?;
        done += n;
    }
    Ok(())
}

/// Programs the flag byte (after the 4-byte CRC) of the copy to 0 without erasing
/// (`libubootenv_set_obsolete_flag`). NOR only: NAND pages cannot be programmed twice. Where
/// the write size is more than a byte, the rest of the unit is written as 0xFF, which
/// programs nothing.
pub(super) fn mark_obsolete(flash: &mut dyn Flash, loc: &EnvLocation) -> io::Result<()> {
    let info = flash.info();
    if info.kind != FlashType::Nor {
        return Err(invalid(
            loc,
            format!("obsolete flags are NOR's scheme, this is {}", info.kind),
        ));
    }
    area(flash, loc)?;
    let ws = u64::from(info.write_size.max(1));
    let flag_at = loc.offset + 4;
    let unit = flag_at - flag_at % ws;
    let mut buf = vec![0xFF; ws as usize];
    buf[(flag_at - unit) as usize] = 0;
    flash.write_at(unit, &buf)
}

/// NOR: boolean flags; NAND: a counter (common.c `check_env_device`).
pub(super) fn medium(flash: &mut dyn Flash, loc: &EnvLocation) -> io::Result<Medium> {
    let a = area(flash, loc)?;
    let scheme = match flash.info().kind {
        FlashType::Nor => FlagScheme::Boolean,
        _ => FlagScheme::Incremental,
    };
    Ok(Medium {
        scheme,
        erases: Some(a.start..a.end),
    })
}
