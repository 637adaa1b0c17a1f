//! The elements a WTP reports in a WTP Event Request (RFC 5415 §9.4): decryption errors,
//! duplicate addresses and its radio and reboot statistics (the latter also in Join, §6.1).

use super::codec::{addr_status_mac, exact, ipv4, ipv6, mac_list, put_addr_status_mac};
use super::codec::{put_macs, put_u16};
use super::Element;
use crate::capwap::{ParseError, Reader};

elements! {
    "§4.6.17" DECRYPTION_ERROR_REPORT = 15, "Decryption Error Report",
    DecryptionErrorReport { radio_id, macs },
    parse(v, what) {
        let mut r = Reader::new(v, what);
        let radio_id = r.u8()?;
        let n = r.u8()?;
        Element::DecryptionErrorReport { radio_id, macs: mac_list(&mut r, n, what)? }
    }
    emit(o) {
        o.push(*radio_id);
        put_macs(o, macs);
    }

    "§4.6.22" DUPLICATE_IPV4_ADDRESS = 21, "Duplicate IPv4 Address",
    DuplicateIpv4 { addr, status, mac },
    parse(v, what) {
        let (addr, status, mac) = addr_status_mac(v, what, ipv4)?;
        Element::DuplicateIpv4 { addr, status, mac }
    }
    emit(o) { put_addr_status_mac(o, &addr.octets(), *status, mac) }

    "§4.6.23" DUPLICATE_IPV6_ADDRESS = 22, "Duplicate IPv6 Address",
    DuplicateIpv6 { addr, status, mac },
    parse(v, what) {
        let (addr, status, mac) = addr_status_mac(v, what, ipv6)?;
        Element::DuplicateIpv6 { addr, status, mac }
    }
    emit(o) { put_addr_status_mac(o, &addr.octets(), *status, mac) }

    "§4.6.46" WTP_RADIO_STATISTICS = 47, "WTP Radio Statistics",
    WtpRadioStatistics {
        radio_id,
        last_failure_type,
        reset_count,
        sw_failure,
        hw_failure,
        other_failure,
        unknown_failure,
        config_update,
        channel_change,
        band_change,
        noise_floor,
    },
    parse(v, what) {
        let mut r = exact(v, 20, what)?;
        Element::WtpRadioStatistics {
            radio_id: r.u8()?,
            last_failure_type: r.u8()?,
            reset_count: r.u16()?,
            sw_failure: r.u16()?,
            hw_failure: r.u16()?,
            other_failure: r.u16()?,
            unknown_failure: r.u16()?,
            config_update: r.u16()?,
            channel_change: r.u16()?,
            band_change: r.u16()?,
            noise_floor: r.u16()? as i16,
        }
    }
    emit(o) {
        o.extend_from_slice(&[*radio_id, *last_failure_type]);
        for v in [
            *reset_count,
            *sw_failure,
            *hw_failure,
            *other_failure,
            *unknown_failure,
            *config_update,
            *channel_change,
            *band_change,
            *noise_floor as u16,
        ] {
            put_u16(o, v);
        }
    }

    "§4.6.47" WTP_REBOOT_STATISTICS = 48, "WTP Reboot Statistics",
    WtpRebootStatistics {
        reboot_count,
        ac_initiated,
        link_failure,
        sw_failure,
        hw_failure,
        other_failure,
        unknown_failure,
        last_failure_type,
    },
    parse(v, what) {
        let mut r = exact(v, 15, what)?;
        Element::WtpRebootStatistics {
            reboot_count: r.u16()?,
            ac_initiated: r.u16()?,
            link_failure: r.u16()?,
            sw_failure: r.u16()?,
            hw_failure: r.u16()?,
            other_failure: r.u16()?,
            unknown_failure: r.u16()?,
            last_failure_type: r.u8()?,
        }
    }
    emit(o) {
        for v in [
            *reboot_count,
            *ac_initiated,
            *link_failure,
            *sw_failure,
            *hw_failure,
            *other_failure,
            *unknown_failure,
        ] {
            put_u16(o, v);
        }
        o.push(*last_failure_type);
    }
}
