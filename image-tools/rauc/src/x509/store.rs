//! The keyring ([`TrustStore`]): certificates from PEM files and OpenSSL hashed
//! directories.

use std::path::Path;

use super::{Cert, X509Error};

/// The trusted certificates of RAUC's `[keyring]`: `path=` (a PEM file) and/or
/// `directory=` (OpenSSL hashed-directory layout).
#[derive(Clone, Debug, Default)]
pub struct TrustStore {
    certs: Vec<Cert>,
}

impl TrustStore {
    /// An empty store.
    pub fn new() -> Self {
        TrustStore::default()
    }

    /// The certificates of a PEM text (for tests and embedded keyrings).
    pub fn from_pem(pem: &[u8]) -> Result<Self, X509Error> {
        let mut store = TrustStore::new();
        store.add_pem(pem, "(PEM data)")?;
        Ok(store)
    }

    /// RAUC's keyring: `path=` and/or `directory=`. Together they must hold at least
    /// one certificate.
    pub fn load(path: Option<&Path>, directory: Option<&Path>) -> Result<Self, X509Error> {
        let mut store = TrustStore::new();
        if let Some(path) = path {
            store.add_pem_file(path)?;
        }
        if let Some(dir) = directory {
            store.add_directory(dir)?;
        }
        if store.is_empty() {
            let origin = match (path, directory) {
                (None, None) => "(neither path nor directory is set)".to_owned(),
                (_, Some(dir)) => dir.display().to_string(),
                (Some(path), None) => path.display().to_string(),
            };
            return Err(X509Error::EmptyKeyring { origin });
        }
        Ok(store)
    }

    /// Adds every certificate of a PEM file; it must hold at least one. Returns the
    /// number added.
    pub fn add_pem_file(&mut self, path: &Path) -> Result<usize, X509Error> {
        let text = std::fs::read(path).map_err(|source| X509Error::Io {
            path: path.to_owned(),
            source,
        })?;
        self.add_pem(&text, &path.display().to_string())
    }

    /// Adds the certificates of an OpenSSL hashed directory: files named `hhhhhhhh.N`
    /// (what `openssl rehash`/`c_rehash` create), each a PEM file with certificates. CRL
    /// files (`hhhhhhhh.rN`) are ignored with a warning (CRL checking is not supported);
    /// other names are ignored, as OpenSSL never looks them up. Unlike OpenSSL, the hash
    /// in the name is not checked against the subject. Returns the number added, which
    /// may be zero (as for OpenSSL, that is not an error by itself).
    pub fn add_directory(&mut self, dir: &Path) -> Result<usize, X509Error> {
        let io = |source| X509Error::Io {
            path: dir.to_owned(),
            source,
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let name = entry.map_err(io)?.file_name();
            if let Some(name) = name.to_str() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        let mut added = 0;
        for name in names {
            match hashed_name_kind(&name) {
                Some(HashedName::Cert) => added += self.add_pem_file(&dir.join(&name))?,
                Some(HashedName::Crl) => {
                    log::warn!(
                        "keyring {}: ignoring CRL {name}: CRL checking is not supported",
                        dir.display()
                    );
                }
                None => log::debug!(
                    "keyring {}: ignoring {name}: not a hashed certificate name",
                    dir.display()
                ),
            }
        }
        if added == 0 {
            log::warn!(
                "keyring directory {} holds no certificate named hhhhhhhh.N \
                 (see openssl rehash)",
                dir.display()
            );
        }
        Ok(added)
    }

    /// Adds every `CERTIFICATE` block of a PEM text; `origin` names it in errors. CRLs
    /// and other blocks are skipped; `TRUSTED CERTIFICATE` blocks are refused.
    pub fn add_pem(&mut self, pem: &[u8], origin: &str) -> Result<usize, X509Error> {
        let keyring = |reason: String| X509Error::Keyring {
            origin: origin.to_owned(),
            reason,
        };
        let mut added = 0;
        for (index, block) in pem_blocks(pem).map_err(keyring)?.into_iter().enumerate() {
            let (label, der) = der::pem::decode_vec(block)
                .map_err(|e| keyring(format!("PEM block {}: {e}", index + 1)))?;
            match label {
                "CERTIFICATE" | "X509 CERTIFICATE" => {
                    let cert = Cert::from_der(&der)
                        .map_err(|e| keyring(format!("certificate {}: {e}", index + 1)))?;
                    if !self.contains(&cert) {
                        self.certs.push(cert);
                    }
                    added += 1;
                }
                "TRUSTED CERTIFICATE" => {
                    return Err(keyring(format!(
                        "PEM block {}: TRUSTED CERTIFICATE (OpenSSL trust settings) is not \
                         supported; store it as a plain CERTIFICATE",
                        index + 1
                    )));
                }
                "X509 CRL" => {
                    log::warn!("keyring {origin}: ignoring a CRL: CRL checking is not supported")
                }
                other => log::debug!("keyring {origin}: ignoring PEM block {other}"),
            }
        }
        if added == 0 {
            return Err(X509Error::EmptyKeyring {
                origin: origin.to_owned(),
            });
        }
        Ok(added)
    }

    /// Adds one certificate.
    pub fn add(&mut self, cert: Cert) {
        if !self.contains(&cert) {
            self.certs.push(cert);
        }
    }

    /// The number of distinct certificates.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether the store holds no certificate.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The certificates, in load order.
    pub fn certificates(&self) -> &[Cert] {
        &self.certs
    }

    /// Whether this exact certificate is in the store.
    pub fn contains(&self, cert: &Cert) -> bool {
        self.certs.iter().any(|c| c == cert)
    }
}

enum HashedName {
    Cert,
    Crl,
}

/// `hhhhhhhh.N` is a certificate, `hhhhhhhh.rN` a CRL (OpenSSL's by_dir lookup).
fn hashed_name_kind(name: &str) -> Option<HashedName> {
    let (hash, suffix) = name.split_once('.')?;
    if hash.len() != 8 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(suffix) {
        Some(HashedName::Cert)
    } else if suffix.strip_prefix('r').is_some_and(digits) {
        Some(HashedName::Crl)
    } else {
        None
    }
}

/// The `-----BEGIN …-----` to `-----END …-----` blocks of a PEM text; text between
/// blocks is ignored, as OpenSSL does.
fn pem_blocks(text: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut blocks = Vec::new();
    let mut start: Option<usize> = None;
    let mut offset = 0;
    for line in text.split_inclusive(|&b| b == b'\n') {
        let trimmed = line.trim_ascii();
        if trimmed.starts_with(b"-----BEGIN ") {
            if start.is_some() {
                return Err("PEM block without END line".to_owned());
            }
            start = Some(offset);
        } else if trimmed.starts_with(b"-----END ") {
            let begin = start.take().ok_or("PEM END line without BEGIN")?;
            let end = offset + line.len();
            blocks.push(text.get(begin..end).unwrap_or_default());
        }
        offset += line.len();
    }
    if start.is_some() {
        return Err("PEM block without END line".to_owned());
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names() {
        assert!(matches!(
            hashed_name_kind("9d66eef0.0"),
            Some(HashedName::Cert)
        ));
        assert!(matches!(
            hashed_name_kind("9D66EEF0.12"),
            Some(HashedName::Cert)
        ));
        assert!(matches!(
            hashed_name_kind("9d66eef0.r0"),
            Some(HashedName::Crl)
        ));
        for name in [
            "ca.pem",
            "9d66eef0",
            "9d66eef0.",
            "9d66eef0.r",
            "9d66eef.0",
            "9d66eefg.0",
        ] {
            assert!(hashed_name_kind(name).is_none(), "{name}");
        }
        assert!(hashed_name_kind("9d66eef0.0.bak").is_none());
    }

    #[test]
    fn pem_block_splitting() {
        let text = b"junk\n-----BEGIN A-----\nQUJD\n-----END A-----\nmore\r\n-----BEGIN B-----\r\nREVG\r\n-----END B-----";
        let blocks = pem_blocks(text).unwrap();
        assert_eq!(blocks.len(), 2);
        assert!(blocks[0].starts_with(b"-----BEGIN A-----"));
        assert!(blocks[0].ends_with(b"-----END A-----\n"));
        assert!(blocks[1].ends_with(b"-----END B-----"));
        assert!(pem_blocks(b"-----BEGIN A-----\nQUJD\n").is_err());
        assert!(pem_blocks(b"-----END A-----\n").is_err());
        assert!(pem_blocks(b"no pem here").unwrap().is_empty());
    }

    #[test]
    fn empty_and_garbage_keyrings() {
        let err = TrustStore::from_pem(b"nothing").unwrap_err();
        assert_eq!(err.to_string(), "keyring (PEM data) holds no certificates");
        let err =
            TrustStore::from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("keyring (PEM data): certificate 1: "),
            "{err}"
        );
        let err = TrustStore::load(None, None).unwrap_err();
        assert!(matches!(err, X509Error::EmptyKeyring { .. }));
        let err = TrustStore::load(Some(Path::new("/nonexistent/keyring.pem")), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read keyring /nonexistent/keyring.pem"
        );
        assert!(std::error::Error::source(&err).is_some(), "{err:?}");
    }
}
