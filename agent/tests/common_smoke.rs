#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Smoke test: install a bundle into a file-backed slot through the CLI.

use std::path::Path;
use std::process::Command;

fn grubenv(path: &Path) {
    let mut block =
        b"# GRUB Environment Block\nORDER=A B\nA_OK=1\nA_TRY=0\nB_OK=1\nB_TRY=0\n".to_vec();
    block.resize(1024, b'#');
    std::fs::write(path, block).unwrap();
}

#[test]
fn install_into_file_slot() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let key = flipslot_image::keys::generate().unwrap();
    std::fs::create_dir(p.join("keys")).unwrap();
    std::fs::write(
        p.join("keys/test.pub"),
        flipslot_image::keys::public_key_pem(&key.verifying_key()).unwrap(),
    )
    .unwrap();
    let image: Vec<u8> = (0..(3 << 20) + 1234).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(p.join("rootfs.img"), &image).unwrap();
    std::fs::write(p.join("a.img"), vec![1u8; 8 << 20]).unwrap();
    std::fs::write(p.join("b.img"), vec![2u8; 8 << 20]).unwrap();
    grubenv(&p.join("grubenv"));
    std::fs::write(p.join("cmdline"), "quiet flipslot.slot=A\n").unwrap();
    let cfg = format!(
        "compatible = \"test\"\nbootloader = \"grub\"\ngrubenv = \"{0}/grubenv\"\nkeyring = \"{0}/keys\"\n\
         data-directory = \"{0}/data\"\n[[slot.rootfs]]\ndevice = \"{0}/a.img\"\nbootname = \"A\"\n\
         [[slot.rootfs]]\ndevice = \"{0}/b.img\"\nbootname = \"B\"\n",
        p.display()
    );
    std::fs::write(p.join("system.toml"), cfg).unwrap();
    let opts = flipslot_image::builder::BuildOptions {
        compatible: "test".into(),
        version: semver::Version::new(1, 0, 0),
        build_time: 0,
        description: None,
        chunk_size: 1 << 20,
        compression: flipslot_image::Compression::None,
        zstd_level: 3,
        block_index: false,
    };
    flipslot_image::builder::build(
        &[flipslot_image::builder::ImageInput {
            class: "rootfs".into(),
            path: p.join("rootfs.img"),
        }],
        &opts,
        &[key],
        &p.join("b.fsb"),
        &mut |_, _, _| {},
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flipslot"))
        .arg("--config")
        .arg(p.join("system.toml"))
        .arg("--cmdline-file")
        .arg(p.join("cmdline"))
        .args(["install", "--json"])
        .arg(p.join("b.fsb"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let b = std::fs::read(p.join("b.img")).unwrap();
    assert_eq!(&b[..image.len()], &image[..]);
    let a = std::fs::read(p.join("a.img")).unwrap();
    assert!(a.iter().all(|&x| x == 1));
    let out = Command::new(env!("CARGO_BIN_EXE_flipslot"))
        .arg("--config")
        .arg(p.join("system.toml"))
        .arg("--cmdline-file")
        .arg(p.join("cmdline"))
        .args(["status", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["primary"], "rootfs.1", "{v}");
    assert_eq!(v["booted"], "rootfs.0", "{v}");
    eprintln!("{stdout}");
}
