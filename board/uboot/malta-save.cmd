# ab_save of the QEMU Malta image (board/uboot/malta.cmd explains the layout and why): writes
# the environment to the NON-current copy on the flash, as libubootenv does on NOR: the new copy
# with flag 1 (active), then the old copy's flag byte cleared to 0 (obsolete).
# Stored as its own script image at flash 0x058000 (be058000); ab_save is `source be058000`.
#
# Memory: [CRC][data] from `env export -c` at 0x84010000, the copy being written at 0x84020000.
# Flash: erase the target sector, then ONE cp.b of the 2 KiB copy (one CFI buffer write).
# U-Boot protects the two sectors (its own environment's): `protect off` first.

setenv ab_ok 0
if env export -c -s 0x7ff 84010000; then setenv ab_ok 1; fi
cp.b 84010000 84020000 4
mw.b 84020004 1
cp.b 84010004 84020005 0x7fb
if test "${ab_ok}" = "0"; then
    echo "A/B: the environment does not fit its 2 KiB copy: NOT saved"
elif test "${ab_cur}" = "0"; then
    setenv ab_dst be3f0000; setenv ab_old be3e0004; setenv ab_cur 1
elif test "${ab_cur}" = "1"; then
    setenv ab_dst be3e0000; setenv ab_old be3f0004; setenv ab_cur 0
else
    setenv ab_dst be3e0000; setenv ab_old none; setenv ab_cur 0
fi
if test "${ab_ok}" = "1"; then
    protect off be3e0000 +20000
    erase ${ab_dst} +10000
    cp.b 84020000 ${ab_dst} 0x800
    if cmp.b 84020000 ${ab_dst} 0x800; then
        if test "${ab_old}" != "none"; then
            mw.b 84020800 0 1
            cp.b 84020800 ${ab_old} 1
        fi
        echo "A/B: environment saved to ${ab_dst}"
    else
        echo "A/B: writing the environment to ${ab_dst} FAILED"
    fi
fi
