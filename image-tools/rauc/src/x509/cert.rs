//! One parsed certificate ([`Cert`]) with the extensions chain verification reads, its
//! display form ([`CertInfo`]), and the name and time formatting used in errors.

use std::fmt;
use std::ops::Range;

use der::asn1::ObjectIdentifier;
use der::{Decode, Header, Reader, SliceReader};
use sha2::Digest as _;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, BasicConstraints, KeyUsage};
use x509_cert::name::Name;
use x509_cert::Certificate;

use super::keys::{cert_signature_algorithm, PublicKey};
use super::X509Error;
use crate::oid;
use flipslot_format::timefmt;

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
pub(super) struct Exts {
    pub(super) basic: Option<BasicConstraints>,
    pub(super) key_usage: Option<KeyUsage>,
    pub(super) eku: Option<Vec<ObjectIdentifier>>,
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

    pub(super) fn not_before(&self) -> i64 {
        unix(self.cert.tbs_certificate.validity.not_before)
    }

    pub(super) fn not_after(&self) -> i64 {
        unix(self.cert.tbs_certificate.validity.not_after)
    }

    pub(super) fn is_self_issued(&self) -> bool {
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
    pub(super) fn may_be_issued_by(&self, issuer: &Cert) -> bool {
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
    pub(super) fn verify_signed_by(&self, issuer: &Cert) -> Result<(), X509Error> {
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

    pub(super) fn exts(&self) -> Result<&Exts, X509Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formatting() {
        assert_eq!(fmt_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_time(-5), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_time(1_735_689_600), "2025-01-01T00:00:00Z");
    }
}
