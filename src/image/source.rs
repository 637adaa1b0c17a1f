//! The images acsim serves: a folder laid out like the seed's controller (one file per AP
//! hardware type, `ap1g4 ap1g8 ...`, plus `version.info` with the version they carry), behind a
//! trait so that the AC state machine reads blocks without doing file I/O itself.
//!
//! A source may be remote ([`crate::fetch::spool::RemoteSource`]): the image arrives from a
//! TFTP, SFTP or HTTPS server while the AC serves it. Such a source answers
//! [`SourceError::Pending`] when what was asked has not arrived yet; the AC then waits, and the
//! runtime calls [`crate::ac::Ac::source_progress`] when more has arrived.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use openssl::hash::{Hasher, MessageDigest};

/// What the AC tells the AP in Image Information (RFC 5415 §4.6.31: size and MD5). A source
/// that streams from a server may know the size (TFTP tsize, SFTP stat, HTTP Content-Length)
/// but not the MD5 until the end: the AC then omits Image Information, which is optional in
/// the Image Data Response (§9.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub size: Option<u64>,
    pub md5: Option<[u8; 16]>,
}

/// Why an image could not be served. The texts follow the seed's controller log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// `Failed to download file PATH: No such file or directory`.
    NotFound(String),
    /// The file is larger than Image Information can announce (4 GiB).
    TooLarge(String),
    Io(String),
    /// A remote download failed: the whole message, in the seed's words
    /// (`Failed to download file tftp://HOST/PATH: Timed out`).
    Failed(String),
    /// Not there yet: the image is still arriving from its server. Ask again after progress.
    Pending,
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceError::NotFound(p) => {
                write!(f, "Failed to download file {p}: No such file or directory")
            }
            SourceError::TooLarge(p) => write!(f, "Failed to download file {p}: larger than 4 GiB"),
            SourceError::Io(s) | SourceError::Failed(s) => write!(f, "{s}"),
            SourceError::Pending => write!(f, "the image is still arriving"),
        }
    }
}

impl std::error::Error for SourceError {}

/// Images by name (hardware type).
pub trait ImageSource {
    /// Prepares `name` for serving and says its size and MD5 as far as known.
    /// [`SourceError::Pending`]: the server has not answered yet; ask again after progress.
    fn open(&mut self, name: &str) -> Result<ImageInfo, SourceError>;
    /// Reads up to `buf.len()` bytes of `name` at `offset`. A remote source fills `buf`
    /// whole except at the end of the image, and answers [`SourceError::Pending`] until it can.
    fn read_at(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> Result<usize, SourceError>;
    /// The image's whole size once it is certain (a remote download that has ended); the AC
    /// marks the block that reaches it as the last one. Sources whose `open` gives the size
    /// need not answer.
    fn total(&mut self, _name: &str) -> Option<u64> {
        None
    }
    /// Drops what the source keeps for images no transfer uses any more (`in_use` says which
    /// are), so that the next request for them starts afresh.
    fn retain(&mut self, _in_use: &dyn Fn(&str) -> bool) {}
}

/// Reads `version.info` of an image folder: the version its images carry.
pub fn folder_version(dir: &Path) -> Result<String, SourceError> {
    let p = dir.join("version.info");
    let text = std::fs::read_to_string(&p)
        .map_err(|e| SourceError::Io(format!("{}: {e}", p.display())))?;
    let v = text.trim();
    if v.is_empty() {
        return Err(SourceError::Io(format!("{} is empty", p.display())));
    }
    Ok(v.to_string())
}

struct Open {
    file: File,
    info: ImageInfo,
    /// (length, modification time) when the MD5 was computed.
    stamp: (u64, Option<std::time::SystemTime>),
    ahead: ReadAhead,
}

/// Read-ahead for the transfers reading one file: a few windows, each following one reader.
/// A 1 KiB block read from the page cache is a system call; on the controller's side of a
/// stop-and-wait transfer it sits between the WTP's Response and the next Request, and a
/// window turns 32 of them into one. Readers that do not read sequentially, or more readers
/// than windows, still get the right bytes, only with more reading.
struct ReadAhead {
    windows: Vec<Window>,
    /// Counts reads, for the least recently used window.
    tick: u64,
    /// Windows filled from the file (reads that no window held).
    fills: u64,
}

struct Window {
    at: u64,
    /// Bytes held; fewer than the window's size at the end of the file.
    len: usize,
    buf: Box<[u8]>,
    used: u64,
}

/// The size of a window, and how many an image keeps at most (memory: 32 KiB per reader,
/// up to 4 MiB per open image). Windows are added while every one is in use by a reader:
/// with a fixed four, the hundred transfers of the scale bench (about fourteen readers per
/// image) evicted each other's windows, and every 1 KiB block cost a 32 KiB read.
const WINDOW: usize = 32 * 1024;
const WINDOWS: usize = 128;

impl ReadAhead {
    fn new() -> Self {
        ReadAhead {
            windows: Vec::new(),
            tick: 0,
            fills: 0,
        }
    }

    fn read_at(&mut self, file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.len() > WINDOW {
            return file.read_at(buf, offset);
        }
        self.tick += 1;
        let holds = |w: &Window| {
            let end = w.at + w.len as u64;
            // All of the range, or up to the end of the file.
            w.at <= offset
                && (offset + buf.len() as u64 <= end || (w.len < WINDOW && offset <= end))
        };
        let i = match self.windows.iter().position(holds) {
            Some(i) => i,
            None => {
                let i = self.slot_for(offset);
                self.fills += 1;
                let w = &mut self.windows[i];
                w.at = offset;
                w.len = read_full(file, offset, &mut w.buf)?;
                i
            }
        };
        let w = &mut self.windows[i];
        w.used = self.tick;
        let start = (offset - w.at) as usize;
        let n = buf.len().min(w.len - start);
        buf[..n].copy_from_slice(&w.buf[start..start + n]);
        Ok(n)
    }

    /// The window to refill for a read at `offset`: the one that reader has just finished,
    /// else a new one, else the least recently used.
    fn slot_for(&mut self, offset: u64) -> usize {
        if let Some(i) = self
            .windows
            .iter()
            .position(|w| w.at <= offset && offset <= w.at + w.len as u64)
        {
            return i;
        }
        // The least recently used window is still some reader's when it was used within the
        // last round of reads (readers take turns): then another window is added.
        let lru = self
            .windows
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.used)
            .map(|(i, w)| (i, w.used));
        let n = self.windows.len() as u64;
        let live = lru.is_some_and(|(_, used)| self.tick.saturating_sub(used) <= 2 * n);
        if self.windows.len() < WINDOWS && (lru.is_none() || live) {
            self.windows.push(Window {
                at: 0,
                len: 0,
                buf: vec![0u8; WINDOW].into_boxed_slice(),
                used: 0,
            });
            return self.windows.len() - 1;
        }
        lru.map_or(0, |(i, _)| i)
    }
}

/// Reads from `offset` until `buf` is full or the file ends (pread: one system call, not a
/// seek and a read).
fn read_full(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A folder of images on disk. The MD5 of each image is computed once (one streaming pass) and
/// kept while the file's size and modification time stay the same.
pub struct FolderSource {
    dir: PathBuf,
    open: HashMap<String, Open>,
}

impl FolderSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FolderSource {
            dir: dir.into(),
            open: HashMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// An image name that is safe as a file name: no path, no dot-dot.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && name != "."
        && name != ".."
}

impl ImageSource for FolderSource {
    fn open(&mut self, name: &str) -> Result<ImageInfo, SourceError> {
        let path = self.dir.join(name);
        let shown = path.display().to_string();
        if !valid_name(name) {
            return Err(SourceError::NotFound(shown));
        }
        let mut file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SourceError::NotFound(shown.clone()),
            _ => SourceError::Io(format!("{shown}: {e}")),
        })?;
        let meta = file
            .metadata()
            .map_err(|e| SourceError::Io(format!("{shown}: {e}")))?;
        if !meta.is_file() {
            return Err(SourceError::NotFound(shown));
        }
        let stamp = (meta.len(), meta.modified().ok());
        if let Some(o) = self.open.get(name) {
            if o.stamp == stamp {
                return Ok(o.info);
            }
        }
        if meta.len() > u32::MAX as u64 {
            return Err(SourceError::TooLarge(shown));
        }
        let mut h =
            Hasher::new(MessageDigest::md5()).map_err(|e| SourceError::Io(e.to_string()))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| SourceError::Io(format!("{shown}: {e}")))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n])
                .map_err(|e| SourceError::Io(e.to_string()))?;
        }
        let digest = h.finish().map_err(|e| SourceError::Io(e.to_string()))?;
        let mut md5 = [0u8; 16];
        md5.copy_from_slice(&digest);
        let info = ImageInfo {
            size: Some(meta.len()),
            md5: Some(md5),
        };
        self.open.insert(
            name.to_string(),
            Open {
                file,
                info,
                stamp,
                ahead: ReadAhead::new(),
            },
        );
        Ok(info)
    }

    fn read_at(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> Result<usize, SourceError> {
        let o = self
            .open
            .get_mut(name)
            .ok_or_else(|| SourceError::Io(format!("{name} is not open")))?;
        o.ahead
            .read_at(&o.file, offset, buf)
            .map_err(|e| SourceError::Io(format!("{}: {e}", self.dir.join(name).display())))
    }
}

/// Generated images for the simulation and tests (a fake: no files). Byte `i` of image `name` is
/// a function of the name and `i`, so images of any size cost no memory.
pub struct SyntheticSource {
    pub sizes: HashMap<String, u64>,
}

impl SyntheticSource {
    pub fn byte(name: &str, i: u64) -> u8 {
        let seed = name
            .bytes()
            .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
        let x = (i ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (x >> 56) as u8
    }

    /// The whole content of an image (for checks in tests).
    pub fn content(name: &str, size: u64) -> Vec<u8> {
        (0..size).map(|i| Self::byte(name, i)).collect()
    }
}

impl ImageSource for SyntheticSource {
    fn open(&mut self, name: &str) -> Result<ImageInfo, SourceError> {
        let size = *self
            .sizes
            .get(name)
            .ok_or_else(|| SourceError::NotFound(format!("synthetic/{name}")))?;
        let mut h =
            Hasher::new(MessageDigest::md5()).map_err(|e| SourceError::Io(e.to_string()))?;
        let mut buf = [0u8; 4096];
        let mut i = 0;
        while i < size {
            let n = (size - i).min(buf.len() as u64) as usize;
            for (k, b) in buf[..n].iter_mut().enumerate() {
                *b = Self::byte(name, i + k as u64);
            }
            h.update(&buf[..n])
                .map_err(|e| SourceError::Io(e.to_string()))?;
            i += n as u64;
        }
        let mut md5 = [0u8; 16];
        md5.copy_from_slice(&h.finish().map_err(|e| SourceError::Io(e.to_string()))?);
        Ok(ImageInfo {
            size: Some(size),
            md5: Some(md5),
        })
    }

    fn read_at(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> Result<usize, SourceError> {
        let size = *self
            .sizes
            .get(name)
            .ok_or_else(|| SourceError::NotFound(format!("synthetic/{name}")))?;
        let n = size.saturating_sub(offset).min(buf.len() as u64) as usize;
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = Self::byte(name, offset + k as u64);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_serves_files_and_names_missing_ones_as_the_seed_does() {
        let dir = std::env::temp_dir().join(format!("wtpd-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ap1g8"), b"0123456789").unwrap();
        std::fs::write(dir.join("version.info"), b"17.12.1.5\n").unwrap();
        let mut s = FolderSource::new(&dir);
        assert_eq!(folder_version(&dir).unwrap(), "17.12.1.5");
        let info = s.open("ap1g8").unwrap();
        assert_eq!(info.size, Some(10));
        assert_eq!(
            &info.md5.unwrap()[..],
            &openssl::hash::hash(MessageDigest::md5(), b"0123456789").unwrap()[..]
        );
        let mut buf = [0u8; 4];
        assert_eq!(s.read_at("ap1g8", 8, &mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"89");
        let e = s.open("ap1g6").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "Failed to download file {}/ap1g6: No such file or directory",
                dir.display()
            )
        );
        assert!(matches!(
            s.open("../etc/passwd"),
            Err(SourceError::NotFound(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn read_ahead_gives_the_bytes_a_plain_read_gives() {
        let dir = std::env::temp_dir().join(format!("wtpd-readahead-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let size = 5 * WINDOW + 777;
        let data: Vec<u8> = (0..size as u32).map(|i| (i * 31 % 251) as u8).collect();
        let path = dir.join("img");
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let mut ra = ReadAhead::new();
        let mut rng = crate::rng::Rng::new(7);
        // Up to seven readers at once (more than the windows), each sequential with its own
        // block size, and now and then a read anywhere, including past the end.
        let mut readers: Vec<(u64, usize)> = (0..7)
            .map(|i| (0u64, [1024, 1377, 512, 4096, 1, 65_535, 1024][i]))
            .collect();
        let mut buf = vec![0u8; 70_000];
        for round in 0..20_000 {
            let (offset, len) = if round % 97 == 0 {
                (rng.below(size as u64 + 100), 1 + rng.below(3000) as usize)
            } else {
                let r = &mut readers[rng.below(7) as usize];
                let at = r.0;
                r.0 = if at >= size as u64 {
                    0
                } else {
                    at + r.1 as u64
                };
                (at, r.1)
            };
            let n = ra.read_at(&file, offset, &mut buf[..len]).unwrap();
            let want = &data[(offset as usize).min(size)..(offset as usize + len).min(size)];
            assert_eq!(&buf[..n], want, "read of {len} at {offset}");
        }
        assert!(ra.windows.len() <= WINDOWS);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Many readers taking turns, as a hundred transfers at once: each keeps a window, so the
    /// file is read about once per window of each reader, not once per block.
    #[test]
    fn read_ahead_keeps_a_window_per_reader() {
        let dir = std::env::temp_dir().join(format!("wtpd-ra-many-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let size = 1 << 20;
        let data: Vec<u8> = (0..size as u32).map(|i| (i * 7 % 253) as u8).collect();
        let path = dir.join("img");
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let mut ra = ReadAhead::new();
        let readers = 20;
        let mut buf = [0u8; 1024];
        for block in 0..size / 1024 {
            for r in 0..readers {
                // Each reader starts a little later than the one before.
                let offset = ((block + r * 3) % (size / 1024)) * 1024;
                let n = ra.read_at(&file, offset as u64, &mut buf).unwrap();
                assert_eq!(&buf[..n], &data[offset..offset + 1024]);
            }
        }
        let per_reader = (size / WINDOW) as u64 + 2;
        assert!(
            ra.fills <= readers as u64 * per_reader,
            "{} fills for {readers} readers of {} windows each",
            ra.fills,
            size / WINDOW
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn synthetic_images_are_stable() {
        let mut s = SyntheticSource {
            sizes: [("ap1g8".to_string(), 3000)].into(),
        };
        let info = s.open("ap1g8").unwrap();
        let all = SyntheticSource::content("ap1g8", 3000);
        assert_eq!(
            &info.md5.unwrap()[..],
            &openssl::hash::hash(MessageDigest::md5(), &all).unwrap()[..]
        );
        let mut buf = [0u8; 1024];
        assert_eq!(s.read_at("ap1g8", 2048, &mut buf).unwrap(), 952);
        assert_eq!(&buf[..952], &all[2048..]);
    }
}
