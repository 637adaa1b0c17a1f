//! The image manifest (docs/image-format.md), parsed before its signature is checked.
//! Property: a manifest that parses re-emits (`to_text`) as text that parses to the same
//! manifest, and that text is a fixed point of parse-emit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wtpd::image::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Manifest::parse(data) else {
        return;
    };
    let _ = m.parsed_version();
    let text = m.to_text();
    let again = Manifest::parse(text.as_bytes()).expect("to_text output parses");
    assert_eq!(again, m, "parse(to_text(m)) == m");
    assert_eq!(again.to_text(), text, "to_text is stable");
});
