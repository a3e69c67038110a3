//! The GPT byte layout (UEFI specification, chapter 5): the protective MBR, the header and
//! the partition entries, written and read field by field. No checks live here; the
//! decoder ([`crate::decode()`]) bounds and verifies what it reads.
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

use crate::guid::Guid;

/// The header signature.
pub(crate) const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Header revision 1.0.
pub(crate) const REVISION: u32 = 0x0001_0000;
/// The header size this crate writes (and the smallest it reads).
pub(crate) const HEADER_SIZE: u32 = 92;
/// Entries in the array this crate writes (and the most it reads).
pub(crate) const NUM_ENTRIES: u32 = 128;
/// Size of one entry (the only size this crate reads).
pub(crate) const ENTRY_SIZE: u32 = 128;
/// Bytes of the entry array this crate writes.
pub(crate) const ENTRY_ARRAY_BYTES: u64 = NUM_ENTRIES as u64 * ENTRY_SIZE as u64;
/// Longest partition name, in UTF-16 code units.
pub(crate) const NAME_UNITS: usize = 36;
/// The MBR partition type of a protective record.
pub(crate) const PROTECTIVE_TYPE: u8 = 0xEE;
/// Offset of the first of the four MBR partition records.
pub(crate) const MBR_RECORDS: usize = 446;
/// Offset of the MBR boot signature `55 AA`.
pub(crate) const MBR_SIGNATURE_AT: usize = 510;

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

/// The fields of a GPT header (both CRCs aside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) revision: u32,
    pub(crate) header_size: u32,
    pub(crate) header_crc: u32,
    pub(crate) my_lba: u64,
    pub(crate) alternate_lba: u64,
    pub(crate) first_usable_lba: u64,
    pub(crate) last_usable_lba: u64,
    pub(crate) disk_guid: Guid,
    pub(crate) entry_lba: u64,
    pub(crate) num_entries: u32,
    pub(crate) entry_size: u32,
    pub(crate) entries_crc: u32,
}

impl Header {
    /// The header sector (`sector_size` bytes, at least 512), its CRC computed over
    /// [`HEADER_SIZE`] bytes; `header_size` and `header_crc` of `self` are not used.
    pub(crate) fn to_sector(&self, sector_size: usize) -> Vec<u8> {
        let mut s = vec![0u8; sector_size.max(512)];
        s[0..8].copy_from_slice(SIGNATURE);
        put_u32(&mut s, 8, self.revision);
        put_u32(&mut s, 12, HEADER_SIZE);
        put_u64(&mut s, 24, self.my_lba);
        put_u64(&mut s, 32, self.alternate_lba);
        put_u64(&mut s, 40, self.first_usable_lba);
        put_u64(&mut s, 48, self.last_usable_lba);
        s[56..72].copy_from_slice(&self.disk_guid.to_gpt_bytes());
        put_u64(&mut s, 72, self.entry_lba);
        put_u32(&mut s, 80, self.num_entries);
        put_u32(&mut s, 84, self.entry_size);
        put_u32(&mut s, 88, self.entries_crc);
        let crc = header_crc(&s[..HEADER_SIZE as usize]);
        put_u32(&mut s, 16, crc);
        s
    }

    /// Reads the fields of a header; `None` when `bytes` is shorter than 92 bytes or does
    /// not begin with the signature.
    pub(crate) fn read(bytes: &[u8]) -> Option<Header> {
        if bytes.len() < HEADER_SIZE as usize || !bytes.starts_with(SIGNATURE) {
            return None;
        }
        Some(Header {
            revision: get_u32(bytes, 8),
            header_size: get_u32(bytes, 12),
            header_crc: get_u32(bytes, 16),
            my_lba: get_u64(bytes, 24),
            alternate_lba: get_u64(bytes, 32),
            first_usable_lba: get_u64(bytes, 40),
            last_usable_lba: get_u64(bytes, 48),
            disk_guid: get_guid(bytes, 56),
            entry_lba: get_u64(bytes, 72),
            num_entries: get_u32(bytes, 80),
            entry_size: get_u32(bytes, 84),
            entries_crc: get_u32(bytes, 88),
        })
    }
}

/// CRC-32 of a header's first `header_size` bytes (`bytes`, at most a sector), its CRC
/// field taken as zero.
pub(crate) fn header_crc(bytes: &[u8]) -> u32 {
    let mut copy = bytes.to_vec();
    if let Some(field) = copy.get_mut(16..20) {
        field.fill(0);
    }
    crc32fast::hash(&copy)
}

/// One partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) type_guid: Guid,
    pub(crate) unique_guid: Guid,
    pub(crate) first_lba: u64,
    pub(crate) last_lba: u64,
    pub(crate) attributes: u64,
    pub(crate) name: String,
}

impl Entry {
    /// Writes the entry into `out` (at least 128 bytes); the name is cut at 36 UTF-16
    /// code units.
    pub(crate) fn write(&self, out: &mut [u8]) {
        out[0..16].copy_from_slice(&self.type_guid.to_gpt_bytes());
        out[16..32].copy_from_slice(&self.unique_guid.to_gpt_bytes());
        put_u64(out, 32, self.first_lba);
        put_u64(out, 40, self.last_lba);
        put_u64(out, 48, self.attributes);
        for (i, unit) in self.name.encode_utf16().take(NAME_UNITS).enumerate() {
            out[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
    }

    /// Reads an entry from `bytes` (at least 128 bytes). The name ends at the first NUL
    /// unit; a unit that is not valid UTF-16 reads as U+FFFD.
    pub(crate) fn read(bytes: &[u8]) -> Entry {
        let units: Vec<u16> = bytes[56..56 + 2 * NAME_UNITS]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        Entry {
            type_guid: get_guid(bytes, 0),
            unique_guid: get_guid(bytes, 16),
            first_lba: get_u64(bytes, 32),
            last_lba: get_u64(bytes, 40),
            attributes: get_u64(bytes, 48),
            name: String::from_utf16_lossy(&units),
        }
    }
}

/// The protective MBR sector for a disk of `lbas` logical blocks of `sector_size` bytes
/// (at least 512): one record of type 0xEE from LBA 1 over the rest of the disk, its size
/// capped at `0xFFFFFFFF`; start CHS 0/0/2, end CHS `FF FF FF`; boot code and disk
/// signature zero; boot signature `55 AA` at byte 510.
pub(crate) fn protective_mbr(lbas: u64, sector_size: usize) -> Vec<u8> {
    let mut s = vec![0u8; sector_size.max(512)];
    let r = MBR_RECORDS;
    s[r + 1..r + 4].copy_from_slice(&[0x00, 0x02, 0x00]);
    s[r + 4] = PROTECTIVE_TYPE;
    s[r + 5..r + 8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    put_u32(&mut s, r + 8, 1);
    let size = u32::try_from(lbas.saturating_sub(1)).unwrap_or(u32::MAX);
    put_u32(&mut s, r + 12, size);
    s[MBR_SIGNATURE_AT] = 0x55;
    s[MBR_SIGNATURE_AT + 1] = 0xAA;
    s
}

fn put_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut [u8], at: usize, v: u64) {
    out[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A little-endian `u32` at `at`; callers pass slices long enough.
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// A little-endian `u64` at `at`; callers pass slices long enough.
pub(crate) fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn get_guid(b: &[u8], at: usize) -> Guid {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Guid::from_gpt_bytes(a)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;
    use crate::guid::{ESP_TYPE, LINUX_FS_TYPE};

    fn header() -> Header {
        Header {
            revision: REVISION,
            header_size: HEADER_SIZE,
            header_crc: 0,
            my_lba: 1,
            alternate_lba: 2047,
            first_usable_lba: 34,
            last_usable_lba: 2014,
            disk_guid: Guid::derive(b"t", 0),
            entry_lba: 2,
            num_entries: NUM_ENTRIES,
            entry_size: ENTRY_SIZE,
            entries_crc: 0x1234_5678,
        }
    }

    #[test]
    fn header_round_trips_with_a_valid_crc() {
        let s = header().to_sector(512);
        assert_eq!(s.len(), 512);
        assert!(s[92..].iter().all(|&b| b == 0));
        let back = Header::read(&s).unwrap();
        assert_eq!(back.header_crc, header_crc(&s[..92]));
        assert_eq!(
            Header {
                header_crc: 0,
                ..back
            },
            header()
        );
        // The CRC field is taken as zero: the stored CRC is the one over the zeroed field.
        let mut zeroed = s[..92].to_vec();
        zeroed[16..20].fill(0);
        assert_eq!(crc32fast::hash(&zeroed), back.header_crc);
    }

    #[test]
    fn header_needs_the_signature_and_92_bytes() {
        let s = header().to_sector(4096);
        assert_eq!(s.len(), 4096);
        assert!(Header::read(&s[..91]).is_none());
        let mut bad = s.clone();
        bad[0] = b'X';
        assert!(Header::read(&bad).is_none());
    }

    #[test]
    fn header_crc_of_short_input_does_not_panic() {
        for n in 0..24 {
            header_crc(&vec![1u8; n]);
        }
    }

    #[test]
    fn entry_round_trips_and_cuts_long_names() {
        let e = Entry {
            type_guid: ESP_TYPE,
            unique_guid: LINUX_FS_TYPE,
            first_lba: 2048,
            last_lba: 4095,
            attributes: 0,
            name: "ësp".into(),
        };
        let mut buf = [0u8; 128];
        e.write(&mut buf);
        assert_eq!(&buf[56..62], &[0xEB, 0x00, b's', 0, b'p', 0]);
        assert_eq!(Entry::read(&buf), e);
        let long = Entry {
            name: "x".repeat(40),
            ..e
        };
        let mut buf = [0u8; 128];
        long.write(&mut buf);
        assert_eq!(Entry::read(&buf).name, "x".repeat(36));
    }

    #[test]
    fn protective_mbr_covers_the_disk_and_caps_at_32_bits() {
        let m = protective_mbr(2048, 512);
        assert_eq!(m.len(), 512);
        assert_eq!(
            &m[446..462],
            &[0x00, 0x00, 0x02, 0x00, 0xEE, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0, 0xFF, 0x07, 0, 0]
        );
        assert_eq!(&m[510..], &[0x55, 0xAA]);
        assert!(m[..446].iter().all(|&b| b == 0));
        assert!(m[462..510].iter().all(|&b| b == 0));
        let big = protective_mbr(1 << 40, 4096);
        assert_eq!(big.len(), 4096);
        assert_eq!(get_u32(&big, 446 + 12), u32::MAX);
        assert_eq!(&big[510..512], &[0x55, 0xAA]);
    }
}
