//! The channel file: the envelope around the signed payload, signing, and verification in
//! the documented order (size, envelope, signatures, payload, rules, freshness, compatible).

use super::{Channel, ChannelError, CHANNEL_FORMAT, CHANNEL_SIGNATURE_DOMAIN, MAX_CHANNEL_LEN};
use crate::format::MAX_SIGNATURES;
use crate::keyid::KeyId;
use crate::keys::{key_id, Keyring};
use crate::reader::VerifyPolicy;
use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};

/// The file around the signed payload.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    format: u32,
    payload: String,
    signatures: Vec<EnvelopeSignature>,
}

/// One signature entry of the envelope, hex-encoded.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeSignature {
    key_id: String,
    signature: String,
}

/// The exact message a channel signature covers: the domain, then the payload bytes.
pub fn signed_message(payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHANNEL_SIGNATURE_DOMAIN.len() + payload.len());
    m.extend_from_slice(CHANNEL_SIGNATURE_DOMAIN);
    m.extend_from_slice(payload);
    m
}

/// Signs a channel with each key and returns the channel file's bytes. The channel is
/// validated first, so an invalid channel is never signed. The output is deterministic
/// (ed25519 signatures are): the same channel and keys give the same bytes. A key given
/// twice signs once.
pub fn sign_channel(ch: &Channel, keys: &[SigningKey]) -> Result<Vec<u8>, ChannelError> {
    ch.validate()?;
    if keys.is_empty() {
        return Err(ChannelError::Sign("no signing key given".into()));
    }
    if keys.len() > MAX_SIGNATURES as usize {
        return Err(ChannelError::Sign(format!(
            "{} keys given, at most {MAX_SIGNATURES} signatures are allowed",
            keys.len()
        )));
    }
    let payload =
        serde_json::to_string(ch).map_err(|e| ChannelError::Sign(format!("payload: {e}")))?;
    let message = signed_message(payload.as_bytes());
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
        format: CHANNEL_FORMAT,
        payload,
        signatures,
    };
    let mut bytes = serde_json::to_vec_pretty(&envelope)
        .map_err(|e| ChannelError::Sign(format!("envelope: {e}")))?;
    bytes.push(b'\n');
    if bytes.len() > MAX_CHANNEL_LEN {
        return Err(ChannelError::TooLarge {
            len: bytes.len(),
            max: MAX_CHANNEL_LEN,
        });
    }
    Ok(bytes)
}

/// Decodes exactly `N` bytes of lower-case hex.
fn decode_hex<const N: usize>(field: &str, index: usize, s: &str) -> Result<[u8; N], ChannelError> {
    let mut out = [0u8; N];
    let lower = s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !lower || s.len() != 2 * N || hex::decode_to_slice(s, &mut out).is_err() {
        return Err(ChannelError::Syntax(format!(
            "envelope: signature {index}: {field} must be {} lower-case hex digits",
            2 * N
        )));
    }
    Ok(out)
}

/// Checks the envelope's signatures over the payload. A trusted key whose signature fails
/// is an error; keys not in the keyring are reported, not trusted.
fn verify_signatures(
    envelope: &Envelope,
    keyring: &Keyring,
    policy: &VerifyPolicy,
) -> Result<(), ChannelError> {
    if envelope.signatures.is_empty() {
        return Err(ChannelError::Unsigned);
    }
    if envelope.signatures.len() > MAX_SIGNATURES as usize {
        return Err(ChannelError::TooManySignatures {
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
    let message = signed_message(envelope.payload.as_bytes());
    let mut trusted: Vec<KeyId> = Vec::new();
    let mut untrusted: Vec<KeyId> = Vec::new();
    for (id, sig) in entries {
        match keyring.get(&id) {
            Some(key) => {
                key.verify_strict(&message, &Signature::from_bytes(&sig))
                    .map_err(|_| ChannelError::BadSignature { key_id: id })?;
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
        return Err(ChannelError::NotEnoughSignatures {
            trusted: count,
            required,
            untrusted,
        });
    }
    Ok(())
}

/// The first half of [`verify_channel`]: size bound, envelope, signatures, then the payload
/// is parsed and validated. The result is authentic and well-formed but NOT checked for
/// expiry, serial or compatible string; a device must use [`verify_channel`] (this is for
/// tools that inspect a channel).
pub fn verify_signed(
    bytes: &[u8],
    keyring: &Keyring,
    policy: &VerifyPolicy,
) -> Result<Channel, ChannelError> {
    if bytes.len() > MAX_CHANNEL_LEN {
        return Err(ChannelError::TooLarge {
            len: bytes.len(),
            max: MAX_CHANNEL_LEN,
        });
    }
    let envelope: Envelope = serde_json::from_slice(bytes)
        .map_err(|e| ChannelError::Syntax(format!("envelope: {e}")))?;
    if envelope.format != CHANNEL_FORMAT {
        return Err(ChannelError::UnsupportedFormat(envelope.format));
    }
    verify_signatures(&envelope, keyring, policy)?;
    let ch: Channel = serde_json::from_str(&envelope.payload)
        .map_err(|e| ChannelError::Syntax(format!("payload: {e}")))?;
    ch.validate()?;
    Ok(ch)
}

/// Verifies a channel file completely, in this order: size bound, envelope parse,
/// signatures over [`CHANNEL_SIGNATURE_DOMAIN`] || payload against `keyring` and `policy`,
/// payload parse, field rules ([`Channel::validate`]), expiry against `now` (unix seconds),
/// serial against `last_serial` (lower refused, equal accepted), and equality of the
/// compatible string. Nothing from the payload is parsed before its signatures verify.
pub fn verify_channel(
    bytes: &[u8],
    keyring: &Keyring,
    policy: &VerifyPolicy,
    now: u64,
    last_serial: Option<u64>,
    compatible: &str,
) -> Result<Channel, ChannelError> {
    let ch = verify_signed(bytes, keyring, policy)?;
    ch.check_fresh(now, last_serial)?;
    ch.check_compatible(compatible)?;
    Ok(ch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::tests::{channel, key, ring};

    #[test]
    fn sign_refuses_invalid_channels_and_missing_keys() {
        let mut c = channel();
        c.rollout_percent = 200;
        assert!(matches!(
            sign_channel(&c, &[key(1)]),
            Err(ChannelError::Invalid(_))
        ));
        assert!(matches!(
            sign_channel(&channel(), &[]),
            Err(ChannelError::Sign(_))
        ));
        let many: Vec<SigningKey> = (0..17).map(key).collect();
        assert!(matches!(
            sign_channel(&channel(), &many),
            Err(ChannelError::Sign(_))
        ));
    }

    #[test]
    fn a_key_given_twice_signs_once() {
        let bytes = sign_channel(&channel(), &[key(1), key(1), key(2)]).unwrap();
        let env: Envelope = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(env.signatures.len(), 2);
        // One trusted key cannot satisfy a threshold of two by signing twice.
        let err = verify_signed(
            &bytes,
            &ring(&[&key(1)]),
            &VerifyPolicy { min_signatures: 2 },
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ChannelError::NotEnoughSignatures {
                trusted: 1,
                required: 2,
                ..
            }
        ));
    }

    #[test]
    fn signatures_must_be_lower_case_hex_of_the_right_length() {
        let bytes = sign_channel(&channel(), &[key(1)]).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let env: Envelope = serde_json::from_str(&text).unwrap();
        let sig = &env.signatures[0].signature;
        for replacement in [
            sig.to_uppercase(),
            sig[..126].to_string(),
            format!("{sig}00"),
        ] {
            let t = text.replace(sig.as_str(), &replacement);
            let err = verify_signed(t.as_bytes(), &ring(&[&key(1)]), &VerifyPolicy::default())
                .unwrap_err();
            assert!(matches!(err, ChannelError::Syntax(_)), "{err:?}");
        }
    }

    #[test]
    fn too_many_signature_entries_are_refused_before_checking_any() {
        let env = Envelope {
            format: 1,
            payload: "{}".into(),
            signatures: (0..17)
                .map(|_| EnvelopeSignature {
                    key_id: "00".repeat(8),
                    signature: "00".repeat(64),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&env).unwrap();
        assert!(matches!(
            verify_signed(&bytes, &ring(&[&key(1)]), &VerifyPolicy::default()),
            Err(ChannelError::TooManySignatures { count: 17, .. })
        ));
    }

    #[test]
    fn envelope_format_is_checked() {
        let text = String::from_utf8(sign_channel(&channel(), &[key(1)]).unwrap()).unwrap();
        let t = text.replacen("\"format\": 1", "\"format\": 2", 1);
        assert!(matches!(
            verify_signed(t.as_bytes(), &ring(&[&key(1)]), &VerifyPolicy::default()),
            Err(ChannelError::UnsupportedFormat(2))
        ));
    }
}
