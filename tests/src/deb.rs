//! Reading Debian packages for the packaging test (`tests/tests/debian_packages.rs`): the
//! text `dpkg-deb`, `lintian`, systemd units, clap's `--help` and a Debian changelog print,
//! parsed into plain data by pure functions; and [`Deb`], one `.deb` read and unpacked with
//! `dpkg-deb`.

use crate::cmd;
use anyhow::{bail, Context as _};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fields of a control paragraph (`dpkg-deb -f`), continuation lines joined with `\n`.
pub fn control_fields(text: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(v) = last.as_ref().and_then(|k| out.get_mut(k)) {
                v.push('\n');
                v.push_str(line.trim_start());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            out.insert(k.to_string(), v.trim().to_string());
            last = Some(k.to_string());
        }
    }
    out
}

/// One entry of a package's data archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path without the leading `.`: `/usr/bin/flipslot`, `/usr/share/` for a directory.
    pub path: String,
    /// The mode string `tar` shows (`-rwxr-xr-x`).
    pub mode: String,
    /// The link target of a symbolic link.
    pub link: Option<String>,
}

/// The entries of `dpkg-deb -c` (tar's verbose listing).
pub fn listing(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // mode owner size date time path [-> target]
            if fields.len() < 6 {
                return None;
            }
            let rest = fields[5..].join(" ");
            let (path, link) = match rest.split_once(" -> ") {
                Some((p, t)) => (p.to_string(), Some(t.to_string())),
                None => (rest, None),
            };
            Some(Entry {
                path: path.strip_prefix('.').unwrap_or(&path).to_string(),
                mode: fields[0].to_string(),
                link,
            })
        })
        .collect()
}

/// The subcommands clap's `--help` lists under `Commands:` (without `help`).
pub fn help_subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // A subcommand line is indented by two; a wrapped description by more.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// The absolute paths a systemd unit names that a package must ship: the program of every
/// `Exec*=` line and every `Documentation=file:` target.
pub fn unit_paths(unit: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if line.starts_with(['#', ';']) {
            continue;
        }
        if key.starts_with("Exec") {
            // Exec prefixes (-, @, :, +, !) come before the program.
            if let Some(program) = value.split_whitespace().next() {
                let program = program.trim_start_matches(['-', '@', ':', '+', '!']);
                if program.starts_with('/') {
                    out.push(program.to_string());
                }
            }
        } else if key == "Documentation" {
            out.extend(
                value
                    .split_whitespace()
                    .filter_map(|u| u.strip_prefix("file:"))
                    .map(str::to_string),
            );
        }
    }
    out
}

/// The version of a Debian changelog's newest entry (`flipslot (0.1.0-1) unstable; …`).
pub fn changelog_version(changelog: &str) -> Option<&str> {
    let first = changelog.lines().next()?;
    let open = first.find('(')?;
    let close = first[open..].find(')')? + open;
    Some(&first[open + 1..close])
}

/// Lintian's findings of severity error or warning (`E: ` / `W: ` lines).
pub fn lintian_complaints(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect()
}

/// The tags of a lintian overrides file whose override is not explained by a comment line
/// directly above it (or above the overrides it is grouped with).
pub fn unexplained_overrides(text: &str) -> Vec<&str> {
    let mut explained = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            explained = false;
        } else if line.starts_with('#') {
            explained = true;
        } else if !explained {
            out.push(line);
        }
    }
    out
}

/// A `.deb` read with `dpkg-deb`: control fields, the file list, the control area
/// (maintainer scripts, templates) and the data tree, unpacked into a directory.
#[derive(Debug)]
pub struct Deb {
    /// The package file.
    pub file: PathBuf,
    /// `dpkg-deb -f`.
    pub fields: BTreeMap<String, String>,
    /// `dpkg-deb -c`.
    pub entries: Vec<Entry>,
    /// `dpkg-deb -e`: control, maintainer scripts, templates.
    pub control_dir: PathBuf,
    /// `dpkg-deb -x`: the files as installed.
    pub root: PathBuf,
}

impl Deb {
    /// Reads `file` and unpacks it into `dir` (replaced): `dir/DEBIAN` and `dir/root`.
    pub fn open(file: &Path, dir: &Path) -> anyhow::Result<Deb> {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", dir.display())),
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
        let control_dir = dir.join("DEBIAN");
        let root = dir.join("root");
        let fields = control_fields(&cmd::run_text(
            Command::new("dpkg-deb").arg("-f").arg(file),
        )?);
        let entries = listing(&cmd::run_text(
            Command::new("dpkg-deb").arg("-c").arg(file),
        )?);
        cmd::run(
            Command::new("dpkg-deb")
                .arg("-e")
                .arg(file)
                .arg(&control_dir),
        )?;
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(file).arg(&root))?;
        if entries.is_empty() {
            bail!("{} lists no files", file.display());
        }
        Ok(Deb {
            file: file.to_path_buf(),
            fields,
            entries,
            control_dir,
            root,
        })
    }

    /// The field `name`, or an error naming the package.
    pub fn field(&self, name: &str) -> anyhow::Result<&str> {
        self.fields
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("{} has no {name} field", self.file.display()))
    }

    /// The entry at `path` (`/usr/bin/flipslot`).
    pub fn entry(&self, path: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.path == path)
    }

    /// The regular files and links under `dir` (`/usr/share/man/man1/`), by file name.
    pub fn names_in(&self, dir: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .entries
            .iter()
            .filter_map(|e| e.path.strip_prefix(dir))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    /// The unpacked file at the package path `path`.
    pub fn file_at(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn control_fields_join_the_description() {
        let f = control_fields(
            "Package: flipslot\nVersion: 0.1.0-1\nDescription: an agent\n flipslot installs\n .\n more\n",
        );
        assert_eq!(f["Package"], "flipslot");
        assert_eq!(f["Version"], "0.1.0-1");
        assert_eq!(f["Description"], "an agent\nflipslot installs\n.\nmore");
    }

    #[test]
    fn listing_reads_files_dirs_and_links() {
        let text = "\
drwxr-xr-x 0/0               0 2026-12-07 22:35 ./usr/bin/
-rwxr-xr-x 0/0         6000000 2026-12-07 22:35 ./usr/bin/flipslot
lrwxrwxrwx 0/0               0 2026-12-07 22:35 ./usr/bin/rauc -> flipslot
";
        let l = listing(text);
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].path, "/usr/bin/");
        assert_eq!(l[1].path, "/usr/bin/flipslot");
        assert_eq!(l[1].mode, "-rwxr-xr-x");
        assert_eq!(l[2].link.as_deref(), Some("flipslot"));
    }

    #[test]
    fn help_subcommands_skip_wrapped_lines_and_help() {
        let help = "\
flipslot: installs

Usage: flipslot [OPTIONS] <COMMAND>

Commands:
  status       Show the booted and primary slot
  install      Install a bundle into the inactive slot and make the bootloader try it
               once
  mark-good    Commit a slot
  help         Print this message or the help of the given subcommand(s)

Options:
      --config <PATH>
";
        assert_eq!(help_subcommands(help), ["status", "install", "mark-good"]);
    }

    #[test]
    fn unit_paths_name_programs_and_documentation() {
        let unit = "\
[Unit]
Documentation=file:/usr/share/doc/flipslot/daemon.md man:flipslot(1)
# ExecStart=/not/this
[Service]
ExecStart=-/usr/bin/flipslot daemon
ExecStopPost=true
";
        assert_eq!(
            unit_paths(unit),
            ["/usr/share/doc/flipslot/daemon.md", "/usr/bin/flipslot"]
        );
    }

    #[test]
    fn changelog_version_is_the_newest_entry() {
        let text = "flipslot (0.1.0-1) unstable; urgency=medium\n\n  * First.\n";
        assert_eq!(changelog_version(text), Some("0.1.0-1"));
        assert_eq!(changelog_version(""), None);
    }

    #[test]
    fn lintian_errors_and_warnings_but_not_infos() {
        let out =
            "E: flipslot: a-thing\nI: flipslot: a-hint\nW: flipslot-image: b-thing\nN: note\n";
        assert_eq!(
            lintian_complaints(out),
            ["E: flipslot: a-thing", "W: flipslot-image: b-thing"]
        );
    }

    #[test]
    fn an_override_needs_a_comment_above_its_group() {
        let text = "\
# Why these two.
flipslot: tag-a
flipslot: tag-b

flipslot: tag-c
";
        assert_eq!(unexplained_overrides(text), ["flipslot: tag-c"]);
    }
}
