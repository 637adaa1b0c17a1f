# The aarch64 QEMU board's boot hook (scripts/qemu-image --arch arm64): runs after
# board/uboot/qemu-virt.cmd (the environment on the disk, ab_save) and before boot.cmd, and
# replaces qemu-virt.cmd's ab_boot. Debian's arm64 kernel is an uncompressed Image of about
# 32 MB, so it stays on the boot partition (partition 1) and a slot holds the root file system
# only (/boot/initrd.gz): an upgrade replaces the root file system, as on the Malta board.
# booti takes the Image; the device tree is the one QEMU gave U-Boot.
setenv ab_boot 'if test "${boot_slot}" = "b"; then setenv ab_part 3; else setenv ab_part 2; fi; if load virtio 0:1 ${kernel_addr_r} /Image; then if load virtio 0:${ab_part} ${ramdisk_addr_r} /boot/initrd.gz; then setenv bootargs "console=ttyAMA0 panic=10 wtpd.slot=${boot_slot} wtpd.trial=${upgrade_available}"; booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}; fi; fi'
