//! CAPWAP wire format (RFC 5415 §4): bytes in, typed views out; typed values in, bytes out.
//!
//! Nothing here knows about states, sockets or time (except the reassembler, which is handed
//! `now`). Every parser returns an error on malformed input and never panics.
//!
//! Layers, outermost first:
//! - [`header`]: the 4-byte preamble and the transport header (flags, radio MAC, wireless info).
//! - [`fragment`]: splitting a packet into fragments and reassembling them, bounded.
//! - [`control`]: the control header (message type, sequence number, element length).
//! - [`element`]: the message elements (TLVs), typed, with unknown and vendor ones kept.
//! - [`msgtype`]: the message type numbers and result codes.
//! - [`builder`]: writing a whole control packet into a reusable buffer.
//! - [`keepalive`]: the Data Channel Keep-Alive, the data channel's one CAPWAP packet.
//! - [`vendor`] and [`fleet`]: this project's Vendor Specific elements and their values.

pub mod builder;
pub mod control;
pub mod element;
pub mod fleet;
pub mod fragment;
pub mod header;
pub mod keepalive;
pub mod msgtype;
pub mod vendor;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

pub use builder::PacketBuilder;
pub use control::ControlMessage;
pub use element::{Element, ElementIter, RawElement};
pub use header::{Header, Packet, Preamble};
pub use msgtype::{MessageType, ResultCode};

/// UDP port of the control channel.
pub const CONTROL_PORT: u16 = 5246;
/// UDP port of the data channel.
pub const DATA_PORT: u16 = 5247;

/// Which way a packet leaves: the control channel in clear or through DTLS, or the data
/// channel (RFC 5415 §3.1: each has its own UDP port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Control channel, in clear (Discovery).
    ControlClear,
    /// Control channel, through the DTLS session.
    ControlSecure,
    /// Data channel (keep-alives), to the AC's data port.
    Data,
}

/// Why bytes could not be read as CAPWAP. Each variant says what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer bytes than the structure needs.
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// Preamble version is not 0.
    BadVersion(u8),
    /// A length field that points past the buffer or is inconsistent.
    BadLength { what: &'static str, value: usize },
    /// A field holds a value the RFC does not allow.
    BadValue { what: &'static str, value: u32 },
    /// A string field that is not UTF-8.
    BadUtf8 { what: &'static str },
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Truncated { what, need, have } => {
                write!(f, "truncated {what}: need {need} bytes, have {have}")
            }
            ParseError::BadVersion(v) => write!(f, "unsupported CAPWAP version {v}"),
            ParseError::BadLength { what, value } => write!(f, "bad length {value} in {what}"),
            ParseError::BadValue { what, value } => write!(f, "bad value {value} in {what}"),
            ParseError::BadUtf8 { what } => write!(f, "{what} is not UTF-8"),
        }
    }
}

impl std::error::Error for ParseError {}

impl ParseError {
    /// A short, stable name for the kind of error, used to log each kind once and count it.
    pub fn kind(&self) -> &'static str {
        match self {
            ParseError::Truncated { .. } => "truncated",
            ParseError::BadVersion(_) => "bad-version",
            ParseError::BadLength { .. } => "bad-length",
            ParseError::BadValue { .. } => "bad-value",
            ParseError::BadUtf8 { .. } => "bad-utf8",
        }
    }
}

/// A bounds-checked cursor over a byte slice: every read returns `Truncated` instead of
/// panicking.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        match rest.get(..n) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(ParseError::Truncated {
                what: self.what,
                need: self.pos.saturating_add(n),
                have: self.buf.len(),
            }),
        }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ParseError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let r = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        r
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }
}

/// Rounds `n` up to a multiple of 4.
pub(crate) const fn pad4(n: usize) -> usize {
    (n + 3) & !3
}
