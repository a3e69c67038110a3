//! The signed provisioning description (`provision.json`): how `flipslot provision` turns a
//! blank disk into an A/B flipslot machine (which disk it may take, the partition table,
//! the ESP image to write, which slots to fill, the files of the data partition), signed
//! with the same ed25519 keys as bundles so that a hostile network cannot change any of it.
//!
//! The file is a signed envelope ([`crate::envelope`]) whose `payload` is the exact signed
//! text of a [`Provision`]:
//!
//! ```text
//! {"format":1,
//!  "payload":"{\"format\":1,\"compatible\":\"acme-box\",\"target\":{...},...}",
//!  "signatures":[{"key_id":"<16 hex>","signature":"<128 hex>"}]}
//! ```
//!
//! Each signature is ed25519 over [`PROVISION_SIGNATURE_DOMAIN`] followed by the payload's
//! UTF-8 bytes, a domain of its own: a signed channel or bundle manifest can never pass as a
//! provisioning description. [`verify_provision`] bounds the size ([`MAX_PROVISION_LEN`]),
//! parses only the envelope, checks the signatures against a keyring, and only then parses
//! the payload (unknown fields refused) and checks every rule of [`Provision::validate`].
//! Like the rest of this crate it does no I/O. `docs/provisioning.md` specifies the fields,
//! the rules and what a hostile network can and cannot do.

mod validate;

pub use validate::{valid_bootname, valid_guid, valid_label, valid_relative_path};

use crate::digest::Sha256Digest;
use crate::envelope::{EnvelopeError, EnvelopeKind};
use crate::keys::Keyring;
use crate::reader::VerifyPolicy;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

/// Domain-separation prefix of the signed message (distinct from the channel's and the
/// bundle manifest's).
pub const PROVISION_SIGNATURE_DOMAIN: &[u8] = b"flipslot provision v1\0";
/// Largest description file accepted (and written): 1 MiB; checked before any parsing.
pub const MAX_PROVISION_LEN: usize = 1 << 20;
/// Format number of the envelope and of the payload written and read by this library.
pub const PROVISION_FORMAT: u32 = 1;
/// Most partitions a description lists.
pub const MAX_PARTITIONS: usize = 16;
/// Most files a description writes into the data partition.
pub const MAX_DATA_FILES: usize = 256;
/// Longest partition label (GPT names hold 36 UTF-16 units).
pub const MAX_LABEL_LEN: usize = 36;
/// Longest bootname.
pub const MAX_BOOTNAME_LEN: usize = 32;
/// Longest `by_id` glob and `serial`, in bytes.
pub const MAX_TARGET_TEXT_LEN: usize = 255;
/// Partition sizes and the ESP image's size are multiples of this.
pub const SIZE_ALIGN: u64 = 4096;
/// Largest file mode of a data file (permission and set-id/sticky bits).
pub const MAX_MODE: u32 = 0o7777;
/// GPT type GUID of an EFI system partition, the default for role `esp`.
pub const ESP_TYPE_GUID: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// GPT type GUID of Linux filesystem data, the default for roles `slot` and `data`.
pub const LINUX_TYPE_GUID: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// The provisioning description's kind of envelope.
const PROVISION_ENVELOPE: EnvelopeKind = EnvelopeKind {
    domain: PROVISION_SIGNATURE_DOMAIN,
    format: PROVISION_FORMAT,
    max_len: MAX_PROVISION_LEN,
};

/// The signed content of a provisioning description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Provision {
    /// Payload format number, 1.
    pub format: u32,
    /// The system kind; the bundle's compatible string must equal it.
    pub compatible: String,
    /// Which disk may be provisioned.
    pub target: TargetRule,
    /// The bootloader the ESP image holds.
    pub bootloader: ProvisionBootloader,
    /// The ESP image written into the `esp` partition.
    pub esp: EspImage,
    /// The partition table, in GPT order (partition number = position + 1).
    pub partitions: Vec<PartitionSpec>,
    /// Also write the bundle's image into every other slot (each a fallback from the first
    /// boot); otherwise only the first slot is written.
    pub write_all_slots: bool,
    /// Files written into the data partition's new filesystem.
    pub data_files: Vec<DataFile>,
    /// Path inside the data partition of the factory status record (the agent's status
    /// file), if one is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_file: Option<String>,
}

/// Which disk a description may be written to. The agent considers only whole disks that
/// pass every given filter, then picks one by `select`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct TargetRule {
    /// How to pick among the disks that pass the filters.
    pub select: DiskSelect,
    /// A glob over the disk's names in `/dev/disk/by-id` (`*` and `?`), e.g.
    /// `nvme-Samsung_SSD_980_*`: printable ASCII without spaces or `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_id: Option<String>,
    /// The disk's serial number, exactly: printable ASCII.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Whether a disk that already holds data (a partition table, a filesystem) may be
    /// overwritten when the operator asks for it (`--wipe`). Without it, such a disk is
    /// never written.
    pub allow_wipe: bool,
}

/// How the agent picks one disk among those the filters allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskSelect {
    /// The smallest disk.
    Smallest,
    /// The largest disk.
    Largest,
    /// The only disk; more than one is an error.
    Only,
}

/// The bootloader of a provisioned machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProvisionBootloader {
    /// GRUB for x86_64 UEFI with a RAUC-style grubenv, as `flipslot-image disk` installs it.
    GrubEfi,
}

/// The ESP image: a FAT filesystem image fetched next to the description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct EspImage {
    /// File name, resolved against the description's location: 1 to 255 of
    /// `A-Z a-z 0-9 . _ -`, no `/`, not `.` or `..`.
    pub file: String,
    /// Exact length in bytes: positive, a multiple of 4096, at most the esp partition's size.
    pub size: u64,
    /// SHA-256 of the file.
    pub sha256: Sha256Digest,
}

/// What a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionRole {
    /// The EFI system partition, which receives the ESP image.
    Esp,
    /// An A/B slot.
    Slot,
    /// The data partition: a new ext4 filesystem with the data files.
    Data,
}

impl PartitionRole {
    /// `esp`, `slot` or `data`, as written.
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionRole::Esp => "esp",
            PartitionRole::Slot => "slot",
            PartitionRole::Data => "data",
        }
    }
}

/// One partition of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct PartitionSpec {
    /// GPT name (PARTLABEL): 1 to 36 of `A-Z a-z 0-9 . _ -`, unique.
    pub label: String,
    /// What it is for.
    pub role: PartitionRole,
    /// Size in bytes (a positive multiple of 4096), or `None`: the rest of the disk (the
    /// last partition only).
    pub size: Option<u64>,
    /// GPT type GUID; `None` is the role's default ([`PartitionSpec::type_guid`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_guid: Option<String>,
    /// Slots: the class, matched against the bundle's image class (all slots share it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Slots: the bootname (`ORDER`, `<bn>_OK`, `<bn>_TRY`), unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootname: Option<String>,
}

impl PartitionSpec {
    /// The GPT type GUID: the one given, or by role [`ESP_TYPE_GUID`] for the ESP and
    /// [`LINUX_TYPE_GUID`] for slots and data.
    pub fn type_guid(&self) -> &str {
        match (&self.type_guid, self.role) {
            (Some(g), _) => g,
            (None, PartitionRole::Esp) => ESP_TYPE_GUID,
            (None, PartitionRole::Slot | PartitionRole::Data) => LINUX_TYPE_GUID,
        }
    }
}

/// One file written into the data partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct DataFile {
    /// Path relative to the partition's root, e.g. `flipslot/system.toml`: components of
    /// `A-Z a-z 0-9 . _ -`, not `.` or `..`; directories are created as needed.
    pub path: String,
    /// Permission bits, at most `0o7777`.
    pub mode: u32,
    /// The file's text.
    pub contents: String,
}

/// Everything that can go wrong with a provisioning description, in the order
/// [`verify_provision`] checks for it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The envelope is too large, malformed, unsigned, or its signatures do not satisfy the
    /// keyring and policy (or it cannot be signed); nothing of the payload was parsed.
    #[error("provisioning description: {0}")]
    Envelope(#[from] EnvelopeError),
    /// The signatures verify, but the payload is not JSON of the expected shape (an unknown
    /// field included).
    #[error("provisioning description cannot be parsed: {0}")]
    Syntax(String),
    /// The payload breaks a rule; the text names the field, partition or file.
    #[error("invalid provisioning description: {0}")]
    Invalid(String),
}

/// Signs a description with each key and returns the file's bytes. The description is
/// validated first, so an invalid one is never signed. The output is deterministic: the
/// same description and keys give the same bytes. A key given twice signs once.
pub fn sign_provision(p: &Provision, keys: &[SigningKey]) -> Result<Vec<u8>, ProvisionError> {
    p.validate()?;
    Ok(PROVISION_ENVELOPE.sign(p, keys)?)
}

/// Verifies a description file, in this order: size bound ([`MAX_PROVISION_LEN`]),
/// envelope parse, signatures over [`PROVISION_SIGNATURE_DOMAIN`] || payload against
/// `keyring` and `policy`, payload parse, then [`Provision::validate`]. Nothing of the
/// payload is parsed before its signatures verify.
pub fn verify_provision(
    bytes: &[u8],
    keyring: &Keyring,
    policy: &VerifyPolicy,
) -> Result<Provision, ProvisionError> {
    let payload = PROVISION_ENVELOPE.verify(bytes, keyring, policy)?;
    let p: Provision = serde_json::from_str(&payload)
        .map_err(|e| ProvisionError::Syntax(format!("payload: {e}")))?;
    p.validate()?;
    Ok(p)
}

impl Provision {
    /// The ESP's entry.
    ///
    /// # Panics
    ///
    /// When there is no `esp` partition; a validated description has exactly one.
    pub fn esp_partition(&self) -> &PartitionSpec {
        self.partitions
            .iter()
            .find(|p| p.role == PartitionRole::Esp)
            // Invariant: validate() requires exactly one esp.
            .expect("a validated provisioning description has an esp partition")
    }

    /// The slots, in table order; the first is the one booted first.
    pub fn slots(&self) -> impl Iterator<Item = &PartitionSpec> {
        self.partitions
            .iter()
            .filter(|p| p.role == PartitionRole::Slot)
    }

    /// The data partition's entry.
    ///
    /// # Panics
    ///
    /// When there is no `data` partition; a validated description has exactly one.
    pub fn data_partition(&self) -> &PartitionSpec {
        self.partitions
            .iter()
            .find(|p| p.role == PartitionRole::Data)
            // Invariant: validate() requires exactly one data partition.
            .expect("a validated provisioning description has a data partition")
    }
}

#[cfg(test)]
mod tests;
