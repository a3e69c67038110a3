//! How operations speak, for the CLI and the daemon alike: the text and JSON of every
//! operation's result (pure formatting; `rauc` has RAUC's shapes), and install progress
//! shown through the CLI's [`Reporter`] (a terminal bar, or JSON lines for `--json` and
//! the daemon's socket). The only module below the CLI and the daemon that uses the
//! output helpers.

pub mod rauc;

use crate::install::plan::AlreadyInstalled;
use crate::install::InstallOutcome;
use crate::install::Progress;
use crate::ops::{HealthAction, HealthOutcome, MarkOutcome, RollbackOutcome, StatusReport};
use crate::slot::status::InstallResult;
use flipslot_cli_support::progress::Reporter;
use flipslot_format::timefmt::rfc3339;
use std::time::Duration;

impl Progress for Reporter {
    fn started(&mut self, bundle: &str, version: &str, targets: &[String]) {
        self.event(
            "start",
            serde_json::json!({ "bundle": bundle, "version": version, "targets": targets }),
        );
    }

    fn update(&mut self, phase: &str, done: u64, total: u64) {
        Reporter::update(self, phase, done, total);
    }

    fn finished(&mut self) {
        self.finish();
    }
}

impl crate::provision::Events for Reporter {
    fn step(&mut self, step: &str, detail: &str) {
        if self.is_json() {
            self.event(
                "step",
                serde_json::json!({ "step": step, "detail": detail }),
            );
        } else {
            // A bar of the previous phase is cleared first, so the line stands alone.
            self.finish();
            eprintln!("flipslot provision: {step}: {detail}");
        }
    }

    fn bytes(&mut self, phase: &str, done: u64, total: u64) {
        Reporter::update(self, phase, done, total);
    }
}

/// The last line of `flipslot provision` (text mode).
pub fn provision_summary(o: &crate::provision::Outcome, took: Duration) -> String {
    if o.nothing_to_do {
        return format!(
            "flipslot provision: nothing to do on {}: it is already provisioned with {} {}",
            o.disk, o.compatible, o.version
        );
    }
    let mut s = String::new();
    for p in &o.partitions {
        let what = match (&p.slot, &p.bootname) {
            (Some(slot), Some(boot)) if p.written => {
                format!("slot {slot} (bootname {boot}), written")
            }
            (Some(slot), Some(boot)) => format!("slot {slot} (bootname {boot}), empty"),
            _ => p.role.clone(),
        };
        s.push_str(&format!(
            "  {} {:<12} {:>14} bytes at {:>12}  {what}\n",
            p.number, p.label, p.size, p.offset
        ));
    }
    format!(
        "{s}flipslot provision: done {} ({} {}{}) in {:.1} s",
        o.disk,
        o.compatible,
        o.version,
        if o.wiped { ", old data wiped" } else { "" },
        took.as_secs_f64()
    )
}

/// The text of `flipslot status`.
pub fn status_text(r: &StatusReport) -> String {
    let name_of = |n: &Option<String>| match n {
        Some(n) => {
            let bn = r
                .slots
                .iter()
                .find(|s| &s.name == n)
                .map(|s| s.bootname.as_str());
            format!("{n} ({})", bn.unwrap_or("?"))
        }
        None => "none".into(),
    };
    let mut s = format!(
        "compatible: {}\nbootloader: {}\nbooted:     {}\nprimary:    {}\n",
        r.compatible,
        r.bootloader.as_str(),
        name_of(&r.booted),
        name_of(&r.primary)
    );
    for n in &r.config_notices {
        s += &format!("notice:     {n}\n");
    }
    for slot in r.slots.iter().filter(|s| !s.device_exists) {
        s += &format!(
            "warning:    slot {} ({}): device {} does not exist\n",
            slot.name,
            slot.bootname,
            slot.device.display()
        );
    }
    if let Some(rb) = &r.last_rollback {
        s += &format!(
            "rollback:   from {} ({}) to {} ({}) at {}: {}\n",
            rb.from_slot,
            rb.from_version.as_deref().unwrap_or("?"),
            rb.to_slot,
            rb.to_version.as_deref().unwrap_or("?"),
            rfc3339(rb.at),
            rb.reason
        );
    }
    for slot in &r.slots {
        s += &format!(
            "\n{} ({}) {}{}\n  device:      {}\n  boot status: {}\n",
            slot.name,
            slot.bootname,
            slot.state,
            if slot.primary { ", primary" } else { "" },
            slot.device.display(),
            slot.boot_status
        );
        let Some(rec) = &slot.installed else {
            s += "  installed:   nothing recorded\n";
            continue;
        };
        let result = match rec.result {
            InstallResult::Ok => "ok",
            InstallResult::Failed => "failed",
        };
        let when = rec
            .installed_at
            .map(|t| format!(", {}", rfc3339(t)))
            .unwrap_or_default();
        let msg = rec
            .message
            .as_ref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        s += &format!(
            "  installed:   {} ({result}{when}){msg}\n",
            rec.bundle_version.as_deref().unwrap_or("?")
        );
        if let Some(h) = &rec.image_sha256 {
            s += &format!("  sha256:      {h}\n");
        }
    }
    s
}

/// Why an install with `--if-needed` wrote nothing, for people.
pub fn install_skip_message(o: &InstallOutcome, why: AlreadyInstalled) -> String {
    let (where_, after) = match why {
        AlreadyInstalled::Booted => ("the booted slot", ": nothing to do"),
        AlreadyInstalled::Pending => ("slot", ", which boots next: nothing to do but reboot"),
    };
    format!(
        "{} {} is already installed in {where_} {} ({}){after}",
        o.compatible, o.version, o.primary, o.primary_bootname
    )
}

/// The one-line summary after an install.
pub fn install_summary(o: &InstallOutcome, took: Duration) -> String {
    if let Some(why) = o.skipped {
        return install_skip_message(o, why);
    }
    let bytes: u64 = o.images.iter().map(|i| i.size).sum();
    let secs = took.as_secs_f64().max(0.001);
    let slots: Vec<String> = o
        .images
        .iter()
        .map(|i| format!("{} -> {}", i.class, i.slot))
        .collect();
    format!(
        "installed {} {} [{}]: {:.1} MiB in {:.1} s ({:.0} MiB/s{}); {} ({}) will be tried at the next boot",
        o.compatible,
        o.version,
        slots.join(", "),
        bytes as f64 / (1 << 20) as f64,
        secs,
        bytes as f64 / secs / (1 << 20) as f64,
        if o.read_back { ", read back and verified" } else { "" },
        o.primary,
        o.primary_bootname,
    )
}

/// The last line of `install --json` (and of the daemon's socket install): the outcome
/// with `v`, `event: done`, the seconds it took and `skipped` (with `--if-needed`, `true`
/// when nothing was to do; then `skip_reason` and a `message` say why).
pub fn install_done_json(
    o: &InstallOutcome,
    took: Duration,
) -> serde_json::Result<serde_json::Value> {
    let mut v = serde_json::to_value(o)?;
    v["v"] = 1.into();
    v["event"] = "done".into();
    v["seconds"] = took.as_secs_f64().into();
    v["skipped"] = o.skipped.is_some().into();
    if let Some(why) = o.skipped {
        v["message"] = install_skip_message(o, why).into();
    }
    Ok(v)
}

/// The text of `flipslot mark-*`.
pub fn mark_text(o: &MarkOutcome) -> String {
    format!(
        "marked slot {} ({}) {}; primary is now {}\n",
        o.slot,
        o.bootname,
        o.mark,
        o.primary.as_deref().unwrap_or("none")
    )
}

/// The text of `flipslot rollback`; `rebooting` says whether a reboot follows.
pub fn rollback_text(o: &RollbackOutcome, rebooting: bool) -> String {
    format!(
        "slot {} ({}, version {}) will boot next instead of {}{}\n",
        o.to_slot,
        o.to_bootname,
        o.to_version.as_deref().unwrap_or("unknown"),
        o.from_slot,
        if rebooting {
            "; rebooting"
        } else {
            "; reboot to switch"
        }
    )
}

/// The text of `flipslot health`.
pub fn health_text(o: &HealthOutcome) -> String {
    let mut s = String::new();
    for rb in &o.rollbacks {
        s += &format!(
            "rollback: slot {} ({}) failed its trial, running {} ({}): {}\n",
            rb.from_slot,
            rb.from_version.as_deref().unwrap_or("?"),
            rb.to_slot,
            rb.to_version.as_deref().unwrap_or("?"),
            rb.reason
        );
    }
    if let Some(v) = &o.verdict {
        for r in &v.results {
            s += &format!(
                "{} {} ({:.1} s){}\n",
                if r.ok { "ok  " } else { "FAIL" },
                r.check,
                r.seconds,
                r.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
    }
    let slot = o.booted.as_deref().unwrap_or("none");
    s += &match o.action {
        HealthAction::Committed => format!("trial boot of slot {slot} passed: committed\n"),
        HealthAction::Fallback => format!(
            "trial boot of slot {slot} failed: marked bad{}\n",
            if o.rebooting {
                ", rebooting into the previous slot"
            } else {
                "; the previous slot boots next"
            }
        ),
        HealthAction::Kept => format!("slot {slot} kept ({} boot)\n", o.boot),
        HealthAction::None => format!("nothing to do ({})\n", o.boot),
    };
    s
}
