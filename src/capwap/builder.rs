//! Writing a whole control packet (header, control header, elements) into a reusable buffer.

use super::control::{CONTROL_HEADER_LEN, LENGTH_FIELD_OVERHEAD};
use super::element::Element;
use super::header::Header;

/// Builds control packets without allocating once its buffer has grown to the largest packet.
#[derive(Debug, Default)]
pub struct PacketBuilder {
    buf: Vec<u8>,
    ctrl_start: usize,
}

impl PacketBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Clears the buffer and writes the transport header and a control header whose element
    /// length is patched by [`finish`](Self::finish).
    pub fn start(&mut self, header: &Header<'_>, msg_type: u32, seq: u8) -> &mut Self {
        self.buf.clear();
        header.emit(&mut self.buf);
        self.ctrl_start = self.buf.len();
        self.buf.extend_from_slice(&msg_type.to_be_bytes());
        self.buf.extend_from_slice(&[seq, 0, 0, 0]);
        self
    }

    /// Appends one element.
    pub fn element(&mut self, e: &Element<'_>) -> &mut Self {
        e.emit(&mut self.buf);
        self
    }

    /// Appends one element given as type and value.
    ///
    /// A value longer than 65535 bytes is cut.
    pub fn raw_element(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        let value = &value[..value.len().min(0xffff)];
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        self
    }

    /// Patches the element length and returns the packet.
    ///
    /// The length counts the bytes after the sequence number (RFC 5415 §4.5.1.3): the length
    /// field, the flags and the elements. Elements beyond what it can count are cut.
    pub fn finish(&mut self) -> &[u8] {
        let elems_start = self.ctrl_start + CONTROL_HEADER_LEN;
        if self.buf.len() < elems_start {
            // `start` was not called: there is no control header to patch.
            return &self.buf;
        }
        let max = elems_start + 0xffff - LENGTH_FIELD_OVERHEAD;
        self.buf.truncate(max);
        let len = (self.buf.len() - elems_start + LENGTH_FIELD_OVERHEAD) as u16;
        self.buf[self.ctrl_start + 5..self.ctrl_start + 7].copy_from_slice(&len.to_be_bytes());
        &self.buf
    }

    /// The packet as built so far (what [`finish`](Self::finish) returned last).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes the reusable buffer has allocated.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Builds a control packet with the default control header in one call.
pub fn build(msg_type: u32, seq: u8, elements: &[Element<'_>]) -> Vec<u8> {
    let mut b = PacketBuilder::new();
    b.start(&Header::control(), msg_type, seq);
    for e in elements {
        b.element(e);
    }
    b.finish().to_vec()
}
