#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Bare-metal provisioning end to end, in QEMU with real OVMF, QEMU's iPXE ROM, GRUB and the
//! static `flipslot`: a machine with a **blank** virtio disk (first in the boot order, the NIC
//! second) netboots, iPXE fetches `boot.ipxe`, the kernel and the initramfs from a real nginx
//! on the host's loopback (`http://10.0.2.2:PORT/` through QEMU's user-mode network), and the
//! initramfs runs `flipslot provision`, which writes the disk from the signed description and
//! the 1.0.0 bundle and reboots. Every reboot ends QEMU (`-no-reboot`); the next run boots the
//! same disk, which now comes before the network.
//!
//! Legacy BIOS is not covered: the reference layout boots GRUB for x86_64 UEFI only.

#[path = "../../agent/tests/support/nginx.rs"]
#[allow(dead_code)]
mod nginx;

use flipslot_e2e::network::{self, Collector, UPDATE_VERSION};
use flipslot_e2e::pxe::{self, PxeKit};
use flipslot_e2e::qemu::Vm;
use flipslot_e2e::scenario::{self, Boot, Scenario, SH_HELPERS};
use flipslot_e2e::{host, inspect};
use nginx::{Nginx, NginxConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Netboot, download, provisioning under TCG, reboot.
const PROVISION_TIMEOUT: Duration = Duration::from_secs(300);
/// One boot from disk (with the update's download on the first).
const BOOT_TIMEOUT: Duration = Duration::from_secs(150);

/// On the data partition: network up, then on the first boot from disk the factory
/// status and an install of 2.0.0 over HTTP followed by a reboot; on later boots the
/// status. `flipslot health` runs first on every boot (the guest init, `health.env`).
fn scenario(update_url: Option<&str>) -> Scenario {
    let update = match update_url {
        Some(url) => format!(
            "\x20   flipslot install {url}\n\
             \x20   echo \"RIG-INSTALL-END rc=$?\"\n\
             \x20   echo reboot > /run/rig-action\n"
        ),
        None => String::new(),
    };
    let script = format!(
        "{SH_HELPERS}export FLIPSLOT_LOG=info\n\
         {}\
         case \"$FLIPSLOT_BOOT\" in\n\
         1)\n\
         \x20   rig_status factory\n\
         {update}\
         \x20   ;;\n\
         *)\n\
         \x20   rig_status final\n\
         \x20   ;;\n\
         esac\n",
        network::SH_NET_UP
    );
    let mut s = Scenario::script(&script);
    s.files.push((
        "health.env".into(),
        b"# the guest init runs `flipslot health` on every boot\n".to_vec(),
    ));
    s
}

/// The web server, the report collector and the kit, all published.
struct Lab {
    test: String,
    nginx: Nginx,
    collector: Collector,
    kit: PxeKit,
    bootfile: String,
}

fn lab(test: &str, update: bool) -> Option<Lab> {
    if !host::vm_tests_can_run(test) {
        return None;
    }
    let nginx = Nginx::start(&NginxConfig::default())?;
    let collector = Collector::start().unwrap();
    let kit = PxeKit::new(test).unwrap();
    for (step, d) in &kit.timings {
        eprintln!("{test}: {:7.2} s  {step}", d.as_secs_f64());
    }
    let www = nginx.www();
    kit.publish_bundles(&www).unwrap();
    let data = kit
        .data_dir(&scenario(
            update
                .then(|| network::guest_url(nginx.port, pxe::UPDATE_BUNDLE))
                .as_deref(),
        ))
        .unwrap();
    kit.provision_set(&data, &www).unwrap();
    let report = network::guest_url(collector.port(), "provision-report");
    kit.netboot(&www, nginx.port, &report).unwrap();
    let bootfile = network::guest_url(nginx.port, &format!("{}/boot.ipxe", pxe::PXE_DIR));
    Some(Lab {
        test: test.into(),
        nginx,
        collector,
        kit,
        bootfile,
    })
}

impl Lab {
    fn vm(&self, disk: &Path, run: &str, timeout: Duration) -> Vm {
        network::wait_for_qemu_turn(network::TURN_TIMEOUT).unwrap();
        let name = format!("{}-{run}", self.test);
        Vm::start(&pxe::pxe_vm(&name, disk, &self.bootfile, timeout)).unwrap()
    }

    /// One whole run to QEMU's exit; returns the serial log.
    fn run(&self, disk: &Path, run: &str, timeout: Duration) -> (String, PathBuf) {
        let mut vm = self.vm(disk, run, timeout);
        let status = vm.wait_exit(timeout).unwrap();
        let serial = vm.serial().unwrap().to_string();
        eprintln!(
            "{}: {run} took {:.1} s ({status}); log {}",
            self.test,
            vm.elapsed().as_secs_f64(),
            vm.log_path().display()
        );
        (serial, vm.log_path().to_path_buf())
    }

    fn access_log(&self) -> String {
        let path = self.nginx.www().parent().unwrap().join("access.log");
        std::fs::read_to_string(path).unwrap_or_default()
    }
}

/// The checks on a run that provisioned the disk.
fn assert_provisioned(serial: &str, log: &Path) {
    assert!(
        serial.contains("FLIPSLOT-NETBOOT: starting provision"),
        "the initramfs did not start provisioning; log {}",
        log.display()
    );
    assert!(
        serial.contains("FLIPSLOT-NETBOOT: provision rc=0"),
        "provisioning failed; log {}",
        log.display()
    );
    assert!(
        serial.contains("flipslot provision: done /dev/vda"),
        "no summary line; log {}",
        log.display()
    );
    assert!(
        !serial.contains("FLIPSLOT-NETBOOT-FAIL"),
        "log {}",
        log.display()
    );
}

/// The disk as the host sees it: a GPT with the four partitions and the grubenv of a
/// fresh factory disk.
fn assert_disk(disk: &Path) {
    let out = std::process::Command::new("sgdisk")
        .arg("-p")
        .arg(disk)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    for name in ["esp", "rootfs-a", "rootfs-b", "data"] {
        assert!(text.contains(name), "sgdisk -p lacks {name}: {text}");
    }
    let env = inspect::read_fat_file(disk, pxe::ESP_OFFSET, inspect::ESP_GRUBENV).unwrap();
    let vars = inspect::parse_grubenv(&env).unwrap();
    assert_eq!(
        vars.get("ORDER").map(String::as_str),
        Some("A B"),
        "{vars:?}"
    );
    assert_eq!(vars.get("A_OK").map(String::as_str), Some("1"), "{vars:?}");
}

fn boots(serial: &str) -> Vec<Boot> {
    scenario::boots(serial)
}

fn json(serial: &str, tag: &str, log: &Path) -> Value {
    let lines = scenario::json_lines(serial, tag).unwrap();
    assert_eq!(
        lines.len(),
        1,
        "one {tag} line expected; log {}",
        log.display()
    );
    assert_eq!(lines[0].rc, 0, "{tag} failed; log {}", log.display());
    lines[0].value.clone()
}

#[test]
fn blank_machine_netboots_provisions_itself_boots_a_and_updates_to_b() {
    let test = "rig_provision_blank";
    let Some(lab) = lab(test, true) else { return };
    let disk = lab.kit.blank_disk("disk.img").unwrap();

    // 1. Netboot and provisioning.
    let (serial, log) = lab.run(&disk, "netboot", PROVISION_TIMEOUT);
    assert_provisioned(&serial, &log);
    let fetched = lab.access_log();
    for path in [
        "pxe/boot.ipxe",
        "pxe/vmlinuz",
        "pxe/initrd.img",
        "pxe/provision.json",
        "pxe/esp.img",
        pxe::BASE_BUNDLE,
    ] {
        assert!(
            fetched.contains(path),
            "the server never served {path}: {fetched}"
        );
    }
    assert_disk(&disk);
    let reports = lab.collector.events();
    let steps: Vec<&str> = reports
        .iter()
        .filter(|e| e["event"] == "provision")
        .filter_map(|e| e["step"].as_str())
        .collect();
    for step in [
        "select",
        "esp",
        "slot rootfs-a",
        "data",
        "partition-table",
        "complete",
    ] {
        assert!(steps.contains(&step), "no {step} report in {steps:?}");
    }

    // 2. The first boot from disk: slot A, the factory record, then the update over HTTP.
    let (serial, log) = lab.run(&disk, "boot1", BOOT_TIMEOUT);
    assert_eq!(
        boots(&serial),
        vec![Boot {
            slot: "A".into(),
            version: "1.0.0".into()
        }],
        "log {}",
        log.display()
    );
    assert!(
        scenario::failures(&serial).is_empty(),
        "log {}",
        log.display()
    );
    let factory = json(&serial, "factory", &log);
    let a = scenario::status_slot(&factory, "A").unwrap();
    assert_eq!(a["state"], "booted", "{factory}");
    assert_eq!(a["installed"]["bundle_version"], "1.0.0", "{factory}");
    assert!(
        a["installed"]["trial"]["committed_at"].is_u64(),
        "the factory slot is committed: {factory}"
    );
    assert!(
        serial.contains("RIG-INSTALL-END rc=0"),
        "the update did not install; log {}",
        log.display()
    );

    // 3. B's trial boot: health passes, B is committed.
    let (serial, log) = lab.run(&disk, "boot2", BOOT_TIMEOUT);
    assert_eq!(
        boots(&serial),
        vec![Boot {
            slot: "B".into(),
            version: UPDATE_VERSION.into()
        }],
        "log {}",
        log.display()
    );
    assert_eq!(
        scenario::health_results(&serial),
        vec![0],
        "log {}",
        log.display()
    );
    let fin = json(&serial, "final", &log);
    let b = scenario::status_slot(&fin, "B").unwrap();
    assert_eq!(b["state"], "booted", "{fin}");
    assert_eq!(b["installed"]["bundle_version"], UPDATE_VERSION, "{fin}");
    assert!(b["installed"]["trial"]["committed_at"].is_u64(), "{fin}");
}

#[test]
fn power_cut_during_provisioning_is_completed_by_the_next_netboot() {
    let test = "rig_provision_powercut";
    let Some(lab) = lab(test, false) else { return };
    let disk = lab.kit.blank_disk("disk.img").unwrap();

    // Cut the power while slot A is being written: once its progress bar (the serial
    // console is the agent's terminal) shows a quarter written.
    let mut vm = lab.vm(&disk, "cut", PROVISION_TIMEOUT);
    vm.wait_for("flipslot provision: slot rootfs-a:", PROVISION_TIMEOUT)
        .unwrap();
    vm.wait_for("write rootfs-a [##", PROVISION_TIMEOUT)
        .unwrap();
    assert!(
        vm.kill().unwrap(),
        "QEMU had already exited: the cut came too late"
    );
    let cut_log = vm.log_path().to_path_buf();
    let serial = vm.serial().unwrap().to_string();
    drop(vm);
    assert!(
        !serial.contains("flipslot provision: data:"),
        "the cut came after slot A was written; log {}",
        cut_log.display()
    );
    // The partition table is written last: the disk is still blank to firmware.
    let mut sig = [0u8; 2];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(&disk).unwrap(), &mut sig, 510)
        .unwrap();
    assert_ne!(sig, [0x55, 0xaa], "a protective MBR exists after the cut");

    // The next power-on falls through to the network and completes the job.
    let (serial, log) = lab.run(&disk, "again", PROVISION_TIMEOUT);
    assert_provisioned(&serial, &log);
    assert_disk(&disk);

    // And the machine boots slot A.
    let (serial, log) = lab.run(&disk, "boot1", BOOT_TIMEOUT);
    let got = boots(&serial);
    assert_eq!(
        got.first(),
        Some(&Boot {
            slot: "A".into(),
            version: "1.0.0".into()
        }),
        "log {}",
        log.display()
    );
}

#[test]
fn bios_machine_netboots_and_provisions_its_disk() {
    // SeaBIOS and the BIOS iPXE ROM run the same netboot files; the disk they provision
    // boots under UEFI only (the reference layout has no BIOS boot partition), so this
    // checks the provisioning and the disk, not a boot from it.
    let test = "rig_provision_bios";
    let Some(lab) = lab(test, false) else { return };
    let disk = lab.kit.blank_disk("disk.img").unwrap();
    network::wait_for_qemu_turn(network::TURN_TIMEOUT).unwrap();
    let mut cfg = pxe::pxe_vm(
        &format!("{test}-netboot"),
        &disk,
        &lab.bootfile,
        PROVISION_TIMEOUT,
    );
    cfg.firmware = flipslot_e2e::qemu::Firmware::Bios(PathBuf::from(pxe::SEABIOS));
    let mut vm = Vm::start(&cfg).unwrap();
    let status = vm.wait_exit(PROVISION_TIMEOUT).unwrap();
    let serial = vm.serial().unwrap().to_string();
    eprintln!(
        "{test}: netboot took {:.1} s ({status})",
        vm.elapsed().as_secs_f64()
    );
    let log = vm.log_path().to_path_buf();
    drop(vm);
    assert_provisioned(&serial, &log);
    assert_disk(&disk);
}
