//! The pieces element values are made of, read and written the same way by every file of
//! `element/`: fixed-length values, strings, MAC addresses, addresses, descriptor
//! sub-elements, and the TLV around a value.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::limits;
use crate::capwap::{ParseError, Reader};

/// A sub-element of the AC and WTP Descriptors (vendor, type, data; §4.6.1, §4.6.41).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorInfo<'a> {
    pub vendor: u32,
    pub typ: u16,
    pub data: &'a [u8],
}

/// A value that must be exactly `n` bytes long.
pub(super) fn exact<'a>(
    v: &'a [u8],
    n: usize,
    what: &'static str,
) -> Result<Reader<'a>, ParseError> {
    if v.len() != n {
        return Err(ParseError::BadLength {
            what,
            value: v.len(),
        });
    }
    Ok(Reader::new(v, what))
}

/// A UTF-8 string of `min..=max` bytes.
pub(super) fn string<'a>(
    v: &'a [u8],
    what: &'static str,
    min: usize,
    max: usize,
) -> Result<&'a str, ParseError> {
    if v.len() < min || v.len() > max {
        return Err(ParseError::BadLength {
            what,
            value: v.len(),
        });
    }
    std::str::from_utf8(v).map_err(|_| ParseError::BadUtf8 { what })
}

/// A MAC address: EUI-48 or EUI-64.
fn mac<'a>(v: &'a [u8], what: &'static str) -> Result<&'a [u8], ParseError> {
    match v.len() {
        6 | 8 => Ok(v),
        n => Err(ParseError::BadLength { what, value: n }),
    }
}

/// A 1-byte length followed by a MAC address.
pub(super) fn len_mac<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<&'a [u8], ParseError> {
    let n = r.u8()? as usize;
    mac(r.take(n)?, what)
}

/// `count` times (length, MAC), which must use up the reader.
pub(super) fn mac_list<'a>(
    r: &mut Reader<'a>,
    count: u8,
    what: &'static str,
) -> Result<Vec<&'a [u8]>, ParseError> {
    if count == 0 {
        return Err(ParseError::BadValue { what, value: 0 });
    }
    // Each entry takes at least 7 bytes; don't let a count reserve more than the input backs.
    let mut macs = Vec::with_capacity((count as usize).min(r.remaining() / 7));
    for _ in 0..count {
        macs.push(len_mac(r, what)?);
    }
    no_trailing(r, what)?;
    Ok(macs)
}

pub(super) fn no_trailing(r: &Reader<'_>, what: &'static str) -> Result<(), ParseError> {
    if r.is_empty() {
        Ok(())
    } else {
        Err(ParseError::BadLength {
            what,
            value: r.remaining(),
        })
    }
}

pub(super) fn ipv4(r: &mut Reader<'_>) -> Result<Ipv4Addr, ParseError> {
    Ok(Ipv4Addr::from(r.array::<4>()?))
}

pub(super) fn ipv6(r: &mut Reader<'_>) -> Result<Ipv6Addr, ParseError> {
    Ok(Ipv6Addr::from(r.array::<16>()?))
}

/// A list of addresses of `size` bytes each, at least one and at most [`limits::AC_LIST`].
pub(super) fn addr_list<'a, A>(
    v: &'a [u8],
    what: &'static str,
    size: usize,
    read: fn(&mut Reader<'a>) -> Result<A, ParseError>,
) -> Result<Vec<A>, ParseError> {
    if v.is_empty() || v.len() % size != 0 || v.len() / size > limits::AC_LIST {
        return Err(ParseError::BadLength {
            what,
            value: v.len(),
        });
    }
    let mut r = Reader::new(v, what);
    let mut list = Vec::with_capacity(v.len() / size);
    while !r.is_empty() {
        list.push(read(&mut r)?);
    }
    Ok(list)
}

/// An address, a status byte and a (length, MAC), and nothing after: the Duplicate IPv4 and
/// IPv6 Address layout (§4.6.22, §4.6.23).
pub(super) fn addr_status_mac<'a, A>(
    v: &'a [u8],
    what: &'static str,
    read: fn(&mut Reader<'a>) -> Result<A, ParseError>,
) -> Result<(A, u8, &'a [u8]), ParseError> {
    let mut r = Reader::new(v, what);
    let addr = read(&mut r)?;
    let status = r.u8()?;
    let mac = len_mac(&mut r, what)?;
    no_trailing(&r, what)?;
    Ok((addr, status, mac))
}

/// Writes what [`addr_status_mac`] reads.
pub(super) fn put_addr_status_mac(o: &mut Vec<u8>, addr: &[u8], status: u8, mac: &[u8]) {
    o.extend_from_slice(addr);
    o.push(status);
    put_len8(o, mac);
}

/// Vendor/type/length/data sub-elements of the AC and WTP Descriptors, up to the end.
pub(super) fn descriptor_infos<'a>(
    r: &mut Reader<'a>,
    what: &'static str,
) -> Result<Vec<DescriptorInfo<'a>>, ParseError> {
    let mut info = Vec::with_capacity(r.remaining() / 8);
    while !r.is_empty() {
        let vendor = r.u32()?;
        let typ = r.u16()?;
        let len = r.u16()? as usize;
        if len > limits::SUB_ELEMENT {
            return Err(ParseError::BadLength { what, value: len });
        }
        info.push(DescriptorInfo {
            vendor,
            typ,
            data: r.take(len)?,
        });
    }
    Ok(info)
}

/// Appends a TLV whose value `f` writes; a value longer than 65535 bytes is cut.
pub(super) fn tlv(out: &mut Vec<u8>, typ: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&typ.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    f(out);
    let mut len = out.len() - start - 4;
    if len > 0xffff {
        out.truncate(start + 4 + 0xffff);
        len = 0xffff;
    }
    out[start + 2..start + 4].copy_from_slice(&(len as u16).to_be_bytes());
}

pub(super) fn put_u16(o: &mut Vec<u8>, v: u16) {
    o.extend_from_slice(&v.to_be_bytes());
}

pub(super) fn put_u32(o: &mut Vec<u8>, v: u32) {
    o.extend_from_slice(&v.to_be_bytes());
}

/// Appends a 1-byte length and the bytes (cut to 255).
pub(super) fn put_len8(out: &mut Vec<u8>, b: &[u8]) {
    let b = &b[..b.len().min(255)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

/// Appends a count byte and (length, MAC) entries (cut to 255 entries).
pub(super) fn put_macs(out: &mut Vec<u8>, macs: &[&[u8]]) {
    let macs = &macs[..macs.len().min(255)];
    out.push(macs.len() as u8);
    for m in macs {
        put_len8(out, m);
    }
}

pub(super) fn put_infos(out: &mut Vec<u8>, infos: &[DescriptorInfo<'_>]) {
    for i in infos {
        let data = &i.data[..i.data.len().min(0xffff)];
        out.extend_from_slice(&i.vendor.to_be_bytes());
        out.extend_from_slice(&i.typ.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
}
