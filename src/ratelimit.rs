//! Rate limiting of log lines that a peer can cause one datagram at a time.
//!
//! A warning such as "DTLS handshake with X failed" is worth a line; twenty thousand of them,
//! because someone sends twenty thousand bad datagrams, bury the log and cost the CPU the
//! attacker wanted to spend. [`RateLimiter`] lets a few lines of each kind through per window,
//! a few per peer and kind, counts the rest, and hands back a [`Summary`] ("N more suppressed")
//! when the kind's window ends.
//!
//! Memory is bounded whatever the peers do: per kind, at most `max_peers` peers are tracked
//! (a peer beyond that is treated as over its budget), and a kind's state is dropped when its
//! window ends. Kinds are the `&'static str`s of the call sites, so there are few of them.
//!
//! Sans-IO like the core: it takes an [`Instant`] and returns decisions; the runtime logs.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use crate::time::Instant;

/// How many lines get through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Counting starts at a kind's first line and ends this much later.
    pub window: Duration,
    /// Lines of one kind per window, whatever the peer (a flood from many spoofed ports).
    pub per_kind: u32,
    /// Lines of one kind from one peer per window.
    pub per_peer: u32,
    /// Peers tracked per kind; further peers count as over their budget.
    pub max_peers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            window: Duration::from_secs(60),
            per_kind: 10,
            per_peer: 3,
            max_peers: 256,
        }
    }
}

/// The end of a window in which lines were suppressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub kind: &'static str,
    /// Lines not logged in the window.
    pub suppressed: u64,
    /// How long the window lasted.
    pub window: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} more suppressed in the last {}s",
            self.kind,
            self.suppressed,
            self.window.as_secs()
        )
    }
}

/// What [`RateLimiter::check`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Log this line.
    pub log: bool,
    /// The kind's previous window ended with suppressed lines: log this first.
    pub ended: Option<Summary>,
}

#[derive(Debug)]
struct KindState<P> {
    kind: &'static str,
    start: Instant,
    logged: u32,
    suppressed: u64,
    /// Lines logged per peer in this window.
    peers: HashMap<P, u32>,
}

/// Per-kind, per-peer line budgets. `P` identifies a peer (a socket address).
#[derive(Debug)]
pub struct RateLimiter<P> {
    limits: Limits,
    kinds: Vec<KindState<P>>,
}

impl<P: Eq + Hash + Copy> RateLimiter<P> {
    pub fn new(limits: Limits) -> Self {
        RateLimiter {
            limits,
            kinds: Vec::new(),
        }
    }

    /// Whether a line of `kind` about `peer` may be logged at `now`.
    pub fn check(&mut self, kind: &'static str, peer: P, now: Instant) -> Check {
        let limits = self.limits;
        let mut ended = None;
        let i = match self.kinds.iter().position(|k| k.kind == kind) {
            Some(i) => {
                if now.saturating_since(self.kinds[i].start) >= limits.window {
                    // A window ended: report it, and give the state's memory back.
                    let old = self.kinds.swap_remove(i);
                    ended = summary(&old, now);
                    self.kinds.push(fresh(kind, now));
                    self.kinds.len() - 1
                } else {
                    i
                }
            }
            None => {
                self.kinds.push(fresh(kind, now));
                self.kinds.len() - 1
            }
        };
        let k = &mut self.kinds[i];
        let tracked = k.peers.len() < limits.max_peers || k.peers.contains_key(&peer);
        let mine = k.peers.get(&peer).copied().unwrap_or(0);
        let log = k.logged < limits.per_kind && tracked && mine < limits.per_peer;
        if log {
            k.logged += 1;
            *k.peers.entry(peer).or_insert(0) += 1;
        } else {
            k.suppressed += 1;
        }
        Check { log, ended }
    }

    /// Ends the windows that are over at `now`: the summaries of those that suppressed
    /// lines, in no particular order. Call it now and then, so that the last "N more
    /// suppressed" of a flood that stopped is logged too.
    pub fn expire(&mut self, now: Instant) -> Vec<Summary> {
        let window = self.limits.window;
        let mut out = Vec::new();
        self.kinds.retain(|k| {
            if now.saturating_since(k.start) < window {
                return true;
            }
            out.extend(summary(k, now));
            false
        });
        out
    }

    /// Ends every window now (at exit).
    pub fn finish(&mut self, now: Instant) -> Vec<Summary> {
        self.kinds
            .drain(..)
            .filter_map(|k| summary(&k, now))
            .collect()
    }

    /// When the next window ends, if one is open.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.kinds
            .iter()
            .map(|k| k.start + self.limits.window)
            .min()
    }

    /// Peers tracked over all kinds (for tests of the bound).
    pub fn tracked_peers(&self) -> usize {
        self.kinds.iter().map(|k| k.peers.len()).sum()
    }
}

fn fresh<P>(kind: &'static str, now: Instant) -> KindState<P> {
    KindState {
        kind,
        start: now,
        logged: 0,
        suppressed: 0,
        peers: HashMap::new(),
    }
}

fn summary<P>(k: &KindState<P>, now: Instant) -> Option<Summary> {
    (k.suppressed > 0).then(|| Summary {
        kind: k.kind,
        suppressed: k.suppressed,
        window: now.saturating_since(k.start),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_duration(Duration::from_millis(ms))
    }

    fn limits() -> Limits {
        Limits {
            window: Duration::from_secs(10),
            per_kind: 5,
            per_peer: 2,
            max_peers: 4,
        }
    }

    #[test]
    fn a_flood_from_one_peer_gives_its_budget_then_one_summary() {
        let mut r = RateLimiter::new(limits());
        let logged = (0..20_000)
            .filter(|i| r.check("handshake failed", 1u32, at(*i / 10)).log)
            .count();
        assert_eq!(logged, 2);
        assert!(r.expire(at(9_999)).is_empty(), "the window is still open");
        let s = r.expire(at(10_000));
        assert_eq!(
            s,
            vec![Summary {
                kind: "handshake failed",
                suppressed: 19_998,
                window: Duration::from_secs(10),
            }]
        );
        assert_eq!(
            s[0].to_string(),
            "handshake failed: 19998 more suppressed in the last 10s"
        );
        assert!(r.expire(at(30_000)).is_empty(), "reported once");
        assert_eq!(r.next_expiry(), None);
    }

    #[test]
    fn many_peers_share_the_kind_budget_and_the_table_is_bounded() {
        let mut r = RateLimiter::new(limits());
        let logged = (0..3000u32)
            .filter(|p| r.check("too many sessions", *p, at(1)).log)
            .count();
        assert_eq!(logged, 4, "only as many peers as the table holds");
        assert_eq!(r.tracked_peers(), 4);
        assert_eq!(r.finish(at(2))[0].suppressed, 2996);
        assert_eq!(r.tracked_peers(), 0);
        let mut r = RateLimiter::new(Limits {
            max_peers: 100,
            ..limits()
        });
        let logged = (0..3000u32)
            .filter(|p| r.check("too many sessions", *p, at(1)).log)
            .count();
        assert_eq!(logged, 5, "the kind's budget");
        assert!(r.tracked_peers() <= 100);
    }

    #[test]
    fn kinds_are_counted_apart() {
        let mut r = RateLimiter::new(limits());
        assert!(r.check("a", 1u32, at(0)).log);
        assert!(r.check("a", 1, at(0)).log);
        assert!(!r.check("a", 1, at(0)).log);
        assert!(
            r.check("b", 1, at(0)).log,
            "another kind has its own budget"
        );
        assert!(
            r.check("a", 2, at(0)).log,
            "another peer has its own budget"
        );
    }

    #[test]
    fn the_next_window_starts_afresh_and_reports_the_last_one() {
        let mut r = RateLimiter::new(limits());
        for _ in 0..5 {
            r.check("a", 1u32, at(0));
        }
        let c = r.check("a", 1, at(12_000));
        assert!(c.log);
        assert_eq!(c.ended.map(|s| s.suppressed), Some(3));
        let c = r.check("a", 1, at(12_001));
        assert!(c.log && c.ended.is_none());
    }

    #[test]
    fn a_quiet_window_ends_without_a_summary() {
        let mut r = RateLimiter::new(limits());
        assert!(r.check("a", 1u32, at(0)).log);
        assert_eq!(r.next_expiry(), Some(at(10_000)));
        assert!(r.expire(at(10_000)).is_empty());
        assert_eq!(r.next_expiry(), None);
    }
}
