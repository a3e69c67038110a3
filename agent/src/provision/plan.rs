//! The pure rules of provisioning: the partition requests a description makes, the seed
//! that makes the partition table deterministic, what state a disk is in, which bundle
//! image goes into which slot, and the factory status record. No I/O.

use crate::slot::status::{InstallResult, SlotRecord, StatusFile, Trial};
use anyhow::{anyhow, bail, Result};
use flipslot_format::provision::{PartitionRole, Provision};
use flipslot_format::Sha256Digest;
use flipslot_gpt::{Encoded, Guid, PartitionRequest, Plan};
use sha2::{Digest, Sha256};

/// The GPT partition requests of a description, in order.
pub fn requests(p: &Provision) -> Result<Vec<PartitionRequest>> {
    p.partitions
        .iter()
        .map(|s| {
            let text = s.type_guid();
            let type_guid: Guid = text.parse().map_err(|_| {
                anyhow!("partition {:?}: type GUID {text:?} is not a GUID", s.label)
            })?;
            Ok(PartitionRequest {
                label: s.label.clone(),
                type_guid,
                size: s.size,
            })
        })
        .collect()
}

/// The seed of every GUID in the table: the description's signed content and the disk's
/// size, so running again with the same description on the same disk plans the same
/// table byte for byte (which is how a finished disk is recognised).
pub fn seed(p: &Provision, disk_size: u64) -> Result<Vec<u8>> {
    let text = serde_json::to_vec(p).map_err(|e| anyhow!("cannot encode the description: {e}"))?;
    let mut h = Sha256::new();
    h.update(b"flipslot provision seed v1\0");
    h.update(&text);
    h.update(disk_size.to_le_bytes());
    Ok(h.finalize().to_vec())
}

/// What is on a disk before provisioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskState {
    /// The planned table is on the disk, protective MBR, primary and backup, byte for byte:
    /// provisioning finished (the table is written last).
    Provisioned,
    /// Nothing recognisable: no partition table, no filesystem signature.
    Blank,
    /// A table of this description (its disk GUID) that is not complete: an earlier run
    /// was cut off while writing the table. Everything is written again.
    Interrupted,
    /// Something else: these signatures (a partition table, a filesystem, RAID...).
    Foreign(Vec<String>),
}

/// Classifies a disk from its first and last bytes (`head` from offset 0, `tail` ending
/// at the disk's end; lengths from `flipslot_gpt::head_len`/`tail_len`).
pub fn disk_state(head: &[u8], tail: &[u8], plan: &Plan, enc: &Encoded) -> DiskState {
    let ss = plan.sector_size as usize;
    let at = |buf: &[u8], off: usize, want: &[u8]| {
        buf.get(off..off + want.len())
            .is_some_and(|got| got == want)
    };
    let tail_start = plan.disk_size - tail.len() as u64;
    let backup_in_tail = enc
        .backup_offset
        .checked_sub(tail_start)
        .map(|o| o as usize);
    let complete = at(head, 0, &enc.mbr[..ss.min(enc.mbr.len())])
        && at(head, enc.primary_offset as usize, &enc.primary)
        && backup_in_tail.is_some_and(|o| at(tail, o, &enc.backup));
    if complete {
        return DiskState::Provisioned;
    }
    let found = flipslot_gpt::probe(head, tail);
    if found.is_empty() {
        return DiskState::Blank;
    }
    let ours = matches!(
        flipslot_gpt::decode(head, tail, plan.disk_size, plan.sector_size),
        Ok(Some(t)) if t.disk_guid == plan.disk_guid
    );
    let only_tables = found.iter().all(|s| {
        matches!(
            s,
            flipslot_gpt::Signature::Gpt | flipslot_gpt::Signature::Mbr
        )
    });
    if ours && only_tables {
        return DiskState::Interrupted;
    }
    DiskState::Foreign(found.iter().map(|s| s.to_string()).collect())
}

/// One slot of the layout as the installed agent names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotTarget {
    /// Index into the description's partitions (and the plan's).
    pub partition: usize,
    /// The agent's slot name, `<class>.<n>` by place among the slots of its class.
    pub name: String,
    /// The partition label.
    pub label: String,
    /// The bootloader's name for it.
    pub bootname: String,
    /// The bundle image class it receives.
    pub class: String,
    /// Index of that image in the bundle.
    pub image: usize,
    /// Whether this run writes it (the first slot always; the others with
    /// `write_all_slots`).
    pub write: bool,
}

/// The slots, which bundle image each receives and whether it is written. `images` are
/// the bundle's `(class, size)` in bundle order; `sizes` the planned partition sizes.
pub fn slot_targets(
    p: &Provision,
    images: &[(String, u64)],
    sizes: &[u64],
) -> Result<Vec<SlotTarget>> {
    let mut out = Vec::new();
    let mut per_class: Vec<(String, usize)> = Vec::new();
    for (i, s) in p.partitions.iter().enumerate() {
        if s.role != PartitionRole::Slot {
            continue;
        }
        let class = s.class.clone().unwrap_or_default();
        let n = match per_class.iter_mut().find(|(c, _)| *c == class) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                per_class.push((class.clone(), 0));
                0
            }
        };
        let Some(image) = images.iter().position(|(c, _)| *c == class) else {
            let have: Vec<&str> = images.iter().map(|(c, _)| c.as_str()).collect();
            bail!(
                "the bundle has no image of class {class:?} for slot partition {:?} (it has: {})",
                s.label,
                have.join(", ")
            );
        };
        let size = images[image].1;
        let room = sizes.get(i).copied().unwrap_or(0);
        if size > room {
            bail!(
                "the {class:?} image of {size} bytes does not fit partition {:?} of {room} bytes",
                s.label
            );
        }
        out.push(SlotTarget {
            partition: i,
            name: format!("{class}.{n}"),
            label: s.label.clone(),
            bootname: s.bootname.clone().unwrap_or_default(),
            class,
            image,
            write: out.is_empty() || p.write_all_slots,
        });
    }
    if out.is_empty() {
        bail!("the description has no slot partition");
    }
    Ok(out)
}

/// What the factory install wrote, for the status record.
#[derive(Debug, Clone)]
pub struct Factory {
    /// The bundle's compatible string.
    pub compatible: String,
    /// Its version.
    pub version: String,
    /// SHA-256 of its signed manifest.
    pub manifest_sha256: Sha256Digest,
    /// When provisioning wrote it (unix seconds).
    pub at: u64,
}

/// The status record of the factory install: every written slot installed and committed
/// (it is the system the machine is born with, so there is no trial to assess), so
/// downgrade checks and rollback records work from the first boot.
pub fn factory_status(slots: &[SlotTarget], images: &[Sha256Digest], f: &Factory) -> StatusFile {
    let mut st = StatusFile::default();
    for s in slots.iter().filter(|s| s.write) {
        st.set_record(
            &s.name,
            SlotRecord {
                bundle_version: Some(f.version.clone()),
                compatible: f.compatible.clone(),
                manifest_sha256: Some(f.manifest_sha256),
                image_sha256: images.get(s.image).copied(),
                installed_at: Some(f.at),
                result: InstallResult::Ok,
                message: Some("factory install (flipslot provision)".into()),
                trial: Trial {
                    committed_at: Some(f.at),
                    ..Trial::default()
                },
            },
        );
    }
    st
}

/// The bundle must be for the system the description describes.
pub fn check_compatible(p: &Provision, bundle_compatible: &str) -> Result<()> {
    if p.compatible != bundle_compatible {
        bail!(
            "the bundle is for compatible {bundle_compatible:?}, the provisioning description \
             for {:?}",
            p.compatible
        );
    }
    Ok(())
}
