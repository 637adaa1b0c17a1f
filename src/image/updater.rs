//! The A/B update policy of one board, beside [`super::install`] (as RAUC keeps `mark.c`
//! beside `install.c`): what the board's environment says at start (booted slot, versions,
//! trial, or no usable environment at all), the trust policy an image is checked against
//! (anchors, time floor, announced version), the early check of a download's head, the
//! verify-then-write install, activation and mark-good. The runtime only carries out what
//! the WTP core asks and hands this module the files.

use std::cell::RefCell;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{error, info, warn};
use rustls_pki_types::CertificateDer;

use super::bootenv::{self, EnvConfig};
use super::bundle::BundleReader;
use super::install::{self, AbState, CheckedImage, Disk, InstallError, InstallReport};
use super::store::{ImageStore, Space, StoreError};
use super::stream::{self, SlotStream, Streamed};
use super::verify::{self, TrustPolicy, VerifyError};
use crate::board::Board;

/// Bytes of a download after which its head is surely on disk: the manifest, its signature
/// and the signer's chain take at most about 133 KiB (`image::bundle`'s limits), and the file
/// store holds less than 32 KiB back after the WTP's idle work.
pub const EARLY_CHECK_AT: u64 = 256 * 1024;

/// What the agent's configuration says about images.
#[derive(Debug, Clone, Default)]
pub struct UpdatePolicy {
    /// PEM files with the image-signing trust anchors (`[image] trust`).
    pub trust: Vec<PathBuf>,
    /// Where `time_floor` is kept (`state_dir`).
    pub state_dir: Option<PathBuf>,
    /// `[image] allow_downgrade`.
    pub allow_downgrade: bool,
}

/// What the environment says runs, for the WTP's Join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// The booted slot's version (`None`: not recorded, or no usable environment).
    pub primary: Option<String>,
    /// The other slot's version when it holds a good image.
    pub backup: Option<String>,
}

/// The result of checking a download's head ([`Updater::check_head`]).
#[derive(Debug)]
pub enum HeadCheck {
    /// The image would be installed: a one-line summary.
    Accepted(String),
    /// The image would be refused.
    Refused(InstallError),
    /// It could not be checked now (environment unreadable, anchors gone, ...): the full
    /// verification after the download decides.
    Unchecked(InstallError),
}

/// One board's A/B machinery.
pub struct Updater {
    board: Board,
    env_cfg: EnvConfig,
    disk: Disk,
    policy: UpdatePolicy,
    /// The booted slot is on trial and still needs marking good.
    trial: bool,
    /// Why nothing may be installed on this board at all (no valid U-Boot environment).
    refused: Option<String>,
    /// The image [`Updater::verify`] accepted, kept open for its install.
    checked: Option<(CheckedImage, File)>,
    /// The head of the download under way was checked ([`Updater::early_check`]).
    head_checked: bool,
    /// The slot the environment booted, when it could be read.
    booted: Option<String>,
    /// Slot mode: what the [`SlotStore`] the WTP writes through shares with this updater.
    slot_mode: Option<Rc<RefCell<SlotShared>>>,
    /// Slot mode: the streamed image [`Updater::verify`] accepted, for its commit.
    streamed: Option<Streamed>,
}

impl Updater {
    /// Reads the board's environment. `None` when the board has no slots or no environment
    /// (nothing to update).
    pub fn open(board: Board, policy: UpdatePolicy) -> Result<Option<(Updater, Running)>, String> {
        let env_cfg = match board.env_config() {
            Some(r) => r?,
            None => return Ok(None),
        };
        if board.slots.is_empty() {
            return Ok(None);
        }
        let mut u = Updater {
            board,
            env_cfg,
            disk: Disk::new(),
            policy,
            trial: false,
            refused: None,
            checked: None,
            head_checked: false,
            booted: None,
            slot_mode: None,
            streamed: None,
        };
        let env = match bootenv::read_with(&mut u.disk, &u.env_cfg) {
            Ok((env, read)) => {
                if let Some(e) = read.other_invalid() {
                    warn!(
                        "U-Boot environment: copy {} is invalid ({e}); using copy {}",
                        1 - read.current,
                        read.current
                    );
                }
                env
            }
            // No valid copy (erased, zeroed, truncated, CRC wrong): U-Boot boots its built-in
            // default environment, which the agent cannot read. Which slot runs and which one
            // is good are unknown, so nothing is downloaded, installed or switched, and no
            // fresh environment is written that could point the bootloader at an unknown
            // slot. The agent still joins and answers the controller (docs/ab-update.md).
            Err(e) => {
                let why = format!(
                    "U-Boot environment unusable ({e}): the booted slot is unknown; images are \
                     neither downloaded nor installed until a valid environment is restored"
                );
                error!("{why}");
                u.refused = Some(why);
                let running = Running {
                    primary: None,
                    backup: None,
                };
                return Ok(Some((u, running)));
            }
        };
        let ab = AbState::read(&u.board, &env).map_err(|e| e.to_string())?;
        let running = Running {
            primary: ab.primary(),
            backup: ab.backup(),
        };
        info!(
            "Booted slot {} ({}){}",
            ab.boot_slot,
            running.primary.as_deref().unwrap_or(""),
            if ab.upgrade_available {
                format!(
                    ", on trial: attempt {} of {}; marked good once joined",
                    ab.bootcount, ab.bootlimit
                )
            } else {
                String::new()
            }
        );
        u.trial = ab.upgrade_available;
        u.booted = Some(ab.boot_slot.clone());
        Ok(Some((u, running)))
    }

    pub fn board(&self) -> &Board {
        &self.board
    }

    /// The slot the board booted and the other one (the one an install writes), when the
    /// environment said which runs.
    pub fn slots(&self) -> Option<(&str, &str)> {
        let booted = self.booted.as_deref()?;
        let other = self.board.other_slot(booted)?;
        Some((booted, other.name.as_str()))
    }

    /// The booted slot is on trial (not yet marked good).
    pub fn on_trial(&self) -> bool {
        self.trial
    }

    /// Why this board cannot install at all, if it cannot.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// The image trust anchors. The agent loads them at start too: one that could never
    /// verify an image refuses to start rather than fail after every download.
    pub fn anchors(&self) -> Result<Vec<CertificateDer<'static>>, VerifyError> {
        let anchors = TrustPolicy::anchors_from_files(&self.policy.trust)?;
        if anchors.is_empty() {
            return Err(VerifyError::Anchors {
                path: None,
                reason: "no image trust anchors configured ([image] trust)".into(),
            });
        }
        Ok(anchors)
    }

    /// The trust policy for an image the controller announced as `announced` (`None`: no
    /// controller, as `wtpd fetch`), on a board running `current`.
    pub fn trust_policy(
        &self,
        current: &str,
        announced: Option<&str>,
    ) -> Result<TrustPolicy, InstallError> {
        trust_policy(
            &self.board,
            &self.policy,
            self.refused.as_deref(),
            current,
            announced,
        )
    }

    /// Slot mode (`download.mode = "slot"`): the store the WTP writes the download through,
    /// straight into the inactive slot ([`stream`]). [`Updater::verify`] and
    /// [`Updater::install_checked`] then take what it streamed.
    pub fn slot_store(&mut self) -> SlotStore {
        let shared = Rc::new(RefCell::new(SlotShared {
            board: self.board.clone(),
            env_cfg: self.env_cfg.clone(),
            policy: self.policy.clone(),
            refused: self.refused.clone(),
            disk: Disk::new(),
            image: None,
            stream: None,
            done: None,
            invalidated: false,
        }));
        self.slot_mode = Some(shared.clone());
        SlotStore {
            shared,
            buf: Vec::with_capacity(SLOT_BUFFER),
            error: None,
            slot: None,
        }
    }

    /// Verifies the whole downloaded image at `location` without writing anything, and keeps
    /// it open for [`Updater::install_checked`].
    pub fn verify(
        &mut self,
        location: &str,
        current: &str,
        announced: Option<&str>,
    ) -> Result<(), InstallError> {
        self.checked = None;
        self.streamed = None;
        if let Some(shared) = &self.slot_mode {
            // The stream checked every byte on the way and read the slot back.
            let streamed = shared
                .borrow_mut()
                .done
                .take()
                .ok_or(InstallError::NotVerified)?;
            if announced.is_some_and(|v| v != streamed.version()) {
                return Err(InstallError::NotVerified);
            }
            info!(
                "{} ({}, signed by {}, streamed into slot {} and read back)",
                super::verify::VERIFY_SUCCESS,
                streamed.version(),
                streamed.signer(),
                streamed.slot().name
            );
            self.streamed = Some(streamed);
            return Ok(());
        }
        let policy = self.trust_policy(current, announced)?;
        let mut file = File::open(location).map_err(|error| InstallError::Io {
            what: location.to_string(),
            error,
        })?;
        info!(
            "upgrade.sh: Using image {location} on {} ... ",
            self.board.name
        );
        let checked = install::verify_image(
            &self.board,
            &self.env_cfg,
            &mut self.disk,
            BufReader::new(&mut file),
            &policy,
        )?;
        self.checked = Some((checked, file));
        Ok(())
    }

    /// Writes the image [`Updater::verify`] accepted: switches to it (`activate`) or stages it
    /// as a good backup (a predownload).
    pub fn install_checked(&mut self, activate: bool) -> Result<InstallReport, InstallError> {
        if let Some(streamed) = self.streamed.take() {
            let report = stream::commit(
                &self.board,
                &self.env_cfg,
                &mut self.disk,
                &streamed,
                activate,
            )?;
            if let Some(shared) = &self.slot_mode {
                // The slot holds the new image now: no backup was lost.
                shared.borrow_mut().invalidated = false;
            }
            self.save_time_floor(report.new_time_floor);
            return Ok(report);
        }
        let (checked, file) = self.checked.take().ok_or(InstallError::NotVerified)?;
        let report = install::write_image(
            &self.board,
            &self.env_cfg,
            &mut self.disk,
            BufReader::new(file),
            &checked,
            activate,
            install::CHUNK,
        )?;
        self.save_time_floor(report.new_time_floor);
        Ok(report)
    }

    /// Verifies and installs an image in one go (`wtpd fetch`).
    pub fn install_file(
        &mut self,
        location: &str,
        current: &str,
        activate: bool,
    ) -> Result<InstallReport, InstallError> {
        self.verify(location, current, None)?;
        self.install_checked(activate)
    }

    /// Switches to the other slot if it holds `version` as a good image.
    pub fn activate(&mut self, version: &str) -> Result<String, InstallError> {
        if let Some(r) = &self.refused {
            return Err(InstallError::Refused(r.clone()));
        }
        install::activate(&self.board, &self.env_cfg, &mut self.disk, version)
    }

    /// Once the agent reached Run on a slot on trial: marks it good (one environment write).
    /// Returns the slot when one was marked; later calls do nothing.
    pub fn mark_good_once(&mut self) -> Result<Option<String>, InstallError> {
        if !self.trial {
            return Ok(None);
        }
        self.trial = false;
        install::mark_good(&self.board, &self.env_cfg, &mut self.disk)
    }

    /// Checks the head of the download under way once, as soon as `bytes` of it are on disk
    /// ([`EARLY_CHECK_AT`]): an image this board would refuse after the download (signature,
    /// hardware type, board, version, a payload larger than the slot) stops there, after a
    /// few hundred KiB instead of all of it. `None` when nothing was checked this time.
    pub fn early_check(
        &mut self,
        bytes: Option<u64>,
        location: &str,
        current: &str,
        announced: Option<&str>,
    ) -> Option<HeadCheck> {
        if self.slot_mode.is_some() {
            // The stream checks the head itself, before the first byte is written.
            return None;
        }
        match bytes {
            Some(b) if b >= EARLY_CHECK_AT => {}
            _ => {
                self.head_checked = false;
                return None;
            }
        }
        if self.head_checked {
            return None;
        }
        self.head_checked = true;
        Some(self.check_head(location, current, announced))
    }

    /// Checks the signed head of the image at `location` and this board's install rules.
    pub fn check_head(
        &mut self,
        location: &str,
        current: &str,
        announced: Option<&str>,
    ) -> HeadCheck {
        let policy = match self.trust_policy(current, announced) {
            Ok(p) => p,
            Err(e) => return HeadCheck::Unchecked(e),
        };
        let file = match File::open(location) {
            Ok(f) => f,
            Err(error) => {
                return HeadCheck::Unchecked(InstallError::Io {
                    what: location.to_string(),
                    error,
                })
            }
        };
        let bundle = match BundleReader::new(BufReader::new(file)) {
            Ok(b) => b,
            Err(e) => return HeadCheck::Refused(e.into()),
        };
        let verified = match bundle.verify(&policy) {
            Ok(v) => v,
            Err(e) => return HeadCheck::Refused(e.into()),
        };
        let state = match bootenv::read_with(&mut self.disk, &self.env_cfg)
            .map_err(InstallError::from)
            .and_then(|(env, _)| AbState::read(&self.board, &env))
        {
            Ok(s) => s,
            Err(e) => return HeadCheck::Unchecked(e),
        };
        let manifest = verified.manifest();
        match install::check_manifest(&self.board, &state, manifest) {
            Ok((slot, rootfs)) => HeadCheck::Accepted(format!(
                "{} signed by {}, {} bytes for slot {}",
                manifest.version,
                verified.signer(),
                rootfs.size,
                slot.name
            )),
            Err(e) => HeadCheck::Refused(e),
        }
    }

    fn read_time_floor(&self, now: Option<u64>) -> u64 {
        read_time_floor(&self.policy, now)
    }

    fn save_time_floor(&self, floor: u64) {
        let Some(d) = &self.policy.state_dir else {
            return;
        };
        if floor > self.read_time_floor(clock_now()) {
            let _ = std::fs::create_dir_all(d);
            let text = format!("{floor}\n");
            if let Err(e) = crate::fsio::write_atomic(&d.join("time_floor"), text.as_bytes()) {
                warn!("cannot persist the time floor: {e}");
            }
        }
    }
}

/// The trust policy for an image announced as `announced` on a board running `current`
/// ([`Updater::trust_policy`]).
fn trust_policy(
    board: &Board,
    policy: &UpdatePolicy,
    refused: Option<&str>,
    current: &str,
    announced: Option<&str>,
) -> Result<TrustPolicy, InstallError> {
    if let Some(r) = refused {
        return Err(InstallError::Refused(r.to_string()));
    }
    let anchors = TrustPolicy::anchors_from_files(&policy.trust)?;
    if anchors.is_empty() {
        return Err(VerifyError::Anchors {
            path: None,
            reason: "no image trust anchors configured ([image] trust)".into(),
        }
        .into());
    }
    let now = clock_now();
    Ok(TrustPolicy {
        anchors,
        hardware_type: board.image_type.clone(),
        board: board.name.clone(),
        not_before_floor: read_time_floor(policy, now),
        now,
        allow_downgrade: policy.allow_downgrade,
        current_version: Some(current.to_string()),
        expected_version: announced.map(str::to_string),
    })
}

/// The persisted time floor; garbage or a floor beyond what the agent accepts
/// ([`verify::plausible_floor`]) is logged, naming the file, and ignored.
fn read_time_floor(policy: &UpdatePolicy, now: Option<u64>) -> u64 {
    let Some(path) = policy.state_dir.as_ref().map(|d| d.join("time_floor")) else {
        return 0;
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
        Err(e) => {
            warn!("{}: unreadable ({e}); time floor ignored", path.display());
            return 0;
        }
    };
    let Ok(floor) = text.trim().parse::<u64>() else {
        warn!(
            "{}: {:?} is not unix seconds; time floor ignored",
            path.display(),
            text.trim().chars().take(40).collect::<String>()
        );
        return 0;
    };
    match verify::plausible_floor(floor, now) {
        Some(f) => f,
        None => {
            warn!(
                "{}: time floor {floor} is later than the latest time accepted ({}); ignored",
                path.display(),
                verify::latest_accepted_time(now)
            );
            0
        }
    }
}

/// The clock, or `None` on a board without a set real-time clock: a clock before 2020 stands
/// for that, and the persisted floor and the manifest's build time stand in for it (never
/// "anything goes in 1970").
fn clock_now() -> Option<u64> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    verify::set_clock(Some(now))
}

/// Bytes a [`SlotStore`] gathers before it hands them to the stream (the slot write happens
/// in the WTP's idle work once half of it is full, as the file store's).
const SLOT_BUFFER: usize = 64 * 1024;

/// What the [`SlotStore`] in the WTP and the [`Updater`] in the runtime share in slot mode.
pub struct SlotShared {
    board: Board,
    env_cfg: EnvConfig,
    policy: UpdatePolicy,
    refused: Option<String>,
    disk: Disk,
    /// The version announced for the download under way, and the running one.
    image: Option<(String, String)>,
    stream: Option<SlotStream>,
    /// The last stream that completed and read back, until [`Updater::verify`] takes it.
    done: Option<Streamed>,
    /// The download under way got past the signed head, so the inactive slot was marked
    /// `invalid`: whatever backup it held is gone until an install succeeds.
    invalidated: bool,
}

impl SlotShared {
    /// The inactive slot, if the environment lets it be written now.
    fn target(&mut self) -> Result<crate::board::Slot, InstallError> {
        if let Some(r) = &self.refused {
            return Err(InstallError::Refused(r.clone()));
        }
        let (env, _) = bootenv::read_with(&mut self.disk, &self.env_cfg)?;
        let ab = AbState::read(&self.board, &env)?;
        install::check_fallback(&ab)?;
        let name = ab.other().ok_or(InstallError::NoSlots)?;
        self.board.slot(name).cloned().ok_or(InstallError::NoSlots)
    }
}

/// The download store of slot mode: the image goes into the inactive slot as it arrives
/// ([`stream::SlotStream`]), never to a file. PRECHECK checks that the slot may be written and
/// reports its size instead of /tmp's room.
pub struct SlotStore {
    shared: Rc<RefCell<SlotShared>>,
    /// Blocks not handed to the stream yet (at most [`SLOT_BUFFER`], allocated once).
    buf: Vec<u8>,
    /// An error met in idle work, returned by the next write or finish.
    error: Option<StoreError>,
    /// The slot PRECHECK found, for logs (read once: the WTP asks for it often).
    slot: Option<(String, String)>,
}

fn refused(e: InstallError) -> StoreError {
    StoreError::Refused(e.to_string())
}

impl SlotStore {
    /// Hands the gathered blocks to the stream.
    fn flush(&mut self) -> Result<(), StoreError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut sh = self.shared.borrow_mut();
        let SlotShared {
            stream,
            disk,
            invalidated,
            ..
        } = &mut *sh;
        let s = stream
            .as_mut()
            .ok_or_else(|| StoreError::Io("write before open".into()))?;
        let r = s.push(disk, &self.buf);
        *invalidated |= s.slot().is_some();
        self.buf.clear();
        r.map_err(refused)
    }
}

impl ImageStore for SlotStore {
    fn begin_image(&mut self, version: &str, running: &str) {
        self.shared.borrow_mut().image = Some((version.to_string(), running.to_string()));
    }

    fn room(&self) -> String {
        match &self.slot {
            Some((name, _)) => format!("slot {name} size"),
            None => "slot size".into(),
        }
    }

    fn precheck(&mut self, _required: u64) -> Result<Space, StoreError> {
        self.buf.clear();
        self.error = None;
        let mut sh = self.shared.borrow_mut();
        sh.stream = None;
        sh.done = None;
        sh.invalidated = false;
        self.slot = None;
        let slot = sh.target().map_err(refused)?;
        self.slot = Some((slot.name.clone(), slot.device.display().to_string()));
        // The image's size is checked against the slot when the controller announces it, and
        // the payload's (the manifest's) when the signed head has arrived.
        Ok(Space {
            available_kib: slot.size / 1024,
            required_kib: 0,
        })
    }

    fn open(&mut self) -> Result<(), StoreError> {
        let mut sh = self.shared.borrow_mut();
        let (version, running) = sh
            .image
            .clone()
            .ok_or_else(|| StoreError::Io("open before the image was named".into()))?;
        let policy = trust_policy(
            &sh.board,
            &sh.policy,
            sh.refused.as_deref(),
            &running,
            Some(&version),
        )
        .map_err(refused)?;
        sh.stream = Some(SlotStream::new(&sh.board, &sh.env_cfg, policy));
        sh.done = None;
        self.buf.clear();
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        if self.buf.len() + data.len() > self.buf.capacity() {
            self.flush()?;
        }
        if data.len() > self.buf.capacity() {
            self.buf.extend_from_slice(data);
            return self.flush();
        }
        self.buf.extend_from_slice(data);
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn idle(&mut self) {
        if self.buf.len() >= self.buf.capacity() / 2 {
            if let Err(e) = self.flush() {
                self.error = Some(e);
            }
        }
    }

    fn finish(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        let mut sh = self.shared.borrow_mut();
        let SlotShared {
            stream, disk, done, ..
        } = &mut *sh;
        let s = stream
            .take()
            .ok_or_else(|| StoreError::Io("finish before open".into()))?;
        *done = Some(s.finish(disk).map_err(refused)?);
        Ok(())
    }

    fn abort(&mut self) {
        self.buf.clear();
        self.error = None;
        let mut sh = self.shared.borrow_mut();
        if let Some(slot) = sh.stream.take().and_then(|s| s.slot().cloned()) {
            info!(
                "upgrade.sh: Cleanup ... slot {} stays marked invalid; slot {} stays the one \
                 that boots",
                slot.name,
                sh.board
                    .slots
                    .iter()
                    .find(|s| s.name != slot.name)
                    .map(|s| s.name.as_str())
                    .unwrap_or("?")
            );
        }
        sh.done = None;
    }

    fn backup_lost(&mut self) -> bool {
        std::mem::take(&mut self.shared.borrow_mut().invalidated)
    }

    fn location(&self) -> String {
        match &self.slot {
            Some((name, device)) => format!("slot {name} ({device})"),
            None => "the inactive slot".into(),
        }
    }
}
