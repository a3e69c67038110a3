//! Tests of the signed update channel: signing and verification through the library
//! (every refusal in `verify_channel`'s order) and rollout cohorts. The `channel` and
//! `channel-verify` commands are tested end to end in `image-tools/tests/channel_cli.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::SigningKey;
use flipslot_format::channel::{
    in_rollout, rollout_bucket, sign_channel, verify_channel, Channel, ChannelBundle, ChannelError,
    MAX_CHANNEL_LEN,
};
use flipslot_format::keys::key_id;
use flipslot_format::{Keyring, Sha256Digest, VerifyPolicy};
use std::path::PathBuf;

const NOW: u64 = 1_700_000_000;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn ring(keys: &[&SigningKey]) -> Keyring {
    Keyring::from_keys(keys.iter().map(|k| {
        (
            k.verifying_key(),
            PathBuf::from(format!("{}.pub", key_id(&k.verifying_key()))),
        )
    }))
}

fn policy(n: u32) -> VerifyPolicy {
    VerifyPolicy { min_signatures: n }
}

fn channel() -> Channel {
    Channel {
        format: 1,
        name: "stable".into(),
        compatible: "acme-box".into(),
        version: semver::Version::new(1, 2, 3),
        serial: 42,
        issued_at: NOW - 3600,
        expires_at: NOW + 7 * 86_400,
        bundle: ChannelBundle {
            urls: vec![
                "https://updates.example.com/acme-box/acme-box-1.2.3.fsb".into(),
                "http://mirror.example.net/acme-box-1.2.3.fsb".into(),
            ],
            manifest_sha256: Sha256Digest::of(b"the manifest"),
            size: 123_456_789,
        },
        rollout_percent: 100,
    }
}

/// Verifies as a device with keyring {key 1}, policy 1, at NOW, no last serial.
fn check(bytes: &[u8]) -> Result<Channel, ChannelError> {
    verify_channel(bytes, &ring(&[&key(1)]), &policy(1), NOW, None, "acme-box")
}

fn signed(ch: &Channel) -> Vec<u8> {
    sign_channel(ch, &[key(1)]).unwrap()
}

/// The envelope as JSON, to craft files that `sign_channel` would never write.
fn envelope(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Signs an arbitrary payload text with key 1, bypassing `Channel::validate`.
fn sign_raw_payload(payload: &str) -> Vec<u8> {
    use ed25519_dalek::Signer;
    let mut msg = flipslot_format::channel::CHANNEL_SIGNATURE_DOMAIN.to_vec();
    msg.extend_from_slice(payload.as_bytes());
    let sig = key(1).sign(&msg);
    serde_json::to_vec(&serde_json::json!({
        "format": 1,
        "payload": payload,
        "signatures": [{
            "key_id": key_id(&key(1).verifying_key()).to_string(),
            "signature": hex::encode(sig.to_bytes()),
        }],
    }))
    .unwrap()
}

#[test]
fn round_trip() {
    let ch = channel();
    let bytes = signed(&ch);
    assert!(bytes.len() < 2048, "{}", bytes.len());
    assert_eq!(check(&bytes).unwrap(), ch);
    // The payload is the exact signed text of the channel, a JSON string in the envelope.
    let env = envelope(&bytes);
    assert_eq!(env["format"], 1);
    let payload = env["payload"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Channel>(payload).unwrap(), ch);
    assert_eq!(
        env["signatures"][0]["key_id"],
        key_id(&key(1).verifying_key()).to_string()
    );
    assert_eq!(
        env["signatures"][0]["signature"].as_str().unwrap().len(),
        128
    );
    // Two signers, two required.
    let bytes = sign_channel(&ch, &[key(1), key(2)]).unwrap();
    let got = verify_channel(
        &bytes,
        &ring(&[&key(1), &key(2)]),
        &policy(2),
        NOW,
        Some(42),
        "acme-box",
    )
    .unwrap();
    assert_eq!(got, ch);
}

#[test]
fn signing_is_deterministic() {
    let a = sign_channel(&channel(), &[key(1), key(2)]).unwrap();
    let b = sign_channel(&channel(), &[key(1), key(2)]).unwrap();
    assert_eq!(a, b);
    let mut other = channel();
    other.serial += 1;
    assert_ne!(a, sign_channel(&other, &[key(1), key(2)]).unwrap());
}

#[test]
fn expired_channels_are_refused() {
    let ch = channel();
    let bytes = signed(&ch);
    let ring = ring(&[&key(1)]);
    let at = |now| verify_channel(&bytes, &ring, &policy(1), now, None, "acme-box");
    assert!(at(ch.expires_at - 1).is_ok());
    for now in [ch.expires_at, ch.expires_at + 1, u64::MAX] {
        let r = at(now);
        let msg = r.as_ref().map(|_| String::new()).unwrap_err().to_string();
        assert!(msg.contains("expired at") && msg.contains('Z'), "{msg}");
        match r {
            Err(ChannelError::Expired { expires_at, now: n }) => {
                assert_eq!((expires_at, n), (ch.expires_at, now))
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn serial_rollback_is_refused_and_equal_is_accepted() {
    let bytes = signed(&channel());
    let ring = ring(&[&key(1)]);
    let with_last = |last| verify_channel(&bytes, &ring, &policy(1), NOW, last, "acme-box");
    assert!(with_last(None).is_ok());
    assert!(with_last(Some(0)).is_ok());
    assert!(with_last(Some(41)).is_ok());
    assert!(
        with_last(Some(42)).is_ok(),
        "the same channel fetched again"
    );
    assert!(matches!(
        with_last(Some(43)),
        Err(ChannelError::SerialRollback {
            serial: 42,
            last: 43
        })
    ));
}

#[test]
fn unsigned_unknown_key_and_too_few_signatures() {
    let bytes = signed(&channel());
    let mut env = envelope(&bytes);
    env["signatures"] = serde_json::json!([]);
    let unsigned = serde_json::to_vec(&env).unwrap();
    assert!(matches!(check(&unsigned), Err(ChannelError::Unsigned)));

    // Signed by a key the device does not trust.
    let by_other = sign_channel(&channel(), &[key(9)]).unwrap();
    match check(&by_other) {
        Err(ChannelError::NotEnoughSignatures {
            trusted: 0,
            required: 1,
            untrusted,
        }) => assert_eq!(untrusted, vec![key_id(&key(9).verifying_key())]),
        other => panic!("{other:?}"),
    }

    // One trusted signature where two are required.
    let both = sign_channel(&channel(), &[key(1), key(9)]).unwrap();
    assert!(check(&both).is_ok(), "an untrusted extra signer is ignored");
    let err = verify_channel(
        &both,
        &ring(&[&key(1), &key(2)]),
        &policy(2),
        NOW,
        None,
        "acme-box",
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
    assert!(err.to_string().contains("untrusted"), "{err}");
}

#[test]
fn a_tampered_payload_has_a_bad_signature() {
    let bytes = signed(&channel());
    let text = String::from_utf8(bytes.clone()).unwrap();
    let tampered = text.replacen("acme-box-1.2.3.fsb", "acme-box-1.2.4.fsb", 1);
    assert_ne!(tampered, text);
    assert!(matches!(
        check(tampered.as_bytes()),
        Err(ChannelError::BadSignature { key_id: k }) if k == key_id(&key(1).verifying_key())
    ));
    // Every single-character change inside the payload is caught by the signature (or,
    // when it breaks the envelope's JSON string, by the parser), never accepted.
    let env = envelope(&bytes);
    let payload = env["payload"].as_str().unwrap().to_string();
    for i in 0..payload.len() {
        let mut p = payload.clone().into_bytes();
        p[i] = if p[i] == b'x' { b'y' } else { b'x' };
        let mut e = env.clone();
        e["payload"] = serde_json::json!(String::from_utf8(p).unwrap());
        let r = check(&serde_json::to_vec(&e).unwrap());
        assert!(
            matches!(r, Err(ChannelError::BadSignature { .. })),
            "change at {i}: {r:?}"
        );
    }
    // A changed signature byte.
    let sig = env["signatures"][0]["signature"].as_str().unwrap();
    let flipped = format!("{}{}", if &sig[..1] == "0" { "1" } else { "0" }, &sig[1..]);
    let t = text.replace(sig, &flipped);
    assert!(matches!(
        check(t.as_bytes()),
        Err(ChannelError::BadSignature { .. })
    ));
}

#[test]
fn malformed_envelopes_fail_with_bounded_errors() {
    let bytes = signed(&channel());
    // Unknown envelope field.
    let mut env = envelope(&bytes);
    env["comment"] = serde_json::json!("hello");
    let err = check(&serde_json::to_vec(&env).unwrap()).unwrap_err();
    assert!(matches!(err, ChannelError::Syntax(_)), "{err:?}");
    assert!(err.to_string().contains("comment"), "{err}");
    // Unknown field in a signature entry.
    let mut env = envelope(&bytes);
    env["signatures"][0]["alg"] = serde_json::json!("ed25519");
    assert!(matches!(
        check(&serde_json::to_vec(&env).unwrap()),
        Err(ChannelError::Syntax(_))
    ));
    // Missing payload, not JSON, not UTF-8, empty.
    let mut env = envelope(&bytes);
    env.as_object_mut().unwrap().remove("payload");
    for bad in [
        serde_json::to_vec(&env).unwrap(),
        b"not json".to_vec(),
        vec![0xff, 0xfe, 0x00],
        Vec::new(),
        b"[]".to_vec(),
    ] {
        assert!(matches!(check(&bad), Err(ChannelError::Syntax(_))));
    }
    // Too large: refused before parsing, whatever it holds.
    let huge = vec![b' '; MAX_CHANNEL_LEN + 1];
    assert!(matches!(
        check(&huge),
        Err(ChannelError::TooLarge { len, max }) if len == MAX_CHANNEL_LEN + 1 && max == MAX_CHANNEL_LEN
    ));
    let mut padded = bytes.clone();
    padded.resize(MAX_CHANNEL_LEN, b' ');
    assert!(
        check(&padded).is_ok(),
        "trailing whitespace within the bound"
    );
    // Deeply nested JSON within the bound: an error, not a stack overflow.
    for depth in [100, 1000, MAX_CHANNEL_LEN / 2 - 16] {
        for field in ["payload", "signatures", "format", "unknown"] {
            let nested = format!("{{\"{field}\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
            assert!(nested.len() <= MAX_CHANNEL_LEN);
            assert!(
                matches!(check(nested.as_bytes()), Err(ChannelError::Syntax(_))),
                "{field} depth {depth}"
            );
        }
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(matches!(
            check(nested.as_bytes()),
            Err(ChannelError::Syntax(_))
        ));
    }
    // A duplicated envelope field is refused (the signed payload must be unambiguous).
    let text = String::from_utf8(bytes).unwrap();
    let dup = text.replacen("{", "{\"payload\": \"{}\",", 1);
    assert!(matches!(
        check(dup.as_bytes()),
        Err(ChannelError::Syntax(_))
    ));
}

#[test]
fn a_signed_payload_is_still_parsed_and_validated() {
    // Signed, but the payload breaks the rules: refused after the signature check.
    let mut v = serde_json::to_value(channel()).unwrap();
    v["bundle"]["extra"] = serde_json::json!(1);
    assert!(matches!(
        check(&sign_raw_payload(&v.to_string())),
        Err(ChannelError::Syntax(_))
    ));
    let nested = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    assert!(matches!(
        check(&sign_raw_payload(&nested)),
        Err(ChannelError::Syntax(_))
    ));
    type Change = fn(&mut serde_json::Value);
    let cases: [(&str, Change); 5] = [
        ("no urls", |v| v["bundle"]["urls"] = serde_json::json!([])),
        ("ftp url", |v| {
            v["bundle"]["urls"] = serde_json::json!(["ftp://updates.example.com/b.fsb"])
        }),
        ("percent 101", |v| {
            v["rollout_percent"] = serde_json::json!(101)
        }),
        ("expires before issued", |v| {
            v["expires_at"] = serde_json::json!(NOW - 7200)
        }),
        ("payload format 2", |v| v["format"] = serde_json::json!(2)),
    ];
    for (what, change) in cases {
        let mut v = serde_json::to_value(channel()).unwrap();
        change(&mut v);
        let r = check(&sign_raw_payload(&v.to_string()));
        assert!(matches!(r, Err(ChannelError::Invalid(_))), "{what}: {r:?}");
        // sign_channel refuses the same channel.
        let ch: Channel = serde_json::from_value(v).unwrap();
        assert!(
            matches!(sign_channel(&ch, &[key(1)]), Err(ChannelError::Invalid(_))),
            "{what}"
        );
    }
    // A percent over 255 does not even parse.
    let mut v = serde_json::to_value(channel()).unwrap();
    v["rollout_percent"] = serde_json::json!(1000);
    assert!(matches!(
        check(&sign_raw_payload(&v.to_string())),
        Err(ChannelError::Syntax(_))
    ));
}

#[test]
fn wrong_compatible_is_refused() {
    let bytes = signed(&channel());
    let err = verify_channel(
        &bytes,
        &ring(&[&key(1)]),
        &policy(1),
        NOW,
        None,
        "acme-box-2",
    )
    .unwrap_err();
    match &err {
        ChannelError::Incompatible { channel, system } => {
            assert_eq!(
                (channel.as_str(), system.as_str()),
                ("acme-box", "acme-box-2")
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("acme-box-2"), "{err}");
}

#[test]
fn checks_run_in_the_documented_order() {
    // Expired, rolled back and incompatible at once: expiry is reported first.
    let bytes = signed(&channel());
    let r = verify_channel(
        &bytes,
        &ring(&[&key(1)]),
        &policy(1),
        u64::MAX,
        Some(u64::MAX),
        "other",
    );
    assert!(matches!(r, Err(ChannelError::Expired { .. })));
    let r = verify_channel(
        &bytes,
        &ring(&[&key(1)]),
        &policy(1),
        NOW,
        Some(u64::MAX),
        "other",
    );
    assert!(matches!(r, Err(ChannelError::SerialRollback { .. })));
    // A bad signature is reported before anything in the payload.
    let mut env = envelope(&bytes);
    let mut v = serde_json::to_value(channel()).unwrap();
    v["rollout_percent"] = serde_json::json!(101);
    env["payload"] = serde_json::json!(v.to_string());
    assert!(matches!(
        check(&serde_json::to_vec(&env).unwrap()),
        Err(ChannelError::BadSignature { .. })
    ));
}

fn machine_ids(n: usize) -> Vec<String> {
    // Realistic ids: 32 hex digits, as /etc/machine-id holds.
    (0..n)
        .map(|i| Sha256Digest::of(format!("machine {i}").as_bytes()).to_hex()[..32].to_string())
        .collect()
}

#[test]
fn rollout_buckets_are_stable_and_uniform() {
    let v = semver::Version::parse("2.0.0-rc.1").unwrap();
    let ids = machine_ids(10_000);
    let mut deciles = [0u32; 10];
    for id in &ids {
        let b = rollout_bucket(id, &v);
        assert!(b < 100);
        assert_eq!(b, rollout_bucket(id, &v), "stable");
        deciles[usize::from(b / 10)] += 1;
    }
    for (i, n) in deciles.iter().enumerate() {
        assert!((800..=1200).contains(n), "decile {i}: {n} ({deciles:?})");
    }
}

#[test]
fn raising_the_percentage_only_adds_devices() {
    let ids = machine_ids(2_000);
    let mut ch = channel();
    let mut previous: Vec<bool> = vec![false; ids.len()];
    for percent in 0..=100u8 {
        ch.rollout_percent = percent;
        let now: Vec<bool> = ids.iter().map(|id| in_rollout(id, &ch)).collect();
        for (i, (&was, &is)) in previous.iter().zip(&now).enumerate() {
            assert!(!was || is, "device {i} left the rollout at {percent} %");
        }
        let count = now.iter().filter(|&&b| b).count();
        match percent {
            0 => assert_eq!(count, 0),
            100 => assert_eq!(count, ids.len()),
            p => {
                let expected = ids.len() * usize::from(p) / 100;
                assert!(count.abs_diff(expected) < 120, "{p} %: {count}");
            }
        }
        previous = now;
    }
}
