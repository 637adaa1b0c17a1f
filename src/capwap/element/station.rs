//! The elements of Station Configuration (RFC 5415 §10): stations and MAC access lists.

use super::codec::{len_mac, mac_list, no_trailing, put_len8, put_macs, string};
use super::{limits, Element};
use crate::capwap::{ParseError, Reader};

elements! {
    "§4.6.7" ADD_MAC_ACL_ENTRY = 7, "Add MAC ACL Entry",
    AddMacAclEntry(macs),
    parse(v, what) {
        let mut r = Reader::new(v, what);
        let n = r.u8()?;
        Element::AddMacAclEntry(mac_list(&mut r, n, what)?)
    }
    emit(o) { put_macs(o, macs) }

    /// An empty VLAN name is the same as none.
    "§4.6.8" ADD_STATION = 8, "Add Station",
    AddStation { radio_id, mac, vlan_name },
    parse(v, what) {
        let mut r = Reader::new(v, what);
        let radio_id = r.u8()?;
        let mac = len_mac(&mut r, what)?;
        let vlan = r.rest();
        let vlan_name = if vlan.is_empty() {
            None
        } else {
            Some(string(vlan, "Add Station VLAN Name", 1, limits::NAME)?)
        };
        Element::AddStation { radio_id, mac, vlan_name }
    }
    emit(o) {
        o.push(*radio_id);
        put_len8(o, mac);
        if let Some(v) = vlan_name {
            o.extend_from_slice(v.as_bytes());
        }
    }

    "§4.6.19" DELETE_MAC_ACL_ENTRY = 17, "Delete MAC ACL Entry",
    DeleteMacAclEntry(macs),
    parse(v, what) {
        let mut r = Reader::new(v, what);
        let n = r.u8()?;
        Element::DeleteMacAclEntry(mac_list(&mut r, n, what)?)
    }
    emit(o) { put_macs(o, macs) }

    "§4.6.20" DELETE_STATION = 18, "Delete Station",
    DeleteStation { radio_id, mac },
    parse(v, what) {
        let mut r = Reader::new(v, what);
        let radio_id = r.u8()?;
        let mac = len_mac(&mut r, what)?;
        no_trailing(&r, what)?;
        Element::DeleteStation { radio_id, mac }
    }
    emit(o) {
        o.push(*radio_id);
        put_len8(o, mac);
    }
}
