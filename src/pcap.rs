//! A minimal classic-pcap writer for recording the UDP datagrams wtpd and acsim exchange, so a
//! lab run can be opened in Wireshark or read with `tshark -r`.
//!
//! Format: libpcap 2.4, magic `0xa1b2c3d4` (microsecond timestamps), written little-endian
//! whatever the host's byte order (readers accept either; fixing it keeps files identical across
//! the x86, ARM and big-endian MIPS builds). Link type 101 (`LINKTYPE_RAW`): each record is a bare
//! IP packet whose version nibble says IPv4 or IPv6, so no fake Ethernet header is needed.
//!
//! Address families: when both endpoints are IPv4 (or IPv4-mapped IPv6, `::ffff:a.b.c.d`, as a
//! dual-stack socket reports them) the record is IPv4; otherwise it is IPv6 and an IPv4 endpoint
//! is written as its IPv4-mapped IPv6 address. IPv4 headers carry a correct header checksum;
//! UDP checksums are computed for both families (mandatory in IPv6).
//!
//! Flush policy: every record is written with one `write_all` and then flushed, so the file is
//! complete up to the last packet if the process is killed. Timestamps before the Unix epoch are
//! written as 0.

use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Magic number of classic pcap with microsecond timestamps.
pub const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
/// `LINKTYPE_RAW`: raw IPv4 or IPv6, told apart by the version nibble.
pub const LINKTYPE_RAW: u32 = 101;
/// Snapshot length written in the file header; no record is cut.
pub const SNAPLEN: u32 = 262_144;

const IPV4_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
const PROTO_UDP: u8 = 17;
const TTL: u8 = 64;

/// Writes pcap records to `W` (a [`File`] unless built with [`PcapWriter::new`]).
#[derive(Debug)]
pub struct PcapWriter<W: Write = File> {
    out: W,
    /// IPv4 Identification of the next packet.
    ip_id: u16,
    /// Reused buffer for one record.
    buf: Vec<u8>,
}

impl PcapWriter<File> {
    /// Creates (truncates) `path` and writes the file header.
    pub fn create(path: impl AsRef<Path>) -> io::Result<Self> {
        PcapWriter::new(File::create(path)?)
    }
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header to `out` and flushes it.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut hdr = Vec::with_capacity(24);
        hdr.extend_from_slice(&MAGIC_MICROS.to_le_bytes());
        hdr.extend_from_slice(&2u16.to_le_bytes()); // version major
        hdr.extend_from_slice(&4u16.to_le_bytes()); // version minor
        hdr.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        hdr.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        hdr.extend_from_slice(&SNAPLEN.to_le_bytes());
        hdr.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
        out.write_all(&hdr)?;
        out.flush()?;
        Ok(PcapWriter {
            out,
            ip_id: 0,
            buf: Vec::with_capacity(2048),
        })
    }

    /// Records one UDP datagram from `src` to `dst` seen at `ts`, then flushes.
    ///
    /// Fails with `InvalidInput` when the payload does not fit one IP packet.
    pub fn write_udp(
        &mut self,
        ts: SystemTime,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> io::Result<()> {
        let udp_len = UDP_HEADER_LEN + payload.len();
        let mut pkt = std::mem::take(&mut self.buf);
        pkt.clear();
        // Record header, lengths patched below.
        let since = ts.duration_since(UNIX_EPOCH).unwrap_or_default();
        pkt.extend_from_slice(&(since.as_secs() as u32).to_le_bytes());
        pkt.extend_from_slice(&since.subsec_micros().to_le_bytes());
        pkt.extend_from_slice(&[0; 8]);

        let result = match (v4_of(src.ip()), v4_of(dst.ip())) {
            (Some(s), Some(d)) if IPV4_HEADER_LEN + udp_len <= 0xffff => {
                self.ip_id = self.ip_id.wrapping_add(1);
                push_ipv4(&mut pkt, self.ip_id, s, d, udp_len);
                push_udp(&mut pkt, src.port(), dst.port(), payload, |sum| {
                    sum.add(&s.octets());
                    sum.add(&d.octets());
                    sum.add(&[0, PROTO_UDP]);
                    sum.add(&(udp_len as u16).to_be_bytes());
                });
                Ok(())
            }
            (Some(_), Some(_)) => Err(too_big(payload.len())),
            _ if udp_len <= 0xffff => {
                let (s, d) = (v6_of(src.ip()), v6_of(dst.ip()));
                push_ipv6(&mut pkt, s, d, udp_len);
                push_udp(&mut pkt, src.port(), dst.port(), payload, |sum| {
                    sum.add(&s.octets());
                    sum.add(&d.octets());
                    sum.add(&(udp_len as u32).to_be_bytes());
                    sum.add(&[0, 0, 0, PROTO_UDP]);
                });
                Ok(())
            }
            _ => Err(too_big(payload.len())),
        };
        let result = result.and_then(|()| {
            let caplen = (pkt.len() - 16) as u32;
            pkt[8..12].copy_from_slice(&caplen.to_le_bytes());
            pkt[12..16].copy_from_slice(&caplen.to_le_bytes());
            self.out.write_all(&pkt)?;
            self.out.flush()
        });
        self.buf = pkt;
        result
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// A reference to the underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }
}

fn too_big(len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("UDP payload of {len} bytes does not fit one IP packet"),
    )
}

fn v4_of(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    }
}

fn v6_of(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

fn push_ipv4(pkt: &mut Vec<u8>, id: u16, src: Ipv4Addr, dst: Ipv4Addr, udp_len: usize) {
    let start = pkt.len();
    let total = (IPV4_HEADER_LEN + udp_len) as u16;
    pkt.push(0x45); // version 4, IHL 5
    pkt.push(0); // DSCP/ECN
    pkt.extend_from_slice(&total.to_be_bytes());
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&0x4000u16.to_be_bytes()); // DF, offset 0
    pkt.push(TTL);
    pkt.push(PROTO_UDP);
    pkt.extend_from_slice(&[0, 0]); // checksum, patched below
    pkt.extend_from_slice(&src.octets());
    pkt.extend_from_slice(&dst.octets());
    let mut sum = Checksum::default();
    sum.add(&pkt[start..]);
    pkt[start + 10..start + 12].copy_from_slice(&sum.finish().to_be_bytes());
}

fn push_ipv6(pkt: &mut Vec<u8>, src: Ipv6Addr, dst: Ipv6Addr, udp_len: usize) {
    pkt.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, traffic class 0, flow label 0
    pkt.extend_from_slice(&(udp_len as u16).to_be_bytes());
    pkt.push(PROTO_UDP); // next header
    pkt.push(TTL); // hop limit
    pkt.extend_from_slice(&src.octets());
    pkt.extend_from_slice(&dst.octets());
}

/// Appends a UDP header and payload; `pseudo` adds the family's pseudo-header to the checksum.
fn push_udp(
    pkt: &mut Vec<u8>,
    sport: u16,
    dport: u16,
    payload: &[u8],
    pseudo: impl FnOnce(&mut Checksum),
) {
    let start = pkt.len();
    let len = (UDP_HEADER_LEN + payload.len()) as u16;
    pkt.extend_from_slice(&sport.to_be_bytes());
    pkt.extend_from_slice(&dport.to_be_bytes());
    pkt.extend_from_slice(&len.to_be_bytes());
    pkt.extend_from_slice(&[0, 0]);
    pkt.extend_from_slice(payload);
    let mut sum = Checksum::default();
    pseudo(&mut sum);
    sum.add(&pkt[start..]);
    // A computed 0 is sent as 0xffff (RFC 768); 0 means "no checksum".
    let c = match sum.finish() {
        0 => 0xffff,
        c => c,
    };
    pkt[start + 6..start + 8].copy_from_slice(&c.to_be_bytes());
}

/// The Internet checksum (RFC 1071), fed in pieces of even length except the last.
#[derive(Default)]
struct Checksum(u64);

impl Checksum {
    fn add(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(2);
        for c in &mut chunks {
            self.0 += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            self.0 += u64::from(u16::from_be_bytes([*last, 0]));
        }
    }

    fn finish(&self) -> u16 {
        let mut s = self.0;
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ts(secs: u64, micros: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, micros * 1000)
    }

    #[test]
    fn file_header_bytes() {
        let w = PcapWriter::new(Vec::new()).unwrap();
        assert_eq!(
            w.into_inner(),
            [
                0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x04, 0x00,
                101, 0, 0, 0
            ]
        );
    }

    #[test]
    fn ipv4_udp_record_bytes() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let src: SocketAddr = "192.168.0.1:5246".parse().unwrap();
        let dst: SocketAddr = "192.168.0.199:12345".parse().unwrap();
        w.write_udp(ts(1_706_650_895, 112_000), src, dst, b"hi!")
            .unwrap();
        let out = w.into_inner();
        let rec = &out[24..];
        #[rustfmt::skip]
        let want: &[u8] = &[
            // record header: ts_sec, ts_usec, caplen 31, len 31
            0x0f, 0x6d, 0xb9, 0x65, 0x80, 0xb5, 0x01, 0x00, 31, 0, 0, 0, 31, 0, 0, 0,
            // IPv4: 45 00, total 31, id 1, DF, TTL 64, UDP, checksum, src, dst
            0x45, 0x00, 0x00, 0x1f, 0x00, 0x01, 0x40, 0x00, 0x40, 0x11, 0xb8, 0xb4,
            192, 168, 0, 1, 192, 168, 0, 199,
            // UDP: 5246 -> 12345, length 11, checksum
            0x14, 0x7e, 0x30, 0x39, 0x00, 0x0b, 0xaf, 0x9e,
            b'h', b'i', b'!',
        ];
        assert_eq!(rec, want);
        // The IPv4 header sums to 0xffff with its checksum in place.
        let mut sum = Checksum::default();
        sum.add(&rec[16..36]);
        assert_eq!(sum.finish(), 0);
    }

    #[test]
    fn udp_checksum_verifies_with_pseudo_header() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let src: SocketAddr = "10.0.0.1:5246".parse().unwrap();
        let dst: SocketAddr = "10.0.0.2:5246".parse().unwrap();
        let payload = [0x55u8; 13]; // odd length exercises the padding byte
        w.write_udp(ts(0, 0), src, dst, &payload).unwrap();
        let out = w.into_inner();
        let udp = &out[24 + 16 + 20..];
        let mut sum = Checksum::default();
        sum.add(&[10, 0, 0, 1, 10, 0, 0, 2, 0, 17]);
        sum.add(&(udp.len() as u16).to_be_bytes());
        sum.add(udp);
        assert_eq!(sum.finish(), 0);
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        // Both IPv4-mapped: written as IPv4.
        let a: SocketAddr = "[::ffff:127.0.0.1]:5246".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        w.write_udp(ts(1, 0), a, b, b"x").unwrap();
        // A real IPv6 endpoint: IPv6, with the IPv4 one mapped.
        let c: SocketAddr = "[2001:db8::1]:5246".parse().unwrap();
        w.write_udp(ts(2, 0), c, b, b"yz").unwrap();
        let out = w.into_inner();
        let first = &out[24..];
        assert_eq!(first[8], 20 + 8 + 1);
        assert_eq!(first[16], 0x45);
        let second = &first[16 + 29..];
        assert_eq!(second[8], 40 + 8 + 2);
        let ip6 = &second[16..];
        assert_eq!(ip6[0] >> 4, 6);
        assert_eq!(&ip6[4..6], &[0, 10]); // payload length = UDP length
        assert_eq!(ip6[6], 17);
        let dst6 = Ipv6Addr::from(<[u8; 16]>::try_from(&ip6[24..40]).unwrap());
        assert_eq!(dst6, "::ffff:127.0.0.1".parse::<Ipv6Addr>().unwrap());
        // UDP checksum over the IPv6 pseudo-header verifies.
        let udp = &ip6[40..];
        let mut sum = Checksum::default();
        sum.add(&ip6[8..40]);
        sum.add(&(udp.len() as u32).to_be_bytes());
        sum.add(&[0, 0, 0, 17]);
        sum.add(udp);
        assert_eq!(sum.finish(), 0);
    }

    #[test]
    fn oversized_payload_is_rejected_and_writer_still_works() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let big = vec![0u8; 70_000];
        let e = w.write_udp(ts(0, 0), a, a, &big).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            w.get_ref().len(),
            24,
            "nothing written for a rejected packet"
        );
        w.write_udp(ts(0, 0), a, a, b"ok").unwrap();
        assert_eq!(w.get_ref().len(), 24 + 16 + 30);
    }
}
