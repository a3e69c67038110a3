SUMMARY = "flipslot: A/B updates of the root filesystem from signed bundles"
DESCRIPTION = "The flipslot agent installs signed images into the inactive slot of an \
               A/B system, tells the bootloader to try it once, and after the reboot runs \
               health checks and commits the slot or falls back. Its configuration, \
               /etc/flipslot/system.toml, is written from FLIPSLOT_* variables."

require flipslot.inc

# flipslot-crates.inc comes from yocto-layer/scripts/gen-crates-inc.py, not from
# cargo-update-recipe-crates: that class writes one file per recipe name, while both
# recipes share one, and in a format oelint-adv counts as an error (README.md).
inherit systemd

SRC_URI += "file://flipslot-config.sh"

CARGO_SRC_DIR = "agent"

# system.toml: every variable is described in flipslot-config.sh and README.md. Empty
# means the key is left out, or flipslot-config.sh's default.
FLIPSLOT_BOOTLOADER ??= "grub"
FLIPSLOT_GRUBENV ??= "/boot/efi/EFI/BOOT/grubenv"
FLIPSLOT_FW_ENV_CONFIG ??= ""
FLIPSLOT_BOOT_ATTEMPTS ??= ""
FLIPSLOT_BOOT_ATTEMPTS_PRIMARY ??= ""
FLIPSLOT_CUSTOM_BACKEND ??= ""
FLIPSLOT_KEYRING ??= "${sysconfdir}/flipslot/keys"
FLIPSLOT_MIN_SIGNATURES ??= "1"
FLIPSLOT_DATA_DIRECTORY ??= "/data/flipslot"
FLIPSLOT_SLOTS ??= "rootfs:A:/dev/disk/by-partlabel/rootfs-a rootfs:B:/dev/disk/by-partlabel/rootfs-b"
FLIPSLOT_CHANNEL_URL ??= ""
FLIPSLOT_SYSTEM_TOML_EXTRA ??= ""
FLIPSLOT_SERVICE_READWRITE_PATHS ??= ""
FLIPSLOT_SERVICE_DEVICES ??= ""

# The public keys the device trusts: files on the build host (flipslot-image keygen writes
# NAME.pub beside the signing key NAME.key), installed into the directory FLIPSLOT_KEYRING.
FLIPSLOT_KEYRING_FILES ??= ""

def flipslot_keyring_checksums(d):
    return ' '.join('%s:True' % f for f in (d.getVar('FLIPSLOT_KEYRING_FILES') or '').split())

# The daemon needs [update] (FLIPSLOT_CHANNEL_URL), so its unit is a package of its own.
PACKAGES =+ "${PN}-daemon"
SYSTEMD_PACKAGES = "${PN} ${PN}-daemon"
SYSTEMD_SERVICE:${PN} = "flipslot-health.service"
SYSTEMD_SERVICE:${PN}-daemon = "flipslot.service"
FILES:${PN} += "${nonarch_libdir}/tmpfiles.d/flipslot.conf"
FILES:${PN}-daemon += "${systemd_system_unitdir}/flipslot.service \
                       ${systemd_system_unitdir}/flipslot.service.d"
RDEPENDS:${PN}-daemon = "${PN}"
CONFFILES:${PN} = "${sysconfdir}/flipslot/system.toml"

# Runs flipslot-config.sh with every FLIPSLOT_* variable of system.toml in its environment.
flipslot_config[doc] = "Writes system.toml, the daemon's drop-in or the tmpfiles line from FLIPSLOT_* variables"
flipslot_config() {
    FLIPSLOT_COMPATIBLE="${FLIPSLOT_COMPATIBLE}" \
    FLIPSLOT_BOOTLOADER="${FLIPSLOT_BOOTLOADER}" \
    FLIPSLOT_GRUBENV="${FLIPSLOT_GRUBENV}" \
    FLIPSLOT_FW_ENV_CONFIG="${FLIPSLOT_FW_ENV_CONFIG}" \
    FLIPSLOT_BOOT_ATTEMPTS="${FLIPSLOT_BOOT_ATTEMPTS}" \
    FLIPSLOT_BOOT_ATTEMPTS_PRIMARY="${FLIPSLOT_BOOT_ATTEMPTS_PRIMARY}" \
    FLIPSLOT_CUSTOM_BACKEND="${FLIPSLOT_CUSTOM_BACKEND}" \
    FLIPSLOT_KEYRING="${FLIPSLOT_KEYRING}" \
    FLIPSLOT_MIN_SIGNATURES="${FLIPSLOT_MIN_SIGNATURES}" \
    FLIPSLOT_DATA_DIRECTORY="${FLIPSLOT_DATA_DIRECTORY}" \
    FLIPSLOT_SLOTS="${FLIPSLOT_SLOTS}" \
    FLIPSLOT_CHANNEL_URL="${FLIPSLOT_CHANNEL_URL}" \
    FLIPSLOT_SYSTEM_TOML_EXTRA="${FLIPSLOT_SYSTEM_TOML_EXTRA}" \
    FLIPSLOT_SERVICE_READWRITE_PATHS="${FLIPSLOT_SERVICE_READWRITE_PATHS}" \
    FLIPSLOT_SERVICE_DEVICES="${FLIPSLOT_SERVICE_DEVICES}" \
    sh ${UNPACKDIR}/flipslot-config.sh "$@"
}

do_install() {
    install -d ${D}${bindir}
    install -m 0755 ${B}/target/${CARGO_TARGET_SUBDIR}/flipslot ${D}${bindir}/flipslot

    install -d ${D}${systemd_system_unitdir}/flipslot.service.d
    install -m 0644 ${S}/systemd/flipslot-health.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/systemd/flipslot.service ${D}${systemd_system_unitdir}/
    flipslot_config service-dropin > ${D}${systemd_system_unitdir}/flipslot.service.d/10-flipslot-yocto.conf

    install -d ${D}${nonarch_libdir}/tmpfiles.d
    flipslot_config tmpfiles > ${D}${nonarch_libdir}/tmpfiles.d/flipslot.conf

    install -d ${D}${sysconfdir}/flipslot
    flipslot_config system-toml > ${D}${sysconfdir}/flipslot/system.toml
    chmod 0644 ${D}${sysconfdir}/flipslot/system.toml

    if [ -z "${FLIPSLOT_KEYRING_FILES}" ]; then
        bbwarn "FLIPSLOT_KEYRING_FILES is empty: the image trusts no key and refuses every bundle until ${FLIPSLOT_KEYRING} holds one"
    fi
    for key in ${FLIPSLOT_KEYRING_FILES}; do
        install -d ${D}${FLIPSLOT_KEYRING}
        install -m 0644 "$key" ${D}${FLIPSLOT_KEYRING}/
    done
}
do_install[file-checksums] += "${@flipslot_keyring_checksums(d)}"
