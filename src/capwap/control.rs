//! The control header (RFC 5415 §4.5.1).

use super::element::ElementIter;
use super::msgtype::MessageType;
use super::{ParseError, Reader};

/// Bytes of the control header: type (4), sequence (1), element length (2), flags (1).
pub const CONTROL_HEADER_LEN: usize = 8;

/// What the Msg Element Length field counts besides the elements: RFC 5415 §4.5.1.3 says it
/// is "the number of bytes following the Sequence Number field", i.e. the length field itself
/// (2), the flags (1) and the elements. OpenCAPWAP and SmartCAPWAP count it the same way.
pub const LENGTH_FIELD_OVERHEAD: usize = 3;

/// A control message, borrowed from the packet payload it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlMessage<'a> {
    /// The raw 32-bit Message Type (enterprise number << 8 | type).
    pub msg_type: u32,
    pub seq: u8,
    pub flags: u8,
    /// The message elements, exactly as long as the header's length field says.
    pub elements: &'a [u8],
}

impl<'a> ControlMessage<'a> {
    /// Parses a control header and checks that its element length fits the payload.
    ///
    /// Bytes after the declared elements are ignored.
    pub fn parse(payload: &'a [u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(payload, "control header");
        let msg_type = r.u32()?;
        let seq = r.u8()?;
        let len = r.u16()? as usize;
        let flags = r.u8()?;
        let elems_len = len
            .checked_sub(LENGTH_FIELD_OVERHEAD)
            .ok_or(ParseError::BadLength {
                what: "message element length",
                value: len,
            })?;
        let elements = r.take(elems_len).map_err(|_| ParseError::Truncated {
            what: "message elements",
            need: elems_len,
            have: r.remaining(),
        })?;
        Ok(ControlMessage {
            msg_type,
            seq,
            flags,
            elements,
        })
    }

    /// Appends the control header and the elements to `out`. Elements beyond what the 16-bit
    /// length can count are cut.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let elems = &self.elements[..self.elements.len().min(0xffff - LENGTH_FIELD_OVERHEAD)];
        out.extend_from_slice(&self.msg_type.to_be_bytes());
        out.push(self.seq);
        out.extend_from_slice(&((elems.len() + LENGTH_FIELD_OVERHEAD) as u16).to_be_bytes());
        out.push(self.flags);
        out.extend_from_slice(elems);
    }

    /// The message type, when it is one RFC 5415 defines (enterprise number 0).
    pub fn message_type(&self) -> Option<MessageType> {
        MessageType::from_u32(self.msg_type)
    }

    /// The elements as TLVs, in order.
    pub fn elements(&self) -> ElementIter<'a> {
        ElementIter::new(self.elements)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECHO: [u8; 13] = [0, 0, 0, 13, 0x2a, 0, 8, 0, 0x00, 0x21, 0x00, 0x01, 0x00];

    #[test]
    fn parses_known_bytes() {
        // Echo Request, seq 42, one 5-byte element: length = 5 + 3.
        let m = ControlMessage::parse(&ECHO).unwrap();
        assert_eq!(m.msg_type, 13);
        assert_eq!(m.message_type(), Some(MessageType::EchoRequest));
        assert_eq!(m.seq, 42);
        assert_eq!(m.flags, 0);
        assert_eq!(m.elements, &ECHO[8..]);
        let mut out = Vec::new();
        m.emit(&mut out);
        assert_eq!(out, ECHO);
    }

    #[test]
    fn declared_length_must_fit() {
        let mut long = ECHO;
        long[6] = 9; // one byte more than present
        assert!(matches!(
            ControlMessage::parse(&long),
            Err(ParseError::Truncated { .. })
        ));
        let mut short = ECHO;
        short[6] = 2; // less than the length field and flags
        assert!(matches!(
            ControlMessage::parse(&short),
            Err(ParseError::BadLength { value: 2, .. })
        ));
        for n in 0..ECHO.len() {
            assert!(ControlMessage::parse(&ECHO[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn trailing_bytes_are_ignored() {
        let mut buf = ECHO.to_vec();
        buf.extend_from_slice(&[0xff; 5]);
        let m = ControlMessage::parse(&buf).unwrap();
        assert_eq!(m.elements, &ECHO[8..]);
        assert_eq!(m.elements().count(), 1);
    }

    #[test]
    fn enterprise_types_are_kept_raw() {
        let mut buf = ECHO;
        buf[..4].copy_from_slice(&((14179u32 << 8) | 3).to_be_bytes());
        let m = ControlMessage::parse(&buf).unwrap();
        assert_eq!(m.msg_type, (14179 << 8) | 3);
        assert_eq!(m.message_type(), None);
    }
}
