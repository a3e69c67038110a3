//! Signing keys and keyrings: ed25519 key files (PKCS#8 / SPKI PEM, as `openssl genpkey
//! -algorithm ed25519` writes them) and a keyring, a directory of `*.pub` files.

use crate::error::BundleError;
use crate::keyid::KeyId;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Largest key file read.
const MAX_KEY_FILE: u64 = 16 * 1024;
/// Most keys a keyring directory may hold.
const MAX_KEYRING_KEYS: usize = 256;

/// The key id of a public key.
pub fn key_id(key: &VerifyingKey) -> KeyId {
    let h = Sha256::digest(key.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[..8]);
    KeyId(id)
}

/// Makes a new key pair from the operating system's random source.
pub fn generate() -> Result<SigningKey, BundleError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| BundleError::Key {
        path: PathBuf::from("(random source)"),
        reason: format!("cannot get random bytes: {e}"),
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// PEM text of a secret key (PKCS#8).
pub fn secret_key_pem(key: &SigningKey) -> Result<String, BundleError> {
    key.to_pkcs8_pem(Default::default())
        .map(|z| z.to_string())
        .map_err(|e| BundleError::Key {
            path: PathBuf::from("(new key)"),
            reason: format!("cannot encode secret key: {e}"),
        })
}

/// PEM text of a public key (SubjectPublicKeyInfo).
pub fn public_key_pem(key: &VerifyingKey) -> Result<String, BundleError> {
    key.to_public_key_pem(Default::default())
        .map_err(|e| BundleError::Key {
            path: PathBuf::from("(new key)"),
            reason: format!("cannot encode public key: {e}"),
        })
}

fn read_small(path: &Path) -> Result<String, BundleError> {
    let meta =
        std::fs::metadata(path).map_err(|e| BundleError::io(path.display().to_string(), e))?;
    if meta.len() > MAX_KEY_FILE {
        return Err(BundleError::Key {
            path: path.into(),
            reason: format!("key file is {} bytes, more than {MAX_KEY_FILE}", meta.len()),
        });
    }
    std::fs::read_to_string(path).map_err(|e| BundleError::io(path.display().to_string(), e))
}

/// Reads a secret key file.
pub fn load_secret_key(path: &Path) -> Result<SigningKey, BundleError> {
    let text = read_small(path)?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| BundleError::Key {
        path: path.into(),
        reason: format!("not an ed25519 PKCS#8 PEM secret key: {e}"),
    })
}

/// Reads a public key file.
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, BundleError> {
    let text = read_small(path)?;
    VerifyingKey::from_public_key_pem(&text).map_err(|e| BundleError::Key {
        path: path.into(),
        reason: format!("not an ed25519 PEM public key: {e}"),
    })
}

/// A set of trusted public keys, looked up by key id.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: BTreeMap<KeyId, (VerifyingKey, PathBuf)>,
}

impl Keyring {
    /// A keyring of the given keys (the path is only used in messages).
    pub fn from_keys(keys: impl IntoIterator<Item = (VerifyingKey, PathBuf)>) -> Keyring {
        Keyring {
            keys: keys
                .into_iter()
                .map(|(k, p)| (key_id(&k), (k, p)))
                .collect(),
        }
    }

    /// Loads every `*.pub` file of a directory, or a single public key file.
    /// An unreadable key file or an empty keyring is an error naming the path.
    pub fn load(path: &Path) -> Result<Keyring, BundleError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| BundleError::io(format!("keyring {}", path.display()), e))?;
        let mut files = Vec::new();
        if meta.is_dir() {
            let rd = std::fs::read_dir(path)
                .map_err(|e| BundleError::io(format!("keyring {}", path.display()), e))?;
            for entry in rd {
                let entry =
                    entry.map_err(|e| BundleError::io(format!("keyring {}", path.display()), e))?;
                let p = entry.path();
                if p.extension().is_some_and(|e| e == "pub") {
                    files.push(p);
                }
            }
            files.sort();
        } else {
            files.push(path.to_path_buf());
        }
        if files.len() > MAX_KEYRING_KEYS {
            return Err(BundleError::Key {
                path: path.into(),
                reason: format!("more than {MAX_KEYRING_KEYS} keys"),
            });
        }
        let mut keys = Vec::new();
        for f in files {
            let k = load_public_key(&f)?;
            keys.push((k, f));
        }
        if keys.is_empty() {
            return Err(BundleError::Key {
                path: path.into(),
                reason: "keyring holds no *.pub key files".into(),
            });
        }
        Ok(Keyring::from_keys(keys))
    }

    /// The key with this id.
    pub fn get(&self, id: &KeyId) -> Option<&VerifyingKey> {
        self.keys.get(id).map(|(k, _)| k)
    }

    /// Where the key with this id came from.
    pub fn origin(&self, id: &KeyId) -> Option<&Path> {
        self.keys.get(id).map(|(_, p)| p.as_path())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the keyring is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let sk = generate().unwrap();
        let pk = sk.verifying_key();
        std::fs::write(dir.path().join("a.key"), secret_key_pem(&sk).unwrap()).unwrap();
        std::fs::write(dir.path().join("a.pub"), public_key_pem(&pk).unwrap()).unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        let back = load_secret_key(&dir.path().join("a.key")).unwrap();
        assert_eq!(back.to_bytes(), sk.to_bytes());
        let ring = Keyring::load(dir.path()).unwrap();
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.get(&key_id(&pk)), Some(&pk));
    }

    #[test]
    fn bad_key_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.pub"), "garbage").unwrap();
        let err = Keyring::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bad.pub"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = Keyring::load(empty.path()).unwrap_err().to_string();
        assert!(err.contains("no *.pub"), "{err}");
    }
}
