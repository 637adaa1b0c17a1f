//! The image download sub-machine (RFC 5415 §9.1): where a download stands, the file it goes
//! to, its retries with backoff, and its two timers, ImageDataStartTimer (§4.7.9) and the
//! retry of a failed predownload. It owns this state and its timers, as quinn-proto's `mtud.rs`
//! and `pacing.rs` own theirs; the messages it causes are built by the WTP
//! ([`super::image`]), which owns the session, the sequence numbers and the state.

use std::time::Duration;

use log::info;

use super::config::RetryState;
use super::State;
use crate::image::download::Transfer;
use crate::image::store::{ImageStore, Space};
use crate::time::Instant;

/// Where the image download stands, in the words of the controller's `show ap image`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadState {
    None,
    Initiated,
    Downloading,
    Predownloading,
    CompletedDownloading,
    CompletedPredownloading,
    Failed,
    NotSupported,
}

impl DownloadState {
    pub fn name(self) -> &'static str {
        match self {
            DownloadState::None => "None",
            DownloadState::Initiated => "Initiated",
            DownloadState::Downloading => "Downloading",
            DownloadState::Predownloading => "Predownloading",
            DownloadState::CompletedDownloading => "Completed downloading",
            DownloadState::CompletedPredownloading => "Completed predownloading",
            DownloadState::Failed => "Failed",
            DownloadState::NotSupported => "Not supported",
        }
    }
}

/// The AC's last Image Data Request of a transfer, whose answer waits for the verdict on the
/// whole image (RFC 5415 §9.1.2: the Result Code says whether the request was good).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingVerdict {
    /// The AC's last Image Data Request (type, sequence number), answered with the verdict;
    /// `None` after an out-of-band fetch (a report tells the AC).
    pub answer: Option<(u32, u8)>,
    pub version: String,
    pub predownload: bool,
}

/// What changes the status an operator sees: cheap to compute for every datagram.
pub type StatusKey = (State, DownloadKey);

/// The download's part of [`StatusKey`].
pub type DownloadKey = (DownloadState, Option<u8>, u32, Option<Instant>);

/// A snapshot of the download for `wtpd status`.
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadStatus {
    pub state: DownloadState,
    pub version: Option<String>,
    pub bytes: u64,
    pub size: Option<u64>,
    pub percent: Option<u8>,
    pub eta: Option<Duration>,
    pub retry_count: u32,
    pub next_retry: Option<Instant>,
    pub last_error: Option<String>,
}

/// The download's state and timers.
pub struct Download {
    pub store: Box<dyn ImageStore>,
    pub transfer: Option<Transfer>,
    pub space: Option<Space>,
    /// ImageDataStartTimer (§4.7.9): the next Image Data Request from the AC is due by then.
    pub image_deadline: Option<Instant>,
    /// The Image Data Request waits for the outstanding request to be answered (§4.5.3).
    pub pending_request: bool,
    pub state: DownloadState,
    /// The version of the last download started (the one the controller announced).
    pub version: Option<String>,
    pub retry_count: u32,
    pub last_error: Option<String>,
    pub next_retry: Option<Instant>,
    /// A complete predownloaded image waiting for its Reset Request.
    pub predownloaded: Option<String>,
    /// The AC's last Image Data Request, answered once the image is verified (§9.1.2).
    pub verifying: Option<PendingVerdict>,
    /// Why the transfer under way is refused: the AC's next Image Data Request is answered
    /// with this (§9.1.2) and the download ends.
    pub refusal: Option<String>,
    /// The controller's version that a hold kept the WTP from downloading.
    pub deferred_version: Option<String>,
    /// The version the AC asked to predownload, and when to try again after a failure.
    pub predownload_version: Option<String>,
    pub predownload_retry: Option<(String, Instant)>,
    /// PRECHECK's hook runs for this version (and predownload flag): the download starts, or
    /// is refused, with its verdict ([`super::Wtp::precheck_done`]).
    pub prechecking: Option<(String, bool)>,
    /// The fleet upgrade's part (`wtp::fleet`).
    pub fleet: super::fleet::FleetDownload,
}

impl Download {
    pub fn new(store: Box<dyn ImageStore>, retry: &RetryState) -> Self {
        Download {
            store,
            transfer: None,
            space: None,
            image_deadline: None,
            pending_request: false,
            state: DownloadState::None,
            version: None,
            retry_count: retry.retry_count,
            last_error: retry.last_error.clone(),
            next_retry: None,
            predownloaded: None,
            verifying: None,
            refusal: None,
            deferred_version: None,
            predownload_version: None,
            predownload_retry: None,
            prechecking: None,
            fleet: Default::default(),
        }
    }

    /// The earliest of the download's timers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.image_deadline,
            self.predownload_retry.as_ref().map(|(_, at)| *at),
            self.fleet.retry_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// True (and the timer stopped) when ImageDataStartTimer (§4.7.9) is due.
    pub fn expire_image_timer(&mut self, now: Instant) -> bool {
        let due = self.image_deadline.is_some_and(|d| d <= now);
        if due {
            self.image_deadline = None;
        }
        due
    }

    /// The version to predownload again, when its retry is due.
    pub fn expire_predownload_retry(&mut self, now: Instant) -> Option<String> {
        match &self.predownload_retry {
            Some((_, at)) if *at <= now => self.predownload_retry.take().map(|(v, _)| v),
            _ => None,
        }
    }

    /// The bookkeeping of every failed download: the partial file removed, the error and the
    /// retry count recorded, the next attempt scheduled after `wait`.
    pub fn record_failure(&mut self, reason: &str, now: Instant, wait: Duration) {
        self.store.abort();
        self.state = DownloadState::Failed;
        self.retry_count = self.retry_count.saturating_add(1);
        self.last_error = Some(reason.to_string());
        self.next_retry = Some(now + wait);
        info!(
            "Image download retry {} in {}s (reason : {reason})",
            self.retry_count,
            wait.as_secs()
        );
    }

    /// The parts of the status that change what `wtpd status` shows.
    pub fn status_key(&self) -> DownloadKey {
        (
            self.state,
            self.transfer.as_ref().and_then(|t| t.percent()),
            self.retry_count,
            self.next_retry,
        )
    }

    /// What `wtpd status` shows of the download.
    pub fn status(&self, now: Instant) -> DownloadStatus {
        let t = self.transfer.as_ref();
        DownloadStatus {
            state: self.state,
            version: self.version.clone(),
            bytes: t.map(|t| t.bytes).unwrap_or(0),
            size: t.and_then(|t| t.expected_size),
            percent: match self.state {
                DownloadState::CompletedDownloading | DownloadState::CompletedPredownloading => {
                    Some(100)
                }
                _ => t.and_then(|t| t.percent()),
            },
            eta: t.and_then(|t| t.eta(now)),
            retry_count: self.retry_count,
            next_retry: self.next_retry.filter(|r| *r > now),
            last_error: self.last_error.clone(),
        }
    }
}
