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
        ReassemblyLimits {
            max_payload: 64 * 1024,
            max_pending: 4,
            timeout: Duration::from_secs(10),
        }
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

impl From<ParseError> for FragmentError {
    fn from(e: ParseError) -> Self {
        FragmentError::Parse(e)
    }
}

impl std::fmt::Display for FragmentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FragmentError::Inconsistent => write!(f, "inconsistent fragment"),
            FragmentError::TooLarge => write!(f, "reassembled packet too large"),
            FragmentError::Parse(e) => write!(f, "fragment: {e}"),
        }
    }
}

impl std::error::Error for FragmentError {}

/// One packet being reassembled.
#[derive(Debug)]
struct Partial {
    id: u16,
    /// When its first fragment arrived.
    started: Instant,
    /// The payload so far; bytes in no range of `have` are zero. Never longer than max_payload.
    data: Vec<u8>,
    /// Received byte ranges `[start, end)`, sorted, disjoint and not adjacent.
    have: Vec<(usize, usize)>,
    /// The payload length, known once the last fragment arrived.
    total: Option<usize>,
}

impl Partial {
    /// Adds `bytes` at `offset`; `Err` when it disagrees with bytes already held.
    fn add(&mut self, offset: usize, bytes: &[u8]) -> Result<(), FragmentError> {
        let end = offset + bytes.len();
        // Overlaps are allowed only where they repeat the same bytes (duplicates).
        for &(s, e) in &self.have {
            let (lo, hi) = (s.max(offset), e.min(end));
            if lo < hi && self.data.get(lo..hi) != bytes.get(lo - offset..hi - offset) {
                return Err(FragmentError::Inconsistent);
            }
        }
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        if let Some(dst) = self.data.get_mut(offset..end) {
            dst.copy_from_slice(bytes);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        // Insert the range, then merge ranges that touch or overlap.
        let pos = self.have.partition_point(|&(s, _)| s < offset);
        self.have.insert(pos, (offset, end));
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(self.have.len());
        for &(s, e) in &self.have {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.have = merged;
        Ok(())
    }

    fn complete(&self) -> bool {
        match self.total {
            Some(0) => true,
            Some(t) => self.have.as_slice() == [(0, t)],
            None => false,
        }
    }

    fn held(&self) -> usize {
        self.data.len()
    }
}

/// Collects fragments by Fragment ID and hands back whole payloads.
///
/// Memory is bounded: at most `max_pending` partial packets of at most `max_payload` bytes.
#[derive(Debug)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    pending: Vec<Partial>,
}

impl Reassembler {
    pub fn new(limits: ReassemblyLimits) -> Self {
        Reassembler {
            limits,
            pending: Vec::new(),
        }
    }

    /// Takes one fragment (a packet with the F flag). Returns the whole payload once every
    /// fragment has arrived.
    ///
    /// A packet without F is not a fragment: its payload is returned as it is. Partials older
    /// than the timeout are dropped first. A fragment that disagrees with what is held for its
    /// Fragment ID (overlapping different bytes, a second different end, data past the end, a
    /// non-last fragment whose length is not a multiple of 8) drops that partial and gives
    /// `Inconsistent`; one reaching past `max_payload` drops it and gives `TooLarge`. A new
    /// Fragment ID when `max_pending` partials are held drops the oldest.
    pub fn push(
        &mut self,
        pkt: &Packet<'_>,
        now: Instant,
    ) -> Result<Option<Vec<u8>>, FragmentError> {
        self.expire(now);
        let h = &pkt.header;
        if !h.fragment {
            return Ok(Some(pkt.payload.to_vec()));
        }
        let offset = h.fragment_offset as usize * 8;
        let end = offset + pkt.payload.len();
        let idx = self.pending.iter().position(|p| p.id == h.fragment_id);
        if end > self.limits.max_payload {
            self.drop_index(idx);
            return Err(FragmentError::TooLarge);
        }
        if !h.last_fragment && pkt.payload.len() % 8 != 0 {
            self.drop_index(idx);
            return Err(FragmentError::Inconsistent);
        }
        let idx = match idx {
            Some(i) => i,
            None => {
                if self.limits.max_pending == 0 {
                    return Err(FragmentError::TooLarge);
                }
                while self.pending.len() >= self.limits.max_pending {
                    let oldest = self
                        .pending
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, p)| p.started)
                        .map(|(i, _)| i);
                    self.drop_index(oldest);
                }
                self.pending.push(Partial {
                    id: h.fragment_id,
                    started: now,
                    data: Vec::new(),
                    have: Vec::new(),
                    total: None,
                });
                self.pending.len() - 1
            }
        };
        let Some(p) = self.pending.get_mut(idx) else {
            return Ok(None);
        };
        let consistent = if h.last_fragment {
            let ok = p.total.map_or(true, |t| t == end)
                && p.have.last().map_or(true, |&(_, e)| e <= end);
            p.total = Some(end);
            ok
        } else {
            p.total.map_or(true, |t| end <= t)
        };
        if !consistent || p.add(offset, pkt.payload).is_err() {
            self.drop_index(Some(idx));
            return Err(FragmentError::Inconsistent);
        }
        if p.complete() {
            let mut p = self.pending.swap_remove(idx);
            p.data.truncate(p.total.unwrap_or(0));
            return Ok(Some(p.data));
        }
        Ok(None)
    }

    /// Drops partials whose first fragment arrived more than `timeout` before `now`.
    pub fn expire(&mut self, now: Instant) {
        let timeout = self.limits.timeout;
        self.pending
            .retain(|p| now.saturating_since(p.started) <= timeout);
    }

    fn drop_index(&mut self, idx: Option<usize>) {
        if let Some(i) = idx {
            if i < self.pending.len() {
                self.pending.swap_remove(i);
            }
        }
    }

    /// Bytes held in partial packets.
    pub fn held_bytes(&self) -> usize {
        self.pending.iter().map(Partial::held).sum()
    }

    /// Packets being reassembled.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Drops every partial packet.
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

/// Splits `payload` into packets of at most `mtu` bytes (header included), each with
/// `header`'s options, the F flag, `fragment_id`, the offset, and L on the last. A payload that
/// fits is emitted as one packet without F. Packets are appended to `out`.
///
/// Every fragment but the last carries a multiple of 8 bytes (offsets count 8-byte units). If
/// the MTU leaves less than 8 bytes after the header, fragments carry 8 bytes anyway (and
/// exceed the MTU). A payload whose last offset would not fit the 13-bit field (more than
/// [`MAX_FRAGMENTED_PAYLOAD`] bytes) cannot be sent: nothing is appended.
pub fn fragment(
    header: &Header<'_>,
    payload: &[u8],
    mtu: usize,
    fragment_id: u16,
    out: &mut Vec<Vec<u8>>,
) {
    let mut h = *header;
    h.fragment = false;
    h.last_fragment = false;
    h.fragment_id = 0;
    h.fragment_offset = 0;
    let hlen = h.encoded_len();
    if hlen + payload.len() <= mtu {
        let mut p = Vec::with_capacity(hlen + payload.len());
        h.emit(&mut p);
        p.extend_from_slice(payload);
        out.push(p);
        return;
    }
    let room = (mtu.saturating_sub(hlen) & !7).max(8);
    let count = payload.len().div_ceil(room);
    if (count - 1) * room / 8 > MAX_FRAGMENT_OFFSET {
        return;
    }
    h.fragment = true;
    h.fragment_id = fragment_id;
    for (i, chunk) in payload.chunks(room).enumerate() {
        h.fragment_offset = (i * room / 8) as u16;
        h.last_fragment = i + 1 == count;
        let mut p = Vec::with_capacity(hlen + chunk.len());
        h.emit(&mut p);
        p.extend_from_slice(chunk);
        out.push(p);
    }
}

/// Largest Fragment Offset, in 8-byte units (13 bits).
pub const MAX_FRAGMENT_OFFSET: usize = 0x1fff;

/// Largest payload [`fragment`] can always split: the last fragment may start at offset
/// 8191 * 8; how much more fits depends on the MTU, so this counts only what any MTU allows.
pub const MAX_FRAGMENTED_PAYLOAD: usize = MAX_FRAGMENT_OFFSET * 8 + 8;
