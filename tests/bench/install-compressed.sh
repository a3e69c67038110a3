#!/usr/bin/env bash
# Benchmark: a compressed bundle of a real root filesystem, installed into a loop-device
# slot, against dd of the raw filesystem image, in the same run. Prints time ratios
# (median of RUNS, default 3) and every case's peak RSS.
#
#   tests/bench/install-compressed.sh      (needs root, and a Debian mirror the first time)
#
# The image is an ext4 file system (mkfs.ext4 -d) of a Debian bookworm tree made by
# mmdebstrap (minbase and the packages in $INCLUDE), sized to the tree plus a quarter
# and 64 MiB; the bundle stores it in 4 MiB chunks compressed with zstd (level 3). Tree
# and image are kept in $FLIPSLOT_BENCH_ROOTFS (default: flipslot-bench-rootfs under
# $BENCH_DIR or /var/tmp) and reused by later runs; remove it to start afresh. Otherwise
# as install-vs-dd.sh: inputs in the page cache, one untimed pass of each side, O_DIRECT
# writes ending with an fsync.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-3}
cache=${FLIPSLOT_BENCH_ROOTFS:-${BENCH_DIR:-/var/tmp}/flipslot-bench-rootfs}
include=${INCLUDE:-systemd,systemd-sysv,udev,iproute2,openssh-server,python3,ca-certificates}
bench_setup
declare -A label=([dd]="dd" [ddrw]="dd write + read" [raw]="flipslot no-read-back"
  [rb]="flipslot read-back")

mkdir -p "$cache"
if [[ ! -d $cache/tree ]]; then
  rm -rf "$cache/tree.tmp"
  mmdebstrap --quiet --variant=minbase --include="$include" bookworm "$cache/tree.tmp"
  mv "$cache/tree.tmp" "$cache/tree"
fi
if [[ ! -f $cache/rootfs.ext4 ]]; then
  mib=$(du -sm "$cache/tree" | cut -f1)
  mib=$(((mib * 5 / 4 + 64 + 3) / 4 * 4))
  rm -f "$cache/rootfs.ext4.tmp"
  mkfs.ext4 -q -F -d "$cache/tree" "$cache/rootfs.ext4.tmp" "${mib}M"
  mv "$cache/rootfs.ext4.tmp" "$cache/rootfs.ext4"
fi
image=$cache/rootfs.ext4
bytes=$(stat -c %s "$image")
"$bin/flipslot-image" build --compatible bench --version 1.0.0 --compression zstd \
  --image rootfs="$image" --key "$work/bench.key" --out "$work/bundle.fsb" >/dev/null
echo "image $((bytes >> 20)) MiB (ext4, $(du -sm "$cache/tree" | cut -f1) MiB of files)," \
  "bundle $(($(stat -c %s "$work/bundle.fsb") >> 20)) MiB (zstd)"

# dd write + read IMAGE SLOT BYTES: the write as in `dd`, then the image read back.
dd_write_read='dd if="$1" of="$2" bs=4M oflag=direct conv=fsync status=none &&
  dd if="$2" of=/dev/null bs=4M iflag=direct,count_bytes count="$3" status=none'

make_slots "$bytes"
cat "$image" "$work/bundle.fsb" > /dev/null
dd_write=(dd if="$image" of="$lb" bs=4M oflag=direct conv=fsync status=none)
"${dd_write[@]}"
"${fs[@]}" install --no-daemon --no-read-back "$work/bundle.fsb" >/dev/null
declare -A t=() rss=()
for _ in $(seq "$runs"); do
  time_case dd "${dd_write[@]}"
  time_case ddrw sh -c "$dd_write_read" _ "$image" "$lb" "$bytes"
  time_install raw "$work/bundle.fsb" --no-read-back
  time_install rb "$work/bundle.fsb"
done
header dd
report "$((bytes >> 20))M" "$bytes" dd ddrw raw rb:ddrw
