//! The WTP states of RFC 5415 §2.3.

use std::fmt;

/// A state of the WTP side of the CAPWAP state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Discovery,
    Sulking,
    DtlsSetup,
    Join,
    ImageData,
    Configure,
    DataCheck,
    Run,
    Reset,
    DtlsTeardown,
}

impl State {
    /// The name used in logs, as the seed writes it (`CAPWAP State: DTLS Teardown`).
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Discovery => "Discovery",
            State::Sulking => "Sulking",
            State::DtlsSetup => "DTLS Setup",
            State::Join => "Join",
            State::ImageData => "Image Data",
            State::Configure => "Configure",
            State::DataCheck => "Data Check",
            State::Run => "Run",
            State::Reset => "Reset",
            State::DtlsTeardown => "DTLS Teardown",
        }
    }

    /// True in the states where a DTLS session with the AC exists.
    pub fn has_session(self) -> bool {
        matches!(
            self,
            State::Join
                | State::ImageData
                | State::Configure
                | State::DataCheck
                | State::Run
                | State::Reset
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
