//! The channel file: signing, and verification in the documented order (size, envelope,
//! signatures, payload, rules, freshness, compatible). The envelope itself is
//! [`crate::envelope`]'s, with the channel's domain, format and size limit.

use super::{Channel, ChannelError, CHANNEL_FORMAT, CHANNEL_SIGNATURE_DOMAIN, MAX_CHANNEL_LEN};
use crate::envelope::{EnvelopeError, EnvelopeKind};
use crate::keys::Keyring;
use crate::reader::VerifyPolicy;
use ed25519_dalek::SigningKey;

#[cfg(test)]
use crate::envelope::{Envelope, EnvelopeSignature};

/// The channel's kind of envelope.
const CHANNEL_ENVELOPE: EnvelopeKind = EnvelopeKind {
    domain: CHANNEL_SIGNATURE_DOMAIN,
    format: CHANNEL_FORMAT,
    max_len: MAX_CHANNEL_LEN,
};

impl From<EnvelopeError> for ChannelError {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::TooLarge { len, max } => ChannelError::TooLarge { len, max },
            EnvelopeError::Syntax(s) => ChannelError::Syntax(s),
            EnvelopeError::UnsupportedFormat { found, .. } => {
                ChannelError::UnsupportedFormat(found)
            }
            EnvelopeError::TooManySignatures { count, max } => {
                ChannelError::TooManySignatures { count, max }
            }
            EnvelopeError::Unsigned => ChannelError::Unsigned,
            EnvelopeError::BadSignature { key_id } => ChannelError::BadSignature { key_id },
            EnvelopeError::NotEnoughSignatures {
                trusted,
                required,
                untrusted,
            } => ChannelError::NotEnoughSignatures {
                trusted,
                required,
                untrusted,
            },
            EnvelopeError::Sign(s) => ChannelError::Sign(s),
        }
    }
}

/// The exact message a channel signature covers: the domain, then the payload bytes.
pub fn signed_message(payload: &[u8]) -> Vec<u8> {
    CHANNEL_ENVELOPE.signed_message(payload)
}

/// Signs a channel with each key and returns the channel file's bytes. The channel is
/// validated first, so an invalid channel is never signed. The output is deterministic
/// (ed25519 signatures are): the same channel and keys give the same bytes. A key given
/// twice signs once.
pub fn sign_channel(ch: &Channel, keys: &[SigningKey]) -> Result<Vec<u8>, ChannelError> {
    ch.validate()?;
    Ok(CHANNEL_ENVELOPE.sign(ch, keys)?)
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
    let payload = CHANNEL_ENVELOPE.verify(bytes, keyring, policy)?;
    let ch: Channel = serde_json::from_str(&payload)
        .map_err(|e| ChannelError::Syntax(format!("payload: {e}")))?;
    ch.validate()?;
    Ok(ch)
}

/// Reads a channel file WITHOUT checking its signatures: size bound, envelope, payload
/// parse and field rules ([`Channel::validate`]). For tools that show what an unverified
/// file says (`flipslot-image channel-diff` without a keyring) and say so; a device never
/// acts on it (use [`verify_channel`]).
pub fn read_unverified(bytes: &[u8]) -> Result<Channel, ChannelError> {
    let payload = CHANNEL_ENVELOPE.payload_unverified(bytes)?;
    let ch: Channel = serde_json::from_str(&payload)
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
    fn unverified_reads_check_everything_but_signatures() {
        let bytes = sign_channel(&channel(), &[key(1)]).unwrap();
        // Signed by a key nobody trusts: verification fails, the unverified read does not.
        assert!(verify_signed(&bytes, &ring(&[&key(2)]), &VerifyPolicy::default()).is_err());
        assert_eq!(read_unverified(&bytes).unwrap(), channel());
        // A modified payload still parses unverified (the signature is not looked at)...
        let text = String::from_utf8(bytes).unwrap();
        let t = text.replace("acme-box", "acme-toy");
        assert_eq!(
            read_unverified(t.as_bytes()).unwrap().compatible,
            "acme-toy"
        );
        // ... but every other rule holds: size, format, fields.
        assert!(matches!(
            read_unverified(&vec![b' '; MAX_CHANNEL_LEN + 1]),
            Err(ChannelError::TooLarge { .. })
        ));
        let t = text.replacen("\"format\": 1", "\"format\": 2", 1);
        assert!(matches!(
            read_unverified(t.as_bytes()),
            Err(ChannelError::UnsupportedFormat(2))
        ));
        let t = text.replace(r#"\"rollout_percent\":100"#, r#"\"rollout_percent\":101"#);
        assert!(t != text, "the payload holds rollout_percent");
        assert!(matches!(
            read_unverified(t.as_bytes()),
            Err(ChannelError::Invalid(_))
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
