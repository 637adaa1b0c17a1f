//! The simulated board's bootloader: what `board/uboot/boot.cmd` does in U-Boot on a real
//! board, applied to a U-Boot environment in memory. The agent never runs it (on a board
//! U-Boot does); the demo's simulated board (`demo::boot_sim_board`) and the power-cut tests
//! boot with it. The agent's side of the A/B contract (install, switch, mark good) stays in
//! `wtpd::image::install`.

use log::warn;
use wtpd::board::Board;
use wtpd::image::bootenv::Env;
use wtpd::image::install::{AbState, InstallError};

fn set(env: &mut Env, k: &str, v: &str) -> Result<(), InstallError> {
    env.set(k, v).map(|_| ()).map_err(InstallError::Env)
}

/// What the bootloader decided (the rules of board/uboot/boot.cmd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// Boot this slot; `trial` when it is a new slot being tried.
    Slot { name: String, trial: bool },
    /// The new slot used up its attempts: booting the other one instead.
    RolledBack { failed: String, to: String },
}

/// The bootloader's step, as board/uboot/boot.cmd does it, for the simulated board and tests:
/// on a trial boot, count the attempt; past the limit, fall back to the other slot.
pub fn boot_step(board: &Board, env: &mut Env) -> Result<Boot, InstallError> {
    let ab = AbState::read(board, env)?;
    if !ab.upgrade_available {
        return Ok(Boot::Slot {
            name: ab.boot_slot,
            trial: false,
        });
    }
    let count = ab.bootcount + 1;
    if count > ab.bootlimit.max(1) {
        let other = ab.other().ok_or(InstallError::NoSlots)?.to_string();
        set(env, "boot_slot", &other)?;
        set(env, &format!("slot_{}_state", ab.boot_slot), "invalid")?;
        set(env, "upgrade_available", "0")?;
        set(env, "bootcount", "0")?;
        warn!(
            "Slot {} did not become good in {} boots: rolling back to {other}",
            ab.boot_slot, ab.bootlimit
        );
        return Ok(Boot::RolledBack {
            failed: ab.boot_slot,
            to: other,
        });
    }
    set(env, "bootcount", &count.to_string())?;
    Ok(Boot::Slot {
        name: ab.boot_slot,
        trial: true,
    })
}
