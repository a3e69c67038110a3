#!/bin/sh
# The body of the flipslot_bundle class's do_bundle task: one root filesystem image into a
# signed flipslot bundle (.fsb), with flipslot-image. Kept out of the class so that
# tests/tests/yocto_layer.rs runs exactly this against the real flipslot-image, with the
# variables a build sets:
#
#   FLIPSLOT_IMAGE_TOOL          the flipslot-image program (flipslot-image-native's)
#   FLIPSLOT_BUNDLE_IMAGE_FILE   the filesystem image (the image recipe's deployed image)
#   FLIPSLOT_BUNDLE_SLOT_CLASS   the slot class the device writes it to (rootfs)
#   FLIPSLOT_BUNDLE_COMPATIBLE   the devices' compatible string (system.toml)
#   FLIPSLOT_BUNDLE_VERSION      the release version, a semantic version (1.2.0)
#   FLIPSLOT_BUNDLE_DESCRIPTION  free text shown by `flipslot-image info` (may be empty)
#   FLIPSLOT_KEY_FILE            the signing key(s), space-separated, outside any layer
#   FLIPSLOT_BUNDLE_KEYRING      a public key or key directory to verify the result
#                                against (may be empty: no check)
#   FLIPSLOT_BUNDLE_ARGS         more options of `flipslot-image build`, e.g.
#                                --compression zstd --block-index (may be empty)
#   FLIPSLOT_BUNDLE_OUT          where to write the bundle
#   SOURCE_DATE_EPOCH            the bundle's build time, so that the same inputs give a
#                                byte-identical bundle (bitbake exports it to every task)
set -eu

die() {
	echo "flipslot-bundle.sh: $*" >&2
	exit 1
}

need() {
	eval "value=\${$1:-}"
	[ -n "$value" ] || die "$1 is not set${2:+: $2}"
}

need FLIPSLOT_IMAGE_TOOL
need FLIPSLOT_BUNDLE_IMAGE_FILE
need FLIPSLOT_BUNDLE_SLOT_CLASS
need FLIPSLOT_BUNDLE_COMPATIBLE
need FLIPSLOT_BUNDLE_VERSION
need FLIPSLOT_KEY_FILE "set it to the bundle signing key, a file outside every layer (flipslot-image keygen writes one)"
need FLIPSLOT_BUNDLE_OUT
need SOURCE_DATE_EPOCH "without it the bundle's build time is the current time and no two builds are identical"

[ -f "$FLIPSLOT_BUNDLE_IMAGE_FILE" ] || die "no image at $FLIPSLOT_BUNDLE_IMAGE_FILE (FLIPSLOT_BUNDLE_IMAGE_FILE)"

set -- build \
	--compatible "$FLIPSLOT_BUNDLE_COMPATIBLE" \
	--version "$FLIPSLOT_BUNDLE_VERSION" \
	--image "$FLIPSLOT_BUNDLE_SLOT_CLASS=$FLIPSLOT_BUNDLE_IMAGE_FILE" \
	--out "$FLIPSLOT_BUNDLE_OUT"
if [ -n "${FLIPSLOT_BUNDLE_DESCRIPTION:-}" ]; then
	set -- "$@" --description "$FLIPSLOT_BUNDLE_DESCRIPTION"
fi
for key in $FLIPSLOT_KEY_FILE; do
	[ -f "$key" ] || die "no signing key at $key (FLIPSLOT_KEY_FILE)"
	set -- "$@" --key "$key"
done
# Word-split on purpose: a list of options.
# shellcheck disable=SC2086
set -- "$@" ${FLIPSLOT_BUNDLE_ARGS:-}

echo "flipslot-bundle.sh: $FLIPSLOT_IMAGE_TOOL $*"
SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH "$FLIPSLOT_IMAGE_TOOL" "$@"

if [ -n "${FLIPSLOT_BUNDLE_KEYRING:-}" ]; then
	"$FLIPSLOT_IMAGE_TOOL" verify --keyring "$FLIPSLOT_BUNDLE_KEYRING" "$FLIPSLOT_BUNDLE_OUT"
	"$FLIPSLOT_IMAGE_TOOL" info --keyring "$FLIPSLOT_BUNDLE_KEYRING" "$FLIPSLOT_BUNDLE_OUT"
else
	"$FLIPSLOT_IMAGE_TOOL" info --no-verify "$FLIPSLOT_BUNDLE_OUT"
fi
