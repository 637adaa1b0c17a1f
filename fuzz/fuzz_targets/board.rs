//! The board file (board/*.toml): TOML the installer trusts for slots and the environment.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use wtpd::board::Board;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(b) = Board::parse(text, Path::new("/etc/wtpd/board.toml")) {
        // What the installer asks of a parsed board must not panic either.
        for s in &b.slots {
            assert!(b.slot(&s.name).is_some());
            let _ = b.other_slot(&s.name);
        }
    }
});
