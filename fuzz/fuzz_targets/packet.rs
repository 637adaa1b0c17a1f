//! Arbitrary bytes through the whole receive-side parse chain: packet (preamble and transport
//! header) -> control header -> each TLV -> typed element. The parsers must return errors on
//! malformed input and never panic (src/capwap/mod.rs); libFuzzer reports any panic as a crash.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wtpd::capwap::{ControlMessage, Element, Packet};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::parse(data) else {
        return;
    };
    let Ok(msg) = ControlMessage::parse(packet.payload) else {
        return;
    };
    let _ = msg.message_type();
    for raw in msg.elements() {
        let Ok(raw) = raw else {
            break;
        };
        if let Ok(element) = Element::parse(raw) {
            // Re-emitting a parsed element must not panic either, and must keep its type.
            let mut out = Vec::new();
            element.emit(&mut out);
            assert_eq!(element.type_id(), raw.typ);
        }
    }
});
