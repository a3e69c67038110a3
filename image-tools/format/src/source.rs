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
    /// Opens a bundle file.
    pub fn open(path: &Path) -> io::Result<FileSource> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(FileSource {
            file,
            len,
            path: path.to_path_buf(),
        })
    }
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
