//! The layer rules of [`Tree`] on a temporary directory.

use super::*;

fn attrs(uid: u32, mode: u32) -> FileAttrs {
    FileAttrs {
        uid,
        gid: uid,
        mode,
        xattrs: vec![],
    }
}

fn file(t: &mut Tree, path: &str, data: &str) {
    t.add(
        path.as_bytes(),
        MemberKind::File,
        attrs(0, 0o644),
        &mut data.as_bytes(),
    )
    .unwrap();
}

fn dir(t: &mut Tree, path: &str) {
    t.add(
        path.as_bytes(),
        MemberKind::Dir,
        attrs(0, 0o755),
        &mut io::empty(),
    )
    .unwrap();
}

fn add(t: &mut Tree, path: &str, kind: MemberKind) -> Result<(), OciError> {
    t.add(path.as_bytes(), kind, attrs(0, 0o644), &mut io::empty())
}

fn paths(t: &Tree) -> Vec<String> {
    t.nodes
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

/// Every path in the table exists on disk, and nothing else does.
fn consistent(t: &Tree) {
    let mut on_disk = Vec::new();
    let mut stack = vec![t.root.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p
                .strip_prefix(&t.root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            }
            on_disk.push(rel);
        }
    }
    on_disk.sort();
    let mut table = paths(t);
    table.retain(|p| !p.is_empty());
    assert_eq!(table, on_disk);
}

#[test]
fn paths_are_cleaned_or_refused() {
    assert_eq!(clean_path(b"./usr//bin/./x/").unwrap(), b"usr/bin/x");
    assert_eq!(clean_path(b"./").unwrap(), b"");
    assert!(clean_path(b"../etc/passwd").is_err());
    assert!(clean_path(b"usr/../../x").is_err());
    assert!(clean_path(b"/etc/passwd").is_err());
    assert_eq!(split_last(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
    assert_eq!(split_last(b"c"), (&b""[..], &b"c"[..]));
    assert_eq!(
        ancestors(b"a/b/c").collect::<Vec<_>>(),
        vec![&b"a"[..], &b"a/b"[..]]
    );
}

#[test]
fn whiteouts_apply_to_lower_layers_only() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = Tree::new(tmp.path());
    t.begin_layer();
    file(&mut t, "etc/gone", "x");
    file(&mut t, "etc/kept", "x");
    dir(&mut t, "var/lib");
    file(&mut t, "var/lib/a/b", "x");
    t.begin_layer();
    file(&mut t, "etc/new", "x");
    add(&mut t, "etc/.wh.gone", MemberKind::File).unwrap();
    add(&mut t, "etc/.wh.new", MemberKind::File).unwrap(); // same layer: no effect
    add(&mut t, "var/.wh.lib", MemberKind::File).unwrap();
    add(&mut t, "nothere/.wh.x", MemberKind::File).unwrap();
    add(&mut t, "etc/.wh..wh.plnk", MemberKind::File).unwrap();
    assert_eq!(paths(&t), ["", "etc", "etc/kept", "etc/new", "var"]);
    consistent(&t);
}

#[test]
fn opaque_directories_hide_lower_contents() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = Tree::new(tmp.path());
    t.begin_layer();
    file(&mut t, "opt/old", "x");
    file(&mut t, "opt/sub/old", "x");
    file(&mut t, "opt/sub-x", "x");
    file(&mut t, "opt-sibling", "x");
    t.begin_layer();
    file(&mut t, "opt/sub/new", "x"); // before the marker: kept
    add(&mut t, "opt/.wh..wh..opq", MemberKind::File).unwrap();
    file(&mut t, "opt/after", "x"); // after it: kept
    assert_eq!(
        paths(&t),
        [
            "",
            "opt",
            "opt-sibling",
            "opt/after",
            "opt/sub",
            "opt/sub/new"
        ]
    );
    consistent(&t);
}

#[test]
fn members_replace_and_directories_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = Tree::new(tmp.path());
    t.begin_layer();
    file(&mut t, "a/x", "1");
    file(&mut t, "f", "1");
    t.begin_layer();
    t.add(b"a", MemberKind::Dir, attrs(7, 0o700), &mut io::empty())
        .unwrap();
    add(&mut t, "f", MemberKind::Dir).unwrap();
    add(&mut t, "a/x", MemberKind::Symlink(b"/etc/passwd".to_vec())).unwrap();
    assert_eq!(paths(&t), ["", "a", "a/x", "f"]);
    assert_eq!(t.nodes[&b"a"[..]].attrs.uid, 7);
    assert!(fs::symlink_metadata(tmp.path().join("f")).unwrap().is_dir());
    assert_eq!(
        fs::read_link(tmp.path().join("a/x")).unwrap(),
        Path::new("/etc/passwd")
    );
    consistent(&t);
}

#[test]
fn links_are_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let mut t = Tree::new(&root);
    t.begin_layer();
    let escape = outside.path().to_str().unwrap().as_bytes().to_vec();
    add(&mut t, "evil", MemberKind::Symlink(escape)).unwrap();
    add(&mut t, "up", MemberKind::Symlink(b"../../..".to_vec())).unwrap();
    file(&mut t, "etc/passwd", "root");
    for (path, kind, why) in [
        ("evil/pwned", MemberKind::File, "symlink /evil"),
        ("up/x/y", MemberKind::Dir, "symlink /up"),
        ("evil/.wh.x", MemberKind::File, "symlink /evil"),
        ("../x", MemberKind::File, "'..'"),
        ("/etc/x", MemberKind::File, "absolute"),
        ("etc/passwd/x", MemberKind::File, "not a directory"),
        ("l", MemberKind::HardLink(b"../x".to_vec()), "'..'"),
        (
            "l",
            MemberKind::HardLink(b"evil/x".to_vec()),
            "not another file in the image",
        ),
        (
            "l",
            MemberKind::HardLink(b"etc".to_vec()),
            "not another file in the image",
        ),
        (
            "l",
            MemberKind::HardLink(b"nope".to_vec()),
            "not another file in the image",
        ),
        (
            "etc/passwd",
            MemberKind::HardLink(b"./etc/passwd".to_vec()),
            "not another file in the image",
        ),
        ("s", MemberKind::Symlink(Vec::new()), "empty"),
        ("", MemberKind::File, "root must be a directory"),
    ] {
        let err = add(&mut t, path, kind).unwrap_err().to_string();
        assert!(err.contains(why), "{path}: {err}");
        assert!(err.contains(path), "{path}: {err}");
    }
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    // A refused hard link changed nothing.
    assert_eq!(fs::read_to_string(root.join("etc/passwd")).unwrap(), "root");
    consistent(&t);
}

#[test]
fn hard_links_share_the_inode_and_its_attributes() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let mut t = Tree::new(tmp.path());
    t.begin_layer();
    t.add(
        b"bin/su",
        MemberKind::File,
        attrs(5, 0o4755),
        &mut &b"su"[..],
    )
    .unwrap();
    t.begin_layer();
    t.add(
        b"bin/su2",
        MemberKind::HardLink(b"./bin/su".to_vec()),
        attrs(0, 0o644),
        &mut io::empty(),
    )
    .unwrap();
    let m = fs::metadata(tmp.path().join("bin/su2")).unwrap();
    assert_eq!(m.nlink(), 2);
    assert_eq!(fs::read(tmp.path().join("bin/su2")).unwrap(), b"su");
    let a = t.into_attrs();
    assert_eq!(a.get(b"bin/su2"), a.get(b"bin/su"));
    assert_eq!(a.get(b"bin/su2").unwrap().mode, 0o4755);
}

#[test]
fn special_files_are_skipped_and_replace_what_was_there() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = Tree::new(tmp.path());
    t.begin_layer();
    file(&mut t, "dev/null", "x");
    add(&mut t, "dev/null", MemberKind::Special("character device")).unwrap();
    add(&mut t, "run/fifo", MemberKind::Special("FIFO")).unwrap();
    assert_eq!(paths(&t), ["", "dev", "run"]);
    assert_eq!(t.skipped_count, 2);
    assert_eq!(
        t.skipped[0],
        Skipped {
            path: "/dev/null".into(),
            kind: "character device"
        }
    );
    consistent(&t);
}

#[test]
fn the_root_takes_its_attributes_from_the_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = Tree::new(tmp.path());
    assert_eq!(t.nodes[&b""[..]].attrs.mode, 0o755);
    t.begin_layer();
    t.add(b"./", MemberKind::Dir, attrs(3, 0o750), &mut io::empty())
        .unwrap();
    let a = t.into_attrs();
    assert_eq!(a.get(b"").unwrap().mode, 0o750);
    assert_eq!(a.get(b"").unwrap().uid, 3);
}
