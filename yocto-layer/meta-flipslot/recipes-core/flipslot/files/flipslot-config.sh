#!/bin/sh
# The agent's configuration from FLIPSLOT_* variables, so that a BSP or distro layer sets
# variables, not files. The flipslot recipe's do_install runs it with the variables in the
# environment; tests/tests/yocto_layer.rs runs it the same way and gives the result to the
# real agent. Keys of system.toml: docs/configuration.md.
#
#   flipslot-config.sh system-toml      /etc/flipslot/system.toml
#   flipslot-config.sh service-dropin   a drop-in for flipslot.service: the paths it may
#                                       write and the devices it may open
#   flipslot-config.sh tmpfiles         the tmpfiles.d line creating the data directory
#
# Variables (empty means unset):
#   FLIPSLOT_COMPATIBLE             required
#   FLIPSLOT_BOOTLOADER             grub, uboot or custom (default grub)
#   FLIPSLOT_GRUBENV                with grub (default /boot/efi/EFI/BOOT/grubenv)
#   FLIPSLOT_FW_ENV_CONFIG          with uboot: fw-env-config
#   FLIPSLOT_BOOT_ATTEMPTS          with uboot: boot-attempts
#   FLIPSLOT_BOOT_ATTEMPTS_PRIMARY  with uboot: boot-attempts-primary
#   FLIPSLOT_CUSTOM_BACKEND         with custom: custom-backend (required there)
#   FLIPSLOT_KEYRING                keyring (default /etc/flipslot/keys)
#   FLIPSLOT_MIN_SIGNATURES         min-signatures (default 1)
#   FLIPSLOT_DATA_DIRECTORY         data-directory (default /data/flipslot)
#   FLIPSLOT_SLOTS                  CLASS:BOOTNAME:DEVICE words, in slot order (default
#                                   rootfs A and B on /dev/disk/by-partlabel/rootfs-a, -b)
#   FLIPSLOT_CHANNEL_URL            [update] channel-url, for the daemon
#   FLIPSLOT_SYSTEM_TOML_EXTRA      appended as it is, \n read as a line break
#   FLIPSLOT_SERVICE_READWRITE_PATHS  the daemon's writable paths (default: the data
#                                   directory, and the grubenv's directory with grub)
#   FLIPSLOT_SERVICE_DEVICES        the block devices the daemon may open (default: the
#                                   slots' devices)
set -eu

die() {
	echo "flipslot-config.sh: $*" >&2
	exit 1
}

compatible=${FLIPSLOT_COMPATIBLE:-}
bootloader=${FLIPSLOT_BOOTLOADER:-grub}
grubenv=${FLIPSLOT_GRUBENV:-/boot/efi/EFI/BOOT/grubenv}
keyring=${FLIPSLOT_KEYRING:-/etc/flipslot/keys}
min_signatures=${FLIPSLOT_MIN_SIGNATURES:-1}
data_directory=${FLIPSLOT_DATA_DIRECTORY:-/data/flipslot}
slots=${FLIPSLOT_SLOTS:-rootfs:A:/dev/disk/by-partlabel/rootfs-a rootfs:B:/dev/disk/by-partlabel/rootfs-b}

# A TOML basic string: backslashes and double quotes escaped; control characters refused.
toml_string() {
	case $1 in
	*[[:cntrl:]]*) die "control character in value: $1" ;;
	esac
	printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

# One line of output, printed as it is (dash's echo would read backslashes in values).
line() {
	printf '%s\n' "$*"
}

absolute() {
	case $2 in
	/*) ;;
	*) die "$1 must be an absolute path, not '$2'" ;;
	esac
}

number() {
	case $2 in
	'' | *[!0-9]*) die "$1 must be a decimal number, not '$2'" ;;
	esac
}

check() {
	[ -n "$compatible" ] || die "FLIPSLOT_COMPATIBLE is empty"
	case $bootloader in
	grub) absolute FLIPSLOT_GRUBENV "$grubenv" ;;
	uboot)
		[ -z "${FLIPSLOT_FW_ENV_CONFIG:-}" ] || absolute FLIPSLOT_FW_ENV_CONFIG "$FLIPSLOT_FW_ENV_CONFIG"
		[ -z "${FLIPSLOT_BOOT_ATTEMPTS:-}" ] || number FLIPSLOT_BOOT_ATTEMPTS "$FLIPSLOT_BOOT_ATTEMPTS"
		[ -z "${FLIPSLOT_BOOT_ATTEMPTS_PRIMARY:-}" ] ||
			number FLIPSLOT_BOOT_ATTEMPTS_PRIMARY "$FLIPSLOT_BOOT_ATTEMPTS_PRIMARY"
		;;
	custom)
		[ -n "${FLIPSLOT_CUSTOM_BACKEND:-}" ] || die "FLIPSLOT_CUSTOM_BACKEND is empty, and bootloader custom needs it"
		absolute FLIPSLOT_CUSTOM_BACKEND "$FLIPSLOT_CUSTOM_BACKEND"
		;;
	*) die "FLIPSLOT_BOOTLOADER must be grub, uboot or custom, not '$bootloader'" ;;
	esac
	absolute FLIPSLOT_KEYRING "$keyring"
	absolute FLIPSLOT_DATA_DIRECTORY "$data_directory"
	number FLIPSLOT_MIN_SIGNATURES "$min_signatures"
	n=0
	for slot in $slots; do
		n=$((n + 1))
		class=${slot%%:*}
		rest=${slot#*:}
		bootname=${rest%%:*}
		device=${rest#*:}
		case $slot in
		*:*:*) ;;
		*) die "FLIPSLOT_SLOTS entry '$slot' is not CLASS:BOOTNAME:DEVICE" ;;
		esac
		[ -n "$class" ] && [ -n "$bootname" ] || die "FLIPSLOT_SLOTS entry '$slot' has an empty class or bootname"
		absolute "the device of FLIPSLOT_SLOTS entry '$slot'" "$device"
	done
	[ "$n" -ge 2 ] || die "FLIPSLOT_SLOTS names $n slot(s); A/B needs at least two"
}

system_toml() {
	line "# Written from the FLIPSLOT_* variables of the flipslot recipe (meta-flipslot)."
	line "# Every key: docs/configuration.md."
	line "compatible = $(toml_string "$compatible")"
	line "bootloader = $(toml_string "$bootloader")"
	case $bootloader in
	grub) line "grubenv = $(toml_string "$grubenv")" ;;
	uboot)
		[ -z "${FLIPSLOT_FW_ENV_CONFIG:-}" ] || line "fw-env-config = $(toml_string "$FLIPSLOT_FW_ENV_CONFIG")"
		[ -z "${FLIPSLOT_BOOT_ATTEMPTS:-}" ] || line "boot-attempts = $FLIPSLOT_BOOT_ATTEMPTS"
		[ -z "${FLIPSLOT_BOOT_ATTEMPTS_PRIMARY:-}" ] ||
			line "boot-attempts-primary = $FLIPSLOT_BOOT_ATTEMPTS_PRIMARY"
		;;
	custom) line "custom-backend = $(toml_string "$FLIPSLOT_CUSTOM_BACKEND")" ;;
	esac
	line "keyring = $(toml_string "$keyring")"
	line "min-signatures = $min_signatures"
	line "data-directory = $(toml_string "$data_directory")"
	for slot in $slots; do
		class=${slot%%:*}
		rest=${slot#*:}
		line
		line "[[slot.$class]]"
		line "device = $(toml_string "${rest#*:}")"
		line "bootname = $(toml_string "${rest%%:*}")"
	done
	if [ -n "${FLIPSLOT_CHANNEL_URL:-}" ]; then
		line
		line "[update]"
		line "channel-url = $(toml_string "$FLIPSLOT_CHANNEL_URL")"
	fi
	if [ -n "${FLIPSLOT_SYSTEM_TOML_EXTRA:-}" ]; then
		line
		printf '%b\n' "$FLIPSLOT_SYSTEM_TOML_EXTRA"
	fi
}

service_dropin() {
	paths=${FLIPSLOT_SERVICE_READWRITE_PATHS:-}
	if [ -z "$paths" ]; then
		paths=$data_directory
		[ "$bootloader" != grub ] || paths="$paths ${grubenv%/*}"
	fi
	devices=${FLIPSLOT_SERVICE_DEVICES:-}
	if [ -z "$devices" ]; then
		for slot in $slots; do
			rest=${slot#*:}
			devices="$devices ${rest#*:}"
		done
	fi
	line "# Written from the FLIPSLOT_* variables of the flipslot recipe (meta-flipslot):"
	line "# the daemon writes only the data directory and the bootloader's environment, and"
	line "# opens only the slot devices. The empty assignments reset the unit's own lists."
	line "[Service]"
	line "ReadWritePaths="
	line "ReadWritePaths=$(printf '%s ' $paths | sed 's/ $//')"
	line "DeviceAllow="
	for dev in $devices; do
		line "DeviceAllow=$dev rw"
	done
}

tmpfiles() {
	line "# flipslot's data directory (status.json, install.lock): data-directory of system.toml."
	line "d $data_directory 0700 root root -"
}

[ $# -eq 1 ] || die "usage: flipslot-config.sh system-toml|service-dropin|tmpfiles"
check
case $1 in
system-toml) system_toml ;;
service-dropin) service_dropin ;;
tmpfiles) tmpfiles ;;
*) die "unknown output '$1': system-toml, service-dropin or tmpfiles" ;;
esac
