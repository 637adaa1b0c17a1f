//! Writing a whole control packet (header, control header, elements) into a reusable buffer.

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
        let _ = (header, msg_type, seq, &mut self.buf, &mut self.ctrl_start);
        todo!()
    }

    /// Appends one element.
    pub fn element(&mut self, e: &Element<'_>) -> &mut Self {
        let _ = e;
        todo!()
    }

    /// Appends one element given as type and value.
    pub fn raw_element(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        let _ = (typ, value);
        todo!()
    }

    /// Patches the element length and returns the packet.
    pub fn finish(&mut self) -> &[u8] {
        todo!()
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
