//! `flipslot-image provision`: the provisioning set a network-booted machine is built from,
//! made from the same layout file as a disk image ([`crate::disk`]).
//!
//! [`build_provision`] writes two files into an output directory:
//!
//! - [`ESP_FILE`] (`esp.img`): the ESP as a FAT image of the esp partition's size, built
//!   exactly as the disk builder builds it ([`crate::disk::esp::GrubEsp`]: GRUB's
//!   `BOOTX64.EFI`, the layout's `grub.cfg`, and an initial `grubenv` whose `ORDER` is the
//!   slots in layout order, the first slot `OK=1`, the others `OK=1` too with
//!   `--write-all-slots` (they are all written) and `OK=0` otherwise).
//! - [`DESCRIPTION_FILE`] (`provision.json`): the signed description
//!   ([`flipslot_format::provision`]) naming `esp.img` with its size and SHA-256, the
//!   partitions of the layout (`size = "rest"` as the rest of the disk), the target rule,
//!   the files of `--data-dir` for the data partition with `from = "dir"` ([`data`]) and the
//!   layout's `status-file`.
//!
//! Both are written atomically ([`flipslot_os::fs`]). The same layout, data directory,
//! options, keys, timestamp and tool versions give byte-identical files: the FAT's volume
//! id derives from the ESP's contents, and every time on it is the timestamp
//! (`SOURCE_DATE_EPOCH`, else 0, stamped as 1980-01-01 as FAT cannot hold earlier times).
//! The description is validated and signed once before the ESP is built, so a bad option,
//! key or data directory fails before anything is written.

pub mod data;

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::disk::esp::GrubEsp;
use crate::disk::layout::{DataFs, Layout, Partition, Role};
use crate::disk::write::{copy_file_into, io_err, ScratchDir};
use crate::disk::{self, grub, DiskError, DEFAULT_GRUB_DIR, ESP_PROGRAMS};
use crate::mkfs;
use ed25519_dalek::SigningKey;
use flipslot_format::digest::Sha256Digest;
use flipslot_format::keys::key_id;
use flipslot_format::provision::{
    sign_provision, DataFile, EspImage, PartitionRole, PartitionSpec, Provision,
    ProvisionBootloader, ProvisionError, TargetRule, PROVISION_FORMAT,
};
use flipslot_os::fs::{AtomicFile, AtomicWriteError};
use sha2::{Digest as _, Sha256};

/// The signed description's file name in the output directory.
pub const DESCRIPTION_FILE: &str = "provision.json";
/// The ESP image's file name in the output directory (the description's `esp.file`).
pub const ESP_FILE: &str = "esp.img";

/// Why building the provisioning set failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    /// The layout, the tools, the ESP build or a file operation failed.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A file of the data directory cannot go into the description.
    #[error("data file {path}: {reason}")]
    DataFile {
        /// The file on the host.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The description breaks a rule or cannot be signed.
    #[error(transparent)]
    Description(#[from] ProvisionError),
}

/// What [`build_provision`] needs besides the layout and the keys.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// The directory receiving [`DESCRIPTION_FILE`] and [`ESP_FILE`] (created if missing).
    pub out_dir: PathBuf,
    /// The description's compatible string (the bundle's must equal it).
    pub compatible: String,
    /// Which disk a machine may provision.
    pub target: TargetRule,
    /// Whether every slot receives the bundle's image (and is `OK=1` in the grubenv).
    pub write_all_slots: bool,
    /// The directory whose files go into the data partition with `from = "dir"`.
    pub data_dir: Option<PathBuf>,
    /// Every time on the ESP (seconds since 1970): `SOURCE_DATE_EPOCH`, else 0.
    pub timestamp: u64,
    /// The x86_64-efi GRUB module directory.
    pub grub_dir: PathBuf,
}

impl PackOptions {
    /// Options writing into `out_dir` for `compatible` with `target`, without a data
    /// directory, first slot only, timestamp 0 and [`DEFAULT_GRUB_DIR`].
    pub fn new(out_dir: impl Into<PathBuf>, compatible: &str, target: TargetRule) -> Self {
        PackOptions {
            out_dir: out_dir.into(),
            compatible: compatible.to_string(),
            target,
            write_all_slots: false,
            data_dir: None,
            timestamp: 0,
            grub_dir: PathBuf::from(DEFAULT_GRUB_DIR),
        }
    }
}

/// What [`build_provision`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackSummary {
    /// The signed description.
    pub description: PathBuf,
    /// The ESP image.
    pub esp_image: PathBuf,
    /// What the description says.
    pub provision: Provision,
    /// Key ids of the signers, each once.
    pub signed_by: Vec<String>,
    /// The time stamped on the ESP.
    pub timestamp: u64,
    /// Whether the ESP is reproducible (the installed mkfs.vfat has `--invariant`).
    pub reproducible: bool,
}

/// Builds the provisioning set for `layout` (read with
/// [`LayoutKind::Provisioning`](crate::disk::layout::LayoutKind::Provisioning)) into
/// `opts.out_dir`, signing the description with `keys`.
pub fn build_provision(
    layout: &Layout,
    keys: &[SigningKey],
    opts: &PackOptions,
) -> Result<PackSummary, PackError> {
    let Some(esp_part) = layout.esp() else {
        return Err(layout_err(layout, "no esp".into()).into());
    };
    check_data_partitions(layout)?;
    disk::check_data_dir(layout, opts.data_dir.as_deref())?;
    let data_files = match (&opts.data_dir, wants_data_dir(layout)) {
        (Some(dir), true) => data::collect_data_files(dir)?,
        _ => Vec::new(),
    };
    // Everything but the ESP's digest is known: signing it now checks the rules, the keys
    // and the size limit (the digest does not change the length) before anything is built.
    let mut provision = description(layout, opts, data_files, Sha256Digest::default());
    sign_provision(&provision, keys)?;
    disk::check_programs(&ESP_PROGRAMS, &opts.grub_dir)?;

    let out_dir = &opts.out_dir;
    std::fs::create_dir_all(out_dir).map_err(io_err("create", out_dir))?;
    let scratch = ScratchDir::create(out_dir.join(format!(".provision-{}.d", std::process::id())))?;
    let env = grub::initial_env_for(layout, opts.write_all_slots);
    let esp = GrubEsp {
        layout,
        part: esp_part,
        env: &env,
        grub_dir: &opts.grub_dir,
        volume_id: volume_id(layout, &env)?,
        timestamp: opts.timestamp,
    };
    let image = scratch.path().join("esp.fat");
    let reproducible = esp.build(&image, scratch.path())?;
    let (size, sha256) = hash_file(&image)?;
    let esp_image = out_dir.join(ESP_FILE);
    write_esp_image(&image, &esp_image, size)?;
    provision.esp.size = size;
    provision.esp.sha256 = sha256;

    let bytes = sign_provision(&provision, keys)?;
    let path = out_dir.join(DESCRIPTION_FILE);
    flipslot_os::fs::atomic_write(&path, &bytes).map_err(atomic_err)?;
    let mut signed_by: Vec<String> = Vec::new();
    for k in keys {
        let id = key_id(&k.verifying_key()).to_string();
        if !signed_by.contains(&id) {
            signed_by.push(id);
        }
    }
    Ok(PackSummary {
        description: path,
        esp_image,
        provision,
        signed_by,
        timestamp: opts.timestamp,
        reproducible,
    })
}

/// The description of `layout` with `opts`, the data files and the ESP's digest.
fn description(
    layout: &Layout,
    opts: &PackOptions,
    data_files: Vec<DataFile>,
    esp_sha256: Sha256Digest,
) -> Provision {
    let esp_size = layout.esp().map_or(0, |p| p.size);
    Provision {
        format: PROVISION_FORMAT,
        compatible: opts.compatible.clone(),
        target: opts.target.clone(),
        bootloader: ProvisionBootloader::GrubEfi,
        esp: EspImage {
            file: ESP_FILE.into(),
            size: esp_size,
            sha256: esp_sha256,
        },
        partitions: layout.partitions.iter().map(partition_spec).collect(),
        write_all_slots: opts.write_all_slots,
        data_files,
        status_file: layout.partitions.iter().find_map(|p| p.status_file.clone()),
    }
}

/// A layout partition as the description lists it (the role's default type GUID).
fn partition_spec(p: &Partition) -> PartitionSpec {
    let (role, class, bootname) = match &p.role {
        Role::Esp => (PartitionRole::Esp, None, None),
        Role::Slot { class, bootname } => (
            PartitionRole::Slot,
            Some(class.clone()),
            Some(bootname.clone()),
        ),
        Role::Data { .. } => (PartitionRole::Data, None, None),
    };
    PartitionSpec {
        label: p.label.clone(),
        role,
        size: (!p.rest).then_some(p.size),
        type_guid: None,
        class,
        bootname,
    }
}

/// Provisioning makes the data partition ext4: `fs = "none"` has no place here.
fn check_data_partitions(layout: &Layout) -> Result<(), DiskError> {
    match layout
        .partitions
        .iter()
        .find(|p| p.role == Role::Data { fs: DataFs::None })
    {
        Some(p) => Err(layout_err(
            layout,
            format!(
                "partition {} ({:?}) has fs = \"none\": flipslot provision makes the data \
                 partition ext4",
                p.number, p.label
            ),
        )),
        None => Ok(()),
    }
}

/// Whether a data partition takes the data directory (`from = "dir"`).
fn wants_data_dir(layout: &Layout) -> bool {
    layout.partitions.iter().any(|p| {
        p.role
            == Role::Data {
                fs: DataFs::Ext4 { from_dir: true },
            }
    })
}

fn layout_err(layout: &Layout, reason: String) -> DiskError {
    DiskError::Layout {
        origin: layout.origin.clone(),
        reason,
    }
}

fn atomic_err(e: AtomicWriteError) -> DiskError {
    DiskError::Io {
        action: e.op,
        path: e.path,
        source: e.source,
    }
}

/// The FAT volume id: from SHA-256 of what goes on the ESP besides GRUB itself (the
/// `grub.cfg` and the `grubenv`), so a different layout gets a different id and the same
/// one the same id.
fn volume_id(layout: &Layout, env: &[(String, String)]) -> Result<u32, DiskError> {
    let mut seed = b"flipslot-provision/esp/".to_vec();
    seed.extend_from_slice(grub::grub_cfg(layout).as_bytes());
    seed.extend_from_slice(&grub::grubenv_block(env)?);
    let uuid = mkfs::uuid_from_seed(&seed);
    Ok(u32::from_be_bytes([uuid[0], uuid[1], uuid[2], uuid[3]]))
}

/// Copies the FAT image `image` (`size` bytes) to `out`, atomically and sparsely.
fn write_esp_image(image: &Path, out: &Path, size: u64) -> Result<(), DiskError> {
    if let Ok(meta) = out.symlink_metadata() {
        if !meta.is_file() {
            return Err(DiskError::Io {
                action: "replace".into(),
                path: out.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "it exists and is not a regular file",
                ),
            });
        }
    }
    let file = AtomicFile::create(out).map_err(atomic_err)?;
    let tmp = file.temp_path().to_path_buf();
    file.as_file()
        .set_len(size)
        .map_err(io_err("set the size of", &tmp))?;
    copy_file_into(file.as_file(), &tmp, 0, image, size)?;
    file.commit().map_err(atomic_err)
}

/// The length and SHA-256 of the file at `path`.
pub fn hash_file(path: &Path) -> Result<(u64, Sha256Digest), DiskError> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("read", path)(e)),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, Sha256Digest::from(hasher)))
}

/// How the ESP image next to a description compares with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EspImageCheck {
    /// The file has the signed size and SHA-256.
    Matches,
    /// There is no such file next to the description.
    Missing,
    /// The file differs; the text says how.
    Differs(String),
}

/// Compares the ESP image the description `p` at `description` names (in the same
/// directory) with its signed size and SHA-256.
pub fn check_esp_image(description: &Path, p: &Provision) -> Result<EspImageCheck, DiskError> {
    let path = description
        .parent()
        .unwrap_or(Path::new("."))
        .join(&p.esp.file);
    if !path.exists() {
        return Ok(EspImageCheck::Missing);
    }
    let (size, sha256) = hash_file(&path)?;
    Ok(if size != p.esp.size {
        EspImageCheck::Differs(format!(
            "{} is {size} bytes, the description says {}",
            path.display(),
            p.esp.size
        ))
    } else if sha256 != p.esp.sha256 {
        EspImageCheck::Differs(format!(
            "{} has SHA-256 {sha256}, the description says {}",
            path.display(),
            p.esp.sha256
        ))
    } else {
        EspImageCheck::Matches
    })
}

#[cfg(test)]
mod tests;
