//! U-Boot environments, natively: the byte layout of a single or redundant environment
//! and the choice of the current copy. Reading `fw_env.config` and the storage live in
//! the agent (`bootloader::ubootenv::{config, store}`).
//!
//! # Layout
//!
//! One copy is `envsize` bytes (from `fw_env.config`):
//!
//! | bytes | single | redundant |
//! |---|---|---|
//! | 0..4 | CRC-32 (IEEE, little-endian) of the data area | same |
//! | 4 | data area starts | flag byte (a counter, see below) |
//! | 5.. | | data area starts |
//!
//! The data area holds `name=value\0` entries and ends with an empty entry (`\0`); the CRC
//! covers the whole data area, padding included. We pad with `0x00`, as U-Boot's own
//! `saveenv` does (libubootenv leaves whatever its buffer held, so either is seen in the
//! field and neither matters to a reader). Reading follows libubootenv: entries without `=`
//! are dropped, a later duplicate replaces the value of an earlier one, and an entry running
//! past the data area is an error.
//!
//! # Redundant environments
//!
//! Two copies, each with its flag. The current copy is the one with a valid CRC; when both
//! are valid, the one with the larger flag, except that `255` is older than `0` (the counter
//! wrapped) and equal flags pick copy 0 ([`select_copy`], U-Boot's and libubootenv's rule). A
//! write goes to the *other* copy with the current flag plus one (wrapping), so the current
//! copy stays valid until the new one is complete: a power cut in the middle of a write
//! leaves the old environment in place. When neither copy is valid, libubootenv treats copy
//! 0 as current (with whatever flag byte it holds) and writes copy 1; so do we.
//!
//! Everything here is pure: the agent reads and writes copies through its `EnvStore`
//! trait and parses `fw_env.config` into a [`Layout`].

use std::borrow::Cow;

/// The largest environment accepted (per copy): larger sizes in a config are rejected
/// before anything is allocated.
pub const MAX_ENV_SIZE: usize = 1 << 20;

/// Why an environment or its configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UbootEnvError {
    /// A line of `fw_env.config` is wrong.
    #[error("{file}:{line}: {message}")]
    Config {
        /// The config file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// `fw_env.config` names no environment device.
    #[error("{file}: no environment device configured")]
    NoDevice {
        /// The config file.
        file: String,
    },
    /// The environment size cannot hold the header and an empty environment.
    #[error("an environment of {size} bytes is too small (header {header} bytes)")]
    SizeTooSmall {
        /// The configured size.
        size: usize,
        /// The header size of the layout.
        header: usize,
    },
    /// The environment size is above [`MAX_ENV_SIZE`].
    #[error("an environment of {size} bytes exceeds the limit of {MAX_ENV_SIZE} bytes")]
    SizeTooLarge {
        /// The configured size.
        size: usize,
    },
    /// The number of copies does not match the layout.
    #[error("{got} copies given, the layout has {expected}")]
    WrongCopies {
        /// Copies given.
        got: usize,
        /// Copies of the layout.
        expected: usize,
    },
    /// A copy does not have the configured size.
    #[error("copy {copy} is {got} bytes, expected {expected}")]
    WrongLength {
        /// The copy index.
        copy: usize,
        /// Its length.
        got: usize,
        /// The configured size.
        expected: usize,
    },
    /// An entry of the data area has no terminating NUL byte.
    #[error("the entry at byte {offset} of the data area is not terminated")]
    Unterminated {
        /// Offset of the entry in the data area.
        offset: usize,
    },
    /// A variable name that U-Boot cannot store.
    #[error("invalid variable name {name:?}: must be non-empty without '=' or NUL")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// A value with a NUL byte.
    #[error("the value of {name} contains a NUL byte")]
    InvalidValue {
        /// The variable.
        name: String,
    },
    /// The variables do not fit the data area.
    #[error("the variables need {needed} bytes but the data area holds {available}")]
    TooFull {
        /// Bytes needed, terminator included.
        needed: usize,
        /// Size of the data area.
        available: usize,
    },
}

/// Single or redundant environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One copy: CRC, data.
    Single,
    /// Two copies: CRC, flag, data.
    Redundant,
}

impl Layout {
    /// Bytes before the data area.
    pub fn header_len(self) -> usize {
        match self {
            Layout::Single => 4,
            Layout::Redundant => 5,
        }
    }

    /// Number of copies.
    pub fn copies(self) -> usize {
        match self {
            Layout::Single => 1,
            Layout::Redundant => 2,
        }
    }

    /// Checks that a copy of `size` bytes is usable with this layout.
    pub fn check_size(self, size: usize) -> Result<(), UbootEnvError> {
        if size > MAX_ENV_SIZE {
            return Err(UbootEnvError::SizeTooLarge { size });
        }
        if size <= self.header_len() {
            return Err(UbootEnvError::SizeTooSmall {
                size,
                header: self.header_len(),
            });
        }
        Ok(())
    }
}

/// How the flags of a redundant environment are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagScheme {
    /// A counter incremented on every write (files, block devices, NAND, UBI).
    Incremental,
    /// Active `1` / obsolete `0` (NOR flash in libubootenv; read-only support here).
    Boolean,
}

/// The current copy of a redundant environment from the copies' CRC validity and flags, by
/// libubootenv's rule; `None` when neither copy is valid.
pub fn select_copy(valid: [bool; 2], flags: [u8; 2], scheme: FlagScheme) -> Option<usize> {
    match valid {
        [false, false] => None,
        [true, false] => Some(0),
        [false, true] => Some(1),
        [true, true] => {
            let [f0, f1] = flags;
            let newer = if f1 > f0 { 1 } else { 0 };
            Some(match scheme {
                FlagScheme::Incremental if f0 == 0xff && f1 == 0 => 1,
                FlagScheme::Incremental if f1 == 0xff && f0 == 0 => 0,
                FlagScheme::Boolean if f1 == 0xff => 1,
                FlagScheme::Boolean if f0 == 0xff => 0,
                _ => newer,
            })
        }
    }
}

/// The CRC-32 U-Boot stores for a data area.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// The variables of an environment, in storage order, as bytes (so that unrelated
/// variables that are not UTF-8 are written back unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UbootEnv {
    vars: Vec<(Vec<u8>, Vec<u8>)>,
}

fn check_name(name: &str) -> Result<(), UbootEnvError> {
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(UbootEnvError::InvalidName { name: name.into() });
    }
    Ok(())
}

impl UbootEnv {
    /// An empty environment.
    pub fn new() -> Self {
        UbootEnv::default()
    }

    /// Decodes a data area (everything after the header).
    pub fn parse_data(data: &[u8]) -> Result<Self, UbootEnvError> {
        let mut env = UbootEnv::new();
        let mut pos = 0;
        while pos < data.len() && data[pos] != 0 {
            let len = data[pos..]
                .iter()
                .position(|&b| b == 0)
                .ok_or(UbootEnvError::Unterminated { offset: pos })?;
            let entry = &data[pos..pos + len];
            if let Some(eq) = entry.iter().position(|&b| b == b'=') {
                env.put(&entry[..eq], &entry[eq + 1..]);
            }
            pos += len + 1;
        }
        Ok(env)
    }

    /// Reads a default environment or `fw_setenv --script` file: `name=value` lines;
    /// empty lines, lines starting with `#` and lines without `=` are skipped; an empty
    /// value removes the variable; invalid names are skipped (libubootenv's rules).
    pub fn parse_text(text: &str) -> Self {
        let mut env = UbootEnv::new();
        env.apply_text(text);
        env
    }

    /// Applies `name=value` lines (see [`UbootEnv::parse_text`]) on top of this environment.
    pub fn apply_text(&mut self, text: &str) {
        for line in text.lines() {
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                continue;
            };
            if check_name(name).is_err() || value.contains('\0') {
                continue;
            }
            if value.is_empty() {
                self.remove(name);
            } else {
                self.put(name.as_bytes(), value.as_bytes());
            }
        }
    }

    fn put(&mut self, name: &[u8], value: &[u8]) {
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value.to_vec(),
            None => self.vars.push((name.to_vec(), value.to_vec())),
        }
    }

    /// The value of `name` (lossily decoded), if set.
    pub fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        self.vars
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v))
    }

    /// Sets `name` to `value`, in place if it exists, else appended.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), UbootEnvError> {
        check_name(name)?;
        if value.contains('\0') {
            return Err(UbootEnvError::InvalidValue { name: name.into() });
        }
        self.put(name.as_bytes(), value.as_bytes());
        Ok(())
    }

    /// Removes `name`; whether it was set.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.vars.len();
        self.vars.retain(|(n, _)| n != name.as_bytes());
        self.vars.len() != before
    }

    /// The variables in storage order, lossily decoded.
    pub fn iter(&self) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
        self.vars
            .iter()
            .map(|(n, v)| (String::from_utf8_lossy(n), String::from_utf8_lossy(v)))
    }

    /// Number of variables.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether no variable is set.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Bytes the variables take in a data area, final terminator included.
    pub fn encoded_len(&self) -> usize {
        self.vars
            .iter()
            .map(|(n, v)| n.len() + v.len() + 2)
            .sum::<usize>()
            + 1
    }

    /// Encodes a data area of `len` bytes, padded with `0x00`.
    pub fn encode_data(&self, len: usize) -> Result<Vec<u8>, UbootEnvError> {
        let needed = self.encoded_len();
        if needed > len {
            return Err(UbootEnvError::TooFull {
                needed,
                available: len,
            });
        }
        let mut data = Vec::with_capacity(len);
        for (n, v) in &self.vars {
            data.extend_from_slice(n);
            data.push(b'=');
            data.extend_from_slice(v);
            data.push(0);
        }
        data.resize(len, 0);
        Ok(data)
    }
}

/// One copy as read: CRC validity and flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyInfo {
    /// Whether the stored CRC matches the data area.
    pub crc_ok: bool,
    /// The flag byte (redundant layout), else 0.
    pub flag: u8,
}

/// The decoded environment with what a later write needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Single or redundant.
    pub layout: Layout,
    /// Bytes per copy.
    pub size: usize,
    /// Each copy's CRC validity and flag.
    pub copies: Vec<CopyInfo>,
    /// The current copy (copy 0 when none is valid).
    pub current: usize,
    /// The variables of the current copy; `None` when no copy has a valid CRC.
    pub env: Option<UbootEnv>,
}

/// Encodes one copy of `size` bytes holding `env` (`flag` is written only with the
/// redundant layout).
pub fn encode_copy(
    layout: Layout,
    size: usize,
    env: &UbootEnv,
    flag: u8,
) -> Result<Vec<u8>, UbootEnvError> {
    layout.check_size(size)?;
    let data = env.encode_data(size - layout.header_len())?;
    let mut copy = Vec::with_capacity(size);
    copy.extend_from_slice(&crc32(&data).to_le_bytes());
    if layout == Layout::Redundant {
        copy.push(flag);
    }
    copy.extend_from_slice(&data);
    Ok(copy)
}

/// Decodes the copies of an environment (one per [`Layout::copies`], each `size` bytes)
/// and picks the current one ([`select_copy`]).
pub fn decode(
    layout: Layout,
    size: usize,
    copies: &[Vec<u8>],
    scheme: FlagScheme,
) -> Result<Decoded, UbootEnvError> {
    layout.check_size(size)?;
    if copies.len() != layout.copies() {
        return Err(UbootEnvError::WrongCopies {
            got: copies.len(),
            expected: layout.copies(),
        });
    }
    let header = layout.header_len();
    let mut infos = Vec::with_capacity(copies.len());
    for (i, copy) in copies.iter().enumerate() {
        if copy.len() != size {
            return Err(UbootEnvError::WrongLength {
                copy: i,
                got: copy.len(),
                expected: size,
            });
        }
        let stored = u32::from_le_bytes([copy[0], copy[1], copy[2], copy[3]]);
        infos.push(CopyInfo {
            crc_ok: stored == crc32(&copy[header..]),
            flag: if layout == Layout::Redundant {
                copy[4]
            } else {
                0
            },
        });
    }
    let current = match layout {
        Layout::Single => infos[0].crc_ok.then_some(0),
        Layout::Redundant => select_copy(
            [infos[0].crc_ok, infos[1].crc_ok],
            [infos[0].flag, infos[1].flag],
            scheme,
        ),
    };
    let env = match current {
        Some(i) => Some(UbootEnv::parse_data(&copies[i][header..])?),
        None => None,
    };
    Ok(Decoded {
        layout,
        size,
        copies: infos,
        current: current.unwrap_or(0),
        env,
    })
}

impl Decoded {
    /// The copy to write `env` to and its bytes: the only copy of a single environment;
    /// for a redundant one the other copy, with the current flag plus one.
    pub fn next_write(&self, env: &UbootEnv) -> Result<(usize, Vec<u8>), UbootEnvError> {
        let (target, flag) = match self.layout {
            Layout::Single => (0, 0),
            Layout::Redundant => (
                1 - self.current,
                self.copies[self.current].flag.wrapping_add(1),
            ),
        };
        Ok((target, encode_copy(self.layout, self.size, env, flag)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> UbootEnv {
        let mut e = UbootEnv::new();
        for (n, v) in vars {
            e.set(n, v).unwrap();
        }
        e
    }

    fn pairs(e: &UbootEnv) -> Vec<(String, String)> {
        e.iter()
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn encodes_the_documented_bytes() {
        let e = env(&[("bootcmd", "run x"), ("a", "")]);
        let copy = encode_copy(Layout::Single, 32, &e, 9).unwrap();
        assert_eq!(copy.len(), 32);
        let data = b"bootcmd=run x\0a=\0\0\0\0\0\0\0\0\0\0\0\0";
        assert_eq!(&copy[4..], data);
        assert_eq!(&copy[..4], &crc32(data).to_le_bytes());
        // Known value: CRC-32 of "123456789" is 0xcbf43926.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);

        let copy = encode_copy(Layout::Redundant, 32, &e, 7).unwrap();
        assert_eq!(copy[4], 7);
        assert_eq!(&copy[5..21], b"bootcmd=run x\0a=");
        assert_eq!(&copy[..4], &crc32(&copy[5..]).to_le_bytes());
    }

    #[test]
    fn round_trips() {
        let e = env(&[("z", "1"), ("BOOT_ORDER", "A B"), ("x", "a=b c")]);
        for layout in [Layout::Single, Layout::Redundant] {
            let n = layout.copies();
            let copies = vec![encode_copy(layout, 256, &e, 0).unwrap(); n];
            let d = decode(layout, 256, &copies, FlagScheme::Incremental).unwrap();
            assert_eq!(d.env.as_ref(), Some(&e));
            assert_eq!(d.current, 0);
            assert!(d.copies.iter().all(|c| c.crc_ok));
        }
        assert_eq!(e.encoded_len(), "z=1\0BOOT_ORDER=A B\0x=a=b c\0\0".len());
        assert_eq!(pairs(&e)[1], ("BOOT_ORDER".to_string(), "A B".to_string()));
    }

    #[test]
    fn parse_follows_libubootenv() {
        let data = b"noeq\0a=1\0b=x=y\0a=2\0=empty\0\0junk=after\0";
        let e = UbootEnv::parse_data(data).unwrap();
        assert_eq!(
            pairs(&e),
            [("a", "2"), ("b", "x=y"), ("", "empty")].map(|(n, v)| (n.to_string(), v.to_string()))
        );
        assert_eq!(e.get("a").as_deref(), Some("2"));
        assert_eq!(e.get("junk"), None);
        // An entry running off the end.
        let e = UbootEnv::parse_data(b"a=1\0b=2").unwrap_err();
        assert_eq!(e, UbootEnvError::Unterminated { offset: 4 });
        // A full area without the empty terminator entry is still readable.
        assert_eq!(UbootEnv::parse_data(b"a=1\0").unwrap().len(), 1);
        assert!(UbootEnv::parse_data(b"").unwrap().is_empty());
        assert!(UbootEnv::parse_data(&[0; 16]).unwrap().is_empty());
    }

    #[test]
    fn non_utf8_values_survive() {
        let data = b"bin=\xff\xfe\0t=1\0\0";
        let mut e = UbootEnv::parse_data(data).unwrap();
        e.set("t", "2").unwrap();
        let out = e.encode_data(data.len()).unwrap();
        assert_eq!(&out, b"bin=\xff\xfe\0t=2\0\0");
    }

    #[test]
    fn set_and_remove() {
        let mut e = env(&[("a", "1"), ("b", "2")]);
        e.set("a", "3").unwrap();
        e.set("c", "4").unwrap();
        assert!(e.remove("b"));
        assert!(!e.remove("b"));
        assert_eq!(
            pairs(&e),
            [("a", "3"), ("c", "4")].map(|(n, v)| (n.to_string(), v.to_string()))
        );
        for bad in ["", "a=b", "nul\0"] {
            assert!(matches!(
                e.set(bad, "x"),
                Err(UbootEnvError::InvalidName { .. })
            ));
        }
        assert!(matches!(
            e.set("a", "x\0y"),
            Err(UbootEnvError::InvalidValue { .. })
        ));
    }

    #[test]
    fn too_full_and_bad_sizes() {
        let e = env(&[("name", "value")]);
        // "name=value\0" + "\0" = 12 bytes.
        assert!(encode_copy(Layout::Single, 16, &e, 0).is_ok());
        assert_eq!(
            encode_copy(Layout::Single, 15, &e, 0).unwrap_err(),
            UbootEnvError::TooFull {
                needed: 12,
                available: 11
            }
        );
        assert!(matches!(
            encode_copy(Layout::Redundant, 5, &UbootEnv::new(), 0),
            Err(UbootEnvError::SizeTooSmall { .. })
        ));
        assert!(matches!(
            decode(
                Layout::Single,
                MAX_ENV_SIZE + 1,
                &[vec![]],
                FlagScheme::Incremental
            ),
            Err(UbootEnvError::SizeTooLarge { .. })
        ));
        assert!(matches!(
            decode(Layout::Single, 64, &[vec![0; 63]], FlagScheme::Incremental),
            Err(UbootEnvError::WrongLength { got: 63, .. })
        ));
        assert!(decode(
            Layout::Redundant,
            64,
            &[vec![0; 64]],
            FlagScheme::Incremental
        )
        .is_err());
    }

    #[test]
    fn flag_selection() {
        use FlagScheme::*;
        let both = [true, true];
        assert_eq!(select_copy(both, [1, 2], Incremental), Some(1));
        assert_eq!(select_copy(both, [2, 1], Incremental), Some(0));
        assert_eq!(select_copy(both, [5, 5], Incremental), Some(0));
        // Wrap-around: 0 is newer than 255.
        assert_eq!(select_copy(both, [255, 0], Incremental), Some(1));
        assert_eq!(select_copy(both, [0, 255], Incremental), Some(0));
        assert_eq!(select_copy(both, [254, 255], Incremental), Some(1));
        assert_eq!(select_copy(both, [1, 255], Incremental), Some(1));
        // One valid copy wins whatever the flags.
        assert_eq!(select_copy([true, false], [0, 9], Incremental), Some(0));
        assert_eq!(select_copy([false, true], [9, 0], Incremental), Some(1));
        assert_eq!(select_copy([false, false], [1, 2], Incremental), None);
        // Boolean (NOR): 0xff (erased) counts as active.
        assert_eq!(select_copy(both, [1, 0], Boolean), Some(0));
        assert_eq!(select_copy(both, [0, 1], Boolean), Some(1));
        assert_eq!(select_copy(both, [0, 0xff], Boolean), Some(1));
        assert_eq!(select_copy(both, [0xff, 1], Boolean), Some(0));
    }

    fn redundant(flags: [u8; 2], vals: [&str; 2]) -> Vec<Vec<u8>> {
        (0..2)
            .map(|i| encode_copy(Layout::Redundant, 64, &env(&[("v", vals[i])]), flags[i]).unwrap())
            .collect()
    }

    #[test]
    fn redundant_reads_newest_and_writes_other() {
        let copies = redundant([3, 4], ["old", "new"]);
        let d = decode(Layout::Redundant, 64, &copies, FlagScheme::Incremental).unwrap();
        assert_eq!(d.current, 1);
        assert_eq!(d.env.as_ref().unwrap().get("v").as_deref(), Some("new"));
        let (target, bytes) = d.next_write(&env(&[("v", "newer")])).unwrap();
        assert_eq!(target, 0);
        assert_eq!(bytes[4], 5);

        // Wrap-around on write: 255 + 1 = 0 and that copy then wins.
        let copies = redundant([255, 254], ["cur", "old"]);
        let d = decode(Layout::Redundant, 64, &copies, FlagScheme::Incremental).unwrap();
        assert_eq!(d.current, 0);
        let (target, bytes) = d.next_write(&env(&[("v", "wrapped")])).unwrap();
        assert_eq!((target, bytes[4]), (1, 0));
        let copies = vec![copies[0].clone(), bytes];
        let d = decode(Layout::Redundant, 64, &copies, FlagScheme::Incremental).unwrap();
        assert_eq!(d.current, 1);
        assert_eq!(d.env.unwrap().get("v").as_deref(), Some("wrapped"));
    }

    #[test]
    fn corrupt_copy_falls_back() {
        let mut copies = redundant([1, 2], ["old", "new"]);
        copies[1][20] ^= 1;
        let d = decode(Layout::Redundant, 64, &copies, FlagScheme::Incremental).unwrap();
        assert_eq!(d.current, 0);
        assert!(!d.copies[1].crc_ok);
        assert_eq!(d.env.as_ref().unwrap().get("v").as_deref(), Some("old"));
        // The next write replaces the corrupt copy, never the good one.
        assert_eq!(d.next_write(&UbootEnv::new()).unwrap().0, 1);
    }

    #[test]
    fn nothing_valid() {
        let mut copies = redundant([7, 2], ["a", "b"]);
        copies[0][0] ^= 1;
        copies[1][0] ^= 1;
        let d = decode(Layout::Redundant, 64, &copies, FlagScheme::Incremental).unwrap();
        assert_eq!((d.current, d.env.is_none()), (0, true));
        // libubootenv: copy 0 counts as current, copy 1 gets its flag + 1.
        let (target, bytes) = d.next_write(&UbootEnv::new()).unwrap();
        assert_eq!((target, bytes[4]), (1, 8));

        let d = decode(
            Layout::Single,
            64,
            &[vec![0xff; 64]],
            FlagScheme::Incremental,
        )
        .unwrap();
        assert!(d.env.is_none());
        assert_eq!(d.next_write(&UbootEnv::new()).unwrap().0, 0);
    }

    #[test]
    fn default_env_text() {
        let text = "# comment\n\nbootcmd=run a; run b\r\nnoeq\n=x\nbaud=115200\nbaud=\nk=v=w\n";
        let e = UbootEnv::parse_text(text);
        assert_eq!(
            pairs(&e),
            [("bootcmd", "run a; run b"), ("k", "v=w")]
                .map(|(n, v)| (n.to_string(), v.to_string()))
        );
    }
}
