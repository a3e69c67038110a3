SUMMARY = "flipslot's reference U-Boot boot script, A/B selection as RAUC does it"
DESCRIPTION = "boot.scr for U-Boot boards: walks BOOT_ORDER, counts BOOT_<bootname>_LEFT \
               down and boots the first slot with attempts left. boot.cmd is the script of \
               docs/reference-uboot-script.md, byte for byte (tests/tests/yocto_layer.rs \
               checks it); it is deployed for IMAGE_BOOT_FILES and flipslot-ab-uboot.wks."
HOMEPAGE = "https://example.invalid/flipslot"
BUGTRACKER = "https://example.invalid/flipslot/issues"
SECTION = "bootloaders"
CVE_PRODUCT = "flipslot"
LICENSE = "Apache-2.0 | MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10 \
                    file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

DEPENDS = "u-boot-mkimage-native"

SRC_URI = "file://boot.cmd"

S = "${UNPACKDIR}"
B = "${WORKDIR}/build"

inherit kernel-arch deploy nopackages

# The architecture recorded in the image header; U-Boot's `source` does not check it.
FLIPSLOT_UBOOT_SCRIPT_ARCH ??= "${UBOOT_ARCH}"

do_configure[noexec] = "1"

do_compile() {
    uboot-mkimage -A ${FLIPSLOT_UBOOT_SCRIPT_ARCH} -T script -C none -n "flipslot A/B" \
        -d ${S}/boot.cmd ${B}/boot.scr
}

do_install[noexec] = "1"

do_deploy() {
    install -d ${DEPLOYDIR}
    install -m 0644 ${B}/boot.scr ${DEPLOYDIR}/boot.scr
}
addtask deploy after do_compile before do_build
