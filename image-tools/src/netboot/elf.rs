//! Whether an executable is static: an ELF file's program headers read for a `PT_INTERP`
//! segment (the dynamic loader a dynamically linked program names). Pure: works on bytes.
//!
//! The initramfs has no C library for busybox or the agent, so both must be static; the
//! one dynamic program it carries (`mke2fs`) brings its libraries, found with `ldd`.

/// `PT_INTERP`, the program header type naming the dynamic loader.
const PT_INTERP: u32 = 3;
/// More program headers than any real executable has; a header claiming more is refused.
const MAX_PROGRAM_HEADERS: usize = 4096;

/// What kind of executable a file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecKind {
    /// Not an ELF file (a script, or something else).
    NotElf,
    /// An ELF file without a `PT_INTERP` segment: statically linked.
    Static,
    /// An ELF file naming a dynamic loader.
    Dynamic {
        /// The loader, e.g. `/lib64/ld-linux-x86-64.so.2`.
        interpreter: String,
    },
    /// An ELF file whose headers do not fit in it.
    Malformed,
}

/// Classifies `bytes` (a whole file) as [`ExecKind`]. 32- and 64-bit, either byte order.
pub fn exec_kind(bytes: &[u8]) -> ExecKind {
    if bytes.get(..4) != Some(b"\x7fELF") {
        return ExecKind::NotElf;
    }
    let (Some(&class), Some(&data)) = (bytes.get(4), bytes.get(5)) else {
        return ExecKind::Malformed;
    };
    let r = Reader {
        bytes,
        big: data == 2,
    };
    let wide = match class {
        1 => false,
        2 => true,
        _ => return ExecKind::Malformed,
    };
    let headers = if wide {
        (r.u64(0x20), r.u16(0x36), r.u16(0x38))
    } else {
        (r.u32(0x1c).map(u64::from), r.u16(0x2a), r.u16(0x2c))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = headers else {
        return ExecKind::Malformed;
    };
    let (phentsize, phnum) = (usize::from(phentsize), usize::from(phnum));
    let Ok(phoff) = usize::try_from(phoff) else {
        return ExecKind::Malformed;
    };
    if phnum > MAX_PROGRAM_HEADERS || phentsize < if wide { 0x38 } else { 0x20 } {
        return ExecKind::Malformed;
    }
    for i in 0..phnum {
        let at = phoff.saturating_add(i * phentsize);
        let Some(kind) = r.u32(at) else {
            return ExecKind::Malformed;
        };
        if kind != PT_INTERP {
            continue;
        }
        let segment = if wide {
            (r.u64(at + 8), r.u64(at + 32))
        } else {
            (r.u32(at + 4).map(u64::from), r.u32(at + 16).map(u64::from))
        };
        let (Some(offset), Some(size)) = segment else {
            return ExecKind::Malformed;
        };
        let name = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(size).ok())
            .and_then(|(o, s)| bytes.get(o..o.checked_add(s)?));
        let Some(name) = name else {
            return ExecKind::Malformed;
        };
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        return ExecKind::Dynamic {
            interpreter: String::from_utf8_lossy(name).into_owned(),
        };
    }
    ExecKind::Static
}

/// Reads integers of one byte order at offsets, `None` past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    big: bool,
}

impl Reader<'_> {
    fn take<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes.get(at..at.checked_add(N)?)?);
        if self.big {
            out.reverse();
        }
        Some(out)
    }

    fn u16(&self, at: usize) -> Option<u16> {
        self.take(at).map(u16::from_le_bytes)
    }

    fn u32(&self, at: usize) -> Option<u32> {
        self.take(at).map(u32::from_le_bytes)
    }

    fn u64(&self, at: usize) -> Option<u64> {
        self.take(at).map(u64::from_le_bytes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    /// A minimal 64-bit little-endian ELF with one program header of type `kind`.
    fn elf64(kind: u32) -> Vec<u8> {
        let mut b = vec![0u8; 0x40 + 0x38 + 32];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let ph = 0x40;
        b[ph..ph + 4].copy_from_slice(&kind.to_le_bytes());
        let name = b"/lib64/ld.so\0";
        let off = 0x40 + 0x38;
        b[ph + 8..ph + 16].copy_from_slice(&(off as u64).to_le_bytes());
        b[ph + 32..ph + 40].copy_from_slice(&(name.len() as u64).to_le_bytes());
        b[off..off + name.len()].copy_from_slice(name);
        b
    }

    #[test]
    fn finds_the_interpreter() {
        assert_eq!(
            exec_kind(&elf64(PT_INTERP)),
            ExecKind::Dynamic {
                interpreter: "/lib64/ld.so".into()
            }
        );
        assert_eq!(exec_kind(&elf64(1)), ExecKind::Static);
        assert_eq!(exec_kind(b"#!/bin/sh\n"), ExecKind::NotElf);
    }

    #[test]
    fn truncated_headers_are_malformed() {
        let full = elf64(PT_INTERP);
        assert_eq!(exec_kind(&full[..0x50]), ExecKind::Malformed);
        assert_eq!(exec_kind(&full[..6]), ExecKind::Malformed);
        let mut huge = full.clone();
        huge[0x38..0x3a].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(exec_kind(&huge), ExecKind::Malformed);
    }

    #[test]
    fn host_programs() {
        // The test runner itself is a well-formed ELF (dynamic unless built with crt-static).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(matches!(
            exec_kind(&me),
            ExecKind::Dynamic { .. } | ExecKind::Static
        ));
    }
}
