//! Where bundle bytes come from. The reader is generic over [`ByteSource`]; files are one
//! adapter, HTTP range requests or a slot device are others (in the agent).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A random-access source of bundle bytes.
pub trait ByteSource {
    /// Total length, when the source knows it.
    fn size(&self) -> Option<u64>;
    /// Fills `buf` from `offset`; a short source is an `UnexpectedEof` error.
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// A name for messages (a path, a URL).
    fn describe(&self) -> String;
    /// Whether reading the bytes twice costs little (a local file, not a download): an
    /// install may then check a whole RAUC verity payload before writing anything.
    fn rereads_are_cheap(&self) -> bool {
        false
    }
}

impl<S: ByteSource + ?Sized> ByteSource for &mut S {
    fn size(&self) -> Option<u64> {
        (**self).size()
    }
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn rereads_are_cheap(&self) -> bool {
        (**self).rereads_are_cheap()
    }
}

/// A bundle file.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    len: u64,
    path: PathBuf,
}

impl FileSource {
    /// Opens a bundle file (or a block device holding one).
    ///
    /// Anything else is refused with [`io::ErrorKind::InvalidInput`] naming what it is:
    /// the path is checked before it is opened (opening a FIFO with no writer would block
    /// for ever), and the opened file again (the path may have changed in between).
    pub fn open(path: &Path) -> io::Result<FileSource> {
        check_bundle_file(path, &std::fs::metadata(path)?)?;
        let file = File::open(path)?;
        let meta = file.metadata()?;
        check_bundle_file(path, &meta)?;
        Ok(FileSource {
            file,
            len: meta.len(),
            path: path.to_path_buf(),
        })
    }
}

/// Refuses what is neither a regular file nor a block device.
fn check_bundle_file(path: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let kind = if t.is_file() || t.is_block_device() {
        return Ok(());
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_dir() {
        "directory"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else {
        "special file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is a {kind}, not a regular file or block device",
            path.display()
        ),
    ))
}

impl ByteSource for FileSource {
    fn size(&self) -> Option<u64> {
        Some(self.len)
    }
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn rereads_are_cheap(&self) -> bool {
        true
    }
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// Bytes in memory (tests, small bundles).
#[derive(Debug, Clone)]
pub struct MemSource(pub Vec<u8>);

impl ByteSource for MemSource {
    fn size(&self) -> Option<u64> {
        Some(self.0.len() as u64)
    }
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= self.0.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&self.0[start..end]);
        Ok(())
    }
    fn describe(&self) -> String {
        "(memory)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_file_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("b.fsb");
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(st.success());
        // No writer: a plain open would block this test for ever.
        let e = FileSource::open(&fifo).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            e.to_string(),
            format!(
                "{} is a FIFO, not a regular file or block device",
                fifo.display()
            )
        );
        let e = FileSource::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        let e = FileSource::open(Path::new("/dev/null")).unwrap_err();
        assert!(e.to_string().contains("is a character device"), "{e}");
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(FileSource::open(&file).unwrap().size(), Some(5));
    }
}
