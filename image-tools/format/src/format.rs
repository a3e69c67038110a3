//! Byte layout of a bundle file, format v1: the fixed header and the signature block.
//!
//! A bundle is, in this order (all integers little-endian):
//!
//! ```text
//! offset 0      header, 64 bytes
//!   0..8        magic "FLIPSLOT"
//!   8..10       format version, u16 = 1
//!   10..12      flags, u16 = 0 (no flags are defined; any set bit is rejected)
//!   12..16      header length, u32 = 64
//!   16..24      manifest length M, u64 (1 ..= MAX_MANIFEST_LEN)
//!   24..28      signature count N, u32 (1 ..= MAX_SIGNATURES)
//!   28..32      reserved, zero
//!   32..40      payload offset P, u64 = align_up(64 + M + 80 * N, 4096)
//!   40..64      reserved, zero
//! offset 64     manifest, M bytes of UTF-8 JSON (see `manifest`)
//! offset 64+M   N signature entries of 80 bytes each:
//!   0           algorithm, u8 = 1 (ed25519)
//!   1..8        reserved, zero
//!   8..16       key id: the first 8 bytes of SHA-256 over the raw 32-byte public key
//!   16..80      ed25519 signature over SIGNATURE_DOMAIN || manifest bytes
//!   ...         zero padding up to P
//! offset P      payload: the regions named by the manifest, back to back
//! ```
//!
//! The header carries no field that is not either checked against a constant or
//! covered by the signature, so a flipped bit anywhere before the payload is detected.
//! The payload is aligned to 4 KiB so it can be read with direct I/O and fetched by
//! HTTP ranges that line up with disk blocks. Chunk offsets in the manifest are relative
//! to the payload start, so adding a signature never changes the signed manifest.

use crate::error::BundleError;
pub use crate::keyid::KeyId;

/// The 8 bytes every bundle starts with.
pub const MAGIC: [u8; 8] = *b"FLIPSLOT";
/// The format version this library reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 64;
/// Alignment of the payload start.
pub const PAYLOAD_ALIGN: u64 = 4096;
/// Largest manifest accepted (a 64 GiB image in 1 MiB chunks needs about 13 MiB).
pub const MAX_MANIFEST_LEN: u64 = 64 << 20;
/// Most signatures a bundle may carry.
pub const MAX_SIGNATURES: u32 = 16;
/// Length of one signature entry.
pub const SIG_ENTRY_LEN: usize = 80;
/// Algorithm number of ed25519 in a signature entry.
pub const ALG_ED25519: u8 = 1;
/// Domain-separation prefix of the signed message.
pub const SIGNATURE_DOMAIN: &[u8] = b"flipslot bundle manifest v1\0";

/// The decoded fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Length of the manifest in bytes.
    pub manifest_len: u64,
    /// Number of signature entries.
    pub signature_count: u32,
}

impl Header {
    /// Offset of the manifest.
    pub fn manifest_offset(&self) -> u64 {
        HEADER_LEN as u64
    }

    /// Offset of the first signature entry.
    pub fn signatures_offset(&self) -> u64 {
        HEADER_LEN as u64 + self.manifest_len
    }

    /// Length of the signature block.
    pub fn signatures_len(&self) -> u64 {
        u64::from(self.signature_count) * SIG_ENTRY_LEN as u64
    }

    /// Offset of the payload: the end of the signatures rounded up to 4 KiB.
    pub fn payload_offset(&self) -> u64 {
        align_up(
            self.signatures_offset() + self.signatures_len(),
            PAYLOAD_ALIGN,
        )
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.manifest_len.to_le_bytes());
        b[24..28].copy_from_slice(&self.signature_count.to_le_bytes());
        b[32..40].copy_from_slice(&self.payload_offset().to_le_bytes());
        b
    }

    /// Decodes and checks a header. Every field is bounded or compared with a constant.
    /// A signature count of zero is accepted here (`verify` reports the bundle as unsigned).
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, BundleError> {
        if b[0..8] != MAGIC {
            return Err(BundleError::BadMagic);
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != FORMAT_VERSION {
            return Err(BundleError::UnsupportedVersion(version));
        }
        let flags = u16::from_le_bytes([b[10], b[11]]);
        if flags != 0 {
            return Err(BundleError::HeaderField {
                field: "flags",
                value: u64::from(flags),
            });
        }
        let header_len = u32::from_le_bytes(le4(&b[12..16]));
        if header_len as usize != HEADER_LEN {
            return Err(BundleError::HeaderField {
                field: "header length",
                value: u64::from(header_len),
            });
        }
        let manifest_len = u64::from_le_bytes(le8(&b[16..24]));
        if manifest_len == 0 || manifest_len > MAX_MANIFEST_LEN {
            return Err(BundleError::ManifestSize {
                len: manifest_len,
                max: MAX_MANIFEST_LEN,
            });
        }
        let signature_count = u32::from_le_bytes(le4(&b[24..28]));
        if signature_count > MAX_SIGNATURES {
            return Err(BundleError::TooManySignatures {
                count: signature_count,
                max: MAX_SIGNATURES,
            });
        }
        if let Some(offset) = (28..32).chain(40..64).find(|&i| b[i] != 0) {
            return Err(BundleError::Reserved {
                field: format!("reserved byte at offset {offset}"),
                found: format!("{:#04x}", b[offset]),
            });
        }
        let header = Header {
            manifest_len,
            signature_count,
        };
        let payload_offset = u64::from_le_bytes(le8(&b[32..40]));
        if payload_offset != header.payload_offset() {
            return Err(BundleError::HeaderField {
                field: "payload offset",
                value: payload_offset,
            });
        }
        Ok(header)
    }
}

/// One decoded signature entry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignatureEntry {
    /// Key id of the signer.
    pub key_id: KeyId,
    /// The raw ed25519 signature.
    pub signature: [u8; 64],
}

impl std::fmt::Debug for SignatureEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureEntry")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SignatureEntry {
    /// Encodes the entry into its 80 bytes.
    pub fn encode(&self) -> [u8; SIG_ENTRY_LEN] {
        let mut b = [0u8; SIG_ENTRY_LEN];
        b[0] = ALG_ED25519;
        b[8..16].copy_from_slice(&self.key_id.0);
        b[16..80].copy_from_slice(&self.signature);
        b
    }

    /// Decodes entry number `index` from its 80 bytes.
    pub fn decode(index: u32, b: &[u8]) -> Result<SignatureEntry, BundleError> {
        if b.len() != SIG_ENTRY_LEN {
            return Err(BundleError::HeaderField {
                field: "signature entry length",
                value: b.len() as u64,
            });
        }
        if b[0] != ALG_ED25519 {
            return Err(BundleError::UnsupportedAlgorithm {
                index,
                algorithm: b[0],
            });
        }
        if b[1..8].iter().any(|&x| x != 0) {
            return Err(BundleError::Reserved {
                field: format!("signature entry {index} reserved bytes 1..8"),
                found: b[1..8]
                    .iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            });
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&b[8..16]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&b[16..80]);
        Ok(SignatureEntry {
            key_id: KeyId(key_id),
            signature,
        })
    }
}

/// The exact message a signature covers.
pub fn signed_message(manifest: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_DOMAIN.len() + manifest.len());
    m.extend_from_slice(SIGNATURE_DOMAIN);
    m.extend_from_slice(manifest);
    m
}

/// Rounds `v` up to a multiple of `align` (a power of two).
pub fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}

fn le4(s: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(s);
    a
}

fn le8(s: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            manifest_len: 1000,
            signature_count: 2,
        }
    }

    #[test]
    fn header_round_trip_and_offsets() {
        let h = header();
        let b = h.encode();
        assert_eq!(Header::decode(&b).unwrap(), h);
        assert_eq!(h.signatures_offset(), 1064);
        assert_eq!(h.payload_offset(), 4096);
    }

    #[test]
    fn every_flipped_header_bit_is_rejected() {
        let good = header().encode();
        for byte in 0..HEADER_LEN {
            for bit in 0..8 {
                let mut b = good;
                b[byte] ^= 1 << bit;
                let r = Header::decode(&b);
                // A flip in the manifest length or signature count can still decode;
                // it then shifts the signed bytes or the signature entries, which the
                // reader catches (see the bundle tests).
                if (16..28).contains(&byte) {
                    continue;
                }
                assert!(r.is_err(), "flip at byte {byte} bit {bit} accepted");
            }
        }
    }

    #[test]
    fn huge_lengths_are_bounded() {
        let mut b = header().encode();
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            Header::decode(&b),
            Err(BundleError::ManifestSize { .. })
        ));
        let mut b = header().encode();
        b[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Header::decode(&b),
            Err(BundleError::TooManySignatures { .. })
        ));
    }

    #[test]
    fn signature_entry_round_trip() {
        let e = SignatureEntry {
            key_id: KeyId([1, 2, 3, 4, 5, 6, 7, 8]),
            signature: [9; 64],
        };
        assert_eq!(SignatureEntry::decode(0, &e.encode()).unwrap(), e);
        let mut b = e.encode();
        b[0] = 2;
        assert!(SignatureEntry::decode(0, &b).is_err());
        let mut b = e.encode();
        b[3] = 1;
        assert!(SignatureEntry::decode(0, &b).is_err());
    }

    #[test]
    fn reserved_byte_errors_show_the_bytes_found() {
        let mut b = header().encode();
        b[50] = 0x80;
        assert_eq!(
            Header::decode(&b).unwrap_err().to_string(),
            "invalid bundle header: reserved byte at offset 50 must be zero, found 0x80"
        );
        let mut b = header().encode();
        b[29] = 0x07;
        b[60] = 0x01;
        assert_eq!(
            Header::decode(&b).unwrap_err().to_string(),
            "invalid bundle header: reserved byte at offset 29 must be zero, found 0x07"
        );
        let mut b = SignatureEntry {
            key_id: KeyId([1; 8]),
            signature: [2; 64],
        }
        .encode();
        b[3] = 0x5a;
        assert_eq!(
            SignatureEntry::decode(7, &b).unwrap_err().to_string(),
            "invalid bundle header: signature entry 7 reserved bytes 1..8 must be zero, \
             found 00 00 5a 00 00 00 00"
        );
    }
}
