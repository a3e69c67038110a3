//! Host prerequisites of the VM tests: which programs and files they need, the Debian
//! packages that provide them, and the skip-or-fail decision (skip with a message on a
//! developer machine, fail under `CI=true` so a CI without QEMU cannot pass silently).

use std::path::Path;

/// A program or file the rig needs, and the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// A program on `PATH`, or an absolute file path.
    pub what: &'static str,
    /// The Debian package.
    pub package: &'static str,
}

/// Everything a full VM test (kernel download, initramfs, bundle, disk, boot) uses.
pub const VM_NEEDS: &[Need] = &[
    Need {
        what: "qemu-system-x86_64",
        package: "qemu-system-x86",
    },
    Need {
        what: "/usr/share/ovmf/OVMF.fd",
        package: "ovmf",
    },
    Need {
        what: "/bin/busybox",
        package: "busybox-static",
    },
    Need {
        what: "modprobe",
        package: "kmod",
    },
    Need {
        what: "depmod",
        package: "kmod",
    },
    Need {
        what: "apt-get",
        package: "apt",
    },
    Need {
        what: "dpkg",
        package: "dpkg",
    },
    Need {
        what: "mksquashfs",
        package: "squashfs-tools",
    },
    Need {
        what: "mke2fs",
        package: "e2fsprogs",
    },
    Need {
        what: "sgdisk",
        package: "gdisk",
    },
    Need {
        what: "mkfs.vfat",
        package: "dosfstools",
    },
    Need {
        what: "mcopy",
        package: "mtools",
    },
    Need {
        what: "grub-mkimage",
        package: "grub-common",
    },
    Need {
        what: "/usr/lib/grub/x86_64-efi/linux.mod",
        package: "grub-efi-amd64-bin",
    },
];

/// The Debian packages of `needs`, deduplicated, in order.
pub fn packages(needs: &[Need]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for n in needs {
        if !out.contains(&n.package) {
            out.push(n.package);
        }
    }
    out
}

/// The entries of `needs` that are not present on this host.
pub fn missing(needs: &[Need]) -> Vec<Need> {
    needs.iter().copied().filter(|n| !present(n.what)).collect()
}

fn present(what: &str) -> bool {
    if what.starts_with('/') {
        return Path::new(what).exists();
    }
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    // sbin directories are searched too: root's tools live there and a test runner's PATH
    // does not always name them.
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(Into::into))
        .any(|dir| dir.join(what).is_file())
}

/// Whether the VM tests can run here: [`can_run`] with [`VM_NEEDS`].
pub fn vm_tests_can_run(test: &str) -> bool {
    can_run(test, VM_NEEDS)
}

/// Whether everything in `needs` is here. When something is missing: under `CI=true` this
/// panics naming the Debian packages to install; otherwise it prints why `test` is skipped
/// and returns `false`.
pub fn can_run(test: &str, needs: &[Need]) -> bool {
    let gone = missing(needs);
    if gone.is_empty() {
        return true;
    }
    let what: Vec<&str> = gone.iter().map(|n| n.what).collect();
    let msg = format!(
        "{test}: missing {}; install the Debian packages: apt-get install {}",
        what.join(", "),
        packages(&gone).join(" ")
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("skipped {msg}");
    false
}
