//! wtpd: the access-point side of CAPWAP (RFC 5415), and acsim, the controller side.
//!
//! Data flows one way: datagrams enter [`runtime`], are unwrapped by [`dtls`], parsed by
//! [`capwap`], decided by [`wtp`] (or [`ac`]), and the decisions come back out as datagrams and
//! timers. Nothing below [`runtime`] knows about tokio; nothing in [`capwap`] knows about states.
//!
//! Read top-down: [`capwap`] (wire format), [`dtls`] (OpenSSL over memory queues), [`reliable`]
//! (one outstanding request, retransmission, cached responses), [`wtp`] and [`ac`] (the state
//! machines), [`runtime`] (tokio), then [`config`] and the binary in `src/bin/`. The lab (acsim,
//! the demo, the lab PKI, the image servers) is the `wtpd-harness` crate in `harness/`.

pub mod ac;
pub mod board;
pub mod capwap;
pub mod config;
pub mod dtls;
pub mod fetch;
pub mod flash;
pub mod fsio;
pub mod image;
pub mod logging;
pub mod outq;
pub mod pcap;
// The lab PKI lives in the harness crate (harness/src/pki.rs); the DTLS unit tests, which also
// run for armv7 under qemu-arm, compile the same file in (it uses only std and openssl).
#[cfg(test)]
#[path = "../harness/src/pki.rs"]
#[allow(dead_code)]
mod pki;
pub mod ratelimit;
pub mod reliable;
pub mod rng;
pub mod runtime;
pub mod status;
pub mod time;
pub mod uci;
pub mod watchdog;
pub mod wtp;
