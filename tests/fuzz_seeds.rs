//! Writes the seed corpora of the fuzz targets (fuzz/corpus-seeds/<target>/) and the trust
//! anchor of the seed images (fuzz/data/image-root.pem) from what the code itself produces:
//! images packed and signed with the lab PKI, packets from the WTP's message builders, the
//! environment encoder, the board files and fw_env.config files of board/, a saved status.
//!
//! Ignored: the seeds are committed, and signing makes new bytes on every run. Run it by hand
//! when a format changes (then commit the seeds and the anchor together):
//!
//!     cargo test --test fuzz_seeds -- --ignored

use std::fs;
use std::path::{Path, PathBuf};

use wtpd::capwap::builder::build;
use wtpd::capwap::element::{image_data_type, AcDescriptor};
use wtpd::capwap::fragment::fragment;
use wtpd::capwap::{Element, Header, MessageType, Packet};
use wtpd::image::bootenv::{encode, ByteOrder, Env};
use wtpd::image::bundle::BundleReader;
use wtpd::image::pack::{pack_image, PackSpec, PayloadSpec};
use wtpd::image::verify::TrustPolicy;
use wtpd::status::WtpStatus;
use wtpd::wtp::messages;
use wtpd::wtp::{Identity, TargetKind, Versions};
use wtpd_harness::pki;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Replaces the seed folder of `target` with `seeds`.
fn write_seeds(target: &str, seeds: &[(&str, Vec<u8>)]) {
    let dir = fuzz_dir().join("corpus-seeds").join(target);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds {
        assert!(bytes.len() <= 8 << 10, "{target}/{name}: seeds stay small");
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Signed images (bundle), their heads (manifest, chain) and the anchor.
fn images(work: &Path) {
    let lab = pki::generate_lab_pki(&work.join("pki")).unwrap();
    fs::create_dir_all(fuzz_dir().join("data")).unwrap();
    fs::copy(&lab.image_root_cert, fuzz_dir().join("data/image-root.pem")).unwrap();
    let chain = [
        lab.image_signer_cert.clone(),
        lab.image_intermediate_cert.clone(),
    ];
    let payload = |name: &str, len: usize, seed: u8| {
        let p = work.join(name);
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        fs::write(&p, data).unwrap();
        p
    };
    let rootfs = payload("rootfs.img", 700, 7);
    let mut one = PackSpec::new("ap1g8", "17.12.1.5", &rootfs, &lab.image_signer_key, &chain);
    one.boards = vec!["ap1g8-a".into(), "ap1g8-b".into()];
    let mut two = one.clone();
    two.version = "17.12.2.1".into();
    two.boards = Vec::new();
    two.payloads.push(PayloadSpec {
        name: "kernel.bin".into(),
        path: payload("kernel.bin", 512, 3),
        target: "kernel".into(),
    });
    let mut empty = one.clone();
    empty.version = "17.12.3".into();
    empty.payloads[0].path = payload("empty.img", 0, 0);

    let mut bundle = Vec::new();
    let mut manifests = Vec::new();
    let mut chains = Vec::new();
    for (name, spec) in [
        ("one-payload.tar", &one),
        ("two-payloads.tar", &two),
        ("empty-payload.tar", &empty),
    ] {
        let out = work.join(name);
        pack_image(spec, &out).unwrap();
        let img = fs::read(&out).unwrap();
        let b = BundleReader::new(&img[..]).unwrap();
        let policy = TrustPolicy {
            anchors: TrustPolicy::anchors_from_pem(&fs::read(&lab.image_root_cert).unwrap())
                .unwrap(),
            hardware_type: "ap1g8".into(),
            board: "ap1g8-a".into(),
            not_before_floor: 0,
            now: None,
            allow_downgrade: true,
            current_version: None,
            expected_version: None,
        };
        b.verify(&policy)
            .expect("the seed verifies under the fuzz policy");
        manifests.push((name.replace(".tar", ".txt"), b.manifest_bytes().to_vec()));
        chains.push(b.chain_pem().to_vec());
        // The GNU tar record padding (zeros to 10240 bytes) is cut: the seeds stay small and
        // the fuzzer adds zeros by itself.
        let end = img.iter().rposition(|&b| b != 0).unwrap_or(0) + 1 + 1024;
        let end = end.div_ceil(512) * 512;
        // Byte 0: no read-size bytes (the stream hands out what is asked).
        bundle.push((
            name.to_string(),
            [&[0u8][..], &img[..end.min(img.len())]].concat(),
        ));
    }
    // The same image read in short pieces: 3 sizes, 64, 320 and 1088 bytes.
    let chunked = [&[3u8, 1, 5, 17][..], &bundle[0].1[1..]].concat();
    bundle.push(("one-payload-chunked.tar".into(), chunked));
    let refs: Vec<(&str, Vec<u8>)> = bundle
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect();
    write_seeds("bundle", &refs);
    let refs: Vec<(&str, Vec<u8>)> = manifests
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect();
    write_seeds("manifest", &refs);

    // chain: mode 0 is signer.pem as text, mode 1 the certificates as DER with 2-byte lengths.
    let pem = &chains[0];
    let ders: Vec<Vec<u8>> = openssl::x509::X509::stack_from_pem(pem)
        .unwrap()
        .iter()
        .map(|c| c.to_der().unwrap())
        .collect();
    let mut der_seed = vec![1u8];
    for d in &ders {
        der_seed.extend_from_slice(&(d.len() as u16).to_be_bytes());
        der_seed.extend_from_slice(d);
    }
    write_seeds(
        "chain",
        &[
            ("signer-pem", [&[0u8][..], pem].concat()),
            ("signer-der", der_seed),
            ("signer-only-der", {
                let mut s = vec![1u8];
                s.extend_from_slice(&(ders[0].len() as u16).to_be_bytes());
                s.extend_from_slice(&ders[0]);
                s
            }),
        ],
    );
}

/// Control packets the WTP sends and the AC answers with, and a fragmented one.
fn packets() -> Vec<(String, Vec<u8>)> {
    let id = Identity::default();
    let v = Versions {
        primary: "17.9.4.27".into(),
        backup: Some("17.3.3.26".into()),
    };
    let mut b = wtpd::capwap::PacketBuilder::new();
    let mut out = vec![
        (
            "discovery-request".to_string(),
            messages::discovery_request(&mut b, 1, TargetKind::Static, &id, &v).to_vec(),
        ),
        (
            "join-request".into(),
            messages::join_request(&mut b, 2, &id, &v, &[7; 16], Some([10, 0, 0, 2].into()))
                .to_vec(),
        ),
        (
            "configuration-status-request".into(),
            messages::configuration_status_request(&mut b, 3, &id, "ac-1", 120).to_vec(),
        ),
        (
            "change-state-event-request".into(),
            messages::change_state_event_request(&mut b, 4, &id).to_vec(),
        ),
        (
            "echo-request".into(),
            messages::echo_request(&mut b, 5).to_vec(),
        ),
    ];
    let desc = AcDescriptor {
        stations: 0,
        station_limit: 10,
        active_wtps: 1,
        max_wtps: 10,
        security: 0x02,
        r_mac: 2,
        dtls_policy: 2,
        info: vec![],
    };
    let md5 = [0x5a; 16];
    for (name, msg) in [
        (
            "discovery-response",
            build(
                MessageType::DiscoveryResponse as u32,
                1,
                &[
                    Element::AcDescriptor(desc),
                    Element::AcName("ac-1"),
                    Element::ControlIpv4 {
                        addr: [192, 0, 2, 1].into(),
                        wtp_count: 1,
                    },
                    Element::WtpRadioInformation {
                        radio_id: 1,
                        radio_type: 8,
                    },
                ],
            ),
        ),
        (
            "join-response",
            build(
                MessageType::JoinResponse as u32,
                2,
                &[
                    Element::ResultCode(0),
                    Element::ImageIdentifier {
                        vendor: 32473,
                        name: "17.12.1.5",
                    },
                    Element::AcNameWithPriority {
                        priority: 1,
                        name: "ac-1",
                    },
                ],
            ),
        ),
        (
            "image-data-request",
            build(
                MessageType::ImageDataRequest as u32,
                9,
                &[Element::ImageData {
                    data_type: image_data_type::DATA,
                    data: &[0xab; 64],
                }],
            ),
        ),
        (
            "image-data-response",
            build(
                MessageType::ImageDataResponse as u32,
                9,
                &[
                    Element::ResultCode(0),
                    Element::ImageInformation {
                        file_size: 4096,
                        md5,
                    },
                ],
            ),
        ),
        (
            "configuration-status-response",
            build(
                MessageType::ConfigurationStatusResponse as u32,
                3,
                &[
                    Element::CapwapTimers {
                        discovery: 5,
                        echo_request: 30,
                    },
                    Element::IdleTimeout(300),
                ],
            ),
        ),
        (
            "reset-request",
            build(
                MessageType::ResetRequest as u32,
                10,
                &[Element::ImageIdentifier {
                    vendor: 32473,
                    name: "17.12.1.5",
                }],
            ),
        ),
        (
            "vendor-specific",
            build(
                MessageType::WtpEventRequest as u32,
                11,
                &[Element::VendorSpecific {
                    vendor: 32473,
                    element_id: 1,
                    data: b"download failed",
                }],
            ),
        ),
    ] {
        out.push((name.to_string(), msg));
    }
    // A payload too big for one packet, cut into fragments (the first and the last kept).
    let big = build(
        MessageType::ImageDataRequest as u32,
        12,
        &[Element::ImageData {
            data_type: image_data_type::DATA,
            data: &[0x11; 600],
        }],
    );
    let payload = Packet::parse(&big).unwrap().payload;
    let mut frags = Vec::new();
    fragment(&Header::control(), payload, 300, 77, &mut frags);
    out.push(("fragment-first".into(), frags[0].clone()));
    out.push((
        "fragment-last".into(),
        frags.last().cloned().unwrap_or_default(),
    ));
    out
}

/// Copies of one or two environment copies in both byte orders (input format of the bootenv
/// target: a config byte, then the copies).
fn bootenv() -> Vec<(String, Vec<u8>)> {
    let env = Env::from_pairs([
        ("boot_slot", "a"),
        ("bootcount", "0"),
        ("bootlimit", "3"),
        ("upgrade_available", "0"),
        ("slot_a_version", "17.9.4.27"),
        ("slot_a_state", "good"),
        ("slot_b_version", "17.3.3.26"),
        ("slot_b_state", "good"),
        ("bootcmd", "run distro_bootcmd"),
    ])
    .unwrap();
    let mut out = Vec::new();
    for (order, bit) in [(ByteOrder::Little, 0u8), (ByteOrder::Big, 2)] {
        let single = encode(&env, 512, order, None).unwrap();
        out.push((format!("single-{order:?}"), [&[bit][..], &single].concat()));
        let a = encode(&env, 512, order, Some(4)).unwrap();
        let mut older = env.clone();
        older.set("boot_slot", "b").unwrap();
        let b = encode(&older, 512, order, Some(3)).unwrap();
        out.push((
            format!("redundant-{order:?}"),
            [&[bit | 1][..], &a, &b].concat(),
        ));
        // Flags that wrapped: copy 1 (flag 0) is newer than copy 0 (flag 255).
        let a = encode(&env, 512, order, Some(255)).unwrap();
        let b = encode(&older, 512, order, Some(0)).unwrap();
        out.push((
            format!("redundant-wrapped-{order:?}"),
            [&[bit | 1][..], &a, &b].concat(),
        ));
    }
    out
}

fn board_files(ext: &str, dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn text_seeds(target: &str, seeds: &[(&str, &str)]) {
    let v: Vec<(&str, Vec<u8>)> = seeds
        .iter()
        .map(|(n, t)| (*n, t.as_bytes().to_vec()))
        .collect();
    write_seeds(target, &v);
}

fn owned(target: &str, seeds: Vec<(String, Vec<u8>)>) {
    let v: Vec<(&str, Vec<u8>)> = seeds.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    write_seeds(target, &v);
}

#[test]
#[ignore = "writes fuzz/corpus-seeds and fuzz/data; run by hand when a format changes"]
fn write_fuzz_seeds() {
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz_seeds");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));

    images(&work);
    owned("packet", packets());
    owned("fleet", fleet_seeds());
    owned("bootenv", bootenv());
    owned("board", board_files("toml", &root.join("board")));
    owned(
        "fw_env_config",
        board_files("config", &root.join("board/fw_env")),
    );

    let status_dir = work.join("status");
    let mut st = WtpStatus {
        name: "wtp-sim-1".into(),
        state: "Image Data".into(),
        controller: "acsim (192.0.2.1)".into(),
        primary: "17.9.4.27".into(),
        backup: "17.3.3.26".into(),
        download_state: "Downloading".into(),
        download_version: "17.12.1.5".into(),
        percent: Some(42),
        bytes: 123_456,
        size: Some(300_000),
        eta_secs: Some(12),
        retry_count: 1,
        next_retry_unix: Some(1_700_000_000),
        last_error: "TFTP: File not found".into(),
        method: "capwap".into(),
    };
    st.save(&status_dir).unwrap();
    let full = fs::read(status_dir.join(wtpd::status::STATUS_FILE)).unwrap();
    st = WtpStatus::default();
    st.save(&status_dir).unwrap();
    let empty = fs::read(status_dir.join(wtpd::status::STATUS_FILE)).unwrap();
    owned(
        "status",
        vec![
            ("downloading.toml".into(), full),
            ("default.toml".into(), empty),
        ],
    );

    // From src/wtp/discovery.rs's test and docs/configuration.md.
    text_seeds(
        "dhcp_opt43",
        &[
            (
                "udhcpc",
                "# from udhcpc\n192.0.2.7\n198.51.100.1:15246\nopt43=f108c0000205c0000206\n\
                 f1:04:0a:00:00:01\n[2001:db8::1]:5246\n",
            ),
            ("opt43-two-suboptions", "opt43=0102abcdf104c0000207\n"),
        ],
    );
    // The server's side of a download: as tftpd-hpa, atftp and nginx answer (tests/fetch_*).
    let tftp: Vec<(String, Vec<u8>)> = vec![
        (
            "oack".into(),
            b"\0\x06blksize\x001468\0tsize\x0070512640\0".to_vec(),
        ),
        (
            "oack-window".into(),
            b"\0\x06blksize\x001024\0windowsize\x004\0timeout\x001\0".to_vec(),
        ),
        ("data".into(), [&[0u8, 3, 0, 1][..], &[0x42; 512]].concat()),
        (
            "error-not-found".into(),
            b"\0\x05\0\x01File not found\0".to_vec(),
        ),
    ];
    // Byte 0 of a tftp seed: the blksize/windowsize asked (see the target).
    owned(
        "tftp",
        tftp.into_iter()
            .map(|(n, p)| (n, [&[0x5c, 0x05, 0x04][..], &p].concat()))
            .collect(),
    );
    text_seeds(
        "http",
        &[
            (
                "content-length",
                "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: 5\r\nConnection: close\r\n\r\nhello",
            ),
            (
                "chunked",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n",
            ),
            ("to-close", "HTTP/1.0 200 OK\r\n\r\nuntil the end"),
            (
                "not-found",
                "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
            ),
            (
                "redirect",
                "HTTP/1.1 301 Moved Permanently\r\nLocation: https://192.0.2.1/x\r\n\r\n",
            ),
            (
                "partial-content",
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-4/10\r\nContent-Length: 5\r\n\r\nhello",
            ),
        ],
    );
    // The structure-aware targets read their input with `arbitrary`: any bytes make a case;
    // these give the fuzzer a few long ones to start from.
    for target in ["fragment", "wtp"] {
        let seeds: Vec<(String, Vec<u8>)> = (0..4u32)
            .map(|n| {
                let len = 64 << n;
                let mut x = 0x9e37_79b9u32.wrapping_mul(n + 1);
                let bytes = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect();
                (format!("xorshift-{len}"), bytes)
            })
            .collect();
        owned(target, seeds);
    }
}

/// The fleet target's seeds (fuzz/fuzz_targets/fleet.rs): a selector byte (0 Offer, 1
/// Direction, 2 Report, 3 a datagram at the primary's TFTP server), a byte of active
/// transfers, then the payload, each from the code's own encoders.
fn fleet_seeds() -> Vec<(String, Vec<u8>)> {
    use wtpd::capwap::fleet::{Direction, Method, Offer, Report, ReportState, Role};
    let with = |sel: u8, f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = vec![sel, 1];
        f(&mut v);
        v
    };
    let offer = Offer {
        image_type: Some("ap1g8".into()),
        caps: 7,
        server: Some("127.0.0.1:69".parse().unwrap()),
        retry: 3,
        fallback: false,
    };
    let sub = Direction {
        role: Role::Subordinate,
        method: Method::Tftp,
        server: Some("[2001:db8::1]:69".parse().unwrap()),
        file: Some("ap1g8".into()),
        ..Direction::default()
    };
    let https = Direction {
        role: Role::Primary,
        method: Method::Https,
        url: Some("https://127.0.0.1:8443/ap1g8".into()),
        pin: Some([9; 32]),
        size: Some(1 << 20),
        ..Direction::default()
    };
    let report = Report {
        state: ReportState::Fetching,
        bytes: 4096,
        total: Some(1 << 20),
        method: Method::Tftp,
        retry: 1,
    };
    let rrq = b"\x00\x01ap1g8\x00octet\x00blksize\x001468\x00windowsize\x008\x00tsize\x000\x00";
    vec![
        ("offer".into(), with(0, &|v| offer.encode(v))),
        ("direction-tftp".into(), with(1, &|v| sub.encode(v))),
        ("direction-https".into(), with(1, &|v| https.encode(v))),
        ("report".into(), with(2, &|v| report.encode(v))),
        ("rrq".into(), with(3, &|v| v.extend_from_slice(rrq))),
    ]
}

#[test]
#[ignore = "writes fuzz/corpus-seeds/fleet; run by hand when the fleet format changes"]
fn write_fleet_seeds() {
    owned("fleet", fleet_seeds());
}
