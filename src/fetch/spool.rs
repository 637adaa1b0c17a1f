//! acsim's image-download profile and the [`ImageSource`] that serves images while they arrive
//! from a TFTP, SFTP or HTTPS server.
//!
//! When an AP asks for `ap1g8`, a thread downloads `<path>/ap1g8` into a spool file (created in
//! `spool_dir` and unlinked at once, so nothing is left behind even after a crash; the page
//! cache holds it, not the heap). The AC reads blocks from the spool as they arrive: a block
//! that has not arrived yet is [`SourceError::Pending`], and the thread wakes the runtime (a
//! callback) after each write so that the AC goes on ([`crate::ac::Ac::source_progress`]). APs
//! that ask for the same image while it is in use share one download; once no transfer uses
//! it, it is dropped, and the next request downloads afresh (a failed download is retried).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::{info, warn};
use serde::Deserialize;

use super::url::{join_path, FetchUrl, Scheme};
use super::{FetchErrorKind, FetchOptions, Sink};
use crate::image::source::{valid_name, ImageInfo, ImageSource, SourceError};
use crate::image::store::StoreError;

/// Where acsim takes images from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DownloadMode {
    /// The `image_dir` folder on this machine.
    #[default]
    Local,
    Tftp,
    Sftp,
    Https,
}

/// The `[image_download]` table of acsim.toml: the seed's "image download profile".
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageDownloadProfile {
    pub mode: DownloadMode,
    /// The image server (name or address).
    pub server: Option<String>,
    /// Its port; the protocol's default (69, 22, 443) when not given.
    pub port: Option<u16>,
    /// The image folder on the server (`/EWC/17_9_4a`); `<path>/<hardware type>` is fetched.
    pub path: String,
    /// SFTP user, password, private key file.
    pub user: Option<String>,
    pub password: Option<String>,
    pub key_file: Option<PathBuf>,
    /// SFTP host key check: a known_hosts file, or a pinned `SHA256:...` fingerprint.
    pub known_hosts: Option<PathBuf>,
    pub host_key_sha256: Option<String>,
    /// SFTP, lab only: accept any host key (logged as a warning).
    pub accept_any_host_key: bool,
    /// HTTPS: the CA file the server's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// Seconds: TFTP retransmission timeout; SFTP/HTTPS connect and read timeout.
    #[serde(with = "crate::time::secs")]
    pub timeout: Duration,
    /// TFTP retransmissions before `Timed out`.
    pub retries: u32,
    /// TFTP block size and window size asked for.
    pub blksize: u16,
    pub windowsize: u16,
    /// Where spool files go (they are unlinked at once); the system's temporary folder when
    /// not given.
    pub spool_dir: Option<PathBuf>,
    /// Download the whole image before answering the AP, to announce Image Information (size
    /// and MD5). Off: the AP gets blocks as they arrive and no Image Information.
    pub announce_md5: bool,
    /// The version the images carry; by default `<path>/version.info` is fetched at start.
    pub version: Option<String>,
}

impl std::str::FromStr for DownloadMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(DownloadMode::Local),
            "tftp" => Ok(DownloadMode::Tftp),
            "sftp" => Ok(DownloadMode::Sftp),
            "https" => Ok(DownloadMode::Https),
            other => Err(format!("'{other}': use local, tftp, sftp or https")),
        }
    }
}

impl Default for ImageDownloadProfile {
    fn default() -> Self {
        let o = FetchOptions::default();
        ImageDownloadProfile {
            mode: DownloadMode::Local,
            server: None,
            port: None,
            path: String::new(),
            user: None,
            password: None,
            key_file: None,
            known_hosts: None,
            host_key_sha256: None,
            accept_any_host_key: false,
            ca_file: None,
            timeout: o.timeout,
            retries: o.retries,
            blksize: o.blksize,
            windowsize: o.windowsize,
            spool_dir: None,
            announce_md5: false,
            version: None,
        }
    }
}

impl ImageDownloadProfile {
    /// Makes relative paths relative to the configuration file's folder.
    pub fn resolve(&mut self, base: &Path) {
        for p in [
            &mut self.key_file,
            &mut self.known_hosts,
            &mut self.ca_file,
            &mut self.spool_dir,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// What is wrong with the profile, if anything.
    pub fn check(&self) -> Result<(), String> {
        if self.mode == DownloadMode::Local {
            return Ok(());
        }
        let server = self.server.as_deref().unwrap_or("");
        if server.is_empty() {
            return Err("image_download.server is required for a remote mode".into());
        }
        if self.blksize < 8 || self.blksize > 65464 {
            return Err(format!(
                "image_download.blksize {} is not within 8..=65464",
                self.blksize
            ));
        }
        if self.windowsize == 0 {
            return Err("image_download.windowsize must be at least 1".into());
        }
        if self.mode == DownloadMode::Sftp {
            if self.user.as_deref().unwrap_or("").is_empty() {
                return Err("image_download.user is required in sftp mode".into());
            }
            if self.password.is_none() && self.key_file.is_none() {
                return Err("image_download needs a password or key_file in sftp mode".into());
            }
        }
        // The URL of a probe file must parse.
        self.url("ap1g8").map(|_| ())
    }

    fn scheme(&self) -> Scheme {
        match self.mode {
            DownloadMode::Sftp => Scheme::Sftp,
            DownloadMode::Https => Scheme::Https,
            _ => Scheme::Tftp,
        }
    }

    /// The URL of image `name` on the server.
    pub fn url(&self, name: &str) -> Result<FetchUrl, String> {
        let scheme = self.scheme();
        let host = self.server.clone().unwrap_or_default();
        let user = if scheme == Scheme::Sftp {
            self.user.clone()
        } else {
            None
        };
        let url = FetchUrl {
            scheme,
            user,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: self.port.unwrap_or(scheme.default_port()),
            path: join_path(&self.path, name),
        };
        // Check through the parser, which refuses what a server name cannot be.
        let shown = format!(
            "{}://{}{}{}",
            scheme.name(),
            url.user
                .as_ref()
                .map(|u| format!("{u}@"))
                .unwrap_or_default(),
            url.authority(),
            url.path
        );
        FetchUrl::parse(&shown).map_err(|e| format!("image_download: {e}"))?;
        Ok(url)
    }

    /// The fetch options the profile gives.
    pub fn options(&self) -> FetchOptions {
        FetchOptions {
            timeout: self.timeout,
            retries: self.retries,
            blksize: self.blksize,
            windowsize: self.windowsize,
            user: self.user.clone(),
            password: self.password.clone(),
            key_file: self.key_file.clone(),
            known_hosts: self.known_hosts.clone(),
            host_key_sha256: self.host_key_sha256.clone(),
            accept_any_host_key: self.accept_any_host_key,
            ca_file: self.ca_file.clone(),
            ..FetchOptions::default()
        }
    }

    /// Fetches a small file (`version.info`) whole, bounded to 4 KiB.
    pub fn fetch_small(&self, name: &str) -> Result<String, String> {
        struct Small(Vec<u8>);
        impl Sink for Small {
            fn begin(&mut self, _: Option<u64>) -> Result<(), FetchErrorKind> {
                Ok(())
            }
            fn data(&mut self, b: &[u8]) -> Result<(), FetchErrorKind> {
                if self.0.len() + b.len() > 4096 {
                    return Err(FetchErrorKind::Protocol("larger than 4 KiB".into()));
                }
                self.0.extend_from_slice(b);
                Ok(())
            }
        }
        let url = self.url(name)?;
        let mut s = Small(Vec::new());
        super::fetch(&url, &self.options(), &mut s).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&s.0).trim().to_string())
    }
}

/// What one download has done so far, shared between its thread and the source.
#[derive(Debug, Default)]
struct Progress {
    /// The server accepted the request (size as it said).
    begun: bool,
    size: Option<u64>,
    /// Bytes in the spool file.
    received: u64,
    done: bool,
    md5: Option<[u8; 16]>,
    error: Option<super::FetchError>,
}

struct Entry {
    url: String,
    file: File,
    progress: Arc<Mutex<Progress>>,
    cancel: Arc<AtomicBool>,
    /// The AC is waiting for more of this download: wake it at the next write. Without a
    /// waiter, writes do not wake the runtime (a fast server would otherwise wake it for
    /// every packet while it is busy serving blocks).
    wanted: Arc<AtomicBool>,
}

/// The callback that wakes the runtime when a download made progress.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// Images from a TFTP, SFTP or HTTPS server, served while they arrive.
pub struct RemoteSource {
    profile: ImageDownloadProfile,
    spool_dir: PathBuf,
    wake: Waker,
    entries: HashMap<String, Entry>,
}

// 32 bits: 32-bit MIPS has no 64-bit atomics, and a name sequence may wrap.
static SPOOL_SEQ: AtomicU32 = AtomicU32::new(0);

/// Writes into the spool file and tells the source.
struct SpoolSink {
    file: File,
    progress: Arc<Mutex<Progress>>,
    cancel: Arc<AtomicBool>,
    wanted: Arc<AtomicBool>,
    wake: Waker,
    md5: openssl::hash::Hasher,
    written: u64,
}

fn lock(p: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    // A thread that panicked while holding the lock left consistent counters (plain stores).
    p.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sink for SpoolSink {
    fn begin(&mut self, size: Option<u64>) -> Result<(), FetchErrorKind> {
        {
            let mut p = lock(&self.progress);
            p.begun = true;
            p.size = size;
        }
        (self.wake)();
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> Result<(), FetchErrorKind> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(FetchErrorKind::Cancelled);
        }
        self.file.write_all(bytes).map_err(|e| {
            FetchErrorKind::Store(if e.raw_os_error() == Some(libc::ENOSPC) {
                StoreError::DiskFull
            } else {
                StoreError::Io(format!("spool file: {e}"))
            })
        })?;
        self.md5
            .update(bytes)
            .map_err(|e| FetchErrorKind::Io(e.to_string()))?;
        self.written += bytes.len() as u64;
        lock(&self.progress).received = self.written;
        if self.wanted.swap(false, Ordering::AcqRel) {
            (self.wake)();
        }
        Ok(())
    }
}

impl RemoteSource {
    /// A source for the profile; `wake` is called (from download threads) on progress.
    pub fn new(profile: ImageDownloadProfile, wake: Waker) -> Self {
        let spool_dir = profile.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        RemoteSource {
            profile,
            spool_dir,
            wake,
            entries: HashMap::new(),
        }
    }

    /// Downloads in progress or kept for a transfer.
    pub fn active(&self) -> usize {
        self.entries.len()
    }

    fn spool_file(&self, name: &str) -> Result<(File, File), SourceError> {
        std::fs::create_dir_all(&self.spool_dir).map_err(|e| {
            SourceError::Io(format!("spool folder {}: {e}", self.spool_dir.display()))
        })?;
        let n = SPOOL_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = self
            .spool_dir
            .join(format!(".acsim-spool-{}-{n}-{name}", std::process::id()));
        let w = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| SourceError::Io(format!("spool file {}: {e}", path.display())))?;
        let _ = std::fs::remove_file(&path);
        let r = w
            .try_clone()
            .map_err(|e| SourceError::Io(format!("spool file: {e}")))?;
        Ok((w, r))
    }

    fn start(&mut self, name: &str) -> Result<(), SourceError> {
        let url = self
            .profile
            .url(name)
            .map_err(|e| SourceError::Io(e.to_string()))?;
        let (w, r) = self.spool_file(name)?;
        let progress = Arc::new(Mutex::new(Progress::default()));
        let cancel = Arc::new(AtomicBool::new(false));
        let wanted = Arc::new(AtomicBool::new(true));
        let md5 = openssl::hash::Hasher::new(openssl::hash::MessageDigest::md5())
            .map_err(|e| SourceError::Io(e.to_string()))?;
        let mut sink = SpoolSink {
            file: w,
            progress: progress.clone(),
            cancel: cancel.clone(),
            wanted: wanted.clone(),
            wake: self.wake.clone(),
            md5,
            written: 0,
        };
        let opts = self.profile.options();
        let shown = url.to_string();
        info!("Image download started: {shown}");
        let thread_url = url.clone();
        std::thread::Builder::new()
            .name(format!("fetch-{name}"))
            .spawn(move || {
                let started = std::time::Instant::now();
                let r = super::fetch(&thread_url, &opts, &mut sink);
                let md5 = sink.md5.finish().ok().map(|d| {
                    let mut m = [0u8; 16];
                    m.copy_from_slice(&d);
                    m
                });
                {
                    let mut p = lock(&sink.progress);
                    match r {
                        Ok(n) => {
                            p.done = true;
                            p.received = n;
                            p.md5 = md5;
                            let secs = started.elapsed().as_secs_f64().max(1e-6);
                            info!(
                                "Image download complete: {thread_url}, {n} bytes in {secs:.2} s ({:.2} MB/s)",
                                n as f64 / secs / 1e6
                            );
                        }
                        Err(e) => p.error = Some(e),
                    }
                }
                (sink.wake)();
            })
            .map_err(|e| SourceError::Io(format!("download thread: {e}")))?;
        self.entries.insert(
            name.to_string(),
            Entry {
                url: shown,
                file: r,
                progress,
                cancel,
                wanted,
            },
        );
        Ok(())
    }
}

/// The AC's view of a failed download; both read "Failed to download file URL: ...".
fn failure(e: &super::FetchError) -> SourceError {
    match e.kind {
        FetchErrorKind::NotFound => SourceError::NotFound(e.url.clone()),
        _ => SourceError::Failed(e.to_string()),
    }
}

impl ImageSource for RemoteSource {
    fn open(&mut self, name: &str) -> Result<ImageInfo, SourceError> {
        if !valid_name(name) {
            let url = self
                .profile
                .url("<invalid name>")
                .map(|u| u.to_string())
                .unwrap_or_default();
            return Err(SourceError::NotFound(url));
        }
        if !self.entries.contains_key(name) {
            self.start(name)?;
            return Err(SourceError::Pending);
        }
        let Some(e) = self.entries.get(name) else {
            return Err(SourceError::Pending);
        };
        // Set before looking, so that a write after the look wakes us.
        e.wanted.store(true, Ordering::Release);
        let outcome = {
            let p = lock(&e.progress);
            if let Some(err) = &p.error {
                Err(failure(err))
            } else if !p.begun || (self.profile.announce_md5 && !p.done) {
                // Not answered yet, or the MD5 is to be announced and is not known yet.
                Err(SourceError::Pending)
            } else if p.done {
                Ok(ImageInfo {
                    size: Some(p.received),
                    md5: p.md5,
                })
            } else {
                Ok(ImageInfo {
                    size: p.size,
                    md5: None,
                })
            }
        };
        if matches!(outcome, Err(ref e) if *e != SourceError::Pending) {
            // The next request downloads afresh.
            if let Some(e) = self.entries.remove(name) {
                e.cancel.store(true, Ordering::Relaxed);
            }
        }
        outcome
    }

    fn read_at(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> Result<usize, SourceError> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| SourceError::Io(format!("{name} is not being downloaded")))?;
        let (received, done) = {
            let p = lock(&e.progress);
            if !p.done && offset + (buf.len() as u64) >= p.received {
                // Not enough yet: the next write wakes the AC (set under the lock that the
                // writer takes before it looks, so no write slips between).
                e.wanted.store(true, Ordering::Release);
            }
            if let Some(err) = &p.error {
                return Err(failure(err));
            }
            (p.received, p.done)
        };
        // Whole blocks only, and the one that ends the image only once the download ended
        // (so that the AC can mark it as the last).
        let want = if done {
            received.saturating_sub(offset).min(buf.len() as u64) as usize
        } else if offset + (buf.len() as u64) < received {
            buf.len()
        } else {
            return Err(SourceError::Pending);
        };
        let mut got = 0;
        while got < want {
            match e.file.read_at(&mut buf[got..want], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(SourceError::Io(format!("spool of {}: {err}", e.url))),
            }
        }
        Ok(got)
    }

    fn total(&mut self, name: &str) -> Option<u64> {
        let e = self.entries.get(name)?;
        let p = lock(&e.progress);
        p.done.then_some(p.received)
    }

    fn retain(&mut self, in_use: &dyn Fn(&str) -> bool) {
        self.entries.retain(|name, e| {
            let keep = in_use(name);
            if !keep {
                let p = lock(&e.progress);
                if !p.done && p.error.is_none() {
                    warn!(
                        "Image download of {} stopped: no AP is waiting for it",
                        e.url
                    );
                }
                e.cancel.store(true, Ordering::Relaxed);
            }
            keep
        });
    }
}

impl Drop for RemoteSource {
    fn drop(&mut self) {
        for e in self.entries.values() {
            e.cancel.store(true, Ordering::Relaxed);
        }
    }
}
