#!/usr/bin/env bash
# The main demo until the QEMU rig exists: build flipslot, make a signing key, build a
# signed bundle from a directory tree, and install it into an A/B pair of loop-device
# slots; then show `flipslot status --json`. Needs root (loop devices).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

tests/deps.sh
cargo build --release --locked --quiet
bin="$repo/target/release"

work=$(mktemp -d /tmp/flipslot-demo.XXXXXX)
loops=()
cleanup() {
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "make a signing key"
mkdir -p "$work/keys" "$work/keyring"
"$bin/flipslot-image" keygen --out-dir "$work/keys" --name release
cp "$work/keys/release.pub" "$work/keyring/"

step "build a signed bundle from a root filesystem tree (squashfs)"
mkdir -p "$work/rootfs/etc" "$work/rootfs/usr/bin"
echo 'VERSION_ID=1.0.0' > "$work/rootfs/etc/os-release"
head -c 8M /dev/urandom > "$work/rootfs/usr/bin/payload"
"$bin/flipslot-image" build --compatible demo-board --version 1.0.0 \
  --dir rootfs="$work/rootfs" --fs squashfs \
  --key "$work/keys/release.key" --out "$work/update.fsb"
"$bin/flipslot-image" info --keyring "$work/keyring" "$work/update.fsb"

step "two loop-device slots, a grubenv, a system config"
for s in a b; do
  truncate -s 64M "$work/slot-$s.img"
  loops+=("$(losetup --find --show "$work/slot-$s.img")")
done
# A fresh grubenv as grub-editenv makes it, with RAUC-style variables: A is primary.
grub-editenv "$work/grubenv" create
grub-editenv "$work/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=1 B_TRY=0
cat > "$work/system.toml" <<TOML
compatible = "demo-board"
bootloader = "grub"
grubenv = "$work/grubenv"
keyring = "$work/keyring"
data-directory = "$work/data"

[[slot.rootfs]]
device = "${loops[0]}"
bootname = "A"

[[slot.rootfs]]
device = "${loops[1]}"
bootname = "B"
TOML
# Pretend the machine booted slot A (a real system reads /proc/cmdline).
echo "root=${loops[0]} flipslot.slot=A" > "$work/cmdline"
fs=("$bin/flipslot" --config "$work/system.toml" --cmdline-file "$work/cmdline")

step "status before"
"${fs[@]}" status

step "install the bundle: it goes to the inactive slot B"
"${fs[@]}" install "$work/update.fsb"

step "status --json after: B is primary and will be tried at the next boot"
"${fs[@]}" status --json
grub-editenv "$work/grubenv" list
