//! This project's vendor-specific wire numbers (RFC 5415 §4.6.39, Vendor Specific Payload),
//! shared by the WTP and the AC.

/// IANA Private Enterprise Number 32473, reserved for documentation and examples (RFC 5612):
/// the default vendor identifier until a vendor sets its own. CAPWAP requires a non-zero one.
pub const EXAMPLE_ENTERPRISE: u32 = 32473;

/// Vendor Specific element id under the configured vendor id: an image download failure, its
/// reason as UTF-8 text. The WTP sends it in an Image Data Response that refuses a request
/// (§9.1.2) and, in Run, in a WTP Event Request (§9.4).
pub const DOWNLOAD_FAILURE: u16 = 1;
