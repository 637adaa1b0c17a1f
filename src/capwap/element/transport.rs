//! The elements about the path between WTP and AC: the WTP's own addresses, the transport,
//! the message size and ECN (RFC 5415 §3, in Discovery and Join, §5.1, §6.1).

use super::codec::{exact, ipv4, ipv6, put_u16};
use super::Element;
use crate::capwap::ParseError;

elements! {
    "§4.6.11" CAPWAP_LOCAL_IPV4 = 30, "CAPWAP Local IPv4 Address",
    LocalIpv4(a),
    parse(v, what) { Element::LocalIpv4(ipv4(&mut exact(v, 4, what)?)?) }
    emit(o) { o.extend_from_slice(&a.octets()) }

    "§4.6.12" CAPWAP_LOCAL_IPV6 = 50, "CAPWAP Local IPv6 Address",
    LocalIpv6(a),
    parse(v, what) { Element::LocalIpv6(ipv6(&mut exact(v, 16, what)?)?) }
    emit(o) { o.extend_from_slice(&a.octets()) }

    "§4.6.14" CAPWAP_TRANSPORT_PROTOCOL = 51, "CAPWAP Transport Protocol",
    TransportProtocol(p),
    parse(v, what) { Element::TransportProtocol(exact(v, 1, what)?.u8()?) }
    emit(o) { o.push(*p) }

    "§4.6.25" ECN_SUPPORT = 53, "ECN Support",
    EcnSupport(ecn),
    parse(v, what) { Element::EcnSupport(exact(v, 1, what)?.u8()?) }
    emit(o) { o.push(*ecn) }

    "§4.6.31" MAXIMUM_MESSAGE_LENGTH = 29, "Maximum Message Length",
    MaximumMessageLength(n),
    parse(v, what) { Element::MaximumMessageLength(exact(v, 2, what)?.u16()?) }
    emit(o) { put_u16(o, *n) }

    "§4.6.32" MTU_DISCOVERY_PADDING = 52, "MTU Discovery Padding",
    MtuDiscoveryPadding(n),
    parse(v, what) {
        if let Some(b) = v.iter().find(|&&b| b != 0xff) {
            return Err(ParseError::BadValue { what, value: u32::from(*b) });
        }
        Element::MtuDiscoveryPadding(v.len() as u16)
    }
    emit(o) { o.resize(o.len() + *n as usize, 0xff) }
}
