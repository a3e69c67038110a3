#!/usr/bin/env bash
# Benchmark: flipslot against RAUC 1.8 installing the same RAUC plain and verity bundles
# (made by the real `rauc bundle`), inside a QEMU guest whose kernel has device-mapper and
# dm-verity, which RAUC needs for verity bundles. Debian's own kernel (linux-image-amd64,
# unpacked, its modules loaded: virtio, ext4, loop, squashfs, dm-mod, dm-verity) boots a
# Debian userland (mmdebstrap minbase + rauc, dbus, …) as its initramfs; the slots are raw
# virtio disks with cache=none (the host's page cache is bypassed, as the loop devices'
# direct I/O does on the host); the bundles, image and binaries are on another virtio disk.
# Inside, for each bundle: dd of the raw image, SHA-256 of the bundle + dd (the floor),
# `rauc install` through `rauc service` on a private D-Bus daemon, flipslot install with
# and without read-back; medians of RUNS, every side's peak RSS, cmp of slot B after every
# install. The guest prints the tables and powers off.
#
#   tests/bench/install-vs-rauc-guest.sh        (needs root, qemu-system-x86, mmdebstrap)
#   SIZE=128M RUNS=1 tests/bench/install-vs-rauc-guest.sh
#   SMP=2 MEM=2048 GUEST_TIMEOUT=3600 COLD=1 tests/bench/install-vs-rauc-guest.sh
#
# QEMU runs under TCG (KVM is not used: it does not work on every machine this runs on).
# TCG slows CPU work (hashing, decompression, memory copies) far more than I/O, so in the
# guest every side looks more CPU-bound than on hardware: the figures are indicative, and
# the ratios lean towards whichever side hashes less per byte. The kernel and the userland
# tarball are cached in BENCH_CACHE (default /var/tmp/flipslot-bench-cache).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
source "$here/rauc-lib.sh"
size=${SIZE:-256M}
runs=${RUNS:-3}
cold=${COLD:-0}
bytes=$(numfmt --from=iec "$size")
guest_pkgs=rauc,dbus,openssl,kmod,time,bc,e2fsprogs,grub-common,mount,util-linux
guest_modules=(virtio_pci virtio_blk ext4 loop squashfs dm-mod dm-verity)

step() { echo "install-vs-rauc-guest: $*" >&2; }

# ---- inside the guest (run by /init as: install-vs-rauc-guest.sh guest) ----
in_guest() {
  # shellcheck disable=SC1091
  source /data/params
  work=/run/bench
  mkdir -p "$work"
  la=/dev/vdb
  lb=/dev/vdc
  conf="$work/system.conf"
  rauc_write_conf "$conf" /data/ca.pem "$la" "$lb"
  fs=(/data/bin/flipslot --config "$conf" --cmdline-file "$work/cmdline-rauc")
  rauc_dbus_start
  declare -gA t=() rss=()
  local cache=warm c
  [[ $cold == 1 ]] && cache="dropped before each run (in the guest)"
  echo "guest: kernel $(uname -r), $(nproc) CPUs, $(($(awk '/MemTotal/ {print $2}' \
    /proc/meminfo) / 1024)) MiB; page cache: $cache; median of $runs"
  for c in plain verity; do
    echo "guest: $c bundle"
    rauc_bench_case "$c" "/data/$c.raucb" /data/random.img 1
    rauc_report "$c" "$c bundle of a $size random image, $(stat -c %s "/data/$c.raucb") bytes" \
      "$bytes" dd floor rauc rb raw
    echo "  RAUC service: RssAnon after the install $((rauc_anon / 1024)) MiB;" \
      "rauc install (the D-Bus client): peak RSS $((rauc_client_rss / 1024)) MiB"
    echo "  phases (the last RAUC run; one more flipslot run each):"
    rauc_phases
    flipslot_phases "/data/$c.raucb" /data/random.img
    flipslot_phases "/data/$c.raucb" /data/random.img --no-read-back
  done
  stop_rauc
  stop_dbus
}

if [[ ${1:-} == guest ]]; then
  in_guest
  exit 0
fi

# ---- on the host ----
bench_setup
rauc_need qemu-system-x86_64 mmdebstrap rauc mksquashfs openssl cpio depmod modprobe \
  apt-get apt-cache dpkg mke2fs timeout
cache_dir=$(rauc_cache_dir)

# Debian's kernel, unpacked; the versioned package is resolved now (its ABI number changes
# with point releases).
kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[[ -n $kpkg ]] || { step "no versioned kernel package behind linux-image-amd64"; exit 1; }
if ! ls "$cache_dir/${kpkg}"_*.deb >/dev/null 2>&1; then
  step "apt-get download $kpkg"
  (cd "$cache_dir" && apt-get download "$kpkg")
fi
mkdir -p "$work/kernel"
dpkg -x "$(ls "$cache_dir/${kpkg}"_*.deb | head -n 1)" "$work/kernel"
kver=$(ls "$work/kernel/lib/modules")
depmod -b "$work/kernel" "$kver"

# The userland: the cached tarball, the modules the guest needs (with their dependencies,
# same paths, then depmod), and /init. It becomes the initramfs, uncompressed.
step "guest userland (minbase + $guest_pkgs)"
root="$work/root"
mkdir -p "$root"
tar -C "$root" -xf "$(debian_tar guest "$guest_pkgs")"
for m in "${guest_modules[@]}"; do
  modprobe -d "$work/kernel" -S "$kver" --show-depends "$m" |
    awk '$1 == "insmod" {print $2}'
done | sort -u | while read -r ko; do
  rel=${ko#"$work/kernel/"}
  mkdir -p "$root/$(dirname "$rel")"
  cp "$ko" "$root/$rel"
done
cp "$work/kernel/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} \
  "$root/lib/modules/$kver/"
depmod -b "$root" "$kver"
cat > "$root/init" <<INIT
#!/bin/bash
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
fail() { echo "guest: FAILED: \$*"; echo o > /proc/sysrq-trigger; sleep 10; exit 1; }
for m in ${guest_modules[*]}; do
  modprobe \$m || fail "modprobe \$m"
done
echo "guest: modules loaded: \$(cut -d' ' -f1 /proc/modules | sort | tr '\n' ' ')"
[[ -e /dev/mapper/control ]] || fail "no /dev/mapper/control after loading dm-mod"
mkdir -p /data
mount -o ro /dev/vda /data || fail "mount /dev/vda (the data disk)"
rc=0
# stderr to a file: on the console flipslot would draw its progress bar (slow under TCG)
bash /data/bench/install-vs-rauc-guest.sh guest 2>/run/stderr.log || rc=\$?
if [[ \$rc == 0 ]]; then
  echo "guest: done"
else
  echo "guest: FAILED: the benchmark (exit \$rc); the end of its stderr:"
  tail -n 40 /run/stderr.log
fi
sync
echo o > /proc/sysrq-trigger
sleep 10
INIT
chmod +x "$root/init"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) > "$work/initrd.cpio"
rm -rf "$root"

# The data disk: bundles, image, CA, flipslot, these scripts and the parameters.
step "image and bundles ($size)"
sh "$repo/tests/rauc/make-pki.sh" "$work/pki"
data="$work/data-tree"
mkdir -p "$data/bench" "$data/bin"
head -c "$bytes" /dev/urandom > "$data/random.img"
rauc_make_bundle plain "$data/random.img" "$data/plain.raucb"
rauc_make_bundle verity "$data/random.img" "$data/verity.raucb"
cp "$work/pki/ca.pem" "$data/"
cp "$bin/flipslot" "$data/bin/"
cp "$here/lib.sh" "$here/rauc-lib.sh" "$here/install-vs-rauc-guest.sh" "$data/bench/"
printf 'size=%q\nruns=%q\ncold=%q\nbytes=%q\n' "$size" "$runs" "$cold" "$bytes" \
  > "$data/params"
data_kib=$(du -sk "$data" | cut -f1)
truncate -s "$((data_kib * 11 / 10 + 65536))k" "$work/data.img"
mke2fs -q -t ext4 -d "$data" "$work/data.img"
rm -rf "$data"
for s in a b; do fallocate -l "$bytes" "$work/slot-$s.img"; done

# One QEMU run, TCG, with a hard timeout; the guest's console is copied to stdout.
mem=${MEM:-$((768 + 4 * bytes / 1048576))}
smp=${SMP:-2}
timeout_s=${GUEST_TIMEOUT:-3600}
drives=()
for f in data.img slot-a.img slot-b.img; do
  drives+=(-drive "file=$work/$f,format=raw,if=virtio,cache=none")
done
step "QEMU (TCG, -smp $smp, -m $mem, timeout ${timeout_s}s); slots: raw virtio disks, cache=none"
s=$(now)
rc=0
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -smp "$smp" \
  -m "$mem" -display none -monitor none -serial stdio -no-reboot \
  -kernel "$work/kernel/boot/vmlinuz-$kver" -initrd "$work/initrd.cpio" \
  -append "console=ttyS0 panic=-1 rdinit=/init loglevel=3" "${drives[@]}" </dev/null \
  | tee "$work/console.log" | grep --line-buffered -v '^\[' || rc=$?
e=$(now)
step "QEMU ran $(echo "$e - $s" | bc) s"
if ! grep -q '^guest: done' "$work/console.log"; then
  step "the guest did not finish (QEMU/timeout status $rc); the end of its console:"
  tail -n 40 "$work/console.log" >&2
  exit 1
fi
