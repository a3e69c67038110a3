//! Staged rollouts: which devices install a channel's release while its
//! `rollout_percent` is below 100.
//!
//! A device's bucket is a pure function of its machine id and the release version, so the
//! same device and release always land in the same bucket, raising the percentage only adds
//! devices, and each release draws a fresh cohort (the same devices are not always first).

use super::Channel;
use sha2::{Digest, Sha256};

/// Domain-separation prefix of the bucket hash.
pub const ROLLOUT_DOMAIN: &[u8] = b"flipslot rollout v1\0";

/// The device's bucket, 0 to 99, for `version`: the first 8 bytes (big-endian u64) of
/// SHA-256(`"flipslot rollout v1\0"` || machine_id || `"\0"` || version) modulo 100, where
/// version is its canonical semver text (e.g. `1.2.0-rc.1+build.5`).
pub fn rollout_bucket(machine_id: &str, version: &semver::Version) -> u8 {
    let mut h = Sha256::new();
    h.update(ROLLOUT_DOMAIN);
    h.update(machine_id.as_bytes());
    h.update([0u8]);
    h.update(version.to_string().as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The remainder is below 100, so it fits in a u8.
    (u64::from_be_bytes(first) % 100) as u8
}

/// Whether the device with `machine_id` is in the channel's rollout cohort:
/// `rollout_bucket(machine_id, &ch.version) < ch.rollout_percent`. At 0 no device is, at
/// 100 every device is.
pub fn in_rollout(machine_id: &str, ch: &Channel) -> bool {
    rollout_bucket(machine_id, &ch.version) < ch.rollout_percent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    #[test]
    fn known_vector() {
        // printf 'flipslot rollout v1\0m1\0001.0.0' | sha256sum -> a522de217405fb2c...,
        // and 0xa522de217405fb2c % 100 = 20.
        assert_eq!(rollout_bucket("m1", &v("1.0.0")), 20);
    }

    #[test]
    fn buckets_are_stable_and_depend_on_the_release() {
        let a = rollout_bucket("4f1c0e5b9a8d4e2f", &v("1.2.0"));
        assert_eq!(a, rollout_bucket("4f1c0e5b9a8d4e2f", &v("1.2.0")));
        assert!(a < 100);
        // Over many machines, a new release reshuffles the cohort.
        let moved = (0..200)
            .filter(|i| {
                let id = format!("machine-{i}");
                rollout_bucket(&id, &v("1.2.0")) != rollout_bucket(&id, &v("1.3.0"))
            })
            .count();
        assert!(moved > 150, "{moved}");
    }
}
