//! The IEEE 802.11 binding's elements (RFC 5416 §6) that a Join needs.

use super::codec::{exact, put_u32};
use super::Element;
use crate::capwap::ParseError;

/// IEEE 802.11 WTP Radio Information Radio Type bits (RFC 5416 §6.25: `Reservd|N|G|A|B`).
pub mod radio_type {
    pub const N: u32 = 0x08;
    pub const G: u32 = 0x04;
    pub const A: u32 = 0x02;
    pub const B: u32 = 0x01;
}

elements! {
    "RFC 5416 §6.25" IEEE80211_WTP_RADIO_INFORMATION = 1048, "IEEE 802.11 WTP Radio Information",
    WtpRadioInformation { radio_id, radio_type },
    parse(v, what) {
        let mut r = exact(v, 5, what)?;
        Element::WtpRadioInformation { radio_id: r.u8()?, radio_type: r.u32()? }
    }
    emit(o) {
        o.push(*radio_id);
        put_u32(o, *radio_type);
    }
}
