//! Arbitrary bytes through the whole receive-side parse chain: packet (preamble and transport
//! header) -> control header -> each TLV -> typed element. The parsers must return errors on
//! malformed input and never panic (src/capwap/mod.rs); libFuzzer reports any panic as a crash.
//!
//! Round trips, at each layer that parses: emit(parse(x)) parses back to the same value, and
//! emitting that again gives the same bytes (parse-emit-parse).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wtpd::capwap::{ControlMessage, Element, ElementIter, Packet};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::parse(data) else {
        return;
    };
    let mut bytes = Vec::new();
    packet.emit(&mut bytes);
    let again = Packet::parse(&bytes).expect("an emitted packet parses");
    assert_eq!(again, packet, "packet round trip");

    let Ok(msg) = ControlMessage::parse(packet.payload) else {
        return;
    };
    let _ = msg.message_type();
    let mut bytes = Vec::new();
    msg.emit(&mut bytes);
    assert_eq!(
        ControlMessage::parse(&bytes),
        Ok(msg),
        "control header round trip"
    );

    for raw in msg.elements() {
        let Ok(raw) = raw else {
            break;
        };
        let Ok(element) = Element::parse(raw) else {
            continue;
        };
        let mut out = Vec::new();
        element.emit(&mut out);
        assert_eq!(element.type_id(), raw.typ);
        let mut it = ElementIter::new(&out);
        let raw2 = it.next().expect("one TLV").expect("an emitted TLV reads");
        assert!(it.next().is_none(), "emit writes exactly one TLV");
        let element2 = Element::parse(raw2).expect("an emitted element parses");
        assert_eq!(element2, element, "element round trip");
        let mut out2 = Vec::new();
        element2.emit(&mut out2);
        assert_eq!(out2, out, "emit is stable");
    }
});
