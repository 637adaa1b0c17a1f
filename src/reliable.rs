//! The reliable request/response layer of RFC 5415 §4.5.3, shared by the WTP and the AC.
//!
//! - [`Requester`]: one outstanding request at a time; retransmitted byte for byte after
//!   RetransmitInterval, the interval doubling each time but to no more than half the
//!   EchoInterval ([`next_interval`]); after MaxRetransmit retransmissions the peer is
//!   considered dead.
//! - [`Responder`]: the last response is cached; a request that repeats the last sequence number
//!   gets the cached response again without being processed a second time; an older one is
//!   dropped. Sequence numbers compare modulo 256.

use std::time::Duration;

use crate::time::Instant;

/// How sequence number `seq` relates to the last one processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOrder {
    /// Nothing processed yet, or `seq` is ahead (by 1..=127 modulo 256).
    New,
    /// The same number as the last processed request.
    Duplicate,
    /// Behind the last processed one.
    Old,
}

/// Compares a received sequence number with the last processed one, modulo 256.
pub fn seq_order(last: Option<u8>, seq: u8) -> SeqOrder {
    match last {
        None => SeqOrder::New,
        Some(l) if l == seq => SeqOrder::Duplicate,
        Some(l) => {
            if seq.wrapping_sub(l) < 128 {
                SeqOrder::New
            } else {
                SeqOrder::Old
            }
        }
    }
}

/// The wait before the next retransmission, after one of `current` (§4.5.3): "doubled every
/// subsequent time the same Request message is retransmitted, up to MaxRetransmit but no more
/// than half the EchoInterval timer". The cap never goes below `first`, the
/// RetransmitInterval the first retransmission waits: with an EchoInterval shorter than two
/// RetransmitIntervals (1 s against 3 s, say) the letter of the rule would retransmit faster
/// than the RFC's own first interval, which no reading of it intends.
pub fn next_interval(current: Duration, first: Duration, echo_interval: Duration) -> Duration {
    current
        .saturating_mul(2)
        .min((echo_interval / 2).max(first))
}

/// What [`Requester::on_timeout`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum RetransmitDecision<'a> {
    /// Nothing due yet.
    Wait,
    /// Send these bytes again; `count` is the number of retransmissions so far.
    Retransmit { packet: &'a [u8], count: u32 },
    /// MaxRetransmit reached without a response: the peer is dead.
    GiveUp { msg_type: u32 },
}

#[derive(Debug)]
struct Outstanding {
    msg_type: u32,
    seq: u8,
    packet: Vec<u8>,
    due: Instant,
    interval: Duration,
    retransmits: u32,
}

/// The sending side of §4.5.3.
#[derive(Debug)]
pub struct Requester {
    next_seq: u8,
    outstanding: Option<Outstanding>,
    /// Kept between requests so that a steady stream of requests does not allocate.
    spare: Vec<u8>,
    retransmit_interval: Duration,
    max_retransmit: u32,
    /// The EchoInterval in force, whose half caps the doubling.
    echo_interval: Duration,
}

impl Requester {
    /// `echo_interval` is the EchoInterval in force (§4.7.7: the WTP's, as configured or as
    /// the AC set it); [`set_echo_interval`](Self::set_echo_interval) changes it.
    pub fn new(
        retransmit_interval: Duration,
        max_retransmit: u32,
        echo_interval: Duration,
        first_seq: u8,
    ) -> Self {
        Requester {
            next_seq: first_seq,
            outstanding: None,
            spare: Vec::new(),
            retransmit_interval,
            max_retransmit,
            echo_interval,
        }
    }

    /// A new EchoInterval (the AC set one in Configuration Status Response or Configuration
    /// Update Request): later retransmissions are capped at half of it.
    pub fn set_echo_interval(&mut self, echo_interval: Duration) {
        self.echo_interval = echo_interval;
    }

    /// True while a request waits for its response.
    pub fn busy(&self) -> bool {
        self.outstanding.is_some()
    }

    /// The type of the request that waits, if any.
    pub fn outstanding_type(&self) -> Option<u32> {
        self.outstanding.as_ref().map(|o| o.msg_type)
    }

    /// The sequence number the next request will carry.
    pub fn next_seq(&self) -> u8 {
        self.next_seq
    }

    /// Records a request built with [`next_seq`](Self::next_seq) as outstanding and returns its
    /// bytes for sending. Returns `None`, recording nothing, while another request waits.
    pub fn send(&mut self, msg_type: u32, packet: &[u8], now: Instant) -> Option<&[u8]> {
        if self.outstanding.is_some() {
            return None;
        }
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        buf.extend_from_slice(packet);
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.outstanding = Some(Outstanding {
            msg_type,
            seq,
            packet: buf,
            due: now + self.retransmit_interval,
            interval: self.retransmit_interval,
            retransmits: 0,
        });
        self.outstanding.as_ref().map(|o| o.packet.as_slice())
    }

    /// Takes a response. True when it answers the outstanding request (type + 1, same sequence
    /// number); the request is then done.
    pub fn on_response(&mut self, msg_type: u32, seq: u8) -> bool {
        match &self.outstanding {
            Some(o) if o.msg_type.wrapping_add(1) == msg_type && o.seq == seq => {
                self.finish();
                true
            }
            _ => false,
        }
    }

    /// Forgets the outstanding request (teardown).
    pub fn cancel(&mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(o) = self.outstanding.take() {
            self.spare = o.packet;
        }
    }

    /// When the next retransmission is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outstanding.as_ref().map(|o| o.due)
    }

    /// Retransmits or gives up when the timer is due.
    pub fn on_timeout(&mut self, now: Instant) -> RetransmitDecision<'_> {
        let max = self.max_retransmit;
        let give_up = match &mut self.outstanding {
            None => return RetransmitDecision::Wait,
            Some(o) if now < o.due => return RetransmitDecision::Wait,
            Some(o) => o.retransmits >= max,
        };
        if give_up {
            let msg_type = self.outstanding.as_ref().map(|o| o.msg_type).unwrap_or(0);
            self.finish();
            return RetransmitDecision::GiveUp { msg_type };
        }
        let (first, echo) = (self.retransmit_interval, self.echo_interval);
        match &mut self.outstanding {
            Some(o) => {
                o.retransmits += 1;
                o.interval = next_interval(o.interval, first, echo);
                o.due = now + o.interval;
                RetransmitDecision::Retransmit {
                    packet: &o.packet,
                    count: o.retransmits,
                }
            }
            None => RetransmitDecision::Wait,
        }
    }
}

/// The receiving side of §4.5.3.
#[derive(Debug, Default)]
pub struct Responder {
    last_seq: Option<u8>,
    cached: Vec<u8>,
}

impl Responder {
    pub fn new() -> Self {
        Self::default()
    }

    /// How a request with this sequence number is to be treated.
    pub fn classify(&self, seq: u8) -> SeqOrder {
        seq_order(self.last_seq, seq)
    }

    /// The cached response to the last processed request.
    pub fn cached(&self) -> &[u8] {
        &self.cached
    }

    /// Records the response sent to request `seq`.
    pub fn record(&mut self, seq: u8, response: &[u8]) {
        self.last_seq = Some(seq);
        self.cached.clear();
        self.cached.extend_from_slice(response);
    }

    /// Forgets the peer's sequence space (a new session).
    pub fn reset(&mut self) {
        self.last_seq = None;
        self.cached.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Instant {
        Instant::from_duration(Duration::from_secs(s))
    }

    #[test]
    fn sequence_order_wraps_modulo_256() {
        assert_eq!(seq_order(None, 7), SeqOrder::New);
        assert_eq!(seq_order(Some(7), 7), SeqOrder::Duplicate);
        assert_eq!(seq_order(Some(7), 8), SeqOrder::New);
        assert_eq!(seq_order(Some(7), 6), SeqOrder::Old);
        assert_eq!(seq_order(Some(255), 0), SeqOrder::New);
        assert_eq!(seq_order(Some(0), 255), SeqOrder::Old);
        assert_eq!(seq_order(Some(10), 137), SeqOrder::New);
        assert_eq!(seq_order(Some(10), 138), SeqOrder::Old);
    }

    #[test]
    fn retransmits_identical_bytes_with_doubling_then_gives_up() {
        let mut r = Requester::new(Duration::from_secs(3), 5, Duration::from_secs(120), 250);
        assert_eq!(r.send(13, b"echo", at(0)), Some(&b"echo"[..]));
        assert!(
            r.send(13, b"again", at(0)).is_none(),
            "one outstanding request"
        );
        let mut due = r.poll_timeout().unwrap();
        let mut gaps = Vec::new();
        let mut last = at(0);
        for n in 1..=5 {
            assert_eq!(
                r.on_timeout(due - Duration::from_millis(1)),
                RetransmitDecision::Wait
            );
            match r.on_timeout(due) {
                RetransmitDecision::Retransmit { packet, count } => {
                    assert_eq!(packet, b"echo");
                    assert_eq!(count, n);
                }
                other => panic!("expected a retransmission, got {other:?}"),
            }
            gaps.push((due - last).as_secs());
            last = due;
            due = r.poll_timeout().unwrap();
        }
        assert_eq!(gaps, vec![3, 6, 12, 24, 48]);
        assert_eq!(
            r.on_timeout(due),
            RetransmitDecision::GiveUp { msg_type: 13 }
        );
        assert!(!r.busy());
        assert_eq!(r.next_seq(), 251);
    }

    /// §4.5.3: doubled, but no more than half the EchoInterval (and never below the first
    /// RetransmitInterval).
    fn gaps(echo: u64, first: u64) -> Vec<u64> {
        let mut r = Requester::new(Duration::from_secs(first), 5, Duration::from_secs(echo), 0);
        r.send(13, b"echo", at(0));
        let mut last = at(0);
        let mut out = Vec::new();
        while let Some(due) = r.poll_timeout() {
            out.push((due - last).as_secs());
            last = due;
            if let RetransmitDecision::GiveUp { .. } = r.on_timeout(due) {
                break;
            }
        }
        out
    }

    #[test]
    fn doubling_stops_at_half_the_echo_interval() {
        // The last gap is the wait after the fifth retransmission, before giving up.
        assert_eq!(gaps(30, 3), vec![3, 6, 12, 15, 15, 15]);
        assert_eq!(gaps(120, 3), vec![3, 6, 12, 24, 48, 60]);
        assert_eq!(gaps(1, 3), vec![3, 3, 3, 3, 3, 3]);
        let mut r = Requester::new(Duration::from_secs(3), 5, Duration::from_secs(120), 0);
        r.send(13, b"echo", at(0));
        r.set_echo_interval(Duration::from_secs(8));
        let due = r.poll_timeout().unwrap();
        r.on_timeout(due);
        assert_eq!(r.poll_timeout().unwrap() - due, Duration::from_secs(4));
    }

    #[test]
    fn only_the_matching_response_completes_a_request() {
        let mut r = Requester::new(Duration::from_secs(3), 5, Duration::from_secs(30), 255);
        r.send(3, b"join", at(0));
        assert!(!r.on_response(4, 0), "wrong sequence number");
        assert!(!r.on_response(6, 255), "wrong type");
        assert!(r.on_response(4, 255));
        assert!(!r.busy());
        assert_eq!(r.next_seq(), 0, "wraps");
        assert!(
            !r.on_response(4, 255),
            "a late duplicate response is ignored"
        );
    }

    #[test]
    fn responder_caches_the_last_response() {
        let mut s = Responder::new();
        assert_eq!(s.classify(3), SeqOrder::New);
        s.record(3, b"resp3");
        assert_eq!(s.classify(3), SeqOrder::Duplicate);
        assert_eq!(s.cached(), b"resp3");
        assert_eq!(s.classify(2), SeqOrder::Old);
        assert_eq!(s.classify(4), SeqOrder::New);
        s.reset();
        assert_eq!(s.classify(2), SeqOrder::New);
    }
}
