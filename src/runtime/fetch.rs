//! `wtpd fetch URL`'s download step: the driver's side of [`crate::fetch`], which reads the
//! agent's configuration so that the fetch clients need not know it.

use crate::config::{DownloadSection, WtpdConfig};
use crate::fetch::{fetch_to_store, FetchReport, FetchUrl};
use crate::image::store::FileStore;

/// `wtpd fetch URL`: downloads into the download directory `download` (PRECHECK with its
/// margin) with the options of the `[fetch]` table of `cfg`.
pub fn fetch_command(
    cfg: &WtpdConfig,
    download: &DownloadSection,
    url: &str,
) -> Result<FetchReport, Box<dyn std::error::Error>> {
    let url = FetchUrl::parse(url)?;
    let opts = cfg.fetch.options(download.required_bytes);
    let mut store = FileStore::new(&download.dir, &download.file, download.margin);
    Ok(fetch_to_store(&url, &opts, &mut store)?)
}

/// An out-of-band image fetch of a fleet upgrade (`wtp::fleet`), in its own thread: the fetch
/// clients are blocking. Its bytes come to the event loop in pieces of [`PIECE`] bytes through
/// a small channel, and the buffers go back to the thread to be filled again, so a download
/// allocates [`BUFFERS`] buffers whatever its size, and the thread waits while the event loop
/// is behind (the channel is the backpressure).
pub struct Fetcher {
    rx: tokio::sync::mpsc::Receiver<FetchEvent>,
    back: std::sync::mpsc::Sender<Vec<u8>>,
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// What the fetch thread says.
pub enum FetchEvent {
    /// The server accepted; its size when it said it.
    Begin(Option<u64>),
    Data(Vec<u8>),
    /// The end: the bytes fetched, or why it failed (the seed's words).
    Done(Result<u64, String>),
}

/// Bytes handed to the event loop at a time.
pub const PIECE: usize = 64 * 1024;
/// Buffers of [`PIECE`] bytes one fetch uses at most.
pub const BUFFERS: usize = 4;

struct ChannelSink {
    tx: tokio::sync::mpsc::Sender<FetchEvent>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    made: usize,
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn cancelled() -> crate::fetch::FetchErrorKind {
    crate::fetch::FetchErrorKind::Refused("cancelled".into())
}

impl ChannelSink {
    fn flush(&mut self) -> Result<(), crate::fetch::FetchErrorKind> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut next = match self.back.try_recv() {
            Ok(b) => b,
            Err(_) if self.made < BUFFERS => {
                self.made += 1;
                Vec::with_capacity(PIECE)
            }
            Err(_) => self.back.recv().map_err(|_| cancelled())?,
        };
        next.clear();
        let full = std::mem::replace(&mut self.buf, next);
        self.tx
            .blocking_send(FetchEvent::Data(full))
            .map_err(|_| cancelled())
    }
}

impl crate::fetch::Sink for ChannelSink {
    fn begin(&mut self, size: Option<u64>) -> Result<(), crate::fetch::FetchErrorKind> {
        self.tx
            .blocking_send(FetchEvent::Begin(size))
            .map_err(|_| cancelled())
    }

    fn data(&mut self, bytes: &[u8]) -> Result<(), crate::fetch::FetchErrorKind> {
        if self.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(cancelled());
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = rest.len().min(PIECE - self.buf.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.buf.len() >= PIECE {
                self.flush()?;
            }
        }
        Ok(())
    }
}

impl Fetcher {
    /// Starts fetching `url` with `opts`.
    pub fn start(url: FetchUrl, opts: crate::fetch::FetchOptions) -> Fetcher {
        let (tx, rx) = tokio::sync::mpsc::channel(BUFFERS);
        let (back_tx, back_rx) = std::sync::mpsc::channel();
        let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut sink = ChannelSink {
            tx: tx.clone(),
            back: back_rx,
            buf: Vec::with_capacity(PIECE),
            made: 1,
            cancel: cancel.clone(),
        };
        let failed = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("wtpd-fetch".into())
            .spawn(move || {
                let result = crate::fetch::fetch(&url, &opts, &mut sink)
                    .map_err(|e| e.to_string())
                    .and_then(|n| sink.flush().map(|_| n).map_err(|e| e.to_string()));
                // The event loop may have gone (cancelled): nothing to tell then.
                let _ = tx.blocking_send(FetchEvent::Done(result));
            });
        if let Err(e) = spawned {
            let why = format!("cannot start the fetch thread: {e}");
            let _ = failed.try_send(FetchEvent::Done(Err(why)));
        }
        Fetcher {
            rx,
            back: back_tx,
            cancel,
        }
    }

    /// The next event; pending forever once the thread has said Done.
    pub async fn next(&mut self) -> FetchEvent {
        match self.rx.recv().await {
            Some(e) => e,
            None => std::future::pending().await,
        }
    }

    /// Gives a buffer back to be filled again.
    pub fn recycle(&self, buf: Vec<u8>) {
        let _ = self.back.send(buf);
    }
}

impl Drop for Fetcher {
    /// Stops the thread at its next piece (a blocked read ends at the client's timeout; the
    /// thread is not waited for).
    fn drop(&mut self) {
        self.cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
