//! The elements that describe an AC, in its Discovery and Join Responses (RFC 5415 §5.2,
//! §6.2) and Configuration Update Requests (§8.4).

use super::codec::string;
use super::codec::DescriptorInfo;
use super::codec::{addr_list, descriptor_infos, exact, ipv4, ipv6, put_infos, put_u16, put_u32};
use super::{limits, Element};
use crate::capwap::{ParseError, Reader};

/// AC Descriptor Security bits (§4.6.1: `Reserved |S|X|R`).
pub mod ac_security {
    /// S: the AC supports pre-shared secret authentication.
    pub const PRE_SHARED: u8 = 0x04;
    /// X: the AC supports X.509 certificate authentication.
    pub const X509: u8 = 0x02;
}

/// AC Descriptor (§4.6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcDescriptor<'a> {
    pub stations: u16,
    pub station_limit: u16,
    pub active_wtps: u16,
    pub max_wtps: u16,
    /// Security bits (§4.6.1 `Reserved|S|X|R`): 0x04 S = pre-shared secret, 0x02 X = X.509;
    /// see [`ac_security`].
    pub security: u8,
    pub r_mac: u8,
    pub dtls_policy: u8,
    /// AC Information sub-elements (type 4 hardware version, 5 software version).
    pub info: Vec<DescriptorInfo<'a>>,
}

elements! {
    "§4.6.1" AC_DESCRIPTOR = 1, "AC Descriptor",
    AcDescriptor(d),
    parse(v, what) {
        let mut r = Reader::new(v, what);
        let stations = r.u16()?;
        let station_limit = r.u16()?;
        let active_wtps = r.u16()?;
        let max_wtps = r.u16()?;
        let security = r.u8()?;
        let r_mac = r.u8()?;
        let _reserved = r.u8()?;
        let dtls_policy = r.u8()?;
        let info = descriptor_infos(&mut r, what)?;
        Element::AcDescriptor(AcDescriptor {
            stations,
            station_limit,
            active_wtps,
            max_wtps,
            security,
            r_mac,
            dtls_policy,
            info,
        })
    }
    emit(o) {
        for v in [d.stations, d.station_limit, d.active_wtps, d.max_wtps] {
            put_u16(o, v);
        }
        o.extend_from_slice(&[d.security, d.r_mac, 0, d.dtls_policy]);
        put_infos(o, &d.info);
    }

    "§4.6.2" AC_IPV4_LIST = 2, "AC IPv4 List",
    AcIpv4List(list),
    parse(v, what) { Element::AcIpv4List(addr_list(v, what, 4, ipv4)?) }
    emit(o) {
        list.iter().for_each(|a| o.extend_from_slice(&a.octets()))
    }

    "§4.6.3" AC_IPV6_LIST = 3, "AC IPv6 List",
    AcIpv6List(list),
    parse(v, what) { Element::AcIpv6List(addr_list(v, what, 16, ipv6)?) }
    emit(o) {
        list.iter().for_each(|a| o.extend_from_slice(&a.octets()))
    }

    "§4.6.4" AC_NAME = 4, "AC Name",
    AcName(s),
    parse(v, what) { Element::AcName(string(v, what, 1, limits::NAME)?) }
    emit(o) { o.extend_from_slice(s.as_bytes()) }

    "§4.6.5" AC_NAME_WITH_PRIORITY = 5, "AC Name with Priority",
    AcNameWithPriority { priority, name },
    parse(v, what) {
        let mut r = Reader::new(v, what);
        let priority = r.u8()?;
        if priority == 0 {
            return Err(ParseError::BadValue { what, value: 0 });
        }
        Element::AcNameWithPriority {
            priority,
            name: string(r.rest(), what, 1, limits::NAME)?,
        }
    }
    emit(o) {
        o.push(*priority);
        o.extend_from_slice(name.as_bytes());
    }

    "§4.6.6" AC_TIMESTAMP = 6, "AC Timestamp",
    AcTimestamp(t),
    parse(v, what) { Element::AcTimestamp(exact(v, 4, what)?.u32()?) }
    emit(o) { put_u32(o, *t) }

    "§4.6.9" CAPWAP_CONTROL_IPV4 = 10, "CAPWAP Control IPv4 Address",
    ControlIpv4 { addr, wtp_count },
    parse(v, what) {
        let mut r = exact(v, 6, what)?;
        Element::ControlIpv4 { addr: ipv4(&mut r)?, wtp_count: r.u16()? }
    }
    emit(o) {
        o.extend_from_slice(&addr.octets());
        put_u16(o, *wtp_count);
    }

    "§4.6.10" CAPWAP_CONTROL_IPV6 = 11, "CAPWAP Control IPv6 Address",
    ControlIpv6 { addr, wtp_count },
    parse(v, what) {
        let mut r = exact(v, 18, what)?;
        Element::ControlIpv6 { addr: ipv6(&mut r)?, wtp_count: r.u16()? }
    }
    emit(o) {
        o.extend_from_slice(&addr.octets());
        put_u16(o, *wtp_count);
    }
}
