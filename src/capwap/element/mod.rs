//! Message elements (RFC 5415 §4.6, RFC 5416 §6 for the 802.11 ones a Join needs).
//!
//! [`ElementIter`] walks the TLVs of a message; [`Element::parse`] types one of them. An element
//! type this crate does not know is kept as [`Element::Unknown`], a vendor one as
//! [`Element::VendorSpecific`]; neither stops the walk.
//!
//! Each element is declared once, with its number, name, RFC section, parse and emit, in the
//! file of its group (`elements!`, see `table.rs`); its variant of [`Element`] is below. To add
//! an element: its variant here, its entry in its group's file, a sample in
//! `capwap::testutil::sample_elements`.

#[macro_use]
mod table;

mod ac;
mod codec;
mod common;
mod config;
mod event;
mod ieee80211;
mod image;
mod station;
mod transport;
mod wtp;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{ParseError, Reader};

pub use ac::{ac_security, AcDescriptor};
pub use codec::DescriptorInfo;
pub use ieee80211::radio_type;
pub use image::image_data_type;
pub use wtp::{mac_type, tunnel_mode, BoardDataItem, WtpDescriptor};

/// Element type numbers, from the declarations of every group.
pub mod typ {
    pub use super::ac::typ::*;
    pub use super::common::typ::*;
    pub use super::config::typ::*;
    pub use super::event::typ::*;
    pub use super::ieee80211::typ::*;
    pub use super::image::typ::*;
    pub use super::station::typ::*;
    pub use super::transport::typ::*;
    pub use super::wtp::typ::*;
}

/// Limits RFC 5415 states for variable-length fields.
pub mod limits {
    /// AC Name, AC Name with Priority, WTP Name, VLAN name (§4.6.4, §4.6.5, §4.6.8, §4.6.45).
    pub const NAME: usize = 512;
    /// Location Data (§4.6.30), Image Identifier name (§4.6.27).
    pub const LOCATION: usize = 1024;
    pub const IMAGE_IDENTIFIER: usize = 1024;
    /// AC Information, WTP Descriptor and Board Data sub-element data (§4.6.1, 4.6.40, 4.6.41).
    pub const SUB_ELEMENT: usize = 1024;
    /// Addresses in an AC IPv4/IPv6 List (§4.6.2, §4.6.3).
    pub const AC_LIST: usize = 1024;
    /// Vendor Specific Payload data (§4.6.39).
    pub const VENDOR_DATA: usize = 2048;
}

/// An element type as the RFC lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub typ: u16,
    /// The RFC's name, also the `what` of its parse errors.
    pub name: &'static str,
    /// Where the RFC defines it: a section of RFC 5415 unless it names another RFC.
    pub section: &'static str,
}

/// What `elements!` writes for one file: its table, and its lookups by number (parse) and by
/// variant (emit, type).
pub(crate) struct Group {
    specs: &'static [Spec],
    parse: for<'a> fn(u16, &'a [u8]) -> Result<Option<Element<'a>>, ParseError>,
    emit: fn(&Element<'_>, &mut Vec<u8>) -> bool,
    type_id: fn(&Element<'_>) -> Option<u16>,
}

/// Every file's elements.
const GROUPS: [Group; 9] = [
    ac::GROUP,
    wtp::GROUP,
    transport::GROUP,
    config::GROUP,
    common::GROUP,
    event::GROUP,
    image::GROUP,
    station::GROUP,
    ieee80211::GROUP,
];

/// The RFC's number, name and section of an element type; `None` for one this crate does not
/// know.
pub fn spec(typ: u16) -> Option<&'static Spec> {
    GROUPS.iter().flat_map(|g| g.specs).find(|s| s.typ == typ)
}

/// One TLV as it stands in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawElement<'a> {
    pub typ: u16,
    pub value: &'a [u8],
}

/// Walks the TLVs of a message. Yields `Err` once for a TLV that runs past the end, then stops.
#[derive(Debug, Clone)]
pub struct ElementIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> ElementIter<'a> {
    pub fn new(elements: &'a [u8]) -> Self {
        ElementIter {
            rest: elements,
            failed: false,
        }
    }
}

impl<'a> Iterator for ElementIter<'a> {
    type Item = Result<RawElement<'a>, ParseError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let mut r = Reader::new(self.rest, "element header");
        let header = r.u16().and_then(|typ| Ok((typ, r.u16()?)));
        let item = match header {
            Err(e) => Err(e),
            Ok((typ, len)) => match r.take(len as usize) {
                Ok(value) => {
                    self.rest = r.rest();
                    return Some(Ok(RawElement { typ, value }));
                }
                Err(_) => Err(ParseError::BadLength {
                    what: "element length",
                    value: len as usize,
                }),
            },
        };
        self.failed = true;
        self.rest = &[];
        Some(item)
    }
}

/// A typed message element. Variants borrow from the message they came from, so parsing the
/// hot-path Image Data element allocates nothing.
///
/// The variants are in the order of the files that declare them; each one's number, RFC
/// section, parse and emit are in its declaration there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Element<'a> {
    // ac.rs
    AcDescriptor(AcDescriptor<'a>),
    AcIpv4List(Vec<Ipv4Addr>),
    AcIpv6List(Vec<Ipv6Addr>),
    AcName(&'a str),
    AcNameWithPriority {
        priority: u8,
        name: &'a str,
    },
    AcTimestamp(u32),
    ControlIpv4 {
        addr: Ipv4Addr,
        wtp_count: u16,
    },
    ControlIpv6 {
        addr: Ipv6Addr,
        wtp_count: u16,
    },
    // wtp.rs
    DiscoveryType(u8),
    LocationData(&'a str),
    WtpBoardData {
        vendor: u32,
        items: Vec<BoardDataItem<'a>>,
    },
    WtpDescriptor(WtpDescriptor<'a>),
    WtpFallback(u8),
    WtpFrameTunnelMode(u8),
    WtpMacType(u8),
    WtpName(&'a str),
    // transport.rs
    LocalIpv4(Ipv4Addr),
    LocalIpv6(Ipv6Addr),
    TransportProtocol(u8),
    EcnSupport(u8),
    MaximumMessageLength(u16),
    /// MTU Discovery Padding: this many 0xFF bytes.
    MtuDiscoveryPadding(u16),
    // config.rs
    CapwapTimers {
        discovery: u8,
        echo_request: u8,
    },
    /// Decryption Error Report Period, in seconds.
    DecryptionErrorReportPeriod {
        radio_id: u8,
        interval: u16,
    },
    IdleTimeout(u32),
    RadioAdministrativeState {
        radio_id: u8,
        state: u8,
    },
    RadioOperationalState {
        radio_id: u8,
        state: u8,
        cause: u8,
    },
    StatisticsTimer(u16),
    /// WTP Static IP Address Information; `static_ip` 1 enables, 0 disables.
    WtpStaticIpInfo {
        addr: Ipv4Addr,
        netmask: Ipv4Addr,
        gateway: Ipv4Addr,
        static_ip: u8,
    },
    // common.rs
    ResultCode(u32),
    ReturnedMessageElement {
        reason: u8,
        element: &'a [u8],
    },
    SessionId(&'a [u8]),
    VendorSpecific {
        vendor: u32,
        element_id: u16,
        data: &'a [u8],
    },
    // event.rs
    /// Decryption Error Report: stations that caused decryption errors.
    DecryptionErrorReport {
        radio_id: u8,
        macs: Vec<&'a [u8]>,
    },
    /// Duplicate IPv4 Address: status 1 detected, 0 cleared.
    DuplicateIpv4 {
        addr: Ipv4Addr,
        status: u8,
        mac: &'a [u8],
    },
    DuplicateIpv6 {
        addr: Ipv6Addr,
        status: u8,
        mac: &'a [u8],
    },
    WtpRadioStatistics {
        radio_id: u8,
        last_failure_type: u8,
        reset_count: u16,
        sw_failure: u16,
        hw_failure: u16,
        other_failure: u16,
        unknown_failure: u16,
        config_update: u16,
        channel_change: u16,
        band_change: u16,
        /// dBm.
        noise_floor: i16,
    },
    WtpRebootStatistics {
        reboot_count: u16,
        ac_initiated: u16,
        link_failure: u16,
        sw_failure: u16,
        hw_failure: u16,
        other_failure: u16,
        unknown_failure: u16,
        last_failure_type: u8,
    },
    // image.rs
    DataTransferData {
        data_type: u8,
        data_mode: u8,
        data: &'a [u8],
    },
    DataTransferMode(u8),
    ImageData {
        data_type: u8,
        data: &'a [u8],
    },
    ImageIdentifier {
        vendor: u32,
        name: &'a str,
    },
    ImageInformation {
        file_size: u32,
        md5: [u8; 16],
    },
    InitiateDownload,
    // station.rs
    /// Add MAC ACL Entry: the MAC addresses (6 or 8 bytes each).
    AddMacAclEntry(Vec<&'a [u8]>),
    /// Add Station. An empty VLAN name is the same as none.
    AddStation {
        radio_id: u8,
        mac: &'a [u8],
        vlan_name: Option<&'a str>,
    },
    DeleteMacAclEntry(Vec<&'a [u8]>),
    DeleteStation {
        radio_id: u8,
        mac: &'a [u8],
    },
    // ieee80211.rs
    /// IEEE 802.11 WTP Radio Information (RFC 5416 §6.25).
    WtpRadioInformation {
        radio_id: u8,
        radio_type: u32,
    },
    /// Any other element type, kept as it came.
    Unknown {
        typ: u16,
        value: &'a [u8],
    },
}

impl<'a> Element<'a> {
    /// Types one TLV. Unknown types give `Unknown`, never an error.
    ///
    /// Fixed-size elements must have exactly their RFC length; variable ones are checked
    /// against the RFC's limits, except Image Data, whose data may be as long as the element.
    pub fn parse(raw: RawElement<'a>) -> Result<Element<'a>, ParseError> {
        for g in &GROUPS {
            if let Some(e) = (g.parse)(raw.typ, raw.value)? {
                return Ok(e);
            }
        }
        Ok(Element::Unknown {
            typ: raw.typ,
            value: raw.value,
        })
    }

    /// The element type number.
    pub fn type_id(&self) -> u16 {
        if let Element::Unknown { typ, .. } = self {
            return *typ;
        }
        let typ = GROUPS.iter().find_map(|g| (g.type_id)(self));
        debug_assert!(typ.is_some(), "{self:?} is declared in no file of element/");
        typ.unwrap_or(0)
    }

    /// Appends the whole TLV (type, length, value) to `out`.
    ///
    /// Values are written as given; only what a length or count field cannot express is cut
    /// (a value to 65535 bytes, a 1-byte length to 255, a count to 255 entries).
    pub fn emit(&self, out: &mut Vec<u8>) {
        if let Element::Unknown { typ, value } = self {
            return codec::tlv(out, *typ, |o| o.extend_from_slice(value));
        }
        let done = GROUPS.iter().any(|g| (g.emit)(self, out));
        debug_assert!(done, "{self:?} is declared in no file of element/");
    }
}
