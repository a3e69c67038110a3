//! Signing keys and keyrings: ed25519 key files (PKCS#8 / SPKI PEM, as `openssl genpkey
//! -algorithm ed25519` writes them) and a keyring, a directory of `*.pub` files.

use crate::error::BundleError;
use crate::keyid::KeyId;
use ed25519_dalek::pkcs8::spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, Document, EncodePrivateKey, EncodePublicKey,
    ObjectIdentifier, PrivateKeyInfo, SecretDocument,
};
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

/// The OID of ed25519 keys (RFC 8410).
const ED25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// The PEM block of a key file, checked to be labelled `label`, so that an empty file, a
/// file that is not PEM or a PEM of the other kind of key is named as such (the PEM
/// decoder's own errors do not say it).
fn key_pem<D>(
    path: &Path,
    text: &str,
    label: &str,
    from_pem: impl FnOnce(&str) -> ed25519_dalek::pkcs8::spki::der::Result<(&str, D)>,
) -> Result<D, BundleError> {
    let err = |reason: String| BundleError::Key {
        path: path.into(),
        reason,
    };
    if text.trim().is_empty() {
        return Err(err("key file is empty".into()));
    }
    if !text.contains("-----BEGIN ") {
        return Err(err("not a PEM file (no -----BEGIN line)".into()));
    }
    let (found, doc) = from_pem(text).map_err(|e| err(format!("invalid PEM: {e}")))?;
    if found != label {
        return Err(err(format!("PEM block is {found:?}, expected {label:?}")));
    }
    Ok(doc)
}

/// Refuses a key of another algorithm than ed25519, naming the algorithm found.
fn require_ed25519(path: &Path, alg: &AlgorithmIdentifierRef<'_>) -> Result<(), BundleError> {
    if alg.oid == ED25519_OID {
        return Ok(());
    }
    let name = match alg.oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" => "rsaEncryption",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.2.840.10045.2.1" => "id-ecPublicKey",
        "1.3.101.110" => "X25519",
        "1.3.101.111" => "X448",
        "1.3.101.113" => "Ed448",
        _ => "",
    };
    let curve = alg.parameters_oid().ok().map(|c| {
        let n = match c.to_string().as_str() {
            "1.2.840.10045.3.1.7" => " prime256v1",
            "1.3.132.0.34" => " secp384r1",
            "1.3.132.0.35" => " secp521r1",
            _ => "",
        };
        format!("curve {c}{n}")
    });
    let detail: Vec<String> = [Some(name.to_string()).filter(|n| !n.is_empty()), curve]
        .into_iter()
        .flatten()
        .collect();
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(" ({})", detail.join(", "))
    };
    Err(BundleError::Key {
        path: path.into(),
        reason: format!(
            "unsupported key algorithm {}{detail}: only ed25519 ({ED25519_OID}) keys are accepted",
            alg.oid
        ),
    })
}

/// Reads a secret key file.
pub fn load_secret_key(path: &Path) -> Result<SigningKey, BundleError> {
    let text = read_small(path)?;
    let doc = key_pem(path, &text, "PRIVATE KEY", SecretDocument::from_pem)?;
    let bad = |e: &dyn std::fmt::Display| BundleError::Key {
        path: path.into(),
        reason: format!("not an ed25519 PKCS#8 PEM secret key: {e}"),
    };
    let info = PrivateKeyInfo::try_from(doc.as_bytes()).map_err(|e| bad(&e))?;
    require_ed25519(path, &info.algorithm)?;
    SigningKey::from_pkcs8_der(doc.as_bytes()).map_err(|e| bad(&e))
}

/// Reads a public key file.
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, BundleError> {
    let text = read_small(path)?;
    let doc = key_pem(path, &text, "PUBLIC KEY", Document::from_pem)?;
    let bad = |e: &dyn std::fmt::Display| BundleError::Key {
        path: path.into(),
        reason: format!("not an ed25519 PEM public key: {e}"),
    };
    let spki = SubjectPublicKeyInfoRef::try_from(doc.as_bytes()).map_err(|e| bad(&e))?;
    require_ed25519(path, &spki.algorithm)?;
    VerifyingKey::from_public_key_der(doc.as_bytes()).map_err(|e| bad(&e))
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

    /// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 | openssl pkey -pubout`
    const RSA_PUB: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDq+n1R5T2oPNYe7dsG8s9FfITu
qiCFCHFlsZRtd6qTgKy0DWQoL4vQTLnWXiu6ZJupqkRAL0dHfmQtgvhSWFG7CFRr
4FUTenImlIcWXRLhbq48wR8cpUb4uicD8LPcZauiRGCSUC2UxqJnv6ufojoUdHlk
+9hl1oxu1388NGt5+wIDAQAB
-----END PUBLIC KEY-----
";
    /// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 | openssl pkey -pubout`
    const P256_PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEdBxBy8bBf6gkIGr6DevBmTummDfC
JgLT9lniwTPaoeu/fr7ifQBAlfCi44kyTQsUydppHwoPuDVIb90U/TnJiw==
-----END PUBLIC KEY-----
";

    #[test]
    fn key_file_errors_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_key_pem(&generate().unwrap()).unwrap();
        let cases = [
            (
                "rsa.pub",
                RSA_PUB,
                "unsupported key algorithm 1.2.840.113549.1.1.1 (rsaEncryption): only ed25519 \
                 (1.3.101.112) keys are accepted",
            ),
            (
                "p256.pub",
                P256_PUB,
                "unsupported key algorithm 1.2.840.10045.2.1 (id-ecPublicKey, curve \
                 1.2.840.10045.3.1.7 prime256v1): only ed25519 (1.3.101.112) keys are accepted",
            ),
            ("empty.pub", "", "key file is empty"),
            ("blank.pub", " \n\n", "key file is empty"),
            (
                "garbage.pub",
                "hello world\n",
                "not a PEM file (no -----BEGIN line)",
            ),
            (
                "secret.pub",
                secret.as_str(),
                "PEM block is \"PRIVATE KEY\", expected \"PUBLIC KEY\"",
            ),
        ];
        for (name, text, reason) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let err = load_public_key(&path).unwrap_err().to_string();
            assert_eq!(err, format!("{}: {reason}", path.display()));
            // A keyring holding only that file says the same.
            let ring = tempfile::tempdir().unwrap();
            std::fs::write(ring.path().join(name), text).unwrap();
            let err = Keyring::load(ring.path()).unwrap_err().to_string();
            assert!(err.ends_with(reason), "{err}");
        }
        let path = dir.path().join("empty.key");
        std::fs::write(&path, "").unwrap();
        let err = load_secret_key(&path).unwrap_err().to_string();
        assert_eq!(err, format!("{}: key file is empty", path.display()));
        let path = dir.path().join("public.key");
        std::fs::write(&path, P256_PUB).unwrap();
        let err = load_secret_key(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: PEM block is \"PUBLIC KEY\", expected \"PRIVATE KEY\"",
                path.display()
            )
        );
    }
}
