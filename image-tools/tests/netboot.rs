//! `flipslot-image netboot` and its parts: the cpio writer read back by an independent parser,
//! the initramfs's contents, byte-identical rebuilds, `boot.ipxe`, refused values, the shell
//! scripts (`sh -n`, and `/init`'s command line handling run under busybox), and, with a
//! real Debian kernel, the modules in load order.
//!
//! The tests need busybox-static, kmod (depmod, modprobe, modinfo), e2fsprogs (mke2fs) and
//! libc-bin (ldd); the real-kernel test also apt and dpkg, and downloads the current
//! `linux-image-<release>-amd64` package once into Cargo's test scratch directory. A missing
//! prerequisite skips a test, except with `CI=true`, where it fails naming the Debian package.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flipslot_format::keys::{generate, key_id, public_key_pem};
use flipslot_image::netboot::cpio::{CpioWriter, TRAILER};
use flipslot_image::netboot::initramfs::{INIT_SCRIPT, UDHCPC_SCRIPT};
use flipslot_image::netboot::libs::parse_ldd;
use flipslot_os::process::find_program;

const BUSYBOX: &str = "/bin/busybox";
const RELEASE: &str = "0.0.0-test";
const BASE: &str = "http://10.0.2.2:8080/pxe/";
const PROVISION: &str = "http://10.0.2.2:8080/provision.json";
const BUNDLE: &str = "http://10.0.2.2:8080/os-1.0.fsb";

// ---------------------------------------------------------------------------------------
// An independent newc reader.

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    rdev: (u32, u32),
    data: Vec<u8>,
}

impl Entry {
    fn kind(&self) -> u32 {
        self.mode & 0o170_000
    }
}

/// Parses a whole `newc` archive, checking magic, alignment and the trailer at the end.
fn parse_cpio(bytes: &[u8]) -> Vec<Entry> {
    let align = |n: usize| (n + 3) & !3;
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        assert_eq!(at % 4, 0, "entry at {at} is not 4-byte aligned");
        assert_eq!(&bytes[at..at + 6], b"070701", "bad magic at {at}");
        let field = |i: usize| {
            let s = std::str::from_utf8(&bytes[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
            assert!(s
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()));
            u32::from_str_radix(s, 16).unwrap()
        };
        let (size, namesize) = (field(6) as usize, field(11) as usize);
        assert_eq!(field(12), 0, "check field");
        assert_eq!((field(7), field(8)), (0, 0), "devmajor/devminor");
        let name_end = at + 110 + namesize;
        assert_eq!(bytes[name_end - 1], 0, "name not NUL-terminated");
        let name = String::from_utf8(bytes[at + 110..name_end - 1].to_vec()).unwrap();
        let data_at = align(name_end);
        assert!(bytes[name_end..data_at].iter().all(|&b| b == 0));
        let data = bytes[data_at..data_at + size].to_vec();
        let next = align(data_at + size);
        assert!(bytes[data_at + size..next].iter().all(|&b| b == 0));
        let entry = Entry {
            name,
            ino: field(0),
            mode: field(1),
            uid: field(2),
            gid: field(3),
            nlink: field(4),
            mtime: field(5),
            rdev: (field(9), field(10)),
            data,
        };
        at = next;
        if entry.name == TRAILER {
            assert_eq!(at, bytes.len(), "bytes after the trailer");
            return out;
        }
        out.push(entry);
    }
}

fn by_name(entries: &[Entry]) -> BTreeMap<&str, &Entry> {
    entries.iter().map(|e| (e.name.as_str(), e)).collect()
}

#[test]
fn cpio_writer_reads_back() {
    let mut w = CpioWriter::new(Vec::new(), 1_700_000_000).unwrap();
    w.dir("tmp", 0o1777).unwrap();
    w.char_dev("dev/console", 0o600, 5, 1).unwrap();
    w.file("init", 0o755, b"#!/bin/sh\n").unwrap();
    w.file("/etc/a/b/empty", 0o644, b"").unwrap();
    for len in 0..9 {
        w.file(&format!("pad/{len}"), 0o600, &vec![b'x'; len])
            .unwrap();
    }
    w.symlink("bin/sh", "busybox").unwrap();
    let entries = parse_cpio(&w.finish().unwrap());
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        &names[..8],
        [
            "tmp",
            "dev",
            "dev/console",
            "init",
            "etc",
            "etc/a",
            "etc/a/b",
            "etc/a/b/empty"
        ]
    );
    assert_eq!(names.last(), Some(&"bin/sh"));
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.ino as usize, i + 1, "inodes count up: {}", e.name);
        assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 1_700_000_000), "{}", e.name);
        let nlink = if e.kind() == 0o040_000 { 2 } else { 1 };
        assert_eq!(e.nlink, nlink, "{}", e.name);
    }
    let m = by_name(&entries);
    assert_eq!(m["tmp"].mode, 0o041_777);
    assert_eq!(m["dev"].mode, 0o040_755);
    assert_eq!(m["dev/console"].mode, 0o020_600);
    assert_eq!(m["dev/console"].rdev, (5, 1));
    assert_eq!(m["init"].mode, 0o100_755);
    assert_eq!(m["init"].data, b"#!/bin/sh\n");
    for len in 0..9 {
        assert_eq!(m[format!("pad/{len}").as_str()].data.len(), len);
    }
    assert_eq!(m["bin/sh"].mode, 0o120_777);
    assert_eq!(m["bin/sh"].data, b"busybox");
}

#[test]
fn cpio_tool_lists_the_archive() {
    if !have(&[("cpio", "cpio")]) {
        return;
    }
    let mut w = CpioWriter::new(Vec::new(), 0).unwrap();
    w.file("init", 0o755, b"#!/bin/sh\n").unwrap();
    w.symlink("bin/sh", "busybox").unwrap();
    w.char_dev("dev/null", 0o666, 1, 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.cpio");
    fs::write(&path, w.finish().unwrap()).unwrap();
    let out = Command::new("cpio")
        .args(["-t", "-v", "--quiet", "-F"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    assert!(listing.contains("bin/sh -> busybox"), "{listing}");
    assert!(listing.contains("crw-rw-rw-"), "{listing}");
}

// ---------------------------------------------------------------------------------------
// The scripts.

#[test]
fn scripts_are_valid_sh() {
    let dir = tempfile::tempdir().unwrap();
    for (name, script) in [("init", INIT_SCRIPT), ("udhcpc.script", UDHCPC_SCRIPT)] {
        let path = dir.path().join(name);
        fs::write(&path, script).unwrap();
        let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(out.status.success(), "sh -n {name}: {}", text(&out.stderr));
        if Path::new(BUSYBOX).exists() {
            let out = Command::new(BUSYBOX)
                .args(["sh", "-n"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "busybox sh -n {name}: {}",
                text(&out.stderr)
            );
        }
    }
}

/// Runs `/init` in its test mode under busybox sh with `cmdline` as the kernel command line.
fn run_init(cmdline: Option<&str>) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("init");
    fs::write(&path, INIT_SCRIPT).unwrap();
    let mut c = Command::new(BUSYBOX);
    c.arg("sh")
        .arg(&path)
        .env_remove("FLIPSLOT_NETBOOT_CMDLINE");
    if let Some(cmdline) = cmdline {
        c.env("FLIPSLOT_NETBOOT_CMDLINE", cmdline);
    }
    c.output().unwrap()
}

#[test]
fn init_passes_command_line_values_as_single_arguments() {
    if !have(&[(BUSYBOX, "busybox-static")]) {
        return;
    }
    let out = run_init(Some(
        "BOOT_IMAGE=vmlinuz initrd=initrd.img console=ttyS0 panic=-1 \
         flipslot.provision=http://h/p.json?a=1&b=* flipslot.bundle=http://h/$(reboot)/b.fsb \
         flipslot.disk=/dev/nvme0n1 flipslot.wipe=1 flipslot.report=http://h/r;x \
         flipslot.noreboot=1 quiet",
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "provision\n--description\nhttp://h/p.json?a=1&b=*\n--bundle\n\
         http://h/$(reboot)/b.fsb\n--keyring\n/etc/flipslot/provision-keys\n\
         --disk\n/dev/nvme0n1\n--wipe\n--report-url\nhttp://h/r;x\n"
    );

    // The minimal line; flipslot.wipe=0 is not --wipe; the last of a repeated word wins.
    let out = run_init(Some(
        "flipslot.bundle=http://h/old flipslot.provision=http://h/p flipslot.wipe=0 \
         flipslot.bundle=http://h/b",
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "provision\n--description\nhttp://h/p\n--bundle\nhttp://h/b\n\
         --keyring\n/etc/flipslot/provision-keys\n"
    );
}

#[test]
fn init_refuses_a_command_line_without_the_urls() {
    if !have(&[(BUSYBOX, "busybox-static")]) {
        return;
    }
    let out = run_init(Some("console=ttyS0 flipslot.bundle=http://h/b"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "no flipslot.provision= on the kernel command line\n"
    );
    let out = run_init(Some("flipslot.provision=http://h/p"));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("flipslot.bundle="));
    // Not PID 1 and no test command line: it refuses to do anything.
    let out = run_init(None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("PID 1"), "{}", text(&out.stderr));
}

// ---------------------------------------------------------------------------------------
// The subcommand on a fake kernel.

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Whether every `(program, package)` is installed; panics under `CI=true` when one is not.
fn have(tools: &[(&str, &str)]) -> bool {
    let missing: Vec<String> = tools
        .iter()
        .filter(|(p, _)| find_program(OsStr::new(p)).is_none())
        .map(|(p, pkg)| format!("{p} (Debian package {pkg})"))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("missing: {}", missing.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    false
}

const TOOLS: &[(&str, &str)] = &[
    (BUSYBOX, "busybox-static"),
    ("depmod", "kmod"),
    ("modprobe", "kmod"),
    ("mke2fs", "e2fsprogs"),
    ("ldd", "libc-bin"),
];

/// A work directory with a fake agent, a keyring of two keys and a fake kernel whose module
/// tree has no module files and `virtio_net` built in.
struct Fixture {
    dir: tempfile::TempDir,
    key_ids: Vec<String>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("agent"), "#!/bin/sh\necho agent \"$@\"\n").unwrap();
        fs::create_dir(root.join("keys")).unwrap();
        let mut key_ids = Vec::new();
        for name in ["b-second", "a-first"] {
            let key = generate().unwrap().verifying_key();
            fs::write(
                root.join("keys").join(format!("{name}.pub")),
                public_key_pem(&key).unwrap(),
            )
            .unwrap();
            key_ids.push((name, key_id(&key).to_string()));
        }
        key_ids.sort();
        fs::write(root.join("keys/README"), "not a key\n").unwrap();
        let tree = root.join("kernel");
        let modules = tree.join("lib/modules").join(RELEASE);
        fs::create_dir_all(&modules).unwrap();
        fs::write(
            modules.join("modules.builtin"),
            "kernel/drivers/net/virtio_net.ko\n",
        )
        .unwrap();
        fs::write(modules.join("modules.order"), "").unwrap();
        fs::create_dir_all(tree.join("boot")).unwrap();
        fs::write(
            tree.join("boot").join(format!("vmlinuz-{RELEASE}")),
            b"not really a kernel",
        )
        .unwrap();
        Fixture {
            dir,
            key_ids: key_ids.into_iter().map(|(_, id)| id).collect(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `netboot --out-dir OUT` with `extra`, and the fixture's agent, keyring and URLs for
    /// the options `extra` does not give.
    fn run(&self, out: &str, extra: &[&str]) -> Output {
        let defaults = [
            ("--agent", "agent"),
            ("--keyring", "keys"),
            ("--base-url", BASE),
            ("--provision-url", PROVISION),
            ("--bundle-url", BUNDLE),
        ];
        let mut c = Command::new(env!("CARGO_BIN_EXE_flipslot-image"));
        c.current_dir(self.dir.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env_remove("FLIPSLOT_LOG")
            .args(["netboot", "--out-dir", out]);
        for (option, value) in defaults {
            if !extra.contains(&option) {
                c.args([option, value]);
            }
        }
        c.args(extra);
        c.output().unwrap()
    }

    fn ok(&self, out: &str, extra: &[&str]) -> String {
        let o = self.run(out, extra);
        assert!(
            o.status.success(),
            "netboot {extra:?} failed\nstdout:\n{}\nstderr:\n{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    fn fails(&self, out: &str, extra: &[&str]) -> String {
        let o = self.run(out, extra);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
        text(&o.stderr)
    }
}

#[test]
fn initramfs_holds_everything_provisioning_needs() {
    if !have(TOOLS) {
        return;
    }
    let fx = Fixture::new();
    let stdout = fx.ok("out", &["--kernel-tree", "kernel", "--json"]);
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["event"], "done");
    assert_eq!(json["kernel_version"], RELEASE);
    assert_eq!(json["modules_builtin"], serde_json::json!(["virtio_net"]));
    assert_eq!(json["modules_missing"].as_array().unwrap().len(), 8);
    assert_eq!(json["key_ids"], serde_json::json!(fx.key_ids));

    let initrd = fs::read(fx.path("out/initrd.img")).unwrap();
    let entries = parse_cpio(&initrd);
    let m = by_name(&entries);
    assert_eq!(m["init"].data, INIT_SCRIPT.as_bytes());
    assert_eq!(m["init"].mode, 0o100_755);
    assert_eq!(m["dev/console"].rdev, (5, 1));
    assert_eq!(m["dev/console"].kind(), 0o020_000);
    assert_eq!(m["dev/null"].rdev, (1, 3));
    for dir in ["proc", "sys", "dev", "tmp", "run"] {
        assert_eq!(m[dir].kind(), 0o040_000, "{dir}");
    }
    assert_eq!(m["bin/busybox"].data, fs::read(BUSYBOX).unwrap());
    assert_eq!(m["bin/sh"].data, b"busybox");
    let applets = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in text(&applets.stdout).lines() {
        if applet == "busybox" || applet == "mke2fs" {
            continue;
        }
        let link = m[format!("bin/{applet}").as_str()];
        assert_eq!((link.kind(), &link.data[..]), (0o120_000, &b"busybox"[..]));
    }
    assert!(
        !m.contains_key("bin/mke2fs"),
        "busybox's mke2fs shadows e2fsprogs'"
    );
    assert_eq!(
        m["usr/share/flipslot/udhcpc.script"].data,
        UDHCPC_SCRIPT.as_bytes()
    );
    assert_eq!(
        m["usr/bin/flipslot"].data,
        fs::read(fx.path("agent")).unwrap()
    );
    assert_eq!(m["usr/bin/flipslot"].mode, 0o100_755);
    let keys: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.name.strip_prefix("etc/flipslot/provision-keys/"))
        .collect();
    assert_eq!(keys, ["a-first.pub", "b-second.pub"]);
    assert_eq!(
        m["etc/flipslot/provision-keys/a-first.pub"].data,
        fs::read(fx.path("keys/a-first.pub")).unwrap()
    );
    assert_eq!(m["etc/netboot-modules"].data, b"");

    // mke2fs and every library ldd lists, at their host paths, with the same bytes.
    let mke2fs = find_program(OsStr::new("mke2fs")).unwrap();
    let ldd = Command::new("ldd").arg(&mke2fs).output().unwrap();
    let libs = parse_ldd(&text(&ldd.stdout)).unwrap();
    assert!(libs
        .iter()
        .any(|l| l.to_string_lossy().contains("libext2fs")));
    for file in std::iter::once(&mke2fs).chain(&libs) {
        let inside = file.to_str().unwrap().trim_start_matches('/');
        let entry = m.get(inside).unwrap_or_else(|| panic!("{inside} missing"));
        assert_eq!(entry.data, fs::read(file).unwrap(), "{inside}");
    }
    if Path::new("/etc/mke2fs.conf").exists() {
        assert_eq!(
            m["etc/mke2fs.conf"].data,
            fs::read("/etc/mke2fs.conf").unwrap()
        );
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&fs::read(fx.path("out/netboot.json")).unwrap()).unwrap();
    assert_eq!(
        summary["host_files"].as_array().unwrap().len(),
        libs.len() + 1
    );

    // Nothing left behind but the four files.
    let mut names: Vec<String> = fs::read_dir(fx.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["boot.ipxe", "initrd.img", "netboot.json", "vmlinuz"]
    );
    assert_eq!(
        fs::read(fx.path("out/vmlinuz")).unwrap(),
        b"not really a kernel"
    );
}

#[test]
fn same_inputs_give_identical_files() {
    if !have(TOOLS) {
        return;
    }
    let fx = Fixture::new();
    let args = [
        "--kernel",
        "kernel/boot/vmlinuz-0.0.0-test",
        "--modules-dir",
        "kernel/lib/modules/0.0.0-test",
    ];
    fx.ok("one", &args);
    // The second build reads the kernel through another path.
    std::os::unix::fs::symlink(fx.path("kernel"), fx.path("kernel-link")).unwrap();
    fx.ok(
        "two",
        &[
            "--kernel",
            "kernel-link/boot/vmlinuz-0.0.0-test",
            "--modules-dir",
            "kernel-link/lib/modules/0.0.0-test",
        ],
    );
    for name in ["vmlinuz", "initrd.img", "boot.ipxe", "netboot.json"] {
        let one = fs::read(fx.path("one").join(name)).unwrap();
        let two = fs::read(fx.path("two").join(name)).unwrap();
        assert!(one == two, "{name} differs between two builds");
    }
    let entries = parse_cpio(&fs::read(fx.path("one/initrd.img")).unwrap());
    assert!(entries.iter().all(|e| e.mtime == 1_700_000_000));

    // The summary's hashes are those of the files.
    let summary: serde_json::Value =
        serde_json::from_slice(&fs::read(fx.path("one/netboot.json")).unwrap()).unwrap();
    for f in summary["files"].as_array().unwrap() {
        let bytes = fs::read(fx.path("one").join(f["name"].as_str().unwrap())).unwrap();
        use sha2::Digest as _;
        assert_eq!(f["sha256"], hex::encode(sha2::Sha256::digest(&bytes)));
        assert_eq!(f["size"], bytes.len());
    }
}

#[test]
fn boot_ipxe_sets_the_command_line() {
    if !have(TOOLS) {
        return;
    }
    let fx = Fixture::new();
    let stdout = fx.ok(
        "out",
        &[
            "--kernel-tree",
            "kernel",
            "--base-url",
            "http://10.0.2.2:8080/pxe",
            "--disk",
            "/dev/vda",
            "--wipe",
            "--report-url",
            "http://10.0.2.2:8080/report",
            "--cmdline",
            "flipslot.noreboot=1 loglevel=4",
        ],
    );
    assert_eq!(
        fs::read_to_string(fx.path("out/boot.ipxe")).unwrap(),
        "#!ipxe\n\
         kernel http://10.0.2.2:8080/pxe/vmlinuz initrd=initrd.img console=ttyS0 panic=-1 \
         flipslot.provision=http://10.0.2.2:8080/provision.json \
         flipslot.bundle=http://10.0.2.2:8080/os-1.0.fsb flipslot.disk=/dev/vda \
         flipslot.wipe=1 flipslot.report=http://10.0.2.2:8080/report \
         flipslot.noreboot=1 loglevel=4\n\
         initrd http://10.0.2.2:8080/pxe/initrd.img\n\
         boot\n"
    );
    assert!(
        stdout.contains("netboot files for kernel 0.0.0-test"),
        "{stdout}"
    );
    assert!(stdout.contains("boot.ipxe"), "{stdout}");
}

#[test]
fn refused_inputs_name_the_problem_and_write_nothing() {
    if !have(TOOLS) {
        return;
    }
    let fx = Fixture::new();
    let tree = ["--kernel-tree", "kernel"];
    let with = |extra: &[&str]| {
        let mut v = tree.to_vec();
        v.extend_from_slice(extra);
        fx.fails("out", &v)
    };
    let err = with(&["--bundle-url", "http://10.0.2.2:8080/my bundle.fsb"]);
    assert!(
        err.contains("--bundle-url") && err.contains("white space"),
        "{err}"
    );
    let err = with(&["--provision-url", "http://h/\"p\""]);
    assert!(err.contains("quote"), "{err}");
    let err = with(&["--cmdline", "flipslot.bundle=http://h/x"]);
    assert!(err.contains("flipslot.bundle="), "{err}");
    let err = with(&["--cmdline", "caf\u{e9}=1"]);
    assert!(err.contains("non-ASCII"), "{err}");
    let err = with(&["--module", "virtio_net,no_such_module"]);
    assert!(err.contains("has no module no_such_module"), "{err}");
    let err = with(&["--busybox", "/bin/sh"]);
    assert!(err.contains("--busybox") && err.contains("static"), "{err}");
    let err = with(&["--agent", "/bin/sh"]);
    assert!(
        err.contains("--agent") && err.contains("dynamically linked"),
        "{err}"
    );
    let err = with(&["--keyring", "agent"]);
    assert!(err.contains("keyring"), "{err}");
    assert!(!fx.path("out/vmlinuz").exists() && !fx.path("out/initrd.img").exists());

    fs::remove_file(fx.path(&format!("kernel/boot/vmlinuz-{RELEASE}"))).unwrap();
    let err = fx.fails("out", &tree);
    assert!(err.contains("no boot/vmlinuz-*"), "{err}");
    if let Ok(entries) = fs::read_dir(fx.path("out")) {
        assert_eq!(
            entries.count(),
            0,
            "a failed build leaves its scratch directory"
        );
    }
}

#[test]
fn initramfs_programs_run_from_the_archive() {
    // Unpacks the archive and runs its own busybox and mke2fs in it with chroot (root only).
    if !have(TOOLS) || !have(&[("chroot", "coreutils")]) {
        return;
    }
    if !nix_is_root() {
        eprintln!("skipping: chroot needs root");
        return;
    }
    let fx = Fixture::new();
    fx.ok("out", &["--kernel-tree", "kernel"]);
    let root = fx.path("root");
    unpack(
        &parse_cpio(&fs::read(fx.path("out/initrd.img")).unwrap()),
        &root,
    );
    let mke2fs = find_program(OsStr::new("mke2fs")).unwrap();
    let out = Command::new("chroot")
        .arg(&root)
        .arg(&mke2fs)
        .args([
            "-t",
            "ext4",
            "-F",
            "-q",
            "-E",
            "offset=4096",
            "/tmp/disk.img",
            "8M",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mke2fs in the initramfs: {}",
        text(&out.stderr)
    );
    let out = Command::new("chroot")
        .arg(&root)
        .args(["/bin/sh", "/init"])
        .env(
            "FLIPSLOT_NETBOOT_CMDLINE",
            "flipslot.provision=http://h/p flipslot.bundle=http://h/b",
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("provision\n--description\nhttp://h/p\n"));
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| text(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Writes the directories, files and symbolic links of `entries` under `root`.
fn unpack(entries: &[Entry], root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(root).unwrap();
    for e in entries {
        let path = root.join(&e.name);
        match e.kind() {
            0o040_000 => fs::create_dir_all(&path).unwrap(),
            0o100_000 => {
                fs::write(&path, &e.data).unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(e.mode & 0o7777)).unwrap();
            }
            0o120_000 => std::os::unix::fs::symlink(text(&e.data), &path).unwrap(),
            _ => {} // device nodes are not needed here
        }
    }
}

// ---------------------------------------------------------------------------------------
// A real Debian kernel.

/// The current `linux-image-<release>-amd64` package, downloaded once into Cargo's test
/// scratch directory (`apt-get download`, no root needed); a cached one when apt cannot
/// reach its mirror.
fn debian_kernel_deb() -> Option<PathBuf> {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("netboot-kernel");
    fs::create_dir_all(&cache).unwrap();
    let resolved = Command::new("apt-cache")
        .args(["depends", "linux-image-amd64"])
        .output()
        .ok()
        .and_then(|o| {
            text(&o.stdout).lines().find_map(|l| {
                let name = l.trim().strip_prefix("Depends: ")?;
                name.starts_with("linux-image-").then(|| name.to_string())
            })
        });
    if let Some(package) = resolved {
        let dir = cache.join(&package);
        if let Some(deb) = find_deb(&dir) {
            return Some(deb);
        }
        let work = cache.join(format!(".{package}.download"));
        fs::remove_dir_all(&work).ok();
        fs::create_dir_all(&work).unwrap();
        let ok = Command::new("apt-get")
            .args(["download", "-q", &package])
            .current_dir(&work)
            .status()
            .is_ok_and(|s| s.success());
        if ok && find_deb(&work).is_some() {
            fs::rename(&work, &dir).unwrap();
            return find_deb(&dir);
        }
        eprintln!("apt-get download {package} failed; looking for a cached kernel package");
    }
    fs::read_dir(&cache)
        .ok()?
        .filter_map(|e| find_deb(&e.ok()?.path()))
        .next()
}

fn find_deb(dir: &Path) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
}

#[test]
fn real_kernel_modules_are_in_load_order() {
    let mut tools = TOOLS.to_vec();
    tools.extend([
        ("dpkg-deb", "dpkg"),
        ("apt-get", "apt"),
        ("modinfo", "kmod"),
    ]);
    if !have(&tools) {
        return;
    }
    let Some(deb) = debian_kernel_deb() else {
        let msg = "no Debian kernel package: apt-get download linux-image-<release>-amd64 failed";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("skipping: {msg}");
        return;
    };
    let fx = Fixture::new();
    let stdout = fx.ok("out", &["--kernel-deb", deb.to_str().unwrap(), "--json"]);
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let release = json["kernel_version"].as_str().unwrap().to_string();
    assert!(release.ends_with("-amd64"), "{release}");

    let entries = parse_cpio(&fs::read(fx.path("out/initrd.img")).unwrap());
    let m = by_name(&entries);
    let list = text(&m["etc/netboot-modules"].data);
    let order: Vec<&str> = list.lines().collect();
    let summary: Vec<String> = json["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| format!("/{}", v.as_str().unwrap()))
        .collect();
    assert_eq!(order, summary);
    let base = |p: &str| {
        p.rsplit('/')
            .next()
            .unwrap()
            .trim_end_matches(".ko")
            .replace('-', "_")
    };
    let names: Vec<String> = order.iter().map(|p| base(p)).collect();
    for wanted in [
        "virtio_net",
        "virtio_blk",
        "virtio_pci",
        "nvme",
        "ahci",
        "e1000",
        "igb",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing: {names:?}"
        );
    }

    // Every module's dependencies (modinfo's depends=, read from the archive's own copy)
    // come before it, and every file is a plain module in the archive.
    let dir = tempfile::tempdir().unwrap();
    for (i, path) in order.iter().enumerate() {
        assert!(
            path.starts_with(&format!("/lib/modules/{release}/kernel/")),
            "{path}"
        );
        let entry = m[path.trim_start_matches('/')];
        assert_eq!(
            &entry.data[..4],
            b"\x7fELF",
            "{path} is not an uncompressed module"
        );
        let file = dir.path().join(format!("{i}.ko"));
        fs::write(&file, &entry.data).unwrap();
        let out = Command::new("modinfo")
            .args(["-F", "depends"])
            .arg(&file)
            .output()
            .unwrap();
        for dep in text(&out.stdout)
            .trim()
            .split(',')
            .filter(|d| !d.is_empty())
        {
            let dep = dep.replace('-', "_");
            let at = names.iter().position(|n| *n == dep);
            assert!(
                at.is_some_and(|at| at < i),
                "{path} needs {dep}, which is not loaded before it"
            );
        }
    }
}
