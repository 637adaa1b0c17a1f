# Board prelude of the QEMU virt image (scripts/qemu-image): runs before board/uboot/boot.cmd
# (the image's boot.scr is this file followed by boot.cmd).
#
# Why a prelude: Debian's u-boot-qemu keeps its environment in the second pflash bank, and its
# flash writes time out under QEMU's emulation ("Flash buffer write timeout"), so `saveenv`
# cannot work there. This board keeps its environment where an eMMC board would: two redundant
# 16 KiB copies at raw offsets of the disk, before the first partition, which Linux sees as
# /dev/vda 0x100000 and 0x104000 (board/fw_env/qemu-virt.config):
#   copy 0: virtio blocks 0x800-0x81f     copy 1: virtio blocks 0x820-0x83f
# Each copy is [u32 CRC, little-endian][u8 flag][data]. This prelude reads both, imports the
# current one as libubootenv picks it (valid CRC; higher flag, 0 beats 255; copy 0 on a tie),
# and defines the hooks boot.cmd runs:
#   ab_save  writes the environment to the NON-current copy with flag + 1 (what fw_setenv does)
#   ab_boot  loads /boot/zImage and /boot/initrd.gz from slot a (partition 2) or b (partition 3)
#
# The ab_* variables are saved with the rest of the environment (U-Boot exports all of it);
# this prelude sets every one of them again after the import, so a saved value never counts.
#
# Memory: copy 0 at 0x48000000, copy 1 at 0x48010000, a single-copy view [CRC][data] for
# `env import -c` / `env export -c` at 0x48020000, the copy being written at 0x48030000.

virtio scan
virtio read 0x48000000 0x800 0x20
virtio read 0x48010000 0x820 0x20
setexpr.b ab_f0 *0x48000004
setexpr.b ab_f1 *0x48010004

setenv ab_first 0
if itest ${ab_f1} -gt ${ab_f0}; then setenv ab_first 1; fi
if itest ${ab_f0} == ff; then if itest ${ab_f1} == 0; then setenv ab_first 1; fi; fi
if itest ${ab_f1} == ff; then if itest ${ab_f0} == 0; then setenv ab_first 0; fi; fi

setenv ab_cur none
if test "${ab_first}" = "1"; then
    cp.b 0x48010000 0x48020000 4
    cp.b 0x48010005 0x48020004 0x3ffb
    if env import -c 0x48020000 0x3fff; then setenv ab_cur 1; fi
fi
if test "${ab_cur}" = "none"; then
    cp.b 0x48000000 0x48020000 4
    cp.b 0x48000005 0x48020004 0x3ffb
    if env import -c 0x48020000 0x3fff; then setenv ab_cur 0; fi
fi
if test "${ab_cur}" = "none"; then
    if test "${ab_first}" = "0"; then
        cp.b 0x48010000 0x48020000 4
        cp.b 0x48010005 0x48020004 0x3ffb
        if env import -c 0x48020000 0x3fff; then setenv ab_cur 1; fi
    fi
fi
# The import brought back the ab_* values of the boot that saved it: read the flags again.
setexpr.b ab_f0 *0x48000004
setexpr.b ab_f1 *0x48010004
if test "${ab_cur}" = "none"; then
    echo "A/B: no valid environment copy on the disk: using the defaults"
else
    echo "A/B: environment copy ${ab_cur} (flags ${ab_f0} ${ab_f1})"
fi
setenv ab_first

# ab_save: export [CRC][data] (CRC over the 0x3ffb data bytes), add the flag, write the other copy.
setenv ab_save 'env export -c -s 0x3fff 0x48020000; cp.b 0x48020000 0x48030000 4; cp.b 0x48020004 0x48030005 0x3ffb; if test "${ab_cur}" = "0"; then setexpr ab_fnew ${ab_f0} + 1; setenv ab_dst 0x820; setenv ab_cur 1; setenv ab_f1 ${ab_fnew}; elif test "${ab_cur}" = "1"; then setexpr ab_fnew ${ab_f1} + 1; setenv ab_dst 0x800; setenv ab_cur 0; setenv ab_f0 ${ab_fnew}; else setenv ab_fnew 1; setenv ab_dst 0x800; setenv ab_cur 0; setenv ab_f0 1; fi; mw.b 0x48030004 ${ab_fnew}; virtio write 0x48030000 ${ab_dst} 0x20; echo "A/B: environment saved to block ${ab_dst}"'

setenv ab_boot 'if test "${boot_slot}" = "b"; then setenv ab_part 3; else setenv ab_part 2; fi; if load virtio 0:${ab_part} ${kernel_addr_r} /boot/zImage; then if load virtio 0:${ab_part} ${ramdisk_addr_r} /boot/initrd.gz; then setenv bootargs "console=ttyAMA0 panic=10 wtpd.slot=${boot_slot} wtpd.trial=${upgrade_available}"; bootz ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}; fi; fi'
