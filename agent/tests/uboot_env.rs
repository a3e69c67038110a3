#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
//! Byte compatibility of the native U-Boot environment code and the U-Boot backend with the
//! real `fw_printenv` / `fw_setenv` (libubootenv, Debian's `libubootenv-tool`), on files
//! named by a temporary `fw_env.config`.
//!
//! Without the tools the tests skip, except under CI (`CI=true`), where they fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use flipslot::bootloader::abstate::SlotBootState;
use flipslot::bootloader::uboot::UbootBackend;
use flipslot::bootloader::ubootenv::store::{modify, read_env};
use flipslot::bootloader::ubootenv::{crc32, encode_copy, FwEnvStore, Layout, UbootEnv};
use flipslot::bootloader::Bootloader;
use flipslot::host::paths::Root;

const FW_PRINTENV: &str = "/usr/bin/fw_printenv";
const FW_SETENV: &str = "/usr/bin/fw_setenv";
const SIZE: usize = 0x4000;

/// Whether the tools exist; `false` (after saying so) when they are missing outside CI.
fn have_tools() -> bool {
    if Path::new(FW_PRINTENV).exists() && Path::new(FW_SETENV).exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{FW_PRINTENV} and {FW_SETENV} are required under CI: install Debian's libubootenv-tool");
    }
    println!("skipping: fw_printenv/fw_setenv not installed (Debian package libubootenv-tool)");
    false
}

fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run libubootenv tool");
    assert!(
        out.status.success(),
        "{tool} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A temporary `fw_env.config` and its environment files.
struct Rig {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    defenv: PathBuf,
}

impl Rig {
    /// `lines` are `(file name, offset)`; each file is created (zeroed, so invalid) large
    /// enough for its copies.
    fn new(lines: &[(&str, u64)]) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("# device offset envsize\n");
        let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
        for (name, offset) in lines {
            let path = dir.path().join(name);
            text.push_str(&format!("{} {offset:#x} {SIZE:x}\n", path.display()));
            let end = sizes.entry(name).or_default();
            *end = (*end).max(offset + SIZE as u64);
        }
        for (name, len) in sizes {
            std::fs::write(dir.path().join(name), vec![0u8; len as usize]).unwrap();
        }
        let cfg = dir.path().join("fw_env.config");
        std::fs::write(&cfg, text).unwrap();
        let defenv = dir.path().join("u-boot-initial-env");
        std::fs::write(&defenv, "bootcmd=run rauc\nbootdelay=2\n").unwrap();
        Rig { dir, cfg, defenv }
    }

    fn store(&self) -> FwEnvStore {
        FwEnvStore::from_config_file(&self.cfg, &Root::host())
            .unwrap()
            .with_lock_file(self.dir.path().join("lock"))
    }

    fn cfg(&self) -> &str {
        self.cfg.to_str().unwrap()
    }

    fn printenv(&self) -> BTreeMap<String, String> {
        run(FW_PRINTENV, &["-c", self.cfg()])
            .lines()
            .map(|l| {
                let (n, v) = l.split_once('=').expect("name=value");
                (n.to_string(), v.to_string())
            })
            .collect()
    }

    fn setenv(&self, name: &str, value: &str) {
        run(
            FW_SETENV,
            &[
                "-c",
                self.cfg(),
                "-f",
                self.defenv.to_str().unwrap(),
                name,
                value,
            ],
        );
    }

    fn ours(&self) -> BTreeMap<String, String> {
        let env = read_env(&mut self.store()).unwrap();
        env.iter()
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect()
    }

    fn bytes(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).unwrap()
    }

    fn backend(&self) -> UbootBackend<FwEnvStore> {
        UbootBackend::new(self.store(), vec!["A".into(), "B".into()], 0, 0)
    }
}

fn map(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
    vars.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn default_env() -> UbootEnv {
    UbootEnv::parse_text("bootcmd=run rauc\nbootdelay=2\n")
}

#[test]
fn single_env_written_by_flipslot_reads_in_fw_printenv() {
    if !have_tools() {
        return;
    }
    let rig = Rig::new(&[("env.bin", 0)]);
    let mut store = rig.store();
    modify(&mut store, Some(&default_env()), |env| {
        env.set("spaces", "a b  c")?;
        env.set("eq", "x=y=z")?;
        env.set("empty", "")?;
        env.set("long", &"v".repeat(3000))?;
        Ok(())
    })
    .unwrap();
    let mut b = UbootBackend::new(store, vec!["A".into(), "B".into()], 0, 0);
    b.mark_active("B").unwrap();
    b.mark_bad("A").unwrap();
    let expected = map(&[
        ("bootcmd", "run rauc"),
        ("bootdelay", "2"),
        ("spaces", "a b  c"),
        ("eq", "x=y=z"),
        ("empty", ""),
        ("long", &"v".repeat(3000)),
        ("BOOT_ORDER", "B"),
        ("BOOT_A_LEFT", "0"),
        ("BOOT_B_LEFT", "3"),
    ]);
    assert_eq!(rig.printenv(), expected);
    assert_eq!(rig.ours(), expected);
    let bytes = rig.bytes("env.bin");
    assert_eq!(
        bytes.len(),
        SIZE,
        "the file is neither truncated nor extended"
    );
}

#[test]
fn single_env_written_by_fw_setenv_reads_in_flipslot() {
    if !have_tools() {
        return;
    }
    let rig = Rig::new(&[("env.bin", 0x2000)]);
    rig.setenv("BOOT_ORDER", "A B");
    rig.setenv("BOOT_A_LEFT", "3");
    rig.setenv("BOOT_B_LEFT", "1");
    assert_eq!(rig.ours(), rig.printenv());
    let mut b = rig.backend();
    assert_eq!(b.primary().unwrap().as_deref(), Some("A"));
    assert_eq!(b.slot_state("B").unwrap(), SlotBootState::Trying);
    b.mark_good("B").unwrap();
    assert_eq!(rig.printenv()["BOOT_B_LEFT"], "3");
    assert!(
        rig.bytes("env.bin")[..0x2000].iter().all(|&b| b == 0),
        "bytes before the offset untouched"
    );
}

/// Alternating writers on a redundant environment: every write goes to the other copy with
/// the flag incremented, whoever writes, and both read the same variables.
fn alternating_writers(rig: &Rig, copy: impl Fn(usize) -> (String, usize)) {
    let flag = |i: usize| {
        let (file, off) = copy(i);
        rig.bytes(&file)[off + 4]
    };
    let crc_ok = |i: usize| {
        let (file, off) = copy(i);
        let b = rig.bytes(&file);
        let c = &b[off..off + SIZE];
        u32::from_le_bytes([c[0], c[1], c[2], c[3]]) == crc32(&c[5..])
    };
    // Both copies invalid: fw_setenv starts from the default env and writes copy 1, flag 1.
    rig.setenv("BOOT_ORDER", "A B");
    assert!(!crc_ok(0) && crc_ok(1));
    assert_eq!(flag(1), 1);
    rig.setenv("BOOT_A_LEFT", "3");
    rig.setenv("BOOT_B_LEFT", "3");
    assert_eq!((flag(0), flag(1)), (2, 3));
    assert_eq!(rig.ours(), rig.printenv());

    // flipslot writes the other copy (0) with flag 4.
    let mut b = rig.backend();
    b.mark_bad("B").unwrap();
    assert_eq!((flag(0), flag(1)), (4, 3));
    assert_eq!(rig.printenv()["BOOT_ORDER"], "A");
    b.mark_active("B").unwrap();
    assert_eq!((flag(0), flag(1)), (4, 5));
    // The boot script consumes an attempt (fw_setenv stands in for U-Boot's setexpr).
    rig.setenv("BOOT_B_LEFT", "2");
    assert_eq!((flag(0), flag(1)), (6, 5));
    assert_eq!(b.slot_state("B").unwrap(), SlotBootState::Trying);
    assert_eq!(b.primary().unwrap().as_deref(), Some("B"));
    b.mark_good("B").unwrap();
    assert_eq!((flag(0), flag(1)), (6, 7));
    let expected = map(&[
        ("bootcmd", "run rauc"),
        ("bootdelay", "2"),
        ("BOOT_ORDER", "B A"),
        ("BOOT_A_LEFT", "3"),
        ("BOOT_B_LEFT", "3"),
    ]);
    assert_eq!(rig.printenv(), expected);
    assert_eq!(rig.ours(), expected);
    // Nothing to change: nobody writes.
    b.mark_good("B").unwrap();
    assert_eq!((flag(0), flag(1)), (6, 7));

    // Corrupt the current copy (1): both fall back to copy 0, the state before mark-good.
    let (file, off) = copy(1);
    let mut bytes = rig.bytes(&file);
    bytes[off + 100] ^= 0x55;
    std::fs::write(rig.dir.path().join(&file), bytes).unwrap();
    assert_eq!(rig.printenv()["BOOT_B_LEFT"], "2");
    assert_eq!(rig.ours(), rig.printenv());
    assert_eq!(b.slot_state("B").unwrap(), SlotBootState::Trying);
    // The next write replaces the corrupt copy, never the good one.
    b.mark_good("B").unwrap();
    assert!(crc_ok(0) && crc_ok(1));
    assert_eq!((flag(0), flag(1)), (6, 7));
    assert_eq!(rig.printenv(), expected);
}

#[test]
fn redundant_env_in_two_files() {
    if !have_tools() {
        return;
    }
    let rig = Rig::new(&[("env0.bin", 0), ("env1.bin", 0)]);
    alternating_writers(&rig, |i| (format!("env{i}.bin"), 0));
}

#[test]
fn redundant_env_at_two_offsets_of_one_file() {
    if !have_tools() {
        return;
    }
    let rig = Rig::new(&[("disk.img", 0x10000), ("disk.img", 0x20000)]);
    alternating_writers(&rig, |i| ("disk.img".into(), 0x10000 * (i + 1)));
    let bytes = rig.bytes("disk.img");
    assert_eq!(bytes.len(), 0x20000 + SIZE);
    assert!(bytes[..0x10000].iter().all(|&b| b == 0));
    assert!(bytes[0x10000 + SIZE..0x20000].iter().all(|&b| b == 0));
}

#[test]
fn flag_wrap_around_agrees_with_libubootenv() {
    if !have_tools() {
        return;
    }
    let rig = Rig::new(&[("env0.bin", 0), ("env1.bin", 0)]);
    let put = |file: &str, value: &str, flag: u8| {
        let mut env = default_env();
        env.set("v", value).unwrap();
        let copy = encode_copy(Layout::Redundant, SIZE, &env, flag).unwrap();
        std::fs::write(rig.dir.path().join(file), copy).unwrap();
    };
    // 255 is older than 0.
    put("env0.bin", "old", 255);
    put("env1.bin", "new", 0);
    assert_eq!(rig.printenv()["v"], "new");
    assert_eq!(rig.ours()["v"], "new");
    // 254 < 255: copy 0 is current; fw_setenv wraps to 0 in copy 1, which both then read.
    put("env0.bin", "cur", 255);
    put("env1.bin", "old", 254);
    assert_eq!(rig.ours()["v"], "cur");
    rig.setenv("v", "wrapped");
    assert_eq!(rig.bytes("env1.bin")[4], 0);
    assert_eq!(rig.ours()["v"], "wrapped");
    // flipslot continues the count in copy 0.
    modify(&mut rig.store(), None, |env| Ok(env.set("v", "next")?)).unwrap();
    assert_eq!(rig.bytes("env0.bin")[4], 1);
    assert_eq!(rig.printenv()["v"], "next");
    // Equal flags: copy 0.
    put("env0.bin", "zero", 9);
    put("env1.bin", "one", 9);
    assert_eq!(rig.printenv()["v"], "zero");
    assert_eq!(rig.ours()["v"], "zero");
}

#[test]
fn invalid_env_is_refused_without_a_default() {
    if !have_tools() {
        return;
    }
    let rig = Rig::new(&[("env.bin", 0)]);
    let e = format!("{:#}", rig.backend().mark_active("A").unwrap_err());
    assert!(e.contains("valid CRC") && e.contains("env.bin"), "{e}");
    assert!(
        rig.bytes("env.bin").iter().all(|&b| b == 0),
        "nothing written"
    );
    // With the default environment, as fw_setenv -f does.
    let mut b = rig.backend().with_default_env(default_env());
    b.mark_active("A").unwrap();
    assert_eq!(
        rig.printenv(),
        map(&[
            ("bootcmd", "run rauc"),
            ("bootdelay", "2"),
            ("BOOT_ORDER", "A B"),
            ("BOOT_A_LEFT", "3"),
        ])
    );
}
