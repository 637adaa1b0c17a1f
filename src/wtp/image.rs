//! The Image Data part of the WTP (RFC 5415 §9.1): the version decision at Join, PRECHECK, the
//! transfer itself, predownload in Run (Figures 8 and 9), and abort with retry.
//!
//! Blocks go to the [`ImageStore`](crate::image::store::ImageStore) before their Image Data
//! Response is sent, so an acknowledged block is always on disk; a duplicate request (same
//! sequence number) is answered from the response cache and never written twice.

use std::time::Duration;

use log::{debug, info, warn};

use super::timer::Timer;
use super::{AfterTeardown, HookCall, HookStage, State, Wtp};
use crate::capwap::element::image_data_type;
use crate::capwap::{ControlMessage, Element, MessageType, ResultCode};
use crate::image::download::{hex, DownloadError, Transfer};
use crate::image::install::InstallError;
use crate::image::store::StoreError;
use crate::time::Instant;

/// Vendor Specific element id under our vendor id: an image download failure, text follows.
pub const VENDOR_ELEMENT_DOWNLOAD_FAILURE: u16 = crate::capwap::vendor::DOWNLOAD_FAILURE;

use super::download::PendingVerdict;
pub use super::download::{DownloadState, DownloadStatus, StatusKey};

impl Wtp {
    /// The Join Response named `version`: carry on, swap, or download (RFC 5415 §9.1).
    pub(super) fn decide_version(&mut self, version: Option<String>, now: Instant) -> bool {
        let Some(version) = version else { return false };
        let v = &self.cfg.versions;
        let line = format!(
            "AP image version {} backup {}, Controller {}",
            v.primary,
            v.backup.as_deref().unwrap_or("none"),
            version
        );
        if version == v.primary {
            info!("{line}");
            info!("Version matches the controller.");
            return false;
        }
        if v.backup.as_deref() == Some(version.as_str()) && self.cfg.hold.is_none() {
            // Figure 7: the WTP has the image in its other partition: switch and reset.
            info!("{line}");
            if !self.cfg.can_switch {
                warn!("Backup image {version} matches the controller: swap needed, but this board cannot switch");
                return false;
            }
            info!("Backup image {version} matches the controller: switching to it");
            self.actions.push_back(super::Action::ActivateImage {
                version: version.clone(),
            });
            // §9.1 Figure 7; §2.3.1 Join to Configure (g) is skipped for a reset.
            self.set_state(State::Reset, now);
            self.teardown(
                "backup image matches",
                AfterTeardown::Reboot(format!("switch to {version}")),
                now,
            );
            return true;
        }
        if let Some(hold) = self.cfg.hold.clone() {
            // No download, no switch: join with what runs (RFC 5415 leaves the decision to
            // the WTP) and say why. On trial, the slot is marked good in Run, the hold ends,
            // and the WTP comes back for the controller's version (release_hold).
            info!("{line}");
            info!("Version does not match.");
            warn!("Not downloading {version}: {}", hold.reason());
            self.download.last_error = Some(format!("{version} not downloaded: {}", hold.reason()));
            self.download.deferred_version = Some(version);
            return false;
        }
        // §2.3.1 Join to Image Data (f). The seed's order: the state first, then the versions
        // and the verdict.
        self.set_state(State::ImageData, now);
        info!("{line}");
        info!("Version does not match.");
        self.timers
            .set(Timer::Echo, now + self.cfg.timers.echo_interval);
        self.start_download(&version, false, now);
        true
    }

    /// PRECHECK: the board's hook first, when it has one ([`Wtp::precheck_done`] goes on),
    /// then [`Wtp::open_download`].
    pub(super) fn start_download(&mut self, version: &str, predownload: bool, now: Instant) {
        if let Some(t) = self.download.transfer.take() {
            warn!("Dropping unfinished transfer of {}", t.image);
            self.download.store.abort();
        }
        self.download.predownloaded = None;
        self.fleet_new_download(version);
        self.hook(
            HookStage::Precheck,
            Some(version.to_string()),
            predownload,
            None,
        );
        if self.cfg.hooks {
            self.download.prechecking = Some((version.to_string(), predownload));
            self.download.version = Some(version.to_string());
            self.download.state = DownloadState::Initiated;
            return;
        }
        self.open_download(version, predownload, now);
    }

    /// The driver's answer to PRECHECK's [`Action::Hook`](super::Action::Hook): `Err(why)`
    /// when the script refused (non-zero exit, killed at its timeout), which refuses the
    /// download as a full /tmp does. Ignored when the download was given up meanwhile.
    pub fn precheck_done(&mut self, result: Result<(), String>, now: Instant) {
        let Some((version, predownload)) = self.download.prechecking.take() else {
            debug!("PRECHECK verdict with no download waiting for it ignored");
            return;
        };
        match result {
            Ok(()) => self.open_download(&version, predownload, now),
            Err(why) => {
                self.fail_download(
                    &format!("image download cannot start: {why}"),
                    predownload,
                    true,
                    now,
                );
            }
        }
    }

    /// The agent's own PRECHECK (room in the download directory), open the download file,
    /// send the Image Data Request.
    fn open_download(&mut self, version: &str, predownload: bool, now: Instant) {
        let running = self.cfg.versions.primary.clone();
        self.download.store.begin_image(version, &running);
        let image = self.cfg.identity.image_type.clone();
        let space = match self
            .download
            .store
            .precheck(self.cfg.download.required_bytes)
        {
            Ok(s) => s,
            Err(e) => {
                info!("upgrade.sh: {e}");
                return self.fail_download(
                    &format!("image download cannot start: {e}"),
                    predownload,
                    true,
                    now,
                );
            }
        };
        info!(
            "upgrade.sh: {}: OK available {}, required {}",
            self.download.store.room(),
            space.available_kib,
            space.required_kib
        );
        self.download.space = Some(space);
        if let Err(e) = self.download.store.open() {
            return self.fail_download(
                &format!("cannot open the image file: {e}"),
                predownload,
                true,
                now,
            );
        }
        info!(
            "wtpOpenImgFile: request {image}, local {}",
            self.download.store.location()
        );
        self.download.transfer = Some(Transfer::new(&image, version, predownload, now));
        self.download.version = Some(version.to_string());
        self.download.state = DownloadState::Initiated;
        self.download.image_deadline = Some(now + self.cfg.timers.image_data_start);
        self.download.pending_request = true;
        self.send_pending_image_request(now);
    }

    /// Sends the Image Data Request once no other request is outstanding.
    pub(super) fn send_pending_image_request(&mut self, now: Instant) {
        if !self.download.pending_request || self.requester.busy() {
            return;
        }
        let Some(peer) = self.peer.as_ref().map(|p| p.control) else {
            return;
        };
        self.download.pending_request = false;
        let seq = self.requester.next_seq();
        let image = self.cfg.identity.image_type.clone();
        self.builder.start(
            &crate::capwap::Header::control(),
            MessageType::ImageDataRequest as u32,
            seq,
        );
        self.builder.element(&Element::ImageIdentifier {
            vendor: self.cfg.identity.vendor_id,
            name: &image,
        });
        self.builder.element(&Element::InitiateDownload);
        self.put_fleet_offer();
        self.send_request(MessageType::ImageDataRequest, now);
        let f = &self.download.fleet;
        if self.cfg.fleet.enabled {
            // The seed's words: slaveStatus 1 for an AP that was sent to a primary (it asks
            // again after an attempt at it failed), 0 otherwise.
            info!(
                "Image Data Request sent to {}, fileName [{image}], slaveStatus {}{}",
                peer.ip(),
                (f.role == crate::capwap::fleet::Role::Subordinate) as u8,
                if f.retry > 0 {
                    format!(", retry {}", f.retry)
                } else {
                    String::new()
                }
            );
        } else {
            info!(
                "Image Data Request sent to {}, fileName [{image}]",
                peer.ip()
            );
        }
    }

    /// The controller's answer to our Image Data Request.
    pub(super) fn on_image_response(
        &mut self,
        result: Option<u32>,
        info: Option<(u32, [u8; 16])>,
        direction: Option<crate::capwap::fleet::Direction>,
        now: Instant,
    ) {
        let Some(peer) = self.peer.as_ref().map(|p| p.control) else {
            return;
        };
        info!("Image Data Response from {}", peer.ip());
        let code = result.unwrap_or(0);
        let ok = ResultCode::from_u32(code).is_some_and(|r| r.is_success());
        if !ok {
            let why = ResultCode::from_u32(code)
                .map(|r| r.describe())
                .unwrap_or("unknown");
            warn!("AC refused the image request with result code: {code} ({why})");
            let predownload = self
                .download
                .transfer
                .as_ref()
                .is_some_and(|t| t.predownload);
            return self.fail_download(
                &format!("controller refused the image: result code {code} ({why})"),
                predownload,
                false,
                now,
            );
        }
        info!("AC accepted previous sent request with result code: {code}");
        if let (Some((size, md5)), Some(t)) = (info, self.download.transfer.as_mut()) {
            t.set_info(size, md5);
            info!("Image Information: {size} bytes, MD5 {}", hex(&md5));
            if let Some(reason) = self.too_large(size as u64) {
                warn!("{reason}");
                // The AC's first Image Data Request is answered with the refusal.
                self.download.refusal = Some(reason);
            }
        }
        self.download.image_deadline = Some(now + self.cfg.timers.image_data_start);
        if let Some(d) = direction {
            if self.download.refusal.is_none() {
                self.follow_direction(d, now);
            }
        }
    }

    /// One Image Data Request from the controller: a block, the last block, or an abort.
    pub(super) fn on_image_block(&mut self, msg: &ControlMessage<'_>, now: Instant) {
        let (data_type, data) = match image_data_of(msg) {
            Ok(b) => b,
            Err(code) => return self.send_response(msg.msg_type, msg.seq, Some(code as u32)),
        };
        let predownload = self
            .download
            .transfer
            .as_ref()
            .is_some_and(|t| t.predownload);
        if let Some(reason) = self.download.refusal.take() {
            // §9.1.2: the refusal found earlier answers this request.
            if data_type != image_data_type::ERROR {
                self.send_refusal(msg.msg_type, msg.seq, &reason);
            } else {
                self.send_response(msg.msg_type, msg.seq, Some(ResultCode::Success as u32));
            }
            return self.fail_download(&reason, predownload, false, now);
        }
        match data_type {
            image_data_type::DATA | image_data_type::LAST => {}
            // §4.6.26: Data Type 5, the AC aborts.
            image_data_type::ERROR => {
                self.send_response(msg.msg_type, msg.seq, Some(ResultCode::Success as u32));
                return self.fail_download(
                    "controller aborted the transfer",
                    predownload,
                    false,
                    now,
                );
            }
            other => {
                let code = ResultCode::ImageDataErrorOther as u32;
                self.send_response(msg.msg_type, msg.seq, Some(code));
                let reason = format!("unknown Image Data type {other}");
                return self.fail_download(&reason, predownload, false, now);
            }
        }
        if !self.store_block(msg, data, predownload, now) {
            return;
        }
        self.download.image_deadline = Some(now + self.cfg.timers.image_data_start);
        if data_type == image_data_type::DATA {
            self.send_response(msg.msg_type, msg.seq, Some(ResultCode::Success as u32));
        } else {
            self.last_block(msg, predownload, now);
        }
    }

    /// Counts a block (its hashing follows in `idle_work`) and hands it to the store; only
    /// then is it answered, so an acknowledged block is on disk. False when the download
    /// ended here (the AC was answered with why).
    fn store_block(
        &mut self,
        msg: &ControlMessage<'_>,
        data: &[u8],
        predownload: bool,
        now: Instant,
    ) -> bool {
        let Some(t) = self.download.transfer.as_mut() else {
            return false;
        };
        if t.msgs == 0 {
            self.download.state = if predownload {
                DownloadState::Predownloading
            } else {
                DownloadState::Downloading
            };
        }
        if let Err(e) = t.block(data) {
            let code = ResultCode::ImageDataErrorInvalidDataLength as u32;
            self.send_response(msg.msg_type, msg.seq, Some(code));
            self.fail_download(&e.to_string(), predownload, false, now);
            return false;
        }
        if let Some(pct) = t.progress_step() {
            info!(".......... {pct}% ({} bytes)", t.bytes);
        }
        if let Err(e) = self.download.store.write(data) {
            let reason = match e {
                StoreError::Refused(why) => why,
                e => format!("cannot write the image: {e}"),
            };
            self.send_refusal(msg.msg_type, msg.seq, &reason);
            self.fail_download(&reason, predownload, false, now);
            return false;
        }
        true
    }

    /// The last block is stored: check size and MD5 (Image Information, §4.6.28), close the
    /// file, and ask for the verdict on the whole image; the answer to this request waits for
    /// it (§9.1.2).
    fn last_block(&mut self, msg: &ControlMessage<'_>, predownload: bool, now: Instant) {
        let Some(mut t) = self.download.transfer.take() else {
            return;
        };
        info!("> {} bytes, {} msgs, {} last", t.bytes, t.msgs, t.last_len);
        let digests = match t.finish() {
            Ok(d) => d,
            Err(e) => {
                let code = match e {
                    DownloadError::Md5Mismatch { .. } => ResultCode::ImageDataErrorInvalidChecksum,
                    DownloadError::SizeMismatch { .. } => {
                        ResultCode::ImageDataErrorInvalidDataLength
                    }
                };
                self.send_response(msg.msg_type, msg.seq, Some(code as u32));
                return self.fail_download(&e.to_string(), predownload, false, now);
            }
        };
        if let Err(e) = self.download.store.finish() {
            let reason = match e {
                StoreError::Refused(why) => why,
                e => format!("cannot store the image: {e}"),
            };
            self.send_refusal(msg.msg_type, msg.seq, &reason);
            return self.fail_download(&reason, predownload, false, now);
        }
        self.download.image_deadline = None;
        info!("Last block stored, IsPre {}", predownload as u8);
        info!("Image transfer completed from WLC, last 1");
        info!(
            "Image SHA-256 {} ({} bytes) at {}",
            hex(&digests.sha256),
            digests.size,
            self.download.store.location()
        );
        self.hook(
            HookStage::Predownload,
            Some(t.version.clone()),
            predownload,
            None,
        );
        self.download.verifying = Some(PendingVerdict {
            answer: Some((msg.msg_type, msg.seq)),
            version: t.version.clone(),
            predownload,
        });
        self.actions.push_back(super::Action::VerifyImage {
            version: t.version.clone(),
            location: self.download.store.location(),
            predownload,
        });
    }

    /// The driver's answer to [`Action::VerifyImage`](super::Action::VerifyImage): `Ok` when
    /// the whole image passed and may be written, `Err(why)` when it was refused. Answers the
    /// AC's last Image Data Request with the verdict; on success the install follows
    /// ([`Action::InstallImage`](super::Action::InstallImage)), on a refusal the download
    /// ends as any failed one (retry with backoff).
    pub fn image_verified(&mut self, result: Result<(), InstallError>, now: Instant) {
        let Some(p) = self.download.verifying.take() else {
            debug!("image verdict with no transfer awaiting it ignored");
            return;
        };
        match result {
            Ok(()) => {
                if let Some((msg_type, seq)) = p.answer {
                    self.send_response(msg_type, seq, Some(ResultCode::Success as u32));
                }
                self.download.retry_count = 0;
                self.download.last_error = None;
                self.download.next_retry = None;
                if p.predownload {
                    self.download.state = DownloadState::CompletedPredownloading;
                    self.download.predownloaded = Some(p.version.clone());
                    info!(
                        "Predownload of {} complete: waiting for a Reset Request that names it",
                        p.version
                    );
                } else {
                    self.download.state = DownloadState::CompletedDownloading;
                }
                self.hook(
                    HookStage::Upgrade,
                    Some(p.version.clone()),
                    p.predownload,
                    None,
                );
                self.actions.push_back(super::Action::InstallImage {
                    version: p.version,
                    location: self.download.store.location(),
                    predownload: p.predownload,
                });
            }
            Err(e) => {
                let reason = e.to_string();
                match p.answer {
                    Some((msg_type, seq)) => {
                        self.send_refusal(msg_type, seq, &reason);
                        self.fail_download(&reason, p.predownload, false, now);
                    }
                    // Out of band: a WTP Event Request tells the AC.
                    None => self.fail_download(&reason, p.predownload, true, now),
                }
            }
        }
    }

    /// One of the seed's `upgrade.sh` moments: its line in the log, always (the log reads as
    /// the seed's), and the board's hook when it has one.
    pub(super) fn hook(
        &mut self,
        stage: HookStage,
        version: Option<String>,
        predownload: bool,
        reason: Option<&str>,
    ) {
        info!("{}", super::hook::called_line(stage));
        if !self.cfg.hooks {
            return;
        }
        self.actions.push_back(super::Action::Hook(HookCall {
            stage,
            version,
            location: self.download.store.location(),
            predownload,
            reason: reason.map(str::to_string),
        }));
    }

    /// Answers an AC's Image Data Request with Image Data Error (Other Error) and why.
    fn send_refusal(&mut self, request_type: u32, seq: u8, reason: &str) {
        let vendor = self.cfg.identity.vendor_id;
        self.send_built_response(seq, |b| {
            super::messages::response_with_reason(
                b,
                request_type,
                seq,
                ResultCode::ImageDataErrorOther as u32,
                vendor,
                VENDOR_ELEMENT_DOWNLOAD_FAILURE,
                reason,
            )
        });
    }

    /// PRECHECK's refusal of an image of `size` bytes that the download directory has no
    /// room for (the seed's `upgrade.sh` words), `None` when it fits.
    pub(super) fn too_large(&self, size: u64) -> Option<String> {
        let space = self.download.space?;
        let needed_kib = size.div_ceil(1024);
        (needed_kib > space.available_kib).then(|| {
            format!(
                "image download cannot start: {}: NOT OK available {}, required {needed_kib}",
                self.download.store.room(),
                space.available_kib
            )
        })
    }

    /// Bytes received of the transfer under way, if one is.
    pub fn download_bytes(&self) -> Option<u64> {
        self.download.transfer.as_ref().map(|t| t.bytes)
    }

    /// The version of the download under way or last started (the one the controller
    /// announced for it).
    pub fn download_version(&self) -> Option<&str> {
        self.download.version.as_deref()
    }

    /// Where the download is being written.
    pub fn download_location(&self) -> String {
        self.download.store.location()
    }

    /// The driver found the transfer under way unusable before its end (the manifest at the
    /// head of the image refused by this board): the AC's next Image Data Request is answered
    /// with the refusal (RFC 5415 §9.1.2), and the download ends as any failed one (the partial
    /// file removed, retry with backoff). If no request comes, ImageDataStartTimer ends it.
    pub fn abort_download(&mut self, reason: &str) {
        if self.download.transfer.is_some() && self.download.refusal.is_none() {
            warn!("Image download refused: {reason}; the AC's next request is answered so");
            self.download.refusal = Some(reason.to_string());
        }
    }

    /// Work that may wait until the answers of this turn are sent: hashing the blocks
    /// received and writing out the store's buffer. The driver calls it before it sleeps.
    pub fn idle_work(&mut self) {
        if let Some(t) = self.download.transfer.as_mut() {
            t.catch_up();
        }
        self.download.store.idle();
    }

    /// The driver's answer to [`Action::InstallImage`](super::Action::InstallImage).
    pub fn install_done(&mut self, result: Result<(), InstallError>, now: Instant) {
        let predownload = self.download.state == DownloadState::CompletedPredownloading;
        match result {
            Ok(()) if predownload => {
                info!(
                    "Image {} staged for activation",
                    self.download.predownloaded.as_deref().unwrap_or("?")
                );
                // The other slot now holds it as a good backup: the status and the next Join
                // say so.
                if let Some(v) = &self.download.predownloaded {
                    self.cfg.versions.backup = Some(v.clone());
                }
                self.fleet_staged(now);
            }
            Ok(()) => {
                // §2.3.1 Image Data to Reset (k); §9.1 Figure 6.
                self.set_state(State::Reset, now);
                self.teardown(
                    "image installed",
                    AfterTeardown::Reboot("new image installed".into()),
                    now,
                );
            }
            Err(e) => {
                let reason = e.to_string();
                // The AC's last request was answered already (the image verified): in Run a
                // WTP Event Request tells it (§9.4); in Image Data the teardown and the
                // status say it.
                self.download.predownloaded = None;
                self.fail_download(&format!("install failed: {reason}"), predownload, true, now);
            }
        }
    }

    /// Ends a transfer that failed: removes the partial file, records the error, tells the
    /// controller when the failure is ours, and schedules the retry. A predownload fails
    /// without leaving Run; a download at Join restarts through DTLS Teardown.
    pub(super) fn fail_download(
        &mut self,
        reason: &str,
        predownload: bool,
        tell_ac: bool,
        now: Instant,
    ) {
        let image = self.cfg.identity.image_type.clone();
        warn!("Aborting image download({reason}), {image}");
        self.stop_fetch();
        let version = self.download.version.clone();
        self.hook(HookStage::Abort, version, predownload, Some(reason));
        self.download.transfer = None;
        self.download.prechecking = None;
        self.download.pending_request = false;
        self.download.image_deadline = None;
        self.download.refusal = None;
        self.download.verifying = None;
        let wait = self.record_failure(reason, now);
        // RFC 5415 §9.4: the WTP Event Request is sent in Run only. In Image Data the failure
        // reached the AC as the Result Code of an Image Data Response, or not at all.
        if tell_ac && self.state == State::Run {
            self.send_failure_event(reason, now);
        }
        if predownload && self.state == State::Run {
            self.download.predownload_retry = self
                .download
                .predownload_version
                .clone()
                .map(|v| (v, now + wait));
        } else if self.state.has_session() {
            self.teardown(reason, AfterTeardown::RetryAfter(wait), now);
        }
    }

    /// The bookkeeping of every failed download: the partial file removed, the error and the
    /// retry count recorded, the next attempt scheduled with backoff, the backup forgotten if
    /// the attempt destroyed it (slot mode). Returns the wait.
    pub(super) fn record_failure(&mut self, reason: &str, now: Instant) -> Duration {
        let wait = self.retry_backoff(self.download.retry_count.saturating_add(1));
        self.download.record_failure(reason, now, wait);
        if self.download.store.backup_lost() {
            if let Some(b) = self.cfg.versions.backup.take() {
                info!(
                    "The other slot no longer holds {b}: it was marked invalid for this download"
                );
            }
        }
        wait
    }

    /// Tells the controller why the download failed: a WTP Event Request with our vendor
    /// element, if no other request is outstanding. Run state only (§9.4).
    fn send_failure_event(&mut self, reason: &str, now: Instant) {
        if self.requester.busy() {
            return;
        }
        let seq = self.requester.next_seq();
        let vendor = self.cfg.identity.vendor_id;
        self.builder.start(
            &crate::capwap::Header::control(),
            MessageType::WtpEventRequest as u32,
            seq,
        );
        self.builder.element(&Element::VendorSpecific {
            vendor,
            element_id: VENDOR_ELEMENT_DOWNLOAD_FAILURE,
            data: reason.as_bytes(),
        });
        self.send_request(MessageType::WtpEventRequest, now);
    }

    /// The next retry delay: base × 2^(n-1), capped, then a random 50–100 % of it.
    pub(super) fn retry_backoff(&mut self, retry: u32) -> Duration {
        let p = &self.cfg.download;
        let n = retry.saturating_sub(1).min(16);
        let full = p.retry_base.saturating_mul(1u32 << n).min(p.retry_max);
        self.jitter(full * 2).min(full).max(full / 2)
    }

    /// The ImageDataStartTimer expired.
    pub(super) fn image_timer(&mut self, now: Instant) {
        self.download.image_deadline = None;
        let Some(t) = &self.download.transfer else {
            return;
        };
        if let Some(reason) = self.download.refusal.take() {
            let predownload = t.predownload;
            return self.fail_download(&reason, predownload, false, now);
        }
        let reason = if t.msgs == 0 {
            "image download cannot start"
        } else {
            "image download stalled"
        };
        if t.predownload {
            // A predownload fails without leaving Run.
            self.fail_download(reason, true, false, now);
        } else {
            // As the seed: restart CAPWAP, and the teardown cleans the download up.
            self.teardown(reason, AfterTeardown::Restart, now);
        }
    }

    /// A Configuration Update Request in Run that names an image (Figure 8 and 9).
    pub(super) fn on_predownload_request(
        &mut self,
        version: &str,
        msg: &ControlMessage<'_>,
        now: Instant,
    ) {
        let v = &self.cfg.versions;
        let have = version == v.primary
            || v.backup.as_deref() == Some(version)
            || self.download.predownloaded.as_deref() == Some(version);
        if have {
            info!("Predownload of {version} requested: Image Already Present");
            let code = ResultCode::ImageDataErrorImageAlreadyPresent as u32;
            return self.send_response(msg.msg_type, msg.seq, Some(code));
        }
        if let Some(hold) = self.cfg.hold.clone() {
            let reason = format!("predownload of {version} refused: {}", hold.reason());
            warn!("{reason}");
            self.download.last_error = Some(reason.clone());
            return self.send_refusal(msg.msg_type, msg.seq, &reason);
        }
        self.send_response(msg.msg_type, msg.seq, Some(ResultCode::Success as u32));
        if self
            .download
            .transfer
            .as_ref()
            .is_some_and(|t| t.version == version)
            || self
                .download
                .prechecking
                .as_ref()
                .is_some_and(|(v, _)| v == version)
        {
            return;
        }
        info!("Predownload of {version} requested by the AC");
        self.download.predownload_version = Some(version.to_string());
        self.download.predownload_retry = None;
        self.start_download(version, true, now);
    }

    /// A Reset Request that names an image: activate the predownloaded one.
    pub(super) fn on_activate(&mut self, version: &str, msg: &ControlMessage<'_>, now: Instant) {
        if let Some(hold) = &self.cfg.hold {
            warn!(
                "Reset Request names {version}: not switching: {}",
                hold.reason()
            );
            let code = ResultCode::ResetFailureUnableToReset as u32;
            return self.send_response(msg.msg_type, msg.seq, Some(code));
        }
        if self.download.predownloaded.as_deref() != Some(version)
            && self.cfg.versions.backup.as_deref() != Some(version)
        {
            warn!("Reset Request names {version}, which this AP does not have");
            let code = ResultCode::ResetFailureUnableToReset as u32;
            return self.send_response(msg.msg_type, msg.seq, Some(code));
        }
        info!("Reset Request activates {version}");
        self.send_response(msg.msg_type, msg.seq, Some(ResultCode::Success as u32));
        self.actions.push_back(super::Action::ActivateImage {
            version: version.to_string(),
        });
        // §2.3.1 Run to Reset (r); §9.1 Figure 9.
        self.set_state(State::Reset, now);
        self.teardown(
            "reset requested by the AC",
            AfterTeardown::Reboot(format!("activate {version}")),
            now,
        );
    }

    /// The booted slot was marked good: a trial hold ends. If the controller runs another
    /// version that the hold kept the WTP from downloading, CAPWAP restarts to download it now
    /// (the other slot may be written again: the booted one is proven good).
    pub fn release_hold(&mut self, now: Instant) {
        if !matches!(self.cfg.hold, Some(super::Hold::Trial(_))) {
            return;
        }
        self.cfg.hold = None;
        let Some(version) = self.download.deferred_version.take() else {
            return;
        };
        if version == self.cfg.versions.primary {
            return;
        }
        self.download.last_error = None;
        info!("Trial over; the controller runs {version}: restarting CAPWAP to download it");
        self.teardown(
            &format!("slot marked good, controller version {version}"),
            AfterTeardown::Restart,
            now,
        );
    }

    /// The parts of the status that change what `wtpd status` shows.
    pub fn status_key(&self) -> StatusKey {
        (self.state, self.download.status_key())
    }

    /// What `wtpd status` shows of the download.
    pub fn download_status(&self, now: Instant) -> DownloadStatus {
        self.download.status(now)
    }
}

/// The Image Data element (§4.6.26) of an AC's Image Data Request, or the Result Code that
/// refuses the request: a malformed element, or none.
fn image_data_of<'m>(msg: &ControlMessage<'m>) -> Result<(u8, &'m [u8]), ResultCode> {
    let mut block = None;
    for raw in msg.elements() {
        match raw.and_then(Element::parse) {
            Ok(Element::ImageData { data_type, data }) => block = Some((data_type, data)),
            Ok(_) => {}
            Err(_) => return Err(ResultCode::ImageDataErrorInvalidDataLength),
        }
    }
    block.ok_or(ResultCode::FailureMissingMandatoryElement)
}
