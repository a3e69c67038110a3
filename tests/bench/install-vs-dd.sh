#!/usr/bin/env bash
# Benchmark: flipslot install into a loop-device slot against dd of the same raw image,
# in the same run. Prints time ratios and flipslot's peak RSS for each size.
#
#   tests/bench/install-vs-dd.sh [SIZE...]      (default: 1G 4G; needs root)
#
# Both sides read their input from the page cache (each file is read once beforehand)
# and write with O_DIRECT to the same kind of loop device (itself in direct-I/O mode, so
# writes reach the backing disk rather than its page cache), ending with an fsync.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
sizes=("$@")
((${#sizes[@]})) || sizes=(1G 4G)
runs=${RUNS:-3}

tests/deps.sh
cargo build --release --locked --quiet
bin="$repo/target/release"
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/flipslot-bench.XXXXXX")
loops=()
cleanup() {
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

"$bin/flipslot-image" keygen --out-dir "$work" --name bench >/dev/null
mkdir -p "$work/keyring" && cp "$work/bench.pub" "$work/keyring/"
grub-editenv "$work/grubenv" create
grub-editenv "$work/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=1 B_TRY=0
echo "flipslot.slot=A" > "$work/cmdline"

printf '%-6s %-22s %9s %9s %8s %10s\n' size case seconds "x dd" MiB/s "peak RSS"
for size in "${sizes[@]}"; do
  bytes=$(numfmt --from=iec "$size")
  head -c "$bytes" /dev/urandom > "$work/image.raw"
  "$bin/flipslot-image" build --compatible bench --version 1.0.0 \
    --image rootfs="$work/image.raw" --key "$work/bench.key" --out "$work/bundle.fsb" >/dev/null
  # Preallocated backing files: no side pays for block allocation.
  for s in a b; do fallocate -l "$bytes" "$work/slot-$s.img"; done
  la=$(losetup --direct-io=on --find --show "$work/slot-a.img"); loops+=("$la")
  lb=$(losetup --direct-io=on --find --show "$work/slot-b.img"); loops+=("$lb")
  cat > "$work/system.toml" <<TOML
compatible = "bench"
bootloader = "grub"
grubenv = "$work/grubenv"
keyring = "$work/keyring"
data-directory = "$work/data"
[[slot.rootfs]]
device = "$la"
bootname = "A"
[[slot.rootfs]]
device = "$lb"
bootname = "B"
TOML
  cat "$work/image.raw" "$work/bundle.fsb" > /dev/null
  fs=("$bin/flipslot" --config "$work/system.toml" --cmdline-file "$work/cmdline")

  # One untimed pass of each so caches and the loop devices are warm for both sides.
  dd if="$work/image.raw" of="$lb" bs=4M oflag=direct conv=fsync status=none
  "${fs[@]}" install --no-daemon --no-read-back "$work/bundle.fsb" >/dev/null
  declare -A t=() rss=()
  for _ in $(seq "$runs"); do
    s=$(now); dd if="$work/image.raw" of="$lb" bs=4M oflag=direct conv=fsync status=none; e=$(now)
    t[dd]+="$(echo "$e - $s" | bc) "
    for mode in no-read-back read-back; do
      extra=(); [[ $mode == no-read-back ]] && extra=(--no-read-back)
      rm -rf "$work/data"
      s=$(now)
      /usr/bin/time -f %M -o "$work/rss" "${fs[@]}" install --no-daemon "${extra[@]}" "$work/bundle.fsb" >/dev/null
      e=$(now)
      t[$mode]+="$(echo "$e - $s" | bc) "
      rss[$mode]=$(cat "$work/rss")
    done
  done
  base=$(tr ' ' '\n' <<<"${t[dd]}" | grep . | median)
  for c in dd no-read-back read-back; do
    m=$(tr ' ' '\n' <<<"${t[$c]}" | grep . | median)
    ratio=$(echo "scale=3; $m / $base" | bc)
    mibs=$(echo "scale=0; $bytes / 1048576 / $m" | bc)
    r="-"; [[ -n ${rss[$c]:-} ]] && r="$((rss[$c] / 1024)) MiB"
    label=$c; [[ $c != dd ]] && label="flipslot $c"
    printf '%-6s %-22s %9.2f %9s %8s %10s\n' "$size" "$label" "$m" "${ratio}x" "$mibs" "$r"
  done
  losetup -d "$la" "$lb"; loops=()
  rm -f "$work/slot-a.img" "$work/slot-b.img" "$work/image.raw" "$work/bundle.fsb"
done
