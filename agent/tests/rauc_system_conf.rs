//! RAUC `system.conf` files in place of `system.toml`: the fixtures in
//! `tests/fixtures/rauc/` load through [`SystemConfig::load`] and drive the CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use flipslot::config::{BootloaderKind, ConfigError, ConfigFormat, SystemConfig};
use flipslot_bootenv::grubenv;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rauc")
        .join(name)
}

fn slot_names(cfg: &SystemConfig) -> Vec<(&str, &str)> {
    cfg.slots
        .iter()
        .map(|s| (s.name.as_str(), s.bootname.as_str()))
        .collect()
}

#[test]
fn grub_fixture_loads() {
    let path = fixture("grub-efi.conf");
    let cfg = SystemConfig::load(&path).unwrap();
    assert_eq!(cfg.format, ConfigFormat::RaucSystemConf);
    assert_eq!(cfg.path, path);
    assert_eq!(cfg.compatible, "Acme Gateway x86-64");
    assert_eq!(cfg.bootloader, BootloaderKind::Grub);
    assert_eq!(
        cfg.grubenv.as_deref(),
        Some(Path::new("/boot/efi/EFI/BOOT/grubenv"))
    );
    assert_eq!(cfg.data_dir, PathBuf::from("/data/rauc"));
    assert!(!cfg.rauc_bundles.plain && cfg.rauc_bundles.verity);
    let k = cfg.x509_keyring.as_ref().unwrap();
    // Relative to the file's directory, as RAUC resolves it.
    assert_eq!(k.path, Some(fixture("ca.cert.pem")));
    assert_eq!(k.check_purpose, "codesign");
    assert_eq!(k.allowed_signer_cns, ["Acme Release Signing 2025"]);
    assert_eq!(slot_names(&cfg), [("rootfs.0", "A"), ("rootfs.1", "B")]);
    let ignored: Vec<&str> = cfg
        .notices
        .iter()
        .map(|n| n.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(ignored, ["mountprefix", "statusfile", "tls-ca"]);
}

#[test]
fn uboot_fixture_loads() {
    let cfg = SystemConfig::load(&fixture("uboot-rpi.conf")).unwrap();
    assert_eq!(cfg.bootloader, BootloaderKind::Uboot);
    assert_eq!(cfg.grubenv, None);
    assert_eq!((cfg.boot_attempts, cfg.boot_attempts_primary), (3, 3));
    assert!(cfg.x509_keyring.as_ref().unwrap().allow_partial_chain);
    assert_eq!(slot_names(&cfg), [("rootfs.0", "A"), ("rootfs.1", "B")]);
    assert_eq!(cfg.notices.len(), 3, "{:#?}", cfg.notices);
    assert!(cfg.notices.iter().all(|n| n.starts_with("[log.install] ")));
}

#[test]
fn custom_fixture_loads() {
    let cfg = SystemConfig::load(&fixture("custom-backend.conf")).unwrap();
    assert_eq!(cfg.bootloader, BootloaderKind::Custom);
    assert_eq!(cfg.custom_backend, Some(fixture("boot-select.sh")));
    assert_eq!(
        cfg.x509_keyring.as_ref().unwrap().directory,
        Some(fixture("certs"))
    );
    assert_eq!(
        cfg.rauc_bundles.min_bundle_version.as_deref(),
        Some("2025.1")
    );
    assert_eq!(
        slot_names(&cfg),
        [
            ("appfs.0", "app0"),
            ("appfs.1", "app1"),
            ("rootfs.0", "system0"),
            ("rootfs.1", "system1")
        ]
    );
    assert!(cfg.slots_of_class("appfs").iter().all(|s| !s.install_same));
    assert!(cfg.slots_of_class("rootfs").iter().all(|s| s.install_same));
    assert!(cfg.notices.is_empty(), "{:#?}", cfg.notices);
}

#[test]
fn barebox_fixture_is_refused_key_by_key() {
    let e = SystemConfig::load(&fixture("barebox-handlers.conf")).unwrap_err();
    let ConfigError::RaucUnsupported { problems, .. } = &e else {
        panic!("unexpected error {e}");
    };
    let found: Vec<(String, usize)> = problems
        .iter()
        .map(|p| {
            (
                format!("{} {}", p.group, p.key.as_deref().unwrap_or("")),
                p.line,
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("handlers system-info".to_string(), 13),
            ("handlers post-install".to_string(), 14),
            ("artifacts.containers path".to_string(), 27),
            ("artifacts.containers type".to_string(), 28),
            ("system bootloader".to_string(), 5),
        ]
    );
    let msg = e.to_string();
    assert!(
        msg.contains("barebox-handlers.conf")
            && msg
                .contains("[system] bootloader (line 5): bootloader=barebox is not supported yet"),
        "{msg}"
    );
}

/// A root directory holding `fixture` as `/etc/rauc/system.conf` and a kernel command
/// line that names bootname `A`.
struct Host {
    root: tempfile::TempDir,
}

impl Host {
    fn new(fixture_name: &str) -> Host {
        let root = tempfile::tempdir().expect("temp dir");
        let etc = root.path().join("etc/rauc");
        std::fs::create_dir_all(&etc).expect("create etc/rauc");
        std::fs::copy(fixture(fixture_name), etc.join("system.conf")).expect("copy fixture");
        // --cmdline-file is read under --root.
        std::fs::write(root.path().join("cmdline"), "root=/dev/sda2 rauc.slot=A\n")
            .expect("write cmdline");
        Host { root }
    }

    fn status(&self) -> Output {
        self.status_with(&["--config", "/etc/rauc/system.conf"])
    }

    fn status_with(&self, config_args: &[&str]) -> Output {
        let mut args = config_args.to_vec();
        args.extend(["status", "--json"]);
        self.run(&args, None)
    }

    /// Runs `flipslot --root … --cmdline-file /cmdline ARGS` with `FLIPSLOT_LOG` set to
    /// `log` (unset: the default level).
    fn run(&self, args: &[&str], log: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flipslot"));
        cmd.arg("--root")
            .arg(self.root.path())
            .args(["--cmdline-file", "/cmdline"])
            .args(args)
            .stdin(Stdio::null())
            .env_remove("FLIPSLOT_LOG");
        if let Some(level) = log {
            cmd.env("FLIPSLOT_LOG", level);
        }
        cmd.output().expect("run flipslot")
    }

    /// Creates the grubenv the GRUB fixture names.
    fn create_grubenv(&self) {
        let env = self.root.path().join("boot/efi/EFI/BOOT/grubenv");
        std::fs::create_dir_all(env.parent().expect("grubenv has a parent"))
            .expect("create the grubenv directory");
        let mut block = grubenv::HEADER.as_bytes().to_vec();
        block.resize(grubenv::DEFAULT_BLOCK_SIZE, b'#');
        std::fs::write(&env, block).expect("write grubenv");
    }
}

#[test]
fn cli_status_reads_the_system_conf() {
    let host = Host::new("grub-efi.conf");
    // Without a grubenv the command gets past the config and fails at the bootloader.
    let out = host.status();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("boot/efi/EFI/BOOT/grubenv"), "{stderr}");
    assert!(
        !stderr.contains("invalid config") && !stderr.contains("cannot use RAUC config"),
        "{stderr}"
    );
    // Notices about ignored keys are for `status`, not for every command.
    assert!(!stderr.contains("mountprefix"), "{stderr}");

    let env = host.root.path().join("boot/efi/EFI/BOOT/grubenv");
    std::fs::create_dir_all(env.parent().unwrap()).unwrap();
    let mut block = grubenv::HEADER.as_bytes().to_vec();
    block.resize(grubenv::DEFAULT_BLOCK_SIZE, b'#');
    std::fs::write(&env, block).unwrap();
    let out = host.status();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["compatible"], "Acme Gateway x86-64");
    assert_eq!(v["bootloader"], "grub");
    assert_eq!(v["booted"], "rootfs.0");
    let slots: Vec<(&str, &str)> = v["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["device"].as_str().unwrap()))
        .collect();
    assert_eq!(
        slots,
        [
            ("rootfs.0", "/dev/disk/by-partlabel/rootfs-a"),
            ("rootfs.1", "/dev/disk/by-partlabel/rootfs-b")
        ]
    );

    // Without --config and without /etc/flipslot/system.toml, RAUC's file is found.
    let out = host.status_with(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found["compatible"], "Acme Gateway x86-64");
    // And the rauc drop-in finds it too, answering in RAUC's JSON shape.
    let link = host.root.path().join("rauc");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_flipslot"), &link).unwrap();
    let out = Command::new(&link)
        .arg("--root")
        .arg(host.root.path())
        .args([
            "--cmdline-file",
            "/cmdline",
            "status",
            "--output-format=json",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["booted"], "A", "{r}");
    assert!(r["slots"][0]["rootfs.0"].is_object(), "{r}");
}

#[test]
fn cli_names_refused_keys() {
    let host = Host::new("barebox-handlers.conf");
    let out = host.status();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot use RAUC config")
            && stderr.contains("etc/rauc/system.conf")
            && stderr.contains("[handlers] post-install (line 14)"),
        "{stderr}"
    );
}

#[test]
fn relative_paths_resolve_inside_the_root() {
    // Read from a directory standing for the device's root: the keyring path relative
    // to /etc/rauc/system.conf is /etc/rauc/ca.pem on the device, not the host path.
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/rauc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("system.conf"),
        "[system]\ncompatible=x\nbootloader=grub\ndata-directory=/data\n\
         [keyring]\npath=ca.pem\n\
         [slot.rootfs.0]\ndevice=/dev/a\nbootname=A\n\
         [slot.rootfs.1]\ndevice=/dev/b\nbootname=B\n",
    )
    .unwrap();
    let cfg = SystemConfig::load_in_root(
        &etc.join("system.conf"),
        std::path::Path::new("/etc/rauc/system.conf"),
    )
    .unwrap();
    let k = cfg.x509_keyring.unwrap();
    assert_eq!(
        k.path.as_deref(),
        Some(std::path::Path::new("/etc/rauc/ca.pem"))
    );
}

#[test]
fn cli_refuses_a_repeated_group_or_key() {
    let host = Host::new("grub-efi.conf");
    host.create_grubenv();
    let out = host.status();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf = host.root.path().join("etc/rauc/system.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let first_compatible = text
        .lines()
        .position(|l| l.starts_with("compatible="))
        .unwrap()
        + 1;
    let lines = text.lines().count();
    // A second compatible= in a repeated [system] group at the end.
    std::fs::write(&conf, format!("{text}\n[system]\ncompatible=Other\n")).unwrap();
    let out = host.status();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("etc/rauc/system.conf")
            && stderr.contains(&format!(
                "line {}: group [system] appears again (first on line ",
                lines + 2
            )),
        "{stderr}"
    );
    // The same key twice inside one group.
    let twice = text.replacen("compatible=", "compatible=Other\ncompatible=", 1);
    std::fs::write(&conf, twice).unwrap();
    let out = host.status();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "line {}: [system] compatible is set again (first on line {first_compatible})",
            first_compatible + 1
        )),
        "{stderr}"
    );
}

#[test]
fn ignored_keys_are_shown_by_status_only() {
    let host = Host::new("grub-efi.conf");
    host.create_grubenv();
    let conf = ["--config", "/etc/rauc/system.conf"];
    let notice = "[system] mountprefix (line 9): ignored: flipslot never mounts bundles or slots";

    // Any other command: nothing on stderr at the default level, a debug line at debug.
    for _ in 0..3 {
        let out = host.run(&[&conf[..], &["mark-good", "booted"]].concat(), None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("mountprefix"), "{stderr}");
    }
    let out = host.run(
        &[&conf[..], &["mark-good", "booted"]].concat(),
        Some("debug"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("debug: config /etc/rauc/system.conf: {notice}")),
        "{stderr}"
    );

    // status: in its output, not as a warning.
    let out = host.status();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("mountprefix"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let notices: Vec<&str> = v["config_notices"]
        .as_array()
        .unwrap_or_else(|| panic!("no config_notices in {v}"))
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(notices.len(), 3, "{notices:?}");
    assert_eq!(
        notices[0],
        format!("config /etc/rauc/system.conf: {notice}")
    );
    let out = host.run(&[&conf[..], &["status"]].concat(), None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "notice:     config /etc/rauc/system.conf: {notice}"
        )),
        "{text}"
    );
    assert_eq!(text.matches("notice:").count(), 3, "{text}");
}
