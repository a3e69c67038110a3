//! Slot devices: the narrow trait the install pipeline writes through, an aligned buffer
//! for direct I/O, and the real implementation over a block device or image file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Alignment of direct-I/O buffers, offsets and lengths.
pub const IO_ALIGN: usize = 4096;

/// How a slot device is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// `O_DIRECT` for aligned chunks (a short last chunk goes through the page cache).
    Direct,
    /// Everything through the page cache: asked for, or direct I/O was refused.
    Buffered,
}

/// A slot's storage, seen as a fixed-size array of bytes.
pub trait SlotDevice: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Writes all of `buf` at `offset`.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Fills `buf` from `offset`. Takes `&self` so that several threads can read at once
    /// (the read-back keeps two reads in flight).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Makes every write durable.
    fn sync(&mut self) -> io::Result<()>;
    /// The device path, for messages.
    fn path(&self) -> &Path;
    /// How writes reach the device.
    fn io_mode(&self) -> IoMode;
}

/// Opens slot devices and answers whether one is in use. The real implementation is
/// [`HostDevices`]; tests use plain files.
pub trait SlotDevices {
    /// Opens a slot device for reading and writing.
    fn open(&self, path: &Path) -> anyhow::Result<Box<dyn SlotDevice>>;
    /// Where the device is mounted, if it is.
    fn mounted_at(&self, path: &Path) -> anyhow::Result<Option<PathBuf>>;
    /// Whether two paths name the same device or file (after following links).
    fn same_device(&self, a: &Path, b: &Path) -> bool;
}

/// A heap buffer whose usable part starts on an [`IO_ALIGN`] boundary, made without
/// `unsafe` by over-allocating and slicing from the first aligned byte.
#[derive(Debug)]
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` usable bytes.
    pub fn new(len: usize) -> AlignedBuf {
        let raw = vec![0u8; len + IO_ALIGN];
        let start = raw.as_ptr().align_offset(IO_ALIGN).min(IO_ALIGN);
        AlignedBuf { raw, start, len }
    }

    /// Usable length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the usable length is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The aligned bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    /// The aligned bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// A slot device on the host: a block device or an image file, written with direct I/O
/// where offset and length are aligned (which is every chunk but a short last one) and
/// through the page cache otherwise.
#[derive(Debug)]
pub struct HostDevice {
    direct: Option<File>,
    buffered: File,
    size: u64,
    path: PathBuf,
}

impl HostDevice {
    /// Opens `path` for reading and writing; `direct` asks for O_DIRECT (falls back to
    /// buffered I/O where the filesystem refuses it, e.g. tmpfs, with a warning;
    /// [`SlotDevice::io_mode`] says which it got).
    pub fn open(path: &Path, direct: bool) -> io::Result<HostDevice> {
        let buffered = crate::host::sys::open_rw(path, false)?;
        let size = crate::host::sys::block_device_size(&buffered)?;
        let direct = if direct {
            match crate::host::sys::open_rw(path, true) {
                Ok(f) => Some(f),
                Err(e) => {
                    log::warn!(
                        "{}: direct I/O refused ({e}); writing through the page cache",
                        path.display()
                    );
                    None
                }
            }
        } else {
            None
        };
        Ok(HostDevice {
            direct,
            buffered,
            size,
            path: path.to_path_buf(),
        })
    }

    fn aligned(offset: u64, buf: &[u8]) -> bool {
        offset % IO_ALIGN as u64 == 0
            && buf.len() % IO_ALIGN == 0
            && (buf.as_ptr() as usize) % IO_ALIGN == 0
    }
}

impl SlotDevice for HostDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        match &self.direct {
            Some(f) if Self::aligned(offset, buf) => f.write_all_at(buf, offset),
            _ => self.buffered.write_all_at(buf, offset),
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match &self.direct {
            Some(f) if Self::aligned(offset, buf) => f.read_exact_at(buf, offset),
            _ => self.buffered.read_exact_at(buf, offset),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        self.buffered.sync_all()?;
        if let Some(f) = &self.direct {
            f.sync_all()?;
        }
        Ok(())
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn io_mode(&self) -> IoMode {
        if self.direct.is_some() {
            IoMode::Direct
        } else {
            IoMode::Buffered
        }
    }
}

/// The host's slot devices, resolved under a root directory.
#[derive(Debug)]
pub struct HostDevices {
    /// Root directory (the host's `/` in production).
    pub root: crate::host::paths::Root,
    /// Whether to use direct I/O.
    pub direct: bool,
}

impl SlotDevices for HostDevices {
    fn open(&self, path: &Path) -> anyhow::Result<Box<dyn SlotDevice>> {
        use anyhow::Context;
        let real = self.root.resolve(path);
        if !real.exists() {
            anyhow::bail!("slot device {} does not exist", path.display());
        }
        let dev = HostDevice::open(&real, self.direct)
            .with_context(|| format!("cannot open slot device {}", path.display()))?;
        Ok(Box::new(dev))
    }

    fn mounted_at(&self, path: &Path) -> anyhow::Result<Option<PathBuf>> {
        use anyhow::Context;
        let real = self.root.resolve(path);
        let Some((major, minor)) = crate::host::sys::device_numbers(&real)
            .with_context(|| format!("cannot stat slot device {}", path.display()))?
        else {
            return Ok(None);
        };
        let table = self
            .root
            .resolve(Path::new(crate::host::paths::PROC_MOUNTINFO));
        let text = std::fs::read_to_string(&table)
            .with_context(|| format!("cannot read {}", table.display()))?;
        let entries = crate::host::mountinfo::parse(&text)
            .with_context(|| format!("cannot parse {}", table.display()))?;
        Ok(crate::host::mountinfo::mounted_at(&entries, major, minor)
            .map(|e| e.mount_point.clone()))
    }

    fn same_device(&self, a: &Path, b: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let id = |p: &Path| {
            std::fs::metadata(self.root.resolve(p)).ok().map(|m| {
                if m.rdev() != 0 {
                    (0, m.rdev())
                } else {
                    (m.dev(), m.ino())
                }
            })
        };
        match (id(a), id(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        }
    }
}

/// A slot in memory, for unit tests of the data paths.
#[cfg(test)]
pub(crate) struct MemDevice {
    /// The slot's bytes.
    pub data: Vec<u8>,
    /// The name it reports.
    pub path: PathBuf,
}

#[cfg(test)]
impl MemDevice {
    /// `len` bytes of `fill`, named `/dev/mem-slot`.
    pub fn new(len: usize, fill: u8) -> MemDevice {
        MemDevice {
            data: vec![fill; len],
            path: PathBuf::from("/dev/mem-slot"),
        }
    }
}

#[cfg(test)]
impl SlotDevice for MemDevice {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let o = offset as usize;
        self.data[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let o = offset as usize;
        let part = self.data.get(o..o + buf.len()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the device",
            )
        })?;
        buf.copy_from_slice(part);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn path(&self) -> &Path {
        &self.path
    }
    fn io_mode(&self) -> IoMode {
        IoMode::Buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffer_is_aligned() {
        for len in [4096, 1 << 20, 12345] {
            let mut b = AlignedBuf::new(len);
            assert_eq!(b.as_slice().as_ptr() as usize % IO_ALIGN, 0);
            assert_eq!(b.len(), len);
            b.as_mut_slice()[len - 1] = 1;
        }
    }

    #[test]
    fn file_device_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("slot.img");
        std::fs::write(&p, vec![0u8; 3 * IO_ALIGN]).unwrap();
        let mut d = HostDevice::open(&p, true).unwrap();
        assert_eq!(d.size(), 3 * IO_ALIGN as u64);
        let mut buf = AlignedBuf::new(IO_ALIGN);
        buf.as_mut_slice().fill(7);
        d.write_at(IO_ALIGN as u64, buf.as_slice()).unwrap();
        d.write_at(10, b"tail").unwrap();
        d.sync().unwrap();
        let data = std::fs::read(&p).unwrap();
        assert_eq!(&data[10..14], b"tail");
        assert!(data[IO_ALIGN..2 * IO_ALIGN].iter().all(|&b| b == 7));
        assert_eq!(
            HostDevice::open(&p, false).unwrap().io_mode(),
            IoMode::Buffered
        );
    }
}
