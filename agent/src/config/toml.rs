//! flipslot's own `system.toml`: parsed with serde into raw structs, then validated into
//! a [`SystemConfig`] (pure).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::health::HealthConfig;
use crate::config::model::{
    validate_slots, validate_x509, BootloaderKind, ConfigError, ConfigFormat, RaucBundlePolicy,
    SlotDecl, SystemConfig, X509Keyring, DEFAULT_BOOT_ATTEMPTS,
};
use crate::config::update::{RawUpdateConfig, UpdateConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    compatible: String,
    bootloader: BootloaderKind,
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

/// Parses and validates `system.toml` text; `origin` is only used in messages and kept as
/// `path`.
pub fn parse(text: &str, origin: &Path) -> Result<SystemConfig, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError::Parse {
        path: origin.to_path_buf(),
        error,
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
        BootloaderKind::Grub => match &raw.grubenv {
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
        BootloaderKind::Uboot => {}
        BootloaderKind::Custom => {
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
