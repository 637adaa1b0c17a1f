//! The board's upgrade hook: the seed's `upgrade.sh`, called at the seed's moments.
//!
//! The WTP core decides when; it only emits [`Action::Hook`](super::Action::Hook) and, for
//! PRECHECK, waits for [`Wtp::precheck_done`](super::Wtp::precheck_done). The runtime runs the
//! script (`[hooks] upgrade` in wtpd.toml; `src/runtime/hooks.rs`).
//!
//! The seed's AP log shows three calls, each with one argument:
//! `upgrade.sh: Script called with args:[PRECHECK]` after `Version does not match.` and before
//! the Image Data Request; `[PREDOWNLOAD]` after `Last block stored` and before `Image signing
//! verify success.` (a download at Join: `IsPre 0`); `[ABORT]` after `Aborting image download`.
//! UPGRADE, ACTIVATE and MARK_GOOD are this agent's own moments (docs/configuration.md).

/// When the hook is called; its one argument is [`HookStage::arg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookStage {
    /// A download is about to start (before the space check and the Image Data Request). A
    /// non-zero exit refuses the download.
    Precheck,
    /// The last block is stored in the download file; the image is verified next.
    Predownload,
    /// The image is verified; the inactive slot is written next.
    Upgrade,
    /// A download or install failed, or was torn down: the partial file is gone.
    Abort,
    /// The boot slot was switched to the new image; a reboot follows (runtime).
    Activate,
    /// The booted slot, on trial, reached Run and was marked good (runtime).
    MarkGood,
}

impl HookStage {
    /// The script's argument, as the seed writes it.
    pub fn arg(self) -> &'static str {
        match self {
            HookStage::Precheck => "PRECHECK",
            HookStage::Predownload => "PREDOWNLOAD",
            HookStage::Upgrade => "UPGRADE",
            HookStage::Abort => "ABORT",
            HookStage::Activate => "ACTIVATE",
            HookStage::MarkGood => "MARK_GOOD",
        }
    }

    /// The agent's next action waits until the script has finished (its result only counts
    /// for PRECHECK, whose verdict the core itself waits for). ABORT and MARK_GOOD tell the
    /// script what happened and hold nothing up.
    pub fn holds_actions(self) -> bool {
        matches!(
            self,
            HookStage::Predownload | HookStage::Upgrade | HookStage::Activate
        )
    }
}

/// One call of the hook, with what the core knows of it; the runtime adds the board's part
/// (slots, board name) to the script's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCall {
    pub stage: HookStage,
    /// The image version concerned (the controller's), when there is one.
    pub version: Option<String>,
    /// The download file.
    pub location: String,
    /// A predownload in Run (RFC 5415 Figure 8) rather than a download at Join.
    pub predownload: bool,
    /// Why, for ABORT.
    pub reason: Option<String>,
}

/// The line the agent logs at each of the seed's moments, with or without a script.
pub fn called_line(stage: HookStage) -> String {
    format!("upgrade.sh: Script called with args:[{}]", stage.arg())
}
