//! The GPT byte layout (UEFI specification, chapter 5): where the protective MBR, the
//! headers and the entry arrays lie.
//!
//! ```text
//! LBA 0          protective MBR: one record, type 0xEE, from LBA 1 over the whole disk
//! LBA 1          primary header (92 bytes, the rest of the sector zero)
//! LBA 2 ..       primary entry array: 128 entries of 128 bytes (32 sectors of 512 bytes,
//!                4 of 4096)
//! first usable   … partitions …   last usable
//! LBA N-1-E ..   backup entry array (E = entry array sectors)
//! LBA N-1        backup header
//! ```
//!
//! Header fields (little-endian): `0` signature `"EFI PART"`, `8` revision `0x00010000`,
//! `12` header size (92), `16` header CRC-32 (over the header size, this field zero),
//! `20` reserved, `24` my LBA, `32` alternate LBA, `40` first usable LBA, `48` last usable
//! LBA, `56` disk GUID, `72` entry array LBA, `80` number of entries, `84` entry size,
//! `88` entry array CRC-32.
//!
//! Entry fields: `0` type GUID, `16` unique GUID, `32` first LBA, `40` last LBA
//! (inclusive), `48` attributes, `56` name (36 UTF-16LE code units, NUL padded).

/// Entries in the array this crate writes (and the most it reads).
pub(crate) const NUM_ENTRIES: u32 = 128;
/// Size of one entry (the only size this crate reads).
pub(crate) const ENTRY_SIZE: u32 = 128;
/// Bytes of the entry array this crate writes.
pub(crate) const ENTRY_ARRAY_BYTES: u64 = NUM_ENTRIES as u64 * ENTRY_SIZE as u64;
/// Longest partition name, in UTF-16 code units.
pub(crate) const NAME_UNITS: usize = 36;

/// Sectors an entry array of `bytes` bytes takes.
pub(crate) fn array_sectors(bytes: u64, sector_size: u64) -> u64 {
    bytes.div_ceil(sector_size.max(1))
}

/// Sectors of the entry array this crate writes (32 of 512 bytes, 4 of 4096).
pub(crate) fn entry_array_sectors(sector_size: u64) -> u64 {
    array_sectors(ENTRY_ARRAY_BYTES, sector_size)
}

/// The first usable LBA of a table this crate writes: after the MBR, the primary header
/// and the primary entry array.
pub(crate) fn first_usable_lba(sector_size: u64) -> u64 {
    2 + entry_array_sectors(sector_size)
}

/// The last usable LBA of a table this crate writes on a disk of `lbas` blocks: before
/// the backup entry array and the backup header (0 on a disk too small for that).
pub(crate) fn last_usable_lba(lbas: u64, sector_size: u64) -> u64 {
    lbas.saturating_sub(2 + entry_array_sectors(sector_size))
}
