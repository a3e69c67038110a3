//! GUIDs: the text form, GPT's mixed-endian on-disk form, the partition type GUIDs
//! flipslot uses, and the seeded derivation that makes a planned table deterministic.
//!
//! A [`Guid`] holds its 16 bytes in text order: `C12A7328-F81F-11D2-BA4B-00A0C93EC93B` is
//! `[0xC1, 0x2A, 0x73, 0x28, 0xF8, 0x1F, …]`. On disk, GPT stores the first three fields
//! (4, 2 and 2 bytes) little-endian and the last eight bytes as written
//! ([`Guid::to_gpt_bytes`], [`Guid::from_gpt_bytes`]).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// A GUID (UUID), its bytes in text order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

/// The EFI system partition type, `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`.
pub const ESP_TYPE: Guid = Guid([
    0xC1, 0x2A, 0x73, 0x28, 0xF8, 0x1F, 0x11, 0xD2, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B,
]);

/// The Linux filesystem data partition type, `0FC63DAF-8483-4772-8E79-3D69D8477DE4`.
pub const LINUX_FS_TYPE: Guid = Guid([
    0x0F, 0xC6, 0x3D, 0xAF, 0x84, 0x83, 0x47, 0x72, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4,
]);

/// The domain separator of [`Guid::derive`].
const DERIVE_DOMAIN: &[u8] = b"flipslot gpt guid\0";

/// Where the dashes of the text form are.
const DASHES: [usize; 4] = [8, 13, 18, 23];

/// Length of the text form.
const TEXT_LEN: usize = 36;

/// Longest piece of a refused text quoted back in [`GuidError`].
const QUOTE_MAX: usize = 64;

impl Guid {
    /// The all-zero GUID (an unused partition entry has this type).
    pub const NIL: Guid = Guid([0; 16]);

    /// Whether this is the all-zero GUID.
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Derives a GUID from a seed: the first 16 bytes of
    /// `SHA-256(b"flipslot gpt guid\0" || seed || n.to_le_bytes())`, with the RFC 4122
    /// version (4) and variant (`10`) bits set.
    ///
    /// The planner uses `n = 0` for the disk GUID and the partition number for each
    /// partition's unique GUID, so the same description on the same disk always gives the
    /// same table.
    pub fn derive(seed: &[u8], n: u32) -> Guid {
        let mut h = Sha256::new();
        h.update(DERIVE_DOMAIN);
        h.update(seed);
        h.update(n.to_le_bytes());
        let digest = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        b[6] = (b[6] & 0x0F) | 0x40;
        b[8] = (b[8] & 0x3F) | 0x80;
        Guid(b)
    }

    /// The 16 bytes as GPT stores them: the first three fields little-endian.
    pub fn to_gpt_bytes(&self) -> [u8; 16] {
        swap_fields(self.0)
    }

    /// The GUID from the 16 bytes GPT stores (the first three fields little-endian).
    pub fn from_gpt_bytes(bytes: [u8; 16]) -> Guid {
        Guid(swap_fields(bytes))
    }
}

/// Reverses the first three fields (4, 2 and 2 bytes); its own inverse.
fn swap_fields(mut b: [u8; 16]) -> [u8; 16] {
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

impl fmt::Display for Guid {
    /// The usual upper-case text form, `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

/// Why a text is not a GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuidError {
    /// The text is not 36 characters of hex digits with dashes after the 8th, 12th, 16th
    /// and 20th digit (either case is accepted).
    #[error("guid {text:?} is not of the form XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX")]
    Malformed {
        /// The refused text (at most its first 64 characters).
        text: String,
    },
}

impl FromStr for Guid {
    type Err = GuidError;

    /// Parses the text form, in upper or lower case (no braces, no surrounding space).
    fn from_str(s: &str) -> Result<Guid, GuidError> {
        let malformed = || GuidError::Malformed {
            text: s.chars().take(QUOTE_MAX).collect(),
        };
        let text = s.as_bytes();
        if text.len() != TEXT_LEN {
            return Err(malformed());
        }
        let mut out = [0u8; 16];
        let mut nibbles = 0usize;
        for (i, &c) in text.iter().enumerate() {
            if DASHES.contains(&i) {
                if c != b'-' {
                    return Err(malformed());
                }
                continue;
            }
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(malformed()),
            };
            let byte = &mut out[nibbles / 2];
            *byte = (*byte << 4) | v;
            nibbles += 1;
        }
        Ok(Guid(out))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    #[test]
    fn known_types_print_as_written() {
        assert_eq!(ESP_TYPE.to_string(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(
            LINUX_FS_TYPE.to_string(),
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
        );
    }

    #[test]
    fn parses_either_case_and_round_trips() {
        let up: Guid = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".parse().unwrap();
        let low: Guid = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b".parse().unwrap();
        assert_eq!(up, ESP_TYPE);
        assert_eq!(low, ESP_TYPE);
        let g = Guid::derive(b"x", 7);
        assert_eq!(g.to_string().parse::<Guid>().unwrap(), g);
    }

    #[test]
    fn refuses_malformed_text() {
        for bad in [
            "",
            "C12A7328F81F11D2BA4B00A0C93EC93B",
            "{C12A7328-F81F-11D2-BA4B-00A0C93EC93B}",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93BB",
            "C12A7328-F81F-11D2-BA4B_00A0C93EC93B",
            "G12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            " C12A7328-F81F-11D2-BA4B-00A0C93EC93",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC9é",
        ] {
            let err = bad.parse::<Guid>().unwrap_err();
            assert!(err.to_string().starts_with("guid "), "{err}");
        }
        let long = "x".repeat(1000);
        let GuidError::Malformed { text } = long.parse::<Guid>().unwrap_err();
        assert_eq!(text.len(), QUOTE_MAX);
    }

    #[test]
    fn gpt_bytes_swap_the_first_three_fields() {
        // The ESP type as it appears on disk (UEFI spec, and any sgdisk-written table).
        let disk = [
            0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
            0xC9, 0x3B,
        ];
        assert_eq!(ESP_TYPE.to_gpt_bytes(), disk);
        assert_eq!(Guid::from_gpt_bytes(disk), ESP_TYPE);
    }

    #[test]
    fn derive_is_deterministic_and_shaped_as_version_4() {
        let a = Guid::derive(b"seed", 1);
        assert_eq!(a, Guid::derive(b"seed", 1));
        assert_ne!(a, Guid::derive(b"seed", 2));
        assert_ne!(a, Guid::derive(b"seed2", 1));
        // The seed and the number are not ambiguous across their boundary.
        assert_ne!(Guid::derive(b"", 1), Guid::derive(&[1], 0));
        for n in 0..64 {
            let g = Guid::derive(b"seed", n);
            assert_eq!(g.0[6] >> 4, 4, "{g}");
            assert_eq!(g.0[8] >> 6, 0b10, "{g}");
            assert_eq!(g.to_string().as_bytes()[14], b'4');
        }
        // Fixed: a change here changes every provisioned table.
        let mut h = Sha256::new();
        h.update(b"flipslot gpt guid\0seed");
        h.update(3u32.to_le_bytes());
        let d = h.finalize();
        let g = Guid::derive(b"seed", 3);
        assert_eq!(g.0[..6], d[..6]);
        assert_eq!(g.0[7], d[7]);
        assert_eq!(g.0[9..], d[9..16]);
    }

    #[test]
    fn nil_is_nil() {
        assert!(Guid::NIL.is_nil());
        assert!(!ESP_TYPE.is_nil());
        assert_eq!(
            Guid::NIL.to_string(),
            "00000000-0000-0000-0000-000000000000"
        );
    }
}
