//! Fragmentation and reassembly (RFC 5415 §3.4), with limits on what reassembly may hold.

use std::time::Duration;

use super::header::{Header, Packet};
use super::ParseError;
use crate::time::Instant;

/// How much a [`Reassembler`] may hold.
#[derive(Debug, Clone, Copy)]
pub struct ReassemblyLimits {
    /// Largest reassembled payload, in bytes.
    pub max_payload: usize,
    /// Packets being reassembled at once; the oldest is dropped for a new one.
    pub max_pending: usize,
    /// A partial packet older than this is dropped.
    pub timeout: Duration,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits { max_payload: 64 * 1024, max_pending: 4, timeout: Duration::from_secs(10) }
    }
}

/// Why a fragment was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FragmentError {
    /// Offsets or lengths that overlap, or run past the announced end.
    Inconsistent,
    /// The packet would exceed `max_payload`.
    TooLarge,
    Parse(ParseError),
}

/// Collects fragments by Fragment ID and hands back whole payloads.
#[derive(Debug)]
pub struct Reassembler {
    limits: ReassemblyLimits,
}

impl Reassembler {
    pub fn new(limits: ReassemblyLimits) -> Self {
        Reassembler { limits }
    }

    /// Takes one fragment (a packet with the F flag). Returns the whole payload once every
    /// fragment has arrived.
    pub fn push(&mut self, pkt: &Packet<'_>, now: Instant) -> Result<Option<Vec<u8>>, FragmentError> {
        let _ = (pkt, now, &self.limits);
        todo!()
    }

    /// Bytes held in partial packets.
    pub fn held_bytes(&self) -> usize {
        todo!()
    }
}

/// Splits `payload` into packets of at most `mtu` bytes (header included), each with
/// `header`'s options, the F flag, `fragment_id`, the offset, and L on the last. A payload that
/// fits is emitted as one packet without F. Packets are appended to `out`.
pub fn fragment(header: &Header<'_>, payload: &[u8], mtu: usize, fragment_id: u16, out: &mut Vec<Vec<u8>>) {
    let _ = (header, payload, mtu, fragment_id, out);
    todo!()
}
