//! The elements that describe a WTP, in its Discovery and Join Requests (RFC 5415 §5.1,
//! §6.1) and in Configuration Status and Update (§8.2, §8.4).

use super::codec::DescriptorInfo;
use super::codec::{descriptor_infos, exact, put_infos, put_u16, put_u32, string};
use super::{limits, Element};
use crate::capwap::{ParseError, Reader};

/// WTP Frame Tunnel Mode bits (§4.6.43: `Reservd|N|E|L|U`).
pub mod tunnel_mode {
    /// N: native frames of the binding.
    pub const NATIVE: u8 = 0x08;
    /// E: IEEE 802.3 frames.
    pub const IEEE_802_3: u8 = 0x04;
    /// L: local bridging.
    pub const LOCAL_BRIDGING: u8 = 0x02;
}

/// WTP MAC Type values (§4.6.44).
pub mod mac_type {
    pub const LOCAL: u8 = 0;
    pub const SPLIT: u8 = 1;
    pub const BOTH: u8 = 2;
}

/// WTP Descriptor (§4.6.41).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WtpDescriptor<'a> {
    pub max_radios: u8,
    pub radios_in_use: u8,
    /// Encryption sub-elements: (WBID, capabilities).
    pub encryption: Vec<(u8, u16)>,
    /// Descriptor sub-elements (0 hardware, 1 active software, 2 boot, 3 other software version).
    pub info: Vec<DescriptorInfo<'a>>,
}

/// WTP Board Data sub-element (§4.6.40): 0 model, 1 serial, 2 board id, 3 revision, 4 base MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardDataItem<'a> {
    pub typ: u16,
    pub data: &'a [u8],
}

elements! {
    "§4.6.21" DISCOVERY_TYPE = 20, "Discovery Type",
    DiscoveryType(t),
    parse(v, what) { Element::DiscoveryType(exact(v, 1, what)?.u8()?) }
    emit(o) { o.push(*t) }

    "§4.6.30" LOCATION_DATA = 28, "Location Data",
    LocationData(s),
    parse(v, what) { Element::LocationData(string(v, what, 1, limits::LOCATION)?) }
    emit(o) { o.extend_from_slice(s.as_bytes()) }

    "§4.6.40" WTP_BOARD_DATA = 38, "WTP Board Data",
    WtpBoardData { vendor, items },
    parse(v, what) {
        let mut r = Reader::new(v, what);
        let vendor = r.u32()?;
        if vendor == 0 {
            return Err(ParseError::BadValue { what: "WTP Board Data vendor", value: 0 });
        }
        let mut items = Vec::with_capacity(r.remaining() / 4);
        while !r.is_empty() {
            let typ = r.u16()?;
            let len = r.u16()? as usize;
            if len > limits::SUB_ELEMENT {
                return Err(ParseError::BadLength { what, value: len });
            }
            items.push(BoardDataItem { typ, data: r.take(len)? });
        }
        Element::WtpBoardData { vendor, items }
    }
    emit(o) {
        put_u32(o, *vendor);
        for i in items {
            let data = &i.data[..i.data.len().min(0xffff)];
            put_u16(o, i.typ);
            put_u16(o, data.len() as u16);
            o.extend_from_slice(data);
        }
    }

    "§4.6.41" WTP_DESCRIPTOR = 39, "WTP Descriptor",
    WtpDescriptor(d),
    parse(v, what) {
        let mut r = Reader::new(v, what);
        let max_radios = r.u8()?;
        let radios_in_use = r.u8()?;
        let n = r.u8()?;
        if n == 0 {
            return Err(ParseError::BadValue { what: "WTP Descriptor Num Encrypt", value: 0 });
        }
        let mut encryption = Vec::with_capacity((n as usize).min(r.remaining() / 3));
        for _ in 0..n {
            let wbid = r.u8()? & 0x1f;
            encryption.push((wbid, r.u16()?));
        }
        let info = descriptor_infos(&mut r, what)?;
        Element::WtpDescriptor(WtpDescriptor { max_radios, radios_in_use, encryption, info })
    }
    emit(o) {
        let enc = &d.encryption[..d.encryption.len().min(255)];
        o.extend_from_slice(&[d.max_radios, d.radios_in_use, enc.len() as u8]);
        for (wbid, caps) in enc {
            o.push(wbid & 0x1f);
            put_u16(o, *caps);
        }
        put_infos(o, &d.info);
    }

    "§4.6.42" WTP_FALLBACK = 40, "WTP Fallback",
    WtpFallback(mode),
    parse(v, what) { Element::WtpFallback(exact(v, 1, what)?.u8()?) }
    emit(o) { o.push(*mode) }

    "§4.6.43" WTP_FRAME_TUNNEL_MODE = 41, "WTP Frame Tunnel Mode",
    WtpFrameTunnelMode(bits),
    parse(v, what) { Element::WtpFrameTunnelMode(exact(v, 1, what)?.u8()?) }
    emit(o) { o.push(*bits) }

    "§4.6.44" WTP_MAC_TYPE = 44, "WTP MAC Type",
    WtpMacType(t),
    parse(v, what) { Element::WtpMacType(exact(v, 1, what)?.u8()?) }
    emit(o) { o.push(*t) }

    "§4.6.45" WTP_NAME = 45, "WTP Name",
    WtpName(s),
    parse(v, what) { Element::WtpName(string(v, what, 1, limits::NAME)?) }
    emit(o) { o.extend_from_slice(s.as_bytes()) }
}
