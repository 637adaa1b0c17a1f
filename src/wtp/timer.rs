//! The WTP's own timers in one table, as quinn-proto's `connection/timer.rs` keeps a
//! connection's: one enum names each timer and the RFC 5415 section that defines it, one array
//! holds the deadlines, and [`TimerTable::next_timeout`] is the earliest of them. The download
//! sub-machine ([`super::download::Download`]) and the retransmission of the outstanding
//! request ([`crate::reliable::Requester`], §4.5.3) keep their own and are asked beside it.

use crate::time::Instant;

/// A WTP timer (RFC 5415 §4.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The current state's timer: DiscoveryInterval (§4.7.5) in Discovery, WaitDTLS (§4.7.15)
    /// in DTLS Setup, SilentInterval (§4.7.13) in Sulking, DTLSSessionDelete (§4.7.6) in DTLS
    /// Teardown, and in Idle the wait before a failed download is retried.
    State = 0,
    /// EchoInterval (§4.7.7): an Echo Request is due (Image Data and Run, §2.3.1(j), (q)).
    Echo = 1,
    /// DataChannelKeepAlive (§4.7.2): a Data Channel Keep-Alive is due (Run).
    KeepAlive = 2,
    /// DataChannelDeadInterval (§4.7.3): no Keep-Alive came back from the AC in time (Run).
    DataDead = 3,
}

impl Timer {
    const COUNT: usize = 4;
}

/// The deadlines of the [`Timer`]s; `None` when a timer is stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerTable {
    at: [Option<Instant>; Timer::COUNT],
}

impl TimerTable {
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer as usize] = Some(at);
    }

    pub fn stop(&mut self, timer: Timer) {
        self.at[timer as usize] = None;
    }

    pub fn is_set(&self, timer: Timer) -> bool {
        self.at[timer as usize].is_some()
    }

    /// True (and the timer stopped) when `timer` is due at `now`.
    pub fn expire(&mut self, timer: Timer, now: Instant) -> bool {
        let due = self.at[timer as usize].is_some_and(|d| d <= now);
        if due {
            self.stop(timer);
        }
        due
    }

    /// The earliest deadline.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// Stops every timer.
    pub fn clear(&mut self) {
        self.at = [None; Timer::COUNT];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(s: u64) -> Instant {
        Instant::from_duration(Duration::from_secs(s))
    }

    #[test]
    fn the_earliest_deadline_is_next_and_expiry_stops_a_timer() {
        let mut t = TimerTable::default();
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::Echo, at(30));
        t.set(Timer::State, at(5));
        t.set(Timer::DataDead, at(60));
        assert_eq!(t.next_timeout(), Some(at(5)));
        assert!(!t.expire(Timer::Echo, at(29)));
        assert!(t.expire(Timer::State, at(5)));
        assert!(!t.is_set(Timer::State));
        assert_eq!(t.next_timeout(), Some(at(30)));
        t.clear();
        assert_eq!(t.next_timeout(), None);
    }
}
