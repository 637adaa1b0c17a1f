//! The board's hardware watchdog during a trial boot (docs/boards.md, "The hardware watchdog").
//!
//! While the booted slot is on trial (U-Boot's `upgrade_available=1`), the agent opens the
//! board's watchdog device (`[watchdog]` in the board file), which starts it. It pets it from
//! its event loop only while it makes progress toward joining a controller; an agent that
//! hangs, or goes round in circles, stops petting, the watchdog resets the board, and U-Boot
//! counts the boot and rolls back after `bootlimit` of them. Once the slot is marked good the
//! agent disarms the watchdog with the magic close (`V`), or, on a `nowayout` driver that
//! cannot be stopped, pets it for the rest of its life.
//!
//! [`Petting`] is the decision (sans-IO, time as input); [`Device`] is the Linux watchdog API
//! (`Documentation/watchdog/watchdog-api.rst`): open, `WDIOC_SETTIMEOUT`, a write to pet, `V`
//! and close to stop.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::time::Instant;
use crate::wtp::State;

/// `[watchdog]` of a board file.
///
/// ```toml
/// [watchdog]
/// device = "/dev/watchdog"   # opened only while the booted slot is on trial
/// timeout = 30               # seconds, set with WDIOC_SETTIMEOUT if the driver supports it
/// progress_window = 120      # seconds without progress toward joining before petting stops
/// nowayout = false           # true: the driver cannot be stopped; pet it after mark-good too
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogSection {
    #[serde(default = "default_device")]
    pub device: PathBuf,
    /// Seconds; `None`: the driver's own timeout.
    #[serde(default)]
    pub timeout: Option<u32>,
    /// Seconds without progress after which the agent stops petting.
    #[serde(default = "default_window")]
    pub progress_window: u32,
    #[serde(default)]
    pub nowayout: bool,
}

fn default_device() -> PathBuf {
    PathBuf::from("/dev/watchdog")
}

fn default_window() -> u32 {
    120
}

impl WatchdogSection {
    /// The board file's rules: a timeout and a window the watchdog API can carry.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = self.timeout {
            if !(1..=65535).contains(&t) {
                return Err(format!("watchdog timeout {t}: 1 to 65535 seconds"));
            }
        }
        if !(1..=86400).contains(&self.progress_window) {
            return Err(format!(
                "watchdog progress_window {}: 1 to 86400 seconds",
                self.progress_window
            ));
        }
        Ok(())
    }
}

/// How far toward Run a CAPWAP state is. Back-off and teardown states are 0: entering them is
/// falling back.
pub fn rank(state: State) -> u8 {
    match state {
        State::Idle | State::Sulking | State::Reset | State::DtlsTeardown => 0,
        State::Discovery => 1,
        State::DtlsSetup => 2,
        State::Join | State::ImageData => 3,
        State::Configure => 4,
        State::DataCheck => 5,
        State::Run => 6,
    }
}

/// What the runtime does with the device now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Write to the device (keepalive).
    Pet,
    /// No progress for `idle`: petting stops (logged once); the watchdog resets the board
    /// unless progress comes back before it expires.
    Starved { idle: Duration },
    /// Progress came back after [`Step::Starved`] and before a reset: petting again.
    Resumed,
}

/// Where the trial stands, for the watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Trial,
    Starved,
    /// Marked good on a nowayout driver: petted for good.
    Forever,
    Disarmed,
}

/// The decision to pet, sans-IO: the runtime reports what the agent did ([`Petting::observe`])
/// and asks what to do now ([`Petting::poll`]).
///
/// Progress toward joining is a CAPWAP state further toward Run than any before in this run,
/// or an answer from the controller while the agent is at its furthest state and has not fallen
/// back from it (a DTLS handshake step, the Join Response). An agent that falls back (to
/// Discovery, Sulking, a teardown) and climbs again makes progress only past its best state so
/// far: one that goes round in circles is reset like one that hangs.
#[derive(Debug, Clone)]
pub struct Petting {
    window: Duration,
    interval: Duration,
    phase: Phase,
    last_progress: Instant,
    last_pet: Option<Instant>,
    best: u8,
    fell_back: bool,
}

impl Petting {
    /// Starts at `now` (opening the device counts as progress). `timeout`: the watchdog's, as
    /// the driver reports it; the device is petted every third of it.
    pub fn new(window: Duration, timeout: Duration, now: Instant) -> Petting {
        Petting {
            window,
            interval: (timeout / 3).max(Duration::from_secs(1)),
            phase: Phase::Trial,
            last_progress: now,
            last_pet: None,
            best: 0,
            fell_back: false,
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// What the agent is doing: its CAPWAP state after a turn, and whether that turn handled a
    /// datagram from the controller. True when it counts as progress.
    pub fn observe(&mut self, state: State, answered: bool, now: Instant) -> bool {
        let r = rank(state);
        let progress = if r > self.best {
            self.best = r;
            self.fell_back = false;
            true
        } else if r < self.best {
            self.fell_back = true;
            false
        } else {
            answered && !self.fell_back && r > 0
        };
        if progress {
            self.last_progress = now;
        }
        progress
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Step> {
        let due = |last: Option<Instant>, every: Duration| last.is_none_or(|t| now - t >= every);
        match self.phase {
            Phase::Disarmed => None,
            Phase::Forever => due(self.last_pet, self.interval).then(|| {
                self.last_pet = Some(now);
                Step::Pet
            }),
            Phase::Trial | Phase::Starved => {
                let idle = now - self.last_progress;
                if idle >= self.window {
                    if self.phase == Phase::Trial {
                        self.phase = Phase::Starved;
                        return Some(Step::Starved { idle });
                    }
                    return None;
                }
                if self.phase == Phase::Starved {
                    self.phase = Phase::Trial;
                    self.last_pet = Some(now);
                    return Some(Step::Resumed);
                }
                due(self.last_pet, self.interval).then(|| {
                    self.last_pet = Some(now);
                    Step::Pet
                })
            }
        }
    }

    /// The slot was marked good: true when the watchdog may be stopped (magic close), false on
    /// a nowayout driver, which is petted from now on whatever the agent does.
    pub fn trial_ended(&mut self, nowayout: bool) -> bool {
        if nowayout {
            self.phase = Phase::Forever;
            false
        } else {
            self.phase = Phase::Disarmed;
            true
        }
    }

    /// When [`Petting::poll`] has something to do next; `None`: only after progress.
    pub fn next_wake(&self) -> Option<Instant> {
        let pet = self
            .last_pet
            .map_or(self.last_progress, |t| t + self.interval);
        match self.phase {
            Phase::Disarmed | Phase::Starved => None,
            Phase::Forever => Some(pet),
            Phase::Trial => Some(pet.min(self.last_progress + self.window)),
        }
    }
}

/// A watchdog operation that failed, with the device and what was asked.
#[derive(Debug)]
pub enum WatchdogError {
    Open {
        path: PathBuf,
        error: std::io::Error,
    },
    Ioctl {
        path: PathBuf,
        what: &'static str,
        error: nix::errno::Errno,
    },
    Write {
        path: PathBuf,
        what: &'static str,
        error: std::io::Error,
    },
}

impl std::fmt::Display for WatchdogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchdogError::Open { path, error } => {
                write!(f, "cannot open watchdog {}: {error}", path.display())
            }
            WatchdogError::Ioctl { path, what, error } => {
                write!(f, "watchdog {}: {what}: {error}", path.display())
            }
            WatchdogError::Write { path, what, error } => {
                write!(f, "watchdog {}: {what}: {error}", path.display())
            }
        }
    }
}

impl std::error::Error for WatchdogError {}

mod ioctl {
    /// `struct watchdog_info` of linux/watchdog.h.
    #[repr(C)]
    pub struct WatchdogInfo {
        pub options: u32,
        pub firmware_version: u32,
        pub identity: [u8; 32],
    }
    nix::ioctl_read!(getsupport, b'W', 0, WatchdogInfo);
    nix::ioctl_readwrite!(settimeout, b'W', 6, libc::c_int);
    nix::ioctl_read!(gettimeout, b'W', 7, libc::c_int);
}

/// `WDIOF_SETTIMEOUT`: the driver takes WDIOC_SETTIMEOUT.
const WDIOF_SETTIMEOUT: u32 = 0x0080;
/// `WDIOF_MAGICCLOSE`: a `V` before the close stops the watchdog.
const WDIOF_MAGICCLOSE: u32 = 0x0100;

/// What the driver says of itself (WDIOC_GETSUPPORT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Support {
    pub identity: String,
    pub set_timeout: bool,
    pub magic_close: bool,
}

/// An open watchdog device: open starts it, [`Device::keepalive`] pets it, [`Device::disarm`]
/// stops it (magic close); dropped without that, it keeps running and resets the board.
pub struct Device {
    file: File,
    path: PathBuf,
}

impl Device {
    pub fn open(path: &Path) -> Result<Device, WatchdogError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|error| WatchdogError::Open {
                path: path.to_path_buf(),
                error,
            })?;
        Ok(Device {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn ioctl_err(&self, what: &'static str) -> impl FnOnce(nix::errno::Errno) -> WatchdogError {
        let path = self.path.clone();
        move |error| WatchdogError::Ioctl { path, what, error }
    }

    /// WDIOC_GETSUPPORT.
    pub fn support(&self) -> Result<Support, WatchdogError> {
        let mut info = ioctl::WatchdogInfo {
            options: 0,
            firmware_version: 0,
            identity: [0; 32],
        };
        // SAFETY: the fd is open; `info` is the struct the ioctl fills.
        unsafe { ioctl::getsupport(self.file.as_raw_fd(), &mut info) }
            .map_err(self.ioctl_err("WDIOC_GETSUPPORT"))?;
        let end = info.identity.iter().position(|&b| b == 0).unwrap_or(32);
        Ok(Support {
            identity: String::from_utf8_lossy(&info.identity[..end]).into_owned(),
            set_timeout: info.options & WDIOF_SETTIMEOUT != 0,
            magic_close: info.options & WDIOF_MAGICCLOSE != 0,
        })
    }

    /// WDIOC_SETTIMEOUT: the timeout the driver set (it may round it).
    pub fn set_timeout(&self, secs: u32) -> Result<u32, WatchdogError> {
        let mut t = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
        // SAFETY: the fd is open; the ioctl reads and writes one int.
        unsafe { ioctl::settimeout(self.file.as_raw_fd(), &mut t) }
            .map_err(self.ioctl_err("WDIOC_SETTIMEOUT"))?;
        Ok(u32::try_from(t).unwrap_or(0))
    }

    /// WDIOC_GETTIMEOUT.
    pub fn timeout(&self) -> Result<u32, WatchdogError> {
        let mut t: libc::c_int = 0;
        // SAFETY: the fd is open; the ioctl writes one int.
        unsafe { ioctl::gettimeout(self.file.as_raw_fd(), &mut t) }
            .map_err(self.ioctl_err("WDIOC_GETTIMEOUT"))?;
        Ok(u32::try_from(t).unwrap_or(0))
    }

    /// Pets the watchdog: any write that holds no `V`.
    pub fn keepalive(&mut self) -> Result<(), WatchdogError> {
        self.file
            .write_all(b".")
            .map_err(|error| WatchdogError::Write {
                path: self.path.clone(),
                what: "keepalive",
                error,
            })
    }

    /// The magic close: `V`, then close. The driver stops the watchdog unless it is nowayout.
    pub fn disarm(mut self) -> Result<(), WatchdogError> {
        self.file
            .write_all(b"V")
            .map_err(|error| WatchdogError::Write {
                path: self.path.clone(),
                what: "magic close",
                error,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Instant {
        Instant::from_duration(Duration::from_secs(s))
    }

    fn petting() -> Petting {
        // window 60 s, timeout 30 s: a pet every 10 s.
        Petting::new(Duration::from_secs(60), Duration::from_secs(30), at(0))
    }

    #[test]
    fn pets_every_third_of_the_timeout_while_within_the_window() {
        let mut p = petting();
        assert_eq!(p.interval(), Duration::from_secs(10));
        assert_eq!(p.poll(at(0)), Some(Step::Pet));
        assert_eq!(p.poll(at(5)), None);
        assert_eq!(p.next_wake(), Some(at(10)));
        assert_eq!(p.poll(at(10)), Some(Step::Pet));
        assert!(p.observe(State::Discovery, false, at(12)));
        assert_eq!(p.poll(at(20)), Some(Step::Pet));
        assert_eq!(p.poll(at(70)), Some(Step::Pet), "12 + 60 > 70");
        // The window ends 60 s after the last progress: that is a wake too.
        assert_eq!(p.next_wake(), Some(at(72)));
        assert_eq!(p.poll(at(72)), Some(Step::Starved { idle: secs(60) }));
        // Said once; nothing more to do until progress.
        assert_eq!(p.poll(at(80)), None);
        assert_eq!(p.next_wake(), None);
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn an_agent_that_hangs_at_start_stops_petting_after_the_window() {
        let mut p = petting();
        let mut pets = 0;
        for t in 0..200 {
            match p.poll(at(t)) {
                Some(Step::Pet) => pets += 1,
                Some(Step::Starved { idle }) => {
                    assert_eq!((t, idle), (60, secs(60)));
                    break;
                }
                other => assert_eq!(other, None),
            }
        }
        assert_eq!(pets, 6, "at 0, 10, ... 50 s");
    }

    #[test]
    fn progress_is_a_state_further_toward_run_or_an_answer_at_the_furthest_step() {
        let mut p = petting();
        assert!(!p.observe(State::Idle, false, at(1)));
        assert!(p.observe(State::Discovery, false, at(2)));
        assert!(!p.observe(State::Discovery, false, at(3)), "no change");
        assert!(
            p.observe(State::Discovery, true, at(4)),
            "a Discovery Response"
        );
        assert!(p.observe(State::DtlsSetup, false, at(5)));
        assert!(p.observe(State::DtlsSetup, true, at(6)), "a handshake step");
        assert!(p.observe(State::Join, true, at(7)));
        // Fell back: the same steps again are no progress, answers neither.
        assert!(!p.observe(State::DtlsTeardown, false, at(8)));
        assert!(!p.observe(State::Discovery, true, at(9)));
        assert!(!p.observe(State::DtlsSetup, true, at(10)));
        assert!(!p.observe(State::Join, true, at(11)));
        assert!(p.observe(State::Configure, false, at(12)), "past the best");
        assert!(p.observe(State::Configure, true, at(13)));
        assert!(p.observe(State::Run, false, at(14)));
    }

    #[test]
    fn an_agent_going_round_in_circles_is_starved() {
        let mut p = petting();
        p.observe(State::Join, true, at(1));
        let mut starved = None;
        for t in 2..300 {
            // Discovery, DTLS, Join and back, every 10 s, each with answers.
            let s = [
                State::Discovery,
                State::DtlsSetup,
                State::Join,
                State::Sulking,
            ][(t as usize / 10) % 4];
            p.observe(s, true, at(t));
            if let Some(Step::Starved { idle }) = p.poll(at(t)) {
                starved = Some((t, idle));
                break;
            }
        }
        assert_eq!(starved, Some((61, secs(60))));
    }

    #[test]
    fn progress_after_starving_resumes_petting() {
        let mut p = petting();
        assert_eq!(p.poll(at(0)), Some(Step::Pet));
        assert_eq!(p.poll(at(61)), Some(Step::Starved { idle: secs(61) }));
        assert!(p.observe(State::Discovery, true, at(65)));
        assert_eq!(p.poll(at(65)), Some(Step::Resumed));
        assert_eq!(p.poll(at(70)), None);
        assert_eq!(p.poll(at(75)), Some(Step::Pet));
    }

    #[test]
    fn marked_good_disarms_or_pets_forever_on_nowayout() {
        let mut p = petting();
        assert!(p.trial_ended(false));
        assert_eq!(p.poll(at(1000)), None);
        assert_eq!(p.next_wake(), None);

        let mut p = petting();
        p.poll(at(0));
        assert!(!p.trial_ended(true));
        // Whatever the agent does, and long after the window.
        for t in (10..1000).step_by(10) {
            assert_eq!(p.poll(at(t)), Some(Step::Pet), "{t}");
            assert_eq!(p.next_wake(), Some(at(t + 10)));
        }
    }

    #[test]
    fn board_section_defaults_and_refusals() {
        let w: WatchdogSection = toml::from_str("").unwrap();
        assert_eq!(
            w,
            WatchdogSection {
                device: "/dev/watchdog".into(),
                timeout: None,
                progress_window: 120,
                nowayout: false
            }
        );
        w.validate().unwrap();
        let bad: WatchdogSection = toml::from_str("timeout = 0").unwrap();
        assert!(bad.validate().unwrap_err().contains("1 to 65535"));
        let bad: WatchdogSection = toml::from_str("progress_window = 0").unwrap();
        assert!(bad.validate().unwrap_err().contains("progress_window 0"));
        assert!(toml::from_str::<WatchdogSection>("timeuot = 3").is_err());
    }

    /// The device I/O against a stand-in: a FIFO where /dev/watchdog would be (no watchdog
    /// driver on the build machine). It is not a watchdog: the ioctls are refused (ENOTTY; or
    /// ENOSYS under qemu-user, which passes no ioctl it does not know to the host: the unit
    /// tests of the cross builds run there), and the bytes the agent writes come out at the
    /// other end.
    #[test]
    fn device_io_against_a_fifo_stand_in() {
        let dir = std::env::temp_dir().join(format!("wtpd-watchdog-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("watchdog-stand-in");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(&fifo).unwrap())
        };
        let mut dev = Device::open(&fifo).unwrap();
        let e = dev.set_timeout(30).unwrap_err();
        let refused = ["ENOTTY", "ENOSYS"];
        assert!(
            e.to_string().contains("WDIOC_SETTIMEOUT")
                && refused.iter().any(|r| e.to_string().contains(r)),
            "{e}"
        );
        assert!(dev.support().is_err());
        assert!(dev.timeout().is_err());
        dev.keepalive().unwrap();
        dev.keepalive().unwrap();
        dev.disarm().unwrap();
        // The close after the V ends the reader's read.
        assert_eq!(reader.join().unwrap(), b"..V");

        let missing = Device::open(&dir.join("no-such-watchdog")).err().unwrap();
        assert!(
            missing.to_string().starts_with("cannot open watchdog ")
                && missing.to_string().contains("No such file"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
