#!/bin/sh
# flipslot rig: /usr/sbin/rig-net-up of the network guests (busybox sh, runs inside the guest).
#
# Loads the virtio-net modules listed in /usr/lib/rig/net/modules (in order; Debian builds
# virtio_net, failover and net_failover as modules), waits for the first interface other
# than lo, and runs busybox udhcpc once with /usr/share/rig/udhcpc.script, which applies the
# lease and prints "FLIPSLOT-NET lease iface=<if> ip=<ip>/<bits> router=<gw>". Only the
# lease's subnet is routed (no default route): under QEMU's user-mode network the guest
# reaches 10.0.2.2 (the host's 127.0.0.1) and nothing beyond. Prints "FLIPSLOT-NET-FAIL:
# <reason>" and exits 1 on failure.
dir=/usr/lib/rig/net

fail() {
    echo "FLIPSLOT-NET-FAIL: $*"
    exit 1
}

while read -r ko; do
    [ -n "$ko" ] || continue
    insmod "$dir/$ko" || echo "rig-net: insmod $ko failed, continuing"
done < "$dir/modules"

iface=
tries=0
while [ -z "$iface" ]; do
    for d in /sys/class/net/*; do
        name=${d##*/}
        if [ "$name" != lo ] && [ -e "$d" ]; then
            iface=$name
            break
        fi
    done
    [ -n "$iface" ] && break
    tries=$((tries + 1))
    [ "$tries" -lt 50 ] || fail "no network interface after 5 s"
    usleep 100000
done

ip link set lo up
ip link set "$iface" up || fail "cannot bring $iface up"
udhcpc -i "$iface" -s /usr/share/rig/udhcpc.script -f -q -n -t 5 -T 2 ||
    fail "no DHCP lease on $iface"
ip addr show dev "$iface" | grep -q 'inet ' || fail "the lease was not applied to $iface"
exit 0
