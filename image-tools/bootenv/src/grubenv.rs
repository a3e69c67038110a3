//! The GRUB environment block format, byte compatible with `grub-editenv`.
//!
//! Layout (GRUB's `lib/envblk.c`): the header `# GRUB Environment Block\n`, then lines,
//! then `#` padding up to the block size (1024 bytes normally; the file size is the block
//! size). A line starting with `#` is a comment (`grub-editenv create` writes a warning
//! comment); any other line is `name=value\n`, where a backslash and a newline in the value
//! are written with a backslash in front. GRUB appends new variables after the last line,
//! changes values in place and removes deleted lines; this codec does the same, so
//! parse → set → encode produces the bytes `grub-editenv set` would.
//!
//! Pure: no I/O. Non-UTF-8 names or values are rejected.

/// The header every block starts with.
pub const HEADER: &str = "# GRUB Environment Block\n";

/// The block size GRUB creates.
pub const DEFAULT_BLOCK_SIZE: usize = 1024;

/// Errors from decoding, editing or encoding an environment block.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrubEnvError {
    /// The block does not start with [`HEADER`].
    #[error("not a grub environment block: missing header \"# GRUB Environment Block\"")]
    MissingHeader,
    /// A variable line has no `=` before its end.
    #[error("malformed grubenv line at byte {offset}: no '=' in variable line")]
    MissingEquals {
        /// Byte offset of the line in the block.
        offset: usize,
    },
    /// A variable line runs into the end of the block without a newline.
    #[error("malformed grubenv line at byte {offset}: variable not terminated by a newline")]
    Unterminated {
        /// Byte offset of the line in the block.
        offset: usize,
    },
    /// The padding at the end contains something other than `#`.
    #[error("malformed grubenv padding at byte {offset}: expected only '#'")]
    BadPadding {
        /// Byte offset of the padding in the block.
        offset: usize,
    },
    /// A name, value or comment is not UTF-8.
    #[error("grubenv line at byte {offset} is not valid utf-8")]
    NotUtf8 {
        /// Byte offset of the line in the block.
        offset: usize,
    },
    /// A variable name cannot be stored.
    #[error("invalid grubenv variable name {name:?}: must be non-empty, not start with '#', and contain no '=', '\\' or newline")]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// The variables do not fit into the block.
    #[error("grubenv variables need {needed} bytes but the block holds {available}")]
    TooLarge {
        /// Bytes needed for header and lines.
        needed: usize,
        /// The block size.
        available: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// A `#` line, kept verbatim (without its newline).
    Comment(String),
    /// `name=value`, value unescaped.
    Var { name: String, value: String },
}

/// A decoded environment block: its lines in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrubEnv {
    lines: Vec<Line>,
}

/// Index just past the end of the line starting at `start`, following GRUB's
/// `find_next_line`: a backslash escapes the next byte; `None` if no newline ends it.
fn line_end(block: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    while i < block.len() {
        match block[i] {
            b'\\' => i += 2,
            b'\n' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn utf8(bytes: &[u8], offset: usize) -> Result<String, GrubEnvError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| GrubEnvError::NotUtf8 { offset })
}

fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b == b'\\' {
            if let Some(&next) = bytes.next() {
                out.push(next);
            }
        } else {
            out.push(b);
        }
    }
    out
}

fn escape_into(value: &str, out: &mut Vec<u8>) {
    for &b in value.as_bytes() {
        if b == b'\\' || b == b'\n' {
            out.push(b'\\');
        }
        out.push(b);
    }
}

fn check_name(name: &str) -> Result<(), GrubEnvError> {
    let bad = name.is_empty() || name.starts_with('#') || name.contains(['=', '\\', '\n']);
    if bad {
        return Err(GrubEnvError::InvalidName {
            name: name.to_string(),
        });
    }
    Ok(())
}

impl GrubEnv {
    /// An empty environment (no variables, no comments).
    pub fn new() -> Self {
        GrubEnv::default()
    }

    /// Decodes a block (the whole grubenv file).
    pub fn parse(block: &[u8]) -> Result<GrubEnv, GrubEnvError> {
        let body = block
            .strip_prefix(HEADER.as_bytes())
            .ok_or(GrubEnvError::MissingHeader)?;
        let base = HEADER.len();
        let mut lines = Vec::new();
        let mut pos = 0;
        while pos < body.len() {
            let offset = base + pos;
            let end = line_end(body, pos);
            if body[pos] == b'#' {
                match end {
                    Some(end) => {
                        lines.push(Line::Comment(utf8(&body[pos..end - 1], offset)?));
                        pos = end;
                    }
                    None => {
                        // The padding: the rest of the block.
                        if let Some(bad) = body[pos..].iter().position(|&b| b != b'#') {
                            return Err(GrubEnvError::BadPadding {
                                offset: offset + bad,
                            });
                        }
                        break;
                    }
                }
                continue;
            }
            let end = end.ok_or(GrubEnvError::Unterminated { offset })?;
            let line = &body[pos..end - 1];
            let eq = line
                .iter()
                .position(|&b| b == b'=')
                .filter(|&eq| !line[..eq].contains(&b'\n'))
                .ok_or(GrubEnvError::MissingEquals { offset })?;
            lines.push(Line::Var {
                name: utf8(&line[..eq], offset)?,
                value: utf8(&unescape(&line[eq + 1..]), offset)?,
            });
            pos = end;
        }
        Ok(GrubEnv { lines })
    }

    /// The value of `name`; with duplicates, the last one (what GRUB's `load_env` ends with).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars()
            .filter(|(n, _)| *n == name)
            .last()
            .map(|(_, v)| v)
    }

    /// All variables in block order (duplicates included).
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.lines.iter().filter_map(|l| match l {
            Line::Var { name, value } => Some((name.as_str(), value.as_str())),
            Line::Comment(_) => None,
        })
    }

    /// Sets `name` in place if present (dropping any later duplicates), else appends it.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), GrubEnvError> {
        check_name(name)?;
        let mut found = false;
        self.lines.retain_mut(|l| match l {
            Line::Var { name: n, value: v } if n == name => {
                if found {
                    return false;
                }
                found = true;
                *v = value.to_string();
                true
            }
            _ => true,
        });
        if !found {
            self.lines.push(Line::Var {
                name: name.to_string(),
                value: value.to_string(),
            });
        }
        Ok(())
    }

    /// Removes every occurrence of `name`; returns whether there was one.
    pub fn unset(&mut self, name: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|l| !matches!(l, Line::Var { name: n, .. } if n == name));
        self.lines.len() != before
    }

    /// Header and lines, without padding.
    fn encode_unpadded(&self) -> Vec<u8> {
        let mut out = HEADER.as_bytes().to_vec();
        for line in &self.lines {
            match line {
                Line::Comment(text) => out.extend_from_slice(text.as_bytes()),
                Line::Var { name, value } => {
                    out.extend_from_slice(name.as_bytes());
                    out.push(b'=');
                    escape_into(value, &mut out);
                }
            }
            out.push(b'\n');
        }
        out
    }

    /// Bytes needed without padding (the smallest block that holds this environment).
    pub fn encoded_len(&self) -> usize {
        self.encode_unpadded().len()
    }

    /// Encodes into exactly `block_size` bytes, padded with `#`.
    pub fn encode(&self, block_size: usize) -> Result<Vec<u8>, GrubEnvError> {
        let mut out = self.encode_unpadded();
        if out.len() > block_size {
            return Err(GrubEnvError::TooLarge {
                needed: out.len(),
                available: block_size,
            });
        }
        out.resize(block_size, b'#');
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WARNING: &str = "# WARNING: Do not edit this file by tools other than grub-editenv!!!\n";

    fn block(body: &str, size: usize) -> Vec<u8> {
        let mut b = format!("{HEADER}{body}").into_bytes();
        assert!(b.len() <= size);
        b.resize(size, b'#');
        b
    }

    #[test]
    fn parses_grub_editenv_output() {
        // Bytes as written by Debian's grub-editenv 2.12 after
        // `create` and `set ORDER="A B" A_OK=1 'X=a\b' $'NL=line1\nline2'`.
        let b = block(
            &format!("{WARNING}ORDER=A B\nA_OK=1\nX=a\\\\b\nNL=line1\\\nline2\n"),
            1024,
        );
        let env = GrubEnv::parse(&b).unwrap();
        assert_eq!(env.get("ORDER"), Some("A B"));
        assert_eq!(env.get("A_OK"), Some("1"));
        assert_eq!(env.get("X"), Some("a\\b"));
        assert_eq!(env.get("NL"), Some("line1\nline2"));
        assert_eq!(env.get("B_OK"), None);
        assert_eq!(
            env.vars().map(|(n, _)| n).collect::<Vec<_>>(),
            vec!["ORDER", "A_OK", "X", "NL"]
        );
        // Byte-exact round trip, comment included.
        assert_eq!(env.encode(1024).unwrap(), b);
    }

    #[test]
    fn empty_block() {
        let b = block("", 1024);
        let env = GrubEnv::parse(&b).unwrap();
        assert_eq!(env.vars().count(), 0);
        assert_eq!(env, GrubEnv::new());
        assert_eq!(GrubEnv::new().encode(1024).unwrap(), b);
        assert_eq!(GrubEnv::new().encoded_len(), HEADER.len());
    }

    #[test]
    fn full_block_without_padding() {
        let mut env = GrubEnv::new();
        env.set("A", "xyz").unwrap();
        let size = env.encoded_len();
        let b = env.encode(size).unwrap();
        assert_eq!(b.len(), size);
        assert_eq!(b.last(), Some(&b'\n'));
        assert_eq!(GrubEnv::parse(&b).unwrap(), env);
    }

    #[test]
    fn edits_like_grub_editenv() {
        let b = block(&format!("{WARNING}ORDER=A B\nA_OK=1\nB_OK=1\n"), 1024);
        let mut env = GrubEnv::parse(&b).unwrap();
        env.set("ORDER", "B A").unwrap(); // in place
        env.set("A_TRY", "0").unwrap(); // appended
        assert!(env.unset("B_OK"));
        assert!(!env.unset("B_OK"));
        let expected = block(&format!("{WARNING}ORDER=B A\nA_OK=1\nA_TRY=0\n"), 1024);
        assert_eq!(env.encode(1024).unwrap(), expected);
    }

    #[test]
    fn duplicates() {
        let b = block("X=1\nY=2\nX=3\n", 1024);
        let mut env = GrubEnv::parse(&b).unwrap();
        assert_eq!(env.get("X"), Some("3"));
        env.set("X", "4").unwrap();
        assert_eq!(env.encode(1024).unwrap(), block("X=4\nY=2\n", 1024));
        let mut env = GrubEnv::parse(&b).unwrap();
        assert!(env.unset("X"));
        assert_eq!(env.get("X"), None);
    }

    #[test]
    fn escapes_backslash_and_newline() {
        let mut env = GrubEnv::new();
        env.set("P", "C:\\dir with space\\").unwrap();
        env.set("N", "a\nb\\\n").unwrap();
        env.set("E", "").unwrap();
        let b = env.encode(256).unwrap();
        let text = String::from_utf8(b.clone()).unwrap();
        assert!(text.starts_with(&format!(
            "{HEADER}P=C:\\\\dir with space\\\\\nN=a\\\nb\\\\\\\n\nE=\n#"
        )));
        let back = GrubEnv::parse(&b).unwrap();
        assert_eq!(back.get("P"), Some("C:\\dir with space\\"));
        assert_eq!(back.get("N"), Some("a\nb\\\n"));
        assert_eq!(back.get("E"), Some(""));
    }

    #[test]
    fn value_with_equals_and_hash() {
        let mut env = GrubEnv::new();
        env.set("K", "a=b#c").unwrap();
        env.set("H", "###").unwrap();
        let back = GrubEnv::parse(&env.encode(128).unwrap()).unwrap();
        assert_eq!(back.get("K"), Some("a=b#c"));
        assert_eq!(back.get("H"), Some("###"));
    }

    #[test]
    fn too_large() {
        let mut env = GrubEnv::new();
        env.set("BIG", &"x".repeat(1000)).unwrap();
        let needed = HEADER.len() + 4 + 1000 + 1;
        assert_eq!(env.encoded_len(), needed);
        let e = env.encode(1024).unwrap_err();
        assert_eq!(
            e,
            GrubEnvError::TooLarge {
                needed,
                available: 1024
            }
        );
        assert!(e.to_string().contains(&needed.to_string()) && e.to_string().contains("1024"));
        assert_eq!(env.encode(needed).unwrap().len(), needed);
    }

    #[test]
    fn invalid_names() {
        let mut env = GrubEnv::new();
        for name in ["", "#x", "a=b", "a\nb", "a\\b"] {
            let e = env.set(name, "v").unwrap_err();
            assert!(matches!(e, GrubEnvError::InvalidName { .. }), "{name:?}");
        }
        assert_eq!(env, GrubEnv::new());
    }

    #[test]
    fn malformed_blocks() {
        assert_eq!(GrubEnv::parse(b""), Err(GrubEnvError::MissingHeader));
        assert_eq!(
            GrubEnv::parse(b"# GRUB Environment\n####"),
            Err(GrubEnvError::MissingHeader)
        );
        let mut b = block("X=1\n", 64);
        b[HEADER.len() + 4..].fill(b'x');
        assert!(matches!(
            GrubEnv::parse(&b),
            Err(GrubEnvError::Unterminated { .. })
        ));
        let b = block("NOEQUALS\n", 64);
        assert_eq!(
            GrubEnv::parse(&b),
            Err(GrubEnvError::MissingEquals {
                offset: HEADER.len()
            })
        );
        let mut b = block("X=1\n", 64);
        b[60] = b'!';
        assert_eq!(
            GrubEnv::parse(&b),
            Err(GrubEnvError::BadPadding { offset: 60 })
        );
        let mut b = block("X=1\n", 64);
        b[HEADER.len() + 2] = 0xff;
        let e = GrubEnv::parse(&b).unwrap_err();
        assert_eq!(
            e,
            GrubEnvError::NotUtf8 {
                offset: HEADER.len()
            }
        );
        assert!(e.to_string().contains("utf-8"));
        // A backslash escaping the last byte of the block.
        let mut b = block("", 40);
        let n = b.len();
        b[HEADER.len()..].fill(b'y');
        b[n - 1] = b'\\';
        assert!(GrubEnv::parse(&b).is_err());
    }

    #[test]
    fn comment_with_padding_like_text_is_kept() {
        let b = block("## not padding\nX=1\n", 128);
        let env = GrubEnv::parse(&b).unwrap();
        assert_eq!(env.get("X"), Some("1"));
        assert_eq!(env.encode(128).unwrap(), b);
    }
}
