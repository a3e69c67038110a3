#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Smoke tests of the QEMU rig: a disk built by `flipslot-image disk` from a bundle of the
//! rig's guest tree boots slot A under OVMF + GRUB, the guest prints its marker line, runs the
//! scenario from the data partition and powers off (or reboots when the scenario asks).

use flipslot_e2e::images::{self, ImageTool, SystemDisk};
use flipslot_e2e::qemu::{Vm, VmConfig};
use flipslot_e2e::scenario::{self, Boot, Scenario};
use flipslot_e2e::{host, inspect, paths, qemu};
use std::time::Duration;

/// Builds a v1.0.0 system disk with `scenario`, or `None` when the test must be skipped.
fn system_disk(test: &str, scenario: &Scenario) -> Option<(tempfile::TempDir, SystemDisk)> {
    if !host::vm_tests_can_run(test) {
        return None;
    }
    let tool = ImageTool::build().unwrap();
    if !tool.has_disk() {
        let msg = format!("{test}: `flipslot-image disk` is not available in this build");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("skipped {msg}");
        return None;
    }
    let work = paths::scratch_dir(&format!("{test}-")).unwrap();
    let sys = images::system_disk(&tool, work.path(), "1.0.0", scenario).unwrap();
    eprintln!("{test}: kernel package {}", sys.kernel_package);
    for (step, d) in &sys.timings {
        eprintln!("{test}: {:7.2} s  {step}", d.as_secs_f64());
    }
    Some((work, sys))
}

fn slot_a() -> Boot {
    Boot {
        slot: "A".into(),
        version: "1.0.0".into(),
    }
}

#[test]
fn rig_boots_slot_a() {
    let scenario = Scenario::script(
        "echo \"rig: scenario on slot $FLIPSLOT_SLOT, boot $FLIPSLOT_BOOT\"\n\
         ls -l /dev/disk/by-partlabel/\n\
         test -f /boot/efi/EFI/BOOT/grubenv || exit 3\n\
         flipslot --version || exit 4\n",
    );
    let Some((_work, sys)) = system_disk("rig_boots_slot_a", &scenario) else {
        return;
    };
    eprintln!(
        "modules ({}): {}",
        sys.info.modules.len(),
        sys.info.modules.join(" ")
    );
    eprintln!(
        "accelerator: {}",
        if qemu::kvm_usable() { "kvm" } else { "tcg" }
    );

    // The grubenv as the disk builder wrote it: A is good and not on trial.
    let built = inspect::grubenv(&sys.disk, &sys.layout).unwrap();
    assert_eq!(
        built.get("A_OK").map(String::as_str),
        Some("1"),
        "{built:?}"
    );
    assert_eq!(
        built.get("A_TRY").map(String::as_str),
        Some("0"),
        "{built:?}"
    );

    let mut cfg = VmConfig::new("rig_boots_slot_a", &sys.disk);
    cfg.hard_timeout = Duration::from_secs(120);
    let mut vm = Vm::start(&cfg).unwrap();
    for pattern in [
        "BdsDxe: starting",
        "Linux version",
        "Run /init as init process",
        "flipslot-initramfs: slot=",
    ] {
        let m = vm.wait_for(pattern, Duration::from_secs(60)).unwrap();
        eprintln!("{:7.2} s  {pattern}", m.at.as_secs_f64());
    }
    let booted = vm
        .wait_for(
            "FLIPSLOT-BOOTED slot=A version=1.0.0",
            Duration::from_secs(60),
        )
        .unwrap();
    eprintln!("{:7.2} s  {}", booted.at.as_secs_f64(), booted.line);
    let log = vm.run_to_poweroff(Duration::from_secs(30)).unwrap();
    eprintln!("{:7.2} s  powered off", vm.elapsed().as_secs_f64());

    let where_ = vm.log_path().display().to_string();
    assert_eq!(scenario::boots(&log), [slot_a()], "serial log: {where_}");
    assert_eq!(
        scenario::failures(&log),
        Vec::<String>::new(),
        "serial log: {where_}"
    );
    assert_eq!(
        scenario::scenario_results(&log),
        [Some(0)],
        "serial log: {where_}"
    );
    assert!(
        log.contains("rig: scenario on slot A, boot 1"),
        "serial log: {where_}"
    );

    // The host reads the grubenv GRUB wrote during the boot, at the ESP's offset: GRUB
    // counted the boot of A (A_TRY=1, saved before booting it; nothing in this scenario
    // resets it) and changed nothing else.
    let env = inspect::grubenv(&sys.disk, &sys.layout).unwrap();
    eprintln!("grubenv after the boot: {env:?}");
    assert!(
        !log.contains("cannot save A_TRY=1"),
        "GRUB could not save the trial: {where_}"
    );
    let mut expected = built.clone();
    expected.insert("A_TRY".into(), "1".into());
    assert_eq!(env, expected, "serial log: {where_}");
}

/// The reboot path of the guest init: the scenario commits slot A (GRUB's counting would not
/// boot an uncommitted slot twice) and asks for a reboot; QEMU runs without `-no-reboot`.
#[test]
fn rig_reboots_within_one_run() {
    let scenario = Scenario::script(
        "if [ \"$FLIPSLOT_BOOT\" = 1 ]; then\n\
         \x20   flipslot mark-good booted || exit 5\n\
         \x20   echo reboot > /run/rig-action\n\
         fi\n",
    );
    let Some((_work, sys)) = system_disk("rig_reboots_within_one_run", &scenario) else {
        return;
    };
    let mut cfg = VmConfig::new("rig_reboots_within_one_run", &sys.disk);
    cfg.no_reboot = false;
    cfg.hard_timeout = Duration::from_secs(150);
    let mut vm = Vm::start(&cfg).unwrap();
    for _ in 0..2 {
        let m = vm
            .wait_for(
                "FLIPSLOT-BOOTED slot=A version=1.0.0",
                Duration::from_secs(60),
            )
            .unwrap();
        eprintln!("{:7.2} s  {}", m.at.as_secs_f64(), m.line);
    }
    let log = vm.run_to_poweroff(Duration::from_secs(30)).unwrap();
    eprintln!("{:7.2} s  powered off", vm.elapsed().as_secs_f64());
    let where_ = vm.log_path().display().to_string();
    assert_eq!(
        scenario::boots(&log),
        [slot_a(), slot_a()],
        "serial log: {where_}"
    );
    assert_eq!(
        scenario::scenario_results(&log),
        [Some(0), Some(0)],
        "serial log: {where_}"
    );
}
