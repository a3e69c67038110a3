//! The man pages and shell completions of flipslot's programs, generated from their clap
//! definitions, so the packaged documentation always matches the command lines.
//!
//! [`programs`] lists what is documented: `flipslot`, its `rauc` drop-in (pages filed as
//! `flipslot-rauc`, because `rauc(1)` belongs to RAUC), and `flipslot-image`. [`write_all`]
//! writes, under an output directory, one tree per Debian package:
//!
//! ```text
//! OUT/flipslot/man/flipslot.1 flipslot-install.1 … flipslot-rauc.1 flipslot-rauc-install.1 …
//! OUT/flipslot/completions/bash/flipslot  zsh/_flipslot  fish/flipslot.fish
//! OUT/flipslot-image/man/flipslot-image.1 flipslot-image-build.1 …
//! OUT/flipslot-image/completions/bash/flipslot-image  zsh/_flipslot-image  fish/flipslot-image.fish
//! ```
//!
//! Man pages end in `.1.gz` with [`Options::gzip`] (what Debian ships; the gzip stream has
//! no time stamp or name, so a rebuild is byte-identical). Each package's tree is removed
//! before it is written, so a subcommand that no longer exists leaves no stale page.

mod completions;
mod man;

pub use completions::{scripts, Script};
pub use man::{gzip, pages, Footer, Page};

use anyhow::Context as _;
use clap::Command;
use flipslot::cli::Personality;
use std::path::{Path, PathBuf};

/// The section the pages are filed in: user commands.
pub const SECTION: &str = "1";

/// One documented command line.
#[derive(Debug)]
pub struct Program {
    /// The Debian package that ships its files (and the output subdirectory).
    pub package: &'static str,
    /// The name its pages are filed under (`flipslot-rauc` for the `rauc` drop-in).
    pub page_name: &'static str,
    /// Its command line.
    pub command: Command,
    /// Whether shell completions are written. The `rauc` drop-in has none: it is opt-in,
    /// and when RAUC itself is installed the name is RAUC's.
    pub completions: bool,
}

/// Every documented command line, from the programs' own clap definitions.
pub fn programs() -> Vec<Program> {
    vec![
        Program {
            package: "flipslot",
            page_name: "flipslot",
            command: Personality::Flipslot.command(),
            completions: true,
        },
        Program {
            package: "flipslot",
            page_name: "flipslot-rauc",
            command: Personality::Rauc.command(),
            completions: false,
        },
        Program {
            package: "flipslot-image",
            page_name: "flipslot-image",
            command: flipslot_image::cli::command(),
            completions: true,
        },
    ]
}

/// How [`write_all`] writes.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Write man pages gzipped (`NAME.1.gz`).
    pub gzip: bool,
    /// The date in every page's footer (`2026-12-07`, the release's).
    pub date: String,
}

/// What [`write_all`] wrote.
#[derive(Debug, Default)]
pub struct Written {
    /// The man pages.
    pub pages: Vec<PathBuf>,
    /// The completion scripts.
    pub scripts: Vec<PathBuf>,
}

/// Writes the man pages and completions of `programs` under `out` (see the module doc),
/// replacing each package's tree.
pub fn write_all(out: &Path, programs: Vec<Program>, opts: &Options) -> anyhow::Result<Written> {
    let mut packages: Vec<&str> = programs.iter().map(|p| p.package).collect();
    packages.dedup();
    for package in packages {
        let dir = out.join(package);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", dir.display())),
        }
    }
    let mut written = Written::default();
    for program in programs {
        let root = out.join(program.package);
        if program.completions {
            for script in scripts(&program.command, program.page_name) {
                let path = root.join("completions").join(&script.path);
                write(&path, &script.text)?;
                written.scripts.push(path);
            }
        }
        let footer = Footer {
            date: opts.date.clone(),
            source: format!(
                "{} {}",
                program.package,
                program.command.get_version().unwrap_or_default()
            ),
        };
        for page in pages(program.command, program.page_name, &footer)
            .with_context(|| format!("cannot render the man pages of {}", program.page_name))?
        {
            let (name, bytes) = if opts.gzip {
                (format!("{}.gz", page.name), gzip(&page.roff)?)
            } else {
                (page.name, page.roff)
            };
            let path = root.join("man").join(name);
            write(&path, &bytes)?;
            written.pages.push(path);
        }
    }
    Ok(written)
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            gzip: true,
            date: "2026-12-07".into(),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_definitions_are_consistent() {
        for p in programs() {
            p.command.debug_assert();
        }
    }

    #[test]
    fn one_tree_per_package_and_stale_pages_go() {
        let out = tempfile::tempdir().unwrap();
        let stale = out.path().join("flipslot/man/flipslot-gone.1.gz");
        write(&stale, b"old").unwrap();
        let w = write_all(out.path(), programs(), &opts()).unwrap();
        assert!(!stale.exists());
        assert_eq!(names(out.path()), ["flipslot", "flipslot-image"]);
        let agent = names(&out.path().join("flipslot/man"));
        for page in [
            "flipslot.1.gz",
            "flipslot-install.1.gz",
            "flipslot-status.1.gz",
            "flipslot-rauc.1.gz",
            "flipslot-rauc-install.1.gz",
        ] {
            assert!(agent.iter().any(|n| n == page), "{page} missing: {agent:?}");
        }
        assert!(agent.iter().all(|n| !n.starts_with("flipslot-image")));
        let image = names(&out.path().join("flipslot-image/man"));
        assert!(image.iter().all(|n| n.starts_with("flipslot-image")));
        assert!(image.iter().any(|n| n == "flipslot-image-build.1.gz"));
        assert_eq!(
            names(&out.path().join("flipslot/completions")),
            ["bash", "fish", "zsh"]
        );
        assert_eq!(
            names(&out.path().join("flipslot/completions/zsh")),
            ["_flipslot"]
        );
        assert_eq!(w.scripts.len(), 6);
        assert_eq!(w.pages.len(), agent.len() + image.len());
    }

    #[test]
    fn a_rebuild_is_byte_identical() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let wa = write_all(a.path(), programs(), &opts()).unwrap();
        write_all(b.path(), programs(), &opts()).unwrap();
        for p in wa.pages.iter().chain(&wa.scripts) {
            let rel = p.strip_prefix(a.path()).unwrap();
            assert_eq!(
                std::fs::read(p).unwrap(),
                std::fs::read(b.path().join(rel)).unwrap(),
                "{}",
                rel.display()
            );
        }
    }
}
