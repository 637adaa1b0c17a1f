//! Serving images to WTPs (RFC 5415 §9.1, the AC's side): Image Information in the Image Data
//! Response, then the blocks as the AC's own Image Data Requests, one outstanding at a time, the
//! last one with Data Type 2. Predownload in Run (Figure 8) and activation by a Reset Request
//! that names the image (Figure 9). The fault switches of [`Faults`] make the failures of the
//! seed happen on purpose, for tests.

use std::time::Duration;

use log::{info, warn};

use std::net::SocketAddr;

use super::{display_name, Ac, AcTransmit, SessionState};
use crate::capwap::element::image_data_type;
use crate::capwap::header::Header;
use crate::capwap::{ControlMessage, Element, MessageType, ResultCode};
use crate::image::download::hex;
use crate::image::source::ImageInfo;
use crate::time::Instant;
use crate::wtp::Channel;

/// Faults acsim injects into image transfers, for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Stop sending after this many blocks (the WTP's ImageDataStartTimer fires).
    pub stall_after_blocks: Option<u64>,
    /// Do not send the first copy of this block (numbered from 1); the retransmission carries it.
    pub drop_block: Option<u64>,
    /// Send this block twice (the WTP answers the copy from its cache).
    pub duplicate_block: Option<u64>,
    /// Tear the DTLS session down once this many bytes were sent.
    pub teardown_at_byte: Option<u64>,
    /// Send Data Type 5 (the AC aborts) instead of this block.
    pub abort_at_block: Option<u64>,
    /// Announce a wrong MD5 in Image Information.
    pub wrong_md5: bool,
    /// Answer the WTP's Image Data Request with this Result Code instead of serving.
    pub refuse_result: Option<u32>,
}

/// Where one WTP's download stands, as `acsim status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcDownload {
    pub image: String,
    pub version: String,
    pub predownload: bool,
    pub size: u64,
    pub sent: u64,
    pub blocks: u64,
    /// "Initiated", "Downloading", "Predownloading", "Complete", "Failed: ...".
    pub status: String,
    pub started: Option<Instant>,
    pub finished: Option<Instant>,
    /// No more blocks are sent (complete, failed, or a stall fault).
    pub(super) halted: bool,
    pub(super) info: Option<ImageInfo>,
    /// A block was sent and waits for its response.
    pub(super) waiting: bool,
}

impl AcDownload {
    pub fn percent(&self) -> Option<u8> {
        if self.size == 0 {
            return None;
        }
        Some(((self.sent.min(self.size) * 100) / self.size) as u8)
    }

    pub fn eta(&self, now: Instant) -> Option<Duration> {
        let started = self.started?;
        if self.finished.is_some() {
            return Some(Duration::ZERO);
        }
        let elapsed = now.saturating_since(started);
        if self.sent == 0 || elapsed.is_zero() {
            return None;
        }
        let left = self.size.saturating_sub(self.sent) as f64;
        Some(Duration::from_secs_f64(
            left * elapsed.as_secs_f64() / self.sent as f64,
        ))
    }
}

impl Ac {
    /// The WTP's Image Data Request (Image Identifier + Initiate Download).
    pub(super) fn on_image_request(
        &mut self,
        peer: SocketAddr,
        msg: &ControlMessage<'_>,
        now: Instant,
    ) {
        let mut name = None;
        let mut initiate = false;
        let mut data = false;
        for raw in msg.elements() {
            match raw.and_then(Element::parse) {
                Ok(Element::ImageIdentifier { name: n, .. }) => name = Some(n.to_string()),
                Ok(Element::InitiateDownload) => initiate = true,
                Ok(Element::ImageData { .. }) => data = true,
                Ok(_) => {}
                Err(e) => return self.malformed(peer, "Image Data Request", &e),
            }
        }
        let Some(name) = name.filter(|_| initiate && !data) else {
            let code = ResultCode::FailureMissingMandatoryElement as u32;
            return self.respond(peer, msg.msg_type, msg.seq, &[Element::ResultCode(code)]);
        };
        let wtp = self
            .sessions
            .get(&peer)
            .map(display_name)
            .unwrap_or_default();
        if let Some(code) = self.cfg.faults.refuse_result {
            info!("Image Data Request from {wtp} for {name} refused with result code {code} (fault switch)");
            self.image_failed(peer, &format!("refused with result code {code}"), now);
            return self.respond(peer, msg.msg_type, msg.seq, &[Element::ResultCode(code)]);
        }
        let info = match self.source.open(&name) {
            Ok(i) => i,
            Err(e) => {
                warn!("{e}");
                self.image_failed(peer, &e.to_string(), now);
                let code = ResultCode::ImageDataErrorOther as u32;
                return self.respond(peer, msg.msg_type, msg.seq, &[Element::ResultCode(code)]);
            }
        };
        let mut md5 = info.md5;
        if self.cfg.faults.wrong_md5 {
            md5[0] ^= 0xff;
        }
        let version = self.cfg.image_version.clone().unwrap_or_default();
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        let predownload = s.state == SessionState::Run;
        if !predownload {
            s.state = SessionState::ImageData;
        }
        s.deadline = Some(
            now + if predownload {
                self.cfg.timers.run_budget()
            } else {
                self.cfg.timers.image_data_budget()
            },
        );
        s.download = Some(AcDownload {
            image: name.clone(),
            version,
            predownload,
            size: info.size,
            status: "Initiated".into(),
            started: Some(now),
            info: Some(info),
            ..AcDownload::default()
        });
        info!(
            "Image Data Request from {wtp}: serving {name}, {} bytes, MD5 {}{}",
            info.size,
            hex(&md5),
            if predownload { " (predownload)" } else { "" }
        );
        self.respond(
            peer,
            msg.msg_type,
            msg.seq,
            &[
                Element::ResultCode(ResultCode::Success as u32),
                Element::ImageInformation {
                    file_size: info.size as u32,
                    md5,
                },
            ],
        );
        self.pump_image(peer, now);
    }

    fn image_failed(&mut self, peer: SocketAddr, reason: &str, now: Instant) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        let d = s.download.get_or_insert_with(AcDownload::default);
        d.status = format!("Failed: {reason}");
        d.halted = true;
        d.finished = Some(now);
        info!("AP Event: {} AP Image Download Failed", display_name(s));
    }

    /// Sends the next block when nothing is outstanding.
    pub(super) fn pump_image(&mut self, peer: SocketAddr, now: Instant) {
        let faults = self.cfg.faults.clone();
        let block_size = self.cfg.block_size;
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        let name = display_name(s);
        let Some(d) = s.download.as_mut() else { return };
        if d.halted || d.waiting || s.requester.busy() {
            return;
        }
        let n = d.blocks + 1;
        if faults.stall_after_blocks.is_some_and(|k| d.blocks >= k) {
            info!(
                "Stalling the transfer to {name} after {} blocks (fault switch)",
                d.blocks
            );
            d.halted = true;
            return;
        }
        if faults.teardown_at_byte.is_some_and(|b| d.sent >= b) {
            let sent = d.sent;
            info!("Tearing DTLS down at byte {sent} (fault switch)");
            self.drop_session(peer, &format!("fault: teardown at byte {sent}"));
            return;
        }
        let seq = s.requester.next_seq();
        let abort = faults.abort_at_block == Some(n);
        let mut block = std::mem::take(&mut self.block_buf);
        block.resize(block_size.max(1), 0);
        let len = if abort {
            0
        } else {
            match self.source.read_at(&d.image, d.sent, &mut block) {
                Ok(l) => l,
                Err(e) => {
                    warn!("{e}");
                    self.block_buf = block;
                    return self.image_failed(peer, &e.to_string(), now);
                }
            }
        };
        let last = d.sent + len as u64 >= d.size;
        let data_type = if abort {
            image_data_type::ERROR
        } else if last {
            image_data_type::LAST
        } else {
            image_data_type::DATA
        };
        self.builder.start(
            &Header::control(),
            MessageType::ImageDataRequest as u32,
            seq,
        );
        self.builder.element(&Element::ImageData {
            data_type,
            data: &block[..len],
        });
        let pkt = self.builder.finish();
        self.block_buf = block;
        let Some(bytes) = s
            .requester
            .send(MessageType::ImageDataRequest as u32, pkt, now)
        else {
            return;
        };
        let to = AcTransmit {
            to: peer,
            channel: Channel::ControlSecure,
        };
        if faults.drop_block == Some(n) {
            info!("Dropping the first copy of block {n} (fault switch)");
        } else {
            self.out.push(to, bytes);
        }
        if faults.duplicate_block == Some(n) {
            info!("Sending block {n} twice (fault switch)");
            self.out.push(to, bytes);
        }
        d.blocks = n;
        d.sent += len as u64;
        d.waiting = true;
        if d.status == "Initiated" {
            d.status = if d.predownload {
                "Predownloading"
            } else {
                "Downloading"
            }
            .into();
        }
        if abort {
            info!("Aborting the transfer to {name} at block {n} (fault switch)");
            d.halted = true;
            d.status = "Failed: aborted by the AC".into();
        }
    }

    /// The WTP's response to a block.
    pub(super) fn on_image_block_response(
        &mut self,
        peer: SocketAddr,
        result: Option<u32>,
        now: Instant,
    ) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        let echo_budget = if s.state == SessionState::ImageData {
            self.cfg.timers.image_data_budget()
        } else {
            self.cfg.timers.run_budget()
        };
        let name = display_name(s);
        let Some(d) = s.download.as_mut() else { return };
        d.waiting = false;
        s.deadline = Some(now + echo_budget);
        let code = result.unwrap_or(0);
        if !ResultCode::from_u32(code).is_some_and(|r| r.is_success()) {
            let why = ResultCode::from_u32(code)
                .map(|r| r.describe())
                .unwrap_or("unknown");
            warn!(
                "WTP {name} refused block {} with result code {code} ({why})",
                d.blocks
            );
            return self.image_failed(peer, &format!("WTP result code {code} ({why})"), now);
        }
        if d.halted {
            return;
        }
        if d.sent >= d.size {
            d.halted = true;
            d.finished = Some(now);
            d.status = "Complete".into();
            info!(
                "AP Event: {name} AP Image Download Success ({} bytes in {} blocks)",
                d.sent, d.blocks
            );
            return;
        }
        self.pump_image(peer, now);
    }

    /// Asks a WTP in Run to predownload the image (Configuration Update Request with an Image
    /// Identifier, RFC 5415 Figure 8). False when it is not in Run or a request is outstanding.
    pub fn predownload(&mut self, peer: SocketAddr, now: Instant) -> bool {
        let Some(version) = self.cfg.image_version.clone() else {
            return false;
        };
        let vendor = self.cfg.vendor_id;
        self.send_admin_request(
            peer,
            MessageType::ConfigurationUpdateRequest,
            &version,
            vendor,
            now,
            "predownload",
        )
    }

    /// Asks a WTP to activate the image by a Reset Request that names it (Figure 8/9).
    pub fn activate(&mut self, peer: SocketAddr, now: Instant) -> bool {
        let Some(version) = self.cfg.image_version.clone() else {
            return false;
        };
        let vendor = self.cfg.vendor_id;
        let ok = self.send_admin_request(
            peer,
            MessageType::ResetRequest,
            &version,
            vendor,
            now,
            "activate",
        );
        if ok {
            if let Some(s) = self.sessions.get_mut(&peer) {
                s.state = SessionState::Reset;
            }
        }
        ok
    }

    fn send_admin_request(
        &mut self,
        peer: SocketAddr,
        mt: MessageType,
        version: &str,
        vendor: u32,
        now: Instant,
        what: &str,
    ) -> bool {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return false;
        };
        if s.state != SessionState::Run || s.requester.busy() {
            return false;
        }
        let seq = s.requester.next_seq();
        self.builder.start(&Header::control(), mt as u32, seq);
        self.builder.element(&Element::ImageIdentifier {
            vendor,
            name: version,
        });
        let pkt = self.builder.finish();
        if let Some(bytes) = s.requester.send(mt as u32, pkt, now) {
            self.out.push(
                AcTransmit {
                    to: peer,
                    channel: Channel::ControlSecure,
                },
                bytes,
            );
        }
        info!(
            "{} {version} sent to WTP {} ({peer})",
            if what == "activate" {
                "Activate"
            } else {
                "Predownload"
            },
            display_name(s)
        );
        true
    }

    /// The answer to a predownload request.
    pub(super) fn on_update_response(&mut self, peer: SocketAddr, result: Option<u32>) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        let code = result.unwrap_or(0);
        if code == ResultCode::ImageDataErrorImageAlreadyPresent as u32 {
            info!("WTP {} already has the image", display_name(s));
            let version = self.cfg.image_version.clone().unwrap_or_default();
            s.download = Some(AcDownload {
                version,
                predownload: true,
                status: "Complete".into(),
                halted: true,
                ..AcDownload::default()
            });
        } else if code != 0 {
            warn!(
                "WTP {} refused the predownload with result code {code}",
                display_name(s)
            );
        }
    }

    /// Marks an unfinished transfer as failed when the session ends.
    pub(super) fn abandon_download(s: &mut super::WtpSession, reason: &str) {
        if let Some(d) = s.download.as_mut() {
            if d.finished.is_none() && !d.status.starts_with("Failed") {
                d.status = format!("Failed: {reason}");
                d.halted = true;
                info!("AP Event: {} AP Image Download Failed", display_name(s));
            }
        }
    }
}
