#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Scenario 6: a Debian bookworm guest with systemd, where the shipped
//! `flipslot-health.service` runs for real (see `flipslot_e2e::systemd_guest`).
//!
//! (a) slot A boots, `flipslot-health.service` runs and succeeds, `boot-complete.target` is
//! reached, and the status shows A booted and good; (b) A installs version 2.0.0 into B from
//! the data partition and reboots; B's trial boot is committed by the health service; (c) a
//! health check that fails keeps `boot-complete.target` from being reached, and the rig's
//! `OnFailure=` path reports and powers off; (d) a trial of B that fails its check is marked
//! bad, the health service reboots (`systemctl reboot`) and A records the rollback; (e) the
//! rig's deadline timer ends a boot that takes too long.
//!
//! Needs root, `mmdebstrap` and the Debian mirror of the host's apt sources (the base root is
//! cached in `target/rig-cache/systemd-root/`). Without them the tests skip; under `CI=true`
//! they fail.

use flipslot_e2e::images::{ImageTool, KeyPair};
use flipslot_e2e::qemu::{Vm, VmConfig};
use flipslot_e2e::scenario::Scenario;
use flipslot_e2e::systemd_guest::{
    self as sg, BaseRoot, BaseRootError, BootReport, SystemdGuestSpec,
};
use flipslot_e2e::{cargo_build, inspect, kernel, paths, qemu};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest wait for one boot's markers (TCG, a busy machine).
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

struct Setup {
    work: tempfile::TempDir,
    tool: ImageTool,
    base: BaseRoot,
    kernel: kernel::Kernel,
    agent: PathBuf,
    keys: KeyPair,
}

/// Everything a test needs before its bundles, or `None` when it must be skipped.
fn setup(test: &str) -> Option<Setup> {
    if !sg::skip_or_fail(test, sg::missing_prerequisites()) {
        return None;
    }
    let tool = ImageTool::build().unwrap();
    if !tool.has_disk() {
        let msg = Some("`flipslot-image disk` is not available in this build".to_string());
        sg::skip_or_fail(test, msg);
        return None;
    }
    let t = Instant::now();
    let base = match sg::base_root() {
        Ok(b) => b,
        Err(e @ BaseRootError::MirrorUnreachable(_)) => {
            sg::skip_or_fail(test, Some(e.to_string()));
            return None;
        }
        Err(e) => panic!("{test}: {e}"),
    };
    match base.built_in {
        Some(d) => eprintln!(
            "{test}: base root built by mmdebstrap in {:.1} s: {}",
            d.as_secs_f64(),
            base.dir.display()
        ),
        None => eprintln!(
            "{test}: base root from the cache in {:.2} s: {}",
            t.elapsed().as_secs_f64(),
            base.dir.display()
        ),
    }
    let kernel = kernel::debian_kernel().unwrap();
    let agent = cargo_build::static_agent().unwrap();
    let work = paths::scratch_dir(&format!("{test}-")).unwrap();
    let keys = tool.keygen(&work.path().join("keys"), "release").unwrap();
    Some(Setup {
        work,
        tool,
        base,
        kernel,
        agent,
        keys,
    })
}

fn bundle(s: &Setup, test: &str, version: &str) -> PathBuf {
    bundle_of(s, test, &SystemdGuestSpec::new(version, &s.agent))
}

fn bundle_of(s: &Setup, test: &str, spec: &SystemdGuestSpec) -> PathBuf {
    let version = spec.version.as_str();
    let b = sg::bundle(&s.tool, &s.base, &s.kernel, s.work.path(), &s.keys, spec).unwrap();
    for (step, d) in &b.timings {
        eprintln!("{test}: {:7.2} s  {step}", d.as_secs_f64());
    }
    eprintln!(
        "{test}: tree {version}: {:.1} MiB (copy of the base root {:.2} s); bundle {:.1} MiB",
        mib(b.info.bytes),
        b.info.copy_time.as_secs_f64(),
        mib(std::fs::metadata(&b.bundle).unwrap().len())
    );
    b.bundle
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Starts QEMU once no other process's QEMU runs.
fn start(test: &str, disk: &Path, no_reboot: bool, hard: Duration) -> Vm {
    let waited = sg::wait_for_other_qemu(test, Duration::from_secs(900));
    if waited > Duration::from_secs(1) {
        eprintln!(
            "{test}: waited {:.0} s for another QEMU",
            waited.as_secs_f64()
        );
    }
    let mut cfg = VmConfig::new(test, disk);
    cfg.no_reboot = no_reboot;
    cfg.hard_timeout = hard;
    eprintln!(
        "{test}: accelerator {}",
        if qemu::kvm_usable() { "kvm" } else { "tcg" }
    );
    Vm::start(&cfg).unwrap()
}

/// Waits for one boot's milestones and prints when each came.
fn watch_boot(vm: &mut Vm, test: &str, slot: &str) {
    for pattern in [
        "Linux version".to_string(),
        format!("flipslot-initramfs: slot={slot}"),
        "Welcome to".to_string(),
        format!("FLIPSLOT-SYSTEMD-BOOTED slot={slot}"),
        "FLIPSLOT-RIG-ACTION".to_string(),
    ] {
        let m = vm.wait_for(&pattern, BOOT_TIMEOUT).unwrap();
        eprintln!("{test}: {:7.2} s  {}", m.at.as_secs_f64(), m.line.trim());
    }
}

/// Prints the guest's own clock (seconds since the kernel started).
fn print_times(test: &str, r: &BootReport) {
    let f = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.2}"));
    eprintln!(
        "{test}: boot {} (slot {}): systemd started {} s, multi-user.target {} s, \
         flipslot-health active {} s, boot-complete.target {} s, report {} s after the kernel",
        r.boot,
        r.slot,
        f(r.userspace_at),
        f(r.multi_user_at),
        f(r.health_at),
        f(r.boot_complete_at),
        f(r.uptime)
    );
    if !r.failed_units.is_empty() {
        eprintln!("{test}: failed units: {}", r.failed_units.join(" "));
    }
}

/// The health service's console lines (journald's forwarding, not the journal dumps of a
/// failed boot, which name the host).
fn print_health(test: &str, log: &str) {
    for line in sg::lines_with(log, "flipslot[") {
        if !line.contains("flipslot-guest ") {
            eprintln!("{test}: health: {line}");
        }
    }
}

fn assert_healthy(r: &BootReport, slot: &str, version: &str, where_: &str) {
    assert_eq!(
        (r.slot.as_str(), r.version.as_str()),
        (slot, version),
        "{where_}"
    );
    assert!(
        r.boot_complete,
        "boot-complete.target not reached: {where_}"
    );
    assert_eq!(
        (
            r.health_active.as_str(),
            r.health_result.as_str(),
            r.health_status.as_str()
        ),
        ("active", "success", "0"),
        "flipslot-health.service: {where_}"
    );
    for unit in &r.failed_units {
        assert!(
            !unit.starts_with("flipslot"),
            "{unit} failed: {where_} (failed: {:?})",
            r.failed_units
        );
    }
    assert_eq!(r.status_rc, Some(0), "flipslot status: {where_}");
}

/// The status JSON's entry for `slot` (`rootfs.0`, `rootfs.1`).
fn slot_status<'a>(status: &'a serde_json::Value, slot: &str) -> &'a serde_json::Value {
    status["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == slot)
        .unwrap_or_else(|| panic!("no slot {slot} in {status:#}"))
}

#[test]
fn systemd_guest_boots_and_commits_slot_a() {
    let test = "systemd_guest_boots_and_commits_slot_a";
    let Some(s) = setup(test) else { return };
    let bundle = bundle(&s, test, "1.0.0");
    let t = Instant::now();
    let (disk, layout) = sg::disk(
        &s.tool,
        s.work.path(),
        &bundle,
        &s.keys,
        &Scenario::default(),
    )
    .unwrap();
    eprintln!(
        "{test}: disk in {:.2} s: {:.0} MiB",
        t.elapsed().as_secs_f64(),
        mib(std::fs::metadata(&disk).unwrap().len())
    );

    let mut vm = start(test, &disk, true, Duration::from_secs(600));
    watch_boot(&mut vm, test, "A");
    let log = vm.run_to_poweroff(Duration::from_secs(120)).unwrap();
    eprintln!("{test}: {:7.2} s  powered off", vm.elapsed().as_secs_f64());
    let where_ = format!("serial log {}", vm.log_path().display());

    assert_eq!(sg::failures(&log), Vec::<String>::new(), "{where_}");
    let reports = sg::reports(&log);
    assert_eq!(reports.len(), 1, "{where_}");
    let r = &reports[0];
    print_times(test, r);
    assert_healthy(r, "A", "1.0.0", &where_);
    assert_eq!(r.action.as_deref(), Some("poweroff"), "{where_}");
    print_health(test, &log);

    let status = r.status.as_ref().expect("status JSON");
    assert_eq!(status["booted"], "rootfs.0", "{status:#}");
    assert_eq!(status["primary"], "rootfs.0", "{status:#}");
    let a = slot_status(status, "rootfs.0");
    assert_eq!(a["state"], "booted", "{status:#}");
    assert_eq!(a["boot_status"], "good", "{status:#}");
    // The factory image's record, written by `flipslot-image disk` (status-file).
    assert_eq!(a["installed"]["bundle_version"], "1.0.0", "{status:#}");

    // The boot script set A_TRY=1; the health service reset it.
    let env = inspect::grubenv(&disk, &layout).unwrap();
    eprintln!("{test}: grubenv after the boot: {env:?}");
    assert_eq!(env.get("A_OK").map(String::as_str), Some("1"), "{env:?}");
    assert_eq!(env.get("A_TRY").map(String::as_str), Some("0"), "{env:?}");
}

#[test]
fn systemd_guest_updates_into_b_and_commits_it() {
    let test = "systemd_guest_updates_into_b_and_commits_it";
    let Some(s) = setup(test) else { return };
    let v1 = bundle(&s, test, "1.0.0");
    let v2 = bundle(&s, test, "2.0.0");
    let mut scenario = Scenario::default();
    scenario
        .files
        .push(("update.fsb".into(), std::fs::read(&v2).unwrap()));
    let (disk, layout) = sg::disk(&s.tool, s.work.path(), &v1, &s.keys, &scenario).unwrap();

    let mut vm = start(test, &disk, false, Duration::from_secs(1200));
    // Boot 1 installs 2.0.0 into B before its FLIPSLOT-RIG-ACTION (reboot).
    watch_boot(&mut vm, test, "A");
    watch_boot(&mut vm, test, "B");
    let log = vm.run_to_poweroff(Duration::from_secs(120)).unwrap();
    eprintln!("{test}: {:7.2} s  powered off", vm.elapsed().as_secs_f64());
    let where_ = format!("serial log {}", vm.log_path().display());

    assert_eq!(sg::failures(&log), Vec::<String>::new(), "{where_}");
    let reports = sg::reports(&log);
    assert_eq!(reports.len(), 2, "{where_}");
    for r in &reports {
        print_times(test, r);
    }
    assert_healthy(&reports[0], "A", "1.0.0", &where_);
    assert_eq!(reports[0].install_rc, Some(0), "{where_}");
    assert_eq!(reports[0].action.as_deref(), Some("reboot"), "{where_}");
    let r = &reports[1];
    assert_healthy(r, "B", "2.0.0", &where_);
    assert_eq!(r.action.as_deref(), Some("poweroff"), "{where_}");
    print_health(test, &log);
    assert!(
        log.contains("trial boot of slot rootfs.1 passed: committed"),
        "{where_}"
    );

    let status = r.status.as_ref().expect("status JSON");
    assert_eq!(status["booted"], "rootfs.1", "{status:#}");
    assert_eq!(status["primary"], "rootfs.1", "{status:#}");
    let b = slot_status(status, "rootfs.1");
    assert_eq!(b["boot_status"], "good", "{status:#}");
    assert_eq!(b["installed"]["bundle_version"], "2.0.0", "{status:#}");
    assert!(
        b["installed"]["trial"]["committed_at"].is_u64(),
        "B's trial is not committed: {status:#}"
    );

    let env = inspect::grubenv(&disk, &layout).unwrap();
    eprintln!("{test}: grubenv after the cycle: {env:?}");
    assert!(
        env.get("ORDER").is_some_and(|o| o.starts_with('B')),
        "{env:?}"
    );
    assert_eq!(env.get("B_OK").map(String::as_str), Some("1"), "{env:?}");
    assert_eq!(env.get("B_TRY").map(String::as_str), Some("0"), "{env:?}");
}

#[test]
fn systemd_guest_failed_check_blocks_boot_complete() {
    let test = "systemd_guest_failed_check_blocks_boot_complete";
    let Some(s) = setup(test) else { return };
    let mut spec = SystemdGuestSpec::new("1.0.0", &s.agent);
    spec.health_toml = format!(
        "[health]\ndeadline-seconds = 60\nunits = [\"{}\", \"flipslot-missing.service\"]\n",
        sg::TEST_APP
    );
    let bundle = bundle_of(&s, test, &spec);
    let mut scenario = Scenario::default();
    scenario.files.push(("rig/report-fails".into(), Vec::new()));
    let (disk, layout) = sg::disk(&s.tool, s.work.path(), &bundle, &s.keys, &scenario).unwrap();

    let mut vm = start(test, &disk, true, Duration::from_secs(600));
    let m = vm
        .wait_for("FLIPSLOT-SYSTEMD-BOOTED slot=A", BOOT_TIMEOUT)
        .unwrap();
    eprintln!("{test}: {:7.2} s  {}", m.at.as_secs_f64(), m.line.trim());
    let m = vm.wait_for("FLIPSLOT-RIG-FAIL:", BOOT_TIMEOUT).unwrap();
    eprintln!("{test}: {:7.2} s  {}", m.at.as_secs_f64(), m.line.trim());
    let log = vm.run_to_poweroff(Duration::from_secs(120)).unwrap();
    eprintln!("{test}: {:7.2} s  powered off", vm.elapsed().as_secs_f64());
    let where_ = format!("serial log {}", vm.log_path().display());

    assert_eq!(
        sg::failures(&log),
        ["FLIPSLOT-RIG-FAIL: report"],
        "{where_}"
    );
    let reports = sg::reports(&log);
    assert_eq!(reports.len(), 1, "{where_}");
    let r = &reports[0];
    print_times(test, r);
    print_health(test, &log);
    assert!(!r.boot_complete, "boot-complete.target reached: {where_}");
    assert_eq!(
        (
            r.health_active.as_str(),
            r.health_result.as_str(),
            r.health_status.as_str()
        ),
        ("failed", "exit-code", "1"),
        "flipslot-health.service: {where_}"
    );
    assert!(
        r.failed_units
            .iter()
            .any(|u| u == "flipslot-health.service"),
        "{where_}"
    );
    assert!(
        log.contains("flipslot-missing.service is not active"),
        "{where_}"
    );
    assert_eq!(r.action, None, "{where_}");

    // A routine boot is marked good even when a check fails (docs/boot-assessment.md).
    let status = r.status.as_ref().expect("status JSON");
    assert_eq!(status["booted"], "rootfs.0", "{status:#}");
    assert_eq!(
        slot_status(status, "rootfs.0")["boot_status"],
        "good",
        "{status:#}"
    );
    let env = inspect::grubenv(&disk, &layout).unwrap();
    eprintln!("{test}: grubenv after the boot: {env:?}");
    assert_eq!(env.get("A_TRY").map(String::as_str), Some("0"), "{env:?}");
}

#[test]
fn systemd_guest_failed_trial_reboots_into_a() {
    let test = "systemd_guest_failed_trial_reboots_into_a";
    let Some(s) = setup(test) else { return };
    let v1 = bundle(&s, test, "1.0.0");
    let mut spec = SystemdGuestSpec::new("2.0.0", &s.agent);
    spec.health_toml = format!(
        "[health]\ndeadline-seconds = 60\nunits = [\"{}\", \"flipslot-missing.service\"]\n",
        sg::TEST_APP
    );
    let v2 = bundle_of(&s, test, &spec);
    let mut scenario = Scenario::default();
    scenario
        .files
        .push(("update.fsb".into(), std::fs::read(&v2).unwrap()));
    let (disk, layout) = sg::disk(&s.tool, s.work.path(), &v1, &s.keys, &scenario).unwrap();

    let mut vm = start(test, &disk, false, Duration::from_secs(1200));
    watch_boot(&mut vm, test, "A");
    // B's trial: the health service marks it bad and reboots with `systemctl reboot`, which
    // cancels the report's pending start job: no report for this boot.
    for pattern in [
        "flipslot-initramfs: slot=B",
        "Welcome to",
        "trial boot of slot rootfs.1 failed",
    ] {
        let m = vm.wait_for(pattern, BOOT_TIMEOUT).unwrap();
        eprintln!("{test}: {:7.2} s  {}", m.at.as_secs_f64(), m.line.trim());
    }
    watch_boot(&mut vm, test, "A");
    let log = vm.run_to_poweroff(Duration::from_secs(120)).unwrap();
    eprintln!("{test}: {:7.2} s  powered off", vm.elapsed().as_secs_f64());
    let where_ = format!("serial log {}", vm.log_path().display());
    print_health(test, &log);

    assert_eq!(sg::failures(&log), Vec::<String>::new(), "{where_}");
    let reports = sg::reports(&log);
    assert_eq!(reports.len(), 2, "{where_}");
    for r in &reports {
        print_times(test, r);
    }
    assert_healthy(&reports[0], "A", "1.0.0", &where_);
    assert_eq!(reports[0].install_rc, Some(0), "{where_}");
    let r = &reports[1];
    assert_healthy(r, "A", "1.0.0", &where_);
    assert_eq!(r.action.as_deref(), Some("poweroff"), "{where_}");

    let status = r.status.as_ref().expect("status JSON");
    assert_eq!(status["booted"], "rootfs.0", "{status:#}");
    assert_eq!(status["primary"], "rootfs.0", "{status:#}");
    let b = slot_status(status, "rootfs.1");
    assert_eq!(b["boot_status"], "bad", "{status:#}");
    let failure = b["installed"]["trial"]["health_failure"]
        .as_str()
        .unwrap_or_default();
    assert!(
        failure.contains("flipslot-missing.service"),
        "no health failure recorded for B: {status:#}"
    );
    let rb = &status["last_rollback"];
    assert_eq!(
        (&rb["from_slot"], &rb["to_slot"]),
        (&"rootfs.1".into(), &"rootfs.0".into()),
        "{status:#}"
    );
    assert_eq!(rb["from_version"], "2.0.0", "{status:#}");
    assert_eq!(rb["to_version"], "1.0.0", "{status:#}");

    let env = inspect::grubenv(&disk, &layout).unwrap();
    eprintln!("{test}: grubenv after the rollback: {env:?}");
    assert_eq!(env.get("B_OK").map(String::as_str), Some("0"), "{env:?}");
    assert_eq!(env.get("A_TRY").map(String::as_str), Some("0"), "{env:?}");
}

/// The rig's own safety net: a boot not done by the deadline reports and powers off at once
/// (here a deadline of 1 s, so the timer fires as soon as systemd starts it).
#[test]
fn systemd_guest_deadline_powers_off() {
    let test = "systemd_guest_deadline_powers_off";
    let Some(s) = setup(test) else { return };
    let mut spec = SystemdGuestSpec::new("1.0.0", &s.agent);
    spec.deadline = Duration::from_secs(1);
    let bundle = bundle_of(&s, test, &spec);
    let (disk, _) = sg::disk(
        &s.tool,
        s.work.path(),
        &bundle,
        &s.keys,
        &Scenario::default(),
    )
    .unwrap();
    let mut vm = start(test, &disk, true, Duration::from_secs(300));
    let m = vm.wait_for("FLIPSLOT-RIG-FAIL:", BOOT_TIMEOUT).unwrap();
    eprintln!("{test}: {:7.2} s  {}", m.at.as_secs_f64(), m.line.trim());
    let log = vm.run_to_poweroff(Duration::from_secs(60)).unwrap();
    eprintln!("{test}: {:7.2} s  powered off", vm.elapsed().as_secs_f64());
    let where_ = format!("serial log {}", vm.log_path().display());
    assert_eq!(
        sg::failures(&log),
        ["FLIPSLOT-RIG-FAIL: deadline"],
        "{where_}"
    );
    assert!(sg::reports(&log).is_empty(), "{where_}");
}
