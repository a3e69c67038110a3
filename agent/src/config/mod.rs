//! The system configuration: one model ([`SystemConfig`], in `model.rs`) and the two file
//! formats that produce it: flipslot's `system.toml` (`toml.rs`) and RAUC's `system.conf`
//! ([`rauc`]). The `[health]` ([`health`]) and `[update]` ([`update`]) sections are owned
//! here too, so the config imports none of its consumers.
//!
//! [`SystemConfig::parse`] is pure; [`SystemConfig::load`] only adds reading the file.
//! A file whose name ends in `.conf` is read as RAUC's `system.conf`; both formats share
//! the slot checks ([`validate_slots`]).
//! Slots are grouped by class in the file (`[[slot.rootfs]]`); the array position gives
//! the slot index and the slot name is `class.index` (like RAUC's `rootfs.0`).

pub mod health;
mod model;
pub mod rauc;
mod toml;
pub mod update;

pub use model::{
    validate_slots, validate_x509, BootloaderKind, ConfigError, ConfigFormat, RaucBundlePolicy,
    Slot, SlotDecl, SystemConfig, X509Keyring, DEFAULT_BOOT_ATTEMPTS,
};

use std::path::Path;
impl SystemConfig {
    /// Reads and validates the config file at `path`.
    ///
    /// A file named `*.conf` is a RAUC `system.conf` ([`crate::config::rauc`]): a relative
    /// `path` is first made absolute, because RAUC resolves relative paths inside the file
    /// against the file's directory. Its notices are kept in [`SystemConfig::notices`]
    /// (shown by `flipslot status` and at daemon start-up) and logged here at debug
    /// level only, so that a command run in a loop does not repeat them. Any other name
    /// is flipslot's TOML.
    pub fn load(path: &Path) -> Result<SystemConfig, ConfigError> {
        Self::load_in_root(path, path)
    }

    /// Reads the config from `file` (a host path) whose path on the system it configures
    /// is `inside` (they differ under `--root`): a RAUC system.conf's relative paths are
    /// resolved against `inside`'s directory, as RAUC resolves them on the device, and are
    /// then resolved under the root like every other configured path.
    pub fn load_in_root(file: &Path, inside: &Path) -> Result<SystemConfig, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|error| ConfigError::Read {
            path: file.to_path_buf(),
            error,
        })?;
        if file.extension().is_some_and(|e| e == "conf") {
            let origin = std::path::absolute(inside).map_err(|error| ConfigError::Read {
                path: file.to_path_buf(),
                error,
            })?;
            let (cfg, notices) = crate::config::rauc::parse_system_conf(&text, &origin)?;
            for n in &notices {
                log::debug!("config {}: {n}", origin.display());
            }
            return Ok(cfg);
        }
        Self::parse(&text, file)
    }

    /// Parses and validates `system.toml` text; `origin` is only used in messages and kept
    /// as `path`.
    pub fn parse(text: &str, origin: &Path) -> Result<SystemConfig, ConfigError> {
        toml::parse(text, origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const ORIGIN: &str = "/etc/flipslot/system.toml";

    const AB: &str = r#"
compatible = "acme-gateway"
bootloader = "grub"
grubenv = "/boot/efi/EFI/BOOT/grubenv"
keyring = "/etc/flipslot/keys"
data-directory = "/var/lib/flipslot"

[[slot.rootfs]]
device = "/dev/disk/by-partlabel/rootfs-a"
bootname = "A"

[[slot.rootfs]]
device = "/dev/disk/by-partlabel/rootfs-b"
bootname = "B"
"#;

    fn parse(text: &str) -> Result<SystemConfig, ConfigError> {
        SystemConfig::parse(text, Path::new(ORIGIN))
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(cfg) => panic!("expected an error, got {cfg:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_ab_example() {
        let cfg = parse(AB).unwrap();
        assert_eq!(cfg.compatible, "acme-gateway");
        assert_eq!(cfg.bootloader, BootloaderKind::Grub);
        assert_eq!(
            cfg.grubenv,
            Some(PathBuf::from("/boot/efi/EFI/BOOT/grubenv"))
        );
        assert_eq!(cfg.keyring, Some(PathBuf::from("/etc/flipslot/keys")));
        assert_eq!(cfg.min_signatures, 1);
        assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/flipslot"));
        assert_eq!(cfg.path, PathBuf::from(ORIGIN));
        assert_eq!(cfg.slots.len(), 2);
        let b = cfg.slot_by_name("rootfs.1").unwrap();
        assert_eq!(b.bootname, "B");
        assert_eq!(b.index, 1);
        assert_eq!(b.class, "rootfs");
        assert_eq!(b.device, PathBuf::from("/dev/disk/by-partlabel/rootfs-b"));
        assert_eq!(cfg.slot_by_bootname("A").unwrap().name, "rootfs.0");
        assert!(cfg.slot_by_bootname("C").is_none());
        assert_eq!(cfg.classes(), vec!["rootfs"]);
        assert_eq!(cfg.slots_of_class("rootfs").len(), 2);
        assert!(cfg.slots_of_class("appfs").is_empty());
        assert_eq!(cfg.bootnames(), vec!["A".to_string(), "B".to_string()]);
        assert_eq!(
            cfg.status_path(),
            PathBuf::from("/var/lib/flipslot/status.json")
        );
        assert!(serde_json::to_string(&cfg)
            .unwrap()
            .contains("\"rootfs.0\""));
    }

    #[test]
    fn abc_and_several_classes() {
        let text = AB.to_string()
            + r#"
[[slot.rootfs]]
device = "/dev/disk/by-partlabel/rootfs-c"
bootname = "C"

[[slot.appfs]]
device = "/dev/sdb1"
bootname = "app_a"

[[slot.appfs]]
device = "/dev/sdb2"
bootname = "app-b"
"#;
        let cfg = parse(&text).unwrap();
        assert_eq!(cfg.classes(), vec!["appfs", "rootfs"]);
        assert_eq!(cfg.slots_of_class("rootfs").len(), 3);
        assert_eq!(cfg.slot_by_bootname("C").unwrap().name, "rootfs.2");
        assert_eq!(cfg.slot_by_bootname("app-b").unwrap().name, "appfs.1");
    }

    #[test]
    fn min_signatures() {
        let text = AB.replace("keyring =", "min-signatures = 3\nkeyring =");
        assert_eq!(parse(&text).unwrap().min_signatures, 3);
        let text = AB.replace("keyring =", "min-signatures = 0\nkeyring =");
        let e = err(&text);
        assert!(e.contains("min-signatures") && e.contains(ORIGIN), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err(&AB.replace("keyring =", "colour = \"red\"\nkeyring ="));
        assert!(e.contains("colour") && e.contains(ORIGIN), "{e}");
        let e = err(&AB.replace("bootname = \"B\"", "bootname = \"B\"\nsize = 3"));
        assert!(e.contains("size"), "{e}");
    }

    #[test]
    fn unknown_bootloader_lists_supported() {
        let e = err(&AB.replace("\"grub\"", "\"barebox\""));
        assert!(
            e.contains("barebox")
                && e.contains("grub")
                && e.contains("uboot")
                && e.contains("custom"),
            "{e}"
        );
    }

    #[test]
    fn missing_required_keys() {
        for key in ["compatible", "keyring", "data-directory", "bootloader"] {
            let text: String = AB
                .lines()
                .filter(|l| !l.starts_with(&format!("{key} =")))
                .collect::<Vec<_>>()
                .join("\n");
            let e = err(&text);
            assert!(e.contains(key), "{key}: {e}");
        }
        let e = err(&AB.replace("grubenv = \"/boot/efi/EFI/BOOT/grubenv\"", ""));
        assert!(e.contains("grubenv"), "{e}");
    }

    #[test]
    fn empty_compatible() {
        let e = err(&AB.replace("\"acme-gateway\"", "\" \""));
        assert!(e.contains("compatible"), "{e}");
    }

    #[test]
    fn no_slots() {
        let text: String = AB.split("[[slot.rootfs]]").next().unwrap().to_string();
        let e = err(&text);
        assert!(e.contains("slot"), "{e}");
    }

    #[test]
    fn single_slot_class() {
        let text = AB.to_string() + "\n[[slot.appfs]]\ndevice = \"/dev/sdc1\"\nbootname = \"X\"\n";
        let e = err(&text);
        assert!(e.contains("slot.appfs") && e.contains("at least 2"), "{e}");
    }

    #[test]
    fn bad_bootnames() {
        let e = err(&AB.replace("bootname = \"B\"", "bootname = \"A\""));
        assert!(
            e.contains("slot.rootfs[1].bootname") && e.contains("\"A\""),
            "{e}"
        );
        let e = err(&AB.replace("bootname = \"B\"", "bootname = \"\""));
        assert!(e.contains("slot.rootfs[1].bootname"), "{e}");
        let e = err(&AB.replace("bootname = \"B\"", "bootname = \"B C\""));
        assert!(e.contains("slot.rootfs[1].bootname"), "{e}");
        let e = err(&AB.replace("bootname = \"B\"", "bootname = \"B$x\""));
        assert!(e.contains("slot.rootfs[1].bootname"), "{e}");
    }

    #[test]
    fn bad_devices() {
        let e = err(&AB.replace("rootfs-b", "rootfs-a"));
        assert!(
            e.contains("slot.rootfs[1].device") && e.contains("rootfs-a"),
            "{e}"
        );
        let e = err(&AB.replace("\"/dev/disk/by-partlabel/rootfs-b\"", "\"sdb2\""));
        assert!(
            e.contains("slot.rootfs[1].device") && e.contains("absolute"),
            "{e}"
        );
    }

    #[test]
    fn relative_paths_rejected() {
        let e = err(&AB.replace("\"/var/lib/flipslot\"", "\"var/lib\""));
        assert!(e.contains("data-directory"), "{e}");
        let e = err(&AB.replace("\"/boot/efi/EFI/BOOT/grubenv\"", "\"grubenv\""));
        assert!(e.contains("grubenv"), "{e}");
    }

    #[test]
    fn bad_class_name() {
        let e = err(&AB.replace("slot.rootfs", "slot.\"root.fs\""));
        assert!(e.contains("root.fs"), "{e}");
    }

    #[test]
    fn update_section() {
        assert_eq!(parse(AB).unwrap().update, None);
        let text = AB.replacen(
            "[[slot.rootfs]]",
            "[update]\nchannel-url = \"https://u.example/c.json\"\nreboot = \"never\"\n\n[[slot.rootfs]]",
            1,
        );
        let u = parse(&text).unwrap().update.unwrap();
        assert_eq!(u.channel_url.as_deref(), Some("https://u.example/c.json"));
        assert_eq!(
            u.inhibit_files[1],
            PathBuf::from("/var/lib/flipslot/inhibit")
        );
        let e = err(&text.replace("reboot = \"never\"", "reboot = \"window\""));
        assert!(
            e.contains("update.reboot-window") && e.contains(ORIGIN),
            "{e}"
        );
        let e = err(&text.replace("reboot = \"never\"", "polling = 3"));
        assert!(e.contains("polling"), "{e}");
    }

    #[test]
    fn toml_slots_are_writable_and_always_installed() {
        let cfg = parse(AB).unwrap();
        assert!(cfg.slots.iter().all(|s| !s.readonly && s.install_same));
        assert!(cfg.notices.is_empty());
        assert_eq!(cfg.format, ConfigFormat::Flipslot);
    }

    #[test]
    fn load_reads_a_conf_file_as_rauc_system_conf() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.conf");
        let conf = "[system]\ncompatible=x\nbootloader=grub\ndata-directory=/d\n\
                    mountprefix=/m\n[keyring]\npath=k.pem\n\
                    [slot.rootfs.0]\ndevice=/dev/a\nbootname=A\n\
                    [slot.rootfs.1]\ndevice=/dev/b\nbootname=B\n";
        std::fs::write(&path, conf).unwrap();
        let cfg = SystemConfig::load(&path).unwrap();
        assert_eq!(cfg.format, ConfigFormat::RaucSystemConf);
        assert_eq!(cfg.path, path);
        assert_eq!(
            cfg.x509_keyring.unwrap().path,
            Some(dir.path().join("k.pem"))
        );
        assert_eq!(cfg.notices.len(), 1, "{:?}", cfg.notices);
        // The name decides: TOML in a .conf file is a key-file syntax error.
        std::fs::write(&path, AB).unwrap();
        let e = SystemConfig::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("cannot parse RAUC config") && e.contains("line 2"),
            "{e}"
        );
    }

    #[test]
    fn load_reads_and_names_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.toml");
        let e = SystemConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("system.toml"), "{e}");
        std::fs::write(&path, AB).unwrap();
        let cfg = SystemConfig::load(&path).unwrap();
        assert_eq!(cfg.path, path);
    }
}
