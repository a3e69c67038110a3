//! Tests of the provisioning description: every rule of `validate`, signing, and the
//! verification order (nothing of the payload is looked at before the signatures verify).
#![allow(clippy::unwrap_used)] // tests fail by panicking

use super::*;
use crate::keys::key_id;
use ed25519_dalek::Signer;
use std::path::PathBuf;

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

fn part(label: &str, role: PartitionRole, size: Option<u64>) -> PartitionSpec {
    PartitionSpec {
        label: label.into(),
        role,
        size,
        type_guid: None,
        class: None,
        bootname: None,
    }
}

fn slot(label: &str, bootname: &str) -> PartitionSpec {
    PartitionSpec {
        class: Some("rootfs".into()),
        bootname: Some(bootname.into()),
        ..part(label, PartitionRole::Slot, Some(64 << 20))
    }
}

fn provision() -> Provision {
    Provision {
        format: 1,
        compatible: "acme-box".into(),
        target: TargetRule {
            select: DiskSelect::Largest,
            by_id: Some("virtio-*".into()),
            serial: Some("SN 0001".into()),
            allow_wipe: false,
        },
        bootloader: ProvisionBootloader::GrubEfi,
        esp: EspImage {
            file: "esp.img".into(),
            size: 8 << 20,
            sha256: Sha256Digest::of(b"esp"),
        },
        partitions: vec![
            part("esp", PartitionRole::Esp, Some(8 << 20)),
            slot("rootfs-a", "A"),
            slot("rootfs-b", "B"),
            part("data", PartitionRole::Data, None),
        ],
        write_all_slots: true,
        data_files: vec![DataFile {
            path: "flipslot/system.toml".into(),
            mode: 0o644,
            contents: "[system]\ncompatible = \"acme-box\"\n".into(),
        }],
        status_file: Some("flipslot/status.json".into()),
    }
}

/// Verifies as a machine with keyring {key 1}, policy 1.
fn check(bytes: &[u8]) -> Result<Provision, ProvisionError> {
    verify_provision(bytes, &ring(&[&key(1)]), &policy(1))
}

/// Signs an arbitrary payload text with key 1, bypassing `validate`.
fn sign_raw_payload(payload: &str) -> Vec<u8> {
    let sig = key(1).sign(&PROVISION_ENVELOPE.signed_message(payload.as_bytes()));
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

/// `bytes` with its payload replaced by `payload`, the signatures kept (so they no longer
/// match).
fn with_payload(bytes: &[u8], payload: &str) -> Vec<u8> {
    let mut env: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    env["payload"] = serde_json::json!(payload);
    serde_json::to_vec(&env).unwrap()
}

fn payload_with(change: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v = serde_json::to_value(provision()).unwrap();
    change(&mut v);
    v.to_string()
}

fn is_bad_signature(r: &Result<Provision, ProvisionError>) -> bool {
    matches!(
        r,
        Err(ProvisionError::Envelope(EnvelopeError::BadSignature { .. }))
    )
}

#[test]
fn round_trip_of_every_field() {
    let p = provision();
    let bytes = sign_provision(&p, &[key(1)]).unwrap();
    assert_eq!(check(&bytes).unwrap(), p);
    let env: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(env["format"], 1);
    let payload: serde_json::Value =
        serde_json::from_str(env["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["target"]["select"], "largest");
    assert_eq!(payload["bootloader"], "grub-efi");
    assert_eq!(payload["partitions"][0]["role"], "esp");
    assert_eq!(payload["partitions"][3]["size"], serde_json::Value::Null);
    assert_eq!(payload["esp"]["sha256"], Sha256Digest::of(b"esp").to_hex());
    // Two signers, two required; a key given twice signs once.
    let bytes = sign_provision(&p, &[key(1), key(2), key(2)]).unwrap();
    let env: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(env["signatures"].as_array().unwrap().len(), 2);
    let got = verify_provision(&bytes, &ring(&[&key(1), &key(2)]), &policy(2)).unwrap();
    assert_eq!(got, p);
    // Every variant of the enums survives the trip.
    for select in [DiskSelect::Smallest, DiskSelect::Largest, DiskSelect::Only] {
        let mut q = provision();
        q.target.select = select;
        q.target.allow_wipe = true;
        q.target.by_id = None;
        q.target.serial = None;
        q.status_file = None;
        q.write_all_slots = false;
        q.partitions[1].type_guid = Some("0fc63daf-8483-4772-8e79-3d69d8477de4".into());
        assert_eq!(check(&sign_provision(&q, &[key(1)]).unwrap()).unwrap(), q);
    }
}

#[test]
fn signing_is_deterministic() {
    let a = sign_provision(&provision(), &[key(1), key(2)]).unwrap();
    assert_eq!(a, sign_provision(&provision(), &[key(1), key(2)]).unwrap());
    let mut other = provision();
    other.target.allow_wipe = true;
    assert_ne!(a, sign_provision(&other, &[key(1), key(2)]).unwrap());
}

#[test]
fn accessors_and_default_type_guids() {
    let p = provision();
    assert_eq!(p.esp_partition().label, "esp");
    assert_eq!(p.data_partition().label, "data");
    let slots: Vec<&str> = p.slots().map(|s| s.label.as_str()).collect();
    assert_eq!(slots, ["rootfs-a", "rootfs-b"]);
    assert_eq!(p.partitions[0].type_guid(), ESP_TYPE_GUID);
    assert_eq!(p.partitions[1].type_guid(), LINUX_TYPE_GUID);
    assert_eq!(p.partitions[3].type_guid(), LINUX_TYPE_GUID);
    let mut q = p.partitions[3].clone();
    q.type_guid = Some("3B8F8425-20E0-4F3B-907F-1A25A76F98E8".into());
    assert_eq!(q.type_guid(), "3B8F8425-20E0-4F3B-907F-1A25A76F98E8");
}

#[test]
fn field_rules() {
    assert!(provision().validate().is_ok());
    type Change = fn(&mut Provision);
    let cases: Vec<(&str, Change)> = vec![
        ("format 2", |p| p.format = 2),
        ("compatible must be 1", |p| p.compatible.clear()),
        ("compatible must be 1", |p| p.compatible = "x".repeat(257)),
        ("target.by_id", |p| p.target.by_id = Some(String::new())),
        ("target.by_id", |p| p.target.by_id = Some("a/b".into())),
        ("target.by_id", |p| p.target.by_id = Some("a b".into())),
        ("target.by_id", |p| {
            p.target.by_id = Some("caf\u{e9}".into())
        }),
        ("target.by_id", |p| p.target.by_id = Some("x".repeat(256))),
        ("target.serial", |p| p.target.serial = Some(String::new())),
        ("target.serial", |p| p.target.serial = Some("a\tb".into())),
        ("target.serial", |p| {
            p.target.serial = Some("a\u{7f}".into())
        }),
        ("esp.file", |p| p.esp.file = "dir/esp.img".into()),
        ("esp.file", |p| p.esp.file = "..".into()),
        ("esp.file", |p| p.esp.file = String::new()),
        ("esp.file", |p| p.esp.file = "esp img".into()),
        ("esp.size 0", |p| p.esp.size = 0),
        ("esp.size 4097", |p| p.esp.size = 4097),
        ("larger than the esp partition", |p| p.esp.size = 16 << 20),
        ("1 to 16 partitions", |p| p.partitions.clear()),
        ("1 to 16 partitions", |p| {
            for i in 0..14 {
                p.partitions
                    .insert(2, slot(&format!("s{i}"), &format!("S{i}")));
            }
        }),
        ("role \"esp\"; exactly one", |p| {
            p.partitions
                .insert(1, part("esp2", PartitionRole::Esp, Some(4096)))
        }),
        ("0 partitions have role \"esp\"", |p| {
            p.partitions.remove(0);
        }),
        ("role \"data\"; exactly one", |p| {
            p.partitions
                .insert(1, part("data0", PartitionRole::Data, Some(4096)))
        }),
        ("0 partitions have role \"data\"", |p| {
            p.partitions.pop();
        }),
        ("at least one slot", |p| {
            p.partitions.retain(|s| s.role != PartitionRole::Slot)
        }),
        ("more than one class", |p| {
            p.partitions[2].class = Some("other".into())
        }),
        ("label must be", |p| p.partitions[1].label = String::new()),
        ("label must be", |p| p.partitions[1].label = "a/b".into()),
        ("label must be", |p| p.partitions[1].label = "x".repeat(37)),
        ("label is used by more than one", |p| {
            p.partitions[2].label = "rootfs-a".into()
        }),
        ("bootname \"A\" is used by more than one", |p| {
            p.partitions[2].bootname = Some("A".into())
        }),
        ("bootname \"a-b\" must be", |p| {
            p.partitions[2].bootname = Some("a-b".into())
        }),
        ("a slot needs a bootname", |p| {
            p.partitions[2].bootname = None
        }),
        ("a slot needs a class", |p| p.partitions[2].class = None),
        ("class \"a b\" must be", |p| {
            p.partitions[1].class = Some("a b".into());
            p.partitions[2].class = Some("a b".into())
        }),
        ("class is only for slots", |p| {
            p.partitions[3].class = Some("rootfs".into())
        }),
        ("bootname is only for slots", |p| {
            p.partitions[0].bootname = Some("E".into())
        }),
        ("size 0 must be", |p| p.partitions[1].size = Some(0)),
        ("size 1000 must be", |p| p.partitions[1].size = Some(1000)),
        ("only the last partition", |p| p.partitions[1].size = None),
        ("the esp needs a size", |p| {
            let esp = p.partitions.remove(0);
            p.partitions.push(PartitionSpec { size: None, ..esp });
            p.partitions[2].size = Some(4096);
        }),
        ("add up to too much", |p| {
            p.partitions[1].size = Some(u64::MAX / 2 - 4095);
            p.partitions[2].size = Some(u64::MAX / 2 - 4095);
        }),
        ("type_guid \"C12A7328\" is not a GUID", |p| {
            p.partitions[0].type_guid = Some("C12A7328".into())
        }),
        ("is not a GUID", |p| {
            p.partitions[0].type_guid = Some("C12A7328-F81F-11D2-BA4B-00A0C93EC93G".into())
        }),
        ("is not a GUID", |p| {
            p.partitions[0].type_guid = Some("C12A7328F81F-11D2-BA4B-00A0-C93EC93B".into())
        }),
        ("is not a GUID", |p| {
            p.partitions[0].type_guid = Some("{C12A7328-F81F-11D2-BA4B-00A0C93EC93B}".into())
        }),
        ("all zeros", |p| {
            p.partitions[0].type_guid = Some("00000000-0000-0000-0000-000000000000".into())
        }),
        ("at most 256 are allowed", |p| {
            p.data_files = (0..257)
                .map(|i| DataFile {
                    path: format!("f{i}"),
                    mode: 0o644,
                    contents: String::new(),
                })
                .collect()
        }),
        ("data file 0: path \"/etc/x\"", |p| {
            p.data_files[0].path = "/etc/x".into()
        }),
        ("data file 0: path \"a/../b\"", |p| {
            p.data_files[0].path = "a/../b".into()
        }),
        ("data file 0: path \"a/./b\"", |p| {
            p.data_files[0].path = "a/./b".into()
        }),
        ("data file 0: path \"a//b\"", |p| {
            p.data_files[0].path = "a//b".into()
        }),
        ("data file 0: path \"a/\"", |p| {
            p.data_files[0].path = "a/".into()
        }),
        ("data file 0: path \"\"", |p| {
            p.data_files[0].path = String::new()
        }),
        ("data file 0: path \"a b\"", |p| {
            p.data_files[0].path = "a b".into()
        }),
        ("mode 10000 is above 7777", |p| {
            p.data_files[0].mode = 0o10000
        }),
        ("is written twice", |p| {
            let f = p.data_files[0].clone();
            p.data_files.push(f)
        }),
        (
            "status_file \"flipslot/system.toml\" is written twice",
            |p| p.status_file = Some("flipslot/system.toml".into()),
        ),
        ("status_file \"../status.json\"", |p| {
            p.status_file = Some("../status.json".into())
        }),
        (
            "needs directory \"flipslot\", which is also written as a file",
            |p| {
                p.data_files.push(DataFile {
                    path: "flipslot".into(),
                    mode: 0o644,
                    contents: String::new(),
                })
            },
        ),
    ];
    for (what, change) in cases {
        let mut p = provision();
        change(&mut p);
        let err = p.validate().unwrap_err();
        assert!(matches!(err, ProvisionError::Invalid(_)), "{what}: {err:?}");
        assert!(err.to_string().contains(what), "{what}: {err}");
        // Never signed, and refused after its signature verifies.
        assert!(
            matches!(
                sign_provision(&p, &[key(1)]),
                Err(ProvisionError::Invalid(_))
            ),
            "{what}"
        );
        let raw = sign_raw_payload(&serde_json::to_string(&p).unwrap());
        assert!(
            matches!(check(&raw), Err(ProvisionError::Invalid(_))),
            "{what}"
        );
    }
}

#[test]
fn limits_are_inclusive() {
    let mut p = provision();
    for i in 0..12 {
        p.partitions
            .insert(2, slot(&format!("s{i}"), &format!("S{i}")));
    }
    assert_eq!(p.partitions.len(), MAX_PARTITIONS);
    p.data_files = (0..MAX_DATA_FILES)
        .map(|i| DataFile {
            path: format!("etc/f{i}"),
            mode: 0o7777,
            contents: "x".into(),
        })
        .collect();
    p.partitions[0].label = "x".repeat(MAX_LABEL_LEN);
    p.partitions[1].bootname = Some("B".repeat(MAX_BOOTNAME_LEN));
    p.target.by_id = Some("~".repeat(MAX_TARGET_TEXT_LEN));
    p.target.serial = Some(" ".repeat(MAX_TARGET_TEXT_LEN));
    p.compatible = "c".repeat(256);
    p.esp.size = p.partitions[0].size.unwrap();
    assert!(p.validate().is_ok(), "{:?}", p.validate());
    assert!(check(&sign_provision(&p, &[key(1)]).unwrap()).is_ok());
}

#[test]
fn helpers() {
    assert!(valid_guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"));
    assert!(valid_guid("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"));
    assert!(!valid_guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B-"));
    assert!(!valid_guid(""));
    assert!(valid_relative_path("a/b.c/d_e-f"));
    assert!(valid_relative_path("..a"));
    assert!(!valid_relative_path(&"a/".repeat(600)));
    assert!(!valid_relative_path(&"a".repeat(256)));
    assert!(valid_label("rootfs-a.1_x"));
    assert!(valid_bootname("A_1"));
    assert!(!valid_bootname("A.1"));
}

#[test]
fn a_tampered_payload_has_a_bad_signature() {
    let bytes = sign_provision(&provision(), &[key(1)]).unwrap();
    let env: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let payload = env["payload"].as_str().unwrap().to_string();
    // Every single-byte change of the payload: a bad signature, never anything else (the
    // changed payload is often no valid description at all, and never parsed).
    for i in 0..payload.len() {
        let mut p = payload.clone().into_bytes();
        p[i] = if p[i] == b'x' { b'y' } else { b'x' };
        let r = check(&with_payload(&bytes, &String::from_utf8(p).unwrap()));
        assert!(is_bad_signature(&r), "change at {i}: {r:?}");
    }
    // The allow_wipe bit flipped by the network.
    let wipe = payload.replace("\"allow_wipe\":false", "\"allow_wipe\":true");
    assert_ne!(wipe, payload);
    assert!(is_bad_signature(&check(&with_payload(&bytes, &wipe))));
    // A changed signature byte.
    let sig = env["signatures"][0]["signature"].as_str().unwrap();
    let flipped = format!("{}{}", if &sig[..1] == "0" { "1" } else { "0" }, &sig[1..]);
    let text = String::from_utf8(bytes.clone())
        .unwrap()
        .replace(sig, &flipped);
    assert!(is_bad_signature(&check(text.as_bytes())));
}

#[test]
fn wrong_key_and_unsigned_are_refused_before_the_payload_is_parsed() {
    let not_json = "{ this is not a description";
    let invalid = payload_with(|v| v["partitions"] = serde_json::json!([]));
    let unknown = payload_with(|v| v["bootstrap_url"] = serde_json::json!("http://evil/"));
    for payload in [not_json, &invalid, &unknown] {
        // Signed by a key the machine does not trust.
        let sig = key(9).sign(&PROVISION_ENVELOPE.signed_message(payload.as_bytes()));
        let mut env = serde_json::json!({
            "format": 1,
            "payload": payload,
            "signatures": [{
                "key_id": key_id(&key(9).verifying_key()).to_string(),
                "signature": hex::encode(sig.to_bytes()),
            }],
        });
        let r = check(&serde_json::to_vec(&env).unwrap());
        match r {
            Err(ProvisionError::Envelope(EnvelopeError::NotEnoughSignatures {
                trusted: 0,
                required: 1,
                untrusted,
            })) => assert_eq!(untrusted, vec![key_id(&key(9).verifying_key())]),
            other => panic!("{payload}: {other:?}"),
        }
        // Unsigned.
        env["signatures"] = serde_json::json!([]);
        assert!(matches!(
            check(&serde_json::to_vec(&env).unwrap()),
            Err(ProvisionError::Envelope(EnvelopeError::Unsigned))
        ));
        // Signed by the trusted key, but the signature is over another payload.
        let good = sign_provision(&provision(), &[key(1)]).unwrap();
        assert!(is_bad_signature(&check(&with_payload(&good, payload))));
    }
    // With a valid signature, each is refused by the parser or the rules.
    assert!(matches!(
        check(&sign_raw_payload(not_json)),
        Err(ProvisionError::Syntax(_))
    ));
    assert!(matches!(
        check(&sign_raw_payload(&invalid)),
        Err(ProvisionError::Invalid(_))
    ));
    let err = check(&sign_raw_payload(&unknown)).unwrap_err();
    assert!(matches!(err, ProvisionError::Syntax(_)), "{err:?}");
    assert!(err.to_string().contains("bootstrap_url"), "{err}");
}

#[test]
fn unknown_fields_are_refused_everywhere() {
    type Change = fn(&mut serde_json::Value);
    let cases: [Change; 5] = [
        |v| v["target"]["path"] = serde_json::json!("/dev/sda"),
        |v| v["esp"]["url"] = serde_json::json!("http://x/esp.img"),
        |v| v["partitions"][0]["start"] = serde_json::json!(1),
        |v| v["data_files"][0]["owner"] = serde_json::json!(0),
        |v| v["target"]["select"] = serde_json::json!("Largest"),
    ];
    for change in cases {
        let r = check(&sign_raw_payload(&payload_with(change)));
        assert!(matches!(r, Err(ProvisionError::Syntax(_))), "{r:?}");
    }
    // Unknown envelope field.
    let bytes = sign_provision(&provision(), &[key(1)]).unwrap();
    let mut env: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    env["comment"] = serde_json::json!("x");
    assert!(matches!(
        check(&serde_json::to_vec(&env).unwrap()),
        Err(ProvisionError::Envelope(EnvelopeError::Syntax(_)))
    ));
}

#[test]
fn too_large_is_refused_before_parsing() {
    let huge = vec![b'{'; MAX_PROVISION_LEN + 1];
    let err = check(&huge).unwrap_err();
    assert!(matches!(
        err,
        ProvisionError::Envelope(EnvelopeError::TooLarge { len, max })
            if len == MAX_PROVISION_LEN + 1 && max == MAX_PROVISION_LEN
    ));
    assert_eq!(
        err.to_string(),
        format!(
            "provisioning description: file is {} bytes, at most {MAX_PROVISION_LEN} are accepted",
            MAX_PROVISION_LEN + 1
        )
    );
    // A signed file within the bound, padded to exactly the bound, is fine.
    let mut padded = sign_provision(&provision(), &[key(1)]).unwrap();
    padded.resize(MAX_PROVISION_LEN, b' ');
    assert!(check(&padded).is_ok());
    // sign_provision refuses to write more than a machine accepts.
    let mut p = provision();
    p.data_files[0].contents = "x".repeat(MAX_PROVISION_LEN);
    assert!(matches!(
        sign_provision(&p, &[key(1)]),
        Err(ProvisionError::Envelope(EnvelopeError::TooLarge { .. }))
    ));
}

#[test]
fn other_domains_do_not_verify() {
    // The same payload signed as a channel (another domain) is not a description.
    let payload = serde_json::to_string(&provision()).unwrap();
    let as_channel = EnvelopeKind {
        domain: crate::channel::CHANNEL_SIGNATURE_DOMAIN,
        ..PROVISION_ENVELOPE
    };
    let bytes = as_channel.sign(&provision(), &[key(1)]).unwrap();
    assert!(is_bad_signature(&check(&bytes)));
    assert_ne!(
        PROVISION_ENVELOPE.signed_message(payload.as_bytes()),
        as_channel.signed_message(payload.as_bytes())
    );
}
