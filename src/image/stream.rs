//! Streaming an image straight into the inactive slot as its bytes arrive (`download.mode =
//! "slot"`), for APs whose RAM and /tmp are smaller than the image. No file holds the image:
//! the bytes are pushed in ([`SlotStream::push`]) in whatever pieces the transfer delivers,
//! and the same rules as the whole-image verifier ([`super::install::verify_image`]) are
//! checked on the stream, in this order:
//!
//! 1. the signed head (`manifest`, `manifest.sig`, `signer.pem`, at most about 133 KiB, the
//!    only bytes ever buffered) is read by the same [`BundleReader`] and verified against the
//!    trust policy; then the A/B rules ([`check_manifest`]: the booted slot good and not on
//!    trial, one rootfs payload that fits the slot, not a version that failed here before)
//!    and the medium's fit ([`SlotStorage::check_fit`]);
//! 2. the target slot is marked `invalid` (one environment write) before its first byte;
//! 3. the payload's tar header (name, size as in the manifest), then its bytes, written to
//!    the slot in order and hashed on the way; at its end the SHA-256 must match the manifest;
//! 4. zero padding, two zero end blocks (an extra member is refused there), zeros only after;
//! 5. [`SlotStream::finish`]: the archive must have ended, then the slot is synced and read
//!    back, and must hash to the manifest's digest.
//!
//! Only then may [`commit`] switch to the slot (or stage it as a good backup) in ONE
//! environment write. Any failure before that leaves the slot marked `invalid` and the
//! environment otherwise as it was, so the booted slot stays the bootloader's only choice.
//! Memory does not grow with the image: the head buffer is bounded by the head's limits, the
//! payload goes through the caller's pieces, the read-back through one [`CHUNK`] buffer.

use std::io::Cursor;

use log::info;

use super::bootenv::{read_with, write_with, EnvConfig, EnvStorage};
use super::bundle::{BundleError, BundleReader, MAX_CHAIN_LEN, MAX_SIGNATURE_LEN};
use super::download::hex;
use super::install::{
    check_manifest, hash_slot, record_written, set, slot_error, AbState, InstallError,
    InstallReport, SlotStorage, CHUNK,
};
use super::manifest::{Payload, MAX_MANIFEST_LEN};
use super::sha256::Sha256;
use super::tar::{padding, parse_header, BLOCK};
use super::verify::{TrustPolicy, VerifiedManifest};
use crate::board::{Board, Slot};

/// The three members of the signed head and their limits, as [`BundleReader::new`] reads them.
const HEAD: [(&str, usize); 3] = [
    ("manifest", MAX_MANIFEST_LEN),
    ("manifest.sig", MAX_SIGNATURE_LEN),
    ("signer.pem", MAX_CHAIN_LEN),
];

/// The largest head a stream buffers: three headers, the three members at their limits and
/// their padding.
pub const MAX_HEAD: usize =
    3 * BLOCK + MAX_MANIFEST_LEN + MAX_SIGNATURE_LEN + MAX_CHAIN_LEN + 3 * BLOCK;

/// Where the stream stands.
enum Phase {
    /// Gathering the signed head.
    Head,
    /// The payload's tar header (`hdr` fills).
    PayloadHeader,
    /// Payload bytes, `remaining` to go.
    Payload { remaining: u64 },
    /// The payload's zero padding.
    Padding { remaining: usize },
    /// The two end-of-archive blocks (`hdr` fills, `block` 0 or 1).
    EndBlock { block: u8 },
    /// Zeros after the end blocks (tar's record padding) only.
    Trailing,
    /// An error was returned: nothing more is taken.
    Failed,
}

/// A verified head and its slot: what the stream knows once the head passed.
struct Target {
    verified: VerifiedManifest,
    slot: Slot,
    rootfs: Payload,
}

/// One image being streamed into the inactive slot. See the module documentation.
pub struct SlotStream {
    board: Board,
    env_cfg: EnvConfig,
    policy: TrustPolicy,
    phase: Phase,
    /// Bytes of the image taken so far.
    pos: u64,
    /// The head while it arrives (freed once it is verified).
    head: Vec<u8>,
    /// A tar block while it arrives (the payload's header, the end blocks).
    hdr: [u8; BLOCK],
    hdr_fill: usize,
    target: Option<Target>,
    written: u64,
    hasher: Option<Sha256>,
}

/// An image whose payload is in the slot and read back right: ready for [`commit`].
#[derive(Debug)]
pub struct Streamed {
    verified: VerifiedManifest,
    slot: Slot,
    bytes: u64,
    sha256: [u8; 32],
}

impl Streamed {
    pub fn version(&self) -> &str {
        &self.verified.manifest().version
    }
    pub fn slot(&self) -> &Slot {
        &self.slot
    }
    pub fn signer(&self) -> &str {
        self.verified.signer()
    }
    /// The time floor to persist once it is committed.
    pub fn new_time_floor(&self) -> u64 {
        self.verified.new_time_floor()
    }
}

/// Where the head ends: `Ok(end)` once `buf` holds it whole (or a header [`BundleReader`]
/// will refuse), `Err(need)` with the length `buf` must reach to know more.
fn head_end(buf: &[u8]) -> Result<usize, usize> {
    let mut pos = 0usize;
    for (name, max) in HEAD {
        if buf.len() < pos + BLOCK {
            return Err(pos + BLOCK);
        }
        let block: &[u8; BLOCK] = buf[pos..pos + BLOCK].try_into().expect("one block");
        match parse_header(block) {
            Ok(Some(h)) if h.name == name && h.size <= max as u64 => {
                pos += BLOCK + h.size as usize + padding(h.size);
            }
            // Refused: the reader says why, from the bytes up to this header.
            _ => return Ok(pos + BLOCK),
        }
    }
    if buf.len() < pos {
        Err(pos)
    } else {
        Ok(pos)
    }
}

impl SlotStream {
    /// A stream for an image checked against `policy` (whose `expected_version` is the version
    /// the controller announced).
    pub fn new(board: &Board, env_cfg: &EnvConfig, policy: TrustPolicy) -> SlotStream {
        SlotStream {
            board: board.clone(),
            env_cfg: env_cfg.clone(),
            policy,
            phase: Phase::Head,
            pos: 0,
            head: Vec::new(),
            hdr: [0; BLOCK],
            hdr_fill: 0,
            target: None,
            written: 0,
            hasher: None,
        }
    }

    /// Bytes taken so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The slot being written, once the head passed (it is marked `invalid` from then on).
    pub fn slot(&self) -> Option<&Slot> {
        self.target.as_ref().map(|t| &t.slot)
    }

    /// Takes the next bytes of the image. An error refuses the image (or reports a failed
    /// write); the stream takes nothing after it.
    pub fn push<S: SlotStorage + EnvStorage>(
        &mut self,
        storage: &mut S,
        data: &[u8],
    ) -> Result<(), InstallError> {
        if matches!(self.phase, Phase::Failed) {
            return Err(BundleError::Poisoned.into());
        }
        let r = self.take(storage, data);
        if r.is_err() {
            self.phase = Phase::Failed;
            self.head = Vec::new();
        }
        r
    }

    fn take<S: SlotStorage + EnvStorage>(
        &mut self,
        storage: &mut S,
        mut data: &[u8],
    ) -> Result<(), InstallError> {
        while !data.is_empty() {
            let n = match self.phase {
                Phase::Head => self.take_head(storage, data)?,
                Phase::PayloadHeader => {
                    let n = self.fill_block(data);
                    if self.hdr_fill == BLOCK {
                        self.payload_header()?;
                    }
                    n
                }
                Phase::Payload { remaining } => {
                    let n = (remaining.min(data.len() as u64)) as usize;
                    self.payload_bytes(storage, &data[..n], remaining - n as u64)?;
                    self.pos += n as u64;
                    n
                }
                Phase::Padding { remaining } => {
                    let n = remaining.min(data.len());
                    if let Some(i) = data[..n].iter().position(|&b| b != 0) {
                        let name = self.rootfs_name();
                        return Err(BundleError::NonZeroPadding {
                            offset: self.pos + i as u64,
                            what: format!("the padding of {name}"),
                        }
                        .into());
                    }
                    self.pos += n as u64;
                    self.phase = if remaining == n {
                        Phase::EndBlock { block: 0 }
                    } else {
                        Phase::Padding {
                            remaining: remaining - n,
                        }
                    };
                    n
                }
                Phase::EndBlock { block } => {
                    let n = self.fill_block(data);
                    if self.hdr_fill == BLOCK {
                        self.end_block(block)?;
                    }
                    n
                }
                Phase::Trailing => {
                    if let Some(i) = data.iter().position(|&b| b != 0) {
                        return Err(BundleError::TrailingData {
                            offset: self.pos + i as u64,
                        }
                        .into());
                    }
                    self.pos += data.len() as u64;
                    data.len()
                }
                Phase::Failed => return Err(BundleError::Poisoned.into()),
            };
            data = &data[n..];
        }
        Ok(())
    }

    fn rootfs_name(&self) -> String {
        self.target
            .as_ref()
            .map(|t| t.rootfs.name.clone())
            .unwrap_or_default()
    }

    /// Copies into the block buffer; returns the bytes taken (counted in `pos` at the block's
    /// end, so that an error names the block's offset). Every other phase counts its bytes
    /// itself; the head sets `pos` to its end once complete.
    fn fill_block(&mut self, data: &[u8]) -> usize {
        let n = (BLOCK - self.hdr_fill).min(data.len());
        self.hdr[self.hdr_fill..self.hdr_fill + n].copy_from_slice(&data[..n]);
        self.hdr_fill += n;
        n
    }

    /// The block in `hdr` is complete: its offset, and the buffer reset.
    fn block_done(&mut self) -> u64 {
        let offset = self.pos;
        self.pos += BLOCK as u64;
        self.hdr_fill = 0;
        offset
    }

    fn take_head<S: SlotStorage + EnvStorage>(
        &mut self,
        storage: &mut S,
        data: &[u8],
    ) -> Result<usize, InstallError> {
        let mut taken = 0;
        loop {
            match head_end(&self.head) {
                Ok(end) => {
                    self.pos = end as u64;
                    self.head_complete(storage)?;
                    return Ok(taken);
                }
                Err(need) => {
                    let n = (need - self.head.len()).min(data.len() - taken);
                    if n == 0 {
                        return Ok(taken);
                    }
                    self.head.extend_from_slice(&data[taken..taken + n]);
                    taken += n;
                }
            }
        }
    }

    /// The head is here: verify it, check the A/B rules and the medium, mark the slot invalid
    /// and start writing it.
    fn head_complete<S: SlotStorage + EnvStorage>(
        &mut self,
        storage: &mut S,
    ) -> Result<(), InstallError> {
        let head = std::mem::take(&mut self.head);
        let bundle = BundleReader::new(Cursor::new(&head[..]))?;
        debug_assert_eq!(bundle.position(), head.len() as u64);
        let verified = bundle.verify(&self.policy)?;
        drop(bundle);
        drop(head);
        let (mut env, _) = read_with(storage, &self.env_cfg)?;
        let ab = AbState::read(&self.board, &env)?;
        let (slot, rootfs) = check_manifest(&self.board, &ab, verified.manifest())?;
        let rootfs = rootfs.clone();
        storage
            .check_fit(&slot, rootfs.size)
            .map_err(|e| slot_error(format!("slot {}", slot.name), e))?;
        info!(
            "Image manifest verified at byte {}: {} signed by {}, {} bytes for slot {}",
            self.pos,
            verified.manifest().version,
            verified.signer(),
            rootfs.size,
            slot.name
        );
        // The slot can never look good while it is being written.
        let state_key = format!("slot_{}_state", slot.name);
        if env.get(&state_key) != Some("invalid") {
            set(&mut env, &state_key, "invalid")?;
            write_with(storage, &self.env_cfg, &env)?;
        }
        storage
            .begin(&slot, rootfs.size)
            .map_err(|e| slot_error(format!("begin writing slot {}", slot.name), e))?;
        info!(
            "Streaming {} ({} bytes) into slot {} ({}) as it arrives",
            rootfs.name,
            rootfs.size,
            slot.name,
            slot.device.display()
        );
        self.target = Some(Target {
            verified,
            slot,
            rootfs,
        });
        self.phase = Phase::PayloadHeader;
        Ok(())
    }

    /// The payload's tar header, checked as [`BundleReader::next_payload`] checks it.
    fn payload_header(&mut self) -> Result<(), InstallError> {
        let offset = self.block_done();
        let p = &self.target.as_ref().expect("head verified").rootfs;
        let h = parse_header(&self.hdr)
            .map_err(|e| BundleError::header(offset, e))?
            .ok_or_else(|| BundleError::MissingPayload {
                name: p.name.clone(),
            })?;
        if h.name != p.name {
            return Err(BundleError::UnexpectedMember {
                offset,
                expected: p.name.clone(),
                found: h.name,
            }
            .into());
        }
        if h.size != p.size {
            return Err(BundleError::PayloadSizeMismatch {
                name: p.name.clone(),
                manifest: p.size,
                tar: h.size,
            }
            .into());
        }
        self.hasher = Some(Sha256::new());
        self.written = 0;
        self.phase = Phase::Payload { remaining: p.size };
        if p.size == 0 {
            self.payload_end()?;
        }
        Ok(())
    }

    fn payload_bytes<S: SlotStorage>(
        &mut self,
        storage: &mut S,
        data: &[u8],
        remaining: u64,
    ) -> Result<(), InstallError> {
        let t = self.target.as_ref().expect("head verified");
        SlotStorage::write_at(storage, &t.slot, self.written, data)
            .map_err(|e| slot_error(format!("write slot {}", t.slot.name), e))?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(data);
        }
        self.written += data.len() as u64;
        self.phase = Phase::Payload { remaining };
        if remaining == 0 {
            self.payload_end()?;
        }
        Ok(())
    }

    /// The payload's last byte arrived: its digest against the manifest.
    fn payload_end(&mut self) -> Result<(), InstallError> {
        let p = &self.target.as_ref().expect("head verified").rootfs;
        let got = self.hasher.take().map(Sha256::finish).unwrap_or_default();
        if got != p.sha256 {
            return Err(BundleError::PayloadDigestMismatch {
                name: p.name.clone(),
                expected: hex(&p.sha256),
                found: hex(&got),
            }
            .into());
        }
        self.phase = Phase::Padding {
            remaining: padding(p.size),
        };
        if padding(p.size) == 0 {
            self.phase = Phase::EndBlock { block: 0 };
        }
        Ok(())
    }

    /// One end-of-archive block, checked as [`BundleReader`] checks it.
    fn end_block(&mut self, block: u8) -> Result<(), InstallError> {
        let offset = self.block_done();
        match parse_header(&self.hdr).map_err(|e| BundleError::header(offset, e))? {
            None => {}
            Some(h) if block == 0 => {
                return Err(BundleError::UnexpectedMember {
                    offset,
                    expected: "the end of the archive".into(),
                    found: h.name,
                }
                .into())
            }
            Some(_) => {
                return Err(BundleError::NonZeroPadding {
                    offset,
                    what: "the second end-of-archive block".into(),
                }
                .into())
            }
        }
        self.phase = if block == 0 {
            Phase::EndBlock { block: 1 }
        } else {
            Phase::Trailing
        };
        Ok(())
    }

    /// The transfer ended: the archive must be complete; then the slot is synced and read
    /// back against the manifest. Nothing in the environment changes here.
    pub fn finish<S: SlotStorage + EnvStorage>(
        mut self,
        storage: &mut S,
    ) -> Result<Streamed, InstallError> {
        let what = match self.phase {
            Phase::Trailing => None,
            Phase::Failed => return Err(BundleError::Poisoned.into()),
            Phase::Head => Some("the signed head".to_string()),
            Phase::PayloadHeader => Some(format!("the tar header of {}", self.rootfs_name())),
            Phase::Payload { .. } => Some(self.rootfs_name()),
            Phase::Padding { .. } => Some(format!("the padding of {}", self.rootfs_name())),
            Phase::EndBlock { .. } => Some("the end-of-archive blocks".to_string()),
        };
        if let Some(what) = what {
            return Err(BundleError::Truncated {
                offset: self.pos + self.hdr_fill as u64 + self.head.len() as u64,
                what,
            }
            .into());
        }
        let t = self.target.take().expect("a complete archive has a head");
        storage
            .sync(&t.slot)
            .map_err(|e| slot_error(format!("sync slot {}", t.slot.name), e))?;
        let mut buf = vec![0u8; CHUNK];
        let got = hash_slot(storage, &t.slot, self.written, &mut buf)?;
        if got != t.rootfs.sha256 {
            return Err(InstallError::ReadBack {
                slot: t.slot.name.clone(),
                expected: hex(&t.rootfs.sha256),
                got: hex(&got),
            });
        }
        info!(
            "Slot {} read back: SHA-256 {} matches the manifest",
            t.slot.name,
            hex(&got)
        );
        Ok(Streamed {
            verified: t.verified,
            slot: t.slot,
            bytes: self.written,
            sha256: got,
        })
    }
}

/// Switches to a streamed slot (`activate`) or stages it as a good backup, in ONE environment
/// write, after checking the A/B rules again (the environment may have changed since the
/// head was checked: a slot that is no longer the inactive one, or no longer marked
/// `invalid` by us, is not switched to).
pub fn commit<S: EnvStorage>(
    board: &Board,
    env_cfg: &EnvConfig,
    storage: &mut S,
    streamed: &Streamed,
    activate: bool,
) -> Result<InstallReport, InstallError> {
    let (mut env, _) = read_with(storage, env_cfg)?;
    let ab = AbState::read(board, &env)?;
    let (target, _) = check_manifest(board, &ab, streamed.verified.manifest())?;
    let state = env.get(&format!("slot_{}_state", target.name));
    if target.name != streamed.slot.name || state != Some("invalid") {
        return Err(InstallError::Payloads(format!(
            "the environment changed while slot {} was written (inactive slot {}, state {}): \
             not switched",
            streamed.slot.name,
            target.name,
            state.unwrap_or("unset")
        )));
    }
    let version = streamed.version().to_string();
    record_written(
        board,
        env_cfg,
        storage,
        &mut env,
        &target.name,
        &version,
        activate,
    )?;
    Ok(InstallReport {
        slot: target.name,
        version,
        bytes: streamed.bytes,
        sha256: streamed.sha256,
        new_time_floor: streamed.new_time_floor(),
        activated: activate,
    })
}

/// Streams a whole image held by `image` in pieces of `piece` bytes, then [`commit`]s it: the
/// slot mode's install in one call (the tests' entry point; the agent pushes as blocks
/// arrive).
pub fn stream_install<S: SlotStorage + EnvStorage>(
    board: &Board,
    env_cfg: &EnvConfig,
    storage: &mut S,
    image: &[u8],
    policy: &TrustPolicy,
    activate: bool,
    piece: usize,
) -> Result<InstallReport, InstallError> {
    let mut s = SlotStream::new(board, env_cfg, policy.clone());
    for p in image.chunks(piece.max(1)) {
        s.push(storage, p)?;
    }
    let streamed = s.finish(storage)?;
    commit(board, env_cfg, storage, &streamed, activate)
}
