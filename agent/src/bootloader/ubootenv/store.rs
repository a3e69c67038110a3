//! Where the copies of a U-Boot environment live ([`EnvStore`]: files and block devices in
//! [`FwEnvStore`], memory in [`MemEnvStore`]) and the locked read-modify-write that every
//! change goes through ([`modify`]).
//!
//! A copy is written in place at its offset, in one write, then synced; a file is never
//! truncated or extended. With a redundant environment only the copy that is not current is
//! written (see the parent module), so an interrupted write leaves the old environment
//! valid. With a single environment an interrupted write loses it (U-Boot then falls back to
//! its built-in default): that is what redundancy is for.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::config::{EnvDevice, FwEnvConfig, MAX_CONFIG_SIZE};
use super::{decode, encode_copy, Decoded, FlagScheme, Layout, UbootEnv};
use crate::host::paths::Root;
use crate::host::sys::{self, LockGuard};

/// How long [`FwEnvStore`] waits for the lock file held by another writer.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The copies of one environment.
pub trait EnvStore {
    /// Single or redundant.
    fn layout(&self) -> Layout;
    /// Bytes per copy.
    fn env_size(&self) -> usize;
    /// The bytes of copy `copy` (exactly [`EnvStore::env_size`]).
    fn read_copy(&mut self, copy: usize) -> Result<Vec<u8>>;
    /// Overwrites copy `copy` in place and syncs it.
    fn write_copy(&mut self, copy: usize, bytes: &[u8]) -> Result<()>;
    /// Names the store in messages (config file and devices).
    fn describe(&self) -> String;
    /// Takes the lock shared with other writers, held until the guard drops.
    fn lock(&mut self) -> Result<Option<LockGuard>> {
        Ok(None)
    }
}

/// Reads and decodes every copy.
pub fn load<S: EnvStore + ?Sized>(store: &mut S) -> Result<Decoded> {
    let layout = store.layout();
    let size = store.env_size();
    let copies = (0..layout.copies())
        .map(|i| store.read_copy(i))
        .collect::<Result<Vec<_>>>()?;
    let decoded = decode(layout, size, &copies, FlagScheme::Incremental)
        .with_context(|| format!("cannot decode {}", store.describe()))?;
    if decoded.env.is_some() {
        for (i, c) in decoded.copies.iter().enumerate() {
            if !c.crc_ok {
                log::warn!(
                    "{}: copy {i} has a bad CRC; using copy {}",
                    store.describe(),
                    decoded.current
                );
            }
        }
    }
    Ok(decoded)
}

fn no_valid_copy<S: EnvStore + ?Sized>(store: &S) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: no environment copy has a valid CRC, so U-Boot runs on its built-in default \
         environment; save it once (saveenv in U-Boot, or fw_setenv with a default environment)",
        store.describe()
    )
}

/// The variables of the current copy; an error when no copy is valid.
pub fn read_env<S: EnvStore + ?Sized>(store: &mut S) -> Result<UbootEnv> {
    read_env_or(store, None)
}

/// The variables of the current copy, or `default_env` when no copy is valid (without
/// one, an error).
pub fn read_env_or<S: EnvStore + ?Sized>(
    store: &mut S,
    default_env: Option<&UbootEnv>,
) -> Result<UbootEnv> {
    match (load(store)?.env, default_env) {
        (Some(env), _) => Ok(env),
        (None, Some(default)) => Ok(default.clone()),
        (None, None) => Err(no_valid_copy(store)),
    }
}

/// Under the store's lock: loads the environment (or starts from `default_env` when no copy
/// is valid, as `fw_setenv -f` does), applies `change`, and writes the result when it
/// differs, in one write. Returns whether it wrote.
pub fn modify<S: EnvStore + ?Sized>(
    store: &mut S,
    default_env: Option<&UbootEnv>,
    change: impl FnOnce(&mut UbootEnv) -> Result<()>,
) -> Result<bool> {
    let _lock = store.lock()?;
    let decoded = load(store)?;
    let before = match (&decoded.env, default_env) {
        (Some(env), _) => env.clone(),
        (None, Some(default)) => {
            log::warn!(
                "{}: no valid copy; starting from the default environment",
                store.describe()
            );
            default.clone()
        }
        (None, None) => return Err(no_valid_copy(store)),
    };
    let mut after = before.clone();
    change(&mut after)?;
    if after == before {
        return Ok(false);
    }
    let (target, bytes) = decoded
        .next_write(&after)
        .with_context(|| format!("cannot encode {}", store.describe()))?;
    store.write_copy(target, &bytes)?;
    Ok(true)
}

/// A U-Boot environment on files or block devices, as described by `fw_env.config`.
#[derive(Debug, Clone)]
pub struct FwEnvStore {
    config: FwEnvConfig,
    lock_file: Option<PathBuf>,
}

impl FwEnvStore {
    /// A store for the devices of `config` (paths used as they are).
    pub fn new(config: FwEnvConfig) -> Self {
        FwEnvStore {
            config,
            lock_file: None,
        }
    }

    /// Reads the config at host path `config` under `root` and resolves its devices under
    /// `root` too.
    pub fn from_config_file(config: &Path, root: &Root) -> Result<Self> {
        let path = root.resolve(config);
        let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut text = String::new();
        file.take(MAX_CONFIG_SIZE + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if text.len() as u64 > MAX_CONFIG_SIZE {
            bail!("{} is larger than {MAX_CONFIG_SIZE} bytes", path.display());
        }
        let parsed = FwEnvConfig::parse(&text, &path)?;
        Ok(FwEnvStore::new(parsed.resolved(root)))
    }

    /// Takes `path` with an exclusive `flock` around every change, as libubootenv's
    /// `fw_setenv` does with its lock file.
    #[must_use]
    pub fn with_lock_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.lock_file = Some(path.into());
        self
    }

    /// The config, device paths as used.
    pub fn config(&self) -> &FwEnvConfig {
        &self.config
    }

    fn device(&self, copy: usize) -> Result<&EnvDevice> {
        self.config.devices.get(copy).with_context(|| {
            format!(
                "{}: no environment copy {copy}",
                self.config.origin.display()
            )
        })
    }
}

/// A hint for writes refused on an eMMC boot partition, which the kernel keeps read-only
/// (`force_ro`) unless unlocked.
fn emmc_boot_hint(path: &Path) -> &'static str {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    if name.starts_with("mmcblk") && name.contains("boot") {
        " (an eMMC boot partition is read-only until /sys/class/block/<dev>/force_ro is 0; \
         unlocking it is not supported yet)"
    } else {
        ""
    }
}

/// Opens `dev` and finds the absolute offset of its copy, checking it fits the device.
fn open_device(dev: &EnvDevice, write: bool) -> Result<(File, u64)> {
    let path = dev.path.display();
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .open(&dev.path)
        .with_context(|| {
            format!(
                "cannot open U-Boot environment device {path}{}",
                if write { emmc_boot_hint(&dev.path) } else { "" }
            )
        })?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat {path}"))?;
    let kind = meta.file_type();
    if kind.is_char_device() {
        bail!("{path}: character devices (MTD flash) are not supported yet");
    }
    let block = kind.is_block_device();
    if !block && !kind.is_file() {
        bail!("{path} is neither a file nor a block device");
    }
    let len = if block {
        sys::block_device_size(&file).with_context(|| format!("cannot get the size of {path}"))?
    } else {
        meta.len()
    };
    let offset = if let Ok(o) = u64::try_from(dev.offset) {
        o
    } else if block {
        len.checked_sub(dev.offset.unsigned_abs())
            .with_context(|| {
                format!(
                    "{path}: offset {} (line {}) is before the start of the {len}-byte device",
                    dev.offset, dev.line
                )
            })?
    } else {
        bail!(
            "{path}: a negative offset ({}, line {}) needs a block device",
            dev.offset,
            dev.line
        );
    };
    let end = offset.checked_add(dev.size as u64);
    if end.map_or(true, |end| end > len) {
        bail!(
            "{path}: the environment at offset {offset:#x} ({:#x} bytes) does not fit in its \
             {len} bytes",
            dev.size
        );
    }
    Ok((file, offset))
}

impl EnvStore for FwEnvStore {
    fn layout(&self) -> Layout {
        self.config.layout()
    }

    fn env_size(&self) -> usize {
        self.config.env_size()
    }

    fn read_copy(&mut self, copy: usize) -> Result<Vec<u8>> {
        let dev = self.device(copy)?;
        let (file, offset) = open_device(dev, false)?;
        let mut buf = vec![0; dev.size];
        file.read_exact_at(&mut buf, offset).with_context(|| {
            format!(
                "cannot read the U-Boot environment at offset {offset:#x} of {}",
                dev.path.display()
            )
        })?;
        Ok(buf)
    }

    fn write_copy(&mut self, copy: usize, bytes: &[u8]) -> Result<()> {
        let dev = self.device(copy)?;
        if bytes.len() != dev.size {
            bail!(
                "refusing to write {} bytes as a {}-byte environment to {}",
                bytes.len(),
                dev.size,
                dev.path.display()
            );
        }
        let (file, offset) = open_device(dev, true)?;
        let path = dev.path.display();
        file.write_all_at(bytes, offset).with_context(|| {
            format!(
                "cannot write the U-Boot environment at offset {offset:#x} of {path}{}",
                emmc_boot_hint(&dev.path)
            )
        })?;
        file.sync_all()
            .with_context(|| format!("cannot sync {path}"))?;
        log::debug!("wrote U-Boot environment copy {copy} at offset {offset:#x} of {path}");
        Ok(())
    }

    fn describe(&self) -> String {
        let devices: Vec<String> = self
            .config
            .devices
            .iter()
            .map(|d| format!("{}@{:#x}", d.path.display(), d.offset))
            .collect();
        format!(
            "U-Boot environment {} ({})",
            devices.join(" + "),
            self.config.origin.display()
        )
    }

    fn lock(&mut self) -> Result<Option<LockGuard>> {
        let Some(path) = &self.lock_file else {
            return Ok(None);
        };
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match sys::lock_exclusive(path) {
                Ok(guard) => return Ok(Some(guard)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        bail!(
                            "the U-Boot environment lock {} is still held after {} s",
                            path.display(),
                            LOCK_WAIT.as_secs()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot take the U-Boot environment lock {}", path.display())
                    })
                }
            }
        }
    }
}

/// An environment in memory: for tests and tools.
#[derive(Debug, Clone)]
pub struct MemEnvStore {
    /// Single or redundant.
    pub layout: Layout,
    /// The copies (all the same length).
    pub copies: Vec<Vec<u8>>,
    /// The copy index of every write, in order.
    pub writes: Vec<usize>,
}

impl MemEnvStore {
    /// A store holding `copies` as they are.
    pub fn new(layout: Layout, copies: Vec<Vec<u8>>) -> Self {
        MemEnvStore {
            layout,
            copies,
            writes: Vec::new(),
        }
    }

    /// A store of `size`-byte copies holding `env`: the only copy, or copy 0 with flag 1
    /// and an erased (all `0xff`, invalid) copy 1.
    pub fn with_env(layout: Layout, size: usize, env: &UbootEnv) -> Result<Self> {
        let mut copies = vec![encode_copy(layout, size, env, 1)?];
        if layout == Layout::Redundant {
            copies.push(vec![0xff; size]);
        }
        Ok(MemEnvStore::new(layout, copies))
    }

    /// The variables of the current copy.
    pub fn env(&mut self) -> Result<UbootEnv> {
        read_env(self)
    }
}

impl EnvStore for MemEnvStore {
    fn layout(&self) -> Layout {
        self.layout
    }

    fn env_size(&self) -> usize {
        self.copies.first().map_or(0, Vec::len)
    }

    fn read_copy(&mut self, copy: usize) -> Result<Vec<u8>> {
        self.copies
            .get(copy)
            .cloned()
            .with_context(|| format!("memory environment has no copy {copy}"))
    }

    fn write_copy(&mut self, copy: usize, bytes: &[u8]) -> Result<()> {
        let slot = self
            .copies
            .get_mut(copy)
            .with_context(|| format!("memory environment has no copy {copy}"))?;
        if slot.len() != bytes.len() {
            bail!("refusing to change the size of memory environment copy {copy}");
        }
        slot.copy_from_slice(bytes);
        self.writes.push(copy);
        Ok(())
    }

    fn describe(&self) -> String {
        "memory environment".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> UbootEnv {
        let mut e = UbootEnv::new();
        for (n, v) in vars {
            e.set(n, v).unwrap();
        }
        e
    }

    #[test]
    fn modify_writes_alternating_copies() {
        let mut s = MemEnvStore::with_env(Layout::Redundant, 128, &env(&[("a", "1")])).unwrap();
        assert!(modify(&mut s, None, |e| e.set("a", "2").map_err(Into::into)).unwrap());
        assert!(modify(&mut s, None, |e| e.set("a", "3").map_err(Into::into)).unwrap());
        assert_eq!(s.writes, [1, 0]);
        assert_eq!(s.copies[0][4], 3);
        assert_eq!(s.copies[1][4], 2);
        assert_eq!(s.env().unwrap().get("a").as_deref(), Some("3"));
        // No change, no write.
        assert!(!modify(&mut s, None, |e| e.set("a", "3").map_err(Into::into)).unwrap());
        assert_eq!(s.writes.len(), 2);
        // A failing change writes nothing.
        assert!(modify(&mut s, None, |_| bail!("no")).is_err());
        assert_eq!(s.writes.len(), 2);
    }

    #[test]
    fn invalid_env_needs_a_default() {
        let mut s = MemEnvStore::new(Layout::Single, vec![vec![0xff; 64]]);
        let e = format!("{:#}", s.env().unwrap_err());
        assert!(
            e.contains("memory environment") && e.contains("default"),
            "{e}"
        );
        let e = modify(&mut s, None, |e| e.set("x", "1").map_err(Into::into)).unwrap_err();
        assert!(e.to_string().contains("valid CRC"), "{e}");
        assert!(s.writes.is_empty());
        let default = env(&[("bootcmd", "run it")]);
        assert!(modify(&mut s, Some(&default), |e| e
            .set("x", "1")
            .map_err(Into::into))
        .unwrap());
        let got = s.env().unwrap();
        assert_eq!(got.get("bootcmd").as_deref(), Some("run it"));
        assert_eq!(got.get("x").as_deref(), Some("1"));
    }

    fn file_store(dir: &Path, cfg: &str) -> FwEnvStore {
        let cfg_path = dir.join("fw_env.config");
        std::fs::write(&cfg_path, cfg).unwrap();
        FwEnvStore::from_config_file(&cfg_path, &Root::host()).unwrap()
    }

    #[test]
    fn file_store_two_offsets_in_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("env.bin");
        std::fs::write(&f, vec![0u8; 0x3000]).unwrap();
        let mut s = file_store(
            dir.path(),
            &format!("{0} 0x1000 0x1000\n{0} 0x2000 0x1000\n", f.display()),
        )
        .with_lock_file(dir.path().join("lock"));
        assert_eq!(s.layout(), Layout::Redundant);
        let default = env(&[("bootcmd", "boot")]);
        modify(&mut s, Some(&default), |e| {
            e.set("k", "v").map_err(Into::into)
        })
        .unwrap();
        let bytes = std::fs::read(&f).unwrap();
        assert_eq!(bytes.len(), 0x3000, "never extended");
        assert!(bytes[..0x2000].iter().all(|&b| b == 0), "copy 0 untouched");
        assert_eq!(bytes[0x2004], 1, "flag 0 + 1");
        assert_eq!(&bytes[0x2005..0x2018], b"bootcmd=boot\0k=v\0\0\0");
        assert_eq!(read_env(&mut s).unwrap().get("k").as_deref(), Some("v"));
        assert!(
            s.describe().contains("env.bin@0x1000 + "),
            "{}",
            s.describe()
        );
    }

    #[test]
    fn file_store_errors_name_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("env.bin");
        std::fs::write(&f, vec![0u8; 0x100]).unwrap();
        let fs = f.display().to_string();
        let mut s = file_store(dir.path(), &format!("{fs} 0x80 0x100\n"));
        let e = format!("{:#}", s.read_copy(0).unwrap_err());
        assert!(e.contains(&fs) && e.contains("does not fit"), "{e}");
        let e = format!("{:#}", s.write_copy(0, &[0; 0x100]).unwrap_err());
        assert!(e.contains("does not fit"), "{e}");
        assert_eq!(std::fs::read(&f).unwrap().len(), 0x100);

        let mut s = file_store(dir.path(), &format!("{fs} -0x80 0x80\n"));
        let e = format!("{:#}", s.read_copy(0).unwrap_err());
        assert!(e.contains("negative offset") && e.contains("line 1"), "{e}");

        let mut s = file_store(
            dir.path(),
            &format!("{}/missing 0 0x80\n", dir.path().display()),
        );
        let e = format!("{:#}", s.read_copy(0).unwrap_err());
        assert!(e.contains("missing"), "{e}");
        assert!(s.read_copy(1).is_err());

        let mut s = file_store(dir.path(), &format!("{fs} 0 0x80\n"));
        let e = format!("{:#}", s.write_copy(0, &[0; 0x10]).unwrap_err());
        assert!(e.contains("refusing"), "{e}");

        let e = format!(
            "{:#}",
            FwEnvStore::from_config_file(&dir.path().join("nope"), &Root::host()).unwrap_err()
        );
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn char_devices_are_refused() {
        let dev = EnvDevice {
            path: PathBuf::from("/dev/null"),
            offset: 0,
            size: 16,
            sector_size: None,
            sectors: None,
            line: 1,
        };
        let e = format!("{:#}", open_device(&dev, false).unwrap_err());
        assert!(e.contains("not supported yet"), "{e}");
        assert!(emmc_boot_hint(Path::new("/dev/mmcblk0boot1")).contains("force_ro"));
        assert_eq!(emmc_boot_hint(Path::new("/dev/mmcblk0p1")), "");
    }

    #[test]
    fn config_resolved_under_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("dev")).unwrap();
        std::fs::write(dir.path().join("etc/fw_env.config"), "/dev/env 0 0x40\n").unwrap();
        std::fs::write(
            dir.path().join("dev/env"),
            encode_copy(Layout::Single, 0x40, &env(&[("a", "b")]), 0).unwrap(),
        )
        .unwrap();
        let mut s =
            FwEnvStore::from_config_file(Path::new("/etc/fw_env.config"), &Root::new(dir.path()))
                .unwrap();
        assert_eq!(s.config().devices[0].path, dir.path().join("dev/env"));
        assert_eq!(read_env(&mut s).unwrap().get("a").as_deref(), Some("b"));
        // Oversized configs are refused before parsing.
        std::fs::write(
            dir.path().join("etc/fw_env.config"),
            "#".repeat(MAX_CONFIG_SIZE as usize + 1),
        )
        .unwrap();
        let e =
            FwEnvStore::from_config_file(Path::new("/etc/fw_env.config"), &Root::new(dir.path()))
                .unwrap_err();
        assert!(e.to_string().contains("larger"), "{e}");
    }
}
