//! Where copies are read from and written to: a trait, so that tests can cut power mid-write.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::EnvLocation;

/// Reads and writes whole environment copies. [`FileStorage`] is the real one; tests implement
/// it in memory to fail or tear the k-th write.
pub trait EnvStorage {
    /// The `loc.size` bytes at `loc.offset` of `loc.path`.
    fn read_at(&mut self, loc: &EnvLocation) -> io::Result<Vec<u8>>;
    /// Writes `data` (`loc.size` bytes) at `loc.offset` of `loc.path`, durably: when this
    /// returns `Ok`, the bytes are on the medium.
    fn write_at(&mut self, loc: &EnvLocation, data: &[u8]) -> io::Result<()>;
}

/// Files and block devices, with positioned reads and writes (`pread`/`pwrite`) and
/// `fdatasync` after each write. A file is never created, truncated or extended: a regular
/// file shorter than `offset + size` is refused, as it means a wrong config.
///
/// Refuses to write to raw MTD (`/dev/mtd*`) and UBI (`/dev/ubi*`) devices: flash there must be
/// erased before it is written (and NAND uses libubootenv's boolean flags), which this module
/// does not do. Reading them works.
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
        if data.len() != loc.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} bytes for a {}-byte copy", data.len(), loc.size),
            ));
        }
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

fn refuse_flash(path: &Path) -> io::Result<()> {
    let name = path.to_string_lossy();
    if name.starts_with("/dev/mtd") || name.starts_with("/dev/ubi") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "writing raw MTD/UBI devices (erase first, NAND boolean flags) is not supported",
        ));
    }
    Ok(())
}
