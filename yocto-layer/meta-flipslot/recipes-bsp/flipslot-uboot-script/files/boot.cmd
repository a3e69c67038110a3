# flipslot A/B boot script for U-Boot, compatible with RAUC (BOOT_ORDER, BOOT_<bootname>_LEFT).
# See docs/reference-uboot-script.md. Build boot.scr with:
#   mkimage -A arm -T script -C none -d boot.cmd boot.scr
#
# Slots (adapt to the board):
#   A: U-Boot mmc 0:2, Linux /dev/mmcblk0p2
#   B: U-Boot mmc 0:3, Linux /dev/mmcblk0p3

# Kernel parameters common to both slots.
setenv flipslot_cmdline "console=ttyAMA0,115200 rootwait ro panic=10"

# A fresh environment: both slots, three attempts each.
if test "x${BOOT_ORDER}" = "x"; then
    echo "flipslot: BOOT_ORDER is not set: starting with A B, 3 attempts each"
    setenv BOOT_ORDER "A B"
    setenv BOOT_A_LEFT 3
    setenv BOOT_B_LEFT 3
fi

# Walk BOOT_ORDER: the first bootname with attempts left wins and loses one attempt.
# The counters are hex: `test` needs the 0x prefix, `setexpr` reads and writes hex.
setenv flipslot_slot
for BOOT_SLOT in ${BOOT_ORDER}; do
    if test "x${flipslot_slot}" = "x"; then
        if test "x${BOOT_SLOT}" = "xA"; then
            if test 0x${BOOT_A_LEFT} -gt 0; then
                echo "flipslot: slot A has 0x${BOOT_A_LEFT} attempts left"
                setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
                setenv flipslot_slot A
                setenv flipslot_part 2
                setenv flipslot_root /dev/mmcblk0p2
            fi
        elif test "x${BOOT_SLOT}" = "xB"; then
            if test 0x${BOOT_B_LEFT} -gt 0; then
                echo "flipslot: slot B has 0x${BOOT_B_LEFT} attempts left"
                setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
                setenv flipslot_slot B
                setenv flipslot_part 3
                setenv flipslot_root /dev/mmcblk0p3
            fi
        fi
    fi
done

if test "x${flipslot_slot}" = "x"; then
    # Nothing left: give every slot three attempts again and start over (RAUC's choice).
    echo "flipslot: no slot in BOOT_ORDER (${BOOT_ORDER}) has attempts left (A: 0x${BOOT_A_LEFT}, B: 0x${BOOT_B_LEFT})"
    echo "flipslot: resetting every slot to 3 attempts and rebooting"
    setenv BOOT_A_LEFT 3
    setenv BOOT_B_LEFT 3
    saveenv
    reset
else
    # Count the attempt before booting: a boot that dies before userspace has still used it.
    saveenv || echo "flipslot: WARNING: saveenv failed: this boot attempt is not counted"

    setenv bootargs "root=${flipslot_root} rauc.slot=${flipslot_slot} ${flipslot_cmdline}"
    echo "flipslot: booting slot ${flipslot_slot} from mmc 0:${flipslot_part}: ${bootargs}"
    load mmc 0:${flipslot_part} ${kernel_addr_r} /boot/Image && load mmc 0:${flipslot_part} ${fdt_addr_r} /boot/${fdtfile} && booti ${kernel_addr_r} - ${fdt_addr_r}

    # Only reached when the kernel could not be loaded or started. The attempt is counted, so
    # rebooting retries this slot until its counter is 0, then takes the next in BOOT_ORDER.
    echo "flipslot: slot ${flipslot_slot} did not start; rebooting"
    reset
fi
