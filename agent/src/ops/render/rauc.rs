//! RAUC's output shapes (RAUC 1.8) for the `rauc` drop-in: `status` as JSON (`slots`
//! an array of single-key objects) and text, `info` as text, and the messages of
//! `install` and `status mark-*`. Pure formatting over flipslot's typed results.

use crate::bootloader::SlotBootState;
use crate::config::SystemConfig;
use crate::ops::{Mark, SlotState, StatusReport};
use crate::slot::status::InstallResult;
use serde_json::{json, Value};

/// `rauc status --output-format=json` in RAUC 1.8's shape, from flipslot's status report
/// and the config it was made with (for each slot's type); `detailed` adds each slot's
/// installed bundle.
pub fn status_json(report: &StatusReport, cfg: &SystemConfig, detailed: bool) -> Value {
    let booted_bootname = report
        .booted
        .as_deref()
        .and_then(|n| cfg.slot_by_name(n))
        .map(|s| s.bootname.clone());
    let slots: Vec<Value> = report
        .slots
        .iter()
        .map(|s| {
            let cfg = cfg.slot_by_name(&s.name);
            let state = if s.state == SlotState::Booted {
                "booted"
            } else if s.primary {
                "active"
            } else {
                "inactive"
            };
            let mut o = json!({
                "class": s.class,
                "device": s.device.display().to_string(),
                "type": cfg.map_or("raw", |c| c.slot_type.as_str()),
                "bootname": s.bootname,
                "state": state,
                "parent": null,
                "mountpoint": if s.state == SlotState::Booted { json!("/") } else { Value::Null },
                "boot_status": if s.boot_status == SlotBootState::Bad { "bad" } else { "good" },
            });
            if detailed {
                if let (Some(rec), Some(obj)) = (&s.installed, o.as_object_mut()) {
                    let mut st = json!({
                        "bundle": {
                            "compatible": rec.compatible,
                            "version": rec.bundle_version,
                        },
                        "status": if rec.result == InstallResult::Ok { "ok" } else { "failed" },
                    });
                    if let (Some(sha), Some(o2)) = (&rec.image_sha256, st.as_object_mut()) {
                        o2.insert("checksum".into(), json!({ "sha256": sha }));
                    }
                    if let (Some(t), Some(o2)) = (rec.installed_at, st.as_object_mut()) {
                        o2.insert(
                            "installed".into(),
                            json!({ "timestamp": flipslot_format::timefmt::rfc3339(t) }),
                        );
                    }
                    obj.insert("slot_status".into(), st);
                }
            }
            json!({ s.name.clone(): o })
        })
        .collect();
    json!({
        "compatible": report.compatible,
        "variant": "",
        "booted": booted_bootname,
        "boot_primary": report.primary,
        "slots": slots,
    })
}

/// The text of `rauc status`, from [`status_json`]'s object.
pub fn status_text(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    let mut out = format!(
        "=== System Info ===\nCompatible:  {}\nVariant:     {}\nBooted from: {}\n\n\
         === Bootloader ===\nActivated: {}\n\n=== Slot States ===\n",
        s("compatible"),
        s("variant"),
        s("booted"),
        s("boot_primary"),
    );
    for slot in v["slots"].as_array().into_iter().flatten() {
        if let Some((name, o)) = slot.as_object().and_then(|m| m.iter().next()) {
            let g = |k: &str| o[k].as_str().unwrap_or("-").to_string();
            let mark = if g("state") == "booted" { "x" } else { " " };
            out.push_str(&format!(
                "{mark} [{name}] ({}, {}, {})\n      bootname: {}\n      boot status: {}\n",
                g("device"),
                g("type"),
                g("state"),
                g("bootname"),
                g("boot_status"),
            ));
        }
    }
    out
}

/// The text of `rauc info`, from the object of `rauc info --output-format=json`.
pub fn info_text(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let mut out = format!(
        "Compatible: \t'{}'\nVersion:    \t'{}'\nDescription:\t'{}'\nBuild:      \t'{}'\nHooks:      \t''\n",
        s("compatible"),
        s("version"),
        s("description"),
        s("build"),
    );
    let images = v["images"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!(
        "{} Image{}:\n",
        images.len(),
        if images.len() == 1 { "" } else { "s" }
    ));
    for (i, img) in images.iter().enumerate() {
        if let Some((class, o)) = img.as_object().and_then(|m| m.iter().next()) {
            out.push_str(&format!(
                "  [{}] {class}\n\tFilename:  {}\n\tChecksum:  {}\n\tSize:      {}\n",
                i + 1,
                o["filename"].as_str().unwrap_or(""),
                o["checksum"].as_str().unwrap_or(""),
                o["size"],
            ));
        }
    }
    out
}

/// What `rauc status mark-*` prints after marking `slot`.
pub fn mark_text(how: Mark, slot: &str) -> String {
    match how {
        Mark::Good => format!("rauc status: marked slot {slot} as good\n"),
        Mark::Bad => format!("rauc status: marked slot {slot} as bad\n"),
        Mark::Active => format!("rauc status: activated slot {slot}\n"),
    }
}

/// What `rauc install` prints after installing `bundle` (as it was named).
pub fn install_text(bundle: &str) -> String {
    format!("Installing `{bundle}` succeeded\n")
}
