//! The control header (RFC 5415 §4.5.1).

use super::element::ElementIter;
use super::msgtype::MessageType;
use super::ParseError;

/// Bytes of the control header: type (4), sequence (1), element length (2), flags (1).
pub const CONTROL_HEADER_LEN: usize = 8;

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
    pub fn parse(payload: &'a [u8]) -> Result<Self, ParseError> {
        let _ = payload;
        todo!()
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
