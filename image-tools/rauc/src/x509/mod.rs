//! The X.509 side of RAUC signature checking: the keyring ([`TrustStore`]), certificate
//! chains from a signer to a trust anchor, RAUC's `check-purpose` rules and the public-key
//! signature primitives (RSA PKCS#1 v1.5, ECDSA P-256/P-384) that [`super::cms`] shares.
//!
//! The rules follow what RAUC gets from OpenSSL's `X509_verify_cert` with the store RAUC
//! sets up (no CRLs, no policy checking, not `X509_V_FLAG_X509_STRICT`):
//!
//! - A chain runs signer → intermediates (from the signature and the keyring) → anchor.
//!   Without `allow_partial_chain` the anchor is a self-issued keyring certificate; with
//!   it any keyring certificate ends the chain. Once a chain reaches a keyring
//!   certificate it continues only through keyring certificates (OpenSSL does the same).
//! - Every certificate is checked for its validity period (inclusive, RFC 5280) and for
//!   critical extensions this module does not understand; every certificate but the anchor
//!   for its signature by the next one (OpenSSL does not check the anchor's own signature).
//! - Every certificate above the signer must be a CA (OpenSSL's `check_ca`: keyUsage, if
//!   present, holds keyCertSign, and basicConstraints says cA; the anchor may instead be a
//!   v1 self-issued root or carry only a keyUsage with keyCertSign); pathLenConstraint is
//!   enforced.
//! - The purpose applies to the signer and, in its CA form, to every CA (see [`Purpose`]).
//!
//! Deliberate differences from OpenSSL, all failing closed: names are compared by their
//! DER encoding, not OpenSSL's case-folded canonical form; a nameConstraints extension
//! anywhere in a chain is refused rather than evaluated; `TRUSTED CERTIFICATE` PEM blocks
//! (OpenSSL's auxiliary trust settings) are refused; SHA-1 and RSA-PSS signatures are not
//! supported; RSA keys below 1024 bits are refused. The Netscape certificate type
//! extension is ignored.
//!
//! The code is split by concern: `store` loads the keyring, `chain` builds and checks
//! chains (the rules above), `cert` parses one certificate, `keys` holds the signature
//! primitives; the object identifiers are in `crate::oid`. This module holds the error type,
//! [`Purpose`] and [`VerifyOptions`], and re-exports the rest.

mod cert;
mod chain;
mod keys;
mod store;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use der::asn1::ObjectIdentifier;

pub(crate) use cert::{fmt_time, name_string};
pub use cert::{Cert, CertInfo};
pub use chain::{check_signer_cn, verify_chain};
pub(crate) use keys::Scheme;
pub use store::TrustStore;

/// Errors from loading a keyring or verifying a certificate chain.
///
/// Certificates are named by their subject in RFC 4514 form (`CN=signer,O=Acme`); times
/// are RFC 3339 UTC.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum X509Error {
    /// A keyring file or directory could not be read.
    #[error("cannot read keyring {}", path.display())]
    Io {
        /// The keyring file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A keyring file is not valid PEM, or a certificate in it does not parse.
    #[error("keyring {origin}: {reason}")]
    Keyring {
        /// The keyring file or directory.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// A keyring file or directory holds no certificate.
    #[error("keyring {origin} holds no certificates")]
    EmptyKeyring {
        /// The keyring file or directory.
        origin: String,
    },
    /// A certificate is not valid DER X.509.
    #[error("cannot parse {what}")]
    Parse {
        /// What was parsed.
        what: String,
        /// The underlying error.
        #[source]
        source: der::Error,
    },
    /// An extension does not parse, is duplicated, is critical and unknown, or is not
    /// supported.
    #[error("certificate {subject}: {reason}")]
    Extension {
        /// The certificate's subject.
        subject: String,
        /// What is wrong.
        reason: String,
    },
    /// The certificate's notBefore lies after the verification time.
    #[error("certificate {subject} is not valid before {not_before} (verification time {time})")]
    NotYetValid {
        /// The certificate's subject.
        subject: String,
        /// The certificate's notBefore.
        not_before: String,
        /// The verification time.
        time: String,
    },
    /// The certificate's notAfter lies before the verification time.
    #[error("certificate {subject} expired at {not_after} (verification time {time})")]
    Expired {
        /// The certificate's subject.
        subject: String,
        /// The certificate's notAfter.
        not_after: String,
        /// The verification time.
        time: String,
    },
    /// A signature or key algorithm is not one of those supported.
    #[error("certificate {subject}: unsupported {what} {oid}")]
    UnsupportedAlgorithm {
        /// The certificate's subject.
        subject: String,
        /// What is unsupported (signature algorithm, key algorithm).
        what: &'static str,
        /// The object identifier.
        oid: ObjectIdentifier,
    },
    /// A public key does not parse or is not acceptable.
    #[error("certificate {subject}: bad public key: {reason}")]
    BadKey {
        /// The certificate's subject.
        subject: String,
        /// What is wrong.
        reason: String,
    },
    /// A certificate's signature does not verify with its issuer's key.
    #[error("signature of certificate {subject} does not verify with the key of {issuer}")]
    BadSignature {
        /// The certificate's subject.
        subject: String,
        /// The issuer's subject.
        issuer: String,
    },
    /// No chain from the signer ends at a trusted certificate.
    #[error("signer {subject} does not chain to a trusted certificate: {reason}")]
    Untrusted {
        /// The certificate's subject.
        subject: String,
        /// What is wrong.
        reason: String,
    },
    /// A certificate that issues another one is not a CA.
    #[error("certificate {subject} is not a CA: {reason}")]
    NotCa {
        /// The certificate's subject.
        subject: String,
        /// What is wrong.
        reason: String,
    },
    /// A CA's pathLenConstraint is exceeded.
    #[error(
        "certificate {subject} allows {limit} intermediate CAs below it, the chain has {count}"
    )]
    PathLength {
        /// The certificate's subject.
        subject: String,
        /// The pathLenConstraint.
        limit: u8,
        /// The intermediate CAs below it in the chain.
        count: usize,
    },
    /// A certificate is not valid for the configured `check-purpose`.
    #[error("certificate {subject} is not valid for purpose {purpose}: {reason}")]
    Purpose {
        /// The certificate's subject.
        subject: String,
        /// The configured purpose.
        purpose: Purpose,
        /// What is wrong.
        reason: String,
    },
    /// `check-purpose` names a purpose that is not supported.
    #[error("unsupported check-purpose {0:?} (supported: smimesign, codesign, any)")]
    UnknownPurpose(String),
    /// The signer's common name is not in `allowed-signer-cns`.
    #[error("signer {subject} has no common name in allowed-signer-cns ({allowed})")]
    SignerCnNotAllowed {
        /// The certificate's subject.
        subject: String,
        /// The allowed common names.
        allowed: String,
    },
    /// The signer's common name contains a NUL byte (RAUC refuses these too).
    #[error("signer {subject} has a common name with an embedded NUL byte")]
    SignerCnNul {
        /// The certificate's subject.
        subject: String,
    },
}

/// The `check-purpose` of RAUC's `[keyring]` section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Purpose {
    /// OpenSSL's `smimesign`, RAUC's default. Signer: an extendedKeyUsage, if present,
    /// holds emailProtection (anyExtendedKeyUsage does not count: OpenSSL keeps it in a
    /// separate bit), a keyUsage, if present, holds digitalSignature or nonRepudiation.
    /// CAs: an extendedKeyUsage, if present, holds emailProtection.
    #[default]
    SmimeSign,
    /// RAUC's `codesign` (`codesign-rauc`). Signer: extendedKeyUsage must be present and
    /// hold codeSigning, a keyUsage, if present, holds digitalSignature. CAs: an
    /// extendedKeyUsage, if present, holds codeSigning.
    CodeSign,
    /// OpenSSL's `any`: no purpose check (the CA checks still apply).
    Any,
}

impl Purpose {
    /// The name RAUC's `check-purpose` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::SmimeSign => "smimesign",
            Purpose::CodeSign => "codesign",
            Purpose::Any => "any",
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Purpose {
    type Err = X509Error;

    /// `smimesign`, `codesign` (and its RAUC alias `codesign-rauc`) and `any`. OpenSSL's
    /// other purposes (`sslclient`, `sslserver`, …) are refused.
    fn from_str(s: &str) -> Result<Self, X509Error> {
        match s {
            "smimesign" => Ok(Purpose::SmimeSign),
            "codesign" | "codesign-rauc" => Ok(Purpose::CodeSign),
            "any" => Ok(Purpose::Any),
            other => Err(X509Error::UnknownPurpose(other.to_owned())),
        }
    }
}

/// How a signature is verified: RAUC's `[keyring]` options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// `check-purpose`.
    pub purpose: Purpose,
    /// `allow-partial-chain`: any keyring certificate may be the trust anchor.
    pub allow_partial_chain: bool,
    /// `allowed-signer-cns`: if not empty, the signer's common name must be one of these.
    pub allowed_signer_cns: Vec<String>,
    /// `use-bundle-signing-time`: check validity periods at the signature's signingTime
    /// instead of the current time.
    pub use_signing_time: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purpose_names() {
        assert_eq!("smimesign".parse::<Purpose>().unwrap(), Purpose::SmimeSign);
        assert_eq!("codesign".parse::<Purpose>().unwrap(), Purpose::CodeSign);
        assert_eq!(
            "codesign-rauc".parse::<Purpose>().unwrap(),
            Purpose::CodeSign
        );
        assert_eq!("any".parse::<Purpose>().unwrap(), Purpose::Any);
        let err = "sslserver".parse::<Purpose>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported check-purpose \"sslserver\" (supported: smimesign, codesign, any)"
        );
        assert_eq!(Purpose::default(), Purpose::SmimeSign);
        for p in [Purpose::SmimeSign, Purpose::CodeSign, Purpose::Any] {
            assert_eq!(p.to_string().parse::<Purpose>().unwrap(), p);
        }
    }
}
