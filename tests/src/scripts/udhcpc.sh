#!/bin/sh
# flipslot rig: the busybox udhcpc script of the network guests (runs inside the guest).
# udhcpc calls it with deconfig, bound, renew, leasefail or nak and the lease in the
# environment ($interface, $ip, $mask, $subnet, $router, $dns). It applies the address and
# its subnet route only: no default route, so the guest reaches its QEMU user-mode subnet
# (the gateway 10.0.2.2 is the host's 127.0.0.1) and nothing else.
case "$1" in
    deconfig)
        ip addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound | renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface" || exit 1
        echo "FLIPSLOT-NET lease iface=$interface ip=$ip/${mask:-24} router=${router:-none}"
        ;;
    leasefail | nak)
        echo "rig-udhcpc: $1 ${message:-}"
        ;;
esac
exit 0
