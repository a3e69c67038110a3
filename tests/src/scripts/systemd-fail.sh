#!/bin/sh
# flipslot rig, systemd guest: /usr/libexec/flipslot-rig/fail REASON, run by
# flipslot-rig-fail@.service when the report service failed (OnFailure=) or the boot deadline
# timer fired. Prints "FLIPSLOT-RIG-FAIL: REASON" and what systemd was doing to /dev/console,
# then powers off at once (--force: no orderly shutdown of a boot that is stuck anyway), so a
# broken boot ends in seconds instead of at the rig's hard timeout.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

echo "FLIPSLOT-RIG-FAIL: $*"
echo "flipslot-rig: failed units:"
systemctl list-units --failed --plain --no-legend --no-pager
echo "flipslot-rig: pending jobs:"
systemctl list-jobs --no-legend --no-pager | head -n 30
echo "flipslot-rig: journal tail:"
journalctl -b --no-pager -o short-monotonic | tail -n 60
sync
echo "flipslot-rig: powering off after the failure"
exec systemctl poweroff --force
