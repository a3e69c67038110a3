//! Public-key signature primitives shared by certificate and CMS checks: the supported
//! keys (RSA PKCS#1 v1.5, ECDSA P-256/P-384) and the signature algorithms of certificates.

use der::asn1::ObjectIdentifier;
use der::Decode;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use super::X509Error;
use crate::digest::DigestAlg;
use crate::oid;

/// RSA moduli accepted, in bits.
const RSA_MIN_BITS: usize = 1024;
const RSA_MAX_BITS: usize = 16384;

/// Signature schemes; the digest is chosen separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    RsaPkcs1v15,
    Ecdsa,
}

/// Scheme and digest of a certificate's signatureAlgorithm.
pub(super) fn cert_signature_algorithm(
    alg: &AlgorithmIdentifierOwned,
) -> Option<(Scheme, DigestAlg)> {
    Some(match alg.oid {
        oid::SHA256_WITH_RSA => (Scheme::RsaPkcs1v15, DigestAlg::Sha256),
        oid::SHA384_WITH_RSA => (Scheme::RsaPkcs1v15, DigestAlg::Sha384),
        oid::SHA512_WITH_RSA => (Scheme::RsaPkcs1v15, DigestAlg::Sha512),
        oid::ECDSA_WITH_SHA256 => (Scheme::Ecdsa, DigestAlg::Sha256),
        oid::ECDSA_WITH_SHA384 => (Scheme::Ecdsa, DigestAlg::Sha384),
        oid::ECDSA_WITH_SHA512 => (Scheme::Ecdsa, DigestAlg::Sha512),
        _ => return None,
    })
}

/// A supported public key.
#[derive(Clone, Debug)]
pub(crate) enum PublicKey {
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

impl PublicKey {
    pub(super) fn from_spki(
        spki: &SubjectPublicKeyInfoOwned,
        subject: &str,
    ) -> Result<Self, X509Error> {
        let bad = |reason: String| X509Error::BadKey {
            subject: subject.to_owned(),
            reason,
        };
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| bad("key bit string has unused bits".to_owned()))?;
        match spki.algorithm.oid {
            oid::RSA_ENCRYPTION => {
                let key = rsa::pkcs1::RsaPublicKey::from_der(bits)
                    .map_err(|e| bad(format!("RSA key: {e}")))?;
                let n = rsa::BigUint::from_bytes_be(key.modulus.as_bytes());
                let e = rsa::BigUint::from_bytes_be(key.public_exponent.as_bytes());
                if n.bits() < RSA_MIN_BITS {
                    return Err(bad(format!(
                        "RSA modulus of {} bits is below {RSA_MIN_BITS}",
                        n.bits()
                    )));
                }
                rsa::RsaPublicKey::new_with_max_size(n, e, RSA_MAX_BITS)
                    .map(PublicKey::Rsa)
                    .map_err(|e| bad(format!("RSA key: {e}")))
            }
            oid::EC_PUBLIC_KEY => {
                let curve: ObjectIdentifier = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .ok_or_else(|| bad("EC key without a named curve".to_owned()))?
                    .decode_as()
                    .map_err(|e| bad(format!("EC key without a named curve: {e}")))?;
                match curve {
                    oid::SECP256R1 => p256::ecdsa::VerifyingKey::from_sec1_bytes(bits)
                        .map(PublicKey::P256)
                        .map_err(|e| bad(format!("P-256 key: {e}"))),
                    oid::SECP384R1 => p384::ecdsa::VerifyingKey::from_sec1_bytes(bits)
                        .map(PublicKey::P384)
                        .map_err(|e| bad(format!("P-384 key: {e}"))),
                    other => Err(X509Error::UnsupportedAlgorithm {
                        subject: subject.to_owned(),
                        what: "elliptic curve",
                        oid: other,
                    }),
                }
            }
            other => Err(X509Error::UnsupportedAlgorithm {
                subject: subject.to_owned(),
                what: "public key algorithm",
                oid: other,
            }),
        }
    }

    /// Whether `sig` is a valid `scheme` signature over a message whose `digest`-hash is
    /// `hashed`. A scheme that does not fit the key is a failed verification.
    pub(crate) fn verify(
        &self,
        scheme: Scheme,
        digest: DigestAlg,
        hashed: &[u8],
        sig: &[u8],
    ) -> bool {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        match (self, scheme) {
            (PublicKey::Rsa(key), Scheme::RsaPkcs1v15) => {
                let padding = match digest {
                    DigestAlg::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                    DigestAlg::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                    DigestAlg::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
                };
                key.verify(padding, hashed, sig).is_ok()
            }
            (PublicKey::P256(key), Scheme::Ecdsa) => p256::ecdsa::Signature::from_der(sig)
                .is_ok_and(|s| key.verify_prehash(hashed, &s).is_ok()),
            (PublicKey::P384(key), Scheme::Ecdsa) => p384::ecdsa::Signature::from_der(sig)
                .is_ok_and(|s| key.verify_prehash(hashed, &s).is_ok()),
            _ => false,
        }
    }

    /// The scheme this key signs with.
    pub(crate) fn scheme(&self) -> Scheme {
        match self {
            PublicKey::Rsa(_) => Scheme::RsaPkcs1v15,
            PublicKey::P256(_) | PublicKey::P384(_) => Scheme::Ecdsa,
        }
    }
}
