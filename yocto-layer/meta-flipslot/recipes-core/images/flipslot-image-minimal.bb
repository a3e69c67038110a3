SUMMARY = "A minimal image with the flipslot agent, on the reference A/B disk"
DESCRIPTION = "core-image-minimal with flipslot and the kernel in /boot, as ext4 for \
               the bundle (flipslot-bundle-minimal) and as a wic disk laid out by \
               flipslot-ab-grub-efi.wks: ESP with GRUB and grubenv, slots A and B, data."
HOMEPAGE = "https://example.invalid/flipslot"
BUGTRACKER = "https://example.invalid/flipslot/issues"
LICENSE = "MIT"

inherit core-image

IMAGE_INSTALL:append = " flipslot kernel-image"
IMAGE_FSTYPES:append = " ext4 wic"

WKS_FILE = "flipslot-ab-grub-efi.wks"
IMAGE_EFI_BOOT_FILES = "flipslot-grubenv;EFI/BOOT/grubenv"

# The image must fit a slot of the layout (96 MiB), or the build stops here rather than
# at the first install.
IMAGE_ROOTFS_MAXSIZE = "98304"

# The data partition (data-directory /data/flipslot) and the ESP (grubenv), by GPT name,
# in the image itself: a bundle of it mounts them too, which wic's fstab edit would not do.
ROOTFS_POSTPROCESS_COMMAND += "flipslot_image_mounts"

flipslot_image_mounts[doc] = "Adds the data partition and the ESP to the image's fstab"
flipslot_image_mounts() {
    install -d ${IMAGE_ROOTFS}/data ${IMAGE_ROOTFS}/boot/efi
    printf '%s\n' \
        'PARTLABEL=data  /data      ext4  defaults     0  2' \
        'PARTLABEL=esp   /boot/efi  vfat  umask=0077   0  2' \
        >> ${IMAGE_ROOTFS}${sysconfdir}/fstab
}
