//! The GPT of a disk image: deterministic GUIDs, the `sgdisk` invocation that writes the
//! table into a plain file, and a read-back of every entry with `sgdisk -i`.

use std::path::Path;

use super::layout::{Layout, Partition, Role, SECTOR};
use super::DiskError;
use crate::mkfs::{format_uuid, uuid_from_seed};
use flipslot_os::process::Cmd;

/// GPT type code (sgdisk's short form) of the ESP.
pub const TYPE_ESP: &str = "ef00";
/// GPT type code of every other partition (Linux filesystem data).
pub const TYPE_LINUX: &str = "8300";

/// The GUIDs of a disk, derived from a seed so that a rebuild gives the same table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskGuids {
    /// The disk GUID.
    pub disk: String,
    /// One unique partition GUID per partition, in layout order.
    pub partitions: Vec<String>,
}

impl DiskGuids {
    /// Derives the GUIDs: version-4-shaped UUIDs from SHA-256 of
    /// `flipslot-disk/<seed hex>/disk` and `flipslot-disk/<seed hex>/part/<number>/<label>`.
    pub fn derive(seed: &[u8], layout: &Layout) -> DiskGuids {
        let seed = hex::encode(seed);
        let uuid = |what: &str| {
            format_uuid(&uuid_from_seed(
                format!("flipslot-disk/{seed}/{what}").as_bytes(),
            ))
        };
        DiskGuids {
            disk: uuid("disk"),
            partitions: layout
                .partitions
                .iter()
                .map(|p| uuid(&format!("part/{}/{}", p.number, p.label)))
                .collect(),
        }
    }
}

fn type_code(p: &Partition) -> &'static str {
    match p.role {
        Role::Esp => TYPE_ESP,
        Role::Slot { .. } | Role::Data { .. } => TYPE_LINUX,
    }
}

/// The `sgdisk` arguments that write the whole table (without the disk path).
///
/// `-a 8` allows starts on any 4 KiB boundary (sgdisk would otherwise move them to 1 MiB);
/// `-q` is not used: it makes sgdisk write nothing.
pub fn sgdisk_args(layout: &Layout, guids: &DiskGuids) -> Vec<String> {
    let mut args = vec![
        "--clear".to_string(),
        "-a".to_string(),
        "8".to_string(),
        format!("--disk-guid={}", guids.disk),
    ];
    for (p, guid) in layout.partitions.iter().zip(&guids.partitions) {
        let n = p.number;
        let first = p.start / SECTOR;
        let last = p.end() / SECTOR - 1;
        args.push(format!("--new={n}:{first}:{last}"));
        args.push(format!("--typecode={n}:{}", type_code(p)));
        args.push(format!("--change-name={n}:{}", p.label));
        args.push(format!("--partition-guid={n}:{guid}"));
    }
    args
}

/// One entry as `sgdisk -i N` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SgdiskInfo {
    /// First sector.
    pub first: u64,
    /// Last sector (inclusive).
    pub last: u64,
    /// Partition name.
    pub name: String,
    /// Unique partition GUID, lower case.
    pub guid: String,
}

/// Parses the output of `sgdisk -i N DISK`.
pub fn parse_sgdisk_info(text: &str) -> Option<SgdiskInfo> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    let sector = |key: &str| field(key)?.split_whitespace().next()?.parse::<u64>().ok();
    let name = field("Partition name:")?;
    let name = name
        .strip_prefix('\'')
        .and_then(|n| n.strip_suffix('\''))
        .unwrap_or(name);
    Some(SgdiskInfo {
        first: sector("First sector:")?,
        last: sector("Last sector:")?,
        name: name.to_string(),
        guid: field("Partition unique GUID:")?.to_ascii_lowercase(),
    })
}

/// Writes the GPT of `layout` into the disk image file `disk` and reads every entry back.
pub fn write_gpt(disk: &Path, layout: &Layout, guids: &DiskGuids) -> Result<(), DiskError> {
    Cmd::new("sgdisk")
        .args(sgdisk_args(layout, guids))
        .arg(disk)
        .run()?;
    for (p, guid) in layout.partitions.iter().zip(&guids.partitions) {
        let out = Cmd::new("sgdisk")
            .arg("-i")
            .arg(p.number.to_string())
            .arg(disk)
            .run_stdout()?;
        let info = parse_sgdisk_info(&out).ok_or_else(|| DiskError::Gpt {
            reason: format!(
                "cannot read partition {} back from sgdisk -i: {}",
                p.number,
                out.trim()
            ),
        })?;
        let want = SgdiskInfo {
            first: p.start / SECTOR,
            last: p.end() / SECTOR - 1,
            name: p.label.clone(),
            guid: guid.clone(),
        };
        if info != want {
            return Err(DiskError::Gpt {
                reason: format!(
                    "partition {} ({:?}) reads back as {info:?}, expected {want:?}",
                    p.number, p.label
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;
    use crate::disk::layout::tests::EXAMPLE;

    const INFO: &str =
        "Partition GUID code: C12A7328-F81F-11D2-BA4B-00A0C93EC93B (EFI system partition)
Partition unique GUID: 11111111-2222-4333-8444-55555555555A
First sector: 2048 (at 1024.0 KiB)
Last sector: 67583 (at 33.0 MiB)
Partition size: 65536 sectors (32.0 MiB)
Attribute flags: 0000000000000000
Partition name: 'esp'
";

    #[test]
    fn sgdisk_info_parses() {
        let info = parse_sgdisk_info(INFO).unwrap();
        assert_eq!(
            info,
            SgdiskInfo {
                first: 2048,
                last: 67583,
                name: "esp".into(),
                guid: "11111111-2222-4333-8444-55555555555a".into()
            }
        );
        assert_eq!(parse_sgdisk_info("Partition #5 does not exist."), None);
    }

    #[test]
    fn guids_are_deterministic_and_distinct() {
        let layout = Layout::parse(EXAMPLE, "x").unwrap();
        let a = DiskGuids::derive(b"seed", &layout);
        assert_eq!(a, DiskGuids::derive(b"seed", &layout));
        assert_ne!(a, DiskGuids::derive(b"other", &layout));
        let mut all = a.partitions.clone();
        all.push(a.disk.clone());
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 5);
    }

    #[test]
    fn sgdisk_argv_places_every_partition() {
        let layout = Layout::parse(EXAMPLE, "x").unwrap();
        let guids = DiskGuids::derive(b"seed", &layout);
        let args = sgdisk_args(&layout, &guids);
        assert_eq!(args[..3], ["--clear", "-a", "8"]);
        assert!(args.contains(&"--new=1:2048:67583".to_string()));
        assert!(args.contains(&"--typecode=1:ef00".to_string()));
        assert!(args.contains(&"--change-name=2:rootfs-a".to_string()));
        assert!(args.contains(&"--typecode=4:8300".to_string()));
        assert!(!args.iter().any(|a| a == "-q"));
    }
}
