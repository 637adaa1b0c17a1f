//! fw_env.config (libubootenv's format), read from the board's root file system. Property:
//! what parses is a valid config (validate() holds), in both byte orders alike.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wtpd::image::bootenv::{ByteOrder, EnvConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let little = EnvConfig::parse_fw_env_config(text, ByteOrder::Little);
    let big = EnvConfig::parse_fw_env_config(text, ByteOrder::Big);
    assert_eq!(
        little.is_ok(),
        big.is_ok(),
        "byte order does not change what parses"
    );
    if let Ok(cfg) = little {
        cfg.validate().expect("a parsed config is valid");
        assert_eq!(cfg.copies, big.unwrap().copies);
    }
});
