#!/usr/bin/env bash
# Benchmark: flipslot against RAUC 1.8 installing the same RAUC bundles (made by the real
# `rauc bundle`) into a loop-device slot, driven by the same RAUC system.conf. Baselines of
# the same run: dd of the raw image, and the floor of a verifying install (SHA-256 of the
# bundle by `openssl dgst`, then dd of the image). Prints medians of RUNS (default 3), the ratios to each
# baseline, every side's peak RSS, and checks after every install that the slot holds the
# image. The cases (CASES, default all three):
#
#   plain   SIZE bytes of /dev/urandom (incompressible), plain bundle
#   verity  the same image in a verity bundle. RAUC 1.8 installs it through dm-verity,
#           which a kernel without device-mapper lacks: the script then prints RAUC's
#           error and measures flipslot alone (install-vs-rauc-guest.sh measures both in a
#           QEMU guest with Debian's kernel)
#   rootfs  an ext4 image of a Debian tree (mmdebstrap minbase + ROOTFS_PKGS, cached in
#           BENCH_CACHE), compressible, in two plain bundles: mksquashfs's default (gzip,
#           what `rauc bundle` uses) and `--mksquashfs-args="-comp zstd"`
#
#   tests/bench/install-vs-rauc.sh          (needs root, rauc, dbus-daemon, mmdebstrap)
#   SIZE=4G RUNS=5 CASES="plain verity" tests/bench/install-vs-rauc.sh
#   COLD=1 tests/bench/install-vs-rauc.sh   (drop the page cache before each timed run)
#
# By default every side reads its input from the page cache (one untimed pass of each
# first), as in install-vs-dd.sh; with COLD=1 each timed run starts after
# `sync; echo 3 > /proc/sys/vm/drop_caches`. RAUC runs as `rauc service` on a private
# D-Bus daemon (nothing reaches the host's system bus), restarted for every install so
# its VmHWM is that install's; `rauc install` is timed until it returns.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/rauc-lib.sh"
size=${SIZE:-1G}
runs=${RUNS:-3}
cold=${COLD:-0}
cases=${CASES:-plain verity rootfs}
rootfs_pkgs=${ROOTFS_PKGS:-systemd,systemd-sysv,udev,dbus,rauc,openssh-server,iproute2,curl,ca-certificates,less,vim-tiny,python3,perl,git}
bytes=$(numfmt --from=iec "$size")
bench_setup
rauc_need rauc dbus-daemon dbus-send grub-editenv mksquashfs openssl mmdebstrap \
  mke2fs
has() { [[ " $cases " == *" $1 "* ]]; }

# The images: urandom (incompressible, so mksquashfs stores it uncompressed and neither
# side decompresses) and, for the rootfs case, the ext4 image of a Debian tree.
sh "$repo/tests/rauc/make-pki.sh" "$work/pki"
head -c "$bytes" /dev/urandom > "$work/random.img"
slot_bytes=$bytes
if has rootfs; then
  ext4_of_tar "$(debian_tar rootfs "$rootfs_pkgs")" "$work/rootfs.img"
  rootfs_bytes=$(stat -c %s "$work/rootfs.img")
  ((rootfs_bytes > slot_bytes)) && slot_bytes=$rootfs_bytes
fi
has plain && rauc_make_bundle plain "$work/random.img" "$work/plain.raucb"
has verity && rauc_make_bundle verity "$work/random.img" "$work/verity.raucb"
if has rootfs; then
  rauc_make_bundle plain "$work/rootfs.img" "$work/rootfs-gzip.raucb"
  rauc_make_bundle plain "$work/rootfs.img" "$work/rootfs-zstd.raucb" "-comp zstd"
fi

make_slots "$slot_bytes"
conf="$work/system.conf"
rauc_write_conf "$conf" "$work/pki/ca.pem" "$la" "$lb"
fs=("$bin/flipslot" --config "$conf" --cmdline-file "$work/cmdline-rauc")
rauc_dbus_start
cleanup_hooks+=(stop_rauc unmount_bundle stop_dbus)

declare -A t=() rss=()
cache=warm
[[ $cold == 1 ]] && cache="dropped before each run"
echo "page cache: $cache; median of $runs; $(nproc) CPUs; kernel $(uname -r)"

if has plain; then
  rauc_bench_case plain "$work/plain.raucb" "$work/random.img" 1
  title="plain bundle of a $size random image, $(stat -c %s "$work/plain.raucb") bytes"
  rauc_report plain "$title" "$bytes" dd floor rauc rb raw
  echo "  RAUC service: RssAnon after the install $((rauc_anon / 1024)) MiB (its VmHWM" \
    "counts the mmapped bundle); rauc install (the D-Bus client): peak RSS" \
    "$((rauc_client_rss / 1024)) MiB"
  echo "  phases (the last RAUC run; one more flipslot run each):"
  rauc_phases
  flipslot_phases "$work/plain.raucb" "$work/random.img"
  flipslot_phases "$work/plain.raucb" "$work/random.img" --no-read-back
fi

if has verity; then
  # RAUC first, once: where the kernel has no device-mapper it cannot mount the bundle.
  verity_rauc=1
  if ! rauc_install_once "$work/verity.raucb"; then
    verity_rauc=0
    echo "verity: RAUC 1.8 cannot install the verity bundle on this host" \
      "(/dev/mapper/control $( [[ -e /dev/mapper/control ]] && echo present || echo absent))."
    echo "  rauc install said:"
    sed 's/^/    /' "$work/rauc-install.log"
    echo "  the RAUC service logged:"
    grep -iE 'error|fail|verity|dm|mapper' "$work/rauc-service.log" | sed 's/^/    /' || true
  fi
  rauc_bench_case verity "$work/verity.raucb" "$work/random.img" "$verity_rauc"
  title="verity bundle of a $size random image, $(stat -c %s "$work/verity.raucb") bytes"
  title+=" (the floor hashes the whole bundle: data and hash tree)"
  rauc_report verity "$title" "$bytes" dd floor rauc rb raw
  echo "  phases (one more flipslot run each):"
  if [[ $verity_rauc == 1 ]]; then rauc_phases; fi
  flipslot_phases "$work/verity.raucb" "$work/random.img"
  flipslot_phases "$work/verity.raucb" "$work/random.img" --no-read-back
fi

if has rootfs; then
  echo "rootfs: ext4 image of Debian $rauc_suite minbase + $rootfs_pkgs:" \
    "$((rootfs_bytes / 1048576)) MiB, $(gzip -1 -c "$work/rootfs.img" | wc -c |
      numfmt --to=iec) with gzip -1"
  for comp in gzip zstd; do
    how="rauc bundle's default"
    [[ $comp == zstd ]] && how='--mksquashfs-args="-comp zstd"'
    rauc_bench_case "rootfs-$comp" "$work/rootfs-$comp.raucb" "$work/rootfs.img" 1
    title="plain bundle of the rootfs image, squashfs $comp ($how),"
    title+=" $(stat -c %s "$work/rootfs-$comp.raucb") bytes"
    rauc_report "rootfs-$comp" "$title" "$rootfs_bytes" dd floor rauc rb raw
    echo "  phases (the last RAUC run; one more flipslot run each):"
    rauc_phases
    flipslot_phases "$work/rootfs-$comp.raucb" "$work/rootfs.img"
    flipslot_phases "$work/rootfs-$comp.raucb" "$work/rootfs.img" --no-read-back
  done
fi
