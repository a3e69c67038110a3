# Shared set-up of the benchmark scripts (sourced, not run).
# After bench_setup: $repo, $bin, $work, and a keyring, grubenv and cmdline in $work.
# make_slots BYTES: two preallocated loop-device slots ($la, $lb) and $work/system.toml.

bench_setup() {
  cd "$(dirname "${BASH_SOURCE[1]}")/../.."
  repo=$(pwd)
  tests/deps.sh
  cargo build --release --locked --quiet
  bin="$repo/target/release"
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

# report SIZE BYTES BASELINE-LABEL CASE...: prints one line per case from ${t[case]} and
# ${rss[case]}, with the ratio to the first case.
report() {
  local size=$1 bytes=$2 base_case=$3; shift 3
  local base m ratio mibs r c
  base=$(tr ' ' '\n' <<<"${t[$base_case]}" | grep . | median)
  for c in "$base_case" "$@"; do
    m=$(tr ' ' '\n' <<<"${t[$c]}" | grep . | median)
    ratio=$(echo "scale=3; $m / $base" | bc)
    mibs=$(echo "scale=0; $bytes / 1048576 / $m" | bc)
    r="-"; [[ -n ${rss[$c]:-} ]] && r="$((rss[$c] / 1024)) MiB"
    printf '%-6s %-26s %9.2f %9s %8s %10s\n' "$size" "${label[$c]}" "$m" "${ratio}x" "$mibs" "$r"
  done
}

# time_install CASE SOURCE [ARGS...]: one timed flipslot install, appending to ${t[CASE]}.
time_install() {
  local c=$1 src=$2 s e; shift 2
  rm -rf "$work/data"
  s=$(now)
  /usr/bin/time -f %M -o "$work/rss" "${fs[@]}" install --no-daemon "$@" "$src" >/dev/null
  e=$(now)
  t[$c]+="$(echo "$e - $s" | bc) "
  rss[$c]=$(cat "$work/rss")
}
