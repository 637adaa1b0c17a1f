//! The seeded network of the deterministic simulation (tests/sim.rs): a virtual-time queue of
//! datagrams between a WTP and an AC that drops, duplicates, delays and reorders them until the
//! network heals. DTLS is a transparent channel here; its setup and teardown notices travel as
//! messages with the same delays and losses.

#![allow(dead_code)] // not every test file that includes `common` drives a network

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::Duration;

use wtpd::rng::Rng;
use wtpd::time::Instant;
use wtpd::wtp::Channel;

/// What travels between the two ends.
#[derive(Debug, Clone)]
pub enum Msg {
    ToAc {
        channel: Channel,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    ToWtp {
        channel: Channel,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    /// The DTLS handshake finished (seen by both ends).
    DtlsUp,
    /// The WTP closed its session (close_notify reaches the AC).
    WtpClosed,
    /// The AC closed the session (close_notify reaches the WTP).
    AcClosed,
}

#[derive(Debug)]
pub struct Event {
    pub at: Instant,
    pub order: u64,
    pub msg: Msg,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.order) == (o.at, o.order)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(o.at, o.order))
    }
}

/// The seeded network.
pub struct Net {
    pub rng: Rng,
    pub queue: BinaryHeap<Reverse<Event>>,
    pub order: u64,
    pub loss: f64,
    pub dup: f64,
    pub heal_at: Instant,
    pub delivered: u64,
    pub dropped: u64,
}

impl Net {
    /// A network seeded with `seed` that loses `loss` and duplicates `dup` of the datagrams
    /// until `heal_at`.
    pub fn new(seed: u64, loss: f64, dup: f64, heal_at: Instant) -> Net {
        Net {
            rng: Rng::new(seed),
            queue: BinaryHeap::new(),
            order: 0,
            loss,
            dup,
            heal_at,
            delivered: 0,
            dropped: 0,
        }
    }

    pub fn send(&mut self, now: Instant, msg: Msg) {
        let lossy = now < self.heal_at;
        if lossy && self.rng.chance(self.loss) {
            self.dropped += 1;
            return;
        }
        let copies = if lossy && self.rng.chance(self.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            // 1..40 ms, more when lossy: enough spread to reorder back-to-back packets.
            let spread = if lossy { 200 } else { 40 };
            let delay = Duration::from_millis(1 + self.rng.below(spread));
            self.order += 1;
            self.queue.push(Reverse(Event {
                at: now + delay,
                order: self.order,
                msg: msg.clone(),
            }));
        }
    }
}
