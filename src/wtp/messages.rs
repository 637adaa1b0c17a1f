//! The messages the WTP writes, one function each, into the shared [`PacketBuilder`].

use std::net::IpAddr;

use crate::capwap::element::{BoardDataItem, DescriptorInfo, WtpDescriptor};
use crate::capwap::header::Header;
use crate::capwap::{Element, MessageType, PacketBuilder};

pub use crate::capwap::keepalive::{keep_alive, keep_alive_session};

use super::config::{Identity, Versions};
use super::discovery::TargetKind;

/// Radio ID 255 addresses the WTP itself in Radio Administrative State (§4.6.33).
const WTP_RADIO_ID: u8 = 255;

fn descriptor<'a>(id: &'a Identity, v: &'a Versions) -> WtpDescriptor<'a> {
    let mut info = vec![
        DescriptorInfo {
            vendor: id.vendor_id,
            typ: 0,
            data: id.hardware_version.as_bytes(),
        },
        DescriptorInfo {
            vendor: id.vendor_id,
            typ: 1,
            data: v.primary.as_bytes(),
        },
        DescriptorInfo {
            vendor: id.vendor_id,
            typ: 2,
            data: id.boot_version.as_bytes(),
        },
    ];
    if let Some(b) = &v.backup {
        info.push(DescriptorInfo {
            vendor: id.vendor_id,
            typ: 3,
            data: b.as_bytes(),
        });
    }
    WtpDescriptor {
        max_radios: id.radios.len() as u8,
        radios_in_use: id.radios.len() as u8,
        encryption: vec![(crate::capwap::header::WBID_IEEE80211, 0)],
        info,
    }
}

fn board_data<'a>(id: &'a Identity, mac: &'a [u8; 6]) -> Element<'a> {
    Element::WtpBoardData {
        vendor: id.vendor_id,
        items: vec![
            BoardDataItem {
                typ: 0,
                data: id.model.as_bytes(),
            },
            BoardDataItem {
                typ: 1,
                data: id.serial.as_bytes(),
            },
            BoardDataItem { typ: 4, data: mac },
        ],
    }
}

/// Elements common to Discovery and Join (§5.1, §6.1).
fn common<'a>(b: &mut PacketBuilder, id: &'a Identity, v: &'a Versions, mac: &'a [u8; 6]) {
    b.element(&board_data(id, mac));
    b.element(&Element::WtpDescriptor(descriptor(id, v)));
    // Local bridging (L) in Local MAC mode.
    b.element(&Element::WtpFrameTunnelMode(0x02));
    b.element(&Element::WtpMacType(0));
    for r in &id.radios {
        b.element(&Element::WtpRadioInformation {
            radio_id: r.id,
            radio_type: r.radio_type,
        });
    }
}

pub fn discovery_request<'b>(
    b: &'b mut PacketBuilder,
    seq: u8,
    kind: TargetKind,
    id: &Identity,
    v: &Versions,
) -> &'b [u8] {
    let mac = id.mac_bytes();
    b.start(
        &Header::control(),
        MessageType::DiscoveryRequest as u32,
        seq,
    );
    b.element(&Element::DiscoveryType(kind as u8));
    common(b, id, v, &mac);
    b.finish()
}

#[allow(clippy::too_many_arguments)]
pub fn join_request<'b>(
    b: &'b mut PacketBuilder,
    seq: u8,
    id: &Identity,
    v: &Versions,
    session_id: &[u8; 16],
    local: Option<IpAddr>,
) -> &'b [u8] {
    let mac = id.mac_bytes();
    b.start(&Header::control(), MessageType::JoinRequest as u32, seq);
    b.element(&Element::LocationData(&id.location));
    common(b, id, v, &mac);
    b.element(&Element::WtpName(&id.name));
    b.element(&Element::SessionId(session_id));
    match local {
        Some(IpAddr::V4(a)) => {
            b.element(&Element::LocalIpv4(a));
        }
        Some(IpAddr::V6(a)) => {
            b.element(&Element::LocalIpv6(a));
        }
        None => {}
    }
    // 2 = UDP (§4.6.14).
    b.element(&Element::TransportProtocol(2));
    b.element(&Element::EcnSupport(0));
    b.finish()
}

pub fn configuration_status_request<'b>(
    b: &'b mut PacketBuilder,
    seq: u8,
    id: &Identity,
    ac_name: &str,
    statistics_timer: u16,
) -> &'b [u8] {
    b.start(
        &Header::control(),
        MessageType::ConfigurationStatusRequest as u32,
        seq,
    );
    b.element(&Element::AcName(ac_name));
    b.element(&Element::RadioAdministrativeState {
        radio_id: WTP_RADIO_ID,
        state: 1,
    });
    for r in &id.radios {
        b.element(&Element::RadioAdministrativeState {
            radio_id: r.id,
            state: 1,
        });
    }
    b.element(&Element::StatisticsTimer(statistics_timer));
    b.element(&Element::WtpRebootStatistics {
        reboot_count: 0,
        ac_initiated: 0,
        link_failure: 0,
        sw_failure: 0,
        hw_failure: 0,
        other_failure: 0,
        unknown_failure: 0,
        last_failure_type: 0,
    });
    b.finish()
}

pub fn change_state_event_request<'b>(
    b: &'b mut PacketBuilder,
    seq: u8,
    id: &Identity,
) -> &'b [u8] {
    b.start(
        &Header::control(),
        MessageType::ChangeStateEventRequest as u32,
        seq,
    );
    for r in &id.radios {
        // Enabled (1), no failure cause.
        b.element(&Element::RadioOperationalState {
            radio_id: r.id,
            state: 1,
            cause: 0,
        });
    }
    b.element(&Element::ResultCode(0));
    b.finish()
}

pub fn echo_request(b: &mut PacketBuilder, seq: u8) -> &[u8] {
    b.start(&Header::control(), MessageType::EchoRequest as u32, seq);
    b.finish()
}

/// A response carrying only a Result Code (or nothing, for an Echo Response).
pub fn response(b: &mut PacketBuilder, request_type: u32, seq: u8, result: Option<u32>) -> &[u8] {
    b.start(&Header::control(), request_type.wrapping_add(1), seq);
    if let Some(code) = result {
        b.element(&Element::ResultCode(code));
    }
    b.finish()
}

/// A response with a failure Result Code and why, as a Vendor Specific Payload (§4.6.39) under
/// `vendor` (the Image Data Response may carry one, §9.1.2).
pub fn response_with_reason<'b>(
    b: &'b mut PacketBuilder,
    request_type: u32,
    seq: u8,
    result: u32,
    vendor: u32,
    element_id: u16,
    reason: &str,
) -> &'b [u8] {
    b.start(&Header::control(), request_type.wrapping_add(1), seq);
    b.element(&Element::ResultCode(result));
    // The element's value has a 16-bit length: keep the text well inside it.
    let mut end = reason.len().min(1024);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    b.element(&Element::VendorSpecific {
        vendor,
        element_id,
        data: &reason.as_bytes()[..end],
    });
    b.finish()
}
