//! `flipslot-image build --oci` on container images made by real tools, checked with the
//! tools a person would use.
//!
//! The image is made once per run with `umoci`: `umoci init`/`new`, then `unpack`, files
//! added to the bundle's rootfs (owners other than root, setuid, a sticky and a setgid
//! directory, `security.capability`, a hard link, a symlink out of the root), `repack`;
//! `unpack` again, a file deleted (a whiteout) and one added, `repack`; then a layer made
//! here with the `tar` crate and added verbatim with `umoci raw add-layer` (an opaque
//! directory, a device node, a FIFO, a uid past the 21-bit octal field). The squashfs built
//! from it is read back with `unsquashfs`, the ext4 with `debugfs`. `skopeo` copies the
//! image into other forms (zstd layers, a docker-archive); the Docker 25 and legacy
//! `docker save` layouts are put together here from the same blobs; every form must give a
//! byte-identical bundle. Hostile layers (`..`, absolute paths, paths through symlinks,
//! hard links out of the image) and altered blobs must fail the build without writing
//! anywhere else.
//!
//! Making the image needs root (umoci records the owners the files really have) and the
//! Debian packages umoci, skopeo, squashfs-tools and e2fsprogs; without them the tests
//! skip, except under `CI=true`, where they fail naming what is missing. The build itself
//! is also run as `nobody` (through `setpriv`) to show that it needs no root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use flipslot_os::process::{find_program, Cmd};
use sha2::{Digest as _, Sha256};

/// The build time of the builds that pin it.
const SDE: &str = "1700000000";
/// `SDE` as `unsquashfs -lln` prints it with `TZ=UTC`.
const SDE_LISTED: &str = "2023-11-14 22:13";
/// The file capability the image gives `/usr/bin/su` (cap_net_raw+ep, version 2).
const CAP: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];
/// A uid that needs the GNU base-256 number field.
const BIG_ID: u64 = 3_000_000;

/// Whether the prerequisites are there; panics under `CI=true` when they are not.
fn prerequisites() -> bool {
    let mut missing: Vec<String> = [
        ("umoci", "umoci"),
        ("skopeo", "skopeo"),
        ("mksquashfs", "squashfs-tools"),
        ("unsquashfs", "squashfs-tools"),
        ("mke2fs", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("setpriv", "util-linux"),
    ]
    .iter()
    .filter(|(p, _)| find_program(OsStr::new(p)).is_none())
    .map(|(p, pkg)| format!("{p} (Debian package {pkg})"))
    .collect();
    if !is_root() {
        missing.push("root (umoci records the owners the files really have)".into());
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("missing: {}", missing.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("skipping OCI image test: {msg}");
    false
}

fn is_root() -> bool {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().metadata().unwrap().uid() == 0
}

fn run(program: &str, args: &[&dyn AsRef<OsStr>]) {
    let mut cmd = Cmd::new(program);
    for a in args {
        cmd = cmd.arg(a);
    }
    if let Err(e) = cmd.run() {
        panic!("{program}: {e}");
    }
}

/// The image, made once: `DIR/layout` with the tag `t`; and a signing key.
struct Fixture {
    _dir: tempfile::TempDir,
    layout: PathBuf,
    /// `k.key` and `k.pub`.
    keys: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(make_fixture)
}

fn make_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let image = format!("{}:t", layout.display());
    let bundle = dir.path().join("bundle");
    run("umoci", &[&"init", &"--layout", &layout]);
    run("umoci", &[&"new", &"--image", &image]);

    // Layer 1: owners, modes, an xattr, a hard link, a symlink out of the root.
    run("umoci", &[&"unpack", &"--image", &image, &bundle]);
    let root = bundle.join("rootfs");
    for d in ["etc", "opt/sub", "usr/bin", "var", "tmp", "home/user"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("etc/hostname"), "flipslot\n").unwrap();
    fs::write(root.join("etc/gone"), "bye\n").unwrap();
    fs::write(root.join("opt/old"), "old\n").unwrap();
    fs::write(root.join("opt/sub/old"), "old\n").unwrap();
    let su = root.join("usr/bin/su");
    fs::write(&su, "su\n").unwrap();
    std::os::unix::fs::chown(&su, Some(1000), Some(50)).unwrap();
    fs::set_permissions(&su, fs::Permissions::from_mode(0o4755)).unwrap();
    xattr::set(&su, "security.capability", &CAP).unwrap();
    fs::hard_link(&su, root.join("usr/bin/su2")).unwrap();
    std::os::unix::fs::symlink("../../etc/passwd", root.join("usr/evil")).unwrap();
    let secret = root.join("var/secret");
    fs::write(&secret, "s\n").unwrap();
    std::os::unix::fs::chown(&secret, Some(33), Some(44)).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let home = root.join("home/user");
    std::os::unix::fs::chown(&home, Some(1000), Some(1000)).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o2750)).unwrap();
    run("umoci", &[&"repack", &"--image", &image, &bundle]);
    fs::remove_dir_all(&bundle).unwrap();

    // Layer 2: a deleted file (umoci writes a whiteout) and a new one.
    run("umoci", &[&"unpack", &"--image", &image, &bundle]);
    fs::remove_file(bundle.join("rootfs/etc/gone")).unwrap();
    fs::write(bundle.join("rootfs/etc/new"), "new\n").unwrap();
    run("umoci", &[&"repack", &"--image", &image, &bundle]);
    fs::remove_dir_all(&bundle).unwrap();

    // Layer 3, made here: an opaque directory, special files, a big uid.
    let layer = dir.path().join("layer3.tar");
    let mut b = tar::Builder::new(Vec::new());
    add_file(&mut b, b"opt/.wh..wh..opq", b"", 0, 0o644);
    add_file(&mut b, b"opt/fresh", b"fresh\n", 0, 0o644);
    add_special(&mut b, b"dev/null", tar::EntryType::Char);
    add_special(&mut b, b"run/initctl", tar::EntryType::Fifo);
    add_file(&mut b, b"srv/big", b"big\n", BIG_ID, 0o600);
    fs::write(&layer, b.into_inner().unwrap()).unwrap();
    run("umoci", &[&"raw", &"add-layer", &"--image", &image, &layer]);
    let keys = dir.path().join("keys");
    let exe = env!("CARGO_BIN_EXE_flipslot-image");
    run(exe, &[&"keygen", &"--out-dir", &keys, &"--name", &"k"]);
    // Readable by nobody, who builds in one test.
    fs::set_permissions(keys.join("k.key"), fs::Permissions::from_mode(0o644)).unwrap();
    run("chmod", &[&"a+rx", &dir.path(), &keys]);
    Fixture {
        _dir: dir,
        layout,
        keys,
    }
}

/// A tar member whose name is written as given (no checks, unlike `set_path`).
fn header(name: &[u8], kind: tar::EntryType, size: u64, id: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_uid(id);
    h.set_gid(id);
    h.set_mode(mode);
    h.set_mtime(1);
    h.set_cksum();
    h
}

fn add_file(b: &mut tar::Builder<Vec<u8>>, name: &[u8], data: &[u8], id: u64, mode: u32) {
    let h = header(name, tar::EntryType::Regular, data.len() as u64, id, mode);
    b.append(&h, data).unwrap();
}

fn add_special(b: &mut tar::Builder<Vec<u8>>, name: &[u8], kind: tar::EntryType) {
    let mut h = header(name, kind, 0, 0, 0o666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
}

fn add_link(b: &mut tar::Builder<Vec<u8>>, name: &[u8], kind: tar::EntryType, target: &[u8]) {
    let mut h = header(name, kind, 0, 0, 0o777);
    h.as_old_mut().linkname[..target.len()].copy_from_slice(target);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
}

/// Copies a directory tree (files, directories; the layouts have no links).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Runs `flipslot-image build` for class rootfs; `sde` sets `SOURCE_DATE_EPOCH`.
fn build(dir: &Path, oci: &str, fs_type: &str, out: &str, sde: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flipslot-image"));
    cmd.current_dir(dir)
        .args(["build", "--compatible", "acme-box", "--version", "1.0.0"])
        .arg("--key")
        .arg(fixture().keys.join("k.key"))
        .args([
            "--oci",
            &format!("rootfs={oci}"),
            "--fs",
            fs_type,
            "--out",
            out,
        ])
        .env_remove("FLIPSLOT_LOG")
        .env_remove("SOURCE_DATE_EPOCH");
    if let Some(t) = sde {
        cmd.env("SOURCE_DATE_EPOCH", t);
    }
    cmd.output().unwrap()
}

fn build_ok(dir: &Path, oci: &str, fs_type: &str, out: &str, sde: Option<&str>) -> Output {
    let o = build(dir, oci, fs_type, out, sde);
    assert!(
        o.status.success(),
        "build --oci {oci}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// The build's stderr, which must be a failure.
fn build_err(dir: &Path, oci: &str) -> String {
    let o = build(dir, oci, "squashfs", "refused.fsb", Some(SDE));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{oci}: {err}");
    assert!(!dir.join("refused.fsb").exists(), "{oci}");
    err
}

/// The filesystem image inside a bundle, verified.
fn extract(dir: &Path, bundle: &str, out: &str) -> PathBuf {
    let o = Command::new(env!("CARGO_BIN_EXE_flipslot-image"))
        .current_dir(dir)
        .arg("extract")
        .arg("--keyring")
        .arg(fixture().keys.join("k.pub"))
        .args(["--image", "0", "--out", out, bundle])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    dir.join(out)
}

/// `unsquashfs -lln` as path → (mode and owner columns, link target).
fn squashfs_listing(image: &Path) -> BTreeMap<String, (String, String)> {
    let o = Command::new("unsquashfs")
        .arg("-lln")
        .arg(image)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut out = BTreeMap::new();
    for line in String::from_utf8(o.stdout).unwrap().lines() {
        let Some(i) = line.find(" squashfs-root") else {
            continue;
        };
        assert!(line.contains(SDE_LISTED), "inode time not pinned: {line}");
        let cols: Vec<&str> = line.split_whitespace().collect();
        let rest = &line[i + " squashfs-root".len()..];
        let (path, target) = match rest.split_once(" -> ") {
            Some((p, t)) => (p.to_string(), t.to_string()),
            None => (rest.to_string(), String::new()),
        };
        let path = if path.is_empty() { "/".into() } else { path };
        out.insert(path, (format!("{} {}", cols[0], cols[1]), target));
    }
    out
}

fn debugfs(image: &Path, request: &str) -> String {
    let o = Command::new("debugfs")
        .args(["-R", request])
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn squashfs_keeps_what_the_layers_say() {
    if !prerequisites() {
        return;
    }
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let oci = format!("{}:t", fx.layout.display());
    let o = build_ok(dir, &oci, "squashfs", "sq.fsb", Some(SDE));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("2 device nodes and FIFOs not created")
            && err.contains("/dev/null (character device), /run/initctl (FIFO)"),
        "{err}"
    );
    let image = extract(dir, "sq.fsb", "sq.img");
    let list = squashfs_listing(&image);
    let entry = |p: &str| {
        list.get(p)
            .unwrap_or_else(|| panic!("{p} missing: {list:#?}"))
    };
    for (path, mode_owner, target) in [
        ("/", "drwxr-xr-x 0/0", ""),
        ("/etc/hostname", "-rw-r--r-- 0/0", ""),
        ("/etc/new", "-rw-r--r-- 0/0", ""),
        ("/usr/bin/su", "-rwsr-xr-x 1000/50", ""),
        ("/usr/bin/su2", "-rwsr-xr-x 1000/50", ""),
        ("/usr/evil", "lrwxrwxrwx 0/0", "../../etc/passwd"),
        ("/var/secret", "-rw-r----- 33/44", ""),
        ("/tmp", "drwxrwxrwt 0/0", ""),
        ("/home/user", "drwxr-s--- 1000/1000", ""),
        ("/opt/fresh", "-rw-r--r-- 0/0", ""),
        ("/srv/big", "-rw------- 3000000/3000000", ""),
        ("/dev", "drwxr-xr-x 0/0", ""),
    ] {
        assert_eq!(
            entry(path),
            &(mode_owner.to_string(), target.to_string()),
            "{path}"
        );
    }
    for gone in [
        "/etc/gone",
        "/opt/old",
        "/opt/sub",
        "/dev/null",
        "/run/initctl",
    ] {
        assert!(!list.contains_key(gone), "{gone} should be gone: {list:#?}");
    }
    assert!(
        list.keys().all(|p| !p.contains(".wh.")),
        "a whiteout reached the image: {list:#?}"
    );

    // Contents, the hard link and the capability, from an extraction (as root).
    let x = dir.join("x");
    run("unsquashfs", &[&"-q", &"-d", &x, &image]);
    assert_eq!(
        fs::read_to_string(x.join("etc/hostname")).unwrap(),
        "flipslot\n"
    );
    assert_eq!(fs::read_to_string(x.join("opt/fresh")).unwrap(), "fresh\n");
    let su = fs::metadata(x.join("usr/bin/su")).unwrap();
    assert_eq!(su.nlink(), 2);
    assert_eq!(su.ino(), fs::metadata(x.join("usr/bin/su2")).unwrap().ino());
    assert_eq!(
        xattr::get(x.join("usr/bin/su"), "security.capability").unwrap(),
        Some(CAP.to_vec())
    );
    // Nothing of the build is left beside the bundle.
    let mut left: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["sq.fsb", "sq.img", "x"]);
}

#[test]
fn ext4_keeps_ownership_and_needs_no_root() {
    if !prerequisites() {
        return;
    }
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A copy that nobody can read, in a directory nobody can write.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).unwrap();
    let layout = dir.join("layout");
    copy_tree(&fx.layout, &layout);
    run("chmod", &[&"-R", &"a+rX", &layout]);
    let exe = dir.join("flipslot-image");
    fs::copy(env!("CARGO_BIN_EXE_flipslot-image"), &exe).unwrap();

    build_ok(dir, "layout:t", "ext4", "root.fsb", Some(SDE));
    let image = extract(dir, "root.fsb", "root.ext4");
    let su = debugfs(&image, "stat /usr/bin/su");
    assert!(su.contains("User:  1000   Group:    50"), "{su}");
    assert!(
        su.contains("Mode:  04755") && su.contains("Links: 2"),
        "{su}"
    );
    assert!(
        su.contains("mtime: 0x6553f100"),
        "mtime is not the build time: {su}"
    );
    let ea = debugfs(&image, "ea_list /usr/bin/su");
    assert!(
        ea.contains("security.capability (20) = 01 00 00 02 00 20 00 00"),
        "{ea}"
    );
    let big = debugfs(&image, "stat /srv/big");
    assert!(big.contains("User: 3000000   Group: 3000000"), "{big}");
    assert!(debugfs(&image, "stat /home/user").contains("Mode:  02750"));
    assert!(debugfs(&image, "stat /usr/evil").contains("Fast link dest: \"../../etc/passwd\""));
    let etc = debugfs(&image, "ls /etc");
    assert!(
        etc.contains("hostname") && etc.contains("new") && !etc.contains("gone"),
        "{etc}"
    );
    let opt = debugfs(&image, "ls /opt");
    assert!(
        opt.contains("fresh") && !opt.contains("old") && !opt.contains("sub"),
        "{opt}"
    );

    // The same build as nobody: the same bytes. squashfs needs root for the capability.
    let as_nobody = |fs_type: &str, out: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe)
            .current_dir(dir)
            .args(["build", "--compatible", "acme-box", "--version", "1.0.0"])
            .arg("--key")
            .arg(fx.keys.join("k.key"))
            .args(["--oci", "rootfs=layout:t", "--fs", fs_type, "--out", out])
            .env("SOURCE_DATE_EPOCH", SDE)
            .env_remove("FLIPSLOT_LOG")
            .output()
            .unwrap()
    };
    let o = as_nobody("ext4", "nobody.fsb");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        fs::read(dir.join("nobody.fsb")).unwrap(),
        fs::read(dir.join("root.fsb")).unwrap(),
        "ext4 built as nobody differs from ext4 built as root"
    );
    let o = as_nobody("squashfs", "nobody-sq.fsb");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("extended attribute security.capability")
            && err.contains("mksquashfs 4.5 reads extended attributes from the files only"),
        "{err}"
    );
    assert!(!dir.join("nobody-sq.fsb").exists());
}

/// The SHA-256 of a file, in hex.
fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

/// Reads `blobs/sha256/<hex>` of a layout as JSON.
fn blob_json(layout: &Path, digest: &str) -> serde_json::Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

/// Appends `data` as a regular file member `name` of a tar archive.
fn tar_add(b: &mut tar::Builder<fs::File>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, name, data).unwrap();
}

/// Puts the fixture together as `docker save` would: `docker25.tar` (OCI-shaped, with
/// uncompressed layers under `blobs/sha256`, `manifest.json` beside `index.json`) and
/// `legacy.tar` (`<id>/layer.tar` as symlinks to the layer files, `<config>.json`, two
/// tagged entries).
fn docker_saves(layout: &Path, dir: &Path) {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = blob_json(layout, index["manifests"][0]["digest"].as_str().unwrap());
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config_hex = config_digest.strip_prefix("sha256:").unwrap();
    let config = fs::read(layout.join("blobs/sha256").join(config_hex)).unwrap();
    let layers: Vec<Vec<u8>> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let hex = l["digest"]
                .as_str()
                .unwrap()
                .strip_prefix("sha256:")
                .unwrap();
            let gz = fs::File::open(layout.join("blobs/sha256").join(hex)).unwrap();
            let mut tar = Vec::new();
            std::io::copy(&mut flate2::read::MultiGzDecoder::new(gz), &mut tar).unwrap();
            tar
        })
        .collect();
    let hexes: Vec<String> = layers
        .iter()
        .map(|l| hex::encode(Sha256::digest(l)))
        .collect();

    let mut b = tar::Builder::new(fs::File::create(dir.join("docker25.tar")).unwrap());
    let descs: Vec<serde_json::Value> = layers
        .iter()
        .zip(&hexes)
        .map(|(l, h)| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": format!("sha256:{h}"), "size": l.len()})
        })
        .collect();
    let new_manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": manifest["config"], "layers": descs}))
    .unwrap();
    let manifest_hex = hex::encode(Sha256::digest(&new_manifest));
    for (l, h) in layers.iter().zip(&hexes) {
        tar_add(&mut b, &format!("blobs/sha256/{h}"), l);
    }
    tar_add(&mut b, &format!("blobs/sha256/{config_hex}"), &config);
    tar_add(
        &mut b,
        &format!("blobs/sha256/{manifest_hex}"),
        &new_manifest,
    );
    tar_add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let idx = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{manifest_hex}"), "size": new_manifest.len(),
        "annotations": {"io.containerd.image.name": "docker.io/acme/app:1",
                        "org.opencontainers.image.ref.name": "1"}}]});
    tar_add(&mut b, "index.json", &serde_json::to_vec(&idx).unwrap());
    let m = serde_json::json!([{"Config": format!("blobs/sha256/{config_hex}"),
        "RepoTags": ["acme/app:1"],
        "Layers": hexes.iter().map(|h| format!("blobs/sha256/{h}")).collect::<Vec<_>>()}]);
    tar_add(&mut b, "manifest.json", &serde_json::to_vec(&m).unwrap());
    b.finish().unwrap();

    let mut b = tar::Builder::new(fs::File::create(dir.join("legacy.tar")).unwrap());
    let mut paths = Vec::new();
    for (i, (l, h)) in layers.iter().zip(&hexes).enumerate() {
        tar_add(&mut b, &format!("{h}.tar"), l);
        let mut link = tar::Header::new_ustar();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        let id = format!("{i:064x}");
        b.append_link(&mut link, format!("{id}/layer.tar"), format!("../{h}.tar"))
            .unwrap();
        paths.push(format!("{id}/layer.tar"));
    }
    tar_add(&mut b, &format!("{config_hex}.json"), &config);
    let m = serde_json::json!([
        {"Config": format!("{config_hex}.json"), "RepoTags": ["acme/app:1"], "Layers": paths},
        {"Config": format!("{config_hex}.json"), "RepoTags": ["acme/other:2"], "Layers": paths}]);
    tar_add(&mut b, "manifest.json", &serde_json::to_vec(&m).unwrap());
    b.finish().unwrap();
}

#[test]
fn every_form_of_one_image_gives_the_same_bundle() {
    if !prerequisites() {
        return;
    }
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let layout = fx.layout.display().to_string();
    // An OCI layout tarball, skopeo's zstd copy and docker-archive, and docker save's two.
    let mut b = tar::Builder::new(fs::File::create(dir.join("layout.tar")).unwrap());
    b.append_dir_all(".", &fx.layout).unwrap();
    b.finish().unwrap();
    drop(b);
    let skopeo = |args: &[&str]| {
        let mut cmd = Cmd::new("skopeo").args(["--insecure-policy", "copy", "-q"]);
        cmd = cmd.args(args);
        cmd.run().unwrap_or_else(|e| panic!("skopeo: {e}"));
    };
    let zstd = dir.join("zstd");
    skopeo(&[
        "--dest-compress-format",
        "zstd",
        "--dest-compress",
        &format!("oci:{layout}:t"),
        &format!("oci:{}:t", zstd.display()),
    ]);
    skopeo(&[
        &format!("oci:{layout}:t"),
        &format!(
            "docker-archive:{}:acme/app:1",
            dir.join("archive.tar").display()
        ),
    ]);
    docker_saves(&fx.layout, dir);

    // Without SOURCE_DATE_EPOCH: the image's created time is the build time.
    let forms = [
        format!("{layout}:t"),
        format!("{layout}:t"),
        "layout.tar".to_string(),
        "zstd".into(),
        "archive.tar:acme/app:1".into(),
        "docker25.tar:acme/app:1".into(),
        "legacy.tar:acme/app:1".into(),
    ];
    let mut digests = Vec::new();
    for (i, form) in forms.iter().enumerate() {
        let out = format!("b{i}.fsb");
        build_ok(dir, form, "squashfs", &out, None);
        digests.push(sha256_file(&dir.join(out)));
    }
    assert!(
        digests.iter().all(|d| d == &digests[0]),
        "bundles differ: {:?}",
        forms.iter().zip(&digests).collect::<Vec<_>>()
    );
    let info = Command::new(env!("CARGO_BIN_EXE_flipslot-image"))
        .current_dir(dir)
        .args(["info", "--no-verify", "--json", "b0.fsb"])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(fx.layout.join("index.json")).unwrap()).unwrap();
    let manifest = blob_json(
        &fx.layout,
        index["manifests"][0]["digest"].as_str().unwrap(),
    );
    let config = blob_json(&fx.layout, manifest["config"]["digest"].as_str().unwrap());
    let created = config["created"].as_str().unwrap();
    assert_eq!(
        info["build_time_rfc3339"].as_str().unwrap(),
        format!("{}Z", &created[..19]),
        "{info}"
    );
    // SOURCE_DATE_EPOCH wins, and a time of its own makes another bundle.
    build_ok(dir, "layout.tar", "squashfs", "sde.fsb", Some(SDE));
    assert_ne!(sha256_file(&dir.join("sde.fsb")), digests[0]);
    build_ok(
        dir,
        "legacy.tar:acme/other:2",
        "squashfs",
        "sde2.fsb",
        Some(SDE),
    );
    assert_eq!(
        sha256_file(&dir.join("sde.fsb")),
        sha256_file(&dir.join("sde2.fsb"))
    );
}

#[test]
fn references_pick_one_image_or_name_them_all() {
    if !prerequisites() {
        return;
    }
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    docker_saves(&fx.layout, dir);
    let err = build_err(dir, "legacy.tar");
    assert!(
        err.contains("legacy.tar holds 2 images: pick one with ARCHIVE:REF; its names: acme/app:1, acme/other:2"),
        "{err}"
    );
    let err = build_err(dir, "legacy.tar:acme/nope:3");
    assert!(
        err.contains(
            "legacy.tar has no image named \"acme/nope:3\"; its names: acme/app:1, acme/other:2"
        ),
        "{err}"
    );
    let layout = dir.join("layout");
    copy_tree(&fx.layout, &layout);
    run(
        "umoci",
        &[
            &"tag",
            &"--image",
            &format!("{}:t", layout.display()),
            &"other",
        ],
    );
    let err = build_err(dir, "layout");
    assert!(
        err.contains("holds 2 images") && err.contains("its names: t, other"),
        "{err}"
    );
    build_ok(dir, "layout:other", "squashfs", "other.fsb", Some(SDE));
    // A compressed archive is refused with what to do.
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(dir.join("legacy.tar.gz")).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(&fs::read(dir.join("legacy.tar")).unwrap())
        .unwrap();
    gz.finish().unwrap();
    let err = build_err(dir, "legacy.tar.gz:acme/app:1");
    assert!(
        err.contains("it is gzip-compressed: decompress it first"),
        "{err}"
    );
}

/// Writes the members of a crafted layer.
type MakeLayer<'a> = dyn Fn(&mut tar::Builder<Vec<u8>>) + 'a;

#[test]
fn hostile_layers_are_refused_without_writing_outside() {
    if !prerequisites() {
        return;
    }
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let outside = tempfile::tempdir().unwrap();
    let outside_name = outside.path().display().to_string();
    let cases: Vec<(&str, Box<MakeLayer<'_>>, String)> = vec![
        (
            "dotdot",
            Box::new(|b| add_file(b, b"../../escape", b"x", 0, 0o644)),
            "refusing member \"../../escape\": it is a path with '..'".into(),
        ),
        (
            "absolute",
            Box::new(|b| add_file(b, b"/etc/escape", b"x", 0, 0o644)),
            "refusing member \"/etc/escape\": it is an absolute path".into(),
        ),
        (
            "through-symlink",
            Box::new(|b| {
                add_link(
                    b,
                    b"escape",
                    tar::EntryType::Symlink,
                    outside_name.as_bytes(),
                );
                add_file(b, b"escape/pwned", b"x", 0, 0o644);
            }),
            "refusing member \"escape/pwned\": it goes through the symlink /escape".into(),
        ),
        (
            "through-lower-symlink",
            Box::new(|b| add_file(b, b"usr/evil/x", b"x", 0, 0o644)),
            "refusing member \"usr/evil/x\": it goes through the symlink /usr/evil".into(),
        ),
        (
            "hardlink-out",
            Box::new(|b| add_link(b, b"h", tar::EntryType::Link, b"../../etc/passwd")),
            "refusing member \"h\": its hard link target is a path with '..'".into(),
        ),
        (
            "hardlink-through-symlink",
            Box::new(|b| add_link(b, b"h", tar::EntryType::Link, b"usr/evil")),
            String::new(), // a hard link to a symlink of the image is fine
        ),
    ];
    for (name, make, expected) in cases {
        let layout = dir.join(name);
        copy_tree(&fx.layout, &layout);
        let mut b = tar::Builder::new(Vec::new());
        make(&mut b);
        let layer = dir.join(format!("{name}.tar"));
        fs::write(&layer, b.into_inner().unwrap()).unwrap();
        let image = format!("{}:t", layout.display());
        run("umoci", &[&"raw", &"add-layer", &"--image", &image, &layer]);
        if expected.is_empty() {
            build_ok(
                dir,
                &format!("{name}:t"),
                "squashfs",
                &format!("{name}.fsb"),
                Some(SDE),
            );
            let list = squashfs_listing(&extract(dir, &format!("{name}.fsb"), "h.img"));
            assert_eq!(list["/h"].1, "../../etc/passwd", "{name}");
            continue;
        }
        let err = build_err(dir, &format!("{name}:t"));
        assert!(err.contains("layer 4 of 4"), "{name}: {err}");
        assert!(err.contains(&expected), "{name}: {err}");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0, "{name}");
        assert!(!dir.parent().unwrap().join("escape").exists(), "{name}");
    }
    // Nothing but the inputs is left: no unpacked tree, no temporary image.
    let leftovers: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn altered_blobs_are_refused() {
    if !prerequisites() {
        return;
    }
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(fx.layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = blob_json(&fx.layout, &manifest_digest);
    let last_layer = manifest["layers"][2]["digest"].as_str().unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap();
    for (name, digest, what) in [
        ("layer", last_layer, "layer 3 of 3"),
        ("config", config, "the config sha256:"),
        ("manifest", manifest_digest.as_str(), "the manifest sha256:"),
    ] {
        let layout = dir.join(name);
        copy_tree(&fx.layout, &layout);
        let blob = layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap());
        let mut data = fs::read(&blob).unwrap();
        let mid = data.len() / 2;
        data[mid] ^= 0x01;
        fs::write(&blob, data).unwrap();
        let err = build_err(dir, &format!("{name}:t"));
        assert!(err.contains(what), "{name}: {err}");
        assert!(
            err.contains(&format!(
                "not the {digest} the image names: the archive is damaged or was altered"
            )),
            "{name}: {err}"
        );
    }
}
