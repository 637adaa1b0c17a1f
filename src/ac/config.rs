//! What the AC state machine is told at start.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::reliable::next_interval;
use crate::time::secs;

/// The AC's timers (RFC 5415 §4.7) and counters (§4.8).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcTimers {
    #[serde(with = "secs")]
    pub change_state_pending: Duration,
    #[serde(with = "secs")]
    pub data_check: Duration,
    /// Told to WTPs in the CAPWAP Timers element; a WTP in Run silent for this plus its
    /// retransmission schedule is dropped (see [`AcTimers::run_budget`]).
    #[serde(with = "secs")]
    pub echo_interval: Duration,
    /// Told to WTPs in the CAPWAP Timers element.
    #[serde(with = "secs")]
    pub discovery_interval: Duration,
    #[serde(with = "secs")]
    pub retransmit_interval: Duration,
    #[serde(with = "secs")]
    pub wait_join: Duration,
    pub max_retransmit: u32,
    /// The WTPs' ImageDataStartTimer (§4.7.9) as the AC assumes it (the RFC default, 30 s; a
    /// WTP does not tell it): a transfer queued by `max_transfers` starts over the limit
    /// before a WTP that counts it from its Image Data Request (wtpd does) gives up.
    #[serde(with = "secs")]
    pub image_data_start: Duration,
}

impl AcTimers {
    /// How long one unanswered request stays alive at its sender until its last
    /// retransmission has had time to arrive, when the sender's EchoInterval is `echo`:
    /// RetransmitInterval before the first retransmission, doubled before each of the
    /// MaxRetransmit retransmissions but to no more than half the EchoInterval (RFC 5415
    /// §4.5.3, [`next_interval`]), plus one RetransmitInterval for the last one's transit. With
    /// the RFC's 3 s, 5 and 30 s that is 3 + 3 + 6 + 12 + 15 + 15 = 54 s. The WTP runs the same
    /// schedule for its Echo Requests (the AC's timers are the RFC defaults a WTP uses unless
    /// configured alike).
    pub fn retransmit_span(&self, echo: Duration) -> Duration {
        let mut span = self.retransmit_interval;
        let mut interval = self.retransmit_interval;
        for _ in 0..self.max_retransmit.min(16) {
            span = span.saturating_add(interval);
            interval = next_interval(interval, self.retransmit_interval, echo);
        }
        span
    }

    /// How long a WTP in Run may stay silent on the control channel: its next Echo Request
    /// comes after EchoInterval, and if that Echo is lost the WTP retransmits it on the
    /// schedule of [`retransmit_span`](Self::retransmit_span) before it gives up (RFC 5415
    /// §4.7.7, §4.7.12, §4.8.7). A budget shorter than that drops a live WTP for one lost
    /// Echo: three EchoIntervals was 3 s at `echo_interval = 1`, the WTP's first retransmit
    /// interval.
    pub fn run_budget(&self) -> Duration {
        self.echo_interval
            .saturating_add(self.retransmit_span(self.echo_interval))
    }

    /// How long a WTP in Image Data may stay silent. It has not been told our EchoInterval yet
    /// (that comes with Configure), so it echoes at the RFC default of 30 s.
    pub fn image_data_budget(&self) -> Duration {
        let echo = self.echo_interval.max(Duration::from_secs(30));
        echo.saturating_add(self.retransmit_span(echo))
    }
}

impl Default for AcTimers {
    fn default() -> Self {
        AcTimers {
            change_state_pending: Duration::from_secs(25),
            data_check: Duration::from_secs(30),
            echo_interval: Duration::from_secs(30),
            discovery_interval: Duration::from_secs(5),
            retransmit_interval: Duration::from_secs(3),
            wait_join: Duration::from_secs(60),
            max_retransmit: 5,
            image_data_start: Duration::from_secs(30),
        }
    }
}

/// The AC's identity and policy.
#[derive(Debug, Clone, PartialEq)]
pub struct AcConfig {
    pub name: String,
    pub vendor_id: u32,
    /// The software version the AC reports (AC Descriptor).
    pub version: String,
    /// The image version the AC serves (Image Identifier); `None` serves none.
    pub image_version: Option<String>,
    /// Name the image in Join Responses, so that APs on another version download it at Join;
    /// when false, APs join as they are and get it by predownload.
    pub image_at_join: bool,
    /// WTPs joined at once; a Join beyond it is refused with Result Code 4, Join Failure
    /// (Resource Depletion) (RFC 5415 §4.6.35: the RFC's code for an AC that is full).
    pub max_wtps: u16,
    /// Image transfers under way at once; further WTPs wait with their Image Data Request
    /// unanswered (shown as Initiated) until one ends, or until they would give up
    /// (`ac::image`, `take_transfer_slot`).
    pub max_transfers: u32,
    /// PSK mode (for the AC Descriptor's security bits).
    pub psk: bool,
    /// The Result Code every Join Response carries: 0 accepts, anything else refuses.
    pub join_result: u32,
    /// Advertised in CAPWAP Control IPv4/IPv6 Address elements.
    pub control_address: Option<IpAddr>,
    pub timers: AcTimers,
    /// Bytes of image per Image Data block (RFC 5415 says up to 1024; some send 1377).
    pub block_size: usize,
    pub faults: super::Faults,
    /// Fleet upgrades: sites, primaries, out-of-band HTTPS (`ac::fleet`).
    pub fleet: super::FleetConfig,
}

impl Default for AcConfig {
    fn default() -> Self {
        AcConfig {
            name: "acsim".into(),
            vendor_id: crate::capwap::vendor::EXAMPLE_ENTERPRISE,
            version: "1.0.0".into(),
            image_version: None,
            image_at_join: true,
            max_wtps: 1000,
            max_transfers: 10,
            psk: false,
            join_result: 0,
            control_address: None,
            timers: AcTimers::default(),
            block_size: 1024,
            faults: super::Faults::default(),
            fleet: super::FleetConfig::default(),
        }
    }
}
