//! Message type numbers (RFC 5415 §4.5.1.1) and Result Codes (§4.6.35).

/// The control message types RFC 5415 defines. Requests are odd, their responses the next even.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MessageType {
    DiscoveryRequest = 1,
    DiscoveryResponse = 2,
    JoinRequest = 3,
    JoinResponse = 4,
    ConfigurationStatusRequest = 5,
    ConfigurationStatusResponse = 6,
    ConfigurationUpdateRequest = 7,
    ConfigurationUpdateResponse = 8,
    WtpEventRequest = 9,
    WtpEventResponse = 10,
    ChangeStateEventRequest = 11,
    ChangeStateEventResponse = 12,
    EchoRequest = 13,
    EchoResponse = 14,
    ImageDataRequest = 15,
    ImageDataResponse = 16,
    ResetRequest = 17,
    ResetResponse = 18,
    PrimaryDiscoveryRequest = 19,
    PrimaryDiscoveryResponse = 20,
    DataTransferRequest = 21,
    DataTransferResponse = 22,
    ClearConfigurationRequest = 23,
    ClearConfigurationResponse = 24,
    StationConfigurationRequest = 25,
    StationConfigurationResponse = 26,
}

impl MessageType {
    /// Every message type, in numeric order.
    pub const ALL: [MessageType; 26] = [
        MessageType::DiscoveryRequest,
        MessageType::DiscoveryResponse,
        MessageType::JoinRequest,
        MessageType::JoinResponse,
        MessageType::ConfigurationStatusRequest,
        MessageType::ConfigurationStatusResponse,
        MessageType::ConfigurationUpdateRequest,
        MessageType::ConfigurationUpdateResponse,
        MessageType::WtpEventRequest,
        MessageType::WtpEventResponse,
        MessageType::ChangeStateEventRequest,
        MessageType::ChangeStateEventResponse,
        MessageType::EchoRequest,
        MessageType::EchoResponse,
        MessageType::ImageDataRequest,
        MessageType::ImageDataResponse,
        MessageType::ResetRequest,
        MessageType::ResetResponse,
        MessageType::PrimaryDiscoveryRequest,
        MessageType::PrimaryDiscoveryResponse,
        MessageType::DataTransferRequest,
        MessageType::DataTransferResponse,
        MessageType::ClearConfigurationRequest,
        MessageType::ClearConfigurationResponse,
        MessageType::StationConfigurationRequest,
        MessageType::StationConfigurationResponse,
    ];

    /// The type for a raw value; `None` for a non-zero enterprise number or an unknown type.
    pub fn from_u32(v: u32) -> Option<Self> {
        let i = usize::try_from(v.checked_sub(1)?).ok()?;
        Self::ALL.get(i).copied()
    }
    /// The raw 32-bit value (enterprise number 0).
    pub fn as_u32(self) -> u32 {
        self as u32
    }
    /// The response type that answers this request (itself + 1); `None` for a response.
    pub fn response(self) -> Option<Self> {
        if self.is_request() {
            Self::from_u32(self as u32 + 1)
        } else {
            None
        }
    }
    /// True for requests (odd values).
    pub fn is_request(self) -> bool {
        (self as u32) % 2 == 1
    }
    /// The name Wireshark and the RFC use, for logs.
    pub fn name(self) -> &'static str {
        match self {
            MessageType::DiscoveryRequest => "Discovery Request",
            MessageType::DiscoveryResponse => "Discovery Response",
            MessageType::JoinRequest => "Join Request",
            MessageType::JoinResponse => "Join Response",
            MessageType::ConfigurationStatusRequest => "Configuration Status Request",
            MessageType::ConfigurationStatusResponse => "Configuration Status Response",
            MessageType::ConfigurationUpdateRequest => "Configuration Update Request",
            MessageType::ConfigurationUpdateResponse => "Configuration Update Response",
            MessageType::WtpEventRequest => "WTP Event Request",
            MessageType::WtpEventResponse => "WTP Event Response",
            MessageType::ChangeStateEventRequest => "Change State Event Request",
            MessageType::ChangeStateEventResponse => "Change State Event Response",
            MessageType::EchoRequest => "Echo Request",
            MessageType::EchoResponse => "Echo Response",
            MessageType::ImageDataRequest => "Image Data Request",
            MessageType::ImageDataResponse => "Image Data Response",
            MessageType::ResetRequest => "Reset Request",
            MessageType::ResetResponse => "Reset Response",
            MessageType::PrimaryDiscoveryRequest => "Primary Discovery Request",
            MessageType::PrimaryDiscoveryResponse => "Primary Discovery Response",
            MessageType::DataTransferRequest => "Data Transfer Request",
            MessageType::DataTransferResponse => "Data Transfer Response",
            MessageType::ClearConfigurationRequest => "Clear Configuration Request",
            MessageType::ClearConfigurationResponse => "Clear Configuration Response",
            MessageType::StationConfigurationRequest => "Station Configuration Request",
            MessageType::StationConfigurationResponse => "Station Configuration Response",
        }
    }
}

/// True when a raw message type value is a request (odd), whatever its enterprise number.
pub fn is_request(msg_type: u32) -> bool {
    msg_type % 2 == 1
}

/// Result Code values (§4.6.35).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ResultCode {
    Success = 0,
    FailureAcList = 1,
    SuccessNat = 2,
    JoinFailureUnspecified = 3,
    JoinFailureResourceDepletion = 4,
    JoinFailureUnknownSource = 5,
    JoinFailureIncorrectData = 6,
    JoinFailureSessionIdInUse = 7,
    JoinFailureHardwareNotSupported = 8,
    JoinFailureBindingNotSupported = 9,
    ResetFailureUnableToReset = 10,
    ResetFailureFirmwareWriteError = 11,
    ConfigurationFailureServiceProvided = 12,
    ConfigurationFailureServiceNotProvided = 13,
    ImageDataErrorInvalidChecksum = 14,
    ImageDataErrorInvalidDataLength = 15,
    ImageDataErrorOther = 16,
    ImageDataErrorImageAlreadyPresent = 17,
    MessageUnexpectedInvalidInCurrentState = 18,
    MessageUnexpectedUnrecognizedRequest = 19,
    FailureMissingMandatoryElement = 20,
    FailureUnrecognizedElement = 21,
    DataTransferErrorNoInformation = 22,
}

impl ResultCode {
    /// Every result code, in numeric order.
    pub const ALL: [ResultCode; 23] = [
        ResultCode::Success,
        ResultCode::FailureAcList,
        ResultCode::SuccessNat,
        ResultCode::JoinFailureUnspecified,
        ResultCode::JoinFailureResourceDepletion,
        ResultCode::JoinFailureUnknownSource,
        ResultCode::JoinFailureIncorrectData,
        ResultCode::JoinFailureSessionIdInUse,
        ResultCode::JoinFailureHardwareNotSupported,
        ResultCode::JoinFailureBindingNotSupported,
        ResultCode::ResetFailureUnableToReset,
        ResultCode::ResetFailureFirmwareWriteError,
        ResultCode::ConfigurationFailureServiceProvided,
        ResultCode::ConfigurationFailureServiceNotProvided,
        ResultCode::ImageDataErrorInvalidChecksum,
        ResultCode::ImageDataErrorInvalidDataLength,
        ResultCode::ImageDataErrorOther,
        ResultCode::ImageDataErrorImageAlreadyPresent,
        ResultCode::MessageUnexpectedInvalidInCurrentState,
        ResultCode::MessageUnexpectedUnrecognizedRequest,
        ResultCode::FailureMissingMandatoryElement,
        ResultCode::FailureUnrecognizedElement,
        ResultCode::DataTransferErrorNoInformation,
    ];

    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(v).ok()?).copied()
    }
    /// The raw 32-bit value.
    pub fn as_u32(self) -> u32 {
        self as u32
    }
    /// True for 0 (Success) and 2 (Success, NAT detected).
    pub fn is_success(self) -> bool {
        matches!(self, ResultCode::Success | ResultCode::SuccessNat)
    }
    /// The RFC's words, for logs.
    pub fn describe(self) -> &'static str {
        match self {
            ResultCode::Success => "Success",
            ResultCode::FailureAcList => "Failure (AC List Message Element MUST Be Present)",
            ResultCode::SuccessNat => "Success (NAT Detected)",
            ResultCode::JoinFailureUnspecified => "Join Failure (Unspecified)",
            ResultCode::JoinFailureResourceDepletion => "Join Failure (Resource Depletion)",
            ResultCode::JoinFailureUnknownSource => "Join Failure (Unknown Source)",
            ResultCode::JoinFailureIncorrectData => "Join Failure (Incorrect Data)",
            ResultCode::JoinFailureSessionIdInUse => "Join Failure (Session ID Already in Use)",
            ResultCode::JoinFailureHardwareNotSupported => "Join Failure (WTP Hardware Not Supported)",
            ResultCode::JoinFailureBindingNotSupported => "Join Failure (Binding Not Supported)",
            ResultCode::ResetFailureUnableToReset => "Reset Failure (Unable to Reset)",
            ResultCode::ResetFailureFirmwareWriteError => "Reset Failure (Firmware Write Error)",
            ResultCode::ConfigurationFailureServiceProvided => {
                "Configuration Failure (Unable to Apply Requested Configuration - Service Provided Anyhow)"
            }
            ResultCode::ConfigurationFailureServiceNotProvided => {
                "Configuration Failure (Unable to Apply Requested Configuration - Service Not Provided)"
            }
            ResultCode::ImageDataErrorInvalidChecksum => "Image Data Error (Invalid Checksum)",
            ResultCode::ImageDataErrorInvalidDataLength => "Image Data Error (Invalid Data Length)",
            ResultCode::ImageDataErrorOther => "Image Data Error (Other Error)",
            ResultCode::ImageDataErrorImageAlreadyPresent => "Image Data Error (Image Already Present)",
            ResultCode::MessageUnexpectedInvalidInCurrentState => {
                "Message Unexpected (Invalid in Current State)"
            }
            ResultCode::MessageUnexpectedUnrecognizedRequest => {
                "Message Unexpected (Unrecognized Request)"
            }
            ResultCode::FailureMissingMandatoryElement => "Failure - Missing Mandatory Message Element",
            ResultCode::FailureUnrecognizedElement => "Failure - Unrecognized Message Element",
            ResultCode::DataTransferErrorNoInformation => {
                "Data Transfer Error (No Information to Transfer)"
            }
        }
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
