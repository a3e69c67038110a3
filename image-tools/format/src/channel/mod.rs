//! The signed update channel: a small JSON document a fleet publishes next to its bundles,
//! naming the current release of a channel (`stable`, `beta`, ...), where its bundle lives
//! and which manifest it must have, signed with the same ed25519 keys as bundles.
//!
//! The file is a signed envelope ([`crate::envelope`]) whose `payload` is the exact signed
//! text of a [`Channel`]:
//!
//! ```text
//! {"format":1,
//!  "payload":"{\"format\":1,\"name\":\"stable\",...}",
//!  "signatures":[{"key_id":"<16 hex>","signature":"<128 hex>"}]}
//! ```
//!
//! Each signature is ed25519 over [`CHANNEL_SIGNATURE_DOMAIN`] followed by the payload's
//! UTF-8 bytes. [`verify_channel`] bounds the size, parses only the envelope, checks the
//! signatures against a keyring, and only then parses and validates the payload; then it
//! checks expiry, serial and compatible string. Like the rest of this crate it does no I/O:
//! the clock and the last accepted serial are arguments. `docs/channel-format.md` specifies
//! the format and its security properties.

mod file;
mod rollout;

pub use file::{read_unverified, sign_channel, signed_message, verify_channel, verify_signed};
pub use rollout::{in_rollout, rollout_bucket, ROLLOUT_DOMAIN};

use crate::digest::Sha256Digest;
use crate::format::PAYLOAD_ALIGN;
use crate::keyid::KeyId;
use serde::{Deserialize, Serialize};

/// Largest channel file accepted; checked before any parsing.
pub const MAX_CHANNEL_LEN: usize = 64 * 1024;
/// Domain-separation prefix of the signed message (distinct from the bundle manifest's, so
/// a signature over one can never be replayed as the other).
pub const CHANNEL_SIGNATURE_DOMAIN: &[u8] = b"flipslot channel v1\0";
/// Format number of the envelope and of the payload written and read by this library.
pub const CHANNEL_FORMAT: u32 = 1;
/// Most bundle URLs (mirrors) a channel may list.
pub const MAX_URLS: usize = 8;
/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// Longest channel name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest compatible string (as in a bundle manifest).
pub const MAX_COMPATIBLE_LEN: usize = 256;
/// Smallest possible bundle: a head padded to 4 KiB plus at least one payload byte.
pub const MIN_BUNDLE_SIZE: u64 = PAYLOAD_ALIGN + 1;

/// The signed content of a channel file: the release a channel currently points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Channel {
    /// Payload format number, 1.
    pub format: u32,
    /// Channel name, e.g. `stable`: 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// The system kind the release is for; must equal the device's compatible string.
    pub compatible: String,
    /// The release version (the bundle manifest's version).
    pub version: semver::Version,
    /// Monotonic issue number: a device refuses a serial lower than the last it accepted.
    pub serial: u64,
    /// When the channel was signed, seconds since the Unix epoch.
    pub issued_at: u64,
    /// Seconds since the Unix epoch from which the channel is refused (freeze attacks).
    pub expires_at: u64,
    /// The bundle of the release.
    pub bundle: ChannelBundle,
    /// Percentage of devices (0 to 100) that should install the release; see [`in_rollout`].
    #[serde(default = "hundred")]
    pub rollout_percent: u8,
}

fn hundred() -> u8 {
    100
}

/// Where a channel's bundle is and what it must be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ChannelBundle {
    /// Mirrors of the bundle, tried in order: 1 to 8 absolute `http://` or `https://` URLs.
    pub urls: Vec<String>,
    /// SHA-256 of the bundle's signed manifest bytes (its identity).
    pub manifest_sha256: Sha256Digest,
    /// Exact length of the bundle file in bytes.
    pub size: u64,
}

/// Everything that can go wrong with a channel file, in the order [`verify_channel`]
/// checks for it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The file is larger than [`MAX_CHANNEL_LEN`]; nothing was parsed.
    #[error("channel file is {len} bytes, at most {max} are accepted")]
    TooLarge {
        /// The file's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The envelope or the payload is not JSON of the expected shape.
    #[error("channel cannot be parsed: {0}")]
    Syntax(String),
    /// The envelope has a format number this library does not read.
    #[error("unsupported channel format {0} (this build reads format 1)")]
    UnsupportedFormat(u32),
    /// More signature entries than allowed.
    #[error("channel carries {count} signatures, at most {max} are allowed")]
    TooManySignatures {
        /// Entries found.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The channel carries no signature.
    #[error("channel is not signed")]
    Unsigned,
    /// A signature by a trusted key does not match the payload: tampering or corruption.
    #[error(
        "channel signature by trusted key {key_id} does not verify: the payload or signature was modified"
    )]
    BadSignature {
        /// The signer.
        key_id: KeyId,
    },
    /// Fewer valid signatures by distinct trusted keys than the policy requires.
    #[error("channel has {trusted} valid signature(s) by trusted keys, {required} required{}", crate::keyid::untrusted_note(.untrusted))]
    NotEnoughSignatures {
        /// Valid signatures by distinct trusted keys.
        trusted: u32,
        /// The policy's threshold.
        required: u32,
        /// Key ids of signatures by keys not in the keyring (not checked).
        untrusted: Vec<KeyId>,
    },
    /// The payload is authentic but breaks a rule (a field out of range).
    #[error("invalid channel: {0}")]
    Invalid(String),
    /// The channel has expired: it may be stale metadata replayed by an attacker.
    #[error(
        "channel expired at {expires_at} ({}), now is {now} ({}): it is stale, the publisher must re-sign it",
        crate::timefmt::rfc3339(*.expires_at),
        crate::timefmt::rfc3339(*.now)
    )]
    Expired {
        /// The channel's `expires_at`.
        expires_at: u64,
        /// The time it was checked at.
        now: u64,
    },
    /// The serial is lower than the last one accepted: an older channel is being replayed.
    #[error("channel serial {serial} is lower than the last accepted serial {last}: refusing a rollback of the channel")]
    SerialRollback {
        /// The channel's serial.
        serial: u64,
        /// The last serial the device accepted.
        last: u64,
    },
    /// The channel is for another kind of system.
    #[error("channel is for compatible {channel:?}, this system is {system:?}")]
    Incompatible {
        /// The channel's compatible string.
        channel: String,
        /// The device's.
        system: String,
    },
    /// The channel is not the one the device follows (served at the wrong address).
    #[error("channel is named {channel:?}, expected {expected:?}")]
    WrongName {
        /// The signed name.
        channel: String,
        /// The name the device follows.
        expected: String,
    },
    /// A channel cannot be signed with the keys given.
    #[error("cannot sign channel: {0}")]
    Sign(String),
}

/// Whether `s` is a valid channel name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks one bundle URL: absolute `http://` or `https://` (lower-case scheme), a non-empty
/// host, at most [`MAX_URL_LEN`] bytes, printable ASCII only (no spaces or control
/// characters; percent-encode anything else).
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!(
            "url of {} bytes is longer than {MAX_URL_LEN}",
            url.len()
        ));
    }
    if let Some(b) = url.bytes().find(|b| !(0x21..=0x7e).contains(b)) {
        return Err(format!(
            "url {url:?} holds byte 0x{b:02x}: only printable ASCII without spaces is allowed"
        ));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("url {url:?} is not an absolute http:// or https:// url"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("url {url:?} names no host"));
    }
    Ok(())
}

impl Channel {
    /// Checks every rule on the payload's fields: format, name, compatible, 1 to 8 distinct
    /// valid URLs, a plausible bundle size, a percentage of at most 100, and
    /// `issued_at <= expires_at`.
    pub fn validate(&self) -> Result<(), ChannelError> {
        let bad = |s: String| Err(ChannelError::Invalid(s));
        if self.format != CHANNEL_FORMAT {
            return bad(format!("unsupported payload format {}", self.format));
        }
        if !valid_name(&self.name) {
            return bad(format!(
                "name {:?} must be 1 to {MAX_NAME_LEN} of A-Z, a-z, 0-9, '.', '_' and '-'",
                self.name
            ));
        }
        if self.compatible.is_empty() || self.compatible.len() > MAX_COMPATIBLE_LEN {
            return bad(format!(
                "compatible must be 1 to {MAX_COMPATIBLE_LEN} bytes"
            ));
        }
        let urls = &self.bundle.urls;
        if urls.is_empty() || urls.len() > MAX_URLS {
            return bad(format!(
                "a channel lists 1 to {MAX_URLS} bundle urls, this one {}",
                urls.len()
            ));
        }
        for (i, url) in urls.iter().enumerate() {
            check_url(url).or_else(|e| bad(format!("bundle url {i}: {e}")))?;
            if urls[..i].contains(url) {
                return bad(format!("bundle url {url:?} is listed twice"));
            }
        }
        if self.bundle.size < MIN_BUNDLE_SIZE {
            return bad(format!(
                "bundle size {} is smaller than any bundle ({MIN_BUNDLE_SIZE} bytes)",
                self.bundle.size
            ));
        }
        if self.rollout_percent > 100 {
            return bad(format!(
                "rollout_percent {} is above 100",
                self.rollout_percent
            ));
        }
        if self.issued_at > self.expires_at {
            return bad(format!(
                "expires_at {} is before issued_at {}",
                self.expires_at, self.issued_at
            ));
        }
        Ok(())
    }

    /// Refuses an expired channel (`now >= expires_at`) and a serial lower than
    /// `last_serial` (an equal serial is the same channel fetched again, and accepted).
    pub fn check_fresh(&self, now: u64, last_serial: Option<u64>) -> Result<(), ChannelError> {
        if now >= self.expires_at {
            return Err(ChannelError::Expired {
                expires_at: self.expires_at,
                now,
            });
        }
        if let Some(last) = last_serial {
            if self.serial < last {
                return Err(ChannelError::SerialRollback {
                    serial: self.serial,
                    last,
                });
            }
        }
        Ok(())
    }

    /// Refuses a channel for another compatible string (exact, case-sensitive equality).
    pub fn check_compatible(&self, system: &str) -> Result<(), ChannelError> {
        if self.compatible != system {
            return Err(ChannelError::Incompatible {
                channel: self.compatible.clone(),
                system: system.to_string(),
            });
        }
        Ok(())
    }

    /// Refuses a channel whose signed name is not `expected`, so a `beta` channel served at
    /// the `stable` address is not followed.
    pub fn check_name(&self, expected: &str) -> Result<(), ChannelError> {
        if self.name != expected {
            return Err(ChannelError::WrongName {
                channel: self.name.clone(),
                expected: expected.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Keyring;
    use ed25519_dalek::SigningKey;
    use std::path::PathBuf;

    pub(super) fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    pub(super) fn ring(keys: &[&SigningKey]) -> Keyring {
        Keyring::from_keys(
            keys.iter()
                .map(|k| (k.verifying_key(), PathBuf::from("test.pub"))),
        )
    }

    pub(super) fn channel() -> Channel {
        Channel {
            format: 1,
            name: "stable".into(),
            compatible: "acme-box".into(),
            version: semver::Version::new(1, 2, 3),
            serial: 10,
            issued_at: 1000,
            expires_at: 2000,
            bundle: ChannelBundle {
                urls: vec!["https://updates.example.com/acme-box/1.2.3.fsb".into()],
                manifest_sha256: Sha256Digest::of(b"manifest"),
                size: 1 << 20,
            },
            rollout_percent: 100,
        }
    }

    #[test]
    fn urls_are_checked() {
        for good in [
            "https://a.example/x.fsb",
            "http://10.0.0.1:8080/b.fsb",
            "https://[::1]/x?y=1#z",
            "https://h",
        ] {
            assert_eq!(check_url(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "ftp://a/b",
            "HTTPS://a/b",
            "file:///x",
            "https:///x",
            "https://:80/x",
            "https://a/b c",
            "https://a/\u{e9}",
            "https://a/\n",
            "//a/b",
            "/relative.fsb",
        ] {
            assert!(check_url(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_url(&format!("https://a/{}", "x".repeat(MAX_URL_LEN))).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("stable"));
        assert!(valid_name("beta-2.x_y"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"x".repeat(65)));
    }

    #[test]
    fn field_rules() {
        assert!(channel().validate().is_ok());
        type Change = fn(&mut Channel);
        let cases: Vec<(&str, Change)> = vec![
            ("format", |c| c.format = 2),
            ("name", |c| c.name = "".into()),
            ("compatible", |c| c.compatible = "".into()),
            ("1 to 8", |c| c.bundle.urls.clear()),
            ("1 to 8", |c| {
                c.bundle.urls = (0..9).map(|i| format!("https://m{i}/b.fsb")).collect()
            }),
            ("twice", |c| {
                let u = c.bundle.urls[0].clone();
                c.bundle.urls.push(u)
            }),
            ("http", |c| c.bundle.urls[0] = "ftp://x/y".into()),
            ("size", |c| c.bundle.size = 4096),
            ("rollout_percent", |c| c.rollout_percent = 101),
            ("before issued_at", |c| c.expires_at = 999),
        ];
        for (what, change) in cases {
            let mut c = channel();
            change(&mut c);
            let err = c.validate().unwrap_err();
            assert!(matches!(err, ChannelError::Invalid(_)), "{what}: {err:?}");
            assert!(err.to_string().contains(what), "{what}: {err}");
        }
        let mut c = channel();
        c.expires_at = c.issued_at;
        assert!(c.validate().is_ok(), "issued_at == expires_at is allowed");
    }

    #[test]
    fn rollout_percent_defaults_to_100() {
        let mut v = serde_json::to_value(channel()).unwrap();
        v.as_object_mut().unwrap().remove("rollout_percent");
        let c: Channel = serde_json::from_value(v).unwrap();
        assert_eq!(c.rollout_percent, 100);
    }

    #[test]
    fn name_check() {
        assert!(channel().check_name("stable").is_ok());
        assert!(matches!(
            channel().check_name("beta"),
            Err(ChannelError::WrongName { .. })
        ));
    }
}
