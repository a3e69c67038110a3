SUMMARY = "The flipslot update bundle of flipslot-image-minimal"
DESCRIPTION = "flipslot-image-minimal's ext4 root filesystem as a signed flipslot bundle, \
               version PV, for the slots of flipslot-ab-grub-efi.wks."
HOMEPAGE = "https://example.invalid/flipslot"
BUGTRACKER = "https://example.invalid/flipslot/issues"
LICENSE = "MIT"

# Nothing to fetch: the class takes the image from DEPLOY_DIR_IMAGE.
SRC_URI = ""

inherit flipslot_bundle

FLIPSLOT_BUNDLE_IMAGE = "flipslot-image-minimal"
