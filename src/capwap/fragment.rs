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
            let ok =
                p.total.is_none_or(|t| t == end) && p.have.last().is_none_or(|&(_, e)| e <= end);
            p.total = Some(end);
            ok
        } else {
            p.total.is_none_or(|t| end <= t)
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
    // An empty payload is one packet whatever the MTU: there is nothing to cut, and counting
    // zero fragments below would underflow (found by fuzz/fuzz_targets/fragment.rs).
    if payload.is_empty() || hlen + payload.len() <= mtu {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capwap::testutil::Rng;

    fn at(secs: u64) -> Instant {
        Instant::from_duration(Duration::from_secs(secs))
    }

    fn frags(payload: &[u8], mtu: usize, id: u16) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        fragment(&Header::control(), payload, mtu, id, &mut out);
        out
    }

    fn push(
        r: &mut Reassembler,
        bytes: &[u8],
        now: Instant,
    ) -> Result<Option<Vec<u8>>, FragmentError> {
        r.push(&Packet::parse(bytes).unwrap(), now)
    }

    /// A hand-made fragment: offset in bytes (multiple of 8).
    fn frag(id: u16, offset: usize, last: bool, data: &[u8]) -> Vec<u8> {
        let h = Header {
            fragment: true,
            last_fragment: last,
            fragment_id: id,
            fragment_offset: (offset / 8) as u16,
            ..Header::control()
        };
        let mut v = Vec::new();
        h.emit(&mut v);
        v.extend_from_slice(data);
        v
    }

    fn payload(n: usize) -> Vec<u8> {
        Rng::new(n as u64).bytes(n)
    }

    #[test]
    fn small_payload_is_one_unfragmented_packet() {
        let p = payload(100);
        let out = frags(&p, 1400, 7);
        assert_eq!(out.len(), 1);
        let pkt = Packet::parse(&out[0]).unwrap();
        assert!(!pkt.header.fragment && !pkt.header.last_fragment);
        assert_eq!(pkt.payload, p);
        // Exactly the MTU still fits.
        assert_eq!(frags(&payload(1392), 1400, 7).len(), 1);
        assert_eq!(frags(&payload(1393), 1400, 7).len(), 2);
    }

    #[test]
    fn fragments_fit_mtu_and_align_to_8() {
        let p = payload(5000);
        let out = frags(&p, 1400, 0x4242);
        assert_eq!(out.len(), 4);
        let mut expect_offset = 0;
        for (i, b) in out.iter().enumerate() {
            assert!(b.len() <= 1400);
            let pkt = Packet::parse(b).unwrap();
            let h = pkt.header;
            assert!(h.fragment);
            assert_eq!(h.fragment_id, 0x4242);
            assert_eq!(h.last_fragment, i == out.len() - 1);
            assert_eq!(h.fragment_offset as usize * 8, expect_offset);
            if !h.last_fragment {
                assert_eq!(pkt.payload.len() % 8, 0);
            }
            assert_eq!(
                pkt.payload,
                &p[expect_offset..expect_offset + pkt.payload.len()]
            );
            expect_offset += pkt.payload.len();
        }
        assert_eq!(expect_offset, 5000);
    }

    #[test]
    fn options_are_carried_on_every_fragment() {
        let h = Header {
            radio_mac: Some(&[1, 2, 3, 4, 5, 6]),
            radio_id: 2,
            ..Header::control()
        };
        let mut out = Vec::new();
        fragment(&h, &payload(3000), 1000, 9, &mut out);
        assert!(out.len() > 1);
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut got = None;
        for b in &out {
            assert!(b.len() <= 1000);
            let pkt = Packet::parse(b).unwrap();
            assert_eq!(pkt.header.radio_mac, h.radio_mac);
            assert_eq!(pkt.header.radio_id, 2);
            got = r.push(&pkt, at(0)).unwrap();
        }
        assert_eq!(got.unwrap(), payload(3000));
    }

    #[test]
    fn reassembles_in_any_order_with_duplicates() {
        let p = payload(5000);
        let out = frags(&p, 1400, 1);
        let mut rng = Rng::new(5415);
        for round in 0..200 {
            let mut order: Vec<usize> = (0..out.len()).collect();
            // Every order of the first rounds' permutations, plus random duplicates.
            rng.shuffle(&mut order);
            for _ in 0..rng.below(4) {
                let dup = order[rng.below(order.len())];
                let at_pos = rng.below(order.len());
                order.insert(at_pos, dup);
            }
            let mut r = Reassembler::new(ReassemblyLimits::default());
            let mut done = Vec::new();
            for &i in &order {
                if let Some(whole) = push(&mut r, &out[i], at(0)).unwrap() {
                    done.push(whole);
                }
            }
            // Duplicates after completion start a new partial; the packet completes once.
            assert_eq!(done.len(), 1, "round {round}: {order:?}");
            assert_eq!(done[0], p);
        }
    }

    #[test]
    fn all_permutations_of_four_fragments() {
        let p = payload(5000);
        let out = frags(&p, 1400, 1);
        assert_eq!(out.len(), 4);
        let mut count = 0;
        for a in 0..4 {
            for b in 0..4 {
                for c in 0..4 {
                    for d in 0..4 {
                        let order = [a, b, c, d];
                        if (0..4).any(|i| !order.contains(&i)) {
                            continue;
                        }
                        let mut r = Reassembler::new(ReassemblyLimits::default());
                        let results: Vec<_> = order
                            .iter()
                            .map(|&i| push(&mut r, &out[i], at(0)).unwrap())
                            .collect();
                        assert!(results[..3].iter().all(Option::is_none));
                        assert_eq!(results[3].as_deref(), Some(&p[..]));
                        assert_eq!(r.held_bytes(), 0);
                        count += 1;
                    }
                }
            }
        }
        assert_eq!(count, 24);
    }

    #[test]
    fn disagreeing_overlap_is_rejected() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        assert_eq!(push(&mut r, &frag(1, 0, false, &[1; 16]), at(0)), Ok(None));
        // Same range, different bytes.
        assert_eq!(
            push(&mut r, &frag(1, 8, false, &[2; 8]), at(0)),
            Err(FragmentError::Inconsistent)
        );
        assert_eq!(r.pending(), 0, "the partial is dropped");
        // Agreeing overlap is fine.
        assert_eq!(push(&mut r, &frag(2, 0, false, &[1; 16]), at(0)), Ok(None));
        assert_eq!(push(&mut r, &frag(2, 8, false, &[1; 16]), at(0)), Ok(None));
        assert_eq!(
            push(&mut r, &frag(2, 24, true, &[3; 3]), at(0)),
            Ok(Some([[1; 24].as_slice(), &[3; 3]].concat()))
        );
    }

    #[test]
    fn inconsistent_ends_are_rejected() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        assert_eq!(push(&mut r, &frag(1, 16, true, &[1; 4]), at(0)), Ok(None));
        // A second, different last fragment.
        assert_eq!(
            push(&mut r, &frag(1, 8, true, &[1; 4]), at(0)),
            Err(FragmentError::Inconsistent)
        );
        // Data past the announced end.
        assert_eq!(
            push(&mut r, &frag(2, 0, true, &[1; 4]), at(0)),
            Ok(Some(vec![1; 4]))
        );
        assert_eq!(push(&mut r, &frag(3, 8, true, &[1; 4]), at(0)), Ok(None));
        assert_eq!(
            push(&mut r, &frag(3, 16, false, &[1; 8]), at(0)),
            Err(FragmentError::Inconsistent)
        );
        // A last fragment before data already held.
        assert_eq!(push(&mut r, &frag(4, 16, false, &[1; 8]), at(0)), Ok(None));
        assert_eq!(
            push(&mut r, &frag(4, 8, true, &[1; 4]), at(0)),
            Err(FragmentError::Inconsistent)
        );
        // A non-last fragment whose length is not a multiple of 8.
        assert_eq!(
            push(&mut r, &frag(5, 0, false, &[1; 9]), at(0)),
            Err(FragmentError::Inconsistent)
        );
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn too_large_is_rejected() {
        let limits = ReassemblyLimits {
            max_payload: 4096,
            ..Default::default()
        };
        let mut r = Reassembler::new(limits);
        assert_eq!(
            push(&mut r, &frag(1, 4096 - 8, false, &[0; 8]), at(0)),
            Ok(None)
        );
        assert_eq!(
            push(&mut r, &frag(1, 4096, true, &[0; 1]), at(0)),
            Err(FragmentError::TooLarge)
        );
        assert_eq!(r.pending(), 0);
        assert_eq!(
            push(&mut r, &frag(2, 8191 * 8, true, &[0; 8]), at(0)),
            Err(FragmentError::TooLarge)
        );
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn oldest_partial_is_dropped_beyond_max_pending() {
        let limits = ReassemblyLimits {
            max_pending: 2,
            ..Default::default()
        };
        let mut r = Reassembler::new(limits);
        assert_eq!(push(&mut r, &frag(1, 0, false, &[1; 8]), at(0)), Ok(None));
        assert_eq!(push(&mut r, &frag(2, 0, false, &[2; 8]), at(1)), Ok(None));
        assert_eq!(push(&mut r, &frag(3, 0, false, &[3; 8]), at(2)), Ok(None));
        assert_eq!(r.pending(), 2);
        // 1 was dropped: its last fragment alone does not complete it.
        assert_eq!(push(&mut r, &frag(1, 8, true, &[1; 1]), at(3)), Ok(None));
        // 3 survived (2 was the oldest when 1 came back).
        assert_eq!(
            push(&mut r, &frag(3, 8, true, &[3; 1]), at(3)),
            Ok(Some([[3; 8].as_slice(), &[3]].concat()))
        );
    }

    #[test]
    fn partials_time_out() {
        let limits = ReassemblyLimits {
            timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let mut r = Reassembler::new(limits);
        assert_eq!(push(&mut r, &frag(1, 0, false, &[1; 8]), at(100)), Ok(None));
        assert_eq!(push(&mut r, &frag(2, 0, false, &[2; 8]), at(105)), Ok(None));
        assert_eq!(r.held_bytes(), 16);
        // At 111, partial 1 is 11 s old: dropped before the push, so this does not complete it.
        assert_eq!(push(&mut r, &frag(1, 8, true, &[1; 1]), at(111)), Ok(None));
        assert_eq!(
            push(&mut r, &frag(2, 8, true, &[2; 1]), at(111)),
            Ok(Some([[2; 8].as_slice(), &[2]].concat()))
        );
        r.expire(at(200));
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn unfragmented_packet_passes_through() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let out = frags(b"hello", 1400, 0);
        assert_eq!(push(&mut r, &out[0], at(0)), Ok(Some(b"hello".to_vec())));
    }

    #[test]
    fn random_fragments_keep_memory_bounded() {
        let limits = ReassemblyLimits {
            max_payload: 3000,
            max_pending: 3,
            timeout: Duration::from_secs(5),
        };
        let bound = limits.max_payload * limits.max_pending;
        let mut r = Reassembler::new(limits);
        let mut rng = Rng::new(0xfeed);
        let mut completed = 0;
        for step in 0..200_000u64 {
            let id = rng.below(6) as u16;
            let offset = rng.below(400) * 8;
            let len = if rng.below(2) == 0 {
                rng.below(64) * 8
            } else {
                rng.below(600)
            };
            let last = rng.below(4) == 0;
            // Data derived from the position so that honest overlaps agree.
            let data: Vec<u8> = (offset..offset + len)
                .map(|i| (i as u8) ^ (id as u8))
                .collect();
            let now = at(step / 1000);
            if let Ok(Some(p)) = push(&mut r, &frag(id, offset, last, &data), now) {
                assert!(p.len() <= 3000);
                assert!(p
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == (i as u8) ^ (id as u8)));
                completed += 1;
            }
            assert!(r.held_bytes() <= bound, "held {} > {bound}", r.held_bytes());
            assert!(r.pending() <= 3);
        }
        assert!(completed > 0, "some random sequences complete");
    }

    #[test]
    fn unrepresentable_payload_emits_nothing() {
        let big = vec![0u8; 70_000];
        let mut out = Vec::new();
        fragment(&Header::control(), &big, 64, 1, &mut out);
        assert!(out.is_empty());
        // The largest control message (8 + 65532 bytes) fragments at a small MTU.
        let max = vec![7u8; 8 + 0xffff - 3];
        fragment(&Header::control(), &max, 576, 1, &mut out);
        let mut r = Reassembler::new(ReassemblyLimits {
            max_payload: 70_000,
            ..Default::default()
        });
        let got = out
            .iter()
            .filter_map(|b| push(&mut r, b, at(0)).unwrap())
            .next();
        assert_eq!(got, Some(max));
    }

    #[test]
    fn empty_payload_below_the_header_mtu_is_one_packet() {
        // Regression (fuzz target `fragment`): an MTU smaller than the header with nothing to
        // send panicked on `count - 1` with count 0.
        for mtu in [0, 1, 7] {
            let out = frags(&[], mtu, 5);
            assert_eq!(out.len(), 1, "mtu {mtu}");
            let p = Packet::parse(&out[0]).unwrap();
            assert!(!p.header.fragment);
            assert!(p.payload.is_empty());
        }
    }
}
