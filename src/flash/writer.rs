//! Writing an image into a raw MTD slot and reading it back, as `nandwrite` does.
//!
//! - Before the first write, [`SlotWriter::begin`] counts the device's good erase blocks and
//!   refuses an image that does not fit them, so a refusal erases nothing.
//! - Each erase block is erased just before the first write into it (NOR and NAND alike).
//! - A bad block (`MEMGETBADBLOCK`, [`Flash::is_bad`]) is skipped whole: the data goes on at the
//!   start of the next good block. [`SlotReader`] skips the same blocks, so reading the image
//!   back yields exactly the bytes written.
//! - Writes are whole pages (`write_size`); the image's tail is padded with 0xFF to a page.
//!   Whole pages are written straight from the caller's buffer, up to the end of the erase
//!   block; only a page split between two calls is copied, into the one page buffer allocated
//!   at [`SlotWriter::begin`]. Nothing is allocated per block.
//!
//! Nothing after the image's last page is erased: the blocks beyond it keep whatever they held
//! (the image formats a slot takes, squashfs and UBI images, carry their own length).
//!
//! An interrupted write leaves a slot with the new image's first blocks and garbage or old data
//! after them; the A/B order (`image::install`) has marked it `invalid` in the environment
//! before the first erase, so the bootloader never boots it.

use std::fmt;
use std::io;

use super::{Flash, FlashInfo};

/// The flash operation an I/O error came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashOp {
    Erase,
    Write,
    Read,
    BadBlockCheck,
}

impl fmt::Display for FlashOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FlashOp::Erase => "erase",
            FlashOp::Write => "write",
            FlashOp::Read => "read",
            FlashOp::BadBlockCheck => "bad-block check",
        })
    }
}

/// Why a slot write or read on raw flash failed.
#[derive(Debug)]
pub enum FlashError {
    /// The device's geometry breaks the writer's rules (see [`FlashInfo::validate`]).
    Geometry(String),
    /// The image needs more good erase blocks than the device has. Nothing was erased.
    TooLarge {
        len: u64,
        needed_blocks: u64,
        good_blocks: u64,
        bad_blocks: u64,
        erase_size: u32,
    },
    /// The device ran out of good blocks while writing (a block went bad since the count).
    NoRoom { offset: u64, written: u64 },
    /// More, or fewer, bytes than [`SlotWriter::begin`] announced.
    Length { announced: u64, got: u64 },
    /// A write that does not continue where the last one ended (the writer is sequential).
    NotSequential { expected: u64, got: u64 },
    /// A write without a [`SlotWriter::begin`] before it.
    NotStarted,
    /// An erase, write, read or bad-block check failed at this device offset.
    Io {
        op: FlashOp,
        offset: u64,
        error: io::Error,
    },
}

impl fmt::Display for FlashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlashError::Geometry(s) => write!(f, "flash geometry: {s}"),
            FlashError::TooLarge {
                len,
                needed_blocks,
                good_blocks,
                bad_blocks,
                erase_size,
            } => write!(
                f,
                "{len} bytes need {needed_blocks} erase blocks of {erase_size} bytes; the device \
                 has {good_blocks} good ones ({bad_blocks} bad): nothing was erased"
            ),
            FlashError::NoRoom { offset, written } => write!(
                f,
                "no good erase block left at {offset:#x} after {written} bytes written"
            ),
            FlashError::Length { announced, got } => {
                write!(f, "{got} bytes written, {announced} announced")
            }
            FlashError::NotSequential { expected, got } => write!(
                f,
                "write at byte {got} of the image: the flash writer is sequential and expected {expected}"
            ),
            FlashError::NotStarted => write!(f, "write before the slot write was begun"),
            FlashError::Io { op, offset, error } => write!(f, "{op} at {offset:#x}: {error}"),
        }
    }
}

impl std::error::Error for FlashError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FlashError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<FlashError> for io::Error {
    /// Wraps the error whole (callers that know it get it back with `downcast`).
    fn from(e: FlashError) -> io::Error {
        let kind = match &e {
            FlashError::Io { error, .. } => error.kind(),
            FlashError::TooLarge { .. } | FlashError::NoRoom { .. } => io::ErrorKind::Other,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

fn io_err(op: FlashOp, offset: u64) -> impl FnOnce(io::Error) -> FlashError {
    move |error| FlashError::Io { op, offset, error }
}

/// What a finished slot write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteSummary {
    /// Image bytes written (the padding of the last page not counted).
    pub bytes: u64,
    /// Erase blocks erased and written.
    pub blocks: u64,
    /// Bad blocks skipped on the way.
    pub bad_skipped: u64,
    /// Device offset after the last page written.
    pub end: u64,
}

/// Good and bad erase blocks of a device (one `is_bad` per block).
pub fn count_good_blocks<F: Flash + ?Sized>(flash: &mut F) -> Result<(u64, u64), FlashError> {
    let info = flash.info();
    info.validate().map_err(FlashError::Geometry)?;
    let es = u64::from(info.erase_size);
    let mut good = 0;
    for b in 0..info.blocks() {
        let bad = flash
            .is_bad(b * es)
            .map_err(io_err(FlashOp::BadBlockCheck, b * es))?;
        if !bad {
            good += 1;
        }
    }
    Ok((good, info.blocks() - good))
}

/// The sequential writer of one image into a whole MTD device (see the module documentation).
/// It does not own the device: each call takes it, so a caller can look at the device between
/// calls (the tests count its operations).
#[derive(Debug)]
pub struct SlotWriter {
    info: FlashInfo,
    /// The page being filled when a call ends mid-page (`write_size` bytes, allocated once).
    page: Vec<u8>,
    fill: usize,
    /// Device offset of the next page.
    pos: u64,
    /// End of the erase block erased last: `pos == erased_end` means the next write needs a
    /// fresh block.
    erased_end: u64,
    announced: u64,
    accepted: u64,
    blocks: u64,
    bad_skipped: u64,
}

impl SlotWriter {
    /// Checks that `len` bytes fit the device's good blocks and prepares to write them from its
    /// first good block on. Reads the bad-block table; erases and writes nothing.
    pub fn begin<F: Flash + ?Sized>(flash: &mut F, len: u64) -> Result<SlotWriter, FlashError> {
        let info = flash.info();
        let (good, bad) = count_good_blocks(flash)?;
        let needed = len.div_ceil(u64::from(info.erase_size));
        if needed > good {
            return Err(FlashError::TooLarge {
                len,
                needed_blocks: needed,
                good_blocks: good,
                bad_blocks: bad,
                erase_size: info.erase_size,
            });
        }
        Ok(SlotWriter {
            info,
            page: vec![0xFF; info.write_size as usize],
            fill: 0,
            pos: 0,
            erased_end: 0,
            announced: len,
            accepted: 0,
            blocks: 0,
            bad_skipped: 0,
        })
    }

    /// Image bytes taken so far.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Makes `pos` point into an erased good block: at a block boundary, skips bad blocks and
    /// erases the next good one.
    fn ensure_block<F: Flash + ?Sized>(&mut self, flash: &mut F) -> Result<(), FlashError> {
        let es = u64::from(self.info.erase_size);
        while self.pos == self.erased_end {
            if self.pos >= self.info.size {
                return Err(FlashError::NoRoom {
                    offset: self.pos,
                    written: self.accepted,
                });
            }
            let bad = flash
                .is_bad(self.pos)
                .map_err(io_err(FlashOp::BadBlockCheck, self.pos))?;
            if bad {
                self.bad_skipped += 1;
                self.pos += es;
                self.erased_end = self.pos;
                continue;
            }
            flash
                .erase(self.pos, es)
                .map_err(io_err(FlashOp::Erase, self.pos))?;
            self.erased_end = self.pos + es;
            self.blocks += 1;
        }
        Ok(())
    }

    fn program<F: Flash + ?Sized>(&mut self, flash: &mut F, data: &[u8]) -> Result<(), FlashError> {
        flash
            .write_at(self.pos, data)
            .map_err(io_err(FlashOp::Write, self.pos))?;
        self.pos += data.len() as u64;
        Ok(())
    }

    fn program_buffered_page<F: Flash + ?Sized>(
        &mut self,
        flash: &mut F,
    ) -> Result<(), FlashError> {
        self.ensure_block(flash)?;
        let page = std::mem::take(&mut self.page);
        let r = self.program(flash, &page);
        self.page = page;
        self.fill = 0;
        r
    }

    /// Writes the next bytes of the image.
    pub fn write<F: Flash + ?Sized>(
        &mut self,
        flash: &mut F,
        mut data: &[u8],
    ) -> Result<(), FlashError> {
        let total = self.accepted.saturating_add(data.len() as u64);
        if total > self.announced {
            return Err(FlashError::Length {
                announced: self.announced,
                got: total,
            });
        }
        self.accepted = total;
        let ws = self.page.len();
        while !data.is_empty() {
            if self.fill > 0 || data.len() < ws {
                let take = (ws - self.fill).min(data.len());
                self.page[self.fill..self.fill + take].copy_from_slice(&data[..take]);
                self.fill += take;
                data = &data[take..];
                if self.fill == ws {
                    self.program_buffered_page(flash)?;
                }
                continue;
            }
            self.ensure_block(flash)?;
            let room = (self.erased_end - self.pos) as usize;
            let n = room.min(data.len() / ws * ws);
            self.program(flash, &data[..n])?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Writes the last, partial page padded with 0xFF, and checks that exactly the announced
    /// bytes arrived.
    pub fn finish<F: Flash + ?Sized>(&mut self, flash: &mut F) -> Result<WriteSummary, FlashError> {
        if self.accepted != self.announced {
            return Err(FlashError::Length {
                announced: self.announced,
                got: self.accepted,
            });
        }
        if self.fill > 0 {
            let fill = self.fill;
            self.page[fill..].fill(0xFF);
            self.program_buffered_page(flash)?;
        }
        Ok(WriteSummary {
            bytes: self.accepted,
            blocks: self.blocks,
            bad_skipped: self.bad_skipped,
            end: self.pos,
        })
    }
}

/// Reads an image back from an MTD device, skipping the bad blocks [`SlotWriter`] skipped.
/// Offsets are the image's; sequential reads cost one `is_bad` per block, a read before the
/// last one starts over from the first block.
#[derive(Debug, Clone)]
pub struct SlotReader {
    erase_size: u64,
    blocks: u64,
    /// The last mapping found: image block → device block.
    cursor: Option<(u64, u64)>,
}

impl SlotReader {
    pub fn new(info: FlashInfo) -> SlotReader {
        SlotReader {
            erase_size: u64::from(info.erase_size.max(1)),
            blocks: info.blocks(),
            cursor: None,
        }
    }

    /// The first good device block at or after `from`.
    fn next_good<F: Flash + ?Sized>(
        &self,
        flash: &mut F,
        mut from: u64,
    ) -> Result<Option<u64>, FlashError> {
        while from < self.blocks {
            let off = from * self.erase_size;
            if !flash
                .is_bad(off)
                .map_err(io_err(FlashOp::BadBlockCheck, off))?
            {
                return Ok(Some(from));
            }
            from += 1;
        }
        Ok(None)
    }

    /// The device block holding image block `logical`, `None` past the last good block.
    fn physical<F: Flash + ?Sized>(
        &mut self,
        flash: &mut F,
        logical: u64,
    ) -> Result<Option<u64>, FlashError> {
        let (mut l, mut p) = match self.cursor {
            Some((l, p)) if l <= logical => (l, p),
            _ => match self.next_good(flash, 0)? {
                Some(p) => (0, p),
                None => return Ok(None),
            },
        };
        while l < logical {
            match self.next_good(flash, p + 1)? {
                Some(next) => {
                    p = next;
                    l += 1;
                }
                None => return Ok(None),
            }
        }
        self.cursor = Some((l, p));
        Ok(Some(p))
    }

    /// Reads image bytes at `offset`; fewer than `buf.len()` (0) past the device's good blocks.
    pub fn read_at<F: Flash + ?Sized>(
        &mut self,
        flash: &mut F,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, FlashError> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let Some(block) = self.physical(flash, at / self.erase_size)? else {
                break;
            };
            let within = at % self.erase_size;
            let n = ((self.erase_size - within) as usize).min(buf.len() - done);
            let dev = block * self.erase_size + within;
            flash
                .read_at(dev, &mut buf[done..done + n])
                .map_err(io_err(FlashOp::Read, dev))?;
            done += n;
        }
        Ok(done)
    }
}

/// A device used as a slot: its writer (between [`FlashSlot::begin`] and
/// [`FlashSlot::finish`]) and its reader. `image::install::Disk` keeps one per MTD slot; the
/// tests use it over [`super::sim::SimFlash`].
pub struct FlashSlot<F: Flash> {
    flash: F,
    writer: Option<SlotWriter>,
    reader: SlotReader,
}

impl<F: Flash> FlashSlot<F> {
    pub fn new(flash: F) -> FlashSlot<F> {
        let reader = SlotReader::new(flash.info());
        FlashSlot {
            flash,
            writer: None,
            reader,
        }
    }

    pub fn flash(&mut self) -> &mut F {
        &mut self.flash
    }

    pub fn into_inner(self) -> F {
        self.flash
    }

    /// Starts writing an image of exactly `len` bytes (the fit check: nothing is erased when it
    /// refuses).
    pub fn begin(&mut self, len: u64) -> Result<(), FlashError> {
        self.writer = None;
        self.writer = Some(SlotWriter::begin(&mut self.flash, len)?);
        Ok(())
    }

    /// Writes image bytes at image offset `offset`, which must continue the last write.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), FlashError> {
        let w = self.writer.as_mut().ok_or(FlashError::NotStarted)?;
        if offset != w.accepted() {
            return Err(FlashError::NotSequential {
                expected: w.accepted(),
                got: offset,
            });
        }
        w.write(&mut self.flash, data)
    }

    /// Writes the padded tail page and ends the write.
    pub fn finish(&mut self) -> Result<WriteSummary, FlashError> {
        let mut w = self.writer.take().ok_or(FlashError::NotStarted)?;
        w.finish(&mut self.flash)
    }

    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, FlashError> {
        self.reader.read_at(&mut self.flash, offset, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::super::sim::{Cut, SimFlash};
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("wtpd-flashwriter-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[3] ^ seed)
            .collect()
    }

    /// Writes `img` in pieces of `piece` bytes, reads it back in pieces of `rpiece`.
    fn roundtrip(f: &mut SimFlash, img: &[u8], piece: usize, rpiece: usize) -> WriteSummary {
        let mut w = SlotWriter::begin(f, img.len() as u64).unwrap();
        for c in img.chunks(piece) {
            w.write(f, c).unwrap();
        }
        let s = w.finish(f).unwrap();
        let mut r = SlotReader::new(f.info());
        let mut back = vec![0u8; img.len()];
        let mut off = 0;
        while off < img.len() {
            let n = rpiece.min(img.len() - off);
            assert_eq!(
                r.read_at(f, off as u64, &mut back[off..off + n]).unwrap(),
                n
            );
            off += n;
        }
        assert!(back == img, "read-back differs");
        s
    }

    #[test]
    fn nand_skips_bad_blocks_pads_the_tail_and_reads_back() {
        let p = tmp("nand");
        let info = SimFlash::nand(16 * 64 * 512, 512);
        let es = info.erase_size as usize;
        let mut f = SimFlash::create(&p, info)
            .unwrap()
            .with_bad_blocks(&[0, 3, 4]);
        // Over five blocks, not a whole page at the end, written in odd pieces.
        let img = data(5 * es + 700, 1);
        let s = roundtrip(&mut f, &img, 1000, 777);
        assert_eq!(s.bad_skipped, 3);
        assert_eq!(s.blocks, 6);
        assert_eq!(
            s.end,
            (8 * es + 1024) as u64,
            "blocks 1, 2, 5..=8; two pages in the last"
        );
        // The tail page is padded with 0xFF, the bad blocks were never touched.
        let mut tail = vec![0u8; 1024];
        f.read_at(8 * es as u64, &mut tail).unwrap();
        assert_eq!(&tail[..700], &img[5 * es..]);
        assert!(tail[700..].iter().all(|&b| b == 0xFF));
        assert_eq!(f.stats().erases, 6);
        assert_eq!(f.stats().page_writes, (5 * es / 512 + 2) as u64);
        // Big pieces and reads that start over (a read before the cursor).
        let mut f = SimFlash::create(&p, info).unwrap().with_bad_blocks(&[2]);
        roundtrip(&mut f, &img, 3 * es + 5, es + 3);
        let mut r = SlotReader::new(info);
        let mut b = [0u8; 4];
        r.read_at(&mut f, 3 * es as u64, &mut b).unwrap();
        r.read_at(&mut f, 10, &mut b).unwrap();
        assert_eq!(b, img[10..14]);
    }

    #[test]
    fn nor_writes_straight_through() {
        let p = tmp("nor");
        let info = SimFlash::nor(8 * 65536, 65536);
        let mut f = SimFlash::create(&p, info).unwrap();
        // Slot full of old data: each block is erased before it is written.
        f.write_at(0, &vec![0x12; 8 * 65536]).unwrap();
        let img = data(3 * 65536 + 1, 7);
        let s = roundtrip(&mut f, &img, 128 << 10, 4096);
        assert_eq!((s.blocks, s.bad_skipped, s.end), (4, 0, 3 * 65536 + 1));
    }

    #[test]
    fn too_large_for_the_good_blocks_is_refused_before_any_erase() {
        let p = tmp("full");
        let info = SimFlash::nand(8 * 64 * 512, 512);
        let es = u64::from(info.erase_size);
        let mut f = SimFlash::create(&p, info).unwrap().with_bad_blocks(&[5]);
        f.cut(Cut::After(0)); // any erase or write would fail
        let e = SlotWriter::begin(&mut f, 7 * es + 1).unwrap_err();
        assert!(
            matches!(
                e,
                FlashError::TooLarge {
                    needed_blocks: 8,
                    good_blocks: 7,
                    bad_blocks: 1,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(f.ops(), 0);
        // Exactly the good blocks fit.
        let mut f = SimFlash::open(&p, info, &[5]).unwrap();
        let img = data(7 * es as usize, 3);
        roundtrip(&mut f, &img, 4096, 4096);
    }

    #[test]
    fn length_order_and_errors_are_reported_with_context() {
        let p = tmp("errs");
        let info = SimFlash::nand(4 * 64 * 512, 512);
        let f = SimFlash::create(&p, info).unwrap();
        let mut slot = FlashSlot::new(f);
        assert!(matches!(
            slot.write_at(0, &[1]),
            Err(FlashError::NotStarted)
        ));
        slot.begin(1000).unwrap();
        slot.write_at(0, &[1; 600]).unwrap();
        assert!(matches!(
            slot.write_at(0, &[1; 10]),
            Err(FlashError::NotSequential {
                expected: 600,
                got: 0
            })
        ));
        assert!(matches!(
            slot.write_at(600, &[1; 401]),
            Err(FlashError::Length { .. })
        ));
        slot.write_at(600, &[1; 300]).unwrap();
        assert!(matches!(
            slot.finish(),
            Err(FlashError::Length {
                announced: 1000,
                got: 900
            })
        ));
        // A power cut during a write: the error names the operation and the offset.
        slot.begin(1024).unwrap();
        slot.flash().cut(Cut::During(2));
        let e = slot.write_at(0, &[0; 1024]).unwrap_err();
        assert!(e.to_string().starts_with("write at 0x0: "), "{e}");
        let io: io::Error = e.into();
        assert!(io
            .get_ref()
            .and_then(|e| e.downcast_ref::<FlashError>())
            .is_some());
    }
}
