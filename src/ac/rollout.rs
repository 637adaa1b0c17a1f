//! Rolling activation (`acsim activate --rolling`): the APs that have the new image staged are
//! reset onto it in waves, a share of each site at a time, so that their neighbours keep
//! serving clients. A wave starts when every AP of the one before has rejoined on the new
//! version; the first AP that rejoins on another version (it rolled back: its new image did not
//! commit) or does not rejoin in time halts the rollout, and the APs after it keep what they
//! run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use log::{info, warn};

use super::{Ac, SessionState};
use crate::time::Instant;

/// How long a wave's APs have to come back on the new version.
pub const WAVE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutState {
    Running,
    Done,
    Halted(String),
}

/// Where one AP of the current wave stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Its Reset Request is not sent yet (it was busy).
    ToActivate,
    /// Reset; waiting for it to join again.
    Activated,
    /// Back in Run on the new version.
    Back,
}

#[derive(Debug, Clone)]
pub struct Rollout {
    pub version: String,
    pub percent: u8,
    pub site: Option<String>,
    pub waves: Vec<Vec<String>>,
    /// The wave under way (index into `waves`).
    pub wave: usize,
    pub state: RolloutState,
    steps: BTreeMap<String, Step>,
    wave_started: Instant,
    pub timeout: Duration,
}

impl Rollout {
    /// One line for `acsim status`.
    pub fn describe(&self) -> String {
        let scope = format!(
            "{}% of {} per wave",
            self.percent,
            self.site
                .as_deref()
                .map(|s| format!("site {s}"))
                .unwrap_or_else(|| "each site".into())
        );
        let total: usize = self.waves.iter().map(Vec::len).sum();
        match &self.state {
            RolloutState::Done => format!(
                "Rolling activation: complete: {total} APs on {} in {} waves ({scope})",
                self.version,
                self.waves.len()
            ),
            RolloutState::Halted(why) => format!(
                "Rolling activation: HALTED at wave {} of {} ({scope}): {why}",
                self.wave + 1,
                self.waves.len()
            ),
            RolloutState::Running => {
                let mut waiting: Vec<&str> = self
                    .steps
                    .iter()
                    .filter(|(_, s)| **s != Step::Back)
                    .map(|(n, _)| n.as_str())
                    .collect();
                waiting.sort();
                let mut line = format!(
                    "Rolling activation: wave {} of {} ({scope}) to {}: ",
                    self.wave + 1,
                    self.waves.len(),
                    self.version
                );
                let _ = write!(line, "waiting for {}", waiting.join(", "));
                line
            }
        }
    }
}

impl Ac {
    /// Starts a rolling activation of the configured image: the APs in Run that have it staged
    /// (their backup) and do not run it, `percent` of each site per wave (at least one AP).
    pub fn start_rollout(
        &mut self,
        percent: u8,
        site: Option<&str>,
        now: Instant,
    ) -> Result<String, String> {
        let Some(version) = self.cfg.image_version.clone() else {
            return Err("no image is configured".into());
        };
        if self.rollout_running() {
            return Err("a rolling activation is under way".into());
        }
        let percent = percent.clamp(1, 100);
        let mut by_site: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in self.sessions.values() {
            if s.state != SessionState::Run
                || s.info.primary_version == version
                || s.info.backup_version != version
            {
                continue;
            }
            let site_name = self.site_of(s);
            if site.is_some_and(|x| x != site_name) {
                continue;
            }
            by_site
                .entry(site_name)
                .or_default()
                .push(s.info.name.clone());
        }
        if by_site.is_empty() {
            return Err(format!(
                "no AP in Run has {version} staged{}",
                site.map(|s| format!(" at site {s}")).unwrap_or_default()
            ));
        }
        let mut waves: Vec<Vec<String>> = Vec::new();
        for names in by_site.values_mut() {
            names.sort();
            let per = (names.len() * percent as usize).div_ceil(100).max(1);
            for (i, chunk) in names.chunks(per).enumerate() {
                if waves.len() <= i {
                    waves.push(Vec::new());
                }
                waves[i].extend(chunk.iter().cloned());
            }
        }
        let n: usize = waves.iter().map(Vec::len).sum();
        let summary = format!(
            "rolling activation of {version}: {n} APs in {} waves of {percent}% per site",
            waves.len()
        );
        info!(
            "Rolling activation of {version} started: {n} APs in {} waves",
            waves.len()
        );
        self.rollout = Some(Rollout {
            version,
            percent,
            site: site.map(str::to_string),
            waves,
            wave: 0,
            state: RolloutState::Running,
            steps: BTreeMap::new(),
            wave_started: now,
            timeout: WAVE_TIMEOUT,
        });
        self.begin_wave(now);
        self.advance_rollout(now);
        self.fleet_tick = Some(now + Duration::from_secs(1));
        Ok(summary)
    }

    pub fn rollout(&self) -> Option<&Rollout> {
        self.rollout.as_ref()
    }

    pub(super) fn rollout_running(&self) -> bool {
        self.rollout
            .as_ref()
            .is_some_and(|r| r.state == RolloutState::Running)
    }

    fn begin_wave(&mut self, now: Instant) {
        let Some(r) = self.rollout.as_mut() else {
            return;
        };
        r.steps = r.waves[r.wave]
            .iter()
            .map(|n| (n.clone(), Step::ToActivate))
            .collect();
        r.wave_started = now;
        info!(
            "Rolling activation: wave {} of {}: {}",
            r.wave + 1,
            r.waves.len(),
            r.waves[r.wave].join(", ")
        );
    }

    /// Moves the rolling activation on: sends the Reset Requests of the wave, watches its APs
    /// come back, starts the next wave or halts.
    pub(super) fn advance_rollout(&mut self, now: Instant) {
        if !self.rollout_running() {
            return;
        }
        let Some(r) = self.rollout.clone() else {
            return;
        };
        let mut steps = r.steps.clone();
        let mut halt: Option<String> = None;
        for (name, step) in steps.iter_mut() {
            let session = self.sessions.values().find(|s| &s.info.name == name);
            match *step {
                Step::ToActivate => {
                    if let Some(peer) = session.map(|s| s.peer) {
                        if self.activate(peer, now) {
                            *step = Step::Activated;
                        }
                    }
                }
                Step::Activated => {
                    // The session that got the Reset Request is in Reset until it goes; one
                    // in Run under this name is the AP back from its reboot.
                    if let Some(s) = session.filter(|s| s.state == SessionState::Run) {
                        if s.info.primary_version == r.version {
                            info!("Rolling activation: {name} is back on {}", r.version);
                            *step = Step::Back;
                        } else {
                            halt = Some(format!(
                                "{name} rejoined on {}, not {}: its new image did not commit and it rolled back",
                                s.info.primary_version, r.version
                            ));
                            break;
                        }
                    }
                }
                Step::Back => {}
            }
        }
        if halt.is_none() && now.saturating_since(r.wave_started) > r.timeout {
            let late: Vec<&str> = steps
                .iter()
                .filter(|(_, s)| **s != Step::Back)
                .map(|(n, _)| n.as_str())
                .collect();
            halt = Some(format!(
                "{} did not rejoin on {} within {}s",
                late.join(", "),
                r.version,
                r.timeout.as_secs()
            ));
        }
        let done = steps.values().all(|s| *s == Step::Back);
        let Some(rm) = self.rollout.as_mut() else {
            return;
        };
        rm.steps = steps;
        if let Some(why) = halt {
            warn!(
                "Rolling activation HALTED at wave {} of {}: {why}",
                rm.wave + 1,
                rm.waves.len()
            );
            rm.state = RolloutState::Halted(why);
            return;
        }
        if done {
            if rm.wave + 1 < rm.waves.len() {
                rm.wave += 1;
                self.begin_wave(now);
                self.advance_rollout(now);
            } else {
                rm.state = RolloutState::Done;
                info!(
                    "Rolling activation complete: every AP runs {} ({} waves)",
                    rm.version,
                    rm.waves.len()
                );
            }
        }
    }
}
