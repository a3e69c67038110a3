use super::*;
use flipslot_format::channel::{rollout_bucket, ChannelBundle};

const NOW: u64 = 1_000_000;

fn ch(version: &str, percent: u8) -> Channel {
    Channel {
        format: 1,
        name: "stable".into(),
        compatible: "acme-box".into(),
        version: semver::Version::parse(version).unwrap(),
        serial: 10,
        issued_at: NOW - 100,
        expires_at: NOW + 604_800,
        bundle: ChannelBundle {
            urls: vec![format!("https://u.example/acme-box-{version}.fsb")],
            manifest_sha256: Sha256Digest::of(version.as_bytes()),
            size: 1 << 20,
        },
        rollout_percent: percent,
    }
}

fn next(mut c: Channel) -> Channel {
    c.serial += 1;
    c
}

fn b(from: u8, to: u8) -> Buckets {
    Buckets { from, to }
}

/// (buckets, share, from, to, effect) of every cohort, for compact assertions.
type Row = (
    Buckets,
    Buckets,
    f64,
    Option<String>,
    Option<String>,
    Effect,
);

fn rows(p: &Plan) -> Vec<Row> {
    p.cohorts
        .iter()
        .map(|c| {
            (
                c.old_buckets,
                c.new_buckets,
                c.share_percent,
                c.from.clone(),
                c.to.clone(),
                c.effect,
            )
        })
        .collect()
}

fn v(s: &str) -> Option<String> {
    Some(s.to_string())
}

#[test]
fn raising_a_rollout_offers_the_next_buckets_exactly() {
    let p = plan(&ch("1.4.0", 10), &next(ch("1.4.0", 50)), NOW).unwrap();
    assert_eq!(p.version_change, VersionChange::Same);
    assert!(!p.bundle_changed);
    assert_eq!(
        rows(&p),
        vec![
            (
                b(0, 9),
                b(0, 9),
                10.0,
                v("1.4.0"),
                v("1.4.0"),
                Effect::Unchanged
            ),
            (
                b(10, 49),
                b(10, 49),
                40.0,
                None,
                v("1.4.0"),
                Effect::Offered
            ),
            (b(50, 99), b(50, 99), 50.0, None, None, Effect::Unchanged),
        ]
    );
    assert!(p.cohorts.iter().all(|c| c.exact));
    assert!(!p.old_release_devices.affected);
    assert_eq!(p.old_release_devices.share_percent, 10.0);
    let moving = p.old_release_devices.moving_percent;
    assert!(moving == 0.0 && moving.is_sign_positive(), "{moving}");
    assert_eq!(
        p.changes
            .iter()
            .map(|c| (c.field, c.old.as_str(), c.new.as_str()))
            .collect::<Vec<_>>(),
        vec![("serial", "10", "11"), ("rollout_percent", "10 %", "50 %")]
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn lowering_a_rollout_withdraws_but_uninstalls_nothing() {
    let p = plan(&ch("1.4.0", 50), &next(ch("1.4.0", 20)), NOW).unwrap();
    assert_eq!(
        rows(&p),
        vec![
            (
                b(0, 19),
                b(0, 19),
                20.0,
                v("1.4.0"),
                v("1.4.0"),
                Effect::Unchanged
            ),
            (
                b(20, 49),
                b(20, 49),
                30.0,
                v("1.4.0"),
                None,
                Effect::Withdrawn
            ),
            (b(50, 99), b(50, 99), 50.0, None, None, Effect::Unchanged),
        ]
    );
    let t = &p.old_release_devices.text;
    assert!(
        t.contains("uninstalls nothing") && t.contains("20-49"),
        "{t}"
    );
    // To zero: every bucket withdrawn, and a warning.
    let p = plan(&ch("1.4.0", 50), &next(ch("1.4.0", 0)), NOW).unwrap();
    assert_eq!(p.share(Effect::Withdrawn), 50.0);
    assert_eq!(p.warnings, vec![Warning::HoldsAllBack]);
}

#[test]
fn a_new_release_draws_a_fresh_cohort_with_expected_shares() {
    let p = plan(&ch("1.4.0", 20), &next(ch("1.5.0", 10)), NOW).unwrap();
    assert_eq!(p.version_change, VersionChange::Upgrade);
    assert!(p.bundle_changed);
    assert_eq!(
        rows(&p),
        vec![
            (
                b(0, 19),
                b(0, 9),
                2.0,
                v("1.4.0"),
                v("1.5.0"),
                Effect::Upgraded
            ),
            (
                b(0, 19),
                b(10, 99),
                18.0,
                v("1.4.0"),
                None,
                Effect::Withdrawn
            ),
            (b(20, 99), b(0, 9), 8.0, None, v("1.5.0"), Effect::Offered),
            (b(20, 99), b(10, 99), 72.0, None, None, Effect::Unchanged),
        ]
    );
    assert!(p.cohorts.iter().all(|c| !c.exact));
    let total: f64 = p.cohorts.iter().map(|c| c.share_percent).sum();
    assert!((total - 100.0).abs() < 1e-9, "{total}");
    let o = &p.old_release_devices;
    assert!(o.affected);
    assert_eq!(o.moving_percent, 2.0);
    assert!(o.text.contains("about 2 % of the fleet"), "{}", o.text);
    assert!(o.text.contains("buckets 0-9 of 1.5.0"), "{}", o.text);

    // The expectation holds for real machine ids: of 20 000 devices, those in 1.4.0's
    // first 20 buckets and 1.5.0's first 10 are about 2 % (400).
    let (old, new) = (ch("1.4.0", 20), ch("1.5.0", 10));
    let both = (0..20_000)
        .map(|i| format!("machine-{i:05}"))
        .filter(|m| {
            rollout_bucket(m, &old.version) < old.rollout_percent
                && rollout_bucket(m, &new.version) < new.rollout_percent
        })
        .count();
    assert!((300..=500).contains(&both), "{both}");

    // At 100 % everybody who had 1.4.0 moves.
    let p = plan(&ch("1.4.0", 20), &next(ch("1.5.0", 100)), NOW).unwrap();
    assert_eq!(p.old_release_devices.moving_percent, 20.0);
    assert_eq!(p.old_release_devices.text, "all of them move to 1.5.0");
    assert_eq!(p.share(Effect::Offered), 80.0);
}

#[test]
fn downgrades_and_rebuilds_leave_installed_devices_alone_and_warn() {
    let p = plan(&ch("1.5.0", 100), &next(ch("1.4.0", 100)), NOW).unwrap();
    assert_eq!(p.version_change, VersionChange::Downgrade);
    assert_eq!(
        rows(&p),
        vec![(
            b(0, 99),
            b(0, 99),
            100.0,
            v("1.5.0"),
            v("1.4.0"),
            Effect::DowngradeIgnored
        )]
    );
    assert!(!p.old_release_devices.affected);
    assert!(matches!(p.warnings[..], [Warning::Downgrade { .. }]));
    assert!(p.warnings[0]
        .to_string()
        .contains("publish a newer version"));

    let mut rebuilt = next(ch("1.4.0", 100));
    rebuilt.bundle.manifest_sha256 = Sha256Digest::of(b"rebuilt");
    let p = plan(&ch("1.4.0", 100), &rebuilt, NOW).unwrap();
    assert_eq!(p.version_change, VersionChange::Same);
    assert!(p.bundle_changed);
    assert_eq!(p.cohorts[0].effect, Effect::Rebuilt);
    assert_eq!(
        p.warnings,
        vec![Warning::Rebuilt {
            version: "1.4.0".into()
        }]
    );
    assert!(p.old_release_devices.text.contains("keep OLD's bundle"));
}

#[test]
fn serials_and_expiry() {
    let old = ch("1.4.0", 100);
    // Re-signed, nothing else: no cohort moves.
    let mut resigned = next(old.clone());
    resigned.issued_at += 86_400;
    resigned.expires_at += 86_400;
    let p = plan(&old, &resigned, NOW).unwrap();
    assert!(!p.no_changes);
    assert_eq!(
        p.changes.iter().map(|c| c.field).collect::<Vec<_>>(),
        vec!["serial", "issued_at", "expires_at"]
    );
    assert!(p.cohorts.iter().all(|c| c.effect == Effect::Unchanged));
    assert!(p.warnings.is_empty());
    // The same file: no changes at all.
    let p = plan(&old, &old, NOW).unwrap();
    assert!(p.no_changes && p.changes.is_empty() && p.warnings.is_empty());
    // A changed payload under the same serial.
    let mut same_serial = old.clone();
    same_serial.rollout_percent = 50;
    let p = plan(&old, &same_serial, NOW).unwrap();
    assert_eq!(p.warnings, vec![Warning::SameSerial { serial: 10 }]);
    // A lower serial cannot be planned: devices would refuse NEW.
    assert_eq!(
        plan(&next(old.clone()), &old, NOW),
        Err(PlanError::SerialRollback { old: 11, new: 10 })
    );
    // Expired NEW, earlier expiry, expired OLD.
    let mut expired = next(old.clone());
    expired.expires_at = NOW;
    assert!(plan(&old, &expired, NOW)
        .unwrap()
        .warnings
        .contains(&Warning::NewExpired { expires_at: NOW }));
    let mut sooner = next(old.clone());
    sooner.expires_at = NOW + 10;
    assert!(matches!(
        plan(&old, &sooner, NOW).unwrap().warnings[..],
        [Warning::ExpiresEarlier { .. }]
    ));
    let mut stale = old.clone();
    stale.expires_at = NOW - 1;
    assert!(matches!(
        plan(&stale, &next(old.clone()), NOW).unwrap().warnings[..],
        [Warning::OldExpired { .. }]
    ));
}

#[test]
fn other_channels_are_refused() {
    let old = ch("1.4.0", 100);
    let mut beta = next(old.clone());
    beta.name = "beta".into();
    let e = plan(&old, &beta, NOW).unwrap_err();
    assert!(matches!(e, PlanError::Name { .. }));
    assert!(e.to_string().contains("\"stable\" and \"beta\""), "{e}");
    let mut toy = next(old.clone());
    toy.compatible = "acme-toy".into();
    assert!(matches!(
        plan(&old, &toy, NOW),
        Err(PlanError::Compatible { .. })
    ));
}

#[test]
fn shares_print_whole_or_with_one_decimal() {
    assert_eq!(pct(2.0), "2");
    assert_eq!(pct(0.3), "0.3");
    assert_eq!(pct(12.5), "12.5");
    assert_eq!(pct(100.0), "100");
}
