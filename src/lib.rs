//! wtpd: the access-point side of CAPWAP (RFC 5415), and acsim, the controller side.
//!
//! Data flows one way: datagrams enter [`runtime`], are unwrapped by [`dtls`], parsed by
//! [`capwap`], decided by [`wtp`] (or [`ac`]), and the decisions come back out as datagrams and
//! timers. Nothing below [`runtime`] knows about tokio; nothing in [`capwap`] knows about states.

pub mod capwap;
pub mod dtls;
pub mod pki;
pub mod time;
