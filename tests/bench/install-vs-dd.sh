#!/usr/bin/env bash
# Benchmark: flipslot install into a loop-device slot against dd of the same raw image,
# in the same run. Prints time ratios (median of RUNS, default 3) and flipslot's peak RSS.
#
#   tests/bench/install-vs-dd.sh [SIZE...]      (default: 1G 4G; needs root)
#
# Both sides read their input from the page cache (one untimed pass of each first) and
# write with O_DIRECT to the same kind of loop device, ending with an fsync.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
sizes=("$@")
((${#sizes[@]})) || sizes=(1G 4G)
runs=${RUNS:-3}
bench_setup
declare -A label=([dd]="dd" [raw]="flipslot no-read-back" [rb]="flipslot read-back")

printf '%-6s %-26s %9s %9s %8s %10s\n' size case seconds "x dd" MiB/s "peak RSS"
for size in "${sizes[@]}"; do
  bytes=$(numfmt --from=iec "$size")
  head -c "$bytes" /dev/urandom > "$work/image.raw"
  "$bin/flipslot-image" build --compatible bench --version 1.0.0 \
    --image rootfs="$work/image.raw" --key "$work/bench.key" --out "$work/bundle.fsb" >/dev/null
  make_slots "$bytes"
  cat "$work/image.raw" "$work/bundle.fsb" > /dev/null
  dd if="$work/image.raw" of="$lb" bs=4M oflag=direct conv=fsync status=none
  "${fs[@]}" install --no-daemon --no-read-back "$work/bundle.fsb" >/dev/null
  declare -A t=() rss=()
  for _ in $(seq "$runs"); do
    s=$(now); dd if="$work/image.raw" of="$lb" bs=4M oflag=direct conv=fsync status=none; e=$(now)
    t[dd]+="$(echo "$e - $s" | bc) "
    time_install raw "$work/bundle.fsb" --no-read-back
    time_install rb "$work/bundle.fsb"
  done
  report "$size" "$bytes" dd raw rb
  drop_slots
  rm -f "$work/image.raw" "$work/bundle.fsb"
done
