//! GLib key-file syntax, as RAUC's `system.conf` and `manifest.raucm` use it: `[group]`
//! headers, `key=value` lines, `#` comments, the escapes `\s \n \t \r \\`, and lists
//! separated by `;`.
//!
//! Parsing is pure and keeps line numbers, so a caller can name the line of a bad value
//! and list every key it does not know. [`KeyFile::parse`] reads a repeated group or key
//! as GLib (and so RAUC) does: the group is merged and the key keeps its last value.
//! [`KeyFile::parse_unique`] refuses both instead, naming the first and the repeated
//! line. Unlike GLib, a malformed line is always an error (GLib would drop some
//! silently).

use std::fmt;

/// Longest input accepted (a manifest or config larger than this is not one).
pub const MAX_LEN: usize = 1 << 20;

/// A parse or value error, naming the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The text is not key-file syntax.
    #[error("line {line}: {reason}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A value has the wrong form for its key.
    #[error("line {line}: [{group}] {key}: {reason}")]
    Value {
        /// 1-based line number.
        line: usize,
        /// The group name.
        group: String,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A group header, or a key inside one group, is written twice
    /// ([`KeyFile::parse_unique`] only).
    #[error(
        "line {line}: {} (first on line {first})",
        match key {
            Some(k) => format!("[{group}] {k} is set again"),
            None => format!("group [{group}] appears again"),
        }
    )]
    Duplicate {
        /// 1-based line of the repetition.
        line: usize,
        /// 1-based line where the group or key first appears.
        first: usize,
        /// The group name.
        group: String,
        /// The key, or `None` when the group header itself is repeated.
        key: Option<String>,
    },
}

/// One `key=value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, without surrounding whitespace (a locale suffix `key[de]` is kept).
    pub key: String,
    /// The value as written, leading whitespace removed, escapes not yet applied.
    pub raw: String,
    /// 1-based line number.
    pub line: usize,
}

/// One `[group]` with its entries (a repeated group's entries are merged in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The name between the brackets.
    pub name: String,
    /// 1-based line of its first header.
    pub line: usize,
    entries: Vec<Entry>,
}

impl Group {
    /// The entries, one per key (the last occurrence), in first-seen order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry for `key`.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    fn value_error(&self, e: &Entry, reason: impl Into<String>) -> KeyFileError {
        KeyFileError::Value {
            line: e.line,
            group: self.name.clone(),
            key: e.key.clone(),
            reason: reason.into(),
        }
    }

    /// The unescaped string value of `key`.
    pub fn string(&self, key: &str) -> Result<Option<String>, KeyFileError> {
        self.entry(key)
            .map(|e| unescape(&e.raw, None).map_err(|r| self.value_error(e, r)))
            .transpose()
    }

    /// The value of `key` as a boolean (`true`/`false`, `1`/`0`, as GLib reads them).
    pub fn bool(&self, key: &str) -> Result<Option<bool>, KeyFileError> {
        let Some(e) = self.entry(key) else {
            return Ok(None);
        };
        match e.raw.trim_end() {
            "true" | "1" => Ok(Some(true)),
            "false" | "0" => Ok(Some(false)),
            other => Err(self.value_error(e, format!("{other:?} is not true or false"))),
        }
    }

    /// The value of `key` as a decimal integer.
    pub fn int(&self, key: &str) -> Result<Option<i64>, KeyFileError> {
        let Some(e) = self.entry(key) else {
            return Ok(None);
        };
        e.raw
            .trim_end()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| self.value_error(e, format!("{:?} is not an integer", e.raw)))
    }

    /// The value of `key` as a `;`-separated list (a trailing `;` is optional, `\;` is a
    /// literal semicolon, empty items are dropped like GLib does with a trailing one).
    pub fn list(&self, key: &str) -> Result<Option<Vec<String>>, KeyFileError> {
        let Some(e) = self.entry(key) else {
            return Ok(None);
        };
        let mut items = Vec::new();
        let mut cur = String::new();
        let mut chars = e.raw.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(';') => cur.push(';'),
                    Some(n) => {
                        cur.push('\\');
                        cur.push(n);
                    }
                    None => cur.push('\\'),
                },
                ';' => items.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        items.push(cur);
        let mut out = Vec::new();
        for item in items {
            let v = unescape(&item, None).map_err(|r| self.value_error(e, r))?;
            let v = v.trim().to_string();
            if !v.is_empty() {
                out.push(v);
            }
        }
        Ok(Some(out))
    }
}

/// A parsed key file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFile {
    groups: Vec<Group>,
}

impl KeyFile {
    /// Parses key-file text; a repeated group is merged and a repeated key keeps its last
    /// value, as GLib reads them.
    pub fn parse(text: &str) -> Result<KeyFile, KeyFileError> {
        Self::parse_with(text, false)
    }

    /// Parses key-file text and refuses a repeated group header or a key set twice in one
    /// group ([`KeyFileError::Duplicate`]), instead of silently letting the last one win.
    pub fn parse_unique(text: &str) -> Result<KeyFile, KeyFileError> {
        Self::parse_with(text, true)
    }

    fn parse_with(text: &str, unique: bool) -> Result<KeyFile, KeyFileError> {
        if text.len() > MAX_LEN {
            return Err(KeyFileError::Syntax {
                line: 0,
                reason: format!("{} bytes is more than the {MAX_LEN} accepted", text.len()),
            });
        }
        let mut kf = KeyFile::default();
        let mut current: Option<usize> = None;
        for (i, raw_line) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw_line.trim_start();
            let syntax = |reason: String| KeyFileError::Syntax { line, reason };
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if let Some(rest) = l.strip_prefix('[') {
                let rest = rest.trim_end();
                let Some(name) = rest.strip_suffix(']') else {
                    return Err(syntax(format!("group header {l:?} lacks a closing ]")));
                };
                if name.is_empty()
                    || name.contains(['[', ']'])
                    || name.chars().any(char::is_control)
                {
                    return Err(syntax(format!("invalid group name {name:?}")));
                }
                current = Some(match kf.groups.iter().position(|g| g.name == name) {
                    Some(idx) if unique => {
                        return Err(KeyFileError::Duplicate {
                            line,
                            first: kf.groups[idx].line,
                            group: name.to_string(),
                            key: None,
                        })
                    }
                    Some(idx) => idx,
                    None => {
                        kf.groups.push(Group {
                            name: name.to_string(),
                            line,
                            entries: Vec::new(),
                        });
                        kf.groups.len() - 1
                    }
                });
                continue;
            }
            let Some((key, value)) = l.split_once('=') else {
                return Err(syntax(format!(
                    "{l:?} is neither a [group], a key=value line nor a # comment"
                )));
            };
            let key = key.trim_end();
            if key.is_empty() {
                return Err(syntax("a key=value line without a key".into()));
            }
            let Some(gi) = current else {
                return Err(syntax(format!("key {key:?} appears before any [group]")));
            };
            let entry = Entry {
                key: key.to_string(),
                raw: value.trim_start().trim_end_matches('\r').to_string(),
                line,
            };
            let group = &mut kf.groups[gi];
            match group.entries.iter_mut().find(|e| e.key == key) {
                Some(e) if unique => {
                    return Err(KeyFileError::Duplicate {
                        line,
                        first: e.line,
                        group: group.name.clone(),
                        key: Some(key.to_string()),
                    })
                }
                Some(e) => *e = entry,
                None => group.entries.push(entry),
            }
        }
        Ok(kf)
    }

    /// The groups in first-seen order.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// Applies GLib's escapes (`\s \n \t \r \\`); `sep`, if given, may also be escaped.
fn unescape(raw: &str, sep: Option<char>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push(' '),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(c) if Some(c) == sep => out.push(c),
            Some(c) => return Err(format!("invalid escape sequence \\{c}")),
            None => return Err("value ends in a lone backslash".into()),
        }
    }
    Ok(out)
}

impl fmt::Display for KeyFile {
    /// Writes the file back in key-file syntax (values as stored, escapes kept).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.groups.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "[{}]", g.name)?;
            for e in &g.entries {
                writeln!(f, "{}={}", e.key, e.raw)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEM_CONF: &str = "\
# a RAUC system.conf
[system]
compatible=Acme Board v2
bootloader = uboot
bundle-formats=-plain;verity

[keyring]
path=/etc/rauc/ca.cert.pem
check-purpose=codesign
allow-partial-chain=true

[slot.rootfs.0]
device=/dev/mmcblk0p2
bootname=A

[system]
boot-attempts=5
";

    #[test]
    fn parses_groups_keys_and_types() {
        let kf = KeyFile::parse(SYSTEM_CONF).unwrap();
        let names: Vec<_> = kf.groups().iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["system", "keyring", "slot.rootfs.0"]);
        let sys = kf.group("system").unwrap();
        assert_eq!(
            sys.string("compatible").unwrap().as_deref(),
            Some("Acme Board v2")
        );
        assert_eq!(sys.string("bootloader").unwrap().as_deref(), Some("uboot"));
        assert_eq!(sys.int("boot-attempts").unwrap(), Some(5));
        assert_eq!(
            sys.list("bundle-formats").unwrap().unwrap(),
            ["-plain", "verity"]
        );
        let k = kf.group("keyring").unwrap();
        assert_eq!(k.bool("allow-partial-chain").unwrap(), Some(true));
        assert_eq!(k.bool("missing").unwrap(), None);
        assert_eq!(k.entry("check-purpose").unwrap().line, 9);
    }

    #[test]
    fn escapes_lists_and_repeats() {
        let kf = KeyFile::parse(
            "[g]\na=\\sx\\ty\\\\\nb=one;two\\;half;;\nc=1\nc=2\nd = spaced value \n",
        )
        .unwrap();
        let g = kf.group("g").unwrap();
        assert_eq!(g.string("a").unwrap().unwrap(), " x\ty\\");
        assert_eq!(g.list("b").unwrap().unwrap(), ["one", "two;half"]);
        assert_eq!(g.int("c").unwrap(), Some(2));
        assert_eq!(g.entries().len(), 4);
        assert_eq!(g.string("d").unwrap().unwrap(), "spaced value ");
    }

    #[test]
    fn parse_unique_refuses_repeated_groups_and_keys() {
        // SYSTEM_CONF repeats [system] (lines 2 and 16).
        let e = KeyFile::parse_unique(SYSTEM_CONF).unwrap_err();
        assert_eq!(
            e,
            KeyFileError::Duplicate {
                line: 16,
                first: 2,
                group: "system".into(),
                key: None,
            }
        );
        assert_eq!(
            e.to_string(),
            "line 16: group [system] appears again (first on line 2)"
        );
        let e = KeyFile::parse_unique("[g]\na=1\n\n# again\n a = 2\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 5: [g] a is set again (first on line 2)"
        );
        // The same key in two groups, and locale variants, are different keys.
        let kf = KeyFile::parse_unique("[g]\na=1\na[de]=2\n[h]\na=3\n").unwrap();
        assert_eq!(kf.group("g").unwrap().entries().len(), 2);
        // parse() still merges as GLib does.
        assert!(KeyFile::parse(SYSTEM_CONF).is_ok());
    }

    #[test]
    fn errors_name_the_line() {
        let e = KeyFile::parse("[g]\nno equals here\n").unwrap_err();
        assert!(e.to_string().starts_with("line 2:"), "{e}");
        let e = KeyFile::parse("a=b\n").unwrap_err();
        assert!(e.to_string().contains("before any [group]"), "{e}");
        let e = KeyFile::parse("[g\n").unwrap_err();
        assert!(e.to_string().contains("closing ]"), "{e}");
        let kf = KeyFile::parse("[g]\nn=x1\nb=maybe\ns=bad\\q\n").unwrap();
        let g = kf.group("g").unwrap();
        let e = g.int("n").unwrap_err().to_string();
        assert!(e.contains("line 2: [g] n:"), "{e}");
        assert!(g.bool("b").unwrap_err().to_string().contains("line 3"));
        assert!(g.string("s").unwrap_err().to_string().contains("\\q"));
        let big = "#".repeat(MAX_LEN + 1);
        assert!(KeyFile::parse(&big).is_err());
    }

    #[test]
    fn display_round_trips() {
        let kf = KeyFile::parse(SYSTEM_CONF).unwrap();
        let again = KeyFile::parse(&kf.to_string()).unwrap();
        assert_eq!(kf.groups().len(), again.groups().len());
        for g in kf.groups() {
            let h = again.group(&g.name).unwrap();
            for e in g.entries() {
                assert_eq!(h.entry(&e.key).unwrap().raw, e.raw);
            }
        }
    }
}
