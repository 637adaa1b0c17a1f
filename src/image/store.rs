//! Where a downloaded image goes on the AP: the download directory (`/tmp/part.tar` on the
//! seed's AP), behind a small trait so that the state machine stays free of file I/O and the
//! simulation can use memory.
//!
//! [`FileStore`] is the real one: PRECHECK removes what an earlier attempt left, checks room
//! (statvfs of the file system, and on tmpfs the memory that is really available), then blocks
//! are appended through one fixed buffer and the file is fsynced at the end; an abort removes
//! the partial file and nothing else.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Why the store refused or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Not enough room: what is available and what is needed, in KiB.
    NoSpace {
        available_kib: u64,
        required_kib: u64,
    },
    /// The disk filled up while writing.
    DiskFull,
    /// Any other I/O failure, with what was being done.
    Io(String),
    /// The bytes themselves were refused (slot mode checks the image as it arrives): why.
    Refused(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NoSpace {
                available_kib,
                required_kib,
            } => {
                write!(
                    f,
                    "/tmp space: NOT OK available {available_kib}, required {required_kib}"
                )
            }
            StoreError::DiskFull => write!(f, "no space left on device"),
            StoreError::Io(s) | StoreError::Refused(s) => write!(f, "{s}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// What PRECHECK found, in KiB like the seed's `upgrade.sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub available_kib: u64,
    pub required_kib: u64,
}

/// The download directory as the state machine sees it.
pub trait ImageStore {
    /// The download about to start is `version`, announced by the controller, on a board
    /// running `running` (slot mode checks the image's signed head against them).
    fn begin_image(&mut self, _version: &str, _running: &str) {}
    /// What PRECHECK measures, for its log lines (`/tmp space` as the seed's `upgrade.sh`).
    fn room(&self) -> String {
        "/tmp space".into()
    }
    /// Removes leftovers of earlier attempts and checks that `required` bytes fit.
    fn precheck(&mut self, required: u64) -> Result<Space, StoreError>;
    /// Creates the download file, empty.
    fn open(&mut self) -> Result<(), StoreError>;
    /// Appends one block.
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError>;
    /// Work that may wait until the block's Response has been sent (the driver calls it before
    /// it sleeps): the file store writes out its buffer there. An error it meets comes back
    /// from the next `write` or `finish`.
    fn idle(&mut self) {}
    /// Flushes and syncs the complete file.
    fn finish(&mut self) -> Result<(), StoreError>;
    /// Removes the partial (or complete but refused) file.
    fn abort(&mut self);
    /// Where the file is, for logs.
    fn location(&self) -> String;
    /// The complete file on the file system, when the store keeps one (a primary AP serves
    /// it to its subordinates, `wtp::fleet`); a slot-mode store has none.
    fn file(&self) -> Option<PathBuf> {
        None
    }
    /// After a failed download: true when it destroyed the backup the other slot held (slot
    /// mode marks that slot `invalid` once the signed head has passed). Asking clears it.
    fn backup_lost(&mut self) -> bool {
        false
    }
}

/// The real download directory.
pub struct FileStore {
    dir: PathBuf,
    name: String,
    /// Added to the image size by PRECHECK.
    margin: u64,
    writer: Option<BufWriter<File>>,
}

impl FileStore {
    pub fn new(dir: impl Into<PathBuf>, name: impl Into<String>, margin: u64) -> Self {
        FileStore {
            dir: dir.into(),
            name: name.into(),
            margin,
            writer: None,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        StoreError::DiskFull
    } else {
        StoreError::Io(format!("{what} {}: {e}", path.display()))
    }
}

/// Free bytes for an unprivileged writer on the file system holding `dir`, and on tmpfs no
/// more than the memory really available (tmpfs lives in RAM, and `df` overstates it).
pub fn available_bytes(dir: &Path) -> Result<u64, StoreError> {
    let vfs = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| StoreError::Io(format!("statvfs {}: {e}", dir.display())))?;
    let fs_free = vfs.blocks_available() as u64 * vfs.fragment_size() as u64;
    let is_tmpfs = nix::sys::statfs::statfs(dir)
        .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        .unwrap_or(false);
    if is_tmpfs {
        if let Some(mem) = mem_available() {
            return Ok(fs_free.min(mem));
        }
    }
    Ok(fs_free)
}

/// MemAvailable from /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl ImageStore for FileStore {
    fn precheck(&mut self, required: u64) -> Result<Space, StoreError> {
        self.writer = None;
        std::fs::create_dir_all(&self.dir).map_err(|e| io_error("create", &self.dir, e))?;
        let path = self.path();
        match std::fs::remove_file(&path) {
            Ok(()) => log::info!(
                "upgrade.sh: Cleanup tmp files ... removed {}",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove", &path, e)),
        }
        let available = available_bytes(&self.dir)?;
        let space = Space {
            available_kib: available / 1024,
            required_kib: required.saturating_add(self.margin).div_ceil(1024),
        };
        if space.available_kib < space.required_kib {
            return Err(StoreError::NoSpace {
                available_kib: space.available_kib,
                required_kib: space.required_kib,
            });
        }
        Ok(space)
    }

    fn open(&mut self) -> Result<(), StoreError> {
        let path = self.path();
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io_error("open", &path, e))?;
        self.writer = Some(BufWriter::with_capacity(64 * 1024, f));
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        // Called once per block: the path is only built for an error message.
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| StoreError::Io("write before open".into()))?;
        match w.write_all(data) {
            Ok(()) => Ok(()),
            Err(e) => Err(io_error("write", &self.path(), e)),
        }
    }

    fn idle(&mut self) {
        if let Some(w) = self.writer.as_mut() {
            // Half full: write it out now rather than in the middle of a later block. A failed
            // write keeps its bytes in the buffer, and the next write or finish reports it.
            if w.buffer().len() >= w.capacity() / 2 {
                let _ = w.flush();
            }
        }
    }

    fn finish(&mut self) -> Result<(), StoreError> {
        let path = self.path();
        let w = self
            .writer
            .take()
            .ok_or_else(|| StoreError::Io("finish before open".into()))?;
        let f = w
            .into_inner()
            .map_err(|e| io_error("flush", &path, e.into_error()))?;
        f.sync_all().map_err(|e| io_error("fsync", &path, e))
    }

    fn abort(&mut self) {
        self.writer = None;
        let path = self.path();
        match std::fs::remove_file(&path) {
            Ok(()) => log::info!(
                "upgrade.sh: Cleanup tmp files ... removed {}",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("cannot remove {}: {e}", path.display()),
        }
    }

    fn location(&self) -> String {
        self.path().display().to_string()
    }

    fn file(&self) -> Option<PathBuf> {
        Some(self.path())
    }
}

/// A store in memory, for the simulation and tests (a fake: no file system involved). It keeps
/// only the length and a SHA-256 of what was written, so a large image costs no memory.
pub struct MemStore {
    /// Room, in bytes, that PRECHECK and writes check against.
    pub capacity: u64,
    pub written: u64,
    pub open: bool,
    pub finished: bool,
    pub aborts: u32,
    hasher: Option<crate::image::sha256::Sha256>,
    pub sha256: Option<[u8; 32]>,
    /// Behave like slot mode: a download that wrote anything destroyed the backup slot.
    pub writes_the_backup_slot: bool,
    wrote: bool,
}

impl MemStore {
    pub fn new(capacity: u64) -> Self {
        MemStore {
            capacity,
            written: 0,
            open: false,
            finished: false,
            aborts: 0,
            hasher: None,
            sha256: None,
            writes_the_backup_slot: false,
            wrote: false,
        }
    }
}

impl ImageStore for MemStore {
    fn precheck(&mut self, required: u64) -> Result<Space, StoreError> {
        self.wrote = false;
        let space = Space {
            available_kib: self.capacity / 1024,
            required_kib: required.div_ceil(1024),
        };
        if space.available_kib < space.required_kib {
            return Err(StoreError::NoSpace {
                available_kib: space.available_kib,
                required_kib: space.required_kib,
            });
        }
        Ok(space)
    }
    fn open(&mut self) -> Result<(), StoreError> {
        self.written = 0;
        self.open = true;
        self.finished = false;
        self.sha256 = None;
        self.hasher = Some(crate::image::sha256::Sha256::new());
        Ok(())
    }
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        if !self.open {
            return Err(StoreError::Io("write before open".into()));
        }
        if self.written + data.len() as u64 > self.capacity {
            return Err(StoreError::DiskFull);
        }
        self.written += data.len() as u64;
        self.wrote = true;
        if let Some(h) = &mut self.hasher {
            h.update(data);
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<(), StoreError> {
        self.open = false;
        self.finished = true;
        self.sha256 = self.hasher.take().map(|h| h.finish());
        Ok(())
    }
    fn abort(&mut self) {
        self.open = false;
        self.finished = false;
        self.written = 0;
        self.hasher = None;
        self.aborts += 1;
    }
    fn location(&self) -> String {
        "memory".into()
    }
    fn backup_lost(&mut self) -> bool {
        self.writes_the_backup_slot && std::mem::take(&mut self.wrote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wtpd-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn meminfo_parsing() {
        let t = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   96064 kB\n";
        assert_eq!(parse_mem_available(t), Some(96064 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn precheck_cleans_leftovers_and_refuses_what_does_not_fit() {
        let dir = tmp("precheck");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("part.tar"), b"left by an earlier attempt").unwrap();
        std::fs::write(dir.join("other"), b"not ours").unwrap();
        let mut s = FileStore::new(&dir, "part.tar", 0);
        let space = s.precheck(1024).unwrap();
        assert!(!dir.join("part.tar").exists(), "leftover removed");
        assert!(dir.join("other").exists(), "nothing else touched");
        assert!(space.available_kib >= space.required_kib);
        let e = s.precheck(u64::MAX / 4).unwrap_err();
        assert!(matches!(e, StoreError::NoSpace { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with("/tmp space: NOT OK available"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_finish_and_abort() {
        let dir = tmp("write");
        let mut s = FileStore::new(&dir, "part.tar", 0);
        s.precheck(10).unwrap();
        s.open().unwrap();
        s.write(b"hello ").unwrap();
        s.write(b"world").unwrap();
        s.finish().unwrap();
        assert_eq!(std::fs::read(dir.join("part.tar")).unwrap(), b"hello world");
        s.open().unwrap();
        s.write(b"partial").unwrap();
        s.abort();
        assert!(
            !dir.join("part.tar").exists(),
            "abort removes the partial file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_disk_is_disk_full() {
        // /dev/full answers every write with ENOSPC.
        let mut s = FileStore::new("/dev", "full", 0);
        s.writer = Some(BufWriter::with_capacity(
            16,
            OpenOptions::new().write(true).open("/dev/full").unwrap(),
        ));
        let r = s.write(&[0u8; 64]).and_then(|_| s.finish());
        assert_eq!(r, Err(StoreError::DiskFull));
    }

    #[test]
    fn a_write_error_met_while_idle_comes_back_from_the_next_call() {
        let mut s = FileStore::new("/dev", "full", 0);
        s.writer = Some(BufWriter::with_capacity(
            16,
            OpenOptions::new().write(true).open("/dev/full").unwrap(),
        ));
        s.write(&[0u8; 8]).unwrap();
        s.idle();
        assert_eq!(s.finish(), Err(StoreError::DiskFull));
    }

    #[test]
    fn idle_writes_out_a_half_full_buffer() {
        let dir = tmp("idle");
        let mut s = FileStore::new(&dir, "part.tar", 0);
        s.precheck(10).unwrap();
        s.open().unwrap();
        let len = |d: &Path| std::fs::metadata(d.join("part.tar")).unwrap().len();
        s.write(&[1u8; 1024]).unwrap();
        s.idle();
        assert_eq!(len(&dir), 0, "a little stays in the buffer");
        s.write(&[2u8; 40 * 1024]).unwrap();
        s.idle();
        assert_eq!(len(&dir), 41 * 1024, "half full goes out");
        s.finish().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
