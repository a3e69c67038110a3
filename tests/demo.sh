#!/usr/bin/env bash
# The flipslot demo: a QEMU device (OVMF + GRUB + Debian's kernel + a busybox guest running
# the real static `flipslot`) boots slot A (1.0.0), installs 2.0.0 into slot B, reboots into
# B and commits it; then a broken 2.1.0 is tried and rolled back. Streams the guest's serial
# console with a narration line per step and ends with a summary; exits non-zero if any step
# deviates. `tests/demo.sh --verbose` shows the whole console. Takes ~2 min (more on the
# first run: the kernel download and the builds).
set -euo pipefail
cd "$(dirname "$0")/.."

tests/deps.sh
echo "demo: building (cargo build --release)"
cargo build --release --locked --quiet -p flipslot-e2e --bin flipslot-demo
exec timeout 1200 cargo run --release --locked --quiet -p flipslot-e2e --bin flipslot-demo -- "$@"
