//! The elements of the WTP's configuration: timers, radio states and static addressing, in
//! Configuration Status and Update and Change State Event (RFC 5415 §8.2-§8.7).

use super::codec::{exact, ipv4, put_u16, put_u32};
use super::Element;
use crate::capwap::ParseError;

elements! {
    "§4.6.13" CAPWAP_TIMERS = 12, "CAPWAP Timers",
    CapwapTimers { discovery, echo_request },
    parse(v, what) {
        let mut r = exact(v, 2, what)?;
        Element::CapwapTimers { discovery: r.u8()?, echo_request: r.u8()? }
    }
    emit(o) { o.extend_from_slice(&[*discovery, *echo_request]) }

    "§4.6.18" DECRYPTION_ERROR_REPORT_PERIOD = 16, "Decryption Error Report Period",
    DecryptionErrorReportPeriod { radio_id, interval },
    parse(v, what) {
        let mut r = exact(v, 3, what)?;
        Element::DecryptionErrorReportPeriod { radio_id: r.u8()?, interval: r.u16()? }
    }
    emit(o) {
        o.push(*radio_id);
        put_u16(o, *interval);
    }

    "§4.6.24" IDLE_TIMEOUT = 23, "Idle Timeout",
    IdleTimeout(t),
    parse(v, what) { Element::IdleTimeout(exact(v, 4, what)?.u32()?) }
    emit(o) { put_u32(o, *t) }

    "§4.6.33" RADIO_ADMINISTRATIVE_STATE = 31, "Radio Administrative State",
    RadioAdministrativeState { radio_id, state },
    parse(v, what) {
        let mut r = exact(v, 2, what)?;
        Element::RadioAdministrativeState { radio_id: r.u8()?, state: r.u8()? }
    }
    emit(o) { o.extend_from_slice(&[*radio_id, *state]) }

    "§4.6.34" RADIO_OPERATIONAL_STATE = 32, "Radio Operational State",
    RadioOperationalState { radio_id, state, cause },
    parse(v, what) {
        let mut r = exact(v, 3, what)?;
        Element::RadioOperationalState { radio_id: r.u8()?, state: r.u8()?, cause: r.u8()? }
    }
    emit(o) { o.extend_from_slice(&[*radio_id, *state, *cause]) }

    "§4.6.38" STATISTICS_TIMER = 36, "Statistics Timer",
    StatisticsTimer(t),
    parse(v, what) { Element::StatisticsTimer(exact(v, 2, what)?.u16()?) }
    emit(o) { put_u16(o, *t) }

    "§4.6.48" WTP_STATIC_IP_ADDRESS_INFORMATION = 49, "WTP Static IP Address Information",
    WtpStaticIpInfo { addr, netmask, gateway, static_ip },
    parse(v, what) {
        let mut r = exact(v, 13, what)?;
        Element::WtpStaticIpInfo {
            addr: ipv4(&mut r)?,
            netmask: ipv4(&mut r)?,
            gateway: ipv4(&mut r)?,
            static_ip: r.u8()?,
        }
    }
    emit(o) {
        for a in [addr, netmask, gateway] {
            o.extend_from_slice(&a.octets());
        }
        o.push(*static_ip);
    }
}
