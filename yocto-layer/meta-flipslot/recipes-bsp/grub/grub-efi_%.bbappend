# GRUB for flipslot's reference A/B disk (wic/flipslot-ab-grub-efi.wks): the commands the
# reference grub.cfg (wic/flipslot-ab-grub-efi.cfg) runs, built into the EFI image, and
# the initial grubenv, deployed for IMAGE_EFI_BOOT_FILES. Everything is under the
# "flipslot" override, which exists only while DISTRO_FEATURES has "flipslot"
# (conf/layer.conf): adding this layer changes no other build.

FILESEXTRAPATHS:prepend:flipslot := "${THISDIR}/files:"

SRC_URI:append:flipslot = " file://flipslot-grubenv"

# Beyond oe-core's GRUB_BUILDIN: regexp (the disk of the ESP), echo, sleep, halt, reboot,
# true, and squash4 for squashfs slots: flipslot-image's module list (GRUB_MODULES in
# image-tools/src/disk/grub.rs), which tests/tests/yocto_layer.rs compares with this.
GRUB_BUILDIN:append:flipslot = " regexp echo sleep halt reboot true squash4"

# ORDER=A B, A good and untried, B empty: what flipslot-image disk writes for the layout,
# 1024 bytes as grub-editenv writes them.
do_deploy:append:flipslot() {
    install -m 0644 ${UNPACKDIR}/flipslot-grubenv ${DEPLOYDIR}/flipslot-grubenv
}
