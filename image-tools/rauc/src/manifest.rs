//! `manifest.raucm`: RAUC's bundle manifest (GLib key-file syntax), parsed into types.
//!
//! Only a verified manifest reaches this parser: for `plain` bundles it is read from the
//! squashfs after the detached signature over the whole payload checked out, for `verity`
//! bundles it is the content of the CMS signature itself.
//!
//! Groups: `[update]` (`compatible`, `version`, `description`, `build`), `[bundle]`
//! (`format`, `verity-hash`, `verity-salt`, `verity-size`), `[image.<class>]`
//! (`filename`, `sha256`, `size`, `hooks`, `adaptive`), `[meta.<label>]` (free keys).
//! Anything that would make an install behave differently from "write this image into
//! the slot" (hooks, handlers, variants, `convert`) is refused by name rather than
//! silently ignored.

use crate::keyfile::{Group, KeyFile, KeyFileError};
use flipslot_format::Sha256Digest;

/// How the bundle is signed and laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BundleFormat {
    /// Detached CMS signature over the whole squashfs.
    Plain,
    /// Signed manifest plus a dm-verity hash tree after the squashfs.
    Verity,
    /// Encrypted verity bundle (not supported yet).
    Crypt,
}

impl BundleFormat {
    /// The name RAUC uses.
    pub fn as_str(self) -> &'static str {
        match self {
            BundleFormat::Plain => "plain",
            BundleFormat::Verity => "verity",
            BundleFormat::Crypt => "crypt",
        }
    }
}

/// The dm-verity parameters of a `verity` bundle.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerityParams {
    /// Root hash of the tree.
    pub root_hash: [u8; 32],
    /// Salt prefixed to every hashed block.
    pub salt: Vec<u8>,
    /// Size of the hash tree in bytes.
    pub tree_size: u64,
}

/// One image of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RaucImage {
    /// The slot class (`rootfs`).
    pub class: String,
    /// The file inside the bundle.
    pub filename: String,
    /// SHA-256 of the file.
    pub sha256: Sha256Digest,
    /// Size of the file in bytes.
    pub size: u64,
    /// `adaptive` methods listed (an optimisation flipslot does not need: the image is
    /// written whole).
    pub adaptive: Vec<String>,
}

/// A parsed `manifest.raucm`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RaucManifest {
    /// `[update] compatible`.
    pub compatible: String,
    /// `[update] version`.
    pub version: Option<String>,
    /// `[update] description`.
    pub description: Option<String>,
    /// `[update] build`.
    pub build: Option<String>,
    /// `[bundle] format` (`plain` when absent, as RAUC reads it).
    pub format: BundleFormat,
    /// The verity parameters (`verity` and `crypt` bundles).
    pub verity: Option<VerityParams>,
    /// The images, in file order.
    pub images: Vec<RaucImage>,
    /// `[meta.<label>]` groups: label, then key/value pairs.
    pub meta: Vec<(String, Vec<(String, String)>)>,
}

/// A manifest that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Key-file syntax or a typed value is wrong.
    #[error("invalid manifest.raucm")]
    Syntax(#[from] KeyFileError),
    /// A required key is missing or a value is out of range.
    #[error("manifest.raucm: [{group}] {key}: {reason}")]
    Invalid {
        /// The group.
        group: String,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The manifest asks for something flipslot does not do (yet).
    #[error(
        "manifest.raucm: [{group}] {key} (line {line}) is not supported by flipslot: {reason}"
    )]
    Unsupported {
        /// The group.
        group: String,
        /// The key.
        key: String,
        /// Its line.
        line: usize,
        /// Why, or what to do instead.
        reason: String,
    },
}

/// Longest accepted image file name.
const MAX_FILENAME: usize = 255;

fn invalid(group: &str, key: &str, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        group: group.to_string(),
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn unsupported(g: &Group, key: &str, reason: &str) -> ManifestError {
    ManifestError::Unsupported {
        group: g.name.clone(),
        key: key.to_string(),
        line: g.entry(key).map_or(g.line, |e| e.line),
        reason: reason.to_string(),
    }
}

fn check_known(g: &Group, known: &[&str]) -> Result<(), ManifestError> {
    for e in g.entries() {
        if !known.contains(&e.key.as_str()) {
            return Err(unsupported(g, &e.key, "unknown key"));
        }
    }
    Ok(())
}

fn parse_hex<const N: usize>(group: &str, key: &str, s: &str) -> Result<[u8; N], ManifestError> {
    let v = hex::decode(s.trim())
        .map_err(|_| invalid(group, key, format!("{s:?} is not hexadecimal")))?;
    v.try_into()
        .map_err(|_| invalid(group, key, format!("expected {N} bytes of hex")))
}

impl RaucManifest {
    /// Parses and checks manifest text.
    pub fn parse(text: &str) -> Result<RaucManifest, ManifestError> {
        // A repeated group or key is read as RAUC (GLib) reads it, merged with the last
        // value winning, so a signed manifest never means something else here than to RAUC.
        let kf = KeyFile::parse(text)?;
        let update = kf
            .group("update")
            .ok_or_else(|| invalid("update", "compatible", "the [update] group is missing"))?;
        check_known(update, &["compatible", "version", "description", "build"])?;
        let compatible = update
            .string("compatible")?
            .filter(|c| !c.is_empty())
            .ok_or_else(|| invalid("update", "compatible", "missing"))?;

        let (format, verity) = match kf.group("bundle") {
            None => (BundleFormat::Plain, None),
            Some(b) => {
                check_known(
                    b,
                    &[
                        "format",
                        "verity-hash",
                        "verity-salt",
                        "verity-size",
                        "crypt-key",
                    ],
                )?;
                let format = match b.string("format")?.as_deref() {
                    None | Some("plain") => BundleFormat::Plain,
                    Some("verity") => BundleFormat::Verity,
                    Some("crypt") => BundleFormat::Crypt,
                    Some(other) => {
                        return Err(invalid(
                            "bundle",
                            "format",
                            format!("{other:?} is not plain, verity or crypt"),
                        ))
                    }
                };
                let verity = match format {
                    BundleFormat::Plain => None,
                    _ => {
                        let hash = b
                            .string("verity-hash")?
                            .ok_or_else(|| invalid("bundle", "verity-hash", "missing"))?;
                        let salt = b
                            .string("verity-salt")?
                            .ok_or_else(|| invalid("bundle", "verity-salt", "missing"))?;
                        let size = b
                            .int("verity-size")?
                            .ok_or_else(|| invalid("bundle", "verity-size", "missing"))?;
                        let salt = hex::decode(salt.trim())
                            .map_err(|_| invalid("bundle", "verity-salt", "not hexadecimal"))?;
                        if salt.is_empty() || salt.len() > 256 {
                            return Err(invalid(
                                "bundle",
                                "verity-salt",
                                format!("{} bytes is not 1 to 256", salt.len()),
                            ));
                        }
                        let tree_size = u64::try_from(size)
                            .ok()
                            .filter(|s| *s > 0 && s % 4096 == 0)
                            .ok_or_else(|| {
                                invalid(
                                    "bundle",
                                    "verity-size",
                                    format!("{size} is not a positive multiple of 4096"),
                                )
                            })?;
                        Some(VerityParams {
                            root_hash: parse_hex::<32>("bundle", "verity-hash", &hash)?,
                            salt,
                            tree_size,
                        })
                    }
                };
                (format, verity)
            }
        };

        let mut images = Vec::new();
        let mut meta = Vec::new();
        for g in kf.groups() {
            let name = g.name.as_str();
            if name == "update" || name == "bundle" {
                continue;
            }
            if let Some(label) = name.strip_prefix("meta.") {
                let mut kv = Vec::new();
                for e in g.entries() {
                    kv.push((e.key.clone(), g.string(&e.key)?.unwrap_or_default()));
                }
                meta.push((label.to_string(), kv));
                continue;
            }
            if name == "hooks" || name == "handler" {
                let key = g.entries().first().map_or("filename", |e| e.key.as_str());
                return Err(unsupported(
                    g,
                    key,
                    "bundle hooks and handlers run code from the bundle during the install; \
                     flipslot writes images only",
                ));
            }
            let Some(class) = name.strip_prefix("image.") else {
                return Err(ManifestError::Unsupported {
                    group: name.to_string(),
                    key: String::new(),
                    line: g.line,
                    reason: "unknown group".into(),
                });
            };
            if class.contains('.') {
                return Err(ManifestError::Unsupported {
                    group: name.to_string(),
                    key: String::new(),
                    line: g.line,
                    reason: "images for variants ([image.<class>.<variant>]) are not supported yet"
                        .into(),
                });
            }
            images.push(parse_image(g, class)?);
        }
        if images.is_empty() {
            return Err(invalid("image.*", "filename", "the bundle has no image"));
        }
        Ok(RaucManifest {
            compatible,
            version: update.string("version")?,
            description: update.string("description")?,
            build: update.string("build")?,
            format,
            verity,
            images,
            meta,
        })
    }
}

fn parse_image(g: &Group, class: &str) -> Result<RaucImage, ManifestError> {
    for e in g.entries() {
        match e.key.as_str() {
            "filename" | "sha256" | "size" | "adaptive" => {}
            "hooks" => {
                return Err(unsupported(
                    g,
                    "hooks",
                    "image hooks run code from the bundle during the install; \
                     flipslot writes images only",
                ))
            }
            "convert" | "args" => {
                return Err(unsupported(g, &e.key, "not supported yet"));
            }
            other => return Err(unsupported(g, other, "unknown key")),
        }
    }
    let name = &g.name;
    if class.is_empty()
        || !class
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(invalid(
            name,
            "",
            format!("slot class {class:?} is not a simple name"),
        ));
    }
    let filename = g
        .string("filename")?
        .ok_or_else(|| invalid(name, "filename", "missing"))?;
    if filename.is_empty()
        || filename.len() > MAX_FILENAME
        || filename.contains('/')
        || filename == "."
        || filename == ".."
    {
        return Err(invalid(
            name,
            "filename",
            format!("{filename:?} is not a plain file name"),
        ));
    }
    let sha = g.string("sha256")?.ok_or_else(|| {
        invalid(
            name,
            "sha256",
            "missing (was the bundle made by `rauc bundle`?)",
        )
    })?;
    let sha256 = Sha256Digest(parse_hex::<32>(name, "sha256", &sha)?);
    let size = g
        .int("size")?
        .ok_or_else(|| invalid(name, "size", "missing"))?;
    let size =
        u64::try_from(size).map_err(|_| invalid(name, "size", format!("{size} is negative")))?;
    Ok(RaucImage {
        class: class.to_string(),
        filename,
        sha256,
        size,
        adaptive: g.list("adaptive")?.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As `rauc bundle` 1.8 writes it for a verity bundle.
    const VERITY: &str = "[update]
compatible=flipslot-test
version=2024.05.1
description=test bundle
build=20240501

[bundle]
format=verity
verity-hash=4d9b94fe3e9841682aaf6de73fb21a0abf9590cacc7a9f5f341b499b61a0e0a1
verity-salt=b6bf4c4eb8e7041bcd8e72911dbf481cc530b83005787963d0f2268d1f30cef0
verity-size=16384

[image.rootfs]
sha256=5266c9542fde34da8abff71990ea8c476c7922e9e4c55c2df7bcfdaccc4847d9
size=1048576
filename=rootfs.img

[meta.info]
owner=ci
";

    #[test]
    fn parses_a_verity_manifest() {
        let m = RaucManifest::parse(VERITY).unwrap();
        assert_eq!(m.compatible, "flipslot-test");
        assert_eq!(m.version.as_deref(), Some("2024.05.1"));
        assert_eq!(m.format, BundleFormat::Verity);
        let v = m.verity.unwrap();
        assert_eq!(v.tree_size, 16384);
        assert_eq!(v.salt.len(), 32);
        assert_eq!(v.root_hash[0], 0x4d);
        assert_eq!(m.images.len(), 1);
        assert_eq!(m.images[0].class, "rootfs");
        assert_eq!(m.images[0].size, 1 << 20);
        assert_eq!(
            m.meta,
            [("info".to_string(), vec![("owner".into(), "ci".into())])]
        );
    }

    #[test]
    fn plain_without_bundle_group() {
        let text = VERITY
            .split("[bundle]")
            .next()
            .unwrap()
            .to_string()
            + "[image.rootfs]\nsha256=5266c9542fde34da8abff71990ea8c476c7922e9e4c55c2df7bcfdaccc4847d9\nsize=1\nfilename=r.img\n";
        let m = RaucManifest::parse(&text).unwrap();
        assert_eq!(m.format, BundleFormat::Plain);
        assert!(m.verity.is_none());
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let e = RaucManifest::parse(&format!("{VERITY}[hooks]\nfilename=hook.sh\n")).unwrap_err();
        assert!(e.to_string().contains("[hooks] filename"), "{e}");
        let e = RaucManifest::parse(
            &VERITY.replace("filename=rootfs.img", "filename=rootfs.img\nhooks=install"),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("hooks") && e.to_string().contains("line"),
            "{e}"
        );
        let e = RaucManifest::parse(&VERITY.replace("[image.rootfs]", "[image.rootfs.v2]"))
            .unwrap_err();
        assert!(e.to_string().contains("variant"), "{e}");
        let e = RaucManifest::parse(&VERITY.replace("filename=rootfs.img", "filename=../x"))
            .unwrap_err();
        assert!(e.to_string().contains("plain file name"), "{e}");
        let e = RaucManifest::parse(&VERITY.replace("verity-size=16384", "verity-size=100"))
            .unwrap_err();
        assert!(e.to_string().contains("verity-size"), "{e}");
        let e = RaucManifest::parse(&VERITY.replace("compatible=flipslot-test\n", "")).unwrap_err();
        assert!(e.to_string().contains("compatible"), "{e}");
        let e = RaucManifest::parse(&VERITY.replace("build=", "colour=")).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }
}
