# flipslot_bundle: turns an image recipe's root filesystem image into a signed flipslot
# bundle (.fsb) with flipslot-image-native, and deploys it to DEPLOY_DIR_IMAGE as
# ${FLIPSLOT_BUNDLE_NAME}.fsb with the link ${FLIPSLOT_BUNDLE_LINK_NAME}.fsb.
#
# A bundle recipe:
#
#   SUMMARY = "The update bundle of my-image"
#   LICENSE = "MIT"
#   inherit flipslot_bundle
#   FLIPSLOT_BUNDLE_IMAGE = "my-image"
#
# and, in local.conf or a distro or BSP layer (never a key in a layer):
#
#   FLIPSLOT_KEY_FILE = "/secure/place/release.key"
#   FLIPSLOT_COMPATIBLE = "acme-gateway"
#
# The bundle is reproducible: flipslot-image takes its build time from SOURCE_DATE_EPOCH,
# which bitbake exports to every task, and ed25519 signatures are deterministic, so the
# same image and key give the same bytes. The task's work is files/flipslot-bundle.sh of
# this layer, which documents every variable it reads; README.md documents the rest.

DEPENDS += "flipslot-image-native"
INHIBIT_DEFAULT_DEPS = "1"
PACKAGE_ARCH = "${MACHINE_ARCH}"

inherit nopackages deploy image-artifact-names

FLIPSLOT_BUNDLE_IMAGE ??= ""
FLIPSLOT_BUNDLE_IMAGE[doc] = "The image recipe whose root filesystem image goes into the bundle."
FLIPSLOT_BUNDLE_IMAGE_FSTYPE ??= "ext4"
FLIPSLOT_BUNDLE_IMAGE_FSTYPE[doc] = "Which of the image's IMAGE_FSTYPES to take (ext4, squashfs, ...)."
FLIPSLOT_BUNDLE_IMAGE_FILE ??= "${DEPLOY_DIR_IMAGE}/${FLIPSLOT_BUNDLE_IMAGE}${IMAGE_MACHINE_SUFFIX}${IMAGE_NAME_SUFFIX}.${FLIPSLOT_BUNDLE_IMAGE_FSTYPE}"
FLIPSLOT_BUNDLE_IMAGE_FILE[doc] = "The deployed image file; by default the image's link name."
FLIPSLOT_BUNDLE_SLOT_CLASS ??= "rootfs"
FLIPSLOT_BUNDLE_SLOT_CLASS[doc] = "The slot class the device writes the image to (FLIPSLOT_SLOTS)."
FLIPSLOT_BUNDLE_COMPATIBLE ??= "${FLIPSLOT_COMPATIBLE}"
FLIPSLOT_BUNDLE_COMPATIBLE[doc] = "The compatible string; devices install only bundles of their own."
FLIPSLOT_BUNDLE_VERSION ??= "${PV}"
FLIPSLOT_BUNDLE_VERSION[doc] = "The release version, a semantic version such as 1.2.0."
FLIPSLOT_BUNDLE_DESCRIPTION ??= "${SUMMARY}"
FLIPSLOT_BUNDLE_DESCRIPTION[doc] = "Free text that flipslot-image info shows."
FLIPSLOT_KEY_FILE ??= ""
FLIPSLOT_KEY_FILE[doc] = "The signing key (or keys, space-separated): files outside every layer."
FLIPSLOT_BUNDLE_KEYRING ??= "${@' '.join((d.getVar('FLIPSLOT_KEYRING_FILES') or '').split()[:1])}"
FLIPSLOT_BUNDLE_KEYRING[doc] = "A public key to verify the new bundle against; by default the first of FLIPSLOT_KEYRING_FILES."
FLIPSLOT_BUNDLE_ARGS ??= ""
FLIPSLOT_BUNDLE_ARGS[doc] = "More options of flipslot-image build, e.g. --compression zstd --block-index."
FLIPSLOT_BUNDLE_NAME ??= "${PN}-${MACHINE}-${FLIPSLOT_BUNDLE_VERSION}"
FLIPSLOT_BUNDLE_LINK_NAME ??= "${PN}-${MACHINE}"
FLIPSLOT_BUNDLE_SCRIPT ??= "${@bb.utils.which(d.getVar('BBPATH'), 'files/flipslot-bundle.sh')}"
FLIPSLOT_BUNDLE_SCRIPT[doc] = "The task's script; by default files/flipslot-bundle.sh of this layer."

B = "${WORKDIR}/build"

do_fetch[noexec] = "1"
do_unpack[noexec] = "1"
do_patch[noexec] = "1"
do_configure[noexec] = "1"
do_compile[noexec] = "1"
do_install[noexec] = "1"
deltask do_populate_sysroot

do_bundle[doc] = "Builds and signs the bundle from FLIPSLOT_BUNDLE_IMAGE's image with flipslot-image-native"
do_bundle() {
    if [ -z "${FLIPSLOT_BUNDLE_IMAGE}" ]; then
        bbfatal "FLIPSLOT_BUNDLE_IMAGE is not set: name the image recipe whose root filesystem goes into the bundle"
    fi
    FLIPSLOT_IMAGE_TOOL="${STAGING_BINDIR_NATIVE}/flipslot-image" \
    FLIPSLOT_BUNDLE_IMAGE_FILE="${FLIPSLOT_BUNDLE_IMAGE_FILE}" \
    FLIPSLOT_BUNDLE_SLOT_CLASS="${FLIPSLOT_BUNDLE_SLOT_CLASS}" \
    FLIPSLOT_BUNDLE_COMPATIBLE="${FLIPSLOT_BUNDLE_COMPATIBLE}" \
    FLIPSLOT_BUNDLE_VERSION="${FLIPSLOT_BUNDLE_VERSION}" \
    FLIPSLOT_BUNDLE_DESCRIPTION="${FLIPSLOT_BUNDLE_DESCRIPTION}" \
    FLIPSLOT_KEY_FILE="${FLIPSLOT_KEY_FILE}" \
    FLIPSLOT_BUNDLE_KEYRING="${FLIPSLOT_BUNDLE_KEYRING}" \
    FLIPSLOT_BUNDLE_ARGS="${FLIPSLOT_BUNDLE_ARGS}" \
    FLIPSLOT_BUNDLE_OUT="${B}/bundle.fsb" \
    sh "${FLIPSLOT_BUNDLE_SCRIPT}"
}
do_bundle[dirs] = "${B}"
do_bundle[cleandirs] = "${B}"
do_bundle[depends] += "${@'%s:do_image_complete' % d.getVar('FLIPSLOT_BUNDLE_IMAGE') if d.getVar('FLIPSLOT_BUNDLE_IMAGE') else ''}"
# The script, the keys and the keyring are files: their contents, not their paths, decide
# whether the bundle is built again.
do_bundle[file-checksums] += "${FLIPSLOT_BUNDLE_SCRIPT}:True ${@' '.join('%s:True' % f for f in ((d.getVar('FLIPSLOT_KEY_FILE') or '') + ' ' + (d.getVar('FLIPSLOT_BUNDLE_KEYRING') or '')).split())}"
do_bundle[vardepsexclude] += "FLIPSLOT_BUNDLE_SCRIPT FLIPSLOT_KEY_FILE FLIPSLOT_BUNDLE_KEYRING"
addtask bundle after do_configure before do_deploy

do_deploy() {
    install -d ${DEPLOYDIR}
    install -m 0644 ${B}/bundle.fsb ${DEPLOYDIR}/${FLIPSLOT_BUNDLE_NAME}.fsb
    ln -sf ${FLIPSLOT_BUNDLE_NAME}.fsb ${DEPLOYDIR}/${FLIPSLOT_BUNDLE_LINK_NAME}.fsb
}
addtask deploy after do_bundle before do_build
