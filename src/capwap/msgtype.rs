//! Message type numbers (RFC 5415 §4.5.1.1) and Result Codes (§4.6.35), each declared once
//! in a table below: number, name, the RFC section that defines it, and for a message its
//! response.

/// Writes [`MessageType`] from rows of `request => response`, each side `"§section" number
/// Variant "Name"`. Requests are odd, their responses the next even number.
macro_rules! message_types {
    ($(
        $req_section:literal $req_num:literal $req:ident $req_name:literal =>
        $resp_section:literal $resp_num:literal $resp:ident $resp_name:literal,
    )*) => {
        /// The control message types RFC 5415 defines. Requests are odd, their responses the
        /// next even.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum MessageType {
            $(
                #[doc = concat!($req_name, " (", $req_section, ").")]
                $req = $req_num,
                #[doc = concat!($resp_name, " (", $resp_section, ").")]
                $resp = $resp_num,
            )*
        }

        impl MessageType {
            /// Every message type, in numeric order.
            pub const ALL: [MessageType; [$($req_num),*].len() * 2] =
                [$(MessageType::$req, MessageType::$resp,)*];

            /// The type for a raw value; `None` for a non-zero enterprise number or an unknown
            /// type.
            pub fn from_u32(v: u32) -> Option<Self> {
                match v {
                    $($req_num => Some(MessageType::$req),
                    $resp_num => Some(MessageType::$resp),)*
                    _ => None,
                }
            }

            /// The response type that answers this request; `None` for a response.
            pub fn response(self) -> Option<Self> {
                match self {
                    $(MessageType::$req => Some(MessageType::$resp),)*
                    _ => None,
                }
            }

            /// The name Wireshark and the RFC use, for logs.
            pub fn name(self) -> &'static str {
                match self {
                    $(MessageType::$req => $req_name,
                    MessageType::$resp => $resp_name,)*
                }
            }

            /// The section of RFC 5415 that defines the message.
            pub fn section(self) -> &'static str {
                match self {
                    $(MessageType::$req => $req_section,
                    MessageType::$resp => $resp_section,)*
                }
            }
        }
    };
}

#[rustfmt::skip]
message_types! {
    "§5.1"   1 DiscoveryRequest "Discovery Request"
        => "§5.2"   2 DiscoveryResponse "Discovery Response",
    "§6.1"   3 JoinRequest "Join Request"
        => "§6.2"   4 JoinResponse "Join Response",
    "§8.2"   5 ConfigurationStatusRequest "Configuration Status Request"
        => "§8.3"   6 ConfigurationStatusResponse "Configuration Status Response",
    "§8.4"   7 ConfigurationUpdateRequest "Configuration Update Request"
        => "§8.5"   8 ConfigurationUpdateResponse "Configuration Update Response",
    "§9.4"   9 WtpEventRequest "WTP Event Request"
        => "§9.5"  10 WtpEventResponse "WTP Event Response",
    "§8.6"  11 ChangeStateEventRequest "Change State Event Request"
        => "§8.7"  12 ChangeStateEventResponse "Change State Event Response",
    "§7.1"  13 EchoRequest "Echo Request"
        => "§7.2"  14 EchoResponse "Echo Response",
    "§9.1.1" 15 ImageDataRequest "Image Data Request"
        => "§9.1.2" 16 ImageDataResponse "Image Data Response",
    "§9.2"  17 ResetRequest "Reset Request"
        => "§9.3"  18 ResetResponse "Reset Response",
    "§5.3"  19 PrimaryDiscoveryRequest "Primary Discovery Request"
        => "§5.4"  20 PrimaryDiscoveryResponse "Primary Discovery Response",
    "§9.6.1" 21 DataTransferRequest "Data Transfer Request"
        => "§9.6.2" 22 DataTransferResponse "Data Transfer Response",
    "§8.8"  23 ClearConfigurationRequest "Clear Configuration Request"
        => "§8.9"  24 ClearConfigurationResponse "Clear Configuration Response",
    "§10.1" 25 StationConfigurationRequest "Station Configuration Request"
        => "§10.2" 26 StationConfigurationResponse "Station Configuration Response",
}

impl MessageType {
    /// The raw 32-bit value (enterprise number 0).
    pub fn as_u32(self) -> u32 {
        self as u32
    }
    /// True for requests (odd values).
    pub fn is_request(self) -> bool {
        is_request(self as u32)
    }
}

/// True when a raw message type value is a request (odd), whatever its enterprise number.
pub fn is_request(msg_type: u32) -> bool {
    msg_type % 2 == 1
}

/// Writes [`ResultCode`] from rows of `number Variant "the RFC's words"` (all §4.6.35).
macro_rules! result_codes {
    ($($num:literal $code:ident $words:literal,)*) => {
        /// Result Code values (§4.6.35).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum ResultCode {
            $(#[doc = concat!($words, ".")] $code = $num,)*
        }

        impl ResultCode {
            /// Every result code, in numeric order.
            pub const ALL: [ResultCode; [$($num),*].len()] = [$(ResultCode::$code,)*];

            pub fn from_u32(v: u32) -> Option<Self> {
                match v {
                    $($num => Some(ResultCode::$code),)*
                    _ => None,
                }
            }

            /// The RFC's words, for logs.
            pub fn describe(self) -> &'static str {
                match self {
                    $(ResultCode::$code => $words,)*
                }
            }
        }
    };
}

#[rustfmt::skip]
result_codes! {
    0 Success "Success",
    1 FailureAcList "Failure (AC List Message Element MUST Be Present)",
    2 SuccessNat "Success (NAT Detected)",
    3 JoinFailureUnspecified "Join Failure (Unspecified)",
    4 JoinFailureResourceDepletion "Join Failure (Resource Depletion)",
    5 JoinFailureUnknownSource "Join Failure (Unknown Source)",
    6 JoinFailureIncorrectData "Join Failure (Incorrect Data)",
    7 JoinFailureSessionIdInUse "Join Failure (Session ID Already in Use)",
    8 JoinFailureHardwareNotSupported "Join Failure (WTP Hardware Not Supported)",
    9 JoinFailureBindingNotSupported "Join Failure (Binding Not Supported)",
    10 ResetFailureUnableToReset "Reset Failure (Unable to Reset)",
    11 ResetFailureFirmwareWriteError "Reset Failure (Firmware Write Error)",
    12 ConfigurationFailureServiceProvided
        "Configuration Failure (Unable to Apply Requested Configuration - Service Provided Anyhow)",
    13 ConfigurationFailureServiceNotProvided
        "Configuration Failure (Unable to Apply Requested Configuration - Service Not Provided)",
    14 ImageDataErrorInvalidChecksum "Image Data Error (Invalid Checksum)",
    15 ImageDataErrorInvalidDataLength "Image Data Error (Invalid Data Length)",
    16 ImageDataErrorOther "Image Data Error (Other Error)",
    17 ImageDataErrorImageAlreadyPresent "Image Data Error (Image Already Present)",
    18 MessageUnexpectedInvalidInCurrentState "Message Unexpected (Invalid in Current State)",
    19 MessageUnexpectedUnrecognizedRequest "Message Unexpected (Unrecognized Request)",
    20 FailureMissingMandatoryElement "Failure - Missing Mandatory Message Element",
    21 FailureUnrecognizedElement "Failure - Unrecognized Message Element",
    22 DataTransferErrorNoInformation "Data Transfer Error (No Information to Transfer)",
}

impl ResultCode {
    /// The raw 32-bit value.
    pub fn as_u32(self) -> u32 {
        self as u32
    }
    /// True for 0 (Success) and 2 (Success, NAT detected).
    pub fn is_success(self) -> bool {
        matches!(self, ResultCode::Success | ResultCode::SuccessNat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_match_rfc_table() {
        for (i, t) in MessageType::ALL.iter().enumerate() {
            assert_eq!(*t as u32, i as u32 + 1);
            assert_eq!(MessageType::from_u32(i as u32 + 1), Some(*t));
            assert_eq!(t.is_request(), i % 2 == 0);
            assert_eq!(
                t.name().ends_with("Request"),
                t.is_request(),
                "{}",
                t.name()
            );
        }
        assert_eq!(MessageType::from_u32(0), None);
        assert_eq!(MessageType::from_u32(27), None);
        assert_eq!(
            MessageType::from_u32(0x100 | 1),
            None,
            "enterprise number 1"
        );
        assert_eq!(MessageType::ImageDataRequest as u32, 15);
        assert_eq!(MessageType::ResetRequest as u32, 17);
        assert_eq!(MessageType::ConfigurationUpdateRequest as u32, 7);
        assert_eq!(MessageType::ImageDataRequest.name(), "Image Data Request");
        assert_eq!(MessageType::WtpEventResponse.name(), "WTP Event Response");
        assert_eq!(
            MessageType::JoinRequest.response(),
            Some(MessageType::JoinResponse)
        );
        assert_eq!(MessageType::JoinResponse.response(), None);
        for t in MessageType::ALL.iter().filter(|t| t.is_request()) {
            assert_eq!(t.response(), MessageType::from_u32(t.as_u32() + 1), "{t:?}");
        }
        assert_eq!(MessageType::ImageDataResponse.section(), "§9.1.2");
        assert_eq!(MessageType::WtpEventRequest.section(), "§9.4");
        assert!(is_request((14179 << 8) | 3));
    }

    #[test]
    fn result_codes_match_rfc_list() {
        for (i, c) in ResultCode::ALL.iter().enumerate() {
            assert_eq!(*c as u32, i as u32);
            assert_eq!(ResultCode::from_u32(i as u32), Some(*c));
        }
        assert_eq!(ResultCode::from_u32(23), None);
        assert_eq!(ResultCode::from_u32(u32::MAX), None);
        assert_eq!(ResultCode::SuccessNat.describe(), "Success (NAT Detected)");
        assert_eq!(
            ResultCode::ImageDataErrorInvalidChecksum.describe(),
            "Image Data Error (Invalid Checksum)"
        );
        assert_eq!(ResultCode::MessageUnexpectedUnrecognizedRequest as u32, 19);
        assert_eq!(
            ResultCode::FailureUnrecognizedElement.describe(),
            "Failure - Unrecognized Message Element"
        );
        assert_eq!(ResultCode::DataTransferErrorNoInformation as u32, 22);
        let ok: Vec<_> = ResultCode::ALL.iter().filter(|c| c.is_success()).collect();
        assert_eq!(ok, [&ResultCode::Success, &ResultCode::SuccessNat]);
    }
}
