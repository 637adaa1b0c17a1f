//! Installing a verified image to the inactive slot and switching to it with ONE environment
//! write; marking a new slot good; the bootloader's side of the contract, for the simulated
//! board and the tests. docs/ab-update.md describes the contract with U-Boot.
//!
//! The order is what makes a power cut at any write harmless, and a bad image cost nothing:
//! 0. refuse while the booted slot is on trial or not good ([`check_fallback`]): the other
//!    slot is then the only good one;
//! 1. verify the whole image before the first write ([`verify_image`]): the manifest,
//!    signature and chain, then every payload's tar header, size and SHA-256 and the end of
//!    the archive; the image is on disk, so this is one extra read of it;
//! 2. mark the target slot `invalid` (one environment write) before writing it;
//! 3. stream the payload into the slot in large chunks (its digest checked as it streams),
//!    fsync, then read the slot back and hash it against the manifest;
//! 4. switch with ONE environment write: `boot_slot`, `upgrade_available=1`, `bootcount=0`,
//!    `bootlimit`, and the slot's version and state (`new`).
//!
//! Until step 4 lands, the environment boots the old slot; after it, the new one, with the
//! boot-attempt budget that makes U-Boot fall back if the agent never marks it good.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use log::info;

use super::bootenv::{
    read_with, write_with, DeviceStorage, Env, EnvConfig, EnvError, EnvLocation, EnvStorage, Medium,
};
use super::bundle::{BundleError, BundleReader};
use super::download::hex;
use super::manifest::{Manifest, Payload};
use super::read_full;
use super::verify::{TrustPolicy, VerifiedManifest, VerifyError, VERIFY_SUCCESS};
use crate::board::{Board, Slot, SlotKind};
use crate::flash::mtd::{self, MtdDevice};
use crate::flash::sim::SimFlash;
use crate::flash::ubi::{self, UbiVolume};
use crate::flash::writer::{count_good_blocks, FlashError, FlashSlot};
use crate::flash::Flash;

/// Chunk size for slot writes and the read-back. Writes go through the page cache, so the size
/// only sets how many system calls an install makes (about 100 for a 12 MiB image); the buffer
/// is the largest allocation the agent ever makes, and at 1 MiB it was a tenth of its peak
/// memory (docs/design.md, "Memory").
pub const CHUNK: usize = 128 << 10;

/// Where slots are written. [`Disk`] is the real one; tests count and cut writes.
///
/// An install calls, in this order: [`SlotStorage::check_fit`] (before anything is written,
/// the environment included), [`SlotStorage::begin`] (after the slot is marked invalid), the
/// payload's bytes in order through [`SlotStorage::write_at`], [`SlotStorage::sync`] (which
/// finishes the write: the padded last page on MTD, the end of a UBI volume update), then the
/// read-back through [`SlotStorage::read_at`].
pub trait SlotStorage {
    /// Refuses a payload of `len` bytes that cannot fit the slot's medium (the good erase
    /// blocks of an MTD partition, the capacity of a UBI volume), changing nothing.
    fn check_fit(&mut self, _slot: &Slot, _len: u64) -> io::Result<()> {
        Ok(())
    }
    /// Starts writing a payload of exactly `len` bytes (a UBI volume update starts here).
    fn begin(&mut self, _slot: &Slot, _len: u64) -> io::Result<()> {
        Ok(())
    }
    fn write_at(&mut self, slot: &Slot, offset: u64, data: &[u8]) -> io::Result<()>;
    fn sync(&mut self, slot: &Slot) -> io::Result<()>;
    fn read_at(&mut self, slot: &Slot, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
}

/// A UBI volume being updated: how many bytes the update announced.
struct UbiSlot {
    volume: UbiVolume,
    announced: u64,
}

/// An open slot, by kind.
enum SlotDev {
    File(File),
    Mtd(FlashSlot<MtdDevice>),
    /// A simulated MTD partition on a file (`sim = { ... }` in the board file).
    SimMtd(FlashSlot<SimFlash>),
    Ubi(UbiSlot),
}

/// The geometry error of a slot the board file says is larger than its device.
fn larger_than_device(slot: &Slot, path: &std::path::Path, has: u64) -> io::Error {
    FlashError::Geometry(format!(
        "the board file gives slot {} {} bytes; {} has {has}",
        slot.name,
        slot.size,
        path.display()
    ))
    .into()
}

impl SlotDev {
    /// Opens the slot's device, resolving `mtd:NAME` and `ubiX:NAME`. Never creates or
    /// truncates anything: a slot is a device or a file the board provides.
    fn open(slot: &Slot) -> io::Result<SlotDev> {
        let named = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("slot {} ({}): {e}", slot.name, slot.device.display()),
            )
        };
        Ok(match (slot.kind, &slot.sim) {
            (SlotKind::Mtd, Some(sim)) => SlotDev::SimMtd(FlashSlot::new(
                SimFlash::open(&slot.device, sim.info(slot.size), &sim.bad_blocks)
                    .map_err(named)?,
            )),
            (SlotKind::Mtd, None) => {
                let path = mtd::resolve(&slot.device).map_err(named)?;
                let dev = MtdDevice::open(&path).map_err(named)?;
                if dev.info().size < slot.size {
                    return Err(larger_than_device(slot, &path, dev.info().size));
                }
                SlotDev::Mtd(FlashSlot::new(dev))
            }
            (SlotKind::Ubi, _) => {
                let path = ubi::resolve(&slot.device).map_err(named)?;
                let volume = UbiVolume::open(&path).map_err(named)?;
                if volume.capacity() < slot.size {
                    return Err(larger_than_device(slot, &path, volume.capacity()));
                }
                SlotDev::Ubi(UbiSlot {
                    volume,
                    announced: 0,
                })
            }
            (SlotKind::File, _) => SlotDev::File(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&slot.device)?,
            ),
        })
    }
}

/// The good-block check of an MTD slot, read-only.
fn mtd_fit<F: Flash>(s: &mut FlashSlot<F>, len: u64) -> io::Result<()> {
    let es = u64::from(s.flash().info().erase_size);
    let (good, bad) = count_good_blocks(s.flash())?;
    let needed = len.div_ceil(es.max(1));
    if needed > good {
        return Err(FlashError::TooLarge {
            len,
            needed_blocks: needed,
            good_blocks: good,
            bad_blocks: bad,
            erase_size: es as u32,
        }
        .into());
    }
    Ok(())
}

/// Ends an MTD slot write and logs what it took.
fn mtd_finish<F: Flash>(s: &mut FlashSlot<F>, slot: &Slot) -> io::Result<()> {
    let sum = s.finish()?;
    let info = s.flash().info();
    info!(
        "Slot {}: {} bytes in {} erase blocks of {} KiB on {} flash; bad blocks skipped: {}",
        slot.name,
        sum.bytes,
        sum.blocks,
        info.erase_size / 1024,
        info.kind,
        sum.bad_skipped
    );
    Ok(())
}

/// Slot files, block devices, MTD partitions and UBI volumes, and the environment, on the
/// real disk.
#[derive(Default)]
pub struct Disk {
    open: HashMap<PathBuf, SlotDev>,
    env: DeviceStorage,
}

impl Disk {
    pub fn new() -> Self {
        Self::default()
    }

    /// The simulated flash under a `sim` slot, opened if it was not (the power-cut tests arm
    /// cuts on it); `None` for a slot of another kind.
    pub fn simulated(&mut self, slot: &Slot) -> io::Result<Option<&mut SimFlash>> {
        match self.dev(slot)? {
            SlotDev::SimMtd(s) => Ok(Some(s.flash())),
            _ => Ok(None),
        }
    }

    fn dev(&mut self, slot: &Slot) -> io::Result<&mut SlotDev> {
        if !self.open.contains_key(&slot.device) {
            let d = SlotDev::open(slot)?;
            self.open.insert(slot.device.clone(), d);
        }
        self.open
            .get_mut(&slot.device)
            .ok_or_else(|| io::Error::other("slot vanished from the open table"))
    }
}

impl SlotStorage for Disk {
    fn check_fit(&mut self, slot: &Slot, len: u64) -> io::Result<()> {
        match self.dev(slot)? {
            SlotDev::File(_) => Ok(()),
            SlotDev::Mtd(s) => mtd_fit(s, len),
            SlotDev::SimMtd(s) => mtd_fit(s, len),
            SlotDev::Ubi(u) => {
                if len > u.volume.capacity() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{len} bytes do not fit the {}-byte volume {}",
                            u.volume.capacity(),
                            u.volume.path().display()
                        ),
                    ));
                }
                Ok(())
            }
        }
    }
    fn begin(&mut self, slot: &Slot, len: u64) -> io::Result<()> {
        match self.dev(slot)? {
            SlotDev::File(_) => Ok(()),
            SlotDev::Mtd(s) => Ok(s.begin(len)?),
            SlotDev::SimMtd(s) => Ok(s.begin(len)?),
            SlotDev::Ubi(u) => {
                u.volume.begin_update(len)?;
                u.announced = len;
                Ok(())
            }
        }
    }
    fn write_at(&mut self, slot: &Slot, offset: u64, data: &[u8]) -> io::Result<()> {
        match self.dev(slot)? {
            SlotDev::File(f) => f.write_all_at(data, offset),
            SlotDev::Mtd(s) => Ok(s.write_at(offset, data)?),
            SlotDev::SimMtd(s) => Ok(s.write_at(offset, data)?),
            SlotDev::Ubi(u) => {
                let at = u.announced - u.volume.pending();
                if offset != at {
                    return Err(FlashError::NotSequential {
                        expected: at,
                        got: offset,
                    }
                    .into());
                }
                u.volume.write_next(data)
            }
        }
    }
    fn sync(&mut self, slot: &Slot) -> io::Result<()> {
        match self.dev(slot)? {
            SlotDev::File(f) => f.sync_data(),
            SlotDev::Mtd(s) => mtd_finish(s, slot),
            SlotDev::SimMtd(s) => mtd_finish(s, slot),
            SlotDev::Ubi(u) => {
                if u.volume.pending() != 0 {
                    return Err(FlashError::Length {
                        announced: u.announced,
                        got: u.announced - u.volume.pending(),
                    }
                    .into());
                }
                Ok(())
            }
        }
    }
    fn read_at(&mut self, slot: &Slot, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        match self.dev(slot)? {
            SlotDev::File(f) => f.read_at(buf, offset),
            SlotDev::Mtd(s) => Ok(s.read_at(offset, buf)?),
            SlotDev::SimMtd(s) => Ok(s.read_at(offset, buf)?),
            SlotDev::Ubi(u) => u.volume.read_at(offset, buf),
        }
    }
}

impl EnvStorage for Disk {
    fn read_at(&mut self, loc: &EnvLocation) -> io::Result<Vec<u8>> {
        self.env.read_at(loc)
    }
    fn write_at(&mut self, loc: &EnvLocation, data: &[u8]) -> io::Result<()> {
        self.env.write_at(loc, data)
    }
    fn medium(&mut self, loc: &EnvLocation) -> io::Result<Medium> {
        self.env.medium(loc)
    }
    fn mark_obsolete(&mut self, loc: &EnvLocation) -> io::Result<()> {
        self.env.mark_obsolete(loc)
    }
}

/// Why an install, a switch or a mark-good failed. Nothing was switched when this is returned.
#[derive(Debug)]
pub enum InstallError {
    Env(EnvError),
    Bundle(BundleError),
    Verify(VerifyError),
    /// The board has no A/B slots.
    NoSlots,
    /// The image has no payload for the `rootfs` target, or more than one.
    Payloads(String),
    TooLarge {
        payload: u64,
        slot: u64,
    },
    Io {
        what: String,
        error: io::Error,
    },
    /// A slot on raw flash refused or failed (an image too large for the good blocks, a
    /// device smaller than the board file says, an erase or page write that failed).
    Flash {
        what: String,
        error: FlashError,
    },
    /// The slot's bytes, read back, differ from the manifest.
    ReadBack {
        slot: String,
        expected: String,
        got: String,
    },
    /// Activation of a version the other slot does not hold (good).
    NotStaged {
        version: String,
    },
    /// This version was installed before and the bootloader rolled it back.
    FailedBefore {
        version: String,
    },
    /// The booted slot is on trial: the other slot is the only good one.
    OnTrial {
        slot: String,
        fallback: String,
    },
    /// The booted slot is not marked good, so the other one may be the only good slot.
    BootedNotGood {
        slot: String,
        state: String,
    },
    /// This board installs nothing (no usable U-Boot environment, `install = "refuse"`).
    Refused(String),
    /// An install was asked for before an image was verified.
    NotVerified,
}

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InstallError::Env(e) => write!(f, "U-Boot environment: {e}"),
            InstallError::Bundle(e) => write!(f, "{e}"),
            InstallError::Verify(e) => write!(f, "Image signing verify failed: {e}"),
            InstallError::NoSlots => write!(f, "the board has no A/B slots"),
            InstallError::Payloads(s) => write!(f, "image payloads: {s}"),
            InstallError::TooLarge { payload, slot } => {
                write!(
                    f,
                    "payload of {payload} bytes does not fit the slot's {slot}"
                )
            }
            InstallError::Io { what, error } => write!(f, "{what}: {error}"),
            InstallError::Flash { what, error } => write!(f, "{what}: {error}"),
            InstallError::ReadBack {
                slot,
                expected,
                got,
            } => {
                write!(
                    f,
                    "slot {slot} read back as SHA-256 {got}, expected {expected}"
                )
            }
            InstallError::NotStaged { version } => {
                write!(f, "no good slot holds version {version}")
            }
            InstallError::OnTrial { slot, fallback } => write!(
                f,
                "booted slot {slot} is on trial (upgrade_available=1): slot {fallback} is the \
                 last known-good image and is not written until {slot} is marked good or \
                 rolled back"
            ),
            InstallError::BootedNotGood { slot, state } => write!(
                f,
                "booted slot {slot} is {state}, not good: the other slot may be the only good \
                 one and is not written"
            ),
            InstallError::Refused(why) => write!(f, "{why}"),
            InstallError::NotVerified => write!(f, "no verified image to install"),
            InstallError::FailedBefore { version } => write!(
                f,
                "version {version} failed to boot on this board before (rolled back); not installed again"
            ),
        }
    }
}

impl std::error::Error for InstallError {}

impl From<EnvError> for InstallError {
    fn from(e: EnvError) -> Self {
        InstallError::Env(e)
    }
}
impl From<BundleError> for InstallError {
    fn from(e: BundleError) -> Self {
        InstallError::Bundle(e)
    }
}
impl From<VerifyError> for InstallError {
    fn from(e: VerifyError) -> Self {
        InstallError::Verify(e)
    }
}

/// An I/O error of a slot, as an [`InstallError`]: a [`FlashError`] keeps its variant.
pub(crate) fn slot_error(what: String, error: io::Error) -> InstallError {
    if !error.get_ref().is_some_and(|e| e.is::<FlashError>()) {
        return InstallError::Io { what, error };
    }
    let kind = error.kind();
    match error.into_inner().map(|e| e.downcast::<FlashError>()) {
        Some(Ok(e)) => InstallError::Flash { what, error: *e },
        Some(Err(other)) => InstallError::Io {
            what,
            error: io::Error::new(kind, other),
        },
        None => InstallError::Io {
            what,
            error: kind.into(),
        },
    }
}

/// The A/B state the environment describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbState {
    pub boot_slot: String,
    pub upgrade_available: bool,
    pub bootcount: u32,
    pub bootlimit: u32,
    /// Version and state (`good`, `new`, `invalid`) per slot.
    pub slots: Vec<(String, Option<String>, String)>,
}

impl AbState {
    pub fn read(board: &Board, env: &Env) -> Result<AbState, InstallError> {
        let first = board.slots.first().ok_or(InstallError::NoSlots)?;
        let boot_slot = env
            .get("boot_slot")
            .filter(|s| board.slot(s).is_some())
            .unwrap_or(&first.name)
            .to_string();
        let num = |k: &str| env.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(AbState {
            upgrade_available: env.get("upgrade_available") == Some("1"),
            bootcount: num("bootcount"),
            bootlimit: num("bootlimit"),
            slots: board
                .slots
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        env.get(&format!("slot_{}_version", s.name))
                            .map(str::to_string),
                        env.get(&format!("slot_{}_state", s.name))
                            .unwrap_or("good")
                            .to_string(),
                    )
                })
                .collect(),
            boot_slot,
        })
    }

    fn slot(&self, name: &str) -> Option<&(String, Option<String>, String)> {
        self.slots.iter().find(|s| s.0 == name)
    }

    /// The running version (the booted slot's).
    pub fn primary(&self) -> Option<String> {
        self.slot(&self.boot_slot).and_then(|s| s.1.clone())
    }

    /// The other slot's version, if it holds a good image.
    pub fn backup(&self) -> Option<String> {
        self.slots
            .iter()
            .find(|s| s.0 != self.boot_slot && s.2 == "good")
            .and_then(|s| s.1.clone())
    }

    /// The other slot's name.
    pub fn other(&self) -> Option<&str> {
        self.slots
            .iter()
            .find(|s| s.0 != self.boot_slot)
            .map(|s| s.0.as_str())
    }
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    pub slot: String,
    pub version: String,
    pub bytes: u64,
    pub sha256: [u8; 32],
    /// The time floor to persist (see [`TrustPolicy::not_before_floor`]).
    pub new_time_floor: u64,
    pub activated: bool,
}

pub(crate) fn set(env: &mut Env, k: &str, v: &str) -> Result<(), InstallError> {
    env.set(k, v).map(|_| ()).map_err(InstallError::Env)
}

/// The rule that keeps a board bootable: the inactive slot may only be written while the
/// booted slot is proven good (state `good`, not on trial). On trial (`upgrade_available=1`)
/// the inactive slot is the bootloader's fallback, the last known-good image: writing it would
/// leave no good slot, and the new install would reset the boot counter, so U-Boot would never
/// roll back. The agent waits until the booted slot is marked good (in Run) or rolled back.
pub fn check_fallback(ab: &AbState) -> Result<(), InstallError> {
    if ab.upgrade_available {
        return Err(InstallError::OnTrial {
            slot: ab.boot_slot.clone(),
            fallback: ab.other().unwrap_or("?").to_string(),
        });
    }
    let state = ab
        .slot(&ab.boot_slot)
        .map(|s| s.2.as_str())
        .unwrap_or("good");
    if state != "good" {
        return Err(InstallError::BootedNotGood {
            slot: ab.boot_slot.clone(),
            state: state.to_string(),
        });
    }
    Ok(())
}

/// What [`install`] checks of a verified manifest before it writes anything: exactly one
/// rootfs payload, a version that has not already failed to boot here, and a payload that
/// fits the inactive slot. Returns that slot and the payload. The agent also runs it as soon as
/// the head of a download (where the manifest is) is on disk, so that an image it would refuse
/// here stops after a few hundred KiB rather than at its last block.
pub fn check_manifest<'m>(
    board: &Board,
    ab: &AbState,
    manifest: &'m Manifest,
) -> Result<(Slot, &'m Payload), InstallError> {
    check_fallback(ab)?;
    let target_name = ab.other().ok_or(InstallError::NoSlots)?;
    let target = board
        .slot(target_name)
        .ok_or(InstallError::NoSlots)?
        .clone();
    let rootfs: Vec<_> = manifest
        .payloads
        .iter()
        .filter(|p| p.target == "rootfs")
        .collect();
    if rootfs.len() != 1 || manifest.payloads.len() != 1 {
        return Err(InstallError::Payloads(format!(
            "{} payloads, {} for rootfs: this board takes exactly one rootfs payload",
            manifest.payloads.len(),
            rootfs.len()
        )));
    }
    // A version that already failed to boot here (its slot was abandoned by the bootloader)
    // is not written again: the board would loop between install and rollback.
    let failed = ab
        .slots
        .iter()
        .any(|(_, v, st)| st == "invalid" && v.as_deref() == Some(manifest.version.as_str()));
    if failed {
        return Err(InstallError::FailedBefore {
            version: manifest.version.clone(),
        });
    }
    if rootfs[0].size > target.size {
        return Err(InstallError::TooLarge {
            payload: rootfs[0].size,
            slot: target.size,
        });
    }
    Ok((target, rootfs[0]))
}

/// An image that passed every check of [`verify_image`], the whole file read: its signed head,
/// every payload's tar header, size and SHA-256, nothing after the end of the archive, and
/// this board's install rules. Nothing has been written yet.
#[derive(Debug)]
pub struct CheckedImage {
    verified: VerifiedManifest,
    target: Slot,
    rootfs: Payload,
}

impl CheckedImage {
    pub fn version(&self) -> &str {
        &self.verified.manifest().version
    }
    /// The slot it would be written to.
    pub fn slot(&self) -> &Slot {
        &self.target
    }
    pub fn signer(&self) -> &str {
        self.verified.signer()
    }
    /// The time floor to persist once it is installed.
    pub fn new_time_floor(&self) -> u64 {
        self.verified.new_time_floor()
    }
}

/// Checks a whole image without writing anything: the environment and the A/B rules
/// ([`check_manifest`]), the signed head ([`TrustPolicy`]), then every byte after it. Only when
/// all of it is good does it log [`VERIFY_SUCCESS`]. An image refused here leaves both slots
/// and the environment exactly as they were.
pub fn verify_image<S: EnvStorage>(
    board: &Board,
    env_cfg: &EnvConfig,
    storage: &mut S,
    image: impl Read,
    policy: &TrustPolicy,
) -> Result<CheckedImage, InstallError> {
    let (env, _) = read_with(storage, env_cfg)?;
    let ab = AbState::read(board, &env)?;
    let mut bundle = BundleReader::new(image)?;
    let verified = bundle.verify(policy)?;
    let (target, rootfs) = check_manifest(board, &ab, verified.manifest())?;
    let rootfs = rootfs.clone();
    // Every payload, to the end of the archive: the digests, and nothing but zeros after.
    while let Some(payload) = bundle.next_payload(&verified)? {
        payload.finish()?;
    }
    bundle.finish()?;
    info!(
        "{VERIFY_SUCCESS} ({}, signed by {}, {} bytes for slot {})",
        verified.manifest().version,
        verified.signer(),
        rootfs.size,
        target.name
    );
    Ok(CheckedImage {
        verified,
        target,
        rootfs,
    })
}

/// Verifies `image` whole ([`verify_image`]), then writes its rootfs payload to the inactive
/// slot, reads it back, and either switches to it (`activate`) or leaves it staged as a good
/// backup (a predownload).
pub fn install<S: SlotStorage + EnvStorage, R: Read + Seek>(
    board: &Board,
    env_cfg: &EnvConfig,
    storage: &mut S,
    image: R,
    policy: &TrustPolicy,
    activate: bool,
) -> Result<InstallReport, InstallError> {
    install_chunked(board, env_cfg, storage, image, policy, activate, CHUNK)
}

/// [`install`] with a chosen write size (tests use small chunks to cut power between more
/// writes).
pub fn install_chunked<S: SlotStorage + EnvStorage, R: Read + Seek>(
    board: &Board,
    env_cfg: &EnvConfig,
    storage: &mut S,
    mut image: R,
    policy: &TrustPolicy,
    activate: bool,
    chunk: usize,
) -> Result<InstallReport, InstallError> {
    let checked = verify_image(board, env_cfg, storage, &mut image, policy)?;
    write_image(board, env_cfg, storage, image, &checked, activate, chunk)
}

/// Writes an image that [`verify_image`] accepted: reads it again from its start (the second
/// pass checks the same digests as it writes), marks the target `invalid`, writes, syncs,
/// reads back, and switches or stages it in one environment write.
pub fn write_image<S: SlotStorage + EnvStorage, R: Read + Seek>(
    board: &Board,
    env_cfg: &EnvConfig,
    storage: &mut S,
    mut image: R,
    checked: &CheckedImage,
    activate: bool,
    chunk: usize,
) -> Result<InstallReport, InstallError> {
    image
        .seek(SeekFrom::Start(0))
        .map_err(|error| InstallError::Io {
            what: "rewind the image".into(),
            error,
        })?;
    let (mut env, _) = read_with(storage, env_cfg)?;
    // The environment may have changed since the check (another writer): check again.
    let ab = AbState::read(board, &env)?;
    let manifest = checked.verified.manifest().clone();
    let (target, _) = check_manifest(board, &ab, &manifest)?;
    if target.name != checked.target.name {
        return Err(InstallError::Payloads(format!(
            "the inactive slot changed from {} to {} since the image was checked",
            checked.target.name, target.name
        )));
    }
    let mut bundle = BundleReader::new(image)?;
    let rootfs = checked.rootfs.clone();
    let expected = rootfs.sha256;

    // A payload the medium cannot take (bad blocks, a smaller volume) is refused before the
    // environment or the slot is touched.
    storage
        .check_fit(&target, rootfs.size)
        .map_err(|e| slot_error(format!("slot {}", target.name), e))?;
    // The slot can never look good while it is being written.
    let state_key = format!("slot_{}_state", target.name);
    if env.get(&state_key) != Some("invalid") {
        set(&mut env, &state_key, "invalid")?;
        write_with(storage, env_cfg, &env)?;
    }
    info!(
        "Writing {} ({} bytes) to slot {} ({})",
        rootfs.name,
        rootfs.size,
        target.name,
        target.device.display()
    );
    storage
        .begin(&target, rootfs.size)
        .map_err(|e| slot_error(format!("begin writing slot {}", target.name), e))?;
    let mut buf = vec![0u8; chunk.max(512)];
    let written = stream_payload(storage, &mut bundle, checked, &target, &mut buf)?;
    storage
        .sync(&target)
        .map_err(|e| slot_error(format!("sync slot {}", target.name), e))?;
    bundle.finish()?;

    // Read back what the medium holds (the step that catches silent write corruption).
    let got = hash_slot(storage, &target, written, &mut buf)?;
    if got != expected {
        return Err(InstallError::ReadBack {
            slot: target.name.clone(),
            expected: hex(&expected),
            got: hex(&got),
        });
    }
    info!(
        "Slot {} read back: SHA-256 {} matches the manifest",
        target.name,
        hex(&got)
    );

    record_written(
        board,
        env_cfg,
        storage,
        &mut env,
        &target.name,
        &manifest.version,
        activate,
    )?;
    Ok(InstallReport {
        slot: target.name,
        version: manifest.version.clone(),
        bytes: written,
        sha256: got,
        new_time_floor: checked.new_time_floor(),
        activated: activate,
    })
}

/// The last step of an install, once the slot read back right: ONE environment write that
/// records the slot's version and either switches to it (`activate`) or stages it as a good
/// backup (a predownload).
pub(crate) fn record_written<S: EnvStorage>(
    board: &Board,
    env_cfg: &EnvConfig,
    storage: &mut S,
    env: &mut Env,
    slot: &str,
    version: &str,
    activate: bool,
) -> Result<(), InstallError> {
    set(env, &format!("slot_{slot}_version"), version)?;
    if activate {
        switch_env(env, board, slot)?;
    } else {
        set(env, &format!("slot_{slot}_state"), "good")?;
    }
    write_with(storage, env_cfg, env)?;
    if activate {
        info!("Switched to slot {slot} ({version}) in one environment write");
    } else {
        info!("Slot {slot} holds {version} as a good backup, ready to activate");
    }
    Ok(())
}

/// Streams the verified rootfs payload of `bundle` into `target` through `buf`, its SHA-256
/// checked again on the way (the image was read twice: a change between the two reads is
/// caught here). Returns the bytes written.
fn stream_payload<S: SlotStorage, R: Read>(
    storage: &mut S,
    bundle: &mut BundleReader<R>,
    checked: &CheckedImage,
    target: &Slot,
    buf: &mut [u8],
) -> Result<u64, InstallError> {
    let name = &checked.rootfs.name;
    let mut payload = bundle
        .next_payload(&checked.verified)?
        .ok_or_else(|| InstallError::Payloads("the rootfs payload is missing".into()))?;
    let mut written = 0u64;
    loop {
        let n = read_full(&mut payload, buf).map_err(|error| InstallError::Io {
            what: format!("read {name}"),
            error,
        })?;
        if n == 0 {
            break;
        }
        SlotStorage::write_at(storage, target, written, &buf[..n])
            .map_err(|e| slot_error(format!("write slot {}", target.name), e))?;
        written += n as u64;
    }
    payload.finish()?;
    Ok(written)
}

/// The variables of a switch to `slot`, all set before the one write.
fn switch_env(env: &mut Env, board: &Board, slot: &str) -> Result<(), InstallError> {
    let limit = board.bootenv.as_ref().map(|b| b.boot_limit).unwrap_or(3);
    set(env, "boot_slot", slot)?;
    set(env, "upgrade_available", "1")?;
    set(env, "bootcount", "0")?;
    set(env, "bootlimit", &limit.to_string())?;
    set(env, &format!("slot_{slot}_state"), "new")
}

/// Switches to the other slot if it holds `version` as a good image (a predownloaded image, or
/// the backup partition that already has the controller's version).
pub fn activate<S: EnvStorage>(
    board: &Board,
    env_cfg: &EnvConfig,
    storage: &mut S,
    version: &str,
) -> Result<String, InstallError> {
    let (mut env, _) = read_with(storage, env_cfg)?;
    let ab = AbState::read(board, &env)?;
    if ab.upgrade_available {
        // Stay on the slot under trial until it is marked good or rolled back: a switch now
        // would make an unproven slot the bootloader's fallback.
        return Err(InstallError::OnTrial {
            slot: ab.boot_slot.clone(),
            fallback: ab.other().unwrap_or("?").to_string(),
        });
    }
    let other = ab.other().ok_or(InstallError::NoSlots)?.to_string();
    if ab.backup().as_deref() != Some(version) {
        return Err(InstallError::NotStaged {
            version: version.to_string(),
        });
    }
    switch_env(&mut env, board, &other)?;
    write_with(storage, env_cfg, &env)?;
    info!("Switched to slot {other} ({version}) in one environment write");
    Ok(other)
}

/// Marks the booted slot good if it is on trial: clears `upgrade_available` and the counter.
/// Returns the slot name when something was written.
pub fn mark_good<S: EnvStorage>(
    board: &Board,
    env_cfg: &EnvConfig,
    storage: &mut S,
) -> Result<Option<String>, InstallError> {
    let (mut env, _) = read_with(storage, env_cfg)?;
    let ab = AbState::read(board, &env)?;
    if !ab.upgrade_available {
        return Ok(None);
    }
    set(&mut env, "upgrade_available", "0")?;
    set(&mut env, "bootcount", "0")?;
    set(&mut env, &format!("slot_{}_state", ab.boot_slot), "good")?;
    write_with(storage, env_cfg, &env)?;
    Ok(Some(ab.boot_slot))
}

/// SHA-256 of the first `len` bytes of a slot.
pub fn hash_slot<S: SlotStorage>(
    storage: &mut S,
    slot: &Slot,
    len: u64,
    buf: &mut [u8],
) -> Result<[u8; 32], InstallError> {
    let mut h = crate::image::sha256::Sha256::new();
    let mut off = 0u64;
    while off < len {
        let want = (len - off).min(buf.len() as u64) as usize;
        let n = storage
            .read_at(slot, off, &mut buf[..want])
            .map_err(|e| slot_error(format!("read back slot {}", slot.name), e))?;
        if n == 0 {
            return Err(InstallError::Io {
                what: format!("read back slot {}", slot.name),
                error: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "slot shorter than the payload",
                ),
            });
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(h.finish())
}
