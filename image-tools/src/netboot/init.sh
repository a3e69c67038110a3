#!/bin/sh
# flipslot netboot: /init of the provisioning initramfs (busybox sh, PID 1).
#
# Reads flipslot.provision=, flipslot.bundle= (required), flipslot.disk=, flipslot.wipe=1,
# flipslot.report= and flipslot.noreboot=1 from the kernel command line; mounts /proc, /sys,
# /dev (devtmpfs), /tmp and /run; loads the modules listed in /etc/netboot-modules (in
# order, with insmod); waits for a network interface and asks for a DHCP lease on each in
# turn (the udhcpc script applies it); then runs
#   flipslot provision --description URL --bundle URL --keyring /etc/flipslot/provision-keys
#       [--disk DEV] [--wipe] [--report-url URL]
# and prints "FLIPSLOT-NETBOOT: starting provision" before and "FLIPSLOT-NETBOOT: provision
# rc=<rc>" after it. Success: sync, then reboot -f (poweroff -f with flipslot.noreboot=1).
# Any failure prints "FLIPSLOT-NETBOOT-FAIL: <reason>" and powers off after 10 s, so a
# machine that cannot be provisioned does not boot from the network again and again.
#
# Values are passed to the agent as single arguments, never evaluated. Run by anything other
# than PID 1 (a test), the script reads the command line from $FLIPSLOT_NETBOOT_CMDLINE and
# prints the agent's arguments, one per line, instead of running anything.

PATH=/usr/bin:/usr/sbin:/bin:/sbin
export PATH

AGENT=/usr/bin/flipslot
KEYRING=/etc/flipslot/provision-keys
MODULE_LIST=/etc/netboot-modules
UDHCPC_SCRIPT=/usr/share/flipslot/udhcpc.script

provision_url=
bundle_url=
disk=
wipe=
report_url=
noreboot=

say() {
    echo "flipslot-netboot: $*"
}

# PID 1 must never exit: the kernel would panic, and panic=-1 would reboot into the network
# boot again.
stop() {
    while :; do sleep 60; done
}

fail() {
    echo "FLIPSLOT-NETBOOT-FAIL: $*"
    say "powering off in 10 s"
    sleep 10
    poweroff -f
    stop
}

# Sets the variables above from the words of $1. Globbing is off: a URL may hold * or ?.
parse_cmdline() {
    set -f
    for arg in $1; do
        case $arg in
            flipslot.provision=*) provision_url=${arg#*=} ;;
            flipslot.bundle=*) bundle_url=${arg#*=} ;;
            flipslot.disk=*) disk=${arg#*=} ;;
            flipslot.wipe=*) wipe=${arg#*=} ;;
            flipslot.report=*) report_url=${arg#*=} ;;
            flipslot.noreboot=*) noreboot=${arg#*=} ;;
        esac
    done
    set +f
}

# Prints what is missing from the command line, and fails, when a required value is.
check_params() {
    [ -n "$provision_url" ] || { echo "no flipslot.provision= on the kernel command line"; return 1; }
    [ -n "$bundle_url" ] || { echo "no flipslot.bundle= on the kernel command line"; return 1; }
    return 0
}

# Runs the agent with the values read from the command line.
run_agent() {
    set -- provision --description "$provision_url" --bundle "$bundle_url" --keyring "$KEYRING"
    [ -z "$disk" ] || set -- "$@" --disk "$disk"
    [ "$wipe" != 1 ] || set -- "$@" --wipe
    [ -z "$report_url" ] || set -- "$@" --report-url "$report_url"
    agent "$@"
}

load_modules() {
    [ -f "$MODULE_LIST" ] || return 0
    while read -r module; do
        [ -n "$module" ] || continue
        # A module can fail where its work is done elsewhere (a CPU-specific crc driver);
        # a missing network or disk driver shows up later with a clear message.
        insmod "$module" || say "insmod $module failed, continuing"
    done < "$MODULE_LIST"
}

# Prints the network interfaces of devices (not lo, not tunnels or other virtual ones).
list_nics() {
    for dir in /sys/class/net/*; do
        [ -e "$dir/device" ] && echo "${dir##*/}"
    done
}

# Waits up to 20 s for a network interface, then 1 s more for its siblings.
wait_for_nics() {
    tries=0
    while [ -z "$(list_nics)" ]; do
        tries=$((tries + 1))
        [ "$tries" -lt 200 ] || return 1
        usleep 100000
    done
    sleep 1
}

# Asks for a lease on each interface in turn until one answers.
bring_up_network() {
    ip link set lo up
    for nic in $(list_nics); do
        ip link set "$nic" up || continue
        say "asking for a DHCP lease on $nic"
        if udhcpc -i "$nic" -s "$UDHCPC_SCRIPT" -q -n -t 10; then
            return 0
        fi
        say "no DHCP lease on $nic"
    done
    return 1
}

main() {
    mount -t proc proc /proc || fail "cannot mount /proc"
    mount -t sysfs sysfs /sys || fail "cannot mount /sys"
    mount -t devtmpfs devtmpfs /dev || fail "cannot mount /dev"
    mkdir -p /tmp /run
    mount -t tmpfs -o mode=1777 tmpfs /tmp || fail "cannot mount /tmp"
    mount -t tmpfs -o mode=0755 tmpfs /run || fail "cannot mount /run"

    read -r cmdline < /proc/cmdline
    parse_cmdline "$cmdline"
    reason=$(check_params) || fail "$reason"

    load_modules
    wait_for_nics || fail "no network interface after 20 s (is its driver in /etc/netboot-modules?)"
    bring_up_network || fail "no DHCP lease on any network interface: $(list_nics | tr '\n' ' ')"

    echo "FLIPSLOT-NETBOOT: starting provision"
    run_agent
    rc=$?
    echo "FLIPSLOT-NETBOOT: provision rc=$rc"
    if [ "$rc" != 0 ]; then
        fail "flipslot provision failed with exit status $rc (its error is above)"
    fi
    sync
    if [ "$noreboot" = 1 ]; then
        say "provisioned; powering off (flipslot.noreboot=1)"
        poweroff -f
    else
        say "provisioned; rebooting"
        reboot -f
    fi
    stop
}

if [ "$$" = 1 ]; then
    agent() {
        "$AGENT" "$@"
    }
    main
    stop
fi

# Not PID 1: the test mode described at the top.
if [ -z "${FLIPSLOT_NETBOOT_CMDLINE+set}" ]; then
    echo "flipslot-netboot: this is the /init of a provisioning initramfs; it runs as PID 1" >&2
    exit 2
fi
agent() {
    printf '%s\n' "$@"
}
parse_cmdline "$FLIPSLOT_NETBOOT_CMDLINE"
check_params || exit 1
run_agent
