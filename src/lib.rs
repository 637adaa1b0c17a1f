//! wtpd: the access-point side of CAPWAP (RFC 5415), and acsim, the controller side.
//!
//! Data flows one way: datagrams enter [`runtime`], are unwrapped by [`dtls`], parsed by
//! [`capwap`], decided by [`wtp`] (or [`ac`]), and the decisions come back out as datagrams and
//! timers. Nothing below [`runtime`] knows about tokio; nothing in [`capwap`] knows about states.
//!
//! Read top-down: [`capwap`] (wire format), [`dtls`] (OpenSSL over memory queues), [`reliable`]
//! (one outstanding request, retransmission, cached responses), [`wtp`] and [`ac`] (the state
//! machines), [`runtime`] (tokio), then [`config`], [`demo`] and the binaries in `src/bin/`.

pub mod ac;
pub mod board;
pub mod capwap;
pub mod config;
pub mod demo;
pub mod dtls;
pub mod fetch;
pub mod fsio;
pub mod image;
pub mod logging;
pub mod outq;
pub mod pcap;
pub mod pki;
pub mod ratelimit;
pub mod reliable;
pub mod rng;
pub mod runtime;
pub mod status;
pub mod time;
pub mod wtp;
