//! The WTP's side of a fleet upgrade (docs/fleet.md): it offers what it can do in its Join
//! Request and Image Data Requests, follows the controller's direction (CAPWAP as before, TFTP
//! from the site's primary AP, or HTTPS out of band), and, as a primary, serves its staged
//! image to the subordinates.
//!
//! An out-of-band fetch runs in the driver ([`Action::FetchImage`]): its bytes come back through
//! [`Wtp::fetch_begin`], [`Wtp::fetched`] and [`Wtp::fetch_done`], and go the same way as CAPWAP
//! blocks: counted and hashed by the [`Transfer`], written by the store, the whole image
//! verified and installed by the driver. Only the answers differ: there is no AC request to
//! answer, so the AC hears of progress and of the end through WTP Event Requests carrying a
//! [`Report`].
//!
//! A failed out-of-band attempt (the primary busy or not ready yet, a timeout, a refused
//! connection) is retried after a random wait, with a new Image Data Request so that the
//! controller can name another primary; after `max_retries` the request asks for CAPWAP
//! (fallback), and a failure from then on is an ordinary failed download.

use std::net::SocketAddr;
use std::time::Duration;

use log::{info, warn};

use super::download::{DownloadState, PendingVerdict};
use super::{Action, HookStage, State, Wtp};
use crate::capwap::fleet::{
    Direction, Method, Offer, Report, ReportState, Role, CAP_HTTPS_FETCH, CAP_TFTP_FETCH,
    CAP_TFTP_SERVE,
};
use crate::capwap::{Element, MessageType};
use crate::image::download::{hex, DownloadError};
use crate::image::store::StoreError;
use crate::time::Instant;

/// What the WTP does in a fleet upgrade (`[fleet]` of wtpd.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetPolicy {
    /// Offer out-of-band fetching to the controller (TFTP from a primary, and HTTPS when built
    /// in). Off: the WTP sends no fleet element and downloads by CAPWAP only.
    pub enabled: bool,
    /// This build can fetch over HTTPS.
    pub https: bool,
    /// Out-of-band attempts before the WTP asks for CAPWAP (the seed's controllers: 44).
    pub max_retries: u16,
    /// The random wait before another attempt is drawn from `[backoff_min, backoff_max]`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for FleetPolicy {
    fn default() -> Self {
        FleetPolicy {
            enabled: false,
            https: false,
            max_retries: 44,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// The fleet part of the download's state.
#[derive(Debug, Default)]
pub struct FleetDownload {
    /// What the controller made this WTP for the download under way.
    pub role: Role,
    pub method: Method,
    /// An out-of-band fetch runs in the driver.
    pub fetching: bool,
    /// Out-of-band attempts of `retry_version` that failed.
    pub retry: u16,
    pub retry_version: Option<String>,
    /// When to ask again after a failed out-of-band attempt.
    pub retry_at: Option<Instant>,
    /// A report waiting for the outstanding request to be answered.
    pub report: Option<Report>,
    /// The staged image is being served to subordinates.
    pub serving: bool,
    /// Where this WTP's TFTP server listens (the driver says; `None`: it does not serve).
    pub endpoint: Option<SocketAddr>,
}

impl Wtp {
    /// The driver's TFTP server for subordinates listens here (`None`: there is none).
    pub fn set_fleet_endpoint(&mut self, endpoint: Option<SocketAddr>) {
        self.download.fleet.endpoint = endpoint;
    }

    /// The offer this WTP makes, `None` when fleet upgrades are off.
    pub(super) fn fleet_offer(&self) -> Option<Offer> {
        let p = &self.cfg.fleet;
        if !p.enabled {
            return None;
        }
        let f = &self.download.fleet;
        // A primary serves the file the download wrote: a slot-mode download has none.
        let serves = f.endpoint.is_some() && self.download.store.file().is_some();
        let mut caps = CAP_TFTP_FETCH;
        if p.https {
            caps |= CAP_HTTPS_FETCH;
        }
        if serves {
            caps |= CAP_TFTP_SERVE;
        }
        Some(Offer {
            image_type: Some(self.cfg.identity.image_type.clone()),
            caps,
            server: f.endpoint.filter(|_| serves),
            retry: f.retry,
            fallback: f.retry >= p.max_retries,
        })
    }

    /// Adds the offer to the packet being built, when fleet upgrades are on.
    pub(super) fn put_fleet_offer(&mut self) {
        if let Some(o) = self.fleet_offer() {
            let mut v = Vec::with_capacity(48);
            o.encode(&mut v);
            self.builder.element(&Element::VendorSpecific {
                vendor: self.cfg.identity.vendor_id,
                element_id: crate::capwap::vendor::FLEET_OFFER,
                data: &v,
            });
        }
    }

    /// A new download starts: what the last one served stops, its role is forgotten, and the
    /// retry count is kept only for another attempt at the same version.
    pub(super) fn fleet_new_download(&mut self, version: &str) {
        self.stop_serving();
        let f = &mut self.download.fleet;
        f.role = Role::None;
        f.method = Method::Capwap;
        f.retry_at = None;
        if f.retry_version.as_deref() != Some(version) {
            f.retry = 0;
            f.retry_version = Some(version.to_string());
        }
    }

    fn stop_serving(&mut self) {
        if std::mem::take(&mut self.download.fleet.serving) {
            info!("No longer serving the staged image to subordinates");
            self.actions.push_back(Action::ServeImage { file: None });
        }
    }

    /// Stops a fetch under way (the download failed or the session ended).
    pub(super) fn stop_fetch(&mut self) {
        if std::mem::take(&mut self.download.fleet.fetching) {
            self.actions.push_back(Action::CancelFetch);
        }
        self.download.fleet.retry_at = None;
    }

    /// The controller's direction in its Image Data Response. True when the image comes out
    /// of band (no CAPWAP blocks will come); false to wait for Image Data as before.
    pub(super) fn follow_direction(&mut self, d: Direction, now: Instant) -> bool {
        if !self.cfg.fleet.enabled {
            return false;
        }
        let predownload = self
            .download
            .transfer
            .as_ref()
            .is_some_and(|t| t.predownload);
        self.download.fleet.role = d.role;
        if d.role != Role::None {
            info!("Efficient upgrade: this AP is {}", d.role.column());
        }
        let url = match d.source_url() {
            Ok(None) => return false,
            Ok(Some(_)) if !predownload => {
                warn!(
                    "Out-of-band direction outside a predownload ignored: waiting for Image Data"
                );
                return false;
            }
            Ok(Some(url)) => url,
            Err(why) => {
                warn!("Controller's direction refused: {why}");
                self.fleet_attempt_failed(why, now);
                return true;
            }
        };
        let image = self.cfg.identity.image_type.clone();
        self.download.fleet.method = d.method;
        self.download.fleet.fetching = true;
        self.download.image_deadline = None;
        self.download.state = DownloadState::Predownloading;
        match d.method {
            Method::Tftp => info!(
                "Fetching {image} from primary {} over TFTP, slaveStatus 1 (attempt {})",
                d.server.map(|s| s.to_string()).unwrap_or_default(),
                self.download.fleet.retry + 1
            ),
            _ => info!("Fetching {image} out of band: {url}"),
        }
        self.actions.push_back(Action::FetchImage {
            url,
            pin: d.pin,
            size: d.size,
        });
        true
    }

    /// The fetch's server said the size (or did not).
    pub fn fetch_begin(&mut self, size: Option<u64>, now: Instant) {
        if !self.download.fleet.fetching {
            return;
        }
        let Some(size) = size else { return };
        if let Some(t) = self.download.transfer.as_mut() {
            t.expected_size = Some(size);
        }
        if let Some(reason) = self.too_large(size) {
            warn!("{reason}");
            self.stop_fetch();
            self.fail_download(&reason, true, true, now);
        }
    }

    /// The next bytes of an out-of-band fetch. False when the download no longer wants them
    /// (the driver stops the fetch).
    pub fn fetched(&mut self, data: &[u8], now: Instant) -> bool {
        if !self.download.fleet.fetching {
            return false;
        }
        let Some(t) = self.download.transfer.as_mut() else {
            return false;
        };
        if let Err(e) = t.block(data) {
            self.stop_fetch();
            self.fail_download(&e.to_string(), true, true, now);
            return false;
        }
        let step = t.progress_step();
        let (bytes, total) = (t.bytes, t.expected_size);
        if let Some(pct) = step {
            info!(".......... {pct}% ({bytes} bytes)");
            self.queue_report(ReportState::Fetching, bytes, total, now);
        }
        if let Err(e) = self.download.store.write(data) {
            let reason = match e {
                StoreError::Refused(why) => why,
                e => format!("cannot write the image: {e}"),
            };
            self.stop_fetch();
            self.fail_download(&reason, true, true, now);
            return false;
        }
        true
    }

    /// The out-of-band fetch ended: `Ok(bytes)` when the whole file arrived.
    pub fn fetch_done(&mut self, result: Result<u64, String>, now: Instant) {
        if !std::mem::take(&mut self.download.fleet.fetching) {
            return;
        }
        match result {
            Ok(_) => self.fetch_complete(now),
            Err(why) => {
                self.fleet_attempt_failed(&why, now);
            }
        }
    }

    /// The whole file arrived: its size and digests, the file closed, then the verdict on the
    /// image, as after the last CAPWAP block.
    fn fetch_complete(&mut self, now: Instant) {
        let Some(mut t) = self.download.transfer.take() else {
            return;
        };
        let digests = match t.finish() {
            Ok(d) => d,
            Err(e @ (DownloadError::Md5Mismatch { .. } | DownloadError::SizeMismatch { .. })) => {
                return self.fail_download(&e.to_string(), true, true, now);
            }
        };
        if let Err(e) = self.download.store.finish() {
            let reason = match e {
                StoreError::Refused(why) => why,
                e => format!("cannot store the image: {e}"),
            };
            return self.fail_download(&reason, true, true, now);
        }
        info!(
            "Image transfer completed from {}, {} bytes",
            self.download.fleet.method.column(),
            t.bytes
        );
        info!(
            "Image SHA-256 {} ({} bytes) at {}",
            hex(&digests.sha256),
            digests.size,
            self.download.store.location()
        );
        self.hook(HookStage::Predownload, Some(t.version.clone()), true, None);
        self.download.verifying = Some(PendingVerdict {
            answer: None,
            version: t.version.clone(),
            predownload: true,
        });
        self.actions.push_back(Action::VerifyImage {
            version: t.version.clone(),
            location: self.download.store.location(),
            predownload: true,
        });
    }

    /// An out-of-band attempt failed: ask again after a random wait (the controller may name
    /// another primary), or, after `max_retries`, for CAPWAP.
    fn fleet_attempt_failed(&mut self, why: &str, now: Instant) {
        self.download.store.abort();
        self.download.transfer = None;
        let version = self.download.version.clone().unwrap_or_default();
        let max = self.cfg.fleet.max_retries;
        let f = &mut self.download.fleet;
        f.retry = f.retry.saturating_add(1);
        f.retry_version = Some(version);
        let retry = f.retry;
        let (lo, hi) = (self.cfg.fleet.backoff_min, self.cfg.fleet.backoff_max);
        let span = hi.saturating_sub(lo).as_millis() as u64;
        let wait = lo + Duration::from_millis(if span == 0 { 0 } else { self.rng.below(span) });
        let image = self.cfg.identity.image_type.clone();
        warn!(
            "Image download of {image} by {} failed ({why}): retry {retry} of {max} in {:.1}s{}",
            self.download.fleet.method.column(),
            wait.as_secs_f64(),
            if retry >= max {
                ", then from the controller"
            } else {
                ""
            }
        );
        self.download.last_error = Some(why.to_string());
        self.download.state = DownloadState::Initiated;
        self.download.fleet.retry_at = Some(now + wait);
    }

    /// The wait after a failed out-of-band attempt is over: the download starts again
    /// (PRECHECK, a new Image Data Request with the retry count).
    pub(super) fn fleet_timer(&mut self, now: Instant) {
        let due = self.download.fleet.retry_at.is_some_and(|at| at <= now);
        if !due || self.state != State::Run {
            return;
        }
        self.download.fleet.retry_at = None;
        if let Some(v) = self.download.version.clone() {
            self.start_download(&v, true, now);
        }
    }

    /// A predownloaded image is staged: tell the controller (it may now send subordinates to
    /// this AP), and serve it when this AP is the primary.
    pub(super) fn fleet_staged(&mut self, now: Instant) {
        if !self.cfg.fleet.enabled {
            return;
        }
        let bytes = self
            .download
            .store
            .file()
            .map_or(0, |p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
        if self.download.fleet.role == Role::Primary {
            if let (Some(path), Some(endpoint)) =
                (self.download.store.file(), self.download.fleet.endpoint)
            {
                let image = self.cfg.identity.image_type.clone();
                info!("Serving {image} to subordinates over TFTP on {endpoint}, replicaStatus 1");
                self.download.fleet.serving = true;
                self.actions.push_back(Action::ServeImage {
                    file: Some((image, path)),
                });
            }
        }
        self.queue_report(ReportState::Done, bytes, Some(bytes), now);
    }

    fn queue_report(&mut self, state: ReportState, bytes: u64, total: Option<u64>, now: Instant) {
        if !self.cfg.fleet.enabled {
            return;
        }
        let f = &self.download.fleet;
        let next = Report {
            state,
            bytes,
            total,
            method: f.method,
            retry: f.retry,
        };
        // A progress report never replaces the final one still waiting.
        if state == ReportState::Fetching
            && f.report
                .as_ref()
                .is_some_and(|r| r.state != ReportState::Fetching)
        {
            return;
        }
        self.download.fleet.report = Some(next);
        self.send_pending_report(now);
    }

    /// Sends the waiting report once no request is outstanding (Run only, RFC 5415 §9.4).
    pub(super) fn send_pending_report(&mut self, now: Instant) {
        if self.download.fleet.report.is_none() || self.requester.busy() || self.state != State::Run
        {
            return;
        }
        let Some(r) = self.download.fleet.report.take() else {
            return;
        };
        let mut v = Vec::with_capacity(32);
        r.encode(&mut v);
        let seq = self.requester.next_seq();
        self.builder.start(
            &crate::capwap::Header::control(),
            MessageType::WtpEventRequest as u32,
            seq,
        );
        self.builder.element(&Element::VendorSpecific {
            vendor: self.cfg.identity.vendor_id,
            element_id: crate::capwap::vendor::FLEET_REPORT,
            data: &v,
        });
        self.send_request(MessageType::WtpEventRequest, now);
    }
}
