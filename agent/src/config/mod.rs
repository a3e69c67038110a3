//! The system configuration (`/etc/flipslot/system.toml`): parsing and validation.
//!
//! [`SystemConfig::parse`] is pure; [`SystemConfig::load`] only adds reading the file.
//! A file whose name ends in `.conf` is read as RAUC's `system.conf` instead
//! ([`crate::config::rauc`]); both formats share the slot checks ([`validate_slots`]).
//! Slots are grouped by class in the file (`[[slot.rootfs]]`); the array position gives
//! the slot index and the slot name is `class.index` (like RAUC's `rootfs.0`).

pub mod health;
pub mod rauc;
pub mod update;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::health::HealthConfig;
use crate::config::update::{RawUpdateConfig, UpdateConfig};
use crate::host::paths::STATUS_FILE_NAME;

/// Errors from reading or validating the system configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (unknown key, wrong type,
    /// missing required key, unsupported bootloader).
    #[error("cannot parse config {path}: {source}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The TOML error; it names the key and line.
        source: toml::de::Error,
    },
    /// A value is present but not acceptable.
    #[error("invalid config {path}: {key}: {reason}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The offending key, e.g. `slot.rootfs[1].bootname`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A RAUC `system.conf` is not key-file syntax, or a value has the wrong form.
    #[error("cannot parse RAUC config {path}: {source}")]
    KeyFile {
        /// The config file.
        path: PathBuf,
        /// The key-file error; it names the line.
        source: flipslot_rauc::keyfile::KeyFileError,
    },
    /// A RAUC `system.conf` sets keys flipslot cannot honor or does not know; every one is
    /// listed, each by group, key and line.
    #[error(
        "cannot use RAUC config {path}: {} setting(s) flipslot cannot honor:{}",
        problems.len(),
        crate::config::rauc::list_findings(problems)
    )]
    RaucUnsupported {
        /// The config file.
        path: PathBuf,
        /// What is refused and why.
        problems: Vec<crate::config::rauc::Finding>,
    },
}

/// The bootloader whose environment carries the A/B state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bootloader {
    /// GRUB with RAUC-style `ORDER` / `<bootname>_OK` / `<bootname>_TRY` variables in a grubenv file.
    Grub,
    /// U-Boot with RAUC-style `BOOT_ORDER` / `BOOT_<bootname>_LEFT` variables, its
    /// environment read and written natively as `fw_env.config` describes it.
    Uboot,
    /// An executable speaking RAUC's custom backend protocol (`get-primary`, …).
    Custom,
}

impl Bootloader {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Bootloader::Grub => "grub",
            Bootloader::Uboot => "uboot",
            Bootloader::Custom => "custom",
        }
    }
}

/// One slot: a block device that holds one copy of an image of its class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slot {
    /// `class.index`, e.g. `rootfs.0`.
    pub name: String,
    /// The slot class, e.g. `rootfs`.
    pub class: String,
    /// Position within the class in the config file, from 0.
    pub index: usize,
    /// Absolute path of the block device (usually a `/dev/disk/by-*` link).
    pub device: PathBuf,
    /// The name the bootloader knows this slot by (`A`, `B`, …).
    pub bootname: String,
    /// The slot exists but is never written (RAUC's `readonly`); `false` in `system.toml`.
    pub readonly: bool,
    /// Write the slot even when it already holds the same image (RAUC's `install-same`,
    /// default `true`); `true` in `system.toml`.
    pub install_same: bool,
    /// RAUC's slot `type` (`raw`, `ext4`, `vfat`); images are written raw whatever it is.
    pub slot_type: String,
}

/// The X.509 keyring that RAUC bundles are verified against (RAUC's `[keyring]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct X509Keyring {
    /// A PEM file of trusted certificates.
    pub path: Option<PathBuf>,
    /// A directory of PEM certificate files.
    pub directory: Option<PathBuf>,
    /// `smimesign` (RAUC's default), `codesign` or `any`.
    #[serde(default = "default_purpose")]
    pub check_purpose: String,
    /// Accept a chain that ends at any trusted certificate, not only a self-signed root.
    #[serde(default)]
    pub allow_partial_chain: bool,
    /// If not empty, the signer's subject CN must be one of these.
    #[serde(default)]
    pub allowed_signer_cns: Vec<String>,
    /// Check certificate validity at the bundle's signing time instead of now.
    #[serde(default)]
    pub use_bundle_signing_time: bool,
}

fn default_purpose() -> String {
    "smimesign".to_string()
}

/// Which RAUC bundles are accepted (RAUC's `bundle-formats` and `min-bundle-version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RaucBundlePolicy {
    /// `plain` bundles (detached signature over the squashfs) are accepted.
    #[serde(default = "yes")]
    pub plain: bool,
    /// `verity` bundles (signed manifest plus dm-verity hash tree) are accepted.
    #[serde(default = "yes")]
    pub verity: bool,
    /// Bundles older than this version are refused.
    #[serde(default)]
    pub min_bundle_version: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for RaucBundlePolicy {
    fn default() -> Self {
        RaucBundlePolicy {
            plain: true,
            verity: true,
            min_bundle_version: None,
        }
    }
}

/// Where the configuration came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigFormat {
    /// flipslot's `system.toml`.
    #[default]
    Flipslot,
    /// A RAUC `system.conf`.
    RaucSystemConf,
}

/// The default number of boot attempts (RAUC's `boot-attempts` default).
pub const DEFAULT_BOOT_ATTEMPTS: u32 = 3;

/// The validated system configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemConfig {
    /// The file this was read from (used in messages).
    pub path: PathBuf,
    /// Images must declare this compatible string to be installed.
    pub compatible: String,
    /// Which bootloader backend to use.
    pub bootloader: Bootloader,
    /// The grubenv file (present when `bootloader` is `grub`).
    pub grubenv: Option<PathBuf>,
    /// The `fw_env.config` describing the U-Boot environment (with `bootloader = "uboot"`).
    pub fw_env_config: PathBuf,
    /// The custom backend executable (present when `bootloader` is `custom`).
    pub custom_backend: Option<PathBuf>,
    /// Attempts a slot gets when marked good (U-Boot's `BOOT_<bootname>_LEFT`).
    pub boot_attempts: u32,
    /// Attempts a slot gets when made primary.
    pub boot_attempts_primary: u32,
    /// Directory of trusted ed25519 public keys (flipslot bundles), if any.
    pub keyring: Option<PathBuf>,
    /// Trusted X.509 certificates (RAUC bundles), if any.
    pub x509_keyring: Option<X509Keyring>,
    /// Which RAUC bundles are accepted.
    pub rauc_bundles: RaucBundlePolicy,
    /// The file format this was read from.
    pub format: ConfigFormat,
    /// How many valid signatures an image needs (at least 1).
    pub min_signatures: u32,
    /// Directory for the status file and the install lock.
    pub data_dir: PathBuf,
    /// All slots, ordered by class name, then index.
    pub slots: Vec<Slot>,
    /// Boot assessment checks (`[health]`).
    pub health: HealthConfig,
    /// The update daemon's settings (`[update]`), if the section is present.
    pub update: Option<UpdateConfig>,
    /// Warnings about settings that were read but have no effect (a RAUC `system.conf`'s
    /// irrelevant keys), one line each; empty for `system.toml`.
    pub notices: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    compatible: String,
    bootloader: Bootloader,
    grubenv: Option<PathBuf>,
    fw_env_config: Option<PathBuf>,
    custom_backend: Option<PathBuf>,
    boot_attempts: Option<u32>,
    boot_attempts_primary: Option<u32>,
    keyring: Option<PathBuf>,
    x509_keyring: Option<X509Keyring>,
    #[serde(default)]
    rauc_bundles: RaucBundlePolicy,
    min_signatures: Option<u32>,
    data_directory: PathBuf,
    #[serde(default)]
    slot: BTreeMap<String, Vec<RawSlot>>,
    #[serde(default)]
    health: HealthConfig,
    #[serde(default)]
    update: Option<RawUpdateConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlot {
    device: PathBuf,
    bootname: String,
}

/// Checks an X.509 keyring section; the error names the key.
pub fn validate_x509(k: &X509Keyring) -> Result<(), (String, String)> {
    if k.path.is_none() && k.directory.is_none() {
        return Err((
            "x509-keyring".into(),
            "needs path (a PEM file) and/or directory".into(),
        ));
    }
    if !["smimesign", "codesign", "any"].contains(&k.check_purpose.as_str()) {
        return Err((
            "x509-keyring.check-purpose".into(),
            format!("{:?} is not smimesign, codesign or any", k.check_purpose),
        ));
    }
    Ok(())
}

/// Whether `s` is non-empty and only `[A-Za-z0-9_-]`.
fn is_simple_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A slot as a config file declares it, before the checks every format shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotDecl {
    /// The slot class.
    pub class: String,
    /// The index within the class, as declared.
    pub index: usize,
    /// The block device, as declared.
    pub device: PathBuf,
    /// The bootname, as declared.
    pub bootname: String,
    /// See [`Slot::readonly`].
    pub readonly: bool,
    /// See [`Slot::install_same`].
    pub install_same: bool,
    /// See [`Slot::slot_type`].
    pub slot_type: String,
    /// How messages name this slot's `device` key (e.g. `slot.rootfs[1].device`).
    pub device_key: String,
    /// How messages name this slot's `bootname` key.
    pub bootname_key: String,
}

/// The slot checks both config formats share: at least one class; class names, bootnames
/// simple; at least two slots per class, indexed from 0 without gaps; bootnames and
/// devices unique; devices absolute. `class_key` names a class in messages. Returns the
/// slots ordered by class, then index; an error is `(key, reason)`.
pub fn validate_slots(
    decls: Vec<SlotDecl>,
    class_key: impl Fn(&str) -> String,
    empty_hint: &str,
) -> Result<Vec<Slot>, (String, String)> {
    if decls.is_empty() {
        return Err((
            "slot".into(),
            format!("no slot classes configured ({empty_hint})"),
        ));
    }
    let mut by_class: BTreeMap<String, Vec<SlotDecl>> = BTreeMap::new();
    for d in decls {
        by_class.entry(d.class.clone()).or_default().push(d);
    }
    let mut slots = Vec::new();
    let mut bootnames = BTreeSet::new();
    let mut devices = BTreeSet::new();
    for (class, mut decls) in by_class {
        if !is_simple_name(&class) {
            return Err((
                class_key(&class),
                "class names may only contain A-Z, a-z, 0-9, '_' and '-'".into(),
            ));
        }
        if decls.len() < 2 {
            return Err((
                class_key(&class),
                format!(
                    "class has {} slot(s); at least 2 are needed for A/B updates",
                    decls.len()
                ),
            ));
        }
        decls.sort_by_key(|d| d.index);
        if decls.iter().enumerate().any(|(i, d)| d.index != i) {
            let found: Vec<String> = decls.iter().map(|d| d.index.to_string()).collect();
            return Err((
                class_key(&class),
                format!(
                    "slot indices must run from 0 without gaps or repeats, found {}",
                    found.join(", ")
                ),
            ));
        }
        for d in decls {
            if !is_simple_name(&d.bootname) {
                return Err((
                    d.bootname_key,
                    format!(
                        "{:?} must be non-empty and only contain A-Z, a-z, 0-9, '_' and '-'",
                        d.bootname
                    ),
                ));
            }
            if !bootnames.insert(d.bootname.clone()) {
                return Err((
                    d.bootname_key,
                    format!("bootname {:?} is used by another slot", d.bootname),
                ));
            }
            if !d.device.is_absolute() {
                return Err((
                    d.device_key,
                    format!("{} is not an absolute path", d.device.display()),
                ));
            }
            if !devices.insert(d.device.clone()) {
                return Err((
                    d.device_key,
                    format!("device {} is used by another slot", d.device.display()),
                ));
            }
            slots.push(Slot {
                name: format!("{class}.{}", d.index),
                class: class.clone(),
                index: d.index,
                device: d.device,
                bootname: d.bootname,
                readonly: d.readonly,
                install_same: d.install_same,
                slot_type: d.slot_type,
            });
        }
    }
    Ok(slots)
}

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
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            path: file.to_path_buf(),
            source,
        })?;
        if file.extension().is_some_and(|e| e == "conf") {
            let origin = std::path::absolute(inside).map_err(|source| ConfigError::Read {
                path: file.to_path_buf(),
                source,
            })?;
            let (cfg, notices) = crate::config::rauc::parse_system_conf(&text, &origin)?;
            for n in &notices {
                log::debug!("config {}: {n}", origin.display());
            }
            return Ok(cfg);
        }
        Self::parse(&text, file)
    }

    /// Parses and validates config text; `origin` is only used in messages and kept as `path`.
    pub fn parse(text: &str, origin: &Path) -> Result<SystemConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_path_buf(),
            source,
        })?;
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            path: origin.to_path_buf(),
            key: key.to_string(),
            reason,
        };

        if raw.compatible.trim().is_empty() {
            return Err(invalid("compatible", "must not be empty".into()));
        }
        let min_signatures = raw.min_signatures.unwrap_or(1);
        if min_signatures < 1 {
            return Err(invalid("min-signatures", "must be at least 1".into()));
        }
        if raw.keyring.is_none() && raw.x509_keyring.is_none() {
            return Err(invalid(
                "keyring",
                "no keyring: set keyring (ed25519 keys) and/or [x509-keyring]".into(),
            ));
        }
        let data_dir = Some(raw.data_directory.clone());
        let x509_paths = raw.x509_keyring.iter().flat_map(|k| {
            [
                ("x509-keyring.path", &k.path),
                ("x509-keyring.directory", &k.directory),
            ]
        });
        for (key, p) in [
            ("keyring", &raw.keyring),
            ("data-directory", &data_dir),
            ("fw-env-config", &raw.fw_env_config),
            ("custom-backend", &raw.custom_backend),
        ]
        .into_iter()
        .chain(x509_paths)
        {
            let Some(p) = p else { continue };
            if !p.is_absolute() {
                return Err(invalid(
                    key,
                    format!("{} is not an absolute path", p.display()),
                ));
            }
        }
        match raw.bootloader {
            Bootloader::Grub => match &raw.grubenv {
                None => {
                    return Err(invalid(
                        "grubenv",
                        "required when bootloader = \"grub\"".into(),
                    ))
                }
                Some(p) if !p.is_absolute() => {
                    return Err(invalid(
                        "grubenv",
                        format!("{} is not an absolute path", p.display()),
                    ))
                }
                Some(_) => {}
            },
            Bootloader::Uboot => {}
            Bootloader::Custom => {
                if raw.custom_backend.is_none() {
                    return Err(invalid(
                        "custom-backend",
                        "required when bootloader = \"custom\"".into(),
                    ));
                }
            }
        }
        if let Some(k) = &raw.x509_keyring {
            validate_x509(k).map_err(|(key, reason)| invalid(&key, reason))?;
        }
        let boot_attempts = raw.boot_attempts.unwrap_or(DEFAULT_BOOT_ATTEMPTS);
        let boot_attempts_primary = raw.boot_attempts_primary.unwrap_or(DEFAULT_BOOT_ATTEMPTS);
        for (key, v) in [
            ("boot-attempts", boot_attempts),
            ("boot-attempts-primary", boot_attempts_primary),
        ] {
            if !(1..=255).contains(&v) {
                return Err(invalid(key, format!("{v} is not between 1 and 255")));
            }
        }

        raw.health
            .validate()
            .map_err(|(key, reason)| invalid(&key, reason))?;
        let update = raw
            .update
            .map(|u| UpdateConfig::from_raw(u, &raw.data_directory))
            .transpose()
            .map_err(|(key, reason)| invalid(&key, reason))?;

        let decls = raw
            .slot
            .into_iter()
            .flat_map(|(class, raw_slots)| {
                raw_slots
                    .into_iter()
                    .enumerate()
                    .map(move |(index, r)| SlotDecl {
                        device_key: format!("slot.{class}[{index}].device"),
                        bootname_key: format!("slot.{class}[{index}].bootname"),
                        class: class.clone(),
                        index,
                        device: r.device,
                        bootname: r.bootname,
                        readonly: false,
                        install_same: true,
                        slot_type: "raw".to_string(),
                    })
            })
            .collect();
        let slots = validate_slots(
            decls,
            |class| format!("slot.{class}"),
            "add [[slot.<class>]] tables",
        )
        .map_err(|(key, reason)| invalid(&key, reason))?;

        if raw.health.update_server
            && update
                .as_ref()
                .and_then(|u| u.channel_url.as_ref())
                .is_none()
        {
            return Err(invalid(
                "health.update-server",
                "needs [update] channel-url: the update server is the channel's host".into(),
            ));
        }
        Ok(SystemConfig {
            path: origin.to_path_buf(),
            compatible: raw.compatible,
            bootloader: raw.bootloader,
            grubenv: raw.grubenv,
            fw_env_config: raw
                .fw_env_config
                .unwrap_or_else(|| PathBuf::from(crate::host::paths::FW_ENV_CONFIG)),
            custom_backend: raw.custom_backend,
            boot_attempts,
            boot_attempts_primary,
            keyring: raw.keyring,
            x509_keyring: raw.x509_keyring,
            rauc_bundles: raw.rauc_bundles,
            format: ConfigFormat::Flipslot,
            min_signatures,
            data_dir: raw.data_directory,
            slots,
            health: raw.health,
            update,
            notices: Vec::new(),
        })
    }

    /// The slot called `name` (`class.index`).
    pub fn slot_by_name(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.name == name)
    }

    /// The slot the bootloader knows as `bootname`.
    pub fn slot_by_bootname(&self, bootname: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.bootname == bootname)
    }

    /// The slots of `class`, by index; empty when the class does not exist.
    pub fn slots_of_class(&self, class: &str) -> Vec<&Slot> {
        self.slots.iter().filter(|s| s.class == class).collect()
    }

    /// The configured classes, sorted by name.
    pub fn classes(&self) -> Vec<&str> {
        let mut classes: Vec<&str> = self.slots.iter().map(|s| s.class.as_str()).collect();
        classes.dedup();
        classes
    }

    /// Every configured bootname, in slot order.
    pub fn bootnames(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.bootname.clone()).collect()
    }

    /// Where the status file lives (`<data-directory>/status.json`), as a host path.
    pub fn status_path(&self) -> PathBuf {
        self.data_dir.join(STATUS_FILE_NAME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(cfg.bootloader, Bootloader::Grub);
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
