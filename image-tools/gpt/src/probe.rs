//! Does a disk hold data? The signatures of partition tables, whole-disk filesystems and
//! volume managers in the first and last bytes of a disk, checked the way `blkid` finds
//! them (magic numbers at fixed offsets, a few fields checked beside them):
//!
//! | signature | where |
//! |---|---|
//! | MBR | `55 AA` at 510, sane records, at least one in use, not only type `0xEE` |
//! | GPT | `"EFI PART"` at 512 or 4096, or 512 / 4096 bytes before the end; a protective MBR |
//! | ext2/3/4 | `53 EF` at 1080 |
//! | FAT | a jump, a sector size and `"FAT"` at 54 or `"FAT32"` at 82, `55 AA` at 510 |
//! | squashfs | `"hsqs"` at 0 |
//! | EROFS | `E2 E1 F5 E0` at 1024 |
//! | XFS | `"XFSB"` at 0 |
//! | btrfs | `"_BHRfS_M"` at 64 KiB + 64 |
//! | LVM2 | `"LABELONE"` in one of the first four 512-byte sectors, `"LVM2 001"` at +24 |
//! | md RAID | magic `a92b4efc` with the version: 1.1 at 0, 1.2 at 4096, 1.0 8 KiB to 12 KiB and 0.90 64 KiB to 128 KiB before the end (each at its alignment) |
//! | swap | `"SWAPSPACE2"` or `"SWAP-SPACE"` ending at 4, 8, 16 or 64 KiB |
//! | ISO 9660 | `"CD001"` at 32 KiB + 1 |
//! | LUKS | `"LUKS" BA BE` at 0, or LUKS2's secondary `"SKUL" BA BE` at 16, 32 or 64 KiB |
//!
//! The tail's position on the disk is not known to [`probe()`], only that it ends where the
//! disk ends: the md superblocks at the end are looked for at every 512-byte step their
//! placement rule allows.

use std::fmt;

/// A data signature [`probe()`] recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Signature {
    /// An MBR partition table (not a protective one).
    Mbr,
    /// A GPT (primary or backup header, or a protective MBR).
    Gpt,
    /// An ext2, ext3 or ext4 filesystem.
    Ext,
    /// A FAT filesystem.
    Fat,
    /// A squashfs image.
    Squashfs,
    /// An EROFS image.
    Erofs,
    /// An XFS filesystem.
    Xfs,
    /// A btrfs filesystem.
    Btrfs,
    /// An LVM2 physical volume.
    Lvm2,
    /// A Linux md RAID member (superblock 0.90, 1.0, 1.1 or 1.2).
    MdRaid,
    /// A swap area.
    Swap,
    /// An ISO 9660 filesystem.
    Iso9660,
    /// A LUKS encrypted volume.
    Luks,
}

impl Signature {
    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Signature::Mbr => "mbr",
            Signature::Gpt => "gpt",
            Signature::Ext => "ext",
            Signature::Fat => "fat",
            Signature::Squashfs => "squashfs",
            Signature::Erofs => "erofs",
            Signature::Xfs => "xfs",
            Signature::Btrfs => "btrfs",
            Signature::Lvm2 => "lvm2",
            Signature::MdRaid => "mdraid",
            Signature::Swap => "swap",
            Signature::Iso9660 => "iso9660",
            Signature::Luks => "luks",
        }
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const KIB: usize = 1024;
const MD_MAGIC: u32 = 0xa92b_4efc;
const GPT_MAGIC: &[u8] = b"EFI PART";
const SECTORS: [usize; 2] = [512, 4096];

/// The signatures found in the first bytes (`head`, [`crate::head_len`] or the whole disk)
/// and the last bytes (`tail`, [`crate::tail_len`] or the whole disk) of a disk, in the
/// order of [`Signature`], each once. Shorter input finds less, never panics.
pub fn probe(head: &[u8], tail: &[u8]) -> Vec<Signature> {
    let at = |offset: usize, magic: &[u8]| bytes_at(head, offset, magic.len()) == Some(magic);
    let mut found = Vec::new();
    let mbr = mbr_kind(head);
    if mbr == Some(MbrKind::Plain) {
        found.push(Signature::Mbr);
    }
    let gpt_header = SECTORS.iter().any(|&s| at(s, GPT_MAGIC))
        || SECTORS.iter().any(|&s| {
            tail.len()
                .checked_sub(s)
                .is_some_and(|o| bytes_at(tail, o, GPT_MAGIC.len()) == Some(GPT_MAGIC))
        });
    if gpt_header || mbr == Some(MbrKind::Protective) {
        found.push(Signature::Gpt);
    }
    if at(1024 + 56, &[0x53, 0xEF]) {
        found.push(Signature::Ext);
    }
    if is_fat(head) {
        found.push(Signature::Fat);
    }
    if at(0, b"hsqs") {
        found.push(Signature::Squashfs);
    }
    if at(1024, &[0xE2, 0xE1, 0xF5, 0xE0]) {
        found.push(Signature::Erofs);
    }
    if at(0, b"XFSB") {
        found.push(Signature::Xfs);
    }
    if at(64 * KIB + 64, b"_BHRfS_M") {
        found.push(Signature::Btrfs);
    }
    if (0..4).any(|i| at(i * 512, b"LABELONE") && at(i * 512 + 24, b"LVM2 001")) {
        found.push(Signature::Lvm2);
    }
    if is_md(head, tail) {
        found.push(Signature::MdRaid);
    }
    if [4, 8, 16, 64]
        .iter()
        .any(|&k| at(k * KIB - 10, b"SWAPSPACE2") || at(k * KIB - 10, b"SWAP-SPACE"))
    {
        found.push(Signature::Swap);
    }
    if at(32 * KIB + 1, b"CD001") {
        found.push(Signature::Iso9660);
    }
    if at(0, b"LUKS\xBA\xBE") || [16, 32, 64].iter().any(|&k| at(k * KIB, b"SKUL\xBA\xBE")) {
        found.push(Signature::Luks);
    }
    found
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MbrKind {
    Plain,
    Protective,
}

/// An MBR partition table in the first sector: the boot signature, boot flags of 0 or
/// 0x80, at least one record in use, and no filesystem boot sector.
fn mbr_kind(head: &[u8]) -> Option<MbrKind> {
    if bytes_at(head, 510, 2) != Some(&[0x55, 0xAA]) || is_fat(head) {
        return None;
    }
    if bytes_at(head, 3, 8).is_some_and(|oem| oem == b"NTFS    " || oem == b"EXFAT   ") {
        return None;
    }
    let records = bytes_at(head, 446, 64)?;
    let mut used = records.chunks_exact(16).filter(|r| r[4] != 0).peekable();
    if records.chunks_exact(16).any(|r| r[0] != 0 && r[0] != 0x80) || used.peek().is_none() {
        return None;
    }
    if used.all(|r| r[4] == 0xEE) {
        Some(MbrKind::Protective)
    } else {
        Some(MbrKind::Plain)
    }
}

/// A FAT boot sector: a jump instruction, a power-of-two sector size of 512 to 4096, the
/// boot signature and the filesystem type string FAT12/16 or FAT32 keep.
fn is_fat(head: &[u8]) -> bool {
    let Some(boot) = head.get(..512) else {
        return false;
    };
    let jump = boot[0] == 0xEB || boot[0] == 0xE9;
    let sector = u16::from_le_bytes([boot[11], boot[12]]);
    jump && matches!(sector, 512 | 1024 | 2048 | 4096)
        && boot[510..512] == [0x55, 0xAA]
        && (boot[54..57] == *b"FAT" || boot[82..87] == *b"FAT32")
}

/// An md superblock: 1.1 at 0 and 1.2 at 4 KiB in the head; 1.0 (at the end less 8 KiB,
/// rounded down to 4 KiB) and 0.90 (at the end rounded down to 64 KiB, less 64 KiB) in
/// the tail, whose alignment is unknown, so every 512-byte step is tried.
fn is_md(head: &[u8], tail: &[u8]) -> bool {
    let v1 = |b: &[u8], at: usize| {
        bytes_at(b, at, 8)
            .is_some_and(|s| s[..4] == MD_MAGIC.to_le_bytes() && s[4..8] == 1u32.to_le_bytes())
    };
    // 0.90 is written in the host's byte order; its major version is 0.
    let v090 = |b: &[u8], at: usize| {
        bytes_at(b, at, 8).is_some_and(|s| {
            (s[..4] == MD_MAGIC.to_le_bytes() || s[..4] == MD_MAGIC.to_be_bytes())
                && s[4..8] == [0; 4]
        })
    };
    let from_end = |distance: usize| tail.len().checked_sub(distance);
    v1(head, 0)
        || v1(head, 4 * KIB)
        || (0..8).any(|k| from_end(8 * KIB + k * 512).is_some_and(|at| v1(tail, at)))
        || (0..128).any(|k| from_end(64 * KIB + k * 512).is_some_and(|at| v090(tail, at)))
}

/// `len` bytes of `b` at `at`, when there.
fn bytes_at(b: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    b.get(at..at.checked_add(len)?)
}

#[cfg(test)]
mod tests;
