//! The pcap writer's output, read back by Wireshark's own dissector (`tshark`).
//!
//! tshark is required: CI (`.ci/run`) installs it, so a missing tshark fails the test rather than
//! skipping it. (This is an integration test so that the armv7 `cargo test --lib` run under
//! qemu does not need it.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use wtpd::pcap::PcapWriter;

/// A clear CAPWAP control packet built by hand (RFC 5415 §4.1, §4.3, §4.5.1).
fn capwap_control(msg_type: u32, seq: u8, elements: &[u8]) -> Vec<u8> {
    let mut p = vec![
        0x00, // preamble: version 0, type 0 (clear CAPWAP header follows)
        // HLEN=2 (8 bytes), RID=0, WBID=1 (802.11), T F L W M K = 0, flags 0:
        // 00010 00000 00001 0 00000 000 -> 0x10 0x02 0x00
        0x10, 0x02, 0x00, //
        0x00, 0x00, // fragment ID
        0x00, 0x00, // fragment offset, reserved
    ];
    p.extend_from_slice(&msg_type.to_be_bytes());
    p.push(seq);
    // Msg Element Length: bytes following the Sequence Number field (itself, flags, elements).
    p.extend_from_slice(&(3 + elements.len() as u16).to_be_bytes());
    p.push(0); // flags
    p.extend_from_slice(elements);
    p
}

fn tmp_file(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}-{}.pcap", std::process::id()))
}

fn tshark(path: &PathBuf, filter: &str, field: &str) -> String {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(path)
        .args(["-Y", filter, "-T", "fields", "-e", field])
        .output()
        .expect("tshark must be installed (.ci/run installs it): could not run it");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn tshark_decodes_capwap_echo_request_and_response() {
    let path = tmp_file("capwap-echo");
    let wtp: SocketAddr = "192.0.2.10:40001".parse().unwrap();
    let ac: SocketAddr = "192.0.2.1:5246".parse().unwrap();
    let wtp6: SocketAddr = "[2001:db8::10]:40001".parse().unwrap();
    let ac6: SocketAddr = "[2001:db8::1]:5246".parse().unwrap();
    let t0 = UNIX_EPOCH + Duration::from_micros(1_706_650_895_112_000);

    let mut w = PcapWriter::create(&path).unwrap();
    // Echo Request (13), seq 1, no elements: ... 00 00 00 0d 01 00 03 00
    let req = capwap_control(13, 1, &[]);
    assert_eq!(&req[8..], &[0, 0, 0, 0x0d, 0x01, 0x00, 0x03, 0x00]);
    w.write_udp(t0, wtp, ac, &req).unwrap();
    // Flushed per packet: the record is on disk while the writer is still open.
    let len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(len, 24 + 16 + 20 + 8 + 16);
    // Echo Response (14) over IPv6, carrying a Vendor Specific Payload (37) element.
    let vendor = [
        0x00, 0x25, 0x00, 0x08, // type 37, length 8
        0x00, 0x00, 0x00, 0x09, // vendor id 9
        0x00, 0x01, 0xab, 0xcd, // element id 1, data
    ];
    let resp = capwap_control(14, 1, &vendor);
    w.write_udp(t0 + Duration::from_millis(3), ac6, wtp6, &resp)
        .unwrap();
    drop(w);

    // Classic pcap header + 2 records.
    let len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(len, 24 + (16 + 28 + 16) + (16 + 48 + 28));

    assert_eq!(
        tshark(&path, "capwap", "capwap.control.header.message_type"),
        "13\n14\n"
    );
    assert_eq!(
        tshark(&path, "capwap", "capwap.control.header.sequence_number"),
        "1\n1\n"
    );
    assert_eq!(
        tshark(&path, "capwap && ipv6", "ipv6.dst"),
        "2001:db8::10\n"
    );
    assert_eq!(
        tshark(&path, "capwap", "frame.time_epoch"),
        "1706650895.112000000\n1706650895.115000000\n"
    );
    std::fs::remove_file(&path).ok();
}
