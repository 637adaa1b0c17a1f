//! TFTP datagrams from the server (DATA, ERROR, OACK) and the option agreement (RFC 2347-2349,
//! 7440). Input: blksize asked (2 bytes), windowsize asked (1 byte), then the datagram.
//! Properties: an agreed blksize and windowsize are within what was asked (the server may only
//! lower them), and a parsed OACK has no empty option name.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wtpd::fetch::tftp::{agree, parse, Packet};

fuzz_target!(|data: &[u8]| {
    let [b0, b1, w, datagram @ ..] = data else {
        return;
    };
    let asked_blk = u16::from_be_bytes([*b0, *b1]);
    let asked_win = u16::from(*w);
    match parse(datagram) {
        Some(Packet::Oack(opts)) => {
            assert!(opts.iter().all(|(k, _)| !k.is_empty()));
            if let Ok(a) = agree(&opts, asked_blk, asked_win) {
                let (default_blk, default_win) = (512, 1);
                let asked_blk_opt = opts.iter().any(|(k, _)| k == "blksize");
                let asked_win_opt = opts.iter().any(|(k, _)| k == "windowsize");
                assert!(!asked_blk_opt || (8..=usize::from(asked_blk)).contains(&a.blksize));
                assert!(asked_blk_opt || a.blksize == default_blk);
                assert!(!asked_win_opt || (1..=asked_win).contains(&a.windowsize));
                assert!(asked_win_opt || a.windowsize == default_win);
            }
        }
        Some(Packet::Data { data: d, .. }) => assert_eq!(d.len() + 4, datagram.len()),
        Some(_) | None => {}
    }
});
