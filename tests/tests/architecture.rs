//! The shape of the code, checked: no import circles between sibling modules of any
//! crate, the agent's rooms import only rooms below them, and no module holds more than
//! ~600 lines of non-test code. `ARCHITECTURE.md` describes the same rules; this test
//! keeps them true.
//!
//! Imports are read as text: every `crate::a::b`, `super::a` and `self::a` path in a
//! file's code (comments and doc links left out) counts as an arrow to the deepest module
//! it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The agent's rooms, from the top down. A room may import rooms on its own line only
/// when they are listed together and named in [`SAME_LAYER_ARROWS`].
const AGENT_LAYERS: &[&[&str]] = &[
    &["cli"],
    &["daemon"],
    &["ops"],
    &["provision"],
    &["install", "health"],
    &["slot", "bootloader"],
    &["config"],
    &["net"],
    &["host"],
];

/// Arrows allowed between rooms of one layer (none today).
const SAME_LAYER_ARROWS: &[(&str, &str)] = &[];

/// Largest number of non-test lines in one module file.
const MAX_MODULE_LINES: usize = 600;

type ModPath = Vec<String>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `src` directories of every crate in the workspace.
fn crate_sources() -> Vec<PathBuf> {
    let root = workspace();
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if !p.is_dir() || name.starts_with('.') || name == "target" || name == "fuzz" {
                continue;
            }
            if p.join("Cargo.toml").is_file() && p.join("src").is_dir() {
                out.push(p.join("src"));
            }
            stack.push(p);
        }
    }
    out.sort();
    assert!(out.len() >= 2, "found no crates under {}", root.display());
    out
}

/// Every `.rs` file under `src` with its module path (`lib.rs`/`main.rs` → `[]`).
fn modules(src: &Path) -> BTreeMap<ModPath, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read src dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "bin") {
                    continue;
                }
                stack.push(p);
                continue;
            }
            if p.extension().and_then(|x| x.to_str()) != Some("rs") {
                continue;
            }
            let rel = p.strip_prefix(src).expect("under src");
            let mut segs: Vec<String> = rel
                .iter()
                .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            let last = segs.last().cloned().unwrap_or_default();
            if last == "mod" || (segs.len() == 1 && (last == "lib" || last == "main")) {
                segs.pop();
            }
            if segs.last().is_some_and(|s| s == "tests") {
                continue; // a sibling test file
            }
            out.entry(segs).or_insert(p);
        }
    }
    out
}

/// The non-test part of a file: everything before its first `#[cfg(test)]`.
fn non_test(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

/// `text` without its comment lines (`//`, `///`, `//!`).
fn code_only(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Module paths named in `text`, written from the module `here`.
fn references(text: &str, here: &ModPath) -> Vec<ModPath> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    for (start, kw) in ["crate::", "super::", "self::"]
        .iter()
        .flat_map(|kw| text.match_indices(kw).map(move |(i, _)| (i, *kw)))
    {
        if start > 0 {
            let prev = bytes[start - 1];
            if prev.is_ascii_alphanumeric() || prev == b'_' || prev == b':' {
                continue;
            }
        }
        let mut base: ModPath = match kw {
            "crate::" => Vec::new(),
            "super::" => {
                let mut b = here.clone();
                b.pop();
                b
            }
            _ => here.clone(),
        };
        let rest = &text[start + kw.len()..];
        let mut rest = rest;
        loop {
            if let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
                continue;
            }
            break;
        }
        for seg in rest.split("::") {
            let ident: String = seg
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if ident.is_empty() {
                break;
            }
            let done = ident.len() != seg.len();
            base.push(ident);
            if done {
                break;
            }
        }
        out.push(base);
    }
    out
}

/// Arrows between modules of one crate: (from, to), both existing module paths.
fn arrows(mods: &BTreeMap<ModPath, PathBuf>) -> BTreeSet<(ModPath, ModPath)> {
    let mut out = BTreeSet::new();
    for (here, file) in mods {
        let text = std::fs::read_to_string(file).expect("read module");
        for mut r in references(&code_only(non_test(&text)), here) {
            while !r.is_empty() && !mods.contains_key(&r) {
                r.pop();
            }
            if &r != here {
                out.insert((here.clone(), r));
            }
        }
    }
    out
}

/// Arrows between sibling modules: for A → B, the children of their common ancestor
/// that hold A and B. An arrow from a module to its ancestor or descendant is not one.
fn sibling_arrows(arrows: &BTreeSet<(ModPath, ModPath)>) -> BTreeSet<(ModPath, ModPath)> {
    let mut out = BTreeSet::new();
    for (a, b) in arrows {
        let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        if common == a.len() || common == b.len() {
            continue;
        }
        out.insert((a[..=common].to_vec(), b[..=common].to_vec()));
    }
    out
}

fn find_cycle(edges: &BTreeSet<(ModPath, ModPath)>) -> Option<Vec<ModPath>> {
    let mut graph: BTreeMap<&ModPath, Vec<&ModPath>> = BTreeMap::new();
    for (a, b) in edges {
        graph.entry(a).or_default().push(b);
    }
    // 0 unvisited, 1 on the stack, 2 done
    let mut state: BTreeMap<&ModPath, u8> = BTreeMap::new();
    fn visit<'a>(
        n: &'a ModPath,
        graph: &BTreeMap<&'a ModPath, Vec<&'a ModPath>>,
        state: &mut BTreeMap<&'a ModPath, u8>,
        stack: &mut Vec<&'a ModPath>,
    ) -> Option<Vec<ModPath>> {
        state.insert(n, 1);
        stack.push(n);
        for &m in graph.get(n).map(Vec::as_slice).unwrap_or(&[]) {
            match state.get(m).copied().unwrap_or(0) {
                1 => {
                    let i = stack.iter().position(|x| *x == m).unwrap_or(0);
                    let mut c: Vec<ModPath> = stack[i..].iter().map(|x| (*x).clone()).collect();
                    c.push(m.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n, 2);
        None
    }
    let nodes: Vec<&ModPath> = graph.keys().copied().collect();
    for n in nodes {
        if state.get(n).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, &graph, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn show(p: &ModPath) -> String {
    if p.is_empty() {
        "crate".into()
    } else {
        p.join("::")
    }
}

#[test]
fn no_circles_between_sibling_modules() {
    let mut problems = Vec::new();
    for src in crate_sources() {
        let mods = modules(&src);
        let siblings = sibling_arrows(&arrows(&mods));
        if let Some(cycle) = find_cycle(&siblings) {
            let names: Vec<String> = cycle.iter().map(show).collect();
            problems.push(format!("{}: {}", src.display(), names.join(" -> ")));
        }
    }
    assert!(
        problems.is_empty(),
        "import circles:\n{}",
        problems.join("\n")
    );
}

#[test]
fn agent_rooms_import_only_rooms_below() {
    let src = workspace().join("agent/src");
    let mods = modules(&src);
    let layer_of = |room: &str| AGENT_LAYERS.iter().position(|l| l.contains(&room));
    // Every room of the agent is placed in a layer.
    for m in mods.keys() {
        if let Some(room) = m.first() {
            assert!(
                layer_of(room).is_some(),
                "agent module {} is in no layer: add its room to AGENT_LAYERS",
                show(m)
            );
        }
    }
    let mut wrong = Vec::new();
    for (a, b) in arrows(&mods) {
        let (Some(ra), Some(rb)) = (a.first(), b.first()) else {
            continue;
        };
        if ra == rb {
            continue;
        }
        let (la, lb) = (layer_of(ra), layer_of(rb));
        let ok = match (la, lb) {
            (Some(x), Some(y)) if x < y => true,
            (Some(x), Some(y)) if x == y => SAME_LAYER_ARROWS.contains(&(ra.as_str(), rb.as_str())),
            _ => false,
        };
        if !ok {
            wrong.push(format!("{} -> {}", show(&a), show(&b)));
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows that run up or sideways between the agent's rooms:\n{}",
        wrong.join("\n")
    );
}

/// Agent modules that may use the terminal and JSON-lines output helpers
/// (`flipslot-cli-support`): the command line, the daemon and the rendering of operations.
const OUTPUT_USERS: &[&str] = &["cli", "daemon", "ops::render"];

#[test]
fn only_the_outer_rooms_use_the_output_helpers() {
    let src = workspace().join("agent/src");
    let mut wrong = Vec::new();
    for (m, file) in modules(&src) {
        let name = show(&m);
        if m.is_empty()
            || OUTPUT_USERS
                .iter()
                .any(|u| name == *u || name.starts_with(&format!("{u}::")) || m[0] == *u)
        {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read module");
        if code_only(non_test(&text)).contains("flipslot_cli_support") {
            wrong.push(name);
        }
    }
    assert!(
        wrong.is_empty(),
        "modules below the CLI and the daemon that use flipslot-cli-support:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_module_is_over_the_size_limit() {
    let mut big = Vec::new();
    for src in crate_sources() {
        for file in modules(&src).values() {
            let text = std::fs::read_to_string(file).expect("read module");
            let lines = non_test(&text).lines().count();
            if lines > MAX_MODULE_LINES {
                big.push(format!("{} ({lines} lines)", file.display()));
            }
        }
    }
    assert!(
        big.is_empty(),
        "modules over {MAX_MODULE_LINES} lines of non-test code (split them):\n{}",
        big.join("\n")
    );
}

#[test]
fn the_checks_see_a_circle_and_an_upward_arrow() {
    // The reader finds arrows through crate::, super:: and self:: paths.
    let here: ModPath = vec!["a".into(), "b".into()];
    let refs = references(
        "use crate::x::Y;\nuse super::c::{d, e};\n[`self::f`]\nmy_crate::z",
        &here,
    );
    assert_eq!(
        refs,
        vec![
            vec!["x".to_string(), "Y".to_string()],
            vec!["a".to_string(), "c".to_string()],
            vec!["a".to_string(), "b".to_string(), "f".to_string()],
        ]
    );
    let p = |s: &str| -> ModPath { s.split('/').map(String::from).collect() };
    let edges: BTreeSet<_> = [(p("a/x"), p("b/y")), (p("b/z"), p("a"))]
        .into_iter()
        .collect();
    let sib = sibling_arrows(&edges);
    assert!(find_cycle(&sib).is_some(), "a ↔ b is a circle");
    let edges: BTreeSet<_> = [(p("a/x"), p("a")), (p("a"), p("a/x"))]
        .into_iter()
        .collect();
    assert!(
        sibling_arrows(&edges).is_empty(),
        "parent and child are not siblings"
    );
}
