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

#[cfg(test)]
mod tests {
    use super::*;
    use flipslot_format::provision::{
        DiskSelect, EspImage, PartitionSpec, ProvisionBootloader, TargetRule,
    };

    const MIB: u64 = 1 << 20;

    fn spec(
        label: &str,
        role: PartitionRole,
        size: Option<u64>,
        boot: Option<&str>,
    ) -> PartitionSpec {
        PartitionSpec {
            label: label.into(),
            role,
            size,
            type_guid: None,
            class: boot.map(|_| "rootfs".into()),
            bootname: boot.map(str::to_string),
        }
    }

    fn desc(write_all: bool) -> Provision {
        Provision {
            format: 1,
            compatible: "board".into(),
            target: TargetRule {
                select: DiskSelect::Largest,
                by_id: None,
                serial: None,
                allow_wipe: false,
            },
            bootloader: ProvisionBootloader::GrubEfi,
            esp: EspImage {
                file: "esp.img".into(),
                size: 4096,
                sha256: Sha256Digest([0; 32]),
            },
            partitions: vec![
                spec("esp", PartitionRole::Esp, Some(8 * MIB), None),
                spec("rootfs-a", PartitionRole::Slot, Some(16 * MIB), Some("A")),
                spec("rootfs-b", PartitionRole::Slot, Some(16 * MIB), Some("B")),
                spec("data", PartitionRole::Data, None, None),
            ],
            write_all_slots: write_all,
            data_files: vec![],
            status_file: None,
        }
    }

    fn planned(p: &Provision, size: u64) -> (Plan, Encoded) {
        let plan =
            flipslot_gpt::plan(size, 512, &requests(p).unwrap(), &seed(p, size).unwrap()).unwrap();
        let enc = flipslot_gpt::encode(&plan);
        (plan, enc)
    }

    /// The disk's head and tail after writing `enc` (or zeros).
    fn disk_bytes(size: u64, enc: Option<&Encoded>, mbr: bool) -> (Vec<u8>, Vec<u8>) {
        let mut head = vec![0u8; flipslot_gpt::head_len(512)];
        let tail_len = flipslot_gpt::tail_len(512);
        let mut tail = vec![0u8; tail_len];
        if let Some(e) = enc {
            if mbr {
                head[..e.mbr.len()].copy_from_slice(&e.mbr);
            }
            let p = e.primary_offset as usize;
            head[p..p + e.primary.len()].copy_from_slice(&e.primary);
            let b = (e.backup_offset - (size - tail_len as u64)) as usize;
            tail[b..b + e.backup.len()].copy_from_slice(&e.backup);
        }
        (head, tail)
    }

    #[test]
    fn the_table_is_the_same_for_the_same_description_and_disk() {
        let p = desc(false);
        let (a, _) = planned(&p, 256 * MIB);
        let (b, _) = planned(&p, 256 * MIB);
        assert_eq!(a, b);
        let (c, _) = planned(&p, 512 * MIB);
        assert_ne!(a.disk_guid, c.disk_guid, "another disk size, another table");
        let mut q = p.clone();
        q.partitions[1].size = Some(32 * MIB);
        let (d, _) = planned(&q, 256 * MIB);
        assert_ne!(
            a.disk_guid, d.disk_guid,
            "another description, another table"
        );
        assert_eq!(a.partitions[0].type_guid, flipslot_gpt::ESP_TYPE);
        assert_eq!(a.partitions[3].type_guid, flipslot_gpt::LINUX_FS_TYPE);
    }

    #[test]
    fn disk_states() {
        let p = desc(false);
        let size = 256 * MIB;
        let (plan, enc) = planned(&p, size);
        let (h, t) = disk_bytes(size, None, false);
        assert_eq!(disk_state(&h, &t, &plan, &enc), DiskState::Blank);
        let (h, t) = disk_bytes(size, Some(&enc), true);
        assert_eq!(disk_state(&h, &t, &plan, &enc), DiskState::Provisioned);
        // Cut off before the protective MBR: our own table, not finished.
        let (h, t) = disk_bytes(size, Some(&enc), false);
        assert_eq!(disk_state(&h, &t, &plan, &enc), DiskState::Interrupted);
        // Another description's table is somebody's data.
        let mut q = p.clone();
        q.compatible = "other".into();
        let (_, other) = planned(&q, size);
        let (h, t) = disk_bytes(size, Some(&other), true);
        match disk_state(&h, &t, &plan, &enc) {
            DiskState::Foreign(found) => assert!(found.contains(&"gpt".to_string()), "{found:?}"),
            s => panic!("{s:?}"),
        }
        // A whole-disk ext4.
        let (mut h, t) = disk_bytes(size, None, false);
        h[1024 + 56] = 0x53;
        h[1024 + 57] = 0xef;
        assert!(matches!(
            disk_state(&h, &t, &plan, &enc),
            DiskState::Foreign(_)
        ));
    }

    #[test]
    fn slots_get_their_images_and_names() {
        let p = desc(false);
        let images = vec![("rootfs".to_string(), 10 * MIB)];
        let sizes = vec![8 * MIB, 16 * MIB, 16 * MIB, 100 * MIB];
        let t = slot_targets(&p, &images, &sizes).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].name.as_str(), t[0].bootname.as_str(), t[0].write),
            ("rootfs.0", "A", true)
        );
        assert_eq!(
            (t[1].name.as_str(), t[1].bootname.as_str(), t[1].write),
            ("rootfs.1", "B", false)
        );
        let all = slot_targets(&desc(true), &images, &sizes).unwrap();
        assert!(all.iter().all(|s| s.write));
        let big = vec![("rootfs".to_string(), 17 * MIB)];
        let e = slot_targets(&p, &big, &sizes).unwrap_err();
        assert!(
            e.to_string()
                .contains("does not fit partition \"rootfs-a\""),
            "{e}"
        );
        let none = vec![("appfs".to_string(), MIB)];
        let e = slot_targets(&p, &none, &sizes).unwrap_err();
        assert!(
            e.to_string().contains("no image of class \"rootfs\""),
            "{e}"
        );
    }

    #[test]
    fn the_factory_record_is_committed() {
        let p = desc(true);
        let images = vec![("rootfs".to_string(), MIB)];
        let t = slot_targets(&p, &images, &[8 * MIB, 16 * MIB, 16 * MIB, 64 * MIB]).unwrap();
        let f = Factory {
            compatible: "board".into(),
            version: "1.2.3".into(),
            manifest_sha256: Sha256Digest([1; 32]),
            at: 1_800_000_000,
        };
        let st = factory_status(&t, &[Sha256Digest([2; 32])], &f);
        for name in ["rootfs.0", "rootfs.1"] {
            let r = st.record(name).unwrap();
            assert_eq!(r.result, InstallResult::Ok);
            assert_eq!(r.trial.committed_at, Some(1_800_000_000));
            assert_eq!(r.image_sha256, Some(Sha256Digest([2; 32])));
            assert!(!st.is_uncommitted_trial(name));
        }
        assert!(check_compatible(&p, "board").is_ok());
        assert!(check_compatible(&p, "other").is_err());
    }
}
