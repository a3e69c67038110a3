SUMMARY = "flipslot-image: builds, signs, verifies and inspects flipslot bundles"
DESCRIPTION = "The build-host tool of flipslot: turns filesystem images into signed \
               bundles (.fsb), signs update channels, and builds A/B disk images and \
               provisioning sets. flipslot-image-native is what the flipslot_bundle class runs."

require flipslot.inc

CARGO_SRC_DIR = "image-tools"

do_install() {
    install -d ${D}${bindir}
    install -m 0755 ${B}/target/${CARGO_TARGET_SUBDIR}/flipslot-image ${D}${bindir}/flipslot-image
}

BBCLASSEXTEND = "native"
