# A/B slot selection for U-Boot (the contract with wtpd: docs/boards.md).
# Compile: mkimage -A arm -O linux -T script -C none -n wtpd-ab -d boot.cmd boot.scr
#
# Environment variables (the agent writes the first five in ONE environment write):
#   boot_slot          the slot to boot: a or b (the slot names of the board file)
#   upgrade_available  1 from the agent's switch until it marks the new slot good (0)
#   bootcount          boots of the new slot so far
#   slot_a_version, slot_b_version, slot_a_state, slot_b_state (good | new | invalid)
#   bootlimit          boot attempts the new slot gets (the board file's boot_limit)
#
# Board hooks, set in the board's default environment or by a board prelude script
# (board/uboot/qemu-virt.cmd) that runs before this one:
#   ab_save            how to persist the environment (default: saveenv)
#   ab_boot            boots the slot named by ${boot_slot}; returns only if that failed
#
# Numbers: U-Boot's itest works in hexadecimal; bootcount and bootlimit stay below 10
# (boot_limit at most 9), where hexadecimal and decimal are written the same. The count goes
# up without setexpr, which some U-Boot builds leave out (Debian's maltael, board/uboot/malta.cmd).

if test -z "${boot_slot}"; then setenv boot_slot a; fi
if test -z "${bootlimit}"; then setenv bootlimit 3; fi
if test -z "${bootcount}"; then setenv bootcount 0; fi

if test "${upgrade_available}" = "1"; then
    if test "${bootcount}" = "0"; then setenv bootcount 1
    elif test "${bootcount}" = "1"; then setenv bootcount 2
    elif test "${bootcount}" = "2"; then setenv bootcount 3
    elif test "${bootcount}" = "3"; then setenv bootcount 4
    elif test "${bootcount}" = "4"; then setenv bootcount 5
    elif test "${bootcount}" = "5"; then setenv bootcount 6
    elif test "${bootcount}" = "6"; then setenv bootcount 7
    elif test "${bootcount}" = "7"; then setenv bootcount 8
    elif test "${bootcount}" = "8"; then setenv bootcount 9
    else setenv bootcount a; fi
    if itest ${bootcount} -gt ${bootlimit}; then
        echo "A/B: slot ${boot_slot} was not marked good after ${bootlimit} boots: rolling back"
        setenv slot_${boot_slot}_state invalid
        if test "${boot_slot}" = "a"; then setenv boot_slot b; else setenv boot_slot a; fi
        setenv upgrade_available 0
        setenv bootcount 0
    else
        echo "A/B: trial boot ${bootcount} of ${bootlimit} of slot ${boot_slot}"
    fi
    if test -n "${ab_save}"; then run ab_save; else saveenv; fi
fi

echo "A/B: booting slot ${boot_slot} (upgrade_available=${upgrade_available} bootcount=${bootcount})"
run ab_boot
echo "A/B: slot ${boot_slot} did not boot"
# A trial slot that does not even load counts as a failed boot: reset, and the counter above
# rolls back after bootlimit tries. A good slot that does not load stops here, for a human.
if test "${upgrade_available}" = "1"; then reset; fi
