//! The signed JSON envelope shared by every small signed document of flipslot (the update
//! channel, the provisioning description): a payload text and the ed25519 signatures over
//! it, signed with the same keys as bundles.
//!
//! ```text
//! {"format":1,
//!  "payload":"{\"format\":1,...}",
//!  "signatures":[{"key_id":"<16 hex>","signature":"<128 hex>"}]}
//! ```
//!
//! Each kind of document is an [`EnvelopeKind`]: its own domain-separation prefix (so a
//! signature over one kind can never be replayed as another, nor as a bundle manifest), its
//! format number and its size limit. Each signature is ed25519 over the domain followed by
//! the payload's UTF-8 bytes ([`signed_message`]). [`EnvelopeKind::verify`] bounds the size,
//! parses only the envelope, checks the format number and the signatures against a keyring
//! and a [`VerifyPolicy`], and only then hands out the payload text; the caller parses it.
//! Unknown fields and duplicated fields are refused, and key ids and signatures must be
//! lower-case hex of exact length, so a signed document has one spelling.

use crate::format::MAX_SIGNATURES;
use crate::keyid::KeyId;
use crate::keys::{key_id, Keyring};
use crate::reader::VerifyPolicy;
use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};

/// What distinguishes one kind of signed document from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeKind {
    /// Domain-separation prefix of the signed message, e.g. `b"flipslot channel v1\0"`.
    pub domain: &'static [u8],
    /// The envelope's format number written and accepted.
    pub format: u32,
    /// Largest file accepted (and written), in bytes; checked before any parsing.
    pub max_len: usize,
}

/// Everything that can go wrong with a signed envelope, in the order
/// [`EnvelopeKind::verify`] checks for it (then [`EnvelopeError::Sign`] for signing).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The file is larger than the kind's `max_len`; nothing was parsed.
    #[error("file is {len} bytes, at most {max} are accepted")]
    TooLarge {
        /// The file's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The envelope is not JSON of the expected shape (the text says which part).
    #[error("{0}")]
    Syntax(String),
    /// The envelope has a format number this library does not read.
    #[error("unsupported envelope format {found} (this build reads format {supported})")]
    UnsupportedFormat {
        /// The envelope's format number.
        found: u32,
        /// The one this build reads.
        supported: u32,
    },
    /// More signature entries than allowed; none was checked.
    #[error("{count} signatures, at most {max} are allowed")]
    TooManySignatures {
        /// Entries found.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The envelope carries no signature.
    #[error("not signed")]
    Unsigned,
    /// A signature by a trusted key does not match the payload: tampering or corruption.
    #[error(
        "signature by trusted key {key_id} does not verify: the payload or signature was modified"
    )]
    BadSignature {
        /// The signer.
        key_id: KeyId,
    },
    /// Fewer valid signatures by distinct trusted keys than the policy requires.
    #[error("{trusted} valid signature(s) by trusted keys, {required} required{}", crate::keyid::untrusted_note(.untrusted))]
    NotEnoughSignatures {
        /// Valid signatures by distinct trusted keys.
        trusted: u32,
        /// The policy's threshold.
        required: u32,
        /// Key ids of signatures by keys not in the keyring (not checked).
        untrusted: Vec<KeyId>,
    },
    /// The document cannot be signed with the keys given.
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// The file around the signed payload.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Envelope {
    pub(crate) format: u32,
    pub(crate) payload: String,
    pub(crate) signatures: Vec<EnvelopeSignature>,
}

/// One signature entry of the envelope, hex-encoded.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnvelopeSignature {
    pub(crate) key_id: String,
    pub(crate) signature: String,
}

/// The exact message a signature covers: `domain`, then the payload bytes.
pub fn signed_message(domain: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.len() + payload.len());
    m.extend_from_slice(domain);
    m.extend_from_slice(payload);
    m
}

impl EnvelopeKind {
    /// The exact message a signature of this kind covers: the domain, then the payload.
    pub fn signed_message(&self, payload: &[u8]) -> Vec<u8> {
        signed_message(self.domain, payload)
    }

    /// Serializes `payload` as compact JSON, signs it with each key and returns the file's
    /// bytes (pretty JSON and a newline). The output is deterministic (ed25519 signatures
    /// are): the same payload and keys give the same bytes. A key given twice signs once.
    /// The caller validates the payload first.
    pub fn sign<T: Serialize>(
        &self,
        payload: &T,
        keys: &[SigningKey],
    ) -> Result<Vec<u8>, EnvelopeError> {
        if keys.is_empty() {
            return Err(EnvelopeError::Sign("no signing key given".into()));
        }
        if keys.len() > MAX_SIGNATURES as usize {
            return Err(EnvelopeError::Sign(format!(
                "{} keys given, at most {MAX_SIGNATURES} signatures are allowed",
                keys.len()
            )));
        }
        let payload = serde_json::to_string(payload)
            .map_err(|e| EnvelopeError::Sign(format!("payload: {e}")))?;
        let message = self.signed_message(payload.as_bytes());
        let mut ids: Vec<KeyId> = Vec::new();
        let mut signatures = Vec::new();
        for k in keys {
            let id = key_id(&k.verifying_key());
            if ids.contains(&id) {
                continue;
            }
            ids.push(id);
            signatures.push(EnvelopeSignature {
                key_id: id.to_string(),
                signature: hex::encode(k.sign(&message).to_bytes()),
            });
        }
        let envelope = Envelope {
            format: self.format,
            payload,
            signatures,
        };
        let mut bytes = serde_json::to_vec_pretty(&envelope)
            .map_err(|e| EnvelopeError::Sign(format!("envelope: {e}")))?;
        bytes.push(b'\n');
        if bytes.len() > self.max_len {
            return Err(EnvelopeError::TooLarge {
                len: bytes.len(),
                max: self.max_len,
            });
        }
        Ok(bytes)
    }

    /// Verifies a file of this kind and returns its payload text, in this order: size bound,
    /// envelope parse, format number, signatures over the domain and the payload against
    /// `keyring` and `policy`. The payload is not parsed here: the caller parses it, and
    /// only after this returned it.
    pub fn verify(
        &self,
        bytes: &[u8],
        keyring: &Keyring,
        policy: &VerifyPolicy,
    ) -> Result<String, EnvelopeError> {
        let envelope = self.parse(bytes)?;
        self.verify_signatures(&envelope, keyring, policy)?;
        Ok(envelope.payload)
    }

    /// The payload text of a file of this kind WITHOUT checking any signature: size
    /// bound, envelope parse and format number only. For tools that show what a file
    /// says and say that it is unverified; nothing may act on it.
    pub fn payload_unverified(&self, bytes: &[u8]) -> Result<String, EnvelopeError> {
        Ok(self.parse(bytes)?.payload)
    }

    /// Size bound, envelope parse, format number.
    fn parse(&self, bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        if bytes.len() > self.max_len {
            return Err(EnvelopeError::TooLarge {
                len: bytes.len(),
                max: self.max_len,
            });
        }
        let envelope: Envelope = serde_json::from_slice(bytes)
            .map_err(|e| EnvelopeError::Syntax(format!("envelope: {e}")))?;
        if envelope.format != self.format {
            return Err(EnvelopeError::UnsupportedFormat {
                found: envelope.format,
                supported: self.format,
            });
        }
        Ok(envelope)
    }

    /// Checks the envelope's signatures over the payload. A trusted key whose signature
    /// fails is an error; keys not in the keyring are reported, not trusted.
    fn verify_signatures(
        &self,
        envelope: &Envelope,
        keyring: &Keyring,
        policy: &VerifyPolicy,
    ) -> Result<(), EnvelopeError> {
        if envelope.signatures.is_empty() {
            return Err(EnvelopeError::Unsigned);
        }
        if envelope.signatures.len() > MAX_SIGNATURES as usize {
            return Err(EnvelopeError::TooManySignatures {
                count: envelope.signatures.len(),
                max: MAX_SIGNATURES as usize,
            });
        }
        let mut entries = Vec::with_capacity(envelope.signatures.len());
        for (i, s) in envelope.signatures.iter().enumerate() {
            let id = KeyId(decode_hex::<8>("key_id", i, &s.key_id)?);
            let sig = decode_hex::<64>("signature", i, &s.signature)?;
            entries.push((id, sig));
        }
        let message = self.signed_message(envelope.payload.as_bytes());
        let mut trusted: Vec<KeyId> = Vec::new();
        let mut untrusted: Vec<KeyId> = Vec::new();
        for (id, sig) in entries {
            match keyring.get(&id) {
                Some(key) => {
                    key.verify_strict(&message, &Signature::from_bytes(&sig))
                        .map_err(|_| EnvelopeError::BadSignature { key_id: id })?;
                    if !trusted.contains(&id) {
                        trusted.push(id);
                    }
                }
                None => {
                    if !untrusted.contains(&id) {
                        untrusted.push(id);
                    }
                }
            }
        }
        let required = policy.min_signatures.max(1);
        // At most MAX_SIGNATURES entries, so the count fits.
        let count = trusted.len() as u32;
        if count < required {
            return Err(EnvelopeError::NotEnoughSignatures {
                trusted: count,
                required,
                untrusted,
            });
        }
        Ok(())
    }
}

/// Decodes exactly `N` bytes of lower-case hex.
fn decode_hex<const N: usize>(
    field: &str,
    index: usize,
    s: &str,
) -> Result<[u8; N], EnvelopeError> {
    let mut out = [0u8; N];
    let lower = s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !lower || s.len() != 2 * N || hex::decode_to_slice(s, &mut out).is_err() {
        return Err(EnvelopeError::Syntax(format!(
            "envelope: signature {index}: {field} must be {} lower-case hex digits",
            2 * N
        )));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;
    use std::path::PathBuf;

    const KIND: EnvelopeKind = EnvelopeKind {
        domain: b"flipslot test v1\0",
        format: 1,
        max_len: 4096,
    };
    const OTHER: EnvelopeKind = EnvelopeKind {
        domain: b"flipslot other v1\0",
        format: 1,
        max_len: 4096,
    };

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn ring(keys: &[&SigningKey]) -> Keyring {
        Keyring::from_keys(
            keys.iter()
                .map(|k| (k.verifying_key(), PathBuf::from("test.pub"))),
        )
    }

    fn policy(n: u32) -> VerifyPolicy {
        VerifyPolicy { min_signatures: n }
    }

    #[test]
    fn round_trip_returns_the_exact_payload_text() {
        let payload = serde_json::json!({"a": 1, "b": "x\"y"});
        let bytes = KIND.sign(&payload, &[key(1)]).unwrap();
        assert!(bytes.ends_with(b"}\n"));
        let text = KIND.verify(&bytes, &ring(&[&key(1)]), &policy(1)).unwrap();
        assert_eq!(text, serde_json::to_string(&payload).unwrap());
        assert_eq!(
            bytes,
            KIND.sign(&payload, &[key(1)]).unwrap(),
            "deterministic"
        );
    }

    #[test]
    fn a_signature_of_one_kind_does_not_verify_as_another() {
        let bytes = KIND.sign(&"payload", &[key(1)]).unwrap();
        assert!(matches!(
            OTHER.verify(&bytes, &ring(&[&key(1)]), &policy(1)),
            Err(EnvelopeError::BadSignature { .. })
        ));
        let mut msg = b"flipslot test v1\0".to_vec();
        msg.extend_from_slice(b"{}");
        assert_eq!(KIND.signed_message(b"{}"), msg);
    }

    #[test]
    fn refusals_in_order() {
        let ring1 = ring(&[&key(1)]);
        let huge = vec![b' '; KIND.max_len + 1];
        assert!(matches!(
            KIND.verify(&huge, &ring1, &policy(1)),
            Err(EnvelopeError::TooLarge { len, max: 4096 }) if len == 4097
        ));
        assert!(matches!(
            KIND.verify(b"{", &ring1, &policy(1)),
            Err(EnvelopeError::Syntax(_))
        ));
        let v2 = EnvelopeKind { format: 2, ..KIND };
        let bytes = v2.sign(&1, &[key(1)]).unwrap();
        let err = KIND.verify(&bytes, &ring1, &policy(1)).unwrap_err();
        assert!(matches!(
            err,
            EnvelopeError::UnsupportedFormat {
                found: 2,
                supported: 1
            }
        ));
        assert_eq!(
            err.to_string(),
            "unsupported envelope format 2 (this build reads format 1)"
        );
        let unsigned = br#"{"format":1,"payload":"1","signatures":[]}"#;
        assert!(matches!(
            KIND.verify(unsigned, &ring1, &policy(1)),
            Err(EnvelopeError::Unsigned)
        ));
        let by_other = KIND.sign(&1, &[key(2)]).unwrap();
        let err = KIND.verify(&by_other, &ring1, &policy(1)).unwrap_err();
        assert!(
            matches!(&err, EnvelopeError::NotEnoughSignatures { trusted: 0, required: 1, untrusted } if untrusted.len() == 1),
            "{err:?}"
        );
        assert!(err.to_string().contains("untrusted key(s)"), "{err}");
    }

    #[test]
    fn signing_needs_keys_and_fits_the_limit() {
        assert!(matches!(KIND.sign(&1, &[]), Err(EnvelopeError::Sign(_))));
        let many: Vec<SigningKey> = (0..17).map(key).collect();
        assert!(matches!(KIND.sign(&1, &many), Err(EnvelopeError::Sign(_))));
        let big = "x".repeat(KIND.max_len);
        assert!(matches!(
            KIND.sign(&big, &[key(1)]),
            Err(EnvelopeError::TooLarge { .. })
        ));
    }
}
