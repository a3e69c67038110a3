//! Compiles the reference U-Boot boot script of `docs/reference-uboot-script.md` (its one
//! fenced block with the info string `uboot-script`) with `mkimage`, exactly as the page says,
//! and checks the legacy script image: header, checksums and the script inside.
//!
//! `mkimage` only wraps the script, it does not parse it. A missing `mkimage` skips the test,
//! except with `CI=true`, where it fails naming the Debian package.
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;

use flipslot_os::process::find_program;

/// The info string that marks the script block in the page.
const MARKER: &str = "uboot-script";

/// Legacy image header: 64 bytes, big-endian fields.
const HEADER_LEN: usize = 64;
const IH_MAGIC: u32 = 0x2705_1956;
const IH_ARCH_ARM: u8 = 2;
const IH_TYPE_SCRIPT: u8 = 6;
const IH_COMP_NONE: u8 = 0;

/// The body of every fenced block whose info string is exactly [`MARKER`].
fn marked_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match current.as_mut() {
            None if line.strip_prefix("```") == Some(MARKER) => current = Some(String::new()),
            None => {}
            Some(_) if line == "```" => blocks.extend(current.take()),
            Some(body) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    assert!(current.is_none(), "unterminated ```{MARKER} block");
    blocks
}

/// CRC-32 (IEEE, as U-Boot's `crc32`), bit by bit.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Whether `mkimage` is installed; panics under `CI=true` when it is not.
fn mkimage_present() -> bool {
    if find_program(OsStr::new("mkimage")).is_some() {
        return true;
    }
    let msg = "mkimage not found: install the Debian package u-boot-tools";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("skipping the boot script compilation: {msg}");
    false
}

#[test]
fn reference_uboot_script_compiles_with_mkimage() {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reference-uboot-script.md");
    let markdown = fs::read_to_string(&page).unwrap();
    let blocks = marked_blocks(&markdown);
    assert_eq!(
        blocks.len(),
        1,
        "expected one ```{MARKER} block in {page:?}"
    );
    let script = &blocks[0];
    for needle in [
        "BOOT_ORDER",
        "setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1",
        "saveenv",
        "rauc.slot=",
    ] {
        assert!(script.contains(needle), "the script lacks {needle:?}");
    }

    if !mkimage_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("boot.cmd"), script).unwrap();
    // The command the page documents, word for word.
    let out = Command::new("mkimage")
        .args(["-A", "arm", "-T", "script", "-C", "none"])
        .args(["-d", "boot.cmd", "boot.scr"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkimage failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    let image = fs::read(dir.path().join("boot.scr")).unwrap();
    assert!(image.len() > HEADER_LEN + 8, "boot.scr is too short");
    let (header, data) = image.split_at(HEADER_LEN);
    assert_eq!(be32(header, 0), IH_MAGIC, "magic");
    let mut zeroed = header.to_vec();
    zeroed[4..8].fill(0);
    assert_eq!(be32(header, 4), crc32(&zeroed), "header CRC");
    assert_eq!(be32(header, 12) as usize, data.len(), "data size");
    assert_eq!(be32(header, 24), crc32(data), "data CRC");
    assert_eq!(header[29], IH_ARCH_ARM, "architecture");
    assert_eq!(header[30], IH_TYPE_SCRIPT, "image type");
    assert_eq!(header[31], IH_COMP_NONE, "compression");
    // A script image is a multi-file image with one part: its length, a zero, then the text.
    assert_eq!(be32(data, 0) as usize, script.len(), "script length");
    assert_eq!(be32(data, 4), 0, "end of the length list");
    assert_eq!(&data[8..], script.as_bytes(), "the script inside boot.scr");
}
