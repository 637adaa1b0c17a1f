//! The elements any message may carry: the Result Code of a response, the element it
//! returns, the Session ID and vendor extensions (RFC 5415 §4.6.35-§4.6.39).

use super::codec::{exact, put_len8, put_u16, put_u32};
use super::{limits, Element};
use crate::capwap::{ParseError, Reader};

elements! {
    "§4.6.35" RESULT_CODE = 33, "Result Code",
    ResultCode(code),
    parse(v, what) { Element::ResultCode(exact(v, 4, what)?.u32()?) }
    emit(o) { put_u32(o, *code) }

    "§4.6.36" RETURNED_MESSAGE_ELEMENT = 34, "Returned Message Element",
    ReturnedMessageElement { reason, element },
    parse(v, what) {
        let mut r = Reader::new(v, what);
        let reason = r.u8()?;
        let len = r.u8()? as usize;
        let element = r.rest();
        if element.len() != len {
            return Err(ParseError::BadLength { what, value: len });
        }
        Element::ReturnedMessageElement { reason, element }
    }
    emit(o) {
        o.push(*reason);
        put_len8(o, element);
    }

    "§4.6.37" SESSION_ID = 35, "Session ID",
    SessionId(id),
    parse(v, what) { Element::SessionId(exact(v, 16, what)?.rest()) }
    emit(o) { o.extend_from_slice(id) }

    "§4.6.39" VENDOR_SPECIFIC = 37, "Vendor Specific Payload",
    VendorSpecific { vendor, element_id, data },
    parse(v, what) {
        let mut r = Reader::new(v, what);
        let vendor = r.u32()?;
        let element_id = r.u16()?;
        let data = r.rest();
        if data.len() > limits::VENDOR_DATA {
            return Err(ParseError::BadLength { what, value: data.len() });
        }
        Element::VendorSpecific { vendor, element_id, data }
    }
    emit(o) {
        put_u32(o, *vendor);
        put_u16(o, *element_id);
        o.extend_from_slice(data);
    }
}
