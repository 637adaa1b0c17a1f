//! The runtime's side of the board's hardware watchdog during a trial boot
//! ([`crate::watchdog`]: the decision and the device): opened at start when the booted slot is
//! on trial, petted after the event loop's turns, disarmed when the slot is marked good.

use std::time::Duration;

use crate::time::Instant;
use crate::watchdog::{Device, Petting, Step, WatchdogSection};
use crate::wtp::State;

/// The watchdog of a trial boot as the runtime holds it: the open device, the decision, and
/// the operator's log lines (one per decision).
pub struct Guard {
    dev: Option<Device>,
    petting: Petting,
    nowayout: bool,
    timeout: Duration,
}

impl Guard {
    /// Opens the board's watchdog for a trial boot and sets its timeout. `None` when it cannot
    /// be opened: logged as an error, and the trial goes on without it (refusing to run would
    /// fail the trial as surely as a hang, and U-Boot's count still moves at the next reset).
    pub fn arm(w: &WatchdogSection, now: Instant) -> Option<Guard> {
        let path = w.device.display();
        let dev = match Device::open(&w.device) {
            Ok(d) => d,
            Err(e) => {
                log::error!(
                    "{e}: the trial boot goes on without a hardware watchdog (a hang is not reset)"
                );
                return None;
            }
        };
        let support = dev.support().ok();
        log::info!(
            "Watchdog {path} opened ({}): the slot is on trial; petted while the agent makes \
             progress toward joining (window {} s)",
            support
                .as_ref()
                .map_or("driver unknown".to_string(), |s| s.identity.clone()),
            w.progress_window
        );
        let mut timeout = None;
        if let Some(want) = w.timeout {
            match dev.set_timeout(want) {
                Ok(t) => {
                    log::info!("Watchdog {path}: timeout set to {t} s");
                    timeout = Some(t);
                }
                Err(e) => log::warn!("{e}: the timeout stays the driver's"),
            }
        }
        let set = timeout.is_some();
        let timeout = match timeout.or_else(|| dev.timeout().ok()) {
            Some(t) if t > 0 => {
                if !set {
                    log::info!("Watchdog {path}: the driver's timeout is {t} s");
                }
                Duration::from_secs(t.into())
            }
            _ => {
                let t = w.timeout.unwrap_or(60);
                log::warn!("Watchdog {path}: timeout unknown; petting as for {t} s");
                Duration::from_secs(t.into())
            }
        };
        if support.as_ref().is_some_and(|s| !s.magic_close) && !w.nowayout {
            log::warn!(
                "Watchdog {path}: the driver does not announce the magic close; it may not \
                 stop after the slot is marked good (set nowayout = true to keep petting it)"
            );
        }
        Some(Guard {
            dev: Some(dev),
            petting: Petting::new(Duration::from_secs(w.progress_window.into()), timeout, now),
            nowayout: w.nowayout,
            timeout,
        })
    }

    /// After a turn of the event loop: what the agent did, and a pet when one is due.
    pub fn turn(&mut self, state: State, answered: bool, now: Instant) {
        self.petting.observe(state, answered, now);
        let Some(step) = self.petting.poll(now) else {
            return;
        };
        let Some(dev) = self.dev.as_mut() else { return };
        match step {
            Step::Starved { idle } => log::warn!(
                "Watchdog {}: no progress toward joining for {} s ({}): stopped petting; the \
                 board resets within {} s unless progress comes back",
                dev.path().display(),
                idle.as_secs(),
                state.name(),
                self.timeout.as_secs()
            ),
            Step::Resumed | Step::Pet => {
                if step == Step::Resumed {
                    log::info!(
                        "Watchdog {}: progress again ({}): petting resumed",
                        dev.path().display(),
                        state.name()
                    );
                }
                if let Err(e) = dev.keepalive() {
                    limited_warn!("watchdog keepalive failed", None, "{e}");
                }
            }
        }
    }

    /// The slot was marked good: the magic close, or on a nowayout driver petting for good.
    pub fn trial_ended(&mut self) {
        if self.petting.trial_ended(self.nowayout) {
            if let Some(dev) = self.dev.take() {
                let path = dev.path().display().to_string();
                match dev.disarm() {
                    Ok(()) => {
                        log::info!("Watchdog {path}: slot marked good: disarmed (magic close)")
                    }
                    Err(e) => log::error!("{e}: the watchdog may still reset the board"),
                }
            }
        } else if let Some(dev) = &self.dev {
            log::info!(
                "Watchdog {}: slot marked good; the driver is nowayout: petted every {} s for the \
                 rest of this run",
                dev.path().display(),
                self.petting.interval().as_secs()
            );
        }
    }

    /// When [`Guard::turn`] must run next without any other event.
    pub fn next_wake(&self) -> Option<Instant> {
        self.dev.as_ref().and(self.petting.next_wake())
    }
}
