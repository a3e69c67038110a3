//! `fw_env.config`: where the U-Boot environment lives, parsed like libubootenv does.
//!
//! One line per copy (one line: single environment, two lines: redundant):
//!
//! ```text
//! # device        offset    envsize   [sectorsize [sectors]]
//! /dev/mmcblk0    0x3e0000  0x20000
//! /dev/mmcblk0    0x400000  0x20000
//! ```
//!
//! As in libubootenv (which reads the line with `sscanf("%ms %lli %zx %zx %lx")`), the
//! offset is a C integer (`0x` hex, leading `0` octal, else decimal; negative counts back
//! from the end of a block device) while the sizes are always hexadecimal, with or without
//! `0x`: `4000` means 16 KiB. Lines starting with `#` and blank lines are skipped, and so is
//! anything from a word starting with `#`. Unlike libubootenv, a malformed or third device
//! line is an error rather than silently skipped. MTD and UBI devices (`/dev/mtd*`,
//! `/dev/ubi*`) are rejected: their erase semantics are not implemented.

use std::path::{Path, PathBuf};

use super::{Layout, UbootEnvError, MAX_ENV_SIZE};
use crate::host::paths::Root;

/// The largest `fw_env.config` read.
pub const MAX_CONFIG_SIZE: u64 = 64 * 1024;

/// One environment copy: a device or file, an offset and a size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvDevice {
    /// The device or file (an absolute host path, or resolved under a root).
    pub path: PathBuf,
    /// Byte offset; negative counts back from the end of a block device.
    pub offset: i64,
    /// Bytes of the copy (header included).
    pub size: usize,
    /// Erase sector size (MTD only: parsed, unused).
    pub sector_size: Option<u64>,
    /// Number of erase sectors (MTD only: parsed, unused).
    pub sectors: Option<u64>,
    /// The 1-based config line it comes from.
    pub line: usize,
}

/// A parsed `fw_env.config`: one or two devices of equal size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwEnvConfig {
    /// The config file, for messages.
    pub origin: PathBuf,
    /// One device (single) or two (redundant).
    pub devices: Vec<EnvDevice>,
}

/// A C integer as `strtoll(s, NULL, 0)` reads a whole token: sign, then `0x` hex, `0` octal
/// or decimal.
fn parse_c_int(token: &str) -> Option<i64> {
    let (negative, rest) = match token.as_bytes().first()? {
        b'-' => (true, &token[1..]),
        b'+' => (false, &token[1..]),
        _ => (false, token),
    };
    let (digits, radix) =
        if let Some(hex) = rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
            (hex, 16)
        } else if rest.len() > 1 && rest.starts_with('0') {
            (&rest[1..], 8)
        } else {
            (rest, 10)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// A hexadecimal token as `%zx` reads it, with or without `0x`.
fn parse_hex(token: &str) -> Option<u64> {
    let digits = token
        .strip_prefix("0x")
        .or_else(|| token.strip_prefix("0X"))
        .unwrap_or(token);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

fn is_mtd_or_ubi(path: &str) -> bool {
    path.starts_with("/dev/mtd") || path.starts_with("/dev/ubi")
}

impl FwEnvConfig {
    /// Parses the text of the config at `origin` (named in errors).
    pub fn parse(text: &str, origin: &Path) -> Result<Self, UbootEnvError> {
        let file = origin.display().to_string();
        let err = |line: usize, message: String| UbootEnvError::Config {
            file: file.clone(),
            line,
            message,
        };
        let mut devices: Vec<EnvDevice> = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let words: Vec<&str> = raw
                .split_whitespace()
                .take_while(|w| !w.starts_with('#'))
                .collect();
            if words.is_empty() {
                continue;
            }
            if words.len() < 3 {
                return Err(err(
                    line,
                    "expected `device offset envsize [sectorsize [sectors]]`".into(),
                ));
            }
            if words.len() > 6 {
                return Err(err(line, format!("unexpected {:?}", words[6])));
            }
            if devices.len() == 2 {
                return Err(err(
                    line,
                    "a third environment device (at most two: a redundant pair)".into(),
                ));
            }
            let path = words[0];
            if is_mtd_or_ubi(path) {
                return Err(err(
                    line,
                    format!("{path}: MTD and UBI devices are not supported yet"),
                ));
            }
            if !path.starts_with('/') {
                return Err(err(
                    line,
                    format!("{path}: the device must be an absolute path"),
                ));
            }
            let offset = parse_c_int(words[1]).ok_or_else(|| {
                err(
                    line,
                    format!(
                        "offset {:?} is not a number (0x hex, 0 octal or decimal)",
                        words[1]
                    ),
                )
            })?;
            let size = parse_hex(words[2])
                .ok_or_else(|| err(line, format!("envsize {:?} is not a hex number", words[2])))?;
            let size = usize::try_from(size)
                .ok()
                .filter(|s| *s <= MAX_ENV_SIZE)
                .ok_or_else(|| {
                    err(
                        line,
                        format!(
                            "envsize {} exceeds the limit of {MAX_ENV_SIZE:#x}",
                            words[2]
                        ),
                    )
                })?;
            if size == 0 {
                return Err(err(line, "envsize is zero".into()));
            }
            let hex_field = |i: usize, what: &str| -> Result<Option<u64>, UbootEnvError> {
                words
                    .get(i)
                    .map(|w| {
                        parse_hex(w)
                            .ok_or_else(|| err(line, format!("{what} {w:?} is not a hex number")))
                    })
                    .transpose()
            };
            let sector_size = hex_field(3, "sectorsize")?;
            let sectors = hex_field(4, "sectors")?;
            if let Some(w) = words.get(5) {
                parse_c_int(w).ok_or_else(|| err(line, format!("{w:?} is not a number")))?;
            }
            if let Some(first) = devices.first() {
                if first.size != size {
                    return Err(err(
                        line,
                        format!(
                            "envsize {size:#x} differs from {:#x} on line {}",
                            first.size, first.line
                        ),
                    ));
                }
            }
            devices.push(EnvDevice {
                path: PathBuf::from(path),
                offset,
                size,
                sector_size,
                sectors,
                line,
            });
        }
        let Some(first) = devices.first() else {
            return Err(UbootEnvError::NoDevice { file });
        };
        let layout = if devices.len() == 2 {
            Layout::Redundant
        } else {
            Layout::Single
        };
        layout
            .check_size(first.size)
            .map_err(|e| err(first.line, e.to_string()))?;
        Ok(FwEnvConfig {
            origin: origin.to_path_buf(),
            devices,
        })
    }

    /// Single or redundant.
    pub fn layout(&self) -> Layout {
        if self.devices.len() == 2 {
            Layout::Redundant
        } else {
            Layout::Single
        }
    }

    /// Bytes per copy.
    pub fn env_size(&self) -> usize {
        self.devices.first().map_or(0, |d| d.size)
    }

    /// The same config with every device path resolved under `root`.
    pub fn resolved(&self, root: &Root) -> FwEnvConfig {
        let mut cfg = self.clone();
        for d in &mut cfg.devices {
            d.path = root.resolve(&d.path);
        }
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FwEnvConfig, UbootEnvError> {
        FwEnvConfig::parse(text, Path::new("/etc/fw_env.config"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn single_and_redundant() {
        let c = parse("# MMC\n/dev/mmcblk0 0x3e0000 0x20000\n").unwrap();
        assert_eq!(c.layout(), Layout::Single);
        assert_eq!(c.env_size(), 0x20000);
        assert_eq!(c.devices[0].path, PathBuf::from("/dev/mmcblk0"));
        assert_eq!(c.devices[0].offset, 0x3e0000);
        assert_eq!(c.devices[0].line, 2);

        let c = parse(
            "\n  # indented comment\n/dev/mmcblk0 4063232 4000 200 10   # trailing\n\
             /dev/mmcblk0\t-0x4000\t0x4000\n",
        )
        .unwrap();
        assert_eq!(c.layout(), Layout::Redundant);
        assert_eq!(c.devices[0].offset, 4_063_232);
        assert_eq!(c.devices[0].size, 0x4000, "sizes are hex without 0x too");
        assert_eq!(c.devices[0].sector_size, Some(0x200));
        assert_eq!(c.devices[0].sectors, Some(0x10));
        assert_eq!(c.devices[1].offset, -0x4000);
        assert_eq!(c.devices[1].line, 4);
    }

    #[test]
    fn numbers_like_sscanf() {
        assert_eq!(parse_c_int("0"), Some(0));
        assert_eq!(parse_c_int("010"), Some(8));
        assert_eq!(parse_c_int("0X1f"), Some(31));
        assert_eq!(parse_c_int("-0x10"), Some(-16));
        assert_eq!(parse_c_int("+12"), Some(12));
        assert_eq!(parse_c_int("-9223372036854775808"), Some(i64::MIN));
        for bad in ["", "-", "0x", "08", "12a", "0x1g", "9223372036854775808"] {
            assert_eq!(parse_c_int(bad), None, "{bad}");
        }
        assert_eq!(parse_hex("4000"), Some(0x4000));
        assert_eq!(parse_hex("0x4000"), Some(0x4000));
        assert_eq!(parse_hex("16384"), Some(0x16384));
        for bad in ["", "0x", "-1", "g", "ffffffffffffffffff"] {
            assert_eq!(parse_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = err("\n/dev/sda 0 zz\n");
        assert!(e.starts_with("/etc/fw_env.config:2: "), "{e}");
        assert!(e.contains("envsize") && e.contains("zz"), "{e}");
        let e = err("/dev/sda 0x10\n");
        assert!(e.contains(":1:") && e.contains("expected"), "{e}");
        let e = err("/dev/sda 1.5 0x100\n");
        assert!(e.contains("offset"), "{e}");
        let e = err("/dev/sda 0 0x100\n/dev/sda 0x100 0x200\n");
        assert!(
            e.contains(":2:") && e.contains("differs") && e.contains("line 1"),
            "{e}"
        );
        let e = err("/dev/a 0 0x100\n/dev/b 0 0x100\n/dev/c 0 0x100\n");
        assert!(e.contains(":3:") && e.contains("third"), "{e}");
        let e = err("/dev/mtd1 0 0x10000\n");
        assert!(e.contains("not supported yet"), "{e}");
        let e = err("/dev/ubi0:env 0 0x10000\n");
        assert!(e.contains("not supported yet"), "{e}");
        let e = err("env.bin 0 0x100\n");
        assert!(e.contains("absolute"), "{e}");
        let e = err("/dev/sda 0 0x200000\n");
        assert!(e.contains("limit"), "{e}");
        let e = err("/dev/sda 0 0\n");
        assert!(e.contains("zero"), "{e}");
        let e = err("/dev/sda 0 4\n");
        assert!(e.contains(":1:") && e.contains("too small"), "{e}");
        let e = err("/dev/sda 0 100 1 2 3 4\n");
        assert!(e.contains("unexpected"), "{e}");
        let e = err("/dev/sda 0 100 xx\n");
        assert!(e.contains("sectorsize"), "{e}");
        let e = err("# nothing\n\n");
        assert_eq!(e, "/etc/fw_env.config: no environment device configured");
    }

    #[test]
    fn resolves_under_root() {
        let c = parse("/dev/mmcblk0 0 0x100\n").unwrap();
        let r = c.resolved(&Root::new("/tmp/root"));
        assert_eq!(r.devices[0].path, PathBuf::from("/tmp/root/dev/mmcblk0"));
    }
}
