//! Reading a GPT from the first and last bytes of a disk, every field checked before it
//! is used: the header CRC, `my_lba`, the header and entry sizes, the entry count (at most
//! 128 entries of 128 bytes, so nothing read is larger than 16 KiB and nothing is
//! allocated from a count), where the entry array lies, the entry array CRC, and every
//! entry (inside the usable LBAs, no overlaps).
//!
//! The primary copy (LBA 1) is read first, then the backup (the last LBA). A primary that
//! fails a check while the backup passes decodes from the backup (`primary_ok: false`);
//! a backup that fails, lies elsewhere, or describes another table leaves
//! `backup_ok: false`.

use crate::guid::Guid;
use crate::ondisk::{self, Entry, Header, ENTRY_SIZE, HEADER_SIZE, NUM_ENTRIES};
use crate::planner::{Plan, PlannedPartition};

/// A partition table read from a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The disk GUID.
    pub disk_guid: Guid,
    /// The logical sector size the table was read with.
    pub sector_size: u64,
    /// The first usable LBA.
    pub first_usable_lba: u64,
    /// The last usable LBA.
    pub last_usable_lba: u64,
    /// The entries in use (type GUID not zero), by number.
    pub partitions: Vec<PlannedPartition>,
    /// Whether the primary header and entries (LBA 1) passed every check; when not, the
    /// table was read from the backup.
    pub primary_ok: bool,
    /// Whether the backup header at the last LBA passed every check, is the one the
    /// primary points to, and describes the same table.
    pub backup_ok: bool,
}

impl Table {
    /// Whether the table is the one `plan` describes: the same sector size, disk GUID and
    /// partitions (number, label, type GUID, unique GUID, first and last LBA).
    ///
    /// Whether both copies are intact is not part of it (see `primary_ok` and
    /// `backup_ok`), nor is the usable range, which moves with the end of the disk.
    pub fn matches(&self, plan: &Plan) -> bool {
        self.sector_size == plan.sector_size
            && self.disk_guid == plan.disk_guid
            && self.partitions == plan.partitions
    }
}

/// Why the bytes of a disk do not hold a GPT that can be trusted, or were given wrongly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GptError {
    /// The sector size is neither 512 nor 4096.
    #[error("sector size {0} is not supported (512 or 4096)")]
    BadSectorSize(u64),
    /// The head or tail given is longer than the disk.
    #[error("{what} of {len} bytes is longer than the disk of {disk_size} bytes")]
    InputTooLong {
        /// `"head"` or `"tail"`.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The disk size given.
        disk_size: u64,
    },
    /// The head or tail given is shorter than [`crate::head_len`] / [`crate::tail_len`]
    /// (or the whole disk, when that is smaller).
    #[error("{what} of {len} bytes is shorter than the {need} bytes the gpt is read from")]
    ShortInput {
        /// `"head"` or `"tail"`.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The length wanted.
        need: u64,
    },
    /// A header field is out of bounds or inconsistent.
    #[error("gpt header at lba {lba}: {reason}")]
    BadHeader {
        /// Where the header is.
        lba: u64,
        /// What is wrong.
        reason: String,
    },
    /// The header CRC does not match.
    #[error("gpt header at lba {lba}: crc32 {stored:#010x} does not match the computed {computed:#010x}")]
    HeaderCrc {
        /// Where the header is.
        lba: u64,
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// The entry array CRC does not match.
    #[error("gpt header at lba {lba}: entry array at lba {entry_lba} has crc32 {computed:#010x}, the header says {stored:#010x}")]
    EntriesCrc {
        /// Where the header is.
        lba: u64,
        /// Where the entry array is.
        entry_lba: u64,
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// A partition entry is out of bounds.
    #[error("gpt header at lba {lba}: partition {number} ({label:?}): {reason}")]
    BadEntry {
        /// Where the header is.
        lba: u64,
        /// The partition number (entry index + 1).
        number: u32,
        /// The partition name in the entry.
        label: String,
        /// What is wrong.
        reason: String,
    },
    /// Both copies carry the signature and both fail a check.
    #[error("no valid gpt copy: primary: {primary}; backup: {backup}")]
    BothBad {
        /// Why the primary failed.
        primary: Box<GptError>,
        /// Why the backup failed.
        backup: Box<GptError>,
    },
}

/// Decodes the GPT of a disk of `disk_size` bytes from its first bytes (`head`, at least
/// [`crate::head_len`] or the whole disk) and its last bytes (`tail`, at least
/// [`crate::tail_len`] or the whole disk).
///
/// `Ok(None)`: neither LBA 1 nor the last LBA starts with `"EFI PART"`. A copy that
/// carries the signature but fails a check is an error only when the other copy does not
/// pass (see the module doc).
pub fn decode(
    head: &[u8],
    tail: &[u8],
    disk_size: u64,
    sector_size: u64,
) -> Result<Option<Table>, GptError> {
    let disk = Disk::new(head, tail, disk_size, sector_size)?;
    let last_lba = disk.lbas.saturating_sub(1);
    let primary = read_copy(&disk, 1);
    let backup = if last_lba > 1 {
        read_copy(&disk, last_lba)
    } else {
        Ok(None)
    };
    let (copy, primary_ok, backup_ok) = match (primary, backup) {
        (Ok(None), Ok(None)) => return Ok(None),
        (Ok(Some(p)), b) => {
            let backup_ok = p.header.alternate_lba == last_lba
                && matches!(&b, Ok(Some(b)) if same_table(&p, b));
            (p, true, backup_ok)
        }
        (Ok(None) | Err(_), Ok(Some(b))) => (b, false, true),
        (Err(e), Ok(None)) | (Ok(None), Err(e)) => return Err(e),
        (Err(p), Err(b)) => {
            return Err(GptError::BothBad {
                primary: Box::new(p),
                backup: Box::new(b),
            })
        }
    };
    Ok(Some(Table {
        disk_guid: copy.header.disk_guid,
        sector_size,
        first_usable_lba: copy.header.first_usable_lba,
        last_usable_lba: copy.header.last_usable_lba,
        partitions: copy.partitions,
        primary_ok,
        backup_ok,
    }))
}

/// The bytes given of one disk.
struct Disk<'a> {
    head: &'a [u8],
    tail: &'a [u8],
    size: u64,
    sector: u64,
    lbas: u64,
}

impl<'a> Disk<'a> {
    fn new(head: &'a [u8], tail: &'a [u8], size: u64, sector: u64) -> Result<Disk<'a>, GptError> {
        if sector != 512 && sector != 4096 {
            return Err(GptError::BadSectorSize(sector));
        }
        for (what, bytes, want) in [
            ("head", head, crate::head_len(sector)),
            ("tail", tail, crate::tail_len(sector)),
        ] {
            let len = bytes.len() as u64;
            if len > size {
                return Err(GptError::InputTooLong {
                    what,
                    len,
                    disk_size: size,
                });
            }
            let need = (want as u64).min(size);
            if len < need {
                return Err(GptError::ShortInput { what, len, need });
            }
        }
        Ok(Disk {
            head,
            tail,
            size,
            sector,
            lbas: size / sector,
        })
    }

    /// `len` bytes at `offset`, when they lie inside the head or the tail.
    fn bytes(&self, offset: u64, len: u64) -> Option<&'a [u8]> {
        let end = offset.checked_add(len)?;
        if end > self.size {
            return None;
        }
        if end <= self.head.len() as u64 {
            return self.head.get(offset as usize..end as usize);
        }
        let tail_start = self.size - self.tail.len() as u64;
        let from = offset.checked_sub(tail_start)?;
        self.tail.get(from as usize..(end - tail_start) as usize)
    }
}

/// One checked copy of the table.
struct Checked {
    header: Header,
    partitions: Vec<PlannedPartition>,
}

/// Whether a valid backup describes the same table as the primary and points back to it.
fn same_table(primary: &Checked, backup: &Checked) -> bool {
    let (p, b) = (&primary.header, &backup.header);
    b.alternate_lba == p.my_lba
        && b.disk_guid == p.disk_guid
        && b.first_usable_lba == p.first_usable_lba
        && b.last_usable_lba == p.last_usable_lba
        && b.num_entries == p.num_entries
        && b.entries_crc == p.entries_crc
        && backup.partitions == primary.partitions
}

/// Reads and checks the copy whose header is at `lba`; `Ok(None)` without a signature.
fn read_copy(disk: &Disk<'_>, lba: u64) -> Result<Option<Checked>, GptError> {
    let bad = |reason: String| GptError::BadHeader { lba, reason };
    if lba >= disk.lbas {
        return Ok(None); // a disk of one sector
    }
    // Inside the head or tail: `Disk::new` checked their lengths.
    let Some(sector) = disk.bytes(lba * disk.sector, disk.sector) else {
        return Err(bad("header sector was not read".into()));
    };
    let Some(header) = Header::read(sector) else {
        return Ok(None);
    };
    let size = header.header_size;
    if size < HEADER_SIZE || u64::from(size) > disk.sector {
        return Err(bad(format!(
            "header size {size} is outside {HEADER_SIZE}..={}",
            disk.sector
        )));
    }
    let computed = ondisk::header_crc(&sector[..size as usize]);
    if computed != header.header_crc {
        return Err(GptError::HeaderCrc {
            lba,
            stored: header.header_crc,
            computed,
        });
    }
    if header.my_lba != lba {
        return Err(bad(format!("it names itself lba {}", header.my_lba)));
    }
    check_usable(disk, &header).map_err(bad)?;
    let entries = entry_array(disk, &header).map_err(bad)?;
    let computed = crc32fast::hash(entries);
    if computed != header.entries_crc {
        return Err(GptError::EntriesCrc {
            lba,
            entry_lba: header.entry_lba,
            stored: header.entries_crc,
            computed,
        });
    }
    let partitions = read_entries(&header, entries).map_err(|bad| GptError::BadEntry {
        lba,
        number: bad.number,
        label: bad.label,
        reason: bad.reason,
    })?;
    Ok(Some(Checked { header, partitions }))
}

/// The usable range lies between the primary header and the last LBA.
fn check_usable(disk: &Disk<'_>, h: &Header) -> Result<(), String> {
    let (first, last) = (h.first_usable_lba, h.last_usable_lba);
    if first < 2 || first > last || last >= disk.lbas.saturating_sub(1) {
        return Err(format!(
            "usable lbas {first}..={last} do not fit a disk of {} lbas",
            disk.lbas
        ));
    }
    Ok(())
}

/// The entry array's bytes, after bounding the entry count and size and checking where
/// the array lies.
fn entry_array<'a>(disk: &Disk<'a>, h: &Header) -> Result<&'a [u8], String> {
    if h.entry_size != ENTRY_SIZE {
        return Err(format!("entry size {} is not {ENTRY_SIZE}", h.entry_size));
    }
    if h.num_entries > NUM_ENTRIES {
        return Err(format!(
            "{} entries, at most {NUM_ENTRIES} are read",
            h.num_entries
        ));
    }
    // At most 128 * 128 bytes.
    let len = u64::from(h.num_entries) * u64::from(h.entry_size);
    let sectors = ondisk::array_sectors(len, disk.sector);
    let start = h.entry_lba;
    let array = format!("entry array at lba {start} ({sectors} sectors)");
    let end = start.checked_add(sectors).filter(|&end| end <= disk.lbas);
    let Some(end) = end.filter(|_| start >= 1) else {
        return Err(format!("{array} lies outside the disk"));
    };
    if (start..end).contains(&h.my_lba) {
        return Err(format!("{array} covers the header"));
    }
    if start <= h.last_usable_lba && end > h.first_usable_lba {
        return Err(format!("{array} overlaps the usable lbas"));
    }
    disk.bytes(start * disk.sector, len).ok_or_else(|| {
        format!(
            "{array} lies outside the first {} and last {} bytes read",
            disk.head.len(),
            disk.tail.len()
        )
    })
}

/// An entry [`read_entries`] refuses.
struct BadEntry {
    number: u32,
    label: String,
    reason: String,
}

/// The entries in use, each inside the usable range and none overlapping another.
fn read_entries(h: &Header, bytes: &[u8]) -> Result<Vec<PlannedPartition>, BadEntry> {
    let mut out: Vec<PlannedPartition> = Vec::new();
    for (index, chunk) in bytes.chunks_exact(ENTRY_SIZE as usize).enumerate() {
        let number = index as u32 + 1; // at most 128 entries
        let e = Entry::read(chunk);
        if e.type_guid.is_nil() {
            continue;
        }
        let (first, last) = (e.first_lba, e.last_lba);
        let bad = |reason: String| BadEntry {
            number,
            label: e.name.clone(),
            reason,
        };
        if first > last || first < h.first_usable_lba || last > h.last_usable_lba {
            return Err(bad(format!(
                "lbas {first}..={last} are not inside the usable lbas {}..={}",
                h.first_usable_lba, h.last_usable_lba
            )));
        }
        if let Some(other) = out
            .iter()
            .find(|o| o.first_lba <= last && first <= o.last_lba)
        {
            return Err(bad(format!(
                "lbas {first}..={last} overlap partition {}",
                other.number
            )));
        }
        out.push(PlannedPartition {
            number,
            label: e.name,
            type_guid: e.type_guid,
            unique_guid: e.unique_guid,
            first_lba: first,
            last_lba: last,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
