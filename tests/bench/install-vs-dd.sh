#!/usr/bin/env bash
# Benchmark: flipslot install into a loop-device slot against dd of the same raw image,
# in the same run. Prints time ratios (median of RUNS, default 3) and every case's peak
# RSS.
#
#   tests/bench/install-vs-dd.sh [SIZE...]      (default: 1G 4G; needs root)
#
# Both sides read their input from the page cache (one untimed pass of each first) and
# write with O_DIRECT to the same kind of loop device, ending with an fsync. Baselines:
# `dd` (the write), compared with flipslot without read-back, and `dd write + read` (the
# same write, then a direct read of the image back from the slot), compared with flipslot
# with read-back.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
sizes=("$@")
((${#sizes[@]})) || sizes=(1G 4G)
runs=${RUNS:-3}
bench_setup
declare -A label=([dd]="dd" [ddrw]="dd write + read" [raw]="flipslot no-read-back"
  [rb]="flipslot read-back")

# dd write + read IMAGE SLOT BYTES: the write as in `dd`, then the image read back.
dd_write_read='dd if="$1" of="$2" bs=4M oflag=direct conv=fsync status=none &&
  dd if="$2" of=/dev/null bs=4M iflag=direct,count_bytes count="$3" status=none'

header dd
for size in "${sizes[@]}"; do
  bytes=$(numfmt --from=iec "$size")
  head -c "$bytes" /dev/urandom > "$work/image.raw"
  "$bin/flipslot-image" build --compatible bench --version 1.0.0 \
    --image rootfs="$work/image.raw" --key "$work/bench.key" --out "$work/bundle.fsb" >/dev/null
  make_slots "$bytes"
  cat "$work/image.raw" "$work/bundle.fsb" > /dev/null
  dd_write=(dd if="$work/image.raw" of="$lb" bs=4M oflag=direct conv=fsync status=none)
  "${dd_write[@]}"
  "${fs[@]}" install --no-daemon --no-read-back "$work/bundle.fsb" >/dev/null
  declare -A t=() rss=()
  for _ in $(seq "$runs"); do
    time_case dd "${dd_write[@]}"
    time_case ddrw sh -c "$dd_write_read" _ "$work/image.raw" "$lb" "$bytes"
    time_install raw "$work/bundle.fsb" --no-read-back
    time_install rb "$work/bundle.fsb"
  done
  report "$size" "$bytes" dd ddrw raw rb:ddrw
  drop_slots
  rm -f "$work/image.raw" "$work/bundle.fsb"
done
