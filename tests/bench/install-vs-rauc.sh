#!/usr/bin/env bash
# Benchmark: flipslot against RAUC 1.8 installing the same RAUC plain bundle (made by the
# real `rauc bundle`) into a loop-device slot, driven by the same RAUC system.conf, with
# dd of the raw image as the baseline, in the same run. Prints time ratios (median of
# RUNS, default 3), the peak RSS of flipslot and of the RAUC service, and checks after
# every install that the slot holds the image.
#
#   tests/bench/install-vs-rauc.sh          (needs root, rauc, dbus-daemon)
#   SIZE=4G RUNS=5 tests/bench/install-vs-rauc.sh
#   COLD=1 tests/bench/install-vs-rauc.sh   (drop the page cache before each timed run)
#
# By default every side reads its input from the page cache (one untimed pass of each
# first), as in install-vs-dd.sh; with COLD=1 each timed run starts after
# `sync; echo 3 > /proc/sys/vm/drop_caches`. RAUC runs as `rauc service` on a private
# D-Bus daemon (nothing reaches the host's system bus), restarted for every install so
# its VmHWM is that install's; `rauc install` is timed until it returns.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
size=${SIZE:-1G}
runs=${RUNS:-3}
cold=${COLD:-0}
bytes=$(numfmt --from=iec "$size")
bench_setup
for tool in rauc dbus-daemon dbus-send grub-editenv mksquashfs openssl; do
  command -v "$tool" >/dev/null || { echo "install-vs-rauc: $tool is missing" >&2; exit 1; }
done
declare -A label=([dd]="dd" [rauc]="RAUC 1.8 (service)" [rb]="flipslot read-back"
  [raw]="flipslot no-read-back")

# The image (urandom: incompressible, so mksquashfs stores it uncompressed and neither side
# decompresses), the PKI and the plain bundle.
head -c "$bytes" /dev/urandom > "$work/rootfs.img"
sh "$repo/tests/rauc/make-pki.sh" "$work/pki"
mkdir -p "$work/content"
ln "$work/rootfs.img" "$work/content/rootfs.img"
cat > "$work/content/manifest.raucm" <<EOF
[update]
compatible=bench
version=2.0.0
description=install-vs-rauc benchmark

[bundle]
format=plain

[image.rootfs]
filename=rootfs.img
EOF
rauc bundle --cert "$work/pki/signer.pem" --key "$work/pki/signer.key" \
  "$work/content" "$work/bundle.raucb" >"$work/rauc-bundle.log" 2>&1 ||
  { cat "$work/rauc-bundle.log" >&2; exit 1; }
rm -rf "$work/content"

make_slots "$bytes"
conf="$work/system.conf"
cat > "$conf" <<EOF
[system]
compatible=bench
bootloader=grub
grubenv=$work/grubenv
data-directory=$work/data
mountprefix=$work/mnt

[keyring]
path=$work/pki/ca.pem

[slot.rootfs.0]
device=$la
type=raw
bootname=A

[slot.rootfs.1]
device=$lb
type=raw
bootname=B
EOF
mkdir -p "$work/mnt"
echo "BOOT_IMAGE=/vmlinuz rauc.slot=A ro" > "$work/cmdline-rauc"
fs=("$bin/flipslot" --config "$conf" --cmdline-file "$work/cmdline-rauc")

# A private D-Bus daemon for RAUC's service and client (RAUC 1.8 uses the session bus
# when DBUS_STARTER_BUS_TYPE=session, the system bus otherwise: both point at it).
dbus_pid=$(dbus-daemon --session --fork --address="unix:path=$work/bus" --print-pid)
export DBUS_SESSION_BUS_ADDRESS="unix:path=$work/bus"
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$work/bus"
export DBUS_STARTER_BUS_TYPE=session
rauc_pid=
stop_rauc() {
  [[ -n $rauc_pid ]] || return 0
  kill "$rauc_pid" 2>/dev/null || true
  wait "$rauc_pid" 2>/dev/null || true
  rauc_pid=
}
stop_dbus() { kill "$dbus_pid" 2>/dev/null || true; }
unmount_bundle() { umount "$work/mnt/bundle" 2>/dev/null || true; }
cleanup_hooks+=(stop_rauc unmount_bundle stop_dbus)

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
  echo "install-vs-rauc: the RAUC service did not come up; its log:" >&2
  cat "$work/rauc-service.log" >&2
  exit 1
}

# Untimed: slot B's first MiB zeroed (an install that skipped writing fails the check),
# A primary in the grubenv, an empty data directory; with COLD=1, an empty page cache.
reset_b() {
  dd if=/dev/zero of="$lb" bs=1M count=1 oflag=direct conv=fsync status=none
  grub-editenv "$work/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=1 B_TRY=0
  rm -rf "$work/data" && mkdir -p "$work/data"
}
maybe_drop_caches() {
  if [[ $cold == 1 ]]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
}
check_b() {
  cmp -n "$bytes" "$work/rootfs.img" "$lb" || {
    echo "install-vs-rauc: slot B does not hold the image after $1" >&2
    exit 1
  }
}

# time_rauc CASE: one timed `rauc install`; the service's VmHWM into ${rss[CASE]}, the
# client's maximum RSS into $rauc_client_rss.
time_rauc() {
  local c=$1 s e
  reset_b
  start_rauc
  maybe_drop_caches
  s=$(now)
  if ! /usr/bin/time -f %M -o "$work/rss" rauc --conf="$conf" install "$work/bundle.raucb" \
      >"$work/rauc-install.log" 2>&1; then
    echo "install-vs-rauc: rauc install failed:" >&2
    cat "$work/rauc-install.log" "$work/rauc-service.log" >&2
    exit 1
  fi
  e=$(now)
  t[$c]+="$(echo "$e - $s" | bc) "
  rss[$c]=$(awk '/^VmHWM:/ {print $2}' "/proc/$rauc_pid/status")
  rauc_anon=$(awk '/^RssAnon:/ {print $2}' "/proc/$rauc_pid/status")
  rauc_client_rss=$(tail -n 1 "$work/rss")
  stop_rauc
  check_b "rauc install"
}

time_dd() {
  maybe_drop_caches
  local s e
  s=$(now)
  dd if="$work/rootfs.img" of="$lb" bs=4M oflag=direct conv=fsync status=none
  e=$(now)
  t[dd]+="$(echo "$e - $s" | bc) "
  check_b dd
}

time_flipslot() {
  local c=$1
  shift
  reset_b
  maybe_drop_caches
  time_install "$c" "$work/bundle.raucb" "$@"
  check_b "flipslot install $*"
}

# Where the time goes: RAUC's own log lines (timestamps to the millisecond) of the last
# install, and one more flipslot install with --json progress, each line stamped on arrival.
rauc_phases() {
  awk '
    function t(s, a) { split(s, a, ":"); return a[1] * 3600 + a[2] * 60 + a[3] }
    { ts = t($2) }
    /Verifying bundle signature/ { v = ts }
    /Verified detached signature/ { vd = ts }
    /writing data to device/ { w = ts }
    /Updating slot .* status$/ { wd = ts }
    END { printf "  RAUC 1.8: signature %.2f s, loop device and mount %.2f s, copy %.2f s\n",
            vd - v, w - vd, wd - w }' "$work/rauc-service.log"
}
flipslot_phases() {
  reset_b
  local l
  "${fs[@]}" install --no-daemon --json "$@" "$work/bundle.raucb" 2>/dev/null |
    while IFS= read -r l; do echo "$EPOCHREALTIME $l"; done > "$work/phases.log"
  check_b "flipslot install --json $*"
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

# Warm-up: the inputs into the page cache, one untimed pass of each side.
cat "$work/rootfs.img" "$work/bundle.raucb" > /dev/null
declare -A t=() rss=()
time_dd
time_rauc rauc
time_flipslot raw --no-read-back
time_flipslot rb
declare -A t=() rss=()
for _ in $(seq "$runs"); do
  time_dd
  time_rauc rauc
  time_flipslot rb
  time_flipslot raw --no-read-back
done

cache=warm
[[ $cold == 1 ]] && cache="dropped before each run"
echo "plain bundle of a $size image, $(stat -c %s "$work/bundle.raucb") bytes;" \
  "page cache: $cache; median of $runs"
printf '%-6s %-26s %9s %9s %8s %10s\n' size case seconds "x dd" MiB/s "peak RSS"
report "$size" "$bytes" dd rauc rb raw
printf '%-6s %-26s %9s %9s %8s %10s\n' size case seconds "x RAUC" MiB/s "peak RSS"
report "$size" "$bytes" rauc rb raw
echo "RAUC service: RssAnon after the install $((rauc_anon / 1024)) MiB (its VmHWM counts" \
  "the mmapped bundle); rauc install (the D-Bus client): peak RSS" \
  "$((rauc_client_rss / 1024)) MiB"
echo "phases (the last RAUC run; one more flipslot run each):"
rauc_phases
flipslot_phases
flipslot_phases --no-read-back
echo "every run, seconds:"
for c in dd rauc rb raw; do printf '  %-26s %s\n' "${label[$c]}" "${t[$c]}"; done
