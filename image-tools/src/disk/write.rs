//! Writing into the disk image file: sparse positioned writes (zero blocks are skipped, the
//! fresh file already reads as zeros there), copying a filesystem file in at an offset, and a
//! scratch directory removed when dropped.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::DiskError;

/// Granularity of the zero test: blocks of this many bytes that are all zero are not written.
pub const SPARSE_BLOCK: usize = 4096;
/// Buffer size for copying files in.
const COPY_BUF: usize = 1 << 20;

/// Builds an I/O error naming the action and path.
pub fn io_err(action: impl Into<String>, path: &Path) -> impl FnOnce(std::io::Error) -> DiskError {
    let action = action.into();
    let path = path.to_path_buf();
    move |source| DiskError::Io {
        action,
        path,
        source,
    }
}

/// Writes `data` at `offset` of `file` (a freshly sized, all-zero file), skipping runs of
/// all-zero [`SPARSE_BLOCK`]s so that the image stays sparse.
pub fn write_sparse_at(
    file: &File,
    path: &Path,
    offset: u64,
    data: &[u8],
) -> Result<(), DiskError> {
    let mut run_start: Option<usize> = None;
    let mut pos = 0usize;
    let flush = |from: usize, to: usize| {
        file.write_all_at(&data[from..to], offset + from as u64)
            .map_err(io_err(
                format!("write at offset {} of", offset + from as u64),
                path,
            ))
    };
    for block in data.chunks(SPARSE_BLOCK) {
        let zero = block.iter().all(|&b| b == 0);
        match (zero, run_start) {
            (false, None) => run_start = Some(pos),
            (true, Some(start)) => {
                flush(start, pos)?;
                run_start = None;
            }
            _ => {}
        }
        pos += block.len();
    }
    if let Some(start) = run_start {
        flush(start, pos)?;
    }
    Ok(())
}

/// Copies the whole file `src` into `disk` at `offset`, sparsely; fails if it is longer than
/// `max_len`. Returns its length.
pub fn copy_file_into(
    disk: &File,
    disk_path: &Path,
    offset: u64,
    src: &Path,
    max_len: u64,
) -> Result<u64, DiskError> {
    let mut f = File::open(src).map_err(io_err("open", src))?;
    let len = f.metadata().map_err(io_err("stat", src))?.len();
    if len > max_len {
        return Err(DiskError::Io {
            action: format!("fit {len} bytes into a partition of {max_len} bytes:"),
            path: src.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "file too large"),
        });
    }
    let mut buf = vec![0u8; COPY_BUF];
    let mut done = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("read", src)(e)),
        };
        if done + n as u64 > max_len {
            return Err(DiskError::Io {
                action: "copy (it grew while being copied)".into(),
                path: src.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "file grew"),
            });
        }
        write_sparse_at(disk, disk_path, offset + done, &buf[..n])?;
        done += n as u64;
    }
    Ok(done)
}

/// A directory for intermediate files, removed (with its contents) when dropped.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `path` (which must not exist).
    pub fn create(path: PathBuf) -> Result<ScratchDir, DiskError> {
        if path.exists() {
            fs::remove_dir_all(&path).map_err(io_err("remove stale scratch directory", &path))?;
        }
        fs::create_dir(&path).map_err(io_err("create scratch directory", &path))?;
        Ok(ScratchDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            log::warn!(
                "cannot remove scratch directory {}: {e}",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn sparse_writes_skip_zero_blocks_and_keep_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(8 << 20).unwrap();
        let mut data = vec![0u8; 3 * SPARSE_BLOCK + 100];
        data[5] = 1;
        data[2 * SPARSE_BLOCK + 7] = 2;
        data[3 * SPARSE_BLOCK + 99] = 3;
        write_sparse_at(&file, &path, 1 << 20, &data).unwrap();
        let all = fs::read(&path).unwrap();
        assert_eq!(&all[1 << 20..(1 << 20) + data.len()], &data[..]);
        assert!(all[..1 << 20].iter().all(|&b| b == 0));
        // Only a few blocks are allocated.
        assert!(fs::metadata(&path).unwrap().blocks() * 512 < 1 << 20);
    }

    #[test]
    fn copy_refuses_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, vec![7u8; 10_000]).unwrap();
        let disk_path = dir.path().join("disk");
        let disk = File::create(&disk_path).unwrap();
        disk.set_len(1 << 20).unwrap();
        assert_eq!(
            copy_file_into(&disk, &disk_path, 4096, &src, 10_000).unwrap(),
            10_000
        );
        let e = copy_file_into(&disk, &disk_path, 0, &src, 9_999).unwrap_err();
        assert!(e.to_string().contains("src"), "{e}");
        let all = fs::read(&disk_path).unwrap();
        assert!(all[4096..14_096].iter().all(|&b| b == 7));
    }

    #[test]
    fn scratch_dir_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("scratch");
        {
            let s = ScratchDir::create(p.clone()).unwrap();
            fs::write(s.path().join("f"), b"x").unwrap();
        }
        assert!(!p.exists());
    }
}
