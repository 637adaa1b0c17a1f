//! The CAPWAP preamble and transport header (RFC 5415 §4.1, §4.2, §4.3).

use super::ParseError;

/// What follows the 4-bit version in the first byte (§4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preamble {
    /// Type 0: a clear CAPWAP header follows.
    Capwap,
    /// Type 1: a DTLS record follows the 4-byte CAPWAP DTLS header (§4.2).
    Dtls,
}

/// The 4-byte CAPWAP DTLS header put in front of every DTLS record (§4.2).
pub const DTLS_HEADER: [u8; 4] = [0x01, 0, 0, 0];

/// Wireless Binding ID of IEEE 802.11 (§4.3).
pub const WBID_IEEE80211: u8 = 1;

/// Reads the preamble of a datagram.
pub fn preamble(buf: &[u8]) -> Result<Preamble, ParseError> {
    let _ = buf;
    todo!()
}

/// The transport header, borrowed from the packet it was parsed from (or from the caller when
/// emitting). The M and W flags are not stored: they follow from `radio_mac` and
/// `wireless_info` being present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Radio ID (5 bits).
    pub radio_id: u8,
    /// Wireless Binding ID (5 bits).
    pub wbid: u8,
    /// T: the payload is a native frame of the binding.
    pub native_frame: bool,
    /// F: this packet is a fragment.
    pub fragment: bool,
    /// L: this is the last fragment (only with F).
    pub last_fragment: bool,
    /// K: data channel keep-alive.
    pub keep_alive: bool,
    /// The three reserved flag bits, kept as received.
    pub reserved_flags: u8,
    pub fragment_id: u16,
    /// Fragment offset in units of 8 bytes (13 bits).
    pub fragment_offset: u16,
    /// Radio MAC Address (M flag): 6 or 8 bytes.
    pub radio_mac: Option<&'a [u8]>,
    /// Wireless Specific Information (W flag).
    pub wireless_info: Option<&'a [u8]>,
}

impl Header<'static> {
    /// The header of an unfragmented control packet: WBID 802.11, no flags, no options.
    pub fn control() -> Self {
        Header {
            radio_id: 0,
            wbid: WBID_IEEE80211,
            native_frame: false,
            fragment: false,
            last_fragment: false,
            keep_alive: false,
            reserved_flags: 0,
            fragment_id: 0,
            fragment_offset: 0,
            radio_mac: None,
            wireless_info: None,
        }
    }
}

impl<'a> Header<'a> {
    /// Bytes the preamble and header take when emitted (a multiple of 4).
    pub fn encoded_len(&self) -> usize {
        todo!()
    }

    /// Appends the preamble (type 0) and this header to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let _ = out;
        todo!()
    }
}

/// A parsed clear CAPWAP packet: header and payload, both borrowed from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub header: Header<'a>,
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Parses a datagram whose preamble is type 0.
    pub fn parse(buf: &'a [u8]) -> Result<Packet<'a>, ParseError> {
        let _ = buf;
        todo!()
    }
}
