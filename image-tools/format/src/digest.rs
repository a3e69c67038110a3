//! SHA-256 and BLAKE3 digests as value types. Their serde form, used by every JSON output
//! and state file, is a string of 64 lower-case hex digits; reading accepts either case and
//! refuses anything else with an error that says what was wrong ([`ParseDigestError`]).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Hashes `data` in one go.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// Lower-case hex form (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters (either case); `None` for anything else. [`str::parse`]
    /// says what was wrong.
    pub fn from_hex(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// Why a string is not a SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseDigestError {
    /// The string is not 64 characters long.
    #[error("a sha256 is 64 hex digits, not {0} characters")]
    Length(usize),
    /// The string holds a character that is not a hex digit.
    #[error("a sha256 is 64 hex digits, but character {index} is {found:?}")]
    NotHex {
        /// The 0-based position of the character.
        index: usize,
        /// The character found.
        found: char,
    },
}

impl FromStr for Sha256Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((index, found)) = s.chars().enumerate().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(ParseDigestError::NotHex { index, found });
        }
        let mut out = [0u8; 32];
        // Only hex digits remain, so the only possible failure is the length.
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseDigestError::Length(s.len()))?;
        Ok(Self(out))
    }
}

impl From<Sha256> for Sha256Digest {
    fn from(h: Sha256) -> Self {
        Self(h.finalize().into())
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The hash every chunk of a bundle is checked with (one per manifest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChunkHash {
    /// SHA-256 (format 1, or format 2 naming it).
    Sha256,
    /// BLAKE3 (format 2): the default for new bundles.
    #[default]
    Blake3,
}

impl ChunkHash {
    /// The name used in manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ChunkHash::Sha256 => "sha256",
            ChunkHash::Blake3 => "blake3",
        }
    }
}

impl std::fmt::Display for ChunkHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ChunkHash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sha256" => Ok(ChunkHash::Sha256),
            "blake3" => Ok(ChunkHash::Blake3),
            other => Err(format!(
                "unknown chunk hash {other:?} (expected blake3 or sha256)"
            )),
        }
    }
}
/// A BLAKE3 digest (32 bytes): the chunk hash of manifests that name `blake3`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Blake3Digest(pub [u8; 32]);

impl Blake3Digest {
    /// Hashes `data` in one go.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    /// Lower-case hex form (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for Blake3Digest {
    type Err = String;

    /// The same hex rules as [`Sha256Digest`], with errors that name BLAKE3.
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<Sha256Digest>()
            .map(|d| Self(d.0))
            .map_err(|e| match e {
                ParseDigestError::Length(n) => {
                    format!("a blake3 hash is 64 hex digits, not {n} characters")
                }
                ParseDigestError::NotHex { index, found } => {
                    format!("a blake3 hash is 64 hex digits, but character {index} is {found:?}")
                }
            })
    }
}

impl fmt::Display for Blake3Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Blake3Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blake3:{}", self.to_hex())
    }
}

impl Serialize for Blake3Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Blake3Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_and_hex_round_trip() {
        let d = Sha256Digest::of(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Sha256Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Sha256Digest::from_hex("abc"), None);
        let json = serde_json::to_string(&d).unwrap();
        let back: Sha256Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Sha256Digest>("\"zz\"").is_err());
    }

    #[test]
    fn serializes_as_a_lower_case_hex_string() {
        let d = Sha256Digest([0xAB; 32]);
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            format!("\"{}\"", "ab".repeat(32))
        );
        let some: Option<Sha256Digest> = Some(d);
        assert_eq!(
            serde_json::to_value(some).unwrap(),
            serde_json::Value::String("ab".repeat(32))
        );
        let none: Option<Sha256Digest> = None;
        assert_eq!(serde_json::to_string(&none).unwrap(), "null");
    }

    #[test]
    fn blake3_known_vector_and_errors() {
        // The BLAKE3 reference value of the empty input.
        let d = Blake3Digest::of(b"");
        assert_eq!(
            d.to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        let back: Blake3Digest = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        let e = serde_json::from_str::<Blake3Digest>("\"00ff\"").unwrap_err();
        assert!(
            e.to_string()
                .contains("a blake3 hash is 64 hex digits, not 4"),
            "{e}"
        );
        assert_eq!(format!("{d:?}"), format!("blake3:{}", d.to_hex()));
    }

    #[test]
    fn reads_either_case() {
        let upper: Sha256Digest =
            serde_json::from_str(&format!("\"{}\"", "AB".repeat(32))).unwrap();
        assert_eq!(upper, Sha256Digest([0xAB; 32]));
        assert_eq!("Ab".repeat(32).parse(), Ok(upper));
    }

    #[test]
    fn refuses_bad_hex_and_says_why() {
        assert_eq!(
            "00ff".parse::<Sha256Digest>(),
            Err(ParseDigestError::Length(4))
        );
        assert_eq!(
            "ab".repeat(33).parse::<Sha256Digest>(),
            Err(ParseDigestError::Length(66))
        );
        let bad = format!("{}g{}", "a".repeat(10), "a".repeat(53));
        assert_eq!(
            bad.parse::<Sha256Digest>(),
            Err(ParseDigestError::NotHex {
                index: 10,
                found: 'g'
            })
        );
        assert_eq!(
            "é".parse::<Sha256Digest>(),
            Err(ParseDigestError::NotHex {
                index: 0,
                found: 'é'
            })
        );
        assert_eq!(Sha256Digest::from_hex(""), None);

        let e = serde_json::from_str::<Sha256Digest>("\"00ff\"").unwrap_err();
        assert!(
            e.to_string()
                .contains("a sha256 is 64 hex digits, not 4 characters"),
            "{e}"
        );
        let e = serde_json::from_str::<Sha256Digest>(&format!("\"{bad}\"")).unwrap_err();
        assert!(e.to_string().contains("character 10 is 'g'"), "{e}");
        assert!(serde_json::from_str::<Sha256Digest>("42").is_err());
    }
}
