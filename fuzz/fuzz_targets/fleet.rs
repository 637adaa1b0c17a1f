//! The fleet payloads (docs/fleet.md): the Offer an AP sends, the Direction a controller sends,
//! the Report an AP sends, all inside Vendor Specific Payloads from the other side of a DTLS
//! session; and the primary's TFTP server deciding about a datagram on its listening port.
//!
//! Properties, beyond "never panics": what parses re-encodes to bytes that parse to the same
//! value; a Direction's source URL, when it has one, is tftp:// or https:// and a TFTP file
//! name is never a path; the TFTP server accepts only the served name (with at most one
//! leading `/`) and never more transfers than its limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wtpd::capwap::fleet::{Direction, Offer, Report};
use wtpd::fetch::tftpd::{check_request, Verdict};

fuzz_target!(|data: &[u8]| {
    let [selector, active, rest @ ..] = data else {
        return;
    };
    match selector % 4 {
        0 => {
            if let Ok(o) = Offer::parse(rest) {
                let mut v = Vec::new();
                o.encode(&mut v);
                assert_eq!(Offer::parse(&v), Ok(o));
            }
        }
        1 => {
            if let Ok(d) = Direction::parse(rest) {
                let mut v = Vec::new();
                d.encode(&mut v);
                assert_eq!(Direction::parse(&v).as_ref(), Ok(&d));
                if let Ok(Some(url)) = d.source_url() {
                    assert!(url.starts_with("tftp://") || url.starts_with("https://"));
                    if url.starts_with("tftp://") {
                        let file = d.file.as_deref().unwrap_or("");
                        assert!(!file.contains('/') && !file.is_empty());
                    }
                }
            }
        }
        2 => {
            if let Ok(r) = Report::parse(rest) {
                let mut v = Vec::new();
                r.encode(&mut v);
                assert_eq!(Report::parse(&v), Ok(r));
            }
        }
        _ => {
            let active = usize::from(*active % 5);
            if let Verdict::Accept(_) = check_request(rest, Some("ap1g8"), active, 3, false) {
                assert!(active < 3, "accepted over the limit");
                let name_ok = [b"ap1g8\0".as_slice(), b"/ap1g8\0".as_slice()]
                    .iter()
                    .any(|n| rest.len() > 2 && rest[2..].starts_with(n));
                assert!(name_ok, "accepted another name: {:?}", &rest[2..]);
            }
        }
    }
});
