//! The controller's side of a fleet upgrade (docs/fleet.md): sites, one primary AP per site
//! and hardware type, the direction each AP gets in its Image Data Response, and the order of
//! a fleet predownload (primaries first; subordinates once their primary has the image staged
//! and serves it).
//!
//! Election: the operator's choice for the site and type if that AP is joined and can serve,
//! else, among the joined APs of that site and type that can serve, one that already has the
//! image staged, else the lowest base MAC. The choice sticks while that AP stays joined: a
//! primary that leaves is replaced at the next question, and its subordinates, whose TFTP
//! attempts at it fail, ask again and are sent to the new one.

use std::net::SocketAddr;

use log::info;

use super::{display_name, Ac, SessionState, WtpSession};
use crate::capwap::fleet::{
    Direction, Method, Offer, Report, ReportState, Role, CAP_HTTPS_FETCH, CAP_TFTP_FETCH,
    CAP_TFTP_SERVE,
};
use crate::time::Instant;

/// The site of APs no site lists.
pub const DEFAULT_SITE: &str = "default";

/// What the controller does for fleets (acsim.toml `[fleet]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FleetConfig {
    /// Efficient upgrade: one primary per site and hardware type downloads from the
    /// controller, the others from it.
    pub efficient: bool,
    /// Out-of-band HTTPS: the image URL is this base + "/" + the image name; the pin is the
    /// SHA-256 of the server's certificate (DER).
    pub https: Option<HttpsSource>,
    pub sites: Vec<Site>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsSource {
    pub base: String,
    pub pin: Option<[u8; 32]>,
}

/// A site: its APs (by name or base MAC), and the operator's primaries (image type, AP).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Site {
    pub name: String,
    pub members: Vec<String>,
    pub primaries: Vec<(String, String)>,
    /// The HTTPS base URL for this site's APs (a site proxy), instead of the global one.
    pub https_url: Option<String>,
}

impl FleetConfig {
    /// The controller sends fleet directions at all.
    pub fn active(&self) -> bool {
        self.efficient || self.https.is_some()
    }
}

/// One session's part in a fleet upgrade.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetSession {
    /// What the WTP said it can do (Join Request, updated by each Image Data Request).
    pub offer: Option<Offer>,
    /// From WTP Board Data (RFC 5415 §4.6.40, type 4).
    pub base_mac: Option<[u8; 6]>,
    pub role: Role,
    pub method: Method,
    /// Out-of-band attempts that failed, as the WTP counts them.
    pub retry: u16,
    /// The WTP reported the image staged (and, as a primary, served).
    pub ready: bool,
    /// A fleet predownload waits to be sent to it.
    pub want: bool,
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Ac {
    /// The site of a WTP: the first site that lists its name or base MAC.
    pub fn site_of(&self, s: &WtpSession) -> String {
        let mac = s.fleet.base_mac.as_ref().map(mac_text);
        self.cfg
            .fleet
            .sites
            .iter()
            .find(|site| {
                site.members.iter().any(|m| {
                    *m == s.info.name || mac.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(m))
                })
            })
            .map(|site| site.name.clone())
            .unwrap_or_else(|| DEFAULT_SITE.to_string())
    }

    fn image_type_of(s: &WtpSession) -> Option<&str> {
        s.fleet.offer.as_ref()?.image_type.as_deref()
    }

    fn can_serve(s: &WtpSession) -> bool {
        s.fleet
            .offer
            .as_ref()
            .is_some_and(|o| o.can(CAP_TFTP_SERVE) && o.server.is_some())
            && matches!(
                s.state,
                SessionState::Run | SessionState::ImageData | SessionState::Configure
            )
    }

    /// The primary for `site` and `image_type`, elected if there is none.
    pub fn primary_of(&mut self, site: &str, image_type: &str) -> Option<SocketAddr> {
        let key = (site.to_string(), image_type.to_string());
        if let Some(name) = self.primaries.get(&key) {
            if let Some(s) = self.sessions.values().find(|s| &s.info.name == name) {
                if Self::can_serve(s) {
                    return Some(s.peer);
                }
            }
        }
        let old = self.primaries.remove(&key);
        let candidates: Vec<&WtpSession> = self
            .sessions
            .values()
            .filter(|s| {
                Self::can_serve(s)
                    && Self::image_type_of(s) == Some(image_type)
                    && self.site_of(s) == site
            })
            .collect();
        let chosen = self
            .cfg
            .fleet
            .sites
            .iter()
            .find(|x| x.name == site)
            .and_then(|x| x.primaries.iter().find(|(t, _)| t == image_type))
            .and_then(|(_, who)| {
                candidates.iter().find(|s| {
                    s.info.name == *who
                        || s.fleet
                            .base_mac
                            .as_ref()
                            .is_some_and(|m| mac_text(m).eq_ignore_ascii_case(who))
                })
            })
            .or_else(|| {
                candidates.iter().min_by_key(|s| {
                    (
                        !s.fleet.ready,
                        s.fleet.base_mac.unwrap_or([0xff; 6]),
                        s.info.name.clone(),
                    )
                })
            })
            .map(|s| (s.peer, s.info.name.clone()))?;
        info!(
            "Efficient upgrade: {} is the primary for {image_type} at site {site}{}",
            chosen.1,
            old.map(|o| format!(" (was {o}, gone)")).unwrap_or_default()
        );
        self.primaries.insert(key, chosen.1);
        Some(chosen.0)
    }

    /// The direction for a WTP's Image Data Request, `None` for plain CAPWAP with no fleet
    /// element (a WTP that made no offer, a download at Join, fleets off).
    pub(super) fn direction_for(
        &mut self,
        peer: SocketAddr,
        image: &str,
        predownload: bool,
    ) -> Option<Direction> {
        let fleet = self.cfg.fleet.clone();
        if !fleet.active() || !predownload {
            return None;
        }
        let s = self.sessions.get(&peer)?;
        let offer = s.fleet.offer.clone()?;
        let site = self.site_of(s);
        let base = fleet
            .sites
            .iter()
            .find(|x| x.name == site)
            .and_then(|x| x.https_url.clone());
        let https = fleet
            .https
            .as_ref()
            .filter(|_| offer.can(CAP_HTTPS_FETCH) && !offer.fallback)
            .map(|h| Direction {
                method: Method::Https,
                url: Some(format!(
                    "{}/{image}",
                    base.as_deref().unwrap_or(&h.base).trim_end_matches('/')
                )),
                pin: h.pin,
                ..Direction::default()
            });
        if !fleet.efficient {
            return https;
        }
        let primary = self.primary_of(&site, image);
        if primary == Some(peer) {
            return Some(Direction {
                role: Role::Primary,
                ..https.unwrap_or_default()
            });
        }
        let p = primary.and_then(|p| self.sessions.get(&p))?;
        if offer.fallback || !offer.can(CAP_TFTP_FETCH) {
            return None;
        }
        Some(Direction {
            role: Role::Subordinate,
            method: Method::Tftp,
            server: p.fleet.offer.as_ref().and_then(|o| o.server),
            file: Some(image.to_string()),
            ..Direction::default()
        })
    }

    /// A WTP's report on a download the AC does not carry (or on the staging of one it did).
    pub(super) fn on_fleet_report(&mut self, peer: SocketAddr, r: Report, now: Instant) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        let name = display_name(s);
        s.fleet.retry = r.retry;
        let Some(d) = s.download.as_mut() else {
            if r.state == ReportState::Done {
                s.fleet.ready = true;
            }
            return;
        };
        match r.state {
            ReportState::Fetching => {
                d.sent = r.bytes;
                if let Some(t) = r.total {
                    d.size = t;
                }
                if !d.halted {
                    d.status = "Predownloading".into();
                }
            }
            ReportState::Done => {
                s.fleet.ready = true;
                if d.status != "Complete" {
                    d.sent = r.bytes;
                    d.size = r.total.unwrap_or(r.bytes);
                    d.halted = true;
                    d.finished = Some(now);
                    d.status = "Complete".into();
                    info!(
                        "AP Event: {name} AP Image Download Success ({} bytes by {})",
                        r.bytes,
                        r.method.column()
                    );
                    if d.predownload {
                        d.replaced_backup = Some(std::mem::replace(
                            &mut s.info.backup_version,
                            d.version.clone(),
                        ));
                    }
                }
                if s.fleet.role == Role::Primary {
                    info!("Efficient upgrade: primary {name} serves its image to its subordinates");
                    // Its subordinates' predownloads go now, not at the next tick.
                    self.advance_fleet(now);
                }
            }
            // The reason comes in the Download Failure element beside it.
            ReportState::Failed => {}
        }
    }

    /// Predownloads the image to every AP in Run that does not have it, in the fleet's order:
    /// without efficient upgrade all at once; with it, each site's primaries first and the
    /// others once their primary serves. Returns one line per AP.
    pub fn predownload_fleet(&mut self, now: Instant) -> Vec<String> {
        let Some(version) = self.cfg.image_version.clone() else {
            return vec!["no image is configured".into()];
        };
        let mut lines = Vec::new();
        for s in self.sessions.values_mut() {
            if s.state != SessionState::Run {
                continue;
            }
            if s.info.primary_version == version || s.info.backup_version == version {
                lines.push(format!("{}: has {version} already", display_name(s)));
                continue;
            }
            s.fleet.want = true;
            s.fleet.ready = false;
            lines.push(format!("{}: predownload queued", display_name(s)));
        }
        self.advance_fleet(now);
        lines
    }

    /// Sends the fleet predownloads whose turn has come.
    pub(super) fn advance_fleet(&mut self, now: Instant) {
        let wanting: Vec<SocketAddr> = self
            .sessions
            .values()
            .filter(|s| s.fleet.want && s.state == SessionState::Run)
            .map(|s| s.peer)
            .collect();
        for peer in wanting {
            let Some(s) = self.sessions.get(&peer) else {
                continue;
            };
            let go = if !self.cfg.fleet.efficient {
                true
            } else {
                match Self::image_type_of(s).map(str::to_string) {
                    // An AP that made no offer downloads from the controller.
                    None => true,
                    Some(t) => {
                        let site = self.site_of(s);
                        match self.primary_of(&site, &t) {
                            None => true,
                            Some(p) if p == peer => true,
                            Some(p) => self.sessions.get(&p).is_some_and(|p| p.fleet.ready),
                        }
                    }
                }
            };
            if go && self.predownload(peer, now) {
                if let Some(s) = self.sessions.get_mut(&peer) {
                    s.fleet.want = false;
                }
            }
        }
    }

    /// Some fleet predownload still waits (the AC looks again each second).
    pub(super) fn fleet_waiting(&self) -> bool {
        self.sessions.values().any(|s| s.fleet.want)
    }
}
