#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The rig's parts without booting: the Debian kernel download, the module load order, the
//! initramfs contents and the guest tree.

use flipslot_e2e::{busybox, guest, host, initramfs, kernel};
use std::time::Instant;

#[test]
fn kernel_modules_and_initramfs() {
    if !host::vm_tests_can_run("kernel_modules_and_initramfs") {
        return;
    }
    let t = Instant::now();
    let k = kernel::debian_kernel().unwrap();
    eprintln!(
        "kernel {} {} (release {}) ready in {:.1} s",
        k.package,
        k.package_version,
        k.release,
        t.elapsed().as_secs_f64()
    );
    assert!(k.vmlinuz().is_file());
    assert!(k.modules_dir().join("modules.dep").is_file());

    let order = k.module_load_order(kernel::GUEST_MODULES).unwrap();
    let names: Vec<String> = order
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    eprintln!("module load order ({}): {}", names.len(), names.join(" "));
    for m in kernel::GUEST_MODULES {
        assert!(
            names.iter().any(|n| n == &format!("{m}.ko")),
            "{m}.ko missing from {names:?}"
        );
    }
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(pos("virtio.ko") < pos("virtio_blk.ko"));
    assert!(pos("jbd2.ko") < pos("ext4.ko"));
    assert!(pos("fat.ko") < pos("vfat.ko"));

    let t = Instant::now();
    let img = initramfs::build(&k).unwrap();
    eprintln!(
        "initramfs: {} bytes, built in {:.2} s",
        img.bytes.len(),
        t.elapsed().as_secs_f64()
    );
    let listing = initramfs::list(&img.bytes).unwrap();
    for want in [
        "init",
        "bin/busybox",
        "bin/switch_root",
        "bin/insmod",
        "dev/console",
        "etc/rig-modules",
    ] {
        assert!(
            listing.lines().any(|l| l == want),
            "{want} not in the initramfs"
        );
    }
    for m in &img.modules {
        assert!(listing.lines().any(|l| l == m), "{m} not in the initramfs");
    }
}

#[test]
fn guest_tree_without_agent() {
    if !host::vm_tests_can_run("guest_tree_without_agent") {
        return;
    }
    let k = kernel::debian_kernel().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("root");
    let mut spec = guest::GuestSpec::new("9.9.9");
    spec.agent = guest::Agent::None;
    let info = guest::build_tree(&spec, &k, &tree).unwrap();
    assert_eq!(info.kernel_release, k.release);
    assert!(tree.join("boot/vmlinuz").is_file());
    assert!(tree.join("boot/initrd.img").is_file());
    assert_eq!(
        std::fs::read_to_string(tree.join("etc/flipslot-version")).unwrap(),
        "9.9.9\n"
    );
    assert_eq!(
        std::fs::read_to_string(tree.join("sbin/init")).unwrap(),
        guest::GUEST_INIT
    );
    assert_eq!(
        std::fs::read_link(tree.join("bin/sh")).unwrap(),
        std::path::Path::new("/bin/busybox")
    );
    assert!(tree.join("etc/flipslot/system.toml").is_file());
    assert!(!busybox::is_dynamic_elf(
        &std::fs::read(tree.join("bin/busybox")).unwrap()
    ));
}

#[test]
fn vm_timeout_kills_qemu_and_shows_the_serial_tail() {
    use flipslot_e2e::qemu::{self, Accel, Vm, VmConfig};
    use std::time::Duration;
    if !host::vm_tests_can_run("vm_timeout_kills_qemu_and_shows_the_serial_tail") {
        return;
    }
    let t = Instant::now();
    let kvm = qemu::kvm_usable();
    eprintln!(
        "kvm usable: {kvm} (probe {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    let dir = flipslot_e2e::paths::scratch_dir("vm-timeout-").unwrap();
    let blank = dir.path().join("blank.img");
    std::fs::File::create(&blank)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let mut cfg = VmConfig::new("vm_timeout", &blank);
    cfg.accel = Accel::Tcg;
    cfg.hard_timeout = Duration::from_secs(60);
    let mut vm = Vm::start(&cfg).unwrap();
    // OVMF finds nothing to boot on a blank disk, but it does print its boot manager lines.
    let m = vm.wait_for("BdsDxe", Duration::from_secs(30)).unwrap();
    eprintln!("firmware up after {:.1} s", m.at.as_secs_f64());
    let err = vm
        .wait_for("never printed", Duration::from_secs(2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("timed out"), "{err}");
    assert!(
        err.contains("BdsDxe"),
        "the error shows the serial tail: {err}"
    );
    // The timeout killed QEMU: waiting for its exit returns at once.
    let status = vm.wait_exit(Duration::from_secs(1)).unwrap();
    assert!(!status.success());
    // kill() after exit is a no-op and says it cut nothing.
    assert!(
        !vm.kill().unwrap(),
        "kill() reported killing an exited QEMU"
    );
    // A running QEMU: kill() cuts it and says so.
    drop(vm);
    let mut vm = Vm::start(&cfg).unwrap();
    vm.wait_for("BdsDxe", Duration::from_secs(30)).unwrap();
    assert!(
        vm.kill().unwrap(),
        "kill() of a running QEMU reported nothing killed"
    );
    assert!(!vm.wait_exit(Duration::from_secs(1)).unwrap().success());
}
