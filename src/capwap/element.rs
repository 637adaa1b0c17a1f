//! Message elements (RFC 5415 §4.6, RFC 5416 §6 for the 802.11 ones a Join needs).
//!
//! [`ElementIter`] walks the TLVs of a message; [`Element::parse`] types one of them. An element
//! type this crate does not know is kept as [`Element::Unknown`], a vendor one as
//! [`Element::VendorSpecific`]; neither stops the walk.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{ParseError, Reader};

/// Element type numbers.
pub mod typ {
    pub const AC_DESCRIPTOR: u16 = 1;
    pub const AC_IPV4_LIST: u16 = 2;
    pub const AC_IPV6_LIST: u16 = 3;
    pub const AC_NAME: u16 = 4;
    pub const AC_NAME_WITH_PRIORITY: u16 = 5;
    pub const AC_TIMESTAMP: u16 = 6;
    pub const ADD_MAC_ACL_ENTRY: u16 = 7;
    pub const ADD_STATION: u16 = 8;
    pub const CAPWAP_CONTROL_IPV4: u16 = 10;
    pub const CAPWAP_CONTROL_IPV6: u16 = 11;
    pub const CAPWAP_TIMERS: u16 = 12;
    pub const DATA_TRANSFER_DATA: u16 = 13;
    pub const DATA_TRANSFER_MODE: u16 = 14;
    pub const DECRYPTION_ERROR_REPORT: u16 = 15;
    pub const DECRYPTION_ERROR_REPORT_PERIOD: u16 = 16;
    pub const DELETE_MAC_ACL_ENTRY: u16 = 17;
    pub const DELETE_STATION: u16 = 18;
    pub const DISCOVERY_TYPE: u16 = 20;
    pub const DUPLICATE_IPV4_ADDRESS: u16 = 21;
    pub const DUPLICATE_IPV6_ADDRESS: u16 = 22;
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
    pub const WTP_RADIO_STATISTICS: u16 = 47;
    pub const WTP_REBOOT_STATISTICS: u16 = 48;
    pub const WTP_STATIC_IP_ADDRESS_INFORMATION: u16 = 49;
    pub const CAPWAP_LOCAL_IPV6: u16 = 50;
    pub const CAPWAP_TRANSPORT_PROTOCOL: u16 = 51;
    pub const MTU_DISCOVERY_PADDING: u16 = 52;
    pub const ECN_SUPPORT: u16 = 53;
    pub const IEEE80211_WTP_RADIO_INFORMATION: u16 = 1048;
}

/// Image Data "Data Type" values (§4.6.24).
pub mod image_data_type {
    pub const DATA: u8 = 1;
    pub const LAST: u8 = 2;
    pub const ERROR: u8 = 5;
}

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

/// IEEE 802.11 WTP Radio Information Radio Type bits (RFC 5416 §6.25: `Reservd|N|G|A|B`).
pub mod radio_type {
    pub const N: u32 = 0x08;
    pub const G: u32 = 0x04;
    pub const A: u32 = 0x02;
    pub const B: u32 = 0x01;
}

/// AC Descriptor Security bits (§4.6.1: `Reserved |S|X|R`).
pub mod ac_security {
    /// S: the AC supports pre-shared secret authentication.
    pub const PRE_SHARED: u8 = 0x04;
    /// X: the AC supports X.509 certificate authentication.
    pub const X509: u8 = 0x02;
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
    /// Security bits (§4.6.1 `Reserved|S|X|R`): 0x04 S = pre-shared secret, 0x02 X = X.509;
    /// see [`ac_security`].
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
    CapwapTimers {
        discovery: u8,
        echo_request: u8,
    },
    DiscoveryType(u8),
    IdleTimeout(u32),
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
    LocationData(&'a str),
    MaximumMessageLength(u16),
    LocalIpv4(Ipv4Addr),
    LocalIpv6(Ipv6Addr),
    RadioAdministrativeState {
        radio_id: u8,
        state: u8,
    },
    RadioOperationalState {
        radio_id: u8,
        state: u8,
        cause: u8,
    },
    ResultCode(u32),
    ReturnedMessageElement {
        reason: u8,
        element: &'a [u8],
    },
    SessionId(&'a [u8]),
    StatisticsTimer(u16),
    VendorSpecific {
        vendor: u32,
        element_id: u16,
        data: &'a [u8],
    },
    WtpBoardData {
        vendor: u32,
        items: Vec<BoardDataItem<'a>>,
    },
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
    WtpRadioInformation {
        radio_id: u8,
        radio_type: u32,
    },
    /// Add MAC ACL Entry (§4.6.7): the MAC addresses (6 or 8 bytes each).
    AddMacAclEntry(Vec<&'a [u8]>),
    /// Add Station (§4.6.8). An empty VLAN name is the same as none.
    AddStation {
        radio_id: u8,
        mac: &'a [u8],
        vlan_name: Option<&'a str>,
    },
    /// Data Transfer Data (§4.6.15).
    DataTransferData {
        data_type: u8,
        data_mode: u8,
        data: &'a [u8],
    },
    /// Data Transfer Mode (§4.6.16).
    DataTransferMode(u8),
    /// Decryption Error Report (§4.6.17): stations that caused decryption errors.
    DecryptionErrorReport {
        radio_id: u8,
        macs: Vec<&'a [u8]>,
    },
    /// Decryption Error Report Period (§4.6.18), in seconds.
    DecryptionErrorReportPeriod {
        radio_id: u8,
        interval: u16,
    },
    /// Delete MAC ACL Entry (§4.6.19).
    DeleteMacAclEntry(Vec<&'a [u8]>),
    /// Delete Station (§4.6.20).
    DeleteStation {
        radio_id: u8,
        mac: &'a [u8],
    },
    /// Duplicate IPv4 Address (§4.6.22): status 1 detected, 0 cleared.
    DuplicateIpv4 {
        addr: Ipv4Addr,
        status: u8,
        mac: &'a [u8],
    },
    /// Duplicate IPv6 Address (§4.6.23).
    DuplicateIpv6 {
        addr: Ipv6Addr,
        status: u8,
        mac: &'a [u8],
    },
    /// MTU Discovery Padding (§4.6.32): this many 0xFF bytes.
    MtuDiscoveryPadding(u16),
    /// WTP Radio Statistics (§4.6.46).
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
    /// WTP Static IP Address Information (§4.6.48); `static_ip` 1 enables, 0 disables.
    WtpStaticIpInfo {
        addr: Ipv4Addr,
        netmask: Ipv4Addr,
        gateway: Ipv4Addr,
        static_ip: u8,
    },
    /// Any other element type, kept as it came.
    Unknown {
        typ: u16,
        value: &'a [u8],
    },
}

/// A value that must be exactly `n` bytes long.
fn exact<'a>(v: &'a [u8], n: usize, what: &'static str) -> Result<Reader<'a>, ParseError> {
    if v.len() != n {
        return Err(ParseError::BadLength {
            what,
            value: v.len(),
        });
    }
    Ok(Reader::new(v, what))
}

/// A UTF-8 string of `min..=max` bytes.
fn string<'a>(
    v: &'a [u8],
    what: &'static str,
    min: usize,
    max: usize,
) -> Result<&'a str, ParseError> {
    if v.len() < min || v.len() > max {
        return Err(ParseError::BadLength {
            what,
            value: v.len(),
        });
    }
    std::str::from_utf8(v).map_err(|_| ParseError::BadUtf8 { what })
}

/// A MAC address: EUI-48 or EUI-64.
fn mac<'a>(v: &'a [u8], what: &'static str) -> Result<&'a [u8], ParseError> {
    match v.len() {
        6 | 8 => Ok(v),
        n => Err(ParseError::BadLength { what, value: n }),
    }
}

/// A 1-byte length followed by a MAC address.
fn len_mac<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<&'a [u8], ParseError> {
    let n = r.u8()? as usize;
    mac(r.take(n)?, what)
}

/// `count` times (length, MAC), which must use up the reader.
fn mac_list<'a>(
    r: &mut Reader<'a>,
    count: u8,
    what: &'static str,
) -> Result<Vec<&'a [u8]>, ParseError> {
    if count == 0 {
        return Err(ParseError::BadValue { what, value: 0 });
    }
    // Each entry takes at least 7 bytes; don't let a count reserve more than the input backs.
    let mut macs = Vec::with_capacity((count as usize).min(r.remaining() / 7));
    for _ in 0..count {
        macs.push(len_mac(r, what)?);
    }
    no_trailing(r, what)?;
    Ok(macs)
}

fn no_trailing(r: &Reader<'_>, what: &'static str) -> Result<(), ParseError> {
    if r.is_empty() {
        Ok(())
    } else {
        Err(ParseError::BadLength {
            what,
            value: r.remaining(),
        })
    }
}

fn ipv4(r: &mut Reader<'_>) -> Result<Ipv4Addr, ParseError> {
    Ok(Ipv4Addr::from(r.array::<4>()?))
}

fn ipv6(r: &mut Reader<'_>) -> Result<Ipv6Addr, ParseError> {
    Ok(Ipv6Addr::from(r.array::<16>()?))
}

/// Vendor/type/length/data sub-elements of the AC and WTP Descriptors, up to the end.
fn descriptor_infos<'a>(
    r: &mut Reader<'a>,
    what: &'static str,
) -> Result<Vec<DescriptorInfo<'a>>, ParseError> {
    let mut info = Vec::with_capacity(r.remaining() / 8);
    while !r.is_empty() {
        let vendor = r.u32()?;
        let typ = r.u16()?;
        let len = r.u16()? as usize;
        if len > limits::SUB_ELEMENT {
            return Err(ParseError::BadLength { what, value: len });
        }
        info.push(DescriptorInfo {
            vendor,
            typ,
            data: r.take(len)?,
        });
    }
    Ok(info)
}

/// Appends a TLV whose value `f` writes; a value longer than 65535 bytes is cut.
fn tlv(out: &mut Vec<u8>, typ: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&typ.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    f(out);
    let mut len = out.len() - start - 4;
    if len > 0xffff {
        out.truncate(start + 4 + 0xffff);
        len = 0xffff;
    }
    out[start + 2..start + 4].copy_from_slice(&(len as u16).to_be_bytes());
}

/// Appends a 1-byte length and the bytes (cut to 255).
fn put_len8(out: &mut Vec<u8>, b: &[u8]) {
    let b = &b[..b.len().min(255)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

/// Appends a count byte and (length, MAC) entries (cut to 255 entries).
fn put_macs(out: &mut Vec<u8>, macs: &[&[u8]]) {
    let macs = &macs[..macs.len().min(255)];
    out.push(macs.len() as u8);
    for m in macs {
        put_len8(out, m);
    }
}

fn put_infos(out: &mut Vec<u8>, infos: &[DescriptorInfo<'_>]) {
    for i in infos {
        let data = &i.data[..i.data.len().min(0xffff)];
        out.extend_from_slice(&i.vendor.to_be_bytes());
        out.extend_from_slice(&i.typ.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
}

impl<'a> Element<'a> {
    /// Types one TLV. Unknown types give `Unknown`, never an error.
    ///
    /// Fixed-size elements must have exactly their RFC length; variable ones are checked
    /// against the RFC's limits, except Image Data, whose data may be as long as the element.
    pub fn parse(raw: RawElement<'a>) -> Result<Element<'a>, ParseError> {
        use typ::*;
        let v = raw.value;
        let e = match raw.typ {
            AC_DESCRIPTOR => {
                let what = "AC Descriptor";
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
            AC_IPV4_LIST => {
                if v.is_empty() || v.len() % 4 != 0 || v.len() / 4 > limits::AC_LIST {
                    return Err(ParseError::BadLength {
                        what: "AC IPv4 List",
                        value: v.len(),
                    });
                }
                let mut r = Reader::new(v, "AC IPv4 List");
                let mut list = Vec::with_capacity(v.len() / 4);
                while !r.is_empty() {
                    list.push(ipv4(&mut r)?);
                }
                Element::AcIpv4List(list)
            }
            AC_IPV6_LIST => {
                if v.is_empty() || v.len() % 16 != 0 || v.len() / 16 > limits::AC_LIST {
                    return Err(ParseError::BadLength {
                        what: "AC IPv6 List",
                        value: v.len(),
                    });
                }
                let mut r = Reader::new(v, "AC IPv6 List");
                let mut list = Vec::with_capacity(v.len() / 16);
                while !r.is_empty() {
                    list.push(ipv6(&mut r)?);
                }
                Element::AcIpv6List(list)
            }
            AC_NAME => Element::AcName(string(v, "AC Name", 1, limits::NAME)?),
            AC_NAME_WITH_PRIORITY => {
                let what = "AC Name with Priority";
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
            AC_TIMESTAMP => Element::AcTimestamp(exact(v, 4, "AC Timestamp")?.u32()?),
            ADD_MAC_ACL_ENTRY => {
                let mut r = Reader::new(v, "Add MAC ACL Entry");
                let n = r.u8()?;
                Element::AddMacAclEntry(mac_list(&mut r, n, "Add MAC ACL Entry")?)
            }
            ADD_STATION => {
                let what = "Add Station";
                let mut r = Reader::new(v, what);
                let radio_id = r.u8()?;
                let mac = len_mac(&mut r, what)?;
                let vlan = r.rest();
                let vlan_name = if vlan.is_empty() {
                    None
                } else {
                    Some(string(vlan, "Add Station VLAN Name", 1, limits::NAME)?)
                };
                Element::AddStation {
                    radio_id,
                    mac,
                    vlan_name,
                }
            }
            CAPWAP_CONTROL_IPV4 => {
                let mut r = exact(v, 6, "CAPWAP Control IPv4 Address")?;
                Element::ControlIpv4 {
                    addr: ipv4(&mut r)?,
                    wtp_count: r.u16()?,
                }
            }
            CAPWAP_CONTROL_IPV6 => {
                let mut r = exact(v, 18, "CAPWAP Control IPv6 Address")?;
                Element::ControlIpv6 {
                    addr: ipv6(&mut r)?,
                    wtp_count: r.u16()?,
                }
            }
            CAPWAP_TIMERS => {
                let mut r = exact(v, 2, "CAPWAP Timers")?;
                Element::CapwapTimers {
                    discovery: r.u8()?,
                    echo_request: r.u8()?,
                }
            }
            DATA_TRANSFER_DATA => {
                let what = "Data Transfer Data";
                let mut r = Reader::new(v, what);
                let data_type = r.u8()?;
                let data_mode = r.u8()?;
                let len = r.u16()? as usize;
                let data = r.rest();
                if data.len() != len {
                    return Err(ParseError::BadLength { what, value: len });
                }
                Element::DataTransferData {
                    data_type,
                    data_mode,
                    data,
                }
            }
            DATA_TRANSFER_MODE => {
                Element::DataTransferMode(exact(v, 1, "Data Transfer Mode")?.u8()?)
            }
            DECRYPTION_ERROR_REPORT => {
                let what = "Decryption Error Report";
                let mut r = Reader::new(v, what);
                let radio_id = r.u8()?;
                let n = r.u8()?;
                Element::DecryptionErrorReport {
                    radio_id,
                    macs: mac_list(&mut r, n, what)?,
                }
            }
            DECRYPTION_ERROR_REPORT_PERIOD => {
                let mut r = exact(v, 3, "Decryption Error Report Period")?;
                Element::DecryptionErrorReportPeriod {
                    radio_id: r.u8()?,
                    interval: r.u16()?,
                }
            }
            DELETE_MAC_ACL_ENTRY => {
                let mut r = Reader::new(v, "Delete MAC ACL Entry");
                let n = r.u8()?;
                Element::DeleteMacAclEntry(mac_list(&mut r, n, "Delete MAC ACL Entry")?)
            }
            DELETE_STATION => {
                let what = "Delete Station";
                let mut r = Reader::new(v, what);
                let radio_id = r.u8()?;
                let mac = len_mac(&mut r, what)?;
                no_trailing(&r, what)?;
                Element::DeleteStation { radio_id, mac }
            }
            DISCOVERY_TYPE => Element::DiscoveryType(exact(v, 1, "Discovery Type")?.u8()?),
            DUPLICATE_IPV4_ADDRESS => {
                let what = "Duplicate IPv4 Address";
                let mut r = Reader::new(v, what);
                let addr = ipv4(&mut r)?;
                let status = r.u8()?;
                let mac = len_mac(&mut r, what)?;
                no_trailing(&r, what)?;
                Element::DuplicateIpv4 { addr, status, mac }
            }
            DUPLICATE_IPV6_ADDRESS => {
                let what = "Duplicate IPv6 Address";
                let mut r = Reader::new(v, what);
                let addr = ipv6(&mut r)?;
                let status = r.u8()?;
                let mac = len_mac(&mut r, what)?;
                no_trailing(&r, what)?;
                Element::DuplicateIpv6 { addr, status, mac }
            }
            IDLE_TIMEOUT => Element::IdleTimeout(exact(v, 4, "Idle Timeout")?.u32()?),
            IMAGE_DATA => {
                let mut r = Reader::new(v, "Image Data");
                Element::ImageData {
                    data_type: r.u8()?,
                    data: r.rest(),
                }
            }
            IMAGE_IDENTIFIER => {
                let what = "Image Identifier";
                let mut r = Reader::new(v, what);
                let vendor = r.u32()?;
                Element::ImageIdentifier {
                    vendor,
                    name: string(r.rest(), what, 1, limits::IMAGE_IDENTIFIER)?,
                }
            }
            IMAGE_INFORMATION => {
                let mut r = exact(v, 20, "Image Information")?;
                Element::ImageInformation {
                    file_size: r.u32()?,
                    md5: r.array()?,
                }
            }
            INITIATE_DOWNLOAD => {
                exact(v, 0, "Initiate Download")?;
                Element::InitiateDownload
            }
            LOCATION_DATA => {
                Element::LocationData(string(v, "Location Data", 1, limits::LOCATION)?)
            }
            MAXIMUM_MESSAGE_LENGTH => {
                Element::MaximumMessageLength(exact(v, 2, "Maximum Message Length")?.u16()?)
            }
            CAPWAP_LOCAL_IPV4 => {
                Element::LocalIpv4(ipv4(&mut exact(v, 4, "CAPWAP Local IPv4 Address")?)?)
            }
            CAPWAP_LOCAL_IPV6 => {
                Element::LocalIpv6(ipv6(&mut exact(v, 16, "CAPWAP Local IPv6 Address")?)?)
            }
            MTU_DISCOVERY_PADDING => {
                if let Some(b) = v.iter().find(|&&b| b != 0xff) {
                    return Err(ParseError::BadValue {
                        what: "MTU Discovery Padding",
                        value: u32::from(*b),
                    });
                }
                Element::MtuDiscoveryPadding(v.len() as u16)
            }
            RADIO_ADMINISTRATIVE_STATE => {
                let mut r = exact(v, 2, "Radio Administrative State")?;
                Element::RadioAdministrativeState {
                    radio_id: r.u8()?,
                    state: r.u8()?,
                }
            }
            RADIO_OPERATIONAL_STATE => {
                let mut r = exact(v, 3, "Radio Operational State")?;
                Element::RadioOperationalState {
                    radio_id: r.u8()?,
                    state: r.u8()?,
                    cause: r.u8()?,
                }
            }
            RESULT_CODE => Element::ResultCode(exact(v, 4, "Result Code")?.u32()?),
            RETURNED_MESSAGE_ELEMENT => {
                let what = "Returned Message Element";
                let mut r = Reader::new(v, what);
                let reason = r.u8()?;
                let len = r.u8()? as usize;
                let element = r.rest();
                if element.len() != len {
                    return Err(ParseError::BadLength { what, value: len });
                }
                Element::ReturnedMessageElement { reason, element }
            }
            SESSION_ID => Element::SessionId(exact(v, 16, "Session ID")?.rest()),
            STATISTICS_TIMER => Element::StatisticsTimer(exact(v, 2, "Statistics Timer")?.u16()?),
            VENDOR_SPECIFIC => {
                let what = "Vendor Specific Payload";
                let mut r = Reader::new(v, what);
                let vendor = r.u32()?;
                let element_id = r.u16()?;
                let data = r.rest();
                if data.len() > limits::VENDOR_DATA {
                    return Err(ParseError::BadLength {
                        what,
                        value: data.len(),
                    });
                }
                Element::VendorSpecific {
                    vendor,
                    element_id,
                    data,
                }
            }
            WTP_BOARD_DATA => {
                let what = "WTP Board Data";
                let mut r = Reader::new(v, what);
                let vendor = r.u32()?;
                if vendor == 0 {
                    return Err(ParseError::BadValue {
                        what: "WTP Board Data vendor",
                        value: 0,
                    });
                }
                let mut items = Vec::with_capacity(r.remaining() / 4);
                while !r.is_empty() {
                    let typ = r.u16()?;
                    let len = r.u16()? as usize;
                    if len > limits::SUB_ELEMENT {
                        return Err(ParseError::BadLength { what, value: len });
                    }
                    items.push(BoardDataItem {
                        typ,
                        data: r.take(len)?,
                    });
                }
                Element::WtpBoardData { vendor, items }
            }
            WTP_DESCRIPTOR => {
                let what = "WTP Descriptor";
                let mut r = Reader::new(v, what);
                let max_radios = r.u8()?;
                let radios_in_use = r.u8()?;
                let n = r.u8()?;
                if n == 0 {
                    return Err(ParseError::BadValue {
                        what: "WTP Descriptor Num Encrypt",
                        value: 0,
                    });
                }
                let mut encryption = Vec::with_capacity((n as usize).min(r.remaining() / 3));
                for _ in 0..n {
                    let wbid = r.u8()? & 0x1f;
                    encryption.push((wbid, r.u16()?));
                }
                let info = descriptor_infos(&mut r, what)?;
                Element::WtpDescriptor(WtpDescriptor {
                    max_radios,
                    radios_in_use,
                    encryption,
                    info,
                })
            }
            WTP_FALLBACK => Element::WtpFallback(exact(v, 1, "WTP Fallback")?.u8()?),
            WTP_FRAME_TUNNEL_MODE => {
                Element::WtpFrameTunnelMode(exact(v, 1, "WTP Frame Tunnel Mode")?.u8()?)
            }
            WTP_MAC_TYPE => Element::WtpMacType(exact(v, 1, "WTP MAC Type")?.u8()?),
            WTP_NAME => Element::WtpName(string(v, "WTP Name", 1, limits::NAME)?),
            WTP_RADIO_STATISTICS => {
                let mut r = exact(v, 20, "WTP Radio Statistics")?;
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
            WTP_REBOOT_STATISTICS => {
                let mut r = exact(v, 15, "WTP Reboot Statistics")?;
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
            WTP_STATIC_IP_ADDRESS_INFORMATION => {
                let mut r = exact(v, 13, "WTP Static IP Address Information")?;
                Element::WtpStaticIpInfo {
                    addr: ipv4(&mut r)?,
                    netmask: ipv4(&mut r)?,
                    gateway: ipv4(&mut r)?,
                    static_ip: r.u8()?,
                }
            }
            CAPWAP_TRANSPORT_PROTOCOL => {
                Element::TransportProtocol(exact(v, 1, "CAPWAP Transport Protocol")?.u8()?)
            }
            ECN_SUPPORT => Element::EcnSupport(exact(v, 1, "ECN Support")?.u8()?),
            IEEE80211_WTP_RADIO_INFORMATION => {
                let mut r = exact(v, 5, "IEEE 802.11 WTP Radio Information")?;
                Element::WtpRadioInformation {
                    radio_id: r.u8()?,
                    radio_type: r.u32()?,
                }
            }
            typ => Element::Unknown { typ, value: v },
        };
        Ok(e)
    }

    /// The element type number.
    pub fn type_id(&self) -> u16 {
        use typ::*;
        match self {
            Element::AcDescriptor(_) => AC_DESCRIPTOR,
            Element::AcIpv4List(_) => AC_IPV4_LIST,
            Element::AcIpv6List(_) => AC_IPV6_LIST,
            Element::AcName(_) => AC_NAME,
            Element::AcNameWithPriority { .. } => AC_NAME_WITH_PRIORITY,
            Element::AcTimestamp(_) => AC_TIMESTAMP,
            Element::ControlIpv4 { .. } => CAPWAP_CONTROL_IPV4,
            Element::ControlIpv6 { .. } => CAPWAP_CONTROL_IPV6,
            Element::CapwapTimers { .. } => CAPWAP_TIMERS,
            Element::DiscoveryType(_) => DISCOVERY_TYPE,
            Element::IdleTimeout(_) => IDLE_TIMEOUT,
            Element::ImageData { .. } => IMAGE_DATA,
            Element::ImageIdentifier { .. } => IMAGE_IDENTIFIER,
            Element::ImageInformation { .. } => IMAGE_INFORMATION,
            Element::InitiateDownload => INITIATE_DOWNLOAD,
            Element::LocationData(_) => LOCATION_DATA,
            Element::MaximumMessageLength(_) => MAXIMUM_MESSAGE_LENGTH,
            Element::LocalIpv4(_) => CAPWAP_LOCAL_IPV4,
            Element::LocalIpv6(_) => CAPWAP_LOCAL_IPV6,
            Element::RadioAdministrativeState { .. } => RADIO_ADMINISTRATIVE_STATE,
            Element::RadioOperationalState { .. } => RADIO_OPERATIONAL_STATE,
            Element::ResultCode(_) => RESULT_CODE,
            Element::ReturnedMessageElement { .. } => RETURNED_MESSAGE_ELEMENT,
            Element::SessionId(_) => SESSION_ID,
            Element::StatisticsTimer(_) => STATISTICS_TIMER,
            Element::VendorSpecific { .. } => VENDOR_SPECIFIC,
            Element::WtpBoardData { .. } => WTP_BOARD_DATA,
            Element::WtpDescriptor(_) => WTP_DESCRIPTOR,
            Element::WtpFallback(_) => WTP_FALLBACK,
            Element::WtpFrameTunnelMode(_) => WTP_FRAME_TUNNEL_MODE,
            Element::WtpMacType(_) => WTP_MAC_TYPE,
            Element::WtpName(_) => WTP_NAME,
            Element::WtpRebootStatistics { .. } => WTP_REBOOT_STATISTICS,
            Element::TransportProtocol(_) => CAPWAP_TRANSPORT_PROTOCOL,
            Element::EcnSupport(_) => ECN_SUPPORT,
            Element::WtpRadioInformation { .. } => IEEE80211_WTP_RADIO_INFORMATION,
            Element::AddMacAclEntry(_) => ADD_MAC_ACL_ENTRY,
            Element::AddStation { .. } => ADD_STATION,
            Element::DataTransferData { .. } => DATA_TRANSFER_DATA,
            Element::DataTransferMode(_) => DATA_TRANSFER_MODE,
            Element::DecryptionErrorReport { .. } => DECRYPTION_ERROR_REPORT,
            Element::DecryptionErrorReportPeriod { .. } => DECRYPTION_ERROR_REPORT_PERIOD,
            Element::DeleteMacAclEntry(_) => DELETE_MAC_ACL_ENTRY,
            Element::DeleteStation { .. } => DELETE_STATION,
            Element::DuplicateIpv4 { .. } => DUPLICATE_IPV4_ADDRESS,
            Element::DuplicateIpv6 { .. } => DUPLICATE_IPV6_ADDRESS,
            Element::MtuDiscoveryPadding(_) => MTU_DISCOVERY_PADDING,
            Element::WtpRadioStatistics { .. } => WTP_RADIO_STATISTICS,
            Element::WtpStaticIpInfo { .. } => WTP_STATIC_IP_ADDRESS_INFORMATION,
            Element::Unknown { typ, .. } => *typ,
        }
    }

    /// Appends the whole TLV (type, length, value) to `out`.
    ///
    /// Values are written as given; only what a length or count field cannot express is cut
    /// (a value to 65535 bytes, a 1-byte length to 255, a count to 255 entries).
    pub fn emit(&self, out: &mut Vec<u8>) {
        tlv(out, self.type_id(), |o| self.emit_value(o));
    }

    fn emit_value(&self, o: &mut Vec<u8>) {
        fn u16b(o: &mut Vec<u8>, v: u16) {
            o.extend_from_slice(&v.to_be_bytes());
        }
        fn u32b(o: &mut Vec<u8>, v: u32) {
            o.extend_from_slice(&v.to_be_bytes());
        }
        match self {
            Element::AcDescriptor(d) => {
                for v in [d.stations, d.station_limit, d.active_wtps, d.max_wtps] {
                    u16b(o, v);
                }
                o.extend_from_slice(&[d.security, d.r_mac, 0, d.dtls_policy]);
                put_infos(o, &d.info);
            }
            Element::AcIpv4List(list) => list.iter().for_each(|a| o.extend_from_slice(&a.octets())),
            Element::AcIpv6List(list) => list.iter().for_each(|a| o.extend_from_slice(&a.octets())),
            Element::AcName(s) | Element::LocationData(s) | Element::WtpName(s) => {
                o.extend_from_slice(s.as_bytes())
            }
            Element::AcNameWithPriority { priority, name } => {
                o.push(*priority);
                o.extend_from_slice(name.as_bytes());
            }
            Element::AcTimestamp(v) | Element::IdleTimeout(v) | Element::ResultCode(v) => {
                u32b(o, *v)
            }
            Element::ControlIpv4 { addr, wtp_count } => {
                o.extend_from_slice(&addr.octets());
                u16b(o, *wtp_count);
            }
            Element::ControlIpv6 { addr, wtp_count } => {
                o.extend_from_slice(&addr.octets());
                u16b(o, *wtp_count);
            }
            Element::CapwapTimers {
                discovery,
                echo_request,
            } => o.extend_from_slice(&[*discovery, *echo_request]),
            Element::DiscoveryType(v)
            | Element::WtpFallback(v)
            | Element::WtpFrameTunnelMode(v)
            | Element::WtpMacType(v)
            | Element::TransportProtocol(v)
            | Element::EcnSupport(v)
            | Element::DataTransferMode(v) => o.push(*v),
            Element::ImageData { data_type, data } => {
                o.push(*data_type);
                o.extend_from_slice(data);
            }
            Element::ImageIdentifier { vendor, name } => {
                u32b(o, *vendor);
                o.extend_from_slice(name.as_bytes());
            }
            Element::ImageInformation { file_size, md5 } => {
                u32b(o, *file_size);
                o.extend_from_slice(md5);
            }
            Element::InitiateDownload => {}
            Element::MaximumMessageLength(v) | Element::StatisticsTimer(v) => u16b(o, *v),
            Element::LocalIpv4(a) => o.extend_from_slice(&a.octets()),
            Element::LocalIpv6(a) => o.extend_from_slice(&a.octets()),
            Element::RadioAdministrativeState { radio_id, state } => {
                o.extend_from_slice(&[*radio_id, *state])
            }
            Element::RadioOperationalState {
                radio_id,
                state,
                cause,
            } => o.extend_from_slice(&[*radio_id, *state, *cause]),
            Element::ReturnedMessageElement { reason, element } => {
                o.push(*reason);
                put_len8(o, element);
            }
            Element::SessionId(id) => o.extend_from_slice(id),
            Element::VendorSpecific {
                vendor,
                element_id,
                data,
            } => {
                u32b(o, *vendor);
                u16b(o, *element_id);
                o.extend_from_slice(data);
            }
            Element::WtpBoardData { vendor, items } => {
                u32b(o, *vendor);
                for i in items {
                    let data = &i.data[..i.data.len().min(0xffff)];
                    u16b(o, i.typ);
                    u16b(o, data.len() as u16);
                    o.extend_from_slice(data);
                }
            }
            Element::WtpDescriptor(d) => {
                let enc = &d.encryption[..d.encryption.len().min(255)];
                o.extend_from_slice(&[d.max_radios, d.radios_in_use, enc.len() as u8]);
                for (wbid, caps) in enc {
                    o.push(wbid & 0x1f);
                    u16b(o, *caps);
                }
                put_infos(o, &d.info);
            }
            Element::WtpRebootStatistics {
                reboot_count,
                ac_initiated,
                link_failure,
                sw_failure,
                hw_failure,
                other_failure,
                unknown_failure,
                last_failure_type,
            } => {
                for v in [
                    *reboot_count,
                    *ac_initiated,
                    *link_failure,
                    *sw_failure,
                    *hw_failure,
                    *other_failure,
                    *unknown_failure,
                ] {
                    u16b(o, v);
                }
                o.push(*last_failure_type);
            }
            Element::WtpRadioInformation {
                radio_id,
                radio_type,
            } => {
                o.push(*radio_id);
                u32b(o, *radio_type);
            }
            Element::AddMacAclEntry(macs) | Element::DeleteMacAclEntry(macs) => put_macs(o, macs),
            Element::AddStation {
                radio_id,
                mac,
                vlan_name,
            } => {
                o.push(*radio_id);
                put_len8(o, mac);
                if let Some(v) = vlan_name {
                    o.extend_from_slice(v.as_bytes());
                }
            }
            Element::DataTransferData {
                data_type,
                data_mode,
                data,
            } => {
                // The element's own length leaves 65531 bytes for data.
                let data = &data[..data.len().min(0xffff - 4)];
                o.extend_from_slice(&[*data_type, *data_mode]);
                u16b(o, data.len() as u16);
                o.extend_from_slice(data);
            }
            Element::DecryptionErrorReport { radio_id, macs } => {
                o.push(*radio_id);
                put_macs(o, macs);
            }
            Element::DecryptionErrorReportPeriod { radio_id, interval } => {
                o.push(*radio_id);
                u16b(o, *interval);
            }
            Element::DeleteStation { radio_id, mac } => {
                o.push(*radio_id);
                put_len8(o, mac);
            }
            Element::DuplicateIpv4 { addr, status, mac } => {
                o.extend_from_slice(&addr.octets());
                o.push(*status);
                put_len8(o, mac);
            }
            Element::DuplicateIpv6 { addr, status, mac } => {
                o.extend_from_slice(&addr.octets());
                o.push(*status);
                put_len8(o, mac);
            }
            Element::MtuDiscoveryPadding(n) => o.resize(o.len() + *n as usize, 0xff),
            Element::WtpRadioStatistics {
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
            } => {
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
                    u16b(o, v);
                }
            }
            Element::WtpStaticIpInfo {
                addr,
                netmask,
                gateway,
                static_ip,
            } => {
                for a in [addr, netmask, gateway] {
                    o.extend_from_slice(&a.octets());
                }
                o.push(*static_ip);
            }
            Element::Unknown { value, .. } => o.extend_from_slice(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capwap::testutil::{allocations, sample_elements, MAC6};

    fn emit(e: &Element<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        e.emit(&mut v);
        v
    }

    fn parse_one(bytes: &[u8]) -> Result<Element<'_>, ParseError> {
        let mut it = ElementIter::new(bytes);
        let raw = it.next().expect("one element")?;
        assert!(it.next().is_none());
        Element::parse(raw)
    }

    #[test]
    fn every_variant_round_trips() {
        let samples = sample_elements();
        for e in &samples {
            let bytes = emit(e);
            assert_eq!(u16::from_be_bytes([bytes[0], bytes[1]]), e.type_id());
            assert_eq!(
                u16::from_be_bytes([bytes[2], bytes[3]]) as usize,
                bytes.len() - 4
            );
            let back = parse_one(&bytes).unwrap_or_else(|err| panic!("{e:?}: {err}"));
            assert_eq!(&back, e, "emit -> parse");
            assert_eq!(emit(&back), bytes, "parse -> emit byte-identical");
        }
        // All of them in one message, walked by the iterator.
        let mut all = Vec::new();
        samples.iter().for_each(|e| e.emit(&mut all));
        let parsed: Vec<_> = ElementIter::new(&all)
            .map(|r| Element::parse(r.unwrap()).unwrap())
            .collect();
        assert_eq!(parsed, samples);
    }

    #[test]
    fn type_numbers_match_rfc_table() {
        use typ::*;
        let expect = [
            (AC_DESCRIPTOR, 1),
            (AC_IPV4_LIST, 2),
            (AC_IPV6_LIST, 3),
            (AC_NAME, 4),
            (AC_NAME_WITH_PRIORITY, 5),
            (AC_TIMESTAMP, 6),
            (ADD_MAC_ACL_ENTRY, 7),
            (ADD_STATION, 8),
            (CAPWAP_CONTROL_IPV4, 10),
            (CAPWAP_CONTROL_IPV6, 11),
            (CAPWAP_TIMERS, 12),
            (DATA_TRANSFER_DATA, 13),
            (DATA_TRANSFER_MODE, 14),
            (DECRYPTION_ERROR_REPORT, 15),
            (DECRYPTION_ERROR_REPORT_PERIOD, 16),
            (DELETE_MAC_ACL_ENTRY, 17),
            (DELETE_STATION, 18),
            (DISCOVERY_TYPE, 20),
            (DUPLICATE_IPV4_ADDRESS, 21),
            (DUPLICATE_IPV6_ADDRESS, 22),
            (IDLE_TIMEOUT, 23),
            (IMAGE_DATA, 24),
            (IMAGE_IDENTIFIER, 25),
            (IMAGE_INFORMATION, 26),
            (INITIATE_DOWNLOAD, 27),
            (LOCATION_DATA, 28),
            (MAXIMUM_MESSAGE_LENGTH, 29),
            (CAPWAP_LOCAL_IPV4, 30),
            (RADIO_ADMINISTRATIVE_STATE, 31),
            (RADIO_OPERATIONAL_STATE, 32),
            (RESULT_CODE, 33),
            (RETURNED_MESSAGE_ELEMENT, 34),
            (SESSION_ID, 35),
            (STATISTICS_TIMER, 36),
            (VENDOR_SPECIFIC, 37),
            (WTP_BOARD_DATA, 38),
            (WTP_DESCRIPTOR, 39),
            (WTP_FALLBACK, 40),
            (WTP_FRAME_TUNNEL_MODE, 41),
            (WTP_MAC_TYPE, 44),
            (WTP_NAME, 45),
            (WTP_RADIO_STATISTICS, 47),
            (WTP_REBOOT_STATISTICS, 48),
            (WTP_STATIC_IP_ADDRESS_INFORMATION, 49),
            (CAPWAP_LOCAL_IPV6, 50),
            (CAPWAP_TRANSPORT_PROTOCOL, 51),
            (MTU_DISCOVERY_PADDING, 52),
            (ECN_SUPPORT, 53),
            (IEEE80211_WTP_RADIO_INFORMATION, 1048),
        ];
        for (c, n) in expect {
            assert_eq!(c, n);
        }
    }

    #[test]
    fn iterator_yields_err_once_then_stops() {
        // A good element, then one claiming 10 bytes with 2 present.
        let bytes = [0, 20, 0, 1, 1, 0, 45, 0, 10, b'a', b'b'];
        let mut it = ElementIter::new(&bytes);
        assert_eq!(
            it.next(),
            Some(Ok(RawElement {
                typ: 20,
                value: &[1]
            }))
        );
        assert_eq!(
            it.next(),
            Some(Err(ParseError::BadLength {
                what: "element length",
                value: 10
            }))
        );
        assert_eq!(it.next(), None);
        assert_eq!(it.next(), None);
        // A header cut short.
        let mut it = ElementIter::new(&[0, 20, 0]);
        assert!(matches!(it.next(), Some(Err(ParseError::Truncated { .. }))));
        assert_eq!(it.next(), None);
        assert_eq!(ElementIter::new(&[]).next(), None);
    }

    #[test]
    fn unknown_and_vendor_elements_are_kept_byte_identical() {
        let bytes = [0x04, 0x00, 0x00, 0x03, 9, 8, 7];
        let e = parse_one(&bytes).unwrap();
        assert_eq!(
            e,
            Element::Unknown {
                typ: 1024,
                value: &[9, 8, 7]
            }
        );
        assert_eq!(emit(&e), bytes);
        let bytes = [0, 37, 0, 9, 0, 0, 0x37, 0x63, 0x01, 0x02, 0xaa, 0xbb, 0xcc];
        let e = parse_one(&bytes).unwrap();
        assert_eq!(
            e,
            Element::VendorSpecific {
                vendor: 14179,
                element_id: 0x0102,
                data: &[0xaa, 0xbb, 0xcc]
            }
        );
        assert_eq!(emit(&e), bytes);
    }

    #[test]
    fn strings_are_checked() {
        let name = "n".repeat(512);
        let e = Element::WtpName(&name);
        assert_eq!(parse_one(&emit(&e)).unwrap(), e);
        let too_long = "n".repeat(513);
        for e in [Element::WtpName(&too_long), Element::AcName(&too_long)] {
            assert!(matches!(
                parse_one(&emit(&e)),
                Err(ParseError::BadLength { value: 513, .. })
            ));
        }
        assert!(matches!(
            parse_one(&[0, 45, 0, 0]),
            Err(ParseError::BadLength { value: 0, .. })
        ));
        assert_eq!(
            parse_one(&[0, 45, 0, 2, 0xc3, 0x28]),
            Err(ParseError::BadUtf8 { what: "WTP Name" })
        );
        assert_eq!(
            parse_one(&[0, 25, 0, 6, 0, 0, 0, 1, b'x', 0xff]),
            Err(ParseError::BadUtf8 {
                what: "Image Identifier"
            })
        );
        assert!(
            parse_one(&[0, 25, 0, 4, 0, 0, 0, 1]).is_err(),
            "empty image name"
        );
        assert!(matches!(
            parse_one(&[0, 5, 0, 2, 0, b'a']),
            Err(ParseError::BadValue { value: 0, .. })
        ));
        let loc = "l".repeat(1024);
        assert!(parse_one(&emit(&Element::LocationData(&loc))).is_ok());
        let loc = "l".repeat(1025);
        assert!(parse_one(&emit(&Element::LocationData(&loc))).is_err());
    }

    #[test]
    fn image_data_accepts_any_length_and_does_not_allocate() {
        for n in [0usize, 1, 1024, 1377, 4000, 0xffff - 1] {
            let data = vec![0x42u8; n];
            let bytes = emit(&Element::ImageData {
                data_type: 1,
                data: &data,
            });
            let raw = ElementIter::new(&bytes).next().unwrap().unwrap();
            let (e, allocs) = allocations(|| Element::parse(raw));
            assert_eq!(allocs, 0, "parsing Image Data allocated");
            match e.unwrap() {
                Element::ImageData {
                    data_type: 1,
                    data: d,
                } => {
                    assert_eq!(d.len(), n);
                    assert!(
                        std::ptr::eq(d.as_ptr(), bytes[5..].as_ptr()),
                        "borrowed, not copied"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(parse_one(&[0, 24, 0, 0]).is_err(), "Data Type missing");
    }

    #[test]
    fn fixed_lengths_are_enforced() {
        // Result Code with 3 and 5 bytes.
        assert!(matches!(
            parse_one(&[0, 33, 0, 3, 0, 0, 0]),
            Err(ParseError::BadLength { value: 3, .. })
        ));
        assert!(matches!(
            parse_one(&[0, 33, 0, 5, 0, 0, 0, 0, 0]),
            Err(ParseError::BadLength { value: 5, .. })
        ));
        assert_eq!(
            parse_one(&[0, 33, 0, 4, 0, 0, 0, 18]),
            Ok(Element::ResultCode(18))
        );
        assert!(
            parse_one(&[0, 27, 0, 1, 0]).is_err(),
            "Initiate Download carries nothing"
        );
        assert!(
            parse_one(&[0, 35, 0, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err(),
            "Session ID is 16"
        );
        assert!(
            parse_one(&[0, 52, 0, 2, 0xff, 0xfe]).is_err(),
            "padding must be 0xFF"
        );
    }

    #[test]
    fn structured_elements_reject_inconsistent_contents() {
        // WTP Board Data with vendor 0.
        assert!(matches!(
            parse_one(&[0, 38, 0, 10, 0, 0, 0, 0, 0, 0, 0, 2, b'a', b'b']),
            Err(ParseError::BadValue { .. })
        ));
        // Board data item whose length runs past the element.
        assert!(parse_one(&[0, 38, 0, 10, 0, 0, 0, 1, 0, 0, 0, 3, b'a', b'b']).is_err());
        // WTP Descriptor with Num Encrypt 0.
        assert!(parse_one(&[0, 39, 0, 3, 1, 1, 0]).is_err());
        // WTP Descriptor claiming 2 encryption sub-elements, holding 1.
        assert!(parse_one(&[0, 39, 0, 6, 1, 1, 2, 1, 0, 0]).is_err());
        // Returned Message Element whose length disagrees.
        assert!(parse_one(&[0, 34, 0, 4, 1, 3, 0, 0]).is_err());
        // Data Transfer Data whose length disagrees.
        assert!(parse_one(&[0, 13, 0, 5, 1, 1, 0, 2, 0]).is_err());
        // Delete Station with a 5-byte MAC.
        assert!(parse_one(&[0, 18, 0, 7, 1, 5, 1, 2, 3, 4, 5]).is_err());
        // Add MAC ACL with a count larger than the entries.
        let mut b = vec![0, 7, 0, 8, 2, 6];
        b.extend_from_slice(MAC6);
        assert!(parse_one(&b).is_err());
        // AC IPv4 List not a multiple of 4.
        assert!(parse_one(&[0, 2, 0, 5, 1, 2, 3, 4, 5]).is_err());
        // Vendor Specific data over 2048 bytes.
        let big = vec![0u8; 2049];
        assert!(parse_one(&emit(&Element::VendorSpecific {
            vendor: 1,
            element_id: 1,
            data: &big
        }))
        .is_err());
    }

    #[test]
    fn every_truncated_value_errs_or_parses_without_panic() {
        for e in sample_elements() {
            let bytes = emit(&e);
            for n in 0..bytes.len() - 4 {
                let raw = RawElement {
                    typ: e.type_id(),
                    value: &bytes[4..4 + n],
                };
                let _ = Element::parse(raw);
            }
        }
    }
}
