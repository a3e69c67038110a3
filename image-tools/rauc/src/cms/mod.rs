//! RAUC's bundle signature: a CMS `SignedData` (RFC 5652) in DER, as OpenSSL's
//! `CMS_sign` writes it for `rauc bundle`, verified in-process the way RAUC's
//! `cms_verify_bytes` has OpenSSL's `CMS_verify` do it.
//!
//! A `plain` bundle carries a *detached* signature over the whole payload: the caller
//! hashes the payload with [`SignedData::digest_algorithm`] and calls
//! [`SignedData::verify_detached`]. A `verity` bundle's signature *encapsulates* the
//! manifest: [`SignedData::verify_attached`] returns it once verified.
//!
//! Verification, in OpenSSL's order: find the signer certificate (by issuer and serial
//! or by subject key identifier, among the signature's certificates, then the keyring);
//! verify its chain ([`super::x509::verify_chain`]) at the verification time; verify the
//! signature over the signed attributes (re-encoded as a `SET OF`, tag 0x31) or, without
//! signed attributes, over the content digest; compare the messageDigest attribute with
//! the content digest; finally RAUC's `allowed-signer-cns`.
//!
//! As RAUC (whose `cms_get_cert_chain` refuses anything else), exactly one signer is
//! accepted. The encapsulated content type must be id-data. Only DER is read: indefinite
//! lengths and constructed OCTET STRINGs (BER) are refused. CRLs in the signature are
//! ignored (RAUC's `check-crl` is not supported).

use der::asn1::{ObjectIdentifier, SetOfVec};
use der::{Decode, Tagged};

use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier, SignerInfo};

pub use crate::digest::{DigestAlg, Hasher};
use encoding::{
    elements, expect, malformed, signed_attrs_der, SignedAttrs, TAG_CONTEXT_0, TAG_CONTEXT_1,
    TAG_INTEGER, TAG_SEQUENCE, TAG_SET,
};

mod encoding;
use crate::oid;
use crate::x509::{self, fmt_time, Cert, CertInfo, Scheme, TrustStore, VerifyOptions, X509Error};

/// Largest CMS blob [`SignedData::from_der`] parses. RAUC's own default
/// `max-bundle-signature-size` is 64 KiB.
pub const MAX_CMS_SIZE: usize = 1 << 20;

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");

/// Errors from parsing or verifying a CMS signature. Certificate and chain errors are
/// passed through from [`X509Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CmsError {
    /// The blob exceeds [`MAX_CMS_SIZE`].
    #[error("CMS signature of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The blob's size in bytes.
        size: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The blob is not a well-formed DER CMS structure.
    #[error("malformed CMS signature: {0}")]
    Malformed(String),
    /// The CMS content type is not signedData.
    #[error("CMS content type is {0}, not signedData")]
    NotSignedData(ObjectIdentifier),
    /// The encapsulated content type is not id-data.
    #[error("CMS encapsulated content type is {0}, not id-data")]
    UnsupportedContentType(ObjectIdentifier),
    /// Not exactly one SignerInfo.
    #[error("CMS signature has {0} signers; exactly one is supported")]
    SignerCount(usize),
    /// The digest algorithm is not SHA-256, SHA-384 or SHA-512.
    #[error("unsupported digest algorithm {0}")]
    UnsupportedDigest(ObjectIdentifier),
    /// The SignerInfo signature algorithm is not RSA PKCS#1 v1.5 or ECDSA.
    #[error("unsupported signature algorithm {0}")]
    UnsupportedSignatureAlgorithm(ObjectIdentifier),
    /// The signature algorithm does not fit the signer's key type.
    #[error("signature algorithm {oid} does not fit the key of signer {subject}")]
    KeyMismatch {
        /// The certificate's subject.
        subject: String,
        /// The object identifier.
        oid: ObjectIdentifier,
    },
    /// The signer certificate is in neither the signature nor the keyring.
    #[error("signer certificate ({0}) is in neither the signature nor the keyring")]
    SignerNotFound(String),
    /// A required signed attribute is missing.
    #[error("CMS signed attributes lack {0}")]
    MissingAttribute(&'static str),
    /// The contentType attribute differs from the encapsulated content type.
    #[error("CMS contentType attribute {attribute} differs from the content type {content}")]
    ContentTypeMismatch {
        /// The contentType attribute's value.
        attribute: ObjectIdentifier,
        /// The encapsulated content type.
        content: ObjectIdentifier,
    },
    /// The signed content's digest differs from the signed messageDigest.
    #[error("{what} digest does not match the signature (the bundle was modified)")]
    DigestMismatch {
        /// What was hashed.
        what: &'static str,
    },
    /// The signature value does not verify with the signer's key.
    #[error("signature by {subject} does not verify (the signature was modified or forged)")]
    BadSignature {
        /// The certificate's subject.
        subject: String,
    },
    /// `use_signing_time` is set but the signature has no signingTime.
    #[error("use-bundle-signing-time is set, but the signature has no signingTime attribute")]
    NoSigningTime,
    /// [`SignedData::verify_attached`] on a detached signature.
    #[error("the CMS signature is detached: verify it with the payload digest")]
    Detached,
    /// [`SignedData::verify_detached`] on a signature that encapsulates its content.
    #[error("the CMS signature encapsulates its content: it is not a detached signature")]
    NotDetached,
    /// The digest passed to [`SignedData::verify_detached`] has the wrong length.
    #[error("{alg} digest of {got} bytes given, {expected} expected")]
    DigestLength {
        /// The signature's digest algorithm.
        alg: DigestAlg,
        /// The length the algorithm gives.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A certificate, key or chain problem.
    #[error(transparent)]
    Certificate(#[from] X509Error),
}

/// Who signed, as established by a successful verification.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Signer {
    /// The signer certificate's subject (RFC 4514).
    pub subject: String,
    /// Subjects from the signer to the trust anchor.
    pub chain: Vec<String>,
    /// The chain's certificates, signer first.
    pub certificates: Vec<CertInfo>,
    /// The signed signingTime attribute (Unix seconds), if present.
    pub signing_time: Option<i64>,
    /// The time the chain was checked at (Unix seconds): the caller's `now`, or the
    /// signing time with `use_signing_time`.
    pub verification_time: i64,
    /// The digest algorithm of the signature.
    pub digest: DigestAlg,
}

/// A parsed CMS SignedData with one signer, not yet verified.
#[derive(Clone, Debug)]
pub struct SignedData {
    /// SignedData digestAlgorithms.
    digest_algs: Vec<ObjectIdentifier>,
    content_type: ObjectIdentifier,
    content: Option<Vec<u8>>,
    certs: Vec<Cert>,
    signer: SignerInfo,
    /// The signed attributes as the DER `SET OF` that was signed.
    signed_attrs_der: Option<Vec<u8>>,
}

impl SignedData {
    /// Parses a DER `ContentInfo` holding a SignedData. Rejects blobs larger than
    /// [`MAX_CMS_SIZE`], trailing bytes and any signer count but one.
    pub fn from_der(der: &[u8]) -> Result<Self, CmsError> {
        if der.len() > MAX_CMS_SIZE {
            return Err(CmsError::TooLarge {
                size: der.len(),
                max: MAX_CMS_SIZE,
            });
        }
        let content_info = expect(der, TAG_SEQUENCE, "ContentInfo")?;
        let [content_type, explicit] = elements(content_info, "ContentInfo")?[..] else {
            return Err(malformed("ContentInfo does not have two elements"));
        };
        let content_type = ObjectIdentifier::from_der(content_type)
            .map_err(|e| malformed(format!("content type: {e}")))?;
        if content_type != ID_SIGNED_DATA {
            return Err(CmsError::NotSignedData(content_type));
        }
        let signed_data = expect(
            expect(explicit, TAG_CONTEXT_0, "content")?,
            TAG_SEQUENCE,
            "SignedData",
        )?;
        // version, digestAlgorithms, encapContentInfo, [0] certificates, [1] crls,
        // signerInfos.
        let parts = elements(signed_data, "SignedData")?;
        let (4.., Some(&version), Some(&digest_algs), Some(&encap), Some(&signer_infos)) = (
            parts.len(),
            parts.first(),
            parts.get(1),
            parts.get(2),
            parts.last(),
        ) else {
            return Err(malformed("SignedData has too few elements"));
        };
        expect(version, TAG_INTEGER, "SignedData version")?;
        let digest_algs: Vec<ObjectIdentifier> =
            SetOfVec::<spki::AlgorithmIdentifierOwned>::from_der(digest_algs)
                .map_err(|e| malformed(format!("SignedData digestAlgorithms: {e}")))?
                .iter()
                .map(|alg| alg.oid)
                .collect();
        let encap = EncapsulatedContentInfo::from_der(encap)
            .map_err(|e| malformed(format!("encapsulated content: {e}")))?;
        let content = match &encap.econtent {
            None => None,
            Some(any) if any.tag() == der::Tag::OctetString => Some(any.value().to_vec()),
            Some(any) => {
                return Err(malformed(format!(
                    "encapsulated content is a {}, not an OCTET STRING",
                    any.tag()
                )))
            }
        };

        let mut certs = Vec::new();
        let middle = parts.get(3..parts.len() - 1).unwrap_or_default();
        let mut last_tag = 0;
        for part in middle {
            let tag = part.first().copied().unwrap_or_default();
            if tag <= last_tag || !(tag == TAG_CONTEXT_0 || tag == TAG_CONTEXT_1) {
                return Err(malformed(format!(
                    "unexpected SignedData element with tag {tag:#04x}"
                )));
            }
            last_tag = tag;
            if tag == TAG_CONTEXT_0 {
                let set = expect(part, TAG_CONTEXT_0, "certificates")?;
                for (index, choice) in elements(set, "certificates")?.into_iter().enumerate() {
                    // Other certificate formats (attribute certificates, …) are skipped.
                    if choice.first() == Some(&TAG_SEQUENCE) {
                        let cert = Cert::from_der(choice)
                            .map_err(|e| malformed(format!("certificate {}: {e}", index + 1)))?;
                        if !certs.contains(&cert) {
                            certs.push(cert);
                        }
                    }
                }
            }
        }

        let infos = elements(expect(signer_infos, TAG_SET, "signerInfos")?, "signerInfos")?;
        let [raw_signer] = infos[..] else {
            return Err(CmsError::SignerCount(infos.len()));
        };
        let signer =
            SignerInfo::from_der(raw_signer).map_err(|e| malformed(format!("signer info: {e}")))?;
        let signed_attrs_der = signed_attrs_der(raw_signer)?;
        if signer.signed_attrs.is_some() != signed_attrs_der.is_some() {
            return Err(malformed("signed attributes are inconsistent"));
        }
        Ok(SignedData {
            digest_algs,
            content_type: encap.econtent_type,
            content,
            certs,
            signer,
            signed_attrs_der,
        })
    }

    /// The digest algorithm a detached payload must be hashed with: the signer's. As in
    /// OpenSSL (which hashes the content with each of them), every algorithm of the
    /// SignedData digestAlgorithms must be supported and the signer's among them.
    pub fn digest_algorithm(&self) -> Result<DigestAlg, CmsError> {
        for &id in &self.digest_algs {
            DigestAlg::from_oid(id).ok_or(CmsError::UnsupportedDigest(id))?;
        }
        let id = self.signer.digest_alg.oid;
        let alg = DigestAlg::from_oid(id).ok_or(CmsError::UnsupportedDigest(id))?;
        if !self.digest_algs.contains(&id) {
            return Err(malformed(format!(
                "the signer's digest algorithm {alg} is not among the SignedData digestAlgorithms"
            )));
        }
        Ok(alg)
    }

    /// Whether the content is detached (a `plain` bundle) rather than encapsulated.
    pub fn is_detached(&self) -> bool {
        self.content.is_none()
    }

    /// The certificates the signature carries, unverified.
    pub fn certificates(&self) -> &[Cert] {
        &self.certs
    }

    /// The encapsulated content *without verification*, for `info --no-verify`-style
    /// output only. `None` for a detached signature.
    pub fn content_unverified(&self) -> Option<&[u8]> {
        self.content.as_deref()
    }

    /// Verifies a detached signature. `content_digest` is the payload hashed with
    /// [`Self::digest_algorithm`]; `now_unix` the current time.
    pub fn verify_detached(
        &self,
        content_digest: &[u8],
        store: &TrustStore,
        opts: &VerifyOptions,
        now_unix: i64,
    ) -> Result<Signer, CmsError> {
        if !self.is_detached() {
            return Err(CmsError::NotDetached);
        }
        let alg = self.digest_algorithm()?;
        if content_digest.len() != alg.output_len() {
            return Err(CmsError::DigestLength {
                alg,
                expected: alg.output_len(),
                got: content_digest.len(),
            });
        }
        self.verify(content_digest, "payload", store, opts, now_unix)
    }

    /// Verifies a signature that encapsulates its content and returns the content.
    pub fn verify_attached(
        &self,
        store: &TrustStore,
        opts: &VerifyOptions,
        now_unix: i64,
    ) -> Result<(Vec<u8>, Signer), CmsError> {
        let content = self.content.as_ref().ok_or(CmsError::Detached)?;
        let digest = self.digest_algorithm()?.digest(content);
        let signer = self.verify(&digest, "encapsulated content", store, opts, now_unix)?;
        Ok((content.clone(), signer))
    }

    fn verify(
        &self,
        content_digest: &[u8],
        what: &'static str,
        store: &TrustStore,
        opts: &VerifyOptions,
        now_unix: i64,
    ) -> Result<Signer, CmsError> {
        let alg = self.digest_algorithm()?;
        if self.content_type != ID_DATA {
            return Err(CmsError::UnsupportedContentType(self.content_type));
        }
        let attrs = match &self.signer.signed_attrs {
            Some(set) => Some(SignedAttrs::parse(set)?),
            None => None,
        };
        let signing_time = attrs.as_ref().and_then(|a| a.signing_time);
        let at = if opts.use_signing_time {
            let t = signing_time.ok_or(CmsError::NoSigningTime)?;
            log::info!(
                "using the bundle signing time {} for certificate verification",
                fmt_time(t)
            );
            t
        } else {
            now_unix
        };

        let signer_cert = self.find_signer(store)?;
        let chain = x509::verify_chain(signer_cert, &self.certs, store, opts, at)?;

        let sig_alg = self.signer.signature_algorithm.oid;
        let scheme = match sig_alg {
            oid::RSA_ENCRYPTION
            | oid::SHA256_WITH_RSA
            | oid::SHA384_WITH_RSA
            | oid::SHA512_WITH_RSA => Scheme::RsaPkcs1v15,
            oid::EC_PUBLIC_KEY
            | oid::ECDSA_WITH_SHA256
            | oid::ECDSA_WITH_SHA384
            | oid::ECDSA_WITH_SHA512 => Scheme::Ecdsa,
            other => return Err(CmsError::UnsupportedSignatureAlgorithm(other)),
        };
        let key = signer_cert.public_key()?;
        if key.scheme() != scheme {
            return Err(CmsError::KeyMismatch {
                subject: signer_cert.subject().to_owned(),
                oid: sig_alg,
            });
        }
        // As OpenSSL, the hash is always the SignerInfo's digestAlgorithm; the signature
        // algorithm only selects the scheme.
        let signed_hash = match (&attrs, &self.signed_attrs_der) {
            (Some(_), Some(der)) => alg.digest(der),
            _ => content_digest.to_vec(),
        };
        if !key.verify(scheme, alg, &signed_hash, self.signer.signature.as_bytes()) {
            return Err(CmsError::BadSignature {
                subject: signer_cert.subject().to_owned(),
            });
        }
        if let Some(attrs) = &attrs {
            if attrs.content_type != self.content_type {
                return Err(CmsError::ContentTypeMismatch {
                    attribute: attrs.content_type,
                    content: self.content_type,
                });
            }
            if attrs.message_digest != content_digest {
                return Err(CmsError::DigestMismatch { what });
            }
        }
        x509::check_signer_cn(signer_cert, &opts.allowed_signer_cns)?;

        Ok(Signer {
            subject: signer_cert.subject().to_owned(),
            chain: chain.iter().map(|c| c.subject().to_owned()).collect(),
            certificates: chain.iter().map(Cert::info).collect(),
            signing_time,
            verification_time: at,
            digest: alg,
        })
    }

    /// The signer certificate: among the signature's certificates, then the keyring.
    fn find_signer<'a>(&'a self, store: &'a TrustStore) -> Result<&'a Cert, CmsError> {
        let matches = |cert: &Cert| match &self.signer.sid {
            SignerIdentifier::IssuerAndSerialNumber(ias) => {
                cert.issuer_name() == &ias.issuer && cert.serial() == ias.serial_number.as_bytes()
            }
            SignerIdentifier::SubjectKeyIdentifier(skid) => {
                cert.subject_key_id() == Some(skid.0.as_bytes())
            }
        };
        self.certs
            .iter()
            .chain(store.certificates())
            .find(|c| matches(c))
            .ok_or_else(|| {
                CmsError::SignerNotFound(match &self.signer.sid {
                    SignerIdentifier::IssuerAndSerialNumber(ias) => format!(
                        "issuer {}, serial {}",
                        x509::name_string(&ias.issuer),
                        ias.serial_number
                    ),
                    SignerIdentifier::SubjectKeyIdentifier(skid) => {
                        format!("subject key identifier {}", hex::encode(skid.0.as_bytes()))
                    }
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Encode;

    #[test]
    fn rejects_oversized_and_garbage() {
        let big = vec![0u8; MAX_CMS_SIZE + 1];
        assert!(matches!(
            SignedData::from_der(&big),
            Err(CmsError::TooLarge { .. })
        ));
        assert!(matches!(
            SignedData::from_der(b""),
            Err(CmsError::Malformed(_))
        ));
        assert!(matches!(
            SignedData::from_der(&[0x30, 0x05, 0x00]),
            Err(CmsError::Malformed(_))
        ));
        // A ContentInfo of type id-data.
        let mut data_ci = vec![0x30, 0x0f];
        data_ci.extend(ID_DATA.to_der().unwrap());
        data_ci.extend([0xa0, 0x02, 0x04, 0x00]);
        assert_eq!(data_ci.len(), 0x11);
        assert!(
            matches!(SignedData::from_der(&data_ci), Err(CmsError::NotSignedData(id)) if id == ID_DATA)
        );
        // Trailing bytes.
        data_ci.push(0);
        assert!(matches!(
            SignedData::from_der(&data_ci),
            Err(CmsError::Malformed(_))
        ));
    }

    #[test]
    fn der_walking() {
        let seq = [0x30, 0x07, 0x02, 0x01, 0x05, 0x04, 0x02, 0xaa, 0xbb];
        let value = expect(&seq, TAG_SEQUENCE, "x").unwrap();
        let parts = elements(value, "x").unwrap();
        assert_eq!(
            parts,
            vec![&[0x02, 0x01, 0x05][..], &[0x04, 0x02, 0xaa, 0xbb][..]]
        );
        assert!(expect(&seq, TAG_SET, "x").is_err());
        // Truncated, trailing bytes, and an element running past its parent.
        assert!(expect(&[0x30, 0x05, 0x02, 0x01, 0x05], TAG_SEQUENCE, "x").is_err());
        assert!(expect(&[0x30, 0x00, 0x00], TAG_SEQUENCE, "x").is_err());
        assert!(elements(&[0x02, 0x03, 0x05], "x").is_err());
        // Indefinite length (BER) is refused.
        assert!(expect(&[0x30, 0x80, 0x00, 0x00], TAG_SEQUENCE, "x").is_err());
    }

    #[test]
    fn signed_attrs_retagging() {
        // SignerInfo { version 1, sid (placeholder SEQUENCE), digestAlg, [0] { attr } , … }
        let info = [
            0x30, 0x0e, // SEQUENCE
            0x02, 0x01, 0x01, // version
            0x30, 0x00, // sid
            0x30, 0x00, // digestAlgorithm
            0xa0, 0x02, 0x30, 0x00, // [0] signedAttrs
            0x30, 0x00, // signatureAlgorithm
            0x04, 0x00, // signature (not counted in the 0x0e above)
        ];
        let info = {
            let mut v = info.to_vec();
            v[1] = (v.len() - 2) as u8;
            v
        };
        assert_eq!(
            signed_attrs_der(&info).unwrap(),
            Some(vec![0x31, 0x02, 0x30, 0x00])
        );
        let without = [
            0x30, 0x0a, 0x02, 0x01, 0x01, 0x30, 0x00, 0x30, 0x00, 0x30, 0x00, 0x04, 0x00,
        ];
        let without = {
            let mut v = without.to_vec();
            v[1] = (v.len() - 2) as u8;
            v
        };
        assert_eq!(signed_attrs_der(&without).unwrap(), None);
    }
}
