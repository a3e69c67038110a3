//! The validated configuration model both file formats produce: slots, bootloader,
//! keyrings, the `[health]` and `[update]` sections, and the slot checks every format
//! shares ([`validate_slots`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::health::HealthConfig;
use crate::config::update::UpdateConfig;
use crate::host::paths::STATUS_FILE_NAME;

/// Errors from reading or validating the system configuration.
///
/// Each message is complete on its own: a read or parse error carries the I/O, TOML or
/// key-file error in its text (which names the line and key) and has no `source`, so a
/// config error reads the same whether it is shown alone (`{}`) or as the last link of
/// an error chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {error}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (unknown key, wrong type,
    /// missing required key, unsupported bootloader).
    #[error("cannot parse config {path}: {error}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The TOML error; it names the key and line.
        error: toml::de::Error,
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
    #[error("cannot parse RAUC config {path}: {error}")]
    KeyFile {
        /// The config file.
        path: PathBuf,
        /// The key-file error; it names the line.
        error: flipslot_rauc::keyfile::KeyFileError,
    },
    /// A RAUC `system.conf` sets keys flipslot cannot honor or does not know; every one is
    /// listed, each by group, key and line.
    #[error(
        "cannot use RAUC config {path}: {} setting(s) flipslot cannot honor:{}",
        problems.len(),
        list_findings(problems)
    )]
    RaucUnsupported {
        /// The config file.
        path: PathBuf,
        /// What is refused and why.
        problems: Vec<Finding>,
    },
}

/// The bootloader whose environment carries the A/B state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootloaderKind {
    /// GRUB with RAUC-style `ORDER` / `<bootname>_OK` / `<bootname>_TRY` variables in a grubenv file.
    Grub,
    /// U-Boot with RAUC-style `BOOT_ORDER` / `BOOT_<bootname>_LEFT` variables, its
    /// environment read and written natively as `fw_env.config` describes it.
    Uboot,
    /// An executable speaking RAUC's custom backend protocol (`get-primary`, …).
    Custom,
}

impl BootloaderKind {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            BootloaderKind::Grub => "grub",
            BootloaderKind::Uboot => "uboot",
            BootloaderKind::Custom => "custom",
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
    pub bootloader: BootloaderKind,
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

/// A key (or group) of the file and something about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The group's name as written.
    pub group: String,
    /// The key, or `None` when it is about the whole group.
    pub key: Option<String>,
    /// 1-based line.
    pub line: usize,
    /// What flipslot does or why it cannot.
    pub message: String,
}

/// A warning about a key that was read but has no effect.
pub type Notice = Finding;

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(f, "[{}] {k} (line {})", self.group, self.line)?,
            None => write!(f, "[{}] (line {})", self.group, self.line)?,
        }
        write!(f, ": {}", self.message)
    }
}

/// The findings as an indented list, one per line (for error messages).
pub(crate) fn list_findings(findings: &[Finding]) -> String {
    findings.iter().map(|f| format!("\n  {f}")).collect()
}
