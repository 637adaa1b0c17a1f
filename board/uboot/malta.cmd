# Board prelude of the QEMU Malta image (scripts/malta-image): runs before board/uboot/boot.cmd.
# The flash's boot script (partition "boot", flash 0x050000) is this file followed by boot.cmd.
# Debian's maltael U-Boot has no autoboot and no bootcmd: what a vendor's compiled-in
# bootcommand would be, `source be050000`, is typed at its prompt by scripts/malta-autoboot.
#
# The A/B environment lives on the CFI NOR flash, partition "env" (/dev/mtd2 for Linux, flash
# 0x3e0000, two 64 KiB erase sectors): two redundant 2 KiB copies, one at the start of each
# sector
#   copy 0: flash 0x3e0000 (be3e0000)    copy 1: flash 0x3f0000 (be3f0000)
# laid out as libubootenv reads MTD NOR (board/fw_env/malta.config): [u32 CRC, little-endian]
# [u8 flag][data]; the flags are libubootenv's NOR scheme, boolean: the copy written last says
# 1 (active), the copy before it is then set to 0 (obsolete); an erased copy says ff.
# (U-Boot's own environment would be the whole 128 KiB there; its CRC never matches, so U-Boot
# starts with its built-in defaults, and this script imports the A/B copy.)
#
# Why there: on a little-endian Malta, QEMU swaps the 32-bit words of the flash below 0x3e0000
# as it loads them (bi-endian firmware), so whatever the guest writes there comes back swapped
# after the next power-on; only 0x3e0000-0x3fffff (the Malta's "Board Config" area) keeps its
# bytes. The read-only parts (U-Boot, this script, the kernel) are stored pre-swapped.
#
# Why 2 KiB and not U-Boot's saveenv: Debian's maltael U-Boot under QEMU 7.2's pflash writes
# flash with CFI buffer writes (2 KiB buffer); after an erase only the FIRST buffer write into
# a sector succeeds, every later one into that sector times out ("Flash buffer write timeout")
# until the sector is erased again (single-word writes still work). Its saveenv writes 128 KiB
# and fails. A copy that fits one buffer write works: erase the sector, write the copy with one
# `cp.b`, then clear the old copy's flag byte with a one-byte (word) write. Linux's CFI driver
# writes the same flash without trouble.
#
# This U-Boot has no setexpr, so flags are compared in memory with `itest.b *ADDR`, and
# boot.cmd counts without it.
#
# Hooks for boot.cmd:
#   ab_save  runs the save script at be058000 (board/uboot/malta-save.cmd)
#   ab_boot  loads the common kernel (uImage) from the TFTP server of QEMU's user network
#            (10.0.2.2) and boots it with the slot's root file system: block2mtd over the IDE
#            disk is the slot flash ("slots"), UBI is attached to it, and the slot's squashfs
#            volume (rootfs_a = volume 0, rootfs_b = volume 1) is the root device through
#            ubiblock. (The kernel does not fit the flash: 4.5 MB gzip'ed, and this U-Boot has
#            no LZMA; U-Boot reads neither UBI nor the IDE disk.) mem=256M: this U-Boot
#            passes the YAMON variable memsize in MiB ("256"), which Linux's Malta code reads
#            as bytes, and panics without it.
# Every ab_* variable is set again below after the import, so a saved value never counts.
#
# Memory: the single-copy view [CRC][data] for `env import -c` at 0x84000000.

setenv ab_cur none
setenv ab_first 0
if itest.b *be3f0004 -gt *be3e0004; then setenv ab_first 1; fi
if itest.b *be3f0004 == ff; then setenv ab_first 1; elif itest.b *be3e0004 == ff; then setenv ab_first 0; fi
if test "${ab_first}" = "1"; then
    cp.b be3f0000 84000000 4
    cp.b be3f0005 84000004 0x7fb
    if env import -c 84000000 0x7ff; then setenv ab_cur 1; fi
fi
if test "${ab_cur}" = "none"; then
    cp.b be3e0000 84000000 4
    cp.b be3e0005 84000004 0x7fb
    if env import -c 84000000 0x7ff; then setenv ab_cur 0; fi
fi
if test "${ab_cur}" = "none"; then
    if test "${ab_first}" = "0"; then
        cp.b be3f0000 84000000 4
        cp.b be3f0005 84000004 0x7fb
        if env import -c 84000000 0x7ff; then setenv ab_cur 1; fi
    fi
fi
# (ab_cur is set right after the import that succeeded: the import brings back the ab_*
# values of the boot that saved it.)
if test "${ab_cur}" = "none"; then
    echo "A/B: no valid environment copy on the flash: using the defaults"
else
    echo "A/B: environment copy ${ab_cur}"
fi
setenv ab_first

setenv ab_save 'source be058000'
setenv ab_boot 'if test "${boot_slot}" = "b"; then setenv ab_vol 1; else setenv ab_vol 0; fi; setenv ipaddr 10.0.2.15; setenv serverip 10.0.2.2; if tftpboot 84000000 uImage; then setenv bootargs "console=ttyS0 mem=256M mtdparts=1e000000.flash:320k(uboot)ro,3648k(boot)ro,128k(env) block2mtd.block2mtd=/dev/sda,128KiB,slots ubi.mtd=slots ubi.block=0,rootfs_${boot_slot} root=/dev/ubiblock0_${ab_vol} rootfstype=squashfs ro rootwait panic=10 wtpd.slot=${boot_slot} wtpd.trial=${upgrade_available}"; bootm 84000000; fi'
