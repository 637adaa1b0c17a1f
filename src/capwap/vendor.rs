//! This project's vendor-specific wire numbers (RFC 5415 §4.6.39, Vendor Specific Payload),
//! shared by the WTP and the AC.

/// IANA Private Enterprise Number 32473, reserved for documentation and examples (RFC 5612):
/// the default vendor identifier until a vendor sets its own. CAPWAP requires a non-zero one.
pub const EXAMPLE_ENTERPRISE: u32 = 32473;

/// Vendor Specific element id under the configured vendor id: an image download failure, its
/// reason as UTF-8 text. The WTP sends it in an Image Data Response that refuses a request
/// (§9.1.2) and, in Run, in a WTP Event Request (§9.4).
pub const DOWNLOAD_FAILURE: u16 = 1;

/// Vendor Specific element id: what a WTP can do in a fleet upgrade, in its Join Request and
/// Image Data Requests ([`super::fleet::Offer`]).
pub const FLEET_OFFER: u16 = 2;

/// Vendor Specific element id: where the WTP gets its image from, in the AC's Image Data
/// Response ([`super::fleet::Direction`]).
pub const FLEET_DIRECTION: u16 = 3;

/// Vendor Specific element id: how a download the AC does not carry goes, in a WTP Event
/// Request ([`super::fleet::Report`]).
pub const FLEET_REPORT: u16 = 4;
