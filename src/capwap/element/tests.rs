//! The element codec's tests: every variant round-trips byte-identical, the numbers are the
//! RFC's, and malformed values are refused without panicking.

use super::*;
use crate::capwap::testutil::{allocations, sample_elements, MAC6};

fn emit(e: &Element<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    e.emit(&mut v);
    v
}

fn parse_one(bytes: &[u8]) -> Result<Element<'_>, ParseError> {
    let mut it = ElementIter::new(bytes);
    let raw = it.next().expect("one element")?;
    assert!(it.next().is_none());
    Element::parse(raw)
}

#[test]
fn every_variant_round_trips() {
    let samples = sample_elements();
    for e in &samples {
        let bytes = emit(e);
        assert_eq!(u16::from_be_bytes([bytes[0], bytes[1]]), e.type_id());
        assert_eq!(
            u16::from_be_bytes([bytes[2], bytes[3]]) as usize,
            bytes.len() - 4
        );
        let back = parse_one(&bytes).unwrap_or_else(|err| panic!("{e:?}: {err}"));
        assert_eq!(&back, e, "emit -> parse");
        assert_eq!(emit(&back), bytes, "parse -> emit byte-identical");
    }
    // All of them in one message, walked by the iterator.
    let mut all = Vec::new();
    samples.iter().for_each(|e| e.emit(&mut all));
    let parsed: Vec<_> = ElementIter::new(&all)
        .map(|r| Element::parse(r.unwrap()).unwrap())
        .collect();
    assert_eq!(parsed, samples);
}

#[test]
fn every_variant_is_declared_once_and_every_number_once() {
    for e in sample_elements() {
        if let Element::Unknown { .. } = e {
            continue;
        }
        let groups: Vec<u16> = GROUPS.iter().filter_map(|g| (g.type_id)(&e)).collect();
        assert_eq!(
            groups.len(),
            1,
            "{e:?} is declared in {} files",
            groups.len()
        );
        let s = spec(e.type_id()).unwrap_or_else(|| panic!("{e:?}: no spec"));
        assert!(s.section.contains('§'), "{s:?}");
    }
    let mut numbers: Vec<u16> = GROUPS.iter().flat_map(|g| g.specs).map(|s| s.typ).collect();
    let all = numbers.len();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), all, "an element number is declared twice");
    assert_eq!(all, 49);
    assert_eq!(spec(typ::IMAGE_DATA).map(|s| s.section), Some("§4.6.26"));
    assert_eq!(spec(typ::RESULT_CODE).map(|s| s.name), Some("Result Code"));
    assert_eq!(spec(9), None);
}

#[test]
fn type_numbers_match_rfc_table() {
    use typ::*;
    let expect = [
        (AC_DESCRIPTOR, 1),
        (AC_IPV4_LIST, 2),
        (AC_IPV6_LIST, 3),
        (AC_NAME, 4),
        (AC_NAME_WITH_PRIORITY, 5),
        (AC_TIMESTAMP, 6),
        (ADD_MAC_ACL_ENTRY, 7),
        (ADD_STATION, 8),
        (CAPWAP_CONTROL_IPV4, 10),
        (CAPWAP_CONTROL_IPV6, 11),
        (CAPWAP_TIMERS, 12),
        (DATA_TRANSFER_DATA, 13),
        (DATA_TRANSFER_MODE, 14),
        (DECRYPTION_ERROR_REPORT, 15),
        (DECRYPTION_ERROR_REPORT_PERIOD, 16),
        (DELETE_MAC_ACL_ENTRY, 17),
        (DELETE_STATION, 18),
        (DISCOVERY_TYPE, 20),
        (DUPLICATE_IPV4_ADDRESS, 21),
        (DUPLICATE_IPV6_ADDRESS, 22),
        (IDLE_TIMEOUT, 23),
        (IMAGE_DATA, 24),
        (IMAGE_IDENTIFIER, 25),
        (IMAGE_INFORMATION, 26),
        (INITIATE_DOWNLOAD, 27),
        (LOCATION_DATA, 28),
        (MAXIMUM_MESSAGE_LENGTH, 29),
        (CAPWAP_LOCAL_IPV4, 30),
        (RADIO_ADMINISTRATIVE_STATE, 31),
        (RADIO_OPERATIONAL_STATE, 32),
        (RESULT_CODE, 33),
        (RETURNED_MESSAGE_ELEMENT, 34),
        (SESSION_ID, 35),
        (STATISTICS_TIMER, 36),
        (VENDOR_SPECIFIC, 37),
        (WTP_BOARD_DATA, 38),
        (WTP_DESCRIPTOR, 39),
        (WTP_FALLBACK, 40),
        (WTP_FRAME_TUNNEL_MODE, 41),
        (WTP_MAC_TYPE, 44),
        (WTP_NAME, 45),
        (WTP_RADIO_STATISTICS, 47),
        (WTP_REBOOT_STATISTICS, 48),
        (WTP_STATIC_IP_ADDRESS_INFORMATION, 49),
        (CAPWAP_LOCAL_IPV6, 50),
        (CAPWAP_TRANSPORT_PROTOCOL, 51),
        (MTU_DISCOVERY_PADDING, 52),
        (ECN_SUPPORT, 53),
        (IEEE80211_WTP_RADIO_INFORMATION, 1048),
    ];
    for (c, n) in expect {
        assert_eq!(c, n);
    }
}

#[test]
fn iterator_yields_err_once_then_stops() {
    // A good element, then one claiming 10 bytes with 2 present.
    let bytes = [0, 20, 0, 1, 1, 0, 45, 0, 10, b'a', b'b'];
    let mut it = ElementIter::new(&bytes);
    assert_eq!(
        it.next(),
        Some(Ok(RawElement {
            typ: 20,
            value: &[1]
        }))
    );
    assert_eq!(
        it.next(),
        Some(Err(ParseError::BadLength {
            what: "element length",
            value: 10
        }))
    );
    assert_eq!(it.next(), None);
    assert_eq!(it.next(), None);
    // A header cut short.
    let mut it = ElementIter::new(&[0, 20, 0]);
    assert!(matches!(it.next(), Some(Err(ParseError::Truncated { .. }))));
    assert_eq!(it.next(), None);
    assert_eq!(ElementIter::new(&[]).next(), None);
}

#[test]
fn unknown_and_vendor_elements_are_kept_byte_identical() {
    let bytes = [0x04, 0x00, 0x00, 0x03, 9, 8, 7];
    let e = parse_one(&bytes).unwrap();
    assert_eq!(
        e,
        Element::Unknown {
            typ: 1024,
            value: &[9, 8, 7]
        }
    );
    assert_eq!(emit(&e), bytes);
    let bytes = [0, 37, 0, 9, 0, 0, 0x37, 0x63, 0x01, 0x02, 0xaa, 0xbb, 0xcc];
    let e = parse_one(&bytes).unwrap();
    assert_eq!(
        e,
        Element::VendorSpecific {
            vendor: 14179,
            element_id: 0x0102,
            data: &[0xaa, 0xbb, 0xcc]
        }
    );
    assert_eq!(emit(&e), bytes);
}

#[test]
fn strings_are_checked() {
    let name = "n".repeat(512);
    let e = Element::WtpName(&name);
    assert_eq!(parse_one(&emit(&e)).unwrap(), e);
    let too_long = "n".repeat(513);
    for e in [Element::WtpName(&too_long), Element::AcName(&too_long)] {
        assert!(matches!(
            parse_one(&emit(&e)),
            Err(ParseError::BadLength { value: 513, .. })
        ));
    }
    assert!(matches!(
        parse_one(&[0, 45, 0, 0]),
        Err(ParseError::BadLength { value: 0, .. })
    ));
    assert_eq!(
        parse_one(&[0, 45, 0, 2, 0xc3, 0x28]),
        Err(ParseError::BadUtf8 { what: "WTP Name" })
    );
    assert_eq!(
        parse_one(&[0, 25, 0, 6, 0, 0, 0, 1, b'x', 0xff]),
        Err(ParseError::BadUtf8 {
            what: "Image Identifier"
        })
    );
    assert!(
        parse_one(&[0, 25, 0, 4, 0, 0, 0, 1]).is_err(),
        "empty image name"
    );
    assert!(matches!(
        parse_one(&[0, 5, 0, 2, 0, b'a']),
        Err(ParseError::BadValue { value: 0, .. })
    ));
    let loc = "l".repeat(1024);
    assert!(parse_one(&emit(&Element::LocationData(&loc))).is_ok());
    let loc = "l".repeat(1025);
    assert!(parse_one(&emit(&Element::LocationData(&loc))).is_err());
}

#[test]
fn image_data_accepts_any_length_and_does_not_allocate() {
    for n in [0usize, 1, 1024, 1377, 4000, 0xffff - 1] {
        let data = vec![0x42u8; n];
        let bytes = emit(&Element::ImageData {
            data_type: 1,
            data: &data,
        });
        let raw = ElementIter::new(&bytes).next().unwrap().unwrap();
        let (e, allocs) = allocations(|| Element::parse(raw));
        assert_eq!(allocs, 0, "parsing Image Data allocated");
        match e.unwrap() {
            Element::ImageData {
                data_type: 1,
                data: d,
            } => {
                assert_eq!(d.len(), n);
                assert!(
                    std::ptr::eq(d.as_ptr(), bytes[5..].as_ptr()),
                    "borrowed, not copied"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(parse_one(&[0, 24, 0, 0]).is_err(), "Data Type missing");
}

#[test]
fn fixed_lengths_are_enforced() {
    // Result Code with 3 and 5 bytes.
    assert!(matches!(
        parse_one(&[0, 33, 0, 3, 0, 0, 0]),
        Err(ParseError::BadLength { value: 3, .. })
    ));
    assert!(matches!(
        parse_one(&[0, 33, 0, 5, 0, 0, 0, 0, 0]),
        Err(ParseError::BadLength { value: 5, .. })
    ));
    assert_eq!(
        parse_one(&[0, 33, 0, 4, 0, 0, 0, 18]),
        Ok(Element::ResultCode(18))
    );
    assert!(
        parse_one(&[0, 27, 0, 1, 0]).is_err(),
        "Initiate Download carries nothing"
    );
    assert!(
        parse_one(&[0, 35, 0, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err(),
        "Session ID is 16"
    );
    assert!(
        parse_one(&[0, 52, 0, 2, 0xff, 0xfe]).is_err(),
        "padding must be 0xFF"
    );
}

#[test]
fn structured_elements_reject_inconsistent_contents() {
    // WTP Board Data with vendor 0.
    assert!(matches!(
        parse_one(&[0, 38, 0, 10, 0, 0, 0, 0, 0, 0, 0, 2, b'a', b'b']),
        Err(ParseError::BadValue { .. })
    ));
    // Board data item whose length runs past the element.
    assert!(parse_one(&[0, 38, 0, 10, 0, 0, 0, 1, 0, 0, 0, 3, b'a', b'b']).is_err());
    // WTP Descriptor with Num Encrypt 0.
    assert!(parse_one(&[0, 39, 0, 3, 1, 1, 0]).is_err());
    // WTP Descriptor claiming 2 encryption sub-elements, holding 1.
    assert!(parse_one(&[0, 39, 0, 6, 1, 1, 2, 1, 0, 0]).is_err());
    // Returned Message Element whose length disagrees.
    assert!(parse_one(&[0, 34, 0, 4, 1, 3, 0, 0]).is_err());
    // Data Transfer Data whose length disagrees.
    assert!(parse_one(&[0, 13, 0, 5, 1, 1, 0, 2, 0]).is_err());
    // Delete Station with a 5-byte MAC.
    assert!(parse_one(&[0, 18, 0, 7, 1, 5, 1, 2, 3, 4, 5]).is_err());
    // Add MAC ACL with a count larger than the entries.
    let mut b = vec![0, 7, 0, 8, 2, 6];
    b.extend_from_slice(MAC6);
    assert!(parse_one(&b).is_err());
    // AC IPv4 List not a multiple of 4.
    assert!(parse_one(&[0, 2, 0, 5, 1, 2, 3, 4, 5]).is_err());
    // Vendor Specific data over 2048 bytes.
    let big = vec![0u8; 2049];
    assert!(parse_one(&emit(&Element::VendorSpecific {
        vendor: 1,
        element_id: 1,
        data: &big
    }))
    .is_err());
}

#[test]
fn every_truncated_value_errs_or_parses_without_panic() {
    for e in sample_elements() {
        let bytes = emit(&e);
        for n in 0..bytes.len() - 4 {
            let raw = RawElement {
                typ: e.type_id(),
                value: &bytes[4..4 + n],
            };
            let _ = Element::parse(raw);
        }
    }
}
