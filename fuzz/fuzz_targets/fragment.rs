//! The fragment reassembler (RFC 5415 §3.4) fed what an attacker on the path can send: raw
//! fragments with any ID, offset, length and L flag, interleaved with real fragment trains in
//! any order with duplicates, while the clock moves. Structure-aware (`arbitrary`): plain
//! bytes rarely make a run of fragments that share an ID.
//!
//! Properties: (1) whatever arrives, the reassembler never holds more than max_pending partial
//! packets of max_payload bytes; (2) a payload cut by `fragment()` and delivered in any order,
//! with duplicates, comes back whole and unchanged, exactly once, when its last missing
//! fragment arrives.

#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use wtpd::capwap::fragment::{fragment, Reassembler, ReassemblyLimits};
use wtpd::capwap::{Header, Packet};
use wtpd::time::Instant;

#[derive(Arbitrary, Debug)]
enum Op {
    /// A fragment with header fields as given.
    Raw {
        id: u16,
        offset: u16,
        last: bool,
        not_a_fragment: bool,
        payload: Vec<u8>,
    },
    /// A payload cut by fragment() at `mtu`, delivered in the order `keys` sorts it, each
    /// fragment repeated when its `dup` bit is set.
    Train {
        id: u16,
        len: u16,
        fill: u8,
        mtu: u16,
        keys: Vec<u8>,
        dup: u64,
    },
    /// The clock moves on.
    Wait { ms: u16 },
}

#[derive(Arbitrary, Debug)]
struct Case {
    max_payload: u16,
    max_pending: u8,
    timeout_ms: u16,
    ops: Vec<Op>,
}

fn packet_bytes(h: &Header<'_>, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    Packet {
        header: *h,
        payload,
    }
    .emit(&mut b);
    b
}

fuzz_target!(|case: Case| {
    let limits = ReassemblyLimits {
        max_payload: usize::from(case.max_payload),
        max_pending: usize::from(case.max_pending % 8),
        timeout: Duration::from_millis(u64::from(case.timeout_ms)),
    };
    let bound = limits.max_payload * limits.max_pending;
    let mut shared = Reassembler::new(limits);
    let mut now = Instant::from_duration(Duration::from_secs(1));
    // Pushes into `r`; for the shared one, also checks that a reassembled fragment train is
    // within its limit.
    let push = |r: &mut Reassembler, bytes: &[u8], now: Instant, shared: bool| {
        let p = Packet::parse(bytes).expect("emitted packets parse");
        let out = r.push(&p, now);
        if let (Ok(Some(payload)), true, true) = (&out, p.header.fragment, shared) {
            assert!(
                payload.len() <= limits.max_payload,
                "reassembled past max_payload"
            );
        }
        out
    };
    for op in case.ops {
        match op {
            Op::Raw {
                id,
                offset,
                last,
                not_a_fragment,
                payload,
            } => {
                let mut h = Header::control();
                h.fragment = !not_a_fragment;
                h.last_fragment = last;
                h.fragment_id = id;
                h.fragment_offset = offset & 0x1fff;
                let _ = push(&mut shared, &packet_bytes(&h, &payload), now, true);
            }
            Op::Train {
                id,
                len,
                fill,
                mtu,
                keys,
                dup,
            } => {
                let payload: Vec<u8> = (0..len % 4096)
                    .map(|i| (i as u8).wrapping_add(fill))
                    .collect();
                let mut frags = Vec::new();
                fragment(
                    &Header::control(),
                    &payload,
                    usize::from(mtu % 2048),
                    id,
                    &mut frags,
                );
                let mut order: Vec<usize> = (0..frags.len()).collect();
                order.sort_by_key(|&i| (keys.get(i).copied().unwrap_or(0), i));
                // Property 2, on a reassembler of its own (the shared one may hold a partial
                // with the same ID, which rightly spoils the train there).
                let mut own = Reassembler::new(ReassemblyLimits {
                    max_payload: 1 << 16,
                    max_pending: 1,
                    timeout: Duration::from_secs(10),
                });
                let mut seen = vec![false; frags.len()];
                let mut done = frags.is_empty();
                for (n, &i) in order.iter().enumerate() {
                    let times = if dup >> (n % 64) & 1 == 1 { 2 } else { 1 };
                    for _ in 0..times {
                        let _ = push(&mut shared, &frags[i], now, true);
                        assert!(shared.held_bytes() <= bound);
                        if done {
                            continue;
                        }
                        let first = !seen[i];
                        seen[i] = true;
                        let complete = first && seen.iter().all(|&s| s);
                        match push(&mut own, &frags[i], now, false) {
                            Ok(Some(p)) => {
                                assert!(complete, "a payload before its last fragment");
                                assert_eq!(p, payload, "reassembled payload differs");
                                done = true;
                            }
                            Ok(None) => assert!(!complete, "last fragment gave nothing"),
                            Err(e) => panic!("a true fragment refused: {e:?}"),
                        }
                    }
                }
                assert!(done, "every fragment delivered, no payload");
            }
            Op::Wait { ms } => now = now + Duration::from_millis(u64::from(ms)),
        }
        // Property 1.
        assert!(shared.pending() <= limits.max_pending);
        assert!(
            shared.held_bytes() <= bound,
            "{} > {bound}",
            shared.held_bytes()
        );
    }
});
