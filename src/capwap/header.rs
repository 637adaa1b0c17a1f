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

#[cfg(test)]
mod tests {
    use super::*;

    fn all_headers() -> Vec<Header<'static>> {
        let macs: [Option<&'static [u8]>; 3] = [
            None,
            Some(&[1, 2, 3, 4, 5, 6]),
            Some(&[1, 2, 3, 4, 5, 6, 7, 8]),
        ];
        let infos: [Option<&'static [u8]>; 5] = [
            None,
            Some(&[]),
            Some(&[0xaa]),
            Some(&[1, 2, 3, 4]),
            Some(&[7; 100]),
        ];
        let mut v = Vec::new();
        for flags in 0..16u8 {
            for mac in macs {
                for wi in infos {
                    v.push(Header {
                        radio_id: 31 - flags,
                        wbid: flags % 4,
                        native_frame: flags & 1 != 0,
                        fragment: flags & 2 != 0,
                        last_fragment: flags & 4 != 0,
                        keep_alive: flags & 8 != 0,
                        reserved_flags: flags & 7,
                        fragment_id: 0xbeef ^ u16::from(flags),
                        fragment_offset: 0x1fff - u16::from(flags),
                        radio_mac: mac,
                        wireless_info: wi,
                    });
                }
            }
        }
        v
    }

    #[test]
    fn header_round_trips_every_flag_and_option() {
        for h in all_headers() {
            let mut buf = Vec::new();
            h.emit(&mut buf);
            assert_eq!(buf.len(), h.encoded_len());
            assert_eq!(buf.len() % 4, 0);
            assert_eq!(buf[0], 0x00, "preamble");
            assert_eq!((buf[1] >> 3) as usize * 4, buf.len(), "HLEN");
            buf.extend_from_slice(b"payload");
            let p = Packet::parse(&buf).unwrap();
            assert_eq!(p.header, h);
            assert_eq!(p.payload, b"payload");
            let mut again = Vec::new();
            p.emit(&mut again);
            assert_eq!(again, buf, "byte-identical re-emit");
        }
    }

    #[test]
    fn known_answer_control_header() {
        // HLEN 2, RID 0, WBID 1, no flags.
        let mut buf = Vec::new();
        Header::control().emit(&mut buf);
        assert_eq!(buf, [0x00, 0x10, 0x02, 0x00, 0, 0, 0, 0]);
        // HLEN 4, RID 1, WBID 1, F L M set, fragment id 0x1234, offset 3, 6-byte MAC.
        let bytes = [
            0x00, 0x20, 0x42, 0xd0, 0x12, 0x34, 0x00, 0x18, 6, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf, 0x00,
            0xde, 0xad,
        ];
        let p = Packet::parse(&bytes).unwrap();
        let h = p.header;
        assert_eq!((h.radio_id, h.wbid), (1, 1));
        assert!(h.fragment && h.last_fragment && !h.native_frame && !h.keep_alive);
        assert_eq!(h.fragment_id, 0x1234);
        assert_eq!(h.fragment_offset, 3);
        assert_eq!(h.radio_mac, Some(&[0xa, 0xb, 0xc, 0xd, 0xe, 0xf][..]));
        assert_eq!(h.wireless_info, None);
        assert_eq!(p.payload, [0xde, 0xad]);
        let mut out = Vec::new();
        p.emit(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn preamble_types_and_versions() {
        assert_eq!(preamble(&[0x00]), Ok(Preamble::Capwap));
        assert_eq!(preamble(&DTLS_HEADER), Ok(Preamble::Dtls));
        assert_eq!(preamble(&[0x10]), Err(ParseError::BadVersion(1)));
        assert!(matches!(
            preamble(&[0x02]),
            Err(ParseError::BadValue { value: 2, .. })
        ));
        assert!(matches!(preamble(&[]), Err(ParseError::Truncated { .. })));
        let mut dtls = DTLS_HEADER.to_vec();
        dtls.extend_from_slice(&[0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0]);
        assert_eq!(
            Packet::parse(&dtls),
            Err(ParseError::BadValue {
                what: "preamble type",
                value: 1
            })
        );
        let mut v1 = Vec::new();
        Header::control().emit(&mut v1);
        v1[0] = 0x10;
        assert_eq!(Packet::parse(&v1), Err(ParseError::BadVersion(1)));
    }

    #[test]
    fn hlen_must_cover_header_and_fit_buffer() {
        // HLEN 1 (4 bytes) is less than the fixed 8.
        assert!(matches!(
            Packet::parse(&[0x00, 0x08, 0x02, 0x00, 0, 0, 0, 0]),
            Err(ParseError::BadLength {
                what: "HLEN",
                value: 4
            })
        ));
        // HLEN 3 but only 8 bytes.
        assert!(matches!(
            Packet::parse(&[0x00, 0x18, 0x02, 0x00, 0, 0, 0, 0]),
            Err(ParseError::BadLength {
                what: "HLEN",
                value: 12
            })
        ));
        // M set, HLEN 2: no room for the MAC within HLEN, even with bytes after it.
        assert!(
            Packet::parse(&[0x00, 0x10, 0x02, 0x10, 0, 0, 0, 0, 6, 1, 2, 3, 4, 5, 6, 0]).is_err()
        );
        // M set, HLEN 4, MAC length 5: not EUI-48/64.
        assert!(matches!(
            Packet::parse(&[0x00, 0x20, 0x02, 0x10, 0, 0, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0]),
            Err(ParseError::BadLength {
                what: "radio MAC address",
                value: 5
            })
        ));
        // W set, HLEN 3, info length 4 needs 8 bytes.
        assert!(
            Packet::parse(&[0x00, 0x18, 0x02, 0x20, 0, 0, 0, 0, 4, 1, 2, 3, 4, 0, 0, 0]).is_err()
        );
        // Larger HLEN than the options need: extra header bytes are skipped.
        let p = Packet::parse(&[0x00, 0x18, 0x02, 0x00, 0, 0, 0, 0, 9, 9, 9, 9, 0xca]).unwrap();
        assert_eq!(p.payload, [0xca]);
    }

    #[test]
    fn every_truncation_errs_without_panic() {
        for h in all_headers() {
            let mut buf = Vec::new();
            h.emit(&mut buf);
            for n in 0..buf.len() {
                assert!(Packet::parse(&buf[..n]).is_err(), "prefix {n} of {h:?}");
            }
            assert!(Packet::parse(&buf).is_ok());
        }
    }

    #[test]
    fn oversized_options_are_cut_to_fit_hlen() {
        let wi = [0x77u8; 255];
        let h = Header {
            radio_mac: Some(&[1; 8]),
            wireless_info: Some(&wi),
            ..Header::control()
        };
        let mut buf = Vec::new();
        h.emit(&mut buf);
        assert_eq!(buf.len(), MAX_HEADER_LEN);
        assert_eq!(buf.len(), h.encoded_len());
        let p = Packet::parse(&buf).unwrap();
        assert_eq!(p.header.radio_mac, Some(&[1u8; 8][..]));
        assert_eq!(
            p.header.wireless_info.map(<[u8]>::len),
            Some(MAX_HEADER_LEN - 8 - 12 - 1)
        );
    }
}
