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
    pub fn from_u32(v: u32) -> Option<Self> {
        let _ = v;
        todo!()
    }
    /// True for requests (odd values).
    pub fn is_request(self) -> bool {
        (self as u32) % 2 == 1
    }
    /// The name Wireshark and the RFC use, for logs.
    pub fn name(self) -> &'static str {
        todo!()
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
    pub fn from_u32(v: u32) -> Option<Self> {
        let _ = v;
        todo!()
    }
    /// True for 0 (Success) and 2 (Success, NAT detected).
    pub fn is_success(self) -> bool {
        matches!(self, ResultCode::Success | ResultCode::SuccessNat)
    }
    /// The RFC's words, for logs.
    pub fn describe(self) -> &'static str {
        todo!()
    }
}
