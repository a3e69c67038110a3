#!/bin/sh
# flipslot rig: /init of the test initramfs (busybox sh, runs inside the guest).
# Loads the modules listed in /etc/rig-modules (in order), finds the partition named by
# root=PARTLABEL=<label> through the PARTNAME= lines of /sys/class/block/*/uevent (busybox
# findfs cannot resolve PARTLABEL), mounts it read-only on /newroot and switches to its
# /sbin/init. Any failure prints "FLIPSLOT-INITRAMFS-FAIL: <reason>" and powers off.
export PATH=/bin

fail() {
    echo "FLIPSLOT-INITRAMFS-FAIL: $*"
    poweroff -f
    # poweroff -f does not return; if it did, PID 1 must not exit (that panics the kernel)
    while :; do sleep 60; done
}

mount -t proc proc /proc || fail "cannot mount /proc"
mount -t sysfs sysfs /sys || fail "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "cannot mount /dev"

while read -r module; do
    [ -n "$module" ] || continue
    # A module can fail where its work is done elsewhere (crc32c-intel without SSE4.2);
    # a missing driver shows up below as a missing or unmountable partition.
    insmod "/$module" || echo "flipslot-initramfs: insmod $module failed, continuing"
done < /etc/rig-modules

read -r cmdline < /proc/cmdline
label=
slot=
for arg in $cmdline; do
    case "$arg" in
        root=PARTLABEL=*) label=${arg#root=PARTLABEL=} ;;
        flipslot.slot=*) slot=${arg#flipslot.slot=} ;;
    esac
done
[ -n "$label" ] || fail "no root=PARTLABEL= on the kernel command line: $cmdline"
echo "flipslot-initramfs: slot=${slot:-?} root=PARTLABEL=$label"

find_partition() {
    for uevent in /sys/class/block/*/uevent; do
        if grep -qxF "PARTNAME=$1" "$uevent"; then
            sed -n 's/^DEVNAME=//p' "$uevent"
            return 0
        fi
    done
    return 1
}

tries=0
until devname=$(find_partition "$label"); do
    tries=$((tries + 1))
    [ "$tries" -lt 50 ] || fail "no partition labelled $label after 10 s"
    usleep 200000
done
device=/dev/$devname

mkdir -p /newroot
mount -t squashfs -o ro "$device" /newroot 2>/dev/null ||
    mount -t ext4 -o ro "$device" /newroot 2>/dev/null ||
    fail "cannot mount $device (PARTLABEL=$label) as squashfs or ext4"
# An absolute symlink (Debian: /sbin/init -> /lib/systemd/systemd) points into the new
# root, not into the initramfs, so a link is accepted as it is.
[ -x /newroot/sbin/init ] || [ -L /newroot/sbin/init ] ||
    fail "no /sbin/init in $device (PARTLABEL=$label)"

mount --move /dev /newroot/dev 2>/dev/null || umount /dev
umount /proc
umount /sys
exec switch_root /newroot /sbin/init
fail "switch_root to $device failed"
