//! What the WTP state machine is told at start: who it is, what it runs, and its timers.
//!
//! Every timer and counter of RFC 5415 §4.7 and §4.8 that the WTP uses is here, with the RFC's
//! default; a configuration file may override each one.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::secs;

/// Timers (§4.7) and counters (§4.8) of the WTP, RFC defaults.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timers {
    #[serde(with = "secs")]
    pub data_channel_keep_alive: Duration,
    #[serde(with = "secs")]
    pub data_channel_dead_interval: Duration,
    #[serde(with = "secs")]
    pub discovery_interval: Duration,
    #[serde(with = "secs")]
    pub dtls_session_delete: Duration,
    #[serde(with = "secs")]
    pub echo_interval: Duration,
    #[serde(with = "secs")]
    pub image_data_start: Duration,
    #[serde(with = "secs")]
    pub max_discovery_interval: Duration,
    #[serde(with = "secs")]
    pub retransmit_interval: Duration,
    #[serde(with = "secs")]
    pub silent_interval: Duration,
    #[serde(with = "secs")]
    pub statistics_timer: Duration,
    #[serde(with = "secs")]
    pub wait_dtls: Duration,
    pub max_discoveries: u32,
    pub max_failed_dtls_session_retry: u32,
    pub max_retransmit: u32,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            data_channel_keep_alive: Duration::from_secs(30),
            data_channel_dead_interval: Duration::from_secs(60),
            discovery_interval: Duration::from_secs(5),
            dtls_session_delete: Duration::from_secs(5),
            echo_interval: Duration::from_secs(30),
            image_data_start: Duration::from_secs(30),
            max_discovery_interval: Duration::from_secs(20),
            retransmit_interval: Duration::from_secs(3),
            silent_interval: Duration::from_secs(30),
            statistics_timer: Duration::from_secs(120),
            wait_dtls: Duration::from_secs(60),
            max_discoveries: 10,
            max_failed_dtls_session_retry: 3,
            max_retransmit: 5,
        }
    }
}

/// One radio, as the WTP Radio Information element (RFC 5416 §6.25) describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Radio {
    pub id: u8,
    /// Bits: 1 = 802.11b, 2 = 802.11a, 4 = 802.11g, 8 = 802.11n (RFC 5416 §6.25).
    pub radio_type: u32,
}

pub use crate::capwap::vendor::EXAMPLE_ENTERPRISE;

/// Who the WTP is: what it tells the AC in Discovery and Join.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Identity {
    pub name: String,
    pub location: String,
    pub vendor_id: u32,
    pub model: String,
    pub serial: String,
    /// Base MAC address, `aa:bb:cc:dd:ee:ff`.
    pub base_mac: String,
    pub hardware_version: String,
    pub boot_version: String,
    /// The board's image type, the file name it asks the AC for (`ap1g8`).
    pub image_type: String,
    pub radios: Vec<Radio>,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            name: "wtp".into(),
            location: "default location".into(),
            vendor_id: EXAMPLE_ENTERPRISE,
            model: "wtpd".into(),
            serial: "0".into(),
            base_mac: "02:00:00:00:00:01".into(),
            hardware_version: "1.0".into(),
            boot_version: "1.0".into(),
            image_type: "sim".into(),
            radios: vec![Radio {
                id: 1,
                radio_type: 0x0d,
            }],
        }
    }
}

impl Identity {
    /// The base MAC as bytes; a malformed one reads as all zeros (the config loader checks it).
    pub fn mac_bytes(&self) -> [u8; 6] {
        parse_mac(&self.base_mac).unwrap_or([0; 6])
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut n = 0;
    for part in s.split([':', '-']) {
        if n == 6 || part.len() != 2 {
            return None;
        }
        out[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(out)
}

/// The software the WTP has: the running (primary) image and the other slot's (backup).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Versions {
    pub primary: String,
    pub backup: Option<String>,
}

/// Why a board neither downloads, installs nor switches now. The WTP then still joins and
/// serves the controller; it says why in the log, the status and its answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// The booted slot is on trial (`upgrade_available=1`): the other slot is the bootloader's
    /// fallback, the only good image. Released once the booted slot is marked good in Run
    /// ([`Wtp::release_hold`](super::Wtp::release_hold)), or by the bootloader's rollback.
    Trial(String),
    /// The board cannot install at all (its U-Boot environment is unreadable, ...).
    Refused(String),
}

impl Hold {
    pub fn reason(&self) -> &str {
        match self {
            Hold::Trial(r) | Hold::Refused(r) => r,
        }
    }
}

/// Everything the WTP state machine needs at start.
#[derive(Debug, Clone)]
pub struct WtpConfig {
    pub identity: Identity,
    pub versions: Versions,
    pub timers: Timers,
    pub download: DownloadPolicy,
    /// Restored from the state directory.
    pub retry: RetryState,
    /// The board can switch to its other slot (an A/B board).
    pub can_switch: bool,
    /// Why the board cannot install or switch now, if it cannot.
    pub hold: Option<Hold>,
    /// Seed for jitter and the Session ID.
    pub seed: u64,
    /// The board has an upgrade hook (`[hooks] upgrade`): emit [`Action::Hook`] at its
    /// moments, and let PRECHECK's verdict decide whether a download starts.
    ///
    /// [`Action::Hook`]: super::Action::Hook
    pub hooks: bool,
    /// What the WTP does in a fleet upgrade (`wtp::fleet`).
    pub fleet: super::fleet::FleetPolicy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("00:1a:2B:3c:4d:5e"),
            Some([0, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e])
        );
        assert_eq!(
            parse_mac("00-1a-2b-3c-4d-5e"),
            Some([0, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e])
        );
        assert_eq!(parse_mac("00:1a:2b:3c:4d"), None);
        assert_eq!(parse_mac("00:1a:2b:3c:4d:5e:6f"), None);
        assert_eq!(parse_mac("0:1a:2b:3c:4d:5e"), None);
        assert_eq!(parse_mac("zz:1a:2b:3c:4d:5e"), None);
    }

    #[test]
    fn timers_default_to_the_rfc_and_parse_from_seconds() {
        let t: Timers = toml::from_str("echo_interval = 1.5\nmax_retransmit = 2").unwrap();
        assert_eq!(t.echo_interval, Duration::from_millis(1500));
        assert_eq!(t.max_retransmit, 2);
        assert_eq!(t.retransmit_interval, Duration::from_secs(3));
        assert_eq!(t.wait_dtls, Duration::from_secs(60));
        assert!(
            toml::from_str::<Timers>("echo_intervall = 1").is_err(),
            "typos are refused"
        );
        assert!(toml::from_str::<Timers>("echo_interval = -1").is_err());
    }
}

/// How the WTP downloads images and retries failed downloads.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DownloadPolicy {
    /// Bytes PRECHECK requires when the controller has not said how large the image is (the
    /// seed's `upgrade.sh` "required 50000" KiB); the store adds its margin.
    pub required_bytes: u64,
    /// First retry delay after a failed download; it doubles up to `retry_max`, with jitter.
    #[serde(with = "secs")]
    pub retry_base: Duration,
    #[serde(with = "secs")]
    pub retry_max: Duration,
}

impl Default for DownloadPolicy {
    fn default() -> Self {
        DownloadPolicy {
            required_bytes: 50_000 * 1024,
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(900),
        }
    }
}

/// What survives a restart of the agent about failed downloads (the state directory keeps it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryState {
    pub retry_count: u32,
    pub last_error: Option<String>,
    /// Time left until the next attempt, when the agent starts.
    pub wait: Option<Duration>,
}
