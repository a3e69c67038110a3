#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Yocto layer (`yocto-layer/meta-flipslot`), checked without bitbake: a full build
//! needs the Yocto sources, which CI cannot fetch (docs/yocto.md). What can be checked
//! here is, against real tools:
//!
//! - `oelint-adv` (tests/pydeps.sh) on every recipe, bbappend and class, for each series
//!   the layer claims: no error, and no finding that `oelint-allow.txt` does not explain;
//! - `flipslot-crates.inc` is what `gen-crates-inc.py` makes of Cargo.lock, and holds every
//!   locked crates.io package with its checksum;
//! - the bundle class's task script, run as the class runs it against the real
//!   `flipslot-image`: a verified bundle, byte-identical for the same SOURCE_DATE_EPOCH;
//! - the `.wks` partitions against the reference layout, and the grub.cfg and grubenv the
//!   layer ships against what `flipslot-image disk` writes for that layout;
//! - the U-Boot script is the one of docs/reference-uboot-script.md;
//! - the agent's configuration written from the recipe's variables, read by the real agent;
//! - the kas file against kas's own schema; the recipes against the workspace (version,
//!   license checksums, units, the Rust it needs).
//!
//! Tools missing (the venv, mtools, GRUB, ...): a failure under `CI=true`, else a skip.

use flipslot_e2e::host::{self, Need};
use flipslot_e2e::images::{ImageTool, KeyPair, RIG_LAYOUT};
use flipslot_e2e::{cargo_build, cmd, inspect, paths};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LAYER: &str = "yocto-layer/meta-flipslot";
/// The series of `LAYERSERIES_COMPAT_flipslot`, each linted.
const SERIES: &[&str] = &["scarthgap", "whinlatter"];
const COMPATIBLE: &str = "yocto-test-board";

fn repo() -> PathBuf {
    paths::workspace_root()
}

fn layer() -> PathBuf {
    repo().join(LAYER)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn layer_text(rel: &str) -> String {
    read(&layer().join(rel))
}

fn toml_file(path: &Path) -> toml::Table {
    read(path)
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A program of the Python venv `tests/pydeps.sh` makes (`target/pyvenv/bin/NAME`).
/// Missing: a failure under `CI=true`, else a skip message and `None`.
fn venv_program(test: &str, name: &str) -> Option<PathBuf> {
    let p = paths::target_dir().join("pyvenv/bin").join(name);
    if p.is_file() {
        return Some(p);
    }
    let msg = format!("{test}: {} is missing: run tests/pydeps.sh", p.display());
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("skipped {msg}");
    None
}

fn need(what: &'static str, package: &'static str) -> Need {
    Need { what, package }
}

fn scratch(prefix: &str) -> tempfile::TempDir {
    paths::scratch_dir(prefix).unwrap()
}

/// Runs `c` to its end, whatever its exit status.
fn output(c: &mut Command) -> Output {
    cmd::run_any_status(c).unwrap()
}

/// The `NAME="..."` assignments in front of the command of shell function `name` (in a
/// recipe or class): the environment the function gives its script.
fn function_env(text: &str, name: &str) -> BTreeSet<String> {
    let head = format!("{name}() {{");
    let mut lines = text.lines().skip_while(|l| l.trim_end() != head);
    assert!(lines.next().is_some(), "no shell function {name}");
    lines
        .take_while(|l| l.trim_end() != "}")
        .filter_map(|l| {
            let (name, _) = l.trim_start().split_once("=\"")?;
            is_variable(name).then(|| name.to_string())
        })
        .collect()
}

/// The variables a script's header comment lists, one `#   NAME   meaning` line each.
fn documented_variables(script: &str) -> BTreeSet<String> {
    script
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("#   ")?.split_whitespace().next())
        .filter(|w| is_variable(w))
        .map(str::to_string)
        .collect()
}

fn is_variable(word: &str) -> bool {
    word.len() > 1
        && word.starts_with(|c: char| c.is_ascii_uppercase())
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The `NAME ??= "value"` defaults of a recipe, class or conf file.
fn weak_defaults(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(" ??= ")?;
            let value = value.strip_prefix('"')?.strip_suffix('"')?;
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}

/// The value of `NAME = "..."` (one line) in a recipe, class or conf file.
fn assignment(text: &str, name: &str) -> String {
    let prefix = format!("{name} = \"");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no {name} = \"...\" line"))
        .to_string()
}

/// Bytes of a size such as `32M` (binary suffixes K, M, G).
fn size_bytes(s: &str) -> u64 {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().unwrap_or_else(|_| panic!("bad size {s}"));
    n << match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => panic!("bad size unit in {s}"),
    }
}

// ---------------------------------------------------------------------------------------
// oelint-adv

/// One entry of `oelint-allow.txt`: `FILE RULE: reason` (FILE `*` for every file).
#[derive(Debug)]
struct Allowed {
    file: String,
    rule: String,
    reason: String,
}

fn allow_list() -> Vec<Allowed> {
    layer_text("oelint-allow.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (head, reason) = l
                .split_once(": ")
                .unwrap_or_else(|| panic!("oelint-allow.txt: no reason in {l:?}"));
            let (file, rule) = head
                .split_once(' ')
                .unwrap_or_else(|| panic!("oelint-allow.txt: not FILE RULE in {l:?}"));
            assert!(reason.len() > 20, "oelint-allow.txt: give a reason: {l:?}");
            if file != "*" {
                assert!(layer().join(file).is_file(), "oelint-allow.txt: no {file}");
            }
            Allowed {
                file: file.to_string(),
                rule: rule.to_string(),
                reason: reason.to_string(),
            }
        })
        .collect()
}

/// The layer's recipes, bbappends and classes, relative to the layer.
fn lintable_files() -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![layer()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .is_some_and(|x| x == "bb" || x == "bbappend" || x == "bbclass")
            {
                out.push(p.strip_prefix(layer()).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// A finding: (file relative to the layer, severity, rule id, the whole line).
type Finding = (String, String, String, String);

fn oelint(program: &Path, series: &str, suppress: &[&str], files: &[String]) -> Vec<Finding> {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("findings.txt");
    let mut c = Command::new(program);
    c.args([
        "--release",
        series,
        "--mode",
        "all",
        "--quiet",
        "--jobs",
        "1",
    ])
    .arg(format!(
        "--constantmods=+{}",
        layer().join("oelint-constants.json").display()
    ))
    .arg("--output")
    .arg(&report);
    for rule in suppress {
        c.args(["--suppress", rule]);
    }
    c.args(files).current_dir(layer());
    let out = output(&mut c);
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let prefix = format!("{}/", layer().display());
    let mut findings = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // {path}:{line}:{severity}:{id}:{msg}
        let parts: Vec<&str> = line.splitn(5, ':').collect();
        assert_eq!(
            parts.len(),
            5,
            "oelint-adv --release {series}: unexpected line {line:?}"
        );
        let file = parts[0].strip_prefix(&prefix).unwrap_or(parts[0]);
        findings.push((
            file.to_string(),
            parts[2].to_string(),
            parts[3].to_string(),
            line.to_string(),
        ));
    }
    assert!(
        out.status.success() || !findings.is_empty(),
        "oelint-adv --release {series} failed without a finding: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    findings
}

#[test]
fn oelint_adv_finds_nothing_unexplained() {
    let Some(program) = venv_program("oelint_adv_finds_nothing_unexplained", "oelint-adv") else {
        return;
    };
    let allowed = allow_list();
    let files = lintable_files();
    assert!(files.len() >= 7, "{files:?}");
    let suppress: Vec<&str> = allowed
        .iter()
        .filter(|a| a.file == "*")
        .map(|a| a.rule.as_str())
        .collect();
    let mut matched = BTreeSet::new();
    let mut problems = Vec::new();
    for series in SERIES {
        for (file, severity, rule, line) in oelint(&program, series, &suppress, &files) {
            if severity == "error" {
                problems.push(format!("{series}: an error is never allowed: {line}"));
            }
            match allowed
                .iter()
                .position(|a| a.file == file && a.rule == rule)
            {
                Some(i) => {
                    matched.insert(i);
                }
                None => problems.push(format!("{series}: not in oelint-allow.txt: {line}")),
            }
        }
    }
    for (i, a) in allowed.iter().enumerate() {
        if a.file != "*" && !matched.contains(&i) {
            problems.push(format!(
                "oelint-allow.txt: {} {} matches no finding any more: remove it",
                a.file, a.rule
            ));
        }
    }
    let readme = layer_text("README.md");
    for a in &allowed {
        if !readme.contains(&a.rule) {
            problems.push(format!(
                "README.md does not explain {} ({}: {})",
                a.rule, a.file, a.reason
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn layer_series_are_the_linted_ones() {
    let conf = layer_text("conf/layer.conf");
    let compat = assignment(&conf, "LAYERSERIES_COMPAT_flipslot");
    assert_eq!(compat.split_whitespace().collect::<Vec<_>>(), SERIES);
    let readme = layer_text("README.md");
    for series in SERIES {
        assert!(readme.contains(series), "README.md does not name {series}");
    }
}

// ---------------------------------------------------------------------------------------
// Crates

#[test]
fn crates_inc_is_generated_from_cargo_lock() {
    if !host::can_run(
        "crates_inc_is_generated_from_cargo_lock",
        &[need("python3", "python3")],
    ) {
        return;
    }
    let committed_path = layer().join("recipes-core/flipslot/flipslot-crates.inc");
    let committed = read(&committed_path);
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("flipslot-crates.inc");
    cmd::run(
        Command::new("python3")
            .arg(repo().join("yocto-layer/scripts/gen-crates-inc.py"))
            .arg("--output")
            .arg(&fresh),
    )
    .unwrap();
    let fresh = read(&fresh);
    if fresh != committed {
        let first = fresh
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || "one file is longer".to_string(),
                |i| format!("line {}", i + 1),
            );
        panic!(
            "{} disagrees with Cargo.lock (first difference: {first}): run \
             yocto-layer/scripts/gen-crates-inc.py and commit the result",
            committed_path.display()
        );
    }

    // What the script must have done, checked on its own: every crates.io package of the
    // lock file fetched and checked, nothing else.
    let lock = toml_file(&repo().join("Cargo.lock"));
    let mut uris = BTreeSet::new();
    let mut sums = BTreeSet::new();
    for p in lock["package"].as_array().unwrap() {
        let Some(source) = p.get("source").and_then(|s| s.as_str()) else {
            continue;
        };
        assert!(
            source.starts_with("registry+https://github.com/rust-lang/crates.io-index"),
            "{p}: only crates.io sources can be fetched as crate:// URLs"
        );
        let (name, version) = (p["name"].as_str().unwrap(), p["version"].as_str().unwrap());
        uris.insert(format!("    crate://crates.io/{name}/{version} \\"));
        sums.insert(format!(
            "SRC_URI[{name}-{version}.sha256sum] = \"{}\"",
            p["checksum"].as_str().unwrap()
        ));
    }
    let inc_uris: BTreeSet<String> = committed
        .lines()
        .filter(|l| l.contains("crate://"))
        .map(str::to_string)
        .collect();
    let inc_sums: BTreeSet<String> = committed
        .lines()
        .filter(|l| l.starts_with("SRC_URI["))
        .map(str::to_string)
        .collect();
    assert_eq!(inc_uris, uris);
    assert_eq!(inc_sums, sums);
    assert!(uris.len() > 100, "{} crates", uris.len());
}

// ---------------------------------------------------------------------------------------
// The bundle class

/// A small ext4 root filesystem made by mke2fs from a tree, as an image recipe deploys one.
fn rootfs_ext4(dir: &Path) -> PathBuf {
    let tree = dir.join("rootfs");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::create_dir_all(tree.join("boot")).unwrap();
    std::fs::write(
        tree.join("etc/os-release"),
        "ID=poky\nNAME=\"flipslot test\"\n",
    )
    .unwrap();
    std::fs::write(tree.join("boot/bzImage"), b"not a kernel").unwrap();
    let image = dir.join("flipslot-image-minimal-qemux86-64.rootfs.ext4");
    cmd::run(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
            .arg(&tree)
            .arg(&image)
            .arg("8M"),
    )
    .unwrap();
    image
}

fn sha256_hex(path: &Path) -> String {
    let out = cmd::run_text(Command::new("sha256sum").arg(path)).unwrap();
    out.split_whitespace().next().unwrap().to_string()
}

/// The environment the class's do_bundle gives its script, as a build would set it.
fn bundle_env(tool: &Path, image: &Path, keys: &KeyPair, out: &Path) -> BTreeMap<String, String> {
    let s = |p: &Path| p.display().to_string();
    [
        ("FLIPSLOT_IMAGE_TOOL", s(tool)),
        ("FLIPSLOT_BUNDLE_IMAGE_FILE", s(image)),
        ("FLIPSLOT_BUNDLE_SLOT_CLASS", "rootfs".to_string()),
        ("FLIPSLOT_BUNDLE_COMPATIBLE", COMPATIBLE.to_string()),
        ("FLIPSLOT_BUNDLE_VERSION", "1.0.0".to_string()),
        (
            "FLIPSLOT_BUNDLE_DESCRIPTION",
            "The flipslot update bundle of flipslot-image-minimal".to_string(),
        ),
        ("FLIPSLOT_KEY_FILE", s(&keys.secret)),
        ("FLIPSLOT_BUNDLE_KEYRING", s(&keys.public)),
        (
            "FLIPSLOT_BUNDLE_ARGS",
            "--compression zstd --block-index".to_string(),
        ),
        ("FLIPSLOT_BUNDLE_OUT", s(out)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Runs the bundle script with `env` (and PATH) only, as a bitbake task does.
fn run_bundle_script(env: &BTreeMap<String, String>, epoch: Option<&str>) -> Output {
    let mut c = Command::new("sh");
    c.arg(layer().join("files/flipslot-bundle.sh"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env);
    if let Some(e) = epoch {
        c.env("SOURCE_DATE_EPOCH", e);
    }
    output(&mut c)
}

#[test]
fn bundle_class_script_builds_a_verified_reproducible_bundle() {
    if !host::can_run(
        "bundle_class_script_builds_a_verified_reproducible_bundle",
        &[need("mke2fs", "e2fsprogs"), need("sha256sum", "coreutils")],
    ) {
        return;
    }
    // The class hands its script exactly the variables the script documents (bitbake
    // exports SOURCE_DATE_EPOCH to every task by itself), and this test sets the same.
    let class = layer_text("classes-recipe/flipslot_bundle.bbclass");
    let script = layer_text("files/flipslot-bundle.sh");
    let passed = function_env(&class, "do_bundle");
    let mut documented = documented_variables(&script);
    assert!(documented.remove("SOURCE_DATE_EPOCH"), "{documented:?}");
    assert_eq!(
        passed, documented,
        "do_bundle and flipslot-bundle.sh disagree"
    );

    let tool = ImageTool::build().unwrap();
    let w = scratch("yocto-bundle-");
    let w = w.path();
    let keys = tool.keygen(w, "release").unwrap();
    let image = rootfs_ext4(w);
    let bundle = |name: &str, epoch: Option<&str>| -> (PathBuf, Output) {
        let out = w.join(name);
        let env = bundle_env(&tool.0, &image, &keys, &out);
        assert_eq!(env.keys().cloned().collect::<BTreeSet<_>>(), passed);
        let o = run_bundle_script(&env, epoch);
        (out, o)
    };

    let (first, o) = bundle("first.fsb", Some("1700000000"));
    assert!(
        o.status.success(),
        "flipslot-bundle.sh: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let (second, o) = bundle("second.fsb", Some("1700000000"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        std::fs::read(&first).unwrap() == std::fs::read(&second).unwrap(),
        "two builds with the same SOURCE_DATE_EPOCH differ"
    );

    cmd::run(
        Command::new(&tool.0)
            .args(["verify", "--keyring"])
            .arg(&keys.public)
            .arg(&first),
    )
    .unwrap();
    let info: Value = serde_json::from_str(
        &cmd::run_text(
            Command::new(&tool.0)
                .args(["info", "--json", "--keyring"])
                .arg(&keys.public)
                .arg(&first),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(info["compatible"], COMPATIBLE, "{info}");
    assert_eq!(info["version"], "1.0.0", "{info}");
    assert_eq!(info["build_time"], 1_700_000_000u64, "{info}");
    let images = info["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "{info}");
    assert_eq!(images[0]["class"], "rootfs", "{info}");
    assert_eq!(images[0]["sha256"], sha256_hex(&image).as_str(), "{info}");
    assert_eq!(images[0]["compression"], "zstd", "{info}");
    assert_eq!(
        images[0]["size"],
        std::fs::metadata(&image).unwrap().len(),
        "{info}"
    );

    // Another SOURCE_DATE_EPOCH is another build time, hence other bytes.
    let (third, o) = bundle("third.fsb", Some("1700000001"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&first).unwrap() != std::fs::read(&third).unwrap());

    // Refused, naming the variable, with nothing written: no SOURCE_DATE_EPOCH, no key.
    let (none, o) = bundle("no-epoch.fsb", None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("SOURCE_DATE_EPOCH is not set"));
    assert!(!none.exists());
    let out = w.join("no-key.fsb");
    let mut env = bundle_env(&tool.0, &image, &keys, &out);
    env.insert("FLIPSLOT_KEY_FILE".into(), String::new());
    let o = run_bundle_script(&env, Some("1700000000"));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("FLIPSLOT_KEY_FILE is not set"));
    assert!(!out.exists());
}

// ---------------------------------------------------------------------------------------
// wic, GRUB and U-Boot

/// One `part` line of a .wks file.
#[derive(Debug)]
struct WksPart {
    mountpoint: Option<String>,
    /// `--option` to its value (`""` for a flag such as `--active`).
    opts: BTreeMap<String, String>,
}

impl WksPart {
    fn opt(&self, key: &str) -> &str {
        self.opts
            .get(key)
            .unwrap_or_else(|| panic!("{self:?} has no --{key}"))
    }
}

/// Words of a .wks line: whitespace-separated, double quotes kept together and removed.
fn wks_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// The options of a .wks line's words (after the command word).
fn wks_options(words: &[String]) -> (Option<String>, BTreeMap<String, String>) {
    const FLAGS: &[&str] = &[
        "active",
        "no-table",
        "use-uuid",
        "use-label",
        "no-fstab-update",
        "hidden",
        "mbr",
    ];
    let mut mountpoint = None;
    let mut opts = BTreeMap::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        if let Some(opt) = w.strip_prefix("--") {
            if let Some((k, v)) = opt.split_once('=') {
                opts.insert(k.to_string(), v.to_string());
            } else if FLAGS.contains(&opt) {
                opts.insert(opt.to_string(), String::new());
            } else {
                i += 1;
                opts.insert(opt.to_string(), words[i].clone());
            }
        } else {
            assert!(mountpoint.is_none(), "two mount points in {words:?}");
            mountpoint = Some(w.clone());
        }
        i += 1;
    }
    (mountpoint, opts)
}

/// The bootloader options and the partitions of a .wks file.
fn parse_wks(rel: &str) -> (BTreeMap<String, String>, Vec<WksPart>) {
    let mut bootloader = BTreeMap::new();
    let mut parts = Vec::new();
    for line in layer_text(rel).lines() {
        let words = wks_words(line);
        match words.first().map(String::as_str) {
            Some("part") => {
                let (mountpoint, opts) = wks_options(&words[1..]);
                parts.push(WksPart { mountpoint, opts });
            }
            Some("bootloader") => bootloader = wks_options(&words[1..]).1,
            Some(w) if w.starts_with('#') => {}
            None => {}
            Some(w) => panic!("{rel}: unexpected line {w:?}"),
        }
    }
    (bootloader, parts)
}

const GPT_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const GPT_LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// `(label, role, size in bytes, data fs)` of a flipslot layout's partitions.
fn layout_partitions(layout: &toml::Table) -> Vec<(String, String, u64, String)> {
    layout["partition"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            (s("label"), s("role"), size_bytes(&s("size")), s("fs"))
        })
        .collect()
}

#[test]
fn wks_files_match_the_reference_layout() {
    // The layer's layout is the rig's reference layout, partition for partition; only the
    // kernel, initrd and command line are a Yocto image's.
    let ours = toml_file(&layer().join("wic/flipslot-ab-grub-efi.layout.toml"));
    let rig: toml::Table = RIG_LAYOUT.parse().unwrap();
    let strip = |t: &toml::Table| -> Vec<toml::Table> {
        t["partition"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let mut p = p.as_table().unwrap().clone();
                p.remove("from");
                p.remove("status-file");
                p
            })
            .collect()
    };
    assert_eq!(strip(&ours), strip(&rig), "layout vs RIG_LAYOUT");
    assert_eq!(ours["bootloader"].as_str(), rig["bootloader"].as_str());
    let layout = layout_partitions(&ours);
    let labels: Vec<&str> = layout.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(labels, ["esp", "rootfs-a", "rootfs-b", "data"]);

    // The slots hold what the bundle class puts in a bundle by default.
    let class = layer_text("classes-recipe/flipslot_bundle.bbclass");
    let slot_fs = weak_defaults(&class)["FLIPSLOT_BUNDLE_IMAGE_FSTYPE"].clone();

    let (boot, parts) = parse_wks("wic/flipslot-ab-grub-efi.wks");
    assert_eq!(boot["ptable"], "gpt");
    assert_eq!(boot["timeout"], "0");
    let cfg = &boot["configfile"];
    assert!(layer().join("wic").join(cfg).is_file(), "no wic/{cfg}");
    assert_eq!(parts.len(), layout.len());
    for (part, (label, role, size, fs)) in parts.iter().zip(&layout) {
        assert_eq!(part.opt("part-name"), label, "{part:?}");
        assert_eq!(part.opt("label"), label, "{part:?}");
        assert_eq!(size_bytes(part.opt("fixed-size")), *size, "{part:?}");
        assert_eq!(
            part.opt("align"),
            "1024",
            "1 MiB, as flipslot aligns: {part:?}"
        );
        let (fstype, gpt_type) = match role.as_str() {
            "esp" => ("vfat", GPT_ESP),
            "slot" => (slot_fs.as_str(), GPT_LINUX),
            "data" => (fs.as_str(), GPT_LINUX),
            r => panic!("role {r}"),
        };
        assert_eq!(part.opt("fstype"), fstype, "{part:?}");
        assert_eq!(part.opt("part-type"), gpt_type, "{part:?}");
    }
    assert_eq!(parts[0].opt("source"), "bootimg-efi");
    assert_eq!(
        parts[0].opt("sourceparams"),
        "loader=grub-efi,install-kernel-into-boot-dir=false"
    );
    assert_eq!(parts[1].opt("source"), "rootfs", "slot A holds the image");
    assert_eq!(parts[1].mountpoint.as_deref(), Some("/"));
    for p in &parts[2..] {
        assert!(
            !p.opts.contains_key("source"),
            "slot B and data start empty: {p:?}"
        );
        assert!(p.mountpoint.is_none(), "{p:?}");
    }

    // U-Boot: a FAT boot partition first (boot.scr), then the same slots and data, so the
    // reference script's partitions 2 and 3 are slots A and B.
    let (boot, uparts) = parse_wks("wic/flipslot-ab-uboot.wks");
    assert_eq!(boot["ptable"], "gpt");
    assert_eq!(uparts.len(), parts.len());
    let b = &uparts[0];
    assert_eq!(b.opt("part-name"), "boot");
    assert_eq!(b.opt("source"), "bootimg-partition");
    assert_eq!(b.opt("fstype"), "vfat");
    assert_eq!(size_bytes(b.opt("fixed-size")), layout[0].2);
    assert!(
        b.opts.contains_key("active"),
        "U-Boot's distro boot looks for a bootable partition"
    );
    for (u, g) in uparts[1..].iter().zip(&parts[1..]) {
        for k in [
            "part-name",
            "label",
            "fixed-size",
            "fstype",
            "part-type",
            "align",
        ] {
            assert_eq!(u.opt(k), g.opt(k), "--{k} of {u:?}");
        }
        assert_eq!(u.opt("ondisk"), "mmcblk0");
        assert_eq!(u.opts.get("source"), g.opts.get("source"));
    }
    let script = layer_text("recipes-bsp/flipslot-uboot-script/files/boot.cmd");
    assert!(
        script.contains("setenv flipslot_part 2")
            && script.contains("setenv flipslot_root /dev/mmcblk0p2")
    );
    assert!(
        script.contains("setenv flipslot_part 3")
            && script.contains("setenv flipslot_root /dev/mmcblk0p3")
    );
}

/// The module names of `GRUB_MODULES` in image-tools/src/disk/grub.rs.
fn flipslot_grub_modules() -> BTreeSet<String> {
    let src = read(&repo().join("image-tools/src/disk/grub.rs"));
    let start = src.find("pub const GRUB_MODULES").expect("GRUB_MODULES");
    let body = &src[start..];
    let body = &body[body.find('[').unwrap()..body.find("];").unwrap()];
    body.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn grub_cfg_and_grubenv_are_what_flipslot_image_writes() {
    let needs = [
        need("sgdisk", "gdisk"),
        need("mkfs.vfat", "dosfstools"),
        need("mcopy", "mtools"),
        need("grub-mkimage", "grub-common"),
        need("grub-editenv", "grub-common"),
        need("/usr/lib/grub/x86_64-efi/linux.mod", "grub-efi-amd64-bin"),
        need("mke2fs", "e2fsprogs"),
    ];
    if !host::can_run(
        "grub_cfg_and_grubenv_are_what_flipslot_image_writes",
        &needs,
    ) {
        return;
    }
    let tool = ImageTool::build().unwrap();
    let w = scratch("yocto-grub-");
    let w = w.path();
    let keys = tool.keygen(w, "release").unwrap();
    let image = rootfs_ext4(w);
    let bundle = w.join("bundle.fsb");
    let mut image_arg = std::ffi::OsString::from("rootfs=");
    image_arg.push(&image);
    cmd::run(
        Command::new(&tool.0)
            .args(["build", "--compatible", COMPATIBLE, "--version", "1.0.0"])
            .arg("--image")
            .arg(image_arg)
            .arg("--key")
            .arg(&keys.secret)
            .arg("--out")
            .arg(&bundle)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    )
    .unwrap();
    let layout_path = layer().join("wic/flipslot-ab-grub-efi.layout.toml");
    let disk = w.join("disk.img");
    let info = tool
        .disk(&layout_path, &bundle, &keys.public, None, &disk)
        .unwrap();

    // The disk flipslot-image builds from the layout has the wks's partitions.
    let (_, parts) = parse_wks("wic/flipslot-ab-grub-efi.wks");
    let built: Vec<(String, u64)> = info
        .partitions
        .iter()
        .map(|p| (p.label.clone(), p.size))
        .collect();
    let wks: Vec<(String, u64)> = parts
        .iter()
        .map(|p| {
            (
                p.opt("part-name").to_string(),
                size_bytes(p.opt("fixed-size")),
            )
        })
        .collect();
    assert_eq!(built, wks);
    assert!(info.partitions.iter().all(|p| p.start % (1 << 20) == 0));

    let esp = info.esp().unwrap().start;
    let cfg = inspect::read_fat_file(&disk, esp, "/EFI/BOOT/grub.cfg").unwrap();
    let shipped_cfg = layer().join("wic/flipslot-ab-grub-efi.cfg");
    assert!(
        cfg == std::fs::read(&shipped_cfg).unwrap(),
        "{} is not what flipslot-image writes for {}: copy EFI/BOOT/grub.cfg of a disk \
         built from that layout",
        shipped_cfg.display(),
        layout_path.display()
    );
    let env = inspect::read_fat_file(&disk, esp, inspect::ESP_GRUBENV).unwrap();
    let shipped_env = layer().join("recipes-bsp/grub/files/flipslot-grubenv");
    assert!(
        env == std::fs::read(&shipped_env).unwrap(),
        "{}",
        shipped_env.display()
    );
    // ... which grub-editenv reads as the reference initial environment.
    let listed = cmd::run_text(Command::new("grub-editenv").arg(&shipped_env).arg("list")).unwrap();
    assert_eq!(listed, "ORDER=A B\nA_OK=1\nA_TRY=0\nB_OK=0\nB_TRY=0\n");

    // oe-core's built-in GRUB modules with the bbappend's cover flipslot's list.
    let bbappend = layer_text("recipes-bsp/grub/grub-efi_%.bbappend");
    let added = assignment(&bbappend, "GRUB_BUILDIN:append:flipslot");
    // GRUB_BUILDIN ?= of oe-core's grub-efi_2.12.bb (scarthgap; the same in whinlatter).
    let core = "boot linux ext2 fat serial part_msdos part_gpt normal efi_gop iso9660 \
                configfile search loadenv test";
    let built_in: BTreeSet<String> = core
        .split_whitespace()
        .chain(added.split_whitespace())
        .map(str::to_string)
        .collect();
    let missing: Vec<String> = flipslot_grub_modules()
        .difference(&built_in)
        .cloned()
        .collect();
    assert!(missing.is_empty(), "GRUB_BUILDIN lacks {missing:?}");
}

#[test]
fn uboot_script_is_the_documented_one() {
    let doc = read(&repo().join("docs/reference-uboot-script.md"));
    let mut block = String::new();
    let mut inside = false;
    for line in doc.lines() {
        match line {
            "```uboot-script" => inside = true,
            "```" if inside => break,
            l if inside => {
                block.push_str(l);
                block.push('\n');
            }
            _ => {}
        }
    }
    let rel = "recipes-bsp/flipslot-uboot-script/files/boot.cmd";
    assert_eq!(
        layer_text(rel),
        block,
        "{rel} must be the script of docs/reference-uboot-script.md, byte for byte"
    );

    if !host::can_run(
        "uboot_script_is_the_documented_one",
        &[need("mkimage", "u-boot-tools")],
    ) {
        return;
    }
    // The recipe's mkimage call, with the architecture of an arm64 board.
    let recipe = layer_text("recipes-bsp/flipslot-uboot-script/flipslot-uboot-script_1.0.bb");
    assert!(recipe.contains(
        "uboot-mkimage -A ${FLIPSLOT_UBOOT_SCRIPT_ARCH} -T script -C none -n \"flipslot A/B\""
    ));
    let dir = tempfile::tempdir().unwrap();
    let scr = dir.path().join("boot.scr");
    cmd::run(
        Command::new("mkimage")
            .args([
                "-A",
                "arm64",
                "-T",
                "script",
                "-C",
                "none",
                "-n",
                "flipslot A/B",
                "-d",
            ])
            .arg(layer().join(rel))
            .arg(&scr),
    )
    .unwrap();
    let bytes = std::fs::read(&scr).unwrap();
    assert_eq!(&bytes[..4], &[0x27, 0x05, 0x19, 0x56], "legacy image magic");
    assert_eq!(&bytes[32..44], b"flipslot A/B");
    let listed = cmd::run_text(Command::new("mkimage").arg("-l").arg(&scr)).unwrap();
    assert!(listed.contains("Script"), "{listed}");
}

// ---------------------------------------------------------------------------------------
// The agent's configuration

/// Runs flipslot-config.sh with `vars` (and PATH) only.
fn config_script(what: &str, vars: &BTreeMap<String, String>) -> Output {
    output(
        Command::new("sh")
            .arg(layer().join("recipes-core/flipslot/files/flipslot-config.sh"))
            .arg(what)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(vars),
    )
}

fn config_text(what: &str, vars: &BTreeMap<String, String>) -> String {
    let o = config_script(what, vars);
    assert!(
        o.status.success(),
        "flipslot-config.sh {what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// The recipe's defaults for the variables it passes to flipslot-config.sh, with
/// `${sysconfdir}` as Yocto sets it, and FLIPSLOT_COMPATIBLE given.
fn recipe_config_vars() -> BTreeMap<String, String> {
    let recipe = layer_text("recipes-core/flipslot/flipslot_0.1.0.bb");
    let script = layer_text("recipes-core/flipslot/files/flipslot-config.sh");
    let passed = function_env(&recipe, "flipslot_config");
    assert_eq!(
        passed,
        documented_variables(&script),
        "flipslot_config and flipslot-config.sh disagree"
    );
    let defaults = weak_defaults(&recipe);
    passed
        .into_iter()
        .map(|name| {
            let value = if name == "FLIPSLOT_COMPATIBLE" {
                COMPATIBLE.to_string()
            } else {
                defaults
                    .get(&name)
                    .unwrap_or_else(|| panic!("the recipe has no default for {name}"))
                    .replace("${sysconfdir}", "/etc")
            };
            assert!(!value.contains("${"), "{name} = {value}");
            (name, value)
        })
        .collect()
}

/// The kernel command line of slot A's entry in the shipped grub.cfg, as the kernel sees it.
fn slot_a_cmdline() -> String {
    let cfg = layer_text("wic/flipslot-ab-grub-efi.cfg");
    let linux = cfg
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("linux ") && l.contains("flipslot.slot=A"))
        .expect("slot A's linux line");
    // linux (${flipslot_disk},gpt2)/boot/bzImage ARG 'ARG' ...
    linux
        .split_whitespace()
        .skip(2)
        .map(|w| w.trim_matches('\''))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn agent_reads_the_configuration_written_from_variables() {
    if !host::can_run(
        "agent_reads_the_configuration_written_from_variables",
        &[need("sh", "dash")],
    ) {
        return;
    }
    let vars = recipe_config_vars();
    let system_toml = config_text("system-toml", &vars);
    let parsed: toml::Table = system_toml.parse().unwrap();
    assert_eq!(parsed["compatible"].as_str(), Some(COMPATIBLE));
    assert_eq!(parsed["data-directory"].as_str(), Some("/data/flipslot"));

    // The drop-in lets the daemon write the data directory and the grubenv's directory
    // and open the slot devices, in place of the unit's own lists.
    let dropin = config_text("service-dropin", &vars);
    assert!(
        dropin.contains("\nReadWritePaths=\nReadWritePaths=/data/flipslot /boot/efi/EFI/BOOT\n"),
        "{dropin}"
    );
    assert!(
        dropin.contains(
            "\nDeviceAllow=\nDeviceAllow=/dev/disk/by-partlabel/rootfs-a rw\n\
         DeviceAllow=/dev/disk/by-partlabel/rootfs-b rw\n"
        ),
        "{dropin}"
    );
    let unit = read(&repo().join("systemd/flipslot.service"));
    assert!(unit.contains("\nReadWritePaths=") && unit.contains("\nDeviceAllow="));
    let tmpfiles = config_text("tmpfiles", &vars);
    let shipped = read(&repo().join("systemd/flipslot.conf"));
    let line = |t: &str| t.lines().find(|l| l.starts_with("d ")).unwrap().to_string();
    assert_eq!(
        line(&tmpfiles),
        line(&shipped).replace("/var/lib/flipslot", "/data/flipslot")
    );

    // Variables that cannot make a valid config are refused, naming the variable.
    for (name, value) in [
        ("FLIPSLOT_COMPATIBLE", ""),
        ("FLIPSLOT_BOOTLOADER", "lilo"),
        ("FLIPSLOT_SLOTS", "rootfs:A:/dev/sda2"),
        ("FLIPSLOT_SLOTS", "rootfs:A /dev/sda2 rootfs:B:/dev/sda3"),
        ("FLIPSLOT_DATA_DIRECTORY", "data"),
    ] {
        let mut bad = vars.clone();
        bad.insert(name.to_string(), value.to_string());
        let o = config_script("system-toml", &bad);
        assert!(!o.status.success(), "{name}={value:?} accepted");
        assert!(String::from_utf8_lossy(&o.stderr).contains(name), "{name}");
    }
    // U-Boot, with the daemon's channel and extra TOML: still one valid document.
    let mut uboot = vars.clone();
    for (k, v) in [
        ("FLIPSLOT_BOOTLOADER", "uboot"),
        ("FLIPSLOT_FW_ENV_CONFIG", "/etc/fw_env.config"),
        ("FLIPSLOT_BOOT_ATTEMPTS", "5"),
        (
            "FLIPSLOT_CHANNEL_URL",
            "https://updates.example/\"stable\".json",
        ),
        (
            "FLIPSLOT_SYSTEM_TOML_EXTRA",
            "[health]\\ndeadline-seconds = 120",
        ),
    ] {
        uboot.insert(k.to_string(), v.to_string());
    }
    let text = config_text("system-toml", &uboot);
    let t: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(t["bootloader"].as_str(), Some("uboot"));
    assert_eq!(t["boot-attempts"].as_integer(), Some(5));
    assert!(!t.contains_key("grubenv"));
    assert_eq!(
        t["update"]["channel-url"].as_str(),
        Some("https://updates.example/\"stable\".json")
    );
    assert_eq!(t["health"]["deadline-seconds"].as_integer(), Some(120));

    // The real agent, on a root laid out as the image is: the generated system.toml, the
    // shipped grubenv on the ESP, the slot devices, and the command line the shipped
    // grub.cfg gives slot A.
    let agent = cargo_build::static_agent().unwrap();
    let tool = ImageTool::build().unwrap();
    let w = scratch("yocto-config-");
    let root = w.path().join("root");
    std::fs::create_dir_all(root.join("etc/flipslot")).unwrap();
    std::fs::write(root.join("etc/flipslot/system.toml"), &system_toml).unwrap();
    let keys = tool
        .keygen(&root.join("etc/flipslot/keys"), "release")
        .unwrap();
    std::fs::remove_file(&keys.secret).unwrap();
    std::fs::create_dir_all(root.join("boot/efi/EFI/BOOT")).unwrap();
    std::fs::copy(
        layer().join("recipes-bsp/grub/files/flipslot-grubenv"),
        root.join("boot/efi/EFI/BOOT/grubenv"),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("dev/disk/by-partlabel")).unwrap();
    for label in ["rootfs-a", "rootfs-b"] {
        std::fs::write(root.join("dev/disk/by-partlabel").join(label), b"").unwrap();
    }
    std::fs::create_dir_all(root.join("data/flipslot")).unwrap();
    std::fs::create_dir_all(root.join("proc")).unwrap();
    let cmdline = slot_a_cmdline();
    assert!(
        cmdline.starts_with("root=PARTLABEL=rootfs-a flipslot.slot=A "),
        "{cmdline}"
    );
    std::fs::write(root.join("proc/cmdline"), format!("{cmdline}\n")).unwrap();
    let status = cmd::run_text(Command::new(&agent).arg("--root").arg(&root).args([
        "status",
        "--json",
        "--no-daemon",
    ]))
    .unwrap();
    let status: Value = serde_json::from_str(status.trim()).unwrap();
    assert_eq!(status["compatible"], COMPATIBLE, "{status}");
    assert_eq!(status["bootloader"], "grub", "{status}");
    assert_eq!(status["booted"], "rootfs.0", "{status}");
    assert_eq!(status["primary"], "rootfs.0", "{status}");
    assert_eq!(status["config_notices"], serde_json::json!([]), "{status}");
    let slots = status["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2, "{status}");
    assert_eq!(slots[0]["bootname"], "A", "{status}");
    assert_eq!(slots[0]["state"], "booted", "{status}");
    assert_eq!(slots[0]["boot_status"], "good", "{status}");
    assert_eq!(slots[0]["device_exists"], true, "{status}");
    assert_eq!(slots[1]["bootname"], "B", "{status}");
    assert_eq!(slots[1]["boot_status"], "bad", "{status}");
}

// ---------------------------------------------------------------------------------------
// kas and the recipes against the workspace

#[test]
fn kas_file_is_valid_for_kas() {
    let Some(python) = venv_program("kas_file_is_valid_for_kas", "python") else {
        return;
    };
    let kas_file = repo().join("yocto-layer/kas/qemux86-64.yml");
    // kas's own schema (the kas package of the venv), and the file as JSON for the rest.
    let check = "import json, os, sys, yaml, jsonschema, kas\n\
                 schema = json.load(open(os.path.join(os.path.dirname(kas.__file__), 'schema-kas.json')))\n\
                 cfg = yaml.safe_load(open(sys.argv[1]))\n\
                 jsonschema.validate(cfg, schema)\n\
                 print(json.dumps(cfg))\n";
    let cfg: Value = serde_json::from_str(
        &cmd::run_text(Command::new(python).arg("-c").arg(check).arg(&kas_file)).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["machine"], "qemux86-64");
    for target in cfg["target"].as_array().unwrap() {
        let t = target.as_str().unwrap();
        let found = lintable_files().iter().any(|f| {
            let base = f.rsplit('/').next().unwrap();
            base == format!("{t}.bb") || base.starts_with(&format!("{t}_"))
        });
        assert!(found, "kas target {t} is no recipe of the layer");
    }
    let layers = cfg["repos"]["flipslot"]["layers"].as_object().unwrap();
    assert!(layers.contains_key(LAYER), "{layers:?}");
    assert_eq!(cfg["repos"]["poky"]["branch"], SERIES[0]);
    assert_eq!(cfg["repos"]["meta-lts-mixins"]["branch"], "scarthgap/rust");
    let local = cfg["local_conf_header"]["flipslot"].as_str().unwrap();
    assert!(
        local.contains("DISTRO_FEATURES:append = \" flipslot\""),
        "{local}"
    );
    assert!(local.contains("FLIPSLOT_COMPATIBLE = "), "{local}");
    let readme = layer_text("README.md");
    for var in cfg["env"].as_object().unwrap().keys() {
        assert!(
            readme.contains(var.as_str()),
            "README.md does not describe {var}"
        );
    }
}

#[test]
fn recipes_match_the_workspace() {
    let workspace = toml_file(&repo().join("Cargo.toml"));
    let package = &workspace["workspace"]["package"];
    let version = package["version"].as_str().unwrap();
    let repository = package["repository"].as_str().unwrap();
    for name in ["flipslot", "flipslot-image"] {
        let rel = format!("recipes-core/flipslot/{name}_{version}.bb");
        assert!(
            layer().join(&rel).is_file(),
            "no {rel}: the recipes carry the workspace version"
        );
    }

    let inc = layer_text("recipes-core/flipslot/flipslot.inc");
    assert_eq!(assignment(&inc, "HOMEPAGE"), repository);
    let host_path = repository.split_once("://").unwrap().1;
    assert_eq!(
        weak_defaults(&inc)["FLIPSLOT_GIT_URI"],
        format!("git://{host_path};protocol=https;branch=main")
    );
    assert_eq!(package["license"].as_str(), Some("Apache-2.0 OR MIT"));
    assert_eq!(assignment(&inc, "LICENSE"), "Apache-2.0 | MIT");
    // LIC_FILES_CHKSUM: every file's md5 as bitbake checks it.
    let lic = &inc[inc.find("LIC_FILES_CHKSUM").unwrap()..];
    let lic = &lic[..lic.find("\"\n").unwrap()];
    let entries: Vec<&str> = lic.split("file://").skip(1).collect();
    assert_eq!(entries.len(), 2, "{lic}");
    if host::can_run(
        "recipes_match_the_workspace",
        &[need("md5sum", "coreutils")],
    ) {
        for e in entries {
            let (file, md5) = e.split_once(";md5=").unwrap();
            let md5 = &md5[..32];
            let out = cmd::run_text(Command::new("md5sum").arg(repo().join(file))).unwrap();
            assert_eq!(out.split_whitespace().next(), Some(md5), "{file}");
        }
    }

    // What each recipe builds and installs is what the crate in CARGO_SRC_DIR makes.
    for (recipe, dir, bin) in [
        ("flipslot_0.1.0.bb", "agent", "flipslot"),
        ("flipslot-image_0.1.0.bb", "image-tools", "flipslot-image"),
    ] {
        let text = layer_text(&format!("recipes-core/flipslot/{recipe}"));
        assert_eq!(assignment(&text, "CARGO_SRC_DIR"), dir, "{recipe}");
        let manifest = toml_file(&repo().join(dir).join("Cargo.toml"));
        let bins: Vec<&str> = manifest["bin"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap())
            .collect();
        assert_eq!(bins, [bin], "{dir}/Cargo.toml");
        assert!(
            text.contains(&format!(
                "${{CARGO_TARGET_SUBDIR}}/{bin} ${{D}}${{bindir}}/{bin}"
            )),
            "{recipe} installs {bin}"
        );
    }
    let agent = layer_text("recipes-core/flipslot/flipslot_0.1.0.bb");
    for unit in ["flipslot-health.service", "flipslot.service"] {
        let text = read(&repo().join("systemd").join(unit));
        assert!(text.contains("ExecStart=/usr/bin/flipslot "), "{unit}");
        assert!(
            agent.contains(&format!("${{S}}/systemd/{unit}")),
            "{unit} not installed"
        );
        assert!(
            agent.contains(&format!("= \"{unit}\"")),
            "{unit} not in SYSTEMD_SERVICE"
        );
    }
}

#[test]
fn minimum_rust_is_what_the_locked_crates_need() {
    // The recipes skip themselves below FLIPSLOT_MIN_RUST: it must be the highest
    // rust-version of every package cargo builds the two programs from.
    let inc = layer_text("recipes-core/flipslot/flipslot.inc");
    let declared = assignment(&inc, "FLIPSLOT_MIN_RUST");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let meta: Value = serde_json::from_str(
        &cmd::run_text(
            Command::new(cargo)
                .args(["metadata", "--format-version", "1", "--locked"])
                .current_dir(repo()),
        )
        .unwrap(),
    )
    .unwrap();
    let parse = |v: &str| -> (u64, u64) {
        let mut it = v.split('.').map(|n| n.parse::<u64>().unwrap());
        (it.next().unwrap(), it.next().unwrap_or(0))
    };
    let (needed, by) = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let v = p["rust_version"].as_str()?;
            Some((parse(v), p["name"].as_str().unwrap().to_string()))
        })
        .max()
        .unwrap();
    assert_eq!(
        parse(&declared),
        needed,
        "FLIPSLOT_MIN_RUST is {declared}, but {by} needs {}.{}",
        needed.0,
        needed.1
    );
}
