//! OpenWrt's UCI file (`/etc/config/wtpd`), translated to wtpd.toml by `wtpd uci` at every
//! start (`uci::to_toml`): text an operator, a LuCI page or a provisioning script wrote.
//!
//! Properties, beyond "never panics": a file that translates gives TOML that parses (quoting
//! and escaping never break out of a value), with one table per non-top `config` section of
//! the file and nothing else; and the agent's own config parser takes it without panicking.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use wtpd::config::WtpdConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(out) = wtpd::uci::to_toml(text) else {
        return;
    };
    let table: toml::Table = toml::from_str(&out)
        .unwrap_or_else(|e| panic!("the translation is not TOML ({e}):\n{out}"));
    let sections = wtpd::uci::parse(text).expect("to_toml parsed it");
    for s in sections.iter().filter(|s| s.kind != "wtpd") {
        assert!(
            table.get(&s.kind).is_some_and(|v| v.is_table()),
            "section {} missing from:\n{out}",
            s.kind
        );
    }
    let _ = WtpdConfig::parse(&out, Path::new("/etc/wtpd/wtpd.toml"));
});
