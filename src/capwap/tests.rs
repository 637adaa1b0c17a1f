//! Tests across the layers: known-answer packets, the builder, random input, and a check of
//! our packets with Wireshark's dissector (tshark).

use std::net::Ipv4Addr;

use super::builder::build;
use super::element::{
    image_data_type, radio_type, tunnel_mode, typ, BoardDataItem, DescriptorInfo, WtpDescriptor,
};
use super::fragment::{fragment, Reassembler, ReassemblyLimits};
use super::testutil::{pcap, sample_elements, Rng, SESSION};
use super::*;

/// A Discovery Request written out by hand from the figures of RFC 5415 §4.3, §4.5.1, §4.6
/// and RFC 5416 §6.25.
#[rustfmt::skip]
const DISCOVERY_REQUEST: &[u8] = &[
    // Preamble 0/0; HLEN 2, RID 0, WBID 1; no flags.
    0x00, 0x10, 0x02, 0x00,
    // Fragment ID 0, offset 0.
    0x00, 0x00, 0x00, 0x00,
    // Message Type 1 (Discovery Request), Seq 5, Msg Element Length 91 (88 + 3), Flags 0.
    0x00, 0x00, 0x00, 0x01, 0x05, 0x00, 0x5b, 0x00,
    // Discovery Type (20), 1: static configuration.
    0x00, 0x14, 0x00, 0x01, 0x01,
    // WTP Board Data (38), length 19: vendor 12345; model "AP1"; serial "SN42".
    0x00, 0x26, 0x00, 0x13, 0x00, 0x00, 0x30, 0x39,
    0x00, 0x00, 0x00, 0x03, b'A', b'P', b'1',
    0x00, 0x01, 0x00, 0x04, b'S', b'N', b'4', b'2',
    // WTP Descriptor (39), length 37: 2 radios, 1 in use, 1 encryption sub-element (WBID 1,
    // capabilities 0); hardware "v1", active software "1.0", boot "b1" (vendor 0).
    0x00, 0x27, 0x00, 0x25, 0x02, 0x01, 0x01, 0x01, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, b'v', b'1',
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x03, b'1', b'.', b'0',
    0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x02, b'b', b'1',
    // WTP Frame Tunnel Mode (41): E (802.3), bit 0x04 of |Reservd|N|E|L|U|.
    0x00, 0x29, 0x00, 0x01, 0x04,
    // WTP MAC Type (44): Local MAC.
    0x00, 0x2c, 0x00, 0x01, 0x00,
    // IEEE 802.11 WTP Radio Information (1048): radio 1, type G|B (0x05) of |Reservd|N|G|A|B|.
    0x04, 0x18, 0x00, 0x05, 0x01, 0x00, 0x00, 0x00, 0x05,
];

fn discovery_elements() -> Vec<Element<'static>> {
    vec![
        Element::DiscoveryType(1),
        Element::WtpBoardData {
            vendor: 12345,
            items: vec![
                BoardDataItem {
                    typ: 0,
                    data: b"AP1",
                },
                BoardDataItem {
                    typ: 1,
                    data: b"SN42",
                },
            ],
        },
        Element::WtpDescriptor(WtpDescriptor {
            max_radios: 2,
            radios_in_use: 1,
            encryption: vec![(1, 0)],
            info: vec![
                DescriptorInfo {
                    vendor: 0,
                    typ: 0,
                    data: b"v1",
                },
                DescriptorInfo {
                    vendor: 0,
                    typ: 1,
                    data: b"1.0",
                },
                DescriptorInfo {
                    vendor: 0,
                    typ: 2,
                    data: b"b1",
                },
            ],
        }),
        Element::WtpFrameTunnelMode(tunnel_mode::IEEE_802_3),
        Element::WtpMacType(0),
        Element::WtpRadioInformation {
            radio_id: 1,
            radio_type: radio_type::G | radio_type::B,
        },
    ]
}

#[test]
fn known_answer_discovery_request() {
    let p = Packet::parse(DISCOVERY_REQUEST).unwrap();
    assert_eq!(p.header, Header::control());
    let m = ControlMessage::parse(p.payload).unwrap();
    assert_eq!(m.message_type(), Some(MessageType::DiscoveryRequest));
    assert_eq!(m.seq, 5);
    assert_eq!(m.flags, 0);
    assert_eq!(m.elements.len(), 88);
    let raws: Vec<RawElement> = m.elements().map(Result::unwrap).collect();
    let types: Vec<u16> = raws.iter().map(|r| r.typ).collect();
    assert_eq!(types, [20, 38, 39, 41, 44, 1048]);
    let elems: Vec<Element> = raws
        .into_iter()
        .map(|r| Element::parse(r).unwrap())
        .collect();
    match &elems[1] {
        Element::WtpBoardData { vendor, items } => {
            assert_eq!(*vendor, 12345);
            assert_eq!(items.len(), 2);
            assert_eq!((items[0].typ, items[0].data), (0, &b"AP1"[..]));
            assert_eq!((items[1].typ, items[1].data), (1, &b"SN42"[..]));
        }
        e => panic!("{e:?}"),
    }
    match &elems[2] {
        Element::WtpDescriptor(d) => {
            assert_eq!((d.max_radios, d.radios_in_use), (2, 1));
            assert_eq!(d.encryption, [(1, 0)]);
            let info: Vec<_> = d.info.iter().map(|i| (i.vendor, i.typ, i.data)).collect();
            assert_eq!(
                info,
                [(0, 0, &b"v1"[..]), (0, 1, &b"1.0"[..]), (0, 2, &b"b1"[..])]
            );
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(elems, discovery_elements());
    // And the builder writes exactly these bytes.
    assert_eq!(
        build(
            MessageType::DiscoveryRequest as u32,
            5,
            &discovery_elements()
        ),
        DISCOVERY_REQUEST
    );
}

#[test]
fn builder_round_trips_every_element() {
    let samples = sample_elements();
    let mut b = PacketBuilder::new();
    let header = Header {
        radio_id: 3,
        radio_mac: Some(&[1, 2, 3, 4, 5, 6]),
        ..Header::control()
    };
    b.start(&header, MessageType::ConfigurationUpdateRequest as u32, 200);
    for e in &samples {
        b.element(e);
    }
    b.raw_element(typ::RESULT_CODE, &0u32.to_be_bytes());
    let bytes = b.finish().to_vec();
    let p = Packet::parse(&bytes).unwrap();
    assert_eq!(p.header, header);
    let m = ControlMessage::parse(p.payload).unwrap();
    assert_eq!(m.msg_type, 7);
    assert_eq!(m.seq, 200);
    assert_eq!(
        p.payload.len(),
        8 + m.elements.len(),
        "length field counts exactly the elements (+3)"
    );
    let mut got: Vec<Element> = m
        .elements()
        .map(|r| Element::parse(r.unwrap()).unwrap())
        .collect();
    assert_eq!(got.pop(), Some(Element::ResultCode(0)));
    assert_eq!(got, samples);
    // Re-emitting the parsed message gives the same bytes.
    let mut again = Vec::new();
    p.header.emit(&mut again);
    m.emit(&mut again);
    assert_eq!(again, bytes);
}

#[test]
fn builder_reuses_its_buffer() {
    let data = vec![0xabu8; 1377];
    let mut b = PacketBuilder::new();
    let mut first_ptr = None;
    for seq in 0..50u8 {
        b.start(
            &Header::control(),
            MessageType::ImageDataRequest as u32,
            seq,
        );
        b.element(&Element::ImageData {
            data_type: image_data_type::DATA,
            data: &data,
        });
        let len = b.finish().len();
        assert_eq!(len, 8 + 8 + 4 + 1 + 1377);
        let ptr = b.as_bytes().as_ptr();
        let cap = b.capacity();
        if let Some((p, c)) = first_ptr {
            assert_eq!((p, c), (ptr, cap), "no reallocation once grown");
        } else {
            first_ptr = Some((ptr, cap));
        }
    }
    // An empty message: only the control header.
    b.start(&Header::control(), MessageType::EchoRequest as u32, 1);
    assert_eq!(
        b.finish(),
        [0x00, 0x10, 0x02, 0x00, 0, 0, 0, 0, 0, 0, 0, 13, 1, 0, 3, 0]
    );
}

/// Every element of every message that parses: emitting it and parsing again gives it back.
fn walk(buf: &[u8]) -> usize {
    let Ok(p) = Packet::parse(buf) else { return 0 };
    let Ok(m) = ControlMessage::parse(p.payload) else {
        return 1;
    };
    let mut n = 2;
    let mut errs = 0;
    for raw in m.elements() {
        let Ok(raw) = raw else {
            errs += 1;
            continue;
        };
        if let Ok(e) = Element::parse(raw) {
            let mut out = Vec::new();
            e.emit(&mut out);
            let back = ElementIter::new(&out).next().unwrap().unwrap();
            assert_eq!(Element::parse(back).as_ref(), Ok(&e), "re-parse of {e:?}");
            n += 1;
        }
    }
    assert!(errs <= 1, "iterator yields at most one error");
    n
}

fn sample_packets() -> Vec<Vec<u8>> {
    let mut v = vec![DISCOVERY_REQUEST.to_vec()];
    for e in sample_elements() {
        v.push(build(
            MessageType::ConfigurationUpdateRequest as u32,
            1,
            &[e],
        ));
    }
    v.extend(tshark_messages().into_iter().map(|(_, b)| b));
    v
}

#[test]
fn every_truncation_of_valid_packets_is_handled() {
    for pkt in sample_packets() {
        assert!(walk(&pkt) >= 2);
        for n in 0..pkt.len() {
            walk(&pkt[..n]);
            // The declared length reaches exactly to the end, so a strict prefix never parses
            // as a whole control message.
            let whole = Packet::parse(&pkt[..n]).map(|p| ControlMessage::parse(p.payload));
            assert!(
                !matches!(whole, Ok(Ok(_))),
                "prefix {n} of {} parsed",
                pkt.len()
            );
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng::new(0x5415_5416);
    let seeds = sample_packets();
    let mut deep = 0usize;
    for i in 0..120_000 {
        let buf = match i % 3 {
            // Pure noise.
            0 => {
                let n = rng.below(64);
                rng.bytes(n)
            }
            // Noise behind a valid header and control header, with a plausible length.
            1 => {
                let n = rng.below(200);
                let mut b = vec![0x00, 0x10, 0x02, 0x00, 0, 0, 0, 0, 0, 0, 0, 3, 0];
                b.extend_from_slice(&((n + 3) as u16).to_be_bytes());
                b.push(0);
                b.extend(rng.bytes(n));
                b
            }
            // A valid packet with a few bytes flipped, cut or extended.
            _ => {
                let mut b = seeds[rng.below(seeds.len())].clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(b.len());
                    b[at] = rng.byte();
                }
                if rng.below(4) == 0 {
                    b.truncate(rng.below(b.len() + 1));
                }
                if rng.below(8) == 0 {
                    let n = rng.below(16);
                    b.extend(rng.bytes(n));
                }
                b
            }
        };
        if walk(&buf) > 2 {
            deep += 1;
        }
        // Element::parse on the raw bytes under every type we know and some we don't.
        let t = [
            1u16, 2, 5, 7, 8, 13, 15, 21, 24, 25, 34, 37, 38, 39, 47, 49, 52, 1048, 999,
        ][i % 19];
        let _ = Element::parse(RawElement {
            typ: t,
            value: &buf,
        });
    }
    assert!(deep > 10_000, "enough inputs reach the elements: {deep}");
}

/// The messages checked against Wireshark, each a whole datagram.
fn tshark_messages() -> Vec<(&'static str, Vec<u8>)> {
    let image = vec![0x5au8; 1377];
    let join = vec![
        Element::LocationData("Next to Fridge"),
        Element::WtpBoardData {
            vendor: 12345,
            items: vec![
                BoardDataItem {
                    typ: 0,
                    data: b"AP-100",
                },
                BoardDataItem {
                    typ: 1,
                    data: b"SN0001",
                },
                BoardDataItem {
                    typ: 4,
                    data: &[0, 0x11, 0x22, 0x33, 0x44, 0x55],
                },
            ],
        },
        discovery_elements().swap_remove(2),
        Element::WtpName("ap-lobby"),
        Element::SessionId(SESSION),
        Element::WtpFrameTunnelMode(tunnel_mode::IEEE_802_3),
        Element::WtpMacType(0),
        Element::WtpRadioInformation {
            radio_id: 1,
            radio_type: 0x0d,
        },
        Element::EcnSupport(0),
        Element::LocalIpv4(Ipv4Addr::new(192, 0, 2, 10)),
        Element::TransportProtocol(2),
        Element::MaximumMessageLength(4096),
    ];
    vec![
        ("Discovery Request", DISCOVERY_REQUEST.to_vec()),
        (
            "Join Request",
            build(MessageType::JoinRequest as u32, 1, &join),
        ),
        (
            "Echo Request",
            build(MessageType::EchoRequest as u32, 2, &[]),
        ),
        (
            "Image Data Request",
            build(
                MessageType::ImageDataRequest as u32,
                3,
                &[
                    Element::ImageIdentifier {
                        vendor: 12345,
                        name: "fw-2.0.1",
                    },
                    Element::InitiateDownload,
                ],
            ),
        ),
        (
            "Image Data Request",
            build(
                MessageType::ImageDataRequest as u32,
                4,
                &[Element::ImageData {
                    data_type: 1,
                    data: &image,
                }],
            ),
        ),
        (
            "Image Data Request",
            build(
                MessageType::ImageDataRequest as u32,
                5,
                &[Element::ImageData {
                    data_type: 2,
                    data: b"end",
                }],
            ),
        ),
        (
            "Image Data Response",
            build(
                MessageType::ImageDataResponse as u32,
                3,
                &[
                    Element::ResultCode(0),
                    Element::ImageInformation {
                        file_size: 200_000,
                        md5: [0x11; 16],
                    },
                ],
            ),
        ),
        (
            "Reset Request",
            build(
                MessageType::ResetRequest as u32,
                6,
                &[Element::ImageIdentifier {
                    vendor: 12345,
                    name: "fw-2.0.1",
                }],
            ),
        ),
        (
            "Configuration Status Request",
            build(
                MessageType::ConfigurationStatusRequest as u32,
                7,
                &[
                    Element::AcName("controller-1"),
                    Element::RadioAdministrativeState {
                        radio_id: 1,
                        state: 1,
                    },
                    Element::StatisticsTimer(120),
                    Element::WtpRebootStatistics {
                        reboot_count: 1,
                        ac_initiated: 2,
                        link_failure: 0,
                        sw_failure: 0,
                        hw_failure: 0,
                        other_failure: 0,
                        unknown_failure: 0,
                        last_failure_type: 1,
                    },
                ],
            ),
        ),
    ]
}

/// Writes the tshark messages (plus one message fragmented at MTU 1400) to a pcap and has
/// tshark dissect it: every packet must be CAPWAP with the right message type and no expert
/// warning or error (malformed packets are expert errors). Skipped, with a message, when
/// tshark is not installed.
#[test]
fn tshark_dissects_our_packets_cleanly() {
    let tshark = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("tshark"))
            .find(|p| p.is_file())
    });
    let Some(tshark) = tshark else {
        println!("tshark not on PATH: skipping the Wireshark check");
        return;
    };
    let msgs = tshark_messages();
    let mut datagrams: Vec<Vec<u8>> = msgs.iter().map(|(_, b)| b.clone()).collect();
    // A 5000-byte Configuration Update Request, fragmented.
    let big = vec![0x33u8; 4900];
    let cfg = build(
        MessageType::ConfigurationUpdateRequest as u32,
        8,
        &[
            Element::VendorSpecific {
                vendor: 12345,
                element_id: 1,
                data: &big[..2048],
            },
            Element::VendorSpecific {
                vendor: 12345,
                element_id: 2,
                data: &big[..2048],
            },
        ],
    );
    let payload = &cfg[8..];
    let mut frags = Vec::new();
    fragment(&Header::control(), payload, 1400, 77, &mut frags);
    assert!(frags.len() > 1);
    // Our own reassembler agrees.
    let mut r = Reassembler::new(ReassemblyLimits::default());
    let whole = frags
        .iter()
        .filter_map(|f| {
            r.push(&Packet::parse(f).unwrap(), crate::time::Instant::ZERO)
                .unwrap()
        })
        .next();
    assert_eq!(whole.as_deref(), Some(payload));
    let nfrags = frags.len();
    datagrams.extend(frags);

    let dir = std::env::temp_dir().join(format!("wtpd-capwap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("codec.pcap");
    std::fs::write(&file, pcap(&datagrams, CONTROL_PORT)).unwrap();
    let out = std::process::Command::new(&tshark)
        .args(["-n", "-r"])
        .arg(&file)
        .args([
            "-o",
            "capwap.reassemble:TRUE",
            "-T",
            "fields",
            "-E",
            "separator=|",
        ])
        .args([
            "-e",
            "frame.number",
            "-e",
            "capwap.control.header.message_type",
            "-e",
            "_ws.expert.severity",
        ])
        .args(["-e", "_ws.expert.message", "-e", "_ws.malformed"])
        .output()
        .expect("run tshark");
    let text = String::from_utf8_lossy(&out.stdout);
    // WTPD_KEEP_PCAP=path keeps a copy for a look with `tshark -V`.
    if let Some(keep) = std::env::var_os("WTPD_KEEP_PCAP") {
        std::fs::copy(&file, keep).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("tshark:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "tshark failed");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), datagrams.len());
    for (i, line) in lines.iter().enumerate() {
        let cols: Vec<&str> = line.split('|').collect();
        assert_eq!(cols.len(), 5, "{line}");
        if i < msgs.len() {
            let expect = u32::from_be_bytes(msgs[i].1[8..12].try_into().unwrap());
            assert_eq!(cols[1], expect.to_string(), "{}: {line}", msgs[i].0);
        }
        // Severity: 2097152 chat, 4194304 note, 6291456 warn, 8388608 error.
        for sev in cols[2].split(',').filter(|s| !s.is_empty()) {
            let sev: u32 = sev.parse().unwrap();
            assert!(
                sev < 6_291_456,
                "expert warning/error in frame {}: {line}",
                i + 1
            );
        }
        assert!(cols[4].is_empty(), "malformed frame {}: {line}", i + 1);
    }
    // The last fragment shows the reassembled message type.
    assert_eq!(lines[msgs.len() + nfrags - 1].split('|').nth(1), Some("7"));
}
