//! The one atomic file replacement: write a temporary file in the same directory, fsync
//! it, rename it over the target, fsync the directory.
//!
//! A reader of the target sees either the old or the new contents, never a mix, even
//! across a crash or power cut. The temporary file is `.NAME.tmp` next to `NAME`; a stale
//! one (left by a crash) is removed before it is created again, and one whose write
//! failed is removed. One writer per target at a time: callers that may race hold a lock.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A step of an atomic write that failed, naming the file or directory it was about.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {}", path.display())]
pub struct AtomicWriteError {
    /// What was being done: `create`, `write`, `sync`, `rename … to`.
    pub op: String,
    /// The file or directory.
    pub path: PathBuf,
    /// The error from the operating system.
    #[source]
    pub source: io::Error,
}

impl From<AtomicWriteError> for io::Error {
    fn from(e: AtomicWriteError) -> io::Error {
        io::Error::new(e.source.kind(), e)
    }
}

fn fail(op: impl Into<String>, path: &Path) -> impl FnOnce(io::Error) -> AtomicWriteError {
    let op = op.into();
    let path = path.to_path_buf();
    move |source| AtomicWriteError { op, path, source }
}

/// The temporary file an atomic write of `path` goes through: `.NAME.tmp` beside it.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".tmp");
    path.with_file_name(name)
}

/// The directory holding `path` (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Flushes a directory's entries to disk (after a rename into it).
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically (default mode: `0o666` less the umask).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), AtomicWriteError> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes).map_err(fail("write", &file.tmp))?;
    file.commit()
}

/// A file being written in place of `path`: created as [`temp_path`], put in place by
/// [`AtomicFile::commit`]. Dropped without a commit, it removes the temporary file and
/// leaves `path` as it was.
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
}

impl AtomicFile {
    /// Starts replacing `path` (default mode: `0o666` less the umask).
    pub fn create(path: &Path) -> Result<AtomicFile, AtomicWriteError> {
        Self::create_with_mode(path, 0o666)
    }

    /// Starts replacing `path` with a file of `mode` (less the umask).
    pub fn create_with_mode(path: &Path, mode: u32) -> Result<AtomicFile, AtomicWriteError> {
        let tmp = temp_path(path);
        // A stale temporary file from a crash; `create_new` below never follows a link.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(fail("remove", &tmp)(e));
            }
            _ => {}
        }
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(fail("create", &tmp))?;
        Ok(AtomicFile {
            file,
            tmp,
            path: path.to_path_buf(),
        })
    }

    /// The temporary file's path (for messages).
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// The target path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open temporary file (for positioned writes, `set_len`, or a tool writing to
    /// [`AtomicFile::temp_path`]).
    pub fn as_file(&self) -> &File {
        &self.file
    }

    /// Syncs the temporary file, renames it over the target and syncs the directory.
    pub fn commit(mut self) -> Result<(), AtomicWriteError> {
        self.file.sync_all().map_err(fail("sync", &self.tmp))?;
        std::fs::rename(&self.tmp, &self.path).map_err(fail(
            format!("rename {} to", self.tmp.display()),
            &self.path,
        ))?;
        // Renamed: nothing left to remove on drop.
        self.tmp = PathBuf::new();
        let dir = parent_dir(&self.path);
        fsync_dir(dir).map_err(fail("sync directory", dir))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for AtomicFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.tmp.as_os_str().is_empty() {
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.tmp) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!("cannot remove {}: {e}", self.tmp.display());
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(names(dir.path()), ["state.json"]);
        assert_eq!(temp_path(&path), dir.path().join(".state.json.tmp"));
    }

    #[test]
    fn a_stale_temporary_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(temp_path(&path), b"partial from a crash").unwrap();
        atomic_write(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["s"]);
    }

    #[test]
    fn an_uncommitted_file_is_removed_and_the_target_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&path).unwrap();
            f.write_all(b"half").unwrap();
            assert!(f.temp_path().exists());
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["s"]);
    }

    #[test]
    fn mode_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let mut f = AtomicFile::create_with_mode(&path, 0o600).unwrap();
        f.write_all(b"x").unwrap();
        f.commit().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn errors_name_the_path() {
        let err = atomic_write(Path::new("/nonexistent/dir/f"), b"x").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dir/.f.tmp"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        fsync_dir(dir.path()).unwrap();
        assert!(fsync_dir(&dir.path().join("missing")).is_err());
    }
}
