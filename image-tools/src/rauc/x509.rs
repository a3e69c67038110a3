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

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use der::asn1::ObjectIdentifier;
use der::{Decode, Header, Reader, SliceReader};
use sha2::Digest as _;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, BasicConstraints, KeyUsage};
use x509_cert::name::Name;
use x509_cert::Certificate;

use super::cms::DigestAlg;
use crate::timefmt;

/// Object identifiers used here and in [`super::cms`].
pub(crate) mod oid {
    use der::asn1::ObjectIdentifier as Oid;

    pub const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
    pub const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
    pub const SHA384_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
    pub const SHA512_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
    pub const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
    pub const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
    pub const ECDSA_WITH_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
    pub const ECDSA_WITH_SHA512: Oid = Oid::new_unwrap("1.2.840.10045.4.3.4");
    pub const SECP256R1: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
    pub const SECP384R1: Oid = Oid::new_unwrap("1.3.132.0.34");

    pub const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
    pub const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
    pub const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");

    pub const COMMON_NAME: Oid = Oid::new_unwrap("2.5.4.3");

    pub const SUBJECT_KEY_ID: Oid = Oid::new_unwrap("2.5.29.14");
    pub const KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.15");
    pub const SUBJECT_ALT_NAME: Oid = Oid::new_unwrap("2.5.29.17");
    pub const BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
    pub const NAME_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.30");
    pub const CRL_DISTRIBUTION_POINTS: Oid = Oid::new_unwrap("2.5.29.31");
    pub const CERTIFICATE_POLICIES: Oid = Oid::new_unwrap("2.5.29.32");
    pub const POLICY_MAPPINGS: Oid = Oid::new_unwrap("2.5.29.33");
    pub const AUTHORITY_KEY_ID: Oid = Oid::new_unwrap("2.5.29.35");
    pub const POLICY_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.36");
    pub const EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");
    pub const INHIBIT_ANY_POLICY: Oid = Oid::new_unwrap("2.5.29.54");
    pub const PROXY_CERT_INFO: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.1.14");
    pub const IP_ADDR_BLOCKS: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.1.7");
    pub const AS_IDENTIFIERS: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.1.8");
    pub const OCSP_NO_CHECK: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.48.1.5");
    pub const NETSCAPE_CERT_TYPE: Oid = Oid::new_unwrap("2.16.840.1.113730.1.1");

    pub const KP_CODE_SIGNING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.3");
    pub const KP_EMAIL_PROTECTION: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.4");
}

/// Longest chain tried, signer and anchor included (OpenSSL allows 100; RAUC chains have
/// two or three certificates).
const MAX_CHAIN_LEN: usize = 10;
/// Bound on chain-building steps, so that a signature carrying many certificates with
/// the same names cannot make the search explode.
const MAX_SEARCH_STEPS: usize = 256;
/// RSA moduli accepted, in bits.
const RSA_MIN_BITS: usize = 1024;
const RSA_MAX_BITS: usize = 16384;

/// Errors from loading a keyring or verifying a certificate chain.
///
/// Certificates are named by their subject in RFC 4514 form (`CN=signer,O=Acme`); times
/// are RFC 3339 UTC.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum X509Error {
    /// A keyring file or directory could not be read.
    #[error("cannot read keyring {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A keyring file is not valid PEM, or a certificate in it does not parse.
    #[error("keyring {origin}: {reason}")]
    Keyring { origin: String, reason: String },
    /// A keyring file or directory holds no certificate.
    #[error("keyring {origin} holds no certificates")]
    EmptyKeyring { origin: String },
    /// A certificate is not valid DER X.509.
    #[error("cannot parse {what}: {source}")]
    Parse {
        what: String,
        #[source]
        source: der::Error,
    },
    /// An extension does not parse, is duplicated, is critical and unknown, or is not
    /// supported.
    #[error("certificate {subject}: {reason}")]
    Extension { subject: String, reason: String },
    /// The certificate's notBefore lies after the verification time.
    #[error("certificate {subject} is not valid before {not_before} (verification time {time})")]
    NotYetValid {
        subject: String,
        not_before: String,
        time: String,
    },
    /// The certificate's notAfter lies before the verification time.
    #[error("certificate {subject} expired at {not_after} (verification time {time})")]
    Expired {
        subject: String,
        not_after: String,
        time: String,
    },
    /// A signature or key algorithm is not one of those supported.
    #[error("certificate {subject}: unsupported {what} {oid}")]
    UnsupportedAlgorithm {
        subject: String,
        what: &'static str,
        oid: ObjectIdentifier,
    },
    /// A public key does not parse or is not acceptable.
    #[error("certificate {subject}: bad public key: {reason}")]
    BadKey { subject: String, reason: String },
    /// A certificate's signature does not verify with its issuer's key.
    #[error("signature of certificate {subject} does not verify with the key of {issuer}")]
    BadSignature { subject: String, issuer: String },
    /// No chain from the signer ends at a trusted certificate.
    #[error("signer {subject} does not chain to a trusted certificate: {reason}")]
    Untrusted { subject: String, reason: String },
    /// A certificate that issues another one is not a CA.
    #[error("certificate {subject} is not a CA: {reason}")]
    NotCa { subject: String, reason: String },
    /// A CA's pathLenConstraint is exceeded.
    #[error(
        "certificate {subject} allows {limit} intermediate CAs below it, the chain has {count}"
    )]
    PathLength {
        subject: String,
        limit: u8,
        count: usize,
    },
    /// A certificate is not valid for the configured `check-purpose`.
    #[error("certificate {subject} is not valid for purpose {purpose}: {reason}")]
    Purpose {
        subject: String,
        purpose: Purpose,
        reason: String,
    },
    /// `check-purpose` names a purpose that is not supported.
    #[error("unsupported check-purpose {0:?} (supported: smimesign, codesign, any)")]
    UnknownPurpose(String),
    /// The signer's common name is not in `allowed-signer-cns`.
    #[error("signer {subject} has no common name in allowed-signer-cns ({allowed})")]
    SignerCnNotAllowed { subject: String, allowed: String },
    /// The signer's common name contains a NUL byte (RAUC refuses these too).
    #[error("signer {subject} has a common name with an embedded NUL byte")]
    SignerCnNul { subject: String },
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

/// A certificate for display (`info` output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// RFC 4514 form, e.g. `CN=signer,O=Acme`.
    pub subject: String,
    /// RFC 4514 form.
    pub issuer: String,
    /// Hex bytes separated by colons.
    pub serial: String,
    /// RFC 3339 UTC.
    pub not_before: String,
    /// RFC 3339 UTC.
    pub not_after: String,
    /// SHA-256 of the DER encoding, lower-case hex.
    pub sha256: String,
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "subject {}, issuer {}, serial {}, valid {} to {}, sha256 {}",
            self.subject, self.issuer, self.serial, self.not_before, self.not_after, self.sha256
        )
    }
}

/// A parsed certificate that keeps its DER bytes (signatures are checked over the
/// original to-be-signed bytes, never a re-encoding).
#[derive(Clone, Debug)]
pub struct Cert {
    der: Vec<u8>,
    tbs: Range<usize>,
    cert: Certificate,
    subject: String,
    exts: Result<Exts, String>,
}

/// The extensions chain verification looks at.
#[derive(Clone, Debug, Default)]
struct Exts {
    basic: Option<BasicConstraints>,
    key_usage: Option<KeyUsage>,
    eku: Option<Vec<ObjectIdentifier>>,
    skid: Option<Vec<u8>>,
    akid: Option<AuthorityKeyIdentifier>,
}

impl Cert {
    /// Parses one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Cert, der::Error> {
        let cert = Certificate::from_der(der)?;
        let tbs = tbs_range(der)?;
        let subject = name_string(&cert.tbs_certificate.subject);
        let exts = parse_exts(&cert);
        Ok(Cert {
            der: der.to_vec(),
            tbs,
            cert,
            subject,
            exts,
        })
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The parsed certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// The subject in RFC 4514 form.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Subject, issuer, serial, validity and fingerprint as strings.
    pub fn info(&self) -> CertInfo {
        let tbs = &self.cert.tbs_certificate;
        CertInfo {
            subject: self.subject.clone(),
            issuer: name_string(&tbs.issuer),
            serial: tbs.serial_number.to_string(),
            not_before: fmt_time(self.not_before()),
            not_after: fmt_time(self.not_after()),
            sha256: hex::encode(sha2::Sha256::digest(&self.der)),
        }
    }

    /// The subject's first common name as raw bytes (what RAUC compares), if any.
    pub fn common_name(&self) -> Option<&[u8]> {
        self.cert
            .tbs_certificate
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .find(|atv| atv.oid == oid::COMMON_NAME)
            .map(|atv| atv.value.value())
    }

    pub(crate) fn issuer_name(&self) -> &Name {
        &self.cert.tbs_certificate.issuer
    }

    pub(crate) fn subject_name(&self) -> &Name {
        &self.cert.tbs_certificate.subject
    }

    pub(crate) fn serial(&self) -> &[u8] {
        self.cert.tbs_certificate.serial_number.as_bytes()
    }

    pub(crate) fn subject_key_id(&self) -> Option<&[u8]> {
        self.exts.as_ref().ok()?.skid.as_deref()
    }

    fn not_before(&self) -> i64 {
        unix(self.cert.tbs_certificate.validity.not_before)
    }

    fn not_after(&self) -> i64 {
        unix(self.cert.tbs_certificate.validity.not_after)
    }

    fn is_self_issued(&self) -> bool {
        self.subject_name() == self.issuer_name()
    }

    pub(crate) fn public_key(&self) -> Result<PublicKey, X509Error> {
        PublicKey::from_spki(
            &self.cert.tbs_certificate.subject_public_key_info,
            &self.subject,
        )
    }

    /// Whether `issuer` could have issued `self`: names match and, where both carry key
    /// identifiers (or the authority serial), those match too.
    fn may_be_issued_by(&self, issuer: &Cert) -> bool {
        if self.issuer_name() != issuer.subject_name() {
            return false;
        }
        let Some(akid) = self.exts.as_ref().ok().and_then(|e| e.akid.as_ref()) else {
            return true;
        };
        if let (Some(kid), Some(skid)) = (&akid.key_identifier, issuer.subject_key_id()) {
            if kid.as_bytes() != skid {
                return false;
            }
        }
        if let Some(serial) = &akid.authority_cert_serial_number {
            if serial.as_bytes() != issuer.serial() {
                return false;
            }
        }
        true
    }

    /// Checks this certificate's signature with `issuer`'s key.
    fn verify_signed_by(&self, issuer: &Cert) -> Result<(), X509Error> {
        let alg = &self.cert.signature_algorithm;
        let (scheme, digest) =
            cert_signature_algorithm(alg).ok_or_else(|| X509Error::UnsupportedAlgorithm {
                subject: self.subject.clone(),
                what: "signature algorithm",
                oid: alg.oid,
            })?;
        let key = issuer.public_key()?;
        let sig = self
            .cert
            .signature
            .as_bytes()
            .ok_or_else(|| X509Error::Extension {
                subject: self.subject.clone(),
                reason: "signature bit string has unused bits".to_owned(),
            })?;
        let tbs = self.der.get(self.tbs.clone()).unwrap_or_default();
        if key.verify(scheme, digest, &digest.digest(tbs), sig) {
            Ok(())
        } else {
            Err(X509Error::BadSignature {
                subject: self.subject.clone(),
                issuer: issuer.subject.clone(),
            })
        }
    }

    fn exts(&self) -> Result<&Exts, X509Error> {
        self.exts.as_ref().map_err(|reason| X509Error::Extension {
            subject: self.subject.clone(),
            reason: reason.clone(),
        })
    }
}

impl PartialEq for Cert {
    fn eq(&self, other: &Cert) -> bool {
        self.der == other.der
    }
}

impl Eq for Cert {}

/// The byte range of the to-be-signed part inside a certificate's DER.
fn tbs_range(der: &[u8]) -> der::Result<Range<usize>> {
    let mut reader = SliceReader::new(der)?;
    Header::decode(&mut reader)?;
    let start = usize::try_from(reader.position())?;
    let tbs = reader.tlv_bytes()?;
    Ok(start..start + tbs.len())
}

/// The extensions, or why the certificate is unusable (OpenSSL's `EXFLAG_INVALID`:
/// duplicate or unparsable extensions, or a signature algorithm that differs from the
/// one inside the signed part).
fn parse_exts(cert: &Certificate) -> Result<Exts, String> {
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return Err("its signature algorithm differs from the one in its signed part".to_owned());
    }
    let mut exts = Exts::default();
    let mut seen: Vec<ObjectIdentifier> = Vec::new();
    let list = cert
        .tbs_certificate
        .extensions
        .as_deref()
        .unwrap_or_default();
    for ext in list {
        let id = ext.extn_id;
        if seen.contains(&id) {
            return Err(format!("extension {id} appears twice"));
        }
        seen.push(id);
        let value = ext.extn_value.as_bytes();
        let bad = |e: der::Error| format!("cannot parse extension {id}: {e}");
        match id {
            oid::BASIC_CONSTRAINTS => {
                exts.basic = Some(BasicConstraints::from_der(value).map_err(bad)?);
            }
            oid::KEY_USAGE => exts.key_usage = Some(KeyUsage::from_der(value).map_err(bad)?),
            oid::EXT_KEY_USAGE => {
                let eku = x509_cert::ext::pkix::ExtendedKeyUsage::from_der(value).map_err(bad)?;
                exts.eku = Some(eku.0);
            }
            oid::SUBJECT_KEY_ID => {
                let skid =
                    x509_cert::ext::pkix::SubjectKeyIdentifier::from_der(value).map_err(bad)?;
                exts.skid = Some(skid.0.as_bytes().to_vec());
            }
            oid::AUTHORITY_KEY_ID => {
                exts.akid = Some(AuthorityKeyIdentifier::from_der(value).map_err(bad)?);
            }
            oid::NAME_CONSTRAINTS => {
                return Err("name constraints extension is not supported".to_owned());
            }
            oid::PROXY_CERT_INFO => {
                return Err("proxy certificates are not supported".to_owned());
            }
            // Critical extensions OpenSSL accepts without enforcing anything RAUC relies
            // on (policies are only checked with X509_V_FLAG_POLICY_CHECK, CRLs only with
            // check-crl).
            oid::SUBJECT_ALT_NAME
            | oid::CERTIFICATE_POLICIES
            | oid::POLICY_MAPPINGS
            | oid::POLICY_CONSTRAINTS
            | oid::INHIBIT_ANY_POLICY
            | oid::CRL_DISTRIBUTION_POINTS
            | oid::NETSCAPE_CERT_TYPE
            | oid::IP_ADDR_BLOCKS
            | oid::AS_IDENTIFIERS
            | oid::OCSP_NO_CHECK => {}
            other if ext.critical => {
                return Err(format!("unhandled critical extension {other}"));
            }
            _ => {}
        }
    }
    Ok(exts)
}

/// RFC 4514 form, or a placeholder for an empty name.
pub(crate) fn name_string(name: &Name) -> String {
    let s = name.to_string();
    if s.is_empty() {
        "(empty name)".to_owned()
    } else {
        s
    }
}

fn unix(t: x509_cert::time::Time) -> i64 {
    i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

/// RFC 3339 for Unix seconds; times before 1970 do not occur in X.509 as parsed here.
pub(crate) fn fmt_time(t: i64) -> String {
    timefmt::rfc3339(u64::try_from(t).unwrap_or(0))
}

/// Signature schemes; the digest is chosen separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    RsaPkcs1v15,
    Ecdsa,
}

/// Scheme and digest of a certificate's signatureAlgorithm.
fn cert_signature_algorithm(alg: &AlgorithmIdentifierOwned) -> Option<(Scheme, DigestAlg)> {
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
    fn from_spki(spki: &SubjectPublicKeyInfoOwned, subject: &str) -> Result<Self, X509Error> {
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

/// Builds and checks the chain from `leaf` to a trust anchor in `store`, at Unix time
/// `at`. `untrusted` are the certificates the signature carries. Returns the chain,
/// leaf first, anchor last.
pub fn verify_chain(
    leaf: &Cert,
    untrusted: &[Cert],
    store: &TrustStore,
    opts: &VerifyOptions,
    at: i64,
) -> Result<Vec<Cert>, X509Error> {
    let mut search = Search {
        store,
        untrusted,
        allow_partial: opts.allow_partial_chain,
        steps: 0,
        paths: Vec::new(),
        dead_end: Vec::new(),
    };
    let mut path = vec![leaf];
    search.extend(&mut path);
    let Search {
        paths, dead_end, ..
    } = search;
    let mut first_error = None;
    for path in &paths {
        match check_path(path, opts.purpose, at) {
            Ok(()) => return Ok(path.iter().map(|c| (*c).clone()).collect()),
            Err(e) => {
                log::debug!(
                    "chain {} rejected: {e}",
                    path.iter()
                        .map(|c| c.subject())
                        .collect::<Vec<_>>()
                        .join(" <- ")
                );
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Err(X509Error::Untrusted {
        subject: leaf.subject.clone(),
        reason: dead_end_reason(&dead_end, store, opts.allow_partial_chain),
    })
}

/// Why the longest chain found could not be completed.
fn dead_end_reason(path: &[&Cert], store: &TrustStore, allow_partial: bool) -> String {
    let Some(top) = path.last() else {
        return "no chain".to_owned();
    };
    if store.contains(top) && !allow_partial {
        format!(
            "{} is in the keyring but not self-signed, and allow-partial-chain is off",
            top.subject
        )
    } else if top.is_self_issued() {
        format!(
            "self-signed certificate {} is not in the keyring",
            top.subject
        )
    } else {
        format!(
            "no certificate for issuer {} of {} in the signature or the keyring",
            name_string(top.issuer_name()),
            top.subject
        )
    }
}

/// Depth-first search for candidate chains, preferred ones first: keyring issuers before
/// the signature's certificates, and (with a partial chain) longer chains first.
struct Search<'a> {
    store: &'a TrustStore,
    untrusted: &'a [Cert],
    allow_partial: bool,
    steps: usize,
    paths: Vec<Vec<&'a Cert>>,
    dead_end: Vec<&'a Cert>,
}

impl<'a> Search<'a> {
    fn extend(&mut self, path: &mut Vec<&'a Cert>) {
        self.steps += 1;
        if self.steps > MAX_SEARCH_STEPS {
            return;
        }
        let Some(&cur) = path.last() else { return };
        let trusted = self.store.contains(cur);
        if trusted && cur.is_self_issued() {
            self.paths.push(path.clone());
            return;
        }
        let found_before = self.paths.len();
        if path.len() < MAX_CHAIN_LEN {
            // Once the chain is in the keyring, it stays there.
            let in_keyring = path.iter().any(|c| self.store.contains(c));
            let store = self.store.certs.iter();
            let untrusted = self
                .untrusted
                .iter()
                .filter(|c| !in_keyring && !self.store.contains(c));
            for cand in store.chain(untrusted) {
                if cur.may_be_issued_by(cand) && !path.contains(&cand) {
                    path.push(cand);
                    self.extend(path);
                    path.pop();
                }
            }
        }
        if trusted && self.allow_partial {
            self.paths.push(path.clone());
        }
        if self.paths.len() == found_before && path.len() > self.dead_end.len() {
            self.dead_end = path.clone();
        }
    }
}

/// Checks one candidate chain (leaf first, anchor last).
fn check_path(path: &[&Cert], purpose: Purpose, at: i64) -> Result<(), X509Error> {
    // Non-self-issued intermediates seen so far, for pathLenConstraint.
    let mut intermediates = 0usize;
    let last = path.len() - 1;
    for (i, &cert) in path.iter().enumerate() {
        let exts = cert.exts()?;
        check_time(cert, at)?;
        if let Some(&issuer) = path.get(i + 1) {
            cert.verify_signed_by(issuer)?;
        }
        if i == 0 {
            check_leaf_purpose(cert, exts, purpose)?;
            continue;
        }
        match ca_kind(cert, exts) {
            Ok(CaKind::Ca) => {}
            Ok(CaKind::Tolerated) if i == last => {}
            Ok(CaKind::Tolerated) => {
                return Err(X509Error::NotCa {
                    subject: cert.subject.clone(),
                    reason: "it has no basic constraints extension".to_owned(),
                })
            }
            Err(reason) => {
                return Err(X509Error::NotCa {
                    subject: cert.subject.clone(),
                    reason,
                })
            }
        }
        check_ca_purpose(cert, exts, purpose)?;
        if let Some(limit) = exts.basic.as_ref().and_then(|b| b.path_len_constraint) {
            if intermediates > usize::from(limit) {
                return Err(X509Error::PathLength {
                    subject: cert.subject.clone(),
                    limit,
                    count: intermediates,
                });
            }
        }
        if !cert.is_self_issued() {
            intermediates += 1;
        }
    }
    Ok(())
}

fn check_time(cert: &Cert, at: i64) -> Result<(), X509Error> {
    if at < cert.not_before() {
        return Err(X509Error::NotYetValid {
            subject: cert.subject.clone(),
            not_before: fmt_time(cert.not_before()),
            time: fmt_time(at),
        });
    }
    if at > cert.not_after() {
        return Err(X509Error::Expired {
            subject: cert.subject.clone(),
            not_after: fmt_time(cert.not_after()),
            time: fmt_time(at),
        });
    }
    Ok(())
}

enum CaKind {
    /// basicConstraints cA=true.
    Ca,
    /// No basicConstraints, but a v1 self-issued root or a keyUsage with keyCertSign:
    /// OpenSSL accepts these as the top of a chain only.
    Tolerated,
}

/// OpenSSL's `check_ca`.
fn ca_kind(cert: &Cert, exts: &Exts) -> Result<CaKind, String> {
    if exts.key_usage.is_some_and(|ku| !ku.key_cert_sign()) {
        return Err("key usage lacks keyCertSign".to_owned());
    }
    match &exts.basic {
        Some(b) if b.ca => Ok(CaKind::Ca),
        Some(_) => Err("basic constraints say cA=false".to_owned()),
        None => {
            let v1 = cert.cert.tbs_certificate.version == x509_cert::certificate::Version::V1;
            if (v1 && cert.is_self_issued()) || exts.key_usage.is_some() {
                Ok(CaKind::Tolerated)
            } else {
                Err("it has no basic constraints extension".to_owned())
            }
        }
    }
}

fn eku_has(exts: &Exts, id: ObjectIdentifier) -> Option<bool> {
    exts.eku.as_ref().map(|list| list.contains(&id))
}

fn check_leaf_purpose(cert: &Cert, exts: &Exts, purpose: Purpose) -> Result<(), X509Error> {
    let fail = |reason: &str| {
        Err(X509Error::Purpose {
            subject: cert.subject.clone(),
            purpose,
            reason: reason.to_owned(),
        })
    };
    let ku = exts.key_usage;
    match purpose {
        Purpose::Any => Ok(()),
        Purpose::SmimeSign => {
            if eku_has(exts, oid::KP_EMAIL_PROTECTION) == Some(false) {
                return fail("extended key usage lacks emailProtection");
            }
            if ku.is_some_and(|ku| !ku.digital_signature() && !ku.non_repudiation()) {
                return fail("key usage lacks digitalSignature and nonRepudiation");
            }
            Ok(())
        }
        Purpose::CodeSign => {
            if ku.is_some_and(|ku| !ku.digital_signature()) {
                return fail("key usage lacks digitalSignature");
            }
            match eku_has(exts, oid::KP_CODE_SIGNING) {
                None => return fail("it has no extended key usage (codeSigning is required)"),
                Some(false) => return fail("extended key usage lacks codeSigning"),
                Some(true) => {}
            }
            if ku.is_none() {
                log::warn!(
                    "signer certificate {} should have a critical key usage extension",
                    cert.subject
                );
            }
            Ok(())
        }
    }
}

fn check_ca_purpose(cert: &Cert, exts: &Exts, purpose: Purpose) -> Result<(), X509Error> {
    let (required, name) = match purpose {
        Purpose::Any => return Ok(()),
        Purpose::SmimeSign => (oid::KP_EMAIL_PROTECTION, "emailProtection"),
        Purpose::CodeSign => (oid::KP_CODE_SIGNING, "codeSigning"),
    };
    if eku_has(exts, required) == Some(false) {
        return Err(X509Error::Purpose {
            subject: cert.subject.clone(),
            purpose,
            reason: format!("extended key usage of a CA lacks {name}"),
        });
    }
    Ok(())
}

/// RAUC's `allowed-signer-cns`: the signer's (first) common name must be in the list;
/// an empty list allows any signer. Compared byte for byte, as RAUC does.
pub fn check_signer_cn(signer: &Cert, allowed: &[String]) -> Result<(), X509Error> {
    if allowed.is_empty() {
        return Ok(());
    }
    if let Some(cn) = signer.common_name() {
        if cn.contains(&0) {
            return Err(X509Error::SignerCnNul {
                subject: signer.subject.clone(),
            });
        }
        if allowed.iter().any(|a| a.as_bytes() == cn) {
            return Ok(());
        }
    }
    Err(X509Error::SignerCnNotAllowed {
        subject: signer.subject.clone(),
        allowed: allowed.join(", "),
    })
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
        assert!(
            err.to_string()
                .starts_with("cannot read keyring /nonexistent/keyring.pem: "),
            "{err}"
        );
    }

    #[test]
    fn time_formatting() {
        assert_eq!(fmt_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_time(-5), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_time(1_735_689_600), "2025-01-01T00:00:00Z");
    }
}
