//! A dynamically linked host program carried into the initramfs with the shared libraries
//! it needs: `mke2fs`, which the agent runs to make the data partition's ext4.
//!
//! The program is found as the agent would find it (on `PATH`, then `/usr/sbin`, `/sbin`);
//! its libraries and its loader come from `ldd PROGRAM` (the `=> /path` lines and the
//! loader's own line). Each file goes into the initramfs at the path it has on the host,
//! which is where the loader looks for it there too (the program's `PT_INTERP` and the
//! loader's default directories).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flipslot_os::process::{find_program, Cmd, CommandError};

use super::elf::{exec_kind, ExecKind};
use super::{io_err, NetbootError};

/// How long `ldd` may take.
const LDD_TIMEOUT: Duration = Duration::from_secs(60);

/// A host program and the files it needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProgram {
    /// The program's absolute path, on the host and in the initramfs.
    pub path: PathBuf,
    /// Its shared libraries and its loader, in `ldd`'s order (none for a static program).
    pub libraries: Vec<PathBuf>,
}

/// Finds `program` (a bare name or a path) and the libraries it needs.
pub fn host_program(program: &str) -> Result<HostProgram, NetbootError> {
    let found = find_program(OsStr::new(program)).ok_or_else(|| CommandError::NotFound {
        program: program.to_string(),
        package: flipslot_os::process::debian_package(program),
    })?;
    let path = if found.is_absolute() {
        found
    } else {
        std::fs::canonicalize(&found).map_err(io_err("find", &found))?
    };
    let bytes = std::fs::read(&path).map_err(io_err("read", &path))?;
    let libraries = match exec_kind(&bytes) {
        ExecKind::Static => Vec::new(),
        ExecKind::Dynamic { .. } => {
            let text = Cmd::new("ldd")
                .arg(&path)
                .timeout(LDD_TIMEOUT)
                .run_stdout()?;
            parse_ldd(&text).map_err(|reason| NetbootError::Input {
                what: path.display().to_string(),
                reason,
            })?
        }
        ExecKind::NotElf | ExecKind::Malformed => {
            return Err(NetbootError::Input {
                what: path.display().to_string(),
                reason: "is not an ELF executable".into(),
            })
        }
    };
    Ok(HostProgram { path, libraries })
}

/// The library and loader paths of `ldd` output, in order, without duplicates. A library
/// `ldd` could not find is an error naming it; the kernel's vDSO has no file and is skipped.
pub fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut out: Vec<PathBuf> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!("needs {}, which ldd cannot find", name.trim()));
                }
                first_word(rest)
            }
            // The loader's own line: `/lib64/ld-linux-x86-64.so.2 (0x...)`.
            None => first_word(line),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            let path = PathBuf::from(path);
            if !out.contains(&path) {
                out.push(path);
            }
        }
    }
    Ok(out)
}

fn first_word(s: &str) -> Option<&str> {
    s.split_whitespace().next()
}

/// The initramfs path of a host file: its absolute path without the leading `/`.
pub fn archive_path(path: &Path) -> Result<String, NetbootError> {
    path.to_str()
        .filter(|p| p.starts_with('/'))
        .map(|p| p.trim_start_matches('/').to_string())
        .ok_or_else(|| NetbootError::Input {
            what: path.display().to_string(),
            reason: "is not an absolute UTF-8 path".into(),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    #[test]
    fn ldd_of_mke2fs() {
        // Recorded on Debian 12: `ldd /usr/sbin/mke2fs`.
        let text = "\tlinux-vdso.so.1 (0x00007fe925415000)\n\
            \tlibext2fs.so.2 => /lib/x86_64-linux-gnu/libext2fs.so.2 (0x00007fe925375000)\n\
            \tlibcom_err.so.2 => /lib/x86_64-linux-gnu/libcom_err.so.2 (0x00007fe92536f000)\n\
            \tlibblkid.so.1 => /lib/x86_64-linux-gnu/libblkid.so.1 (0x00007fe925318000)\n\
            \tlibuuid.so.1 => /lib/x86_64-linux-gnu/libuuid.so.1 (0x00007fe92530e000)\n\
            \tlibe2p.so.2 => /lib/x86_64-linux-gnu/libe2p.so.2 (0x00007fe925303000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fe92511f000)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007fe925417000)\n";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(libs.len(), 7);
        assert_eq!(libs[0], Path::new("/lib/x86_64-linux-gnu/libext2fs.so.2"));
        assert_eq!(libs[6], Path::new("/lib64/ld-linux-x86-64.so.2"));
    }

    #[test]
    fn ldd_missing_library_and_static() {
        let err = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(err.contains("libfoo.so.1"), "{err}");
        assert_eq!(
            parse_ldd("\tstatically linked\n").unwrap(),
            Vec::<PathBuf>::new()
        );
        assert_eq!(
            parse_ldd("\tlibc.so.6 => /lib/libc.so.6 (0x1)\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn archive_paths() {
        assert_eq!(
            archive_path(Path::new("/usr/sbin/mke2fs")).unwrap(),
            "usr/sbin/mke2fs"
        );
        assert!(archive_path(Path::new("sbin/mke2fs")).is_err());
    }
}
