//! The Data Channel Keep-Alive (RFC 5415 §4.4.1): the one data-channel packet CAPWAP itself
//! defines. The WTP writes it, and both ends read it, so it lives with the codec.

use super::element::{Element, ElementIter};
use super::header::Header;

/// The Data Channel Keep-Alive (§4.4.1): K flag, then the element length and the Session ID.
///
/// The length counts "the bytes following the CAPWAP Header", so it includes its own two bytes,
/// as in the control header (and as Wireshark checks).
pub fn keep_alive(out: &mut Vec<u8>, session_id: &[u8; 16]) {
    out.clear();
    let mut h = Header::control();
    h.wbid = 0;
    h.keep_alive = true;
    h.emit(out);
    let len_at = out.len();
    out.extend_from_slice(&[0, 0]);
    Element::SessionId(session_id).emit(out);
    let n = (out.len() - len_at) as u16;
    out[len_at..len_at + 2].copy_from_slice(&n.to_be_bytes());
}

/// The Session ID of a Data Channel Keep-Alive, if `payload` is one.
///
/// Accepts the length with or without its own two bytes, since implementations differ.
pub fn keep_alive_session(payload: &[u8]) -> Option<&[u8]> {
    let len = u16::from_be_bytes([*payload.first()?, *payload.get(1)?]) as usize;
    if len != payload.len() && len + 2 != payload.len() {
        return None;
    }
    let elems = payload.get(2..)?;
    for raw in ElementIter::new(elems) {
        let raw = raw.ok()?;
        if let Ok(Element::SessionId(id)) = Element::parse(raw) {
            return Some(id);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capwap::Packet;

    #[test]
    fn keep_alive_round_trip_and_length_readings() {
        let id = [7u8; 16];
        let mut out = Vec::new();
        keep_alive(&mut out, &id);
        let p = Packet::parse(&out).unwrap();
        assert!(p.header.keep_alive);
        assert_eq!(
            p.header.wbid, 0,
            "all header fields but HLEN and K are zero"
        );
        let len = u16::from_be_bytes([p.payload[0], p.payload[1]]) as usize;
        assert_eq!(len, p.payload.len(), "length includes its own two bytes");
        assert_eq!(keep_alive_session(p.payload), Some(&id[..]));
        // The other reading (elements only) is accepted too.
        let mut other = p.payload.to_vec();
        other[..2].copy_from_slice(&((len - 2) as u16).to_be_bytes());
        assert_eq!(keep_alive_session(&other), Some(&id[..]));
        // Anything else is not a keep-alive.
        other[..2].copy_from_slice(&((len + 5) as u16).to_be_bytes());
        assert_eq!(keep_alive_session(&other), None);
        assert_eq!(keep_alive_session(&[0]), None);
    }
}
