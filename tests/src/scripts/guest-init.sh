#!/bin/sh
# flipslot rig: /sbin/init of the guest root filesystem (busybox sh, runs inside the guest).
#
# Mounts the kernel filesystems, makes the /dev/disk/by-partlabel links udev would make, mounts
# the data partition (ext4, PARTLABEL data) on /data and the ESP (vfat) on /boot/efi, prints
#   FLIPSLOT-BOOTED slot=<bootname> version=<contents of /etc/flipslot-version>
# and then runs what the data partition says (scenarios are data, written by the test):
#   /data/early.sh      run before the FLIPSLOT-BOOTED line (e.g. to play a broken system)
#   /data/health.env    if present: `flipslot health` runs after it (the file is sourced
#                       first), then "FLIPSLOT-HEALTH-END rc=<exit status>" is printed
#   /data/scenario.sh   run after it, then "FLIPSLOT-SCENARIO-END rc=<exit status>" is printed
# Both run with FLIPSLOT_SLOT, FLIPSLOT_VERSION and FLIPSLOT_BOOT (boots so far, counted in
# /data/rig/boots) in the environment. A script chooses what happens afterwards by writing
# "reboot" or "poweroff" (the default) to /run/rig-action; filesystems are synced and unmounted
# first. Failures print "FLIPSLOT-GUEST-FAIL: <reason>" and power off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

is_mounted() { grep -q " $1 " /proc/mounts 2>/dev/null; }

finish() {
    action=poweroff
    [ -f /run/rig-action ] && read -r action < /run/rig-action
    sync
    umount /boot/efi 2>/dev/null
    umount /data 2>/dev/null
    sync
    echo "flipslot-rig: $action"
    if [ "$action" = reboot ]; then reboot -f; else poweroff -f; fi
    while :; do sleep 60; done
}

fail() {
    echo "FLIPSLOT-GUEST-FAIL: $*"
    finish
}

is_mounted /proc || mount -t proc proc /proc || fail "cannot mount /proc"
is_mounted /sys || mount -t sysfs sysfs /sys || fail "cannot mount /sys"
is_mounted /dev || mount -t devtmpfs devtmpfs /dev || fail "cannot mount /dev"
mount -t tmpfs -o mode=0755 tmpfs /run || fail "cannot mount /run"
mount -t tmpfs tmpfs /tmp || fail "cannot mount /tmp"

slot=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        flipslot.slot=*) slot=${arg#flipslot.slot=} ;;
    esac
done
version=unknown
[ -f /etc/flipslot-version ] && read -r version < /etc/flipslot-version

# What udev would do: /dev/disk/by-partlabel/<PARTNAME> -> ../../<DEVNAME>
mkdir -p /dev/disk/by-partlabel
for uevent in /sys/class/block/*/uevent; do
    name=$(sed -n 's/^PARTNAME=//p' "$uevent")
    devname=$(sed -n 's/^DEVNAME=//p' "$uevent")
    if [ -n "$name" ] && [ -n "$devname" ]; then
        ln -sfn "../../$devname" "/dev/disk/by-partlabel/$name"
    fi
done

if [ -e /dev/disk/by-partlabel/data ]; then
    data_dev=$(readlink -f /dev/disk/by-partlabel/data)
    mount -t ext4 -o rw "$data_dev" /data ||
        fail "cannot mount the data partition $data_dev"
else
    echo "flipslot-rig: no partition labelled data"
fi

# The ESP: the first partition that mounts as vfat.
for uevent in /sys/class/block/*/uevent; do
    grep -q '^DEVTYPE=partition' "$uevent" || continue
    devname=$(sed -n 's/^DEVNAME=//p' "$uevent")
    if mount -t vfat -o rw "/dev/$devname" /boot/efi 2>/dev/null; then
        break
    fi
done
is_mounted /boot/efi || echo "flipslot-rig: no vfat partition for /boot/efi"

boots=0
if is_mounted /data; then
    mkdir -p /data/rig
    [ -f /data/rig/boots ] && read -r boots < /data/rig/boots
    boots=$((boots + 1))
    echo "$boots" > /data/rig/boots
    sync
fi
export FLIPSLOT_SLOT="$slot" FLIPSLOT_VERSION="$version" FLIPSLOT_BOOT="$boots"

if [ -f /data/early.sh ]; then
    echo "flipslot-rig: running /data/early.sh"
    sh /data/early.sh
fi

echo "FLIPSLOT-BOOTED slot=${slot:-none} version=$version"

# Boot assessment, once per boot like flipslot-health.service: only when the data partition
# has /data/health.env (sourced in a subshell first, e.g. to arm a failpoint on one boot).
# A failed trial reboots from inside `flipslot health`, so the END line may never come.
if [ -f /data/health.env ]; then
    echo "flipslot-rig: running flipslot health"
    ( . /data/health.env; flipslot health )
    echo "FLIPSLOT-HEALTH-END rc=$?"
fi

if [ -f /data/scenario.sh ]; then
    echo "flipslot-rig: running /data/scenario.sh"
    ( cd /data && sh /data/scenario.sh )
    rc=$?
    echo "FLIPSLOT-SCENARIO-END rc=$rc"
else
    echo "FLIPSLOT-SCENARIO-END rc=none"
fi
finish
