#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Updates end to end, in QEMU with the real GRUB, OVMF and the static `flipslot`: the guest
//! boots slot A (1.0.0), installs a bundle from its data partition, reboots (QEMU exits and is
//! started again on the same disk), and `flipslot health` — run by the guest init on every
//! boot — commits the new slot or falls back. Each test asserts on the serial log, on
//! `flipslot status --json` as the guest printed it, and on the grubenv read from the disk
//! image on the host between boots.

use flipslot_e2e::host;
use flipslot_e2e::inspect::{self, DiskInfo};
use flipslot_e2e::scenario::{self, Boot, Scenario, SH_HELPERS};
use flipslot_e2e::updates::{self, BootRun, Kit, Release, PANIC_INIT_LINE};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One boot under TCG takes ~10 s; an install adds a few.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// A kit with the factory release, or `None` when the VM tests must be skipped.
fn kit(test: &str) -> Option<Kit> {
    if !host::vm_tests_can_run(test) {
        return None;
    }
    let kit = Kit::new(test).unwrap();
    Some(kit)
}

fn print_timings(test: &str, kit: &Kit) {
    for (step, d) in &kit.timings {
        eprintln!("{test}: {:7.2} s  {step}", d.as_secs_f64());
    }
}

/// A scenario: the helpers, then `script`; `flipslot health` runs on every boot.
fn scenario(script: &str) -> Scenario {
    let mut s = Scenario::script(&format!("{SH_HELPERS}{script}"));
    s.files.push((
        "health.env".into(),
        b"# the guest init runs `flipslot health` on every boot\n".to_vec(),
    ));
    s
}

/// The boots of one disk.
struct Disk {
    test: String,
    disk: PathBuf,
    layout: DiskInfo,
    runs: Vec<BootRun>,
}

impl Disk {
    fn new(test: &str, kit: &Kit, scenario: &Scenario, bundles: &[&str]) -> Disk {
        let t = Instant::now();
        let (disk, layout) = kit.disk(test, scenario, bundles).unwrap();
        eprintln!("{test}: {:7.2} s  disk", t.elapsed().as_secs_f64());
        Disk {
            test: test.into(),
            disk,
            layout,
            runs: Vec::new(),
        }
    }

    /// Boots once more; returns the serial log of this boot.
    fn boot(&mut self) -> String {
        let name = format!("{}-boot{}", self.test, self.runs.len() + 1);
        let run = updates::boot(&self.disk, &name, BOOT_TIMEOUT).unwrap();
        eprintln!(
            "{}: boot {} took {:.1} s ({}): {:?}; log {}",
            self.test,
            self.runs.len() + 1,
            run.elapsed.as_secs_f64(),
            run.status,
            scenario::boots(&run.serial),
            run.log.display()
        );
        assert!(
            scenario::failures(&run.serial).is_empty(),
            "{}",
            run.log.display()
        );
        let serial = run.serial.clone();
        self.runs.push(run);
        serial
    }

    fn grubenv(&self) -> BTreeMap<String, String> {
        let env = inspect::grubenv(&self.disk, &self.layout).unwrap();
        eprintln!("{}: grubenv on the disk: {env:?}", self.test);
        env
    }

    fn where_(&self) -> String {
        self.runs
            .last()
            .map(|r| r.log.display().to_string())
            .unwrap_or_default()
    }
}

fn boot(slot: &str, version: &str) -> Boot {
    Boot {
        slot: slot.into(),
        version: version.into(),
    }
}

/// The one `FLIPSLOT-JSON <tag>` status of a serial log.
fn status(serial: &str, tag: &str, where_: &str) -> Value {
    let lines = scenario::json_lines(serial, tag).unwrap();
    assert_eq!(lines.len(), 1, "one {tag} status expected; log {where_}");
    assert_eq!(lines[0].rc, 0, "status failed; log {where_}");
    lines[0].value.clone()
}

fn slot<'a>(status: &'a Value, bootname: &str) -> &'a Value {
    scenario::status_slot(status, bootname).unwrap()
}

fn env_has(env: &BTreeMap<String, String>, want: &[(&str, &str)]) {
    for (k, v) in want {
        assert_eq!(env.get(*k).map(String::as_str), Some(*v), "{k} in {env:?}");
    }
}

/// The install step of boot 1: install `bundle`, print the status, reboot.
fn install_and_reboot(bundle: &str) -> String {
    format!(
        "rig_status before\n\
         echo RIG-INSTALL-START\n\
         flipslot install /data/bundles/{bundle}.fsb\n\
         echo \"RIG-INSTALL-END rc=$?\"\n\
         rig_status installed\n\
         echo reboot > /run/rig-action\n"
    )
}

/// The rollback names both slots and versions (the factory slot's version comes from the
/// status file `flipslot-image disk` writes with `status-file`).
fn assert_rolled_back_to_a(rb: &Value, where_: &str) {
    assert_eq!(rb["from_slot"], "rootfs.1", "{rb}; log {where_}");
    assert_eq!(rb["from_version"], "2.0.0", "{rb}; log {where_}");
    assert_eq!(rb["to_slot"], "rootfs.0", "{rb}; log {where_}");
    assert_eq!(rb["to_version"], "1.0.0", "{rb}; log {where_}");
}

#[test]
fn update_commits() {
    let test = "update_commits";
    let Some(mut kit) = kit(test) else { return };
    kit.add("good", "2.0.0", Release::Good).unwrap();
    print_timings(test, &kit);
    let script = format!(
        "case \"$FLIPSLOT_BOOT\" in\n\
         1) {}\n;;\n\
         2) rig_status trial; rig_grubenv trial; echo reboot > /run/rig-action ;;\n\
         3) rig_status final ;;\n\
         esac\n",
        install_and_reboot("good")
    );
    let mut d = Disk::new(test, &kit, &scenario(&script), &["good"]);
    let started = Instant::now();

    // Boot 1: A runs 1.0.0 (a routine boot: health keeps it), installs 2.0.0 into B.
    let log = d.boot();
    let w = d.where_();
    assert_eq!(scenario::boots(&log), [boot("A", "1.0.0")], "{w}");
    assert_eq!(scenario::health_results(&log), [0], "{w}");
    assert!(log.contains("RIG-INSTALL-END rc=0"), "{w}");
    let before = status(&log, "before", &w);
    assert_eq!(before["booted"], "rootfs.0", "{w}");
    let installed = status(&log, "installed", &w);
    assert_eq!(installed["primary"], "rootfs.1", "{w}");
    assert_eq!(
        slot(&installed, "B")["installed"]["bundle_version"],
        "2.0.0"
    );
    assert_eq!(slot(&installed, "B")["installed"]["result"], "ok");
    env_has(
        &d.grubenv(),
        &[
            ("ORDER", "B A"),
            ("B_OK", "1"),
            ("B_TRY", "0"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
        ],
    );

    // Boot 2: GRUB tries B; its health check passes and commits it.
    let log = d.boot();
    let w = d.where_();
    assert_eq!(scenario::boots(&log), [boot("B", "2.0.0")], "{w}");
    assert!(
        log.contains("trial boot of slot rootfs.1 passed: committed"),
        "{w}"
    );
    assert_eq!(scenario::health_results(&log), [0], "{w}");
    let trial = status(&log, "trial", &w);
    assert_eq!(trial["booted"], "rootfs.1", "{w}");
    assert_eq!(slot(&trial, "B")["boot_status"], "good", "{w}");
    assert!(
        slot(&trial, "B")["installed"]["trial"]["committed_at"].is_u64(),
        "{trial}"
    );
    let genv = scenario::grubenv_lines(&log, "trial");
    assert_eq!(genv.len(), 1, "{w}");
    env_has(
        &genv[0].vars,
        &[("ORDER", "B A"), ("B_OK", "1"), ("B_TRY", "0")],
    );
    env_has(
        &d.grubenv(),
        &[("ORDER", "B A"), ("B_OK", "1"), ("B_TRY", "0")],
    );

    // Boot 3: B again, committed: booted, good, primary; A still good.
    let log = d.boot();
    let w = d.where_();
    assert_eq!(scenario::boots(&log), [boot("B", "2.0.0")], "{w}");
    assert!(log.contains("slot rootfs.1 kept (routine boot)"), "{w}");
    let last = status(&log, "final", &w);
    assert_eq!(last["booted"], "rootfs.1", "{last}");
    assert_eq!(last["primary"], "rootfs.1", "{last}");
    let b = slot(&last, "B");
    assert_eq!(b["state"], "booted", "{last}");
    assert_eq!(b["boot_status"], "good", "{last}");
    assert_eq!(b["primary"], true, "{last}");
    let a = slot(&last, "A");
    assert_eq!(a["boot_status"], "good", "{last}");
    assert_eq!(a["primary"], false, "{last}");
    assert!(last["last_rollback"].is_null(), "{last}");
    env_has(
        &d.grubenv(),
        &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "1"),
            ("B_TRY", "0"),
        ],
    );
    eprintln!(
        "{test}: 3 boots in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn failed_health_rolls_back() {
    let test = "failed_health_rolls_back";
    let Some(mut kit) = kit(test) else { return };
    kit.add("unhealthy", "2.0.0", Release::FailsHealth).unwrap();
    print_timings(test, &kit);
    let script = format!(
        "case \"$FLIPSLOT_BOOT\" in\n\
         1) {}\n;;\n\
         *) rig_status final ;;\n\
         esac\n",
        install_and_reboot("unhealthy")
    );
    let mut d = Disk::new(test, &kit, &scenario(&script), &["unhealthy"]);
    let started = Instant::now();

    let log = d.boot();
    let w = d.where_();
    assert_eq!(scenario::boots(&log), [boot("A", "1.0.0")], "{w}");
    assert!(log.contains("RIG-INSTALL-END rc=0"), "{w}");

    // Boot 2: B's check fails; flipslot records why, marks B bad and reboots.
    let log = d.boot();
    let w = d.where_();
    assert_eq!(scenario::boots(&log), [boot("B", "2.0.0")], "{w}");
    assert!(log.contains("FAIL command test -e /etc/app-ready"), "{w}");
    assert!(
        log.contains("trial boot of slot rootfs.1 failed: marked bad, rebooting"),
        "{w}"
    );
    assert!(
        scenario::health_results(&log).is_empty(),
        "health rebooted; {w}"
    );
    assert_eq!(
        scenario::scenario_results(&log),
        Vec::<Option<i32>>::new(),
        "{w}"
    );
    env_has(
        &d.grubenv(),
        &[("B_OK", "0"), ("A_OK", "1"), ("A_TRY", "0")],
    );

    // Boot 3: GRUB boots A; its health records the rollback.
    let log = d.boot();
    let w = d.where_();
    assert_eq!(scenario::boots(&log), [boot("A", "1.0.0")], "{w}");
    assert!(
        log.contains("rollback: slot rootfs.1 (2.0.0) failed its trial"),
        "{w}"
    );
    let last = status(&log, "final", &w);
    assert_eq!(last["booted"], "rootfs.0", "{last}");
    assert_eq!(last["primary"], "rootfs.0", "{last}");
    assert_eq!(slot(&last, "B")["boot_status"], "bad", "{last}");
    assert_eq!(slot(&last, "A")["boot_status"], "good", "{last}");
    let rb = &last["last_rollback"];
    assert_rolled_back_to_a(rb, &w);
    let reason = rb["reason"].as_str().unwrap();
    assert!(
        reason.contains("command test -e /etc/app-ready"),
        "{reason}"
    );
    assert!(reason.contains("exit"), "{reason}");
    assert_eq!(
        slot(&last, "B")["installed"]["trial"]["health_failure"].as_str(),
        Some(reason),
        "{last}"
    );
    env_has(
        &d.grubenv(),
        &[("B_OK", "0"), ("A_OK", "1"), ("A_TRY", "0")],
    );
    eprintln!(
        "{test}: 3 boots in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn panic_falls_back() {
    let test = "panic_falls_back";
    let Some(mut kit) = kit(test) else { return };
    kit.add("panics", "2.0.0", Release::Panics).unwrap();
    print_timings(test, &kit);
    let script = format!(
        "case \"$FLIPSLOT_BOOT\" in\n\
         1) {}\n;;\n\
         *) rig_status final ;;\n\
         esac\n",
        install_and_reboot("panics")
    );
    let mut d = Disk::new(test, &kit, &scenario(&script), &["panics"]);
    let started = Instant::now();

    let log = d.boot();
    let w = d.where_();
    assert_eq!(scenario::boots(&log), [boot("A", "1.0.0")], "{w}");
    assert!(log.contains("RIG-INSTALL-END rc=0"), "{w}");

    // Boot 2: GRUB tries B (B_TRY=1 first); its init dies, the kernel panics and resets.
    let log = d.boot();
    let w = d.where_();
    assert!(scenario::boots(&log).is_empty(), "{w}");
    assert!(log.contains("flipslot-initramfs: slot=B"), "{w}");
    assert!(log.contains(PANIC_INIT_LINE), "{w}");
    assert!(log.contains("Attempted to kill init"), "{w}");
    env_has(
        &d.grubenv(),
        &[("ORDER", "B A"), ("B_OK", "1"), ("B_TRY", "1")],
    );

    // Boot 3: GRUB skips the tried B by itself; A's health records the rollback.
    let log = d.boot();
    let w = d.where_();
    assert_eq!(scenario::boots(&log), [boot("A", "1.0.0")], "{w}");
    let last = status(&log, "final", &w);
    assert_eq!(last["booted"], "rootfs.0", "{last}");
    assert_eq!(slot(&last, "B")["boot_status"], "bad", "{last}");
    assert_eq!(slot(&last, "A")["boot_status"], "good", "{last}");
    let rb = &last["last_rollback"];
    assert_rolled_back_to_a(rb, &w);
    let reason = rb["reason"].as_str().unwrap();
    assert!(
        reason.contains("never reached the health check"),
        "{reason}"
    );
    env_has(
        &d.grubenv(),
        &[("B_OK", "0"), ("A_OK", "1"), ("A_TRY", "0")],
    );
    eprintln!(
        "{test}: 3 boots in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The `FLIPSLOT-GRUBENV` hash and the `status --json` printed under `before` and `after`
/// are the same.
fn assert_unchanged(log: &str, before: &str, after: &str, w: &str) {
    let env_b = scenario::grubenv_lines(log, before);
    let env_a = scenario::grubenv_lines(log, after);
    assert_eq!(env_b.len(), 1, "{w}");
    assert_eq!(env_a.len(), 1, "{w}");
    assert_eq!(env_b[0], env_a[0], "grubenv changed; {w}");
    assert_eq!(
        status(log, before, w),
        status(log, after, w),
        "status changed; {w}"
    );
}

#[test]
fn bad_bundles_refused() {
    let test = "bad_bundles_refused";
    let Some(mut kit) = kit(test) else { return };
    kit.add("good", "2.0.0", Release::Good).unwrap();
    let untrusted = kit.untrusted_key().unwrap();
    kit.small("untrusted", "3.0.0", &untrusted).unwrap();
    let keys = kit.keys.clone();
    kit.small("older", "1.5.0", &keys).unwrap();
    print_timings(test, &kit);
    let try_bundle = |tag: &str, bundle: &str| {
        format!(
            "rig_status {tag}-before; rig_grubenv {tag}-before\n\
             flipslot install /data/bundles/{bundle}.fsb\n\
             echo \"RIG-REFUSED-{tag} rc=$?\"\n\
             rig_status {tag}-after; rig_grubenv {tag}-after\n"
        )
    };
    let script = format!(
        "case \"$FLIPSLOT_BOOT\" in\n\
         1) {}\n;;\n\
         2) {}\n;;\n\
         3) {}\n;;\n\
         *) rig_status final ;;\n\
         esac\n",
        try_bundle("untrusted", "untrusted"),
        install_and_reboot("good"),
        try_bundle("older", "older"),
    );
    let mut d = Disk::new(
        test,
        &kit,
        &scenario(&script),
        &["good", "untrusted", "older"],
    );
    let started = Instant::now();

    // Boot 1, on the factory slot A: a bundle signed by a key the system does not trust.
    let log = d.boot();
    let w = d.where_();
    assert_eq!(scenario::boots(&log), [boot("A", "1.0.0")], "{w}");
    assert!(log.contains("RIG-REFUSED-untrusted rc=1"), "{w}");
    assert!(log.contains("bundles/untrusted.fsb rejected"), "{w}");
    assert!(
        log.contains("bundle has 0 valid signature(s) by trusted keys, 1 required"),
        "{w}"
    );
    assert_unchanged(&log, "untrusted-before", "untrusted-after", &w);
    let env_after_refusal = d.grubenv();
    env_has(
        &env_after_refusal,
        &[
            ("ORDER", "A B"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "0"),
        ],
    );

    // Boot 2: still A; a good update goes in.
    let log = d.boot();
    let w = d.where_();
    assert_eq!(scenario::boots(&log), [boot("A", "1.0.0")], "{w}");
    assert!(log.contains("RIG-INSTALL-END rc=0"), "{w}");

    // Boot 3: B (2.0.0) commits; a bundle older than 2.0.0 is refused.
    let log = d.boot();
    let w = d.where_();
    assert_eq!(scenario::boots(&log), [boot("B", "2.0.0")], "{w}");
    assert!(log.contains("passed: committed"), "{w}");
    assert!(log.contains("RIG-REFUSED-older rc=1"), "{w}");
    assert!(
        log.contains("bundle version 1.5.0 is older than the booted slot rootfs.1's version 2.0.0"),
        "{w}"
    );
    assert!(log.contains("--allow-downgrade"), "{w}");
    assert_unchanged(&log, "older-before", "older-after", &w);

    // Boot 4: B again, nothing changed by the refusals.
    let log = d.boot();
    let w = d.where_();
    assert_eq!(scenario::boots(&log), [boot("B", "2.0.0")], "{w}");
    let last = status(&log, "final", &w);
    assert_eq!(last["booted"], "rootfs.1", "{last}");
    assert_eq!(slot(&last, "A")["boot_status"], "good", "{last}");
    assert_eq!(
        slot(&last, "B")["installed"]["bundle_version"],
        "2.0.0",
        "{last}"
    );
    eprintln!(
        "{test}: 4 boots in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A factory-flashed device must refuse an older bundle too: the disk's status file records
/// the factory image's version.
#[test]
fn factory_downgrade_refused() {
    let test = "factory_downgrade_refused";
    let Some(mut kit) = kit(test) else { return };
    let keys = kit.keys.clone();
    kit.small("older", "0.9.0", &keys).unwrap();
    let script = "rig_status before; rig_grubenv before\n\
                  flipslot install /data/bundles/older.fsb\n\
                  echo \"RIG-REFUSED-older rc=$?\"\n\
                  rig_status after; rig_grubenv after\n";
    let mut d = Disk::new(test, &kit, &scenario(script), &["older"]);
    let log = d.boot();
    let w = d.where_();
    assert!(log.contains("RIG-REFUSED-older rc=1"), "{w}");
    assert!(log.contains("older than the booted slot"), "{w}");
    assert_unchanged(&log, "before", "after", &w);
}
