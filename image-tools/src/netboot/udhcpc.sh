#!/bin/sh
# flipslot netboot: the busybox udhcpc script of the provisioning initramfs
# (/usr/share/flipslot/udhcpc.script).
#
# udhcpc calls it with deconfig, bound, renew, leasefail or nak and the lease in the
# environment: $interface, $ip, $mask (prefix length), $subnet, $router, $dns, $domain.
# On bound and renew it applies the address with its subnet, a default route through the
# first router that takes it, and /etc/resolv.conf from the DNS servers, then prints
# "flipslot-netboot: lease iface=<if> ip=<ip>/<bits> router=<gw>".
case "$1" in
    deconfig)
        ip addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound | renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface" || exit 1
        if [ -n "$router" ]; then
            while ip route del default dev "$interface" 2>/dev/null; do :; done
            for gw in $router; do
                ip route add default via "$gw" dev "$interface" && break
            done
        fi
        : > /etc/resolv.conf
        [ -z "$domain" ] || echo "search $domain" >> /etc/resolv.conf
        for server in $dns; do
            echo "nameserver $server" >> /etc/resolv.conf
        done
        echo "flipslot-netboot: lease iface=$interface ip=$ip/${mask:-24} router=${router:-none}"
        ;;
    leasefail | nak)
        echo "flipslot-netboot: udhcpc $1 on $interface ${message:-}"
        ;;
esac
exit 0
