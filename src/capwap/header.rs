//! The CAPWAP preamble and transport header (RFC 5415 §4.1, §4.2, §4.3).

use super::{pad4, ParseError, Reader};

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
    let b = *buf.first().ok_or(ParseError::Truncated {
        what: "preamble",
        need: 1,
        have: 0,
    })?;
    let version = b >> 4;
    if version != 0 {
        return Err(ParseError::BadVersion(version));
    }
    match b & 0x0f {
        0 => Ok(Preamble::Capwap),
        1 => Ok(Preamble::Dtls),
        t => Err(ParseError::BadValue {
            what: "preamble type",
            value: u32::from(t),
        }),
    }
}

/// Largest header HLEN can describe: 31 words.
pub const MAX_HEADER_LEN: usize = 31 * 4;

/// Bytes of the fixed part of the header (preamble included).
pub const FIXED_HEADER_LEN: usize = 8;

// Flag bits in the first 32-bit word of the header.
const FLAG_T: u32 = 1 << 8;
const FLAG_F: u32 = 1 << 7;
const FLAG_L: u32 = 1 << 6;
const FLAG_W: u32 = 1 << 5;
const FLAG_M: u32 = 1 << 4;
const FLAG_K: u32 = 1 << 3;

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
    ///
    /// HLEN can describe at most [`MAX_HEADER_LEN`] bytes: a radio MAC or wireless information
    /// that would not fit is cut to fit (both here and in [`emit`](Self::emit)).
    pub fn encoded_len(&self) -> usize {
        let (mac, wi) = self.fitted();
        FIXED_HEADER_LEN
            + mac.map_or(0, |m| pad4(1 + m.len()))
            + wi.map_or(0, |w| pad4(1 + w.len()))
    }

    /// The optional fields, cut so that the header fits HLEN's 5 bits and each length its byte.
    fn fitted(&self) -> (Option<&'a [u8]>, Option<&'a [u8]>) {
        let room = MAX_HEADER_LEN - FIXED_HEADER_LEN;
        // Each field takes 1 length byte + data, padded; `room` is a multiple of 4, so a field
        // of n data bytes fits in r bytes when n + 1 <= r.
        let mac = self.radio_mac.map(|m| &m[..m.len().min(255).min(room - 1)]);
        let used = mac.map_or(0, |m| pad4(1 + m.len()));
        let wi = match self.wireless_info {
            Some(w) if room > used => Some(&w[..w.len().min(255).min(room - used - 1)]),
            _ => None,
        };
        (mac, wi)
    }

    /// Appends the preamble (type 0) and this header to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let (mac, wi) = self.fitted();
        let hlen = self.encoded_len() / 4;
        let mut w: u32 = (hlen as u32 & 0x1f) << 19
            | (u32::from(self.radio_id) & 0x1f) << 14
            | (u32::from(self.wbid) & 0x1f) << 9
            | u32::from(self.reserved_flags) & 0x07;
        for (on, bit) in [
            (self.native_frame, FLAG_T),
            (self.fragment, FLAG_F),
            (self.last_fragment, FLAG_L),
            (wi.is_some(), FLAG_W),
            (mac.is_some(), FLAG_M),
            (self.keep_alive, FLAG_K),
        ] {
            if on {
                w |= bit;
            }
        }
        out.extend_from_slice(&w.to_be_bytes());
        out.extend_from_slice(&self.fragment_id.to_be_bytes());
        out.extend_from_slice(&((self.fragment_offset & 0x1fff) << 3).to_be_bytes());
        for field in [mac, wi].into_iter().flatten() {
            let start = out.len();
            out.push(field.len() as u8);
            out.extend_from_slice(field);
            out.resize(start + pad4(1 + field.len()), 0);
        }
    }

    /// Parses the preamble and header at the start of `buf`; returns the header and its length
    /// in bytes (HLEN * 4).
    pub fn parse(buf: &'a [u8]) -> Result<(Header<'a>, usize), ParseError> {
        match preamble(buf)? {
            Preamble::Capwap => {}
            Preamble::Dtls => {
                return Err(ParseError::BadValue {
                    what: "preamble type",
                    value: 1,
                })
            }
        }
        let mut r = Reader::new(buf, "CAPWAP header");
        let w = r.u32()?;
        let fragment_id = r.u16()?;
        let frag = r.u16()?;
        let hlen = ((w >> 19) & 0x1f) as usize * 4;
        if hlen < FIXED_HEADER_LEN || hlen > buf.len() {
            return Err(ParseError::BadLength {
                what: "HLEN",
                value: hlen,
            });
        }
        // The optional fields must lie within HLEN.
        let mut r = Reader::new(
            buf.get(FIXED_HEADER_LEN..hlen).unwrap_or(&[]),
            "header options",
        );
        let mut field = |what: &'static str| -> Result<&'a [u8], ParseError> {
            let len = r.u8()? as usize;
            let data = r.take(len)?;
            r.take(pad4(1 + len) - 1 - len)
                .map_err(|_| ParseError::BadLength { what, value: len })?;
            Ok(data)
        };
        let radio_mac = if w & FLAG_M != 0 {
            let mac = field("radio MAC address")?;
            if mac.len() != 6 && mac.len() != 8 {
                return Err(ParseError::BadLength {
                    what: "radio MAC address",
                    value: mac.len(),
                });
            }
            Some(mac)
        } else {
            None
        };
        let wireless_info = if w & FLAG_W != 0 {
            Some(field("wireless specific information")?)
        } else {
            None
        };
        let header = Header {
            radio_id: ((w >> 14) & 0x1f) as u8,
            wbid: ((w >> 9) & 0x1f) as u8,
            native_frame: w & FLAG_T != 0,
            fragment: w & FLAG_F != 0,
            last_fragment: w & FLAG_L != 0,
            keep_alive: w & FLAG_K != 0,
            reserved_flags: (w & 0x07) as u8,
            fragment_id,
            fragment_offset: frag >> 3,
            radio_mac,
            wireless_info,
        };
        Ok((header, hlen))
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
    ///
    /// A DTLS preamble (type 1) gives `BadValue`: unwrap the record first. Bytes between the
    /// optional fields and HLEN are skipped.
    pub fn parse(buf: &'a [u8]) -> Result<Packet<'a>, ParseError> {
        let (header, hlen) = Header::parse(buf)?;
        let payload = buf.get(hlen..).unwrap_or(&[]);
        Ok(Packet { header, payload })
    }

    /// Appends the header and payload to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        self.header.emit(out);
        out.extend_from_slice(self.payload);
    }
}
