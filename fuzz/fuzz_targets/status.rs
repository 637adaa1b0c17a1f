//! The agent's state file (status.toml), read at start-up: a file a crash or a full disk may
//! have left in any shape. Property: a status that parses saves (TOML) and reads back equal,
//! and the `wtpd status` views of it render.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wtpd::status::WtpStatus;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The same call as WtpStatus::load, without the file.
    let Ok(st) = toml::from_str::<WtpStatus>(text) else {
        return;
    };
    let _ = st.table();
    let _ = st.to_json();
    let saved = toml::to_string(&st).expect("a parsed status serializes");
    let back: WtpStatus = toml::from_str(&saved).expect("a saved status parses");
    assert_eq!(back, st, "save then load gives the same status");
});
