//! Which image of an archive to unpack, and what its layers are: `index.json` (OCI image
//! layout) or `manifest.json` (`docker save`) read into a [`Plan`], every JSON document
//! bounded at [`MAX_JSON`] bytes and checked against its digest before it is parsed.
//!
//! - **`manifest.json` present** (`docker save`, both the legacy layout with
//!   `<id>/layer.tar` and the OCI-shaped one Docker 25 writes): the image is the entry whose
//!   `RepoTags` hold REF. The config's file name is its digest (`<hex>.json` or
//!   `blobs/sha256/<hex>`); a layer stored as `blobs/sha256/<hex>` is checked against that
//!   digest, any other layer file against its diff ID from the config.
//! - **otherwise `index.json`** (OCI image layout): the image is the descriptor whose
//!   `org.opencontainers.image.ref.name` or `io.containerd.image.name` annotation is REF.
//!   A descriptor may point at a nested index (a multi-platform image); its one image
//!   manifest present in the layout is taken (attestation manifests left out), and several
//!   are refused with their platforms listed.
//!
//! REF matches a name exactly, or as Docker's short form (`acme/app:1` matches
//! `docker.io/acme/app:1`, `busybox:1` matches `docker.io/library/busybox:1`). Without REF
//! the archive must hold exactly one image.

use super::archive::Store;
use super::OciError;
use flipslot_format::Sha256Digest;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Longest JSON document read (index, manifest, config, `manifest.json`).
pub(super) const MAX_JSON: u64 = 4 << 20;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// Unknown (`docker save` names no media type): told by the magic number.
    Sniff,
}

/// One layer to unpack.
#[derive(Debug, Clone)]
pub(super) struct LayerPlan {
    /// Its file in the store.
    pub member: String,
    /// The digest and size of the stored blob, when the archive says them.
    pub blob: Option<(Sha256Digest, Option<u64>)>,
    /// How it is compressed.
    pub compression: Compression,
    /// SHA-256 of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: Sha256Digest,
}

/// The image picked from an archive.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// The name it was picked by (or its first name, or its manifest or config digest).
    pub name: String,
    /// The config's `created`, in seconds since 1970.
    pub created: Option<u64>,
    /// `os/architecture[/variant]` from the config.
    pub platform: String,
    /// Its layers, lowest first.
    pub layers: Vec<LayerPlan>,
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Picks the image of `store` that `reference` names and reads its plan.
pub(super) fn plan(store: &Store, reference: Option<&str>) -> Result<Plan, OciError> {
    if store.exists("manifest.json") {
        docker_plan(store, reference)
    } else if store.exists("index.json") {
        oci_plan(store, reference)
    } else {
        Err(OciError::NotAnImage {
            archive: store.path().to_path_buf(),
            reason:
                "it has neither an index.json (OCI image layout) nor a manifest.json (docker save)"
                    .into(),
        })
    }
}

/// `sha256:<64 lower-case hex>` as a digest.
pub(super) fn parse_digest(value: &str) -> Result<Sha256Digest, OciError> {
    let bad = || OciError::BadDigest {
        value: value.to_string(),
    };
    let hex = value.strip_prefix("sha256:").ok_or_else(bad)?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad());
    }
    Sha256Digest::from_hex(hex).ok_or_else(bad)
}

/// Reads a JSON document and checks it against `expected` (digest, size) before parsing it.
fn read_json<T: serde::de::DeserializeOwned>(
    store: &Store,
    member: &str,
    expected: Option<(Sha256Digest, Option<u64>)>,
    what: &str,
) -> Result<T, OciError> {
    let data = store.read_small(member, MAX_JSON)?;
    if let Some((digest, size)) = expected {
        if let Some(size) = size.filter(|&s| s != data.len() as u64) {
            return Err(OciError::SizeMismatch {
                what: what.to_string(),
                expected: size,
                found: data.len() as u64,
            });
        }
        let found = Sha256Digest::of(&data);
        if found != digest {
            return Err(OciError::DigestMismatch {
                what: what.to_string(),
                expected: digest,
                found,
            });
        }
    }
    serde_json::from_slice(&data).map_err(|source| OciError::Json {
        what: what.to_string(),
        source,
    })
}

fn blob_path(d: &Sha256Digest) -> String {
    format!("blobs/sha256/{}", d.to_hex())
}

/// Whether `reference` names `name`, exactly or in Docker's short form.
pub(super) fn ref_matches(reference: &str, name: &str) -> bool {
    name == reference
        || name.strip_prefix("docker.io/") == Some(reference)
        || name.strip_prefix("docker.io/library/") == Some(reference)
}

/// The index of the candidate `reference` names, or the only candidate without one.
fn select(
    names: &[Vec<String>],
    reference: Option<&str>,
    archive: &Store,
) -> Result<usize, OciError> {
    let all: Vec<String> = names.iter().flatten().cloned().collect();
    let found: Vec<usize> = match reference {
        Some(r) => (0..names.len())
            .filter(|&i| names[i].iter().any(|n| ref_matches(r, n)))
            .collect(),
        None => (0..names.len()).collect(),
    };
    match (found.as_slice(), reference) {
        ([i], _) => Ok(*i),
        ([], None) => Err(OciError::NoImage {
            archive: archive.path().to_path_buf(),
        }),
        ([], Some(r)) => Err(OciError::NoMatch {
            archive: archive.path().to_path_buf(),
            reference: r.to_string(),
            names: all,
        }),
        (many, _) => Err(OciError::Ambiguous {
            archive: archive.path().to_path_buf(),
            reference: reference.map(str::to_string),
            count: many.len(),
            names: all,
        }),
    }
}

fn oci_plan(store: &Store, reference: Option<&str>) -> Result<Plan, OciError> {
    let index: Index = read_json(store, "index.json", None, "index.json")?;
    let names: Vec<Vec<String>> = index
        .manifests
        .iter()
        .map(|d| {
            [REF_NAME, CONTAINERD_NAME]
                .iter()
                .filter_map(|k| d.annotations.get(*k).cloned())
                .collect()
        })
        .collect();
    let i = select(&names, reference, store)?;
    let mut desc = &index.manifests[i];
    let name = reference
        .map(str::to_string)
        .or_else(|| names[i].first().cloned())
        .unwrap_or_else(|| desc.digest.clone());
    let nested: Index;
    if desc.media_type == OCI_INDEX || desc.media_type == DOCKER_LIST {
        let digest = parse_digest(&desc.digest)?;
        nested = read_json(
            store,
            &blob_path(&digest),
            Some((digest, Some(desc.size))),
            &format!("the index {}", desc.digest),
        )?;
        desc = pick_platform(store, &nested, &name)?;
    }
    if desc.media_type != OCI_MANIFEST && desc.media_type != DOCKER_MANIFEST {
        return Err(OciError::Unsupported {
            what: format!("{name}: manifest media type {:?}", desc.media_type),
        });
    }
    let digest = parse_digest(&desc.digest)?;
    let manifest: Manifest = read_json(
        store,
        &blob_path(&digest),
        Some((digest, Some(desc.size))),
        &format!("the manifest {}", desc.digest),
    )?;
    if let Some(mt) = manifest.media_type.as_deref() {
        if mt != OCI_MANIFEST && mt != DOCKER_MANIFEST {
            return Err(OciError::Unsupported {
                what: format!("{name}: manifest media type {mt:?}"),
            });
        }
    }
    if !CONFIGS.contains(&manifest.config.media_type.as_str()) {
        return Err(OciError::Unsupported {
            what: format!(
                "{name}: config media type {:?} (not a container image)",
                manifest.config.media_type
            ),
        });
    }
    let cdigest = parse_digest(&manifest.config.digest)?;
    let config: Config = read_json(
        store,
        &blob_path(&cdigest),
        Some((cdigest, Some(manifest.config.size))),
        &format!("the config {}", manifest.config.digest),
    )?;
    let diff_ids = diff_ids(&config, manifest.layers.len(), &name)?;
    let mut layers = Vec::new();
    for (l, diff_id) in manifest.layers.iter().zip(diff_ids) {
        let digest = parse_digest(&l.digest)?;
        layers.push(LayerPlan {
            member: blob_path(&digest),
            blob: Some((digest, Some(l.size))),
            compression: layer_compression(&l.media_type)?,
            diff_id,
        });
    }
    finish(name, &config, layers)
}

/// The one image manifest of a nested index that the layout holds.
fn pick_platform<'a>(
    store: &Store,
    index: &'a Index,
    name: &str,
) -> Result<&'a Descriptor, OciError> {
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| d.media_type == OCI_MANIFEST || d.media_type == DOCKER_MANIFEST)
        .filter(|d| {
            d.platform.as_ref().map_or(true, |p| p.os != "unknown")
                && d.annotations
                    .get("vnd.docker.reference.type")
                    .map(String::as_str)
                    != Some("attestation-manifest")
        })
        .filter(|d| parse_digest(&d.digest).is_ok_and(|g| store.exists(&blob_path(&g))))
        .collect();
    match candidates.as_slice() {
        [one] => Ok(one),
        _ => Err(OciError::Unsupported {
            what: format!(
                "{name} is a multi-platform image with {} platforms present ({}): save one platform only",
                candidates.len(),
                candidates
                    .iter()
                    .map(|d| d.platform.as_ref().map_or("?".into(), |p| {
                        platform_text(&p.os, &p.architecture, p.variant.as_deref())
                    }))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

fn docker_plan(store: &Store, reference: Option<&str>) -> Result<Plan, OciError> {
    let entries: Vec<DockerEntry> = read_json(store, "manifest.json", None, "manifest.json")?;
    let names: Vec<Vec<String>> = entries
        .iter()
        .map(|e| e.repo_tags.clone().unwrap_or_default())
        .collect();
    let i = select(&names, reference, store)?;
    let entry = &entries[i];
    let config_digest = digest_in_name(&entry.config).ok_or_else(|| OciError::Unsupported {
        what: format!(
            "config {:?} in manifest.json: its name does not carry its digest, so it cannot be checked",
            entry.config
        ),
    })?;
    let name = reference
        .map(str::to_string)
        .or_else(|| names[i].first().cloned())
        .unwrap_or_else(|| format!("sha256:{}", config_digest.to_hex()));
    let config: Config = read_json(
        store,
        &entry.config,
        Some((config_digest, None)),
        &format!("the config {}", entry.config),
    )?;
    let diff_ids = diff_ids(&config, entry.layers.len(), &name)?;
    let layers = entry
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(member, diff_id)| LayerPlan {
            member: member.clone(),
            blob: member
                .strip_prefix("blobs/sha256/")
                .and_then(Sha256Digest::from_hex)
                .map(|d| (d, None)),
            compression: Compression::Sniff,
            diff_id,
        })
        .collect();
    finish(name, &config, layers)
}

/// The digest a `docker save` config name carries: `blobs/sha256/<hex>` or `<hex>.json`.
fn digest_in_name(name: &str) -> Option<Sha256Digest> {
    let hex = name
        .strip_prefix("blobs/sha256/")
        .or_else(|| name.strip_suffix(".json"))?;
    parse_digest(&format!("sha256:{hex}")).ok()
}

fn diff_ids(config: &Config, layers: usize, name: &str) -> Result<Vec<Sha256Digest>, OciError> {
    if config.rootfs.kind != "layers" || config.rootfs.diff_ids.len() != layers {
        return Err(OciError::Unsupported {
            what: format!(
                "{name}: the config lists {} diff IDs of type {:?} for {layers} layers",
                config.rootfs.diff_ids.len(),
                config.rootfs.kind
            ),
        });
    }
    config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| parse_digest(d))
        .collect()
}

fn finish(name: String, config: &Config, layers: Vec<LayerPlan>) -> Result<Plan, OciError> {
    let created = match config.created.as_deref() {
        Some(t) => Some(parse_rfc3339(t).ok_or_else(|| OciError::Unsupported {
            what: format!("{name}: created time {t:?} (not RFC 3339)"),
        })?),
        None => None,
    };
    Ok(Plan {
        platform: platform_text(&config.os, &config.architecture, config.variant.as_deref()),
        name,
        created,
        layers,
    })
}

fn platform_text(os: &str, arch: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    }
}

/// The compression of a layer media type; anything but a (non-distributable) tar, plain,
/// gzip or zstd is refused.
fn layer_compression(media_type: &str) -> Result<Compression, OciError> {
    Ok(match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
        other => {
            return Err(OciError::Unsupported {
                what: format!("layer media type {other:?}"),
            })
        }
    })
}

/// Seconds since 1970 of an RFC 3339 time (`2024-01-02T03:04:05.678Z`, or with an offset);
/// fractions are dropped. Times before 1970 are refused.
pub(super) fn parse_rfc3339(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = t.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = frac.get(digits..)?;
    }
    let two = |a: u8, b: u8| -> Option<i64> {
        (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from((a - b'0') * 10 + (b - b'0')))
    };
    let offset = match rest.as_bytes() {
        b"Z" | b"z" => 0,
        &[sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let secs = two(h1, h2)? * 3600 + two(m1, m2)? * 60;
            if sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset;
    u64::try_from(secs).ok()
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(
            parse_rfc3339("2026-11-27T01:10:17.123456789Z"),
            Some(1_795_741_817)
        );
        assert_eq!(
            parse_rfc3339("2026-11-27T03:10:17+02:00"),
            Some(1_795_741_817)
        );
        assert_eq!(
            parse_rfc3339("2026-11-26T23:10:17-02:00"),
            Some(1_795_741_817)
        );
        for bad in [
            "",
            "2026-11-27",
            "2026-11-27T01:10:17",
            "2026-13-27T01:10:17Z",
            "2026-11-27T01:10:17.Z",
            "1969-12-31T23:59:59Z",
            "2026-11-27T01:10:17+0200",
            "２０２６-11-27T01:10:17Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        for secs in [0u64, 86_399, 951_782_400, 1_795_741_817, 4_102_444_800] {
            let text = flipslot_format::timefmt::rfc3339(secs);
            assert_eq!(parse_rfc3339(&text), Some(secs), "{text}");
        }
    }

    #[test]
    fn references_match_docker_short_names() {
        assert!(ref_matches("acme/app:1", "acme/app:1"));
        assert!(ref_matches("acme/app:1", "docker.io/acme/app:1"));
        assert!(ref_matches("busybox:1", "docker.io/library/busybox:1"));
        assert!(!ref_matches("busybox", "docker.io/library/busybox:latest"));
        assert!(!ref_matches("app:1", "acme/app:1"));
        assert!(ref_matches("latest", "latest"));
    }

    #[test]
    fn digests_are_sha256_in_lower_case() {
        let hex = "a".repeat(64);
        assert!(parse_digest(&format!("sha256:{hex}")).is_ok());
        for bad in [
            hex.clone(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha512:{hex}"),
            format!("sha256:{}", &hex[1..]),
            format!("sha256:{hex}/../x"),
        ] {
            assert!(parse_digest(&bad).is_err(), "{bad}");
        }
        assert_eq!(
            digest_in_name(&format!("{hex}.json")).map(|d| d.to_hex()),
            Some(hex.clone())
        );
        assert!(digest_in_name(&format!("blobs/sha256/{hex}")).is_some());
        assert!(digest_in_name("config.json").is_none());
    }

    #[test]
    fn a_nested_index_gives_the_one_platform_present() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = tmp.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let (amd, arm, att) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        for h in [&amd, &att] {
            std::fs::write(blobs.join(h), b"{}").unwrap();
        }
        let desc = |h: &str, os: &str, arch: &str| {
            format!(
                r#"{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{h}","size":2,
                "platform":{{"os":"{os}","architecture":"{arch}"}}}}"#
            )
        };
        let index = |descs: &[String]| -> Index {
            serde_json::from_str(&format!(r#"{{"manifests":[{}]}}"#, descs.join(","))).unwrap()
        };
        let store = Store::open(tmp.path()).unwrap();
        let i = index(&[
            desc(&amd, "linux", "amd64"),
            desc(&arm, "linux", "arm64"),
            desc(&att, "unknown", "unknown"),
        ]);
        assert!(pick_platform(&store, &i, "x")
            .unwrap()
            .digest
            .ends_with(&amd));
        std::fs::write(blobs.join(&arm), b"{}").unwrap();
        let err = pick_platform(&store, &i, "app").unwrap_err().to_string();
        assert!(
            err.contains(
                "app is a multi-platform image with 2 platforms present (linux/amd64, linux/arm64)"
            ),
            "{err}"
        );
    }

    #[test]
    fn media_types() {
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar+zstd").unwrap(),
            Compression::Zstd
        );
        assert_eq!(
            layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip").unwrap(),
            Compression::Gzip
        );
        let err =
            layer_compression("application/vnd.oci.image.layer.v1.tar+encrypted").unwrap_err();
        assert!(err.to_string().contains("+encrypted"), "{err}");
    }
}
