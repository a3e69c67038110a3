# Shared functions of the RAUC benchmarks (sourced after lib.sh, not run):
# install-vs-rauc.sh on the host and install-vs-rauc-guest.sh, whose guest half sources
# this file again inside the QEMU guest.
#
# Callers set: $work (scratch directory), and before the install functions $conf (the RAUC
# system.conf), $lb (slot B's device), fs=(flipslot --config … --cmdline-file …) and
# $cold (1: drop the page cache before each timed run).
# Results go into the associative arrays t (seconds per run, space-separated) and rss
# (peak RSS in KiB), keyed "CASE/SIDE" with SIDE one of dd floor rauc rb raw.

# The Debian release the cached trees come from, and the cache directory.
rauc_suite=bookworm
rauc_cache_dir() {
  local d=${BENCH_CACHE:-${BENCH_DIR:-/var/tmp}/flipslot-bench-cache}
  mkdir -p "$d" && echo "$d"
}

rauc_need() {
  local tool
  for tool; do
    command -v "$tool" >/dev/null || { echo "rauc-bench: $tool is missing" >&2; exit 1; }
  done
}

# debian_tar NAME PACKAGES: a cached mmdebstrap tarball (minbase plus PACKAGES, comma
# separated) of $rauc_suite; prints its path. The name holds a hash of the package list,
# so changing the list builds a new one.
debian_tar() {
  local name=$1 pkgs=$2 cache key tar
  cache=$(rauc_cache_dir)
  key=$(echo "$rauc_suite $pkgs" | sha256sum | cut -c1-12)
  tar="$cache/$name-$rauc_suite-$key.tar"
  if [[ ! -f $tar || ! -s $tar ]]; then
    echo "rauc-bench: mmdebstrap $rauc_suite minbase + $pkgs (cached as $tar)" >&2
    mmdebstrap --quiet --format=tar --variant=minbase --include="$pkgs" "$rauc_suite" \
      "$tar.tmp" >&2 ||
      { echo "rauc-bench: mmdebstrap failed" >&2; exit 1; }
    mv "$tar.tmp" "$tar"
  fi
  echo "$tar"
}

# ext4_of_tar TAR OUT: an ext4 image of the tree in TAR, a quarter larger than the tree
# (the free blocks are zeros, as on a freshly made file system).
ext4_of_tar() {
  local tar=$1 out=$2 tree kib
  tree=$(mktemp -d "$work/tree.XXXXXX")
  tar -C "$tree" -xf "$tar"
  kib=$(du -sk "$tree" | cut -f1)
  rm -f "$out"
  truncate -s "$(((kib * 5 / 4 / 1024 + 1) * 1024))k" "$out"
  mke2fs -q -t ext4 -d "$tree" "$out"
  rm -rf "$tree"
}

# rauc_make_bundle FORMAT IMAGE OUT [MKSQUASHFS-ARGS]: the real `rauc bundle` (format plain
# or verity) of IMAGE as [image.rootfs], signed with the PKI in $work/pki.
rauc_make_bundle() {
  local format=$1 image=$2 out=$3 sqargs=${4:-} d args=()
  d=$(mktemp -d "$work/content.XXXXXX")
  ln "$image" "$d/rootfs.img" 2>/dev/null || cp "$image" "$d/rootfs.img"
  cat > "$d/manifest.raucm" <<EOF
[update]
compatible=bench
version=2.0.0
description=install-vs-rauc benchmark

[bundle]
format=$format

[image.rootfs]
filename=rootfs.img
EOF
  [[ -n $sqargs ]] && args=(--mksquashfs-args="$sqargs")
  rm -f "$out"
  rauc bundle --cert "$work/pki/signer.pem" --key "$work/pki/signer.key" "${args[@]}" \
    "$d" "$out" >"$work/rauc-bundle.log" 2>&1 ||
    { cat "$work/rauc-bundle.log" >&2; exit 1; }
  rm -rf "$d"
}

# rauc_write_conf CONF KEYRING SLOT-A SLOT-B: RAUC's system.conf for two raw slots, the
# grubenv, data directory and mount prefix in $work.
rauc_write_conf() {
  cat > "$1" <<EOF
[system]
compatible=bench
bootloader=grub
grubenv=$work/grubenv
data-directory=$work/data
mountprefix=$work/mnt

[keyring]
path=$2

[slot.rootfs.0]
device=$3
type=raw
bootname=A

[slot.rootfs.1]
device=$4
type=raw
bootname=B
EOF
  mkdir -p "$work/mnt"
  [[ -f $work/grubenv ]] || grub-editenv "$work/grubenv" create
  echo "BOOT_IMAGE=/vmlinuz rauc.slot=A ro" > "$work/cmdline-rauc"
}

# A private D-Bus daemon for RAUC's service and client (RAUC 1.8 uses the session bus
# when DBUS_STARTER_BUS_TYPE=session, the system bus otherwise: both point at it).
rauc_pid=
dbus_pid=
rauc_dbus_start() {
  dbus_pid=$(dbus-daemon --session --fork --address="unix:path=$work/bus" --print-pid)
  export DBUS_SESSION_BUS_ADDRESS="unix:path=$work/bus"
  export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$work/bus"
  export DBUS_STARTER_BUS_TYPE=session
}
stop_rauc() {
  [[ -n $rauc_pid ]] || return 0
  kill "$rauc_pid" 2>/dev/null || true
  wait "$rauc_pid" 2>/dev/null || true
  rauc_pid=
}
stop_dbus() { [[ -z $dbus_pid ]] || kill "$dbus_pid" 2>/dev/null || true; }
unmount_bundle() { umount "$work/mnt/bundle" 2>/dev/null || true; }

start_rauc() {
  rauc --conf="$conf" service --override-boot-slot=A >"$work/rauc-service.log" 2>&1 &
  rauc_pid=$!
  local i
  for i in $(seq 100); do
    if dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus.NameHasOwner string:de.pengutronix.rauc 2>/dev/null |
        grep 'boolean true' >/dev/null; then
      return 0
    fi
    kill -0 "$rauc_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "rauc-bench: the RAUC service did not come up; its log:" >&2
  cat "$work/rauc-service.log" >&2
  exit 1
}

# Untimed: slot B's first MiB zeroed (an install that skipped writing fails the check),
# A primary in the grubenv, an empty data directory; with cold=1, an empty page cache.
reset_b() {
  dd if=/dev/zero of="$lb" bs=1M count=1 oflag=direct conv=fsync status=none
  grub-editenv "$work/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=1 B_TRY=0
  rm -rf "$work/data" && mkdir -p "$work/data"
}
maybe_drop_caches() {
  if [[ ${cold:-0} == 1 ]]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
}
# check_b IMAGE WHAT: slot B must start with IMAGE.
check_b() {
  cmp -n "$(stat -c %s "$1")" "$1" "$lb" || {
    echo "rauc-bench: slot B does not hold the image after $2" >&2
    exit 1
  }
}
add_time() { t[$1]+="$(echo "$3 - $2" | bc) "; }

# rauc_install_once BUNDLE: one `rauc install` on a fresh service; its time into $rauc_s,
# the service's VmHWM and RssAnon (KiB) into $rauc_hwm and $rauc_anon, the client's maximum
# RSS into $rauc_client_rss. Returns 1 (logs in $work) if the install failed.
rauc_install_once() {
  local s e rc=0
  reset_b
  start_rauc
  maybe_drop_caches
  s=$(now)
  /usr/bin/time -f %M -o "$work/rss" rauc --conf="$conf" install "$1" \
    >"$work/rauc-install.log" 2>&1 || rc=1
  e=$(now)
  rauc_s=$(echo "$e - $s" | bc)
  rauc_hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$rauc_pid/status")
  rauc_anon=$(awk '/^RssAnon:/ {print $2}' "/proc/$rauc_pid/status")
  rauc_client_rss=$(tail -n 1 "$work/rss")
  stop_rauc
  unmount_bundle
  return $rc
}

# time_rauc CASE BUNDLE IMAGE: one timed `rauc install`; fails the script if it fails.
time_rauc() {
  if ! rauc_install_once "$2"; then
    echo "rauc-bench: rauc install of $2 failed:" >&2
    cat "$work/rauc-install.log" "$work/rauc-service.log" >&2
    exit 1
  fi
  t[$1/rauc]+="$rauc_s "
  rss[$1/rauc]=$rauc_hwm
  check_b "$3" "rauc install"
}

# time_dd CASE IMAGE: dd of the raw image to slot B, direct and synced.
time_dd() {
  local s e
  maybe_drop_caches
  s=$(now)
  /usr/bin/time -f %M -o "$work/rss" \
    dd if="$2" of="$lb" bs=4M oflag=direct conv=fsync status=none
  e=$(now)
  add_time "$1/dd" "$s" "$e"
  rss[$1/dd]=$(tail -n 1 "$work/rss")
  check_b "$2" dd
}

# time_floor CASE BUNDLE IMAGE: the least a verifying installer of a plain bundle must do,
# run back to back: SHA-256 of the whole bundle (its signature covers the payload) by
# `openssl dgst` (OpenSSL's SHA-256, as RAUC's; coreutils' sha256sum is several times
# slower where the CPU has SHA extensions), then dd of the raw image. Peak RSS: the larger
# of the two.
time_floor() {
  local s e m1 m2
  maybe_drop_caches
  s=$(now)
  /usr/bin/time -f %M -o "$work/rss" openssl dgst -sha256 "$2" >/dev/null
  m1=$(tail -n 1 "$work/rss")
  /usr/bin/time -f %M -o "$work/rss" \
    dd if="$3" of="$lb" bs=4M oflag=direct conv=fsync status=none
  e=$(now)
  m2=$(tail -n 1 "$work/rss")
  add_time "$1/floor" "$s" "$e"
  rss[$1/floor]=$((m1 > m2 ? m1 : m2))
  check_b "$3" "openssl dgst + dd"
}

# time_flipslot CASE SIDE BUNDLE IMAGE [ARGS...]: one timed flipslot install (lib.sh's
# time_install) into ${t[CASE/SIDE]}.
time_flipslot() {
  local c=$1/$2 bundle=$3 image=$4
  shift 4
  reset_b
  maybe_drop_caches
  time_install "$c" "$bundle" "$@"
  check_b "$image" "flipslot install $*"
}

# rauc_report CASE TITLE BYTES SIDE...: one table, a row per SIDE with its median, the
# ratios to dd, to the floor and to RAUC (where those were measured), MiB/s and peak RSS.
declare -A rauc_side_label=([dd]="dd (raw image)" [floor]="SHA-256 of bundle + dd"
  [rauc]="RAUC 1.8 (service)" [rb]="flipslot read-back" [raw]="flipslot no-read-back")
rauc_median() { tr ' ' '\n' <<<"${t[$1]:-}" | grep . | median; }
rauc_ratio() {
  [[ -n ${t[$2]:-} ]] || { echo "-"; return; }
  printf '%.2fx' "$(echo "scale=4; $1 / $(rauc_median "$2")" | bc)"
}
rauc_report() {
  local c=$1 title=$2 bytes=$3 side m r
  shift 3
  echo "$title"
  printf '  %-24s %8s %8s %9s %8s %7s %10s\n' side seconds "x dd" "x floor" "x RAUC" MiB/s \
    "peak RSS"
  for side; do
    [[ -n ${t[$c/$side]:-} ]] || continue
    m=$(rauc_median "$c/$side")
    r="-"; [[ -n ${rss[$c/$side]:-} ]] && r="$((rss[$c/$side] / 1024)) MiB"
    printf '  %-24s %8.2f %8s %9s %8s %7s %10s\n' "${rauc_side_label[$side]}" "$m" \
      "$(rauc_ratio "$m" "$c/dd")" "$(rauc_ratio "$m" "$c/floor")" \
      "$(rauc_ratio "$m" "$c/rauc")" "$(echo "scale=0; $bytes / 1048576 / $m" | bc)" "$r"
  done
  echo "  every run, seconds:"
  for side; do
    [[ -n ${t[$c/$side]:-} ]] || continue
    printf '    %-24s %s\n' "${rauc_side_label[$side]}" "${t[$c/$side]}"
  done
}

# Where the time goes: RAUC's own log lines (timestamps to the millisecond) of its last
# install, and one more flipslot install with --json progress, each line stamped on arrival.
rauc_phases() {
  awk '
    function t(s, a) { split(s, a, ":"); return a[1] * 3600 + a[2] * 60 + a[3] }
    { ts = t($2) }
    /Verifying bundle signature/ { v = ts }
    /Verified (detached|inline) signature/ { vd = ts }
    /writing data to device/ { w = ts }
    /Updating slot .* status$/ { wd = ts }
    END { printf "  RAUC 1.8: signature %.2f s, loop device and mount %.2f s, copy %.2f s\n",
            vd - v, w - vd, wd - w }' "$work/rauc-service.log"
}
# flipslot_phases BUNDLE IMAGE [ARGS...]
flipslot_phases() {
  local bundle=$1 image=$2 l
  shift 2
  reset_b
  "${fs[@]}" install --no-daemon --json "$@" "$bundle" 2>/dev/null |
    while IFS= read -r l; do echo "$EPOCHREALTIME $l"; done > "$work/phases.log"
  check_b "$image" "flipslot install --json $*"
  awk '
    match($0, /"phase":"[^"]*"/) {
      p = substr($0, RSTART + 9, RLENGTH - 10)
      if (!(p in first)) { first[p] = $1; order[n++] = p }
      last[p] = $1
    }
    END {
      printf "  flipslot %s:", label
      for (i = 0; i < n; i++) {
        p = order[i]
        printf "%s %s %.2f s", (i ? "," : ""), p, last[p] - first[p]
      }
      printf "\n"
    }' label="${*:-(read-back)}" "$work/phases.log"
}

# rauc_bench_case CASE BUNDLE IMAGE WITH-RAUC: warm-up (the inputs read once, one untimed
# run of each side), then $runs rounds of dd, floor, [RAUC,] flipslot with and without
# read-back.
rauc_bench_case() {
  local c=$1 bundle=$2 image=$3 with_rauc=$4 i
  cat "$image" "$bundle" > /dev/null
  for i in warm $(seq "$runs"); do
    time_dd "$c" "$image"
    time_floor "$c" "$bundle" "$image"
    [[ $with_rauc == 1 ]] && time_rauc "$c" "$bundle" "$image"
    time_flipslot "$c" rb "$bundle" "$image"
    time_flipslot "$c" raw "$bundle" "$image" --no-read-back
    if [[ $i == warm ]]; then
      local k
      for k in dd floor rauc rb raw; do unset "t[$c/$k]"; done
    fi
  done
}
