//! The marker lines the guest's report and failure scripts print on the serial console
//! (`scripts/systemd-report.sh`, `scripts/systemd-fail.sh`), parsed into [`BootReport`]s.

/// One boot as the report service saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BootReport {
    /// `slot=` of `FLIPSLOT-SYSTEMD-BOOTED`.
    pub slot: String,
    /// `version=`.
    pub version: String,
    /// `boot=`.
    pub boot: u32,
    /// Whether `FLIPSLOT-BOOT-COMPLETE` followed.
    pub boot_complete: bool,
    /// `systemctl is-active flipslot-health.service`.
    pub health_active: String,
    /// `Result` of flipslot-health.service.
    pub health_result: String,
    /// `ExecMainStatus` of flipslot-health.service.
    pub health_status: String,
    /// Seconds since the kernel started when the report ran.
    pub uptime: Option<f64>,
    /// Seconds since the kernel started when systemd (PID 1 of the root) started.
    pub userspace_at: Option<f64>,
    /// … when `multi-user.target` was reached.
    pub multi_user_at: Option<f64>,
    /// … when flipslot-health.service became active.
    pub health_at: Option<f64>,
    /// … when `boot-complete.target` was reached.
    pub boot_complete_at: Option<f64>,
    /// Units in the failed state.
    pub failed_units: Vec<String>,
    /// `flipslot status --json`, when it parsed.
    pub status: Option<serde_json::Value>,
    /// The exit status of `flipslot status`.
    pub status_rc: Option<i32>,
    /// The exit status of `flipslot install`, when an update was installed.
    pub install_rc: Option<i32>,
    /// `FLIPSLOT-RIG-ACTION`.
    pub action: Option<String>,
}

/// Every boot's report in a serial log, in order.
pub fn reports(serial: &str) -> Vec<BootReport> {
    let mut out: Vec<BootReport> = Vec::new();
    let mut json: Option<String> = None;
    for raw in serial.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some(buf) = json.as_mut() {
            if let Some(rest) = after(line, "FLIPSLOT-STATUS-END rc=") {
                let text = json.take().unwrap_or_default();
                if let Some(r) = out.last_mut() {
                    r.status = serde_json::from_str(&text).ok();
                    r.status_rc = rest.trim().parse().ok();
                }
            } else {
                buf.push_str(line);
                buf.push('\n');
            }
            continue;
        }
        if let Some(rest) = after(line, "FLIPSLOT-SYSTEMD-BOOTED ") {
            let w = words(rest);
            out.push(BootReport {
                slot: w.get("slot").cloned().unwrap_or_default(),
                version: w.get("version").cloned().unwrap_or_default(),
                boot: w.get("boot").and_then(|b| b.parse().ok()).unwrap_or(0),
                ..BootReport::default()
            });
            continue;
        }
        let Some(r) = out.last_mut() else { continue };
        if line.contains("FLIPSLOT-BOOT-COMPLETE") {
            r.boot_complete = true;
        } else if let Some(rest) = after(line, "FLIPSLOT-HEALTH ") {
            let w = words(rest);
            r.health_active = w.get("active").cloned().unwrap_or_default();
            r.health_result = w.get("result").cloned().unwrap_or_default();
            r.health_status = w.get("status").cloned().unwrap_or_default();
        } else if let Some(rest) = after(line, "FLIPSLOT-TIMES ") {
            let w = words(rest);
            let us = |k: &str| {
                w.get(k)
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|v| *v > 0)
                    .map(|v| v as f64 / 1e6)
            };
            r.uptime = w.get("uptime").and_then(|v| v.parse().ok());
            r.userspace_at = us("userspace_us");
            r.multi_user_at = us("multi_user_us");
            r.health_at = us("health_us");
            r.boot_complete_at = us("boot_complete_us");
        } else if let Some(rest) = after(line, "FLIPSLOT-FAILED-UNITS") {
            r.failed_units = rest.split_whitespace().map(str::to_string).collect();
        } else if line.contains("FLIPSLOT-STATUS-BEGIN") {
            json = Some(String::new());
        } else if let Some(rest) = after(line, "FLIPSLOT-INSTALL-END rc=") {
            r.install_rc = rest.trim().parse().ok();
        } else if let Some(rest) = after(line, "FLIPSLOT-RIG-ACTION ") {
            r.action = Some(rest.trim().to_string());
        }
    }
    out
}

/// The reasons of `FLIPSLOT-RIG-FAIL:` and `FLIPSLOT-INITRAMFS-FAIL:` lines.
pub fn failures(serial: &str) -> Vec<String> {
    serial
        .lines()
        .filter_map(|line| {
            ["FLIPSLOT-RIG-FAIL:", "FLIPSLOT-INITRAMFS-FAIL:"]
                .iter()
                .find_map(|m| line.find(m).map(|i| line[i..].trim().to_string()))
        })
        .collect()
}

/// Lines of the serial log that mention `needle` (for failure messages and the report).
pub fn lines_with<'a>(serial: &'a str, needle: &str) -> Vec<&'a str> {
    serial
        .lines()
        .filter(|l| l.contains(needle))
        .map(|l| l.trim_end_matches('\r'))
        .collect()
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

fn words(rest: &str) -> std::collections::BTreeMap<String, String> {
    rest.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_reports() {
        let log = "[  OK  ] Reached target multi-user.target\r\n\
            FLIPSLOT-SYSTEMD-BOOTED slot=A version=1.0.0 boot=1\r\n\
            FLIPSLOT-BOOT-COMPLETE\r\n\
            FLIPSLOT-HEALTH active=active result=success status=0\r\n\
            FLIPSLOT-TIMES uptime=31.50 userspace_us=4000000 multi_user_us=20500000 health_us=22000000 boot_complete_us=22100000\r\n\
            FLIPSLOT-FAILED-UNITS systemd-logind.service\r\n\
            FLIPSLOT-STATUS-BEGIN\r\n{\r\n  \"booted\": \"rootfs.0\",\r\n  \"slots\": []\r\n}\r\n\
            FLIPSLOT-STATUS-END rc=0\r\n\
            FLIPSLOT-INSTALL-END rc=0\r\n\
            FLIPSLOT-RIG-ACTION reboot\r\n\
            FLIPSLOT-SYSTEMD-BOOTED slot=B version=2.0.0 boot=2\r\n\
            FLIPSLOT-BOOT-INCOMPLETE state=inactive\r\n\
            FLIPSLOT-TIMES uptime=1 userspace_us=0 multi_user_us=0 health_us=0 boot_complete_us=0\r\n\
            FLIPSLOT-FAILED-UNITS\r\n\
            FLIPSLOT-RIG-FAIL: report\r\n";
        let r = reports(log);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].slot.as_str(), r[0].version.as_str(), r[0].boot),
            ("A", "1.0.0", 1)
        );
        assert!(r[0].boot_complete);
        assert_eq!(r[0].health_result, "success");
        assert_eq!(r[0].boot_complete_at, Some(22.1));
        assert_eq!(r[0].failed_units, ["systemd-logind.service"]);
        assert_eq!(r[0].status.as_ref().unwrap()["booted"], "rootfs.0");
        assert_eq!(r[0].status_rc, Some(0));
        assert_eq!(r[0].install_rc, Some(0));
        assert_eq!(r[0].action.as_deref(), Some("reboot"));
        assert!(!r[1].boot_complete);
        assert_eq!(r[1].boot_complete_at, None);
        assert!(r[1].failed_units.is_empty());
        assert_eq!(failures(log), ["FLIPSLOT-RIG-FAIL: report"]);
    }
}
