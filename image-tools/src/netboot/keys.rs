//! The keyring copied into the initramfs: every `*.pub` of a directory (by name), or one key
//! file, each checked to be an ed25519 public key, with the name it gets in
//! `/etc/flipslot/provision-keys/` (a single file not ending in `.pub` gets the suffix, so
//! the agent's directory keyring finds it).

use std::path::Path;

use flipslot_format::keys::{key_id, load_public_key, Keyring};

use super::{io_err, NetbootError};

/// One key file for the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    /// Its file name, ending in `.pub`.
    pub name: String,
    /// Its contents (PEM).
    pub contents: Vec<u8>,
    /// Its key id (hex).
    pub key_id: String,
}

/// Loads the keyring at `path` (a file or a directory).
pub fn load_keyring(path: &Path) -> Result<Vec<KeyFile>, NetbootError> {
    // Checks every key and that there is at least one, with the format crate's messages.
    Keyring::load(path).map_err(NetbootError::Keyring)?;
    let files = if path.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io_err("list keyring", path))? {
            let p = entry.map_err(io_err("list keyring", path))?.path();
            if p.extension().is_some_and(|e| e == "pub") {
                files.push(p);
            }
        }
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for file in files {
        let name =
            file.file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| NetbootError::Input {
                    what: format!("--keyring {}", file.display()),
                    reason: "the file name is not UTF-8".into(),
                })?;
        let name = if name.ends_with(".pub") {
            name.to_string()
        } else {
            format!("{name}.pub")
        };
        let key = load_public_key(&file).map_err(NetbootError::Keyring)?;
        let contents = std::fs::read(&file).map_err(io_err("read key", &file))?;
        out.push(KeyFile {
            name,
            contents,
            key_id: key_id(&key).to_string(),
        });
    }
    Ok(out)
}
