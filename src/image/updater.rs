//! The A/B update policy of one board, beside [`super::install`] (as RAUC keeps `mark.c`
//! beside `install.c`): what the board's environment says at start (booted slot, versions,
//! trial, or no usable environment at all), the trust policy an image is checked against
//! (anchors, time floor, announced version), the early check of a download's head, the
//! verify-then-write install, activation and mark-good. The runtime only carries out what
//! the WTP core asks and hands this module the files.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{error, info, warn};
use rustls_pki_types::CertificateDer;

use super::bootenv::{self, EnvConfig};
use super::bundle::BundleReader;
use super::install::{self, AbState, CheckedImage, Disk, InstallError, InstallReport};
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
        if let Some(r) = &self.refused {
            return Err(InstallError::Refused(r.clone()));
        }
        let anchors = self.anchors()?;
        let now = clock_now();
        Ok(TrustPolicy {
            anchors,
            hardware_type: self.board.image_type.clone(),
            board: self.board.name.clone(),
            not_before_floor: self.read_time_floor(now),
            now,
            allow_downgrade: self.policy.allow_downgrade,
            current_version: Some(current.to_string()),
            expected_version: announced.map(str::to_string),
        })
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

    /// The persisted time floor; garbage or a floor beyond what the agent accepts
    /// ([`verify::plausible_floor`]) is logged, naming the file, and ignored.
    fn read_time_floor(&self, now: Option<u64>) -> u64 {
        let Some(path) = self.policy.state_dir.as_ref().map(|d| d.join("time_floor")) else {
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
