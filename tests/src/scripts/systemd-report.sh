#!/bin/sh
# flipslot rig, systemd guest: /usr/libexec/flipslot-rig/report, run by
# flipslot-rig-report.service (ordered after boot-complete.target and flipslot-health.service,
# wanted, not required, so that it also runs when the boot assessment failed). Its output goes
# straight to /dev/console (the serial log). It prints, for the test to parse:
#   FLIPSLOT-SYSTEMD-BOOTED slot=<bootname> version=<version> boot=<n>
#   FLIPSLOT-BOOT-COMPLETE                      (or FLIPSLOT-BOOT-INCOMPLETE state=<state>)
#   FLIPSLOT-HEALTH active=<is-active> result=<Result> status=<ExecMainStatus>
#   FLIPSLOT-TIMES uptime=<s> userspace_us=<us> multi_user_us=<us> health_us=<us> boot_complete_us=<us>
#   FLIPSLOT-FAILED-UNITS <unit> <unit> ...
#   FLIPSLOT-STATUS-BEGIN / `flipslot status --json` / FLIPSLOT-STATUS-END rc=<n>
# then, when the data partition holds update.fsb, installs it (FLIPSLOT-INSTALL-END rc=<n>)
# and reboots; otherwise powers off. The last line before either is FLIPSLOT-RIG-ACTION <what>.
# When /data/rig/report-fails exists it exits 1 instead, to exercise OnFailure=.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

slot=none
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        flipslot.slot=*) slot=${arg#flipslot.slot=} ;;
    esac
done
version=unknown
[ -f /etc/flipslot-version ] && read -r version < /etc/flipslot-version

boots=0
mkdir -p /data/rig
[ -f /data/rig/boots ] && read -r boots < /data/rig/boots
boots=$((boots + 1))
echo "$boots" > /data/rig/boots
sync

echo "FLIPSLOT-SYSTEMD-BOOTED slot=$slot version=$version boot=$boots"

state=$(systemctl is-active boot-complete.target)
if [ "$state" = active ]; then
    echo "FLIPSLOT-BOOT-COMPLETE"
else
    echo "FLIPSLOT-BOOT-INCOMPLETE state=$state"
fi
echo "FLIPSLOT-HEALTH active=$(systemctl is-active flipslot-health.service)" \
    "result=$(systemctl show -P Result flipslot-health.service)" \
    "status=$(systemctl show -P ExecMainStatus flipslot-health.service)"

read -r uptime _ < /proc/uptime
echo "FLIPSLOT-TIMES uptime=$uptime" \
    "userspace_us=$(systemctl show -P UserspaceTimestampMonotonic)" \
    "multi_user_us=$(systemctl show -P ActiveEnterTimestampMonotonic multi-user.target)" \
    "health_us=$(systemctl show -P ActiveEnterTimestampMonotonic flipslot-health.service)" \
    "boot_complete_us=$(systemctl show -P ActiveEnterTimestampMonotonic boot-complete.target)"

echo "FLIPSLOT-FAILED-UNITS" $(systemctl list-units --failed --plain --no-legend --no-pager | cut -d' ' -f1)

echo "FLIPSLOT-STATUS-BEGIN"
flipslot status --json
echo "FLIPSLOT-STATUS-END rc=$?"

if [ "$state" != active ]; then
    echo "flipslot-rig: the boot did not complete; journal of the assessment:"
    journalctl -b --no-pager -o short-monotonic -u flipslot-health.service | tail -n 40
fi

action=poweroff
if [ -f /data/update.fsb ]; then
    # Renamed first: a crash during the install must not make every later boot install again.
    mv /data/update.fsb /data/update.fsb.installing
    sync
    echo "FLIPSLOT-INSTALL-BEGIN"
    flipslot install /data/update.fsb.installing
    rc=$?
    echo "FLIPSLOT-INSTALL-END rc=$rc"
    rm -f /data/update.fsb.installing
    sync
    [ "$rc" = 0 ] && action=reboot
fi
if [ -f /data/rig/report-fails ]; then
    # The rig's own safety net under test: OnFailure= must report and power off.
    echo "flipslot-rig: failing the report as /data/rig/report-fails asks"
    exit 1
fi
echo "FLIPSLOT-RIG-ACTION $action"
exec systemctl "$action"
