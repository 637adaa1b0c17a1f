//! A simulated MTD device: a regular file with raw flash's rules, bad blocks and power cuts.
//!
//! This is a fake, named as one: the build machine has no MTD driver (no kernel modules), and
//! the tests need to cut power at every erase and every page write. It keeps the rules a real
//! device enforces or punishes, so that code that passes here does the right thing on flash:
//!
//! - an erase sets a whole erase block to 0xFF; a write can only clear bits (NOR: the stored
//!   byte becomes `old & new`); a NAND page can be written once per erase (a write to a page
//!   that is not all 0xFF is refused, where real NAND would corrupt it);
//! - offsets and lengths must be aligned (pages for writes, erase blocks for erases);
//! - bad blocks (NAND) refuse erases and writes and report themselves through `is_bad`;
//! - [`Cut`]: after the k-th erase or page write, or during it, the power goes: a torn erase
//!   leaves the block's bytes undefined (pseudo-random), a torn write programs only the first
//!   half of its page; every later operation fails as on a dead device. Reopening the file is
//!   the next boot.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{check_range, Flash, FlashInfo, FlashType};

/// When the simulated power goes. Operations (erases of one block, writes of one page) are
/// counted from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Operations 1..=n complete; the power goes before operation n + 1.
    After(u64),
    /// Operations 1..n complete; operation n is torn.
    During(u64),
}

/// Counts of what reached the medium.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub erases: u64,
    pub page_writes: u64,
    pub bytes_read: u64,
}

/// A file with flash semantics (see the module documentation).
pub struct SimFlash {
    file: File,
    info: FlashInfo,
    bad: Vec<u64>,
    cut: Option<Cut>,
    ops: u64,
    dead: bool,
    stats: SimStats,
    page: Vec<u8>,
    /// One bit per program unit ([`SimFlash::unit`]): erased and not written since. A write
    /// into fresh units needs no read of the old bytes (they are 0xFF), which keeps the
    /// simulation's cost near that of the file writes themselves. Unknown after `open` (the
    /// bytes are then read and checked).
    fresh: Vec<u64>,
}

impl SimFlash {
    /// A NOR device: write size 1, no bad blocks.
    pub fn nor(size: u64, erase_size: u32) -> FlashInfo {
        FlashInfo {
            kind: FlashType::Nor,
            size,
            erase_size,
            write_size: 1,
            oob_size: 0,
        }
    }

    /// A NAND device with `page`-byte pages and 64 of them per erase block.
    pub fn nand(size: u64, page: u32) -> FlashInfo {
        FlashInfo {
            kind: FlashType::Nand,
            size,
            erase_size: page * 64,
            write_size: page,
            oob_size: page / 32,
        }
    }

    /// Creates (or overwrites) `path` as an erased device of this geometry.
    pub fn create(path: &Path, info: FlashInfo) -> io::Result<SimFlash> {
        info.validate().map_err(super::misaligned)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let block = vec![0xFF; info.erase_size as usize];
        for b in 0..info.blocks() {
            file.write_all_at(&block, b * u64::from(info.erase_size))?;
        }
        let mut f = Self::from_file(file, info, &[])?;
        f.set_fresh(0, info.size, true);
        Ok(f)
    }

    /// Opens an existing device file (the next boot after a cut), with these bad blocks
    /// (erase-block indices).
    pub fn open(path: &Path, info: FlashInfo, bad_blocks: &[u64]) -> io::Result<SimFlash> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        if file.metadata()?.len() != info.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: {} bytes, the geometry says {}",
                    path.display(),
                    file.metadata()?.len(),
                    info.size
                ),
            ));
        }
        Self::from_file(file, info, bad_blocks)
    }

    fn from_file(file: File, info: FlashInfo, bad_blocks: &[u64]) -> io::Result<SimFlash> {
        info.validate().map_err(super::misaligned)?;
        let mut bad = bad_blocks.to_vec();
        bad.sort_unstable();
        bad.dedup();
        Ok(SimFlash {
            file,
            info,
            bad,
            cut: None,
            ops: 0,
            dead: false,
            stats: SimStats::default(),
            page: vec![0; info.write_size as usize],
            fresh: vec![0; (info.size / Self::unit(&info)).div_ceil(64) as usize],
        })
    }

    /// The unit of the `fresh` bitmap and of a write operation: a NAND page; on NOR, up to
    /// 4 KiB (a write of CFI buffer writes, as one cut sees it).
    fn unit(info: &FlashInfo) -> u64 {
        if info.kind.is_nand() {
            u64::from(info.write_size)
        } else {
            u64::from(info.erase_size.min(4096))
        }
    }

    /// Marks the units of `[offset, offset + len)` fresh (`true`) or not.
    fn set_fresh(&mut self, offset: u64, len: u64, fresh: bool) {
        let unit = Self::unit(&self.info);
        for u in offset / unit..(offset + len).div_ceil(unit) {
            let (w, b) = ((u / 64) as usize, u % 64);
            if fresh {
                self.fresh[w] |= 1 << b;
            } else {
                self.fresh[w] &= !(1 << b);
            }
        }
    }

    /// True when every unit of `[offset, offset + len)` is fresh.
    fn is_fresh(&self, offset: u64, len: u64) -> bool {
        let unit = Self::unit(&self.info);
        (offset / unit..(offset + len).div_ceil(unit))
            .all(|u| self.fresh[(u / 64) as usize] & (1 << (u % 64)) != 0)
    }

    /// Marks erase blocks bad (NAND only; a NOR device has none).
    pub fn with_bad_blocks(mut self, blocks: &[u64]) -> Self {
        self.bad.extend_from_slice(blocks);
        self.bad.sort_unstable();
        self.bad.dedup();
        self
    }

    /// Arms a power cut (see [`Cut`]), counting operations from now.
    pub fn cut(&mut self, cut: Cut) {
        self.cut = Some(cut);
        self.ops = 0;
    }

    /// Erases and page writes since the cut was armed (or since opening).
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// True once the simulated power has gone.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    pub fn stats(&self) -> SimStats {
        self.stats
    }

    fn block_of(&self, offset: u64) -> u64 {
        offset / u64::from(self.info.erase_size)
    }

    fn dead_error() -> io::Error {
        io::Error::other("simulated power cut: the device is gone")
    }

    /// Counts one operation; `Ok(true)` when it must be torn, `Err` when the power is gone.
    fn begin_op(&mut self) -> io::Result<bool> {
        if self.dead {
            return Err(Self::dead_error());
        }
        self.ops += 1;
        match self.cut {
            Some(Cut::After(n)) if self.ops > n => {
                self.dead = true;
                Err(Self::dead_error())
            }
            Some(Cut::During(n)) if self.ops == n => {
                self.dead = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn refuse_bad(&self, op: &str, offset: u64) -> io::Result<()> {
        let block = self.block_of(offset);
        if self.bad.binary_search(&block).is_ok() {
            return Err(io::Error::other(format!(
                "{op} at {offset:#x}: erase block {block} is bad"
            )));
        }
        Ok(())
    }

    fn program_page(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.refuse_bad("write", offset)?;
        let torn = self.begin_op()?;
        let n = data.len();
        let mut page = std::mem::take(&mut self.page);
        page.resize(n, 0xFF);
        let fresh = self.is_fresh(offset, n as u64);
        if fresh {
            page.fill(0xFF);
        } else {
            self.file.read_exact_at(&mut page, offset)?;
        }
        self.set_fresh(offset, n as u64, false);
        if self.info.kind.is_nand() && page.iter().any(|&b| b != 0xFF) {
            self.page = page;
            return Err(io::Error::other(format!(
                "write at {offset:#x}: NAND page written twice without an erase"
            )));
        }
        let programmed = if torn { n / 2 } else { n };
        for (old, new) in page[..programmed].iter_mut().zip(data) {
            *old &= *new;
        }
        let result = self.file.write_all_at(&page[..programmed], offset);
        self.page = page;
        result?;
        self.stats.page_writes += 1;
        if torn {
            return Err(Self::dead_error());
        }
        Ok(())
    }
}

/// Undefined bytes for a torn erase: a deterministic pseudo-random pattern (xorshift).
fn scramble(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for b in buf {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

impl Flash for SimFlash {
    fn info(&self) -> FlashInfo {
        self.info
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.dead {
            return Err(Self::dead_error());
        }
        check_range("read", offset, buf.len() as u64, 1, self.info.size)?;
        self.file.read_exact_at(buf, offset)?;
        self.stats.bytes_read += buf.len() as u64;
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.dead {
            return Err(Self::dead_error());
        }
        let ws = self.info.write_size;
        check_range("write", offset, data.len() as u64, ws, self.info.size)?;
        // One operation per page: on NOR (write size 1) per erase-block-sized piece instead,
        // which is what a cut between CFI buffer writes looks like at this scale.
        let step = if self.info.kind.is_nand() {
            ws as usize
        } else {
            (self.info.erase_size as usize).min(4096)
        };
        let mut done = 0;
        while done < data.len() {
            let n = step.min(data.len() - done);
            self.program_page(offset + done as u64, &data[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn erase(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if self.dead {
            return Err(Self::dead_error());
        }
        let es = self.info.erase_size;
        check_range("erase", offset, len, es, self.info.size)?;
        let mut block = vec![0xFF; es as usize];
        let mut at = offset;
        while at < offset + len {
            self.refuse_bad("erase", at)?;
            let torn = self.begin_op()?;
            if torn {
                scramble(&mut block, at ^ self.ops.rotate_left(32));
            }
            self.file.write_all_at(&block, at)?;
            self.set_fresh(at, u64::from(es), !torn);
            self.stats.erases += 1;
            if torn {
                return Err(Self::dead_error());
            }
            at += u64::from(es);
        }
        Ok(())
    }

    fn is_bad(&mut self, offset: u64) -> io::Result<bool> {
        if self.dead {
            return Err(Self::dead_error());
        }
        check_range("bad-block check", offset, 0, 1, self.info.size)?;
        Ok(self.bad.binary_search(&self.block_of(offset)).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("wtpd-simflash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn nor_writes_only_clear_bits_and_erase_sets_them() {
        let p = tmp("nor");
        let mut f = SimFlash::create(&p, SimFlash::nor(4 * 4096, 4096)).unwrap();
        f.write_at(10, &[0b1010_1010]).unwrap();
        f.write_at(10, &[0b0110_0110]).unwrap();
        let mut b = [0u8; 1];
        f.read_at(10, &mut b).unwrap();
        assert_eq!(b[0], 0b0010_0010, "a second write ANDs into the first");
        f.erase(0, 4096).unwrap();
        f.read_at(10, &mut b).unwrap();
        assert_eq!(b[0], 0xFF);
        assert!(f.erase(100, 4096).is_err(), "unaligned erase refused");
        assert!(
            f.erase(4096 * 4, 4096).is_err(),
            "erase past the end refused"
        );
        assert_eq!(f.stats().erases, 1);
    }

    #[test]
    fn nand_pages_are_written_whole_and_once_and_bad_blocks_refuse() {
        let p = tmp("nand");
        let info = SimFlash::nand(8 * 64 * 512, 512);
        let mut f = SimFlash::create(&p, info).unwrap().with_bad_blocks(&[2]);
        assert!(
            f.write_at(0, &[0u8; 100]).is_err(),
            "a partial page is refused"
        );
        f.write_at(512, &[0x55; 512]).unwrap();
        let again = f.write_at(512, &[0x55; 512]).unwrap_err();
        assert!(again.to_string().contains("twice"), "{again}");
        let bad = 2 * u64::from(info.erase_size);
        assert!(f.is_bad(bad).unwrap());
        assert!(!f.is_bad(0).unwrap());
        assert!(f.erase(bad, u64::from(info.erase_size)).is_err());
        assert!(f.write_at(bad, &[0; 512]).is_err());
    }

    #[test]
    fn a_cut_stops_the_device_and_a_torn_erase_leaves_garbage() {
        let p = tmp("cut");
        let info = SimFlash::nor(4 * 4096, 4096);
        let mut f = SimFlash::create(&p, info).unwrap();
        f.write_at(0, &[0u8; 4096]).unwrap();
        f.cut(Cut::During(1));
        assert!(f.erase(0, 4096).is_err());
        assert!(f.is_dead());
        assert!(
            f.read_at(0, &mut [0u8; 4]).is_err(),
            "a dead device reads nothing"
        );
        let mut f = SimFlash::open(&p, info, &[]).unwrap();
        let mut block = vec![0u8; 4096];
        f.read_at(0, &mut block).unwrap();
        assert!(block.iter().any(|&b| b != 0xFF) && block.iter().any(|&b| b != 0));
        // After(1): the first erase lands, the second never starts.
        f.cut(Cut::After(1));
        assert!(f.erase(0, 8192).is_err());
        let mut f = SimFlash::open(&p, info, &[]).unwrap();
        f.read_at(0, &mut block).unwrap();
        assert!(block.iter().all(|&b| b == 0xFF));
    }
}
