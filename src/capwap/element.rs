//! Message elements (RFC 5415 §4.6, RFC 5416 §6 for the 802.11 ones a Join needs).
//!
//! [`ElementIter`] walks the TLVs of a message; [`Element::parse`] types one of them. An element
//! type this crate does not know is kept as [`Element::Unknown`], a vendor one as
//! [`Element::VendorSpecific`]; neither stops the walk.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::ParseError;

/// Element type numbers.
pub mod typ {
    pub const AC_DESCRIPTOR: u16 = 1;
    pub const AC_IPV4_LIST: u16 = 2;
    pub const AC_IPV6_LIST: u16 = 3;
    pub const AC_NAME: u16 = 4;
    pub const AC_NAME_WITH_PRIORITY: u16 = 5;
    pub const AC_TIMESTAMP: u16 = 6;
    pub const CAPWAP_CONTROL_IPV4: u16 = 10;
    pub const CAPWAP_CONTROL_IPV6: u16 = 11;
    pub const CAPWAP_TIMERS: u16 = 12;
    pub const DISCOVERY_TYPE: u16 = 20;
    pub const IDLE_TIMEOUT: u16 = 23;
    pub const IMAGE_DATA: u16 = 24;
    pub const IMAGE_IDENTIFIER: u16 = 25;
    pub const IMAGE_INFORMATION: u16 = 26;
    pub const INITIATE_DOWNLOAD: u16 = 27;
    pub const LOCATION_DATA: u16 = 28;
    pub const MAXIMUM_MESSAGE_LENGTH: u16 = 29;
    pub const CAPWAP_LOCAL_IPV4: u16 = 30;
    pub const RADIO_ADMINISTRATIVE_STATE: u16 = 31;
    pub const RADIO_OPERATIONAL_STATE: u16 = 32;
    pub const RESULT_CODE: u16 = 33;
    pub const RETURNED_MESSAGE_ELEMENT: u16 = 34;
    pub const SESSION_ID: u16 = 35;
    pub const STATISTICS_TIMER: u16 = 36;
    pub const VENDOR_SPECIFIC: u16 = 37;
    pub const WTP_BOARD_DATA: u16 = 38;
    pub const WTP_DESCRIPTOR: u16 = 39;
    pub const WTP_FALLBACK: u16 = 40;
    pub const WTP_FRAME_TUNNEL_MODE: u16 = 41;
    pub const WTP_MAC_TYPE: u16 = 44;
    pub const WTP_NAME: u16 = 45;
    pub const WTP_REBOOT_STATISTICS: u16 = 48;
    pub const CAPWAP_LOCAL_IPV6: u16 = 50;
    pub const CAPWAP_TRANSPORT_PROTOCOL: u16 = 51;
    pub const ECN_SUPPORT: u16 = 53;
    pub const IEEE80211_WTP_RADIO_INFORMATION: u16 = 1048;
}

/// Image Data "Data Type" values (§4.6.24).
pub mod image_data_type {
    pub const DATA: u8 = 1;
    pub const LAST: u8 = 2;
    pub const ERROR: u8 = 5;
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
        ElementIter { rest: elements, failed: false }
    }
}

impl<'a> Iterator for ElementIter<'a> {
    type Item = Result<RawElement<'a>, ParseError>;
    fn next(&mut self) -> Option<Self::Item> {
        let _ = (&mut self.rest, &mut self.failed);
        todo!()
    }
}

/// A sub-element of the AC and WTP Descriptors (vendor, type, data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorInfo<'a> {
    pub vendor: u32,
    pub typ: u16,
    pub data: &'a [u8],
}

/// AC Descriptor (§4.6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcDescriptor<'a> {
    pub stations: u16,
    pub station_limit: u16,
    pub active_wtps: u16,
    pub max_wtps: u16,
    /// Security bits: 0x04 X.509 (S), 0x02 pre-shared (X) — see §4.6.1.
    pub security: u8,
    pub r_mac: u8,
    pub dtls_policy: u8,
    /// AC Information sub-elements (type 4 hardware version, 5 software version).
    pub info: Vec<DescriptorInfo<'a>>,
}

/// WTP Descriptor (§4.6.40).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WtpDescriptor<'a> {
    pub max_radios: u8,
    pub radios_in_use: u8,
    /// Encryption sub-elements: (WBID, capabilities).
    pub encryption: Vec<(u8, u16)>,
    /// Descriptor sub-elements (0 hardware, 1 active software, 2 boot, 3 other software version).
    pub info: Vec<DescriptorInfo<'a>>,
}

/// WTP Board Data sub-element (§4.6.39): 0 model, 1 serial, 2 board id, 3 revision, 4 base MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardDataItem<'a> {
    pub typ: u16,
    pub data: &'a [u8],
}

/// A typed message element. Variants borrow from the message they came from, so parsing the
/// hot-path Image Data element allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Element<'a> {
    AcDescriptor(AcDescriptor<'a>),
    AcIpv4List(Vec<Ipv4Addr>),
    AcIpv6List(Vec<Ipv6Addr>),
    AcName(&'a str),
    AcNameWithPriority { priority: u8, name: &'a str },
    AcTimestamp(u32),
    ControlIpv4 { addr: Ipv4Addr, wtp_count: u16 },
    ControlIpv6 { addr: Ipv6Addr, wtp_count: u16 },
    CapwapTimers { discovery: u8, echo_request: u8 },
    DiscoveryType(u8),
    IdleTimeout(u32),
    ImageData { data_type: u8, data: &'a [u8] },
    ImageIdentifier { vendor: u32, name: &'a str },
    ImageInformation { file_size: u32, md5: [u8; 16] },
    InitiateDownload,
    LocationData(&'a str),
    MaximumMessageLength(u16),
    LocalIpv4(Ipv4Addr),
    LocalIpv6(Ipv6Addr),
    RadioAdministrativeState { radio_id: u8, state: u8 },
    RadioOperationalState { radio_id: u8, state: u8, cause: u8 },
    ResultCode(u32),
    ReturnedMessageElement { reason: u8, element: &'a [u8] },
    SessionId(&'a [u8]),
    StatisticsTimer(u16),
    VendorSpecific { vendor: u32, element_id: u16, data: &'a [u8] },
    WtpBoardData { vendor: u32, items: Vec<BoardDataItem<'a>> },
    WtpDescriptor(WtpDescriptor<'a>),
    WtpFallback(u8),
    WtpFrameTunnelMode(u8),
    WtpMacType(u8),
    WtpName(&'a str),
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
    TransportProtocol(u8),
    EcnSupport(u8),
    /// IEEE 802.11 WTP Radio Information (RFC 5416 §6.25).
    WtpRadioInformation { radio_id: u8, radio_type: u32 },
    /// Any other element type, kept as it came.
    Unknown { typ: u16, value: &'a [u8] },
}

impl<'a> Element<'a> {
    /// Types one TLV. Unknown types give `Unknown`, never an error.
    pub fn parse(raw: RawElement<'a>) -> Result<Element<'a>, ParseError> {
        let _ = raw;
        todo!()
    }

    /// The element type number.
    pub fn type_id(&self) -> u16 {
        todo!()
    }

    /// Appends the whole TLV (type, length, value) to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let _ = out;
        todo!()
    }
}
