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
use crate::capwap::fleet::{Direction, Method, Offer, Role};
use crate::capwap::header::Header;
use crate::capwap::{Channel, ControlMessage, Element, MessageType, ResultCode};
use crate::image::download::hex;
use crate::image::source::{ImageInfo, SourceError};
use crate::time::Instant;

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
    /// "Initiated", "Downloading", "Predownloading", "Complete", "Not Supported", "Failed: ...";
    /// `ac::status` reads them.
    pub status: String,
    pub started: Option<Instant>,
    pub finished: Option<Instant>,
    /// No more blocks are sent (complete, failed, or a stall fault).
    pub(super) halted: bool,
    pub(super) info: Option<ImageInfo>,
    /// A block was sent and waits for its response.
    pub(super) waiting: bool,
    /// The WTP's Image Data Request (type, sequence number) not answered yet: the image
    /// server has not said whether it has the file.
    pub(super) pending_request: Option<(u32, u8)>,
    /// The next block has not arrived from the image server yet.
    pub(super) starved: bool,
    /// The image's whole size once certain (the last block is the one that reaches it).
    pub(super) total: Option<u64>,
    /// The block with Data Type 2 went out.
    pub(super) last_sent: bool,
    /// Why the previous transfer to this WTP failed, kept while it retries.
    pub last_error: Option<String>,
    /// The backup version the WTP reported before this predownload completed and took its
    /// place, to put back if the WTP then says it could not keep the image.
    pub(super) replaced_backup: Option<String>,
    /// Waiting for one of the `max_transfers` transfers to end (shown as Initiated).
    pub queued: bool,
    /// Counted among the transfers under way.
    pub(super) queued_pass: bool,
    /// Copies of the WTP's Image Data Request that came while it waited unanswered (the
    /// WTP's retransmissions, RFC 5415 §4.5.3).
    pub(super) request_copies: u32,
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
        let mut offer = None;
        for raw in msg.elements() {
            match raw.and_then(Element::parse) {
                Ok(Element::ImageIdentifier { name: n, .. }) => name = Some(n.to_string()),
                Ok(Element::VendorSpecific {
                    vendor,
                    element_id: crate::capwap::vendor::FLEET_OFFER,
                    data,
                }) if vendor == self.cfg.vendor_id => match Offer::parse(data) {
                    Ok(o) => offer = Some(o),
                    Err(e) => info!("fleet offer from {peer} ignored: {e}"),
                },
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
        let max_retransmit = self.cfg.timers.max_retransmit;
        if let Some(d) = self
            .sessions
            .get_mut(&peer)
            .and_then(|s| s.download.as_mut())
        {
            if d.pending_request == Some((msg.msg_type, msg.seq)) {
                // The WTP repeated its request while the image server has not answered yet,
                // or while it waits for a transfer slot: the answer goes out as soon as it
                // can. A queued WTP that sent its last retransmission gives up unless this
                // one is answered: its transfer starts now, over max_transfers.
                d.request_copies += 1;
                if d.queued && d.request_copies >= max_retransmit {
                    self.try_open(peer, now);
                }
                return;
            }
        }
        let version = self.cfg.image_version.clone().unwrap_or_default();
        let budget_run = self.cfg.timers.run_budget();
        let budget_image = self.cfg.timers.image_data_budget();
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        let predownload = s.state == SessionState::Run;
        s.deadline = Some(
            now + if predownload {
                budget_run
            } else {
                budget_image
            },
        );
        // The error of the previous attempt, in this session or the one before (the WTP
        // restarts CAPWAP after a failed download), stays visible while it retries.
        let previous = s
            .download
            .as_ref()
            .or_else(|| self.departed.get(&s.info.name)?.download.as_ref());
        let last_error = previous.and_then(|d| {
            d.status
                .strip_prefix("Failed: ")
                .map(str::to_string)
                .or_else(|| d.last_error.clone())
        });
        if let Some(mut o) = offer {
            // The request's offer is the latest word; the type from the Join stays if absent.
            if o.image_type.is_none() {
                o.image_type = s.fleet.offer.as_ref().and_then(|x| x.image_type.clone());
            }
            s.fleet.retry = o.retry;
            s.fleet.offer = Some(o);
        }
        s.fleet.ready = false;
        s.download = Some(AcDownload {
            last_error,
            image: name.clone(),
            version,
            predownload,
            status: "Initiated".into(),
            started: Some(now),
            pending_request: Some((msg.msg_type, msg.seq)),
            ..AcDownload::default()
        });
        let direction = self.direction_for(peer, &name, predownload);
        if let Some(s) = self.sessions.get_mut(&peer) {
            s.fleet.role = direction.as_ref().map(|d| d.role).unwrap_or_default();
            s.fleet.method = direction.as_ref().map(|d| d.method).unwrap_or_default();
        }
        if let Some(d) = direction.filter(|d| d.method != Method::Capwap) {
            return self.send_out_of_band(peer, &wtp, &name, d, (msg.msg_type, msg.seq));
        }
        // Downloads that no transfer uses any more are dropped, so that this one starts afresh
        // when it is not in use by another AP.
        self.retain_sources();
        self.try_open(peer, now);
    }

    /// Answers an Image Data Request whose image comes out of band: Success and the direction;
    /// no block follows, no transfer slot is taken. The WTP's reports tell how it goes.
    fn send_out_of_band(
        &mut self,
        peer: SocketAddr,
        wtp: &str,
        image: &str,
        d: Direction,
        (req_type, req_seq): (u32, u8),
    ) {
        if let Some(dl) = self
            .sessions
            .get_mut(&peer)
            .and_then(|s| s.download.as_mut())
        {
            dl.pending_request = None;
            dl.halted = true;
        }
        let retry = self.sessions.get(&peer).map_or(0, |s| s.fleet.retry);
        let from = match d.method {
            Method::Tftp => format!(
                "TFTP from primary {}",
                d.server.map(|a| a.to_string()).unwrap_or_default()
            ),
            _ => format!("HTTPS {}", d.url.as_deref().unwrap_or("")),
        };
        info!(
            "Image Data Request from {wtp}: {image} by {from} ({}, retry {retry}, predownload)",
            d.role.column()
        );
        let mut v = Vec::with_capacity(128);
        d.encode(&mut v);
        self.respond(
            peer,
            req_type,
            req_seq,
            &[
                Element::ResultCode(ResultCode::Success as u32),
                Element::VendorSpecific {
                    vendor: self.cfg.vendor_id,
                    element_id: crate::capwap::vendor::FLEET_DIRECTION,
                    data: &v,
                },
            ],
        );
    }

    /// Names the images that transfers are using to the source, which drops the others.
    fn retain_sources(&mut self) {
        let in_use: Vec<String> = self
            .sessions
            .values()
            .filter_map(|s| s.download.as_ref())
            .filter(|d| !d.halted)
            .map(|d| d.image.clone())
            .collect();
        self.source.retain(&|n: &str| in_use.iter().any(|i| i == n));
    }

    /// Answers a WTP's pending Image Data Request once the source knows the image (or failed).
    fn try_open(&mut self, peer: SocketAddr, now: Instant) {
        let Some((image, (req_type, req_seq))) = self
            .sessions
            .get(&peer)
            .and_then(|s| s.download.as_ref())
            .and_then(|d| Some((d.image.clone(), d.pending_request?)))
        else {
            return;
        };
        let wtp = self
            .sessions
            .get(&peer)
            .map(display_name)
            .unwrap_or_default();
        let info = match self.source.open(&image) {
            Ok(i) => i,
            Err(SourceError::Pending) => return,
            Err(e) => {
                warn!("{e}");
                if let Some(d) = self
                    .sessions
                    .get_mut(&peer)
                    .and_then(|s| s.download.as_mut())
                {
                    d.pending_request = None;
                }
                self.image_failed(peer, &e.to_string(), now);
                let code = ResultCode::ImageDataErrorOther as u32;
                return self.respond(peer, req_type, req_seq, &[Element::ResultCode(code)]);
            }
        };
        // Image Information needs both the size (within 32 bits) and the MD5.
        let announced = match (info.size, info.md5) {
            (Some(size), Some(mut md5)) if size <= u32::MAX as u64 => {
                if self.cfg.faults.wrong_md5 {
                    md5[0] ^= 0xff;
                }
                Some((size as u32, md5))
            }
            _ => None,
        };
        if !self.take_transfer_slot(peer, now) {
            return;
        }
        let budget_run = self.cfg.timers.run_budget();
        let budget_image = self.cfg.timers.image_data_budget();
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        let Some(d) = s.download.as_mut() else { return };
        d.pending_request = None;
        d.info = Some(info);
        d.total = info.size.filter(|_| info.md5.is_some());
        d.size = info.size.unwrap_or(0);
        d.started = Some(now);
        let predownload = d.predownload;
        if !predownload {
            // §2.3.1 Join to Image Data (f), AC side: the Image Data Response (§9.1.2).
            s.state = SessionState::ImageData;
        }
        s.deadline = Some(
            now + if predownload {
                budget_run
            } else {
                budget_image
            },
        );
        let pre = if predownload { " (predownload)" } else { "" };
        match announced {
            Some((size, md5)) => info!(
                "Image Data Request from {wtp}: serving {image}, {size} bytes, MD5 {}{pre}",
                hex(&md5)
            ),
            None => info!(
                "Image Data Request from {wtp}: serving {image} as it arrives ({}; no Image Information){pre}",
                info.size
                    .map(|n| format!("{n} bytes"))
                    .unwrap_or_else(|| "size not given".into())
            ),
        }
        let mut elements = vec![Element::ResultCode(ResultCode::Success as u32)];
        if let Some((file_size, md5)) = announced {
            elements.push(Element::ImageInformation { file_size, md5 });
        }
        // A primary that downloads by CAPWAP is told it is one: it serves once it has staged.
        let mut role = Vec::new();
        if s.fleet.role == Role::Primary {
            Direction {
                role: Role::Primary,
                ..Direction::default()
            }
            .encode(&mut role);
            elements.push(Element::VendorSpecific {
                vendor: self.cfg.vendor_id,
                element_id: crate::capwap::vendor::FLEET_DIRECTION,
                data: &role,
            });
        }
        self.respond(peer, req_type, req_seq, &elements);
        self.pump_image(peer, now);
    }

    /// A remote source made progress (data arrived, a download began or failed): answers the
    /// requests that waited for the image server and sends the blocks that waited for data.
    pub fn source_progress(&mut self, now: Instant) {
        self.retain_sources();
        let waiting: Vec<(SocketAddr, bool)> = self
            .sessions
            .iter()
            .filter_map(|(p, s)| {
                let d = s.download.as_ref()?;
                if d.pending_request.is_some() {
                    Some((*p, true))
                } else if d.starved && !d.halted {
                    Some((*p, false))
                } else {
                    None
                }
            })
            .collect();
        for (peer, opening) in waiting {
            if opening {
                self.try_open(peer, now);
            } else {
                if let Some(d) = self
                    .sessions
                    .get_mut(&peer)
                    .and_then(|s| s.download.as_mut())
                {
                    d.starved = false;
                }
                self.pump_image(peer, now);
            }
        }
    }

    /// Whether the transfer to `peer` may start: true when it holds one of the
    /// `max_transfers` slots or takes a free one. Otherwise it is queued (shown as Initiated)
    /// with the WTP's Image Data Request unanswered, and [`Ac::start_queued`] answers it when
    /// a slot frees.
    ///
    /// Why before the answer: the Image Data Response starts the WTP's ImageDataStartTimer
    /// (§4.7.9, 30 s by default), and a WTP that has no block by then restarts CAPWAP, its
    /// place in the queue lost. Unanswered, the WTP retransmits its request instead
    /// (§4.5.3: with the RFC's timers for about a minute). A WTP may count its
    /// ImageDataStartTimer from its request, though (wtpd does): so the transfer starts even
    /// over `max_transfers` when the WTP would give up otherwise, a quarter of that timer (at
    /// most 5 s) before it runs out ([`start_by`]), or when its last retransmission comes
    /// (MaxRetransmit, the AC's own counter, taken for the WTP's). A late slot is better than
    /// a WTP that fails, restarts CAPWAP and queues again at the back.
    fn take_transfer_slot(&mut self, peer: SocketAddr, now: Instant) -> bool {
        let limit = self.cfg.max_transfers as usize;
        let max_retransmit = self.cfg.timers.max_retransmit;
        let image_data_start = self.cfg.timers.image_data_start;
        let active = Self::active_transfers(&self.sessions);
        let Some(s) = self.sessions.get_mut(&peer) else {
            return false;
        };
        let name = display_name(s);
        let Some(d) = s.download.as_mut() else {
            return false;
        };
        if d.queued_pass {
            return true;
        }
        if active < limit {
            d.queued = false;
            d.queued_pass = true;
            return true;
        }
        let overdue = start_by(d, image_data_start).is_some_and(|t| t <= now);
        if d.queued && (overdue || d.request_copies >= max_retransmit) {
            let why = if overdue {
                format!(
                    "it has waited {:.1} s of the WTP's ImageDataStartTimer ({} s)",
                    d.started
                        .map_or(0.0, |t| now.saturating_since(t).as_secs_f64()),
                    image_data_start.as_secs_f64()
                )
            } else {
                format!(
                    "its Image Data Request came {} times more, and the WTP gives up after the next",
                    d.request_copies
                )
            };
            info!("Image transfer to {name} starts over max_transfers ({active} under way, max {limit}): {why}");
            d.queued = false;
            d.queued_pass = true;
            self.stats.transfers_over_limit += 1;
            return true;
        }
        if !d.queued {
            info!("Image transfer to {name} queued, its request unanswered: {active} transfers under way (max_transfers {limit})");
        }
        d.queued = true;
        self.queued_transfers = true;
        false
    }

    /// When the queued transfers must start, over `max_transfers` if need be, the earliest
    /// first ([`Ac::take_transfer_slot`]): the state machine's timeout includes it.
    pub(super) fn queued_start_by(&self) -> Option<Instant> {
        if !self.queued_transfers {
            return None;
        }
        let t = self.cfg.timers.image_data_start;
        self.sessions
            .values()
            .filter_map(|s| s.download.as_ref())
            .filter(|d| d.queued && !d.halted)
            .filter_map(|d| start_by(d, t))
            .min()
    }

    /// Starts the queued transfers whose WTPs would give up otherwise.
    pub(super) fn start_overdue(&mut self, now: Instant) {
        let t = self.cfg.timers.image_data_start;
        let due: Vec<SocketAddr> = self
            .sessions
            .iter()
            .filter_map(|(p, s)| {
                let d = s.download.as_ref()?;
                (d.queued && !d.halted && start_by(d, t).is_some_and(|b| b <= now)).then_some(*p)
            })
            .collect();
        for peer in due {
            self.try_open(peer, now);
        }
    }

    /// Transfers under way: counted against `max_transfers`.
    fn active_transfers(
        sessions: &std::collections::BTreeMap<SocketAddr, super::WtpSession>,
    ) -> usize {
        sessions
            .values()
            .filter_map(|s| s.download.as_ref())
            .filter(|d| d.queued_pass && !d.halted)
            .count()
    }

    /// Starts queued transfers, oldest first, while fewer than `max_transfers` are under way.
    /// Runs after an event that may have ended a transfer (a scan of all sessions, not per
    /// block).
    pub fn start_queued(&mut self, now: Instant) {
        if !std::mem::take(&mut self.transfer_ended) || !self.queued_transfers {
            return;
        }
        let mut queued: Vec<(Option<Instant>, SocketAddr)> = self
            .sessions
            .iter()
            .filter_map(|(p, s)| {
                let d = s.download.as_ref()?;
                (d.queued && !d.halted).then_some((d.started, *p))
            })
            .collect();
        if queued.is_empty() {
            self.queued_transfers = false;
            return;
        }
        queued.sort();
        let limit = self.cfg.max_transfers as usize;
        let mut active = Self::active_transfers(&self.sessions);
        for (_, peer) in queued {
            if active >= limit {
                break;
            }
            self.try_open(peer, now);
            if self
                .sessions
                .get(&peer)
                .and_then(|s| s.download.as_ref())
                .is_some_and(|d| d.queued_pass)
            {
                active += 1;
            }
        }
    }

    fn image_failed(&mut self, peer: SocketAddr, reason: &str, now: Instant) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        let d = s.download.get_or_insert_with(AcDownload::default);
        d.status = format!("Failed: {reason}");
        d.halted = true;
        d.finished = Some(now);
        self.transfer_ended = true;
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
        if !d.queued_pass {
            // Not answered yet: try_open answers, within max_transfers, and sends the first
            // block.
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
        let mut abort = faults.abort_at_block == Some(n);
        let mut failure = None;
        let mut block = std::mem::take(&mut self.block_buf);
        block.resize(block_size.max(1), 0);
        let len = if abort {
            0
        } else {
            match self.source.read_at(&d.image, d.sent, &mut block) {
                Ok(l) => l,
                Err(SourceError::Pending) => {
                    // The image server has not sent this far yet: wait for progress.
                    self.block_buf = block;
                    d.starved = true;
                    return;
                }
                Err(e) => {
                    // Tell the WTP at once (Data Type 5) rather than let it time out.
                    warn!("{e}");
                    abort = true;
                    failure = Some(e.to_string());
                    0
                }
            }
        };
        if d.total.is_none() {
            d.total = self.source.total(&d.image);
            if let Some(t) = d.total {
                d.size = t;
            }
        }
        let last = !abort && d.total.is_some_and(|t| d.sent + len as u64 >= t);
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
        d.last_sent = last;
        if d.status == "Initiated" {
            d.status = if d.predownload {
                "Predownloading"
            } else {
                "Downloading"
            }
            .into();
        }
        if let Some(reason) = failure {
            info!("Aborting the transfer to {name} at block {n}: {reason}");
            self.image_failed(peer, &reason, now);
        } else if abort {
            info!("Aborting the transfer to {name} at block {n} (fault switch)");
            self.transfer_ended = true;
            d.halted = true;
            d.status = "Failed: aborted by the AC".into();
        }
    }

    /// The WTP's response to a block.
    pub(super) fn on_image_block_response(
        &mut self,
        peer: SocketAddr,
        result: Option<u32>,
        why: Option<&str>,
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
        let why_text = why;
        if !ResultCode::from_u32(code).is_some_and(|r| r.is_success()) {
            let why = ResultCode::from_u32(code)
                .map(|r| r.describe())
                .unwrap_or("unknown");
            let reason = match why_text {
                Some(t) => format!("WTP result code {code} ({why}): {t}"),
                None => format!("WTP result code {code} ({why})"),
            };
            warn!("WTP {name} refused block {}: {reason}", d.blocks);
            return self.image_failed(peer, &reason, now);
        }
        if d.halted {
            return;
        }
        if d.last_sent {
            d.halted = true;
            d.finished = Some(now);
            d.status = "Complete".into();
            self.transfer_ended = true;
            info!(
                "AP Event: {name} AP Image Download Success ({} bytes in {} blocks)",
                d.sent, d.blocks
            );
            if d.predownload {
                // The WTP stages a predownloaded image in its inactive slot, which is what it
                // reports as its backup at its next Join: show it now, as the seed's
                // controller does once the predownload is complete.
                d.replaced_backup = Some(std::mem::replace(
                    &mut s.info.backup_version,
                    d.version.clone(),
                ));
            }
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
                // §2.3.1 Run to Reset (r); §9.1 Figure 9.
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
        let version = self.cfg.image_version.clone().unwrap_or_default();
        if code == ResultCode::ImageDataErrorImageAlreadyPresent as u32 {
            info!("WTP {} already has the image", display_name(s));
            // Unless it runs it, the image is in its backup slot.
            let replaced_backup = (s.info.primary_version != version
                && s.info.backup_version != version)
                .then(|| std::mem::replace(&mut s.info.backup_version, version.clone()));
            s.download = Some(AcDownload {
                version,
                predownload: true,
                status: "Complete".into(),
                halted: true,
                replaced_backup,
                ..AcDownload::default()
            });
        } else if code != 0 {
            warn!(
                "WTP {} refused the predownload with result code {code}",
                display_name(s)
            );
            s.download = Some(AcDownload {
                version,
                predownload: true,
                status: "Not Supported".into(),
                halted: true,
                last_error: Some(format!("predownload refused with result code {code}")),
                ..AcDownload::default()
            });
        }
    }

    /// The WTP's WTP Event Request said its download failed (the vendor element of
    /// `wtp::image`): it also comes after the last block, when the WTP could not verify or
    /// stage the image, so a transfer shown as complete becomes failed again and a backup
    /// version taken from it is put back.
    pub(super) fn on_download_failure_event(
        &mut self,
        peer: SocketAddr,
        reason: &str,
        now: Instant,
    ) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        let Some(d) = s.download.as_mut() else { return };
        if d.status.starts_with("Failed") {
            return;
        }
        if let Some(backup) = d.replaced_backup.take() {
            s.info.backup_version = backup;
        }
        d.status = format!("Failed: {reason}");
        d.halted = true;
        d.finished = Some(now);
        self.transfer_ended = true;
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

/// When a queued transfer must start: a quarter of the WTP's ImageDataStartTimer (at most 5 s)
/// before it runs out, counted from the WTP's Image Data Request.
fn start_by(d: &AcDownload, image_data_start: Duration) -> Option<Instant> {
    let margin = (image_data_start / 4).min(Duration::from_secs(5));
    Some(d.started? + image_data_start.saturating_sub(margin))
}
