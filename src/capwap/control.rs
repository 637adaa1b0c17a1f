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
