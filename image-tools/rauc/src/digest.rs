//! The digest algorithms a RAUC signature may use (SHA-256, SHA-384, SHA-512) and an
//! incremental hasher over them. Shared by the CMS check ([`crate::cms`]), the X.509
//! signature checks ([`crate::x509`]) and plain payload hashing ([`crate::plain`]).

use der::asn1::ObjectIdentifier;
use sha2::Digest as _;

use crate::oid;

/// A digest algorithm a signature may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DigestAlg {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl DigestAlg {
    /// The algorithm an object identifier names, if supported.
    pub fn from_oid(id: ObjectIdentifier) -> Option<Self> {
        match id {
            oid::SHA256 => Some(DigestAlg::Sha256),
            oid::SHA384 => Some(DigestAlg::Sha384),
            oid::SHA512 => Some(DigestAlg::Sha512),
            _ => None,
        }
    }

    /// Its object identifier.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            DigestAlg::Sha256 => oid::SHA256,
            DigestAlg::Sha384 => oid::SHA384,
            DigestAlg::Sha512 => oid::SHA512,
        }
    }

    /// `sha256`, `sha384` or `sha512`.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlg::Sha256 => "sha256",
            DigestAlg::Sha384 => "sha384",
            DigestAlg::Sha512 => "sha512",
        }
    }

    /// The digest length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            DigestAlg::Sha256 => 32,
            DigestAlg::Sha384 => 48,
            DigestAlg::Sha512 => 64,
        }
    }

    /// An incremental hasher, for streaming a payload.
    pub fn hasher(self) -> Hasher {
        Hasher(match self {
            DigestAlg::Sha256 => HasherState::Sha256(sha2::Sha256::new()),
            DigestAlg::Sha384 => HasherState::Sha384(sha2::Sha384::new()),
            DigestAlg::Sha512 => HasherState::Sha512(sha2::Sha512::new()),
        })
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let mut hasher = self.hasher();
        hasher.update(data);
        hasher.finalize()
    }
}

impl std::fmt::Display for DigestAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An incremental hash; also an [`std::io::Write`] sink, so `std::io::copy` can feed it.
#[derive(Clone, Debug)]
pub struct Hasher(HasherState);

#[derive(Clone, Debug)]
enum HasherState {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            HasherState::Sha256(h) => h.update(data),
            HasherState::Sha384(h) => h.update(data),
            HasherState::Sha512(h) => h.update(data),
        }
    }

    /// The digest.
    pub fn finalize(self) -> Vec<u8> {
        match self.0 {
            HasherState::Sha256(h) => h.finalize().to_vec(),
            HasherState::Sha384(h) => h.finalize().to_vec(),
            HasherState::Sha512(h) => h.finalize().to_vec(),
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> DigestAlg {
        match self.0 {
            HasherState::Sha256(_) => DigestAlg::Sha256,
            HasherState::Sha384(_) => DigestAlg::Sha384,
            HasherState::Sha512(_) => DigestAlg::Sha512,
        }
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    #[test]
    fn digest_algorithms() {
        for (alg, len, name) in [
            (DigestAlg::Sha256, 32, "sha256"),
            (DigestAlg::Sha384, 48, "sha384"),
            (DigestAlg::Sha512, 64, "sha512"),
        ] {
            assert_eq!(DigestAlg::from_oid(alg.oid()), Some(alg));
            assert_eq!(alg.output_len(), len);
            assert_eq!(alg.name(), name);
            assert_eq!(alg.digest(b"abc").len(), len);
            let mut h = alg.hasher();
            h.update(b"a");
            std::io::Write::write_all(&mut h, b"bc").unwrap();
            assert_eq!(h.algorithm(), alg);
            assert_eq!(h.finalize(), alg.digest(b"abc"));
        }
        assert_eq!(
            hex::encode(DigestAlg::Sha256.digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(DigestAlg::from_oid(oid::SHA256_WITH_RSA), None);
    }
}
