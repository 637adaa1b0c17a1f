//! Finding and choosing a controller (RFC 5415 §3.3).
//!
//! The driver gathers the [`Target`]s (static list, DNS, the DHCP hook's file, broadcast); the
//! state machine sends a Discovery Request to each, collects the answers as [`Candidate`]s and
//! picks one with [`select`]: first the ACs the last controller named as preferred (AC Name with
//! Priority, lowest priority value first), then ACs that support the 802.11 binding, then by how
//! the AC was found (static before DHCP, DNS, referral, broadcast) and its place in that list,
//! then the lightest load.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// How a controller address was learned; the numbers are the Discovery Type values (§4.6.21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TargetKind {
    Static = 1,
    Dhcp = 2,
    Dns = 3,
    Referral = 4,
    /// Limited broadcast (Discovery Type "unknown").
    Broadcast = 0,
}

impl TargetKind {
    /// Preference rank: lower is better.
    fn rank(self) -> u8 {
        match self {
            TargetKind::Static => 0,
            TargetKind::Dhcp => 1,
            TargetKind::Dns => 2,
            TargetKind::Referral => 3,
            TargetKind::Broadcast => 4,
        }
    }
}

/// Where to send a Discovery Request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub kind: TargetKind,
}

/// A controller that answered a Discovery Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Where the Discovery Response came from; its port is the control port.
    pub from: SocketAddr,
    /// Where to open the DTLS session: the least loaded CAPWAP Control address, or `from`.
    pub control: SocketAddr,
    pub name: String,
    pub kind: TargetKind,
    /// Index of the target in the list it came from.
    pub order: usize,
    pub active_wtps: u16,
    pub max_wtps: u16,
    /// The AC listed an IEEE 802.11 WTP Radio Information element.
    pub supports_binding: bool,
}

impl Candidate {
    /// Load as a fraction (0 when the AC does not say).
    fn load(&self) -> f64 {
        if self.max_wtps == 0 {
            0.0
        } else {
            self.active_wtps as f64 / self.max_wtps as f64
        }
    }
}

/// Picks the best candidate; `preferred` is the AC Name with Priority list from the last AC.
pub fn select<'a>(cands: &'a [Candidate], preferred: &[(u8, String)]) -> Option<&'a Candidate> {
    let pref_rank = |c: &Candidate| -> u16 {
        preferred
            .iter()
            .filter(|(_, n)| *n == c.name)
            .map(|(p, _)| *p as u16)
            .min()
            .unwrap_or(u16::MAX)
    };
    cands.iter().min_by(|a, b| {
        pref_rank(a)
            .cmp(&pref_rank(b))
            .then(b.supports_binding.cmp(&a.supports_binding))
            .then(a.kind.rank().cmp(&b.kind.rank()))
            .then(a.order.cmp(&b.order))
            .then(a.load().total_cmp(&b.load()))
    })
}

/// Reads the file a board's DHCP hook writes with the controllers DHCP announced.
///
/// Each line is either an address (`192.0.2.5`, `192.0.2.5:5246`, `[2001:db8::1]:5246`) or the
/// raw value of DHCP option 43 in hex as BusyBox udhcpc exports it (`opt43=f108c0000205c0000206`
/// or `f1:08:c0:00:...`): sub-option 0xf1 holds a list of IPv4 controller addresses. `#` starts
/// a comment. Lines that are neither are skipped and returned in the error list.
pub fn parse_dhcp_controllers(text: &str, default_port: u16) -> (Vec<SocketAddr>, Vec<String>) {
    let mut addrs = Vec::new();
    let mut bad = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Ok(sa) = line.parse::<SocketAddr>() {
            addrs.push(sa);
            continue;
        }
        if let Ok(ip) = line.parse::<IpAddr>() {
            addrs.push(SocketAddr::new(ip, default_port));
            continue;
        }
        let hex = line.split_once('=').map(|(_, v)| v).unwrap_or(line).trim();
        match decode_option43(hex) {
            Some(list) if !list.is_empty() => addrs.extend(
                list.into_iter()
                    .map(|ip| SocketAddr::new(IpAddr::V4(ip), default_port)),
            ),
            _ => bad.push(line.to_string()),
        }
    }
    (addrs, bad)
}

/// Decodes option 43's TLVs, keeping the IPv4 lists of sub-option 0xf1.
fn decode_option43(hex: &str) -> Option<Vec<Ipv4Addr>> {
    let digits: Vec<u8> = hex.bytes().filter(|b| *b != b':' && *b != b' ').collect();
    if digits.is_empty() || digits.len() % 2 != 0 {
        return None;
    }
    let mut bytes = Vec::with_capacity(digits.len() / 2);
    for pair in digits.chunks(2) {
        let s = std::str::from_utf8(pair).ok()?;
        bytes.push(u8::from_str_radix(s, 16).ok()?);
    }
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while let [typ, len, tail @ ..] = rest {
        let len = *len as usize;
        if tail.len() < len {
            return None;
        }
        let (value, next) = tail.split_at(len);
        if *typ == 0xf1 {
            if len % 4 != 0 {
                return None;
            }
            out.extend(
                value
                    .chunks(4)
                    .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3])),
            );
        }
        rest = next;
    }
    if !rest.is_empty() {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(
        name: &str,
        kind: TargetKind,
        order: usize,
        active: u16,
        max: u16,
        binding: bool,
    ) -> Candidate {
        let a: SocketAddr = format!("192.0.2.{}:5246", order + 1).parse().unwrap();
        Candidate {
            from: a,
            control: a,
            name: name.into(),
            kind,
            order,
            active_wtps: active,
            max_wtps: max,
            supports_binding: binding,
        }
    }

    #[test]
    fn selection_order() {
        let c = vec![
            cand("busy-static", TargetKind::Static, 1, 90, 100, true),
            cand("first-static", TargetKind::Static, 0, 99, 100, true),
            cand("dhcp", TargetKind::Dhcp, 0, 0, 100, true),
            cand("no-binding", TargetKind::Static, 0, 0, 100, false),
        ];
        assert_eq!(select(&c, &[]).unwrap().name, "first-static");
        let pref = vec![(2, "busy-static".to_string()), (1, "dhcp".to_string())];
        assert_eq!(select(&c, &pref).unwrap().name, "dhcp");
        assert!(select(&[], &pref).is_none());
        let tie = vec![
            cand("heavy", TargetKind::Broadcast, 0, 50, 100, true),
            cand("light", TargetKind::Broadcast, 0, 10, 100, true),
        ];
        assert_eq!(select(&tie, &[]).unwrap().name, "light");
    }

    #[test]
    fn dhcp_file_forms() {
        let text = "# from udhcpc\n192.0.2.7\n198.51.100.1:15246\nopt43=f108c0000205c0000206\nf1:04:0a:00:00:01\nnonsense\nopt43=f105c000020506\n";
        let (addrs, bad) = parse_dhcp_controllers(text, 5246);
        let want: Vec<SocketAddr> = [
            "192.0.2.7:5246",
            "198.51.100.1:15246",
            "192.0.2.5:5246",
            "192.0.2.6:5246",
            "10.0.0.1:5246",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(addrs, want);
        assert_eq!(
            bad,
            vec!["nonsense".to_string(), "opt43=f105c000020506".to_string()]
        );
    }
}
