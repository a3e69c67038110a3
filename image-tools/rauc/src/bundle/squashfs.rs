//! The bundle's payload as a byte source (plain: checked against the block hashes of
//! the signature pass; verity: through the hash tree) and the squashfs inside it, read
//! with `backhand` over that source.

use std::io::{self, BufReader, Read, Seek, SeekFrom};

use crate::plain::PlainPayload;
use crate::verity::VerifiedSource;
use flipslot_format::source::ByteSource;

/// Where the payload's bytes come from: straight from the bundle (plain, already
/// verified as a whole) or through the hash tree (verity).
pub(super) enum Payload<S: ByteSource> {
    Plain(PlainPayload<S>),
    Verity(Box<VerifiedSource<S>>),
}

impl<S: ByteSource> ByteSource for Payload<S> {
    fn size(&self) -> Option<u64> {
        match self {
            Payload::Plain(p) => p.size(),
            Payload::Verity(v) => v.size(),
        }
    }
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Payload::Plain(p) => p.read_exact_at(offset, buf),
            Payload::Verity(v) => v.read_exact_at(offset, buf),
        }
    }
    fn describe(&self) -> String {
        match self {
            Payload::Plain(p) => p.describe(),
            Payload::Verity(v) => v.describe(),
        }
    }
}

/// `Read + Seek` over a [`ByteSource`], for the squashfs reader.
struct SourceReader<'a, S: ByteSource> {
    source: &'a mut S,
    size: u64,
    pos: u64,
}

impl<S: ByteSource> Read for SourceReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.size.saturating_sub(self.pos);
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        if n == 0 {
            return Ok(0);
        }
        self.source.read_exact_at(self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<S: ByteSource> Seek for SourceReader<'_, S> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

/// Opens the squashfs over `payload` and calls `f` with the file `name` in its root.
pub(super) fn with_file<S: ByteSource + Send, T>(
    payload: &mut S,
    name: &str,
    f: impl FnOnce(&mut dyn Read, u64) -> Result<T, String>,
) -> Result<T, String> {
    let size = payload
        .size()
        .ok_or_else(|| "the payload size is unknown".to_string())?;
    let reader = BufReader::with_capacity(
        128 * 1024,
        SourceReader {
            source: payload,
            size,
            pos: 0,
        },
    );
    let fs = backhand::FilesystemReader::from_reader(reader)
        .map_err(|e| format!("cannot read the squashfs: {e}"))?;
    let want = std::path::Path::new("/").join(name);
    let node = fs
        .files()
        .find(|n| n.fullpath == want)
        .ok_or_else(|| format!("it has no file {name}"))?;
    let backhand::InnerNode::File(file) = &node.inner else {
        return Err(format!("{name} is not a regular file"));
    };
    let size = file.file_len() as u64;
    let mut r = fs.file(file).reader();
    f(&mut r, size)
}

pub(super) fn read_file_named<S: ByteSource + Send>(
    payload: &mut S,
    name: &str,
    max: u64,
) -> Result<Vec<u8>, String> {
    with_file(payload, name, |r, size| {
        if size > max {
            return Err(format!("{name} is {size} bytes, more than {max}"));
        }
        let mut out = Vec::with_capacity(size as usize);
        r.take(max)
            .read_to_end(&mut out)
            .map_err(|e| format!("cannot read {name}: {e}"))?;
        Ok(out)
    })
}
