//! The file the board's DHCP hook writes (addresses, DHCP option 43 in hex): the DHCP server
//! and whoever answers DHCP on the segment control it. Property: every line is either used
//! or reported, never both lost.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wtpd::wtp::discovery::parse_dhcp_controllers;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (addrs, bad) = parse_dhcp_controllers(text, 5246);
    let lines = text
        .lines()
        .filter(|l| !l.split('#').next().unwrap_or("").trim().is_empty())
        .count();
    // A good line gives at least one address (an option 43 line may give several).
    assert!(bad.len() <= lines);
    assert!(
        addrs.len() + bad.len() >= lines,
        "a line was neither used nor reported"
    );
});
