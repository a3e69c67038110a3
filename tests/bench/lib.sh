# Shared set-up of the benchmark scripts (sourced, not run).
# After bench_setup: $repo, $bin, $work, and a keyring, grubenv and cmdline in $work.
# make_slots BYTES: two preallocated loop-device slots ($la, $lb) and $work/system.toml.
# Every case is timed with /usr/bin/time, which also gives its peak RSS (for a pipeline,
# that of its largest process).

bench_setup() {
  cd "$(dirname "${BASH_SOURCE[1]}")/../.."
  repo=$(pwd)
  tests/deps.sh
  cargo build --release --locked --quiet -p flipslot -p flipslot-image
  bin="${CARGO_TARGET_DIR:-$repo/target}/release"
  work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/flipslot-bench.XXXXXX")
  loops=()
  cleanup_hooks=()
  trap bench_cleanup EXIT
  "$bin/flipslot-image" keygen --out-dir "$work" --name bench >/dev/null
  mkdir -p "$work/keyring" && cp "$work/bench.pub" "$work/keyring/"
  grub-editenv "$work/grubenv" create
  grub-editenv "$work/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=1 B_TRY=0
  echo "flipslot.slot=A" > "$work/cmdline"
  fs=("$bin/flipslot" --config "$work/system.toml" --cmdline-file "$work/cmdline")
}

bench_cleanup() {
  for h in "${cleanup_hooks[@]}"; do $h || true; done
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$work"
}

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Preallocated backing files (no side pays for block allocation), loop devices in
# direct-I/O mode (writes reach the backing disk, not its page cache).
make_slots() {
  local bytes=$1 s
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
}

drop_slots() {
  losetup -d "$la" "$lb"; loops=()
  rm -f "$work/slot-a.img" "$work/slot-b.img"
}

# report SIZE BYTES BASE CASE[:REF]...: one line per case (BASE first) from ${t[case]} and
# ${rss[case]}: the median time, its ratio to BASE and, for CASE:REF, to REF as well.
report() {
  local size=$1 bytes=$2 base_case=$3; shift 3
  local base m ratio mibs r c ref vs
  base=$(median_of "$base_case")
  for c in "$base_case" "$@"; do
    ref=""; [[ $c == *:* ]] && { ref=${c#*:}; c=${c%%:*}; }
    m=$(median_of "$c")
    ratio=$(printf '%.2f' "$(echo "scale=4; $m / $base" | bc)")
    vs="-"
    [[ -n $ref ]] && vs="$(printf '%.2f' "$(echo "scale=4; $m / $(median_of "$ref")" | bc)")x ${label[$ref]}"
    mibs=$(echo "scale=0; $bytes / 1048576 / $m" | bc)
    r="-"; [[ -n ${rss[$c]:-} ]] && r="$((rss[$c] / 1024)) MiB"
    printf '%-6s %-28s %8.2f %8s %7s %9s  %s\n' "$size" "${label[$c]}" "$m" "${ratio}x" "$mibs" "$r" "$vs"
  done
}

# header BASE-LABEL: the column titles of report.
header() {
  printf '%-6s %-28s %8s %8s %7s %9s  %s\n' size case seconds "x $1" MiB/s "peak RSS" "ratio to its reference"
}

median_of() { tr ' ' '\n' <<<"${t[$1]}" | grep . | median; }

# time_case CASE CMD...: one timed run of CMD (output discarded), appending its time to
# ${t[CASE]} and keeping the largest peak RSS seen in ${rss[CASE]} (KiB).
time_case() {
  local c=$1 s e m; shift
  s=$(now)
  /usr/bin/time -f %M -o "$work/rss" "$@" >/dev/null
  e=$(now)
  t[$c]+="$(echo "$e - $s" | bc) "
  m=$(tail -n1 "$work/rss")
  ((m > ${rss[$c]:-0})) && rss[$c]=$m
  return 0
}

# time_install CASE SOURCE [ARGS...]: one timed flipslot install, appending to ${t[CASE]}.
time_install() {
  local c=$1 src=$2; shift 2
  rm -rf "$work/data"
  time_case "$c" "${fs[@]}" install --no-daemon "$@" "$src"
}
