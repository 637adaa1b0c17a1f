//! Helpers shared by the codec's unit tests: a seeded PRNG, one sample of every element
//! variant, a classic-pcap writer for the tshark check and an allocation counter.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::element::{AcDescriptor, BoardDataItem, DescriptorInfo, Element, WtpDescriptor};

/// SplitMix64: small, seeded, good enough to generate test inputs.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

pub const MAC6: &[u8] = &[0x00, 0x11, 0x22, 0x33, 0x44, 0x55];
pub const MAC8: &[u8] = &[0x00, 0x11, 0x22, 0xff, 0xfe, 0x33, 0x44, 0x55];
pub const SESSION: &[u8] = &[0xa5; 16];

/// One (or more) values of every [`Element`] variant, with reserved bits zero so that
/// emitting them and parsing back gives the same value and the same bytes.
pub fn sample_elements() -> Vec<Element<'static>> {
    let ac_info = vec![
        DescriptorInfo {
            vendor: 0,
            typ: 4,
            data: b"hw-1",
        },
        DescriptorInfo {
            vendor: 0,
            typ: 5,
            data: b"8.10.1",
        },
    ];
    vec![
        Element::AcDescriptor(AcDescriptor {
            stations: 10,
            station_limit: 1000,
            active_wtps: 3,
            max_wtps: 500,
            security: 0x06,
            r_mac: 1,
            dtls_policy: 0x04,
            info: ac_info,
        }),
        Element::AcIpv4List(vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]),
        Element::AcIpv6List(vec![Ipv6Addr::LOCALHOST, "2001:db8::1".parse().unwrap()]),
        Element::AcName("controller-1"),
        Element::AcNameWithPriority {
            priority: 1,
            name: "primary",
        },
        Element::AcTimestamp(0xe123_4567),
        Element::ControlIpv4 {
            addr: Ipv4Addr::new(192, 0, 2, 1),
            wtp_count: 7,
        },
        Element::ControlIpv6 {
            addr: "2001:db8::2".parse().unwrap(),
            wtp_count: 65535,
        },
        Element::CapwapTimers {
            discovery: 5,
            echo_request: 30,
        },
        Element::DiscoveryType(1),
        Element::IdleTimeout(300),
        Element::ImageData {
            data_type: 1,
            data: &[0x5a; 1377],
        },
        Element::ImageData {
            data_type: 2,
            data: b"tail",
        },
        Element::ImageData {
            data_type: 5,
            data: b"",
        },
        Element::ImageIdentifier {
            vendor: 14179,
            name: "ap-fw-1.2.3",
        },
        Element::ImageInformation {
            file_size: 123_456,
            md5: [0x11; 16],
        },
        Element::InitiateDownload,
        Element::LocationData("Next to Fridge"),
        Element::MaximumMessageLength(4096),
        Element::LocalIpv4(Ipv4Addr::new(192, 0, 2, 10)),
        Element::LocalIpv6("fe80::1".parse().unwrap()),
        Element::RadioAdministrativeState {
            radio_id: 0xff,
            state: 1,
        },
        Element::RadioOperationalState {
            radio_id: 1,
            state: 2,
            cause: 3,
        },
        Element::ResultCode(2),
        Element::ReturnedMessageElement {
            reason: 1,
            element: &[0x03, 0xe7, 0x00, 0x01, 0x09],
        },
        Element::SessionId(SESSION),
        Element::StatisticsTimer(120),
        Element::VendorSpecific {
            vendor: 14179,
            element_id: 42,
            data: b"\x01\x02\x03",
        },
        Element::WtpBoardData {
            vendor: 14179,
            items: vec![
                BoardDataItem {
                    typ: 0,
                    data: b"AP-100",
                },
                BoardDataItem {
                    typ: 1,
                    data: b"SN0001",
                },
                BoardDataItem { typ: 4, data: MAC6 },
            ],
        },
        Element::WtpDescriptor(WtpDescriptor {
            max_radios: 2,
            radios_in_use: 2,
            encryption: vec![(1, 0x0000), (3, 0x1234)],
            info: vec![
                DescriptorInfo {
                    vendor: 0,
                    typ: 0,
                    data: b"rev-a",
                },
                DescriptorInfo {
                    vendor: 0,
                    typ: 1,
                    data: b"1.2.3",
                },
                DescriptorInfo {
                    vendor: 0,
                    typ: 2,
                    data: b"boot-7",
                },
                DescriptorInfo {
                    vendor: 14179,
                    typ: 9,
                    data: b"",
                },
            ],
        }),
        Element::WtpFallback(1),
        Element::WtpFrameTunnelMode(0x02),
        Element::WtpMacType(0),
        Element::WtpName("ap-lobby"),
        Element::WtpRebootStatistics {
            reboot_count: 1,
            ac_initiated: 2,
            link_failure: 3,
            sw_failure: 4,
            hw_failure: 5,
            other_failure: 6,
            unknown_failure: 7,
            last_failure_type: 255,
        },
        Element::TransportProtocol(2),
        Element::EcnSupport(0),
        Element::WtpRadioInformation {
            radio_id: 1,
            radio_type: 0x0000_000d,
        },
        Element::AddMacAclEntry(vec![MAC6, MAC8]),
        Element::AddStation {
            radio_id: 1,
            mac: MAC6,
            vlan_name: Some("guests"),
        },
        Element::AddStation {
            radio_id: 2,
            mac: MAC8,
            vlan_name: None,
        },
        Element::DataTransferData {
            data_type: 1,
            data_mode: 2,
            data: b"core dump",
        },
        Element::DataTransferMode(1),
        Element::DecryptionErrorReport {
            radio_id: 1,
            macs: vec![MAC6],
        },
        Element::DecryptionErrorReportPeriod {
            radio_id: 1,
            interval: 120,
        },
        Element::DeleteMacAclEntry(vec![MAC6]),
        Element::DeleteStation {
            radio_id: 1,
            mac: MAC6,
        },
        Element::DuplicateIpv4 {
            addr: Ipv4Addr::new(192, 0, 2, 10),
            status: 1,
            mac: MAC6,
        },
        Element::DuplicateIpv6 {
            addr: "2001:db8::10".parse().unwrap(),
            status: 0,
            mac: MAC8,
        },
        Element::MtuDiscoveryPadding(100),
        Element::MtuDiscoveryPadding(0),
        Element::WtpRadioStatistics {
            radio_id: 1,
            last_failure_type: 3,
            reset_count: 1,
            sw_failure: 2,
            hw_failure: 3,
            other_failure: 4,
            unknown_failure: 5,
            config_update: 6,
            channel_change: 7,
            band_change: 8,
            noise_floor: -95,
        },
        Element::WtpStaticIpInfo {
            addr: Ipv4Addr::new(192, 0, 2, 20),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            gateway: Ipv4Addr::new(192, 0, 2, 1),
            static_ip: 1,
        },
        Element::Unknown {
            typ: 1040,
            value: &[1, 2, 3, 4, 5],
        },
        Element::Unknown {
            typ: 0xffff,
            value: b"",
        },
    ]
}

/// Wraps CAPWAP datagrams into a classic pcap (Ethernet, IPv4, UDP to `dst_port`).
pub fn pcap(datagrams: &[Vec<u8>], dst_port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [
        0xa1b2_c3d4u32.to_le_bytes(),
        [2, 0, 4, 0],
        [0; 4],
        [0; 4],
        65535u32.to_le_bytes(),
        1u32.to_le_bytes(),
    ] {
        out.extend_from_slice(&v);
    }
    for (i, d) in datagrams.iter().enumerate() {
        let mut frame = Vec::new();
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // dst
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // src
        frame.extend_from_slice(&[0x08, 0x00]);
        let total = 20 + 8 + d.len();
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            i as u8,
            0,
            0,
            64,
            17,
            0,
            0,
        ];
        ip.extend_from_slice(&[192, 0, 2, 10, 192, 0, 2, 1]);
        let mut sum: u32 = ip
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let csum = !(sum as u16);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        frame.extend_from_slice(&ip);
        let ulen = (8 + d.len()) as u16;
        frame.extend_from_slice(&40000u16.to_be_bytes());
        frame.extend_from_slice(&dst_port.to_be_bytes());
        frame.extend_from_slice(&ulen.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(d);
        out.extend_from_slice(&(i as u32 + 1).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    out
}

/// Counts allocations made by the current thread, so a test can assert that a call allocates
/// nothing while other tests run in parallel.
pub struct CountingAlloc;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Allocations the current thread made while running `f`.
pub fn allocations<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCS.with(Cell::get);
    let r = f();
    (r, ALLOCS.with(Cell::get) - before)
}
